//! Unit tests of the retained store limits, the will topic limit and the paced
//! retained replay, through an [`Output`] whose sockets drain only when told to.

use std::collections::HashMap;
use std::time::Instant;

use super::*;
use crate::protocol::{
    encode, ConnAck, Connect, Properties, PubResp, Publish, QoS, Subscribe, SubscriptionOptions,
    Will,
};

/// Records packets (as debug text) and counts the bytes each connection's
/// "socket" holds until [`Sockets::drain`].
#[derive(Default)]
struct Sockets {
    sent: Vec<(ConnId, String)>,
    pending: HashMap<ConnId, usize>,
    closed: Vec<ConnId>,
}

impl Output for Sockets {
    fn send(&mut self, conn: ConnId, version: ProtocolVersion, packet: &Packet<'_>) {
        let mut buf = Vec::new();
        encode(packet, version, &mut buf).expect("encodable");
        *self.pending.entry(conn).or_default() += buf.len();
        self.sent.push((conn, format!("{packet:?}")));
    }
    fn pending_bytes(&self, conn: ConnId) -> usize {
        self.pending.get(&conn).copied().unwrap_or(0)
    }
    fn close(&mut self, conn: ConnId) {
        self.closed.push(conn);
    }
    fn set_timer(&mut self, _: Instant, _: Timer) {}
    fn send_after_commit(&mut self, conn: ConnId, version: ProtocolVersion, packet: &Packet<'_>) {
        self.send(conn, version, packet);
    }
    fn request_load(&mut self, _: super::Load) {}
}

impl Sockets {
    fn take(&mut self, conn: ConnId) -> Vec<String> {
        let (mine, rest) = std::mem::take(&mut self.sent)
            .into_iter()
            .partition(|(c, _)| *c == conn);
        self.sent = rest;
        mine.into_iter().map(|(_, d)| d).collect()
    }
    /// The peer read everything.
    fn drain(&mut self, conn: ConnId) {
        self.pending.insert(conn, 0);
    }
}

fn connect(b: &mut Broker, o: &mut Sockets, conn: ConnId, id: &str, version: ProtocolVersion) {
    let now = Instant::now();
    b.connection_opened(now, conn, "127.0.0.1:1", 0, o);
    let p = Packet::Connect(Box::new(Connect {
        version,
        clean_start: true,
        keep_alive: 60,
        properties: Properties::default(),
        client_id: id,
        will: None,
        username: None,
        password: None,
    }));
    b.handle_packet(now, conn, &p, o);
    let got = o.take(conn);
    assert!(got[0].starts_with("ConnAck"), "{got:?}");
    o.drain(conn);
}

fn publish<'a>(topic: &'a str, payload: &'a [u8], qos: QoS, retain: bool) -> Packet<'a> {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain,
        topic,
        packet_id: if qos == QoS::AtMostOnce { 0 } else { 9 },
        properties: Properties::default(),
        payload,
    })
}

fn subscribe<'a>(filters: &[(&'a str, QoS)]) -> Packet<'a> {
    Packet::Subscribe(Subscribe {
        packet_id: 1,
        properties: Properties::default(),
        filters: filters
            .iter()
            .map(|&(f, qos)| {
                (
                    f,
                    SubscriptionOptions {
                        qos,
                        ..Default::default()
                    },
                )
            })
            .collect(),
    })
}

/// A broker holding `n` retained QoS 0 messages `r/00000`... published by conn 9.
fn with_retained(config: BrokerConfig, n: usize) -> (Broker, Sockets) {
    let mut b = Broker::new(config);
    let mut o = Sockets::default();
    connect(&mut b, &mut o, 9, "publisher", ProtocolVersion::V311);
    for i in 0..n {
        let topic = format!("r/{i:05}");
        b.handle_packet(
            Instant::now(),
            9,
            &publish(&topic, b"payload", QoS::AtMostOnce, true),
            &mut o,
        );
    }
    assert_eq!(b.retained_count(), n);
    (b, o)
}

/// The topics of the PUBLISHes in `packets`.
fn topics(packets: &[String]) -> Vec<String> {
    packets
        .iter()
        .filter(|p| p.starts_with("Publish"))
        .filter_map(|p| {
            p.split("topic: \"")
                .nth(1)?
                .split('"')
                .next()
                .map(String::from)
        })
        .collect()
}

