//! The saving engine: a pure state machine for one saving file.
//!
//! It decides how big buffers are, which chunk slot the next SAVE fills,
//! when to hold a SAVE back (never more unread chunks than slots), when a
//! slot's buffer must grow, which bytes of which buffer the reader gets next
//! (record headers included), when the stream is complete, and the PRE_COPY
//! accounting. It never calls anything: [`Device`](crate::device::Device)
//! turns its decisions into firmware commands and buffer operations.
//!
//! # Call order (what the device does)
//! 1. [`plan_open`] with the first QUERY's answer, allocate the slots'
//!    buffers (and, for PRE_COPY, a fresh buffer of the same size), then
//!    [`SaveEngine::new`].
//! 2. [`SaveEngine::first_save`], issue it, and for every completion call
//!    [`SaveEngine::check_completion`] then [`SaveEngine::complete`] (or
//!    [`SaveEngine::fail`]); start the next chunk it asks for with
//!    [`SaveEngine::slot_for`] / [`SaveEngine::start_chunk`].
//! 3. Readers: [`SaveEngine::peek`], copy, [`SaveEngine::consume`].
//! 4. PRE_COPY: [`SaveEngine::precopy_info`], [`SaveEngine::take_buffer`] +
//!    [`SaveEngine::start_precopy`]; leaving it: [`SaveEngine::start_final`]
//!    or [`SaveEngine::start_cleanup`].
//!
//! The policy mirrors the Linux driver (`kernel-behaviour.md`, "Saving
//! file"): chunk buffers of `max(required, min(chunk_size, total))`, two
//! slots, a 10 % head-room for PRE_COPY outside chunk mode, `2^32 - page`
//! cap; chunk size and slot count are parameters within compile-time maxima.

use core::fmt;

use heapless::{Deque, Vec};

use crate::errno::Errno;
use crate::ifc::CmdStatus;
use crate::ifc::migration::{MigrationStateSize, SaveResult, Scope, Tracking};
use crate::stream::{
    Header, STOP_COPY_SIZE_RECORD_LEN, StreamEnd, StreamInfo, encode_stop_copy_size,
};

#[cfg(test)]
mod tests;

/// The Linux driver's chunk size (`MAX_CHUNK_SIZE`).
pub const LINUX_CHUNK_SIZE: u64 = 8 << 20;
/// The Linux driver's number of chunk slots (`MAX_NUM_CHUNKS`).
pub const LINUX_CHUNK_SLOTS: u8 = 2;
/// Most chunk slots a session may use. More slots than this buys no
/// parallelism (one SAVE is in flight at a time) and only adds memory.
pub const MAX_CHUNK_SLOTS: usize = 8;
/// Largest SAVE buffer: the `size` field is 32 bits and Linux keeps one page
/// of margin (`BIT(32) - PAGE_SIZE`).
pub const MAX_SAVE_BUFFER: u64 = (1 << 32) - 4096;
/// Buffers kept for reuse after the reader is done with them. PRE_COPY starts
/// a SAVE only when nothing is queued, so at most two non-slot images (the
/// initial one and one incremental) are ever outstanding; two spare entries
/// cover failed SAVEs. A buffer that finds the list full is freed instead.
pub const MAX_AVAIL: usize = 4;
/// Queue entries. Outstanding at once: the opening records (stream-info and
/// STOP_COPY_SIZE: 2 entries), at most [`MAX_CHUNK_SLOTS`] unread stop-copy
/// chunks (back-pressure) and at most two unread PRE_COPY images, each a header
/// entry plus a buffer entry, and the end record: `2 + 2 * (slots + 2) + 1`.
pub const QUEUE_CAP: usize = 2 + 2 * (MAX_CHUNK_SLOTS + 2) + 1;

/// A buffer the device holds on the engine's behalf: the device's index for
/// it and its size in pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BufRef {
    /// The device's buffer-table index.
    pub index: u16,
    /// Pages.
    pub npages: u32,
}

/// Parameters of a saving session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SaveConfig {
    /// Firmware saves in chunks (`migration_in_chunks`).
    pub chunk_mode: bool,
    /// A PRE_COPY session (dirty tracking).
    pub tracking: bool,
    /// Largest chunk buffer the policy starts with (Linux: 8 MiB).
    pub chunk_size: u64,
    /// Chunk slots (Linux: 2).
    pub chunk_slots: u8,
    /// Bytes per page.
    pub page_size: u64,
    /// Cap on any SAVE buffer (at most [`MAX_SAVE_BUFFER`]).
    pub max_buffer: u64,
    /// Our stream-info record to put first; with it, an end record closes the
    /// stream. `None` writes exactly what Linux writes.
    pub stream_info: Option<StreamInfo>,
}

