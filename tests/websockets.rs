//! MQTT over WebSockets (issue 14) against the real binary: the upgrade, MQTT in
//! masked binary frames split and merged anyhow [MQTT-6.0.0-2], a TCP publisher
//! reaching a WebSocket subscriber, and hostile frames closing only the offender.
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{free_port, BrokerProcess};
use midge::protocol::{decode, DecodeLimits, Decoded, Packet, ProtocolVersion, ReasonCode};

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
    // A 2 MiB frame over max_packet_size (1 MiB), refused from its header.
    let mut huge = vec![0x82, 0xFF];
    huge.extend_from_slice(&(2u64 << 20).to_be_bytes());
    huge.extend_from_slice(&MASK);
    let mut inside = frame(0x02, &CONNECT[..4]);
    inside.extend(frame(0x82, &CONNECT[4..]));
    let mut bad_utf8 = 1000u16.to_be_bytes().to_vec();
    bad_utf8.extend_from_slice(&[0xC3, 0x28]);
    let mut cases: Vec<(String, Vec<u8>, u16)> = vec![
        ("unmasked".into(), unmasked, 1002),
        ("text".into(), frame(0x81, b"hello"), 1003),
        ("fragmented text".into(), frame(0x01, b"he"), 1003),
        ("ping of 126 bytes".into(), frame(0x89, &[0; 126]), 1002),
        ("close of 126 bytes".into(), frame(0x88, &[0x03; 126]), 1002),
        ("fragmented ping".into(), frame(0x09, b"x"), 1002),
        (
            "fragmented close".into(),
            frame(0x08, &1000u16.to_be_bytes()),
            1002,
        ),
        ("reserved opcode".into(), frame(0x83, b"x"), 1002),
        ("reserved control opcode".into(), frame(0x8B, b""), 1002),
        ("RSV1".into(), frame(0xC2, b"x"), 1002),
        ("RSV2".into(), frame(0xA2, b"x"), 1002),
        ("RSV3".into(), frame(0x92, b"x"), 1002),
        ("RSV on a ping".into(), frame(0xC9, b""), 1002),
        ("length 2^63".into(), long, 1002),
        ("frame over max_packet_size".into(), huge, 1009),
        (
            "continuation without a message".into(),
            frame(0x80, b"x"),
            1002,
        ),
        ("new message inside a fragmented one".into(), inside, 1002),
        (
            "close with a 1-byte payload".into(),
            frame(0x88, &[3]),
            1002,
        ),
        (
            "close reason not UTF-8".into(),
            frame(0x88, &bad_utf8),
            1007,
        ),
    ];
    // Close statuses a peer may not send (RFC 6455 section 7.4): reserved
    // for reports (1004-1006, 1015), unassigned, or out of range.
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
        cases.push((
            format!("close {code}"),
            frame(0x88, &code.to_be_bytes()),
            1002,
        ));
    }
    // Valid statuses are echoed, not refused (section 5.5.1).
    for code in [1000u16, 1001, 1011, 3000, 4999] {
        cases.push((
            format!("close {code} echoed"),
            frame(0x88, &code.to_be_bytes()),
            code,
        ));
    }
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
        // No key, a key that is not 16 bytes, no version, version 8.
        ("GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n", "400"),
        ("GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n\r\n", "400"),
        ("GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", "426"),
        ("GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n", "426"),
        // Not an upgrade, not GET, not HTTP/1.1, no MQTT subprotocol.
        ("GET / HTTP/1.1\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", "400"),
        ("POST / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", "400"),
        ("GET / HTTP/1.0\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", "400"),
        ("GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat\r\n\r\n", "400"),
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