#[test]
fn duplicate_filters_in_one_subscribe_are_handled_once_the_last_winning() {
    let (mut b, mut o) = with_retained(BrokerConfig::default(), 3);
    connect(&mut b, &mut o, 1, "sub", ProtocolVersion::V5);
    let mut filters = vec![("#", QoS::AtMostOnce); 20_000];
    filters.push(("r/+", QoS::AtMostOnce));
    filters.push(("#", QoS::AtLeastOnce));
    b.handle_packet(Instant::now(), 1, &subscribe(&filters), &mut o);
    let got = o.take(1);
    // One reason per filter [MQTT-3.8.4-6]; the repeats get the last one's (QoS 1).
    let suback = &got[0];
    assert!(suback.starts_with("SubAck"), "{suback:?}");
    assert_eq!(
        suback.matches("ReasonCode(1)").count(),
        20_001,
        "{}",
        &suback[..200]
    );
    assert_eq!(suback.matches("ReasonCode(0)").count(), 1);
    assert_eq!(b.subscriptions.len(), 2);
    assert_eq!(b.pending_replays(), 2, "one replay per distinct filter");
    b.check_invariants().expect("invariants");
    while b.poll_replay(Instant::now(), &mut o) {}
    // Each retained message once per distinct filter, not 20,001 times.
    let sent = topics(&o.take(1));
    assert_eq!(sent.len(), 6, "{sent:?}");
    assert_eq!(b.pending_replays(), 0);
}

#[test]
fn qos0_replay_waits_for_the_socket_and_loses_nothing() {
    let (mut b, mut o) = with_retained(BrokerConfig::default(), 50_000);
    connect(&mut b, &mut o, 1, "sub", ProtocolVersion::V311);
    b.handle_packet(
        Instant::now(),
        1,
        &subscribe(&[("r/#", QoS::AtMostOnce)]),
        &mut o,
    );
    assert_eq!(
        o.take(1).len(),
        1,
        "only the SUBACK before the server's turn ends"
    );
    o.drain(1);
    let mut received = Vec::new();
    let mut turns = 0;
    loop {
        turns += 1;
        let again = b.poll_replay(Instant::now(), &mut o);
        // Never more than the high water mark plus one message waits on the socket.
        assert!(
            o.pending_bytes(1) <= HIGH_WATER_FOR_TESTS + 64,
            "{}",
            o.pending_bytes(1)
        );
        let got = topics(&o.take(1));
        if got.is_empty() && !again {
            // Blocked or done: the peer reads and the loop turns again.
            if b.pending_replays() == 0 {
                break;
            }
        }
        received.extend(got);
        o.drain(1);
        assert!(turns < 10_000, "replay does not progress");
    }
    let want: Vec<String> = (0..50_000).map(|i| format!("r/{i:05}")).collect();
    assert_eq!(
        received, want,
        "every retained message once, in topic order"
    );
    assert_eq!(b.stats().messages_dropped, 0);
    assert!(turns > 20, "paced over turns, not sent at once ({turns})");
}

const HIGH_WATER_FOR_TESTS: usize = 64 * 1024;

#[test]
fn a_blocked_subscriber_costs_nothing_until_it_reads() {
    let (mut b, mut o) = with_retained(BrokerConfig::default(), 5_000);
    connect(&mut b, &mut o, 1, "sub", ProtocolVersion::V311);
    b.handle_packet(
        Instant::now(),
        1,
        &subscribe(&[("#", QoS::AtMostOnce)]),
        &mut o,
    );
    o.take(1);
    // The socket never drains: the replay stops at the high water mark and says
    // there is nothing to do at once (the loop may sleep).
    let mut turns = 0;
    while b.poll_replay(Instant::now(), &mut o) {
        turns += 1;
        assert!(turns < 100);
    }
    let first = o.take(1).len();
    assert!(!b.poll_replay(Instant::now(), &mut o));
    assert!(o.take(1).is_empty(), "no progress while blocked");
    assert!(first < 5_000 && first > 100, "{first}");
    assert_eq!(b.stats().messages_dropped, 0);
    // Parked: not even looked at until the server reports the socket writable.
    assert!(b.replaying.is_empty());
    o.drain(1);
    b.poll_replay(Instant::now(), &mut o);
    assert!(o.take(1).is_empty());
    b.handle_writable(1);
    b.poll_replay(Instant::now(), &mut o);
    assert!(o.take(1).len() > 100, "goes on once writable");
    // A bystander's PINGREQ is answered at once meanwhile.
    connect(&mut b, &mut o, 2, "bystander", ProtocolVersion::V311);
    b.handle_packet(Instant::now(), 2, &Packet::PingReq, &mut o);
    assert_eq!(o.take(2), ["PingResp"]);
}

