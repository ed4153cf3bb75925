//! Devices the tool migrates, chosen by a spec string, and the data file
//! they hand out: the same shape as the kernel's VFIO migration uAPI
//! (`MIG_DEVICE_STATE` returning a data fd, `MIG_DATA_SIZE`, the precopy
//! ioctl), so save, load and migrate drive every backend the way QEMU drives
//! a VFIO device.
//!
//! Backends:
//! - `sim:...` (the default): a simulated mlx5 PF with one VF, driven by
//!   [`mlx5vf_core::device::Device`] in this process;
//! - `vfio-mig:DEVICE[,iommu=auto|group|cdev]`: any device behind the
//!   kernel's VFIO migration uAPI v2 (see [`crate::vfio`]);
//! - `vfio-fd:DEVICE_FD,container=FD|iommufd=FD`: the same, through
//!   descriptors inherited from the parent process (a VMM's).

use std::fmt;
use std::io::{self, Read, Write};
use std::sync::Arc;

use mlx5vf_core::device::DeviceError;
use mlx5vf_core::errno::Errno;
use mlx5vf_core::save::{PrecopyInfo, SaveFailure};
use mlx5vf_core::vfio::{MigState, MigrationFlags};

use crate::dma_logging::DmaLogging;
use crate::timeline::Timeline;

pub use crate::recognise::StreamFormat;

/// A migratable device.
pub trait MigrationDevice: Send {
    /// What it is, for summaries (e.g. the spec).
    fn describe(&self) -> String;
    /// The migration flags it offers (`VFIO_DEVICE_FEATURE_MIGRATION`).
    fn migration_flags(&self) -> MigrationFlags;
    /// The current state (`GET MIG_DEVICE_STATE`).
    ///
    /// # Errors
    /// The device is gone.
    fn state(&mut self) -> io::Result<MigState>;
    /// `SET MIG_DEVICE_STATE`: walks to `target`; returns the new data file
    /// when the target opens one.
    ///
    /// # Errors
    /// The transition failed (the device is in some state on the path).
    fn set_state(&mut self, target: MigState) -> io::Result<Option<Box<dyn DataFile>>>;
    /// `MIG_DATA_SIZE`: bytes the stop-copy phase will produce.
    ///
    /// # Errors
    /// The query failed.
    fn data_size(&mut self) -> io::Result<u64>;
    /// `VFIO_DEVICE_RESET`: the function resets, its data files end, and
    /// the migration state becomes RUNNING (the only way out of ERROR, or of
    /// a RESUMING whose data was refused).
    ///
    /// # Errors
    /// The reset failed.
    fn reset(&mut self) -> io::Result<()>;
    /// What the device's driver expects on its data fd: [`StreamFormat::Opaque`]
    /// unless the backend knows the driver speaks mlx5 records.
    fn stream_format(&self) -> StreamFormat {
        StreamFormat::Opaque
    }
    /// A digest of the device state, when the backend can compute one (the
    /// simulated device can; real hardware cannot).
    fn digest(&self) -> Option<String>;
    /// Resource figures, when the backend knows them.
    fn stats(&self) -> Stats;
    /// Records the firmware's SAVEs and LOADs on `timeline`, when the
    /// backend sees them (the simulated device does; behind a kernel driver
    /// they are the kernel's). Others ignore it.
    fn set_timeline(&mut self, timeline: Arc<Timeline>) {
        let _ = timeline;
    }
    /// Its device dirty-page tracking (VFIO DMA logging).
    ///
    /// # Errors
    /// The device offers none (`ENOTTY` through VFIO, as for a driver
    /// without `vfio_log_ops`), with the reason.
    fn dma_logging(&mut self) -> io::Result<&mut dyn DmaLogging> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("{}: this backend has no DMA logging", self.describe()),
        ))
    }
}

/// Resource figures of a device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// The most DMA buffer memory the driver held at once.
    pub peak_buffer_bytes: u64,
    /// The chunk size the saving policy uses now (tuned to the firmware's
    /// measured speed, or as configured), when the driver runs here.
    pub chunk_size: Option<u64>,
    /// The firmware's measured command latency (ns) and SAVE rate (bytes/s),
    /// when the driver runs here and has measured them.
    pub firmware_speed: Option<(u64, u64)>,
}

