//! Adopting the descriptors a VMM already holds: a VFIO device fd and the
//! container or iommufd that holds its IOMMU context.

use std::fs;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use rustix::fs::FileType;

use super::{
    Errno, ErrorKind, FdSpec, IommuContext, IommuFdNumber, Step, Target, VfioDevice, VfioError, sys,
};

/// The IOMMU context a device fd comes with, as the caller holds it.
#[derive(Clone, Copy, Debug)]
pub enum IommuFd<'a> {
    /// The VFIO container (`/dev/vfio/vfio`, or iommufd's compatible
    /// container) the device's group is attached to: the group/container
    /// path.
    Container(BorrowedFd<'a>),
    /// The iommufd (`/dev/iommu`) the device's character device is bound
    /// to: the cdev path.
    Iommufd(BorrowedFd<'a>),
}

/// Our duplicate of the caller's IOMMU fd.
enum OwnedIommu {
    Container(OwnedFd),
    Iommufd(OwnedFd),
}

/// The lowest number a duplicate gets: above stdin, stdout and stderr.
const FIRST_DUP_FD: RawFd = 3;

/// A duplicate of `fd` (close-on-exec); `step` names which fd failed.
fn duplicate(name: &str, step: Step, fd: BorrowedFd<'_>) -> Result<OwnedFd, VfioError> {
    rustix::io::fcntl_dupfd_cloexec(fd, FIRST_DUP_FD)
        .map_err(|e| VfioError::new(name, step, ErrorKind::Os(e)).on(Target::Fd(fd.as_raw_fd())))
}

/// A duplicate of fd number `raw`, inherited from the parent process.
fn inherited(name: &str, step: Step, raw: RawFd) -> Result<OwnedFd, VfioError> {
    sys::dup_inherited(raw)
        .map_err(|e| VfioError::new(name, step, ErrorKind::Os(e)).on(Target::Fd(raw)))
}

/// What the character device with number `rdev` is in sysfs: the
/// directory of the device a VFIO character device (`vfio-dev/vfioN`)
/// stands for; `None` for any other character device, or without sysfs.
fn vfio_cdev_sysfs(rdev: rustix::fs::Dev) -> Option<PathBuf> {
    let class_dev = Path::new("/sys/dev/char").join(format!(
        "{}:{}",
        rustix::fs::major(rdev),
        rustix::fs::minor(rdev)
    ));
    let class_dev = fs::canonicalize(class_dev).ok()?;
    let parent_dir = class_dev.parent()?.file_name()?;
    if parent_dir != "vfio-dev" {
        return None;
    }
    fs::canonicalize(class_dev.join("device")).ok()
}

impl VfioDevice {
    /// Adopts a device fd a VMM holds, with the container or iommufd that
    /// holds its IOMMU context, and checks what it was given.
    ///
    /// # Ownership
    /// Adoption borrows: the caller's descriptors stay the caller's, open
    /// and unchanged. The device keeps duplicates (`F_DUPFD_CLOEXEC`: the
    /// same open files under other numbers) and closes only those when it
    /// drops, so it never closes a VMM's device, container or iommufd
    /// behind its back, and a VMM that closes its own early does not pull
    /// the device out from under a transfer. The kernel closes the device
    /// (`close_device`: data sessions end; vfio-pci resets the function at
    /// its next open) when the last descriptor of the file closes, the
    /// caller's or ours.
    ///
    /// Both descriptors name one open device, so its migration state is
    /// shared: while this device drives the migration uAPI the VMM must
    /// not (it may go on using the device's regions and interrupts, as
    /// QEMU does during PRE_COPY).
    ///
    /// # DMA
    /// Nothing is mapped or unmapped: migration needs no mapping from its
    /// user (see the [module docs](super)), and the VMM's mappings of guest
    /// memory stay as they are.
    ///
    /// # Checks
    /// In order, each failure a [`VfioError`] naming its step:
    /// 1. [`Step::DupDeviceFd`], [`Step::DupContainerFd`] /
    ///    [`Step::DupIommufd`]: the descriptors are open;
    /// 2. [`Step::InspectDeviceFd`]: `fstat` (is it a character device);
    /// 3. [`Step::DeviceInfo`]: `VFIO_DEVICE_GET_INFO` answers, so the fd
    ///    is a VFIO device its user may use ([`ErrorKind::NotVfioDevice`]
    ///    with the kernel's errno, `ENOTTY` for a pipe or a plain file;
    ///    [`ErrorKind::NotBound`] for a VFIO character device not yet bound
    ///    to an iommufd);
    /// 4. [`Step::MatchIommu`]: a VFIO character device comes with an
    ///    iommufd, never a container ([`ErrorKind::CdevWithContainer`]);
    /// 5. [`Step::ContainerCheck`]: the container answers
    ///    `VFIO_GET_API_VERSION` with VFIO's version 0
    ///    ([`ErrorKind::NotContainer`], [`ErrorKind::ApiVersion`]), or
    ///    [`Step::IommufdCheck`]: the iommufd answers `IOMMU_OPTION`
    ///    ([`ErrorKind::NotIommufd`]);
    /// 6. [`Step::ProbeMigration`], [`Step::GetMigration`]: the driver
    ///    offers migration ([`ErrorKind::NoMigration`]) with `STOP_COPY`
    ///    ([`ErrorKind::NoStopCopy`]).
    ///
    /// Not checked: that the container or iommufd is the very one the
    /// device is attached to, for which the uAPI has no query. The device
    /// fd itself keeps its own context alive (a group-path device fd holds
    /// its group, which holds its container; a bound character device
    /// holds its iommufd), so migration works either way; the IOMMU fd is
    /// held for the context's sake and for [`iommu_fd`](Self::iommu_fd).
    ///
    /// The device is named in errors and summaries as the spec that
    /// would adopt the same numbers, e.g. `vfio-fd:5,container=4`.
    ///
    /// # Errors
    /// A [`VfioError`] as listed above; the caller's descriptors are left
    /// as they were.
    pub fn adopt(device: BorrowedFd<'_>, iommu: IommuFd<'_>) -> Result<Self, VfioError> {
        let numbers = FdSpec {
            device: device.as_raw_fd(),
            iommu: match iommu {
                IommuFd::Container(fd) => IommuFdNumber::Container(fd.as_raw_fd()),
                IommuFd::Iommufd(fd) => IommuFdNumber::Iommufd(fd.as_raw_fd()),
            },
        };
        let name = numbers.to_spec();
        let device = duplicate(&name, Step::DupDeviceFd, device)?;
        let iommu = match iommu {
            IommuFd::Container(fd) => {
                OwnedIommu::Container(duplicate(&name, Step::DupContainerFd, fd)?)
            }
            IommuFd::Iommufd(fd) => OwnedIommu::Iommufd(duplicate(&name, Step::DupIommufd, fd)?),
        };
        Self::adopt_owned(name, device, iommu)
    }

    /// Adopts descriptors this process inherited from its parent, by
    /// number (a `vfio-fd:` spec), as [`adopt`](Self::adopt) does: the
    /// inherited numbers stay open and unchanged; the device holds
    /// duplicates.
    ///
    /// # Errors
    /// As [`adopt`](Self::adopt); a number that is not open fails at its
    /// `Dup*` step with `EBADF`.
    pub fn inherit(spec: &FdSpec) -> Result<Self, VfioError> {
        let name = spec.to_spec();
        let device = inherited(&name, Step::DupDeviceFd, spec.device)?;
        let iommu = match spec.iommu {
            IommuFdNumber::Container(n) => {
                OwnedIommu::Container(inherited(&name, Step::DupContainerFd, n)?)
            }
            IommuFdNumber::Iommufd(n) => {
                OwnedIommu::Iommufd(inherited(&name, Step::DupIommufd, n)?)
            }
        };
        Self::adopt_owned(name, device, iommu)
    }

    /// The checks of [`adopt`](Self::adopt) on our own duplicates.
    fn adopt_owned(name: String, device: OwnedFd, iommu: OwnedIommu) -> Result<Self, VfioError> {
        let err = |step, kind| VfioError::new(&name, step, kind);
        let stat =
            rustix::fs::fstat(&device).map_err(|e| err(Step::InspectDeviceFd, ErrorKind::Os(e)))?;
        let char_device = FileType::from_raw_mode(stat.st_mode) == FileType::CharacterDevice;
        #[allow(clippy::useless_conversion)] // `st_rdev`'s type differs per architecture.
        let sysfs = char_device
            .then(|| vfio_cdev_sysfs(rustix::fs::Dev::from(stat.st_rdev)))
            .flatten();
        let info = sys::device_info(&device).map_err(|e| {
            // vfio_device_fops_unl_ioctl(): a VFIO character device refuses
            // every ioctl but BIND_IOMMUFD with EINVAL until it is bound.
            // Other character devices may say EINVAL too (the container
            // /dev/vfio/vfio does before VFIO_SET_IOMMU): only one sysfs
            // lists as a vfio-dev is taken for an unbound VFIO cdev.
            let unbound = e == Errno::INVAL && sysfs.is_some();
            err(
                Step::DeviceInfo,
                if unbound {
                    ErrorKind::NotBound
                } else {
                    ErrorKind::NotVfioDevice(e)
                },
            )
        })?;
        let context = match iommu {
            OwnedIommu::Container(_) if char_device => {
                return Err(err(Step::MatchIommu, ErrorKind::CdevWithContainer));
            }
            OwnedIommu::Container(container) => {
                let version = sys::api_version(&container)
                    .map_err(|e| err(Step::ContainerCheck, ErrorKind::NotContainer(e)))?;
                if version != sys::VFIO_API_VERSION {
                    return Err(err(Step::ContainerCheck, ErrorKind::ApiVersion(version)));
                }
                IommuContext::AdoptedContainer { container }
            }
            OwnedIommu::Iommufd(iommufd) => {
                sys::iommufd_rlimit_mode(&iommufd)
                    .map_err(|e| err(Step::IommufdCheck, ErrorKind::NotIommufd(e)))?;
                IommuContext::AdoptedIommufd { iommufd }
            }
        };
        Self::finish(name, sysfs, device, context, Some(info.flags))
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    /// A pipe: a file that is surely not VFIO.
    fn pipe() -> (OwnedFd, OwnedFd) {
        rustix::pipe::pipe().unwrap()
    }

    /// The fd still works: the failed adoption closed nothing of ours.
    fn still_open(fd: &OwnedFd) {
        rustix::io::fcntl_getfd(fd).unwrap();
    }

    #[test]
    fn a_pipe_is_not_a_vfio_device() {
        let (device, _w) = pipe();
        let (container, _w2) = pipe();
        let e = VfioDevice::adopt(device.as_fd(), IommuFd::Container(container.as_fd()))
            .err()
            .unwrap();
        assert_eq!(e.step(), Step::DeviceInfo);
        assert_eq!(e.kind(), ErrorKind::NotVfioDevice(Errno::NOTTY));
        assert_eq!(e.errno(), Some(Errno::NOTTY));
        assert_eq!(
            e.to_string(),
            format!(
                "vfio-fd:{},container={}: VFIO_DEVICE_GET_INFO: not a VFIO device fd (ENOTTY \
                 (errno 25: Inappropriate ioctl for device))",
                device.as_raw_fd(),
                container.as_raw_fd()
            )
        );
        still_open(&device);
        still_open(&container);
    }

    /// /dev/null is a character device, but not a VFIO one: ENOTTY, not
    /// "not bound".
    #[test]
    fn dev_null_is_not_a_vfio_device() {
        let null = fs::File::open("/dev/null").unwrap();
        let (iommufd, _w) = pipe();
        let e = VfioDevice::adopt(null.as_fd(), IommuFd::Iommufd(iommufd.as_fd()))
            .err()
            .unwrap();
        assert_eq!(e.step(), Step::DeviceInfo);
        assert_eq!(e.kind(), ErrorKind::NotVfioDevice(Errno::NOTTY));
        assert!(e.to_string().contains(",iommufd="), "{e}");
        assert_eq!(
            vfio_cdev_sysfs(rustix::fs::fstat(&null).unwrap().st_rdev),
            None
        );
    }

    /// Inherited numbers: one that is not open fails at its own step with
    /// EBADF and a hint; the spec names the device in every message.
    #[test]
    fn inherited_numbers_that_are_not_open_are_ebadf() {
        let spec = FdSpec::parse("vfio-fd:1000000,container=1000001").unwrap();
        let e = VfioDevice::inherit(&spec).err().unwrap();
        assert_eq!(e.step(), Step::DupDeviceFd);
        assert_eq!(e.errno(), Some(Errno::BADF));
        assert_eq!(e.target(), Some(&Target::Fd(1_000_000)));
        assert_eq!(
            e.to_string(),
            "vfio-fd:1000000,container=1000001: duplicate the device fd 1000000: EBADF (errno \
             9: Bad file descriptor); is fd 1000000 open in this process (inherited from its \
             parent)?"
        );
        let (device, _w) = pipe();
        let spec =
            FdSpec::parse(&format!("vfio-fd:{},iommufd=1000001", device.as_raw_fd())).unwrap();
        let e = VfioDevice::inherit(&spec).err().unwrap();
        assert_eq!((e.step(), e.errno()), (Step::DupIommufd, Some(Errno::BADF)));
        let spec =
            FdSpec::parse(&format!("vfio-fd:{},container=1000001", device.as_raw_fd())).unwrap();
        let e = VfioDevice::inherit(&spec).err().unwrap();
        assert_eq!(
            (e.step(), e.errno()),
            (Step::DupContainerFd, Some(Errno::BADF))
        );
        still_open(&device);
    }

    /// Past the device checks, the IOMMU fd is checked for what it was
    /// given as. No VFIO device exists here, so `adopt_owned`'s later
    /// checks are reached through their own functions: a pipe is neither
    /// a container nor an iommufd, with the kernel's errno.
    #[test]
    fn a_pipe_is_neither_container_nor_iommufd() {
        let (fd, _w) = pipe();
        assert_eq!(sys::api_version(&fd), Err(Errno::NOTTY));
        assert_eq!(sys::iommufd_rlimit_mode(&fd), Err(Errno::NOTTY));
        let e = VfioError::new(
            "vfio-fd:5,container=4",
            Step::ContainerCheck,
            ErrorKind::NotContainer(Errno::NOTTY),
        );
        assert_eq!(
            e.to_string(),
            "vfio-fd:5,container=4: VFIO_GET_API_VERSION on the container fd: not a VFIO \
             container (ENOTTY (errno 25: Inappropriate ioctl for device))"
        );
    }
}
