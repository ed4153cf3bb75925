//! A SAVE's end: its image checked and queued (with the chain it belongs to
//! continued, held back or finished), or its failure applied.

use super::{
    BufRef, Chain, Entry, HeldPreCopy, ImageMode, MAX_SAVE_BUFFER, Phase, SaveAction, SaveEngine,
    SaveError, SaveFailure, SaveKind, Slot,
};
use crate::ifc::CmdStatus;
use crate::ifc::migration::SaveResult;
use crate::macros::trace;
use crate::stream::{Header, STOP_COPY_SIZE_RECORD_LEN, StreamEnd};

impl SaveEngine {
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

    /// A SAVE completed successfully; `crc_after` is
    /// [`SaveEngine::payload_crc`] continued over the image bytes (ignored
    /// for cleanup saves). Queues what follows: the next chunk, or the
    /// cleanup buffer's release.
    ///
    /// # Errors
    /// As [`SaveEngine::check_completion`], plus [`SaveError::TooLarge`] for a
    /// `next_required_umem_size` above the cap and [`SaveError::Capacity`].
    /// On error the file has failed with that reason; the device frees the
    /// buffers when the file closes.
    pub fn handle_completion(
        &mut self,
        result: SaveResult,
        crc_after: u32,
    ) -> Result<(), SaveError> {
        match self.complete(result, crc_after) {
            Ok(()) => Ok(()),
            Err(e) => {
                if self.in_flight.is_some() {
                    let _ = self.release_in_flight();
                }
                self.fail(SaveFailure::Engine(e));
                Err(e)
            }
        }
    }

    fn complete(&mut self, result: SaveResult, crc_after: u32) -> Result<(), SaveError> {
        let image = self.check_completion(&result)?;
        let Some(f) = self.in_flight.take() else {
            return Err(SaveError::NoSaveInFlight);
        };
        trace!(
            "save: SAVE completed: {} bytes, next {}",
            image, result.next_required_umem_size
        );
        if f.kind == SaveKind::Cleanup {
            // The cleanup image is discarded.
            return self.act(SaveAction::Free(f.buf));
        }
        let (slot, chain) = match f.kind {
            SaveKind::StopCopyChunk { slot } => (Some(slot), Some(Chain::StopCopy)),
            SaveKind::PreCopyChunk { slot, initial } => {
                (Some(slot), Some(Chain::PreCopy { initial }))
            }
            _ => (None, None),
        };
        // Only chunk-mode slot buffers read next_required_umem_size.
        let next = match slot {
            Some(_) if self.cfg.chunked() => result.next_required_umem_size,
            _ => 0,
        };
        let limit = self.cfg.max_buffer.min(MAX_SAVE_BUFFER);
        if u64::from(next) > limit {
            let free = self.recycle(f.buf);
            if let Some(b) = free {
                let _ = self.act(SaveAction::Free(b));
            }
            return Err(SaveError::TooLarge {
                required: u64::from(next),
                limit,
                image: ImageMode::Chunked,
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
            if let Some(b) = self.recycle(f.buf) {
                let _ = self.act(SaveAction::Free(b));
            }
            return Err(e);
        }
        self.crc = crc_after;
        self.stats.fw_data_records = self.stats.fw_data_records.saturating_add(1);
        self.stats.fw_data_bytes = self.stats.fw_data_bytes.saturating_add(u64::from(image));
        let first_precopy = self.phase == Phase::Opening && chain != Some(Chain::StopCopy);
        let initial = first_precopy
            || matches!(
                f.kind,
                SaveKind::PreCopy { initial: true } | SaveKind::PreCopyChunk { initial: true, .. }
            );
        if initial {
            self.initial_len = self
                .initial_len
                // CAST: header length 16.
                .saturating_add(header.len() as u64)
                .saturating_add(u64::from(image));
        }
        if first_precopy {
            self.phase = Phase::PRE_COPY;
        }
        let (Some(slot), Some(chain)) = (slot, chain) else {
            return Ok(());
        };
        self.stats.chunks = self.stats.chunks.saturating_add(1);
        self.ready_chunks = self.ready_chunks.saturating_add(1);
        match chain {
            Chain::StopCopy if next == 0 => return self.finish(),
            Chain::StopCopy => {}
            // The PRE_COPY image is complete, or the round's budget spent:
            // the next one starts from precopy-info on a drained queue. A
            // suspended VF's remaining data goes with the final save.
            Chain::PreCopy { .. } => {
                self.chain_budget = self.chain_budget.saturating_sub(u64::from(image));
                let paused = matches!(self.phase, Phase::PreCopy { paused: true, .. });
                if next == 0 || self.chain_budget == 0 || paused {
                    return Ok(());
                }
            }
        }
        let preferred = u8::try_from(
            usize::from(slot)
                .saturating_add(1)
                .checked_rem(self.cfg.slots())
                .unwrap_or(0),
        )
        .unwrap_or(0);
        match self.free_slot(preferred) {
            Some(free) => self.issue_chunk(free, u64::from(next), chain),
            None => {
                // Every slot holds unread data: wait for the reader.
                trace!("save: chunk of {} bytes held back: every slot unread", next);
                self.stats.held_back = self.stats.held_back.saturating_add(1);
                self.phase = match chain {
                    Chain::StopCopy => Phase::StopCopy { held: Some(next) },
                    Chain::PreCopy { initial } => Phase::PreCopy {
                        held: Some(HeldPreCopy { min: next, initial }),
                        paused: false,
                    },
                };
                Ok(())
            }
        }
    }

    fn finish(&mut self) -> Result<(), SaveError> {
        self.phase = Phase::Complete;
        trace!(
            "save: stream complete: {} records, {} bytes",
            self.stats.fw_data_records, self.stats.fw_data_bytes
        );
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

    /// The SAVE in flight failed for `why` (firmware refused it, its output
    /// was unreadable, or the driver could not issue it). A PRE_COPY save
    /// refused with BAD_RES_STATE_ERR moves the file to
    /// [`FileState::PreCopyError`](super::FileState::PreCopyError) (recoverable: the final save takes a full
    /// image); anything else fails the file. The buffer goes back to the
    /// available list (or a [`SaveAction::Free`] is queued).
    ///
    /// # Errors
    /// [`SaveError::NoSaveInFlight`].
    pub fn handle_save_failed(&mut self, why: SaveFailure) -> Result<(), SaveError> {
        let f = self.in_flight.ok_or(SaveError::NoSaveInFlight)?;
        if let Some(b) = self.release_in_flight() {
            self.act(SaveAction::Free(b))?;
        }
        let stop_copy = matches!(f.kind, SaveKind::StopCopyChunk { .. });
        match why {
            SaveFailure::Refused(CmdStatus::BadResStateErr) if !stop_copy && !self.is_failed() => {
                trace!(
                    "save: PRE_COPY SAVE refused (BAD_RES_STATE): final save takes a full image"
                );
                self.phase = Phase::PreCopyError;
            }
            why => self.fail(why),
        }
        Ok(())
    }

    /// Forgets the SAVE in flight; its buffer is recycled (returned when the
    /// available list is full).
    fn release_in_flight(&mut self) -> Option<BufRef> {
        let f = self.in_flight.take()?;
        // A slot's buffer becomes an ordinary one, as in Linux; the slot is
        // empty from now on (a chunk of either chain).
        if let SaveKind::StopCopyChunk { slot } | SaveKind::PreCopyChunk { slot, .. } = f.kind {
            if let Some(s) = self.slots.get_mut(usize::from(slot)) {
                *s = Slot::Empty;
            }
        }
        self.recycle(f.buf)
    }
}
