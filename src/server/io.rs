//! The server's side of the broker's [`Output`]: packets are encoded straight into
//! each connection's write buffer, timers go into the wheel, closes are flagged
//! for the end of the loop turn (when the buffers are flushed). Acknowledgements
//! of durable state wait behind a per-connection barrier until the log's commit.

use std::collections::HashMap;
use std::time::Instant;

use log::{debug, warn};
use slab::Slab;

use crate::broker::output::TimerKind;
use crate::broker::{ConnId, IoCounters, Load, Output, Timer};
use crate::logging::PacketLine;
use crate::persist::PersistError;
use crate::protocol::{encode, Packet, ProtocolVersion, ReasonCode};

use super::connection::{Connection, WriteBuffer, NO_BARRIER};
use super::wheel::Wheel;

/// Output queued in one turn beyond which it is written at once.
const EARLY_FLUSH: usize = 256 * 1024;

/// What the wheel holds: the broker's timers and the server's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// A timer the broker asked for.
    Broker(Timer),
    /// A closed connection's time to drain is up (key, serial).
    Linger(ConnId, u32),
    /// Time to tell systemd's watchdog we are alive.
    Watchdog,
    /// Bridge number N asked to be woken (stale entries are harmless).
    Bridge(usize),
}

/// A [`Due`] as the wheel holds it: 12 bytes (a wheel entry is 16 with its
/// tick), where the enum takes 24. Every connection has a timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackedDue {
    /// The connection, session slot or bridge.
    key: u32,
    /// [`Timer::serial`], or the connection's serial for [`Due::Linger`].
    serial: u32,
    /// Which [`Due`] (and which [`TimerKind`]): see [`Due::pack`].
    kind: u8,
}

impl Due {
    /// In 12 bytes. `None` only for a key past 32 bits (no slab grows that far).
    pub fn pack(self) -> Option<PackedDue> {
        let (kind, key, serial) = match self {
            Due::Watchdog => (0, 0, 0),
            Due::Bridge(i) => (1, i, 0),
            Due::Linger(key, serial) => (2, key, serial),
            Due::Broker(t) => {
                let (kind, key) = match t.kind {
                    TimerKind::ConnectTimeout(c) => (3, c),
                    TimerKind::KeepAlive(c) => (4, c),
                    TimerKind::Retry(c) => (5, c),
                    TimerKind::WillDelay(s) => (6, s),
                    TimerKind::SessionExpiry(s) => (7, s),
                    TimerKind::Deadlines => (8, 0),
                    TimerKind::Refuse(c) => (9, c),
                    TimerKind::Resume(c) => (10, c),
                    TimerKind::SysTree => (11, 0),
                };
                (kind, key, t.serial)
            }
        };
        Some(PackedDue {
            key: u32::try_from(key).ok()?,
            serial,
            kind,
        })
    }
}

impl PackedDue {
    /// The [`Due`] it was made from.
    pub fn unpack(self) -> Option<Due> {
        let key = self.key as usize;
        let timer = |kind| {
            Some(Due::Broker(Timer {
                kind,
                serial: self.serial,
            }))
        };
        match self.kind {
            0 => Some(Due::Watchdog),
            1 => Some(Due::Bridge(key)),
            2 => Some(Due::Linger(key, self.serial)),
            3 => timer(TimerKind::ConnectTimeout(key)),
            4 => timer(TimerKind::KeepAlive(key)),
            5 => timer(TimerKind::Retry(key)),
            6 => timer(TimerKind::WillDelay(key)),
            7 => timer(TimerKind::SessionExpiry(key)),
            8 => timer(TimerKind::Deadlines),
            9 => timer(TimerKind::Refuse(key)),
            10 => timer(TimerKind::Resume(key)),
            11 => timer(TimerKind::SysTree),
            _ => None,
        }
    }
}

/// Most emptied write buffers kept for reuse (each at most the connection's
/// `KEEP_CAPACITY`, usually far less): as many as connections typically have
/// output in one turn of a busy broker.
const SPARE_BUFFERS: usize = 128;

