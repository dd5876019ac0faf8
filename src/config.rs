//! The configuration file, in mosquitto's syntax: one `directive value...` per line,
//! `#` comments, `include_dir`. Unknown directives and bad values are errors that
//! name the file and line.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::broker::BrokerConfig;

/// One listening socket.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListenerConfig {
    /// TCP port.
    pub port: u16,
    /// Address or host name to bind; `None` = all interfaces (IPv4 and IPv6).
    pub bind_address: Option<String>,
    /// This listener's own authentication settings (used with `per_listener_settings true`).
    pub auth: AuthConfig,
    /// TLS settings; `None` = plain TCP.
    pub tls: Option<TlsConfig>,
    /// `protocol websockets`: MQTT over WebSockets (wss with TLS settings).
    pub websockets: bool,
}

impl ListenerConfig {
    /// A plain listener.
    pub fn new(port: u16, bind_address: Option<String>) -> Self {
        ListenerConfig {
            port,
            bind_address,
            ..ListenerConfig::default()
        }
    }
}

/// `allow_anonymous`, `password_file`, `acl_file`: global, or per listener.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuthConfig {
    /// `allow_anonymous`; `None` = mosquitto 2's default (false with listeners
    /// configured, true in local-only mode).
    pub allow_anonymous: Option<bool>,
    /// `password_file`.
    pub password_file: Option<PathBuf>,
    /// `acl_file`.
    pub acl_file: Option<PathBuf>,
}

/// A listener's TLS settings (mosquitto's names).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsConfig {
    /// `certfile`: PEM certificate chain.
    pub certfile: Option<PathBuf>,
    /// `keyfile`: PEM private key (PKCS#8 or traditional RSA/EC).
    pub keyfile: Option<PathBuf>,
    /// `cafile`: PEM CA certificates for client certificates.
    pub cafile: Option<PathBuf>,
    /// `capath`: directory of hashed CA certificates.
    pub capath: Option<PathBuf>,
    /// `tls_version`: the lowest version allowed (`tlsv1.2`, `tlsv1.3`).
    pub tls_version: Option<String>,
    /// `ciphers` (TLS 1.2 and below, OpenSSL cipher list).
    pub ciphers: Option<String>,
    /// `ciphers_tls1.3` (OpenSSL ciphersuites).
    pub ciphers_tls13: Option<String>,
    /// `crlfile`: PEM certificate revocation list.
    pub crlfile: Option<PathBuf>,
    /// `require_certificate`: clients must present a valid certificate.
    pub require_certificate: bool,
    /// `use_identity_as_username`: the certificate's CN is the user name.
    pub use_identity_as_username: bool,
    /// `use_subject_as_username`: the certificate's subject is the user name.
    pub use_subject_as_username: bool,
}

/// Where log lines go (`log_dest`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogDest {
    /// Standard output.
    Stdout,
    /// Standard error (the default, as mosquitto when run in the foreground).
    #[default]
    Stderr,
}

/// Default `websockets_headers_size`: mosquitto's libwebsockets default is
/// 1024, which a browser's request with a few cookies passes; 4 KiB leaves room
/// and still bounds what an unauthenticated peer makes the server hold.
pub const WEBSOCKETS_HEADERS_SIZE: usize = 4096;

/// The largest packet the protocol can express: remaining length 268,435,455
/// plus a five-byte fixed header (`max_packet_size 0`).
pub const PROTOCOL_MAX_PACKET: usize = 268_435_460;
/// `max_packet_size` when the file does not set it: what a gateway can afford
/// per connection, not the protocol's 256 MB.
pub const DEFAULT_MAX_PACKET_SIZE: usize = 1 << 20;
/// `max_connect_packet_size` default: a CONNECT needs a few hundred bytes (its
/// will payload and password are at most 64 KiB each, and rare).
pub const DEFAULT_MAX_CONNECT_PACKET_SIZE: usize = 64 << 10;

