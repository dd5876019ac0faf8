//! Unit tests of the broker state machine through a recording [`Output`].

use std::time::{Duration, Instant};

use super::*;
use crate::protocol::{
    encode, Connect, Properties, PubResp, Publish, QoS, Subscribe, SubscriptionOptions,
};

/// Records what the broker asks for; packets are kept encoded (they borrow).
#[derive(Default)]
struct Recorder {
    sent: Vec<(ConnId, Vec<u8>, String)>,
    closed: Vec<ConnId>,
    timers: Vec<(Instant, Timer)>,
    loads: Vec<Load>,
    /// What [`Output::memory_exceeded`] answers.
    over_memory: bool,
}

impl Output for Recorder {
    fn send(&mut self, conn: ConnId, version: ProtocolVersion, packet: &Packet<'_>) {
        let mut buf = Vec::new();
        encode(packet, version, &mut buf).expect("encodable");
        self.sent.push((conn, buf, format!("{packet:?}")));
    }
    fn send_after_commit(&mut self, conn: ConnId, version: ProtocolVersion, packet: &Packet<'_>) {
        self.send(conn, version, packet);
    }
    fn pending_bytes(&self, _: ConnId) -> usize {
        0
    }
    fn request_load(&mut self, load: Load) {
        self.loads.push(load);
    }
    fn close(&mut self, conn: ConnId) {
        self.closed.push(conn);
    }
    fn set_timer(&mut self, at: Instant, timer: Timer) {
        self.timers.push((at, timer));
    }
    fn memory_exceeded(&self) -> bool {
        self.over_memory
    }
}

impl Recorder {
    fn take(&mut self, conn: ConnId) -> Vec<String> {
        let (mine, rest) = std::mem::take(&mut self.sent)
            .into_iter()
            .partition(|(c, _, _)| *c == conn);
        self.sent = rest;
        mine.into_iter().map(|(_, _, d)| d).collect()
    }
}

fn connect_packet(id: &str, clean: bool, version: ProtocolVersion) -> Packet<'_> {
    Packet::Connect(Box::new(Connect {
        version,
        clean_start: clean,
        keep_alive: 60,
        properties: Properties::default(),
        client_id: id,
        will: None,
        username: None,
        password: None,
    }))
}

fn setup() -> (Broker, Recorder, Instant) {
    (
        Broker::new(BrokerConfig::default()),
        Recorder::default(),
        Instant::now(),
    )
}

fn connect(b: &mut Broker, r: &mut Recorder, now: Instant, conn: ConnId, id: &str, clean: bool) {
    b.connection_opened(now, conn, "127.0.0.1:1", 0, r);
    b.handle_packet(
        now,
        conn,
        &connect_packet(id, clean, ProtocolVersion::V311),
        r,
    );
    let got = r.take(conn);
    assert!(got[0].starts_with("ConnAck"), "{got:?}");
    b.check_invariants().expect("invariants");
}

fn subscribe(b: &mut Broker, r: &mut Recorder, now: Instant, conn: ConnId, filter: &str, qos: QoS) {
    let p = Packet::Subscribe(Subscribe {
        packet_id: 1,
        properties: Properties::default(),
        filters: vec![(
            filter,
            SubscriptionOptions {
                qos,
                ..Default::default()
            },
        )],
    });
    b.handle_packet(now, conn, &p, r);
    let got = r.take(conn);
    assert!(got[0].starts_with("SubAck"), "{got:?}");
}

fn publish<'a>(topic: &'a str, payload: &'a [u8], qos: QoS, id: u16) -> Packet<'a> {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic,
        packet_id: id,
        properties: Properties::default(),
        payload,
    })
}

