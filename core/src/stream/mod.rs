//! The migration stream: the record framing of the Linux driver, byte for
//! byte, plus two optional records of our own.
//!
//! Every record is a 16-byte little-endian header `{u64 record_size, u32
//! flags, u32 tag}` followed by `record_size` bytes. Flags: bit 0 OPTIONAL (a
//! reader that does not know the tag skips the record), MANDATORY otherwise.
//! Linux writes two tags: [`Tag::FwData`] (0, a firmware image to LOAD) and
//! [`Tag::StopCopySize`] (1, an le64 buffer-size hint). Linux rejects records
//! above `2^32 - 1` bytes (`-ENOMEM`) and unknown mandatory tags
//! (`-EOPNOTSUPP`).
//!
//! # Our records
//! Tags `0x6d76_0000..=0x6d76_ffff` ("mv") are reserved for mlx5vf; Linux
//! uses small sequential tags, so it never collides with them, and both
//! records carry the OPTIONAL flag, so Linux skips them:
//!
//! | tag | name | payload |
//! |---|---|---|
//! | `0x6d76_0001` | [`Tag::StreamInfo`] | [`StreamInfo`], 64 bytes; first record of a stream |
//! | `0x6d76_0002` | [`Tag::StreamEnd`] | [`StreamEnd`], 24 bytes; last record |
//!
//! A stream that starts with stream-info is complete only when its end record
//! arrives and matches (FW_DATA record count, byte count and CRC-32C of every
//! FW_DATA payload byte). A stream without them (as Linux writes it) is
//! complete when it ends on a record boundary.

pub mod crc32c;
mod reader;
mod records;

pub use reader::{Event, Events, MAX_EVENTS_PER_STEP, Need, PayloadBytes, Reader, Step, Verdict};
pub use records::{
    INFO_MAGIC, PRODUCER_LEN, STREAM_END_LEN, STREAM_FORMAT_VERSION, STREAM_INFO_LEN, StreamEnd,
    StreamInfo, StreamInfoFlags,
};

use core::fmt;

use bitfield_struct::bitfield;
use zerocopy::byteorder::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::errno::Errno;
use crate::macros::enum_with_unknown;

/// Size of a record header.
pub const HEADER_LEN: usize = 16;
/// Largest record Linux accepts (`MAX_LOAD_SIZE`: LOAD's 32-bit size field).
pub const MAX_RECORD_SIZE: u64 = u32::MAX as u64;
/// Size of the STOP_COPY_SIZE payload.
pub const STOP_COPY_SIZE_LEN: usize = 8;
/// Largest payload of a record the reader parses itself (the stream-info
/// payload); bigger known records are parsed from their first bytes and the
/// rest is skipped, so reader memory never depends on record sizes.
pub const MAX_SMALL_PAYLOAD: usize = records::STREAM_INFO_LEN;

enum_with_unknown! {
    /// A record tag.
    pub enum Tag(u32) {
        /// `MLX5_MIGF_HEADER_TAG_FW_DATA`: a firmware image.
        FwData = 0 => "FW_DATA",
        /// `MLX5_MIGF_HEADER_TAG_STOP_COPY_SIZE`: le64 size hint for the load buffer.
        StopCopySize = 1 => "STOP_COPY_SIZE",
        /// mlx5vf stream-info (optional).
        StreamInfo = 0x6d76_0001 => "MLX5VF_STREAM_INFO",
        /// mlx5vf stream-end with integrity data (optional).
        StreamEnd = 0x6d76_0002 => "MLX5VF_STREAM_END",
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.linux_name() {
            Some(name) => f.write_str(name),
            None => write!(f, "tag {:#x}", u32::from(*self)),
        }
    }
}

/// The flags word of a record header.
#[bitfield(u32, defmt = cfg(feature = "defmt"))]
#[derive(PartialEq, Eq, Hash)]
pub struct RecordFlags {
    /// `MLX5_MIGF_HEADER_FLAGS_TAG_OPTIONAL`: readers that do not know the
    /// tag skip the record.
    pub optional: bool,
    /// Bits no writer defines; preserved and ignored, as Linux does.
    #[bits(31)]
    pub other: u32,
}

