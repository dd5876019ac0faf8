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
    /// `http_dir DIR` (websockets listeners): plain HTTP GETs are answered
    /// with the files under DIR.
    pub http_dir: Option<PathBuf>,
    /// `http_live_view false` (midge; websockets listeners without
    /// `http_dir`): `GET /` is a 404 instead of the built-in live view.
    pub no_live_view: bool,
    /// `socket_domain ipv4|ipv6`: only that family when binding all interfaces
    /// or a name with addresses of both.
    pub socket_domain: Option<SocketDomain>,
    /// `bind_interface NAME`: SO_BINDTODEVICE, clients only through that interface.
    pub bind_interface: Option<String>,
    /// A listener midge adds itself (`::1` in local-only mode): failing to bind
    /// it is a warning, not a fatal error (a host without IPv6).
    pub optional: bool,
    /// What clients of this listener may do (`max_qos`, `mount_point`,
    /// `use_username_as_clientid`).
    pub options: ListenerOptions,
}

/// mosquitto's per-listener MQTT options. They apply per listener whatever
/// `per_listener_settings` says (mosquitto.conf(5) lists them under
/// Listeners); given before the first `listener` line, they belong to
/// mosquitto's default listener (the `port` one, or the local-only ones).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListenerOptions {
    /// `max_qos 0|1|2`: the highest QoS its clients may publish and be
    /// granted; `None` = 2.
    pub max_qos: Option<u8>,
    /// `mount_point PREFIX`: put in front of every topic and filter of its
    /// clients, taken off what they are sent.
    pub mount_point: Option<String>,
    /// `use_username_as_clientid`: the user name replaces the client id.
    pub use_username_as_clientid: bool,
}

/// `socket_domain`'s values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketDomain {
    /// `ipv4`.
    V4,
    /// `ipv6`.
    V6,
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
    /// `psk_file`: `identity:hexkey` lines for TLS-PSK listeners (`psk_hint`).
    pub psk_file: Option<PathBuf>,
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
    /// `dhparamfile`: PEM Diffie-Hellman parameters for DHE cipher suites.
    pub dhparamfile: Option<PathBuf>,
    /// `psk_hint`: this listener accepts TLS-PSK (keys from `psk_file`) and
    /// sends this hint; without `certfile` it speaks TLS-PSK only.
    pub psk_hint: Option<String>,
}

/// One place log lines go (`log_dest`; several may be given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogDest {
    /// Standard output.
    Stdout,
    /// Standard error (the default, as mosquitto when run in the foreground).
    Stderr,
    /// `file PATH`: appended to, reopened on SIGHUP (logrotate).
    File(PathBuf),
    /// `syslog`, with `log_facility`.
    Syslog,
    /// `topic`: published to `$SYS/broker/log/<type letter>`.
    Topic,
}

/// What a build without the `tls` cargo feature says of a TLS directive.
pub const NO_TLS: &str = "midge was built without TLS";

