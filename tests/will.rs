//! Wills: published when a connection ends without DISCONNECT, not after one.

mod common;

use std::time::{Duration, Instant};

use common::*;
use midge::protocol::{ProtocolVersion, QoS};

fn with_will(id: &str, topic: &str, retain: bool) -> ConnectOptions {
    let mut o = ConnectOptions::new(ProtocolVersion::V311, id);
    o.will = Some((
        topic.to_string(),
        format!("{id} gone").into_bytes(),
        QoS::AtLeastOnce,
        retain,
    ));
    o
}

#[test]
fn will_is_published_on_abnormal_close() {
    // [MQTT-3.1.2-8] the will is published when the network connection is closed
    // without a DISCONNECT.
    let b = BrokerProcess::start("");
    let mut s = Client::connect(b.port, "will-watch");
    s.subscribe("wills/#", QoS::AtLeastOnce);
    let (c, _) = Client::connect_with(b.port, &with_will("dies", "wills/dies", false));
    c.drop_connection();
    let p = s.recv_publish();
    assert_eq!(p.topic, "wills/dies");
    assert_eq!(p.payload, b"dies gone");
    assert_eq!(p.qos, QoS::AtLeastOnce);
}

#[test]
fn will_is_not_published_after_disconnect() {
    // [MQTT-3.1.2-10] the will is deleted on receipt of DISCONNECT.
    let b = BrokerProcess::start("");
    let mut s = Client::connect(b.port, "will-watch2");
    s.subscribe("wills/#", QoS::AtLeastOnce);
    let (c, _) = Client::connect_with(b.port, &with_will("polite", "wills/polite", false));
    c.disconnect();
    s.ping();
}

#[test]
fn will_retain_is_honoured() {
    // [MQTT-3.1.2-17] will retain = 1: published as a retained message.
    let b = BrokerProcess::start("");
    let mut watch = Client::connect(b.port, "ret-watch");
    watch.subscribe("wills/retained", QoS::AtLeastOnce);
    let (c, _) = Client::connect_with(b.port, &with_will("ret-dies", "wills/retained", true));
    c.drop_connection();
    // The live copy arrives once the broker has handled the close, by which time the
    // retained store holds it too.
    let live = watch.recv_publish();
    assert!(!live.retain, "[MQTT-3.3.1-9]");
    let mut late = Client::connect(b.port, "late");
    late.subscribe("wills/retained", QoS::AtLeastOnce);
    let p = late.recv_publish();
    assert!(p.retain);
    assert_eq!(p.payload, b"ret-dies gone");
}

#[test]
fn will_is_published_on_keep_alive_timeout() {
    // [MQTT-3.1.2-24] 1.5 x keep-alive of silence closes the connection; the will fires.
    let b = BrokerProcess::start("");
    let mut s = Client::connect(b.port, "ka-watch");
    s.subscribe("wills/#", QoS::AtLeastOnce);
    let mut o = with_will("sleepy", "wills/sleepy", false);
    o.keep_alive = 1;
    let (mut c, _) = Client::connect_with(b.port, &o);
    let started = Instant::now();
    c.expect_closed();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1400),
        "closed too early: {waited:?}"
    );
    let p = s.recv_publish();
    assert_eq!(p.topic, "wills/sleepy");
}

/// A peer's close that arrives with its last bytes is still seen at once. The
/// loop stops reading a socket at a short read (Linux reports new data again),
/// but a FIN that came in the same readiness event is not new data: the
/// broker must read on to EOF, or the will would wait for the keep-alive
/// (90 s here). Ten clients each send a PUBLISH and close in one go, so the
/// close usually lands in the same event as the data.
#[test]
fn will_is_published_when_the_close_arrives_with_the_last_packet() {
    let b = BrokerProcess::start("");
    let mut s = Client::connect(b.port, "fin-watch");
    s.subscribe("wills/#", QoS::AtMostOnce);
    s.subscribe("data/#", QoS::AtMostOnce);
    for i in 0..10 {
        let id = format!("fin-{i}");
        let (mut c, _) =
            Client::connect_with(b.port, &with_will(&id, &format!("wills/{id}"), false));
        c.send(&midge::protocol::Packet::Publish(publish(
            &format!("data/{id}"),
            b"last",
            QoS::AtMostOnce,
            false,
            0,
        )));
        c.drop_connection();
        let started = Instant::now();
        let mut topics = vec![s.recv_publish().topic, s.recv_publish().topic];
        topics.sort();
        assert_eq!(topics, [format!("data/{id}"), format!("wills/{id}")]);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
