//! Device dirty-page tracking end to end: `Device::dirty_*` over the sim's
//! tracker model, compared with the simulated guest's ground truth.

mod common;

use common::{PAGE, TestHal, device};
use mlx5vf_core::device::{
    Config, DIRTY_SCRATCH_LEN, Device, DeviceError, DirtyTracker, ReportSummary,
};
use mlx5vf_core::errno::Errno;
use mlx5vf_core::tracker::{BitmapWindow, IovaRange, ReportError, TrackerError};
use mlx5vf_sim::tracker::{TrackerConfig, TrackerFault};

const MIB: u64 = 1 << 20;

struct Rig {
    dev: Device<TestHal>,
    tracker: DirtyTracker,
    ranges: Vec<IovaRange>,
}

fn rig_with(cfg: TrackerConfig) -> Rig {
    let mut dev = device("sim:state=1M,seed=3", Config::default());
    dev.hal_mut().fw.tracker_mut().set_config(cfg);
    Rig {
        dev,
        tracker: DirtyTracker::new(),
        ranges: Vec::new(),
    }
}

fn rig() -> Rig {
    rig_with(TrackerConfig::DEFAULT)
}

impl Rig {
    fn start(&mut self, ranges: &[(u64, u64)], page_size: u64) -> Result<u64, DeviceError> {
        self.ranges = ranges
            .iter()
            .map(|&(iova, length)| IovaRange { iova, length })
            .collect();
        let mut scratch = vec![0u8; DIRTY_SCRATCH_LEN];
        self.dev
            .dirty_start(&mut self.tracker, &self.ranges, page_size, &mut scratch)
    }

    /// Reports each caller range into a 4 KiB-page bitmap; returns the
    /// summary, the pages marked and the pages of the ground truth missed.
    fn read_all(&mut self) -> Result<(ReportSummary, u64, u64), DeviceError> {
        let mut total = ReportSummary::default();
        let (mut marked, mut missed) = (0, 0);
        let ranges = self.ranges.clone();
        for r in &ranges {
            let mut bits = vec![0u64; (r.length / PAGE).div_ceil(64) as usize];
            let mut win = BitmapWindow::new(r.iova, PAGE, &mut bits).unwrap();
            let s = self
                .dev
                .dirty_read_and_clear(&mut self.tracker, r.iova, r.length, &mut win)?;
            marked += win.count();
            total.pages += s.pages;
            total.messages += s.messages;
            total.queries += s.queries;
            let truth = self.dev.hal().fw.tracker();
            missed += truth.missed(&[(r.iova, r.length)], r.iova, PAGE, &bits);
        }
        self.dev.hal_mut().fw.tracker_mut().clear_written();
        Ok((total, marked, missed))
    }

    fn write(&mut self, iova: u64, len: u64) {
        self.dev.hal_mut().fw.tracker_mut().guest_write(iova, len);
    }

    fn stop_and_check_clean(&mut self) {
        self.dev.dirty_stop(&mut self.tracker).unwrap();
        let hal = self.dev.hal();
        assert!(hal.report.is_none(), "channel left open");
        assert_eq!(hal.fw.tracker().object_state(), None, "tracker object left");
        assert!(!hal.fw.tracker().channel_open());
        assert_eq!(hal.live_buffers, 0, "receive buffer leaked");
        assert!(hal.accounting().is_zero(), "{:?}", hal.accounting());
        assert_eq!(self.tracker.leaked_objects(), 0);
    }
}

fn errno(r: Result<impl std::fmt::Debug, DeviceError>) -> Errno {
    r.unwrap_err().errno()
}

#[test]
fn written_pages_are_reported_once_and_cleared() {
    let mut t = rig();
    assert_eq!(
        t.start(&[(0, 8 * MIB), (32 * MIB, 4 * MIB)], PAGE),
        Ok(PAGE)
    );
    t.write(0, 3 * PAGE);
    t.write(33 * MIB, PAGE);
    t.write(20 * MIB, 10 * PAGE); // outside every range
    let (s, marked, missed) = t.read_all().unwrap();
    assert_eq!((s.pages, marked, missed), (4, 4, 0));
    // Cleared as reported: a second report finds nothing.
    let (s, marked, _) = t.read_all().unwrap();
    assert_eq!((s.pages, marked), (0, 0));
    assert!(s.messages >= 1, "every report ends with a message");
    t.stop_and_check_clean();
}

