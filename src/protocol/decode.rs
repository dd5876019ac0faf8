//! Incremental decoding: given the bytes received so far, return one complete
//! packet and how many bytes it used, or `NeedMore`, or a typed error.

use super::error::DecodeError;
use super::packet::{Packet, ProtocolVersion};

/// What the decoder needs to know about the connection.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// The protocol version negotiated by CONNECT (CONNECT itself carries its own
    /// version and is decoded whatever this says).
    pub version: ProtocolVersion,
    /// The largest total packet size (fixed header included) accepted. Checked as
    /// soon as the fixed header is complete, before the body is buffered.
    pub max_packet_size: usize,
}

/// The result of a decode attempt that found no error.
#[derive(Debug)]
pub enum Decoded<'a> {
    /// A whole packet, and the number of bytes of the buffer it used.
    Packet(Packet<'a>, usize),
    /// The buffer holds only part of a packet. `Some(n)`: the whole packet will be
    /// `n` bytes long (the fixed header is complete); `None`: not known yet.
    NeedMore(Option<usize>),
}

/// Decode the first packet in `buf`.
pub fn decode<'a>(buf: &'a [u8], limits: &DecodeLimits) -> Result<Decoded<'a>, DecodeError> {
    let _ = (buf, limits);
    unimplemented!("codec helper")
}
