//! Migration streams over the network: a sender ([`connect`]: `tcp://`,
//! `tls://`) and a receiver ([`accept`]: `tcp-listen://`, `tls-listen://`).
//!
//! A VF's migration stream carries device state that can include guest data,
//! and a receiver loads whatever it is sent into a VF. So:
//!
//! - **TLS** ([`tls`], feature `tls`): TLS 1.3 with x509 certificates and a
//!   CA, both ends authenticated: the receiver demands a client certificate
//!   signed by its CA, the sender checks the receiver's certificate against
//!   the name it connects to. Credentials come from files, or from a
//!   directory laid out as QEMU's `tls-creds-x509` ([`TlsFiles`]).
//! - **Plain TCP** only on loopback addresses, unless [`NetOptions::insecure`]
//!   says otherwise; then every connection or listener reports
//!   [`Notice::Insecure`].
//! - **One peer.** A listener serves exactly one peer: the first that
//!   completes the handshake (any first connection, for plain TCP). Peers
//!   refused before it are reported ([`Notice::Refused`]) and the listener
//!   keeps waiting, until [`NetOptions::accept_timeout`]; it is closed once
//!   the peer is accepted.
//! - **Bounded waits.** A peer that sends or takes nothing for
//!   [`NetOptions::io_timeout`] fails the transfer, as does a signal.
//!
//! # How a stream ends
//! Success must mean the other side has it. [`Sender::finish`] ends the
//! stream (TLS `close_notify`; for TCP a FIN) and waits for the receiver to
//! close in turn, which [`Receiver::confirm`] does after a successful load.
//! A sender or receiver dropped without `finish` or `confirm` resets the
//! connection, so the other side fails too: a receiver sees a cut stream
//! (an error, never an early end of stream over TLS), a sender sees its
//! stream unconfirmed.
//!
//! Errors name the peer and the cause in one line.

mod socket;
#[cfg(feature = "tls")]
pub mod tls;

use std::fmt;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rustix::event::PollFlags;

use crate::interrupt::{Interrupt, Ready};
use socket::Socket;

/// Bytes buffered on each side of a stream: QEMU's read size, and enough
/// to fill a TLS record many times over.
const STREAM_BUFFER: usize = 1 << 20;

/// Which protocol carries a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Plain TCP: neither encrypted nor authenticated.
    Tcp,
    /// TLS 1.3 over TCP, both ends authenticated by certificates.
    Tls,
}

/// Which end of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Connects and writes (`save -o tcp://`, `tls://`).
    Sender,
    /// Listens and reads (`load -i tcp-listen://`, `tls-listen://`).
    Receiver,
}

/// A network endpoint as `-o` or `-i` names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetSpec {
    /// The protocol.
    pub transport: Transport,
    /// Which end this process is.
    pub role: Role,
    /// `HOST:PORT` to connect to, or `ADDR:PORT` to listen on.
    pub addr: String,
}

impl NetSpec {
    /// `tcp://HOST:PORT` or `tls://HOST:PORT`; `None` for anything else.
    pub fn sender(spec: &str) -> Option<Self> {
        Self::parse(spec, Role::Sender)
    }

    /// `tcp-listen://ADDR:PORT` or `tls-listen://ADDR:PORT`; `None` for
    /// anything else.
    pub fn receiver(spec: &str) -> Option<Self> {
        Self::parse(spec, Role::Receiver)
    }

    fn parse(spec: &str, role: Role) -> Option<Self> {
        [Transport::Tcp, Transport::Tls]
            .into_iter()
            .find_map(|transport| {
                let addr = spec.strip_prefix(scheme(transport, role))?;
                Some(Self {
                    transport,
                    role,
                    addr: addr.to_owned(),
                })
            })
    }

    /// The host part of the address (brackets of an IPv6 literal removed).
    pub fn host(&self) -> &str {
        let host = self
            .addr
            .rsplit_once(':')
            .map_or(self.addr.as_str(), |(h, _)| h);
        host.strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
    }
}

