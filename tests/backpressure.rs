//! The I/O shell's side of hostile clients (issue 10, items 7 and 13): a client
//! that sends but never reads stops being read once its answers pile up, and a
//! connection closed with a reason code gets that reason even when it had sent
//! more than the broker read.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use midge::protocol::{
    decode, encode, DecodeLimits, Decoded, Packet, ProtocolVersion, QoS, ReasonCode,
};

/// A publisher/subscriber pair still gets a message through.
fn bystanders_fine(port: u16) {
    let mut sub = Client::connect(port, "bystander-sub");
    sub.subscribe("bystander/t", QoS::AtLeastOnce);
    let mut publ = Client::connect(port, "bystander-pub");
    publ.publish("bystander/t", b"still here", QoS::AtLeastOnce, false, 1);
    assert_eq!(sub.recv_publish().payload, b"still here");
}

/// Write `data` until done or until the socket takes nothing for `stall`;
/// returns the bytes written.
fn write_until_stalled(s: &mut TcpStream, data: &[u8], stall: Duration) -> usize {
    s.set_write_timeout(Some(stall)).expect("write timeout");
    let mut sent = 0;
    while sent < data.len() {
        match s.write(&data[sent..]) {
            Ok(n) => sent += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("write failed after {sent} bytes: {e}"),
        }
    }
    sent
}

/// Item 7: 60 MB of PINGREQ from a client that never reads (old: the broker read
/// it all and held +56 MB of PINGRESP). Now reading stops once 1 MiB of answers
/// is stuck: the sender stalls, the broker's RSS stays flat, bystanders are
/// served, and once the client reads, every PINGRESP arrives.
#[test]
fn a_client_that_never_reads_stops_being_read() {
    let b = BrokerProcess::start("");
    bystanders_fine(b.port);
    let before = b.rss_kb();
    let mut s = Client::connect(b.port, "pinger").into_stream();
    let flood = [0xC0u8, 0x00].repeat(30 << 20);
    // Three seconds without progress: the broker stopped reading (a debug
    // build on a loaded machine can pause for a second or so by itself).
    let mut sent = write_until_stalled(&mut s, &flood, Duration::from_secs(3));
    assert!(
        sent < flood.len(),
        "the broker read all 60 MB: no back-pressure"
    );

    // Read every answer (reading resumes as the output drains); a PINGREQ cut
    // in half by the stall is completed once there is room to send again.
    s.set_read_timeout(Some(TIMEOUT)).expect("read timeout");
    let mut got = 0;
    let mut buf = vec![0u8; 1 << 16];
    let mut read_answers = |s: &mut TcpStream, upto: usize| {
        while got < upto {
            let n = s.read(&mut buf).expect("PINGRESPs");
            assert!(n > 0, "closed after {got} of {upto} bytes");
            // PINGRESP is D0 00.
            for (i, byte) in buf[..n].iter().enumerate() {
                let want = if (got + i) % 2 == 0 { 0xD0 } else { 0x00 };
                assert_eq!(*byte, want, "byte {} of the answers", got + i);
            }
            got += n;
        }
        assert_eq!(got, upto, "more answers than PINGREQs");
    };
    read_answers(&mut s, sent / 2 * 2);
    if sent % 2 == 1 {
        s.write_all(&[0x00]).expect("finish the last PINGREQ");
        sent += 1;
        read_answers(&mut s, sent);
    }
    let mut c = Client::from_stream(s, ProtocolVersion::V311);
    c.ping();
    // Everything sent is processed: the peak covers the whole exchange.
    let growth = b.peak_rss_kb().saturating_sub(before);
    eprintln!(
        "{} kB of PINGREQ read in all; peak +{growth} kB",
        sent / 1024
    );
    assert!(growth < 4 * 1024, "peak RSS +{growth} kB");
    bystanders_fine(b.port);
}

/// Item 13: a v5 client pipelines 3 MB of PINGREQ, then 21 QoS 2 PUBLISHes
/// (Receive Maximum is 20) and 1 MB more, before reading anything. The broker
/// answers DISCONNECT 0x93 with the client's input unread; closing then would
/// reset the connection and destroy the answers still in flight (old: the client
/// got "connection reset" instead of the DISCONNECT). Now the write side is shut
/// and the input drained, so the client reads everything, then EOF.
#[test]
fn disconnect_reaches_a_client_whose_input_was_unread() {
    let b = BrokerProcess::start("");
    let c = Client::connect_v(b.port, ProtocolVersion::V5, "pipeliner");
    let s = c.into_stream();
    let mut bytes = [0xC0u8, 0x00].repeat(3 << 19);
    for pid in 1..=21u16 {
        let p = publish("t", b"payload", QoS::ExactlyOnce, false, pid);
        encode(&Packet::Publish(p), ProtocolVersion::V5, &mut bytes).expect("encode");
    }
    bytes.extend_from_slice(&[0xC0u8, 0x00].repeat(1 << 19));
    let mut w = s.try_clone().expect("clone");
    let writer = std::thread::spawn(move || {
        // The broker stops reading partway; what it never reads is fine to lose.
        let _ = w.write_all(&bytes);
    });
    // Read everything, fast (a slow reader would run into the 5 s the broker
    // gives a closed connection to drain), until end of stream or an error.
    let mut s = s;
    s.set_read_timeout(Some(TIMEOUT)).expect("read timeout");
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let end = loop {
        match s.read(&mut buf) {
            Ok(0) => break "end of stream".to_string(),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => break e.to_string(),
        }
    };
    let mut pos = 0;
    let mut pingresps = 0;
    while got[pos..].starts_with(&[0xD0, 0x00]) {
        pos += 2;
        pingresps += 1;
    }
    let mut packets = Vec::new();
    let limits = DecodeLimits::new(ProtocolVersion::V5, 1 << 20);
    while let Ok(Decoded::Packet(p, used)) = decode(&got[pos..], &limits) {
        packets.push(format!("{p:?}"));
        pos += used;
        if let Packet::Disconnect(d) = p {
            assert_eq!(d.reason, ReasonCode::RECEIVE_MAXIMUM_EXCEEDED);
        }
    }
    assert!(
        packets.last().is_some_and(|p| p.starts_with("Disconnect")),
        "no DISCONNECT: {pingresps} PINGRESP, then {packets:?}, then {end}"
    );
    assert_eq!(pingresps, 3 << 19);
    assert_eq!(packets.len(), 21, "20 PUBREC and the DISCONNECT");
    assert_eq!(pos, got.len(), "nothing after the DISCONNECT");
    // A clean end of stream: the broker shut its write side.
    assert_eq!(end, "end of stream");
    writer.join().expect("writer");
    bystanders_fine(b.port);
}
