//! The subscription index: a flat map from topic filter to subscribers, with
//! wildcard matching whose cost per publish does not grow with the number of
//! subscriptions. It owns the filter strings and per-filter subscriber sets; it
//! never validates filters (the codec does) and knows nothing of sessions.
//!
//! # Design
//!
//! * Every filter, exact or wildcard, is an entry (its text and subscribers)
//!   in a vector, at a position ([`FilterId`]) that stays while any
//!   subscriber holds it, so sessions name their filters by it instead of
//!   keeping a copy. A hash table of 8-byte slots (position, 32 bits of hash)
//!   finds an entry by text: subscribe, unsubscribe and every lookup of
//!   matching are one probe. The hash is keyed per index (`keyed_hash`:
//!   peers choose both topics and filters) and cheaper than SipHash.
//! * Every wildcard filter has a *shape*: one byte per level, `+` for a `+` level,
//!   `#` for a final `#` level and `.` for a literal level (`devices/+/cmd/#` has
//!   shape `.+.#`). `shapes` maps each shape to the number of filters that have it.
//! * Shapes are grouped by the topics they can fit: a shape without `#` fits only
//!   topics of exactly its level count, a shape ending in `#` fits topics with at
//!   least as many levels as come before the `#`. To match a topic of L levels we
//!   look the topic itself up (exact filters), then for every shape of the group of
//!   L levels and of the `#` groups of at most L levels we build the one filter of
//!   that shape that could match (the topic's levels with `+` at the shape's plus
//!   levels, cut at `#`) and look that up. Cost per publish: O(fitting shapes x
//!   topic length) hash work, independent of how many filters or subscribers
//!   exist, and of shapes that cannot fit: a client that invents 10,000 shapes of
//!   other depths costs a 3-level publish nothing (`examples/topic_index_bench`,
//!   adversarial rows). Shapes that do fit are at most 2^L + 2^(L+1) - 1, so only
//!   deep topics can meet many; real deployments have a handful of shapes.
//! * No duplicates: a valid topic has no `+` or `#` [MQTT-3.3.2-2], so a candidate
//!   string shows its own shape and two shapes never build the same filter; topics
//!   that contain a wildcard character (invalid) match nothing.
//! * The candidate string and level offsets live in a scratch buffer inside a
//!   `Cell`, taken out for the call and put back afterwards, so matching takes
//!   `&self` and allocates nothing in the steady state. A callback that re-enters
//!   the index only finds an empty scratch and allocates its own; nothing panics.
//!   (The `Cell` makes the index `!Sync`, which the single-threaded broker is fine with.)
//! * Per-filter subscribers ([`Subscribers`]) are one inline subscriber, a boxed
//!   slice of up to 8 searched linearly, or a boxed `HashMap` beyond that, so the
//!   common per-device filter costs no extra allocation and 10,000-subscriber
//!   fan-out stays O(1) per subscribe. With `K = usize` an entry is 24 bytes
//!   (`Subscribers`) + 8 bytes (where its text is in one string of every
//!   filter's text, back to back: no allocation per filter), plus the text,
//!   and 4/3 to 8/3 slots of 8 bytes (the table is 3/8 to 3/4 full). Empty entries
//!   and unused shapes are removed at once, vacant positions are reused, and
//!   the tables shrink when they fall to a quarter of their capacity.
//! * Shared subscriptions (`$share/g/f`, v5): the broker strips `$share/g/` and
//!   either keeps a second index keyed by group or uses a `K` that names the group;
//!   nothing here assumes one subscriber per session.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::Hash;
use std::rc::Rc;

use super::keyed_hash::KeyedHash;
use super::slot_table::{SlotTable, FREE};
use crate::protocol::SubscriptionOptions;

/// One subscription as stored in the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription {
    /// The options given in SUBSCRIBE.
    pub options: SubscriptionOptions,
    /// The Subscription Identifier given in SUBSCRIBE (v5), if any.
    pub identifier: Option<u32>,
}

/// Shape byte of a `+` level.
const PLUS: u8 = b'+';
/// Shape byte of a final `#` level.
const HASH: u8 = b'#';
/// Shape byte of a literal level.
const LITERAL: u8 = b'.';

/// Largest subscriber count kept in a linearly searched slice.
const FEW_MAX: usize = 8;
/// A map shrinks back to a slice when it falls to this many subscribers (below
/// `FEW_MAX`, so one subscriber coming and going at the border does not flip it).
const MANY_TO_FEW: usize = 4;

/// The subscribers of one filter. Never empty: the index removes the filter
/// instead. `Few` always holds 2..=FEW_MAX entries, `Many` more than MANY_TO_FEW.
enum Subscribers<K> {
    /// The common case (one device, one filter): no allocation.
    One(K, Subscription),
    /// A few subscribers; a boxed slice is smaller than a map and as fast to search.
    Few(Box<[(K, Subscription)]>),
    /// Fan-out: O(1) subscribe/unsubscribe. Boxed to keep the enum small.
    Many(Box<ManyMap<K>>),
}

/// The map behind [`Subscribers::Many`] (a newtype so the box holds one thing).
struct ManyMap<K>(HashMap<K, Subscription>);

impl<K: Copy + Eq + Hash> Subscribers<K> {
    /// Add or replace `k`; true if it is new.
    fn insert(&mut self, k: K, s: Subscription) -> bool {
        match self {
            Subscribers::One(k0, s0) => {
                if *k0 == k {
                    *s0 = s;
                    return false;
                }
                *self = Subscribers::Few(Box::new([(*k0, *s0), (k, s)]));
                true
            }
            Subscribers::Few(list) => {
                if let Some(entry) = list.iter_mut().find(|e| e.0 == k) {
                    entry.1 = s;
                    return false;
                }
                if list.len() < FEW_MAX {
                    let mut grown = Vec::with_capacity(list.len() + 1);
                    grown.extend_from_slice(list);
                    grown.push((k, s));
                    *list = grown.into_boxed_slice();
                } else {
                    let mut map = HashMap::with_capacity(FEW_MAX * 2);
                    map.extend(list.iter().copied());
                    map.insert(k, s);
                    *self = Subscribers::Many(Box::new(ManyMap(map)));
                }
                true
            }
            Subscribers::Many(map) => map.0.insert(k, s).is_none(),
        }
    }

