//! Reading and writing the MQTT 5 property block (2.2.2): a variable byte integer
//! length followed by identifier/value pairs.
//!
//! The reader enforces the per-packet table ([`PropertyId::allowed_in`]), the
//! no-repeat rule [MQTT-2.2.2-2] and value ranges. The writer never validates
//! values; it only leaves out properties the packet may not carry, so whatever it
//! writes is a block the reader accepts for the same context.

use super::error::{DecodeError, EncodeError};
use super::packet::PacketType;
use super::properties::{Properties, PropertyContext, PropertyId};
use super::topic::valid_topic_name;
use super::wire::{Counter, Reader, Sink, VARINT_MAX};

/// The packet type errors in `ctx` are reported against (will properties live in CONNECT).
fn context_packet(ctx: PropertyContext) -> PacketType {
    match ctx {
        PropertyContext::Packet(t) => t,
        PropertyContext::Will => PacketType::Connect,
    }
}

/// May this property occur more than once in `ctx`? User properties anywhere;
/// subscription identifiers only in PUBLISH (one per matching subscription,
/// 3.3.2.3.8), never in SUBSCRIBE (3.8.2.1.2) [MQTT-2.2.2-2].
fn repeatable(id: PropertyId, ctx: PropertyContext) -> bool {
    match id {
        PropertyId::UserProperty => true,
        PropertyId::SubscriptionIdentifier => ctx == PropertyContext::Packet(PacketType::Publish),
        _ => false,
    }
}

/// A byte property that must be 0 or 1.
fn flag(r: &mut Reader<'_>, id: u8) -> Result<u8, DecodeError> {
    let v = r.u8()?;
    if v > 1 {
        return Err(DecodeError::InvalidPropertyValue(id));
    }
    Ok(v)
}

/// A two-byte property that must not be 0.
fn nonzero_u16(r: &mut Reader<'_>, id: u8) -> Result<u16, DecodeError> {
    let v = r.u16()?;
    if v == 0 {
        return Err(DecodeError::InvalidPropertyValue(id));
    }
    Ok(v)
}

/// Read a property length and the properties it covers, for `ctx`.
///
/// A property length that runs past the packet is `Truncated`; one longer than
/// four bytes is `RemainingLengthTooLong` (the same 4-byte rule, [MQTT-1.5.5-1]).
pub(crate) fn read_properties<'a>(
    r: &mut Reader<'a>,
    ctx: PropertyContext,
) -> Result<Properties<'a>, DecodeError> {
    let len = r.varint()?;
    let mut pr = r.sub(len as usize)?;
    let ptype = context_packet(ctx);
    let mut props = Properties::default();
    // One bit per identifier seen; identifiers are all below 64.
    let mut seen: u64 = 0;
    // Repeated properties decode to one list entry each: their number is what
    // could make a packet decode to more memory than it occupies on the wire.
    let mut repeats = 0usize;
    while !pr.is_empty() {
        // The identifier is formally a variable byte integer, but every defined one
        // is below 0x80, so a byte with the top bit set is unknown whatever follows.
        let raw = pr.u8()?;
        let id = PropertyId::from_u8(raw).ok_or(DecodeError::UnknownProperty(raw))?;
        if !id.allowed_in(ctx) {
            return Err(DecodeError::PropertyNotAllowed(raw, ptype));
        }
        let bit = 1u64.checked_shl(u32::from(raw)).unwrap_or(0);
        if seen & bit != 0 && !repeatable(id, ctx) {
            return Err(DecodeError::DuplicateProperty(raw));
        }
        seen |= bit;
        if matches!(
            id,
            PropertyId::UserProperty | PropertyId::SubscriptionIdentifier
        ) {
            if repeats == pr.max_repeats() {
                return Err(DecodeError::TooManyProperties(ptype));
            }
            repeats += 1;
        }
        read_value(&mut pr, id, raw, &mut props)?;
    }
    Ok(props)
}

