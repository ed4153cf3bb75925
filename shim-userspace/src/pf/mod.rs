//! A PF this process drives itself: its command queue through BAR0 and DMA
//! memory, the function brought up and torn down here, and
//! [`mlx5vf_core::device::Device`] running on top for one of its VFs — what
//! `mlx5_core` and `mlx5-vfio-pci` do together under Linux, for a PF bound
//! to `vfio-pci` instead.
//!
//! The pieces: [`memory`] (DMA regions, IOVAs), [`transport`] (what the
//! queue needs from a device), [`port`] (the command queue: post, wait,
//! health, asynchronous SAVE/LOAD), [`bringup`] (the function's lifecycle
//! and firmware pages), [`hal`] (the core's `Hal` on top), and
//! [`CmdqDevice`], the [`MigrationDevice`] the tool migrates. Transports:
//! the register-level model in this process (`sim:…,transport=cmdq`, in
//! [`sim`]) and a real PF through VFIO ([`crate::vfio_pf`]).

pub mod bringup;
mod error;
pub mod hal;
pub mod memory;
pub mod port;
#[cfg(feature = "sim")]
pub mod sim;
pub mod transport;

use std::fmt;
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex, PoisonError};

use mlx5vf_core::cmdq::Checksums;
use mlx5vf_core::device::{Device, DeviceError, PROBE_SCRATCH_LEN};
use mlx5vf_core::vfio::{MigState, MigrationFlags, Session};

use crate::backend::{
    DataFile, DriverError, DriverOptions, MigrationDevice, Stats, StreamFormat, io_error,
};
use crate::local::{BufferAccess, LocalFile, Shared};
pub use error::PfError;
use hal::CmdqHal;
use memory::DmaSpace;
use port::{AsyncDone, Port, PortConfig};
use transport::Transport;

/// A driver error with what the command queue said about it (the errno
/// stays the driver's: [`crate::backend::errno_of`] finds it).
#[derive(Debug)]
pub struct Detailed {
    driver: DriverError,
    detail: String,
}

impl fmt::Display for Detailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.driver, self.detail)
    }
}

impl std::error::Error for Detailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.driver)
    }
}

/// What the command queue said about an error, if it carries that
/// ([`Detailed`]).
pub fn queue_detail(e: &io::Error) -> Option<&str> {
    let mut inner: Option<&(dyn std::error::Error + 'static)> = e.get_ref().map(|i| i as _);
    while let Some(err) = inner {
        if let Some(d) = err.downcast_ref::<Detailed>() {
            return Some(&d.detail);
        }
        inner = err.source();
    }
    None
}

/// A VF of a PF driven through its command queue.
pub struct CmdqDevice<T: Transport> {
    spec: String,
    vf: u16,
    shared: Arc<Shared<CmdqHal<T>>>,
    port: Arc<Port<T>>,
    /// The function's lifecycle until it is torn down.
    lifecycle: Mutex<Option<bringup::Lifecycle>>,
}

impl<T: Transport> CmdqDevice<T> {
    /// Takes over the PF behind `transport` (queue, bring-up, VF `vf`
    /// enabled and given its pages) and attaches the driver to VF `vf`.
    ///
    /// # Errors
    /// The step that failed; whatever was set up is torn down first.
    pub fn open(
        spec: &str,
        transport: Arc<T>,
        space: Arc<DmaSpace>,
        vf: u16,
        opts: &DriverOptions,
        cfg: PortConfig,
    ) -> io::Result<Self> {
        let port = Arc::new(Port::open(transport, Arc::clone(&space), cfg)?);
        let mut lifecycle = bringup::bring_up(&port, vf, cfg.checksums)?;
        let hal = CmdqHal::new(Arc::clone(&port), !opts.sync_load);
        let mut dev = Device::new(hal, opts.config());
        let mut scratch = vec![0u8; PROBE_SCRATCH_LEN];
        if let Err(e) = dev.probe(vf, &mut scratch) {
            let err = detailed(&port, e);
            drop(dev);
            let _ = bringup::tear_down(&port, &mut lifecycle);
            port.shut_down();
            return Err(err);
        }
        let pool: Arc<dyn BufferAccess> = space;
        let shared = Arc::new(Shared::new(dev, pool));
        let weak = Arc::downgrade(&shared);
        port.set_deliver(Arc::new(move |done, out| {
            if let Some(sh) = weak.upgrade() {
                let mut dev = sh.lock();
                // A stale completion is refused by the device and changes
                // nothing; there is no one to report it to.
                let _ = match done {
                    AsyncDone::Save(token) => dev.handle_save_completion(token, &out),
                    AsyncDone::Load(token) => dev.handle_load_completion(token, &out),
                };
                drop(dev);
                sh.changed.notify_all();
            }
        }));
        Ok(Self {
            spec: spec.to_owned(),
            vf,
            shared,
            port,
            lifecycle: Mutex::new(Some(lifecycle)),
        })
    }

    /// The command queue (counters, the transport).
    pub fn port(&self) -> &Arc<Port<T>> {
        &self.port
    }

    /// The transport (the model's fault knobs, in tests).
    pub fn transport(&self) -> &Arc<T> {
        &self.port.inner().transport
    }

    /// Pages firmware holds now.
    pub fn fw_pages(&self) -> usize {
        self.lifecycle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map_or(0, bringup::Lifecycle::fw_pages)
    }

    /// Closes the driver and tears the PF down now, reporting how teardown
    /// went (dropping the device does the same, silently).
    ///
    /// # Errors
    /// The first teardown step that failed, and any DMA memory kept back
    /// because the device may still reach it ([`port::Quarantined`]: an
    /// unmap the IOMMU refused, pages firmware never returned).
    pub fn close(self) -> io::Result<()> {
        self.tear_down()
    }

    /// Closes the driver and tears the PF down, once.
    fn tear_down(&self) -> io::Result<()> {
        let Some(mut lc) = self
            .lifecycle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return Ok(());
        };
        self.shared.close();
        // A LOAD still in flight completes (or times out) first.
        while self.port.asyncs_in_flight() > 0 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let r = bringup::tear_down(&self.port, &mut lc).map_err(io::Error::from);
        self.port.shut_down();
        // Memory the device may still reach is kept until the port and its
        // transport go (when this device is dropped): say so.
        let kept = self.port.quarantined();
        match r {
            _ if kept.is_empty() => r,
            Ok(()) => Err(io::Error::other(kept.to_string())),
            Err(e) => Err(io::Error::new(e.kind(), format!("{e}; {kept}"))),
        }
    }
}

