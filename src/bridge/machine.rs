//! One bridge as a state machine with no I/O. The server feeds it what happened
//! (name resolved, TCP connected, bytes from the remote, packets the broker sent
//! to the bridge's local session, time passing) and carries out what it asks
//! ([`Action`]s, bytes for the remote, packets for the broker).
//!
//! The local side is one more client of the broker core: an MQTT 5 session named
//! `local_clientid`, connected only while the remote link is up. While the link is
//! down the session is offline, so messages for the remote queue in it like in
//! any offline session (in the log with `persistence true`). Packet ids are
//! passed through unchanged in both directions, so an acknowledgement travels
//! back to whoever sent the message: the broker forgets an outgoing message only
//! when the remote acknowledged it, and the remote's message is acknowledged only
//! when the broker did (after its log is synced).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::backoff::Backoff;
use super::config::{BridgeConfig, StartType};
use super::map::TopicMap;
use crate::logging::LogStr;
use crate::protocol::{
    decode, encode, encoded_len, ConnAck, Connect, DecodeLimits, Decoded, Disconnect, Packet,
    Properties, ProtocolVersion, PubResp, Publish, QoS, ReasonCode, RetainHandling, Subscribe,
    SubscriptionOptions, Unsubscribe, Will,
};

/// How long a TCP connect, TLS handshake and CONNACK may take together.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Bytes waiting for the remote socket above which QoS 0 messages are dropped
/// (QoS 1/2 are bounded by the in-flight window instead).
const MAX_REMOTE_BACKLOG: usize = 8 << 20;
/// Largest packet accepted from the remote.
const MAX_REMOTE_PACKET: usize = 268_435_460;
/// How often a bridge on a backup address (`round_robin false`) checks whether
/// the first address answers again: mosquitto's 5 s. The check is a TCP
/// connect, as mosquitto's; when it succeeds the bridge moves back.
const PRIMARY_PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// What the bridge asks the server to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Resolve `host` off the loop thread; answer with [`Bridge::resolved`].
    Resolve(String, u16),
    /// Open a TCP connection (then TLS when configured); answer with
    /// [`Bridge::connected`] or [`Bridge::link_failed`].
    Connect(SocketAddr),
    /// Close the remote socket.
    CloseRemote,
    /// Attach the local session: open the local connection (its CONNECT follows
    /// in an [`Action::Local`]).
    OpenLocal,
    /// Encoded MQTT 5 packets from the local session for the broker.
    Local(Vec<u8>),
    /// Acknowledgements from the local session for the broker, in order (after
    /// the packets of the [`Action::Local`] before them).
    LocalAcks(Vec<LocalAck>),
    /// Detach the local session (its DISCONNECT came in the last [`Action::Local`]).
    CloseLocal,
    /// Publish the connection state (`true` = up) on the local broker, retained.
    NotifyLocal(bool),
    /// Check whether `host:port` takes a TCP connection (resolving it off the
    /// loop first); answer with [`Bridge::probe_result`]. The socket is closed
    /// as soon as the answer is known.
    Probe(String, u16),
    /// Give up the running check.
    CloseProbe,
    /// Call [`Bridge::queue_reached`] once the local session holds this many
    /// messages for the remote (at once if it does already): the broker
    /// watches its queue, so nothing polls.
    WatchQueue(usize),
}

/// Which acknowledgement a [`LocalAck`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckKind {
    /// PUBACK (QoS 1).
    PubAck,
    /// PUBREC (QoS 2, first answer).
    PubRec,
    /// PUBREL (QoS 2, release).
    PubRel,
    /// PUBCOMP (QoS 2, last answer).
    PubComp,
}

/// An acknowledgement the local session sends the broker: the remote's answer
/// to a forwarded message, or the bridge's own completion of one it does not
/// forward. It is handed over as a packet, not encoded and decoded again (one
/// per forwarded QoS 1/2 message); the broker reads its id and reason code
/// only, so a remote's reason string or user properties are not carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalAck {
    /// Which acknowledgement.
    pub kind: AckKind,
    /// The packet id, passed through unchanged.
    pub packet_id: u16,
    /// The reason code (the remote's, for a forwarded answer).
    pub reason: ReasonCode,
}

impl LocalAck {
    /// The packet for the broker.
    pub fn packet(self) -> Packet<'static> {
        let r = PubResp {
            packet_id: self.packet_id,
            reason: self.reason,
            properties: Properties::default(),
        };
        match self.kind {
            AckKind::PubAck => Packet::PubAck(r),
            AckKind::PubRec => Packet::PubRec(r),
            AckKind::PubRel => Packet::PubRel(r),
            AckKind::PubComp => Packet::PubComp(r),
        }
    }
}

