//! From the caller's ranges to the tracker object's context.

use core::fmt;

use crate::errno::Errno;
use crate::ifc::page_track::{
    AdvVirtualizationCaps, CreatePageTrack, MAX_TRACK_RANGES, REPORT_ENTRY_LEN, TrackRange,
};

/// One range the caller wants tracked: `[iova, iova + length)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct IovaRange {
    /// First byte.
    pub iova: u64,
    /// Bytes (never 0).
    pub length: u64,
}

impl From<&Self> for IovaRange {
    fn from(r: &Self) -> Self {
        *r
    }
}

/// Ranges held while combining: the tracker's limit plus the one just
/// added, after which the closest pair is merged again.
pub const RANGE_WINDOW: usize = MAX_TRACK_RANGES + 1;

/// The largest report message this driver asks for (2 MiB, 262 144
/// addresses). Linux takes the device's maximum, up to 2^31 bytes, and sizes
/// its receive queue at four messages; bounding it keeps the channel's
/// memory at a few MiB whatever the device says.
pub const MAX_LOG_MSG_SIZE: u8 = 21;

/// Why a tracker could not be planned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PlanError {
    /// No ranges were given.
    NoRanges,
    /// The page size is not a power of two.
    BadPageSize(u64),
    /// A range is empty, wraps around, or is not aligned to the page size.
    BadRange(IovaRange),
    /// Ranges must come sorted by address and must not overlap.
    Unsorted(IovaRange),
    /// The device cannot track this: its limits (named) exclude it.
    Unsupported(&'static str),
}

impl PlanError {
    /// The errno Linux (or the VFIO core before it) returns.
    pub const fn errno(self) -> Errno {
        match self {
            Self::Unsupported(_) => Errno::EOPNOTSUPP,
            _ => Errno::EINVAL,
        }
    }
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoRanges => f.write_str("no ranges to track"),
            Self::BadPageSize(p) => write!(f, "page size {p:#x} is not a power of two"),
            Self::BadRange(r) => write!(
                f,
                "range {:#x}+{:#x} is empty, wraps or is not page aligned",
                r.iova, r.length
            ),
            Self::Unsorted(r) => write!(
                f,
                "range {:#x}+{:#x} overlaps or precedes the previous one",
                r.iova, r.length
            ),
            Self::Unsupported(why) => write!(f, "the device cannot track this: {why}"),
        }
    }
}

impl core::error::Error for PlanError {}

/// The tracker object's context, planned from the caller's ranges and the
/// device's limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackerPlan {
    ranges: heapless::Vec<TrackRange, RANGE_WINDOW>,
    log_page_size: u8,
    log_addr_space_size: u8,
    log_msg_size: u8,
}

/// The end (exclusive) of a track range; ranges were checked not to wrap.
fn end_of(r: &TrackRange) -> u64 {
    r.start_address.saturating_add(r.length)
}

impl TrackerPlan {
    /// No ranges: what [`TrackerPlan::rebuild`] fills in place.
    pub const EMPTY: Self = Self {
        ranges: heapless::Vec::new(),
        log_page_size: 0,
        log_addr_space_size: 0,
        log_msg_size: 0,
    };

    /// Plans a tracker over `ranges` (sorted, non-overlapping, aligned to
    /// `page_size`, as the VFIO core checks them) for a device with `caps`.
    /// The plan is about 4 KiB: kernel callers use
    /// [`TrackerPlan::rebuild`] on storage they own instead.
    ///
    /// # Errors
    /// As [`TrackerPlan::rebuild`].
    pub fn new(
        caps: &AdvVirtualizationCaps,
        ranges: &[IovaRange],
        page_size: u64,
    ) -> Result<Self, PlanError> {
        let mut plan = Self::EMPTY;
        plan.rebuild(caps, ranges, page_size)?;
        Ok(plan)
    }

