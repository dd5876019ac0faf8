//! Client-side TLS for bridges, with the `native-tls` crate: the connector is
//! built once at start from `bridge_cafile`/`bridge_capath`/`bridge_certfile` +
//! `bridge_keyfile`, so an unreadable or invalid file stops start-up with a
//! clear message instead of a bridge that silently never connects.

use std::path::Path;

use native_tls::{Certificate, Identity, Protocol, TlsConnector};

use crate::bridge::config::BridgeTls;

/// A bridge's TLS connector (`bridge_tls_off.rs` has an uninhabited one).
pub type Connector = TlsConnector;

/// Build the connector for one bridge.
pub fn connector(t: &BridgeTls) -> Result<TlsConnector, String> {
    let mut b = TlsConnector::builder();
    let mut cas = Vec::new();
    if let Some(f) = &t.cafile {
        cas.extend(read_cas(f)?);
    }
    if let Some(dir) = &t.capath {
        let entries =
            std::fs::read_dir(dir).map_err(|e| format!("bridge_capath {}: {e}", dir.display()))?;
        let mut files: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for f in files.iter().filter(|p| p.is_file()) {
            // A hashed CA directory holds links and other files: take what parses.
            if let Ok(c) = read_cas(f) {
                cas.extend(c);
            }
        }
    }
    if cas.is_empty() {
        return Err("bridge TLS: no CA certificate found in bridge_cafile/bridge_capath".into());
    }
    // Only the configured CAs are trusted, as in mosquitto.
    b.disable_built_in_roots(true);
    for c in cas {
        b.add_root_certificate(c);
    }
    if let (Some(cert), Some(key)) = (&t.certfile, &t.keyfile) {
        let cert_pem =
            std::fs::read(cert).map_err(|e| format!("bridge_certfile {}: {e}", cert.display()))?;
        let key_pem =
            std::fs::read(key).map_err(|e| format!("bridge_keyfile {}: {e}", key.display()))?;
        let id = Identity::from_pkcs8(&cert_pem, &key_pem)
            .map_err(|e| format!("bridge_certfile/bridge_keyfile: {e}"))?;
        b.identity(id);
    }
    if t.insecure {
        b.danger_accept_invalid_hostnames(true);
    }
    b.min_protocol_version(Some(match t.tls_version.as_deref() {
        Some("tlsv1.3") => Protocol::Tlsv13,
        _ => Protocol::Tlsv12,
    }));
    if let Some(alpn) = &t.alpn {
        b.request_alpns(&[alpn.as_str()]);
    }
    b.build().map_err(|e| format!("bridge TLS: {e}"))
}

/// Every certificate in a PEM file.
fn read_cas(path: &Path) -> Result<Vec<Certificate>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("bridge_cafile {}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&pem);
    let mut out = Vec::new();
    let mut rest = text.as_ref();
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            break;
        };
        let block = &rest[start..start + len + END.len()];
        let c = Certificate::from_pem(block.as_bytes())
            .map_err(|e| format!("{}: bad certificate: {e}", path.display()))?;
        out.push(c);
        rest = &rest[start + len + END.len()..];
    }
    if out.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(out)
}
