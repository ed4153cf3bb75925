//! Stop-copy chunk slots: which slot the next chunk fills, and whether its
//! buffer must grow first.

use crate::ifc::migration::{Scope, Tracking};

use super::{BufRef, FileState, SaveEngine, SaveError, SaveKind, SaveRequest, Slot};

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
}
