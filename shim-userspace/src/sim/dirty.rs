//! Device dirty-page tracking on the simulated device: `vfio_log_ops`
//! (start, read-and-clear into an `iova_bitmap`, stop) over the core's
//! [`Device::dirty_start`](mlx5vf_core::device::Device::dirty_start) family,
//! behind the argument checks the VFIO core makes before a driver sees the
//! call ([`crate::dma_logging::start_refusal`]), as the kernel module's
//! devices have them.

use std::io;
use std::sync::{Arc, Mutex};

use mlx5vf_core::device::{DIRTY_SCRATCH_LEN, DirtyTracker};
use mlx5vf_core::tracker::{BitmapWindow, IovaRange};
use mlx5vf_sim::firmware::Firmware;
use rustix::io::Errno;

use super::SimDevice;
use super::hal::SimHal;
use crate::backend::io_error;
use crate::dma_logging::{
    DevicePlan, DmaLogging, ReportFigures, bitmap_words, report_refusal, start_refusal,
};
use crate::local::Shared;

/// Dirty logging of one simulated VF. Dropping it stops logging.
pub struct DirtyLog {
    shared: Arc<Shared<SimHal>>,
    fw: Arc<Mutex<Firmware>>,
    tracker: DirtyTracker,
}

impl SimDevice {
    /// A dirty log for this device (not started).
    pub fn dirty_log(&self) -> DirtyLog {
        DirtyLog::new(Arc::clone(&self.shared), Arc::clone(&self.fw))
    }
}

impl DmaLogging for DirtyLog {
    fn start(&mut self, ranges: &[IovaRange], page_size: u64) -> io::Result<u64> {
        if let Some(e) = start_refusal(ranges, page_size) {
            return Err(e.into());
        }
        // The VFIO core hands the driver its ranges in IOVA order (from
        // its interval tree).
        let mut sorted = ranges.to_vec();
        sorted.sort_by_key(|r| r.iova);
        let mut scratch = vec![0u8; DIRTY_SCRATCH_LEN];
        self.shared
            .lock()
            .dirty_start(&mut self.tracker, &sorted, page_size, &mut scratch)
            .map_err(io_error)
    }

    fn report(
        &mut self,
        iova: u64,
        length: u64,
        page_size: u64,
        bitmap: &mut [u64],
    ) -> io::Result<Option<ReportFigures>> {
        if let Some(e) = report_refusal(iova, length, page_size) {
            return Err(e.into());
        }
        if bitmap_words(length, page_size).is_none_or(|words| words > bitmap.len()) {
            return Err(Errno::INVAL.into());
        }
        let mut window = BitmapWindow::new(iova, page_size, bitmap)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let summary = self
            .shared
            .lock()
            .dirty_read_and_clear(&mut self.tracker, iova, length, &mut window)
            .map_err(io_error)?;
        Ok(Some(ReportFigures {
            pages: summary.pages,
            messages: u64::from(summary.messages),
        }))
    }

    fn stop(&mut self) -> io::Result<()> {
        self.shared
            .lock()
            .dirty_stop(&mut self.tracker)
            .map_err(io_error)
    }

    fn device_plan(&self) -> Option<DevicePlan> {
        self.tracker.plan().map(|p| DevicePlan {
            ranges: p.ranges().len(),
            msg_size: p.msg_size(),
        })
    }
}

impl DirtyLog {
    pub(super) fn new(shared: Arc<Shared<SimHal>>, fw: Arc<Mutex<Firmware>>) -> Self {
        Self {
            shared,
            fw,
            tracker: DirtyTracker::new(),
        }
    }

    /// The tracker state (ranges after combining, sizes).
    pub fn tracker(&self) -> &DirtyTracker {
        &self.tracker
    }

    /// The firmware (its guest workload and ground truth).
    pub fn firmware(&self) -> Arc<Mutex<Firmware>> {
        Arc::clone(&self.fw)
    }
}

impl Drop for DirtyLog {
    fn drop(&mut self) {
        let _ = DmaLogging::stop(self);
    }
}
