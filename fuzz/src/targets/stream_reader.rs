//! `stream_reader`: arbitrary bytes through [`Reader`], split every way.
//!
//! # Input
//! Byte 0 gives the number of split sizes `n = byte % 9`; the next `n`
//! bytes are split sizes (`0` means 4096, anything else its value); the rest
//! is the stream. With no split sizes, `[7, 1, 300]` is used.
//!
//! # Checks
//! The stream is read four ways: in one piece, cut into pieces of the split
//! sizes (cycled), one byte at a time, and *planned* (the way a driver whose
//! input is in user memory drives it: [`Reader::need`], header and small
//! bytes through [`Reader::feed`], payload copied and reported with
//! [`Reader::advance_payload`] and a CRC continued with
//! [`crc32c::update`], skipped bytes
//! with [`Reader::advance_skip`], each step at most a split size). Every
//! way must give the same events, image bytes (at their image offsets),
//! counters, error and verdict, and those must equal what the independent
//! [`reference()`] model says. Errors must be sticky. Nothing may panic.

use mlx5vf_core::stream::{Event, Need, Reader, StreamError, Tag, crc32c};

use crate::streams::{Trace, reference};

/// Split sizes used when the input gives none.
const DEFAULT_SPLITS: [usize; 3] = [7, 1, 300];

/// Longest stream also read one byte at a time.
const BYTEWISE_MAX: usize = 1 << 16;

/// The target. See the module documentation.
pub fn run(data: &[u8]) {
    let (splits, stream) = parse(data);
    let expected = reference(stream);
    let one_shot = feed_pieces(stream, &[usize::MAX]);
    compare("one piece", &one_shot, &expected);
    let split = feed_pieces(stream, &splits);
    compare("split pieces", &split, &expected);
    if stream.len() <= BYTEWISE_MAX {
        let bytewise = feed_pieces(stream, &[1]);
        compare("byte at a time", &bytewise, &expected);
    }
    let planned = planned(stream, &splits);
    compare("planned", &planned, &expected);
}

/// Split sizes and the stream.
fn parse(data: &[u8]) -> (Vec<usize>, &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return (DEFAULT_SPLITS.to_vec(), data);
    };
    let n = usize::from(n % 9).min(rest.len());
    let (sizes, stream) = rest.split_at(n);
    let splits: Vec<usize> = sizes
        .iter()
        .map(|&b| if b == 0 { 4096 } else { usize::from(b) })
        .collect();
    if splits.is_empty() {
        (DEFAULT_SPLITS.to_vec(), stream)
    } else {
        (splits, stream)
    }
}

fn compare(how: &str, got: &Trace, expected: &Trace) {
    assert_eq!(got.error, expected.error, "{how}: error");
    assert_eq!(got.events, expected.events, "{how}: events");
    assert_eq!(got.images, expected.images, "{how}: images");
    assert_eq!(got, expected, "{how}: trace");
}

/// Collects a reader's events and images as they arrive.
struct Collector {
    trace: Trace,
    /// `image_size` of the FW_DATA record being read.
    image_size: Option<u64>,
}

impl Collector {
    fn new() -> Self {
        Self {
            trace: Trace::empty(),
            image_size: None,
        }
    }

    fn events(&mut self, events: &[Event]) {
        for e in events {
            match *e {
                Event::RecordStart { header, .. } if header.tag == Tag::FwData => {
                    self.trace.images.push(vec![]);
                    self.image_size = Some(header.record_size);
                }
                Event::RecordEnd { header, .. } if header.tag == Tag::FwData => {
                    let img = self.trace.images.last().map_or(0, Vec::len);
                    assert_eq!(
                        img as u64, header.record_size,
                        "FW_DATA record ended before its payload did"
                    );
                    self.image_size = None;
                }
                _ => {}
            }
        }
        self.trace.events.extend_from_slice(events);
    }

    fn payload(&mut self, image_offset: u64, bytes: &[u8]) {
        let Some(img) = self.trace.images.last_mut() else {
            panic!("payload bytes outside a FW_DATA record");
        };
        assert_eq!(image_offset, img.len() as u64, "payload out of order");
        img.extend_from_slice(bytes);
        if let Some(size) = self.image_size {
            assert!(img.len() as u64 <= size, "payload beyond the image size");
        }
    }