fn scheme(transport: Transport, role: Role) -> &'static str {
    match (transport, role) {
        (Transport::Tcp, Role::Sender) => "tcp://",
        (Transport::Tls, Role::Sender) => "tls://",
        (Transport::Tcp, Role::Receiver) => "tcp-listen://",
        (Transport::Tls, Role::Receiver) => "tls-listen://",
    }
}

impl fmt::Display for NetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", scheme(self.transport, self.role), self.addr)
    }
}

/// Where the TLS credentials are: a directory in QEMU's `tls-creds-x509`
/// layout, files given one by one (which win over the directory's), or
/// both.
///
/// | file in `dir` | used by | flag |
/// |---|---|---|
/// | `ca-cert.pem` | both: the CA that signs the peer's certificate | `ca` |
/// | `ca-crl.pem` (optional) | both: certificates the CA revoked | `crl` |
/// | `server-cert.pem`, `server-key.pem` | the receiver | `cert`, `key` |
/// | `client-cert.pem`, `client-key.pem` | the sender | `cert`, `key` |
///
/// A receiver needs all of its files. A sender without a certificate
/// connects without one, as QEMU's client does; a receiver of ours then
/// refuses it, and the sender says which file was missing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// The directory (`--tls-creds`).
    pub dir: Option<PathBuf>,
    /// The CA certificate(s), PEM (`--tls-ca`).
    pub ca: Option<PathBuf>,
    /// Certificate revocation lists, PEM (`--tls-crl`).
    pub crl: Option<PathBuf>,
    /// This end's certificate chain, PEM, leaf first (`--tls-cert`).
    pub cert: Option<PathBuf>,
    /// This end's private key, PEM: PKCS#8, PKCS#1 or SEC1 (`--tls-key`).
    pub key: Option<PathBuf>,
}

/// How network endpoints behave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetOptions {
    /// TLS credentials (for `tls://` and `tls-listen://`).
    pub tls: TlsFiles,
    /// The name the receiver's certificate must carry; `None`: the host
    /// of the `tls://` address (an IP address there must be an IP SAN).
    pub server_name: Option<String>,
    /// Allow plain TCP beyond loopback addresses (reported every time).
    pub insecure: bool,
    /// A listener gives up when no peer was accepted within this.
    pub accept_timeout: Duration,
    /// A peer that sends or takes nothing for this long has failed; also
    /// the longest a TLS handshake may take, and how long a sender waits
    /// for the receiver to confirm the stream.
    pub io_timeout: Duration,
    /// How long a sender retries a connection the receiver refused (it may
    /// still be starting).
    pub connect_timeout: Duration,
}

impl Default for NetOptions {
    fn default() -> Self {
        Self {
            tls: TlsFiles::default(),
            server_name: None,
            insecure: false,
            accept_timeout: Duration::from_secs(120),
            io_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Something a caller should tell the user as it happens (one line each).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// Plain TCP beyond loopback, allowed by [`NetOptions::insecure`].
    Insecure {
        /// The endpoint.
        spec: String,
        /// Which end this process is.
        role: Role,
    },
    /// A listener refused a peer and goes on waiting.
    Refused {
        /// The peer.
        peer: SocketAddr,
        /// Why, in words.
        reason: String,
    },
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Insecure {
                spec,
                role: Role::Sender,
            } => write!(
                f,
                "warning: insecure: {spec} is not a loopback address and plain TCP is neither \
                 encrypted nor authenticated: anyone on the path can read or alter the VF's \
                 state (use tls://)"
            ),
            Self::Insecure {
                spec,
                role: Role::Receiver,
            } => write!(
                f,
                "warning: insecure: {spec} is not a loopback address and plain TCP is neither \
                 encrypted nor authenticated: the first connection from anyone who reaches it \
                 is loaded into the VF (use tls-listen://)"
            ),
            Self::Refused { peer, reason } => write!(f, "refused {peer}: {reason}"),
        }
    }
}

