//! What the device-backed subcommands share: driver options, endpoints
//! (files, pipes, TCP, TLS), the progress bar and the summary (text or JSON).

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, IsTerminal, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::backend::DriverOptions;
use crate::interrupt::{Interrupt, Interruptible};
use crate::net::{self, NetError, NetOptions, NetSpec, Notice};
use crate::transfer::{Observer, Phase};

/// The default device.
pub const DEFAULT_DEVICE: &str = "sim:state=1G";
/// The default device a stream is loaded into: a state no default `save`
/// produces (another size and seed), so a load that changed nothing cannot
/// print the digest of a default save.
pub const DEFAULT_DESTINATION: &str = "sim:state=4M,seed=99";

/// How the driver saves: flags for the commands that save (save, migrate,
/// check). Simulated devices run the driver in this process; a kernel
/// driver has its own policy.
#[derive(Clone, Debug, Args)]
#[command(next_help_heading = "Saving policy (sim devices)")]
pub struct SavingArgs {
    /// Chunk buffer size the saving policy starts with (Linux: 8M). Once
    /// SAVEs of two sizes (the first chunks and one smaller probe) gave a
    /// SAVE's fixed cost and the rate, the chunk size becomes the smallest
    /// that keeps the fixed cost under 1/20 of a chunk's time, within
    /// --memory-cap (unless --fixed-chunks).
    #[arg(long, value_name = "SIZE", default_value = "8M", value_parser = parse_size)]
    pub chunk_size: u64,
    /// Keep --chunk-size whatever the firmware's speed (the Linux driver's
    /// fixed policy).
    #[arg(long)]
    pub fixed_chunks: bool,
    /// Chunk buffer memory each side may use when the chunk size is tuned
    /// (the source's slots, the destination's two image buffers).
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = parse_size, conflicts_with = "fixed_chunks")]
    pub memory_cap: u64,
    /// Chunk slots: unread chunks allowed before SAVEs wait for the reader (Linux: 2).
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=8))]
    pub chunk_slots: u8,
    /// Legacy mode: one SAVE image, even if the device offers chunk mode (states up to 4 GiB).
    #[arg(long)]
    pub legacy: bool,
    /// Write exactly what Linux writes: no stream-info / stream-end records.
    #[arg(long)]
    pub no_integrity: bool,
    /// PRE_COPY as the Linux driver does it in chunk mode: one chunk per
    /// precopy-info call, and only the next chunk reported as dirty (the
    /// baseline of `bench downtime`).
    #[arg(long)]
    pub linux_precopy: bool,
}

impl SavingArgs {
    /// Sets the saving side of `opts`.
    pub fn apply(&self, opts: &mut DriverOptions) {
        opts.chunk_size = self.chunk_size;
        opts.chunk_slots = self.chunk_slots;
        opts.chunk_policy = if self.fixed_chunks {
            mlx5vf_core::save::ChunkPolicy::Fixed
        } else {
            mlx5vf_core::save::ChunkPolicy::Measured {
                memory_cap: self.memory_cap,
            }
        };
        opts.legacy = self.legacy;
        opts.integrity = !self.no_integrity;
        opts.linux_precopy = self.linux_precopy;
    }
}

/// How the driver loads: flags for the commands that load (load, migrate,
/// check).
#[derive(Clone, Debug, Args)]
#[command(next_help_heading = "Loading policy (sim devices)")]
pub struct LoadingArgs {
    /// LOAD each image before receiving the next, as the Linux driver does,
    /// instead of receiving image k+1 while image k LOADs.
    #[arg(long)]
    pub sync_load: bool,
}

impl LoadingArgs {
    /// Sets the loading side of `opts`.
    pub fn apply(&self, opts: &mut DriverOptions) {
        opts.sync_load = self.sync_load;
    }
}

