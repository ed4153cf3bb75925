//! The `mlx5vf` command line: argument types ([`Cli`], [`Command`]), the
//! dispatcher ([`run`]) and the error every subcommand reports ([`Error`]).
//!
//! Each subcommand lives in its own module and writes its results to the
//! `out` it is given, so tests can run it without a process. `main` only
//! parses the arguments, calls [`run`] with standard output and turns an
//! [`Error`] into one line on standard error and an exit status.

pub mod bench;
pub mod check;
pub mod device;
pub mod dirty;
pub mod guest_dirty;
pub mod help;
pub mod ifc;
pub mod inspect;
pub mod json;
pub mod network;
pub mod pass_fds;
pub mod plot;
pub mod states;
pub mod transfer_cmds;

use std::fmt;
use std::io::{self, Write};

use clap::{Parser, Subcommand};

use crate::backend;

/// Exit status of a request that was well formed but failed.
pub const EXIT_FAILURE: u8 = 1;
/// Exit status of a usage error (clap uses the same for its own).
pub const EXIT_USAGE: u8 = 2;
/// Exit status when standard output was closed early (e.g. piped into
/// `head`): what a shell reports for a process killed by SIGPIPE.
pub const EXIT_BROKEN_PIPE: u8 = 141;

/// The `mlx5vf` command line.
#[derive(Debug, Parser)]
#[command(
    name = "mlx5vf",
    version,
    about = "mlx5 VF live-migration driver logic: tools for commands, states and streams",
    long_about = "mlx5 VF live-migration driver logic (the Linux mlx5-vfio-pci migration \
                  path, chunk mode included), in Rust.\n\n\
                  Commands that take a device (save, load, migrate, check) describe device \
                  specs (sim:..., vfio-mig:..., vfio-fd:...) with examples in their --help; \
                  pass-fds opens devices as a VMM does and hands their fds to a program.\n\n\
                  --json (on every command that reports) prints one JSON document on \
                  standard output, with \"schema\": \"mlx5vf/1\" and its \"command\"; \
                  what is meant for people stays on standard error; a failure is a \
                  document too, with \"error\". bench --json prints one document per \
                  result (JSON Lines).\n\n\
                  Exit status: 0 on success, 1 when a well-formed request fails (no such \
                  transition, a malformed stream, an I/O error), 2 on a usage error. Errors \
                  are one line on standard error, starting \"mlx5vf: \"."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Encode or decode firmware command structures by their mlx5_ifc.h names.
    #[command(subcommand, long_about = ifc::LONG_ABOUT)]
    Ifc(ifc::IfcCommand),
    /// Walk the VFIO migration state graph (vfio_mig_get_next_state).
    #[command(subcommand, long_about = states::LONG_ABOUT)]
    States(states::StatesCommand),
    /// List the records of a migration stream and check its integrity.
    #[command(long_about = inspect::LONG_ABOUT, after_help = inspect::AFTER_HELP)]
    Inspect(inspect::InspectArgs),
    /// Migrate a VF's state from one device to another in this process (the main job).
    #[command(
        long_about = MIGRATE_ABOUT,
        after_help = help::DEVICE_SPECS_SHORT,
        after_long_help = help::device_specs(help::MIGRATE_EXAMPLES)
    )]
    Migrate(transfer_cmds::MigrateArgs),
    /// Save a VF's state to a file, a pipe or a network receiver (TLS, or TCP on loopback).
    #[command(
        long_about = SAVE_ABOUT,
        after_help = help::DEVICE_SPECS_SHORT,
        after_long_help = help::device_specs(help::SAVE_EXAMPLES)
    )]
    Save(transfer_cmds::SaveArgs),
    /// Load a VF's state from a file, a pipe or a network sender (TLS, or TCP on loopback).
    #[command(
        long_about = LOAD_ABOUT,
        after_help = help::DEVICE_SPECS_SHORT,
        after_long_help = help::device_specs(help::LOAD_EXAMPLES)
    )]
    Load(transfer_cmds::LoadArgs),
    /// Check a device against the VFIO migration uAPI (arcs, EOF, ENOMSG, EAGAIN, reset).
    #[command(
        long_about = check::LONG_ABOUT,
        after_help = help::DEVICE_SPECS_SHORT,
        after_long_help = help::device_specs(help::CHECK_EXAMPLES)
    )]
    Check(check::CheckArgs),
    /// Device dirty-page tracking on a simulated VF: start, read-and-clear rounds, --verify against the guest.
    #[command(long_about = dirty::LONG_ABOUT)]
    Dirty(dirty::DirtyArgs),
    /// Benchmarks: pipeline and resume vs memcpy, chunk policies, scaling, downtime vs the Linux driver, TLS vs TCP.
    Bench(bench::BenchArgs),
    /// Open VFIO devices as a VMM does and run a program that adopts their fds (vfio-fd: specs).
    #[command(long_about = pass_fds::LONG_ABOUT, after_help = help::examples(help::PASS_FDS_EXAMPLES))]
    PassFds(pass_fds::PassFdsArgs),
}

