//! Topic rules against a reference written here, level by level and straight
//! from the spec: `valid_topic_name`, `valid_topic_filter`, `parse_shared`,
//! `matches`, and the broker's `SubscriptionIndex` (subscribe / unsubscribe /
//! `for_each_match` / `get` / `len`) against a plain list of subscriptions.
//!
//! Input (arbitrary): one raw filter and topic (any UTF-8), then a pool of
//! strings spelt from a small alphabet of topic pieces so that matches are
//! common, and a sequence of index operations on them.
#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use midge::broker::topic_index::{Subscription, SubscriptionIndex};
use midge::protocol::topic::{matches, parse_shared, valid_topic_filter, valid_topic_name};
use midge::protocol::SubscriptionOptions;

#[derive(Arbitrary, Debug)]
struct Input {
    raw_filter: String,
    raw_topic: String,
    /// Strings made of `PIECES`, one piece per byte.
    pool: Vec<Vec<u8>>,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// Subscribe subscriber `who` (% 12, so one filter can gather more than 8) to pool string `f`.
    Sub { f: u8, who: u8, id: Option<u32> },
    /// Unsubscribe.
    Unsub { f: u8, who: u8 },
    /// Match pool string `t` as a topic.
    Match { t: u8 },
}

const PIECES: [&str; 16] = [
    "a",
    "b",
    "/",
    "/",
    "+",
    "#",
    "$",
    "$SYS",
    "$share/g/",
    "sport",
    "tennis",
    "",
    "a/b",
    "é",
    "/+",
    "/#",
];

fn spell(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| PIECES[usize::from(b) % PIECES.len()])
        .collect()
}

// ---- reference ----------------------------------------------------------

/// [MQTT-4.7.3-1] non-empty, [MQTT-3.3.2-2] no wildcard characters.
fn ref_name(t: &str) -> bool {
    !t.is_empty() && !t.contains('+') && !t.contains('#')
}

/// 4.7.1: `#` only as the whole last level, `+` only as a whole level; non-empty.
fn ref_plain_filter(f: &str) -> bool {
    if f.is_empty() {
        return false;
    }
    let levels: Vec<&str> = f.split('/').collect();
    let last = levels.len() - 1;
    levels.iter().enumerate().all(|(i, l)| {
        if l.contains('#') {
            *l == "#" && i == last
        } else if l.contains('+') {
            *l == "+"
        } else {
            true
        }
    })
}

/// 4.8.2: `$share/{name}/{filter}`, name non-empty without `/ + #`.
fn ref_shared(f: &str) -> Option<(&str, &str)> {
    let rest = f.strip_prefix("$share/")?;
    let slash = rest.find('/')?;
    let (name, inner) = (&rest[..slash], &rest[slash + 1..]);
    let name_ok = !name.is_empty() && !name.contains('+') && !name.contains('#');
    (name_ok && ref_plain_filter(inner)).then_some((name, inner))
}

fn ref_filter(f: &str) -> bool {
    if f.starts_with("$share/") {
        ref_shared(f).is_some()
    } else {
        ref_plain_filter(f)
    }
}

/// Level by level, recursively (a different shape from the implementation's loop).
fn ref_levels(f: &[&str], t: &[&str]) -> bool {
    match (f.split_first(), t.split_first()) {
        (None, None) => true,
        // `#` matches the parent level too [MQTT-4.7.1-2].
        (Some((&"#", _)), _) => true,
        (Some(_), None) | (None, Some(_)) => false,
        (Some((fl, fr)), Some((tl, tr))) => (*fl == "+" || fl == tl) && ref_levels(fr, tr),
    }
}

fn ref_matches(f: &str, t: &str) -> bool {
    // [MQTT-4.7.2-1] a leading wildcard does not match a topic starting with `$`.
    if t.starts_with('$') && (f.starts_with('+') || f.starts_with('#')) {
        return false;
    }
    let fl: Vec<&str> = f.split('/').collect();
    let tl: Vec<&str> = t.split('/').collect();
    ref_levels(&fl, &tl)
}

