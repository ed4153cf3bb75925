//! The VFIO client's error: which step failed, on which device, and why
//! (the kernel's errno, or a check of ours), as one line.

use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::path::PathBuf;

pub use rustix::io::Errno;

/// What the VFIO client was doing when it failed: one value per system
/// call or check, so a caller can branch on it and a message names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Step {
    /// Finding the device's sysfs directory from the spec.
    ResolveDevice,
    /// Reading `<sysfs>/iommu_group`.
    ReadIommuGroup,
    /// Opening `/dev/vfio/vfio`.
    OpenContainer,
    /// `VFIO_GET_API_VERSION` on the container.
    ApiVersion,
    /// `VFIO_CHECK_EXTENSION` on the container.
    CheckExtension,
    /// Checking the device's IOMMU group in sysfs (a driver that gives
    /// the device DMA memory needs a real IOMMU).
    CheckIommuGroup,
    /// Opening `/dev/vfio/GROUP`.
    OpenGroup,
    /// `VFIO_GROUP_GET_STATUS`.
    GroupStatus,
    /// `VFIO_GROUP_SET_CONTAINER`.
    GroupSetContainer,
    /// `VFIO_SET_IOMMU`.
    SetIommu,
    /// `VFIO_GROUP_GET_DEVICE_FD`.
    GroupGetDeviceFd,
    /// Opening `/dev/vfio/devices/vfioN`.
    OpenCdev,
    /// Opening `/dev/iommu`.
    OpenIommufd,
    /// `VFIO_DEVICE_BIND_IOMMUFD`.
    BindIommufd,
    /// `IOMMU_IOAS_ALLOC`.
    IoasAlloc,
    /// `VFIO_DEVICE_ATTACH_IOMMUFD_PT`.
    AttachIoas,
    /// Duplicating an adopted device fd (`F_DUPFD_CLOEXEC`).
    DupDeviceFd,
    /// Duplicating an adopted container fd.
    DupContainerFd,
    /// Duplicating an adopted iommufd.
    DupIommufd,
    /// `fstat` of an adopted device fd (cdev or group path).
    InspectDeviceFd,
    /// `VFIO_DEVICE_GET_INFO`: is the fd a usable VFIO device.
    DeviceInfo,
    /// Checking the device fd against the IOMMU fd it came with.
    MatchIommu,
    /// `VFIO_GET_API_VERSION` on an adopted fd: is it a VFIO container.
    ContainerCheck,
    /// `IOMMU_OPTION` (GET of `RLIMIT_MODE`): is the fd an iommufd.
    IommufdCheck,
    /// PROBE of `VFIO_DEVICE_FEATURE_MIGRATION`.
    ProbeMigration,
    /// GET `VFIO_DEVICE_FEATURE_MIGRATION`.
    GetMigration,
    /// GET `MIG_DEVICE_STATE`.
    GetState,
    /// SET `MIG_DEVICE_STATE`.
    SetState,
    /// GET `MIG_DATA_SIZE`.
    DataSize,
    /// `VFIO_DEVICE_RESET`.
    Reset,
    /// SET `MIG_PRECOPY_INFOv2`.
    PrecopyInfoV2,
    /// PROBE of `DMA_LOGGING_START`.
    ProbeDmaLogging,
    /// SET `DMA_LOGGING_START`.
    DmaLoggingStart,
    /// GET `DMA_LOGGING_REPORT`.
    DmaLoggingReport,
    /// SET `DMA_LOGGING_STOP`.
    DmaLoggingStop,
}

