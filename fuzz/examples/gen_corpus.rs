//! Writes the seed corpora of the codec targets from real packets, encoded by
//! midge's own encoder: every packet type in every version it exists in, with
//! and without MQTT 5 properties, plus a few malformed classics and real config
//! files. Run from the repository root:
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example gen_corpus
//! ```
//!
//! It rewrites `fuzz/corpus/{decode_split,roundtrip,config}/` (files it did not
//! write are left alone). The `topic` and `broker` targets take structured
//! input; their seeds are minimised fuzzer finds (see scripts/fuzz.sh).

use std::fs;
use std::path::{Path, PathBuf};

use midge::auth::PasswordHash;
use midge::protocol::Properties;
use midge::protocol::{
    encode, Auth, ConnAck, Connect, Disconnect, Packet, ProtocolVersion, PubResp, Publish, QoS,
    ReasonCode, RetainHandling, SubAck, Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe,
    Will,
};

use ProtocolVersion::{V31, V311, V5};

const VERSIONS: [ProtocolVersion; 3] = [V31, V311, V5];

fn tag(v: ProtocolVersion) -> &'static str {
    match v {
        V31 => "v31",
        V311 => "v311",
        V5 => "v5",
    }
}

/// The first input byte the codec targets read as this version (`b % 3`).
fn version_byte(v: ProtocolVersion) -> u8 {
    match v {
        V31 => 0,
        V311 => 1,
        V5 => 2,
    }
}

fn user() -> Vec<(&'static str, &'static str)> {
    vec![("site", "gw-1"), ("k", "")]
}

fn connect_props() -> Properties<'static> {
    Properties {
        session_expiry_interval: Some(3600),
        receive_maximum: Some(10),
        maximum_packet_size: Some(65_536),
        topic_alias_maximum: Some(8),
        request_response_information: Some(1),
        request_problem_information: Some(0),
        authentication_method: Some("SCRAM-SHA-256"),
        authentication_data: Some(b"n,,n=user,r=abc"),
        user_properties: user(),
        ..Properties::default()
    }
}

fn will_props() -> Properties<'static> {
    Properties {
        will_delay_interval: Some(30),
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(600),
        content_type: Some("text/plain"),
        response_topic: Some("status/reply"),
        correlation_data: Some(b"\x01\x02"),
        user_properties: user(),
        ..Properties::default()
    }
}

fn publish_props() -> Properties<'static> {
    Properties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(60),
        topic_alias: Some(3),
        response_topic: Some("reply/to"),
        correlation_data: Some(b"id-42"),
        content_type: Some("application/json"),
        subscription_identifiers: vec![7, 300_000],
        user_properties: user(),
        ..Properties::default()
    }
}

fn reason_props() -> Properties<'static> {
    Properties {
        reason_string: Some("because"),
        user_properties: user(),
        ..Properties::default()
    }
}

fn opts(qos: QoS, no_local: bool, rap: bool, rh: RetainHandling) -> SubscriptionOptions {
    SubscriptionOptions {
        qos,
        no_local,
        retain_as_published: rap,
        retain_handling: rh,
    }
}

