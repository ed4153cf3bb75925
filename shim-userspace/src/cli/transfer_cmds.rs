//! `mlx5vf save`, `mlx5vf load` and `mlx5vf migrate`.

use std::io::{self, IsTerminal};
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use mlx5vf_core::vfio::MigState;

use super::device::{
    DEFAULT_DESTINATION, DEFAULT_DEVICE, LoadingArgs, Progress, SavingArgs, Summary, Value,
    endpoint_is_usage, open_input, open_output, rate,
};
use super::network::{ListenNetArgs, SendNetArgs};
use crate::backend::{self, DriverOptions, MigrationDevice, OpenError};
use crate::interrupt::Interrupt;
use crate::pipe::pipe;
use crate::recognise::RecordCounts;
use crate::timeline::Timeline;
use crate::transfer::{
    self, Aftermath, Failure, LoadReport, Observer, Recovery, SaveOptions, SaveReport,
    TransferError, WithTimeline,
};

/// Arguments of `mlx5vf save`.
#[derive(Clone, Debug, Args)]
pub struct SaveArgs {
    /// The device to save (specs: see below).
    #[arg(long, value_name = "SPEC", default_value = DEFAULT_DEVICE)]
    pub device: String,
    /// Run PRE_COPY rounds before stopping the device.
    #[arg(long)]
    pub precopy: bool,
    /// With --precopy, the downtime budget (QEMU's downtime-limit): PRE_COPY
    /// iterates until what the device still holds would move within it.
    #[arg(long, value_name = "DURATION", default_value = "300ms", value_parser = super::device::parse_duration)]
    pub downtime_limit: std::time::Duration,
    /// Where the stream goes: a file, `-` for stdout, `tls://HOST:PORT`
    /// (TLS, see --tls-creds) or `tcp://HOST:PORT` (plain TCP: loopback
    /// only, unless --insecure). Without -o: stdout, unless it is a
    /// terminal (then save refuses; -o - writes to a terminal anyway).
    #[arg(
        short = 'o',
        long = "output",
        value_name = "PATH|-|tls://HOST:PORT|tcp://HOST:PORT"
    )]
    pub output: Option<String>,
    /// Also print the summary as one JSON document on stdout (the
    /// key=value lines stay on stderr); needs -o FILE or -o tcp://..., as
    /// stdout cannot carry the stream too.
    #[arg(long)]
    pub json: bool,
    /// How the driver saves.
    #[command(flatten)]
    pub saving: SavingArgs,
    /// TLS credentials, policy and timeouts of tls:// and tcp://.
    #[command(flatten)]
    pub network: SendNetArgs,
}

/// Arguments of `mlx5vf load`.
#[derive(Clone, Debug, Args)]
pub struct LoadArgs {
    /// The device to load into (the default starts with a state no default
    /// `save` produces, so a load that changed nothing shows in the digest).
    #[arg(long, value_name = "SPEC", default_value = DEFAULT_DESTINATION)]
    pub device: String,
    /// Where the stream comes from: a file, `-` for stdin,
    /// `tls-listen://ADDR:PORT` (one sender whose certificate the CA signed;
    /// see --tls-creds) or `tcp-listen://ADDR:PORT` (the first connection;
    /// loopback only, unless --insecure).
    #[arg(
        short = 'i',
        long = "input",
        value_name = "PATH|-|tls-listen://ADDR:PORT|tcp-listen://ADDR:PORT",
        default_value = "-"
    )]
    pub input: String,
    /// Also print the summary as one JSON document on stdout (the
    /// key=value lines stay on stderr).
    #[arg(long)]
    pub json: bool,
    /// How the driver loads.
    #[command(flatten)]
    pub loading: LoadingArgs,
    /// TLS credentials, policy and timeouts of tls-listen:// and
    /// tcp-listen://.
    #[command(flatten)]
    pub network: ListenNetArgs,
}