const MIGRATE_ABOUT: &str = "Migrate a VF's state from one device to another in this process: the \
    saving side (PRE_COPY rounds if --precopy, then STOP_COPY) and the loading side (RESUMING, \
    STOP, RUNNING) run concurrently, connected by a bounded pipe. Prints bytes, records, chunks, \
    wall time, throughput, the stop-copy downtime and peak buffer memory on stderr; exits 0 only \
    if the destination's state digest equals the source's.\n\n\
    Where the devices are left. On success: the source in STOP (its state is out), the \
    destination RUNNING with it. On a failure (exit 1, one line naming the side that failed \
    first and how each side was left): the source goes back to the state it was in, RUNNING \
    usually (by VFIO_DEVICE_RESET if the arcs back fail), as a VMM resumes the source when a \
    migration fails; the destination is reset out of RESUMING with VFIO_DEVICE_RESET (the uAPI's \
    only way out of RESUMING) and is RUNNING afterwards. SIGINT, SIGTERM and SIGHUP are \
    failures like any other (a second signal exits at once; the next save or load then finds \
    the device mid-session and recovers it first). On a digest mismatch the source is left \
    in STOP and the destination RUNNING.";

const SAVE_ABOUT: &str = "Save a VF's state to a file, a pipe or a network receiver: PRE_COPY rounds if \
    --precopy, then STOP_COPY to end of stream, as QEMU drives a VFIO device. Prints bytes, the \
    stream's format (mlx5vf, linux-mlx5, or opaque for another driver's stream, reported as \
    bytes only), records for an mlx5 stream, times, and the digest of a simulated device on \
    stderr.\n\n\
    The stream goes to -o; without -o to standard output, unless that is a terminal: then \
    save refuses (exit 2, before touching the device), and -o - writes to the terminal \
    anyway.\n\n\
    Over the network: -o tls://HOST:PORT (TLS 1.3; --tls-creds DIR as QEMU's tls-creds-x509 \
    lays it out: the receiver's certificate must be signed by ca-cert.pem and carry HOST, or \
    --tls-hostname; client-cert.pem proves this sender to the receiver). -o tcp://HOST:PORT is \
    plain TCP, refused beyond loopback addresses unless --insecure (warned on every run). \
    The save succeeds only once the receiver has loaded the stream and closed the connection \
    in order; a receiver that refuses, fails or goes silent (--io-timeout) fails the save, \
    and the device goes back to the state it was in.\n\n\
    Where the device is left. A device found mid-session (left by an earlier user) is first \
    brought out: RESUMING or ERROR by VFIO_DEVICE_RESET, STOP_COPY walked to STOP, PRE_COPY to \
    RUNNING, PRE_COPY_P2P to RUNNING_P2P (summary: recovered=...). On success: STOP (its state \
    is out; running it would make the copy stale). On any failure (exit 1, one line ending with \
    how the device was left): the device refused or failed, the output failed, a stream of no \
    bytes, SIGINT/SIGTERM/SIGHUP: back to the state it was in, RUNNING usually, by arcs, or by \
    VFIO_DEVICE_RESET if they fail.";

