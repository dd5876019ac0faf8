//! A hierarchical timing wheel: every timer of the broker (CONNECT timeout,
//! keep-alive, retransmission, will delay, session expiry) lives here.
//!
//! Six levels of 64 slots; a level-`l` slot spans `64^l` ticks of 10 ms. Insertion
//! is O(1); each timer moves down at most five times before it fires; finding the
//! next deadline looks at one occupancy bitmap per level and, after a change,
//! one slot. Nothing here is O(timers) per tick, and an empty wheel reports no
//! deadline, so an idle broker sleeps in `poll`. Timers are never removed: the
//! broker cancels lazily (a stale timer is ignored when it fires), which keeps
//! the wheel free of handles and back-pointers.
//!
//! Every connection has a timer here, so an entry is kept small: its tick in
//! 32 bits, counted from the wheel's position (every held deadline is within
//! [`SPAN`] ticks of it, about 497 days). The rare timers further out (session
//! expiries and will delays of years) wait in a list of their own until they
//! come within reach.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// Resolution of the wheel. Keep-alive is counted in seconds, so 10 ms is ample.
const TICK: Duration = Duration::from_millis(10);
/// Bits of tick per level (64 slots).
const BITS: u32 = 6;
const SLOTS: usize = 1 << BITS;
/// Enough levels for any deadline within [`SPAN`] of the position (36 bits).
const LEVELS: usize = 6;
/// The furthest tick the levels hold, relative to the wheel's position: what
/// a 32-bit tick tells apart.
const SPAN: u64 = u32::MAX as u64;

/// A timer in a slot: 16 bytes for the server's items.
struct Entry<T> {
    /// The deadline tick modulo 2^32 (see [`Wheel::tick_of`]).
    deadline: u32,
    item: T,
}

struct Level<T> {
    slots: Vec<Vec<Entry<T>>>,
    /// Bit `s` set when `slots[s]` is non-empty.
    occupied: u64,
}

/// A timing wheel holding items of type `T` until their deadline.
pub struct Wheel<T> {
    origin: Instant,
    /// Every deadline before this tick has been handed out; every held one is
    /// at or after it.
    now_tick: u64,
    levels: Vec<Level<T>>,
    len: usize,
    /// Timers inserted with a deadline already handed out: due at the next expiry.
    overdue: Vec<T>,
    /// Timers more than [`SPAN`] ticks ahead of the position, with their tick.
    far: Vec<(u64, T)>,
    /// The earliest tick in `far` (`u64::MAX` when empty).
    far_next: u64,
    /// The earliest tick in the levels, once found (`None` inside: none held);
    /// forgotten when an expiry takes entries out. Saves looking through a
    /// slot of thousands of keep-alive checks on every loop turn.
    earliest: Cell<Option<Option<u64>>>,
}

impl<T> Wheel<T> {
    /// An empty wheel whose tick 0 is `origin`.
    pub fn new(origin: Instant) -> Self {
        let levels = (0..LEVELS)
            .map(|_| Level {
                slots: (0..SLOTS).map(|_| Vec::new()).collect(),
                occupied: 0,
            })
            .collect();
        Wheel {
            origin,
            now_tick: 0,
            levels,
            len: 0,
            overdue: Vec::new(),
            far: Vec::new(),
            far_next: u64::MAX,
            earliest: Cell::new(Some(None)),
        }
    }

    /// Number of timers held (stale ones included).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no timer is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The tick at or after `at` (rounded up, so a timer never fires early).
    fn tick_ceil(&self, at: Instant) -> u64 {
        let d = at.saturating_duration_since(self.origin);
        let t = d.as_nanos().div_ceil(TICK.as_nanos());
        u64::try_from(t).unwrap_or(u64::MAX)
    }

    /// The last tick that has fully begun at `at`.
    fn tick_floor(&self, at: Instant) -> u64 {
        let d = at.saturating_duration_since(self.origin);
        u64::try_from(d.as_nanos() / TICK.as_nanos()).unwrap_or(u64::MAX)
    }

    fn instant_of(&self, tick: u64) -> Instant {
        // Saturate rather than overflow for absurd ticks (centuries out).
        let nanos = u128::from(tick) * TICK.as_nanos();
        let d = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        self.origin
            .checked_add(d)
            .unwrap_or(self.origin + Duration::from_secs(1 << 32))
    }