/// Connections, timers and the list of connections with output this turn.
pub struct Io {
    /// Every open connection, keyed by [`ConnId`].
    pub conns: Slab<Connection>,
    /// Every timer (see [`Io::arm`]).
    pub wheel: Wheel<PackedDue>,
    /// Connections with output queued this turn (each once).
    pub dirty: Vec<ConnId>,
    /// Emptied write buffers, lent to the connections that have output in a
    /// turn and taken back once it is written: an idle connection holds no
    /// buffer (at 10,000 clients the CONNACK's and SUBACK's buffers were 32
    /// bytes a client), and a busy one allocates none.
    /// Boxed as the connections hold them, so lending one allocates nothing.
    #[allow(clippy::vec_box)]
    spare: Vec<Box<WriteBuffer>>,
    /// Serial for the next connection (slab keys are reused; see
    /// [`Connection::serial`]).
    next_serial: u32,
    /// The persistence log, when `persistence true`.
    pub store: Option<crate::persist::Store>,
    /// Bytes and packets moved, for `$SYS` (plain additions on the hot path).
    pub counters: IoCounters,
    /// Connections holding bytes behind a barrier until the log's commit.
    held: Vec<ConnId>,
    /// A connection's held output passed the early-flush mark this turn.
    early: bool,
    /// Stored messages the broker asked for, to read back this turn.
    pub loads: Vec<Load>,
    /// Client ids of watched sessions whose queue reached its mark this turn
    /// (lazy bridges to start).
    pub queue_alerts: Vec<Box<str>>,
    /// Client ids by connection, for the per-packet debug lines (kept only
    /// when they are on: a connection does not carry room for one).
    pub names: HashMap<ConnId, Box<str>>,
    /// Debug lines are written: each packet in and out gets mosquitto's
    /// per-packet line. Read once at start, so that without debug logging a
    /// packet costs one test of this flag and formats nothing.
    pub log_packets: bool,
    /// Bridges to other brokers (`connection` sections). Here rather than in
    /// the server so that a packet the broker sends a bridge's local session
    /// goes straight to its state machine (see [`Io::queue`]).
    pub bridges: Vec<super::bridge::BridgeLink>,
    /// The time of this turn (set by the server after each poll).
    pub now: Instant,
    /// `memory_limit` (0: none), against the counted heap (src/alloc.rs).
    pub memory_limit: u64,
}

impl Io {
    /// No connections, an empty wheel starting at `origin`.
    pub fn new(origin: Instant) -> Self {
        Io {
            conns: Slab::new(),
            wheel: Wheel::new(origin),
            dirty: Vec::new(),
            spare: Vec::new(),
            next_serial: 0,
            store: None,
            counters: IoCounters::default(),
            held: Vec::new(),
            early: false,
            loads: Vec::new(),
            queue_alerts: Vec::new(),
            log_packets: false,
            bridges: Vec::new(),
            now: origin,
            memory_limit: 0,
            names: HashMap::new(),
        }
    }

    /// Store a new connection; it gets the slab's `vacant_key()`.
    pub fn add(&mut self, mut conn: Connection) -> ConnId {
        self.next_serial = self.next_serial.wrapping_add(1);
        conn.serial = self.next_serial;
        self.conns.insert(conn)
    }

    /// Arm a timer: `due` comes out of the wheel's expiry at `at`.
    pub fn arm(&mut self, at: Instant, due: Due) {
        match due.pack() {
            Some(p) => self.wheel.insert(at, p),
            // Unreachable in practice: a slab key past 32 bits.
            None => warn!("Timer {due:?} dropped: its key does not fit 32 bits."),
        }
    }

