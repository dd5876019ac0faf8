//! CONNECT / CONNACK over TCP against the real binary, for every protocol version.

mod common;

use common::*;
use midge::protocol::{Packet, ProtocolVersion, ReasonCode};

#[test]
fn connack_success_for_every_version() {
    let b = BrokerProcess::start("");
    for v in ALL_VERSIONS {
        let (c, (reason, present)) =
            Client::connect_with(b.port, &ConnectOptions::new(v, &format!("c-{}", v.level())));
        assert_eq!(reason, ReasonCode::SUCCESS, "{v}");
        // [MQTT-3.2.2-1] clean session: session present is 0.
        assert!(!present, "{v}");
        c.disconnect();
    }
}

#[test]
fn new_client_is_logged_like_mosquitto() {
    let b = BrokerProcess::start("");
    let c = Client::connect(b.port, "logged-client");
    let line = b.wait_log("New client connected from 127.0.0.1:");
    assert!(line.contains("as logged-client (p4, c1, k60)"), "{line}");
    c.disconnect();
}

#[test]
fn unsupported_protocol_level_gets_connack_0x01_and_close() {
    // [MQTT-3.1.2-2] The Server MUST respond with CONNACK return code 0x01 and
    // disconnect when the protocol level is not supported.
    let b = BrokerProcess::start("");
    let mut c = Client::open(b.port, ProtocolVersion::V311);
    // CONNECT, "MQTT", level 6, clean session, keep alive 60, client id "x".
    c.send_raw(&[
        0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 6, 0x02, 0, 60, 0, 1, b'x',
    ]);
    match c.recv() {
        Packet::ConnAck(ack) => assert_eq!(ack.reason, ReasonCode::UNSUPPORTED_PROTOCOL_VERSION),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    c.expect_closed();
}

#[test]
fn empty_client_id_with_clean_session_is_assigned_one() {
    let b = BrokerProcess::start("");
    // [MQTT-3.1.3-6] 3.1.1: a zero-byte ClientId with CleanSession=1 is accepted.
    let (c, (reason, _)) =
        Client::connect_with(b.port, &ConnectOptions::new(ProtocolVersion::V311, ""));
    assert_eq!(reason, ReasonCode::SUCCESS);
    c.disconnect();
    // [MQTT-3.2.2-16] v5: the assigned identifier is returned in CONNACK.
    let mut c = Client::open(b.port, ProtocolVersion::V5);
    c.send_connect(&ConnectOptions::new(ProtocolVersion::V5, ""));
    match c.recv() {
        Packet::ConnAck(ack) => {
            assert_eq!(ack.reason, ReasonCode::SUCCESS);
            let id = ack
                .properties
                .assigned_client_identifier
                .expect("assigned client id");
            assert!(!id.is_empty());
        }
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

#[test]
fn empty_client_id_without_clean_session_is_refused_in_311() {
    // [MQTT-3.1.3-8] CONNACK 0x02 (identifier rejected), then close.
    let b = BrokerProcess::start("");
    let mut o = ConnectOptions::new(ProtocolVersion::V311, "");
    o.clean = false;
    let (mut c, (reason, present)) = Client::connect_with(b.port, &o);
    assert_eq!(reason, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
    assert!(
        !present,
        "[MQTT-3.2.2-4] session present is 0 on a refused CONNECT"
    );
    c.expect_closed();
}

#[test]
fn second_connect_is_a_protocol_error() {
    // [MQTT-3.1.0-2] A second CONNECT is a protocol violation: the connection is closed.
    let b = BrokerProcess::start("");
    let mut c = Client::connect(b.port, "twice");
    c.send_connect(&ConnectOptions::new(ProtocolVersion::V311, "twice"));
    c.expect_closed();
    // v5 gets a DISCONNECT with Protocol Error first.
    let mut c = Client::connect_v(b.port, ProtocolVersion::V5, "twice5");
    c.send_connect(&ConnectOptions::new(ProtocolVersion::V5, "twice5"));
    let d = c.expect_closed().expect("v5 DISCONNECT before close");
    assert_eq!(d.reason, ReasonCode::PROTOCOL_ERROR);
}

#[test]
fn packet_before_connect_closes_the_connection() {
    // [MQTT-3.1.0-1] The first packet from the client MUST be CONNECT.
    let b = BrokerProcess::start("");
    let mut c = Client::open(b.port, ProtocolVersion::V311);
    c.send(&Packet::PingReq);
    c.expect_closed();
    // The broker is unharmed.
    Client::connect(b.port, "after").disconnect();
}

#[test]
fn takeover_closes_the_old_connection() {
    // [MQTT-3.1.4-2] an existing client with the same id is disconnected.
    let b = BrokerProcess::start("");
    let mut old = Client::connect(b.port, "same-id");
    let mut new = Client::connect(b.port, "same-id");
    old.expect_closed();
    new.ping();
    // [MQTT-3.1.4-3] v5: the old one is told "Session taken over" (0x8E).
    let mut old5 = Client::connect_v(b.port, ProtocolVersion::V5, "same-id-5");
    let mut new5 = Client::connect_v(b.port, ProtocolVersion::V5, "same-id-5");
    let d = old5
        .expect_closed()
        .expect("DISCONNECT to the old v5 client");
    assert_eq!(d.reason, ReasonCode::SESSION_TAKEN_OVER);
    new5.ping();
}

#[test]
fn connect_timeout_closes_silent_sockets() {
    let b = BrokerProcess::start("");
    let mut c = Client::open(b.port, ProtocolVersion::V311);
    // The default CONNECT timeout is 10 s; wait a little longer than TIMEOUT allows.
    match c.try_recv(std::time::Duration::from_secs(15)) {
        Some(Err(_)) => {}
        other => panic!("silent socket should be closed, got {other:?}"),
    }
}