/// Arguments of `mlx5vf migrate`.
#[derive(Clone, Debug, Args)]
pub struct MigrateArgs {
    /// The source device.
    #[arg(long, value_name = "SPEC", default_value = DEFAULT_DEVICE)]
    pub from: String,
    /// The destination device (its own state is replaced).
    #[arg(long, value_name = "SPEC", default_value = DEFAULT_DESTINATION)]
    pub to: String,
    /// Run PRE_COPY rounds before stopping the source.
    #[arg(long)]
    pub precopy: bool,
    /// With --precopy, the downtime budget (QEMU's downtime-limit): PRE_COPY
    /// iterates until what the source still holds would move within it.
    #[arg(long, value_name = "DURATION", default_value = "300ms", value_parser = super::device::parse_duration)]
    pub downtime_limit: std::time::Duration,
    /// Also print the summary as one JSON document on stdout (the
    /// key=value lines stay on stderr).
    #[arg(long)]
    pub json: bool,
    /// Draw where the time went as an SVG: per firmware image, its SAVE,
    /// read (+ send), receive and LOAD bars on one time axis, with the
    /// source's stop and the destination's restart marked. SAVE and LOAD
    /// bars need a backend that sees its firmware (the simulated device).
    #[arg(long, value_name = "FILE.svg")]
    pub timeline: Option<std::path::PathBuf>,
    /// With --precopy and a sim source: a guest whose device writes PAGES
    /// of its memory per second while the source runs, tracked with the
    /// device's page tracker as a VMM tracks it; the summary then counts the
    /// guest pages a VMM would send per PRE_COPY round and in the downtime.
    #[arg(long, value_name = "PAGES")]
    pub guest_dirty: Option<u64>,
    /// How the source's driver saves.
    #[command(flatten)]
    pub saving: SavingArgs,
    /// How the destination's driver loads.
    #[command(flatten)]
    pub loading: LoadingArgs,
}

impl MigrateArgs {
    /// The driver options of both sides.
    pub fn driver_options(&self) -> DriverOptions {
        let mut opts = DriverOptions::default();
        self.saving.apply(&mut opts);
        self.loading.apply(&mut opts);
        opts
    }
}

/// Which side of a migration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The saving side (`--from`).
    Source,
    /// The loading side (`--to`).
    Destination,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Source => "source",
            Self::Destination => "destination",
        })
    }
}

/// Why a device-backed subcommand failed.
#[derive(Debug)]
pub enum TransferCmdError {
    /// The device spec is wrong or the device refused to open.
    Open(OpenError),
    /// The input or output could not be opened (the device was not
    /// touched).
    Endpoint(io::Error),
    /// The transfer failed.
    Transfer(TransferError),
    /// A migration failed on one side; the other side was put back too.
    Migration {
        /// The side whose failure is the cause.
        side: Side,
        /// Its error (with how its device was left).
        error: TransferError,
        /// How the other side's device was left.
        other: Aftermath,
    },
    /// The load succeeded but the network sender could not be told (it
    /// then fails, and may resume its source).
    Unconfirmed(io::Error),
    /// `save` without `-o` would write its binary stream to a terminal.
    TerminalOutput,
    /// `save --json` whose stream goes to stdout, where the document goes.
    JsonOnStreamOutput,
    /// The destination's state differs from the source's.
    DigestMismatch {
        /// Source digest.
        source: String,
        /// Destination digest.
        destination: String,
        /// What the migration measured (printed with the error).
        summary: Box<Summary>,
    },
}

impl std::fmt::Display for TransferCmdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Open(e) => e.fmt(f),
            Self::Endpoint(e) => write!(f, "{e}; device untouched"),
            Self::Unconfirmed(e) => write!(
                f,
                "the state was loaded (the device is RUNNING with it), but the sender could \
                 not be told, so it may resume its source: {e}"
            ),
            Self::Transfer(e) => e.fmt(f),
            Self::Migration { side, error, other } => {
                let other_side = match side {
                    Side::Source => Side::Destination,
                    Side::Destination => Side::Source,
                };
                write!(f, "{side}: {error}; {other_side}: {other}")
            }
            Self::TerminalOutput => f.write_str(
                "standard output is a terminal: refusing to write a binary stream to it; \
                 give -o FILE, -o tls://HOST:PORT, or -o - to write it there anyway",
            ),
            Self::JsonOnStreamOutput => f.write_str(
                "--json prints its document on standard output, which would carry the stream \
                 too: give -o FILE or -o tls://HOST:PORT",
            ),
            Self::DigestMismatch {
                source,
                destination,
                ..
            } => write!(
                f,
                "digests differ: source {source}, destination {destination}"
            ),
        }
    }
}

