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
//!
//! By concept: `policy` (sizes, the opening plan), `slots` (stop-copy chunk
//! slots), `queue` (what the reader gets next), `precopy` (PRE_COPY info,
//! incremental and cleanup SAVEs, reusable buffers), `error`; this file holds
//! the engine's state and the SAVE lifecycle (open, first SAVE, completion,
//! failure).

use heapless::{Deque, Vec};

use crate::ifc::CmdStatus;
use crate::ifc::migration::{SaveResult, Scope, Tracking};
use crate::stream::{
    Header, STOP_COPY_SIZE_RECORD_LEN, StreamEnd, StreamInfo, encode_stop_copy_size,
};

mod error;
mod policy;
mod precopy;
mod queue;
mod slots;
#[cfg(test)]
mod tests;

pub use error::SaveError;
pub use policy::{
    BufRef, LINUX_CHUNK_SIZE, LINUX_CHUNK_SLOTS, MAX_CHUNK_SLOTS, MAX_SAVE_BUFFER, OpenPlan,
    SaveConfig, plan_open,
};
pub use precopy::{PrecopyInfo, PrecopyStart, TakeBuffer};
pub use queue::{Consumed, Empty, Segment};
pub use slots::SlotBuffer;

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
}
