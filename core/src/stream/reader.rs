//! The incremental, allocation-free stream reader of the resume side.
//!
//! Fed arbitrary slices (any split, down to one byte), it reports record
//! boundaries and hands FW_DATA payload bytes through with their offset in
//! the image, without storing them. Memory is a 16-byte header buffer and a
//! [`MAX_SMALL_PAYLOAD`]-byte buffer for the small records it parses, whatever
//! the records' sizes.
//!
//! Two ways to drive it:
//! - **bytes in hand** ([`Reader::feed`]): give it the next input; it consumes
//!   some prefix, returns the events that prefix completed and, for FW_DATA
//!   payload, the bytes themselves (the reader keeps a CRC-32C of them);
//! - **planned** (a driver whose input is in user memory): ask [`Reader::need`]
//!   what the next bytes are; copy header and small-record bytes into a small
//!   buffer and [`feed`](Reader::feed) them; copy payload straight into the
//!   image buffer and report it with [`Reader::advance_payload`] (with the
//!   CRC-32C continued from [`Reader::payload_crc`]); report skipped bytes with
//!   [`Reader::advance_skip`].
//!
//! Any error is sticky: the reader stays failed and reports the same error.

use heapless::Vec;

use super::records::{STREAM_END_LEN, STREAM_INFO_LEN};
use super::{
    HEADER_LEN, Header, MAX_RECORD_SIZE, MAX_SMALL_PAYLOAD, Mismatch, STOP_COPY_SIZE_LEN,
    StreamEnd, StreamError, StreamErrorKind, StreamInfo, Tag, crc32c,
};
use super::{INFO_MAGIC, STREAM_FORMAT_VERSION};

/// The most events one step can produce: a header, the value of a small
/// record and the end of that record (a zero-length record completes in the
/// same step as its header).
pub const MAX_EVENTS_PER_STEP: usize = 3;

/// Something the stream said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Event {
    /// A record header arrived and was accepted.
    RecordStart {
        /// Stream offset of the header.
        offset: u64,
        /// The header.
        header: Header,
    },
    /// The STOP_COPY_SIZE hint.
    StopCopySize(u64),
    /// Our stream-info record.
    StreamInfo(StreamInfo),
    /// Our stream-end record; its counts and checksum matched.
    StreamEnd(StreamEnd),
    /// A whole record (header and payload) has been consumed. For FW_DATA this
    /// is the moment the image is complete.
    RecordEnd {
        /// Stream offset of the header.
        offset: u64,
        /// The header.
        header: Header,
    },
}

/// Events of one step.
pub type Events = Vec<Event, MAX_EVENTS_PER_STEP>;

/// What the next bytes of the stream are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Need {
    /// Header bytes; give them to [`Reader::feed`].
    Header {
        /// Bytes still missing from the header.
        missing: usize,
    },
    /// Payload of a small record the reader parses; give them to [`Reader::feed`].
    Small {
        /// Bytes still missing.
        missing: usize,
    },
    /// FW_DATA payload: they belong at `image_offset` of the current image.
    Payload {
        /// Offset inside the image.
        image_offset: u64,
        /// Payload bytes left in this record.
        remaining: u64,
        /// The whole image size.
        image_size: u64,
    },
    /// Bytes to skip (an unknown optional record, or the tail of a small
    /// record beyond the fields we know).
    Skip {
        /// Bytes left to skip.
        remaining: u64,
    },
    /// Nothing more is acceptable: the stream-end record was seen, or the
    /// reader failed.
    Nothing,
}

/// FW_DATA payload bytes passed through by [`Reader::feed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PayloadBytes<'a> {
    /// Offset of `bytes` inside the current image.
    pub image_offset: u64,
    /// The bytes (a prefix of the input).
    pub bytes: &'a [u8],
}

/// The result of one [`Reader::feed`] step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step<'a> {
    /// Input bytes consumed (a prefix of the input).
    pub consumed: usize,
    /// FW_DATA payload among them, if this step read payload.
    pub payload: Option<PayloadBytes<'a>>,
    /// Events the step completed, in order.
    pub events: Events,
}

