//! One report (`log_read_and_clear`): firmware's CQEs and message entries
//! in, dirty extents out, every byte of it checked.

use core::fmt;

use crate::errno::Errno;
use crate::ifc::page_track::{CQE_OPCODE_RESP_SEND_IMM, REPORT_ENTRY_LEN, ReportCqe, TrackerState};

use super::plan::TrackerPlan;
use super::sink::DirtySink;

/// Messages a report may take beyond twice what its pages fill: room for
/// the zero-length end marker and short messages firmware sends while the
/// guest keeps writing.
pub const SLACK_MESSAGES: u32 = 16;

/// Object-change events a report may see: a report changes the tracker's
/// state once (to TRACKING, or to ERROR), so a few spurious events are
/// tolerated; more is firmware raising events in a loop, which would keep
/// a report (and the device lock) busy for ever.
pub const MAX_REPORT_EVENTS: u32 = 16;

/// log2 of [`REPORT_ENTRY_LEN`] (8 bytes).
const ENTRY_SHIFT: u32 = REPORT_ENTRY_LEN.trailing_zeros();
/// Low bits that must be clear in a length of whole entries.
// CAST: REPORT_ENTRY_LEN is 8.
const ENTRY_MASK: u32 = REPORT_ENTRY_LEN as u32 - 1;

/// Why a report failed. Every variant but [`ReportError::BadWindow`] means
/// pages may have been lost (firmware clears what it reports): the tracker
/// is finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ReportError {
    /// The requested window is empty, wraps, or meets no tracked range.
    BadWindow,
    /// A CQE shorter than 64 bytes.
    CqeTruncated,
    /// A CQE whose opcode is not RESP_SEND_IMM (3).
    BadOpcode(u8),
    /// A message length that is not whole entries or exceeds the message size.
    BadLength(u32),
    /// A CQE carrying a tracker state that does not exist.
    BadState(u8),
    /// A reported address not aligned to the tracked page size.
    Misaligned(u64),
    /// A reported address outside every tracked range.
    Untracked(u64),
    /// A reported page outside the requested window.
    OutsideWindow(u64),
    /// Firmware sent more messages than the window's pages could fill.
    Runaway,
    /// Firmware raised more object-change events than
    /// [`MAX_REPORT_EVENTS`].
    EventStorm,
    /// Firmware moved the tracker to ERROR.
    TrackerError,
    /// Entries arrived without a CQE, or a message ended before its bytes
    /// were read: a driver bug, reported rather than trusted.
    Sequence,
    /// Neither a message nor an event arrived in the allowed time.
    Timeout,
    /// The platform's reporting channel failed (queue error, copy failure).
    Channel,
    /// The PF disabled the VF while logging ran: logging ended then (as
    /// Linux's driver ends it), and what the VF wrote after is unknown.
    VfDisabled,
}

impl ReportError {
    /// The errno `log_read_and_clear` returns.
    pub const fn errno(self) -> Errno {
        match self {
            Self::BadWindow => Errno::EINVAL,
            Self::Timeout => Errno::ETIMEDOUT,
            _ => Errno::EIO,
        }
    }
}

impl fmt::Display for ReportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::BadWindow => {
                f.write_str("report window is empty, wraps or meets no tracked range")
            }
            Self::CqeTruncated => f.write_str("report CQE shorter than 64 bytes"),
            Self::BadOpcode(op) => write!(f, "report CQE opcode {op:#x}, not RESP_SEND_IMM"),
            Self::BadLength(n) => write!(f, "report message of {n} bytes"),
            Self::BadState(s) => write!(f, "report CQE carries tracker state {s}"),
            Self::Misaligned(a) => write!(f, "reported address {a:#x} is not page aligned"),
            Self::Untracked(a) => write!(f, "reported address {a:#x} is not tracked"),
            Self::OutsideWindow(a) => write!(f, "reported page {a:#x} is outside the window"),
            Self::Runaway => f.write_str("firmware sent more report messages than pages exist"),
            Self::EventStorm => write!(
                f,
                "firmware raised more than {MAX_REPORT_EVENTS} object-change events in one report"
            ),
            Self::TrackerError => f.write_str("the tracker is in ERROR"),
            Self::Sequence => f.write_str("report entries out of sequence"),
            Self::Timeout => f.write_str("no report message or event in time"),
            Self::Channel => f.write_str("the reporting channel failed"),
            Self::VfDisabled => f.write_str("the PF disabled the VF while logging ran"),
        }
    }
}

impl core::error::Error for ReportError {}

/// A message announced by a CQE: which receive slot holds it, its length,
/// and the tracker state after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Message {
    /// The receive slot (`wqe_counter` masked by the ring size).
    pub slot: u32,
    /// Bytes of entries.
    pub len: u32,
    /// The tracker's state after this message.
    pub state: TrackerState,
}

