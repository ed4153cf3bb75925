//! The migration file operations: what a `struct file_operations` for the
//! saving and resuming files calls, with the Linux driver's semantics.
//!
//! Every function here takes the device lock itself (through the `lock`
//! callback and [`mlx5vf_unlock`](crate::device::mlx5vf_unlock)'s deferred
//! reset): call them **without** it, as the VFS calls `read`, `write`,
//! `poll`, `unlocked_ioctl` and `release`.

use core::ffi::{c_int, c_void};
use core::mem::{align_of, size_of};
use core::ptr::{self, addr_of_mut};
use core::sync::atomic::Ordering::SeqCst;

use mlx5vf_core::device::{DeviceError, FileId, ReadSegment, WritePlan};
use mlx5vf_core::vfio::Session;

use crate::abi::{
    MLX5VF_EAGAIN, MLX5VF_EFAULT, MLX5VF_EINVAL, MLX5VF_ENODEV, MLX5VF_ENOTTY, MLX5VF_EPOLLIN,
    MLX5VF_EPOLLOUT, MLX5VF_EPOLLRDHUP, MLX5VF_EPOLLRDNORM, MLX5VF_EPOLLWRNORM, MLX5VF_ESPIPE,
    MLX5VF_FILE_ALIGN, MLX5VF_FILE_RESUMING, MLX5VF_FILE_SAVING, MLX5VF_FILE_SIZE,
    MLX5VF_IO_NONBLOCK, MLX5VF_IO_POSITIONED, MLX5VF_MIG_GET_PRECOPY_INFO,
    MLX5VF_PRECOPY_INFO_MINSZ, MLX5VF_RETRY, mlx5vf_file, mlx5vf_precopy_info,
};
use crate::device::{Ctx, errno};
use crate::platform::copied;

/// What a [`mlx5vf_file`] holds.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct FileObj {
    /// The device (a live `Ctx`).
    pub(crate) dev: *const Ctx,
    /// `FileId::to_bits()`; 0 once released.
    pub(crate) id: u64,
}

const _: () = assert!(size_of::<FileObj>() <= MLX5VF_FILE_SIZE);
const _: () = assert!(align_of::<FileObj>() <= MLX5VF_FILE_ALIGN);

/// Segments one read or write handles before returning a short count, so
/// one call holds the lock for a bounded time.
const MAX_STEPS_PER_CALL: usize = 1024;

/// Header and small-record bytes are gathered here before
/// `Device::write_small` (the core asks for at most its small-record size).
const SMALL_WRITE: usize = 256;

/// The device and handle of `f`.
///
/// # Safety
/// `f` is null or a `struct mlx5vf_file` that is zeroed or was filled by
/// `mlx5vf_set_state()` for a device that is still live.
unsafe fn open_file<'a>(f: *const mlx5vf_file) -> Result<(&'a Ctx, FileId), c_int> {
    if f.is_null() {
        return Err(-MLX5VF_EINVAL);
    }
    // SAFETY: `f` points to a file object (caller).
    let obj = unsafe { ptr::read(f.cast::<FileObj>()) };
    if obj.id == 0 {
        return Err(-MLX5VF_ENODEV);
    }
    // SAFETY: a non-zero id was written together with a pointer to a live
    // device, which the caller keeps alive while the file is.
    let c = unsafe { Ctx::from_raw(obj.dev.cast()) }.ok_or(-MLX5VF_ENODEV)?;
    let id = FileId::from_bits(obj.id).ok_or(-MLX5VF_ENODEV)?;
    Ok((c, id))
}

/// `MLX5VF_FILE_SAVING`, `MLX5VF_FILE_RESUMING`, or 0 for a file that is
/// released, zeroed or `NULL`. No lock needed.
///
/// # Safety
/// `f` is null or a file object (zeroed or filled by `mlx5vf_set_state()`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_file_kind(f: *const mlx5vf_file) -> c_int {
    // SAFETY: forwarded from the caller.
    match unsafe { open_file(f) } {
        Ok((_, id)) => match id.kind() {
            Session::Saving => MLX5VF_FILE_SAVING,
            Session::Resuming => MLX5VF_FILE_RESUMING,
        },
        Err(_) => 0,
    }
}

