//! Bridges (issue 12) against real remotes: Debian's mosquitto started by each
//! test on its own port and config, and midge itself. Every wait is a read with
//! a timeout.

mod common;

use std::time::Duration;

use common::mosquitto::{count_numbered, count_received, Mosquitto};
use common::*;
use midge::protocol::{Packet, ProtocolVersion, Publish, QoS};

/// A `connection` section towards `port` on loopback, retrying every second.
fn section(name: &str, port: u16, lines: &str) -> String {
    format!(
        "connection {name}\naddress 127.0.0.1:{port}\nremote_clientid {name}\nrestart_timeout 1\n{lines}\n"
    )
}

/// Receive the next PUBLISH (acknowledging it), failing on anything else.
fn next_publish(c: &mut Client) -> Publish<'static> {
    c.recv_publish()
}

/// Nothing more arrives within a short window (after a round trip).
fn quiet(c: &mut Client) {
    c.expect_nothing(Duration::from_millis(300));
}

fn version_name(v: ProtocolVersion) -> &'static str {
    match v {
        ProtocolVersion::V5 => "mqttv50",
        ProtocolVersion::V311 => "mqttv311",
        ProtocolVersion::V31 => "mqttv31",
    }
}

/// Issue 12 test 1: midge -> mosquitto with `out`, `in` and `both` topics,
/// local and remote prefixes, QoS 0/1/2 capped by the topic's QoS, retained
/// messages, and the connection state published on both sides.
fn midge_to_mosquitto(version: ProtocolVersion) {
    let remote = Mosquitto::start("");
    let conf = section(
        "up",
        remote.port,
        &format!(
            "bridge_protocol_version {}\n\
             topic out/# out 2 \"\" site42/\n\
             topic cmd/# in 2 edge/ site42/\n\
             topic both/# both 1\n\
             topic capped/# out 1\n",
            version_name(version)
        ),
    );
    let midge = BrokerProcess::start(&conf);
    midge.wait_log("Bridge up: connected");
    remote.wait_log("Sending SUBACK to up");

    // State: retained "1" on both sides.
    let mut local = Client::connect_v(midge.port, ProtocolVersion::V5, "local-sub");
    local.subscribe("$SYS/broker/connection/up/state", QoS::AtLeastOnce);
    let p = next_publish(&mut local);
    assert_eq!((p.payload, p.retain), (&b"1"[..], true));
    let mut far = Client::connect_v(remote.port, ProtocolVersion::V311, "remote-sub");
    far.subscribe("$SYS/broker/connection/up/state", QoS::AtLeastOnce);
    let p = next_publish(&mut far);
    assert_eq!((p.payload, p.retain), (&b"1"[..], true));

    far.subscribe("site42/out/#", QoS::ExactlyOnce);
    far.subscribe("both/#", QoS::ExactlyOnce);
    far.subscribe("capped/#", QoS::ExactlyOnce);
    local.subscribe("edge/#", QoS::ExactlyOnce);
    local.subscribe("both/#", QoS::ExactlyOnce);

    // out, remote prefix added; QoS kept up to the topic's 2.
    let mut publisher = Client::connect_v(midge.port, ProtocolVersion::V311, "local-pub");
    for (i, qos) in ALL_QOS.iter().enumerate() {
        publisher.publish(
            "out/a",
            format!("o{i}").as_bytes(),
            *qos,
            false,
            10 + i as u16,
        );
        let p = next_publish(&mut far);
        assert_eq!(p.topic, "site42/out/a");
        assert_eq!(p.payload, format!("o{i}").as_bytes());
        assert_eq!(p.qos, *qos);
    }
    // QoS = min(topic qos 1, message qos 2).
    publisher.publish("capped/x", b"c", QoS::ExactlyOnce, false, 20);
    let p = next_publish(&mut far);
    assert_eq!((p.topic, p.qos), ("capped/x", QoS::AtLeastOnce));

    // in: remote prefix stripped, local prefix added.
    let mut remote_pub = Client::connect_v(remote.port, ProtocolVersion::V311, "remote-pub");
    for (i, qos) in ALL_QOS.iter().enumerate() {
        remote_pub.publish(
            "site42/cmd/go",
            format!("i{i}").as_bytes(),
            *qos,
            false,
            30 + i as u16,
        );
        let p = next_publish(&mut local);
        assert_eq!(p.topic, "edge/cmd/go");
        assert_eq!(p.payload, format!("i{i}").as_bytes());
        assert_eq!(p.qos, *qos);
    }

    // both: each side gets the other's message once, nothing comes back.
    publisher.publish("both/l", b"from-local", QoS::AtLeastOnce, false, 40);
    let p = next_publish(&mut far);
    assert_eq!((p.topic, p.payload), ("both/l", &b"from-local"[..]));
    let p = next_publish(&mut local);
    assert_eq!((p.topic, p.payload), ("both/l", &b"from-local"[..]));
    remote_pub.publish("both/r", b"from-remote", QoS::AtLeastOnce, false, 41);
    let p = next_publish(&mut local);
    assert_eq!((p.topic, p.payload), ("both/r", &b"from-remote"[..]));
    let p = next_publish(&mut far);
    assert_eq!((p.topic, p.payload), ("both/r", &b"from-remote"[..]));
    quiet(&mut far);
    quiet(&mut local);

    // Retained: kept as retained on the remote.
    publisher.publish("out/kept", b"r", QoS::AtLeastOnce, true, 50);
    let p = next_publish(&mut far);
    assert_eq!(p.topic, "site42/out/kept");
    let mut late = Client::connect_v(remote.port, ProtocolVersion::V311, "late");
    late.subscribe("site42/out/kept", QoS::AtLeastOnce);
    let p = next_publish(&mut late);
    assert_eq!((p.payload, p.retain), (&b"r"[..], true));

    // The remote goes away: state "0" locally (retained).
    drop(far);
    drop(late);
    drop(remote_pub);
    drop(remote);
    let p = next_publish(&mut local);
    assert_eq!(p.topic, "$SYS/broker/connection/up/state");
    assert_eq!((p.payload, p.retain), (&b"0"[..], false));
}

#[test]
fn midge_to_mosquitto_v311() {
    midge_to_mosquitto(ProtocolVersion::V311);
}

#[test]
fn midge_to_mosquitto_v5() {
    midge_to_mosquitto(ProtocolVersion::V5);
}

