//! The resuming engine: a pure state machine for one resuming file.
//!
//! On top of [`stream::Reader`](crate::stream::Reader) it decides where image
//! bytes go, when an image is complete and must be LOADed, how the image
//! buffer grows, and what the stream amounts to when RESUMING ends.
//!
//! # Memory
//! The image buffer is a list of up to [`MAX_IMAGE_SEGMENTS`] DMA buffers
//! that one memory key maps as a single range. It grows only when payload
//! bytes actually arrive beyond its capacity (the first segment sized from the
//! STOP_COPY_SIZE hint, capped by configuration; each later one doubling the
//! capacity), so a stream *claiming* a 4 GiB record costs nothing until 4 GiB
//! arrive: memory is at most twice what was received, never what the stream
//! claims. Capacity is kept across images, as Linux keeps its buffer.
//!
//! # Call order
//! Loop on [`LoadEngine::next_step`]: hand small bytes to
//! [`LoadEngine::write_small`]; allocate for [`WriteStep::Grow`] and report
//! it with [`LoadEngine::add_segment`]; copy payload for
//! [`WriteStep::Payload`] and report it with [`LoadEngine::payload_written`];
//! report skipped bytes with [`LoadEngine::skipped`]. Whenever one of those
//! returns [`LoadImage`], map the segments if [`LoadEngine::needs_map`] and
//! issue LOAD_VHCA_STATE, then call [`LoadEngine::loaded`] (or
//! [`LoadEngine::load_failed`]).

use core::fmt;

use heapless::Vec;

use crate::errno::Errno;
use crate::save::BufRef;
use crate::stream::{Event, Events, MAX_RECORD_SIZE, Need, Reader, StreamError, Tag, Verdict};

#[cfg(test)]
mod tests;

/// Most buffers one image is built from. With a first segment of at least
/// [`MIN_FIRST_SEGMENT`] and each later segment doubling the capacity, 13
/// segments cover the largest record (2^32 - 1 bytes); the last segment takes
/// whatever remains, so the bound always holds.
pub const MAX_IMAGE_SEGMENTS: usize = 16;
/// Smallest first segment: 1 MiB (growth doubles from here).
pub const MIN_FIRST_SEGMENT: u64 = 1 << 20;

/// Parameters of a resuming session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadConfig {
    /// Bytes per page.
    pub page_size: u64,
    /// Largest image accepted (at most 2^32 - 1, LOAD's size field).
    pub max_image: u64,
    /// Cap on how much of the STOP_COPY_SIZE hint is allocated up front.
    pub max_hint: u64,
}

impl Default for LoadConfig {
    fn default() -> Self {
        Self {
            page_size: 4096,
            max_image: MAX_RECORD_SIZE,
            max_hint: 64 << 20,
        }
    }
}

/// Why a resuming file failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LoadError {
    /// The stream is malformed.
    Stream(StreamError),
    /// An image above the configured maximum.
    ImageTooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
        /// Stream offset of its record.
        offset: u64,
    },
    /// The image buffer table is full (never expected; see
    /// [`MAX_IMAGE_SEGMENTS`]).
    Capacity,
    /// A LOAD failed; the file is dead.
    LoadFailed,
    /// A caller reported bytes the engine did not ask for.
    Misuse,
}

impl LoadError {
    /// The errno the Linux driver returns for this (or the closest one).
    pub const fn errno(&self) -> Errno {
        match self {
            Self::Stream(e) => e.kind.errno(),
            Self::ImageTooLarge { .. } | Self::Capacity => Errno::ENOMEM,
            Self::LoadFailed => Errno::EIO,
            Self::Misuse => Errno::EINVAL,
        }
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stream(e) => e.fmt(f),
            Self::ImageTooLarge {
                size,
                limit,
                offset,
            } => write!(
                f,
                "FW_DATA image of {size} bytes exceeds the {limit}-byte limit (at byte {offset})"
            ),
            Self::Capacity => f.write_str("image buffer capacity exceeded"),
            Self::LoadFailed => f.write_str("an earlier LOAD failed"),
            Self::Misuse => f.write_str("bytes reported out of order"),
        }
    }
}

impl core::error::Error for LoadError {}

impl From<StreamError> for LoadError {
    fn from(e: StreamError) -> Self {
        Self::Stream(e)
    }
}

/// What to do with the next bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum WriteStep {
    /// Give up to `max` bytes to [`LoadEngine::write_small`].
    Small {
        /// Bytes wanted.
        max: usize,
    },
    /// Allocate a segment of `npages` (direction to device) and report it.
    Grow {
        /// Pages.
        npages: u32,
    },
    /// Copy up to `len` bytes into `buf` at `offset`, then report them.
    Payload {
        /// The segment.
        buf: BufRef,
        /// Offset in the segment.
        offset: u64,
        /// Bytes the segment (and record) can take from there.
        len: u64,
    },
    /// Up to `len` bytes are skipped; report them with [`LoadEngine::skipped`].
    Skip {
        /// Bytes.
        len: u64,
    },
    /// Nothing more is accepted.
    Refuse(Refusal),
}

