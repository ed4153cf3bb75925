//! Saving a device's state to a byte sink and loading it from a byte
//! source, the way a VMM drives a VFIO device: PRE_COPY rounds until the
//! initial data is out and the dirty data is small, then STOP_COPY until end
//! of stream; on the other side RESUMING, every byte written in order, then
//! STOP and RUNNING.

use std::fmt;
use std::io::{self, BufRead, Write};
use std::time::{Duration, Instant};

use mlx5vf_core::device::DeviceError;
use mlx5vf_core::stream::{HEADER_LEN, Header, Tag};
use mlx5vf_core::vfio::MigState;

use crate::backend::{MigrationDevice, driver_error, is_no_message};

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

/// Told about progress (e.g. a progress bar).
pub trait Observer: Sync {
    /// `total` bytes moved so far; now in `phase`.
    fn progress(&self, total: u64, phase: Phase);
}

/// An observer that ignores everything.
pub struct Quiet;
impl Observer for Quiet {
    fn progress(&self, _total: u64, _phase: Phase) {}
}

/// Records seen in a stream, counted by parsing headers only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordCounts {
    /// All records.
    pub records: u64,
    /// FW_DATA records (firmware images: chunks, PRE_COPY images).
    pub fw_data: u64,
    /// Their payload bytes.
    pub fw_data_bytes: u64,
}

/// Counts records in bytes passing through, without touching payloads.
#[derive(Clone, Debug, Default)]
pub struct RecordCounter {
    counts: RecordCounts,
    header: [u8; HEADER_LEN],
    have: usize,
    skip: u64,
}

impl RecordCounter {
    /// Notes `bytes` (the next bytes of the stream).
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = usize::try_from(self.skip)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                self.skip -= n as u64;
                bytes = bytes.get(n..).unwrap_or_default();
                continue;
            }
            let n = (HEADER_LEN - self.have).min(bytes.len());
            if let (Some(dst), Some(src)) = (
                self.header.get_mut(self.have..self.have + n),
                bytes.get(..n),
            ) {
                dst.copy_from_slice(src);
            }
            self.have += n;
            bytes = bytes.get(n..).unwrap_or_default();
            if self.have == HEADER_LEN {
                let h = Header::from_bytes(&self.header);
                self.counts.records += 1;
                if h.tag == Tag::FwData {
                    self.counts.fw_data += 1;
                    self.counts.fw_data_bytes += h.record_size;
                }
                self.skip = h.record_size;
                self.have = 0;
            }
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> RecordCounts {
        self.counts
    }

    /// Whether the bytes so far end inside a record, and if so how many
    /// bytes of it are missing (at least; a cut header hides the payload).
    pub fn missing(&self) -> Option<u64> {
        if self.have > 0 {
            Some((HEADER_LEN - self.have) as u64)
        } else if self.skip > 0 {
            Some(self.skip)
        } else {
            None
        }
    }
}

/// A writer that counts records of what it passes on, and remembers whether
/// it was the one that failed (to tell output errors from device errors).
struct Tap<'a> {
    out: &'a mut dyn Write,
    counter: RecordCounter,
    bytes: u64,
    failed: bool,
}

impl Tap<'_> {
    /// A failed transfer step: the output's fault or the device's.
    fn error(&self, e: io::Error, what: &'static str) -> TransferError {
        if self.failed {
            TransferError::Output(e)
        } else {
            TransferError::Device { what, error: e }
        }
    }
}

impl Write for Tap<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.out.write(data).inspect_err(|_| self.failed = true)?;
        self.counter.feed(data.get(..n).unwrap_or_default());
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// What a save did.
#[derive(Clone, Copy, Debug, Default)]
pub struct SaveReport {
    /// Stream bytes written.
    pub bytes: u64,
    /// Records.
    pub records: RecordCounts,
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
    /// Records.
    pub records: RecordCounts,
    /// When the device reached RUNNING.
    pub running_at: Option<Instant>,
    /// The whole load.
    pub total_time: Duration,
}

/// Why a transfer failed.
#[derive(Debug)]
pub enum TransferError {
    /// A device operation failed; `what` says which.
    Device {
        /// The operation.
        what: &'static str,
        /// The error.
        error: io::Error,
    },
    /// Reading the input failed.
    Input(io::Error),
    /// Writing the output failed.
    Output(io::Error),
}

