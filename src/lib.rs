//! midge: a small, fast, single-threaded MQTT 3.1 / 3.1.1 / 5.0 broker.
//!
//! Layers, from the wire up: [`protocol`] (the codec, pure), [`broker`] (the state
//! machine, sans-IO), [`server`] (the mio loop around them) and [`config`].
#![warn(missing_docs)]

pub mod alloc;
pub mod auth;
pub mod bridge;
pub mod broker;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod directives;
pub mod logging;
pub mod persist;
pub mod procfs;
pub mod protocol;
pub mod server;
pub mod sys;
#[cfg(test)]
mod test_rng;