impl RecordFlags {
    /// `MLX5_MIGF_HEADER_FLAGS_TAG_MANDATORY`.
    pub const MANDATORY: Self = Self::new();
    /// `MLX5_MIGF_HEADER_FLAGS_TAG_OPTIONAL`.
    pub const OPTIONAL: Self = Self::new().with_optional(true);
}

/// The wire form of a record header (`struct mlx5_vf_migration_header`).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct WireHeader {
    record_size: U64,
    flags: U32,
    tag: U32,
}

static_assertions::assert_eq_size!(WireHeader, [u8; HEADER_LEN]);

/// A record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Header {
    /// Payload bytes after the header.
    pub record_size: u64,
    /// Flags.
    pub flags: RecordFlags,
    /// Tag.
    pub tag: Tag,
}

impl Header {
    /// A FW_DATA header for an image of `size` bytes (mandatory).
    pub const fn fw_data(size: u64) -> Self {
        Self {
            record_size: size,
            flags: RecordFlags::MANDATORY,
            tag: Tag::FwData,
        }
    }

    /// The 16 wire bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let wire = WireHeader {
            record_size: U64::new(self.record_size),
            flags: U32::new(self.flags.into_bits()),
            tag: U32::new(u32::from(self.tag)),
        };
        let mut out = [0u8; HEADER_LEN];
        out.copy_from_slice(wire.as_bytes());
        out
    }

    /// Parses 16 wire bytes (any values; validation is the reader's job).
    pub fn from_bytes(bytes: &[u8; HEADER_LEN]) -> Self {
        let wire = WireHeader::read_from_bytes(bytes.as_slice()).unwrap_or(WireHeader {
            record_size: U64::ZERO,
            flags: U32::ZERO,
            tag: U32::ZERO,
        });
        Self {
            record_size: wire.record_size.get(),
            flags: RecordFlags::from_bits(wire.flags.get()),
            tag: Tag::from(wire.tag.get()),
        }
    }

    /// Encodes into the front of `buf`; returns 16.
    ///
    /// # Errors
    /// [`InsufficientSize`] with `buf` untouched.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, InsufficientSize> {
        let dst = buf.get_mut(..HEADER_LEN).ok_or(InsufficientSize {
            required: HEADER_LEN,
        })?;
        dst.copy_from_slice(&self.to_bytes());
        Ok(HEADER_LEN)
    }
}

/// A caller buffer was too small; nothing was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct InsufficientSize {
    /// Bytes needed.
    pub required: usize,
}

impl fmt::Display for InsufficientSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "buffer too small: {} bytes required", self.required)
    }
}

impl core::error::Error for InsufficientSize {}

/// Length of a whole STOP_COPY_SIZE record.
pub const STOP_COPY_SIZE_RECORD_LEN: usize = HEADER_LEN + STOP_COPY_SIZE_LEN;

/// Encodes the STOP_COPY_SIZE record Linux puts at offset 0 of a saving
/// stream: an optional header and the le64 `size`.
///
/// ```
/// let mut buf = [0u8; 24];
/// mlx5vf_core::stream::encode_stop_copy_size(&mut buf, 0x80_0000).unwrap();
/// assert_eq!(buf[..16], [8,0,0,0,0,0,0,0, 1,0,0,0, 1,0,0,0]);
/// assert_eq!(buf[16..], [0,0,0x80,0,0,0,0,0]);
/// ```
///
/// # Errors
/// [`InsufficientSize`] with `buf` untouched.
pub fn encode_stop_copy_size(buf: &mut [u8], size: u64) -> Result<usize, InsufficientSize> {
    let dst = buf
        .get_mut(..STOP_COPY_SIZE_RECORD_LEN)
        .ok_or(InsufficientSize {
            required: STOP_COPY_SIZE_RECORD_LEN,
        })?;
    let header = Header {
        // CAST: 8 fits.
        record_size: STOP_COPY_SIZE_LEN as u64,
        flags: RecordFlags::OPTIONAL,
        tag: Tag::StopCopySize,
    };
    let (head, payload) = dst.split_at_mut(HEADER_LEN);
    head.copy_from_slice(&header.to_bytes());
    payload.copy_from_slice(&size.to_le_bytes());
    Ok(STOP_COPY_SIZE_RECORD_LEN)
}

/// Why a stream was rejected, with the byte offset where it went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct StreamError {
    /// Stream offset of the record (or byte) at fault.
    pub offset: u64,
    /// What is wrong.
    pub kind: StreamErrorKind,
}