impl Step {
    /// What the step does, as a message says it.
    pub fn describe(self) -> &'static str {
        match self {
            Self::ResolveDevice => "find the device in sysfs",
            Self::ReadIommuGroup => "read the IOMMU group link",
            Self::OpenContainer => "open the VFIO container",
            Self::ApiVersion => "VFIO_GET_API_VERSION",
            Self::CheckExtension => "VFIO_CHECK_EXTENSION",
            Self::CheckIommuGroup => "check the IOMMU group",
            Self::OpenGroup => "open the IOMMU group",
            Self::GroupStatus => "VFIO_GROUP_GET_STATUS",
            Self::GroupSetContainer => "VFIO_GROUP_SET_CONTAINER",
            Self::SetIommu => "VFIO_SET_IOMMU",
            Self::GroupGetDeviceFd => "VFIO_GROUP_GET_DEVICE_FD",
            Self::OpenCdev => "open the VFIO character device",
            Self::OpenIommufd => "open the iommufd",
            Self::BindIommufd => "VFIO_DEVICE_BIND_IOMMUFD",
            Self::IoasAlloc => "IOMMU_IOAS_ALLOC",
            Self::AttachIoas => "VFIO_DEVICE_ATTACH_IOMMUFD_PT",
            Self::DupDeviceFd => "duplicate the device fd",
            Self::DupContainerFd => "duplicate the container fd",
            Self::DupIommufd => "duplicate the iommufd fd",
            Self::InspectDeviceFd => "fstat the device fd",
            Self::DeviceInfo => "VFIO_DEVICE_GET_INFO",
            Self::MatchIommu => "match the device fd with its IOMMU fd",
            Self::ContainerCheck => "VFIO_GET_API_VERSION on the container fd",
            Self::IommufdCheck => "IOMMU_OPTION on the iommufd",
            Self::ProbeMigration => "PROBE VFIO_DEVICE_FEATURE_MIGRATION",
            Self::GetMigration => "GET VFIO_DEVICE_FEATURE_MIGRATION",
            Self::GetState => "GET MIG_DEVICE_STATE",
            Self::SetState => "SET MIG_DEVICE_STATE",
            Self::DataSize => "GET MIG_DATA_SIZE",
            Self::Reset => "VFIO_DEVICE_RESET",
            Self::PrecopyInfoV2 => "SET MIG_PRECOPY_INFOv2",
            Self::ProbeDmaLogging => "PROBE DMA_LOGGING_START",
            Self::DmaLoggingStart => "SET DMA_LOGGING_START",
            Self::DmaLoggingReport => "GET DMA_LOGGING_REPORT",
            Self::DmaLoggingStop => "SET DMA_LOGGING_STOP",
        }
    }

    /// Whether the step opens or finds a file (where `ENOENT` and `EACCES`
    /// mean a missing driver binding or missing permission).
    fn opens(self) -> bool {
        matches!(
            self,
            Self::ResolveDevice
                | Self::ReadIommuGroup
                | Self::OpenContainer
                | Self::OpenGroup
                | Self::OpenCdev
                | Self::OpenIommufd
        )
    }

    /// Whether the step duplicates a caller's fd.
    fn duplicates(self) -> bool {
        matches!(
            self,
            Self::DupDeviceFd | Self::DupContainerFd | Self::DupIommufd
        )
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// What a step acted on, when the device alone does not say it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A file the step opened or read.
    Path(PathBuf),
    /// A file descriptor the caller handed over (the step's description
    /// ends in "fd", so it displays as the bare number).
    Fd(RawFd),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Path(p) => write!(f, "{}", p.display()),
            Self::Fd(n) => write!(f, "{n}"),
        }
    }
}

/// The IOMMU a container was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IommuType {
    /// `VFIO_TYPE1v2_IOMMU`.
    Type1v2,
    /// `VFIO_NOIOMMU_IOMMU` (a noiommu group).
    NoIommu,
}

