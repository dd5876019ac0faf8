//! Every directive of mosquitto 2.0's mosquitto.conf(5), and what midge does with
//! it: one table, so that the config parser, the README's directive table and
//! the tests agree. The parser implements the `Supported` ones; this table only
//! answers for the others.

/// What midge does with one mosquitto directive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Implemented with mosquitto's meaning (the parser has an arm for it).
    Supported,
    /// Implemented for some values; the others are refused with this reason.
    Partial(&'static str),
    /// Accepted and has no effect in midge, for this reason.
    Ignored(&'static str),
    /// Refused at start-up with this reason.
    Refused(&'static str),
    /// A bridge (`connection` section) directive, implemented by
    /// `crate::bridge::config` with mosquitto's meaning.
    Bridge,
}

/// One directive: its name (a prefix when it ends in `_*`, as `plugin_opt_*`)
/// and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Directive {
    /// The name as in mosquitto.conf(5).
    pub name: &'static str,
    /// What midge does with it.
    pub status: Status,
}

const PLUGINS: &str = "midge has no C plugin interface; use `password_file` (made with \
`midge passwd`), `acl_file`, `per_listener_settings` and `use_identity_as_username` instead";
const ENGINE: &str = "midge does not load OpenSSL engines; keep the key in a PEM `keyfile`";
const fn d(name: &'static str, status: Status) -> Directive {
    Directive { name, status }
}

use Status::{Bridge, Ignored, Partial, Refused, Supported};

/// mosquitto 2.0's directives in mosquitto.conf(5) order of sections, each
/// section alphabetical.
pub const DIRECTIVES: &[Directive] = &[
    // General options.
    d("acl_file", Supported),
    d("allow_anonymous", Supported),
    d("allow_duplicate_messages", Ignored("midge sends a message once per client whatever overlapping subscriptions match it, at no extra memory [MQTT-3.3.4-2]")),
    d("allow_zero_length_clientid", Supported),
    d("auth_opt_*", Refused(PLUGINS)),
    d("auth_plugin", Refused(PLUGINS)),
    d("auth_plugin_deny_special_chars", Ignored("only matters to plugins; midge has none")),
    d("auto_id_prefix", Supported),
    d("autosave_interval", Supported),
    d("autosave_on_changes", Ignored("midge writes each change to its log as it happens")),
    d("check_retain_source", Supported),
    d("clientid_prefixes", Supported),
    d("connection_messages", Supported),
    d("include_dir", Supported),
    d("log_dest", Partial("stdout, stderr, file, syslog, topic and none; `dlt` is refused (no DLT daemon support)")),
    d("log_facility", Supported),
    d("log_timestamp", Supported),
    d("log_timestamp_format", Supported),
    d("log_type", Supported),
    d("max_inflight_bytes", Supported),
    d("max_inflight_messages", Supported),
    d("max_keepalive", Supported),
    d("max_packet_size", Supported),
    d("max_queued_bytes", Supported),
    d("max_queued_messages", Supported),
    d("memory_limit", Supported),
    d("message_size_limit", Supported),
    d("password_file", Supported),
    d("per_listener_settings", Supported),
    d("persistence", Supported),
    d("persistence_file", Supported),
    d("persistence_location", Supported),
    d("persistent_client_expiration", Supported),
    d("pid_file", Supported),
    d("plugin", Refused(PLUGINS)),
    d("plugin_opt_*", Refused(PLUGINS)),
    d("psk_file", Supported),
    d("queue_qos0_messages", Supported),
    d("retain_available", Supported),
    d("retry_interval", Supported),
    d("set_tcp_nodelay", Ignored("midge always sets TCP_NODELAY: it gathers each turn's packets into one write itself")),
    d("store_clean_interval", Ignored("obsolete in mosquitto too")),
    d("sys_interval", Supported),
    d("upgrade_outgoing_qos", Supported),
    d("user", Supported),
    d("websockets_headers_size", Supported),
    d("websockets_log_level", Ignored("midge's WebSocket layer logs through `log_type websockets` and `debug`")),
    // Listeners.
    d("bind_address", Supported),
    d("bind_interface", Supported),
    d("http_dir", Supported),
    d("listener", Supported),
    d("max_connections", Supported),
    d("max_qos", Supported),
    d("max_topic_alias", Supported),
    d("mount_point", Supported),
    d("port", Supported),
    d("protocol", Supported),
    d("socket_domain", Supported),
    d("use_username_as_clientid", Supported),
    // Certificate based TLS.
    d("cafile", Supported),
    d("capath", Supported),
    d("certfile", Supported),
    d("ciphers", Supported),
    d("ciphers_tls1.3", Supported),
    d("crlfile", Supported),
    d("dhparamfile", Supported),
    d("keyfile", Supported),
    d("require_certificate", Supported),
    d("tls_engine", Refused(ENGINE)),
    d("tls_engine_kpass_sha1", Refused(ENGINE)),
    d("tls_keyform", Partial("`pem` only: midge does not load OpenSSL engines")),
    d("tls_version", Supported),
    d("use_identity_as_username", Supported),
    d("use_subject_as_username", Supported),
    // Pre-shared-key TLS.
    d("psk_hint", Supported),
    // Bridges.
    d("address", Bridge),
    d("addresses", Bridge),
    d("bridge_alpn", Bridge),
    d("bridge_attempt_unsubscribe", Bridge),
    d("bridge_bind_address", Refused("not in this midge yet: a bridge connects from the address the routing table picks")),
    d("bridge_cafile", Bridge),
    d("bridge_capath", Bridge),
    d("bridge_certfile", Bridge),
    d("bridge_identity", Bridge),
    d("bridge_insecure", Bridge),
    d("bridge_keyfile", Bridge),
    d("bridge_max_packet_size", Bridge),
    d("bridge_outgoing_retain", Bridge),
    d("bridge_protocol_version", Bridge),
    d("bridge_psk", Bridge),
    d("bridge_require_ocsp", Refused("OCSP checking of the remote broker is not in this midge yet")),
    d("bridge_tls_version", Bridge),
    d("cleansession", Bridge),
    d("clientid", Bridge),
    d("connection", Bridge),
    d("idle_timeout", Bridge),
    d("keepalive_interval", Bridge),
    d("local_cleansession", Bridge),
    d("local_clientid", Bridge),
    d("local_password", Bridge),
    d("local_username", Bridge),
    d("notification_topic", Bridge),
    d("notifications", Bridge),
    d("notifications_local_only", Bridge),
    d("password", Bridge),
    d("remote_clientid", Bridge),
    d("remote_password", Bridge),
    d("remote_username", Bridge),
    d("restart_timeout", Bridge),
    d("round_robin", Bridge),
    d("start_type", Bridge),
    d("threshold", Bridge),
    d("topic", Bridge),
    d("try_private", Bridge),
    d("username", Bridge),
];

/// Directives midge adds (not in mosquitto), for the README table.
pub const MIDGE_ONLY: &[&str] = &[
    "connect_timeout",
    "http_live_view",
    "max_connect_packet_size",
    "max_filters_per_packet",
    "max_subscriptions_per_client",
    "max_topic_levels",
    "max_user_properties",
    "outgoing_topic_aliases",
    "persistence_recover",
    "persistence_sync",
    "response_information",
];

/// Directives that only mean something with TLS (listener certificates, PSK,
/// bridge TLS): a build without the `tls` feature refuses each of them at the
/// line that names it, even with a value that would turn TLS off, so a config
/// written for TLS never silently loads as plain TCP.
pub const NEEDS_TLS: &[&str] = &[
    "cafile",
    "capath",
    "certfile",
    "ciphers",
    "ciphers_tls1.3",
    "crlfile",
    "dhparamfile",
    "keyfile",
    "require_certificate",
    "tls_engine",
    "tls_engine_kpass_sha1",
    "tls_keyform",
    "tls_version",
    "use_identity_as_username",
    "use_subject_as_username",
    "psk_file",
    "psk_hint",
    "bridge_alpn",
    "bridge_cafile",
    "bridge_capath",
    "bridge_certfile",
    "bridge_identity",
    "bridge_insecure",
    "bridge_keyfile",
    "bridge_psk",
    "bridge_require_ocsp",
    "bridge_tls_version",
];

/// The table entry for `name` (prefix entries such as `plugin_opt_*` match
/// every name they begin).
pub fn lookup(name: &str) -> Option<&'static Directive> {
    DIRECTIVES.iter().find(|e| match e.name.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => e.name == name,
    })
}

