//! Persistent sessions: queued messages and in-flight re-sends across reconnects.

mod common;

use common::*;
use midge::protocol::{Packet, ProtocolVersion, PubResp, QoS};

fn persistent(version: ProtocolVersion, id: &str) -> ConnectOptions {
    let mut o = ConnectOptions::new(version, id);
    o.clean = false;
    if version == ProtocolVersion::V5 {
        // v5: a session outlives the connection only with an expiry interval (3.1.2.11.2).
        o.session_expiry = Some(300);
    }
    o
}

#[test]
fn offline_queue_is_delivered_on_resume() {
    let b = BrokerProcess::start("");
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let id = format!("persist-{}", version.level());
        let (mut s, (_, present)) = Client::connect_with(b.port, &persistent(version, &id));
        assert!(!present);
        s.subscribe(&format!("{id}/q1"), QoS::AtLeastOnce);
        s.subscribe(&format!("{id}/q2"), QoS::ExactlyOnce);
        s.subscribe(&format!("{id}/q0"), QoS::AtMostOnce);
        s.disconnect();

        let mut publ = Client::connect(b.port, &format!("{id}-pub"));
        publ.publish(&format!("{id}/q1"), b"one", QoS::AtLeastOnce, false, 1);
        publ.publish(&format!("{id}/q2"), b"two", QoS::ExactlyOnce, false, 2);
        // QoS 0 is not queued for offline clients by default (queue_qos0_messages false).
        publ.publish(&format!("{id}/q0"), b"zero", QoS::AtMostOnce, false, 0);
        publ.ping();

        // [MQTT-3.2.2-2] session present = 1 when the session is resumed.
        let (mut s, (_, present)) = Client::connect_with(b.port, &persistent(version, &id));
        assert!(present, "{version}");
        let a = s.recv_publish();
        let c = s.recv_publish();
        assert_eq!((a.payload, a.qos), (&b"one"[..], QoS::AtLeastOnce));
        assert_eq!((c.payload, c.qos), (&b"two"[..], QoS::ExactlyOnce));
        s.ping();
        s.disconnect();
    }
}

#[test]
fn queue_qos0_messages_queues_qos0_too() {
    let b = BrokerProcess::start("queue_qos0_messages true");
    let (mut s, _) = Client::connect_with(b.port, &persistent(ProtocolVersion::V311, "q0"));
    s.subscribe("q0/t", QoS::AtMostOnce);
    s.disconnect();
    let mut publ = Client::connect(b.port, "q0-pub");
    publ.publish("q0/t", b"zero", QoS::AtMostOnce, false, 0);
    publ.ping();
    let (mut s, _) = Client::connect_with(b.port, &persistent(ProtocolVersion::V311, "q0"));
    assert_eq!(s.recv_publish().payload, b"zero");
}

#[test]
fn unacknowledged_publish_is_resent_with_dup_on_reconnect() {
    // [MQTT-4.4.0-1] on reconnect with a session, unacknowledged PUBLISH packets are
    // re-sent with DUP=1 [MQTT-3.3.1-1], and PUBREL for received PUBRECs.
    let b = BrokerProcess::start("");
    let (mut s, _) = Client::connect_with(b.port, &persistent(ProtocolVersion::V311, "resend"));
    s.subscribe("rs/1", QoS::AtLeastOnce);
    s.subscribe("rs/2", QoS::ExactlyOnce);
    let mut publ = Client::connect(b.port, "resend-pub");
    publ.publish("rs/1", b"q1", QoS::AtLeastOnce, false, 1);
    publ.publish("rs/2", b"q2", QoS::ExactlyOnce, false, 2);
    // Receive both but acknowledge neither fully: PUBACK nothing, PUBREC the QoS 2 one.
    let first = match s.recv() {
        Packet::Publish(p) => p,
        other => panic!("{other:?}"),
    };
    let second = match s.recv() {
        Packet::Publish(p) => p,
        other => panic!("{other:?}"),
    };
    assert_eq!(first.payload, b"q1");
    assert!(!first.dup);
    assert_eq!(second.qos, QoS::ExactlyOnce);
    s.send(&Packet::PubRec(PubResp::success(second.packet_id)));
    assert!(matches!(s.recv(), Packet::PubRel(r) if r.packet_id == second.packet_id));
    s.drop_connection();

    let (mut s, (_, present)) =
        Client::connect_with(b.port, &persistent(ProtocolVersion::V311, "resend"));
    assert!(present);
    match s.recv() {
        Packet::Publish(p) => {
            assert!(p.dup, "[MQTT-3.3.1-1] re-delivery has DUP=1");
            assert_eq!(p.packet_id, first.packet_id);
            assert_eq!(p.payload, b"q1");
            s.send(&Packet::PubAck(PubResp::success(p.packet_id)));
        }
        other => panic!("expected re-sent PUBLISH, got {other:?}"),
    }
    match s.recv() {
        Packet::PubRel(r) => {
            assert_eq!(r.packet_id, second.packet_id);
            s.send(&Packet::PubComp(PubResp::success(r.packet_id)));
        }
        other => panic!("expected re-sent PUBREL, got {other:?}"),
    }
    s.ping();
}

