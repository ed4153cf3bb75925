//! Stop-copy chunk slots: which slot the next chunk fills, and whether its
//! buffer must grow first.

use super::{BufRef, Phase, SaveAction, SaveEngine, SaveError, SaveKind, Slot, Wanted};

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

    /// Queues a stop-copy chunk of at least `min_bytes` into `slot`: the SAVE
    /// when the slot's buffer fits, else the old buffer's release and an
    /// allocation (the SAVE follows [`SaveEngine::handle_buffer`]).
    pub(super) fn issue_chunk(&mut self, slot: u8, min_bytes: u64) -> Result<(), SaveError> {
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
                let req = self.request(buf, SaveKind::StopCopyChunk { slot });
                self.act(SaveAction::Save(req))
            }
            Slot::Ready(old) => {
                *s = Slot::Empty;
                self.act(SaveAction::Free(old))?;
                self.want(Wanted::Slot(slot), npages)
            }
            Slot::Empty => self.want(Wanted::Slot(slot), npages),
            Slot::Busy => Err(SaveError::WrongState),
        }
    }

    /// The final save when PRE_COPY ends (PRE_COPY_P2P → STOP_COPY): a chunk
    /// of at least `min_bytes` (the incremental QUERY's answer) into slot 0,
    /// `inc=1 track=0` (`inc=0` after a PRE_COPY error); queued as actions.
    ///
    /// # Errors
    /// [`SaveError::FileError`] if the file failed; [`SaveError::WrongState`]
    /// if a SAVE is in flight, slot 0 is busy or the file is not in PRE_COPY.
    pub fn start_final(&mut self, min_bytes: u64) -> Result<(), SaveError> {
        if self.is_failed() {
            return Err(SaveError::FileError);
        }
        if !matches!(
            self.phase,
            Phase::Opening | Phase::PreCopy | Phase::PreCopyError
        ) {
            return Err(SaveError::WrongState);
        }
        self.issue_chunk(0, min_bytes)
    }
}