/// The whole configuration, with mosquitto's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `listener PORT [ADDRESS]` lines, plus the legacy `port`/`bind_address` listener.
    pub listeners: Vec<ListenerConfig>,
    /// `max_connections`; None = unlimited (-1).
    pub max_connections: Option<usize>,
    /// `max_inflight_messages` (default 20; 0 = unlimited).
    pub max_inflight_messages: u16,
    /// `max_queued_messages` (default 1000; 0 = unlimited).
    pub max_queued_messages: usize,
    /// `max_queued_bytes` (default 0 = unlimited).
    pub max_queued_bytes: usize,
    /// `queue_qos0_messages` (default false).
    pub queue_qos0_messages: bool,
    /// `message_size_limit` in bytes (default 0 = no limit).
    pub message_size_limit: usize,
    /// `max_packet_size` in bytes (default 1 MiB; 0 = the protocol maximum).
    pub max_packet_size: usize,
    /// `max_connect_packet_size` in bytes (midge; default 64 KiB; 0 = as
    /// `max_packet_size`): the largest packet accepted before CONNECT completes.
    pub max_connect_packet_size: usize,
    /// `max_user_properties` (midge; default 256; 0 = no limit): user properties
    /// (and subscription identifiers) in one property list of a packet.
    pub max_user_properties: usize,
    /// `max_filters_per_packet` (midge; default 1000; 0 = no limit): topic
    /// filters in one SUBSCRIBE or UNSUBSCRIBE.
    pub max_filters_per_packet: usize,
    /// `max_keepalive` seconds (default 65535).
    pub max_keepalive: u16,
    /// `allow_zero_length_clientid` (default true).
    pub allow_zero_length_clientid: bool,
    /// `persistent_client_expiration` (default: never).
    pub persistent_client_expiration: Option<Duration>,
    /// `retain_available` (default true).
    pub retain_available: bool,
    /// `retry_interval` seconds for 3.1/3.1.1 in-session retransmission (default off).
    pub retry_interval: Option<Duration>,
    /// `log_type` values given (`all`, `debug`, `error`, `warning`, `notice`,
    /// `information`, `subscribe`, `unsubscribe`, `none`); empty = default set.
    pub log_types: Vec<String>,
    /// `log_dest` (default stderr).
    pub log_dest: LogDest,
    /// `pid_file` (default none).
    pub pid_file: Option<PathBuf>,
    /// `max_topic_levels` (default 200, mosquitto's built-in limit; 0 = none).
    pub max_topic_levels: usize,
    /// `max_subscriptions_per_client` (default 10,000; 0 = none).
    pub max_subscriptions_per_client: usize,
    /// `max_retained_messages` (default 100,000; 0 = none, midge only).
    pub max_retained_messages: usize,
    /// `max_retained_bytes` (default 16 MiB; 0 = none, midge only): topic, payload
    /// and properties of every retained message plus 128 bytes each.
    pub max_retained_bytes: usize,
    /// `connect_timeout` seconds a socket may take to send CONNECT (default 10).
    pub connect_timeout: Duration,
    /// `websockets_headers_size`: most bytes of a WebSocket upgrade request
    /// (request line and headers).
    pub websockets_headers_size: usize,
    /// `max_topic_alias` (default 10): Topic Alias Maximum announced to v5 clients.
    pub max_topic_alias: u16,
    /// `outgoing_topic_aliases` (default true, midge only): alias repeated topics
    /// to v5 clients that accept aliases.
    pub outgoing_topic_aliases: bool,
    /// `response_information PREFIX` (midge only): answer Request Response
    /// Information with PREFIX + client id.
    pub response_information: Option<String>,
    /// Global `allow_anonymous`, `password_file`, `acl_file`.
    pub auth: AuthConfig,
    /// `per_listener_settings`: authentication per listener.
    pub per_listener_settings: bool,
    /// `persistence` (default false).
    pub persistence: bool,
    /// `persistence_location` directory (default: the working directory).
    pub persistence_location: Option<PathBuf>,
    /// `persistence_file` (default `midge.db`).
    pub persistence_file: String,
    /// `autosave_interval` seconds, for `persistence_sync periodic` (default 1800).
    pub autosave_interval: u64,
    /// `persistence_sync always|periodic` (midge; default always).
    pub persistence_sync_periodic: bool,
    /// `persistence_recover true`: start past a corrupt record, keeping what precedes it.
    pub persistence_recover: bool,
    /// `connection` sections: bridges to other brokers.
    pub bridges: Vec<crate::bridge::config::BridgeConfig>,
    /// No listener was configured: midge listens on loopback only (set by the
    /// command line; anonymous clients are then allowed, as in mosquitto 2).
    pub local_only: bool,
    /// `sys_interval` seconds between `$SYS` refreshes (default 10; 0 = no `$SYS`).
    pub sys_interval: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listeners: Vec::new(),
            max_connections: None,
            max_inflight_messages: 20,
            max_queued_messages: 1000,
            max_queued_bytes: 0,
            queue_qos0_messages: false,
            message_size_limit: 0,
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
            max_connect_packet_size: DEFAULT_MAX_CONNECT_PACKET_SIZE,
            max_user_properties: 256,
            max_filters_per_packet: 1000,
            max_keepalive: 65_535,
            allow_zero_length_clientid: true,
            persistent_client_expiration: None,
            retain_available: true,
            retry_interval: None,
            log_types: Vec::new(),
            log_dest: LogDest::Stderr,
            pid_file: None,
            max_topic_levels: 200,
            max_subscriptions_per_client: 10_000,
            max_retained_messages: 100_000,
            max_retained_bytes: 16 << 20,
            connect_timeout: Duration::from_secs(10),
            websockets_headers_size: WEBSOCKETS_HEADERS_SIZE,
            max_topic_alias: 10,
            outgoing_topic_aliases: true,
            response_information: None,
            auth: AuthConfig::default(),
            per_listener_settings: false,
            local_only: false,
            persistence: false,
            persistence_location: None,
            persistence_file: "midge.db".to_string(),
            autosave_interval: 1800,
            persistence_sync_periodic: false,
            persistence_recover: false,
            sys_interval: 10,
            bridges: Vec::new(),
        }
    }
}

