//! Limits that keep one bad client from hurting the others: a subscriber that
//! stops reading, slowloris CONNECTs, deep topics, too many subscriptions.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use midge::protocol::{Packet, ProtocolVersion, QoS, ReasonCode};

fn rss_kb(pid: u32) -> u64 {
    proc_status_kb(pid, "VmRSS:")
}

/// One subscriber stops reading while a publisher sends 100,000 QoS 0 and QoS 1
/// messages: the broker's memory stays bounded, a fast subscriber gets every
/// message, and the log says what was dropped for the slow one.
#[test]
fn a_stopped_subscriber_costs_bounded_memory_and_nobody_else_loses() {
    const N: usize = 100_000;
    let b = BrokerProcess::start("max_queued_messages 1000");
    let rss_before = rss_kb(b.pid());

    // The slow one subscribes, then never reads again.
    let mut slow = Client::connect(b.port, "slow");
    slow.subscribe("flood/#", QoS::AtLeastOnce);

    let mut fast = Client::connect(b.port, "fast");
    fast.subscribe("flood/#", QoS::AtLeastOnce);
    let (progress_tx, progress) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || fast_reader(fast.into_stream(), N, progress_tx));
    let mut delivered = 0usize;

    // Pipelined publisher: half QoS 0, half QoS 1 with up to 100 unacknowledged.
    let mut publ = Client::connect(b.port, "flooder");
    let payload = [0x5Au8; 64];
    let mut unacked = 0usize;
    let mut pid: u16 = 0;
    for i in 0..N {
        let qos = if i % 2 == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        if qos == QoS::AtLeastOnce {
            pid = pid % 60_000 + 1;
            unacked += 1;
        }
        publ.send(&Packet::Publish(publish(
            "flood/t", &payload, qos, false, pid,
        )));
        // The fast subscriber keeps up: the publisher never runs more than 500
        // messages ahead of it (otherwise it would be the slow one).
        while i + 1 > delivered + 500 {
            delivered = progress
                .recv_timeout(TIMEOUT)
                .expect("the fast subscriber stalled");
        }
        while unacked >= 100 {
            match publ.recv() {
                Packet::PubAck(_) => unacked -= 1,
                other => panic!("expected PUBACK, got {other:?}"),
            }
        }
    }
    while unacked > 0 {
        match publ.recv() {
            Packet::PubAck(_) => unacked -= 1,
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    let got = reader.join().expect("reader thread");
    assert_eq!(got, N, "the fast subscriber got every message");
    let rss_after = rss_kb(b.pid());
    eprintln!("broker RSS {rss_before} kB before, {rss_after} kB after the flood");
    // What the slow subscriber can pin: 1 MiB of QoS 0 output, 20 in flight and
    // 1000 queued QoS 1 messages, plus the kernel's share. Far below the 100,000
    // x 64 B payload (6.4 MB) plus per-message overhead it would cost unbounded.
    assert!(
        rss_after < rss_before + 16 * 1024,
        "RSS grew from {rss_before} kB to {rss_after} kB"
    );
    b.wait_log("Outgoing messages are being dropped for client slow");
    drop(slow);
}

/// Read PUBLISHes as fast as the socket gives them, acknowledging QoS 1 in one
/// write per read (a client that keeps up); returns how many arrived.
fn fast_reader(mut stream: TcpStream, n: usize, progress: std::sync::mpsc::Sender<usize>) -> usize {
    use midge::protocol::{decode, encode, DecodeLimits, Decoded, PubResp};
    use std::io::Write;
    let limits = DecodeLimits::new(ProtocolVersion::V311, 1 << 20);
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    let mut acks = Vec::new();
    let mut got = 0;
    while got < n {
        let Ok(k) = stream.read(&mut chunk) else {
            break;
        };
        if k == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..k]);
        let mut pos = 0;
        while let Ok(Decoded::Packet(p, used)) = decode(&buf[pos..], &limits) {
            if let Packet::Publish(p) = p {
                got += 1;
                if p.qos == QoS::AtLeastOnce {
                    let ack = Packet::PubAck(PubResp::success(p.packet_id));
                    encode(&ack, ProtocolVersion::V311, &mut acks).expect("encode");
                }
            }
            pos += used;
        }
        buf.drain(..pos);
        if !acks.is_empty() {
            stream.write_all(&acks).expect("ack");
            acks.clear();
        }
        let _ = progress.send(got);
    }
    got
}