    /// Plans in place (nothing of the plan's size goes on the stack). On an
    /// error the plan is left empty.
    ///
    /// # Errors
    /// [`PlanError`]; `EINVAL` ones for bad input, `EOPNOTSUPP` where the
    /// device's limits exclude the request (as Linux).
    pub fn rebuild<I>(
        &mut self,
        caps: &AdvVirtualizationCaps,
        ranges: I,
        page_size: u64,
    ) -> Result<(), PlanError>
    where
        I: IntoIterator,
        I::Item: Into<IovaRange>,
    {
        self.ranges.clear();
        let r = self.fill(caps, ranges, page_size);
        if r.is_err() {
            self.ranges.clear();
        }
        r
    }

    fn fill<I>(
        &mut self,
        caps: &AdvVirtualizationCaps,
        ranges: I,
        page_size: u64,
    ) -> Result<(), PlanError>
    where
        I: IntoIterator,
        I::Item: Into<IovaRange>,
    {
        if !page_size.is_power_of_two() {
            return Err(PlanError::BadPageSize(page_size));
        }
        let limit = usize::from(caps.pg_track_max_num_range).min(MAX_TRACK_RANGES);
        if limit == 0 {
            return Err(PlanError::Unsupported("pg_track_max_num_range is 0"));
        }
        let kept = &mut self.ranges;
        let mut prev_end: Option<u64> = None;
        for r in ranges {
            let r: IovaRange = r.into();
            let r = &r;
            let mask = page_size.saturating_sub(1);
            let aligned = r.iova & mask == 0 && r.length & mask == 0;
            let end = r.iova.checked_add(r.length);
            if r.length == 0 || !aligned || end.is_none() {
                return Err(PlanError::BadRange(*r));
            }
            if prev_end.is_some_and(|p| r.iova < p) {
                return Err(PlanError::Unsorted(*r));
            }
            prev_end = end;
            let range = TrackRange {
                start_address: r.iova,
                length: r.length,
            };
            // The window never exceeds `limit + 1 <= RANGE_WINDOW` entries:
            // one merge follows every push past the limit.
            kept.push(range)
                .map_err(|_| PlanError::Unsupported("range window"))?;
            if kept.len() > limit {
                merge_closest(kept);
            }
        }
        if kept.is_empty() {
            return Err(PlanError::NoRanges);
        }
        let (log_page_size, _) = clamp_page(caps, page_size)?;
        let total = kept
            .iter()
            .try_fold(0u64, |sum, r| sum.checked_add(r.length))
            .ok_or(PlanError::Unsupported(
                "the ranges add up to more than 2^64 bytes",
            ))?;
        let log_addr_space_size = total
            .checked_next_power_of_two()
            .map(u64::trailing_zeros)
            .ok_or(PlanError::Unsupported(
                "the ranges add up to more than 2^63 bytes",
            ))?;
        let log_addr_space_size = u8::try_from(log_addr_space_size).unwrap_or(u8::MAX);
        if log_addr_space_size < caps.pg_track_log_min_addr_space
            || log_addr_space_size > caps.pg_track_log_max_addr_space
        {
            return Err(PlanError::Unsupported(
                "the address space is outside pg_track_log_{min,max}_addr_space",
            ));
        }
        let log_msg_size = caps.pg_track_log_max_msg_size.min(MAX_LOG_MSG_SIZE);
        // CAST: REPORT_ENTRY_LEN is 8; its log fits u8.
        let log_entry = REPORT_ENTRY_LEN.trailing_zeros() as u8;
        if log_msg_size < caps.pg_track_log_min_msg_size || log_msg_size < log_entry {
            return Err(PlanError::Unsupported(
                "no message size both the device and this driver accept",
            ));
        }
        self.log_page_size = log_page_size;
        self.log_addr_space_size = log_addr_space_size;
        self.log_msg_size = log_msg_size;
        Ok(())
    }

