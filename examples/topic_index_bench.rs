//! Publish-time cost of [`SubscriptionIndex::for_each_match`] as the number of
//! subscriptions grows: N devices each subscribed to `devices/<i>/cmd/#`, plus one
//! `devices/+/status` subscriber. Run with
//! `cargo run --release --example topic_index_bench`.

use std::hint::black_box;
use std::time::Instant;

use midge::broker::topic_index::{Subscription, SubscriptionIndex};
use midge::protocol::SubscriptionOptions;

/// Lookups timed per topic kind and N.
const LOOKUPS: usize = 1_000_000;
/// Distinct topics cycled through, generated before timing.
const TOPICS: usize = 1 << 16;

/// xorshift64*: picks device numbers without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n as u64) as usize
    }
}

/// A line of /proc/self/status, e.g. "VmRSS:", in kB.
fn proc_status_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Nanoseconds per publish to the topics in `topics`, and the matches seen.
fn time_lookups(index: &SubscriptionIndex<usize>, topics: &[String]) -> (f64, usize) {
    let mut matched = 0usize;
    let start = Instant::now();
    for topic in topics.iter().cycle().take(LOOKUPS) {
        index.for_each_match(black_box(topic), |_, k, _| {
            matched += 1;
            black_box(k);
        });
    }
    let elapsed = start.elapsed();
    (elapsed.as_nanos() as f64 / LOOKUPS as f64, matched)
}

/// Build the index for `n` devices, time both topic kinds and print one line.
/// Runs in its own process so the RSS figures belong to this N alone.
fn run(n: usize) {
    let subscription = Subscription {
        options: SubscriptionOptions::default(),
        identifier: None,
    };
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let rss_empty = proc_status_kb("VmRSS:").unwrap_or(0);
    let mut index = SubscriptionIndex::new();
    let build = Instant::now();
    let mut filter = String::new();
    for i in 0..n {
        filter.clear();
        filter.push_str("devices/");
        filter.push_str(&i.to_string());
        filter.push_str("/cmd/#");
        index.subscribe(&filter, i, subscription);
    }
    index.subscribe("devices/+/status", n, subscription);
    let build = build.elapsed();
    let rss_index = proc_status_kb("VmRSS:").unwrap_or(0);

    let status: Vec<String> = (0..TOPICS)
        .map(|_| format!("devices/{}/status", rng.below(n)))
        .collect();
    let cmd: Vec<String> = (0..TOPICS)
        .map(|_| format!("devices/{}/cmd/reboot", rng.below(n)))
        .collect();
    // The same shape of work on 16 devices only: what is left once the index's
    // memory is in cache, to tell memory latency from per-subscription work.
    let hot: Vec<String> = (0..TOPICS)
        .map(|_| format!("devices/{}/cmd/reboot", rng.below(n.min(16))))
        .collect();
    let (ns_status, m_status) = time_lookups(&index, &status);
    let (ns_cmd, m_cmd) = time_lookups(&index, &cmd);
    let (ns_hot, _) = time_lookups(&index, &hot);
    println!(
        "N = {n:>7}: devices/<i>/status {ns_status:5.1} ns/publish ({m_status} matches), \
         devices/<i>/cmd/reboot {ns_cmd:5.1} ns/publish ({m_cmd} matches), \
         same on 16 hot devices {ns_hot:5.1} ns; build {:.1} ms; \
         RSS {rss_index} kB after build (index +{} kB), {} kB with topic tables",
        build.as_secs_f64() * 1e3,
        rss_index.saturating_sub(rss_empty),
        proc_status_kb("VmRSS:").unwrap_or(0),
    );
}

fn main() {
    if let Some(n) = std::env::args().nth(1).and_then(|a| a.parse().ok()) {
        run(n);
        return;
    }
    println!(
        "size_of::<Subscription>() = {} bytes; {LOOKUPS} lookups per line",
        std::mem::size_of::<Subscription>()
    );
    let Ok(exe) = std::env::current_exe() else {
        eprintln!("cannot find own executable");
        return;
    };
    for n in [10usize, 1_000, 100_000] {
        match std::process::Command::new(&exe).arg(n.to_string()).status() {
            Ok(status) if status.success() => {}
            other => eprintln!("N = {n}: child failed: {other:?}"),
        }
    }
}
