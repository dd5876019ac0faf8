//! Sessions by client id: a hash table of session keys whose ids live in the
//! sessions themselves.
//!
//! A `HashMap<Arc<str>, usize>` keeps a 24-byte bucket per slot, and a hash
//! table's slots are all resident (entries land anywhere), so at 10,000 clients
//! with 16,384 slots it cost 41 bytes per client. Here a slot is the session's
//! key and 32 bits of its id's hash: 8 bytes, 13 per client. Lookups compare
//! ids through a function from session key to id, so the id is stored once, in
//! its session. Open addressing with linear probing, at most 3/4 full; removal
//! shifts the following entries back (no tombstones). The hash is SipHash with
//! a random key (std's `RandomState`): client ids are chosen by peers.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

/// An unused slot.
const FREE: u32 = u32::MAX;

/// Session keys by client id. See the module documentation.
#[derive(Debug, Default)]
pub(super) struct ClientIds {
    /// (session key, hash) per slot; the key is [`FREE`] in an empty slot.
    slots: Vec<(u32, u32)>,
    len: usize,
    hasher: RandomState,
}

impl ClientIds {
    /// Number of ids held.
    pub fn len(&self) -> usize {
        self.len
    }

    fn hash(&self, id: &str) -> u32 {
        // The low bits pick the slot; 32 of them are plenty for any table
        // that fits in memory.
        self.hasher.hash_one(id) as u32
    }

    /// The slot where a probe for `hash` starts.
    fn home(&self, hash: u32) -> usize {
        hash as usize & (self.slots.len() - 1)
    }

    /// The session holding `id`; `id_of` gives a session key's client id.
    pub fn get<'a>(&self, id: &str, id_of: impl Fn(usize) -> &'a str) -> Option<usize> {
        self.find(id, &id_of)
            .map(|slot| self.slots[slot].0 as usize)
    }

    /// An id is held.
    pub fn contains<'a>(&self, id: &str, id_of: impl Fn(usize) -> &'a str) -> bool {
        self.find(id, &id_of).is_some()
    }

    /// The slot holding `id`.
    fn find<'a>(&self, id: &str, id_of: &impl Fn(usize) -> &'a str) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let hash = self.hash(id);
        let mask = self.slots.len() - 1;
        let mut slot = self.home(hash);
        loop {
            let (key, h) = self.slots[slot];
            if key == FREE {
                return None;
            }
            if h == hash && id_of(key as usize) == id {
                return Some(slot);
            }
            slot = (slot + 1) & mask;
        }
    }

    /// Hold session `skey` under `id`, replacing the session held under it.
    /// Session keys are slab keys of sessions in memory: far below `u32::MAX`.
    pub fn insert<'a>(&mut self, id: &str, skey: usize, id_of: impl Fn(usize) -> &'a str) {
        let key = u32::try_from(skey).unwrap_or(FREE - 1);
        if let Some(slot) = self.find(id, &id_of) {
            self.slots[slot].0 = key;
            return;
        }
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.resize((self.slots.len() * 2).max(16));
        }
        let hash = self.hash(id);
        self.place(key, hash);
        self.len += 1;
    }

    /// Put an entry known to be absent into the first free slot of its probe.
    fn place(&mut self, key: u32, hash: u32) {
        let mask = self.slots.len() - 1;
        let mut slot = self.home(hash);
        while self.slots[slot].0 != FREE {
            slot = (slot + 1) & mask;
        }
        self.slots[slot] = (key, hash);
    }

    fn resize(&mut self, slots: usize) {
        let old = std::mem::replace(&mut self.slots, vec![(FREE, 0); slots]);
        for (key, hash) in old {
            if key != FREE {
                self.place(key, hash);
            }
        }
    }

    /// Forget `id` if session `skey` holds it.
    pub fn remove<'a>(&mut self, id: &str, skey: usize, id_of: impl Fn(usize) -> &'a str) {
        let Some(mut hole) = self.find(id, &id_of) else {
            return;
        };
        if self.slots[hole].0 as usize != skey {
            return;
        }
        self.len -= 1;
        // Backward shift: move later entries of the run into the hole when
        // their probe started at or before it, so every probe still finds them.
        let mask = self.slots.len() - 1;
        let mut next = (hole + 1) & mask;
        loop {
            let (key, hash) = self.slots[next];
            if key == FREE {
                break;
            }
            let home = self.home(hash);
            // Distance from home to `next` against distance from home to the
            // hole, both along the probe direction.
            if (next.wrapping_sub(home) & mask) >= (next.wrapping_sub(hole) & mask) {
                self.slots[hole] = (key, hash);
                hole = next;
            }
            next = (next + 1) & mask;
        }
        self.slots[hole] = (FREE, 0);
        // Give memory back after a peak (a quarter as full as allowed).
        if self.slots.len() > 64 && self.len * 16 < self.slots.len() * 3 {
            self.resize(self.slots.len() / 2);
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
        assert!(t.slots.len() * 3 >= t.len() * 4);
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
        let before = t.slots.len();
        for (k, id) in ids.iter().enumerate().filter(|(k, _)| k % 3 == 1) {
            t.remove(id, k, |k| &ids[k]);
        }
        assert_eq!(t.len(), 0);
        assert!(t.slots.len() < before, "shrinks after the peak");
        assert!(!t.contains(&ids[1], |k| &ids[k]));
        // Replacing: the same id held by another session key.
        t.insert("x", 7, |_| "x");
        t.insert("x", 9, |_| "x");
        assert_eq!((t.get("x", |_| "x"), t.len()), (Some(9), 1));
    }
}
