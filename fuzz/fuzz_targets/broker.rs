//! The sans-IO broker driven by an arbitrary sequence of events from four
//! simulated connections: sockets opening, packets (encoded by the client's
//! version and decoded again, exactly as the server would hand them over, so
//! malformed ones go through `handle_decode_error`), raw bytes, lost sockets,
//! time passing with the timers the broker armed, a socket that stops reading,
//! and shutdown. After every step `Broker::check_invariants` must hold, and the
//! recording `Output` checks what the broker does to the world:
//!
//! * it only sends to and closes connections that are open (never after
//!   closing them, never one it was told is lost);
//! * every packet it sends encodes, decodes back to itself for the client's
//!   version (before v5: re-encodes to the same bytes, as reason codes and
//!   properties are dropped for old clients), and respects the client's Maximum Packet Size [MQTT-3.1.2-24];
//! * `stats().clients_connected` counts the connections that got a successful
//!   CONNACK and are still open;
//! * after `shutdown` no connection is left open;
//! * with persistence on, no acknowledgement that promises durable state
//!   (success PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK, CONNACK) goes
//!   through `send`, which the shell may write before the turn's records are
//!   synced: each must come through `send_after_commit` (the harness commits
//!   at the end of every step, as the server does at the end of a loop turn);
//! * stored messages are read back only when the broker asks (`request_load`),
//!   and only messages that are stored.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use midge::broker::{Broker, BrokerConfig, ConnId, ListenerOptions, Load, Output, Timer};
use midge::persist::{Record, StoredMessage};
use midge::protocol::{
    decode, encode, Connect, DecodeError, DecodeLimits, Decoded, Disconnect, Packet, PacketId,
    PacketType, Properties, ProtocolVersion, PubResp, Publish, QoS, ReasonCode, RetainHandling,
    Subscribe, SubscriptionOptions, Unsubscribe, Will,
};

// Switches for findings: a check the broker failed stays behind a `false`
// switch (so the harness keeps fuzzing everything else) until the fix lands,
// then it is turned on for good and its reproducer stays in fuzz/regressions/.

/// Hold SUBACK, UNSUBACK and the acknowledgements to the client's Maximum
/// Packet Size too (PUBLISH and CONNACK are always checked; the CONNACK finding,
/// regressions/broker/connack-over-client-maximum-packet-size, is fixed: optional
/// properties are dropped when they would not fit). Off by decision: an
/// acknowledgement cannot shrink below its fixed fields, and a client announcing a
/// maximum smaller than the SUBACK for its own SUBSCRIBE asks for what no server
/// can give; midge sends it (documented). Reproducer:
/// regressions/broker/suback-over-client-maximum-packet-size.
const STRICT_CONTROL_PACKET_SIZE: bool = false;

/// Reject PUBACK/PUBREC with reason 0x95 (Packet too large), which 3.4.2.1 and
/// 3.5.2.1 do not list. On: fixed (the broker now answers 0x97); reproducer
/// fuzz/regressions/broker/puback-reason-0x95-not-allowed.
const STRICT_ACK_REASONS: bool = true;

/// Hold a resumed session to the new connection's send quota [MQTT-3.3.4-9]
/// (`check_invariants` reports a breach as "in flight beyond the window"). On:
/// fixed (re-sends stay within the new Receive Maximum); reproducer
/// fuzz/regressions/broker/resend-inflight-over-receive-maximum. When off, both
/// checks are waived once a session has been resumed.
const STRICT_RESUME_WINDOW: bool = true;

/// Simulated connections (ConnIds 0..CONNS).
const CONNS: usize = 4;
const CLIENT_IDS: [&str; 4] = ["c0", "c1", "c2", ""];
const FILTERS: [&str; 12] = [
    "a",
    "a/b",
    "a/+",
    "#",
    "+/b",
    "$SYS/#",
    "a/#",
    "+",
    "$share/g/a",
    "b//c",
    "+/+",
    "a/b/#",
];
const TOPICS: [&str; 8] = ["a", "a/b", "a/c", "b", "$SYS/x", "b//c", "a/b/c", ""];

