//! Saving a device's state to a byte sink and loading it from a byte
//! source, the way a VMM drives a VFIO device: PRE_COPY rounds until the
//! initial data is out and the dirty data is small, then STOP_COPY until end
//! of stream; on the other side RESUMING, every byte written in order, then
//! STOP and RUNNING.
//!
//! # The state a device is left in
//! Every transfer first brings a device out of a session an earlier user
//! abandoned ([`settle`]). On success a saved device is left in STOP (its
//! state is out; running it would make the copy stale) and a loaded one in
//! RUNNING. On any failure, including an interruption by a signal
//! ([`Observer::interrupted_by`]), the device is put back where the transfer
//! found it, as a VMM does when a migration fails and the source goes on:
//!
//! - a device in RESUMING (a load whose data was refused, cut short, or
//!   carried no state) or in ERROR is reset (`VFIO_DEVICE_RESET`), the
//!   uAPI's only way to abort RESUMING; it is RUNNING afterwards;
//! - any other device is walked back by arcs to the state it started in
//!   (RUNNING, usually), or reset if that fails;
//! - a load refused before the device was touched (an empty stream; for an
//!   mlx5 device, bytes that are not an mlx5 stream) leaves it as it was.
//!
//! [`TransferError`] says which of these happened.

use std::fmt;
use std::io::{self, BufRead, Write};
use std::time::{Duration, Instant};

use mlx5vf_core::device::DeviceError;
use mlx5vf_core::errno::Errno;
use mlx5vf_core::stream::HEADER_LEN;
use mlx5vf_core::vfio::MigState;

use crate::backend::{DataFile, MigrationDevice, driver_error, errno_of, is_no_message};
use crate::interrupt::signal_name;
use crate::recognise::{Opening, RecordCounts, StreamFormat, StreamTracker, describe_start};
use crate::timeline::{Lane, Mark, Timeline};

/// How a save runs.
#[derive(Clone, Copy, Debug)]
pub struct SaveOptions {
    /// Start with PRE_COPY (the device must offer it).
    pub precopy: bool,
    /// Most PRE_COPY rounds before stopping the device anyway.
    pub max_rounds: u32,
    /// The downtime budget, as QEMU's `downtime-limit`: PRE_COPY iterates
    /// until the initial data is out and what the device still reports
    /// (dirty bytes) would move within this at the rate PRE_COPY moved data.
    pub downtime_limit: Duration,
    /// Bytes per read (QEMU uses 1 MiB).
    pub read_size: u64,
}

impl Default for SaveOptions {
    fn default() -> Self {
        Self {
            precopy: false,
            max_rounds: 32,
            // QEMU's default downtime-limit.
            downtime_limit: Duration::from_millis(300),
            read_size: 1 << 20,
        }
    }
}

/// Where a transfer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// PRE_COPY: the device runs while its state streams.
    PreCopy,
    /// STOP_COPY: the device is stopped (downtime).
    StopCopy,
    /// RESUMING: the destination loads.
    Resuming,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::PreCopy => "pre-copy",
            Self::StopCopy => "stop-copy",
            Self::Resuming => "resuming",
        })
    }
}

/// The caller's side of a transfer: told about progress (e.g. a progress
/// bar), asked between chunks whether to stop.
pub trait Observer: Sync {
    /// `total` bytes moved so far; now in `phase`.
    fn progress(&self, total: u64, phase: Phase);

    /// The signal that asked the transfer to stop, if one did (see
    /// [`crate::interrupt::Interrupt`]); the transfer then fails with
    /// [`Failure::Interrupted`], leaving the device as any failure does.
    fn interrupted_by(&self) -> Option<i32> {
        None
    }

    /// Where to record the timeline of reads, writes and the stop, if
    /// anywhere.
    fn timeline(&self) -> Option<&Timeline> {
        None
    }

    /// PRE_COPY round `round` (from 1) has ended: where a VMM also syncs
    /// its dirty log (guest memory the device wrote).
    fn precopy_round(&self, round: u32) {
        let _ = round;
    }

    /// The source has stopped (it is in STOP_COPY: neither the guest nor
    /// its device's DMA runs any more): where a VMM takes its final dirty
    /// log, as QEMU's last sync runs after the VM stopped. Inside the
    /// downtime, before the stop-copy data is read; a log taken before the
    /// stop would miss what the device wrote in between.
    fn stopped(&self) {}
}