    /// Remove `k`. None if it was not there, Some(true) if the set is now empty
    /// (the caller must drop the entry: `One` cannot be empty).
    fn remove(&mut self, k: K) -> Option<bool> {
        match self {
            Subscribers::One(k0, _) => (*k0 == k).then_some(true),
            Subscribers::Few(list) => {
                let pos = list.iter().position(|e| e.0 == k)?;
                if list.len() <= 2 {
                    let other = list.iter().find(|e| e.0 != k).copied()?;
                    *self = Subscribers::One(other.0, other.1);
                } else {
                    let shrunk: Vec<_> = list
                        .iter()
                        .enumerate()
                        .filter(|&(i, _)| i != pos)
                        .map(|(_, e)| *e)
                        .collect();
                    *list = shrunk.into_boxed_slice();
                }
                Some(false)
            }
            Subscribers::Many(map) => {
                map.0.remove(&k)?;
                if map.0.len() <= MANY_TO_FEW {
                    let list: Vec<_> = map.0.iter().map(|(k, s)| (*k, *s)).collect();
                    *self = Subscribers::Few(list.into_boxed_slice());
                } else {
                    shrink_if_sparse(&mut map.0);
                }
                Some(false)
            }
        }
    }

    /// The subscription of `k`, if any.
    fn get(&self, k: K) -> Option<&Subscription> {
        match self {
            Subscribers::One(k0, s) => (*k0 == k).then_some(s),
            Subscribers::Few(list) => list.iter().find(|e| e.0 == k).map(|e| &e.1),
            Subscribers::Many(map) => map.0.get(&k),
        }
    }

    /// Call `f` for every subscriber.
    fn for_each(&self, filter: &str, f: &mut impl FnMut(&str, K, &Subscription)) {
        match self {
            Subscribers::One(k, s) => f(filter, *k, s),
            Subscribers::Few(list) => list.iter().for_each(|(k, s)| f(filter, *k, s)),
            Subscribers::Many(map) => map.0.iter().for_each(|(k, s)| f(filter, *k, s)),
        }
    }
}

/// Give memory back once a map has emptied to a quarter of its capacity. Shrinking
/// to twice the length keeps this amortised O(1) per removal.
fn shrink_if_sparse<A: Eq + Hash, B>(map: &mut HashMap<A, B>) {
    if map.capacity() > 64 && map.len() * 4 < map.capacity() {
        map.shrink_to(map.len() * 2);
    }
}

/// The bookkeeping of one active shape.
#[derive(Debug)]
struct ShapeInfo {
    /// Number of distinct filters with this shape; the shape goes at zero.
    filters: usize,
    /// Its position in its group (see [`SubscriptionIndex::group_mut`]), so it
    /// leaves the group in O(1).
    slot: usize,
}

/// Shapes that fit the same topics: those of one level count, or those ending in
/// `#` after the same number of levels. Shared with the `shapes` map's keys.
type Group = Vec<Rc<[u8]>>;

/// The shape of `filter`, or None for a filter without wildcard levels (an exact
/// filter). A `#` that is not the last level, or wildcard characters inside a
/// level, are kept as literal text: no valid topic contains them, so such (invalid)
/// filters are stored but never match.
fn shape_of(filter: &str) -> Option<Vec<u8>> {
    let mut shape = Vec::new();
    let mut wild = false;
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let byte = match level {
            "+" => PLUS,
            "#" if levels.peek().is_none() => HASH,
            _ => LITERAL,
        };
        wild |= byte != LITERAL;
        shape.push(byte);
    }
    wild.then_some(shape)
}

/// Per-call working memory of [`SubscriptionIndex::for_each_match`].
#[derive(Default)]
struct Scratch {
    /// The candidate filter being built.
    candidate: String,
    /// Byte range of each level of the topic.
    levels: Vec<(usize, usize)>,
    /// Shapes visited by matching (tests check the cost follows fitting shapes).
    #[cfg(test)]
    visited: usize,
}

/// Where a filter lives in the index: stable while any subscriber holds the
/// filter, so a session can name its filters by it instead of keeping a copy
/// of their text (one copy per filter, in the index). Reused once the last
/// subscriber leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FilterId(u32);

/// One filter and its subscribers.
struct Entry<K> {
    /// Where its text starts in [`SubscriptionIndex::texts`].
    start: u32,
    /// Its length in bytes.
    len: u32,
    subscribers: Subscribers<K>,
}

/// Subscriptions of subscribers of type `K` (the broker uses its session key).
pub struct SubscriptionIndex<K> {
    /// Every filter, exact or wildcard, with its subscribers, at its
    /// [`FilterId`]; `None` where a filter has gone (reused by the next).
    entries: Vec<Option<Entry<K>>>,
    /// Positions of `None`s in `entries` (some may lie past its end after it
    /// shrank: skipped when taken).
    vacant: Vec<u32>,
    /// The entries by filter text.
    slots: SlotTable,
    /// Every entry's filter text, back to back: no allocation (and no
    /// allocator's rounding up, 16 B of a 32-byte chunk for a short filter)
    /// per filter. Texts of removed filters stay until they are half of it.
    texts: String,
    /// Bytes in `texts` that no entry uses any more.
    dead: usize,
    /// The hash of filter texts and topics (keyed: peers choose both).
    hasher: KeyedHash,
    /// Active wildcard shapes with their filter counts.
    shapes: HashMap<Rc<[u8]>, ShapeInfo>,
    /// Shapes without `#`, by level count: fit topics of exactly that many levels.
    fixed: BTreeMap<usize, Group>,
    /// Shapes ending in `#`, by the levels before it: fit topics of at least that
    /// many levels (`a/#` matches `a`: [MQTT-4.7.1-2]).
    open: BTreeMap<usize, Group>,
    /// Number of filters without wildcards (skip the exact lookup when zero).
    exact: usize,
    /// How many of those contain a `+` or `#` inside a level (an invalid
    /// filter, stored but matching no valid topic).
    odd_exact: usize,
    /// Number of (filter, subscriber) pairs.
    len: usize,
    /// Reused by matching; see the module documentation.
    scratch: Cell<Scratch>,
}

