//! One VF's migration model: the VHCA suspend state machine, the save
//! session (tracking, pending and dirty objects), the load session, and
//! the guest workload that dirties objects while the VF runs.

use crate::bitset::BitSet;
use crate::image::{
    self, IMAGE_HEADER_LEN, ImageError, ImageHeader, ImageKind, Window, WindowFault,
};
use crate::objects::{GOLDEN_STEP, GenParams, Layout, ObjectStore, mix64};
use crate::syndrome::Syndrome;

use super::config::{MAX_VFS, PfConfig, VfConfig};

/// Where a VF is in the SUSPEND/RESUME state machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SuspendState {
    /// Running (VFIO RUNNING).
    Running,
    /// SUSPEND(INITIATOR) done: no new outgoing traffic (VFIO RUNNING_P2P).
    InitiatorSuspended,
    /// SUSPEND(RESPONDER) done: fully stopped (VFIO STOP); LOAD allowed.
    Suspended,
}

impl SuspendState {
    /// `true` while the guest workload runs (Running or InitiatorSuspended).
    #[must_use]
    pub fn is_running(self) -> bool {
        !matches!(self, Self::Suspended)
    }
}

/// Progress of the image(s) being loaded into a VF.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LoadProgress {
    /// A load session is open (a full-start image was loaded and the VF was
    /// not resumed or reset since).
    pub active: bool,
    /// Images loaded in this session.
    pub images: u32,
    /// Distinct objects received so far.
    pub received: u32,
    /// Objects in the adopted state.
    pub total: u32,
}

impl LoadProgress {
    /// `true` when every object has been received (or no load is open).
    #[must_use]
    pub fn is_complete(&self) -> bool {
        !self.active || self.received >= self.total
    }
}

/// A VF's migration state, for tests and tools.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VhcaState {
    /// SUSPEND/RESUME state.
    pub suspend: SuspendState,
    /// Dirty tracking is on.
    pub tracking: bool,
    /// A save session is open (a full SAVE was started and not cleaned up).
    pub saving: bool,
    /// Objects waiting to be saved.
    pub pending_objects: u32,
    /// Objects dirtied since they were last saved (tracking on).
    pub dirty_objects: u32,
    /// Load progress.
    pub load: LoadProgress,
    /// The VF is attached (not detached by the fault knob).
    pub attached: bool,
}

/// How a SAVE treats the state (decided by its flags and the VF state).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SaveMode {
    /// incremental = 0: a new full image, every object pending.
    Full,
    /// incremental = 1: dirty objects join the pending ones.
    Incremental,
    /// incremental = 0, set_track = 0 on a running, tracked VF: drop the
    /// session (the Linux PRE_COPY → RUNNING cleanup).
    Cleanup,
}

/// A successful SAVE's outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SaveOutcome {
    pub(crate) actual: u64,
    pub(crate) next_required: u64,
}

/// QUERY_VHCA_MIGRATION_STATE outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct QueryOutcome {
    pub(crate) required: u32,
    pub(crate) remaining: u64,
}

/// The destination side of a migration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LoadSession {
    Idle,
    Loading {
        session: u64,
        next_seq: u32,
        images: u32,
    },
}

/// One VF.
#[derive(Clone, Debug)]
pub(crate) struct Vf {
    pub(crate) vhca_id: u16,
    pub(crate) attached: bool,
    /// Reported in the VF's cap2.
    pub(crate) caps: VfConfig,
    /// In effect (PF and VF both have them).
    multi_load: bool,
    tracking_cap: bool,
    chunks: bool,
    dirty_per_tick: u64,
    suspend: SuspendState,
    store: ObjectStore,
    // Save side.
    saving: bool,
    tracking: bool,
    session: u64,
    next_seq: u32,
    /// Objects to go into the next images. Disjoint from `dirty`.
    pending: BitSet,
    pending_bytes: u64,
    /// Objects changed since they were last pending (tracking on).
    dirty: BitSet,
    dirty_bytes: u64,
    // Load side.
    load: LoadSession,
    received: BitSet,
    rng: u64,
}