    /// The whole tick of an entry's 32 bits: held deadlines are at or after
    /// the position and less than 2^32 ticks beyond it.
    fn tick_of(&self, deadline: u32) -> u64 {
        self.now_tick + u64::from(deadline.wrapping_sub(self.now_tick as u32))
    }

    /// Hold `item` until `at`. A deadline in the past fires at the next `expire`.
    pub fn insert(&mut self, at: Instant, item: T) {
        let deadline = self.tick_ceil(at);
        self.len += 1;
        if deadline < self.now_tick {
            self.overdue.push(item);
            return;
        }
        if deadline - self.now_tick > SPAN {
            self.far_next = self.far_next.min(deadline);
            self.far.push((deadline, item));
            return;
        }
        self.insert_tick(deadline, item);
    }

    /// File `item` at `deadline`, which is within [`SPAN`] of the position.
    fn insert_tick(&mut self, deadline: u64, item: T) {
        let deadline = deadline.max(self.now_tick);
        // The level is set by the highest 6-bit group in which the deadline
        // differs from now: within that level's current rotation it has its own slot.
        let diff = (self.now_tick ^ deadline) | (SLOTS as u64 - 1);
        let top_bit = 63 - diff.leading_zeros();
        let level = ((top_bit / BITS) as usize).min(LEVELS - 1);
        let slot = ((deadline >> (BITS as usize * level)) as usize) & (SLOTS - 1);
        let lvl = &mut self.levels[level];
        lvl.slots[slot].push(Entry {
            // Truncated on purpose: see `tick_of`.
            deadline: deadline as u32,
            item,
        });
        lvl.occupied |= 1 << slot;
        if let Some(known) = self.earliest.get() {
            self.earliest
                .set(Some(Some(known.map_or(deadline, |e| e.min(deadline)))));
        }
    }

    /// The first non-empty slot in tick order: (level, slot, tick the slot starts at).
    fn next_slot(&self) -> Option<(usize, usize, u64)> {
        for (level, lvl) in self.levels.iter().enumerate() {
            if lvl.occupied == 0 {
                continue;
            }
            let shift = BITS as usize * level;
            let now_slot = ((self.now_tick >> shift) as usize) & (SLOTS - 1);
            let ahead = lvl.occupied.rotate_right(now_slot as u32).trailing_zeros() as usize;
            let slot = (now_slot + ahead) & (SLOTS - 1);
            let level_span = 1u64 << (shift + BITS as usize);
            let level_start = self.now_tick & !(level_span - 1);
            let mut start = level_start + ((slot as u64) << shift);
            if slot < now_slot {
                // Past the end of this rotation: the next one.
                start += level_span;
            }
            return Some((level, slot, start.max(self.now_tick)));
        }
        None
    }

    /// The earliest tick held in the levels.
    fn earliest_tick(&self) -> Option<u64> {
        if let Some(known) = self.earliest.get() {
            return known;
        }
        // Lower levels always hold earlier deadlines than higher ones, so the
        // earliest entry of the first non-empty slot is the earliest of all.
        let found = self.next_slot().and_then(|(level, slot, _)| {
            self.levels[level].slots[slot]
                .iter()
                .map(|e| self.tick_of(e.deadline))
                .min()
        });
        self.earliest.set(Some(found));
        found
    }

    /// When the earliest held timer is due (or, for timers beyond reach, when
    /// they are to be filed), for the poll timeout.
    pub fn next_deadline(&self) -> Option<Instant> {
        if !self.overdue.is_empty() {
            return Some(self.origin);
        }
        let far = (self.far_next != u64::MAX).then(|| self.far_next - SPAN);
        let tick = match (self.earliest_tick(), far) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some(self.instant_of(tick))
    }

