//! The I/O shell: one thread, one `mio::Poll`. Listeners, connections with their
//! buffers (in a slab), the timing wheel, signals. It moves bytes and time into the
//! broker and the broker's output back out; it makes no protocol decisions.
//!
//! One loop turn: wait in `poll` until an event or the wheel's next deadline;
//! accept, read and decode (packets go to the broker as they are decoded, output
//! is appended to each connection's write buffer); run due timers; then flush
//! every connection that got output, one `write` each. An idle broker has no
//! deadline in the wheel but the `$SYS` refresh (every `sys_interval`, none with
//! 0) and systemd's watchdog (when asked for), and sleeps until a socket or a
//! signal wakes it.

mod bridge;
#[cfg(feature = "tls")]
mod bridge_tls;
#[cfg(not(feature = "tls"))]
#[path = "bridge_tls_off.rs"]
mod bridge_tls;
pub mod check;
mod connection;
mod http_files;
mod io;
pub mod listener;
mod resolver;
mod signals;
#[cfg(feature = "tls")]
pub mod tls;
#[cfg(not(feature = "tls"))]
#[path = "tls_off.rs"]
pub mod tls;
mod websocket;
pub mod wheel;

use std::io::{ErrorKind, Read};
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use crate::broker::Broker;
use crate::config::Config;
use crate::protocol::{decode, DecodeLimits, Decoded, Packet};

use connection::{Connection, Flush, Handshake, Phase, Stream};
use io::{Due, Io};
use listener::Listener;
use signals::{Signal, SignalPipe};

