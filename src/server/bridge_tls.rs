//! Client-side TLS for bridges. Certificates go through the `native-tls` crate;
//! TLS-PSK (`bridge_identity` + `bridge_psk`), which native-tls cannot do,
//! through the `openssl` crate that native-tls links anyway (as the server's
//! TLS-PSK listeners do). The connector is built once at start from the
//! bridge's settings, so an unreadable or invalid file stops start-up with a
//! clear message instead of a bridge that silently never connects.

use std::io::{self, Read, Write};
use std::path::Path;

use mio::net::TcpStream;
use native_tls::{Certificate, Identity, Protocol, TlsConnector};
use openssl::ssl::{self, SslConnector, SslMethod, SslVerifyMode, SslVersion};

use crate::bridge::config::BridgeTls;

/// A bridge's TLS connector (`bridge_tls_off.rs` has an uninhabited one).
pub enum Connector {
    /// Certificates: the remote's checked against `bridge_cafile`/`bridge_capath`.
    Certificates(TlsConnector),
    /// TLS-PSK: the key is the only credential on either side.
    Psk(SslConnector),
}

/// An established TLS link to the remote.
pub enum TlsStream {
    /// Over native-tls.
    Certificates(native_tls::TlsStream<TcpStream>),
    /// Over OpenSSL with a pre-shared key.
    Psk(ssl::SslStream<TcpStream>),
}

/// A TLS handshake waiting for the socket.
pub enum MidHandshake {
    /// Over native-tls.
    Certificates(native_tls::MidHandshakeTlsStream<TcpStream>),
    /// Over OpenSSL with a pre-shared key.
    Psk(ssl::MidHandshakeSslStream<TcpStream>),
}

/// Where a handshake step left the link.
pub enum Handshake {
    /// Established.
    Done(TlsStream),
    /// Call [`MidHandshake::handshake`] again when the socket is ready.
    Pending(MidHandshake),
    /// Failed: why, for the log.
    Failed(String),
}

impl Connector {
    /// Start the handshake on a connected socket; `host` is the name the
    /// remote's certificate must carry (and the SNI).
    pub fn connect(&self, host: &str, tcp: TcpStream) -> Handshake {
        match self {
            Connector::Certificates(c) => native_step(c.connect(host, tcp)),
            Connector::Psk(c) => match c.configure() {
                Ok(conf) => openssl_step(conf.connect(host, tcp)),
                Err(e) => Handshake::Failed(e.to_string()),
            },
        }
    }
}

impl MidHandshake {
    /// Go on with the handshake.
    pub fn handshake(self) -> Handshake {
        match self {
            MidHandshake::Certificates(m) => native_step(m.handshake()),
            MidHandshake::Psk(m) => openssl_step(m.handshake()),
        }
    }

    /// The socket under the handshake.
    pub fn get_mut(&mut self) -> &mut TcpStream {
        match self {
            MidHandshake::Certificates(m) => m.get_mut(),
            MidHandshake::Psk(m) => m.get_mut(),
        }
    }
}

impl TlsStream {
    /// The socket under the TLS link.
    pub fn get_mut(&mut self) -> &mut TcpStream {
        match self {
            TlsStream::Certificates(s) => s.get_mut(),
            TlsStream::Psk(s) => s.get_mut(),
        }
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            TlsStream::Certificates(s) => s.read(buf),
            TlsStream::Psk(s) => s.read(buf),
        }
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            TlsStream::Certificates(s) => s.write(buf),
            TlsStream::Psk(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            TlsStream::Certificates(s) => s.flush(),
            TlsStream::Psk(s) => s.flush(),
        }
    }
}

fn native_step(
    r: Result<native_tls::TlsStream<TcpStream>, native_tls::HandshakeError<TcpStream>>,
) -> Handshake {
    match r {
        Ok(s) => Handshake::Done(TlsStream::Certificates(s)),
        Err(native_tls::HandshakeError::WouldBlock(m)) => {
            Handshake::Pending(MidHandshake::Certificates(m))
        }
        Err(native_tls::HandshakeError::Failure(e)) => Handshake::Failed(e.to_string()),
    }
}

fn openssl_step(r: Result<ssl::SslStream<TcpStream>, ssl::HandshakeError<TcpStream>>) -> Handshake {
    match r {
        Ok(s) => Handshake::Done(TlsStream::Psk(s)),
        Err(ssl::HandshakeError::WouldBlock(m)) => Handshake::Pending(MidHandshake::Psk(m)),
        Err(ssl::HandshakeError::Failure(m)) => Handshake::Failed(m.error().to_string()),
        Err(ssl::HandshakeError::SetupFailure(e)) => Handshake::Failed(e.to_string()),
    }
}

/// Build the connector for one bridge.
pub fn connector(t: &BridgeTls) -> Result<Connector, String> {
    if let (Some(identity), Some(key)) = (&t.psk_identity, &t.psk_key) {
        return psk_connector(t, identity, key).map(Connector::Psk);
    }
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
    b.build()
        .map(Connector::Certificates)
        .map_err(|e| format!("bridge TLS: {e}"))
}

/// The TLS-PSK connector: PSK suites only (TLS 1.2) or TLS 1.3's PSK mode.
fn psk_connector(t: &BridgeTls, identity: &str, key: &[u8]) -> Result<SslConnector, String> {
    let err = |e: openssl::error::ErrorStack| format!("bridge TLS-PSK: {e}");
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(err)?;
    b.set_cipher_list(super::tls::PSK_CIPHERS).map_err(err)?;
    // A remote that answers with a certificate instead of taking the key (TLS
    // 1.3 falls back to certificates when the server does not select the
    // PSK) is refused: no CA is configured, and the system's must not stand
    // in for the key.
    b.set_verify_callback(SslVerifyMode::PEER, |_, _| false);
    b.set_min_proto_version(Some(match t.tls_version.as_deref() {
        Some("tlsv1.3") => SslVersion::TLS1_3,
        _ => SslVersion::TLS1_2,
    }))
    .map_err(err)?;
    if let Some(alpn) = &t.alpn {
        // The wire format: each protocol name preceded by its length.
        let len = u8::try_from(alpn.len()).map_err(|_| "bridge_alpn: longer than 255 bytes")?;
        let mut wire = vec![len];
        wire.extend_from_slice(alpn.as_bytes());
        b.set_alpn_protos(&wire).map_err(err)?;
    }
    let identity = identity.as_bytes().to_vec();
    let key = key.to_vec();
    b.set_psk_client_callback(move |_, _hint, id_out, key_out| {
        // The identity is written as a C string; lengths were bounded at
        // config load (OpenSSL's own limits), so these only guard.
        if identity.len() >= id_out.len() || key.len() > key_out.len() {
            return Ok(0);
        }
        id_out[..identity.len()].copy_from_slice(&identity);
        id_out[identity.len()] = 0;
        key_out[..key.len()].copy_from_slice(&key);
        Ok(key.len())
    });
    Ok(b.build())
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
