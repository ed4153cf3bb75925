//! Device dirty-page tracking: the C functions behind `vfio_log_ops`
//! (`log_start`, `log_stop`, `log_read_and_clear`).
//!
//! The tracker's state lives in a `struct mlx5vf_dirty` the caller embeds
//! beside its device storage (about 4 KiB, so devices that never track pay
//! nothing). Every function takes the device lock's holder's word: call them
//! **with the lock held**, as Linux holds its state mutex. A report may sleep
//! in the platform's `report_next` (at most `timeout_ns` per wait, 2 s; a
//! silent firmware fails the read with `-ETIMEDOUT`).

use core::ffi::{c_int, c_void};
use core::mem::{align_of, size_of};
use core::ptr::addr_of_mut;

use mlx5vf_core::device::DirtyTracker;
use mlx5vf_core::tracker::{DirtySink, IovaRange};

use crate::abi::{
    MLX5VF_DIRTY_ALIGN, MLX5VF_DIRTY_SCRATCH_LEN, MLX5VF_DIRTY_SIZE, MLX5VF_EINVAL, mlx5vf_device,
    mlx5vf_dirty, mlx5vf_iova_range,
};
use crate::device::{Ctx, errno};

/// `DirtyCtx::magic` of an initialised tracker ("mlx5vfT1").
const MAGIC: u64 = u64::from_be_bytes(*b"mlx5vfT1");

/// What a [`mlx5vf_dirty`] holds.
#[repr(C)]
struct DirtyCtx {
    magic: u64,
    tracker: DirtyTracker,
}

// The storage the header promises is enough for what it holds.
const _: () = assert!(size_of::<DirtyCtx>() <= MLX5VF_DIRTY_SIZE);
const _: () = assert!(align_of::<DirtyCtx>() <= MLX5VF_DIRTY_ALIGN);

/// A fresh tracker, as a constant: written from read-only data, so the
/// 4 KiB never lands on a stack frame.
const FRESH: DirtyTracker = DirtyTracker::new();

impl DirtyCtx {
    /// The tracker behind `d`, if it was initialised.
    ///
    /// # Safety
    /// `d` is null or points to `MLX5VF_DIRTY_SIZE` bytes aligned to
    /// `MLX5VF_DIRTY_ALIGN`, used by nothing else for `'a`.
    unsafe fn from_raw<'a>(d: *mut mlx5vf_dirty) -> Option<&'a mut DirtyTracker> {
        if d.is_null() {
            return None;
        }
        let p = d.cast::<Self>();
        // SAFETY: readable and aligned (caller); a u64 has no invalid bits.
        let magic = unsafe { addr_of_mut!((*p).magic).read() };
        // SAFETY: the magic says `mlx5vf_dirty_init()` wrote a tracker here;
        // the caller's lock makes this the only reference.
        (magic == MAGIC).then(|| unsafe { &mut *addr_of_mut!((*p).tracker) })
    }
}

/// The device behind `dev` and the tracker behind `d`; `None` if either
/// is null or not initialised storage.
///
/// # Safety
/// `dev` is null or device storage; `d` as [`DirtyCtx::from_raw`].
unsafe fn device_and_tracker<'a>(
    dev: *mut mlx5vf_device,
    d: *mut mlx5vf_dirty,
) -> Option<(&'a Ctx, &'a mut DirtyTracker)> {
    // SAFETY: `dev` is null or device storage (caller).
    let c = unsafe { Ctx::from_raw(dev) }?;
    // SAFETY: `d` is null or tracker storage (caller).
    let tracker = unsafe { DirtyCtx::from_raw(d) }?;
    Some((c, tracker))
}