    /// Put `key` on this turn's flush list (once).
    pub fn mark_dirty(&mut self, key: ConnId) {
        if let Some(c) = self.conns.get_mut(key) {
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    /// `key`'s output is all written: its emptied write buffer goes back to
    /// the spares (or is freed when there are enough).
    pub fn recycle(&mut self, key: ConnId) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if c.queued() != 0 {
            return;
        }
        if let Some(buf) = c.out.take() {
            if self.spare.len() < SPARE_BUFFERS {
                self.spare.push(buf);
            }
        }
    }

    /// Flag `key` for closing after its queued output is written.
    pub fn close_conn(&mut self, key: ConnId) {
        if let Some(c) = self.conns.get_mut(key) {
            c.closing = true;
        }
        self.mark_dirty(key);
    }
}

impl Io {
    /// Encode `packet` on `conn`; with `after_commit`, behind a barrier while the
    /// log has records not yet committed.
    fn queue(
        &mut self,
        conn: ConnId,
        version: ProtocolVersion,
        packet: &Packet<'_>,
        after_commit: bool,
    ) {
        let hold = after_commit && self.store.as_ref().is_some_and(|s| s.needs_commit());
        let Some(c) = self.conns.get_mut(conn) else {
            return;
        };
        if c.closing {
            return;
        }
        if let Some(i) = c.stream.bridge() {
            // A bridge's local session: the packet goes straight to the
            // bridge's state machine, not encoded here and decoded there (one
            // round trip per forwarded message). Only when nothing waits in the
            // buffer (order) and nothing must wait for the log's commit (acks
            // towards the remote, held behind the barrier in encoded form).
            if !hold && c.queued() == 0 {
                let log = self.log_packets;
                if let Some(link) = self.bridges.get_mut(i) {
                    if link.handle_local(self.now, conn, packet) {
                        self.counters.packets_sent += 1;
                        if log {
                            log_packet(
                                c,
                                self.names.get(&conn).map(|n| &**n),
                                true,
                                version,
                                packet,
                            );
                        }
                        // The bridge is driven (its remote written) at the flush.
                        self.mark_dirty(conn);
                        return;
                    }
                }
            }
        }
        let out = c
            .out
            .get_or_insert_with(|| self.spare.pop().unwrap_or_default());
        if hold && out.barrier == NO_BARRIER {
            out.barrier = out.bytes.len();
            self.held.push(conn);
        }
        let n = match encode(packet, version, &mut out.bytes) {
            Ok(n) => n,
            Err(e) => {
                warn!("Dropping an outgoing packet for connection {conn}: {e}.");
                return;
            }
        };
        self.counters.packets_sent += 1;
        self.counters.bytes_sent += n as u64;
        if self.log_packets {
            log_packet(
                c,
                self.names.get(&conn).map(|n| &**n),
                true,
                version,
                packet,
            );
        }
        // A goodbye with a reason: it must reach the client, so the close that
        // follows drains input instead of resetting the connection.
        if matches!(packet, Packet::Disconnect(_))
            || matches!(packet, Packet::ConnAck(a) if a.reason.0 >= 0x80)
        {
            c.linger = true;
        }
        // A big burst within one turn (fan-out of a large batch) is written as it
        // grows rather than held to the end of the turn: memory stays bounded and
        // a fast reader is never mistaken for a slow one. Held acknowledgements
        // stay held (the flush stops at the barrier); the server commits the log
        // after the packet being handled (`commit_early`) and releases them.
        if !c.blocked && c.pending() >= EARLY_FLUSH && c.stream.bridge().is_none() {
            if c.out.as_ref().is_some_and(|o| o.barrier != NO_BARRIER) {
                self.early = true;
            }
            let _ = c.flush();
        }
        self.mark_dirty(conn);
    }

    /// Held output passed the early-flush mark: commit the log now and write
    /// what it held. Called by the server between two packets, never inside
    /// the handling of one, so a packet's records stay one batch. A failure is
    /// handled at the end of the turn, where the broker can be told; until
    /// then the bytes stay held.
    pub fn commit_early(&mut self, now: Instant) {
        if !std::mem::take(&mut self.early) {
            return;
        }
        let held = self.held.clone();
        if self.commit(now).is_ok() {
            for key in held {
                if let Some(c) = self.conns.get_mut(key) {
                    if !c.blocked && c.pending() >= EARLY_FLUSH {
                        let _ = c.flush();
                    }
                }
            }
        }
    }

