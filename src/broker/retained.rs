//! The retained message store: at most one message per topic name, found by topic
//! filter when a client subscribes. It owns a trie of topic levels; it never
//! validates topics or filters (the codec does) and never decides what to retain.
//!
//! # Design
//!
//! * One node per topic level, `HashMap<Box<str>, Node>` of children (absent on
//!   leaves, so a leaf is two words) and an `Option<V>`. The full topic name is not
//!   stored: [`RetainedStore::for_each_match`] rebuilds it in one reused `String`
//!   while it walks, which saves a copy of every topic name.
//! * Matching walks the trie with the filter: a literal level follows one child,
//!   `+` every child, a final `#` the whole subtree including the current node
//!   (`a/#` matches `a` [MQTT-4.7.1-2]). A filter with a literal first level only
//!   visits the part of the trie under it.
//! * Every walk (match, insert, remove, drop) is a loop with an explicit stack,
//!   so a hostile topic with thousands of levels cannot overflow the thread stack.
//!   Removing a topic prunes the nodes that only existed for it.

use std::collections::HashMap;
use std::fmt;

/// The children of a trie node, by level text.
type Children<V> = HashMap<Box<str>, Node<V>>;

/// One topic level.
struct Node<V> {
    /// Never `Some` of an empty map: the last child's removal drops the map.
    children: Option<Box<Children<V>>>,
    /// The retained value of the topic ending here.
    value: Option<V>,
}

impl<V> Node<V> {
    fn new() -> Self {
        Node {
            children: None,
            value: None,
        }
    }

    /// The children, or an empty iterator for a leaf.
    fn children(&self) -> impl Iterator<Item = (&str, &Node<V>)> {
        self.children
            .iter()
            .flat_map(|map| map.iter().map(|(name, node)| (&**name, node)))
    }

    /// The child named `name`.
    fn child(&self, name: &str) -> Option<&Node<V>> {
        self.children.as_ref()?.get(name)
    }

    /// The child named `name`, mutably.
    fn child_mut(&mut self, name: &str) -> Option<&mut Node<V>> {
        self.children.as_mut()?.get_mut(name)
    }
}

impl<V> Drop for Node<V> {
    /// Tear the subtree down level by level: the derived drop would recurse once
    /// per level, and a topic may have tens of thousands of them.
    fn drop(&mut self) {
        let Some(children) = self.children.take() else {
            return;
        };
        let mut stack = vec![children];
        while let Some(mut map) = stack.pop() {
            for (_, mut child) in map.drain() {
                if let Some(grandchildren) = child.children.take() {
                    stack.push(grandchildren);
                }
                // `child` now has no children, so its own drop returns at once.
            }
        }
    }
}

/// What a stacked node of a match walk still has to do.
#[derive(Clone, Copy)]
enum Visit {
    /// The node matched the filter's levels before this index.
    Level(usize),
    /// The node is under a final `#`: report it and everything below.
    Subtree,
}

/// A node waiting on the match walk's stack.
struct Frame<'a, V> {
    node: &'a Node<V>,
    /// The node's level text.
    name: &'a str,
    /// Number of levels from the root (the root is 0).
    depth: usize,
    /// Length of the parent's topic name in the path buffer.
    parent_len: usize,
    visit: Visit,
}

/// Retained values of type `V` (the broker stores `Arc<Message>`), keyed by topic name.
pub struct RetainedStore<V> {
    /// The empty prefix; never holds a value (a topic has at least one level).
    root: Node<V>,
    /// Number of values in the trie.
    len: usize,
}

impl<V> fmt::Debug for RetainedStore<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the derived recursive dump: the trie may be very deep.
        f.debug_struct("RetainedStore")
            .field("len", &self.len)
            .finish()
    }
}

impl<V> RetainedStore<V> {
    /// An empty store.
    pub fn new() -> Self {
        RetainedStore {
            root: Node::new(),
            len: 0,
        }
    }

