//! The WebSocket layer's sans-IO parts on arbitrary bytes in arbitrary splits:
//! the HTTP request parser (upgrade or plain GET, as the server feeds it a
//! growing buffer) and the frame decoder (as the server feeds it each read).
//! Never panics, and however the bytes are split the outcome is the one a
//! single call on all of them gives:
//!
//! - request: the first prefix that decides (a request, a refusal) decides
//!   what the whole buffer decides; undecided prefixes stay undecided. A
//!   plain GET's path is relative and never leaves the directory (no empty,
//!   `.`-leading or `/`/`\`/NUL-carrying segment).
//! - frames: the same control frames in the same order, the same final error
//!   (or none), the same MQTT bytes when no error ends the stream (with an
//!   error, what came out before it is a prefix of what a byte-at-a-time run
//!   gives), and never more output than input (frames are unmasked in place).
//!
//! Input: byte 0 chooses the mode (bit 0: a request first, then frames after
//! an upgrade; else frames only), the frame limit (bits 1-2) and the header
//! limit (bits 3-4); bytes 1-2 seed the split sizes (0: one byte at a time);
//! the rest is the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use midge::protocol::websocket::frame::{Control, FrameDecoder};
use midge::protocol::websocket::http::content_type;
use midge::protocol::websocket::{parse_request, Request, UpgradeError};

/// Split sizes 1..=64 from a xorshift16 seed; seed 0: one byte at a time.
fn splits(seed: u16) -> impl FnMut() -> usize {
    let mut state = seed | 1;
    move || {
        if seed == 0 {
            return 1;
        }
        state ^= state << 7;
        state ^= state >> 9;
        state ^= state << 8;
        usize::from(state % 64) + 1
    }
}

/// What the parser says of the whole buffer, checked for sanity.
fn parse_checked(buf: &[u8], max: usize) -> Result<Option<Request>, UpgradeError> {
    let r = parse_request(buf, max);
    match &r {
        Ok(Some(Request::Upgrade(u))) => {
            assert!(u.used <= buf.len() && u.used <= max);
            assert_eq!(u.accept.len(), 28, "base64 of a SHA-1");
            let mut out = Vec::new();
            u.write_response(&mut out);
            assert!(out.starts_with(b"HTTP/1.1 101 ") && out.ends_with(b"\r\n\r\n"));
        }
        Ok(Some(Request::Get(g))) => {
            assert!(g.used <= buf.len() && g.used <= max);
            assert!(!g.path.is_empty());
            for segment in g.path.split('/') {
                assert!(
                    !segment.is_empty()
                        && !segment.starts_with('.')
                        && !segment.contains(['\\', '\0']),
                    "path {:?} escapes",
                    g.path
                );
            }
            assert!(!g.root || g.path == "index.html");
            let _ = content_type(&g.path);
        }
        Ok(None) => assert!(buf.len() <= max, "undecided past the header limit"),
        Err(e) => {
            assert!(e.response().starts_with(b"HTTP/1.1 "));
            let _ = e.to_string();
        }
    }
    r
}

/// Feed the request as the server does (a growing buffer); returns the
/// decision and the bytes after the request when it is an upgrade.
fn request(stream: &[u8], max: usize, seed: u16) -> Option<usize> {
    let whole = parse_checked(stream, max);
    let mut next = splits(seed);
    let mut len = 0;
    let mut decided = None;
    while len < stream.len() {
        len = (len + next()).min(stream.len());
        let r = parse_checked(&stream[..len], max);
        if !matches!(r, Ok(None)) {
            decided = Some(r);
            break;
        }
    }
    match decided {
        Some(r) => assert_eq!(r, whole, "decided at {len} bytes"),
        None => assert_eq!(whole, Ok(None)),
    }
    match whole {
        Ok(Some(Request::Upgrade(u))) => Some(u.used),
        _ => None,
    }
}

/// One run of the frame decoder over `stream` cut by `next`.
#[derive(Debug, PartialEq)]
struct Frames {
    data: Vec<u8>,
    controls: Vec<String>,
    error: Option<String>,
    closed: bool,
}

fn unframe(stream: &[u8], max_frame: u64, mut next: impl FnMut() -> usize) -> Frames {
    let mut d = FrameDecoder::new();
    let mut out = Frames {
        data: Vec::new(),
        controls: Vec::new(),
        error: None,
        closed: false,
    };
    let mut pos = 0;
    while pos < stream.len() {
        let end = (pos + next()).min(stream.len());
        let mut buf = stream[pos..end].to_vec();
        pos = end;
        let mut controls = Vec::new();
        let r = d.unframe(&mut buf, max_frame, &mut |c| {
            if let Control::Ping(p) = &c {
                assert!(p.len() <= 125);
            }
            controls.push(format!("{c:?}"));
        });
        out.controls.extend(controls);
        match r {
            Ok(n) => {
                assert!(n <= buf.len(), "{n} bytes out of {}", buf.len());
                out.data.extend_from_slice(&buf[..n]);
            }
            Err(e) => {
                let _ = e.close_code();
                out.error = Some(format!("{e:?}"));
                break;
            }
        }
    }
    out.closed = d.closed();
    out
}

fn frames(stream: &[u8], max_frame: u64, seed: u16) {
    let whole = unframe(stream, max_frame, || usize::MAX);
    let bytewise = unframe(stream, max_frame, || 1);
    let split = unframe(stream, max_frame, splits(seed));
    for (name, run) in [("bytewise", &bytewise), ("split", &split)] {
        assert_eq!(run.controls, whole.controls, "{name}: control frames");
        assert_eq!(run.error, whole.error, "{name}: final error");
        assert_eq!(run.closed, whole.closed, "{name}: closed");
    }
    if whole.error.is_none() {
        assert_eq!(bytewise.data, whole.data, "bytewise: data");
        assert_eq!(split.data, whole.data, "split: data");
    } else {
        assert!(
            bytewise.data.starts_with(&split.data),
            "split data is not a prefix of the bytewise data"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let [flags, s0, s1, stream @ ..] = data else {
        return;
    };
    let seed = u16::from_le_bytes([*s0, *s1]);
    let max_frame = match (flags >> 1) & 3 {
        0 => 16,
        1 => 200,
        2 => 70_000,
        _ => u64::MAX,
    };
    let max_header = match (flags >> 3) & 3 {
        0 => 64,
        1 => 512,
        2 => 4096,
        _ => 65_536,
    };
    if flags & 1 == 1 {
        if let Some(used) = request(stream, max_header, seed) {
            frames(&stream[used..], max_frame, seed);
        }
    } else {
        frames(stream, max_frame, seed);
    }
});