impl<K> fmt::Debug for SubscriptionIndex<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionIndex")
            .field("subscriptions", &self.len)
            .field("filters", &self.slots.len())
            .field("shapes", &self.shapes.len())
            .finish()
    }
}

impl<K: Copy + Eq + Hash> SubscriptionIndex<K> {
    /// An empty index.
    pub fn new() -> Self {
        SubscriptionIndex {
            entries: Vec::new(),
            vacant: Vec::new(),
            slots: SlotTable::default(),
            texts: String::new(),
            dead: 0,
            hasher: KeyedHash::default(),
            shapes: HashMap::new(),
            fixed: BTreeMap::new(),
            open: BTreeMap::new(),
            exact: 0,
            odd_exact: 0,
            len: 0,
            scratch: Cell::new(Scratch::default()),
        }
    }

    /// The 32 bits of `text`'s hash the table keeps.
    #[inline]
    fn hash(&self, text: &str) -> u32 {
        // The low bits pick the slot; 32 of them are plenty for any table
        // that fits in memory.
        self.hasher.hash(text.as_bytes()) as u32
    }

    /// The slot and entry of `filter`.
    #[inline]
    fn find(&self, filter: &str) -> Option<(usize, &Entry<K>)> {
        let hash = self.hash(filter);
        let mut found = None;
        let slot = self.slots.find(hash, |pos| {
            found = self
                .entries
                .get(pos as usize)
                .and_then(Option::as_ref)
                .filter(|e| self.text(e) == filter);
            found.is_some()
        })?;
        Some((slot, found?))
    }

    /// The text of `entry`'s filter.
    #[inline]
    fn text(&self, entry: &Entry<K>) -> &str {
        let start = entry.start as usize;
        self.texts
            .get(start..start + entry.len as usize)
            .unwrap_or_default()
    }

    /// The subscribers of `filter`, to change.
    fn subscribers_mut(&mut self, filter: &str) -> Option<&mut Subscribers<K>> {
        let (slot, _) = self.find(filter)?;
        let pos = self.slots.value(slot);
        let entry = self.entries.get_mut(pos as usize)?.as_mut()?;
        Some(&mut entry.subscribers)
    }

    /// Add or replace [MQTT-3.8.4-3] `subscriber`'s subscription to `filter` (a valid
    /// filter). Returns true if it is new.
    pub fn subscribe(&mut self, filter: &str, subscriber: K, subscription: Subscription) -> bool {
        let new = match self.subscribers_mut(filter) {
            Some(subscribers) => subscribers.insert(subscriber, subscription),
            None => {
                if !self.add_entry(filter, Subscribers::One(subscriber, subscription)) {
                    return false;
                }
                self.add_shape(filter);
                true
            }
        };
        if new {
            self.len += 1;
        }
        new
    }

    /// Store a new filter's entry at a vacant position (or a new one at the
    /// end). False (nothing stored) only past 4 GiB of filter text, which
    /// 32-bit offsets cannot reach.
    fn add_entry(&mut self, filter: &str, subscribers: Subscribers<K>) -> bool {
        let (Ok(start), Ok(len)) = (u32::try_from(self.texts.len()), u32::try_from(filter.len()))
        else {
            return false;
        };
        if start.checked_add(len).is_none() {
            return false;
        }
        self.texts.push_str(filter);
        let entry = Entry {
            start,
            len,
            subscribers,
        };
        let mut reuse = None;
        while let Some(v) = self.vacant.pop() {
            if self.entries.get(v as usize).is_some_and(Option::is_none) {
                reuse = Some(v);
                break;
            }
        }
        let pos = match reuse.and_then(|v| Some((v, self.entries.get_mut(v as usize)?))) {
            Some((v, slot)) => {
                *slot = Some(entry);
                v
            }
            None => {
                // Entry positions are below `FREE`: a `u32` of filters would
                // need hundreds of gigabytes first.
                let pos = u32::try_from(self.entries.len()).unwrap_or(FREE - 1);
                self.entries.push(Some(entry));
                pos
            }
        };
        let hash = self.hash(filter);
        self.slots.insert(pos, hash);
        true
    }

    /// Drop the entry in `slot` (at `pos`), emptied of subscribers.
    fn remove_entry(&mut self, slot: usize, pos: u32) {
        self.slots.remove(slot);
        let Some(entry) = self.entries.get_mut(pos as usize).and_then(Option::take) else {
            return;
        };
        let filter = self.text(&entry).to_owned();
        self.remove_shape(&filter);
        self.dead += entry.len as usize;
        if self.slots.len() == 0 {
            self.texts = String::new();
            self.dead = 0;
        } else if self.dead > 4096 && self.dead * 2 > self.texts.len() {
            self.compact_texts();
        }
        // Vacant positions at the end go; the rest wait for the next filter.
        while self.entries.last().is_some_and(Option::is_none) {
            self.entries.pop();
        }
        if pos as usize >= self.entries.len() {
            if self.entries.capacity() > 64 && self.entries.len() * 4 < self.entries.capacity() {
                self.entries.shrink_to(self.entries.len() * 2);
            }
        } else {
            self.vacant.push(pos);
        }
        if self.vacant.len() > self.entries.len() {
            // Mostly stale (the entries shrank under them): drop those.
            self.vacant.retain(|&v| (v as usize) < self.entries.len());
            if self.vacant.capacity() > 64 && self.vacant.len() * 4 < self.vacant.capacity() {
                self.vacant.shrink_to(self.vacant.len() * 2);
            }
        }
    }

