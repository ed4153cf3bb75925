//! Migration streams for the fuzz targets: an independent reference model of
//! what [`Reader`](mlx5vf_core::stream::Reader) must make of any byte string, record-level surgery for
//! mutating valid streams, and builders for Linux-format and our own streams.

use std::ops::Range;

use mlx5vf_core::stream::{
    Event, HEADER_LEN, Header, INFO_MAGIC, MAX_RECORD_SIZE, Mismatch, RecordFlags,
    STREAM_FORMAT_VERSION, StreamEnd, StreamError, StreamErrorKind, StreamInfo, StreamInfoFlags,
    Tag, Verdict, crc32c, encode_stop_copy_size,
};

/// Everything a reader makes of a stream, in a form two readers (or the
/// reference model) can be compared by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trace {
    /// Every event, in order.
    pub events: Vec<Event>,
    /// The FW_DATA images, payload reassembled at its image offsets (the last
    /// one may be partial).
    pub images: Vec<Vec<u8>>,
    /// The error the reader failed with.
    pub error: Option<StreamError>,
    /// The verdict at the end.
    pub verdict: Verdict,
    /// Stream bytes consumed.
    pub position: u64,
    /// Records completed.
    pub records: u64,
    /// FW_DATA records completed.
    pub fw_data_records: u64,
    /// FW_DATA payload bytes.
    pub fw_data_bytes: u64,
    /// CRC-32C of those bytes.
    pub crc: u32,
    /// The stream-info record.
    pub info: Option<StreamInfo>,
    /// The verified stream-end record.
    pub end: Option<StreamEnd>,
    /// The STOP_COPY_SIZE hint.
    pub stop_copy_size: Option<u64>,
}

impl Trace {
    /// What a reader reports before any byte arrived.
    pub fn empty() -> Self {
        Self {
            events: vec![],
            images: vec![],
            error: None,
            verdict: Verdict::Complete { verified: false },
            position: 0,
            records: 0,
            fw_data_records: 0,
            fw_data_bytes: 0,
            crc: 0,
            info: None,
            end: None,
            stop_copy_size: None,
        }
    }

