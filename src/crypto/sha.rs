//! SHA-1, SHA-256 and SHA-512 (FIPS 180-4) and PBKDF2-HMAC-SHA512 (RFC 8018)
//! in portable Rust, for builds without OpenSSL (`--no-default-features`): the
//! WebSocket handshake, password files and the credential cache need them and
//! nothing else does. Straightforward rather than fast; with the `tls` feature
//! OpenSSL's versions are used instead (see the parent module).

/// A hash's compression function over one block.
pub trait Compress: Clone {
    /// Block size in bytes (64 or 128); the message length field is an eighth of it.
    const BLOCK: usize;
    /// Absorb one block of exactly `BLOCK` bytes.
    fn compress(&mut self, block: &[u8]);
}

/// Merkle-Damgard buffering and padding around a compression function.
#[derive(Clone)]
pub struct Hasher<C: Compress> {
    state: C,
    block: [u8; 128],
    filled: usize,
    bytes: u128,
}

impl<C: Compress> Hasher<C> {
    fn with(state: C) -> Self {
        Hasher {
            state,
            block: [0; 128],
            filled: 0,
            bytes: 0,
        }
    }

    /// Absorb `data`.
    pub fn update(&mut self, mut data: &[u8]) {
        let n = C::BLOCK;
        self.bytes = self.bytes.wrapping_add(data.len() as u128);
        if self.filled > 0 {
            let take = (n - self.filled).min(data.len());
            self.block[self.filled..self.filled + take].copy_from_slice(&data[..take]);
            self.filled += take;
            data = &data[take..];
            if self.filled < n {
                return;
            }
            let block = self.block;
            self.state.compress(&block[..n]);
            self.filled = 0;
        }
        let mut chunks = data.chunks_exact(n);
        for b in &mut chunks {
            self.state.compress(b);
        }
        let rest = chunks.remainder();
        self.block[..rest.len()].copy_from_slice(rest);
        self.filled = rest.len();
    }

    /// Pad (0x80, zeros, the length in bits big-endian) and return the state.
    fn pad(mut self) -> C {
        let n = C::BLOCK;
        let len_field = n / 8;
        let bits = self.bytes.wrapping_mul(8);
        let zeros = (2 * n - self.filled - 1 - len_field) % n;
        let mut pad = [0u8; 256];
        pad[0] = 0x80;
        self.update(&pad[..1 + zeros]);
        let be = bits.to_be_bytes();
        self.update(&be[16 - len_field..]);
        debug_assert_eq!(self.filled, 0);
        self.state
    }
}

/// SHA-1 state (FIPS 180-4 section 6.1). Only the WebSocket handshake uses it
/// (RFC 6455 fixes it there); never for anything secret.
#[derive(Clone)]
pub struct Sha1State([u32; 5]);

impl Compress for Sha1State {
    const BLOCK: usize = 64;
    fn compress(&mut self, block: &[u8]) {
        let mut w = [0u32; 80];
        for (t, c) in block.chunks_exact(4).enumerate() {
            w[t] = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        }
        for t in 16..80 {
            w[t] = (w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = self.0;
        for (t, wt) in w.iter().enumerate() {
            let (f, k) = match t {
                0..=19 => ((b & c) | (!b & d), 0x5a82_7999),
                20..=39 => (b ^ c ^ d, 0x6ed9_eba1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8f1b_bcdc),
                _ => (b ^ c ^ d, 0xca62_c1d6),
            };
            let temp = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wt);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = temp;
        }
        for (h, v) in self.0.iter_mut().zip([a, b, c, d, e]) {
            *h = h.wrapping_add(v);
        }
    }
}

/// SHA-1 of `data`.
pub fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h = Hasher::with(Sha1State([
        0x6745_2301,
        0xefcd_ab89,
        0x98ba_dcfe,
        0x1032_5476,
        0xc3d2_e1f0,
    ]));
    h.update(data);
    let mut out = [0u8; 20];
    for (o, v) in out.chunks_exact_mut(4).zip(h.pad().0) {
        o.copy_from_slice(&v.to_be_bytes());
    }
    out
}

/// SHA-256 state (section 6.2).
#[derive(Clone)]
pub struct Sha256State([u32; 8]);

