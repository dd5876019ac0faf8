//! One client socket and its buffers. Kept small on purpose: an idle connection
//! owns no buffer memory at all (both vectors are empty and unallocated), which is
//! what lets a 64 MB gateway hold tens of thousands of clients.

use std::io::{self, Read, Write};

use mio::net::TcpStream;
#[cfg(feature = "tls")]
use openssl::ssl::{HandshakeError, MidHandshakeSslStream, SslStream};

use crate::protocol::ProtocolVersion;

/// Buffers above this capacity are released once drained, so one burst does not
/// pin memory on an otherwise idle connection.
const KEEP_CAPACITY: usize = 16 * 1024;

/// The byte stream under MQTT: plain TCP, or TLS (during or after the handshake).
/// WebSocket framing sits above it (see [`Connection::ws`]).
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS handshake in progress (`None` only transiently while it advances).
    /// Boxed: it is large and short-lived, and every connection pays for the
    /// largest variant.
    #[cfg(feature = "tls")]
    Handshaking(Option<Box<MidHandshakeSslStream<TcpStream>>>),
    /// TLS established.
    #[cfg(feature = "tls")]
    Tls(Box<SslStream<TcpStream>>),
    /// No socket: the local side of bridge number N. What the broker writes to it
    /// is handed to that bridge at flush time, not written anywhere.
    Bridge(usize),
}

/// Where a TLS handshake stands.
#[cfg_attr(not(feature = "tls"), allow(dead_code))]
pub enum Handshake {
    /// Established (or not TLS at all).
    Done,
    /// Waiting for the peer.
    Pending,
    /// Failed: close the connection.
    Failed(String),
}

impl Stream {
    /// Start TLS on an accepted (and already registered) socket.
    #[cfg(feature = "tls")]
    pub fn accept_tls(acceptor: &super::tls::Acceptor, tcp: TcpStream) -> Result<Stream, String> {
        match acceptor.accept(tcp) {
            Ok(s) => Ok(Stream::Tls(Box::new(s))),
            Err(HandshakeError::WouldBlock(mid)) => Ok(Stream::Handshaking(Some(Box::new(mid)))),
            Err(HandshakeError::SetupFailure(e)) => Err(e.to_string()),
            Err(HandshakeError::Failure(mid)) => Err(mid.error().to_string()),
        }
    }

    /// No TLS in this build: listeners never have an acceptor (uninhabited).
    #[cfg(not(feature = "tls"))]
    pub fn accept_tls(acceptor: &super::tls::Acceptor, _tcp: TcpStream) -> Result<Stream, String> {
        match *acceptor {}
    }

    /// Advance a handshake on readiness.
    #[cfg(not(feature = "tls"))]
    pub fn handshake(&mut self) -> Handshake {
        Handshake::Done
    }

    /// Advance a handshake on readiness.
    #[cfg(feature = "tls")]
    pub fn handshake(&mut self) -> Handshake {
        let Stream::Handshaking(slot) = self else {
            return Handshake::Done;
        };
        let Some(mid) = slot.take() else {
            return Handshake::Failed("handshake state lost".into());
        };
        match (*mid).handshake() {
            Ok(s) => {
                *self = Stream::Tls(Box::new(s));
                Handshake::Done
            }
            Err(HandshakeError::WouldBlock(mid)) => {
                *slot = Some(Box::new(mid));
                Handshake::Pending
            }
            Err(HandshakeError::SetupFailure(e)) => Handshake::Failed(e.to_string()),
            Err(HandshakeError::Failure(mid)) => {
                let e = mid.error().to_string();
                // Kept until the connection is dropped so that the failure's
                // log line can still name the peer (`peer` reads the socket).
                *slot = Some(Box::new(mid));
                Handshake::Failed(e)
            }
        }
    }

    /// The TCP socket underneath (for registration with the poll).
    pub fn tcp(&mut self) -> Option<&mut TcpStream> {
        match self {
            Stream::Plain(t) => Some(t),
            #[cfg(feature = "tls")]
            Stream::Handshaking(m) => m.as_mut().map(|m| m.get_mut()),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => Some(s.get_mut()),
            Stream::Bridge(_) => None,
        }
    }