/// `read()` on a saving file: copies up to `len` stream bytes to `ubuf`
/// through `copy_to_user`/`buffer_to_user`, storing the count in `*done`.
/// **Takes the lock itself** and drops it around each copy (the core's read
/// lease keeps the buffer alive), so a SAVE completion can run meanwhile.
/// Serialise readers of one file with your own per-file mutex (Linux's
/// `migf->lock`); a second concurrent reader gets `-EBUSY`.
///
/// `flags`: `MLX5VF_IO_NONBLOCK` for `O_NONBLOCK`, `MLX5VF_IO_POSITIONED`
/// when the VFS passed a position.
///
/// Returns 0 with `*done` bytes (0 bytes = end of stream; `len == 0`
/// returns 0 at once), or
/// - `-ESPIPE`: a positioned read;
/// - `-ENOMSG`: PRE_COPY/PRE_COPY_P2P and nothing to read for now (only
///   when nothing was read by this call: a read that drains the queue
///   returns its bytes);
/// - `MLX5VF_RETRY`: blocking read and no data yet (a SAVE will bring
///   some): wait for `mlx5vf_events()` to move past the value read before
///   the call (`wait_event_interruptible()`; return `-ERESTARTSYS` if
///   interrupted), then call again;
/// - `-EAGAIN`: the same with `MLX5VF_IO_NONBLOCK`;
/// - `-ENODEV`: the file was disabled (its arc ended it, reset, close,
///   detach) or failed;
/// - `-EFAULT`: the first copy faulted (a later fault returns the bytes
///   copied so far; the stream stays intact: only copied bytes are
///   consumed);
/// - `-EBUSY`: another read of this file is in progress;
/// - `-EINVAL`: not a saving file, or `NULL` `done`.
///
/// # Safety
/// `f` is null or a file object whose device is live; `ubuf` is whatever
/// the copy callbacks accept for `len` bytes (a `__user` pointer); `done`
/// is null or valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_file_read(
    f: *mut mlx5vf_file,
    ubuf: *mut c_void,
    len: usize,
    flags: u32,
    done: *mut usize,
) -> c_int {
    if done.is_null() {
        return -MLX5VF_EINVAL;
    }
    // SAFETY: `done` is valid for writes (caller).
    unsafe { done.write(0) };
    if flags & MLX5VF_IO_POSITIONED != 0 {
        return -MLX5VF_ESPIPE;
    }
    // SAFETY: forwarded from the caller.
    let (c, id) = match unsafe { open_file(f) } {
        Ok(x) => x,
        Err(e) => return e,
    };
    if id.kind() != Session::Saving {
        return -MLX5VF_EINVAL;
    }
    if len == 0 {
        return 0;
    }
    c.lock();
    let (total, rc) = read_locked(c, id, ubuf, len, flags);
    c.unlock();
    // SAFETY: as above.
    unsafe { done.write(total) };
    rc
}

