//! Who may connect and what they may touch: password files, ACLs, and the
//! per-listener choice between them (`per_listener_settings`). Files are read
//! here (start-up and SIGHUP); the broker only consults the loaded rules, so it
//! stays free of I/O.

pub mod acl;
pub mod passwd;
pub mod passwd_tool;

use std::sync::Arc;

pub use acl::{Access, Acl};
pub use passwd::{PasswordFile, PasswordHash};

use crate::config::Config;

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

/// Security settings per listener (index = listener number in the config).
#[derive(Debug, Clone)]
pub struct Security {
    listeners: Vec<Arc<ListenerSecurity>>,
    fallback: Arc<ListenerSecurity>,
}

impl Default for Security {
    fn default() -> Self {
        Security {
            listeners: Vec::new(),
            fallback: Arc::new(ListenerSecurity::open()),
        }
    }
}

impl Security {
    /// The rules for listener `index`.
    pub fn listener(&self, index: usize) -> &Arc<ListenerSecurity> {
        self.listeners.get(index).unwrap_or(&self.fallback)
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
            fallback: Arc::new(ListenerSecurity::open()),
        })
    }
}