    /// The bridge this connection is the local side of, if it is one.
    pub fn bridge(&self) -> Option<usize> {
        match self {
            Stream::Bridge(i) => Some(*i),
            _ => None,
        }
    }

    /// The peer's address, for logs (looked up when needed rather than stored
    /// with every connection).
    pub fn peer(&self) -> String {
        let addr = match self {
            Stream::Plain(t) => t.peer_addr().ok(),
            #[cfg(feature = "tls")]
            Stream::Handshaking(m) => m.as_ref().and_then(|m| m.get_ref().peer_addr().ok()),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.get_ref().peer_addr().ok(),
            Stream::Bridge(i) => return format!("bridge {i}"),
        };
        // The address is gone once the peer has reset the connection.
        addr.map_or_else(
            || "an unknown address (connection reset)".to_string(),
            super::listener::peer_name,
        )
    }

    /// True while the TLS handshake runs.
    pub fn handshaking(&self) -> bool {
        #[cfg(feature = "tls")]
        return matches!(self, Stream::Handshaking(_));
        #[cfg(not(feature = "tls"))]
        false
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(t) => t.read(buf),
            Stream::Bridge(_) => Err(io::ErrorKind::WouldBlock.into()),
            #[cfg(feature = "tls")]
            Stream::Handshaking(_) => Err(io::ErrorKind::WouldBlock.into()),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(t) => t.write(buf),
            Stream::Bridge(_) => Err(io::ErrorKind::WouldBlock.into()),
            #[cfg(feature = "tls")]
            Stream::Handshaking(_) => Err(io::ErrorKind::WouldBlock.into()),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// How far a connection has come towards a session: it decides the decode
/// limits, as an unauthenticated peer gets far less room than a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Nothing decoded yet: only CONNECT may come [MQTT-3.1.0-1].
    AwaitingConnect,
    /// CONNECT decoded, the broker has not accepted it (yet).
    Connecting,
    /// The broker accepted CONNECT.
    Connected,
}

/// A connection in the server's slab. Kept to what every connection needs
/// all the time: what only some connections need, or only some of the time
/// (the bytes of a partial packet, queued output, WebSocket framing), is boxed
/// and absent while unused, so an idle client costs 56 bytes here.
pub struct Connection {
    /// The socket.
    pub stream: Stream,
    /// Bytes of a packet that has not fully arrived yet (complete packets are
    /// decoded straight from the loop's shared read buffer and never land
    /// here). `None` whenever there are none. Boxed: a `Vec` inline would
    /// cost every connection 24 bytes for what few hold at any time.
    #[allow(clippy::box_collection)]
    pub rbuf: Option<Box<Vec<u8>>>,
    /// Output not yet taken by the socket: lent from the server's pool while
    /// there is some (see [`super::io::Io::recycle`]), `None` when idle.
    pub out: Option<Box<WriteBuffer>>,
    /// WebSocket framing, on `protocol websockets` listeners only.
    pub ws: Option<Box<super::websocket::WsState>>,
    /// Unique per connection among those open at once, for timers that outlive
    /// it (slab keys are reused). Wraps after 2^32 connections, long after any
    /// timer naming an earlier one has fired.
    pub serial: u32,
    /// Index of the config listener it came in on, or [`BRIDGE_SIDE`] (16
    /// bits: a listener at index 65,535 or beyond is accepted on by none).
    pub listener: u16,
    /// Protocol version for decoding, learnt from CONNECT.
    pub version: ProtocolVersion,
    /// Where the MQTT handshake stands (selects the decode limits).
    pub phase: Phase,
    /// Output is queued and the connection is in the loop's flush list.
    pub dirty: bool,
    /// Registered for writable events (only while output is stuck).
    pub want_write: bool,
    /// The broker closed it: flush what is queued, then drop it.
    pub closing: bool,
    /// The last write stopped short: the peer is not keeping up.
    pub blocked: bool,
    /// Reading stopped because output is stuck above the cap (resumed when it
    /// drains).
    pub read_paused: bool,
    /// A DISCONNECT or a refusing CONNACK is queued: after the flush, shut the
    /// write side and drain input rather than close with input unread.
    pub linger: bool,
    /// The write side is shut; input is read and thrown away until EOF.
    pub draining: bool,
    /// The poll said the peer closed its side or the socket failed: read
    /// until EOF or an error, not only until a short read (see
    /// [`Connection::drained_by`]).
    pub input_closed: bool,
}

/// A connection's queued output, with how much of it is written and where the
/// part that waits for the log's commit begins.
pub struct WriteBuffer {
    /// Encoded packets not yet taken by the socket; `sent` bytes of it are.
    pub bytes: Vec<u8>,
    /// How much of `bytes` has been written.
    pub sent: usize,
    /// `bytes` from this offset on waits for the persistence log's commit
    /// (acknowledgements of records not yet on disk); [`NO_BARRIER`] = none.
    pub barrier: usize,
}

impl Default for WriteBuffer {
    fn default() -> Self {
        WriteBuffer {
            bytes: Vec::new(),
            sent: 0,
            barrier: NO_BARRIER,
        }
    }
}

impl WriteBuffer {
    /// Empty it (the capacity stays), nothing held.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.sent = 0;
        self.barrier = NO_BARRIER;
    }
}

