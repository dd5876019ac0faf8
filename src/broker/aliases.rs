//! MQTT 5 topic aliases (3.3.2.3.4), per connection and per direction: the
//! client's aliases for topics it publishes (up to the maximum midge announces)
//! and midge's aliases for topics it sends, so a repeated long topic costs two
//! bytes on the wire. Mappings die with the connection [MQTT-3.3.2-7].
//!
//! The outbound table is midge's memory spent at the client's request, so it is
//! capped by midge, not by the client: at most [`OUTBOUND_MAX`] aliases and
//! [`OUTBOUND_BYTES`] bytes of topic text per connection, whatever Topic Alias
//! Maximum the client announced (issue 10: ten clients announcing 65,535 once
//! held 55 MB of topics).

use std::collections::HashMap;

/// Most aliases midge hands out on one connection (the client's Topic Alias
/// Maximum lowers it further).
pub const OUTBOUND_MAX: u16 = 32;
/// Most bytes of topic text one connection's outbound table holds; a topic that
/// does not fit goes out in full.
pub const OUTBOUND_BYTES: usize = 8 * 1024;

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
    /// min(client's Topic Alias Maximum, [`OUTBOUND_MAX`]).
    max: u16,
    map: HashMap<Box<str>, u16>,
    /// Topic bytes held in `map`, at most [`OUTBOUND_BYTES`].
    bytes: usize,
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

    /// The client accepts up to `max` aliases from us (CONNECT's Topic Alias
    /// Maximum); midge uses at most [`OUTBOUND_MAX`] of them.
    pub fn accept_outbound(&mut self, max: u16) {
        if max > 0 {
            self.0.get_or_insert_with(Box::default).outbound = Some(Outbound {
                max: max.min(OUTBOUND_MAX),
                map: HashMap::new(),
                bytes: 0,
            });
        } else if let Some(t) = self.0.as_mut() {
            t.outbound = None;
        }
    }

    /// Decide how to send `topic`: aliases are handed out first come, first
    /// served until the table is full (alias count or bytes); later topics go
    /// out in full [MQTT-3.3.2-11: never over the client's maximum].
    pub fn outbound(&mut self, topic: &str) -> SendAs {
        let Some(out) = self.0.as_mut().and_then(|t| t.outbound.as_mut()) else {
            return SendAs::Plain;
        };
        if let Some(&a) = out.map.get(topic) {
            return SendAs::Use(a);
        }
        let next = out.map.len();
        if next >= usize::from(out.max) || out.bytes + topic.len() > OUTBOUND_BYTES {
            return SendAs::Plain;
        }
        let Ok(alias) = u16::try_from(next + 1) else {
            return SendAs::Plain;
        };
        out.bytes += topic.len();
        out.map.insert(topic.into(), alias);
        SendAs::Set(alias)
    }

    /// Forget the alias just handed out by [`Self::outbound`] for a packet that
    /// was not sent after all (alias numbers follow the table's size, so only the
    /// latest may be taken back).
    pub fn forget(&mut self, topic: &str) {
        if let Some(out) = self.0.as_mut().and_then(|t| t.outbound.as_mut()) {
            if out.map.remove(topic).is_some() {
                out.bytes = out.bytes.saturating_sub(topic.len());
            }
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

    #[test]
    fn outbound_table_is_capped_by_midge_not_the_client() {
        // Issue 10 item 6: a client announcing 65,535 gets OUTBOUND_MAX aliases.
        let mut a = TopicAliases::default();
        a.accept_outbound(u16::MAX);
        for i in 0..usize::from(OUTBOUND_MAX) {
            assert_eq!(a.outbound(&format!("t/{i}")), SendAs::Set(i as u16 + 1));
        }
        assert_eq!(a.outbound("one/more"), SendAs::Plain);
        assert_eq!(a.outbound("t/0"), SendAs::Use(1));

        // And at most OUTBOUND_BYTES of topic text.
        let mut a = TopicAliases::default();
        a.accept_outbound(u16::MAX);
        let long = |i: usize| format!("{i:04}{}", "x".repeat(996));
        let fit = OUTBOUND_BYTES / long(0).len();
        for i in 0..fit {
            assert_eq!(a.outbound(&long(i)), SendAs::Set(i as u16 + 1));
        }
        assert_eq!(a.outbound(&long(fit)), SendAs::Plain);
        assert_eq!(a.outbound("short"), SendAs::Set(fit as u16 + 1));
        assert_eq!(a.outbound(&long(fit)), SendAs::Plain, "still too long");
        // An alias forgotten (its packet was not sent) gives its bytes back.
        a.forget("short");
        assert_eq!(a.outbound("short"), SendAs::Set(fit as u16 + 1));
    }
}