#[derive(Arbitrary, Debug)]
struct Input {
    config: ConfigSpec,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
struct ConfigSpec {
    max_inflight: u8,
    max_queued: u8,
    max_queued_bytes: u8,
    queue_qos0: bool,
    message_size_limit: u8,
    max_keepalive: Option<u8>,
    allow_zero_length_clientid: bool,
    persistent_expiration: Option<u8>,
    retain_available: bool,
    retry_interval: Option<u8>,
    max_pending_bytes: u8,
}

#[derive(Arbitrary, Debug)]
struct WillSpec {
    topic: u8,
    qos: u8,
    retain: bool,
    delay: Option<u8>,
    payload: u8,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Open {
        conn: u8,
    },
    Connect {
        conn: u8,
        version: u8,
        client: u8,
        clean: bool,
        keep_alive: u8,
        /// 255 means "never expires" (0xFFFFFFFF).
        session_expiry: Option<u8>,
        receive_maximum: Option<u8>,
        maximum_packet_size: Option<u8>,
        will: Option<WillSpec>,
    },
    Subscribe {
        conn: u8,
        id: u8,
        filters: Vec<(u8, u8)>,
        sub_id: Option<u8>,
    },
    Unsubscribe {
        conn: u8,
        id: u8,
        filters: Vec<u8>,
    },
    Publish {
        conn: u8,
        topic: u8,
        qos: u8,
        retain: bool,
        dup: bool,
        id: u8,
        payload: u8,
        alias: Option<u8>,
        expiry: Option<u8>,
    },
    PubAck {
        conn: u8,
        id: u8,
        fail: bool,
    },
    PubRec {
        conn: u8,
        id: u8,
        fail: bool,
    },
    PubRel {
        conn: u8,
        id: u8,
    },
    PubComp {
        conn: u8,
        id: u8,
    },
    Ping {
        conn: u8,
    },
    Disconnect {
        conn: u8,
        reason: u8,
        session_expiry: Option<u8>,
    },
    /// Arbitrary bytes: the first packet in them, or its decode error.
    Raw {
        conn: u8,
        bytes: Vec<u8>,
    },
    Lost {
        conn: u8,
    },
    /// Let time pass (seconds) and fire the timers that fall due.
    Advance {
        secs: u16,
    },
    /// The client reads everything queued on its socket.
    Drain {
        conn: u8,
    },
    Shutdown,
}

/// What the fuzzer knows of each simulated socket.
#[derive(Debug, Default, Clone)]
struct ConnState {
    open: bool,
    /// Version learnt from the CONNECT sent on it (3.1.1 before, as the server).
    version: Option<ProtocolVersion>,
    /// Got a successful CONNACK.
    connected: bool,
    /// The client's Maximum Packet Size (v5).
    max_packet: Option<u32>,
    /// Bytes sent to it not yet read.
    pending: usize,
    /// The client's Receive Maximum (65,535 when not given).
    receive_max: usize,
    /// Packet ids of QoS 1/2 PUBLISHes sent on this connection and not yet
    /// completed by the client (PUBACK, PUBCOMP, or PUBREC with an error): the
    /// send quota of 4.9.
    outstanding: Vec<PacketId>,
    /// The client's Topic Alias Maximum (0 = it accepts no aliases).
    topic_alias_max: u16,
    /// Topic aliases the broker has set on this connection (3.3.2.3.4).
    aliases: Vec<(u16, String)>,
}

/// The `Output` that records and checks everything the broker does.
struct Recorder {
    conns: [ConnState; CONNS],
    /// Some CONNACK said Session Present (see `STRICT_RESUME_WINDOW`).
    resumed: bool,
    /// `max_inflight_messages` (0 = unlimited).
    max_inflight: usize,
    timers: Vec<(Instant, Timer)>,
    /// With persistence on: the message and queue records kept, as a log
    /// would, so that messages spilled from RAM for offline sessions can be
    /// read back (delivery number -> message number -> content).
    stored: std::collections::HashMap<u64, u64>,
    messages: std::collections::HashMap<u64, StoredMessage>,
    /// Persistence is on.
    persistence: bool,
    /// Records persisted since the last (simulated) commit.
    unsynced: usize,
    /// Stored messages the broker asked for, answered at the end of the step.
    loads: Vec<Load>,
}

/// An acknowledgement that promises durable state (a success, or for PUBREL
/// and PUBCOMP any reason: the flow's state moved).
fn promises(packet: &Packet<'_>) -> bool {
    match packet {
        Packet::PubAck(r) | Packet::PubRec(r) => !r.reason.is_error(),
        Packet::PubComp(_) | Packet::SubAck(_) | Packet::UnsubAck(_) => true,
        Packet::PubRel(r) => !r.reason.is_error(),
        Packet::ConnAck(a) => a.reason == ReasonCode::SUCCESS,
        _ => false,
    }
}

impl Output for Recorder {
    fn send(&mut self, conn: ConnId, version: ProtocolVersion, packet: &Packet<'_>) {
        assert!(
            !(self.persistence && self.unsynced > 0 && promises(packet)),
            "{packet:?} sent with send() while {} record(s) are not synced: it could leave before them",
            self.unsynced
        );
        self.record(conn, version, packet);
    }