impl std::error::Error for TransferCmdError {}

impl TransferCmdError {
    /// Exit status: 2 for a bad device spec, a stream that would go to
    /// a terminal or share stdout with `--json`, plain TCP beyond loopback
    /// without --insecure, or TLS without credentials (the command line must
    /// say otherwise); 1 otherwise (an interrupted transfer too: it failed,
    /// and its device was put back).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Open(OpenError::Spec(_)) | Self::TerminalOutput | Self::JsonOnStreamOutput => {
                super::EXIT_USAGE
            }
            Self::Endpoint(e) if endpoint_is_usage(e) => super::EXIT_USAGE,
            _ => super::EXIT_FAILURE,
        }
    }

    /// The summary a failure still has (a migration whose digests differ).
    pub fn summary(&self) -> Option<&Summary> {
        match self {
            Self::DigestMismatch { summary, .. } => Some(summary),
            _ => None,
        }
    }
}

fn open(spec: &str, opts: &DriverOptions) -> Result<Box<dyn MigrationDevice>, TransferCmdError> {
    backend::open(spec, opts).map_err(TransferCmdError::Open)
}

/// Stops a transfer on SIGINT/SIGTERM/SIGHUP; without handlers (they could
/// not be installed) the signals keep their default action.
fn interrupt_on_signals() -> Interrupt {
    Interrupt::on_signals().unwrap_or_default()
}

fn add_stream(
    s: &mut Summary,
    bytes: u64,
    format: &'static str,
    records: Option<RecordCounts>,
    recovered: Option<Recovery>,
) {
    s.add("bytes", Value::Int(bytes))
        .add("stream_format", Value::Text(format.into()));
    // Record figures only for a stream recognised as mlx5: an opaque
    // stream's bytes mean nothing as record headers.
    if let Some(r) = records {
        s.add("records", Value::Int(r.records))
            .add("fw_data_records", Value::Int(r.fw_data))
            .add("fw_data_bytes", Value::Int(r.fw_data_bytes));
    }
    if let Some(r) = recovered {
        s.add("recovered", Value::Text(r.to_string()));
    }
}

fn add_save(s: &mut Summary, r: &SaveReport) {
    add_stream(s, r.bytes, r.format, r.records, r.recovered);
    s.add("precopy_rounds", Value::Int(u64::from(r.precopy_rounds)))
        .add("precopy_bytes", Value::Int(r.precopy_bytes))
        .add(
            "stop_copy_bytes",
            Value::Int(r.bytes.saturating_sub(r.precopy_bytes)),
        )
        .add(
            "precopy_seconds",
            Value::Float(r.precopy_time.as_secs_f64()),
        )
        .add(
            "stop_copy_seconds",
            Value::Float(r.stop_copy_time.as_secs_f64()),
        );
}

/// Where `save` writes its stream: `-o` as given; without it standard
/// output, unless `stdout_is_terminal()` (a gigabyte of binary is no use
/// on a screen, and can leave the terminal in a strange state).
///
/// # Errors
/// [`TransferCmdError::TerminalOutput`].
pub fn stream_destination(
    output: Option<&str>,
    stdout_is_terminal: impl FnOnce() -> bool,
) -> Result<&str, TransferCmdError> {
    match output {
        Some(given) => Ok(given),
        None if stdout_is_terminal() => Err(TransferCmdError::TerminalOutput),
        None => Ok("-"),
    }
}

