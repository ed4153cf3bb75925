//! The reader's side: the queue of record headers, our records and buffer
//! segments, in stream order.

use super::{BufRef, Chain, Entry, Phase, SaveAction, SaveEngine, SaveError, SaveFailure, Slot};
use crate::stream::{StreamEnd, StreamInfo};

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

impl SaveEngine {
    pub(super) fn push(&mut self, entry: Entry, len: u64) -> Result<(), SaveError> {
        self.queue
            .push_back(entry)
            .map_err(|_| SaveError::Capacity)?;
        self.end_pos = self.end_pos.saturating_add(len);
        Ok(())
    }

    /// The next bytes for the reader.
    ///
    /// # Errors
    /// Why nothing is readable.
    pub fn peek(&self) -> Result<Segment<'_>, Empty> {
        if self.is_failed() {
            return Err(Empty::Error);
        }
        let Some(head) = self.queue.front() else {
            return Err(match self.phase {
                Phase::Complete => Empty::EndOfStream,
                // A SAVE in flight (or about to be) will add data: wait for
                // it rather than reporting a temporary end (the v7.1 fix).
                Phase::PreCopy { .. } | Phase::PreCopyError
                    if self.in_flight.is_none() && self.wanted.is_none() =>
                {
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
    /// returned (`n` is clamped to it). Reading a chunk to its end frees its
    /// slot, which starts a chunk that was held back; a PRE_COPY buffer read
    /// to its end goes back to the available list (or is freed). Drain
    /// [`SaveEngine::poll_action`] afterwards.
    pub fn handle_consumed(&mut self, n: u64) {
        let Some(head) = self.queue.front().copied() else {
            return;
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
            return;
        }
        self.head_off = 0;
        let _ = self.queue.pop_front();
        let Entry::Buffer { buf, slot, .. } = head else {
            return;
        };
        let result = match slot {
            Some(s) => self.slot_read(s, buf),
            None => match self.recycle(buf) {
                Some(full) => self.act(SaveAction::Free(full)),
                None => Ok(()),
            },
        };
        if let Err(e) = result {
            self.fail(SaveFailure::Engine(e));
        }
    }

    /// A chunk's data was read: its slot is ready again, and a held-back
    /// chunk takes it.
    fn slot_read(&mut self, slot: u8, buf: BufRef) -> Result<(), SaveError> {
        if let Some(s) = self.slots.get_mut(usize::from(slot)) {
            *s = Slot::Ready(buf);
        }
        self.ready_chunks = self.ready_chunks.saturating_sub(1);
        match self.phase {
            Phase::StopCopy { held: Some(min) } => {
                self.phase = Phase::StopCopy { held: None };
                self.issue_chunk(slot, u64::from(min), Chain::StopCopy)
            }
            Phase::PreCopy {
                held: Some(held),
                paused,
            } => {
                self.phase = Phase::PreCopy { held: None, paused };
                let chain = Chain::PreCopy {
                    initial: held.initial,
                };
                self.issue_chunk(slot, u64::from(held.min), chain)
            }
            _ => Ok(()),
        }
    }
}
