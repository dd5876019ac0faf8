//! MQTT over WebSockets (issue 14) against the real binary: the upgrade, MQTT in
//! masked binary frames split and merged anyhow [MQTT-6.0.0-2], a TCP publisher
//! reaching a WebSocket subscriber, and hostile frames closing only the offender.
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{free_port, BrokerProcess};

const MASK: [u8; 4] = [0xA1, 0x02, 0x7F, 0x33];

fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![b0];
    if payload.len() < 126 {
        f.push(0x80 | payload.len() as u8);
    } else {
        f.push(0x80 | 126);
        f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    f.extend_from_slice(&MASK);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    f
}

/// Open a WebSocket on `port` and return the socket with what followed the 101.
fn upgrade(port: u16) -> (TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n").expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_string();
            assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
            assert!(head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
            assert!(head.contains("Sec-WebSocket-Protocol: mqtt"));
            return (s, got[end + 4..].to_vec());
        }
        let n = s.read(&mut buf).expect("read 101");
        assert!(n > 0, "closed before 101");
        got.extend_from_slice(&buf[..n]);
    }
}

/// Read server frames until their payloads contain `want`; returns the raw
/// frames' concatenated payloads. Server frames are unmasked and final.
fn read_until(s: &mut TcpStream, mut raw: Vec<u8>, want: &[u8]) -> Vec<u8> {
    let mut buf = [0u8; 4096];
    loop {
        let mut data = Vec::new();
        let mut pos = 0;
        while raw.len() >= pos + 2 {
            assert_eq!(raw[pos] & 0x70, 0, "RSV bits");
            assert_eq!(raw[pos + 1] & 0x80, 0, "server frames are unmasked");
            let (len, h) = match raw[pos + 1] {
                126 if raw.len() >= pos + 4 => (
                    usize::from(u16::from_be_bytes([raw[pos + 2], raw[pos + 3]])),
                    4,
                ),
                126 | 127 => break,
                n => (usize::from(n), 2),
            };
            if raw.len() < pos + h + len {
                break;
            }
            data.push(raw[pos]);
            data.extend_from_slice(&raw[pos + h..pos + h + len]);
            pos += h + len;
        }
        if data.windows(want.len()).any(|w| w == want) {
            return data;
        }
        let n = s.read(&mut buf).expect("read frames");
        assert!(n > 0, "closed early; frames so far {data:02x?}");
        raw.extend_from_slice(&buf[..n]);
    }
}

const CONNECT: [u8; 14] = [0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 0];
const SUBSCRIBE_T: [u8; 8] = [0x82, 6, 0, 1, 0, 1, b't', 0];

fn start() -> (BrokerProcess, u16, u16) {
    let tcp = free_port();
    let ws = free_port();
    let b = BrokerProcess::start_with_config(
        tcp,
        &format!("listener {tcp} 127.0.0.1\nlistener {ws} 127.0.0.1\nprotocol websockets\n"),
        &[],
    );
    (b, tcp, ws)
}

/// A WebSocket subscriber whose CONNECT spans two frames and whose SUBSCRIBE
/// shares the second [MQTT-6.0.0-2] gets a TCP client's PUBLISH in a binary
/// frame [MQTT-6.0.0-1]; a ping is answered with a pong.
#[test]
fn tcp_publisher_reaches_websocket_subscriber() {
    let (_b, tcp, ws) = start();
    let (mut s, rest) = upgrade(ws);
    let mut second = CONNECT[5..].to_vec();
    second.extend_from_slice(&SUBSCRIBE_T);
    let mut out = frame(0x02, &CONNECT[..5]);
    out.extend(frame(0x89, b"p!"));
    out.extend(frame(0x80, &second));
    s.write_all(&out).expect("write");
    let got = read_until(&mut s, rest, &[0x90, 3, 0, 1, 0]);
    assert!(
        got.windows(4).any(|w| w == [0x82, 0x20, 2, 0]),
        "CONNACK in a binary frame: {got:02x?}"
    );
    assert!(
        got.windows(3).any(|w| w == [0x8A, b'p', b'!']),
        "pong: {got:02x?}"
    );

    let mut p = TcpStream::connect(("127.0.0.1", tcp)).expect("tcp");
    p.write_all(&[
        0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 1, b'p',
    ])
    .expect("connect");
    p.write_all(&[0x30, 4, 0, 1, b't', b'x']).expect("publish");
    read_until(&mut s, Vec::new(), &[0x30, 4, 0, 1, b't', b'x']);
}

/// Hostile frames close the offender with the right status; a bystander
/// WebSocket subscriber still gets its messages.
#[test]
fn hostile_frames_close_only_the_offender() {
    let (_b, tcp, ws) = start();
    let (mut by, rest) = upgrade(ws);
    let mut hello = frame(0x82, &CONNECT);
    hello.extend(frame(0x82, &SUBSCRIBE_T));
    by.write_all(&hello).expect("write");
    read_until(&mut by, rest, &[0x90, 3, 0, 1, 0]);

    let mut long = vec![0x82, 0xFF];
    long.extend_from_slice(&(1u64 << 63).to_be_bytes());
    long.extend_from_slice(&MASK);
    let unmasked = vec![0x82, 2, 0xC0, 0];
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("unmasked", unmasked, 1002),
        ("text", frame(0x81, b"hello"), 1003),
        ("ping of 126 bytes", frame(0x89, &[0; 126]), 1002),
        ("fragmented ping", frame(0x09, b"x"), 1002),
        ("reserved opcode", frame(0x83, b"x"), 1002),
        ("RSV1", frame(0xC2, b"x"), 1002),
        ("length 2^63", long, 1002),
        ("close 1005", frame(0x88, &1005u16.to_be_bytes()), 1002),
    ];
    for (name, bytes, code) in cases {
        let (mut s, rest) = upgrade(ws);
        s.write_all(&bytes).expect("write");
        let mut got = rest;
        let mut buf = [0u8; 256];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => panic!("{name}: not closed: {e}"),
            }
        }
        let mut want = vec![0x88, 2];
        want.extend_from_slice(&code.to_be_bytes());
        assert_eq!(got, want, "{name}");
    }
    // Bad upgrades: refused with an HTTP status and closed.
    for (req, status) in [
        ("GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n", "400"),
        ("GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n", "426"),
    ] {
        let mut s = TcpStream::connect(("127.0.0.1", ws)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        s.write_all(req.as_bytes()).expect("write");
        let mut got = String::new();
        s.read_to_string(&mut got).expect("read refusal");
        assert!(got.starts_with(&format!("HTTP/1.1 {status} ")), "{got}");
    }
    let mut s = TcpStream::connect(("127.0.0.1", ws)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let _ = s.write_all(format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(5000)).as_bytes());
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(
        got.starts_with(b"HTTP/1.1 431 "),
        "{}",
        String::from_utf8_lossy(&got)
    );

    let mut p = TcpStream::connect(("127.0.0.1", tcp)).expect("tcp");
    p.write_all(&[
        0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 1, b'p',
    ])
    .expect("connect");
    p.write_all(&[0x30, 4, 0, 1, b't', b'x']).expect("publish");
    read_until(&mut by, Vec::new(), &[0x30, 4, 0, 1, b't', b'x']);
}
