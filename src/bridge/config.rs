//! `connection <name>` sections of the config file, in mosquitto's syntax and with
//! its defaults. `crate::config` hands every line that belongs to a bridge here;
//! this module only parses and validates, it never opens a socket.

use std::path::PathBuf;
use std::time::Duration;

use crate::auth::psk;
use crate::protocol::topic::{valid_topic_filter, valid_topic_name};
use crate::protocol::{ProtocolVersion, QoS};

/// Which way a `topic` line forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Remote to local.
    In,
    /// Local to remote (mosquitto's default).
    Out,
    /// Both ways.
    Both,
}

impl Direction {
    /// Forwards remote messages to the local broker.
    pub fn inbound(self) -> bool {
        matches!(self, Direction::In | Direction::Both)
    }
    /// Forwards local messages to the remote broker.
    pub fn outbound(self) -> bool {
        matches!(self, Direction::Out | Direction::Both)
    }
}

/// One `topic <pattern> [direction [qos [local_prefix remote_prefix]]]` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRule {
    /// The pattern as written (may be empty when both prefixes are given).
    pub pattern: String,
    /// Forwarding direction.
    pub direction: Direction,
    /// Highest QoS used on both sides for this pattern.
    pub qos: QoS,
    /// Prefix of the topic on the local broker (`""` in the file = none).
    pub local_prefix: String,
    /// Prefix of the topic on the remote broker (`""` in the file = none).
    pub remote_prefix: String,
}

impl TopicRule {
    /// The filter subscribed to on the local broker: local prefix + pattern.
    pub fn local_filter(&self) -> String {
        format!("{}{}", self.local_prefix, self.pattern)
    }
    /// The filter subscribed to on the remote broker: remote prefix + pattern.
    pub fn remote_filter(&self) -> String {
        format!("{}{}", self.remote_prefix, self.pattern)
    }
}

/// `start_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartType {
    /// Connect at start and reconnect forever (default).
    Automatic,
    /// Connect when `threshold` messages wait for the remote; disconnect after
    /// `idle_timeout` without traffic.
    Lazy,
    /// Connect once at start; never reconnect.
    Once,
}

/// One remote address (`host[:port]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// Host name or IP literal.
    pub host: String,
    /// TCP port (default 1883).
    pub port: u16,
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Client-side TLS for the link to the remote (`bridge_cafile` and friends).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BridgeTls {
    /// `bridge_cafile`: PEM CA certificate(s) the remote's certificate must chain to.
    pub cafile: Option<PathBuf>,
    /// `bridge_capath`: directory of PEM CA certificates.
    pub capath: Option<PathBuf>,
    /// `bridge_certfile`: PEM client certificate.
    pub certfile: Option<PathBuf>,
    /// `bridge_keyfile`: PEM private key of the client certificate.
    pub keyfile: Option<PathBuf>,
    /// `bridge_insecure`: do not check the remote's host name.
    pub insecure: bool,
    /// `bridge_tls_version`: the lowest version allowed.
    pub tls_version: Option<String>,
    /// `bridge_alpn`: ALPN protocol to offer.
    pub alpn: Option<String>,
    /// `bridge_identity`: the TLS-PSK identity (with `bridge_psk`, instead of
    /// certificates).
    pub psk_identity: Option<String>,
    /// `bridge_psk`: the pre-shared key, decoded from hexadecimal.
    pub psk_key: Option<Vec<u8>>,
}

