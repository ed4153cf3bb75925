//! The saving engine: a sans-IO state machine for one saving file.
//!
//! It decides how big buffers are, which chunk slot the next SAVE fills,
//! when to hold a SAVE back (never more unread chunks than slots), when a
//! slot's buffer must grow, which bytes of which buffer the reader gets next
//! (record headers included), when the stream is complete, and the PRE_COPY
//! accounting. It never calls anything: in the manner of quinn-proto's
//! `Connection`, events go in through `handle_*` methods and what must be
//! done comes out of [`SaveEngine::poll_action`] as [`SaveAction`]s (issue
//! this SAVE, allocate a buffer, free one), which
//! [`Device`](crate::device::Device) drains in one loop after every input.
//!
//! # Call order (what the device does)
//! 1. [`plan_open`] with the first QUERY's answer, allocate the slots'
//!    buffers, then [`SaveEngine::open`] and [`SaveEngine::first_save`].
//! 2. Drain [`SaveEngine::poll_action`]: [`SaveAction::Save`] → issue it;
//!    [`SaveAction::Allocate`] → allocate and [`SaveEngine::handle_buffer`];
//!    [`SaveAction::Free`] → free. When the driver cannot do an action it
//!    calls [`SaveEngine::handle_save_failed`] (a SAVE) or
//!    [`SaveEngine::fail`] (a buffer).
//! 3. A SAVE's end: [`SaveEngine::check_completion`] (before anything reads
//!    the buffer), then [`SaveEngine::handle_completion`], or
//!    [`SaveEngine::handle_save_failed`]; drain.
//! 4. Readers: [`SaveEngine::peek`], copy, [`SaveEngine::handle_consumed`];
//!    drain (a chunk held back for a free slot starts here).
//! 5. PRE_COPY: [`SaveEngine::precopy_info`]; leaving it:
//!    [`SaveEngine::start_final`] or [`SaveEngine::start_cleanup`]; drain.
//!
//! The file's phase is one private enum carrying the data that belongs to
//! it (a held-back chunk in stop-copy, the reason in failure), entered in
//! failure only through [`SaveEngine::fail`]; [`SaveEngine::state`] shows it
//! as the Linux driver's file states.
//!
//! The policy mirrors the Linux driver (`kernel-behaviour.md`, "Saving
//! file"): chunk buffers of `max(required, min(chunk_size, total))`, two
//! slots, a 10 % head-room for PRE_COPY outside chunk mode, `2^32 - page`
//! cap; chunk size and slot count are parameters within compile-time maxima.
//!
//! By concept: `policy` (sizes, the opening plan), `actions` (what the
//! driver must do, and the buffers it hands back), `slots` (stop-copy chunk
//! slots), `queue` (what the reader gets next), `precopy` (PRE_COPY info,
//! incremental and cleanup SAVEs, reusable buffers), `completion` (what a
//! SAVE's end does to the file), `error`; this file holds the engine's state,
//! opening, the first SAVE and the one way into failure.

use heapless::{Deque, Vec};

use crate::ifc::migration::{Scope, Tracking};
use crate::macros::{trace, trace_warn};
use crate::stream::{STOP_COPY_SIZE_RECORD_LEN, StreamEnd, StreamInfo, encode_stop_copy_size};

mod actions;
mod completion;
mod error;
mod policy;
mod precopy;
mod queue;
mod slots;
#[cfg(test)]
mod tests;
mod tuning;

pub use actions::{MAX_ACTIONS, SaveAction};
pub use error::{SaveError, SaveFailure};
pub use policy::{
    BufRef, ImageMode, LINUX_CHUNK_SIZE, LINUX_CHUNK_SLOTS, MAX_CHUNK_SLOTS, MAX_SAVE_BUFFER,
    OpenPlan, PrecopyPolicy, SaveConfig, plan_open,
};
pub use precopy::PrecopyInfo;
pub use queue::{Empty, Segment};
pub use tuning::{
    ChunkPolicy, DEFAULT_MEMORY_CAP, FirmwareSpeed, LATENCY_SHARE, MIN_TUNED_CHUNK, SpeedMeter,
    downtime_chunk_size, tuned_chunk_size,
};

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
    /// Failed; readers get `ENODEV` ([`SaveEngine::failure`] says why).
    Error,
}

/// The file's phase, with the data that only exists in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Opening,
    PreCopy {
        /// The next chunk of a chunked PRE_COPY image, due but waiting for
        /// the reader to free a slot.
        held: Option<HeldPreCopy>,
        /// The VF is suspended (PRE_COPY_P2P): no further PRE_COPY chunks
        /// start; the final save moves what remains.
        paused: bool,
    },
    PreCopyError,
    StopCopy {
        /// A chunk of this many bytes is due but every slot holds unread
        /// data: it starts when the reader frees one.
        held: Option<u32>,
    },
    Complete,
    Failed(SaveFailure),
}

/// A chunked PRE_COPY image's next chunk, held back for a free slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct HeldPreCopy {
    /// Minimum buffer bytes.
    min: u32,
    /// The image is initial data.
    initial: bool,
}