/// Why a step failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The kernel refused the step with this errno.
    Os(Errno),
    /// No device by that name under the buses searched.
    NoSuchDevice,
    /// The IOMMU group has a device bound to a non-VFIO driver.
    GroupNotViable,
    /// The container speaks another VFIO API version.
    ApiVersion(i32),
    /// The container does not offer the IOMMU the group needs.
    IommuTypeMissing(IommuType),
    /// `iommu=cdev` for a device with no VFIO character device.
    NoCdev,
    /// `vfio-pf:` for a device in this noiommu group: it hands the device
    /// DMA memory by IOVA, which needs an IOMMU.
    NoIommuGroup(u32),
    /// A sysfs name the kernel gave is not usable text.
    BadName,
    /// An adopted fd is not a VFIO device (the kernel's errno for
    /// `VFIO_DEVICE_GET_INFO`, `ENOTTY` for any other file).
    NotVfioDevice(Errno),
    /// An adopted VFIO character-device fd is not bound to an iommufd yet
    /// (`VFIO_DEVICE_GET_INFO` fails `EINVAL` until
    /// `VFIO_DEVICE_BIND_IOMMUFD`).
    NotBound,
    /// A VFIO character-device fd came with a container: a cdev is bound
    /// to an iommufd, never to a legacy container.
    CdevWithContainer,
    /// An adopted fd is not a VFIO container (the kernel's errno for
    /// `VFIO_GET_API_VERSION`).
    NotContainer(Errno),
    /// An adopted fd is not an iommufd (the kernel's errno for
    /// `IOMMU_OPTION`).
    NotIommufd(Errno),
    /// The driver offers no migration (`ENOTTY` on the probe).
    NoMigration,
    /// The migration flags lack `VFIO_MIGRATION_STOP_COPY`.
    NoStopCopy(u64),
    /// The kernel reported a migration state the uAPI does not define.
    UnknownState(u32),
}

/// A failed step of the VFIO client: the device (as the caller named it),
/// the step, what it acted on, and why.
///
/// Its `Display` is one line: `DEVICE: STEP [TARGET]: WHY[; HINT]`, e.g.
/// `vfio-mig:0000:3b:00.2: open the IOMMU group /dev/vfio/12: ENOENT
/// (errno 2: No such file or directory); is the device bound to a VFIO
/// driver, e.g. mlx5_vfio_pci?`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VfioError {
    device: String,
    step: Step,
    target: Option<Target>,
    kind: ErrorKind,
}

impl VfioError {
    /// An error of `step` on `device`.
    pub fn new(device: impl Into<String>, step: Step, kind: ErrorKind) -> Self {
        Self {
            device: device.into(),
            step,
            target: None,
            kind,
        }
    }

    /// The same error, naming what the step acted on.
    #[must_use]
    pub fn on(mut self, target: Target) -> Self {
        self.target = Some(target);
        self
    }

    /// The device, as the caller named it (a spec).
    pub fn device(&self) -> &str {
        &self.device
    }

    /// The step that failed.
    pub fn step(&self) -> Step {
        self.step
    }

    /// What the step acted on, when the device alone does not say.
    pub fn target(&self) -> Option<&Target> {
        self.target.as_ref()
    }

    /// Why it failed.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The kernel's errno, when the kernel refused.
    pub fn errno(&self) -> Option<Errno> {
        match self.kind {
            ErrorKind::Os(e)
            | ErrorKind::NotVfioDevice(e)
            | ErrorKind::NotContainer(e)
            | ErrorKind::NotIommufd(e) => Some(e),
            ErrorKind::NotBound => Some(Errno::INVAL),
            ErrorKind::NoMigration => Some(Errno::NOTTY),
            _ => None,
        }
    }

