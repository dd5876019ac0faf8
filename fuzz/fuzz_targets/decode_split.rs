//! The incremental decoder fed a byte stream whole and in chunks: the same
//! packets, then the same final state (an error, or waiting for the same number
//! of bytes), must come out however the bytes arrive. Never panics.
//!
//! Bytes held: like the server, the chunked run keeps only the unconsumed tail
//! of what arrived; an incomplete packet may never make it hold more than the
//! size limit (the fixed header alone decides), and in pre-CONNECT mode a first
//! byte that is not CONNECT ends the stream at once [MQTT-3.1.0-1], so an
//! unauthenticated peer gets no more buffering than a CONNECT may take.
//!
//! Input: byte 0 picks the version (% 3) and the size limit (bit 7: 1 MiB, else
//! a small limit so `PacketTooLarge` is reachable); bytes 1-2 seed the chunk
//! sizes, and bit 7 of byte 2 turns on pre-CONNECT mode (the first packet must
//! be CONNECT, as the server decodes before the broker accepted one); the rest
//! is the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use midge::protocol::{decode, DecodeLimits, Decoded, ProtocolVersion};

/// What one decoding run produced: one Debug string per packet, then how it ended.
#[derive(Debug, PartialEq)]
struct Outcome {
    packets: Vec<String>,
    end: String,
}

fn limits(b: u8) -> DecodeLimits {
    let version = match b % 3 {
        0 => ProtocolVersion::V31,
        1 => ProtocolVersion::V311,
        _ => ProtocolVersion::V5,
    };
    let max_packet_size = if b & 0x80 != 0 {
        1 << 20
    } else {
        // 2..=126 bytes: small enough that the fuzzer meets the limit often.
        2 + usize::from((b >> 2) & 0x1F) * 4
    };
    DecodeLimits::new(version, max_packet_size)
}

/// Once a packet has decoded, the connection is past CONNECT (the server
/// switches `expect_connect` off after the first packet).
fn after_packet(limits: &mut DecodeLimits) {
    limits.expect_connect = false;
}

/// Decode packets from `buf[*pos..]` until the buffer runs dry or an error.
/// Returns the final state when it is final (an error), `None` when more bytes
/// could still help.
fn drain(
    buf: &[u8],
    pos: &mut usize,
    limits: &mut DecodeLimits,
    packets: &mut Vec<String>,
) -> Result<Option<usize>, String> {
    loop {
        let rest = buf.get(*pos..).unwrap_or(&[]);
        match decode(rest, limits) {
            Ok(Decoded::Packet(p, used)) => {
                assert!(
                    used > 0 && used <= rest.len(),
                    "used {used} of {}",
                    rest.len()
                );
                assert!(used <= limits.max_packet_size, "packet over the limit");
                packets.push(format!("{p:?}"));
                *pos += used;
                after_packet(limits);
            }
            Ok(Decoded::NeedMore(n)) => {
                if let Some(n) = n {
                    assert!(n > rest.len(), "NeedMore({n}) with {} bytes", rest.len());
                    assert!(n <= limits.max_packet_size, "NeedMore over the limit");
                }
                return Ok(n);
            }
            Err(e) => {
                // Every error maps to a reason code without panicking.
                let _ = e.reason_code();
                return Err(format!("{e:?} / {e}"));
            }
        }
    }
}

fn whole(stream: &[u8], limits: &DecodeLimits) -> Outcome {
    let mut limits = *limits;
    let mut packets = Vec::new();
    let mut pos = 0;
    let end = match drain(stream, &mut pos, &mut limits, &mut packets) {
        Ok(n) => format!("NeedMore({n:?})"),
        Err(e) => e,
    };
    Outcome { packets, end }
}

fn chunked(stream: &[u8], limits: &DecodeLimits, seed: u16) -> Outcome {
    let mut limits = *limits;
    // xorshift16 (never 0), chunk sizes 1..=32; seed 0 means one byte at a time.
    let mut state = seed | 1;
    let mut next_len = || {
        if seed == 0 {
            return 1;
        }
        state ^= state << 7;
        state ^= state >> 9;
        state ^= state << 8;
        usize::from(state % 32) + 1
    };
    let mut buf = Vec::new();
    let mut pos = 0;
    let mut packets = Vec::new();
    let mut last = Ok(None);
    let mut offset = 0;
    while offset < stream.len() {
        let len = next_len().min(stream.len() - offset);
        buf.extend_from_slice(&stream[offset..offset + len]);
        offset += len;
        last = drain(&buf, &mut pos, &mut limits, &mut packets);
        if last.is_err() {
            break;
        }
        // Bytes held for the packet under way: under the limit in force (a
        // type byte and at most three length bytes while the size is unknown).
        let held = buf.len() - pos;
        assert!(
            held < limits.max_packet_size.max(5),
            "holding {held} bytes with a limit of {}",
            limits.max_packet_size
        );
        // Like a server, drop what was consumed once it is most of the buffer.
        if pos > 64 {
            buf.drain(..pos);
            pos = 0;
        }
    }
    let end = match last {
        Ok(n) => format!("NeedMore({n:?})"),
        Err(e) => e,
    };
    Outcome { packets, end }
}

fuzz_target!(|data: &[u8]| {
    let [b0, b1, b2, stream @ ..] = data else {
        return;
    };
    let mut limits = limits(*b0);
    limits.expect_connect = b2 & 0x80 != 0;
    let seed = u16::from_le_bytes([*b1, *b2]);
    let a = whole(stream, &limits);
    let b = chunked(stream, &limits, seed);
    assert_eq!(a, b, "whole vs chunked (seed {seed})");
    // [MQTT-3.1.0-1] Before CONNECT, any other first byte is the end.
    if let (true, Some(&first)) = (limits.expect_connect, stream.first()) {
        if first >> 4 != 1 {
            assert!(
                a.packets.is_empty() && a.end.starts_with("NotConnect"),
                "{a:?}"
            );
        }
    }
});