#[test]
fn clean_session_discards_the_old_session() {
    let b = BrokerProcess::start("");
    let (mut s, _) = Client::connect_with(b.port, &persistent(ProtocolVersion::V311, "cleaner"));
    s.subscribe("cl/t", QoS::AtLeastOnce);
    s.disconnect();
    let mut publ = Client::connect(b.port, "cleaner-pub");
    publ.publish("cl/t", b"lost", QoS::AtLeastOnce, false, 1);
    // [MQTT-3.1.2-6] clean session: the previous session is discarded.
    let (mut s, (_, present)) = Client::connect_with(
        b.port,
        &ConnectOptions::new(ProtocolVersion::V311, "cleaner"),
    );
    assert!(!present);
    s.ping();
    s.disconnect();
    // And the subscription is gone too.
    publ.publish("cl/t", b"none", QoS::AtLeastOnce, false, 2);
    let (mut s, (_, present)) =
        Client::connect_with(b.port, &persistent(ProtocolVersion::V311, "cleaner"));
    assert!(!present);
    s.ping();
}

#[test]
fn v5_session_without_expiry_ends_with_the_connection() {
    // 3.1.2.11.2: absent Session Expiry Interval = 0: the session ends at disconnect.
    let b = BrokerProcess::start("");
    let mut o = ConnectOptions::new(ProtocolVersion::V5, "noexp");
    o.clean = false;
    let (mut s, _) = Client::connect_with(b.port, &o);
    s.subscribe("ne/t", QoS::AtLeastOnce);
    s.disconnect();
    let (_s, (_, present)) = Client::connect_with(b.port, &o);
    assert!(!present);
}

#[test]
fn queued_messages_beyond_max_queued_messages_are_dropped_and_logged() {
    let b = BrokerProcess::start("max_queued_messages 3");
    let (mut s, _) = Client::connect_with(b.port, &persistent(ProtocolVersion::V311, "tiny-q"));
    s.subscribe("tq", QoS::AtLeastOnce);
    s.disconnect();
    let mut publ = Client::connect(b.port, "tiny-q-pub");
    for i in 0..10u16 {
        publ.publish(
            "tq",
            format!("{i}").as_bytes(),
            QoS::AtLeastOnce,
            false,
            i + 1,
        );
    }
    b.wait_log("dropped");
    let (mut s, _) = Client::connect_with(b.port, &persistent(ProtocolVersion::V311, "tiny-q"));
    for i in 0..3u16 {
        assert_eq!(s.recv_publish().payload, format!("{i}").as_bytes());
    }
    s.ping();
}

/// A clean session taken over while connected by a CleanSession=0 connection
/// is not resumed: it ended with its connection, so session present is 0
/// [MQTT-3.2.2-2] and its subscriptions are gone [MQTT-3.1.2-6].
#[test]
fn clean_session_taken_over_is_not_resumed() {
    let b = BrokerProcess::start("");
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let id = format!("takeover-clean-{}", version.level());
        let mut first = Client::connect_v(b.port, version, &id);
        first.subscribe("tc/t", QoS::AtLeastOnce);
        let (mut second, (_, present)) = Client::connect_with(b.port, &persistent(version, &id));
        assert!(!present, "v{}: session present", version.level());
        let mut publ = Client::connect(b.port, "tc-pub");
        publ.publish("tc/t", b"x", QoS::AtLeastOnce, false, 1);
        // Nothing arrives before the PINGRESP: no subscription was kept.
        second.ping();
        publ.disconnect();
    }
}
