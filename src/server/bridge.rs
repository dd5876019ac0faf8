//! The I/O side of bridges: the remote socket (non-blocking connect, TLS through
//! `native-tls`, TLS-PSK through `openssl`), name resolution through the
//! resolver thread, the bridge's timer in the wheel, and the local side, a
//! socketless connection in the slab whose output is handed to the bridge state
//! machine instead of a socket.

use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

#[cfg(feature = "tls")]
use super::bridge_tls::{Handshake, MidHandshake, TlsStream};
use log::{debug, warn};
use mio::net::TcpStream;
use mio::{Interest, Token};

use crate::bridge::{Action, Bridge, BridgeStats};
use crate::protocol::{decode, DecodeLimits, Decoded, Packet, ProtocolVersion};

use super::connection::{Connection, Stream, NO_BARRIER};
use super::io::Due;
use super::{Server, READS_PER_TURN};

/// Remote sockets use tokens `BRIDGE_BASE + i`, checks of a bridge's first
/// address `BRIDGE_BASE + PROBE_OFFSET + i`; connection keys stay below.
pub const BRIDGE_BASE: usize = super::LISTENER_BASE - 4096;
/// Where the check sockets' tokens start, after the bridges' (and the most
/// bridges a config may hold).
const PROBE_OFFSET: usize = 2048;
/// The resolver thread wakes the loop with this token.
pub const WAKER_TOKEN: Token = Token(usize::MAX - 1);
use crate::auth::BRIDGE_LISTENER;

/// The remote socket.
enum Remote {
    /// TCP connect in progress.
    Connecting(TcpStream),
    /// Plain TCP, connected.
    Plain(TcpStream),
    /// TLS handshake in progress.
    #[cfg(feature = "tls")]
    Handshaking(Option<MidHandshake>),
    /// TLS established.
    #[cfg(feature = "tls")]
    Tls(Box<TlsStream>),
}

impl Remote {
    fn tcp(&mut self) -> Option<&mut TcpStream> {
        match self {
            Remote::Connecting(t) | Remote::Plain(t) => Some(t),
            #[cfg(feature = "tls")]
            Remote::Handshaking(m) => m.as_mut().map(|m| m.get_mut()),
            #[cfg(feature = "tls")]
            Remote::Tls(s) => Some(s.get_mut()),
        }
    }
}

/// One bridge with its socket and buffers.
pub struct BridgeLink {
    /// The state machine.
    pub machine: Bridge,
    tls: Option<super::bridge_tls::Connector>,
    remote: Option<Remote>,
    /// Host name of the address being tried (TLS checks the certificate against it).
    host: String,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    wpos: usize,
    /// The local side's connection key while attached.
    local: Option<usize>,
    /// Earliest wheel entry armed for this bridge.
    armed: Option<Instant>,
    /// Resolution attempts (answers for older ones are ignored).
    attempt: u64,
    /// Counters as last given to the broker's `$SYS` tree.
    reported: BridgeStats,
    /// The TCP connect that checks whether the first address is back.
    probe: Option<TcpStream>,
    /// Checks started (answers for older ones are ignored).
    probe_attempt: u64,
    /// The poll said the remote closed its side or the socket failed: read
    /// until EOF or an error (see [`Connection::drained_by`]).
    input_closed: bool,
}

impl BridgeLink {
    /// A link for `machine`, with its TLS connector if configured.
    pub fn new(machine: Bridge, tls: Option<super::bridge_tls::Connector>) -> Self {
        BridgeLink {
            machine,
            tls,
            remote: None,
            host: String::new(),
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            wpos: 0,
            local: None,
            armed: None,
            attempt: 0,
            reported: BridgeStats::default(),
            probe: None,
            probe_attempt: 0,
            input_closed: false,
        }
    }

    /// A packet the broker sends to connection `key`: when that is this
    /// bridge's attached local side, the state machine takes it (true).
    pub fn handle_local(&mut self, now: Instant, key: usize, packet: &Packet<'_>) -> bool {
        if self.local != Some(key) {
            return false;
        }
        self.machine.handle_local(now, packet);
        true
    }
}

impl Server {
    /// Start every bridge (after the log has been replayed).
    pub(super) fn start_bridges(&mut self, now: Instant) {
        for i in 0..self.io.bridges.len() {
            // Counters appear in `$SYS` from the first refresh, at zero.
            let id = self.io.bridges[i].machine.remote_id().to_string();
            self.broker.set_bridge_stats(i, &id, BridgeStats::default());
            self.io.bridges[i].machine.start(now);
            self.drive_bridge(i, now);
        }
    }