impl TransferError {
    fn device(what: &'static str) -> impl FnOnce(io::Error) -> Self {
        move |error| Self::Device { what, error }
    }

    /// The driver error behind it, if any.
    pub fn driver_error(&self) -> Option<DeviceError> {
        match self {
            Self::Device { error, .. } => driver_error(error),
            _ => None,
        }
    }
}

impl fmt::Display for TransferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Device { what, error } => match driver_error(error) {
                Some(e) => write!(f, "{what}: {}", describe_driver_error(&e)),
                None => write!(f, "{what}: {error}"),
            },
            Self::Input(e) => write!(f, "reading the stream: {e}"),
            Self::Output(e) => write!(f, "writing the stream: {e}"),
        }
    }
}

impl std::error::Error for TransferError {}

/// A driver error in words a user of `load` wants: the class first
/// (truncated, unknown mandatory record, integrity mismatch, refused by the
/// device, …), then the detail and errno.
pub fn describe_driver_error(e: &DeviceError) -> String {
    use mlx5vf_core::load::LoadError;
    let errno = e.errno().name();
    match e {
        DeviceError::Firmware(_) | DeviceError::Load(LoadError::Refused(_)) => {
            format!("refused by the device: {e}")
        }
        DeviceError::Load(LoadError::LoadFailed) | DeviceError::FileFailed => {
            format!("refused by the device earlier: {e} ({errno})")
        }
        // The driver's own messages already name the class: "stream
        // truncated: …", "unknown mandatory record tag …", "integrity
        // mismatch: …", "record of N bytes exceeds …".
        _ => format!("{e} ({errno})"),
    }
}

/// Saves `dev`'s state into `out`: PRE_COPY rounds first if asked, then
/// STOP_COPY to end of stream; the device is left in STOP.
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
    let mut report = SaveReport::default();
    let mut tap = Tap {
        out,
        counter: RecordCounter::default(),
        bytes: 0,
        failed: false,
    };
    let mut file = if opts.precopy {
        let mut file = dev
            .set_state(MigState::PreCopy)
            .map_err(TransferError::device("entering PRE_COPY"))?
            .ok_or_else(|| TransferError::Device {
                what: "entering PRE_COPY",
                error: io::Error::other("no data file returned"),
            })?;
        loop {
            report.precopy_rounds += 1;
            // Send what is there now, until the temporary end (ENOMSG).
            loop {
                match file.send_to(&mut tap, opts.read_size) {
                    Ok(0) => break,
                    Ok(_) => observer.progress(tap.bytes, Phase::PreCopy),
                    Err(e) if is_no_message(&e) => break,
                    Err(e) => return Err(tap.error(e, "reading PRE_COPY data")),
                }
            }
            let info = file
                .precopy_info()
                .map_err(TransferError::device("VFIO_MIG_GET_PRECOPY_INFO"))?;
            // What the stop can afford: the PRE_COPY transfer rate so far
            // times the budget (QEMU's threshold_size).
            let rate = tap.bytes as f64 / start.elapsed().as_secs_f64().max(1e-9);
            let affordable = rate * opts.downtime_limit.as_secs_f64();
            report.last_precopy_info = Some((info.initial_bytes, info.dirty_bytes));
            let converged = info.initial_bytes == 0 && (info.dirty_bytes as f64) <= affordable;
            if converged || report.precopy_rounds >= opts.max_rounds {
                break;
            }
        }
        report.precopy_bytes = tap.bytes;
        report.precopy_time = start.elapsed();
        report.stopped_at = Some(Instant::now());
        // PRE_COPY -> PRE_COPY_P2P -> STOP_COPY continues on the same file.
        if let Some(_unexpected) = dev
            .set_state(MigState::StopCopy)
            .map_err(TransferError::device("entering STOP_COPY"))?
        {
            return Err(TransferError::Device {
                what: "entering STOP_COPY",
                error: io::Error::other("a second data file was returned (data_fd out of sync)"),
            });
        }
        file
    } else {
        report.stopped_at = Some(Instant::now());
        dev.set_state(MigState::StopCopy)
            .map_err(TransferError::device("entering STOP_COPY"))?
            .ok_or_else(|| TransferError::Device {
                what: "entering STOP_COPY",
                error: io::Error::other("no data file returned"),
            })?
    };
    let stop_start = Instant::now();
    loop {
        match file.send_to(&mut tap, opts.read_size) {
            Ok(0) => break,
            Ok(_) => observer.progress(tap.bytes, Phase::StopCopy),
            Err(e) => return Err(tap.error(e, "reading STOP_COPY data")),
        }
    }
    tap.flush().map_err(TransferError::Output)?;
    report.stop_copy_time = stop_start.elapsed();
    drop(file);
    dev.set_state(MigState::Stop)
        .map_err(TransferError::device("leaving STOP_COPY"))?;
    report.bytes = tap.bytes;
    report.records = tap.counter.counts();
    report.total_time = start.elapsed();
    Ok(report)
}

