//! Tests that drive encode and decode together: round trips of every packet type
//! in every version, incremental feeding, and one malformed input per
//! `DecodeError` variant. Hand-written byte tests live beside each half.

use super::decode::{decode, DecodeLimits, Decoded};
use super::encode::{encode, encoded_len};
use super::error::DecodeError;
use super::packet::ProtocolVersion::{self, V31, V311, V5};
use super::packet::*;
use super::properties::Properties;
use super::reason::ReasonCode;
use crate::test_rng::Rng;

const VERSIONS: [ProtocolVersion; 3] = [V31, V311, V5];

fn limits(version: ProtocolVersion) -> DecodeLimits {
    DecodeLimits::new(version, 1 << 20)
}

fn user() -> Vec<(&'static str, &'static str)> {
    vec![("k", "v"), ("k", "v2"), ("", "")]
}

/// Properties for packet type `t` (only the ones 2.2.2.2 allows) when `v` is v5.
fn props(v: ProtocolVersion, t: PacketType) -> Properties<'static> {
    if !v.is_v5() {
        return Properties::default();
    }
    let base = Properties {
        user_properties: user(),
        ..Properties::default()
    };
    match t {
        PacketType::Connect => Properties {
            session_expiry_interval: Some(3600),
            authentication_method: Some("SCRAM-SHA-1"),
            authentication_data: Some(b"\x00client-first"),
            request_problem_information: Some(0),
            request_response_information: Some(1),
            receive_maximum: Some(20),
            topic_alias_maximum: Some(10),
            maximum_packet_size: Some(1 << 20),
            ..base
        },
        PacketType::ConnAck => Properties {
            session_expiry_interval: Some(0xFFFF_FFFF),
            assigned_client_identifier: Some("auto-1234"),
            server_keep_alive: Some(30),
            authentication_method: Some("SCRAM-SHA-1"),
            authentication_data: Some(b"server-final"),
            response_information: Some("resp/"),
            server_reference: Some("other:1883"),
            reason_string: Some("welcome"),
            receive_maximum: Some(65_535),
            topic_alias_maximum: Some(0),
            maximum_qos: Some(1),
            retain_available: Some(0),
            maximum_packet_size: Some(268_435_460),
            wildcard_subscription_available: Some(1),
            subscription_identifier_available: Some(0),
            shared_subscription_available: Some(1),
            ..base
        },
        PacketType::Publish => Properties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(120),
            content_type: Some("application/json"),
            response_topic: Some("reply/here"),
            correlation_data: Some(b"\x01\x02\x03"),
            subscription_identifiers: vec![1, 127, 128, 16_384, 268_435_455],
            topic_alias: Some(7),
            ..base
        },
        PacketType::Subscribe => Properties {
            subscription_identifiers: vec![2_097_152],
            ..base
        },
        PacketType::Unsubscribe => base,
        PacketType::Disconnect => Properties {
            session_expiry_interval: Some(0),
            reason_string: Some("bye"),
            server_reference: Some("elsewhere"),
            ..base
        },
        PacketType::Auth => Properties {
            authentication_method: Some("SCRAM-SHA-1"),
            authentication_data: Some(b""),
            reason_string: Some("continue"),
            ..base
        },
        // The acks: reason string and user properties.
        _ => Properties {
            reason_string: Some("why"),
            ..base
        },
    }
}

fn will_props(v: ProtocolVersion) -> Properties<'static> {
    if !v.is_v5() {
        return Properties::default();
    }
    Properties {
        payload_format_indicator: Some(0),
        message_expiry_interval: Some(10),
        content_type: Some("text/plain"),
        response_topic: Some("will/reply"),
        correlation_data: Some(b"corr"),
        will_delay_interval: Some(5),
        user_properties: user(),
        ..Properties::default()
    }
}

/// Reason codes for `v`: the given v5 code, or what the older protocol can carry.
fn rc(v: ProtocolVersion, v5: ReasonCode, older: ReasonCode) -> ReasonCode {
    if v.is_v5() {
        v5
    } else {
        older
    }
}

