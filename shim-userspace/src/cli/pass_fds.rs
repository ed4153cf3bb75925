//! `mlx5vf pass-fds`: open VFIO devices as a VMM does, then run a program
//! that adopts their descriptors by number (`vfio-fd:` specs), as QEMU
//! takes a management layer's descriptors with `fd=`.
//!
//! The descriptors the program inherits are duplicates made for it (a
//! `dup()` is not close-on-exec); the devices' own stay close-on-exec and
//! open here while the program runs, so the devices stay open however the
//! program ends. Afterwards each device is adopted in this process from
//! its own descriptors, its migration state read through the adoption,
//! the adoption dropped, and the state read again through the original
//! descriptors: a VMM's descriptors outlive an adoption of them.

use std::fmt;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::ExitStatus;

use clap::Args;

use crate::vfio::{FdSpec, IommuFd, IommuFdNumber, VfioDevice, VfioError, VfioSpec};

/// Long help of `pass-fds`.
pub const LONG_ABOUT: &str = "Open VFIO devices as a VMM does (vfio-mig: specs only), then run \
    PROGRAM with their descriptors inherited, as a VMM hands its descriptors to a helper: in \
    PROGRAM's arguments, {N} becomes the vfio-fd: spec of the N-th --device (from 0), e.g. \
    vfio-fd:5,container=6 (group path) or vfio-fd:5,iommufd=6 (cdev path). The devices stay \
    open in this process while PROGRAM runs.\n\n\
    Afterwards each device is adopted here from this process's own descriptors \
    (VfioDevice::adopt), its migration state read through the adoption and again through the \
    original descriptors once the adoption is dropped; a line per device on stderr says both \
    (device=N spec=... adopted_as=... state=...).\n\n\
    Exit status: PROGRAM's, if it exited with one other than 0; else 1 if a device could not be \
    opened or read afterwards, or PROGRAM could not be started or was killed by a signal; 2 on \
    a usage error; 0 otherwise.";

/// Arguments of `mlx5vf pass-fds`.
#[derive(Clone, Debug, Args)]
pub struct PassFdsArgs {
    /// A device to open (vfio-mig:DEVICE[,iommu=...]); repeat for more. The N-th (from 0) is
    /// {N} in PROGRAM's arguments.
    #[arg(long = "device", value_name = "SPEC", required = true)]
    pub devices: Vec<String>,
    /// The program to run and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "PROGRAM")]
    pub program: Vec<String>,
}

/// Why `pass-fds` failed.
#[derive(Debug)]
pub enum PassFdsError {
    /// A spec that is not `vfio-mig:`, or does not parse.
    Spec(String),
    /// A device could not be opened.
    Open(VfioError),
    /// Duplicating a descriptor for the program failed.
    Dup(std::io::Error),
    /// The program could not be started.
    Spawn {
        /// The program.
        program: String,
        /// Why.
        error: std::io::Error,
    },
    /// The program failed.
    Program {
        /// The program.
        program: String,
        /// How it ended.
        status: ExitStatus,
    },
    /// A device could not be read (adopted or not) after the program.
    After(VfioError),
}

impl PassFdsError {
    /// The exit status: the program's own when it exited with one,
    /// [`super::EXIT_USAGE`] for a bad spec, [`super::EXIT_FAILURE`]
    /// otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Spec(_) => super::EXIT_USAGE,
            Self::Program { status, .. } => status
                .code()
                .and_then(|c| u8::try_from(c).ok())
                .filter(|&c| c != 0)
                .unwrap_or(super::EXIT_FAILURE),
            _ => super::EXIT_FAILURE,
        }
    }
}

impl fmt::Display for PassFdsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Spec(m) => f.write_str(m),
            Self::Open(e) => write!(f, "cannot open device: {e}"),
            Self::Dup(e) => write!(f, "duplicating a descriptor for the program: {e}"),
            Self::Spawn { program, error } => write!(f, "cannot run {program:?}: {error}"),
            Self::Program { program, status } => write!(f, "{program:?} failed: {status}"),
            Self::After(e) => write!(f, "after the program: {e}"),
        }
    }
}

