//! The `vfio-mig:` backend: the VMM side of the kernel's VFIO migration
//! uAPI v2, for any VFIO device that offers it: Linux's `mlx5-vfio-pci`
//! binding a ConnectX VF, our kernel module's emulated VFs, or any other
//! variant driver.
//!
//! # Spec
//! `vfio-mig:DEVICE[,iommu=auto|group|cdev]`, where `DEVICE` is
//! - a sysfs device directory (`/sys/bus/pci/devices/0000:3b:00.2`),
//! - a device name looked up under `/sys/bus/{pci,platform,mdev}/devices`
//!   (`0000:3b:00.2`, `mlx5vf-sim.0`),
//! - or a VFIO character device (`/dev/vfio/devices/vfio3`).
//!
//! `iommu=auto` (the default) takes the iommufd character-device path when
//! the kernel has one for the device (`vfio-dev/vfioN` in sysfs and
//! `/dev/iommu`), else the group/container path (`/dev/vfio/vfio` with the
//! type1v2 IOMMU and `/dev/vfio/GROUP`), as QEMU does.
//!
//! # What it drives
//! GET `MIGRATION` at open (a device without `STOP_COPY` is refused), GET/SET
//! `MIG_DEVICE_STATE` (the data fd a transition returns becomes a
//! [`DataFile`]), GET `MIG_DATA_SIZE`, `VFIO_MIG_GET_PRECOPY_INFO` on the
//! data fd, and `VFIO_DEVICE_RESET`. Errors keep the kernel's errno
//! ([`crate::backend::errno_of`]); `ENOMSG` in PRE_COPY is the temporary end
//! of data, as QEMU treats it.
//!
//! The device state lives as long as this process holds the device fd: when
//! it closes, the kernel's `close_device` ends any data session, and with
//! vfio-pci the next open starts RUNNING (it resets the function on open).
//! Other drivers may keep their migration state across close (a device
//! left in RESUMING by a killed `load`); `save` and `load` bring such a
//! device out of it first ([`crate::transfer::settle`]).
//!
//! # Stream format
//! The uAPI's stream is opaque. A device whose driver is `mlx5_vfio_pci` or
//! our `mlx5vf_sim` module speaks mlx5 records
//! ([`StreamFormat::Mlx5`]): `load` refuses bytes that are not an mlx5
//! stream before the device sees them. Any other driver gets the bytes as
//! they are and judges them itself.

mod sys;

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use mlx5vf_core::save::PrecopyInfo;
use mlx5vf_core::vfio::{MigState, MigrationFlags};
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::OFlags;
use std::time::Duration;

use crate::backend::{DataFile, MigrationDevice, Stats, StreamFormat};

/// Buses searched for a bare device name, in order.
pub const BUSES: [&str; 3] = ["pci", "platform", "mdev"];
/// Where sysfs is.
const SYSFS: &str = "/sys";

/// How the device is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IommuPath {
    /// iommufd cdev if the kernel has it for the device, else group.
    Auto,
    /// `/dev/vfio/vfio` container and `/dev/vfio/GROUP`.
    Group,
    /// `/dev/vfio/devices/vfioN` bound to `/dev/iommu`.
    Cdev,
}

impl IommuPath {
    /// Every value of `iommu=`: its name, the path, and what it takes. The
    /// parser looks names up here and `--help` lists it; the first is the
    /// default.
    pub const CHOICES: [(&'static str, Self, &'static str); 3] = [
        (
            "auto",
            Self::Auto,
            "cdev when the kernel has one for the device, else group (as QEMU does)",
        ),
        (
            "group",
            Self::Group,
            "the /dev/vfio/vfio container (type1v2 IOMMU) and /dev/vfio/GROUP",
        ),
        (
            "cdev",
            Self::Cdev,
            "iommufd: /dev/vfio/devices/vfioN bound to /dev/iommu",
        ),
    ];

