//! `mlx5vf bench --only tls`: what TLS costs a migration. The same state
//! is saved and loaded (`save | load`, both sides in this process, each in
//! its own thread) through the in-process pipe `migrate` uses, plain TCP
//! over loopback and TLS over loopback, in the same run; rounds alternate
//! the transports so drift hits them alike, and the median round counts.
//! It reports bytes/s of each, the ratios, the negotiated cipher suite and
//! whether the CPU has the AES instructions the provider uses.

use std::io::{self, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{BenchArgs, emit, result_of};
use crate::backend::{self, DriverOptions, MigrationDevice};
use crate::cli::device::{Summary, Value, human_size, rate};
use crate::interrupt::Interrupt;
use crate::net::{self, NetOptions, NetSpec, TlsFiles};
use crate::pipe::pipe;
use crate::transfer::{self, Quiet, SaveOptions};

/// Rounds per transport; the median is reported.
const ROUNDS: usize = 3;

/// The destination of every round (another state than the source's).
const DESTINATION: &str = "sim:state=4M,seed=99";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Carrier {
    Pipe,
    Tcp,
    Tls,
}

/// One `save | load`: stream bytes, wall time, the negotiated suite.
struct Round {
    bytes: u64,
    wall: Duration,
    cipher_suite: Option<String>,
}

fn open(spec: &str) -> io::Result<Box<dyn MigrationDevice>> {
    backend::open(spec, &DriverOptions::default()).map_err(|e| io::Error::other(e.to_string()))
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// A throwaway CA, and a receiver and a sender certificate for
/// 127.0.0.1 under it, in QEMU's layout under `dir`: (receiver, sender).
fn make_credentials(dir: &Path) -> io::Result<(PathBuf, PathBuf)> {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
        KeyPair,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(other)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca =
        CertifiedIssuer::self_signed(ca, KeyPair::generate().map_err(other)?).map_err(other)?;
    let leaf = |purpose| -> io::Result<(String, String)> {
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).map_err(other)?;
        params.extended_key_usages = vec![purpose];
        let key = KeyPair::generate().map_err(other)?;
        let cert = params.signed_by(&key, &ca).map_err(other)?;
        Ok((cert.pem(), key.serialize_pem()))
    };
    let sides = [
        ("receiver", "server", ExtendedKeyUsagePurpose::ServerAuth),
        ("sender", "client", ExtendedKeyUsagePurpose::ClientAuth),
    ];
    let mut dirs = Vec::new();
    for (name, role, purpose) in sides {
        let side = dir.join(name);
        std::fs::create_dir_all(&side)?;
        let (cert, key) = leaf(purpose)?;
        std::fs::write(side.join("ca-cert.pem"), ca.pem())?;
        std::fs::write(side.join(format!("{role}-cert.pem")), cert)?;
        std::fs::write(side.join(format!("{role}-key.pem")), key)?;
        dirs.push(side);
    }
    let sender = dirs.pop().unwrap_or_default();
    let receiver = dirs.pop().unwrap_or_default();
    Ok((receiver, sender))
}

fn net_options(dir: &Path) -> NetOptions {
    NetOptions {
        tls: TlsFiles {
            dir: Some(dir.to_owned()),
            ..TlsFiles::default()
        },
        ..NetOptions::default()
    }
}

/// One round over `carrier`, digests checked.
fn round(source: &str, carrier: Carrier, creds: &(PathBuf, PathBuf)) -> io::Result<Round> {
    let mut src = open(source)?;
    let mut dst = open(DESTINATION)?;
    let save_opts = SaveOptions::default();
    let start = Instant::now();
    let (saved, loaded) = match carrier {
        Carrier::Pipe => {
            let (mut w, mut r) = pipe(1 << 20, 4);
            std::thread::scope(|scope| {
                let saver = scope.spawn(|| {
                    let rep = transfer::save(src.as_mut(), &mut w, &save_opts, &Quiet);
                    drop(w);
                    rep.map(|rep| (rep, None)).map_err(other)
                });
                let loaded = transfer::load(dst.as_mut(), &mut r, &Quiet).map_err(other);
                drop(r);
                let saved = saver
                    .join()
                    .unwrap_or_else(|_| Err(io::Error::other("saving thread panicked")));
                (saved, loaded)
            })
        }
        Carrier::Tcp | Carrier::Tls => {
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let scheme = if carrier == Carrier::Tls {
                "tls"
            } else {
                "tcp"
            };
            let listen = NetSpec::receiver(&format!("{scheme}-listen://127.0.0.1:{port}"))
                .ok_or_else(|| io::Error::other("bad listen spec"))?;
            let target = NetSpec::sender(&format!("{scheme}://127.0.0.1:{port}"))
                .ok_or_else(|| io::Error::other("bad target spec"))?;
            let (receiver_opts, sender_opts) = (net_options(&creds.0), net_options(&creds.1));
            std::thread::scope(|scope| {
                let loader = scope.spawn(|| {
                    let mut input =
                        net::accept(&listen, &receiver_opts, &Interrupt::new(), &mut |_| {})
                            .map_err(other)?;
                    let rep = transfer::load(dst.as_mut(), &mut input, &Quiet).map_err(other)?;
                    input.confirm()?;
                    Ok(rep)
                });
                let saved = (|| {
                    let mut out =
                        net::connect(&target, &sender_opts, &Interrupt::new(), &mut |_| {})
                            .map_err(other)?;
                    let rep = transfer::save(src.as_mut(), &mut out, &save_opts, &Quiet)
                        .map_err(other)?;
                    out.finish()?;
                    Ok((rep, out.cipher_suite()))
                })();
                let loaded = loader
                    .join()
                    .unwrap_or_else(|_| Err(io::Error::other("loading thread panicked")));
                (saved, loaded)
            })
        }
    };
    let wall = start.elapsed();
    let (report, cipher_suite) = saved?;
    loaded?;
    if src.digest() != dst.digest() {
        return Err(io::Error::other(format!("{carrier:?}: digests differ")));
    }
    Ok(Round {
        bytes: report.bytes,
        wall,
        cipher_suite,
    })
}

fn median(mut rates: Vec<f64>) -> f64 {
    rates.sort_by(f64::total_cmp);
    rates.get(rates.len() / 2).copied().unwrap_or(0.0)
}

/// `bench --only tls`.
///
/// # Errors
/// A round failed or its digests differ.
pub(super) fn run(args: &BenchArgs, out: &mut dyn Write) -> io::Result<()> {
    let source = format!("sim:state={}", human_size(args.tls_size));
    let scratch = std::env::temp_dir().join(format!("mlx5vf-bench-tls-{}", std::process::id()));
    let creds = make_credentials(&scratch);
    let result = creds.and_then(|creds| {
        let carriers = [Carrier::Pipe, Carrier::Tcp, Carrier::Tls];
        let mut rates = [Vec::new(), Vec::new(), Vec::new()];
        let (mut bytes, mut suite) = (0, None);
        for _ in 0..ROUNDS {
            for (carrier, rates) in carriers.iter().zip(rates.iter_mut()) {
                let r = round(&source, *carrier, &creds)?;
                rates.push(rate(r.bytes, r.wall));
                bytes = r.bytes;
                suite = suite.or(r.cipher_suite);
            }
        }
        let [pipe_rate, tcp_rate, tls_rate] = rates.map(median);
        let mut s: Summary = result_of("tls");
        s.add("device", Value::Text(source.clone()))
            .add("stream_bytes", Value::Int(bytes))
            .add("rounds", Value::Int(ROUNDS as u64))
            .add("pipe_bytes_per_sec", Value::Float(pipe_rate))
            .add("tcp_bytes_per_sec", Value::Float(tcp_rate))
            .add("tls_bytes_per_sec", Value::Float(tls_rate))
            .add("tcp_ratio_to_pipe", Value::Float(tcp_rate / pipe_rate))
            .add("tls_ratio_to_pipe", Value::Float(tls_rate / pipe_rate))
            .add("tls_ratio_to_tcp", Value::Float(tls_rate / tcp_rate))
            .add(
                "tls_cipher_suite",
                Value::Text(suite.unwrap_or_else(|| "unknown".into())),
            )
            .add("tls_provider", Value::Text("ring".into()))
            .add(
                "aes_hardware",
                Value::Text(net::tls::aes_hardware().unwrap_or("none").into()),
            );
        emit(args.json, &s, out)
    });
    let _ = std::fs::remove_dir_all(&scratch);
    result
}