/// A configuration error, located in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the error is in.
    pub file: PathBuf,
    /// 1-based line number; 0 when the error is about the file as a whole.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Read and parse the config file at `path` (following `include_dir`).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = read_file(path)?;
        Config::parse_str(&text, path)
    }

    /// Parse config text as if read from `file` (used by `load` and by tests/fuzzing).
    pub fn parse_str(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        let mut parser = Parser {
            config: &mut config,
            legacy_listener: None,
            depth: 0,
        };
        parser.parse(text, file)?;
        for b in &config.bridges {
            b.check().map_err(|message| ConfigError {
                file: b.file.clone(),
                line: b.line,
                message,
            })?;
        }
        for l in &config.listeners {
            if let Some(t) = &l.tls {
                if t.certfile.is_none() || t.keyfile.is_none() {
                    return Err(ConfigError {
                        file: file.to_path_buf(),
                        line: 0,
                        message: format!(
                            "listener {}: TLS needs both `certfile` and `keyfile`",
                            l.port
                        ),
                    });
                }
            }
        }
        Ok(config)
    }

    /// The broker's share of the settings.
    pub fn broker_config(&self) -> BrokerConfig {
        let defaults = BrokerConfig::default();
        BrokerConfig {
            max_inflight_messages: self.max_inflight_messages,
            max_queued_messages: self.max_queued_messages,
            max_queued_bytes: self.max_queued_bytes,
            queue_qos0_messages: self.queue_qos0_messages,
            message_size_limit: self.message_size_limit,
            max_packet_size: if self.max_packet_size == 0 {
                PROTOCOL_MAX_PACKET
            } else {
                self.max_packet_size
            },
            max_keepalive: self.max_keepalive,
            allow_zero_length_clientid: self.allow_zero_length_clientid,
            persistent_client_expiration: self.persistent_client_expiration,
            retain_available: self.retain_available,
            retry_interval: self.retry_interval,
            max_topic_levels: self.max_topic_levels,
            max_subscriptions_per_client: self.max_subscriptions_per_client,
            max_retained_messages: self.max_retained_messages,
            max_retained_bytes: self.max_retained_bytes,
            connect_timeout: self.connect_timeout,
            max_topic_alias: self.max_topic_alias,
            outgoing_topic_aliases: self.outgoing_topic_aliases,
            response_information: self.response_information.clone(),
            sys_interval: Duration::from_secs(self.sys_interval),
            ..defaults
        }
    }
}

fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: 0,
        message: format!("cannot read: {e}"),
    })
}

/// Directives mosquitto has that midge does not implement yet: named in the error
/// so a user moving a mosquitto.conf over knows it is a gap, not a typo.
const NOT_YET: &[&str] = &[
    "auth_plugin",
    "auth_opt_",
    "check_retain_source",
    "clientid_prefixes",
    "connection_messages",
    "http_dir",
    "listener_allow_anonymous",
    "log_facility",
    "log_timestamp",
    "log_timestamp_format",
    "mount_point",
    "persistent_client_expiration_",
    "plugin",
    "plugin_opt_",
    "psk_file",
    "psk_hint",
    "set_tcp_nodelay",
    "socket_domain",
    "upgrade_outgoing_qos",
    "use_username_as_clientid",
    "user",
    "websockets_log_level",
];

/// Nesting limit for `include_dir` (a directory that includes itself).
const MAX_INCLUDE_DEPTH: usize = 8;

struct Parser<'c> {
    config: &'c mut Config,
    /// Index in `listeners` of the one made by `port`/`bind_address`.
    legacy_listener: Option<usize>,
    depth: usize,
}

/// One directive's arguments, with what is needed to report errors.
struct Line<'a> {
    file: &'a Path,
    number: usize,
    directive: &'a str,
    args: Vec<&'a str>,
}