/// The refusal of `directive` in a build with or without TLS (`tls_built`):
/// `None` unless it is one of [`crate::directives::NEEDS_TLS`] and TLS is not built in.
fn tls_refusal(directive: &str, tls_built: bool) -> Option<String> {
    (!tls_built && crate::directives::NEEDS_TLS.contains(&directive))
        .then(|| format!("{directive}: {NO_TLS}"))
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
    /// `log_dest` lines (default: stderr; `log_dest none` empties it).
    pub log_dests: Vec<LogDest>,
    /// `log_timestamp` (default true).
    pub log_timestamp: bool,
    /// `log_timestamp_format` (strftime; default: Unix seconds).
    pub log_timestamp_format: Option<String>,
    /// `log_facility N`: syslog's LOG_LOCALN (default: LOG_DAEMON).
    pub log_facility: Option<u8>,
    /// `connection_messages` (default true): log clients connecting and leaving.
    pub connection_messages: bool,
    /// `auto_id_prefix` (default `auto-`): start of generated client ids.
    pub auto_id_prefix: String,
    /// `clientid_prefixes`: only client ids starting with it may connect.
    pub clientid_prefixes: Option<String>,
    /// `user`: the account to run as when started as root.
    pub user: Option<String>,
    /// `pid_file` (default none).
    pub pid_file: Option<PathBuf>,
    /// `max_topic_levels` (default 201: mosquitto allows 200 `/` separators; 0 = none).
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
    /// `max_inflight_bytes` (default 0 = no limit): payload bytes of outgoing
    /// QoS 1/2 messages in flight to one client.
    pub max_inflight_bytes: usize,
    /// `memory_limit` bytes of heap (default 0 = none): above it new QoS 1/2
    /// PUBLISHes are refused and QoS 0 ones dropped (see README "Limits").
    pub memory_limit: u64,
    /// `check_retain_source` (default true, as mosquitto): a retained message
    /// is sent to a new subscriber only while its publisher may still write it.
    pub check_retain_source: bool,
    /// `upgrade_outgoing_qos` (default false): deliver at the subscription's
    /// QoS, not the lower of it and the message's (outside the MQTT spec).
    pub upgrade_outgoing_qos: bool,
    /// Listener options given before the first `listener` line: mosquitto's
    /// default listener (used by the `port` listener and local-only mode).
    pub default_listener: ListenerOptions,
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
            log_dests: vec![LogDest::Stderr],
            log_timestamp: true,
            log_timestamp_format: None,
            log_facility: None,
            connection_messages: true,
            auto_id_prefix: "auto-".to_string(),
            clientid_prefixes: None,
            user: None,
            pid_file: None,
            max_topic_levels: 201,
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
            max_inflight_bytes: 0,
            memory_limit: 0,
            check_retain_source: true,
            upgrade_outgoing_qos: false,
            default_listener: ListenerOptions::default(),
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
    /// Read and parse the config file at `path` (following `include_dir`); the
    /// first error.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_all(path).map_err(first)
    }

    /// Read and parse the config file at `path`, reporting every error in it
    /// (`--test-config`), each with its file and line.
    pub fn load_all(path: &Path) -> Result<Config, Vec<ConfigError>> {
        let text = read_file(path).map_err(|e| vec![e])?;
        Config::parse_all(&text, path)
    }

    /// Parse config text as if read from `file` (used by `load` and by tests/fuzzing).
    pub fn parse_str(text: &str, file: &Path) -> Result<Config, ConfigError> {
        Config::parse_all(text, file).map_err(first)
    }

    /// Parse config text, going on past bad lines so that all errors are found.
    pub fn parse_all(text: &str, file: &Path) -> Result<Config, Vec<ConfigError>> {
        let mut config = Config::default();
        let mut parser = Parser {
            config: &mut config,
            legacy_listener: None,
            depth: 0,
            errors: Vec::new(),
            log_dest_seen: false,
        };
        parser.parse(text, file);
        let mut errors = parser.errors;
        for b in &config.bridges {
            if let Err(message) = b.check() {
                errors.push(ConfigError {
                    file: b.file.clone(),
                    line: b.line,
                    message,
                });
            }
        }
        for (index, l) in config.listeners.iter().enumerate() {
            let Some(t) = &l.tls else {
                continue;
            };
            let message = if t.psk_hint.is_some() {
                if config.psk_file(index).is_none() {
                    Some("`psk_hint` needs a `psk_file` to take the keys from")
                } else if t.certfile.is_some() != t.keyfile.is_some() {
                    Some("TLS with certificates needs both `certfile` and `keyfile`")
                } else {
                    None
                }
            } else if t.certfile.is_none() || t.keyfile.is_none() {
                Some("TLS needs both `certfile` and `keyfile` (or `psk_hint` and `psk_file` for TLS-PSK)")
            } else {
                None
            };
            if let Some(m) = message {
                errors.push(ConfigError {
                    file: file.to_path_buf(),
                    line: 0,
                    message: format!("listener {}: {m}", l.port),
                });
            }
        }
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(errors)
        }
    }

    /// Make every relative path absolute against `base` (the working directory
    /// at start): `-d` moves to `/`, and a path must mean what it meant when
    /// the user typed the command.
    pub fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        let fix_auth = |a: &mut AuthConfig| {
            a.password_file.as_mut().map(fix);
            a.acl_file.as_mut().map(fix);
            a.psk_file.as_mut().map(fix);
        };
        fix_auth(&mut self.auth);
        for l in &mut self.listeners {
            fix_auth(&mut l.auth);
            l.http_dir.as_mut().map(fix);
            if let Some(t) = &mut l.tls {
                for p in [
                    &mut t.certfile,
                    &mut t.keyfile,
                    &mut t.cafile,
                    &mut t.capath,
                    &mut t.crlfile,
                    &mut t.dhparamfile,
                ] {
                    p.as_mut().map(fix);
                }
            }
        }
        self.pid_file.as_mut().map(fix);
        // No `persistence_location`: the working directory at start, as mosquitto.
        fix(self.persistence_location.get_or_insert_with(PathBuf::new));
        for d in &mut self.log_dests {
            if let LogDest::File(p) = d {
                fix(p);
            }
        }
    }

    /// The `psk_file` listener `index` takes its keys from: its own with
    /// `per_listener_settings`, else the global one (as `password_file`).
    pub fn psk_file(&self, index: usize) -> Option<&Path> {
        let auth = match self.listeners.get(index) {
            Some(l) if self.per_listener_settings => &l.auth,
            _ => &self.auth,
        };
        auth.psk_file.as_deref()
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
            connection_messages: self.connection_messages,
            auto_id_prefix: self.auto_id_prefix.clone(),
            clientid_prefixes: self.clientid_prefixes.clone(),
            max_inflight_bytes: self.max_inflight_bytes,
            check_retain_source: self.check_retain_source,
            upgrade_outgoing_qos: self.upgrade_outgoing_qos,
            listeners: self.listeners.iter().map(|l| l.options.clone()).collect(),
            ..defaults
        }
    }
}