#[test]
fn qos1_replay_follows_the_window_and_acks() {
    let (mut b, mut o) = with_retained(BrokerConfig::default(), 0);
    // QoS 1 retained messages.
    for i in 0..100 {
        let t = format!("q/{i:03}");
        b.handle_packet(
            Instant::now(),
            9,
            &publish(&t, b"x", QoS::AtLeastOnce, true),
            &mut o,
        );
    }
    o.take(9);
    connect(&mut b, &mut o, 1, "sub", ProtocolVersion::V311);
    b.handle_packet(
        Instant::now(),
        1,
        &subscribe(&[("q/#", QoS::AtLeastOnce)]),
        &mut o,
    );
    o.take(1);
    let mut received = 0;
    for _ in 0..1_000 {
        b.poll_replay(Instant::now(), &mut o);
        let got = o.take(1);
        o.drain(1);
        // Never beyond max_inflight_messages (20), and nothing queued or dropped.
        assert!(got.len() <= 20, "{}", got.len());
        let s = b
            .sessions
            .iter()
            .map(|(_, s)| s)
            .find(|s| &*s.client_id == "sub");
        assert!(s.is_some_and(|s| s.queue.is_empty()));
        for p in &got {
            let id: u16 = p
                .split("packet_id: ")
                .nth(1)
                .and_then(|r| r.split(',').next())
                .and_then(|n| n.parse().ok())
                .expect("packet id");
            b.handle_packet(
                Instant::now(),
                1,
                &Packet::PubAck(PubResp::success(id)),
                &mut o,
            );
        }
        received += got.len();
        if b.pending_replays() == 0 && got.is_empty() {
            break;
        }
        b.check_invariants().expect("invariants");
    }
    assert_eq!(received, 100);
    assert_eq!(b.stats().messages_dropped, 0);
}

#[test]
fn replay_skips_later_stores_and_ends_on_unsubscribe() {
    let (mut b, mut o) = with_retained(BrokerConfig::default(), 10);
    connect(&mut b, &mut o, 1, "sub", ProtocolVersion::V311);
    b.handle_packet(
        Instant::now(),
        1,
        &subscribe(&[("r/#", QoS::AtMostOnce)]),
        &mut o,
    );
    o.take(1);
    // Replaced after the SUBSCRIBE: delivered live (RETAIN 0), not replayed again.
    b.handle_packet(
        Instant::now(),
        9,
        &publish("r/00005", b"new", QoS::AtMostOnce, true),
        &mut o,
    );
    while b.poll_replay(Instant::now(), &mut o) {}
    let got = o.take(1);
    let fives: Vec<_> = got.iter().filter(|p| p.contains("r/00005")).collect();
    assert_eq!(fives.len(), 1, "{fives:?}");
    assert!(fives[0].contains("retain: false"));
    assert_eq!(topics(&got).len(), 10);

    // An UNSUBSCRIBE stops a replay still under way.
    o.pending.insert(1, 1 << 20);
    b.handle_packet(
        Instant::now(),
        1,
        &subscribe(&[("r/#", QoS::AtMostOnce)]),
        &mut o,
    );
    assert_eq!(b.pending_replays(), 1);
    let u = Packet::Unsubscribe(crate::protocol::Unsubscribe {
        packet_id: 2,
        properties: Properties::default(),
        filters: vec!["r/#"],
    });
    b.handle_packet(Instant::now(), 1, &u, &mut o);
    o.drain(1);
    o.take(1);
    b.poll_replay(Instant::now(), &mut o);
    assert!(topics(&o.take(1)).is_empty());
    assert_eq!(b.pending_replays(), 0);
}

