//! Chunk slots: which slot the next chunk fills, whether its buffer must
//! grow first, and the final save that ends PRE_COPY.

use super::{
    BufRef, Chain, MAX_CHUNK_SLOTS, Phase, SaveAction, SaveEngine, SaveError, SaveKind, Slot,
    Wanted,
};
use crate::macros::trace;

impl SaveEngine {
    pub(super) fn take_slot(&mut self, slot: u8) -> Result<BufRef, SaveError> {
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

    /// A slot the next chunk can go into: `preferred` when it is not
    /// holding unread data (or being saved into), else the first such slot.
    pub(super) fn free_slot(&self, preferred: u8) -> Option<u8> {
        let count = self.cfg.slots().min(MAX_CHUNK_SLOTS);
        let usable = |i: usize| matches!(self.slots.get(i), Some(Slot::Ready(_) | Slot::Empty));
        if usize::from(preferred) < count && usable(usize::from(preferred)) {
            return Some(preferred);
        }
        (0..count)
            .find(|&i| usable(i))
            .and_then(|i| u8::try_from(i).ok())
    }

    /// Queues a chunk of at least `min_bytes` of `chain` into `slot`: the
    /// SAVE when the slot's buffer fits, else the old buffer's release and
    /// an allocation (the SAVE follows [`SaveEngine::handle_buffer`]).
    pub(super) fn issue_chunk(
        &mut self,
        slot: u8,
        min_bytes: u64,
        chain: Chain,
    ) -> Result<(), SaveError> {
        if self.is_failed() {
            return Err(SaveError::FileError);
        }
        if self.in_flight.is_some() {
            return Err(SaveError::WrongState);
        }
        let npages = self.cfg.pages_for(min_bytes);
        // After a retune, a buffer far from the target size is replaced
        // (either way); one within 2x of it, and big enough, is kept so a
        // chunk grown for a large object does not churn.
        let wanted = self.slot_target.map_or(npages, |t| t.max(npages));
        let keep = |have: u32| {
            have >= npages
                && self
                    .slot_target
                    .is_none_or(|_| have >= wanted && have / 2 <= wanted)
        };
        let s = self
            .slots
            .get_mut(usize::from(slot))
            .ok_or(SaveError::WrongState)?;
        match *s {
            Slot::Ready(buf) if keep(buf.npages) => self.save_into(slot, buf, chain),
            Slot::Ready(old) => {
                *s = Slot::Empty;
                self.act(SaveAction::Free(old))?;
                self.want(Wanted::Slot(slot, chain), wanted)
            }
            Slot::Empty => self.want(Wanted::Slot(slot, chain), wanted),
            Slot::Busy => Err(SaveError::WrongState),
        }
    }

    /// Queues the SAVE of the next chunk of `chain` into `slot`, whose
    /// buffer `buf` is ready.
    pub(super) fn save_into(
        &mut self,
        slot: u8,
        buf: BufRef,
        chain: Chain,
    ) -> Result<(), SaveError> {
        let s = self
            .slots
            .get_mut(usize::from(slot))
            .ok_or(SaveError::WrongState)?;
        *s = Slot::Busy;
        let kind = match chain {
            Chain::StopCopy => SaveKind::StopCopyChunk { slot },
            Chain::PreCopy { initial } => SaveKind::PreCopyChunk { slot, initial },
        };
        let req = self.request(buf, kind);
        self.act(SaveAction::Save(req))
    }

    /// Changes the chunk size of the slots from the next chunk on (chunk
    /// mode; a no-op otherwise): each slot buffer is replaced by one of
    /// `chunk_size` bytes (or what a chunk needs, if more) when it is next
    /// filled. The stream does not change: the destination sizes its
    /// buffers from each image.
    pub fn retune_chunk(&mut self, chunk_size: u64) {
        if !self.cfg.chunked() || self.is_failed() {
            return;
        }
        // Not `clamp`: it panics when the bounds cross (a max_buffer below a
        // page is the caller's odd config, not a reason to stop).
        let bytes = chunk_size
            .max(self.cfg.page_size.max(1))
            .min(self.cfg.max_buffer);
        trace!("save: chunk size retuned to {} bytes", bytes);
        self.cfg.chunk_size = bytes;
        self.slot_target = Some(self.cfg.pages_for(bytes));
        self.stats.chunk_size = self.cfg.bytes_of(self.cfg.pages_for(bytes));
    }

    /// The final save when PRE_COPY ends (PRE_COPY_P2P → STOP_COPY): a chunk
    /// of at least `min_bytes` (the incremental QUERY's answer) into a free
    /// slot (slot 0 when it is), `inc=1 track=0` (`inc=0` after a PRE_COPY
    /// error); queued as actions. When every slot holds unread PRE_COPY
    /// chunks it is held back until the reader frees one; a PRE_COPY chunk
    /// that was held is dropped (the final save covers its data).
    ///
    /// # Errors
    /// [`SaveError::FileError`] if the file failed; [`SaveError::WrongState`]
    /// if a SAVE is in flight or the file is not in PRE_COPY;
    /// [`SaveError::TooLarge`] for a size above 32 bits.
    pub fn start_final(&mut self, min_bytes: u64) -> Result<(), SaveError> {
        if self.is_failed() {
            return Err(SaveError::FileError);
        }
        if self.in_flight.is_some()
            || !matches!(
                self.phase,
                Phase::Opening | Phase::PreCopy { .. } | Phase::PreCopyError
            )
        {
            return Err(SaveError::WrongState);
        }
        match self.free_slot(0) {
            Some(slot) => self.issue_chunk(slot, min_bytes, Chain::StopCopy),
            None => {
                let min = u32::try_from(min_bytes).map_err(|_| SaveError::TooLarge {
                    required: min_bytes,
                    limit: super::MAX_SAVE_BUFFER,
                    image: self.cfg.image,
                })?;
                trace!(
                    "save: final save of {} bytes held back: every slot unread",
                    min
                );
                self.stats.held_back = self.stats.held_back.saturating_add(1);
                self.phase = Phase::StopCopy { held: Some(min) };
                Ok(())
            }
        }
    }
}
