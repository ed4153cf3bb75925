//! The `read()` and `write()` of a migration file, whole: which segment comes
//! next, how many bytes count, which errno wins once some bytes moved, when
//! the caller must wait, and end of stream.
//!
//! A shim implements [`ReadPort`] or [`WritePort`] — the lock, the copy to or
//! from user memory, and (optionally) the sleep — and calls [`read()`] or
//! [`write()`] once per system call. Nothing else of the file loop lives in a
//! shim, so every backend (the C ABI, the userspace tool, the tests, the fuzz
//! targets) has the same semantics, the Linux driver's:
//!
//! | situation | `read()` | `write()` |
//! |---|---|---|
//! | some bytes moved, then anything | the count | the count |
//! | nothing yet, a SAVE will bring data / a LOAD waits for a SAVE | [`IoOutcome::Wait`] (blocking), `EAGAIN` (non-blocking) | the same |
//! | PRE_COPY drained | `ENOMSG` | — |
//! | the first copy faulted | the port's errno (`EFAULT`) | the same |
//! | the stream is bad or a LOAD failed | — | the errno, even after bytes went in (the file is dead, as in Linux) |
//! | end of stream | `0` | — |
//!
//! One deliberate difference from Linux: a copy that faults after some bytes
//! returns the count, and only copied bytes are consumed, so the file stays
//! usable. Linux's `read()` returns `-EFAULT` and loses the bytes it had
//! copied; its `write()` fails the whole file.
//!
//! ```
//! use mlx5vf_core::device::file_ops::{self, Blocking, CopySource, IoOutcome, ReadPort};
//! use mlx5vf_core::device::{Device, FileId};
//! use mlx5vf_core::errno::Errno;
//! use mlx5vf_core::hal::Hal;
//!
//! /// A shim's read path: the lock is `&mut Device` here; a real one drops
//! /// it around the copy of a buffer.
//! struct Reader<'a, H: Hal> {
//!     dev: &'a mut Device<H>,
//!     out: &'a mut [u8],
//!     copy_buffer: fn(&mut H, mlx5vf_core::hal::BufferId, u64, &mut [u8]),
//! }
//!
//! impl<H: Hal> ReadPort<H> for Reader<'_, H> {
//!     fn device(&mut self) -> &mut Device<H> {
//!         self.dev
//!     }
//!     fn copy_out(&mut self, at: usize, src: CopySource<'_>) -> Result<usize, Errno> {
//!         let dst = self.out.get_mut(at..at + src.len()).ok_or(Errno::EFAULT)?;
//!         match src {
//!             CopySource::Bytes(b) => dst.copy_from_slice(b),
//!             CopySource::Buffer { buffer, offset, .. } => {
//!                 (self.copy_buffer)(self.dev.hal_mut(), buffer, offset, dst)
//!             }
//!         }
//!         Ok(dst.len())
//!     }
//! }
//!
//! fn sys_read<H: Hal>(r: &mut Reader<'_, H>, file: FileId) -> IoOutcome {
//!     let len = r.out.len();
//!     file_ops::read(r, file, len, Blocking::NonBlocking)
//! }
//! ```

use core::fmt;

use crate::errno::Errno;
use crate::hal::{BufferId, Hal};
use crate::stream::{HEADER_LEN, MAX_SMALL_PAYLOAD};
use crate::vfio::Session;

use super::{Device, DeviceError, FileId, ReadSegment, WritePlan};

/// Segments one call handles before returning a short count, so one call
/// holds the device for a bounded time (a short count is a valid answer;
/// the caller calls again).
pub const MAX_STEPS_PER_CALL: usize = 1024;

/// Header and small-record bytes are gathered here before
/// [`Device::write_small`]: the loader never asks for more than a header or
/// its largest small record at once, so a larger gather buffer would only
/// cost stack.
const SMALL_WRITE: usize = if HEADER_LEN > MAX_SMALL_PAYLOAD {
    HEADER_LEN
} else {
    MAX_SMALL_PAYLOAD
};

/// How a call behaves when it would have to wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Blocking {
    /// Wait: through [`ReadPort::wait`] / [`WritePort::wait`], or by
    /// returning [`IoOutcome::Wait`] for the caller to sleep and call again.
    Blocking,
    /// `O_NONBLOCK`: `EAGAIN` instead of waiting.
    NonBlocking,
}