/// Issue 12 test 2: mosquitto's own bridge (3.1.1 with `try_private`, level
/// 0x84) connects to midge as its remote. midge must accept it, must not send
/// its messages back to it, and must keep retained flags towards it.
#[test]
fn mosquitto_bridge_into_midge() {
    let midge = BrokerProcess::start("");
    let remote = Mosquitto::start(&format!(
        "connection tomidge\naddress 127.0.0.1:{}\nremote_clientid from-mosquitto\n\
         topic # both 1\nrestart_timeout 1\n",
        midge.port
    ));
    midge.wait_log("as from-mosquitto");
    // mosquitto subscribes `#` on midge once connected.
    midge.wait_log("Received SUBSCRIBE from from-mosquitto");
    midge.ping_log();

    let mut on_midge = Client::connect_v(midge.port, ProtocolVersion::V311, "m-sub");
    on_midge.subscribe("t/#", QoS::AtLeastOnce);
    let mut on_mosq = Client::connect_v(remote.port, ProtocolVersion::V311, "q-sub");
    on_mosq.subscribe("t/#", QoS::AtLeastOnce);

    let mut pub_mosq = Client::connect_v(remote.port, ProtocolVersion::V311, "q-pub");
    pub_mosq.publish("t/from-mosquitto", b"1", QoS::AtLeastOnce, false, 1);
    assert_eq!(next_publish(&mut on_midge).topic, "t/from-mosquitto");
    assert_eq!(next_publish(&mut on_mosq).topic, "t/from-mosquitto");

    let mut pub_midge = Client::connect_v(midge.port, ProtocolVersion::V311, "m-pub");
    pub_midge.publish("t/from-midge", b"2", QoS::AtLeastOnce, false, 2);
    assert_eq!(next_publish(&mut on_mosq).topic, "t/from-midge");
    assert_eq!(next_publish(&mut on_midge).topic, "t/from-midge");
    // No echo: each side saw each message once.
    quiet(&mut on_midge);
    quiet(&mut on_mosq);

    // Retained on midge reaches mosquitto as retained (Retain As Published for
    // bridges), so a late subscriber there gets it.
    pub_midge.publish("t/kept", b"k", QoS::AtLeastOnce, true, 3);
    assert_eq!(next_publish(&mut on_mosq).topic, "t/kept");
    let mut late = Client::connect_v(remote.port, ProtocolVersion::V311, "q-late");
    late.subscribe("t/kept", QoS::AtLeastOnce);
    let p = next_publish(&mut late);
    assert_eq!((p.payload, p.retain), (&b"k"[..], true));
}

/// Issue 12 test 3: two midges, one bridged to the other with `topic # both 1`
/// (3.1.1 with try_private, and v5 with No Local): each message arrives once on
/// each side, never ping-pongs.
fn midge_both_ways(version: ProtocolVersion) {
    let b = BrokerProcess::start("");
    let a = BrokerProcess::start(&section(
        "ab",
        b.port,
        &format!(
            "topic # both 1\nbridge_protocol_version {}\n",
            version_name(version)
        ),
    ));
    a.wait_log("Bridge ab: connected");
    b.wait_log("Received SUBSCRIBE from ab");
    b.ping_log();

    let mut sub_a = Client::connect_v(a.port, ProtocolVersion::V5, "sub-a");
    sub_a.subscribe("x/#", QoS::AtLeastOnce);
    let mut sub_b = Client::connect_v(b.port, ProtocolVersion::V5, "sub-b");
    sub_b.subscribe("x/#", QoS::AtLeastOnce);
    let mut pub_a = Client::connect_v(a.port, ProtocolVersion::V311, "pub-a");
    let mut pub_b = Client::connect_v(b.port, ProtocolVersion::V311, "pub-b");
    for i in 0..5u16 {
        pub_a.publish(
            "x/a",
            format!("a{i}").as_bytes(),
            QoS::AtLeastOnce,
            false,
            1 + i,
        );
        pub_b.publish(
            "x/b",
            format!("b{i}").as_bytes(),
            QoS::AtLeastOnce,
            false,
            1 + i,
        );
    }
    for sub in [&mut sub_a, &mut sub_b] {
        let mut got: Vec<String> = (0..10)
            .map(|_| String::from_utf8_lossy(next_publish(sub).payload).into_owned())
            .collect();
        got.sort();
        let want: Vec<String> = (0..5)
            .map(|i| format!("a{i}"))
            .chain((0..5).map(|i| format!("b{i}")))
            .collect();
        assert_eq!(got, want);
        quiet(sub);
    }
}

#[test]
fn midge_to_midge_both_ways_v311() {
    midge_both_ways(ProtocolVersion::V311);
}

#[test]
fn midge_to_midge_both_ways_v5() {
    midge_both_ways(ProtocolVersion::V5);
}

/// Issue 12 test 4: the remote is down when midge starts. Messages published
/// meanwhile queue in the bridge's session; when the remote comes up the bridge
/// connects within its back-off window (no restart of midge) and delivers
/// them. The failure is logged once, not once per retry.
#[test]
fn remote_down_at_start() {
    let port = free_port();
    let midge = BrokerProcess::start(&section("late", port, "topic q/# out 1\n"));
    midge.wait_log("Bridge late: cannot connect");
    let mut publisher = Client::connect_v(midge.port, ProtocolVersion::V311, "early-pub");
    for i in 0..3u16 {
        publisher.publish(
            "q/early",
            format!("e{i}").as_bytes(),
            QoS::AtLeastOnce,
            false,
            1 + i,
        );
    }
    let dir = temp_dir("mosquitto-late");
    let remote = Mosquitto::start_on(port, "persistence false\n", dir);
    let mut sub = Client::connect_v(remote.port, ProtocolVersion::V311, "late-sub");
    sub.subscribe("q/#", QoS::AtLeastOnce);
    // restart_timeout 1: connected within a couple of seconds of the remote.
    midge.wait_log("Bridge late: connected");
    // The queued messages were sent when the bridge connected, perhaps before
    // `late-sub` subscribed; publish one more to know the link carries.
    publisher.publish("q/now", b"n", QoS::AtLeastOnce, false, 9);
    let mut got = Vec::new();
    loop {
        let p = next_publish(&mut sub);
        got.push(p.topic.to_string());
        if p.topic == "q/now" {
            break;
        }
    }
    // mosquitto logs in order: once the reader has seen `q/now`, the earlier
    // lines are in too.
    remote.wait_log("'q/now'");
    let early = remote
        .log_text()
        .lines()
        .filter(|l| l.contains("Received PUBLISH from late") && l.contains("'q/early'"))
        .count();
    assert_eq!(
        early, 3,
        "the three messages queued before the remote was up"
    );
    let log = midge.log_text();
    assert_eq!(
        log.matches("cannot connect").count(),
        1,
        "one log line per failure reason, not per retry:\n{log}"
    );
}

