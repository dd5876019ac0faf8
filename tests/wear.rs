//! Write amplification of the persistence log (SD/eMMC wear on gateways, issue
//! 11): a message for many offline sessions is stored once, a SUBSCRIBE or
//! UNSUBSCRIBE writes one small record per filter, a restart with a backlog
//! needs no RAM for it. `wear_figures` (ignored: `cargo test --release --test
//! wear -- --ignored --nocapture`) prints the before/after figures against the
//! old release binary (`MIDGE_BASELINE`, default /work/baseline/target/release/midge).

mod common;

use std::path::{Path, PathBuf};

use common::*;
use midge::protocol::{Packet, Properties, ProtocolVersion, QoS, Subscribe, SubscriptionOptions};

fn config(port: u16, dir: &Path, extra: &str) -> String {
    format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}\nmax_queued_messages 0\n{extra}\n",
        dir.display()
    )
}

fn start_bin(bin: &Path, dir: &Path, extra: &str) -> BrokerProcess {
    let port = free_port();
    BrokerProcess::start_binary(bin, port, &config(port, dir, extra), &[])
}

/// The binary under test; `MIDGE_TEST_BIN` runs these tests against another
/// (the old release fails every one of them).
fn start(dir: &Path, extra: &str) -> BrokerProcess {
    start_bin(&midge_bin(), dir, extra)
}

fn persistent(id: &str) -> ConnectOptions {
    let mut o = ConnectOptions::new(ProtocolVersion::V311, id);
    o.clean = false;
    o
}

fn log_size(dir: &Path) -> u64 {
    std::fs::metadata(dir.join("midge.db")).map_or(0, |m| m.len())
}

/// Bytes the process caused to be written to storage (`write_bytes` in
/// /proc/PID/io: page-granular, so a sync of a few bytes counts a page).
fn storage_written(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).expect("proc io");
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("write_bytes")
}

/// `n` persistent sessions subscribed to `wear/t`, offline.
fn offline_sessions(port: u16, n: usize) {
    for i in 0..n {
        let (mut c, _) = Client::connect_with(port, &persistent(&format!("wear-{i}")));
        c.subscribe("wear/t", QoS::AtLeastOnce);
        c.disconnect();
    }
}

/// Publish `count` QoS 1 messages of `size` bytes on `wear/t`, each acknowledged.
fn publish_all(port: u16, count: usize, size: usize) {
    let mut p = Client::connect(port, "wear-pub");
    let payload = vec![0x5Au8; size];
    for i in 0..count {
        p.publish("wear/t", &payload, QoS::AtLeastOnce, false, i as u16 + 1);
    }
    p.disconnect();
}

/// Every session comes back and takes its `count` messages.
fn drain_sessions(port: u16, n: usize, count: usize, size: usize) {
    for i in 0..n {
        let (mut c, (_, present)) = Client::connect_with(port, &persistent(&format!("wear-{i}")));
        assert!(present);
        for _ in 0..count {
            assert_eq!(c.recv_publish().payload.len(), size);
        }
        // The acks are processed (and their records committed) before this.
        c.ping();
        c.disconnect();
    }
}

/// A message for 100 offline persistent sessions is written once: the log
/// grows by about one copy, not 100 (before: +10 MB for 100 kB).
#[test]
fn fan_out_to_offline_sessions_stores_the_message_once() {
    const SESSIONS: usize = 100;
    const SIZE: usize = 100_000;
    let dir = temp_dir("wear-fanout");
    let b = start(&dir, "");
    offline_sessions(b.port, SESSIONS);
    let before = log_size(&dir);
    publish_all(b.port, 1, SIZE);
    let grown = log_size(&dir) - before;
    eprintln!(
        "log growth for one {SIZE}-byte message to {SESSIONS} offline sessions: {grown} bytes"
    );
    assert!(
        grown < (SIZE + SESSIONS * 100) as u64,
        "{grown} bytes: the message was written more than once"
    );
    drain_sessions(b.port, SESSIONS, 1, SIZE);
    let _ = std::fs::remove_dir_all(&dir);
}