/// Loads a stream from `input` into `dev`: RESUMING, every byte, STOP (where
/// the driver checks the stream is complete), then RUNNING.
///
/// # Errors
/// [`TransferError`].
pub fn load(
    dev: &mut dyn MigrationDevice,
    input: &mut dyn BufRead,
    observer: &dyn Observer,
) -> Result<LoadReport, TransferError> {
    let start = Instant::now();
    let mut file = dev
        .set_state(MigState::Resuming)
        .map_err(TransferError::device("entering RESUMING"))?
        .ok_or_else(|| TransferError::Device {
            what: "entering RESUMING",
            error: io::Error::other("no data file returned"),
        })?;
    let mut counter = RecordCounter::default();
    let mut bytes = 0u64;
    loop {
        let chunk = match input.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(TransferError::Input(e)),
        };
        if chunk.is_empty() {
            break;
        }
        let n = chunk.len();
        file.write_all(chunk)
            .map_err(TransferError::device("writing the stream to the device"))?;
        counter.feed(chunk);
        input.consume(n);
        bytes += n as u64;
        observer.progress(bytes, Phase::Resuming);
    }
    drop(file);
    dev.set_state(MigState::Stop).map_err(|error| {
        // A kernel driver answers only with an errno; say what we saw.
        let error = match (driver_error(&error), counter.missing()) {
            (None, Some(missing)) => io::Error::new(
                error.kind(),
                format!(
                    "{error}: the stream is truncated (it ends inside a record, \
                     {missing}+ bytes missing, after {bytes} bytes)"
                ),
            ),
            _ => error,
        };
        TransferError::Device {
            what: "leaving RESUMING",
            error,
        }
    })?;
    dev.set_state(MigState::Running)
        .map_err(TransferError::device("resuming the VF"))?;
    Ok(LoadReport {
        bytes,
        records: counter.counts(),
        running_at: Some(Instant::now()),
        total_time: start.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_records_across_splits() {
        let mut s = Vec::new();
        s.extend_from_slice(&Header::fw_data(5).to_bytes());
        s.extend_from_slice(&[1; 5]);
        let opt = Header {
            record_size: 3,
            flags: mlx5vf_core::stream::RecordFlags::OPTIONAL,
            tag: Tag::Unknown(9),
        };
        s.extend_from_slice(&opt.to_bytes());
        s.extend_from_slice(&[2; 3]);
        for split in 1..s.len() {
            let mut c = RecordCounter::default();
            for piece in s.chunks(split) {
                c.feed(piece);
            }
            assert_eq!(
                c.counts(),
                RecordCounts {
                    records: 2,
                    fw_data: 1,
                    fw_data_bytes: 5
                }
            );
            assert_eq!(c.missing(), None);
        }
    }

    #[test]
    fn knows_when_the_stream_ends_inside_a_record() {
        let mut s = Vec::new();
        s.extend_from_slice(&Header::fw_data(5).to_bytes());
        s.extend_from_slice(&[1; 5]);
        let expect = |cut: usize| match cut {
            0 => None,
            c if c < HEADER_LEN => Some((HEADER_LEN - c) as u64),
            c if c < HEADER_LEN + 5 => Some((HEADER_LEN + 5 - c) as u64),
            _ => None,
        };
        for cut in 0..=s.len() {
            let mut c = RecordCounter::default();
            c.feed(&s[..cut]);
            assert_eq!(c.missing(), expect(cut), "cut at {cut}");
        }
    }
}
