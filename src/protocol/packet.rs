//! The fifteen MQTT control packets as Rust values.
//!
//! Decoded packets borrow strings and payloads from the read buffer (`'a`), so
//! decoding allocates only for the few list-shaped fields (SUBSCRIBE filters,
//! user properties). One struct serves all three protocol levels: fields that
//! only exist in MQTT 5 (properties, most reason codes) are ignored when encoding
//! for 3.1/3.1.1, and take their defaults when decoding 3.1/3.1.1.

use super::properties::Properties;
use super::reason::ReasonCode;

/// A packet identifier. Never 0 on the wire where one is present [MQTT-2.2.1-3].
pub type PacketId = u16;

/// The protocol level from CONNECT's variable header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProtocolVersion {
    /// MQTT 3.1, protocol name "MQIsdp", level 3.
    V31,
    /// MQTT 3.1.1, protocol name "MQTT", level 4.
    V311,
    /// MQTT 5.0, protocol name "MQTT", level 5.
    V5,
}

impl ProtocolVersion {
    /// The protocol level byte sent in CONNECT.
    pub fn level(self) -> u8 {
        match self {
            ProtocolVersion::V31 => 3,
            ProtocolVersion::V311 => 4,
            ProtocolVersion::V5 => 5,
        }
    }

    /// The protocol name sent in CONNECT for this level.
    pub fn protocol_name(self) -> &'static str {
        match self {
            ProtocolVersion::V31 => "MQIsdp",
            ProtocolVersion::V311 | ProtocolVersion::V5 => "MQTT",
        }
    }

    /// The version for a protocol level byte, if midge speaks it.
    pub fn from_level(level: u8) -> Option<Self> {
        match level {
            3 => Some(ProtocolVersion::V31),
            4 => Some(ProtocolVersion::V311),
            5 => Some(ProtocolVersion::V5),
            _ => None,
        }
    }

    /// True for MQTT 5.0.
    pub fn is_v5(self) -> bool {
        self == ProtocolVersion::V5
    }
}

impl std::fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProtocolVersion::V31 => "v3.1",
            ProtocolVersion::V311 => "v3.1.1",
            ProtocolVersion::V5 => "v5.0",
        })
    }
}

/// Quality of service level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum QoS {
    /// QoS 0: fire and forget.
    #[default]
    AtMostOnce = 0,
    /// QoS 1: acknowledged with PUBACK, may be duplicated.
    AtLeastOnce = 1,
    /// QoS 2: four-way handshake, exactly once.
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS for the two wire bits, or `None` for the reserved value 3.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// The type nibble of the fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketType {
    /// 1
    Connect = 1,
    /// 2
    ConnAck = 2,
    /// 3
    Publish = 3,
    /// 4
    PubAck = 4,
    /// 5
    PubRec = 5,
    /// 6
    PubRel = 6,
    /// 7
    PubComp = 7,
    /// 8
    Subscribe = 8,
    /// 9
    SubAck = 9,
    /// 10
    Unsubscribe = 10,
    /// 11
    UnsubAck = 11,
    /// 12
    PingReq = 12,
    /// 13
    PingResp = 13,
    /// 14
    Disconnect = 14,
    /// 15, MQTT 5 only.
    Auth = 15,
}

impl PacketType {
    /// The packet type for a type nibble; 0 is reserved, 15 is AUTH (valid in v5 only,
    /// which the decoder checks).
    pub fn from_nibble(n: u8) -> Option<Self> {
        use PacketType::*;
        Some(match n {
            1 => Connect,
            2 => ConnAck,
            3 => Publish,
            4 => PubAck,
            5 => PubRec,
            6 => PubRel,
            7 => PubComp,
            8 => Subscribe,
            9 => SubAck,
            10 => Unsubscribe,
            11 => UnsubAck,
            12 => PingReq,
            13 => PingResp,
            14 => Disconnect,
            15 => Auth,
            _ => return None,
        })
    }
}