/// What a call is waiting for. Either way the caller sleeps until the
/// device's event count moves (a SAVE completed, a file failed, a reset),
/// then calls again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum WaitFor {
    /// A read found nothing queued; a SAVE in flight will bring data.
    SaveData,
    /// A write completed an image whose LOAD must wait for a SAVE of the same
    /// device still in flight (a saving file closed just before).
    SaveCompletion,
    /// Both image buffers hold images waiting for or under LOAD: the next
    /// payload waits for an asynchronous LOAD to complete.
    LoadCompletion,
}

/// Why a call moved nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum IoError {
    /// The device refused: [`DeviceError::errno`] is the answer.
    Device(DeviceError),
    /// The port's first copy failed before a byte moved; its errno.
    Copy(Errno),
}

impl IoError {
    /// The errno `read()`/`write()` returns.
    pub fn errno(&self) -> Errno {
        match self {
            Self::Device(e) => e.errno(),
            Self::Copy(e) => *e,
        }
    }
}

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Device(e) => e.fmt(f),
            Self::Copy(e) => write!(f, "copy failed: {}", e.description()),
        }
    }
}

/// The result of one [`read()`] or [`write()`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[must_use]
pub enum IoOutcome {
    /// Bytes moved. For a read, 0 (of a non-empty request) is end of stream.
    Done(usize),
    /// Nothing moved; sleep until the device's event count moves past the
    /// value read before the call, then call again (blocking calls whose
    /// port does not wait itself).
    Wait(WaitFor),
    /// The call failed with this error.
    Failed(IoError),
}

/// Where the bytes of one read step come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopySource<'a> {
    /// Bytes the device holds (record headers, our records).
    Bytes(&'a [u8]),
    /// `len` bytes of the platform's `buffer` from `offset`.
    Buffer {
        /// The platform's buffer (leased to the reader until the step ends,
        /// even if the file closes meanwhile).
        buffer: BufferId,
        /// Offset in the buffer.
        offset: u64,
        /// Bytes.
        len: usize,
    },
}

impl CopySource<'_> {
    /// Bytes to copy.
    pub const fn len(&self) -> usize {
        match self {
            Self::Bytes(b) => b.len(),
            Self::Buffer { len, .. } => *len,
        }
    }
    /// Nothing to copy.
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where the bytes of one write step go.
#[derive(Debug, PartialEq, Eq)]
pub enum CopyDest<'a> {
    /// Into the core's gather buffer (headers and small records).
    Bytes(&'a mut [u8]),
    /// Into `len` bytes of the platform's `buffer` from `offset`.
    Buffer {
        /// The resuming file's buffer.
        buffer: BufferId,
        /// Offset in the buffer.
        offset: u64,
        /// Bytes.
        len: usize,
    },
}

impl CopyDest<'_> {
    /// Bytes to copy.
    pub fn len(&self) -> usize {
        match self {
            Self::Bytes(b) => b.len(),
            Self::Buffer { len, .. } => *len,
        }
    }
    /// Nothing to copy.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The shim's side of a `read()`: the locked device, the copy to the reader,
/// and optionally the sleep.
pub trait ReadPort<H: Hal> {
    /// The device. [`read()`] calls this only while the port holds the lock.
    fn device(&mut self) -> &mut Device<H>;

    /// Copies `src` to byte `at` of this call's destination. The port may
    /// drop the lock for the copy (a buffer is leased to the reader, so it
    /// stays allocated) and holds it again when it returns. Returns the bytes
    /// copied: fewer than `src.len()` means the copy faulted after them;
    /// `Err` means it failed before the first.
    ///
    /// # Errors
    /// The copy's errno (`EFAULT` for a bad user address).
    fn copy_out(&mut self, at: usize, src: CopySource<'_>) -> Result<usize, Errno>;

    /// Sleeps, with the lock dropped, until the device's event count moves.
    /// Returns `false` (the default) to hand the wait to the caller instead:
    /// [`read()`] then returns [`IoOutcome::Wait`]. A port that returns `true`
    /// must have slept: [`read()`] calls the device again at once.
    fn wait(&mut self, why: WaitFor) -> bool {
        let _ = why;
        false
    }
}

/// The shim's side of a `write()`: the locked device, the copy from the
/// writer, and optionally the sleep. Linux holds the state lock for the
/// whole of a write; a port may do the same.
pub trait WritePort<H: Hal> {
    /// The device. [`write()`] calls this only while the port holds the lock.
    fn device(&mut self) -> &mut Device<H>;

