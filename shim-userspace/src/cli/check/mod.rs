//! `mlx5vf check`: a conformance run of a device against the VFIO migration
//! uAPI v2: every arc the state graph allows (and the ones it forbids), the
//! data fd's end of stream, `ENOMSG` in PRE_COPY, `EAGAIN` and `poll()` with
//! `O_NONBLOCK`, closing a data fd mid-stream, an incomplete stream on
//! resume, reset, and DMA logging's uAPI where the device offers it
//! (`check/dma_logging.rs`). It runs on the simulated device and on any `vfio-mig:`
//! device, so the same checks hold our driver, our kernel module and
//! Linux's `mlx5-vfio-pci` to the same rules.

use std::io::{self, Read, Write};
use std::time::Duration;

use clap::Args;
use mlx5vf_core::errno::Errno;
use mlx5vf_core::vfio::{MigState, MigrationFlags, Path};
use serde::Serialize;

use super::device::{DEFAULT_DEVICE, LoadingArgs, SavingArgs};
use super::json::{self, Document};
use crate::backend::{self, DataFile, MigrationDevice, OpenError, errno_of, is_no_message};
use crate::interrupt::{Interrupt, signal_name};

mod dma_logging;

/// Long help of `mlx5vf check`.
pub const LONG_ABOUT: &str = "Check a device against the VFIO migration uAPI v2: every arc the \
    state graph allows (state after, data fd returned exactly when the arc opens a session) and \
    the ones it forbids (EINVAL, state unchanged); MIG_DATA_SIZE in every state; the STOP_COPY \
    stream to end of stream (read returns 0, again and again); PRE_COPY's temporary end (ENOMSG) \
    and PRE_COPY_P2P -> STOP_COPY on the same fd; O_NONBLOCK reads (EAGAIN, then poll() wakes); \
    closing a data fd mid-stream; an incomplete stream on resume (RESUMING -> STOP must fail); \
    VFIO_DEVICE_RESET ending a session; and, when the device offers DMA logging (device dirty \
    tracking), its uAPI: START's argument checks (no, misaligned, overlapping or too many \
    ranges), one START at a time, REPORT's page-size check, REPORT outside the tracked ranges \
    refused, REPORT after STOP refused, START again after STOP.\n\n\
    Prints one line per check (PASS, WARN, SKIP or FAIL), and one more per failed arc; each \
    line ends with the rule it applies, [rule: ...], citing the uAPI (vfio.h). A broken \
    \"must\" fails; a broken \"should\" (ENOMSG rather than an empty read at PRE_COPY's \
    temporary end, initial_bytes starting non-zero, EINVAL from the precopy ioctl outside \
    PRE_COPY) warns, and so does an incomplete stream accepted on resume (a \"must\", but \
    Linux's mlx5 driver accepts one); --strict makes warnings fail. Every arc \
    is tried even after a failure; the arcs line counts arcs checked and skipped, with why. \
    Leaving RESUMING with no data written may be refused (a driver that validates its stream) \
    or succeed. Exits 1 if any check failed (or warned, with --strict). The device's state is \
    changed; it ends RUNNING (by VFIO_DEVICE_RESET if need be, also after SIGINT or \
    SIGTERM).";

/// Arguments of `mlx5vf check`.
#[derive(Clone, Debug, Args)]
pub struct CheckArgs {
    /// The device to check (`sim:...`, `vfio-mig:...` or `vfio-fd:...`).
    #[arg(long, value_name = "SPEC", default_value = DEFAULT_DEVICE)]
    pub device: String,
    /// Fail unless a non-blocking read saw EAGAIN at least once (for devices
    /// known to complete their reads asynchronously).
    #[arg(long)]
    pub require_eagain: bool,
    /// Fail unless the device offers DMA logging (device dirty tracking);
    /// without it, a device that offers none skips that check.
    #[arg(long)]
    pub require_dma_logging: bool,
    /// Treat warnings (e.g. an incomplete stream accepted on resume) as failures.
    #[arg(long)]
    pub strict: bool,
    /// Print the report as one JSON document on stdout; the lines go to
    /// stderr as the checks run.
    #[arg(long)]
    pub json: bool,
    /// How the driver saves (the checks save and resume).
    #[command(flatten)]
    pub saving: SavingArgs,
    /// How the driver loads.
    #[command(flatten)]
    pub loading: LoadingArgs,
}

/// Why `mlx5vf check` failed.
#[derive(Debug)]
pub enum CheckError {
    /// The device could not be opened.
    Open(OpenError),
    /// Some checks failed (or warned, with `--strict`); the count.
    Failed(usize),
    /// Writing the report failed.
    Output(io::Error),
}

impl std::fmt::Display for CheckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Open(e) => e.fmt(f),
            Self::Failed(n) => write!(f, "{n} check(s) failed"),
            Self::Output(e) => write!(f, "writing the report: {e}"),
        }
    }
}

impl std::error::Error for CheckError {}

/// The outcome of one check.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Pass(String),
    Warn(String),
    Skip(String),
    Fail(String),
}