/// Any MQTT control packet.
// CONNECT (two property sets: its own and the will's) is boxed: once per
// connection it costs an allocation, and every other packet, PUBLISH above all,
// is half the size for it (608 -> 296 bytes), which is what each move of a
// decoded packet copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    /// Client request to connect.
    Connect(Box<Connect<'a>>),
    /// Connect acknowledgement.
    ConnAck(ConnAck<'a>),
    /// Application message.
    Publish(Publish<'a>),
    /// QoS 1 acknowledgement.
    PubAck(PubResp<'a>),
    /// QoS 2 part 1.
    PubRec(PubResp<'a>),
    /// QoS 2 part 2.
    PubRel(PubResp<'a>),
    /// QoS 2 part 3.
    PubComp(PubResp<'a>),
    /// Subscribe request.
    Subscribe(Subscribe<'a>),
    /// Subscribe acknowledgement.
    SubAck(SubAck<'a>),
    /// Unsubscribe request.
    Unsubscribe(Unsubscribe<'a>),
    /// Unsubscribe acknowledgement.
    UnsubAck(UnsubAck<'a>),
    /// Ping request.
    PingReq,
    /// Ping response.
    PingResp,
    /// Disconnect notification (either direction in MQTT 5).
    Disconnect(Disconnect<'a>),
    /// Authentication exchange (MQTT 5).
    Auth(Auth<'a>),
}

impl Packet<'_> {
    /// The packet's type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Connect(_) => PacketType::Connect,
            Packet::ConnAck(_) => PacketType::ConnAck,
            Packet::Publish(_) => PacketType::Publish,
            Packet::PubAck(_) => PacketType::PubAck,
            Packet::PubRec(_) => PacketType::PubRec,
            Packet::PubRel(_) => PacketType::PubRel,
            Packet::PubComp(_) => PacketType::PubComp,
            Packet::Subscribe(_) => PacketType::Subscribe,
            Packet::SubAck(_) => PacketType::SubAck,
            Packet::Unsubscribe(_) => PacketType::Unsubscribe,
            Packet::UnsubAck(_) => PacketType::UnsubAck,
            Packet::PingReq => PacketType::PingReq,
            Packet::PingResp => PacketType::PingResp,
            Packet::Disconnect(_) => PacketType::Disconnect,
            Packet::Auth(_) => PacketType::Auth,
        }
    }
}

/// CONNECT (3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect<'a> {
    /// Protocol level; the decoder checks that the protocol name matches it
    /// ("MQIsdp" for 3, "MQTT" for 4 and 5).
    pub version: ProtocolVersion,
    /// Clean Session (3.1.1) / Clean Start (5.0).
    pub clean_start: bool,
    /// Keep alive in seconds; 0 turns keep-alive off.
    pub keep_alive: u16,
    /// CONNECT properties (v5).
    pub properties: Properties<'a>,
    /// Client identifier, possibly empty.
    pub client_id: &'a str,
    /// The will message, when the will flag is set.
    pub will: Option<Will<'a>>,
    /// User name, when the flag is set.
    pub username: Option<&'a str>,
    /// Password, when the flag is set (binary data).
    pub password: Option<&'a [u8]>,
}

/// The will message carried in CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will<'a> {
    /// Will topic (a topic name: no wildcards).
    pub topic: &'a str,
    /// Will payload.
    pub payload: &'a [u8],
    /// Will QoS.
    pub qos: QoS,
    /// Will retain flag.
    pub retain: bool,
    /// Will properties (v5): will delay, message expiry, content type, ...
    pub properties: Properties<'a>,
}

/// CONNACK (3.2). The reason is always an MQTT 5 reason code; the encoder maps it
/// to a 3.1.1 return code (0x00-0x05) for older clients, and the decoder maps back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck<'a> {
    /// Session Present flag.
    pub session_present: bool,
    /// Connect reason code.
    pub reason: ReasonCode,
    /// CONNACK properties (v5).
    pub properties: Properties<'a>,
}

/// PUBLISH (3.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish<'a> {
    /// DUP flag: this may be a re-delivery.
    pub dup: bool,
    /// QoS level.
    pub qos: QoS,
    /// RETAIN flag.
    pub retain: bool,
    /// Topic name; may be empty in v5 when a topic alias is given.
    pub topic: &'a str,
    /// Packet identifier; present (non-zero) only when `qos` > 0, and 0 otherwise.
    pub packet_id: PacketId,
    /// PUBLISH properties (v5).
    pub properties: Properties<'a>,
    /// Application payload.
    pub payload: &'a [u8],
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP share one shape (3.4-3.7).
/// In v5 the reason code and properties may be omitted on the wire when they are
/// Success and empty; the decoder fills in Success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubResp<'a> {
    /// Packet identifier being acknowledged.
    pub packet_id: PacketId,
    /// Reason code (v5; Success for older versions).
    pub reason: ReasonCode,
    /// Properties (v5).
    pub properties: Properties<'a>,
}

impl PubResp<'_> {
    /// A plain success acknowledgement with no properties.
    pub fn success(packet_id: PacketId) -> PubResp<'static> {
        PubResp {
            packet_id,
            reason: ReasonCode::SUCCESS,
            properties: Properties::default(),
        }
    }
}

/// Retain Handling subscription option (3.8.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RetainHandling {
    /// 0: send retained messages at the time of the subscribe.
    #[default]
    SendAtSubscribe = 0,
    /// 1: send retained messages only if the subscription did not exist.
    SendIfNew = 1,
    /// 2: do not send retained messages at subscribe time.
    DoNotSend = 2,
}

/// The subscription options byte (3.8.3.1). For 3.1/3.1.1 only `qos` is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SubscriptionOptions {
    /// Maximum QoS the client wants for this subscription.
    pub qos: QoS,
    /// No Local (v5).
    pub no_local: bool,
    /// Retain As Published (v5).
    pub retain_as_published: bool,
    /// Retain Handling (v5).
    pub retain_handling: RetainHandling,
}

/// SUBSCRIBE (3.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe<'a> {
    /// Packet identifier.
    pub packet_id: PacketId,
    /// Properties (v5): subscription identifier, user properties.
    pub properties: Properties<'a>,
    /// Topic filters with their options; never empty on the wire [MQTT-3.8.3-3].
    pub filters: Vec<(&'a str, SubscriptionOptions)>,
}

/// SUBACK (3.9). Reason codes are v5 codes; 0x00-0x02 grant a QoS and any code
/// >= 0x80 is a failure, which the encoder writes as 0x80 for 3.1.1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck<'a> {
    /// Packet identifier of the SUBSCRIBE.
    pub packet_id: PacketId,
    /// Properties (v5).
    pub properties: Properties<'a>,
    /// One reason code per filter, in order.
    pub reasons: Vec<ReasonCode>,
}