impl std::error::Error for PassFdsError {}

/// One opened device and the descriptors made for the program.
struct Held {
    spec: String,
    device: VfioDevice,
    /// Inheritable duplicates (device, IOMMU fd), closed after the program.
    passed: Option<(OwnedFd, OwnedFd)>,
    /// The `vfio-fd:` spec that names them.
    fd_spec: FdSpec,
}

/// Opens every device, runs the program, then checks each device through
/// an adoption of its own descriptors. Reports on stderr.
///
/// # Errors
/// [`PassFdsError`].
pub fn run(args: &PassFdsArgs) -> Result<(), PassFdsError> {
    let mut held = Vec::with_capacity(args.devices.len());
    for spec in &args.devices {
        let parsed = VfioSpec::parse(spec).map_err(|e| {
            PassFdsError::Spec(format!(
                "pass-fds: --device {spec:?}: {e} (pass-fds opens vfio-mig: devices)"
            ))
        })?;
        let device = VfioDevice::open(spec, &parsed).map_err(PassFdsError::Open)?;
        // dup() gives a descriptor without FD_CLOEXEC: the program inherits
        // it; the device's own stay close-on-exec.
        let inheritable = |fd| rustix::io::dup(fd).map_err(|e| PassFdsError::Dup(e.into()));
        let (iommu, wrap): (_, fn(i32) -> IommuFdNumber) = match device.iommu_fd() {
            IommuFd::Container(fd) => (inheritable(fd)?, IommuFdNumber::Container),
            IommuFd::Iommufd(fd) => (inheritable(fd)?, IommuFdNumber::Iommufd),
        };
        let dev = inheritable(device.device_fd())?;
        let fd_spec = FdSpec {
            device: dev.as_raw_fd(),
            iommu: wrap(iommu.as_raw_fd()),
        };
        held.push(Held {
            spec: spec.clone(),
            device,
            passed: Some((dev, iommu)),
            fd_spec,
        });
    }
    let program_args: Vec<String> = args
        .program
        .iter()
        .map(|arg| {
            held.iter().enumerate().fold(arg.clone(), |a, (i, h)| {
                a.replace(&format!("{{{i}}}"), &h.fd_spec.to_spec())
            })
        })
        .collect();
    let (program, rest) = program_args
        .split_first()
        .ok_or_else(|| PassFdsError::Spec("pass-fds: no PROGRAM after --".to_owned()))?;
    let status = std::process::Command::new(program)
        .args(rest)
        .status()
        .map_err(|error| PassFdsError::Spawn {
            program: program.clone(),
            error,
        });
    // The program's copies are gone with it; ours go now.
    for h in &mut held {
        drop(h.passed.take());
    }
    let mut report = String::new();
    for (i, h) in held.iter().enumerate() {
        let iommu = h.device.iommu_fd();
        let adopted =
            VfioDevice::adopt(h.device.device_fd(), iommu).map_err(PassFdsError::After)?;
        let through_adoption = adopted.migration_state().map_err(PassFdsError::After)?;
        let adopted_as = crate::backend::MigrationDevice::describe(&adopted);
        drop(adopted);
        let after_drop = h.device.migration_state().map_err(PassFdsError::After)?;
        report.push_str(&format!(
            "device={i} spec={} passed_as={} adopted_as={adopted_as} state={through_adoption} \
             state_after_adoption_dropped={after_drop}\n",
            h.spec,
            h.fd_spec.to_spec(),
        ));
    }
    use std::io::Write as _;
    let _ = std::io::stderr().lock().write_all(report.as_bytes());
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(status) => Err(PassFdsError::Program {
            program: program.clone(),
            status,
        }),
        Err(e) => Err(e),
    }
}