#[test]
fn qos1_routes_and_acks() {
    let (mut b, mut r, now) = setup();
    connect(&mut b, &mut r, now, 1, "sub", true);
    connect(&mut b, &mut r, now, 2, "pub", true);
    subscribe(&mut b, &mut r, now, 1, "a/+", QoS::AtLeastOnce);
    b.handle_packet(now, 2, &publish("a/b", b"x", QoS::AtLeastOnce, 7), &mut r);
    let to_pub = r.take(2);
    assert!(to_pub[0].starts_with("PubAck"), "{to_pub:?}");
    let to_sub = r.take(1);
    assert!(
        to_sub[0].contains("qos: AtLeastOnce") && to_sub[0].contains("packet_id: 1"),
        "{to_sub:?}"
    );
    b.check_invariants().expect("invariants");
    b.handle_packet(now, 1, &Packet::PubAck(PubResp::success(1)), &mut r);
    assert!(b.sessions.iter().all(|(_, s)| s.inflight.is_empty()));
}

#[test]
fn qos2_duplicate_is_delivered_once() {
    let (mut b, mut r, now) = setup();
    connect(&mut b, &mut r, now, 1, "sub", true);
    connect(&mut b, &mut r, now, 2, "pub", true);
    subscribe(&mut b, &mut r, now, 1, "t", QoS::AtMostOnce);
    b.handle_packet(now, 2, &publish("t", b"x", QoS::ExactlyOnce, 9), &mut r);
    // [MQTT-3.3.1-1] the re-delivery carries DUP.
    b.handle_packet(
        now,
        2,
        &redelivery(publish("t", b"x", QoS::ExactlyOnce, 9)),
        &mut r,
    );
    assert_eq!(r.take(1).len(), 1, "exactly once");
    let acks = r.take(2);
    assert_eq!(acks.len(), 2);
    b.handle_packet(now, 2, &Packet::PubRel(PubResp::success(9)), &mut r);
    assert!(r.take(2)[0].starts_with("PubComp"));
}