/// Parses `300ms`, `1s`, `50us` (the sim spec's durations: whole numbers
/// with `ns`, `us`, `ms` or `s`).
///
/// # Errors
/// A message naming the text.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    mlx5vf_sim::spec::parse_duration(text)
        .ok_or_else(|| format!("{text:?} is not a duration like 300ms, 2s or 50us"))
}

/// Parses `20M`, `5G`, `4096`.
///
/// # Errors
/// A message for clap.
pub fn parse_size(text: &str) -> Result<u64, String> {
    mlx5vf_sim::spec::parse_size(text)
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{text:?} is not a size like 8M, 512K or 4096"))
}

/// Where a stream goes: a local file or standard output, or a network
/// receiver that must confirm it ([`Output::finish`]).
pub enum Output {
    /// A file or standard output.
    Local(Box<dyn Write + Send>),
    /// `tcp://` or `tls://`.
    Net(net::Sender),
}

impl Output {
    /// Ends the stream: flushes it, and for a network receiver waits for
    /// it to confirm (see [`net::Sender::finish`]).
    ///
    /// # Errors
    /// The output failed, or the receiver did not confirm.
    pub fn finish(&mut self) -> io::Result<()> {
        match self {
            Self::Local(w) => w.flush(),
            Self::Net(s) => s.finish(),
        }
    }

    /// Adds the peer and the TLS cipher suite, for a network output.
    pub fn describe(&self, s: &mut Summary) {
        if let Self::Net(n) = self {
            s.add("peer", Value::Text(n.peer().to_string()));
            if let Some(suite) = n.cipher_suite() {
                s.add("tls_cipher_suite", Value::Text(suite));
            }
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Local(w) => w.write(buf),
            Self::Net(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Local(w) => w.flush(),
            Self::Net(s) => s.flush(),
        }
    }
}

/// Where a stream comes from: a local file or standard input, or a network
/// sender to be told the stream was taken ([`Input::confirm`]).
pub enum Input {
    /// A file or standard input.
    Local(Box<dyn BufRead + Send>),
    /// `tcp-listen://` or `tls-listen://`.
    Net(net::Receiver),
}

impl Input {
    /// Tells a network sender the stream was loaded (nothing for a file).
    ///
    /// # Errors
    /// The sender could not be told.
    pub fn confirm(&mut self) -> io::Result<()> {
        match self {
            Self::Local(_) => Ok(()),
            Self::Net(r) => r.confirm(),
        }
    }

    /// Adds the peer and the TLS cipher suite, for a network input.
    pub fn describe(&self, s: &mut Summary) {
        if let Self::Net(n) = self {
            s.add("peer", Value::Text(n.peer().to_string()));
            if let Some(suite) = n.cipher_suite() {
                s.add("tls_cipher_suite", Value::Text(suite));
            }
        }
    }
}

impl Read for Input {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Local(r) => r.read(buf),
            Self::Net(r) => r.read(buf),
        }
    }
}

impl BufRead for Input {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        match self {
            Self::Local(r) => r.fill_buf(),
            Self::Net(r) => r.fill_buf(),
        }
    }

    fn consume(&mut self, amt: usize) {
        match self {
            Self::Local(r) => r.consume(amt),
            Self::Net(r) => r.consume(amt),
        }
    }
}

/// Prints a network notice (a refused peer, the insecure warning) as its
/// own line on stderr, as it happens.
fn print_notice(notice: &Notice) {
    let _ = writeln!(io::stderr().lock(), "mlx5vf: {notice}");
}

/// A network error as the I/O error an endpoint reports (its words kept;
/// [`endpoint_is_usage`] finds it again).
fn net_error(e: NetError) -> io::Error {
    match e {
        NetError::Io { what, error } => io::Error::new(error.kind(), format!("{what}: {error}")),
        other => io::Error::other(other),
    }
}

/// Whether an endpoint error means the command line must change (plain
/// TCP beyond loopback without --insecure, TLS without credentials).
pub fn endpoint_is_usage(e: &io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<NetError>())
        .is_some_and(NetError::is_usage)
}

