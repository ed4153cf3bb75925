//! The resuming engine: a pure state machine for one resuming file.
//!
//! On top of [`stream::Reader`](crate::stream::Reader) it decides where image
//! bytes go, when an image is complete and must be LOADed, how the image
//! buffer grows, and what the stream amounts to when RESUMING ends.
//!
//! # Memory
//! There are [`IMAGE_BUFFERS`] image buffers, so the next image can arrive
//! while the platform LOADs the last one (an asynchronous LOAD; a platform
//! that LOADs synchronously only ever uses the first). Each is a list of up
//! to [`MAX_IMAGE_SEGMENTS`] DMA buffers that one memory key maps as a
//! single range. It grows only when payload
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
//! report skipped bytes with [`LoadEngine::skipped`]; for [`WriteStep::Wait`]
//! wait until a LOAD completes. Whenever [`LoadEngine::next_due`] names an
//! image buffer, map its segments if [`LoadEngine::needs_map`] says so, issue
//! LOAD_VHCA_STATE ([`LoadEngine::load_started`]), and on its end call
//! [`LoadEngine::loaded`] (or [`LoadEngine::load_failed`]). Images are
//! LOADed one at a time, in stream order.

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
/// Image buffers: one receives while the other's LOAD runs. More would let
/// the writer run further ahead of firmware, which LOADs one image at a
/// time anyway, at the cost of another image's memory.
pub const IMAGE_BUFFERS: usize = 2;

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
    /// A LOAD failed on the platform's side (not delivered, or an output
    /// that did not decode); the file is dead.
    LoadFailed,
    /// Firmware refused a LOAD (it read the image and rejected it); the
    /// file is dead.
    Refused(crate::ifc::CmdError),
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
            Self::Refused(c) => c.errno(),
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
            Self::Refused(c) => c.fmt(f),
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
    /// Every image buffer holds an image waiting for or under LOAD: wait
    /// for a LOAD to complete, then ask again.
    Wait,
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

/// Where an image buffer is in its cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ImageState {
    /// Free, or receiving an image.
    Filling,
    /// Holds a complete image whose LOAD has not started; `seq` is its
    /// place in the stream (images LOAD in that order).
    Due {
        /// The image.
        image: LoadImage,
        /// Stream order.
        seq: u64,
    },
    /// Its LOAD runs.
    Loading {
        /// The image.
        image: LoadImage,
    },
}

#[derive(Clone, Debug)]
struct ImageBuf {
    segments: Vec<BufRef, MAX_IMAGE_SEGMENTS>,
    /// Segments the buffer's memory key covers.
    mapped: usize,
    state: ImageState,
}

impl ImageBuf {
    const EMPTY: Self = Self {
        segments: Vec::new(),
        mapped: 0,
        state: ImageState::Filling,
    };
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
    bufs: [ImageBuf; IMAGE_BUFFERS],
    /// The buffer the image being received goes into.
    receiving: Option<usize>,
    /// Stream order of the next complete image.
    next_seq: u64,
    failed: Option<LoadError>,
    stats: LoadStats,
}

impl LoadEngine {
    /// A new engine at the start of a stream.
    pub const fn new(cfg: LoadConfig) -> Self {
        Self {
            cfg,
            reader: Reader::new(),
            bufs: [ImageBuf::EMPTY, ImageBuf::EMPTY],
            receiving: None,
            next_seq: 0,
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
    /// The segments of image buffer `buf` (empty for an index out of range).
    pub fn segments(&self, buf: usize) -> &[BufRef] {
        self.bufs.get(buf).map_or(&[], |b| b.segments.as_slice())
    }
    /// Counters.
    pub const fn stats(&self) -> LoadStats {
        self.stats
    }
    /// The error the file failed with.
    pub const fn error(&self) -> Option<LoadError> {
        self.failed
    }
    /// Capacity of the image buffers in bytes, all together.
    pub fn capacity(&self) -> u64 {
        self.bufs
            .iter()
            .flat_map(|b| b.segments.iter())
            .fold(0u64, |acc, s| acc.saturating_add(self.bytes_of(s.npages)))
    }
    /// Image buffer `buf`'s memory key must be (re)created: segments were
    /// added since its last [`LoadEngine::mark_mapped`].
    pub fn needs_map(&self, buf: usize) -> bool {
        self.bufs
            .get(buf)
            .is_some_and(|b| b.mapped != b.segments.len())
    }
    /// Segments image buffer `buf`'s current memory key covers.
    pub fn mapped_segments(&self, buf: usize) -> usize {
        self.bufs.get(buf).map_or(0, |b| b.mapped)
    }
    /// Image buffer `buf`'s memory key now covers every segment.
    pub fn mark_mapped(&mut self, buf: usize) {
        if let Some(b) = self.bufs.get_mut(buf) {
            b.mapped = b.segments.len();
        }
    }
    /// Where image buffer `buf` is in its cycle.
    pub fn image_state(&self, buf: usize) -> Option<ImageState> {
        self.bufs.get(buf).map(|b| b.state)
    }
    /// The image buffer whose LOAD should start now: the first complete
    /// image in stream order, when no LOAD runs.
    pub fn next_due(&self) -> Option<(usize, LoadImage)> {
        if self.is_loading() {
            return None;
        }
        self.bufs
            .iter()
            .enumerate()
            .filter_map(|(i, b)| match b.state {
                ImageState::Due { image, seq } => Some((seq, i, image)),
                _ => None,
            })
            .min_by_key(|&(seq, ..)| seq)
            .map(|(_, i, image)| (i, image))
    }
    /// A LOAD runs.
    pub fn is_loading(&self) -> bool {
        self.bufs
            .iter()
            .any(|b| matches!(b.state, ImageState::Loading { .. }))
    }
    /// Complete images wait for (or are under) LOAD.
    pub fn has_unloaded(&self) -> bool {
        self.bufs
            .iter()
            .any(|b| !matches!(b.state, ImageState::Filling))
    }

    /// The buffer the next payload goes into: the one receiving an image,
    /// else the first free one (so a platform that LOADs synchronously only
    /// ever uses buffer 0).
    fn target(&self) -> Option<usize> {
        self.receiving.or_else(|| {
            self.bufs
                .iter()
                .position(|b| b.state == ImageState::Filling)
        })
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
            } => match self.target() {
                Some(buf) => self.payload_step(buf, image_offset, remaining, image_size),
                None => WriteStep::Wait,
            },
        }
    }