/// The VF slots of a PF, filled in place.
#[derive(Clone, Debug)]
pub(crate) struct VfTable {
    slots: [Vf; MAX_VFS],
    len: usize,
}

impl VfTable {
    /// No VFs.
    pub(crate) const EMPTY: Self = Self {
        slots: [Vf::EMPTY; MAX_VFS],
        len: 0,
    };

    /// The VFs in use.
    pub(crate) fn as_slice(&self) -> &[Vf] {
        self.slots.get(..self.len).unwrap_or_default()
    }

    /// The VFs in use, mutably.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [Vf] {
        self.slots.get_mut(..self.len).unwrap_or_default()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn get(&self, i: usize) -> Option<&Vf> {
        self.as_slice().get(i)
    }

    pub(crate) fn get_mut(&mut self, i: usize) -> Option<&mut Vf> {
        self.as_mut_slice().get_mut(i)
    }

    pub(crate) fn iter_mut(&mut self) -> core::slice::IterMut<'_, Vf> {
        self.as_mut_slice().iter_mut()
    }

    /// Drops every VF.
    pub(crate) fn clear(&mut self) {
        self.len = 0;
    }

    /// Adds a VF configured in place by `init`; `None` when full.
    pub(crate) fn push_with(&mut self, init: impl FnOnce(&mut Vf)) -> Option<()> {
        let slot = self.slots.get_mut(self.len)?;
        init(slot);
        self.len = self.len.checked_add(1)?;
        Some(())
    }
}

/// The vhca_id of VF `n`: deliberately not its function id (n + 1), so a
/// driver that confuses the two is caught.
#[must_use]
pub(crate) fn vhca_id_of(n: u16) -> u16 {
    0x100u16
        .saturating_add(n.saturating_mul(3))
        .saturating_add(1)
}

impl Vf {
    /// An unused slot: no state, detached. The starting point of
    /// [`configure`](Self::configure), so a VF (about 36 KiB) is never built
    /// on the stack.
    pub(crate) const EMPTY: Self = Self {
        vhca_id: 0,
        attached: false,
        caps: VfConfig::DEFAULT,
        multi_load: false,
        tracking_cap: false,
        chunks: false,
        dirty_per_tick: 0,
        suspend: SuspendState::Running,
        store: ObjectStore::EMPTY,
        saving: false,
        tracking: false,
        session: 0,
        next_seq: 0,
        pending: BitSet::EMPTY,
        pending_bytes: 0,
        dirty: BitSet::EMPTY,
        dirty_bytes: 0,
        load: LoadSession::Idle,
        received: BitSet::EMPTY,
        rng: 0,
    };

    /// Makes this slot VF `n`, running with its initial state (every object
    /// at version 0), in place.
    pub(crate) fn configure(&mut self, n: u16, pf: &PfConfig, cfg: &VfConfig, layout: Layout) {
        self.vhca_id = vhca_id_of(n);
        self.attached = true;
        self.caps = *cfg;
        self.multi_load = pf.multi_load && cfg.precopy;
        self.tracking_cap = pf.tracking_state && cfg.precopy;
        self.chunks = pf.in_chunks && cfg.chunks;
        self.dirty_per_tick = cfg.dirty_per_tick;
        self.suspend = SuspendState::Running;
        self.store.reset(layout);
        self.session = 0;
        self.next_seq = 0;
        self.end_save_session();
        self.load = LoadSession::Idle;
        self.received.clear();
        self.rng = mix64(cfg.seed ^ u64::from(vhca_id_of(n)) ^ 0x776f_726b_6c6f_6164);
    }

    /// Whether this VF's images carry generated content.
    fn content(&self) -> image::Content {
        if self.caps.content {
            image::Content::Generated
        } else {
            image::Content::Skipped
        }
    }

