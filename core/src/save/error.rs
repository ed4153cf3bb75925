//! Why the saving engine refuses something.

use core::fmt;

use super::ImageMode;
use crate::errno::Errno;

/// Why the engine refused something.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SaveError {
    /// The state needs a SAVE buffer above the cap (legacy mode above 4 GiB,
    /// or a chunk larger than the configured maximum).
    TooLarge {
        /// Bytes firmware asks for.
        required: u64,
        /// The cap.
        limit: u64,
        /// One image or chunks.
        image: ImageMode,
    },
    /// Firmware claimed to write more than the buffer holds.
    ImageOverflow {
        /// `actual_image_size`.
        actual: u32,
        /// Buffer bytes.
        buffer: u64,
    },
    /// A completion arrived with no SAVE in flight.
    NoSaveInFlight,
    /// The file is in error (`ENODEV` to readers).
    FileError,
    /// A fixed-capacity structure is full (a bound argument was wrong; never
    /// expected).
    Capacity,
    /// An operation that does not fit the file's state (e.g. a stop-copy chunk
    /// for a slot that holds unread data).
    WrongState,
}

impl SaveError {
    /// The errno for this error.
    pub const fn errno(&self) -> Errno {
        match self {
            Self::TooLarge { .. } | Self::Capacity => Errno::ENOMEM,
            Self::ImageOverflow { .. } => Errno::EIO,
            Self::NoSaveInFlight | Self::WrongState => Errno::EINVAL,
            Self::FileError => Errno::ENODEV,
        }
    }
}

impl fmt::Display for SaveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TooLarge {
                required,
                limit,
                image: ImageMode::Single,
            } => write!(
                f,
                "device state needs a {required}-byte SAVE buffer, above the {limit}-byte limit \
                 of a single SAVE; chunk mode is required for states this large"
            ),
            Self::TooLarge {
                required, limit, ..
            } => write!(
                f,
                "firmware needs a {required}-byte chunk buffer, above the {limit}-byte limit"
            ),
            Self::ImageOverflow { actual, buffer } => write!(
                f,
                "firmware reported a {actual}-byte image in a {buffer}-byte buffer"
            ),
            Self::NoSaveInFlight => f.write_str("SAVE completion with no SAVE in flight"),
            Self::FileError => f.write_str("saving file is in error"),
            Self::Capacity => f.write_str("saving engine capacity exceeded"),
            Self::WrongState => f.write_str("operation does not fit the saving file's state"),
        }
    }
}

impl core::error::Error for SaveError {}

/// Why a saving file failed; from then on readers get `ENODEV`. Recorded by
/// [`SaveEngine::fail`](super::SaveEngine::fail), the one way into the
/// failed phase, and reported by
/// [`SaveEngine::failure`](super::SaveEngine::failure).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SaveFailure {
    /// Firmware refused a SAVE with this status.
    Refused(crate::ifc::CmdStatus),
    /// The driver could not issue a SAVE, or could not give it a buffer.
    NotStarted,
    /// A SAVE's output could not be parsed (too short).
    BadOutput,
    /// The engine refused what firmware reported (an image larger than its
    /// buffer, a chunk above the cap) or hit one of its bounds.
    Engine(SaveError),
    /// The driver gave up on the file (e.g. an arc that needed it failed).
    Abandoned,
}

impl fmt::Display for SaveFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refused(status) => match status.linux_name() {
                Some(name) => write!(f, "firmware refused a SAVE ({name})"),
                None => write!(
                    f,
                    "firmware refused a SAVE (status {:#x})",
                    u8::from(*status)
                ),
            },
            Self::NotStarted => f.write_str("a SAVE could not be issued or given a buffer"),
            Self::BadOutput => f.write_str("a SAVE's output could not be parsed"),
            Self::Engine(e) => e.fmt(f),
            Self::Abandoned => f.write_str("the driver abandoned the saving file"),
        }
    }
}
