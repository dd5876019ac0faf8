//! A fast keyed hash for text that peers choose (topic names and filters),
//! for the subscription index's table, which hashes every PUBLISH's topic.
//! It hashes; it keeps no table and never reads a clock.
//!
//! # Why not std's `RandomState`
//!
//! std's SipHash-1-3 cost about 190 instructions per message on a 15-byte
//! topic (a fixed cost of rounds per 8-byte word plus finalisation), a tenth
//! of midge's work per QoS 0 message. This hash does one 64x64->128-bit
//! multiply per 16 bytes of input, folded to 64 bits (high half XOR low half),
//! with every operand XORed with a key word: about 25 instructions for the
//! same topic.
//!
//! # Hash flooding
//!
//! A peer who knew which topics collide could make every lookup walk a long
//! probe sequence. Resistance rests on the key:
//!
//! * four 64-bit words drawn per table from std's `RandomState` (seeded from
//!   the operating system's randomness), so neither the source nor another
//!   process's tables say which strings collide in this one;
//! * every input word meets a secret key word before the multiply, and the
//!   state is chained through each block, so collisions depend on the key:
//!   reordering or repeating blocks does not keep a hash;
//! * the hash never leaves the process: the index iterates its filters in
//!   the order of its entry vector, not of its table, so no reply or `$SYS`
//!   value orders anything by hash, and timing is the only oracle left.
//!
//! This is the construction of foldhash and of aHash's portable fallback
//! (keyed folded multiply, the choice of hashbrown's ecosystem where keys are
//! untrusted but a cryptographic PRF is too slow). Unlike SipHash it has no
//! proof of being a PRF; the known weakness of a folded multiply (a zero
//! operand zeroes the product, whatever the other) needs the attacker to hit
//! a secret 64-bit key word exactly.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

/// A hash function with its secret key (see the module documentation).
#[derive(Clone, Copy)]
pub(super) struct KeyedHash {
    key: [u64; 4],
}

impl std::fmt::Debug for KeyedHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is a secret: never in a log line.
        f.write_str("KeyedHash")
    }
}

impl Default for KeyedHash {
    /// A fresh random key.
    fn default() -> Self {
        // `RandomState::new()` is keyed from the OS once per thread and
        // varied per call; SipHash of distinct counters under it gives
        // independent-looking words, without a syscall per table.
        let seed = RandomState::new();
        KeyedHash {
            key: [
                seed.hash_one(0u8),
                seed.hash_one(1u8),
                seed.hash_one(2u8),
                seed.hash_one(3u8),
            ],
        }
    }
}

/// The 128-bit product of `a` and `b`, folded to 64 bits.
#[inline]
fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// Little-endian word of the 8 bytes at `at` (the caller checks the length).
#[inline]
fn word(bytes: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    if let Some(b) = bytes.get(at..at + 8) {
        w.copy_from_slice(b);
    }
    u64::from_le_bytes(w)
}

/// Little-endian value of the 4 bytes at `at` (the caller checks the length).
#[inline]
fn half(bytes: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 4];
    if let Some(b) = bytes.get(at..at + 4) {
        w.copy_from_slice(b);
    }
    u64::from(u32::from_le_bytes(w))
}

impl KeyedHash {
    /// The hash of `bytes`.
    #[inline]
    pub fn hash(&self, bytes: &[u8]) -> u64 {
        let [k0, k1, k2, k3] = self.key;
        let len = bytes.len();
        // The length goes in first, through a multiply of its own, so the
        // overlapping reads of the last block below cannot make two lengths
        // agree: XORed in directly it could cancel a data bit ("`b" and "abb").
        let mut acc = fold(k0 ^ len as u64, k2);
        let mut at = 0;
        while len - at > 16 {
            acc = fold(acc ^ word(bytes, at) ^ k1, word(bytes, at + 8) ^ k2);
            at += 16;
        }
        // The last 1..=16 bytes (or none), read as two words that may overlap.
        let (a, b) = match len - at {
            0 => (0, 0),
            n @ 1..=3 => {
                let b0 = u64::from(bytes[at]);
                let b1 = u64::from(bytes[at + n / 2]);
                let b2 = u64::from(bytes[at + n - 1]);
                (b0 | b1 << 8 | b2 << 16, 0)
            }
            n @ 4..=7 => (half(bytes, at), half(bytes, at + n - 4)),
            n => (word(bytes, at), word(bytes, at + n - 8)),
        };
        // A key word of its own for the last block, and one more multiply so
        // that every output bit depends on every input bit.
        acc = fold(acc ^ a ^ k1, b ^ k3);
        fold(acc ^ k2, k3 ^ k0)
    }
}

#[cfg(test)]
mod tests {
    use super::KeyedHash;
    use std::collections::HashSet;

    #[test]
    fn distinct_inputs_of_every_length_hash_apart() {
        let h = KeyedHash::default();
        let mut seen = HashSet::new();
        // Every length from 0 to 70 (all the short-input branches and several
        // 16-byte blocks), and one-byte changes at every position.
        for len in 0..=70usize {
            let base: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            assert!(seen.insert(h.hash(&base)), "length {len}");
            for i in 0..len {
                let mut v = base.clone();
                v[i] ^= 1;
                assert!(seen.insert(h.hash(&v)), "length {len}, byte {i}");
            }
        }
        // A zero byte is not the same as no byte.
        assert_ne!(h.hash(b""), h.hash(b"\0"));
        assert_ne!(h.hash(b"\0"), h.hash(b"\0\0"));
    }

    #[test]
    fn blocks_in_another_order_hash_apart() {
        let h = KeyedHash::default();
        let a = [b'a'; 16];
        let b = [b'b'; 16];
        let ab: Vec<u8> = a.iter().chain(&b).chain(b"tail").copied().collect();
        let ba: Vec<u8> = b.iter().chain(&a).chain(b"tail").copied().collect();
        assert_ne!(h.hash(&ab), h.hash(&ba));
    }

    #[test]
    fn keys_differ_between_tables() {
        let (x, y) = (KeyedHash::default(), KeyedHash::default());
        assert_ne!(x.key, y.key);
        assert_ne!(x.hash(b"devices/1/status"), y.hash(b"devices/1/status"));
    }

    #[test]
    fn low_bits_spread_over_slots() {
        // The table uses the low bits: 4,096 similar topics over 1,024 slots
        // land in nearly every slot, none crowded.
        let h = KeyedHash::default();
        let mut counts = vec![0u32; 1024];
        for i in 0..4096 {
            let t = format!("devices/{i}/status");
            counts[(h.hash(t.as_bytes()) & 1023) as usize] += 1;
        }
        let empty = counts.iter().filter(|&&c| c == 0).count();
        let max = counts.iter().copied().max().unwrap_or(0);
        assert!(empty < 60, "{empty} empty slots");
        assert!(max < 20, "{max} in one slot");
    }
}