/// Why a network endpoint could not be set up.
#[derive(Debug)]
pub enum NetError {
    /// Plain TCP beyond loopback without [`NetOptions::insecure`].
    PlainBeyondLoopback {
        /// The endpoint.
        spec: String,
    },
    /// `tls://` in a build without the `tls` feature.
    NoTls {
        /// The endpoint.
        spec: String,
    },
    /// A credential the command line must name is not named.
    MissingCredentials(String),
    /// A credential file could not be used.
    Credentials(String),
    /// Resolving, binding or connecting failed.
    Io {
        /// What was being done.
        what: String,
        /// The error.
        error: io::Error,
    },
    /// The sender's TLS handshake failed (the receiver refused this sender,
    /// or this sender refused the receiver).
    Handshake {
        /// The endpoint.
        spec: String,
        /// Why, in words.
        reason: String,
    },
    /// No peer was accepted before [`NetOptions::accept_timeout`].
    AcceptTimeout {
        /// The endpoint.
        spec: String,
        /// How long the listener waited (the accept timeout).
        waited: Duration,
        /// Peers refused meanwhile.
        refused: u32,
        /// The last refusal (`PEER: reason`).
        last: Option<String>,
    },
    /// A signal stopped the wait.
    Interrupted(io::Error),
    /// The receiver did not confirm the stream ([`Sender::finish`]).
    NotConfirmed {
        /// The receiver.
        peer: SocketAddr,
        /// Why, in words.
        reason: String,
    },
}

impl NetError {
    /// Whether the command line must change (exit status 2 in the tool).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Self::PlainBeyondLoopback { .. } | Self::NoTls { .. } | Self::MissingCredentials(_)
        )
    }
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PlainBeyondLoopback { spec } => {
                let secure = if spec.starts_with("tcp-listen://") {
                    "tls-listen://"
                } else {
                    "tls://"
                };
                write!(
                    f,
                    "{spec}: refusing plain TCP beyond a loopback address (the VF's state \
                     would travel unencrypted and unauthenticated); use {secure} with \
                     --tls-creds, or --insecure to accept the risk"
                )
            }
            Self::NoTls { spec } => write!(
                f,
                "{spec}: this mlx5vf was built without TLS (cargo feature `tls`)"
            ),
            Self::MissingCredentials(what) | Self::Credentials(what) => f.write_str(what),
            Self::Io { what, error } => write!(f, "{what}: {error}"),
            Self::Handshake { spec, reason } => write!(f, "{spec}: {reason}"),
            Self::AcceptTimeout {
                spec,
                waited,
                refused,
                last,
            } => {
                let peer = match spec.starts_with("tls-listen://") {
                    true => "authenticated sender",
                    false => "sender",
                };
                write!(f, "{spec}: no {peer} within {}", seconds(*waited))?;
                match last {
                    Some(last) => write!(f, " (refused {refused}; the last: {last})"),
                    None => f.write_str(" (the accept timeout); nothing was loaded"),
                }
            }
            Self::Interrupted(e) => e.fmt(f),
            Self::NotConfirmed { peer, reason } => write!(
                f,
                "the receiver {peer} did not confirm the stream: {reason}"
            ),
        }
    }
}

impl std::error::Error for NetError {}

/// A duration as a person reads it: `30s`, `1.5s`, `250ms`.
pub(crate) fn seconds(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// Whether every address `addr` resolves to is a loopback address.
fn is_loopback(addr: &str) -> Result<bool, NetError> {
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|error| NetError::Io {
            what: format!("resolving {addr}"),
            error,
        })?
        .collect();
    Ok(!addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()))
}

/// Plain TCP: fine on loopback; elsewhere only with `insecure`, and said.
fn check_plain(
    spec: &NetSpec,
    opts: &NetOptions,
    notices: &mut dyn FnMut(&Notice),
) -> Result<(), NetError> {
    if is_loopback(&spec.addr)? {
        return Ok(());
    }
    if !opts.insecure {
        return Err(NetError::PlainBeyondLoopback {
            spec: spec.to_string(),
        });
    }
    notices(&Notice::Insecure {
        spec: spec.to_string(),
        role: spec.role,
    });
    Ok(())
}

/// The byte stream under a [`Sender`] or [`Receiver`].
enum Link {
    Tcp(Socket),
    #[cfg(feature = "tls")]
    TlsClient(Box<rustls::StreamOwned<rustls::ClientConnection, Socket>>),
    #[cfg(feature = "tls")]
    TlsServer(Box<rustls::StreamOwned<rustls::ServerConnection, Socket>>),
}