/// The read loop; entered and left with the lock held.
fn read_locked(c: &Ctx, id: FileId, ubuf: *mut c_void, len: usize, flags: u32) -> (usize, c_int) {
    let mut total = 0usize;
    for _ in 0..MAX_STEPS_PER_CALL {
        let Some(want) = len.checked_sub(total).filter(|&w| w > 0) else {
            break;
        };
        // CAST: usize -> u64 is lossless.
        // SAFETY: locked.
        let seg = match unsafe { c.device() }.read_begin(id, want as u64) {
            Ok(s) => s,
            // Linux stops at the end of the queued data: bytes read win over
            // ENOMSG, EAGAIN and ENODEV.
            Err(_) if total > 0 => break,
            Err(DeviceError::WouldBlock) => {
                let rc = if flags & MLX5VF_IO_NONBLOCK != 0 {
                    -MLX5VF_EAGAIN
                } else {
                    MLX5VF_RETRY
                };
                return (0, rc);
            }
            Err(e) => return (0, errno(&e)),
        };
        let dst = ubuf.cast::<u8>().wrapping_add(total).cast::<c_void>();
        let (seg_len, r) = match seg {
            ReadSegment::Eof => break,
            ReadSegment::Inline { bytes, len } => {
                let n = len.min(bytes.len());
                c.unlock();
                // SAFETY: `bytes` is a local array of at least `n` bytes;
                // `dst` is the caller's user pointer, advanced within the
                // `len` bytes it covers.
                let r = unsafe { (c.ops.copy_to_user)(c.ctx, dst, bytes.as_ptr().cast(), n) };
                c.lock();
                (n, r)
            }
            ReadSegment::Buffer {
                buffer,
                offset,
                len,
            } => {
                let n = usize::try_from(len).unwrap_or(usize::MAX).min(want);
                c.unlock();
                // SAFETY: the read lease keeps `buffer` allocated until
                // `read_end`, even if the file closes meanwhile; the range
                // lies inside it (the core computed it); `dst` as above.
                let r = unsafe { (c.ops.buffer_to_user)(c.ctx, dst, buffer.0, offset, n) };
                c.lock();
                (n, r)
            }
        };
        let n = copied(r, seg_len);
        let got = n.unwrap_or(0);
        // CAST: usize -> u64 is lossless. The lease is ours: read_end cannot
        // refuse it.
        // SAFETY: locked.
        let _ = unsafe { c.device() }.read_end(id, got as u64);
        total = total.saturating_add(got);
        if got < seg_len {
            // A fault: report it only if nothing at all was copied.
            if total == 0 {
                return (0, n.err().unwrap_or(-MLX5VF_EFAULT));
            }
            break;
        }
    }
    (total, 0)
}

/// `write()` on a resuming file: consumes up to `len` bytes of `ubuf`
/// (copied with `copy_from_user`/`buffer_from_user`), storing the count in
/// `*done`; LOADs each image as it completes. **Takes the lock itself** and
/// holds it for the whole call, copies included (as Linux holds the state
/// mutex in `mlx5vf_resume_write()`; the deferred reset is what makes that
/// safe).
///
/// Returns 0 with `*done` bytes consumed, or
/// - `-ESPIPE`: a positioned write;
/// - `MLX5VF_RETRY`: an image is due for LOAD while a SAVE of this device
///   is still in flight (a saving file closed just before); nothing was
///   consumed: wait as for a read, then call again (`-EAGAIN` with
///   `MLX5VF_IO_NONBLOCK`). If bytes were consumed first, they are
///   reported and the next call gets `MLX5VF_RETRY`;
/// - `-ENODEV`: the file was disabled or failed earlier;
/// - `-EOPNOTSUPP`: an unknown mandatory record; `-ENOMEM`: a record larger
///   than a LOAD can take, or buffers could not be allocated; `-EIO`: the
///   stream failed its integrity check or a LOAD failed (firmware errnos
///   pass through): each of these fails the file, as in Linux;
/// - `-EFAULT`: the first copy faulted (later faults return the count; the
///   file stays usable);
/// - `-EINVAL`: not a resuming file, or `NULL` `done`.
///
/// # Safety
/// `f` is null or a file object whose device is live; `ubuf` is whatever
/// the copy callbacks accept for `len` bytes; `done` is null or valid for
/// writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_file_write(
    f: *mut mlx5vf_file,
    ubuf: *const c_void,
    len: usize,
    flags: u32,
    done: *mut usize,
) -> c_int {
    if done.is_null() {
        return -MLX5VF_EINVAL;
    }
    // SAFETY: `done` is valid for writes (caller).
    unsafe { done.write(0) };
    if flags & MLX5VF_IO_POSITIONED != 0 {
        return -MLX5VF_ESPIPE;
    }
    // SAFETY: forwarded from the caller.
    let (c, id) = match unsafe { open_file(f) } {
        Ok(x) => x,
        Err(e) => return e,
    };
    if id.kind() != Session::Resuming {
        return -MLX5VF_EINVAL;
    }
    if len == 0 {
        return 0;
    }
    c.lock();
    let (total, rc) = write_locked(c, id, ubuf, len, flags);
    c.unlock();
    // SAFETY: as above.
    unsafe { done.write(total) };
    rc
}

