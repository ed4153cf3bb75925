//! TLS for migration streams: rustls, TLS 1.3 only, the ring provider,
//! x509 certificates under one CA, both ends authenticated.
//!
//! Why TLS 1.3 only: both ends are this tool; 1.3 has no renegotiation
//! (rustls implements none in 1.2 either) and rustls offers no
//! post-handshake authentication, so a peer's certificate cannot change
//! once the stream flows: a certificate change mid-way is a handshake
//! message the connection refuses, failing the transfer.
//!
//! # The handshake, as each end sees it
//! In TLS 1.3 the client finishes its handshake before the server has
//! judged the client's certificate. So a receiver that accepts a sender
//! says so with [`GREETING`], and the sender waits for it before sending a
//! byte: a refused sender learns why (the receiver's alert) instead of
//! writing into a closed connection.
//!
//! The receiver peeks at the first bytes before rustls sees them, to tell
//! a plain-TCP sender (bytes that are no TLS record) from a broken
//! handshake.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    AlertDescription, CertificateError, ClientConfig, ClientConnection, RootCertStore,
    ServerConfig, ServerConnection, StreamOwned,
};

use super::socket::Socket;
use super::{NetError, NetSpec, TlsFiles};

/// What a receiver sends once it accepted the sender's certificate, before
/// the stream flows (TLS 1.3 gives the client no other sign of it).
pub const GREETING: &[u8; 14] = b"mlx5vf-tls-ok\n";

/// The first byte of a TLS record carrying a handshake message.
const HANDSHAKE_RECORD: u8 = 0x16;
/// The first byte of TLS record versions (3.x).
const RECORD_VERSION_MAJOR: u8 = 0x03;

/// The crypto provider: ring. rustls 0.23.48 deprecates ring's provider
/// because ring has no post-quantum key exchange (X25519MLKEM768, which
/// aws-lc-rs offers); aws-lc-rs builds AWS-LC's C sources, 90 s of this
/// project's 2 cores per build against ring's 20 s. The suites are the
/// same TLS 1.3 AEADs, with AES-NI/PCLMUL or ARMv8 AES where the CPU has
/// them. A recording of today's stream could be decrypted by a future
/// quantum computer: see README.md, "What TLS protects".
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The credential files of one end, resolved from [`TlsFiles`].
#[derive(Clone, Debug)]
struct Resolved {
    ca: PathBuf,
    crl: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

impl Resolved {
    /// `flag`'s file, else the directory's `name` (if it exists, when
    /// `optional`).
    fn pick(
        given: Option<&PathBuf>,
        dir: Option<&PathBuf>,
        name: &str,
        optional: bool,
    ) -> Option<PathBuf> {
        if let Some(given) = given {
            return Some(given.clone());
        }
        let in_dir = dir?.join(name);
        (!optional || in_dir.exists()).then_some(in_dir)
    }

