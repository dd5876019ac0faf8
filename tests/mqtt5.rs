//! MQTT 5 features, each against the real binary over TCP with the project's
//! codec, citing the normative statements they check.

mod common;

use std::time::Duration;

use common::*;
use midge::protocol::{
    ConnAck, Connect, Disconnect, Packet, Properties, ProtocolVersion, PubResp, Publish, QoS,
    ReasonCode, RetainHandling, Subscribe, SubscriptionOptions, Will,
};

const V5: ProtocolVersion = ProtocolVersion::V5;

/// Connect a v5 client with these CONNECT properties; returns the CONNACK.
fn connect5(
    port: u16,
    id: &str,
    clean: bool,
    props: Properties<'static>,
) -> (Client, ConnAck<'static>) {
    connect5_will(port, id, clean, props, None)
}

fn connect5_will(
    port: u16,
    id: &str,
    clean: bool,
    props: Properties<'static>,
    will: Option<Will<'static>>,
) -> (Client, ConnAck<'static>) {
    let mut c = Client::open(port, V5);
    c.send(&Packet::Connect(Box::new(Connect {
        version: V5,
        clean_start: clean,
        keep_alive: 60,
        properties: props,
        client_id: leak_str(id),
        will,
        username: None,
        password: None,
    })));
    match c.recv() {
        Packet::ConnAck(a) => (c, a),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

fn ok5(port: u16, id: &str) -> Client {
    let (c, a) = connect5(port, id, true, Properties::default());
    assert_eq!(a.reason, ReasonCode::SUCCESS);
    c
}

fn sub5(c: &mut Client, filter: &str, options: SubscriptionOptions, id: Option<u32>) -> ReasonCode {
    c.send(&Packet::Subscribe(Subscribe {
        packet_id: 1,
        properties: Properties {
            subscription_identifiers: id.into_iter().collect(),
            ..Properties::default()
        },
        filters: vec![(leak_str(filter), options)],
    }));
    match c.recv() {
        Packet::SubAck(a) => a.reasons[0],
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

fn opts(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions {
        qos,
        ..Default::default()
    }
}

/// Publish with properties; completes the QoS flow; returns the ack's reason.
fn pub5(
    c: &mut Client,
    topic: &str,
    payload: &[u8],
    qos: QoS,
    retain: bool,
    props: Properties<'static>,
) -> ReasonCode {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(1);
    let pid = if qos == QoS::AtMostOnce {
        0
    } else {
        NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    };
    c.send(&Packet::Publish(Publish {
        dup: false,
        qos,
        retain,
        topic: leak_str(topic),
        packet_id: pid,
        properties: props,
        payload: leak_bytes(payload),
    }));
    match qos {
        QoS::AtMostOnce => ReasonCode::SUCCESS,
        QoS::AtLeastOnce => match c.recv() {
            Packet::PubAck(a) => a.reason,
            other => panic!("expected PUBACK, got {other:?}"),
        },
        QoS::ExactlyOnce => {
            let r = match c.recv() {
                Packet::PubRec(a) => a.reason,
                other => panic!("expected PUBREC, got {other:?}"),
            };
            if r.0 < 0x80 {
                c.send(&Packet::PubRel(PubResp::success(pid)));
                match c.recv() {
                    Packet::PubComp(_) => {}
                    other => panic!("expected PUBCOMP, got {other:?}"),
                }
            }
            r
        }
    }
}

fn closed_with(c: &mut Client, reason: ReasonCode) {
    let d = c.expect_closed().expect("DISCONNECT before close");
    assert_eq!(d.reason, reason, "{d:?}");
}

// ---------------------------------------------------------------- session expiry

/// 3.1.2.11.2: a session with a Session Expiry Interval survives the connection
/// and ends when the interval passes (a timer, not a scan).
#[test]
fn session_expiry_keeps_then_ends_the_session() {
    let b = BrokerProcess::start("");
    let props = || Properties {
        session_expiry_interval: Some(1),
        ..Properties::default()
    };
    let (mut c, a) = connect5(b.port, "se", true, props());
    assert!(!a.session_present);
    sub5(&mut c, "se/t", opts(QoS::AtLeastOnce), None);
    c.disconnect();
    let mut p = ok5(b.port, "se-pub");
    pub5(
        &mut p,
        "se/t",
        b"kept",
        QoS::AtLeastOnce,
        false,
        Properties::default(),
    );
    let (mut c, a) = connect5(b.port, "se", false, props());
    assert!(a.session_present, "[MQTT-3.2.2-2] session resumed");
    assert_eq!(c.recv_publish().payload, b"kept");
    c.disconnect();
    // The time passing is what is tested here, not a synchronisation.
    std::thread::sleep(Duration::from_millis(1600));
    let (c, a) = connect5(b.port, "se", false, props());
    assert!(!a.session_present, "the session expired after 1 s");
    c.disconnect();
}

/// [MQTT-3.14.2-2] a session expiry of 0 at CONNECT cannot be raised at DISCONNECT.
#[test]
fn disconnect_cannot_raise_a_zero_session_expiry() {
    let b = BrokerProcess::start("");
    let mut c = ok5(b.port, "raise");
    c.send(&Packet::Disconnect(Disconnect {
        reason: ReasonCode::SUCCESS,
        properties: Properties {
            session_expiry_interval: Some(60),
            ..Properties::default()
        },
    }));
    closed_with(&mut c, ReasonCode::PROTOCOL_ERROR);
}

// ---------------------------------------------------------------- message expiry

/// 3.3.2.3.3: expired retained and queued messages are not delivered, and the
/// forwarded interval is reduced by the time waited [MQTT-3.3.2-6].
#[test]
fn message_expiry_is_honoured_and_counted_down() {
    let b = BrokerProcess::start("");
    let persist = || Properties {
        session_expiry_interval: Some(300),
        ..Properties::default()
    };
    let (mut c, _) = connect5(b.port, "me", true, persist());
    sub5(&mut c, "me/#", opts(QoS::AtLeastOnce), None);
    c.disconnect();
    let mut p = ok5(b.port, "me-pub");
    let exp = |s| Properties {
        message_expiry_interval: Some(s),
        ..Properties::default()
    };
    pub5(
        &mut p,
        "me/short",
        b"short",
        QoS::AtLeastOnce,
        false,
        exp(1),
    );
    pub5(&mut p, "me/long", b"long", QoS::AtLeastOnce, false, exp(30));
    pub5(&mut p, "me/retained", b"r", QoS::AtLeastOnce, true, exp(1));
    std::thread::sleep(Duration::from_millis(1300));
    let (mut c, a) = connect5(b.port, "me", false, persist());
    assert!(a.session_present);
    let m = c.recv_publish();
    assert_eq!(m.payload, b"long", "the expired message was not delivered");
    let left = m
        .properties
        .message_expiry_interval
        .expect("expiry forwarded");
    assert!(left < 30, "reduced by the time waited: {left}");
    c.ping();
    let mut fresh = ok5(b.port, "me-fresh");
    sub5(&mut fresh, "me/retained", opts(QoS::AtLeastOnce), None);
    fresh.ping();
    fresh.expect_nothing(Duration::from_millis(200));
}

// ---------------------------------------------------------------- topic aliases

/// 3.3.2.3.4: the broker announces a Topic Alias Maximum and resolves aliases.
#[test]
fn inbound_topic_aliases() {
    let b = BrokerProcess::start("");
    let (mut p, a) = connect5(b.port, "alias-pub", true, Properties::default());
    assert_eq!(a.properties.topic_alias_maximum, Some(10));
    let mut s = ok5(b.port, "alias-sub");
    sub5(&mut s, "al/#", opts(QoS::AtMostOnce), None);
    let alias = |n| Properties {
        topic_alias: Some(n),
        ..Properties::default()
    };
    pub5(
        &mut p,
        "al/very/long/topic",
        b"1",
        QoS::AtLeastOnce,
        false,
        alias(1),
    );
    pub5(&mut p, "", b"2", QoS::AtLeastOnce, false, alias(1));
    for want in [&b"1"[..], b"2"] {
        let m = s.recv_publish();
        assert_eq!((m.topic, m.payload), ("al/very/long/topic", want));
    }
    // [MQTT-3.3.2-9] over the maximum: 0x94.
    pub5_raw_alias(&mut p, "al/x", 11);
    closed_with(&mut p, ReasonCode::TOPIC_ALIAS_INVALID);
    // An alias never set, with an empty topic: protocol error.
    let mut q = ok5(b.port, "alias-pub2");
    pub5_raw_alias(&mut q, "", 3);
    closed_with(&mut q, ReasonCode::PROTOCOL_ERROR);
}

fn pub5_raw_alias(c: &mut Client, topic: &str, alias: u16) {
    c.send(&Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: leak_str(topic),
        packet_id: 0,
        properties: Properties {
            topic_alias: Some(alias),
            ..Properties::default()
        },
        payload: b"x",
    }));
}

/// Outbound aliases: a client announcing a Topic Alias Maximum gets the topic
/// once, then two bytes [MQTT-3.3.2-11/12: never over its maximum].
#[test]
fn outbound_topic_aliases_and_the_switch() {
    for (config, expect_alias) in [("", true), ("outgoing_topic_aliases false", false)] {
        let b = BrokerProcess::start(config);
        let (mut s, _) = connect5(
            b.port,
            "oa-sub",
            true,
            Properties {
                topic_alias_maximum: Some(1),
                ..Properties::default()
            },
        );
        sub5(&mut s, "oa/#", opts(QoS::AtMostOnce), None);
        let mut p = ok5(b.port, "oa-pub");
        for t in ["oa/long/topic", "oa/long/topic", "oa/other"] {
            pub5(
                &mut p,
                t,
                b"x",
                QoS::AtLeastOnce,
                false,
                Properties::default(),
            );
        }
        let got: Vec<(String, Option<u16>)> = (0..3)
            .map(|_| {
                let m = s.recv_publish();
                (m.topic.to_string(), m.properties.topic_alias)
            })
            .collect();
        if expect_alias {
            assert_eq!(
                got,
                vec![
                    ("oa/long/topic".into(), Some(1)),
                    ("".into(), Some(1)),
                    ("oa/other".into(), None),
                ]
            );
        } else {
            assert!(
                got.iter().all(|(t, a)| !t.is_empty() && a.is_none()),
                "{got:?}"
            );
        }
    }
}

// ---------------------------------------------------------------- flow control

/// [MQTT-3.3.4-9] never more unacknowledged QoS 1/2 PUBLISHes than the client's
/// Receive Maximum; the broker announces its own.
#[test]
fn receive_maximum_both_ways() {
    let b = BrokerProcess::start("");
    let (mut s, a) = connect5(
        b.port,
        "rm-sub",
        true,
        Properties {
            receive_maximum: Some(2),
            ..Properties::default()
        },
    );
    assert_eq!(a.properties.receive_maximum, Some(20));
    sub5(&mut s, "rm", opts(QoS::AtLeastOnce), None);
    let mut p = ok5(b.port, "rm-pub");
    for i in 0..5u8 {
        pub5(
            &mut p,
            "rm",
            &[i],
            QoS::AtLeastOnce,
            false,
            Properties::default(),
        );
    }
    let first: Vec<Publish> = (0..2)
        .map(|_| match s.recv() {
            Packet::Publish(m) => m,
            other => panic!("{other:?}"),
        })
        .collect();
    s.expect_nothing(Duration::from_millis(300));
    s.send(&Packet::PubAck(PubResp::success(first[0].packet_id)));
    match s.recv() {
        Packet::Publish(m) => assert_eq!(m.payload, [2]),
        other => panic!("{other:?}"),
    }
    s.expect_nothing(Duration::from_millis(200));
}

/// [MQTT-3.3.4-8] a client with more QoS 2 PUBLISHes unreleased than the
/// broker's Receive Maximum is disconnected with 0x93.
#[test]
fn exceeding_the_broker_receive_maximum_is_0x93() {
    let b = BrokerProcess::start("max_inflight_messages 2");
    let mut p = ok5(b.port, "greedy");
    for pid in 1..=3u16 {
        p.send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::ExactlyOnce,
            retain: false,
            topic: "g",
            packet_id: pid,
            properties: Properties::default(),
            payload: b"x",
        }));
        if pid < 3 {
            assert!(matches!(p.recv(), Packet::PubRec(_)));
        }
    }
    closed_with(&mut p, ReasonCode::RECEIVE_MAXIMUM_EXCEEDED);
}