/// The FW_DATA records (stream ordinals) one read or write touched, given
/// the tracker before (`fw_data` records begun, and whether it was inside a
/// record) and after it; `None` when it touched none.
fn images_touched(before: (u64, bool), after: u64) -> Option<(u64, u64)> {
    let (begun, inside) = before;
    let first = if inside {
        begun.saturating_sub(1)
    } else {
        begun
    };
    let last = after.checked_sub(1)?;
    (first <= last).then_some((first, last))
}

/// Where the tracker is, for [`images_touched`].
fn tracker_position(tracker: &StreamTracker) -> (u64, bool) {
    let begun = tracker.counts().map_or(0, |c| c.fw_data);
    (begun, tracker.missing().is_some())
}

/// An observer that also records on a timeline: `observer`'s reports go
/// on as they are.
pub struct WithTimeline<'a> {
    /// The observer underneath.
    pub observer: &'a dyn Observer,
    /// Where reads, writes and the stop are recorded.
    pub timeline: &'a Timeline,
}

impl Observer for WithTimeline<'_> {
    fn progress(&self, total: u64, phase: Phase) {
        self.observer.progress(total, phase);
    }
    fn interrupted_by(&self) -> Option<i32> {
        self.observer.interrupted_by()
    }
    fn timeline(&self) -> Option<&Timeline> {
        Some(self.timeline)
    }
}

/// An observer that ignores everything.
pub struct Quiet;
impl Observer for Quiet {
    fn progress(&self, _total: u64, _phase: Phase) {}
}

/// A writer that follows the stream it passes on, and remembers whether it
/// was the one that failed (to tell output errors from device errors).
struct Tap<'a> {
    out: &'a mut dyn Write,
    tracker: StreamTracker,
    failed: bool,
}

impl Write for Tap<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.out.write(data).inspect_err(|_| self.failed = true)?;
        self.tracker.feed(data.get(..n).unwrap_or_default());
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush().inspect_err(|_| self.failed = true)
    }
}

/// A device left mid-session by an earlier user, and what [`settle`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// The state the device was found in.
    pub found: MigState,
    /// What was done about it.
    pub action: Aftermath,
}

impl fmt::Display for Recovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "found in {}: {}", self.found, self.action)
    }
}

/// What a save did.
#[derive(Clone, Copy, Debug, Default)]
pub struct SaveReport {
    /// Stream bytes written.
    pub bytes: u64,
    /// Records, when the stream is an mlx5 stream (see [`crate::recognise`]).
    pub records: Option<RecordCounts>,
    /// The stream's format in one word (`mlx5vf`, `linux-mlx5`, `opaque`).
    pub format: &'static str,
    /// A session an earlier user left, ended before saving.
    pub recovered: Option<Recovery>,
    /// Bytes sent during PRE_COPY.
    pub precopy_bytes: u64,
    /// PRE_COPY rounds.
    pub precopy_rounds: u32,
    /// Time in PRE_COPY.
    pub precopy_time: Duration,
    /// Time from the STOP_COPY request to end of stream.
    pub stop_copy_time: Duration,
    /// When the device was stopped (STOP_COPY requested).
    pub stopped_at: Option<Instant>,
    /// The last precopy-info before the stop: (initial, dirty) bytes.
    pub last_precopy_info: Option<(u64, u64)>,
    /// The whole save.
    pub total_time: Duration,
}

/// What a load did.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadReport {
    /// Stream bytes written to the device.
    pub bytes: u64,
    /// Records, when the stream is an mlx5 stream (see [`crate::recognise`]).
    pub records: Option<RecordCounts>,
    /// The stream's format in one word (`mlx5vf`, `linux-mlx5`, `opaque`).
    pub format: &'static str,
    /// A session an earlier user left, ended before loading.
    pub recovered: Option<Recovery>,
    /// When the device reached RUNNING.
    pub running_at: Option<Instant>,
    /// The whole load.
    pub total_time: Duration,
}

