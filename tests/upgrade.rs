//! Upgrading from midge 0.1.0: a log in format 1 (its fixture was written by
//! the released binary, see `make_v1_fixture`) is converted at start and
//! nothing it held is lost.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use midge::protocol::{Packet, ProtocolVersion, PubResp, QoS};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1/midge.db")
}

fn config(port: u16, dir: &Path) -> String {
    format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}\n",
        dir.display()
    )
}

fn persistent(id: &str) -> ConnectOptions {
    let mut o = ConnectOptions::new(ProtocolVersion::V311, id);
    o.clean = false;
    o
}

/// An MQTT 5 session that outlives its connection, connected without a user
/// name (format 1 stored no identity for any session).
fn anonymous_v5(id: &str) -> ConnectOptions {
    let mut o = ConnectOptions::new(ProtocolVersion::V5, id);
    o.clean = false;
    o.session_expiry = Some(3600);
    o
}

/// Payloads of the next `n` PUBLISHes, each acknowledged and every QoS 2
/// flow completed (the broker sends a queue back to back, so a PUBREL may
/// come after later PUBLISHes), sorted.
fn payloads(c: &mut Client, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    let mut open_qos2 = 0usize;
    while got.len() < n || open_qos2 > 0 {
        match c.recv() {
            Packet::Publish(p) => {
                got.push(String::from_utf8_lossy(p.payload).into_owned());
                match p.qos {
                    QoS::AtMostOnce => {}
                    QoS::AtLeastOnce => c.send(&Packet::PubAck(PubResp::success(p.packet_id))),
                    QoS::ExactlyOnce => {
                        open_qos2 += 1;
                        c.send(&Packet::PubRec(PubResp::success(p.packet_id)));
                    }
                }
            }
            Packet::PubRel(r) => {
                open_qos2 = open_qos2.saturating_sub(1);
                c.send(&Packet::PubComp(PubResp::success(r.packet_id)));
            }
            other => panic!("expected PUBLISH or PUBREL, got {other:?}"),
        }
    }
    got.sort();
    got
}