/// Where the link to the remote stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// Waiting for `at` to try again.
    Waiting { at: Instant },
    /// A name is being resolved.
    Resolving { since: Instant },
    /// TCP (and TLS) connecting, or CONNECT sent and no CONNACK yet.
    Connecting { since: Instant },
    /// CONNACK accepted.
    Up,
    /// `start_type once` after its one attempt.
    Stopped,
    /// `start_type lazy`: not connected until `threshold` messages are queued.
    Idle,
}

/// The check of the first address while the link is up on another one
/// (`round_robin false`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// Not on a backup address (or `round_robin true`).
    Off,
    /// Next check at this time.
    Due(Instant),
    /// A check is running since this time.
    Running(Instant),
}

/// One bridge.
pub struct Bridge {
    cfg: BridgeConfig,
    /// `cfg.topics` with their filters built once (mapping runs per message).
    map: TopicMap,
    remote_id: String,
    local_id: String,
    state_topic: String,
    link: Link,
    /// Index in `cfg.addresses` of the address tried now.
    address: usize,
    backoff: Backoff,
    /// Bytes for the remote socket.
    to_remote: Vec<u8>,
    /// Encoded (MQTT 5) packets for the broker, from the local session.
    to_local: Vec<u8>,
    /// Acknowledgements for the broker after `to_local` (one of the two is
    /// empty: whichever is added to flushes the other first, keeping order).
    local_acks: Vec<LocalAck>,
    actions: Vec<Action>,
    /// Remote link time keeping (keep-alive).
    last_out: Instant,
    last_in: Instant,
    ping_outstanding: bool,
    /// Packet id for the bridge's own SUBSCRIBE/UNSUBSCRIBE/notification.
    own_id: u16,
    /// PUBACKs of our own QoS 1 notification still expected: the next PUBACK with
    /// this id is ours, not a forwarded message's (QoS 1 acks come in order,
    /// [MQTT-4.6.0-2]).
    own_puback: Option<u16>,
    /// A v5 remote's Receive Maximum from its CONNACK: the local session is
    /// attached with it, so the broker keeps no more QoS 1/2 messages in flight
    /// towards the remote [MQTT-3.3.4-9].
    remote_receive_max: Option<u16>,
    /// QoS 1/2 messages forwarded while our notification (QoS 1) awaits its
    /// PUBACK: it holds one of the remote's Receive Maximum slots, so the last
    /// message of a full window waits in `held` until that PUBACK.
    sent_before_own_puback: u16,
    /// Encoded PUBLISHes held back for the slot our notification holds.
    held: Vec<u8>,
    /// QoS 2 ids of local messages completed locally (no `topic` line maps
    /// them, or they are too large for the remote): their PUBREL is answered here.
    unmapped_qos2: Vec<u16>,
    /// The local session is attached.
    local_up: bool,
    /// Last connection state told to the local broker.
    notified: Option<bool>,
    /// Last failure logged (each reason is logged once, not once per retry).
    last_failure: Option<String>,
    /// Remote backlog as last reported by the server.
    remote_backlog: usize,
    /// Largest packet the remote takes on this link: the smaller of
    /// `bridge_max_packet_size` and a v5 remote's CONNACK Maximum Packet Size.
    max_remote_packet: Option<usize>,
    /// Dropping messages over `max_remote_packet` (logged once per link).
    dropping_too_large: bool,
    /// Dropping QoS 0 messages for a backed-up remote (logged once per episode).
    dropping_backlog: bool,
    /// Checking whether the first address is back.
    probe: Probe,
    /// Last message forwarded either way, or acknowledgement from the remote
    /// (`start_type lazy` disconnects after `idle_timeout` without any).
    last_traffic: Instant,
    /// Counters.
    stats: BridgeStats,
}

/// Counters of one bridge (published under `$SYS/broker/connection/...`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BridgeStats {
    /// Messages forwarded to the remote.
    pub sent: u64,
    /// Messages forwarded from the remote.
    pub received: u64,
    /// QoS 0 messages dropped because the remote socket was backed up.
    pub dropped_backlog: u64,
    /// Messages dropped because they exceed the remote's Maximum Packet Size
    /// (or `bridge_max_packet_size`).
    pub dropped_too_large: u64,
    /// Successful connections.
    pub connects: u64,
}

impl Bridge {
    /// A bridge for `cfg`, not yet started.
    pub fn new(cfg: BridgeConfig, now: Instant, seed: u64) -> Self {
        let backoff = Backoff::new(cfg.restart_base, cfg.restart_cap, seed);
        Bridge {
            remote_id: cfg.remote_id(),
            local_id: cfg.local_id(),
            state_topic: cfg.state_topic(),
            map: TopicMap::new(&cfg.topics),
            cfg,
            link: Link::Waiting { at: now },
            address: 0,
            backoff,
            to_remote: Vec::new(),
            to_local: Vec::new(),
            local_acks: Vec::new(),
            actions: Vec::new(),
            last_out: now,
            last_in: now,
            ping_outstanding: false,
            own_id: 0,
            own_puback: None,
            remote_receive_max: None,
            sent_before_own_puback: 0,
            held: Vec::new(),
            unmapped_qos2: Vec::new(),
            local_up: false,
            notified: None,
            last_failure: None,
            remote_backlog: 0,
            max_remote_packet: None,
            dropping_too_large: false,
            dropping_backlog: false,
            probe: Probe::Off,
            last_traffic: now,
            stats: BridgeStats::default(),
        }
    }