/// How long a non-blocking reader waits in `poll()` before calling the
/// device stuck. A SAVE chunk takes milliseconds even under emulation.
const POLL_TIMEOUT: Duration = Duration::from_secs(30);
/// Read size of the stream checks (QEMU's data buffer).
const READ_SIZE: usize = 1 << 20;
/// ENOMSG answers tolerated while initial bytes remain: a device that says
/// "nothing now" this often without draining its initial data is stuck.
const MAX_ENOMSG: u32 = 10_000;
/// How much of the STOP_COPY stream is kept to build the incomplete stream.
const PREFIX_MAX: usize = 1 << 20;

/// Runs `mlx5vf check`.
///
/// # Errors
/// [`CheckError`].
pub fn run(args: &CheckArgs, out: &mut dyn Write) -> Result<(), CheckError> {
    let mut driver = backend::DriverOptions::default();
    args.saving.apply(&mut driver);
    args.loading.apply(&mut driver);
    let mut dev = backend::open(&args.device, &driver).map_err(CheckError::Open)?;
    let opts = CheckOptions {
        require_eagain: args.require_eagain,
        require_dma_logging: args.require_dma_logging,
        strict: args.strict,
        interrupt: Interrupt::on_signals().unwrap_or_default(),
    };
    let report = if args.json {
        let report =
            check_device(dev.as_mut(), &opts, &mut io::stderr()).map_err(CheckError::Output)?;
        json::write_line(out, &Document::new("check", &report)).map_err(CheckError::Output)?;
        report
    } else {
        check_device(dev.as_mut(), &opts, out).map_err(CheckError::Output)?
    };
    if report.failed > 0 {
        return Err(CheckError::Failed(report.failed));
    }
    Ok(())
}

/// What a run of the checks found: the lines it printed, as values.
#[derive(Clone, Debug, Serialize)]
pub struct CheckReport {
    /// The device, as it describes itself.
    pub device: String,
    /// Its migration flags (the `VFIO_MIGRATION_*` word).
    pub migration_flags: u64,
    /// Every line, in order: a check's findings (one per failed arc)
    /// before its own line.
    pub checks: Vec<CheckLine>,
    /// Checks that failed (or warned, with `--strict`).
    pub failed: usize,
    /// No check failed (nor warned, with `--strict`).
    pub passed: bool,
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckLine {
    /// The check (`arcs`, `pre-copy`, ...).
    pub name: &'static str,
    /// `pass`, `warn`, `skip` or `fail`.
    pub result: &'static str,
    /// What was seen.
    pub detail: String,
    /// The rule it applies.
    pub rule: &'static str,
}

/// Prints report lines as they come and keeps them.
struct Reporter<'a> {
    out: &'a mut dyn Write,
    lines: Vec<CheckLine>,
}

impl Reporter<'_> {
    fn line(
        &mut self,
        name: &'static str,
        outcome: &Outcome,
        rule: &'static str,
    ) -> io::Result<()> {
        let (tag, result, detail) = match outcome {
            Outcome::Pass(d) => ("PASS", "pass", d),
            Outcome::Warn(d) => ("WARN", "warn", d),
            Outcome::Skip(d) => ("SKIP", "skip", d),
            Outcome::Fail(d) => ("FAIL", "fail", d),
        };
        writeln!(self.out, "{tag} {name:<18} {detail} [rule: {rule}]")?;
        self.out.flush()?;
        self.lines.push(CheckLine {
            name,
            result,
            detail: detail.clone(),
            rule,
        });
        Ok(())
    }
}

/// What counts as a failure, and when to stop.
#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    /// A non-blocking read must see EAGAIN at least once.
    pub require_eagain: bool,
    /// The device must offer DMA logging (else its check is skipped).
    pub require_dma_logging: bool,
    /// Warnings (a "should" of the uAPI broken) count as failures.
    pub strict: bool,
    /// Raised (by a signal) to stop between steps; the device is then
    /// brought back to RUNNING as after a full run.
    pub interrupt: Interrupt,
}

