//! MQTT over WebSockets (RFC 6455, server side; MQTT section 6), with no I/O:
//! the HTTP/1.1 upgrade request parser and its answer ([`handshake`]), and the
//! frame codec ([`frame`]) that unmasks client frames in place in the caller's
//! buffer and frames the server's output. Nothing here reads a socket or a clock.

pub mod frame;
pub mod handshake;

pub use frame::{CloseCode, Control, FrameDecoder, FrameError};
pub use handshake::{parse_upgrade, Upgrade, UpgradeError};
