//! Why driving a PF failed, with the step that failed.

use std::fmt;
use std::io;

use mlx5vf_core::cmdq::CmdqError;
use mlx5vf_core::hal::{HalError, HalErrorKind};
use mlx5vf_core::ifc::{DecodeError, EncodeError};

/// A failure of the PF's command queue or of its bring-up.
#[derive(Debug)]
pub enum PfError {
    /// The command queue refused or lost a command (delivery status,
    /// token, ownership, chain, timeout, health).
    Queue {
        /// The command.
        opcode: u16,
        /// What went wrong.
        error: CmdqError,
    },
    /// A bring-up command was delivered and firmware refused it (or its
    /// output did not decode).
    Firmware {
        /// The step.
        step: &'static str,
        /// The refusal.
        error: DecodeError,
    },
    /// A register access or an IOMMU mapping failed.
    Io {
        /// The step.
        step: &'static str,
        /// The error.
        error: io::Error,
    },
    /// DMA memory or IOVA space ran out.
    Memory(&'static str),
    /// Firmware did something the driver cannot go along with.
    Protocol(String),
}

impl PfError {
    pub(crate) fn io(step: &'static str) -> impl FnOnce(io::Error) -> Self {
        move |error| Self::Io { step, error }
    }

    pub(crate) fn firmware(step: &'static str) -> impl FnOnce(DecodeError) -> Self {
        move |error| Self::Firmware { step, error }
    }

    pub(crate) fn encode(step: &'static str) -> impl FnOnce(EncodeError) -> Self {
        move |e| Self::Protocol(format!("{step}: cannot encode the input: {e}"))
    }

    /// The `Hal` error kind it is.
    pub fn hal_kind(&self) -> HalErrorKind {
        match self {
            Self::Queue { error, .. } => match error {
                CmdqError::Timeout { .. } | CmdqError::StillInitializing => HalErrorKind::Timeout,
                CmdqError::DeviceGone => HalErrorKind::Detached,
                CmdqError::AreaTooSmall { .. } => HalErrorKind::OutOfMemory,
                _ => HalErrorKind::Delivery,
            },
            Self::Memory(_) => HalErrorKind::OutOfMemory,
            Self::Firmware { .. } | Self::Io { .. } | Self::Protocol(_) => HalErrorKind::Other,
        }
    }

    /// Whether the firmware is unusable from now on.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Self::Queue { error, .. } if error.is_fatal())
    }
}

impl HalError for PfError {
    fn kind(&self) -> HalErrorKind {
        self.hal_kind()
    }
}

impl fmt::Display for PfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Queue { opcode, error } => write!(f, "command {opcode:#x}: {error}"),
            Self::Firmware { step, error } => write!(f, "{step}: {error}"),
            Self::Io { step, error } => write!(f, "{step}: {error}"),
            Self::Memory(what) => write!(f, "out of DMA memory or IOVA space for {what}"),
            Self::Protocol(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for PfError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Queue { error, .. } => Some(error),
            Self::Firmware { error, .. } => Some(error),
            Self::Io { error, .. } => Some(error),
            Self::Memory(_) | Self::Protocol(_) => None,
        }
    }
}

impl From<PfError> for io::Error {
    fn from(e: PfError) -> Self {
        let kind = match e.hal_kind() {
            HalErrorKind::Timeout => io::ErrorKind::TimedOut,
            HalErrorKind::OutOfMemory => io::ErrorKind::OutOfMemory,
            HalErrorKind::Detached => io::ErrorKind::NotConnected,
            _ => io::ErrorKind::Other,
        };
        Self::new(kind, e)
    }
}