/// The rule each check applies, cited on its lines (`vfio.h` is
/// `include/uapi/linux/vfio.h`, the uAPI's text).
mod rule {
    pub(super) const INITIAL_STATE: &str =
        "a device should be RUNNING when opened (vfio-pci resets it on open)";
    pub(super) const ARC_REACHES: &str = "vfio.h: a SET that vfio_mig_get_next_state() allows \
        walks its path and ends in the requested state";
    pub(super) const ARC_FD: &str = "vfio.h: RUNNING->PRE_COPY, RUNNING_P2P->PRE_COPY_P2P, \
        STOP->STOP_COPY and STOP->RESUMING return a data_fd, no other arc does";
    pub(super) const ARC_FORBIDDEN: &str = "vfio_main.c: a SET with no path fails EINVAL and \
        leaves the state";
    pub(super) const ARC_RESUMING: &str = "vfio.h: RESUMING->STOP may fail on incomplete data \
        (then RESUMING or ERROR) or succeed";
    pub(super) const ARCS: &str = "vfio.h MIG_DEVICE_STATE arcs; vfio_main.c \
        vfio_mig_get_next_state()";
    pub(super) const DATA_SIZE: &str = "vfio.h: MIG_DATA_SIZE may be queried in any state";
    pub(super) const STOP_COPY: &str = "vfio.h: in STOP_COPY read() returns 0 at end of stream, \
        every time, never ENOMSG; PRECOPY_INFO should fail EINVAL outside PRE_COPY";
    pub(super) const NONBLOCKING: &str = "data_fd is a file: with O_NONBLOCK a read returns \
        data, EAGAIN (then poll() wakes) or 0; a synchronous read path never says EAGAIN";
    pub(super) const PRE_COPY: &str = "vfio.h: at PRE_COPY's temporary end read() should fail \
        ENOMSG; initial_bytes should start non-zero; PRE_COPY_P2P->STOP_COPY keeps the data_fd";
    pub(super) const CLOSE: &str = "vfio.h: the user may close data_fd at any time; the next \
        arc ends the session";
    pub(super) const INCOMPLETE: &str = "vfio.h: RESUMING->STOP must fail on incomplete data; \
        only a reset aborts RESUMING";
    pub(super) const RESET: &str = "vfio.h: VFIO_DEVICE_RESET returns the device to RUNNING \
        and ends its data_fd";
    pub(super) const FINAL: &str = "mlx5vf: check leaves the device RUNNING";
    pub(super) const DMA_LOGGING: &str = "vfio.h DMA_LOGGING_START/REPORT/STOP; vfio_main.c \
        checks; a driver's vfio_log_ops";
    pub(super) const DMA_START: &str = "vfio_main.c: START with no ranges, misaligned or \
        overlapping ranges fails EINVAL, more than PAGE_SIZE/16 ranges E2BIG; vfio.h: one START \
        at a time, paired with STOP";
    pub(super) const DMA_REPORT: &str = "vfio_main.c: REPORT's page size must be a power of \
        two of at least 4 KiB (EINVAL)";
    pub(super) const DMA_OUTSIDE: &str = "mlx5vf: a REPORT outside the tracked ranges should \
        be refused (an empty bitmap would claim nothing was written)";
    pub(super) const DMA_STOPPED: &str = "vfio.h: STOP ends logging; a REPORT after it must \
        fail (an empty bitmap would claim nothing was written)";
}

/// Runs every check on `dev`, one line each on `out` (more for a check with
/// several findings), each citing its rule, as it goes; returns the report,
/// with how many checks failed (or warned, when strict). The device ends
/// RUNNING (by reset if need be).
///
/// # Errors
/// Writing to `out` failed.
pub fn check_device(
    dev: &mut dyn MigrationDevice,
    opts: &CheckOptions,
    out: &mut dyn Write,
) -> io::Result<CheckReport> {
    let flags = dev.migration_flags();
    let device = dev.describe();
    writeln!(
        out,
        "device {device}: migration flags {:#x} ({})",
        flags.into_bits(),
        describe_flags(flags)
    )?;
    let mut report = Reporter {
        out,
        lines: Vec::new(),
    };
    let mut ctx = Ctx {
        dev,
        flags,
        prefix: Vec::new(),
        stream_len: None,
        require_eagain: opts.require_eagain,
        require_dma_logging: opts.require_dma_logging,
        interrupt: opts.interrupt.clone(),
        findings: Vec::new(),
    };
    let checks: [(&'static str, &'static str, CheckFn); 10] = [
        ("initial-state", rule::INITIAL_STATE, |c| c.initial_state()),
        ("arcs", rule::ARCS, |c| c.arcs()),
        ("data-size", rule::DATA_SIZE, |c| c.data_size()),
        ("stop-copy-stream", rule::STOP_COPY, |c| {
            c.stop_copy_stream()
        }),
        ("nonblocking-read", rule::NONBLOCKING, |c| {
            c.nonblocking_read()
        }),
        ("pre-copy", rule::PRE_COPY, |c| c.pre_copy()),
        ("close-mid-stream", rule::CLOSE, |c| c.close_mid_stream()),
        ("incomplete-resume", rule::INCOMPLETE, |c| {
            c.incomplete_resume()
        }),
        ("reset", rule::RESET, |c| c.reset()),
        ("dma-logging", rule::DMA_LOGGING, |c| c.dma_logging()),
    ];
    let mut failed = 0usize;
    let counts = |o: &Outcome| {
        matches!(o, Outcome::Fail(_)) || (opts.strict && matches!(o, Outcome::Warn(_)))
    };
    for (name, rule, check) in checks {
        let outcome = match ctx.interrupt.signal() {
            Some(sig) => Outcome::Skip(format!("interrupted by {}", signal_name(sig))),
            None => check(&mut ctx),
        };
        for (finding, finding_rule) in std::mem::take(&mut ctx.findings) {
            report.line(name, &finding, finding_rule)?;
        }
        failed += usize::from(counts(&outcome));
        report.line(name, &outcome, rule)?;
    }
    if let Some(sig) = ctx.interrupt.signal() {
        failed += 1;
        let line = Outcome::Fail(format!("interrupted by {}", signal_name(sig)));
        report.line("interrupted", &line, rule::FINAL)?;
    }
    // Leave the device usable whatever happened.
    if let Err(e) = ctx.goto(MigState::Running) {
        let line = Outcome::Fail(format!("cannot return to RUNNING: {}", errno_name(&e)));
        report.line("final-state", &line, rule::FINAL)?;
        failed += 1;
    }
    Ok(CheckReport {
        device,
        migration_flags: flags.into_bits(),
        checks: report.lines,
        failed,
        passed: failed == 0,
    })
}

