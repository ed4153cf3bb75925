//! Stream codec tests: golden bytes, Linux-format streams, our records,
//! every error with its offset, verdicts, and split-invariance properties.

use std::vec;
use std::vec::Vec;

use proptest::prelude::*;

use super::*;
use crate::stream::reader::{Event, Need, Verdict};

/// A stream as the Linux driver writes it: STOP_COPY_SIZE then FW_DATA records.
fn linux_stream(images: &[Vec<u8>]) -> Vec<u8> {
    let mut s = vec![0u8; STOP_COPY_SIZE_RECORD_LEN];
    encode_stop_copy_size(&mut s, 8 << 20).unwrap();
    for img in images {
        s.extend_from_slice(&Header::fw_data(img.len() as u64).to_bytes());
        s.extend_from_slice(img);
    }
    s
}

fn info() -> StreamInfo {
    StreamInfo {
        version: STREAM_FORMAT_VERSION,
        flags: StreamInfoFlags::new().with_chunk_mode(true),
        page_size: 4096,
        chunk_size: 8 << 20,
        chunk_slots: 2,
        producer: StreamInfo::producer_from("mlx5vf test"),
    }
}

/// Our format: info, Linux records, end.
fn our_stream(images: &[Vec<u8>]) -> Vec<u8> {
    let mut s = vec![0u8; StreamInfo::RECORD_LEN];
    info().encode_record(&mut s).unwrap();
    s.extend_from_slice(&linux_stream(images));
    let mut crc = 0;
    for img in images {
        crc = crc32c::update(crc, img);
    }
    let end = StreamEnd {
        fw_data_records: images.len() as u64,
        fw_data_bytes: images.iter().map(|i| i.len() as u64).sum(),
        crc32c: crc,
    };
    let mut e = vec![0u8; StreamEnd::RECORD_LEN];
    end.encode_record(&mut e).unwrap();
    s.extend_from_slice(&e);
    s
}

fn images() -> Vec<Vec<u8>> {
    vec![
        (0..1000u32).map(|i| i as u8).collect(),
        vec![],
        (0..5000u32).map(|i| (i * 31) as u8).collect(),
    ]
}

/// What a reader saw: events, and per image the bytes reassembled at their offsets.
#[derive(Debug, PartialEq)]
struct Seen {
    events: Vec<Event>,
    images: Vec<Vec<u8>>,
    verdict: Verdict,
}

fn read_with_splits(stream: &[u8], splits: &[usize]) -> Result<Seen, StreamError> {
    let mut r = Reader::new();
    let mut seen = Seen {
        events: vec![],
        images: vec![],
        verdict: Verdict::MissingEnd,
    };
    let mut rest = stream;
    let mut cuts = splits.iter().cycle();
    while !rest.is_empty() {
        let take = (*cuts.next().unwrap_or(&1)).clamp(1, rest.len());
        let (mut piece, tail) = rest.split_at(take);
        rest = tail;
        while !piece.is_empty() {
            let step = r.feed(piece)?;
            if let Some(p) = step.payload {
                let img = seen.images.last_mut().unwrap();
                assert_eq!(p.image_offset as usize, img.len());
                img.extend_from_slice(p.bytes);
            }
            for e in &step.events {
                if let Event::RecordStart { header, .. } = e {
                    if header.tag == Tag::FwData {
                        seen.images.push(vec![]);
                    }
                }
            }
            seen.events.extend(step.events);
            piece = &piece[step.consumed..];
        }
    }
    seen.verdict = r.verdict();
    Ok(seen)
}

fn read(stream: &[u8]) -> Result<Seen, StreamError> {
    read_with_splits(stream, &[stream.len().max(1)])
}