/// A slowloris upgrade: request bytes trickle in (one every 100 ms, so the
/// header never ends in time) and the socket is closed by `connect_timeout`
/// (1 s here) whatever it keeps sending, with nothing written back (still
/// HTTP: no close frame). A bystander WebSocket subscriber is unharmed.
#[test]
fn slowloris_upgrade_is_closed_by_connect_timeout() {
    let tcp = free_port();
    let ws = free_port();
    let _b = BrokerProcess::start_with_config(
        tcp,
        &format!("connect_timeout 1\nlistener {tcp} 127.0.0.1\nlistener {ws} 127.0.0.1\nprotocol websockets\n"),
        &[],
    );
    let (mut by, rest) = upgrade(ws);
    let mut hello = frame(0x82, &CONNECT);
    hello.extend(frame(0x82, &SUBSCRIBE_T));
    by.write_all(&hello).expect("write");
    read_until(&mut by, rest, &[0x90, 3, 0, 1, 0]);

    let mut slow = TcpStream::connect(("127.0.0.1", ws)).expect("connect");
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let started = std::time::Instant::now();
    let mut writer = slow.try_clone().expect("clone");
    let trickle = std::thread::spawn(move || {
        let request = format!(
            "GET /mqtt HTTP/1.1\r\nHost: x\r\n{}",
            "X-Pad: y\r\n".repeat(30)
        );
        for b in request.bytes() {
            if writer.write_all(&[b]).is_err() {
                return;
            }
            // The attack's own pace (not a synchronisation).
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let mut got = Vec::new();
    match slow.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("slow upgrade not closed: {e}"),
    }
    let took = started.elapsed();
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "closed after {took:?}, connect_timeout is 1 s"
    );
    let _ = slow.shutdown(std::net::Shutdown::Both);
    let _ = trickle.join();

    let mut p = TcpStream::connect(("127.0.0.1", tcp)).expect("tcp");
    p.write_all(&[
        0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 1, b'p',
    ])
    .expect("connect");
    p.write_all(&[0x30, 4, 0, 1, b't', b'x']).expect("publish");
    read_until(&mut by, Vec::new(), &[0x30, 4, 0, 1, b't', b'x']);
}

/// Read until the broker closes the TCP stream; returns the frames received
/// (opcode, payload), failing on bytes that are not whole server frames.
fn frames_until_eof(s: &mut TcpStream, mut raw: Vec<u8>) -> Vec<(u8, Vec<u8>)> {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("not closed: {e}; so far {raw:02x?}"),
        }
    }
    let mut frames = Vec::new();
    let mut pos = 0;
    while pos < raw.len() {
        assert!(raw.len() >= pos + 2, "partial frame header: {raw:02x?}");
        assert_eq!(raw[pos] & 0xF0, 0x80, "final, no RSV bits: {raw:02x?}");
        assert_eq!(raw[pos + 1] & 0x80, 0, "server frames are unmasked");
        let (len, h) = match raw[pos + 1] {
            126 => (
                usize::from(u16::from_be_bytes([raw[pos + 2], raw[pos + 3]])),
                4,
            ),
            127 => panic!("no 64-bit frames expected here"),
            n => (usize::from(n), 2),
        };
        assert!(raw.len() >= pos + h + len, "partial frame: {raw:02x?}");
        frames.push((raw[pos] & 0x0F, raw[pos + h..pos + h + len].to_vec()));
        pos += h + len;
    }
    frames
}

/// The close frame payload: status, then the reason text.
fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    p
}

/// The MQTT packets carried by the binary frames, decoded at `version`.
fn packets(frames: &[(u8, Vec<u8>)], version: ProtocolVersion) -> Vec<Packet<'static>> {
    let data: Vec<u8> = frames
        .iter()
        .filter(|(op, _)| *op == 2)
        .flat_map(|(_, p)| p.iter().copied())
        .collect();
    let data: &'static [u8] = Box::leak(data.into_boxed_slice());
    let limits = DecodeLimits::new(version, 1 << 20);
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        match decode(&data[pos..], &limits) {
            Ok(Decoded::Packet(p, used)) => {
                out.push(p);
                pos += used;
            }
            other => panic!("undecodable broker output {:02x?}: {other:?}", &data[pos..]),
        }
    }
    out
}

/// CONNECT: `level` 4 (3.1.1) or 5, clean, with `keep_alive` and `id`.
fn connect_packet(level: u8, keep_alive: u16, id: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', level, 2];
    body.extend_from_slice(&keep_alive.to_be_bytes());
    if level == 5 {
        body.push(0); // no properties
    }
    body.extend_from_slice(&(id.len() as u16).to_be_bytes());
    body.extend_from_slice(id.as_bytes());
    let mut p = vec![0x10, body.len() as u8];
    p.extend(body);
    p
}