#[test]
fn a_random_workload_is_never_missed() {
    let mut t = rig();
    let ranges = [(0, 16 * MIB), (40 * MIB, 24 * MIB), (100 * MIB, 8 * MIB)];
    t.start(&ranges, PAGE).unwrap();
    t.dev.hal_mut().fw.tracker_mut().seed(11);
    for round in 0..10 {
        t.dev.hal_mut().fw.tracker_mut().guest_dma(2000);
        let (s, marked, missed) = t.read_all().unwrap();
        assert_eq!(missed, 0, "round {round}");
        assert_eq!(marked, s.pages, "4 KiB tracking: one bit per page");
    }
    t.stop_and_check_clean();
}

#[test]
fn more_ranges_than_the_device_holds_are_combined_and_still_exact() {
    let mut t = rig(); // 4 ranges
    let ranges: Vec<(u64, u64)> = (0..10u64)
        .map(|i| (i * 8 * MIB + i * i * PAGE * 16, MIB))
        .collect();
    t.start(&ranges, PAGE).unwrap();
    assert_eq!(t.tracker.plan().unwrap().ranges().len(), 4);
    t.dev.hal_mut().fw.tracker_mut().seed(5);
    t.dev.hal_mut().fw.tracker_mut().guest_dma(20_000);
    // Pages in the merged gaps are tracked too; the caller's windows see
    // only theirs, and none is missed.
    let (_, _, missed) = t.read_all().unwrap();
    assert_eq!(missed, 0);
    t.stop_and_check_clean();
}

#[test]
fn page_size_is_clamped_and_large_pages_cover_their_4k_pages() {
    let mut t = rig();
    assert_eq!(t.start(&[(0, 8 * MIB)], 1024), Ok(PAGE), "raised to 4 KiB");
    t.stop_and_check_clean();
    assert_eq!(
        t.start(&[(0, 1 << 30)], 1 << 30),
        Ok(2 * MIB),
        "lowered to 2 MiB"
    );
    t.stop_and_check_clean();
    assert_eq!(t.start(&[(0, 64 * MIB)], 2 * MIB), Ok(2 * MIB));
    t.write(3 * MIB, PAGE);
    let (s, marked, missed) = t.read_all().unwrap();
    assert_eq!(
        (s.pages, marked, missed),
        (1, 512, 0),
        "one 2 MiB page = 512 bitmap bits"
    );
    t.stop_and_check_clean();
}

/// A range need only be aligned to the page size asked for: when the
/// device raises it, the tracked page holding a range's first (or last)
/// bytes starts before (or ends after) the range. Such a page is reported
/// (it was refused once as untracked, ending logging) and lands, clipped,
/// in the caller's window.
#[test]
fn a_raised_page_size_reports_pages_that_straddle_a_range_edge() {
    let mut t = rig_with(TrackerConfig {
        log_min_page: 13,
        ..TrackerConfig::DEFAULT
    });
    // [4 KiB, 20 KiB): neither edge on an 8 KiB boundary.
    assert_eq!(t.start(&[(PAGE, 4 * PAGE)], PAGE), Ok(2 * PAGE));
    t.write(PAGE, PAGE); // in the tracked page [0, 8 KiB)
    t.write(4 * PAGE, PAGE); // in the tracked page [16 KiB, 24 KiB)
    let (s, marked, missed) = t.read_all().unwrap();
    assert_eq!((s.pages, marked, missed), (2, 2, 0));
    t.stop_and_check_clean();

    // 2 MiB pages over ranges on 4 KiB boundaries, a random workload.
    let mut t = rig_with(TrackerConfig {
        log_min_page: 21,
        ..TrackerConfig::DEFAULT
    });
    let ranges = [(PAGE, 3 * MIB), (9 * MIB + 5 * PAGE, 2 * MIB + 3 * PAGE)];
    assert_eq!(t.start(&ranges, PAGE), Ok(2 * MIB));
    t.dev.hal_mut().fw.tracker_mut().seed(9);
    for round in 0..5 {
        t.dev.hal_mut().fw.tracker_mut().guest_dma(3000);
        let (_, marked, missed) = t.read_all().unwrap();
        assert_eq!(missed, 0, "round {round}");
        assert!(marked > 0, "round {round}");
    }
    t.stop_and_check_clean();
}

/// Linux's receive check dropped a message that exactly filled the last
/// slot (`offset + byte_cnt >= buffer size`). Fill every slot in turn with a
/// full message, the last one included, with and without an end marker.
#[test]
fn messages_that_exactly_fill_every_slot_lose_nothing() {
    for end_marker in [false, true] {
        let mut t = rig_with(TrackerConfig {
            end_marker,
            ..TrackerConfig::DEFAULT
        });
        t.start(&[(0, 4 * MIB)], PAGE).unwrap();
        // 4 KiB messages, 512 addresses each; 2 MiB / 4 KiB = 512 slots.
        let slots = 512;
        let rounds = if end_marker { slots / 2 + 1 } else { slots + 1 };
        for round in 0..rounds {
            t.write(0, 512 * PAGE);
            let (s, marked, missed) = t.read_all().unwrap();
            assert_eq!((s.pages, marked, missed), (512, 512, 0), "round {round}");
            let want = if end_marker { 2 } else { 1 };
            assert_eq!(s.messages, want, "round {round}");
        }
        t.stop_and_check_clean();
    }
}

