//! State a client makes the broker keep on its behalf for as long as its
//! connections or sessions live (issue 10 items 6 and 9): outbound topic alias
//! tables and session-expiry timers.

use std::io::{Read, Write};
use std::net::TcpStream;

use crate::common::*;
use crate::{Attack, Pattern};
use midge::protocol::{encode, Connect, Packet, Properties, ProtocolVersion, QoS};

/// The patterns of this module.
pub fn patterns() -> Vec<Pattern> {
    vec![
        Pattern {
            name: "aliases: 10 subs allow 65,535, 5,000 1 kB topics",
            config: "",
            attack: alias_tables,
            // midge keeps at most 32 aliases / 8 KiB of topics per connection;
            // the rest is delivery buffers. Before: +54 MB for 5 MB sent.
            max_ratio: 0.5,
            allowance_kb: 2048,
        },
        Pattern {
            name: "timers: 50,000 reconnects of one persistent id",
            // A short connect_timeout: every connection's CONNECT-timeout entry
            // (a legitimate, short-lived one) leaves the wheel within a second.
            config: "persistent_client_expiration 1y\nconnect_timeout 1",
            attack: reconnect_loop,
            // One pending expiry per session, at most 64 wheel timers; what
            // remains is connection churn (a second of CONNECT timeouts,
            // allocator slack), flat in the number of cycles. Before: one wheel
            // entry per disconnect, kept for a year (+2.3 MB here).
            max_ratio: 0.25,
            allowance_kb: 700,
        },
    ]
}

fn alias_tables(port: u16) -> Attack {
    const SUBSCRIBERS: usize = 10;
    const TOPICS: usize = 5_000;
    const BATCH: usize = 100;
    let mut subs: Vec<Client> = (0..SUBSCRIBERS)
        .map(|i| {
            let mut c = Client::open(port, ProtocolVersion::V5);
            c.send(&Packet::Connect(Box::new(Connect {
                version: ProtocolVersion::V5,
                clean_start: true,
                keep_alive: 60,
                properties: Properties {
                    topic_alias_maximum: Some(u16::MAX),
                    ..Properties::default()
                },
                client_id: leak_str(&format!("alias-amp-{i}")),
                will: None,
                username: None,
                password: None,
            })));
            assert!(matches!(c.recv(), Packet::ConnAck(_)));
            c.subscribe("big/#", QoS::AtMostOnce);
            c
        })
        .collect();
    let mut publ = Client::connect_v(port, ProtocolVersion::V5, "alias-amp-pub");
    let pad = "t".repeat(1000);
    let mut bytes_sent = 0u64;
    for batch in 0..TOPICS / BATCH {
        for i in 0..BATCH {
            let topic = format!("big/{}/{pad}", batch * BATCH + i);
            publ.publish(&topic, b"x", QoS::AtMostOnce, false, 0);
            bytes_sent += topic.len() as u64 + 6;
        }
        publ.ping();
        for s in &mut subs {
            for _ in 0..BATCH {
                s.recv_publish();
            }
        }
    }
    let mut keep: Vec<Box<dyn std::any::Any>> = vec![Box::new(publ)];
    keep.extend(
        subs.into_iter()
            .map(|s| Box::new(s) as Box<dyn std::any::Any>),
    );
    Attack { bytes_sent, keep }
}

fn reconnect_loop(port: u16) -> Attack {
    let mut connect = Vec::new();
    encode(
        &Packet::Connect(Box::new(Connect {
            version: ProtocolVersion::V311,
            clean_start: false,
            keep_alive: 60,
            properties: Properties::default(),
            client_id: "looper",
            will: None,
            username: None,
            password: None,
        })),
        ProtocolVersion::V311,
        &mut connect,
    )
    .expect("encode");
    let mut bytes_sent = 0u64;
    for _ in 0..50_000 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        s.write_all(&connect).expect("CONNECT");
        let mut connack = [0u8; 4];
        s.read_exact(&mut connack).expect("CONNACK");
        s.write_all(&[0xE0, 0]).expect("DISCONNECT");
        // The broker closes after DISCONNECT: wait for it, so cycles do not overlap.
        let _ = s.read(&mut connack);
        bytes_sent += connect.len() as u64 + 2;
    }
    Attack {
        bytes_sent,
        keep: Vec::new(),
    }
}
