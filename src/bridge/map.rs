//! Topic mapping between the local and the remote broker, as mosquitto does it:
//! a message matches a `topic` line by its local (or remote) filter; the matching
//! prefix is stripped when the topic starts with it and the other side's prefix
//! is put in front.
//!
//! This runs for every forwarded message, so the filters (prefix + pattern) are
//! built once, and a topic that keeps its text (no prefix to put in front) is
//! borrowed, not copied.

use std::borrow::Cow;

use super::config::TopicRule;
use crate::protocol::topic::matches;

/// The `topic` lines of one bridge with their filters on both sides.
#[derive(Debug, Clone)]
pub struct TopicMap {
    rules: Vec<MappedRule>,
}

#[derive(Debug, Clone)]
struct MappedRule {
    rule: TopicRule,
    /// `local_prefix` + pattern.
    local_filter: String,
    /// `remote_prefix` + pattern.
    remote_filter: String,
}

impl TopicMap {
    /// The map for `rules`, in their order (the first line that matches wins).
    pub fn new(rules: &[TopicRule]) -> Self {
        TopicMap {
            rules: rules
                .iter()
                .map(|r| MappedRule {
                    local_filter: r.local_filter(),
                    remote_filter: r.remote_filter(),
                    rule: r.clone(),
                })
                .collect(),
        }
    }

    /// The remote topic for a local message on `topic`, or None when no
    /// `out`/`both` line covers it.
    pub fn outbound<'t>(&self, topic: &'t str) -> Option<(Cow<'t, str>, &TopicRule)> {
        let m = self
            .rules
            .iter()
            .find(|m| m.rule.direction.outbound() && matches(&m.local_filter, topic))?;
        Some((
            swap(topic, &m.rule.local_prefix, &m.rule.remote_prefix),
            &m.rule,
        ))
    }

    /// The local topic for a remote message on `topic`, or None when no
    /// `in`/`both` line covers it.
    pub fn inbound<'t>(&self, topic: &'t str) -> Option<(Cow<'t, str>, &TopicRule)> {
        let m = self
            .rules
            .iter()
            .find(|m| m.rule.direction.inbound() && matches(&m.remote_filter, topic))?;
        Some((
            swap(topic, &m.rule.remote_prefix, &m.rule.local_prefix),
            &m.rule,
        ))
    }
}

fn swap<'t>(topic: &'t str, from: &str, to: &str) -> Cow<'t, str> {
    let rest = topic.strip_prefix(from).unwrap_or(topic);
    if to.is_empty() {
        return Cow::Borrowed(rest);
    }
    let mut t = String::with_capacity(to.len() + rest.len());
    t.push_str(to);
    t.push_str(rest);
    Cow::Owned(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bridge::config::Direction;
    use crate::protocol::QoS;

    fn rule(p: &str, d: Direction, l: &str, r: &str) -> TopicRule {
        TopicRule {
            pattern: p.into(),
            direction: d,
            qos: QoS::AtLeastOnce,
            local_prefix: l.into(),
            remote_prefix: r.into(),
        }
    }

    #[test]
    fn prefixes_are_swapped_both_ways() {
        let rules = [
            rule("#", Direction::Out, "", "site42/"),
            rule("cmd/#", Direction::In, "edge/", "site42/"),
            rule("sensors/+", Direction::Both, "l/", "r/"),
            rule("", Direction::Both, "local/exact", "remote/exact"),
        ];
        let map = TopicMap::new(&rules);
        assert_eq!(map.outbound("a/b").map(|x| x.0), Some("site42/a/b".into()));
        assert_eq!(
            map.inbound("site42/cmd/x").map(|x| x.0),
            Some("edge/cmd/x".into())
        );
        assert!(map.inbound("site42/other").is_none());
        assert_eq!(
            map.inbound("r/sensors/t").map(|x| x.0),
            Some("l/sensors/t".into())
        );
        assert_eq!(
            map.inbound("remote/exact").map(|x| x.0),
            Some("local/exact".into())
        );
        let only_in = TopicMap::new(&[rule("a/#", Direction::In, "", "")]);
        assert!(only_in.outbound("a/b").is_none());
        assert_eq!(only_in.inbound("a/b").map(|x| x.0), Some("a/b".into()));
    }

    /// Forwarding runs per message: a topic that keeps its text is not copied.
    #[test]
    fn a_topic_without_a_prefix_to_add_is_borrowed() {
        let map = TopicMap::new(&[
            rule("a/#", Direction::Both, "", ""),
            rule("b/#", Direction::Both, "edge/", ""),
            rule("c/#", Direction::Out, "", "site/"),
        ]);
        assert!(matches!(
            map.outbound("a/x"),
            Some((Cow::Borrowed("a/x"), _))
        ));
        assert!(matches!(
            map.inbound("a/x"),
            Some((Cow::Borrowed("a/x"), _))
        ));
        assert!(matches!(
            map.outbound("edge/b/x"),
            Some((Cow::Borrowed("b/x"), _))
        ));
        assert!(matches!(map.outbound("c/x"), Some((Cow::Owned(t), _)) if t == "site/c/x"));
    }
}
