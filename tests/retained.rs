//! Retained messages: set, replace, clear, and delivery through wildcards.

mod common;

use common::*;
use midge::protocol::QoS;

#[test]
fn retained_set_replace_clear() {
    let b = BrokerProcess::start("");
    let mut publ = Client::connect(b.port, "ret-pub");
    publ.publish("ret/a", b"one", QoS::AtLeastOnce, true, 1);

    // [MQTT-3.3.1-6]/[MQTT-3.3.1-8] a new subscriber gets it, with RETAIN=1.
    let mut s1 = Client::connect(b.port, "ret-s1");
    s1.subscribe("ret/a", QoS::AtLeastOnce);
    let p = s1.recv_publish();
    assert_eq!(p.payload, b"one");
    assert!(p.retain);
    s1.disconnect();

    // [MQTT-3.3.1-5] a new retained message replaces the old one.
    publ.publish("ret/a", b"two", QoS::AtMostOnce, true, 0);
    let mut s2 = Client::connect(b.port, "ret-s2");
    s2.subscribe("ret/a", QoS::AtLeastOnce);
    let p = s2.recv_publish();
    assert_eq!(p.payload, b"two");
    assert_eq!(
        p.qos,
        QoS::AtMostOnce,
        "stored at the QoS it was published with"
    );
    s2.ping();

    // [MQTT-3.3.1-10]/[MQTT-3.3.1-11] an empty retained payload clears it...
    publ.publish("ret/a", b"", QoS::AtLeastOnce, true, 2);
    // ...and the zero-byte message still reaches current subscribers as a normal message.
    let p = s2.recv_publish();
    assert!(p.payload.is_empty());
    let mut s3 = Client::connect(b.port, "ret-s3");
    s3.subscribe("ret/a", QoS::AtLeastOnce);
    // Nothing retained: the first thing after the SUBACK is our PINGRESP.
    s3.ping();
}

#[test]
fn retained_messages_are_found_through_wildcards() {
    let b = BrokerProcess::start("");
    let mut publ = Client::connect(b.port, "wret-pub");
    for t in [
        "home/kitchen/temp",
        "home/hall/temp",
        "home/hall/light",
        "office/temp",
    ] {
        publ.publish(t, t.as_bytes(), QoS::AtLeastOnce, true, 1);
    }
    let mut s = Client::connect(b.port, "wret-sub");
    s.subscribe("home/+/temp", QoS::AtLeastOnce);
    let mut got: Vec<String> = (0..2).map(|_| s.recv_publish().topic.to_string()).collect();
    got.sort();
    assert_eq!(got, ["home/hall/temp", "home/kitchen/temp"]);
    s.ping();
    s.subscribe("home/#", QoS::AtLeastOnce);
    let mut got: Vec<String> = (0..3).map(|_| s.recv_publish().topic.to_string()).collect();
    got.sort();
    assert_eq!(
        got,
        ["home/hall/light", "home/hall/temp", "home/kitchen/temp"]
    );
    s.ping();
}

#[test]
fn live_messages_to_existing_subscribers_have_retain_clear() {
    // [MQTT-3.3.1-9] RETAIN=0 when forwarding to an established subscription.
    let b = BrokerProcess::start("");
    let mut s = Client::connect(b.port, "live-sub");
    s.subscribe("live/t", QoS::AtMostOnce);
    let mut publ = Client::connect(b.port, "live-pub");
    publ.publish("live/t", b"x", QoS::AtMostOnce, true, 0);
    let p = s.recv_publish();
    assert!(!p.retain);
}