/// Packets of every type that `v` has, with values that survive a round trip
/// in `v` (e.g. no reason codes where the version has no field for them).
fn samples(v: ProtocolVersion) -> Vec<Packet<'static>> {
    let mut out = vec![
        Packet::Connect(Box::new(Connect {
            version: v,
            clean_start: true,
            keep_alive: 60,
            properties: props(v, PacketType::Connect),
            client_id: "client-ü",
            will: Some(Will {
                topic: "last/will",
                payload: b"\x00\xFFgone",
                qos: QoS::ExactlyOnce,
                retain: true,
                properties: will_props(v),
            }),
            username: Some("user"),
            password: Some(b"\x00secret\xFF"),
        })),
        Packet::Connect(Box::new(Connect {
            version: v,
            clean_start: false,
            keep_alive: 0,
            properties: Properties::default(),
            client_id: "",
            will: None,
            username: None,
            password: None,
        })),
        Packet::ConnAck(ConnAck {
            session_present: v != V31,
            reason: ReasonCode::SUCCESS,
            properties: props(v, PacketType::ConnAck),
        }),
        Packet::ConnAck(ConnAck {
            session_present: false,
            reason: ReasonCode::BAD_USER_NAME_OR_PASSWORD,
            properties: Properties::default(),
        }),
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: "a/b",
            packet_id: 0,
            properties: Properties::default(),
            payload: b"",
        }),
        Packet::Publish(Publish {
            dup: true,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: "sensors/temp/ü",
            packet_id: 65_535,
            properties: props(v, PacketType::Publish),
            payload: b"\x00\x01 payload bytes \xFF",
        }),
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::ExactlyOnce,
            retain: false,
            topic: "/",
            packet_id: 1,
            properties: Properties::default(),
            payload: &[0x55; 300],
        }),
    ];
    if v.is_v5() {
        // An empty topic with a Topic Alias (3.3.2.3.4).
        out.push(Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: "",
            packet_id: 0,
            properties: Properties {
                topic_alias: Some(1),
                ..Properties::default()
            },
            payload: b"aliased",
        }));
    }
    let acks: [fn(PubResp<'static>) -> Packet<'static>; 4] = [
        Packet::PubAck,
        Packet::PubRec,
        Packet::PubRel,
        Packet::PubComp,
    ];
    for (i, make) in acks.into_iter().enumerate() {
        let t = make(PubResp::success(1)).packet_type();
        let failure = if matches!(t, PacketType::PubRel | PacketType::PubComp) {
            ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
        } else {
            ReasonCode::QUOTA_EXCEEDED
        };
        out.push(make(PubResp::success(42 + i as u16)));
        // A reason code alone (remaining length 3 in v5).
        out.push(make(PubResp {
            packet_id: 7,
            reason: rc(v, failure, ReasonCode::SUCCESS),
            properties: Properties::default(),
        }));
        // Success with properties, then a failure with properties.
        out.push(make(PubResp {
            packet_id: 8,
            reason: ReasonCode::SUCCESS,
            properties: props(v, t),
        }));
        out.push(make(PubResp {
            packet_id: 9,
            reason: rc(v, failure, ReasonCode::SUCCESS),
            properties: props(v, t),
        }));
    }
    let full = SubscriptionOptions {
        qos: QoS::ExactlyOnce,
        no_local: v.is_v5(),
        retain_as_published: v.is_v5(),
        retain_handling: if v.is_v5() {
            RetainHandling::DoNotSend
        } else {
            RetainHandling::SendAtSubscribe
        },
    };
    let if_new = SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        retain_handling: if v.is_v5() {
            RetainHandling::SendIfNew
        } else {
            RetainHandling::SendAtSubscribe
        },
        ..SubscriptionOptions::default()
    };
    out.extend([
        Packet::Subscribe(Subscribe {
            packet_id: 10,
            properties: props(v, PacketType::Subscribe),
            filters: vec![
                ("a/+/c", full),
                ("#", SubscriptionOptions::default()),
                ("$share/group/x/#", if_new),
            ],
        }),
        Packet::SubAck(SubAck {
            packet_id: 10,
            properties: props(v, PacketType::SubAck),
            reasons: vec![
                ReasonCode::GRANTED_QOS_2,
                ReasonCode::GRANTED_QOS_0,
                ReasonCode::GRANTED_QOS_1,
                rc(
                    v,
                    ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED,
                    ReasonCode(0x80),
                ),
                ReasonCode::UNSPECIFIED_ERROR,
            ],
        }),
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 11,
            properties: props(v, PacketType::Unsubscribe),
            filters: vec!["a/+/c", "#", "$share/g/y"],
        }),
        Packet::UnsubAck(UnsubAck {
            packet_id: 11,
            properties: props(v, PacketType::UnsubAck),
            reasons: if v.is_v5() {
                vec![ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED]
            } else {
                Vec::new()
            },
        }),
        Packet::PingReq,
        Packet::PingResp,
        Packet::Disconnect(Disconnect::with_reason(ReasonCode::NORMAL_DISCONNECTION)),
    ]);
    if v.is_v5() {
        out.extend([
            Packet::Disconnect(Disconnect::with_reason(ReasonCode::DISCONNECT_WITH_WILL)),
            Packet::Disconnect(Disconnect {
                reason: ReasonCode::NORMAL_DISCONNECTION,
                properties: props(v, PacketType::Disconnect),
            }),
            Packet::Disconnect(Disconnect {
                reason: ReasonCode::SERVER_SHUTTING_DOWN,
                properties: props(v, PacketType::Disconnect),
            }),
            Packet::Auth(Auth {
                reason: ReasonCode::SUCCESS,
                properties: Properties::default(),
            }),
            Packet::Auth(Auth {
                reason: ReasonCode::RE_AUTHENTICATE,
                properties: Properties::default(),
            }),
            Packet::Auth(Auth {
                reason: ReasonCode::CONTINUE_AUTHENTICATION,
                properties: props(v, PacketType::Auth),
            }),
        ]);
    }
    out
}