    /// Its name in a spec.
    pub fn name(self) -> &'static str {
        Self::CHOICES
            .iter()
            .find(|(_, path, _)| *path == self)
            .map_or("auto", |(name, _, _)| name)
    }
}

/// A parsed `vfio-mig:` spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VfioSpec {
    /// The device as written.
    pub device: String,
    /// How to reach it.
    pub iommu: IommuPath,
}

impl VfioSpec {
    /// Parses `vfio-mig:DEVICE[,iommu=auto|group|cdev]`.
    ///
    /// # Errors
    /// A message naming what is wrong.
    ///
    /// # Example
    /// ```
    /// use mlx5vf::vfio::{IommuPath, VfioSpec};
    /// let s = VfioSpec::parse("vfio-mig:0000:3b:00.2,iommu=group").unwrap();
    /// assert_eq!(s.device, "0000:3b:00.2");
    /// assert_eq!(s.iommu, IommuPath::Group);
    /// ```
    pub fn parse(spec: &str) -> Result<Self, String> {
        let rest = spec
            .strip_prefix("vfio-mig:")
            .ok_or_else(|| format!("{spec:?} is not a vfio-mig: spec"))?;
        let mut parts = rest.split(',');
        let device = parts.next().unwrap_or_default();
        if device.is_empty() {
            return Err(
                "vfio-mig: needs a device: a sysfs path, a device name (0000:3b:00.2) or \
                 /dev/vfio/devices/vfioN"
                    .to_owned(),
            );
        }
        let mut iommu = IommuPath::Auto;
        for part in parts {
            match part.split_once('=') {
                Some(("iommu", v)) => {
                    iommu = IommuPath::CHOICES
                        .iter()
                        .find(|(name, _, _)| *name == v)
                        .map(|(_, path, _)| *path)
                        .ok_or_else(|| {
                            let names: Vec<&str> =
                                IommuPath::CHOICES.iter().map(|(n, _, _)| *n).collect();
                            format!("vfio-mig: iommu={v:?}: expected {}", names.join(", "))
                        })?;
                }
                _ => return Err(format!("vfio-mig: unknown option {part:?} (known: iommu=)")),
            }
        }
        Ok(Self {
            device: device.to_owned(),
            iommu,
        })
    }
}

/// An error opening a device, with what was being done.
fn context(what: impl std::fmt::Display, e: io::Error) -> io::Error {
    let hint = match e.raw_os_error() {
        Some(2) => " (is the device bound to a VFIO driver, e.g. mlx5_vfio_pci?)",
        Some(13) | Some(1) => " (VFIO needs root or access to /dev/vfio)",
        Some(16) => " (another process holds the device or group)",
        _ => "",
    };
    io::Error::new(e.kind(), format!("{what}: {e}{hint}"))
}

/// The sysfs directory of the device a spec names.
fn resolve_sysfs(device: &str) -> io::Result<PathBuf> {
    if let Some(node) = device.strip_prefix("/dev/vfio/devices/") {
        let link = Path::new(SYSFS)
            .join("class/vfio-dev")
            .join(node)
            .join("device");
        return fs::canonicalize(&link).map_err(|e| context(link.display(), e));
    }
    if device.contains('/') {
        return fs::canonicalize(device).map_err(|e| context(device, e));
    }
    for bus in BUSES {
        let p = Path::new(SYSFS)
            .join("bus")
            .join(bus)
            .join("devices")
            .join(device);
        if p.exists() {
            return fs::canonicalize(&p).map_err(|e| context(p.display(), e));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "no device {device:?} under /sys/bus/{{{}}}/devices",
            BUSES.join(",")
        ),
    ))
}

/// The file name of a path, as a string.
fn file_name(p: &Path) -> io::Result<String> {
    p.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .ok_or_else(|| io::Error::other(format!("{} has no usable name", p.display())))
}