/// Why the server could not start or stopped with an error.
#[derive(Debug)]
pub enum ServerError {
    /// A listener could not be bound.
    Bind(String, std::io::Error),
    /// Any other I/O failure of the loop itself (poll, signal pipe).
    Io(std::io::Error),
    /// TLS, password or ACL files unusable at start.
    Security(String),
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerError::Bind(addr, e) => write!(f, "cannot listen on {addr}: {e}"),
            ServerError::Io(e) => write!(f, "I/O error: {e}"),
            ServerError::Security(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ServerError {}

/// The shared read buffer: every socket is read into it and complete packets are
/// decoded in place, so a connection needs no read buffer of its own.
const SCRATCH: usize = 64 * 1024;
/// Reads per connection per loop turn before others get their turn (fairness: a
/// fast publisher cannot starve the rest; its remaining data is read next turn).
const READS_PER_TURN: usize = 16;
/// How long a closed connection may take to drain its last packets (a CONNACK
/// refusal, a DISCONNECT) before it is dropped anyway.
const LINGER: Duration = Duration::from_secs(5);
/// How long a connection closed with a reason (DISCONNECT, refusing CONNACK)
/// has, once that is written, to read it and close its side: its unread input
/// is drained meanwhile, as closing with input unread makes the kernel send a
/// reset that can destroy the reason in flight.
const DRAIN_LINGER: Duration = Duration::from_secs(2);
/// Retry interval for `accept` after running out of file descriptors.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

const SIGNAL_TOKEN: Token = Token(usize::MAX);
/// Listener `i` has token `LISTENER_BASE + i`; connections use their slab key.
const LISTENER_BASE: usize = usize::MAX - 4096;

/// Run the broker with `config` until SIGINT/SIGTERM.
pub fn run(config: Config) -> Result<(), ServerError> {
    let server = Server::new(&config)?;
    // Listeners are bound and the log and persistence files open: root's
    // rights are no longer needed (mosquitto's order).
    if let Some(user) = &config.user {
        match crate::sys::drop_privileges(user) {
            Ok(true) => info!("Running as user {user}."),
            Ok(false) => {}
            Err(e) => {
                return Err(ServerError::Security(format!(
                    "unable to drop privileges to user {user}: {e}"
                )))
            }
        }
    }
    server.run()
}

struct Server {
    /// Kept for SIGHUP, which reloads the files it names.
    config: Config,
    poll: Poll,
    /// Bound sockets and the index of the config listener each came from.
    listeners: Vec<(Listener, usize)>,
    broker: Broker,
    io: Io,
    scratch: Box<[u8]>,
    signals: SignalPipe,
    max_connections: Option<usize>,
    limits: InboundLimits,
    /// Output stuck on a connection above which its input is no longer read
    /// (the broker's `max_pending_bytes`): a client that sends but never reads
    /// cannot make the server hold its answers without bound.
    read_pause_bytes: usize,
    /// Connections left with unread data by the fairness cap.
    again: Vec<usize>,
    /// Connections serving a file that had their share of a turn's writing.
    flush_again: Vec<usize>,
    /// `accept` failed for lack of descriptors: retry soon.
    accept_paused: bool,
    /// Retained replays have work they can do at once: do not sleep.
    replay_again: bool,
    fired: Vec<io::PackedDue>,
    /// Interval of `WATCHDOG=1` notifications, when systemd's watchdog is on.
    watchdog: Option<Duration>,
    /// Bridges left with unread data by the fairness cap.
    bridge_again: Vec<usize>,
    /// Name resolution for bridges, off the loop thread (only with bridges).
    resolver: Option<resolver::Resolver>,
    /// `log_dest topic`: log lines are published each turn.
    log_topic: bool,
}

impl Server {
    fn new(config: &Config) -> Result<Server, ServerError> {
        let poll = Poll::new().map_err(ServerError::Io)?;
        // Before the listeners: once a client can connect, a signal must find its
        // handler installed.
        let signals = SignalPipe::install().map_err(ServerError::Io)?;
        // Files first: a bad certificate or password file stops start-up before
        // any socket is opened.
        let security = crate::auth::Security::load(config).map_err(ServerError::Security)?;
        let mut acceptors = Vec::new();
        for (index, lc) in config.listeners.iter().enumerate() {
            if let Some(dir) = lc.http_dir.as_ref().filter(|d| !d.is_dir()) {
                return Err(ServerError::Security(format!(
                    "listener {}: http_dir {}: not a directory",
                    lc.port,
                    dir.display()
                )));
            }
            acceptors.push(match &lc.tls {
                Some(t) => Some(std::sync::Arc::new(
                    tls::acceptor(t, config.psk_file(index))
                        .map_err(|e| ServerError::Security(format!("listener {}: {e}", lc.port)))?,
                )),
                None => None,
            });
        }
        // Bridge TLS files too, before any socket.
        let bridges = bridge::build(config, Instant::now()).map_err(ServerError::Security)?;
        let resolver = if bridges.is_empty() {
            None
        } else {
            let waker =
                mio::Waker::new(poll.registry(), bridge::WAKER_TOKEN).map_err(ServerError::Io)?;
            Some(resolver::Resolver::start(std::sync::Arc::new(waker)).map_err(ServerError::Io)?)
        };
        // State from disk before the first client can connect.
        let mut broker = Broker::new(config.broker_config());
        broker.set_security(security);
        let mut io = Io::new(Instant::now());
        io.bridges = bridges;
        // Asked once (the logger is installed before the server starts): the
        // per-packet lines then cost a flag test, not a logger call, per packet.
        io.log_packets = log::log_enabled!(log::Level::Debug);
        if config.memory_limit != 0 {
            // Counting starts here: the heap of the configuration and the
            // logger (a few kilobytes) is not in the figure.
            if !crate::alloc::start_counting() {
                return Err(ServerError::Security(
                    "memory_limit: this program does not count its heap (midge::alloc::Counting is not its allocator)".into(),
                ));
            }
            io.memory_limit = config.memory_limit;
            info!(
                "Memory limit: {} bytes of heap; above it QoS 1/2 PUBLISHes are refused and QoS 0 ones dropped.",
                config.memory_limit
            );
        }
        if config.persistence {
            let dir = config.persistence_location.clone().unwrap_or_default();
            let path = dir.join(&config.persistence_file);
            let policy = if config.persistence_sync_periodic {
                crate::persist::SyncPolicy::Periodic(Duration::from_secs(config.autosave_interval))
            } else {
                crate::persist::SyncPolicy::Always
            };
            let (store, state) =
                crate::persist::Store::open(&path, policy, config.persistence_recover)
                    .map_err(|e| ServerError::Security(format!("persistence: {e}")))?;
            broker.enable_persistence(state.last_id, state.last_sid);
            let now = Instant::now();
            broker.set_wall_clock(now, unix_ms());
            // Messages in flight are read back from the log: start-up input.
            let in_flight = state
                .in_flight()
                .filter_map(|id| Some((id, store.load(id)?)))
                .collect();
            io.store = Some(store);
            broker.restore(now, state, in_flight, &mut io);
            info!(
                "Persistence on: {} (sync {}).",
                path.display(),
                if config.persistence_sync_periodic {
                    "periodic"
                } else {
                    "always"
                }
            );
        }
        let mut listeners = Vec::new();
        for (index, lc) in config.listeners.iter().enumerate() {
            let bound = match listener::bind(lc) {
                Ok(b) => b,
                Err((a, e)) if lc.optional => {
                    warn!("Not listening on {a}: {e}.");
                    continue;
                }
                Err((a, e)) => return Err(ServerError::Bind(a, e)),
            };
            for mut l in bound {
                l.tls = acceptors.get(index).cloned().flatten();
                let token = Token(LISTENER_BASE + listeners.len());
                poll.registry()
                    .register(&mut l.socket, token, Interest::READABLE)
                    .map_err(ServerError::Io)?;
                let kind = if l.tls.is_some() { " (TLS)" } else { "" };
                info!(target: crate::logging::NOTICE, "Opening listen socket on {}{kind}.", l.name);
                listeners.push((l, index));
            }
        }
        poll.registry()
            .register(
                &mut SourceFd(&signals.fd()),
                SIGNAL_TOKEN,
                Interest::READABLE,
            )
            .map_err(ServerError::Io)?;

        // Listeners are bound: the first `$SYS` values are retained for whoever
        // subscribes first.
        broker.start_sys_tree(Instant::now(), &mut io);
        let limits = InboundLimits::new(config, broker.config().max_packet_size);
        let read_pause_bytes = broker.config().max_pending_bytes;
        Ok(Server {
            config: config.clone(),
            poll,
            listeners,
            broker,
            io,
            scratch: vec![0; SCRATCH].into_boxed_slice(),
            signals,
            max_connections: config.max_connections,
            limits,
            read_pause_bytes,
            again: Vec::new(),
            flush_again: Vec::new(),
            accept_paused: false,
            replay_again: false,
            fired: Vec::new(),
            watchdog: crate::sys::watchdog_interval(),
            bridge_again: Vec::new(),
            resolver,
            log_topic: config.log_dests.contains(&crate::config::LogDest::Topic),
        })
    }

    fn run(mut self) -> Result<(), ServerError> {
        let mut events = Events::with_capacity(1024);
        // Listeners are bound and listening: tell systemd (Type=notify).
        notify("READY=1");
        if let Some(every) = self.watchdog {
            self.io.arm(Instant::now() + every, Due::Watchdog);
        }
        let start = Instant::now();
        self.start_bridges(start);
        self.flush_all(start);
        loop {
            let timeout = self.poll_timeout();
            if self.turn(&mut events, timeout)? {
                return Ok(());
            }
        }
    }

    /// One loop turn: wait up to `timeout` for events, handle them, run the
    /// timers, commit and flush. True once a shutdown has been carried out.
    fn turn(
        &mut self,
        events: &mut Events,
        timeout: Option<Duration>,
    ) -> Result<bool, ServerError> {
        {
            if let Err(e) = self.poll.poll(events, timeout) {
                if e.kind() == ErrorKind::Interrupted {
                    return Ok(false);
                }
                return Err(ServerError::Io(e));
            }
            let now = Instant::now();
            self.io.now = now;
            self.broker.set_wall_clock(now, unix_ms());
            let mut shutdown = false;
            for event in events.iter() {
                match event.token() {
                    SIGNAL_TOKEN => match self.signals.take() {
                        Some(Signal::Shutdown) => shutdown = true,
                        Some(Signal::Reload) => self.reload(),
                        None => {}
                    },
                    bridge::WAKER_TOKEN => self.bridge_resolved(now),
                    Token(t) if t >= LISTENER_BASE => self.accept(t - LISTENER_BASE, now),
                    Token(t) if t >= bridge::BRIDGE_BASE => {
                        self.bridge_event(t - bridge::BRIDGE_BASE, event, now)
                    }
                    Token(key) => {
                        if event.is_read_closed() || event.is_error() {
                            if let Some(conn) = self.io.conns.get_mut(key) {
                                conn.input_closed = true;
                            }
                        }
                        if !self.progress_handshake(key, now) {
                            continue;
                        }
                        if event.is_writable() {
                            self.io.mark_dirty(key);
                            // A retained replay parked on this socket's backlog.
                            self.broker.handle_writable(key);
                        }
                        // After a handshake completes, drain what arrived with it
                        // (edge-triggered readiness will not repeat itself).
                        self.read(key, now);
                    }
                }
            }
            if self.accept_paused {
                self.accept_paused = false;
                for i in 0..self.listeners.len() {
                    self.accept(i, now);
                }
            }
            for key in std::mem::take(&mut self.again) {
                self.read(key, now);
            }
            for key in std::mem::take(&mut self.flush_again) {
                self.io.mark_dirty(key);
            }
            for i in std::mem::take(&mut self.bridge_again) {
                self.bridge_read(i, now);
            }
            self.run_timers(now);
            if self.log_topic {
                self.publish_log_lines(now);
            }
            self.flush_all(now);
            self.replay(now);
            if shutdown {
                notify("STOPPING=1");
                info!(
                    "Shutting down: closing {} connection(s).",
                    self.io.conns.len()
                );
                self.broker.shutdown(now, &mut self.io);
                self.flush_all(now);
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// `log_dest topic`: publish the lines logged since the last turn.
    fn publish_log_lines(&mut self, now: Instant) {
        for (topic, line) in crate::logging::topic::take() {
            self.broker.publish_log_line(now, topic, line, &mut self.io);
        }
    }

    fn poll_timeout(&self) -> Option<Duration> {
        if !self.again.is_empty()
            || !self.flush_again.is_empty()
            || self.replay_again
            || !self.bridge_again.is_empty()
            || (self.log_topic && crate::logging::topic::pending())
        {
            return Some(Duration::ZERO);
        }
        let wheel = self
            .io
            .wheel
            .next_deadline()
            .map(|d| d.saturating_duration_since(Instant::now()));
        if self.accept_paused {
            return Some(wheel.map_or(ACCEPT_RETRY, |w| w.min(ACCEPT_RETRY)));
        }
        wheel
    }

    fn accept(&mut self, index: usize, now: Instant) {
        loop {
            let Some((listener, config_index)) = self.listeners.get(index) else {
                return;
            };
            let config_index = *config_index;
            // A connection keeps its listener's index in 16 bits.
            let listener_index = match u16::try_from(config_index) {
                Ok(i) if i != connection::BRIDGE_SIDE => i,
                _ => {
                    warn!("Not accepting on {}: too many listeners.", listener.name);
                    return;
                }
            };
            let (mut tcp, addr) = match listener.socket.accept() {
                Ok(pair) => pair,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: the connection stays in the backlog, and
                    // with edge-triggered readiness nobody would tell us again.
                    warn!("Unable to accept on {}: {e}.", listener.name);
                    self.accept_paused = true;
                    return;
                }
            };
            let peer = listener::peer_name(addr);
            if self
                .max_connections
                .is_some_and(|max| self.io.conns.len() >= max)
            {
                info!("Client connection from {peer} denied: max_connections exceeded.");
                continue;
            }
            // MQTT packets are small and latency matters more than coalescing:
            // our own batching already fills segments.
            let _ = tcp.set_nodelay(true);
            let key = self.io.conns.vacant_key();
            if key >= bridge::BRIDGE_BASE {
                continue;
            }
            // A TLS handshake may need to write before it reads.
            let interest = if listener.tls.is_some() {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if let Err(e) = self
                .poll
                .registry()
                .register(&mut tcp, Token(key), interest)
            {
                warn!("Unable to register connection from {peer}: {e}.");
                continue;
            }
            let stream = match &listener.tls {
                None => Stream::Plain(tcp),
                Some(acceptor) => match Stream::accept_tls(acceptor, tcp) {
                    Ok(s) => s,
                    Err(e) => {
                        // The socket closes as it drops.
                        info!("TLS handshake with {peer} failed: {e}.");
                        continue;
                    }
                },
            };
            let mut conn = Connection::new(stream);
            conn.want_write = listener.tls.is_some();
            if self
                .config
                .listeners
                .get(config_index)
                .is_some_and(|l| l.websockets)
            {
                conn.ws = Some(Box::default());
            }
            conn.listener = listener_index;
            self.io.add(conn);
            // mosquitto's wording: the port, not an internal listener number.
            let port = self
                .config
                .listeners
                .get(config_index)
                .map_or(0, |l| l.port);
            debug!("New connection from {peer} on port {port}.");
            self.broker
                .connection_opened(now, key, &peer, config_index, &mut self.io);
            // The handshake may have completed at once (data already there).
            self.after_handshake(key, listener_index);
        }
    }

    /// Move a TLS handshake on; once it is done, tell the broker who the
    /// certificate names and go back to read interest only. Returns false when
    /// the connection is gone.
    fn progress_handshake(&mut self, key: usize, now: Instant) -> bool {
        let Some(conn) = self.io.conns.get_mut(key) else {
            return false;
        };
        if !conn.stream.handshaking() {
            return true;
        }
        match conn.stream.handshake() {
            Handshake::Pending => true,
            Handshake::Failed(e) => {
                info!("TLS handshake with {} failed: {e}.", conn.stream.peer());
                self.lost(key, now);
                false
            }
            Handshake::Done => {
                let listener = conn.listener;
                self.after_handshake(key, listener);
                true
            }
        }
    }

    fn after_handshake(&mut self, key: usize, listener: u16) {
        let Some(conn) = self.io.conns.get_mut(key) else {
            return;
        };
        conn.listener = listener;
        if conn.stream.handshaking() {
            return;
        }
        #[cfg(feature = "tls")]
        if let Stream::Tls(s) = &conn.stream {
            let lc = self
                .config
                .listeners
                .get(listener as usize)
                .and_then(|l| l.tls.as_ref());
            let want = lc.is_some_and(|t| t.use_identity_as_username || t.use_subject_as_username);
            if want {
                let subject = lc.is_some_and(|t| t.use_subject_as_username);
                let id = tls::identity(s.ssl(), subject);
                debug!(
                    "TLS client {} presents {:?} ({}).",
                    conn.stream.peer(),
                    id,
                    s.ssl().version_str()
                );
                self.broker.set_identity(key, id.as_deref());
            } else {
                debug!(
                    "TLS connection from {} ({}).",
                    conn.stream.peer(),
                    s.ssl().version_str()
                );
            }
        }
        self.set_write_interest(key, false);
    }

    /// SIGHUP: re-read password, ACL and PSK files and TLS certificates (for
    /// new connections). A broken file keeps the old rules, with the reason logged.
    fn reload(&mut self) {
        info!("Reloading password, ACL, PSK and certificate files.");
        crate::logging::reopen();
        match crate::auth::Security::load(&self.config) {
            Ok(s) => self.broker.set_security(s),
            Err(e) => error!("Reload failed, keeping the old rules: {e}."),
        }
        for (l, index) in self.listeners.iter_mut() {
            let Some(t) = self
                .config
                .listeners
                .get(*index)
                .and_then(|c| c.tls.as_ref())
            else {
                continue;
            };
            match tls::acceptor(t, self.config.psk_file(*index)) {
                Ok(a) => l.tls = Some(std::sync::Arc::new(a)),
                Err(e) => error!(
                    "Reload of {} failed, keeping the old certificate and keys: {e}.",
                    l.name
                ),
            }
        }
    }

    fn read(&mut self, key: usize, now: Instant) {
        for _ in 0..READS_PER_TURN {
            let Some(conn) = self.io.conns.get_mut(key) else {
                return;
            };
            if conn.draining {
                return self.discard(key);
            }
            if conn.closing || websocket::responding(conn) {
                return;
            }
            if conn.backlog() > self.read_pause_bytes {
                // Back-pressure: what the peer sends is left in the kernel
                // (whose window then stops the peer) until it reads its answers;
                // the flush that drains them resumes reading.
                conn.read_paused = true;
                return;
            }
            match conn.stream.read(&mut self.scratch) {
                Ok(0) => return self.lost(key, now),
                Ok(n) => {
                    self.io.counters.bytes_received += n as u64;
                    let drained = conn.drained_by(n, self.scratch.len());
                    if !self.process(key, n, now) || drained {
                        return;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return self.lost(key, now),
            }
        }
        self.again.push(key);
    }

    /// Read and throw away what a draining connection sends, until EOF.
    fn discard(&mut self, key: usize) {
        for _ in 0..READS_PER_TURN {
            let Some(conn) = self.io.conns.get_mut(key) else {
                return;
            };
            match conn.stream.read(&mut self.scratch) {
                Ok(0) => return self.remove(key),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return self.remove(key),
            }
        }
        self.again.push(key);
    }

    /// The broker's close of `key` is flushed. With a reason on its way, shut
    /// the write side and drain input until EOF or [`DRAIN_LINGER`]; otherwise
    /// (nothing to deliver, e.g. a first packet that is not CONNECT) close now.
    fn finish(&mut self, key: usize, now: Instant) {
        let Some(conn) = self.io.conns.get_mut(key) else {
            return;
        };
        if conn.draining {
            return;
        }
        if conn.ws.is_some() {
            self.websocket_ended(key, now);
        }
        let Some(conn) = self.io.conns.get_mut(key) else {
            return;
        };
        if !conn.linger || conn.shutdown_write().is_err() {
            return self.remove(key);
        }
        conn.draining = true;
        let serial = conn.serial;
        self.io.arm(now + DRAIN_LINGER, Due::Linger(key, serial));
        self.set_write_interest(key, false);
        // Input may be waiting already, and edge-triggered readiness will not
        // say so again.
        self.again.push(key);
    }

    /// Decode and hand to the broker every complete packet in what the connection
    /// had left over plus the `n` new bytes in the scratch buffer. Returns false
    /// when the connection is gone or closing.
    fn process(&mut self, key: usize, n: usize, now: Instant) -> bool {
        let Server {
            io,
            broker,
            scratch,
            limits,
            config,
            ..
        } = self;
        let Some(conn) = io.conns.get_mut(key) else {
            return false;
        };
        let was_pending = conn.pending();
        let listener = config.listeners.get(conn.listener as usize);
        let site = websocket::Site {
            dir: listener.and_then(|l| l.http_dir.as_deref()),
            live_view: listener.is_some_and(|l| !l.no_live_view),
        };
        let n = match websocket::input(
            conn,
            scratch,
            n,
            limits.max_packet_size,
            config.websockets_headers_size,
            site,
        ) {
            websocket::Input::Data(0) if conn.ws.is_some() => {
                let changed = conn.pending() != was_pending;
                if websocket::finished(conn) {
                    io.close_conn(key);
                    return false;
                }
                if changed {
                    io.mark_dirty(key);
                }
                return true;
            }
            websocket::Input::Data(n) => n,
            websocket::Input::Close => {
                io.close_conn(key);
                return false;
            }
        };
        if conn.pending() != was_pending {
            // The upgrade's answer or a pong.
            io.mark_dirty(key);
        }
        let Some(conn) = io.conns.get_mut(key) else {
            return false;
        };
        let fresh = &scratch[..n];
        // A partial packet left over from the last read (never empty).
        let mut carry = conn.rbuf.take();
        if let Some(c) = carry.as_deref_mut() {
            c.extend_from_slice(fresh);
        }
        let from_carry = carry.is_some();
        let mut pos = 0;
        // The size of the partial packet left over, when its header says.
        let need = {
            let data: &[u8] = carry.as_deref().map_or(fresh, |c| &c[..]);
            loop {
                let Some(conn) = io.conns.get_mut(key) else {
                    return false;
                };
                if conn.closing {
                    return false;
                }
                if conn.phase == Phase::Connecting && broker.is_connected(key) {
                    conn.phase = Phase::Connected;
                }
                // Matched by reference: the packet is handled where the decoder
                // put it, never moved (each move of a PUBLISH copies ~300 bytes).
                match &decode(&data[pos..], &limits.for_conn(conn)) {
                    Ok(Decoded::Packet(packet, used)) => {
                        let used = *used;
                        let raw = &data[pos..pos + used];
                        pos += used;
                        if let Packet::Connect(c) = packet {
                            // The decoder must know the level for every later packet.
                            conn.version = c.version;
                            if conn.phase == Phase::AwaitingConnect {
                                conn.phase = Phase::Connecting;
                            }
                            if crate::protocol::decode::bridge_marker(raw) {
                                broker.set_bridge(key);
                            }
                        }
                        if io.log_packets {
                            io::log_packet(
                                conn,
                                io.names.get(&key).map(|n| &**n),
                                false,
                                conn.version,
                                packet,
                            );
                        }
                        broker.handle_packet(now, key, packet, io);
                        // Between packets (never inside one: a packet's records
                        // are one all-or-nothing batch), held output that grew
                        // large is released by an early commit.
                        io.commit_early(now);
                    }
                    Ok(Decoded::NeedMore(n)) => break *n,
                    Err(e) => {
                        debug!("Bad packet on connection {key}: {e}.");
                        broker.handle_decode_error(now, key, e, io);
                        // The broker closes it; in case it did not, do it here: a
                        // stream that failed to decode cannot be resynchronised.
                        io.close_conn(key);
                        return false;
                    }
                }
            }
        };
        let Some(conn) = io.conns.get_mut(key) else {
            return false;
        };
        conn.rbuf = match carry {
            Some(mut c) => {
                c.drain(..pos);
                Some(c)
            }
            None if pos < fresh.len() => Some(Box::default()),
            None => None,
        };
        if let Some(rest) = conn.rbuf.as_deref_mut() {
            // A partial packet of known size gets exactly its size, once:
            // growing by doubling would hold up to twice what the peer sent.
            if let Some(total) = need {
                rest.reserve_exact(total.saturating_sub(rest.len()));
            }
            if !from_carry {
                rest.extend_from_slice(&fresh[pos..]);
            }
        }
        conn.trim_read_buffer();
        if websocket::finished(conn) {
            // The client's close frame came after the data just handled.
            io.close_conn(key);
            return false;
        }
        true
    }

    /// A WebSocket connection may be closed by its own layer (a frame error,
    /// the client's close frame, an HTTP exchange that is over) without the
    /// broker having ended it: end it there as a connection lost without
    /// DISCONNECT (the will goes out, the connect timeout is forgotten), once
    /// its last bytes are written. A no-op when the broker ended it.
    fn websocket_ended(&mut self, key: usize, now: Instant) {
        self.broker.connection_lost(now, key, &mut self.io);
    }

    /// The peer went away (EOF, reset, write failure) without the broker closing it.
    fn lost(&mut self, key: usize, now: Instant) {
        if !self.io.conns.contains(key) {
            return;
        }
        self.broker.connection_lost(now, key, &mut self.io);
        self.remove(key);
    }

    fn remove(&mut self, key: usize) {
        if let Some(mut conn) = self.io.conns.try_remove(key) {
            self.io.names.remove(&key);
            if conn.ws.is_some() {
                self.websocket_ended(key, Instant::now());
            }
            #[cfg(feature = "tls")]
            if let Stream::Tls(s) = &mut conn.stream {
                // close_notify, best effort: the socket is closing either way.
                let _ = s.shutdown();
            }
            if let Some(tcp) = conn.stream.tcp() {
                let _ = self.poll.registry().deregister(tcp);
            }
        }
    }

    fn run_timers(&mut self, now: Instant) {
        self.io.wheel.expire(now, &mut self.fired);
        for due in std::mem::take(&mut self.fired) {
            let Some(due) = due.unpack() else {
                continue;
            };
            match due {
                Due::Broker(timer) => self.broker.handle_timer(now, timer, &mut self.io),
                Due::Watchdog => {
                    notify("WATCHDOG=1");
                    if let Some(every) = self.watchdog {
                        self.io.arm(now + every, Due::Watchdog);
                    }
                }
                Due::Bridge(i) => self.bridge_timer(i, now),
                Due::Linger(key, serial) => {
                    if self
                        .io
                        .conns
                        .get(key)
                        .is_some_and(|c| c.closing && c.serial == serial)
                    {
                        debug!("Dropping connection {key}: it did not drain in time.");
                        self.remove(key);
                    }
                }
            }
        }
    }

    /// Retained messages owed to new subscriptions, paced by the broker (see
    /// `Broker::poll_replay`). Runs after a flush, so the broker sees how much each
    /// socket took, and flushes what it produced.
    fn replay(&mut self, now: Instant) {
        self.replay_again = self.broker.poll_replay(now, &mut self.io);
        self.flush_all(now);
    }

    /// Read back the stored messages the broker asked for this turn; answering
    /// may ask for more (the next message of the same queue).
    fn fulfil_loads(&mut self, now: Instant) {
        while !self.io.loads.is_empty() {
            for load in std::mem::take(&mut self.io.loads) {
                let msg = self.io.store.as_ref().and_then(|s| s.load(load.id));
                self.broker.handle_loaded(now, load, msg, &mut self.io);
            }
        }
    }

    /// Put this turn's durable changes on disk and release the output held for
    /// them (group commit: one sync per loop turn). When the commit fails, the
    /// held acknowledgements are dropped and their connections closed: nothing
    /// acknowledges what is not on disk. Compacts the log when it has grown
    /// enough.
    fn commit(&mut self, now: Instant) {
        let Some(store) = self.io.store.as_ref() else {
            return;
        };
        let was_dead = store.dead();
        if let Err(e) = self.io.commit(now) {
            let dead = self.io.store.as_ref().is_some_and(|s| s.dead());
            if dead && !was_dead {
                error!(
                    "PERSISTENCE LOST: syncing the log failed ({e}). The kernel may have dropped what was written, so the log is no longer trusted: QoS 1/2 messages for durable sessions are refused until midge is restarted (start-up replays what is really on disk)."
                );
            } else if !dead {
                error!("Persistence write failed, will retry; refusing QoS 1/2 for durable state meanwhile: {e}.");
            }
            for key in self.io.take_held() {
                if let Some(i) = self.local_bridge(key) {
                    // A bridge's local session: dropped like any other; the
                    // bridge attaches it again (and the remote re-sends).
                    warn!("Bridge {i}: its local session's acknowledgements could not be made durable: detaching it.");
                    self.lost(key, now);
                    self.detach_bridge_local(i, key);
                    continue;
                }
                let Some(conn) = self.io.conns.get_mut(key) else {
                    continue;
                };
                info!("Closing connection {key}: its acknowledgements could not be made durable.");
                // What precedes the barrier promised nothing: best effort.
                let _ = conn.flush();
                if conn.closing {
                    self.remove(key);
                } else {
                    self.lost(key, now);
                }
            }
            return;
        }
        let Some(store) = self.io.store.as_mut() else {
            return;
        };
        if store.wants_compaction() {
            let before = store.size();
            let broker = &self.broker;
            match store.compact(|w| broker.dump(w)) {
                Ok(pause) => info!(
                    "Compacted the persistence log from {before} to {} bytes in {:.1} ms.",
                    store.size(),
                    pause.as_secs_f64() * 1000.0
                ),
                Err(e) => error!("Compaction failed (the log is intact): {e}."),
            }
        }
    }

    /// Write out everything queued this turn: one `write` per connection, after
    /// the log's commit.
    fn flush_all(&mut self, now: Instant) {
        // Losing a connection can publish a will, which dirties others (and may
        // add records): repeat.
        loop {
            if !self.io.queue_alerts.is_empty() {
                self.bridge_queue_alerts(now);
            }
            self.fulfil_loads(now);
            self.commit(now);
            if self.io.dirty.is_empty() && self.io.loads.is_empty() {
                return;
            }
            for key in std::mem::take(&mut self.io.dirty) {
                if let Some(i) = self.local_bridge(key) {
                    self.bridge_local_output(key, i, now);
                    continue;
                }
                let Some(conn) = self.io.conns.get_mut(key) else {
                    continue;
                };
                conn.dirty = false;
                let result = conn.flush();
                let closing = conn.closing;
                if conn.read_paused && conn.backlog() <= self.read_pause_bytes {
                    conn.read_paused = false;
                    self.again.push(key);
                }
                match result {
                    Flush::Done if closing => self.finish(key, now),
                    Flush::Done => {
                        self.io.recycle(key);
                        self.set_write_interest(key, false);
                    }
                    // Not after a commit; released bytes are flushed next round.
                    Flush::Held => {}
                    Flush::More => self.flush_again.push(key),
                    Flush::Blocked => {
                        self.set_write_interest(key, true);
                        if closing {
                            let serial = conn_serial(&self.io, key);
                            self.io.arm(now + LINGER, Due::Linger(key, serial));
                        }
                    }
                    Flush::Failed if closing => self.remove(key),
                    Flush::Failed => self.lost(key, now),
                }
            }
        }
    }

    /// Ask for writable events only while output is stuck, so a busy socket does
    /// not wake the loop for nothing.
    fn set_write_interest(&mut self, key: usize, want: bool) {
        let Some(conn) = self.io.conns.get_mut(key) else {
            return;
        };
        if conn.want_write == want {
            return;
        }
        let interest = if want {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        let Some(tcp) = conn.stream.tcp() else {
            return;
        };
        match self.poll.registry().reregister(tcp, Token(key), interest) {
            Ok(()) => conn.want_write = want,
            Err(e) => warn!("Unable to update interest of connection {key}: {e}."),
        }
    }
}

/// sd_notify, with a failure logged (the broker runs on without the manager).
fn notify(state: &str) {
    if let Err(e) = crate::sys::sd_notify(state) {
        warn!("Unable to notify systemd ({state}): {e}.");
    }
}

/// What the decoder allows a connection, by how far it has come.
struct InboundLimits {
    /// `max_packet_size` (the protocol maximum for `0`).
    max_packet_size: usize,
    /// Before CONNECT is accepted: `max_connect_packet_size`, never above
    /// `max_packet_size`.
    max_connect_packet_size: usize,
    max_user_properties: usize,
    max_filters: usize,
}

impl InboundLimits {
    fn new(config: &Config, max_packet_size: usize) -> Self {
        let unlimited = |n: usize| if n == 0 { usize::MAX } else { n };
        InboundLimits {
            max_packet_size,
            max_connect_packet_size: match config.max_connect_packet_size {
                0 => max_packet_size,
                n => n.min(max_packet_size),
            },
            max_user_properties: unlimited(config.max_user_properties),
            max_filters: unlimited(config.max_filters_per_packet),
        }
    }

    /// The limits for `conn`'s next packet. Until the broker has accepted a
    /// CONNECT, a peer is unauthenticated: its packets are held to the small
    /// CONNECT size, so what it makes the server buffer stays small (mosquitto
    /// CVE-2023-0809 is this class).
    fn for_conn(&self, conn: &Connection) -> DecodeLimits {
        let max_packet_size = if conn.phase == Phase::Connected {
            self.max_packet_size
        } else {
            self.max_connect_packet_size
        };
        DecodeLimits {
            version: conn.version,
            max_packet_size,
            expect_connect: conn.phase == Phase::AwaitingConnect,
            max_user_properties: self.max_user_properties,
            max_topic_filters: self.max_filters,
        }
    }
}

/// The wall-clock time in milliseconds since 1970 (the broker is given it).
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn conn_serial(io: &Io, key: usize) -> u32 {
    io.conns.get(key).map_or(0, |c| c.serial)
}

#[cfg(test)]
mod tests {
    //! The whole server, one loop turn at a time, on an in-memory log whose
    //! sync fails: the durability contract end to end (issue 11 item 1).
    use std::io::{ErrorKind, Read, Write};
    use std::net::TcpStream;
    use std::path::Path;

    use super::*;
    use crate::persist::fs::MemFs;
    use crate::persist::{Store, SyncPolicy};
    use crate::protocol::{encode, Connect, Properties, ProtocolVersion, Publish, QoS};

    fn server(fs: &MemFs) -> (Server, std::net::SocketAddr) {
        let dir = std::env::temp_dir().join(format!("midge-server-{}", std::process::id()));
        let text = format!(
            "listener 0 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}\n",
            dir.display()
        );
        let config = Config::parse_str(&text, Path::new("test.conf")).expect("config");
        let mut s = Server::new(&config).expect("server");
        let (store, _) = Store::open_in(
            Box::new(fs.clone()),
            Path::new("midge.db"),
            SyncPolicy::Always,
            false,
        )
        .expect("log");
        s.io.store = Some(store);
        let addr = s.listeners[0].0.socket.local_addr().expect("addr");
        let _ = std::fs::remove_dir_all(&dir);
        (s, addr)
    }

    fn bytes(packet: &Packet<'_>) -> Vec<u8> {
        let mut b = Vec::new();
        encode(packet, ProtocolVersion::V5, &mut b).expect("encode");
        b
    }

    /// Run loop turns until the client has `want` bytes or the socket closed;
    /// returns what arrived and whether it closed.
    fn pump(
        s: &mut Server,
        events: &mut Events,
        c: &mut TcpStream,
        want: usize,
    ) -> (Vec<u8>, bool) {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        for _ in 0..500 {
            s.turn(events, Some(Duration::from_millis(5)))
                .expect("turn");
            loop {
                match c.read(&mut buf) {
                    Ok(0) => return (got, true),
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => return (got, true),
                }
            }
            if want > 0 && got.len() >= want {
                return (got, false);
            }
        }
        (got, false)
    }

    fn client(
        addr: std::net::SocketAddr,
        s: &mut Server,
        events: &mut Events,
        id: &str,
    ) -> TcpStream {
        let mut c = TcpStream::connect(addr).expect("connect");
        c.set_nonblocking(true).expect("nonblocking");
        let connect = Packet::Connect(Box::new(Connect {
            version: ProtocolVersion::V5,
            clean_start: false,
            keep_alive: 0,
            properties: Properties {
                session_expiry_interval: Some(3600),
                ..Properties::default()
            },
            client_id: id,
            will: None,
            username: None,
            password: None,
        }));
        c.write_all(&bytes(&connect)).expect("write");
        let (got, closed) = pump(s, events, &mut c, 1);
        assert!(!closed && got.first() == Some(&0x20), "CONNACK: {got:?}");
        c
    }

    fn publish_qos1(c: &mut TcpStream, id: u16) {
        let p = Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: "kept",
            packet_id: id,
            properties: Properties::default(),
            payload: b"v",
        });
        c.write_all(&bytes(&p)).expect("write");
    }

    /// Issue 11 item 1: the log's `fdatasync` fails (EIO). The PUBACK of the
    /// publish whose record it was must not leave: the connection is closed
    /// without it. The failure is fatal for the log: the next QoS 1 publish is
    /// refused (v5 PUBACK 0x97), even though the disk "works" again.
    #[test]
    fn a_failing_fdatasync_releases_no_puback() {
        let fs = MemFs::new();
        let (mut s, addr) = server(&fs);
        let mut events = Events::with_capacity(64);
        let mut c = client(addr, &mut s, &mut events, "pub");
        fs.fail_sync(true);
        publish_qos1(&mut c, 1);
        let (got, closed) = pump(&mut s, &mut events, &mut c, 0);
        assert!(closed, "the connection is closed");
        assert!(
            !got.contains(&0x40),
            "no PUBACK left before a failed sync: {got:?}"
        );
        fs.fail_sync(false);
        let mut c = client(addr, &mut s, &mut events, "pub2");
        publish_qos1(&mut c, 2);
        let (got, _) = pump(&mut s, &mut events, &mut c, 4);
        // PUBACK, remaining length 3, packet id 2, reason 0x97 (quota exceeded).
        assert_eq!(got.get(..5), Some(&[0x40, 3, 0, 2, 0x97][..]), "{got:?}");
    }
}