const LOAD_ABOUT: &str = "Load a VF's state from a file, a pipe or a network sender: RESUMING, \
    every byte of the stream in order, STOP (where the driver judges the stream), RUNNING. \
    Prints bytes, the stream's format, records for an mlx5 stream, and the digest of a \
    simulated device on stderr.\n\n\
    A load that carries no state fails (exit 1, one line naming why): an empty stream; for a \
    device that speaks mlx5 (sim, mlx5_vfio_pci, the mlx5vf_sim module), bytes that are not an \
    mlx5 stream (the line shows what the first bytes look like) and an mlx5 stream with no \
    firmware image. An mlx5 stream is recognised by its first record: STOP_COPY_SIZE, FW_DATA \
    or mlx5vf stream-info. Other drivers' streams are opaque: the tool passes them on and the \
    driver judges them. A refusal says the device refused the stream, at which byte (or on \
    leaving RESUMING), with the errno.\n\n\
    Over the network: -i tls-listen://ADDR:PORT (TLS 1.3; --tls-creds DIR holding ca-cert.pem, \
    server-cert.pem, server-key.pem) serves one sender: the first whose client certificate \
    ca-cert.pem signed. Others (no certificate, another CA's, plain TCP, a sender that \
    refuses this certificate) are refused, one line each on stderr naming the address and \
    why, and the listener waits on until --accept-timeout (then exit 1, device untouched). \
    -i tcp-listen://ADDR:PORT takes the first connection and is refused beyond loopback \
    addresses unless --insecure (warned on every run). A sender that closes without TLS \
    close_notify, sends a TLS alert or a record that fails authentication, or sends nothing \
    for --io-timeout fails the load with that cause, as an input failure below.\n\n\
    Where the device is left. A device found mid-session is first brought out as `save` does \
    (a RESUMING left by a killed load is reset), so a failed load never blocks the next one. \
    On success: RUNNING, with the loaded state. An empty stream, or bytes that are not an \
    mlx5 stream: untouched (refused before the device sees a byte). Any failure after RESUMING \
    was entered (the device refused the data on a write or on RESUMING -> STOP, no firmware \
    image, the input failed, SIGINT/SIGTERM/SIGHUP): reset with VFIO_DEVICE_RESET, the uAPI's \
    only way out of RESUMING; it is RUNNING afterwards, holding whatever the reset leaves \
    (part of the stream may have been loaded). Entering RESUMING failed: walked back to the \
    state it was in. If the reset itself fails, the line says so and names the last state \
    seen. A second signal exits at once; the next load recovers the device.";

impl Command {
    /// The `command` of its JSON document, when `--json` was given.
    pub fn json_name(&self) -> Option<&'static str> {
        let (json, name) = match self {
            // A launcher: its program reports (with its own --json).
            Self::PassFds(_) => return None,
            Self::Ifc(cmd) => (cmd.json(), cmd.name()),
            Self::States(cmd) => (cmd.json(), cmd.name()),
            Self::Inspect(args) => (args.json, "inspect"),
            Self::Migrate(args) => (args.json, "migrate"),
            Self::Save(args) => (args.json, "save"),
            Self::Load(args) => (args.json, "load"),
            Self::Check(args) => (args.json, "check"),
            Self::Bench(args) => (args.json, "bench"),
            Self::Dirty(args) => (args.json, "dirty"),
        };
        json.then_some(name)
    }
}