/// A WebSocket client on `ws` that sent `first` (one frame) and got CONNACK.
fn ws_client(ws: u16, first: &[u8]) -> TcpStream {
    let (mut s, rest) = upgrade(ws);
    s.write_all(&frame(0x82, first)).expect("write");
    read_until(&mut s, rest, &[0x20]);
    s
}

/// What the broker sends on a WebSocket it closes: (DISCONNECT reason if any,
/// the close frame's payload), checking that the close frame is last and the
/// TCP stream ends after it (RFC 6455 section 7.1.1).
fn broker_close(s: &mut TcpStream, version: ProtocolVersion) -> (Option<ReasonCode>, Vec<u8>) {
    let frames = frames_until_eof(s, Vec::new());
    let (last_op, last) = frames.last().cloned().expect("a close frame before EOF");
    assert_eq!(last_op, 8, "the last frame is a close frame: {frames:02x?}");
    assert_eq!(
        frames.iter().filter(|(op, _)| *op == 8).count(),
        1,
        "one close frame: {frames:02x?}"
    );
    let disconnect = packets(&frames, version).into_iter().find_map(|p| match p {
        Packet::Disconnect(d) => Some(d.reason),
        _ => None,
    });
    (disconnect, last)
}

fn start_limited() -> (BrokerProcess, u16, u16) {
    let tcp = free_port();
    let ws = free_port();
    let b = BrokerProcess::start_with_config(
        tcp,
        &format!(
            "max_packet_size 1000\nlistener {tcp} 127.0.0.1\nlistener {ws} 127.0.0.1\nprotocol websockets\n"
        ),
        &[],
    );
    (b, tcp, ws)
}

/// When the broker closes a WebSocket connection it sends a close frame with a
/// status that fits its reason, the MQTT reason's name as the close reason,
/// after any DISCONNECT, and only then ends the TCP stream (RFC 6455 sections
/// 7.1.1, 7.4.1): protocol errors 1002, a packet over `max_packet_size` 1009,
/// a refused CONNECT and a keep-alive timeout 1008, a session taken over and
/// a client's DISCONNECT 1000.
#[test]
fn broker_closes_websockets_with_a_close_frame() {
    let (_b, tcp, ws) = start_limited();
    let v4 = ProtocolVersion::V311;
    let v5 = ProtocolVersion::V5;

    // 3.1.1, a PUBLISH with QoS 3 [MQTT-3.3.1-4]: no DISCONNECT in 3.1.1.
    let mut s = ws_client(ws, &connect_packet(4, 60, "bad4"));
    s.write_all(&frame(0x82, &[0x36, 4, 0, 1, b't', 0]))
        .expect("write");
    assert_eq!(
        broker_close(&mut s, v4),
        (None, close_payload(1002, "Malformed Packet"))
    );

    // 5, a second CONNECT [MQTT-3.1.0-2]: DISCONNECT 0x82, then the close.
    let mut s = ws_client(ws, &connect_packet(5, 60, "bad5"));
    s.write_all(&frame(0x82, &connect_packet(5, 60, "bad5")))
        .expect("write");
    assert_eq!(
        broker_close(&mut s, v5),
        (
            Some(ReasonCode::PROTOCOL_ERROR),
            close_payload(1002, "Protocol Error")
        )
    );

    // 5, a PUBLISH over max_packet_size, in frames under it: DISCONNECT 0x95.
    let mut s = ws_client(ws, &connect_packet(5, 60, "big5"));
    let mut big = vec![0x30, 0xDC, 0x0B, 0, 1, b't', 0]; // 1500 bytes follow
    big.resize(3 + 1500, b'x');
    s.write_all(&frame(0x02, &big[..750])).expect("write");
    s.write_all(&frame(0x80, &big[750..])).expect("write");
    assert_eq!(
        broker_close(&mut s, v5),
        (
            Some(ReasonCode::PACKET_TOO_LARGE),
            close_payload(1009, "Packet too large")
        )
    );

    // An unsupported protocol level: CONNACK 0x01 (3.1.1's form, as
    // mosquitto) [MQTT-3.1.2-2], then the close.
    let (mut s, rest) = upgrade(ws);
    s.write_all(&frame(0x82, &connect_packet(7, 60, "lvl")))
        .expect("write");
    assert_eq!(
        frames_until_eof(&mut s, rest),
        vec![
            (2, vec![0x20, 2, 0, 1]),
            (8, close_payload(1002, "Unsupported Protocol Version"))
        ]
    );

    // 3.1.1, an empty client id without clean session: CONNACK 0x02 [MQTT-3.1.3-8].
    let mut empty = connect_packet(4, 60, "");
    empty[9] = 0; // connect flags: not clean
    let (mut s, rest) = upgrade(ws);
    s.write_all(&frame(0x82, &empty)).expect("write");
    let frames = frames_until_eof(&mut s, rest);
    assert_eq!(
        frames,
        vec![
            (2, vec![0x20, 2, 0, 2]),
            (8, close_payload(1008, "Client Identifier not valid"))
        ]
    );

    // Session taken over by a TCP client: 3.1.1 gets the close frame alone,
    // 5 a DISCONNECT 0x8E first.
    let mut s4 = ws_client(ws, &connect_packet(4, 60, "dup4"));
    let mut s5 = ws_client(ws, &connect_packet(5, 60, "dup5"));
    let _t4 = common::Client::connect(tcp, "dup4");
    let _t5 = common::Client::connect_v(tcp, v5, "dup5");
    assert_eq!(
        broker_close(&mut s4, v4),
        (None, close_payload(1000, "Session taken over"))
    );
    assert_eq!(
        broker_close(&mut s5, v5),
        (
            Some(ReasonCode::SESSION_TAKEN_OVER),
            close_payload(1000, "Session taken over")
        )
    );

    // A client's DISCONNECT: the broker ends the stream with a normal close.
    let mut s = ws_client(ws, &connect_packet(4, 60, "bye"));
    s.write_all(&frame(0x82, &[0xE0, 0])).expect("write");
    assert_eq!(broker_close(&mut s, v4), (None, close_payload(1000, "")));

    // Keep-alive of 1 s, then silence: closed after 1.5 s [MQTT-3.1.2-22].
    let mut s4 = ws_client(ws, &connect_packet(4, 1, "idle4"));
    let mut s5 = ws_client(ws, &connect_packet(5, 1, "idle5"));
    assert_eq!(
        broker_close(&mut s4, v4),
        (None, close_payload(1008, "Keep Alive timeout"))
    );
    assert_eq!(
        broker_close(&mut s5, v5),
        (
            Some(ReasonCode::KEEP_ALIVE_TIMEOUT),
            close_payload(1008, "Keep Alive timeout")
        )
    );
}