fn redelivery(p: Packet<'_>) -> Packet<'_> {
    match p {
        Packet::Publish(p) => Packet::Publish(Publish { dup: true, ..p }),
        other => other,
    }
}

/// A QoS 2 PUBLISH without DUP whose id is still held is a new message: a
/// client reuses an id only after PUBCOMP [MQTT-2.2.1-3], so the broker lost
/// the release (a power cut with `persistence_sync periodic`). Acknowledging
/// and dropping it would lose an acknowledged message.
#[test]
fn qos2_id_reused_without_dup_is_a_new_message() {
    let (mut b, mut r, now) = setup();
    connect(&mut b, &mut r, now, 1, "sub", true);
    connect(&mut b, &mut r, now, 2, "pub", true);
    subscribe(&mut b, &mut r, now, 1, "t", QoS::AtMostOnce);
    b.handle_packet(now, 2, &publish("t", b"one", QoS::ExactlyOnce, 9), &mut r);
    b.handle_packet(now, 2, &publish("t", b"two", QoS::ExactlyOnce, 9), &mut r);
    let got = r.take(1);
    assert_eq!(got.len(), 2, "both delivered: {got:?}");
    assert_eq!(r.take(2).len(), 2, "both acknowledged");
    b.handle_packet(now, 2, &Packet::PubRel(PubResp::success(9)), &mut r);
    assert!(r.take(2)[0].starts_with("PubComp"));
    b.check_invariants().expect("invariants");
}

#[test]
fn persistent_session_queues_and_resends() {
    let (mut b, mut r, now) = setup();
    connect(&mut b, &mut r, now, 1, "sub", false);
    subscribe(&mut b, &mut r, now, 1, "t", QoS::AtLeastOnce);
    connect(&mut b, &mut r, now, 2, "pub", true);
    b.handle_packet(now, 2, &publish("t", b"1", QoS::AtLeastOnce, 1), &mut r);
    // Delivered, not acked; then the subscriber goes away.
    assert_eq!(r.take(1).len(), 1);
    b.connection_lost(now, 1, &mut r);
    b.handle_packet(now, 2, &publish("t", b"2", QoS::AtLeastOnce, 2), &mut r);
    b.check_invariants().expect("invariants");
    b.connection_opened(now, 3, "127.0.0.1:2", 0, &mut r);
    b.handle_packet(
        now,
        3,
        &connect_packet("sub", false, ProtocolVersion::V311),
        &mut r,
    );
    let got = r.take(3);
    assert!(got[0].contains("session_present: true"), "{got:?}");
    assert!(
        got[1].contains("dup: true") && got[1].contains("[49]"),
        "{got:?}"
    );
    assert!(
        got[2].contains("dup: false") && got[2].contains("[50]"),
        "{got:?}"
    );
    b.check_invariants().expect("invariants");
}

#[test]
fn keep_alive_timer_rearms_lazily_and_expires() {
    let (mut b, mut r, now) = setup();
    connect(&mut b, &mut r, now, 1, "ka", true);
    // One timer per connection: the CONNECT timeout turns into the keep-alive
    // check when it fires on a connected client.
    let (at, timer) = *r
        .timers
        .iter()
        .find(|(_, t)| matches!(t.kind, TimerKind::ConnectTimeout(_)))
        .expect("connect timer");
    assert!(!r
        .timers
        .iter()
        .any(|(_, t)| matches!(t.kind, TimerKind::KeepAlive(_))));
    r.timers.clear();
    b.handle_timer(at, timer, &mut r);
    let (at, timer) = r.timers[0];
    assert!(matches!(timer.kind, TimerKind::KeepAlive(_)));
    // Activity is kept in whole milliseconds: the check is due 1 ms after
    // the grace, never before it.
    assert_eq!(at, now + Duration::from_millis(90_001));
    // Activity at +30 s: the timer at +90 s re-arms for +120 s.
    b.handle_packet(now + Duration::from_secs(30), 1, &Packet::PingReq, &mut r);
    r.timers.clear();
    b.handle_timer(at, timer, &mut r);
    assert_eq!(r.timers.len(), 1);
    assert!(r.closed.is_empty());
    let (at2, t2) = r.timers[0];
    assert_eq!(at2, now + Duration::from_millis(120_001));
    b.handle_timer(at2, t2, &mut r);
    assert_eq!(r.closed, vec![1]);
    b.check_invariants().expect("invariants");
}

/// A connection's last activity is 32-bit milliseconds from the broker's
/// first connection, which wrap after 49.7 days: keep-alive is still judged
/// exactly past the wrap, and a timer handed a time a little before the last
/// packet's does not read as 49 days of silence.
#[test]
fn keep_alive_survives_the_millisecond_wrap() {
    let (mut b, mut r, start) = setup();
    connect(&mut b, &mut r, start, 1, "first", true);
    let later = start + Duration::from_millis(u64::from(u32::MAX) - 20_000);
    connect(&mut b, &mut r, later, 2, "late", true);
    let timer = Timer::new(
        TimerKind::KeepAlive(2),
        b.conns.get(&2).expect("conn").serial,
    );
    // The ticks wrap 20 s after the CONNECT; a ping at +60 s.
    b.handle_packet(later + Duration::from_secs(60), 2, &Packet::PingReq, &mut r);
    r.timers.clear();
    b.handle_timer(later + Duration::from_secs(59), timer, &mut r);
    b.handle_timer(later + Duration::from_secs(149), timer, &mut r);
    assert!(r.closed.is_empty(), "ping at 60 s, grace 90 s");
    assert_eq!(
        r.timers.last().map(|(at, _)| *at),
        Some(later + Duration::from_millis(150_001))
    );
    b.handle_timer(later + Duration::from_millis(150_001), timer, &mut r);
    assert_eq!(r.closed, vec![2]);
}

#[test]
fn will_on_loss_not_on_disconnect() {
    let (mut b, mut r, now) = setup();
    connect(&mut b, &mut r, now, 1, "watcher", true);
    subscribe(&mut b, &mut r, now, 1, "w", QoS::AtMostOnce);
    for (conn, graceful) in [(2, true), (3, false)] {
        b.connection_opened(now, conn, "x", 0, &mut r);
        let will = crate::protocol::Will {
            topic: "w",
            payload: b"gone",
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Properties::default(),
        };
        b.handle_packet(
            now,
            conn,
            &Packet::Connect(Box::new(Connect {
                version: ProtocolVersion::V311,
                clean_start: true,
                keep_alive: 0,
                properties: Properties::default(),
                client_id: "dying",
                will: Some(will),
                username: None,
                password: None,
            })),
            &mut r,
        );
        if graceful {
            b.handle_packet(
                now,
                conn,
                &Packet::Disconnect(Disconnect::with_reason(ReasonCode::SUCCESS)),
                &mut r,
            );
            assert!(r.take(1).is_empty(), "no will after DISCONNECT");
        } else {
            b.connection_lost(now, conn, &mut r);
            assert_eq!(r.take(1).len(), 1, "will after a lost connection");
        }
        b.check_invariants().expect("invariants");
    }
}

#[test]
fn queue_limit_drops_and_counts() {
    let mut b = Broker::new(BrokerConfig {
        max_inflight_messages: 1,
        max_queued_messages: 2,
        ..BrokerConfig::default()
    });
    let mut r = Recorder::default();
    let now = Instant::now();
    connect(&mut b, &mut r, now, 1, "slow", true);
    subscribe(&mut b, &mut r, now, 1, "t", QoS::AtLeastOnce);
    connect(&mut b, &mut r, now, 2, "pub", true);
    for i in 1..=5 {
        b.handle_packet(now, 2, &publish("t", b"x", QoS::AtLeastOnce, i), &mut r);
    }
    // 1 in flight, 2 queued, 2 dropped.
    assert_eq!(b.stats().messages_dropped, 2);
    b.check_invariants().expect("invariants");
}

/// [MQTT-3.3.4-9] a resumed session re-sends its in-flight messages only as far
/// as the new connection's Receive Maximum allows; the rest follow the acks,
/// with their original packet ids (found by the broker fuzz target).
#[test]
fn resume_respects_the_new_receive_maximum() {
    let (mut b, mut r, now) = setup();
    connect(&mut b, &mut r, now, 1, "sub", false);
    subscribe(&mut b, &mut r, now, 1, "t", QoS::AtLeastOnce);
    connect(&mut b, &mut r, now, 2, "pub", true);
    for i in 1..=3 {
        b.handle_packet(now, 2, &publish("t", b"x", QoS::AtLeastOnce, i), &mut r);
    }
    assert_eq!(r.take(1).len(), 3);
    b.connection_lost(now, 1, &mut r);
    b.connection_opened(now, 3, "x", 0, &mut r);
    b.handle_packet(
        now,
        3,
        &Packet::Connect(Box::new(Connect {
            version: ProtocolVersion::V5,
            clean_start: false,
            keep_alive: 0,
            properties: Properties {
                receive_maximum: Some(1),
                session_expiry_interval: Some(60),
                ..Properties::default()
            },
            client_id: "sub",
            will: None,
            username: None,
            password: None,
        })),
        &mut r,
    );
    let got = r.take(3);
    assert_eq!(got.len(), 2, "CONNACK and one re-send: {got:?}");
    assert!(
        got[1].contains("dup: true") && got[1].contains("packet_id: 1"),
        "{got:?}"
    );
    b.check_invariants().expect("invariants");
    b.handle_packet(now, 3, &Packet::PubAck(PubResp::success(1)), &mut r);
    let got = r.take(3);
    assert_eq!(got.len(), 1);
    assert!(
        got[0].contains("dup: true") && got[0].contains("packet_id: 2"),
        "{got:?}"
    );
    b.check_invariants().expect("invariants");
}

/// Per-client state stays small (printed for the README; bounds catch regressions).
#[test]
fn per_client_state_is_small() {
    let conn = std::mem::size_of::<Conn>();
    let session = std::mem::size_of::<Session>();
    eprintln!("broker Conn {conn} B, Session {session} B");
    assert!(conn <= 40, "Conn grew to {conn} bytes");
    assert!(session <= 128, "Session grew to {session} bytes");
}

/// Persistence failing: QoS 1/2 publishes are refused, not acknowledged (v5:
/// 0x97; 3.1.1 has no way to say no, so the connection is closed).
#[test]
fn failing_persistence_refuses_qos1_and_2() {
    struct Failing(Recorder);
    impl Output for Failing {
        fn send(&mut self, conn: ConnId, version: ProtocolVersion, packet: &Packet<'_>) {
            self.0.send(conn, version, packet)
        }
        fn send_after_commit(
            &mut self,
            conn: ConnId,
            version: ProtocolVersion,
            packet: &Packet<'_>,
        ) {
            self.0.send(conn, version, packet)
        }
        fn request_load(&mut self, load: Load) {
            self.0.request_load(load)
        }
        fn pending_bytes(&self, conn: ConnId) -> usize {
            self.0.pending_bytes(conn)
        }
        fn close(&mut self, conn: ConnId) {
            self.0.close(conn)
        }
        fn set_timer(&mut self, at: Instant, timer: Timer) {
            self.0.set_timer(at, timer)
        }
        fn persistence_failing(&self) -> bool {
            true
        }
    }
    let (mut b, r, now) = setup();
    b.enable_persistence(0, 0);
    let mut f = Failing(r);
    f.0 = Recorder::default();
    b.connection_opened(now, 1, "x", 0, &mut f);
    b.handle_packet(
        now,
        1,
        &Packet::Connect(Box::new(Connect {
            version: ProtocolVersion::V5,
            clean_start: true,
            keep_alive: 0,
            properties: Properties::default(),
            client_id: "v5",
            will: None,
            username: None,
            password: None,
        })),
        &mut f,
    );
    b.handle_packet(now, 1, &publish("t", b"x", QoS::AtLeastOnce, 1), &mut f);
    let got = f.0.take(1);
    assert!(
        got[1].contains("PubAck") && got[1].contains("ReasonCode(151)"),
        "{got:?}"
    );
    b.handle_packet(now, 1, &publish("t", b"x", QoS::AtMostOnce, 0), &mut f);
    assert!(
        f.0.take(1).is_empty(),
        "QoS 0 is not affected (and not stored)"
    );
    b.connection_opened(now, 2, "y", 0, &mut f);
    b.handle_packet(
        now,
        2,
        &connect_packet("v3", true, ProtocolVersion::V311),
        &mut f,
    );
    b.handle_packet(now, 2, &publish("t", b"x", QoS::ExactlyOnce, 1), &mut f);
    assert!(f.0.closed.contains(&2), "3.1.1 publisher disconnected");
    b.check_invariants().expect("invariants");
}

/// Over `memory_limit`: QoS 1/2 publishes are refused (v5: 0x97; 3.1.1 is
/// disconnected), QoS 0 ones dropped and counted, nothing is routed; back
/// under it, everything flows again.
#[test]
fn over_memory_limit_refuses_qos1_and_2_and_drops_qos0() {
    let (mut b, mut r, now) = setup();
    connect(&mut b, &mut r, now, 1, "sub", true);
    subscribe(&mut b, &mut r, now, 1, "t", QoS::AtLeastOnce);
    b.connection_opened(now, 2, "x", 0, &mut r);
    b.handle_packet(
        now,
        2,
        &connect_packet("v5", true, ProtocolVersion::V5),
        &mut r,
    );
    r.take(2);
    r.over_memory = true;
    for (qos, id) in [(QoS::AtLeastOnce, 1), (QoS::ExactlyOnce, 2)] {
        b.handle_packet(now, 2, &publish("t", b"x", qos, id), &mut r);
        let got = r.take(2);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].contains("ReasonCode(151)"), "{got:?}");
    }
    b.handle_packet(now, 2, &publish("t", b"x", QoS::AtMostOnce, 0), &mut r);
    assert!(r.take(2).is_empty());
    assert!(r.take(1).is_empty(), "nothing reached the subscriber");
    let st = b.stats();
    assert_eq!((st.refused_memory_limit, st.dropped_memory_limit), (2, 1));
    assert_eq!(st.messages_dropped, 1);
    connect(&mut b, &mut r, now, 3, "v3", true);
    b.handle_packet(now, 3, &publish("t", b"x", QoS::AtLeastOnce, 1), &mut r);
    assert!(r.closed.contains(&3), "3.1.1 publisher disconnected");
    r.over_memory = false;
    b.handle_packet(now, 2, &publish("t", b"x", QoS::AtLeastOnce, 3), &mut r);
    assert!(r.take(2)[0].contains("ReasonCode(0)"));
    assert_eq!(r.take(1).len(), 1, "delivered again");
    b.check_invariants().expect("invariants");
}