/// Issue 12 test 5: QoS 1 and QoS 2 published locally at a steady rate while
/// the remote is stopped for a while and started again. Every message midge
/// acknowledged reaches the remote: zero loss, and zero duplicates of QoS 2
/// messages, counted message by message.
#[test]
fn outage_loses_nothing_and_duplicates_no_qos2() {
    const N: usize = 600;
    let mut remote =
        Mosquitto::start_persistent("max_queued_messages 0\nmax_inflight_messages 0\n");
    let port = remote.port;
    // The counting subscriber: a persistent session that is offline during the
    // test, so the remote queues everything for it.
    let counter = remote.counting_session("counter", "load/#");

    let midge = BrokerProcess::start(&section("out", port, "topic load/# out 2\n"));
    midge.wait_log("Bridge out: connected");

    let (progress_tx, progress_rx) = std::sync::mpsc::channel();
    let midge_port = midge.port;
    let publisher = std::thread::spawn(move || {
        let mut p = Client::connect_v(midge_port, ProtocolVersion::V311, "steady");
        for i in 0..N {
            let qos = if i % 2 == 0 {
                QoS::AtLeastOnce
            } else {
                QoS::ExactlyOnce
            };
            // Acknowledged by midge (PUBACK / PUBCOMP) before the next one.
            p.publish(
                "load/m",
                format!("{i}").as_bytes(),
                qos,
                false,
                1 + (i % 60_000) as u16,
            );
            let _ = progress_tx.send(i);
            // Pacing, not synchronisation: a steady rate across the outage.
            std::thread::sleep(Duration::from_millis(3));
        }
    });
    let wait_for = |n: usize| loop {
        let i = progress_rx
            .recv_timeout(TIMEOUT * 4)
            .expect("publisher progress");
        if i >= n {
            break;
        }
    };
    wait_for(N / 4);
    remote.stop();
    wait_for(3 * N / 4);
    let remote = remote.restart();
    publisher.join().expect("publisher");
    // The bridge is back (its second connection).
    let deadline = std::time::Instant::now() + TIMEOUT * 2;
    while midge.log_text().matches("Bridge out: connected").count() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "bridge did not reconnect"
        );
        midge.ping_log();
    }

    let (mut c, (_, present)) = Client::connect_with(remote.port, &counter);
    assert!(
        present,
        "the counting session survived the remote's restart"
    );
    let seen = count_numbered(&mut c, N);
    assert!(
        midge.log_text().contains("Bridge out: connection to"),
        "the link was not interrupted"
    );
    let dup1 = (0..N).filter(|i| i % 2 == 0 && seen[*i] > 1).count();
    eprintln!("outage: {N} messages, all delivered; QoS 1 duplicates {dup1}");
    let dup2: Vec<usize> = (0..N).filter(|i| i % 2 == 1 && seen[*i] > 1).collect();
    assert!(dup2.is_empty(), "QoS 2 messages delivered twice: {dup2:?}");
}

/// Issue 12 test 10: bad bridge lines stop `--test-config` (and start-up) with
/// the file, the line and the reason.
#[test]
fn bad_bridge_config_lines_name_file_and_line() {
    let dir = temp_dir("bridge-conf");
    let conf = dir.join("bad.conf");
    let cases: &[(&str, usize, &str)] = &[
        ("address 127.0.0.1\n", 1, "must follow a `connection` line"),
        ("connection a\naddress h:99999\n", 2, "bad port"),
        (
            "connection a\naddress h\ntopic x sideways\n",
            3,
            "in, out or both",
        ),
        (
            "connection a\naddress h\ntopic x in 3\n",
            3,
            "qos must be 0, 1 or 2",
        ),
        (
            "connection a\naddress h\ntopic a/#/b\n",
            3,
            "not a valid topic filter",
        ),
        (
            "connection a\naddress h\ntopic x in 1 l/#\n",
            3,
            "both a local and a remote prefix",
        ),
        (
            "connection a\naddress h\ntopic \"\" in 1 \"\" r/\n",
            3,
            "needs both a local and a remote prefix",
        ),
        (
            "connection a\naddress h\nbridge_protocol_version mqttv6\n",
            3,
            "mqttv31, mqttv311 or mqttv50",
        ),
        (
            "connection a\naddress h\nrestart_timeout 10 5\n",
            3,
            "cap is below its base",
        ),
        (
            "connection a\naddress h\nstart_type sometimes\n",
            3,
            "automatic, lazy or once",
        ),
        (
            "connection a\naddress h\ntry_private maybe\n",
            3,
            "true or false",
        ),
        (
            "connection a\naddress h\nidle_timeout 0\n",
            3,
            "at least 1 second",
        ),
        (
            "connection a\naddress h\nstart_type lazy\nlocal_cleansession true\n",
            1,
            "needs a persistent local session",
        ),
        // The remote client id is a level of the bridge's `$SYS` topics.
        (
            "connection a\naddress h\nremote_clientid edge+1\n",
            3,
            "contains a wildcard",
        ),
        ("connection site#\naddress h\n", 1, "set `remote_clientid`"),
        (
            "connection a\naddress h\nconnection a\n",
            3,
            "defined twice",
        ),
        (
            "listener 1883\n\nconnection a\ntopic # out\n",
            3,
            "has no `address`",
        ),
        (
            "connection a\naddress h\nbridge_certfile /c.pem\nbridge_cafile /ca.pem\n",
            1,
            "go together",
        ),
        (
            "connection a\naddress h\nbridge_psk 0x1f\n",
            3,
            "`bridge_psk` expects the key in hexadecimal",
        ),
        (
            "connection a\naddress h\nbridge_identity edge\n",
            1,
            "`bridge_identity` and `bridge_psk` go together",
        ),
        (
            "connection a\naddress h\nbridge_identity e\nbridge_psk 00ff\nbridge_cafile /ca.pem\n",
            1,
            "cannot both be used on one bridge",
        ),
    ];
    for (text, line, reason) in cases {
        std::fs::write(&conf, text).expect("write");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_midge"))
            .arg("-c")
            .arg(&conf)
            .arg("--test-config")
            .output()
            .expect("run midge");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{text:?} accepted");
        let at = format!("{}:{line}: ", conf.display());
        assert!(err.contains(&at) && err.contains(reason), "{text:?}: {err}");
    }
    std::fs::write(
        &conf,
        "listener 1883\nconnection a\naddress h:1884 h2\ntopic # both 2 \"\" up/\n\
         connection b\naddress h:8884\nbridge_identity edge\nbridge_psk 00ff\n",
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_midge"))
        .arg("-c")
        .arg(&conf)
        .arg("--test-config")
        .output()
        .expect("run midge");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA file that is not a certificate stops start-up with a clear message
/// instead of a bridge that silently never connects (mosquitto #2130).
#[test]
fn bad_bridge_ca_stops_start_up() {
    let dir = temp_dir("bridge-ca");
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, "not a certificate\n").expect("write");
    let conf = dir.join("midge.conf");
    let port = free_port();
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nconnection tls\naddress 127.0.0.1:1\nbridge_cafile {}\n",
            ca.display()
        ),
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_midge"))
        .arg("-c")
        .arg(&conf)
        .output()
        .expect("run midge");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("bridge tls") && err.contains("no PEM certificate"),
        "{err}"
    );
}