    /// Move every item due at `now` into `fired`, earliest first.
    pub fn expire(&mut self, now: Instant, fired: &mut Vec<T>) {
        let target = self.tick_floor(now);
        self.len -= self.overdue.len();
        fired.append(&mut self.overdue);
        while let Some((level, slot, start)) = self.next_slot() {
            if start > target {
                break;
            }
            self.now_tick = start;
            self.earliest.set(None);
            let lvl = &mut self.levels[level];
            lvl.occupied &= !(1 << slot);
            let entries = std::mem::take(&mut lvl.slots[slot]);
            for e in entries {
                let deadline = self.tick_of(e.deadline);
                if deadline <= target && (level == 0 || deadline <= start) {
                    self.len -= 1;
                    fired.push(e.item);
                } else {
                    // Cascade: re-file relative to the new position, one level down
                    // or more.
                    self.insert_tick(deadline, e.item);
                }
            }
        }
        if target >= self.now_tick {
            self.now_tick = target + 1;
        }
        if self.far_next <= self.now_tick.saturating_add(SPAN) {
            self.file_far(target, fired);
        }
    }

    /// File the far timers that came within reach (hand out any already due:
    /// the loop slept past them).
    fn file_far(&mut self, target: u64, fired: &mut Vec<T>) {
        self.far_next = u64::MAX;
        for (deadline, item) in std::mem::take(&mut self.far) {
            if deadline <= target {
                self.len -= 1;
                fired.push(item);
            } else if deadline - self.now_tick <= SPAN {
                self.insert_tick(deadline, item);
            } else {
                self.far_next = self.far_next.min(deadline);
                self.far.push((deadline, item));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn empty_wheel_has_no_deadline() {
        let w: Wheel<u32> = Wheel::new(Instant::now());
        assert!(w.next_deadline().is_none());
        assert!(w.is_empty());
    }

    #[test]
    fn fires_at_deadline_not_before() {
        let t0 = Instant::now();
        let mut w = Wheel::new(t0);
        w.insert(t0 + ms(1500), 1u32);
        let mut fired = Vec::new();
        w.expire(t0 + ms(1400), &mut fired);
        assert!(fired.is_empty());
        assert_eq!(w.next_deadline(), Some(t0 + ms(1500)));
        w.expire(t0 + ms(1500), &mut fired);
        assert_eq!(fired, vec![1]);
        assert!(w.is_empty());
    }

    #[test]
    fn rounds_up_to_the_tick() {
        let t0 = Instant::now();
        let mut w = Wheel::new(t0);
        w.insert(t0 + ms(15), 7u32);
        let mut fired = Vec::new();
        w.expire(t0 + ms(15), &mut fired);
        assert!(fired.is_empty(), "15 ms rounds up to the 20 ms tick");
        w.expire(t0 + ms(20), &mut fired);
        assert_eq!(fired, vec![7]);
    }

    #[test]
    fn past_deadlines_fire_at_once() {
        let t0 = Instant::now();
        let mut w = Wheel::new(t0);
        let mut fired = Vec::new();
        w.expire(t0 + ms(5000), &mut fired);
        w.insert(t0, 3u32);
        w.expire(t0 + ms(5000), &mut fired);
        assert_eq!(fired, vec![3]);
    }

    /// Against a sorted reference: random deadlines across every level fire in
    /// order, exactly once, never early, whatever the expiry steps.
    #[test]
    fn matches_a_reference_across_levels() {
        let t0 = Instant::now();
        let mut w = Wheel::new(t0);
        let mut rng = crate::test_rng::Rng(0x9E37_79B9_7F4A_7C15u64);
        let mut next = || rng.next();
        let mut expected = Vec::new();
        for i in 0..5000u64 {
            // Spread from 0 to ~3 days, in ms.
            let exp = next() % 24;
            let at = next() % (1u64 << exp).max(1);
            w.insert(t0 + ms(at), (at, i));
            expected.push((at, i));
        }
        let mut now = 0u64;
        // No expiry has run yet: anything may fire at the first one.
        let mut prev: Option<u64> = None;
        let mut fired = Vec::new();
        while !w.is_empty() {
            let step = next() % 5_000_000;
            now += step;
            let before = fired.len();
            w.expire(t0 + ms(now), &mut fired);
            for &(at, _) in &fired[before..] {
                assert!(at <= now, "fired early: {at} > {now}");
                // Never later than the step that passed its (rounded-up) tick.
                if let Some(p) = prev {
                    assert!(
                        at.div_ceil(10) * 10 > p,
                        "late: at {at} now {now} step {step}"
                    );
                }
            }
            prev = Some(now);
            if let Some(d) = w.next_deadline() {
                assert!(d > t0 + ms(now));
            }
        }
        fired.sort();
        expected.sort();
        assert_eq!(fired, expected);
    }

    #[test]
    fn next_deadline_is_exact_for_far_timers() {
        let t0 = Instant::now();
        let mut w = Wheel::new(t0);
        w.insert(t0 + Duration::from_secs(90), 1u32);
        w.insert(t0 + Duration::from_secs(3600), 2u32);
        assert_eq!(w.next_deadline(), Some(t0 + Duration::from_secs(90)));
        let mut fired = Vec::new();
        w.expire(t0 + Duration::from_secs(90), &mut fired);
        assert_eq!(fired, vec![1]);
        assert_eq!(w.next_deadline(), Some(t0 + Duration::from_secs(3600)));
    }

    /// The server's entries are 16 bytes (every connection has one).
    #[test]
    fn entries_are_small() {
        let n = std::mem::size_of::<Entry<super::super::io::PackedDue>>();
        eprintln!("wheel entry {n} B");
        assert_eq!(n, 16);
    }

    /// A timer further out than 32 bits of ticks (~497 days) waits aside,
    /// costs no wake-up before it comes within reach, and fires on time.
    #[test]
    fn far_timers_fire_on_time() {
        let t0 = Instant::now();
        let mut w = Wheel::new(t0);
        let day = Duration::from_secs(24 * 3600);
        w.insert(t0 + 800 * day, 1u32);
        w.insert(t0 + 3 * day, 2u32);
        assert_eq!(w.next_deadline(), Some(t0 + 3 * day));
        let mut fired = Vec::new();
        w.expire(t0 + 3 * day, &mut fired);
        assert_eq!(fired, vec![2]);
        // The next wake-up is when the far timer is to be filed, not before.
        let file_at = w.next_deadline().expect("the far timer");
        assert!(file_at > t0 + 300 * day && file_at < t0 + 800 * day);
        w.expire(file_at, &mut fired);
        assert_eq!(fired, vec![2]);
        assert_eq!(w.next_deadline(), Some(t0 + 800 * day));
        w.expire(t0 + 800 * day - ms(10), &mut fired);
        assert_eq!(fired, vec![2]);
        w.expire(t0 + 800 * day, &mut fired);
        assert_eq!(fired, vec![2, 1]);
        assert!(w.is_empty());
        assert!(w.next_deadline().is_none());
    }

    /// Deadlines across the point where the 32-bit tick wraps fire in order.
    #[test]
    fn deadlines_across_the_32_bit_wrap() {
        let t0 = Instant::now();
        let mut w = Wheel::new(t0);
        let wrap = TICK * u32::MAX;
        let mut fired = Vec::new();
        // Move the wheel to just before the wrap (it holds nothing meanwhile).
        w.expire(t0 + wrap - ms(500), &mut fired);
        for (i, at) in [300u64, 800, 2_000, 90_000, 5, 20_000]
            .into_iter()
            .enumerate()
        {
            w.insert(t0 + wrap - ms(500) + ms(at), (at, i));
        }
        let mut now = t0 + wrap - ms(500);
        while !w.is_empty() {
            let next = w.next_deadline().expect("held timers");
            assert!(next > now, "no deadline in the past");
            now = next;
            w.expire(now, &mut fired);
        }
        let order: Vec<u64> = fired.iter().map(|&(at, _)| at).collect();
        assert_eq!(order, vec![5, 300, 800, 2_000, 20_000, 90_000]);
    }

    /// Reaching the next deadline looks at the earliest slot once, not on
    /// every call, and a new earlier timer is seen at once.
    #[test]
    fn next_deadline_follows_inserts() {
        let t0 = Instant::now();
        let mut w = Wheel::new(t0);
        for i in 0..1000u32 {
            w.insert(t0 + Duration::from_secs(60) + ms(u64::from(i)), i);
        }
        assert_eq!(w.next_deadline(), Some(t0 + Duration::from_secs(60)));
        w.insert(t0 + Duration::from_secs(30), 5000);
        assert_eq!(w.next_deadline(), Some(t0 + Duration::from_secs(30)));
        let mut fired = Vec::new();
        w.expire(t0 + Duration::from_secs(30), &mut fired);
        assert_eq!(fired, vec![5000]);
        assert_eq!(w.next_deadline(), Some(t0 + Duration::from_secs(60)));
    }
}
