//! The tracker model on its own: ground truth, dirty set, message production.

use std::vec::Vec;

use super::*;

struct Buf(Vec<u8>);

impl MessageSink for Buf {
    fn write(&mut self, offset: u64, bytes: &[u8]) -> bool {
        let at = offset as usize;
        if self.0.len() < at + bytes.len() {
            self.0.resize(at + bytes.len(), 0);
        }
        self.0[at..at + bytes.len()].copy_from_slice(bytes);
        true
    }
}

fn model(ranges: &[(u64, u64)], log_page: u8) -> TrackerModel {
    let mut m = TrackerModel::EMPTY;
    let qpn = m.open_channel(0x100, 64, 4).unwrap();
    let mut rs = heapless::Vec::new();
    for r in ranges {
        rs.push(*r).unwrap();
    }
    m.object = Some(TrackerObject {
        id: 1,
        vhca_id: 1,
        state: state::TRACKING,
        log_page,
        log_msg: 6,
        log_addr_space: 30,
        qpn,
        ranges: rs,
        dirty: PageBits::EMPTY,
        report: None,
        end_due: false,
    });
    m
}

fn start_report(m: &mut TrackerModel, iova: u64, end: u64) {
    let o = m.object.as_mut().unwrap();
    o.state = state::REPORTING;
    o.report = Some((iova, end));
}

fn cqe_fields(c: &[u8; 64]) -> (u8, u32, u16, u8) {
    let imm = u32::from_be_bytes(c[36..40].try_into().unwrap());
    let len = u32::from_be_bytes(c[44..48].try_into().unwrap());
    let ctr = u16::from_be_bytes(c[60..62].try_into().unwrap());
    ((imm >> 28) as u8, len, ctr, c[63] >> 4)
}

#[test]
fn writes_feed_ground_truth_everywhere_and_the_dirty_set_inside_ranges() {
    let mut m = model(&[(0, 16 * GUEST_PAGE)], 12);
    m.guest_write(2 * GUEST_PAGE, GUEST_PAGE + 1); // pages 2 and 3
    m.guest_write(100 * GUEST_PAGE, GUEST_PAGE);
    assert_eq!(m.written().len(), 3);
    assert_eq!(m.object.as_ref().unwrap().dirty.len(), 2);
    m.guest_write(u64::MAX - 10, 100); // beyond guest memory: nothing
    assert_eq!(m.written().len(), 3);
}

#[test]
fn reports_fill_messages_clear_as_they_go_and_end_tracking() {
    let mut m = model(&[(0, 64 * GUEST_PAGE)], 12);
    m.guest_write(0, 10 * GUEST_PAGE); // 10 pages, 8 per 64-byte message
    start_report(&mut m, 0, 64 * GUEST_PAGE);
    let mut buf = Buf(Vec::new());
    let mut cqe = [0u8; 64];
    assert_eq!(m.poll(&mut cqe, &mut buf), ChannelEvent::Cqe);
    assert_eq!(cqe_fields(&cqe), (state::REPORTING, 64, 0, 3));
    assert_eq!(
        u64::from_be_bytes(buf.0[8..16].try_into().unwrap()),
        GUEST_PAGE
    );
    assert_eq!(m.poll(&mut cqe, &mut buf), ChannelEvent::Cqe);
    assert_eq!(cqe_fields(&cqe), (state::TRACKING, 16, 1, 3));
    assert_eq!(m.object_state(), Some(state::TRACKING));
    assert!(m.object.as_ref().unwrap().dirty.is_empty());
    assert_eq!(m.poll(&mut cqe, &mut buf), ChannelEvent::Nothing);
}

#[test]
fn no_posted_slot_means_firmware_waits() {
    let mut m = model(&[(0, 64 * GUEST_PAGE)], 12);
    m.guest_write(0, 64 * GUEST_PAGE);
    start_report(&mut m, 0, 64 * GUEST_PAGE);
    let (mut buf, mut cqe) = (Buf(Vec::new()), [0u8; 64]);
    for _ in 0..4 {
        assert_eq!(m.poll(&mut cqe, &mut buf), ChannelEvent::Cqe);
    }
    assert_eq!(
        m.poll(&mut cqe, &mut buf),
        ChannelEvent::Nothing,
        "4 slots used"
    );
    m.repost();
    assert_eq!(m.poll(&mut cqe, &mut buf), ChannelEvent::Cqe);
    // The fifth message went to slot 0 again, with the owner bit flipped.
    assert_eq!(cqe[63] & 1, 1);
}

#[test]
fn large_tracked_pages_are_reported_once() {
    let mut m = model(&[(0, 1 << 22)], 21);
    m.guest_write(0, GUEST_PAGE);
    m.guest_write(5 * GUEST_PAGE, GUEST_PAGE);
    m.guest_write(1 << 21, GUEST_PAGE);
    start_report(&mut m, 0, 1 << 22);
    let (mut buf, mut cqe) = (Buf(Vec::new()), [0u8; 64]);
    assert_eq!(m.poll(&mut cqe, &mut buf), ChannelEvent::Cqe);
    assert_eq!(cqe_fields(&cqe).1, 16);
    assert_eq!(u64::from_be_bytes(buf.0[0..8].try_into().unwrap()), 0);
    assert_eq!(
        u64::from_be_bytes(buf.0[8..16].try_into().unwrap()),
        1 << 21
    );
}

#[test]
fn faults_do_what_they_say() {
    let mut m = model(&[(0, 64 * GUEST_PAGE)], 12);
    m.guest_write(0, 64 * GUEST_PAGE);
    m.set_fault(TrackerFault::ErrorSilently { after: 0 });
    start_report(&mut m, 0, 64 * GUEST_PAGE);
    let (mut buf, mut cqe) = (Buf(Vec::new()), [0u8; 64]);
    assert_eq!(m.poll(&mut cqe, &mut buf), ChannelEvent::ObjectChanged);
    assert_eq!(m.object_state(), Some(state::ERROR));
    m.guest_write(0, GUEST_PAGE);
    assert_eq!(
        m.object.as_ref().unwrap().dirty.len(),
        64,
        "ERROR tracks nothing more"
    );
}

#[test]
fn missed_counts_unreported_written_pages_inside_the_ranges() {
    let mut m = model(&[(0, 64 * GUEST_PAGE)], 12);
    m.guest_write(0, 3 * GUEST_PAGE);
    m.guest_write(200 * GUEST_PAGE, GUEST_PAGE);
    let bitmap = [0b101u64];
    assert_eq!(m.missed(&[(0, 64 * GUEST_PAGE)], 0, GUEST_PAGE, &bitmap), 1);
    assert_eq!(
        m.missed(&[(0, 64 * GUEST_PAGE)], 0, GUEST_PAGE, &[0b111]),
        0
    );
}

#[test]
fn object_ranges_show_the_object_as_created_and_nothing_without_one() {
    let mut m = model(
        &[(0, 16 * GUEST_PAGE), (64 * GUEST_PAGE, 8 * GUEST_PAGE)],
        13,
    );
    let (ranges, page) = m.object_ranges().unwrap();
    assert_eq!(
        ranges,
        &[(0, 16 * GUEST_PAGE), (64 * GUEST_PAGE, 8 * GUEST_PAGE)]
    );
    assert_eq!(page, 8192);
    m.object = None;
    assert!(m.object_ranges().is_none());
}
