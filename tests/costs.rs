//! Costs a client chooses for everyone (issue 10 items 6, 8, 9): memory the
//! broker holds at a client's request and loop time spent on one client's
//! packets, measured against the real binary.

mod common;

use common::*;
use midge::protocol::{Connect, Packet, Properties, ProtocolVersion, QoS, ReasonCode};

const V5: ProtocolVersion = ProtocolVersion::V5;

/// A v5 client announcing `alias_max` as its Topic Alias Maximum.
fn connect_with_aliases(port: u16, id: &str, alias_max: u16) -> Client {
    let mut c = Client::open(port, V5);
    c.send(&Packet::Connect(Connect {
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
    }));
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