/// The `vfioN` character device sysfs lists for the device, if its node
/// exists: a noiommu device has a `vfio-dev/vfioN` entry but no character
/// device (Linux's `vfio_device_add()`: "cdev does not support noiommu
/// device"), and a container may pass `/dev/iommu` without the node.
fn cdev_node(sysfs: &Path) -> Option<PathBuf> {
    let dir = fs::read_dir(sysfs.join("vfio-dev")).ok()?;
    dir.filter_map(Result::ok)
        .map(|e| e.file_name())
        .filter_map(|n| n.to_str().map(str::to_owned))
        .find(|n| n.starts_with("vfio"))
        .map(|n| Path::new("/dev/vfio/devices").join(n))
        .filter(|node| node.exists())
}

fn open_rw(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| context(format!("open {}", path.display()), e))
}

/// The fds that keep the device's IOMMU context alive.
enum IommuContext {
    Group {
        _container: File,
        _group: File,
        group: String,
    },
    Cdev {
        _iommufd: File,
        node: PathBuf,
    },
}

/// A VFIO device with migration support.
pub struct VfioDevice {
    spec: String,
    sysfs: PathBuf,
    device: File,
    context: IommuContext,
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
        .and_then(|p| file_name(&p).ok());
    let ours = sysfs.join("mlx5vf").is_dir();
    if ours || driver.is_some_and(|d| MLX5_DRIVERS.contains(&d.as_str())) {
        StreamFormat::Mlx5
    } else {
        StreamFormat::Opaque
    }
}

