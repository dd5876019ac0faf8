//! `mount_point`: a listener's topic prefix. Its clients' topics, filters and
//! will topics get it in front on the way in; topics sent to them lose it on
//! the way out, and a message outside it is not sent to them. The prefix is
//! put in front as it is, with no `/` added (mosquitto's rule: `mount_point
//! tenant/` and `a/b` make `tenant/a/b`). Pure string work: no state, no I/O.

use std::borrow::Cow;

use crate::protocol::topic::{parse_shared, valid_topic_filter};

/// Longest topic or filter a packet can carry (a two-byte length, 1.5.4).
const MAX_STRING: usize = 65_535;

/// `topic` as the broker keeps it: `mount` + `topic`. `None` when the result
/// is too long for any packet to carry it back out.
pub fn topic<'a>(mount: Option<&str>, topic: &'a str) -> Option<Cow<'a, str>> {
    let Some(m) = mount else {
        return Some(Cow::Borrowed(topic));
    };
    let full = format!("{m}{topic}");
    (full.len() <= MAX_STRING).then_some(Cow::Owned(full))
}

/// `filter` as the broker keeps it: a plain filter gets `mount` in front; a
/// shared subscription `$share/{group}/{filter}` keeps its group and gets the
/// mount point in front of its filter (so members on a mounted listener share
/// within it). `None` when the result is not a valid filter (`mount_point a`
/// with `+/b` makes `a+/b`) or too long.
pub fn filter<'a>(mount: Option<&str>, filter: &'a str) -> Option<Cow<'a, str>> {
    let Some(m) = mount else {
        return Some(Cow::Borrowed(filter));
    };
    let full = match parse_shared(filter) {
        Some((group, plain)) => format!("$share/{group}/{m}{plain}"),
        None => format!("{m}{filter}"),
    };
    (full.len() <= MAX_STRING && valid_topic_filter(&full)).then_some(Cow::Owned(full))
}

/// The topic a client behind `mount` is sent for the stored `topic`: `topic`
/// without the mount point. `None` when `topic` is outside it (a `#` filter
/// also matches its parent level, `tenant/#` matching `tenant`), or is the
/// mount point itself (nothing would be left of it).
pub fn strip<'a>(mount: Option<&str>, topic: &'a str) -> Option<&'a str> {
    match mount {
        None => Some(topic),
        Some(m) => topic.strip_prefix(m).filter(|rest| !rest.is_empty()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_filters_get_the_prefix_as_it_is() {
        assert_eq!(topic(None, "a/b").as_deref(), Some("a/b"));
        assert_eq!(topic(Some("t/"), "a/b").as_deref(), Some("t/a/b"));
        assert_eq!(topic(Some("t"), "a/b").as_deref(), Some("ta/b"));
        assert_eq!(filter(Some("t/"), "#").as_deref(), Some("t/#"));
        assert_eq!(filter(Some("t/"), "+/x").as_deref(), Some("t/+/x"));
        assert_eq!(
            filter(Some("t/"), "$share/g/a/#").as_deref(),
            Some("$share/g/t/a/#")
        );
        // `$SYS` is the broker's and stays out of reach of a mounted client.
        assert_eq!(filter(Some("t/"), "$SYS/#").as_deref(), Some("t/$SYS/#"));
        // A wildcard glued to the prefix is no filter.
        assert_eq!(filter(Some("t"), "+/x"), None);
        assert_eq!(filter(Some("t"), "#"), None);
        let long = "x".repeat(MAX_STRING);
        assert_eq!(topic(Some("t/"), &long), None);
        assert_eq!(filter(Some("t/"), &long), None);
    }

    #[test]
    fn outgoing_topics_lose_the_prefix_or_are_not_sent() {
        assert_eq!(strip(None, "a"), Some("a"));
        assert_eq!(strip(Some("t/"), "t/a/b"), Some("a/b"));
        assert_eq!(strip(Some("t/"), "t"), None, "parent level of t/#");
        assert_eq!(strip(Some("t/"), "t/"), None, "nothing left");
        assert_eq!(strip(Some("t/"), "other/a"), None);
    }
}
