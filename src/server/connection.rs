//! One client socket and its buffers. Kept small on purpose: an idle connection
//! owns no buffer memory at all (both vectors are empty and unallocated), which is
//! what lets a 64 MB gateway hold tens of thousands of clients.

use std::io::{self, Write};

use mio::net::TcpStream;

use crate::protocol::ProtocolVersion;

/// Buffers above this capacity are released once drained, so one burst does not
/// pin memory on an otherwise idle connection.
const KEEP_CAPACITY: usize = 16 * 1024;

/// A connection in the server's slab.
pub struct Connection {
    /// The socket.
    pub stream: TcpStream,
    /// Bytes of a packet that has not fully arrived yet (complete packets are
    /// decoded straight from the loop's shared read buffer and never land here).
    pub rbuf: Vec<u8>,
    /// Encoded packets not yet taken by the socket; `wpos` bytes of it are sent.
    pub wbuf: Vec<u8>,
    /// How much of `wbuf` has been written.
    pub wpos: usize,
    /// Protocol version for decoding, learnt from CONNECT.
    pub version: ProtocolVersion,
    /// Output is queued and the connection is in the loop's flush list.
    pub dirty: bool,
    /// Registered for writable events (only while output is stuck).
    pub want_write: bool,
    /// The broker closed it: flush what is queued, then drop it.
    pub closing: bool,
    /// Unique per connection for the server's lifetime (slab keys are reused).
    pub serial: u64,
    /// The last write stopped short: the peer is not keeping up.
    pub blocked: bool,
}

/// What a flush achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Everything queued is written.
    Done,
    /// The socket is full; the rest waits for a writable event.
    Blocked,
    /// The socket failed (peer gone).
    Failed,
}

impl Connection {
    /// A fresh connection; version 3.1.1 until CONNECT says otherwise.
    pub fn new(stream: TcpStream) -> Self {
        Connection {
            stream,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            wpos: 0,
            version: ProtocolVersion::V311,
            dirty: false,
            want_write: false,
            closing: false,
            serial: 0,
            blocked: false,
        }
    }

    /// Bytes queued and not yet written.
    pub fn pending(&self) -> usize {
        self.wbuf.len() - self.wpos
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
    /// the packets queued in one loop turn go out in one `write`.
    pub fn flush(&mut self) -> Flush {
        while self.wpos < self.wbuf.len() {
            match self.stream.write(&self.wbuf[self.wpos..]) {
                Ok(0) => return Flush::Failed,
                Ok(n) => self.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.blocked = true;
                    return Flush::Blocked;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Flush::Failed,
            }
        }
        self.blocked = false;
        self.wbuf.clear();
        self.wpos = 0;
        if self.wbuf.capacity() > KEEP_CAPACITY {
            self.wbuf = Vec::new();
        }
        Flush::Done
    }

    /// Release the partial-packet buffer's memory if it grew for a large packet.
    pub fn trim_read_buffer(&mut self) {
        if self.rbuf.is_empty() && self.rbuf.capacity() > KEEP_CAPACITY {
            self.rbuf = Vec::new();
        }
    }
}