#[test]
fn a_silent_firmware_times_out_then_logging_is_over() {
    let mut t = rig();
    t.start(&[(0, 8 * MIB)], PAGE).unwrap();
    t.write(0, 2000 * PAGE); // four messages' worth
    t.dev
        .hal_mut()
        .fw
        .tracker_mut()
        .set_fault(TrackerFault::Silent { after: 2 });
    let e = t.read_all().unwrap_err();
    assert_eq!(
        e,
        DeviceError::Tracker(TrackerError::Report(ReportError::Timeout))
    );
    assert_eq!(e.errno(), Errno::ETIMEDOUT);
    // Everything was freed at once; reads say EIO until stopped.
    assert!(t.dev.hal().report.is_none());
    assert_eq!(t.dev.hal().fw.tracker().object_state(), None);
    assert_eq!(errno(t.read_all()), Errno::EIO);
    t.stop_and_check_clean();
    // And logging starts again.
    t.dev
        .hal_mut()
        .fw
        .tracker_mut()
        .set_fault(TrackerFault::None);
    t.start(&[(0, 8 * MIB)], PAGE).unwrap();
    t.stop_and_check_clean();
}

#[test]
fn a_tracker_in_error_ends_logging_with_eio_and_frees_everything() {
    for fault in [
        TrackerFault::ErrorWithReport { after: 1 },
        TrackerFault::ErrorSilently { after: 1 },
        TrackerFault::ErrorWithReport { after: 0 },
    ] {
        let mut t = rig();
        t.start(&[(0, 8 * MIB)], PAGE).unwrap();
        t.write(0, 1000 * PAGE);
        t.dev.hal_mut().fw.tracker_mut().set_fault(fault);
        let e = t.read_all().unwrap_err();
        assert_eq!(
            e,
            DeviceError::Tracker(TrackerError::Report(ReportError::TrackerError)),
            "{fault:?}"
        );
        assert_eq!(e.errno(), Errno::EIO);
        assert_eq!(t.tracker.failure(), Some(ReportError::TrackerError));
        assert!(
            t.dev.hal().report.is_none(),
            "{fault:?}: channel still open"
        );
        assert_eq!(t.dev.hal().fw.tracker().object_state(), None);
        assert_eq!(errno(t.read_all()), Errno::EIO);
        t.stop_and_check_clean();
    }
}

#[test]
fn hostile_reports_and_broken_channels_end_logging() {
    let mut t = rig();
    t.start(&[(0, 8 * MIB)], PAGE).unwrap();
    t.write(0, PAGE);
    t.dev
        .hal_mut()
        .fw
        .tracker_mut()
        .set_fault(TrackerFault::BadAddress { after: 0 });
    let e = t.read_all().unwrap_err();
    assert!(
        matches!(
            e,
            DeviceError::Tracker(TrackerError::Report(ReportError::Untracked(_)))
        ),
        "{e}"
    );
    t.stop_and_check_clean();

    t.dev
        .hal_mut()
        .fw
        .tracker_mut()
        .set_fault(TrackerFault::None);
    t.start(&[(0, 8 * MIB)], PAGE).unwrap();
    t.write(0, PAGE);
    t.dev.hal_mut().report_channel_broken = true;
    assert_eq!(errno(t.read_all()), Errno::EIO);
    t.dev.hal_mut().report_channel_broken = false;
    t.stop_and_check_clean();
}

#[test]
fn a_spurious_object_change_costs_a_query_and_nothing_else() {
    let mut t = rig();
    t.start(&[(0, 8 * MIB)], PAGE).unwrap();
    t.write(0, 700 * PAGE);
    t.dev
        .hal_mut()
        .fw
        .tracker_mut()
        .set_fault(TrackerFault::SpuriousEvent);
    let (s, marked, missed) = t.read_all().unwrap();
    assert_eq!((marked, missed, s.queries), (700, 0, 1));
    t.stop_and_check_clean();
}

