//! Session deadlines: when a disconnected session expires (3.1.2.11.2) and when
//! its delayed will is due (3.1.3.2.2). Each session has at most one pending
//! deadline of each kind here, replaced when it disconnects again and dropped
//! with the session; the server's wheel holds only a few timers for all of them
//! together. It never decides what a deadline does: the broker does.
//!
//! # Why not one wheel timer per disconnect
//!
//! The wheel never removes a timer, so arming one per disconnect let a client
//! that reconnects in a loop leave one timer per cycle behind, each alive for up
//! to the session expiry (years): 100,000 cycles held +7 MB (issue 10 item 9).
//!
//! # Wheel timers
//!
//! Times are counted in milliseconds from the first deadline scheduled. A wheel
//! timer is armed only at a point `m` that is the first multiple of `2^k` after
//! the time of arming, for the largest `k` with `m` at or before the earliest
//! deadline, and only if no armed point already comes at or before that deadline.
//! Every armed point is in the future and a multiple of `2^k` within `2^k` of
//! now, and there is one such multiple per `k`: at most one armed point per `k`,
//! so at most 64 timers whatever the number of sessions or disconnects. When a
//! point fires, the due deadlines are handed out and the next point is armed;
//! reaching a deadline `d` ms away takes at most about log2(d) points.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use super::output::{Output, Timer, TimerKind};

/// What a session deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Deadline {
    /// The delayed will of a disconnected session is due.
    Will,
    /// A disconnected session expires.
    SessionExpiry,
}

/// The pending session deadlines. See the module documentation.
#[derive(Debug, Default)]
pub struct Deadlines {
    /// Every pending deadline in time order: (when, session key, kind).
    due: BTreeSet<(Instant, usize, Deadline)>,
    /// The pending deadline of each (session, kind), to replace or drop it.
    by_session: HashMap<(usize, Deadline), Instant>,
    /// Points (ms after `epoch`) with a wheel timer armed and not yet fired.
    armed: BTreeSet<u64>,
    /// Time zero of the points: the first `now` seen.
    epoch: Option<Instant>,
}

impl Deadlines {
    /// Set `skey`'s deadline of `kind` to `at`, replacing a pending one.
    pub fn schedule(
        &mut self,
        now: Instant,
        skey: usize,
        kind: Deadline,
        at: Instant,
        out: &mut impl Output,
    ) {
        self.cancel(skey, kind);
        self.by_session.insert((skey, kind), at);
        self.due.insert((at, skey, kind));
        self.arm(now, out);
    }

    /// Drop `skey`'s pending deadline of `kind`, if any.
    pub fn cancel(&mut self, skey: usize, kind: Deadline) {
        if let Some(at) = self.by_session.remove(&(skey, kind)) {
            self.due.remove(&(at, skey, kind));
        }
    }

    /// Drop every pending deadline of `skey` (the session is gone; its slot may
    /// be reused).
    pub fn cancel_session(&mut self, skey: usize) {
        self.cancel(skey, Deadline::Will);
        self.cancel(skey, Deadline::SessionExpiry);
    }

    /// A wheel timer fired at `now`: the deadlines now due, in time order.
    /// Arms the next point. The timer does not say which point it was for
    /// (it has 32 bits, a point 64): every armed point at or before `now` is
    /// taken as fired, which the one that fired is. Another of them whose
    /// timer is still to fire in this tick finds nothing more to do.
    pub fn fired(&mut self, now: Instant, out: &mut impl Output) -> Vec<(usize, Deadline)> {
        if let Some(epoch) = self.epoch {
            let t = ms_since(epoch, now);
            self.armed.retain(|&p| p > t);
        }
        let mut due = Vec::new();
        while let Some(&(at, skey, kind)) = self.due.first() {
            if at > now {
                break;
            }
            self.due.pop_first();
            self.by_session.remove(&(skey, kind));
            due.push((skey, kind));
        }
        if self.due.is_empty() {
            shrink(&mut self.by_session);
        }
        self.arm(now, out);
        due
    }

