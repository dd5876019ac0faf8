//! Authentication: the seam where CONNECT's credentials are judged. Today midge
//! has no MQTT 5 enhanced-authentication method (4.12), so a CONNECT naming one
//! is refused with 0x8C; password files and ACLs (issue 5) plug in here.

use crate::protocol::{Connect, ReasonCode};

/// Decide whether `connect` may proceed; `Err` carries the CONNACK reason.
pub fn authenticate(connect: &Connect<'_>) -> Result<(), ReasonCode> {
    if connect.properties.authentication_method.is_some() {
        // [MQTT-4.12.0-1] a method the server does not support: 0x8C, then close.
        return Err(ReasonCode::BAD_AUTHENTICATION_METHOD);
    }
    Ok(())
}
