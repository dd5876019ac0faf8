//! Incremental decoding: given the bytes received so far, return one complete
//! packet and how many bytes it used, or `NeedMore`, or a typed error.
//!
//! The decoder borrows strings and payloads from the caller's buffer and allocates
//! only for list fields. It never buffers: the caller keeps the bytes, and a
//! declared size over the limit is refused from the fixed header alone.

use super::error::DecodeError;
use super::packet::{
    Auth, ConnAck, Connect, Disconnect, Packet, PacketId, PacketType, ProtocolVersion, PubResp,
    Publish, QoS, RetainHandling, SubAck, Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe,
    Will,
};
use super::properties::{Properties, PropertyContext};
use super::property_codec::read_properties;
use super::reason::ReasonCode;
use super::topic::{valid_topic_filter, valid_topic_name};
use super::wire::{parse_remaining_length, Reader};

/// What the decoder needs to know about the connection.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// The protocol version negotiated by CONNECT (CONNECT itself carries its own
    /// version and is decoded whatever this says).
    pub version: ProtocolVersion,
    /// The largest total packet size (fixed header included) accepted. Checked as
    /// soon as the fixed header is complete, before the body is buffered.
    pub max_packet_size: usize,
    /// The connection has not sent CONNECT yet: any other packet type is refused
    /// from its first byte [MQTT-3.1.0-1], before its length is even known.
    pub expect_connect: bool,
    /// Most repeated properties (user properties and subscription identifiers)
    /// in one property list. Bounds what a packet decodes to whatever its size.
    pub max_user_properties: usize,
    /// Most topic filters in one SUBSCRIBE or UNSUBSCRIBE.
    pub max_topic_filters: usize,
}

impl DecodeLimits {
    /// Limits for a peer past CONNECT with no count limits: what a client (or a
    /// test) decoding a server's packets uses.
    pub fn new(version: ProtocolVersion, max_packet_size: usize) -> Self {
        DecodeLimits {
            version,
            max_packet_size,
            expect_connect: false,
            max_user_properties: usize::MAX,
            max_topic_filters: usize::MAX,
        }
    }
}

/// The result of a decode attempt that found no error.
// A packet is larger than `NeedMore` (a PUBLISH's properties), but it is what
// the decoder returns almost every time: boxing it would cost an allocation per
// packet.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Decoded<'a> {
    /// A whole packet, and the number of bytes of the buffer it used.
    Packet(Packet<'a>, usize),
    /// The buffer holds only part of a packet. `Some(n)`: the whole packet will be
    /// `n` bytes long (the fixed header is complete); `None`: not known yet.
    NeedMore(Option<usize>),
}

/// Decode the first packet in `buf`.
///
/// The type byte is checked as soon as it arrives, the size limit as soon as the
/// remaining length is complete, and the body only once all of it is in `buf`.
pub fn decode<'a>(buf: &'a [u8], limits: &DecodeLimits) -> Result<Decoded<'a>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(Decoded::NeedMore(None));
    };
    // [MQTT-3.1.0-1] Before CONNECT nothing else is read: not even the length,
    // so a hostile header never makes the caller buffer a body.
    if limits.expect_connect && first >> 4 != PacketType::Connect as u8 {
        return Err(DecodeError::NotConnect(first >> 4));
    }
    let ptype = packet_type(first, limits.version)?;
    let Some((remaining, len_bytes)) = parse_remaining_length(buf.get(1..).unwrap_or(&[]))? else {
        return Ok(Decoded::NeedMore(None));
    };
    // No overflow: `remaining` is below 2^28.
    let total = 1 + len_bytes + remaining;
    if total > limits.max_packet_size {
        return Err(DecodeError::PacketTooLarge {
            size: total,
            max: limits.max_packet_size,
        });
    }
    let Some(body) = buf.get(1 + len_bytes..total) else {
        return Ok(Decoded::NeedMore(Some(total)));
    };
    decode_body(ptype, first & 0x0F, body, total, limits)
}

/// Check the first byte of the fixed header: the type and its flags (2.1.3, 2.2.2).
fn packet_type(first: u8, version: ProtocolVersion) -> Result<PacketType, DecodeError> {
    let nibble = first >> 4;
    let flags = first & 0x0F;
    let t = PacketType::from_nibble(nibble).ok_or(DecodeError::InvalidPacketType(nibble))?;
    match t {
        PacketType::Auth if !version.is_v5() => return Err(DecodeError::InvalidPacketType(nibble)),
        PacketType::Publish => {
            let qos = (flags >> 1) & 0x03;
            if qos == 3 {
                // [MQTT-3.3.1-4]
                return Err(DecodeError::InvalidQoS);
            }
            // DUP must be 0 for QoS 0 [MQTT-3.3.1-2]. Like mosquitto we treat a
            // violation as a malformed packet rather than guessing what was meant.
            if qos == 0 && flags & 0x08 != 0 {
                return Err(DecodeError::InvalidHeaderFlags(t, flags));
            }
        }
        // [MQTT-3.6.1-1] [MQTT-3.8.1-1] [MQTT-3.10.1-1]
        PacketType::PubRel | PacketType::Subscribe | PacketType::Unsubscribe => {
            if flags != 0b0010 {
                return Err(DecodeError::InvalidHeaderFlags(t, flags));
            }
        }
        // Reserved flags are 0 for every other type [MQTT-2.2.2-1] [MQTT-2.2.2-2].
        _ => {
            if flags != 0 {
                return Err(DecodeError::InvalidHeaderFlags(t, flags));
            }
        }
    }
    Ok(t)
}

