//! mosquitto's listener and delivery options against the real binary:
//! `max_qos`, `use_username_as_clientid`, `max_inflight_bytes`,
//! `upgrade_outgoing_qos` (and, below, `mount_point` and
//! `check_retain_source`), with 3.1.1 and v5 clients where they differ. Before
//! these, each directive stopped start-up ("refused" or "partly supported").

mod common;

use common::*;
use midge::protocol::{
    ConnAck, Connect, Packet, Properties, ProtocolVersion, QoS, ReasonCode, Will,
};

const V5: ProtocolVersion = ProtocolVersion::V5;
const V311: ProtocolVersion = ProtocolVersion::V311;

/// Send a CONNECT (optionally with a user name and a will) and return the
/// client with the CONNACK, or `None` when the broker closed without one.
fn connect(
    port: u16,
    version: ProtocolVersion,
    id: &str,
    user: Option<&str>,
    will: Option<(&str, QoS)>,
) -> (Client, Option<ConnAck<'static>>) {
    let mut c = Client::open(port, version);
    c.send(&Packet::Connect(Box::new(Connect {
        version,
        clean_start: true,
        keep_alive: 60,
        properties: Properties::default(),
        client_id: leak_str(id),
        will: will.map(|(topic, qos)| Will {
            topic: leak_str(topic),
            payload: b"gone",
            qos,
            retain: false,
            properties: Properties::default(),
        }),
        username: user.map(leak_str),
        password: None,
    })));
    match c.try_recv(std::time::Duration::from_secs(5)) {
        Some(Ok(Packet::ConnAck(a))) => (c, Some(a)),
        Some(Err(_)) => (c, None),
        other => panic!("expected CONNACK or close, got {other:?}"),
    }
}

fn ok(port: u16, version: ProtocolVersion, id: &str) -> (Client, ConnAck<'static>) {
    let (c, a) = connect(port, version, id, None, None);
    let a = a.expect("CONNACK");
    assert_eq!(a.reason, ReasonCode::SUCCESS, "CONNACK for {id}");
    (c, a)
}

/// `max_qos 1` on one listener, none on the other (`max_qos` is per listener
/// whatever `per_listener_settings` says, as in mosquitto).
#[test]
fn max_qos_is_announced_enforced_and_caps_subscriptions() {
    let (p1, p2) = (free_port(), free_port());
    let b = BrokerProcess::start_with_config(
        p1,
        &format!("listener {p1} 127.0.0.1\nmax_qos 1\nlistener {p2} 127.0.0.1\n"),
        &[],
    );
    // [MQTT-3.2.2-9] a server without QoS 2 says so in the v5 CONNACK; the
    // other listener has no limit and sends no Maximum QoS.
    let (mut s5, ack) = ok(p1, V5, "mq-s5");
    assert_eq!(ack.properties.maximum_qos, Some(1));
    let (_, ack) = ok(p2, V5, "mq-other");
    assert_eq!(ack.properties.maximum_qos, None);

    // [MQTT-3.2.2-10] SUBSCRIBE at QoS 2 is accepted and granted 1 (v5 and 3.1.1).
    assert_eq!(s5.subscribe("mq/t", QoS::ExactlyOnce), vec![ReasonCode(1)]);
    let (mut s3, _) = ok(p1, V311, "mq-s3");
    assert_eq!(s3.subscribe("mq/t", QoS::ExactlyOnce), vec![ReasonCode(1)]);

    // QoS 1 passes; a QoS 2 message from the other listener reaches them at 1.
    let (mut p, _) = ok(p2, V311, "mq-pub");
    p.publish("mq/t", b"two", QoS::ExactlyOnce, false, 1);
    for s in [&mut s5, &mut s3] {
        let got = s.recv_publish();
        assert_eq!((got.payload, got.qos), (&b"two"[..], QoS::AtLeastOnce));
    }

    // A v5 client publishing over the maximum it was told [MQTT-3.2.2-11]
    // is disconnected with 0x9B (3.3.1.2).
    let (mut c, _) = ok(p1, V5, "mq-over5");
    c.send(&Packet::Publish(publish(
        "mq/t",
        b"x",
        QoS::ExactlyOnce,
        false,
        7,
    )));
    let d = c.expect_closed().expect("DISCONNECT");
    assert_eq!(d.reason, ReasonCode::QOS_NOT_SUPPORTED);
    // 3.1.1 could not be told: mosquitto disconnects it too, without a packet.
    let (mut c, _) = ok(p1, V311, "mq-over3");
    c.send(&Packet::Publish(publish(
        "mq/t",
        b"x",
        QoS::ExactlyOnce,
        false,
        7,
    )));
    assert!(c.expect_closed().is_none());
    // Nothing of either reached the subscribers.
    s5.ping();
    s3.ping();

    // [MQTT-3.2.2-12] a Will QoS over the maximum refuses the connection:
    // v5 with CONNACK 0x9B, 3.1.1 (no such return code) closed without one.
    let (_, ack) = connect(p1, V5, "mq-will5", None, Some(("w", QoS::ExactlyOnce)));
    assert_eq!(ack.expect("CONNACK").reason, ReasonCode::QOS_NOT_SUPPORTED);
    let (_, ack) = connect(p1, V311, "mq-will3", None, Some(("w", QoS::ExactlyOnce)));
    assert!(ack.is_none(), "3.1.1 will over max_qos: {ack:?}");
    let (_, ack) = connect(p1, V311, "mq-will-ok", None, Some(("w", QoS::AtLeastOnce)));
    assert_eq!(ack.expect("CONNACK").reason, ReasonCode::SUCCESS);
    b.wait_log("Too high QoS in PUBLISH from mq-over5");
}