    fn send_after_commit(&mut self, conn: ConnId, version: ProtocolVersion, packet: &Packet<'_>) {
        // Held until the end of the step (the commit); the checks apply now.
        self.record(conn, version, packet);
    }

    fn request_load(&mut self, load: Load) {
        assert!(self.persistence, "load requested without persistence");
        assert!(
            !self.loads.contains(&load),
            "load of message {} requested twice",
            load.id
        );
        self.loads.push(load);
    }

    fn pending_bytes(&self, conn: ConnId) -> usize {
        self.conns.get(conn).map_or(0, |c| c.pending)
    }

    fn close(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(conn) else {
            panic!("close of unknown connection {conn}");
        };
        assert!(c.open, "close of a connection not open: {conn}");
        *c = ConnState::default();
    }

    fn set_timer(&mut self, at: Instant, timer: Timer) {
        self.timers.push((at, timer));
    }

    fn persist(&mut self, record: &Record<'_>) {
        self.unsynced += 1;
        self.store(record);
    }
}

impl Recorder {
    /// Check and account for a packet the broker queued.
    fn record(&mut self, conn: ConnId, version: ProtocolVersion, packet: &Packet<'_>) {
        let Some(c) = self.conns.get_mut(conn) else {
            panic!("send to unknown connection {conn}: {packet:?}");
        };
        assert!(c.open, "send to closed connection {conn}: {packet:?}");
        let mut wire = Vec::new();
        let n = encode(packet, version, &mut wire)
            .unwrap_or_else(|e| panic!("broker sent an unencodable packet ({e}): {packet:?}"));
        if let Some(max) = c.max_packet {
            // [MQTT-3.1.2-24] The Server MUST NOT send packets exceeding Maximum
            // Packet Size to the Client.
            if matches!(packet, Packet::Publish(_) | Packet::ConnAck(_))
                || STRICT_CONTROL_PACKET_SIZE
            {
                assert!(
                    n <= max as usize,
                    "{n}-byte packet to a client with max {max}: {packet:?}"
                );
            }
        }
        let limits = DecodeLimits::new(version, usize::MAX);
        match decode(&wire, &limits) {
            Ok(Decoded::Packet(q, used)) => {
                assert_eq!(used, n);
                if version.is_v5() {
                    assert_eq!(&q, packet, "sent packet does not decode to itself");
                } else {
                    // Before v5 the encoder drops reason codes and properties, so
                    // only the wire form is a fixed point.
                    let mut again = Vec::new();
                    let _ = encode(&q, version, &mut again);
                    assert_eq!(again, wire, "sent packet not stable: {packet:?}");
                }
            }
            Err(DecodeError::InvalidReasonCode(PacketType::PubAck | PacketType::PubRec, 0x95))
                if !STRICT_ACK_REASONS => {}
            other => panic!("broker sent {packet:?}, which decodes as {other:?}"),
        }
        if let Packet::Publish(p) = packet {
            match p.properties.topic_alias {
                Some(a) => {
                    // 3.3.2.3.4: non-zero, at most the client's Topic Alias Maximum
                    // [MQTT-3.3.2-9]; a mapping lives as long as the connection
                    // [MQTT-3.3.2-7], and an empty topic needs one set earlier.
                    assert!(
                        a != 0 && a <= c.topic_alias_max,
                        "topic alias {a} to a client with maximum {}: {packet:?}",
                        c.topic_alias_max
                    );
                    let known = c.aliases.iter().position(|(k, _)| *k == a);
                    match (p.topic.is_empty(), known) {
                        (false, Some(i)) => c.aliases[i].1 = p.topic.to_owned(),
                        (false, None) => c.aliases.push((a, p.topic.to_owned())),
                        (true, Some(_)) => {}
                        (true, None) => panic!("empty topic with unknown alias {a}: {packet:?}"),
                    }
                }
                None => assert!(!p.topic.is_empty(), "PUBLISH with no topic: {packet:?}"),
            }
            if p.qos != QoS::AtMostOnce {
                if c.outstanding.contains(&p.packet_id) {
                    // Only a re-send may reuse an id still in flight [MQTT-2.2.1-3].
                    assert!(
                        p.dup,
                        "packet id {} reused while in flight: {packet:?}",
                        p.packet_id
                    );
                } else {
                    c.outstanding.push(p.packet_id);
                }
                // [MQTT-3.3.4-9] no more than Receive Maximum in flight to the
                // client; and midge's own max_inflight_messages.
                let limit = match self.max_inflight {
                    0 => c.receive_max,
                    n => n.min(c.receive_max),
                };
                assert!(
                    c.outstanding.len() <= limit || (self.resumed && !STRICT_RESUME_WINDOW),
                    "{} QoS 1/2 PUBLISHes in flight to conn {conn}, limit {limit}: {:?}",
                    c.outstanding.len(),
                    c.outstanding
                );
            }
        }
        if let Packet::ConnAck(ack) = packet {
            assert!(!c.connected, "second CONNACK on connection {conn}");
            c.connected = ack.reason == ReasonCode::SUCCESS;
            self.resumed |= c.connected && ack.session_present;
        }
        c.pending += n;
    }

