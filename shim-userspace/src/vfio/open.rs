//! Opening a device the way QEMU does from a `vfio-mig:` spec: find it in
//! sysfs, then either the group/container path or the iommufd cdev path.

use std::ffi::CString;
use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

use super::error::errno_of_io;
use super::{
    Errno, ErrorKind, IommuContext, IommuPath, IommuType, Step, Target, VfioDevice, VfioError,
    VfioSpec, sys,
};

/// Buses searched for a bare device name, in order.
pub const BUSES: [&str; 3] = ["pci", "platform", "mdev"];
/// Where sysfs is.
const SYSFS: &str = "/sys";

/// The steps of one `open`: every error names the spec.
struct Opener<'a> {
    spec: &'a str,
}

impl Opener<'_> {
    fn err(&self, step: Step, kind: ErrorKind) -> VfioError {
        VfioError::new(self.spec, step, kind)
    }

    /// The error of `step` for a kernel errno.
    fn os(&self, step: Step) -> impl FnOnce(Errno) -> VfioError + '_ {
        move |e| self.err(step, ErrorKind::Os(e))
    }

    /// The error of `step` on `path` for a failed `std::fs` call.
    fn io(&self, step: Step, path: &Path) -> impl FnOnce(std::io::Error) -> VfioError + '_ {
        let target = Target::Path(path.to_owned());
        move |e| self.err(step, ErrorKind::Os(errno_of_io(&e))).on(target)
    }

    /// Opens `path` read-write, close-on-exec.
    fn open_rw(&self, step: Step, path: &Path) -> Result<OwnedFd, VfioError> {
        rustix::fs::open(path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()).map_err(|e| {
            self.err(step, ErrorKind::Os(e))
                .on(Target::Path(path.to_owned()))
        })
    }

    /// The file name of a path the kernel gave, as text.
    fn file_name(&self, step: Step, p: &Path) -> Result<String, VfioError> {
        p.file_name()
            .and_then(|n| n.to_str())
            .map(str::to_owned)
            .ok_or_else(|| {
                self.err(step, ErrorKind::BadName)
                    .on(Target::Path(p.to_owned()))
            })
    }

    /// The sysfs directory of the device a spec names.
    fn resolve_sysfs(&self, device: &str) -> Result<PathBuf, VfioError> {
        let step = Step::ResolveDevice;
        if let Some(node) = device.strip_prefix("/dev/vfio/devices/") {
            let link = Path::new(SYSFS)
                .join("class/vfio-dev")
                .join(node)
                .join("device");
            return fs::canonicalize(&link).map_err(self.io(step, &link));
        }
        if device.contains('/') {
            return fs::canonicalize(device).map_err(self.io(step, Path::new(device)));
        }
        for bus in BUSES {
            let p = Path::new(SYSFS)
                .join("bus")
                .join(bus)
                .join("devices")
                .join(device);
            if p.exists() {
                return fs::canonicalize(&p).map_err(self.io(step, &p));
            }
        }
        Err(self.err(step, ErrorKind::NoSuchDevice))
    }

    fn group(&self, sysfs: &Path) -> Result<(OwnedFd, IommuContext), VfioError> {
        let link = sysfs.join("iommu_group");
        let group_dir = fs::read_link(&link).map_err(self.io(Step::ReadIommuGroup, &link))?;
        let group = self.file_name(Step::ReadIommuGroup, &group_dir)?;
        let name = self.file_name(Step::ResolveDevice, sysfs)?;
        // noiommu groups have their own node name, and their container
        // takes only the noiommu IOMMU (VFIO_SET_IOMMU type1v2 is ENODEV).
        let mut node = Path::new("/dev/vfio").join(&group);
        let mut kind = IommuType::Type1v2;
        if !node.exists() {
            let noiommu = Path::new("/dev/vfio").join(format!("noiommu-{group}"));
            if noiommu.exists() {
                node = noiommu;
                kind = IommuType::NoIommu;
            }
        }
        let raw_kind = match kind {
            IommuType::Type1v2 => sys::VFIO_TYPE1V2_IOMMU,
            IommuType::NoIommu => sys::VFIO_NOIOMMU_IOMMU,
        };
        // The group first: a device that is not bound to a VFIO driver
        // has no group node, and that is the error to report.
        let group_fd = self.open_rw(Step::OpenGroup, &node)?;
        let flags = sys::group_flags(&group_fd)
            .map_err(|e| self.os(Step::GroupStatus)(e).on(Target::Path(node.clone())))?;
        if flags & sys::VFIO_GROUP_FLAGS_VIABLE == 0 {
            return Err(self
                .err(Step::GroupStatus, ErrorKind::GroupNotViable)
                .on(Target::Path(group_dir)));
        }
        let container = self.open_rw(Step::OpenContainer, Path::new("/dev/vfio/vfio"))?;
        let version = sys::api_version(&container).map_err(self.os(Step::ApiVersion))?;
        if version != sys::VFIO_API_VERSION {
            return Err(self.err(Step::ApiVersion, ErrorKind::ApiVersion(version)));
        }
        if !sys::check_extension(&container, raw_kind).map_err(self.os(Step::CheckExtension))? {
            return Err(self.err(Step::CheckExtension, ErrorKind::IommuTypeMissing(kind)));
        }
        sys::group_set_container(&group_fd, &container)
            .map_err(|e| self.os(Step::GroupSetContainer)(e).on(Target::Path(node.clone())))?;
        sys::set_iommu(&container, raw_kind).map_err(self.os(Step::SetIommu))?;
        // A sysfs name never holds a NUL byte; if one did, the kernel
        // could not have named a device with it.
        let cname =
            CString::new(name).map_err(|_| self.err(Step::GroupGetDeviceFd, ErrorKind::BadName))?;
        let device = sys::group_device_fd(&group_fd, &cname)
            .map_err(|e| self.os(Step::GroupGetDeviceFd)(e).on(Target::Path(node)))?;
        Ok((
            device,
            IommuContext::Group {
                container,
                _group: group_fd,
                group,
            },
        ))
    }

    fn cdev(&self, node: &Path) -> Result<(OwnedFd, IommuContext), VfioError> {
        let device = self.open_rw(Step::OpenCdev, node)?;
        let iommufd = self.open_rw(Step::OpenIommufd, Path::new("/dev/iommu"))?;
        sys::bind_iommufd(&device, &iommufd).map_err(self.os(Step::BindIommufd))?;
        // An empty address space: migration maps nothing (module docs).
        let ioas = sys::ioas_alloc(&iommufd).map_err(self.os(Step::IoasAlloc))?;
        sys::attach_pt(&device, ioas).map_err(self.os(Step::AttachIoas))?;
        Ok((
            device,
            IommuContext::Cdev {
                iommufd,
                node: node.to_owned(),
            },
        ))
    }
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

