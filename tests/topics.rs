//! Wildcard matching and `$` topics, end to end.

mod common;

use common::*;
use midge::protocol::{Packet, QoS};

#[test]
fn wildcard_matching_table() {
    // 4.7.1: '+' matches one level, '#' this level and everything below.
    let b = BrokerProcess::start("");
    let cases: &[(&str, &[&str], &[&str])] = &[
        (
            "sport/tennis/+",
            &["sport/tennis/player1", "sport/tennis/"],
            &["sport/tennis", "sport/tennis/a/b"],
        ),
        (
            "sport/#",
            &["sport", "sport/tennis", "sport/a/b/c"],
            &["sports", "other/sport"],
        ),
        ("+/+", &["/finance", "a/b"], &["a", "a/b/c"]),
        ("/+", &["/finance"], &["finance", "a/b"]),
        ("#", &["a", "a/b", "/"], &["$SYS/x"]),
        ("a//b", &["a//b"], &["a/b", "a/x/b"]),
    ];
    let mut publ = Client::connect(b.port, "tbl-pub");
    for (i, (filter, yes, no)) in cases.iter().enumerate() {
        let mut s = Client::connect(b.port, &format!("tbl-{i}"));
        s.subscribe(filter, QoS::AtMostOnce);
        for t in no.iter().chain(yes.iter()) {
            publ.publish(t, t.as_bytes(), QoS::AtLeastOnce, false, 1);
        }
        for t in yes.iter() {
            let p = s.recv_publish();
            assert_eq!(p.topic, *t, "filter {filter}");
        }
        // Nothing else (the non-matching ones were published first).
        s.ping();
        s.disconnect();
    }
}

#[test]
fn dollar_topics_are_not_matched_by_leading_wildcards() {
    // [MQTT-4.7.2-1] '#' and '+/...' do not match topics beginning with '$'.
    // Without the broker's own $SYS tree, whose retained messages would come
    // first (tests/sys_tree.rs checks that one).
    let b = BrokerProcess::start("sys_interval 0");
    let mut all = Client::connect(b.port, "dollar-all");
    all.subscribe("#", QoS::AtMostOnce);
    all.subscribe("+/info", QoS::AtMostOnce);
    // A `$` topic clients may write ($SYS is the broker's: tests/access.rs).
    let mut sys = Client::connect(b.port, "dollar-sys");
    sys.subscribe("$app/#", QoS::AtMostOnce);
    sys.subscribe("$app/+", QoS::AtMostOnce);
    let mut publ = Client::connect(b.port, "dollar-pub");
    publ.publish("$app/info", b"d", QoS::AtLeastOnce, false, 1);
    publ.publish("plain/info", b"p", QoS::AtLeastOnce, false, 2);
    let p = sys.recv_publish();
    assert_eq!(p.topic, "$app/info");
    sys.ping();
    let p = all.recv_publish();
    assert_eq!(p.topic, "plain/info");
    all.ping();
}

#[test]
fn publish_to_a_wildcard_topic_closes_the_connection() {
    // [MQTT-3.3.2-2] the topic name in PUBLISH must not contain wildcards.
    let b = BrokerProcess::start("");
    let mut c = Client::connect(b.port, "wild-pub");
    c.send(&Packet::Publish(publish(
        "a/+",
        b"x",
        QoS::AtMostOnce,
        false,
        0,
    )));
    c.expect_closed();
    Client::connect(b.port, "still-up").disconnect();
}
