//! The retained message store: at most one message per topic name, within the
//! `max_retained_messages` / `max_retained_bytes` limits, found by topic filter
//! from a resumable cursor. It never validates topics or filters (the codec does),
//! never decides what to retain and never sends anything.
//!
//! # Design
//!
//! * One ordered set entry per message, keyed by the message's own topic string:
//!   no per-level nodes and no second copy of the topic, so a 200-level topic costs
//!   its bytes, not 200 hash maps (issue 10 item 3).
//! * Matching scans the key range of the filter's literal prefix (`a/b/+` scans
//!   the topics starting with `a/b/`; a filter without wildcards is one lookup),
//!   testing each topic against the filter.
//! * The scan resumes after any topic with a budget of work ([`Self::next_match`]),
//!   so a replay can be spread over loop turns while the store changes under it:
//!   key order is stable, and each entry carries the sequence number of its last
//!   store so a replay can skip what was stored after it began.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::fmt;
use std::ops::Bound;
use std::sync::Arc;

use super::message::Message;
use crate::protocol::topic::matches;

/// Bytes each retained message counts beyond its topic, payload and properties:
/// roughly what its `Arc`, its allocations' headers and its place in the set
/// cost, so `max_retained_bytes` approximates RAM.
pub const RETAINED_OVERHEAD: usize = 128;

/// What the store needs of a value: the topic it is kept under and the bytes it
/// counts against `max_retained_bytes`.
pub trait Retainable {
    /// The topic name.
    fn topic(&self) -> &str;
    /// Bytes counted against the byte limit.
    fn size(&self) -> usize;
    /// Counts against the limits at all (false for the broker's own topics).
    fn counted(&self) -> bool {
        true
    }
}

/// What `value` costs against the limits: (messages, bytes).
fn cost<V: Retainable>(value: &V) -> (usize, usize) {
    if value.counted() {
        (1, value.size())
    } else {
        (0, 0)
    }
}

impl Retainable for Arc<Message> {
    fn topic(&self) -> &str {
        &self.topic
    }
    fn size(&self) -> usize {
        self.stored_len() + RETAINED_OVERHEAD
    }
    /// `$SYS/...` is the broker's own bounded tree (clients may not publish
    /// there): it never takes room from clients' retained messages.
    fn counted(&self) -> bool {
        !self.topic.starts_with("$SYS/")
    }
}

/// Who published a retained message, for `check_retain_source`: the identity
/// its write access is checked under when the message is sent to a new
/// subscriber. Shared by every retained message the same connection of a
/// client published (one per session, rebuilt when it reconnects), so a
/// retained message pays one pointer for it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Publisher {
    /// Client identifier.
    pub client_id: super::client_id::ClientId,
    /// User name (or certificate name) it authenticated with.
    pub username: Option<Box<str>>,
    /// Listener whose rules applied to it.
    pub listener: usize,
}

/// A retained message as the broker keeps it: the message and, when
/// `check_retain_source` is on and a client published it, who did.
#[derive(Debug, Clone)]
pub struct Retained {
    /// The message.
    pub msg: Arc<Message>,
    /// Its publisher; `None` for the broker's own messages (`$SYS`, bridge
    /// state), for messages kept before the check existed, and with the
    /// check off.
    pub publisher: Option<Arc<Publisher>>,
}

impl Retained {
    /// A message nobody's write access is checked for.
    pub fn unchecked(msg: Arc<Message>) -> Retained {
        Retained {
            msg,
            publisher: None,
        }
    }
}

impl Retainable for Retained {
    fn topic(&self) -> &str {
        &self.msg.topic
    }
    fn size(&self) -> usize {
        self.msg.size()
    }
    fn counted(&self) -> bool {
        self.msg.counted()
    }
}

/// One stored value with the sequence number of its store.
struct Entry<V> {
    value: V,
    seq: u64,
}

impl<V: Retainable> Borrow<str> for Entry<V> {
    fn borrow(&self) -> &str {
        self.value.topic()
    }
}

impl<V: Retainable> PartialEq for Entry<V> {
    fn eq(&self, other: &Self) -> bool {
        self.value.topic() == other.value.topic()
    }
}

impl<V: Retainable> Eq for Entry<V> {}

impl<V: Retainable> PartialOrd for Entry<V> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<V: Retainable> Ord for Entry<V> {
    // Ordered as its `Borrow<str>` form, as BTreeSet lookups by `&str` require.
    fn cmp(&self, other: &Self) -> Ordering {
        self.value.topic().cmp(other.value.topic())
    }
}