/// Decode a complete body of type `t`, `total` bytes with its fixed header;
/// every byte must belong to a field.
fn decode_body<'a>(
    t: PacketType,
    flags: u8,
    body: &'a [u8],
    total: usize,
    limits: &DecodeLimits,
) -> Result<Decoded<'a>, DecodeError> {
    let version = limits.version;
    let mut r = Reader::new(body, t).with_max_repeats(limits.max_user_properties);
    // PUBLISH and its acks, nearly every packet, are built right in the value
    // returned (a PUBLISH is ~300 bytes, and each move of it is a copy).
    let packet = match t {
        PacketType::Publish => return publish(&mut r, flags, version, total),
        PacketType::PubAck => return pub_resp(&mut r, version, total, Packet::PubAck),
        PacketType::PubRec => return pub_resp(&mut r, version, total, Packet::PubRec),
        PacketType::PubRel => return pub_resp(&mut r, version, total, Packet::PubRel),
        PacketType::PubComp => return pub_resp(&mut r, version, total, Packet::PubComp),
        PacketType::Connect => Packet::Connect(Box::new(connect(&mut r)?)),
        PacketType::ConnAck => Packet::ConnAck(connack(&mut r, version)?),
        PacketType::Subscribe => {
            Packet::Subscribe(subscribe(&mut r, version, limits.max_topic_filters)?)
        }
        PacketType::SubAck => Packet::SubAck(suback(&mut r, version)?),
        PacketType::Unsubscribe => {
            Packet::Unsubscribe(unsubscribe(&mut r, version, limits.max_topic_filters)?)
        }
        PacketType::UnsubAck => Packet::UnsubAck(unsuback(&mut r, version)?),
        PacketType::PingReq => Packet::PingReq,
        PacketType::PingResp => Packet::PingResp,
        PacketType::Disconnect => Packet::Disconnect(disconnect(&mut r, version)?),
        PacketType::Auth => Packet::Auth(auth(&mut r)?),
    };
    r.finish()?;
    Ok(Decoded::Packet(packet, total))
}

/// Properties of packet type `t` when `version` has them, else none.
fn props<'a>(r: &mut Reader<'a>, version: ProtocolVersion) -> Result<Properties<'a>, DecodeError> {
    if version.is_v5() {
        read_properties(r, PropertyContext::Packet(r.packet_type()))
    } else {
        Ok(Properties::default())
    }
}

/// A packet identifier, which is never 0 [MQTT-2.2.1-3].
fn packet_id(r: &mut Reader<'_>) -> Result<PacketId, DecodeError> {
    let id = r.u16()?;
    if id == 0 {
        return Err(DecodeError::ZeroPacketId(r.packet_type()));
    }
    Ok(id)
}

/// A reason code byte, checked against the table for the reader's packet type.
fn reason(r: &mut Reader<'_>) -> Result<ReasonCode, DecodeError> {
    let t = r.packet_type();
    let code = r.u8()?;
    if !reason_allowed(t, code) {
        return Err(DecodeError::InvalidReasonCode(t, code));
    }
    Ok(ReasonCode(code))
}

/// The MQTT 5 reason codes each packet type may carry.
fn reason_allowed(t: PacketType, code: u8) -> bool {
    match t {
        // 3.2.2.2
        PacketType::ConnAck => matches!(
            code,
            0x00 | 0x80..=0x8A | 0x8C | 0x90 | 0x95 | 0x97 | 0x99..=0x9D | 0x9F
        ),
        // 3.4.2.1, 3.5.2.1
        PacketType::PubAck | PacketType::PubRec => {
            matches!(
                code,
                0x00 | 0x10 | 0x80 | 0x83 | 0x87 | 0x90 | 0x91 | 0x97 | 0x99
            )
        }
        // 3.6.2.1, 3.7.2.1
        PacketType::PubRel | PacketType::PubComp => matches!(code, 0x00 | 0x92),
        // 3.9.3
        PacketType::SubAck => matches!(
            code,
            0x00..=0x02 | 0x80 | 0x83 | 0x87 | 0x8F | 0x91 | 0x97 | 0x9E | 0xA1 | 0xA2
        ),
        // 3.11.3
        PacketType::UnsubAck => matches!(code, 0x00 | 0x11 | 0x80 | 0x83 | 0x87 | 0x8F | 0x91),
        // 3.14.2.1; 0x8C (Bad authentication method) is also accepted, as a failed
        // re-authentication (4.12.1) may end with it.
        PacketType::Disconnect => matches!(
            code,
            0x00 | 0x04 | 0x80..=0x83 | 0x87 | 0x89 | 0x8B..=0x90 | 0x93..=0xA2
        ),
        // 3.15.2.1
        PacketType::Auth => matches!(code, 0x00 | 0x18 | 0x19),
        _ => false,
    }
}

