//! Device dirty-page tracking: `vfio_log_ops` (`log_start`, `log_stop`,
//! `log_read_and_clear`) over the PF's page tracker.
//!
//! The tracker's state lives in a [`DirtyTracker`] the caller owns (about
//! 4 KiB: up to 256 ranges, planned in place so it never goes on the
//! stack), not in the [`Device`], so platforms that do not track pay
//! nothing and the C ABI's device storage keeps its size. Calls take the
//! device and its tracker together, under the caller's lock.
//!
//! # Waiting
//! A report waits for firmware through
//! [`Hal::report_channel_next`](crate::hal::Hal::report_channel_next), at
//! most [`REPORT_WAIT_NS`] per wait; a wait that times out QUERYs the
//! tracker (firmware may move it to ERROR without a message), and a tracker
//! still REPORTING then fails the read with `ETIMEDOUT`. Linux waits
//! forever there.

use crate::hal::{Hal, HalError, ReportChannel, ReportChannelRequest, ReportEvent};
use crate::ifc::hca_cap::CapMode;
use crate::ifc::page_track::{
    CQE_LEN, CREATE_IN_MAX, CreatePageTrack, DestroyPageTrack, ModifyPageTrack,
    QueryAdvVirtualizationCap, QueryPageTrack, TrackerId, TrackerState, general_obj_out_cmd_hdr,
};
use crate::ifc::{Command, MAX_FIXED_IN};
use crate::tracker::{
    DirtySink, IovaRange, Report, ReportError, ReportOutcome, TrackerError, TrackerPlan,
};

use super::{Device, DeviceError};

/// Bytes of scratch [`Device::dirty_start`] needs: QUERY_HCA_CAP's output
/// (4112) or CREATE's input with 255 ranges (4144), whichever is larger.
pub const DIRTY_SCRATCH_LEN: usize = if CREATE_IN_MAX > crate::ifc::MAX_OUT {
    CREATE_IN_MAX
} else {
    crate::ifc::MAX_OUT
};

/// How long one wait for a report message or event may take: 2 s. Firmware
/// answers a report within milliseconds; a wait this long means it stopped.
pub const REPORT_WAIT_NS: u64 = 2_000_000_000;

/// The receive queue's minimum size, as Linux sizes it: 2 MiB, and at least
/// four messages (the device needs four WQEs).
const RQ_MIN_BYTES: u32 = 2 << 20;
/// Receive slots at the least.
const MIN_SLOTS: u32 = 4;
/// Bytes of a message read per [`Hal::report_channel_read`]: 32 entries
/// (small, for kernel stack frames).
const READ_PIECE: usize = 256;

/// What one `log_read_and_clear` found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ReportSummary {
    /// Tracked pages reported dirty.
    pub pages: u64,
    /// Messages received.
    pub messages: u32,
    /// QUERYs sent after object-change events or timeouts.
    pub queries: u32,
}

/// A running tracker (its plan is [`DirtyTracker::plan`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Active {
    tracker: TrackerId,
    channel: ReportChannel,
    slots: u32,
}

/// Where logging stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Logging {
    /// Not started (or stopped).
    Off,
    /// Tracking.
    On(Active),
    /// A report failed: the object and channel are already gone; reads fail
    /// with `EIO` until [`Device::dirty_stop`].
    Failed(ReportError),
}

/// One device's dirty-page tracker state. See the module documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirtyTracker {
    /// Planned in place: about 4 KiB that never goes on the stack.
    plan: TrackerPlan,
    logging: Logging,
    /// Tracker objects firmware failed to destroy.
    leaked_objects: u32,
}

impl Default for DirtyTracker {
    fn default() -> Self {
        Self::new()
    }
}

