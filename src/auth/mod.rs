//! Who may connect and what they may touch: password files, ACLs, and the
//! per-listener choice between them (`per_listener_settings`). Files are read
//! here (start-up and SIGHUP); the broker only consults the loaded rules, so it
//! stays free of I/O.

pub mod acl;
pub mod passwd;
pub mod passwd_tool;
pub mod psk;

use std::sync::Arc;

pub use acl::{Access, Acl};
pub use passwd::{PasswordFile, PasswordHash};

use crate::config::Config;

/// Topics only the broker writes: `$SYS` and below. Refused to every client's
/// PUBLISH and will, whatever the ACL grants, as in mosquitto, which makes one
/// exception that midge keeps: `$SYS/broker/connection/<name>/state`, where a
/// remote bridge reports its own connection state (its notifications); the ACL
/// still applies there.
pub fn broker_only(topic: &str) -> bool {
    let Some(rest) = topic.strip_prefix("$SYS") else {
        return false;
    };
    if !(rest.is_empty() || rest.starts_with('/')) {
        return false;
    }
    let bridge_state = rest
        .strip_prefix("/broker/connection/")
        .and_then(|r| r.strip_suffix("/state"))
        .is_some_and(|name| !name.is_empty() && !name.contains('/'));
    !bridge_state
}

/// The rules for clients of one listener.
#[derive(Debug, Clone)]
pub struct ListenerSecurity {
    /// Clients without a user name may connect.
    pub allow_anonymous: bool,
    /// Users and their password hashes, if a `password_file` is set.
    pub passwords: Option<Arc<PasswordFile>>,
    /// Access rules, if an `acl_file` is set.
    pub acl: Option<Arc<Acl>>,
    /// TLS: the client certificate's CN is the user name.
    pub use_identity_as_username: bool,
    /// TLS: the client certificate's subject is the user name.
    pub use_subject_as_username: bool,
}

impl ListenerSecurity {
    /// Everyone may connect and do anything (no files configured).
    pub fn open() -> Self {
        ListenerSecurity {
            allow_anonymous: true,
            passwords: None,
            acl: None,
            use_identity_as_username: false,
            use_subject_as_username: false,
        }
    }

    /// Nobody may connect or touch anything: the rules for a listener number
    /// that has none (a session restored from a log written under another
    /// configuration, say) must not be more generous than any configured one.
    pub fn closed() -> Self {
        ListenerSecurity {
            allow_anonymous: false,
            passwords: None,
            // An ACL without rules grants nothing.
            acl: Some(Arc::new(Acl::default())),
            use_identity_as_username: false,
            use_subject_as_username: false,
        }
    }

    /// ACL check; without an ACL everything is allowed.
    pub fn may(&self, client_id: &str, user: Option<&str>, topic: &str, access: Access) -> bool {
        self.acl
            .as_ref()
            .is_none_or(|a| a.check(client_id, user, topic, access))
    }

    /// ACL check of a SUBSCRIBE filter.
    pub fn may_subscribe(&self, client_id: &str, user: Option<&str>, filter: &str) -> bool {
        self.acl
            .as_ref()
            .is_none_or(|a| a.check_subscribe(client_id, user, filter))
    }
}

/// The listener number of bridges' local sides (the broker's own clients):
/// trusted like mosquitto's bridge contexts, no password and no ACL. It fits the
/// 32-bit listener field of persisted sessions, so it survives a restart.
pub const BRIDGE_LISTENER: usize = u32::MAX as usize;

/// Security settings per listener (index = listener number in the config).
#[derive(Debug, Clone)]
pub struct Security {
    listeners: Vec<Arc<ListenerSecurity>>,
    /// Rules for a listener number without its own: closed, except in
    /// [`Security::allow_all`].
    fallback: Arc<ListenerSecurity>,
    /// `per_listener_settings`: each listener has its own users.
    per_listener: bool,
}

impl Default for Security {
    /// No listeners, and nothing allowed.
    fn default() -> Self {
        Security {
            listeners: Vec::new(),
            fallback: Arc::new(ListenerSecurity::closed()),
            per_listener: false,
        }
    }
}

impl Security {
    /// No rules at all: every client on every listener may do anything. For a
    /// broker used as a library and for tests; the server always installs
    /// [`Security::load`]'s rules before the first client connects.
    pub fn allow_all() -> Self {
        Security {
            listeners: Vec::new(),
            fallback: Arc::new(ListenerSecurity::open()),
            per_listener: false,
        }
    }

    /// The rules for listener `index`; a number without rules gets closed ones,
    /// except [`BRIDGE_LISTENER`], which is open.
    pub fn listener(&self, index: usize) -> &Arc<ListenerSecurity> {
        match self.listeners.get(index) {
            Some(l) => l,
            None if index == BRIDGE_LISTENER => bridge_rules(),
            None => &self.fallback,
        }
    }