/// Why the parser refuses `name` when it has no arm for it: `None` when the
/// table accepts it silently (`Ignored`).
pub fn refusal(name: &str) -> Option<String> {
    match lookup(name).map(|e| e.status) {
        None => Some(format!("unknown directive `{name}`")),
        Some(Status::Ignored(_)) => None,
        Some(Status::Refused(why)) => Some(format!("`{name}` is refused: {why}")),
        Some(Status::Bridge) => Some(format!("`{name}` must follow a `connection` line")),
        // Supported and partial ones have an arm; reaching here is a midge bug,
        // said plainly rather than hidden.
        Some(Status::Supported) | Some(Status::Partial(_)) => {
            Some(format!("`{name}` is not handled by this build"))
        }
    }
}

/// The README's directive table, generated from [`DIRECTIVES`] and [`MIDGE_ONLY`].
pub fn markdown_table() -> String {
    let mut s = String::from("| Directive | midge |\n| --- | --- |\n");
    for e in DIRECTIVES {
        let status = match e.status {
            Status::Supported => "supported".to_string(),
            Status::Partial(why) => format!("partly: {why}"),
            Status::Ignored(why) => format!("accepted, no effect: {why}"),
            Status::Refused(why) => format!("refused: {why}"),
            Status::Bridge => "supported in `connection` sections (see Bridges)".to_string(),
        };
        s.push_str(&format!(
            "| `{}` | {} |\n",
            e.name,
            status.replace('|', "\\|")
        ));
    }
    for name in MIDGE_ONLY {
        s.push_str(&format!("| `{name}` (midge) | supported |\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_prefixes_match() {
        for (i, a) in DIRECTIVES.iter().enumerate() {
            assert!(
                DIRECTIVES[i + 1..].iter().all(|b| b.name != a.name),
                "{} twice",
                a.name
            );
        }
        assert_eq!(
            lookup("plugin_opt_foo").map(|e| e.name),
            Some("plugin_opt_*")
        );
        assert_eq!(lookup("plugin").map(|e| e.name), Some("plugin"));
        assert!(lookup("bogus").is_none());
        assert!(refusal("auth_plugin").is_some_and(|m| m.contains("password_file")));
        assert_eq!(refusal("store_clean_interval"), None);
    }
}