/// 3.1.2.11.4: never send a packet larger than the client's Maximum Packet Size
/// (it is dropped for that client); the broker announces its own.
#[test]
fn maximum_packet_size_both_ways() {
    let b = BrokerProcess::start("max_packet_size 2000");
    let (mut s, a) = connect5(
        b.port,
        "mps-sub",
        true,
        Properties {
            maximum_packet_size: Some(100),
            ..Properties::default()
        },
    );
    assert_eq!(a.properties.maximum_packet_size, Some(2000));
    sub5(&mut s, "mps", opts(QoS::AtLeastOnce), None);
    let mut p = ok5(b.port, "mps-pub");
    pub5(
        &mut p,
        "mps",
        &[b'x'; 500],
        QoS::AtLeastOnce,
        false,
        Properties::default(),
    );
    pub5(
        &mut p,
        "mps",
        b"small",
        QoS::AtLeastOnce,
        false,
        Properties::default(),
    );
    assert_eq!(s.recv_publish().payload, b"small");
}

// ---------------------------------------------------------------- subscription options

/// [MQTT-3.8.3-3] No Local; [MQTT-3.3.1-12/13] Retain As Published; maximum QoS.
#[test]
fn no_local_retain_as_published_and_maximum_qos() {
    let b = BrokerProcess::start("");
    let mut c = ok5(b.port, "nl");
    let nl = SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        no_local: true,
        ..Default::default()
    };
    sub5(&mut c, "nl/t", nl, None);
    pub5(
        &mut c,
        "nl/t",
        b"own",
        QoS::AtLeastOnce,
        false,
        Properties::default(),
    );
    c.ping();
    c.expect_nothing(Duration::from_millis(200));
    let mut other = ok5(b.port, "nl-other");
    pub5(
        &mut other,
        "nl/t",
        b"theirs",
        QoS::AtLeastOnce,
        false,
        Properties::default(),
    );
    assert_eq!(c.recv_publish().payload, b"theirs");

    let mut rap = ok5(b.port, "rap");
    let o = SubscriptionOptions {
        qos: QoS::AtMostOnce,
        retain_as_published: true,
        ..Default::default()
    };
    sub5(&mut rap, "rap/t", o, None);
    let mut plain = ok5(b.port, "plain");
    sub5(&mut plain, "rap/t", opts(QoS::AtLeastOnce), None);
    pub5(
        &mut other,
        "rap/t",
        b"r",
        QoS::ExactlyOnce,
        true,
        Properties::default(),
    );
    let m = rap.recv_publish();
    assert!(m.retain, "Retain As Published keeps RETAIN");
    assert_eq!(m.qos, QoS::AtMostOnce, "granted QoS caps the delivery");
    let m = plain.recv_publish();
    assert!(!m.retain, "[MQTT-3.3.1-12] RETAIN cleared otherwise");
    assert_eq!(m.qos, QoS::AtLeastOnce);
}