#[test]
fn a_full_retained_store_refuses_new_topics_with_quota_exceeded() {
    let config = BrokerConfig {
        max_retained_messages: 2,
        ..BrokerConfig::default()
    };
    let mut b = Broker::new(config);
    let mut o = Sockets::default();
    connect(&mut b, &mut o, 1, "pub", ProtocolVersion::V5);
    connect(&mut b, &mut o, 2, "sub", ProtocolVersion::V311);
    b.handle_packet(
        Instant::now(),
        2,
        &subscribe(&[("#", QoS::AtMostOnce)]),
        &mut o,
    );
    o.take(2);
    let ack = |b: &mut Broker, o: &mut Sockets, topic: &str, payload: &[u8]| {
        b.handle_packet(
            Instant::now(),
            1,
            &publish(topic, payload, QoS::AtLeastOnce, true),
            o,
        );
        let got = o.take(1);
        assert_eq!(got.len(), 1, "{got:?}");
        got[0].clone()
    };
    assert!(ack(&mut b, &mut o, "a", b"1").contains("ReasonCode(0)"));
    assert!(ack(&mut b, &mut o, "b", b"1").contains("ReasonCode(0)"));
    // A third topic: refused with 0x97 and not delivered either.
    o.take(2);
    assert!(ack(&mut b, &mut o, "c", b"1").contains("ReasonCode(151)"));
    assert!(o.take(2).is_empty());
    assert_eq!(b.retained_count(), 2);
    // Replacing and clearing existing topics is still allowed.
    assert!(ack(&mut b, &mut o, "a", b"2").contains("ReasonCode(0)"));
    assert!(ack(&mut b, &mut o, "b", b"").contains("ReasonCode(0)"));
    assert_eq!(b.retained_count(), 1);
    assert!(ack(&mut b, &mut o, "c", b"1").contains("ReasonCode(0)"));
    // A non-retained message is never refused by the store.
    b.handle_packet(
        Instant::now(),
        1,
        &publish("d", b"1", QoS::AtLeastOnce, false),
        &mut o,
    );
    assert!(o.take(1)[0].contains("ReasonCode(0)"));
}

#[test]
fn retained_bytes_limit_counts_properties_and_overhead() {
    let config = BrokerConfig {
        max_retained_bytes: 2 * retained::RETAINED_OVERHEAD + 100,
        ..BrokerConfig::default()
    };
    let mut b = Broker::new(config);
    let mut o = Sockets::default();
    connect(&mut b, &mut o, 1, "pub", ProtocolVersion::V5);
    let mut p = Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: true,
        topic: "a",
        packet_id: 3,
        properties: Properties::default(),
        payload: b"0123456789",
    };
    // 1 + 10 + 128: fits (0x10: no subscribers, but retained).
    b.handle_packet(Instant::now(), 1, &Packet::Publish(p.clone()), &mut o);
    assert!(o.take(1)[0].contains("ReasonCode(16)"));
    // 1 + 10 + 100 bytes of user properties + 128: 139 + 239 > 356.
    let props: Vec<(&str, &str)> = vec![("k", "v"); 25];
    p.topic = "b";
    p.properties.user_properties = props;
    b.handle_packet(Instant::now(), 1, &Packet::Publish(p.clone()), &mut o);
    assert!(o.take(1)[0].contains("ReasonCode(151)"));
    assert_eq!(b.retained_count(), 1);
}

#[test]
fn will_topics_obey_max_topic_levels() {
    // One level past the default max_topic_levels (201, mosquitto's limit).
    let deep = "x/".repeat(201) + "x";
    for version in [ProtocolVersion::V5, ProtocolVersion::V311] {
        let mut b = Broker::new(BrokerConfig::default());
        let mut o = Sockets::default();
        b.connection_opened(Instant::now(), 1, "127.0.0.1:1", 0, &mut o);
        let will = Will {
            topic: &deep,
            payload: b"gone",
            qos: QoS::AtMostOnce,
            retain: true,
            properties: Properties::default(),
        };
        let p = Packet::Connect(Box::new(Connect {
            version,
            clean_start: true,
            keep_alive: 60,
            properties: Properties::default(),
            client_id: "w",
            will: Some(will),
            username: None,
            password: None,
        }));
        b.handle_packet(Instant::now(), 1, &p, &mut o);
        let got = o.take(1);
        if version.is_v5() {
            // 3.2.2.2: 0x90 "the Will Topic Name is not malformed, but is not
            // accepted by this Server".
            let want = format!(
                "{:?}",
                Packet::ConnAck(ConnAck {
                    session_present: false,
                    reason: ReasonCode::TOPIC_NAME_INVALID,
                    properties: Properties::default(),
                })
            );
            assert_eq!(got, [want]);
        } else {
            assert!(got.is_empty(), "3.1.1: closed without CONNACK: {got:?}");
        }
        assert_eq!(o.closed, [1]);
        assert_eq!(b.session_count(), 0);
    }
}