/// Read the value of property `id` into `props`, checking its range.
fn read_value<'a>(
    pr: &mut Reader<'a>,
    id: PropertyId,
    raw: u8,
    props: &mut Properties<'a>,
) -> Result<(), DecodeError> {
    use PropertyId::*;
    match id {
        PayloadFormatIndicator => props.payload_format_indicator = Some(flag(pr, raw)?),
        MessageExpiryInterval => props.message_expiry_interval = Some(pr.u32()?),
        ContentType => props.content_type = Some(pr.string()?),
        ResponseTopic => {
            let topic = pr.string()?;
            // A Response Topic is a topic name: no wildcards [MQTT-3.3.2-14].
            if !valid_topic_name(topic) {
                return Err(DecodeError::InvalidPropertyValue(raw));
            }
            props.response_topic = Some(topic);
        }
        CorrelationData => props.correlation_data = Some(pr.binary()?),
        SubscriptionIdentifier => {
            // 1 to 268,435,455; 0 is a Protocol Error (3.3.2.3.8 / 3.8.2.1.2).
            let v = pr.varint().map_err(|e| match e {
                DecodeError::RemainingLengthTooLong => DecodeError::InvalidPropertyValue(raw),
                other => other,
            })?;
            if v == 0 {
                return Err(DecodeError::InvalidPropertyValue(raw));
            }
            props.subscription_identifiers.push(v);
        }
        SessionExpiryInterval => props.session_expiry_interval = Some(pr.u32()?),
        AssignedClientIdentifier => props.assigned_client_identifier = Some(pr.string()?),
        ServerKeepAlive => props.server_keep_alive = Some(pr.u16()?),
        AuthenticationMethod => props.authentication_method = Some(pr.string()?),
        AuthenticationData => props.authentication_data = Some(pr.binary()?),
        RequestProblemInformation => props.request_problem_information = Some(flag(pr, raw)?),
        WillDelayInterval => props.will_delay_interval = Some(pr.u32()?),
        RequestResponseInformation => {
            props.request_response_information = Some(flag(pr, raw)?);
        }
        ResponseInformation => props.response_information = Some(pr.string()?),
        ServerReference => props.server_reference = Some(pr.string()?),
        ReasonString => props.reason_string = Some(pr.string()?),
        // Receive Maximum 0 is a Protocol Error (3.1.2.11.3, 3.2.2.3.3).
        ReceiveMaximum => props.receive_maximum = Some(nonzero_u16(pr, raw)?),
        TopicAliasMaximum => props.topic_alias_maximum = Some(pr.u16()?),
        // Topic Alias 0 is not permitted [MQTT-3.3.2-8].
        TopicAlias => props.topic_alias = Some(nonzero_u16(pr, raw)?),
        // Maximum QoS is 0 or 1 (3.2.2.3.4).
        MaximumQoS => props.maximum_qos = Some(flag(pr, raw)?),
        RetainAvailable => props.retain_available = Some(flag(pr, raw)?),
        UserProperty => {
            let key = pr.string()?;
            let value = pr.string()?;
            props.user_properties.push((key, value));
        }
        MaximumPacketSize => {
            // 0 is a Protocol Error (3.1.2.11.4, 3.2.2.3.6).
            let v = pr.u32()?;
            if v == 0 {
                return Err(DecodeError::InvalidPropertyValue(raw));
            }
            props.maximum_packet_size = Some(v);
        }
        WildcardSubscriptionAvailable => {
            props.wildcard_subscription_available = Some(flag(pr, raw)?);
        }
        SubscriptionIdentifierAvailable => {
            props.subscription_identifier_available = Some(flag(pr, raw)?);
        }
        SharedSubscriptionAvailable => {
            props.shared_subscription_available = Some(flag(pr, raw)?);
        }
    }
    Ok(())
}

/// The byte count of the property list (without its length prefix) for `ctx`.
pub(crate) fn properties_len(
    p: &Properties<'_>,
    ctx: PropertyContext,
) -> Result<usize, EncodeError> {
    if p.is_empty() {
        // Most packets carry none: no need to walk the table to count nothing.
        return Ok(0);
    }
    let mut c = Counter::default();
    emit(p, ctx, &mut c)?;
    Ok(c.0)
}

/// Write the property length and the properties allowed in `ctx`.
pub(crate) fn write_properties<S: Sink>(
    p: &Properties<'_>,
    ctx: PropertyContext,
    s: &mut S,
) -> Result<(), EncodeError> {
    let len = properties_len(p, ctx)?;
    s.put_varint(len)?;
    if len == 0 {
        return Ok(());
    }
    emit(p, ctx, s)
}

