//! The retained message store: at most one message per topic name, found by topic
//! filter when a client subscribes.

/// Retained values of type `V` (the broker stores `Arc<Message>`), keyed by topic name.
#[derive(Debug)]
pub struct RetainedStore<V> {
    _v: std::marker::PhantomData<V>,
}

impl<V> RetainedStore<V> {
    /// An empty store.
    pub fn new() -> Self {
        unimplemented!("topic helper")
    }

    /// Store `value` for `topic`, replacing what was there; returns the old value.
    pub fn insert(&mut self, topic: &str, value: V) -> Option<V> {
        let _ = (topic, value);
        unimplemented!("topic helper")
    }

    /// Remove the retained value of `topic` (a retained PUBLISH with an empty payload).
    pub fn remove(&mut self, topic: &str) -> Option<V> {
        let _ = topic;
        unimplemented!("topic helper")
    }

    /// Call `f` for every retained value whose topic matches `filter` (a valid
    /// filter), with the `$` rule [MQTT-4.7.2-1]. Cost proportional to the matching
    /// part of the store, not to its size, for filters with a literal first level.
    pub fn for_each_match(&self, filter: &str, f: impl FnMut(&str, &V)) {
        let _ = (filter, f);
        unimplemented!("topic helper")
    }

    /// Number of retained messages.
    pub fn len(&self) -> usize {
        unimplemented!("topic helper")
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