/// Runs one subcommand, writing its results to `out`, which is flushed
/// before returning (so a caller printing an error afterwards prints it after
/// the results). With `--json`, `out` receives the JSON document, also
/// when the command fails (with an `error` object).
///
/// # Errors
/// What the subcommand reports; [`Error::exit_code`] says how to exit.
pub fn run(command: &Command, out: &mut dyn Write) -> Result<(), Error> {
    let json = command.json_name().is_some();
    let result = match command {
        Command::Ifc(cmd) => ifc::run(cmd, out),
        Command::States(cmd) => states::run(cmd, out),
        Command::Inspect(args) => inspect::run(args, out),
        Command::Migrate(args) => finish(transfer_cmds::migrate(args), json, out),
        Command::Save(args) => finish(transfer_cmds::save(args), json, out),
        Command::Load(args) => finish(transfer_cmds::load(args), json, out),
        Command::Bench(args) => bench::run(args, out).map_err(Error::Bench),
        Command::Check(args) => check::run(args, out).map_err(Error::Check),
        Command::PassFds(args) => pass_fds::run(args).map_err(Error::PassFds),
        Command::Dirty(args) => dirty::run(args, out).map_err(Error::Dirty),
    };
    if let (Err(e), Some(name)) = (&result, command.json_name()) {
        if !e.has_document() {
            let doc = FailureDocument {
                command: name,
                error: e,
            };
            // The error stays what the command reports (its line on
            // stderr, its exit status); a document that cannot be written
            // as well changes neither.
            let _ = json::write_line(out, &doc);
        }
    }
    let flushed = out.flush().map_err(Error::Output);
    result.and(flushed)
}

/// Prints a device command's summary: `key=value` lines on stderr and,
/// with `--json`, the document on `out`. A digest mismatch has a summary
/// too (its document is written with the error).
fn finish(
    result: Result<device::Summary, transfer_cmds::TransferCmdError>,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), Error> {
    match result {
        Ok(summary) => {
            summary.print_text();
            if json {
                json::write_line(out, &summary).map_err(Error::Output)?;
            }
            Ok(())
        }
        Err(e) => {
            if let Some(summary) = e.summary() {
                summary.print_text();
            }
            Err(Error::Transfer(e))
        }
    }
}

/// The document of a command that failed: `schema`, `command`, the
/// summary's fields when the failure has one (a digest mismatch), and
/// `error`.
struct FailureDocument<'a> {
    command: &'a str,
    error: &'a Error,
}

impl serde::Serialize for FailureDocument<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("schema", json::SCHEMA)?;
        map.serialize_entry("command", self.command)?;
        if let Error::Transfer(e) = self.error {
            for (key, value) in e.summary().into_iter().flat_map(device::Summary::entries) {
                if key != "command" {
                    map.serialize_entry(key, value)?;
                }
            }
        }
        let failure = json::Failure {
            message: self.error.to_string(),
            exit_code: self.error.exit_code(),
        };
        map.serialize_entry("error", &failure)?;
        map.end()
    }
}

/// Why a subcommand failed.
#[derive(Debug)]
pub enum Error {
    /// `mlx5vf ifc`.
    Ifc(ifc::IfcError),
    /// `mlx5vf states`.
    States(states::StatesError),
    /// `mlx5vf inspect`.
    Inspect(inspect::InspectError),
    /// `mlx5vf save`, `load`, `migrate`.
    Transfer(transfer_cmds::TransferCmdError),
    /// `mlx5vf bench`.
    Bench(io::Error),
    /// `mlx5vf check`.
    Check(check::CheckError),
    /// `mlx5vf pass-fds`.
    PassFds(pass_fds::PassFdsError),
    /// `mlx5vf dirty`.
    Dirty(dirty::DirtyError),
    /// Writing the results failed.
    Output(io::Error),
}