/// [`Connection::listener`] of a bridge's local side (which has no listener).
pub const BRIDGE_SIDE: u16 = u16::MAX;

/// [`WriteBuffer::barrier`] when nothing is held back.
pub const NO_BARRIER: usize = usize::MAX;

/// What a flush achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Everything queued is written.
    Done,
    /// The socket is full; the rest waits for a writable event.
    Blocked,
    /// The socket failed (peer gone).
    Failed,
    /// Everything before the barrier is written; the rest waits for the commit.
    Held,
    /// The socket takes more, but this connection had its share of the turn
    /// (a file being served): flush it again next turn.
    More,
}

/// Pieces of a served file written per flush: a fast reader of a large file
/// gets 256 KiB per loop turn, and the other connections their turn.
const PIECES_PER_FLUSH: usize = 16;

impl Connection {
    /// A fresh connection; version 3.1.1 until CONNECT says otherwise.
    pub fn new(stream: Stream) -> Self {
        Connection {
            stream,
            rbuf: None,
            out: None,
            ws: None,
            serial: 0,
            listener: 0,
            version: ProtocolVersion::V311,
            phase: Phase::AwaitingConnect,
            dirty: false,
            want_write: false,
            closing: false,
            blocked: false,
            read_paused: false,
            linger: false,
            draining: false,
            input_closed: false,
        }
    }

    /// Bytes queued and not yet written.
    pub fn pending(&self) -> usize {
        self.out.as_ref().map_or(0, |o| o.bytes.len() - o.sent)
    }

    /// Bytes of output queued, written or not (0 without a buffer).
    pub fn queued(&self) -> usize {
        self.out.as_ref().map_or(0, |o| o.bytes.len())
    }

    /// The write buffer, made (empty) if the connection has none.
    pub fn out_mut(&mut self) -> &mut WriteBuffer {
        self.out.get_or_insert_with(Box::default)
    }

    /// Bytes waiting because the peer is not reading: 0 for a peer that takes
    /// everything (output batched within a loop turn is not a backlog).
    pub fn backlog(&self) -> usize {
        if self.blocked {
            self.pending()
        } else {
            0
        }
    }