/// `max_qos 0` before any listener belongs to mosquitto's default listener:
/// here the local-only one, so QoS 1 is refused on it.
#[test]
fn max_qos_before_any_listener_is_the_default_listeners() {
    let port = free_port();
    let dir = temp_dir("maxqos-default");
    let conf = dir.join("m.conf");
    std::fs::write(&conf, "max_qos 0\n").expect("write");
    let _b = BrokerProcess::start_with_args(
        port,
        &["-c", conf.to_str().expect("utf-8"), "-p", &port.to_string()],
    );
    let (mut c, ack) = ok(port, V5, "mq0");
    assert_eq!(ack.properties.maximum_qos, Some(0));
    assert_eq!(c.subscribe("t", QoS::ExactlyOnce), vec![ReasonCode(0)]);
}

/// `use_username_as_clientid true`: the user name is the client id, so a
/// second connection with the same user name and another id takes the first
/// over; without a user name the client is not authorised (mosquitto).
#[test]
fn use_username_as_clientid_replaces_the_client_id() {
    let (p1, p2) = (free_port(), free_port());
    let b = BrokerProcess::start_with_config(
        p1,
        &format!(
            "listener {p1} 127.0.0.1\nuse_username_as_clientid true\nlistener {p2} 127.0.0.1\n"
        ),
        &[],
    );
    let (mut first, ack) = connect(p1, V5, "device-1", Some("alice"), None);
    assert_eq!(ack.expect("CONNACK").reason, ReasonCode::SUCCESS);
    b.wait_log("as alice (p5");
    // Another id, same user: the same session, so the first is taken over.
    let (_second, ack) = connect(p1, V311, "device-2", Some("alice"), None);
    assert_eq!(ack.expect("CONNACK").reason, ReasonCode::SUCCESS);
    let d = first.expect_closed().expect("DISCONNECT");
    assert_eq!(d.reason, ReasonCode::SESSION_TAKEN_OVER);
    // An empty id is assigned the user name (v5 Assigned Client Identifier).
    let (_, ack) = connect(p1, V5, "", Some("bob"), None);
    let ack = ack.expect("CONNACK");
    assert_eq!(ack.reason, ReasonCode::SUCCESS);
    assert_eq!(ack.properties.assigned_client_identifier, Some("bob"));
    // No user name: not authorised (v5 0x87, 3.1.1 return code 5).
    for v in [V5, V311] {
        let (mut c, ack) = connect(p1, v, "anon", None, None);
        assert_eq!(ack.expect("CONNACK").reason, ReasonCode::NOT_AUTHORIZED);
        c.expect_closed();
    }
    // The other listener keeps the client's own id.
    let (_c, ack) = connect(p2, V311, "device-3", Some("alice"), None);
    assert_eq!(ack.expect("CONNACK").reason, ReasonCode::SUCCESS);
    b.wait_log("as device-3 (p4");
}