    fn payload_step(
        &self,
        buf: usize,
        image_offset: u64,
        remaining: u64,
        image_size: u64,
    ) -> WriteStep {
        let segments = self.segments(buf);
        // Find the segment holding image_offset.
        let mut start = 0u64;
        for seg in segments {
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
        let bytes = if segments.is_empty() {
            let hint = self
                .reader
                .stop_copy_size()
                .unwrap_or(0)
                .min(self.cfg.max_hint);
            image_size.min(hint.max(MIN_FIRST_SEGMENT))
        } else if segments.len().saturating_add(1) >= MAX_IMAGE_SEGMENTS {
            still
        } else {
            still.min(capacity)
        };
        WriteStep::Grow {
            npages: self.pages_for(bytes),
        }
    }

    /// Adds a segment allocated for [`WriteStep::Grow`] to the image buffer
    /// receiving the next payload.
    ///
    /// # Errors
    /// [`LoadError::Capacity`] if the table is full; [`LoadError::Misuse`]
    /// when no image buffer can receive (the step was [`WriteStep::Wait`]).
    pub fn add_segment(&mut self, seg: BufRef) -> Result<(), LoadError> {
        let target = self.target().ok_or(LoadError::Misuse)?;
        self.receiving = Some(target);
        let pushed = self
            .bufs
            .get_mut(target)
            .ok_or(LoadError::Misuse)
            .and_then(|b| b.segments.push(seg).map_err(|_| LoadError::Capacity));
        pushed.map_err(|e| self.fail(e))
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
                        let image = LoadImage { size, offset };
                        // Its payload went into the receiving buffer.
                        let buf = self
                            .receiving
                            .take()
                            .and_then(|i| self.bufs.get_mut(i))
                            .ok_or(LoadError::Misuse);
                        match buf {
                            Ok(b) => {
                                b.state = ImageState::Due {
                                    image,
                                    seq: self.next_seq,
                                };
                                self.next_seq = self.next_seq.saturating_add(1);
                            }
                            Err(e) => return Err(self.fail(e)),
                        }
                        load = Some(image);
                    }
                }
                _ => {}
            }
        }
        Ok(load)
    }

    fn check_ready(&self) -> Result<(), LoadError> {
        match self.failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
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
        if n > 0 {
            self.receiving = Some(self.target().ok_or(LoadError::Misuse)?);
        }
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

    /// The LOAD of image buffer `buf` was issued.
    ///
    /// # Errors
    /// [`LoadError::Misuse`] unless `buf` is the one [`LoadEngine::next_due`]
    /// names.
    pub fn load_started(&mut self, buf: usize) -> Result<LoadImage, LoadError> {
        match self.next_due() {
            Some((due, image)) if due == buf => {
                if let Some(b) = self.bufs.get_mut(buf) {
                    b.state = ImageState::Loading { image };
                }
                Ok(image)
            }
            _ => Err(LoadError::Misuse),
        }
    }

    /// The LOAD of image buffer `buf` succeeded: the buffer (and its
    /// memory, kept for the next image) is free again.
    pub fn loaded(&mut self, buf: usize) {
        let Some(b) = self.bufs.get_mut(buf) else {
            return;
        };
        if let ImageState::Loading { image } | ImageState::Due { image, .. } = b.state {
            b.state = ImageState::Filling;
            self.stats.images = self.stats.images.saturating_add(1);
            self.stats.image_bytes = self.stats.image_bytes.saturating_add(u64::from(image.size));
        }
    }

    /// A LOAD failed (`why`: [`LoadError::Refused`] when firmware refused
    /// it, else [`LoadError::LoadFailed`]): the file is dead, and no other
    /// image LOADs.
    pub fn load_failed(&mut self, why: LoadError) {
        for b in &mut self.bufs {
            b.state = ImageState::Filling;
        }
        self.failed = Some(why);
    }

    /// What the stream amounts to if the writer stops now.
    pub fn verdict(&self) -> Verdict {
        if let Some(LoadError::Stream(e)) = self.failed {
            return Verdict::Failed(e);
        }
        self.reader.verdict()
    }
}
