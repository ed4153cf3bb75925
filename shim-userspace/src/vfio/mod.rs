//! The `vfio-mig:` and `vfio-fd:` backends: the VMM side of the kernel's
//! VFIO migration uAPI v2, for any VFIO device that offers it: Linux's
//! `mlx5-vfio-pci` binding a ConnectX VF, our kernel module's emulated VFs,
//! or any other variant driver.
//!
//! # Two ways in
//! - [`VfioDevice::open`] takes a spec and opens the device itself:
//!   `vfio-mig:DEVICE[,iommu=auto|group|cdev]`, where `DEVICE` is
//!   - a sysfs device directory (`/sys/bus/pci/devices/0000:3b:00.2`),
//!   - a device name looked up under `/sys/bus/{pci,platform,mdev}/devices`
//!     (`0000:3b:00.2`, `mlx5vf-sim.0`),
//!   - or a VFIO character device (`/dev/vfio/devices/vfio3`).
//!
//!   `iommu=auto` (the default) takes the iommufd character-device path
//!   when the kernel has one for the device (`vfio-dev/vfioN` in sysfs and
//!   `/dev/iommu`), else the group/container path (`/dev/vfio/vfio` with
//!   the type1v2 IOMMU and `/dev/vfio/GROUP`), as QEMU does.
//! - [`VfioDevice::adopt`] takes the descriptors a VMM already holds: a
//!   device fd with its container (group path) or with the iommufd it is
//!   bound to (cdev path). The CLI spells it
//!   `vfio-fd:DEVICE_FD,container=FD` or `vfio-fd:DEVICE_FD,iommufd=FD`,
//!   numbers inherited from the parent process ([`VfioDevice::inherit`]),
//!   as QEMU's `fd=` options work. See [`VfioDevice::adopt`] for who owns
//!   what and what is checked.
//!
//! # DMA mappings
//! The migration uAPI needs none from its user: the data fd carries the
//! state, and the driver moves it with DMA of its own (`mlx5-vfio-pci`
//! through the PF, with buffers it maps itself). So this client maps
//! nothing: the container it opens gets an IOMMU (`VFIO_SET_IOMMU`, which
//! `VFIO_GROUP_GET_DEVICE_FD` requires) and an iommufd-bound device an
//! empty I/O address space, and neither ever sees `MAP_DMA`. Adopted
//! descriptors are used as they are: the VMM's mappings of guest memory
//! stay its own, untouched and unread; the device needs them only to run
//! its guest, not to migrate. Dirty-page tracking of guest memory is the
//! VMM's business too; the device's own (DMA logging, below) tracks IOVAs
//! and needs no mappings either.
//!
//! # What it drives
//! PROBE and GET `MIGRATION` at open (a device without `STOP_COPY` is
//! refused), GET/SET `MIG_DEVICE_STATE` (the data fd a transition returns
//! becomes a [`DataFile`]), GET `MIG_DATA_SIZE`, `VFIO_MIG_GET_PRECOPY_INFO`
//! on the data fd, `VFIO_DEVICE_RESET`, and DMA logging (device dirty-page
//! tracking: PROBE, START, REPORT and STOP of `DMA_LOGGING_*`, the
//! kernel's `vfio_log_ops`; [`VfioDevice::start_dma_logging`]). Errors are [`VfioError`]s: the
//! step, the device and the kernel's errno; through the
//! [`MigrationDevice`] trait they become `io::Error`s that keep the errno
//! ([`crate::backend::errno_of`]). `ENOMSG` in PRE_COPY is the temporary
//! end of data, as QEMU treats it.
//!
//! The device state lives as long as some process holds the device fd:
//! when the last one closes, the kernel's `close_device` ends any data
//! session, and with vfio-pci the next open starts RUNNING (it resets the
//! function on open). Other drivers may keep their migration state across
//! close (a device left in RESUMING by a killed `load`); `save` and `load`
//! bring such a device out of it first ([`crate::transfer::settle`]).
//!
//! # Stream format
//! The uAPI's stream is opaque. A device whose driver is `mlx5_vfio_pci` or
//! our `mlx5vf_sim` module speaks mlx5 records
//! ([`StreamFormat::Mlx5`]): `load` refuses bytes that are not an mlx5
//! stream before the device sees them. Any other driver gets the bytes as
//! they are and judges them itself. An adopted group-path device fd does
//! not say which device it is (it is an anonymous file), so its stream is
//! opaque to the tool; an adopted character device leads to its sysfs
//! directory through its device number.

