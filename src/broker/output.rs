//! The broker's only way to act on the world. The server implements [`Output`];
//! tests implement it with a recorder. This is what keeps the broker sans-IO.

use std::time::Instant;

use crate::persist::Record;
use crate::protocol::{Packet, ProtocolVersion, ReasonCode};

/// Identifies one network connection. Assigned by the server (a slab key), so it
/// may be reused after the connection closes; the broker guards its timers with
/// its own serial numbers.
pub type ConnId = usize;

/// A timer the broker asked for. The server stores it in its timing wheel and hands
/// it back to [`crate::broker::Broker::handle_timer`] when due. Opaque outside
/// the crate; the server packs it into 12 bytes (every connection has one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timer {
    pub(crate) kind: TimerKind,
    /// The low 32 bits of the serial of the connection or session it was armed
    /// for; a timer whose serial no longer matches is stale and ignored (lazy
    /// cancellation). 32 bits suffice: a stale timer could pass for a newer
    /// owner of the same key only if a multiple of 2^32 owners came and went
    /// while it was pending, and each handler checks the state it acts on.
    pub(crate) serial: u32,
}

impl Timer {
    /// A timer of `kind` for the owner with this serial.
    pub(crate) fn new(kind: TimerKind, serial: u64) -> Timer {
        Timer {
            kind,
            // The low bits, on purpose (see the field).
            serial: serial as u32,
        }
    }

    /// Was it armed for the owner with this serial?
    pub(crate) fn is_for(&self, serial: impl Into<u64>) -> bool {
        self.serial == serial.into() as u32
    }
}

/// What a [`Timer`] is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum TimerKind {
    /// No CONNECT within the connect timeout.
    ConnectTimeout(ConnId),
    /// Check keep-alive of a connection (re-armed lazily from the last packet time).
    KeepAlive(ConnId),
    /// In-session retransmission for 3.1/3.1.1 clients (`retry_interval`).
    Retry(ConnId),
    /// Will delay expired for a session (v5), keyed by session slot.
    WillDelay(usize),
    /// Session expiry for a disconnected session, keyed by session slot.
    SessionExpiry(usize),
    /// Session deadlines (expiry, will delay) may be due (see `deadlines.rs`;
    /// no serial).
    Deadlines,
    /// Send a delayed CONNACK refusal (failed password: the attacker waits,
    /// the loop does not).
    Refuse(ConnId),
    /// Resume a CONNECT held for password-hashing budget (`hashing.rs`).
    Resume(ConnId),
    /// Time to refresh the `$SYS` tree (every `sys_interval`).
    SysTree,
}

/// What the I/O layer counts for `$SYS` (the broker never sees raw bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoCounters {
    /// Bytes read from client sockets.
    pub bytes_received: u64,
    /// Bytes of packets queued to client sockets.
    pub bytes_sent: u64,
    /// Packets queued to client sockets.
    pub packets_sent: u64,
    /// Size of the persistence log, when persistence is on.
    pub persistence_log_bytes: Option<u64>,
    /// Heap bytes in use by the allocator's own count, where it has one
    /// (read when the `$SYS` tree asks, never per allocation).
    pub heap_bytes: Option<u64>,
}

/// A stored message the broker needs read back from the log (see
/// [`Output::request_load`]). Handed back unchanged to
/// [`crate::broker::Broker::handle_loaded`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    /// The message's number in the log.
    pub id: u64,
    /// The session whose queue it heads.
    pub(crate) session: usize,
}

/// Actions the broker asks of the I/O layer: the whole broker<->shell contract.
///
/// Durability is part of it. Records handed to [`Output::persist`] in a loop
/// turn are committed by the shell (written, and synced as the sync policy
/// says) before any byte queued through [`Output::send_after_commit`] reaches
/// a socket; if the commit fails, those bytes never do (the shell closes the
/// connection and tells the broker it was lost). Bytes from [`Output::send`]
/// depend on no record and may leave at once.
pub trait Output {
    /// Queue `packet`, encoded for `version`, on connection `conn`. Packets queued in
    /// one loop turn are written together.
    fn send(&mut self, conn: ConnId, version: ProtocolVersion, packet: &Packet<'_>);
    /// Queue `packet` like [`Output::send`], but hold it (and everything queued
    /// on `conn` after it) until every record persisted so far is committed. For
    /// acknowledgements that promise durable state: PUBACK, PUBREC, PUBREL,
    /// PUBCOMP, SUBACK, UNSUBACK, CONNACK, and QoS 2 PUBLISHes.
    fn send_after_commit(&mut self, conn: ConnId, version: ProtocolVersion, packet: &Packet<'_>);
    /// Bytes queued on `conn` that the socket has not taken yet (used to drop QoS 0
    /// messages for a subscriber that stopped reading).
    fn pending_bytes(&self, conn: ConnId) -> usize;
    /// Close `conn` once what is queued on it has been written (best effort). The
    /// broker has already forgotten the connection: the server must not report it
    /// back through `connection_lost`.
    fn close(&mut self, conn: ConnId);
    /// [`Output::close`], saying why: the reason of the DISCONNECT or refusing
    /// CONNACK just queued, or the one a 3.1/3.1.1 client would have been
    /// given. A shell whose framing can carry it tells the peer (a WebSocket
    /// close frame's status, RFC 6455 section 7.4); others just close.
    fn close_with(&mut self, conn: ConnId, reason: ReasonCode) {
        let _ = reason;
        self.close(conn);
    }
    /// Call back [`crate::broker::Broker::handle_timer`] with `timer` at (or soon after) `at`.
    fn set_timer(&mut self, at: Instant, timer: Timer);
    /// Record a durable change (only called when persistence is on). It is
    /// committed before this turn's [`Output::send_after_commit`] bytes leave.
    fn persist(&mut self, record: &Record<'_>) {
        let _ = record;
    }
    /// Read back a stored message that RAM no longer holds (persistence on) and
    /// hand it to [`crate::broker::Broker::handle_loaded`], in this loop turn.
    /// The session waits for it; nothing else does.
    fn request_load(&mut self, load: Load);
    /// The log cannot take records now (a write failed) or ever again (a sync
    /// failed): new QoS 1/2 messages bound for durable state must be refused
    /// rather than acknowledged.
    fn persistence_failing(&self) -> bool {
        false
    }
    /// The heap has passed `memory_limit`: new QoS 1/2 messages are refused
    /// and QoS 0 ones dropped until it is back under.
    fn memory_exceeded(&self) -> bool {
        false
    }
    /// The offline session `client_id`, watched with
    /// [`crate::broker::Broker::watch_queue`], now holds the number of messages
    /// it was watched for (a lazy bridge's cue to connect). Once per watch.
    fn queue_reached(&mut self, client_id: &str) {
        let _ = client_id;
    }
    /// `conn` is client `client_id` from now on (its CONNECT got this far): for
    /// the shell's per-packet debug lines, which name the client. Once per
    /// CONNECT; the default ignores it.
    fn client_named(&mut self, conn: ConnId, client_id: &str) {
        let _ = (conn, client_id);
    }
    /// Byte and packet counts since start, read when the `$SYS` tree is refreshed.
    fn io_counters(&self) -> IoCounters {
        IoCounters::default()
    }
}