impl SaveConfig {
    /// The Linux policy: 8 MiB chunks, 2 slots, 4 KiB pages, no records of ours.
    pub const fn linux(chunk_mode: bool, tracking: bool) -> Self {
        Self {
            chunk_mode,
            tracking,
            chunk_size: LINUX_CHUNK_SIZE,
            chunk_slots: LINUX_CHUNK_SLOTS,
            page_size: 4096,
            max_buffer: MAX_SAVE_BUFFER,
            stream_info: None,
        }
    }

    fn slots(&self) -> usize {
        if self.chunk_mode {
            usize::from(self.chunk_slots).clamp(1, MAX_CHUNK_SLOTS)
        } else {
            1
        }
    }

    fn pages_for(&self, bytes: u64) -> u32 {
        let pages = bytes.div_ceil(self.page_size.max(1)).max(1);
        u32::try_from(pages).unwrap_or(u32::MAX)
    }

    fn bytes_of(&self, npages: u32) -> u64 {
        u64::from(npages).saturating_mul(self.page_size)
    }
}

/// The sizes decided when a saving file opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct OpenPlan {
    /// Pages of each stop-copy slot buffer.
    pub slot_pages: u32,
    /// Number of slot buffers to allocate.
    pub slots: u8,
    /// For PRE_COPY, pages of the fresh buffer the initial SAVE uses (the
    /// slot buffers stay reserved for stop-copy).
    pub initial_pages: Option<u32>,
}

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
        /// Whether chunk mode was in use.
        chunk_mode: bool,
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
                chunk_mode: false,
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

/// Computes the buffers a saving file starts with, from the first
/// QUERY_VHCA_MIGRATION_STATE (full scope) answer.
///
/// # Errors
/// [`SaveError::TooLarge`] when firmware needs more than one SAVE can hold.
pub fn plan_open(cfg: &SaveConfig, query: MigrationStateSize) -> Result<OpenPlan, SaveError> {
    let required = u64::from(query.required_umem_size);
    let limit = cfg.max_buffer.min(MAX_SAVE_BUFFER);
    if required > limit {
        return Err(SaveError::TooLarge {
            required,
            limit,
            chunk_mode: cfg.chunk_mode,
        });
    }
    let size = if cfg.chunk_mode {
        let total = query.remaining_total_size;
        required.max(cfg.chunk_size.min(total))
    } else if cfg.tracking {
        // Room for the stop-copy image to grow by 10 % while PRE_COPY runs.
        required.checked_add(required / 10).unwrap_or(required)
    } else {
        required
    };
    let size = size.min(limit);
    let slot_pages = cfg.pages_for(size);
    // CAST: slots() <= MAX_CHUNK_SLOTS = 8.
    let slots = cfg.slots() as u8;
    Ok(OpenPlan {
        slot_pages,
        slots,
        initial_pages: cfg.tracking.then_some(slot_pages),
    })
}

/// The file states of the Linux driver (`enum mlx5_vf_migf_state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FileState {
    /// Opened; the first SAVE has not completed.
    Opening,
    /// PRE_COPY data is flowing.
    PreCopy,
    /// A PRE_COPY SAVE failed with BAD_RES_STATE_ERR: no more incremental
    /// saves; the final save takes a full image.
    PreCopyError,
    /// Stop-copy chunks are being saved.
    StopCopy,
    /// The last chunk is saved; the stream ends when the queue drains.
    Complete,
    /// Failed; readers get `ENODEV`.
    Error,
}

/// What a SAVE is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SaveKind {
    /// The first PRE_COPY save (`inc=0 track=1`).
    Initial,
    /// A later PRE_COPY save (`inc=1 track=1`); `initial` when firmware
    /// reported new initial data (PRECOPY_INFOv2 REINIT), so its bytes count
    /// as initial bytes.
    PreCopy {
        /// The image is new initial data.
        initial: bool,
    },
    /// A stop-copy chunk into a slot (`track=0`).
    StopCopyChunk {
        /// The slot.
        slot: u8,
    },
    /// The PRE_COPY cleanup save (`inc=0 track=0`, data discarded).
    Cleanup,
}

/// A SAVE the device must issue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SaveRequest {
    /// The buffer.
    pub buf: BufRef,
    /// Full or incremental.
    pub scope: Scope,
    /// Tracking bit.
    pub tracking: Tracking,
    /// SAVE `size`: the buffer's whole length (as Linux sends it).
    pub size: u32,
    /// Why.
    pub kind: SaveKind,
}

/// What the device does after a completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AfterCompletion {
    /// Start the next stop-copy chunk into `slot` with a buffer of at least
    /// `min_bytes`.
    pub next: Option<NextChunk>,
    /// The buffer to give back when the completion was a cleanup save (its
    /// data is discarded).
    pub discard: Option<BufRef>,
}

/// A stop-copy chunk to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct NextChunk {
    /// The slot to fill.
    pub slot: u8,
    /// Minimum buffer bytes (`next_required_umem_size`).
    pub min_bytes: u64,
}

