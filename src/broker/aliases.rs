//! MQTT 5 topic aliases (3.3.2.3.4), per connection and per direction: the
//! client's aliases for topics it publishes (up to the maximum midge announces)
//! and midge's aliases for topics it sends (up to the client's maximum), so a
//! repeated long topic costs two bytes on the wire. Mappings die with the
//! connection [MQTT-3.3.2-7].

use std::collections::HashMap;

/// Both directions' alias tables for one connection: one pointer until a
/// client uses aliases (most never do, and every connection carries this).
#[derive(Debug, Default)]
pub struct TopicAliases(Option<Box<Tables>>);

#[derive(Debug, Default)]
struct Tables {
    /// Inbound: alias - 1 -> topic, grown on demand up to the announced maximum.
    inbound: Vec<Option<Box<str>>>,
    /// Outbound: topic -> alias; `None` until the client accepts aliases.
    outbound: Option<Outbound>,
}

#[derive(Debug)]
struct Outbound {
    max: u16,
    map: HashMap<Box<str>, u16>,
}

/// What an inbound alias lookup found.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound<'a> {
    /// Use this topic.
    Topic(&'a str),
    /// Alias 0 or over the maximum: DISCONNECT 0x94 [MQTT-3.3.2-8/9].
    Invalid,
    /// Empty topic with an alias never set: protocol error 0x82 (3.3.2.3.4).
    Unknown,
}

/// How to send one PUBLISH's topic.
#[derive(Debug, PartialEq, Eq)]
pub enum SendAs {
    /// The full topic, no alias.
    Plain,
    /// The full topic and a new alias for it.
    Set(u16),
    /// An empty topic and the alias already known to the client.
    Use(u16),
}

impl TopicAliases {
    /// Resolve an inbound PUBLISH's topic and alias, with `max` the Topic Alias
    /// Maximum midge announced.
    pub fn inbound<'a>(&'a mut self, topic: &'a str, alias: Option<u16>, max: u16) -> Inbound<'a> {
        let Some(alias) = alias else {
            return Inbound::Topic(topic);
        };
        if alias == 0 || alias > max {
            return Inbound::Invalid;
        }
        let i = usize::from(alias - 1);
        if topic.is_empty() {
            return match self.0.as_ref().and_then(|t| t.inbound.get(i)) {
                Some(Some(t)) => Inbound::Topic(t),
                _ => Inbound::Unknown,
            };
        }
        let inbound = &mut self.0.get_or_insert_with(Box::default).inbound;
        if inbound.len() <= i {
            inbound.resize(i + 1, None);
        }
        inbound[i] = Some(topic.into());
        Inbound::Topic(topic)
    }

    /// The client accepts up to `max` aliases from us (CONNECT's Topic Alias Maximum).
    pub fn accept_outbound(&mut self, max: u16) {
        if max > 0 {
            self.0.get_or_insert_with(Box::default).outbound = Some(Outbound {
                max,
                map: HashMap::new(),
            });
        } else if let Some(t) = self.0.as_mut() {
            t.outbound = None;
        }
    }

    /// Decide how to send `topic`: aliases are handed out first come, first
    /// served until the client's maximum; later topics go out in full.
    pub fn outbound(&mut self, topic: &str) -> SendAs {
        let Some(out) = self.0.as_mut().and_then(|t| t.outbound.as_mut()) else {
            return SendAs::Plain;
        };
        if let Some(&a) = out.map.get(topic) {
            return SendAs::Use(a);
        }
        let next = out.map.len();
        if next >= usize::from(out.max) {
            return SendAs::Plain;
        }
        let alias = (next + 1) as u16;
        out.map.insert(topic.into(), alias);
        SendAs::Set(alias)
    }

    /// Forget an alias handed out for a packet that was not sent after all.
    pub fn forget(&mut self, topic: &str) {
        if let Some(out) = self.0.as_mut().and_then(|t| t.outbound.as_mut()) {
            out.map.remove(topic);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbound_set_use_and_errors() {
        let mut a = TopicAliases::default();
        assert_eq!(a.inbound("t", None, 10), Inbound::Topic("t"));
        assert_eq!(
            a.inbound("a/long/topic", Some(3), 10),
            Inbound::Topic("a/long/topic")
        );
        assert_eq!(a.inbound("", Some(3), 10), Inbound::Topic("a/long/topic"));
        assert_eq!(a.inbound("", Some(2), 10), Inbound::Unknown);
        assert_eq!(a.inbound("x", Some(0), 10), Inbound::Invalid);
        assert_eq!(a.inbound("x", Some(11), 10), Inbound::Invalid);
        assert_eq!(a.inbound("x", Some(1), 0), Inbound::Invalid);
    }

    #[test]
    fn outbound_assigns_until_the_maximum() {
        let mut a = TopicAliases::default();
        assert_eq!(a.outbound("t"), SendAs::Plain, "client accepts none");
        a.accept_outbound(2);
        assert_eq!(a.outbound("a"), SendAs::Set(1));
        assert_eq!(a.outbound("a"), SendAs::Use(1));
        assert_eq!(a.outbound("b"), SendAs::Set(2));
        assert_eq!(a.outbound("c"), SendAs::Plain);
        assert_eq!(a.outbound("b"), SendAs::Use(2));
    }
}
