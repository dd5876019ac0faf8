//! MQTT over WebSockets (RFC 6455, server side; MQTT section 6), with no I/O:
//! the HTTP/1.1 upgrade request parser and its answer ([`handshake`]), and the
//! frame codec ([`frame`]) that unmasks client frames in place in the caller's
//! buffer and frames the server's output; plain HTTP requests on the same
//! listener ([`http`]: which file, which type, which answer). Nothing here
//! reads a socket, a file or a clock.

pub mod frame;
pub mod handshake;
pub mod http;

pub use frame::{CloseCode, Control, FrameDecoder, FrameError};
pub use handshake::{parse_request, Request, Upgrade, UpgradeError};