    fn of(
        files: &TlsFiles,
        cert_name: &str,
        key_name: &str,
        optional_cert: bool,
    ) -> Result<Self, NetError> {
        let dir = files.dir.as_ref();
        let ca = Self::pick(files.ca.as_ref(), dir, "ca-cert.pem", false).ok_or_else(|| {
            NetError::MissingCredentials(
                "TLS needs the CA that signs the peer's certificate: give --tls-creds DIR \
                 (holding ca-cert.pem) or --tls-ca FILE"
                    .into(),
            )
        })?;
        let crl = Self::pick(files.crl.as_ref(), dir, "ca-crl.pem", true);
        let cert = Self::pick(files.cert.as_ref(), dir, cert_name, optional_cert);
        let key = Self::pick(files.key.as_ref(), dir, key_name, optional_cert);
        if !optional_cert && (cert.is_none() || key.is_none()) {
            return Err(NetError::MissingCredentials(format!(
                "a TLS receiver needs its certificate and key: give --tls-creds DIR (holding \
                 {cert_name} and {key_name}) or --tls-cert and --tls-key"
            )));
        }
        let partner = |have: &PathBuf, lack: &str| {
            NetError::MissingCredentials(format!(
                "{} has no partner: a certificate needs its key and a key its certificate \
                 ({lack}, or --tls-cert / --tls-key)",
                have.display()
            ))
        };
        match (&cert, &key) {
            (Some(c), None) => return Err(partner(c, key_name)),
            (None, Some(k)) => return Err(partner(k, cert_name)),
            _ => {}
        }
        Ok(Self { ca, crl, cert, key })
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, NetError> {
        let mut roots = RootCertStore::empty();
        for cert in certificates(&self.ca)? {
            roots.add(cert).map_err(|e| {
                NetError::Credentials(format!("{}: not a CA certificate: {e}", self.ca.display()))
            })?;
        }
        Ok(Arc::new(roots))
    }

    fn crls(&self) -> Result<Vec<CertificateRevocationListDer<'static>>, NetError> {
        let Some(path) = &self.crl else {
            return Ok(Vec::new());
        };
        let bad =
            |e: &dyn std::fmt::Display| NetError::Credentials(format!("{}: {e}", path.display()));
        let crls = CertificateRevocationListDer::pem_file_iter(path)
            .map_err(|e| bad(&e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(&e))?;
        if crls.is_empty() {
            return Err(bad(&"no X509 CRL in it"));
        }
        Ok(crls)
    }

    /// This end's certificate chain and key, if it has them.
    fn identity(
        &self,
    ) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, NetError> {
        let (Some(cert), Some(key)) = (&self.cert, &self.key) else {
            return Ok(None);
        };
        let chain = certificates(cert)?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
            NetError::Credentials(format!("{}: no usable private key: {e}", key.display()))
        })?;
        Ok(Some((chain, key)))
    }
}

/// Every certificate in a PEM file; at least one.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, NetError> {
    let bad = |e: &dyn std::fmt::Display| NetError::Credentials(format!("{}: {e}", path.display()));
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&e))?;
    if certs.is_empty() {
        return Err(bad(&"no PEM certificate in it"));
    }
    Ok(certs)
}

fn config_error(e: rustls::Error) -> NetError {
    NetError::Credentials(format!("TLS configuration: {e}"))
}

/// A sender's TLS configuration.
pub(crate) struct ClientSide {
    config: Arc<ClientConfig>,
    files: Resolved,
    dir: Option<PathBuf>,
}

impl ClientSide {
    /// Loads the sender's credentials (`client-*.pem`).
    pub(crate) fn new(files: &TlsFiles) -> Result<Self, NetError> {
        let resolved = Resolved::of(files, "client-cert.pem", "client-key.pem", true)?;
        let verifier = WebPkiServerVerifier::builder_with_provider(resolved.roots()?, provider())
            .with_crls(resolved.crls()?)
            .build()
            .map_err(|e| NetError::Credentials(format!("TLS: {e}")))?;
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(config_error)?
            .with_webpki_verifier(verifier);
        let mut config = match resolved.identity()? {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(config_error)?,
            None => builder.with_no_client_auth(),
        };
        // One connection per process: nothing to resume.
        config.resumption = rustls::client::Resumption::disabled();
        Ok(Self {
            config: Arc::new(config),
            files: resolved,
            dir: files.dir.clone(),
        })
    }

