//! Typed codec errors. Every decode error names its cause and maps to the MQTT 5
//! reason code a broker sends in DISCONNECT (or CONNACK) before closing.

use super::packet::PacketType;
use super::reason::ReasonCode;

/// Why a byte sequence is not a valid MQTT packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The remaining length used more than four bytes [MQTT-1.5.5-1].
    RemainingLengthTooLong,
    /// The declared packet size exceeds the maximum we accept (checked before the
    /// body is buffered, so a hostile length never causes an allocation).
    PacketTooLarge {
        /// Total packet size declared by the fixed header.
        size: usize,
        /// The limit in force.
        max: usize,
    },
    /// Packet type nibble 0, or 15 (AUTH) before MQTT 5.
    InvalidPacketType(u8),
    /// Reserved fixed-header flag bits are wrong [MQTT-2.2.2-1/2].
    InvalidHeaderFlags(PacketType, u8),
    /// PUBLISH with both QoS bits set [MQTT-3.3.1-4].
    InvalidQoS,
    /// The packet body ended before a field it declares.
    Truncated(PacketType),
    /// Bytes left over after the last field of the packet.
    TrailingBytes(PacketType),
    /// A string that is not well-formed UTF-8, or contains U+0000 [MQTT-1.5.4-1/2].
    InvalidUtf8,
    /// CONNECT's protocol name is neither "MQTT" nor "MQIsdp". (A known name with a
    /// level it does not go with is `UnsupportedProtocolVersion`, as mosquitto treats it.)
    InvalidProtocolName,
    /// CONNECT's protocol level is not 3, 4 or 5. The broker answers with CONNACK
    /// 0x01 (v3) / 0x84 (v5) [MQTT-3.1.2-2].
    UnsupportedProtocolVersion(u8),
    /// CONNECT reserved flag bit set [MQTT-3.1.2-3], or will flags inconsistent
    /// [MQTT-3.1.2-11/13/15], or password without user name in 3.1.1 [MQTT-3.1.2-22].
    InvalidConnectFlags(u8),
    /// A packet identifier of 0 where one is required [MQTT-2.2.1-3].
    ZeroPacketId(PacketType),
    /// SUBSCRIBE/UNSUBSCRIBE with no topic filter [MQTT-3.8.3-3] [MQTT-3.10.3-2].
    NoTopicFilters(PacketType),
    /// Subscription options with reserved bits set, QoS 3 or retain handling 3 [MQTT-3.8.3-5].
    InvalidSubscriptionOptions(u8),
    /// A topic name that is empty (without an alias) or contains wildcards [MQTT-3.3.2-1/2].
    InvalidTopicName,
    /// A topic filter that breaks the wildcard rules [MQTT-4.7.1-1/2/3].
    InvalidTopicFilter,
    /// A property identifier that does not exist.
    UnknownProperty(u8),
    /// A property that this packet may not carry.
    PropertyNotAllowed(u8, PacketType),
    /// A property other than user property / subscription identifier given twice [MQTT-2.2.2-2].
    DuplicateProperty(u8),
    /// A property with a value outside its range (e.g. Receive Maximum 0, Maximum QoS 2).
    InvalidPropertyValue(u8),
    /// A reason code that the packet type may not carry.
    InvalidReasonCode(PacketType, u8),
    /// The connection's first packet is not CONNECT [MQTT-3.1.0-1] (the packet
    /// type nibble), known from the first byte.
    NotConnect(u8),
    /// More user properties (and subscription identifiers) in one property list
    /// than the configured limit.
    TooManyProperties(PacketType),
    /// More topic filters in one SUBSCRIBE or UNSUBSCRIBE than the configured limit.
    TooManyTopicFilters(PacketType),
}