    /// Commit the log; on success release every held byte (the connections
    /// are already on the flush list). On failure the held bytes stay held and
    /// the caller must drop them (see [`Io::take_held`]).
    pub fn commit(&mut self, now: Instant) -> Result<(), PersistError> {
        if let Some(store) = self.store.as_mut() {
            store.commit(now)?;
        }
        for key in std::mem::take(&mut self.held) {
            if let Some(out) = self.conns.get_mut(key).and_then(|c| c.out.as_deref_mut()) {
                out.barrier = NO_BARRIER;
            }
        }
        Ok(())
    }

    /// After a failed commit: cut every connection's held bytes (they
    /// acknowledge what is not on disk and must never leave) and return the
    /// connections, which must be closed.
    pub fn take_held(&mut self) -> Vec<ConnId> {
        let held = std::mem::take(&mut self.held);
        for &key in &held {
            if let Some(out) = self.conns.get_mut(key).and_then(|c| c.out.as_deref_mut()) {
                if out.barrier != NO_BARRIER {
                    out.bytes.truncate(out.barrier);
                    out.barrier = NO_BARRIER;
                }
            }
        }
        held
    }
}

/// mosquitto's debug line for `packet` on `c` (only called with
/// [`Io::log_packets`]): named by its client id, or by the peer's address
/// before the broker has one.
pub fn log_packet(
    c: &Connection,
    client_id: Option<&str>,
    sending: bool,
    version: ProtocolVersion,
    packet: &Packet<'_>,
) {
    let peer;
    let client = match client_id {
        Some(id) => id,
        None => {
            peer = c.stream.peer();
            peer.as_str()
        }
    };
    let line = PacketLine {
        sending,
        client,
        version,
        packet,
    };
    if line.wanted() {
        debug!("{line}");
    }
}

impl Output for Io {
    fn send(&mut self, conn: ConnId, version: ProtocolVersion, packet: &Packet<'_>) {
        self.queue(conn, version, packet, false);
    }

    fn send_after_commit(&mut self, conn: ConnId, version: ProtocolVersion, packet: &Packet<'_>) {
        self.queue(conn, version, packet, true);
    }

    fn pending_bytes(&self, conn: ConnId) -> usize {
        self.conns.get(conn).map_or(0, Connection::backlog)
    }

    fn close(&mut self, conn: ConnId) {
        self.close_conn(conn);
    }

    fn close_with(&mut self, conn: ConnId, reason: ReasonCode) {
        if let Some(ws) = self.conns.get_mut(conn).and_then(|c| c.ws.as_deref_mut()) {
            super::websocket::set_close_reason(ws, reason);
        }
        self.close_conn(conn);
    }

    fn client_named(&mut self, conn: ConnId, client_id: &str) {
        if self.log_packets && self.conns.contains(conn) {
            self.names.insert(conn, client_id.into());
        }
    }

    fn set_timer(&mut self, at: Instant, timer: Timer) {
        self.arm(at, Due::Broker(timer));
    }

    fn persist(&mut self, record: &crate::persist::Record<'_>) {
        if let Some(s) = self.store.as_mut() {
            s.append(record);
        }
    }

    fn request_load(&mut self, load: Load) {
        self.loads.push(load);
    }

    fn queue_reached(&mut self, client_id: &str) {
        self.queue_alerts.push(client_id.into());
    }

    fn persistence_failing(&self) -> bool {
        self.store.as_ref().is_some_and(|s| s.failing())
    }

    fn memory_exceeded(&self) -> bool {
        // Asked per PUBLISH only when a limit is set: two relaxed loads.
        self.memory_limit != 0 && crate::alloc::in_use().is_some_and(|b| b > self.memory_limit)
    }

