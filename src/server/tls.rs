//! Server-side TLS with the `openssl` crate: building a listener's acceptor from
//! mosquitto's directives, and reading the client certificate's name (or the
//! TLS-PSK identity).
//!
//! TLS-PSK (`psk_hint` + `psk_file`): the acceptor gets a PSK callback that looks
//! the client's identity up in the keys read when the acceptor is built (start,
//! SIGHUP), so a reload swaps keys for new connections as it swaps certificates.
//!
//! Why not native-tls here: its acceptor cannot request or verify client
//! certificates and its OpenSSL profile turns TLS 1.3 off; the `openssl` crate it
//! links gives both with the same non-blocking resume pattern. (native-tls stays
//! the choice for outgoing connections: bridges.)

use std::path::Path;
use std::sync::{Arc, OnceLock};

use openssl::ex_data::Index;
use openssl::nid::Nid;
use openssl::ssl::{
    Ssl, SslAcceptor, SslAcceptorBuilder, SslFiletype, SslMethod, SslOptions, SslRef,
    SslVerifyMode, SslVersion,
};
use openssl::x509::store::X509Lookup;
use openssl::x509::verify::X509VerifyFlags;

use crate::auth::psk::PskFile;
use crate::config::TlsConfig;

/// A listener's TLS acceptor (`tls_off.rs` has an uninhabited one).
pub type Acceptor = SslAcceptor;

/// TLS 1.2 suites for PSK listeners when `ciphers` does not name them:
/// forward-secret (ECDHE/DHE) PSK first, then plain PSK, AEAD or SHA-2 only.
/// (TLS 1.3 carries PSK in its own suites, which the defaults cover.)
pub(super) const PSK_CIPHERS: &str =
    "ECDHEPSK+AESGCM:ECDHEPSK+CHACHA20:ECDHEPSK+SHA256:ECDHEPSK+SHA384:\
DHEPSK+AESGCM:DHEPSK+CHACHA20:PSK+AESGCM:PSK+CHACHA20:PSK+SHA256:PSK+SHA384:!RSAPSK:!aNULL:!eNULL";

/// The TLS 1.2 suites of `SslAcceptor::mozilla_intermediate_v5` (which
/// `set_cipher_list` replaces, so they are named again for a listener with
/// both certificates and PSK).
const INTERMEDIATE_CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:\
ECDHE-RSA-CHACHA20-POLY1305:DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384";

/// Where a handshake's PSK callback leaves the identity it accepted, for
/// `use_identity_as_username` once the handshake is done.
fn psk_identity_index() -> Option<Index<Ssl, String>> {
    static INDEX: OnceLock<Option<Index<Ssl, String>>> = OnceLock::new();
    *INDEX.get_or_init(|| Ssl::new_ex_index().ok())
}

// Not wrapped by the openssl crate; libssl (which it links) has it.
extern "C" {
    fn SSL_CTX_use_psk_identity_hint(
        ctx: *mut std::ffi::c_void,
        hint: *const std::ffi::c_char,
    ) -> std::ffi::c_int;
}

/// A path OpenSSL can take: UTF-8, no NUL byte (the crate would panic on one).
fn path_str<'a>(what: &str, p: &'a Path) -> Result<&'a str, String> {
    match p.to_str() {
        Some(s) if !s.contains('\0') => Ok(s),
        _ => Err(format!("{what} {}: unusable path", p.display())),
    }
}

/// Build the acceptor for one listener, with the keys of `psk_file` for a
/// `psk_hint` listener. Errors name the directive and file (`file:line` for
/// a bad PSK file line).
pub fn acceptor(t: &TlsConfig, psk_file: Option<&Path>) -> Result<SslAcceptor, String> {
    Ok(builder(t, psk_file)?.build())
}