/// One `connection` section.
#[derive(Debug, Clone, PartialEq)]
pub struct BridgeConfig {
    /// The connection name.
    pub name: String,
    /// Where the `connection` line is (for errors found after parsing).
    pub file: PathBuf,
    /// Its line number.
    pub line: usize,
    /// `address`/`addresses`, tried in order.
    pub addresses: Vec<Address>,
    /// `round_robin` (default false: go back to the first address when it returns).
    pub round_robin: bool,
    /// `topic` lines.
    pub topics: Vec<TopicRule>,
    /// `cleansession` (default false).
    pub cleansession: bool,
    /// `local_cleansession` (default: same as `cleansession`).
    pub local_cleansession: Option<bool>,
    /// `remote_clientid`/`clientid` (default `<hostname>.<name>`).
    pub remote_clientid: Option<String>,
    /// `local_clientid` (default `local.<remote_clientid>`).
    pub local_clientid: Option<String>,
    /// `remote_username`/`username`.
    pub remote_username: Option<String>,
    /// `remote_password`/`password`.
    pub remote_password: Option<String>,
    /// `keepalive_interval` seconds (default 60).
    pub keepalive_interval: u16,
    /// `bridge_protocol_version` (default 3.1.1).
    pub protocol_version: ProtocolVersion,
    /// `try_private` (default true): announce a bridge with protocol level | 0x80.
    pub try_private: bool,
    /// `restart_timeout base [cap]` (default 5 30).
    pub restart_base: Duration,
    /// Cap of the back-off; `None` = a constant `restart_base`.
    pub restart_cap: Option<Duration>,
    /// `start_type` (default automatic).
    pub start_type: StartType,
    /// `threshold` (default 10), for lazy bridges.
    pub threshold: usize,
    /// `idle_timeout` seconds (default 60), for lazy bridges.
    pub idle_timeout: Duration,
    /// `notifications` (default true).
    pub notifications: bool,
    /// `notification_topic` (default `$SYS/broker/connection/<remote_clientid>/state`).
    pub notification_topic: Option<String>,
    /// `notifications_local_only` (default false).
    pub notifications_local_only: bool,
    /// `bridge_attempt_unsubscribe` (default true).
    pub attempt_unsubscribe: bool,
    /// `bridge_outgoing_retain` (default true).
    pub outgoing_retain: bool,
    /// `bridge_max_packet_size` (default 0 = none).
    pub max_packet_size: u32,
    /// TLS towards the remote; `None` = plain TCP.
    pub tls: Option<BridgeTls>,
    /// `local_username` (accepted for mosquitto configs; the local side is trusted).
    pub local_username: Option<String>,
    /// `local_password` (accepted for mosquitto configs; the local side is trusted).
    pub local_password: Option<String>,
}

impl BridgeConfig {
    /// A section with mosquitto's defaults, started at `file:line`.
    pub fn new(name: &str, file: PathBuf, line: usize) -> Self {
        BridgeConfig {
            name: name.to_string(),
            file,
            line,
            addresses: Vec::new(),
            round_robin: false,
            topics: Vec::new(),
            cleansession: false,
            local_cleansession: None,
            remote_clientid: None,
            local_clientid: None,
            remote_username: None,
            remote_password: None,
            keepalive_interval: 60,
            protocol_version: ProtocolVersion::V311,
            try_private: true,
            restart_base: Duration::from_secs(5),
            restart_cap: Some(Duration::from_secs(30)),
            start_type: StartType::Automatic,
            threshold: 10,
            idle_timeout: Duration::from_secs(60),
            notifications: true,
            notification_topic: None,
            notifications_local_only: false,
            attempt_unsubscribe: true,
            outgoing_retain: true,
            max_packet_size: 0,
            tls: None,
            local_username: None,
            local_password: None,
        }
    }

    /// The client id used on the remote broker.
    pub fn remote_id(&self) -> String {
        match &self.remote_clientid {
            Some(id) => id.clone(),
            None => format!("{}.{}", hostname(), self.name),
        }
    }

    /// The client id of the bridge's session on the local broker.
    pub fn local_id(&self) -> String {
        match &self.local_clientid {
            Some(id) => id.clone(),
            None => format!("local.{}", self.remote_id()),
        }
    }

    /// The local session is clean (messages for a down remote are not kept).
    pub fn local_clean(&self) -> bool {
        self.local_cleansession.unwrap_or(self.cleansession)
    }