    fn io_counters(&self) -> IoCounters {
        IoCounters {
            persistence_log_bytes: self.store.as_ref().map(|s| s.size()),
            // The counted heap when `memory_limit` set counting going (the
            // figure the limit is held to; musl has no other), else glibc's.
            heap_bytes: crate::alloc::in_use().or_else(crate::sys::heap_in_use),
            ..self.counters
        }
    }
}

#[cfg(test)]
mod tests {
    //! The durability half of the broker<->shell contract, at the seam: held
    //! bytes vs the log's sync, on a real socket and an in-memory log.
    use std::io::{ErrorKind, Read};
    use std::net::{TcpListener, TcpStream};
    use std::path::Path;

    use super::*;
    use crate::broker::message::Message;
    use crate::persist::fs::MemFs;
    use crate::persist::{Record, Store, SyncPolicy};
    use crate::protocol::{PubResp, Publish, QoS};
    use crate::server::connection::Stream;

    const LOG: &str = "midge.db";

    /// An `Io` with one connection (key 0) on an in-memory log, and the
    /// client's end of the socket (non-blocking).
    fn setup(policy: SyncPolicy) -> (Io, MemFs, TcpStream) {
        let fs = MemFs::new();
        let (store, _) =
            Store::open_in(Box::new(fs.clone()), Path::new(LOG), policy, false).expect("open");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        server.set_nonblocking(true).expect("nonblocking");
        client.set_nonblocking(true).expect("nonblocking");
        let mut io = Io::new(Instant::now());
        io.store = Some(store);
        let key = io.add(Connection::new(Stream::Plain(
            mio::net::TcpStream::from_std(server),
        )));
        assert_eq!(key, 0);
        (io, fs, client)
    }

    fn message(topic: &str) -> Message {
        Message {
            topic: topic.into(),
            payload: b"v".to_vec(),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: None,
            received: Instant::now(),
        }
    }