/// A CONNECT trickled one byte a second never completes: the CONNECT timeout
/// closes the socket anyway (bytes arriving do not extend it).
#[test]
fn slowloris_connect_is_cut_by_the_connect_timeout() {
    let b = BrokerProcess::start("connect_timeout 2");
    let mut s = TcpStream::connect(("127.0.0.1", b.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(900)))
        .expect("timeout");
    let connect = [
        0x10u8, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 1, b'x',
    ];
    let start = Instant::now();
    use std::io::Write;
    for byte in &connect[..connect.len() - 1] {
        if s.write_all(&[*byte]).is_err() {
            break;
        }
        // One byte per 900 ms read timeout: a read that returns 0 is the close.
        let mut buf = [0u8; 16];
        match s.read(&mut buf) {
            Ok(0) => {
                let took = start.elapsed();
                assert!(took >= Duration::from_secs(2), "closed too early: {took:?}");
                return;
            }
            Ok(_) => panic!("the broker answered an incomplete CONNECT"),
            Err(_) => {}
        }
    }
    panic!("the trickling socket was not closed");
}

/// Topics deeper than max_topic_levels: a filter is refused in SUBACK (0x8F for
/// v5), a PUBLISH closes the connection (v5: DISCONNECT 0x90).
#[test]
fn deep_topics_are_refused() {
    let b = BrokerProcess::start("max_topic_levels 4");
    let mut c = Client::connect_v(b.port, ProtocolVersion::V5, "deep");
    assert_eq!(
        c.subscribe("a/b/c/d/e", QoS::AtMostOnce),
        vec![ReasonCode::TOPIC_FILTER_INVALID]
    );
    assert_eq!(
        c.subscribe("a/b/c/d", QoS::AtMostOnce),
        vec![ReasonCode::GRANTED_QOS_0]
    );
    c.send(&Packet::Publish(publish(
        "a/b/c/d/e",
        b"x",
        QoS::AtMostOnce,
        false,
        0,
    )));
    let d = c.expect_closed().expect("DISCONNECT");
    assert_eq!(d.reason, ReasonCode::TOPIC_NAME_INVALID);
}

/// max_subscriptions_per_client: the next one gets 0x97 (3.1.1: 0x80); replacing
/// an existing one is fine.
#[test]
fn subscriptions_per_client_are_capped() {
    let b = BrokerProcess::start("max_subscriptions_per_client 2");
    let mut c = Client::connect_v(b.port, ProtocolVersion::V5, "many");
    c.subscribe("s/1", QoS::AtMostOnce);
    c.subscribe("s/2", QoS::AtMostOnce);
    assert_eq!(
        c.subscribe("s/3", QoS::AtMostOnce),
        vec![ReasonCode::QUOTA_EXCEEDED]
    );
    assert_eq!(
        c.subscribe("s/2", QoS::AtLeastOnce),
        vec![ReasonCode::GRANTED_QOS_1]
    );
    let mut old = Client::connect(b.port, "many-311");
    old.subscribe("s/1", QoS::AtMostOnce);
    old.subscribe("s/2", QoS::AtMostOnce);
    assert_eq!(
        old.subscribe("s/3", QoS::AtMostOnce),
        vec![ReasonCode(0x80)]
    );
}