/// `max_inflight_bytes 100`: a message joins the window while fewer than 100
/// payload bytes are in flight (mosquitto's rule), the rest wait in the queue
/// and follow as acks free bytes; one message larger than the bound still
/// goes alone.
#[test]
fn max_inflight_bytes_holds_messages_in_the_queue() {
    let b = BrokerProcess::start("max_inflight_bytes 100\nmax_inflight_messages 20\n");
    for version in [V311, V5] {
        let topic = format!("ib/{}", version.level());
        let (mut s, _) = ok(b.port, version, &format!("ib-sub{}", version.level()));
        s.subscribe(&topic, QoS::AtLeastOnce);
        let (mut p, _) = ok(b.port, V311, "ib-pub");
        for i in 1..=3u8 {
            p.publish(&topic, &[i; 60], QoS::AtLeastOnce, false, u16::from(i));
        }
        // 0, then 60 bytes in flight: two go; at 120 the third waits.
        let a = match s.recv() {
            Packet::Publish(x) => x,
            other => panic!("{other:?}"),
        };
        let second = match s.recv() {
            Packet::Publish(x) => x,
            other => panic!("{other:?}"),
        };
        assert_eq!((a.payload[0], second.payload[0]), (1, 2));
        s.ping(); // a third PUBLISH would arrive before the PINGRESP
        s.ack(&a);
        let third = s.recv_publish();
        assert_eq!(third.payload[0], 3);
        s.ack(&second);
        // Nothing in flight: a 500-byte message goes, and holds the window.
        p.publish(&topic, &[4; 500], QoS::AtLeastOnce, false, 4);
        p.publish(&topic, &[5; 10], QoS::AtLeastOnce, false, 5);
        let big = match s.recv() {
            Packet::Publish(x) => x,
            other => panic!("{other:?}"),
        };
        assert_eq!(big.payload.len(), 500);
        s.ping();
        s.ack(&big);
        assert_eq!(s.recv_publish().payload, &[5; 10][..]);
        p.disconnect();
        s.disconnect();
    }
}

/// `upgrade_outgoing_qos true` (mosquitto's non-standard option): messages
/// reach a subscriber at its subscription's QoS even above the published QoS
/// (the spec says the lower of the two, [MQTT-3.8.4-8]), retained ones too.
/// Without it, the lower one.
#[test]
fn upgrade_outgoing_qos_delivers_at_the_granted_qos() {
    for (config, expect) in [
        ("upgrade_outgoing_qos true", QoS::ExactlyOnce),
        ("", QoS::AtMostOnce),
    ] {
        let b = BrokerProcess::start(config);
        let (mut p, _) = ok(b.port, V311, "up-pub");
        p.publish("up/r", b"kept", QoS::AtMostOnce, true, 0);
        for version in [V311, V5] {
            let (mut s, _) = ok(b.port, version, &format!("up-{}", version.level()));
            s.subscribe("up/#", QoS::ExactlyOnce);
            let r = s.recv_publish();
            assert_eq!((r.payload, r.retain, r.qos), (&b"kept"[..], true, expect));
            p.publish("up/live", b"live", QoS::AtMostOnce, false, 0);
            let l = s.recv_publish();
            assert_eq!(
                (l.payload, l.qos),
                (&b"live"[..], expect),
                "{config:?} {version:?}"
            );
            s.disconnect();
        }
    }
}

/// Receive one PUBLISH (acknowledged) and return (topic, payload, retain).
fn got(c: &mut Client) -> (String, Vec<u8>, bool) {
    let p = c.recv_publish();
    (p.topic.to_string(), p.payload.to_vec(), p.retain)
}

