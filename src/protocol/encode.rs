//! Encoding: append a packet to the caller's buffer, for a given protocol version.

use super::error::EncodeError;
use super::packet::{Packet, ProtocolVersion};

/// Append `packet`, encoded for `version`, to `out`. Returns the number of bytes
/// written. v5-only fields are left out for older versions; on error `out` is
/// left as it was.
pub fn encode(
    packet: &Packet<'_>,
    version: ProtocolVersion,
    out: &mut Vec<u8>,
) -> Result<usize, EncodeError> {
    let _ = (packet, version, out);
    unimplemented!("codec helper")
}

/// The number of bytes `encode` would write, without writing them (used to honour
/// a client's Maximum Packet Size before encoding).
pub fn encoded_len(packet: &Packet<'_>, version: ProtocolVersion) -> Result<usize, EncodeError> {
    let _ = (packet, version);
    unimplemented!("codec helper")
}
