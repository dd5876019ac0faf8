//! The broker state machine: sessions, subscriptions, retained messages, QoS flows
//! and wills. It never touches a socket or reads the clock: the server hands it
//! packets, connection events and the current time, and it answers through an
//! [`Output`] (send this, close that, wake me then).

pub mod message;
pub mod output;
pub mod retained;
pub mod topic_index;

use std::time::{Duration, Instant};

pub use output::{ConnId, Output, Timer};

use crate::protocol::{DecodeError, Packet};

/// Broker settings, taken from the config file (see [`crate::config::Config`]).
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Maximum QoS 1/2 messages in flight to one client (`max_inflight_messages`); 0 = unlimited.
    pub max_inflight_messages: u16,
    /// Maximum messages queued per client behind the in-flight window
    /// (`max_queued_messages`); 0 = unlimited.
    pub max_queued_messages: usize,
    /// Maximum payload bytes queued per client (`max_queued_bytes`); 0 = unlimited.
    pub max_queued_bytes: usize,
    /// Queue QoS 0 messages for offline persistent sessions (`queue_qos0_messages`).
    pub queue_qos0_messages: bool,
    /// Largest PUBLISH payload accepted (`message_size_limit`); 0 = no limit beyond the packet size.
    pub message_size_limit: usize,
    /// Largest packet accepted from clients (`max_packet_size`), announced to v5 clients.
    pub max_packet_size: usize,
    /// Highest keep-alive accepted (`max_keepalive`); v5 clients asking for more get
    /// Server Keep Alive, 3.1.1 clients are accepted with the lower value enforced.
    pub max_keepalive: u16,
    /// Accept a zero-length client id (`allow_zero_length_clientid`).
    pub allow_zero_length_clientid: bool,
    /// How long a disconnected persistent 3.1.1 session is kept (`persistent_client_expiration`); None = forever.
    pub persistent_client_expiration: Option<Duration>,
    /// Accept and store retained messages (`retain_available`).
    pub retain_available: bool,
    /// In-session retransmission interval for 3.1/3.1.1 clients (`retry_interval`); None = off.
    pub retry_interval: Option<Duration>,
    /// How long a socket may stay open without sending CONNECT.
    pub connect_timeout: Duration,
    /// Bytes queued on a connection's socket above which QoS 0 messages to it are dropped.
    pub max_pending_bytes: usize,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            max_inflight_messages: 20,
            max_queued_messages: 1000,
            max_queued_bytes: 0,
            queue_qos0_messages: false,
            message_size_limit: 0,
            max_packet_size: 268_435_460,
            max_keepalive: 65_535,
            allow_zero_length_clientid: true,
            persistent_client_expiration: None,
            retain_available: true,
            retry_interval: None,
            connect_timeout: Duration::from_secs(10),
            max_pending_bytes: 1 << 20,
        }
    }
}

/// The broker. See the module documentation.
pub struct Broker {
    config: BrokerConfig,
}

impl Broker {
    /// A broker with no sessions.
    pub fn new(config: BrokerConfig) -> Self {
        Broker { config }
    }

    /// The settings in force.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// A socket was accepted on listener number `listener`. `peer` is its address as
    /// logged ("127.0.0.1:50000"). Arms the CONNECT timeout.
    pub fn connection_opened(
        &mut self,
        now: Instant,
        conn: ConnId,
        peer: &str,
        listener: usize,
        out: &mut impl Output,
    ) {
        let _ = (now, conn, peer, listener, out);
        unimplemented!("broker helper")
    }

    /// A packet arrived on `conn`.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        conn: ConnId,
        packet: Packet<'_>,
        out: &mut impl Output,
    ) {
        let _ = (now, conn, packet, out);
        unimplemented!("broker helper")
    }

    /// The bytes on `conn` are not valid MQTT. The broker answers as the spec says
    /// (CONNACK for a bad CONNECT, DISCONNECT with a reason for v5) and closes it.
    pub fn handle_decode_error(
        &mut self,
        now: Instant,
        conn: ConnId,
        error: &DecodeError,
        out: &mut impl Output,
    ) {
        let _ = (now, conn, error, out);
        unimplemented!("broker helper")
    }

    /// The socket closed or failed without the broker asking (EOF, reset, write error).
    /// Publishes the will if one is due. A no-op for connections the broker closed.
    pub fn connection_lost(&mut self, now: Instant, conn: ConnId, out: &mut impl Output) {
        let _ = (now, conn, out);
        unimplemented!("broker helper")
    }

    /// A timer armed through [`Output::set_timer`] is due.
    pub fn handle_timer(&mut self, now: Instant, timer: Timer, out: &mut impl Output) {
        let _ = (now, timer, out);
        unimplemented!("broker helper")
    }

    /// The server is shutting down: tell v5 clients (DISCONNECT 0x8B) and close every
    /// connection. Wills are not published (see README).
    pub fn shutdown(&mut self, now: Instant, out: &mut impl Output) {
        let _ = (now, out);
        unimplemented!("broker helper")
    }
}
