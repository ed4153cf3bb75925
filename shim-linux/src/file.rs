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

use mlx5vf_core::device::file_ops::{
    self, Blocking, CopyDest, CopySource, IoOutcome, ReadPort, WritePort,
};
use mlx5vf_core::device::{Device, DeviceError, FileId};
use mlx5vf_core::errno::Errno;
use mlx5vf_core::vfio::Session;

use crate::abi::{
    MLX5VF_EFAULT, MLX5VF_EINVAL, MLX5VF_ENODEV, MLX5VF_ENOTTY, MLX5VF_EPOLLIN, MLX5VF_EPOLLOUT,
    MLX5VF_EPOLLRDHUP, MLX5VF_EPOLLRDNORM, MLX5VF_EPOLLWRNORM, MLX5VF_ESPIPE, MLX5VF_FILE_ALIGN,
    MLX5VF_FILE_RESUMING, MLX5VF_FILE_SAVING, MLX5VF_FILE_SIZE, MLX5VF_IO_NONBLOCK,
    MLX5VF_IO_POSITIONED, MLX5VF_MIG_GET_PRECOPY_INFO, MLX5VF_PRECOPY_INFO_MINSZ, MLX5VF_RETRY,
    mlx5vf_const_uptr, mlx5vf_file, mlx5vf_precopy_info, mlx5vf_uptr,
};
use crate::device::{Ctx, errno};
use crate::platform::{CHal, copied};

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
    ubuf: mlx5vf_uptr,
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

/// The kernel's side of a read: the device lock (dropped around each copy),
/// `copy_to_user` and `buffer_to_user`. The loop is the core's.
struct UserReader<'a> {
    c: &'a Ctx,
    ubuf: *mut c_void,
}

impl ReadPort<CHal> for UserReader<'_> {
    fn device(&mut self) -> &mut Device<CHal> {
        // SAFETY: the core calls this only between our lock and unlock.
        unsafe { self.c.device() }
    }

    fn copy_out(&mut self, at: usize, src: CopySource<'_>) -> Result<usize, Errno> {
        let c = self.c;
        let dst = self.ubuf.cast::<u8>().wrapping_add(at).cast::<c_void>();
        c.unlock();
        let (r, want) = match src {
            CopySource::Bytes(bytes) => (
                // SAFETY: `bytes` is the core's; `dst` is the caller's user
                // pointer, advanced within the `len` bytes it covers.
                unsafe { (c.ops.copy_to_user)(c.ctx, dst, bytes.as_ptr().cast(), bytes.len()) },
                bytes.len(),
            ),
            CopySource::Buffer {
                buffer,
                offset,
                len,
            } => (
                // SAFETY: the read lease keeps `buffer` allocated until the
                // core's `read_end`, even if the file closes meanwhile; the
                // range lies inside it (the core computed it); `dst` as above.
                unsafe { (c.ops.buffer_to_user)(c.ctx, dst, buffer.0, offset, len) },
                len,
            ),
        };
        c.lock();
        copied(r, want).map_err(errno_of_rc)
    }
}

/// The read; entered and left with the lock held.
fn read_locked(c: &Ctx, id: FileId, ubuf: *mut c_void, len: usize, flags: u32) -> (usize, c_int) {
    let mut port = UserReader { c, ubuf };
    outcome_rc(file_ops::read(&mut port, id, len, blocking(flags)))
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
    ubuf: mlx5vf_const_uptr,
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

/// The kernel's side of a write: the device lock (held throughout),
/// `copy_from_user` and `buffer_from_user`. The loop is the core's.
struct UserWriter<'a> {
    c: &'a Ctx,
    ubuf: *const c_void,
}

impl WritePort<CHal> for UserWriter<'_> {
    fn device(&mut self) -> &mut Device<CHal> {
        // SAFETY: the whole write runs under our lock.
        unsafe { self.c.device() }
    }

    fn copy_in(&mut self, at: usize, dst: CopyDest<'_>) -> Result<usize, Errno> {
        let c = self.c;
        let src = self.ubuf.cast::<u8>().wrapping_add(at).cast::<c_void>();
        let (r, want) = match dst {
            CopyDest::Bytes(small) => (
                // SAFETY: `small` is the core's gather buffer; `src` is the
                // caller's user pointer within `len`.
                unsafe {
                    (c.ops.copy_from_user)(c.ctx, small.as_mut_ptr().cast(), src, small.len())
                },
                small.len(),
            ),
            CopyDest::Buffer {
                buffer,
                offset,
                len,
            } => (
                // SAFETY: `buffer` is the resuming file's, allocated and not
                // freed while the lock is held; the range lies inside it.
                unsafe { (c.ops.buffer_from_user)(c.ctx, buffer.0, offset, src, len) },
                len,
            ),
        };
        copied(r, want).map_err(errno_of_rc)
    }
}

/// The write; entered and left with the lock held.
fn write_locked(
    c: &Ctx,
    id: FileId,
    ubuf: *const c_void,
    len: usize,
    flags: u32,
) -> (usize, c_int) {
    let mut port = UserWriter { c, ubuf };
    outcome_rc(file_ops::write(&mut port, id, len, blocking(flags)))
}

fn blocking(flags: u32) -> Blocking {
    if flags & MLX5VF_IO_NONBLOCK != 0 {
        Blocking::NonBlocking
    } else {
        Blocking::Blocking
    }
}

/// `*done` and the return code of a core outcome.
fn outcome_rc(outcome: IoOutcome) -> (usize, c_int) {
    match outcome {
        IoOutcome::Done(n) => (n, 0),
        IoOutcome::Wait(_) => (0, MLX5VF_RETRY),
        IoOutcome::Failed(e) => (0, e.errno().code().saturating_neg()),
    }
}

/// A copy callback's negative errno, as the core's [`Errno`]; one the core
/// does not name reads as `EFAULT` (what a failed user copy is).
fn errno_of_rc(rc: c_int) -> Errno {
    rc.checked_neg()
        .and_then(Errno::from_code)
        .unwrap_or(Errno::EFAULT)
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
    uarg: mlx5vf_uptr,
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
