//! The bridge state machine without sockets: actions, packets and time in,
//! actions and packets out.

use std::time::{Duration, Instant};

use super::*;
use crate::bridge::config::BridgeConfig;
use crate::protocol::{ConnAck, Packet, PubResp};

fn config(lines: &[(&str, &[&str])]) -> BridgeConfig {
    let mut c = BridgeConfig::new("t", "t.conf".into(), 1);
    for (d, a) in lines {
        assert!(c.apply(d, a).expect("directive"));
    }
    c
}

fn decode_all(bytes: &[u8], version: ProtocolVersion) -> Vec<Packet<'_>> {
    let limits = DecodeLimits::new(version, 1 << 20);
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        match decode(&bytes[pos..], &limits) {
            Ok(Decoded::Packet(p, used)) => {
                out.push(p);
                pos += used;
            }
            other => panic!("{other:?}"),
        }
    }
    out
}

/// Run the machine to an established link; returns it and the time.
fn up(lines: &[(&str, &[&str])]) -> (Bridge, Instant) {
    let now = Instant::now();
    let mut b = Bridge::new(config(lines), now, 1);
    b.start(now);
    let acts = b.take_actions();
    assert!(
        acts.contains(&Action::Resolve("127.0.0.1".into(), 1883)),
        "{acts:?}"
    );
    b.resolved(now, Ok(vec!["127.0.0.1:1883".parse().expect("addr")]));
    b.connected(now);
    let mut connect = Vec::new();
    b.take_remote(&mut connect);
    b.handle_remote(
        now,
        Packet::ConnAck(ConnAck {
            session_present: false,
            reason: ReasonCode::SUCCESS,
            properties: Properties::default(),
        }),
    );
    assert!(b.is_up());
    let _ = b.take_actions();
    let mut rest = Vec::new();
    b.take_remote(&mut rest);
    (b, now)
}

#[test]
fn try_private_sets_bit_7_of_the_level() {
    let now = Instant::now();
    let mut b = Bridge::new(config(&[("address", &["127.0.0.1"])]), now, 1);
    b.start(now);
    b.resolved(now, Ok(vec!["127.0.0.1:1883".parse().expect("addr")]));
    b.connected(now);
    let mut bytes = Vec::new();
    b.take_remote(&mut bytes);
    // 0x10, remaining length, 0x00 0x04 "MQTT", level.
    assert_eq!(bytes[8], 0x84);
    assert!(crate::protocol::decode::bridge_marker(&bytes));
}

#[test]
fn packet_ids_pass_through_both_ways() {
    let (mut b, now) = up(&[("address", &["127.0.0.1"]), ("topic", &["#", "both", "2"])]);
    // A local QoS 2 message goes out with its own id, and the remote's
    // PUBREC/PUBCOMP go back to the local session with that id.
    let mut local = Vec::new();
    crate::protocol::encode(
        &Packet::Publish(Publish {
            dup: false,
            qos: QoS::ExactlyOnce,
            retain: false,
            topic: "a",
            packet_id: 77,
            properties: Properties::default(),
            payload: b"x",
        }),
        ProtocolVersion::V5,
        &mut local,
    )
    .expect("encode");
    b.feed_local(now, &local);
    let mut remote = Vec::new();
    b.take_remote(&mut remote);
    match decode_all(&remote, ProtocolVersion::V311).as_slice() {
        [Packet::Publish(p)] => assert_eq!((p.packet_id, p.qos), (77, QoS::ExactlyOnce)),
        other => panic!("{other:?}"),
    }
    b.handle_remote(now, Packet::PubRec(PubResp::success(77)));
    let acts = b.take_actions();
    let Some(Action::LocalAcks(acks)) = acts.first() else {
        panic!("{acts:?}");
    };
    assert!(matches!(
        acks.as_slice(),
        [a] if a.packet() == Packet::PubRec(PubResp::success(77))
    ));
}

#[test]
fn nothing_is_acknowledged_locally_while_the_link_is_down() {
    let (mut b, now) = up(&[("address", &["127.0.0.1"]), ("topic", &["#", "out", "1"])]);
    b.link_failed(now, "test");
    let acts = b.take_actions();
    assert!(acts.contains(&Action::CloseRemote) && acts.contains(&Action::CloseLocal));
    let mut local = Vec::new();
    crate::protocol::encode(
        &Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "a",
            packet_id: 5,
            properties: Properties::default(),
            payload: b"x",
        }),
        ProtocolVersion::V5,
        &mut local,
    )
    .expect("encode");
    b.feed_local(now, &local);
    assert!(
        b.take_actions().is_empty(),
        "no PUBACK for an unforwarded message"
    );
}