    /// The handshake, then the receiver's [`GREETING`].
    pub(crate) fn connect(
        &self,
        mut socket: Socket,
        name: &str,
        io_timeout: Duration,
        spec: &NetSpec,
    ) -> Result<StreamOwned<ClientConnection, Socket>, NetError> {
        let failed = |reason: String| NetError::Handshake {
            spec: spec.to_string(),
            reason,
        };
        let server_name = ServerName::try_from(name.to_owned()).map_err(|_| {
            failed(format!(
                "{name:?} is not a host name or IP address to check the receiver's \
                 certificate against (--tls-hostname)"
            ))
        })?;
        let conn = ClientConnection::new(Arc::clone(&self.config), server_name)
            .map_err(|e| failed(format!("TLS: {e}")))?;
        socket.set_deadline(Instant::now() + io_timeout);
        let mut stream = StreamOwned::new(conn, socket);
        let mut greeting = [0u8; GREETING.len()];
        let result = (|| {
            while stream.conn.is_handshaking() {
                stream.conn.complete_io(&mut stream.sock)?;
            }
            stream.read_exact(&mut greeting)
        })();
        if let Err(e) = result {
            send_alert(&mut stream.conn, &mut stream.sock);
            if stream.sock.interrupted() {
                return Err(NetError::Interrupted(e));
            }
            return Err(failed(self.describe(&e, name)));
        }
        if &greeting != GREETING {
            return Err(failed(
                "the receiver is not an mlx5vf tls-listen:// endpoint (it did not greet)".into(),
            ));
        }
        stream.sock.clear_deadline();
        Ok(stream)
    }

    /// Why a sender's handshake failed, in words.
    fn describe(&self, e: &io::Error, name: &str) -> String {
        let Some(t) = error_of(e) else {
            return match e.kind() {
                io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => {
                    "the receiver closed the connection during the TLS handshake (is it a \
                     tcp-listen:// endpoint?)"
                        .into()
                }
                _ => format!("TLS handshake: {e}"),
            };
        };
        match t {
            rustls::Error::InvalidCertificate(c) => match c {
                CertificateError::NotValidForNameContext { presented, .. } => format!(
                    "the receiver's certificate is not valid for {name:?}: it names {}; \
                     connect by one of those names, or give it with --tls-hostname",
                    presented
                        .iter()
                        .map(|n| bare_name(n))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                CertificateError::NotValidForName => format!(
                    "the receiver's certificate is not valid for {name:?} (give the name it \
                     carries with --tls-hostname)"
                ),
                CertificateError::UnknownIssuer | CertificateError::BadSignature => format!(
                    "the receiver's certificate is not signed by the CA in {}",
                    self.files.ca.display()
                ),
                other => format!("the receiver's certificate: {}", certificate_words(other)),
            },
            rustls::Error::AlertReceived(AlertDescription::CertificateRequired) => {
                let mut s = String::from(
                    "the receiver demands a client certificate and this sender has none",
                );
                if self.files.cert.is_none() {
                    match &self.dir {
                        Some(d) => {
                            let _ = write!(
                                s,
                                " (no {} and no --tls-cert)",
                                d.join("client-cert.pem").display()
                            );
                        }
                        None => s.push_str(" (give --tls-cert and --tls-key)"),
                    }
                }
                s
            }
            rustls::Error::AlertReceived(a @ AlertDescription::UnknownCA) => format!(
                "the receiver refused this sender's certificate: not signed by its CA (TLS \
                 alert {})",
                alert_name(*a)
            ),
            rustls::Error::AlertReceived(
                a @ (AlertDescription::BadCertificate
                | AlertDescription::CertificateRevoked
                | AlertDescription::CertificateExpired
                | AlertDescription::CertificateUnknown
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::AccessDenied),
            ) => format!(
                "the receiver refused this sender's certificate (TLS alert {})",
                alert_name(*a)
            ),
            rustls::Error::AlertReceived(a) => format!(
                "the receiver ended the handshake with TLS alert {}",
                alert_name(*a)
            ),
            rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
                "the receiver does not speak TLS (is it a tcp-listen:// endpoint?)".into()
            }
            other => format!("TLS handshake: {other}"),
        }
    }
}

/// A receiver's TLS configuration.
pub(crate) struct ServerSide {
    config: Arc<ServerConfig>,
}