/// The acceptor's settings, before they are frozen (tests look at them here).
fn builder(t: &TlsConfig, psk_file: Option<&Path>) -> Result<SslAcceptorBuilder, String> {
    let e = |what: &str, p: &Path, err: openssl::error::ErrorStack| {
        format!("{what} {}: {err}", p.display())
    };
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())
        .map_err(|err| format!("TLS set-up: {err}"))?;
    // A client-initiated TLS 1.2 renegotiation makes the server redo a handshake's
    // public-key work on demand (a cheap way to burn the loop's CPU) and has no
    // use for MQTT; TLS 1.3 has no renegotiation at all.
    b.set_options(SslOptions::NO_RENEGOTIATION);
    if let Some(hint) = &t.psk_hint {
        let path = psk_file.ok_or("`psk_hint` needs a `psk_file`")?;
        set_psk(&mut b, hint, path)?;
    }
    // A `psk_hint` listener without `certfile` speaks TLS-PSK only.
    let certificates = t.psk_hint.is_none() || t.certfile.is_some();
    if certificates {
        let cert = t.certfile.as_deref().ok_or("TLS needs certfile")?;
        let key = t.keyfile.as_deref().ok_or("TLS needs keyfile")?;
        // Existence first: OpenSSL's messages for a missing file are cryptic.
        for (what, p) in [("certfile", cert), ("keyfile", key)] {
            path_str(what, p)?;
            if !p.is_file() {
                return Err(format!("{what} {}: no such file", p.display()));
            }
        }
        b.set_certificate_chain_file(cert)
            .map_err(|err| e("certfile", cert, err))?;
        // PEM keys in PKCS#8 or the traditional RSA/EC forms both load here.
        b.set_private_key_file(key, SslFiletype::PEM)
            .map_err(|err| e("keyfile", key, err))?;
        b.check_private_key()
            .map_err(|err| e("keyfile (does not match certfile)", key, err))?;
    }
    if let Some(ca) = t.cafile.as_deref() {
        path_str("cafile", ca)?;
        b.set_ca_file(ca).map_err(|err| e("cafile", ca, err))?;
    }
    if let Some(dir) = t.capath.as_deref() {
        let d = path_str("capath", dir)?;
        b.cert_store_mut()
            .add_lookup(X509Lookup::hash_dir())
            .and_then(|l| l.add_dir(d, SslFiletype::PEM))
            .map_err(|err| e("capath", dir, err))?;
    }
    if let Some(crl) = t.crlfile.as_deref() {
        path_str("crlfile", crl)?;
        let store = b.cert_store_mut();
        store
            .add_lookup(X509Lookup::file())
            .and_then(|l| l.load_crl_file(crl, SslFiletype::PEM))
            .map_err(|err| e("crlfile", crl, err))?;
        store
            .set_flags(X509VerifyFlags::CRL_CHECK)
            .map_err(|err| e("crlfile", crl, err))?;
    }
    if let Some(dh) = t.dhparamfile.as_deref() {
        path_str("dhparamfile", dh)?;
        let pem =
            std::fs::read(dh).map_err(|err| format!("dhparamfile {}: {err}", dh.display()))?;
        let params =
            openssl::dh::Dh::params_from_pem(&pem).map_err(|err| e("dhparamfile", dh, err))?;
        b.set_tmp_dh(&params)
            .map_err(|err| e("dhparamfile", dh, err))?;
    }
    // `tls_version` is the lowest version accepted; the default allows 1.2 and 1.3.
    let min = match t.tls_version.as_deref() {
        Some("tlsv1.3") => SslVersion::TLS1_3,
        _ => SslVersion::TLS1_2,
    };
    b.set_min_proto_version(Some(min))
        .map_err(|err| format!("tls_version: {err}"))?;
    if let Some(c) = &t.ciphers {
        b.set_cipher_list(c)
            .map_err(|err| format!("ciphers {c}: {err}"))?;
    } else if t.psk_hint.is_some() {
        // The certificate suites stay first when there is a certificate.
        let list = if certificates {
            format!("{INTERMEDIATE_CIPHERS}:{PSK_CIPHERS}")
        } else {
            PSK_CIPHERS.to_string()
        };
        b.set_cipher_list(&list)
            .map_err(|err| format!("TLS-PSK cipher list: {err}"))?;
    }
    if let Some(c) = &t.ciphers_tls13 {
        b.set_ciphersuites(c)
            .map_err(|err| format!("ciphers_tls1.3 {c}: {err}"))?;
    }
    if t.require_certificate {
        b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    } else if !certificates {
        // TLS-PSK only: the identity is the PSK's, no certificate to ask for.
        b.set_verify(SslVerifyMode::NONE);
    } else if t.use_identity_as_username || t.use_subject_as_username {
        b.set_verify(SslVerifyMode::PEER);
    } else {
        b.set_verify(SslVerifyMode::NONE);
    }
    Ok(b)
}

