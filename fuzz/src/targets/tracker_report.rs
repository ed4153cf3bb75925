//! `tracker_report`: the dirty-page tracker's planning and report ingestion
//! under hostile firmware, and its life cycle on a device.
//!
//! # Input
//! A first byte choosing the half, then:
//! - **engine** (even): a [`PlanHead`] (device caps, ranges, page size, a
//!   report window) and [`ReportOp`]s feeding the pure [`Report`] raw CQEs
//!   and entries;
//! - **device** (odd): [`DeviceOp`]s on a [`Device`] over the sim's tracker
//!   model (start, guest writes, reads, faults, stop, detach).
//!
//! # Checks
//! - A plan holds at most the device's range limit (and 255), sorted and
//!   disjoint, covering every input range; its page size is a power of two
//!   within the device's limits; its address space within the caps.
//! - Every extent handed to the sink is non-empty and inside the window;
//!   every address the report accepted (aligned, tracked, meeting the
//!   window) is covered by the extents once its message ends; the first
//!   error is returned by every later call.
//! - On a device: while no fault was injected since logging started, a read
//!   of every range misses no page the guest wrote (the sim's ground
//!   truth); a read that fails after MODIFY leaves no tracker object or
//!   channel; after stop nothing is left (object, channel, buffers, mkeys,
//!   PDs, IOMMU mappings).

use arbitrary::Arbitrary;
use mlx5vf_core::device::{Config, DIRTY_SCRATCH_LEN, Device, DirtyTracker};
use mlx5vf_core::ifc::page_track::{AdvVirtualizationCaps, ReportCqe, TrackerState};
use mlx5vf_core::tracker::{BitmapWindow, DirtySink, IovaRange, Report, TrackerPlan};
use mlx5vf_sim::testkit::{PAGE, TestHal};
use mlx5vf_sim::tracker::{TrackerConfig, TrackerFault};

/// Most operations one input runs.
pub const MAX_OPS: usize = 64;

/// The device caps, ranges, page size and window of an engine run.
#[derive(Arbitrary, Debug, Clone)]
pub struct PlanHead {
    /// The eight `adv_virtualization_cap` values.
    pub caps: [u8; 8],
    /// Ranges as (gap, length) in 4 KiB pages, at most 300.
    pub ranges: Vec<(u16, u16)>,
    /// log2 of the requested page size.
    pub log_page: u8,
    /// Report window start and length, in 4 KiB pages.
    pub window: (u32, u32),
    /// log2 of the receive slots.
    pub log_slots: u8,
}

/// One step of an engine run.
#[derive(Arbitrary, Debug, Clone)]
pub enum ReportOp {
    /// A CQE.
    Cqe {
        /// op_own's opcode nibble.
        opcode: u8,
        /// Message length.
        byte_cnt: u32,
        /// Receive WQE counter.
        wqe_counter: u16,
        /// Raw state nibble.
        state: u8,
    },
    /// Entries: 4 KiB page numbers, optionally off by some bytes.
    Entries(Vec<(u32, u8)>),
    /// Raw entry bytes.
    Raw(Vec<u8>),
    /// End the message.
    Finish,
    /// A QUERY's state.
    Query(u8),
}

/// One step of a device run.
#[derive(Arbitrary, Debug, Clone)]
pub enum DeviceOp {
    /// Start logging over (gap, length) ranges in 64 KiB units with a page
    /// size of 2^(12 + n % 10).
    Start(Vec<(u8, u8)>, u8),
    /// The guest writes PRNG-chosen pages.
    Dma(u16),
    /// Read every range.
    ReadAll,
    /// Stop.
    Stop,
    /// Arm a firmware fault.
    Fault(u8, u8),
    /// Detach or attach the VF.
    Detach(bool),
    /// Break the channel (a CQ/WQ error event) or mend it.
    Break(bool),
}

/// Runs one input.
pub fn run(data: &[u8]) {
    match data.split_first() {
        Some((k, rest)) if k % 2 == 0 => engine(rest),
        Some((_, rest)) => device(rest),
        None => {}
    }
}

fn caps_of(raw: [u8; 8]) -> AdvVirtualizationCaps {
    let five = |b: u8| b & 0x1f;
    AdvVirtualizationCaps {
        pg_track_log_max_num: five(raw[0]),
        pg_track_max_num_range: raw[1],
        pg_track_log_min_addr_space: raw[2],
        pg_track_log_max_addr_space: raw[3],
        pg_track_log_min_msg_size: five(raw[4]),
        pg_track_log_max_msg_size: five(raw[5]),
        pg_track_log_min_page_size: five(raw[6]),
        pg_track_log_max_page_size: five(raw[7]),
    }
}

/// Records extents and checks each against the window.
struct Recorder {
    iova: u64,
    end: u64,
    extents: Vec<(u64, u64)>,
}

impl DirtySink for Recorder {
    fn set_dirty(&mut self, iova: u64, length: u64) {
        assert!(length > 0, "empty extent");
        let end = iova.checked_add(length).expect("extent wraps");
        assert!(
            iova >= self.iova && end <= self.end,
            "extent {iova:#x}+{length:#x} outside the window"
        );
        self.extents.push((iova, end));
    }
}

