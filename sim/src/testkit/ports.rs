//! A shim's `read()` and `write()` over a test device: the core's
//! [`file_ops::read`] and [`file_ops::write`] through ports whose copies
//! go to and from test memory, may be cut short, and check the plans the
//! core hands them.

use std::vec::Vec;

use mlx5vf_core::device::file_ops::{
    self, Blocking, CopyDest, CopySource, IoError, IoOutcome, ReadPort, WaitFor, WritePort,
};
use mlx5vf_core::device::{Device, DeviceError, FileId};
use mlx5vf_core::errno::Errno;

use super::{Platform, complete_one};

/// The read side: the device (the "lock" is `&mut`), the reader's buffer
/// (appended to), and how much of each copy succeeds.
struct Reader<'a, H: Platform, C> {
    dev: &'a mut Device<H>,
    out: &'a mut Vec<u8>,
    /// `out.len()` when the call began: byte `at` of the call is
    /// `out[start + at]`.
    start: usize,
    /// Bytes the call asked for.
    max: usize,
    copy: C,
}

impl<H: Platform, C: FnMut(u64) -> u64> ReadPort<H> for Reader<'_, H, C> {
    fn device(&mut self) -> &mut Device<H> {
        self.dev
    }

    fn copy_out(&mut self, at: usize, src: CopySource<'_>) -> Result<usize, Errno> {
        assert_eq!(self.start + at, self.out.len(), "read copies out of order");
        let len = src.len();
        let kind = match src {
            CopySource::Bytes(_) => "inline",
            CopySource::Buffer { .. } => "buffer",
        };
        // `file_ops::read` cuts buffer segments to what is left of the call,
        // so only an inline segment can show the device's mistake here.
        assert!(
            at.checked_add(len).is_some_and(|end| end <= self.max),
            "{kind} segment longer than asked"
        );
        // CAST: usize <-> u64 is lossless here (the result is at most `len`).
        let n = (self.copy)(len as u64).min(len as u64) as usize;
        if n == 0 && len > 0 {
            // A copy that faults before its first byte.
            return Err(Errno::EFAULT);
        }
        match src {
            CopySource::Bytes(b) => self.out.extend_from_slice(&b[..n]),
            CopySource::Buffer { buffer, offset, .. } => {
                // Panics when the range is outside the buffer.
                let bytes = self.dev.hal().test_hal().range(buffer, offset, len as u64);
                self.out.extend_from_slice(&bytes[..n]);
            }
        }
        Ok(n)
    }
}

/// Reads once from saving file `file` into `out`, as a shim's blocking
/// `read()` does: as many segments as fit in `max`. Returns bytes read (0 at
/// end of stream), or the error of the first segment (`WouldBlock` where a
/// blocking reader would sleep until a SAVE completes: the caller completes
/// one and reads again).
///
/// # Errors
/// What the device said for the first segment.
///
/// # Panics
/// When the device hands out bytes outside its buffer, more than asked, or
/// out of order.
pub fn read<H: Platform>(
    dev: &mut Device<H>,
    file: FileId,
    max: u64,
    out: &mut Vec<u8>,
) -> Result<u64, DeviceError> {
    read_copying(dev, file, max, out, |n| n)
}

/// [`read()`], copying only `copy(len)` bytes of each segment of `len`, as
/// of a user buffer that faults after them (a short copy ends the read).
///
/// # Errors
/// As [`read()`].
///
/// # Panics
/// As [`read()`], and when `copy` copies nothing of the first segment (see
/// below).
pub fn read_copying<H: Platform>(
    dev: &mut Device<H>,
    file: FileId,
    max: u64,
    out: &mut Vec<u8>,
    copy: impl FnMut(u64) -> u64,
) -> Result<u64, DeviceError> {
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    let start = out.len();
    let mut port = Reader {
        dev,
        out,
        start,
        max,
        copy,
    };
    match file_ops::read(&mut port, file, max, Blocking::Blocking) {
        // CAST: usize -> u64 is lossless.
        IoOutcome::Done(n) => Ok(n as u64),
        IoOutcome::Wait(_) => Err(DeviceError::WouldBlock),
        IoOutcome::Failed(IoError::Device(e)) => Err(e),
        // `copy` returned 0 for the first segment: the read's EFAULT. No
        // answer of this function fits it: `Ok(0)` is end of stream (callers
        // then check the stream ended in STOP_COPY and is complete) and an
        // `Err` is the device's refusal (callers check it against the
        // device's state), while a fault leaves the stream where it was.
        // Callers never fault the first byte (their `copy` is `|n| n` or
        // `n.min(limit)` with `limit >= 1`), so this is a harness misuse.
        IoOutcome::Failed(IoError::Copy(e)) => {
            panic!(
                "read: `copy` copied nothing of the first segment ({e:?}); callers copy >= 1 byte"
            )
        }
    }
}