/// Whether a report goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[must_use]
pub enum ReportOutcome {
    /// More messages follow.
    More,
    /// The tracker is back to TRACKING: the report is complete.
    Done,
}

/// One report in progress. Feed it in this order, per message:
/// [`Report::handle_cqe`], [`Report::handle_entries`] (as many times as the
/// message takes, in order), [`Report::finish_message`]. After the first
/// error every call returns that error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Report {
    iova: u64,
    /// Last byte of the window.
    last: u64,
    log_page: u32,
    msg_size: u32,
    slots: u32,
    budget: u32,
    messages: u32,
    events: u32,
    pages: u64,
    /// The message being read and the bytes read of it.
    current: Option<(Message, u32)>,
    /// Consecutive pages not yet handed to the sink: `[start, end)`.
    run: Option<(u64, u64)>,
    failed: Option<ReportError>,
}

impl Report {
    /// Starts a report of `[iova, iova + length)` under `plan`, whose
    /// channel has `slots` receive slots (a power of two).
    ///
    /// # Errors
    /// [`ReportError::BadWindow`].
    pub fn begin(
        plan: &TrackerPlan,
        iova: u64,
        length: u64,
        slots: u32,
    ) -> Result<Self, ReportError> {
        let last = length
            .checked_sub(1)
            .and_then(|l| iova.checked_add(l))
            .ok_or(ReportError::BadWindow)?;
        if !plan.meets(iova, length) || !slots.is_power_of_two() {
            return Err(ReportError::BadWindow);
        }
        let log_page = u32::from(plan.log_page_size());
        let msg_size = plan.msg_size();
        let per_msg = u64::from(msg_size >> ENTRY_SHIFT).max(1);
        let pages = (last >> log_page)
            .saturating_sub(iova >> log_page)
            .saturating_add(1);
        let budget = pages
            .div_ceil(per_msg)
            .saturating_mul(2)
            .saturating_add(u64::from(SLACK_MESSAGES));
        Ok(Self {
            iova,
            last,
            log_page,
            msg_size,
            slots,
            budget: u32::try_from(budget).unwrap_or(u32::MAX),
            messages: 0,
            events: 0,
            pages: 0,
            current: None,
            run: None,
            failed: None,
        })
    }

    /// Pages reported so far.
    pub const fn pages(&self) -> u64 {
        self.pages
    }
    /// Messages received so far.
    pub const fn messages(&self) -> u32 {
        self.messages
    }
    /// The error that ended the report, if one did.
    pub const fn error(&self) -> Option<ReportError> {
        self.failed
    }

    fn fail(&mut self, e: ReportError) -> ReportError {
        *self.failed.get_or_insert(e)
    }

    fn check(&self) -> Result<(), ReportError> {
        self.failed.map_or(Ok(()), Err)
    }

    /// Takes the next CQE: checks opcode, length and state and returns the
    /// message it announces.
    ///
    /// # Errors
    /// [`ReportError`]; the report is then failed.
    pub fn handle_cqe(&mut self, cqe: &[u8]) -> Result<Message, ReportError> {
        self.check()?;
        if self.current.is_some() {
            return Err(self.fail(ReportError::Sequence));
        }
        let c = ReportCqe::parse(cqe).map_err(|_| self.fail(ReportError::CqeTruncated))?;
        if c.opcode != CQE_OPCODE_RESP_SEND_IMM {
            return Err(self.fail(ReportError::BadOpcode(c.opcode)));
        }
        if c.byte_cnt > self.msg_size || c.byte_cnt & ENTRY_MASK != 0 {
            return Err(self.fail(ReportError::BadLength(c.byte_cnt)));
        }
        if let TrackerState::Unknown(s) = c.state {
            return Err(self.fail(ReportError::BadState(s)));
        }
        self.messages = self.messages.saturating_add(1);
        if self.messages > self.budget {
            return Err(self.fail(ReportError::Runaway));
        }
        let msg = Message {
            slot: u32::from(c.wqe_counter) & self.slots.saturating_sub(1),
            len: c.byte_cnt,
            state: c.state,
        };
        self.current = Some((msg, 0));
        Ok(msg)
    }

