//! Costs a client chooses for everyone (issue 10 items 6, 8, 9): memory the
//! broker holds at a client's request and loop time spent on one client's
//! packets, measured against the real binary.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use midge::auth::PasswordHash;
use midge::protocol::{
    Connect, Packet, Properties, ProtocolVersion, QoS, ReasonCode, Subscribe, SubscriptionOptions,
    Unsubscribe,
};

const V5: ProtocolVersion = ProtocolVersion::V5;

/// A v5 client announcing `alias_max` as its Topic Alias Maximum.
fn connect_with_aliases(port: u16, id: &str, alias_max: u16) -> Client {
    let mut c = Client::open(port, V5);
    c.send(&Packet::Connect(Box::new(Connect {
        version: V5,
        clean_start: true,
        keep_alive: 60,
        properties: Properties {
            topic_alias_maximum: Some(alias_max),
            ..Properties::default()
        },
        client_id: leak_str(id),
        will: None,
        username: None,
        password: None,
    })));
    match c.recv() {
        Packet::ConnAck(a) => assert_eq!(a.reason, ReasonCode::SUCCESS),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    c
}

/// Issue 10 item 6: ten subscribers announcing Topic Alias Maximum 65,535 and
/// 5,000 distinct 1 kB topics held +55 MB for the connections' lifetime (one
/// outbound alias table entry per topic per subscriber). midge's table is capped
/// by midge (32 aliases, 8 KiB of topics per connection; 3.3.2.3.4 lets the
/// server send fewer aliases than the client allows).
#[test]
fn outbound_alias_tables_are_capped_by_the_broker() {
    const SUBSCRIBERS: usize = 10;
    const TOPICS: usize = 5_000;
    const BATCH: usize = 100;
    let b = BrokerProcess::start("");
    let mut subs: Vec<Client> = (0..SUBSCRIBERS)
        .map(|i| {
            let mut c = connect_with_aliases(b.port, &format!("alias-sub-{i}"), u16::MAX);
            c.subscribe("big/#", QoS::AtMostOnce);
            c
        })
        .collect();
    let mut p = Client::connect_v(b.port, V5, "alias-pub");
    p.ping();
    let before = b.rss_kb();
    let pad = "t".repeat(1000);
    let mut aliased = 0;
    for batch in 0..TOPICS / BATCH {
        for i in 0..BATCH {
            let topic = format!("big/{}/{pad}", batch * BATCH + i);
            p.publish(&topic, b"x", QoS::AtMostOnce, false, 0);
        }
        p.ping();
        // Each subscriber reads the batch (well under the 1 MiB QoS 0 drop rule).
        for s in &mut subs {
            for _ in 0..BATCH {
                let m = s.recv_publish();
                aliased += usize::from(m.properties.topic_alias.is_some());
            }
        }
    }
    for s in &mut subs {
        s.ping();
    }
    let grown = b.rss_kb().saturating_sub(before);
    eprintln!("alias tables: RSS +{grown} kB, {aliased} aliases");
    // 32 aliases each (8 KiB of 1 kB topics: 8 fit), not 5,000.
    assert_eq!(aliased, SUBSCRIBERS * 8, "aliases handed out");
    // Before: +55 MB. Allow allocator slack for 50,000 deliveries.
    assert!(grown < 8 * 1024, "RSS grew {grown} kB holding alias tables");
    drop(p);
    drop(subs);
}

/// Issue 10 item 8: one UNSUBSCRIBE of many filters from a client holding many
/// subscriptions searched the client's list once per filter (1.8 MB froze the
/// loop for 1.6 s). A bystander's PINGREQ round trips, measured for as long as
/// the UNSUBSCRIBE is being handled, must not depend on how many subscriptions
/// the client holds: the same 2 MB UNSUBSCRIBE from a client holding 10,000
/// is compared with one from a client holding 10 (which measures decoding and
/// this machine's speed, debug or release, busy or idle).
#[test]
fn big_unsubscribe_does_not_stall_the_loop() {
    let control = worst_ping_during_unsubscribe(10);
    let attack = worst_ping_during_unsubscribe(10_000);
    eprintln!("big UNSUBSCRIBE: worst bystander round trip {attack:?} (holding 10: {control:?})");
    // Before: 724 ms against 30 ms with the release build (linear in the
    // subscriptions held); now the same within noise.
    assert!(
        attack < control * 2 + Duration::from_millis(200),
        "bystander waited {attack:?}, {control:?} when the client held few"
    );
}

/// Worst PINGREQ round trip of a bystander while a client holding `held`
/// subscriptions unsubscribes from 100,000 filters in one packet.
fn worst_ping_during_unsubscribe(held: usize) -> Duration {
    const NAMED: usize = 100_000;
    let b = BrokerProcess::start("max_filters_per_packet 0\nmax_packet_size 0\n");
    let mut attacker = Client::connect_v(b.port, V5, "unsub-attacker");
    let filters: Vec<&'static str> = (0..NAMED)
        .map(|i| leak_str(&format!("f/{i:07}/xxxxxxxx")))
        .collect();
    attacker.send(&Packet::Subscribe(Subscribe {
        packet_id: 1,
        properties: Properties::default(),
        filters: filters[..held]
            .iter()
            .map(|f| (*f, SubscriptionOptions::default()))
            .collect(),
    }));
    match attacker.recv() {
        Packet::SubAck(a) => assert_eq!(a.reasons.len(), held),
        other => panic!("expected SUBACK, got {other:?}"),
    }
    let mut bystander = Client::connect(b.port, "unsub-bystander");
    bystander.ping();
    let done = Arc::new(AtomicBool::new(false));
    let attack = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            attacker.send(&Packet::Unsubscribe(Unsubscribe {
                packet_id: 2,
                properties: Properties::default(),
                filters,
            }));
            let ack = attacker.recv();
            done.store(true, Ordering::SeqCst);
            ack
        })
    };
    let mut worst = Duration::ZERO;
    while !done.load(Ordering::SeqCst) {
        let t = Instant::now();
        bystander.ping();
        worst = worst.max(t.elapsed());
    }
    match attack.join().expect("attacker thread") {
        Packet::UnsubAck(a) => {
            let ok = a
                .reasons
                .iter()
                .filter(|r| **r == ReasonCode::SUCCESS)
                .count();
            assert_eq!((a.reasons.len(), ok), (NAMED, held));
        }
        other => panic!("expected UNSUBACK, got {other:?}"),
    }
    worst
}