    /// Where connection state is published.
    pub fn state_topic(&self) -> String {
        match &self.notification_topic {
            Some(t) => t.clone(),
            None => format!("$SYS/broker/connection/{}/state", self.remote_id()),
        }
    }

    /// Apply one directive of this section. `Ok(false)` = not a bridge directive.
    pub fn apply(&mut self, directive: &str, args: &[&str]) -> Result<bool, String> {
        let one = || -> Result<&str, String> {
            match args {
                [v] => Ok(v),
                [] => Err(format!("`{directive}` needs a value")),
                _ => Err(format!("`{directive}` takes one value")),
            }
        };
        let boolean = || -> Result<bool, String> {
            match one()? {
                "true" => Ok(true),
                "false" => Ok(false),
                v => Err(format!("`{directive}` expects true or false, got `{v}`")),
            }
        };
        let number = |max: u64| -> Result<u64, String> {
            let v = one()?;
            v.parse::<u64>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| format!("`{directive}` expects a number from 0 to {max}, got `{v}`"))
        };
        match directive {
            "address" | "addresses" => {
                if args.is_empty() {
                    return Err(format!("`{directive}` needs at least one host[:port]"));
                }
                for a in args {
                    self.addresses.push(parse_address(a)?);
                }
            }
            "round_robin" => self.round_robin = boolean()?,
            "topic" => self.topics.push(parse_topic(args)?),
            "cleansession" => self.cleansession = boolean()?,
            "local_cleansession" => self.local_cleansession = Some(boolean()?),
            "remote_clientid" | "clientid" => {
                let id = client_id(one()?)?;
                if let Some(why) = wildcard_in_topic_level(&id) {
                    return Err(format!("`{directive}` `{id}` {why}"));
                }
                self.remote_clientid = Some(id);
            }
            "local_clientid" => self.local_clientid = Some(client_id(one()?)?),
            "remote_username" | "username" => self.remote_username = Some(one()?.to_string()),
            "remote_password" | "password" => self.remote_password = Some(one()?.to_string()),
            "local_username" => self.local_username = Some(one()?.to_string()),
            "local_password" => self.local_password = Some(one()?.to_string()),
            "keepalive_interval" => {
                let n = number(65_535)?;
                if n != 0 && n < 5 {
                    return Err(format!(
                        "`keepalive_interval` must be 0 or at least 5, got `{n}`"
                    ));
                }
                self.keepalive_interval = n as u16;
            }
            "bridge_protocol_version" => {
                self.protocol_version = match one()? {
                    "mqttv31" => ProtocolVersion::V31,
                    "mqttv311" => ProtocolVersion::V311,
                    "mqttv50" => ProtocolVersion::V5,
                    v => {
                        return Err(format!(
                        "`bridge_protocol_version` expects mqttv31, mqttv311 or mqttv50, got `{v}`"
                    ))
                    }
                }
            }
            "try_private" => self.try_private = boolean()?,
            "restart_timeout" => {
                let secs = |v: &str| -> Result<Duration, String> {
                    v.parse::<u64>()
                        .ok()
                        .filter(|n| (1..=86_400).contains(n))
                        .map(Duration::from_secs)
                        .ok_or_else(|| {
                            format!("`restart_timeout` expects seconds from 1 to 86400, got `{v}`")
                        })
                };
                match args {
                    [b] => {
                        self.restart_base = secs(b)?;
                        self.restart_cap = None;
                    }
                    [b, c] => {
                        let (b, c) = (secs(b)?, secs(c)?);
                        if c < b {
                            return Err("`restart_timeout` cap is below its base".into());
                        }
                        self.restart_base = b;
                        self.restart_cap = Some(c);
                    }
                    _ => return Err("`restart_timeout` takes a base and an optional cap".into()),
                }
            }
            "start_type" => {
                self.start_type = match one()? {
                    "automatic" => StartType::Automatic,
                    "lazy" => StartType::Lazy,
                    "once" => StartType::Once,
                    v => {
                        return Err(format!(
                            "`start_type` expects automatic, lazy or once, got `{v}`"
                        ))
                    }
                }
            }
            "threshold" => {
                let n = number(u64::from(u32::MAX))?;
                if n == 0 {
                    return Err("`threshold` must be at least 1".into());
                }
                self.threshold = n as usize;
            }
            "idle_timeout" => {
                let n = number(86_400 * 365)?;
                if n == 0 {
                    return Err("`idle_timeout` must be at least 1 second".into());
                }
                self.idle_timeout = Duration::from_secs(n);
            }
            "notifications" => self.notifications = boolean()?,
            "notification_topic" => {
                let t = one()?;
                if !valid_topic_name(t) {
                    return Err(format!(
                        "`notification_topic` `{t}` is not a valid topic name"
                    ));
                }
                self.notification_topic = Some(t.to_string());
            }
            "notifications_local_only" => self.notifications_local_only = boolean()?,
            "bridge_attempt_unsubscribe" => self.attempt_unsubscribe = boolean()?,
            "bridge_outgoing_retain" => self.outgoing_retain = boolean()?,
            "bridge_max_packet_size" => self.max_packet_size = number(268_435_460)? as u32,
            "bridge_cafile" | "bridge_capath" | "bridge_certfile" | "bridge_keyfile" => {
                let p = Some(PathBuf::from(one()?));
                let t = self.tls.get_or_insert_with(BridgeTls::default);
                match directive {
                    "bridge_cafile" => t.cafile = p,
                    "bridge_capath" => t.capath = p,
                    "bridge_certfile" => t.certfile = p,
                    _ => t.keyfile = p,
                }
            }
            "bridge_insecure" => {
                let v = boolean()?;
                self.tls.get_or_insert_with(BridgeTls::default).insecure = v;
            }
            "bridge_tls_version" => {
                let v = one()?;
                if !matches!(v, "tlsv1.2" | "tlsv1.3") {
                    return Err(format!(
                        "`bridge_tls_version` expects tlsv1.2 or tlsv1.3, got `{v}`"
                    ));
                }
                self.tls.get_or_insert_with(BridgeTls::default).tls_version = Some(v.to_string());
            }
            "bridge_alpn" => {
                let v = one()?.to_string();
                self.tls.get_or_insert_with(BridgeTls::default).alpn = Some(v);
            }
            "bridge_identity" => {
                let v = one()?;
                if v.len() > psk::MAX_IDENTITY_BYTES {
                    return Err(format!(
                        "`bridge_identity` is longer than {} bytes",
                        psk::MAX_IDENTITY_BYTES
                    ));
                }
                self.tls.get_or_insert_with(BridgeTls::default).psk_identity = Some(v.to_string());
            }
            "bridge_psk" => {
                // mosquitto's format: hexadecimal, no `0x`.
                let key = psk::unhex(one()?)
                    .filter(|k| !k.is_empty())
                    .ok_or("`bridge_psk` expects the key in hexadecimal (no `0x`)")?;
                if key.len() > psk::MAX_KEY_BYTES {
                    return Err(format!(
                        "`bridge_psk` is longer than {} bytes",
                        psk::MAX_KEY_BYTES
                    ));
                }
                self.tls.get_or_insert_with(BridgeTls::default).psk_key = Some(key);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Checks that need the whole section: an address, TLS settings that fit together.
    pub fn check(&self) -> Result<(), String> {
        if self.addresses.is_empty() {
            return Err(format!("bridge `{}` has no `address`", self.name));
        }
        if self.remote_clientid.is_none() {
            let id = self.remote_id();
            if let Some(why) = wildcard_in_topic_level(&id) {
                return Err(format!(
                    "bridge `{}`: the default `remote_clientid` `{id}` {why}; set `remote_clientid`",
                    self.name
                ));
            }
        }
        if self.start_type == StartType::Lazy && self.local_clean() {
            // The lazy bridge starts when its local session's queue fills; a
            // clean local session keeps no queue while the link is down.
            return Err(format!(
                "bridge `{}`: `start_type lazy` needs a persistent local session (`local_cleansession false`)",
                self.name
            ));
        }
        if let Some(t) = &self.tls {
            if t.certfile.is_some() != t.keyfile.is_some() {
                return Err(format!(
                    "bridge `{}`: `bridge_certfile` and `bridge_keyfile` go together",
                    self.name
                ));
            }
            if t.psk_identity.is_some() != t.psk_key.is_some() {
                return Err(format!(
                    "bridge `{}`: `bridge_identity` and `bridge_psk` go together",
                    self.name
                ));
            }
            let certificates = t.cafile.is_some() || t.capath.is_some() || t.certfile.is_some();
            if t.psk_key.is_some() && certificates {
                // As mosquitto: one bridge uses either certificates or TLS-PSK.
                return Err(format!(
                    "bridge `{}`: certificates (`bridge_cafile`, `bridge_capath`, `bridge_certfile`) and TLS-PSK (`bridge_psk`) cannot both be used on one bridge",
                    self.name
                ));
            }
            if t.psk_key.is_none() && t.cafile.is_none() && t.capath.is_none() {
                // mosquitto: TLS towards the remote needs a CA to check it against
                // (or a pre-shared key); silently falling back to plain TCP is
                // what this prevents.
                return Err(format!(
                    "bridge `{}`: TLS settings without `bridge_cafile`, `bridge_capath` or `bridge_psk`",
                    self.name
                ));
            }
        }
        Ok(())
    }
}

/// Directives that only mean something inside a `connection` section (used to
/// report one that comes before the first `connection` line).
pub fn is_bridge_directive(d: &str) -> bool {
    matches!(
        d,
        "address"
            | "addresses"
            | "round_robin"
            | "topic"
            | "cleansession"
            | "local_cleansession"
            | "remote_clientid"
            | "clientid"
            | "local_clientid"
            | "remote_username"
            | "username"
            | "remote_password"
            | "password"
            | "local_username"
            | "local_password"
            | "keepalive_interval"
            | "try_private"
            | "restart_timeout"
            | "start_type"
            | "threshold"
            | "idle_timeout"
            | "notifications"
            | "notification_topic"
            | "notifications_local_only"
    ) || d.starts_with("bridge_")
}

fn client_id(v: &str) -> Result<String, String> {
    if v.len() > 65_535 {
        return Err("client id too long".into());
    }
    Ok(v.to_string())
}

/// Why `id` cannot be the `<remote_clientid>` level of the bridge's topics
/// (`$SYS/broker/connection/<remote_clientid>/state` and the counters beside
/// it): a topic name holds no wildcard [MQTT-3.3.2-2]. mosquitto takes such an
/// id and then fails every connect (its will topic is invalid); midge refuses it
/// at start-up, where the line can be named. The local client id never appears
/// in a topic, so it may hold any character.
fn wildcard_in_topic_level(id: &str) -> Option<&'static str> {
    (id.contains('+') || id.contains('#')).then_some(
        "contains a wildcard (`+` or `#`): it names the topics `$SYS/broker/connection/<remote_clientid>/...`",
    )
}

/// `host`, `host:port`, `[v6]:port` or a bare IPv6 literal.
fn parse_address(a: &str) -> Result<Address, String> {
    let bad_port = |p: &str| format!("address `{a}`: bad port `{p}`");
    let (host, port) = if let Some(rest) = a.strip_prefix('[') {
        let (h, tail) = rest
            .split_once(']')
            .ok_or_else(|| format!("address `{a}`: missing `]`"))?;
        match tail.strip_prefix(':') {
            Some(p) => (h, Some(p)),
            None if tail.is_empty() => (h, None),
            None => return Err(format!("address `{a}`: junk after `]`")),
        }
    } else if a.matches(':').count() == 1 {
        let (h, p) = a.split_once(':').unwrap_or((a, ""));
        (h, Some(p))
    } else {
        (a, None)
    };
    if host.is_empty() {
        return Err(format!("address `{a}` has no host"));
    }
    let port = match port {
        None => 1883,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(bad_port(p)),
        },
    };
    Ok(Address {
        host: host.to_string(),
        port,
    })
}