/// Why writes are refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Refusal {
    /// The file failed earlier (`ENODEV`).
    Failed(LoadError),
    /// The stream-end record was seen; more bytes are an error.
    AfterEnd,
}

/// A complete image is in the segments: LOAD `size` bytes from offset 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LoadImage {
    /// Image bytes.
    pub size: u32,
    /// Stream offset of its record (for messages).
    pub offset: u64,
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LoadStats {
    /// Images LOADed.
    pub images: u64,
    /// Image bytes LOADed.
    pub image_bytes: u64,
    /// Records seen.
    pub records: u64,
}

/// One resuming file's engine.
#[derive(Clone, Debug)]
pub struct LoadEngine {
    cfg: LoadConfig,
    reader: Reader,
    segments: Vec<BufRef, MAX_IMAGE_SEGMENTS>,
    /// Segments the current memory key covers.
    mapped: usize,
    pending_load: Option<LoadImage>,
    failed: Option<LoadError>,
    stats: LoadStats,
}

impl LoadEngine {
    /// A new engine at the start of a stream.
    pub const fn new(cfg: LoadConfig) -> Self {
        Self {
            cfg,
            reader: Reader::new(),
            segments: Vec::new(),
            mapped: 0,
            pending_load: None,
            failed: None,
            stats: LoadStats {
                images: 0,
                image_bytes: 0,
                records: 0,
            },
        }
    }

    /// The stream reader (position, stream-info, …).
    pub const fn reader(&self) -> &Reader {
        &self.reader
    }
    /// The image segments.
    pub fn segments(&self) -> &[BufRef] {
        &self.segments
    }
    /// Counters.
    pub const fn stats(&self) -> LoadStats {
        self.stats
    }
    /// The error the file failed with.
    pub const fn error(&self) -> Option<LoadError> {
        self.failed
    }
    /// Capacity of the image buffer in bytes.
    pub fn capacity(&self) -> u64 {
        self.segments
            .iter()
            .fold(0u64, |acc, s| acc.saturating_add(self.bytes_of(s.npages)))
    }
    /// The memory key must be (re)created: segments were added since the
    /// last [`LoadEngine::mark_mapped`].
    pub fn needs_map(&self) -> bool {
        self.mapped != self.segments.len()
    }
    /// Segments the current memory key covers.
    pub const fn mapped_segments(&self) -> usize {
        self.mapped
    }
    /// The memory key now covers every segment.
    pub fn mark_mapped(&mut self) {
        self.mapped = self.segments.len();
    }
    /// Whether a LOAD is due (reported by a previous call).
    pub const fn pending_load(&self) -> Option<LoadImage> {
        self.pending_load
    }

    fn bytes_of(&self, npages: u32) -> u64 {
        u64::from(npages).saturating_mul(self.cfg.page_size)
    }

    fn pages_for(&self, bytes: u64) -> u32 {
        let p = bytes.div_ceil(self.cfg.page_size.max(1)).max(1);
        u32::try_from(p).unwrap_or(u32::MAX)
    }

    /// What to do with the next bytes.
    pub fn next_step(&self) -> WriteStep {
        if let Some(e) = self.failed {
            return WriteStep::Refuse(Refusal::Failed(e));
        }
        match self.reader.need() {
            Need::Header { missing } | Need::Small { missing } => WriteStep::Small { max: missing },
            Need::Skip { remaining } => WriteStep::Skip { len: remaining },
            Need::Nothing => match self.reader.error() {
                Some(e) => WriteStep::Refuse(Refusal::Failed(LoadError::Stream(e))),
                None => WriteStep::Refuse(Refusal::AfterEnd),
            },
            Need::Payload {
                image_offset,
                remaining,
                image_size,
            } => self.payload_step(image_offset, remaining, image_size),
        }
    }

    fn payload_step(&self, image_offset: u64, remaining: u64, image_size: u64) -> WriteStep {
        // Find the segment holding image_offset.
        let mut start = 0u64;
        for seg in &self.segments {
            let len = self.bytes_of(seg.npages);
            let end = start.saturating_add(len);
            if image_offset < end {
                let offset = image_offset.saturating_sub(start);
                return WriteStep::Payload {
                    buf: *seg,
                    offset,
                    len: remaining.min(len.saturating_sub(offset)),
                };
            }
            start = end;
        }
        // Beyond capacity: grow.
        let capacity = start;
        let still = image_size.saturating_sub(capacity);
        let bytes = if self.segments.is_empty() {
            let hint = self
                .reader
                .stop_copy_size()
                .unwrap_or(0)
                .min(self.cfg.max_hint);
            image_size.min(hint.max(MIN_FIRST_SEGMENT))
        } else if self.segments.len().saturating_add(1) >= MAX_IMAGE_SEGMENTS {
            still
        } else {
            still.min(capacity)
        };
        WriteStep::Grow {
            npages: self.pages_for(bytes),
        }
    }