#[test]
fn failover_tries_the_next_address_at_once_then_backs_off() {
    let now = Instant::now();
    let mut b = Bridge::new(
        config(&[
            ("address", &["10.0.0.1", "10.0.0.2"]),
            ("restart_timeout", &["7"]),
        ]),
        now,
        1,
    );
    b.start(now);
    assert!(b
        .take_actions()
        .contains(&Action::Resolve("10.0.0.1".into(), 1883)));
    b.resolved(now, Err("nope".into()));
    let _ = b.take_actions();
    // Second address at once.
    assert_eq!(b.poll_timeout(), Some(now));
    b.handle_timeout(now);
    assert!(b
        .take_actions()
        .contains(&Action::Resolve("10.0.0.2".into(), 1883)));
    b.resolved(now, Err("nope".into()));
    // Both failed: wait restart_timeout, then the first again.
    assert_eq!(b.poll_timeout(), Some(now + Duration::from_secs(7)));
    b.handle_timeout(now + Duration::from_secs(7));
    assert!(b
        .take_actions()
        .contains(&Action::Resolve("10.0.0.1".into(), 1883)));
}

#[test]
fn silent_link_is_pinged_then_dropped() {
    let (mut b, now) = up(&[("address", &["127.0.0.1"]), ("keepalive_interval", &["10"])]);
    let t = now + Duration::from_secs(10);
    assert_eq!(b.poll_timeout(), Some(t));
    b.handle_timeout(t);
    let mut bytes = Vec::new();
    b.take_remote(&mut bytes);
    assert!(matches!(
        decode_all(&bytes, ProtocolVersion::V311).as_slice(),
        [Packet::PingReq]
    ));
    b.wrote_remote(t);
    // Waiting for the answer: next wake-up is the 1.5 x deadline, not a busy loop.
    assert_eq!(b.poll_timeout(), Some(now + Duration::from_secs(15)));
    b.handle_timeout(now + Duration::from_secs(14));
    assert!(b.is_up());
    b.handle_timeout(now + Duration::from_secs(15));
    assert!(!b.is_up(), "no answer within 1.5 x keep-alive");
}

fn local_publish(qos: QoS, packet_id: u16, payload: &[u8]) -> Vec<u8> {
    let mut local = Vec::new();
    crate::protocol::encode(
        &Packet::Publish(Publish {
            dup: false,
            qos,
            retain: false,
            topic: "a",
            packet_id,
            properties: Properties::default(),
            payload,
        }),
        ProtocolVersion::V5,
        &mut local,
    )
    .expect("encode");
    local
}

#[test]
fn too_large_for_the_remote_is_completed_locally_and_counted() {
    let (mut b, now) = up(&[
        ("address", &["127.0.0.1"]),
        ("topic", &["#", "out", "2"]),
        ("bridge_max_packet_size", &["100"]),
    ]);
    let big = [0u8; 200];
    b.feed_local(now, &local_publish(QoS::AtLeastOnce, 3, &big));
    b.feed_local(now, &local_publish(QoS::ExactlyOnce, 4, &big));
    b.feed_local(now, &local_publish(QoS::AtLeastOnce, 5, b"small"));
    let mut remote = Vec::new();
    b.take_remote(&mut remote);
    // [MQTT-3.2.2-15]: only the small one goes out.
    match decode_all(&remote, ProtocolVersion::V311).as_slice() {
        [Packet::Publish(p)] => assert_eq!((p.packet_id, p.payload), (5, &b"small"[..])),
        other => panic!("{other:?}"),
    }
    // The big ones are acknowledged locally: PUBACK 3, PUBREC 4; PUBREL 4 gets PUBCOMP.
    let acts = b.take_actions();
    let Some(Action::LocalAcks(acks)) = acts.first() else {
        panic!("{acts:?}");
    };
    assert!(matches!(
        acks.as_slice(),
        [a, r] if a.packet() == Packet::PubAck(PubResp::success(3))
            && r.packet() == Packet::PubRec(PubResp::success(4))
    ));
    let mut rel = Vec::new();
    crate::protocol::encode(
        &Packet::PubRel(PubResp::success(4)),
        ProtocolVersion::V5,
        &mut rel,
    )
    .expect("encode");
    b.feed_local(now, &rel);
    let acts = b.take_actions();
    let Some(Action::LocalAcks(acks)) = acts.first() else {
        panic!("{acts:?}");
    };
    assert!(matches!(
        acks.as_slice(),
        [c] if c.packet() == Packet::PubComp(PubResp::success(4))
    ));
    assert_eq!(b.stats().dropped_too_large, 2);
    assert_eq!(b.stats().sent, 1);
}