/// `""` in the file stands for the empty string, as in mosquitto.
fn unquote(v: &str) -> &str {
    if v == "\"\"" {
        ""
    } else {
        v
    }
}

fn parse_topic(args: &[&str]) -> Result<TopicRule, String> {
    let (pattern, rest) = match args {
        [] => return Err("`topic` needs a pattern".into()),
        [p, rest @ ..] => (unquote(p), rest),
    };
    if rest.len() > 4 {
        return Err(
            "`topic` takes a pattern, direction, qos, local prefix and remote prefix".into(),
        );
    }
    let direction = match rest.first().copied() {
        None | Some("out") => Direction::Out,
        Some("in") => Direction::In,
        Some("both") => Direction::Both,
        Some(d) => {
            return Err(format!(
                "`topic` direction must be in, out or both, got `{d}`"
            ))
        }
    };
    let qos = match rest.get(1).copied() {
        None => QoS::AtMostOnce,
        Some(q) => q
            .parse::<u8>()
            .ok()
            .and_then(QoS::from_u8)
            .ok_or_else(|| format!("`topic` qos must be 0, 1 or 2, got `{q}`"))?,
    };
    let (local_prefix, remote_prefix) = match rest.get(2..) {
        Some([l, r]) => (unquote(l), unquote(r)),
        Some([_]) => return Err("`topic` needs both a local and a remote prefix".into()),
        _ => ("", ""),
    };
    for (what, p) in [("local", local_prefix), ("remote", remote_prefix)] {
        // A prefix is the start of a topic name: no wildcards.
        if !p.is_empty() && (p.contains(['+', '#']) || !valid_topic_name(p)) {
            return Err(format!(
                "`topic` {what} prefix `{p}` is not a valid topic prefix"
            ));
        }
    }
    if pattern.is_empty() {
        // mosquitto: an empty pattern maps one exact topic, both prefixes.
        if local_prefix.is_empty() || remote_prefix.is_empty() {
            return Err("`topic \"\"` needs both a local and a remote prefix".into());
        }
    } else if !valid_topic_filter(pattern) {
        return Err(format!(
            "`topic` pattern `{pattern}` is not a valid topic filter"
        ));
    }
    let rule = TopicRule {
        pattern: pattern.to_string(),
        direction,
        qos,
        local_prefix: local_prefix.to_string(),
        remote_prefix: remote_prefix.to_string(),
    };
    for f in [rule.local_filter(), rule.remote_filter()] {
        if !valid_topic_filter(&f) {
            return Err(format!(
                "`topic` gives the filter `{f}`, which is not valid"
            ));
        }
    }
    Ok(rule)
}