fn encode_ok(p: &Packet<'_>, v: ProtocolVersion) -> Vec<u8> {
    let mut out = Vec::new();
    let n = encode(p, v, &mut out).unwrap_or_else(|e| panic!("{p:?} in {v}: {e}"));
    assert_eq!(n, out.len(), "{p:?}");
    assert_eq!(encoded_len(p, v), Ok(n), "{p:?}");
    out
}

#[test]
fn round_trip_every_packet_in_every_version() {
    let mut types_seen = std::collections::HashSet::new();
    for v in VERSIONS {
        for p in samples(v) {
            let bytes = encode_ok(&p, v);
            match decode(&bytes, &limits(v)) {
                Ok(Decoded::Packet(back, n)) => {
                    assert_eq!(n, bytes.len(), "{v} {p:?}");
                    assert_eq!(back, p, "{v}: {bytes:02X?}");
                }
                other => panic!("{v} {p:?}: {other:?} from {bytes:02X?}"),
            }
            types_seen.insert((v, p.packet_type()));
        }
    }
    // Fourteen types before v5, fifteen in v5.
    assert_eq!(types_seen.len(), 14 + 14 + 15);
}

#[test]
fn every_property_appears_in_some_sample() {
    // The v5 round trip above then carries each property at least once.
    let mut ids = std::collections::BTreeSet::new();
    for p in samples(V5) {
        let blocks: Vec<&Properties<'_>> = match &p {
            Packet::Connect(c) => {
                let mut v = vec![&c.properties];
                v.extend(c.will.as_ref().map(|w| &w.properties));
                v
            }
            Packet::ConnAck(c) => vec![&c.properties],
            Packet::Publish(x) => vec![&x.properties],
            Packet::PubAck(x) | Packet::PubRec(x) | Packet::PubRel(x) | Packet::PubComp(x) => {
                vec![&x.properties]
            }
            Packet::Subscribe(x) => vec![&x.properties],
            Packet::SubAck(x) => vec![&x.properties],
            Packet::Unsubscribe(x) => vec![&x.properties],
            Packet::UnsubAck(x) => vec![&x.properties],
            Packet::Disconnect(x) => vec![&x.properties],
            Packet::Auth(x) => vec![&x.properties],
            Packet::PingReq | Packet::PingResp => vec![],
        };
        for pr in blocks {
            ids.extend((0u8..=0x2A).filter(|&id| has(pr, id)));
        }
    }
    assert_eq!(
        ids.len(),
        27,
        "missing some of the 27 properties: {ids:02X?}"
    );
}

/// Is property `id` set in `p`?
fn has(p: &Properties<'_>, id: u8) -> bool {
    match id {
        0x01 => p.payload_format_indicator.is_some(),
        0x02 => p.message_expiry_interval.is_some(),
        0x03 => p.content_type.is_some(),
        0x08 => p.response_topic.is_some(),
        0x09 => p.correlation_data.is_some(),
        0x0B => !p.subscription_identifiers.is_empty(),
        0x11 => p.session_expiry_interval.is_some(),
        0x12 => p.assigned_client_identifier.is_some(),
        0x13 => p.server_keep_alive.is_some(),
        0x15 => p.authentication_method.is_some(),
        0x16 => p.authentication_data.is_some(),
        0x17 => p.request_problem_information.is_some(),
        0x18 => p.will_delay_interval.is_some(),
        0x19 => p.request_response_information.is_some(),
        0x1A => p.response_information.is_some(),
        0x1C => p.server_reference.is_some(),
        0x1F => p.reason_string.is_some(),
        0x21 => p.receive_maximum.is_some(),
        0x22 => p.topic_alias_maximum.is_some(),
        0x23 => p.topic_alias.is_some(),
        0x24 => p.maximum_qos.is_some(),
        0x25 => p.retain_available.is_some(),
        0x26 => !p.user_properties.is_empty(),
        0x27 => p.maximum_packet_size.is_some(),
        0x28 => p.wildcard_subscription_available.is_some(),
        0x29 => p.subscription_identifier_available.is_some(),
        0x2A => p.shared_subscription_available.is_some(),
        _ => false,
    }
}