fn describe_flags(f: MigrationFlags) -> String {
    let mut v = Vec::new();
    if f.stop_copy() {
        v.push("STOP_COPY");
    }
    if f.p2p() {
        v.push("P2P");
    }
    if f.pre_copy() {
        v.push("PRE_COPY");
    }
    v.join(" | ")
}

/// An errno's name for messages.
fn errno_name(e: &io::Error) -> String {
    match errno_of(e) {
        Some(n) => format!(
            "{} ({e})",
            Errno::from_code(n).map_or("errno", |x| x.name())
        ),
        None => e.to_string(),
    }
}

/// One check of [`check_device`].
type CheckFn = fn(&mut Ctx<'_>) -> Outcome;

struct Ctx<'a> {
    dev: &'a mut dyn MigrationDevice,
    flags: MigrationFlags,
    /// The start of a STOP_COPY stream, cut short (for the resume check).
    prefix: Vec<u8>,
    /// The STOP_COPY stream's length from the blocking read.
    stream_len: Option<(u64, u32)>,
    require_eagain: bool,
    require_dma_logging: bool,
    interrupt: Interrupt,
    /// Lines a check reports before its own (each with its rule): one per
    /// failed arc, so one failure does not hide the others.
    findings: Vec<(Outcome, &'static str)>,
}

/// Early return of a failed check: `check!(cond, "message {}", x)`.
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Outcome::Fail(format!($($fmt)+));
        }
    };
}

/// Unwraps a step of a check or fails the check with what was being done.
macro_rules! step {
    ($e:expr, $($fmt:tt)+) => {
        match $e {
            Ok(v) => v,
            Err(e) => return Outcome::Fail(format!("{}: {}", format!($($fmt)+), errno_name(&e))),
        }
    };
}

/// What one arc did.
enum ArcResult {
    /// Reached its target; whether it returned a data fd (as it should).
    Reached { file: bool },
    /// Forbidden and refused with EINVAL, the state unchanged.
    Forbidden,
    /// Left RESUMING (no data written) refused; the device in RESUMING or
    /// ERROR, as the uAPI allows.
    RefusedLeavingResuming,
    /// Broke a rule.
    Failed(String, &'static str),
    /// Not checked: the start state could not be reached.
    Skipped(String),
}

impl Ctx<'_> {
    fn supported_states(&self) -> Vec<MigState> {
        MigState::ALL
            .into_iter()
            .filter(|&s| s != MigState::Error && s.is_supported(self.flags))
            .collect()
    }

    /// Brings the device to `target`: out of RESUMING or ERROR by a reset
    /// (the uAPI's only way out of RESUMING, so no stream is judged here),
    /// then by a direct request if the graph allows one, else through
    /// RUNNING, else after a reset. Returns the data file the last request
    /// opened, if any.
    fn goto(&mut self, target: MigState) -> io::Result<Option<Box<dyn DataFile>>> {
        let mut cur = self.dev.state()?;
        if cur == target {
            return Ok(None);
        }
        if matches!(cur, MigState::Resuming | MigState::Error) {
            self.dev.reset()?;
            cur = self.dev.state()?;
            if cur == target {
                return Ok(None);
            }
        }
        if Path::new(cur, target, self.flags).all(|a| a.is_ok()) {
            if let Ok(f) = self.dev.set_state(target) {
                return Ok(f);
            }
        }
        if self.dev.set_state(MigState::Running).is_err() {
            self.dev.reset()?;
        }
        if target == MigState::Running {
            return Ok(None);
        }
        self.dev.set_state(target)
    }

    fn initial_state(&mut self) -> Outcome {
        let s = step!(self.dev.state(), "GET MIG_DEVICE_STATE");
        match s {
            MigState::Running => Outcome::Pass("RUNNING".to_owned()),
            other => Outcome::Warn(format!(
                "{other} (a device fresh from open should be RUNNING; another user may hold it)"
            )),
        }
    }

