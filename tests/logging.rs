//! Logging that a client cannot flood: `log_type` picks mosquitto's line types,
//! a SUBSCRIBE writes a bounded number of lines whatever its size, complaints
//! about one connection are capped, and peer strings are cut and escaped.

mod common;

use std::time::Instant;

use common::*;
use midge::protocol::{
    Connect, Packet, Properties, ProtocolVersion, QoS, Subscribe, SubscriptionOptions,
};

/// A broker with `config_lines`, started without `-v` so that `log_type`
/// decides (the start-up lines are notices).
fn start(config_lines: &str) -> BrokerProcess {
    let port = free_port();
    let dir = temp_dir("logging-conf");
    let conf = dir.join("midge.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\n{config_lines}\n"),
    )
    .expect("write config");
    let conf = conf.display().to_string();
    BrokerProcess::start_with_args(port, &["-c", &conf])
}

/// Log bytes written while `f` runs; `f` must end with a line that proves
/// everything before it was written (a client's disconnection).
fn log_bytes(b: &BrokerProcess, end_line: &str, f: impl FnOnce()) -> usize {
    let before = b.log_text().len();
    f();
    b.wait_log(end_line);
    b.log_text().len() - before
}

/// One SUBSCRIBE with `n` filters of `len` bytes each, numbered from `first`.
fn big_subscribe(c: &mut Client, first: usize, n: usize, len: usize) -> usize {
    let filters: Vec<(&'static str, SubscriptionOptions)> = (first..first + n)
        .map(|i| {
            let f = format!("{i:06}/{}", "f".repeat(len.saturating_sub(7)));
            (leak_str(&f), SubscriptionOptions::default())
        })
        .collect();
    c.send(&Packet::Subscribe(Subscribe {
        packet_id: 1,
        properties: Properties::default(),
        filters,
    }));
    match c.recv() {
        Packet::SubAck(a) => a.reasons.len(),
        other => panic!("{other:?}"),
    }
}

/// `log_type subscribe` on: one `client qos filter` line per subscribed filter
/// (mosquitto's format); off: none. Before, `log_type` only chose a level and
/// every SUBSCRIBE was logged at information level regardless.
#[test]
fn log_type_subscribe_switches_subscribe_lines() {
    for (types, want) in [
        ("log_type notice\nlog_type subscribe", true),
        ("log_type notice", false),
    ] {
        let b = start(types);
        let mut c = Client::connect(b.port, "lt-sub");
        c.subscribe("lt/topic", QoS::AtLeastOnce);
        c.disconnect();
        b.wait_log("Client lt-sub disconnected.");
        let log = b.log_text();
        assert_eq!(log.contains("lt-sub 1 lt/topic"), want, "{types}:\n{log}");
        assert!(!log.contains("Received SUBSCRIBE"), "a debug line:\n{log}");
    }
    // `log_type information` alone: no notices, no subscribe lines; the
    // complaint summary (information) is there.
    let b = start("log_type notice\nlog_type information\nmax_subscriptions_per_client 1");
    let mut c = Client::connect(b.port, "lt-info");
    assert_eq!(big_subscribe(&mut c, 0, 3, 10), 3);
    c.disconnect();
    b.wait_log("Client lt-info disconnected.");
    let log = b.log_text();
    assert!(
        log.contains(
            "Client lt-info: 2 of 3 filters refused (2 over max_subscriptions_per_client 1)."
        ),
        "{log}"
    );
    assert!(!log.contains("lt-info 0 "), "{log}");
}

/// A 900 kB SUBSCRIBE of filters over `max_subscriptions_per_client` used to
/// write a line per filter (6.7 MB of log for 889 kB with `-v`); now a
/// bounded number of lines per packet, whatever `log_type` enables, and
/// complaints about one connection stop after a fixed number of lines.
#[test]
fn log_bytes_per_hostile_packet_are_bounded() {
    for types in ["", "log_type all"] {
        let b = start(&format!("{types}\nmax_subscriptions_per_client 10"));
        let mut c = Client::connect(b.port, "flooder");
        let t = Instant::now();
        let bytes = log_bytes(&b, "Client flooder disconnected.", || {
            assert_eq!(big_subscribe(&mut c, 0, 1_000, 900), 1_000);
            c.disconnect();
        });
        eprintln!(
            "{types:?}: one 900 kB SUBSCRIBE wrote {bytes} log bytes ({:?})",
            t.elapsed()
        );
        assert!(bytes < 12_000, "{types:?}: {bytes} log bytes");

        // Many small packets, each refused: complaint lines stop.
        let mut c = Client::connect(b.port, "nagger");
        big_subscribe(&mut c, 0, 10, 10);
        let bytes = log_bytes(&b, "Client nagger disconnected.", || {
            for i in 0..200 {
                big_subscribe(&mut c, 10 + i, 1, 10);
            }
            c.disconnect();
        });
        let log = b.log_text();
        let complaints = log.matches("Client nagger: 1 of 1 filters refused").count();
        assert_eq!(complaints, 20, "{types:?}: the budget is 20 lines");
        assert!(log.contains("further complaints about this connection are not logged"));
        eprintln!("{types:?}: 200 refused SUBSCRIBEs wrote {bytes} log bytes");
        if types.is_empty() {
            assert!(bytes < 8_000, "{bytes}");
        }
    }
}

/// A 60,000-byte client id with a newline and a terminal escape: log lines
/// about it are short and cannot forge a line.
#[test]
fn peer_strings_are_cut_and_escaped() {
    let b = start("");
    let id = format!("evil\nFAKE: forged line\x1b[31m{}", "x".repeat(60_000));
    let mut c = Client::open(b.port, ProtocolVersion::V5);
    c.send(&Packet::Connect(Box::new(Connect {
        version: ProtocolVersion::V5,
        clean_start: true,
        keep_alive: 60,
        properties: Properties::default(),
        client_id: leak_str(&id),
        will: None,
        username: None,
        password: None,
    })));
    assert!(matches!(c.recv(), Packet::ConnAck(_)));
    c.disconnect();
    let line = b.wait_log("(60027 bytes) disconnected.");
    assert!(line.len() < 300, "{}", line.len());
    assert!(
        line.contains("evil\\u{a}FAKE: forged line\\u{1b}[31m"),
        "{line}"
    );
    assert!(
        !b.log_text().lines().any(|l| l.starts_with("FAKE")),
        "a forged line"
    );
}

/// `-v` writes mosquitto's per-packet debug lines, in mosquitto's order and
/// format, for a QoS 1 subscribe/publish round with the project's client;
/// without `-v` (default `log_type`) there is none of them.
#[test]
fn dash_v_logs_every_packet_as_mosquitto_does() {
    let expected = [
        "New client connected from 127.0.0.1:",
        "No will message specified.",
        "Sending CONNACK to v-sub (0, 0)",
        "Received SUBSCRIBE from v-sub",
        "\tv/topic (QoS 1)",
        "v-sub 1 v/topic",
        "Sending SUBACK to v-sub",
        "Sending CONNACK to v-pub (0, 0)",
        "Received PUBLISH from v-pub (d0, q1, r0, m7, 'v/topic', ... (5 bytes))",
        "Sending PUBLISH to v-sub (d0, q1, r0, m1, 'v/topic', ... (5 bytes))",
        "Sending PUBACK to v-pub (m7, rc0)",
        "Received PUBACK from v-sub (Mid: 1, RC:0)",
        "Received PINGREQ from v-sub",
        "Sending PINGRESP to v-sub",
        "Received DISCONNECT from v-sub",
        "Client v-sub disconnected.",
    ];
    for verbose in [true, false] {
        let port = free_port();
        let dir = temp_dir("logging-v");
        let conf = dir.join("midge.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\n"),
        )
        .expect("write config");
        let conf = conf.display().to_string();
        let args: &[&str] = if verbose {
            &["-c", &conf, "-v"]
        } else {
            &["-c", &conf]
        };
        let b = BrokerProcess::start_with_args(port, args);
        let mut sub = Client::connect(b.port, "v-sub");
        sub.subscribe("v/topic", QoS::AtLeastOnce);
        let mut publisher = Client::connect(b.port, "v-pub");
        publisher.publish("v/topic", b"hello", QoS::AtLeastOnce, false, 7);
        let p = sub.recv_publish();
        sub.ack(&p);
        sub.ping();
        sub.disconnect();
        b.wait_log("Client v-sub disconnected.");
        let log = b.log_text();
        if verbose {
            // Each expected line, in this order.
            let mut at = 0;
            for want in expected {
                match log[at..].find(want) {
                    Some(i) => at += i + want.len(),
                    None => panic!("{want:?} missing or out of order after byte {at}:\n{log}"),
                }
            }
        } else {
            for want in &expected[1..expected.len() - 1] {
                if *want != "v-sub 1 v/topic" {
                    assert!(!log.contains(want), "{want:?} without -v:\n{log}");
                }
            }
        }
    }
}
