//! The tracker engine against independent oracles: Linux's combining
//! algorithm written over a plain `Vec`, and hand-counted bitmaps.

use std::vec;
use std::vec::Vec;

use proptest::prelude::*;

use super::*;
use crate::ifc::page_track::{
    AdvVirtualizationCaps, CQE_OPCODE_RESP_SEND_IMM, ReportCqe, TrackRange, TrackerState,
};

const K4: u64 = 4096;

fn caps(max_ranges: u8) -> AdvVirtualizationCaps {
    AdvVirtualizationCaps {
        pg_track_log_max_num: 0,
        pg_track_max_num_range: max_ranges,
        pg_track_log_min_addr_space: 12,
        pg_track_log_max_addr_space: 52,
        pg_track_log_min_msg_size: 12,
        pg_track_log_max_msg_size: 12,
        pg_track_log_min_page_size: 12,
        pg_track_log_max_page_size: 21,
    }
}

fn r(iova: u64, length: u64) -> IovaRange {
    IovaRange { iova, length }
}

/// Linux's `vfio_combine_iova_ranges` over a whole list, as an oracle:
/// inclusive `[start, last]` nodes, the first smallest gap merged each round.
fn linux_combine(ranges: &[IovaRange], target: usize) -> Vec<(u64, u64)> {
    let mut nodes: Vec<(u64, u64)> = ranges
        .iter()
        .map(|r| (r.iova, r.iova + r.length - 1))
        .collect();
    if nodes.len() <= target {
        return nodes;
    }
    if target == 1 {
        return vec![(nodes[0].0, nodes[nodes.len() - 1].1)];
    }
    while nodes.len() > target {
        let mut best = (u64::MAX, 0);
        for i in 1..nodes.len() {
            let gap = nodes[i].0 - nodes[i - 1].1;
            if gap < best.0 {
                best = (gap, i);
            }
        }
        let (_, i) = best;
        nodes[i - 1].1 = nodes[i].1;
        nodes.remove(i);
    }
    nodes
}

fn as_nodes(plan: &TrackerPlan) -> Vec<(u64, u64)> {
    plan.ranges()
        .iter()
        .map(|t| (t.start_address, t.start_address + t.length - 1))
        .collect()
}

#[test]
fn combining_merges_the_closest_pair_and_collapses_to_one() {
    // Gaps: 1 page, 8 pages, 2 pages.
    let ranges = [r(0, K4), r(2 * K4, K4), r(11 * K4, K4), r(14 * K4, K4)];
    let plan = TrackerPlan::new(&caps(3), &ranges, K4).unwrap();
    assert_eq!(
        as_nodes(&plan),
        vec![
            (0, 3 * K4 - 1),
            (11 * K4, 12 * K4 - 1),
            (14 * K4, 15 * K4 - 1)
        ]
    );
    let plan = TrackerPlan::new(&caps(2), &ranges, K4).unwrap();
    assert_eq!(
        as_nodes(&plan),
        vec![(0, 3 * K4 - 1), (11 * K4, 15 * K4 - 1)]
    );
    let plan = TrackerPlan::new(&caps(1), &ranges, K4).unwrap();
    assert_eq!(as_nodes(&plan), vec![(0, 15 * K4 - 1)]);
    // The merged gaps are tracked; the kept gap is not.
    assert!(plan.tracks(K4));
    let two = TrackerPlan::new(&caps(2), &ranges, K4).unwrap();
    assert!(two.tracks(K4) && !two.tracks(5 * K4) && two.tracks(12 * K4));
    // Two ranges, [0, 3) and [11, 15) pages: a span meets them when it
    // overlaps one, edges exclusive.
    assert!(two.meets(2 * K4, 2 * K4) && two.meets(10 * K4, 2 * K4));
    assert!(!two.meets(3 * K4, 8 * K4) && !two.meets(15 * K4, K4));
    assert!(two.meets(0, u64::MAX) && !two.meets(3 * K4, 0));
}

/// Input ranges per case: past the object's 255 (miri: a few dozen, it
/// interprets every step).
const MAX_RANGES: usize = if cfg!(miri) { 40 } else { 300 };

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 4 } else { 256 },
        failure_persistence: None,
        ..ProptestConfig::default()
    })]
    #[test]
    fn combining_matches_linux(gaps in proptest::collection::vec((1u64..64, 1u64..8), 1..MAX_RANGES), limit in 1u8..=255) {
        let mut at = 0u64;
        let mut ranges = Vec::new();
        for (gap, len) in gaps {
            at += gap * K4;
            ranges.push(r(at, len * K4));
            at += len * K4;
        }
        let plan = TrackerPlan::new(&caps(limit), &ranges, K4).unwrap();
        prop_assert_eq!(as_nodes(&plan), linux_combine(&ranges, usize::from(limit)));
    }
}