/// Stream bytes the resuming file consumed so far.
fn position(c: &Ctx) -> u64 {
    // SAFETY: locked (callers of write_locked).
    unsafe { c.device() }
        .load_engine()
        .map_or(0, |e| e.reader().position())
}

/// One planned write step: how many bytes it wanted, how many it got (a
/// short copy stops the call), what a faulting copy reported, and what the
/// device said about the bytes.
struct WriteStep {
    wanted: usize,
    got: usize,
    fault: c_int,
    result: Result<(), DeviceError>,
}

impl WriteStep {
    fn from_copy(
        wanted: usize,
        r: i64,
        commit: impl FnOnce(usize) -> Result<(), DeviceError>,
    ) -> Self {
        let copy = copied(r, wanted);
        let got = *copy.as_ref().unwrap_or(&0);
        Self {
            wanted,
            got,
            fault: copy.err().unwrap_or(-MLX5VF_EFAULT),
            result: commit(got),
        }
    }
}

/// The write loop; entered and left with the lock held. Progress is
/// measured by the stream position, so bytes the core consumed are
/// reported even when the call that consumed them also failed.
fn write_locked(
    c: &Ctx,
    id: FileId,
    ubuf: *const c_void,
    len: usize,
    flags: u32,
) -> (usize, c_int) {
    let start = position(c);
    let consumed = |c: &Ctx| {
        usize::try_from(position(c).saturating_sub(start))
            .unwrap_or(usize::MAX)
            .min(len)
    };
    let wait = if flags & MLX5VF_IO_NONBLOCK != 0 {
        -MLX5VF_EAGAIN
    } else {
        MLX5VF_RETRY
    };
    let stop = |e: DeviceError| {
        if e == DeviceError::SaveInFlight {
            wait
        } else {
            errno(&e)
        }
    };
    // Why the loop ended early: 0 (a short copy after progress), a fault's
    // errno, a device errno, or the wait code.
    let mut rc = 0;
    for _ in 0..MAX_STEPS_PER_CALL {
        let done = consumed(c);
        let Some(avail) = len.checked_sub(done).filter(|&a| a > 0) else {
            break;
        };
        let src = ubuf.cast::<u8>().wrapping_add(done).cast::<c_void>();
        // CAST: usize -> u64 is lossless.
        // SAFETY: locked.
        let plan = match unsafe { c.device() }.write_plan(id, avail as u64) {
            Ok(p) => p,
            Err(e) => {
                rc = stop(e);
                break;
            }
        };
        let step = match plan {
            WritePlan::Small { max } => {
                let mut small = [0u8; SMALL_WRITE];
                let wanted = max.min(avail).min(SMALL_WRITE);
                // SAFETY: `small` is a local of SMALL_WRITE >= `wanted`
                // bytes; `src` is the caller's user pointer within `len`.
                let r = unsafe {
                    (c.ops.copy_from_user)(c.ctx, small.as_mut_ptr().cast(), src, wanted)
                };
                WriteStep::from_copy(wanted, r, |n| match small.get(..n) {
                    // SAFETY: locked.
                    Some(bytes) if n > 0 => unsafe { c.device() }.write_small(id, bytes).map(drop),
                    _ => Ok(()),
                })
            }
            WritePlan::Buffer {
                buffer,
                offset,
                len: room,
            } => {
                let wanted = usize::try_from(room).unwrap_or(usize::MAX).min(avail);
                // SAFETY: `buffer` is the resuming file's, allocated and not
                // freed while the lock is held; the range lies inside it.
                let r = unsafe { (c.ops.buffer_from_user)(c.ctx, buffer.0, offset, src, wanted) };
                // An empty commit just drops the plan.
                WriteStep::from_copy(wanted, r, |n| {
                    // CAST: usize -> u64 is lossless.
                    // SAFETY: locked.
                    unsafe { c.device() }.write_commit(id, n as u64)
                })
            }
            WritePlan::Skip { len: skip } => {
                // Optional records' payload: consumed without being copied.
                let n = usize::try_from(skip).unwrap_or(usize::MAX).min(avail);
                WriteStep {
                    wanted: n,
                    got: n,
                    fault: 0,
                    // CAST: usize -> u64 is lossless.
                    // SAFETY: locked.
                    result: unsafe { c.device() }.write_commit(id, n as u64),
                }
            }
        };
        // `SaveInFlight` here: the bytes went in, the LOAD they completed
        // waits for the SAVE.
        if let Err(e) = step.result {
            rc = stop(e);
            break;
        }
        if step.got < step.wanted {
            if consumed(c) == 0 {
                rc = step.fault;
            }
            break;
        }
    }
    let total = consumed(c);
    match rc {
        // Bytes consumed before a wait are reported; the next call waits.
        r if r == wait && total > 0 => (total, 0),
        r if r == wait || r == 0 => (total, r),
        // A fault on the first byte, or a failed stream (the file is dead:
        // the errno is the answer, as in Linux).
        e => (0, e),
    }
}