    /// Every ordered pair of supported states: allowed pairs must reach the
    /// target and return a data fd exactly when the last arc opens a
    /// session; forbidden pairs must fail with EINVAL and leave the state.
    /// Leaving RESUMING with no data written may be refused (a driver that
    /// validates its stream) or succeed. Every pair is tried, whatever
    /// failed before; a pair whose start cannot be reached is skipped, with
    /// why.
    fn arcs(&mut self) -> Outcome {
        let states = self.supported_states();
        let (mut allowed, mut files, mut forbidden, mut refused) = (0u32, 0u32, 0u32, 0u32);
        let (mut failed, mut skipped) = (0u32, Vec::<String>::new());
        let mut total = 0u32;
        for &from in &states {
            for &to in &states {
                if from == to {
                    continue;
                }
                total += 1;
                if let Some(sig) = self.interrupt.signal() {
                    skipped.push(format!("interrupted by {}", signal_name(sig)));
                    continue;
                }
                match self.one_arc(from, to) {
                    ArcResult::Reached { file } => {
                        allowed += 1;
                        files += u32::from(file);
                    }
                    ArcResult::Forbidden => forbidden += 1,
                    ArcResult::RefusedLeavingResuming => refused += 1,
                    ArcResult::Failed(why, rule) => {
                        failed += 1;
                        self.findings.push((Outcome::Fail(why), rule));
                    }
                    ArcResult::Skipped(why) => skipped.push(why),
                }
            }
        }
        let checked = total - u32::try_from(skipped.len()).unwrap_or(u32::MAX);
        let mut detail = format!(
            "{checked} of {total} arcs checked: {allowed} allowed transitions over {} states \
             ({files} opened a data fd), {forbidden} forbidden refused with EINVAL",
            states.len()
        );
        if refused > 0 {
            detail.push_str(&format!(
                ", {refused} refused leaving RESUMING with no data written (allowed)"
            ));
        }
        detail.push_str(&format!("; {failed} failed; {} skipped", skipped.len()));
        if !skipped.is_empty() {
            skipped.sort();
            skipped.dedup();
            detail.push_str(&format!(" ({})", skipped.join("; ")));
        }
        if failed > 0 || !skipped.is_empty() {
            Outcome::Fail(detail)
        } else {
            Outcome::Pass(detail)
        }
    }

    /// One arc of [`Self::arcs`], from `from` (reached first) to `to`.
    fn one_arc(&mut self, from: MigState, to: MigState) -> ArcResult {
        // Keep the file of `from` open across the arc, as a VMM would.
        let _from_file = match self.goto(from) {
            Ok(f) => f,
            Err(e) => return ArcResult::Skipped(format!("{from} unreachable: {}", errno_name(&e))),
        };
        match self.dev.state() {
            Ok(now) if now == from => {}
            Ok(now) => {
                return ArcResult::Skipped(format!("asked for {from}, the device reported {now}"));
            }
            Err(e) => return ArcResult::Skipped(format!("GET in {from}: {}", errno_name(&e))),
        }
        let path: Result<Vec<_>, _> = Path::new(from, to, self.flags).collect();
        let result = self.dev.set_state(to);
        let after = match self.dev.state() {
            Ok(s) => s,
            Err(e) => {
                return ArcResult::Failed(
                    format!("GET after {from} -> {to}: {}", errno_name(&e)),
                    rule::ARC_REACHES,
                );
            }
        };
        match (path, result) {
            (Ok(arcs), Ok(file)) => {
                if after != to {
                    return ArcResult::Failed(
                        format!("{from} -> {to} succeeded but the device reports {after}"),
                        rule::ARC_REACHES,
                    );
                }
                let opens = arcs
                    .last()
                    .and_then(|a| mlx5vf_core::vfio::arc_info(a.from, a.to))
                    .is_some_and(|i| i.opens.is_some());
                if file.is_some() != opens {
                    let returned = if file.is_some() {
                        "returned"
                    } else {
                        "not returned"
                    };
                    let arc = if opens { "opens" } else { "opens none" };
                    return ArcResult::Failed(
                        format!("{from} -> {to}: data fd {returned} but the arc {arc}"),
                        rule::ARC_FD,
                    );
                }
                ArcResult::Reached {
                    file: file.is_some(),
                }
            }
            (Ok(_), Err(e)) if from == MigState::Resuming => {
                if matches!(after, MigState::Resuming | MigState::Error) {
                    ArcResult::RefusedLeavingResuming
                } else {
                    ArcResult::Failed(
                        format!(
                            "{from} -> {to} refused with {} but the device reports {after}",
                            errno_name(&e)
                        ),
                        rule::ARC_RESUMING,
                    )
                }
            }
            (Ok(_), Err(e)) => ArcResult::Failed(
                format!("{from} -> {to}: {}", errno_name(&e)),
                rule::ARC_REACHES,
            ),
            (Err(_), Ok(_)) => ArcResult::Failed(
                format!("{from} -> {to} is forbidden but succeeded"),
                rule::ARC_FORBIDDEN,
            ),
            (Err(_), Err(e)) => {
                if errno_of(&e) != Some(Errno::EINVAL.code()) {
                    ArcResult::Failed(
                        format!(
                            "{from} -> {to} is forbidden: expected EINVAL, got {}",
                            errno_name(&e)
                        ),
                        rule::ARC_FORBIDDEN,
                    )
                } else if after != from {
                    ArcResult::Failed(
                        format!("refused {from} -> {to} moved the device to {after}"),
                        rule::ARC_FORBIDDEN,
                    )
                } else {
                    ArcResult::Forbidden
                }
            }
        }
    }

