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
        let s = self
            .slots
            .get_mut(usize::from(slot))
            .ok_or(SaveError::WrongState)?;
        match *s {
            Slot::Ready(buf) if buf.npages >= npages => {
                *s = Slot::Busy;
                let kind = match chain {
                    Chain::StopCopy => SaveKind::StopCopyChunk { slot },
                    Chain::PreCopy { initial } => SaveKind::PreCopyChunk { slot, initial },
                };
                let req = self.request(buf, kind);
                self.act(SaveAction::Save(req))
            }
            Slot::Ready(old) => {
                *s = Slot::Empty;
                self.act(SaveAction::Free(old))?;
                self.want(Wanted::Slot(slot, chain), npages)
            }
            Slot::Empty => self.want(Wanted::Slot(slot, chain), npages),
            Slot::Busy => Err(SaveError::WrongState),
        }
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