    /// The non-empty FW_DATA images: what a resuming device LOADs.
    pub fn loads(&self) -> Vec<&[u8]> {
        self.images
            .iter()
            .filter(|i| !i.is_empty())
            .map(Vec::as_slice)
            .collect()
    }
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// A record header, decoded by hand from `kernel-behaviour.md`'s layout
/// (`le64 record_size, le32 flags, le32 tag`).
fn header_at(b: &[u8], at: usize) -> Header {
    Header {
        record_size: le_u64(b, at),
        flags: RecordFlags::from_bits(le_u32(b, at + 8)),
        tag: Tag::from(le_u32(b, at + 12)),
    }
}

/// Bytes of the small records the reader parses: STOP_COPY_SIZE's le64,
/// stream-info and stream-end payloads (`stream/mod.rs` documentation).
const fn small_len(tag: Tag) -> Option<usize> {
    match tag {
        Tag::StopCopySize => Some(8),
        Tag::StreamInfo => Some(64),
        Tag::StreamEnd => Some(24),
        Tag::FwData | Tag::Unknown(_) => None,
    }
}

/// The reference model: what a reader fed `stream` in one piece must report,
/// written from the format's documentation rather than from the reader's
/// phase machine.
pub fn reference(stream: &[u8]) -> Trace {
    let mut t = Trace::empty();
    let len = stream.len();
    let mut pos = 0usize;
    let mut ended = false;
    let fail = |t: &mut Trace, offset: usize, kind| {
        t.error = Some(StreamError {
            offset: offset as u64,
            kind,
        });
    };
    // (record offset, tag, bytes missing) when the stream stops inside a record.
    let mut partial: Option<(usize, Option<Tag>, u64)> = None;
    loop {
        if ended {
            if pos < len {
                fail(&mut t, pos, StreamErrorKind::DataAfterEnd);
            }
            break;
        }
        let rest = &stream[pos..];
        if rest.is_empty() {
            break;
        }
        if rest.len() < HEADER_LEN {
            t.position = len as u64;
            partial = Some((pos, None, (HEADER_LEN - rest.len()) as u64));
            break;
        }
        let header = header_at(rest, 0);
        let size = header.record_size;
        t.position = (pos + HEADER_LEN) as u64;
        if size > MAX_RECORD_SIZE {
            fail(&mut t, pos, StreamErrorKind::RecordTooLarge { size });
            break;
        }
        let small = small_len(header.tag);
        match header.tag {
            Tag::StreamInfo if t.records != 0 || t.info.is_some() => {
                fail(&mut t, pos, StreamErrorKind::MisplacedStreamInfo);
                break;
            }
            Tag::StreamEnd if t.info.is_none() => {
                fail(&mut t, pos, StreamErrorKind::EndWithoutInfo);
                break;
            }
            Tag::Unknown(tag) if !header.flags.optional() => {
                fail(&mut t, pos, StreamErrorKind::UnknownMandatoryTag(tag));
                break;
            }
            _ => {}
        }
        if let Some(k) = small.filter(|&k| size < k as u64) {
            fail(
                &mut t,
                pos,
                StreamErrorKind::ShortRecord {
                    tag: header.tag,
                    size,
                    minimum: k as u64,
                },
            );
            break;
        }
        t.events.push(Event::RecordStart {
            offset: pos as u64,
            header,
        });
        let body = &rest[HEADER_LEN..];
        let avail = usize::try_from(size).map_or(body.len(), |s| s.min(body.len()));
        let missing = size - avail as u64;
        if header.tag == Tag::FwData {
            let bytes = &body[..avail];
            t.images.push(bytes.to_vec());
            t.crc = crc32c::update(t.crc, bytes);
            t.fw_data_bytes += avail as u64;
            t.position += avail as u64;
            if missing > 0 {
                partial = Some((pos, Some(header.tag), missing));
                break;
            }
            t.fw_data_records += 1;
        } else if let Some(k) = small {
            if body.len() < k {
                t.position += body.len() as u64;
                partial = Some((pos, Some(header.tag), missing));
                break;
            }
            t.position += k as u64;
            let p = &body[..k];
            match header.tag {
                Tag::StopCopySize => {
                    let v = le_u64(p, 0);
                    t.stop_copy_size = Some(v);
                    t.events.push(Event::StopCopySize(v));
                }
                Tag::StreamInfo => {
                    if p[..8] != INFO_MAGIC {
                        fail(&mut t, pos, StreamErrorKind::BadStreamInfoMagic);
                        break;
                    }
                    let version = le_u16(p, 8);
                    if version != STREAM_FORMAT_VERSION {
                        fail(&mut t, pos, StreamErrorKind::UnsupportedVersion(version));
                        break;
                    }
                    let mut producer = [0u8; 32];
                    producer.copy_from_slice(&p[32..64]);
                    let info = StreamInfo {
                        version,
                        flags: StreamInfoFlags::from_bits(le_u16(p, 10)),
                        page_size: le_u32(p, 12),
                        chunk_size: le_u64(p, 16),
                        chunk_slots: le_u32(p, 24),
                        producer,
                    };
                    t.info = Some(info);
                    t.events.push(Event::StreamInfo(info));
                }
                _ => {
                    let end = StreamEnd {
                        fw_data_records: le_u64(p, 0),
                        fw_data_bytes: le_u64(p, 8),
                        crc32c: le_u32(p, 16),
                    };
                    let mismatch = if end.fw_data_records != t.fw_data_records {
                        Some(Mismatch::Records {
                            expected: end.fw_data_records,
                            actual: t.fw_data_records,
                        })
                    } else if end.fw_data_bytes != t.fw_data_bytes {
                        Some(Mismatch::Bytes {
                            expected: end.fw_data_bytes,
                            actual: t.fw_data_bytes,
                        })
                    } else if end.crc32c != t.crc {
                        Some(Mismatch::Crc {
                            expected: end.crc32c,
                            actual: t.crc,
                        })
                    } else {
                        None
                    };
                    if let Some(m) = mismatch {
                        fail(&mut t, pos, StreamErrorKind::IntegrityMismatch(m));
                        break;
                    }
                    t.end = Some(end);
                    t.events.push(Event::StreamEnd(end));
                }
            }
            let skipped = avail - k;
            t.position += skipped as u64;
            if missing > 0 {
                partial = Some((pos, Some(header.tag), missing));
                break;
            }
        } else {
            t.position += avail as u64;
            if missing > 0 {
                partial = Some((pos, Some(header.tag), missing));
                break;
            }
        }
        t.events.push(Event::RecordEnd {
            offset: pos as u64,
            header,
        });
        t.records += 1;
        ended = header.tag == Tag::StreamEnd;
        pos += HEADER_LEN + avail;
    }
    t.verdict = match (t.error, partial) {
        (Some(e), _) => Verdict::Failed(e),
        (None, Some((offset, tag, missing))) => Verdict::PartialRecord {
            offset: offset as u64,
            tag,
            missing,
        },
        (None, None) if ended => Verdict::Complete { verified: true },
        (None, None) if t.info.is_some() => Verdict::MissingEnd,
        (None, None) => Verdict::Complete { verified: false },
    };
    t
}

/// The records of a stream, found by walking headers without validating
/// them: each range covers header and payload. A trailing piece that is not
/// a whole record (short header, or a payload running past the end) is
/// returned separately.
pub fn split_records(stream: &[u8]) -> (Vec<Range<usize>>, Range<usize>) {
    let mut out = vec![];
    let mut pos = 0usize;
    while stream.len() - pos >= HEADER_LEN {
        let size = le_u64(stream, pos);
        let end = usize::try_from(size)
            .ok()
            .and_then(|s| (pos + HEADER_LEN).checked_add(s))
            .filter(|&e| e <= stream.len());
        match end {
            Some(end) => {
                out.push(pos..end);
                pos = end;
            }
            None => break,
        }
    }
    (out, pos..stream.len())
}

/// The tag of the record in `range` of `stream`.
pub fn tag_of(stream: &[u8], range: &Range<usize>) -> Tag {
    Tag::from(le_u32(stream, range.start + 12))
}

/// Rewrites every stream-end record's payload with the counts and CRC-32C of
/// the FW_DATA records before it, so a modified stream passes the integrity
/// check (then the firmware's own image checks are all that stand between a
/// bad image and the device).
pub fn recompute_end(stream: &mut [u8]) {
    let (records, _) = split_records(stream);
    let (mut n, mut bytes, mut crc) = (0u64, 0u64, 0u32);
    for r in records {
        match tag_of(stream, &r) {
            Tag::FwData => {
                let payload = &stream[r.start + HEADER_LEN..r.end];
                n += 1;
                bytes += payload.len() as u64;
                crc = crc32c::update(crc, payload);
            }
            Tag::StreamEnd if r.len() >= StreamEnd::RECORD_LEN => {
                let p = r.start + HEADER_LEN;
                stream[p..p + 8].copy_from_slice(&n.to_le_bytes());
                stream[p + 8..p + 16].copy_from_slice(&bytes.to_le_bytes());
                stream[p + 16..p + 20].copy_from_slice(&crc.to_le_bytes());
            }
            _ => {}
        }
    }
}

/// A stream as Linux writes it: STOP_COPY_SIZE (`hint`), then one FW_DATA
/// record per image.
pub fn linux_stream(hint: u64, images: &[&[u8]]) -> Vec<u8> {
    let mut s = vec![0u8; 24];
    let n = encode_stop_copy_size(&mut s, hint);
    debug_assert_eq!(n, Ok(24));
    for img in images {
        s.extend_from_slice(&Header::fw_data(img.len() as u64).to_bytes());
        s.extend_from_slice(img);
    }
    s
}

/// Our stream: stream-info, the Linux records, stream-end.
pub fn our_stream(hint: u64, images: &[&[u8]]) -> Vec<u8> {
    let info = StreamInfo {
        version: STREAM_FORMAT_VERSION,
        flags: StreamInfoFlags::new().with_chunk_mode(true),
        page_size: 4096,
        chunk_size: 4096,
        chunk_slots: 2,
        producer: StreamInfo::producer_from("mlx5vf-fuzz"),
    };
    let mut s = vec![0u8; StreamInfo::RECORD_LEN];
    let n = info.encode_record(&mut s);
    debug_assert_eq!(n, Ok(StreamInfo::RECORD_LEN));
    s.extend_from_slice(&linux_stream(hint, images));
    let end = StreamEnd {
        fw_data_records: images.len() as u64,
        fw_data_bytes: images.iter().map(|i| i.len() as u64).sum(),
        crc32c: images.iter().fold(0, |c, i| crc32c::update(c, i)),
    };
    let mut e = [0u8; StreamEnd::RECORD_LEN];
    let n = end.encode_record(&mut e);
    debug_assert_eq!(n, Ok(StreamEnd::RECORD_LEN));
    s.extend_from_slice(&e);
    s
}
