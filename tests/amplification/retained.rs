//! Retained messages (issue 10 items 3 and 4): what the store keeps per byte
//! published, deep will topics, and one SUBSCRIBE repeating `#` over a full store.

use std::io::Write;

use crate::common::*;
use crate::{Attack, Pattern};
use midge::protocol::{
    encode, Packet, Properties, ProtocolVersion, Publish, QoS, Subscribe, SubscriptionOptions,
};

/// The patterns of this module.
pub fn patterns() -> Vec<Pattern> {
    vec![
        Pattern {
            name: "retained: 1,000 topics of 200 levels",
            config: "",
            attack: deep_retained_topics,
            // The store keeps what was published (topic and payload, ~410 B) plus
            // ~128 B of bookkeeping per message. Before: +50 MB for 407 kB.
            max_ratio: 2.0,
            allowance_kb: 1024,
        },
        Pattern {
            name: "retained: 5 MB of 1-byte user properties",
            config: "",
            attack: retained_user_properties,
            // Packed: 6 bytes kept per 7-byte property on the wire; plus the
            // decoder's transient list for one packet. Before: +76 MB for 5.3 MB.
            max_ratio: 1.5,
            allowance_kb: 2048,
        },
        Pattern {
            name: "retained: 20 CONNECTs with a 32,001-level retained will, dropped",
            config: "",
            attack: deep_wills,
            // Refused at CONNECT (max_topic_levels): nothing is kept. Before: +161 MB.
            max_ratio: 0.0,
            allowance_kb: 1024,
        },
        Pattern {
            name: "retained: SUBSCRIBE of 20,000 x # over 1,000 retained",
            // The decoder's max_filters_per_packet (1000) would refuse the
            // packet outright: lifted, to measure the SUBSCRIBE's handling.
            config: "max_filters_per_packet 0",
            attack: repeated_hash_subscribe,
            // One subscription and one paced replay, the subscriber not reading:
            // at most a 64 KiB replay backlog. What remains is the decoded
            // SUBSCRIBE (24 bytes per 4-byte filter while it is handled) and the
            // store itself. Before: +470 MB.
            max_ratio: 8.0,
            allowance_kb: 1024,
        },
    ]
}

/// Encode `packet` for `version` onto `buf`.
fn put(buf: &mut Vec<u8>, packet: &Packet<'_>, version: ProtocolVersion) {
    encode(packet, version, buf).expect("encode");
}

/// Write `bytes` on a connected client's socket and wait for a round trip, so the
/// broker has processed all of it. Returns the bytes written.
fn send_all(client: Client, bytes: &[u8], version: ProtocolVersion) -> (Client, u64) {
    let mut s = client.into_stream();
    s.write_all(bytes).expect("write");
    let mut c = Client::from_stream(s, version);
    c.ping();
    (c, bytes.len() as u64)
}

fn deep_retained_topics(port: u16) -> Attack {
    let c = Client::connect(port, "deep-retainer");
    let mut buf = Vec::new();
    for i in 0..1000 {
        // 200 levels, as deep as the default max_topic_levels allows.
        let topic = format!("{i:04}/{}x", "a/".repeat(198));
        put(
            &mut buf,
            &Packet::Publish(publish(&topic, b"v", QoS::AtMostOnce, true, 0)),
            ProtocolVersion::V311,
        );
    }
    let (c, bytes_sent) = send_all(c, &buf, ProtocolVersion::V311);
    Attack {
        bytes_sent,
        keep: vec![Box::new(c)],
    }
}

fn retained_user_properties(port: u16) -> Attack {
    let c = Client::connect_v(port, ProtocolVersion::V5, "prop-retainer");
    let mut buf = Vec::new();
    // Many packets of 250 properties rather than a few huge ones: within the
    // decoder's max_user_properties (256); the store is what is measured.
    let props = vec![("k", "v"); 250];
    for i in 0..3_000 {
        let topic = format!("props/{i}");
        let p = Publish {
            properties: Properties {
                user_properties: props.clone(),
                ..Properties::default()
            },
            ..publish(&topic, b"v", QoS::AtMostOnce, true, 0)
        };
        put(&mut buf, &Packet::Publish(p), ProtocolVersion::V5);
    }
    let (c, bytes_sent) = send_all(c, &buf, ProtocolVersion::V5);
    Attack {
        bytes_sent,
        keep: vec![Box::new(c)],
    }
}

fn deep_wills(port: u16) -> Attack {
    let mut bytes_sent = 0;
    for i in 0..20 {
        let version = if i % 2 == 0 {
            ProtocolVersion::V5
        } else {
            ProtocolVersion::V311
        };
        // A distinct first level each, so nothing is shared between them.
        let topic = format!("{i}/{}w", "w/".repeat(32_000));
        let mut o = ConnectOptions::new(version, &format!("deep-will-{i}"));
        o.will = Some((topic.clone(), b"gone".to_vec(), QoS::AtMostOnce, true));
        let mut c = Client::open(port, version);
        c.send_connect(&o);
        bytes_sent += topic.len() as u64 + 30;
        // Now refused (v5: CONNACK 0x90; 3.1.1: closed); once accepted, and the
        // will retained when the socket closed without DISCONNECT.
        // tests/retained.rs checks the answer itself.
        let _ = c.try_recv(TIMEOUT);
        c.shutdown_write();
        // The broker closes its side once it has handled the end (and the will).
        while let Some(Ok(_)) = c.try_recv(TIMEOUT) {}
    }
    Attack {
        bytes_sent,
        keep: Vec::new(),
    }
}

fn repeated_hash_subscribe(port: u16) -> Attack {
    let c = Client::connect(port, "retainer");
    let mut buf = Vec::new();
    for i in 0..1000 {
        let topic = format!("r/{i}");
        put(
            &mut buf,
            &Packet::Publish(publish(&topic, &[7u8; 100], QoS::AtMostOnce, true, 0)),
            ProtocolVersion::V311,
        );
    }
    let (publ, mut bytes_sent) = send_all(c, &buf, ProtocolVersion::V311);
    let sub = Client::connect(port, "hash-subscriber");
    let mut packet = Vec::new();
    let s = Subscribe {
        packet_id: 1,
        properties: Properties::default(),
        filters: vec![("#", SubscriptionOptions::default()); 20_000],
    };
    put(&mut packet, &Packet::Subscribe(s), ProtocolVersion::V311);
    let mut stream = sub.into_stream();
    stream.write_all(&packet).expect("subscribe");
    bytes_sent += packet.len() as u64;
    let mut sub = Client::from_stream(stream, ProtocolVersion::V311);
    match sub.recv() {
        Packet::SubAck(a) => assert_eq!(a.reasons.len(), 20_000),
        other => panic!("expected SUBACK, got {other:?}"),
    }
    // From here on the subscriber reads nothing: what it is owed waits in the broker.
    Attack {
        bytes_sent,
        keep: vec![Box::new(publ), Box::new(sub)],
    }
}