/// Issue 10 item 8: PBKDF2 ran on the loop for every CONNECT naming a user, so
/// a flood of CONNECTs for a user whose hash has a high iteration count froze
/// everyone for (flood size x one hash). Now hashing has a budget per 100 ms
/// window (at least one verification) and CONNECTs over it wait on the wheel:
/// a bystander waits at most about one hash, however large the flood.
#[test]
fn connect_flood_against_a_costly_hash_does_not_starve_the_loop() {
    const FLOOD: usize = 20;
    let dir = temp_dir("costly-hash");
    let hash = |pw: &[u8]| PasswordHash::new(pw, 20_000).expect("hash").to_string();
    let file = dir.join("passwd");
    std::fs::write(
        &file,
        format!("victim:{}\nprobe:{}\n", hash(b"right"), hash(b"probe")),
    )
    .expect("write password file");
    let b = BrokerProcess::start(&format!(
        "password_file {}\nallow_anonymous true\n",
        file.display()
    ));
    let mut bystander = Client::connect(b.port, "hash-bystander");
    bystander.ping();
    // One verification, timed through a CONNECT of its own.
    let with_user = |id: &str, user: &str, password: &[u8]| {
        let mut c = Client::open(b.port, ProtocolVersion::V311);
        c.send(&Packet::Connect(Box::new(Connect {
            version: ProtocolVersion::V311,
            clean_start: true,
            keep_alive: 60,
            properties: Properties::default(),
            client_id: leak_str(id),
            will: None,
            username: Some(leak_str(user)),
            password: Some(leak_bytes(password)),
        })));
        c
    };
    let t = Instant::now();
    let mut probe = with_user("probe", "probe", b"probe");
    match probe.recv() {
        Packet::ConnAck(a) => assert_eq!(a.reason, ReasonCode::SUCCESS),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    let one_hash = t.elapsed();
    let mut flood: Vec<Client> = (0..FLOOD)
        .map(|i| with_user(&format!("guess-{i}"), "victim", b"wrong"))
        .collect();
    let done = Arc::new(AtomicBool::new(false));
    let answers = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            // Refused after the bad-password delay, or closed by the connect
            // timeout while waiting its turn (the broker bounds the wait).
            let mut refused = 0;
            for c in &mut flood {
                match c.try_recv(Duration::from_secs(15)) {
                    Some(Ok(Packet::ConnAck(a))) if a.reason != ReasonCode::SUCCESS => refused += 1,
                    Some(Err(_)) => refused += 1,
                    other => panic!("flood CONNECT answered with {other:?}"),
                }
            }
            done.store(true, Ordering::SeqCst);
            refused
        })
    };
    let mut worst = Duration::ZERO;
    while !done.load(Ordering::SeqCst) {
        let t = Instant::now();
        bystander.ping();
        worst = worst.max(t.elapsed());
    }
    assert_eq!(answers.join().expect("flood thread"), FLOOD, "none let in");
    eprintln!("CONNECT flood: one hash {one_hash:?}, worst bystander round trip {worst:?}");
    // Before: the whole flood hashed in one loop turn, ~FLOOD x one hash.
    assert!(
        worst < one_hash * 3 + Duration::from_millis(150),
        "bystander waited {worst:?}; one hash takes {one_hash:?}"
    );
}