mod adopt;
mod error;
mod logging;
mod open;
pub(crate) use open::{PfDma, open_pf, resolve_pf};
mod spec;
pub(crate) mod sys;

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use mlx5vf_core::save::PrecopyInfo;
use mlx5vf_core::vfio::{MigState, MigrationFlags};
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::OFlags;

use crate::backend::{DataFile, MigrationDevice, Stats, StreamFormat};

pub use adopt::IommuFd;
pub use error::{Errno, ErrorKind, IommuType, Step, Target, VfioError, describe_errno, errno_name};
pub use open::BUSES;
pub use spec::{FdSpec, IommuFdNumber, IommuPath, VfioSpec};

/// The fds that keep the device's IOMMU context alive.
enum IommuContext {
    /// Opened here: the container and the group.
    Group {
        container: OwnedFd,
        _group: OwnedFd,
        group: String,
    },
    /// Opened here: `/dev/iommu`, bound to the character device `node`.
    Cdev { iommufd: OwnedFd, node: PathBuf },
    /// Adopted: our duplicate of the caller's container.
    AdoptedContainer { container: OwnedFd },
    /// Adopted: our duplicate of the caller's iommufd.
    AdoptedIommufd { iommufd: OwnedFd },
}

/// A VFIO device with migration support.
pub struct VfioDevice {
    /// How the caller named it (a spec); every error starts with it.
    name: String,
    /// Its sysfs directory, when known (not for an adopted group-path fd).
    sysfs: Option<PathBuf>,
    device: OwnedFd,
    context: IommuContext,
    /// `VFIO_DEVICE_FLAGS_*` (from `VFIO_DEVICE_GET_INFO`), when asked.
    device_flags: Option<u32>,
    flags: MigrationFlags,
    format: StreamFormat,
}

/// Drivers whose data fd carries mlx5 records: Linux's `mlx5-vfio-pci` and
/// our `mlx5vf_sim` module (which also publishes `<sysfs>/mlx5vf/`).
const MLX5_DRIVERS: [&str; 2] = ["mlx5_vfio_pci", "mlx5vf-sim"];

/// What the driver bound to the device at `sysfs` writes on its data fd,
/// known by the driver's name; any other driver's stream is opaque.
fn driver_stream_format(sysfs: &Path) -> StreamFormat {
    let driver = fs::read_link(sysfs.join("driver"))
        .ok()
        .and_then(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_owned));
    let ours = sysfs.join("mlx5vf").is_dir();
    if ours || driver.is_some_and(|d| MLX5_DRIVERS.contains(&d.as_str())) {
        StreamFormat::Mlx5
    } else {
        StreamFormat::Opaque
    }
}

impl VfioDevice {
    /// Checks that `device` offers migration with `STOP_COPY` and builds
    /// the device: the last step of [`open`](Self::open) and
    /// [`adopt`](Self::adopt) alike.
    fn finish(
        name: String,
        sysfs: Option<PathBuf>,
        device: OwnedFd,
        context: IommuContext,
        device_flags: Option<u32>,
    ) -> Result<Self, VfioError> {
        sys::probe_migration(&device).map_err(|e| {
            let kind = if e == Errno::NOTTY {
                ErrorKind::NoMigration
            } else {
                ErrorKind::Os(e)
            };
            VfioError::new(&name, Step::ProbeMigration, kind)
        })?;
        let raw_flags = sys::migration_flags(&device)
            .map_err(|e| VfioError::new(&name, Step::GetMigration, ErrorKind::Os(e)))?;
        let flags = MigrationFlags::from_bits(raw_flags);
        if !flags.stop_copy() {
            return Err(VfioError::new(
                &name,
                Step::GetMigration,
                ErrorKind::NoStopCopy(raw_flags),
            ));
        }
        let format = sysfs
            .as_deref()
            .map_or(StreamFormat::Opaque, driver_stream_format);
        Ok(Self {
            name,
            sysfs,
            device,
            context,
            device_flags,
            flags,
            format,
        })
    }