/// Issue 12 test 6: with `persistence true`, messages acknowledged while the
/// uplink is down survive `kill -9` of midge and reach the remote after the
/// restart: every one, QoS 2 once.
#[test]
fn outage_and_kill_9_keep_every_acknowledged_message() {
    const N: usize = 200;
    let mut remote = Mosquitto::start_persistent("max_queued_messages 0\n");
    let rport = remote.port;
    let counter = remote.counting_session("counter9", "sf/#");
    remote.stop();

    let pdir = temp_dir("midge-kill9");
    let port = free_port();
    let conf = format!(
        "listener {port} 127.0.0.1\npersistence true\npersistence_location {}\n{}",
        pdir.display(),
        section("sf", rport, "topic sf/# out 2\n")
    );
    let midge = BrokerProcess::start_with_config(port, &conf, &[]);
    midge.wait_log("Bridge sf: cannot connect");
    let mut p = Client::connect_v(port, ProtocolVersion::V311, "sf-pub");
    for i in 0..N {
        let qos = if i % 2 == 0 {
            QoS::AtLeastOnce
        } else {
            QoS::ExactlyOnce
        };
        p.publish("sf/m", format!("{i}").as_bytes(), qos, false, 1 + i as u16);
    }
    // kill -9: no shutdown path runs.
    drop(p);
    drop(midge);
    let midge = BrokerProcess::start_with_config(port, &conf, &[]);
    let _remote = remote.restart();
    midge.wait_log("Bridge sf: connected");
    let (mut c, (_, present)) = Client::connect_with(rport, &counter);
    assert!(present);
    let seen = count_numbered(&mut c, N);
    let dup2: Vec<usize> = (0..N).filter(|i| i % 2 == 1 && seen[*i] > 1).collect();
    assert!(dup2.is_empty(), "QoS 2 messages delivered twice: {dup2:?}");
}

/// Issue 12 test 7: the first address is dead, the second alive: the bridge
/// connects to the second without waiting out its back-off; with `round_robin`
/// a lost link moves on to the next address.
#[test]
fn address_failover_and_round_robin() {
    let dead = free_port();
    let mut a = Mosquitto::start("");
    let b = Mosquitto::start("");
    let conf = format!(
        "connection f\naddress 127.0.0.1:{dead} 127.0.0.1:{} 127.0.0.1:{}\nremote_clientid f\n\
         restart_timeout 30\nround_robin true\ntopic t/# out 1\n",
        a.port, b.port
    );
    let midge = BrokerProcess::start(&conf);
    // restart_timeout 30: connecting within TIMEOUT means no back-off between
    // addresses of one round.
    midge.wait_log(&format!("Bridge f: connected to 127.0.0.1:{}", a.port));
    a.kill();
    midge.wait_log(&format!("Bridge f: connected to 127.0.0.1:{}", b.port));
    let mut sub = Client::connect_v(b.port, ProtocolVersion::V311, "fsub");
    sub.subscribe("t/#", QoS::AtLeastOnce);
    let mut p = Client::connect_v(midge.port, ProtocolVersion::V311, "fpub");
    p.publish("t/x", b"via b", QoS::AtLeastOnce, false, 1);
    assert_eq!(next_publish(&mut sub).payload, b"via b");
}

/// Issue 12 test 9: a bridge whose address does not resolve keeps retrying
/// without slowing local clients: name resolution runs off the loop thread.
#[test]
fn unresolvable_address_does_not_slow_local_traffic() {
    let midge = BrokerProcess::start(
        "connection dns\naddress no-such-host.invalid:1883\nremote_clientid dns\nrestart_timeout 1\ntopic # out 1\n",
    );
    midge.wait_log("Bridge dns: connecting to no-such-host.invalid:1883");
    let mut sub = Client::connect_v(midge.port, ProtocolVersion::V311, "rtt-sub");
    sub.subscribe("rtt", QoS::AtMostOnce);
    let mut p = Client::connect_v(midge.port, ProtocolVersion::V311, "rtt-pub");
    let mut rtts = Vec::new();
    let start = std::time::Instant::now();
    // Long enough to span several retries (restart_timeout 1).
    while start.elapsed() < Duration::from_millis(2500) {
        let t = std::time::Instant::now();
        p.publish(
            "rtt",
            format!("{}", rtts.len()).as_bytes(),
            QoS::AtMostOnce,
            false,
            0,
        );
        let _ = next_publish(&mut sub);
        rtts.push(t.elapsed());
    }
    rtts.sort();
    let p99 = rtts[rtts.len() * 99 / 100];
    let worst = rtts[rtts.len() - 1];
    eprintln!(
        "dns: {} local round trips in 2.5 s while the bridge retries: median {:?}, p99 {p99:?}, worst {worst:?}",
        rtts.len(),
        rtts[rtts.len() / 2]
    );
    // A getaddrinfo on the loop thread would stall round trips for the whole
    // lookup (seconds with a dead DNS server), once per retry.
    assert!(
        p99 < Duration::from_millis(50),
        "p99 local round trip {p99:?}"
    );
    assert!(
        worst < Duration::from_secs(1),
        "worst local round trip {worst:?}"
    );
    let log = midge.log_text();
    assert!(log.contains("Bridge dns: connecting"), "{log}");
}

