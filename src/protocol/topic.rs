//! Topic names and topic filters (4.7, 4.8.2): validation, shared-subscription
//! parsing and wildcard matching.
//!
//! Everything here works on `&str` slices and never allocates; UTF-8 validity and
//! the U+0000 ban are the decoder's job, not this module's.

/// The prefix of a shared subscription filter (4.8.2).
const SHARE_PREFIX: &str = "$share/";

/// Is `topic` a valid topic name for PUBLISH: non-empty, no `+` or `#` [MQTT-3.3.2-2]
/// [MQTT-4.7.3-1]. (UTF-8 validity is the decoder's job.)
pub fn valid_topic_name(topic: &str) -> bool {
    !topic.is_empty() && !topic.bytes().any(|b| b == b'+' || b == b'#')
}

/// Is `filter` a valid topic filter: non-empty [MQTT-4.7.3-1], `#` alone in the last
/// level [MQTT-4.7.1-2], `+` alone in its level [MQTT-4.7.1-3].
///
/// Shared subscriptions `$share/{ShareName}/{filter}` are accepted when the share
/// name is non-empty without `/`, `+` or `#` and `{filter}` is itself a valid filter
/// [MQTT-4.8.2-1] [MQTT-4.8.2-2]; whether the broker supports them is decided elsewhere.
pub fn valid_topic_filter(filter: &str) -> bool {
    if filter.starts_with(SHARE_PREFIX) {
        return parse_shared(filter).is_some();
    }
    valid_plain_filter(filter)
}

/// Split a shared subscription filter `$share/{ShareName}/{filter}` into
/// `(share_name, filter)`. `None` when `filter` is not a valid shared subscription
/// (including when it does not start with `$share/` at all).
pub fn parse_shared(filter: &str) -> Option<(&str, &str)> {
    let rest = filter.strip_prefix(SHARE_PREFIX)?;
    // The share name ends at the first '/', so it can never contain one; a
    // `$share/name` with no '/' after the name has no filter and is invalid.
    let (name, inner) = rest.split_once('/')?;
    if name.is_empty() || name.bytes().any(|b| b == b'+' || b == b'#') {
        return None;
    }
    if !valid_plain_filter(inner) {
        return None;
    }
    Some((name, inner))
}

/// The wildcard rules for a filter that is not a shared subscription.
fn valid_plain_filter(filter: &str) -> bool {
    if filter.is_empty() {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') {
            // '#' must be the whole level and the last one [MQTT-4.7.1-2].
            if level != "#" || levels.peek().is_some() {
                return false;
            }
        } else if level.contains('+') && level != "+" {
            // '+' must occupy an entire level [MQTT-4.7.1-3].
            return false;
        }
    }
    true
}

/// Does `filter` match `topic`? Assumes both are valid and that `filter` is a plain
/// filter (not `$share/...`; strip that with [`parse_shared`] first).
///
/// `+` matches exactly one level, `#` matches its level and everything below,
/// including the parent (`sport/#` matches `sport`) [MQTT-4.7.1-2]; empty levels
/// are levels (`a//b`). Topics starting with `$` are not matched by filters starting
/// with a wildcard [MQTT-4.7.2-1].
pub fn matches(filter: &str, topic: &str) -> bool {
    // Level by level over the bytes ('/' is never part of a multi-byte UTF-8
    // character): this runs for every subscription candidate, ACL rule and
    // bridge `topic` line a message meets, and `str::split` cost several
    // times as much.
    let (f, t) = (filter.as_bytes(), topic.as_bytes());
    if t.first() == Some(&b'$') && matches!(f.first(), Some(b'+' | b'#')) {
        return false;
    }
    let (mut i, mut j) = (0, 0);
    loop {
        let fe = level_end(f, i);
        let fl = &f[i..fe];
        if fl == b"#" {
            return true;
        }
        let te = level_end(t, j);
        if fl != b"+" && fl != &t[j..te] {
            return false;
        }
        match (fe < f.len(), te < t.len()) {
            (true, true) => (i, j) = (fe + 1, te + 1),
            (false, false) => return true,
            // The topic ended: only a `#` level left matches (the parent level).
            (true, false) => return &f[fe + 1..level_end(f, fe + 1)] == b"#",
            (false, true) => return false,
        }
    }
}

