//! The broker state machine: sessions, subscriptions, retained messages, QoS flows
//! and wills. It never touches a socket or reads the clock: the server hands it
//! packets, connection events and the current time, and it answers through an
//! [`Output`] (send this, close that, wake me then).

mod aliases;
mod auth;
mod client_id;
mod client_ids;
mod conn_table;
mod connect;
mod deadlines;
mod durable;
mod filter_log;
mod hashing;
mod keyed_hash;
pub mod message;
mod mount;
pub mod output;
mod publish;
mod replay;
pub mod retained;
pub mod session;
pub mod shared;
mod slot_table;
mod subscribe;
mod sys_log;
mod sys_tree;
pub mod topic_index;

use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info};
use slab::Slab;

pub use output::{ConnId, IoCounters, Load, Output, Timer};

pub use crate::config::ListenerOptions;
use crate::logging::{LogStr, NOTICE};
use crate::protocol::{DecodeError, Disconnect, Packet, ProtocolVersion, QoS, ReasonCode};
use message::Message;
use output::TimerKind;
use retained::{Publisher, Retained, RetainedStore};
use session::Session;
use topic_index::SubscriptionIndex;

/// Broker settings, taken from the config file (see [`crate::config::Config`]).
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Maximum QoS 1/2 messages in flight to one client (`max_inflight_messages`); 0 = unlimited.
    pub max_inflight_messages: u16,
    /// Maximum messages queued per client behind the in-flight window
    /// (`max_queued_messages`); 0 = unlimited.
    pub max_queued_messages: usize,
    /// Maximum payload bytes queued per client (`max_queued_bytes`); 0 = unlimited.
    pub max_queued_bytes: usize,
    /// Queue QoS 0 messages for offline persistent sessions (`queue_qos0_messages`).
    pub queue_qos0_messages: bool,
    /// Largest PUBLISH payload accepted (`message_size_limit`); 0 = no limit beyond the packet size.
    pub message_size_limit: usize,
    /// Largest packet accepted from clients (`max_packet_size`), announced to v5 clients.
    pub max_packet_size: usize,
    /// Highest keep-alive accepted (`max_keepalive`); v5 clients asking for more get
    /// Server Keep Alive, 3.1.1 clients are accepted with the lower value enforced.
    pub max_keepalive: u16,
    /// Accept a zero-length client id (`allow_zero_length_clientid`).
    pub allow_zero_length_clientid: bool,
    /// How long a disconnected persistent 3.1.1 session is kept (`persistent_client_expiration`); None = forever.
    pub persistent_client_expiration: Option<Duration>,
    /// Accept and store retained messages (`retain_available`).
    pub retain_available: bool,
    /// In-session retransmission interval for 3.1/3.1.1 clients (`retry_interval`); None = off.
    pub retry_interval: Option<Duration>,
    /// How long a socket may stay open without sending CONNECT.
    pub connect_timeout: Duration,
    /// Bytes queued on a connection's socket above which QoS 0 messages to it are dropped.
    pub max_pending_bytes: usize,
    /// Most topic levels in a topic name or filter (`max_topic_levels`); 0 = no limit.
    pub max_topic_levels: usize,
    /// Most subscriptions one client may hold (`max_subscriptions_per_client`); 0 = no limit.
    pub max_subscriptions_per_client: usize,
    /// Most retained messages (`max_retained_messages`); 0 = no limit.
    pub max_retained_messages: usize,
    /// Most retained bytes (`max_retained_bytes`), counted by
    /// [`message::Message::stored_len`] plus [`retained::RETAINED_OVERHEAD`] each; 0 = no limit.
    pub max_retained_bytes: usize,
    /// Topic Alias Maximum announced to MQTT 5 clients (`max_topic_alias`); 0 = none.
    pub max_topic_alias: u16,
    /// Send topic aliases to MQTT 5 clients that accept them (`outgoing_topic_aliases`).
    pub outgoing_topic_aliases: bool,
    /// Response Information prefix for clients that request it
    /// (`response_information`); the client id is appended.
    pub response_information: Option<String>,
    /// Time between `$SYS` refreshes (`sys_interval`); zero = no `$SYS` tree.
    pub sys_interval: Duration,
    /// Log clients connecting and leaving (`connection_messages`).
    pub connection_messages: bool,
    /// Start of client ids the broker assigns (`auto_id_prefix`).
    pub auto_id_prefix: String,
    /// Only client ids starting with this may connect (`clientid_prefixes`).
    pub clientid_prefixes: Option<String>,
    /// Most payload bytes of outgoing QoS 1/2 messages in flight to one client
    /// (`max_inflight_bytes`); 0 = no limit. A message is let into the window
    /// while fewer bytes than this are in flight, so one larger message still
    /// goes, alone (mosquitto's rule).
    pub max_inflight_bytes: usize,
    /// Send a retained message to a new subscriber only while its publisher
    /// may still write its topic (`check_retain_source`).
    pub check_retain_source: bool,
    /// Deliver at the subscription's granted QoS even above the message's
    /// (`upgrade_outgoing_qos`; outside the MQTT specification, which says
    /// the lower of the two [MQTT-3.8.4-8]).
    pub upgrade_outgoing_qos: bool,
    /// Options of each listener, by listener number (`max_qos`, `mount_point`,
    /// `use_username_as_clientid`); a number without an entry has the defaults.
    pub listeners: Vec<ListenerOptions>,
}