    /// Everything the client can read now.
    fn received(client: &mut TcpStream) -> Vec<u8> {
        let mut all = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            match client.read(&mut buf) {
                Ok(0) => return all,
                Ok(n) => all.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return all,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// PUBACK packet ids in a 3.1.1 byte stream of PUBACKs and PUBLISHes.
    fn pubacks(stream: &[u8]) -> Vec<u16> {
        let mut ids = Vec::new();
        let mut pos = 0;
        while pos < stream.len() {
            let limits = crate::protocol::DecodeLimits::new(ProtocolVersion::V311, usize::MAX);
            match crate::protocol::decode(&stream[pos..], &limits) {
                Ok(crate::protocol::Decoded::Packet(p, used)) => {
                    if let Packet::PubAck(r) = p {
                        ids.push(r.packet_id);
                    }
                    pos += used;
                }
                _ => break,
            }
        }
        ids
    }

    /// Every kind of timer survives the wheel's 12-byte form unchanged.
    #[test]
    fn timers_pack_and_unpack() {
        let kinds = [
            TimerKind::ConnectTimeout(7),
            TimerKind::KeepAlive(70_000),
            TimerKind::Retry(1),
            TimerKind::WillDelay(u32::MAX as usize),
            TimerKind::SessionExpiry(3),
            TimerKind::Deadlines,
            TimerKind::Refuse(4),
            TimerKind::Resume(5),
            TimerKind::SysTree,
        ];
        let mut all: Vec<Due> = kinds
            .into_iter()
            .map(|kind| Due::Broker(Timer::new(kind, (1 << 40) + 99)))
            .collect();
        all.extend([Due::Watchdog, Due::Bridge(3), Due::Linger(9, u32::MAX)]);
        for due in all {
            let packed = due.pack().expect("fits");
            assert_eq!(packed.unpack(), Some(due));
        }
        assert_eq!(std::mem::size_of::<PackedDue>(), 12);
        // A key past 32 bits is refused, not cut.
        assert_eq!(Due::Bridge(1 << 33).pack(), None);
    }

    /// Issue 11 item 1: a connection whose output passes the early-flush mark
    /// mid-turn must not let a PUBACK reach the socket before the record it
    /// acknowledges is synced. Each step persists record i, queues PUBACK i
    /// after the commit and a 10 kB PUBLISH; whenever the client has received
    /// PUBACK i, record i must be in what survives a power cut.
    #[test]
    fn acks_reach_the_socket_only_after_their_record_is_synced() {
        let (mut io, fs, mut client) = setup(SyncPolicy::Always);
        let payload = vec![7u8; 10_000];
        let mut wire = Vec::new();
        let mut early = false;
        for i in 1..=60u16 {
            let topic = format!("rec/{i:04}");
            io.persist(&Record::RetainSet(&message(&topic)));
            io.send_after_commit(
                0,
                ProtocolVersion::V311,
                &Packet::PubAck(PubResp::success(i)),
            );
            io.send(
                0,
                ProtocolVersion::V311,
                &Packet::Publish(Publish {
                    dup: false,
                    qos: QoS::AtMostOnce,
                    retain: false,
                    topic: "t",
                    packet_id: 0,
                    properties: Default::default(),
                    payload: &payload,
                }),
            );
            // The server's point between two packets.
            io.commit_early(Instant::now());
            wire.extend(received(&mut client));
            let acked = pubacks(&wire);
            early |= !acked.is_empty();
            // What a power cut would keep right now.
            let survivor = fs.clone();
            let durable = survivor.synced(Path::new(LOG)).expect("log");
            for id in acked {
                let name = format!("rec/{id:04}");
                assert!(
                    durable.windows(name.len()).any(|w| w == name.as_bytes()),
                    "PUBACK {id} left before its record was synced"
                );
            }
        }
        assert!(early, "the test never reached the early flush");
        assert!(fs.syncs() >= 2, "the early flush committed first");
    }

    /// Issue 11 item 1: when the sync fails, the held PUBACK never leaves (the
    /// connection is handed back for closing), and the log is dead: a later
    /// commit does not retry the sync and reports the failure.
    #[test]
    fn a_failed_sync_releases_no_ack_and_is_not_retried() {
        let (mut io, fs, mut client) = setup(SyncPolicy::Always);
        io.send(0, ProtocolVersion::V311, &Packet::PingResp);
        io.persist(&Record::RetainSet(&message("a")));
        io.send_after_commit(
            0,
            ProtocolVersion::V311,
            &Packet::PubAck(PubResp::success(1)),
        );
        fs.fail_sync(true);
        let syncs = fs.syncs();
        assert!(io.commit(Instant::now()).is_err());
        assert_eq!(io.take_held(), vec![0]);
        let c = io.conns.get_mut(0).expect("conn");
        assert_eq!(c.flush(), super::super::connection::Flush::Done);
        let got = received(&mut client);
        assert_eq!(got, vec![0xD0, 0], "only the PINGRESP, no PUBACK: {got:?}");
        assert!(io.persistence_failing());
        // The disk "recovers": the log must still not trust itself.
        fs.fail_sync(false);
        io.persist(&Record::RetainSet(&message("b")));
        io.send_after_commit(
            0,
            ProtocolVersion::V311,
            &Packet::PubAck(PubResp::success(2)),
        );
        assert!(io.commit(Instant::now()).is_err(), "the dead log refuses");
        assert_eq!(fs.syncs(), syncs, "no sync retried after a failure");
        assert_eq!(io.take_held(), vec![0]);
        assert!(io.persistence_failing());
    }

    /// A failed write (not a sync) is retried: the acks stay held meanwhile
    /// and leave once a commit succeeds.
    #[test]
    fn a_failed_write_holds_acks_until_a_commit_succeeds() {
        let (mut io, fs, mut client) = setup(SyncPolicy::Always);
        io.persist(&Record::RetainSet(&message("a")));
        io.send_after_commit(
            0,
            ProtocolVersion::V311,
            &Packet::PubAck(PubResp::success(1)),
        );
        fs.fail_append(true);
        assert!(io.commit(Instant::now()).is_err());
        assert!(io.persistence_failing());
        fs.fail_append(false);
        io.commit(Instant::now()).expect("retried write");
        assert!(!io.persistence_failing());
        let c = io.conns.get_mut(0).expect("conn");
        assert_eq!(c.flush(), super::super::connection::Flush::Done);
        assert_eq!(pubacks(&received(&mut client)), vec![1]);
    }
}