impl VfioDevice {
    /// Opens the device a spec names (see the [module docs](super)); `spec`
    /// is how errors and summaries name it.
    ///
    /// # Errors
    /// A [`VfioError`] naming the step: the spec does not resolve to a
    /// device, the kernel refused a step, or the device does not offer
    /// migration with `STOP_COPY`.
    pub fn open(spec: &str, parsed: &VfioSpec) -> Result<Self, VfioError> {
        let opener = Opener { spec };
        let sysfs = opener.resolve_sysfs(&parsed.device)?;
        let cdev = cdev_node(&sysfs).filter(|_| Path::new("/dev/iommu").exists());
        let (device, context) = match (parsed.iommu, cdev) {
            (IommuPath::Auto | IommuPath::Cdev, Some(node)) => opener.cdev(&node)?,
            (IommuPath::Cdev, None) => {
                return Err(opener
                    .err(Step::OpenCdev, ErrorKind::NoCdev)
                    .on(Target::Path(sysfs)));
            }
            (IommuPath::Auto | IommuPath::Group, _) => opener.group(&sysfs)?,
        };
        Self::finish(spec.to_owned(), Some(sysfs), device, context, None)
    }
}

/// A device opened for a driver that drives it itself (`vfio-pf:`): its
/// fd, and what DMA mappings go into.
pub(crate) struct OpenedPf {
    /// The device's sysfs directory.
    pub(crate) sysfs: PathBuf,
    /// The VFIO device fd (regions, config space).
    pub(crate) device: OwnedFd,
    /// Where its DMA mappings go.
    pub(crate) dma: PfDma,
}

/// The IOMMU context of an [`OpenedPf`].
pub(crate) enum PfDma {
    /// A type1v2 container (the group is kept open with it).
    Container {
        /// `/dev/vfio/vfio`, set to type1v2.
        container: OwnedFd,
        /// `/dev/vfio/GROUP`.
        _group: OwnedFd,
    },
    /// An iommufd with the IOAS the device is attached to.
    Iommufd {
        /// `/dev/iommu`.
        iommufd: OwnedFd,
        /// The IOAS.
        ioas: u32,
    },
}