/// Opens where a stream goes: `-` (stdout), `tcp://HOST:PORT`,
/// `tls://HOST:PORT` (see [`net::connect`]), or a file path. A write that
/// waits on a stalled reader ends when `interrupt` is raised.
///
/// # Errors
/// The file cannot be created, the peer is unreachable or refused, or the
/// network policy refuses the address.
pub fn open_output(spec: &str, interrupt: &Interrupt, opts: &NetOptions) -> io::Result<Output> {
    if spec == "-" {
        let stdout = unbuffered(io::stdout().as_fd())?;
        return Ok(Output::Local(Box::new(BufWriter::with_capacity(
            1 << 20,
            Interruptible::new(stdout, interrupt.clone()),
        ))));
    }
    if let Some(target) = NetSpec::sender(spec) {
        let sender =
            net::connect(&target, opts, interrupt, &mut print_notice).map_err(net_error)?;
        return Ok(Output::Net(sender));
    }
    let f = File::create(spec).map_err(|e| io::Error::new(e.kind(), format!("{spec}: {e}")))?;
    Ok(Output::Local(Box::new(BufWriter::with_capacity(
        1 << 20,
        f,
    ))))
}

/// The standard stream `fd` as a file of its own, bypassing std's buffer:
/// what std buffers for stdout it flushes at exit, and that flush would wait
/// forever on a reader that stopped (after a signal, say); what it buffers
/// for stdin a `poll()` of the descriptor cannot see.
fn unbuffered(fd: BorrowedFd<'_>) -> io::Result<File> {
    fd.try_clone_to_owned().map(File::from)
}

/// Opens where a stream comes from: `-` (stdin), `tcp-listen://ADDR:PORT`
/// or `tls-listen://ADDR:PORT` (one sender; see [`net::accept`]), or a
/// file path. A read that waits on a stalled writer ends when `interrupt`
/// is raised.
///
/// # Errors
/// The file cannot be opened, the address cannot be bound, no sender was
/// accepted in time, or the network policy refuses the address.
pub fn open_input(spec: &str, interrupt: &Interrupt, opts: &NetOptions) -> io::Result<Input> {
    if spec == "-" {
        let stdin = unbuffered(io::stdin().as_fd())?;
        return Ok(Input::Local(Box::new(BufReader::with_capacity(
            1 << 20,
            Interruptible::new(stdin, interrupt.clone()),
        ))));
    }
    if let Some(listen) = NetSpec::receiver(spec) {
        let receiver =
            net::accept(&listen, opts, interrupt, &mut print_notice).map_err(net_error)?;
        return Ok(Input::Net(receiver));
    }
    let f = File::open(spec).map_err(|e| io::Error::new(e.kind(), format!("{spec}: {e}")))?;
    Ok(Input::Local(Box::new(BufReader::with_capacity(1 << 20, f))))
}

/// A progress bar on stderr when it is a terminal; silent otherwise. It
/// also carries the stop request of a transfer.
pub struct Progress {
    bar: Option<ProgressBar>,
    interrupt: Option<Interrupt>,
}