/// True when an encoded CONNECT (`packet`, as `decode` consumed it) carries
/// mosquitto's bridge marker: protocol level 0x83 or 0x84 (3.1/3.1.1 with bit 7
/// set, `try_private`). The broker then treats the client as a bridge.
pub fn bridge_marker(packet: &[u8]) -> bool {
    if packet.first().map(|b| b >> 4) != Some(1) {
        return false;
    }
    // Fixed header: type byte and 1-4 bytes of remaining length.
    let Some(len_bytes) = packet[1..].iter().take(4).position(|b| b & 0x80 == 0) else {
        return false;
    };
    let i = 2 + len_bytes;
    let Some(name_len) = packet.get(i..i + 2) else {
        return false;
    };
    let level = i + 2 + usize::from(u16::from_be_bytes([name_len[0], name_len[1]]));
    matches!(packet.get(level), Some(0x83 | 0x84))
}

/// CONNECT (3.1), decoded by its own protocol level.
fn connect<'a>(r: &mut Reader<'a>) -> Result<Connect<'a>, DecodeError> {
    let name = r.binary()?;
    // mosquitto's bridges (`try_private`) set bit 7 of the 3.1/3.1.1 level;
    // the connection is otherwise plain 3.1/3.1.1 (see `bridge_marker`).
    let level = match r.u8()? {
        l @ (0x83 | 0x84) => l & 0x7F,
        l => l,
    };
    let version = match (name, ProtocolVersion::from_level(level)) {
        (b"MQTT", Some(v @ (ProtocolVersion::V311 | ProtocolVersion::V5))) => v,
        (b"MQIsdp", Some(ProtocolVersion::V31)) => ProtocolVersion::V31,
        // A protocol we know at a level it does not have (including "MQTT" 3 and
        // "MQIsdp" 4): the server answers CONNACK 0x01 / 0x84 [MQTT-3.1.2-2].
        (b"MQTT" | b"MQIsdp", _) => return Err(DecodeError::UnsupportedProtocolVersion(level)),
        // [MQTT-3.1.2-1]
        _ => return Err(DecodeError::InvalidProtocolName),
    };
    let flags = r.u8()?;
    let bad = DecodeError::InvalidConnectFlags(flags);
    // Reserved bit [MQTT-3.1.2-3].
    if flags & 0x01 != 0 {
        return Err(bad);
    }
    let clean_start = flags & 0x02 != 0;
    let will_flag = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0x03;
    let will_retain = flags & 0x20 != 0;
    let password_flag = flags & 0x40 != 0;
    let username_flag = flags & 0x80 != 0;
    // No will: will QoS and retain must be 0 [MQTT-3.1.2-11] [MQTT-3.1.2-13] [MQTT-3.1.2-15].
    if !will_flag && (will_qos != 0 || will_retain) {
        return Err(bad);
    }
    // Will QoS 3 [MQTT-3.1.2-14].
    let Some(will_qos) = QoS::from_u8(will_qos) else {
        return Err(bad);
    };
    // Before MQTT 5 a password needs a user name [MQTT-3.1.2-22]; v5 allows it alone.
    if password_flag && !username_flag && !version.is_v5() {
        return Err(bad);
    }
    let keep_alive = r.u16()?;
    let properties = if version.is_v5() {
        read_properties(r, PropertyContext::Packet(PacketType::Connect))?
    } else {
        Properties::default()
    };
    let client_id = r.string()?;
    let will = if will_flag {
        let properties = if version.is_v5() {
            read_properties(r, PropertyContext::Will)?
        } else {
            Properties::default()
        };
        let topic = r.string()?;
        // The will is published to this topic, so it must be a topic name.
        if !valid_topic_name(topic) {
            return Err(DecodeError::InvalidTopicName);
        }
        let payload = r.binary()?;
        Some(Will {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            properties,
        })
    } else {
        None
    };
    let username = if username_flag {
        Some(r.string()?)
    } else {
        None
    };
    let password = if password_flag {
        Some(r.binary()?)
    } else {
        None
    };
    Ok(Connect {
        version,
        clean_start,
        keep_alive,
        properties,
        client_id,
        will,
        username,
        password,
    })
}

/// CONNACK (3.2).
fn connack<'a>(r: &mut Reader<'a>, version: ProtocolVersion) -> Result<ConnAck<'a>, DecodeError> {
    let flags = r.u8()?;
    // Connect Acknowledge Flags bits 7-1 are reserved [MQTT-3.2.2-1]. There is no
    // separate variant for this variable-header byte; it is reported as header flags.
    if flags & 0xFE != 0 {
        return Err(DecodeError::InvalidHeaderFlags(PacketType::ConnAck, flags));
    }
    let reason = if version.is_v5() {
        reason(r)?
    } else {
        let code = r.u8()?;
        ReasonCode::from_v3_connack(code)
            .ok_or(DecodeError::InvalidReasonCode(PacketType::ConnAck, code))?
    };
    let properties = props(r, version)?;
    Ok(ConnAck {
        session_present: flags & 0x01 != 0,
        reason,
        properties,
    })
}