/// Why a load had nothing to give the device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoState {
    /// Not one byte arrived.
    Empty,
    /// The device speaks mlx5 and these bytes are not an mlx5 stream.
    NotAStream {
        /// Bytes that arrived, up to a record header's worth (the rest is
        /// not read).
        bytes: u64,
        /// The first bytes, in words ([`describe_start`]).
        start: String,
    },
    /// An mlx5 stream without a firmware image: no FW_DATA payload at all.
    NoFirmwareImage {
        /// Records it held.
        records: u64,
        /// Its bytes.
        bytes: u64,
    },
}

impl fmt::Display for NoState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("empty stream: not one byte arrived, nothing to load"),
            Self::NotAStream { bytes, start } if *bytes < HEADER_LEN as u64 => write!(
                f,
                "not a migration stream: only {bytes} bytes ({start}), less than one \
                 {HEADER_LEN}-byte record header"
            ),
            Self::NotAStream { start, .. } => write!(
                f,
                "not a migration stream: it starts with {start} (an mlx5 stream opens with a \
                 STOP_COPY_SIZE, FW_DATA or mlx5vf stream-info record)"
            ),
            Self::NoFirmwareImage { records, bytes } => write!(
                f,
                "no firmware image: the stream's {records} records ({bytes} bytes) carry no \
                 FW_DATA payload, so there is no state to load"
            ),
        }
    }
}

/// Where the device refused the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusedAt {
    /// A `write()` of the data fd failed; the stream offset of its first byte.
    Write {
        /// Stream offset.
        offset: u64,
    },
    /// RESUMING -> STOP failed (the driver judged the whole stream).
    LeavingResuming {
        /// Bytes written before.
        bytes: u64,
    },
}

/// What went wrong in a transfer.
#[derive(Debug)]
pub enum Failure {
    /// A device operation failed; `what` says which.
    Device {
        /// The operation.
        what: &'static str,
        /// The error.
        error: io::Error,
    },
    /// The device refused the stream it was given.
    Refused {
        /// Where.
        at: RefusedAt,
        /// The device's answer (an errno, and the driver's words when it
        /// runs in this process).
        error: io::Error,
        /// What the tool can tell about the stream where the device gave
        /// only an errno (e.g. "the stream is truncated").
        diagnosis: Option<String>,
    },
    /// The load had no state to give (see [`NoState`]).
    NoState(NoState),
    /// Reading the input failed.
    Input(io::Error),
    /// Writing the output failed.
    Output(io::Error),
    /// A signal asked the transfer to stop.
    Interrupted {
        /// The signal.
        signal: i32,
        /// Stream bytes moved before.
        bytes: u64,
        /// The phase it was in.
        phase: Phase,
    },
}

/// How a failed transfer left its device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aftermath {
    /// The device was not touched (still in this state).
    Untouched(MigState),
    /// Walked back by arcs to this state.
    Returned(MigState),
    /// Reset with `VFIO_DEVICE_RESET`; in this state afterwards.
    Reset(MigState),
    /// The way out failed; the state the device reported last, if any.
    Stuck(Option<MigState>),
    /// The device's state could not be read (nothing was tried).
    Unknown,
}

impl fmt::Display for Aftermath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Untouched(s) => write!(f, "device untouched, in {s}"),
            Self::Returned(s) => write!(f, "device back in {s}"),
            Self::Reset(s) => write!(f, "device reset (VFIO_DEVICE_RESET), now {s}"),
            Self::Stuck(Some(s)) => write!(f, "device left in {s}: the way out failed"),
            Self::Stuck(None) => f.write_str("device state unknown: the way out failed"),
            Self::Unknown => f.write_str("device state unknown: GET MIG_DEVICE_STATE failed"),
        }
    }
}

/// Why a transfer failed, and how it left the device.
#[derive(Debug)]
pub struct TransferError {
    /// What went wrong.
    pub failure: Failure,
    /// How the device was left.
    pub device: Aftermath,
}

impl TransferError {
    /// The driver error behind it, if the driver runs in this process.
    pub fn driver_error(&self) -> Option<DeviceError> {
        match &self.failure {
            Failure::Device { error, .. } | Failure::Refused { error, .. } => driver_error(error),
            _ => None,
        }
    }

