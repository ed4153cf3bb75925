//! Device dirty-page tracking as a VMM sees it: VFIO's DMA logging
//! (`VFIO_DEVICE_FEATURE_DMA_LOGGING_START/REPORT/STOP`, the kernel's
//! `vfio_log_ops`), over any device that offers it.
//!
//! A VFIO device implements it with the three feature ioctls
//! ([`crate::vfio::VfioDevice`]); the simulated device runs the core's
//! tracker in-process behind the same argument checks the VFIO core makes
//! before a driver sees the call, so the two answer alike.

use std::io;

use mlx5vf_core::tracker::IovaRange;
use rustix::io::Errno;

/// The most ranges one START may name: the VFIO core refuses more than
/// `PAGE_SIZE / sizeof(struct vfio_device_feature_dma_logging_range)`
/// (256 with 4 KiB pages) with `E2BIG`.
pub const MAX_START_RANGES: usize = 4096 / 16;

/// The smallest page size a REPORT may ask for (the VFIO core's rule).
pub const MIN_REPORT_PAGE_SIZE: u64 = 4096;

/// What a report says about itself, when the backend can tell (the
/// simulated device runs the driver here and can; through VFIO only the
/// bitmap comes back).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReportFigures {
    /// Tracked pages the firmware's messages named.
    pub pages: u64,
    /// Messages the firmware sent.
    pub messages: u64,
}

/// DMA logging of one device. Errors keep the kernel's (or driver's)
/// errno ([`crate::backend::errno_of`]); after a failed REPORT the VMM
/// must take every page as dirty.
pub trait DmaLogging {
    /// `DMA_LOGGING_START` over `ranges` (sorted or not; not overlapping;
    /// aligned to `page_size`), asking for `page_size`; returns the page
    /// size the device tracks.
    ///
    /// # Errors
    /// `EINVAL` (no ranges, misaligned, overlapping, already started),
    /// `E2BIG` (more than [`MAX_START_RANGES`]), `EOVERFLOW`, or what the
    /// driver says.
    fn start(&mut self, ranges: &[IovaRange], page_size: u64) -> io::Result<u64>;

    /// `DMA_LOGGING_REPORT`: sets bit `i` of `bitmap` for each page `iova +
    /// i * page_size` of `[iova, iova + length)` written since the last
    /// report (bits are only set, never cleared), and clears those pages on
    /// the device.
    ///
    /// # Errors
    /// `EINVAL` (not started, a page size that is not a power of two of at
    /// least 4 KiB, a bitmap too short), `EIO` (the tracker failed; logging
    /// has ended), `ETIMEDOUT`, or what the driver says.
    fn report(
        &mut self,
        iova: u64,
        length: u64,
        page_size: u64,
        bitmap: &mut [u64],
    ) -> io::Result<Option<ReportFigures>>;

    /// `DMA_LOGGING_STOP`.
    ///
    /// # Errors
    /// What the driver says.
    fn stop(&mut self) -> io::Result<()>;

    /// What the driver asked the device's tracker for at START, when the
    /// driver runs here (the simulated device); `None` through VFIO.
    fn device_plan(&self) -> Option<DevicePlan> {
        None
    }
}

/// The tracker a driver created at START.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DevicePlan {
    /// Ranges after combining to the device's limit.
    pub ranges: usize,
    /// Bytes per report message.
    pub msg_size: u32,
}

/// Bitmap words for `length` bytes of `page_size` pages (`None` when the
/// page size is zero or the bitmap would not fit in memory).
pub fn bitmap_words(length: u64, page_size: u64) -> Option<usize> {
    if page_size == 0 {
        return None;
    }
    usize::try_from(length.div_ceil(page_size).div_ceil(64)).ok()
}

/// The checks the VFIO core (`vfio_main.c`) makes on a START before the
/// driver's `log_start` runs: the errno it answers, if any.
pub fn start_refusal(ranges: &[IovaRange], page_size: u64) -> Option<Errno> {
    start_problem(ranges, page_size).map(|(errno, _)| errno)
}