/// Which chain of slot SAVEs a chunk continues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chain {
    /// A chunked PRE_COPY image (tracked).
    PreCopy {
        /// The image is initial data.
        initial: bool,
    },
    /// The stop-copy image (untracked).
    StopCopy,
}

impl Phase {
    const PRE_COPY: Self = Self::PreCopy {
        held: None,
        paused: false,
    };
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
    /// A chunk of a PRE_COPY image into a slot (chunked PRE_COPY:
    /// `inc=0 track=1` for the very first, `inc=1 track=1` after).
    PreCopyChunk {
        /// The slot.
        slot: u8,
        /// The image is initial data (the first image, or after REINIT).
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
    /// Its buffer was lost to a failed SAVE, or is being replaced by a
    /// bigger one.
    Empty,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct InFlight {
    buf: BufRef,
    kind: SaveKind,
}

/// What a buffer the engine asked for ([`SaveAction::Allocate`]) is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wanted {
    /// A bigger buffer for this slot; its chunk starts when it arrives.
    Slot(u8, Chain),
    /// A buffer for a non-slot SAVE of this kind.
    Fresh(SaveKind),
}

/// Counters a caller can show.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SaveStats {
    /// FW_DATA records queued.
    pub fw_data_records: u64,
    /// FW_DATA payload bytes queued.
    pub fw_data_bytes: u64,
    /// Chunks saved into the slots (stop-copy, and chunked PRE_COPY).
    pub chunks: u64,
    /// SAVEs held back because every slot held unread data.
    pub held_back: u64,
    /// Buffers grown because a chunk needed more than the slot had.
    pub grown: u64,
    /// The slot buffer size in use: the opening one, or the latest
    /// [`SaveEngine::retune_chunk`].
    pub chunk_size: u64,
}

/// One saving file's engine.
#[derive(Clone, Debug)]
pub struct SaveEngine {
    cfg: SaveConfig,
    phase: Phase,
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
    /// Pages each slot buffer should have once the policy was retuned
    /// ([`SaveEngine::retune_chunk`]); `None`: whatever fits.
    slot_target: Option<u32>,
    ready_chunks: usize,
    in_flight: Option<InFlight>,
    /// The buffer an outstanding [`SaveAction::Allocate`] is for.
    wanted: Option<Wanted>,
    /// Bytes the running chunked PRE_COPY chain may still move: what
    /// firmware held when the chain started. A chain ends when firmware has
    /// no next chunk or this is spent, so data dirtied while it runs waits
    /// for the next round instead of extending the chain without end.
    chain_budget: u64,
    actions: Deque<SaveAction, MAX_ACTIONS>,
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
        cfg: SaveConfig::linux(ImageMode::Single, crate::vfio::SaveMode::StopCopy),
        phase: Phase::Opening,
        queue: Deque::new(),
        head_off: 0,
        pos: 0,
        end_pos: 0,
        initial_start: 0,
        initial_len: 0,
        reinit_pending: false,
        slots: [Slot::Empty; MAX_CHUNK_SLOTS],
        slot_target: None,
        ready_chunks: 0,
        in_flight: None,
        wanted: None,
        chain_budget: 0,
        actions: Deque::new(),
        avail: Vec::new(),
        crc: 0,
        stats: SaveStats {
            fw_data_records: 0,
            fw_data_bytes: 0,
            chunks: 0,
            held_back: 0,
            grown: 0,
            chunk_size: 0,
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
    /// buffers when it closes the session). The engine is over a kilobyte; a
    /// kernel caller opens it where it lives rather than moving a new one
    /// there from its 16 KiB stack.
    ///
    /// ```
    /// use mlx5vf_core::save::{BufRef, ImageMode, SaveConfig, SaveEngine};
    /// use mlx5vf_core::vfio::SaveMode;
    ///
    /// let mut engine = SaveEngine::IDLE;
    /// let slots = [BufRef { index: 0, npages: 2048 }, BufRef { index: 1, npages: 2048 }];
    /// engine.open(SaveConfig::linux(ImageMode::Chunked, SaveMode::StopCopy), &slots)?;
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
        self.stats.chunk_size = cfg.bytes_of(slot_bufs.first().map_or(0, |b| b.npages));
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
        if cfg.tracking() {
            self.initial_len = self.end_pos;
        }
        Ok(())
    }

    /// The file state.
    pub const fn state(&self) -> FileState {
        match self.phase {
            Phase::Opening => FileState::Opening,
            Phase::PreCopy { .. } => FileState::PreCopy,
            Phase::PreCopyError => FileState::PreCopyError,
            Phase::StopCopy { .. } => FileState::StopCopy,
            Phase::Complete => FileState::Complete,
            Phase::Failed(_) => FileState::Error,
        }
    }
    /// Why the file failed, once it has.
    pub const fn failure(&self) -> Option<SaveFailure> {
        match self.phase {
            Phase::Failed(why) => Some(why),
            _ => None,
        }
    }
    /// Whether the file failed.
    pub const fn is_failed(&self) -> bool {
        matches!(self.phase, Phase::Failed(_))
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
        matches!(
            self.phase,
            Phase::StopCopy { held: Some(_) } | Phase::PreCopy { held: Some(_), .. }
        )
    }

