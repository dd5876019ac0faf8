//! Hostile input against the real binary: each case sends something a broken or
//! malicious client might, and asserts that (a) that connection is closed, with
//! DISCONNECT and the right reason code for MQTT 5 where the spec names one,
//! (b) a bystander publisher/subscriber pair connected all along still gets every
//! message, and (c) the broker process is alive.
//!
//! The cases are data; each group runs against one broker and reports every
//! failing case at once.

mod common;

use std::time::Duration;

use common::*;
use midge::protocol::{Packet, ProtocolVersion, QoS, ReasonCode};

/// What the broker must do with the hostile connection.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Close it (a refusing CONNACK or a v5 DISCONNECT may come first; a v5
    /// DISCONNECT must carry an error reason).
    Closed,
    /// v5: DISCONNECT with exactly this reason, then close.
    Disconnect(u8),
    /// CONNACK with this (refusal) reason, then close.
    ConnAck(u8),
}

/// How the hostile connection starts before its bytes are sent.
#[derive(Debug, Clone, Copy)]
enum Start {
    /// Nothing: the bytes are the first thing on the socket.
    Raw,
    /// After a successful CONNECT at this version.
    Connected(ProtocolVersion),
}

struct Case {
    name: &'static str,
    start: Start,
    bytes: Vec<u8>,
    /// Half-close after sending (a packet truncated by the peer going away).
    then_eof: bool,
    expect: Expect,
}

fn case(name: &'static str, start: Start, bytes: Vec<u8>, expect: Expect) -> Case {
    Case {
        name,
        start,
        bytes,
        then_eof: false,
        expect,
    }
}

const V4: Start = Start::Connected(ProtocolVersion::V311);
const V5: Start = Start::Connected(ProtocolVersion::V5);

/// A packet with the given first byte and body (remaining length encoded).
fn pkt(first: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![first];
    let mut n = body.len();
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        v.push(b);
        if n == 0 {
            break;
        }
    }
    v.extend_from_slice(body);
    v
}