/// This machine's host name (for the default remote client id, as mosquitto).
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is valid for `buf.len()` bytes; gethostname NUL-terminates
    // within it or truncates.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "midge".to_string();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(lines: &[(&str, &[&str])]) -> Result<BridgeConfig, String> {
        let mut b = BridgeConfig::new("b", PathBuf::from("t.conf"), 1);
        for (d, args) in lines {
            if !b.apply(d, args)? {
                return Err(format!("not a bridge directive: {d}"));
            }
        }
        Ok(b)
    }

    #[test]
    fn addresses_and_ports() {
        let b = section(&[
            ("address", &["a.example", "b:1884"]),
            ("addresses", &["[::1]:2000", "10.0.0.1"]),
        ])
        .expect("parse");
        let got: Vec<String> = b.addresses.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            ["a.example:1883", "b:1884", "[::1]:2000", "10.0.0.1:1883"]
        );
        assert!(section(&[("address", &["h:0"])]).is_err());
        assert!(section(&[("address", &["h:x"])]).is_err());
        assert!(section(&[("address", &[])]).is_err());
    }

    #[test]
    fn topic_lines_as_mosquitto() {
        let b = section(&[
            ("topic", &["#"]),
            ("topic", &["a/#", "in", "2"]),
            ("topic", &["x", "both", "1", "\"\"", "site42/"]),
            ("topic", &["\"\"", "out", "1", "local/t", "remote/t"]),
        ])
        .expect("parse");
        assert_eq!(b.topics[0].direction, Direction::Out);
        assert_eq!(b.topics[0].qos, QoS::AtMostOnce);
        assert_eq!(b.topics[1].qos, QoS::ExactlyOnce);
        assert_eq!(b.topics[2].remote_filter(), "site42/x");
        assert_eq!(b.topics[2].local_filter(), "x");
        assert_eq!(b.topics[3].local_filter(), "local/t");
        for bad in [
            &["a", "sideways"][..],
            &["a", "in", "3"],
            &["a", "in", "1", "p/"],
            &["\"\"", "in", "1", "\"\"", "r/"],
            &["a/#/b"],
            &["a", "in", "1", "p/#", "r/"],
            &[],
        ] {
            assert!(section(&[("topic", bad)]).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn defaults_and_values() {
        let b = section(&[("remote_clientid", &["edge1"])]).expect("parse");
        assert_eq!(b.local_id(), "local.edge1");
        assert_eq!(b.state_topic(), "$SYS/broker/connection/edge1/state");
        assert!(!b.local_clean());
        assert_eq!(b.keepalive_interval, 60);
        assert!(b.try_private && b.notifications && b.outgoing_retain);
        let b = section(&[
            ("restart_timeout", &["2"]),
            ("bridge_protocol_version", &["mqttv50"]),
            ("start_type", &["once"]),
            ("cleansession", &["true"]),
        ])
        .expect("parse");
        assert_eq!(b.restart_base, Duration::from_secs(2));
        assert_eq!(b.restart_cap, None);
        assert_eq!(b.protocol_version, ProtocolVersion::V5);
        assert_eq!(b.start_type, StartType::Once);
        assert!(b.local_clean());
        assert!(section(&[("restart_timeout", &["10", "5"])]).is_err());
        assert!(section(&[("bridge_protocol_version", &["mqttv4"])]).is_err());
        assert!(section(&[("keepalive_interval", &["2"])]).is_err());
        assert_eq!(
            section(&[("nonsense", &["1"])]),
            Err("not a bridge directive: nonsense".into())
        );
    }

    #[test]
    fn section_checks() {
        let b = section(&[("topic", &["#"])]).expect("parse");
        assert!(b.check().unwrap_err().contains("no `address`"));
        let b = section(&[("address", &["h"]), ("bridge_certfile", &["/c"])]).expect("parse");
        assert!(b.check().is_err());
        let b = section(&[("address", &["h"]), ("bridge_insecure", &["true"])]).expect("parse");
        assert!(b.check().unwrap_err().contains("bridge_cafile"));
        // The connection name makes the default remote id, hence a topic level.
        let mut b = BridgeConfig::new("site+1", PathBuf::from("t.conf"), 1);
        assert!(b.apply("address", &["h"]).expect("address"));
        assert!(b.check().unwrap_err().contains("set `remote_clientid`"));
        assert!(b.apply("remote_clientid", &["site1"]).expect("id"));
        assert_eq!(b.check(), Ok(()));
    }

    #[test]
    fn remote_client_id_is_a_topic_level() {
        // [MQTT-3.3.2-2] it is a level of `$SYS/broker/connection/<id>/state`.
        for bad in ["a+b", "#", "edge/#"] {
            for d in ["remote_clientid", "clientid"] {
                let e = section(&[(d, &[bad])]).expect_err(bad);
                assert!(e.contains("wildcard"), "{e}");
            }
        }
        // The local id is never in a topic.
        let b = section(&[("local_clientid", &["local+#"])]).expect("local id");
        assert_eq!(b.local_id(), "local+#");
    }
}