/// What the stream amounts to when the writer stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Verdict {
    /// Ended on a record boundary, and if the stream began with stream-info,
    /// its end record arrived and matched.
    Complete {
        /// The integrity record was present and verified.
        verified: bool,
    },
    /// Stopped inside a record.
    PartialRecord {
        /// Stream offset of the incomplete record.
        offset: u64,
        /// Its tag, if the header was complete.
        tag: Option<Tag>,
        /// Bytes missing from it (header bytes if the header is incomplete).
        missing: u64,
    },
    /// The stream began with stream-info but its end record never came.
    MissingEnd,
    /// The reader failed earlier.
    Failed(StreamError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Header,
    Small { header: Header, keep: usize },
    Payload { header: Header, done: u64 },
    Skip { header: Header, remaining: u64 },
    Ended,
    Failed(StreamError),
}

/// The resume-side stream reader. See the module documentation.
#[derive(Clone, Debug)]
pub struct Reader {
    phase: Phase,
    /// Stream offset of the next byte.
    pos: u64,
    /// Stream offset of the current record's header.
    record_start: u64,
    /// Header or small-payload bytes gathered so far.
    buf: [u8; MAX_SMALL_PAYLOAD],
    have: usize,
    records: u64,
    fw_data_records: u64,
    fw_data_bytes: u64,
    crc: u32,
    info: Option<StreamInfo>,
    end: Option<StreamEnd>,
    stop_copy_size: Option<u64>,
}

impl Default for Reader {
    fn default() -> Self {
        Self::new()
    }
}

impl Reader {
    /// A reader at the start of a stream.
    pub const fn new() -> Self {
        Self {
            phase: Phase::Header,
            pos: 0,
            record_start: 0,
            buf: [0; MAX_SMALL_PAYLOAD],
            have: 0,
            records: 0,
            fw_data_records: 0,
            fw_data_bytes: 0,
            crc: 0,
            info: None,
            end: None,
            stop_copy_size: None,
        }
    }