impl Recorder {
    fn covers(&self, from: u64, to: u64) -> bool {
        let mut at = from;
        let mut sorted = self.extents.clone();
        sorted.sort_unstable();
        for (s, e) in sorted {
            if s <= at && e > at {
                at = e;
            }
        }
        at >= to
    }
}

fn engine(data: &[u8]) {
    let Some((head, ops)) = super::decode_ops::<PlanHead, ReportOp>(data, MAX_OPS) else {
        return;
    };
    let caps = caps_of(head.caps);
    let mut at = 0u64;
    let ranges: Vec<IovaRange> = head
        .ranges
        .iter()
        .take(300)
        .map(|&(gap, len)| {
            at += u64::from(gap) * PAGE;
            let r = IovaRange {
                iova: at,
                length: u64::from(len) * PAGE,
            };
            at += r.length;
            r
        })
        .collect();
    let page = 1u64
        .checked_shl(u32::from(head.log_page % 40))
        .unwrap_or(PAGE);
    let Ok(plan) = TrackerPlan::new(&caps, &ranges, page) else {
        return;
    };
    check_plan(&plan, &caps, &ranges);
    let iova = u64::from(head.window.0) * PAGE;
    let len = u64::from(head.window.1) * PAGE;
    let slots = 1u32 << (head.log_slots % 12);
    let Ok(mut report) = Report::begin(&plan, iova, len, slots) else {
        return;
    };
    let mut sink = Recorder {
        iova,
        end: iova + len,
        extents: vec![],
    };
    let tracked = plan.page_size();
    let mut accepted: Vec<u64> = vec![];
    let mut first_error = None;
    for op in ops {
        let r = match op {
            ReportOp::Cqe {
                opcode,
                byte_cnt,
                wqe_counter,
                state,
            } => {
                let mut raw = [0u8; 64];
                let cqe = ReportCqe {
                    opcode: opcode & 0xf,
                    owner: false,
                    byte_cnt,
                    wqe_counter,
                    state: TrackerState::from(state & 0xf),
                };
                cqe.emit(&mut raw).expect("64 bytes hold a CQE");
                report
                    .handle_cqe(&raw)
                    .map(|m| assert!(m.slot < slots, "slot outside the ring"))
            }
            ReportOp::Entries(list) => {
                // An empty list still asks (and gets the sticky error).
                let mut r = report.handle_entries(&plan, &[], &mut sink);
                for (p, off) in list.into_iter().take(64) {
                    if r.is_err() {
                        break;
                    }
                    let addr = u64::from(p) * PAGE + u64::from(off);
                    r = report.handle_entries(&plan, &addr.to_be_bytes(), &mut sink);
                    match r {
                        Ok(()) => {
                            assert_eq!(addr % tracked, 0, "a misaligned address was accepted");
                            assert!(
                                plan.meets(addr, tracked),
                                "a page outside every range was accepted"
                            );
                            assert!(
                                addr < iova + len && addr + tracked > iova,
                                "a page outside the window was accepted"
                            );
                            accepted.push(addr);
                        }
                        Err(_) => break,
                    }
                }
                r
            }
            ReportOp::Raw(bytes) => report.handle_entries(&plan, &bytes, &mut sink),
            ReportOp::Finish => report.finish_message(&mut sink).map(|_| {
                for &a in &accepted {
                    let (from, to) = (a.max(iova), (a + tracked).min(iova + len));
                    assert!(
                        sink.covers(from, to),
                        "accepted page {a:#x} not handed to the sink"
                    );
                }
                accepted.clear();
            }),
            ReportOp::Query(s) => report.handle_query(TrackerState::from(s)).map(|_| ()),
        };
        match (first_error, r) {
            (Some(e), r) => assert_eq!(r, Err(e), "an error must stick"),
            (None, Err(e)) => first_error = Some(e),
            (None, Ok(())) => {}
        }
    }
}

fn check_plan(plan: &TrackerPlan, caps: &AdvVirtualizationCaps, ranges: &[IovaRange]) {
    let limit = usize::from(caps.pg_track_max_num_range).min(255);
    let got = plan.ranges();
    assert!(
        !got.is_empty() && got.len() <= limit,
        "{} ranges for a limit of {limit}",
        got.len()
    );
    for w in got.windows(2) {
        assert!(
            w[0].start_address + w[0].length <= w[1].start_address,
            "plan ranges overlap or are unsorted"
        );
    }
    for r in ranges {
        assert!(
            got.iter()
                .any(|t| t.start_address <= r.iova
                    && r.iova + r.length <= t.start_address + t.length),
            "input range {r:?} not covered"
        );
    }
    let log = plan.log_page_size();
    assert!(log >= caps.pg_track_log_min_page_size && log <= caps.pg_track_log_max_page_size);
    let space = plan.log_addr_space_size();
    assert!(space >= caps.pg_track_log_min_addr_space && space <= caps.pg_track_log_max_addr_space);
    assert!(plan.msg_size().is_power_of_two() && plan.msg_size() >= 8);
}

