//! Patterns that hold sockets open or push traffic at a client that never
//! reads: the broker's cost per socket and per queued byte.

use std::io::Write;
use std::net::TcpStream;

use crate::common::*;
use crate::{Attack, Pattern};
use midge::protocol::{encode, Packet, ProtocolVersion, QoS};

/// The patterns of this module.
pub fn patterns() -> Vec<Pattern> {
    vec![
        Pattern {
            name: "slowloris: 200 sockets, 5 bytes of CONNECT each",
            config: "",
            attack: slowloris,
            max_ratio: 0.0,
            // Per socket: the broker's and the server's connection state and a
            // wheel entry (~0.5 kB), well under 1 MB for 200.
            allowance_kb: 1024,
        },
        Pattern {
            name: "16 MB of QoS 0 to a subscriber that never reads",
            config: "",
            attack: never_reading_subscriber,
            // What may be held for it: 1 MiB of QoS 0 backlog (then drops).
            max_ratio: 0.0,
            allowance_kb: 3 * 1024,
        },
    ]
}

fn slowloris(port: u16) -> Attack {
    let mut keep: Vec<Box<dyn std::any::Any>> = Vec::new();
    let mut bytes_sent = 0;
    for _ in 0..200 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        // CONNECT fixed header announcing 16 bytes, then 3 of them.
        s.write_all(&[0x10, 16, 0, 4, b'M']).expect("write");
        bytes_sent += 5;
        keep.push(Box::new(s));
    }
    Attack { bytes_sent, keep }
}

fn never_reading_subscriber(port: u16) -> Attack {
    let mut stuck = Client::connect(port, "stuck");
    stuck.subscribe("flood/#", QoS::AtMostOnce);
    let mut publ = Client::connect(port, "flooder").into_stream();
    let payload = vec![0x55u8; 1024];
    let mut packet = Vec::new();
    encode(
        &Packet::Publish(publish("flood/t", &payload, QoS::AtMostOnce, false, 0)),
        ProtocolVersion::V311,
        &mut packet,
    )
    .expect("encode");
    let mut batch = Vec::new();
    for _ in 0..64 {
        batch.extend_from_slice(&packet);
    }
    let mut bytes_sent = 0u64;
    while bytes_sent < 16 << 20 {
        publ.write_all(&batch).expect("publish batch");
        bytes_sent += batch.len() as u64;
    }
    // A round trip on the publisher's connection: the broker has read it all.
    let mut publ = Client::from_stream(publ, ProtocolVersion::V311);
    publ.ping();
    Attack {
        bytes_sent,
        keep: vec![Box::new(stuck), Box::new(publ)],
    }
}