    /// The ranges the tracker covers (combined: gaps merged in are tracked).
    pub fn ranges(&self) -> &[TrackRange] {
        &self.ranges
    }
    /// The tracked page size (what `log_start` writes back).
    pub fn page_size(&self) -> u64 {
        1u64.checked_shl(u32::from(self.log_page_size)).unwrap_or(0)
    }
    /// log2 of the tracked page size.
    pub const fn log_page_size(&self) -> u8 {
        self.log_page_size
    }
    /// log2 of the ranges' total length, rounded up.
    pub const fn log_addr_space_size(&self) -> u8 {
        self.log_addr_space_size
    }
    /// log2 of the report message size.
    pub const fn log_msg_size(&self) -> u8 {
        self.log_msg_size
    }
    /// The report message size in bytes (at most 2^[`MAX_LOG_MSG_SIZE`]).
    pub fn msg_size(&self) -> u32 {
        1u32.checked_shl(u32::from(self.log_msg_size)).unwrap_or(0)
    }

    /// The CREATE command for this plan.
    pub fn create_command(&self, vhca_id: u16, reporting_qpn: u32) -> CreatePageTrack<'_> {
        CreatePageTrack {
            vhca_id,
            log_addr_space_size: self.log_addr_space_size,
            log_page_size: self.log_page_size,
            log_msg_size: self.log_msg_size,
            reporting_qpn,
            ranges: &self.ranges,
        }
    }

    /// Whether the byte at `addr` lies in a tracked range (a reported page
    /// is judged by [`TrackerPlan::meets`]: it may start before its range).
    pub fn tracks(&self, addr: u64) -> bool {
        let after = self.ranges.partition_point(|r| r.start_address <= addr);
        after
            .checked_sub(1)
            .and_then(|i| self.ranges.get(i))
            .is_some_and(|r| addr < end_of(r))
    }

    /// Whether `[iova, iova + length)` meets a tracked range.
    pub fn meets(&self, iova: u64, length: u64) -> bool {
        let end = iova.saturating_add(length);
        // The ranges are sorted and disjoint, so their ends ascend: of the
        // ranges starting before `end`, the last one reaches furthest.
        let before_end = self.ranges.partition_point(|r| r.start_address < end);
        before_end
            .checked_sub(1)
            .and_then(|i| self.ranges.get(i))
            .is_some_and(|r| iova < end_of(r))
    }
}

/// log2 of `page_size` clamped to the device's tracked page sizes.
fn clamp_page(caps: &AdvVirtualizationCaps, page_size: u64) -> Result<(u8, u64), PlanError> {
    let (lo, hi) = (
        caps.pg_track_log_min_page_size,
        caps.pg_track_log_max_page_size,
    );
    if lo > hi || hi >= 64 {
        return Err(PlanError::Unsupported("pg_track_log_{min,max}_page_size"));
    }
    // CAST: trailing_zeros of a u64 is at most 64.
    let log = (page_size.trailing_zeros() as u8).clamp(lo, hi);
    Ok((log, 1u64.checked_shl(u32::from(log)).unwrap_or(0)))
}

/// Merges the adjacent pair with the smallest gap (the first such pair on a
/// tie), as the VFIO core's `vfio_combine_iova_ranges` does. Gaps do not
/// change as others merge, so merging in a sliding window keeps exactly the
/// largest gaps, as merging over the whole list would.
fn merge_closest(kept: &mut heapless::Vec<TrackRange, RANGE_WINDOW>) {
    let mut best: Option<(usize, u64)> = None;
    for (i, pair) in kept.windows(2).enumerate() {
        if let [a, b] = pair {
            let gap = b.start_address.saturating_sub(end_of(a));
            if best.is_none_or(|(_, g)| gap < g) {
                best = Some((i, gap));
            }
        }
    }
    let Some((i, _)) = best else { return };
    let second = i.saturating_add(1);
    if second >= kept.len() {
        return;
    }
    let removed = kept.remove(second);
    if let Some(first) = kept.get_mut(i) {
        first.length = end_of(&removed).saturating_sub(first.start_address);
    }
}