/// Initialises tracker storage (logging off). No lock needed: nothing else
/// uses the storage yet.
///
/// Returns 0, or `-EINVAL` for `NULL`.
///
/// # Safety
/// `d` is null or points to `MLX5VF_DIRTY_SIZE` writable bytes aligned to
/// `MLX5VF_DIRTY_ALIGN` that nothing else uses.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_dirty_init(d: *mut mlx5vf_dirty) -> c_int {
    if d.is_null() {
        return -MLX5VF_EINVAL;
    }
    let p = d.cast::<DirtyCtx>();
    // SAFETY: writable, aligned and large enough (caller, const asserts);
    // fields are written in place, the magic last.
    unsafe {
        addr_of_mut!((*p).magic).write(0);
        addr_of_mut!((*p).tracker).write(FRESH);
        addr_of_mut!((*p).magic).write(MAGIC);
    }
    0
}

/// `vfio_log_ops.log_start`: tracks the VF's DMA writes to `ranges`
/// (`nranges` of them, sorted and disjoint, as the VFIO core's interval
/// tree yields them; more than the device holds are combined as Linux
/// combines them). `*page_size` is the requested page size in and the
/// tracked one out. `scratch` holds `MLX5VF_DIRTY_SCRATCH_LEN` bytes.
/// **Lock held.**
///
/// Returns 0; `-EINVAL` (bad arguments, ranges, or logging already
/// started), `-EOPNOTSUPP` (no tracker on the device, no `report_*`
/// callbacks, or limits the device cannot meet), `-ENOTCONN`, or the errno
/// of the command that failed. Nothing stays allocated on failure.
///
/// # Safety
/// `dev` is null or device storage; `d` null or tracker storage; `ranges`
/// valid for `nranges` reads; `page_size` null or valid for reads and
/// writes; `scratch` valid for `scratch_len` bytes of writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_log_start(
    dev: *mut mlx5vf_device,
    d: *mut mlx5vf_dirty,
    ranges: *const mlx5vf_iova_range,
    nranges: u32,
    page_size: *mut u64,
    scratch: *mut c_void,
    scratch_len: usize,
) -> c_int {
    // SAFETY: `dev` and `d` are null or their storage (caller).
    let Some((c, tracker)) = (unsafe { device_and_tracker(dev, d) }) else {
        return -MLX5VF_EINVAL;
    };
    if ranges.is_null()
        || page_size.is_null()
        || scratch.is_null()
        || scratch_len < MLX5VF_DIRTY_SCRATCH_LEN
    {
        return -MLX5VF_EINVAL;
    }
    let Ok(n) = usize::try_from(nranges) else {
        return -MLX5VF_EINVAL;
    };
    // SAFETY: valid for `nranges` reads (caller); `mlx5vf_iova_range` is
    // plain old data.
    let ranges = unsafe { core::slice::from_raw_parts(ranges, n) };
    // SAFETY: valid for `scratch_len` bytes of writes (caller).
    let scratch = unsafe { core::slice::from_raw_parts_mut(scratch.cast::<u8>(), scratch_len) };
    // SAFETY: valid for reads (caller).
    let asked = unsafe { page_size.read() };
    let iter = ranges.iter().map(|r| IovaRange {
        iova: r.iova,
        length: r.length,
    });
    // SAFETY: the caller holds the lock.
    match unsafe { c.device() }.dirty_start(tracker, iter, asked, scratch) {
        Ok(tracked) => {
            // SAFETY: valid for writes (caller).
            unsafe { page_size.write(tracked) };
            0
        }
        Err(e) => errno(&e),
    }
}

/// `vfio_log_ops.log_stop`: destroys the tracker and its channel; also
/// ends the failed state a report left. Stopping when nothing runs does
/// nothing. **Lock held.**
///
/// Returns 0, or `-EINVAL` for storage that is not a device or tracker.
///
/// # Safety
/// As `mlx5vf_log_start()`, for `dev` and `d`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_log_stop(dev: *mut mlx5vf_device, d: *mut mlx5vf_dirty) -> c_int {
    // SAFETY: `dev` and `d` are null or their storage (caller).
    let Some((c, tracker)) = (unsafe { device_and_tracker(dev, d) }) else {
        return -MLX5VF_EINVAL;
    };
    // SAFETY: the caller holds the lock.
    match unsafe { c.device() }.dirty_stop(tracker) {
        Ok(()) => 0,
        Err(e) => errno(&e),
    }
}

