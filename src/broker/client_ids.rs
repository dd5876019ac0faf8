//! Sessions by client id: a [`SlotTable`] of session keys whose ids live in the
//! sessions themselves.
//!
//! A `HashMap<Arc<str>, usize>` keeps a 24-byte bucket per slot, and a hash
//! table's slots are all resident (entries land anywhere), so at 10,000 clients
//! with 16,384 slots it cost 41 bytes per client. Here a slot is the session's
//! key and 32 bits of its id's hash: 8 bytes, 13 per client. Lookups compare
//! ids through a function from session key to id, so the id is stored once, in
//! its session. The hash is SipHash with a random key (std's `RandomState`):
//! client ids are chosen by peers.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use super::slot_table::{SlotTable, FREE};

/// Session keys by client id. See the module documentation.
#[derive(Debug, Default)]
pub(super) struct ClientIds {
    slots: SlotTable,
    hasher: RandomState,
}

impl ClientIds {
    /// Number of ids held.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    fn hash(&self, id: &str) -> u32 {
        // The low bits pick the slot; 32 of them are plenty for any table
        // that fits in memory.
        self.hasher.hash_one(id) as u32
    }

    /// The session holding `id`; `id_of` gives a session key's client id.
    pub fn get<'a>(&self, id: &str, id_of: impl Fn(usize) -> &'a str) -> Option<usize> {
        self.find(id, &id_of)
            .map(|slot| self.slots.value(slot) as usize)
    }

    /// An id is held.
    pub fn contains<'a>(&self, id: &str, id_of: impl Fn(usize) -> &'a str) -> bool {
        self.find(id, &id_of).is_some()
    }

    /// The slot holding `id`.
    fn find<'a>(&self, id: &str, id_of: &impl Fn(usize) -> &'a str) -> Option<usize> {
        self.slots
            .find(self.hash(id), |key| id_of(key as usize) == id)
    }

    /// Hold session `skey` under `id`, replacing the session held under it.
    /// Session keys are slab keys of sessions in memory: far below `u32::MAX`.
    pub fn insert<'a>(&mut self, id: &str, skey: usize, id_of: impl Fn(usize) -> &'a str) {
        let key = u32::try_from(skey).unwrap_or(FREE - 1);
        match self.find(id, &id_of) {
            Some(slot) => self.slots.set_value(slot, key),
            None => self.slots.insert(key, self.hash(id)),
        }
    }

    /// Forget `id` if session `skey` holds it.
    pub fn remove<'a>(&mut self, id: &str, skey: usize, id_of: impl Fn(usize) -> &'a str) {
        if let Some(slot) = self.find(id, &id_of) {
            if self.slots.value(slot) as usize == skey {
                self.slots.remove(slot);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ClientIds;
    use std::collections::HashMap;

    /// Against a `HashMap` model, through growth, removals in every order
    /// and shrinking; ids held in a slab-like vector as the sessions hold them.
    #[test]
    fn matches_a_hash_map() {
        let mut t = ClientIds::default();
        let mut model: HashMap<String, usize> = HashMap::new();
        let ids: Vec<String> = (0..5000).map(|i| format!("client-{i}")).collect();
        for (k, id) in ids.iter().enumerate() {
            t.insert(id, k, |k| &ids[k]);
            model.insert(id.clone(), k);
        }
        assert_eq!(t.len(), 5000);
        assert!(t.slots.capacity() * 3 >= t.len() * 4);
        for (k, id) in ids.iter().enumerate().filter(|(k, _)| k % 3 != 1) {
            t.remove(id, k, |k| &ids[k]);
            model.remove(id);
        }
        // Removing under another session's key leaves the entry.
        t.remove(&ids[1], 2, |k| &ids[k]);
        for id in ids.iter().chain(std::iter::once(&"absent".to_string())) {
            assert_eq!(t.get(id, |k| &ids[k]), model.get(id).copied(), "{id}");
        }
        assert_eq!(t.len(), model.len());
        let before = t.slots.capacity();
        for (k, id) in ids.iter().enumerate().filter(|(k, _)| k % 3 == 1) {
            t.remove(id, k, |k| &ids[k]);
        }
        assert_eq!(t.len(), 0);
        assert!(t.slots.capacity() < before, "shrinks after the peak");
        assert!(!t.contains(&ids[1], |k| &ids[k]));
        // Replacing: the same id held by another session key.
        t.insert("x", 7, |_| "x");
        t.insert("x", 9, |_| "x");
        assert_eq!((t.get("x", |_| "x"), t.len()), (Some(9), 1));
    }
}