/// Why a receiver did not take a connection.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// The peer failed the handshake; the listener goes on.
    Peer(String),
    /// A signal stopped the wait; the listener stops.
    Interrupted(io::Error),
}

impl ServerSide {
    /// Loads the receiver's credentials (`server-*.pem`); client
    /// certificates are required.
    pub(crate) fn new(files: &TlsFiles) -> Result<Self, NetError> {
        let resolved = Resolved::of(files, "server-cert.pem", "server-key.pem", false)?;
        let verifier = WebPkiClientVerifier::builder_with_provider(resolved.roots()?, provider())
            .with_crls(resolved.crls()?)
            .build()
            .map_err(|e| NetError::Credentials(format!("TLS: {e}")))?;
        let Some((chain, key)) = resolved.identity()? else {
            return Err(NetError::MissingCredentials(
                "a TLS receiver needs its certificate and key".into(),
            ));
        };
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(config_error)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(config_error)?;
        // No resumption: every sender shows its certificate.
        config.send_tls13_tickets = 0;
        Ok(Self {
            config: Arc::new(config),
        })
    }

    /// The handshake with one connection, by `deadline`; then the
    /// [`GREETING`].
    pub(crate) fn accept(
        &self,
        mut socket: Socket,
        deadline: Instant,
    ) -> Result<StreamOwned<ServerConnection, Socket>, Refusal> {
        socket.set_deadline(deadline);
        let refuse = |socket: &Socket, e: io::Error, reason: String| {
            if socket.interrupted() {
                Refusal::Interrupted(e)
            } else {
                socket.abort_on_close();
                Refusal::Peer(reason)
            }
        };
        let mut first = [0u8; 3];
        match socket.peek(&mut first) {
            Ok(0) => {
                let e = io::Error::from(io::ErrorKind::UnexpectedEof);
                return Err(refuse(
                    &socket,
                    e,
                    "closed the connection without a TLS handshake".into(),
                ));
            }
            Ok(n) => {
                let seen = first.get(..n).unwrap_or_default();
                let record = seen.first() == Some(&HANDSHAKE_RECORD)
                    && seen.get(1).is_none_or(|&v| v == RECORD_VERSION_MAJOR);
                if !record {
                    let mut hex = String::new();
                    for b in seen {
                        let _ = write!(hex, " {b:02x}");
                    }
                    let e = io::Error::from(io::ErrorKind::InvalidData);
                    return Err(refuse(
                        &socket,
                        e,
                        format!(
                            "not a TLS client (its first bytes:{hex}): a plain tcp:// sender? \
                             This listener takes tls:// only"
                        ),
                    ));
                }
            }
            Err(e) => {
                let reason = handshake_io_words(&e);
                return Err(refuse(&socket, e, reason));
            }
        }
        let conn = match ServerConnection::new(Arc::clone(&self.config)) {
            Ok(c) => c,
            Err(e) => {
                let reason = format!("TLS: {e}");
                return Err(refuse(&socket, io::Error::other(e), reason));
            }
        };
        let mut stream = StreamOwned::new(conn, socket);
        let result = (|| {
            while stream.conn.is_handshaking() {
                stream.conn.complete_io(&mut stream.sock)?;
            }
            stream.write_all(GREETING)?;
            stream.flush()
        })();
        match result {
            Ok(()) => {
                stream.sock.clear_deadline();
                Ok(stream)
            }
            Err(e) => {
                send_alert(&mut stream.conn, &mut stream.sock);
                let reason = match error_of(&e) {
                    Some(t) => client_refusal_words(t),
                    None => handshake_io_words(&e),
                };
                Err(refuse(&stream.sock, e, reason))
            }
        }
    }
}