/// `mlx5vf save`.
///
/// # Errors
/// [`TransferCmdError`].
pub fn save(args: &SaveArgs) -> Result<Summary, TransferCmdError> {
    // Before the device is touched: a refused save changes nothing.
    let destination = stream_destination(args.output.as_deref(), || io::stdout().is_terminal())?;
    if args.json && destination == "-" {
        return Err(TransferCmdError::JsonOnStreamOutput);
    }
    let interrupt = interrupt_on_signals();
    let mut opts = DriverOptions::default();
    args.saving.apply(&mut opts);
    let mut dev = open(&args.device, &opts)?;
    let total = dev.data_size().unwrap_or(0);
    let mut out = open_output(destination, &interrupt, &args.network.options())
        .map_err(TransferCmdError::Endpoint)?;
    let resting = resting_state(dev.as_mut());
    let progress = Progress::new(total, true).interrupted_by(interrupt);
    let opts = SaveOptions {
        precopy: args.precopy,
        downtime_limit: args.downtime_limit,
        ..SaveOptions::default()
    };
    let r = transfer::save(dev.as_mut(), &mut out, &opts, &progress);
    progress.finish();
    let r = r.map_err(TransferCmdError::Transfer)?;
    // The state is out; a receiver that did not take it leaves the source
    // the only copy, so it goes back to where it was, as after any failed
    // migration.
    if let Err(e) = out.finish() {
        return Err(TransferCmdError::Transfer(TransferError {
            failure: Failure::Output(e),
            device: transfer::restore(dev.as_mut(), resting),
        }));
    }
    let mut s = Summary::default();
    s.add("command", Value::Text("save".into()))
        .add("device", Value::Text(dev.describe()));
    out.describe(&mut s);
    add_save(&mut s, &r);
    s.add("seconds", Value::Float(r.total_time.as_secs_f64()))
        .add("bytes_per_sec", Value::Float(rate(r.bytes, r.total_time)))
        .add(
            "peak_buffer_bytes",
            Value::Int(dev.stats().peak_buffer_bytes),
        );
    if let Some(d) = dev.digest() {
        s.add("digest", Value::Text(d));
    }
    Ok(s)
}

fn add_load(s: &mut Summary, r: &LoadReport) {
    add_stream(s, r.bytes, r.format, r.records, r.recovered);
    s.add("seconds", Value::Float(r.total_time.as_secs_f64()))
        .add("bytes_per_sec", Value::Float(rate(r.bytes, r.total_time)));
}

/// `mlx5vf load`.
///
/// # Errors
/// [`TransferCmdError`].
pub fn load(args: &LoadArgs) -> Result<Summary, TransferCmdError> {
    let interrupt = interrupt_on_signals();
    let mut opts = DriverOptions::default();
    args.loading.apply(&mut opts);
    let mut dev = open(&args.device, &opts)?;
    let mut input = open_input(&args.input, &interrupt, &args.network.options())
        .map_err(TransferCmdError::Endpoint)?;
    let progress = Progress::new(0, true).interrupted_by(interrupt);
    let r = transfer::load(dev.as_mut(), &mut input, &progress);
    progress.finish();
    // A failed load drops the input unconfirmed: a network sender learns
    // of the failure and keeps its source.
    let r = r.map_err(TransferCmdError::Transfer)?;
    input.confirm().map_err(TransferCmdError::Unconfirmed)?;
    let mut s = Summary::default();
    s.add("command", Value::Text("load".into()))
        .add("device", Value::Text(dev.describe()));
    input.describe(&mut s);
    add_load(&mut s, &r);
    s.add(
        "peak_buffer_bytes",
        Value::Int(dev.stats().peak_buffer_bytes),
    );
    if let Some(d) = dev.digest() {
        s.add("digest", Value::Text(d));
    }
    Ok(s)
}

/// The state a migration's source goes back to when the migration fails:
/// where it was (a running VM goes on running), or RUNNING if it was found
/// mid-session.
fn resting_state(dev: &mut dyn MigrationDevice) -> MigState {
    match dev.state() {
        Ok(s @ (MigState::Running | MigState::RunningP2p | MigState::Stop)) => s,
        _ => MigState::Running,
    }
}

