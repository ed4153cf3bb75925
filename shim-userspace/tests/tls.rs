//! Migration streams over TLS (issue 20), with a CA and certificates made
//! here (rcgen): the mutual-TLS round trip; senders the receiver must refuse
//! (no certificate, another CA's, plain TCP) and a receiver the sender must
//! refuse (a certificate for another name), none of which changes the
//! destination; a listener that keeps waiting for the right sender; and
//! streams that break mid-way (cut, reset, tampered, an injected alert or
//! handshake, silence), each failing the load with its cause in one line
//! and the device reset out of RESUMING.
//!
//! The sides run in threads of this process through the library (as the
//! tool does: [`net::connect`] / [`net::accept`], then `transfer`), so the
//! destination's digest can be read before and after; the listener test
//! runs the binary, for the lines a user sees.
#![cfg(all(feature = "cli", feature = "sim", feature = "tls"))]
mod common;

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use mlx5vf::backend::{DriverOptions, MigrationDevice, open};
use mlx5vf::interrupt::Interrupt;
use mlx5vf::net::{self, NetOptions, NetSpec, TlsFiles};
use mlx5vf::transfer::{self, Aftermath, Quiet, SaveOptions};
use mlx5vf_core::vfio::MigState;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use common::bin;

const SOURCE: &str = "sim:state=8M,object=64K-512K,seed=5";
const DESTINATION: &str = "sim:state=1M,seed=99";

fn dev(spec: &str) -> Box<dyn MigrationDevice> {
    open(spec, &DriverOptions::default()).unwrap()
}

fn digest(spec: &str) -> String {
    dev(spec).digest().unwrap()
}

/// A CA that signs certificates.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Self {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    /// A leaf for `names` (DNS names or IP addresses), for `purpose`:
    /// (certificate PEM, key PEM).
    fn leaf(&self, names: &[&str], purpose: ExtendedKeyUsagePurpose) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![purpose];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A directory in QEMU's tls-creds-x509 layout under the test's own
/// scratch directory.
fn creds(scratch: &Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = scratch.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for (file, text) in files {
        std::fs::write(dir.join(file), text).unwrap();
    }
    dir
}

/// Every credential directory the tests use.
struct Pki {
    scratch: PathBuf,
    receiver: PathBuf,
    sender: PathBuf,
    sender_without_cert: PathBuf,
    sender_of_another_ca: PathBuf,
    misnamed_receiver: PathBuf,
}