/// 3.8.3.1 Retain Handling: 0 always, 1 only for a new subscription, 2 never.
#[test]
fn retain_handling() {
    let b = BrokerProcess::start("");
    let mut p = ok5(b.port, "rh-pub");
    pub5(
        &mut p,
        "rh/t",
        b"kept",
        QoS::AtLeastOnce,
        true,
        Properties::default(),
    );
    let rh = |h| SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        retain_handling: h,
        ..Default::default()
    };
    let mut c = ok5(b.port, "rh");
    sub5(&mut c, "rh/t", rh(RetainHandling::SendAtSubscribe), None);
    assert!(c.recv_publish().retain);
    sub5(&mut c, "rh/t", rh(RetainHandling::SendAtSubscribe), None);
    assert!(c.recv_publish().retain, "0: again on a repeated subscribe");
    sub5(&mut c, "rh/t", rh(RetainHandling::SendIfNew), None);
    c.ping();
    c.expect_nothing(Duration::from_millis(200));
    sub5(&mut c, "rh/+", rh(RetainHandling::SendIfNew), None);
    assert!(c.recv_publish().retain, "1: sent for a new subscription");
    sub5(&mut c, "rh/#", rh(RetainHandling::DoNotSend), None);
    c.ping();
    c.expect_nothing(Duration::from_millis(200));
}