    /// Readiness on bridge `i`'s remote socket (or on its check socket).
    pub(super) fn bridge_event(&mut self, i: usize, event: &mio::event::Event, now: Instant) {
        if i >= PROBE_OFFSET {
            return self.probe_event(i - PROBE_OFFSET, event, now);
        }
        let Some(link) = self.io.bridges.get_mut(i) else {
            return;
        };
        if event.is_read_closed() || event.is_error() {
            link.input_closed = true;
        }
        match link.remote.take() {
            None => return,
            Some(Remote::Connecting(tcp)) => {
                if !(event.is_writable() || event.is_error() || event.is_write_closed()) {
                    link.remote = Some(Remote::Connecting(tcp));
                    return;
                }
                let failure = match tcp.take_error() {
                    Ok(Some(e)) | Err(e) => Some(e.to_string()),
                    Ok(None) => match tcp.peer_addr() {
                        Ok(_) => None,
                        Err(e) if e.kind() == ErrorKind::NotConnected => {
                            link.remote = Some(Remote::Connecting(tcp));
                            return;
                        }
                        Err(e) => Some(e.to_string()),
                    },
                };
                if let Some(why) = failure {
                    link.remote = Some(Remote::Connecting(tcp));
                    self.bridge_failed(i, now, &why);
                    return;
                }
                let _ = tcp.set_nodelay(true);
                match &link.tls {
                    None => {
                        link.remote = Some(Remote::Plain(tcp));
                        link.machine.connected(now);
                    }
                    #[cfg(not(feature = "tls"))]
                    Some(c) => match *c {},
                    #[cfg(feature = "tls")]
                    Some(c) => match c.connect(&link.host, tcp) {
                        Handshake::Done(s) => {
                            link.remote = Some(Remote::Tls(Box::new(s)));
                            link.machine.connected(now);
                        }
                        Handshake::Pending(mid) => {
                            link.remote = Some(Remote::Handshaking(Some(mid)));
                        }
                        Handshake::Failed(e) => {
                            self.bridge_failed(i, now, &format!("TLS: {e}"));
                            return;
                        }
                    },
                }
            }
            #[cfg(feature = "tls")]
            Some(Remote::Handshaking(Some(mid))) => match mid.handshake() {
                Handshake::Done(s) => {
                    link.remote = Some(Remote::Tls(Box::new(s)));
                    link.machine.connected(now);
                }
                Handshake::Pending(mid) => {
                    link.remote = Some(Remote::Handshaking(Some(mid)));
                    return;
                }
                Handshake::Failed(e) => {
                    self.bridge_failed(i, now, &format!("TLS: {e}"));
                    return;
                }
            },
            Some(r) => link.remote = Some(r),
        }
        self.bridge_read(i, now);
        self.drive_bridge(i, now);
    }

    /// Readiness on bridge `i`'s check of its first address: connected or
    /// refused, the answer goes to the machine and the socket is closed.
    fn probe_event(&mut self, i: usize, event: &mio::event::Event, now: Instant) {
        let Some(link) = self.io.bridges.get_mut(i) else {
            return;
        };
        let Some(tcp) = link.probe.as_mut() else {
            return;
        };
        if !(event.is_writable() || event.is_error() || event.is_write_closed()) {
            return;
        }
        let answered = match tcp.take_error() {
            Ok(Some(_)) | Err(_) => false,
            Ok(None) => match tcp.peer_addr() {
                Ok(_) => true,
                Err(e) if e.kind() == ErrorKind::NotConnected => return,
                Err(_) => false,
            },
        };
        if let Some(mut tcp) = link.probe.take() {
            let _ = self.poll.registry().deregister(&mut tcp);
        }
        link.machine.probe_result(now, answered);
        self.drive_bridge(i, now);
    }