    /// A hint for errnos whose cause is usually outside the tool.
    fn hint(&self) -> Option<String> {
        let errno = self.errno()?;
        if self.step.duplicates() && errno == Errno::BADF {
            return Some(match &self.target {
                Some(Target::Fd(n)) => {
                    format!("is fd {n} open in this process (inherited from its parent)?")
                }
                _ => "is the fd open in this process?".to_owned(),
            });
        }
        if self.step.opens() && errno == Errno::NOENT {
            return Some("is the device bound to a VFIO driver, e.g. mlx5_vfio_pci?".to_owned());
        }
        if self.step.opens() && (errno == Errno::ACCESS || errno == Errno::PERM) {
            return Some("VFIO needs root or access to /dev/vfio".to_owned());
        }
        match (self.step, errno) {
            (Step::ProbeDmaLogging, Errno::NOTTY) => {
                return Some("the driver offers no device dirty tracking (no vfio_log_ops)".into());
            }
            (Step::DmaLoggingReport, Errno::OPNOTSUPP) => {
                return Some(
                    "the kernel's iova_bitmap is a stub: it was built without \
                     CONFIG_IOMMUFD_DRIVER"
                        .into(),
                );
            }
            (Step::DmaLoggingReport, Errno::IO) => {
                return Some(
                    "the device's tracker failed and logging has ended: take all memory as \
                     dirty"
                        .into(),
                );
            }
            _ => {}
        }
        if errno == Errno::BUSY
            && matches!(
                self.step,
                Step::OpenGroup | Step::OpenCdev | Step::GroupGetDeviceFd | Step::BindIommufd
            )
        {
            return Some("another process holds the device or group".to_owned());
        }
        None
    }
}

/// `ENOENT (errno 2: No such file or directory)`: the name, the number and
/// the C library's text, as the transfer errors print an errno.
pub fn describe_errno(errno: Errno) -> String {
    let n = errno.raw_os_error();
    let text = io::Error::from_raw_os_error(n).to_string();
    // std appends " (os error N)"; the number is said once.
    let text = text.split(" (os error").next().unwrap_or(&text);
    match errno_name(errno) {
        Some(name) => format!("{name} (errno {n}: {text})"),
        None => format!("errno {n} ({text})"),
    }
}

/// The symbolic name of the errnos a VFIO client meets. Hand-written
/// because neither std nor rustix names errnos (std and rustix give the
/// C library's text only, and the crate that does, nix, is a large
/// dependency for a table); the numbers are rustix's, right per
/// architecture.
pub fn errno_name(errno: Errno) -> Option<&'static str> {
    const NAMES: [(Errno, &str); 36] = [
        (Errno::PERM, "EPERM"),
        (Errno::NOENT, "ENOENT"),
        (Errno::SRCH, "ESRCH"),
        (Errno::INTR, "EINTR"),
        (Errno::IO, "EIO"),
        (Errno::NXIO, "ENXIO"),
        (Errno::TOOBIG, "E2BIG"),
        (Errno::BADF, "EBADF"),
        (Errno::AGAIN, "EAGAIN"),
        (Errno::NOMEM, "ENOMEM"),
        (Errno::ACCESS, "EACCES"),
        (Errno::FAULT, "EFAULT"),
        (Errno::BUSY, "EBUSY"),
        (Errno::EXIST, "EEXIST"),
        (Errno::NODEV, "ENODEV"),
        (Errno::NOTDIR, "ENOTDIR"),
        (Errno::ISDIR, "EISDIR"),
        (Errno::INVAL, "EINVAL"),
        (Errno::NFILE, "ENFILE"),
        (Errno::MFILE, "EMFILE"),
        (Errno::NOTTY, "ENOTTY"),
        (Errno::NOSPC, "ENOSPC"),
        (Errno::SPIPE, "ESPIPE"),
        (Errno::ROFS, "EROFS"),
        (Errno::PIPE, "EPIPE"),
        (Errno::RANGE, "ERANGE"),
        (Errno::NAMETOOLONG, "ENAMETOOLONG"),
        (Errno::NOSYS, "ENOSYS"),
        (Errno::LOOP, "ELOOP"),
        (Errno::NOMSG, "ENOMSG"),
        (Errno::PROTO, "EPROTO"),
        (Errno::OVERFLOW, "EOVERFLOW"),
        (Errno::OPNOTSUPP, "EOPNOTSUPP"),
        (Errno::NOTCONN, "ENOTCONN"),
        (Errno::TIMEDOUT, "ETIMEDOUT"),
        (Errno::REMOTEIO, "EREMOTEIO"),
    ];
    NAMES
        .iter()
        .find(|(e, _)| *e == errno)
        .map(|(_, name)| *name)
}