    /// Copy the texts still in use into a new string of their size. Each byte
    /// removed pays for at most one copy of a live byte: amortised O(1).
    fn compact_texts(&mut self) {
        let live = self.texts.len().saturating_sub(self.dead);
        let mut texts = String::with_capacity(live);
        for entry in self.entries.iter_mut().flatten() {
            let start = entry.start as usize;
            let text = self
                .texts
                .get(start..start + entry.len as usize)
                .unwrap_or_default();
            // Smaller than before: the offsets still fit.
            entry.start = u32::try_from(texts.len()).unwrap_or(u32::MAX);
            texts.push_str(text);
        }
        self.texts = texts;
        self.dead = 0;
    }

    /// Remove `subscriber` from the entry in `slot`; true if it was there.
    fn remove_subscriber(&mut self, slot: usize, subscriber: K) -> bool {
        let pos = self.slots.value(slot);
        let Some(entry) = self.entries.get_mut(pos as usize).and_then(Option::as_mut) else {
            return false;
        };
        let Some(now_empty) = entry.subscribers.remove(subscriber) else {
            return false;
        };
        if now_empty {
            self.remove_entry(slot, pos);
        }
        self.len -= 1;
        true
    }

    /// Remove `subscriber`'s subscription to `filter`. Returns true if it existed.
    pub fn unsubscribe(&mut self, filter: &str, subscriber: K) -> bool {
        match self.find(filter) {
            Some((slot, _)) => self.remove_subscriber(slot, subscriber),
            None => false,
        }
    }

    /// Remove `subscriber`'s subscription to the filter at `id`. Returns true
    /// if it existed.
    pub fn unsubscribe_id(&mut self, id: FilterId, subscriber: K) -> bool {
        let Some(entry) = self.entries.get(id.0 as usize).and_then(Option::as_ref) else {
            return false;
        };
        let hash = self.hash(self.text(entry));
        match self.slots.find(hash, |pos| pos == id.0) {
            Some(slot) => self.remove_subscriber(slot, subscriber),
            None => false,
        }
    }

    /// Where `filter` is held, if any subscriber holds it.
    pub fn id(&self, filter: &str) -> Option<FilterId> {
        let (slot, _) = self.find(filter)?;
        Some(FilterId(self.slots.value(slot)))
    }

    /// The text of the filter at `id` (empty if none is there).
    pub fn filter(&self, id: FilterId) -> &str {
        self.entries
            .get(id.0 as usize)
            .and_then(Option::as_ref)
            .map_or("", |e| self.text(e))
    }

    /// The subscription `subscriber` holds on exactly `filter`, if any (e.g. to
    /// decide Retain Handling 1, "send retained only if new").
    pub fn get(&self, filter: &str, subscriber: K) -> Option<&Subscription> {
        self.find(filter)?.1.subscribers.get(subscriber)
    }

    /// Call `f` for every subscription whose filter matches `topic` (a valid topic
    /// name), once per (filter, subscriber).
    pub fn for_each_match(&self, topic: &str, mut f: impl FnMut(&str, K, &Subscription)) {
        if self.slots.len() == 0 {
            return;
        }
        let mut scratch = self.scratch.take();
        self.match_with(topic, &mut scratch, &mut f);
        self.scratch.set(scratch);
    }

    /// Number of (filter, subscriber) pairs.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there are no subscriptions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The body of [`Self::for_each_match`], with the scratch taken out.
    fn match_with(
        &self,
        topic: &str,
        scratch: &mut Scratch,
        f: &mut impl FnMut(&str, K, &Subscription),
    ) {
        // A topic with no character at all is not a topic name [MQTT-4.7.3-1].
        if topic.is_empty() {
            return;
        }
        if self.shapes.is_empty() {
            // Only exact filters: no levels to split, one lookup. A topic with a
            // wildcard character matches nothing [MQTT-3.3.2-2]; it could only
            // find an exact filter with the same character in it (which the
            // codec refuses in a SUBSCRIBE), so it is looked for only then.
            if self.odd_exact > 0 && topic.bytes().any(|b| b == b'+' || b == b'#') {
                return;
            }
            if let Some((_, e)) = self.find(topic) {
                e.subscribers.for_each(self.text(e), f);
            }
            return;
        }
        // Split into levels; a topic with a wildcard character is not a topic
        // name [MQTT-3.3.2-2] and matches nothing.
        scratch.levels.clear();
        let mut start = 0;
        for (i, byte) in topic.bytes().enumerate() {
            match byte {
                b'/' => {
                    scratch.levels.push((start, i));
                    start = i + 1;
                }
                b'+' | b'#' => return,
                _ => {}
            }
        }
        scratch.levels.push((start, topic.len()));

        if self.exact > 0 {
            if let Some((_, e)) = self.find(topic) {
                e.subscribers.for_each(self.text(e), f);
            }
        }

        let dollar = topic.starts_with('$');
        let levels = scratch.levels.len();
        // Only the groups whose shapes fit this many levels.
        let fixed = self.fixed.get(&levels).into_iter();
        // (An empty map's range is not free: skip it.)
        let open = (!self.open.is_empty())
            .then(|| self.open.range(..=levels).map(|(_, group)| group))
            .into_iter()
            .flatten();
        for shape in fixed.chain(open).flatten() {
            #[cfg(test)]
            {
                scratch.visited += 1;
            }
            // [MQTT-4.7.2-1]: `+/...` and `#` do not match `$SYS/...` and the like.
            if dollar && shape.first() != Some(&LITERAL) {
                continue;
            }
            if !build_candidate(topic, &scratch.levels, shape, &mut scratch.candidate) {
                continue;
            }
            if let Some((_, e)) = self.find(&scratch.candidate) {
                e.subscribers.for_each(self.text(e), f);
            }
        }
    }