// ---- checks ---------------------------------------------------------------

fn check_pair(f: &str, t: &str) {
    assert_eq!(valid_topic_name(t), ref_name(t), "valid_topic_name({t:?})");
    assert_eq!(
        valid_topic_filter(f),
        ref_filter(f),
        "valid_topic_filter({f:?})"
    );
    let shared = parse_shared(f);
    assert_eq!(shared, ref_shared(f), "parse_shared({f:?})");
    if let Some((name, inner)) = shared {
        assert_eq!(format!("$share/{name}/{inner}"), f);
    }
    // `matches` takes a plain filter; a shared one is matched by its inner filter.
    let plain = shared.map_or(f, |(_, inner)| inner);
    if ref_plain_filter(plain) && ref_name(t) {
        assert_eq!(
            matches(plain, t),
            ref_matches(plain, t),
            "matches({plain:?}, {t:?})"
        );
    }
}

fuzz_target!(|input: Input| {
    check_pair(&input.raw_filter, &input.raw_topic);
    let pool: Vec<String> = input.pool.iter().map(|b| spell(b)).collect();
    for (i, f) in pool.iter().enumerate() {
        check_pair(f, &input.raw_topic);
        check_pair(&input.raw_filter, f);
        if let Some(t) = pool.get(i + 1) {
            check_pair(f, t);
        }
    }
    if pool.is_empty() {
        return;
    }

    let mut index: SubscriptionIndex<u8> = SubscriptionIndex::new();
    // The model: (filter, subscriber) -> identifier.
    let mut model: Vec<(String, u8, Option<u32>)> = Vec::new();
    for op in input.ops.iter().take(256) {
        match *op {
            Op::Sub { f, who, id } => {
                let filter = &pool[usize::from(f) % pool.len()];
                // The broker only stores valid filters (the codec checks them).
                if !ref_filter(filter) {
                    continue;
                }
                let who = who % 12;
                let sub = Subscription {
                    options: SubscriptionOptions::default(),
                    identifier: id,
                };
                let new = index.subscribe(filter, who, sub);
                let pos = model
                    .iter()
                    .position(|(mf, mw, _)| mf == filter && *mw == who);
                assert_eq!(new, pos.is_none(), "subscribe({filter:?}, {who}) newness");
                match pos {
                    Some(p) => model[p].2 = id,
                    None => model.push((filter.clone(), who, id)),
                }
            }
            Op::Unsub { f, who } => {
                let filter = &pool[usize::from(f) % pool.len()];
                let who = who % 12;
                let pos = model
                    .iter()
                    .position(|(mf, mw, _)| mf == filter && *mw == who);
                let removed = index.unsubscribe(filter, who);
                assert_eq!(removed, pos.is_some(), "unsubscribe({filter:?}, {who})");
                if let Some(p) = pos {
                    model.swap_remove(p);
                }
            }
            Op::Match { t } => {
                let topic = &pool[usize::from(t) % pool.len()];
                let mut got = Vec::new();
                index.for_each_match(topic, |f, who, s| {
                    got.push((f.to_owned(), who, s.identifier))
                });
                let n = got.len();
                let got: BTreeSet<_> = got.into_iter().collect();
                assert_eq!(n, got.len(), "duplicate matches for {topic:?}");
                // Invalid topic names match nothing.
                let want: BTreeSet<_> = model
                    .iter()
                    .filter(|(f, _, _)| ref_name(topic) && ref_matches(f, topic))
                    .cloned()
                    .collect();
                assert_eq!(got, want, "for_each_match({topic:?})");
            }
        }
        assert_eq!(index.len(), model.len(), "len");
        assert_eq!(index.is_empty(), model.is_empty(), "is_empty");
    }
    for (f, who, id) in &model {
        assert_eq!(
            index.get(f, *who).map(|s| s.identifier),
            Some(*id),
            "get({f:?}, {who})"
        );
    }
});