impl Link {
    fn socket(&self) -> &Socket {
        match self {
            Self::Tcp(s) => s,
            #[cfg(feature = "tls")]
            Self::TlsClient(s) => &s.sock,
            #[cfg(feature = "tls")]
            Self::TlsServer(s) => &s.sock,
        }
    }

    fn is_tls(&self) -> bool {
        !matches!(self, Self::Tcp(_))
    }

    /// The negotiated TLS cipher suite.
    fn cipher_suite(&self) -> Option<String> {
        match self {
            Self::Tcp(_) => None,
            #[cfg(feature = "tls")]
            Self::TlsClient(s) => tls::suite_name(&s.conn),
            #[cfg(feature = "tls")]
            Self::TlsServer(s) => tls::suite_name(&s.conn),
        }
    }
}

impl Read for Link {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.read(buf),
            #[cfg(feature = "tls")]
            Self::TlsClient(s) => s.read(buf),
            #[cfg(feature = "tls")]
            Self::TlsServer(s) => s.read(buf),
        }
    }
}

impl Write for Link {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.write(buf),
            #[cfg(feature = "tls")]
            Self::TlsClient(s) => s.write(buf),
            #[cfg(feature = "tls")]
            Self::TlsServer(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Tcp(s) => s.flush(),
            #[cfg(feature = "tls")]
            Self::TlsClient(s) => s.flush(),
            #[cfg(feature = "tls")]
            Self::TlsServer(s) => s.flush(),
        }
    }
}

/// An I/O error of an established stream in words: who, what, after how
/// many bytes. `sending` says which way the bytes went.
fn stream_error(e: io::Error, peer: SocketAddr, tls: bool, bytes: u64, sending: bool) -> io::Error {
    let kind = e.kind();
    let what = match kind {
        // The socket's own words (a timeout) or a signal's.
        io::ErrorKind::TimedOut | io::ErrorKind::Other if e.get_ref().is_some() => {
            return e;
        }
        io::ErrorKind::UnexpectedEof if tls => format!(
            "{peer} closed the connection without TLS close_notify after {bytes} bytes: the \
             stream was cut short"
        ),
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe if sending => format!(
            "{peer} reset the connection after {bytes} bytes (the receiver refused the \
             stream, failed, or was stopped: see its output)"
        ),
        io::ErrorKind::ConnectionReset => format!(
            "{peer} reset the connection after {bytes} bytes (the sender failed or was \
             stopped: see its output)"
        ),
        _ => {
            #[cfg(feature = "tls")]
            if let Some(t) = tls::error_of(&e) {
                return io::Error::new(kind, tls::describe_stream_error(t, peer, bytes));
            }
            format!("{peer}, after {bytes} bytes: {e}")
        }
    };
    io::Error::new(kind, what)
}

/// The sending end of a network stream: a buffered [`Write`]. End it
/// with [`Sender::finish`]; dropped without, it resets the connection.
pub struct Sender {
    link: BufWriter<Link>,
    peer: SocketAddr,
    bytes: u64,
    finished: bool,
}

impl Sender {
    fn new(link: Link) -> Self {
        let peer = link.socket().peer();
        Self {
            link: BufWriter::with_capacity(STREAM_BUFFER, link),
            peer,
            bytes: 0,
            finished: false,
        }
    }

    /// The receiver's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The negotiated TLS cipher suite (`None` for plain TCP).
    pub fn cipher_suite(&self) -> Option<String> {
        self.link.get_ref().cipher_suite()
    }

