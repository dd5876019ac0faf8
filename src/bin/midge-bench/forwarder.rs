//! `midge-bench forwarder --port P`: the least a broker must do per message,
//! to calibrate the machine. Not a broker.
//!
//! One thread, one `mio::Poll`, midge's own codec. It reads MQTT from its
//! connections (into one shared buffer, decoding in place), hands each PUBLISH
//! to the subscribers of exactly its topic, answers QoS 1 with PUBACK, forwards
//! at QoS 1 with a fresh packet id and takes the subscribers' PUBACKs without
//! looking at them, and writes once per connection per loop turn. Nothing else:
//! no wildcards (a filter is compared as a plain string), no QoS 2, no sessions,
//! no in-flight window, no limits, no keep-alive, no authentication. `make
//! bench` runs it beside the brokers, so their messages per CPU-second can be
//! set against what this machine allows on the same load.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use midge::protocol::{
    decode, encode, ConnAck, DecodeLimits, Decoded, Packet, Properties, ProtocolVersion, PubResp,
    Publish, QoS, ReasonCode, SubAck,
};

const LISTENER: Token = Token(usize::MAX);
/// The shared read buffer, as midge's.
const SCRATCH: usize = 64 * 1024;
/// Largest packet accepted (as midge's default `max_packet_size` allows).
const MAX_PACKET: usize = 1 << 28;

/// One client connection.
struct Client {
    stream: TcpStream,
    /// The level its CONNECT named (3.1.1 until then).
    version: ProtocolVersion,
    /// The start of a packet that has not all arrived yet.
    partial: Vec<u8>,
    /// Output of this turn (and what the socket did not take before).
    out: Vec<u8>,
    /// Written part of `out`.
    written: usize,
    /// On this turn's list of connections to write.
    dirty: bool,
    /// Next packet id of a QoS 1 message forwarded to it.
    next_id: u16,
}

impl Client {
    fn send(&mut self, packet: &Packet<'_>) -> bool {
        encode(packet, self.version, &mut self.out).is_ok()
    }
}

/// The forwarder's whole state.
struct Forwarder {
    clients: Slab<Client>,
    /// Exact topic -> (connection, granted QoS).
    subscribers: HashMap<Box<str>, Vec<(usize, QoS)>>,
    /// Connections with output this turn.
    dirty: Vec<usize>,
    /// Connections to drop at the end of the turn.
    gone: Vec<usize>,
}

/// Listen on 127.0.0.1:`port` and forward until killed.
pub fn run(port: u16) -> Result<(), String> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut listener = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .map_err(|e| e.to_string())?;
    // The line a script or test waits for before it connects.
    println!("midge-bench forwarder listening on {addr}");
    let _ = std::io::stdout().flush();
    let mut events = Events::with_capacity(1024);
    let mut scratch = vec![0u8; SCRATCH];
    let mut f = Forwarder {
        clients: Slab::new(),
        subscribers: HashMap::new(),
        dirty: Vec::new(),
        gone: Vec::new(),
    };
    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.to_string()),
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                f.accept(&listener, &poll);
                continue;
            }
            let key = event.token().0;
            if event.is_writable() {
                f.mark_dirty(key);
            }
            if event.is_readable() || event.is_read_closed() {
                f.read(key, &mut scratch);
            }
        }
        f.flush();
        for key in std::mem::take(&mut f.gone) {
            f.drop_client(key, &poll);
        }
    }
}