    /// The connection name.
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// The client id on the remote broker.
    pub fn remote_id(&self) -> &str {
        &self.remote_id
    }

    /// The client id of the bridge's session on the local broker.
    pub fn local_id(&self) -> &str {
        &self.local_id
    }

    /// The configuration.
    pub fn config(&self) -> &BridgeConfig {
        &self.cfg
    }

    /// Counters since start.
    pub fn stats(&self) -> BridgeStats {
        self.stats
    }

    /// The remote link is up (CONNACK accepted).
    pub fn is_up(&self) -> bool {
        self.link == Link::Up
    }

    /// Start: set up the local session so that messages queue for the remote
    /// from the first moment (a persistent session that subscribes and
    /// detaches), tell the local broker the link is down, and try to connect.
    pub fn start(&mut self, now: Instant) {
        if !self.cfg.local_clean() {
            self.attach_local(RetainHandling::DoNotSend);
            self.detach_local();
        }
        self.notify(false);
        if self.cfg.start_type == StartType::Lazy {
            self.go_idle();
            return;
        }
        self.link = Link::Waiting { at: now };
        self.handle_timeout(now);
    }

    /// `start_type lazy`: wait for `threshold` queued messages.
    fn go_idle(&mut self) {
        self.link = Link::Idle;
        self.act(Action::WatchQueue(self.cfg.threshold));
    }

    /// The local session holds `threshold` messages for the remote (the
    /// answer to [`Action::WatchQueue`]): a lazy bridge connects, and retries
    /// like an automatic one until it is up.
    pub fn queue_reached(&mut self, now: Instant) {
        if self.link != Link::Idle {
            return;
        }
        info!(
            "Bridge {}: {} messages queued; connecting (start_type lazy).",
            self.cfg.name, self.cfg.threshold
        );
        self.link = Link::Waiting { at: now };
        self.handle_timeout(now);
    }

    /// Actions asked for since the last call, in order.
    pub fn take_actions(&mut self) -> Vec<Action> {
        self.flush_local();
        std::mem::take(&mut self.actions)
    }

    /// Queue an action after the local packets sent so far.
    fn act(&mut self, action: Action) {
        self.flush_local();
        self.actions.push(action);
    }

    fn flush_local(&mut self) {
        if !self.to_local.is_empty() {
            let bytes = std::mem::take(&mut self.to_local);
            self.actions.push(Action::Local(bytes));
        }
        if !self.local_acks.is_empty() {
            let acks = std::mem::take(&mut self.local_acks);
            self.actions.push(Action::LocalAcks(acks));
        }
    }

    /// Bytes to write to the remote socket (appended to `buf`).
    pub fn take_remote(&mut self, buf: &mut Vec<u8>) {
        if buf.is_empty() {
            std::mem::swap(buf, &mut self.to_remote);
        } else {
            buf.append(&mut self.to_remote);
        }
    }

    /// The server's write backlog towards the remote (for dropping QoS 0).
    pub fn set_remote_backlog(&mut self, bytes: usize) {
        self.remote_backlog = bytes;
    }

