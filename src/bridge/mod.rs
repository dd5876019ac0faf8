//! Bridges: midge as a client of another broker. This module is sans-IO: the
//! configuration, the topic mapping and the state machine that decides what to
//! send to the remote and to the local broker core. Sockets, TLS, name
//! resolution and the clock are the server's (`crate::server`).

mod backoff;
pub mod config;
mod machine;
pub mod map;

pub use machine::{AckKind, Action, Bridge, BridgeStats, LocalAck};