/// Sends what rustls still holds after a failed handshake: the alert that
/// tells the peer why (rustls writes it once, and a write may take only part
/// of it).
fn send_alert<S: rustls::SideData>(conn: &mut rustls::ConnectionCommon<S>, socket: &mut Socket) {
    while conn.wants_write() {
        match conn.write_tls(socket) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
}

/// A receiver's words for a connection error during the handshake.
fn handshake_io_words(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => "closed the connection during the TLS handshake".into(),
        io::ErrorKind::ConnectionReset => "reset the connection during the TLS handshake".into(),
        // The socket's own words (who, how long).
        io::ErrorKind::TimedOut => e.to_string(),
        _ => format!("TLS handshake: {e}"),
    }
}

/// A receiver's words for why it refused a sender.
fn client_refusal_words(e: &rustls::Error) -> String {
    match e {
        rustls::Error::NoCertificatesPresented => {
            "presented no client certificate (this listener demands one signed by its CA)".into()
        }
        rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        ) => "its client certificate is not signed by this listener's CA".into(),
        rustls::Error::InvalidCertificate(c) => {
            format!("its client certificate: {}", certificate_words(c))
        }
        rustls::Error::AlertReceived(
            a @ (AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateRevoked
            | AlertDescription::UnsupportedCertificate),
        ) => format!(
            "it refused this listener's certificate (TLS alert {}): check the name it connects \
             to and its CA",
            alert_name(*a)
        ),
        rustls::Error::AlertReceived(a) => {
            format!("it ended the handshake with TLS alert {}", alert_name(*a))
        }
        rustls::Error::PeerIncompatible(p) => {
            format!("no common TLS 1.3 parameters ({p:?}); this listener speaks TLS 1.3 only")
        }
        other => format!("TLS handshake: {other}"),
    }
}

/// A certificate problem other than its issuer or name, in words.
fn certificate_words(c: &CertificateError) -> String {
    match c {
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            "it has expired".into()
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "it is not valid yet (check both clocks)".into()
        }
        CertificateError::Revoked => "it is revoked (ca-crl.pem)".into(),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "its extendedKeyUsage does not allow this use (serverAuth for a receiver, \
             clientAuth for a sender)"
                .into()
        }
        other => format!("{other:?}"),
    }
}

/// A subject name as rustls reports it (`DnsName("dst.example")`,
/// `IpAddress(10.0.0.2)`), as it is written (`dst.example`, `10.0.0.2`).
fn bare_name(presented: &str) -> &str {
    let inner = presented
        .strip_prefix("DnsName(")
        .or_else(|| presented.strip_prefix("IpAddress("))
        .and_then(|n| n.strip_suffix(')'));
    inner.map_or(presented, |n| n.trim_matches('"'))
}

/// A TLS alert by its name in the RFC (`unknown_ca`).
fn alert_name(a: AlertDescription) -> String {
    let camel = format!("{a:?}");
    let mut snake = String::with_capacity(camel.len() + 4);
    for (i, ch) in camel.chars().enumerate() {
        // "UnknownCA" -> "unknown_ca": a capital after a lower-case letter
        // starts a word.
        let after_lower = i > 0 && camel.chars().nth(i - 1).is_some_and(|p| p.is_lowercase());
        if ch.is_uppercase() && after_lower {
            snake.push('_');
        }
        snake.push(ch.to_ascii_lowercase());
    }
    snake
}

/// The rustls error inside an I/O error, if there is one.
pub(crate) fn error_of(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref().and_then(|inner| inner.downcast_ref())
}

/// A TLS error on an established stream, in words.
pub(crate) fn describe_stream_error(e: &rustls::Error, peer: SocketAddr, bytes: u64) -> String {
    match e {
        rustls::Error::AlertReceived(a) => format!(
            "{peer} sent TLS alert {} after {bytes} bytes: the stream was cut short",
            alert_name(*a)
        ),
        rustls::Error::InappropriateHandshakeMessage { .. }
        | rustls::Error::InappropriateMessage { .. } => format!(
            "{peer} sent a handshake message after {bytes} bytes (a new certificate or \
             renegotiation mid-stream, which TLS 1.3 does not allow): refused"
        ),
        rustls::Error::DecryptError => format!(
            "a TLS record from {peer} failed authentication after {bytes} bytes: the stream \
             was altered in transit"
        ),
        other => format!("TLS error with {peer} after {bytes} bytes: {other}"),
    }
}

