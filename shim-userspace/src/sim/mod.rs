//! The built-in simulated device: an mlx5 PF with one migratable VF, its
//! firmware ([`mlx5vf_sim`]) answering the driver ([`mlx5vf_core`]) running
//! in this process.

mod dirty;
pub mod hal;
mod report;

use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use mlx5vf_core::device::{Device, PROBE_SCRATCH_LEN};
use mlx5vf_core::vfio::{MigState, MigrationFlags, Session};
use mlx5vf_sim::firmware::{Firmware, FirmwareConfig};
use mlx5vf_sim::spec::SimSpec;
use mlx5vf_sim::timing::TimingModel;

use crate::backend::{DataFile, DriverOptions, MigrationDevice, Stats, StreamFormat, io_error};
use crate::dma_logging::DmaLogging;
use crate::local::{LocalFile, Shared};
use crate::timeline::Timeline;
pub use dirty::DirtyLog;
use hal::SimHal;

/// A data file of a [`SimDevice`].
pub type SimFile = LocalFile<SimHal>;

/// A simulated VF with the driver attached.
pub struct SimDevice {
    spec: String,
    shared: Arc<Shared<SimHal>>,
    fw: Arc<Mutex<Firmware>>,
    /// DMA logging through [`MigrationDevice::dma_logging`], made on first use.
    dma_log: Option<DirtyLog>,
}

impl SimDevice {
    /// Builds the simulated PF from `parsed`, attaches the driver to VF 0 and
    /// probes it.
    ///
    /// # Errors
    /// The firmware config is invalid, the firmware thread did not start, or
    /// probing failed.
    pub fn open(spec: &str, parsed: &SimSpec, opts: &DriverOptions) -> io::Result<Self> {
        let fw = Firmware::new(&FirmwareConfig::from_spec(parsed))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("sim: {e}")))?;
        let fw = Arc::new(Mutex::new(fw));
        let mut hal = SimHal::new(Arc::clone(&fw), TimingModel::from_spec(parsed))?;
        if opts.sync_load {
            hal = hal.with_sync_load();
        }
        let pool = hal.pool();
        let mut dev = Device::new(hal, opts.config());
        let mut scratch = vec![0u8; PROBE_SCRATCH_LEN];
        dev.probe(0, &mut scratch).map_err(io_error)?;
        let shared = Arc::new(Shared::new(dev, pool));
        let weak = Arc::downgrade(&shared);
        shared.lock().hal().set_deliver(Arc::new(move |done, out| {
            if let Some(sh) = weak.upgrade() {
                // A stale completion is refused by the device and changes
                // nothing; there is no one to report it to.
                let mut dev = sh.lock();
                let _ = match done {
                    hal::Completion::Save(token) => dev.handle_save_completion(token, &out),
                    hal::Completion::Load(token) => dev.handle_load_completion(token, &out),
                };
                drop(dev);
                sh.changed.notify_all();
            }
        }));
        Ok(Self {
            spec: spec.to_owned(),
            shared,
            fw,
            dma_log: None,
        })
    }

    /// The firmware (tests use it to inject faults).
    pub fn firmware(&self) -> Arc<Mutex<Firmware>> {
        Arc::clone(&self.fw)
    }
}

impl MigrationDevice for SimDevice {
    fn describe(&self) -> String {
        self.spec.clone()
    }

    fn dma_logging(&mut self) -> io::Result<&mut dyn DmaLogging> {
        let (shared, fw) = (Arc::clone(&self.shared), Arc::clone(&self.fw));
        Ok(self
            .dma_log
            .get_or_insert_with(|| DirtyLog::new(shared, fw)))
    }

    fn set_timeline(&mut self, timeline: Arc<Timeline>) {
        self.shared.lock().hal().set_timeline(timeline);
    }

    fn migration_flags(&self) -> MigrationFlags {
        self.shared.lock().migration_flags()
    }

    fn state(&mut self) -> io::Result<MigState> {
        Ok(self.shared.lock().state())
    }

    fn set_state(&mut self, target: MigState) -> io::Result<Option<Box<dyn DataFile>>> {
        let file = self
            .shared
            .retry(|d| d.set_state(target).map_err(|e| e.error))
            .map_err(io_error)?;
        self.shared.changed.notify_all();
        Ok(file.map(|f| {
            Box::new(SimFile::new(
                Arc::clone(&self.shared),
                f,
                f.kind() == Session::Saving,
            )) as Box<dyn DataFile>
        }))
    }

    fn data_size(&mut self) -> io::Result<u64> {
        self.shared.lock().data_size().map_err(io_error)
    }

    fn reset(&mut self) -> io::Result<()> {
        // The function-level reset first (the VF runs again, its save and
        // load sessions end; its objects stay), then the driver's reset_done.
        // Lock order as everywhere: device, then firmware.
        let mut dev = self.shared.lock();
        self.fw
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .reset_vf(0);
        dev.handle_reset();
        drop(dev);
        self.shared.changed.notify_all();
        Ok(())
    }

    fn stream_format(&self) -> StreamFormat {
        StreamFormat::Mlx5
    }

    fn digest(&self) -> Option<String> {
        let fw = self.fw.lock().unwrap_or_else(PoisonError::into_inner);
        fw.digest(0).map(|d| d.to_string())
    }

    fn stats(&self) -> Stats {
        let dev = self.shared.lock();
        Stats {
            peak_buffer_bytes: dev.stats().peak_buffer_bytes,
            chunk_size: Some(dev.chunk_size()),
            firmware_speed: dev
                .firmware_speed()
                .map(|s| (s.latency_ns, s.bytes_per_sec)),
        }
    }
}

impl Drop for SimDevice {
    fn drop(&mut self) {
        // Logging stops (and its firmware objects go) while the device is up.
        drop(self.dma_log.take());
        self.shared.close();
    }
}