#[test]
fn on_a_backup_address_the_first_is_checked_and_the_link_moves_back() {
    let now = Instant::now();
    let mut b = Bridge::new(
        config(&[
            ("address", &["10.0.0.1", "10.0.0.2"]),
            ("keepalive_interval", &["60"]),
        ]),
        now,
        1,
    );
    b.start(now);
    let _ = b.take_actions();
    b.resolved(now, Err("down".into()));
    b.handle_timeout(now);
    assert!(b
        .take_actions()
        .contains(&Action::Resolve("10.0.0.2".into(), 1883)));
    b.resolved(now, Ok(vec!["10.0.0.2:1883".parse().expect("addr")]));
    b.connected(now);
    b.handle_remote(
        now,
        Packet::ConnAck(ConnAck {
            session_present: false,
            reason: ReasonCode::SUCCESS,
            properties: Properties::default(),
        }),
    );
    assert!(b.is_up());
    let _ = b.take_actions();
    // mosquitto's interval: the first check 5 s after landing on the backup.
    let t = now + Duration::from_secs(5);
    assert_eq!(b.poll_timeout(), Some(t));
    b.handle_timeout(t);
    assert_eq!(
        b.take_actions(),
        vec![Action::Probe("10.0.0.1".into(), 1883)]
    );
    // Refused: the link stays, the next check 5 s later.
    b.probe_result(t, false);
    assert!(b.is_up());
    assert_eq!(b.poll_timeout(), Some(t + Duration::from_secs(5)));
    let t = t + Duration::from_secs(5);
    b.handle_timeout(t);
    assert_eq!(
        b.take_actions(),
        vec![Action::Probe("10.0.0.1".into(), 1883)]
    );
    // Answered: the backup link closes and the first address is tried at once.
    b.probe_result(t, true);
    assert!(!b.is_up());
    let acts = b.take_actions();
    assert!(acts.contains(&Action::CloseRemote), "{acts:?}");
    assert!(acts.contains(&Action::CloseLocal), "{acts:?}");
    assert_eq!(b.poll_timeout(), Some(t));
    b.handle_timeout(t);
    assert!(b
        .take_actions()
        .contains(&Action::Resolve("10.0.0.1".into(), 1883)));
}

#[test]
fn round_robin_never_checks_the_first_address() {
    let now = Instant::now();
    let mut b = Bridge::new(
        config(&[
            ("address", &["10.0.0.1", "10.0.0.2"]),
            ("round_robin", &["true"]),
            ("keepalive_interval", &["0"]),
        ]),
        now,
        1,
    );
    b.start(now);
    b.resolved(now, Err("down".into()));
    b.handle_timeout(now);
    b.resolved(now, Ok(vec!["10.0.0.2:1883".parse().expect("addr")]));
    b.connected(now);
    b.handle_remote(
        now,
        Packet::ConnAck(ConnAck {
            session_present: false,
            reason: ReasonCode::SUCCESS,
            properties: Properties::default(),
        }),
    );
    assert!(b.is_up());
    assert_eq!(b.poll_timeout(), None, "nothing to wake up for");
}