    /// Whether a signal stopped the transfer.
    pub fn is_interrupted(&self) -> bool {
        matches!(self.failure, Failure::Interrupted { .. })
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Device { what, error } => write!(f, "{what}: {}", describe_error(error)),
            Self::Refused {
                at,
                error,
                diagnosis,
            } => {
                match at {
                    RefusedAt::Write { offset } => write!(
                        f,
                        "the device refused the stream data at byte {offset}: {}",
                        describe_error(error)
                    )?,
                    RefusedAt::LeavingResuming { bytes } => write!(
                        f,
                        "the device refused the stream on leaving RESUMING (RESUMING -> STOP, \
                         after {bytes} bytes): {}",
                        describe_error(error)
                    )?,
                }
                match diagnosis {
                    Some(d) => write!(f, "; {d}"),
                    None => Ok(()),
                }
            }
            Self::NoState(n) => n.fmt(f),
            Self::Input(e) => write!(f, "reading the stream: {e}"),
            Self::Output(e) => write!(f, "writing the stream: {e}"),
            Self::Interrupted {
                signal,
                bytes,
                phase,
            } => write!(
                f,
                "interrupted by {} in {phase} after {bytes} bytes",
                signal_name(*signal)
            ),
        }
    }
}

impl fmt::Display for TransferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; {}", self.failure, self.device)
    }
}

impl std::error::Error for TransferError {}

/// An error from a device, in words a user wants: the driver's own message
/// when it runs in this process, else the errno by name, number and text
/// (a kernel driver answers with nothing else).
pub fn describe_error(e: &io::Error) -> String {
    if let Some(d) = driver_error(e) {
        let text = describe_driver_error(&d);
        // What the command queue said (a timeout, a health syndrome)
        // explains an errno the driver only knows as a failed file.
        return match crate::pf::queue_detail(e) {
            Some(detail) => format!("{text}; the command queue: {detail}"),
            None => text,
        };
    }
    match errno_of(e) {
        Some(n) => {
            let name = Errno::from_code(n).map_or("errno", |x| x.name());
            let text = io::Error::from_raw_os_error(n).to_string();
            // std appends " (os error N)"; the number is said once.
            let text = text.split(" (os error").next().unwrap_or(&text).to_owned();
            format!("{name} (errno {n}: {text})")
        }
        None => e.to_string(),
    }
}

/// A driver error in words a user of `load` wants: the class first
/// (truncated, unknown mandatory record, integrity mismatch, refused by the
/// firmware, …), then the detail and errno.
pub fn describe_driver_error(e: &DeviceError) -> String {
    use mlx5vf_core::load::LoadError;
    let errno = e.errno().name();
    match e {
        // The command error names its status, syndrome and errno.
        DeviceError::Firmware(_) | DeviceError::Load(LoadError::Refused(_)) => {
            format!("firmware: {e}")
        }
        DeviceError::Load(LoadError::LoadFailed) | DeviceError::FileFailed => {
            format!("refused by the firmware earlier: {e} ({errno})")
        }
        // The driver's own messages already name the class: "stream
        // truncated: …", "unknown mandatory record tag …", "integrity
        // mismatch: …", "record of N bytes exceeds …".
        _ => format!("{e} ({errno})"),
    }
}

/// Brings a device out of a session an earlier user left (a `load` that was
/// killed, a driver that keeps its state across close): RESUMING and ERROR
/// are reset (the uAPI's only way out of RESUMING), the saving states are
/// walked back (STOP_COPY to STOP, PRE_COPY to RUNNING, PRE_COPY_P2P to
/// RUNNING_P2P; reset if that fails). RUNNING, RUNNING_P2P and STOP are left
/// alone. Returns what was found and done, or `None`.
///
/// # Errors
/// The state could not be read, or the device could not be brought out.
pub fn settle(dev: &mut dyn MigrationDevice) -> Result<Option<Recovery>, TransferError> {
    let unknown = |what, error| TransferError {
        failure: Failure::Device { what, error },
        device: Aftermath::Unknown,
    };
    let found = dev
        .state()
        .map_err(|e| unknown("GET MIG_DEVICE_STATE", e))?;
    let walk_to = match found {
        MigState::Running | MigState::RunningP2p | MigState::Stop => return Ok(None),
        MigState::Resuming | MigState::Error => None,
        MigState::StopCopy => Some(MigState::Stop),
        MigState::PreCopy => Some(MigState::Running),
        MigState::PreCopyP2p => Some(MigState::RunningP2p),
    };
    if let Some(target) = walk_to {
        if dev.set_state(target).is_ok() {
            return Ok(Some(Recovery {
                found,
                action: Aftermath::Returned(target),
            }));
        }
    }
    dev.reset().map_err(|e| TransferError {
        failure: Failure::Device {
            what: "VFIO_DEVICE_RESET of a device found mid-session",
            error: e,
        },
        device: Aftermath::Stuck(Some(found)),
    })?;
    let now = dev
        .state()
        .map_err(|e| unknown("GET MIG_DEVICE_STATE after reset", e))?;
    Ok(Some(Recovery {
        found,
        action: Aftermath::Reset(now),
    }))
}