    /// Stream bytes consumed so far.
    pub const fn position(&self) -> u64 {
        self.pos
    }
    /// Records completed so far.
    pub const fn records(&self) -> u64 {
        self.records
    }
    /// FW_DATA records completed so far.
    pub const fn fw_data_records(&self) -> u64 {
        self.fw_data_records
    }
    /// FW_DATA payload bytes consumed so far.
    pub const fn fw_data_bytes(&self) -> u64 {
        self.fw_data_bytes
    }
    /// CRC-32C of every FW_DATA payload byte so far, as the driver reported
    /// it (see [`Reader::checks_payload`]).
    pub const fn payload_crc(&self) -> u32 {
        self.crc
    }
    /// Whether the payload's CRC-32C is checked: only a stream that opened
    /// with a stream-info record may end with a checksum (an end record in
    /// any other stream is refused), so a driver computes the CRC only when
    /// this holds and reports 0 otherwise.
    pub const fn checks_payload(&self) -> bool {
        self.info.is_some()
    }
    /// The stream-info record, if the stream has one.
    pub const fn stream_info(&self) -> Option<&StreamInfo> {
        self.info.as_ref()
    }
    /// The verified stream-end record, once seen.
    pub const fn stream_end(&self) -> Option<&StreamEnd> {
        self.end.as_ref()
    }
    /// The STOP_COPY_SIZE hint, if one arrived.
    pub const fn stop_copy_size(&self) -> Option<u64> {
        self.stop_copy_size
    }
    /// The error the reader failed with, if it did.
    pub const fn error(&self) -> Option<StreamError> {
        match self.phase {
            Phase::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// What the next bytes are.
    pub fn need(&self) -> Need {
        match self.phase {
            Phase::Header => Need::Header {
                missing: HEADER_LEN.saturating_sub(self.have),
            },
            Phase::Small { keep, .. } => Need::Small {
                missing: keep.saturating_sub(self.have),
            },
            Phase::Payload { header, done } => Need::Payload {
                image_offset: done,
                remaining: header.record_size.saturating_sub(done),
                image_size: header.record_size,
            },
            Phase::Skip { remaining, .. } => Need::Skip { remaining },
            Phase::Ended | Phase::Failed(_) => Need::Nothing,
        }
    }

    fn fail(&mut self, offset: u64, kind: StreamErrorKind) -> StreamError {
        let e = StreamError { offset, kind };
        self.phase = Phase::Failed(e);
        e
    }

    /// Consumes a prefix of `input` (the bytes of one phase at most) and
    /// returns what it completed. Payload bytes are passed through, not
    /// stored. Call again with the rest of the input until it is empty.
    ///
    /// # Errors
    /// The stream is malformed; the reader stays failed.
    pub fn feed<'a>(&mut self, input: &'a [u8]) -> Result<Step<'a>, StreamError> {
        let mut step = Step {
            consumed: 0,
            payload: None,
            events: Events::new(),
        };
        match self.phase {
            Phase::Failed(e) => return Err(e),
            Phase::Ended => {
                if !input.is_empty() {
                    return Err(self.fail(self.pos, StreamErrorKind::DataAfterEnd));
                }
            }
            Phase::Header => {
                let n = self.gather(input, HEADER_LEN);
                step.consumed = n;
                if self.have == HEADER_LEN {
                    self.header_complete(&mut step.events)?;
                }
            }
            Phase::Small { header, keep } => {
                let n = self.gather(input, keep);
                step.consumed = n;
                if self.have >= keep {
                    self.small_complete(header, keep, &mut step.events)?;
                }
            }
            Phase::Payload { header, done } => {
                let left = header.record_size.saturating_sub(done);
                let n = clamp(left, input.len());
                let bytes = input.get(..n).unwrap_or_default();
                self.crc = crc32c::update(self.crc, bytes);
                step.consumed = n;
                step.payload = Some(PayloadBytes {
                    image_offset: done,
                    bytes,
                });
                self.payload_advanced(header, done, n, &mut step.events);
            }
            Phase::Skip { header, remaining } => {
                let n = clamp(remaining, input.len());
                step.consumed = n;
                self.skip_advanced(header, remaining, n, &mut step.events);
            }
        }
        Ok(step)
    }

    /// Reports `n` FW_DATA payload bytes that the caller moved into the image
    /// itself, with `crc_after` = CRC-32C continued from
    /// [`Reader::payload_crc`] over those bytes. `n` is clamped to the bytes
    /// the record still has.
    ///
    /// # Errors
    /// The reader had failed, or is not inside a FW_DATA payload (a caller bug,
    /// reported rather than trusted).
    pub fn advance_payload(&mut self, n: u64, crc_after: u32) -> Result<Events, StreamError> {
        let mut events = Events::new();
        match self.phase {
            Phase::Payload { header, done } => {
                let left = header.record_size.saturating_sub(done);
                let n = clamp(left, usize::try_from(n).unwrap_or(usize::MAX));
                self.crc = crc_after;
                self.payload_advanced(header, done, n, &mut events);
                Ok(events)
            }
            Phase::Failed(e) => Err(e),
            _ => Err(self.fail(self.pos, StreamErrorKind::UnexpectedAdvance)),
        }
    }

    /// Reports `n` skipped bytes (see [`Need::Skip`]).
    ///
    /// # Errors
    /// As [`Reader::advance_payload`].
    pub fn advance_skip(&mut self, n: u64) -> Result<Events, StreamError> {
        let mut events = Events::new();
        match self.phase {
            Phase::Skip { header, remaining } => {
                let n = clamp(remaining, usize::try_from(n).unwrap_or(usize::MAX));
                self.skip_advanced(header, remaining, n, &mut events);
                Ok(events)
            }
            Phase::Failed(e) => Err(e),
            _ => Err(self.fail(self.pos, StreamErrorKind::UnexpectedAdvance)),
        }
    }

