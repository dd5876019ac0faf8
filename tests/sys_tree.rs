//! The `$SYS/broker/...` tree against the real binary: mosquitto's topics and
//! payload formats, refreshed every `sys_interval`, under the read ACLs, not
//! matched by `#`, and absent (with no timer waking the loop) when disabled.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{proc_status_kb, temp_dir, BrokerProcess, Client, TIMEOUT};
use midge::protocol::{Packet, ProtocolVersion, Publish, QoS, Subscribe, SubscriptionOptions};

/// Receive PUBLISH packets until `done` says the collection is complete.
fn collect(
    c: &mut Client,
    mut done: impl FnMut(&HashMap<String, String>) -> bool,
) -> HashMap<String, String> {
    let mut seen = HashMap::new();
    let deadline = Instant::now() + TIMEOUT * 2;
    while !done(&seen) {
        assert!(
            Instant::now() < deadline,
            "timed out; have {:?}",
            seen.keys()
        );
        let p = c.recv_publish();
        seen.insert(p.topic.to_string(), text(&p));
    }
    seen
}

/// One SUBSCRIBE with every filter at QoS 0 (retained messages of a first
/// SUBSCRIBE would otherwise arrive before the SUBACK of a second).
fn subscribe_all(c: &mut Client, filters: &[&str]) {
    c.send(&Packet::Subscribe(Subscribe {
        packet_id: 1,
        properties: Default::default(),
        filters: filters
            .iter()
            .map(|f| (common::leak_str(f), SubscriptionOptions::default()))
            .collect(),
    }));
    match c.recv() {
        Packet::SubAck(a) => assert_eq!(a.reasons.len(), filters.len()),
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

fn text(p: &Publish<'_>) -> String {
    String::from_utf8_lossy(p.payload).into_owned()
}

/// Wait for a refresh after now: an `uptime` delivered live (RETAIN 0), not the
/// retained copy sent on subscribe.
fn next_refresh(c: &mut Client) -> Publish<'static> {
    let deadline = Instant::now() + TIMEOUT * 2;
    loop {
        assert!(Instant::now() < deadline, "no $SYS refresh");
        let p = c.recv_publish();
        if p.topic == "$SYS/broker/uptime" && !p.retain {
            return p;
        }
    }
}

const MOSQUITTO_TOPICS: &[&str] = &[
    "version",
    "uptime",
    "clients/connected",
    "clients/disconnected",
    "clients/expired",
    "clients/maximum",
    "clients/total",
    "messages/received",
    "messages/sent",
    "messages/stored",
    "publish/messages/received",
    "publish/messages/sent",
    "publish/messages/dropped",
    "publish/bytes/received",
    "publish/bytes/sent",
    "bytes/received",
    "bytes/sent",
    "retained messages/count",
    "subscriptions/count",
    "shared_subscriptions/count",
    "store/messages/count",
    "store/messages/bytes",
];

const LOADS: &[&str] = &[
    "messages/received",
    "messages/sent",
    "publish/dropped",
    "publish/received",
    "publish/sent",
    "bytes/received",
    "bytes/sent",
    "sockets",
    "connections",
];

/// Every topic mosquitto 2.0 publishes is there, retained, with mosquitto's
/// payload format; counters move with traffic.
#[test]
fn sys_tree_has_mosquittos_topics_and_formats() {
    let b = BrokerProcess::start("sys_interval 1");
    let mut sub = Client::connect(b.port, "sys-reader");
    subscribe_all(&mut sub, &["marker", "$SYS/#"]);
    let want: Vec<String> =
        MOSQUITTO_TOPICS
            .iter()
            .map(|t| format!("$SYS/broker/{t}"))
            .chain(LOADS.iter().flat_map(|l| {
                ["1min", "5min", "15min"].map(|w| format!("$SYS/broker/load/{l}/{w}"))
            }))
            .collect();
    let seen = collect(&mut sub, |s| want.iter().all(|t| s.contains_key(t)));
    assert_eq!(
        seen["$SYS/broker/version"],
        format!("midge version {}", env!("CARGO_PKG_VERSION"))
    );
    let uptime = &seen["$SYS/broker/uptime"];
    let n = uptime.strip_suffix(" seconds").expect("N seconds");
    assert!(n.parse::<u64>().is_ok(), "uptime {uptime:?}");
    for (topic, value) in &seen {
        if topic.contains("/load/") {
            // "%.2f"
            let (int, frac) = value.split_once('.').expect("two decimals");
            assert!(
                int.parse::<u64>().is_ok() && frac.len() == 2,
                "{topic} {value}"
            );
        } else if topic != "$SYS/broker/version" && topic != "$SYS/broker/uptime" {
            assert!(value.parse::<u64>().is_ok(), "{topic} = {value:?}");
        }
    }

    // Traffic: 3 PUBLISH of 10 payload bytes from a second client, then a
    // 1-byte marker: what `sub` reads after the marker came after the traffic.
    let mut p = Client::connect(b.port, "sys-writer");
    for i in 1..=3 {
        p.publish("data/x", b"0123456789", QoS::AtLeastOnce, false, i);
    }
    p.publish("marker", b"m", QoS::AtMostOnce, false, 0);
    while sub.recv_publish().topic != "marker" {}
    let received: u64 = seen["$SYS/broker/publish/messages/received"]
        .parse()
        .expect("n");
    let bytes: u64 = seen["$SYS/broker/publish/bytes/received"]
        .parse()
        .expect("n");
    next_refresh(&mut sub);
    let after = collect(&mut sub, |s| {
        [
            "publish/bytes/received",
            "clients/connected",
            "bytes/received",
        ]
        .iter()
        .all(|t| s.contains_key(&format!("$SYS/broker/{t}")))
    });
    assert_eq!(
        after["$SYS/broker/publish/messages/received"],
        (received + 4).to_string()
    );
    assert_eq!(
        after["$SYS/broker/publish/bytes/received"],
        (bytes + 31).to_string()
    );
    assert_eq!(after["$SYS/broker/clients/connected"], "2");
    let raw: u64 = after["$SYS/broker/bytes/received"].parse().expect("n");
    assert!(raw > 30, "bytes/received {raw} counts whole packets");
}

/// Only values that changed are published again: a refresh of an idle broker
/// sends the uptime, and not the client count that stayed the same.
#[test]
fn only_changed_values_are_republished() {
    let b = BrokerProcess::start("sys_interval 1");
    let mut sub = Client::connect(b.port, "sys-changes");
    subscribe_all(&mut sub, &["$SYS/broker/clients/#", "$SYS/broker/uptime"]);
    // The first refresh after the subscription publishes the new client
    // count (after its uptime); the second has nothing about clients to say.
    next_refresh(&mut sub);
    next_refresh(&mut sub);
    let mut live = Vec::new();
    let deadline = Instant::now() + TIMEOUT * 2;
    loop {
        assert!(Instant::now() < deadline, "no second refresh");
        let p = sub.recv_publish();
        if p.retain {
            continue;
        }
        if p.topic == "$SYS/broker/uptime" {
            break;
        }
        live.push(p.topic.to_string());
    }
    assert!(
        live.is_empty(),
        "unchanged values published again: {live:?}"
    );
}

/// [MQTT-4.7.2-1] `#` does not match `$SYS/...`: a `#` subscriber sees its own
/// traffic only, though refreshes happen while it is subscribed.
#[test]
fn hash_does_not_match_sys() {
    let b = BrokerProcess::start("sys_interval 1");
    let mut all = Client::connect(b.port, "hash-all");
    all.subscribe("#", QoS::AtMostOnce);
    let mut sys = Client::connect(b.port, "hash-sys");
    sys.subscribe("$SYS/broker/uptime", QoS::AtMostOnce);
    next_refresh(&mut sys);
    // The refresh was routed before this marker: it would arrive first.
    all.publish("marker", b"m", QoS::AtMostOnce, false, 0);
    let p = all.recv_publish();
    assert_eq!(p.topic, "marker");
}

/// `$SYS` is readable subject to the ACL: a user without read access to
/// `$SYS/#` gets nothing, one with it gets the tree.
#[test]
fn sys_is_subject_to_read_acls() {
    let dir = temp_dir("sys-acl");
    let acl = dir.join("acl");
    std::fs::write(
        &acl,
        "user monitor\ntopic read $SYS/#\nuser other\ntopic readwrite marker\ntopic read #\n",
    )
    .expect("acl");
    let b = BrokerProcess::start(&format!("sys_interval 1\nacl_file {}", acl.display()));
    let mut other = login(b.port, "other");
    other.subscribe("$SYS/#", QoS::AtMostOnce);
    other.subscribe("$SYS/broker/uptime", QoS::AtMostOnce);
    other.subscribe("marker", QoS::AtMostOnce);
    let mut monitor = login(b.port, "monitor");
    monitor.subscribe("$SYS/#", QoS::AtMostOnce);
    let seen = collect(&mut monitor, |s| s.contains_key("$SYS/broker/version"));
    assert!(seen["$SYS/broker/version"].starts_with("midge version"));
    next_refresh(&mut monitor);
    // Neither the retained tree nor the refresh reached `other`: its first
    // message is its own marker.
    other.publish("marker", b"m", QoS::AtMostOnce, false, 0);
    assert_eq!(other.recv_publish().topic, "marker");
}

fn login(port: u16, user: &str) -> Client {
    let mut c = Client::open(port, ProtocolVersion::V311);
    c.send(&Packet::Connect(Box::new(midge::protocol::Connect {
        version: ProtocolVersion::V311,
        clean_start: true,
        keep_alive: 60,
        properties: Default::default(),
        client_id: common::leak_str(user),
        will: None,
        username: Some(common::leak_str(user)),
        password: None,
    })));
    match c.recv() {
        Packet::ConnAck(a) => assert_eq!(a.reason.0, 0, "{user} refused"),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    c
}

/// `sys_interval 0`: no `$SYS` messages, and no timer: an idle broker makes no
/// context switch over a second (with `sys_interval 1` it would wake).
#[test]
fn sys_interval_zero_disables_the_tree_and_its_timer() {
    let b = BrokerProcess::start("sys_interval 0");
    let mut c = Client::connect(b.port, "no-sys");
    c.subscribe("$SYS/#", QoS::AtMostOnce);
    c.subscribe("marker", QoS::AtMostOnce);
    c.publish("marker", b"m", QoS::AtMostOnce, false, 0);
    assert_eq!(c.recv_publish().topic, "marker");
    c.disconnect();
    b.ping_log();
    let switches = |b: &BrokerProcess| proc_status_kb(b.pid(), "voluntary_ctxt_switches:");
    // The same window on a broker refreshing every second: the measurement
    // does see a timer that wakes the loop.
    let ticking = BrokerProcess::start("sys_interval 1");
    // Measured idle windows, not synchronisation.
    let (before, ticking_before) = (switches(&b), switches(&ticking));
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(switches(&b), before, "idle broker woke up");
    assert!(switches(&ticking) >= ticking_before + 2);
}

/// With persistence, midge adds the log's size and the queued messages that
/// live on disk only; the tree itself is never logged, so a restart with
/// `sys_interval 0` has no stale `$SYS` copies.
#[test]
fn persistence_figures_and_no_stale_tree_after_restart() {
    let dir = temp_dir("sys-persist");
    let config = |port: u16, interval: u32| {
        format!(
            "listener {port} 127.0.0.1\npersistence true\npersistence_location {}\nsys_interval {interval}\n",
            dir.display()
        )
    };
    let port = common::free_port();
    let mut b = BrokerProcess::start_with_config(port, &config(port, 1), &[]);
    // An offline persistent session subscribed to the uptime at QoS 1: each
    // refresh queues one message for it, on disk.
    let mut o = common::ConnectOptions::new(ProtocolVersion::V311, "keeper");
    o.clean = false;
    let (mut keeper, _) = Client::connect_with(b.port, &o);
    keeper.subscribe("$SYS/broker/uptime", QoS::AtLeastOnce);
    keeper.disconnect();
    let mut m = Client::connect(b.port, "monitor");
    m.subscribe("$SYS/broker/persistence/#", QoS::AtMostOnce);
    let deadline = Instant::now() + TIMEOUT * 2;
    let mut log_bytes = None;
    loop {
        assert!(
            Instant::now() < deadline,
            "no queued count; log {log_bytes:?}"
        );
        let p = m.recv_publish();
        let v = text(&p);
        match p.topic {
            "$SYS/broker/persistence/log/bytes" => log_bytes = v.parse::<u64>().ok(),
            "$SYS/broker/persistence/queued/count" if v != "0" => break,
            _ => {}
        }
    }
    assert!(log_bytes.is_some_and(|n| n > 0), "{log_bytes:?}");
    m.disconnect();
    b.signal("TERM");
    b.wait_exit();

    let port = common::free_port();
    let b = BrokerProcess::start_with_config(port, &config(port, 0), &[]);
    let mut c = Client::connect(b.port, "after");
    subscribe_all(&mut c, &["marker", "$SYS/#"]);
    c.publish("marker", b"m", QoS::AtMostOnce, false, 0);
    assert_eq!(c.recv_publish().topic, "marker", "stale $SYS after restart");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A session kept while its client is away counts in `clients/disconnected`;
/// when it expires it moves to `clients/expired`.
#[test]
fn disconnected_then_expired_clients() {
    let b = BrokerProcess::start("sys_interval 1");
    let mut o = common::ConnectOptions::new(ProtocolVersion::V5, "short-lived");
    o.session_expiry = Some(3);
    let (c, _) = Client::connect_with(b.port, &o);
    c.disconnect();
    let mut m = Client::connect(b.port, "watcher");
    subscribe_all(
        &mut m,
        &[
            "$SYS/broker/clients/disconnected",
            "$SYS/broker/clients/expired",
        ],
    );
    let mut saw_disconnected = false;
    let deadline = Instant::now() + TIMEOUT * 2;
    loop {
        assert!(Instant::now() < deadline, "no expiry counted");
        let p = m.recv_publish();
        let v = text(&p);
        match p.topic {
            "$SYS/broker/clients/disconnected" if v == "1" => saw_disconnected = true,
            "$SYS/broker/clients/expired" if v == "1" => break,
            _ => {}
        }
    }
    assert!(saw_disconnected, "the kept session was never counted");
}

/// `heap/current` and `heap/maximum`, as mosquitto built with memory tracking
/// (Debian's) publishes them, read from glibc's own statistics at each refresh:
/// plausible at start, and growing by what a few MB of retained messages take.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn heap_figures_are_published_and_follow_what_the_broker_holds() {
    let b = BrokerProcess::start("sys_interval 1");
    let mut sub = Client::connect(b.port, "sys-heap");
    subscribe_all(&mut sub, &["$SYS/broker/heap/#"]);
    let heap = |s: &HashMap<String, String>, t: &str| -> u64 {
        s[&format!("$SYS/broker/heap/{t}")]
            .parse()
            .expect("a byte count")
    };
    let both = |s: &HashMap<String, String>| {
        s.contains_key("$SYS/broker/heap/current") && s.contains_key("$SYS/broker/heap/maximum")
    };
    let first = collect(&mut sub, both);
    let before = heap(&first, "current");
    // A broker that has started holds some heap (its buffers, the $SYS tree)
    // but not hundreds of MB.
    assert!(
        (10_000..200_000_000).contains(&before),
        "heap/current {before}"
    );
    assert!(heap(&first, "maximum") >= before);

    // 8 retained messages of 512 KiB: 4 MiB the broker must hold.
    let mut p = Client::connect(b.port, "sys-heap-writer");
    let payload = vec![b'x'; 512 * 1024];
    for i in 0..8u16 {
        p.publish(&format!("big/{i}"), &payload, QoS::AtLeastOnce, true, i + 1);
    }
    // Each value is published when it changes, `maximum` right after
    // `current` in the same refresh.
    let deadline = Instant::now() + TIMEOUT * 2;
    let grown = loop {
        assert!(Instant::now() < deadline, "heap/current did not grow");
        let p = sub.recv_publish();
        if p.topic == "$SYS/broker/heap/current" {
            let current: u64 = text(&p).parse().expect("a byte count");
            if current >= before + 4 * 1024 * 1024 {
                break current;
            }
        }
    };
    let p = sub.recv_publish();
    assert_eq!(p.topic, "$SYS/broker/heap/maximum");
    let maximum: u64 = text(&p).parse().expect("a byte count");
    assert!(maximum >= grown, "maximum {maximum} < current {grown}");
}
