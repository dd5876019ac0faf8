//! Where the records of live deliveries and of the messages they name are in
//! the log, so RAM holds a few numbers per queued message instead of its
//! content, and which message records are still referenced (compaction copies
//! only those). Pure bookkeeping: no I/O.

use std::collections::HashMap;

/// One session's copy of a message: its `Queue` record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Delivery {
    /// Offset of the `Queue` record.
    pub offset: u64,
    /// The message it delivers.
    pub mid: u64,
    /// The session it is for.
    pub sid: u32,
}

/// A `Message` record and how many live deliveries name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct MessageRef {
    /// Offset of the `Message` record.
    pub offset: u64,
    /// Live deliveries naming it.
    pub refs: u32,
    /// Payload bytes.
    pub len: u32,
}

/// The index of live deliveries and messages.
#[derive(Debug, Default)]
pub(super) struct Index {
    deliveries: HashMap<u64, Delivery>,
    messages: HashMap<u64, MessageRef>,
    /// Messages whose count fell to (or started at) zero since the last prune.
    unreferenced: Vec<u64>,
}

impl Index {
    /// A `Message` record was written at `offset`.
    pub fn message(&mut self, mid: u64, offset: u64, len: u32) {
        self.messages.insert(
            mid,
            MessageRef {
                offset,
                refs: 0,
                len,
            },
        );
        self.unreferenced.push(mid);
    }

    /// A `Queue` record for a known message was written at `offset`; returns
    /// the message's payload length, `None` (and nothing indexed) if the
    /// message is unknown.
    pub fn queue(&mut self, id: u64, offset: u64, mid: u64, sid: u32) -> Option<u32> {
        let m = self.messages.get_mut(&mid)?;
        m.refs = m.refs.saturating_add(1);
        let len = m.len;
        if let Some(old) = self.deliveries.insert(id, Delivery { offset, mid, sid }) {
            self.release(old.mid);
        }
        Some(len)
    }

    /// Delivery `id` is over; returns what it was.
    pub fn done(&mut self, id: u64) -> Option<Delivery> {
        let d = self.deliveries.remove(&id)?;
        self.release(d.mid);
        Some(d)
    }

    fn release(&mut self, mid: u64) {
        if let Some(m) = self.messages.get_mut(&mid) {
            m.refs = m.refs.saturating_sub(1);
            if m.refs == 0 {
                self.unreferenced.push(mid);
            }
        }
    }

    /// Forget messages no delivery names any more. Done at the end of a loop
    /// turn, not at once: within a turn the broker may still queue a message
    /// it has just written for another session.
    pub fn prune(&mut self) {
        for mid in std::mem::take(&mut self.unreferenced) {
            if self.messages.get(&mid).is_some_and(|m| m.refs == 0) {
                self.messages.remove(&mid);
            }
        }
    }

    /// Delivery `id`, if live.
    pub fn delivery(&self, id: u64) -> Option<Delivery> {
        self.deliveries.get(&id).copied()
    }

    /// Message `mid`, if indexed.
    pub fn message_ref(&self, mid: u64) -> Option<MessageRef> {
        self.messages.get(&mid).copied()
    }

    /// Live deliveries.
    pub fn deliveries(&self) -> usize {
        self.deliveries.len()
    }

    /// Indexed messages.
    #[cfg(test)]
    pub fn messages(&self) -> usize {
        self.messages.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_lives_while_a_delivery_names_it() {
        let mut ix = Index::default();
        ix.message(1, 100, 5);
        assert_eq!(ix.queue(10, 200, 1, 7), Some(5));
        assert_eq!(ix.queue(11, 300, 1, 8), Some(5));
        assert_eq!(ix.queue(12, 400, 2, 8), None, "unknown message");
        ix.prune();
        assert_eq!(ix.message_ref(1).map(|m| m.refs), Some(2));
        assert_eq!(ix.done(10).map(|d| d.sid), Some(7));
        ix.prune();
        assert!(ix.message_ref(1).is_some());
        ix.done(11);
        // Still there until the turn ends: another session may queue it yet.
        assert!(ix.message_ref(1).is_some());
        ix.prune();
        assert!(ix.message_ref(1).is_none());
        assert_eq!(ix.deliveries(), 0);
    }

    #[test]
    fn a_message_never_queued_is_pruned() {
        let mut ix = Index::default();
        ix.message(3, 8, 1);
        ix.prune();
        assert_eq!(ix.messages(), 0);
    }
}