    /// When [`Bridge::handle_timeout`] wants to be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.link {
            Link::Waiting { at } => Some(at),
            Link::Resolving { since } | Link::Connecting { since } => Some(since + CONNECT_TIMEOUT),
            Link::Up => {
                let keepalive = (self.cfg.keepalive_interval > 0).then(|| {
                    let ka = self.keepalive();
                    let dead = self.last_in + ka + ka / 2;
                    if self.ping_outstanding {
                        dead
                    } else {
                        (self.last_out + ka).min(dead)
                    }
                });
                let probe = match self.probe {
                    Probe::Off => None,
                    Probe::Due(at) => Some(at),
                    Probe::Running(since) => Some(since + PRIMARY_PROBE_INTERVAL),
                };
                let idle = (self.cfg.start_type == StartType::Lazy)
                    .then(|| self.last_traffic + self.cfg.idle_timeout);
                earliest(earliest(keepalive, probe), idle)
            }
            Link::Stopped | Link::Idle => None,
        }
    }

    fn keepalive(&self) -> Duration {
        Duration::from_secs(u64::from(self.cfg.keepalive_interval))
    }

    /// Time passed: start an attempt, give up on a slow one, keep the link alive.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.link {
            Link::Waiting { at } if now >= at => {
                let a = &self.cfg.addresses[self.address % self.cfg.addresses.len()];
                debug!("Bridge {}: connecting to {a}.", self.cfg.name);
                self.link = Link::Resolving { since: now };
                self.act(Action::Resolve(a.host.clone(), a.port));
            }
            Link::Resolving { since } | Link::Connecting { since }
                if now >= since + CONNECT_TIMEOUT =>
            {
                self.link_failed(now, "connection attempt timed out");
            }
            Link::Up => {
                if self.cfg.start_type == StartType::Lazy
                    && now >= self.last_traffic + self.cfg.idle_timeout
                {
                    // mosquitto closes the socket without DISCONNECT, so the
                    // remote publishes the bridge's will (state 0); so does midge.
                    info!(
                        "Bridge {}: no traffic for {} s; disconnecting (start_type lazy).",
                        self.cfg.name,
                        self.cfg.idle_timeout.as_secs()
                    );
                    self.close_link();
                    self.go_idle();
                    return;
                }
                self.probe_timeout(now);
                if self.link != Link::Up || self.cfg.keepalive_interval == 0 {
                    return;
                }
                let ka = self.keepalive();
                if now >= self.last_in + ka + ka / 2 {
                    // [MQTT-3.1.2-24] seen from the client: no answer within 1.5 x.
                    self.link_failed(now, "remote did not answer within the keep-alive");
                } else if now >= self.last_out + ka && !self.ping_outstanding {
                    self.ping_outstanding = true;
                    self.send_remote(&Packet::PingReq);
                }
            }
            _ => {}
        }
    }

    /// The first address's check: start it when due; one that has not
    /// answered within the interval is abandoned and a new one started.
    fn probe_timeout(&mut self, now: Instant) {
        let start = match self.probe {
            Probe::Due(at) => now >= at,
            Probe::Running(since) if now >= since + PRIMARY_PROBE_INTERVAL => {
                self.act(Action::CloseProbe);
                true
            }
            _ => false,
        };
        if start {
            let a = &self.cfg.addresses[0];
            debug!("Bridge {}: checking whether {a} is back.", self.cfg.name);
            self.probe = Probe::Running(now);
            self.act(Action::Probe(a.host.clone(), a.port));
        }
    }

    /// The answer to [`Action::Probe`]: `true` when the first address took a
    /// TCP connection. Then the link moves back to it (the local session keeps
    /// what was in flight on this link and sends it again there).
    pub fn probe_result(&mut self, now: Instant, answered: bool) {
        if self.link != Link::Up || !matches!(self.probe, Probe::Running(_)) {
            return;
        }
        if !answered {
            self.probe = Probe::Due(now + PRIMARY_PROBE_INTERVAL);
            return;
        }
        let here = &self.cfg.addresses[self.address % self.cfg.addresses.len()];
        info!(
            "Bridge {}: {} answers again; moving back to it from {here}.",
            self.cfg.name, self.cfg.addresses[0]
        );
        self.close_link();
        self.address = 0;
        self.backoff.reset();
        self.link = Link::Waiting { at: now };
    }

    /// Close the remote link and detach the local session (their state is
    /// kept by the broker for the next link).
    fn close_link(&mut self) {
        if matches!(self.probe, Probe::Running(_)) {
            self.act(Action::CloseProbe);
        }
        self.probe = Probe::Off;
        self.act(Action::CloseRemote);
        self.to_remote.clear();
        self.held.clear();
        self.remote_backlog = 0;
        if self.local_up {
            self.detach_local();
        }
        self.notify(false);
    }

    /// The address asked for in [`Action::Resolve`] resolved (or did not).
    pub fn resolved(&mut self, now: Instant, result: Result<Vec<SocketAddr>, String>) {
        if !matches!(self.link, Link::Resolving { .. }) {
            return;
        }
        match result {
            Ok(addrs) if !addrs.is_empty() => {
                self.link = Link::Connecting { since: now };
                self.act(Action::Connect(addrs[0]));
            }
            Ok(_) => self.link_failed(now, "name resolves to no address"),
            Err(e) => self.link_failed(now, &format!("name resolution failed: {e}")),
        }
    }

    /// The socket is connected (and TLS established): send CONNECT.
    pub fn connected(&mut self, now: Instant) {
        if !matches!(self.link, Link::Connecting { .. }) {
            return;
        }
        self.last_out = now;
        self.last_in = now;
        self.ping_outstanding = false;
        self.own_puback = None;
        self.remote_receive_max = None;
        self.sent_before_own_puback = 0;
        self.held.clear();
        let notify_remote = self.cfg.notifications && !self.cfg.notifications_local_only;
        let will = notify_remote.then(|| Will {
            topic: &self.state_topic,
            payload: b"0",
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Properties::default(),
        });
        let version = self.cfg.protocol_version;
        let mut properties = Properties::default();
        if version.is_v5() {
            if !self.cfg.cleansession {
                // A persistent remote session, as a 3.1.1 clean_session=0 one.
                properties.session_expiry_interval = Some(u32::MAX);
            }
            if self.cfg.max_packet_size > 0 {
                properties.maximum_packet_size = Some(self.cfg.max_packet_size);
            }
        }
        let connect = Packet::Connect(Box::new(Connect {
            version,
            clean_start: self.cfg.cleansession,
            keep_alive: self.cfg.keepalive_interval,
            properties,
            client_id: &self.remote_id,
            will,
            username: self.cfg.remote_username.as_deref(),
            password: self.cfg.remote_password.as_deref().map(str::as_bytes),
        }));
        let start = self.to_remote.len();
        if let Err(e) = encode(&connect, version, &mut self.to_remote) {
            self.to_remote.truncate(start);
            self.link_failed(now, &format!("cannot encode CONNECT: {e}"));
            return;
        }
        if self.cfg.try_private && !version.is_v5() {
            // mosquitto's bridge marker: protocol level with bit 7 set. The level
            // follows the fixed header and the protocol name.
            mark_bridge(&mut self.to_remote[start..]);
        }
    }

    /// The remote link failed (refused, reset, TLS error, timeout) or closed.
    pub fn link_failed(&mut self, now: Instant, reason: &str) {
        if matches!(self.link, Link::Waiting { .. } | Link::Stopped | Link::Idle) {
            return;
        }
        let was_up = self.link == Link::Up;
        let a = self.cfg.addresses[self.address % self.cfg.addresses.len()].to_string();
        if was_up {
            warn!(
                "Bridge {}: connection to {a} lost: {reason}.",
                self.cfg.name
            );
            self.last_failure = None;
        } else if self.last_failure.as_deref() != Some(reason) {
            warn!(
                "Bridge {}: cannot connect to {a}: {reason}; retrying.",
                self.cfg.name
            );
            self.last_failure = Some(reason.to_string());
        } else {
            debug!("Bridge {}: cannot connect to {a}: {reason}.", self.cfg.name);
        }
        self.close_link();
        if self.cfg.start_type == StartType::Once {
            info!(
                "Bridge {}: start_type once, not reconnecting.",
                self.cfg.name
            );
            self.link = Link::Stopped;
            return;
        }
        if self.cfg.start_type == StartType::Lazy && was_up {
            // Back to waiting for the queue (at once if it is full enough).
            if !self.cfg.round_robin {
                self.address = 0;
            }
            self.backoff.reset();
            self.go_idle();
            return;
        }
        let n = self.cfg.addresses.len();
        if self.cfg.round_robin || !was_up {
            // Next address; without round_robin a working first address is
            // preferred again once the others have failed too.
            self.address = (self.address + 1) % n;
        }
        if !self.cfg.round_robin && was_up {
            self.address = 0;
        }
        let wait = if was_up {
            // A link that worked and dropped is retried at once.
            self.backoff.reset();
            Duration::ZERO
        } else if n > 1 && self.address != 0 {
            // More addresses to try in this round: no wait in between.
            Duration::ZERO
        } else {
            self.backoff.next_delay()
        };
        self.link = Link::Waiting { at: now + wait };
    }

    /// A packet from the remote.
    pub fn handle_remote(&mut self, now: Instant, packet: Packet<'_>) {
        self.last_in = now;
        self.ping_outstanding = false;
        if !matches!(packet, Packet::PingResp) {
            self.last_traffic = now;
        }
        match packet {
            Packet::ConnAck(ack) => self.handle_connack(now, &ack),
            Packet::Publish(p) => self.inbound_publish(p),
            Packet::PubAck(r) => {
                if self.own_puback == Some(r.packet_id) {
                    self.own_puback = None;
                    self.sent_before_own_puback = 0;
                    self.to_remote.append(&mut self.held);
                } else {
                    self.ack_local(AckKind::PubAck, &r);
                }
            }
            Packet::PubRec(r) => self.ack_local(AckKind::PubRec, &r),
            Packet::PubRel(r) => self.ack_local(AckKind::PubRel, &r),
            Packet::PubComp(r) => self.ack_local(AckKind::PubComp, &r),
            Packet::SubAck(s) => {
                if s.reasons.iter().any(|r| r.0 >= 0x80) {
                    warn!(
                        "Bridge {}: the remote refused a subscription ({:?}).",
                        self.cfg.name, s.reasons
                    );
                }
            }
            Packet::UnsubAck(_) | Packet::PingResp => {}
            Packet::Disconnect(d) => {
                let why = format!("remote sent DISCONNECT ({})", d.reason.name());
                self.link_failed(now, &why);
            }
            other => {
                let why = format!("remote sent {:?}", other.packet_type());
                self.link_failed(now, &why);
            }
        }
    }

    fn handle_connack(&mut self, now: Instant, ack: &ConnAck<'_>) {
        let (reason, session_present) = (ack.reason, ack.session_present);
        if !matches!(self.link, Link::Connecting { .. }) {
            return self.link_failed(now, "unexpected CONNACK");
        }
        if reason != ReasonCode::SUCCESS {
            let why = format!("remote refused CONNECT ({})", reason.name());
            return self.link_failed(now, &why);
        }
        let a = self.cfg.addresses[self.address % self.cfg.addresses.len()].to_string();
        info!(
            "Bridge {}: connected to {a} as {} (session present {session_present}).",
            self.cfg.name, self.remote_id
        );
        self.link = Link::Up;
        self.last_failure = None;
        self.backoff.reset();
        self.stats.connects += 1;
        // mosquitto: the smaller of the two limits. A 3.1.1 CONNACK has no
        // properties, so only the directive applies there.
        let configured = (self.cfg.max_packet_size > 0).then_some(self.cfg.max_packet_size);
        let v5 = self.cfg.protocol_version.is_v5();
        let announced = ack.properties.maximum_packet_size.filter(|_| v5);
        self.max_remote_packet = match (configured, announced) {
            (Some(a), Some(b)) => Some(a.min(b) as usize),
            (a, b) => a.or(b).map(|n| n as usize),
        };
        self.dropping_too_large = false;
        self.dropping_backlog = false;
        if !self.cfg.round_robin && self.address % self.cfg.addresses.len() != 0 {
            // On a backup address: check the first one every few seconds
            // (mosquitto's `primary_retry`).
            self.probe = Probe::Due(now + PRIMARY_PROBE_INTERVAL);
        }
        // [MQTT-3.3.4-9] no more QoS 1/2 PUBLISHes unacknowledged than the
        // remote's Receive Maximum.
        // A 0 (a Protocol Error, 3.2.2.3.3) is ignored.
        self.remote_receive_max = ack.properties.receive_maximum.filter(|&n| v5 && n > 0);
        let rules = self.cfg.topics.clone();
        if self.cfg.attempt_unsubscribe && !self.cfg.cleansession {
            // Clear remote subscriptions of `out` topics a previous
            // configuration may have made `in` (mosquitto does the same).
            let filters: Vec<String> = rules
                .iter()
                .filter(|r| !r.direction.inbound())
                .map(|r| r.remote_filter())
                .collect();
            if !filters.is_empty() {
                let packet_id = self.next_own_id();
                self.send_remote(&Packet::Unsubscribe(Unsubscribe {
                    packet_id,
                    properties: Properties::default(),
                    filters: filters.iter().map(String::as_str).collect(),
                }));
            }
        }
        let filters: Vec<(String, QoS)> = rules
            .iter()
            .filter(|r| r.direction.inbound())
            .map(|r| (r.remote_filter(), r.qos))
            .collect();
        if !filters.is_empty() {
            let packet_id = self.next_own_id();
            self.send_remote(&Packet::Subscribe(Subscribe {
                packet_id,
                properties: Properties::default(),
                filters: filters
                    .iter()
                    .map(|(f, qos)| {
                        (
                            f.as_str(),
                            SubscriptionOptions {
                                qos: *qos,
                                // v5: what we publish there is not sent back,
                                // and retained flags arrive as published.
                                no_local: v5,
                                retain_as_published: v5,
                                retain_handling: RetainHandling::SendAtSubscribe,
                            },
                        )
                    })
                    .collect(),
            }));
        }
        if self.cfg.notifications && !self.cfg.notifications_local_only {
            let packet_id = self.next_own_id();
            self.own_puback = Some(packet_id);
            let topic = self.state_topic.clone();
            self.send_remote(&Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: true,
                topic: &topic,
                packet_id,
                properties: Properties::default(),
                payload: b"1",
            }));
        }
        self.attach_local(RetainHandling::SendAtSubscribe);
        self.notify(true);
    }

    fn next_own_id(&mut self) -> u16 {
        self.own_id = if self.own_id == u16::MAX {
            1
        } else {
            self.own_id + 1
        };
        self.own_id
    }

    /// A remote message for the local broker.
    fn inbound_publish(&mut self, p: Publish<'_>) {
        let Some((topic, _)) = self.map.inbound(p.topic) else {
            // Not ours (a subscription from an older configuration): acknowledge
            // it so the remote does not hold it forever.
            debug!("Bridge {}: no `in` topic for {}.", self.cfg.name, p.topic);
            match p.qos {
                QoS::AtMostOnce => {}
                QoS::AtLeastOnce => {
                    self.send_remote(&Packet::PubAck(PubResp::success(p.packet_id)))
                }
                QoS::ExactlyOnce => {
                    self.send_remote(&Packet::PubRec(PubResp::success(p.packet_id)))
                }
            }
            return;
        };
        self.stats.received += 1;
        let mut properties = p.properties.clone();
        properties.topic_alias = None;
        properties.subscription_identifiers.clear();
        self.send_local(&Packet::Publish(Publish {
            topic: &topic,
            properties,
            ..p
        }));
    }

    /// A packet the broker sent to the bridge's local session.
    pub fn handle_local(&mut self, now: Instant, packet: &Packet<'_>) {
        match packet {
            Packet::Publish(p) => {
                if self.link == Link::Up {
                    self.last_traffic = now;
                }
                self.outbound_publish(p)
            }
            // Acknowledgements of remote messages, once the broker holds them.
            Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_) => self.send_remote(packet),
            Packet::PubRel(r) => {
                if let Some(i) = self.unmapped_qos2.iter().position(|&id| id == r.packet_id) {
                    self.unmapped_qos2.swap_remove(i);
                    self.ack_local(AckKind::PubComp, &PubResp::success(r.packet_id));
                } else {
                    self.send_remote(packet);
                }
            }
            Packet::ConnAck(a) if a.reason != ReasonCode::SUCCESS => warn!(
                "Bridge {}: the local broker refused the bridge session ({}).",
                self.cfg.name,
                a.reason.name()
            ),
            Packet::Disconnect(d) => {
                debug!(
                    "Bridge {}: local session disconnected ({}).",
                    self.cfg.name,
                    d.reason.name()
                );
            }
            _ => {}
        }
    }

    /// A local message for the remote.
    fn outbound_publish(&mut self, p: &Publish<'_>) {
        if self.link != Link::Up {
            // Not acknowledged: the session sends it again when the link is back.
            return;
        }
        let Some((topic, _)) = self.map.outbound(p.topic) else {
            self.complete_locally(p.qos, p.packet_id);
            return;
        };
        let backlog = self.remote_backlog + self.to_remote.len();
        if p.qos == QoS::AtMostOnce && backlog > MAX_REMOTE_BACKLOG {
            self.stats.dropped_backlog += 1;
            if !self.dropping_backlog {
                self.dropping_backlog = true;
                warn!(
                    "Bridge {}: the remote is not keeping up; QoS 0 messages are being dropped.",
                    self.cfg.name
                );
            }
            return;
        }
        if self.dropping_backlog && backlog < MAX_REMOTE_BACKLOG / 2 {
            // The episode is over once the remote has caught up well below
            // the bound (not at the first message that fits again).
            self.dropping_backlog = false;
        }
        let mut properties = p.properties.clone();
        properties.topic_alias = None;
        properties.subscription_identifiers.clear();
        let packet = Packet::Publish(Publish {
            topic: &topic,
            retain: p.retain && self.cfg.outgoing_retain,
            properties,
            ..*p
        });
        if let Some(max) = self.max_remote_packet {
            let size = encoded_len(&packet, self.cfg.protocol_version).unwrap_or(usize::MAX);
            if size > max {
                // [MQTT-3.2.2-15] the client must not send a packet over the
                // server's Maximum Packet Size; as a server does for its clients
                // [MQTT-3.1.2-25], the message is discarded and its flow
                // completed, so it does not hold up the queue behind it.
                self.stats.dropped_too_large += 1;
                if !self.dropping_too_large {
                    self.dropping_too_large = true;
                    warn!(
                        "Bridge {}: message on {} is {size} bytes, over the remote's limit of {max}: dropped (further ones are counted, not logged).",
                        self.cfg.name,
                        LogStr(p.topic)
                    );
                }
                self.complete_locally(p.qos, p.packet_id);
                return;
            }
        }
        self.stats.sent += 1;
        if p.qos != QoS::AtMostOnce && self.own_puback.is_some() {
            if let Some(max) = self.remote_receive_max {
                if !self.held.is_empty() || self.sent_before_own_puback >= max - 1 {
                    // [MQTT-3.3.4-9] the notification takes the last slot.
                    if let Err(e) = encode(&packet, self.cfg.protocol_version, &mut self.held) {
                        warn!(
                            "Bridge {}: dropping a packet for the remote: {e}.",
                            self.cfg.name
                        );
                    }
                    return;
                }
                self.sent_before_own_puback += 1;
            }
        }
        self.send_remote(&packet);
    }

    /// Finish the flow of a local message that is not forwarded (no `topic`
    /// line maps it, or it is too large for the remote): the local session
    /// forgets it as if the remote had acknowledged it.
    fn complete_locally(&mut self, qos: QoS, packet_id: u16) {
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.ack_local(AckKind::PubAck, &PubResp::success(packet_id)),
            QoS::ExactlyOnce => {
                self.unmapped_qos2.push(packet_id);
                self.ack_local(AckKind::PubRec, &PubResp::success(packet_id));
            }
        }
    }

    /// Connect the local session (clean or resumed) and subscribe the `out`
    /// topics: No Local, so what the bridge publishes locally is never sent back;
    /// Retain As Published, so retained flags cross the bridge.
    fn attach_local(&mut self, retain_handling: RetainHandling) {
        let clean = self.cfg.local_clean();
        let properties = Properties {
            session_expiry_interval: (!clean).then_some(u32::MAX),
            receive_maximum: Some(self.remote_receive_max.unwrap_or(u16::MAX)),
            ..Properties::default()
        };
        self.act(Action::OpenLocal);
        self.local_up = true;
        let local_id = self.local_id.clone();
        self.send_local(&Packet::Connect(Box::new(Connect {
            version: ProtocolVersion::V5,
            clean_start: clean,
            keep_alive: 0,
            properties,
            client_id: &local_id,
            will: None,
            username: None,
            password: None,
        })));
        let filters: Vec<(String, QoS)> = self
            .cfg
            .topics
            .iter()
            .filter(|r| r.direction.outbound())
            .map(|r| (r.local_filter(), r.qos))
            .collect();
        if !filters.is_empty() {
            self.send_local(&Packet::Subscribe(Subscribe {
                packet_id: 1,
                properties: Properties::default(),
                filters: filters
                    .iter()
                    .map(|(f, qos)| {
                        (
                            f.as_str(),
                            SubscriptionOptions {
                                qos: *qos,
                                no_local: true,
                                retain_as_published: true,
                                retain_handling,
                            },
                        )
                    })
                    .collect(),
            }));
        }
    }

    fn detach_local(&mut self) {
        self.send_local(&Packet::Disconnect(Disconnect::with_reason(
            ReasonCode::SUCCESS,
        )));
        self.act(Action::CloseLocal);
        self.local_up = false;
        self.unmapped_qos2.clear();
    }

    fn notify(&mut self, up: bool) {
        if self.cfg.notifications && self.notified != Some(up) {
            self.notified = Some(up);
            self.act(Action::NotifyLocal(up));
        }
    }

    /// The topic connection state is published on.
    pub fn state_topic(&self) -> &str {
        &self.state_topic
    }

    fn send_remote(&mut self, packet: &Packet<'_>) {
        if let Err(e) = encode(packet, self.cfg.protocol_version, &mut self.to_remote) {
            warn!(
                "Bridge {}: dropping a packet for the remote: {e}.",
                self.cfg.name
            );
        }
    }

    fn ack_local(&mut self, kind: AckKind, r: &PubResp<'_>) {
        if !self.to_local.is_empty() {
            self.flush_local();
        }
        self.local_acks.push(LocalAck {
            kind,
            packet_id: r.packet_id,
            reason: r.reason,
        });
    }

    fn send_local(&mut self, packet: &Packet<'_>) {
        if !self.local_acks.is_empty() {
            self.flush_local();
        }
        if let Err(e) = encode(packet, ProtocolVersion::V5, &mut self.to_local) {
            warn!(
                "Bridge {}: dropping a packet for the local broker: {e}.",
                self.cfg.name
            );
        }
    }

    /// Record that bytes went out to the remote now (for keep-alive).
    pub fn wrote_remote(&mut self, now: Instant) {
        self.last_out = now;
    }

    /// Decode the packets in `buf` (bytes from the remote, starting with what
    /// was left over last time) and handle them. Returns how many bytes were
    /// used; the rest is an incomplete packet. A malformed stream fails the link.
    pub fn feed_remote(&mut self, now: Instant, buf: &[u8]) -> usize {
        let limits = DecodeLimits::new(self.cfg.protocol_version, MAX_REMOTE_PACKET);
        let mut pos = 0;
        while matches!(self.link, Link::Connecting { .. } | Link::Up) {
            match decode(&buf[pos..], &limits) {
                Ok(Decoded::Packet(p, used)) => {
                    pos += used;
                    self.handle_remote(now, p);
                }
                Ok(Decoded::NeedMore(_)) => break,
                Err(e) => {
                    self.link_failed(now, &format!("malformed packet from the remote: {e}"));
                    return buf.len();
                }
            }
        }
        pos
    }

    /// Decode and handle what the broker sent to the local session.
    pub fn feed_local(&mut self, now: Instant, buf: &[u8]) {
        let limits = DecodeLimits::new(ProtocolVersion::V5, usize::MAX);
        let mut pos = 0;
        while pos < buf.len() {
            match decode(&buf[pos..], &limits) {
                Ok(Decoded::Packet(p, used)) => {
                    pos += used;
                    self.handle_local(now, &p);
                }
                Ok(Decoded::NeedMore(_)) => break,
                Err(e) => {
                    warn!("Bridge {}: undecodable local output: {e}.", self.cfg.name);
                    break;
                }
            }
        }
    }
}

/// The earlier of two optional deadlines.
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Set bit 7 of the protocol level in an encoded CONNECT (mosquitto's
/// `try_private`).
fn mark_bridge(connect: &mut [u8]) {
    // Fixed header: type byte, then 1-4 bytes of remaining length.
    let mut i = 1;
    while i < connect.len() && connect[i] & 0x80 != 0 {
        i += 1;
    }
    i += 1;
    // Protocol name: two length bytes and the name.
    if i + 2 > connect.len() {
        return;
    }
    let name_len = usize::from(u16::from_be_bytes([connect[i], connect[i + 1]]));
    let level = i + 2 + name_len;
    if let Some(b) = connect.get_mut(level) {
        *b |= 0x80;
    }
}

#[cfg(test)]
mod tests;