#[test]
fn every_prefix_needs_more() {
    for v in VERSIONS {
        for p in samples(v) {
            let bytes = encode_ok(&p, v);
            let total = bytes.len();
            // The fixed header is the type byte and the remaining length bytes.
            let header = 1 + bytes[1..].iter().take_while(|b| *b & 0x80 != 0).count() + 1;
            for cut in 0..total {
                let got = decode(&bytes[..cut], &limits(v));
                let want = if cut < header { None } else { Some(total) };
                match got {
                    Ok(Decoded::NeedMore(n)) => assert_eq!(n, want, "{v} {p:?} cut {cut}"),
                    other => panic!("{v} {p:?} cut at {cut}: {other:?}"),
                }
            }
            assert!(matches!(decode(&bytes, &limits(v)), Ok(Decoded::Packet(_, n)) if n == total));
        }
    }
}

#[test]
fn back_to_back_packets() {
    for v in VERSIONS {
        let all = samples(v);
        let mut stream = Vec::new();
        for p in &all {
            encode(p, v, &mut stream).unwrap();
        }
        let mut rest = &stream[..];
        for p in &all {
            match decode(rest, &limits(v)) {
                Ok(Decoded::Packet(back, n)) => {
                    assert_eq!(&back, p);
                    assert_eq!(Ok(n), encoded_len(p, v));
                    rest = &rest[n..];
                }
                other => panic!("{v}: {other:?}"),
            }
        }
        assert!(rest.is_empty());
    }
}

#[test]
fn large_remaining_length_round_trips() {
    // Two, three and four length bytes.
    for size in [200usize, 20_000, 2_100_000] {
        let payload = vec![0xA5; size];
        let p = Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "big",
            packet_id: 3,
            properties: Properties::default(),
            payload: &payload,
        });
        let bytes = encode_ok(&p, V311);
        let l = DecodeLimits::new(V311, 4 << 20);
        assert!(
            matches!(decode(&bytes[..5], &l), Ok(Decoded::NeedMore(Some(n))) if n == bytes.len())
        );
        match decode(&bytes, &l) {
            Ok(Decoded::Packet(back, n)) => {
                assert_eq!(n, bytes.len());
                assert_eq!(back, p);
            }
            other => panic!("{other:?}"),
        }
    }
}