/// `mount_point tenant/` on one listener: its clients' topics, filters, wills
/// and retained messages live under `tenant/`, they are sent topics without
/// it, and nothing outside it reaches them. 3.1.1 and v5 clients alike.
#[test]
fn mount_point_prefixes_in_and_strips_out() {
    let (plain, mounted, glued) = (free_port(), free_port(), free_port());
    let b = BrokerProcess::start_with_config(
        plain,
        &format!(
            "listener {plain} 127.0.0.1\nlistener {mounted} 127.0.0.1\nmount_point tenant/\n\
             listener {glued} 127.0.0.1\nmount_point m\n"
        ),
        &[],
    );
    // `o` watches everything from outside; `p` publishes from outside (a
    // client's own copy may overtake its PUBACK).
    let (mut o, _) = ok(plain, V311, "mp-outside");
    o.subscribe("#", QoS::AtLeastOnce);
    let (mut p, _) = ok(plain, V311, "mp-pub");
    p.publish("tenant/r", b"kept", QoS::AtLeastOnce, true, 1);
    assert_eq!(got(&mut o), ("tenant/r".into(), b"kept".to_vec(), false));
    p.publish("outside/r", b"not yours", QoS::AtLeastOnce, true, 2);
    assert_eq!(got(&mut o).0, "outside/r");
    for version in [V311, V5] {
        let (mut m, _) = ok(mounted, version, &format!("mp-in{}", version.level()));
        let (mut mp, _) = ok(mounted, version, &format!("mp-inpub{}", version.level()));
        // Retained messages: only those under the mount point, stripped.
        m.subscribe("#", QoS::AtLeastOnce);
        assert_eq!(got(&mut m), ("r".into(), b"kept".to_vec(), true));
        m.ping();
        // In: prefixed for everyone else; out: stripped for it.
        mp.publish("a/b", b"up", QoS::AtLeastOnce, false, 3);
        assert_eq!(got(&mut o).0, "tenant/a/b");
        assert_eq!(got(&mut m).0, "a/b");
        p.publish("tenant/x", b"down", QoS::AtLeastOnce, false, 4);
        assert_eq!(got(&mut o).0, "tenant/x");
        assert_eq!(got(&mut m), ("x".into(), b"down".to_vec(), false));
        // Outside the mount point, and its parent level (`tenant/#` matches
        // `tenant`): not delivered.
        p.publish("other/y", b"no", QoS::AtLeastOnce, false, 5);
        p.publish("tenant", b"no", QoS::AtLeastOnce, false, 6);
        assert_eq!(got(&mut o).0, "other/y");
        assert_eq!(got(&mut o).0, "tenant");
        m.ping(); // a PUBLISH for either would arrive before the PINGRESP
                  // Unsubscribe takes the mounted filter away.
        m.unsubscribe("#", 7);
        p.publish("tenant/z", b"gone", QoS::AtLeastOnce, false, 8);
        assert_eq!(got(&mut o).0, "tenant/z");
        m.ping();
        m.disconnect();
        mp.disconnect();
    }
    // A will's topic is mounted too.
    let (w, ack) = connect(
        mounted,
        V311,
        "mp-will",
        None,
        Some(("status", QoS::AtLeastOnce)),
    );
    assert_eq!(ack.expect("CONNACK").reason, ReasonCode::SUCCESS);
    w.drop_connection();
    assert_eq!(
        got(&mut o),
        ("tenant/status".into(), b"gone".to_vec(), false)
    );
    // Shared subscriptions share within the mount point.
    let (mut s, _) = ok(mounted, V5, "mp-shared");
    assert_eq!(
        s.subscribe("$share/g/s/#", QoS::AtLeastOnce),
        vec![ReasonCode(1)]
    );
    p.publish("tenant/s/1", b"one", QoS::AtLeastOnce, false, 9);
    assert_eq!(got(&mut o).0, "tenant/s/1");
    assert_eq!(got(&mut s).0, "s/1");
    // `mount_point m` (no `/`) glues: `+/x` would make `m+/x`, no filter
    // (v5 0x8F, 3.1.1 0x80); plain names work (`m` + `y` = `my`).
    let (mut g5, _) = ok(glued, V5, "mp-glued5");
    assert_eq!(
        g5.subscribe("+/x", QoS::AtMostOnce),
        vec![ReasonCode::TOPIC_FILTER_INVALID]
    );
    let (mut g3, _) = ok(glued, V311, "mp-glued3");
    assert_eq!(g3.subscribe("#", QoS::AtMostOnce), vec![ReasonCode(0x80)]);
    assert_eq!(g3.subscribe("y", QoS::AtMostOnce), vec![ReasonCode(0)]);
    p.publish("my", b"glued", QoS::AtLeastOnce, false, 10);
    assert_eq!(got(&mut o).0, "my");
    assert_eq!(got(&mut g3).0, "y");
    b.wait_log("not a valid filter under the listener's mount_point");
}