/// `poll()`: call `poll_wait()` on your wait queue first, then this.
/// **Takes the lock itself.** A saving file reports `MLX5VF_EPOLLIN |
/// MLX5VF_EPOLLRDNORM` when data is queued or at end of stream, plus
/// `MLX5VF_EPOLLRDHUP` once it failed or was disabled, else 0. A resuming
/// file reports what the VFS reports for a file without `poll`
/// (`EPOLLIN | EPOLLOUT | EPOLLRDNORM | EPOLLWRNORM`), as Linux's does.
///
/// # Safety
/// `f` is null or a file object whose device is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_file_poll(f: *mut mlx5vf_file) -> u32 {
    let hup = MLX5VF_EPOLLIN | MLX5VF_EPOLLRDNORM | MLX5VF_EPOLLRDHUP;
    // SAFETY: forwarded from the caller.
    let (c, id) = match unsafe { open_file(f) } {
        Ok(x) => x,
        Err(_) => return hup,
    };
    if id.kind() == Session::Resuming {
        return MLX5VF_EPOLLIN | MLX5VF_EPOLLOUT | MLX5VF_EPOLLRDNORM | MLX5VF_EPOLLWRNORM;
    }
    c.lock();
    // SAFETY: locked.
    let p = unsafe { c.device() }.poll(id);
    c.unlock();
    let mut mask = 0;
    if p.readable {
        mask |= MLX5VF_EPOLLIN | MLX5VF_EPOLLRDNORM;
    }
    if p.hangup {
        mask |= MLX5VF_EPOLLRDHUP;
    }
    mask
}