    /// The public view of the state.
    pub(crate) fn state(&self) -> VhcaState {
        VhcaState {
            suspend: self.suspend,
            tracking: self.tracking,
            saving: self.saving,
            pending_objects: self.pending.len(),
            dirty_objects: self.dirty.len(),
            load: self.load_progress(),
            attached: self.attached,
        }
    }

    fn load_progress(&self) -> LoadProgress {
        match self.load {
            LoadSession::Idle => LoadProgress::default(),
            LoadSession::Loading { images, .. } => LoadProgress {
                active: true,
                images,
                received: self.received.len(),
                total: self.store.layout().count(),
            },
        }
    }

    /// Digest of the current state.
    pub(crate) fn digest(&self) -> crate::objects::Digest {
        self.store.digest(self.load_progress().is_complete())
    }

    /// The object store (tests and benchmarks).
    pub(crate) fn store(&self) -> &ObjectStore {
        &self.store
    }

    /// FLR-like reset: running, no tracking, no pending objects, no partial
    /// load; the objects themselves are kept.
    pub(crate) fn reset(&mut self) {
        self.suspend = SuspendState::Running;
        self.end_save_session();
        self.load = LoadSession::Idle;
        self.received.clear();
    }

    fn end_save_session(&mut self) {
        self.saving = false;
        self.tracking = false;
        self.pending.clear();
        self.pending_bytes = 0;
        self.dirty.clear();
        self.dirty_bytes = 0;
    }

    /// Advance the guest workload by `ticks` (only while running).
    pub(crate) fn tick(&mut self, ticks: u32) {
        let count = self.store.layout().count();
        if !self.suspend.is_running() || self.dirty_per_tick == 0 || count == 0 {
            return;
        }
        for _ in 0..ticks {
            let mut dirtied = 0u64;
            // Each pick dirties at least one byte, and at most `count` picks
            // happen per tick, which bounds the work of one tick.
            let mut picks = 0u32;
            while dirtied < self.dirty_per_tick && picks < count {
                self.rng = self.rng.wrapping_add(GOLDEN_STEP);
                // CAST: the remainder is < count, a u32 (count > 0 here).
                let index = mix64(self.rng).checked_rem(u64::from(count)).unwrap_or(0) as u32;
                let version = self.store.version(index).unwrap_or(0).wrapping_add(1);
                self.store.set_version(index, version);
                let record = self.store.layout().record_len(index);
                if self.tracking && !self.pending.contains(index) && self.dirty.insert(index) {
                    self.dirty_bytes = self.dirty_bytes.saturating_add(record);
                }
                dirtied = dirtied.saturating_add(self.store.layout().size(index).unwrap_or(1));
                picks = picks.saturating_add(1);
            }
        }
    }

    /// SUSPEND_VHCA.
    pub(crate) fn suspend(&mut self, responder: bool) -> Result<(), Syndrome> {
        self.suspend = match (self.suspend, responder) {
            // RUNNING → RUNNING_P2P: SUSPEND(INITIATOR).
            (SuspendState::Running, false) => SuspendState::InitiatorSuspended,
            // RUNNING_P2P → STOP: SUSPEND(RESPONDER).
            (SuspendState::InitiatorSuspended, true) => SuspendState::Suspended,
            _ => return Err(Syndrome::SuspendBadState),
        };
        Ok(())
    }

    /// RESUME_VHCA.
    pub(crate) fn resume(&mut self, initiator: bool) -> Result<(), Syndrome> {
        self.suspend = match (self.suspend, initiator) {
            // STOP → RUNNING_P2P: RESUME(RESPONDER); a loaded state must be
            // whole before the VF may run on it.
            (SuspendState::Suspended, false) => {
                if !self.load_progress().is_complete() {
                    return Err(Syndrome::IncompleteImage);
                }
                self.load = LoadSession::Idle;
                self.received.clear();
                SuspendState::InitiatorSuspended
            }
            // RUNNING_P2P → RUNNING: RESUME(INITIATOR).
            (SuspendState::InitiatorSuspended, true) => SuspendState::Running,
            _ => return Err(Syndrome::ResumeBadState),
        };
        Ok(())
    }