/// The options of a listener number with no entry in [`BrokerConfig::listeners`]
/// (bridges' local side, library use): mosquitto's defaults.
static DEFAULT_LISTENER: ListenerOptions = ListenerOptions {
    max_qos: None,
    mount_point: None,
    use_username_as_clientid: false,
};

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            max_inflight_messages: 20,
            max_queued_messages: 1000,
            max_queued_bytes: 0,
            queue_qos0_messages: false,
            message_size_limit: 0,
            max_packet_size: crate::config::DEFAULT_MAX_PACKET_SIZE,
            max_keepalive: 65_535,
            allow_zero_length_clientid: true,
            persistent_client_expiration: None,
            retain_available: true,
            retry_interval: None,
            connect_timeout: Duration::from_secs(10),
            max_pending_bytes: 1 << 20,
            max_topic_levels: 201,
            max_subscriptions_per_client: 10_000,
            max_retained_messages: 100_000,
            max_retained_bytes: 16 << 20,
            max_topic_alias: 10,
            outgoing_topic_aliases: true,
            response_information: None,
            sys_interval: Duration::from_secs(10),
            connection_messages: true,
            auto_id_prefix: "auto-".to_string(),
            clientid_prefixes: None,
            max_inflight_bytes: 0,
            check_retain_source: true,
            upgrade_outgoing_qos: false,
            listeners: Vec::new(),
        }
    }
}

/// Counters for `$SYS` and for the logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Clients connected now.
    pub clients_connected: usize,
    /// PUBLISH packets received from clients.
    pub messages_received: u64,
    /// PUBLISH packets sent to clients.
    pub messages_sent: u64,
    /// Messages dropped for a subscriber (queue full, socket backed up, too large).
    pub messages_dropped: u64,
    /// Of `messages_dropped`: QoS 0 to a client whose socket stopped taking data.
    pub dropped_backlog: u64,
    /// Of `messages_dropped`: over `max_queued_messages` / `max_queued_bytes`.
    pub dropped_queue_full: u64,
    /// Of `messages_dropped`: larger than the client's Maximum Packet Size.
    pub dropped_too_large: u64,
    /// Of `messages_dropped`: incoming QoS 0 PUBLISHes dropped while the heap
    /// was over `memory_limit`.
    pub dropped_memory_limit: u64,
    /// Incoming QoS 1/2 PUBLISHes refused while the heap was over
    /// `memory_limit` (v5: 0x97; 3.1/3.1.1: disconnected).
    pub refused_memory_limit: u64,
    /// MQTT packets of every type received from clients.
    pub packets_received: u64,
    /// Payload bytes of PUBLISH packets received.
    pub publish_bytes_received: u64,
    /// Payload bytes of PUBLISH packets sent.
    pub publish_bytes_sent: u64,
    /// Sockets accepted.
    pub sockets_opened: u64,
    /// CONNECT packets received.
    pub connects: u64,
    /// Disconnected sessions removed because they expired.
    pub clients_expired: u64,
}

/// A connection as the broker sees it. Every client has one: its fields are
/// as narrow as their ranges allow, and what only the CONNECT needs is boxed
/// apart (40 bytes; 72 with an `Instant` and word-sized keys).
#[derive(Debug)]
struct Conn {
    /// Guards this connection's timers (the server reuses ConnIds).
    serial: u64,
    /// What matters only until CONNECT is accepted (dropped then: a connected
    /// client pays one pointer for it).
    greeting: Option<Box<Greeting>>,
    /// The session attached once CONNECT succeeded ([`NO_SESSION`]: none);
    /// see [`Conn::session`].
    skey: u32,
    /// Protocol version (from CONNECT).
    version: ProtocolVersion,
    /// Keep-alive in force, seconds; 0 = none.
    keep_alive: u16,
    /// When the last packet arrived, in [`Ticks`] (keep-alive is checked
    /// against it lazily).
    last_seen: u32,
    /// Topic aliases, both directions (v5; empty and unallocated otherwise).
    aliases: aliases::TopicAliases,
    /// Complaint lines logged about it (bounded: see `Broker::complain`).
    complaints: crate::logging::Complaints,
    /// The client announced itself as a bridge (protocol level | 0x80, as
    /// mosquitto's `try_private`): its own messages are not sent back to it and
    /// retained flags reach it as published.
    bridge: bool,
}

/// Times in milliseconds since the broker's first connection, wrapping at
/// 2^32 (49.7 days): a connection's last activity in 4 bytes instead of an
/// `Instant`'s 16 (see [`Conn::last_seen`]).
#[derive(Debug, Default)]
struct Ticks {
    /// The time they count from (the first one converted).
    epoch: Option<Instant>,
    /// The last time converted, and its tick: the shell hands every packet
    /// of a loop turn the same `now`, so most conversions are a comparison.
    last: Option<(Instant, u32)>,
}

impl Ticks {
    /// `now` as a tick.
    fn at(&mut self, now: Instant) -> u32 {
        match self.last {
            Some((t, tick)) if t == now => tick,
            _ => self.convert(now),
        }
    }

    /// `now` as a tick, computed (once per loop turn: kept out of line, so
    /// the per-packet path stays small).
    #[cold]
    #[inline(never)]
    fn convert(&mut self, now: Instant) -> u32 {
        let epoch = *self.epoch.get_or_insert(now);
        let d = now.saturating_duration_since(epoch);
        let tick = (d.as_secs().wrapping_mul(1000) + u64::from(d.subsec_millis())) as u32;
        self.last = Some((now, tick));
        tick
    }

