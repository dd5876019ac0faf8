//! A client identifier as a session keeps it: in place when it is short, on
//! the heap only beyond that. Every id a server must accept [MQTT-3.1.3-5]
//! (1 to 23 bytes) fits in place, so the common client costs no allocation
//! for it (an `Arc<str>` of 16 characters was a 48-byte heap chunk).

use std::fmt;

/// Bytes kept in place: the 23 a server must accept [MQTT-3.1.3-5].
const INLINE: usize = 23;

/// A client identifier; reads as a `&str`. See the module documentation.
#[derive(Clone)]
pub struct ClientId(Repr);

#[derive(Clone)]
enum Repr {
    /// The id's bytes, then zero bytes. A UTF-8 string in MQTT never contains
    /// U+0000 [MQTT-1.5.4-2], so the first zero ends the id; an id that does
    /// contain one (a library caller's) goes to the heap.
    Inline([u8; INLINE]),
    /// Longer ids.
    Heap(Box<str>),
}

impl ClientId {
    /// The id as a string.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline(bytes) => {
                let len = bytes.iter().position(|&b| b == 0).unwrap_or(INLINE);
                // A prefix of a `&str` cut at its end or before a zero byte
                // (an ASCII character): always valid, so the default is never used.
                std::str::from_utf8(&bytes[..len]).unwrap_or_default()
            }
            Repr::Heap(s) => s,
        }
    }
}

impl From<&str> for ClientId {
    fn from(id: &str) -> Self {
        if id.len() <= INLINE && !id.as_bytes().contains(&0) {
            let mut bytes = [0; INLINE];
            bytes[..id.len()].copy_from_slice(id.as_bytes());
            ClientId(Repr::Inline(bytes))
        } else {
            ClientId(Repr::Heap(id.into()))
        }
    }
}

impl std::ops::Deref for ClientId {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for ClientId {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for ClientId {}

impl std::hash::Hash for ClientId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::{ClientId, Repr, INLINE};

    #[test]
    fn short_ids_stay_in_place_and_read_back_whole() {
        assert_eq!(std::mem::size_of::<ClientId>(), 24);
        assert_eq!(std::mem::size_of::<Option<ClientId>>(), 24);
        let longest = "é".repeat(11) + "x"; // 23 bytes, multi-byte characters
        for id in ["", "a", "bench-12345-18999", longest.as_str()] {
            let c = ClientId::from(id);
            assert!(matches!(c.0, Repr::Inline(_)), "{id}");
            assert_eq!(c.as_str(), id);
            assert_eq!(format!("{c}"), id);
        }
        let long = "x".repeat(INLINE + 1);
        for id in [long.as_str(), "nul\0inside"] {
            let c = ClientId::from(id);
            assert!(matches!(c.0, Repr::Heap(_)), "{id:?}");
            assert_eq!(&*c, id);
        }
        assert_eq!(ClientId::from("a"), ClientId::from("a"));
        assert_ne!(ClientId::from("a"), ClientId::from("ab"));
    }
}