/// How [`write()`]'s copies go: how much of each copy succeeds, and which
/// fault.
pub trait WriteStyle {
    /// Bytes to copy of a copy of `len` (at least 1 is used; more than `len`
    /// is clamped): a short copy, as of a user buffer that faults after them.
    /// Skipped payloads are not copied, so not asked about.
    fn take(&mut self, len: u64) -> u64;
    /// Whether this copy faults before copying anything. `write()` ends
    /// there (`EFAULT` if it consumed nothing yet) and [`write()`] calls it
    /// again.
    fn abandon(&mut self) -> bool {
        false
    }
    /// Calls in a row that may take nothing (a count of 0 or a faulted
    /// copy) before [`write()`] gives up: a writer that keeps calling
    /// without progress spins forever.
    fn patience(&self) -> u32 {
        1000
    }
}

/// Takes everything offered, and lets the device return 0 a while.
#[derive(Clone, Copy, Debug, Default)]
pub struct Greedy;

impl WriteStyle for Greedy {
    fn take(&mut self, len: u64) -> u64 {
        len
    }
}

/// Takes everything offered, and expects every call to take something:
/// with nothing cut short, a count of 0 without an error is a core bug.
#[derive(Clone, Copy, Debug, Default)]
pub struct Strict;

impl WriteStyle for Strict {
    fn take(&mut self, len: u64) -> u64 {
        len
    }

    fn patience(&self) -> u32 {
        1
    }
}

/// Whether a write that must wait for a SAVE sleeps until it completes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnWait {
    /// Return [`DeviceError::SaveInFlight`] (bytes before were consumed).
    Fail,
    /// Complete the SAVE and go on, as the sleep of a blocking `write()`
    /// ends when that SAVE completes.
    CompleteSave,
}

/// The write side: the device, the writer's bytes, how much of each copy
/// succeeds, and whether waiting completes a SAVE.
struct Writer<'a, 'b, H: Platform, S> {
    dev: &'a mut Device<H>,
    bytes: &'b [u8],
    style: &'a mut S,
    on_wait: OnWait,
    waits: u32,
}

impl<H: Platform, S: WriteStyle> WritePort<H> for Writer<'_, '_, H, S> {
    fn device(&mut self) -> &mut Device<H> {
        self.dev
    }

    fn copy_in(&mut self, at: usize, dst: CopyDest<'_>) -> Result<usize, Errno> {
        let len = dst.len();
        let kind = match dst {
            CopyDest::Bytes(_) => "small",
            CopyDest::Buffer { .. } => "buffer",
        };
        // `file_ops::write` cuts plans to what is left of the call: this
        // checks its cut.
        assert!(
            at.checked_add(len)
                .is_some_and(|end| end <= self.bytes.len()),
            "{kind} plan larger than offered"
        );
        if self.style.abandon() {
            // The copy faults before its first byte.
            return Err(Errno::EFAULT);
        }
        // CAST: usize <-> u64 is lossless here (the result is at most `len`).
        let n = self
            .style
            .take(len as u64)
            .clamp(1, len.max(1) as u64)
            .min(len as u64) as usize;
        let src = &self.bytes[at..at + n];
        match dst {
            CopyDest::Bytes(b) => b[..n].copy_from_slice(src),
            CopyDest::Buffer { buffer, offset, .. } => {
                // Panics when the plan names bytes outside the buffer.
                self.dev
                    .hal_mut()
                    .test_hal_mut()
                    .range_mut(buffer, offset, n as u64)
                    .copy_from_slice(src);
            }
        }
        Ok(n)
    }

