//! The broker's connections, stored at their [`ConnId`].
//!
//! Connection ids are the server's slab keys: small, dense and reused. A
//! vector indexed by them replaces a hash table: no hashing per packet, and no
//! buckets kept at a 7/8 load factor that double and scatter (every bucket of
//! a hash table ends up resident; a vector's slots are only touched when
//! used). With 10,000 clients that was about 100 bytes per connection.
//! The methods mirror `HashMap`'s, so call sites read the same.

use super::ConnId;

/// Values keyed by connection id. See the module documentation.
#[derive(Debug)]
pub(super) struct ConnTable<T> {
    slots: Vec<Option<T>>,
}

impl<T> Default for ConnTable<T> {
    fn default() -> Self {
        ConnTable { slots: Vec::new() }
    }
}

impl<T> ConnTable<T> {
    /// The value at `id`.
    pub fn get(&self, id: &ConnId) -> Option<&T> {
        self.slots.get(*id)?.as_ref()
    }

    /// The value at `id`, mutably.
    pub fn get_mut(&mut self, id: &ConnId) -> Option<&mut T> {
        self.slots.get_mut(*id)?.as_mut()
    }

    /// A value is stored at `id`.
    pub fn contains_key(&self, id: &ConnId) -> bool {
        self.get(id).is_some()
    }

    /// Stores `value` at `id`, returning what was there. Ids are slab keys:
    /// the table grows to the highest id in use, never further.
    pub fn insert(&mut self, id: ConnId, value: T) -> Option<T> {
        if id >= self.slots.len() {
            self.slots.resize_with(id + 1, || None);
        }
        self.slots[id].replace(value)
    }

    /// Takes the value at `id` out.
    pub fn remove(&mut self, id: &ConnId) -> Option<T> {
        let old = self.slots.get_mut(*id)?.take();
        if old.is_some() {
            // Trailing empty slots go, so a past peak of connections does not
            // keep the table long (capacity stays, as a hash table's would).
            while matches!(self.slots.last(), Some(None)) {
                self.slots.pop();
            }
        }
        old
    }

    /// The ids in use, ascending.
    pub fn keys(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.iter().map(|(id, _)| id)
    }

    /// (id, value) pairs, ascending by id.
    pub fn iter(&self) -> impl Iterator<Item = (ConnId, &T)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(id, v)| v.as_ref().map(|v| (id, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::ConnTable;

    #[test]
    fn stores_at_the_id_and_forgets_trailing_slots() {
        let mut t = ConnTable::default();
        assert_eq!(t.insert(3, "c"), None);
        assert_eq!(t.insert(0, "a"), None);
        assert_eq!(t.insert(3, "C"), Some("c"));
        assert_eq!(t.get(&3), Some(&"C"));
        assert_eq!(t.get(&1), None);
        assert_eq!(t.get(&99), None);
        assert!(t.contains_key(&0) && !t.contains_key(&2));
        assert_eq!(t.keys().collect::<Vec<_>>(), vec![0, 3]);
        assert_eq!(t.remove(&3), Some("C"));
        assert_eq!(t.remove(&3), None);
        assert_eq!(t.slots.len(), 1, "trailing empty slots dropped");
        *t.get_mut(&0).expect("0") = "A";
        assert_eq!(t.iter().collect::<Vec<_>>(), vec![(0, &"A")]);
    }
}