/// On shutdown (SIGTERM) a WebSocket client gets DISCONNECT 0x8B (MQTT 5) and
/// a close frame with 1001, going away, before the stream ends.
#[test]
fn shutdown_closes_websockets_with_going_away() {
    let (b, _tcp, ws) = start_limited();
    let mut s = ws_client(ws, &connect_packet(5, 60, "stay"));
    b.signal("TERM");
    assert_eq!(
        broker_close(&mut s, ProtocolVersion::V5),
        (
            Some(ReasonCode::SERVER_SHUTTING_DOWN),
            close_payload(1001, "Server shutting down")
        )
    );
}

/// A WebSocket client that the WebSocket layer closes (here an unmasked
/// frame) is ended in the broker at once, as a connection lost without
/// DISCONNECT: its will goes out now. Before, the broker still counted it
/// connected and the will waited for the keep-alive (90 s here).
#[test]
fn a_client_closed_by_the_websocket_layer_leaves_its_will() {
    let (_b, tcp, ws) = start();
    let mut sub = common::Client::connect(tcp, "will-watcher");
    sub.subscribe("gone", midge::protocol::QoS::AtMostOnce);
    let (mut s, rest) = upgrade(ws);
    // CONNECT 3.1.1, keep-alive 60, will "gone" = "bye".
    let connect = [
        0x10, 24, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x06, 0, 60, 0, 1, b'w', 0, 4, b'g', b'o', b'n',
        b'e', 0, 3, b'b', b'y', b'e',
    ];
    s.write_all(&frame(0x82, &connect)).expect("connect");
    read_until(&mut s, rest, &[0x20, 2, 0, 0]);
    s.write_all(&[0x82, 0x02, 0xC0, 0x00])
        .expect("unmasked PINGREQ");
    let will = sub.recv_publish();
    assert_eq!((will.topic, will.payload), ("gone", &b"bye"[..]));
}