#[test]
fn page_size_is_clamped_both_ways_and_reported() {
    let ranges = [r(0, 4 << 20)];
    let plan = TrackerPlan::new(&caps(4), &ranges, 512).unwrap();
    assert_eq!(plan.page_size(), 4096, "raised to the device's minimum");
    assert_eq!(plan.log_page_size(), 12);
    let plan = TrackerPlan::new(&caps(4), &ranges, 1 << 30).unwrap_err();
    assert!(
        matches!(plan, PlanError::BadRange(_)),
        "ranges must be aligned to the requested size"
    );
    let plan = TrackerPlan::new(&caps(4), &[r(0, 1 << 30)], 1 << 30).unwrap();
    assert_eq!(plan.page_size(), 2 << 20, "lowered to the device's maximum");
    assert_eq!(plan.log_addr_space_size(), 30);
}

#[test]
fn bad_input_is_refused_with_einval_and_limits_with_eopnotsupp() {
    use crate::errno::Errno;
    let c = caps(4);
    let cases: &[(&[IovaRange], u64)] = &[
        (&[], K4),
        (&[r(0, K4)], 3000),
        (&[r(0, 0)], K4),
        (&[r(100, K4)], K4),
        (&[r(u64::MAX - K4 + 1, 2 * K4)], K4),
        (&[r(2 * K4, K4), r(0, K4)], K4),
        (&[r(0, 2 * K4), r(K4, K4)], K4),
    ];
    for (ranges, page) in cases {
        let e = TrackerPlan::new(&c, ranges, *page).unwrap_err();
        assert_eq!(e.errno(), Errno::EINVAL, "{ranges:?} {page}: {e}");
    }
    let mut tiny = caps(4);
    tiny.pg_track_log_max_addr_space = 20;
    let e = TrackerPlan::new(&tiny, &[r(0, 2 << 20)], K4).unwrap_err();
    assert_eq!(e.errno(), Errno::EOPNOTSUPP);
    let mut big = caps(4);
    big.pg_track_log_min_addr_space = 30;
    assert!(TrackerPlan::new(&big, &[r(0, 2 << 20)], K4).is_err());
    let mut none = caps(0);
    none.pg_track_max_num_range = 0;
    assert_eq!(
        TrackerPlan::new(&none, &[r(0, K4)], K4)
            .unwrap_err()
            .errno(),
        Errno::EOPNOTSUPP
    );
    // Address space: the sum of the combined lengths, rounded up.
    let plan = TrackerPlan::new(&caps(1), &[r(0, K4), r(1 << 30, K4)], K4).unwrap();
    assert_eq!(
        plan.log_addr_space_size(),
        31,
        "gap merged in: 1 GiB + 4 KiB rounds to 2 GiB"
    );
    let plan = TrackerPlan::new(&caps(2), &[r(0, K4), r(1 << 30, K4)], K4).unwrap();
    assert_eq!(plan.log_addr_space_size(), 13);
}

#[test]
fn message_size_is_bounded_by_this_driver() {
    let mut c = caps(4);
    c.pg_track_log_max_msg_size = 31;
    c.pg_track_log_min_msg_size = 12;
    let plan = TrackerPlan::new(&c, &[r(0, K4)], K4).unwrap();
    assert_eq!(plan.log_msg_size(), MAX_LOG_MSG_SIZE);
    c.pg_track_log_min_msg_size = 22;
    assert!(TrackerPlan::new(&c, &[r(0, K4)], K4).is_err());
}

fn cqe(state: TrackerState, len: u32, slot: u16) -> [u8; 64] {
    let mut raw = [0u8; 64];
    ReportCqe {
        opcode: CQE_OPCODE_RESP_SEND_IMM,
        owner: false,
        byte_cnt: len,
        wqe_counter: slot,
        state,
    }
    .emit(&mut raw)
    .unwrap();
    raw
}

fn entries(addrs: &[u64]) -> Vec<u8> {
    addrs.iter().flat_map(|a| a.to_be_bytes()).collect()
}

