//! The reader's side: the queue of record headers, our records and buffer
//! segments, in stream order.

use super::{BufRef, Entry, FileState, NextChunk, SaveEngine, SaveError, Slot};
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

/// What reading to the end of a queue entry released.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Consumed {
    /// A held-back chunk can start now (its slot's data was read).
    pub start: Option<NextChunk>,
    /// A buffer to free (the available list is full).
    pub free: Option<BufRef>,
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
}