fn device(data: &[u8]) {
    let Some(((), ops)) = super::decode_ops::<(), DeviceOp>(data, MAX_OPS) else {
        return;
    };
    let mut dev = mlx5vf_sim::testkit::device("sim:state=1M,seed=5", Config::default());
    dev.hal_mut().fw.tracker_mut().set_config(TrackerConfig {
        guest_pages: 8192,
        ..TrackerConfig::DEFAULT
    });
    let mut tracker = DirtyTracker::new();
    let mut ranges: Vec<IovaRange> = vec![];
    let mut faulted = false;
    for op in ops {
        match op {
            DeviceOp::Start(list, log) => {
                let mut at = 0u64;
                let want: Vec<IovaRange> = list
                    .iter()
                    .take(16)
                    .map(|&(gap, len)| {
                        at += u64::from(gap) << 16;
                        let r = IovaRange {
                            iova: at,
                            length: (u64::from(len) + 1) << 16,
                        };
                        at += r.length;
                        r
                    })
                    .collect();
                let mut scratch = vec![0u8; DIRTY_SCRATCH_LEN];
                let page = 1u64 << (12 + log % 10);
                let was_active = tracker.is_active();
                if dev
                    .dirty_start(&mut tracker, &want, page, &mut scratch)
                    .is_ok()
                {
                    assert!(!was_active, "a second start succeeded");
                    ranges = want;
                    faulted = false;
                    dev.hal_mut().fw.tracker_mut().clear_written();
                }
            }
            DeviceOp::Dma(n) => dev
                .hal_mut()
                .fw
                .tracker_mut()
                .guest_dma(u64::from(n % 4096)),
            DeviceOp::ReadAll => {
                for r in ranges.clone() {
                    let mut bits = vec![0u64; (r.length / PAGE).div_ceil(64) as usize];
                    let mut win = BitmapWindow::new(r.iova, PAGE, &mut bits).expect("window");
                    let res = dev.dirty_read_and_clear(&mut tracker, r.iova, r.length, &mut win);
                    match res {
                        Ok(_) => {
                            if !faulted {
                                let missed = dev.hal().fw.tracker().missed(
                                    &[(r.iova, r.length)],
                                    r.iova,
                                    PAGE,
                                    &bits,
                                );
                                assert_eq!(missed, 0, "pages missed without any fault");
                            }
                        }
                        Err(_) => {
                            if tracker.failure().is_some() {
                                assert!(
                                    dev.hal().report.is_none(),
                                    "channel left after a failed report"
                                );
                                assert_eq!(
                                    dev.hal().fw.tracker().object_state(),
                                    None,
                                    "object left after a failed report"
                                );
                            }
                            break;
                        }
                    }
                }
                dev.hal_mut().fw.tracker_mut().clear_written();
            }
            DeviceOp::Stop => {
                dev.dirty_stop(&mut tracker).expect("stop never fails");
                assert_stopped(&dev);
            }
            DeviceOp::Fault(kind, after) => {
                let after = u64::from(after % 8);
                let fault = match kind % 7 {
                    0 => TrackerFault::None,
                    1 => TrackerFault::ErrorWithReport { after },
                    2 => TrackerFault::ErrorSilently { after },
                    3 => TrackerFault::Silent { after },
                    4 => TrackerFault::BadAddress { after },
                    5 => TrackerFault::EventStorm,
                    _ => TrackerFault::SpuriousEvent,
                };
                // A spurious event changes nothing a report returns.
                faulted |= !matches!(fault, TrackerFault::None | TrackerFault::SpuriousEvent);
                dev.hal_mut().fw.tracker_mut().set_fault(fault);
            }
            DeviceOp::Detach(true) => {
                // As a platform does: logging ends while commands still
                // reach the VF, then the VF is detached.
                dev.dirty_detach(&mut tracker);
                dev.handle_detach();
            }
            DeviceOp::Detach(false) => dev.handle_attach(),
            DeviceOp::Break(b) => {
                faulted |= b;
                dev.hal_mut().report_channel_broken = b;
            }
        }
    }
    dev.handle_attach();
    dev.dirty_stop(&mut tracker).expect("stop never fails");
    assert_stopped(&dev);
}

fn assert_stopped(dev: &Device<TestHal>) {
    let hal = dev.hal();
    assert!(hal.report.is_none(), "channel left after stop");
    assert!(!hal.fw.tracker().channel_open());
    // Detaching ends logging first (dirty_detach), so no object outlives a
    // stop.
    assert_eq!(
        hal.fw.tracker().object_state(),
        None,
        "object left after stop"
    );
    let acc = hal.accounting();
    assert_eq!(
        (acc.mkeys, acc.pds, acc.iommu_mappings),
        (0, 0, 0),
        "leak after stop: {acc:?}"
    );
    assert_eq!(hal.live_buffers, 0, "buffers leaked");
}