/// Writes `tests/fixtures/v1/midge.db` with the midge 0.1.0 release binary
/// (`/work/baseline/target/release/midge`, or `MIDGE_V1_BIN`). Run by hand:
/// `cargo test --test upgrade -- --ignored make_v1_fixture`.
#[test]
#[ignore = "regenerates the committed fixture with the old release binary"]
fn make_v1_fixture() {
    let bin = std::env::var_os("MIDGE_V1_BIN").map_or_else(
        || PathBuf::from("/work/baseline/target/release/midge"),
        PathBuf::from,
    );
    let dir = temp_dir("v1-fixture");
    let port = free_port();
    let mut b = BrokerProcess::start_binary(&bin, port, &config(port, &dir), &[]);
    // A 3.1.1 persistent session with two subscriptions.
    let (mut keeper, _) = Client::connect_with(port, &persistent("keeper"));
    keeper.subscribe("fix/q/#", QoS::ExactlyOnce);
    keeper.subscribe("fix/one", QoS::AtLeastOnce);
    keeper.disconnect();
    // An MQTT 5 session (expiry 3600 s) that connected without a user name.
    let (mut anon, _) = Client::connect_with(port, &anonymous_v5("anon5"));
    anon.subscribe("fix/q/#", QoS::AtLeastOnce);
    anon.disconnect();
    // A session that will hold a message in flight.
    let (mut flighty, _) = Client::connect_with(port, &persistent("flighty"));
    flighty.subscribe("fix/f", QoS::AtLeastOnce);
    flighty.disconnect();

    let mut w = Client::connect(port, "writer");
    w.publish("fix/retained", b"retained-v1", QoS::AtLeastOnce, true, 1);
    w.publish("fix/q/1", b"q1", QoS::AtLeastOnce, false, 2);
    w.publish("fix/q/2", b"q2", QoS::ExactlyOnce, false, 3);
    w.publish("fix/one", b"one", QoS::AtLeastOnce, false, 4);
    w.publish("fix/f", b"flight", QoS::AtLeastOnce, false, 5);
    w.disconnect();

    // Received but never acknowledged: in flight when the broker stops.
    let (mut flighty, _) = Client::connect_with(port, &persistent("flighty"));
    match flighty.recv() {
        Packet::Publish(p) => assert_eq!(p.payload, b"flight"),
        other => panic!("expected PUBLISH, got {other:?}"),
    }
    flighty.ping();
    drop(flighty);
    b.signal("TERM");
    b.wait_exit();
    let out = fixture();
    std::fs::create_dir_all(out.parent().expect("fixture dir")).expect("mkdir");
    std::fs::copy(dir.join("midge.db"), &out).expect("copy the log");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The format-1 fixture is converted at start: the retained message, both
/// sessions' subscriptions, the queued QoS 1 and 2 messages and the one in
/// flight are all delivered, and the old file is kept aside unchanged.
#[test]
fn a_version_1_log_is_converted_and_loses_nothing() {
    let original = std::fs::read(fixture()).expect("fixture");
    assert_eq!(&original[..8], b"midge\0\0\x01", "the fixture is format 1");
    let dir = temp_dir("upgrade");
    std::fs::write(dir.join("midge.db"), &original).expect("copy fixture");
    let port = free_port();
    let b = BrokerProcess::start_with_config(port, &config(port, &dir), &[]);
    let line = b.wait_log("Converted");
    assert!(
        line.contains("format 1") && line.contains("midge.db.v1-"),
        "{line}"
    );

    // The old file is kept aside, byte for byte; the log is format 2 now.
    let aside: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains("midge.db.v1-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(std::fs::read(&aside[0]).expect("aside"), original);
    let now = std::fs::read(dir.join("midge.db")).expect("log");
    assert_eq!(&now[..8], b"midge\0\0\x02");

    // Queued QoS 1 and QoS 2 messages, for both of keeper's subscriptions.
    let (mut keeper, (_, present)) = Client::connect_with(port, &persistent("keeper"));
    assert!(present, "keeper's session survived the conversion");
    assert_eq!(payloads(&mut keeper, 3), ["one", "q1", "q2"]);
    // The identity-less MQTT 5 session and its queue.
    let (mut anon, (_, present)) = Client::connect_with(port, &anonymous_v5("anon5"));
    assert!(present, "anon5's session survived the conversion");
    assert_eq!(payloads(&mut anon, 2), ["q1", "q2"]);
    // The message in flight is sent again, marked as a duplicate.
    // [MQTT-4.4.0-1] unacknowledged PUBLISH packets are resent on reconnection
    let (mut flighty, (_, present)) = Client::connect_with(port, &persistent("flighty"));
    assert!(present);
    match flighty.recv() {
        Packet::Publish(p) => {
            assert_eq!(p.payload, b"flight");
            assert!(p.dup, "a resend carries DUP [MQTT-3.3.1-1]");
            flighty.ack(&p);
        }
        other => panic!("expected the in-flight PUBLISH, got {other:?}"),
    }
    // Nothing else was queued: no duplicates of what was delivered.
    keeper.expect_nothing(Duration::from_millis(200));
    anon.expect_nothing(Duration::from_millis(200));

    // The subscriptions themselves survived: new messages arrive.
    let mut w = Client::connect(port, "writer");
    w.publish("fix/q/new", b"new", QoS::AtLeastOnce, false, 1);
    w.publish("fix/one", b"one-again", QoS::AtLeastOnce, false, 2);
    w.publish("fix/f", b"f-again", QoS::AtLeastOnce, false, 3);
    assert_eq!(payloads(&mut keeper, 2), ["new", "one-again"]);
    assert_eq!(payloads(&mut anon, 1), ["new"]);
    assert_eq!(payloads(&mut flighty, 1), ["f-again"]);

    // The retained message.
    let mut fresh = Client::connect(port, "fresh");
    fresh.subscribe("fix/retained", QoS::AtLeastOnce);
    let p = fresh.recv_publish();
    assert_eq!((p.payload, p.retain), (&b"retained-v1"[..], true));
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
}