    /// The verdict if the stream stopped here.
    pub fn verdict(&self) -> Verdict {
        let (tag, missing) = match self.phase {
            Phase::Failed(e) => return Verdict::Failed(e),
            Phase::Ended => return Verdict::Complete { verified: true },
            Phase::Header if self.have == 0 => {
                return if self.info.is_some() {
                    Verdict::MissingEnd
                } else {
                    Verdict::Complete { verified: false }
                };
            }
            // CAST: usize -> u64 is lossless.
            Phase::Header => (None, HEADER_LEN.saturating_sub(self.have) as u64),
            Phase::Small { header, .. } => (
                Some(header.tag),
                header.record_size.saturating_sub(self.have as u64),
            ),
            Phase::Payload { header, done } => {
                (Some(header.tag), header.record_size.saturating_sub(done))
            }
            Phase::Skip { header, remaining } => (Some(header.tag), remaining),
        };
        Verdict::PartialRecord {
            offset: self.record_start,
            tag,
            missing,
        }
    }

    /// Copies up to `want - have` bytes of `input` into the gather buffer.
    fn gather(&mut self, input: &[u8], want: usize) -> usize {
        let room = want.saturating_sub(self.have);
        let n = room.min(input.len());
        let dst = self
            .buf
            .get_mut(self.have..self.have.saturating_add(n))
            .unwrap_or_default();
        if let Some(src) = input.get(..dst.len()) {
            dst.copy_from_slice(src);
        }
        let n = dst.len();
        self.have = self.have.saturating_add(n);
        // CAST: usize -> u64 is lossless.
        self.pos = self.pos.saturating_add(n as u64);
        n
    }

    fn header_complete(&mut self, events: &mut Events) -> Result<(), StreamError> {
        let mut raw = [0u8; HEADER_LEN];
        if let Some(src) = self.buf.get(..HEADER_LEN) {
            raw.copy_from_slice(src);
        }
        let header = Header::from_bytes(&raw);
        let offset = self.record_start;
        self.have = 0;
        if header.record_size > MAX_RECORD_SIZE {
            return Err(self.fail(
                offset,
                StreamErrorKind::RecordTooLarge {
                    size: header.record_size,
                },
            ));
        }
        let small_len = match header.tag {
            Tag::FwData => None,
            Tag::StopCopySize => Some(STOP_COPY_SIZE_LEN),
            Tag::StreamInfo => {
                if self.records != 0 || self.info.is_some() {
                    return Err(self.fail(offset, StreamErrorKind::MisplacedStreamInfo));
                }
                Some(STREAM_INFO_LEN)
            }
            Tag::StreamEnd => {
                if self.info.is_none() {
                    return Err(self.fail(offset, StreamErrorKind::EndWithoutInfo));
                }
                Some(STREAM_END_LEN)
            }
            Tag::Unknown(tag) if !header.flags.optional() => {
                return Err(self.fail(offset, StreamErrorKind::UnknownMandatoryTag(tag)));
            }
            Tag::Unknown(_) => None,
        };
        push(events, Event::RecordStart { offset, header });
        if let Some(len) = small_len {
            // CAST: usize -> u64 is lossless.
            if header.record_size < len as u64 {
                return Err(self.fail(
                    offset,
                    StreamErrorKind::ShortRecord {
                        tag: header.tag,
                        size: header.record_size,
                        minimum: len as u64,
                    },
                ));
            }
            self.phase = Phase::Small { header, keep: len };
        } else if header.tag == Tag::FwData {
            self.phase = Phase::Payload { header, done: 0 };
            if header.record_size == 0 {
                self.payload_advanced(header, 0, 0, events);
            }
        } else {
            self.phase = Phase::Skip {
                header,
                remaining: header.record_size,
            };
            if header.record_size == 0 {
                self.skip_advanced(header, 0, 0, events);
            }
        }
        Ok(())
    }

