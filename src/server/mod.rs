//! The I/O shell: one thread, one `mio::Poll`. Listeners, connections with their
//! buffers (in a slab), the timing wheel, signals. It moves bytes and time into the
//! broker and the broker's output back out; it makes no protocol decisions.
//!
//! One loop turn: wait in `poll` until an event or the wheel's next deadline;
//! accept, read and decode (packets go to the broker as they are decoded, output
//! is appended to each connection's write buffer); run due timers; then flush
//! every connection that got output, one `write` each. An idle broker has no
//! deadline in the wheel and sleeps until a socket or a signal wakes it.

mod connection;
mod io;
pub mod listener;
mod signals;
pub mod wheel;

use std::io::{ErrorKind, Read};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use crate::broker::Broker;
use crate::config::Config;
use crate::protocol::{decode, DecodeLimits, Decoded, Packet};

use connection::{Connection, Flush};
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
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerError::Bind(addr, e) => write!(f, "cannot listen on {addr}: {e}"),
            ServerError::Io(e) => write!(f, "I/O error: {e}"),
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
/// Retry interval for `accept` after running out of file descriptors.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

const SIGNAL_TOKEN: Token = Token(usize::MAX);
/// Listener `i` has token `LISTENER_BASE + i`; connections use their slab key.
const LISTENER_BASE: usize = usize::MAX - 4096;

/// Run the broker with `config` until SIGINT/SIGTERM.
pub fn run(config: Config) -> Result<(), ServerError> {
    Server::new(&config)?.run()
}

struct Server {
    poll: Poll,
    /// Bound sockets and the index of the config listener each came from.
    listeners: Vec<(Listener, usize)>,
    broker: Broker,
    io: Io,
    scratch: Box<[u8]>,
    signals: SignalPipe,
    max_connections: Option<usize>,
    max_packet_size: usize,
    /// Connections left with unread data by the fairness cap.
    again: Vec<usize>,
    /// `accept` failed for lack of descriptors: retry soon.
    accept_paused: bool,
    fired: Vec<Due>,
}

