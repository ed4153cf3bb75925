//! Payloads of our own optional records: stream-info and stream-end.

use bitfield_struct::bitfield;
use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{HEADER_LEN, Header, InsufficientSize, RecordFlags, Tag};

/// The stream-info magic.
pub const INFO_MAGIC: [u8; 8] = *b"MLX5VFSI";
/// The stream format version this code writes and reads.
pub const STREAM_FORMAT_VERSION: u16 = 1;
/// Bytes of the producer string.
pub const PRODUCER_LEN: usize = 32;

/// What kind of saving session produced a stream.
#[bitfield(u16, defmt = cfg(feature = "defmt"))]
#[derive(PartialEq, Eq)]
pub struct StreamInfoFlags {
    /// The device saved in chunk mode.
    pub chunk_mode: bool,
    /// The stream starts with PRE_COPY data.
    pub pre_copy: bool,
    #[bits(14)]
    __: u16,
}

#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct WireInfo {
    magic: [u8; 8],
    version: U16,
    flags: U16,
    page_size: U32,
    chunk_size: U64,
    chunk_slots: U32,
    reserved: U32,
    producer: [u8; PRODUCER_LEN],
}

#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct WireEnd {
    fw_data_records: U64,
    fw_data_bytes: U64,
    crc32c: U32,
    reserved: U32,
}

/// Length of the stream-info payload.
pub const STREAM_INFO_LEN: usize = 64;
/// Length of the stream-end payload.
pub const STREAM_END_LEN: usize = 24;
static_assertions::assert_eq_size!(WireInfo, [u8; STREAM_INFO_LEN]);
static_assertions::assert_eq_size!(WireEnd, [u8; STREAM_END_LEN]);

/// The stream-info record: who wrote the stream and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct StreamInfo {
    /// Format version ([`STREAM_FORMAT_VERSION`]).
    pub version: u16,
    /// Session kind.
    pub flags: StreamInfoFlags,
    /// Page size of the saving host.
    pub page_size: u32,
    /// Chunk buffer size the saver started with (0 outside chunk mode).
    pub chunk_size: u64,
    /// Chunk slots the saver used.
    pub chunk_slots: u32,
    /// Producer, NUL-padded UTF-8 (e.g. `mlx5vf 0.1.0`).
    pub producer: [u8; PRODUCER_LEN],
}

impl StreamInfo {
    /// Length of the whole record.
    pub const RECORD_LEN: usize = HEADER_LEN + STREAM_INFO_LEN;

    /// A producer field from a string (truncated to 32 bytes).
    pub fn producer_from(name: &str) -> [u8; PRODUCER_LEN] {
        let mut out = [0u8; PRODUCER_LEN];
        for (dst, src) in out.iter_mut().zip(name.bytes()) {
            *dst = src;
        }
        out
    }

    /// The producer as text (up to the first NUL; invalid UTF-8 gives `"?"`).
    pub fn producer_str(&self) -> &str {
        let end = self
            .producer
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(PRODUCER_LEN);
        self.producer
            .get(..end)
            .and_then(|b| core::str::from_utf8(b).ok())
            .unwrap_or("?")
    }

    /// Encodes the whole record (header + payload) into `buf`.
    ///
    /// # Errors
    /// [`InsufficientSize`] with `buf` untouched.
    pub fn encode_record(&self, buf: &mut [u8]) -> Result<usize, InsufficientSize> {
        let dst = buf.get_mut(..Self::RECORD_LEN).ok_or(InsufficientSize {
            required: Self::RECORD_LEN,
        })?;
        let (head, payload) = dst.split_at_mut(HEADER_LEN);
        head.copy_from_slice(&optional_header(Tag::StreamInfo, STREAM_INFO_LEN).to_bytes());
        let wire = WireInfo {
            magic: INFO_MAGIC,
            version: U16::new(self.version),
            flags: U16::new(self.flags.into_bits()),
            page_size: U32::new(self.page_size),
            chunk_size: U64::new(self.chunk_size),
            chunk_slots: U32::new(self.chunk_slots),
            reserved: U32::ZERO,
            producer: self.producer,
        };
        payload.copy_from_slice(wire.as_bytes());
        Ok(Self::RECORD_LEN)
    }

    /// Parses the payload; `None` if shorter than [`STREAM_INFO_LEN`].
    /// Returns the magic separately so the reader can say which check failed.
    pub(crate) fn parse(payload: &[u8]) -> Option<([u8; 8], Self)> {
        let (wire, _) = WireInfo::read_from_prefix(payload).ok()?;
        Some((
            wire.magic,
            Self {
                version: wire.version.get(),
                flags: StreamInfoFlags::from_bits(wire.flags.get()),
                page_size: wire.page_size.get(),
                chunk_size: wire.chunk_size.get(),
                chunk_slots: wire.chunk_slots.get(),
                producer: wire.producer,
            },
        ))
    }
}

/// The stream-end record: what the stream carried, to prove it arrived whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct StreamEnd {
    /// Number of FW_DATA records.
    pub fw_data_records: u64,
    /// Total FW_DATA payload bytes.
    pub fw_data_bytes: u64,
    /// CRC-32C over every FW_DATA payload byte, in stream order.
    pub crc32c: u32,
}

impl StreamEnd {
    /// Length of the whole record.
    pub const RECORD_LEN: usize = HEADER_LEN + STREAM_END_LEN;

    /// Encodes the whole record (header + payload) into `buf`.
    ///
    /// # Errors
    /// [`InsufficientSize`] with `buf` untouched.
    pub fn encode_record(&self, buf: &mut [u8]) -> Result<usize, InsufficientSize> {
        let dst = buf.get_mut(..Self::RECORD_LEN).ok_or(InsufficientSize {
            required: Self::RECORD_LEN,
        })?;
        let (head, payload) = dst.split_at_mut(HEADER_LEN);
        head.copy_from_slice(&optional_header(Tag::StreamEnd, STREAM_END_LEN).to_bytes());
        let wire = WireEnd {
            fw_data_records: U64::new(self.fw_data_records),
            fw_data_bytes: U64::new(self.fw_data_bytes),
            crc32c: U32::new(self.crc32c),
            reserved: U32::ZERO,
        };
        payload.copy_from_slice(wire.as_bytes());
        Ok(Self::RECORD_LEN)
    }

    pub(crate) fn parse(payload: &[u8]) -> Option<Self> {
        let (wire, _) = WireEnd::read_from_prefix(payload).ok()?;
        Some(Self {
            fw_data_records: wire.fw_data_records.get(),
            fw_data_bytes: wire.fw_data_bytes.get(),
            crc32c: wire.crc32c.get(),
        })
    }
}

fn optional_header(tag: Tag, len: usize) -> Header {
    Header {
        // CAST: payload lengths are small constants.
        record_size: len as u64,
        flags: RecordFlags::OPTIONAL,
        tag,
    }
}