/// Write every set property that `ctx` may carry, in identifier order.
fn emit<S: Sink>(p: &Properties<'_>, ctx: PropertyContext, s: &mut S) -> Result<(), EncodeError> {
    use PropertyId::*;
    let ok = |id: PropertyId| id.allowed_in(ctx);
    put_byte(s, ctx, PayloadFormatIndicator, p.payload_format_indicator);
    put_u32(s, ctx, MessageExpiryInterval, p.message_expiry_interval);
    put_str(s, ctx, ContentType, p.content_type)?;
    put_str(s, ctx, ResponseTopic, p.response_topic)?;
    put_bin(s, ctx, CorrelationData, p.correlation_data)?;
    if ok(SubscriptionIdentifier) {
        // Only PUBLISH may carry several; SUBSCRIBE carries at most one.
        let n = if repeatable(SubscriptionIdentifier, ctx) {
            p.subscription_identifiers.len()
        } else {
            1
        };
        for &id in p.subscription_identifiers.iter().take(n) {
            if id > VARINT_MAX {
                return Err(EncodeError::FieldTooLong(id as usize));
            }
            s.put_u8(SubscriptionIdentifier as u8);
            s.put_varint(id as usize)?;
        }
    }
    put_u32(s, ctx, SessionExpiryInterval, p.session_expiry_interval);
    put_str(
        s,
        ctx,
        AssignedClientIdentifier,
        p.assigned_client_identifier,
    )?;
    put_u16(s, ctx, ServerKeepAlive, p.server_keep_alive);
    put_str(s, ctx, AuthenticationMethod, p.authentication_method)?;
    put_bin(s, ctx, AuthenticationData, p.authentication_data)?;
    put_byte(
        s,
        ctx,
        RequestProblemInformation,
        p.request_problem_information,
    );
    put_u32(s, ctx, WillDelayInterval, p.will_delay_interval);
    put_byte(
        s,
        ctx,
        RequestResponseInformation,
        p.request_response_information,
    );
    put_str(s, ctx, ResponseInformation, p.response_information)?;
    put_str(s, ctx, ServerReference, p.server_reference)?;
    put_str(s, ctx, ReasonString, p.reason_string)?;
    put_u16(s, ctx, ReceiveMaximum, p.receive_maximum);
    put_u16(s, ctx, TopicAliasMaximum, p.topic_alias_maximum);
    put_u16(s, ctx, TopicAlias, p.topic_alias);
    put_byte(s, ctx, MaximumQoS, p.maximum_qos);
    put_byte(s, ctx, RetainAvailable, p.retain_available);
    if ok(UserProperty) {
        for (k, v) in &p.user_properties {
            s.put_u8(UserProperty as u8);
            s.put_str(k)?;
            s.put_str(v)?;
        }
    }
    put_u32(s, ctx, MaximumPacketSize, p.maximum_packet_size);
    put_byte(
        s,
        ctx,
        WildcardSubscriptionAvailable,
        p.wildcard_subscription_available,
    );
    put_byte(
        s,
        ctx,
        SubscriptionIdentifierAvailable,
        p.subscription_identifier_available,
    );
    put_byte(
        s,
        ctx,
        SharedSubscriptionAvailable,
        p.shared_subscription_available,
    );
    Ok(())
}

fn put_byte<S: Sink>(s: &mut S, ctx: PropertyContext, id: PropertyId, v: Option<u8>) {
    if let Some(v) = v.filter(|_| id.allowed_in(ctx)) {
        s.put_u8(id as u8);
        s.put_u8(v);
    }
}

fn put_u16<S: Sink>(s: &mut S, ctx: PropertyContext, id: PropertyId, v: Option<u16>) {
    if let Some(v) = v.filter(|_| id.allowed_in(ctx)) {
        s.put_u8(id as u8);
        s.put_u16(v);
    }
}

fn put_u32<S: Sink>(s: &mut S, ctx: PropertyContext, id: PropertyId, v: Option<u32>) {
    if let Some(v) = v.filter(|_| id.allowed_in(ctx)) {
        s.put_u8(id as u8);
        s.put_u32(v);
    }
}

fn put_str<S: Sink>(
    s: &mut S,
    ctx: PropertyContext,
    id: PropertyId,
    v: Option<&str>,
) -> Result<(), EncodeError> {
    put_bin(s, ctx, id, v.map(str::as_bytes))
}

