//! Shared subscriptions, `$share/{group}/{filter}` (MQTT 5, 4.8.2): each matching
//! message goes to one member of the group. Members are chosen round-robin,
//! skipping members whose client is offline while any member is online; with
//! every member offline the next one in turn gets it in its session queue.
//! A member that leaves keeps its in-flight messages in its own session
//! (delivered if it resumes, dropped with a clean session): the spec allows
//! either, and re-routing them would break per-member ordering.

use std::collections::HashMap;

use slab::Slab;

use super::topic_index::{Subscription, SubscriptionIndex};

/// One share group on one filter.
#[derive(Debug)]
struct Group {
    /// Members: session key and their subscription options.
    members: Vec<(usize, Subscription)>,
    /// Index in `members` of the next to try.
    next: usize,
    /// The plain filter (for removal from the index).
    filter: Box<str>,
}

/// Every shared subscription: an index from plain filter to groups, and the groups.
#[derive(Debug, Default)]
pub struct SharedSubscriptions {
    index: SubscriptionIndex<usize>,
    groups: Slab<Group>,
    /// Full `$share/group/filter` -> group key.
    by_name: HashMap<Box<str>, usize>,
    members: usize,
}

impl SharedSubscriptions {
    /// Add or replace `session`'s membership of `full` (= `$share/{group}/{filter}`).
    /// Returns true if it is new.
    pub fn subscribe(
        &mut self,
        full: &str,
        filter: &str,
        session: usize,
        sub: Subscription,
    ) -> bool {
        let gid = match self.by_name.get(full) {
            Some(&g) => g,
            None => {
                let g = self.groups.insert(Group {
                    members: Vec::new(),
                    next: 0,
                    filter: filter.into(),
                });
                self.by_name.insert(full.into(), g);
                self.index.subscribe(filter, g, sub);
                g
            }
        };
        let Some(group) = self.groups.get_mut(gid) else {
            return false;
        };
        if let Some(m) = group.members.iter_mut().find(|m| m.0 == session) {
            m.1 = sub;
            return false;
        }
        group.members.push((session, sub));
        self.members += 1;
        true
    }

    /// Remove `session` from `full`; the group goes when its last member does.
    pub fn unsubscribe(&mut self, full: &str, session: usize) -> bool {
        let Some(&gid) = self.by_name.get(full) else {
            return false;
        };
        let Some(group) = self.groups.get_mut(gid) else {
            return false;
        };
        let Some(pos) = group.members.iter().position(|m| m.0 == session) else {
            return false;
        };
        group.members.remove(pos);
        self.members -= 1;
        if group.next > pos {
            group.next -= 1;
        }
        if group.members.is_empty() {
            let filter = group.filter.clone();
            self.groups.remove(gid);
            self.by_name.remove(full);
            self.index.unsubscribe(&filter, gid);
        }
        true
    }

    /// `session`'s subscription options in `full`, if it is a member.
    pub fn get(&self, full: &str, session: usize) -> Option<Subscription> {
        let g = self.groups.get(*self.by_name.get(full)?)?;
        g.members.iter().find(|m| m.0 == session).map(|m| m.1)
    }

    /// True when `session` is a member of `full`.
    pub fn is_member(&self, full: &str, session: usize) -> bool {
        self.by_name
            .get(full)
            .and_then(|&g| self.groups.get(g))
            .is_some_and(|g| g.members.iter().any(|m| m.0 == session))
    }

    /// Number of (group, member) pairs.
    pub fn len(&self) -> usize {
        self.members
    }

    /// True when there are no shared subscriptions.
    pub fn is_empty(&self) -> bool {
        self.members == 0
    }

    /// The groups whose filter matches `topic`.
    pub fn matching_groups(&self, topic: &str, out: &mut Vec<usize>) {
        self.index.for_each_match(topic, |_, g, _| out.push(g));
    }

    /// Choose the member of group `gid` to receive the next message, round
    /// robin: the next one that is online and `may_read` the message, else the
    /// next one that may read it (its queue keeps it), else none: a member
    /// that may not read the message never costs the group its copy (4.8.2).
    pub fn pick(
        &mut self,
        gid: usize,
        online: impl Fn(usize) -> bool,
        may_read: impl Fn(usize) -> bool,
    ) -> Option<(usize, Subscription)> {
        let group = self.groups.get_mut(gid)?;
        let n = group.members.len();
        if n == 0 {
            return None;
        }
        let start = group.next % n;
        let members = &group.members;
        let order = || (0..n).map(move |k| (start + k) % n);
        let chosen = order()
            .find(|&i| online(members[i].0) && may_read(members[i].0))
            .or_else(|| order().find(|&i| may_read(members[i].0)))?;
        group.next = (chosen + 1) % n;
        group.members.get(chosen).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub() -> Subscription {
        Subscription {
            options: Default::default(),
            identifier: None,
        }
    }

    #[test]
    fn round_robin_prefers_online_members() {
        let mut s = SharedSubscriptions::default();
        assert!(s.subscribe("$share/g/t/#", "t/#", 1, sub()));
        assert!(s.subscribe("$share/g/t/#", "t/#", 2, sub()));
        assert!(s.subscribe("$share/g/t/#", "t/#", 3, sub()));
        assert!(!s.subscribe("$share/g/t/#", "t/#", 3, sub()), "replaced");
        let mut groups = Vec::new();
        s.matching_groups("t/x", &mut groups);
        assert_eq!(groups.len(), 1);
        let picks: Vec<usize> = (0..6)
            .map(|_| {
                s.pick(groups[0], |_| true, |_| true)
                    .map(|m| m.0)
                    .unwrap_or(0)
            })
            .collect();
        assert_eq!(picks, vec![1, 2, 3, 1, 2, 3]);
        let picks: Vec<usize> = (0..3)
            .map(|_| {
                s.pick(groups[0], |k| k != 2, |_| true)
                    .map(|m| m.0)
                    .unwrap_or(0)
            })
            .collect();
        assert_eq!(picks, vec![1, 3, 1]);
        // Members 1 and 3 may not read the message: 2 gets every copy, online
        // or not; nobody readable: no copy at all.
        let picks: Vec<usize> = (0..3)
            .map(|_| {
                s.pick(groups[0], |k| k != 2, |k| k == 2)
                    .map(|m| m.0)
                    .unwrap_or(0)
            })
            .collect();
        assert_eq!(picks, vec![2, 2, 2], "a member that may read it");
        assert!(s.pick(groups[0], |_| true, |_| false).is_none());
        for k in 1..=3 {
            assert!(s.unsubscribe("$share/g/t/#", k));
        }
        assert!(s.is_empty());
        groups.clear();
        s.matching_groups("t/x", &mut groups);
        assert!(groups.is_empty());
    }
}