/// max_connections: the socket beyond the limit is closed at once; the others
/// keep working.
#[test]
fn max_connections_refuses_the_extra_socket() {
    let b = BrokerProcess::start("max_connections 2");
    let mut one = Client::connect(b.port, "one");
    let _two = Client::connect(b.port, "two");
    let mut three = Client::open(b.port, ProtocolVersion::V311);
    match three.try_recv(TIMEOUT) {
        Some(Err(_)) => {}
        other => panic!("expected the third socket closed, got {other:?}"),
    }
    one.ping();
}

/// message_size_limit: the payload is dropped and a v5 publisher is told 0x97
/// (3.4.2.1 does not allow 0x95 in PUBACK); nothing is delivered.
#[test]
fn message_size_limit_drops_with_0x97() {
    let b = BrokerProcess::start("message_size_limit 10");
    let mut s = Client::connect(b.port, "msl-sub");
    s.subscribe("msl", QoS::AtLeastOnce);
    let mut p = Client::connect_v(b.port, ProtocolVersion::V5, "msl-pub");
    p.send(&Packet::Publish(publish(
        "msl",
        &[0u8; 11],
        QoS::AtLeastOnce,
        false,
        1,
    )));
    match p.recv() {
        Packet::PubAck(a) => assert_eq!(a.reason, ReasonCode::QUOTA_EXCEEDED),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    p.publish("msl", &[0u8; 10], QoS::AtLeastOnce, false, 2);
    assert_eq!(
        s.recv_publish().payload.len(),
        10,
        "the one within the limit"
    );
}

/// [MQTT-3.1.2-24] a CONNACK never exceeds the client's Maximum Packet Size: its
/// optional properties are left out when they would not fit.
#[test]
fn connack_fits_a_tiny_client_maximum_packet_size() {
    use midge::protocol::{Connect, Properties};
    let b = BrokerProcess::start("");
    let mut c = Client::open(b.port, ProtocolVersion::V5);
    c.send(&Packet::Connect(Box::new(Connect {
        version: ProtocolVersion::V5,
        clean_start: true,
        keep_alive: 60,
        properties: Properties {
            maximum_packet_size: Some(8),
            ..Properties::default()
        },
        client_id: "",
        will: None,
        username: None,
        password: None,
    })));
    match c.recv() {
        Packet::ConnAck(a) => {
            assert_eq!(a.reason, ReasonCode::SUCCESS);
            assert!(a.properties.is_empty(), "{a:?}");
        }
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

/// `memory_limit`: with the heap over it (here 1 byte, so always), a v5 QoS 1
/// publish is refused with 0x97 and not delivered, a QoS 0 one is dropped and
/// logged, and the publisher stays connected; a 3.1.1 QoS 1 publisher, which
/// cannot be told no, is disconnected.
#[test]
fn memory_limit_refuses_qos1_and_drops_qos0() {
    let b = BrokerProcess::start("memory_limit 1");
    b.wait_log("Memory limit: 1 bytes of heap");
    let mut s = Client::connect(b.port, "ml-sub");
    s.subscribe("ml", QoS::AtLeastOnce);
    let mut p = Client::connect_v(b.port, ProtocolVersion::V5, "ml-pub");
    p.send(&Packet::Publish(publish(
        "ml",
        b"x",
        QoS::AtLeastOnce,
        false,
        1,
    )));
    match p.recv() {
        Packet::PubAck(a) => assert_eq!(a.reason, ReasonCode::QUOTA_EXCEEDED),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    b.wait_log("Refusing QoS 1 PUBLISH from ml-pub: memory_limit reached");
    p.publish("ml", b"y", QoS::AtMostOnce, false, 0);
    // PINGRESP comes after the broker has handled the QoS 0 PUBLISH.
    p.ping();
    b.wait_log("Dropping QoS 0 PUBLISH from ml-pub: memory_limit reached");
    s.expect_nothing(Duration::from_millis(200));
    let mut v3 = Client::connect(b.port, "ml-v3");
    v3.send(&Packet::Publish(publish(
        "ml",
        b"z",
        QoS::AtLeastOnce,
        false,
        1,
    )));
    assert!(v3.expect_closed().is_none(), "3.1.1: closed, no DISCONNECT");
}