/// A mosquitto with a certificate TLS listener (a CA, a server and a client
/// certificate generated in `pki`) and `extra` lines for it; its TLS port.
fn certificate_listener(pki: &std::path::Path, extra: &str) -> (Mosquitto, u16) {
    common::pki::generate(pki, "edge-bridge");
    let p = |f: &str| pki.join(f).display().to_string();
    let tls_port = free_port();
    let remote = Mosquitto::start(&format!(
        "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n{extra}",
        p("ca.crt"),
        p("server.crt"),
        p("server.key")
    ));
    (remote, tls_port)
}

/// Issue 12 test 8: a TLS bridge to mosquitto's TLS listener. The CA that
/// signed the server works, with a client certificate the remote requires;
/// another CA is refused with a clear log line and no plain-text fallback.
#[test]
fn tls_bridge_to_mosquitto() {
    let pki = temp_dir("bridge-pki");
    let (remote, tls_port) = certificate_listener(&pki, "require_certificate true\n");
    let p = |f: &str| pki.join(f).display().to_string();
    let tls_lines = |ca: &str| {
        format!(
            "bridge_cafile {}\nbridge_certfile {}\nbridge_keyfile {}\ntopic tls/# out 1\n",
            p(ca),
            p("client.crt"),
            p("client.key")
        )
    };
    let good = BrokerProcess::start(&section("secure", tls_port, &tls_lines("ca.crt")));
    good.wait_log("Bridge secure: connected");
    let mut sub = Client::connect_v(remote.port, ProtocolVersion::V311, "tls-sub");
    sub.subscribe("tls/#", QoS::AtLeastOnce);
    let mut publisher = Client::connect_v(good.port, ProtocolVersion::V311, "tls-pub");
    publisher.publish("tls/x", b"over tls", QoS::AtLeastOnce, false, 1);
    assert_eq!(next_publish(&mut sub).payload, b"over tls");

    let bad = BrokerProcess::start(&section("wrongca", tls_port, &tls_lines("other-ca.crt")));
    let line = bad.wait_log("Bridge wrongca: cannot connect");
    assert!(
        line.contains("TLS") && line.contains("certificate verify failed"),
        "{line}"
    );
    assert!(!bad.log_text().contains("Bridge wrongca: connected"));
}

/// TLS-PSK bridges (`bridge_identity` + `bridge_psk`, mosquitto's directives
/// and key format) to mosquitto's PSK listener: the right key forwards; a wrong
/// key is refused with a clear log line; a remote that offers a certificate
/// instead of taking the key is refused too (no CA is configured, and a PSK
/// bridge must not fall back to trusting one).
#[test]
fn tls_psk_bridge_to_mosquitto() {
    const KEY: &str = "6f1c0e9b7d2a4f8a3e5c8b1d0a9f7e6c";
    let dir = temp_dir("bridge-psk");
    let psk_file = dir.join("psk");
    std::fs::write(&psk_file, format!("edge-7:{KEY}\n")).expect("write psk file");
    let psk_port = free_port();
    let remote = Mosquitto::start(&format!(
        "listener {psk_port} 127.0.0.1\npsk_hint cloud\npsk_file {}\n",
        psk_file.display()
    ));
    let lines =
        |key: &str| format!("bridge_identity edge-7\nbridge_psk {key}\ntopic psk/# out 1\n");
    let good = BrokerProcess::start(&section("pskgood", psk_port, &lines(KEY)));
    good.wait_log("Bridge pskgood: connected");
    let mut sub = Client::connect_v(remote.port, ProtocolVersion::V311, "psk-sub");
    sub.subscribe("psk/#", QoS::AtLeastOnce);
    let mut publisher = Client::connect_v(good.port, ProtocolVersion::V311, "psk-pub");
    publisher.publish("psk/x", b"over tls-psk", QoS::AtLeastOnce, false, 1);
    assert_eq!(next_publish(&mut sub).payload, b"over tls-psk");

    let wrong = BrokerProcess::start(&section(
        "pskwrong",
        psk_port,
        &lines("00112233445566778899aabbccddeeff"),
    ));
    let line = wrong.wait_log("Bridge pskwrong: cannot connect");
    assert!(line.contains("TLS"), "{line}");
    assert!(!wrong.log_text().contains("Bridge pskwrong: connected"));

    // A certificate-only TLS listener: TLS 1.3 would authenticate the server
    // by its certificate when it does not take the key.
    let (_certs, cert_port) = certificate_listener(&temp_dir("bridge-psk-pki"), "");
    let fallback = BrokerProcess::start(&section("pskcert", cert_port, &lines(KEY)));
    let line = fallback.wait_log("Bridge pskcert: cannot connect");
    assert!(line.contains("TLS"), "{line}");
    assert!(!fallback.log_text().contains("Bridge pskcert: connected"));
}

/// The bridge's queue obeys `max_queued_messages`: while the remote is down,
/// messages beyond the limit are dropped (the newest, as for any client),
/// logged once, and the ones kept are delivered when the remote comes up.
#[test]
fn bridge_queue_obeys_max_queued_messages() {
    // A persistent subscriber on the remote, registered before midge starts.
    let mut remote = Mosquitto::start_persistent("");
    let port = remote.port;
    let counter = remote.counting_session("lim-sub", "lim/#");
    remote.stop();

    let midge = BrokerProcess::start(&format!(
        "max_queued_messages 5\nmax_inflight_messages 1\n{}",
        section("lim", port, "topic lim/# out 1\n")
    ));
    midge.wait_log("Bridge lim: cannot connect");
    let mut p = Client::connect_v(midge.port, ProtocolVersion::V311, "lim-pub");
    for i in 0..10u16 {
        p.publish(
            "lim/m",
            format!("{i}").as_bytes(),
            QoS::AtLeastOnce,
            false,
            1 + i,
        );
    }
    midge.wait_log("Outgoing messages are being dropped for client local.lim");
    let remote = remote.restart();
    midge.wait_log("Bridge lim: connected");
    let (mut c, _) = Client::connect_with(remote.port, &counter);
    let mut got = Vec::new();
    while let Some(Ok(Packet::Publish(m))) = c.try_recv(Duration::from_millis(1500)) {
        c.ack(&m);
        got.push(String::from_utf8_lossy(m.payload).into_owned());
    }
    // The oldest kept: five queued; one more may have been in flight.
    let want: Vec<String> = (0..got.len()).map(|i| i.to_string()).collect();
    assert_eq!(got, want, "the first messages, in order");
    assert!((5..=6).contains(&got.len()), "kept {got:?}");
}