impl Progress {
    /// A bar for `total` bytes (0 = unknown), shown only on a terminal.
    pub fn new(total: u64, enabled: bool) -> Self {
        let bar = (enabled && io::stderr().is_terminal()).then(|| {
            let bar = if total > 0 {
                ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
            } else {
                ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
            };
            let style = ProgressStyle::with_template(
                "{msg:>9} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} {elapsed}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar
        });
        Self {
            bar,
            interrupt: None,
        }
    }

    /// The same bar, telling the transfer to stop when `interrupt` is raised.
    pub fn interrupted_by(self, interrupt: Interrupt) -> Self {
        Self {
            interrupt: Some(interrupt),
            ..self
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Observer for Progress {
    fn progress(&self, total: u64, phase: Phase) {
        if let Some(b) = &self.bar {
            b.set_position(total);
            if b.message() != phase.to_string() {
                b.set_message(phase.to_string());
            }
        }
    }

    fn interrupted_by(&self) -> Option<i32> {
        self.interrupt.as_ref().and_then(Interrupt::signal)
    }
}

/// One value of a summary.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Value {
    /// A count.
    Int(u64),
    /// A measurement (JSON `null` when not finite).
    Float(f64),
    /// Text.
    Text(String),
    /// Yes/no.
    Bool(bool),
}

/// A summary: ordered key/value pairs printed as `key=value` lines for
/// people (stderr) or as one JSON document (its keys in the same order,
/// after `schema`).
#[derive(Clone, Debug, Default)]
pub struct Summary {
    items: Vec<(&'static str, Value)>,
}

impl Summary {
    /// Adds a value.
    pub fn add(&mut self, key: &'static str, value: Value) -> &mut Self {
        self.items.push((key, value));
        self
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.items.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The pairs, in order.
    pub fn entries(&self) -> impl Iterator<Item = (&'static str, &Value)> {
        self.items.iter().map(|(k, v)| (*k, v))
    }

    /// As `key=value` lines (sizes and rates also in human units).
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for (k, v) in &self.items {
            let _ = match v {
                Value::Int(n) if k.ends_with("bytes") => {
                    writeln!(s, "{k}={n} ({})", human_bytes(*n))
                }
                Value::Int(n) => writeln!(s, "{k}={n}"),
                Value::Float(x) if k.ends_with("per_sec") => {
                    writeln!(s, "{k}={x:.0} ({}/s)", human_bytes(*x as u64))
                }
                Value::Float(x) => writeln!(s, "{k}={x:.6}"),
                Value::Text(t) => writeln!(s, "{k}={t}"),
                Value::Bool(b) => writeln!(s, "{k}={b}"),
            };
        }
        s
    }

    /// Prints the `key=value` lines on stderr (for people; `--json` puts
    /// the document on stdout besides).
    pub fn print_text(&self) {
        let _ = io::stderr().lock().write_all(self.to_text().as_bytes());
    }
}

impl Serialize for Summary {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.items.len() + 1))?;
        map.serialize_entry("schema", super::json::SCHEMA)?;
        for (key, value) in &self.items {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// `1.50 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS.get(u).copied().unwrap_or("B"))
    }
}

/// A size as a spec writes it: `4G`, `512M`, `12345`.
pub fn human_size(n: u64) -> String {
    for (shift, unit) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if n >= 1 << shift && n % (1 << shift) == 0 {
            return format!("{}{unit}", n >> shift);
        }
    }
    n.to_string()
}

/// Bytes per second.
pub fn rate(bytes: u64, d: Duration) -> f64 {
    let s = d.as_secs_f64();
    if s > 0.0 { bytes as f64 / s } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_one_document_in_order() {
        let mut s = Summary::default();
        s.add("command", Value::Text("save".into()))
            .add("bytes", Value::Int(3))
            .add("name", Value::Text("a\"b\\c\n\u{1}".into()))
            .add("ok", Value::Bool(true))
            .add("rate", Value::Float(1.5))
            .add("ratio", Value::Float(f64::NAN));
        let json = serde_json::to_string(&s).unwrap();
        // The keys in the summary's order, after the schema.
        assert_eq!(
            json,
            r#"{"schema":"mlx5vf/1","command":"save","bytes":3,"name":"a\"b\\c\n\u0001","ok":true,"rate":1.5,"ratio":null}"#
        );
        let back: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back["name"], "a\"b\\c\n\u{1}");
        assert!(s.to_text().contains("bytes=3 (3 B)"));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("8M"), Ok(8 << 20));
        assert!(parse_size("0").is_err());
        assert!(parse_size("8Q").is_err());
        assert_eq!(human_bytes(1536), "1.50 KiB");
    }
}