/// UNSUBSCRIBE (3.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe<'a> {
    /// Packet identifier.
    pub packet_id: PacketId,
    /// Properties (v5): user properties.
    pub properties: Properties<'a>,
    /// Topic filters; never empty on the wire [MQTT-3.10.3-2].
    pub filters: Vec<&'a str>,
}

/// UNSUBACK (3.11). `reasons` is empty for 3.1/3.1.1, which carry no payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck<'a> {
    /// Packet identifier of the UNSUBSCRIBE.
    pub packet_id: PacketId,
    /// Properties (v5).
    pub properties: Properties<'a>,
    /// One reason code per filter (v5 only).
    pub reasons: Vec<ReasonCode>,
}

/// DISCONNECT (3.14). For 3.1/3.1.1 only the packet itself exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect<'a> {
    /// Reason code (v5).
    pub reason: ReasonCode,
    /// Properties (v5): session expiry, reason string, user properties, server reference.
    pub properties: Properties<'a>,
}

impl Disconnect<'_> {
    /// A DISCONNECT with the given reason and no properties.
    pub fn with_reason(reason: ReasonCode) -> Disconnect<'static> {
        Disconnect {
            reason,
            properties: Properties::default(),
        }
    }
}

/// AUTH (3.15), MQTT 5 only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth<'a> {
    /// Reason code: Success, Continue authentication or Re-authenticate.
    pub reason: ReasonCode,
    /// Properties: authentication method and data, reason string, user properties.
    pub properties: Properties<'a>,
}