    /// Read what the remote sent and hand it to the state machine (at most
    /// `READS_PER_TURN` reads: the bridge gets its turn like any client).
    pub(super) fn bridge_read(&mut self, i: usize, now: Instant) {
        for _ in 0..READS_PER_TURN {
            let Some(link) = self.io.bridges.get_mut(i) else {
                return;
            };
            let (n, plain) = match link.remote.as_mut() {
                Some(Remote::Plain(t)) => (t.read(&mut self.scratch), true),
                #[cfg(feature = "tls")]
                Some(Remote::Tls(s)) => (s.read(&mut self.scratch), false),
                _ => return,
            };
            match n {
                Ok(0) => return self.bridge_failed(i, now, "remote closed the connection"),
                Ok(n) => {
                    // As for clients (`Connection::drained_by`): a short read of
                    // a plain socket emptied it; the next arrival is reported.
                    let drained = cfg!(target_os = "linux")
                        && plain
                        && !link.input_closed
                        && n < self.scratch.len();
                    link.rbuf.extend_from_slice(&self.scratch[..n]);
                    let used = link.machine.feed_remote(now, &link.rbuf);
                    link.rbuf.drain(..used.min(link.rbuf.len()));
                    if link.rbuf.is_empty() && link.rbuf.capacity() > 64 * 1024 {
                        link.rbuf = Vec::new();
                    }
                    self.drive_bridge(i, now);
                    if drained {
                        return;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return self.bridge_failed(i, now, &e.to_string()),
            }
        }
        self.bridge_again.push(i);
    }

    fn bridge_failed(&mut self, i: usize, now: Instant, why: &str) {
        if let Some(link) = self.io.bridges.get_mut(i) {
            link.machine.link_failed(now, why);
        }
        self.drive_bridge(i, now);
    }

    /// Names resolved by the resolver thread.
    pub(super) fn bridge_resolved(&mut self, now: Instant) {
        let Some(resolver) = &self.resolver else {
            return;
        };
        for r in resolver.take() {
            let Some(link) = self.io.bridges.get_mut(r.bridge) else {
                continue;
            };
            if r.probe {
                if r.attempt != link.probe_attempt {
                    continue;
                }
                match r.result.as_deref() {
                    Ok([addr, ..]) => {
                        let addr = *addr;
                        start_probe(link, &self.poll, r.bridge, addr, now);
                    }
                    _ => link.machine.probe_result(now, false),
                }
                self.drive_bridge(r.bridge, now);
                continue;
            }
            if r.attempt != link.attempt {
                continue;
            }
            link.machine.resolved(now, r.result);
            self.drive_bridge(r.bridge, now);
        }
    }

    /// Bridge `i`'s timer.
    pub(super) fn bridge_timer(&mut self, i: usize, now: Instant) {
        let Some(link) = self.io.bridges.get_mut(i) else {
            return;
        };
        if link.armed.is_some_and(|a| a <= now) {
            link.armed = None;
        }
        link.machine.handle_timeout(now);
        self.drive_bridge(i, now);
    }

    /// What the broker wrote to bridge `i`'s local side this turn.
    pub(super) fn bridge_local_output(&mut self, key: usize, i: usize, now: Instant) {
        let Some(conn) = self.io.conns.get_mut(key) else {
            return;
        };
        conn.dirty = false;
        // Bytes behind the durability barrier (acks of records not yet synced)
        // stay until the commit releases them: the remote must not hear an ack
        // before the message is on disk.
        let closing = conn.closing;
        let out = conn.out_mut();
        let held = if out.barrier == NO_BARRIER || closing {
            Vec::new()
        } else {
            let rest = out.bytes.split_off(out.barrier.min(out.bytes.len()));
            out.barrier = 0;
            rest
        };
        let bytes = std::mem::replace(&mut out.bytes, held);
        if closing {
            // The broker ended the session (taken over, protocol error).
            self.remove(key);
            if let Some(link) = self.io.bridges.get_mut(i) {
                if link.local == Some(key) {
                    warn!(
                        "Bridge {}: the broker closed its local session.",
                        link.machine.name()
                    );
                    link.local = None;
                    link.machine
                        .link_failed(now, "its local session was closed");
                }
            }
        }
        let Some(link) = self.io.bridges.get_mut(i) else {
            return;
        };
        if link.local == Some(key) {
            link.machine.feed_local(now, &bytes);
        }
        if let Some(conn) = self.io.conns.get_mut(key) {
            if conn.queued() == 0 {
                // Keep the buffer's memory for the next turn.
                let mut b = bytes;
                b.clear();
                if b.capacity() <= 64 * 1024 {
                    conn.out_mut().bytes = b;
                }
            } else {
                // Held bytes: handed over after the commit, next round.
                self.io.mark_dirty(key);
            }
        }
        self.drive_bridge(i, now);
    }

    /// Carry out what bridge `i` asked for, write to its remote, arm its timer.
    pub(super) fn drive_bridge(&mut self, i: usize, now: Instant) {
        loop {
            let Some(link) = self.io.bridges.get_mut(i) else {
                return;
            };
            let actions = link.machine.take_actions();
            if actions.is_empty() {
                break;
            }
            for a in actions {
                self.bridge_action(i, a, now);
            }
        }
        self.bridge_flush(i, now);
        let Some(link) = self.io.bridges.get_mut(i) else {
            return;
        };
        let wake = link
            .machine
            .poll_timeout()
            .filter(|&at| link.armed.is_none_or(|a| at < a));
        if wake.is_some() {
            link.armed = wake;
        }
        let stats = link.machine.stats();
        if stats != link.reported {
            link.reported = stats;
            self.broker
                .set_bridge_stats(i, link.machine.remote_id(), stats);
        }
        if let Some(at) = wake {
            self.io.arm(at, Due::Bridge(i));
        }
    }

    fn bridge_action(&mut self, i: usize, action: Action, now: Instant) {
        let Server {
            io,
            broker,
            poll,
            resolver,
            ..
        } = self;
        let Some(link) = io.bridges.get_mut(i) else {
            return;
        };
        match action {
            Action::Resolve(host, port) => {
                link.attempt += 1;
                link.host = host.clone();
                match (host.parse::<std::net::IpAddr>(), resolver.as_ref()) {
                    // An IP literal needs no lookup.
                    (Ok(ip), _) => link
                        .machine
                        .resolved(now, Ok(vec![SocketAddr::new(ip, port)])),
                    (Err(_), Some(r)) => r.resolve(i, link.attempt, false, &host, port),
                    (Err(_), None) => link.machine.resolved(now, Err("no resolver".into())),
                }
            }
            Action::Connect(addr) => {
                let result = TcpStream::connect(addr).and_then(|mut tcp| {
                    poll.registry()
                        .register(
                            &mut tcp,
                            Token(BRIDGE_BASE + i),
                            Interest::READABLE | Interest::WRITABLE,
                        )
                        .map(|()| tcp)
                });
                match result {
                    Ok(tcp) => {
                        link.input_closed = false;
                        link.rbuf.clear();
                        link.wbuf.clear();
                        link.wpos = 0;
                        link.remote = Some(Remote::Connecting(tcp));
                    }
                    Err(e) => link.machine.link_failed(now, &e.to_string()),
                }
            }
            Action::CloseRemote => {
                if let Some(mut r) = link.remote.take() {
                    if let Some(tcp) = r.tcp() {
                        let _ = poll.registry().deregister(tcp);
                    }
                }
                link.rbuf = Vec::new();
                link.wbuf = Vec::new();
                link.wpos = 0;
            }
            Action::OpenLocal => {
                let key = io.conns.vacant_key();
                if key >= BRIDGE_BASE {
                    warn!(
                        "Bridge {}: no connection slot for its local side.",
                        link.machine.name()
                    );
                    return;
                }
                let mut conn = Connection::new(Stream::Bridge(i));
                conn.version = ProtocolVersion::V5;
                conn.listener = super::connection::BRIDGE_SIDE;
                link.local = Some(key);
                let peer = format!("bridge {}", link.machine.name());
                io.add(conn);
                broker.connection_opened(now, key, &peer, BRIDGE_LISTENER, io);
            }
            Action::Local(bytes) => {
                let Some(key) = link.local else {
                    return;
                };
                let limits = DecodeLimits::new(ProtocolVersion::V5, usize::MAX);
                let mut pos = 0;
                while pos < bytes.len() {
                    match decode(&bytes[pos..], &limits) {
                        Ok(Decoded::Packet(p, used)) => {
                            pos += used;
                            broker.handle_packet(now, key, &p, io);
                        }
                        Ok(Decoded::NeedMore(_)) => break,
                        Err(e) => {
                            debug!("Bridge local packet undecodable: {e}.");
                            break;
                        }
                    }
                }
            }
            Action::LocalAcks(acks) => {
                let Some(key) = link.local else {
                    return;
                };
                for ack in acks {
                    broker.handle_packet(now, key, &ack.packet(), io);
                }
            }
            Action::CloseLocal => {
                if let Some(key) = link.local.take() {
                    // The broker has seen the DISCONNECT; what it still queued
                    // for this side is resent at the next attach.
                    if io
                        .conns
                        .get(key)
                        .is_some_and(|c| c.stream.bridge() == Some(i))
                    {
                        broker.connection_lost(now, key, io);
                        if io.conns.try_remove(key).is_some() {
                            io.names.remove(&key);
                        }
                    }
                }
            }
            Action::Probe(host, port) => {
                link.probe_attempt += 1;
                match (host.parse::<std::net::IpAddr>(), resolver.as_ref()) {
                    (Ok(ip), _) => {
                        let addr = SocketAddr::new(ip, port);
                        start_probe(link, poll, i, addr, now);
                    }
                    (Err(_), Some(r)) => r.resolve(i, link.probe_attempt, true, &host, port),
                    (Err(_), None) => link.machine.probe_result(now, false),
                }
            }
            Action::WatchQueue(threshold) => {
                if broker.watch_queue(link.machine.local_id(), threshold) {
                    link.machine.queue_reached(now);
                }
            }
            Action::CloseProbe => {
                if let Some(mut tcp) = link.probe.take() {
                    let _ = poll.registry().deregister(&mut tcp);
                }
            }
            Action::NotifyLocal(up) => {
                let topic = link.machine.state_topic().to_string();
                let payload: &[u8] = if up { b"1" } else { b"0" };
                broker.publish_local(
                    now,
                    &topic,
                    payload,
                    crate::protocol::QoS::AtLeastOnce,
                    true,
                    io,
                );
            }
        }
    }

    /// Write what bridge `i` has for its remote.
    fn bridge_flush(&mut self, i: usize, now: Instant) {
        let Some(link) = self.io.bridges.get_mut(i) else {
            return;
        };
        if link.wpos == link.wbuf.len() {
            link.wbuf.clear();
            link.wpos = 0;
        }
        link.machine.take_remote(&mut link.wbuf);
        let mut failed = None;
        let mut wrote = false;
        while link.wpos < link.wbuf.len() {
            let r = match link.remote.as_mut() {
                Some(Remote::Plain(t)) => t.write(&link.wbuf[link.wpos..]),
                #[cfg(feature = "tls")]
                Some(Remote::Tls(s)) => s.write(&link.wbuf[link.wpos..]),
                _ => break,
            };
            match r {
                Ok(0) => {
                    failed = Some("remote socket closed".to_string());
                    break;
                }
                Ok(n) => {
                    link.wpos += n;
                    wrote = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    failed = Some(e.to_string());
                    break;
                }
            }
        }
        if wrote {
            link.machine.wrote_remote(now);
        }
        link.machine.set_remote_backlog(link.wbuf.len() - link.wpos);
        if let Some(why) = failed {
            self.bridge_failed(i, now, &why);
        }
    }

    /// Watched bridge sessions whose queue reached its mark: their lazy
    /// bridges connect.
    pub(super) fn bridge_queue_alerts(&mut self, now: Instant) {
        for id in std::mem::take(&mut self.io.queue_alerts) {
            let found = self
                .io
                .bridges
                .iter()
                .position(|l| l.machine.local_id() == &*id);
            if let Some(i) = found {
                self.io.bridges[i].machine.queue_reached(now);
                self.drive_bridge(i, now);
            }
        }
    }

    /// Bridge `i`'s local session `key` is gone (the server dropped it).
    pub(super) fn detach_bridge_local(&mut self, i: usize, key: usize) {
        let Some(link) = self.io.bridges.get_mut(i) else {
            return;
        };
        if link.local == Some(key) {
            link.local = None;
            // Both sides start again from a clean state: the remote link is
            // dropped too, and the reconnect attaches the local session anew
            // (what it had in flight is resent).
            self.bridge_failed(i, Instant::now(), "its local session was closed");
        }
    }

    /// Is `key` the local side of a bridge? Then which.
    pub(super) fn local_bridge(&self, key: usize) -> Option<usize> {
        self.io.conns.get(key).and_then(|c| c.stream.bridge())
    }
}

/// Open the TCP connection that checks bridge `i`'s first address.
fn start_probe(link: &mut BridgeLink, poll: &mio::Poll, i: usize, addr: SocketAddr, now: Instant) {
    if let Some(mut old) = link.probe.take() {
        let _ = poll.registry().deregister(&mut old);
    }
    let token = Token(BRIDGE_BASE + PROBE_OFFSET + i);
    let registered = TcpStream::connect(addr).and_then(|mut tcp| {
        poll.registry()
            .register(&mut tcp, token, Interest::WRITABLE)
            .map(|()| tcp)
    });
    match registered {
        Ok(tcp) => link.probe = Some(tcp),
        Err(_) => link.machine.probe_result(now, false),
    }
}

/// Build the bridges of `config` (TLS files are read here: a bad CA stops start-up).
pub fn build(config: &crate::config::Config, now: Instant) -> Result<Vec<BridgeLink>, String> {
    if config.bridges.len() > PROBE_OFFSET {
        return Err(format!("more than {PROBE_OFFSET} bridges"));
    }
    let mut out = Vec::new();
    for (n, b) in config.bridges.iter().enumerate() {
        let tls = match &b.tls {
            Some(t) => Some(
                super::bridge_tls::connector(t).map_err(|e| format!("bridge {}: {e}", b.name))?,
            ),
            None => None,
        };
        let seed = u64::from(std::process::id())
            ^ (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
        out.push(BridgeLink::new(Bridge::new(b.clone(), now, seed), tls));
    }
    Ok(out)
}
