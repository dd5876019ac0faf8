//! Peer-controlled strings (client ids, user names, topics, filters) in log
//! lines: capped in length and with control characters escaped, so a client
//! can neither flood the log with one huge id nor forge lines with a newline.

use std::fmt;

/// Characters of a peer string written before it is cut.
pub const MAX_CHARS: usize = 128;

/// Display wrapper: at most [`MAX_CHARS`] characters, control characters
/// (newline, escape...) written as `\u{..}` escapes, and a cut string marked
/// with `...(N bytes)`.
#[derive(Debug, Clone, Copy)]
pub struct LogStr<'a>(pub &'a str);

impl fmt::Display for LogStr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, c) in self.0.chars().enumerate() {
            if n == MAX_CHARS {
                return write!(f, "...({} bytes)", self.0.len());
            }
            if c.is_control() {
                write!(f, "{}", c.escape_unicode())?;
            } else {
                fmt::Write::write_char(f, c)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_plain_strings_pass_unchanged() {
        assert_eq!(LogStr("sensor/1/temp").to_string(), "sensor/1/temp");
        assert_eq!(LogStr("").to_string(), "");
        assert_eq!(LogStr("dévice").to_string(), "dévice");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            LogStr("a\nFAKE: line\x1b[31m").to_string(),
            "a\\u{a}FAKE: line\\u{1b}[31m"
        );
    }

    #[test]
    fn long_strings_are_cut_and_say_how_long_they_were() {
        let long = "x".repeat(70_000);
        let s = LogStr(&long).to_string();
        assert!(s.len() < MAX_CHARS + 32, "{}", s.len());
        assert!(s.ends_with("...(70000 bytes)"), "{s}");
    }
}
