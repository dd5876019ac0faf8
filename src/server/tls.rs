//! Server-side TLS with the `openssl` crate: building a listener's acceptor from
//! mosquitto's directives, and reading the client certificate's name.
//!
//! Why not native-tls here: its acceptor cannot request or verify client
//! certificates and its OpenSSL profile turns TLS 1.3 off; the `openssl` crate it
//! links gives both with the same non-blocking resume pattern. (native-tls stays
//! the choice for outgoing connections: bridges.)

use std::path::Path;

use openssl::nid::Nid;
use openssl::ssl::{
    SslAcceptor, SslAcceptorBuilder, SslFiletype, SslMethod, SslOptions, SslRef, SslVerifyMode,
    SslVersion,
};
use openssl::x509::store::X509Lookup;
use openssl::x509::verify::X509VerifyFlags;

use crate::config::TlsConfig;

/// A path OpenSSL can take: UTF-8, no NUL byte (the crate would panic on one).
fn path_str<'a>(what: &str, p: &'a Path) -> Result<&'a str, String> {
    match p.to_str() {
        Some(s) if !s.contains('\0') => Ok(s),
        _ => Err(format!("{what} {}: unusable path", p.display())),
    }
}

/// Build the acceptor for one listener. Errors name the directive and file.
pub fn acceptor(t: &TlsConfig) -> Result<SslAcceptor, String> {
    Ok(builder(t)?.build())
}

/// The acceptor's settings, before they are frozen (tests look at them here).
fn builder(t: &TlsConfig) -> Result<SslAcceptorBuilder, String> {
    let e = |what: &str, p: &Path, err: openssl::error::ErrorStack| {
        format!("{what} {}: {err}", p.display())
    };
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())
        .map_err(|err| format!("TLS set-up: {err}"))?;
    // A client-initiated TLS 1.2 renegotiation makes the server redo a handshake's
    // public-key work on demand (a cheap way to burn the loop's CPU) and has no
    // use for MQTT; TLS 1.3 has no renegotiation at all.
    b.set_options(SslOptions::NO_RENEGOTIATION);
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
    }
    if let Some(c) = &t.ciphers_tls13 {
        b.set_ciphersuites(c)
            .map_err(|err| format!("ciphers_tls1.3 {c}: {err}"))?;
    }
    if t.require_certificate {
        b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    } else if t.use_identity_as_username || t.use_subject_as_username {
        b.set_verify(SslVerifyMode::PEER);
    } else {
        b.set_verify(SslVerifyMode::NONE);
    }
    Ok(b)
}

/// The name a verified client certificate gives: its CN, or with `subject` the
/// whole subject (`CN=...,O=...`, most specific first, like mosquitto).
pub fn identity(ssl: &SslRef, subject: bool) -> Option<String> {
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
        let b = builder(&t).expect("acceptor");
        assert!(b.options().contains(SslOptions::NO_RENEGOTIATION));
        assert!(acceptor(&t).is_ok());
    }
}