impl VfioDevice {
    /// Opens the device a spec names (see the [module docs](self)).
    ///
    /// # Errors
    /// The spec does not resolve to a device, the kernel refused a step
    /// (each error names the step), or the device does not offer migration
    /// with `STOP_COPY`.
    pub fn open(spec: &str, parsed: &VfioSpec) -> io::Result<Self> {
        let sysfs = resolve_sysfs(&parsed.device)?;
        let cdev = cdev_node(&sysfs).filter(|_| Path::new("/dev/iommu").exists());
        let (device, iommu) = match (parsed.iommu, cdev) {
            (IommuPath::Auto | IommuPath::Cdev, Some(node)) => Self::open_cdev(&node)?,
            (IommuPath::Cdev, None) => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!(
                        "{}: no VFIO character device (needs CONFIG_VFIO_DEVICE_CDEV, \
                         CONFIG_IOMMUFD and /dev/iommu); try iommu=group",
                        sysfs.display()
                    ),
                ));
            }
            (IommuPath::Auto | IommuPath::Group, _) => Self::open_group(&sysfs)?,
        };
        let raw_flags = sys::migration_flags(&device).map_err(|e| {
            if e.raw_os_error() == Some(25) {
                io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!(
                        "{}: the driver offers no migration (ENOTTY)",
                        sysfs.display()
                    ),
                )
            } else {
                context("GET VFIO_DEVICE_FEATURE_MIGRATION", e)
            }
        })?;
        let flags = MigrationFlags::from_bits(raw_flags);
        if !flags.stop_copy() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "{}: migration flags {raw_flags:#x} lack VFIO_MIGRATION_STOP_COPY",
                    sysfs.display()
                ),
            ));
        }
        let format = driver_stream_format(&sysfs);
        Ok(Self {
            spec: spec.to_owned(),
            sysfs,
            device,
            context: iommu,
            flags,
            format,
        })
    }

    fn open_group(sysfs: &Path) -> io::Result<(File, IommuContext)> {
        let link = sysfs.join("iommu_group");
        let group_dir = fs::read_link(&link).map_err(|e| {
            context(
                format!(
                    "{} (no IOMMU group: is the device bound to a VFIO driver?)",
                    link.display()
                ),
                e,
            )
        })?;
        let group = file_name(&group_dir)?;
        let name = file_name(sysfs)?;
        // noiommu groups have their own node name, and their container
        // takes only the noiommu IOMMU (VFIO_SET_IOMMU type1v2 is ENODEV).
        let mut node = Path::new("/dev/vfio").join(&group);
        let mut kind = sys::VFIO_TYPE1V2_IOMMU;
        if !node.exists() {
            let noiommu = Path::new("/dev/vfio").join(format!("noiommu-{group}"));
            if noiommu.exists() {
                node = noiommu;
                kind = sys::VFIO_NOIOMMU_IOMMU;
            }
        }
        let kind_name = if kind == sys::VFIO_NOIOMMU_IOMMU {
            "noiommu"
        } else {
            "type1v2"
        };
        let container = open_rw(Path::new("/dev/vfio/vfio"))?;
        let version =
            sys::api_version(&container).map_err(|e| context("VFIO_GET_API_VERSION", e))?;
        if version != sys::VFIO_API_VERSION {
            return Err(io::Error::other(format!(
                "/dev/vfio/vfio speaks VFIO API {version}, expected {}",
                sys::VFIO_API_VERSION
            )));
        }
        if !sys::check_extension(&container, kind)
            .map_err(|e| context("VFIO_CHECK_EXTENSION", e))?
        {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                if kind == sys::VFIO_NOIOMMU_IOMMU {
                    "the VFIO container lacks the noiommu IOMMU (vfio.enable_unsafe_noiommu_mode=1)"
                } else {
                    "the VFIO container lacks the type1v2 IOMMU (load vfio_iommu_type1)"
                },
            ));
        }
        let group_file = open_rw(&node)?;
        let flags =
            sys::group_flags(&group_file).map_err(|e| context("VFIO_GROUP_GET_STATUS", e))?;
        if flags & sys::VFIO_GROUP_FLAGS_VIABLE == 0 {
            return Err(io::Error::other(format!(
                "IOMMU group {group} is not viable: bind every device in {} to a VFIO driver",
                group_dir.display()
            )));
        }
        sys::group_set_container(&group_file, &container)
            .map_err(|e| context(format!("VFIO_GROUP_SET_CONTAINER (group {group})"), e))?;
        sys::set_iommu(&container, kind)
            .map_err(|e| context(format!("VFIO_SET_IOMMU {kind_name}"), e))?;
        let cname = CString::new(name.clone()).map_err(io::Error::other)?;
        let device = sys::group_device_fd(&group_file, &cname)
            .map_err(|e| context(format!("VFIO_GROUP_GET_DEVICE_FD {name:?}"), e))?;
        Ok((
            device,
            IommuContext::Group {
                _container: container,
                _group: group_file,
                group,
            },
        ))
    }

    fn open_cdev(node: &Path) -> io::Result<(File, IommuContext)> {
        let device = open_rw(node)?;
        let iommufd = open_rw(Path::new("/dev/iommu"))?;
        sys::bind_iommufd(&device, &iommufd).map_err(|e| context("VFIO_DEVICE_BIND_IOMMUFD", e))?;
        let ioas = sys::ioas_alloc(&iommufd).map_err(|e| context("IOMMU_IOAS_ALLOC", e))?;
        sys::attach_pt(&device, ioas).map_err(|e| context("VFIO_DEVICE_ATTACH_IOMMUFD_PT", e))?;
        Ok((
            device,
            IommuContext::Cdev {
                _iommufd: iommufd,
                node: node.to_owned(),
            },
        ))
    }

    /// The device's sysfs directory.
    pub fn sysfs(&self) -> &Path {
        &self.sysfs
    }

    /// Opts in to PRECOPY_INFOv2 (`VFIO_PRECOPY_INFO_REINIT`) when the kernel
    /// knows it; returns whether it is on.
    ///
    /// # Errors
    /// The kernel knows the feature but refused it.
    pub fn enable_precopy_info_v2(&mut self) -> io::Result<bool> {
        if !sys::probe_precopy_info_v2(&self.device) {
            return Ok(false);
        }
        sys::enable_precopy_info_v2(&self.device)?;
        Ok(true)
    }

    /// A figure our kernel module publishes under `<sysfs>/mlx5vf/` (digest,
    /// peak buffer bytes, live objects); `None` for other drivers.
    pub fn module_attribute(&self, name: &str) -> Option<String> {
        fs::read_to_string(self.sysfs.join("mlx5vf").join(name))
            .ok()
            .map(|s| s.trim().to_owned())
    }
}