/// A packet from its first byte and body, with the remaining length filled in.
fn pkt(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut n = body.len();
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

fn decode_err(bytes: &[u8], v: ProtocolVersion) -> DecodeError {
    match decode(bytes, &limits(v)) {
        Err(e) => e,
        other => panic!("{bytes:02X?} in {v}: expected an error, got {other:?}"),
    }
}

/// CONNECT body: protocol name, level, flags, keep alive 0, then `rest`.
fn connect_body(name: &[u8], level: u8, flags: u8, rest: &[u8]) -> Vec<u8> {
    let mut b = vec![0, name.len() as u8];
    b.extend_from_slice(name);
    b.extend_from_slice(&[level, flags, 0, 0]);
    b.extend_from_slice(rest);
    b
}

#[test]
fn error_truncated() {
    use PacketType as T;
    assert_eq!(
        decode_err(&pkt(0x40, &[0x00]), V311),
        DecodeError::Truncated(T::PubAck)
    );
    assert_eq!(
        decode_err(&pkt(0x20, &[0x00]), V311),
        DecodeError::Truncated(T::ConnAck)
    );
    // v5 CONNACK needs its property length.
    assert_eq!(
        decode_err(&pkt(0x20, &[0x00, 0x00]), V5),
        DecodeError::Truncated(T::ConnAck)
    );
    assert_eq!(
        decode_err(&pkt(0x30, &[0x00, 0x05, b'a']), V311),
        DecodeError::Truncated(T::Publish)
    );
    // QoS 1 without its packet identifier.
    assert_eq!(
        decode_err(&pkt(0x32, &[0x00, 0x01, b'a', 0x00]), V311),
        DecodeError::Truncated(T::Publish)
    );
    // CONNECT without its client identifier.
    let c = connect_body(b"MQTT", 4, 0x02, &[]);
    assert_eq!(
        decode_err(&pkt(0x10, &c), V311),
        DecodeError::Truncated(T::Connect)
    );
    // CONNECT with the user name flag but no user name.
    let c = connect_body(b"MQTT", 4, 0x82, &[0, 1, b'c']);
    assert_eq!(
        decode_err(&pkt(0x10, &c), V311),
        DecodeError::Truncated(T::Connect)
    );
    // A v5 CONNECT whose property length runs past the packet.
    let c = connect_body(b"MQTT", 5, 0x02, &[0x05, 0x11, 0, 0]);
    assert_eq!(
        decode_err(&pkt(0x10, &c), V5),
        DecodeError::Truncated(T::Connect)
    );
    // SUBSCRIBE filter without its options byte.
    assert_eq!(
        decode_err(&pkt(0x82, &[0, 1, 0, 1, b'a']), V311),
        DecodeError::Truncated(T::Subscribe)
    );
}

#[test]
fn error_trailing_bytes() {
    use PacketType as T;
    assert_eq!(
        decode_err(&pkt(0xC0, &[0x00]), V311),
        DecodeError::TrailingBytes(T::PingReq)
    );
    assert_eq!(
        decode_err(&pkt(0xD0, &[0x00]), V5),
        DecodeError::TrailingBytes(T::PingResp)
    );
    assert_eq!(
        decode_err(&pkt(0x40, &[0, 1, 0]), V311),
        DecodeError::TrailingBytes(T::PubAck)
    );
    assert_eq!(
        decode_err(&pkt(0xE0, &[0x00]), V311),
        DecodeError::TrailingBytes(T::Disconnect)
    );
    assert_eq!(
        decode_err(&pkt(0xB0, &[0, 1, 0]), V311),
        DecodeError::TrailingBytes(T::UnsubAck)
    );
    assert_eq!(
        decode_err(&pkt(0x20, &[0, 0, 0]), V311),
        DecodeError::TrailingBytes(T::ConnAck)
    );
    // v5 PUBACK: bytes after an empty property block.
    assert_eq!(
        decode_err(&pkt(0x40, &[0, 1, 0, 0, 9]), V5),
        DecodeError::TrailingBytes(T::PubAck)
    );
    // v5 DISCONNECT: bytes after the properties.
    assert_eq!(
        decode_err(&pkt(0xE0, &[0, 0, 1]), V5),
        DecodeError::TrailingBytes(T::Disconnect)
    );
    let c = connect_body(b"MQTT", 4, 0x02, &[0, 1, b'c', 0xFF]);
    assert_eq!(
        decode_err(&pkt(0x10, &c), V311),
        DecodeError::TrailingBytes(T::Connect)
    );
}

#[test]
fn error_invalid_utf8() {
    assert_eq!(
        decode_err(&pkt(0x30, &[0, 2, 0xC3, 0x28]), V311),
        DecodeError::InvalidUtf8
    );
    // U+0000 in a topic [MQTT-1.5.4-2].
    assert_eq!(
        decode_err(&pkt(0x30, &[0, 2, b'a', 0]), V311),
        DecodeError::InvalidUtf8
    );
    // In a client identifier, a filter and a user property.
    let c = connect_body(b"MQTT", 4, 0x02, &[0, 1, 0xFF]);
    assert_eq!(decode_err(&pkt(0x10, &c), V311), DecodeError::InvalidUtf8);
    assert_eq!(
        decode_err(&pkt(0xA2, &[0, 1, 0, 1, 0x80]), V311),
        DecodeError::InvalidUtf8
    );
    let ack = [0, 1, 0, 6, 0x26, 0, 1, 0xFE, 0, 0];
    assert_eq!(decode_err(&pkt(0x40, &ack), V5), DecodeError::InvalidUtf8);
}

#[test]
fn error_protocol_name_and_version() {
    let c = connect_body(b"MQTX", 4, 0x02, &[0, 0]);
    assert_eq!(
        decode_err(&pkt(0x10, &c), V311),
        DecodeError::InvalidProtocolName
    );
    let c = connect_body(b"", 4, 0x02, &[0, 0]);
    assert_eq!(
        decode_err(&pkt(0x10, &c), V311),
        DecodeError::InvalidProtocolName
    );
    // [MQTT-3.1.2-2]: a level the protocol does not have.
    for (name, level) in [
        (&b"MQTT"[..], 6u8),
        (b"MQTT", 3),
        (b"MQIsdp", 4),
        (b"MQTT", 0x85),
        (b"MQIsdp", 0x85),
    ] {
        let c = connect_body(name, level, 0x02, &[0, 0]);
        assert_eq!(
            decode_err(&pkt(0x10, &c), V311),
            DecodeError::UnsupportedProtocolVersion(level)
        );
    }
    assert_eq!(
        DecodeError::UnsupportedProtocolVersion(6).reason_code(),
        ReasonCode::UNSUPPORTED_PROTOCOL_VERSION
    );
}

/// mosquitto bridges (`try_private`) send level 0x83/0x84: accepted as 3.1/3.1.1
/// and recognised by `bridge_marker`; ordinary levels are not bridges.
#[test]
fn bridge_protocol_levels() {
    for (name, level, version) in [(&b"MQTT"[..], 0x84u8, V311), (b"MQIsdp", 0x83, V31)] {
        let raw = pkt(0x10, &connect_body(name, level, 0x02, &[0, 0]));
        match decode(&raw, &DecodeLimits::new(V311, 1 << 20)) {
            Ok(Decoded::Packet(Packet::Connect(c), used)) => {
                assert_eq!(c.version, version);
                assert_eq!(used, raw.len());
            }
            other => panic!("level {level:#x}: {other:?}"),
        }
        assert!(crate::protocol::decode::bridge_marker(&raw));
        let plain = pkt(0x10, &connect_body(name, level & 0x7F, 0x02, &[0, 0]));
        assert!(!crate::protocol::decode::bridge_marker(&plain));
    }
    assert!(!crate::protocol::decode::bridge_marker(&[0x30, 0]));
    assert!(!crate::protocol::decode::bridge_marker(&[0x10]));
}

#[test]
fn error_connect_flags() {
    let tail = [0, 1, b'c'];
    // Reserved bit [MQTT-3.1.2-3]; will QoS or retain without a will
    // [MQTT-3.1.2-11/13/15]; will QoS 3 [MQTT-3.1.2-14]; password without user name
    // before v5 [MQTT-3.1.2-22].
    for (level, flags) in [
        (4u8, 0x03u8),
        (3, 0x01),
        (5, 0x01),
        (4, 0x08),
        (4, 0x10),
        (5, 0x20),
        (4, 0x1C),
        (4, 0x40),
        (3, 0x40),
    ] {
        let c = connect_body(
            if level == 3 { b"MQIsdp" } else { b"MQTT" },
            level,
            flags,
            &tail,
        );
        assert_eq!(
            decode_err(&pkt(0x10, &c), V311),
            DecodeError::InvalidConnectFlags(flags),
            "level {level} flags {flags:02X}"
        );
    }
    // v5 allows a password alone.
    let c = connect_body(b"MQTT", 5, 0x40, &[0, 0, 1, b'c', 0, 2, b'p', b'w']);
    match decode(&pkt(0x10, &c), &limits(V311)) {
        Ok(Decoded::Packet(Packet::Connect(c), _)) => {
            assert_eq!((c.username, c.password), (None, Some(&b"pw"[..])));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn error_zero_packet_id() {
    use PacketType as T;
    assert_eq!(
        decode_err(&pkt(0x32, &[0, 1, b'a', 0, 0]), V311),
        DecodeError::ZeroPacketId(T::Publish)
    );
    assert_eq!(
        decode_err(&pkt(0x40, &[0, 0]), V5),
        DecodeError::ZeroPacketId(T::PubAck)
    );
    assert_eq!(
        decode_err(&pkt(0x62, &[0, 0]), V311),
        DecodeError::ZeroPacketId(T::PubRel)
    );
    assert_eq!(
        decode_err(&pkt(0x82, &[0, 0, 0, 1, b'a', 0]), V311),
        DecodeError::ZeroPacketId(T::Subscribe)
    );
    assert_eq!(
        decode_err(&pkt(0xA2, &[0, 0, 0, 1, b'a']), V311),
        DecodeError::ZeroPacketId(T::Unsubscribe)
    );
    assert_eq!(
        decode_err(&pkt(0x90, &[0, 0, 0]), V311),
        DecodeError::ZeroPacketId(T::SubAck)
    );
    assert_eq!(
        decode_err(&pkt(0xB0, &[0, 0]), V311),
        DecodeError::ZeroPacketId(T::UnsubAck)
    );
}

#[test]
fn error_no_topic_filters() {
    use PacketType as T;
    // [MQTT-3.8.3-3] [MQTT-3.10.3-2]
    assert_eq!(
        decode_err(&pkt(0x82, &[0, 1]), V311),
        DecodeError::NoTopicFilters(T::Subscribe)
    );
    assert_eq!(
        decode_err(&pkt(0x82, &[0, 1, 0]), V5),
        DecodeError::NoTopicFilters(T::Subscribe)
    );
    assert_eq!(
        decode_err(&pkt(0xA2, &[0, 1]), V31),
        DecodeError::NoTopicFilters(T::Unsubscribe)
    );
    assert_eq!(
        decode_err(&pkt(0xA2, &[0, 1, 0]), V5),
        DecodeError::NoTopicFilters(T::Unsubscribe)
    );
}

#[test]
fn error_subscription_options() {
    let sub = |v: ProtocolVersion, o: u8| {
        let body: &[u8] = if v.is_v5() {
            &[0, 1, 0, 0, 1, b'a', o]
        } else {
            &[0, 1, 0, 1, b'a', o]
        };
        decode(&pkt(0x82, body), &limits(v)).map(|_| ())
    };
    // Before v5 only the QoS bits [MQTT-3.8.3-4] (3.1.1); QoS 3 never.
    for o in [0x03, 0x04, 0x08, 0x10, 0x40, 0x80] {
        assert_eq!(
            sub(V311, o).unwrap_err(),
            DecodeError::InvalidSubscriptionOptions(o)
        );
    }
    // v5: reserved bits 6-7, QoS 3, Retain Handling 3 [MQTT-3.8.3-5].
    for o in [0x03, 0x30, 0x40, 0x80] {
        assert_eq!(
            sub(V5, o).unwrap_err(),
            DecodeError::InvalidSubscriptionOptions(o)
        );
    }
    assert!(sub(V5, 0x2E).is_ok());
}

#[test]
fn error_topic_name() {
    // Wildcards [MQTT-3.3.2-2].
    assert_eq!(
        decode_err(&pkt(0x30, &[0, 3, b'a', b'/', b'+']), V311),
        DecodeError::InvalidTopicName
    );
    assert_eq!(
        decode_err(&pkt(0x30, &[0, 1, b'#']), V5),
        DecodeError::InvalidTopicName
    );
    // Empty topic: never before v5, and in v5 only with a Topic Alias.
    assert_eq!(
        decode_err(&pkt(0x30, &[0, 0]), V311),
        DecodeError::InvalidTopicName
    );
    assert_eq!(
        decode_err(&pkt(0x30, &[0, 0, 0]), V5),
        DecodeError::InvalidTopicName
    );
    assert!(decode(&pkt(0x30, &[0, 0, 3, 0x23, 0, 1]), &limits(V5)).is_ok());
    // A will topic with a wildcard.
    let c = connect_body(b"MQTT", 4, 0x06, &[0, 1, b'c', 0, 1, b'+', 0, 0]);
    assert_eq!(
        decode_err(&pkt(0x10, &c), V311),
        DecodeError::InvalidTopicName
    );
}

#[test]
fn error_topic_filter() {
    assert_eq!(
        decode_err(&pkt(0x82, &[0, 1, 0, 3, b'a', b'#', b'b', 0]), V311),
        DecodeError::InvalidTopicFilter
    );
    assert_eq!(
        decode_err(&pkt(0x82, &[0, 1, 0, 0, 0]), V311),
        DecodeError::InvalidTopicFilter
    );
    let share = b"$share/x";
    let mut body = vec![0, 1, 0, share.len() as u8];
    body.extend_from_slice(share);
    assert_eq!(
        decode_err(&pkt(0xA2, &body), V311),
        DecodeError::InvalidTopicFilter
    );
    assert_eq!(
        decode_err(&pkt(0xA2, &[0, 1, 0, 0, 2, b'a', b'+']), V5),
        DecodeError::InvalidTopicFilter
    );
}

#[test]
fn error_properties_in_packets() {
    use PacketType as T;
    // Unknown identifier 0x00 in a PUBLISH.
    assert_eq!(
        decode_err(&pkt(0x30, &[0, 1, b'a', 2, 0x00, 0]), V5),
        DecodeError::UnknownProperty(0)
    );
    // Topic Alias in a PUBACK.
    assert_eq!(
        decode_err(&pkt(0x40, &[0, 1, 0, 3, 0x23, 0, 1]), V5),
        DecodeError::PropertyNotAllowed(0x23, T::PubAck)
    );
    // Subscription Identifier in UNSUBSCRIBE.
    assert_eq!(
        decode_err(&pkt(0xA2, &[0, 1, 2, 0x0B, 1, 0, 1, b'a']), V5),
        DecodeError::PropertyNotAllowed(0x0B, T::Unsubscribe)
    );
    // Will Delay Interval among CONNECT's own properties.
    let c = connect_body(b"MQTT", 5, 0x02, &[5, 0x18, 0, 0, 0, 1, 0, 1, b'c']);
    assert_eq!(
        decode_err(&pkt(0x10, &c), V5),
        DecodeError::PropertyNotAllowed(0x18, T::Connect)
    );
    // Two Subscription Identifiers in SUBSCRIBE [MQTT-2.2.2-2].
    assert_eq!(
        decode_err(&pkt(0x82, &[0, 1, 4, 0x0B, 1, 0x0B, 2, 0, 1, b'a', 0]), V5),
        DecodeError::DuplicateProperty(0x0B)
    );
    // Two Reason Strings in DISCONNECT.
    assert_eq!(
        decode_err(&pkt(0xE0, &[0, 6, 0x1F, 0, 0, 0x1F, 0, 0]), V5),
        DecodeError::DuplicateProperty(0x1F)
    );
    // Receive Maximum 0 in CONNACK.
    assert_eq!(
        decode_err(&pkt(0x20, &[0, 0, 3, 0x21, 0, 0]), V5),
        DecodeError::InvalidPropertyValue(0x21)
    );
    // Maximum QoS 2 in CONNACK.
    assert_eq!(
        decode_err(&pkt(0x20, &[0, 0, 2, 0x24, 2]), V5),
        DecodeError::InvalidPropertyValue(0x24)
    );
    // Properties are not read before v5: the same bytes are trailing there.
    assert_eq!(
        decode_err(&pkt(0x40, &[0, 1, 0, 3, 0x23, 0, 1]), V311),
        DecodeError::TrailingBytes(T::PubAck)
    );
}

#[test]
fn error_reason_codes() {
    use PacketType as T;
    let cases: &[(u8, &[u8], ProtocolVersion, PacketType, u8)] = &[
        (0x20, &[0, 0x06], V311, T::ConnAck, 0x06),
        (0x20, &[0, 0x84], V31, T::ConnAck, 0x84),
        (0x20, &[0, 0x01, 0], V5, T::ConnAck, 0x01),
        (0x40, &[0, 1, 0x92], V5, T::PubAck, 0x92),
        (0x50, &[0, 1, 0x04], V5, T::PubRec, 0x04),
        (0x62, &[0, 1, 0x10], V5, T::PubRel, 0x10),
        (0x70, &[0, 1, 0x80], V5, T::PubComp, 0x80),
        (0x90, &[0, 1, 0x03], V311, T::SubAck, 0x03),
        (0x90, &[0, 1, 0x87], V311, T::SubAck, 0x87),
        (0x90, &[0, 1, 0, 0x04], V5, T::SubAck, 0x04),
        (0xB0, &[0, 1, 0, 0x10], V5, T::UnsubAck, 0x10),
        (0xE0, &[0x01], V5, T::Disconnect, 0x01),
        (0xE0, &[0x84], V5, T::Disconnect, 0x84),
        (0xF0, &[0x01], V5, T::Auth, 0x01),
        (0xF0, &[0x80, 0], V5, T::Auth, 0x80),
    ];
    for (first, body, v, t, code) in cases {
        assert_eq!(
            decode_err(&pkt(*first, body), *v),
            DecodeError::InvalidReasonCode(*t, *code),
            "{t:?} {code:02X} in {v}"
        );
    }
}

#[test]
fn errors_map_to_reason_codes() {
    // Every error can be reported; spot-check the ones with specific codes.
    assert_eq!(
        DecodeError::InvalidTopicName.reason_code(),
        ReasonCode::TOPIC_NAME_INVALID
    );
    assert_eq!(
        DecodeError::InvalidQoS.reason_code(),
        ReasonCode::MALFORMED_PACKET
    );
    assert_eq!(
        DecodeError::PacketTooLarge { size: 2, max: 1 }.reason_code(),
        ReasonCode::PACKET_TOO_LARGE
    );
    // Display never panics and says something.
    assert!(!DecodeError::DuplicateProperty(0x1F).to_string().is_empty());
}

/// Whatever decodes must survive encode -> decode unchanged (CONNACK aside: the
/// encoder clears Session Present where the spec requires the sender to).
fn check_stable(bytes: &[u8], v: ProtocolVersion) {
    let Ok(Decoded::Packet(p, n)) = decode(bytes, &limits(v)) else {
        return;
    };
    assert!(n <= bytes.len());
    let out_version = match &p {
        Packet::Connect(c) => c.version,
        _ => v,
    };
    let again = encode_ok(&p, out_version);
    match decode(&again, &limits(out_version)) {
        Ok(Decoded::Packet(back, m)) => {
            assert_eq!(m, again.len());
            match (&back, &p) {
                (Packet::ConnAck(a), Packet::ConnAck(b)) => {
                    assert_eq!((a.reason, &a.properties), (b.reason, &b.properties));
                }
                _ => assert_eq!(back, p, "from {bytes:02X?}"),
            }
        }
        other => panic!("{p:?} re-encoded to {again:02X?}: {other:?}"),
    }
}

#[test]
fn mutated_packets_never_panic_and_round_trip() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for v in VERSIONS {
        let seeds: Vec<Vec<u8>> = samples(v).iter().map(|p| encode_ok(p, v)).collect();
        for _ in 0..4000 {
            let mut b = seeds[rng.below(seeds.len())].clone();
            for _ in 0..=rng.below(3) {
                if b.is_empty() {
                    break;
                }
                let i = rng.below(b.len());
                match rng.below(4) {
                    0 => b[i] = rng.next() as u8,
                    1 => b[i] ^= 1 << rng.below(8),
                    2 => b.truncate(i),
                    _ => b.insert(i, rng.next() as u8),
                }
            }
            // Keep the declared length in step with the body half of the time, so
            // the body parsers (not just the length check) see the mutations.
            if rng.below(2) == 0 && b.len() >= 2 && b.len() < 129 {
                b[1] = (b.len() - 2) as u8;
            }
            for lv in VERSIONS {
                check_stable(&b, lv);
            }
        }
        for _ in 0..2000 {
            let len = rng.below(64);
            let b: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            check_stable(&b, v);
        }
    }
}