/// The sysfs directory of the device `device` names (as a `vfio-mig:`
/// device), without opening anything.
///
/// # Errors
/// A [`VfioError`] at [`Step::ResolveDevice`].
pub(crate) fn resolve_pf(spec: &str, device: &str) -> Result<PathBuf, VfioError> {
    Opener { spec }.resolve_sysfs(device)
}

/// The IOMMU group of the device at `sysfs`, if VFIO made it a noiommu
/// group, found from names alone: such a group's node is
/// `<dev_vfio>/noiommu-N` instead of `<dev_vfio>/N`. (Its sysfs name,
/// `vfio-noiommu`, does not tell: VFIO gives that name to the groups of
/// emulated-IOMMU devices too, such as the `mlx5vf-pfsim` PFs, whose node
/// is `N`.)
fn noiommu_group_in(sysfs: &Path, dev_vfio: &Path) -> Option<u32> {
    let link = fs::read_link(sysfs.join("iommu_group")).ok()?;
    let group = link.file_name()?.to_str()?;
    let noiommu =
        !dev_vfio.join(group).exists() && dev_vfio.join(format!("noiommu-{group}")).exists();
    // The kernel numbers its groups; a name that is no number is no group.
    noiommu.then(|| group.parse().ok()).flatten()
}

/// Opens the device at `sysfs` (from [`resolve_pf`]) for a driver of its
/// own, by `iommu`'s path: what the `vfio-mig:` open does, keeping the
/// container or the IOAS for DMA mappings. A noiommu group is refused
/// before anything is opened: a device without an IOMMU must not be given
/// DMA memory by IOVA.
///
/// # Errors
/// A [`VfioError`] naming the step.
pub(crate) fn open_pf(spec: &str, sysfs: PathBuf, iommu: IommuPath) -> Result<OpenedPf, VfioError> {
    let opener = Opener { spec };
    if let Some(group) = noiommu_group_in(&sysfs, Path::new("/dev/vfio")) {
        return Err(opener.err(Step::CheckIommuGroup, ErrorKind::NoIommuGroup(group)));
    }
    let cdev = cdev_node(&sysfs).filter(|_| Path::new("/dev/iommu").exists());
    let dma = match (iommu, cdev) {
        (IommuPath::Auto | IommuPath::Cdev, Some(node)) => {
            let device = opener.open_rw(Step::OpenCdev, &node)?;
            let iommufd = opener.open_rw(Step::OpenIommufd, Path::new("/dev/iommu"))?;
            sys::bind_iommufd(&device, &iommufd).map_err(opener.os(Step::BindIommufd))?;
            let ioas = sys::ioas_alloc(&iommufd).map_err(opener.os(Step::IoasAlloc))?;
            sys::attach_pt(&device, ioas).map_err(opener.os(Step::AttachIoas))?;
            return Ok(OpenedPf {
                sysfs,
                device,
                dma: PfDma::Iommufd { iommufd, ioas },
            });
        }
        (IommuPath::Cdev, None) => {
            return Err(opener
                .err(Step::OpenCdev, ErrorKind::NoCdev)
                .on(Target::Path(sysfs)));
        }
        (IommuPath::Auto | IommuPath::Group, _) => opener.group(&sysfs)?,
    };
    // `group` gives only the group context; a noiommu node (noiommu-N,
    // the group turned noiommu after the check above) is refused all the
    // same, and everything opened closes.
    match dma {
        (
            device,
            IommuContext::Group {
                container,
                _group,
                group,
            },
        ) => {
            if Path::new("/dev/vfio").join(&group).exists() {
                Ok(OpenedPf {
                    sysfs,
                    device,
                    dma: PfDma::Container { container, _group },
                })
            } else {
                let n = group.parse().unwrap_or(u32::MAX);
                Err(opener.err(Step::CheckIommuGroup, ErrorKind::NoIommuGroup(n)))
            }
        }
        _ => Err(opener
            .err(Step::CheckIommuGroup, ErrorKind::NoIommuGroup(u32::MAX))
            .on(Target::Path(sysfs))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_err(spec: &str) -> VfioError {
        let parsed = VfioSpec::parse(spec).unwrap();
        VfioDevice::open(spec, &parsed).err().unwrap()
    }

    #[test]
    fn a_missing_device_names_where_it_looked() {
        let e = open_err("vfio-mig:no-such-device-4711");
        assert_eq!(e.step(), Step::ResolveDevice);
        assert_eq!(e.kind(), ErrorKind::NoSuchDevice);
        assert_eq!(
            e.to_string(),
            "vfio-mig:no-such-device-4711: find the device in sysfs: no such device under \
             /sys/bus/{pci,platform,mdev}/devices"
        );
        let e = open_err("vfio-mig:/sys/bus/pci/devices/none");
        assert_eq!(e.step(), Step::ResolveDevice);
        assert_eq!(e.errno(), Some(Errno::NOENT));
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
        let e = open_err("vfio-mig:/sys/devices/system/cpu/cpu0");
        assert_eq!(e.step(), Step::ReadIommuGroup);
        assert_eq!(e.errno(), Some(Errno::NOENT));
        assert_eq!(
            e.to_string(),
            "vfio-mig:/sys/devices/system/cpu/cpu0: read the IOMMU group link \
             /sys/devices/system/cpu/cpu0/iommu_group: ENOENT (errno 2: No such file or \
             directory); is the device bound to a VFIO driver, e.g. mlx5_vfio_pci?"
        );
        let e = open_err("vfio-mig:/sys/devices/system/cpu/cpu0,iommu=cdev");
        assert_eq!((e.step(), e.kind()), (Step::OpenCdev, ErrorKind::NoCdev));
        assert!(e.to_string().contains("iommu=group"), "{e}");
    }

    /// A noiommu group (its node is noiommu-N) is found from names alone;
    /// an emulated-IOMMU group, named `vfio-noiommu` in sysfs too but with
    /// the node N, is not one.
    #[test]
    fn a_noiommu_group_is_found_by_its_node() {
        let dir = std::env::temp_dir().join(format!("mlx5vf-noiommu-{}", std::process::id()));
        let group = dir.join("groups").join("4294967290");
        fs::create_dir_all(&group).unwrap();
        fs::write(group.join("name"), "vfio-noiommu\n").unwrap();
        let device = dir.join("device");
        fs::create_dir_all(&device).unwrap();
        std::os::unix::fs::symlink(&group, device.join("iommu_group")).unwrap();
        let dev_vfio = dir.join("dev-vfio");
        fs::create_dir_all(&dev_vfio).unwrap();
        let none = noiommu_group_in(&device, &dev_vfio);
        fs::write(dev_vfio.join("noiommu-4294967290"), "").unwrap();
        let noiommu = noiommu_group_in(&device, &dev_vfio);
        fs::remove_file(dev_vfio.join("noiommu-4294967290")).unwrap();
        fs::write(dev_vfio.join("4294967290"), "").unwrap();
        let emulated = noiommu_group_in(&device, &dev_vfio);
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(none, None, "no node at all: not for this check to say");
        assert_eq!(noiommu, Some(4_294_967_290));
        assert_eq!(
            emulated, None,
            "an emulated-IOMMU group is no noiommu group"
        );
    }

    /// `vfio-pf` refuses a noiommu group with its own error, naming the
    /// group.
    #[test]
    fn the_noiommu_refusal_names_the_group() {
        let e = VfioError::new(
            "vfio-pf:x",
            Step::CheckIommuGroup,
            ErrorKind::NoIommuGroup(7),
        );
        assert_eq!(
            e.to_string(),
            "vfio-pf:x: check the IOMMU group: vfio-pf needs an IOMMU: group 7 is a noiommu group"
        );
        assert_eq!(
            std::io::Error::from(e).kind(),
            std::io::ErrorKind::Unsupported
        );
    }

    /// A device whose IOMMU group has no node under /dev/vfio (a sysfs
    /// directory made up here, its group link naming a group no machine
    /// has) fails at OpenGroup with the kernel's ENOENT, naming the node.
    #[test]
    fn a_missing_group_node_is_enoent_at_open_group() {
        let dir = std::env::temp_dir().join(format!("mlx5vf-group-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink(
            "../../kernel/iommu_groups/4294967295",
            dir.join("iommu_group"),
        )
        .unwrap();
        let spec = format!("vfio-mig:{}", dir.display());
        let e = open_err(&spec);
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(e.step(), Step::OpenGroup, "{e}");
        assert_eq!(e.errno(), Some(Errno::NOENT));
        assert_eq!(e.kind(), ErrorKind::Os(Errno::NOENT));
        assert_eq!(
            e.target(),
            Some(&Target::Path("/dev/vfio/4294967295".into()))
        );
        assert_eq!(
            e.to_string(),
            format!(
                "{spec}: open the IOMMU group /dev/vfio/4294967295: ENOENT (errno 2: No such \
                 file or directory); is the device bound to a VFIO driver, e.g. mlx5_vfio_pci?"
            )
        );
    }
}