/// Named packets that exist in version `v`.
fn packets(v: ProtocolVersion) -> Vec<(&'static str, Packet<'static>)> {
    let v5 = v.is_v5();
    let p = |props: Properties<'static>| if v5 { props } else { Properties::default() };
    let client_id = if v == V31 { "sensor-17" } else { "" };
    let mut list = vec![
        (
            "connect-min",
            Packet::Connect(Box::new(Connect {
                version: v,
                clean_start: true,
                keep_alive: 60,
                properties: Properties::default(),
                client_id,
                will: None,
                username: None,
                password: None,
            })),
        ),
        (
            "connect-will-auth",
            Packet::Connect(Box::new(Connect {
                version: v,
                clean_start: false,
                keep_alive: 30,
                properties: p(connect_props()),
                client_id: "gateway-01",
                will: Some(Will {
                    topic: "devices/gateway-01/status",
                    payload: b"offline",
                    qos: QoS::AtLeastOnce,
                    retain: true,
                    properties: p(will_props()),
                }),
                username: Some("user"),
                password: Some(b"s3cret"),
            })),
        ),
        (
            "connack-ok",
            Packet::ConnAck(ConnAck {
                session_present: true,
                reason: ReasonCode::SUCCESS,
                properties: p(Properties {
                    receive_maximum: Some(20),
                    maximum_packet_size: Some(1 << 20),
                    assigned_client_identifier: Some("auto-0001"),
                    server_keep_alive: Some(60),
                    retain_available: Some(1),
                    shared_subscription_available: Some(0),
                    topic_alias_maximum: Some(0),
                    maximum_qos: Some(1),
                    ..Properties::default()
                }),
            }),
        ),
        (
            "connack-refused",
            Packet::ConnAck(ConnAck {
                session_present: false,
                reason: ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
                properties: p(reason_props()),
            }),
        ),
        ("pingreq", Packet::PingReq),
        ("pingresp", Packet::PingResp),
    ];
    for (name, qos, retain, dup) in [
        ("publish-qos0", QoS::AtMostOnce, false, false),
        ("publish-qos1-retain", QoS::AtLeastOnce, true, false),
        ("publish-qos2-dup", QoS::ExactlyOnce, false, true),
    ] {
        list.push((
            name,
            Packet::Publish(Publish {
                dup,
                qos,
                retain,
                topic: "sensors/kitchen/temperature",
                packet_id: if qos == QoS::AtMostOnce { 0 } else { 258 },
                properties: p(publish_props()),
                payload: b"{\"t\":21.5}",
            }),
        ));
    }
    if v5 {
        list.push((
            "publish-alias-only",
            Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: "",
                packet_id: 9,
                properties: Properties {
                    topic_alias: Some(3),
                    ..Properties::default()
                },
                payload: b"22.0",
            }),
        ));
    }
    let ack = |reason| PubResp {
        packet_id: 258,
        reason,
        properties: p(reason_props()),
    };
    list.push(("puback", Packet::PubAck(PubResp::success(258))));
    list.push(("pubrec", Packet::PubRec(PubResp::success(258))));
    list.push(("pubrel", Packet::PubRel(PubResp::success(258))));
    list.push(("pubcomp", Packet::PubComp(PubResp::success(258))));
    if v5 {
        list.push(("puback-reason", Packet::PubAck(ack(ReasonCode(0x10)))));
        list.push(("pubrec-reason", Packet::PubRec(ack(ReasonCode(0x80)))));
        list.push(("pubrel-reason", Packet::PubRel(ack(ReasonCode(0x92)))));
        list.push(("pubcomp-reason", Packet::PubComp(ack(ReasonCode(0x92)))));
    }
    list.push((
        "subscribe",
        Packet::Subscribe(Subscribe {
            packet_id: 10,
            properties: p(Properties {
                subscription_identifiers: vec![5],
                user_properties: user(),
                ..Properties::default()
            }),
            filters: vec![
                (
                    "sensors/+/temperature",
                    opts(QoS::AtLeastOnce, v5, false, RetainHandling::SendAtSubscribe),
                ),
                (
                    "alarms/#",
                    opts(QoS::ExactlyOnce, false, v5, RetainHandling::SendAtSubscribe),
                ),
                (
                    "$SYS/broker/#",
                    opts(
                        QoS::AtMostOnce,
                        false,
                        false,
                        if v5 {
                            RetainHandling::DoNotSend
                        } else {
                            RetainHandling::SendAtSubscribe
                        },
                    ),
                ),
            ],
        }),
    ));
    if v5 {
        list.push((
            "subscribe-shared",
            Packet::Subscribe(Subscribe {
                packet_id: 11,
                properties: Properties::default(),
                filters: vec![(
                    "$share/workers/jobs/+",
                    opts(QoS::AtLeastOnce, false, false, RetainHandling::SendIfNew),
                )],
            }),
        ));
    }
    list.push((
        "suback",
        Packet::SubAck(SubAck {
            packet_id: 10,
            properties: p(reason_props()),
            reasons: vec![
                ReasonCode(0x01),
                ReasonCode(0x02),
                ReasonCode(0x00),
                ReasonCode(0x80),
            ],
        }),
    ));
    list.push((
        "unsubscribe",
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 12,
            properties: p(Properties {
                user_properties: user(),
                ..Properties::default()
            }),
            filters: vec!["sensors/+/temperature", "alarms/#"],
        }),
    ));
    list.push((
        "unsuback",
        Packet::UnsubAck(UnsubAck {
            packet_id: 12,
            properties: p(reason_props()),
            reasons: if v5 {
                vec![ReasonCode(0x00), ReasonCode(0x11)]
            } else {
                Vec::new()
            },
        }),
    ));
    list.push((
        "disconnect",
        Packet::Disconnect(Disconnect::with_reason(ReasonCode::SUCCESS)),
    ));
    if v5 {
        list.push((
            "disconnect-will-expiry",
            Packet::Disconnect(Disconnect {
                reason: ReasonCode(0x04),
                properties: Properties {
                    session_expiry_interval: Some(120),
                    reason_string: Some("bye"),
                    user_properties: user(),
                    ..Properties::default()
                },
            }),
        ));
        list.push((
            "auth",
            Packet::Auth(Auth {
                reason: ReasonCode(0x18),
                properties: Properties {
                    authentication_method: Some("SCRAM-SHA-256"),
                    authentication_data: Some(b"c=biws,r=abc"),
                    reason_string: Some("continue"),
                    ..Properties::default()
                },
            }),
        ));
    }
    list
}

