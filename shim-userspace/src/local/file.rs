//! A data file of a device whose driver runs in this process, with the
//! kernel data fd's semantics: the core's read/write loop
//! ([`file_ops`]) with the device lock, the copies and the sleeps supplied
//! here.

use std::io::{self, Read, Write};
use std::sync::{Arc, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use mlx5vf_core::device::file_ops::{
    self, Blocking, CopyDest, CopySource, IoError, IoOutcome, ReadPort, WaitFor, WritePort,
};
use mlx5vf_core::device::{Device, DeviceError, FileId};
use mlx5vf_core::errno::Errno;
use mlx5vf_core::hal::Hal;
use mlx5vf_core::save::PrecopyInfo;

use super::Shared;
use crate::backend::{DataFile, io_error, save_failed_error};

/// A saving or resuming file of a device driven in this process.
pub struct LocalFile<H: Hal> {
    shared: Arc<Shared<H>>,
    file: FileId,
    saving: bool,
    nonblocking: bool,
}

impl<H: Hal + Send> LocalFile<H> {
    pub(crate) fn new(shared: Arc<Shared<H>>, file: FileId, saving: bool) -> Self {
        Self {
            shared,
            file,
            saving,
            nonblocking: false,
        }
    }

    /// Moves up to `max` bytes to `sink` (inline bytes, or a buffer's bytes
    /// straight from its memory), as `read()` does. A failing sink's error
    /// wins over the count.
    fn pump(&mut self, max: u64, sink: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<u64> {
        if !self.saving {
            return Err(io_error(DeviceError::NoFile));
        }
        let mut port = Reader {
            shared: &self.shared,
            guard: None,
            sink,
            sink_error: None,
        };
        let len = usize::try_from(max).unwrap_or(usize::MAX);
        let outcome = file_ops::read(&mut port, self.file, len, self.blocking());
        if let Some(e) = port.sink_error.take() {
            return Err(e);
        }
        drop(port);
        if let IoOutcome::Failed(IoError::Device(DeviceError::FileFailed)) = outcome {
            if let Some(why) = self.shared.lock().save_failure(self.file) {
                return Err(save_failed_error(why));
            }
        }
        outcome_result(outcome).map(|n| n as u64)
    }

    fn blocking(&self) -> Blocking {
        if self.nonblocking {
            Blocking::NonBlocking
        } else {
            Blocking::Blocking
        }
    }
}

/// The device's lock, taken when the core asks for the device.
fn locked<'a, 'g, H: Hal>(
    shared: &'a Shared<H>,
    guard: &'g mut Option<MutexGuard<'a, Device<H>>>,
) -> &'g mut Device<H> {
    guard.get_or_insert_with(|| shared.lock())
}

/// Sleeps on the device's condition, as the kernel's `wait_event`.
fn sleep<'a, H: Hal>(shared: &'a Shared<H>, guard: &mut Option<MutexGuard<'a, Device<H>>>) {
    let g = guard.take().unwrap_or_else(|| shared.lock());
    *guard = Some(shared.wait(g));
}

/// A read's side of the device: the lock (dropped for each copy, so SAVE
/// completions go on meanwhile), the copy into `sink`, the sleep.
struct Reader<'a, 's, H: Hal> {
    shared: &'a Shared<H>,
    guard: Option<MutexGuard<'a, Device<H>>>,
    sink: &'s mut dyn FnMut(&[u8]) -> io::Result<()>,
    /// The sink's own error, which `read()` returns as it is.
    sink_error: Option<io::Error>,
}

impl<H: Hal> ReadPort<H> for Reader<'_, '_, H> {
    fn device(&mut self) -> &mut Device<H> {
        locked(self.shared, &mut self.guard)
    }

    fn copy_out(&mut self, _at: usize, src: CopySource<'_>) -> Result<usize, Errno> {
        self.guard = None;
        let copied = match src {
            CopySource::Bytes(bytes) => Ok((self.sink)(bytes)),
            CopySource::Buffer {
                buffer,
                offset,
                len,
            } => {
                let mut sunk = Ok(());
                let sink = &mut self.sink;
                self.shared
                    .pool
                    .with_bytes(buffer, offset, len as u64, &mut |s| sunk = sink(s))
                    .map(|()| sunk)
            }
        };
        self.guard = Some(self.shared.lock());
        match copied? {
            Ok(()) => Ok(src.len()),
            Err(e) => {
                self.sink_error = Some(e);
                Err(Errno::EIO)
            }
        }
    }

