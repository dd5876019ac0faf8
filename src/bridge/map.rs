//! Topic mapping between the local and the remote broker, as mosquitto does it:
//! a message matches a `topic` line by its local (or remote) filter; the matching
//! prefix is stripped when the topic starts with it and the other side's prefix
//! is put in front.

use super::config::TopicRule;
use crate::protocol::topic::matches;

/// The remote topic for a local message on `topic`, or None when no `out`/`both`
/// line covers it.
pub fn outbound<'r>(rules: &'r [TopicRule], topic: &str) -> Option<(String, &'r TopicRule)> {
    let rule = rules
        .iter()
        .find(|r| r.direction.outbound() && matches(&r.local_filter(), topic))?;
    Some((swap(topic, &rule.local_prefix, &rule.remote_prefix), rule))
}

/// The local topic for a remote message on `topic`, or None when no `in`/`both`
/// line covers it.
pub fn inbound<'r>(rules: &'r [TopicRule], topic: &str) -> Option<(String, &'r TopicRule)> {
    let rule = rules
        .iter()
        .find(|r| r.direction.inbound() && matches(&r.remote_filter(), topic))?;
    Some((swap(topic, &rule.remote_prefix, &rule.local_prefix), rule))
}

fn swap(topic: &str, from: &str, to: &str) -> String {
    let rest = topic.strip_prefix(from).unwrap_or(topic);
    let mut t = String::with_capacity(to.len() + rest.len());
    t.push_str(to);
    t.push_str(rest);
    t
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
        assert_eq!(
            outbound(&rules, "a/b").map(|x| x.0),
            Some("site42/a/b".into())
        );
        assert_eq!(
            inbound(&rules, "site42/cmd/x").map(|x| x.0),
            Some("edge/cmd/x".into())
        );
        assert_eq!(inbound(&rules, "site42/other"), None);
        assert_eq!(
            inbound(&rules, "r/sensors/t").map(|x| x.0),
            Some("l/sensors/t".into())
        );
        assert_eq!(
            inbound(&rules, "remote/exact").map(|x| x.0),
            Some("local/exact".into())
        );
        let only_in = [rule("a/#", Direction::In, "", "")];
        assert_eq!(outbound(&only_in, "a/b"), None);
        assert_eq!(inbound(&only_in, "a/b").map(|x| x.0), Some("a/b".into()));
    }
}