/// Classic hostile byte strings (the malformed-packet suite's favourites).
fn hostile() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "remaining-length-5-bytes",
            vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
        ),
        (
            "publish-qos3",
            vec![0x36, 0x05, 0x00, 0x01, b'a', 0x00, 0x01],
        ),
        (
            "publish-wildcard-topic",
            vec![0x30, 0x05, 0x00, 0x03, b'a', b'/', b'#'],
        ),
        ("pubrel-bad-flags", vec![0x60, 0x02, 0x00, 0x01]),
        ("subscribe-no-filters", vec![0x82, 0x02, 0x00, 0x01]),
        ("zero-packet-id", vec![0x40, 0x02, 0x00, 0x00]),
        ("type-0", vec![0x00, 0x00]),
        ("type-15-v3", vec![0xF0, 0x00]),
        (
            "connect-will-qos-without-will",
            vec![
                0x10, 0x0E, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x08, 0x00, 0x3C, 0x00, 0x02,
                b'i', b'd',
            ],
        ),
        ("topic-nul", vec![0x30, 0x05, 0x00, 0x03, b'a', 0x00, b'b']),
        ("topic-bad-utf8", vec![0x30, 0x04, 0x00, 0x02, 0xC3, 0x28]),
    ]
}

const CONFIGS: &[(&str, &str)] = &[
    (
        "gateway.conf",
        "# A typical gateway\nlistener 1883\nlistener 8883 127.0.0.1\nmax_connections 500\n\
         max_inflight_messages 20\nmax_queued_messages 1000\nmax_queued_bytes 1048576\n\
         message_size_limit 262144\nmax_packet_size 300000\nmax_keepalive 300\n\
         persistent_client_expiration 14d\nretry_interval 20\nlog_dest stdout\n\
         log_type error\nlog_type warning\nlog_type information\npid_file /run/midge.pid\n",
    ),
    (
        "legacy-port.conf",
        "port 1884\nbind_address 0.0.0.0\nallow_zero_length_clientid false\n\
         queue_qos0_messages true\nretain_available false\n",
    ),
    ("empty.conf", ""),
    ("comments.conf", "   # only a comment\n\n\t\n# another\r\n"),
    (
        "bad-value.conf",
        "listener 1883\nmax_queued_messages lots\n",
    ),
    ("unknown.conf", "listener 1883\nfrobnicate yes\n"),
    (
        "units.conf",
        "persistent_client_expiration 1h\nmax_connections -1\nlog_type all\nlog_type none\n",
    ),
];