/// PUBLISH (3.3). The fixed-header flags were checked by [`packet_type`].
fn publish<'a>(
    r: &mut Reader<'a>,
    flags: u8,
    version: ProtocolVersion,
    total: usize,
) -> Result<Decoded<'a>, DecodeError> {
    let qos = QoS::from_u8((flags >> 1) & 0x03).ok_or(DecodeError::InvalidQoS)?;
    // Valid UTF-8, no U+0000, no wildcards [MQTT-3.3.2-2].
    let topic = r.topic_name()?;
    // Only QoS 1 and 2 carry a packet identifier [MQTT-2.2.1-2].
    let packet_id = if qos == QoS::AtMostOnce {
        0
    } else {
        packet_id(r)?
    };
    let (dup, retain) = (flags & 0x08 != 0, flags & 0x01 != 0);
    if !version.is_v5() {
        // [MQTT-3.3.2-1] a topic is required before v5. Built in one piece,
        // with no property block read and moved in: this is the packet nearly
        // every decode is for.
        if topic.is_empty() {
            return Err(DecodeError::InvalidTopicName);
        }
        let p = Publish {
            dup,
            qos,
            retain,
            topic,
            packet_id,
            properties: Properties::default(),
            payload: r.rest(),
        };
        return Ok(Decoded::Packet(Packet::Publish(p), total));
    }
    let properties = props(r, version)?;
    // An empty topic is only meaningful with a Topic Alias (3.3.2.3.4) [MQTT-3.3.2-1].
    if topic.is_empty() && properties.topic_alias.is_none() {
        return Err(DecodeError::InvalidTopicName);
    }
    let p = Publish {
        dup,
        qos,
        retain,
        topic,
        packet_id,
        properties,
        payload: r.rest(),
    };
    Ok(Decoded::Packet(Packet::Publish(p), total))
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP (3.4-3.7).
/// Returned as the packet `kind` makes of it; every byte of the body must be
/// read (the caller does not check).
fn pub_resp<'a>(
    r: &mut Reader<'a>,
    version: ProtocolVersion,
    total: usize,
    kind: fn(PubResp<'a>) -> Packet<'a>,
) -> Result<Decoded<'a>, DecodeError> {
    let packet_id = packet_id(r)?;
    // v5: remaining length 2 means Success and no properties; 3 means a reason and
    // no properties [MQTT-3.4.2-1] (likewise 3.5.2.1, 3.6.2.1, 3.7.2.1).
    if !version.is_v5() || r.is_empty() {
        r.finish()?;
        return Ok(Decoded::Packet(kind(PubResp::success(packet_id)), total));
    }
    let reason = reason(r)?;
    let properties = if r.is_empty() {
        Properties::default()
    } else {
        props(r, version)?
    };
    r.finish()?;
    let resp = PubResp {
        packet_id,
        reason,
        properties,
    };
    Ok(Decoded::Packet(kind(resp), total))
}

/// The subscription options byte (3.8.3.1).
fn subscription_options(
    o: u8,
    version: ProtocolVersion,
) -> Result<SubscriptionOptions, DecodeError> {
    let bad = DecodeError::InvalidSubscriptionOptions(o);
    // Before v5 only the QoS bits exist; the rest are reserved [MQTT-3.8.3-4 (3.1.1)].
    // In v5 bits 6-7 are reserved [MQTT-3.8.3-5].
    let reserved = if version.is_v5() { 0xC0 } else { 0xFC };
    if o & reserved != 0 {
        return Err(bad);
    }
    let qos = QoS::from_u8(o & 0x03).ok_or(bad.clone())?;
    let retain_handling = match (o >> 4) & 0x03 {
        0 => RetainHandling::SendAtSubscribe,
        1 => RetainHandling::SendIfNew,
        2 => RetainHandling::DoNotSend,
        // Retain Handling 3 is a Protocol Error (3.8.3.1).
        _ => return Err(bad),
    };
    Ok(SubscriptionOptions {
        qos,
        no_local: o & 0x04 != 0,
        retain_as_published: o & 0x08 != 0,
        retain_handling,
    })
}

/// A topic filter from SUBSCRIBE or UNSUBSCRIBE. Like mosquitto, a filter that
/// breaks the wildcard rules makes the whole packet malformed.
fn topic_filter<'a>(r: &mut Reader<'a>) -> Result<&'a str, DecodeError> {
    let filter = r.string()?;
    if !valid_topic_filter(filter) {
        return Err(DecodeError::InvalidTopicFilter);
    }
    Ok(filter)
}

/// SUBSCRIBE (3.8).
fn subscribe<'a>(
    r: &mut Reader<'a>,
    version: ProtocolVersion,
    max_filters: usize,
) -> Result<Subscribe<'a>, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = props(r, version)?;
    // At least one filter [MQTT-3.8.3-3].
    if r.is_empty() {
        return Err(DecodeError::NoTopicFilters(PacketType::Subscribe));
    }
    let mut filters = Vec::new();
    while !r.is_empty() {
        if filters.len() == max_filters {
            return Err(DecodeError::TooManyTopicFilters(PacketType::Subscribe));
        }
        let filter = topic_filter(r)?;
        let options = subscription_options(r.u8()?, version)?;
        filters.push((filter, options));
    }
    Ok(Subscribe {
        packet_id,
        properties,
        filters,
    })
}