    /// Store `value` for `topic`, replacing what was there; returns the old value.
    pub fn insert(&mut self, topic: &str, value: V) -> Option<V> {
        let mut node = &mut self.root;
        for level in topic.split('/') {
            let children = node.children.get_or_insert_with(Box::default);
            // Look up before inserting so an existing path allocates nothing.
            if !children.contains_key(level) {
                children.insert(level.into(), Node::new());
            }
            // Always found: it was there or has just been inserted.
            node = children.get_mut(level)?;
        }
        let old = node.value.replace(value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Remove the retained value of `topic` (a retained PUBLISH with an empty payload).
    pub fn remove(&mut self, topic: &str) -> Option<V> {
        // First pass, read-only: find the value and the deepest node on the path
        // that must stay (the root, or a node with a value of its own or other
        // children). Everything below it exists only for `topic`.
        let mut node = &self.root;
        let mut keep = 0;
        for (depth, level) in topic.split('/').enumerate() {
            let branches = node.children.as_ref().map_or(0, |c| c.len());
            if depth > 0 && (node.value.is_some() || branches > 1) {
                keep = depth;
            }
            node = node.child(level)?;
        }
        node.value.as_ref()?;
        let has_children = node.children.is_some();
        let value = self.take_value(topic, keep, has_children);
        if value.is_some() {
            self.len -= 1;
        }
        value
    }

    /// Second pass of [`Self::remove`]: take the value of `topic`, known to be
    /// there, cutting off the branch below depth `keep` unless the topic's node
    /// has children of its own.
    fn take_value(&mut self, topic: &str, keep: usize, has_children: bool) -> Option<V> {
        let mut levels = topic.split('/');
        if has_children {
            // The node stays for its children; only its value goes.
            let mut node = &mut self.root;
            for level in levels {
                node = node.child_mut(level)?;
            }
            return node.value.take();
        }
        // Cut the branch below the kept node and take the value from the cut-off
        // chain; dropping the chain frees it without recursion (see `Drop`).
        let mut parent = &mut self.root;
        for level in levels.by_ref().take(keep) {
            parent = parent.child_mut(level)?;
        }
        let name = levels.next()?;
        let children = parent.children.as_mut()?;
        let mut chain = children.remove(name)?;
        if children.is_empty() {
            parent.children = None;
        }
        let mut node = &mut chain;
        for level in levels {
            node = node.child_mut(level)?;
        }
        node.value.take()
    }

    /// Call `f` for every retained value whose topic matches `filter` (a valid
    /// filter), with the `$` rule [MQTT-4.7.2-1]. Cost proportional to the matching
    /// part of the store, not to its size, for filters with a literal first level.
    pub fn for_each_match(&self, filter: &str, f: impl FnMut(&str, &V)) {
        self.walk(filter, true, f);
    }

    /// Call `f` for every retained value, `$` topics included (for snapshots).
    pub fn for_each(&self, f: impl FnMut(&str, &V)) {
        self.walk("#", false, f);
    }

    fn walk<'a>(&'a self, filter: &str, dollar_rule: bool, mut f: impl FnMut(&str, &V)) {
        if self.len == 0 {
            return;
        }
        let levels: Vec<&str> = filter.split('/').collect();
        // [MQTT-4.7.2-1]: a filter starting with a wildcard skips `$` topics.
        let wild_first = dollar_rule && matches!(levels.first(), Some(&"+") | Some(&"#"));
        let mut path = String::new();
        let mut stack = vec![Frame {
            node: &self.root,
            name: "",
            depth: 0,
            parent_len: 0,
            visit: Visit::Level(0),
        }];
        while let Some(frame) = stack.pop() {
            // Frames pop in depth-first order, so the buffer still starts with
            // the parent's name: cut back to it and append this level.
            path.truncate(frame.parent_len);
            if frame.depth > 1 {
                path.push('/');
            }
            path.push_str(frame.name);
            let here = path.len();
            let skip_dollar = frame.depth == 0 && wild_first;
            let push_children = |visit: Visit, stack: &mut Vec<Frame<'a, V>>| {
                for (name, node) in frame.node.children() {
                    if skip_dollar && name.starts_with('$') {
                        continue;
                    }
                    stack.push(Frame {
                        node,
                        name,
                        depth: frame.depth + 1,
                        parent_len: here,
                        visit,
                    });
                }
            };
            let visit = match frame.visit {
                Visit::Level(i) if levels.get(i) == Some(&"#") && i + 1 == levels.len() => {
                    Visit::Subtree
                }
                visit => visit,
            };
            match visit {
                Visit::Subtree => {
                    if let Some(value) = &frame.node.value {
                        f(&path, value);
                    }
                    push_children(Visit::Subtree, &mut stack);
                }
                Visit::Level(i) => match levels.get(i) {
                    None => {
                        if let Some(value) = &frame.node.value {
                            f(&path, value);
                        }
                    }
                    Some(&"+") => push_children(Visit::Level(i + 1), &mut stack),
                    Some(literal) => {
                        if let Some((name, node)) = frame
                            .node
                            .children
                            .as_ref()
                            .and_then(|map| map.get_key_value(*literal))
                        {
                            stack.push(Frame {
                                node,
                                name,
                                depth: frame.depth + 1,
                                parent_len: here,
                                visit: Visit::Level(i + 1),
                            });
                        }
                    }
                },
            }
        }
    }