/// The broker is sans-IO: it is given the time and never reads a clock, so a
/// test or fuzz input replays exactly (issue 11, the broker<->shell contract).
/// Its non-test code must not call `Instant::now` or `SystemTime::now`.
#[test]
fn the_broker_never_reads_a_clock() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/broker");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).expect("src/broker") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !name.ends_with(".rs") || name.ends_with("tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for clock in ["Instant::now()", "SystemTime::now()"] {
            assert!(!code.contains(clock), "{name} calls {clock}");
        }
        checked += 1;
    }
    assert!(checked > 10, "only {checked} files checked");
}

/// Issue 10 item 9: every disconnect of a persistent session armed a session
/// expiry timer that stayed in the wheel until it fired (up to years): 100,000
/// connect/disconnect cycles of one client id held +7 MB. Now a session has one
/// pending deadline and the wheel a bounded number of timers for all of them.
#[test]
fn reconnect_loops_do_not_pile_up_expiry_timers() {
    let config = BrokerConfig {
        persistent_client_expiration: Some(Duration::from_secs(365 * 24 * 3600)),
        ..BrokerConfig::default()
    };
    let (mut b, mut r, t0) = (Broker::new(config), Recorder::default(), Instant::now());
    for i in 0..20_000u64 {
        let now = t0 + Duration::from_millis(i);
        connect(&mut b, &mut r, now, 1, "looping", false);
        b.handle_packet(
            now,
            1,
            &Packet::Disconnect(Disconnect::with_reason(ReasonCode::SUCCESS)),
            &mut r,
        );
        r.sent.clear();
        r.closed.clear();
    }
    b.check_invariants().expect("invariants");
    let session_timers = r
        .timers
        .iter()
        .filter(|(_, t)| {
            matches!(
                t.kind,
                TimerKind::SessionExpiry(_) | TimerKind::WillDelay(_) | TimerKind::Deadlines
            )
        })
        .count();
    // Before: 20,000 (one per disconnect), none of them ever due before a year.
    assert!(
        session_timers <= 64,
        "{session_timers} session timers armed"
    );
    assert_eq!(b.session_count(), 1);
}