impl DecodeError {
    /// The MQTT 5 reason code to report this error with.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            DecodeError::PacketTooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            DecodeError::UnsupportedProtocolVersion(_) => ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
            DecodeError::InvalidTopicName => ReasonCode::TOPIC_NAME_INVALID,
            DecodeError::InvalidTopicFilter => ReasonCode::TOPIC_FILTER_INVALID,
            DecodeError::DuplicateProperty(_)
            | DecodeError::ZeroPacketId(_)
            | DecodeError::InvalidPropertyValue(_)
            | DecodeError::InvalidPacketType(_)
            | DecodeError::NotConnect(_) => ReasonCode::PROTOCOL_ERROR,
            // An administrative limit, not a malformed packet (3.14.2.1: 0x97).
            DecodeError::TooManyProperties(_) | DecodeError::TooManyTopicFilters(_) => {
                ReasonCode::QUOTA_EXCEEDED
            }
            _ => ReasonCode::MALFORMED_PACKET,
        }
    }
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::RemainingLengthTooLong => {
                f.write_str("remaining length longer than 4 bytes")
            }
            DecodeError::PacketTooLarge { size, max } => {
                write!(f, "packet of {size} bytes exceeds the maximum of {max}")
            }
            DecodeError::InvalidPacketType(t) => write!(f, "invalid packet type {t}"),
            DecodeError::InvalidHeaderFlags(t, fl) => {
                write!(f, "invalid fixed header flags 0x{fl:X} for {t:?}")
            }
            DecodeError::InvalidQoS => f.write_str("PUBLISH with QoS 3"),
            DecodeError::Truncated(t) => write!(f, "{t:?} ends before its fields do"),
            DecodeError::TrailingBytes(t) => write!(f, "{t:?} has bytes after its last field"),
            DecodeError::InvalidUtf8 => f.write_str("malformed UTF-8 string"),
            DecodeError::InvalidProtocolName => f.write_str("invalid protocol name"),
            DecodeError::UnsupportedProtocolVersion(l) => {
                write!(f, "unsupported protocol level {l}")
            }
            DecodeError::InvalidConnectFlags(fl) => write!(f, "invalid CONNECT flags 0x{fl:02X}"),
            DecodeError::ZeroPacketId(t) => write!(f, "{t:?} with packet identifier 0"),
            DecodeError::NoTopicFilters(t) => write!(f, "{t:?} with no topic filters"),
            DecodeError::InvalidSubscriptionOptions(o) => {
                write!(f, "invalid subscription options 0x{o:02X}")
            }
            DecodeError::InvalidTopicName => f.write_str("invalid topic name"),
            DecodeError::InvalidTopicFilter => f.write_str("invalid topic filter"),
            DecodeError::UnknownProperty(p) => write!(f, "unknown property 0x{p:02X}"),
            DecodeError::PropertyNotAllowed(p, t) => {
                write!(f, "property 0x{p:02X} not allowed in {t:?}")
            }
            DecodeError::DuplicateProperty(p) => write!(f, "property 0x{p:02X} given twice"),
            DecodeError::InvalidPropertyValue(p) => {
                write!(f, "invalid value for property 0x{p:02X}")
            }
            DecodeError::InvalidReasonCode(t, c) => {
                write!(f, "reason code 0x{c:02X} not valid in {t:?}")
            }
            DecodeError::NotConnect(t) => match PacketType::from_nibble(*t) {
                Some(t) => write!(f, "first packet is {t:?}, not CONNECT"),
                None => write!(f, "first packet has invalid type {t}, not CONNECT"),
            },
            DecodeError::TooManyProperties(t) => {
                write!(f, "{t:?} carries more user properties than allowed")
            }
            DecodeError::TooManyTopicFilters(t) => {
                write!(f, "{t:?} carries more topic filters than allowed")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// Why a packet could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncodeError {
    /// The packet would need a remaining length over 268,435,455 bytes.
    PacketTooLarge(usize),
    /// A string or binary field over 65,535 bytes.
    FieldTooLong(usize),
    /// The packet type does not exist in the target protocol version (AUTH before v5).
    NotInVersion(PacketType),
}

impl std::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EncodeError::PacketTooLarge(n) => write!(f, "packet body of {n} bytes is too large"),
            EncodeError::FieldTooLong(n) => write!(f, "field of {n} bytes exceeds 65535"),
            EncodeError::NotInVersion(t) => write!(f, "{t:?} does not exist in this version"),
        }
    }
}

impl std::error::Error for EncodeError {}