/// Takes a device a failed transfer touched back to `want` (the state the
/// transfer found it in): by reset out of RESUMING or ERROR, else by arcs,
/// else by reset. Says how it went.
pub fn restore(dev: &mut dyn MigrationDevice, want: MigState) -> Aftermath {
    let arcs_may_do = match dev.state() {
        Ok(s) if s == want => return Aftermath::Returned(s),
        Ok(MigState::Resuming | MigState::Error) | Err(_) => false,
        Ok(_) => true,
    };
    if arcs_may_do && dev.set_state(want).is_ok() {
        return Aftermath::Returned(want);
    }
    match dev.reset() {
        Ok(()) => match dev.state() {
            Ok(s) => Aftermath::Reset(s),
            Err(_) => Aftermath::Stuck(None),
        },
        Err(_) => Aftermath::Stuck(dev.state().ok()),
    }
}

/// Runs a transfer's body on a device in state `before`; on failure, puts
/// the device back and says how.
fn guarded<T>(
    dev: &mut dyn MigrationDevice,
    before: MigState,
    body: impl FnOnce(&mut dyn MigrationDevice) -> Result<T, Failure>,
) -> Result<T, TransferError> {
    body(dev).map_err(|failure| TransferError {
        failure,
        device: restore(dev, before),
    })
}

/// A device operation's failure.
fn device(what: &'static str) -> impl FnOnce(io::Error) -> Failure {
    move |error| Failure::Device { what, error }
}

/// The data file an arc must return.
fn opened(
    what: &'static str,
    file: io::Result<Option<Box<dyn DataFile>>>,
) -> Result<Box<dyn DataFile>, Failure> {
    file.map_err(device(what))?.ok_or_else(|| Failure::Device {
        what,
        error: io::Error::other("no data file returned"),
    })
}

/// Fails with [`Failure::Interrupted`] if the observer says so.
fn check_interrupt(observer: &dyn Observer, bytes: u64, phase: Phase) -> Result<(), Failure> {
    match observer.interrupted_by() {
        Some(signal) => Err(Failure::Interrupted {
            signal,
            bytes,
            phase,
        }),
        None => Ok(()),
    }
}

/// Saves `dev`'s state into `out`: PRE_COPY rounds first if asked, then
/// STOP_COPY to end of stream; the device is left in STOP. A stream of no
/// bytes is a failure (nothing was saved). On failure the device goes back
/// to the state the save found it in (module docs).
///
/// # Errors
/// [`TransferError`].
pub fn save(
    dev: &mut dyn MigrationDevice,
    out: &mut dyn Write,
    opts: &SaveOptions,
    observer: &dyn Observer,
) -> Result<SaveReport, TransferError> {
    let start = Instant::now();
    let recovered = settle(dev)?;
    let before = dev.state().map_err(|e| TransferError {
        failure: Failure::Device {
            what: "GET MIG_DEVICE_STATE",
            error: e,
        },
        device: Aftermath::Unknown,
    })?;
    let mut report = SaveReport {
        recovered,
        ..SaveReport::default()
    };
    let mut tap = Tap {
        out,
        tracker: StreamTracker::default(),
        failed: false,
    };
    guarded(dev, before, |dev| {
        save_stream(dev, &mut tap, opts, observer, &mut report)
    })?;
    report.bytes = tap.tracker.bytes();
    report.records = tap.tracker.counts();
    report.format = tap.tracker.format_name();
    report.total_time = start.elapsed();
    Ok(report)
}