#[test]
fn a_report_lands_in_an_iova_bitmap() {
    let plan = TrackerPlan::new(
        &caps(4),
        &[r(0x10_0000, 64 * K4), r(0x100_0000, 64 * K4)],
        K4,
    )
    .unwrap();
    let mut bits = [0u64; 2];
    let mut win = BitmapWindow::new(0x10_0000, K4, &mut bits).unwrap();
    let mut rep = Report::begin(&plan, 0x10_0000, 64 * K4, 512).unwrap();
    let addrs = [
        0x10_0000,
        0x10_1000,
        0x10_2000,
        0x10_0000 + 63 * K4,
        0x10_0000 + 10 * K4,
    ];
    let msg = rep
        .handle_cqe(&cqe(TrackerState::Reporting, 40, 515))
        .unwrap();
    assert_eq!(msg.slot, 3, "wqe_counter masked by the ring");
    let bytes = entries(&addrs);
    rep.handle_entries(&plan, &bytes[..16], &mut win).unwrap();
    rep.handle_entries(&plan, &bytes[16..], &mut win).unwrap();
    assert_eq!(rep.finish_message(&mut win), Ok(ReportOutcome::More));
    rep.handle_cqe(&cqe(TrackerState::Tracking, 0, 4)).unwrap();
    assert_eq!(rep.finish_message(&mut win), Ok(ReportOutcome::Done));
    assert_eq!(rep.pages(), 5);
    assert_eq!(win.count(), 5);
    for p in [0, 1, 2, 10, 63] {
        assert!(win.is_set(p), "page {p}");
    }
    let _ = &win;
    assert_eq!(
        bits,
        [(1 << 0) | (1 << 1) | (1 << 2) | (1 << 10) | (1 << 63), 0]
    );
}

#[test]
fn tracked_pages_larger_than_the_bitmap_page_set_every_bit_they_cover() {
    let plan = TrackerPlan::new(&caps(4), &[r(0, 4 << 20)], 2 << 20).unwrap();
    assert_eq!(plan.page_size(), 2 << 20);
    // A window of 4 KiB pages starting 1 MiB into the first tracked page.
    let mut bits = [0u64; 8]; // 512 pages = 2 MiB
    let mut win = BitmapWindow::new(1 << 20, K4, &mut bits).unwrap();
    let mut rep = Report::begin(&plan, 1 << 20, 2 << 20, 4).unwrap();
    rep.handle_cqe(&cqe(TrackerState::Tracking, 8, 0)).unwrap();
    rep.handle_entries(&plan, &entries(&[0]), &mut win).unwrap();
    assert_eq!(rep.finish_message(&mut win), Ok(ReportOutcome::Done));
    // Tracked page [0, 2 MiB) meets the window's first 1 MiB = 256 pages.
    assert_eq!(win.count(), 256);
    assert!(win.is_set(0) && win.is_set(255) && !win.is_set(256));
}