impl Line<'_> {
    fn error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            line: self.number,
            message: message.into(),
        }
    }

    /// Exactly one argument.
    fn one(&self) -> Result<&str, ConfigError> {
        match self.args.as_slice() {
            [v] => Ok(v),
            [] => Err(self.error(format!("`{}` needs a value", self.directive))),
            _ => Err(self.error(format!("`{}` takes one value", self.directive))),
        }
    }

    fn number<T>(&self, min: T, max: T) -> Result<T, ConfigError>
    where
        T: std::str::FromStr + PartialOrd + fmt::Display + Copy,
    {
        let v = self.one()?;
        match v.parse::<T>() {
            Ok(n) if n >= min && n <= max => Ok(n),
            _ => Err(self.error(format!(
                "`{}` expects a number from {min} to {max}, got `{v}`",
                self.directive
            ))),
        }
    }

    fn boolean(&self) -> Result<bool, ConfigError> {
        match self.one()? {
            "true" => Ok(true),
            "false" => Ok(false),
            v => Err(self.error(format!(
                "`{}` expects true or false, got `{v}`",
                self.directive
            ))),
        }
    }
}

impl Parser<'_> {
    fn parse(&mut self, text: &str, file: &Path) -> Result<(), ConfigError> {
        for (i, raw) in text.lines().enumerate() {
            let trimmed = raw.trim();
            // As in mosquitto, `#` comments whole lines only.
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let mut words = trimmed.split_whitespace();
            let Some(directive) = words.next() else {
                continue;
            };
            let line = Line {
                file,
                number: i + 1,
                directive,
                args: words.collect(),
            };
            self.directive(&line)?;
        }
        Ok(())
    }

    fn directive(&mut self, line: &Line<'_>) -> Result<(), ConfigError> {
        let c = &mut *self.config;
        // After `connection`, bridge directives belong to that section (mosquitto).
        if crate::bridge::config::is_bridge_directive(line.directive) {
            let Some(b) = c.bridges.last_mut() else {
                return Err(line.error(format!(
                    "`{}` must follow a `connection` line",
                    line.directive
                )));
            };
            return match b.apply(line.directive, &line.args) {
                Ok(true) => Ok(()),
                Ok(false) => Err(line.error(format!(
                    "`{}` is not supported by midge yet",
                    line.directive
                ))),
                Err(m) => Err(line.error(m)),
            };
        }
        match line.directive {
            "connection" => {
                let name = line.one()?;
                if c.bridges.iter().any(|b| b.name == name) {
                    return Err(line.error(format!("bridge `{name}` is defined twice")));
                }
                c.bridges.push(crate::bridge::config::BridgeConfig::new(
                    name,
                    line.file.to_path_buf(),
                    line.number,
                ));
            }
            "listener" => {
                let (port, bind) = match line.args.as_slice() {
                    [p] => (*p, None),
                    [p, a] => (*p, Some(a.to_string())),
                    [] => return Err(line.error("`listener` needs a port")),
                    _ => return Err(line.error("`listener` takes a port and an optional address")),
                };
                let port = parse_port(line, port)?;
                c.listeners.push(ListenerConfig::new(port, bind));
            }
            "port" => {
                let port = parse_port(line, line.one()?)?;
                self.legacy().port = port;
            }
            "bind_address" => {
                let addr = line.one()?.to_string();
                self.legacy().bind_address = Some(addr);
            }
            "max_connections" => {
                let n: i64 = line.number(-1, i64::from(u32::MAX))?;
                c.max_connections = usize::try_from(n).ok();
            }
            "max_inflight_messages" => c.max_inflight_messages = line.number(0, u16::MAX)?,
            "max_queued_messages" => c.max_queued_messages = line.number(0, usize::MAX)?,
            "max_queued_bytes" => c.max_queued_bytes = line.number(0, usize::MAX)?,
            "queue_qos0_messages" => c.queue_qos0_messages = line.boolean()?,
            "message_size_limit" => c.message_size_limit = line.number(0, 268_435_455)?,
            "max_packet_size" => {
                let n: usize = line.number(0, 268_435_460)?;
                if n != 0 && n < 20 {
                    return Err(line.error("`max_packet_size` must be 0 or at least 20"));
                }
                c.max_packet_size = n;
            }
            "max_connect_packet_size" => {
                let n: usize = line.number(0, 268_435_460)?;
                if n != 0 && n < 20 {
                    return Err(line.error("`max_connect_packet_size` must be 0 or at least 20"));
                }
                c.max_connect_packet_size = n;
            }
            "max_user_properties" => c.max_user_properties = line.number(0, usize::MAX)?,
            "max_filters_per_packet" => c.max_filters_per_packet = line.number(0, usize::MAX)?,
            "max_keepalive" => c.max_keepalive = line.number(0, u16::MAX)?,
            "allow_zero_length_clientid" => c.allow_zero_length_clientid = line.boolean()?,
            "persistent_client_expiration" => {
                c.persistent_client_expiration = Some(parse_expiration(line)?)
            }
            "retain_available" => c.retain_available = line.boolean()?,
            "retry_interval" => {
                let secs: u64 = line.number(0, 86_400)?;
                c.retry_interval = (secs > 0).then(|| Duration::from_secs(secs));
            }
            "include_dir" => self.include_dir(line)?,
            "log_type" => {
                let t = line.one()?;
                const TYPES: &[&str] = &[
                    "all",
                    "debug",
                    "error",
                    "warning",
                    "notice",
                    "information",
                    "subscribe",
                    "unsubscribe",
                    "websockets",
                    "none",
                ];
                if !TYPES.contains(&t) {
                    return Err(line.error(format!(
                        "`log_type` expects one of {}, got `{t}`",
                        TYPES.join(", ")
                    )));
                }
                c.log_types.push(t.to_string());
            }
            "log_dest" => {
                c.log_dest = match line.args.first().copied() {
                    Some("stdout") => LogDest::Stdout,
                    Some("stderr") => LogDest::Stderr,
                    Some(d @ ("file" | "syslog" | "topic" | "dlt")) => {
                        return Err(line.error(format!(
                            "`log_dest {d}` is not supported by midge yet (use stdout or stderr)"
                        )))
                    }
                    Some(d) => {
                        return Err(
                            line.error(format!("`log_dest` expects stdout or stderr, got `{d}`"))
                        )
                    }
                    None => return Err(line.error("`log_dest` needs a value")),
                }
            }
            "pid_file" => c.pid_file = Some(PathBuf::from(line.one()?)),
            "allow_anonymous" => {
                let v = line.boolean()?;
                self.auth_target(|a| a.allow_anonymous = Some(v));
            }
            "password_file" => {
                let p = PathBuf::from(line.one()?);
                self.auth_target(|a| a.password_file = Some(p.clone()));
            }
            "acl_file" => {
                let p = PathBuf::from(line.one()?);
                self.auth_target(|a| a.acl_file = Some(p.clone()));
            }
            "per_listener_settings" => {
                if !c.listeners.is_empty() {
                    return Err(
                        line.error("`per_listener_settings` must come before the first listener")
                    );
                }
                c.per_listener_settings = line.boolean()?;
            }
            "protocol" => {
                let websockets = match line.one()? {
                    "mqtt" => false,
                    "websockets" => true,
                    other => {
                        return Err(line.error(format!(
                            "`protocol` expects mqtt or websockets, got `{other}`"
                        )))
                    }
                };
                match c.listeners.last_mut() {
                    Some(l) => l.websockets = websockets,
                    None => return Err(line.error("`protocol` must follow a `listener` line")),
                }
            }
            "websockets_headers_size" => {
                let n: usize = line.number(0, 65_536)?;
                c.websockets_headers_size = if n == 0 { WEBSOCKETS_HEADERS_SIZE } else { n };
            }
            "certfile" | "keyfile" | "cafile" | "capath" | "crlfile" => {
                let p = PathBuf::from(line.one()?);
                let t = self.tls(line)?;
                match line.directive {
                    "certfile" => t.certfile = Some(p),
                    "keyfile" => t.keyfile = Some(p),
                    "cafile" => t.cafile = Some(p),
                    "capath" => t.capath = Some(p),
                    _ => t.crlfile = Some(p),
                }
            }
            "tls_version" => {
                let v = line.one()?;
                if !matches!(v, "tlsv1.2" | "tlsv1.3") {
                    return Err(line.error(format!(
                        "`tls_version` expects tlsv1.2 or tlsv1.3, got `{v}`"
                    )));
                }
                self.tls(line)?.tls_version = Some(v.to_string());
            }
            "ciphers" => {
                let v = line.one()?.to_string();
                self.tls(line)?.ciphers = Some(v);
            }
            "ciphers_tls1.3" => {
                let v = line.one()?.to_string();
                self.tls(line)?.ciphers_tls13 = Some(v);
            }
            "require_certificate" | "use_identity_as_username" | "use_subject_as_username" => {
                let v = line.boolean()?;
                let t = self.tls(line)?;
                match line.directive {
                    "require_certificate" => t.require_certificate = v,
                    "use_identity_as_username" => t.use_identity_as_username = v,
                    _ => t.use_subject_as_username = v,
                }
            }
            "persistence" => c.persistence = line.boolean()?,
            "persistence_location" => c.persistence_location = Some(PathBuf::from(line.one()?)),
            "persistence_file" => {
                let f = line.one()?;
                if f.contains('/') {
                    return Err(line.error("`persistence_file` is a file name; put the directory in `persistence_location`"));
                }
                c.persistence_file = f.to_string();
            }
            "autosave_interval" => c.autosave_interval = line.number(1, 86_400 * 365)?,
            // Accepted for mosquitto configs: midge writes changes as they
            // happen, so there is no change count to wait for.
            "autosave_on_changes" => {
                line.boolean()?;
            }
            "persistence_sync" => {
                c.persistence_sync_periodic = match line.one()? {
                    "always" => false,
                    "periodic" => true,
                    v => {
                        return Err(line.error(format!(
                            "`persistence_sync` expects always or periodic, got `{v}`"
                        )))
                    }
                }
            }
            "persistence_recover" => c.persistence_recover = line.boolean()?,
            "max_topic_levels" => c.max_topic_levels = line.number(0, 65_535)?,
            "max_subscriptions_per_client" => {
                c.max_subscriptions_per_client = line.number(0, usize::MAX)?
            }
            "max_retained_messages" => c.max_retained_messages = line.number(0, usize::MAX)?,
            "max_retained_bytes" => c.max_retained_bytes = line.number(0, usize::MAX)?,
            "connect_timeout" => {
                c.connect_timeout = Duration::from_secs(line.number(1, 3600)?);
            }
            "max_topic_alias" => c.max_topic_alias = line.number(0, u16::MAX)?,
            "sys_interval" => c.sys_interval = line.number(0, 65_535)?,
            "outgoing_topic_aliases" => c.outgoing_topic_aliases = line.boolean()?,
            "response_information" => c.response_information = Some(line.one()?.to_string()),
            d if NOT_YET
                .iter()
                .any(|n| d == *n || (n.ends_with('_') && d.starts_with(n))) =>
            {
                return Err(line.error(format!("`{d}` is not supported by midge yet")));
            }
            d => return Err(line.error(format!("unknown directive `{d}`"))),
        }
        Ok(())
    }

    /// Apply an authentication setting where it belongs: the global settings,
    /// and the current listener's (which count with `per_listener_settings`).
    fn auth_target(&mut self, f: impl Fn(&mut AuthConfig)) {
        f(&mut self.config.auth);
        if self.config.per_listener_settings {
            if let Some(l) = self.config.listeners.last_mut() {
                f(&mut l.auth);
            }
        }
    }

    /// The TLS settings of the listener defined last.
    fn tls(&mut self, line: &Line<'_>) -> Result<&mut TlsConfig, ConfigError> {
        match self.config.listeners.last_mut() {
            Some(l) => Ok(l.tls.get_or_insert_with(TlsConfig::default)),
            None => Err(line.error(format!(
                "`{}` must follow a `listener` line",
                line.directive
            ))),
        }
    }

    /// The listener `port`/`bind_address` configure, created on first use with
    /// mosquitto's default port.
    fn legacy(&mut self) -> &mut ListenerConfig {
        let index = match self.legacy_listener {
            Some(i) => i,
            None => {
                self.config.listeners.push(ListenerConfig::new(1883, None));
                let i = self.config.listeners.len() - 1;
                self.legacy_listener = Some(i);
                i
            }
        };
        &mut self.config.listeners[index]
    }

    fn include_dir(&mut self, line: &Line<'_>) -> Result<(), ConfigError> {
        let dir = Path::new(line.one()?);
        if self.depth >= MAX_INCLUDE_DEPTH {
            return Err(line.error("`include_dir` nested too deeply"));
        }
        let entries = std::fs::read_dir(dir)
            .map_err(|e| line.error(format!("cannot read directory {}: {e}", dir.display())))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "conf") && p.is_file())
            .collect();
        // mosquitto reads them in name order, so the result does not depend on
        // the file system's order.
        files.sort();
        self.depth += 1;
        for f in files {
            let text = read_file(&f)?;
            self.parse(&text, &f)?;
        }
        self.depth -= 1;
        Ok(())
    }
}

