//! The network flags of `save` and `load`: TLS credentials, the insecure
//! switch and the timeouts ([`crate::net`] does the work).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::net::{NetOptions, TlsFiles};

/// Flags both ends share.
#[derive(Clone, Debug, Args)]
#[command(next_help_heading = "Network (tcp://, tls://)")]
pub struct CommonNetArgs {
    /// TLS credentials as QEMU's tls-creds-x509 lays them out: ca-cert.pem
    /// (the CA that signs the peer), server-cert.pem and server-key.pem
    /// (load), client-cert.pem and client-key.pem (save), ca-crl.pem
    /// (optional: revoked certificates).
    #[arg(long, value_name = "DIR")]
    pub tls_creds: Option<PathBuf>,
    /// The CA certificate(s), PEM (instead of DIR/ca-cert.pem).
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// This end's certificate chain, PEM, leaf first (instead of DIR's).
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// This end's private key, PEM (instead of DIR's).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Certificate revocation lists, PEM (instead of DIR/ca-crl.pem).
    #[arg(long, value_name = "FILE")]
    pub tls_crl: Option<PathBuf>,
    /// Allow plain tcp:// or tcp-listen:// beyond loopback addresses: the
    /// stream is then neither encrypted nor authenticated (warned on every
    /// run).
    #[arg(long)]
    pub insecure: bool,
    /// A peer that sends or takes nothing for this long has failed; also
    /// bounds a TLS handshake and the sender's wait for the receiver to
    /// confirm the stream.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_timeout)]
    pub io_timeout: Duration,
}

impl CommonNetArgs {
    fn options(&self) -> NetOptions {
        NetOptions {
            tls: TlsFiles {
                dir: self.tls_creds.clone(),
                ca: self.tls_ca.clone(),
                crl: self.tls_crl.clone(),
                cert: self.tls_cert.clone(),
                key: self.tls_key.clone(),
            },
            insecure: self.insecure,
            io_timeout: self.io_timeout,
            ..NetOptions::default()
        }
    }
}

/// The network flags of `save`.
#[derive(Clone, Debug, Args)]
#[command(next_help_heading = "Network (tcp://, tls://)")]
pub struct SendNetArgs {
    /// With tls://, the name the receiver's certificate must carry (a DNS
    /// name or an IP address in its subjectAltName); by default the host
    /// of tls://HOST:PORT, so an IP address there must be in the
    /// certificate as an IP address.
    #[arg(long, value_name = "NAME")]
    pub tls_hostname: Option<String>,
    /// The flags both ends share.
    #[command(flatten)]
    pub common: CommonNetArgs,
}

impl SendNetArgs {
    /// The options for [`crate::net::connect`].
    pub fn options(&self) -> NetOptions {
        NetOptions {
            server_name: self.tls_hostname.clone(),
            ..self.common.options()
        }
    }
}

/// The network flags of `load`.
#[derive(Clone, Debug, Args)]
#[command(next_help_heading = "Network (tcp://, tls://)")]
pub struct ListenNetArgs {
    /// A listener gives up (nothing loaded, exit 1) when no sender was
    /// accepted within this; refused senders do not end the wait.
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = parse_timeout)]
    pub accept_timeout: Duration,
    /// The flags both ends share.
    #[command(flatten)]
    pub common: CommonNetArgs,
}

impl ListenNetArgs {
    /// The options for [`crate::net::accept`].
    pub fn options(&self) -> NetOptions {
        NetOptions {
            accept_timeout: self.accept_timeout,
            ..self.common.options()
        }
    }
}

/// A timeout: a duration above zero (`30s`, `500ms`).
///
/// # Errors
/// A message for clap.
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    match super::device::parse_duration(text)? {
        d if d.is_zero() => Err(format!("{text:?}: a timeout must be above zero")),
        d => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    #[test]
    fn flags_become_options() {
        let cli = Cli::parse_from([
            "mlx5vf",
            "save",
            "-o",
            "tls://10.0.0.2:7000",
            "--tls-creds",
            "/etc/pki/qemu",
            "--tls-hostname",
            "dest.example",
            "--io-timeout",
            "5s",
        ]);
        let Command::Save(args) = cli.command else {
            panic!("not save");
        };
        let o = args.network.options();
        assert_eq!(o.tls.dir, Some(PathBuf::from("/etc/pki/qemu")));
        assert_eq!(o.server_name.as_deref(), Some("dest.example"));
        assert_eq!(o.io_timeout, Duration::from_secs(5));
        assert!(!o.insecure);
        let cli = Cli::parse_from(["mlx5vf", "load", "-i", "tls-listen://0.0.0.0:7000"]);
        let Command::Load(args) = cli.command else {
            panic!("not load");
        };
        let o = args.network.options();
        assert_eq!(o.accept_timeout, Duration::from_secs(120));
        assert_eq!(o.io_timeout, Duration::from_secs(30));
        assert!(parse_timeout("0").is_err());
    }
}