/// A migration data file: readable while saving, writable while resuming.
///
/// `read` follows the kernel's data fd: `Ok(0)` at end of stream,
/// [`io::ErrorKind::WouldBlock`] for `EAGAIN` in non-blocking mode, and an
/// error with [`errno_of`] = `ENOMSG` when PRE_COPY data is drained for now
/// ([`is_no_message`]).
pub trait DataFile: Read + Write + Send {
    /// `VFIO_MIG_GET_PRECOPY_INFO`.
    ///
    /// # Errors
    /// `EINVAL` outside PRE_COPY states, `ENODEV` for a failed file.
    fn precopy_info(&mut self) -> io::Result<PrecopyInfo>;
    /// `poll()` for `POLLIN`: waits until a read would not block (data, end
    /// of stream or an error) or `timeout` passes; returns whether it became
    /// readable. In PRE_COPY with everything read this may wait out the
    /// whole timeout: new data appears only after `precopy_info`.
    ///
    /// # Errors
    /// The platform refused.
    fn wait_readable(&mut self, timeout: std::time::Duration) -> io::Result<bool>;
    /// `O_NONBLOCK` on or off.
    ///
    /// # Errors
    /// The platform refused.
    fn set_nonblocking(&mut self, on: bool) -> io::Result<()>;
    /// Reads up to `max` bytes and writes them to `out`; where the backend
    /// can, straight from its buffers with no intermediate copy. Returns the
    /// bytes moved (`0` at end of stream); errors as [`Read::read`].
    ///
    /// # Errors
    /// As `read`, or `out`'s error.
    fn send_to(&mut self, out: &mut dyn Write, max: u64) -> io::Result<u64> {
        let mut buf = vec![0u8; usize::try_from(max.min(1 << 20)).unwrap_or(1 << 20)];
        let n = self.read(&mut buf)?;
        out.write_all(buf.get(..n).unwrap_or_default())?;
        Ok(n as u64)
    }
}

/// A driver error carried in an [`io::Error`], keeping its message and errno.
#[derive(Debug)]
pub struct DriverError(pub DeviceError);

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.0, self.0.errno().name())
    }
}

impl std::error::Error for DriverError {}

/// A saving file's failure, with why it failed (the firmware's status, a
/// hostile size, ...): what a read's `ENODEV` stands for.
#[derive(Debug)]
pub struct SaveFileFailed {
    /// Why, as the driver recorded it.
    pub why: SaveFailure,
    /// The driver's error (`FileFailed`, `ENODEV`).
    pub error: DriverError,
}

impl fmt::Display for SaveFileFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.error, self.why)
    }
}

impl std::error::Error for SaveFileFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// The `io::Error` for a failed saving file, saying why it failed.
pub fn save_failed_error(why: SaveFailure) -> io::Error {
    io::Error::other(SaveFileFailed {
        why,
        error: DriverError(DeviceError::FileFailed),
    })
}

/// The `io::Error` for a driver error: `EAGAIN` becomes
/// [`io::ErrorKind::WouldBlock`]; everything keeps its errno (see [`errno_of`]).
pub fn io_error(e: DeviceError) -> io::Error {
    let kind = match e.errno() {
        Errno::EAGAIN => io::ErrorKind::WouldBlock,
        Errno::EINVAL => io::ErrorKind::InvalidInput,
        Errno::ENOMEM => io::ErrorKind::OutOfMemory,
        Errno::ENOTCONN => io::ErrorKind::NotConnected,
        Errno::ETIMEDOUT => io::ErrorKind::TimedOut,
        Errno::EOPNOTSUPP => io::ErrorKind::Unsupported,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, DriverError(e))
}

/// The errno behind an I/O error: the OS's, the driver's, or the one a
/// [`VfioError`](crate::vfio::VfioError) carries.
pub fn errno_of(e: &io::Error) -> Option<i32> {
    e.raw_os_error().or_else(|| {
        if let Some(d) = driver_error(e) {
            return Some(d.errno().code());
        }
        e.get_ref()?
            .downcast_ref::<crate::vfio::VfioError>()
            .and_then(crate::vfio::VfioError::errno)
            .map(|n| n.raw_os_error())
    })
}

/// The driver error behind an I/O error (or behind its sources: a backend
/// may wrap it with more detail), if it is one.
pub fn driver_error(e: &io::Error) -> Option<DeviceError> {
    let mut inner: Option<&(dyn std::error::Error + 'static)> = e.get_ref().map(|i| i as _);
    while let Some(err) = inner {
        if let Some(d) = err.downcast_ref::<DriverError>() {
            return Some(d.0);
        }
        inner = err.source();
    }
    None
}

/// Whether `e` is PRE_COPY's temporary end of data (`ENOMSG`).
pub fn is_no_message(e: &io::Error) -> bool {
    errno_of(e) == Some(Errno::ENOMSG.code())
}

/// Driver policy for backends that run the driver in this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DriverOptions {
    /// Chunk buffer size (Linux: 8 MiB).
    pub chunk_size: u64,
    /// Chunk slots (Linux: 2).
    pub chunk_slots: u8,
    /// Use legacy (non-chunk) mode even when the device offers chunks.
    pub legacy: bool,
    /// Write our stream-info / stream-end records.
    pub integrity: bool,
    /// Account PRE_COPY as the Linux driver does (one chunk per
    /// precopy-info call) instead of chunked PRE_COPY.
    pub linux_precopy: bool,
    /// LOAD each image before receiving the next, as the Linux driver does
    /// (the simulated device otherwise LOADs asynchronously, pipelined).
    pub sync_load: bool,
    /// Keep `chunk_size`, or tune it to the firmware's measured speed
    /// within a memory cap (the default).
    pub chunk_policy: mlx5vf_core::save::ChunkPolicy,
}