    fn wait(&mut self, why: WaitFor) -> bool {
        // A blocking writer sleeps until firmware finishes a LOAD it started
        // itself (no test decides that); waiting for a SAVE is the test's
        // choice.
        if self.on_wait == OnWait::Fail && why != WaitFor::LoadCompletion {
            return false;
        }
        assert!(
            complete_one(self.dev),
            "asked to wait for nothing in flight ({why:?})"
        );
        self.waits += 1;
        true
    }
}

/// Writes all of `bytes` to resuming file `file`, as a shim's `write()`
/// does, called again after each short count, expecting each call to take
/// something.
///
/// # Errors
/// The device's error. [`DeviceError::SaveInFlight`] when a LOAD must wait
/// for a SAVE before anything more goes in (the bytes before it were
/// consumed; the caller completes it and writes the rest).
///
/// # Panics
/// When a copy names bytes outside the device's buffer or beyond those
/// offered, or a call takes nothing without an error.
pub fn write<H: Platform>(
    dev: &mut Device<H>,
    file: FileId,
    bytes: &[u8],
) -> Result<(), DeviceError> {
    write_styled(dev, file, bytes, &mut Strict, OnWait::Fail, &mut 0).map(|_| ())
}

/// As [`write()`], but when the write must wait for a SAVE it completes that
/// SAVE and goes on, as a shim's blocking `write()` does. Returns the number
/// of waits.
///
/// # Errors
/// The device's error.
///
/// # Panics
/// As [`write()`], and when the device waits with no SAVE in flight.
pub fn write_waiting<H: Platform>(
    dev: &mut Device<H>,
    file: FileId,
    bytes: &[u8],
) -> Result<u32, DeviceError> {
    write_styled(dev, file, bytes, &mut Strict, OnWait::CompleteSave, &mut 0)
}

/// The general [`write()`]: copies as `style` says, waits as `on_wait` says,
/// and adds the bytes the device accepted to `accepted` (on an error, those
/// of the calls before the failing one). Returns the number of waits.
///
/// # Errors
/// As [`write()`].
///
/// # Panics
/// As [`write()`], and when more calls in a row than `style`'s patience
/// take nothing.
pub fn write_styled<H: Platform>(
    dev: &mut Device<H>,
    file: FileId,
    mut bytes: &[u8],
    style: &mut impl WriteStyle,
    on_wait: OnWait,
    accepted: &mut usize,
) -> Result<u32, DeviceError> {
    let patience = style.patience();
    let mut port = Writer {
        dev,
        bytes,
        style,
        on_wait,
        waits: 0,
    };
    let mut idle = 0u32;
    while !bytes.is_empty() {
        port.bytes = bytes;
        let taken = match file_ops::write(&mut port, file, bytes.len(), Blocking::Blocking) {
            IoOutcome::Done(0) => {
                idle += 1;
                assert!(
                    idle < patience,
                    "write() consumed nothing of {} bytes without an error, {idle} times",
                    bytes.len()
                );
                continue;
            }
            // Short (a LOAD waits for a SAVE, the step limit, a short copy):
            // call again; the next call waits first.
            IoOutcome::Done(n) => n,
            // Nothing was consumed in this call: the LOAD of an image waits
            // for a SAVE in flight. A port that sleeps does so itself.
            IoOutcome::Wait(why) => {
                assert_eq!(
                    on_wait,
                    OnWait::Fail,
                    "write() returned Wait to a port that waits"
                );
                return Err(if why == WaitFor::LoadCompletion {
                    DeviceError::LoadInFlight
                } else {
                    DeviceError::SaveInFlight
                });
            }
            IoOutcome::Failed(IoError::Device(e)) => return Err(e),
            // An abandoned copy (a fault before the first byte of the
            // call): call again.
            IoOutcome::Failed(IoError::Copy(e)) => {
                idle += 1;
                assert!(
                    idle < patience,
                    "write plans abandoned {idle} times (last {e:?})"
                );
                continue;
            }
        };
        idle = 0;
        bytes = &bytes[taken..];
        *accepted += taken;
    }
    Ok(port.waits)
}
