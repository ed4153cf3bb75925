//! A stream produced here, stripped of our optional records, is exactly what
//! the Linux driver would produce for the same firmware answers.
mod common;

use common::*;
use mlx5vf_core::device::Config;
use mlx5vf_core::stream::{Event, Reader, Tag};

fn run(integrity: bool, spec: &str, precopy: bool) -> (Vec<u8>, Vec<(u32, u32)>) {
    let cfg = Config {
        integrity_records: integrity,
        ..Config::default()
    };
    let mut m = Migration::new(spec, "sim:state=1M", cfg);
    m.keep_stream = true;
    m.precopy = precopy;
    m.reads = Reads::Random {
        seed: 11,
        max: 1 << 20,
    };
    let r = m.run(3);
    m.assert_digests_match();
    m.assert_no_leaks();
    (r.stream.unwrap(), m.src.hal().save_log.clone())
}

/// Records as (tag, flags word, payload range).
fn records(stream: &[u8]) -> Vec<(Tag, u32, std::ops::Range<usize>)> {
    let mut out = vec![];
    let mut r = Reader::new();
    let mut pos = 0;
    while pos < stream.len() {
        let step = r.feed(&stream[pos..]).unwrap();
        pos += step.consumed;
        for e in step.events {
            if let Event::RecordEnd { offset, header } = e {
                let start = offset as usize + 16;
                out.push((
                    header.tag,
                    header.flags.into_bits(),
                    start..start + header.record_size as usize,
                ));
            }
        }
    }
    out
}

fn strip(stream: &[u8]) -> Vec<u8> {
    let mut out = vec![];
    for (tag, _, range) in records(stream) {
        if matches!(tag, Tag::StreamInfo | Tag::StreamEnd) {
            continue;
        }
        out.extend_from_slice(&stream[range.start - 16..range.end]);
    }
    out
}

fn check(spec: &str, precopy: bool) {
    let (ours, log) = run(true, spec, precopy);
    let (linux, log2) = run(false, spec, precopy);
    assert_eq!(log, log2, "same firmware answers");
    // Our records are purely additive.
    assert_eq!(strip(&ours), linux);
    // And the Linux-format stream is what the Linux driver writes for these
    // answers: STOP_COPY_SIZE (OPTIONAL) first, then one mandatory FW_DATA
    // record per SAVE, sized by actual_image_size, in SAVE order.
    let recs = records(&linux);
    assert_eq!(recs[0].0, Tag::StopCopySize);
    assert_eq!(recs[0].1, 1);
    let fw: Vec<u64> = recs[1..]
        .iter()
        .map(|(tag, flags, r)| {
            assert_eq!((*tag, *flags), (Tag::FwData, 0));
            r.len() as u64
        })
        .collect();
    let saved: Vec<u64> = log.iter().map(|&(actual, _)| actual as u64).collect();
    assert_eq!(fw, saved);
}

#[test]
fn stop_copy_chunk_mode() {
    check("sim:state=40M,object=1M-9M,seed=8", false);
}

#[test]
fn precopy_chunk_mode() {
    check("sim:state=40M,object=1M-9M,seed=8,dirty=2M", true);
}

#[test]
fn legacy_mode() {
    check("sim:state=10M,chunks=off,seed=8", false);
    check("sim:state=10M,chunks=off,seed=8,dirty=1M", true);
}