    fn data_size(&mut self) -> Outcome {
        let mut seen = Vec::new();
        for s in [MigState::Running, MigState::Stop, MigState::StopCopy] {
            let _file = step!(self.goto(s), "reaching {s}");
            let n = step!(self.dev.data_size(), "MIG_DATA_SIZE in {s}");
            seen.push(format!("{s} {n}"));
        }
        Outcome::Pass(format!("stop_copy_length: {}", seen.join(", ")))
    }

    /// Reads STOP_COPY to the end: end of stream is `read() == 0`, and
    /// stays so; the precopy ioctl is refused (EINVAL) outside PRE_COPY.
    fn stop_copy_stream(&mut self) -> Outcome {
        step!(self.goto(MigState::Stop), "reaching STOP");
        let estimate = step!(self.dev.data_size(), "MIG_DATA_SIZE");
        let file = step!(self.dev.set_state(MigState::StopCopy), "STOP -> STOP_COPY");
        let Some(mut file) = file else {
            return Outcome::Fail("STOP -> STOP_COPY returned no data fd".to_owned());
        };
        let mut buf = vec![0u8; READ_SIZE];
        let (mut total, mut reads, mut crc) = (0u64, 0u64, 0u32);
        self.prefix.clear();
        loop {
            let n = match file.read(&mut buf) {
                Ok(n) => n,
                Err(e) if is_no_message(&e) => {
                    return Outcome::Fail(format!(
                        "read returned ENOMSG in STOP_COPY after {total} bytes (only PRE_COPY may)"
                    ));
                }
                Err(e) => {
                    return Outcome::Fail(format!("read after {total} bytes: {}", errno_name(&e)));
                }
            };
            if n == 0 {
                break;
            }
            let chunk = buf.get(..n).unwrap_or_default();
            crc = crc32c::crc32c_append(crc, chunk);
            let keep = PREFIX_MAX.saturating_sub(self.prefix.len()).min(n);
            self.prefix
                .extend_from_slice(chunk.get(..keep).unwrap_or_default());
            total += n as u64;
            reads += 1;
        }
        for _ in 0..2 {
            let again = step!(file.read(&mut buf), "read after end of stream");
            ensure!(
                again == 0,
                "read after end of stream returned {again} bytes"
            );
        }
        let info = file.precopy_info();
        // vfio.h: the driver "should return -EINVAL" outside PRE_COPY.
        let ioctl_warning = match &info {
            Err(e) if errno_of(e) == Some(Errno::EINVAL.code()) => None,
            Err(e) => Some(format!(
                "VFIO_MIG_GET_PRECOPY_INFO in STOP_COPY failed with {}, the uAPI says it should be EINVAL",
                errno_name(e)
            )),
            Ok(_) => Some(
                "VFIO_MIG_GET_PRECOPY_INFO succeeded in STOP_COPY; the uAPI says it should fail EINVAL"
                    .to_owned(),
            ),
        };
        drop(file);
        step!(self.dev.set_state(MigState::Stop), "STOP_COPY -> STOP");
        ensure!(total > 0, "the STOP_COPY stream is empty");
        // Cut the prefix so it ends inside the stream, never at its end.
        let cut = (total / 2).min(PREFIX_MAX as u64) as usize;
        self.prefix.truncate(cut.max(1));
        self.stream_len = Some((total, crc));
        let detail = format!(
            "{total} bytes in {reads} reads (MIG_DATA_SIZE said {estimate}), crc32c {crc:08x}; \
             EOF repeats"
        );
        match ioctl_warning {
            None => Outcome::Pass(format!("{detail}; precopy ioctl EINVAL")),
            Some(w) => Outcome::Warn(format!("{detail}; {w}")),
        }
    }

