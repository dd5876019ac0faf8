//! Stand-in for `bridge_tls.rs` in builds without the `tls` feature: no
//! connector can exist, and bridge TLS directives were refused at config load.

use crate::bridge::config::BridgeTls;

/// A bridge's TLS connector: none can be made in this build.
pub enum Connector {}

/// Always the "built without TLS" refusal.
pub fn connector(_t: &BridgeTls) -> Result<Connector, String> {
    Err(crate::config::NO_TLS.to_string())
}
