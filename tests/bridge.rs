//! Bridges (issue 12) against real remotes: Debian's mosquitto started by each
//! test on its own port and config, and midge itself. Every wait is a read with
//! a timeout.

mod common;

use std::time::Duration;

use common::mosquitto::Mosquitto;
use common::*;
use midge::protocol::{Packet, ProtocolVersion, Publish, QoS};

/// A `connection` section towards `port` on loopback, retrying every second.
fn section(name: &str, port: u16, lines: &str) -> String {
    format!(
        "connection {name}\naddress 127.0.0.1:{port}\nremote_clientid {name}\nrestart_timeout 1\n{lines}\n"
    )
}

/// Receive the next PUBLISH (acknowledging it), failing on anything else.
fn next_publish(c: &mut Client) -> Publish<'static> {
    c.recv_publish()
}

/// Nothing more arrives within a short window (after a round trip).
fn quiet(c: &mut Client) {
    c.expect_nothing(Duration::from_millis(300));
}

fn version_name(v: ProtocolVersion) -> &'static str {
    match v {
        ProtocolVersion::V5 => "mqttv50",
        ProtocolVersion::V311 => "mqttv311",
        ProtocolVersion::V31 => "mqttv31",
    }
}

/// Issue 12 test 1: midge -> mosquitto with `out`, `in` and `both` topics,
/// local and remote prefixes, QoS 0/1/2 capped by the topic's QoS, retained
/// messages, and the connection state published on both sides.
fn midge_to_mosquitto(version: ProtocolVersion) {
    let remote = Mosquitto::start("");
    let conf = section(
        "up",
        remote.port,
        &format!(
            "bridge_protocol_version {}\n\
             topic out/# out 2 \"\" site42/\n\
             topic cmd/# in 2 edge/ site42/\n\
             topic both/# both 1\n\
             topic capped/# out 1\n",
            version_name(version)
        ),
    );
    let midge = BrokerProcess::start(&conf);
    midge.wait_log("Bridge up: connected");
    remote.wait_log("Sending SUBACK to up");

    // State: retained "1" on both sides.
    let mut local = Client::connect_v(midge.port, ProtocolVersion::V5, "local-sub");
    local.subscribe("$SYS/broker/connection/up/state", QoS::AtLeastOnce);
    let p = next_publish(&mut local);
    assert_eq!((p.payload, p.retain), (&b"1"[..], true));
    let mut far = Client::connect_v(remote.port, ProtocolVersion::V311, "remote-sub");
    far.subscribe("$SYS/broker/connection/up/state", QoS::AtLeastOnce);
    let p = next_publish(&mut far);
    assert_eq!((p.payload, p.retain), (&b"1"[..], true));

    far.subscribe("site42/out/#", QoS::ExactlyOnce);
    far.subscribe("both/#", QoS::ExactlyOnce);
    far.subscribe("capped/#", QoS::ExactlyOnce);
    local.subscribe("edge/#", QoS::ExactlyOnce);
    local.subscribe("both/#", QoS::ExactlyOnce);

    // out, remote prefix added; QoS kept up to the topic's 2.
    let mut publisher = Client::connect_v(midge.port, ProtocolVersion::V311, "local-pub");
    for (i, qos) in ALL_QOS.iter().enumerate() {
        publisher.publish(
            "out/a",
            format!("o{i}").as_bytes(),
            *qos,
            false,
            10 + i as u16,
        );
        let p = next_publish(&mut far);
        assert_eq!(p.topic, "site42/out/a");
        assert_eq!(p.payload, format!("o{i}").as_bytes());
        assert_eq!(p.qos, *qos);
    }
    // QoS = min(topic qos 1, message qos 2).
    publisher.publish("capped/x", b"c", QoS::ExactlyOnce, false, 20);
    let p = next_publish(&mut far);
    assert_eq!((p.topic, p.qos), ("capped/x", QoS::AtLeastOnce));

    // in: remote prefix stripped, local prefix added.
    let mut remote_pub = Client::connect_v(remote.port, ProtocolVersion::V311, "remote-pub");
    for (i, qos) in ALL_QOS.iter().enumerate() {
        remote_pub.publish(
            "site42/cmd/go",
            format!("i{i}").as_bytes(),
            *qos,
            false,
            30 + i as u16,
        );
        let p = next_publish(&mut local);
        assert_eq!(p.topic, "edge/cmd/go");
        assert_eq!(p.payload, format!("i{i}").as_bytes());
        assert_eq!(p.qos, *qos);
    }

    // both: each side gets the other's message once, nothing comes back.
    publisher.publish("both/l", b"from-local", QoS::AtLeastOnce, false, 40);
    let p = next_publish(&mut far);
    assert_eq!((p.topic, p.payload), ("both/l", &b"from-local"[..]));
    let p = next_publish(&mut local);
    assert_eq!((p.topic, p.payload), ("both/l", &b"from-local"[..]));
    remote_pub.publish("both/r", b"from-remote", QoS::AtLeastOnce, false, 41);
    let p = next_publish(&mut local);
    assert_eq!((p.topic, p.payload), ("both/r", &b"from-remote"[..]));
    let p = next_publish(&mut far);
    assert_eq!((p.topic, p.payload), ("both/r", &b"from-remote"[..]));
    quiet(&mut far);
    quiet(&mut local);

    // Retained: kept as retained on the remote.
    publisher.publish("out/kept", b"r", QoS::AtLeastOnce, true, 50);
    let p = next_publish(&mut far);
    assert_eq!(p.topic, "site42/out/kept");
    let mut late = Client::connect_v(remote.port, ProtocolVersion::V311, "late");
    late.subscribe("site42/out/kept", QoS::AtLeastOnce);
    let p = next_publish(&mut late);
    assert_eq!((p.payload, p.retain), (&b"r"[..], true));

    // The remote goes away: state "0" locally (retained).
    drop(far);
    drop(late);
    drop(remote_pub);
    drop(remote);
    let p = next_publish(&mut local);
    assert_eq!(p.topic, "$SYS/broker/connection/up/state");
    assert_eq!((p.payload, p.retain), (&b"0"[..], false));
}

#[test]
fn midge_to_mosquitto_v311() {
    midge_to_mosquitto(ProtocolVersion::V311);
}

#[test]
fn midge_to_mosquitto_v5() {
    midge_to_mosquitto(ProtocolVersion::V5);
}

#[allow(dead_code)]
fn _unused(_: Packet<'_>) {}