    /// Takes the next bytes of the current message's entries (whole
    /// entries, in order) and hands their pages to `sink`.
    ///
    /// # Errors
    /// [`ReportError`]; the report is then failed (extents already handed
    /// to the sink stay there: they were dirty).
    pub fn handle_entries<S: DirtySink>(
        &mut self,
        plan: &TrackerPlan,
        bytes: &[u8],
        sink: &mut S,
    ) -> Result<(), ReportError> {
        self.check()?;
        let Some((msg, read)) = self.current else {
            return Err(self.fail(ReportError::Sequence));
        };
        let n = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        let total = read.checked_add(n).filter(|&t| t <= msg.len);
        let (Some(total), 0) = (total, n & ENTRY_MASK) else {
            return Err(self.fail(ReportError::Sequence));
        };
        for entry in bytes.chunks_exact(REPORT_ENTRY_LEN) {
            let mut be = [0u8; 8];
            be.iter_mut().zip(entry).for_each(|(d, s)| *d = *s);
            let addr = u64::from_be_bytes(be);
            if let Err(e) = self.page(plan, addr, sink) {
                return Err(self.fail(e));
            }
        }
        self.current = Some((msg, total));
        Ok(())
    }

    fn page<S: DirtySink>(
        &mut self,
        plan: &TrackerPlan,
        addr: u64,
        sink: &mut S,
    ) -> Result<(), ReportError> {
        let page_size = 1u64.checked_shl(self.log_page).unwrap_or(0);
        if addr & page_size.saturating_sub(1) != 0 {
            return Err(ReportError::Misaligned(addr));
        }
        // The page, not its first byte: a range need only be aligned to the
        // page size asked for, so when the device raised it a tracked page
        // may start before the range it covers part of.
        if !plan.meets(addr, page_size) {
            return Err(ReportError::Untracked(addr));
        }
        let end = addr.saturating_add(page_size);
        // The page must meet the window (a tracked page may start before
        // an unaligned window and still hold some of it).
        if addr > self.last || end <= self.iova {
            return Err(ReportError::OutsideWindow(addr));
        }
        self.pages = self.pages.saturating_add(1);
        self.run = match self.run {
            Some((start, run_end)) if run_end == addr => Some((start, end)),
            other => {
                if let Some(run) = other {
                    self.flush(run, sink);
                }
                Some((addr, end))
            }
        };
        Ok(())
    }

    /// Hands `[start, end)`, clipped to the window, to the sink.
    fn flush<S: DirtySink>(&self, (start, end): (u64, u64), sink: &mut S) {
        let from = start.max(self.iova);
        let to = end.min(self.last.saturating_add(1)).max(from);
        // The window's end saturates at 2^64 - 1: the last byte then counts.
        let to = if end > self.last && self.last == u64::MAX {
            u64::MAX
        } else {
            to
        };
        if to > from {
            sink.set_dirty(from, to.saturating_sub(from));
        }
    }

    /// Ends the current message (all its bytes read): the report goes on
    /// or is complete.
    ///
    /// # Errors
    /// [`ReportError::TrackerError`] when firmware says ERROR; the report is
    /// then failed.
    pub fn finish_message<S: DirtySink>(
        &mut self,
        sink: &mut S,
    ) -> Result<ReportOutcome, ReportError> {
        self.check()?;
        let Some((msg, read)) = self.current.take() else {
            return Err(self.fail(ReportError::Sequence));
        };
        if read != msg.len {
            return Err(self.fail(ReportError::Sequence));
        }
        if let Some(run) = self.run.take() {
            self.flush(run, sink);
        }
        self.outcome(msg.state)
    }

    /// Counts an object-change event.
    ///
    /// # Errors
    /// [`ReportError::EventStorm`] past [`MAX_REPORT_EVENTS`]; the report
    /// is then failed.
    pub fn handle_event(&mut self) -> Result<(), ReportError> {
        self.check()?;
        self.events = self.events.saturating_add(1);
        if self.events > MAX_REPORT_EVENTS {
            return Err(self.fail(ReportError::EventStorm));
        }
        Ok(())
    }

    /// Takes the tracker state a QUERY read after an object-change event.
    ///
    /// # Errors
    /// [`ReportError::TrackerError`] for ERROR, [`ReportError::BadState`]
    /// for a state that does not exist.
    pub fn handle_query(&mut self, state: TrackerState) -> Result<ReportOutcome, ReportError> {
        self.check()?;
        self.outcome(state)
    }

    /// Ends the report as failed for a reason found outside it (a channel
    /// error, a timeout); returns that reason.
    pub fn abort(&mut self, e: ReportError) -> ReportError {
        self.fail(e)
    }

    fn outcome(&mut self, state: TrackerState) -> Result<ReportOutcome, ReportError> {
        match state {
            TrackerState::Reporting => Ok(ReportOutcome::More),
            TrackerState::Tracking => Ok(ReportOutcome::Done),
            TrackerState::Error => Err(self.fail(ReportError::TrackerError)),
            TrackerState::Unknown(s) => Err(self.fail(ReportError::BadState(s))),
        }
    }
}