/// [MQTT-3.3.4-3/4] overlapping subscriptions: one copy carrying every matching
/// Subscription Identifier.
#[test]
fn subscription_identifiers() {
    let b = BrokerProcess::start("");
    let mut c = ok5(b.port, "sid");
    sub5(&mut c, "sid/+", opts(QoS::AtLeastOnce), Some(7));
    sub5(&mut c, "sid/#", opts(QoS::AtMostOnce), Some(9));
    sub5(&mut c, "sid/x", opts(QoS::AtMostOnce), None);
    let mut p = ok5(b.port, "sid-pub");
    pub5(
        &mut p,
        "sid/x",
        b"m",
        QoS::AtLeastOnce,
        false,
        Properties::default(),
    );
    let m = c.recv_publish();
    let mut ids = m.properties.subscription_identifiers.clone();
    ids.sort();
    assert_eq!(ids, vec![7, 9]);
    assert_eq!(m.qos, QoS::AtLeastOnce, "highest granted QoS");
    c.ping();
    c.expect_nothing(Duration::from_millis(100));
}

// ---------------------------------------------------------------- shared subscriptions

/// 4.8.2: each message to one member (round-robin), no retained messages on a
/// shared subscription, No Local refused [MQTT-3.8.3-4].
#[test]
fn shared_subscriptions() {
    let b = BrokerProcess::start("");
    let mut p = ok5(b.port, "sh-pub");
    pub5(
        &mut p,
        "sh/t",
        b"retained",
        QoS::AtLeastOnce,
        true,
        Properties::default(),
    );
    let mut m1 = ok5(b.port, "sh-1");
    let mut m2 = Client::connect(b.port, "sh-2");
    assert_eq!(
        sub5(&mut m1, "$share/g/sh/#", opts(QoS::AtLeastOnce), None),
        ReasonCode(1)
    );
    m2.subscribe("$share/g/sh/#", QoS::AtLeastOnce);
    m1.ping();
    m1.expect_nothing(Duration::from_millis(100));
    for i in 0..4u8 {
        pub5(
            &mut p,
            "sh/t",
            &[i],
            QoS::AtLeastOnce,
            false,
            Properties::default(),
        );
    }
    let a: Vec<u8> = (0..2).map(|_| m1.recv_publish().payload[0]).collect();
    let b2: Vec<u8> = (0..2).map(|_| m2.recv_publish().payload[0]).collect();
    let mut all = [a.clone(), b2.clone()].concat();
    all.sort();
    assert_eq!(
        all,
        vec![0, 1, 2, 3],
        "each message to exactly one member: {a:?} {b2:?}"
    );
    let bad = SubscriptionOptions {
        qos: QoS::AtMostOnce,
        no_local: true,
        ..Default::default()
    };
    m1.send(&Packet::Subscribe(Subscribe {
        packet_id: 2,
        properties: Properties::default(),
        filters: vec![("$share/g/x", bad)],
    }));
    closed_with(&mut m1, ReasonCode::PROTOCOL_ERROR);
}