    /// Time from tick `then` to `now`, exact to the millisecond up to 24
    /// days; 0 when `now` is a little earlier (times handed over within one
    /// loop turn need not be in order).
    fn since(&mut self, then: u32, now: Instant) -> Duration {
        let ms = self.at(now).wrapping_sub(then) as i32;
        Duration::from_millis(u64::try_from(ms).unwrap_or(0))
    }
}

/// [`Conn::session`]'s "no session": session keys are slab keys of sessions
/// in memory, far below it.
const NO_SESSION: u32 = u32::MAX;

/// A connection's state before its CONNECT is accepted.
#[derive(Debug, Default)]
struct Greeting {
    /// Peer address for logs (a connected client is named by its client id).
    peer: Box<str>,
    /// Listener the socket came in on (selects the security rules; once
    /// connected, its session keeps it).
    listener: usize,
    /// TLS client certificate name (CN or subject), when the listener uses it.
    identity: Option<Box<str>>,
    /// A refusal waiting for its delay to pass (version, reason).
    refusal: Option<(ProtocolVersion, ReasonCode)>,
    /// Its CONNECT (and what followed) waiting for password-hashing budget.
    held: Option<Box<hashing::Held>>,
}

impl Conn {
    /// The session attached, once CONNECT succeeded.
    fn session(&self) -> Option<usize> {
        (self.skey != NO_SESSION).then_some(self.skey as usize)
    }

    /// The listener the socket came in on, until CONNECT is accepted.
    fn listener(&self) -> Option<usize> {
        self.greeting.as_deref().map(|g| g.listener)
    }

    /// The peer address for logs ("?" once connected: the client id names it).
    fn peer(&self) -> &str {
        self.greeting.as_deref().map_or("?", |g| &g.peer)
    }

    /// The pre-CONNECT state, made if it is gone.
    fn greeting_mut(&mut self) -> &mut Greeting {
        self.greeting.get_or_insert_with(|| {
            Box::new(Greeting {
                peer: "?".into(),
                ..Greeting::default()
            })
        })
    }

    /// Waiting for a delayed refusal.
    fn refusal(&self) -> Option<(ProtocolVersion, ReasonCode)> {
        self.greeting.as_deref().and_then(|g| g.refusal)
    }

    /// The held CONNECT, if any.
    fn held_mut(&mut self) -> Option<&mut Box<hashing::Held>> {
        self.greeting.as_deref_mut().and_then(|g| g.held.as_mut())
    }
}

/// Why a connection ends; decides the will, the DISCONNECT and the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The client sent DISCONNECT (v5 may ask for the will with 0x04).
    Disconnect { with_will: bool },
    /// The socket closed or failed.
    Lost,
    /// No packet within 1.5 x keep-alive.
    KeepAlive,
    /// A protocol violation: v5 gets DISCONNECT with this reason.
    ProtocolError(ReasonCode),
    /// Another connection took the session over.
    TakenOver,
    /// The broker is shutting down.
    Shutdown,
}

/// The broker. See the module documentation.
pub struct Broker {
    config: BrokerConfig,
    conns: conn_table::ConnTable<Conn>,
    sessions: Slab<Session>,
    by_client_id: client_ids::ClientIds,
    subscriptions: SubscriptionIndex<usize>,
    shared: shared::SharedSubscriptions,
    retained: RetainedStore<Retained>,
    /// A retained store refusal was logged; cleared when the store has room again.
    retained_full: bool,
    /// Sessions with retained replays pending (see `replay.rs`); may hold
    /// duplicates and sessions that are gone, skipped when polled.
    replaying: Vec<usize>,
    /// Position in `replaying` where the next turn's replay budget starts.
    replay_next: usize,
    security: crate::auth::Security,
    /// Durable changes are reported through `Output::persist`.
    persistence: bool,
    /// Last number given to a stored message or delivery.
    next_message_id: u64,
    /// Last number given to a durable session.
    next_sid: u32,
    /// The message whose content this fan-out already wrote to the log, and
    /// its number: the next durable session gets a reference to it, not a copy.
    /// Cleared when the fan-out ends (the log may forget a message nobody
    /// references once the loop turn is over).
    stored_msg: Option<(std::sync::Weak<Message>, u64)>,
    /// Messages no one holds any more, for later PUBLISHes to refill
    /// ([`Broker::recycle`]).
    spare_messages: Vec<Arc<Message>>,
    /// Wall-clock time (Unix ms) at a monotonic instant, given by the shell
    /// (the broker never reads a clock): ages of stored messages, client ids.
    /// `None` until the shell gives one (wall time then reads as 0).
    wall_anchor: Option<(Instant, u64)>,
    next_serial: u64,
    /// Times as connections' last activity keeps them.
    ticks: Ticks,
    stats: Stats,
    /// Reused by routing to collect matches without allocating per message.
    scratch: Vec<publish::Hit>,
    /// The `$SYS` publisher's state, once started (`sys_interval` > 0).
    sys_tree: Option<Box<sys_tree::SysTree>>,
    /// When disconnected sessions expire and delayed wills are due.
    deadlines: deadlines::Deadlines,
    /// Password hashing budget and verified-credentials cache.
    hashing: hashing::Hashing,
}

