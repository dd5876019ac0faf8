//! Memory amplification, as one table: for every hostile pattern, a fresh broker,
//! a bystander pair connected before the attack, the attack, then two checks:
//!
//! - the broker's **peak** RSS growth (VmHWM, so a spike freed before we looked
//!   still counts) stays under `allowance + max_ratio x bytes the attacker sent`;
//! - the bystanders still get a QoS 1 round trip, promptly.
//!
//! Patterns live in `tests/amplification/*.rs`, one module per area, each with a
//! `patterns()` list; `all_patterns()` below gathers them. The README's robustness
//! claims point here: a pattern is a claim that one kind of input costs the
//! broker at most so many bytes per byte received.

mod common;

#[path = "amplification/cost.rs"]
mod cost;
#[path = "amplification/flood.rs"]
mod flood;
#[path = "amplification/preconnect.rs"]
mod preconnect;
#[path = "amplification/retained.rs"]
mod retained;

use std::any::Any;
use std::time::{Duration, Instant};

use common::*;
use midge::protocol::{ProtocolVersion, QoS};

/// What an attack leaves behind: how many bytes it got the broker to accept, and
/// whatever must stay alive (sockets) until the broker's memory is measured.
pub struct Attack {
    /// Bytes written to the broker's sockets (successful writes only).
    pub bytes_sent: u64,
    /// Held until after the measurement: open sockets keep their state alive.
    pub keep: Vec<Box<dyn Any>>,
}

/// One hostile pattern and the bound it must respect.
pub struct Pattern {
    /// Shown in the table and in failures.
    pub name: &'static str,
    /// Extra config lines for the broker under attack.
    pub config: &'static str,
    /// Runs the attack against a broker on `port`.
    pub attack: fn(port: u16) -> Attack,
    /// Peak RSS bytes the broker may gain per byte the attacker sent.
    pub max_ratio: f64,
    /// Fixed allowance on top (allocator slack, a few connections), kB.
    pub allowance_kb: u64,
}

/// Every registered pattern, in table order.
fn all_patterns() -> Vec<Pattern> {
    let mut all = Vec::new();
    all.extend(flood::patterns());
    all.extend(cost::patterns());
    all.extend(retained::patterns());
    all.extend(preconnect::patterns());
    all
}

/// How long the bystanders' round trip may take after an attack. Generous: the
/// machine runs other tests at the same time; a stalled loop takes far longer.
const BYSTANDER_BOUND: Duration = Duration::from_secs(2);

/// One row of the table: the figures a pattern produced.
struct Row {
    name: &'static str,
    bytes_sent: u64,
    growth_kb: u64,
    bound_kb: u64,
    round_trip: Duration,
}

fn run_pattern(p: &Pattern) -> Row {
    let b = BrokerProcess::start(p.config);
    let mut sub = Client::connect_v(b.port, ProtocolVersion::V5, "bystander-sub");
    sub.subscribe("bystander/t", QoS::AtLeastOnce);
    let mut publ = Client::connect_v(b.port, ProtocolVersion::V5, "bystander-pub");
    // One round trip first, so the bystanders' own buffers are in the baseline.
    round_trip(&mut publ, &mut sub, 1);
    let before = b.peak_rss_kb();

    let attack = (p.attack)(b.port);

    let round = round_trip(&mut publ, &mut sub, 2);
    let after = b.peak_rss_kb();
    drop(attack.keep);
    let growth_kb = after.saturating_sub(before);
    let bound_kb = p.allowance_kb + (p.max_ratio * attack.bytes_sent as f64 / 1024.0) as u64;
    Row {
        name: p.name,
        bytes_sent: attack.bytes_sent,
        growth_kb,
        bound_kb,
        round_trip: round,
    }
}

/// Publish one QoS 1 message from `publ` to `sub` and time it until the
/// subscriber has it and the publisher has its PUBACK.
fn round_trip(publ: &mut Client, sub: &mut Client, pid: u16) -> Duration {
    let t0 = Instant::now();
    // Client::publish waits for the PUBACK.
    publ.publish("bystander/t", b"still here", QoS::AtLeastOnce, false, pid);
    let p = sub.recv_publish();
    assert_eq!(p.payload, b"still here");
    t0.elapsed()
}

/// The table: every pattern within its bound, bystanders served. All rows run
/// and print before any failure is reported, so one run shows the whole picture.
#[test]
fn memory_growth_per_hostile_byte_is_bounded() {
    let mut failures = Vec::new();
    eprintln!(
        "{:<48} {:>12} {:>12} {:>12} {:>9}",
        "pattern", "bytes sent", "peak +kB", "bound kB", "rtt ms"
    );
    for p in all_patterns() {
        let row = run_pattern(&p);
        eprintln!(
            "{:<48} {:>12} {:>12} {:>12} {:>9.1}",
            row.name,
            row.bytes_sent,
            row.growth_kb,
            row.bound_kb,
            row.round_trip.as_secs_f64() * 1000.0
        );
        if row.growth_kb > row.bound_kb {
            failures.push(format!(
                "{}: peak RSS grew {} kB for {} bytes sent (bound {} kB)",
                row.name, row.growth_kb, row.bytes_sent, row.bound_kb
            ));
        }
        if row.round_trip > BYSTANDER_BOUND {
            failures.push(format!(
                "{}: bystander round trip took {:?}",
                row.name, row.round_trip
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