/// `max_keepalive` is for network clients: the bridge's local side (keep-alive
/// 0, no socket) is not told a Server Keep Alive and then dropped for silence.
#[test]
fn max_keepalive_does_not_drop_the_local_side() {
    let remote = Mosquitto::start("");
    let midge = BrokerProcess::start(&format!(
        "max_keepalive 1\n{}",
        section("ka", remote.port, "topic ka/# out 1\n")
    ));
    midge.wait_log("Bridge ka: connected");
    let mut sub = Client::connect_v(remote.port, ProtocolVersion::V311, "ka-sub");
    sub.subscribe("ka/#", QoS::AtLeastOnce);
    // Silence on the local side for longer than 1.5 x max_keepalive.
    sub.expect_nothing(Duration::from_millis(2000));
    let mut p = Client::connect_v(midge.port, ProtocolVersion::V5, "ka-pub");
    p.publish("ka/x", b"still here", QoS::AtLeastOnce, false, 1);
    assert_eq!(next_publish(&mut sub).payload, b"still here");
    let log = midge.log_text();
    assert!(!log.contains("local.ka has exceeded timeout"), "{log}");
    assert_eq!(log.matches("Bridge ka: connected").count(), 1, "{log}");
}

/// Wait until the retained `$SYS` number on `topic` satisfies `ok` (the tree
/// is refreshed every `sys_interval`, and a changed value is published again);
/// returns it.
fn wait_sys_number(port: u16, topic: &str, ok: impl Fn(u64) -> bool) -> u64 {
    let mut c = Client::connect_v(port, ProtocolVersion::V311, "sys-reader");
    c.subscribe(topic, QoS::AtMostOnce);
    let deadline = std::time::Instant::now() + TIMEOUT * 2;
    loop {
        let p = next_publish(&mut c);
        assert_eq!(p.topic, topic);
        let n: u64 = std::str::from_utf8(p.payload)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{topic}: {:?}", p.payload));
        if ok(n) {
            return n;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{topic} stayed at {n}"
        );
    }
}

/// Messages over the remote's limit are not sent [MQTT-3.2.2-15]: dropped,
/// their local flow completed as if sent (as a server does for its clients,
/// [MQTT-3.1.2-25]) so the queue behind them moves on, counted in `$SYS` and
/// logged once. `remote_extra` configures mosquitto, `bridge_lines` the bridge.
fn oversized_messages_are_dropped(name: &str, remote_extra: &str, bridge_lines: &str) {
    let remote = Mosquitto::start(remote_extra);
    let midge = BrokerProcess::start(&format!(
        "sys_interval 1\n{}",
        section(
            name,
            remote.port,
            &format!("topic big/# out 2\n{bridge_lines}")
        )
    ));
    midge.wait_log(&format!("Bridge {name}: connected"));
    let mut far = Client::connect_v(remote.port, ProtocolVersion::V311, "big-sub");
    far.subscribe("big/#", QoS::ExactlyOnce);
    let mut p = Client::connect_v(midge.port, ProtocolVersion::V311, "big-pub");
    let big = vec![b'x'; 500];
    // Each size class at each QoS, big ones first: none may hold up the next.
    for (i, qos) in ALL_QOS.iter().enumerate() {
        p.publish("big/huge", &big, *qos, false, 1 + i as u16);
        p.publish(
            "big/small",
            format!("s{i}").as_bytes(),
            *qos,
            false,
            10 + i as u16,
        );
    }
    for i in 0..3 {
        let m = next_publish(&mut far);
        assert_eq!(
            (m.topic, m.payload),
            ("big/small", format!("s{i}").as_bytes())
        );
    }
    quiet(&mut far);
    let dropped = format!("$SYS/broker/connection/{name}/messages/dropped/too large");
    assert_eq!(wait_sys_number(midge.port, &dropped, |n| n == 3), 3);
    wait_sys_number(
        midge.port,
        "$SYS/broker/publish/messages/dropped/too large",
        |n| n == 3,
    );
    let log = midge.log_text();
    assert_eq!(
        log.matches("over the remote's limit of 200").count(),
        1,
        "logged once:\n{log}"
    );
    assert_eq!(
        log.matches(&format!("Bridge {name}: connected")).count(),
        1,
        "the link never dropped:\n{log}"
    );
}

/// A v5 remote announcing Maximum Packet Size 200 in its CONNACK (mosquitto's
/// `max_packet_size`, which disconnects a client that sends more).
#[test]
fn messages_over_a_v5_remotes_maximum_packet_size_are_dropped() {
    oversized_messages_are_dropped(
        "mps5",
        "max_packet_size 200\n",
        "bridge_protocol_version mqttv50\n",
    );
}

/// `bridge_max_packet_size` towards a 3.1.1 remote, which announces nothing.
#[test]
fn bridge_max_packet_size_is_enforced_towards_a_v311_remote() {
    oversized_messages_are_dropped("mps3", "", "bridge_max_packet_size 200\n");
}