    /// Do the same user names mean the same users on listeners `a` and `b`?
    /// Yes, unless `per_listener_settings` gives each its own password file.
    pub fn same_users(&self, a: usize, b: usize) -> bool {
        !self.per_listener || a == b
    }

    /// Read the password and ACL files `config` names. mosquitto 2 semantics:
    /// anonymous clients are refused unless `allow_anonymous true`, except in
    /// local-only mode (no listener configured), where they are allowed.
    pub fn load(config: &Config) -> Result<Security, String> {
        let load_pw =
            |p: &Option<std::path::PathBuf>| -> Result<Option<Arc<PasswordFile>>, String> {
                p.as_ref()
                    .map(|p| {
                        PasswordFile::load(p)
                            .map(Arc::new)
                            .map_err(|e| format!("password_file {e}"))
                    })
                    .transpose()
            };
        let load_acl = |p: &Option<std::path::PathBuf>| -> Result<Option<Arc<Acl>>, String> {
            p.as_ref()
                .map(|p| {
                    Acl::load(p)
                        .map(Arc::new)
                        .map_err(|e| format!("acl_file {e}"))
                })
                .transpose()
        };
        let default_anonymous = config.local_only;
        let global_pw = load_pw(&config.auth.password_file)?;
        let global_acl = load_acl(&config.auth.acl_file)?;
        let mut listeners = Vec::new();
        for l in &config.listeners {
            let (auth, pw, acl) = if config.per_listener_settings {
                (
                    &l.auth,
                    load_pw(&l.auth.password_file)?,
                    load_acl(&l.auth.acl_file)?,
                )
            } else {
                (&config.auth, global_pw.clone(), global_acl.clone())
            };
            let tls = l.tls.as_ref();
            listeners.push(Arc::new(ListenerSecurity {
                allow_anonymous: auth.allow_anonymous.unwrap_or(default_anonymous),
                passwords: pw,
                acl,
                use_identity_as_username: tls.is_some_and(|t| t.use_identity_as_username),
                use_subject_as_username: tls.is_some_and(|t| t.use_subject_as_username),
            }));
        }
        Ok(Security {
            listeners,
            fallback: Arc::new(ListenerSecurity::closed()),
            per_listener: config.per_listener_settings,
        })
    }
}

/// The open rules of [`BRIDGE_LISTENER`], built once.
fn bridge_rules() -> &'static Arc<ListenerSecurity> {
    static RULES: std::sync::OnceLock<Arc<ListenerSecurity>> = std::sync::OnceLock::new();
    RULES.get_or_init(|| Arc::new(ListenerSecurity::open()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener number the configuration does not have gets no access (it
    /// used to fall back to allow-everything: issue 10).
    #[test]
    fn unknown_listener_is_closed() {
        let mut config = Config::default();
        config
            .listeners
            .push(crate::config::ListenerConfig::new(1883, None));
        config.auth.allow_anonymous = Some(true);
        let sec = Security::load(&config).expect("load");
        assert!(sec.listener(0).allow_anonymous);
        assert!(sec.listener(0).may("c", None, "a/b", Access::Write));
        let other = sec.listener(7);
        assert!(!other.allow_anonymous);
        assert!(!other.may("c", None, "a/b", Access::Read));
        assert!(!other.may("c", Some("alice"), "a/b", Access::Write));
        assert!(!other.may_subscribe("c", None, "#"));
        assert!(!Security::default()
            .listener(0)
            .may("c", None, "t", Access::Read));
        assert!(Security::allow_all()
            .listener(3)
            .may("c", None, "t", Access::Read));
    }

    #[test]
    fn sys_is_the_brokers() {
        for t in ["$SYS", "$SYS/broker/uptime", "$SYS/", "$SYS/x/y"] {
            assert!(broker_only(t), "{t}");
        }
        for t in [
            "$SYS/broker/connection/",
            "$SYS/broker/connection//state",
            "$SYS/broker/connection/a/b/state",
            "$SYS/broker/connection/br/stat",
        ] {
            assert!(broker_only(t), "{t}");
        }
        for t in [
            "$SYSTEM/x",
            "SYS/x",
            "a/$SYS",
            "$share/g/t",
            "$sys/x",
            "$SYS/broker/connection/remote-bridge/state",
        ] {
            assert!(!broker_only(t), "{t}");
        }
    }

    #[test]
    fn per_listener_settings_separate_users() {
        let mut config = Config::default();
        assert!(Security::load(&config).expect("load").same_users(0, 1));
        config.per_listener_settings = true;
        let sec = Security::load(&config).expect("load");
        assert!(sec.same_users(1, 1));
        assert!(!sec.same_users(0, 1));
    }
}