/// Why a new value was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// `max_retained_messages` reached (only a new topic is refused).
    Messages,
    /// `max_retained_bytes` would be exceeded.
    Bytes,
}

/// Limits of the store; 0 = none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Most retained messages.
    pub max_messages: usize,
    /// Most bytes of retained messages (as [`Retainable::size`] counts them).
    pub max_bytes: usize,
}

/// One step of a resumable scan ([`RetainedStore::next_match`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Step<'a, V> {
    /// The next matching value; resume after its topic.
    Match(&'a V),
    /// The budget ran out after visiting this value (which did not match);
    /// resume after its topic.
    Paused(&'a V),
    /// Nothing matches after the resume point.
    End,
}

/// Retained values of type `V` (the broker stores `Arc<Message>`), keyed by topic name.
pub struct RetainedStore<V> {
    set: BTreeSet<Entry<V>>,
    /// Number of values counted against the limits.
    counted: usize,
    /// Sum of the counted values' sizes.
    bytes: usize,
    /// Sequence number of the last store.
    seq: u64,
    limits: Limits,
}

impl<V> fmt::Debug for RetainedStore<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetainedStore")
            .field("len", &self.set.len())
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl<V: Retainable> RetainedStore<V> {
    /// An empty store with these limits.
    pub fn new(limits: Limits) -> Self {
        RetainedStore {
            set: BTreeSet::new(),
            counted: 0,
            bytes: 0,
            seq: 0,
            limits,
        }
    }

    /// Store `value` under its topic, replacing what was there; returns the old
    /// value. A new topic is refused when either limit is reached; a replacement
    /// is refused only when it grows the store past `max_bytes`.
    pub fn insert(&mut self, value: V) -> Result<Option<V>, Full> {
        let (n, size) = cost(&value);
        if n == 0 {
            return Ok(self.insert_unchecked(value));
        }
        let old = self.set.get(value.topic()).map(|e| cost(&e.value));
        let max_b = self.limits.max_bytes;
        let bytes_after = self.bytes - old.map_or(0, |o| o.1) + size;
        let grows = old.is_none_or(|o| size > o.1);
        let new_topic = old.is_none_or(|o| o.0 == 0);
        let max_n = self.limits.max_messages;
        if new_topic && max_n != 0 && self.counted >= max_n {
            return Err(Full::Messages);
        }
        if max_b != 0 && grows && bytes_after > max_b {
            return Err(Full::Bytes);
        }
        Ok(self.insert_unchecked(value))
    }

    /// Store `value` whatever the limits (messages restored from disk, which were
    /// accepted under the limits of their day).
    pub fn insert_unchecked(&mut self, value: V) -> Option<V> {
        self.seq += 1;
        let (n, size) = cost(&value);
        self.counted += n;
        self.bytes += size;
        let old = self.set.replace(Entry {
            value,
            seq: self.seq,
        })?;
        self.uncount(&old.value);
        Some(old.value)
    }

    /// The retained value of `topic`.
    pub fn get(&self, topic: &str) -> Option<&V> {
        self.set.get(topic).map(|e| &e.value)
    }

    /// Remove the retained value of `topic` (a retained PUBLISH with an empty payload).
    pub fn remove(&mut self, topic: &str) -> Option<V> {
        let old = self.set.take(topic)?;
        self.uncount(&old.value);
        Some(old.value)
    }

    fn uncount(&mut self, value: &V) {
        let (n, size) = cost(value);
        self.counted -= n;
        self.bytes -= size;
    }

    /// The next value after topic `after` (from the start for `None`) that matches
    /// `filter` (a valid plain filter, the `$` rule [MQTT-4.7.2-1] applied) and was
    /// stored at sequence `upto` or before. Each visited value costs one unit of
    /// `budget` plus one per 64 bytes of its topic; the scan pauses when the
    /// budget is spent.
    pub fn next_match<'a>(
        &'a self,
        filter: &str,
        after: Option<&str>,
        upto: u64,
        budget: &mut usize,
    ) -> Step<'a, V> {
        let prefix = literal_prefix(filter);
        let exact = prefix.len() == filter.len();
        // Start at the later of the prefix and the resume point.
        let start = match after {
            Some(a) if a >= prefix => Bound::Excluded(a),
            _ => Bound::Included(prefix),
        };
        for entry in self.set.range::<str, _>((start, Bound::Unbounded)) {
            let topic = entry.value.topic();
            // Keys sharing the prefix are contiguous: past them, nothing matches.
            if !topic.starts_with(prefix) || (exact && topic.len() > prefix.len()) {
                return Step::End;
            }
            *budget = budget.saturating_sub(1 + topic.len() / 64);
            if entry.seq <= upto && matches(filter, topic) {
                return Step::Match(&entry.value);
            }
            if exact {
                return Step::End;
            }
            if *budget == 0 {
                return Step::Paused(&entry.value);
            }
        }
        Step::End
    }

    /// Call `f` for every retained value whose topic matches `filter`, with the `$`
    /// rule [MQTT-4.7.2-1], in topic order. Not budgeted: for tests and small stores.
    pub fn for_each_match(&self, filter: &str, mut f: impl FnMut(&str, &V)) {
        let mut after: Option<&str> = None;
        loop {
            let mut budget = usize::MAX;
            match self.next_match(filter, after, self.seq, &mut budget) {
                Step::Match(v) => {
                    f(v.topic(), v);
                    after = Some(v.topic());
                }
                Step::Paused(v) => after = Some(v.topic()),
                Step::End => return,
            }
        }
    }

    /// Call `f` for every retained value, `$` topics included (for snapshots).
    pub fn for_each(&self, mut f: impl FnMut(&str, &V)) {
        for e in &self.set {
            f(e.value.topic(), &e.value);
        }
    }

    /// Sequence number of the latest store: a replay started now covers the
    /// values stored up to it.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Number of retained messages.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Number of retained messages counted against the limits.
    pub fn counted(&self) -> usize {
        self.counted
    }

    /// Bytes of retained messages counted against the limits (see [`Retainable::size`]).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }
}