/// The errno of a failed `std` file operation. Every `std::fs` call here
/// fails with the OS's errno, except a path with a NUL byte in it, which
/// std refuses as the kernel would (`EINVAL`); anything else without one
/// is reported as `EIO`.
pub(super) fn errno_of_io(e: &io::Error) -> Errno {
    match e.raw_os_error() {
        Some(n) => Errno::from_raw_os_error(n),
        None if e.kind() == io::ErrorKind::InvalidInput => Errno::INVAL,
        None => Errno::IO,
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Os(e) => f.write_str(&describe_errno(*e)),
            Self::NoSuchDevice => write!(
                f,
                "no such device under /sys/bus/{{{}}}/devices",
                super::open::BUSES.join(",")
            ),
            Self::GroupNotViable => f.write_str(
                "the IOMMU group is not viable: bind every device in it to a VFIO driver",
            ),
            Self::ApiVersion(v) => write!(
                f,
                "the container speaks VFIO API {v}, expected {}",
                super::sys::VFIO_API_VERSION
            ),
            Self::IommuTypeMissing(IommuType::Type1v2) => {
                f.write_str("the container lacks the type1v2 IOMMU (load vfio_iommu_type1)")
            }
            Self::IommuTypeMissing(IommuType::NoIommu) => f.write_str(
                "the container lacks the noiommu IOMMU (vfio.enable_unsafe_noiommu_mode=1)",
            ),
            Self::NoCdev => f.write_str(
                "no VFIO character device (needs CONFIG_VFIO_DEVICE_CDEV, CONFIG_IOMMUFD and \
                 /dev/iommu); try iommu=group",
            ),
            Self::BadName => f.write_str("the kernel gave a name that is not usable text"),
            Self::NoIommuGroup(group) => {
                write!(
                    f,
                    "vfio-pf needs an IOMMU: group {group} is a noiommu group"
                )
            }
            Self::NotVfioDevice(e) => {
                write!(f, "not a VFIO device fd ({})", describe_errno(*e))
            }
            Self::NotBound => f.write_str(
                "the VFIO character device is not bound to an iommufd \
                 (VFIO_DEVICE_BIND_IOMMUFD first; EINVAL)",
            ),
            Self::CdevWithContainer => f.write_str(
                "the device fd is a VFIO character device, which is bound to an iommufd, not a \
                 container: give iommufd=FD",
            ),
            Self::NotContainer(e) => {
                write!(f, "not a VFIO container ({})", describe_errno(*e))
            }
            Self::NotIommufd(e) => write!(f, "not an iommufd ({})", describe_errno(*e)),
            Self::NoMigration => f.write_str("the driver offers no migration (ENOTTY)"),
            Self::NoStopCopy(flags) => write!(
                f,
                "migration flags {flags:#x} lack VFIO_MIGRATION_STOP_COPY"
            ),
            Self::UnknownState(raw) => {
                write!(f, "the kernel reported unknown migration state {raw}")
            }
        }
    }
}