    fn small_complete(
        &mut self,
        header: Header,
        keep: usize,
        events: &mut Events,
    ) -> Result<(), StreamError> {
        let offset = self.record_start;
        let payload = self.buf.get(..keep).unwrap_or_default();
        let event = match header.tag {
            Tag::StopCopySize => {
                let mut le = [0u8; 8];
                if let Some(src) = payload.get(..8) {
                    le.copy_from_slice(src);
                }
                let size = u64::from_le_bytes(le);
                self.stop_copy_size = Some(size);
                Event::StopCopySize(size)
            }
            Tag::StreamInfo => {
                let Some((magic, info)) = StreamInfo::parse(payload) else {
                    return Err(self.fail(offset, StreamErrorKind::BadStreamInfoMagic));
                };
                if magic != INFO_MAGIC {
                    return Err(self.fail(offset, StreamErrorKind::BadStreamInfoMagic));
                }
                if info.version != STREAM_FORMAT_VERSION {
                    return Err(
                        self.fail(offset, StreamErrorKind::UnsupportedVersion(info.version))
                    );
                }
                self.info = Some(info);
                Event::StreamInfo(info)
            }
            Tag::StreamEnd => {
                let end = StreamEnd::parse(payload).unwrap_or_default();
                if let Some(m) = self.check_end(&end) {
                    return Err(self.fail(offset, StreamErrorKind::IntegrityMismatch(m)));
                }
                self.end = Some(end);
                Event::StreamEnd(end)
            }
            // Only the tags above enter the Small phase.
            Tag::FwData | Tag::Unknown(_) => return Ok(()),
        };
        push(events, event);
        self.have = 0;
        // CAST: usize -> u64 is lossless.
        let rest = header.record_size.saturating_sub(keep as u64);
        self.phase = Phase::Skip {
            header,
            remaining: rest,
        };
        if rest == 0 {
            self.skip_advanced(header, 0, 0, events);
        }
        Ok(())
    }

    fn check_end(&self, end: &StreamEnd) -> Option<Mismatch> {
        if end.fw_data_records != self.fw_data_records {
            return Some(Mismatch::Records {
                expected: end.fw_data_records,
                actual: self.fw_data_records,
            });
        }
        if end.fw_data_bytes != self.fw_data_bytes {
            return Some(Mismatch::Bytes {
                expected: end.fw_data_bytes,
                actual: self.fw_data_bytes,
            });
        }
        if end.crc32c != self.crc {
            return Some(Mismatch::Crc {
                expected: end.crc32c,
                actual: self.crc,
            });
        }
        None
    }

    fn payload_advanced(&mut self, header: Header, done: u64, n: usize, events: &mut Events) {
        // CAST: usize -> u64 is lossless.
        let n = n as u64;
        let done = done.saturating_add(n);
        self.pos = self.pos.saturating_add(n);
        self.fw_data_bytes = self.fw_data_bytes.saturating_add(n);
        if done >= header.record_size {
            self.fw_data_records = self.fw_data_records.saturating_add(1);
            self.record_done(header, events);
        } else {
            self.phase = Phase::Payload { header, done };
        }
    }

    fn skip_advanced(&mut self, header: Header, remaining: u64, n: usize, events: &mut Events) {
        // CAST: usize -> u64 is lossless.
        let n = n as u64;
        self.pos = self.pos.saturating_add(n);
        let remaining = remaining.saturating_sub(n);
        if remaining == 0 {
            self.record_done(header, events);
        } else {
            self.phase = Phase::Skip { header, remaining };
        }
    }

    fn record_done(&mut self, header: Header, events: &mut Events) {
        push(
            events,
            Event::RecordEnd {
                offset: self.record_start,
                header,
            },
        );
        self.records = self.records.saturating_add(1);
        self.record_start = self.pos;
        self.have = 0;
        self.phase = if header.tag == Tag::StreamEnd {
            Phase::Ended
        } else {
            Phase::Header
        };
    }
}

/// `min(left, avail)` as a usize.
fn clamp(left: u64, avail: usize) -> usize {
    usize::try_from(left).map_or(avail, |l| l.min(avail))
}

/// Pushes an event; a step produces at most [`MAX_EVENTS_PER_STEP`] events,
/// so the vector never overflows (if it did, the event would be dropped, not
/// panic).
fn push(events: &mut Events, event: Event) {
    let _ = events.push(event);
}