impl Pki {
    fn new(test: &str) -> Self {
        let scratch =
            std::env::temp_dir().join(format!("mlx5vf-tls-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&scratch);
        let ca = Ca::new("mlx5vf test CA");
        let other = Ca::new("another CA");
        let ca_pem = ca.issuer.pem();
        let (server_cert, server_key) = ca.leaf(
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) =
            ca.leaf(&["src.example"], ExtendedKeyUsagePurpose::ClientAuth);
        let (foreign_cert, foreign_key) =
            other.leaf(&["src.example"], ExtendedKeyUsagePurpose::ClientAuth);
        let (misnamed_cert, misnamed_key) =
            ca.leaf(&["elsewhere.example"], ExtendedKeyUsagePurpose::ServerAuth);
        Self {
            receiver: creds(
                &scratch,
                "receiver",
                &[
                    ("ca-cert.pem", &ca_pem),
                    ("server-cert.pem", &server_cert),
                    ("server-key.pem", &server_key),
                ],
            ),
            sender: creds(
                &scratch,
                "sender",
                &[
                    ("ca-cert.pem", &ca_pem),
                    ("client-cert.pem", &client_cert),
                    ("client-key.pem", &client_key),
                ],
            ),
            sender_without_cert: creds(&scratch, "anonymous", &[("ca-cert.pem", &ca_pem)]),
            sender_of_another_ca: creds(
                &scratch,
                "foreign",
                &[
                    ("ca-cert.pem", &ca_pem),
                    ("client-cert.pem", &foreign_cert),
                    ("client-key.pem", &foreign_key),
                ],
            ),
            misnamed_receiver: creds(
                &scratch,
                "misnamed",
                &[
                    ("ca-cert.pem", &ca_pem),
                    ("server-cert.pem", &misnamed_cert),
                    ("server-key.pem", &misnamed_key),
                ],
            ),
            scratch,
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn options(dir: &Path) -> NetOptions {
    NetOptions {
        tls: TlsFiles {
            dir: Some(dir.to_owned()),
            ..TlsFiles::default()
        },
        ..NetOptions::default()
    }
}

/// What a receiving side saw.
struct Received {
    /// The refused peers, one line each.
    notices: Vec<String>,
    /// Why it failed (accepting or loading), one line.
    error: Option<String>,
    /// How a failed load left the device.
    aftermath: Option<Aftermath>,
    /// The destination's digest before and after.
    before: String,
    after: String,
    cipher_suite: Option<String>,
}

/// A receiver in a thread, doing what `mlx5vf load -i tls-listen://` does.
fn receiver(spec: String, opts: NetOptions) -> JoinHandle<Received> {
    thread::spawn(move || {
        let mut dst = dev(DESTINATION);
        let before = dst.digest().unwrap();
        let mut notices = Vec::new();
        let listen = NetSpec::receiver(&spec).unwrap();
        let accepted = net::accept(&listen, &opts, &Interrupt::new(), &mut |n| {
            notices.push(n.to_string());
        });
        let (error, aftermath, cipher_suite) = match accepted {
            Err(e) => (Some(e.to_string()), None, None),
            Ok(mut input) => {
                let suite = input.cipher_suite();
                match transfer::load(dst.as_mut(), &mut input, &Quiet) {
                    Ok(_) => {
                        input.confirm().unwrap();
                        (None, None, suite)
                    }
                    Err(e) => (Some(e.to_string()), Some(e.device), suite),
                }
            }
        };
        Received {
            notices,
            error,
            aftermath,
            before,
            after: dst.digest().unwrap(),
            cipher_suite,
        }
    })
}

/// A sender doing what `mlx5vf save -o tls://` does; its error as one line.
fn send(spec: &str, opts: &NetOptions) -> Result<String, String> {
    let mut src = dev(SOURCE);
    let target = NetSpec::sender(spec).unwrap();
    let mut out =
        net::connect(&target, opts, &Interrupt::new(), &mut |_| {}).map_err(|e| e.to_string())?;
    transfer::save(src.as_mut(), &mut out, &SaveOptions::default(), &Quiet)
        .map_err(|e| e.to_string())?;
    out.finish().map_err(|e| e.to_string())?;
    Ok(src.digest().unwrap())
}

fn one_line(s: &str) -> &str {
    assert!(!s.contains('\n'), "{s:?} is not one line");
    s
}

#[test]
fn a_mutual_tls_round_trip_matches_digests() {
    let pki = Pki::new("roundtrip");
    let port = free_port();
    let listening = receiver(
        format!("tls-listen://127.0.0.1:{port}"),
        options(&pki.receiver),
    );
    let sent = send(&format!("tls://127.0.0.1:{port}"), &options(&pki.sender)).unwrap();
    let got = listening.join().unwrap();
    assert_eq!(got.error, None);
    assert!(got.notices.is_empty(), "{:?}", got.notices);
    assert_ne!(got.before, sent, "the destination must start elsewhere");
    assert_eq!(got.after, sent);
    assert_eq!(sent, digest(SOURCE));
    let suite = got.cipher_suite.unwrap();
    assert!(suite.starts_with("TLS13_"), "{suite}");
    // By DNS name too: the certificate names localhost.
    let port = free_port();
    let listening = receiver(
        format!("tls-listen://127.0.0.1:{port}"),
        options(&pki.receiver),
    );
    send(&format!("tls://localhost:{port}"), &options(&pki.sender)).unwrap();
    assert_eq!(listening.join().unwrap().error, None);
}

/// Each bad peer is refused with its own one-line reason on both sides;
/// the listener reports it, waits on, gives up at its accept timeout, and
/// the destination's state is what it was.
#[test]
fn refused_peers_change_nothing() {
    let pki = Pki::new("refused");
    let accept_timeout = Duration::from_secs(3);
    let cases: [(&str, &Path, &Path, &str, &str); 4] = [
        (
            "no client certificate",
            &pki.receiver,
            &pki.sender_without_cert,
            "demands a client certificate and this sender has none",
            "presented no client certificate",
        ),
        (
            "another CA's client certificate",
            &pki.receiver,
            &pki.sender_of_another_ca,
            "refused this sender's certificate",
            "not signed by this listener's CA",
        ),
        (
            "a receiver certificate for another name",
            &pki.misnamed_receiver,
            &pki.sender,
            "is not valid for \"127.0.0.1\": it names elsewhere.example",
            "it refused this listener's certificate (TLS alert",
        ),
        (
            "plain TCP to a TLS listener",
            &pki.receiver,
            &pki.sender,
            "reset the connection",
            "not a TLS client",
        ),
    ];
    let runs: Vec<_> = cases
        .iter()
        .map(|(what, receiver_dir, sender_dir, _, _)| {
            let port = free_port();
            let opts = NetOptions {
                accept_timeout,
                ..options(receiver_dir)
            };
            let listening = receiver(format!("tls-listen://127.0.0.1:{port}"), opts);
            let scheme = if what.starts_with("plain") {
                "tcp"
            } else {
                "tls"
            };
            let sent = send(
                &format!("{scheme}://127.0.0.1:{port}"),
                &options(sender_dir),
            );
            (listening, sent)
        })
        .collect();
    let mut lines = HashSet::new();
    for ((what, _, _, sender_says, listener_says), (listening, sent)) in cases.iter().zip(runs) {
        let sender_error = sent.expect_err(what);
        let got = listening.join().unwrap();
        assert!(
            one_line(&sender_error).contains(sender_says),
            "{what}: the sender said {sender_error:?}"
        );
        assert_eq!(got.notices.len(), 1, "{what}: {:?}", got.notices);
        let notice = one_line(&got.notices[0]);
        assert!(
            notice.starts_with("refused 127.0.0.1:") && notice.contains(listener_says),
            "{what}: the listener said {notice:?}"
        );
        let error = got.error.unwrap();
        assert!(
            one_line(&error).contains("no authenticated sender within 3s (refused 1; the last: "),
            "{what}: {error}"
        );
        assert_eq!(got.after, got.before, "{what}: the destination changed");
        assert!(lines.insert(sender_error), "{what}: the same words twice");
        let reason = notice.split_once(": ").unwrap().1.to_owned();
        assert!(lines.insert(reason), "{what}: the same words twice");
    }
}

/// A revoked sender (ca-crl.pem in the listener's directory) is refused.
#[test]
fn a_revoked_sender_is_refused() {
    let pki = Pki::new("revoked");
    let ca = Ca::new("revoking CA");
    let ca_pem = ca.issuer.pem();
    let (server_cert, server_key) = ca.leaf(&["127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
    let mut params = CertificateParams::new(vec!["src.example".to_owned()]).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.serial_number = Some(4242u64.into());
    let key = KeyPair::generate().unwrap();
    let client_cert = params.signed_by(&key, &ca.issuer).unwrap().pem();
    let crl = rcgen::CertificateRevocationListParams {
        this_update: rcgen::date_time_ymd(2024, 1, 1),
        next_update: rcgen::date_time_ymd(2099, 1, 1),
        crl_number: 1u64.into(),
        issuing_distribution_point: None,
        revoked_certs: vec![rcgen::RevokedCertParams {
            serial_number: 4242u64.into(),
            revocation_time: rcgen::date_time_ymd(2024, 1, 1),
            reason_code: Some(rcgen::RevocationReason::KeyCompromise),
            invalidity_date: None,
        }],
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    }
    .signed_by(&ca.issuer)
    .unwrap()
    .pem()
    .unwrap();
    let receiver_dir = creds(
        &pki.scratch,
        "crl-receiver",
        &[
            ("ca-cert.pem", &ca_pem),
            ("ca-crl.pem", &crl),
            ("server-cert.pem", &server_cert),
            ("server-key.pem", &server_key),
        ],
    );
    let sender_dir = creds(
        &pki.scratch,
        "crl-sender",
        &[
            ("ca-cert.pem", &ca_pem),
            ("client-cert.pem", &client_cert),
            ("client-key.pem", &key.serialize_pem()),
        ],
    );
    let port = free_port();
    let opts = NetOptions {
        accept_timeout: Duration::from_secs(2),
        ..options(&receiver_dir)
    };
    let listening = receiver(format!("tls-listen://127.0.0.1:{port}"), opts);
    let e = send(&format!("tls://127.0.0.1:{port}"), &options(&sender_dir)).unwrap_err();
    assert!(e.contains("refused this sender's certificate"), "{e}");
    let got = listening.join().unwrap();
    assert!(
        got.notices[0].contains("it is revoked"),
        "{:?}",
        got.notices
    );
    assert_eq!(got.after, got.before);
}

/// What a man in the middle does to the sender's records.
#[derive(Clone)]
enum Mischief {
    /// Closes both directions (FIN, no close_notify).
    Cut,
    /// Stops forwarding and keeps the connections open.
    Stall,
    /// Flips one bit of the record.
    Flip,
    /// Sends these bytes (whole records) before it, then closes.
    Inject(Vec<u8>),
}

/// A TCP proxy to `upstream` that forwards the sender's TLS records whole
/// and plays `mischief` on the first record that starts after `after`
/// bytes; the other direction is copied as it is.
fn proxy(upstream: SocketAddr, after: usize, mischief: Mischief) -> (u16, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = thread::spawn(move || {
        let (mut client, _) = listener.accept().unwrap();
        let mut server = loop {
            match TcpStream::connect(upstream) {
                Ok(s) => break s,
                Err(_) => thread::sleep(Duration::from_millis(50)),
            }
        };
        let (mut back_from, mut back_to) =
            (server.try_clone().unwrap(), client.try_clone().unwrap());
        let back = thread::spawn(move || {
            let _ = io::copy(&mut back_from, &mut back_to);
            let _ = back_to.shutdown(Shutdown::Write);
        });
        let mut forwarded = 0usize;
        let mut flipped = false;
        let mut header = [0u8; 5];
        loop {
            if client.read_exact(&mut header).is_err() {
                let _ = server.shutdown(Shutdown::Write);
                break;
            }
            let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
            let mut body = vec![0u8; len];
            if client.read_exact(&mut body).is_err() {
                break;
            }
            if forwarded >= after {
                match &mischief {
                    Mischief::Cut => {
                        let _ = server.shutdown(Shutdown::Both);
                        let _ = client.shutdown(Shutdown::Both);
                        break;
                    }
                    Mischief::Stall => {
                        // Until the receiver gives up and closes its end.
                        let _ = back.join();
                        return;
                    }
                    Mischief::Flip => {
                        body[len / 2] ^= 0x10;
                        flipped = true;
                    }
                    Mischief::Inject(bytes) => {
                        server.write_all(bytes).unwrap();
                        // Hold the connection until the receiver answers.
                        let _ = back.join();
                        return;
                    }
                }
            }
            server.write_all(&header).unwrap();
            if server.write_all(&body).is_err() {
                break;
            }
            forwarded += 5 + len;
            if flipped {
                // One flipped record is enough; forward the rest as is.
                let _ = io::copy(&mut client, &mut server);
                let _ = server.shutdown(Shutdown::Write);
                break;
            }
        }
        let _ = back.join();
    });
    (port, handle)
}

/// A load broken mid-way by `mischief` after 1 MiB: the receiver's one
/// line, and how the load left the device.
fn broken_load(pki: &Pki, mischief: Mischief, io_timeout: Duration) -> Received {
    let port = free_port();
    let opts = NetOptions {
        io_timeout,
        ..options(&pki.receiver)
    };
    let listening = receiver(format!("tls-listen://127.0.0.1:{port}"), opts);
    let upstream: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let (proxy_port, proxied) = proxy(upstream, 1 << 20, mischief);
    let sender_opts = NetOptions {
        // The receiver's certificate names 127.0.0.1; the proxy listens there too.
        io_timeout,
        ..options(&pki.sender)
    };
    let sent = send(&format!("tls://127.0.0.1:{proxy_port}"), &sender_opts);
    let got = listening.join().unwrap();
    proxied.join().unwrap();
    assert!(
        sent.is_err(),
        "the sender must not succeed: {sent:?}; receiver: {:?} {:?}",
        got.error,
        got.notices
    );
    got
}

fn assert_failed(got: &Received, needle: &str) {
    let error = got.error.as_deref().unwrap_or("(no error)");
    assert!(one_line(error).contains(needle), "{error}");
    // Past RESUMING: the uAPI's way out is VFIO_DEVICE_RESET.
    assert_eq!(
        got.aftermath,
        Some(Aftermath::Reset(MigState::Running)),
        "{error}"
    );
    assert!(
        error.ends_with("device reset (VFIO_DEVICE_RESET), now RUNNING"),
        "{error}"
    );
}

#[test]
fn a_connection_closed_early_fails_the_load() {
    let pki = Pki::new("cut");
    let got = broken_load(&pki, Mischief::Cut, Duration::from_secs(30));
    assert_failed(
        &got,
        "closed the connection without TLS close_notify after ",
    );
    assert_failed(&got, "the stream was cut short");
}

#[test]
fn a_silent_sender_times_out() {
    let pki = Pki::new("stall");
    let got = broken_load(&pki, Mischief::Stall, Duration::from_millis(400));
    assert_failed(&got, "no data from 127.0.0.1:");
    assert_failed(&got, "for 400ms (the I/O timeout)");
}

#[test]
fn a_tampered_record_fails_the_load() {
    let pki = Pki::new("flip");
    let got = broken_load(&pki, Mischief::Flip, Duration::from_secs(30));
    assert_failed(&got, "failed authentication after ");
    assert_failed(&got, "altered in transit");
}

/// The sender's TLS stack aborts mid-stream with a fatal alert (here a
/// client of rustls's own, made to fail by a bogus record fed to it
/// locally, sends `bad_record_mac` under the session's keys).
#[test]
fn a_tls_alert_mid_stream_fails_the_load() {
    let pki = Pki::new("alert");
    let port = free_port();
    let listening = receiver(
        format!("tls-listen://127.0.0.1:{port}"),
        options(&pki.receiver),
    );
    let mut saved = Vec::new();
    transfer::save(
        dev(SOURCE).as_mut(),
        &mut saved,
        &SaveOptions::default(),
        &Quiet,
    )
    .unwrap();
    let mut stream = raw_client(&pki.sender, port);
    let mut greeting = [0u8; 14];
    stream.read_exact(&mut greeting).unwrap();
    assert_eq!(&greeting, net::tls::GREETING);
    stream.write_all(&saved[..1 << 20]).unwrap();
    stream.flush().unwrap();
    // An application-data record that cannot decrypt: rustls queues a
    // fatal alert for the peer.
    let mut bogus = vec![0x17, 0x03, 0x03, 0x00, 0x20];
    bogus.extend_from_slice(&[0u8; 0x20]);
    stream.conn.read_tls(&mut &bogus[..]).unwrap();
    assert!(stream.conn.process_new_packets().is_err());
    while stream.conn.wants_write() {
        stream.conn.write_tls(&mut stream.sock).unwrap();
    }
    let got = listening.join().unwrap();
    assert_failed(&got, "sent TLS alert bad_record_mac after ");
}

/// A TLS client of rustls's own with the sender's credentials, connected
/// to the receiver on `port`, its handshake done.
fn raw_client(dir: &Path, port: u16) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(dir.join("ca-cert.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let chain = CertificateDer::pem_file_iter(dir.join("client-cert.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("client-key.pem")).unwrap();
    #[allow(deprecated)] // the provider the tool uses (see src/net/tls.rs)
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    let conn =
        rustls::ClientConnection::new(std::sync::Arc::new(config), "127.0.0.1".try_into().unwrap())
            .unwrap();
    let sock = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(_) => thread::sleep(Duration::from_millis(50)),
        }
    };
    let mut stream = rustls::StreamOwned::new(conn, sock);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock).unwrap();
    }
    stream
}

/// A certificate change mid-way would need a new handshake on the stream;
/// TLS 1.3 has none, and every record after the handshake must decrypt
/// under the session's keys: a handshake record injected by a man in the
/// middle is refused as tampering, and the load fails.
#[test]
fn a_handshake_record_mid_stream_fails_the_load() {
    let pki = Pki::new("renegotiate");
    // A plaintext handshake record: the start of a ClientHello.
    let hello = vec![0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x00, 0x00, 0x00];
    let got = broken_load(&pki, Mischief::Inject(hello), Duration::from_secs(30));
    assert_failed(&got, "failed authentication after ");
}

/// A second peer cannot reach a listener that accepted one.
#[test]
fn the_listener_serves_one_peer() {
    let pki = Pki::new("one");
    let port = free_port();
    let listen = NetSpec::receiver(&format!("tls-listen://127.0.0.1:{port}")).unwrap();
    let opts = options(&pki.receiver);
    let accepting = thread::spawn(move || {
        net::accept(&listen, &opts, &Interrupt::new(), &mut |_| {}).map(|r| r.peer())
    });
    let target = NetSpec::sender(&format!("tls://127.0.0.1:{port}")).unwrap();
    let first = net::connect(
        &target,
        &options(&pki.sender),
        &Interrupt::new(),
        &mut |_| {},
    )
    .unwrap();
    let peer = accepting.join().unwrap().unwrap();
    assert!(peer.ip().is_loopback(), "{peer}");
    assert_eq!(first.peer().port(), port);
    let e = TcpStream::connect(("127.0.0.1", port)).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
}

/// A receiver whose load fails drops the stream unconfirmed: the sender
/// fails too (over TLS and over loopback TCP), instead of reporting a
/// migration that did not happen.
#[test]
fn a_sender_is_told_when_the_load_fails() {
    let pki = Pki::new("unconfirmed");
    for scheme in ["tls", "tcp"] {
        let port = free_port();
        let listen = NetSpec::receiver(&format!("{scheme}-listen://127.0.0.1:{port}")).unwrap();
        let opts = options(&pki.receiver);
        let receiving = thread::spawn(move || {
            let mut input = net::accept(&listen, &opts, &Interrupt::new(), &mut |_| {}).unwrap();
            // Takes every byte, then fails (drops without confirm).
            let mut sink = Vec::new();
            input.read_to_end(&mut sink).unwrap();
            sink.len()
        });
        let e = send(
            &format!("{scheme}://127.0.0.1:{port}"),
            &options(&pki.sender),
        )
        .unwrap_err();
        assert!(receiving.join().unwrap() > 1 << 20);
        assert!(
            one_line(&e).contains("did not confirm the stream"),
            "{scheme}: {e}"
        );
    }
}

/// The tool: a listener refuses each wrong sender with a line of its own,
/// keeps waiting, and loads the right one.
#[test]
fn the_listener_waits_for_the_right_sender() {
    let pki = Pki::new("cli");
    let port = free_port();
    let path = |p: &Path| p.to_str().unwrap().to_owned();
    let load = bin()
        .args([
            "load",
            "--device",
            DESTINATION,
            "-i",
            &format!("tls-listen://127.0.0.1:{port}"),
            "--tls-creds",
            &path(&pki.receiver),
            "--accept-timeout",
            "60s",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let save = |args: &[&str]| {
        let mut all = vec!["save", "--device", SOURCE];
        all.extend_from_slice(args);
        common::run(&all)
    };
    let tls = format!("tls://127.0.0.1:{port}");
    let refused = [
        save(&["-o", &tls, "--tls-creds", &path(&pki.sender_without_cert)]),
        save(&["-o", &tls, "--tls-creds", &path(&pki.sender_of_another_ca)]),
        save(&["-o", &format!("tcp://127.0.0.1:{port}")]),
        save(&[
            "-o",
            &tls,
            "--tls-creds",
            &path(&pki.sender),
            "--tls-hostname",
            "other.example",
        ]),
    ];
    let mut lines = HashSet::new();
    for r in &refused {
        let line = r.fails(1, "");
        assert!(lines.insert(line.to_owned()), "{line}");
    }
    let good = save(&["-o", &tls, "--tls-creds", &path(&pki.sender), "--json"]);
    assert_eq!(good.code, Some(0), "{}", good.stderr);
    let l = load.wait_with_output().unwrap();
    let stderr = String::from_utf8(l.stderr).unwrap();
    assert!(l.status.success(), "{stderr}");
    let refusals: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("mlx5vf: refused 127.0.0.1:"))
        .collect();
    // The misnamed attempt is refused by the sender; the receiver sees its alert.
    assert_eq!(refusals.len(), 4, "{stderr}");
    assert_eq!(refusals.iter().collect::<HashSet<_>>().len(), 4, "{stderr}");
    let saved = common::one_json_document(&good.stdout);
    let loaded = common::one_json_document(&String::from_utf8(l.stdout).unwrap());
    assert_eq!(saved["digest"], loaded["digest"]);
    assert_eq!(saved["tls_cipher_suite"], loaded["tls_cipher_suite"]);
}

/// Plain TCP beyond loopback is a usage error unless --insecure, which
/// warns on every run.
#[test]
fn plain_tcp_beyond_loopback_needs_insecure() {
    let r = common::run(&[
        "load",
        "--device",
        DESTINATION,
        "-i",
        "tcp-listen://0.0.0.0:0",
    ]);
    r.fails(2, "refusing plain TCP beyond a loopback address");
    let r = common::run(&[
        "load",
        "--device",
        DESTINATION,
        "-i",
        "tcp-listen://0.0.0.0:0",
        "--insecure",
        "--accept-timeout",
        "200ms",
    ]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{}", r.stderr);
    assert!(
        lines[0].starts_with("mlx5vf: warning: insecure: tcp-listen://0.0.0.0:0"),
        "{}",
        r.stderr
    );
    assert!(lines[1].contains("no sender within 200ms"), "{}", r.stderr);
    let r = common::run(&["load", "-i", "tls-listen://127.0.0.1:0"]);
    r.fails(2, "give --tls-creds DIR");
}