const ACL: &str = "\
# anonymous clients
topic read public/#
user alice
topic alice/#
topic deny alice/secret
topic read $SYS/#
user bob
topic write bob/out
pattern readwrite devices/%c/#
pattern read users/%u/inbox
";

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::write(dir.join(name), bytes).unwrap_or_else(|e| panic!("write {name}: {e}"));
}

fn main() {
    let root = PathBuf::from("fuzz/corpus");
    let dirs = ["decode_split", "roundtrip", "config"].map(|t| root.join(t));
    for d in &dirs {
        fs::create_dir_all(d).expect("create corpus dir");
    }
    let [split, roundtrip, config] = &dirs;
    let mut files = 0;
    for v in VERSIONS {
        let mut stream = Vec::new();
        // 3.1 differs from 3.1.1 only in CONNECT and CONNACK: seed just those.
        let seeded =
            |p: &Packet<'_>| v != V31 || matches!(p, Packet::Connect(_) | Packet::ConnAck(_));
        for (name, packet) in packets(v) {
            let mut wire = vec![version_byte(v)];
            encode(&packet, v, &mut wire).unwrap_or_else(|e| panic!("{name} {v}: {e}"));
            stream.extend_from_slice(&wire[1..]);
            if seeded(&packet) {
                write(roundtrip, &format!("{}-{name}", tag(v)), &wire);
                files += 1;
            }
        }
        for (name, bytes) in hostile().into_iter().filter(|_| v == V311) {
            let mut input = vec![version_byte(v)];
            input.extend_from_slice(&bytes);
            write(roundtrip, &format!("{}-bad-{name}", tag(v)), &input);
            files += 1;
        }
        // A session's worth of packets, fed whole-vs-split with two seeds: byte
        // at a time, and a chunk pattern. Bit 7 of the first byte asks
        // for the 1 MiB limit (see decode_split); 0x80 | i keeps `% 3` right.
        let limit_byte = [0x81, 0x82, 0x80][usize::from(version_byte(v))];
        for (seed_name, seed) in [("bytewise", [0, 0]), ("chunks", [0x37, 0x13])] {
            let mut input = vec![limit_byte, seed[0], seed[1]];
            input.extend_from_slice(&stream);
            write(split, &format!("{}-session-{seed_name}", tag(v)), &input);
            files += 1;
        }
        // The same stream under a small limit and truncated mid-packet.
        // 0x40..=0x42: limit 66 bytes, and one of them is the right `% 3`.
        let small = (0x40..=0x42)
            .find(|b| b % 3 == version_byte(v))
            .unwrap_or(0x40);
        let mut input = vec![small, 1, 2];
        input.extend_from_slice(&stream[..stream.len() / 2]);
        write(
            split,
            &format!("{}-session-small-limit-truncated", tag(v)),
            &input,
        );
        files += 1;
        for (name, bytes) in hostile().into_iter().take(4).filter(|_| v == V311) {
            let mut input = vec![limit_byte, 3, 0];
            input.extend_from_slice(&stream[..stream.len().min(40)]);
            input.extend_from_slice(&bytes);
            write(split, &format!("{}-after-session-{name}", tag(v)), &input);
            files += 1;
        }
    }
    for (name, text) in CONFIGS {
        write(config, name, text.as_bytes());
        files += 1;
    }
    // The config target also feeds its text to the ACL and password file parsers.
    write(config, "acl-file", ACL.as_bytes());
    let hash = PasswordHash::new(b"s3cret", 1000).expect("hash");
    let passwd = format!("alice:{hash}\nbob:{hash}\n");
    write(config, "password-file", passwd.as_bytes());
    files += 2;
    println!("wrote {files} files under {}", root.display());
}