/// The negotiated cipher suite's name (`TLS13_AES_256_GCM_SHA384`).
pub(crate) fn suite_name(conn: &rustls::CommonState) -> Option<String> {
    conn.negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()))
}

/// Whether this CPU has the AES and carry-less multiply instructions
/// ring's AES-GCM uses when present (it picks its code path at run time):
/// `aes`+`pclmulqdq` on x86-64, `aes`+`pmull` on aarch64.
pub fn aes_hardware() -> Option<&'static str> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("aes")
        && std::arch::is_x86_feature_detected!("pclmulqdq")
    {
        return Some("x86_64 aes+pclmulqdq");
    }
    #[cfg(target_arch = "aarch64")]
    if std::arch::is_aarch64_feature_detected!("aes")
        && std::arch::is_aarch64_feature_detected!("pmull")
    {
        return Some("aarch64 aes+pmull");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presented_names_read_as_written() {
        assert_eq!(bare_name("DnsName(\"dst.example\")"), "dst.example");
        assert_eq!(bare_name("IpAddress(10.0.0.2)"), "10.0.0.2");
        assert_eq!(bare_name("something else"), "something else");
    }

    /// What a peer would need to change its certificate mid-stream (TLS
    /// 1.3 has no renegotiation) fails the stream with these words.
    #[test]
    fn a_handshake_message_mid_stream_is_named() {
        let peer: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let e = rustls::Error::InappropriateHandshakeMessage {
            expect_types: vec![],
            got_type: rustls::HandshakeType::Certificate,
        };
        let words = describe_stream_error(&e, peer, 5);
        assert!(
            words.contains("sent a handshake message after 5 bytes (a new certificate"),
            "{words}"
        );
        let alert = rustls::Error::AlertReceived(AlertDescription::UserCanceled);
        assert!(
            describe_stream_error(&alert, peer, 9)
                .contains("sent TLS alert user_canceled after 9 bytes")
        );
    }

    #[test]
    fn alert_names_follow_the_rfc() {
        assert_eq!(alert_name(AlertDescription::UnknownCA), "unknown_ca");
        assert_eq!(
            alert_name(AlertDescription::CertificateRequired),
            "certificate_required"
        );
        assert_eq!(
            alert_name(AlertDescription::BadCertificate),
            "bad_certificate"
        );
    }

    #[test]
    fn a_receiver_needs_every_file_a_sender_only_the_ca() {
        let dir = TlsFiles {
            dir: Some("/nonexistent-creds".into()),
            ..TlsFiles::default()
        };
        let server = Resolved::of(&dir, "server-cert.pem", "server-key.pem", false).unwrap();
        assert_eq!(
            server.cert.as_deref(),
            Some(Path::new("/nonexistent-creds/server-cert.pem"))
        );
        // Absent client files: no client certificate.
        let client = Resolved::of(&dir, "client-cert.pem", "client-key.pem", true).unwrap();
        assert_eq!((client.cert, client.key, client.crl), (None, None, None));
        let none = TlsFiles::default();
        let e = Resolved::of(&none, "client-cert.pem", "client-key.pem", true).unwrap_err();
        assert!(e.is_usage() && e.to_string().contains("--tls-ca"), "{e}");
        let half = TlsFiles {
            ca: Some("ca.pem".into()),
            cert: Some("c.pem".into()),
            ..TlsFiles::default()
        };
        let e = Resolved::of(&half, "client-cert.pem", "client-key.pem", true).unwrap_err();
        assert!(e.to_string().contains("c.pem has no partner"), "{e}");
    }
}