impl Server {
    fn new(config: &Config) -> Result<Server, ServerError> {
        let poll = Poll::new().map_err(ServerError::Io)?;
        // Before the listeners: once a client can connect, a signal must find its
        // handler installed.
        let signals = SignalPipe::install().map_err(ServerError::Io)?;
        let mut listeners = Vec::new();
        for (index, lc) in config.listeners.iter().enumerate() {
            let bound = listener::bind(lc).map_err(|(a, e)| ServerError::Bind(a, e))?;
            for mut l in bound {
                let token = Token(LISTENER_BASE + listeners.len());
                poll.registry()
                    .register(&mut l.socket, token, Interest::READABLE)
                    .map_err(ServerError::Io)?;
                info!("Opening listen socket on {}.", l.name);
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
        let broker = Broker::new(config.broker_config());
        let max_packet_size = broker.config().max_packet_size;
        Ok(Server {
            poll,
            listeners,
            broker,
            io: Io::new(Instant::now()),
            scratch: vec![0; SCRATCH].into_boxed_slice(),
            signals,
            max_connections: config.max_connections,
            max_packet_size,
            again: Vec::new(),
            accept_paused: false,
            fired: Vec::new(),
        })
    }

    fn run(mut self) -> Result<(), ServerError> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                return Err(ServerError::Io(e));
            }
            let now = Instant::now();
            let mut shutdown = false;
            for event in events.iter() {
                match event.token() {
                    SIGNAL_TOKEN => match self.signals.take() {
                        Some(Signal::Shutdown) => shutdown = true,
                        Some(Signal::Reload) => {
                            info!("Reloading: nothing in this version needs a reload.")
                        }
                        None => {}
                    },
                    Token(t) if t >= LISTENER_BASE => self.accept(t - LISTENER_BASE, now),
                    Token(key) => {
                        if event.is_writable() {
                            self.io.mark_dirty(key);
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.read(key, now);
                        }
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
            self.run_timers(now);
            self.flush_all(now);
            if shutdown {
                info!(
                    "Shutting down: closing {} connection(s).",
                    self.io.conns.len()
                );
                self.broker.shutdown(now, &mut self.io);
                self.flush_all(now);
                return Ok(());
            }
        }
    }

    fn poll_timeout(&self) -> Option<Duration> {
        if !self.again.is_empty() {
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
        let Some((listener, config_index)) = self.listeners.get(index) else {
            return;
        };
        let config_index = *config_index;
        loop {
            let (mut stream, addr) = match listener.socket.accept() {
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
            let _ = stream.set_nodelay(true);
            let key = self.io.conns.vacant_key();
            if key >= LISTENER_BASE {
                continue;
            }
            if let Err(e) =
                self.poll
                    .registry()
                    .register(&mut stream, Token(key), Interest::READABLE)
            {
                warn!("Unable to register connection from {peer}: {e}.");
                continue;
            }
            self.io.add(Connection::new(stream));
            debug!("New connection from {peer} on listener {config_index}.");
            self.broker
                .connection_opened(now, key, &peer, config_index, &mut self.io);
        }
    }

    fn read(&mut self, key: usize, now: Instant) {
        for _ in 0..READS_PER_TURN {
            let Some(conn) = self.io.conns.get_mut(key) else {
                return;
            };
            if conn.closing {
                return;
            }
            match conn.stream.read(&mut self.scratch) {
                Ok(0) => return self.lost(key, now),
                Ok(n) => {
                    if !self.process(key, n, now) {
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

    /// Decode and hand to the broker every complete packet in what the connection
    /// had left over plus the `n` new bytes in the scratch buffer. Returns false
    /// when the connection is gone or closing.
    fn process(&mut self, key: usize, n: usize, now: Instant) -> bool {
        let Server {
            io,
            broker,
            scratch,
            max_packet_size,
            ..
        } = self;
        let Some(conn) = io.conns.get_mut(key) else {
            return false;
        };
        let fresh = &scratch[..n];
        let mut carry = std::mem::take(&mut conn.rbuf);
        let from_carry = !carry.is_empty();
        if from_carry {
            carry.extend_from_slice(fresh);
        }
        let mut pos = 0;
        {
            let data: &[u8] = if from_carry { &carry } else { fresh };
            loop {
                let Some(conn) = io.conns.get_mut(key) else {
                    return false;
                };
                if conn.closing {
                    return false;
                }
                let limits = DecodeLimits {
                    version: conn.version,
                    max_packet_size: *max_packet_size,
                };
                match decode(&data[pos..], &limits) {
                    Ok(Decoded::Packet(packet, used)) => {
                        pos += used;
                        if let Packet::Connect(c) = &packet {
                            // The decoder must know the level for every later packet.
                            conn.version = c.version;
                        }
                        broker.handle_packet(now, key, packet, io);
                    }
                    Ok(Decoded::NeedMore(_)) => break,
                    Err(e) => {
                        debug!("Bad packet on connection {key}: {e}.");
                        broker.handle_decode_error(now, key, &e, io);
                        // The broker closes it; in case it did not, do it here: a
                        // stream that failed to decode cannot be resynchronised.
                        io.close_conn(key);
                        return false;
                    }
                }
            }
        }
        let Some(conn) = io.conns.get_mut(key) else {
            return false;
        };
        if from_carry {
            carry.drain(..pos);
            conn.rbuf = carry;
        } else {
            conn.rbuf.extend_from_slice(&fresh[pos..]);
        }
        conn.trim_read_buffer();
        true
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
            let _ = self.poll.registry().deregister(&mut conn.stream);
        }
    }

    fn run_timers(&mut self, now: Instant) {
        self.io.wheel.expire(now, &mut self.fired);
        for due in std::mem::take(&mut self.fired) {
            match due {
                Due::Broker(timer) => self.broker.handle_timer(now, timer, &mut self.io),
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

    /// Write out everything queued this turn: one `write` per connection.
    fn flush_all(&mut self, now: Instant) {
        // Losing a connection can publish a will, which dirties others: repeat.
        while !self.io.dirty.is_empty() {
            for key in std::mem::take(&mut self.io.dirty) {
                let Some(conn) = self.io.conns.get_mut(key) else {
                    continue;
                };
                conn.dirty = false;
                let result = conn.flush();
                let closing = conn.closing;
                match result {
                    Flush::Done if closing => self.remove(key),
                    Flush::Done => self.set_write_interest(key, false),
                    Flush::Blocked => {
                        self.set_write_interest(key, true);
                        if closing {
                            let serial = conn_serial(&self.io, key);
                            self.io.wheel.insert(now + LINGER, Due::Linger(key, serial));
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
        match self
            .poll
            .registry()
            .reregister(&mut conn.stream, Token(key), interest)
        {
            Ok(()) => conn.want_write = want,
            Err(e) => warn!("Unable to update interest of connection {key}: {e}."),
        }
    }
}

fn conn_serial(io: &Io, key: usize) -> u64 {
    io.conns.get(key).map_or(0, |c| c.serial)
}