/// The part of `filter` before its first wildcard level: every matching topic
/// starts with it (`a/b/+` gives `a/b/`, `a/#` gives `a` since `a/#` matches
/// `a` [MQTT-4.7.1-2], `+/x` gives ``, a filter without wildcards is itself).
fn literal_prefix(filter: &str) -> &str {
    let mut end = 0;
    for level in filter.split('/') {
        if level == "+" {
            return &filter[..end];
        }
        if level == "#" {
            // Without the separator before `#`: the parent level matches too.
            return &filter[..end.saturating_sub(1)];
        }
        end += level.len() + 1;
    }
    filter
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `check_retain_source` costs each retained message one pointer (the
    /// publisher is shared by everything one connection retained).
    #[test]
    fn a_publisher_costs_one_pointer_per_retained_message() {
        assert_eq!(std::mem::size_of::<Retained>(), 16);
        assert_eq!(std::mem::size_of::<Arc<Message>>(), 8);
    }
    use std::collections::BTreeMap;

    /// A test value: a topic and a number.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct V(String, u32);

    impl Retainable for V {
        fn topic(&self) -> &str {
            &self.0
        }
        fn size(&self) -> usize {
            self.0.len() + 4
        }
        fn counted(&self) -> bool {
            !self.0.starts_with("$SYS/")
        }
    }

    fn store() -> RetainedStore<V> {
        RetainedStore::new(Limits::default())
    }

    fn put(st: &mut RetainedStore<V>, topic: &str, n: u32) -> Option<u32> {
        st.insert(V(topic.into(), n))
            .expect("no limits")
            .map(|v| v.1)
    }

    /// The spec's matching rules, written the obvious way (4.7).
    fn ref_matches(filter: &str, topic: &str) -> bool {
        let f: Vec<&str> = filter.split('/').collect();
        let t: Vec<&str> = topic.split('/').collect();
        // [MQTT-4.7.2-1]
        if topic.starts_with('$') && matches!(f.first(), Some(&"+") | Some(&"#")) {
            return false;
        }
        let mut i = 0;
        loop {
            match (f.get(i), t.get(i)) {
                (None, None) => return true,
                (None, Some(_)) => return false,
                // `#` matches the parent level too [MQTT-4.7.1-2].
                (Some(&"#"), _) if i + 1 == f.len() => return true,
                (Some(_), None) => return false,
                (Some(&"+"), Some(_)) => {}
                (Some(a), Some(b)) if a == b => {}
                _ => return false,
            }
            i += 1;
        }
    }

    use crate::test_rng::Rng;

    fn matches_of(store: &RetainedStore<V>, filter: &str) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        store.for_each_match(filter, |t, v| out.push((t.to_string(), v.1)));
        out.sort();
        out
    }

    /// The same, through budgeted steps of `budget` units, as a replay does it.
    fn matches_stepwise(
        store: &RetainedStore<V>,
        filter: &str,
        budget: usize,
    ) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut b = budget;
            match store.next_match(filter, after.as_deref(), store.seq(), &mut b) {
                Step::Match(v) => {
                    out.push((v.0.clone(), v.1));
                    after = Some(v.0.clone());
                }
                Step::Paused(v) => after = Some(v.0.clone()),
                Step::End => break,
            }
        }
        out.sort();
        out
    }

    fn pairs(list: &[(&str, u32)]) -> Vec<(String, u32)> {
        let mut v: Vec<_> = list.iter().map(|(t, v)| (t.to_string(), *v)).collect();
        v.sort();
        v
    }

    #[test]
    fn prefixes() {
        assert_eq!(literal_prefix("a/b/+"), "a/b/");
        assert_eq!(literal_prefix("a/#"), "a");
        assert_eq!(literal_prefix("#"), "");
        assert_eq!(literal_prefix("+/x"), "");
        assert_eq!(literal_prefix("a/b"), "a/b");
        assert_eq!(literal_prefix("/+"), "/");
        assert_eq!(literal_prefix("/#"), "");
    }

    #[test]
    fn insert_replace_remove() {
        let mut st = store();
        assert_eq!(put(&mut st, "a/b", 1), None);
        assert_eq!(put(&mut st, "a/b", 2), Some(1));
        assert_eq!(st.len(), 1);
        assert_eq!(st.bytes(), 7);
        assert_eq!(st.remove("a"), None);
        assert_eq!(st.remove("a/b/c"), None);
        assert_eq!(st.remove("a/b").map(|v| v.1), Some(2));
        assert_eq!(st.remove("a/b"), None);
        assert!(st.is_empty());
        assert_eq!(st.bytes(), 0);
    }

    #[test]
    fn limits_refuse_new_topics_and_growth_only() {
        let mut st = RetainedStore::new(Limits {
            max_messages: 2,
            max_bytes: 30,
        });
        assert!(st.insert(V("a".into(), 1)).is_ok()); // 5 bytes
        assert!(st.insert(V("b".repeat(10), 2)).is_ok()); // 14 bytes
        assert_eq!(st.insert(V("c".into(), 3)), Err(Full::Messages));
        // Replacing is allowed at the message limit...
        assert!(st.insert(V("a".into(), 4)).is_ok());
        // ...but not growing past the byte limit (5 + 14 -> 14 + 26 = 40 > 30).
        assert_eq!(st.insert(V("b".repeat(10), 5)).map(|_| ()), Ok(()));
        st.remove("a");
        assert_eq!(st.insert(V("x".repeat(20), 6)), Err(Full::Bytes)); // 14 + 24 > 30
        assert!(st.insert(V("x".repeat(12), 7)).is_ok()); // 14 + 16 = 30
        assert_eq!(st.bytes(), 30);
        // Shrinking or clearing is always possible.
        assert!(st.insert(V("x".repeat(12), 8)).is_ok());
        assert!(st.remove(&"x".repeat(12)).is_some());
        assert_eq!(st.bytes(), 14);
        // Restored messages are kept whatever the limits.
        st.insert_unchecked(V("y".repeat(40), 9));
        assert_eq!(st.len(), 2);
        assert_eq!(st.bytes(), 58);
    }

    #[test]
    fn uncounted_values_take_no_room() {
        let mut st = RetainedStore::new(Limits {
            max_messages: 1,
            max_bytes: 10,
        });
        assert!(st.insert(V("$SYS/uptime".repeat(3), 1)).is_ok());
        assert!(st.insert(V("a".into(), 2)).is_ok());
        assert_eq!(st.insert(V("b".into(), 3)), Err(Full::Messages));
        assert!(st.insert(V("$SYS/load".into(), 4)).is_ok());
        assert_eq!((st.len(), st.counted(), st.bytes()), (3, 1, 5));
        st.remove("$SYS/load");
        st.remove("a");
        assert_eq!((st.len(), st.counted(), st.bytes()), (1, 0, 0));
    }

    #[test]
    fn wildcards_and_parent_level() {
        let mut st = store();
        put(&mut st, "sport", 1);
        put(&mut st, "sport/tennis", 2);
        put(&mut st, "sport/tennis/player1", 3);
        put(&mut st, "sport/golf", 4);
        put(&mut st, "news", 5);
        put(&mut st, "sports", 6);
        // `sport/#` matches `sport` itself [MQTT-4.7.1-2].
        assert_eq!(
            matches_of(&st, "sport/#"),
            pairs(&[
                ("sport", 1),
                ("sport/tennis", 2),
                ("sport/tennis/player1", 3),
                ("sport/golf", 4)
            ])
        );
        assert_eq!(
            matches_of(&st, "sport/+"),
            pairs(&[("sport/tennis", 2), ("sport/golf", 4)])
        );
        assert_eq!(
            matches_of(&st, "+"),
            pairs(&[("sport", 1), ("news", 5), ("sports", 6)])
        );
        assert_eq!(
            matches_of(&st, "sport/tennis"),
            pairs(&[("sport/tennis", 2)])
        );
        assert_eq!(matches_of(&st, "sport"), pairs(&[("sport", 1)]));
        assert_eq!(matches_of(&st, "#").len(), 6);
        assert!(matches_of(&st, "sport/tennis/player1/x").is_empty());
    }

    #[test]
    fn dollar_topics_skip_leading_wildcards() {
        let mut st = store();
        put(&mut st, "$SYS/broker/uptime", 1);
        put(&mut st, "a", 2);
        // [MQTT-4.7.2-1]
        assert_eq!(matches_of(&st, "#"), pairs(&[("a", 2)]));
        assert!(matches_of(&st, "+/broker/uptime").is_empty());
        assert_eq!(
            matches_of(&st, "$SYS/#"),
            pairs(&[("$SYS/broker/uptime", 1)])
        );
        assert_eq!(
            matches_of(&st, "$SYS/+/uptime"),
            pairs(&[("$SYS/broker/uptime", 1)])
        );
    }

    #[test]
    fn empty_levels() {
        let mut st = store();
        put(&mut st, "/a", 1);
        put(&mut st, "a//b", 2);
        put(&mut st, "a/", 3);
        put(&mut st, "/", 4);
        assert_eq!(matches_of(&st, "/a"), pairs(&[("/a", 1)]));
        assert_eq!(
            matches_of(&st, "+/+"),
            pairs(&[("/a", 1), ("a/", 3), ("/", 4)])
        );
        assert_eq!(matches_of(&st, "a/+/b"), pairs(&[("a//b", 2)]));
        assert_eq!(matches_of(&st, "a/#"), pairs(&[("a//b", 2), ("a/", 3)]));
        assert_eq!(matches_of(&st, "/#"), pairs(&[("/a", 1), ("/", 4)]));
        assert_eq!(st.remove("/").map(|v| v.1), Some(4));
        assert_eq!(matches_of(&st, "/#"), pairs(&[("/a", 1)]));
    }

    #[test]
    fn literal_prefix_does_not_scan_the_store() {
        let mut st = store();
        for i in 0..1000 {
            put(&mut st, &format!("dev{i}/state"), i);
        }
        let mut budget = 1000;
        let first = st.next_match("dev7/+", None, st.seq(), &mut budget);
        assert!(matches!(first, Step::Match(V(t, 7)) if t == "dev7/state"));
        let mut budget = 1000;
        let next = st.next_match("dev7/+", Some("dev7/state"), st.seq(), &mut budget);
        assert_eq!(next, Step::End);
        // Two visits, not a thousand.
        assert_eq!(budget, 1000);
        assert_eq!(matches_of(&st, "+/state").len(), 1000);
    }

    #[test]
    fn a_scan_pauses_on_its_budget_and_resumes() {
        let mut st = store();
        for i in 0..100 {
            put(&mut st, &format!("a/{i:03}"), i);
        }
        put(&mut st, "b/x", 100);
        let mut budget = 10;
        // Ten non-matching visits, then a pause at the tenth.
        let step = st.next_match("+/x", None, st.seq(), &mut budget);
        assert!(
            matches!(step, Step::Paused(V(t, _)) if t == "a/009"),
            "{step:?}"
        );
        assert_eq!(budget, 0);
        for b in [1, 2, 7, 1000] {
            assert_eq!(matches_stepwise(&st, "+/x", b), pairs(&[("b/x", 100)]));
            assert_eq!(matches_stepwise(&st, "a/#", b).len(), 100);
        }
        // A long topic costs more than a short one.
        put(&mut st, &format!("c/{}", "x".repeat(640)), 101);
        let mut budget = 100;
        st.next_match("c/#", None, st.seq(), &mut budget);
        assert_eq!(budget, 100 - 11);
    }

    #[test]
    fn a_cursor_survives_changes_and_skips_newer_stores() {
        let mut st = store();
        for t in ["a", "b", "c", "d"] {
            put(&mut st, t, 0);
        }
        let upto = st.seq();
        let mut budget = 100;
        let Step::Match(first) = st.next_match("#", None, upto, &mut budget) else {
            panic!("a first match");
        };
        let after = first.0.clone();
        assert_eq!(after, "a");
        // The resume key itself goes away; a newer value replaces `c`; `bb` is new.
        st.remove("a");
        put(&mut st, "c", 1);
        put(&mut st, "bb", 1);
        let mut rest = Vec::new();
        let mut after = Some(after);
        while let Step::Match(v) = st.next_match("#", after.as_deref(), upto, &mut budget) {
            rest.push(v.0.clone());
            after = Some(v.0.clone());
        }
        // `c` and `bb` were stored after the replay began: their subscriber got
        // them as live messages.
        assert_eq!(rest, ["b", "d"]);
    }

    #[test]
    fn very_deep_topics() {
        let mut st = store();
        let deep = "x/".repeat(100_000) + "end";
        put(&mut st, &deep, 1);
        put(&mut st, "x", 2);
        assert_eq!(matches_of(&st, "#").len(), 2);
        assert_eq!(matches_of(&st, "x/#").len(), 2);
        assert_eq!(matches_of(&st, &deep), pairs(&[(&deep, 1)]));
        assert_eq!(st.remove(&deep).map(|v| v.1), Some(1));
    }

    #[test]
    fn randomized_cross_check_against_reference() {
        const LEVELS: [&str; 4] = ["", "a", "b", "c"];
        let mut rng = Rng(0xD1B5_4A32_D192_ED03);
        let random_topic = |rng: &mut Rng| {
            let n = 1 + rng.below(4);
            let levels: Vec<&str> = (0..n)
                .map(|i| {
                    if i == 0 && rng.below(6) == 0 {
                        "$s"
                    } else {
                        LEVELS[rng.below(LEVELS.len())]
                    }
                })
                .collect();
            let topic = levels.join("/");
            // A topic name has at least one character [MQTT-4.7.3-1].
            if topic.is_empty() {
                "/".to_string()
            } else {
                topic
            }
        };
        let mut st = store();
        let mut model: BTreeMap<String, u32> = BTreeMap::new();
        let topics: Vec<String> = (0..80).map(|_| random_topic(&mut rng)).collect();
        let mut filters: Vec<String> = topics.iter().take(20).cloned().collect();
        for _ in 0..60 {
            let n = 1 + rng.below(4);
            let mut levels: Vec<&str> = (0..n)
                .map(|i| match rng.below(4) {
                    0 => "+",
                    _ if i == 0 && rng.below(5) == 0 => "$s",
                    _ => LEVELS[rng.below(LEVELS.len())],
                })
                .collect();
            if rng.below(3) == 0 {
                levels.push("#");
            }
            let filter = levels.join("/");
            // A filter has at least one character [MQTT-4.7.3-1].
            if !filter.is_empty() {
                filters.push(filter);
            }
        }
        filters.push("#".to_string());
        for step in 0..8_000u32 {
            let topic = &topics[rng.below(topics.len())];
            if rng.below(2) == 0 {
                assert_eq!(st.remove(topic).map(|v| v.1), model.remove(topic));
            } else {
                assert_eq!(put(&mut st, topic, step), model.insert(topic.clone(), step));
            }
            assert_eq!(st.len(), model.len());
            let bytes: usize = model.keys().map(|t| t.len() + 4).sum();
            assert_eq!(st.bytes(), bytes);
            if step % 100 == 0 {
                for filter in &filters {
                    let want: Vec<_> = model
                        .iter()
                        .filter(|(t, _)| ref_matches(filter, t))
                        .map(|(t, v)| (t.clone(), *v))
                        .collect();
                    assert_eq!(matches_of(&st, filter), want, "filter {filter:?}");
                    let budget = 1 + rng.below(5);
                    assert_eq!(
                        matches_stepwise(&st, filter, budget),
                        want,
                        "filter {filter:?} in steps of {budget}"
                    );
                }
            }
        }
        for topic in topics {
            st.remove(&topic);
        }
        assert!(st.is_empty());
        assert_eq!(st.bytes(), 0);
    }
}