#[test]
fn header_golden_bytes() {
    let h = Header {
        record_size: 0x0102_0304_0506_0708,
        flags: RecordFlags::OPTIONAL,
        tag: Tag::Unknown(0xaabb_ccdd),
    };
    let b = h.to_bytes();
    assert_eq!(
        b,
        [8, 7, 6, 5, 4, 3, 2, 1, 1, 0, 0, 0, 0xdd, 0xcc, 0xbb, 0xaa]
    );
    assert_eq!(Header::from_bytes(&b), h);
    assert_eq!(
        Header::fw_data(0x10).to_bytes(),
        [0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    );
    let mut small = [0u8; 15];
    assert_eq!(h.encode(&mut small), Err(InsufficientSize { required: 16 }));
    assert_eq!(small, [0; 15]);
}

#[test]
fn our_records_golden_bytes() {
    let mut b = [0u8; StreamEnd::RECORD_LEN];
    StreamEnd {
        fw_data_records: 3,
        fw_data_bytes: 0x1_0000_0000,
        crc32c: 0xe306_9283,
    }
    .encode_record(&mut b)
    .unwrap();
    assert_eq!(
        &b[..16],
        &[24, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0x76, 0x6d]
    );
    assert_eq!(&b[16..24], &3u64.to_le_bytes());
    assert_eq!(&b[24..32], &0x1_0000_0000u64.to_le_bytes());
    assert_eq!(&b[32..36], &0xe306_9283u32.to_le_bytes());
    assert_eq!(&b[36..40], &[0; 4]);

    let mut b = [0u8; StreamInfo::RECORD_LEN];
    info().encode_record(&mut b).unwrap();
    assert_eq!(
        &b[..16],
        &[64, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0x76, 0x6d]
    );
    assert_eq!(&b[16..24], b"MLX5VFSI");
    assert_eq!(&b[24..26], &[1, 0]); // version
    assert_eq!(&b[26..28], &[1, 0]); // chunk mode
    assert_eq!(&b[28..32], &4096u32.to_le_bytes());
    assert_eq!(&b[48..59], b"mlx5vf test");
    assert_eq!(info().producer_str(), "mlx5vf test");
}

#[test]
fn reads_a_linux_stream() {
    let imgs = images();
    let s = linux_stream(&imgs);
    let seen = read(&s).unwrap();
    assert_eq!(seen.images, imgs);
    assert_eq!(seen.verdict, Verdict::Complete { verified: false });
    assert_eq!(seen.events[1], Event::StopCopySize(8 << 20));
    let ends = seen
        .events
        .iter()
        .filter(|e| matches!(e, Event::RecordEnd { .. }))
        .count();
    assert_eq!(ends, 4);
}

#[test]
fn reads_our_stream_and_verifies_it() {
    let imgs = images();
    let s = our_stream(&imgs);
    let seen = read(&s).unwrap();
    assert_eq!(seen.images, imgs);
    assert_eq!(seen.verdict, Verdict::Complete { verified: true });
    assert!(matches!(seen.events[1], Event::StreamInfo(i) if i == info()));
    assert!(
        seen.events
            .iter()
            .any(|e| matches!(e, Event::StreamEnd(end) if end.fw_data_records == 3))
    );
}

#[test]
fn one_byte_at_a_time_equals_all_at_once() {
    let s = our_stream(&images());
    assert_eq!(read_with_splits(&s, &[1]).unwrap(), read(&s).unwrap());
}

fn err_of(stream: &[u8]) -> StreamError {
    match read(stream) {
        Err(e) => e,
        Ok(seen) => panic!("accepted: {:?}", seen.verdict),
    }
}

#[test]
fn oversized_record_is_enomem() {
    let mut s = linux_stream(&images());
    let at = s.len() as u64;
    s.extend_from_slice(&Header::fw_data(MAX_RECORD_SIZE + 1).to_bytes());
    let e = err_of(&s);
    assert_eq!(e.offset, at);
    assert_eq!(e.kind, StreamErrorKind::RecordTooLarge { size: 1 << 32 });
    assert_eq!(e.kind.errno(), crate::errno::Errno::ENOMEM);
    // 2^32 - 1 itself is allowed.
    let mut r = Reader::new();
    r.feed(&Header::fw_data(MAX_RECORD_SIZE).to_bytes())
        .unwrap();
    assert_eq!(
        r.need(),
        Need::Payload {
            image_offset: 0,
            remaining: MAX_RECORD_SIZE,
            image_size: MAX_RECORD_SIZE
        }
    );
}

#[test]
fn unknown_mandatory_is_eopnotsupp_and_unknown_optional_is_skipped() {
    let mut s = linux_stream(&[]);
    let h = Header {
        record_size: 100,
        flags: RecordFlags::MANDATORY,
        tag: Tag::Unknown(7),
    };
    let at = s.len() as u64;
    s.extend_from_slice(&h.to_bytes());
    s.extend_from_slice(&[0u8; 100]);
    let e = err_of(&s);
    assert_eq!(
        e,
        StreamError {
            offset: at,
            kind: StreamErrorKind::UnknownMandatoryTag(7)
        }
    );
    assert_eq!(e.kind.errno(), crate::errno::Errno::EOPNOTSUPP);

    let mut s = linux_stream(&[]);
    let h = Header {
        flags: RecordFlags::OPTIONAL,
        ..h
    };
    s.extend_from_slice(&h.to_bytes());
    s.extend_from_slice(&[0xeeu8; 100]);
    s.extend_from_slice(&Header::fw_data(3).to_bytes());
    s.extend_from_slice(&[1, 2, 3]);
    let seen = read(&s).unwrap();
    assert_eq!(seen.images, vec![vec![1, 2, 3]]);
    assert_eq!(seen.verdict, Verdict::Complete { verified: false });
}

#[test]
fn a_huge_optional_record_is_skipped_without_memory() {
    let mut r = Reader::new();
    let h = Header {
        record_size: MAX_RECORD_SIZE,
        flags: RecordFlags::OPTIONAL,
        tag: Tag::Unknown(0x1234),
    };
    r.feed(&h.to_bytes()).unwrap();
    assert_eq!(
        r.need(),
        Need::Skip {
            remaining: MAX_RECORD_SIZE
        }
    );
    let ev = r.advance_skip(MAX_RECORD_SIZE - 1).unwrap();
    assert!(ev.is_empty());
    let ev = r.advance_skip(10).unwrap(); // clamped to the 1 byte left
    assert!(matches!(ev[0], Event::RecordEnd { .. }));
    assert_eq!(r.position(), 16 + MAX_RECORD_SIZE);
    // The reader's footprint is fixed, whatever the records' sizes.
    // (a fixed few hundred bytes: two small buffers and the parsed records).
    assert!(
        core::mem::size_of::<Reader>() <= 384,
        "{}",
        core::mem::size_of::<Reader>()
    );
}

#[test]
fn short_known_records_are_rejected() {
    let h = Header {
        record_size: 4,
        flags: RecordFlags::OPTIONAL,
        tag: Tag::StopCopySize,
    };
    let e = err_of(&h.to_bytes());
    assert_eq!(
        e.kind,
        StreamErrorKind::ShortRecord {
            tag: Tag::StopCopySize,
            size: 4,
            minimum: 8
        }
    );
    // A longer STOP_COPY_SIZE is read from its first 8 bytes, the rest skipped.
    let mut s = Header {
        record_size: 12,
        ..h
    }
    .to_bytes()
    .to_vec();
    s.extend_from_slice(&77u64.to_le_bytes());
    s.extend_from_slice(&[9; 4]);
    let seen = read(&s).unwrap();
    assert_eq!(seen.events[1], Event::StopCopySize(77));
    assert_eq!(seen.verdict, Verdict::Complete { verified: false });
}

#[test]
fn stream_info_rules() {
    // Not first.
    let mut s = linux_stream(&[]);
    let at = s.len() as u64;
    let mut rec = vec![0u8; StreamInfo::RECORD_LEN];
    info().encode_record(&mut rec).unwrap();
    s.extend_from_slice(&rec);
    assert_eq!(
        err_of(&s),
        StreamError {
            offset: at,
            kind: StreamErrorKind::MisplacedStreamInfo
        }
    );
    // Bad magic.
    let mut bad = rec.clone();
    bad[16] = b'X';
    assert_eq!(err_of(&bad).kind, StreamErrorKind::BadStreamInfoMagic);
    // Unknown version.
    let mut v2 = rec.clone();
    v2[24] = 2;
    assert_eq!(err_of(&v2).kind, StreamErrorKind::UnsupportedVersion(2));
    // Info without end: not complete.
    assert_eq!(read(&rec).unwrap().verdict, Verdict::MissingEnd);
    // End without info: refused where the end record starts (a driver
    // checks the payload CRC only after a stream-info record).
    let ours = our_stream(&images());
    let linux_part = &ours[StreamInfo::RECORD_LEN..];
    assert_eq!(
        err_of(linux_part),
        StreamError {
            offset: (linux_part.len() - StreamEnd::RECORD_LEN) as u64,
            kind: StreamErrorKind::EndWithoutInfo
        }
    );
}

#[test]
fn integrity_mismatches_are_distinct() {
    let imgs = images();
    let good = our_stream(&imgs);
    let end_at = (good.len() - StreamEnd::RECORD_LEN) as u64;
    // Flip a payload byte: CRC mismatch.
    let mut s = good.clone();
    s[StreamInfo::RECORD_LEN + STOP_COPY_SIZE_RECORD_LEN + 16 + 5] ^= 0x40;
    let e = err_of(&s);
    assert_eq!(e.offset, end_at);
    assert!(matches!(
        e.kind,
        StreamErrorKind::IntegrityMismatch(Mismatch::Crc { .. })
    ));
    assert_eq!(e.kind.errno(), crate::errno::Errno::EIO);
    // Drop the empty FW_DATA record: record count mismatch.
    let first = StreamInfo::RECORD_LEN + STOP_COPY_SIZE_RECORD_LEN + 16 + 1000;
    let mut s = good.clone();
    s.drain(first..first + 16);
    assert!(matches!(
        err_of(&s).kind,
        StreamErrorKind::IntegrityMismatch(Mismatch::Records {
            expected: 3,
            actual: 2
        })
    ));
    // Lie about the byte count.
    let mut s = good.clone();
    let n = s.len();
    s[n - 16] ^= 1;
    assert!(matches!(
        err_of(&s).kind,
        StreamErrorKind::IntegrityMismatch(Mismatch::Bytes { .. })
    ));
    // Anything after the end record.
    let mut s = good;
    s.push(0);
    assert_eq!(err_of(&s).kind, StreamErrorKind::DataAfterEnd);
}

#[test]
fn verdicts_for_truncated_streams() {
    let s = our_stream(&images());
    let fw0 = (StreamInfo::RECORD_LEN + STOP_COPY_SIZE_RECORD_LEN) as u64;
    let seen = read(&s[..fw0 as usize + 10]).unwrap();
    assert_eq!(
        seen.verdict,
        Verdict::PartialRecord {
            offset: fw0,
            tag: None,
            missing: 6
        }
    );
    let seen = read(&s[..fw0 as usize + 16 + 400]).unwrap();
    assert_eq!(
        seen.verdict,
        Verdict::PartialRecord {
            offset: fw0,
            tag: Some(Tag::FwData),
            missing: 600
        }
    );
    let cut = s.len() - StreamEnd::RECORD_LEN;
    assert_eq!(read(&s[..cut]).unwrap().verdict, Verdict::MissingEnd);
    assert_eq!(
        read(&[]).unwrap().verdict,
        Verdict::Complete { verified: false }
    );
}

#[test]
fn errors_are_sticky() {
    let mut r = Reader::new();
    let h = Header {
        record_size: 1,
        flags: RecordFlags::MANDATORY,
        tag: Tag::Unknown(99),
    };
    let e = r.feed(&h.to_bytes()).unwrap_err();
    assert_eq!(r.feed(&[0]).unwrap_err(), e);
    assert_eq!(r.advance_payload(1, 0).unwrap_err(), e);
    assert_eq!(r.verdict(), Verdict::Failed(e));
    assert_eq!(r.need(), Need::Nothing);
}

#[test]
fn planned_driving_matches_feeding() {
    // Drive the reader the way a kernel driver does: small bytes through
    // `feed`, payload "copied elsewhere" and reported with its CRC.
    let imgs = images();
    let s = our_stream(&imgs);
    let mut r = Reader::new();
    let mut pos = 0usize;
    let mut loaded = vec![];
    while pos < s.len() {
        match r.need() {
            Need::Header { missing } | Need::Small { missing } => {
                let n = missing.min(3).min(s.len() - pos);
                let step = r.feed(&s[pos..pos + n]).unwrap();
                assert_eq!(step.consumed, n);
                pos += n;
            }
            Need::Payload {
                image_offset,
                remaining,
                image_size,
            } => {
                if image_offset == 0 {
                    loaded.push(Vec::with_capacity(image_size as usize));
                }
                let n = (remaining as usize).min(777).min(s.len() - pos);
                let bytes = &s[pos..pos + n];
                loaded.last_mut().unwrap().extend_from_slice(bytes);
                let crc = crc32c::update(r.payload_crc(), bytes);
                r.advance_payload(n as u64, crc).unwrap();
                pos += n;
            }
            Need::Skip { remaining } => {
                let n = (remaining as usize).min(s.len() - pos);
                r.advance_skip(n as u64).unwrap();
                pos += n;
            }
            Need::Nothing => panic!("reader stopped at {pos}"),
        }
    }
    // The empty image never needed payload bytes.
    assert_eq!(loaded, vec![imgs[0].clone(), imgs[2].clone()]);
    assert_eq!(r.verdict(), Verdict::Complete { verified: true });
    assert_eq!(
        r.advance_skip(1).unwrap_err().kind,
        StreamErrorKind::UnexpectedAdvance
    );
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: if cfg!(miri) { 4 } else { 256 },
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn every_split_gives_the_same_records_and_bytes(
        sizes in proptest::collection::vec(0usize..3000, 0..6),
        splits in proptest::collection::vec(1usize..600, 1..20),
        ours in any::<bool>(),
    ) {
        let imgs: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(k, &n)| (0..n).map(|i| (i * 13 + k * 7) as u8).collect())
            .collect();
        let s = if ours { our_stream(&imgs) } else { linux_stream(&imgs) };
        let whole = read(&s).unwrap();
        let split = read_with_splits(&s, &splits).unwrap();
        prop_assert_eq!(&whole, &split);
        prop_assert_eq!(&whole.images, &imgs);
        prop_assert_eq!(whole.verdict, Verdict::Complete { verified: ours });
    }

    #[test]
    fn random_bytes_never_panic_and_splits_agree(
        bytes in proptest::collection::vec(any::<u8>(), 0..400),
        splits in proptest::collection::vec(1usize..50, 1..10),
    ) {
        let whole = read(&bytes);
        let split = read_with_splits(&bytes, &splits);
        prop_assert_eq!(whole, split);
    }
}