    fn finish(mut self, r: &Reader, error: Option<StreamError>) -> Trace {
        if let Some(e) = error {
            assert_eq!(r.error(), Some(e), "error() after a failed step");
            // Sticky: every entry point now reports the same error.
            let mut r2 = r.clone();
            assert_eq!(r2.feed(&[0u8; 3]).map(|_| ()), Err(e), "feed after failure");
            assert_eq!(r2.advance_payload(1, 0).map(|_| ()), Err(e));
            assert_eq!(r2.advance_skip(1).map(|_| ()), Err(e));
            assert_eq!(r2.need(), Need::Nothing);
        }
        let t = &mut self.trace;
        t.error = error;
        t.verdict = r.verdict();
        t.position = r.position();
        t.records = r.records();
        t.fw_data_records = r.fw_data_records();
        t.fw_data_bytes = r.fw_data_bytes();
        t.crc = r.payload_crc();
        t.info = r.stream_info().copied();
        t.end = r.stream_end().copied();
        t.stop_copy_size = r.stop_copy_size();
        assert_eq!(
            t.crc,
            t.images.iter().fold(0, |c, i| crc32c::update(c, i)),
            "payload_crc() is not the CRC of the payload handed out"
        );
        self.trace
    }
}

/// `feed()` over the stream cut into pieces of `splits` (cycled).
fn feed_pieces(stream: &[u8], splits: &[usize]) -> Trace {
    let mut r = Reader::new();
    let mut c = Collector::new();
    let mut rest = stream;
    let mut cuts = splits.iter().cycle();
    let mut error = None;
    'pieces: while !rest.is_empty() {
        let take = cuts.next().copied().unwrap_or(1).clamp(1, rest.len());
        let (mut piece, tail) = rest.split_at(take);
        rest = tail;
        while !piece.is_empty() {
            match r.feed(piece) {
                Ok(step) => {
                    assert!(step.consumed <= piece.len(), "consumed more than given");
                    if let Some(p) = step.payload {
                        assert_eq!(p.bytes, &piece[..p.bytes.len()], "payload is not a prefix");
                        assert_eq!(p.bytes.len(), step.consumed, "payload vs consumed");
                        c.payload(p.image_offset, p.bytes);
                    }
                    c.events(&step.events);
                    // A step that consumes nothing must be the end of the road.
                    if step.consumed == 0 {
                        panic!("feed consumed nothing of {} bytes", piece.len());
                    }
                    piece = &piece[step.consumed..];
                }
                Err(e) => {
                    error = Some(e);
                    break 'pieces;
                }
            }
        }
    }
    c.finish(&r, error)
}

/// The planned drive: `need()` decides what the next bytes are.
fn planned(stream: &[u8], splits: &[usize]) -> Trace {
    let mut r = Reader::new();
    let mut c = Collector::new();
    let mut rest = stream;
    let mut cuts = splits.iter().cycle();
    let mut error = None;
    while !rest.is_empty() {
        let cap = cuts.next().copied().unwrap_or(1).max(1);
        let step = match r.need() {
            Need::Header { missing } | Need::Small { missing } => {
                assert!(missing > 0, "reader needs 0 header/small bytes");
                let n = missing.min(cap).min(rest.len());
                r.feed(&rest[..n]).map(|s| {
                    assert_eq!(s.consumed, n, "feed took other than what need() asked");
                    assert!(s.payload.is_none(), "payload from header bytes");
                    c.events(&s.events);
                    n
                })
            }
            Need::Payload {
                image_offset,
                remaining,
                image_size,
            } => {
                assert!(remaining > 0, "reader needs 0 payload bytes");
                assert_eq!(c.image_size, Some(image_size), "image size");
                assert_eq!(image_offset + remaining, image_size, "offset + remaining");
                let n = usize::try_from(remaining)
                    .unwrap_or(usize::MAX)
                    .min(cap)
                    .min(rest.len());
                let bytes = &rest[..n];
                c.payload(image_offset, bytes);
                let crc = crc32c::update(r.payload_crc(), bytes);
                r.advance_payload(n as u64, crc).map(|events| {
                    c.events(&events);
                    n
                })
            }
            Need::Skip { remaining } => {
                assert!(remaining > 0, "reader needs 0 skipped bytes");
                let n = usize::try_from(remaining)
                    .unwrap_or(usize::MAX)
                    .min(cap)
                    .min(rest.len());
                r.advance_skip(n as u64).map(|events| {
                    c.events(&events);
                    n
                })
            }
            Need::Nothing => {
                let e = r.feed(rest);
                assert!(e.is_err(), "bytes accepted after Need::Nothing");
                e.map(|s| s.consumed)
            }
        };
        match step {
            Ok(n) => rest = &rest[n..],
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    c.finish(&r, error)
}
