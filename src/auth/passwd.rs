//! Password files in mosquitto_passwd's format, one `user:hash` per line, so a
//! file made by `mosquitto_passwd` works unchanged and one made by
//! `midge passwd` works in mosquitto.
//!
//! Hash kinds (both written by mosquitto_passwd, salt 12 random bytes, all
//! fields standard base64):
//! * `$6$SALT$HASH`: HASH = SHA-512(password || salt) (mosquitto 1.x default);
//! * `$7$ITERATIONS$SALT$HASH`: HASH = PBKDF2-HMAC-SHA512(password, salt,
//!   ITERATIONS, 64 bytes) (mosquitto 2.x default, 101 iterations).
//!
//! The hashes are [`crate::crypto`]'s (OpenSSL's in TLS builds); comparison is
//! constant-time.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use crate::crypto::{self, base64};

/// mosquitto_passwd's default PBKDF2 iteration count.
pub const DEFAULT_ITERATIONS: u32 = 101;
const SALT_LEN: usize = 12;

/// A stored password hash.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordHash {
    /// `$6$`: salted SHA-512.
    Sha512 {
        /// Salt bytes.
        salt: Vec<u8>,
        /// Digest.
        hash: Vec<u8>,
    },
    /// `$7$`: PBKDF2-HMAC-SHA512.
    Pbkdf2 {
        /// Iteration count.
        iterations: u32,
        /// Salt bytes.
        salt: Vec<u8>,
        /// Derived key.
        hash: Vec<u8>,
    },
}

impl fmt::Debug for PasswordHash {
    // Never print hash material, not even in debug output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordHash::Sha512 { .. } => f.write_str("PasswordHash::Sha512(..)"),
            PasswordHash::Pbkdf2 { iterations, .. } => {
                write!(f, "PasswordHash::Pbkdf2({iterations}, ..)")
            }
        }
    }
}

/// Why a password entry or file is unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdError {
    /// 1-based line, 0 for the whole file.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for PasswdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            f.write_str(&self.message)
        } else {
            write!(f, "line {}: {}", self.line, self.message)
        }
    }
}

impl std::error::Error for PasswdError {}

fn digest(kind: &PasswordHash, password: &[u8]) -> Option<Vec<u8>> {
    match kind {
        PasswordHash::Sha512 { salt, .. } => {
            let mut input = Vec::with_capacity(password.len() + salt.len());
            input.extend_from_slice(password);
            input.extend_from_slice(salt);
            Some(crypto::sha512(&input).to_vec())
        }
        PasswordHash::Pbkdf2 {
            iterations, salt, ..
        } => {
            let mut key = vec![0u8; 64];
            crypto::pbkdf2_hmac_sha512(password, salt, *iterations, &mut key).ok()?;
            Some(key)
        }
    }
}

impl PasswordHash {
    /// A new `$7$` hash of `password` with a random salt.
    pub fn new(password: &[u8], iterations: u32) -> Result<PasswordHash, PasswdError> {
        let mut salt = vec![0u8; SALT_LEN];
        crypto::random_bytes(&mut salt).map_err(|e| PasswdError {
            line: 0,
            message: format!("no random salt: {e}"),
        })?;
        let mut h = PasswordHash::Pbkdf2 {
            iterations,
            salt,
            hash: Vec::new(),
        };
        let d = digest(&h, password).ok_or_else(|| PasswdError {
            line: 0,
            message: "hashing failed".into(),
        })?;
        if let PasswordHash::Pbkdf2 { hash, .. } = &mut h {
            *hash = d;
        }
        Ok(h)
    }

    /// Parse the hash part of a password file line.
    pub fn parse(text: &str) -> Result<PasswordHash, String> {
        let b64 = |s: &str| base64::decode(s).map_err(|_| format!("bad base64 `{s}`"));
        let parts: Vec<&str> = text.split('$').collect();
        match parts.as_slice() {
            ["", "6", salt, hash] => Ok(PasswordHash::Sha512 {
                salt: b64(salt)?,
                hash: b64(hash)?,
            }),
            ["", "7", iter, salt, hash] => {
                let iterations = iter
                    .parse::<u32>()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("bad iteration count `{iter}`"))?;
                Ok(PasswordHash::Pbkdf2 {
                    iterations,
                    salt: b64(salt)?,
                    hash: b64(hash)?,
                })
            }
            _ => Err("not a $6$ or $7$ hash (plain-text passwords must be hashed first: `midge passwd -U`)".into()),
        }
    }

    /// Does `password` match? Constant-time in the comparison.
    pub fn verify(&self, password: &[u8]) -> bool {
        let stored = match self {
            PasswordHash::Sha512 { hash, .. } | PasswordHash::Pbkdf2 { hash, .. } => hash,
        };
        match digest(self, password) {
            Some(d) => crypto::constant_time_eq(&d, stored),
            None => false,
        }
    }
}

impl fmt::Display for PasswordHash {
    /// The file form, as mosquitto_passwd writes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordHash::Sha512 { salt, hash } => {
                write!(f, "$6${}${}", base64::encode(salt), base64::encode(hash))
            }
            PasswordHash::Pbkdf2 {
                iterations,
                salt,
                hash,
            } => write!(
                f,
                "$7${iterations}${}${}",
                base64::encode(salt),
                base64::encode(hash)
            ),
        }
    }
}