/// A bridge's local session lets one queued message out per acknowledgement,
/// as a client's does, never waiting for several free slots: a remote that
/// sends its PUBACKs with Nagle's algorithm (mosquitto's default) holds all
/// but the first until our TCP ACK, which rides on our next PUBLISH or waits
/// for the delayed-ACK timer (40 ms). Holding the window for a batch stalled a
/// bridge to mosquitto at about 2,300 msg/s with `max_inflight_messages 100`.
#[test]
fn a_bridge_window_refills_one_per_ack() {
    let mut b = Broker::new(BrokerConfig {
        max_inflight_messages: 8,
        max_queued_messages: 0,
        ..BrokerConfig::default()
    });
    let mut r = Recorder::default();
    let now = Instant::now();
    // Conn 1: a bridge's local side (no password, open ACL).
    b.connection_opened(now, 1, "bridge up", crate::auth::BRIDGE_LISTENER, &mut r);
    b.handle_packet(
        now,
        1,
        &connect_packet("local.edge", true, ProtocolVersion::V311),
        &mut r,
    );
    assert!(r.take(1)[0].starts_with("ConnAck"));
    subscribe(&mut b, &mut r, now, 1, "t", QoS::AtLeastOnce);
    connect(&mut b, &mut r, now, 2, "pub", true);
    for i in 1..=20 {
        b.handle_packet(now, 2, &publish("t", b"x", QoS::AtLeastOnce, i), &mut r);
    }
    assert_eq!(r.take(1).len(), 8, "the bridge's window is full");
    for id in 1..=12u16 {
        b.handle_packet(now, 1, &Packet::PubAck(PubResp::success(id)), &mut r);
        b.check_invariants().expect("invariants");
        assert_eq!(r.take(1).len(), 1, "one out for the ack of {id}");
    }
}