/// Firmware raising object-change events in a loop (the tracker still
/// REPORTING) would hold the report, and the device lock, for ever: the
/// report ends after MAX_REPORT_EVENTS with EIO, and everything is freed.
#[test]
fn an_object_change_storm_ends_the_report() {
    let mut t = rig();
    t.start(&[(0, 8 * MIB)], PAGE).unwrap();
    t.write(0, 10 * PAGE);
    t.dev
        .hal_mut()
        .fw
        .tracker_mut()
        .set_fault(TrackerFault::EventStorm);
    let r = t.read_all();
    assert!(
        matches!(
            r,
            Err(DeviceError::Tracker(TrackerError::Report(
                ReportError::EventStorm
            )))
        ),
        "{r:?}"
    );
    assert_eq!(t.tracker.failure(), Some(ReportError::EventStorm));
    assert_eq!(errno(t.read_all()), Errno::EIO, "until stopped");
    t.dev
        .hal_mut()
        .fw
        .tracker_mut()
        .set_fault(TrackerFault::None);
    t.stop_and_check_clean();
}

/// The PF disabling the VF ends logging while commands still reach the
/// firmware (the object destroyed, the channel closed, nothing left), as
/// Linux's driver does; reads then fail with ENOTCONN while detached and
/// EIO after, until stopped; logging starts again after the stop.
#[test]
fn disabling_the_vf_ends_logging_and_frees_everything() {
    let mut t = rig();
    t.start(&[(0, MIB)], PAGE).unwrap();
    t.write(0, 4 * PAGE);
    t.dev.dirty_detach(&mut t.tracker);
    t.dev.handle_detach();
    assert_eq!(t.dev.hal().fw.tracker().object_state(), None, "destroyed");
    assert!(t.dev.hal().report.is_none(), "channel closed");
    assert_eq!(t.tracker.failure(), Some(ReportError::VfDisabled));
    let mut bits = [0u64; 4];
    let mut win = BitmapWindow::new(0, PAGE, &mut bits).unwrap();
    let r = t.dev.dirty_read_and_clear(&mut t.tracker, 0, MIB, &mut win);
    assert_eq!(errno(r), Errno::ENOTCONN, "detached wins over failed");
    t.dev.handle_attach();
    let r = t.dev.dirty_read_and_clear(&mut t.tracker, 0, MIB, &mut win);
    assert_eq!(
        errno(r),
        Errno::EIO,
        "what the VF wrote meanwhile is unknown"
    );
    t.stop_and_check_clean();
    t.start(&[(0, MIB)], PAGE).unwrap();
    t.stop_and_check_clean();
    // Nothing running: nothing to end.
    t.dev.dirty_detach(&mut t.tracker);
    assert_eq!(t.tracker.failure(), None);
}

#[test]
fn misuse_is_refused_as_linux_does() {
    let mut t = rig();
    let mut bits = [0u64; 1];
    let mut win = BitmapWindow::new(0, PAGE, &mut bits).unwrap();
    let r = t
        .dev
        .dirty_read_and_clear(&mut t.tracker, 0, PAGE, &mut win);
    assert_eq!(errno(r), Errno::EINVAL, "read before start");
    t.start(&[(0, MIB)], PAGE).unwrap();
    assert_eq!(
        errno(t.start(&[(0, MIB)], PAGE)),
        Errno::EINVAL,
        "second start"
    );
    let r = t
        .dev
        .dirty_read_and_clear(&mut t.tracker, 64 * MIB, PAGE, &mut win);
    assert_eq!(errno(r), Errno::EINVAL, "window outside the ranges");
    assert!(t.tracker.is_active(), "a refused window ends nothing");
    t.dev.handle_detach();
    let r = t
        .dev
        .dirty_read_and_clear(&mut t.tracker, 0, PAGE, &mut win);
    assert_eq!(errno(r), Errno::ENOTCONN);
    t.dev.handle_attach();
    t.stop_and_check_clean();
    t.dev.dirty_stop(&mut t.tracker).unwrap(); // stopping twice is fine
    // Bad ranges and device limits.
    assert_eq!(errno(t.start(&[(100, PAGE)], PAGE)), Errno::EINVAL);
    assert_eq!(
        errno(t.start(&[(MIB, PAGE), (0, PAGE)], PAGE)),
        Errno::EINVAL
    );
    assert_eq!(
        errno(t.start(&[(0, 1 << 60)], PAGE)),
        Errno::EOPNOTSUPP,
        "address space above 2^52"
    );
    assert!(t.dev.hal().report.is_none(), "refused starts leave nothing");
    // A platform with no reporting channel.
    t.dev.hal_mut().report_channel_supported = false;
    assert_eq!(errno(t.start(&[(0, MIB)], PAGE)), Errno::EOPNOTSUPP);
    t.stop_and_check_clean();
}
