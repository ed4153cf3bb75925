//! The simulated device's data file, with the kernel data fd's semantics.

use std::io::{self, Read, Write};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use mlx5vf_core::device::{DeviceError, FileId, ReadSegment, WritePlan};
use mlx5vf_core::save::PrecopyInfo;

use super::Shared;
use crate::backend::{DataFile, io_error};

/// A saving or resuming file of a [`SimDevice`](super::SimDevice).
pub struct SimFile {
    shared: Arc<Shared>,
    file: FileId,
    saving: bool,
    nonblocking: bool,
}

impl SimFile {
    pub(super) fn new(shared: Arc<Shared>, file: FileId, saving: bool) -> Self {
        Self {
            shared,
            file,
            saving,
            nonblocking: false,
        }
    }

    /// Moves up to `max` bytes: each segment goes to `sink` (inline bytes, or
    /// a buffer's bytes straight from its memory). Returns bytes moved, as
    /// `read()` does: the first segment's error, else what was moved.
    fn pump(&mut self, max: u64, sink: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<u64> {
        if !self.saving {
            return Err(io_error(DeviceError::NoFile));
        }
        let mut done = 0u64;
        let mut dev = self.shared.lock();
        while done < max {
            match dev.read_begin(self.file, max - done) {
                Ok(ReadSegment::Eof) => {
                    let _ = dev.read_end(self.file, 0);
                    break;
                }
                Ok(seg @ ReadSegment::Inline { .. }) => {
                    let bytes = seg.inline_bytes().unwrap_or_default();
                    let r = sink(bytes);
                    let n = if r.is_ok() { bytes.len() as u64 } else { 0 };
                    dev.read_end(self.file, n).map_err(io_error)?;
                    r?;
                    done += n;
                }
                Ok(ReadSegment::Buffer {
                    buffer,
                    offset,
                    len,
                }) => {
                    // Copy without the device lock, so SAVE completions (and
                    // the next chunk's SAVE) go on meanwhile; the buffer is
                    // leased to us until read_end.
                    drop(dev);
                    let r = match self.shared.pool.get(buffer) {
                        Some(b) => b
                            .with_bytes(offset, len, |s| sink(s))
                            .map_err(|k| io_error(DeviceError::Platform(k)))
                            .and_then(|r| r),
                        None => Err(io_error(DeviceError::NoFile)),
                    };
                    dev = self.shared.lock();
                    let n = if r.is_ok() { len } else { 0 };
                    dev.read_end(self.file, n).map_err(io_error)?;
                    r?;
                    done += n;
                }
                Err(DeviceError::WouldBlock) if done == 0 && !self.nonblocking => {
                    dev = self.shared.wait(dev);
                }
                Err(e) if done == 0 => return Err(io_error(e)),
                Err(_) => break,
            }
        }
        Ok(done)
    }
}

impl Read for SimFile {
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

impl Write for SimFile {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.saving {
            return Err(io_error(DeviceError::NoFile));
        }
        let file = self.file;
        let pool = Arc::clone(&self.shared.pool);
        let mut done = 0usize;
        // Writes run under the device lock, as the kernel's write holds the
        // state mutex: a LOAD may run in the middle.
        self.shared
            .retry(|dev| {
                while done < data.len() {
                    let rest = data.get(done..).unwrap_or_default();
                    match dev.write_plan(file, rest.len() as u64)? {
                        WritePlan::Small { max } => {
                            done += dev.write_small(file, rest.get(..max).unwrap_or(rest))?;
                        }
                        WritePlan::Buffer {
                            buffer,
                            offset,
                            len,
                        } => {
                            let n = usize::try_from(len).unwrap_or(usize::MAX).min(rest.len());
                            let b = pool.get(buffer).ok_or(DeviceError::NoFile)?;
                            b.with_bytes_mut(offset, n as u64, |dst| {
                                dst.copy_from_slice(rest.get(..n).unwrap_or_default());
                            })
                            .map_err(DeviceError::Platform)?;
                            dev.write_commit(file, n as u64)?;
                            done += n;
                        }
                        WritePlan::Skip { len } => {
                            let n = usize::try_from(len).unwrap_or(usize::MAX).min(rest.len());
                            dev.write_commit(file, n as u64)?;
                            done += n;
                        }
                    }
                }
                Ok(())
            })
            .map_err(io_error)?;
        Ok(done)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl DataFile for SimFile {
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

impl Drop for SimFile {
    fn drop(&mut self) {
        self.shared.lock().release(self.file);
    }
}