/// Where the level starting at `from` ends: the next '/' or the end.
fn level_end(s: &[u8], from: usize) -> usize {
    s[from..]
        .iter()
        .position(|&b| b == b'/')
        .map_or(s.len(), |n| from + n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The matcher as it was written first (levels by `str::split`): the byte
    /// matcher must agree with it everywhere.
    fn matches_by_split(filter: &str, topic: &str) -> bool {
        if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
            return false;
        }
        let mut f = filter.split('/');
        let mut t = topic.split('/');
        loop {
            match (f.next(), t.next()) {
                (Some("#"), _) => return true,
                (Some("+"), Some(_)) => {}
                (Some(fl), Some(tl)) => {
                    if fl != tl {
                        return false;
                    }
                }
                (None, None) => return true,
                _ => return false,
            }
        }
    }

    /// Every valid filter of up to 5 characters from {a, /, +, #, $} against
    /// every topic of up to 5 from {a, b, /, $, é}.
    #[test]
    fn byte_matcher_agrees_with_the_split_matcher() {
        fn all(alphabet: &[&str], max: usize) -> Vec<String> {
            let mut out = vec![String::new()];
            let mut last = vec![String::new()];
            for _ in 0..max {
                last = last
                    .iter()
                    .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
                    .collect();
                out.extend(last.iter().cloned());
            }
            out
        }
        let filters: Vec<String> = all(&["a", "/", "+", "#", "$"], 5)
            .into_iter()
            .filter(|f| valid_topic_filter(f) && !f.starts_with(SHARE_PREFIX))
            .collect();
        let topics: Vec<String> = all(&["a", "b", "/", "$", "\u{e9}"], 5)
            .into_iter()
            .filter(|t| valid_topic_name(t))
            .collect();
        let mut n = 0;
        for f in &filters {
            for t in &topics {
                assert_eq!(matches(f, t), matches_by_split(f, t), "{f:?} {t:?}");
                n += 1;
            }
        }
        assert!(n > 1_000_000, "{n} pairs");
    }

    #[test]
    fn topic_names() {
        for ok in [
            "a",
            "/",
            "a/b",
            "a//b",
            "$SYS/x",
            " ",
            "sport/tennis/player1",
        ] {
            assert!(valid_topic_name(ok), "{ok}");
        }
        // [MQTT-4.7.3-1] non-empty; [MQTT-3.3.2-2] no wildcards.
        for bad in ["", "+", "#", "a/+", "a/#", "a+b", "a#"] {
            assert!(!valid_topic_name(bad), "{bad}");
        }
    }

    #[test]
    fn topic_filters() {
        for ok in [
            "#",
            "+",
            "/",
            "a",
            "a/b",
            "a/#",
            "+/+",
            "/+",
            "+/",
            "a//b",
            "sport/+/player1",
            "$SYS/#",
            "+/tennis/#",
            "$share",
            "$sharex/a",
        ] {
            assert!(valid_topic_filter(ok), "{ok}");
        }
        // 4.7.1.2 and 4.7.1.3 examples of invalid filters.
        for bad in [
            "",
            "sport/tennis#",
            "sport/tennis/#/ranking",
            "sport+",
            "a/#/",
            "##",
            "a/++",
        ] {
            assert!(!valid_topic_filter(bad), "{bad}");
        }
    }

    #[test]
    fn shared_subscriptions() {
        assert_eq!(parse_shared("$share/g/a/b"), Some(("g", "a/b")));
        assert_eq!(parse_shared("$share/g/#"), Some(("g", "#")));
        assert_eq!(parse_shared("$share/g//"), Some(("g", "/")));
        assert!(valid_topic_filter("$share/consumer1/sport/tennis/+"));
        // [MQTT-4.8.2-1]: ShareName non-empty, no '/', '+', '#'.
        for bad in [
            "$share/",
            "$share//a",
            "$share/+/a",
            "$share/g#/a",
            "$share/x",
            "$share/x/",
            "$share/g/a/#/b",
            "$share/g/a+",
        ] {
            assert!(!valid_topic_filter(bad), "{bad}");
            assert_eq!(parse_shared(bad), None, "{bad}");
        }
        assert_eq!(parse_shared("a/b"), None);
    }

    #[test]
    fn matching_multi_level() {
        // 4.7.1.2 examples.
        assert!(matches("sport/tennis/player1/#", "sport/tennis/player1"));
        assert!(matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1/ranking"
        ));
        assert!(matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1/score/wimbledon"
        ));
        assert!(matches("sport/#", "sport"));
        assert!(matches("#", "a/b/c"));
        assert!(matches("#", "/"));
        assert!(!matches("sport/tennis/#", "sport"));
        assert!(!matches("a/#", "b"));
    }

    #[test]
    fn matching_single_level() {
        // 4.7.1.3 examples.
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(matches("sport/tennis/+", "sport/tennis/player2"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("sport/+", "sport/"));
        assert!(matches("+", "a"));
        assert!(!matches("+", "a/b"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
        assert!(matches("+/tennis/#", "sport/tennis/x/y"));
    }

    #[test]
    fn matching_literal_and_empty_levels() {
        assert!(matches("a//b", "a//b"));
        assert!(!matches("a/b", "a//b"));
        assert!(matches("a/+/b", "a//b"));
        assert!(matches("a/b", "a/b"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(!matches("a/b/c", "a/b"));
        // Topic names are case sensitive (4.7.3).
        assert!(!matches("ACCOUNTS", "Accounts"));
        assert!(!matches("a/b", "a/bc"));
    }

    #[test]
    fn dollar_topics() {
        // [MQTT-4.7.2-1] and the 4.7.2 examples.
        assert!(!matches("#", "$SYS/broker/load"));
        assert!(!matches("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(!matches("+", "$SYS"));
        assert!(matches("$SYS/#", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/#", "$SYS"));
        assert!(matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
        // Only the first character counts: '$' deeper down is ordinary.
        assert!(matches("a/+", "a/$b"));
        assert!(matches("#", "a/$b"));
    }
}