/// `mlx5vf migrate`: saves one device into another in this process, the two
/// sides running concurrently through a bounded pipe, and compares digests.
///
/// # Errors
/// [`TransferCmdError`]; [`TransferCmdError::Migration`] when a side failed
/// (the source then goes back to the state it was in, the destination is
/// reset out of RESUMING); [`TransferCmdError::DigestMismatch`] when the
/// destination does not end with the source's state.
pub fn migrate(args: &MigrateArgs) -> Result<Summary, TransferCmdError> {
    let interrupt = interrupt_on_signals();
    let driver = args.driver_options();
    let (mut src, guest) = match args.guest_dirty {
        Some(_) if !args.precopy => {
            return Err(TransferCmdError::Open(crate::backend::OpenError::Spec(
                "--guest-dirty needs --precopy (the guest runs during PRE_COPY)".into(),
            )));
        }
        Some(rate) => {
            let (dev, g) = super::guest_dirty::GuestDirty::open(&args.from, &driver, rate)?;
            (dev, Some(Arc::new(g)))
        }
        None => (open(&args.from, &driver)?, None),
    };
    let mut dst = open(&args.to, &driver)?;
    let source_resting = resting_state(src.as_mut());
    let total = src.data_size().unwrap_or(0);
    let progress = Progress::new(total, true).interrupted_by(interrupt.clone());
    let timeline = Arc::new(Timeline::new());
    if args.timeline.is_some() {
        src.set_timeline(Arc::clone(&timeline));
        dst.set_timeline(Arc::clone(&timeline));
    }
    let source_observer = WithTimeline {
        observer: &progress,
        timeline: &timeline,
    };
    let destination_observer = WithTimeline {
        observer: &interrupt,
        timeline: &timeline,
    };
    let (source_observer, destination_observer): (&dyn Observer, &dyn Observer) =
        if args.timeline.is_some() {
            (&source_observer, &destination_observer)
        } else {
            (&progress, &interrupt)
        };
    let with_guest = guest.as_ref().map(|g| super::guest_dirty::WithGuest {
        inner: source_observer,
        guest: Arc::clone(g),
    });
    let source_observer: &dyn Observer = match &with_guest {
        Some(w) => w,
        None => source_observer,
    };
    let opts = SaveOptions {
        precopy: args.precopy,
        downtime_limit: args.downtime_limit,
        ..SaveOptions::default()
    };
    // 4 chunks of 1 MiB in flight: a socket-sized buffer between the sides.
    let (mut w, mut r) = pipe(1 << 20, 4);
    let start = Instant::now();
    let (saved, loaded) = std::thread::scope(|scope| {
        let saver = scope.spawn(|| {
            let rep = transfer::save(src.as_mut(), &mut w, &opts, source_observer);
            drop(w);
            rep
        });
        let loaded = transfer::load(dst.as_mut(), &mut r, destination_observer);
        drop(r);
        let saved = saver.join().unwrap_or_else(|_| {
            Err(TransferError {
                failure: Failure::Output(io::Error::other("saving thread panicked")),
                device: Aftermath::Unknown,
            })
        });
        (saved, loaded)
    });
    let wall = start.elapsed();
    progress.finish();
    let (saved, loaded) = match (saved, loaded) {
        (Ok(s), Ok(l)) => (s, l),
        // The destination stopped first; the source then found the pipe
        // closed: the destination's failure is the cause.
        (Err(e), Err(cause)) if matches!(e.failure, Failure::Output(_)) => {
            return Err(TransferCmdError::Migration {
                side: Side::Destination,
                error: cause,
                other: e.device,
            });
        }
        // The source failed: the destination saw a cut stream (or none).
        (Err(cause), Err(e)) => {
            return Err(TransferCmdError::Migration {
                side: Side::Source,
                error: cause,
                other: e.device,
            });
        }
        (Err(cause), Ok(_)) => {
            return Err(TransferCmdError::Migration {
                side: Side::Source,
                error: cause,
                other: transfer::restore(dst.as_mut(), MigState::Running),
            });
        }
        // The source saved (and stopped); the destination could not take
        // it: the source goes back to running, as after any failed
        // migration.
        (Ok(_), Err(cause)) => {
            return Err(TransferCmdError::Migration {
                side: Side::Destination,
                error: cause,
                other: transfer::restore(src.as_mut(), source_resting),
            });
        }
    };
    let mut s = Summary::default();
    s.add("command", Value::Text("migrate".into()))
        .add("from", Value::Text(src.describe()))
        .add("to", Value::Text(dst.describe()));
    add_save(&mut s, &saved);
    if let Some(g) = &guest {
        g.add_to(&mut s);
    }
    if let Some(path) = &args.timeline {
        let title = format!(
            "mlx5vf migrate: {} to {}{}",
            src.describe(),
            dst.describe(),
            if args.precopy { ", PRE_COPY" } else { "" }
        );
        super::plot::timeline_svg(path, &title, &timeline.snapshot())
            .map_err(TransferCmdError::Endpoint)?;
        s.add("timeline", Value::Text(path.display().to_string()));
    }
    if let Some(r) = loaded.recovered {
        s.add("destination_recovered", Value::Text(r.to_string()));
    }
    let downtime = match (saved.stopped_at, loaded.running_at) {
        (Some(a), Some(b)) => b.saturating_duration_since(a),
        _ => wall,
    };
    s.add("seconds", Value::Float(wall.as_secs_f64()))
        .add("bytes_per_sec", Value::Float(rate(saved.bytes, wall)))
        .add("downtime_seconds", Value::Float(downtime.as_secs_f64()))
        .add(
            "source_peak_buffer_bytes",
            Value::Int(src.stats().peak_buffer_bytes),
        )
        .add(
            "destination_peak_buffer_bytes",
            Value::Int(dst.stats().peak_buffer_bytes),
        );
    add_policy(&mut s, &src.stats());
    if let Some(rss) = peak_rss_bytes() {
        s.add("peak_rss_bytes", Value::Int(rss));
    }
    let (a, b) = (src.digest(), dst.digest());
    if let (Some(a), Some(b)) = (&a, &b) {
        s.add("source_digest", Value::Text(a.clone()))
            .add("destination_digest", Value::Text(b.clone()))
            .add("digests_match", Value::Bool(a == b));
        if a != b {
            return Err(TransferCmdError::DigestMismatch {
                source: a.clone(),
                destination: b.clone(),
                summary: Box::new(s),
            });
        }
    }
    Ok(s)
}