impl Error {
    /// The process exit status: [`EXIT_USAGE`] for usage errors,
    /// [`EXIT_BROKEN_PIPE`] when the output was closed early, otherwise
    /// [`EXIT_FAILURE`].
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Ifc(e) => e.exit_code(),
            Self::States(e) => e.exit_code(),
            Self::Inspect(_) => EXIT_FAILURE,
            Self::Transfer(e) => e.exit_code(),
            Self::Bench(_) => EXIT_FAILURE,
            Self::Check(check::CheckError::Open(backend::OpenError::Spec(_))) => EXIT_USAGE,
            Self::Check(_) => EXIT_FAILURE,
            Self::PassFds(e) => e.exit_code(),
            Self::Dirty(e) => e.exit_code(),
            Self::Output(e) if e.kind() == io::ErrorKind::BrokenPipe => EXIT_BROKEN_PIPE,
            Self::Output(_) => EXIT_FAILURE,
        }
    }

    /// Whether the error is worth a message: a closed output pipe is not
    /// (the reader went away on purpose).
    pub fn is_quiet(&self) -> bool {
        matches!(self, Self::Output(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }

    /// Whether the command's JSON document already carries this error (a
    /// listing that stopped at a malformed record, a check report with
    /// failures), or no document may be written (the output failed, or
    /// stdout was to carry a stream).
    fn has_document(&self) -> bool {
        match self {
            Self::Inspect(e) => e.is_in_listing(),
            Self::Check(check::CheckError::Failed(_))
            | Self::Dirty(dirty::DirtyError::Missed(_))
            | Self::Transfer(transfer_cmds::TransferCmdError::JsonOnStreamOutput)
            | Self::Output(_) => true,
            _ => false,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ifc(e) => write!(f, "ifc: {e}"),
            Self::States(e) => write!(f, "states: {e}"),
            Self::Inspect(e) => write!(f, "inspect: {e}"),
            Self::Transfer(e) => e.fmt(f),
            Self::Bench(e) => write!(f, "bench: {e}"),
            Self::Check(e) => write!(f, "check: {e}"),
            Self::PassFds(e) => write!(f, "pass-fds: {e}"),
            Self::Dirty(e) => write!(f, "dirty: {e}"),
            Self::Output(e) => write!(f, "writing output: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Ifc(e) => Some(e),
            Self::States(e) => Some(e),
            Self::Inspect(e) => Some(e),
            Self::Transfer(e) => Some(e),
            Self::Bench(e) => Some(e),
            Self::Check(e) => Some(e),
            Self::PassFds(e) => Some(e),
            Self::Dirty(e) => Some(e),
            Self::Output(e) => Some(e),
        }
    }
}

impl From<ifc::IfcError> for Error {
    fn from(e: ifc::IfcError) -> Self {
        Self::Ifc(e)
    }
}

impl From<states::StatesError> for Error {
    fn from(e: states::StatesError) -> Self {
        Self::States(e)
    }
}

impl From<inspect::InspectError> for Error {
    fn from(e: inspect::InspectError) -> Self {
        match e {
            // A failed write is the same failure whichever subcommand wrote.
            inspect::InspectError::Output(e) => Self::Output(e),
            other => Self::Inspect(other),
        }
    }
}

/// Parses a number the way every subcommand does: decimal, or hexadecimal
/// with a `0x` prefix; `None` for anything else (signs, empty digits,
/// overflow).
pub fn parse_u64(text: &str) -> Option<u64> {
    let (digits, radix) = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => (hex, 16),
        None => (text, 10),
    };
    // `from_str_radix` accepts a leading `+`; a number here is digits only.
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// A migration whose digests differ fails with its summary: the
    /// document carries the figures and the error, once each.
    #[test]
    fn a_digest_mismatch_document_keeps_the_summary() {
        let mut summary = device::Summary::default();
        summary
            .add("command", device::Value::Text("migrate".into()))
            .add("bytes", device::Value::Int(7))
            .add("digests_match", device::Value::Bool(false));
        let error = Error::Transfer(transfer_cmds::TransferCmdError::DigestMismatch {
            source: "aa".into(),
            destination: "bb".into(),
            summary: Box::new(summary),
        });
        let doc = FailureDocument {
            command: "migrate",
            error: &error,
        };
        assert_eq!(
            serde_json::to_string(&doc).unwrap(),
            r#"{"schema":"mlx5vf/1","command":"migrate","bytes":7,"digests_match":false,"error":{"message":"digests differ: source aa, destination bb","exit_code":1}}"#
        );
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_u64("0"), Some(0));
        assert_eq!(parse_u64("42"), Some(42));
        assert_eq!(parse_u64("0x2A"), Some(42));
        assert_eq!(parse_u64("0Xff"), Some(255));
        assert_eq!(parse_u64("18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64("0xffffffffffffffff"), Some(u64::MAX));
        for bad in [
            "",
            "0x",
            "+1",
            "-1",
            "1_000",
            "0x+1",
            "18446744073709551616",
            "0x10000000000000000",
            "12a",
            " 1",
        ] {
            assert_eq!(parse_u64(bad), None, "{bad:?}");
        }
    }
}