    /// Number of retained messages.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<V> Default for RetainedStore<V> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    /// xorshift64*: deterministic, good enough to pick test cases.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn matches_of(store: &RetainedStore<u32>, filter: &str) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        store.for_each_match(filter, |t, v| out.push((t.to_string(), *v)));
        out.sort();
        out
    }

    fn pairs(list: &[(&str, u32)]) -> Vec<(String, u32)> {
        let mut v: Vec<_> = list.iter().map(|(t, v)| (t.to_string(), *v)).collect();
        v.sort();
        v
    }

    #[test]
    fn insert_replace_remove() {
        let mut st = RetainedStore::new();
        assert_eq!(st.insert("a/b", 1), None);
        assert_eq!(st.insert("a/b", 2), Some(1));
        assert_eq!(st.len(), 1);
        assert_eq!(st.remove("a"), None);
        assert_eq!(st.remove("a/b/c"), None);
        assert_eq!(st.remove("a/b"), Some(2));
        assert_eq!(st.remove("a/b"), None);
        assert!(st.is_empty());
        assert!(st.root.children.is_none());
    }

    #[test]
    fn wildcards_and_parent_level() {
        let mut st = RetainedStore::new();
        st.insert("sport", 1);
        st.insert("sport/tennis", 2);
        st.insert("sport/tennis/player1", 3);
        st.insert("sport/golf", 4);
        st.insert("news", 5);
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
        assert_eq!(matches_of(&st, "+"), pairs(&[("sport", 1), ("news", 5)]));
        assert_eq!(
            matches_of(&st, "sport/tennis"),
            pairs(&[("sport/tennis", 2)])
        );
        assert_eq!(matches_of(&st, "#").len(), 5);
        assert!(matches_of(&st, "sport/tennis/player1/x").is_empty());
    }

    #[test]
    fn dollar_topics_skip_leading_wildcards() {
        let mut st = RetainedStore::new();
        st.insert("$SYS/broker/uptime", 1);
        st.insert("a", 2);
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
        let mut st = RetainedStore::new();
        st.insert("/a", 1);
        st.insert("a//b", 2);
        st.insert("a/", 3);
        st.insert("/", 4);
        assert_eq!(matches_of(&st, "/a"), pairs(&[("/a", 1)]));
        assert_eq!(
            matches_of(&st, "+/+"),
            pairs(&[("/a", 1), ("a/", 3), ("/", 4)])
        );
        assert_eq!(matches_of(&st, "a/+/b"), pairs(&[("a//b", 2)]));
        assert_eq!(matches_of(&st, "a/#"), pairs(&[("a//b", 2), ("a/", 3)]));
        assert_eq!(matches_of(&st, "/#"), pairs(&[("/a", 1), ("/", 4)]));
        assert_eq!(st.remove("/"), Some(4));
        assert_eq!(matches_of(&st, "/#"), pairs(&[("/a", 1)]));
    }

    #[test]
    fn remove_prunes_only_what_it_owned() {
        let mut st = RetainedStore::new();
        st.insert("a/b/c/d", 1);
        st.insert("a/b", 2);
        st.insert("a/x", 3);
        assert_eq!(st.remove("a/b/c/d"), Some(1));
        // `a/b` keeps its value but loses its children map.
        let b = st.root.child("a").and_then(|a| a.child("b"));
        assert!(b.is_some_and(|b| b.children.is_none() && b.value == Some(2)));
        assert_eq!(st.remove("a/b"), Some(2));
        assert!(st.root.child("a").is_some_and(|a| a.child("b").is_none()));
        // A node with children keeps them when its own value goes.
        st.insert("a/x/y", 4);
        assert_eq!(st.remove("a/x"), Some(3));
        assert_eq!(matches_of(&st, "#"), pairs(&[("a/x/y", 4)]));
        assert_eq!(st.remove("a/x/y"), Some(4));
        assert!(st.root.children.is_none());
        assert!(st.is_empty());
    }

    #[test]
    fn literal_first_level_does_not_scan_the_store() {
        let mut st = RetainedStore::new();
        for i in 0..1000 {
            st.insert(&format!("dev{i}/state"), i);
        }
        let mut visited = 0;
        st.for_each_match("dev7/+", |_, _| visited += 1);
        assert_eq!(visited, 1);
        assert_eq!(matches_of(&st, "+/state").len(), 1000);
    }

    #[test]
    fn very_deep_topics_do_not_overflow_the_stack() {
        let mut st = RetainedStore::new();
        let deep = "x/".repeat(100_000) + "end";
        st.insert(&deep, 1);
        st.insert("x", 2);
        assert_eq!(matches_of(&st, "#").len(), 2);
        assert_eq!(matches_of(&st, "x/#").len(), 2);
        let mut seen = None;
        st.for_each_match(&deep, |t, v| seen = Some((t.len(), *v)));
        assert_eq!(seen, Some((deep.len(), 1)));
        assert_eq!(st.remove(&deep), Some(1));
        st.insert(&deep, 3);
        // Dropping the whole store must not recurse either.
        drop(st);
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
        let mut st = RetainedStore::new();
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
                assert_eq!(st.remove(topic), model.remove(topic));
            } else {
                assert_eq!(st.insert(topic, step), model.insert(topic.clone(), step));
            }
            assert_eq!(st.len(), model.len());
            if step % 100 == 0 {
                for filter in &filters {
                    let want: Vec<_> = model
                        .iter()
                        .filter(|(t, _)| ref_matches(filter, t))
                        .map(|(t, v)| (t.clone(), *v))
                        .collect();
                    assert_eq!(matches_of(&st, filter), want, "filter {filter:?}");
                }
            }
        }
        for topic in topics {
            st.remove(&topic);
        }
        assert!(st.is_empty());
        assert!(st.root.children.is_none(), "empty nodes were left behind");
    }
}