impl MigrationDevice for VfioDevice {
    fn describe(&self) -> String {
        match &self.context {
            IommuContext::Group { group, .. } => format!("{} (VFIO group {group})", self.spec),
            IommuContext::Cdev { node, .. } => format!("{} ({})", self.spec, node.display()),
        }
    }

    fn migration_flags(&self) -> MigrationFlags {
        self.flags
    }

    fn state(&mut self) -> io::Result<MigState> {
        let raw = sys::get_state(&self.device)?;
        MigState::from_raw(raw).map_err(|_| {
            io::Error::other(format!("the kernel reported unknown migration state {raw}"))
        })
    }

    fn set_state(&mut self, target: MigState) -> io::Result<Option<Box<dyn DataFile>>> {
        let file = sys::set_state(&self.device, target.raw())?;
        Ok(file.map(|f| Box::new(VfioFile::new(f)) as Box<dyn DataFile>))
    }

    fn data_size(&mut self) -> io::Result<u64> {
        sys::data_size(&self.device)
    }

    fn reset(&mut self) -> io::Result<()> {
        sys::device_reset(&self.device)
    }

    fn stream_format(&self) -> StreamFormat {
        self.format
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        let s = VfioSpec::parse("vfio-mig:/sys/bus/pci/devices/0000:3b:00.2").unwrap();
        assert_eq!(s.device, "/sys/bus/pci/devices/0000:3b:00.2");
        assert_eq!(s.iommu, IommuPath::Auto);
        let s = VfioSpec::parse("vfio-mig:/dev/vfio/devices/vfio3,iommu=cdev").unwrap();
        assert_eq!(s.iommu, IommuPath::Cdev);
        for bad in [
            "vfio-mig:",
            "vfio-mig:,iommu=group",
            "vfio-mig:x,iommu=smmu",
            "vfio-mig:x,y=z",
            "sim:",
        ] {
            assert!(VfioSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_missing_device_names_where_it_looked() {
        let e = resolve_sysfs("no-such-device-4711").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(
            e.to_string()
                .contains("/sys/bus/{pci,platform,mdev}/devices"),
            "{e}"
        );
        let spec = VfioSpec::parse("vfio-mig:/sys/bus/pci/devices/none").unwrap();
        let e = VfioDevice::open("x", &spec).err().unwrap();
        assert!(e.to_string().contains("/sys/bus/pci/devices/none"), "{e}");
    }

    /// A vfio-dev entry without its /dev node (a noiommu device: Linux
    /// creates no character device for it) is not a cdev to open.
    #[test]
    fn a_vfio_dev_entry_without_a_node_is_no_cdev() {
        let dir = std::env::temp_dir().join(format!("mlx5vf-cdev-{}", std::process::id()));
        let name = "vfio4294967295";
        fs::create_dir_all(dir.join("vfio-dev").join(name)).unwrap();
        let found = cdev_node(&dir);
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(found, None);
    }

    /// A real device without a VFIO driver (no IOMMU group link under a
    /// non-VFIO sysfs node) is refused with the step named.
    #[test]
    fn a_device_without_vfio_is_refused_clearly() {
        let spec = VfioSpec::parse("vfio-mig:/sys/devices/system/cpu/cpu0").unwrap();
        let e = VfioDevice::open("x", &spec).err().unwrap();
        let m = e.to_string();
        assert!(m.contains("iommu_group"), "{m}");
        let spec = VfioSpec::parse("vfio-mig:/sys/devices/system/cpu/cpu0,iommu=cdev").unwrap();
        let e = VfioDevice::open("x", &spec).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::Unsupported, "{e}");
        assert!(e.to_string().contains("iommu=group"), "{e}");
    }
}