    /// Keep queue records as a log would.
    fn store(&mut self, record: &Record<'_>) {
        match *record {
            Record::Message { mid, msg } => {
                assert!(mid != 0, "stored message without a number");
                self.messages.insert(
                    mid,
                    StoredMessage {
                        topic: msg.topic.to_string(),
                        payload: msg.payload.to_vec(),
                        qos: msg.qos as u8,
                        retain: msg.retain,
                        properties: msg.properties.as_deref().cloned(),
                        received_unix_ms: std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_millis() as u64),
                    },
                );
            }
            Record::Queue { id, mid, .. } => {
                assert!(id != 0, "delivery without a number");
                assert!(
                    self.messages.contains_key(&mid),
                    "delivery {id} names message {mid}, never written"
                );
                self.stored.insert(id, mid);
            }
            Record::Done(id) => {
                self.stored.remove(&id);
            }
            Record::Keep(_) => panic!("Keep is for compaction dumps only"),
            _ => {}
        }
    }
}

fn broker_config(s: &ConfigSpec) -> BrokerConfig {
    BrokerConfig {
        max_inflight_messages: u16::from(s.max_inflight % 5),
        max_queued_messages: usize::from(s.max_queued % 6),
        max_queued_bytes: usize::from(s.max_queued_bytes % 4) * 16,
        queue_qos0_messages: s.queue_qos0,
        message_size_limit: usize::from(s.message_size_limit % 4) * 8,
        max_packet_size: 268_435_460,
        max_keepalive: s.max_keepalive.map_or(u16::MAX, |k| u16::from(k % 8) * 10),
        allow_zero_length_clientid: s.allow_zero_length_clientid,
        persistent_client_expiration: s
            .persistent_expiration
            .map(|e| Duration::from_secs(u64::from(e))),
        retain_available: s.retain_available,
        retry_interval: s
            .retry_interval
            .map(|r| Duration::from_secs(u64::from(r % 16) + 1)),
        connect_timeout: Duration::from_secs(10),
        max_pending_bytes: usize::from(s.max_pending_bytes) * 8,
        // Knobs added after inputs were committed take spare high bits, so that
        // corpus and regression files keep their meaning.
        max_topic_levels: [0, 0, 0, 0, 1, 2, 3, 4][usize::from(s.max_queued >> 5)],
        max_subscriptions_per_client: [0, 0, 0, 1, 2, 3, 0, 0]
            [usize::from(s.max_queued_bytes >> 5)],
        max_topic_alias: u16::from(s.max_inflight >> 5),
        outgoing_topic_aliases: s.message_size_limit & 0x80 != 0,
        response_information: (s.message_size_limit & 0x40 != 0).then(|| "resp/".to_owned()),
        // The $SYS tree is started by the server only; the fuzzer never does.
        sys_interval: Duration::ZERO,
        max_retained_messages: usize::from((s.message_size_limit >> 2) & 3),
        max_retained_bytes: [0, 200, 400, 1000][usize::from((s.message_size_limit >> 4) & 3)],
        // Log-only and naming knobs: defaults (the fuzzer checks state, not logs).
        connection_messages: false,
        auto_id_prefix: "auto-".to_owned(),
        clientid_prefixes: None,
        // Spare high bits of `retry_interval` and `max_keepalive` (their low
        // bits keep their meaning).
        max_inflight_bytes: s
            .retry_interval
            .map_or(0, |r| [0, 0, 32, 100][usize::from((r >> 4) & 3)]),
        upgrade_outgoing_qos: s.retry_interval.is_some_and(|r| r & 0x40 != 0),
        check_retain_source: true,
        // Every fuzzed connection comes in on listener 0.
        listeners: vec![ListenerOptions {
            max_qos: s
                .max_keepalive
                .and_then(|k| [None, None, Some(1), Some(0)][usize::from((k >> 3) & 3)]),
            mount_point: s
                .max_keepalive
                .is_some_and(|k| k & 0x40 != 0)
                .then(|| "m/".to_owned()),
            use_username_as_clientid: s.max_keepalive.is_some_and(|k| k & 0x20 != 0),
        }],
    }
}