/// A v5 remote's Receive Maximum (CONNACK) bounds the bridge's in-flight
/// window [MQTT-3.3.4-9], even when the edge's own `max_inflight_messages` is
/// unlimited: midge as the remote with `max_inflight_messages 2` announces 2
/// and disconnects a client with more QoS 2 messages unreleased (0x93,
/// [MQTT-3.3.4-8]). A burst of 50 QoS 2 messages crosses the link without it.
#[test]
fn a_v5_remotes_receive_maximum_bounds_the_window() {
    let remote = BrokerProcess::start("max_inflight_messages 2\n");
    let mut sub = Client::connect_v(remote.port, ProtocolVersion::V5, "rm-sub");
    // QoS 1 here: the bridge's link carries QoS 2 (the remote's limit is on
    // QoS 2 messages awaiting their PUBREL).
    sub.subscribe("t/#", QoS::AtLeastOnce);
    let edge = BrokerProcess::start(&section(
        "rm",
        remote.port,
        "topic t/# out 2\nbridge_protocol_version mqttv50\nmax_inflight_messages 0\n",
    ));
    edge.wait_log("Bridge rm: connected");
    let mut publisher = Client::connect_v(edge.port, ProtocolVersion::V5, "rm-pub");
    // One write: the edge routes all 50 in one turn, so only the window holds
    // them back from the remote.
    let burst: Vec<u8> = (1..=50u16)
        .flat_map(|i| {
            let mut b = Vec::new();
            let payload = format!("m{i}");
            let p = publish("t/x", payload.as_bytes(), QoS::ExactlyOnce, false, i);
            midge::protocol::encode(&Packet::Publish(p), ProtocolVersion::V5, &mut b)
                .expect("encode");
            b
        })
        .collect();
    publisher.send_raw(&burst);
    for i in 1..=50u16 {
        match publisher.recv() {
            Packet::PubRec(r) => assert_eq!(r.packet_id, i),
            other => panic!("expected PUBREC, got {other:?}"),
        }
    }
    for i in 1..=50u16 {
        let p = next_publish(&mut sub);
        assert_eq!(p.payload, format!("m{i}").as_bytes(), "in order, once");
    }
    quiet(&mut sub);
    let log = edge.log_text();
    assert_eq!(
        log.matches("Bridge rm: connected").count(),
        1,
        "the remote never dropped the link:\n{log}"
    );
    assert!(!remote.log_text().contains("Receive Maximum exceeded"));
}

/// QoS 0 messages for a remote that stopped reading are dropped once the
/// backlog is over its bound, logged once, and counted in `$SYS`
/// (`connection/<id>/messages/dropped/backlog` and the broker-wide
/// `publish/messages/dropped/backlog`), read here over MQTT.
#[test]
fn qos0_dropped_towards_a_backed_up_remote_are_counted_in_sys() {
    let remote = Mosquitto::start("");
    let midge = BrokerProcess::start(&format!(
        "sys_interval 1\n{}",
        section("slow", remote.port, "topic q0/# out 0\n")
    ));
    midge.wait_log("Bridge slow: connected");
    wait_sys_number(
        midge.port,
        "$SYS/broker/connection/slow/messages/dropped/backlog",
        |n| n == 0,
    );
    remote.pause();
    let mut p = Client::connect_v(midge.port, ProtocolVersion::V311, "q0-pub");
    // 40 MB: more than the kernel's socket buffers and midge's 8 MB bound.
    let payload = vec![b'z'; 64 * 1024];
    for _ in 0..640 {
        p.publish("q0/x", &payload, QoS::AtMostOnce, false, 0);
    }
    p.ping();
    let n = wait_sys_number(
        midge.port,
        "$SYS/broker/connection/slow/messages/dropped/backlog",
        |n| n > 0,
    );
    let all = wait_sys_number(
        midge.port,
        "$SYS/broker/publish/messages/dropped/backlog",
        |m| m >= n,
    );
    eprintln!("backed-up remote: {n} of 640 QoS 0 messages dropped (broker-wide {all})");
    let log = midge.log_text();
    assert_eq!(
        log.matches("Bridge slow: the remote is not keeping up")
            .count(),
        1,
        "{log}"
    );
    remote.resume();
}

/// `round_robin false` (the default): the first address is down at start, the
/// bridge lands on the second; when the first comes up the bridge moves back
/// to it (mosquitto checks it every 5 s with a TCP connect; so does midge).
/// QoS 1 messages published at a steady rate all along reach one remote or the
/// other: none is lost on the way back.
#[test]
fn round_robin_false_moves_back_to_the_first_address() {
    // The first remote's counting session exists before it goes down, so
    // what is forwarded to it once it is back queues there.
    let mut primary = Mosquitto::start_persistent("max_queued_messages 0\n");
    let pport = primary.port;
    let counter = primary.counting_session("rr-count", "rr/#");
    primary.stop();

    let backup = Mosquitto::start("max_queued_messages 0\n");
    let mut on_backup = Client::connect_v(backup.port, ProtocolVersion::V311, "rr-backup");
    on_backup.subscribe("rr/#", QoS::AtLeastOnce);
    let midge = BrokerProcess::start(&format!(
        "connection rr\naddress 127.0.0.1:{pport} 127.0.0.1:{}\nremote_clientid rr\n\
         restart_timeout 1\ntopic rr/# out 1\n",
        backup.port
    ));
    midge.wait_log(&format!(
        "Bridge rr: connected to 127.0.0.1:{}",
        backup.port
    ));

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (progress_tx, progress_rx) = std::sync::mpsc::channel();
    let midge_port = midge.port;
    let stop2 = std::sync::Arc::clone(&stop);
    let publisher = std::thread::spawn(move || {
        let mut p = Client::connect_v(midge_port, ProtocolVersion::V311, "rr-pub");
        let mut n = 0usize;
        while !stop2.load(std::sync::atomic::Ordering::SeqCst) {
            // Acknowledged by midge before the next one.
            p.publish(
                "rr/m",
                n.to_string().as_bytes(),
                QoS::AtLeastOnce,
                false,
                1 + (n % 60_000) as u16,
            );
            n += 1;
            let _ = progress_tx.send(n);
            // Pacing, not synchronisation: a steady rate across the move.
            std::thread::sleep(Duration::from_millis(5));
        }
        n
    });
    // How many midge has acknowledged so far, as the publisher reports.
    let mut published = 0;
    let mut progress = |wait: Duration| {
        if let Ok(n) = progress_rx.recv_timeout(wait) {
            published = n;
        }
        published
    };
    while progress(TIMEOUT) < 100 {}
    let _primary = primary.restart();
    // The first check comes within 5 s of landing on the backup, then every 5 s.
    let deadline = std::time::Instant::now() + TIMEOUT * 3;
    let back = format!("Bridge rr: connected to 127.0.0.1:{pport}");
    let mut moved_at = 0;
    while !midge.log_text().contains(&back) {
        assert!(
            std::time::Instant::now() < deadline,
            "the bridge did not move back:\n{}",
            midge.log_text()
        );
        moved_at = progress(Duration::from_millis(100));
    }
    assert!(midge.log_text().contains("answers again; moving back"));
    // As many again after the move.
    while progress(TIMEOUT) < moved_at + 100 {}
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let n = publisher.join().expect("publisher");

    let mut seen = vec![0u32; n];
    count_received(&mut on_backup, &mut seen, Duration::from_millis(500));
    let on_backup_count = seen.iter().filter(|s| **s > 0).count();
    let (mut c, (_, present)) = Client::connect_with(pport, &counter);
    assert!(present);
    count_received(&mut c, &mut seen, Duration::from_millis(1500));
    let missing: Vec<usize> = (0..n).filter(|i| seen[*i] == 0).collect();
    eprintln!(
        "round_robin false: {n} messages, {on_backup_count} via the backup, the rest via the first address"
    );
    assert!(on_backup_count > 0 && on_backup_count < n);
    assert!(missing.is_empty(), "lost: {missing:?}");
}