impl DirtyTracker {
    /// No logging.
    pub const fn new() -> Self {
        Self {
            plan: TrackerPlan::EMPTY,
            logging: Logging::Off,
            leaked_objects: 0,
        }
    }
    /// Whether logging is running.
    pub const fn is_active(&self) -> bool {
        matches!(self.logging, Logging::On(_))
    }
    /// The report failure that ended logging, if one did.
    pub const fn failure(&self) -> Option<ReportError> {
        match self.logging {
            Logging::Failed(e) => Some(e),
            _ => None,
        }
    }
    /// The running plan (ranges after combining, page and message sizes).
    pub fn plan(&self) -> Option<&TrackerPlan> {
        self.is_active().then_some(&self.plan)
    }
    /// Tracker objects firmware refused to destroy.
    pub const fn leaked_objects(&self) -> u32 {
        self.leaked_objects
    }
}

impl<H: Hal> Device<H> {
    /// `log_start`: tracks DMA writes of the VF to `ranges` (sorted,
    /// non-overlapping, aligned to `page_size`) and returns the page size
    /// the device tracks (`page_size` clamped to its limits). `scratch`
    /// holds [`DIRTY_SCRATCH_LEN`] bytes; nothing is kept in it.
    ///
    /// # Errors
    /// [`TrackerError::AlreadyStarted`], [`TrackerError::Unsupported`],
    /// [`TrackerError::Plan`], or the command or platform call that failed
    /// (nothing stays allocated).
    pub fn dirty_start<I>(
        &mut self,
        tracker: &mut DirtyTracker,
        ranges: I,
        page_size: u64,
        scratch: &mut [u8],
    ) -> Result<u64, DeviceError>
    where
        I: IntoIterator,
        I::Item: Into<IovaRange>,
    {
        if !matches!(tracker.logging, Logging::Off) {
            return Err(TrackerError::AlreadyStarted.into());
        }
        if self.detached {
            return Err(DeviceError::Detached);
        }
        let probe = self.probe.ok_or(DeviceError::NotProbed)?;
        if !probe.dirty_tracking {
            return Err(TrackerError::Unsupported.into());
        }
        let scratch = scratch
            .get_mut(..DIRTY_SCRATCH_LEN)
            .ok_or(DeviceError::TableFull)?;
        let caps = self.exec_into(
            &QueryAdvVirtualizationCap {
                mode: CapMode::Current,
            },
            scratch,
        )?;
        tracker
            .plan
            .rebuild(&caps, ranges, page_size)
            .map_err(TrackerError::from)?;
        let msg_size = tracker.plan.msg_size();
        let slots = RQ_MIN_BYTES
            .checked_div(msg_size)
            .unwrap_or(MIN_SLOTS)
            .max(MIN_SLOTS);
        let channel = self
            .hal
            .report_channel_open(ReportChannelRequest { msg_size, slots })
            .map_err(|e| DeviceError::Platform(e.kind()))?
            .ok_or(TrackerError::Unsupported)?;
        match self.create_tracker(&tracker.plan, probe.vhca_id, channel.fw_qpn, scratch) {
            Ok(id) => {
                tracker.logging = Logging::On(Active {
                    tracker: id,
                    channel,
                    slots,
                });
                Ok(tracker.plan.page_size())
            }
            Err(e) => {
                self.hal.report_channel_close();
                Err(e)
            }
        }
    }

    fn create_tracker(
        &mut self,
        plan: &TrackerPlan,
        vhca_id: u16,
        qpn: u32,
        scratch: &mut [u8],
    ) -> Result<TrackerId, DeviceError> {
        let n = plan.create_command(vhca_id, qpn).encode(scratch)?;
        let mut out = [0u8; general_obj_out_cmd_hdr::SIZE];
        self.hal
            .exec(scratch.get(..n).unwrap_or_default(), &mut out)
            .map_err(|e| DeviceError::Platform(e.kind()))?;
        Ok(CreatePageTrack::decode(&out)?)
    }