/// A length-prefixed string or binary field.
fn s(bytes: &[u8]) -> Vec<u8> {
    let mut v = (bytes.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(bytes);
    v
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// A CONNECT: protocol "MQTT", `level`, `flags`, keep-alive 60, `props` (v5 only,
/// already length-prefixed), client id `id`, then `rest` of the payload.
fn connect(level: u8, flags: u8, props: &[u8], id: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut body = cat(&[&s(b"MQTT"), &[level, flags, 0, 60]]);
    if level == 5 {
        body.extend_from_slice(props);
    }
    body.extend_from_slice(&s(id));
    body.extend_from_slice(rest);
    pkt(0x10, &body)
}

/// A v3.1.1 PUBLISH QoS 0 with this raw topic field.
fn publish_v4(first: u8, topic: &[u8], tail: &[u8]) -> Vec<u8> {
    pkt(first, &cat(&[&s(topic), tail]))
}

/// A v5 PUBLISH QoS 0 with `props` (length-prefixed) and payload "x".
fn publish_v5(topic: &[u8], props: &[u8]) -> Vec<u8> {
    pkt(0x30, &cat(&[&s(topic), props, b"x"]))
}

fn pre_connect_cases() -> Vec<Case> {
    use Expect::*;
    use Start::Raw;
    let valid = connect(4, 0x02, &[], b"x", &[]);
    let mut truncated = case(
        "connect truncated then EOF",
        Raw,
        valid[..9].to_vec(),
        Closed,
    );
    truncated.then_eof = true;
    vec![
        // [MQTT-3.1.0-1] The first packet from the client MUST be CONNECT.
        case(
            "PUBLISH before CONNECT",
            Raw,
            publish_v4(0x30, b"a", b"x"),
            Closed,
        ),
        case("PINGREQ before CONNECT", Raw, vec![0xC0, 0], Closed),
        case(
            "SUBSCRIBE before CONNECT",
            Raw,
            pkt(0x82, &cat(&[&[0, 1], &s(b"a"), &[0]])),
            Closed,
        ),
        case("packet type 0", Raw, vec![0x00, 0x00], Closed),
        case(
            "packet type 15 before CONNECT",
            Raw,
            vec![0xF0, 0x00],
            Closed,
        ),
        case(
            "HTTP request",
            Raw,
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            Closed,
        ),
        // [MQTT-3.1.2-1] a wrong protocol name: the server MAY disconnect.
        case(
            "protocol name MQTX",
            Raw,
            pkt(0x10, &cat(&[&s(b"MQTX"), &[4, 2, 0, 60], &s(b"x")])),
            Closed,
        ),
        // [MQTT-3.1.2-2] unsupported level: CONNACK 0x01 (decoded as 0x84), then close.
        case(
            "protocol level 0",
            Raw,
            connect(0, 0x02, &[], b"x", &[]),
            ConnAck(0x84),
        ),
        // [MQTT-3.1.2-3] the reserved CONNECT flag MUST be 0.
        case(
            "CONNECT reserved flag",
            Raw,
            connect(4, 0x03, &[], b"x", &[]),
            Closed,
        ),
        // [MQTT-3.1.2-11] will QoS MUST be 0 when the will flag is 0.
        case(
            "will QoS without will flag",
            Raw,
            connect(4, 0x0A, &[], b"x", &[]),
            Closed,
        ),
        // [MQTT-3.1.2-14] will QoS 3.
        case(
            "will QoS 3",
            Raw,
            connect(4, 0x1E, &[], b"x", &cat(&[&s(b"w"), &s(b"m")])),
            Closed,
        ),
        // [MQTT-3.1.2-15] will retain MUST be 0 when the will flag is 0.
        case(
            "will retain without will flag",
            Raw,
            connect(4, 0x22, &[], b"x", &[]),
            Closed,
        ),
        // [MQTT-3.1.2-22] 3.1.1: a password without a user name.
        case(
            "password without user name",
            Raw,
            connect(4, 0x42, &[], b"x", &s(b"pw")),
            Closed,
        ),
        // [MQTT-1.5.3-1] ill-formed UTF-8 in the client id.
        case(
            "client id invalid UTF-8",
            Raw,
            connect(4, 0x02, &[], &[0xC3, 0x28], &[]),
            Closed,
        ),
        // [MQTT-1.5.3-2] U+0000 in the client id.
        case(
            "client id with U+0000",
            Raw,
            connect(4, 0x02, &[], b"a\0b", &[]),
            Closed,
        ),
        // [MQTT-1.5.3-1] an encoded surrogate.
        case(
            "client id with a surrogate",
            Raw,
            connect(4, 0x02, &[], &[0xED, 0xA0, 0x80], &[]),
            Closed,
        ),
        case(
            "user name invalid UTF-8",
            Raw,
            connect(4, 0x82, &[], b"x", &s(&[0xC3, 0x28])),
            Closed,
        ),
        truncated,
        // [MQTT-1.5.5] a variable byte integer is at most four bytes.
        case(
            "CONNECT remaining length of 5 bytes",
            Raw,
            vec![0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            Closed,
        ),
        case(
            "CONNECT with trailing bytes",
            Raw,
            pkt(0x10, &cat(&[&s(b"MQTT"), &[4, 2, 0, 60], &s(b"x"), b"zz"])),
            Closed,
        ),
        // 2.2.2.2: an unknown property identifier is malformed.
        case(
            "v5 CONNECT unknown property",
            Raw,
            connect(5, 0x02, &[2, 0x7F, 0], b"x", &[]),
            Closed,
        ),
        // [MQTT-2.2.2-?] a property that may appear once, twice.
        case(
            "v5 CONNECT duplicate session expiry",
            Raw,
            connect(
                5,
                0x02,
                &[10, 0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2],
                b"x",
                &[],
            ),
            Closed,
        ),
        // Topic Alias (0x23) may not appear in CONNECT.
        case(
            "v5 CONNECT with a PUBLISH-only property",
            Raw,
            connect(5, 0x02, &[3, 0x23, 0, 1], b"x", &[]),
            Closed,
        ),
        // 3.1.2.11.3: a Receive Maximum of 0 is a protocol error.
        case(
            "v5 CONNECT receive maximum 0",
            Raw,
            connect(5, 0x02, &[3, 0x21, 0, 0], b"x", &[]),
            Closed,
        ),
        // 3.1.2.11.4: a Maximum Packet Size of 0 is a protocol error.
        case(
            "v5 CONNECT maximum packet size 0",
            Raw,
            connect(5, 0x02, &[5, 0x27, 0, 0, 0, 0], b"x", &[]),
            Closed,
        ),
    ]
}

fn v4_cases() -> Vec<Case> {
    use Expect::*;
    let mut truncated = case(
        "PUBLISH truncated then EOF",
        V4,
        vec![0x30, 20, 0, 3, b'a'],
        Closed,
    );
    truncated.then_eof = true;
    vec![
        case(
            "remaining length of 5 bytes",
            V4,
            vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            Closed,
        ),
        // [MQTT-3.3.1-4] QoS 3.
        case(
            "PUBLISH QoS 3",
            V4,
            publish_v4(0x36, b"a", &[0, 1, b'x']),
            Closed,
        ),
        // [MQTT-3.3.1-2] DUP MUST be 0 for QoS 0.
        case(
            "PUBLISH QoS 0 with DUP",
            V4,
            publish_v4(0x38, b"a", b"x"),
            Closed,
        ),
        // [MQTT-3.3.2-2] no wildcards in a topic name.
        case("PUBLISH to a/+", V4, publish_v4(0x30, b"a/+", b"x"), Closed),
        case("PUBLISH to #", V4, publish_v4(0x30, b"#", b"x"), Closed),
        // [MQTT-4.7.3-1] topic names are at least one character.
        case(
            "PUBLISH empty topic",
            V4,
            publish_v4(0x30, b"", b"x"),
            Closed,
        ),
        case(
            "PUBLISH topic invalid UTF-8",
            V4,
            publish_v4(0x30, &[b'a', 0xFF], b"x"),
            Closed,
        ),
        case(
            "PUBLISH topic with U+0000",
            V4,
            publish_v4(0x30, b"a\0b", b"x"),
            Closed,
        ),
        // [MQTT-2.3.1-1] QoS > 0 needs a non-zero packet identifier.
        case(
            "PUBLISH QoS 1 packet id 0",
            V4,
            publish_v4(0x32, b"a", &[0, 0, b'x']),
            Closed,
        ),
        case(
            "SUBSCRIBE packet id 0",
            V4,
            pkt(0x82, &cat(&[&[0, 0], &s(b"a"), &[0]])),
            Closed,
        ),
        // [MQTT-3.8.3-3] at least one filter.
        case("SUBSCRIBE without filters", V4, pkt(0x82, &[0, 1]), Closed),
        // [MQTT-3.8.1-1] SUBSCRIBE flags are 0010.
        case(
            "SUBSCRIBE flags 0000",
            V4,
            pkt(0x80, &cat(&[&[0, 1], &s(b"a"), &[0]])),
            Closed,
        ),
        // [MQTT-3.8.3-4] requested QoS 3.
        case(
            "SUBSCRIBE QoS 3",
            V4,
            pkt(0x82, &cat(&[&[0, 1], &s(b"a"), &[3]])),
            Closed,
        ),
        // [MQTT-4.7.1-2] # is last and alone.
        case(
            "SUBSCRIBE a/#/b",
            V4,
            pkt(0x82, &cat(&[&[0, 1], &s(b"a/#/b"), &[0]])),
            Closed,
        ),
        // [MQTT-4.7.1-3] + occupies a whole level.
        case(
            "SUBSCRIBE a+",
            V4,
            pkt(0x82, &cat(&[&[0, 1], &s(b"a+"), &[0]])),
            Closed,
        ),
        // [MQTT-3.10.3-2] UNSUBSCRIBE with no filter.
        case(
            "UNSUBSCRIBE without filters",
            V4,
            pkt(0xA2, &[0, 1]),
            Closed,
        ),
        // [MQTT-3.10.1-1] UNSUBSCRIBE flags are 0010.
        case(
            "UNSUBSCRIBE flags 0000",
            V4,
            pkt(0xA0, &cat(&[&[0, 1], &s(b"a")])),
            Closed,
        ),
        // [MQTT-3.6.1-1] PUBREL flags are 0010.
        case("PUBREL flags 0000", V4, vec![0x60, 2, 0, 1], Closed),
        // [MQTT-2.2.2-2] reserved flags of PINGREQ.
        case("PINGREQ flags 0001", V4, vec![0xC1, 0], Closed),
        case("PINGREQ with a body", V4, vec![0xC0, 1, 0], Closed),
        case(
            "DISCONNECT with a body (3.1.1)",
            V4,
            vec![0xE0, 1, 0],
            Closed,
        ),
        case("packet type 0 after CONNECT", V4, vec![0x00, 0x00], Closed),
        // AUTH (15) does not exist before MQTT 5.
        case("AUTH in 3.1.1", V4, vec![0xF0, 0x00], Closed),
        // [MQTT-3.1.0-2] a second CONNECT is a protocol violation.
        case(
            "second CONNECT",
            V4,
            connect(4, 0x02, &[], b"again", &[]),
            Closed,
        ),
        // Server-to-client packets sent by a client.
        case("CONNACK from a client", V4, vec![0x20, 2, 0, 0], Closed),
        case("SUBACK from a client", V4, vec![0x90, 3, 0, 1, 0], Closed),
        case("UNSUBACK from a client", V4, vec![0xB0, 2, 0, 1], Closed),
        case("PINGRESP from a client", V4, vec![0xD0, 0], Closed),
        // The broker's max_packet_size (1024 in these tests), from the header alone.
        case(
            "PUBLISH over max_packet_size",
            V4,
            vec![0x30, 0xD0, 0x0F],
            Closed,
        ),
        truncated,
    ]
}

fn v5_cases() -> Vec<Case> {
    use Expect::*;
    vec![
        // [MQTT-1.5.5-1] malformed variable byte integer: 0x81.
        case(
            "v5 remaining length of 5 bytes",
            V5,
            vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            Disconnect(0x81),
        ),
        // [MQTT-3.2.2-15] a packet over the announced maximum: 0x95.
        case(
            "v5 PUBLISH over max_packet_size",
            V5,
            vec![0x30, 0xD0, 0x0F],
            Disconnect(0x95),
        ),
        case(
            "v5 PUBLISH QoS 3",
            V5,
            pkt(0x36, &cat(&[&s(b"a"), &[0, 1, 0], b"x"])),
            Disconnect(0x81),
        ),
        // 3.3.2.1: a wildcard in a topic name: 0x90 Topic Name invalid.
        case(
            "v5 PUBLISH to a/+",
            V5,
            publish_v5(b"a/+", &[0]),
            Disconnect(0x90),
        ),
        // [MQTT-3.3.2-?] empty topic and no Topic Alias: protocol error.
        case(
            "v5 PUBLISH empty topic, no alias",
            V5,
            publish_v5(b"", &[0]),
            Closed,
        ),
        // Session Expiry Interval may not appear in PUBLISH.
        case(
            "v5 PUBLISH with a CONNECT-only property",
            V5,
            publish_v5(b"a", &[5, 0x11, 0, 0, 0, 1]),
            Closed,
        ),
        case(
            "v5 PUBLISH duplicate payload format",
            V5,
            publish_v5(b"a", &[4, 0x01, 0, 0x01, 0]),
            Closed,
        ),
        case(
            "v5 PUBLISH unknown property",
            V5,
            publish_v5(b"a", &[2, 0x7F, 0]),
            Closed,
        ),
        // Property length longer than the packet.
        case(
            "v5 PUBLISH property length overrun",
            V5,
            publish_v5(b"a", &[50, 0x01]),
            Closed,
        ),
        // [MQTT-3.3.2-8] Topic Alias 0 is a protocol error; over the maximum: 0x94.
        case(
            "v5 PUBLISH topic alias 0",
            V5,
            publish_v5(b"a", &[3, 0x23, 0, 0]),
            Closed,
        ),
        case(
            "v5 PUBLISH topic alias over the maximum",
            V5,
            publish_v5(b"a", &[3, 0x23, 0xFF, 0xFF]),
            Closed,
        ),
        // [MQTT-3.8.3-5] reserved bits of the subscription options.
        case(
            "v5 SUBSCRIBE reserved option bits",
            V5,
            pkt(0x82, &cat(&[&[0, 1, 0], &s(b"a"), &[0xC0]])),
            Disconnect(0x81),
        ),
        // Retain Handling 3 is malformed.
        case(
            "v5 SUBSCRIBE retain handling 3",
            V5,
            pkt(0x82, &cat(&[&[0, 1, 0], &s(b"a"), &[0x30]])),
            Disconnect(0x81),
        ),
        // [MQTT-3.14.2-?] a DISCONNECT reason a client may not send is malformed.
        case(
            "v5 DISCONNECT invalid reason",
            V5,
            vec![0xE0, 1, 0x03],
            Closed,
        ),
        case(
            "v5 second CONNECT",
            V5,
            connect(5, 0x02, &[0], b"again", &[]),
            Closed,
        ),
    ]
}

/// Read what the broker sends on `c` until it closes; check it against `expect`.
fn check_closed(c: &mut Client, expect: Expect) -> Result<(), String> {
    let mut seen = Vec::new();
    loop {
        match c.try_recv(TIMEOUT) {
            None => return Err(format!("not closed within {TIMEOUT:?}; got {seen:?}")),
            Some(Err(_)) => break,
            Some(Ok(p)) => seen.push(p),
        }
    }
    let (connacks, disconnects): (Vec<_>, Vec<_>) = seen
        .iter()
        .filter_map(|p| match p {
            Packet::ConnAck(a) => Some((Some(a.reason.0), None)),
            Packet::Disconnect(d) => Some((None, Some(d.reason.0))),
            _ => None,
        })
        .unzip();
    let connack = connacks.into_iter().flatten().next();
    let disconnect = disconnects.into_iter().flatten().next();
    let others = seen
        .iter()
        .filter(|p| !matches!(p, Packet::ConnAck(_) | Packet::Disconnect(_)))
        .count();
    if others > 0 {
        return Err(format!("unexpected packets before the close: {seen:?}"));
    }
    match expect {
        Expect::Closed => {
            if connack.is_some_and(|r| r == 0) {
                return Err("got a successful CONNACK".into());
            }
            if disconnect.is_some_and(|r| r < 0x80) {
                return Err(format!("DISCONNECT with non-error reason {disconnect:?}"));
            }
        }
        Expect::Disconnect(want) => {
            if disconnect != Some(want) {
                return Err(format!("wanted DISCONNECT 0x{want:02X}, got {seen:?}"));
            }
        }
        Expect::ConnAck(want) => {
            if connack != Some(want) {
                return Err(format!("wanted CONNACK 0x{want:02X}, got {seen:?}"));
            }
        }
    }
    Ok(())
}

/// Run every case against one broker with a bystander pair; report all failures.
fn run_cases(cases: Vec<Case>) {
    assert!(!cases.is_empty());
    let mut b = BrokerProcess::start("max_packet_size 1024");
    let mut sub = Client::connect(b.port, "bystander-sub");
    sub.subscribe("bystander/#", QoS::AtLeastOnce);
    let mut publ = Client::connect_v(b.port, ProtocolVersion::V5, "bystander-pub");
    let mut failures = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let version = match c.start {
            Start::Raw => ProtocolVersion::V311,
            Start::Connected(v) => v,
        };
        let mut hostile = match c.start {
            Start::Raw => Client::open(b.port, version),
            Start::Connected(v) => Client::connect_v(b.port, v, &format!("hostile-{i}")),
        };
        hostile.send_raw(&c.bytes);
        if c.then_eof {
            hostile.shutdown_write();
        }
        if let Err(e) = check_closed(&mut hostile, c.expect) {
            failures.push(format!("{}: {e}", c.name));
        }
        // (b) the bystanders lose nothing.
        let pid = (i + 1) as u16;
        publ.publish(
            "bystander/t",
            c.name.as_bytes(),
            QoS::AtLeastOnce,
            false,
            pid,
        );
        match sub.try_recv(TIMEOUT) {
            Some(Ok(Packet::Publish(p))) if p.payload == c.name.as_bytes() => sub.ack(&p),
            other => failures.push(format!("{}: bystander got {other:?}", c.name)),
        }
        // (c) the broker is alive.
        assert!(
            b.is_alive(),
            "broker died on case {}; log:\n{}",
            c.name,
            b.log_text()
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn hostile_bytes_before_connect() {
    run_cases(pre_connect_cases());
}

#[test]
fn hostile_packets_from_a_311_client() {
    run_cases(v4_cases());
}

#[test]
fn hostile_packets_from_a_v5_client() {
    run_cases(v5_cases());
}

#[test]
fn there_are_at_least_fifty_cases() {
    let n = pre_connect_cases().len() + v4_cases().len() + v5_cases().len();
    assert!(n >= 50, "only {n} hostile cases");
}

/// [MQTT-4.13.1-?] v5: PUBREL for an unknown packet id is answered with PUBCOMP
/// 0x92 (Packet Identifier not found); the connection stays up.
#[test]
fn v5_pubrel_for_unknown_id_gets_0x92() {
    let b = BrokerProcess::start("");
    let mut c = Client::connect_v(b.port, ProtocolVersion::V5, "pubrel-unknown");
    c.send_raw(&[0x62, 2, 0x12, 0x34]);
    match c.recv() {
        Packet::PubComp(r) => {
            assert_eq!(r.packet_id, 0x1234);
            assert_eq!(r.reason, ReasonCode(0x92));
        }
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    c.ping();
}

/// A socket that never sends CONNECT is closed by the CONNECT timeout, and one
/// that trickles a CONNECT a byte at a time does not keep its slot forever.
#[test]
fn silent_socket_is_closed_by_the_connect_timeout() {
    let b = BrokerProcess::start("");
    let mut c = Client::open(b.port, ProtocolVersion::V311);
    // The connect timeout is 10 s; allow for it.
    match c.try_recv(Duration::from_secs(15)) {
        Some(Err(_)) => {}
        other => panic!("expected the broker to close a silent socket, got {other:?}"),
    }
}