    /// The group `shape` belongs to, created if needed.
    fn group_mut(&mut self, shape: &[u8]) -> &mut Group {
        match shape.split_last() {
            Some((&HASH, before)) => self.open.entry(before.len()).or_default(),
            _ => self.fixed.entry(shape.len()).or_default(),
        }
    }

    /// Count a new filter in its shape (or in the exact filters).
    fn add_shape(&mut self, filter: &str) {
        let Some(shape) = shape_of(filter) else {
            self.exact += 1;
            self.odd_exact += usize::from(filter.contains(['+', '#']));
            return;
        };
        if let Some(info) = self.shapes.get_mut(shape.as_slice()) {
            info.filters += 1;
            return;
        }
        let shape: Rc<[u8]> = shape.into();
        let group = self.group_mut(&shape);
        group.push(Rc::clone(&shape));
        let slot = group.len() - 1;
        self.shapes.insert(shape, ShapeInfo { filters: 1, slot });
    }

    /// Uncount a removed filter; drop its shape when no filter has it any more.
    fn remove_shape(&mut self, filter: &str) {
        let Some(shape) = shape_of(filter) else {
            self.exact = self.exact.saturating_sub(1);
            self.odd_exact =
                (self.odd_exact).saturating_sub(usize::from(filter.contains(['+', '#'])));
            return;
        };
        let Some(info) = self.shapes.get_mut(shape.as_slice()) else {
            return;
        };
        info.filters = info.filters.saturating_sub(1);
        if info.filters > 0 {
            return;
        }
        let slot = info.slot;
        self.shapes.remove(shape.as_slice());
        shrink_if_sparse(&mut self.shapes);
        let (groups, key) = match shape.split_last() {
            Some((&HASH, before)) => (&mut self.open, before.len()),
            _ => (&mut self.fixed, shape.len()),
        };
        let Some(group) = groups.get_mut(&key) else {
            return;
        };
        if slot < group.len() {
            group.swap_remove(slot);
        }
        if let Some(moved) = group.get(slot) {
            if let Some(info) = self.shapes.get_mut(&**moved) {
                info.slot = slot;
            }
        }
        if group.is_empty() {
            groups.remove(&key);
        } else if group.capacity() > 64 && group.len() * 4 < group.capacity() {
            group.shrink_to(group.len() * 2);
        }
    }
}

/// Write into `out` the filter of shape `shape` that could match `topic`, whose
/// level ranges are `levels`. False if the shape needs a level the topic lacks
/// (the caller has already checked; this only keeps indexing panic-free).
fn build_candidate(topic: &str, levels: &[(usize, usize)], shape: &[u8], out: &mut String) -> bool {
    out.clear();
    for (i, &byte) in shape.iter().enumerate() {
        if i > 0 {
            out.push('/');
        }
        match byte {
            PLUS => out.push('+'),
            HASH => out.push('#'),
            _ => {
                let Some(level) = levels.get(i).and_then(|&(a, b)| topic.get(a..b)) else {
                    return false;
                };
                out.push_str(level);
            }
        }
    }
    true
}