fn version_of(v: u8) -> ProtocolVersion {
    match v % 3 {
        0 => ProtocolVersion::V31,
        1 => ProtocolVersion::V311,
        _ => ProtocolVersion::V5,
    }
}

fn qos_of(q: u8) -> QoS {
    QoS::from_u8(q % 3).unwrap_or_default()
}

/// Packet ids 0..=5: small, so they meet the broker's own (which start at 1),
/// and 0 now and then (a decode error).
fn pid(id: u8) -> PacketId {
    PacketId::from(id % 6)
}

fn expiry(e: u8) -> u32 {
    if e == 255 {
        u32::MAX
    } else {
        u32::from(e)
    }
}

const DISCONNECT_REASONS: [u8; 5] = [0x00, 0x04, 0x80, 0x81, 0x8E];

struct Sim {
    broker: Broker,
    out: Recorder,
    now: Instant,
}

impl Sim {
    fn check(&self, what: &dyn std::fmt::Debug) {
        if let Err(e) = self.broker.check_invariants() {
            let waived = !STRICT_RESUME_WINDOW
                && self.out.resumed
                && e.ends_with("in flight beyond the window");
            if !waived {
                panic!("invariant broken after {what:?}: {e}");
            }
        }
        let connected = self.out.conns.iter().filter(|c| c.connected).count();
        assert_eq!(
            self.broker.stats().clients_connected,
            connected,
            "clients_connected after {what:?}"
        );
    }