impl Default for DriverOptions {
    fn default() -> Self {
        Self {
            chunk_size: mlx5vf_core::save::LINUX_CHUNK_SIZE,
            chunk_slots: mlx5vf_core::save::LINUX_CHUNK_SLOTS,
            legacy: false,
            integrity: true,
            linux_precopy: false,
            sync_load: false,
            chunk_policy: mlx5vf_core::save::ChunkPolicy::Measured {
                memory_cap: mlx5vf_core::save::DEFAULT_MEMORY_CAP,
            },
        }
    }
}

impl DriverOptions {
    /// The core driver configuration.
    pub fn config(&self) -> mlx5vf_core::device::Config {
        mlx5vf_core::device::Config {
            chunk_size: self.chunk_size,
            chunk_slots: self.chunk_slots,
            use_chunks: !self.legacy,
            integrity_records: self.integrity,
            precopy_policy: if self.linux_precopy {
                mlx5vf_core::save::PrecopyPolicy::Linux
            } else {
                mlx5vf_core::save::PrecopyPolicy::Chunked
            },
            chunk_policy: self.chunk_policy,
            ..mlx5vf_core::device::Config::default()
        }
    }
}

/// Why a device spec could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// The spec does not parse.
    Spec(String),
    /// The device refused (probe failed, …).
    Device(io::Error),
    /// A VFIO device could not be opened or adopted (the step and errno).
    Vfio(crate::vfio::VfioError),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Spec(m) => f.write_str(m),
            Self::Device(e) => write!(f, "cannot open device: {e}"),
            Self::Vfio(e) => write!(f, "cannot open device: {e}"),
        }
    }
}

impl std::error::Error for OpenError {}

/// Opens the device a spec names: `sim[:key=value,...]` (the default when
/// the spec is empty), `vfio-mig:...` or `vfio-fd:...`.
///
/// # Errors
/// [`OpenError`].
pub fn open(spec: &str, opts: &DriverOptions) -> Result<Box<dyn MigrationDevice>, OpenError> {
    let spec = if spec.is_empty() { "sim" } else { spec };
    if spec == "sim" || spec.starts_with("sim:") {
        #[cfg(feature = "sim")]
        {
            let parsed: mlx5vf_sim::spec::SimSpec =
                spec.parse().map_err(|e| OpenError::Spec(format!("{e}")))?;
            if parsed.transport == mlx5vf_sim::spec::Transport::Cmdq {
                let dev = crate::pf::sim::open(spec, &parsed, opts).map_err(OpenError::Device)?;
                return Ok(Box::new(dev));
            }
            let dev =
                crate::sim::SimDevice::open(spec, &parsed, opts).map_err(OpenError::Device)?;
            return Ok(Box::new(dev));
        }
        #[cfg(not(feature = "sim"))]
        {
            let _ = opts;
            return Err(OpenError::Spec(format!(
                "{spec:?}: this build of mlx5vf has no simulated device (feature `sim`)"
            )));
        }
    }
    if spec.starts_with("vfio-mig:") {
        let parsed = crate::vfio::VfioSpec::parse(spec).map_err(OpenError::Spec)?;
        let dev = crate::vfio::VfioDevice::open(spec, &parsed).map_err(OpenError::Vfio)?;
        return Ok(Box::new(dev));
    }
    if spec.starts_with("vfio-fd:") {
        let parsed = crate::vfio::FdSpec::parse(spec).map_err(OpenError::Spec)?;
        let dev = crate::vfio::VfioDevice::inherit(&parsed).map_err(OpenError::Vfio)?;
        return Ok(Box::new(dev));
    }
    if spec.starts_with("vfio-pf:") {
        let parsed = crate::vfio_pf::PfSpec::parse(spec).map_err(OpenError::Spec)?;
        let dev = crate::vfio_pf::open(spec, &parsed, opts).map_err(OpenError::Device)?;
        return Ok(Box::new(dev));
    }
    Err(OpenError::Spec(format!(
        "unknown device spec {spec:?}: expected sim[:key=value,...], vfio-mig:..., vfio-fd:... \
         or vfio-pf:..."
    )))
}
