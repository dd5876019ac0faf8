//! The hash table under the broker's two lookups by text, sessions by client id
//! (`client_ids`) and topic filters (`topic_index`): slots of 8 bytes, a 32-bit
//! value naming where the text lives and 32 bits of the text's hash. The text
//! itself is stored once, by its owner; a probe compares it through a closure.
//!
//! A `HashMap<Box<str>, V>` keeps a 24- to 40-byte bucket per slot, and every
//! slot of a hash table is resident (entries land anywhere), so at 10,000 keys
//! with 16,384 slots it costs 41-67 bytes per key; these slots cost 13. Open
//! addressing with linear probing, at most 3/4 full; removal shifts the
//! following slots back (no tombstones); the table halves when a quarter as
//! full as allowed. Hashing is the caller's (both callers key it: peers choose
//! the texts).

/// An unused slot's value.
pub(super) const FREE: u32 = u32::MAX;

/// Values by 32-bit hash. See the module documentation.
#[derive(Debug, Default)]
pub(super) struct SlotTable {
    /// (value, hash) per slot; the value is [`FREE`] in an empty slot.
    slots: Vec<(u32, u32)>,
    len: usize,
}

impl SlotTable {
    /// Number of values held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Slots allocated (for tests of shrinking).
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The slot where a probe for `hash` starts (the table is not empty).
    fn home(&self, hash: u32) -> usize {
        hash as usize & (self.slots.len() - 1)
    }

    /// The slot of the value with `hash` for which `is` says true.
    #[inline]
    pub fn find(&self, hash: u32, mut is: impl FnMut(u32) -> bool) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut slot = self.home(hash);
        loop {
            let (value, h) = *self.slots.get(slot)?;
            if value == FREE {
                return None;
            }
            if h == hash && is(value) {
                return Some(slot);
            }
            slot = (slot + 1) & mask;
        }
    }

    /// The value in `slot` (found by [`Self::find`]); [`FREE`] if none.
    pub fn value(&self, slot: usize) -> u32 {
        self.slots.get(slot).map_or(FREE, |s| s.0)
    }

    /// Replace the value in `slot` (found by [`Self::find`]) by one whose
    /// text is the same.
    pub fn set_value(&mut self, slot: usize, value: u32) {
        if let Some(s) = self.slots.get_mut(slot) {
            s.0 = value;
        }
    }

    /// Add `value` under `hash`, known to be absent. `value` must not be [`FREE`].
    pub fn insert(&mut self, value: u32, hash: u32) {
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.resize((self.slots.len() * 2).max(16));
        }
        self.place(value, hash);
        self.len += 1;
    }

    /// Put a value into the first free slot of its probe.
    fn place(&mut self, value: u32, hash: u32) {
        let mask = self.slots.len() - 1;
        let mut slot = self.home(hash);
        while self.slots.get(slot).is_some_and(|s| s.0 != FREE) {
            slot = (slot + 1) & mask;
        }
        if let Some(s) = self.slots.get_mut(slot) {
            *s = (value, hash);
        }
    }

    fn resize(&mut self, slots: usize) {
        let old = std::mem::replace(&mut self.slots, vec![(FREE, 0); slots]);
        for (value, hash) in old {
            if value != FREE {
                self.place(value, hash);
            }
        }
    }

    /// Empty `slot` (found by [`Self::find`]).
    pub fn remove(&mut self, mut hole: usize) {
        if self.value(hole) == FREE {
            return;
        }
        self.len -= 1;
        // Backward shift: move later values of the run into the hole when
        // their probe started at or before it, so every probe still finds them.
        let mask = self.slots.len() - 1;
        let mut next = (hole + 1) & mask;
        while let Some(&(value, hash)) = self.slots.get(next).filter(|s| s.0 != FREE) {
            let home = self.home(hash);
            // Distance from home to `next` against distance from home to the
            // hole, both along the probe direction.
            if (next.wrapping_sub(home) & mask) >= (next.wrapping_sub(hole) & mask) {
                self.slots[hole] = (value, hash);
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
    use super::*;

    /// Values found by hash and a comparison, through growth, backward-shift
    /// removal in colliding runs, and shrinking.
    #[test]
    fn finds_what_it_holds_through_collisions_and_resizes() {
        let mut t = SlotTable::default();
        // Hashes 0..4 collide in runs (several values per hash).
        let hash = |v: u32| v % 5;
        for v in 0..1000 {
            t.insert(v, hash(v));
        }
        assert_eq!(t.len(), 1000);
        let grown = t.capacity();
        for v in 0..1000 {
            let slot = t.find(hash(v), |x| x == v).expect("held");
            assert_eq!(t.value(slot), v);
        }
        for v in (0..1000).filter(|v| v % 3 != 0) {
            let slot = t.find(hash(v), |x| x == v).expect("held");
            t.remove(slot);
        }
        for v in 0..1000 {
            assert_eq!(t.find(hash(v), |x| x == v).is_some(), v % 3 == 0, "{v}");
        }
        assert!(t.capacity() < grown, "shrinks after a peak");
        let slot = t.find(hash(3), |x| x == 3).expect("held");
        t.set_value(slot, 2000);
        assert!(t.find(hash(3), |x| x == 2000).is_some());
    }
}
