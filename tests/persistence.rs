//! Persistence against the real binary: what was acknowledged survives a clean
//! restart and a `kill -9`; damaged files are handled as documented.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::*;
use midge::protocol::{Packet, ProtocolVersion, PubResp, QoS};

fn config(port: u16, dir: &Path, extra: &str) -> String {
    format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}\n{extra}\n",
        dir.display()
    )
}

fn start(dir: &Path, extra: &str) -> BrokerProcess {
    let port = free_port();
    BrokerProcess::start_with_config(port, &config(port, dir, extra), &[])
}

fn persistent(id: &str) -> ConnectOptions {
    let mut o = ConnectOptions::new(ProtocolVersion::V311, id);
    o.clean = false;
    o
}

/// Retained messages, subscriptions and queued messages survive a clean
/// restart (SIGTERM) and a SIGKILL.
#[test]
fn state_survives_restarts() {
    for signal in ["TERM", "KILL"] {
        let dir = temp_dir("persist-restart");
        let mut b = start(&dir, "");
        let (mut sub, _) = Client::connect_with(b.port, &persistent("keeper"));
        sub.subscribe("keep/#", QoS::AtLeastOnce);
        sub.disconnect();
        let mut p = Client::connect(b.port, "writer");
        p.publish("keep/retained", b"kept", QoS::AtLeastOnce, true, 1);
        p.publish("keep/queued", b"q1", QoS::AtLeastOnce, false, 2);
        p.publish("keep/queued", b"q2", QoS::ExactlyOnce, false, 3);
        b.signal(signal);
        b.wait_exit();

        let b = start(&dir, "");
        b.wait_log("Restored 1 retained message(s) and 1 session(s)");
        let (mut sub, (_, present)) = Client::connect_with(b.port, &persistent("keeper"));
        assert!(present, "{signal}: session restored");
        let got: Vec<Vec<u8>> = (0..3)
            .map(|_| sub.recv_publish().payload.to_vec())
            .collect();
        assert!(
            got.contains(&b"q1".to_vec()) && got.contains(&b"q2".to_vec()),
            "{signal}: {got:?}"
        );
        assert!(
            got.contains(&b"kept".to_vec()),
            "{signal}: queued retained copy: {got:?}"
        );
        // The subscription survived: new messages arrive.
        let mut p = Client::connect(b.port, "writer2");
        p.publish("keep/new", b"new", QoS::AtLeastOnce, false, 1);
        assert_eq!(sub.recv_publish().payload, b"new");
        let mut fresh = Client::connect(b.port, "fresh");
        fresh.subscribe("keep/retained", QoS::AtMostOnce);
        assert_eq!(
            fresh.recv_publish().payload,
            b"kept",
            "{signal}: retained message"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The crash test: a persistent subscriber at QoS 1 and 2 is offline; a
/// publisher sends numbered messages and records every acknowledged one; the
/// broker is SIGKILLed partway; after a restart the subscriber gets every
/// acknowledged message: QoS 1 without loss, QoS 2 without loss or duplicate.
#[test]
fn acknowledged_messages_survive_kill_9() {
    for kill_after in [1usize, 57, 400] {
        let dir = temp_dir("persist-crash");
        let mut b = start(&dir, "max_queued_messages 0");
        let (mut sub, _) = Client::connect_with(b.port, &persistent("crash-sub"));
        sub.subscribe("crash/1", QoS::AtLeastOnce);
        sub.subscribe("crash/2", QoS::ExactlyOnce);
        sub.disconnect();

        let mut p = Client::connect(b.port, "crash-pub");
        let mut acked: [BTreeSet<u32>; 2] = [BTreeSet::new(), BTreeSet::new()];
        let mut pending: std::collections::HashMap<u16, (usize, u32)> = Default::default();
        let mut n: u32 = 0;
        // Pipelined: up to 8 unacknowledged, so the kill lands mid-stream.
        'publish: loop {
            while pending.len() < 8 {
                n += 1;
                let q = (n % 2) as usize; // 0 -> QoS 1, 1 -> QoS 2
                let qos = if q == 0 {
                    QoS::AtLeastOnce
                } else {
                    QoS::ExactlyOnce
                };
                let pid = (n % 60_000) as u16 + 1;
                let topic = if q == 0 { "crash/1" } else { "crash/2" };
                let payload = n.to_be_bytes();
                p.send(&Packet::Publish(publish(topic, &payload, qos, false, pid)));
                pending.insert(pid, (q, n));
            }
            match p.recv() {
                Packet::PubAck(a) => {
                    if let Some((q, n)) = pending.remove(&a.packet_id) {
                        acked[q].insert(n);
                    }
                }
                Packet::PubRec(a) => {
                    // PUBREC: the broker owns the message now.
                    if let Some((q, n)) = pending.remove(&a.packet_id) {
                        acked[q].insert(n);
                    }
                    p.send(&Packet::PubRel(PubResp::success(a.packet_id)));
                }
                Packet::PubComp(_) => {}
                other => panic!("{other:?}"),
            }
            if acked[0].len() + acked[1].len() >= kill_after {
                b.signal("KILL");
                break 'publish;
            }
        }
        b.wait_exit();
        drop(p);

        let b = start(&dir, "max_queued_messages 0");
        let (mut sub, (_, present)) = Client::connect_with(b.port, &persistent("crash-sub"));
        assert!(present);
        let mut got: [Vec<u32>; 2] = [Vec::new(), Vec::new()];
        // Answer every flow without waiting in between: the broker re-sends a
        // whole window at once.
        loop {
            match sub.try_recv(std::time::Duration::from_millis(500)) {
                Some(Ok(Packet::Publish(m))) => {
                    let n = u32::from_be_bytes(m.payload.try_into().expect("4-byte payload"));
                    got[usize::from(m.qos == QoS::ExactlyOnce)].push(n);
                    let ack = PubResp::success(m.packet_id);
                    sub.send(&match m.qos {
                        QoS::ExactlyOnce => Packet::PubRec(ack),
                        _ => Packet::PubAck(ack),
                    });
                }
                Some(Ok(Packet::PubRel(r))) => {
                    sub.send(&Packet::PubComp(PubResp::success(r.packet_id)))
                }
                Some(Ok(other)) => panic!("{other:?}"),
                _ => break,
            }
        }
        for q in 0..2 {
            let have: BTreeSet<u32> = got[q].iter().copied().collect();
            let missing: Vec<&u32> = acked[q].difference(&have).collect();
            assert!(
                missing.is_empty(),
                "kill after {kill_after}: QoS {} lost {missing:?}",
                q + 1
            );
        }
        let dups = got[1].len() - got[1].iter().collect::<BTreeSet<_>>().len();
        assert_eq!(dups, 0, "kill after {kill_after}: QoS 2 duplicates");
        eprintln!(
            "kill after {kill_after}: acked {}+{}, received {}+{}, QoS 1 duplicates {}",
            acked[0].len(),
            acked[1].len(),
            got[0].len(),
            got[1].len(),
            got[0].len() - got[0].iter().collect::<BTreeSet<_>>().len()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A torn last record is cut with a warning; a corrupt record before the end
/// stops start-up naming the file and offset, unless recovery is asked for.
#[test]
fn torn_tails_and_corrupt_records() {
    let dir = temp_dir("persist-damage");
    let mut b = start(&dir, "");
    let mut p = Client::connect(b.port, "w");
    for (i, t) in ["d/1", "d/2", "d/3"].iter().enumerate() {
        p.publish(t, b"value", QoS::AtLeastOnce, true, i as u16 + 1);
    }
    b.signal("KILL");
    b.wait_exit();
    let db = dir.join("midge.db");
    let mut data = std::fs::read(&db).expect("db");

    // Torn tail: half a record appended.
    let mut torn = data.clone();
    torn.extend_from_slice(&[90, 0, 0, 0, 1, 2, 3, 4, 5]);
    std::fs::write(&db, &torn).expect("write");
    let mut b = start(&dir, "");
    b.wait_log("cutting a torn record");
    b.wait_log("Restored 3 retained message(s)");
    b.signal("TERM");
    b.wait_exit();

    // Corruption in the middle: a flipped byte in the first record's body.
    data = std::fs::read(&db).expect("db");
    data[20] ^= 0x55;
    std::fs::write(&db, &data).expect("write");
    let port = free_port();
    let conf = dir.join("m.conf");
    std::fs::write(&conf, config(port, &dir, "")).expect("conf");
    let out = Command::new(env!("CARGO_BIN_EXE_midge"))
        .args(["-c", conf.to_str().expect("path")])
        .output()
        .expect("midge");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}: corrupt record at offset 8", db.display())),
        "{err}"
    );

    let b = start(&dir, "persistence_recover true");
    b.wait_log("--recover keeps the 0 records before it");
    // The damaged file is kept whole (records after the damage may be good).
    let line = b.wait_log("the damaged file was copied to ");
    let copy = line
        .rsplit("copied to ")
        .next()
        .map(|s| s.trim_end_matches('.'))
        .expect("copy path");
    assert_eq!(std::fs::read(copy).expect("copy"), data);
    drop(b);
    // The command-line flag does the same.
    let port = free_port();
    let b = BrokerProcess::start_with_config(port, &config(port, &dir, ""), &["--recover"]);
    b.wait_log("Opening listen socket");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Clean sessions and QoS 0 cost no disk I/O: the log does not grow.
#[test]
fn clean_sessions_and_qos0_write_nothing() {
    let dir = temp_dir("persist-quiet");
    let b = start(&dir, "");
    let db = dir.join("midge.db");
    let before = std::fs::metadata(&db).expect("db").len();
    let mut s = Client::connect(b.port, "clean-sub");
    s.subscribe("quiet/#", QoS::AtLeastOnce);
    let mut p = Client::connect(b.port, "clean-pub");
    for i in 0..50u16 {
        p.publish(
            "quiet/t",
            b"x",
            if i % 2 == 0 {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            },
            false,
            i + 1,
        );
    }
    for _ in 0..50 {
        s.recv_publish();
    }
    assert_eq!(std::fs::metadata(&db).expect("db").len(), before);
    let _ = std::fs::remove_dir_all(&dir);
}

fn rss_kb(pid: u32) -> u64 {
    proc_status_kb(pid, "VmRSS:")
}

/// With persistence, messages queued for an offline session live in the log:
/// RAM keeps a small index entry per message (measured, printed), the log is
/// compacted meanwhile, and the client still gets every message, in order.
#[test]
fn offline_queue_lives_in_the_log() {
    const N: u32 = 20_000;
    let dir = temp_dir("persist-ram");
    let b = start(&dir, "max_queued_messages 0");
    let (mut sub, _) = Client::connect_with(b.port, &persistent("ram-sub"));
    sub.subscribe("ram/#", QoS::AtLeastOnce);
    sub.disconnect();
    let before = rss_kb(b.pid());
    let mut p = Client::connect(b.port, "ram-pub");
    let mut payload = vec![0x42u8; 1000];
    let mut unacked = 0;
    for n in 0..N {
        payload[..4].copy_from_slice(&n.to_be_bytes());
        let pid = (n % 60_000) as u16 + 1;
        p.send(&Packet::Publish(publish(
            "ram/t",
            &payload,
            QoS::AtLeastOnce,
            false,
            pid,
        )));
        unacked += 1;
        while unacked >= 100 || (n + 1 == N && unacked > 0) {
            match p.recv() {
                Packet::PubAck(_) => unacked -= 1,
                other => panic!("{other:?}"),
            }
        }
    }
    let after = rss_kb(b.pid());
    let per_message = (after.saturating_sub(before) * 1024) / u64::from(N);
    eprintln!("RAM per queued 1000-byte message with persistence: {per_message} bytes ({before} kB -> {after} kB)");
    assert!(
        per_message < 300,
        "{per_message} bytes of RAM per queued message"
    );
    let (mut sub, (_, present)) = Client::connect_with(b.port, &persistent("ram-sub"));
    assert!(present);
    for want in 0..N {
        let m = sub.recv_publish();
        assert_eq!(m.payload.len(), 1000);
        let n = u32::from_be_bytes(m.payload[..4].try_into().expect("4 bytes"));
        assert_eq!(n, want, "order kept");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A will waiting for its Will Delay Interval survives a `kill -9`: after the
/// restart it is published when the delay has passed (3.1.3.2.2).
#[test]
fn delayed_will_survives_a_restart() {
    use midge::protocol::{Connect, Properties, Will};
    let dir = temp_dir("persist-will");
    let mut b = start(&dir, "");
    let mut c = Client::open(b.port, ProtocolVersion::V5);
    c.send(&Packet::Connect(Box::new(Connect {
        version: ProtocolVersion::V5,
        clean_start: true,
        keep_alive: 60,
        properties: Properties {
            session_expiry_interval: Some(300),
            ..Properties::default()
        },
        client_id: "will-holder",
        will: Some(Will {
            topic: "wills/holder",
            payload: b"gone for good",
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Properties {
                will_delay_interval: Some(1),
                ..Properties::default()
            },
        }),
        username: None,
        password: None,
    })));
    assert!(matches!(c.recv(), Packet::ConnAck(_)));
    c.drop_connection();
    b.wait_log("Client will-holder closed its connection.");
    // Bounce the broker within the delay: the will must come after the restart.
    b.ping_log();
    b.signal("KILL");
    b.wait_exit();
    let b = start(&dir, "");
    let mut w = Client::connect(b.port, "will-watcher");
    w.subscribe("wills/#", QoS::AtLeastOnce);
    match w.try_recv(std::time::Duration::from_secs(5)) {
        Some(Ok(Packet::Publish(m))) => assert_eq!(m.payload, b"gone for good"),
        other => panic!("expected the will after the restart, got {other:?}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}
