//! The device dirty-page tracker engine (what Linux's `vfio_log_ops` do for
//! mlx5): pure, deterministic, allocation-free.
//!
//! - [`TrackerPlan`] turns the caller's IOVA ranges and page size into the
//!   tracker object's context: ranges combined down to the device's
//!   `pg_track_max_num_range` (the adjacent pair with the smallest gap is
//!   merged first; a limit of one collapses everything to `[first, last]`),
//!   the page size clamped to the device's range (the caller learns the
//!   size it got), the address space checked against the device's limits.
//! - [`Report`] ingests one report (`log_read_and_clear`): firmware's CQEs
//!   and message entries are untrusted, so every CQE's opcode, length and
//!   state and every reported address (alignment to the tracked page, inside
//!   a tracked range and the requested window) is checked, and a report that
//!   never ends is cut off by a message budget.
//! - [`DirtySink`] receives the dirty extents; [`BitmapWindow`] is one with
//!   `iova_bitmap` semantics (bit `i` = the page at `iova + i * page_size`).
//!
//! `device::Device` drives these through the [`Hal`](crate::hal::Hal)'s
//! reporting channel; nothing here calls anything.
//!
//! # Exactness
//! Firmware clears what it reports, so a report that fails halfway has lost
//! pages: any failure of a report is final for the tracker (the device layer
//! puts it in error, every later read fails with `EIO`, and a VMM then treats
//! all memory as dirty, as the VFIO uAPI asks). A report never misses a page
//! silently; it may report more only at tracked-page granularity.

mod plan;
mod report;
mod sink;

pub use plan::{IovaRange, MAX_LOG_MSG_SIZE, PlanError, RANGE_WINDOW, TrackerPlan};
pub use report::{MAX_REPORT_EVENTS, Message, Report, ReportError, ReportOutcome, SLACK_MESSAGES};
pub use sink::{BitmapWindow, CountingSink, DirtySink, WindowError};

#[cfg(test)]
mod tests;

use core::fmt;

use crate::errno::Errno;

/// Why a dirty-tracking operation failed (what `log_start`, `log_stop` and
/// `log_read_and_clear` return).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum TrackerError {
    /// The request cannot be planned.
    Plan(PlanError),
    /// A report failed; see [`ReportError`].
    Report(ReportError),
    /// Logging was not started (`EINVAL`).
    NotStarted,
    /// Logging is already running (`EINVAL`, as Linux's second start).
    AlreadyStarted,
    /// An earlier report failed and logging ended: every read fails with
    /// `EIO` until logging is stopped and started again.
    Failed,
    /// The device has no page tracker (`adv_virtualization` is 0), or the
    /// platform has no reporting channel (`EOPNOTSUPP`).
    Unsupported,
}

impl TrackerError {
    /// The errno for this failure.
    pub const fn errno(self) -> Errno {
        match self {
            Self::Plan(e) => e.errno(),
            Self::Report(e) => e.errno(),
            Self::NotStarted | Self::AlreadyStarted => Errno::EINVAL,
            Self::Failed => Errno::EIO,
            Self::Unsupported => Errno::EOPNOTSUPP,
        }
    }
}

impl fmt::Display for TrackerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Plan(e) => e.fmt(f),
            Self::Report(e) => write!(f, "dirty report failed: {e}"),
            Self::NotStarted => f.write_str("dirty logging is not started"),
            Self::AlreadyStarted => f.write_str("dirty logging is already started"),
            Self::Failed => {
                f.write_str("dirty logging ended after a failed report: treat all memory as dirty")
            }
            Self::Unsupported => f.write_str("no device dirty-page tracker"),
        }
    }
}

impl core::error::Error for TrackerError {}

impl From<PlanError> for TrackerError {
    fn from(e: PlanError) -> Self {
        Self::Plan(e)
    }
}

impl From<ReportError> for TrackerError {
    fn from(e: ReportError) -> Self {
        Self::Report(e)
    }
}
