//! `mlx5vf check`: a conformance run of a device against the VFIO migration
//! uAPI v2: every arc the state graph allows (and the ones it forbids), the
//! data fd's end of stream, `ENOMSG` in PRE_COPY, `EAGAIN` and `poll()` with
//! `O_NONBLOCK`, closing a data fd mid-stream, an incomplete stream on
//! resume, and reset. It runs on the simulated device and on any `vfio-mig:`
//! device, so the same checks hold our driver, our kernel module and
//! Linux's `mlx5-vfio-pci` to the same rules.

use std::io::{self, Read, Write};
use std::time::Duration;

use clap::Args;
use mlx5vf_core::errno::Errno;
use mlx5vf_core::vfio::{MigState, MigrationFlags, Path};

use super::device::{DEFAULT_DEVICE, DriverArgs};
use crate::backend::{self, DataFile, MigrationDevice, OpenError, errno_of, is_no_message};

/// Long help of `mlx5vf check`.
pub const LONG_ABOUT: &str = "Check a device against the VFIO migration uAPI v2: every arc the \
    state graph allows (state after, data fd returned exactly when the arc opens a session) and \
    the ones it forbids (EINVAL, state unchanged); MIG_DATA_SIZE in every state; the STOP_COPY \
    stream to end of stream (read returns 0, again and again); PRE_COPY's temporary end (ENOMSG) \
    and PRE_COPY_P2P -> STOP_COPY on the same fd; O_NONBLOCK reads (EAGAIN, then poll() wakes); \
    closing a data fd mid-stream; an incomplete stream on resume (RESUMING -> STOP must fail); \
    and VFIO_DEVICE_RESET ending a session.\n\n\
    Prints one line per check (PASS, WARN, SKIP or FAIL) and exits 1 if any check failed \
    (or warned, with --strict). The device's state is changed; it ends RUNNING.";

/// Arguments of `mlx5vf check`.
#[derive(Clone, Debug, Args)]
pub struct CheckArgs {
    /// The device to check (`sim:...` or `vfio-mig:...`).
    #[arg(long, value_name = "SPEC", default_value = DEFAULT_DEVICE)]
    pub device: String,
    /// Fail unless a non-blocking read saw EAGAIN at least once (for devices
    /// known to complete their reads asynchronously).
    #[arg(long)]
    pub require_eagain: bool,
    /// Treat warnings (e.g. an incomplete stream accepted on resume) as failures.
    #[arg(long)]
    pub strict: bool,
    /// Driver policy (sim devices).
    #[command(flatten)]
    pub driver: DriverArgs,
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
    let mut dev = backend::open(&args.device, &args.driver.options()).map_err(CheckError::Open)?;
    let opts = CheckOptions {
        require_eagain: args.require_eagain,
        strict: args.strict,
    };
    let failed = check_device(dev.as_mut(), &opts, out).map_err(CheckError::Output)?;
    if failed > 0 {
        return Err(CheckError::Failed(failed));
    }
    Ok(())
}

/// What counts as a failure.
#[derive(Clone, Copy, Debug, Default)]
pub struct CheckOptions {
    /// A non-blocking read must see EAGAIN at least once.
    pub require_eagain: bool,
    /// Warnings count as failures.
    pub strict: bool,
}