    /// The error of `step` on this device, for a kernel errno.
    fn os(&self, step: Step) -> impl FnOnce(Errno) -> VfioError + '_ {
        move |e| VfioError::new(&self.name, step, ErrorKind::Os(e))
    }

    /// The device's sysfs directory, when known: always for a device
    /// opened by spec and an adopted character device, never for an
    /// adopted group-path device fd (an anonymous file).
    pub fn sysfs(&self) -> Option<&Path> {
        self.sysfs.as_deref()
    }

    /// The device fd, for a VMM that drives the rest of the device itself
    /// (regions, interrupts). It stays ours: it closes when this drops.
    pub fn device_fd(&self) -> BorrowedFd<'_> {
        self.device.as_fd()
    }

    /// The container or iommufd that holds the device's IOMMU context.
    pub fn iommu_fd(&self) -> IommuFd<'_> {
        match &self.context {
            IommuContext::Group { container, .. }
            | IommuContext::AdoptedContainer { container } => IommuFd::Container(container.as_fd()),
            IommuContext::Cdev { iommufd, .. } | IommuContext::AdoptedIommufd { iommufd } => {
                IommuFd::Iommufd(iommufd.as_fd())
            }
        }
    }

    /// Opts in to PRECOPY_INFOv2 (`VFIO_PRECOPY_INFO_REINIT`) when the kernel
    /// knows it; returns whether it is on.
    ///
    /// # Errors
    /// The kernel knows the feature but refused it.
    pub fn enable_precopy_info_v2(&mut self) -> Result<bool, VfioError> {
        if !sys::probe_precopy_info_v2(&self.device) {
            return Ok(false);
        }
        sys::enable_precopy_info_v2(&self.device).map_err(self.os(Step::PrecopyInfoV2))?;
        Ok(true)
    }

    /// A figure our kernel module publishes under `<sysfs>/mlx5vf/` (digest,
    /// peak buffer bytes, live objects); `None` for other drivers.
    pub fn module_attribute(&self, name: &str) -> Option<String> {
        let sysfs = self.sysfs.as_deref()?;
        fs::read_to_string(sysfs.join("mlx5vf").join(name))
            .ok()
            .map(|s| s.trim().to_owned())
    }

    /// GET `MIG_DEVICE_STATE`.
    ///
    /// # Errors
    /// The kernel refused ([`Step::GetState`]) or reported a state the
    /// uAPI does not define.
    pub fn migration_state(&self) -> Result<MigState, VfioError> {
        let raw = sys::get_state(&self.device).map_err(self.os(Step::GetState))?;
        MigState::from_raw(raw)
            .map_err(|_| VfioError::new(&self.name, Step::GetState, ErrorKind::UnknownState(raw)))
    }

    /// What kind of device the kernel says it is, for summaries.
    fn bus(&self) -> Option<&'static str> {
        let flags = self.device_flags?;
        if flags & sys::DEVICE_FLAGS_PCI != 0 {
            Some("PCI")
        } else if flags & sys::DEVICE_FLAGS_PLATFORM != 0 {
            Some("platform")
        } else {
            None
        }
    }
}