// ---------------------------------------------------------------- wills

fn delayed_will(delay: u32) -> Will<'static> {
    Will {
        topic: "wd/will",
        payload: b"gone",
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Properties {
            will_delay_interval: Some(delay),
            content_type: Some("text/plain"),
            user_properties: vec![("k", "v")],
            ..Properties::default()
        },
    }
}

/// 3.1.3.2.2 will delay; [MQTT-3.1.3-9] cancelled by a reconnect in time; will
/// properties forwarded.
#[test]
fn will_delay_and_will_properties() {
    let b = BrokerProcess::start("");
    let mut w = ok5(b.port, "wd-watch");
    sub5(&mut w, "wd/#", opts(QoS::AtLeastOnce), None);
    let persist = Properties {
        session_expiry_interval: Some(60),
        ..Properties::default()
    };
    let (c, _) = connect5_will(b.port, "wd", true, persist.clone(), Some(delayed_will(1)));
    c.drop_connection();
    // Back within the delay: no will.
    let (c, a) = connect5(b.port, "wd", false, persist.clone());
    assert!(a.session_present);
    w.expect_nothing(Duration::from_millis(1500));
    c.disconnect();
    // Not back: the will comes after the delay, with its properties.
    let (c, _) = connect5_will(b.port, "wd", false, persist, Some(delayed_will(1)));
    c.drop_connection();
    let m = match w.try_recv(Duration::from_secs(4)) {
        Some(Ok(Packet::Publish(m))) => m,
        other => panic!("expected the will, got {other:?}"),
    };
    w.ack(&m);
    assert_eq!(m.payload, b"gone");
    assert_eq!(m.properties.content_type, Some("text/plain"));
    assert_eq!(m.properties.user_properties, vec![("k", "v")]);
}