/// The first of a non-empty list of errors.
fn first(mut errors: Vec<ConfigError>) -> ConfigError {
    if errors.is_empty() {
        // Callers only pass non-empty lists; say so rather than panic.
        ConfigError {
            file: PathBuf::new(),
            line: 0,
            message: "invalid configuration".to_string(),
        }
    } else {
        errors.swap_remove(0)
    }
}

fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: 0,
        message: format!("cannot read: {e}"),
    })
}

/// Nesting limit for `include_dir` (a directory that includes itself).
const MAX_INCLUDE_DEPTH: usize = 8;

struct Parser<'c> {
    config: &'c mut Config,
    /// Index in `listeners` of the one made by `port`/`bind_address`.
    legacy_listener: Option<usize>,
    depth: usize,
    /// Every error found so far (parsing goes on past a bad line).
    errors: Vec<ConfigError>,
    /// A `log_dest` line was read: the default (stderr) no longer applies.
    log_dest_seen: bool,
}

/// One directive's arguments, with what is needed to report errors.
struct Line<'a> {
    file: &'a Path,
    number: usize,
    directive: &'a str,
    args: Vec<&'a str>,
    /// Everything after the directive, trailing comment removed (values that
    /// may hold spaces, as `log_timestamp_format`).
    rest: &'a str,
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
    fn parse(&mut self, text: &str, file: &Path) {
        for (i, raw) in text.lines().enumerate() {
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let (directive, rest) = match trimmed.split_once(char::is_whitespace) {
                Some((d, r)) => (d, r.trim_start()),
                None => (trimmed, ""),
            };
            let rest = strip_trailing_comment(directive, rest);
            let line = Line {
                file,
                number: i + 1,
                directive,
                args: rest.split_whitespace().collect(),
                rest,
            };
            if let Err(e) = self.directive(&line) {
                self.errors.push(e);
            }
        }
    }

    fn directive(&mut self, line: &Line<'_>) -> Result<(), ConfigError> {
        if let Some(why) = tls_refusal(line.directive, cfg!(feature = "tls")) {
            return Err(line.error(why));
        }
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
                // The directive table says why.
                Ok(false) => Err(line.error(
                    crate::directives::refusal(line.directive).unwrap_or_else(|| {
                        format!("`{}` is not supported by midge yet", line.directive)
                    }),
                )),
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
                let dest = match line.args.as_slice() {
                    ["stdout"] => Some(LogDest::Stdout),
                    ["stderr"] => Some(LogDest::Stderr),
                    ["syslog"] => Some(LogDest::Syslog),
                    ["topic"] => Some(LogDest::Topic),
                    ["none"] => None,
                    ["file", ..] => {
                        let path = line.rest["file".len()..].trim();
                        if path.is_empty() {
                            return Err(line.error("`log_dest file` needs a path"));
                        }
                        Some(LogDest::File(PathBuf::from(path)))
                    }
                    ["dlt"] => {
                        return Err(line.error(
                            "`log_dest dlt` is refused: midge does not log to a DLT daemon",
                        ))
                    }
                    [] => return Err(line.error("`log_dest` needs a value")),
                    [d, ..] => {
                        return Err(line.error(format!(
                            "`log_dest` expects stdout, stderr, file PATH, syslog, topic or none, got `{d}`"
                        )))
                    }
                };
                // The first `log_dest` replaces the default; later ones add.
                if !self.log_dest_seen {
                    self.log_dest_seen = true;
                    c.log_dests.clear();
                }
                match dest {
                    Some(d) if !c.log_dests.contains(&d) => c.log_dests.push(d),
                    Some(_) => {}
                    None => c.log_dests.clear(),
                }
            }
            "log_timestamp" => c.log_timestamp = line.boolean()?,
            "log_timestamp_format" => {
                if line.rest.is_empty() {
                    return Err(line.error("`log_timestamp_format` needs a value"));
                }
                c.log_timestamp_format = Some(line.rest.to_string());
            }
            "log_facility" => c.log_facility = Some(line.number(0, 7)?),
            "connection_messages" => c.connection_messages = line.boolean()?,
            "auto_id_prefix" => c.auto_id_prefix = line.one()?.to_string(),
            "clientid_prefixes" => c.clientid_prefixes = Some(line.one()?.to_string()),
            "user" => c.user = Some(line.one()?.to_string()),
            "socket_domain" => {
                let domain = match line.one()? {
                    "ipv4" => SocketDomain::V4,
                    "ipv6" => SocketDomain::V6,
                    v => {
                        return Err(
                            line.error(format!("`socket_domain` expects ipv4 or ipv6, got `{v}`"))
                        )
                    }
                };
                self.listener(line)?.socket_domain = Some(domain);
            }
            "bind_interface" => {
                let name = line.one()?.to_string();
                self.listener(line)?.bind_interface = Some(name);
            }
            "dhparamfile" => {
                let p = PathBuf::from(line.one()?);
                self.tls(line)?.dhparamfile = Some(p);
            }
            "max_inflight_bytes" => c.max_inflight_bytes = line.number(0, usize::MAX)?,
            "check_retain_source" => c.check_retain_source = line.boolean()?,
            "upgrade_outgoing_qos" => c.upgrade_outgoing_qos = line.boolean()?,
            "max_qos" => {
                let q: u8 = line.number(0, 2)?;
                self.listener_options().max_qos = Some(q);
            }
            "use_username_as_clientid" => {
                let v = line.boolean()?;
                self.listener_options().use_username_as_clientid = v;
            }
            "mount_point" => {
                let m = line.one()?;
                // A topic name's rules (4.7.3): no wildcards, no NUL, and not
                // the `$` topics, which are the broker's own [MQTT-4.7.2-1].
                if m.contains(['+', '#', '\0']) || m.starts_with('$') {
                    return Err(line.error(format!(
                        "`mount_point` must be a topic name without wildcards, not starting with `$`, got `{m}`"
                    )));
                }
                let m = m.to_string();
                self.listener(line)?.options.mount_point = Some(m);
            }
            // Values midge shares with mosquitto's defaults; the others are
            // refused with the table's reason.
            "memory_limit" => c.memory_limit = line.number(0, u64::MAX)?,
            "tls_keyform" => {
                if line.one()? != "pem" {
                    return Err(partial(line));
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
            "psk_file" => {
                let p = PathBuf::from(line.one()?);
                self.auth_target(|a| a.psk_file = Some(p.clone()));
            }
            "psk_hint" => {
                // mosquitto takes the rest of the line: a hint may hold spaces.
                if line.rest.is_empty() {
                    return Err(line.error("`psk_hint` needs a value"));
                }
                let hint = line.rest.to_string();
                self.tls(line)?.psk_hint = Some(hint);
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
            "http_dir" => {
                let p = PathBuf::from(line.one()?);
                self.listener(line)?.http_dir = Some(p);
            }
            "http_live_view" => {
                let on = line.boolean()?;
                self.listener(line)?.no_live_view = !on;
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
            d => {
                if let Some(why) = crate::directives::refusal(d) {
                    return Err(line.error(why));
                }
            }
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

    /// The listener defined last.
    fn listener(&mut self, line: &Line<'_>) -> Result<&mut ListenerConfig, ConfigError> {
        match self.config.listeners.last_mut() {
            Some(l) => Ok(l),
            None => Err(line.error(format!(
                "`{}` must follow a `listener` line",
                line.directive
            ))),
        }
    }

    /// The options of the listener defined last, or, before the first
    /// `listener` line, of mosquitto's default listener.
    fn listener_options(&mut self) -> &mut ListenerOptions {
        match self.config.listeners.last_mut() {
            Some(l) => &mut l.options,
            None => &mut self.config.default_listener,
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
                let mut l = ListenerConfig::new(1883, None);
                l.options = self.config.default_listener.clone();
                self.config.listeners.push(l);
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
            match read_file(&f) {
                Ok(text) => self.parse(&text, &f),
                Err(e) => self.errors.push(e),
            }
        }
        self.depth -= 1;
        Ok(())
    }
}

/// A value of a partly supported directive that midge does not implement: the
/// table's reason.
fn partial(line: &Line<'_>) -> ConfigError {
    let why = match crate::directives::lookup(line.directive).map(|e| e.status) {
        Some(crate::directives::Status::Partial(why)) => why,
        _ => "this value is not supported",
    };
    line.error(format!(
        "`{} {}` is refused: {why}",
        line.directive, line.rest
    ))
}

/// The value part of a line without a trailing comment: mosquitto 2.0.11
/// ignores words after a value that begin with `#` (`listener 1883  # all
/// interfaces`). A bridge `topic` line keeps them: `#` is its wildcard there.
fn strip_trailing_comment<'a>(directive: &str, rest: &'a str) -> &'a str {
    if directive == "topic" {
        return rest;
    }
    let mut end = rest.len();
    let mut prev_space = true;
    for (i, ch) in rest.char_indices() {
        if ch == '#' && prev_space {
            end = i;
            break;
        }
        prev_space = ch.is_whitespace();
    }
    rest[..end].trim_end()
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
        assert_eq!(c.log_dests, vec![LogDest::Stdout]);
        assert_eq!(c.pid_file, Some(PathBuf::from("/run/midge.pid")));
        let b = c.broker_config();
        assert_eq!(b.max_packet_size, 2048);
        assert!(!b.retain_available);
        assert_eq!(b.sys_interval, Duration::ZERO);
    }

    /// `max_qos`, `use_username_as_clientid` (per listener; before the first
    /// `listener` line, mosquitto's default listener's, which the `port`
    /// listener takes), `max_inflight_bytes` and `upgrade_outgoing_qos`
    /// (global). Before, all four were refused.
    #[test]
    fn listener_options_and_delivery_directives() {
        let c = parse(
            "max_qos 1\nuse_username_as_clientid true\nmax_inflight_bytes 4096\n\
             upgrade_outgoing_qos true\nlistener 1884\nmax_qos 0\nlistener 1885\nport 1883\n",
        )
        .expect("parse");
        assert_eq!(c.default_listener.max_qos, Some(1));
        assert!(c.default_listener.use_username_as_clientid);
        let opts: Vec<_> = c
            .listeners
            .iter()
            .map(|l| (l.port, l.options.clone()))
            .collect();
        assert_eq!(opts[0].1.max_qos, Some(0));
        assert!(!opts[0].1.use_username_as_clientid);
        assert_eq!(opts[1].1, ListenerOptions::default());
        assert_eq!(opts[2], (1883, c.default_listener.clone()));
        let b = c.broker_config();
        assert_eq!(b.max_inflight_bytes, 4096);
        assert!(b.upgrade_outgoing_qos);
        assert_eq!(b.listeners.len(), 3);
        assert_eq!(
            err("listener 1\n\nmax_qos 3"),
            "t.conf:3: `max_qos` expects a number from 0 to 2, got `3`"
        );
        assert_eq!(
            err("upgrade_outgoing_qos yes"),
            "t.conf:1: `upgrade_outgoing_qos` expects true or false, got `yes`"
        );
        assert!(err("max_inflight_bytes -5").starts_with("t.conf:1: `max_inflight_bytes` expects"));
        // `mount_point` belongs to a listener and is a topic name.
        let c = parse("listener 1\nmount_point tenant/\n").expect("parse");
        assert_eq!(
            c.listeners[0].options.mount_point.as_deref(),
            Some("tenant/")
        );
        assert_eq!(
            err("mount_point t/"),
            "t.conf:1: `mount_point` must follow a `listener` line"
        );
        for bad in ["a/+/b", "a#", "$SYS/"] {
            assert!(
                err(&format!("listener 1\nmount_point {bad}"))
                    .starts_with("t.conf:2: `mount_point` must be a topic name"),
                "{bad}"
            );
        }
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
        if cfg!(feature = "tls") {
            assert_eq!(
                err("certfile /x.pem"),
                "t.conf:1: `certfile` must follow a `listener` line"
            );
            assert!(err("listener 8883\ncertfile /x.pem").contains("TLS needs both"));
            assert!(err("listener 8883\ntls_version tlsv1.0").contains("tlsv1.2 or tlsv1.3"));
        }
        assert!(err("listener 1\nper_listener_settings true").contains("before the first listener"));
        assert_eq!(
            err("bridge_protocol_version mqttv311"),
            "t.conf:1: `bridge_protocol_version` must follow a `connection` line"
        );
        assert!(err("log_dest dlt").contains("refused"));
        assert!(err("log_type loud").contains("`log_type` expects one of"));
        assert!(err("persistent_client_expiration 5").contains("a number and a unit"));
        assert!(err("persistent_client_expiration xd").contains("a number and a unit"));
        assert!(err("max_packet_size 10").contains("at least 20"));
        assert!(err("max_connect_packet_size 19").contains("at least 20"));
    }

    /// `psk_hint` makes a listener TLS without a certificate, takes the rest
    /// of the line; `psk_file` is global or, with `per_listener_settings`,
    /// the listener's own.
    #[cfg(feature = "tls")]
    #[test]
    fn psk_directives() {
        let c = parse("listener 8884\npsk_hint a gateway hint\nlistener 1883\npsk_file /psk\n")
            .expect("parse");
        let t = c.listeners[0].tls.as_ref().expect("tls");
        assert_eq!(t.psk_hint.as_deref(), Some("a gateway hint"));
        assert!(t.certfile.is_none());
        assert_eq!(c.psk_file(0), Some(Path::new("/psk")));
        assert_eq!(c.psk_file(1), Some(Path::new("/psk")));
        let c = parse(
            "per_listener_settings true\nlistener 1\npsk_hint h\npsk_file /one\n\
             listener 2\npsk_hint h\npsk_file /two\n",
        )
        .expect("parse");
        assert_eq!(c.psk_file(0), Some(Path::new("/one")));
        assert_eq!(c.psk_file(1), Some(Path::new("/two")));
        assert!(err("listener 8884\npsk_hint h").contains("`psk_hint` needs a `psk_file`"));
        assert!(err("listener 8884\npsk_hint h\npsk_file /p\ncertfile /c").contains("both"));
        assert!(err("listener 8884\npsk_hint").contains("needs a value"));
    }

    #[cfg(feature = "tls")]
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

    /// Every mosquitto directive is handled as the table says: supported ones
    /// have a parser arm (a sample value parses), partial ones accept their
    /// supported value and refuse others with the table's reason, refused ones
    /// give their reason, ignored ones are accepted. Before, 27 of them were
    /// "not supported yet" and 13 "unknown directive".
    #[test]
    fn every_mosquitto_directive_is_handled_as_the_table_says() {
        use crate::directives::{Status, DIRECTIVES};
        // A value each supported directive accepts after a TLS listener line.
        let sample = |name: &str| -> &str {
            match name {
                "listener"
                | "port"
                | "max_connections"
                | "max_inflight_messages"
                | "max_keepalive"
                | "max_packet_size"
                | "max_queued_bytes"
                | "max_queued_messages"
                | "message_size_limit"
                | "autosave_interval"
                | "retry_interval"
                | "sys_interval"
                | "max_topic_alias" => "1000",
                "max_inflight_bytes" | "memory_limit" => "0",
                "websockets_headers_size" => "4096",
                "max_qos" => "2",
                "protocol" => "mqtt",
                "tls_keyform" => "pem",
                "log_facility" => "3",
                "log_dest" => "stdout",
                "log_type" => "all",
                "log_timestamp_format" => "%Y-%m-%dT%H:%M:%S",
                "socket_domain" => "ipv4",
                "tls_version" => "tlsv1.2",
                "persistent_client_expiration" => "1d",
                "include_dir" => ".",
                "persistence_file" => "m.db",
                "per_listener_settings"
                | "allow_duplicate_messages"
                | "autosave_on_changes"
                | "check_retain_source"
                | "upgrade_outgoing_qos" => "false",
                n if n.starts_with("allow_")
                    || n.starts_with("use_")
                    || matches!(
                        n,
                        "connection_messages"
                            | "log_timestamp"
                            | "persistence"
                            | "queue_qos0_messages"
                            | "require_certificate"
                            | "retain_available"
                            | "set_tcp_nodelay"
                            | "auth_plugin_deny_special_chars"
                    ) =>
                {
                    "true"
                }
                _ => "/some/value",
            }
        };
        for e in DIRECTIVES {
            let name = e.name.trim_end_matches('*');
            let value = sample(name);
            let per_listener = if name == "per_listener_settings" {
                ""
            } else {
                "listener 8883\n"
            };
            // What a TLS listener needs beside the directive under test (a
            // `psk_hint` listener takes its keys from a `psk_file`).
            let tls = if per_listener.is_empty() || !cfg!(feature = "tls") {
                ""
            } else {
                "certfile /c.pem\nkeyfile /k.pem\npsk_file /p.psk\n"
            };
            let text = format!("{per_listener}{name} {value}\n{tls}");
            let got = parse(&text);
            if !cfg!(feature = "tls") && crate::directives::NEEDS_TLS.contains(&name) {
                // Refused at its own line, whatever the value, and before the
                // bridge section check.
                let line = text.lines().count();
                assert_eq!(
                    err(&text),
                    format!("t.conf:{line}: {name}: midge was built without TLS")
                );
                continue;
            }
            match e.status {
                Status::Supported | Status::Ignored(_) => {
                    assert!(got.is_ok(), "{name} {value}: {:?}", got.err())
                }
                Status::Partial(why) => {
                    assert!(got.is_ok(), "{name} {value}: {:?}", got.err());
                    if !matches!(name, "log_dest") {
                        let bad = format!("{per_listener}{name} 7\n");
                        let m = err(&bad);
                        assert!(m.contains(why) || m.contains("expects"), "{name}: {m}");
                    }
                }
                Status::Refused(why) => {
                    let text = if crate::bridge::config::is_bridge_directive(name) {
                        format!("connection c\naddress 127.0.0.1:1883\n{name} {value}\n")
                    } else {
                        text
                    };
                    let m = err(&text);
                    assert!(m.contains(why), "{name}: {m}");
                }
                Status::Bridge => {
                    let value = match name {
                        "address" | "addresses" => "127.0.0.1:1883",
                        "topic" => "# both 0",
                        "start_type" => "automatic",
                        "bridge_protocol_version" => "mqttv311",
                        "bridge_tls_version" => "tlsv1.2",
                        "connection" => "other",
                        "notification_topic" => "gw/state",
                        "bridge_psk" => "00ff",
                        "keepalive_interval"
                        | "restart_timeout"
                        | "threshold"
                        | "idle_timeout"
                        | "bridge_max_packet_size" => "30",
                        "cleansession"
                        | "local_cleansession"
                        | "round_robin"
                        | "try_private"
                        | "notifications"
                        | "notifications_local_only"
                        | "bridge_attempt_unsubscribe"
                        | "bridge_outgoing_retain"
                        | "bridge_insecure" => "true",
                        _ => "value",
                    };
                    // A second `connection` gets its address on the next line.
                    let text = format!("connection c\naddress 127.0.0.1:1883\n{name} {value}\naddress 127.0.0.1:1884\n");
                    let got = Config::parse_all(&text, Path::new("t.conf"));
                    // File checks (bridge_cafile ...) may fail later; the line parses.
                    if let Err(e) = got {
                        assert!(e.iter().all(|e| e.line != 3), "{name} {value}: {e:?}");
                    }
                }
            }
        }
        // A name not in the table is still a typo.
        assert!(err("log_timestmp true").contains("unknown directive `log_timestmp`"));
    }

    /// `http_dir` (mosquitto) and `http_live_view` (midge) belong to the
    /// listener above them; a relative `http_dir` is resolved at start.
    #[test]
    fn http_dir_and_live_view_are_per_listener() {
        let mut c = parse(
            "listener 9001\nprotocol websockets\nhttp_dir www\nlistener 9002\nprotocol websockets\nhttp_live_view false\n",
        )
        .expect("parse");
        assert_eq!(c.listeners[0].http_dir, Some(PathBuf::from("www")));
        assert!(!c.listeners[0].no_live_view);
        assert_eq!(c.listeners[1].http_dir, None);
        assert!(c.listeners[1].no_live_view);
        c.resolve_paths(Path::new("/srv"));
        assert_eq!(c.listeners[0].http_dir, Some(PathBuf::from("/srv/www")));
        assert!(err("http_dir /x\n").contains("must follow a `listener` line"));
        assert!(err("listener 1\nhttp_live_view maybe\n").contains("http_live_view"));
    }

    /// Every TLS directive is refused by a build without TLS, and only those.
    /// The table must know every name the refusal list holds.
    #[test]
    fn tls_directives_are_refused_only_without_tls() {
        for name in crate::directives::NEEDS_TLS {
            assert!(crate::directives::lookup(name).is_some(), "{name}");
            assert_eq!(
                tls_refusal(name, false).as_deref(),
                Some(format!("{name}: midge was built without TLS").as_str())
            );
            assert_eq!(tls_refusal(name, true), None);
        }
        for name in [
            "listener",
            "protocol",
            "password_file",
            "acl_file",
            "address",
        ] {
            assert_eq!(tls_refusal(name, false), None, "{name}");
        }
    }

    /// Without TLS, the README's kinds of TLS configs stop at the first TLS
    /// line with the file and line, listener, WebSocket and bridge alike;
    /// the same configs without those lines load.
    #[cfg(not(feature = "tls"))]
    #[test]
    fn configs_naming_tls_fail_at_load_without_tls() {
        for (text, want) in [
            (
                "listener 8883\ncertfile /c.pem\nkeyfile /k.pem\n",
                "t.conf:2: certfile",
            ),
            (
                "listener 8081\nprotocol websockets\ncertfile /c.pem\n",
                "t.conf:3: certfile",
            ),
            (
                "listener 8883\npsk_hint gateway\npsk_file /p\n",
                "t.conf:2: psk_hint",
            ),
            (
                "connection up\naddress 10.0.0.1:8883\nbridge_cafile /ca.pem\n",
                "t.conf:3: bridge_cafile",
            ),
        ] {
            assert_eq!(err(text), format!("{want}: midge was built without TLS"));
        }
        parse("listener 8081\nprotocol websockets\npassword_file /pw\n").expect("no TLS");
    }

    /// mosquitto 2.0.11 ignores a `#` word and what follows after a value;
    /// before, `listener 1883  # all interfaces` was refused.
    #[test]
    fn trailing_comments_after_values() {
        let c = parse("listener 1883  # all interfaces\nmax_keepalive 60 #one minute\nlog_timestamp_format %H:%M  # clock\n")
            .expect("parse");
        assert_eq!(c.listeners, vec![ListenerConfig::new(1883, None)]);
        assert_eq!(c.max_keepalive, 60);
        assert_eq!(c.log_timestamp_format.as_deref(), Some("%H:%M"));
        // A `#` inside a word is part of the value.
        let c = parse("auto_id_prefix a#b\n").expect("parse");
        assert_eq!(c.auto_id_prefix, "a#b");
        assert_eq!(strip_trailing_comment("topic", "# both 0"), "# both 0");
    }

    /// All errors of a file in one run, each with its line.
    #[test]
    fn every_error_is_reported() {
        let e = Config::parse_all(
            "bogus 1\nmax_keepalive x\nlistener 1883\nlog_dest dlt\n",
            Path::new("t.conf"),
        )
        .expect_err("errors");
        let lines: Vec<usize> = e.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![1, 2, 4]);
    }

    #[test]
    fn log_dests_replace_the_default_and_add_up() {
        let c = parse("log_dest file /var/log/midge log.txt\nlog_dest syslog\nlog_dest topic\nlog_dest syslog\n").expect("parse");
        assert_eq!(
            c.log_dests,
            vec![
                LogDest::File(PathBuf::from("/var/log/midge log.txt")),
                LogDest::Syslog,
                LogDest::Topic
            ]
        );
        assert!(parse("log_dest none\n")
            .expect("parse")
            .log_dests
            .is_empty());
        assert!(err("log_dest file").contains("needs a path"));
    }

    #[test]
    fn relative_paths_resolve_against_the_start_directory() {
        let mut c =
            parse("pid_file m.pid\npassword_file /abs/pw\nacl_file acl\nlog_dest file log/m.log\n")
                .expect("parse");
        c.resolve_paths(Path::new("/work/here"));
        assert_eq!(c.pid_file, Some(PathBuf::from("/work/here/m.pid")));
        assert_eq!(c.auth.password_file, Some(PathBuf::from("/abs/pw")));
        assert_eq!(c.auth.acl_file, Some(PathBuf::from("/work/here/acl")));
        assert_eq!(c.persistence_location, Some(PathBuf::from("/work/here")));
        assert_eq!(
            c.log_dests,
            vec![LogDest::File(PathBuf::from("/work/here/log/m.log"))]
        );
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
