//! An application message as the broker keeps it: owned, immutable, and shared by
//! every subscriber queue and the retained store through an `Arc`, so a payload
//! fanned out to a thousand subscribers is stored once.

use std::time::{Duration, Instant};

use crate::protocol::{Properties, Publish, QoS, Will};

/// The MQTT 5 properties the broker forwards unchanged with a message
/// [MQTT-3.3.2-17/18]. Boxed in [`Message`] only when present, so a 3.1.1
/// message pays one pointer for them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardedProperties {
    /// Payload Format Indicator.
    pub payload_format_indicator: Option<u8>,
    /// Message Expiry Interval as received, seconds.
    pub message_expiry_interval: Option<u32>,
    /// Content Type.
    pub content_type: Option<Box<str>>,
    /// Response Topic.
    pub response_topic: Option<Box<str>>,
    /// Correlation Data.
    pub correlation_data: Option<Box<[u8]>>,
    /// User Properties, in order.
    pub user_properties: UserProperties,
}

/// User Properties packed in one allocation: for each pair, the key and then the
/// value, each as a 2-byte big-endian length and its UTF-8 bytes (the wire form
/// without the property identifier). A list of thousands of 1-byte properties
/// costs its wire size, not two allocations per string (issue 10 item 3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserProperties(Box<[u8]>);

impl UserProperties {
    /// The pairs, in order.
    pub fn iter(&self) -> UserPropertiesIter<'_> {
        UserPropertiesIter(&self.0)
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// No pairs.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Bytes held.
    pub fn byte_len(&self) -> usize {
        self.0.len()
    }
}

impl<'a> FromIterator<(&'a str, &'a str)> for UserProperties {
    /// Pack the pairs. A string over 65,535 bytes cannot come from MQTT (the
    /// codec's strings have 2-byte lengths): such a pair is left out.
    fn from_iter<I: IntoIterator<Item = (&'a str, &'a str)>>(pairs: I) -> Self {
        let mut buf = Vec::new();
        for (k, v) in pairs {
            let (Ok(kl), Ok(vl)) = (u16::try_from(k.len()), u16::try_from(v.len())) else {
                continue;
            };
            buf.extend_from_slice(&kl.to_be_bytes());
            buf.extend_from_slice(k.as_bytes());
            buf.extend_from_slice(&vl.to_be_bytes());
            buf.extend_from_slice(v.as_bytes());
        }
        UserProperties(buf.into_boxed_slice())
    }
}

impl<'a> IntoIterator for &'a UserProperties {
    type Item = (&'a str, &'a str);
    type IntoIter = UserPropertiesIter<'a>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Iterator over packed [`UserProperties`].
#[derive(Debug, Clone)]
pub struct UserPropertiesIter<'a>(&'a [u8]);

impl<'a> UserPropertiesIter<'a> {
    fn string(&mut self) -> Option<&'a str> {
        let (len, rest) = self.0.split_first_chunk::<2>()?;
        let len = usize::from(u16::from_be_bytes(*len));
        let (s, rest) = (rest.get(..len)?, rest.get(len..)?);
        self.0 = rest;
        // Packed from `&str` only, so always UTF-8; checked rather than trusted.
        std::str::from_utf8(s).ok()
    }
}

impl<'a> Iterator for UserPropertiesIter<'a> {
    type Item = (&'a str, &'a str);
    fn next(&mut self) -> Option<Self::Item> {
        let pair = self.string().zip(self.string());
        if pair.is_none() {
            self.0 = &[];
        }
        pair
    }
}

impl ForwardedProperties {
    fn from_properties(p: &Properties<'_>) -> Option<Box<ForwardedProperties>> {
        // Every message before v5, and most after: nothing to build or compare.
        if p.payload_format_indicator.is_none()
            && p.message_expiry_interval.is_none()
            && p.content_type.is_none()
            && p.response_topic.is_none()
            && p.correlation_data.is_none()
            && p.user_properties.is_empty()
        {
            return None;
        }
        let f = ForwardedProperties {
            payload_format_indicator: p.payload_format_indicator,
            message_expiry_interval: p.message_expiry_interval,
            content_type: p.content_type.map(Into::into),
            response_topic: p.response_topic.map(Into::into),
            correlation_data: p.correlation_data.map(Into::into),
            user_properties: p.user_properties.iter().copied().collect(),
        };
        (f != ForwardedProperties::default()).then(|| Box::new(f))
    }
}

/// One application message.
///
/// Topic and payload are growable buffers, not boxed slices, so that a
/// message no one holds any more can be refilled by the next PUBLISH (see
/// [`Message::refill`]) instead of two buffers being freed and allocated again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Topic name.
    pub topic: String,
    /// Payload.
    pub payload: Vec<u8>,
    /// QoS it was published with (the ceiling for every delivery).
    pub qos: QoS,
    /// RETAIN flag as published.
    pub retain: bool,
    /// MQTT 5 properties to forward, if any.
    pub properties: Option<Box<ForwardedProperties>>,
    /// When the broker received it (for the message expiry countdown).
    pub received: Instant,
}

impl Message {
    /// The message a PUBLISH carries, on `topic` (its topic as the broker
    /// sees it: a topic alias resolved, the listener's mount point added).
    pub fn from_publish(p: &Publish<'_>, topic: &str, now: Instant) -> Message {
        Message {
            topic: topic.into(),
            payload: p.payload.into(),
            qos: p.qos,
            retain: p.retain,
            properties: ForwardedProperties::from_properties(&p.properties),
            received: now,
        }
    }

