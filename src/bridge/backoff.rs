//! How long a bridge waits before the next connection attempt: mosquitto 2's
//! `restart_timeout base cap`, "decorrelated jitter" (each wait is random between
//! the base and three times the previous wait, never above the cap), or a constant
//! wait when no cap is given. Many gateways losing the same uplink thus spread
//! their reconnects instead of arriving together.

use std::time::Duration;

/// Back-off state of one bridge.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Option<Duration>,
    last: Duration,
    rng: u64,
}

impl Backoff {
    /// `cap: None` = always wait `base`. `seed` makes runs reproducible in tests.
    pub fn new(base: Duration, cap: Option<Duration>, seed: u64) -> Self {
        Backoff {
            base,
            cap,
            last: base,
            rng: seed | 1,
        }
    }

    /// A connection succeeded: the next failure waits from the base again.
    pub fn reset(&mut self) {
        self.last = self.base;
    }

    /// The wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let Some(cap) = self.cap else {
            return self.base;
        };
        let base = self.base.as_millis() as u64;
        let high = (self.last.as_millis() as u64)
            .saturating_mul(3)
            .max(base + 1);
        let ms = base + self.random() % (high - base);
        let d = Duration::from_millis(ms).min(cap);
        self.last = d;
        d
    }

    /// xorshift64*: good enough for spreading retries, no dependency.
    fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_without_cap() {
        let mut b = Backoff::new(Duration::from_secs(3), None, 7);
        for _ in 0..10 {
            assert_eq!(b.next_delay(), Duration::from_secs(3));
        }
    }

    #[test]
    fn jitter_stays_between_base_and_cap_and_spreads() {
        let (base, cap) = (Duration::from_secs(1), Duration::from_secs(30));
        let mut seen = std::collections::HashSet::new();
        for seed in 0..20 {
            let mut b = Backoff::new(base, Some(cap), seed);
            let mut prev = base;
            for _ in 0..50 {
                let d = b.next_delay();
                assert!(d >= base && d <= cap, "{d:?}");
                assert!(d <= prev * 3 || d == cap, "{d:?} after {prev:?}");
                prev = d;
                seen.insert(d);
            }
            b.reset();
            assert!(b.next_delay() < Duration::from_secs(3));
        }
        assert!(seen.len() > 100, "waits are not spread: {}", seen.len());
    }
}