/// Runs every check on `dev`, one line each on `out`; returns how many
/// failed. The device ends RUNNING (by reset if need be).
///
/// # Errors
/// Writing to `out` failed.
pub fn check_device(
    dev: &mut dyn MigrationDevice,
    opts: &CheckOptions,
    out: &mut dyn Write,
) -> io::Result<usize> {
    let flags = dev.migration_flags();
    writeln!(
        out,
        "device {}: migration flags {:#x} ({})",
        dev.describe(),
        flags.into_bits(),
        describe_flags(flags)
    )?;
    let mut ctx = Ctx {
        dev,
        flags,
        prefix: Vec::new(),
        stream_len: None,
        require_eagain: opts.require_eagain,
    };
    let checks: [(&str, CheckFn); 9] = [
        ("initial-state", |c| c.initial_state()),
        ("arcs", |c| c.arcs()),
        ("data-size", |c| c.data_size()),
        ("stop-copy-stream", |c| c.stop_copy_stream()),
        ("nonblocking-read", |c| c.nonblocking_read()),
        ("pre-copy", |c| c.pre_copy()),
        ("close-mid-stream", |c| c.close_mid_stream()),
        ("incomplete-resume", |c| c.incomplete_resume()),
        ("reset", |c| c.reset()),
    ];
    let mut failed = 0usize;
    for (name, check) in checks {
        let outcome = check(&mut ctx);
        let (tag, detail) = match &outcome {
            Outcome::Pass(d) => ("PASS", d),
            Outcome::Warn(d) => ("WARN", d),
            Outcome::Skip(d) => ("SKIP", d),
            Outcome::Fail(d) => ("FAIL", d),
        };
        if matches!(outcome, Outcome::Fail(_))
            || (opts.strict && matches!(outcome, Outcome::Warn(_)))
        {
            failed += 1;
        }
        writeln!(out, "{tag} {name:<18} {detail}")?;
        out.flush()?;
    }
    // Leave the device usable whatever happened.
    if let Err(e) = ctx.goto(MigState::Running) {
        writeln!(
            out,
            "FAIL {:<18} cannot return to RUNNING: {e}",
            "final-state"
        )?;
        failed += 1;
    }
    Ok(failed)
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

impl Ctx<'_> {
    fn supported_states(&self) -> Vec<MigState> {
        MigState::ALL
            .into_iter()
            .filter(|&s| s != MigState::Error && s.is_supported(self.flags))
            .collect()
    }

    /// Brings the device to `target`, by a direct request if the graph
    /// allows one, else through RUNNING, else after a reset. Returns the
    /// data file the last request opened, if any.
    fn goto(&mut self, target: MigState) -> io::Result<Option<Box<dyn DataFile>>> {
        let cur = self.dev.state()?;
        if cur == target {
            return Ok(None);
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
    fn arcs(&mut self) -> Outcome {
        let states = self.supported_states();
        let (mut allowed, mut forbidden, mut files) = (0u32, 0u32, 0u32);
        for &from in &states {
            for &to in &states {
                if from == to {
                    continue;
                }
                // Keep the file of `from` open across the arc, as a VMM would.
                let _from_file = step!(self.goto(from), "reaching {from}");
                let now = step!(self.dev.state(), "GET after reaching {from}");
                ensure!(now == from, "asked for {from}, the device reports {now}");
                let path: Result<Vec<_>, _> = Path::new(from, to, self.flags).collect();
                let result = self.dev.set_state(to);
                let after = step!(self.dev.state(), "GET after {from} -> {to}");
                match path {
                    Ok(arcs) => {
                        let file = step!(result, "{from} -> {to}");
                        ensure!(
                            after == to,
                            "{from} -> {to} succeeded but the device reports {after}"
                        );
                        let opens = arcs
                            .last()
                            .and_then(|a| mlx5vf_core::vfio::arc_info(a.from, a.to))
                            .is_some_and(|i| i.opens.is_some());
                        ensure!(
                            file.is_some() == opens,
                            "{from} -> {to}: data fd {} but the arc {} one",
                            if file.is_some() {
                                "returned"
                            } else {
                                "not returned"
                            },
                            if opens { "opens" } else { "opens none" }
                        );
                        files += u32::from(file.is_some());
                        allowed += 1;
                    }
                    Err(_) => {
                        ensure!(result.is_err(), "{from} -> {to} is forbidden but succeeded");
                        let e = result.err().unwrap_or_else(|| io::Error::other("?"));
                        ensure!(
                            errno_of(&e) == Some(Errno::EINVAL.code()),
                            "{from} -> {to} is forbidden: expected EINVAL, got {}",
                            errno_name(&e)
                        );
                        ensure!(
                            after == from,
                            "refused {from} -> {to} moved the device to {after}"
                        );
                        forbidden += 1;
                    }
                }
            }
        }
        Outcome::Pass(format!(
            "{allowed} allowed transitions over {} states ({files} opened a data fd), {forbidden} forbidden refused with EINVAL",
            states.len()
        ))
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
        ensure!(
            info.as_ref().err().and_then(errno_of) == Some(Errno::EINVAL.code()),
            "VFIO_MIG_GET_PRECOPY_INFO in STOP_COPY: expected EINVAL, got {:?}",
            info.map_err(|e| errno_name(&e))
        );
        drop(file);
        step!(self.dev.set_state(MigState::Stop), "STOP_COPY -> STOP");
        ensure!(total > 0, "the STOP_COPY stream is empty");
        // Cut the prefix so it ends inside the stream, never at its end.
        let cut = (total / 2).min(PREFIX_MAX as u64) as usize;
        self.prefix.truncate(cut.max(1));
        self.stream_len = Some((total, crc));
        Outcome::Pass(format!(
            "{total} bytes in {reads} reads (MIG_DATA_SIZE said {estimate}), crc32c {crc:08x}; \
             EOF repeats; precopy ioctl EINVAL"
        ))
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
        let detail =
            format!("{total} bytes, EAGAIN {eagain} times, poll() woke {wakes} times; {same}");
        if self.require_eagain && eagain == 0 {
            return Outcome::Fail(format!("{detail}; EAGAIN was required"));
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
        let mut enomsg = 0u32;
        // Read until the temporary end; an empty read is the end of stream,
        // which PRE_COPY must not report.
        loop {
            ensure!(
                enomsg < MAX_ENOMSG,
                "ENOMSG {enomsg} times while initial_bytes stayed non-zero"
            );
            match file.read(&mut buf) {
                Ok(0) => {
                    return Outcome::Fail(format!(
                        "read returned 0 (end of stream) in PRE_COPY after {precopy} bytes; the uAPI says ENOMSG"
                    ));
                }
                Ok(n) => precopy += n as u64,
                Err(e) if is_no_message(&e) => {
                    enomsg += 1;
                    let info = step!(file.precopy_info(), "VFIO_MIG_GET_PRECOPY_INFO");
                    if info.initial_bytes == 0 {
                        break;
                    }
                }
                Err(e) => {
                    return Outcome::Fail(format!(
                        "PRE_COPY read after {precopy} bytes: {}",
                        errno_name(&e)
                    ));
                }
            }
        }
        let drained = step!(file.precopy_info(), "VFIO_MIG_GET_PRECOPY_INFO");
        ensure!(
            drained.initial_bytes == 0,
            "initial_bytes {} after the initial data was read",
            drained.initial_bytes
        );
        let warn = (first.initial_bytes == 0)
            .then_some("initial_bytes started at 0 (the uAPI says it should start non-zero)");
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
            "initial_bytes {} at start, {precopy} bytes until ENOMSG ({enomsg} times), then {via} -> STOP_COPY on the same fd: {stop_copy} bytes to EOF",
            first.initial_bytes
        );
        match warn {
            Some(w) => Outcome::Warn(format!("{detail}; {w}")),
            None => Outcome::Pass(detail),
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