impl MigrationDevice for VfioDevice {
    fn describe(&self) -> String {
        let name = &self.name;
        match &self.context {
            IommuContext::Group { group, .. } => format!("{name} (VFIO group {group})"),
            IommuContext::Cdev { node, .. } => format!("{name} ({})", node.display()),
            IommuContext::AdoptedContainer { .. } | IommuContext::AdoptedIommufd { .. } => {
                let path = match self.context {
                    IommuContext::AdoptedIommufd { .. } => "iommufd",
                    _ => "VFIO container",
                };
                let mut s = format!("{name} (adopted: {path}");
                if let Some(bus) = self.bus() {
                    s.push_str(", ");
                    s.push_str(bus);
                }
                if let Some(sysfs) = &self.sysfs {
                    s.push_str(", ");
                    s.push_str(&sysfs.display().to_string());
                }
                s.push(')');
                s
            }
        }
    }

    fn migration_flags(&self) -> MigrationFlags {
        self.flags
    }

    fn state(&mut self) -> io::Result<MigState> {
        Ok(self.migration_state()?)
    }

    fn set_state(&mut self, target: MigState) -> io::Result<Option<Box<dyn DataFile>>> {
        let file = sys::set_state(&self.device, target.raw()).map_err(self.os(Step::SetState))?;
        Ok(file.map(|f| Box::new(VfioFile::new(File::from(f))) as Box<dyn DataFile>))
    }

    fn data_size(&mut self) -> io::Result<u64> {
        Ok(sys::data_size(&self.device).map_err(self.os(Step::DataSize))?)
    }

    fn reset(&mut self) -> io::Result<()> {
        Ok(sys::device_reset(&self.device).map_err(self.os(Step::Reset))?)
    }

    fn stream_format(&self) -> StreamFormat {
        self.format
    }

    fn dma_logging(&mut self) -> io::Result<&mut dyn crate::dma_logging::DmaLogging> {
        self.probe_dma_logging()?;
        Ok(self)
    }

    fn digest(&self) -> Option<String> {
        self.module_attribute("digest")
    }

    fn stats(&self) -> Stats {
        Stats {
            peak_buffer_bytes: self
                .module_attribute("peak_buffer_bytes")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            ..Stats::default()
        }
    }
}

/// A data fd the kernel returned.
pub struct VfioFile {
    file: File,
    /// Reused by `send_to`, so draining a stream allocates once.
    buf: Vec<u8>,
}

/// The read size of `send_to`: QEMU's `VFIO_MIG_DEFAULT_DATA_BUFFER_SIZE`.
const SEND_BUFFER: usize = 1 << 20;

impl VfioFile {
    fn new(file: File) -> Self {
        Self {
            file,
            buf: Vec::new(),
        }
    }
}

impl Read for VfioFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }
}

impl Write for VfioFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl DataFile for VfioFile {
    fn precopy_info(&mut self) -> io::Result<PrecopyInfo> {
        // The data fd is a file like any other: its errors are the OS's
        // (the caller names the ioctl).
        let info = sys::precopy_info(&self.file)?;
        Ok(PrecopyInfo {
            initial_bytes: info.initial_bytes,
            dirty_bytes: info.dirty_bytes,
            reinit: info.flags & sys::PRECOPY_INFO_REINIT != 0,
        })
    }

    fn wait_readable(&mut self, timeout: Duration) -> io::Result<bool> {
        let timeout = Timespec {
            tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(timeout.subsec_nanos()),
        };
        let mut fds = [PollFd::new(&self.file, PollFlags::IN)];
        let ready = rustix::event::poll(&mut fds, Some(&timeout))?;
        Ok(ready > 0)
    }

    fn set_nonblocking(&mut self, on: bool) -> io::Result<()> {
        let flags = rustix::fs::fcntl_getfl(&self.file)?;
        let flags = if on {
            flags | OFlags::NONBLOCK
        } else {
            flags - OFlags::NONBLOCK
        };
        Ok(rustix::fs::fcntl_setfl(&self.file, flags)?)
    }

    fn send_to(&mut self, out: &mut dyn Write, max: u64) -> io::Result<u64> {
        let want = usize::try_from(max).unwrap_or(usize::MAX).min(SEND_BUFFER);
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        let buf = self.buf.get_mut(..want).unwrap_or_default();
        let n = self.file.read(buf)?;
        out.write_all(buf.get(..n).unwrap_or_default())?;
        Ok(n as u64)
    }
}