/// A data file whose errors carry the queue's last failure: a SAVE that
/// timed out shows as such, not only as the file's `ENODEV`.
struct CmdqFile<T: Transport> {
    file: LocalFile<CmdqHal<T>>,
    port: Arc<Port<T>>,
}

impl<T: Transport> CmdqFile<T> {
    fn explain<R>(&self, r: io::Result<R>) -> io::Result<R> {
        r.map_err(
            |e| match (crate::backend::driver_error(&e), self.port.take_detail()) {
                (Some(d), Some(detail)) => io::Error::new(
                    e.kind(),
                    Detailed {
                        driver: DriverError(d),
                        detail,
                    },
                ),
                _ => e,
            },
        )
    }
}

impl<T: Transport> Read for CmdqFile<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let r = self.file.read(buf);
        self.explain(r)
    }
}

impl<T: Transport> Write for CmdqFile<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let r = self.file.write(buf);
        self.explain(r)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl<T: Transport> DataFile for CmdqFile<T> {
    fn precopy_info(&mut self) -> io::Result<mlx5vf_core::save::PrecopyInfo> {
        let r = self.file.precopy_info();
        self.explain(r)
    }

    fn wait_readable(&mut self, timeout: std::time::Duration) -> io::Result<bool> {
        self.file.wait_readable(timeout)
    }

    fn set_nonblocking(&mut self, on: bool) -> io::Result<()> {
        self.file.set_nonblocking(on)
    }

    fn send_to(&mut self, out: &mut dyn Write, max: u64) -> io::Result<u64> {
        let r = self.file.send_to(out, max);
        self.explain(r)
    }
}

/// A driver error, with the queue's last failure when there is one.
fn detailed<T: Transport>(port: &Port<T>, e: DeviceError) -> io::Error {
    let plain = io_error(e);
    match port.take_detail() {
        Some(detail) => io::Error::new(
            plain.kind(),
            Detailed {
                driver: DriverError(e),
                detail,
            },
        ),
        None => plain,
    }
}

impl<T: Transport> MigrationDevice for CmdqDevice<T> {
    fn describe(&self) -> String {
        self.spec.clone()
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
            .map_err(|e| detailed(&self.port, e))?;
        self.shared.changed.notify_all();
        Ok(file.map(|f| {
            Box::new(CmdqFile {
                file: LocalFile::new(Arc::clone(&self.shared), f, f.kind() == Session::Saving),
                port: Arc::clone(&self.port),
            }) as Box<dyn DataFile>
        }))
    }

    fn data_size(&mut self) -> io::Result<u64> {
        self.shared
            .lock()
            .data_size()
            .map_err(|e| detailed(&self.port, e))
    }

    fn reset(&mut self) -> io::Result<()> {
        let mut dev = self.shared.lock();
        self.port.inner().transport.reset_vf(self.vf)?;
        dev.handle_reset();
        drop(dev);
        self.shared.changed.notify_all();
        Ok(())
    }

    fn stream_format(&self) -> StreamFormat {
        StreamFormat::Mlx5
    }

    fn digest(&self) -> Option<String> {
        self.port.inner().transport.digest(self.vf)
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

impl<T: Transport> Drop for CmdqDevice<T> {
    fn drop(&mut self) {
        let _ = self.tear_down();
    }
}

/// The queue settings a spec asks for: checksums and a command timeout.
pub fn port_config(checksums: bool, timeout: Option<std::time::Duration>) -> PortConfig {
    PortConfig {
        checksums: if checksums {
            Checksums::On
        } else {
            Checksums::Off
        },
        command_timeout: timeout,
        ..PortConfig::default()
    }
}