/// What is wrong with a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum StreamErrorKind {
    /// A record larger than `2^32 - 1` bytes (Linux: `-ENOMEM`).
    RecordTooLarge {
        /// The record size claimed.
        size: u64,
    },
    /// A mandatory record with a tag this reader does not know (Linux:
    /// `-EOPNOTSUPP`).
    UnknownMandatoryTag(u32),
    /// A known record whose payload is too short to hold its fields.
    ShortRecord {
        /// The tag.
        tag: Tag,
        /// Its size.
        size: u64,
        /// The size it needs at least.
        minimum: u64,
    },
    /// The stream-info record is not first, or appears twice.
    MisplacedStreamInfo,
    /// A stream-end record in a stream that did not open with a stream-info
    /// record: its checksum covers payload nobody was asked to check.
    EndWithoutInfo,
    /// The stream-info magic is wrong.
    BadStreamInfoMagic,
    /// The stream-info format version is not one this reader speaks.
    UnsupportedVersion(u16),
    /// Bytes after the stream-end record.
    DataAfterEnd,
    /// The end record's counts or checksum do not match what arrived.
    IntegrityMismatch(Mismatch),
    /// The driver reported payload or skipped bytes while the reader was not
    /// expecting any (a caller bug, reported rather than trusted).
    UnexpectedAdvance,
}

/// Which integrity check failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Mismatch {
    /// FW_DATA record count.
    Records {
        /// Per the end record.
        expected: u64,
        /// Seen.
        actual: u64,
    },
    /// FW_DATA payload bytes.
    Bytes {
        /// Per the end record.
        expected: u64,
        /// Seen.
        actual: u64,
    },
    /// CRC-32C over FW_DATA payloads.
    Crc {
        /// Per the end record.
        expected: u32,
        /// Computed.
        actual: u32,
    },
}

impl StreamErrorKind {
    /// The errno the Linux driver returns for this (or the closest one for
    /// our own checks).
    pub const fn errno(&self) -> Errno {
        match self {
            Self::RecordTooLarge { .. } => Errno::ENOMEM,
            Self::UnknownMandatoryTag(_) => Errno::EOPNOTSUPP,
            Self::IntegrityMismatch(_) => Errno::EIO,
            Self::ShortRecord { .. }
            | Self::MisplacedStreamInfo
            | Self::EndWithoutInfo
            | Self::BadStreamInfoMagic
            | Self::UnsupportedVersion(_)
            | Self::DataAfterEnd
            | Self::UnexpectedAdvance => Errno::EINVAL,
        }
    }
}

impl fmt::Display for StreamErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::RecordTooLarge { size } => {
                write!(f, "record of {size} bytes exceeds the 4 GiB - 1 limit")
            }
            Self::UnknownMandatoryTag(tag) => {
                write!(f, "unknown mandatory record tag {tag:#x}")
            }
            Self::ShortRecord { tag, size, minimum } => {
                write!(f, "{tag} record of {size} bytes is shorter than {minimum}")
            }
            Self::MisplacedStreamInfo => f.write_str("stream-info record is not the first record"),
            Self::EndWithoutInfo => {
                f.write_str("stream-end record in a stream without a stream-info record")
            }
            Self::BadStreamInfoMagic => f.write_str("stream-info record has a bad magic"),
            Self::UnsupportedVersion(v) => write!(f, "unsupported stream format version {v}"),
            Self::DataAfterEnd => f.write_str("data after the stream-end record"),
            Self::UnexpectedAdvance => f.write_str("payload reported outside a record payload"),
            Self::IntegrityMismatch(Mismatch::Records { expected, actual }) => write!(
                f,
                "integrity mismatch: {actual} FW_DATA records, end record says {expected}"
            ),
            Self::IntegrityMismatch(Mismatch::Bytes { expected, actual }) => write!(
                f,
                "integrity mismatch: {actual} FW_DATA bytes, end record says {expected}"
            ),
            Self::IntegrityMismatch(Mismatch::Crc { expected, actual }) => write!(
                f,
                "integrity mismatch: CRC-32C {actual:#010x}, end record says {expected:#010x}"
            ),
        }
    }
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at byte {})", self.kind, self.offset)
    }
}

impl core::error::Error for StreamError {}

#[cfg(test)]
mod tests;