    /// The first image is still being saved (chunked PRE_COPY: its chunks
    /// chain until firmware says none is left).
    fn initial_image_open(&self) -> bool {
        matches!(self.phase, Phase::Opening)
            || matches!(
                self.in_flight,
                Some(InFlight {
                    kind: SaveKind::PreCopyChunk { initial: true, .. },
                    ..
                })
            )
            || matches!(
                self.phase,
                Phase::PreCopy {
                    held: Some(HeldPreCopy { initial: true, .. }),
                    ..
                }
            )
    }
    /// CRC-32C of every FW_DATA byte queued so far.
    pub const fn payload_crc(&self) -> u32 {
        self.crc
    }

    /// Puts the file in failure for `why`: the one way into that phase.
    /// Readers get `ENODEV` from now on; queued SAVEs and allocations are
    /// dropped (queued frees stay: the driver still owes them). The first
    /// reason sticks. Buffers the engine stops tracking are freed by the
    /// device when the session closes.
    pub fn fail(&mut self, why: SaveFailure) {
        if self.is_failed() {
            return;
        }
        trace_warn!("save: file failed: {}", why);
        self.phase = Phase::Failed(why);
        self.wanted = None;
        let mut keep = Deque::<SaveAction, MAX_ACTIONS>::new();
        while let Some(action) = self.actions.pop_front() {
            if let SaveAction::Free(_) = action {
                // Cannot overflow: `keep` has the same capacity.
                let _ = keep.push_back(action);
            }
        }
        self.actions = keep;
    }

    fn request(&mut self, buf: BufRef, kind: SaveKind) -> SaveRequest {
        let size = u32::try_from(self.cfg.bytes_of(buf.npages)).unwrap_or(u32::MAX);
        let (scope, tracking) = match kind {
            SaveKind::Initial | SaveKind::Cleanup => (
                Scope::Full,
                if kind == SaveKind::Initial {
                    Tracking::Track
                } else {
                    Tracking::Untracked
                },
            ),
            SaveKind::PreCopy { .. } => (Scope::Incremental, Tracking::Track),
            SaveKind::PreCopyChunk { .. } => (
                if self.phase == Phase::Opening {
                    Scope::Full
                } else {
                    Scope::Incremental
                },
                Tracking::Track,
            ),
            // Linux passes inc=1 for every chunk after a PRE_COPY (firmware
            // continues the image it is saving); a full image after a
            // PRE_COPY error or without PRE_COPY.
            SaveKind::StopCopyChunk { .. } => (
                match self.phase {
                    Phase::PreCopyError => Scope::Full,
                    Phase::Opening if !self.cfg.tracking() => Scope::Full,
                    _ => Scope::Incremental,
                },
                Tracking::Untracked,
            ),
        };
        self.in_flight = Some(InFlight { buf, kind });
        if matches!(kind, SaveKind::StopCopyChunk { .. })
            && !matches!(self.phase, Phase::StopCopy { .. })
        {
            self.phase = Phase::StopCopy { held: None };
        }
        trace!("save: SAVE into buffer {} ({} bytes)", buf.index, size);
        SaveRequest {
            buf,
            scope,
            tracking,
            size,
            kind,
        }
    }

    /// Queues the first SAVE: into a fresh buffer of
    /// [`OpenPlan::initial_pages`] (PRE_COPY under the Linux policy, `inc=0
    /// track=1`), or into slot 0's buffer (chunked PRE_COPY, `inc=0
    /// track=1`, the first of a chain of [`OpenPlan::state_bytes`]; stop-copy,
    /// `inc=0 track=0`).
    ///
    /// # Errors
    /// [`SaveError::WrongState`] if a SAVE is in flight, slot 0 is not ready,
    /// or `initial_pages` is missing for PRE_COPY.
    pub fn first_save(&mut self, plan: &OpenPlan) -> Result<(), SaveError> {
        if self.in_flight.is_some() || self.phase != Phase::Opening {
            return Err(SaveError::WrongState);
        }
        if self.cfg.chunked_precopy() {
            self.chain_budget = plan.state_bytes;
            let buf = self.take_slot(0)?;
            let req = self.request(
                buf,
                SaveKind::PreCopyChunk {
                    slot: 0,
                    initial: true,
                },
            );
            self.act(SaveAction::Save(req))
        } else if self.cfg.tracking() {
            let npages = plan.initial_pages.ok_or(SaveError::WrongState)?;
            self.want(Wanted::Fresh(SaveKind::Initial), npages)
        } else {
            let buf = self.take_slot(0)?;
            let req = self.request(buf, SaveKind::StopCopyChunk { slot: 0 });
            self.act(SaveAction::Save(req))
        }
    }
}