impl Broker {
    /// A broker with no sessions.
    pub fn new(config: BrokerConfig) -> Self {
        let limits = retained::Limits {
            max_messages: config.max_retained_messages,
            max_bytes: config.max_retained_bytes,
        };
        Broker {
            config,
            conns: conn_table::ConnTable::default(),
            sessions: Slab::new(),
            by_client_id: client_ids::ClientIds::default(),
            subscriptions: SubscriptionIndex::new(),
            shared: shared::SharedSubscriptions::default(),
            retained: RetainedStore::new(limits),
            retained_full: false,
            replaying: Vec::new(),
            replay_next: 0,
            // No rules until `set_security` (library use, tests); the server
            // installs the configured ones before the first client.
            security: crate::auth::Security::allow_all(),
            persistence: false,
            next_message_id: 0,
            next_sid: 0,
            stored_msg: None,
            spare_messages: Vec::new(),
            wall_anchor: None,
            next_serial: 0,
            ticks: Ticks::default(),
            stats: Stats::default(),
            scratch: Vec::new(),
            sys_tree: None,
            deadlines: deadlines::Deadlines::default(),
            hashing: hashing::Hashing::default(),
        }
    }

    /// The settings in force.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// The options of listener number `listener`.
    fn listener_options(&self, listener: usize) -> &ListenerOptions {
        self.config
            .listeners
            .get(listener)
            .unwrap_or(&DEFAULT_LISTENER)
    }

    /// The `mount_point` of `listener`, if it has one.
    fn mount_point(&self, listener: usize) -> Option<&str> {
        self.listener_options(listener).mount_point.as_deref()
    }

    /// The highest QoS clients of `listener` may use (`max_qos`).
    fn max_qos(&self, listener: usize) -> QoS {
        match self.listener_options(listener).max_qos {
            Some(0) => QoS::AtMostOnce,
            Some(1) => QoS::AtLeastOnce,
            _ => QoS::ExactlyOnce,
        }
    }

    /// The QoS of one delivery: the lower of the granted and the published
    /// QoS [MQTT-3.8.4-8], or the granted one with `upgrade_outgoing_qos`.
    fn delivery_qos(&self, granted: QoS, published: QoS) -> QoS {
        if self.config.upgrade_outgoing_qos {
            granted
        } else {
            granted.min(published)
        }
    }

    /// Install password, ACL and certificate-identity rules (at start and on
    /// SIGHUP: connected clients keep their sessions, new checks use the new rules).
    pub fn set_security(&mut self, security: crate::auth::Security) {
        self.security = security;
        self.hashing.forget_verified();
    }