impl<K: Copy + Eq + Hash> Default for SubscriptionIndex<K> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{QoS, RetainHandling};
    use std::collections::BTreeMap;

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

    fn sub(qos: QoS, id: Option<u32>) -> Subscription {
        Subscription {
            options: SubscriptionOptions {
                qos,
                no_local: false,
                retain_as_published: false,
                retain_handling: RetainHandling::SendAtSubscribe,
            },
            identifier: id,
        }
    }

    fn matches_of(index: &SubscriptionIndex<u32>, topic: &str) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        index.for_each_match(topic, |f, k, _| out.push((f.to_string(), k)));
        out.sort();
        out
    }

    fn pairs(list: &[(&str, u32)]) -> Vec<(String, u32)> {
        let mut v: Vec<_> = list.iter().map(|(f, k)| (f.to_string(), *k)).collect();
        v.sort();
        v
    }

    #[test]
    fn reference_matcher_follows_the_spec_examples() {
        // 4.7.1.2 and 4.7.1.3 non-normative examples.
        assert!(ref_matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1"
        ));
        assert!(ref_matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1/ranking"
        ));
        assert!(ref_matches("sport/#", "sport"));
        assert!(ref_matches("#", "sport"));
        assert!(ref_matches("sport/+", "sport/"));
        assert!(!ref_matches("sport/+", "sport"));
        assert!(ref_matches("+/+", "/finance"));
        assert!(ref_matches("/+", "/finance"));
        assert!(!ref_matches("+", "/finance"));
        assert!(!ref_matches("#", "$SYS/x"));
        assert!(!ref_matches("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(ref_matches("$SYS/#", "$SYS/monitor/Clients"));
        assert!(ref_matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
    }

    #[test]
    fn exact_plus_and_hash() {
        let mut ix = SubscriptionIndex::new();
        let s = sub(QoS::AtLeastOnce, None);
        assert!(ix.subscribe("a/b", 1, s));
        assert!(ix.subscribe("a/+", 2, s));
        assert!(ix.subscribe("a/#", 3, s));
        assert!(ix.subscribe("#", 4, s));
        assert!(ix.subscribe("+/+", 5, s));
        assert!(ix.subscribe("+", 6, s));
        assert_eq!(ix.len(), 6);
        assert_eq!(
            matches_of(&ix, "a/b"),
            pairs(&[("a/b", 1), ("a/+", 2), ("a/#", 3), ("#", 4), ("+/+", 5)])
        );
        // `a/#` matches `a` [MQTT-4.7.1-2]; `a/+` does not.
        assert_eq!(
            matches_of(&ix, "a"),
            pairs(&[("a/#", 3), ("#", 4), ("+", 6)])
        );
        assert_eq!(matches_of(&ix, "a/b/c"), pairs(&[("a/#", 3), ("#", 4)]));
    }

    #[test]
    fn dollar_topics_skip_leading_wildcards() {
        let mut ix = SubscriptionIndex::new();
        let s = sub(QoS::AtMostOnce, None);
        ix.subscribe("#", 1, s);
        ix.subscribe("+/monitor/Clients", 2, s);
        ix.subscribe("$SYS/#", 3, s);
        ix.subscribe("$SYS/monitor/+", 4, s);
        ix.subscribe("$SYS/monitor/Clients", 5, s);
        // [MQTT-4.7.2-1]
        assert_eq!(
            matches_of(&ix, "$SYS/monitor/Clients"),
            pairs(&[
                ("$SYS/#", 3),
                ("$SYS/monitor/+", 4),
                ("$SYS/monitor/Clients", 5)
            ])
        );
        assert_eq!(
            matches_of(&ix, "x/monitor/Clients"),
            pairs(&[("#", 1), ("+/monitor/Clients", 2)])
        );
    }

    #[test]
    fn empty_levels_are_levels() {
        let mut ix = SubscriptionIndex::new();
        let s = sub(QoS::AtMostOnce, None);
        ix.subscribe("+/+", 1, s);
        ix.subscribe("/+", 2, s);
        ix.subscribe("+", 3, s);
        ix.subscribe("a//b", 4, s);
        ix.subscribe("a/+/b", 5, s);
        ix.subscribe("sport/+", 6, s);
        assert_eq!(matches_of(&ix, "/finance"), pairs(&[("+/+", 1), ("/+", 2)]));
        assert_eq!(matches_of(&ix, "a//b"), pairs(&[("a//b", 4), ("a/+/b", 5)]));
        assert_eq!(
            matches_of(&ix, "sport/"),
            pairs(&[("+/+", 1), ("sport/+", 6)])
        );
        assert_eq!(matches_of(&ix, "/"), pairs(&[("+/+", 1), ("/+", 2)]));
    }

    #[test]
    fn invalid_topics_match_nothing() {
        let mut ix = SubscriptionIndex::new();
        let s = sub(QoS::AtMostOnce, None);
        ix.subscribe("#", 1, s);
        ix.subscribe("a/+", 2, s);
        ix.subscribe("+", 3, s);
        assert!(matches_of(&ix, "a/+").is_empty());
        assert!(matches_of(&ix, "+").is_empty());
        assert!(matches_of(&ix, "a/#").is_empty());
        assert!(matches_of(&ix, "").is_empty());
    }

    #[test]
    fn wildcard_characters_inside_levels_match_nothing() {
        // Invalid filters the codec would refuse, stored as exact filters:
        // the topics that spell them are invalid too and find nothing, with
        // or without wildcard filters beside them (two matching paths).
        let mut ix = SubscriptionIndex::new();
        let s = sub(QoS::AtMostOnce, None);
        ix.subscribe("a+b", 1, s);
        ix.subscribe("x/#/y", 2, s);
        ix.subscribe("plain", 3, s);
        assert_eq!(ix.odd_exact, 2);
        for _ in 0..2 {
            assert!(matches_of(&ix, "a+b").is_empty());
            assert!(matches_of(&ix, "x/#/y").is_empty());
            assert!(matches_of(&ix, "").is_empty());
            assert_eq!(matches_of(&ix, "plain"), pairs(&[("plain", 3)]));
            ix.subscribe("+/+/#", 4, s);
        }
        assert!(ix.unsubscribe("a+b", 1) && ix.unsubscribe("x/#/y", 2));
        assert_eq!(ix.odd_exact, 0);
    }

    #[test]
    fn replace_keeps_one_entry_and_updates_options() {
        let mut ix = SubscriptionIndex::new();
        assert!(ix.subscribe("a/+", 7, sub(QoS::AtMostOnce, None)));
        // [MQTT-3.8.4-3] a second SUBSCRIBE replaces the first.
        assert!(!ix.subscribe("a/+", 7, sub(QoS::ExactlyOnce, Some(9))));
        assert_eq!(ix.len(), 1);
        assert_eq!(ix.get("a/+", 7), Some(&sub(QoS::ExactlyOnce, Some(9))));
        let mut seen = Vec::new();
        ix.for_each_match("a/x", |_, k, s| seen.push((k, *s)));
        assert_eq!(seen, vec![(7, sub(QoS::ExactlyOnce, Some(9)))]);
        assert!(ix.unsubscribe("a/+", 7));
        assert!(!ix.unsubscribe("a/+", 7));
        assert!(ix.is_empty());
        assert!(ix.no_entries() && ix.shapes.is_empty());
    }

    #[test]
    fn fan_out_tiers_grow_and_shrink() {
        let mut ix = SubscriptionIndex::new();
        for k in 0..10_000u32 {
            assert!(ix.subscribe("news/#", k, sub(QoS::AtMostOnce, Some(k))));
        }
        assert_eq!(ix.len(), 10_000);
        let mut n = 0;
        ix.for_each_match("news/today", |_, k, s| {
            assert_eq!(s.identifier, Some(k));
            n += 1;
        });
        assert_eq!(n, 10_000);
        for k in 0..9_999u32 {
            assert!(ix.unsubscribe("news/#", k));
            if k % 997 == 0 {
                assert_eq!(matches_of(&ix, "news").len(), (9_999 - k) as usize);
            }
        }
        assert!(matches!(
            ix.find("news/#").map(|(_, e)| &e.subscribers),
            Some(Subscribers::One(9_999, _))
        ));
        assert_eq!(ix.shapes.len(), 1);
        assert!(ix.unsubscribe("news/#", 9_999));
        assert!(ix.no_entries() && ix.shapes.is_empty() && ix.is_empty());
    }

    #[test]
    fn shapes_are_refcounted_by_filter() {
        let mut ix = SubscriptionIndex::new();
        let s = sub(QoS::AtMostOnce, None);
        ix.subscribe("a/+/c", 1, s);
        ix.subscribe("b/+/d", 1, s);
        ix.subscribe("b/+/d", 2, s);
        ix.subscribe("x/y", 1, s);
        assert_eq!(ix.shapes.len(), 1);
        assert_eq!(ix.shapes.get(b".+.".as_slice()).map(|i| i.filters), Some(2));
        assert_eq!(ix.exact, 1);
        ix.unsubscribe("b/+/d", 1);
        assert_eq!(ix.shapes.get(b".+.".as_slice()).map(|i| i.filters), Some(2));
        ix.unsubscribe("b/+/d", 2);
        assert_eq!(ix.shapes.get(b".+.".as_slice()).map(|i| i.filters), Some(1));
        ix.unsubscribe("a/+/c", 1);
        ix.unsubscribe("x/y", 1);
        assert!(ix.shapes.is_empty() && ix.no_entries());
        assert_eq!(ix.exact, 0);
    }

    #[test]
    fn deep_filters_and_topics_do_not_hurt() {
        let mut ix = SubscriptionIndex::new();
        let deep_topic = "a/".repeat(40_000) + "z";
        let deep_filter = "+/".repeat(40_000) + "#";
        ix.subscribe(&deep_filter, 1, sub(QoS::AtMostOnce, None));
        ix.subscribe("a/#", 2, sub(QoS::AtMostOnce, None));
        assert_eq!(matches_of(&ix, &deep_topic).len(), 2);
        assert_eq!(matches_of(&ix, "a/b"), pairs(&[("a/#", 2)]));
        assert!(ix.unsubscribe(&deep_filter, 1));
        assert_eq!(ix.shapes.len(), 1);
    }

    #[test]
    fn reentrant_callback_is_fine() {
        let mut ix = SubscriptionIndex::new();
        ix.subscribe("a/+", 1, sub(QoS::AtMostOnce, None));
        ix.subscribe("a/b", 2, sub(QoS::AtMostOnce, None));
        let mut inner = 0;
        ix.for_each_match("a/b", |_, _, _| {
            ix.for_each_match("a/c", |_, _, _| inner += 1);
        });
        assert_eq!(inner, 2);
    }

    #[test]
    fn entry_stays_small() {
        // One subscriber per filter is the common case; keep it inline and small.
        // An entry: the text's place (8 bytes) + 24-byte subscribers, and an
        // 8-byte slot (module documentation).
        assert_eq!(std::mem::size_of::<Option<Entry<usize>>>(), 32);
        assert!(std::mem::size_of::<Subscribers<usize>>() <= 24);
        assert!(std::mem::size_of::<Subscribers<u32>>() <= 24);
        assert_eq!(std::mem::size_of::<(u32, u32)>(), 8);
    }

    impl<K> SubscriptionIndex<K> {
        /// Nothing left of any filter: no slot, no entry, no vacant position.
        fn no_entries(&self) -> bool {
            self.slots.len() == 0
                && self.entries.is_empty()
                && self.vacant.is_empty()
                && self.texts.capacity() == 0
        }
    }

    #[test]
    fn filter_ids_stay_while_held_and_are_reused_after() {
        let mut ix = SubscriptionIndex::new();
        let s = sub(QoS::AtMostOnce, None);
        ix.subscribe("a/b", 1, s);
        ix.subscribe("a/+", 1, s);
        ix.subscribe("c", 1, s);
        let (ab, plus, c) = (ix.id("a/b"), ix.id("a/+"), ix.id("c"));
        assert_eq!(ix.id("absent"), None);
        let Some(ab) = ab else { panic!("a/b held") };
        assert_eq!(ix.filter(ab), "a/b");
        // A second subscriber and the removal of others leave the id as it was.
        ix.subscribe("a/b", 2, s);
        assert!(ix.unsubscribe("a/+", 1));
        assert_eq!(ix.id("a/b"), Some(ab));
        assert!(ix.unsubscribe_id(ab, 1));
        assert!(!ix.unsubscribe_id(ab, 1), "already gone");
        assert_eq!(matches_of(&ix, "a/b"), pairs(&[("a/b", 2)]));
        assert!(ix.unsubscribe_id(ab, 2));
        assert_eq!((ix.id("a/b"), ix.filter(ab)), (None, ""));
        assert!(!ix.unsubscribe_id(ab, 2), "a vacant position");
        // The next filter takes a vacant position: the vector does not grow.
        ix.subscribe("d", 3, s);
        assert!([Some(ab), plus].contains(&ix.id("d")));
        assert_eq!(ix.id("c"), c);
        assert_eq!(ix.entries.len(), 3);
        assert!(ix.unsubscribe("c", 1) && ix.unsubscribe("d", 3));
        assert!(ix.no_entries() && ix.is_empty());
    }

    #[test]
    fn memory_goes_back_after_a_peak() {
        let mut ix = SubscriptionIndex::new();
        let s = sub(QoS::AtMostOnce, None);
        for k in 0..20_000u32 {
            ix.subscribe(&format!("dev/{k}/cmd"), k, s);
        }
        let (slots, entries) = (ix.slots.capacity(), ix.entries.capacity());
        // Leave in an order that keeps the last entries longest.
        for k in 0..19_990u32 {
            assert!(ix.unsubscribe(&format!("dev/{k}/cmd"), k));
        }
        assert!(ix.slots.capacity() * 8 <= slots, "slots kept");
        assert!(ix.texts.len() < 2 * 4096 + 20 * 14, "texts compacted");
        assert_eq!(
            matches_of(&ix, "dev/19999/cmd"),
            pairs(&[("dev/19999/cmd", 19_999)])
        );
        for k in 19_990..20_000u32 {
            assert!(ix.unsubscribe(&format!("dev/{k}/cmd"), k));
        }
        assert!(ix.no_entries());
        assert!(ix.entries.capacity() * 8 <= entries, "entries kept");
    }

    /// Shapes visited while matching `topic`.
    fn visited(ix: &SubscriptionIndex<u32>, topic: &str) -> usize {
        let mut scratch = ix.scratch.take();
        scratch.visited = 0;
        ix.match_with(topic, &mut scratch, &mut |_, _, _| {});
        let n = scratch.visited;
        ix.scratch.set(scratch);
        n
    }

    /// Every shape is in the group that fits it, at the slot it records, once.
    fn assert_groups_consistent(ix: &SubscriptionIndex<u32>) {
        let mut seen = 0;
        for (open, groups) in [(false, &ix.fixed), (true, &ix.open)] {
            for (&key, group) in groups {
                assert!(!group.is_empty(), "empty group kept");
                for (slot, shape) in group.iter().enumerate() {
                    assert_eq!(shape.last() == Some(&HASH), open);
                    assert_eq!(shape.len() - usize::from(open), key);
                    assert_eq!(ix.shapes.get(&**shape).map(|i| i.slot), Some(slot));
                    seen += 1;
                }
            }
        }
        assert_eq!(seen, ix.shapes.len());
    }

    #[test]
    fn publish_visits_only_shapes_that_fit_its_depth() {
        // Issue 10 item 5: one client's 10,000 shapes of other depths must not
        // cost every publish a visit each.
        let mut ix = SubscriptionIndex::new();
        let s = sub(QoS::AtMostOnce, None);
        ix.subscribe("devices/+/status", 1, s);
        ix.subscribe("devices/#", 1, s);
        for i in 0..10_000u32 {
            // 8..=199 levels, distinct `+` patterns on levels 1..=6.
            let levels = 8 + (i % 190) as usize;
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
            ix.subscribe(&f.join("/"), 2, s);
        }
        assert_eq!(ix.shapes.len(), 10_002);
        assert_groups_consistent(&ix);
        assert_eq!(
            matches_of(&ix, "devices/7/status"),
            pairs(&[("devices/#", 1), ("devices/+/status", 1)])
        );
        // `.+.` and `.#`: the only shapes of 3 levels or with `#` after at most 3.
        assert_eq!(visited(&ix, "devices/7/status"), 2);
        // A 20-level topic meets the ~35 shapes of 20 levels and the ~220 `#`
        // shapes cut at 8 to 20 levels, not all 10,000.
        let deep = vec!["x"; 20].join("/");
        assert!(visited(&ix, &deep) < 300, "{}", visited(&ix, &deep));
        assert!(!matches_of(&ix, &deep).is_empty());
    }

    fn random_level(rng: &mut Rng, first: bool) -> &'static str {
        const LEVELS: [&str; 4] = ["", "a", "b", "c"];
        if first && rng.below(6) == 0 {
            return "$s";
        }
        LEVELS[rng.below(LEVELS.len())]
    }

    fn random_topic(rng: &mut Rng) -> String {
        let n = 1 + rng.below(4);
        let levels: Vec<&str> = (0..n).map(|i| random_level(rng, i == 0)).collect();
        let topic = levels.join("/");
        // A topic name has at least one character [MQTT-4.7.3-1].
        if topic.is_empty() {
            "/".to_string()
        } else {
            topic
        }
    }

    fn random_filter(rng: &mut Rng) -> String {
        let n = 1 + rng.below(4);
        let mut levels: Vec<&str> = (0..n)
            .map(|i| {
                if rng.below(3) == 0 {
                    "+"
                } else {
                    random_level(rng, i == 0)
                }
            })
            .collect();
        if rng.below(3) == 0 {
            levels.push("#");
        }
        let filter = levels.join("/");
        // A filter has at least one character [MQTT-4.7.3-1].
        if filter.is_empty() || rng.below(8) == 0 {
            return "#".to_string();
        }
        filter
    }

    #[test]
    fn randomized_cross_check_against_reference() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for round in 0..4 {
            let mut ix = SubscriptionIndex::new();
            let mut model: BTreeMap<(String, u32), Subscription> = BTreeMap::new();
            let pool: Vec<String> = (0..40).map(|_| random_filter(&mut rng)).collect();
            let topics: Vec<String> = (0..60).map(|_| random_topic(&mut rng)).collect();
            let subscribers = 4 + 8 * round as u32;
            for step in 0..6_000 {
                let filter = &pool[rng.below(pool.len())];
                let k = rng.below(subscribers as usize) as u32;
                if rng.below(3) == 0 {
                    let had = model.remove(&(filter.clone(), k)).is_some();
                    let removed = if step % 2 == 0 {
                        ix.unsubscribe(filter, k)
                    } else {
                        ix.id(filter).is_some_and(|id| ix.unsubscribe_id(id, k))
                    };
                    assert_eq!(removed, had);
                } else {
                    let s = sub(QoS::AtLeastOnce, Some(step));
                    let new = model.insert((filter.clone(), k), s).is_none();
                    assert_eq!(ix.subscribe(filter, k, s), new);
                }
                assert_eq!(ix.len(), model.len());
                if step % 50 == 0 {
                    assert_groups_consistent(&ix);
                    for topic in &topics {
                        let mut got = Vec::new();
                        ix.for_each_match(topic, |f, k, s| got.push((f.to_string(), k, *s)));
                        got.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
                        let want: Vec<_> = model
                            .iter()
                            .filter(|((f, _), _)| ref_matches(f, topic))
                            .map(|((f, k), s)| (f.clone(), *k, *s))
                            .collect();
                        assert_eq!(got, want, "topic {topic:?}");
                    }
                }
            }
            // Unsubscribe everything: every shape and entry must go.
            for (filter, k) in model.keys() {
                assert!(ix.unsubscribe(filter, *k));
            }
            assert!(ix.is_empty());
            assert!(ix.no_entries(), "{:?}", ix);
            assert!(ix.shapes.is_empty(), "{:?}", ix);
            assert!(ix.fixed.is_empty() && ix.open.is_empty(), "{:?}", ix);
            assert_eq!(ix.exact, 0);
        }
    }
}
