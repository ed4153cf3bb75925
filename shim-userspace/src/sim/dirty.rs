//! Device dirty-page tracking on the simulated device: `vfio_log_ops`
//! (start, read-and-clear into an `iova_bitmap`, stop) over the core's
//! [`Device::dirty_start`](mlx5vf_core::device::Device::dirty_start) family.

use std::io;
use std::sync::{Arc, Mutex};

use mlx5vf_core::device::{DIRTY_SCRATCH_LEN, DirtyTracker, ReportSummary};
use mlx5vf_core::tracker::{BitmapWindow, IovaRange};
use mlx5vf_sim::firmware::Firmware;

use super::SimDevice;
use super::hal::SimHal;
use crate::backend::io_error;
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
        DirtyLog {
            shared: Arc::clone(&self.shared),
            fw: Arc::clone(&self.fw),
            tracker: DirtyTracker::new(),
        }
    }
}

impl DirtyLog {
    /// `DMA_LOGGING_START`: tracks `ranges` (sorted, non-overlapping,
    /// aligned to `page_size`); returns the page size the device tracks.
    ///
    /// # Errors
    /// What the driver said (`EINVAL`, `EOPNOTSUPP`, ...).
    pub fn start(&mut self, ranges: &[IovaRange], page_size: u64) -> io::Result<u64> {
        let mut scratch = vec![0u8; DIRTY_SCRATCH_LEN];
        self.shared
            .lock()
            .dirty_start(&mut self.tracker, ranges, page_size, &mut scratch)
            .map_err(io_error)
    }

    /// `DMA_LOGGING_REPORT`: the pages of `[iova, iova + length)` written
    /// since the last report, into `bitmap` (bit `i` = page `iova + i *
    /// page_size`), cleared on the device.
    ///
    /// # Errors
    /// What the driver said; after `EIO` or `ETIMEDOUT` logging has ended
    /// and every page must be taken as dirty.
    pub fn read_and_clear(
        &mut self,
        iova: u64,
        length: u64,
        page_size: u64,
        bitmap: &mut [u64],
    ) -> io::Result<ReportSummary> {
        let mut window = BitmapWindow::new(iova, page_size, bitmap)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        self.shared
            .lock()
            .dirty_read_and_clear(&mut self.tracker, iova, length, &mut window)
            .map_err(io_error)
    }

    /// `DMA_LOGGING_STOP`.
    ///
    /// # Errors
    /// What the driver said.
    pub fn stop(&mut self) -> io::Result<()> {
        self.shared
            .lock()
            .dirty_stop(&mut self.tracker)
            .map_err(io_error)
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
        let _ = self.stop();
    }
}