    /// Ends the stream and waits (up to the I/O timeout) for the receiver
    /// to close its end, which it does after loading the stream: TLS
    /// `close_notify` both ways; for TCP a FIN, answered by the receiver's
    /// orderly close.
    ///
    /// # Errors
    /// Writing the rest failed, or the receiver reset the connection,
    /// closed it without `close_notify`, sent bytes, or stayed silent.
    pub fn finish(&mut self) -> io::Result<()> {
        self.flush()?;
        let (peer, tls) = (self.peer, self.link.get_ref().is_tls());
        let not_confirmed =
            |reason: String| io::Error::other(NetError::NotConfirmed { peer, reason });
        let link = self.link.get_mut();
        match link {
            Link::Tcp(s) => s.shutdown_write()?,
            #[cfg(feature = "tls")]
            Link::TlsClient(s) => {
                s.conn.send_close_notify();
                s.flush()?;
            }
            #[cfg(feature = "tls")]
            Link::TlsServer(_) => {}
        }
        let mut reply = [0u8; 64];
        let answer = loop {
            match link.read(&mut reply) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => break other,
            }
        };
        match answer {
            Ok(0) => {
                self.finished = true;
                Ok(())
            }
            Ok(_) if !tls && reply.first() == Some(&0x15) => Err(not_confirmed(
                "it answered with a TLS alert: it is a tls-listen:// endpoint (send with tls://)"
                    .into(),
            )),
            Ok(n) => Err(not_confirmed(format!(
                "it sent {n} unexpected bytes instead of closing"
            ))),
            Err(e) => match e.kind() {
                io::ErrorKind::ConnectionReset => Err(not_confirmed(
                    "it reset the connection: its load failed or it was stopped (see its output)"
                        .into(),
                )),
                io::ErrorKind::UnexpectedEof => Err(not_confirmed(
                    "it closed the connection without TLS close_notify: its load failed or it \
                     was stopped (see its output)"
                        .into(),
                )),
                _ => Err(not_confirmed(
                    stream_error(e, peer, tls, self.bytes, true).to_string(),
                )),
            },
        }
    }
}

impl Write for Sender {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (peer, tls, bytes) = (self.peer, self.link.get_ref().is_tls(), self.bytes);
        let n = self
            .link
            .write(buf)
            .map_err(|e| stream_error(e, peer, tls, bytes, true))?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        let (peer, tls, bytes) = (self.peer, self.link.get_ref().is_tls(), self.bytes);
        self.link
            .flush()
            .map_err(|e| stream_error(e, peer, tls, bytes, true))
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        if !self.finished {
            // Neither flushed nor ended: the receiver must see a failure,
            // not a shorter stream.
            self.link.get_ref().socket().abort_on_close();
        }
    }
}

/// The receiving end of a network stream: a buffered [`BufRead`] that
/// ends where the sender ended it. Call [`Receiver::confirm`] once the
/// stream is loaded; dropped without, it resets the connection and the
/// sender fails.
pub struct Receiver {
    link: BufReader<Link>,
    peer: SocketAddr,
    bytes: u64,
    confirmed: bool,
}

impl Receiver {
    fn new(link: Link) -> Self {
        let peer = link.socket().peer();
        Self {
            link: BufReader::with_capacity(STREAM_BUFFER, link),
            peer,
            bytes: 0,
            confirmed: false,
        }
    }

    /// The sender's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The negotiated TLS cipher suite (`None` for plain TCP).
    pub fn cipher_suite(&self) -> Option<String> {
        self.link.get_ref().cipher_suite()
    }

    /// Tells the sender the stream was taken: TLS `close_notify`, and an
    /// orderly close.
    ///
    /// # Errors
    /// Sending `close_notify` failed (the sender then fails too).
    pub fn confirm(&mut self) -> io::Result<()> {
        match self.link.get_mut() {
            Link::Tcp(_) => {}
            #[cfg(feature = "tls")]
            Link::TlsServer(s) => {
                s.conn.send_close_notify();
                s.flush()?;
            }
            #[cfg(feature = "tls")]
            Link::TlsClient(_) => {}
        }
        self.confirmed = true;
        Ok(())
    }
}

impl Read for Receiver {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (peer, tls, bytes) = (self.peer, self.link.get_ref().is_tls(), self.bytes);
        let n = self
            .link
            .read(buf)
            .map_err(|e| stream_error(e, peer, tls, bytes, false))?;
        self.bytes += n as u64;
        Ok(n)
    }
}