/// Whether a slot's buffer can take a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SlotBuffer {
    /// Big enough: use it.
    Fits(BufRef),
    /// Too small (or gone): free `old` (if any) and allocate `npages`.
    Grow {
        /// The buffer to free.
        old: Option<BufRef>,
        /// Pages to allocate.
        npages: u32,
    },
}

/// A buffer for a non-slot SAVE (PRE_COPY, cleanup): reuse one from the
/// available list, or allocate; buffers too small to reuse are freed
/// (as Linux's `mlx5vf_get_data_buffer` does).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TakeBuffer {
    /// A buffer to reuse, if any fits.
    pub reuse: Option<BufRef>,
    /// Pages to allocate when nothing fits.
    pub npages: u32,
    /// Buffers to free.
    pub free: Vec<BufRef, MAX_AVAIL>,
}

/// The next bytes the reader gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Segment<'a> {
    /// Bytes the engine holds (record headers, our records).
    Inline(&'a [u8]),
    /// Bytes of a buffer.
    Buffer {
        /// The buffer.
        buf: BufRef,
        /// Offset in it.
        offset: u64,
        /// Bytes available from there.
        len: u64,
    },
}

/// Why there is nothing to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Empty {
    /// End of stream (`read()` returns 0).
    EndOfStream,
    /// PRE_COPY drained for now (`ENOMSG`).
    NoMessage,
    /// Data will come (a SAVE is in flight or due): wait, or `EAGAIN`.
    WouldBlock,
    /// The file failed (`ENODEV`).
    Error,
}

/// What reading to the end of a queue entry released.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Consumed {
    /// A held-back chunk can start now (its slot's data was read).
    pub start: Option<NextChunk>,
    /// A buffer to free (the available list is full).
    pub free: Option<BufRef>,
}

/// VFIO_MIG_GET_PRECOPY_INFO numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PrecopyInfo {
    /// Bytes of the initial image still unread.
    pub initial_bytes: u64,
    /// Bytes of later changes: unread queued bytes plus what firmware has.
    pub dirty_bytes: u64,
    /// `VFIO_PRECOPY_INFO_REINIT` (PRECOPY_INFOv2 only): new initial data
    /// appeared; `initial_bytes` restarts from this value.
    pub reinit: bool,
}