    /// Adds a segment allocated for [`WriteStep::Grow`].
    ///
    /// # Errors
    /// [`LoadError::Capacity`] if the table is full.
    pub fn add_segment(&mut self, buf: BufRef) -> Result<(), LoadError> {
        self.segments.push(buf).map_err(|_| {
            self.failed = Some(LoadError::Capacity);
            LoadError::Capacity
        })
    }

    fn fail(&mut self, e: LoadError) -> LoadError {
        self.failed = Some(e);
        e
    }

    fn take_events(&mut self, events: &Events) -> Result<Option<LoadImage>, LoadError> {
        let mut load = None;
        for e in events {
            match *e {
                Event::RecordStart { offset, header } if header.tag == Tag::FwData => {
                    let limit = self.cfg.max_image.min(MAX_RECORD_SIZE);
                    if header.record_size > limit {
                        return Err(self.fail(LoadError::ImageTooLarge {
                            size: header.record_size,
                            limit,
                            offset,
                        }));
                    }
                }
                Event::RecordEnd { offset, header } => {
                    self.stats.records = self.stats.records.saturating_add(1);
                    if header.tag == Tag::FwData && header.record_size != 0 {
                        let size = u32::try_from(header.record_size)
                            .map_err(|_| self.fail(LoadError::Capacity))?;
                        load = Some(LoadImage { size, offset });
                    }
                }
                _ => {}
            }
        }
        if load.is_some() {
            self.pending_load = load;
        }
        Ok(load)
    }

    fn check_ready(&self) -> Result<(), LoadError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if self.pending_load.is_some() {
            return Err(LoadError::Misuse);
        }
        Ok(())
    }

    /// Header or small-record bytes (at most what [`WriteStep::Small`] asked
    /// for are consumed). Returns the bytes consumed and a LOAD that is due.
    ///
    /// # Errors
    /// The stream is malformed, or an image is too large; the file failed.
    pub fn write_small(&mut self, bytes: &[u8]) -> Result<(usize, Option<LoadImage>), LoadError> {
        self.check_ready()?;
        // After the end record the reader takes bytes only to report them
        // as the stream error they are (DataAfterEnd), failing the file.
        if !matches!(
            self.reader.need(),
            Need::Header { .. } | Need::Small { .. } | Need::Nothing
        ) {
            return Err(LoadError::Misuse);
        }
        let step = self.reader.feed(bytes).map_err(|e| self.fail(e.into()))?;
        let load = self.take_events(&step.events)?;
        Ok((step.consumed, load))
    }

    /// `n` payload bytes were copied where [`WriteStep::Payload`] said;
    /// `crc_after` continues [`Reader::payload_crc`] over them.
    ///
    /// # Errors
    /// As [`LoadEngine::write_small`].
    pub fn payload_written(
        &mut self,
        n: u64,
        crc_after: u32,
    ) -> Result<Option<LoadImage>, LoadError> {
        self.check_ready()?;
        let events = self
            .reader
            .advance_payload(n, crc_after)
            .map_err(|e| self.fail(e.into()))?;
        self.take_events(&events)
    }

    /// `n` bytes were skipped as [`WriteStep::Skip`] said.
    ///
    /// # Errors
    /// As [`LoadEngine::write_small`].
    pub fn skipped(&mut self, n: u64) -> Result<Option<LoadImage>, LoadError> {
        self.check_ready()?;
        let events = self
            .reader
            .advance_skip(n)
            .map_err(|e| self.fail(e.into()))?;
        self.take_events(&events)
    }

    /// The due LOAD succeeded.
    pub fn loaded(&mut self) {
        if let Some(img) = self.pending_load.take() {
            self.stats.images = self.stats.images.saturating_add(1);
            self.stats.image_bytes = self.stats.image_bytes.saturating_add(u64::from(img.size));
        }
    }

    /// The due LOAD failed: the file is dead.
    pub fn load_failed(&mut self) {
        self.pending_load = None;
        self.failed = Some(LoadError::LoadFailed);
    }

    /// What the stream amounts to if the writer stops now.
    pub fn verdict(&self) -> Verdict {
        if let Some(LoadError::Stream(e)) = self.failed {
            return Verdict::Failed(e);
        }
        self.reader.verdict()
    }
}