    /// Wheel timers armed and not yet fired.
    pub fn armed(&self) -> usize {
        self.armed.len()
    }

    /// Pending deadlines.
    pub fn len(&self) -> usize {
        self.due.len()
    }

    /// Make sure a wheel timer fires at or before the earliest deadline.
    fn arm(&mut self, now: Instant, out: &mut impl Output) {
        let Some(&(first, _, _)) = self.due.first() else {
            return;
        };
        let epoch = *self.epoch.get_or_insert(now);
        let t = ms_since(epoch, now);
        // Rounded up, so the last point of a deadline is not before it.
        let d = ms_ceil(epoch, first);
        if self.armed.first().is_some_and(|&a| a <= d.max(t)) {
            return;
        }
        let point = if d <= t {
            // Due already: the next expiry of the wheel hands it out.
            t
        } else {
            // The largest k whose first multiple of 2^k after t is at or before d.
            let k = (0..63u32)
                .rev()
                .find(|&k| next_multiple(t, k).is_some_and(|m| m <= d))
                .unwrap_or(0);
            next_multiple(t, k).unwrap_or(d)
        };
        if self.armed.insert(point) {
            let at = epoch + Duration::from_millis(point);
            out.set_timer(at, Timer::new(TimerKind::Deadlines, 0));
        }
    }
}

/// The first multiple of `2^k` greater than `t`, if it fits.
fn next_multiple(t: u64, k: u32) -> Option<u64> {
    ((t >> k).checked_add(1))?.checked_mul(1u64 << k)
}

/// Whole milliseconds from `epoch` to `at` (0 before it, saturating far after).
fn ms_since(epoch: Instant, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch).as_millis()).unwrap_or(u64::MAX)
}