impl Forwarder {
    fn accept(&mut self, listener: &TcpListener, poll: &Poll) {
        loop {
            let (mut stream, _) = match listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    eprintln!("midge-bench forwarder: accept: {e}");
                    return;
                }
            };
            let _ = stream.set_nodelay(true);
            let entry = self.clients.vacant_entry();
            let key = entry.key();
            if poll
                .registry()
                .register(
                    &mut stream,
                    Token(key),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .is_err()
            {
                continue;
            }
            entry.insert(Client {
                stream,
                version: ProtocolVersion::V311,
                partial: Vec::new(),
                out: Vec::new(),
                written: 0,
                dirty: false,
                next_id: 1,
            });
        }
    }

    fn mark_dirty(&mut self, key: usize) {
        if let Some(c) = self.clients.get_mut(key) {
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    /// Read everything the connection has and act on every complete packet.
    fn read(&mut self, key: usize, scratch: &mut [u8]) {
        loop {
            let Some(c) = self.clients.get_mut(key) else {
                return;
            };
            let n = match c.stream.read(scratch) {
                Ok(0) => return self.gone.push(key),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return self.gone.push(key),
            };
            // Decode in place unless a packet's start is carried over.
            let mut partial = std::mem::take(&mut c.partial);
            let carried = !partial.is_empty();
            if carried {
                partial.extend_from_slice(&scratch[..n]);
            }
            let data: &[u8] = if carried { &partial } else { &scratch[..n] };
            let mut pos = 0;
            let ok = loop {
                // Per packet: a CONNECT sets the level of those after it.
                let Some(version) = self.clients.get(key).map(|c| c.version) else {
                    return;
                };
                match decode(&data[pos..], &DecodeLimits::new(version, MAX_PACKET)) {
                    Ok(Decoded::Packet(p, used)) => {
                        pos += used;
                        if !self.handle(key, p) {
                            break false;
                        }
                    }
                    Ok(Decoded::NeedMore(_)) => break true,
                    Err(_) => break false,
                }
            };
            if !ok {
                return self.gone.push(key);
            }
            let rest = if carried {
                partial.drain(..pos);
                partial
            } else {
                data[pos..].to_vec()
            };
            if let Some(c) = self.clients.get_mut(key) {
                c.partial = rest;
            }
        }
    }

    /// Act on one packet from `key`; false closes the connection.
    fn handle(&mut self, key: usize, packet: Packet<'_>) -> bool {
        match packet {
            Packet::Publish(p) => return self.forward(key, &p),
            // Subscribers' acks: nothing is kept to release.
            Packet::PubAck(_) => return true,
            Packet::Connect(c) => {
                let Some(client) = self.clients.get_mut(key) else {
                    return false;
                };
                client.version = c.version;
                let ack = Packet::ConnAck(ConnAck {
                    session_present: false,
                    reason: ReasonCode::SUCCESS,
                    properties: Properties::default(),
                });
                if !client.send(&ack) {
                    return false;
                }
            }
            Packet::Subscribe(s) => {
                let mut reasons = Vec::with_capacity(s.filters.len());
                for (filter, options) in &s.filters {
                    let qos = options.qos.min(QoS::AtLeastOnce);
                    self.subscribers
                        .entry((*filter).into())
                        .or_default()
                        .push((key, qos));
                    reasons.push(ReasonCode(qos as u8));
                }
                let ack = Packet::SubAck(SubAck {
                    packet_id: s.packet_id,
                    properties: Properties::default(),
                    reasons,
                });
                let Some(client) = self.clients.get_mut(key) else {
                    return false;
                };
                if !client.send(&ack) {
                    return false;
                }
            }
            Packet::PingReq => {
                let Some(client) = self.clients.get_mut(key) else {
                    return false;
                };
                if !client.send(&Packet::PingResp) {
                    return false;
                }
            }
            // DISCONNECT, QoS 2 and anything else a forwarder does not do.
            _ => return false,
        }
        self.mark_dirty(key);
        true
    }

    /// One PUBLISH to every subscriber of its exact topic, and its PUBACK.
    fn forward(&mut self, from: usize, p: &Publish<'_>) -> bool {
        if p.qos == QoS::ExactlyOnce {
            return false;
        }
        if let Some(subs) = self.subscribers.get(p.topic) {
            for &(key, granted) in subs {
                let Some(c) = self.clients.get_mut(key) else {
                    continue;
                };
                let qos = p.qos.min(granted);
                let packet_id = if qos == QoS::AtMostOnce {
                    0
                } else {
                    let id = c.next_id;
                    c.next_id = id.checked_add(1).unwrap_or(1);
                    id
                };
                let out = Packet::Publish(Publish {
                    dup: false,
                    qos,
                    retain: false,
                    topic: p.topic,
                    packet_id,
                    properties: Properties::default(),
                    payload: p.payload,
                });
                if c.send(&out) && !c.dirty {
                    c.dirty = true;
                    self.dirty.push(key);
                }
            }
        }
        if p.qos == QoS::AtLeastOnce {
            let Some(c) = self.clients.get_mut(from) else {
                return false;
            };
            if !c.send(&Packet::PubAck(PubResp::success(p.packet_id))) {
                return false;
            }
            self.mark_dirty(from);
        }
        true
    }

    /// One `write` per connection with output; what the socket does not take
    /// waits for its writable event.
    fn flush(&mut self) {
        for key in std::mem::take(&mut self.dirty) {
            let Some(c) = self.clients.get_mut(key) else {
                continue;
            };
            c.dirty = false;
            if c.written == c.out.len() {
                continue;
            }
            match c.stream.write(&c.out[c.written..]) {
                Ok(n) => c.written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {
                    c.dirty = true;
                    self.dirty.push(key);
                }
                Err(_) => self.gone.push(key),
            }
            if let Some(c) = self.clients.get_mut(key) {
                if c.written == c.out.len() {
                    c.out.clear();
                    c.written = 0;
                }
            }
        }
    }

    fn drop_client(&mut self, key: usize, poll: &Poll) {
        let Some(mut c) = self.clients.try_remove(key) else {
            return;
        };
        let _ = poll.registry().deregister(&mut c.stream);
        // Rare (the end of a run): a scan of the table is fine.
        self.subscribers.retain(|_, subs| {
            subs.retain(|&(k, _)| k != key);
            !subs.is_empty()
        });
    }
}