fn save_stream(
    dev: &mut dyn MigrationDevice,
    tap: &mut Tap<'_>,
    opts: &SaveOptions,
    observer: &dyn Observer,
    report: &mut SaveReport,
) -> Result<(), Failure> {
    let start = Instant::now();
    // A failed step: the output's fault, a signal's, or the device's.
    let failed = |tap: &Tap<'_>, e: io::Error, what, phase| {
        if let Some(signal) = observer.interrupted_by() {
            Failure::Interrupted {
                signal,
                bytes: tap.tracker.bytes(),
                phase,
            }
        } else if tap.failed {
            Failure::Output(e)
        } else {
            Failure::Device { what, error: e }
        }
    };
    let mut file = if opts.precopy {
        let mut file = opened("entering PRE_COPY", dev.set_state(MigState::PreCopy))?;
        loop {
            report.precopy_rounds += 1;
            // Send what is there now, until the temporary end (ENOMSG, or a
            // zero-length read from drivers that do not say ENOMSG).
            loop {
                check_interrupt(observer, tap.tracker.bytes(), Phase::PreCopy)?;
                let sent = send_timed(file.as_mut(), tap, opts.read_size, observer);
                match sent {
                    Ok(0) => break,
                    Ok(_) => observer.progress(tap.tracker.bytes(), Phase::PreCopy),
                    Err(e) if is_no_message(&e) => break,
                    Err(e) => return Err(failed(tap, e, "reading PRE_COPY data", Phase::PreCopy)),
                }
            }
            let info = file
                .precopy_info()
                .map_err(device("VFIO_MIG_GET_PRECOPY_INFO"))?;
            // What the stop can afford: the PRE_COPY transfer rate so far
            // times the budget (QEMU's threshold_size).
            let rate = tap.tracker.bytes() as f64 / start.elapsed().as_secs_f64().max(1e-9);
            let affordable = rate * opts.downtime_limit.as_secs_f64();
            report.last_precopy_info = Some((info.initial_bytes, info.dirty_bytes));
            observer.precopy_round(report.precopy_rounds);
            let converged = info.initial_bytes == 0 && (info.dirty_bytes as f64) <= affordable;
            if converged || report.precopy_rounds >= opts.max_rounds {
                break;
            }
        }
        report.precopy_bytes = tap.tracker.bytes();
        report.precopy_time = start.elapsed();
        report.stopped_at = Some(Instant::now());
        mark(observer, Mark::Stopped, report.stopped_at);
        // PRE_COPY -> PRE_COPY_P2P -> STOP_COPY continues on the same file.
        if let Some(_unexpected) = dev
            .set_state(MigState::StopCopy)
            .map_err(device("entering STOP_COPY"))?
        {
            return Err(Failure::Device {
                what: "entering STOP_COPY",
                error: io::Error::other("a second data file was returned (data_fd out of sync)"),
            });
        }
        file
    } else {
        report.stopped_at = Some(Instant::now());
        mark(observer, Mark::Stopped, report.stopped_at);
        opened("entering STOP_COPY", dev.set_state(MigState::StopCopy))?
    };
    observer.stopped();
    let stop_start = Instant::now();
    loop {
        check_interrupt(observer, tap.tracker.bytes(), Phase::StopCopy)?;
        let sent = send_timed(file.as_mut(), tap, opts.read_size, observer);
        match sent {
            Ok(0) => break,
            Ok(_) => observer.progress(tap.tracker.bytes(), Phase::StopCopy),
            Err(e) => return Err(failed(tap, e, "reading STOP_COPY data", Phase::StopCopy)),
        }
    }
    tap.flush().map_err(Failure::Output)?;
    report.stop_copy_time = stop_start.elapsed();
    drop(file);
    if tap.tracker.bytes() == 0 {
        return Err(Failure::Device {
            what: "reading STOP_COPY data",
            error: io::Error::other("the device ended its stream without a byte: nothing saved"),
        });
    }
    dev.set_state(MigState::Stop)
        .map_err(device("leaving STOP_COPY"))?;
    Ok(())
}

/// A read or write being timed for the observer's timeline (only when it
/// has one: nothing is measured otherwise).
struct Timing<'a> {
    timeline: &'a Timeline,
    before: (u64, bool),
    start: Instant,
}

impl<'a> Timing<'a> {
    /// Starts timing an operation on the stream `tracker` follows.
    fn start(observer: &'a dyn Observer, tracker: &StreamTracker) -> Option<Self> {
        Some(Self {
            timeline: observer.timeline()?,
            before: tracker_position(tracker),
            start: Instant::now(),
        })
    }