impl fmt::Display for VfioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.device, self.step)?;
        if let Some(target) = &self.target {
            write!(f, " {target}")?;
        }
        write!(f, ": {}", self.kind)?;
        if let Some(hint) = self.hint() {
            write!(f, "; {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for VfioError {}

/// For the [`crate::backend::MigrationDevice`] methods, which speak
/// `io::Error`: the kind follows the errno (so `WouldBlock` stays
/// `WouldBlock`), the error itself rides inside, and
/// [`crate::backend::errno_of`] finds its errno.
impl From<VfioError> for io::Error {
    fn from(e: VfioError) -> Self {
        let kind = match (e.errno(), e.kind) {
            (Some(errno), _) => Self::from_raw_os_error(errno.raw_os_error()).kind(),
            (None, ErrorKind::NoSuchDevice) => io::ErrorKind::NotFound,
            (
                None,
                ErrorKind::NoCdev
                | ErrorKind::NoStopCopy(_)
                | ErrorKind::IommuTypeMissing(_)
                | ErrorKind::NoIommuGroup(_),
            ) => io::ErrorKind::Unsupported,
            (None, _) => io::ErrorKind::Other,
        };
        Self::new(kind, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_naming_device_step_target_and_errno() {
        let e = VfioError::new(
            "vfio-mig:0000:3b:00.2",
            Step::OpenGroup,
            ErrorKind::Os(Errno::NOENT),
        )
        .on(Target::Path("/dev/vfio/12".into()));
        assert_eq!(
            e.to_string(),
            "vfio-mig:0000:3b:00.2: open the IOMMU group /dev/vfio/12: ENOENT (errno 2: No such \
             file or directory); is the device bound to a VFIO driver, e.g. mlx5_vfio_pci?"
        );
        let e = VfioError::new(
            "vfio-fd:9,container=8",
            Step::DupDeviceFd,
            ErrorKind::Os(Errno::BADF),
        )
        .on(Target::Fd(9));
        assert_eq!(
            e.to_string(),
            "vfio-fd:9,container=8: duplicate the device fd 9: EBADF (errno 9: Bad file \
             descriptor); is fd 9 open in this process (inherited from its parent)?"
        );
        let e = VfioError::new(
            "vfio-fd:3,container=4",
            Step::DeviceInfo,
            ErrorKind::NotVfioDevice(Errno::NOTTY),
        );
        assert_eq!(
            e.to_string(),
            "vfio-fd:3,container=4: VFIO_DEVICE_GET_INFO: not a VFIO device fd (ENOTTY (errno \
             25: Inappropriate ioctl for device))"
        );
        let e = VfioError::new("d", Step::GetMigration, ErrorKind::NoStopCopy(0x4));
        assert_eq!(
            e.to_string(),
            "d: GET VFIO_DEVICE_FEATURE_MIGRATION: migration flags 0x4 lack VFIO_MIGRATION_STOP_COPY"
        );
    }

    #[test]
    fn errno_names_and_unknown_numbers() {
        assert_eq!(errno_name(Errno::NOTTY), Some("ENOTTY"));
        assert_eq!(errno_name(Errno::from_raw_os_error(4095)), None);
        assert_eq!(
            describe_errno(Errno::from_raw_os_error(4095)),
            "errno 4095 (Unknown error 4095)"
        );
        // Every name is unique and every number distinct.
        let names: Vec<_> = (1..200)
            .filter_map(|n| errno_name(Errno::from_raw_os_error(n)))
            .collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(names.len(), unique.len());
        assert_eq!(names.len(), 36, "{names:?}");
    }

    #[test]
    fn the_errno_survives_io_error() {
        let e = VfioError::new("d", Step::SetState, ErrorKind::Os(Errno::INVAL));
        let io: io::Error = e.clone().into();
        assert_eq!(io.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(
            crate::backend::errno_of(&io),
            Some(Errno::INVAL.raw_os_error())
        );
        assert_eq!(io.to_string(), e.to_string());
        let e = VfioError::new("d", Step::ResolveDevice, ErrorKind::NoSuchDevice);
        let io: io::Error = e.into();
        assert_eq!(io.kind(), io::ErrorKind::NotFound);
        assert_eq!(crate::backend::errno_of(&io), None);
    }

    #[test]
    fn std_errors_keep_their_errno() {
        let e = std::fs::read_link("/nonexistent-4711").unwrap_err();
        assert_eq!(errno_of_io(&e), Errno::NOENT);
        let e = std::fs::read_link("/a\0b").unwrap_err();
        assert_eq!(errno_of_io(&e), Errno::INVAL);
    }
}