#[test]
fn every_bad_cqe_or_address_fails_the_report_for_good() {
    let plan = TrackerPlan::new(&caps(2), &[r(0, 16 * K4), r(64 * K4, 16 * K4)], K4).unwrap();
    let begin = || Report::begin(&plan, 0, 16 * K4, 8).unwrap();
    let mut sink = CountingSink::default();
    let cases: &[(&[u8], Option<u64>, ReportError)] = &[
        (
            &cqe(TrackerState::Reporting, 12, 0),
            None,
            ReportError::BadLength(12),
        ),
        (
            &cqe(TrackerState::Reporting, 4104, 0),
            None,
            ReportError::BadLength(4104),
        ),
        (
            &cqe(TrackerState::Unknown(7), 0, 0),
            None,
            ReportError::BadState(7),
        ),
        (
            &cqe(TrackerState::Error, 0, 0),
            None,
            ReportError::TrackerError,
        ),
        (&[0u8; 63], None, ReportError::CqeTruncated),
        (
            &cqe(TrackerState::Tracking, 8, 0),
            Some(K4 + 8),
            ReportError::Misaligned(K4 + 8),
        ),
        (
            &cqe(TrackerState::Tracking, 8, 0),
            Some(32 * K4),
            ReportError::Untracked(32 * K4),
        ),
        (
            &cqe(TrackerState::Tracking, 8, 0),
            Some(64 * K4),
            ReportError::OutsideWindow(64 * K4),
        ),
    ];
    for (raw, addr, want) in cases {
        let mut rep = begin();
        let got = rep.handle_cqe(raw).and_then(|_| {
            if let Some(a) = addr {
                rep.handle_entries(&plan, &entries(&[*a]), &mut sink)?;
            }
            rep.finish_message(&mut sink).map(|_| ())
        });
        assert_eq!(got, Err(*want));
        assert_eq!(rep.error(), Some(*want));
        assert_eq!(
            rep.handle_cqe(&cqe(TrackerState::Tracking, 0, 0)),
            Err(*want),
            "sticky"
        );
    }
    let mut bad_op = cqe(TrackerState::Tracking, 0, 0);
    bad_op[63] = 0xd0;
    assert_eq!(
        begin().handle_cqe(&bad_op),
        Err(ReportError::BadOpcode(0xd))
    );
    // Out of sequence: entries before a CQE, a message ended early, more
    // bytes than announced.
    let mut rep = begin();
    assert_eq!(
        rep.handle_entries(&plan, &entries(&[0]), &mut sink),
        Err(ReportError::Sequence)
    );
    let mut rep = begin();
    rep.handle_cqe(&cqe(TrackerState::Reporting, 16, 0))
        .unwrap();
    rep.handle_entries(&plan, &entries(&[0]), &mut sink)
        .unwrap();
    assert_eq!(rep.finish_message(&mut sink), Err(ReportError::Sequence));
    let mut rep = begin();
    rep.handle_cqe(&cqe(TrackerState::Reporting, 8, 0)).unwrap();
    assert_eq!(
        rep.handle_entries(&plan, &entries(&[0, K4]), &mut sink),
        Err(ReportError::Sequence)
    );
    // Windows that are empty, wrap, or meet no range.
    for (iova, len) in [(0, 0), (u64::MAX, 2), (32 * K4, 16 * K4)] {
        assert_eq!(
            Report::begin(&plan, iova, len, 8),
            Err(ReportError::BadWindow)
        );
    }
}

#[test]
fn a_report_that_never_ends_is_cut_off() {
    let plan = TrackerPlan::new(&caps(1), &[r(0, 512 * K4)], K4).unwrap();
    let mut rep = Report::begin(&plan, 0, 512 * K4, 8).unwrap();
    let mut sink = CountingSink::default();
    // 512 pages fit one 4 KiB message: the budget is 2 + slack.
    let budget = 2 + SLACK_MESSAGES;
    for _ in 0..budget {
        rep.handle_cqe(&cqe(TrackerState::Reporting, 0, 0)).unwrap();
        assert_eq!(rep.finish_message(&mut sink), Ok(ReportOutcome::More));
    }
    assert_eq!(
        rep.handle_cqe(&cqe(TrackerState::Reporting, 0, 0)),
        Err(ReportError::Runaway)
    );
}

#[test]
fn bitmap_windows_clip_and_refuse_bad_shapes() {
    let mut bits = [0u64; 1];
    assert_eq!(
        BitmapWindow::new(0, 3000, &mut bits).unwrap_err(),
        WindowError::BadPageSize
    );
    assert_eq!(
        BitmapWindow::new(u64::MAX - K4, K4, &mut bits).unwrap_err(),
        WindowError::Wraps
    );
    let mut win = BitmapWindow::new(64 * K4, K4, &mut bits).unwrap();
    win.set_dirty(0, 65 * K4); // ends in page 0 of the window
    win.set_dirty(127 * K4, 10 * K4); // starts in page 63, runs past
    win.set_dirty(200 * K4, K4); // past the window
    win.set_dirty(0, K4); // before it
    assert_eq!(win.count(), 2);
    assert!(win.is_set(0) && win.is_set(63));
    let mut bits = [0u64; 3];
    let mut win = BitmapWindow::new(0, K4, &mut bits).unwrap();
    win.set_dirty(K4 * 5, K4 * 150);
    assert_eq!(win.count(), 150);
    assert_eq!(bits, [!0u64 << 5, !0, (1 << 27) - 1]);
}

#[test]
fn a_range_list_at_the_object_limit_encodes() {
    let ranges: Vec<IovaRange> = (0..300).map(|i| r(i * 2 * K4, K4)).collect();
    let plan = TrackerPlan::new(&caps(255), &ranges, K4).unwrap();
    assert_eq!(plan.ranges().len(), 255);
    let mut buf = vec![0u8; crate::ifc::page_track::CREATE_IN_MAX];
    assert_eq!(plan.create_command(1, 2).encode(&mut buf), Ok(buf.len()));
    let _: &[TrackRange] = plan.ranges();
}