fn put_bin<S: Sink>(
    s: &mut S,
    ctx: PropertyContext,
    id: PropertyId,
    v: Option<&[u8]>,
) -> Result<(), EncodeError> {
    if let Some(v) = v.filter(|_| id.allowed_in(ctx)) {
        s.put_u8(id as u8);
        s.put_binary(v)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUBLISH: PropertyContext = PropertyContext::Packet(PacketType::Publish);
    const CONNECT: PropertyContext = PropertyContext::Packet(PacketType::Connect);

    fn read(bytes: &[u8], ctx: PropertyContext) -> Result<Properties<'_>, DecodeError> {
        let mut r = Reader::new(bytes, context_packet(ctx));
        let p = read_properties(&mut r, ctx)?;
        r.finish()?;
        Ok(p)
    }

    #[test]
    fn empty_block() {
        assert_eq!(read(&[0x00], PUBLISH), Ok(Properties::default()));
        let mut out = Vec::new();
        write_properties(&Properties::default(), PUBLISH, &mut out).unwrap();
        assert_eq!(out, [0x00]);
    }

    /// The writer skips the property table when `is_empty` says nothing is
    /// set: any one property set must count as something, or it would be lost.
    #[test]
    fn one_property_is_not_an_empty_block() {
        type Set = fn(&mut Properties<'static>);
        let setters: [Set; 27] = [
            |p| p.payload_format_indicator = Some(1),
            |p| p.message_expiry_interval = Some(1),
            |p| p.content_type = Some("t"),
            |p| p.response_topic = Some("t"),
            |p| p.correlation_data = Some(b"d"),
            |p| p.subscription_identifiers.push(1),
            |p| p.session_expiry_interval = Some(1),
            |p| p.assigned_client_identifier = Some("c"),
            |p| p.server_keep_alive = Some(1),
            |p| p.authentication_method = Some("m"),
            |p| p.authentication_data = Some(b"d"),
            |p| p.request_problem_information = Some(1),
            |p| p.will_delay_interval = Some(1),
            |p| p.request_response_information = Some(1),
            |p| p.response_information = Some("r"),
            |p| p.server_reference = Some("s"),
            |p| p.reason_string = Some("r"),
            |p| p.receive_maximum = Some(1),
            |p| p.topic_alias_maximum = Some(1),
            |p| p.topic_alias = Some(1),
            |p| p.maximum_qos = Some(1),
            |p| p.retain_available = Some(1),
            |p| p.user_properties.push(("k", "v")),
            |p| p.maximum_packet_size = Some(1),
            |p| p.wildcard_subscription_available = Some(1),
            |p| p.subscription_identifier_available = Some(1),
            |p| p.shared_subscription_available = Some(1),
        ];
        let contexts = [
            PUBLISH,
            CONNECT,
            PropertyContext::Packet(PacketType::ConnAck),
            PropertyContext::Packet(PacketType::Disconnect),
            PropertyContext::Will,
        ];
        for (n, set) in setters.iter().enumerate() {
            let mut p = Properties::default();
            set(&mut p);
            assert!(!p.is_empty(), "setter {n}");
            // Written in some context that allows it, and read back the same.
            let written = contexts.iter().find_map(|&ctx| {
                let mut out = Vec::new();
                write_properties(&p, ctx, &mut out).unwrap();
                (out != [0x00]).then_some((ctx, out))
            });
            let (ctx, out) = written.unwrap_or_else(|| panic!("setter {n} never written"));
            assert_eq!(read(&out, ctx), Ok(p), "setter {n}");
        }
    }

    #[test]
    fn unknown_and_not_allowed() {
        assert_eq!(
            read(&[0x02, 0x05, 0x00], PUBLISH),
            Err(DecodeError::UnknownProperty(0x05))
        );
        assert_eq!(
            read(&[0x01, 0x80], PUBLISH),
            Err(DecodeError::UnknownProperty(0x80))
        );
        // Topic Alias only in PUBLISH (2.2.2.2).
        assert_eq!(
            read(&[0x03, 0x23, 0x00, 0x01], CONNECT),
            Err(DecodeError::PropertyNotAllowed(0x23, PacketType::Connect))
        );
        // Will Delay Interval only in will properties.
        assert_eq!(
            read(&[0x05, 0x18, 0, 0, 0, 1], CONNECT),
            Err(DecodeError::PropertyNotAllowed(0x18, PacketType::Connect))
        );
        assert!(read(&[0x05, 0x18, 0, 0, 0, 1], PropertyContext::Will).is_ok());
        // Session Expiry is not a will property.
        assert_eq!(
            read(&[0x05, 0x11, 0, 0, 0, 1], PropertyContext::Will),
            Err(DecodeError::PropertyNotAllowed(0x11, PacketType::Connect))
        );
    }

    #[test]
    fn duplicates() {
        // [MQTT-2.2.2-2]
        assert_eq!(
            read(&[0x04, 0x01, 0x00, 0x01, 0x01], PUBLISH),
            Err(DecodeError::DuplicateProperty(0x01))
        );
        let two_ids = [0x04, 0x0B, 0x01, 0x0B, 0x02];
        assert_eq!(
            read(&two_ids, PUBLISH).unwrap().subscription_identifiers,
            [1, 2]
        );
        let subscribe = PropertyContext::Packet(PacketType::Subscribe);
        assert_eq!(
            read(&two_ids, subscribe),
            Err(DecodeError::DuplicateProperty(0x0B))
        );
        let users = [0x0B, 0x26, 0, 1, b'a', 0, 0, 0x26, 0, 0, 0, 0];
        assert_eq!(
            read(&users, CONNECT).unwrap().user_properties,
            [("a", ""), ("", "")]
        );
    }

    #[test]
    fn value_ranges() {
        let bad: &[(&[u8], PropertyContext)] = &[
            (&[0x02, 0x01, 0x02], PUBLISH),
            (&[0x02, 0x17, 0x02], CONNECT),
            (&[0x02, 0x19, 0x02], CONNECT),
            (&[0x03, 0x21, 0x00, 0x00], CONNECT),
            (&[0x05, 0x27, 0, 0, 0, 0], CONNECT),
            (&[0x03, 0x23, 0x00, 0x00], PUBLISH),
            (&[0x02, 0x0B, 0x00], PUBLISH),
            (&[0x04, 0x08, 0x00, 0x01, b'#'], PUBLISH),
        ];
        for (bytes, ctx) in bad {
            assert_eq!(
                read(bytes, *ctx),
                Err(DecodeError::InvalidPropertyValue(bytes[1])),
                "{bytes:?}"
            );
        }
        let connack = PropertyContext::Packet(PacketType::ConnAck);
        for id in [0x24, 0x25, 0x28, 0x29, 0x2A] {
            assert_eq!(
                read(&[0x02, id, 0x02], connack),
                Err(DecodeError::InvalidPropertyValue(id))
            );
            assert!(read(&[0x02, id, 0x01], connack).is_ok());
        }
        // Subscription Identifier: 268,435,455 is the largest; five bytes is too long.
        let max = read(&[0x05, 0x0B, 0xFF, 0xFF, 0xFF, 0x7F], PUBLISH).unwrap();
        assert_eq!(max.subscription_identifiers, [268_435_455]);
        assert_eq!(
            read(&[0x06, 0x0B, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], PUBLISH),
            Err(DecodeError::InvalidPropertyValue(0x0B))
        );
    }

    #[test]
    fn lengths_running_past_the_packet() {
        let t = PacketType::Publish;
        // Property length says 5, only 2 bytes follow.
        assert_eq!(
            read(&[0x05, 0x01, 0x00], PUBLISH),
            Err(DecodeError::Truncated(t))
        );
        // A value running past the property block, even though the packet goes on.
        assert_eq!(
            read(&[0x02, 0x02, 0x00, 0x00, 0x00, 0x00], PUBLISH),
            Err(DecodeError::Truncated(t))
        );
        // A string length past the block.
        assert_eq!(
            read(&[0x03, 0x03, 0x00, 0x05], PUBLISH),
            Err(DecodeError::Truncated(t))
        );
        // Property length longer than four bytes.
        assert_eq!(
            read(&[0x80, 0x80, 0x80, 0x80, 0x01], PUBLISH),
            Err(DecodeError::RemainingLengthTooLong)
        );
        assert_eq!(read(&[], PUBLISH), Err(DecodeError::Truncated(t)));
    }

    #[test]
    fn writer_leaves_out_what_the_context_forbids() {
        let p = Properties {
            topic_alias: Some(3),
            reason_string: Some("r"),
            subscription_identifiers: vec![1, 2],
            ..Properties::default()
        };
        let mut out = Vec::new();
        write_properties(&p, PropertyContext::Packet(PacketType::Subscribe), &mut out).unwrap();
        assert_eq!(out, [0x02, 0x0B, 0x01]);
        out.clear();
        write_properties(&p, PUBLISH, &mut out).unwrap();
        assert_eq!(out, [0x07, 0x0B, 0x01, 0x0B, 0x02, 0x23, 0x00, 0x03]);
        assert_eq!(properties_len(&p, PUBLISH), Ok(out.len() - 1));
    }

    #[test]
    fn every_property_round_trips_in_some_context() {
        let will = Properties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(60),
            content_type: Some("text/plain"),
            response_topic: Some("resp/a"),
            correlation_data: Some(b"\x00\x01"),
            will_delay_interval: Some(5),
            user_properties: vec![("k", "v")],
            ..Properties::default()
        };
        let mut out = Vec::new();
        write_properties(&will, PropertyContext::Will, &mut out).unwrap();
        assert_eq!(read(&out, PropertyContext::Will), Ok(will));
    }
}