    fn wait(&mut self, _why: WaitFor) -> bool {
        sleep(self.shared, &mut self.guard);
        true
    }
}

/// A write's side of the device: the lock, held for the whole write as the
/// kernel's write holds the state mutex (a LOAD may run in the middle), and
/// the copy from `data`.
struct Writer<'a, H: Hal> {
    shared: &'a Shared<H>,
    guard: Option<MutexGuard<'a, Device<H>>>,
    data: &'a [u8],
}

impl<H: Hal> WritePort<H> for Writer<'_, H> {
    fn device(&mut self) -> &mut Device<H> {
        locked(self.shared, &mut self.guard)
    }

    fn copy_in(&mut self, at: usize, dst: CopyDest<'_>) -> Result<usize, Errno> {
        let src = self.data.get(at..).unwrap_or_default();
        let n = dst.len().min(src.len());
        let src = src.get(..n).unwrap_or_default();
        match dst {
            CopyDest::Bytes(d) => {
                d.get_mut(..n).ok_or(Errno::EFAULT)?.copy_from_slice(src);
            }
            CopyDest::Buffer { buffer, offset, .. } => {
                self.shared
                    .pool
                    .with_bytes_mut(buffer, offset, n as u64, &mut |d| {
                        for (d, s) in d.iter_mut().zip(src) {
                            *d = *s;
                        }
                    })?;
            }
        }
        Ok(n)
    }

    fn wait(&mut self, _why: WaitFor) -> bool {
        sleep(self.shared, &mut self.guard);
        true
    }
}

/// What a read or write returns for the core's outcome.
fn outcome_result(outcome: IoOutcome) -> io::Result<usize> {
    match outcome {
        IoOutcome::Done(n) => Ok(n),
        // Blocking ports sleep themselves; this is the non-blocking answer.
        IoOutcome::Wait(_) => Err(io_error(DeviceError::WouldBlock)),
        IoOutcome::Failed(IoError::Device(e)) => Err(io_error(e)),
        IoOutcome::Failed(IoError::Copy(e)) => Err(io::Error::from_raw_os_error(e.code())),
    }
}

impl<H: Hal + Send> Read for LocalFile<H> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let mut at = 0usize;
        let n = self.pump(out.len() as u64, &mut |bytes| {
            let dst = out
                .get_mut(at..at + bytes.len())
                .ok_or_else(|| io::Error::other("segment larger than asked"))?;
            dst.copy_from_slice(bytes);
            at += bytes.len();
            Ok(())
        })?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }
}

impl<H: Hal + Send> Write for LocalFile<H> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.saving {
            return Err(io_error(DeviceError::NoFile));
        }
        let blocking = self.blocking();
        let mut port = Writer {
            shared: &self.shared,
            guard: None,
            data,
        };
        outcome_result(file_ops::write(&mut port, self.file, data.len(), blocking))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<H: Hal + Send> DataFile for LocalFile<H> {
    fn precopy_info(&mut self) -> io::Result<PrecopyInfo> {
        let file = self.file;
        self.shared
            .retry(|d| d.precopy_info(file))
            .map_err(io_error)
    }

    fn wait_readable(&mut self, timeout: Duration) -> io::Result<bool> {
        let deadline = Instant::now() + timeout;
        let mut dev = self.shared.lock();
        loop {
            if dev.poll(self.file).readable {
                return Ok(true);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            dev = self
                .shared
                .changed
                .wait_timeout(dev, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn set_nonblocking(&mut self, on: bool) -> io::Result<()> {
        self.nonblocking = on;
        Ok(())
    }

    fn send_to(&mut self, out: &mut dyn Write, max: u64) -> io::Result<u64> {
        self.pump(max, &mut |bytes| out.write_all(bytes))
    }
}

impl<H: Hal> Drop for LocalFile<H> {
    fn drop(&mut self) {
        self.shared.lock().release(self.file);
    }
}