#[test]
fn expired_retained_messages_leave_the_store_when_a_replay_meets_them() {
    let mut b = Broker::new(BrokerConfig::default());
    let mut o = Sockets::default();
    connect(&mut b, &mut o, 9, "pub", ProtocolVersion::V5);
    let t0 = Instant::now();
    for (topic, expiry) in [("e/1", Some(1)), ("e/2", None)] {
        let p = Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: true,
            topic,
            packet_id: 0,
            properties: Properties {
                message_expiry_interval: expiry,
                ..Properties::default()
            },
            payload: b"x",
        };
        b.handle_packet(t0, 9, &Packet::Publish(p), &mut o);
    }
    assert_eq!(b.retained_count(), 2);
    connect(&mut b, &mut o, 1, "sub", ProtocolVersion::V311);
    let later = t0 + std::time::Duration::from_secs(2);
    b.handle_packet(later, 1, &subscribe(&[("e/#", QoS::AtMostOnce)]), &mut o);
    o.take(1);
    while b.poll_replay(later, &mut o) {}
    assert_eq!(topics(&o.take(1)), ["e/2"]);
    assert_eq!(b.retained_count(), 1, "the expired one is gone");
}

#[test]
fn a_persistent_session_resumes_its_replay_after_reconnecting() {
    let (mut b, mut o) = with_retained(BrokerConfig::default(), 0);
    for i in 0..100 {
        let t = format!("q/{i:03}");
        b.handle_packet(
            Instant::now(),
            9,
            &publish(&t, b"x", QoS::AtLeastOnce, true),
            &mut o,
        );
    }
    let open = |b: &mut Broker, o: &mut Sockets, conn: ConnId| {
        b.connection_opened(Instant::now(), conn, "127.0.0.1:1", 0, o);
        let p = Packet::Connect(Box::new(Connect {
            version: ProtocolVersion::V311,
            clean_start: false,
            keep_alive: 60,
            properties: Properties::default(),
            client_id: "durable-sub",
            will: None,
            username: None,
            password: None,
        }));
        b.handle_packet(Instant::now(), conn, &p, o);
    };
    open(&mut b, &mut o, 1);
    b.handle_packet(
        Instant::now(),
        1,
        &subscribe(&[("q/#", QoS::AtLeastOnce)]),
        &mut o,
    );
    b.poll_replay(Instant::now(), &mut o);
    // 20 in flight (max_inflight_messages), none acknowledged; then the link drops.
    assert_eq!(topics(&o.take(1)).len(), 20);
    b.connection_lost(Instant::now(), 1, &mut o);
    assert!(
        !b.poll_replay(Instant::now(), &mut o),
        "offline: nothing to do"
    );
    open(&mut b, &mut o, 2);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..100 {
        b.poll_replay(Instant::now(), &mut o);
        let got = o.take(2);
        o.drain(2);
        for p in got.iter().filter(|p| p.starts_with("Publish")) {
            let id: u16 = p
                .split("packet_id: ")
                .nth(1)
                .and_then(|r| r.split(',').next())
                .and_then(|n| n.parse().ok())
                .expect("packet id");
            b.handle_packet(
                Instant::now(),
                2,
                &Packet::PubAck(PubResp::success(id)),
                &mut o,
            );
        }
        seen.extend(topics(&got));
        if b.pending_replays() == 0 && got.is_empty() {
            break;
        }
    }
    // The 20 in flight re-sent, the other 80 from the resumed cursor.
    assert_eq!(seen.len(), 100);
    b.check_invariants().expect("invariants");
}
