//! Patterns against the I/O shell and the decoder (issue 10, items 1, 2, 7):
//! bytes before CONNECT, packets that decode to more than they weigh, and a
//! client that sends but never reads.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::common::*;
use crate::{Attack, Pattern};

/// The patterns of this module.
pub fn patterns() -> Vec<Pattern> {
    vec![
        Pattern {
            name: "pre-CONNECT: 3 x PUBLISH header for 100 MB + 8 MB body",
            config: "",
            attack: publish_before_connect,
            // Closed on the first byte: nothing is buffered (old: +24 MB here,
            // 4 -> 281 MB with the whole 100 MB bodies).
            max_ratio: 0.0,
            allowance_kb: 1024,
        },
        Pattern {
            name: "40 MB CONNECT of empty user properties",
            config: "",
            attack: user_property_connect,
            // Refused from its fixed header (over max_connect_packet_size).
            max_ratio: 0.0,
            allowance_kb: 1024,
        },
        Pattern {
            name: "40 MB user-property CONNECT, size limits off",
            config: "max_packet_size 0\nmax_connect_packet_size 0",
            attack: user_property_connect,
            // The packet is buffered (its own size, allocated once) and then
            // refused by max_user_properties: never the old 7x (+293 MB).
            max_ratio: 1.1,
            allowance_kb: 2 * 1024,
        },
        Pattern {
            name: "SUBSCRIBE with 200,000 filters (800 kB)",
            config: "",
            attack: huge_subscribe,
            // Buffered once (under max_packet_size), refused by
            // max_filters_per_packet before any list is built.
            max_ratio: 1.1,
            allowance_kb: 1024,
        },
        Pattern {
            name: "60 MB of PINGREQ from a client that never reads",
            config: "",
            attack: pingreq_never_read,
            // Reading stops at 1 MiB of stuck PINGRESP (old: +56 MB).
            max_ratio: 0.0,
            allowance_kb: 4 * 1024,
        },
    ]
}

/// A variable byte integer (1.5.5).
fn varint(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let b = (n & 0x7F) as u8;
        n >>= 7;
        out.push(if n > 0 { b | 0x80 } else { b });
        if n == 0 {
            return;
        }
    }
}

/// Write as much of `data` as the socket takes before it fails or takes
/// nothing for `stall`; the bytes written.
fn write_what_goes(s: &mut TcpStream, data: &[u8], stall: Duration) -> u64 {
    s.set_write_timeout(Some(stall)).expect("write timeout");
    let mut sent = 0;
    while sent < data.len() {
        match s.write(&data[sent..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => sent += n,
        }
    }
    sent as u64
}

/// Wait until the broker closes `s` (EOF or reset), draining what it sends.
fn wait_closed(s: &mut TcpStream) {
    s.set_read_timeout(Some(TIMEOUT)).expect("read timeout");
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("the broker kept the connection open for {TIMEOUT:?}")
            }
            Err(_) => return,
        }
    }
}

fn publish_before_connect(port: u16) -> Attack {
    let mut packet = vec![0x30];
    varint(100 << 20, &mut packet);
    packet.resize(packet.len() + (8 << 20), 0x41);
    let mut keep: Vec<Box<dyn std::any::Any>> = Vec::new();
    let mut bytes_sent = 0;
    for _ in 0..3 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        bytes_sent += write_what_goes(&mut s, &packet, Duration::from_secs(2));
        keep.push(Box::new(s));
    }
    Attack { bytes_sent, keep }
}

fn user_property_connect(port: u16) -> Attack {
    let n = 8 << 20;
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60];
    varint(n * 5, &mut body);
    body.reserve(n * 5 + 3);
    for _ in 0..n {
        body.extend_from_slice(&[0x26, 0, 0, 0, 0]);
    }
    body.extend_from_slice(&[0, 1, b'x']);
    let mut packet = vec![0x10];
    varint(body.len(), &mut packet);
    packet.extend_from_slice(&body);
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let bytes_sent = write_what_goes(&mut s, &packet, Duration::from_secs(2));
    wait_closed(&mut s);
    Attack {
        bytes_sent,
        keep: Vec::new(),
    }
}

fn huge_subscribe(port: u16) -> Attack {
    let mut body = vec![0, 1];
    for _ in 0..200_000 {
        body.extend_from_slice(&[0, 1, b'f', 0]);
    }
    let mut packet = vec![0x82];
    varint(body.len(), &mut packet);
    packet.extend_from_slice(&body);
    let mut s = Client::connect(port, "huge-subscribe").into_stream();
    let bytes_sent = write_what_goes(&mut s, &packet, Duration::from_secs(2));
    wait_closed(&mut s);
    Attack {
        bytes_sent,
        keep: Vec::new(),
    }
}

fn pingreq_never_read(port: u16) -> Attack {
    let mut s = Client::connect(port, "pinger").into_stream();
    let flood = [0xC0u8, 0x00].repeat(30 << 20);
    // Three seconds without progress: the broker has stopped reading.
    // (Without back-pressure all 60 MB go through, and the bound catches it.)
    let bytes_sent = write_what_goes(&mut s, &flood, Duration::from_secs(3));
    Attack {
        bytes_sent,
        keep: vec![Box::new(s)],
    }
}