/// UNSUBSCRIBE (3.10).
fn unsubscribe<'a>(
    r: &mut Reader<'a>,
    version: ProtocolVersion,
    max_filters: usize,
) -> Result<Unsubscribe<'a>, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = props(r, version)?;
    // At least one filter [MQTT-3.10.3-2].
    if r.is_empty() {
        return Err(DecodeError::NoTopicFilters(PacketType::Unsubscribe));
    }
    let mut filters = Vec::new();
    while !r.is_empty() {
        if filters.len() == max_filters {
            return Err(DecodeError::TooManyTopicFilters(PacketType::Unsubscribe));
        }
        filters.push(topic_filter(r)?);
    }
    Ok(Unsubscribe {
        packet_id,
        properties,
        filters,
    })
}

/// SUBACK (3.9).
fn suback<'a>(r: &mut Reader<'a>, version: ProtocolVersion) -> Result<SubAck<'a>, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = props(r, version)?;
    let mut reasons = Vec::with_capacity(r.remaining());
    while !r.is_empty() {
        if version.is_v5() {
            reasons.push(reason(r)?);
        } else {
            // 3.1.1 return codes: granted QoS 0-2 or 0x80 failure [MQTT-3.9.3-2].
            let code = r.u8()?;
            if !matches!(code, 0x00..=0x02 | 0x80) {
                return Err(DecodeError::InvalidReasonCode(PacketType::SubAck, code));
            }
            reasons.push(ReasonCode(code));
        }
    }
    Ok(SubAck {
        packet_id,
        properties,
        reasons,
    })
}

/// UNSUBACK (3.11): no payload before v5.
fn unsuback<'a>(r: &mut Reader<'a>, version: ProtocolVersion) -> Result<UnsubAck<'a>, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = props(r, version)?;
    let mut reasons = Vec::new();
    if version.is_v5() {
        reasons.reserve(r.remaining());
        while !r.is_empty() {
            reasons.push(reason(r)?);
        }
    }
    Ok(UnsubAck {
        packet_id,
        properties,
        reasons,
    })
}

/// A reason code and properties that may both be left out (DISCONNECT 3.14.2,
/// AUTH 3.15.2): remaining length 0 means code 0x00 and no properties; a code
/// alone means no properties.
fn optional_reason<'a>(r: &mut Reader<'a>) -> Result<(ReasonCode, Properties<'a>), DecodeError> {
    if r.is_empty() {
        return Ok((ReasonCode::SUCCESS, Properties::default()));
    }
    let code = reason(r)?;
    let properties = if r.is_empty() {
        Properties::default()
    } else {
        read_properties(r, PropertyContext::Packet(r.packet_type()))?
    };
    Ok((code, properties))
}

/// DISCONNECT (3.14): empty before v5.
fn disconnect<'a>(
    r: &mut Reader<'a>,
    version: ProtocolVersion,
) -> Result<Disconnect<'a>, DecodeError> {
    if !version.is_v5() {
        return Ok(Disconnect::with_reason(ReasonCode::NORMAL_DISCONNECTION));
    }
    let (reason, properties) = optional_reason(r)?;
    Ok(Disconnect { reason, properties })
}