    /// The operation ended with `tracker` where it is now: the images it
    /// touched get a bar in `lane`.
    fn end(self, lane: Lane, tracker: &StreamTracker) {
        if let Some((first, last)) = images_touched(self.before, tracker_position(tracker).0) {
            self.timeline
                .moved(lane, first, last, self.start, Instant::now());
        }
    }
}

/// One read of the data file into `tap`, on the timeline if there is one.
fn send_timed(
    file: &mut dyn DataFile,
    tap: &mut Tap<'_>,
    read_size: u64,
    observer: &dyn Observer,
) -> io::Result<u64> {
    let timing = Timing::start(observer, &tap.tracker);
    let sent = file.send_to(tap, read_size);
    if let Some(t) = timing {
        t.end(Lane::Read, &tap.tracker);
    }
    sent
}

/// Records `mark` at `at` on the observer's timeline, if there is one.
fn mark(observer: &dyn Observer, mark: Mark, at: Option<Instant>) {
    if let (Some(timeline), Some(at)) = (observer.timeline(), at) {
        timeline.mark(mark, at);
    }
}

/// Reads up to a record header's worth of the stream's first bytes, to judge
/// it before the device sees it.
fn read_start(input: &mut dyn BufRead, observer: &dyn Observer) -> Result<Vec<u8>, Failure> {
    let mut start = Vec::with_capacity(HEADER_LEN);
    while start.len() < HEADER_LEN {
        check_interrupt(observer, start.len() as u64, Phase::Resuming)?;
        let chunk = match input.fill_buf() {
            Ok(c) => c,
            Err(e) => return Err(input_failure(e, observer, start.len() as u64)),
        };
        if chunk.is_empty() {
            break;
        }
        let n = chunk.len().min(HEADER_LEN - start.len());
        start.extend_from_slice(chunk.get(..n).unwrap_or_default());
        input.consume(n);
    }
    Ok(start)
}

/// An input error, or the signal that cut the wait for input.
fn input_failure(e: io::Error, observer: &dyn Observer, bytes: u64) -> Failure {
    match observer.interrupted_by() {
        Some(signal) => Failure::Interrupted {
            signal,
            bytes,
            phase: Phase::Resuming,
        },
        None => Failure::Input(e),
    }
}

/// Whether a stream that starts with `start` (and ends there, if shorter
/// than a header) can carry state for a device expecting `format`.
fn judge_start(start: &[u8], format: StreamFormat) -> Result<(), NoState> {
    let not_a_stream = || NoState::NotAStream {
        bytes: start.len() as u64,
        start: describe_start(start),
    };
    match (Opening::of(start), format) {
        (Opening::Empty, _) => Err(NoState::Empty),
        (Opening::Mlx5(_), _) | (_, StreamFormat::Opaque) => Ok(()),
        (Opening::PartialHeader | Opening::NotMlx5, StreamFormat::Mlx5) => Err(not_a_stream()),
    }
}

