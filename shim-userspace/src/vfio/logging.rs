//! DMA logging (device dirty-page tracking) through VFIO: the three
//! `VFIO_DEVICE_FEATURE_DMA_LOGGING_*` features, for any device whose
//! driver has `vfio_log_ops` (Linux's `mlx5-vfio-pci`, our kernel module
//! on a kernel with `CONFIG_IOMMUFD_DRIVER`).

use std::io;

use mlx5vf_core::tracker::IovaRange;
use rustix::io::Errno;

use super::sys::dma_logging::{self, LoggingRange};
use super::{ErrorKind, Step, VfioDevice, VfioError};
use crate::dma_logging::{DmaLogging, MAX_START_RANGES, ReportFigures};

impl VfioDevice {
    /// Whether the driver offers DMA logging (PROBE of `DMA_LOGGING_START`,
    /// as QEMU detects it).
    ///
    /// # Errors
    /// `ENOTTY` when it does not, or whatever else the kernel says.
    pub fn probe_dma_logging(&self) -> Result<(), VfioError> {
        dma_logging::probe(&self.device).map_err(self.os(Step::ProbeDmaLogging))
    }

    /// `DMA_LOGGING_START` over `ranges`, asking for `page_size`; returns
    /// the page size the driver tracks (it may clamp).
    ///
    /// # Errors
    /// The kernel's answer: `EINVAL` (no ranges, misaligned, overlapping,
    /// already started), `E2BIG` (more than
    /// [`MAX_START_RANGES`]), ...
    pub fn start_dma_logging(
        &self,
        ranges: &[IovaRange],
        page_size: u64,
    ) -> Result<u64, VfioError> {
        // The kernel refuses more than MAX_START_RANGES with E2BIG; a list
        // far longer is not worth copying to learn that.
        if ranges.len() > 16 * MAX_START_RANGES {
            return Err(VfioError::new(
                &self.name,
                Step::DmaLoggingStart,
                ErrorKind::Os(Errno::TOOBIG),
            ));
        }
        let uapi: Vec<LoggingRange> = ranges
            .iter()
            .map(|r| LoggingRange {
                iova: r.iova,
                length: r.length,
            })
            .collect();
        dma_logging::start(&self.device, &uapi, page_size).map_err(self.os(Step::DmaLoggingStart))
    }

    /// `DMA_LOGGING_REPORT` of `[iova, iova + length)` in `page_size` pages
    /// into `bitmap` (bit `i` = page `iova + i * page_size`; bits are only
    /// set), clearing those pages' log.
    ///
    /// # Errors
    /// `EINVAL` (a bitmap shorter than a bit per page, logging not started,
    /// a bad page size), `EIO` (the device's tracker failed), `EOPNOTSUPP`
    /// (a kernel without `CONFIG_IOMMUFD_DRIVER`), ...
    pub fn report_dma_logging(
        &self,
        iova: u64,
        length: u64,
        page_size: u64,
        bitmap: &mut [u64],
    ) -> Result<(), VfioError> {
        dma_logging::report(&self.device, iova, length, page_size, bitmap)
            .map_err(self.os(Step::DmaLoggingReport))
    }

    /// `DMA_LOGGING_STOP`.
    ///
    /// # Errors
    /// What the kernel says.
    pub fn stop_dma_logging(&self) -> Result<(), VfioError> {
        dma_logging::stop(&self.device).map_err(self.os(Step::DmaLoggingStop))
    }
}

impl DmaLogging for VfioDevice {
    fn start(&mut self, ranges: &[IovaRange], page_size: u64) -> io::Result<u64> {
        Ok(self.start_dma_logging(ranges, page_size)?)
    }

    fn report(
        &mut self,
        iova: u64,
        length: u64,
        page_size: u64,
        bitmap: &mut [u64],
    ) -> io::Result<Option<ReportFigures>> {
        self.report_dma_logging(iova, length, page_size, bitmap)?;
        Ok(None)
    }

    fn stop(&mut self) -> io::Result<()> {
        Ok(self.stop_dma_logging()?)
    }
}
