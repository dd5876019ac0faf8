//! Publish/subscribe at every QoS combination, over TCP against the real binary.

mod common;

use common::*;
use midge::protocol::{Packet, ProtocolVersion, PubResp, QoS, ReasonCode};

fn min_qos(a: QoS, b: QoS) -> QoS {
    if a < b {
        a
    } else {
        b
    }
}

#[test]
fn every_publish_qos_times_subscribe_qos() {
    let b = BrokerProcess::start("");
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        for sub_qos in ALL_QOS {
            for pub_qos in ALL_QOS {
                let tag = format!("{}-{}-{}", version.level(), sub_qos as u8, pub_qos as u8);
                let topic = format!("qos/{tag}");
                let mut sub = Client::connect_v(b.port, version, &format!("sub-{tag}"));
                let granted = sub.subscribe(&topic, sub_qos);
                assert_eq!(granted, vec![ReasonCode(sub_qos as u8)], "{tag}");
                let mut publ = Client::connect_v(b.port, version, &format!("pub-{tag}"));
                publ.publish(&topic, tag.as_bytes(), pub_qos, false, 10);
                let p = sub.recv_publish();
                assert_eq!(p.topic, topic);
                assert_eq!(p.payload, tag.as_bytes());
                // [MQTT-3.8.4-6]/4.3: delivered at the minimum of the two.
                assert_eq!(p.qos, min_qos(sub_qos, pub_qos), "{tag}");
                assert!(!p.retain, "[MQTT-3.3.1-9] live messages have RETAIN=0");
                if p.qos != QoS::AtMostOnce {
                    assert_ne!(p.packet_id, 0, "[MQTT-2.2.1-3]");
                }
                sub.ping();
                publ.disconnect();
                sub.disconnect();
            }
        }
    }
}

#[test]
fn qos2_inbound_is_delivered_exactly_once_despite_dup_resend() {
    // 4.3.3: the receiver must not forward a re-sent PUBLISH with the same packet id
    // again before the PUBREL.
    let b = BrokerProcess::start("");
    let mut sub = Client::connect(b.port, "eo-sub");
    sub.subscribe("eo/t", QoS::ExactlyOnce);
    let mut publ = Client::connect(b.port, "eo-pub");
    let mut p = publish("eo/t", b"once", QoS::ExactlyOnce, false, 77);
    publ.send(&Packet::Publish(p.clone()));
    assert!(matches!(publ.recv(), Packet::PubRec(r) if r.packet_id == 77));
    p.dup = true;
    publ.send(&Packet::Publish(p));
    assert!(matches!(publ.recv(), Packet::PubRec(r) if r.packet_id == 77));
    publ.send(&Packet::PubRel(PubResp::success(77)));
    assert!(matches!(publ.recv(), Packet::PubComp(r) if r.packet_id == 77));
    let got = sub.recv_publish();
    assert_eq!(got.payload, b"once");
    // Only one copy: the next thing after it is our own PINGRESP.
    sub.ping();
}

#[test]
fn overlapping_subscriptions_deliver_once_at_the_highest_qos() {
    // midge's choice for [MQTT-3.3.5-1]: one copy, at the maximum granted QoS.
    let b = BrokerProcess::start("");
    let mut sub = Client::connect(b.port, "overlap");
    sub.subscribe("ov/#", QoS::AtLeastOnce);
    sub.subscribe("ov/+/c", QoS::ExactlyOnce);
    let mut publ = Client::connect(b.port, "overlap-pub");
    publ.publish("ov/b/c", b"x", QoS::ExactlyOnce, false, 1);
    let p = sub.recv_publish();
    assert_eq!(p.qos, QoS::ExactlyOnce);
    sub.ping();
}

#[test]
fn messages_keep_their_order() {
    // [MQTT-4.6.0-5]/[MQTT-4.6.0-6] ordered topics: messages arrive in publish order.
    let b = BrokerProcess::start("max_inflight_messages 5");
    let mut sub = Client::connect(b.port, "order-sub");
    sub.subscribe("order", QoS::AtLeastOnce);
    let mut publ = Client::connect(b.port, "order-pub");
    for i in 0..200u16 {
        publ.send(&Packet::Publish(publish(
            "order",
            format!("{i}").as_bytes(),
            QoS::AtLeastOnce,
            false,
            i + 1,
        )));
    }
    for i in 0..200u16 {
        let p = sub.recv_publish();
        assert_eq!(p.payload, format!("{i}").as_bytes());
    }
    for i in 0..200u16 {
        assert!(matches!(publ.recv(), Packet::PubAck(a) if a.packet_id == i + 1));
    }
}

#[test]
fn unsubscribe_stops_delivery() {
    let b = BrokerProcess::start("");
    let mut sub = Client::connect(b.port, "unsub");
    sub.subscribe("u/t", QoS::AtMostOnce);
    sub.unsubscribe("u/t", 2);
    let mut publ = Client::connect(b.port, "unsub-pub");
    publ.publish("u/t", b"gone", QoS::AtLeastOnce, false, 3);
    sub.ping();
}

#[test]
fn v5_publisher_reaches_v311_subscriber_and_back() {
    let b = BrokerProcess::start("");
    let mut s3 = Client::connect_v(b.port, ProtocolVersion::V311, "x-s3");
    let mut s5 = Client::connect_v(b.port, ProtocolVersion::V5, "x-s5");
    s3.subscribe("x/#", QoS::AtLeastOnce);
    s5.subscribe("x/#", QoS::AtLeastOnce);
    let mut p5 = Client::connect_v(b.port, ProtocolVersion::V5, "x-p5");
    let mut msg = publish("x/5", b"from5", QoS::AtLeastOnce, false, 1);
    msg.properties.user_properties = vec![("k", "v")];
    msg.properties.content_type = Some("text/plain");
    p5.send(&Packet::Publish(msg));
    assert!(matches!(p5.recv(), Packet::PubAck(_)));
    assert_eq!(s3.recv_publish().payload, b"from5");
    let got5 = s5.recv_publish();
    // [MQTT-3.3.2-17]/[MQTT-3.3.2-18] user properties forwarded unchanged.
    assert_eq!(got5.properties.user_properties, vec![("k", "v")]);
    assert_eq!(got5.properties.content_type, Some("text/plain"));
    let mut p3 = Client::connect_v(b.port, ProtocolVersion::V311, "x-p3");
    p3.publish("x/3", b"from3", QoS::AtLeastOnce, false, 2);
    assert_eq!(s5.recv_publish().payload, b"from3");
    assert_eq!(s3.recv_publish().payload, b"from3");
}
