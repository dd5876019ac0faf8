//! The MQTT wire format, with no I/O: packet types, an incremental decoder that
//! borrows from the caller's buffer, an encoder that appends to the caller's
//! buffer, MQTT 5 properties, reason codes and topic rules.
//!
//! Nothing here knows about sockets, clocks or broker state; everything here is
//! deterministic and safe to feed arbitrary bytes (it is what the fuzzers drive).

pub mod decode;
pub mod encode;
pub mod error;
pub mod packet;
pub mod properties;
mod property_codec;
pub mod reason;
pub mod topic;
pub mod websocket;
mod wire;

#[cfg(test)]
mod codec_tests;

pub use decode::{decode, DecodeLimits, Decoded};
pub use encode::{encode, encoded_len};
pub use error::{DecodeError, EncodeError};
pub use packet::*;
pub use properties::Properties;
pub use reason::ReasonCode;