/// 3.14.2.1: DISCONNECT with reason 0x04 asks for the will.
#[test]
fn disconnect_with_will_message() {
    let b = BrokerProcess::start("");
    let mut w = ok5(b.port, "dw-watch");
    sub5(&mut w, "wd/#", opts(QoS::AtLeastOnce), None);
    let (mut c, _) = connect5_will(
        b.port,
        "dw",
        true,
        Properties::default(),
        Some(delayed_will(0)),
    );
    c.send(&Packet::Disconnect(Disconnect::with_reason(
        ReasonCode::DISCONNECT_WITH_WILL,
    )));
    assert_eq!(w.recv_publish().payload, b"gone");
}

// ---------------------------------------------------------------- properties

/// [MQTT-3.3.2-17/18] user properties forwarded unchanged and in order, with
/// content type, payload format, response topic and correlation data (4.10).
#[test]
fn properties_are_forwarded_unchanged() {
    let b = BrokerProcess::start("");
    let mut s = ok5(b.port, "fw-sub");
    sub5(&mut s, "fw/t", opts(QoS::AtLeastOnce), None);
    let mut p = ok5(b.port, "fw-pub");
    let props = Properties {
        payload_format_indicator: Some(1),
        content_type: Some("application/json"),
        response_topic: Some("fw/reply"),
        correlation_data: Some(b"\x00\x01corr"),
        user_properties: vec![("z", "1"), ("a", "2"), ("z", "3")],
        ..Properties::default()
    };
    pub5(
        &mut p,
        "fw/t",
        b"{}",
        QoS::AtLeastOnce,
        false,
        props.clone(),
    );
    let m = s.recv_publish();
    assert_eq!(m.properties.payload_format_indicator, Some(1));
    assert_eq!(m.properties.content_type, props.content_type);
    assert_eq!(m.properties.response_topic, props.response_topic);
    assert_eq!(m.properties.correlation_data, props.correlation_data);
    assert_eq!(m.properties.user_properties, props.user_properties);
    // A 3.1.1 subscriber gets the message without properties.
    let mut old = Client::connect(b.port, "fw-old");
    old.subscribe("fw/t", QoS::AtLeastOnce);
    pub5(&mut p, "fw/t", b"{}", QoS::AtLeastOnce, false, props);
    assert_eq!(old.recv_publish().payload, b"{}");
}

/// 3.3.2.3.2: a payload flagged UTF-8 that is not is refused with 0x99.
#[test]
fn invalid_utf8_payload_with_format_indicator_is_0x99() {
    let b = BrokerProcess::start("");
    let mut s = ok5(b.port, "pf-sub");
    sub5(&mut s, "pf", opts(QoS::AtLeastOnce), None);
    let mut p = ok5(b.port, "pf-pub");
    let pfi = Properties {
        payload_format_indicator: Some(1),
        ..Properties::default()
    };
    let r = pub5(&mut p, "pf", &[0xFF, 0xFE], QoS::AtLeastOnce, false, pfi);
    assert_eq!(r, ReasonCode::PAYLOAD_FORMAT_INVALID);
    s.ping();
    s.expect_nothing(Duration::from_millis(100));
}

