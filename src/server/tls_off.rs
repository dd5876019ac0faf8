//! Stand-in for `tls.rs` in builds without the `tls` feature: no acceptor can
//! exist (the type is uninhabited), and the config loader already refused every
//! TLS directive, so [`acceptor`] is reached only if that check is bypassed.

use crate::config::TlsConfig;

/// A listener's TLS acceptor: none can be made in this build.
pub enum Acceptor {}

/// Always the "built without TLS" refusal.
pub fn acceptor(_t: &TlsConfig, _psk_file: Option<&std::path::Path>) -> Result<Acceptor, String> {
    Err(crate::config::NO_TLS.to_string())
}