/// ACLs see the full (mounted) topic, as in mosquitto.
#[test]
fn mount_point_acl_applies_to_the_full_topic() {
    let (plain, mounted) = (free_port(), free_port());
    let dir = temp_dir("mount-acl");
    let acl = dir.join("acl");
    std::fs::write(&acl, "topic readwrite tenant/ok/#\ntopic read #\n").expect("acl");
    let _b = BrokerProcess::start_with_config(
        plain,
        &format!(
            "acl_file {}\nlistener {plain} 127.0.0.1\nlistener {mounted} 127.0.0.1\nmount_point tenant/\n",
            acl.display()
        ),
        &[],
    );
    let (mut o, _) = ok(plain, V311, "acl-outside");
    o.subscribe("tenant/#", QoS::AtLeastOnce);
    for version in [V311, V5] {
        let (mut m, _) = ok(mounted, version, &format!("acl-in{}", version.level()));
        // Read access through `#` covers `tenant/no/#`; write access does not.
        assert_eq!(m.subscribe("no/#", QoS::AtLeastOnce), vec![ReasonCode(1)]);
        m.publish("no/1", b"denied", QoS::AtLeastOnce, false, 1);
        m.publish("ok/1", b"allowed", QoS::AtLeastOnce, false, 2);
        assert_eq!(
            got(&mut o),
            ("tenant/ok/1".into(), b"allowed".to_vec(), false)
        );
        o.ping(); // the denied one would have come first
        m.ping();
        m.disconnect();
    }
}

/// ACL: everyone reads; `alice` and `bob` write under their own prefix.
const ACL_BOTH: &str = "topic read #\npattern write w/%c/#\n";
/// `alice` lost write access; `bob` kept his.
const ACL_BOB: &str = "topic read #\ntopic write w/bob/#\n";

/// Retained topics a fresh subscriber to `w/#` receives, sorted.
fn retained_seen(port: u16, version: ProtocolVersion, id: &str) -> Vec<String> {
    let (mut s, _) = ok(port, version, id);
    s.subscribe("w/#", QoS::AtLeastOnce);
    // The replay of two messages goes out in the SUBACK's turn: before the
    // answer to a PINGREQ sent after the SUBACK.
    s.send(&Packet::PingReq);
    let mut seen = Vec::new();
    loop {
        match s.recv() {
            Packet::Publish(p) => {
                s.ack(&p);
                seen.push(p.topic.to_string());
            }
            Packet::PingResp => break,
            other => panic!("expected PUBLISH or PINGRESP, got {other:?}"),
        }
    }
    seen.sort();
    seen
}

/// `check_retain_source` (mosquitto's default, true): a retained message is
/// sent to a new subscriber only while its publisher may still write its
/// topic. `alice` loses write access (SIGHUP with a new ACL; and across a
/// restart with persistence, the publisher's identity kept in the log): her
/// retained message is no longer sent; `bob`'s still is. With `false`, both.
#[test]
fn check_retain_source_rechecks_the_publisher() {
    for (setting, expect_after) in [
        ("", vec!["w/bob/y"]),
        ("check_retain_source true", vec!["w/bob/y"]),
        ("check_retain_source false", vec!["w/alice/x", "w/bob/y"]),
    ] {
        let dir = temp_dir("retain-source");
        let acl = dir.join("acl");
        std::fs::write(&acl, ACL_BOTH).expect("acl");
        let port = free_port();
        let config = format!(
            "listener {port} 127.0.0.1\nacl_file {}\npersistence true\npersistence_location {}\n{setting}\n",
            acl.display(),
            dir.display()
        );
        let mut b = BrokerProcess::start_with_config(port, &config, &[]);
        for (id, topic) in [("alice", "w/alice/x"), ("bob", "w/bob/y")] {
            let (mut c, _) = ok(port, V311, id);
            c.publish(topic, id.as_bytes(), QoS::AtLeastOnce, true, 1);
            c.disconnect();
        }
        assert_eq!(
            retained_seen(port, V5, "before"),
            vec!["w/alice/x", "w/bob/y"],
            "{setting:?}"
        );
        std::fs::write(&acl, ACL_BOB).expect("acl");
        b.signal("HUP");
        b.wait_log("Reloading password, ACL");
        for v in [V311, V5] {
            assert_eq!(
                retained_seen(port, v, &format!("after{}", v.level())),
                expect_after,
                "{setting:?} after SIGHUP"
            );
        }
        // The publisher's identity survives a restart with the message.
        b.signal("TERM");
        b.wait_exit();
        let b = BrokerProcess::start_with_config(port, &config, &[]);
        b.wait_log("Restored 2 retained message(s)");
        assert_eq!(
            retained_seen(port, V311, "restarted"),
            expect_after,
            "{setting:?} after a restart"
        );
    }
}