    /// The TLS handshake of `conn` completed with this client certificate name
    /// (CN, or the subject with `use_subject_as_username`), if any.
    pub fn set_identity(&mut self, conn: ConnId, identity: Option<&str>) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if let Some(identity) = identity {
                c.greeting_mut().identity = Some(identity.into());
            }
        }
    }

    /// True once `conn`'s CONNECT has been accepted (a session is attached).
    pub fn is_connected(&self, conn: ConnId) -> bool {
        self.conns.get(&conn).is_some_and(|c| c.session().is_some())
    }

    /// The CONNECT about to be handed over on `conn` came from a bridge
    /// (protocol level 0x83/0x84, see [`crate::protocol::decode::bridge_marker`]).
    pub fn set_bridge(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.bridge = true;
        }
    }

    /// Counters since start.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Number of sessions (connected or not).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Number of retained messages.
    pub fn retained_count(&self) -> usize {
        self.retained.len()
    }

    /// The wall-clock time is `unix_ms` (milliseconds since 1970) at `now`. The
    /// shell calls this before handing over stored state and once per loop
    /// turn; the broker extrapolates with the monotonic time it is given.
    pub fn set_wall_clock(&mut self, now: Instant, unix_ms: u64) {
        self.wall_anchor = Some((now, unix_ms));
    }

    /// Wall-clock milliseconds at `now` (from the last anchor the shell gave).
    fn wall_ms(&self, now: Instant) -> u64 {
        let Some((at, ms)) = self.wall_anchor else {
            return 0;
        };
        let since = now.saturating_duration_since(at).as_millis();
        let before = at.saturating_duration_since(now).as_millis();
        (u128::from(ms) + since).saturating_sub(before) as u64
    }

    fn serial(&mut self) -> u64 {
        self.next_serial += 1;
        self.next_serial
    }

    /// A socket was accepted on listener number `listener`. `peer` is its address as
    /// logged ("127.0.0.1:50000"). Arms the CONNECT timeout.
    pub fn connection_opened(
        &mut self,
        now: Instant,
        conn: ConnId,
        peer: &str,
        listener: usize,
        out: &mut impl Output,
    ) {
        let serial = self.serial();
        self.stats.sockets_opened += 1;
        let tick = self.ticks.at(now);
        self.conns.insert(
            conn,
            Conn {
                serial,
                greeting: Some(Box::new(Greeting {
                    peer: peer.into(),
                    listener,
                    ..Greeting::default()
                })),
                skey: NO_SESSION,
                version: ProtocolVersion::V311,
                keep_alive: 0,
                last_seen: tick,
                aliases: aliases::TopicAliases::default(),
                complaints: Default::default(),
                bridge: false,
            },
        );
        out.set_timer(
            now + self.config.connect_timeout,
            Timer::new(TimerKind::ConnectTimeout(conn), serial),
        );
    }

    /// A packet arrived on `conn`. Borrowed: a decoded packet stays where the
    /// decoder put it (a PUBLISH is ~300 bytes, and each move is a copy).
    pub fn handle_packet(
        &mut self,
        now: Instant,
        conn: ConnId,
        packet: &Packet<'_>,
        out: &mut impl Output,
    ) {
        let tick = self.ticks.at(now);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        self.stats.packets_received += 1;
        c.last_seen = tick;
        if c.refusal().is_some() {
            // Waiting to be refused: nothing else is processed.
            return;
        }
        if let Some(held) = c.held_mut() {
            // Its CONNECT waits for hashing budget: what follows waits behind it.
            if !held.push(packet) {
                debug!(
                    "Connection from {} sent too much behind a held CONNECT: closing.",
                    c.peer()
                );
                self.conns.remove(&conn);
                out.close_with(conn, ReasonCode::QUOTA_EXCEEDED);
            }
            return;
        }
        let Some(skey) = c.session().filter(|s| self.sessions.contains(*s)) else {
            // [MQTT-3.1.0-1] the first packet must be CONNECT.
            match packet {
                Packet::Connect(connect) => {
                    self.stats.connects += 1;
                    self.handle_connect(now, conn, connect, out)
                }
                other => {
                    debug!(
                        "Connection from {} sent {:?} before CONNECT: closing.",
                        c.peer(),
                        other.packet_type()
                    );
                    self.conns.remove(&conn);
                    out.close_with(conn, ReasonCode::PROTOCOL_ERROR);
                }
            }
            return;
        };
        match packet {
            Packet::Publish(p) => self.handle_publish(now, conn, skey, p, out),
            Packet::PubAck(r) => self.handle_puback(now, skey, r, out),
            Packet::PubRec(r) => self.handle_pubrec(now, skey, r, out),
            Packet::PubRel(r) => self.handle_pubrel(conn, skey, r, out),
            Packet::PubComp(r) => self.handle_pubcomp(now, skey, r, out),
            Packet::Subscribe(s) => self.handle_subscribe(now, conn, skey, s, out),
            Packet::Unsubscribe(u) => self.handle_unsubscribe(conn, skey, u, out),
            Packet::PingReq => {
                let v = self.sessions[skey].version;
                out.send(conn, v, &Packet::PingResp);
            }
            Packet::Disconnect(d) => self.handle_disconnect(now, conn, skey, d, out),
            // [MQTT-3.1.0-2] a second CONNECT is a protocol violation; so are
            // server-to-client packets, and AUTH without enhanced authentication.
            other => {
                debug!(
                    "Client {} sent {:?}: protocol error.",
                    LogStr(&self.sessions[skey].client_id),
                    other.packet_type()
                );
                self.end(
                    now,
                    conn,
                    End::ProtocolError(ReasonCode::PROTOCOL_ERROR),
                    out,
                );
            }
        }
    }

    /// The bytes on `conn` are not valid MQTT. The broker answers as the spec says
    /// (CONNACK for a bad CONNECT, DISCONNECT with a reason for v5) and closes it.
    pub fn handle_decode_error(
        &mut self,
        now: Instant,
        conn: ConnId,
        error: &DecodeError,
        out: &mut impl Output,
    ) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if c.session().is_none() {
            if let DecodeError::UnsupportedProtocolVersion(level) = error {
                // [MQTT-3.1.2-2] CONNACK 0x01 (v5: 0x84), then close.
                info!(
                    "Client connection from {} refused: unsupported protocol level {level}.",
                    c.peer()
                );
                // The client speaks a level we do not know: answer in the 3.1.1
                // form every level understands (0x84 becomes 0x01), as mosquitto.
                out.send(
                    conn,
                    ProtocolVersion::V311,
                    &connack(false, ReasonCode::UNSUPPORTED_PROTOCOL_VERSION),
                );
            } else {
                info!("Bad CONNECT from {}: {error}.", c.peer());
            }
            self.conns.remove(&conn);
            out.close_with(conn, error.reason_code());
            return;
        }
        let name = self.client_name(conn);
        info!("Client {name} disconnected due to malformed packet: {error}.");
        self.end(now, conn, End::ProtocolError(error.reason_code()), out);
    }

    /// The socket closed or failed without the broker asking (EOF, reset, write error).
    /// Publishes the will if one is due. A no-op for connections the broker closed.
    pub fn connection_lost(&mut self, now: Instant, conn: ConnId, out: &mut impl Output) {
        self.end(now, conn, End::Lost, out);
    }

    /// A timer armed through [`Output::set_timer`] is due.
    pub fn handle_timer(&mut self, now: Instant, timer: Timer, out: &mut impl Output) {
        match timer.kind {
            TimerKind::ConnectTimeout(conn) => {
                let Some(c) = self.conns.get(&conn) else {
                    return;
                };
                if !timer.is_for(c.serial) {
                    return;
                }
                if c.session().is_some() {
                    // Connected since: this timer carries on as its keep-alive
                    // check (armed here instead of at CONNECT: one entry per
                    // connection in the wheel, not two).
                    if c.keep_alive > 0
                        && keep_alive_grace(c.keep_alive) >= self.config.connect_timeout
                    {
                        let t = Timer {
                            kind: TimerKind::KeepAlive(conn),
                            ..timer
                        };
                        self.handle_timer(now, t, out);
                    }
                    return;
                }
                {
                    info!(
                        "Client connection from {} timed out before CONNECT.",
                        c.peer()
                    );
                    self.conns.remove(&conn);
                    out.close_with(conn, ReasonCode::KEEP_ALIVE_TIMEOUT);
                }
            }
            TimerKind::KeepAlive(conn) => {
                let Some(c) = self.conns.get(&conn) else {
                    return;
                };
                if !timer.is_for(c.serial) || c.keep_alive == 0 {
                    return;
                }
                // A check comes at least once per grace (at most 27 hours),
                // well inside the ticks' range. A tick is rounded down (the
                // packet may have come up to 1 ms after it), so the grace is
                // past only when the ticks say more than it.
                let grace = keep_alive_grace(c.keep_alive);
                let elapsed = self.ticks.since(c.last_seen, now);
                if elapsed > grace {
                    let name = self.client_name(conn);
                    info!("Client {name} has exceeded timeout, disconnecting.");
                    self.end(now, conn, End::KeepAlive, out);
                } else {
                    // Lazy re-arm: packets only update `last_seen`.
                    out.set_timer(now + (grace - elapsed) + Duration::from_millis(1), timer);
                }
            }
            TimerKind::Retry(conn) => self.retry(now, conn, timer, out),
            TimerKind::Refuse(conn) => {
                let Some(c) = self.conns.get(&conn) else {
                    return;
                };
                if let (true, Some((version, reason))) = (timer.is_for(c.serial), c.refusal()) {
                    out.send(conn, version, &connack(false, reason));
                    self.conns.remove(&conn);
                    out.close_with(conn, reason);
                }
            }
            TimerKind::WillDelay(skey) => {
                let Some(s) = self.sessions.get_mut(skey) else {
                    return;
                };
                if !timer.is_for(s.serial) || s.conn().is_some() {
                    return;
                }
                if let Some(w) = s.take_will() {
                    let from = publisher_of(self.config.check_retain_source, s);
                    self.persist_will(skey, None, out);
                    self.publish_will(now, w.msg, from, out);
                }
            }
            TimerKind::SysTree => self.sys_tree_tick(now, out),
            TimerKind::Resume(conn) => self.resume_held(now, conn, timer, out),
            TimerKind::Deadlines => {
                for (skey, kind) in self.deadlines.fired(now, out) {
                    self.deadline_due(now, skey, kind, out);
                }
            }
            TimerKind::SessionExpiry(skey) => {
                let Some(s) = self.sessions.get(skey) else {
                    return;
                };
                if timer.is_for(s.serial) && s.conn().is_none() {
                    debug!("Session of {} expired.", LogStr(&s.client_id));
                    self.stats.clients_expired += 1;
                    self.remove_session(now, skey, out);
                }
            }
        }
    }

    /// A session deadline is due. The pending deadline is always the one set at
    /// the session's latest disconnect, so only "is it still offline" matters.
    fn deadline_due(
        &mut self,
        now: Instant,
        skey: usize,
        kind: deadlines::Deadline,
        out: &mut impl Output,
    ) {
        let Some(s) = self.sessions.get_mut(skey) else {
            return;
        };
        if s.conn().is_some() {
            return;
        }
        match kind {
            deadlines::Deadline::Will => {
                if let Some(w) = s.take_will() {
                    let from = publisher_of(self.config.check_retain_source, s);
                    self.persist_will(skey, None, out);
                    self.publish_will(now, w.msg, from, out);
                }
            }
            deadlines::Deadline::SessionExpiry => {
                debug!("Session of {} expired.", LogStr(&s.client_id));
                self.stats.clients_expired += 1;
                self.remove_session(now, skey, out);
            }
        }
    }

    /// The server is shutting down: tell v5 clients (DISCONNECT 0x8B) and close every
    /// connection. Wills are not published (see README).
    pub fn shutdown(&mut self, now: Instant, out: &mut impl Output) {
        let conns: Vec<ConnId> = self.conns.keys().collect();
        for conn in conns {
            self.end(now, conn, End::Shutdown, out);
        }
    }

    /// May a complaint about `conn` (a refused filter, a dropped or denied
    /// publish) at `level` be logged? `Some(suffix)` to append to the line:
    /// empty, or for the last line of the connection's budget a note that
    /// further complaints are not logged. Lines that would not be written
    /// anyway (their type is off) spend nothing.
    fn complain(&mut self, conn: ConnId, level: log::Level) -> Option<&'static str> {
        if !log::log_enabled!(target: "midge", level) {
            return None;
        }
        match self.conns.get_mut(&conn)?.complaints.count() {
            crate::logging::Verdict::Log => Some(""),
            crate::logging::Verdict::LogLast => {
                Some(" (further complaints about this connection are not logged)")
            }
            crate::logging::Verdict::Quiet => None,
        }
    }

    /// The client id of `conn` for logs, or its address before CONNECT.
    fn client_name(&self, conn: ConnId) -> String {
        match self.conns.get(&conn) {
            Some(c) if c.session().is_some() => c
                .session()
                .and_then(|s| self.sessions.get(s))
                .map_or_else(String::new, |s| LogStr(&s.client_id).to_string()),
            Some(c) => format!("<unknown> from {}", c.peer()),
            None => String::new(),
        }
    }

    /// End connection `conn`: the will, the session's fate, the DISCONNECT, the close.
    fn end(&mut self, now: Instant, conn: ConnId, why: End, out: &mut impl Output) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        let reason = match why {
            End::ProtocolError(r) => r,
            End::TakenOver => ReasonCode::SESSION_TAKEN_OVER,
            End::KeepAlive => ReasonCode::KEEP_ALIVE_TIMEOUT,
            End::Shutdown => ReasonCode::SERVER_SHUTTING_DOWN,
            End::Disconnect { .. } | End::Lost => ReasonCode::NORMAL_DISCONNECTION,
        };
        // Only MQTT 5 has a server DISCONNECT [MQTT-3.14.0-1].
        let tell = matches!(
            why,
            End::ProtocolError(_) | End::TakenOver | End::KeepAlive | End::Shutdown
        );
        if tell && c.version.is_v5() && c.session().is_some() {
            out.send(
                conn,
                c.version,
                &Packet::Disconnect(Disconnect::with_reason(reason)),
            );
        }
        if why != End::Lost {
            out.close_with(conn, reason);
        }
        let Some(skey) = c.session() else {
            return;
        };
        self.stats.clients_connected = self.stats.clients_connected.saturating_sub(1);
        let Some(s) = self.sessions.get_mut(skey) else {
            return;
        };
        // mosquitto logs every DISCONNECT the same way, 0x04 (with will) too.
        match why {
            _ if !self.config.connection_messages => {}
            End::Disconnect { .. } => {
                info!(target: NOTICE, "Client {} disconnected.", LogStr(&s.client_id));
            }
            End::Lost => {
                info!(target: NOTICE, "Client {} closed its connection.", LogStr(&s.client_id))
            }
            _ => {}
        }
        s.set_conn(None);
        if self.persistence && !s.expiry.ends_with_connection() {
            // Offline with persistence: queued messages live in the log only.
            s.spill();
        }
        let serial = self.serial();
        let Some(s) = self.sessions.get_mut(skey) else {
            return;
        };
        s.serial = serial;
        // [MQTT-3.1.2-8] the will is published when the connection ends without a
        // normal DISCONNECT; [MQTT-3.1.2-10] removed after a normal DISCONNECT.
        let will_due = matches!(
            why,
            End::Disconnect { with_will: true }
                | End::Lost
                | End::KeepAlive
                | End::ProtocolError(_)
                | End::TakenOver
        );
        if !will_due {
            s.set_will(None);
        }
        let session_ends = s.expiry.ends_with_connection();
        if let Some(w) = s.will() {
            if w.delay == 0 || session_ends {
                if let Some(w) = s.take_will() {
                    let from = publisher_of(self.config.check_retain_source, s);
                    self.publish_will(now, w.msg, from, out);
                }
            } else {
                // 3.1.3.2.2: published after the delay unless the client comes back.
                let at = now + Duration::from_secs(u64::from(w.delay));
                if self.persistence && !session_ends {
                    // Survives a restart during the delay.
                    self.persist_will(skey, Some(&w), out);
                }
                self.deadlines
                    .schedule(now, skey, deadlines::Deadline::Will, at, out);
            }
        }
        if why == End::TakenOver {
            // The new connection attaches to (or replaces) the session next.
            return;
        }
        // One pending expiry per session, replaced at each disconnect (issue 10
        // item 9: a timer per disconnect piled up for as long as the expiry).
        match self.sessions[skey].expiry.duration() {
            Some(d) if d.is_zero() => self.remove_session(now, skey, out),
            Some(d) => {
                self.deadlines
                    .schedule(now, skey, deadlines::Deadline::SessionExpiry, now + d, out)
            }
            None => self
                .deadlines
                .cancel(skey, deadlines::Deadline::SessionExpiry),
        }
    }

    /// Drop a session: its subscriptions leave the index, its queue is freed, a
    /// will still waiting for its delay is published now (3.1.3.2.2).
    fn remove_session(&mut self, now: Instant, skey: usize, out: &mut impl Output) {
        let Some(mut s) = self.sessions.try_remove(skey) else {
            return;
        };
        // The slot may be reused: its deadlines go with it.
        self.deadlines.cancel_session(skey);
        // Only a session that was durable has records to delete.
        if self.persistence && s.sid != 0 {
            out.persist(&crate::persist::Record::SessionDelete(s.sid));
        }
        for f in s.subscriptions.iter() {
            self.unsubscribe_held(f, skey);
        }
        // Out of the slab already: its id is compared from here.
        let sessions = &self.sessions;
        self.by_client_id.remove(&s.client_id, skey, |k| {
            if k == skey {
                &s.client_id
            } else {
                client_id_of(sessions, k)
            }
        });
        if let Some(w) = s.take_will() {
            let from = publisher_of(self.config.check_retain_source, &mut s);
            self.publish_will(now, w.msg, from, out);
        }
    }

    /// Publish a message as the broker itself (a bridge's connection state):
    /// routed to subscribers and, when `retain`, stored like any retained message.
    pub fn publish_local(
        &mut self,
        now: Instant,
        topic: &str,
        payload: &[u8],
        qos: crate::protocol::QoS,
        retain: bool,
        out: &mut impl Output,
    ) {
        let will = crate::protocol::Will {
            topic,
            payload,
            qos,
            retain,
            properties: crate::protocol::Properties::default(),
        };
        self.publish_will(now, Arc::new(Message::from_will(&will, now)), None, out);
    }

    /// Publish a will (or the broker's own message, `from` = `None`).
    fn publish_will(
        &mut self,
        now: Instant,
        msg: Arc<Message>,
        from: Option<Arc<Publisher>>,
        out: &mut impl Output,
    ) {
        debug!("Publishing will on {}.", LogStr(&msg.topic));
        // A will the full store cannot keep is still delivered to subscribers:
        // nobody is left to tell.
        if msg.retain {
            self.store_retained(&msg, from, out);
        }
        self.route(now, &msg, None, out);
    }

    /// Check the broker's internal consistency (for tests and the fuzzer): packet
    /// ids in flight unique and non-zero, windows and queue limits respected,
    /// sessions and connections pointing at each other, and no subscription in the
    /// index without a live session.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut subscription_count = 0;
        let mut shared_count = 0;
        for (key, s) in self.sessions.iter() {
            let mut ids: Vec<u16> = s.inflight.iter().map(|i| i.packet_id).collect();
            if ids.contains(&0) {
                return Err(format!("{}: packet id 0 in flight", s.client_id));
            }
            ids.sort_unstable();
            if ids.windows(2).any(|w| w[0] == w[1]) {
                return Err(format!("{}: duplicate packet id in flight", s.client_id));
            }
            if s.outstanding() > usize::from(s.send_window) {
                return Err(format!("{}: in flight beyond the window", s.client_id));
            }
            let max_q = self.config.max_queued_messages;
            if max_q != 0 && s.queue.len() > max_q {
                return Err(format!("{}: queue over max_queued_messages", s.client_id));
            }
            let bytes: usize = s.queue.iter().map(|q| q.payload_len()).sum();
            if bytes != s.queued_bytes() {
                return Err(format!("{}: queued byte count off", s.client_id));
            }
            if let Some(conn) = s.conn() {
                if self.conns.get(&conn).and_then(Conn::session) != Some(key) {
                    return Err(format!("{}: connection does not point back", s.client_id));
                }
            }
            if self
                .by_client_id
                .get(&s.client_id, |k| client_id_of(&self.sessions, k))
                != Some(key)
            {
                return Err(format!("{}: not in the client id map", s.client_id));
            }
            for held in s.subscriptions.iter() {
                let f = self.filter_text(held);
                let present = match held {
                    session::FilterRef::Shared(_) => {
                        shared_count += 1;
                        shared_filter(f).is_some() && self.shared.is_member(f, key)
                    }
                    session::FilterRef::Plain(id) => {
                        subscription_count += 1;
                        shared_filter(f).is_none()
                            && self.subscriptions.id(f) == Some(id)
                            && self.subscriptions.get(f, key).is_some()
                    }
                };
                if !present {
                    return Err(format!("{}: subscription {f} missing", s.client_id));
                }
            }
        }
        if subscription_count != self.subscriptions.len() || shared_count != self.shared.len() {
            return Err(format!(
                "index has {}+{} subscriptions, sessions {subscription_count}+{shared_count}",
                self.subscriptions.len(),
                self.shared.len()
            ));
        }
        if self.by_client_id.len() != self.sessions.len() {
            return Err("client id map and sessions differ".into());
        }
        // One deadline of each kind per session; a bounded number of wheel timers.
        if self.deadlines.len() > 2 * self.sessions.len() || self.deadlines.armed() > 64 {
            return Err(format!(
                "{} session deadlines, {} wheel timers for {} sessions",
                self.deadlines.len(),
                self.deadlines.armed(),
                self.sessions.len()
            ));
        }
        for (id, c) in self.conns.iter() {
            if let Some(skey) = c.session() {
                if self.sessions.get(skey).and_then(|s| s.conn()) != Some(id) {
                    return Err(format!("connection {id} points at a session not its own"));
                }
            }
        }
        Ok(())
    }
}

