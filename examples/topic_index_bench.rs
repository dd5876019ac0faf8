//! Publish-time cost of [`SubscriptionIndex::for_each_match`] as the number of
//! subscriptions grows: N devices each subscribed to `devices/<i>/cmd/#`, plus one
//! `devices/+/status` subscriber; then the adversarial rows: the same benign
//! publishes with 10,000 distinct hostile filter shapes subscribed (one client
//! can hold that many within `max_subscriptions_per_client`). Run with
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
    time_lookups_n(index, topics, LOOKUPS)
}

/// [`time_lookups`] with `lookups` publishes.
fn time_lookups_n(
    index: &SubscriptionIndex<usize>,
    topics: &[String],
    lookups: usize,
) -> (f64, usize) {
    let mut matched = 0usize;
    let start = Instant::now();
    for topic in topics.iter().cycle().take(lookups) {
        index.for_each_match(black_box(topic), |_, k, _| {
            matched += 1;
            black_box(k);
        });
    }
    let elapsed = start.elapsed();
    (elapsed.as_nanos() as f64 / lookups as f64, matched)
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

/// Distinct hostile shapes in the adversarial rows.
const HOSTILE: usize = 10_000;
/// 190-level publishes timed per adversarial row (each may take milliseconds).
const DEEP_LOOKUPS: usize = 1_000;
/// Interleaved repetitions of the adversarial rows; the best of each is shown.
const ROUNDS: usize = 3;

/// Hostile filter `i`: 8 to 197 levels, a literal first level, then `+` or a
/// literal on each of the next six levels by the bits of `i / 190 + 1`, every
/// third one ending in `#`: 10,000 distinct shapes of every depth, which is what
/// one client can hold, none of which matches the benign topics.
fn hostile_filter(i: usize) -> String {
    let levels = 8 + i % 190;
    let pattern = i / 190 + 1;
    let mut f: Vec<&str> = (0..levels)
        .map(|j| {
            if (1..=6).contains(&j) && pattern >> (j - 1) & 1 == 1 {
                "+"
            } else {
                "x"
            }
        })
        .collect();
    if (i / 190) % 3 == 2 {
        f.push("#");
    }
    f.join("/")
}

/// Hostile filter `i` when the attacker aims every shape at one depth: 190
/// levels, `+` on the levels given by the bits of `i + 1`.
fn hostile_deep_filter(i: usize) -> String {
    let pattern = i + 1;
    (0..190)
        .map(|j| {
            if j < 20 && pattern >> j & 1 == 1 {
                "+"
            } else {
                "x"
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The adversarial rows: benign publish cost without and with hostile shapes.
fn adversarial() {
    let subscription = Subscription {
        options: SubscriptionOptions::default(),
        identifier: None,
    };
    let n = 1_000;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut index = SubscriptionIndex::new();
    for i in 0..n {
        index.subscribe(&format!("devices/{i}/cmd/#"), i, subscription);
    }
    index.subscribe("devices/+/status", n, subscription);
    index.subscribe(&("+/".repeat(189) + "x"), n + 1, subscription);
    let status: Vec<String> = (0..TOPICS)
        .map(|_| format!("devices/{}/status", rng.below(n)))
        .collect();
    // A 190-level topic matched by the benign `+/+/.../x` filter.
    let deep: Vec<String> = (0..64)
        .map(|i| format!("{}{i}/x", "d/".repeat(188)))
        .collect();
    // The machine may be shared: interleave the cases and keep each one's best.
    let mut best = [f64::MAX; 6];
    let mut keep = |i: usize, ns: f64| best[i] = best[i].min(ns);
    let attacker = n + 2;
    let mut shown = String::new();
    for _ in 0..ROUNDS {
        let (ns, m0) = time_lookups_n(&index, &status, LOOKUPS / 10);
        keep(0, ns);
        let (ns, d0) = time_lookups_n(&index, &deep, DEEP_LOOKUPS);
        keep(1, ns);
        for i in 0..HOSTILE {
            index.subscribe(&hostile_filter(i), attacker, subscription);
        }
        shown = format!("{index:?}");
        let (ns, m1) = time_lookups_n(&index, &status, LOOKUPS / 10);
        keep(2, ns);
        let (ns, d1) = time_lookups_n(&index, &deep, DEEP_LOOKUPS);
        keep(3, ns);
        assert_eq!((m0, d0), (m1, d1), "hostile filters must not match");
        for i in 0..HOSTILE {
            index.unsubscribe(&hostile_filter(i), attacker);
            index.subscribe(&hostile_deep_filter(i), attacker, subscription);
        }
        let (ns, _) = time_lookups_n(&index, &status, LOOKUPS / 10);
        keep(4, ns);
        let (ns, _) = time_lookups_n(&index, &deep, DEEP_LOOKUPS / 10);
        keep(5, ns);
        for i in 0..HOSTILE {
            index.unsubscribe(&hostile_deep_filter(i), attacker);
        }
    }
    let [base_status, base_deep, hostile_status, hostile_deep, aimed_status, aimed_deep] = best;
    println!(
        "adversarial, {HOSTILE} hostile shapes of 8-197 levels ({shown}): devices/<i>/status \
         {base_status:.1} -> {hostile_status:.1} ns/publish ({:.2}x); 190-level publish \
         {:.2} -> {:.2} us ({:.2}x)",
        hostile_status / base_status,
        base_deep / 1e3,
        hostile_deep / 1e3,
        hostile_deep / base_deep,
    );
    println!(
        "adversarial, {HOSTILE} hostile shapes all of 190 levels: devices/<i>/status \
         {base_status:.1} -> {aimed_status:.1} ns/publish ({:.2}x); 190-level publish \
         {:.2} -> {:.2} us ({:.2}x)",
        aimed_status / base_status,
        base_deep / 1e3,
        aimed_deep / 1e3,
        aimed_deep / base_deep,
    );
}

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("adversarial") => return adversarial(),
        Some(n) => {
            if let Ok(n) = n.parse() {
                run(n);
            }
            return;
        }
        None => {}
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
    match std::process::Command::new(&exe).arg("adversarial").status() {
        Ok(status) if status.success() => {}
        other => eprintln!("adversarial: child failed: {other:?}"),
    }
}