    /// Copies from byte `at` of this call's source into `dst`. Returns the
    /// bytes copied, as [`ReadPort::copy_out`].
    ///
    /// # Errors
    /// The copy's errno (`EFAULT` for a bad user address).
    fn copy_in(&mut self, at: usize, dst: CopyDest<'_>) -> Result<usize, Errno>;

    /// As [`ReadPort::wait`].
    fn wait(&mut self, why: WaitFor) -> bool {
        let _ = why;
        false
    }
}

/// `read()` of up to `len` bytes of saving file `file`. See the module
/// documentation for what wins when.
// Not inlined: a kernel caller's frame stays its own, and this one's is
// checked on its own (`shim-linux/check-symbols.sh`).
#[inline(never)]
pub fn read<H: Hal, P: ReadPort<H> + ?Sized>(
    port: &mut P,
    file: FileId,
    len: usize,
    blocking: Blocking,
) -> IoOutcome {
    let mut total = 0usize;
    let mut steps = 0usize;
    while steps < MAX_STEPS_PER_CALL {
        let Some(want) = len.checked_sub(total).filter(|&w| w > 0) else {
            break;
        };
        // CAST: usize -> u64 is lossless.
        let seg = match port.device().read_begin(file, want as u64) {
            Ok(ReadSegment::Eof) => break,
            Ok(seg) => seg,
            // Linux stops at the end of the queued data: bytes read win over
            // ENOMSG, EAGAIN and ENODEV.
            Err(_) if total > 0 => break,
            Err(DeviceError::WouldBlock) => match blocking {
                Blocking::NonBlocking => return failed(DeviceError::WouldBlock),
                Blocking::Blocking if port.wait(WaitFor::SaveData) => continue,
                Blocking::Blocking => return IoOutcome::Wait(WaitFor::SaveData),
            },
            Err(e) => return failed(e),
        };
        steps = steps.saturating_add(1);
        let src = match &seg {
            ReadSegment::Buffer {
                buffer,
                offset,
                len,
            } => CopySource::Buffer {
                buffer: *buffer,
                offset: *offset,
                len: usize::try_from(*len).unwrap_or(usize::MAX).min(want),
            },
            _ => CopySource::Bytes(seg.inline_bytes().unwrap_or_default()),
        };
        let wanted = src.len();
        let copy = port.copy_out(total, src);
        let got = copy.unwrap_or(0).min(wanted);
        // CAST: usize -> u64 is lossless. The lease is this call's:
        // read_end cannot refuse it.
        let _ = port.device().read_end(file, got as u64);
        total = total.saturating_add(got);
        if got < wanted {
            // A fault: reported only if nothing at all was copied.
            if total == 0 {
                return IoOutcome::Failed(IoError::Copy(copy.err().unwrap_or(Errno::EFAULT)));
            }
            break;
        }
        // An empty segment (firmware may save an image of 0 bytes) is
        // consumed by its `read_end(0)`: step over it. Answering 0 here would
        // be a false end of stream.
    }
    IoOutcome::Done(total)
}

/// `write()` of `len` bytes to resuming file `file`; LOADs each image as it
/// completes. See the module documentation for what wins when.
///
/// Progress is the stream position, so bytes the device consumed are
/// reported even when the step that consumed them also asked to wait.
// Not inlined, as `read()`.
#[inline(never)]
pub fn write<H: Hal, P: WritePort<H> + ?Sized>(
    port: &mut P,
    file: FileId,
    len: usize,
    blocking: Blocking,
) -> IoOutcome {
    let start = port.device().resume_position(file);
    let consumed = |port: &mut P| {
        usize::try_from(port.device().resume_position(file).saturating_sub(start))
            .unwrap_or(usize::MAX)
            .min(len)
    };
    let mut stop: Option<IoError> = None;
    let mut wait: Option<WaitFor> = None;
    let mut steps = 0usize;
    while steps < MAX_STEPS_PER_CALL {
        let done = consumed(port);
        let Some(avail) = len.checked_sub(done).filter(|&a| a > 0) else {
            break;
        };
        // CAST: usize -> u64 is lossless.
        let plan = match port.device().write_plan(file, avail as u64) {
            Ok(p) => p,
            Err(e @ (DeviceError::SaveInFlight | DeviceError::LoadInFlight)) => {
                let why = if e == DeviceError::LoadInFlight {
                    WaitFor::LoadCompletion
                } else {
                    WaitFor::SaveCompletion
                };
                if done == 0 && blocking == Blocking::Blocking && port.wait(why) {
                    continue;
                }
                wait = Some(why);
                break;
            }
            Err(e) => {
                stop = Some(IoError::Device(e));
                break;
            }
        };
        steps = steps.saturating_add(1);
        let (wanted, copy, result) = match plan {
            WritePlan::Small { max } => {
                let mut small = [0u8; SMALL_WRITE];
                let wanted = max.min(avail).min(SMALL_WRITE);
                let copy = match small.get_mut(..wanted) {
                    Some(dst) => port.copy_in(done, CopyDest::Bytes(dst)),
                    None => Ok(0),
                };
                let got = copy.unwrap_or(0).min(wanted);
                let result = match small.get(..got) {
                    Some(bytes) if got > 0 => port.device().write_small(file, bytes).map(drop),
                    _ => Ok(()),
                };
                (wanted, copy, result)
            }
            WritePlan::Buffer {
                buffer,
                offset,
                len: room,
            } => {
                let wanted = usize::try_from(room).unwrap_or(usize::MAX).min(avail);
                let copy = port.copy_in(
                    done,
                    CopyDest::Buffer {
                        buffer,
                        offset,
                        len: wanted,
                    },
                );
                let got = copy.unwrap_or(0).min(wanted);
                // CAST: usize -> u64 is lossless. An empty commit drops the plan.
                let result = port.device().write_commit(file, got as u64);
                (wanted, copy, result)
            }
            WritePlan::Skip { len: skip } => {
                // An optional record's payload: consumed without a copy.
                let n = usize::try_from(skip).unwrap_or(usize::MAX).min(avail);
                // CAST: usize -> u64 is lossless.
                let result = port.device().write_commit(file, n as u64);
                (n, Ok(n), result)
            }
        };
        match result {
            Ok(()) => {}
            // The bytes went in; the LOAD they completed waits for the SAVE.
            Err(DeviceError::SaveInFlight) => {
                wait = Some(WaitFor::SaveCompletion);
                break;
            }
            Err(e) => {
                stop = Some(IoError::Device(e));
                break;
            }
        }
        if copy.unwrap_or(0) < wanted {
            // A fault: reported only if nothing at all was consumed.
            if consumed(port) == 0 {
                stop = Some(IoError::Copy(copy.err().unwrap_or(Errno::EFAULT)));
            }
            break;
        }
    }
    let total = consumed(port);
    match stop {
        // A fault on the first byte (the file stays usable), or a failed
        // stream (the file is dead and the errno is the answer, as in Linux).
        Some(e) => IoOutcome::Failed(e),
        // Bytes consumed before a wait are reported; the next call waits.
        None => match wait {
            Some(why) if total == 0 => match blocking {
                Blocking::Blocking => IoOutcome::Wait(why),
                Blocking::NonBlocking => failed(DeviceError::WouldBlock),
            },
            _ => IoOutcome::Done(total),
        },
    }
}

const fn failed(e: DeviceError) -> IoOutcome {
    IoOutcome::Failed(IoError::Device(e))
}

impl<H: Hal> Device<H> {
    /// Stream bytes resuming file `file` consumed so far (0 for any other
    /// handle).
    pub(crate) fn resume_position(&self, file: FileId) -> u64 {
        match self.resuming.as_ref() {
            Some(f) if file.kind == Session::Resuming && f.session == file.session => {
                f.engine.reader().position()
            }
            _ => 0,
        }
    }
}