/// `unlocked_ioctl()` of a saving file: `VFIO_MIG_GET_PRECOPY_INFO` with
/// `uarg` pointing to the caller's `struct vfio_precopy_info`. **Takes the
/// lock itself** (copies happen outside it). Checks in Linux's order:
/// - `-ENOTTY`: `cmd` is not `MLX5VF_MIG_GET_PRECOPY_INFO`, or a resuming
///   file;
/// - `-EFAULT`: the structure could not be read or written back;
/// - `-EINVAL`: `argsz < MLX5VF_PRECOPY_INFO_MINSZ`, or the device is not in
///   PRE_COPY/PRE_COPY_P2P;
/// - `MLX5VF_RETRY`: a SAVE is in flight (in PRE_COPY the firmware's
///   incremental size is queried, which waits for it): wait as for a read,
///   then call again;
/// - `-ENODEV`: the file failed or was disabled; a query's errno
///   (`-ENOTCONN` when detached, …);
/// - 0: `argsz`, `flags` echoed, `initial_bytes` and `dirty_bytes` filled
///   (24 bytes written back). When everything queued was read and firmware
///   holds new data, an incremental SAVE starts so the next read finds it.
///
/// # Safety
/// `f` is null or a file object whose device is live; `uarg` is whatever
/// the copy callbacks accept for `MLX5VF_PRECOPY_INFO_MINSZ` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_file_ioctl(
    f: *mut mlx5vf_file,
    cmd: u32,
    uarg: *mut c_void,
) -> c_int {
    // SAFETY: forwarded from the caller.
    let (c, id) = match unsafe { open_file(f) } {
        Ok(x) => x,
        Err(e) => return e,
    };
    if id.kind() != Session::Saving || cmd != MLX5VF_MIG_GET_PRECOPY_INFO {
        return -MLX5VF_ENOTTY;
    }
    let mut info = mlx5vf_precopy_info::default();
    // CAST: 24.
    let minsz = MLX5VF_PRECOPY_INFO_MINSZ as usize;
    // SAFETY: `info` is a local of `minsz` bytes; `uarg` is the caller's
    // user pointer.
    let r = unsafe {
        (c.ops.copy_from_user)(c.ctx, addr_of_mut!(info).cast(), uarg.cast_const(), minsz)
    };
    match copied(r, minsz) {
        Ok(n) if n == minsz => {}
        Ok(_) => return -MLX5VF_EFAULT,
        Err(e) => return e,
    }
    if info.argsz < MLX5VF_PRECOPY_INFO_MINSZ {
        return -MLX5VF_EINVAL;
    }
    c.lock();
    // SAFETY: locked.
    let result = unsafe { c.device() }.precopy_info(id);
    if !matches!(result, Ok(_) | Err(DeviceError::SaveInFlight)) {
        // The file may have just failed: readers must look again.
        c.notify();
    }
    c.unlock();
    let p = match result {
        Ok(p) => p,
        Err(DeviceError::SaveInFlight) => return MLX5VF_RETRY,
        Err(e) => return errno(&e),
    };
    info.initial_bytes = p.initial_bytes;
    info.dirty_bytes = p.dirty_bytes;
    // SAFETY: as for the copy in.
    let r = unsafe { (c.ops.copy_to_user)(c.ctx, uarg, addr_of_mut!(info).cast(), minsz) };
    match copied(r, minsz) {
        Ok(n) if n == minsz => 0,
        Ok(_) => -MLX5VF_EFAULT,
        Err(e) => e,
    }
}

/// `release()`: the file's last reference is gone. **Takes the lock
/// itself.** The device keeps a saving file's data until an arc ends it (as
/// Linux's driver holds its own reference); the handle is dead afterwards
/// (every call on it returns `-ENODEV`, `mlx5vf_file_kind()` 0). Releasing
/// twice is harmless.
///
/// # Safety
/// `f` is null or a file object whose device is live; no other call on it
/// runs concurrently.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_file_release(f: *mut mlx5vf_file) {
    // SAFETY: forwarded from the caller.
    let Ok((c, id)) = (unsafe { open_file(f) }) else {
        return;
    };
    c.lock();
    // SAFETY: locked.
    unsafe { c.device() }.release(id);
    c.unlock();
    // SAFETY: `f` is a file object (caller); zeroing its handle marks it
    // released.
    unsafe { addr_of_mut!((*f.cast::<FileObj>()).id).write(0) };
    c.live_files.fetch_sub(1, SeqCst);
}