    /// O_NONBLOCK: reads return data, EAGAIN (then poll() must wake), or 0
    /// at the end; the bytes equal a blocking read of the same stopped state.
    fn nonblocking_read(&mut self) -> Outcome {
        step!(self.goto(MigState::Stop), "reaching STOP");
        let file = step!(self.dev.set_state(MigState::StopCopy), "STOP -> STOP_COPY");
        let Some(mut file) = file else {
            return Outcome::Fail("STOP -> STOP_COPY returned no data fd".to_owned());
        };
        step!(file.set_nonblocking(true), "O_NONBLOCK");
        let mut buf = vec![0u8; READ_SIZE];
        let (mut total, mut crc, mut eagain, mut wakes) = (0u64, 0u32, 0u64, 0u64);
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    crc = crc32c::crc32c_append(crc, buf.get(..n).unwrap_or_default());
                    total += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    eagain += 1;
                    let ready = step!(file.wait_readable(POLL_TIMEOUT), "poll");
                    ensure!(
                        ready,
                        "poll() did not report POLLIN within {POLL_TIMEOUT:?} after EAGAIN at {total} bytes"
                    );
                    wakes += 1;
                }
                Err(e) => {
                    return Outcome::Fail(format!("read after {total} bytes: {}", errno_name(&e)));
                }
            }
        }
        drop(file);
        step!(self.dev.set_state(MigState::Stop), "STOP_COPY -> STOP");
        // Firmware images carry per-session data (mlx5's and the sim's), so
        // only the bytes, not their checksum, can be compared.
        let same = match self.stream_len {
            Some((len, c)) if len == total && c == crc => "byte-identical to the blocking read",
            Some((len, _)) if len == total => "as long as the blocking read",
            Some(_) => "a different length from the blocking read",
            None => "no blocking read to compare",
        };
        let mut detail =
            format!("{total} bytes, EAGAIN {eagain} times, poll() woke {wakes} times; {same}");
        if eagain == 0 {
            if self.require_eagain {
                return Outcome::Fail(format!(
                    "{detail}; EAGAIN was required (--require-eagain) but every read had its data \
                     at once (a synchronous read path)"
                ));
            }
            detail.push_str(" (a synchronous read path: allowed)");
        }
        Outcome::Pass(detail)
    }

    /// PRE_COPY: initial bytes start non-zero and reach zero as they are
    /// read; the drained file says ENOMSG; PRE_COPY_P2P -> STOP_COPY keeps
    /// the fd and ends with EOF.
    fn pre_copy(&mut self) -> Outcome {
        if !self.flags.pre_copy() {
            return Outcome::Skip("the device does not offer PRE_COPY".to_owned());
        }
        step!(self.goto(MigState::Running), "reaching RUNNING");
        let file = step!(self.dev.set_state(MigState::PreCopy), "RUNNING -> PRE_COPY");
        let Some(mut file) = file else {
            return Outcome::Fail("RUNNING -> PRE_COPY returned no data fd".to_owned());
        };
        let first = step!(file.precopy_info(), "VFIO_MIG_GET_PRECOPY_INFO");
        let mut buf = vec![0u8; READ_SIZE];
        let mut precopy = 0u64;
        let (mut enomsg, mut zero_reads) = (0u32, 0u32);
        // Read until the temporary end: ENOMSG, as the uAPI says a driver
        // should; a zero-length read (what some drivers return instead) is
        // taken for it too, with a warning.
        loop {
            ensure!(
                enomsg + zero_reads < MAX_ENOMSG,
                "ENOMSG or empty reads {} times while initial_bytes stayed non-zero",
                enomsg + zero_reads
            );
            let temporary_end = match file.read(&mut buf) {
                Ok(0) => {
                    zero_reads += 1;
                    true
                }
                Ok(n) => {
                    precopy += n as u64;
                    false
                }
                Err(e) if is_no_message(&e) => {
                    enomsg += 1;
                    true
                }
                Err(e) => {
                    return Outcome::Fail(format!(
                        "PRE_COPY read after {precopy} bytes: {}",
                        errno_name(&e)
                    ));
                }
            };
            if temporary_end {
                let info = step!(file.precopy_info(), "VFIO_MIG_GET_PRECOPY_INFO");
                if info.initial_bytes == 0 {
                    break;
                }
            }
        }
        let drained = step!(file.precopy_info(), "VFIO_MIG_GET_PRECOPY_INFO");
        ensure!(
            drained.initial_bytes == 0,
            "initial_bytes {} after the initial data was read",
            drained.initial_bytes
        );
        let mut warnings = Vec::new();
        if first.initial_bytes == 0 {
            warnings.push(
                "initial_bytes started at 0 (the uAPI says it should start non-zero)".to_owned(),
            );
        }
        if zero_reads > 0 {
            warnings.push(format!(
                "read returned 0 at the temporary end of PRE_COPY data {zero_reads} times (the \
                 uAPI says it should fail ENOMSG; 0 means end of stream)"
            ));
        }
        let via = if self.flags.p2p() {
            let f = step!(
                self.dev.set_state(MigState::PreCopyP2p),
                "PRE_COPY -> PRE_COPY_P2P"
            );
            ensure!(
                f.is_none(),
                "PRE_COPY -> PRE_COPY_P2P returned a new data fd"
            );
            "PRE_COPY_P2P"
        } else {
            "PRE_COPY"
        };
        let f = step!(self.dev.set_state(MigState::StopCopy), "{via} -> STOP_COPY");
        ensure!(
            f.is_none(),
            "{via} -> STOP_COPY returned a new data fd (QEMU: data_fd out of sync)"
        );
        let mut stop_copy = 0u64;
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => stop_copy += n as u64,
                Err(e) => {
                    return Outcome::Fail(format!(
                        "STOP_COPY read after {stop_copy} bytes: {}",
                        errno_name(&e)
                    ));
                }
            }
        }
        drop(file);
        step!(self.dev.set_state(MigState::Stop), "STOP_COPY -> STOP");
        let detail = format!(
            "initial_bytes {} at start, {precopy} bytes until the temporary end (ENOMSG \
             {enomsg} times, empty read {zero_reads} times), then {via} -> STOP_COPY on the \
             same fd: {stop_copy} bytes to EOF",
            first.initial_bytes
        );
        if warnings.is_empty() {
            Outcome::Pass(detail)
        } else {
            Outcome::Warn(format!("{detail}; {}", warnings.join("; ")))
        }
    }

    /// Closing a data fd with data unread must not hold the device: the
    /// session's next arc succeeds and the device runs again.
    fn close_mid_stream(&mut self) -> Outcome {
        let mut buf = vec![0u8; 4096];
        let mut cases = Vec::new();
        let mut sessions = vec![(MigState::Stop, MigState::StopCopy, MigState::Stop)];
        if self.flags.pre_copy() {
            sessions.push((MigState::Running, MigState::PreCopy, MigState::Running));
        }
        for (start, saving, next) in sessions {
            step!(self.goto(start), "reaching {start}");
            let file = step!(self.dev.set_state(saving), "{start} -> {saving}");
            let Some(mut file) = file else {
                return Outcome::Fail(format!("{start} -> {saving} returned no data fd"));
            };
            let n = step!(file.read(&mut buf), "first read in {saving}");
            drop(file);
            step!(
                self.dev.set_state(next),
                "{saving} -> {next} after closing the fd"
            );
            step!(self.goto(MigState::Running), "back to RUNNING");
            cases.push(format!("{saving} after {n} bytes"));
        }
        Outcome::Pass(format!("closed {}; the device ran again", cases.join(", ")))
    }

    /// RESUMING -> STOP with only part of a stream written must fail (the
    /// uAPI: incomplete data must fail the SET); a reset then recovers.
    fn incomplete_resume(&mut self) -> Outcome {
        if self.prefix.is_empty() {
            return Outcome::Skip(
                "no STOP_COPY stream to cut (stop-copy-stream failed)".to_owned(),
            );
        }
        step!(self.goto(MigState::Stop), "reaching STOP");
        let file = step!(self.dev.set_state(MigState::Resuming), "STOP -> RESUMING");
        let Some(mut file) = file else {
            return Outcome::Fail("STOP -> RESUMING returned no data fd".to_owned());
        };
        step!(
            file.write_all(&self.prefix),
            "writing {} bytes",
            self.prefix.len()
        );
        let result = self.dev.set_state(MigState::Stop);
        drop(file);
        let n = self.prefix.len();
        match result {
            Ok(_) => {
                step!(self.goto(MigState::Running), "back to RUNNING");
                Outcome::Warn(format!(
                    "RESUMING -> STOP accepted a stream cut after {n} bytes (the uAPI says the SET \
                     must fail on incomplete data; Linux's mlx5 driver accepts it too)"
                ))
            }
            Err(e) => {
                let after = step!(self.dev.state(), "GET after the refused STOP");
                ensure!(
                    matches!(after, MigState::Resuming | MigState::Error),
                    "after the refused STOP the device reports {after}"
                );
                step!(self.dev.reset(), "VFIO_DEVICE_RESET");
                let reset = step!(self.dev.state(), "GET after reset");
                ensure!(
                    reset == MigState::Running,
                    "after reset the device reports {reset}"
                );
                Outcome::Pass(format!(
                    "a stream cut after {n} bytes: RESUMING -> STOP refused with {}, device in {after}; reset -> RUNNING",
                    errno_name(&e)
                ))
            }
        }
    }

    /// VFIO_DEVICE_RESET with a saving fd open: RUNNING, and the fd ends
    /// (0 or an error, never EAGAIN forever).
    fn reset(&mut self) -> Outcome {
        let (start, saving) = if self.flags.pre_copy() {
            (MigState::Running, MigState::PreCopy)
        } else {
            (MigState::Stop, MigState::StopCopy)
        };
        step!(self.goto(start), "reaching {start}");
        let file = step!(self.dev.set_state(saving), "{start} -> {saving}");
        let Some(mut file) = file else {
            return Outcome::Fail(format!("{start} -> {saving} returned no data fd"));
        };
        step!(self.dev.reset(), "VFIO_DEVICE_RESET in {saving}");
        let after = step!(self.dev.state(), "GET after reset");
        ensure!(
            after == MigState::Running,
            "after reset the device reports {after}"
        );
        step!(file.set_nonblocking(true), "O_NONBLOCK");
        let mut buf = vec![0u8; READ_SIZE];
        let mut drained = 0u64;
        let end = loop {
            match file.read(&mut buf) {
                Ok(0) => break "end of stream".to_owned(),
                // Data queued before the reset may still be handed out.
                Ok(n) => drained += n as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Outcome::Fail(format!(
                        "the {saving} fd still says EAGAIN after the reset"
                    ));
                }
                Err(e) => break errno_name(&e),
            }
        };
        Outcome::Pass(format!(
            "{saving} -> reset -> RUNNING; the old fd ends with {end} after {drained} bytes"
        ))
    }
}