impl Compress for Sha256State {
    const BLOCK: usize = 64;
    fn compress(&mut self, block: &[u8]) {
        let mut w = [0u32; 64];
        for (t, c) in block.chunks_exact(4).enumerate() {
            w[t] = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        }
        for t in 16..64 {
            let s0 = w[t - 15].rotate_right(7) ^ w[t - 15].rotate_right(18) ^ (w[t - 15] >> 3);
            let s1 = w[t - 2].rotate_right(17) ^ w[t - 2].rotate_right(19) ^ (w[t - 2] >> 10);
            w[t] = w[t - 16]
                .wrapping_add(s0)
                .wrapping_add(w[t - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = self.0;
        for (k, wt) in K256.iter().zip(w) {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = h
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(*k)
                .wrapping_add(wt);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            h = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (s, v) in self.0.iter_mut().zip([a, b, c, d, e, f, g, h]) {
            *s = s.wrapping_add(v);
        }
    }
}

/// Incremental SHA-256, with the calls of `openssl::sha::Sha256`.
#[derive(Clone)]
pub struct Sha256(Hasher<Sha256State>);

impl Default for Sha256 {
    fn default() -> Self {
        Self::new()
    }
}

impl Sha256 {
    /// An empty hash.
    pub fn new() -> Self {
        Sha256(Hasher::with(Sha256State(H256)))
    }

    /// Absorb `data`.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The digest.
    pub fn finish(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (o, v) in out.chunks_exact_mut(4).zip(self.0.pad().0) {
            o.copy_from_slice(&v.to_be_bytes());
        }
        out
    }
}

/// SHA-512 state (section 6.4).
#[derive(Clone)]
pub struct Sha512State([u64; 8]);

impl Compress for Sha512State {
    const BLOCK: usize = 128;
    fn compress(&mut self, block: &[u8]) {
        let mut w = [0u64; 80];
        for (t, c) in block.chunks_exact(8).enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            w[t] = u64::from_be_bytes(b);
        }
        for t in 16..80 {
            let s0 = w[t - 15].rotate_right(1) ^ w[t - 15].rotate_right(8) ^ (w[t - 15] >> 7);
            let s1 = w[t - 2].rotate_right(19) ^ w[t - 2].rotate_right(61) ^ (w[t - 2] >> 6);
            w[t] = w[t - 16]
                .wrapping_add(s0)
                .wrapping_add(w[t - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = self.0;
        for (k, wt) in K512.iter().zip(w) {
            let s1 = e.rotate_right(14) ^ e.rotate_right(18) ^ e.rotate_right(41);
            let ch = (e & f) ^ (!e & g);
            let t1 = h
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(*k)
                .wrapping_add(wt);
            let s0 = a.rotate_right(28) ^ a.rotate_right(34) ^ a.rotate_right(39);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            h = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (s, v) in self.0.iter_mut().zip([a, b, c, d, e, f, g, h]) {
            *s = s.wrapping_add(v);
        }
    }
}

fn sha512_hasher() -> Hasher<Sha512State> {
    Hasher::with(Sha512State(H512))
}

fn sha512_out(state: Sha512State) -> [u8; 64] {
    let mut out = [0u8; 64];
    for (o, v) in out.chunks_exact_mut(8).zip(state.0) {
        o.copy_from_slice(&v.to_be_bytes());
    }
    out
}

/// SHA-512 of `data`.
pub fn sha512(data: &[u8]) -> [u8; 64] {
    let mut h = sha512_hasher();
    h.update(data);
    sha512_out(h.pad())
}

/// PBKDF2 with HMAC-SHA512 as the PRF (RFC 8018 section 5.2), into `out`.
/// The HMAC key pads are absorbed once (RFC 2104) and their states cloned, so
/// an iteration costs four compressions.
pub fn pbkdf2_hmac_sha512(password: &[u8], salt: &[u8], iterations: u32, out: &mut [u8]) {
    const B: usize = 128;
    let mut key = [0u8; B];
    if password.len() > B {
        key[..64].copy_from_slice(&sha512(password));
    } else {
        key[..password.len()].copy_from_slice(password);
    }
    let mut inner = sha512_hasher();
    let mut outer = sha512_hasher();
    inner.update(&key.map(|k| k ^ 0x36));
    outer.update(&key.map(|k| k ^ 0x5c));
    let hmac = |parts: &[&[u8]]| {
        let mut i = inner.clone();
        for p in parts {
            i.update(p);
        }
        let mut o = outer.clone();
        o.update(&sha512_out(i.pad()));
        sha512_out(o.pad())
    };
    for (index, chunk) in out.chunks_mut(64).enumerate() {
        // Block numbers start at 1; `out` longer than 2^32 blocks is not a case here.
        let number = (index as u32).wrapping_add(1).to_be_bytes();
        let mut u = hmac(&[salt, &number]);
        let mut t = u;
        for _ in 1..iterations {
            u = hmac(&[&u]);
            for (a, b) in t.iter_mut().zip(u) {
                *a ^= b;
            }
        }
        chunk.copy_from_slice(&t[..chunk.len()]);
    }
}

/// SHA-256 round constants: the first 32 bits of the fractional parts of the
/// cube roots of the first 64 primes (FIPS 180-4 section 4.2.2).
const K256: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

/// SHA-256 initial state: fractional parts of the square roots of the first 8
/// primes (section 5.3.3).
const H256: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// SHA-512 round constants: the first 64 bits of the fractional parts of the
/// cube roots of the first 80 primes (section 4.2.3).
const K512: [u64; 80] = [
    0x428a2f98d728ae22,
    0x7137449123ef65cd,
    0xb5c0fbcfec4d3b2f,
    0xe9b5dba58189dbbc,
    0x3956c25bf348b538,
    0x59f111f1b605d019,
    0x923f82a4af194f9b,
    0xab1c5ed5da6d8118,
    0xd807aa98a3030242,
    0x12835b0145706fbe,
    0x243185be4ee4b28c,
    0x550c7dc3d5ffb4e2,
    0x72be5d74f27b896f,
    0x80deb1fe3b1696b1,
    0x9bdc06a725c71235,
    0xc19bf174cf692694,
    0xe49b69c19ef14ad2,
    0xefbe4786384f25e3,
    0x0fc19dc68b8cd5b5,
    0x240ca1cc77ac9c65,
    0x2de92c6f592b0275,
    0x4a7484aa6ea6e483,
    0x5cb0a9dcbd41fbd4,
    0x76f988da831153b5,
    0x983e5152ee66dfab,
    0xa831c66d2db43210,
    0xb00327c898fb213f,
    0xbf597fc7beef0ee4,
    0xc6e00bf33da88fc2,
    0xd5a79147930aa725,
    0x06ca6351e003826f,
    0x142929670a0e6e70,
    0x27b70a8546d22ffc,
    0x2e1b21385c26c926,
    0x4d2c6dfc5ac42aed,
    0x53380d139d95b3df,
    0x650a73548baf63de,
    0x766a0abb3c77b2a8,
    0x81c2c92e47edaee6,
    0x92722c851482353b,
    0xa2bfe8a14cf10364,
    0xa81a664bbc423001,
    0xc24b8b70d0f89791,
    0xc76c51a30654be30,
    0xd192e819d6ef5218,
    0xd69906245565a910,
    0xf40e35855771202a,
    0x106aa07032bbd1b8,
    0x19a4c116b8d2d0c8,
    0x1e376c085141ab53,
    0x2748774cdf8eeb99,
    0x34b0bcb5e19b48a8,
    0x391c0cb3c5c95a63,
    0x4ed8aa4ae3418acb,
    0x5b9cca4f7763e373,
    0x682e6ff3d6b2b8a3,
    0x748f82ee5defb2fc,
    0x78a5636f43172f60,
    0x84c87814a1f0ab72,
    0x8cc702081a6439ec,
    0x90befffa23631e28,
    0xa4506cebde82bde9,
    0xbef9a3f7b2c67915,
    0xc67178f2e372532b,
    0xca273eceea26619c,
    0xd186b8c721c0c207,
    0xeada7dd6cde0eb1e,
    0xf57d4f7fee6ed178,
    0x06f067aa72176fba,
    0x0a637dc5a2c898a6,
    0x113f9804bef90dae,
    0x1b710b35131c471b,
    0x28db77f523047d84,
    0x32caab7b40c72493,
    0x3c9ebe0a15c9bebc,
    0x431d67c49c100d4c,
    0x4cc5d4becb3e42b6,
    0x597f299cfc657e2a,
    0x5fcb6fab3ad6faec,
    0x6c44198c4a475817,
];

/// SHA-512 initial state: square roots of the first 8 primes (section 5.3.5).
const H512: [u64; 8] = [
    0x6a09e667f3bcc908,
    0xbb67ae8584caa73b,
    0x3c6ef372fe94f82b,
    0xa54ff53a5f1d36f1,
    0x510e527fade682d1,
    0x9b05688c2b3e6c1f,
    0x1f83d9abfb41bd6b,
    0x5be0cd19137e2179,
];

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    // FIPS 180-4 example vectors ("abc", the two-block message, the empty string).
    #[test]
    fn sha1_vectors() {
        assert_eq!(
            hex(&sha1(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(hex(&sha1(b"")), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(
            hex(&sha1(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1"
        );
    }

    #[test]
    fn sha256_vectors() {
        let one = |d: &[u8]| {
            let mut h = Sha256::new();
            h.update(d);
            hex(&h.finish())
        };
        assert_eq!(
            one(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            one(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            one(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
    }

    #[test]
    fn sha512_vectors() {
        assert_eq!(
            hex(&sha512(b"abc")),
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
             2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        );
        assert_eq!(
            hex(&sha512(b"")),
            "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce\
             47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"
        );
    }

    // Feeding in pieces of every size crosses every block boundary case.
    #[test]
    fn split_updates_match_one_update() {
        let data: Vec<u8> = (0..600u32).map(|i| (i * 7 + 3) as u8).collect();
        for cut in [0, 1, 55, 56, 63, 64, 65, 111, 112, 127, 128, 129, 300] {
            let mut h = Sha256::new();
            h.update(&data[..cut]);
            h.update(&data[cut..]);
            let mut whole = Sha256::new();
            whole.update(&data);
            assert_eq!(h.finish(), whole.finish(), "cut {cut}");
        }
        for len in 0..300 {
            let mut h = sha512_hasher();
            for b in data[..len].chunks(13) {
                h.update(b);
            }
            assert_eq!(sha512_out(h.pad()), sha512(&data[..len]), "len {len}");
        }
    }

    // PBKDF2-HMAC-SHA512 with the RFC 6070 inputs (published SHA-512 results).
    #[test]
    fn pbkdf2_vectors() {
        let mut out = [0u8; 64];
        pbkdf2_hmac_sha512(b"password", b"salt", 1, &mut out);
        assert_eq!(
            hex(&out),
            "867f70cf1ade02cff3752599a3a53dc4af34c7a669815ae5d513554e1c8cf252\
             c02d470a285a0501bad999bfe943c08f050235d7d68b1da55e63f73b60a57fce"
        );
        pbkdf2_hmac_sha512(b"password", b"salt", 2, &mut out);
        assert_eq!(
            hex(&out),
            "e1d9c16aa681708a45f5c7c4e215ceb66e011a2e9f0040713f18aefdb866d53c\
             f76cab2868a39b9f7840edce4fef5a82be67335c77a6068e04112754f27ccf4e"
        );
    }

    // Against OpenSSL where it is linked: every length around the block sizes,
    // keys longer than a block, several output blocks.
    #[cfg(feature = "tls")]
    #[test]
    fn same_as_openssl() {
        let data: Vec<u8> = (0..400u32).map(|i| (i * 31 + 11) as u8).collect();
        for len in 0..data.len() {
            let d = &data[..len];
            assert_eq!(sha1(d), openssl::sha::sha1(d), "sha1 {len}");
            assert_eq!(sha512(d), openssl::sha::sha512(d), "sha512 {len}");
            let mut h = Sha256::new();
            h.update(d);
            assert_eq!(h.finish(), openssl::sha::sha256(d), "sha256 {len}");
        }
        for (plen, slen, iter, olen) in [(0, 0, 1, 64), (8, 12, 101, 64), (200, 30, 3, 150)] {
            let mut ours = vec![0u8; olen];
            let mut theirs = vec![0u8; olen];
            pbkdf2_hmac_sha512(&data[..plen], &data[..slen], iter, &mut ours);
            openssl::pkcs5::pbkdf2_hmac(
                &data[..plen],
                &data[..slen],
                iter as usize,
                openssl::hash::MessageDigest::sha512(),
                &mut theirs,
            )
            .expect("openssl pbkdf2");
            assert_eq!(ours, theirs, "pbkdf2 {plen} {slen} {iter} {olen}");
        }
    }
}
