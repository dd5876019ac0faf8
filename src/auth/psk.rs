//! `psk_file`: the pre-shared keys of TLS-PSK listeners, in mosquitto's format,
//! one `identity:hexkey` per line (`#` comments and blank lines skipped). Read
//! at start, by `--test-config` and on SIGHUP, like the password file; the TLS
//! acceptor's PSK callback looks identities up here.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Longest key accepted, in bytes: OpenSSL's `PSK_MAX_PSK_LEN` (a longer one
/// could never be handed to the handshake).
pub const MAX_KEY_BYTES: usize = 256;
/// Longest identity accepted, in bytes: OpenSSL's `PSK_MAX_IDENTITY_LEN` in
/// 1.1 (what a client can send).
pub const MAX_IDENTITY_BYTES: usize = 128;

/// Identities and their keys.
#[derive(Default, Clone, PartialEq, Eq)]
pub struct PskFile {
    keys: HashMap<String, Vec<u8>>,
}

impl fmt::Debug for PskFile {
    // Never print key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PskFile({} identities)", self.keys.len())
    }
}

/// Why a PSK file is unusable: every bad line, each with its number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PskError {
    /// The file.
    pub path: PathBuf,
    /// (1-based line, 0 for the whole file; what is wrong).
    pub problems: Vec<(usize, String)>,
}

impl fmt::Display for PskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (line, message)) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            match line {
                0 => write!(f, "psk_file {}: {message}", self.path.display())?,
                n => write!(f, "psk_file {}:{n}: {message}", self.path.display())?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for PskError {}

/// The bytes of a hex string (either case); `None` if it is not one.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    s.as_bytes()
        .chunks(2)
        .map(|pair| {
            let digit = |c: u8| (c as char).to_digit(16);
            Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)
        })
        .collect()
}

impl PskFile {
    /// Parse a file's text; every bad line is reported (1-based numbers).
    pub fn parse(text: &str) -> Result<PskFile, Vec<(usize, String)>> {
        let mut file = PskFile::default();
        let mut problems = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((identity, hex)) = line.split_once(':') else {
                problems.push((n, "expected `identity:hexkey` (no `:`)".to_string()));
                continue;
            };
            if identity.is_empty() {
                problems.push((n, "empty identity".to_string()));
                continue;
            }
            if identity.len() > MAX_IDENTITY_BYTES {
                problems.push((
                    n,
                    format!("identity longer than {MAX_IDENTITY_BYTES} bytes"),
                ));
                continue;
            }
            // The key is not echoed: the file is secret, the log may not be.
            let key = match unhex(hex) {
                Some(k) if k.is_empty() => {
                    problems.push((n, "empty key".to_string()));
                    continue;
                }
                Some(k) if k.len() > MAX_KEY_BYTES => {
                    problems.push((n, format!("key longer than {MAX_KEY_BYTES} bytes")));
                    continue;
                }
                Some(k) => k,
                None => {
                    problems.push((
                        n,
                        "the key is not hexadecimal (an even number of 0-9, a-f)".to_string(),
                    ));
                    continue;
                }
            };
            // A later line for the same identity wins, as a later password
            // line does.
            file.keys.insert(identity.to_string(), key);
        }
        if problems.is_empty() {
            Ok(file)
        } else {
            Err(problems)
        }
    }

    /// Read and parse `path`.
    pub fn load(path: &Path) -> Result<PskFile, PskError> {
        let err = |problems| PskError {
            path: path.to_path_buf(),
            problems,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| err(vec![(0, format!("cannot read: {e}"))]))?;
        PskFile::parse(&text).map_err(err)
    }

    /// The key of `identity`, if it has one.
    pub fn key(&self, identity: &[u8]) -> Option<&[u8]> {
        let identity = std::str::from_utf8(identity).ok()?;
        self.keys.get(identity).map(Vec::as_slice)
    }

    /// Number of identities.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// No identity at all.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_and_hex_keys() {
        let f = PskFile::parse("# devices\n\nsensor1:DEADbeef\nsensor2:00\r\nsensor1:0102\n")
            .expect("parse");
        assert_eq!(f.len(), 2);
        assert_eq!(f.key(b"sensor1"), Some(&[1u8, 2][..]));
        assert_eq!(f.key(b"sensor2"), Some(&[0u8][..]));
        assert_eq!(f.key(b"sensor3"), None);
        assert_eq!(f.key(&[0xff]), None);
    }

    #[test]
    fn every_bad_line_is_reported_with_its_number() {
        let text = "ok:00\nnocolon\nbad:xyz1\nodd:123\n:00\nempty:\n";
        let problems = PskFile::parse(text).expect_err("bad");
        let lines: Vec<usize> = problems.iter().map(|p| p.0).collect();
        assert_eq!(lines, vec![2, 3, 4, 5, 6]);
        assert!(problems[0].1.contains("no `:`"));
        assert!(problems[1].1.contains("not hexadecimal"));
        let e = PskError {
            path: "/etc/psk".into(),
            problems,
        };
        let s = e.to_string();
        assert!(s.starts_with("psk_file /etc/psk:2: expected"), "{s}");
        assert!(s.contains("psk_file /etc/psk:3: "), "{s}");
        // Keys never appear in messages.
        assert!(!s.contains("xyz1"), "{s}");
    }

    #[test]
    fn keys_and_identities_are_bounded() {
        let long_key = format!("id:{}", "ab".repeat(MAX_KEY_BYTES + 1));
        assert!(PskFile::parse(&long_key).is_err());
        let long_id = format!("{}:00", "i".repeat(MAX_IDENTITY_BYTES + 1));
        assert!(PskFile::parse(&long_id).is_err());
        assert!(format!("{:?}", PskFile::parse("a:00").expect("ok")).contains("1 identities"));
    }
}
