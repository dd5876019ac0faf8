//! The subscription index: a flat map from topic filter to subscribers, with
//! wildcard matching whose cost per publish does not grow with the number of
//! subscriptions.

use std::hash::Hash;

use crate::protocol::SubscriptionOptions;

/// One subscription as stored in the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription {
    /// The options given in SUBSCRIBE.
    pub options: SubscriptionOptions,
    /// The Subscription Identifier given in SUBSCRIBE (v5), if any.
    pub identifier: Option<u32>,
}

/// Subscriptions of subscribers of type `K` (the broker uses its session key).
#[derive(Debug)]
pub struct SubscriptionIndex<K> {
    _k: std::marker::PhantomData<K>,
}

impl<K: Copy + Eq + Hash> SubscriptionIndex<K> {
    /// An empty index.
    pub fn new() -> Self {
        unimplemented!("topic helper")
    }

    /// Add or replace [MQTT-3.8.4-3] `subscriber`'s subscription to `filter` (a valid
    /// filter). Returns true if it is new, false if it replaced one.
    pub fn subscribe(&mut self, filter: &str, subscriber: K, subscription: Subscription) -> bool {
        let _ = (filter, subscriber, subscription);
        unimplemented!("topic helper")
    }

    /// Remove `subscriber`'s subscription to `filter`. Returns true if it existed.
    pub fn unsubscribe(&mut self, filter: &str, subscriber: K) -> bool {
        let _ = (filter, subscriber);
        unimplemented!("topic helper")
    }

    /// Call `f` for every subscription whose filter matches `topic` (a valid topic
    /// name), once per (filter, subscriber).
    pub fn for_each_match(&self, topic: &str, f: impl FnMut(&str, K, &Subscription)) {
        let _ = (topic, f);
        unimplemented!("topic helper")
    }

    /// Number of (filter, subscriber) pairs.
    pub fn len(&self) -> usize {
        unimplemented!("topic helper")
    }

    /// True when there are no subscriptions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Copy + Eq + Hash> Default for SubscriptionIndex<K> {
    fn default() -> Self {
        Self::new()
    }
}