/// 4.10: Request Response Information answered with Response Information.
#[test]
fn response_information_when_configured() {
    let b = BrokerProcess::start("response_information replies/");
    let ask = Properties {
        request_response_information: Some(1),
        ..Properties::default()
    };
    let (_c, a) = connect5(b.port, "rr", true, ask);
    assert_eq!(a.properties.response_information, Some("replies/rr"));
    let (_c, a) = connect5(b.port, "rr2", true, Properties::default());
    assert_eq!(
        a.properties.response_information, None,
        "only when requested"
    );
}

// ---------------------------------------------------------------- reason codes

/// Reason codes on acks: 0x10 no matching subscribers, 0x11 no subscription existed.
#[test]
fn reason_codes_on_acks() {
    let b = BrokerProcess::start("");
    let mut c = ok5(b.port, "rc");
    let r = pub5(
        &mut c,
        "nobody/listens",
        b"x",
        QoS::AtLeastOnce,
        false,
        Properties::default(),
    );
    assert_eq!(r, ReasonCode::NO_MATCHING_SUBSCRIBERS);
    c.send(&Packet::Unsubscribe(midge::protocol::Unsubscribe {
        packet_id: 5,
        properties: Properties::default(),
        filters: vec!["never/subscribed"],
    }));
    match c.recv() {
        Packet::UnsubAck(a) => assert_eq!(a.reasons, vec![ReasonCode::NO_SUBSCRIPTION_EXISTED]),
        other => panic!("{other:?}"),
    }
}

/// Server DISCONNECT reasons: 0x8E takeover, 0x8D keep-alive timeout.
#[test]
fn takeover_and_keep_alive_reasons() {
    let b = BrokerProcess::start("");
    let mut first = ok5(b.port, "twice");
    let _second = ok5(b.port, "twice");
    closed_with(&mut first, ReasonCode::SESSION_TAKEN_OVER);
    let mut c = Client::open(b.port, V5);
    c.send(&Packet::Connect(Box::new(Connect {
        version: V5,
        clean_start: true,
        keep_alive: 1,
        properties: Properties::default(),
        client_id: "sleepy",
        will: None,
        username: None,
        password: None,
    })));
    assert!(matches!(c.recv(), Packet::ConnAck(_)));
    closed_with(&mut c, ReasonCode::KEEP_ALIVE_TIMEOUT);
}

/// 4.12: no enhanced authentication method yet: CONNACK 0x8C, then close.
#[test]
fn authentication_method_is_refused_with_0x8c() {
    let b = BrokerProcess::start("");
    let (mut c, a) = connect5(
        b.port,
        "auth",
        true,
        Properties {
            authentication_method: Some("SCRAM-SHA-1"),
            ..Properties::default()
        },
    );
    assert_eq!(a.reason, ReasonCode::BAD_AUTHENTICATION_METHOD);
    assert!(c.expect_closed().is_none());
}

/// [MQTT-3.3.4-6] a PUBLISH from a client carrying a Subscription Identifier is
/// a protocol error: DISCONNECT 0x82, and the message is not delivered.
#[test]
fn publish_with_subscription_identifier_is_a_protocol_error() {
    let b = BrokerProcess::start("");
    let mut sub = Client::connect_v(b.port, V5, "subid-watch");
    sub.subscribe("subid/t", QoS::AtMostOnce);
    let mut c = Client::connect_v(b.port, V5, "subid-pub");
    let mut p = publish("subid/t", b"x", QoS::AtMostOnce, false, 0);
    p.properties.subscription_identifiers = vec![7];
    c.send(&Packet::Publish(p));
    closed_with(&mut c, ReasonCode::PROTOCOL_ERROR);
    sub.ping();
}