/// `start_type lazy` with mosquitto's meaning: no connection until `threshold`
/// messages are queued for the remote (the 3rd here), then the queue is
/// delivered; after `idle_timeout` seconds without traffic the bridge closes
/// the link (the remote publishes its will, state 0) and waits for the queue
/// again. Twice round.
#[test]
fn lazy_bridge_connects_at_its_threshold_and_stops_when_idle() {
    let remote = Mosquitto::start("");
    let mut far = Client::connect_v(remote.port, ProtocolVersion::V311, "lazy-sub");
    far.subscribe("lz/#", QoS::AtLeastOnce);
    far.subscribe("$SYS/broker/connection/lz/state", QoS::AtLeastOnce);
    let midge = BrokerProcess::start(&section(
        "lz",
        remote.port,
        "start_type lazy\nthreshold 3\nidle_timeout 2\ntopic lz/# out 1\n",
    ));
    let mut p = Client::connect_v(midge.port, ProtocolVersion::V311, "lazy-pub");
    for round in 0..2u16 {
        for i in 0..2u16 {
            let payload = format!("r{round}m{i}");
            p.publish("lz/m", payload.as_bytes(), QoS::AtLeastOnce, false, 1 + i);
        }
        // Two queued, below the threshold: no connection.
        midge.ping_log();
        far.expect_nothing(Duration::from_millis(500));
        assert_eq!(
            midge.log_text().matches("Bridge lz: connected").count(),
            usize::from(round),
            "connected below the threshold"
        );
        p.publish(
            "lz/m",
            format!("r{round}m2").as_bytes(),
            QoS::AtLeastOnce,
            false,
            3,
        );
        let m = next_publish(&mut far);
        assert_eq!(
            (m.topic, m.payload),
            ("$SYS/broker/connection/lz/state", &b"1"[..])
        );
        for i in 0..3 {
            let m = next_publish(&mut far);
            assert_eq!(
                (m.topic, m.payload),
                ("lz/m", format!("r{round}m{i}").as_bytes())
            );
        }
        // 2 s without traffic: the link closes and the remote publishes the
        // bridge's will.
        let m = next_publish(&mut far);
        assert_eq!(
            (m.topic, m.payload),
            ("$SYS/broker/connection/lz/state", &b"0"[..])
        );
        midge.wait_log("Bridge lz: no traffic for 2 s; disconnecting");
    }
}

/// A steady QoS 1 stream well under the link's capacity crosses a bridge to
/// mosquitto without a drop, after the remote stalled for a moment and the
/// in-flight window filled. mosquitto (no subscriber here, as a cloud broker
/// that only stores) sends its PUBACKs with Nagle's algorithm
/// (`set_tcp_nodelay false`, its default): after the first one it holds the
/// rest until our TCP ACK, which rides on our next PUBLISH or waits for the
/// delayed-ACK timer (40 ms on Linux). A full window that waited for a
/// quarter of its slots to free before sending again sent nothing on that
/// first PUBACK, so from the stall on every window cost about 40 ms: 100 in
/// flight drained about 2,300 msg/s, and this stream of 5,000 msg/s
/// overflowed the bridge's queue (drops began at about 5,000 forwarded).
#[test]
fn a_steady_qos1_stream_to_mosquitto_is_not_dropped() {
    const N: usize = 10_000;
    const PER_TICK: usize = 50;
    let remote = Mosquitto::start("");
    let midge = BrokerProcess::start(&format!(
        "sys_interval 1\nmax_inflight_messages 100\n{}",
        section("rate", remote.port, "topic rate/# out 1\n")
    ));
    midge.wait_log("Bridge rate: connected");
    let port = midge.port;
    let publisher = std::thread::spawn(move || {
        let mut p = Client::connect_v(port, ProtocolVersion::V311, "rate-pub");
        let pid = |i: usize| u16::try_from(i + 1).expect("packet id");
        let start = std::time::Instant::now();
        // One write of 50 messages every 10 ms (5,000 msg/s), then their
        // PUBACKs.
        for tick in 0..N / PER_TICK {
            let due = start + Duration::from_millis(10 * tick as u64);
            std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
            let mut batch = Vec::new();
            for i in tick * PER_TICK..(tick + 1) * PER_TICK {
                let payload = i.to_string();
                let m = publish(
                    "rate/m",
                    payload.as_bytes(),
                    QoS::AtLeastOnce,
                    false,
                    pid(i),
                );
                midge::protocol::encode(&Packet::Publish(m), ProtocolVersion::V311, &mut batch)
                    .expect("encode");
            }
            p.send_raw(&batch);
            for i in tick * PER_TICK..(tick + 1) * PER_TICK {
                match p.recv() {
                    Packet::PubAck(a) => assert_eq!(a.packet_id, pid(i)),
                    other => panic!("expected PUBACK, got {other:?}"),
                }
            }
        }
    });
    // The remote stops reading for 100 ms (0.5 s into the stream, by the
    // bridge's counter): the window fills and messages queue behind it.
    wait_sys_number(port, "$SYS/broker/connection/rate/messages/sent", |s| {
        s >= 1000
    });
    remote.pause();
    std::thread::sleep(Duration::from_millis(100));
    remote.resume();
    publisher.join().expect("publisher");
    // Every message forwarded (the bridge's counter), none dropped on the way
    // (its queue holds the default 1,000: 0.2 s of the stream).
    let sent = wait_sys_number(port, "$SYS/broker/connection/rate/messages/sent", |s| {
        s >= N as u64 || midge.log_text().contains("being dropped")
    });
    let log = midge.log_text();
    assert!(
        !log.contains("being dropped"),
        "{sent} of {N} forwarded:\n{log}"
    );
    assert_eq!(sent, N as u64);
}