/// An incremental PRE_COPY SAVE the device must start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PrecopyStart {
    /// Buffer bytes it needs.
    pub bytes: u64,
    /// It carries new initial data (REINIT).
    pub initial: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Entry {
    /// A record header or the STOP_COPY_SIZE record.
    Bytes {
        data: [u8; STOP_COPY_SIZE_RECORD_LEN],
        len: u8,
    },
    /// Our stream-info record (bytes held in the engine).
    Info,
    /// Our stream-end record (bytes held in the engine).
    End,
    /// Image bytes in a buffer; `slot` for stop-copy chunk buffers.
    Buffer {
        buf: BufRef,
        len: u32,
        slot: Option<u8>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    /// Holds its buffer, ready for the next chunk.
    Ready(BufRef),
    /// Its buffer is being saved into, or holds unread data.
    Busy,
    /// Its buffer was lost to a failed SAVE.
    Empty,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct InFlight {
    buf: BufRef,
    kind: SaveKind,
}

/// Counters a caller can show.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SaveStats {
    /// FW_DATA records queued.
    pub fw_data_records: u64,
    /// FW_DATA payload bytes queued.
    pub fw_data_bytes: u64,
    /// Stop-copy chunks saved.
    pub chunks: u64,
    /// SAVEs held back because every slot held unread data.
    pub held_back: u64,
    /// Buffers grown because a chunk needed more than the slot had.
    pub grown: u64,
}

/// One saving file's engine.
#[derive(Clone, Debug)]
pub struct SaveEngine {
    cfg: SaveConfig,
    state: FileState,
    queue: Deque<Entry, QUEUE_CAP>,
    /// Offset of the reader inside the head entry.
    head_off: u64,
    /// Stream position of the reader (`f_pos`).
    pos: u64,
    /// Stream bytes queued so far (`max_pos`).
    end_pos: u64,
    /// The initial-data region of the stream: `[initial_start, initial_start
    /// + initial_len)` (`pre_copy_initial_bytes_start` and
    /// `pre_copy_initial_bytes`); a REINIT moves it.
    initial_start: u64,
    initial_len: u64,
    /// A REINIT announced new initial data that is not saved yet: it is
    /// saved (as initial) once the reader drains what is queued, so REINITs
    /// can never outgrow the queue.
    reinit_pending: bool,
    slots: [Slot; MAX_CHUNK_SLOTS],
    ready_chunks: usize,
    held: Option<u32>,
    in_flight: Option<InFlight>,
    avail: Vec<BufRef, MAX_AVAIL>,
    crc: u32,
    stats: SaveStats,
    info: [u8; StreamInfo::RECORD_LEN],
    end: [u8; StreamEnd::RECORD_LEN],
}

impl SaveEngine {
    /// An engine with no session: the value [`SaveEngine::open`] starts
    /// from, and what a caller keeps in place between sessions.
    pub const IDLE: Self = Self {
        cfg: SaveConfig::linux(false, false),
        state: FileState::Opening,
        queue: Deque::new(),
        head_off: 0,
        pos: 0,
        end_pos: 0,
        initial_start: 0,
        initial_len: 0,
        reinit_pending: false,
        slots: [Slot::Empty; MAX_CHUNK_SLOTS],
        ready_chunks: 0,
        held: None,
        in_flight: None,
        avail: Vec::new(),
        crc: 0,
        stats: SaveStats {
            fw_data_records: 0,
            fw_data_bytes: 0,
            chunks: 0,
            held_back: 0,
            grown: 0,
        },
        info: [0; StreamInfo::RECORD_LEN],
        end: [0; StreamEnd::RECORD_LEN],
    };

    /// A new engine whose slot buffers (from [`plan_open`]) are `slot_bufs`;
    /// queues the opening records. [`SaveEngine::open`] does the same in
    /// place.
    ///
    /// # Errors
    /// As [`SaveEngine::open`].
    pub fn new(cfg: SaveConfig, slot_bufs: &[BufRef]) -> Result<Self, SaveError> {
        let mut e = Self::IDLE;
        e.open(cfg, slot_bufs)?;
        Ok(e)
    }

    /// Starts a new session in this engine, in place: slot buffers (from
    /// [`plan_open`]) `slot_bufs`, the opening records queued. Whatever it
    /// held is forgotten, buffers included (the device frees a session's
    /// buffers when it closes the session). The engine is over a kilobyte; a kernel caller opens it where
    /// it lives rather than moving a new one there from its 16 KiB stack.
    ///
    /// ```
    /// use mlx5vf_core::save::{BufRef, SaveConfig, SaveEngine};
    ///
    /// let mut engine = SaveEngine::IDLE;
    /// let slots = [BufRef { index: 0, npages: 2048 }, BufRef { index: 1, npages: 2048 }];
    /// engine.open(SaveConfig::linux(true, false), &slots)?;
    /// assert_eq!(engine.slot_count(), 2);
    /// # Ok::<(), mlx5vf_core::save::SaveError>(())
    /// ```
    ///
    /// # Errors
    /// [`SaveError::WrongState`] if the number of buffers does not match the
    /// configuration (the engine is then idle).
    pub fn open(&mut self, cfg: SaveConfig, slot_bufs: &[BufRef]) -> Result<(), SaveError> {
        *self = Self::IDLE;
        if slot_bufs.len() != cfg.slots() {
            return Err(SaveError::WrongState);
        }
        self.cfg = cfg;
        for (slot, buf) in self.slots.iter_mut().zip(slot_bufs) {
            *slot = Slot::Ready(*buf);
        }
        if let Some(info) = cfg.stream_info {
            info.encode_record(&mut self.info)
                .map_err(|_| SaveError::Capacity)?;
            // CAST: usize -> u64 is lossless.
            self.push(Entry::Info, StreamInfo::RECORD_LEN as u64)?;
        }
        let slot0 = slot_bufs.first().map_or(0, |b| b.npages);
        let mut data = [0u8; STOP_COPY_SIZE_RECORD_LEN];
        encode_stop_copy_size(&mut data, cfg.bytes_of(slot0)).map_err(|_| SaveError::Capacity)?;
        self.push(
            Entry::Bytes {
                data,
                // CAST: 24 fits u8.
                len: STOP_COPY_SIZE_RECORD_LEN as u8,
            },
            STOP_COPY_SIZE_RECORD_LEN as u64,
        )?;
        if cfg.tracking {
            self.initial_len = self.end_pos;
        }
        Ok(())
    }

    /// The file state.
    pub const fn state(&self) -> FileState {
        self.state
    }
    /// The configuration.
    pub const fn config(&self) -> &SaveConfig {
        &self.cfg
    }
    /// Counters.
    pub const fn stats(&self) -> SaveStats {
        self.stats
    }
    /// Stream bytes handed to the reader.
    pub const fn position(&self) -> u64 {
        self.pos
    }
    /// Stream bytes queued.
    pub const fn queued_end(&self) -> u64 {
        self.end_pos
    }
    /// Stop-copy chunks holding unread data.
    pub const fn ready_chunks(&self) -> usize {
        self.ready_chunks
    }
    /// Number of slots.
    pub fn slot_count(&self) -> usize {
        self.cfg.slots()
    }
    /// The SAVE in flight, if any.
    pub fn in_flight(&self) -> Option<(BufRef, SaveKind)> {
        self.in_flight.map(|f| (f.buf, f.kind))
    }
    /// Whether a SAVE was held back for lack of a free slot.
    pub const fn is_held_back(&self) -> bool {
        self.held.is_some()
    }
    /// CRC-32C of every FW_DATA byte queued so far.
    pub const fn payload_crc(&self) -> u32 {
        self.crc
    }

    /// Marks the file failed (readers get `ENODEV`).
    pub fn set_error(&mut self) {
        self.state = FileState::Error;
    }

    fn push(&mut self, entry: Entry, len: u64) -> Result<(), SaveError> {
        self.queue
            .push_back(entry)
            .map_err(|_| SaveError::Capacity)?;
        self.end_pos = self.end_pos.saturating_add(len);
        Ok(())
    }

    fn request(
        &mut self,
        buf: BufRef,
        scope: Scope,
        tracking: Tracking,
        kind: SaveKind,
    ) -> SaveRequest {
        let size = u32::try_from(self.cfg.bytes_of(buf.npages)).unwrap_or(u32::MAX);
        self.in_flight = Some(InFlight { buf, kind });
        if matches!(kind, SaveKind::StopCopyChunk { .. }) {
            self.state = FileState::StopCopy;
        }
        SaveRequest {
            buf,
            scope,
            tracking,
            size,
            kind,
        }
    }

    /// The first SAVE: into `fresh` (PRE_COPY, `inc=0 track=1`) or into slot
    /// 0's buffer (stop-copy, `inc=0 track=0`).
    ///
    /// # Errors
    /// [`SaveError::WrongState`] if a SAVE is in flight, slot 0 is not ready,
    /// or `fresh` is missing for PRE_COPY.
    pub fn first_save(&mut self, fresh: Option<BufRef>) -> Result<SaveRequest, SaveError> {
        if self.in_flight.is_some() || self.state != FileState::Opening {
            return Err(SaveError::WrongState);
        }
        if self.cfg.tracking {
            let buf = fresh.ok_or(SaveError::WrongState)?;
            Ok(self.request(buf, Scope::Full, Tracking::Track, SaveKind::Initial))
        } else {
            let buf = self.take_slot(0)?;
            Ok(self.request(
                buf,
                Scope::Full,
                Tracking::Untracked,
                SaveKind::StopCopyChunk { slot: 0 },
            ))
        }
    }

    fn take_slot(&mut self, slot: u8) -> Result<BufRef, SaveError> {
        let s = self
            .slots
            .get_mut(usize::from(slot))
            .ok_or(SaveError::WrongState)?;
        match *s {
            Slot::Ready(buf) => {
                *s = Slot::Busy;
                Ok(buf)
            }
            Slot::Busy | Slot::Empty => Err(SaveError::WrongState),
        }
    }

    /// Checks a SAVE result against the buffer it was saved into, before
    /// anything reads the buffer. Returns the image length.
    ///
    /// # Errors
    /// [`SaveError::NoSaveInFlight`], [`SaveError::ImageOverflow`].
    pub fn check_completion(&self, result: &SaveResult) -> Result<u32, SaveError> {
        let f = self.in_flight.ok_or(SaveError::NoSaveInFlight)?;
        let buffer = self.cfg.bytes_of(f.buf.npages);
        if u64::from(result.actual_image_size) > buffer {
            return Err(SaveError::ImageOverflow {
                actual: result.actual_image_size,
                buffer,
            });
        }
        Ok(result.actual_image_size)
    }

    /// Applies a successful SAVE; `crc_after` is [`SaveEngine::payload_crc`]
    /// continued over the image bytes (ignored for cleanup saves).
    ///
    /// # Errors
    /// As [`SaveEngine::check_completion`], plus [`SaveError::TooLarge`] for a
    /// `next_required_umem_size` above the cap and [`SaveError::Capacity`].
    /// On error the file is in error; the device frees the buffers when the
    /// file closes.
    pub fn complete(
        &mut self,
        result: SaveResult,
        crc_after: u32,
    ) -> Result<AfterCompletion, SaveError> {
        let image = match self.check_completion(&result) {
            Ok(image) => image,
            Err(e) => {
                self.state = FileState::Error;
                let _ = self.fail_in_flight();
                return Err(e);
            }
        };
        let Some(f) = self.in_flight.take() else {
            return Err(SaveError::NoSaveInFlight);
        };
        if f.kind == SaveKind::Cleanup {
            return Ok(AfterCompletion {
                next: None,
                discard: Some(f.buf),
            });
        }
        let slot = match f.kind {
            SaveKind::StopCopyChunk { slot } => Some(slot),
            _ => None,
        };
        // Only chunk-mode slot buffers read next_required_umem_size.
        let mut next = match slot {
            Some(_) if self.cfg.chunk_mode => result.next_required_umem_size,
            _ => 0,
        };
        let limit = self.cfg.max_buffer.min(MAX_SAVE_BUFFER);
        if u64::from(next) > limit {
            let _ = self.recycle(f.buf);
            self.state = FileState::Error;
            return Err(SaveError::TooLarge {
                required: u64::from(next),
                limit,
                chunk_mode: true,
            });
        }
        let header = Header::fw_data(u64::from(image)).to_bytes();
        let mut data = [0u8; STOP_COPY_SIZE_RECORD_LEN];
        data.get_mut(..header.len())
            .unwrap_or_default()
            .copy_from_slice(&header);
        let pushed = self
            .push(
                Entry::Bytes {
                    data,
                    // CAST: 16 fits u8.
                    len: header.len() as u8,
                },
                header.len() as u64,
            )
            .and_then(|()| {
                self.push(
                    Entry::Buffer {
                        buf: f.buf,
                        len: image,
                        slot,
                    },
                    u64::from(image),
                )
            });
        if let Err(e) = pushed {
            let _ = self.recycle(f.buf);
            self.state = FileState::Error;
            return Err(e);
        }
        self.crc = crc_after;
        self.stats.fw_data_records = self.stats.fw_data_records.saturating_add(1);
        self.stats.fw_data_bytes = self.stats.fw_data_bytes.saturating_add(u64::from(image));
        let first_precopy = self.state != FileState::PreCopy && slot.is_none();
        let initial = first_precopy || f.kind == SaveKind::PreCopy { initial: true };
        if slot.is_some() {
            self.stats.chunks = self.stats.chunks.saturating_add(1);
            self.ready_chunks = self.ready_chunks.saturating_add(1);
            if next != 0 && self.ready_chunks >= self.cfg.slots() {
                // Every slot holds unread data: wait for the reader.
                self.held = Some(next);
                self.stats.held_back = self.stats.held_back.saturating_add(1);
                next = 0;
            }
        }
        if initial {
            self.initial_len = self
                .initial_len
                // CAST: header length 16.
                .saturating_add(header.len() as u64)
                .saturating_add(u64::from(image));
        }
        if first_precopy {
            self.state = FileState::PreCopy;
        }
        let last = slot.is_some() && next == 0 && self.held.is_none();
        if last {
            self.finish()?;
        }
        let next = match (slot, next) {
            (Some(s), n) if n != 0 => Some(NextChunk {
                // CAST: the remainder is below slots() <= 8, so it fits u8.
                slot: usize::from(s)
                    .saturating_add(1)
                    .checked_rem(self.cfg.slots())
                    .unwrap_or(0) as u8,
                min_bytes: u64::from(n),
            }),
            _ => None,
        };
        Ok(AfterCompletion {
            next,
            discard: None,
        })
    }

    fn finish(&mut self) -> Result<(), SaveError> {
        self.state = FileState::Complete;
        if self.cfg.stream_info.is_some() {
            let end = StreamEnd {
                fw_data_records: self.stats.fw_data_records,
                fw_data_bytes: self.stats.fw_data_bytes,
                crc32c: self.crc,
            };
            end.encode_record(&mut self.end)
                .map_err(|_| SaveError::Capacity)?;
            // CAST: usize -> u64 is lossless.
            self.push(Entry::End, StreamEnd::RECORD_LEN as u64)?;
        }
        Ok(())
    }

    /// Applies a failed SAVE (`status` is the firmware status when firmware
    /// refused it). A PRE_COPY save refused with BAD_RES_STATE_ERR moves the
    /// file to [`FileState::PreCopyError`] (recoverable); anything else to
    /// [`FileState::Error`]. The buffer goes back to the available list.
    ///
    /// Returns a buffer the device should free now (when the available list
    /// is full); any buffer the engine stops tracking is otherwise freed by the
    /// device when the file closes.
    ///
    /// # Errors
    /// [`SaveError::NoSaveInFlight`].
    pub fn fail(&mut self, status: Option<CmdStatus>) -> Result<Option<BufRef>, SaveError> {
        let f = self.in_flight.ok_or(SaveError::NoSaveInFlight)?;
        let free = self.fail_in_flight();
        let stop_copy = matches!(f.kind, SaveKind::StopCopyChunk { .. });
        self.state = if !stop_copy && status == Some(CmdStatus::BadResStateErr) {
            FileState::PreCopyError
        } else {
            FileState::Error
        };
        Ok(free)
    }

    fn fail_in_flight(&mut self) -> Option<BufRef> {
        let f = self.in_flight.take()?;
        // A slot's buffer becomes an ordinary one, as in Linux; the slot is
        // empty from now on.
        if let SaveKind::StopCopyChunk { slot } = f.kind {
            if let Some(s) = self.slots.get_mut(usize::from(slot)) {
                *s = Slot::Empty;
            }
        }
        self.recycle(f.buf)
    }

    /// Puts a buffer on the available list; returns it if the list is full
    /// (the caller frees it, or the device does when the file closes).
    #[must_use]
    fn recycle(&mut self, buf: BufRef) -> Option<BufRef> {
        self.avail.push(buf).err()
    }

    /// Whether `slot`'s buffer can take a chunk of `min_bytes`.
    ///
    /// # Errors
    /// [`SaveError::WrongState`] for a slot that is busy, or out of range.
    pub fn slot_for(&self, slot: u8, min_bytes: u64) -> Result<SlotBuffer, SaveError> {
        let npages = self.cfg.pages_for(min_bytes);
        match self.slots.get(usize::from(slot)) {
            Some(Slot::Ready(buf)) if buf.npages >= npages => Ok(SlotBuffer::Fits(*buf)),
            Some(Slot::Ready(buf)) => Ok(SlotBuffer::Grow {
                old: Some(*buf),
                npages,
            }),
            Some(Slot::Empty) => Ok(SlotBuffer::Grow { old: None, npages }),
            Some(Slot::Busy) | None => Err(SaveError::WrongState),
        }
    }

    /// Gives `slot` a new buffer after [`SlotBuffer::Grow`].
    ///
    /// # Errors
    /// [`SaveError::WrongState`] for a busy slot.
    pub fn set_slot(&mut self, slot: u8, buf: BufRef) -> Result<(), SaveError> {
        match self.slots.get_mut(usize::from(slot)) {
            Some(s @ (Slot::Ready(_) | Slot::Empty)) => {
                *s = Slot::Ready(buf);
                self.stats.grown = self.stats.grown.saturating_add(1);
                Ok(())
            }
            _ => Err(SaveError::WrongState),
        }
    }

    /// Starts a stop-copy chunk into `slot` (whose buffer fits): `inc=1
    /// track=0`, or `inc=0` after a PRE_COPY error or when there was no
    /// PRE_COPY (Linux passes `inc=1` for every later chunk; firmware
    /// continues the image it is saving).
    ///
    /// # Errors
    /// [`SaveError::WrongState`] if a SAVE is in flight or the slot is not
    /// ready; [`SaveError::FileError`] if the file failed.
    pub fn start_chunk(&mut self, slot: u8) -> Result<SaveRequest, SaveError> {
        if self.state == FileState::Error {
            return Err(SaveError::FileError);
        }
        if self.in_flight.is_some() {
            return Err(SaveError::WrongState);
        }
        let buf = self.take_slot(slot)?;
        let scope = if self.state == FileState::PreCopyError {
            Scope::Full
        } else {
            Scope::Incremental
        };
        Ok(self.request(
            buf,
            scope,
            Tracking::Untracked,
            SaveKind::StopCopyChunk { slot },
        ))
    }

    /// The final save when PRE_COPY ends (PRE_COPY_P2P → STOP_COPY) goes to
    /// slot 0 with `inc=1 track=0` (`inc=0` after a PRE_COPY error). Check
    /// the slot with [`SaveEngine::slot_for`] first.
    ///
    /// # Errors
    /// As [`SaveEngine::start_chunk`].
    pub fn start_final(&mut self) -> Result<SaveRequest, SaveError> {
        self.start_chunk(0)
    }

    /// The next bytes for the reader.
    ///
    /// # Errors
    /// Why nothing is readable.
    pub fn peek(&self) -> Result<Segment<'_>, Empty> {
        if self.state == FileState::Error {
            return Err(Empty::Error);
        }
        let Some(head) = self.queue.front() else {
            return Err(match self.state {
                FileState::Complete => Empty::EndOfStream,
                // A SAVE in flight will add data: wait for it rather than
                // reporting a temporary end (the v7.1 fix).
                FileState::PreCopy | FileState::PreCopyError if self.in_flight.is_none() => {
                    Empty::NoMessage
                }
                _ => Empty::WouldBlock,
            });
        };
        let off = usize::try_from(self.head_off).unwrap_or(usize::MAX);
        Ok(match *head {
            Entry::Bytes { ref data, len } => {
                Segment::Inline(data.get(off..usize::from(len)).unwrap_or_default())
            }
            Entry::Info => Segment::Inline(self.info.get(off..).unwrap_or_default()),
            Entry::End => Segment::Inline(self.end.get(off..).unwrap_or_default()),
            Entry::Buffer { buf, len, .. } => Segment::Buffer {
                buf,
                offset: self.head_off,
                len: u64::from(len).saturating_sub(self.head_off),
            },
        })
    }

    /// The reader consumed `n` bytes of the segment [`SaveEngine::peek`]
    /// returned (`n` is clamped to it).
    pub fn consume(&mut self, n: u64) -> Consumed {
        let mut out = Consumed::default();
        let Some(head) = self.queue.front().copied() else {
            return out;
        };
        let len = match head {
            Entry::Bytes { len, .. } => u64::from(len),
            // CAST: usize -> u64 is lossless.
            Entry::Info => StreamInfo::RECORD_LEN as u64,
            Entry::End => StreamEnd::RECORD_LEN as u64,
            Entry::Buffer { len, .. } => u64::from(len),
        };
        let n = n.min(len.saturating_sub(self.head_off));
        self.head_off = self.head_off.saturating_add(n);
        self.pos = self.pos.saturating_add(n);
        if self.head_off < len {
            return out;
        }
        self.head_off = 0;
        let _ = self.queue.pop_front();
        if let Entry::Buffer { buf, slot, .. } = head {
            match slot {
                Some(s) => {
                    if let Some(slot) = self.slots.get_mut(usize::from(s)) {
                        *slot = Slot::Ready(buf);
                    }
                    self.ready_chunks = self.ready_chunks.saturating_sub(1);
                    if let Some(min) = self.held.take() {
                        out.start = Some(NextChunk {
                            slot: s,
                            min_bytes: u64::from(min),
                        });
                    }
                }
                None => out.free = self.recycle(buf),
            }
        }
        out
    }

    /// VFIO_MIG_GET_PRECOPY_INFO, given the incremental size firmware reports
    /// (`inc_len`; 0 in PRE_COPY_P2P and after a PRE_COPY error) and whether
    /// firmware reported new initial data with PRECOPY_INFOv2 opted in
    /// (`reinit`). Returns the numbers and, when the reader has drained
    /// everything (or on REINIT) and firmware has data, the incremental SAVE
    /// to start.
    ///
    /// On REINIT, bytes queued but unread count as initial bytes (the reader
    /// must read them before the new initial data), as the Linux patch does.
    ///
    /// # Errors
    /// [`SaveError::FileError`] when the file failed.
    pub fn precopy_info(
        &mut self,
        inc_len: u64,
        reinit: bool,
    ) -> Result<(PrecopyInfo, Option<PrecopyStart>), SaveError> {
        if self.state == FileState::Error {
            return Err(SaveError::FileError);
        }
        let unread = self.end_pos.saturating_sub(self.pos);
        let mut info = PrecopyInfo::default();
        if reinit {
            self.initial_start = self.pos;
            self.initial_len = unread;
            self.reinit_pending = true;
            info.initial_bytes = unread.saturating_add(inc_len);
            info.reinit = true;
        } else {
            // The new initial data still in firmware counts as initial too.
            let pending = if self.reinit_pending { inc_len } else { 0 };
            let initial_end = self.initial_start.saturating_add(self.initial_len);
            if initial_end > self.pos {
                info.initial_bytes = initial_end.saturating_sub(self.pos).saturating_add(pending);
                return Ok((info, None));
            }
            if self.reinit_pending {
                info.initial_bytes = unread.saturating_add(inc_len);
            } else {
                info.dirty_bytes = unread.saturating_add(inc_len);
            }
        }
        // Only a drained queue takes a new image (a REINIT waits too).
        let start =
            (unread == 0 && inc_len != 0 && self.in_flight.is_none()).then_some(PrecopyStart {
                bytes: inc_len,
                initial: self.reinit_pending,
            });
        Ok((info, start))
    }

    /// A buffer of at least `min_bytes` for a non-slot SAVE.
    pub fn take_buffer(&mut self, min_bytes: u64) -> TakeBuffer {
        let npages = self.cfg.pages_for(min_bytes);
        let mut out = TakeBuffer {
            reuse: None,
            npages,
            free: Vec::new(),
        };
        while let Some(buf) = self.avail.pop() {
            if buf.npages >= npages {
                out.reuse = Some(buf);
                break;
            }
            // Too small: free it rather than keep redundant buffers.
            let _ = out.free.push(buf);
        }
        out
    }

    /// Starts an incremental PRE_COPY save (`inc=1 track=1`) into `buf`;
    /// `initial` as [`PrecopyStart::initial`] said.
    ///
    /// # Errors
    /// [`SaveError::WrongState`] outside PRE_COPY or with a SAVE in flight.
    pub fn start_precopy(&mut self, buf: BufRef, initial: bool) -> Result<SaveRequest, SaveError> {
        if self.state != FileState::PreCopy || self.in_flight.is_some() {
            return Err(SaveError::WrongState);
        }
        if initial {
            self.reinit_pending = false;
        }
        Ok(self.request(
            buf,
            Scope::Incremental,
            Tracking::Track,
            SaveKind::PreCopy { initial },
        ))
    }

    /// Starts the cleanup save that tells firmware PRE_COPY is over (`inc=0
    /// track=0`); its data is discarded.
    ///
    /// # Errors
    /// [`SaveError::WrongState`] with a SAVE in flight.
    pub fn start_cleanup(&mut self, buf: BufRef) -> Result<SaveRequest, SaveError> {
        if self.in_flight.is_some() {
            return Err(SaveError::WrongState);
        }
        Ok(self.request(buf, Scope::Full, Tracking::Untracked, SaveKind::Cleanup))
    }
}