    /// Runs a command whose output may be up to a QUERY_HCA_CAP's, with the
    /// output in `scratch`.
    fn exec_into<C: Command>(
        &mut self,
        cmd: &C,
        scratch: &mut [u8],
    ) -> Result<C::Output, DeviceError> {
        let mut input = [0u8; MAX_FIXED_IN];
        let n = cmd.encode(&mut input)?;
        let out = scratch
            .get_mut(..C::OUT_SIZE)
            .ok_or(DeviceError::TableFull)?;
        out.fill(0);
        self.hal
            .exec(input.get(..n).unwrap_or_default(), out)
            .map_err(|e| DeviceError::Platform(e.kind()))?;
        Ok(cmd.decode(out)?)
    }

    /// A tracker command whose input exceeds [`MAX_FIXED_IN`] (MODIFY's 64
    /// bytes) with a small output.
    fn exec_tracker<C: Command>(&mut self, cmd: &C) -> Result<C::Output, DeviceError> {
        let mut input = [0u8; 64];
        let n = cmd.encode(&mut input)?;
        let mut out = [0u8; 64];
        let out = out.get_mut(..C::OUT_SIZE).ok_or(DeviceError::TableFull)?;
        self.hal
            .exec(input.get(..n).unwrap_or_default(), out)
            .map_err(|e| DeviceError::Platform(e.kind()))?;
        Ok(cmd.decode(out)?)
    }

    /// `log_stop`: destroys the tracker and closes its channel; also ends
    /// the failed state a report left. Stopping when nothing runs does
    /// nothing (as Linux).
    ///
    /// # Errors
    /// None today; DESTROY failures are counted in
    /// [`DirtyTracker::leaked_objects`], as the kernel only warns.
    pub fn dirty_stop(&mut self, tracker: &mut DirtyTracker) -> Result<(), DeviceError> {
        match core::mem::replace(&mut tracker.logging, Logging::Off) {
            Logging::On(active) => self.release_tracker(tracker, active),
            Logging::Off | Logging::Failed(_) => {}
        }
        Ok(())
    }

    /// The PF is disabling the VF: call before [`Device::handle_detach`],
    /// while commands still reach firmware. Running logging ends as Linux's
    /// driver ends it then: the tracker is destroyed and its channel
    /// closed, reads fail with `ENOTCONN` while the VF is detached and with
    /// `EIO` after (the VMM must take all memory as dirty) until
    /// [`Device::dirty_stop`].
    pub fn dirty_detach(&mut self, tracker: &mut DirtyTracker) {
        if let Logging::On(active) = tracker.logging {
            self.release_tracker(tracker, active);
            tracker.logging = Logging::Failed(ReportError::VfDisabled);
        }
    }

    /// Destroys the object (unless the VF is already detached and commands
    /// no longer reach it: [`Device::dirty_detach`] destroys it before)
    /// and closes the channel.
    fn release_tracker(&mut self, tracker: &mut DirtyTracker, active: Active) {
        if !self.detached
            && self
                .exec_tracker(&DestroyPageTrack {
                    tracker: active.tracker,
                })
                .is_err()
        {
            tracker.leaked_objects = tracker.leaked_objects.saturating_add(1);
        }
        self.hal.report_channel_close();
    }

    /// `log_read_and_clear`: reports the pages of `[iova, iova + length)`
    /// written since the last report into `sink`, clearing them on the
    /// device. A failure after firmware started reporting ends logging (the
    /// tracker and channel are freed; later reads fail with `EIO` until
    /// stopped): the caller must then treat all memory as dirty.
    ///
    /// # Errors
    /// [`TrackerError::NotStarted`], [`TrackerError::Failed`],
    /// [`TrackerError::Report`] (`EINVAL` for a window outside the ranges,
    /// `ETIMEDOUT` when firmware went quiet, `EIO` otherwise),
    /// [`DeviceError::Detached`], or the MODIFY that failed.
    pub fn dirty_read_and_clear<S: DirtySink>(
        &mut self,
        tracker: &mut DirtyTracker,
        iova: u64,
        length: u64,
        sink: &mut S,
    ) -> Result<ReportSummary, DeviceError> {
        // Linux's order: not started, then detached, then failed.
        let active = match tracker.logging {
            Logging::Off => return Err(TrackerError::NotStarted.into()),
            _ if self.detached => return Err(DeviceError::Detached),
            Logging::Failed(_) => return Err(TrackerError::Failed.into()),
            Logging::On(a) => a,
        };
        let mut report =
            Report::begin(&tracker.plan, iova, length, active.slots).map_err(TrackerError::from)?;
        // A refused MODIFY starts no report: nothing was cleared.
        self.exec_tracker(&ModifyPageTrack {
            tracker: active.tracker,
            iova,
            length,
        })?;
        let mut summary = ReportSummary::default();
        match self.drive_report(&tracker.plan, active, &mut report, sink, &mut summary) {
            Ok(()) => {
                summary.pages = report.pages();
                summary.messages = report.messages();
                Ok(summary)
            }
            Err(e) => {
                self.release_tracker(tracker, active);
                tracker.logging = Logging::Failed(e);
                Err(TrackerError::Report(e).into())
            }
        }
    }