/// [`ms_since`] rounded up.
fn ms_ceil(epoch: Instant, at: Instant) -> u64 {
    let d = at.saturating_duration_since(epoch);
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

/// Give memory back once the map has emptied.
fn shrink<A: Eq + std::hash::Hash, B>(map: &mut HashMap<A, B>) {
    if map.capacity() > 64 {
        map.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::output::Load;
    use crate::protocol::{Packet, ProtocolVersion};

    /// A wheel with millisecond resolution: holds the timers, fires them in order.
    #[derive(Default)]
    struct Wheel {
        timers: Vec<Instant>,
    }

    impl Output for Wheel {
        fn send(&mut self, _: usize, _: ProtocolVersion, _: &Packet<'_>) {}
        fn send_after_commit(&mut self, _: usize, _: ProtocolVersion, _: &Packet<'_>) {}
        fn request_load(&mut self, _: Load) {}
        fn pending_bytes(&self, _: usize) -> usize {
            0
        }
        fn close(&mut self, _: usize) {}
        fn set_timer(&mut self, at: Instant, timer: Timer) {
            assert!(matches!(timer.kind, TimerKind::Deadlines));
            self.timers.push(at);
        }
    }

    /// Advance to `now`, firing every timer due; returns what became due, with
    /// the time its timer fired.
    fn run(d: &mut Deadlines, w: &mut Wheel, now: Instant) -> Vec<(usize, Deadline, Instant)> {
        let mut out = Vec::new();
        loop {
            w.timers.sort();
            let Some(&at) = w.timers.first() else {
                break;
            };
            if at > now {
                break;
            }
            w.timers.remove(0);
            for (skey, kind) in d.fired(at, w) {
                out.push((skey, kind, at));
            }
        }
        out
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn fires_at_the_deadline_not_before() {
        let t0 = Instant::now();
        let (mut d, mut w) = (Deadlines::default(), Wheel::default());
        d.schedule(t0, 1, Deadline::SessionExpiry, t0 + secs(3600), &mut w);
        d.schedule(
            t0,
            2,
            Deadline::Will,
            t0 + Duration::from_millis(1500),
            &mut w,
        );
        assert!(run(&mut d, &mut w, t0 + Duration::from_millis(1499)).is_empty());
        let got = run(&mut d, &mut w, t0 + secs(3599));
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].0, got[0].1), (2, Deadline::Will));
        assert_eq!(got[0].2, t0 + Duration::from_millis(1500));
        let got = run(&mut d, &mut w, t0 + secs(4000));
        assert_eq!(got, vec![(1, Deadline::SessionExpiry, t0 + secs(3600))]);
        assert_eq!((d.len(), d.armed()), (0, 0));
        assert!(w.timers.is_empty());
    }

    #[test]
    fn a_new_deadline_replaces_the_old_one() {
        let t0 = Instant::now();
        let (mut d, mut w) = (Deadlines::default(), Wheel::default());
        d.schedule(t0, 1, Deadline::SessionExpiry, t0 + secs(10), &mut w);
        d.schedule(
            t0 + secs(5),
            1,
            Deadline::SessionExpiry,
            t0 + secs(20),
            &mut w,
        );
        assert!(run(&mut d, &mut w, t0 + secs(19)).is_empty());
        assert_eq!(run(&mut d, &mut w, t0 + secs(20)).len(), 1);
        d.schedule(
            t0 + secs(30),
            1,
            Deadline::SessionExpiry,
            t0 + secs(40),
            &mut w,
        );
        d.cancel_session(1);
        assert!(run(&mut d, &mut w, t0 + secs(100)).is_empty());
        assert_eq!(d.len(), 0);
    }

    /// Issue 10 item 9: a client disconnecting again and again, each time with
    /// an earlier deadline than the last (the case a per-session "armed
    /// deadline" cannot cover), leaves at most 64 wheel timers, not one each.
    #[test]
    fn disconnect_loops_leave_a_bounded_number_of_timers() {
        let t0 = Instant::now();
        let (mut d, mut w) = (Deadlines::default(), Wheel::default());
        let year = secs(365 * 24 * 3600);
        for i in 0..100_000u64 {
            let now = t0 + Duration::from_millis(i);
            // Earlier every time, and a second session with later ones.
            d.schedule(
                now,
                7,
                Deadline::SessionExpiry,
                now + year - secs(i * 60),
                &mut w,
            );
            d.schedule(now, 8, Deadline::Will, now + secs(i), &mut w);
            run(&mut d, &mut w, now);
            assert!(
                w.timers.len() <= 64,
                "{} timers at cycle {i}",
                w.timers.len()
            );
        }
        assert_eq!(d.len(), 2);
        assert_eq!(d.armed(), w.timers.len());
        // And the deadlines still fire, on time.
        let last = t0 + Duration::from_millis(99_999);
        let got = run(&mut d, &mut w, last + year);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], (8, Deadline::Will, last + secs(99_999)));
        assert_eq!(
            got[1],
            (7, Deadline::SessionExpiry, last + year - secs(99_999 * 60))
        );
    }

    #[test]
    fn random_deadlines_fire_in_order_on_time() {
        let t0 = Instant::now();
        let (mut d, mut w) = (Deadlines::default(), Wheel::default());
        let mut rng = crate::test_rng::Rng(0x9E37_79B9_7F4A_7C15u64);
        let mut next = || rng.next();
        let mut now = t0;
        let mut want = HashMap::new();
        for _ in 0..2_000 {
            now += Duration::from_millis(next() % 5_000);
            let skey = (next() % 50) as usize;
            let at = now + Duration::from_millis(next() % (1 << (next() % 30)));
            if next() % 5 == 0 {
                d.cancel_session(skey);
                want.remove(&skey);
            } else {
                d.schedule(now, skey, Deadline::SessionExpiry, at, &mut w);
                want.insert(skey, at);
            }
            for (skey, _, fired) in run(&mut d, &mut w, now) {
                let at = want.remove(&skey).expect("only pending deadlines fire");
                assert_eq!(fired, at, "fired exactly at the (ms) deadline");
            }
            assert!(
                want.values().all(|&at| at > now),
                "a due deadline was missed"
            );
            assert!(w.timers.len() <= 64);
        }
    }
}