    /// First object of pending ∪ dirty at or after `from`.
    fn next_union(&self, from: u32) -> Option<u32> {
        match (self.pending.next_from(from), self.dirty.next_from(from)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// QUERY_VHCA_MIGRATION_STATE (after the caller's workload tick).
    pub(crate) fn query(&self, incremental: bool, chunk: bool) -> Result<QueryOutcome, Syndrome> {
        if chunk && !self.chunks {
            return Err(Syndrome::ChunkNotSupported);
        }
        let layout = self.store.layout();
        let (total, first) = if incremental {
            if !self.saving {
                return Err(Syndrome::NoSaveSession);
            }
            let first = self.next_union(0);
            if first.is_none() {
                // Nothing pending or dirty: report 0 (Linux reads a zero
                // incremental size as "no new data" and issues no SAVE).
                return Ok(QueryOutcome {
                    required: 0,
                    remaining: 0,
                });
            }
            let records = self.pending_bytes.saturating_add(self.dirty_bytes);
            (IMAGE_HEADER_LEN.saturating_add(records), first)
        } else {
            (layout.full_image_len(), Some(0))
        };
        if chunk {
            let next = first.map_or(0, |i| layout.record_len(i));
            let required = IMAGE_HEADER_LEN.saturating_add(next);
            Ok(QueryOutcome {
                required: u32::try_from(required).map_err(|_| Syndrome::ImageExceeds32Bit)?,
                remaining: total,
            })
        } else {
            Ok(QueryOutcome {
                required: u32::try_from(total).map_err(|_| Syndrome::ImageExceeds32Bit)?,
                // Only meaningful with chunk = 1; zero catches a driver that
                // reads it anyway.
                remaining: 0,
            })
        }
    }

    /// Decide how a SAVE with these flags treats the state.
    pub(crate) fn save_mode(
        &self,
        incremental: bool,
        set_track: bool,
    ) -> Result<SaveMode, Syndrome> {
        if set_track && !self.tracking_cap {
            return Err(Syndrome::TrackingNotSupported);
        }
        if self.suspend.is_running() {
            match (incremental, set_track) {
                // PRE_COPY → RUNNING cleanup: firmware drops the tracking.
                (false, false) if self.tracking => Ok(SaveMode::Cleanup),
                (false, false) => Err(Syndrome::SaveRunningUntracked),
                // The initial PRE_COPY image; tracking starts now.
                (false, true) => Ok(SaveMode::Full),
                (true, _) if self.tracking => Ok(SaveMode::Incremental),
                (true, _) => Err(Syndrome::SaveRunningUntracked),
            }
        } else if !incremental {
            // STOP_COPY without pre-copy, or the final full image after a
            // PRE_COPY error.
            Ok(SaveMode::Full)
        } else if self.saving {
            // The final incremental image, or the next chunk of any image.
            Ok(SaveMode::Incremental)
        } else {
            Err(Syndrome::NoSaveSession)
        }
    }

    /// Perform a Full or Incremental SAVE into `window` (a `size`-byte
    /// buffer); the state changes only when the image was written.
    pub(crate) fn save(
        &mut self,
        mode: SaveMode,
        set_track: bool,
        size: u64,
        new_session: u64,
        window: &mut dyn Window,
    ) -> Result<SaveOutcome, Syndrome> {
        let layout = *self.store.layout();
        let full = mode == SaveMode::Full;
        let first = if full {
            (layout.count() > 0).then_some(0)
        } else {
            self.next_union(0)
        };
        let next_of = |i: u32| -> Option<u32> {
            let from = i.saturating_add(1);
            if full {
                (from < layout.count()).then_some(from)
            } else {
                self.next_union(from)
            }
        };
        // Pack whole objects in index order while they fit.
        let mut used = IMAGE_HEADER_LEN;
        let mut records = 0u32;
        let mut end = 0u32;
        let mut cursor = first;
        while let Some(i) = cursor {
            let with = used.saturating_add(layout.record_len(i));
            if with > size {
                break;
            }
            used = with;
            records = records.saturating_add(1);
            end = i.saturating_add(1);
            cursor = next_of(i);
        }
        let too_small = used > size || (cursor.is_some() && (!self.chunks || records == 0));
        if too_small {
            // While the VF runs, its state may have grown since the QUERY
            // that sized the buffer: that is the driver's recoverable
            // PRE_COPY error. A suspended VF's state cannot change, so a
            // short buffer is a plain parameter error.
            return Err(if self.suspend.is_running() {
                Syndrome::StateChanged
            } else {
                Syndrome::BufferTooSmall
            });
        }
        let header = ImageHeader {
            kind: if full {
                ImageKind::FullStart
            } else {
                ImageKind::Continuation
            },
            vhca_id: self.vhca_id,
            record_count: records,
            byte_len: used,
            params: layout.params(),
            session: if full { new_session } else { self.session },
            sequence: if full { 0 } else { self.next_seq },
        };
        let selected = Selected {
            vf: self,
            full,
            next: first,
            end,
        };
        image::write_image(window, &header, &self.store, selected, self.content()).map_err(
            |f| match f {
                WindowFault::Unmapped => Syndrome::DmaUnmapped,
                WindowFault::Host => Syndrome::DmaHostFault,
            },
        )?;
        // Commit.
        if full {
            self.saving = true;
            self.session = new_session;
            self.next_seq = 1;
            self.pending.fill_below(layout.count());
            self.pending_bytes = layout.full_image_len().saturating_sub(IMAGE_HEADER_LEN);
            self.dirty.clear();
            self.dirty_bytes = 0;
        } else {
            self.next_seq = self.next_seq.wrapping_add(1);
            let dirty = core::mem::replace(&mut self.dirty, BitSet::EMPTY);
            self.pending.union_with(&dirty);
            self.pending_bytes = self
                .pending_bytes
                .saturating_add(core::mem::take(&mut self.dirty_bytes));
        }
        // A running VF keeps tracking until the cleanup SAVE; on a suspended
        // VF set_track decides (0 = the final save).
        self.tracking = if self.suspend.is_running() {
            true
        } else {
            set_track
        };
        let mut at = self.pending.next_from(0);
        while let Some(i) = at.filter(|i| *i < end) {
            self.pending.remove(i);
            self.pending_bytes = self.pending_bytes.saturating_sub(layout.record_len(i));
            at = self.pending.next_from(i.saturating_add(1));
        }
        let next_required = match self.pending.next_from(0) {
            Some(i) if self.chunks => IMAGE_HEADER_LEN.saturating_add(layout.record_len(i)),
            _ => 0,
        };
        Ok(SaveOutcome {
            actual: used,
            next_required,
        })
    }

    /// The PRE_COPY cleanup SAVE.
    pub(crate) fn cleanup(&mut self) {
        self.end_save_session();
    }

    /// LOAD_VHCA_STATE of a `size`-byte image from `window`. On any error
    /// the VF is left exactly as it was.
    pub(crate) fn load(&mut self, size: u64, window: &mut dyn Window) -> Result<(), Syndrome> {
        if self.suspend != SuspendState::Suspended {
            return Err(Syndrome::LoadNotSuspended);
        }
        let header = image::read_header(window, size).map_err(image_syndrome)?;
        let layout = self.admit(&header)?;
        let verified = image::verify_records(window, &header, &layout, self.content())
            .map_err(image_syndrome)?;
        image::recheck_records(window, &header, &layout, verified).map_err(image_syndrome)?;
        let images = match (header.kind, self.load) {
            (ImageKind::Continuation, LoadSession::Loading { images, .. }) => images,
            _ => {
                // A full start replaces the state, whatever it was.
                self.store.reset(layout);
                self.received.clear();
                0
            }
        };
        let received = &mut self.received;
        image::apply_records(window, &header, &mut self.store, &mut |i| {
            received.insert(i);
        })
        .map_err(image_syndrome)?;
        self.load = LoadSession::Loading {
            session: header.session,
            next_seq: header.sequence.wrapping_add(1),
            images: images.saturating_add(1),
        };
        // Whatever was being saved from this VF is gone now.
        self.end_save_session();
        Ok(())
    }

    /// The session rules: may this image follow what was loaded before?
    /// Returns the layout the records are checked against.
    fn admit(&self, header: &ImageHeader) -> Result<Layout, Syndrome> {
        let complete = self.load_progress().is_complete();
        match (header.kind, self.load) {
            (ImageKind::FullStart, LoadSession::Loading { .. }) if !self.multi_load => {
                Err(Syndrome::SecondLoad)
            }
            (ImageKind::FullStart, _) => {
                if header.sequence != 0 {
                    return Err(Syndrome::ImageOutOfOrder);
                }
                Layout::new(header.params).map_err(|_| Syndrome::ImageBadParams)
            }
            (ImageKind::Continuation, LoadSession::Idle) => Err(Syndrome::ImageNoFullStart),
            (
                ImageKind::Continuation,
                LoadSession::Loading {
                    session, next_seq, ..
                },
            ) => {
                if complete && !self.multi_load {
                    return Err(Syndrome::SecondLoad);
                }
                if header.session != session {
                    return Err(Syndrome::ImageSessionMismatch);
                }
                let adopted: GenParams = self.store.layout().params();
                if header.params != adopted {
                    return Err(Syndrome::ImageParamsMismatch);
                }
                match header.sequence.cmp(&next_seq) {
                    core::cmp::Ordering::Less => Err(Syndrome::ImageDuplicate),
                    core::cmp::Ordering::Greater => Err(Syndrome::ImageOutOfOrder),
                    core::cmp::Ordering::Equal => Ok(*self.store.layout()),
                }
            }
        }
    }
}

/// The syndrome for a refused image.
fn image_syndrome(e: ImageError) -> Syndrome {
    match e {
        ImageError::Truncated => Syndrome::ImageTruncated,
        ImageError::BadMagic => Syndrome::ImageBadMagic,
        ImageError::BadModel => Syndrome::ImageBadModel,
        ImageError::HeaderChecksum => Syndrome::ImageHeaderChecksum,
        ImageError::BadKind => Syndrome::ImageBadKind,
        ImageError::LengthMismatch => Syndrome::ImageLengthMismatch,
        ImageError::BadParams => Syndrome::ImageBadParams,
        ImageError::RecordBadHeader => Syndrome::RecordBadHeader,
        ImageError::RecordBadIndex => Syndrome::RecordBadIndex,
        ImageError::RecordBadSize => Syndrome::RecordBadSize,
        ImageError::ContentMismatch => Syndrome::RecordContentMismatch,
        ImageError::Changed => Syndrome::ImageChangedDuringLoad,
        ImageError::Dma(WindowFault::Unmapped) => Syndrome::DmaUnmapped,
        ImageError::Dma(WindowFault::Host) => Syndrome::DmaHostFault,
    }
}

/// The objects a SAVE includes: every object below `end` (full image), or
/// the members of pending ∪ dirty below `end` (incremental), ascending.
struct Selected<'a> {
    vf: &'a Vf,
    full: bool,
    next: Option<u32>,
    end: u32,
}

impl Iterator for Selected<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        let i = self.next.filter(|i| *i < self.end)?;
        let from = i.saturating_add(1);
        self.next = if self.full {
            Some(from)
        } else {
            self.vf.next_union(from)
        };
        Some(i)
    }
}