    /// Send `packet` from `conn` the way the server would deliver it: encoded
    /// for the connection's version, then decoded with the broker's limits.
    fn deliver(&mut self, conn: usize, packet: &Packet<'_>) {
        let c = &self.out.conns[conn];
        if !c.open {
            return;
        }
        let version = match packet {
            Packet::Connect(connect) => connect.version,
            _ => c.version.unwrap_or(ProtocolVersion::V311),
        };
        let mut wire = Vec::new();
        if encode(packet, version, &mut wire).is_err() {
            return;
        }
        self.deliver_bytes(conn, &wire);
    }

    fn deliver_bytes(&mut self, conn: usize, wire: &[u8]) {
        let c = &self.out.conns[conn];
        if !c.open {
            return;
        }
        let limits = DecodeLimits::new(
            c.version.unwrap_or(ProtocolVersion::V311),
            self.broker.config().max_packet_size,
        );
        match decode(wire, &limits) {
            Ok(Decoded::Packet(p, _)) => {
                if let Packet::Connect(connect) = &p {
                    let st = &mut self.out.conns[conn];
                    if st.version.is_none() {
                        st.version = Some(connect.version);
                        st.max_packet = connect.properties.maximum_packet_size;
                        st.topic_alias_max = connect.properties.topic_alias_maximum.unwrap_or(0);
                        st.receive_max = connect
                            .properties
                            .receive_maximum
                            .map_or(usize::from(u16::MAX), usize::from);
                    }
                }
                // The client completes QoS flows: its quota comes back (4.9).
                let done = match &p {
                    Packet::PubAck(r) | Packet::PubComp(r) => Some(r.packet_id),
                    Packet::PubRec(r) if r.reason.is_error() => Some(r.packet_id),
                    _ => None,
                };
                if let Some(id) = done {
                    self.out.conns[conn].outstanding.retain(|&o| o != id);
                }
                self.broker.handle_packet(self.now, conn, &p, &mut self.out);
            }
            Ok(Decoded::NeedMore(_)) => {}
            Err(e) => self
                .broker
                .handle_decode_error(self.now, conn, &e, &mut self.out),
        }
    }

    /// The end of a loop turn, as the server does it: answer the loads the
    /// broker asked for (which may ask for more), then commit the records.
    fn settle(&mut self) {
        while !self.out.loads.is_empty() {
            for load in std::mem::take(&mut self.out.loads) {
                let m = self
                    .out
                    .stored
                    .get(&load.id)
                    .and_then(|mid| self.out.messages.get(mid))
                    .cloned();
                assert!(
                    m.is_some(),
                    "broker asked for stored message {}, never stored or already done",
                    load.id
                );
                self.broker.handle_loaded(self.now, load, m, &mut self.out);
            }
        }
        self.out.unsynced = 0;
    }

    fn advance(&mut self, secs: u16) {
        self.now += Duration::from_secs(u64::from(secs));
        // Fire due timers in time order; handlers may arm more (bounded).
        for _ in 0..10_000 {
            let due = self
                .out
                .timers
                .iter()
                .enumerate()
                .filter(|(_, (at, _))| *at <= self.now)
                .min_by_key(|(_, (at, _))| *at)
                .map(|(i, _)| i);
            let Some(i) = due else {
                return;
            };
            let (_, timer) = self.out.timers.swap_remove(i);
            self.broker.handle_timer(self.now, timer, &mut self.out);
            self.settle();
            self.check(&timer);
        }
    }