/// As [`start_refusal`], with the rule broken, naming the range: what a
/// tool says before it asks (the VFIO core answers only the errno).
pub fn start_problem(ranges: &[IovaRange], page_size: u64) -> Option<(Errno, String)> {
    if ranges.is_empty() {
        return Some((Errno::INVAL, "no range to track".into()));
    }
    if page_size == 0 {
        return Some((Errno::INVAL, "a page size of 0".into()));
    }
    if ranges.len() > MAX_START_RANGES {
        return Some((
            Errno::TOOBIG,
            format!(
                "{} ranges, more than the {MAX_START_RANGES} one START may name",
                ranges.len()
            ),
        ));
    }
    let mut sorted: Vec<IovaRange> = ranges.to_vec();
    sorted.sort_by_key(|r| r.iova);
    let mut previous: Option<(IovaRange, u64)> = None;
    for r in &sorted {
        // Formatted only for the range that breaks a rule.
        let named = || format!("range {:#x}:{:#x}", r.iova, r.length);
        if r.length == 0 {
            return Some((Errno::INVAL, format!("{} is empty", named())));
        }
        if r.iova % page_size != 0 || r.length % page_size != 0 {
            return Some((
                Errno::INVAL,
                format!(
                    "{} is not aligned to the page size {page_size:#x} (start and length must be)",
                    named()
                ),
            ));
        }
        let Some(end) = r.iova.checked_add(r.length) else {
            return Some((
                Errno::OVERFLOW,
                format!("{} runs past the end of the address space", named()),
            ));
        };
        if let Some((p, p_end)) = previous {
            if r.iova < p_end {
                return Some((
                    Errno::INVAL,
                    format!("{} overlaps range {:#x}:{:#x}", named(), p.iova, p.length),
                ));
            }
        }
        previous = Some((*r, end));
    }
    None
}

/// The checks the VFIO core makes on a REPORT before the driver's
/// `log_read_and_clear` runs: the errno it answers, if any.
pub fn report_refusal(iova: u64, length: u64, page_size: u64) -> Option<Errno> {
    if page_size < MIN_REPORT_PAGE_SIZE || !page_size.is_power_of_two() || length == 0 {
        return Some(Errno::INVAL);
    }
    if iova.checked_add(length).is_none() {
        return Some(Errno::OVERFLOW);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(iova: u64, length: u64) -> IovaRange {
        IovaRange { iova, length }
    }

    #[test]
    fn start_is_refused_as_the_vfio_core_refuses_it() {
        assert_eq!(start_refusal(&[], 4096), Some(Errno::INVAL));
        assert_eq!(start_refusal(&[r(0x1000, 0x1000)], 0), Some(Errno::INVAL));
        assert_eq!(start_refusal(&[r(0x800, 0x1000)], 4096), Some(Errno::INVAL));
        assert_eq!(start_refusal(&[r(0, 0x1800)], 4096), Some(Errno::INVAL));
        assert_eq!(
            start_refusal(&[r(0x2000, 0x2000), r(0, 0x3000)], 4096),
            Some(Errno::INVAL)
        );
        assert_eq!(
            start_refusal(&[r(u64::MAX - 0xfff, 0x2000)], 4096),
            Some(Errno::OVERFLOW)
        );
        let many: Vec<_> = (0..257).map(|i| r(i * 0x2000, 0x1000)).collect();
        assert_eq!(start_refusal(&many, 4096), Some(Errno::TOOBIG));
        assert_eq!(start_refusal(&many[..256], 4096), None);
        assert_eq!(
            start_refusal(&[r(0x2000, 0x1000), r(0, 0x2000)], 4096),
            None
        );
    }

    #[test]
    fn report_is_refused_as_the_vfio_core_refuses_it() {
        assert_eq!(report_refusal(0, 0x1000, 2048), Some(Errno::INVAL));
        assert_eq!(report_refusal(0, 0x3000, 0x3000), Some(Errno::INVAL));
        assert_eq!(report_refusal(0, 0, 4096), Some(Errno::INVAL));
        assert_eq!(
            report_refusal(u64::MAX - 0xfff, 0x2000, 4096),
            Some(Errno::OVERFLOW)
        );
        assert_eq!(report_refusal(0x1000, 0x1000, 8192), None);
    }

    #[test]
    fn bitmap_words_cover_every_page() {
        assert_eq!(bitmap_words(64 * 4096, 4096), Some(1));
        assert_eq!(bitmap_words(65 * 4096, 4096), Some(2));
        assert_eq!(bitmap_words(1, 4096), Some(1));
        assert_eq!(bitmap_words(4096, 0), None);
    }
}
