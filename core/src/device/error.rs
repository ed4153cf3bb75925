//! The device's error vocabulary, with the errno the Linux driver reports for
//! each situation.

use core::fmt;

use crate::errno::Errno;
use crate::hal::HalErrorKind;
use crate::ifc::{CmdError, DecodeError, EncodeError};
use crate::load::LoadError;
use crate::save::SaveError;
use crate::stream::Verdict;
use crate::tracker::TrackerError;
use crate::vfio::{MigState, TransitionError};

/// Why a device operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DeviceError {
    /// [`Device::probe`](super::Device::probe) has not succeeded.
    NotProbed,
    /// The VF cannot be migrated (a capability is missing).
    NotMigratable(&'static str),
    /// The state graph refuses the transition (`EINVAL`).
    Transition(TransitionError),
    /// Firmware refused a command.
    Firmware(CmdError),
    /// A command output was unusable (`EIO`).
    Decode(DecodeError),
    /// A command input could not be built (`EINVAL`).
    Encode(EncodeError),
    /// The platform failed.
    Platform(HalErrorKind),
    /// The VF is detached from its PF (`ENOTCONN`).
    Detached,
    /// The file handle names no live file (`ENODEV`).
    NoFile,
    /// The file failed earlier (`ENODEV`).
    FileFailed,
    /// PRE_COPY data is drained for now (`ENOMSG`).
    NoMessage,
    /// No data yet; a blocking reader waits, a non-blocking one gets `EAGAIN`.
    WouldBlock,
    /// A SAVE is in flight: wait for its completion, then call again. Nothing
    /// was changed.
    SaveInFlight,
    /// A LOAD is in flight and the call needs it done (both image buffers
    /// are busy, or RESUMING is ending): wait for its completion, then call
    /// again. Nothing was changed.
    LoadInFlight,
    /// Another reader holds the file (`EBUSY`; callers serialise reads).
    ReaderBusy,
    /// The precopy ioctl outside PRE_COPY states (`EINVAL`).
    NotPreCopy,
    /// The saving engine refused.
    Save(SaveError),
    /// The resuming engine refused.
    Load(LoadError),
    /// RESUMING ended with an incomplete or invalid stream.
    Incomplete(Verdict),
    /// The PRE_COPY file had failed when PRE_COPY was left (`EIO`).
    SaveFileFailed,
    /// A SAVE completion did not match the SAVE in flight (`EINVAL`).
    StaleCompletion,
    /// A fixed-capacity table is full (`ENOMEM`).
    TableFull,
    /// A write step was reported that the device did not plan (`EINVAL`).
    UnplannedWrite,
    /// Device dirty-page tracking failed.
    Tracker(TrackerError),
}

impl DeviceError {
    /// The errno the Linux driver returns in this situation.
    pub fn errno(&self) -> Errno {
        match self {
            Self::NotProbed | Self::NoFile | Self::FileFailed => Errno::ENODEV,
            Self::NotMigratable(_) => Errno::EOPNOTSUPP,
            Self::Transition(_)
            | Self::Encode(_)
            | Self::NotPreCopy
            | Self::StaleCompletion
            | Self::UnplannedWrite => Errno::EINVAL,
            Self::Firmware(e) => e.errno(),
            Self::Decode(_) | Self::SaveFileFailed => Errno::EIO,
            Self::Platform(k) => k.errno(),
            Self::Detached => Errno::ENOTCONN,
            Self::NoMessage => Errno::ENOMSG,
            Self::WouldBlock => Errno::EAGAIN,
            Self::SaveInFlight | Self::LoadInFlight | Self::ReaderBusy => Errno::EBUSY,
            Self::Save(e) => e.errno(),
            Self::Load(e) => e.errno(),
            Self::Incomplete(Verdict::Failed(e)) => e.kind.errno(),
            Self::Incomplete(_) => Errno::EINVAL,
            Self::TableFull => Errno::ENOMEM,
            Self::Tracker(e) => e.errno(),
        }
    }
}

impl fmt::Display for DeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotProbed => f.write_str("device not probed"),
            Self::NotMigratable(why) => write!(f, "VF is not migratable: {why}"),
            Self::Transition(e) => e.fmt(f),
            Self::Firmware(e) => e.fmt(f),
            Self::Decode(e) => write!(f, "bad command output: {e}"),
            Self::Encode(e) => write!(f, "bad command input: {e}"),
            Self::Platform(k) => write!(f, "platform: {k}"),
            Self::Detached => f.write_str("VF is detached from its PF"),
            Self::NoFile => f.write_str("no such migration file"),
            Self::FileFailed => f.write_str("migration file failed earlier"),
            Self::NoMessage => f.write_str("no PRE_COPY data available now"),
            Self::WouldBlock => f.write_str("no data yet"),
            Self::SaveInFlight => f.write_str("a SAVE is in flight; retry after it completes"),
            Self::LoadInFlight => f.write_str("a LOAD is in flight; retry after it completes"),
            Self::ReaderBusy => f.write_str("another reader holds the file"),
            Self::NotPreCopy => f.write_str("not in a PRE_COPY state"),
            Self::Save(e) => e.fmt(f),
            Self::Load(e) => e.fmt(f),
            Self::Incomplete(v) => match v {
                Verdict::PartialRecord {
                    offset,
                    tag: Some(tag),
                    missing,
                } => write!(
                    f,
                    "stream truncated: {tag} record at byte {offset} is missing {missing} bytes"
                ),
                Verdict::PartialRecord {
                    offset, missing, ..
                } => write!(
                    f,
                    "stream truncated: record header at byte {offset} is missing {missing} bytes"
                ),
                Verdict::MissingEnd => {
                    f.write_str("stream truncated: the stream-end record never arrived")
                }
                Verdict::Failed(e) => write!(f, "invalid stream: {e}"),
                Verdict::Complete { .. } => f.write_str("stream complete"),
            },
            Self::SaveFileFailed => f.write_str("the PRE_COPY saving file had failed"),
            Self::StaleCompletion => f.write_str("SAVE completion for no SAVE in flight"),
            Self::TableFull => f.write_str("device resource table full"),
            Self::UnplannedWrite => f.write_str("write step out of order"),
            Self::Tracker(e) => e.fmt(f),
        }
    }
}

impl core::error::Error for DeviceError {}

impl From<TrackerError> for DeviceError {
    fn from(e: TrackerError) -> Self {
        Self::Tracker(e)
    }
}

impl From<TransitionError> for DeviceError {
    fn from(e: TransitionError) -> Self {
        Self::Transition(e)
    }
}
impl From<DecodeError> for DeviceError {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::Failed(c) => Self::Firmware(c),
            other => Self::Decode(other),
        }
    }
}
impl From<EncodeError> for DeviceError {
    fn from(e: EncodeError) -> Self {
        Self::Encode(e)
    }
}
impl From<SaveError> for DeviceError {
    fn from(e: SaveError) -> Self {
        match e {
            SaveError::FileError => Self::FileFailed,
            other => Self::Save(other),
        }
    }
}
impl From<LoadError> for DeviceError {
    fn from(e: LoadError) -> Self {
        Self::Load(e)
    }
}

/// A failed [`Device::set_state`](super::Device::set_state): the error and
/// the state the device reached (the last arc that completed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SetStateError {
    /// The state the device is in now.
    pub reached: MigState,
    /// What went wrong.
    pub error: DeviceError,
}

impl fmt::Display for SetStateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (device left in {})", self.error, self.reached)
    }
}

impl core::error::Error for SetStateError {}
