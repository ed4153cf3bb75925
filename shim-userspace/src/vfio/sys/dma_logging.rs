//! `VFIO_DEVICE_FEATURE_DMA_LOGGING_{START,STOP,REPORT}`: device dirty-page
//! tracking (`vfio_log_ops` in the kernel). Unlike the other features their
//! payloads carry user pointers (the range array, the bitmap), so each call
//! here states what the kernel reads or writes through them.

use std::os::fd::AsFd;

use rustix::io::{Errno, Result};
use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes};

use super::{FEATURE_GET, FEATURE_PROBE, FEATURE_SET, VFIO_DEVICE_FEATURE, call_with};

/// `VFIO_DEVICE_FEATURE_DMA_LOGGING_START`.
const FEATURE_DMA_LOGGING_START: u32 = 6;
/// `VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP`.
const FEATURE_DMA_LOGGING_STOP: u32 = 7;
/// `VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT`.
const FEATURE_DMA_LOGGING_REPORT: u32 = 8;

/// `struct vfio_device_feature_dma_logging_range`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable)]
pub(in crate::vfio) struct LoggingRange {
    /// First IOVA, aligned to the page size.
    pub(in crate::vfio) iova: u64,
    /// Bytes, aligned to the page size.
    pub(in crate::vfio) length: u64,
}
const_assert_eq!(size_of::<LoggingRange>(), 16);

/// `struct vfio_device_feature` followed by
/// `struct vfio_device_feature_dma_logging_control`.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable)]
struct StartFeature {
    argsz: u32,
    flags: u32,
    /// In: the page size asked for; out: the one the driver tracks.
    page_size: u64,
    num_ranges: u32,
    reserved: u32,
    /// User pointer to `num_ranges` [`LoggingRange`]s.
    ranges: u64,
}
const_assert_eq!(size_of::<StartFeature>(), 8 + 24);

/// `struct vfio_device_feature` followed by
/// `struct vfio_device_feature_dma_logging_report`.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable)]
struct ReportFeature {
    argsz: u32,
    flags: u32,
    iova: u64,
    length: u64,
    page_size: u64,
    /// User pointer to the bitmap's u64 words.
    bitmap: u64,
}
const_assert_eq!(size_of::<ReportFeature>(), 8 + 32);

/// `struct vfio_device_feature` with no payload.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable)]
struct BareFeature {
    argsz: u32,
    flags: u32,
}
const_assert_eq!(size_of::<BareFeature>(), 8);

/// PROBE of SET `DMA_LOGGING_START` (how QEMU detects device dirty
/// tracking): `Ok` when the driver has `vfio_log_ops`, `ENOTTY` when not.
pub(in crate::vfio) fn probe(device: impl AsFd) -> Result<()> {
    let mut f = BareFeature {
        argsz: size_of::<BareFeature>() as u32,
        flags: FEATURE_PROBE | FEATURE_SET | FEATURE_DMA_LOGGING_START,
    };
    call_with(device, VFIO_DEVICE_FEATURE, &mut f).map(drop)
}

/// SET `DMA_LOGGING_START` over `ranges`; returns the page size the driver
/// chose (it may clamp `page_size`).
pub(in crate::vfio) fn start(
    device: impl AsFd,
    ranges: &[LoggingRange],
    page_size: u64,
) -> Result<u64> {
    let num_ranges = u32::try_from(ranges.len()).map_err(|_| Errno::TOOBIG)?;
    let mut f = StartFeature {
        argsz: size_of::<StartFeature>() as u32,
        flags: FEATURE_SET | FEATURE_DMA_LOGGING_START,
        page_size,
        num_ranges,
        reserved: 0,
        // The kernel copies `num_ranges` ranges from here during the call
        // and only reads them; `ranges` is borrowed for all of it.
        ranges: ranges.as_ptr() as u64,
    };
    call_with(device, VFIO_DEVICE_FEATURE, &mut f)?;
    Ok(f.page_size)
}

/// SET `DMA_LOGGING_STOP`.
pub(in crate::vfio) fn stop(device: impl AsFd) -> Result<()> {
    let mut f = BareFeature {
        argsz: size_of::<BareFeature>() as u32,
        flags: FEATURE_SET | FEATURE_DMA_LOGGING_STOP,
    };
    call_with(device, VFIO_DEVICE_FEATURE, &mut f).map(drop)
}

/// GET `DMA_LOGGING_REPORT`: sets bit `i` of `bitmap` for each page
/// `iova + i * page_size` of `[iova, iova + length)` written since the
/// last report, and clears the log of that range.
///
/// `bitmap` must hold a bit per page; shorter is refused here with
/// `EINVAL` rather than letting the kernel write past it.
pub(in crate::vfio) fn report(
    device: impl AsFd,
    iova: u64,
    length: u64,
    page_size: u64,
    bitmap: &mut [u64],
) -> Result<()> {
    if page_size == 0 {
        return Err(Errno::INVAL);
    }
    let bits = length.div_ceil(page_size);
    if bits.div_ceil(64) > bitmap.len() as u64 {
        return Err(Errno::INVAL);
    }
    let mut f = ReportFeature {
        argsz: size_of::<ReportFeature>() as u32,
        flags: FEATURE_GET | FEATURE_DMA_LOGGING_REPORT,
        iova,
        length,
        page_size,
        // The kernel pins and writes at most ceil(length / page_size) bits
        // from here (checked above to fit), only during the call, while
        // `bitmap` is exclusively borrowed.
        bitmap: bitmap.as_mut_ptr() as u64,
    };
    call_with(device, VFIO_DEVICE_FEATURE, &mut f).map(drop)
}