/// The PF is disabling the VF (`MLX5_PF_NOTIFY_DISABLE_VF`): call before
/// `mlx5vf_vf_detach()`, while commands still reach firmware. Running
/// logging ends as Linux's driver ends it then: the tracker is destroyed
/// and its channel closed; reads fail with `-ENOTCONN` while the VF is
/// detached, then with `-EIO` until `mlx5vf_log_stop()`. Does nothing when
/// logging is not running. **Lock held.**
///
/// Returns 0, or `-EINVAL` for storage that is not a device or tracker.
///
/// # Safety
/// As `mlx5vf_log_start()`, for `dev` and `d`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_log_detach(dev: *mut mlx5vf_device, d: *mut mlx5vf_dirty) -> c_int {
    // SAFETY: `dev` and `d` are null or their storage (caller).
    let Some((c, tracker)) = (unsafe { device_and_tracker(dev, d) }) else {
        return -MLX5VF_EINVAL;
    };
    // SAFETY: the caller holds the lock.
    unsafe { c.device() }.dirty_detach(tracker);
    0
}

/// Where `mlx5vf_log_read_and_clear()` puts dirty extents: the caller's
/// `iova_bitmap_set(dirty, iova, length)`.
type SetDirtyFn = unsafe extern "C" fn(ctx: *mut c_void, iova: u64, length: u64);

struct CSink {
    set: SetDirtyFn,
    ctx: *mut c_void,
}

impl DirtySink for CSink {
    fn set_dirty(&mut self, iova: u64, length: u64) {
        // SAFETY: the caller's callback with its context, during the call.
        unsafe { (self.set)(self.ctx, iova, length) }
    }
}

/// `vfio_log_ops.log_read_and_clear`: reports the pages of `[iova, iova +
/// length)` the VF wrote since the last report, by calling
/// `set_dirty(set_ctx, iova, length)` for each dirty extent (clipped to the
/// window; pass `iova_bitmap_set`'s arguments through), and clears them on
/// the device. **Lock held**; may sleep in `report_next`.
///
/// Returns 0; `-EINVAL` (not started, or a window outside the ranges),
/// `-ENOTCONN`, `-ETIMEDOUT` (firmware went silent) or `-EIO` (the tracker
/// failed, a report broke a rule, or the channel broke). After `-EIO` or
/// `-ETIMEDOUT` logging has ended (the tracker and channel are freed) and
/// every read fails with `-EIO` until `mlx5vf_log_stop()`: the VMM must
/// take all memory as dirty.
///
/// # Safety
/// As `mlx5vf_log_start()`, for `dev` and `d`; `set_dirty` is callable with
/// `set_ctx` for the duration of the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_log_read_and_clear(
    dev: *mut mlx5vf_device,
    d: *mut mlx5vf_dirty,
    iova: u64,
    length: u64,
    // Spelled out, not `Option<SetDirtyFn>`: cbindgen turns an alias inside
    // `Option` into an opaque `struct Option_SetDirtyFn` no C caller can pass.
    set_dirty: Option<unsafe extern "C" fn(ctx: *mut c_void, iova: u64, length: u64)>,
    set_ctx: *mut c_void,
) -> c_int {
    // SAFETY: `dev` and `d` are null or their storage (caller).
    let Some((c, tracker)) = (unsafe { device_and_tracker(dev, d) }) else {
        return -MLX5VF_EINVAL;
    };
    let Some(set) = set_dirty else {
        return -MLX5VF_EINVAL;
    };
    let mut sink = CSink { set, ctx: set_ctx };
    // SAFETY: the caller holds the lock.
    match unsafe { c.device() }.dirty_read_and_clear(tracker, iova, length, &mut sink) {
        Ok(_) => 0,
        Err(e) => errno(&e),
    }
}