    /// Write as much as the socket takes, in as few syscalls as it allows: all
    /// the packets queued in one loop turn go out in one `write`. Nothing at or
    /// after the barrier is written. A plain HTTP response's file is read into
    /// the emptied buffer piece by piece, at most [`PIECES_PER_FLUSH`] per call.
    pub fn flush(&mut self) -> Flush {
        let mut pieces = 0;
        loop {
            if let Some(ws) = self.ws.as_deref_mut() {
                // Framing, a close frame or a served file's next piece may
                // need a buffer even when nothing is queued.
                let out = self.out.get_or_insert_with(Box::default);
                if self.closing && super::websocket::broker_close(ws, out) {
                    // The close frame must reach the peer: drain its input after
                    // the flush rather than reset the connection with it unread.
                    self.linger = true;
                }
                super::websocket::frame_output(ws, out);
            }
            let Some(out) = self.out.as_deref_mut() else {
                self.blocked = false;
                return Flush::Done;
            };
            let end = out.bytes.len().min(out.barrier);
            while out.sent < end {
                match self.stream.write(&out.bytes[out.sent..end]) {
                    Ok(0) => return Flush::Failed,
                    Ok(n) => out.sent += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.blocked = true;
                        return Flush::Blocked;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return Flush::Failed,
                }
            }
            self.blocked = false;
            if end < out.bytes.len() {
                return Flush::Held;
            }
            out.clear();
            let Some(ws) = self.ws.as_deref_mut() else {
                break;
            };
            super::websocket::reset(ws);
            if self.closing {
                // Closed by the broker (the connect timeout) mid-response.
                super::websocket::abandon_body(ws);
                break;
            }
            match super::websocket::next_piece(ws, &mut out.bytes) {
                super::websocket::Next::Nothing => break,
                super::websocket::Next::End => {
                    // The response is out: close, draining what the peer sent.
                    self.closing = true;
                    self.linger = true;
                    break;
                }
                super::websocket::Next::Piece => {
                    pieces += 1;
                    if pieces == PIECES_PER_FLUSH {
                        return Flush::More;
                    }
                }
            }
        }
        if self
            .out
            .as_ref()
            .is_some_and(|o| o.bytes.capacity() > KEEP_CAPACITY)
        {
            self.out = None;
        }
        Flush::Done
    }

    /// Shut the write side down (TLS: close_notify first), so the peer reads
    /// everything queued and then EOF, while we can still read.
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        match &mut self.stream {
            Stream::Plain(t) => t.shutdown(std::net::Shutdown::Write),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => {
                // Best effort: a close_notify that does not fit now is skipped.
                let _ = s.shutdown();
                s.get_ref().shutdown(std::net::Shutdown::Write)
            }
            #[cfg(feature = "tls")]
            Stream::Handshaking(_) => Err(io::ErrorKind::NotConnected.into()),
            Stream::Bridge(_) => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Did a read of `n` bytes into a buffer of `asked` bytes empty the socket?
    /// On Linux, edge-triggered epoll reports a socket again whenever new data
    /// arrives after a read, so a plain socket that returned less than asked
    /// has nothing more for now, and the read that would only confirm it with
    /// EAGAIN is a wasted syscall (a quarter of all syscalls of a broker
    /// forwarding QoS 1 over a bridge). Not for TLS (the library may hold
    /// decrypted bytes back), nor once the peer closed or the socket failed:
    /// that news may have come in the same event as the data, and only reading
    /// on until EOF or an error finds it.
    pub fn drained_by(&self, n: usize, asked: usize) -> bool {
        cfg!(target_os = "linux")
            && n < asked
            && !self.input_closed
            && matches!(self.stream, Stream::Plain(_))
    }

    /// Drop the partial-packet buffer once it is empty: an idle connection
    /// keeps no memory for input.
    pub fn trim_read_buffer(&mut self) {
        if self.rbuf.as_ref().is_some_and(|r| r.is_empty()) {
            self.rbuf = None;
        }
    }
}

#[cfg(test)]
mod tests {
    /// The server's per-connection state (printed for the README), and what
    /// it costs in the server's slab.
    #[test]
    fn connection_is_small() {
        /// The shape of a slab entry (the crate's own type is private).
        #[allow(dead_code)]
        enum Entry {
            Vacant(usize),
            Occupied(super::Connection),
        }
        let n = std::mem::size_of::<super::Connection>();
        let entry = std::mem::size_of::<Entry>();
        eprintln!("server Connection {n} B, {entry} B in the slab");
        // A debug build's socket is 8 bytes larger (mio keeps a selector id
        // with debug assertions).
        let socket = std::mem::size_of::<mio::net::TcpStream>() - 4;
        assert!(n <= 56 + socket, "Connection grew to {n} bytes");
        assert!(entry <= 64 + socket, "a slab entry grew to {entry} bytes");
    }
}