    /// Make this message the one a PUBLISH carries, as [`Message::from_publish`]
    /// does, keeping the topic and payload buffers' allocations.
    pub fn refill(&mut self, p: &Publish<'_>, topic: &str, now: Instant) {
        self.topic.clear();
        self.topic.push_str(topic);
        self.payload.clear();
        self.payload.extend_from_slice(p.payload);
        self.qos = p.qos;
        self.retain = p.retain;
        self.properties = ForwardedProperties::from_properties(&p.properties);
        self.received = now;
    }

    /// The bytes its buffers hold (the most a recycled message keeps).
    pub fn capacity(&self) -> usize {
        self.topic.capacity() + self.payload.capacity()
    }

    /// The message a will describes.
    pub fn from_will(w: &Will<'_>, now: Instant) -> Message {
        Message {
            topic: w.topic.into(),
            payload: w.payload.into(),
            qos: w.qos,
            retain: w.retain,
            properties: ForwardedProperties::from_properties(&w.properties),
            received: now,
        }
    }

    /// Seconds of life left at `now`: `None` for a message that never expires,
    /// `Some(0)` once expired (3.3.2.3.3).
    pub fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        let total = self.properties.as_ref()?.message_expiry_interval?;
        let waited = now.saturating_duration_since(self.received);
        let left = Duration::from_secs(u64::from(total)).saturating_sub(waited);
        // Round up so a message with 0.4 s left is still sent with 1 s.
        let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        Some(u32::try_from(secs).unwrap_or(u32::MAX))
    }

    /// Bytes this message counts against `max_retained_bytes`: topic, payload and
    /// forwarded properties (the allocations' own overhead is not counted).
    pub fn stored_len(&self) -> usize {
        let props = self.properties.as_ref().map_or(0, |p| {
            p.content_type.as_ref().map_or(0, |s| s.len())
                + p.response_topic.as_ref().map_or(0, |s| s.len())
                + p.correlation_data.as_ref().map_or(0, |s| s.len())
                + p.user_properties.byte_len()
        });
        self.topic.len() + self.payload.len() + props
    }

    /// True once the Message Expiry Interval has passed: not delivered any more.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.remaining_expiry(now) == Some(0)
    }

    /// The properties to send with this message to an MQTT 5 subscriber: the
    /// forwarded ones, the expiry reduced by the time waited [MQTT-3.3.2-6], and
    /// the matching subscription identifiers [MQTT-3.3.4-3].
    pub fn outgoing_properties(&self, now: Instant, subscription_ids: &[u32]) -> Properties<'_> {
        let mut p = Properties {
            subscription_identifiers: subscription_ids.to_vec(),
            ..Properties::default()
        };
        if let Some(f) = &self.properties {
            p.payload_format_indicator = f.payload_format_indicator;
            p.message_expiry_interval = self.remaining_expiry(now);
            p.content_type = f.content_type.as_deref();
            p.response_topic = f.response_topic.as_deref();
            p.correlation_data = f.correlation_data.as_deref();
            p.user_properties = f.user_properties.iter().collect();
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_properties_are_packed_in_order() {
        let list = [("z", "1"), ("", ""), ("a", "2"), ("z", "3")];
        let packed: UserProperties = list.iter().copied().collect();
        assert_eq!(packed.iter().collect::<Vec<_>>(), list);
        assert_eq!(packed.len(), 4);
        // Two length bytes per string, as on the wire without the identifier.
        assert_eq!(packed.byte_len(), 8 * 2 + 6);
        let long = "x".repeat(70_000);
        let skipped: UserProperties = [("k", long.as_str()), ("a", "b")].into_iter().collect();
        assert_eq!(skipped.iter().collect::<Vec<_>>(), [("a", "b")]);
        assert!(UserProperties::default().is_empty());
    }

    #[test]
    fn expiry_counts_down_and_is_forwarded_reduced() {
        let t0 = Instant::now();
        let props = Properties {
            message_expiry_interval: Some(10),
            user_properties: vec![("a", "1"), ("b", "2")],
            ..Properties::default()
        };
        let p = Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "t",
            packet_id: 1,
            properties: props,
            payload: b"x",
        };
        let m = Message::from_publish(&p, p.topic, t0);
        assert_eq!(m.remaining_expiry(t0), Some(10));
        let later = t0 + Duration::from_secs(4);
        let out = m.outgoing_properties(later, &[7]);
        assert_eq!(out.message_expiry_interval, Some(6));
        assert_eq!(out.user_properties, vec![("a", "1"), ("b", "2")]);
        assert_eq!(out.subscription_identifiers, vec![7]);
        assert!(!m.is_expired(later));
        assert!(m.is_expired(t0 + Duration::from_secs(10)));
    }

    #[test]
    fn plain_messages_carry_no_property_box() {
        let p = Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: "t",
            packet_id: 0,
            properties: Properties::default(),
            payload: b"x",
        };
        let m = Message::from_publish(&p, p.topic, Instant::now());
        assert!(m.properties.is_none());
        assert_eq!(m.remaining_expiry(Instant::now()), None);
    }
}