fn subscribe_packet(filters: &[String], pid: u16) -> Packet<'static> {
    Packet::Subscribe(Subscribe {
        packet_id: pid,
        properties: Properties::default(),
        filters: filters
            .iter()
            .map(|f| {
                (
                    leak_str(f),
                    SubscriptionOptions {
                        qos: QoS::AtLeastOnce,
                        ..Default::default()
                    },
                )
            })
            .collect(),
    })
}

/// A SUBSCRIBE and an UNSUBSCRIBE of a session holding 500 subscriptions each
/// write one small record, not the whole list again (before: ~20 kB each).
#[test]
fn subscription_changes_write_one_record_each() {
    let dir = temp_dir("wear-subs");
    let b = start(&dir, "");
    let (mut c, _) = Client::connect_with(b.port, &persistent("many-subs"));
    let filters: Vec<String> = (0..500)
        .map(|i| format!("wear/sensor/{i:04}/temperature"))
        .collect();
    c.send(&subscribe_packet(&filters, 1));
    match c.recv() {
        Packet::SubAck(a) => assert_eq!(a.reasons.len(), 500),
        other => panic!("{other:?}"),
    }
    let before = log_size(&dir);
    c.subscribe("wear/one/more", QoS::AtLeastOnce);
    let sub = log_size(&dir) - before;
    c.unsubscribe("wear/sensor/0007/temperature", 2);
    let unsub = log_size(&dir) - before - sub;
    eprintln!("log bytes: SUBSCRIBE {sub}, UNSUBSCRIBE {unsub} (session with 500 subscriptions)");
    assert!(sub < 64, "SUBSCRIBE wrote {sub} bytes");
    assert!(unsub < 64, "UNSUBSCRIBE wrote {unsub} bytes");
    c.disconnect();
    // Both survive a restart.
    drop(b);
    let b = start(&dir, "");
    let (mut c, (_, present)) = Client::connect_with(b.port, &persistent("many-subs"));
    assert!(present);
    let mut p = Client::connect(b.port, "wear-pub");
    p.publish(
        "wear/sensor/0007/temperature",
        b"gone",
        QoS::AtLeastOnce,
        false,
        1,
    );
    p.publish("wear/one/more", b"added", QoS::AtLeastOnce, false, 2);
    p.publish(
        "wear/sensor/0008/temperature",
        b"kept",
        QoS::AtLeastOnce,
        false,
        3,
    );
    assert_eq!(c.recv_publish().payload, b"added");
    assert_eq!(c.recv_publish().payload, b"kept");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Restart with a 40 MB backlog: replay streams the log and keeps an index
/// entry per queued message, so the restarted broker's peak RSS stays within
/// a few MB of the running broker's (before: the whole log was read into RAM,
/// then every message decoded: 200 MB peak for 100 MB).
#[test]
fn restart_with_a_backlog_needs_no_ram_for_it() {
    const COUNT: usize = 400;
    const SIZE: usize = 100_000;
    let dir = temp_dir("wear-restart");
    let mut b = start(&dir, "persistence_sync periodic");
    offline_sessions(b.port, 1);
    publish_all(b.port, COUNT, SIZE);
    let running = b.peak_rss_kb();
    b.signal("TERM");
    b.wait_exit();
    assert!(log_size(&dir) > (COUNT * SIZE) as u64);
    let b = start(&dir, "persistence_sync periodic");
    b.wait_log("Restored 0 retained message(s) and 1 session(s)");
    let restarted = b.peak_rss_kb();
    eprintln!(
        "peak RSS with a {} MB backlog: running {running} kB, after a restart {restarted} kB",
        COUNT * SIZE / 1_000_000
    );
    assert!(
        restarted < running + 4 * 1024,
        "restart peak {restarted} kB against {running} kB running"
    );
    // Everything is still there, in order.
    drain_sessions(b.port, 1, COUNT, SIZE);
    let _ = std::fs::remove_dir_all(&dir);
}

/// One fan-out run: (storage bytes written per delivered message, log bytes
/// written at publish time per message, compactions).
fn fan_out_figure(bin: &Path, sessions: usize, count: usize, size: usize) -> (u64, u64, usize) {
    let dir = temp_dir("wear-figure");
    let b = start_bin(bin, &dir, "");
    offline_sessions(b.port, sessions);
    let w0 = storage_written(b.pid());
    let l0 = log_size(&dir);
    publish_all(b.port, count, size);
    let l1 = log_size(&dir);
    drain_sessions(b.port, sessions, count, size);
    let w1 = storage_written(b.pid());
    let compactions = b.log_text().matches("Compacted").count();
    let _ = std::fs::remove_dir_all(&dir);
    let delivered = (sessions * count) as u64;
    (
        (w1 - w0) / delivered,
        l1.saturating_sub(l0) / count as u64,
        compactions,
    )
}

/// One SUBSCRIBE run: (SUBSCRIBE bytes sent, storage bytes written, compactions).
fn subscribe_figure(bin: &Path, n: usize) -> (u64, u64, usize) {
    let dir = temp_dir("wear-subfig");
    let b = start_bin(bin, &dir, "");
    let (mut c, _) = Client::connect_with(b.port, &persistent("subscriber"));
    let w0 = storage_written(b.pid());
    let mut sent = 0u64;
    for chunk in 0..n / 100 {
        for i in 0..100 {
            let f = format!("gateway/site/sensor/{:05}/temperature", chunk * 100 + i);
            sent += 2 + 2 + 2 + f.len() as u64 + 1;
            c.send(&subscribe_packet(&[f], (i + 1) as u16));
        }
        for _ in 0..100 {
            match c.recv() {
                Packet::SubAck(_) => {}
                other => panic!("{other:?}"),
            }
        }
    }
    let w1 = storage_written(b.pid());
    let compactions = b.log_text().matches("Compacted").count();
    let _ = std::fs::remove_dir_all(&dir);
    (sent, w1 - w0, compactions)
}

/// One restart run with `count` queued messages of `size` bytes: (running peak
/// RSS, restarted peak RSS, restarted RSS), kB.
fn restart_figure(bin: &Path, count: usize, size: usize) -> (u64, u64, u64) {
    let dir = temp_dir("wear-rssfig");
    let mut b = start_bin(bin, &dir, "persistence_sync periodic");
    offline_sessions(b.port, 1);
    publish_all(b.port, count, size);
    let running = b.peak_rss_kb();
    b.signal("TERM");
    b.wait_exit();
    let b = start_bin(bin, &dir, "persistence_sync periodic");
    b.wait_log("Restored 0 retained message(s) and 1 session(s)");
    let figures = (running, b.peak_rss_kb(), b.rss_kb());
    let _ = std::fs::remove_dir_all(&dir);
    figures
}

/// Restart peak RSS with a 100 MB backlog, before and after (prints).
#[test]
#[ignore]
fn restart_rss_figures() {
    let old = PathBuf::from(
        std::env::var("MIDGE_BASELINE")
            .unwrap_or_else(|_| "/work/baseline/target/release/midge".into()),
    );
    let new = PathBuf::from(env!("CARGO_BIN_EXE_midge"));
    for (name, bin) in [("before", &old), ("after", &new)] {
        let (running, peak, rss) = restart_figure(bin, 1000, 100_000);
        println!(
            "{name}: 1000 queued 100 kB messages (100 MB): running peak RSS {running} kB; after a restart peak {peak} kB, resident {rss} kB"
        );
    }
}

/// Before/after figures for the README (prints; asserts nothing the tests
/// above do not).
#[test]
#[ignore]
fn wear_figures() {
    let old = PathBuf::from(
        std::env::var("MIDGE_BASELINE")
            .unwrap_or_else(|_| "/work/baseline/target/release/midge".into()),
    );
    let new = PathBuf::from(env!("CARGO_BIN_EXE_midge"));
    for (name, bin) in [("before", &old), ("after", &new)] {
        for size in [100_000, 1_000] {
            let (per, log, comp) = fan_out_figure(bin, 100, 10, size);
            println!(
                "{name}: fan-out of {size}-byte messages to 100 offline sessions: {per} bytes written to storage per delivered message; log +{log} bytes per published message; {comp} compactions"
            );
        }
        let (sent, written, comp) = subscribe_figure(bin, 2000);
        println!(
            "{name}: 2000 SUBSCRIBEs ({sent} bytes) to one persistent session: {written} bytes written to storage, {comp} compactions"
        );
    }
}