/// Writes `data` (the stream's bytes from `tracker.bytes()` on) to the data
/// file, noting each accepted byte; a refusal names its stream offset.
fn write_tracked(
    file: &mut dyn DataFile,
    mut data: &[u8],
    tracker: &mut StreamTracker,
    observer: &dyn Observer,
) -> Result<(), Failure> {
    while !data.is_empty() {
        let timing = Timing::start(observer, tracker);
        match file.write(data) {
            Ok(0) => {
                return Err(Failure::Refused {
                    at: RefusedAt::Write {
                        offset: tracker.bytes(),
                    },
                    error: io::ErrorKind::WriteZero.into(),
                    diagnosis: None,
                });
            }
            Ok(n) => {
                tracker.feed(data.get(..n).unwrap_or_default());
                data = data.get(n..).unwrap_or_default();
                if let Some(t) = timing {
                    t.end(Lane::Receive, tracker);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => {
                return Err(Failure::Refused {
                    at: RefusedAt::Write {
                        offset: tracker.bytes(),
                    },
                    error,
                    diagnosis: None,
                });
            }
        }
    }
    Ok(())
}

/// Loads a stream from `input` into `dev`: RESUMING, every byte, STOP (where
/// the driver checks the stream is complete), then RUNNING.
///
/// A load that carries no state fails: an empty stream (any device), and
/// for a device that speaks mlx5 ([`MigrationDevice::stream_format`]) bytes
/// that are not an mlx5 stream (refused before the device is touched) or an
/// mlx5 stream without a firmware image (refused instead of leaving
/// RESUMING). Other devices judge their streams themselves. On failure the
/// device is reset out of RESUMING, or walked back (module docs).
///
/// # Errors
/// [`TransferError`].
pub fn load(
    dev: &mut dyn MigrationDevice,
    input: &mut dyn BufRead,
    observer: &dyn Observer,
) -> Result<LoadReport, TransferError> {
    let started = Instant::now();
    let recovered = settle(dev)?;
    let before = dev.state().map_err(|e| TransferError {
        failure: Failure::Device {
            what: "GET MIG_DEVICE_STATE",
            error: e,
        },
        device: Aftermath::Unknown,
    })?;
    let untouched = |failure| TransferError {
        failure,
        device: Aftermath::Untouched(before),
    };
    let start = read_start(input, observer).map_err(untouched)?;
    let format = dev.stream_format();
    judge_start(&start, format).map_err(|n| untouched(Failure::NoState(n)))?;
    let mut tracker = StreamTracker::default();
    guarded(dev, before, |dev| {
        load_stream(dev, &start, input, observer, format, &mut tracker)
    })?;
    let running_at = Instant::now();
    mark(observer, Mark::Running, Some(running_at));
    Ok(LoadReport {
        bytes: tracker.bytes(),
        records: tracker.counts(),
        format: tracker.format_name(),
        recovered,
        running_at: Some(running_at),
        total_time: started.elapsed(),
    })
}

fn load_stream(
    dev: &mut dyn MigrationDevice,
    start: &[u8],
    input: &mut dyn BufRead,
    observer: &dyn Observer,
    format: StreamFormat,
    tracker: &mut StreamTracker,
) -> Result<(), Failure> {
    let mut file = opened("entering RESUMING", dev.set_state(MigState::Resuming))?;
    write_tracked(file.as_mut(), start, tracker, observer)?;
    observer.progress(tracker.bytes(), Phase::Resuming);
    loop {
        check_interrupt(observer, tracker.bytes(), Phase::Resuming)?;
        let chunk = match input.fill_buf() {
            Ok(c) => c,
            Err(e)
                if e.kind() == io::ErrorKind::Interrupted
                    && observer.interrupted_by().is_none() =>
            {
                continue;
            }
            Err(e) => return Err(input_failure(e, observer, tracker.bytes())),
        };
        if chunk.is_empty() {
            break;
        }
        let n = chunk.len();
        write_tracked(file.as_mut(), chunk, tracker, observer)?;
        input.consume(n);
        observer.progress(tracker.bytes(), Phase::Resuming);
    }
    // The input may have ended because the signal cut the sender short.
    check_interrupt(observer, tracker.bytes(), Phase::Resuming)?;
    drop(file);
    if let (StreamFormat::Mlx5, Some(counts)) = (format, tracker.counts()) {
        if counts.fw_data_bytes == 0 {
            return Err(Failure::NoState(NoState::NoFirmwareImage {
                records: counts.records,
                bytes: tracker.bytes(),
            }));
        }
    }
    dev.set_state(MigState::Stop).map_err(|error| {
        let bytes = tracker.bytes();
        // A kernel driver answers only with an errno; say what we saw.
        let diagnosis = match (driver_error(&error), tracker.missing(), tracker.opening()) {
            (Some(_), _, _) => None,
            (None, Some(missing), _) => Some(format!(
                "the stream is truncated (it ends inside a record, {missing}+ bytes missing, \
                 after {bytes} bytes)"
            )),
            (None, None, Opening::PartialHeader) => Some(format!(
                "the stream is truncated (it ends inside its first record header, after \
                 {bytes} bytes)"
            )),
            (None, None, _) => None,
        };
        Failure::Refused {
            at: RefusedAt::LeavingResuming { bytes },
            error,
            diagnosis,
        }
    })?;
    dev.set_state(MigState::Running)
        .map_err(device("resuming the VF (STOP -> RUNNING)"))?;
    Ok(())
}