    /// Polls the channel until the report ends. Every error is final.
    fn drive_report<S: DirtySink>(
        &mut self,
        plan: &TrackerPlan,
        active: Active,
        report: &mut Report,
        sink: &mut S,
        summary: &mut ReportSummary,
    ) -> Result<(), ReportError> {
        let mut cqe = [0u8; CQE_LEN];
        // Set once firmware says TRACKING outside a CQE: what is already in
        // the CQ is still read, then the report ends.
        let mut draining = false;
        loop {
            let wait = if draining { 0 } else { REPORT_WAIT_NS };
            let event = self
                .hal
                .report_channel_next(&mut cqe, wait)
                .map_err(|_| report.abort(ReportError::Channel))?;
            if event == ReportEvent::ObjectChanged {
                report.handle_event()?;
            }
            let outcome = match event {
                ReportEvent::Cqe => self.take_message(plan, report, &cqe, sink)?,
                ReportEvent::ObjectChanged | ReportEvent::TimedOut if !draining => {
                    summary.queries = summary.queries.saturating_add(1);
                    let state = self
                        .exec_tracker(&QueryPageTrack {
                            tracker: active.tracker,
                        })
                        .map_err(|_| report.abort(ReportError::Channel))?;
                    let outcome = report.handle_query(state)?;
                    if event == ReportEvent::TimedOut && state == TrackerState::Reporting {
                        return Err(report.abort(ReportError::Timeout));
                    }
                    if outcome == ReportOutcome::Done {
                        draining = true;
                    }
                    ReportOutcome::More
                }
                ReportEvent::ObjectChanged => ReportOutcome::More,
                ReportEvent::TimedOut => ReportOutcome::Done,
                ReportEvent::ChannelError => return Err(report.abort(ReportError::Channel)),
            };
            if outcome == ReportOutcome::Done {
                return Ok(());
            }
        }
    }

    /// Reads one message announced by `cqe` into the report and re-posts
    /// its slot.
    fn take_message<S: DirtySink>(
        &mut self,
        plan: &TrackerPlan,
        report: &mut Report,
        cqe: &[u8],
        sink: &mut S,
    ) -> Result<ReportOutcome, ReportError> {
        let msg = report.handle_cqe(cqe)?;
        let mut piece = [0u8; READ_PIECE];
        let mut offset = 0u32;
        while offset < msg.len {
            // CAST: READ_PIECE is 256.
            let n = msg.len.saturating_sub(offset).min(READ_PIECE as u32);
            // CAST: n <= READ_PIECE.
            let dst = piece.get_mut(..n as usize).unwrap_or_default();
            match self.hal.report_channel_read(msg.slot, offset, dst) {
                Ok(true) => {}
                _ => return Err(report.abort(ReportError::Channel)),
            }
            report.handle_entries(plan, dst, sink)?;
            offset = offset.saturating_add(n);
        }
        if self.hal.report_channel_repost(msg.slot).is_err() {
            return Err(report.abort(ReportError::Channel));
        }
        report.finish_message(sink)
    }
}