/// The saving policy as it ended: the chunk size and the firmware speed it
/// was tuned to (when the driver runs in this process).
fn add_policy(s: &mut Summary, stats: &crate::backend::Stats) {
    if let Some(chunk) = stats.chunk_size {
        s.add("source_chunk_size", Value::Int(chunk));
    }
    if let Some((latency_ns, rate)) = stats.firmware_speed {
        s.add("source_fw_latency_ns", Value::Int(latency_ns))
            .add("source_fw_bytes_per_sec", Value::Int(rate));
    }
}

/// The process's peak resident set (`VmHWM` in `/proc/self/status`), on Linux.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn device_of(args: &[&str]) -> String {
        match Cli::parse_from(args).command {
            Command::Save(a) => a.device,
            Command::Load(a) => a.device,
            other => panic!("{other:?}"),
        }
    }

    /// Issue 14: without -o, save refuses a terminal on stdout; -o - (or
    /// any -o) is taken as given, and a pipe or file on stdout is used.
    #[test]
    fn save_refuses_a_terminal_unless_told() {
        let terminal = || true;
        let pipe = || false;
        assert!(matches!(
            stream_destination(None, terminal),
            Err(TransferCmdError::TerminalOutput)
        ));
        assert_eq!(stream_destination(None, pipe).unwrap(), "-");
        assert_eq!(stream_destination(Some("-"), terminal).unwrap(), "-");
        assert_eq!(
            stream_destination(Some("s.bin"), terminal).unwrap(),
            "s.bin"
        );
        let e = TransferCmdError::TerminalOutput;
        assert_eq!(e.exit_code(), crate::cli::EXIT_USAGE);
        assert!(!e.to_string().contains('\n'));
        // The flag is optional, so "not given" can be told from "-".
        match Cli::parse_from(["mlx5vf", "save"]).command {
            Command::Save(a) => assert_eq!(a.output, None),
            other => panic!("{other:?}"),
        }
    }

    /// Issue 14: a load that changes nothing must not print the digest a
    /// default save prints, so the default destination starts elsewhere.
    #[test]
    fn the_default_destination_differs_from_the_default_source() {
        let save = device_of(&["mlx5vf", "save"]);
        let load = device_of(&["mlx5vf", "load"]);
        let digest = |spec: &str| {
            backend::open(spec, &crate::backend::DriverOptions::default())
                .unwrap()
                .digest()
                .unwrap()
        };
        assert_ne!(digest(&save), digest(&load), "{save} vs {load}");
    }
}