/// A loaded password file: user name -> hash, in file order for rewriting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PasswordFile {
    entries: Vec<(String, PasswordHash)>,
    index: HashMap<String, usize>,
}

impl PasswordFile {
    /// Parse file text. Blank lines and `#` comments are skipped.
    pub fn parse(text: &str) -> Result<PasswordFile, PasswdError> {
        let mut file = PasswordFile::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |message: String| PasswdError {
                line: i + 1,
                message,
            };
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| err("expected `user:hash`".into()))?;
            if user.is_empty() {
                return Err(err("empty user name".into()));
            }
            let hash = PasswordHash::parse(hash).map_err(err)?;
            file.set(user, hash);
        }
        Ok(file)
    }

    /// Read and parse `path`.
    pub fn load(path: &Path) -> Result<PasswordFile, PasswdError> {
        let text = std::fs::read_to_string(path).map_err(|e| PasswdError {
            line: 0,
            message: format!("cannot read {}: {e}", path.display()),
        })?;
        PasswordFile::parse(&text).map_err(|e| PasswdError {
            line: e.line,
            message: format!("{}: {}", path.display(), e.message),
        })
    }

    /// Check a user's password. Unknown users cost the same hashing as known
    /// ones, so timing does not reveal which user names exist.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        match self.index.get(user).and_then(|&i| self.entries.get(i)) {
            Some((_, h)) => h.verify(password),
            None => {
                let decoy = PasswordHash::Pbkdf2 {
                    iterations: DEFAULT_ITERATIONS,
                    salt: vec![0; SALT_LEN],
                    hash: vec![0; 64],
                };
                let _ = decoy.verify(password);
                false
            }
        }
    }

    /// What checking `user`'s password costs, in PBKDF2 iterations (a `$6$`
    /// hash counts as one; an unknown user costs the decoy's).
    pub fn cost(&self, user: &str) -> u64 {
        match self.index.get(user).and_then(|&i| self.entries.get(i)) {
            Some((_, PasswordHash::Pbkdf2 { iterations, .. })) => u64::from(*iterations),
            Some((_, PasswordHash::Sha512 { .. })) => 1,
            None => u64::from(DEFAULT_ITERATIONS),
        }
    }

    /// Add or replace a user.
    pub fn set(&mut self, user: &str, hash: PasswordHash) {
        match self.index.get(user) {
            Some(&i) => {
                if let Some(e) = self.entries.get_mut(i) {
                    e.1 = hash;
                }
            }
            None => {
                self.index.insert(user.to_string(), self.entries.len());
                self.entries.push((user.to_string(), hash));
            }
        }
    }

    /// Remove a user; true if it existed.
    pub fn remove(&mut self, user: &str) -> bool {
        let before = self.entries.len();
        self.entries.retain(|(u, _)| u != user);
        self.index = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, (u, _))| (u.clone(), i))
            .collect();
        self.entries.len() != before
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True with no users.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The file text.
    pub fn to_text(&self) -> String {
        self.entries
            .iter()
            .map(|(u, h)| format!("{u}:{h}\n"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines written by mosquitto_passwd 2.0.11 (`-b`, and `-H sha512 -b`).
    const MOSQUITTO: &str = "alice:$7$101$0JKWDFXcrXYkyCOJ$OEmSGLiXpmot7spi3Pjw/m5MwhRGGgE9cOZ5MMx3TrqDd92LR7ZIQcxoMO5E9Ht+doLiJ2FJ9cgp0FxEWlbh1g==\n\
bob:$6$x7as5TR4CDfId2vH$rK1bFWQjBwAb87Ogurk89H4Wfos5Eh2a/Tws1Yb2fKMWHPv2QtizxIXuzMmysysW+c6XFwyrwlaQhmbi344T3w==\n";

    #[test]
    fn reads_both_mosquitto_hash_kinds() {
        let f = PasswordFile::parse(MOSQUITTO).expect("parse");
        assert!(f.verify("alice", b"secret"));
        assert!(!f.verify("alice", b"Secret"));
        assert!(f.verify("bob", b"hunter2"));
        assert!(!f.verify("bob", b""));
        assert!(!f.verify("carol", b"secret"));
    }

    #[test]
    fn new_hashes_round_trip_through_the_file_form() {
        let mut f = PasswordFile::default();
        f.set(
            "u",
            PasswordHash::new(b"pw", DEFAULT_ITERATIONS).expect("hash"),
        );
        let text = f.to_text();
        assert!(text.starts_with("u:$7$101$"), "{text}");
        let mut g = PasswordFile::parse(&text).expect("parse");
        assert!(g.verify("u", b"pw"));
        assert!(g.remove("u"));
        assert!(g.is_empty() || !g.verify("u", b"pw"));
    }

    #[test]
    fn bad_lines_are_located() {
        let e = PasswordFile::parse("ok:$6$YWJj$ZGVm\nplain:password\n").expect_err("plain");
        assert_eq!(e.line, 2);
        assert!(PasswordFile::parse("x").is_err());
        assert!(PasswordFile::parse("x:$7$0$YQ==$YQ==").is_err());
        assert!(PasswordFile::parse("x:$7$9$!!$YQ==").is_err());
    }

    #[test]
    fn debug_output_hides_hashes() {
        let f = PasswordFile::parse(MOSQUITTO).expect("parse");
        let d = format!("{f:?}");
        assert!(!d.contains("OEmSG") && !d.contains("0JKW"), "{d}");
    }
}