fn parse_port(line: &Line<'_>, v: &str) -> Result<u16, ConfigError> {
    v.parse::<u16>().map_err(|_| {
        line.error(format!(
            "`{}` expects a port from 0 to 65535, got `{v}`",
            line.directive
        ))
    })
}

/// mosquitto's duration syntax: a number and a unit, h(ours), d(ays), w(eeks),
/// m(onths, 30 days) or y(ears, 365 days).
fn parse_expiration(line: &Line<'_>) -> Result<Duration, ConfigError> {
    let v = line.one()?;
    let bad = || {
        line.error(format!(
            "`persistent_client_expiration` expects a number and a unit (h, d, w, m or y), got `{v}`"
        ))
    };
    let unit = v.chars().last().ok_or_else(bad)?;
    let hours: u64 = match unit {
        'h' => 1,
        'd' => 24,
        'w' => 24 * 7,
        'm' => 24 * 30,
        'y' => 24 * 365,
        _ => return Err(bad()),
    };
    let n: u64 = v[..v.len() - 1].parse().map_err(|_| bad())?;
    let secs = n.checked_mul(hours * 3600).ok_or_else(bad)?;
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse_str(text, Path::new("t.conf"))
    }

    fn err(text: &str) -> String {
        match parse(text) {
            Ok(c) => panic!("accepted {text:?}: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn empty_file_gives_mosquitto_defaults() {
        let c = parse("# nothing\n\n   \n").expect("parse");
        assert_eq!(c, Config::default());
        let b = c.broker_config();
        assert_eq!(b.max_inflight_messages, 20);
        assert_eq!(b.max_queued_messages, 1000);
        assert_eq!(b.max_packet_size, 1 << 20);
        assert_eq!(c.max_connect_packet_size, 64 << 10);
        // An explicit 0 is the protocol maximum.
        let c = parse("max_packet_size 0\n").expect("parse");
        assert_eq!(c.broker_config().max_packet_size, 268_435_460);
    }

    #[test]
    fn retained_limits() {
        let c = Config::default().broker_config();
        assert_eq!(c.max_retained_messages, 100_000);
        assert_eq!(c.max_retained_bytes, 16 << 20);
        let c = parse("max_retained_messages 10\nmax_retained_bytes 0\n").expect("parse");
        assert_eq!(c.max_retained_messages, 10);
        assert_eq!(c.max_retained_bytes, 0);
        assert!(err("\nmax_retained_bytes -1\n").contains("t.conf:2"));
    }

    #[test]
    fn every_directive() {
        let c = parse(
            "listener 1883\nlistener 8883 127.0.0.1\nmax_connections 100\n\
             max_inflight_messages 5\nmax_queued_messages 7\nmax_queued_bytes 4096\n\
             queue_qos0_messages true\nmessage_size_limit 1000\nmax_packet_size 2048\n\
             max_connect_packet_size 512\nmax_user_properties 9\nmax_filters_per_packet 7\n\
             max_keepalive 120\nallow_zero_length_clientid false\n\
             persistent_client_expiration 2d\nretain_available false\nretry_interval 20\n\
             log_type error\nlog_type all\nlog_dest stdout\npid_file /run/midge.pid\n\
             sys_interval 0\n",
        )
        .expect("parse");
        assert_eq!(
            c.listeners,
            vec![
                ListenerConfig::new(1883, None),
                ListenerConfig::new(8883, Some("127.0.0.1".into()))
            ]
        );
        assert_eq!(c.max_connections, Some(100));
        assert_eq!(c.max_inflight_messages, 5);
        assert_eq!(c.max_queued_messages, 7);
        assert_eq!(c.max_queued_bytes, 4096);
        assert!(c.queue_qos0_messages);
        assert_eq!(c.message_size_limit, 1000);
        assert_eq!(c.max_packet_size, 2048);
        assert_eq!(c.max_connect_packet_size, 512);
        assert_eq!(c.max_user_properties, 9);
        assert_eq!(c.max_filters_per_packet, 7);
        assert_eq!(c.max_keepalive, 120);
        assert!(!c.allow_zero_length_clientid);
        assert_eq!(
            c.persistent_client_expiration,
            Some(Duration::from_secs(2 * 86_400))
        );
        assert!(!c.retain_available);
        assert_eq!(c.retry_interval, Some(Duration::from_secs(20)));
        assert_eq!(c.log_types, vec!["error", "all"]);
        assert_eq!(c.log_dest, LogDest::Stdout);
        assert_eq!(c.pid_file, Some(PathBuf::from("/run/midge.pid")));
        let b = c.broker_config();
        assert_eq!(b.max_packet_size, 2048);
        assert!(!b.retain_available);
        assert_eq!(b.sys_interval, Duration::ZERO);
    }

    #[test]
    fn legacy_port_and_bind_address_make_one_listener() {
        let c = parse("bind_address 127.0.0.1\nport 1884\n").expect("parse");
        assert_eq!(
            c.listeners,
            vec![ListenerConfig::new(1884, Some("127.0.0.1".into()))]
        );
        let c = parse("max_connections -1\n").expect("parse");
        assert_eq!(c.max_connections, None);
    }

    #[test]
    fn errors_name_file_line_and_reason() {
        assert_eq!(
            err("listener 1883\n\nbogus 1\n"),
            "t.conf:3: unknown directive `bogus`"
        );
        assert_eq!(
            err("max_inflight_messages abc"),
            "t.conf:1: `max_inflight_messages` expects a number from 0 to 65535, got `abc`"
        );
        assert_eq!(
            err("max_inflight_messages 70000"),
            "t.conf:1: `max_inflight_messages` expects a number from 0 to 65535, got `70000`"
        );
        assert_eq!(
            err("queue_qos0_messages yes"),
            "t.conf:1: `queue_qos0_messages` expects true or false, got `yes`"
        );
        assert_eq!(
            err("retain_available"),
            "t.conf:1: `retain_available` needs a value"
        );
        assert_eq!(
            err("max_keepalive 1 2"),
            "t.conf:1: `max_keepalive` takes one value"
        );
        assert_eq!(
            err("listener 99999"),
            "t.conf:1: `listener` expects a port from 0 to 65535, got `99999`"
        );
        assert_eq!(
            err("sys_interval -1"),
            "t.conf:1: `sys_interval` expects a number from 0 to 65535, got `-1`"
        );
        assert!(err("persistence_sync sometimes").contains("always or periodic"));
        assert_eq!(
            err("certfile /x.pem"),
            "t.conf:1: `certfile` must follow a `listener` line"
        );
        assert!(err("listener 8883\ncertfile /x.pem").contains("TLS needs both"));
        assert!(err("listener 1\nper_listener_settings true").contains("before the first listener"));
        assert!(err("listener 8883\ntls_version tlsv1.0").contains("tlsv1.2 or tlsv1.3"));
        assert_eq!(
            err("bridge_protocol_version mqttv311"),
            "t.conf:1: `bridge_protocol_version` must follow a `connection` line"
        );
        assert!(err("log_dest syslog").contains("not supported by midge yet"));
        assert!(err("log_type loud").contains("`log_type` expects one of"));
        assert!(err("persistent_client_expiration 5").contains("a number and a unit"));
        assert!(err("persistent_client_expiration xd").contains("a number and a unit"));
        assert!(err("max_packet_size 10").contains("at least 20"));
        assert!(err("max_connect_packet_size 19").contains("at least 20"));
    }

    #[test]
    fn security_directives() {
        let c = parse(
            "per_listener_settings true\nlistener 1883\nallow_anonymous true\n\
             listener 8883\ncertfile /c.pem\nkeyfile /k.pem\ncafile /ca.pem\n\
             require_certificate true\nuse_identity_as_username true\ntls_version tlsv1.3\n\
             password_file /pw\nacl_file /acl\n",
        )
        .expect("parse");
        assert!(c.per_listener_settings);
        assert_eq!(c.listeners[0].auth.allow_anonymous, Some(true));
        assert!(c.listeners[0].tls.is_none());
        let t = c.listeners[1].tls.as_ref().expect("tls");
        assert!(t.require_certificate && t.use_identity_as_username);
        assert_eq!(t.tls_version.as_deref(), Some("tlsv1.3"));
        assert_eq!(
            c.listeners[1].auth.password_file,
            Some(PathBuf::from("/pw"))
        );
        assert_eq!(c.listeners[1].auth.acl_file, Some(PathBuf::from("/acl")));
        assert_eq!(c.listeners[1].auth.allow_anonymous, None);
    }

    #[test]
    fn expiration_units() {
        for (v, secs) in [
            ("1h", 3600),
            ("3d", 3 * 86_400),
            ("1w", 7 * 86_400),
            ("2m", 60 * 86_400),
            ("1y", 365 * 86_400),
        ] {
            let c = parse(&format!("persistent_client_expiration {v}")).expect("parse");
            assert_eq!(
                c.persistent_client_expiration,
                Some(Duration::from_secs(secs))
            );
        }
    }

    #[test]
    fn include_dir_reads_conf_files_in_order_and_locates_errors() {
        let dir = std::env::temp_dir().join(format!("midge-include-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("b.conf"), "max_queued_messages 9\n").expect("write");
        std::fs::write(dir.join("a.conf"), "max_queued_messages 8\nlistener 1900\n")
            .expect("write");
        std::fs::write(dir.join("ignored.txt"), "garbage\n").expect("write");
        let c = parse(&format!("include_dir {}\n", dir.display())).expect("parse");
        assert_eq!(c.max_queued_messages, 9, "b.conf is read after a.conf");
        assert_eq!(c.listeners.len(), 1);
        std::fs::write(dir.join("c.conf"), "\nnope\n").expect("write");
        let e = parse(&format!("include_dir {}\n", dir.display())).expect_err("bad include");
        assert_eq!(e.file, dir.join("c.conf"));
        assert_eq!(e.line, 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn arbitrary_text_never_panics() {
        for text in [
            "\u{0}",
            "listener",
            "port \u{FFFF}",
            "persistent_client_expiration é",
            "#\n\t\r\n x",
        ] {
            let _ = parse(text);
        }
    }
}