/// Load `path`'s keys and install the server PSK callback and `hint`.
fn set_psk(b: &mut SslAcceptorBuilder, hint: &str, path: &Path) -> Result<(), String> {
    let keys = Arc::new(PskFile::load(path).map_err(|e| e.to_string())?);
    let index = psk_identity_index().ok_or("TLS-PSK set-up: no ex_data index")?;
    b.set_psk_server_callback(move |ssl, identity, out| {
        // An unknown identity, or one that is not text: 0 bytes of key, which
        // fails the handshake (unknown_psk_identity), as mosquitto does.
        let Some(identity) = identity else {
            return Ok(0);
        };
        let Some(key) = keys.key(identity) else {
            return Ok(0);
        };
        let Some(slot) = out.get_mut(..key.len()) else {
            return Ok(0);
        };
        slot.copy_from_slice(key);
        ssl.set_ex_data(index, String::from_utf8_lossy(identity).into_owned());
        Ok(key.len())
    });
    let c_hint = std::ffi::CString::new(hint).map_err(|_| "psk_hint: a NUL byte")?;
    // SAFETY: the builder's SSL_CTX is valid for the call; OpenSSL copies the
    // NUL-terminated hint (at most 128 bytes, else it returns 0).
    let ok = unsafe { SSL_CTX_use_psk_identity_hint(b.as_ptr().cast(), c_hint.as_ptr()) };
    if ok != 1 {
        return Err(format!("psk_hint {hint}: too long (at most 128 bytes)"));
    }
    Ok(())
}

/// The name a verified client certificate gives: its CN, or with `subject` the
/// whole subject (`CN=...,O=...`, most specific first, like mosquitto). On a
/// TLS-PSK connection, the PSK identity the client logged in with.
pub fn identity(ssl: &SslRef, subject: bool) -> Option<String> {
    if let Some(id) = psk_identity_index().and_then(|i| ssl.ex_data(i)) {
        return Some(id.clone());
    }
    let cert = ssl.peer_certificate()?;
    let name = cert.subject_name();
    if subject {
        let mut parts: Vec<String> = name
            .entries()
            .filter_map(|e| {
                let key = e.object().nid().short_name().ok()?;
                let value = e.data().to_string().ok()?;
                Some(format!("{key}={value}"))
            })
            .collect();
        parts.reverse();
        return (!parts.is_empty()).then(|| parts.join(","));
    }
    let cn = name.entries_by_nid(Nid::COMMONNAME).next()?;
    cn.data().to_string().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::asn1::Asn1Time;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::x509::{X509NameBuilder, X509};

    /// A self-signed EC certificate and its key, as PEM files in a fresh directory.
    fn self_signed() -> (std::path::PathBuf, std::path::PathBuf) {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("curve");
        let key = PKey::from_ec_key(EcKey::generate(&group).expect("key")).expect("pkey");
        let mut name = X509NameBuilder::new().expect("name");
        name.append_entry_by_nid(Nid::COMMONNAME, "midge-test")
            .expect("cn");
        let name = name.build();
        let mut b = X509::builder().expect("x509");
        b.set_version(2).expect("version");
        b.set_subject_name(&name).expect("subject");
        b.set_issuer_name(&name).expect("issuer");
        b.set_pubkey(&key).expect("pubkey");
        b.set_not_before(&Asn1Time::days_from_now(0).expect("time"))
            .expect("not before");
        b.set_not_after(&Asn1Time::days_from_now(1).expect("time"))
            .expect("not after");
        b.sign(&key, MessageDigest::sha256()).expect("sign");
        let cert = b.build();
        let dir = std::env::temp_dir().join(format!("midge-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&c, cert.to_pem().expect("pem")).expect("write cert");
        std::fs::write(&k, key.private_key_to_pem_pkcs8().expect("pem")).expect("write key");
        (c, k)
    }

    /// [issue 10 item 13] Clients may not renegotiate (SSL_OP_NO_RENEGOTIATION).
    #[test]
    fn the_acceptor_refuses_renegotiation() {
        let (certfile, keyfile) = self_signed();
        let t = TlsConfig {
            certfile: Some(certfile),
            keyfile: Some(keyfile),
            ..TlsConfig::default()
        };
        let b = builder(&t, None).expect("acceptor");
        assert!(b.options().contains(SslOptions::NO_RENEGOTIATION));
        assert!(acceptor(&t, None).is_ok());
    }
}