/// The client id of session `skey` (empty if there is none), for
/// [`client_ids::ClientIds`], which keeps ids only in their sessions.
fn client_id_of(sessions: &Slab<Session>, skey: usize) -> &str {
    sessions.get(skey).map_or("", |s| &s.client_id)
}

/// Who session `s` is, as the publisher of the retained messages (and
/// retained wills) it sends, when `check` (`check_retain_source`) is on: built
/// once per connection and shared by all of them. Bridges' local sides are the
/// broker's own and are not checked.
fn publisher_of(check: bool, s: &mut Session) -> Option<Arc<Publisher>> {
    let listener = s.listener();
    if !check || listener == crate::auth::BRIDGE_LISTENER {
        return None;
    }
    let p = s.extra.publisher.get_or_insert_with(|| {
        Arc::new(Publisher {
            client_id: s.client_id.clone(),
            username: s.username.clone(),
            listener,
        })
    });
    Some(Arc::clone(p))
}

/// The plain filter of a shared subscription `$share/{group}/{filter}`, or None
/// for an ordinary filter.
fn shared_filter(filter: &str) -> Option<&str> {
    crate::protocol::topic::parse_shared(filter).map(|(_, f)| f)
}

/// Number of levels in a topic name or filter (`a/b/c` has 3).
fn topic_levels(topic: &str) -> usize {
    topic.bytes().filter(|&b| b == b'/').count() + 1
}

/// 1.5 x keep-alive [MQTT-3.1.2-24].
fn keep_alive_grace(keep_alive: u16) -> Duration {
    Duration::from_millis(u64::from(keep_alive) * 1500)
}

/// A CONNACK with no properties.
fn connack(session_present: bool, reason: ReasonCode) -> Packet<'static> {
    Packet::ConnAck(crate::protocol::ConnAck {
        session_present,
        reason,
        properties: crate::protocol::Properties::default(),
    })
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod replay_tests;
