//! The little cryptography midge needs outside TLS: SHA-1 (the WebSocket
//! handshake), SHA-512 and PBKDF2-HMAC-SHA512 (password files), SHA-256 (the
//! credential cache), base64, random bytes and a constant-time comparison.
//! With the `tls` feature the hashes are OpenSSL's (already linked, and faster);
//! without it, the portable ones in [`sha`], so a no-TLS build links no C library.

pub mod base64;
#[cfg(any(test, not(feature = "tls")))]
pub mod sha;

#[cfg(feature = "tls")]
pub use openssl::sha::{sha1, sha512, Sha256};
#[cfg(not(feature = "tls"))]
pub use sha::{sha1, sha512, Sha256};

/// PBKDF2-HMAC-SHA512 of `password` and `salt` over `iterations` rounds into
/// `out` (RFC 8018). Fails only if OpenSSL does.
pub fn pbkdf2_hmac_sha512(
    password: &[u8],
    salt: &[u8],
    iterations: u32,
    out: &mut [u8],
) -> Result<(), CryptoError> {
    #[cfg(feature = "tls")]
    {
        let iter = usize::try_from(iterations).map_err(|_| CryptoError("iteration count"))?;
        openssl::pkcs5::pbkdf2_hmac(
            password,
            salt,
            iter,
            openssl::hash::MessageDigest::sha512(),
            out,
        )
        .map_err(|_| CryptoError("OpenSSL's PBKDF2 failed"))
    }
    #[cfg(not(feature = "tls"))]
    {
        sha::pbkdf2_hmac_sha512(password, salt, iterations, out);
        Ok(())
    }
}

/// Fill `buf` from the kernel's random source (getrandom(2), which blocks only
/// until the pool is first seeded at boot).
pub fn random_bytes(buf: &mut [u8]) -> Result<(), CryptoError> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: the pointer and length describe `rest`, which the call only writes.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(CryptoError("getrandom failed"));
        }
        filled += n as usize;
    }
    Ok(())
}

/// Equal contents, in time that depends only on the lengths: stored password
/// hashes must not leak how many leading bytes a guess got right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// A cryptographic primitive failed (which one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CryptoError(pub &'static str);

impl std::fmt::Display for CryptoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for CryptoError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_bytes_fill_and_differ() {
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        random_bytes(&mut a).expect("random");
        random_bytes(&mut b).expect("random");
        assert_ne!(a, b);
        assert_ne!(a, [0; 32]);
    }

    #[test]
    fn constant_time_eq_compares_contents_and_lengths() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }
}