impl BufRead for Receiver {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        let (peer, tls, bytes) = (self.peer, self.link.get_ref().is_tls(), self.bytes);
        self.link
            .fill_buf()
            .map_err(|e| stream_error(e, peer, tls, bytes, false))
    }

    fn consume(&mut self, amt: usize) {
        self.link.consume(amt);
        self.bytes += amt as u64;
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if !self.confirmed {
            self.link.get_ref().socket().abort_on_close();
        }
    }
}

/// Connects to a receiver: checks the policy, loads the credentials,
/// connects (retrying a refused connection for
/// [`NetOptions::connect_timeout`]) and, for TLS, completes the handshake
/// and waits for the receiver to accept this sender's certificate.
///
/// # Errors
/// [`NetError`]; nothing was sent.
pub fn connect(
    spec: &NetSpec,
    opts: &NetOptions,
    interrupt: &Interrupt,
    notices: &mut dyn FnMut(&Notice),
) -> Result<Sender, NetError> {
    // Credentials first: a mistake there is found before the network.
    #[cfg(feature = "tls")]
    let client = match spec.transport {
        Transport::Tls => Some(tls::ClientSide::new(&opts.tls)?),
        Transport::Tcp => None,
    };
    match spec.transport {
        Transport::Tcp => check_plain(spec, opts, notices)?,
        #[cfg(feature = "tls")]
        Transport::Tls => {}
        #[cfg(not(feature = "tls"))]
        Transport::Tls => {
            return Err(NetError::NoTls {
                spec: spec.to_string(),
            });
        }
    }
    let deadline = Instant::now() + opts.connect_timeout;
    let stream = loop {
        if let Some(signal) = interrupt.signal() {
            return Err(NetError::Interrupted(io::Error::other(format!(
                "interrupted by {}",
                crate::interrupt::signal_name(signal)
            ))));
        }
        match TcpStream::connect(&spec.addr) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline && e.kind() == io::ErrorKind::ConnectionRefused => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(error) => {
                return Err(NetError::Io {
                    what: format!("connecting to {spec}"),
                    error,
                });
            }
        }
    };
    let socket =
        Socket::new(stream, interrupt.clone(), opts.io_timeout).map_err(|error| NetError::Io {
            what: format!("connecting to {spec}"),
            error,
        })?;
    match spec.transport {
        Transport::Tcp => Ok(Sender::new(Link::Tcp(socket))),
        #[cfg(feature = "tls")]
        Transport::Tls => {
            let name = opts.server_name.as_deref().unwrap_or(spec.host());
            let client = client.ok_or_else(|| NetError::NoTls {
                spec: spec.to_string(),
            })?;
            let stream = client.connect(socket, name, opts.io_timeout, spec)?;
            Ok(Sender::new(Link::TlsClient(Box::new(stream))))
        }
        #[cfg(not(feature = "tls"))]
        Transport::Tls => Err(NetError::NoTls {
            spec: spec.to_string(),
        }),
    }
}

