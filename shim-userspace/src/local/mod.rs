//! The driver running in this process: [`mlx5vf_core::device::Device`]
//! under a lock, the condition its waiters sleep on, and the data files it
//! hands out ([`LocalFile`]). Shared by every backend that runs the driver
//! here, whatever its `Hal`: the simulated firmware called directly
//! ([`crate::sim`]) and a PF's command queue ([`crate::pf`]).

mod file;

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use mlx5vf_core::device::{Device, DeviceError};
use mlx5vf_core::errno::Errno;
use mlx5vf_core::hal::{BufferId, Hal};

pub use file::LocalFile;

/// The bytes of a `Hal`'s DMA buffers, for the copies between a buffer and
/// the user that data files make outside the device lock.
pub trait BufferAccess: Send + Sync {
    /// Runs `f` on bytes `[offset, offset + len)` of `buffer`.
    ///
    /// # Errors
    /// `ENODEV` for an unknown buffer, `EFAULT` for a range outside it.
    fn with_bytes(
        &self,
        buffer: BufferId,
        offset: u64,
        len: u64,
        f: &mut dyn FnMut(&[u8]),
    ) -> Result<(), Errno>;

    /// Runs `f` on bytes `[offset, offset + len)` of `buffer`, mutably.
    ///
    /// # Errors
    /// As [`BufferAccess::with_bytes`].
    fn with_bytes_mut(
        &self,
        buffer: BufferId,
        offset: u64,
        len: u64,
        f: &mut dyn FnMut(&mut [u8]),
    ) -> Result<(), Errno>;
}

/// The device lock and the condition every waiter sleeps on (SAVE and LOAD
/// completions and state changes notify it).
pub(crate) struct Shared<H: Hal> {
    pub(crate) dev: Mutex<Device<H>>,
    pub(crate) changed: Condvar,
    pub(crate) pool: Arc<dyn BufferAccess>,
}

impl<H: Hal> Shared<H> {
    pub(crate) fn new(dev: Device<H>, pool: Arc<dyn BufferAccess>) -> Self {
        Self {
            dev: Mutex::new(dev),
            changed: Condvar::new(),
            pool,
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Device<H>> {
        self.dev.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn wait<'a>(&self, guard: MutexGuard<'a, Device<H>>) -> MutexGuard<'a, Device<H>> {
        self.changed
            .wait(guard)
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the device, waiting out [`DeviceError::SaveInFlight`] and
    /// [`DeviceError::LoadInFlight`] as the kernel sleeps on the command's
    /// completion.
    pub(crate) fn retry<T>(
        &self,
        mut f: impl FnMut(&mut Device<H>) -> Result<T, DeviceError>,
    ) -> Result<T, DeviceError> {
        let mut dev = self.lock();
        loop {
            match f(&mut dev) {
                Err(DeviceError::SaveInFlight | DeviceError::LoadInFlight) => {
                    dev = self.wait(dev);
                }
                other => return other,
            }
        }
    }

    /// close_device: closes the files, then waits for a SAVE still in
    /// flight so its buffer is not freed under the firmware.
    pub(crate) fn close(&self) {
        let mut dev = self.lock();
        dev.close();
        while dev.save_in_flight() {
            dev = self.wait(dev);
        }
    }
}