/// AUTH (3.15); the type check already refused it before v5.
fn auth<'a>(r: &mut Reader<'a>) -> Result<Auth<'a>, DecodeError> {
    let (reason, properties) = optional_reason(r)?;
    Ok(Auth { reason, properties })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::packet::ProtocolVersion::{V31, V311, V5};

    fn limits(version: ProtocolVersion) -> DecodeLimits {
        DecodeLimits::new(version, 1 << 20)
    }

    fn dec(bytes: &[u8], version: ProtocolVersion) -> Result<Packet<'_>, DecodeError> {
        match decode(bytes, &limits(version))? {
            Decoded::Packet(p, n) => {
                assert_eq!(n, bytes.len(), "packet did not use the whole buffer");
                Ok(p)
            }
            Decoded::NeedMore(n) => panic!("NeedMore({n:?}) for a whole packet"),
        }
    }

    fn err(bytes: &[u8], version: ProtocolVersion) -> DecodeError {
        match dec(bytes, version) {
            Err(e) => e,
            Ok(p) => panic!("decoded {p:?}, expected an error"),
        }
    }

    /// A 3.1.1 CONNECT written out by hand: user name, password, clean session,
    /// keep alive 60, client id "abc".
    const CONNECT_311: &[u8] = &[
        0x10, 0x1B, // CONNECT, remaining length 27
        0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name
        0x04, // level 4
        0xC2, // user name, password, clean session
        0x00, 0x3C, // keep alive 60
        0x00, 0x03, b'a', b'b', b'c', // client id
        0x00, 0x04, b'u', b's', b'e', b'r', // user name
        0x00, 0x04, b'p', b'a', b's', b's', // password
    ];

    #[test]
    fn hand_written_connect_311() {
        let Packet::Connect(c) = dec(CONNECT_311, V5).unwrap() else {
            panic!("not a CONNECT")
        };
        // Decoded by its own level although the limits say v5.
        assert_eq!(c.version, V311);
        assert!(c.clean_start);
        assert_eq!(c.keep_alive, 60);
        assert_eq!(c.client_id, "abc");
        assert_eq!(c.username, Some("user"));
        assert_eq!(c.password, Some(&b"pass"[..]));
        assert_eq!(c.will, None);
        assert!(c.properties.is_empty());
    }

    #[test]
    fn hand_written_connect_31_with_will() {
        let bytes = [
            0x10, 0x17, // CONNECT, remaining length 23
            0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', // protocol name
            0x03, // level 3
            0x2C, // will retain, will QoS 1, will flag
            0x00, 0x0A, // keep alive 10
            0x00, 0x01, b'c', // client id
            0x00, 0x01, b't', // will topic
            0x00, 0x03, b'b', b'y', b'e', // will message
        ];
        let Packet::Connect(c) = dec(&bytes, V311).unwrap() else {
            panic!()
        };
        assert_eq!(c.version, V31);
        assert!(!c.clean_start);
        let will = c.will.unwrap();
        assert_eq!(
            (will.topic, will.payload, will.qos, will.retain),
            ("t", &b"bye"[..], QoS::AtLeastOnce, true)
        );
    }

    #[test]
    fn hand_written_connack_v5_with_properties() {
        let bytes = [
            0x20, 0x0B, // CONNACK, remaining length 11
            0x01, 0x00, // session present, Success
            0x08, // property length
            0x21, 0x00, 0x0A, // Receive Maximum 10
            0x24, 0x01, // Maximum QoS 1
            0x22, 0x00, 0x05, // Topic Alias Maximum 5
        ];
        let Packet::ConnAck(c) = dec(&bytes, V5).unwrap() else {
            panic!()
        };
        assert!(c.session_present);
        assert_eq!(c.reason, ReasonCode::SUCCESS);
        assert_eq!(c.properties.receive_maximum, Some(10));
        assert_eq!(c.properties.maximum_qos, Some(1));
        assert_eq!(c.properties.topic_alias_maximum, Some(5));
    }

    #[test]
    fn hand_written_v3_acks() {
        // 3.1.1 CONNACK "not authorized" maps to the v5 code.
        let Packet::ConnAck(c) = dec(&[0x20, 0x02, 0x00, 0x05], V311).unwrap() else {
            panic!()
        };
        assert_eq!(c.reason, ReasonCode::NOT_AUTHORIZED);
        let Packet::SubAck(s) = dec(&[0x90, 0x05, 0x00, 0x07, 0x00, 0x02, 0x80], V311).unwrap()
        else {
            panic!()
        };
        assert_eq!(s.packet_id, 7);
        assert_eq!(s.reasons, [ReasonCode(0), ReasonCode(2), ReasonCode(0x80)]);
        let Packet::UnsubAck(u) = dec(&[0xB0, 0x02, 0x00, 0x07], V311).unwrap() else {
            panic!()
        };
        assert!(u.reasons.is_empty());
        assert_eq!(dec(&[0xC0, 0x00], V311), Ok(Packet::PingReq));
        assert_eq!(dec(&[0xD0, 0x00], V31), Ok(Packet::PingResp));
    }

    #[test]
    fn hand_written_publish_311() {
        // QoS 1, retain, topic "a/b", id 10, payload "hi".
        let bytes = [
            0x33, 0x09, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x0A, b'h', b'i',
        ];
        let Packet::Publish(p) = dec(&bytes, V311).unwrap() else {
            panic!()
        };
        assert_eq!((p.qos, p.retain, p.dup), (QoS::AtLeastOnce, true, false));
        assert_eq!((p.topic, p.packet_id, p.payload), ("a/b", 10, &b"hi"[..]));
    }

    #[test]
    fn v5_short_acks() {
        // PUBACK with remaining length 2: Success, no properties.
        assert_eq!(
            dec(&[0x40, 0x02, 0x00, 0x01], V5),
            Ok(Packet::PubAck(PubResp::success(1)))
        );
        // Remaining length 3: reason only.
        let Packet::PubRec(p) = dec(&[0x50, 0x03, 0x00, 0x01, 0x10], V5).unwrap() else {
            panic!()
        };
        assert_eq!(p.reason, ReasonCode::NO_MATCHING_SUBSCRIBERS);
        // Remaining length 4: reason and an empty property list.
        let Packet::PubComp(p) = dec(&[0x70, 0x04, 0x00, 0x01, 0x92, 0x00], V5).unwrap() else {
            panic!()
        };
        assert_eq!(p.reason, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND);
        // DISCONNECT with remaining length 0 is a normal disconnection.
        assert_eq!(
            dec(&[0xE0, 0x00], V5),
            Ok(Packet::Disconnect(Disconnect::with_reason(
                ReasonCode::NORMAL_DISCONNECTION
            )))
        );
        // DISCONNECT with a reason only.
        assert_eq!(
            dec(&[0xE0, 0x01, 0x8E], V5),
            Ok(Packet::Disconnect(Disconnect::with_reason(
                ReasonCode::SESSION_TAKEN_OVER
            )))
        );
        // AUTH with remaining length 0 is Success [3.15.2.1].
        assert_eq!(
            dec(&[0xF0, 0x00], V5),
            Ok(Packet::Auth(Auth {
                reason: ReasonCode::SUCCESS,
                properties: Properties::default()
            }))
        );
    }

    #[test]
    fn need_more_and_size_limit() {
        let l = limits(V311);
        assert!(matches!(decode(&[], &l), Ok(Decoded::NeedMore(None))));
        assert!(matches!(decode(&[0x30], &l), Ok(Decoded::NeedMore(None))));
        assert!(matches!(
            decode(&[0x30, 0x80], &l),
            Ok(Decoded::NeedMore(None))
        ));
        assert!(matches!(
            decode(&[0x30, 0x80, 0x01], &l),
            Ok(Decoded::NeedMore(Some(131)))
        ));
        // A hostile length is refused from the header alone, before any body.
        let small = DecodeLimits::new(V311, 100);
        assert_eq!(
            decode(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F], &small).unwrap_err(),
            DecodeError::PacketTooLarge {
                size: 268_435_460,
                max: 100
            }
        );
        // Exactly at the limit is fine; one more is not.
        let at = DecodeLimits::new(V311, 4);
        assert!(matches!(
            decode(&[0x40, 0x02, 0x00, 0x01], &at),
            Ok(Decoded::Packet(..))
        ));
        assert!(matches!(
            decode(&[0x40, 0x03], &at),
            Err(DecodeError::PacketTooLarge { size: 5, max: 4 })
        ));
    }

    #[test]
    fn remaining_length_too_long() {
        // Known at the 4th length byte; no 5th byte is needed.
        assert_eq!(
            decode(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF], &limits(V5)).unwrap_err(),
            DecodeError::RemainingLengthTooLong
        );
        assert_eq!(
            decode(&[0x30, 0x80, 0x80, 0x80, 0x80], &limits(V5)).unwrap_err(),
            DecodeError::RemainingLengthTooLong
        );
    }

    #[test]
    fn packet_types() {
        assert_eq!(err(&[0x00, 0x00], V5), DecodeError::InvalidPacketType(0));
        // AUTH only exists in v5.
        assert_eq!(err(&[0xF0, 0x00], V311), DecodeError::InvalidPacketType(15));
        assert_eq!(err(&[0xF0, 0x00], V31), DecodeError::InvalidPacketType(15));
        // A 3.1 PUBREL with DUP set (0x6A) is malformed, as in mosquitto's test
        // suite: PUBREL's flags are 0010 in every version [MQTT-3.6.1-1].
        assert_eq!(
            err(&[0x6A, 0x02, 0x00, 0x01], V31),
            DecodeError::InvalidHeaderFlags(PacketType::PubRel, 0b1010)
        );
        // Checked from the first byte alone.
        assert_eq!(
            decode(&[0x00], &limits(V5)).unwrap_err(),
            DecodeError::InvalidPacketType(0)
        );
    }

    #[test]
    fn header_flags() {
        use PacketType as T;
        // [MQTT-2.2.2-1/2]
        assert!(dec(&[0x62, 0x02, 0x00, 0x01], V311).is_ok());
        assert_eq!(
            err(&[0x60, 0x02, 0x00, 0x01], V311),
            DecodeError::InvalidHeaderFlags(T::PubRel, 0)
        );
        assert_eq!(
            err(&[0x80, 0x00], V311),
            DecodeError::InvalidHeaderFlags(T::Subscribe, 0)
        );
        assert_eq!(
            err(&[0xA3, 0x00], V311),
            DecodeError::InvalidHeaderFlags(T::Unsubscribe, 3)
        );
        assert_eq!(
            err(&[0x41, 0x02, 0x00, 0x01], V311),
            DecodeError::InvalidHeaderFlags(T::PubAck, 1)
        );
        assert_eq!(
            err(&[0xC8, 0x00], V311),
            DecodeError::InvalidHeaderFlags(T::PingReq, 8)
        );
        assert_eq!(
            err(&[0x12, 0x00], V311),
            DecodeError::InvalidHeaderFlags(T::Connect, 2)
        );
        // DUP with QoS 0 [MQTT-3.3.1-2].
        assert_eq!(
            err(&[0x38, 0x03, 0x00, 0x01, b'a'], V311),
            DecodeError::InvalidHeaderFlags(T::Publish, 8)
        );
        // QoS 3 [MQTT-3.3.1-4].
        assert_eq!(
            err(&[0x36, 0x03, 0x00, 0x01, b'a'], V311),
            DecodeError::InvalidQoS
        );
        // CONNACK's acknowledge flags: bits 7-1 reserved [MQTT-3.2.2-1].
        assert_eq!(
            err(&[0x20, 0x02, 0x02, 0x00], V311),
            DecodeError::InvalidHeaderFlags(T::ConnAck, 2)
        );
        assert_eq!(
            err(&[0x20, 0x03, 0x80, 0x00, 0x00], V5),
            DecodeError::InvalidHeaderFlags(T::ConnAck, 0x80)
        );
        // DUP with QoS 1 is fine.
        assert!(dec(&[0x3A, 0x05, 0x00, 0x01, b'a', 0x00, 0x01], V311).is_ok());
    }

    /// Before CONNECT only CONNECT is read, and nothing of anything else: one
    /// byte decides [MQTT-3.1.0-1].
    #[test]
    fn first_packet_must_be_connect() {
        let l = DecodeLimits {
            expect_connect: true,
            ..limits(V311)
        };
        assert_eq!(decode(&[0x30], &l).unwrap_err(), DecodeError::NotConnect(3));
        assert_eq!(decode(&[0x00], &l).unwrap_err(), DecodeError::NotConnect(0));
        assert_eq!(
            DecodeError::NotConnect(3).reason_code(),
            ReasonCode::PROTOCOL_ERROR
        );
        assert!(matches!(decode(&[0x10], &l), Ok(Decoded::NeedMore(None))));
        assert!(matches!(
            decode(CONNECT_311, &l),
            Ok(Decoded::Packet(Packet::Connect(_), _))
        ));
    }

    /// A v5 PUBLISH to "a" whose properties are `n` empty user properties.
    fn publish_with_user_properties(n: usize) -> Vec<u8> {
        let mut props = Vec::new();
        for _ in 0..n {
            props.extend_from_slice(&[0x26, 0, 0, 0, 0]);
        }
        let mut body = vec![0x00, 0x01, b'a'];
        let mut len = props.len();
        loop {
            let b = (len & 0x7F) as u8;
            len >>= 7;
            body.push(if len > 0 { b | 0x80 } else { b });
            if len == 0 {
                break;
            }
        }
        body.extend_from_slice(&props);
        let mut packet = vec![0x30];
        let mut len = body.len();
        loop {
            let b = (len & 0x7F) as u8;
            len >>= 7;
            packet.push(if len > 0 { b | 0x80 } else { b });
            if len == 0 {
                break;
            }
        }
        packet.extend_from_slice(&body);
        packet
    }

    /// Repeated properties decode to a list entry each (larger than their five
    /// wire bytes): their number per property list is capped.
    #[test]
    fn user_properties_are_counted() {
        let l = DecodeLimits {
            max_user_properties: 3,
            ..limits(V5)
        };
        let ok = publish_with_user_properties(3);
        match decode(&ok, &l) {
            Ok(Decoded::Packet(Packet::Publish(p), _)) => {
                assert_eq!(p.properties.user_properties.len(), 3)
            }
            other => panic!("{other:?}"),
        }
        let over = publish_with_user_properties(4);
        assert_eq!(
            decode(&over, &l).unwrap_err(),
            DecodeError::TooManyProperties(PacketType::Publish)
        );
        assert_eq!(
            DecodeError::TooManyProperties(PacketType::Publish).reason_code(),
            ReasonCode::QUOTA_EXCEEDED
        );
        // Subscription identifiers count too (a PUBLISH may repeat them):
        // two identifiers and one user property.
        let two_ids = [
            0x30, 0x0D, 0x00, 0x01, b'a', 0x09, 0x0B, 0x01, 0x0B, 0x02, 0x26, 0, 0, 0, 0,
        ];
        assert!(decode(&two_ids, &l).is_ok());
        let l2 = DecodeLimits {
            max_user_properties: 2,
            ..limits(V5)
        };
        assert_eq!(
            decode(&two_ids, &l2).unwrap_err(),
            DecodeError::TooManyProperties(PacketType::Publish)
        );
    }

    #[test]
    fn topic_filters_are_counted() {
        let l = DecodeLimits {
            max_topic_filters: 2,
            ..limits(V311)
        };
        // SUBSCRIBE id 1: "a" QoS 0, "b" QoS 1, then "c".
        let two = [0x82, 0x0A, 0x00, 0x01, 0, 1, b'a', 0, 0, 1, b'b', 1];
        assert!(matches!(decode(&two, &l), Ok(Decoded::Packet(..))));
        let three = [
            0x82, 0x0E, 0x00, 0x01, 0, 1, b'a', 0, 0, 1, b'b', 1, 0, 1, b'c', 0,
        ];
        assert_eq!(
            decode(&three, &l).unwrap_err(),
            DecodeError::TooManyTopicFilters(PacketType::Subscribe)
        );
        let unsub = [0xA2, 0x0B, 0x00, 0x01, 0, 1, b'a', 0, 1, b'b', 0, 1, b'c'];
        assert_eq!(
            decode(&unsub, &l).unwrap_err(),
            DecodeError::TooManyTopicFilters(PacketType::Unsubscribe)
        );
        let unsub_two = [0xA2, 0x08, 0x00, 0x01, 0, 1, b'a', 0, 1, b'b'];
        assert!(matches!(decode(&unsub_two, &l), Ok(Decoded::Packet(..))));
    }
}