/// Listens and accepts one sender: for TLS the first whose certificate is
/// signed by the CA (others are reported through `notices` and refused);
/// for TCP the first connection. The listening socket is closed before
/// this returns, so no second peer can connect.
///
/// # Errors
/// [`NetError`]: the policy, credentials, binding, a signal, or no sender
/// accepted within [`NetOptions::accept_timeout`].
pub fn accept(
    spec: &NetSpec,
    opts: &NetOptions,
    interrupt: &Interrupt,
    notices: &mut dyn FnMut(&Notice),
) -> Result<Receiver, NetError> {
    #[cfg(feature = "tls")]
    let server = match spec.transport {
        Transport::Tls => Some(tls::ServerSide::new(&opts.tls)?),
        Transport::Tcp => None,
    };
    match spec.transport {
        Transport::Tcp => check_plain(spec, opts, notices)?,
        #[cfg(feature = "tls")]
        Transport::Tls => {}
        #[cfg(not(feature = "tls"))]
        Transport::Tls => {
            return Err(NetError::NoTls {
                spec: spec.to_string(),
            });
        }
    }
    let listener = TcpListener::bind(&spec.addr).map_err(|error| NetError::Io {
        what: format!("listening on {spec}"),
        error,
    })?;
    let io = |error| NetError::Io {
        what: format!("accepting on {spec}"),
        error,
    };
    listener.set_nonblocking(true).map_err(io)?;
    let deadline = Instant::now() + opts.accept_timeout;
    // Only a TLS listener refuses peers.
    #[cfg_attr(not(feature = "tls"), allow(unused_mut))]
    let (mut refused, mut last) = (0u32, None);
    loop {
        match interrupt
            .wait_until(&listener, PollFlags::IN, Some(deadline))
            .map_err(NetError::Interrupted)?
        {
            Ready::Yes => {}
            Ready::DeadlinePassed => {
                return Err(NetError::AcceptTimeout {
                    spec: spec.to_string(),
                    waited: opts.accept_timeout,
                    refused,
                    last,
                });
            }
        }
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(io(e)),
        };
        let socket = match Socket::new(stream, interrupt.clone(), opts.io_timeout) {
            Ok(s) => s,
            // Gone before it could be looked at (reset at once): not a peer.
            Err(_) => continue,
        };
        match spec.transport {
            Transport::Tcp => return Ok(Receiver::new(Link::Tcp(socket))),
            #[cfg(feature = "tls")]
            Transport::Tls => {
                let Some(server) = &server else {
                    return Err(NetError::NoTls {
                        spec: spec.to_string(),
                    });
                };
                let peer = socket.peer();
                // A slow peer holds the listener for at most the I/O
                // timeout, and never past the accept deadline.
                let handshake_end = deadline.min(Instant::now() + opts.io_timeout);
                match server.accept(socket, handshake_end) {
                    Ok(stream) => return Ok(Receiver::new(Link::TlsServer(Box::new(stream)))),
                    Err(tls::Refusal::Interrupted(e)) => return Err(NetError::Interrupted(e)),
                    Err(tls::Refusal::Peer(reason)) => {
                        refused += 1;
                        let notice = Notice::Refused { peer, reason };
                        notices(&notice);
                        if let Notice::Refused { peer, reason } = notice {
                            last = Some(format!("{peer}: {reason}"));
                        }
                    }
                }
            }
            #[cfg(not(feature = "tls"))]
            Transport::Tls => {
                return Err(NetError::NoTls {
                    spec: spec.to_string(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        let s = NetSpec::sender("tls://dest.example:7000").unwrap();
        assert_eq!((s.transport, s.host()), (Transport::Tls, "dest.example"));
        assert_eq!(s.to_string(), "tls://dest.example:7000");
        let r = NetSpec::receiver("tcp-listen://[::1]:7000").unwrap();
        assert_eq!((r.transport, r.host()), (Transport::Tcp, "::1"));
        assert_eq!(NetSpec::sender("tcp-listen://x:1"), None);
        assert_eq!(NetSpec::receiver("tls://x:1"), None);
        assert_eq!(NetSpec::sender("state.bin"), None);
    }

    #[test]
    fn plain_tcp_stays_on_loopback_unless_told() {
        let mut said = Vec::new();
        let mut note = |n: &Notice| said.push(n.to_string());
        let local = NetSpec::receiver("tcp-listen://127.0.0.1:7000").unwrap();
        let any = NetSpec::receiver("tcp-listen://0.0.0.0:7000").unwrap();
        let opts = NetOptions::default();
        check_plain(&local, &opts, &mut note).unwrap();
        let e = check_plain(&any, &opts, &mut note).unwrap_err();
        assert!(e.is_usage());
        assert!(e.to_string().contains("--insecure"), "{e}");
        let insecure = NetOptions {
            insecure: true,
            ..NetOptions::default()
        };
        check_plain(&any, &insecure, &mut note).unwrap();
        check_plain(&any, &insecure, &mut note).unwrap();
        // Every time, one line each.
        assert_eq!(said.len(), 2, "{said:?}");
        assert!(
            said.iter()
                .all(|l| l.starts_with("warning: insecure: ") && !l.contains('\n'))
        );
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(seconds(Duration::from_secs(30)), "30s");
        assert_eq!(seconds(Duration::from_millis(250)), "250ms");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.5s");
    }
}