    fn run(&mut self, op: &Op) {
        let conn_of = |c: u8| usize::from(c) % CONNS;
        match *op {
            Op::Open { conn } => {
                let conn = conn_of(conn);
                if !self.out.conns[conn].open {
                    self.out.conns[conn] = ConnState {
                        open: true,
                        receive_max: usize::from(u16::MAX),
                        ..ConnState::default()
                    };
                    self.broker
                        .connection_opened(self.now, conn, "fuzz:1", 0, &mut self.out);
                }
            }
            Op::Connect {
                conn,
                version,
                client,
                clean,
                keep_alive,
                session_expiry,
                receive_maximum,
                maximum_packet_size,
                ref will,
            } => {
                let version = version_of(version);
                let mut properties = Properties::default();
                if version.is_v5() {
                    properties.session_expiry_interval = session_expiry.map(expiry);
                    properties.receive_maximum = receive_maximum.map(u16::from);
                    properties.maximum_packet_size = maximum_packet_size.map(|m| u32::from(m) * 8);
                    // Spare bits again (see `broker_config`): 0..=15, 0 = none.
                    properties.topic_alias_maximum =
                        Some(u16::from(client >> 4)).filter(|&t| t > 0);
                    properties.request_response_information = Some(u8::from(keep_alive & 1 == 1));
                }
                let payload = [0x55; 255];
                let will = will.as_ref().map(|w| {
                    let mut properties = Properties::default();
                    if version.is_v5() {
                        properties.will_delay_interval = w.delay.map(u32::from);
                    }
                    Will {
                        topic: TOPICS[usize::from(w.topic) % TOPICS.len()],
                        payload: &payload[..usize::from(w.payload % 40)],
                        qos: qos_of(w.qos),
                        retain: w.retain,
                        properties,
                    }
                });
                let packet = Packet::Connect(Box::new(Connect {
                    version,
                    clean_start: clean,
                    keep_alive: u16::from(keep_alive),
                    properties,
                    client_id: CLIENT_IDS[usize::from(client) % CLIENT_IDS.len()],
                    will,
                    username: None,
                    password: None,
                }));
                self.deliver(conn_of(conn), &packet);
            }
            Op::Subscribe {
                conn,
                id,
                ref filters,
                sub_id,
            } => {
                let filters = filters
                    .iter()
                    .take(4)
                    .map(|&(f, o)| {
                        let options = SubscriptionOptions {
                            qos: qos_of(o),
                            no_local: o & 0x04 != 0,
                            retain_as_published: o & 0x08 != 0,
                            retain_handling: match (o >> 4) % 3 {
                                0 => RetainHandling::SendAtSubscribe,
                                1 => RetainHandling::SendIfNew,
                                _ => RetainHandling::DoNotSend,
                            },
                        };
                        (FILTERS[usize::from(f) % FILTERS.len()], options)
                    })
                    .collect();
                let mut properties = Properties::default();
                properties
                    .subscription_identifiers
                    .extend(sub_id.map(u32::from));
                let packet = Packet::Subscribe(Subscribe {
                    packet_id: pid(id),
                    properties,
                    filters,
                });
                self.deliver(conn_of(conn), &packet);
            }
            Op::Unsubscribe {
                conn,
                id,
                ref filters,
            } => {
                let packet = Packet::Unsubscribe(Unsubscribe {
                    packet_id: pid(id),
                    properties: Properties::default(),
                    filters: filters
                        .iter()
                        .take(4)
                        .map(|&f| FILTERS[usize::from(f) % FILTERS.len()])
                        .collect(),
                });
                self.deliver(conn_of(conn), &packet);
            }
            Op::Publish {
                conn,
                topic,
                qos,
                retain,
                dup,
                id,
                payload,
                alias,
                expiry,
            } => {
                let qos = qos_of(qos);
                let bytes = [id; 255];
                let properties = Properties {
                    topic_alias: alias.map(u16::from),
                    message_expiry_interval: expiry.map(u32::from),
                    ..Properties::default()
                };
                let packet = Packet::Publish(Publish {
                    dup: dup && qos != QoS::AtMostOnce,
                    qos,
                    retain,
                    topic: TOPICS[usize::from(topic) % TOPICS.len()],
                    packet_id: if qos == QoS::AtMostOnce { 0 } else { pid(id) },
                    properties,
                    payload: &bytes[..usize::from(payload % 64)],
                });
                self.deliver(conn_of(conn), &packet);
            }
            Op::PubAck { conn, id, fail } | Op::PubRec { conn, id, fail } => {
                let mut r = PubResp::success(pid(id));
                if fail {
                    r.reason = ReasonCode(0x80);
                }
                let packet = match op {
                    Op::PubAck { .. } => Packet::PubAck(r),
                    _ => Packet::PubRec(r),
                };
                self.deliver(conn_of(conn), &packet);
            }
            Op::PubRel { conn, id } => {
                self.deliver(conn_of(conn), &Packet::PubRel(PubResp::success(pid(id))));
            }
            Op::PubComp { conn, id } => {
                self.deliver(conn_of(conn), &Packet::PubComp(PubResp::success(pid(id))));
            }
            Op::Ping { conn } => self.deliver(conn_of(conn), &Packet::PingReq),
            Op::Disconnect {
                conn,
                reason,
                session_expiry,
            } => {
                let mut d = Disconnect::with_reason(ReasonCode(
                    DISCONNECT_REASONS[usize::from(reason) % DISCONNECT_REASONS.len()],
                ));
                d.properties.session_expiry_interval = session_expiry.map(expiry);
                self.deliver(conn_of(conn), &Packet::Disconnect(d));
            }
            Op::Raw { conn, ref bytes } => {
                let bytes = bytes.get(..64).unwrap_or(bytes);
                self.deliver_bytes(conn_of(conn), bytes);
            }
            Op::Lost { conn } => {
                let conn = conn_of(conn);
                if self.out.conns[conn].open {
                    // The socket is gone: nothing may be sent to it any more.
                    self.out.conns[conn] = ConnState::default();
                    self.broker.connection_lost(self.now, conn, &mut self.out);
                }
            }
            Op::Advance { secs } => self.advance(secs % 4096),
            Op::Drain { conn } => {
                // The socket took its backlog: the server reports it writable.
                self.out.conns[conn_of(conn)].pending = 0;
                self.broker.handle_writable(conn_of(conn));
            }
            Op::Shutdown => {
                self.broker.shutdown(self.now, &mut self.out);
                self.settle();
                for (i, c) in self.out.conns.iter().enumerate() {
                    assert!(!c.open, "connection {i} still open after shutdown");
                }
            }
        }
        self.settle();
        self.check(op);
    }
}

fuzz_target!(|input: Input| {
    let config = broker_config(&input.config);
    let max_inflight = usize::from(config.max_inflight_messages);
    let mut sim = Sim {
        broker: Broker::new(config),
        out: Recorder {
            conns: std::array::from_fn(|_| ConnState::default()),
            resumed: false,
            max_inflight,
            timers: Vec::new(),
            stored: Default::default(),
            messages: Default::default(),
            persistence: false,
            unsynced: 0,
            loads: Vec::new(),
        },
        now: Instant::now(),
    };
    // Persistence on for half the inputs (a spare bit): exercises durable
    // sessions, spilling offline queues and reading them back.
    if input.config.max_pending_bytes % 2 == 1 {
        sim.broker.enable_persistence(0, 0);
        sim.out.persistence = true;
    }
    for op in input.ops.iter().take(512) {
        sim.run(op);
        // The server's turn ends with the paced retained replay (bounded here).
        for _ in 0..4 {
            if !sim.broker.poll_replay(sim.now, &mut sim.out) {
                break;
            }
        }
        sim.check(&"poll_replay");
    }
});