#[test]
fn lazy_waits_for_its_queue_then_stops_when_idle() {
    let now = Instant::now();
    let mut b = Bridge::new(
        config(&[
            ("address", &["127.0.0.1"]),
            ("start_type", &["lazy"]),
            ("idle_timeout", &["30"]),
            ("keepalive_interval", &["60"]),
            ("topic", &["#", "out", "1"]),
        ]),
        now,
        1,
    );
    b.start(now);
    let acts = b.take_actions();
    assert!(acts.contains(&Action::WatchQueue(10)), "{acts:?}");
    assert!(!acts.iter().any(|a| matches!(a, Action::Resolve(..))));
    assert_eq!(b.poll_timeout(), None, "idle: no timer at all");
    b.queue_reached(now);
    assert!(b
        .take_actions()
        .contains(&Action::Resolve("127.0.0.1".into(), 1883)));
    b.resolved(now, Ok(vec!["127.0.0.1:1883".parse().expect("addr")]));
    b.connected(now);
    b.handle_remote(
        now,
        Packet::ConnAck(ConnAck {
            session_present: false,
            reason: ReasonCode::SUCCESS,
            properties: Properties::default(),
        }),
    );
    let _ = b.take_actions();
    // A message forwarded at +20 s moves the idle deadline to +50 s; the
    // keep-alive ping comes before it.
    let t = now + Duration::from_secs(20);
    b.feed_local(t, &local_publish(QoS::AtLeastOnce, 1, b"x"));
    b.wrote_remote(t);
    assert_eq!(b.poll_timeout(), Some(now + Duration::from_secs(50)));
    b.handle_remote(t, Packet::PingResp);
    b.handle_timeout(now + Duration::from_secs(49));
    assert!(b.is_up());
    b.handle_timeout(now + Duration::from_secs(50));
    assert!(!b.is_up());
    let acts = b.take_actions();
    assert!(acts.contains(&Action::CloseRemote), "{acts:?}");
    assert!(acts.contains(&Action::WatchQueue(10)), "{acts:?}");
    assert_eq!(b.poll_timeout(), None);
}

#[test]
fn a_v5_remotes_receive_maximum_sizes_the_local_window() {
    let now = Instant::now();
    let cfg = config(&[
        ("address", &["127.0.0.1"]),
        ("topic", &["#", "out", "1"]),
        ("bridge_protocol_version", &["mqttv50"]),
    ]);
    let mut b = Bridge::new(cfg, now, 1);
    b.start(now);
    b.resolved(now, Ok(vec!["127.0.0.1:1883".parse().expect("addr")]));
    let _ = b.take_actions();
    b.connected(now);
    b.take_remote(&mut Vec::new());
    b.handle_remote(
        now,
        Packet::ConnAck(ConnAck {
            session_present: false,
            reason: ReasonCode::SUCCESS,
            properties: Properties {
                receive_maximum: Some(2),
                ..Properties::default()
            },
        }),
    );
    // [MQTT-3.3.4-9] the local session is attached with the remote's window.
    let acts = b.take_actions();
    let connect = acts.iter().find_map(|a| match a {
        Action::Local(bytes) => decode_all(bytes, ProtocolVersion::V5)
            .into_iter()
            .find_map(|p| match p {
                Packet::Connect(c) => Some(c.properties.receive_maximum),
                _ => None,
            }),
        _ => None,
    });
    assert_eq!(connect, Some(Some(2)), "{acts:?}");
    // The notification (QoS 1) holds one slot until its PUBACK: of a full
    // window of two, one message goes out now, the other after that PUBACK.
    let mut remote = Vec::new();
    b.take_remote(&mut remote);
    let own = match decode_all(&remote, ProtocolVersion::V5).as_slice() {
        [Packet::Unsubscribe(_), Packet::Publish(n)] => n.packet_id,
        other => panic!("{other:?}"),
    };
    let mut local = local_publish(QoS::AtLeastOnce, 1, b"x");
    local.extend(local_publish(QoS::AtLeastOnce, 2, b"x"));
    b.feed_local(now, &local);
    let mut remote = Vec::new();
    b.take_remote(&mut remote);
    assert!(matches!(
        decode_all(&remote, ProtocolVersion::V5).as_slice(),
        [Packet::Publish(p)] if p.packet_id == 1
    ));
    b.handle_remote(now, Packet::PubAck(PubResp::success(own)));
    let mut remote = Vec::new();
    b.take_remote(&mut remote);
    assert!(matches!(
        decode_all(&remote, ProtocolVersion::V5).as_slice(),
        [Packet::Publish(p)] if p.packet_id == 2
    ));
    // From then on the broker's window alone bounds what is in flight.
    b.feed_local(now, &local_publish(QoS::AtLeastOnce, 3, b"x"));
    let mut remote = Vec::new();
    b.take_remote(&mut remote);
    assert_eq!(decode_all(&remote, ProtocolVersion::V5).len(), 1);
}
