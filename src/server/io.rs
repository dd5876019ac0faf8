//! The server's side of the broker's [`Output`]: packets are encoded straight into
//! each connection's write buffer, timers go into the wheel, closes are flagged
//! for the end of the loop turn (when the buffers are flushed).

use std::time::Instant;

use log::warn;
use slab::Slab;

use crate::broker::{ConnId, IoCounters, Output, Timer};
use crate::protocol::{encode, Packet, ProtocolVersion};

use super::connection::Connection;
use super::wheel::Wheel;

/// Output queued in one turn beyond which it is written at once.
const EARLY_FLUSH: usize = 256 * 1024;

/// What the wheel holds: the broker's timers and the server's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// A timer the broker asked for.
    Broker(Timer),
    /// A closed connection's time to drain is up (key, serial).
    Linger(ConnId, u64),
    /// Time to tell systemd's watchdog we are alive.
    Watchdog,
    /// Bridge number N asked to be woken (stale entries are harmless).
    Bridge(usize),
}

/// Connections, timers and the list of connections with output this turn.
pub struct Io {
    /// Every open connection, keyed by [`ConnId`].
    pub conns: Slab<Connection>,
    /// Every timer.
    pub wheel: Wheel<Due>,
    /// Connections with output queued this turn (each once).
    pub dirty: Vec<ConnId>,
    /// Serial for the next connection (slab keys are reused; serials are not).
    next_serial: u64,
    /// The persistence log, when `persistence true`.
    pub store: Option<crate::persist::Store>,
    /// Bytes and packets moved, for `$SYS` (plain additions on the hot path).
    pub counters: IoCounters,
}

impl Io {
    /// No connections, an empty wheel starting at `origin`.
    pub fn new(origin: Instant) -> Self {
        Io {
            conns: Slab::new(),
            wheel: Wheel::new(origin),
            dirty: Vec::new(),
            next_serial: 0,
            store: None,
            counters: IoCounters::default(),
        }
    }

    /// Store a new connection; it gets the slab's `vacant_key()`.
    pub fn add(&mut self, mut conn: Connection) -> ConnId {
        self.next_serial += 1;
        conn.serial = self.next_serial;
        self.conns.insert(conn)
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

    /// Flag `key` for closing after its queued output is written.
    pub fn close_conn(&mut self, key: ConnId) {
        if let Some(c) = self.conns.get_mut(key) {
            c.closing = true;
        }
        self.mark_dirty(key);
    }
}

impl Output for Io {
    fn send(&mut self, conn: ConnId, version: ProtocolVersion, packet: &Packet<'_>) {
        let Some(c) = self.conns.get_mut(conn) else {
            return;
        };
        if c.closing {
            return;
        }
        let n = match encode(packet, version, &mut c.wbuf) {
            Ok(n) => n,
            Err(e) => {
                warn!("Dropping an outgoing packet for connection {conn}: {e}.");
                return;
            }
        };
        self.counters.packets_sent += 1;
        self.counters.bytes_sent += n as u64;
        // A big burst within one turn (fan-out of a large batch) is written as it
        // grows rather than held to the end of the turn: memory stays bounded and
        // a fast reader is never mistaken for a slow one.
        if !c.blocked && c.pending() >= EARLY_FLUSH && c.stream.bridge().is_none() {
            let _ = c.flush();
        }
        self.mark_dirty(conn);
    }

    fn pending_bytes(&self, conn: ConnId) -> usize {
        self.conns.get(conn).map_or(0, Connection::backlog)
    }

    fn close(&mut self, conn: ConnId) {
        self.close_conn(conn);
    }

    fn set_timer(&mut self, at: Instant, timer: Timer) {
        self.wheel.insert(at, Due::Broker(timer));
    }

    fn persist(&mut self, record: &crate::persist::Record<'_>) {
        if let Some(s) = self.store.as_mut() {
            s.append(record);
        }
    }

    fn load(&mut self, id: u64) -> Option<crate::persist::StoredMessage> {
        self.store.as_ref()?.load(id)
    }

    fn persistence_failing(&self) -> bool {
        self.store.as_ref().is_some_and(|s| s.failing())
    }

    fn io_counters(&self) -> IoCounters {
        IoCounters {
            persistence_log_bytes: self.store.as_ref().map(|s| s.size()),
            ..self.counters
        }
    }
}
