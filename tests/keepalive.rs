//! Keep-alive: silence for 1.5 x the keep-alive closes the connection [MQTT-3.1.2-24].

mod common;

use std::time::{Duration, Instant};

use common::*;
use midge::protocol::{ProtocolVersion, ReasonCode};

#[test]
fn silent_client_is_disconnected_after_one_and_a_half_keep_alives() {
    let b = BrokerProcess::start("");
    let mut o = ConnectOptions::new(ProtocolVersion::V5, "silent5");
    o.keep_alive = 2;
    let (mut c, _) = Client::connect_with(b.port, &o);
    let start = Instant::now();
    let d = c.expect_closed().expect("v5 DISCONNECT before close");
    assert_eq!(d.reason, ReasonCode::KEEP_ALIVE_TIMEOUT);
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(2900) && waited < Duration::from_millis(4500),
        "{waited:?}"
    );
    b.wait_log("has exceeded timeout");
}

#[test]
fn a_client_that_pings_stays_connected() {
    let b = BrokerProcess::start("");
    let mut o = ConnectOptions::new(ProtocolVersion::V311, "pinger");
    o.keep_alive = 1;
    let (mut c, _) = Client::connect_with(b.port, &o);
    // Ping every 0.5 s for 4 s: always within the 1.5 s window.
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(500));
        c.ping();
    }
}
