//! Device storage and the device-level entry points: init/probe/fini, the
//! VFIO migration ops, reset, detach, open/close, the SAVE completion, and
//! the device lock with Linux's deferred reset.
//!
//! # Storage
//! [`mlx5vf_device`] is caller memory holding a `Ctx`: the callback table,
//! a few atomics readable without the lock, and the core's [`Device`] inside
//! an [`UnsafeCell`]. Shared references to the `Ctx` are
//! made freely; a `&mut Device` only by a function that holds the device
//! lock, and never across an unlock.

use core::cell::UnsafeCell;
use core::ffi::{c_int, c_void};
use core::mem::{align_of, size_of};
use core::ptr::{self, addr_of, addr_of_mut};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::SeqCst};

use mlx5vf_core::device::{Config, Device, DeviceError};
use mlx5vf_core::hal::{LoadToken, SaveToken};
use mlx5vf_core::load::LoadConfig;
use mlx5vf_core::save::{
    ChunkPolicy, DEFAULT_MEMORY_CAP, MAX_CHUNK_SLOTS, MAX_SAVE_BUFFER, PrecopyPolicy,
};
use mlx5vf_core::stream::MAX_RECORD_SIZE;
use mlx5vf_core::vfio::{MigState, Session};

use crate::abi::{
    MLX5VF_ABI_VERSION, MLX5VF_CFG_CHUNKS, MLX5VF_CFG_INTEGRITY, MLX5VF_CFG_LINUX_PRECOPY,
    MLX5VF_CFG_MEASURED_CHUNKS, MLX5VF_CFG_PRECOPY, MLX5VF_DEVICE_ALIGN, MLX5VF_DEVICE_SIZE,
    MLX5VF_EBUSY, MLX5VF_EINVAL, MLX5VF_ENODEV, MLX5VF_EPROTO, MLX5VF_NEW_RESUMING_FILE,
    MLX5VF_NEW_SAVING_FILE, MLX5VF_PAGE_SIZE, MLX5VF_PROBE_CHUNK_MODE, MLX5VF_PROBE_DIRTY_TRACKING,
    MLX5VF_PROBE_SCRATCH_LEN, MLX5VF_RETRY, mlx5vf_abi, mlx5vf_config, mlx5vf_device, mlx5vf_file,
    mlx5vf_platform_ops, mlx5vf_probe_info,
};
use crate::file::FileObj;
use crate::platform::{CHal, Ops};

/// `Ctx::magic` of a live device ("mlx5vfD1").
const MAGIC: u64 = u64::from_be_bytes(*b"mlx5vfD1");
/// `Ctx::magic` after `mlx5vf_device_fini()`.
const DEAD: u64 = u64::from_be_bytes(*b"mlx5vfXX");

/// What a [`mlx5vf_device`] holds.
#[repr(C)]
pub(crate) struct Ctx {
    /// [`MAGIC`] while initialised; read before anything else. Atomic:
    /// fini writes it while a thread that already found the device may
    /// still be reading it.
    magic: AtomicU64,
    pub(crate) ops: Ops,
    pub(crate) ctx: *mut c_void,
    /// Moves (under the lock, before `ops.wake`) whenever a waiter's
    /// condition may have changed.
    events: AtomicU32,
    /// A reset arrived while the lock was taken (`mlx5vf_reset_done()`).
    reset_pending: AtomicBool,
    /// Files handed out and not yet released.
    pub(crate) live_files: AtomicU32,
    /// `MLX5VF_MIGRATION_*` after probing (0 before).
    flags: AtomicU64,
    device: UnsafeCell<Device<CHal>>,
}

// The storage the header promises is enough for what it holds.
const _: () = assert!(size_of::<Ctx>() <= MLX5VF_DEVICE_SIZE);
const _: () = assert!(align_of::<Ctx>() <= MLX5VF_DEVICE_ALIGN);

impl Ctx {
    /// The device behind `dev`, if `dev` is an initialised device.
    ///
    /// # Safety
    /// `dev` is null or points to `MLX5VF_DEVICE_SIZE` bytes of storage
    /// aligned to `MLX5VF_DEVICE_ALIGN` that stay valid for `'a`
    /// (initialised or not: only the magic number is read before it vouches
    /// for the rest).
    pub(crate) unsafe fn from_raw<'a>(dev: *const mlx5vf_device) -> Option<&'a Self> {
        if dev.is_null() {
            return None;
        }
        let p = dev.cast::<Self>();
        // SAFETY: `dev` points to readable, suitably aligned storage
        // (caller); the magic is an AtomicU64 at offset 0 (any bit pattern
        // is a valid one), written only atomically.
        let magic = unsafe { &*addr_of!((*p).magic) }.load(SeqCst);
        // SAFETY: the magic says `mlx5vf_device_init()` wrote a `Ctx` here.
        (magic == MAGIC).then(|| unsafe { &*p })
    }

    /// The core device.
    ///
    /// # Safety
    /// The caller holds the device lock, and drops the reference before
    /// releasing it; no other reference to the device exists meanwhile (the
    /// lock serialises every holder).
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn device(&self) -> &mut Device<CHal> {
        // SAFETY: exclusive by the caller's lock (see above).
        unsafe { &mut *self.device.get() }
    }

    /// Tells waiters to look again: move the event counter, then wake them.
    /// Called with the lock held.
    pub(crate) fn notify(&self) {
        self.events.fetch_add(1, SeqCst);
        // SAFETY: the caller's callback; the lock is held as `wake` expects.
        unsafe { (self.ops.wake)(self.ctx) }
    }

    pub(crate) fn lock(&self) {
        // SAFETY: the caller's callback.
        unsafe { (self.ops.lock)(self.ctx) }
    }

    /// Releases the lock, first running a reset that arrived meanwhile
    /// (Linux's `mlx5vf_state_mutex_unlock()`).
    ///
    /// `mlx5vf_reset_done()` sets `reset_pending` and then tries the lock. If
    /// it sets the flag before our check below, we run the reset; if after,
    /// either its `trylock` succeeds (we had unlocked: it runs the reset) or
    /// it fails because someone holds the lock, and whoever that is, us
    /// included, sees the flag after unlocking and comes back here.
    pub(crate) fn unlock(&self) {
        loop {
            if self.reset_pending.swap(false, SeqCst) {
                // SAFETY: the lock is held here (on entry, or by the
                // successful trylock below).
                unsafe { self.run_deferred_reset() };
                continue;
            }
            // SAFETY: the caller's callback; we hold the lock.
            unsafe { (self.ops.unlock)(self.ctx) };
            if !self.reset_pending.load(SeqCst) {
                return;
            }
            // SAFETY: the caller's callback.
            if !unsafe { (self.ops.trylock)(self.ctx) } {
                return;
            }
        }
    }

    /// The reset a racing `mlx5vf_reset_done()` left us. Out of line and
    /// cold: inlined, the whole reset path would sit in the frame of every
    /// caller of [`Ctx::unlock`] (the read loop among them).
    ///
    /// # Safety
    /// The lock is held.
    #[cold]
    #[inline(never)]
    unsafe fn run_deferred_reset(&self) {
        // SAFETY: locked (caller).
        unsafe { self.device() }.handle_reset();
        self.notify();
    }
}

/// The core's policy from the caller's; `None` if out of range.
fn config_from_c(c: &mlx5vf_config) -> Option<Config> {
    // CAST: 4096.
    let page = MLX5VF_PAGE_SIZE as u64;
    let slots = u8::try_from(c.chunk_slots).ok()?;
    let ok = (page..=MAX_SAVE_BUFFER).contains(&c.chunk_size)
        && (page..=MAX_SAVE_BUFFER).contains(&c.max_save_buffer)
        && (1..=MAX_RECORD_SIZE).contains(&c.max_image)
        // CAST: MAX_CHUNK_SLOTS is 8.
        && (1..=MAX_CHUNK_SLOTS as u8).contains(&slots)
        && c.flags
            & !(MLX5VF_CFG_CHUNKS
                | MLX5VF_CFG_PRECOPY
                | MLX5VF_CFG_INTEGRITY
                | MLX5VF_CFG_LINUX_PRECOPY
                | MLX5VF_CFG_MEASURED_CHUNKS)
            == 0;
    if !ok {
        return None;
    }
    let default = Config::default();
    Some(Config {
        chunk_size: c.chunk_size,
        chunk_slots: slots,
        max_save_buffer: c.max_save_buffer,
        load: LoadConfig {
            page_size: page,
            max_image: c.max_image,
            max_hint: c.max_hint,
        },
        use_chunks: c.flags & MLX5VF_CFG_CHUNKS != 0,
        use_precopy: c.flags & MLX5VF_CFG_PRECOPY != 0,
        integrity_records: c.flags & MLX5VF_CFG_INTEGRITY != 0,
        precopy_policy: if c.flags & MLX5VF_CFG_LINUX_PRECOPY != 0 {
            PrecopyPolicy::Linux
        } else {
            PrecopyPolicy::Chunked
        },
        // Measuring needs the platform's clock too (`now_ns`); without it
        // the core measures nothing and `chunk_size` stays either way.
        chunk_policy: if c.flags & MLX5VF_CFG_MEASURED_CHUNKS != 0 {
            ChunkPolicy::Measured {
                memory_cap: if c.memory_cap == 0 {
                    DEFAULT_MEMORY_CAP
                } else {
                    c.memory_cap
                },
            }
        } else {
            ChunkPolicy::Fixed
        },
        producer: if c.producer.iter().all(|&b| b == 0) {
            default.producer
        } else {
            c.producer
        },
    })
}

/// Fills `*cfg` with the defaults: the Linux buffer policy (8 MiB chunks, 2
/// slots), chunk mode, PRE_COPY (chunked) and the integrity records on.
///
/// # Safety
/// `cfg` is null (nothing happens) or valid for writing a `struct
/// mlx5vf_config`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_config_default(cfg: *mut mlx5vf_config) {
    if cfg.is_null() {
        return;
    }
    let d = Config::default();
    let c = mlx5vf_config {
        chunk_size: d.chunk_size,
        max_save_buffer: d.max_save_buffer,
        max_image: d.load.max_image,
        max_hint: d.load.max_hint,
        memory_cap: match d.chunk_policy {
            ChunkPolicy::Measured { memory_cap } => memory_cap,
            ChunkPolicy::Fixed => DEFAULT_MEMORY_CAP,
        },
        chunk_slots: u32::from(d.chunk_slots),
        flags: (if d.use_chunks { MLX5VF_CFG_CHUNKS } else { 0 })
            | (if d.use_precopy { MLX5VF_CFG_PRECOPY } else { 0 })
            | (if d.integrity_records {
                MLX5VF_CFG_INTEGRITY
            } else {
                0
            })
            | (if d.precopy_policy == PrecopyPolicy::Linux {
                MLX5VF_CFG_LINUX_PRECOPY
            } else {
                0
            })
            | (if matches!(d.chunk_policy, ChunkPolicy::Measured { .. }) {
                MLX5VF_CFG_MEASURED_CHUNKS
            } else {
                0
            }),
        producer: d.producer,
    };
    // SAFETY: `cfg` is valid for writes (caller).
    unsafe { cfg.write(c) }
}

/// This library's view of the ABI: what `mlx5vf_device_init_abi()`
/// compares the caller's header with.
pub const fn library_abi() -> mlx5vf_abi {
    // CAST: every structure is a few KiB at most.
    mlx5vf_abi {
        version: MLX5VF_ABI_VERSION,
        device_size: size_of::<mlx5vf_device>() as u32,
        file_size: size_of::<mlx5vf_file>() as u32,
        config_size: size_of::<mlx5vf_config>() as u32,
        probe_info_size: size_of::<mlx5vf_probe_info>() as u32,
        ops_size: size_of::<mlx5vf_platform_ops>() as u32,
    }
}

/// Initialises device storage in place: no lock is needed (nothing else can
/// use it yet). `ops` is copied (it need not outlive the call); `ctx` is
/// passed to every callback; `config` may be `NULL` for the defaults. The
/// device starts RUNNING and unprobed; call `mlx5vf_device_probe()`.
///
/// Call it through the header's `mlx5vf_device_init()`, which passes `abi`
/// as the caller's header describes the ABI.
///
/// Returns 0; `-EPROTO` when `abi` is `NULL` or differs from this library's
/// (the caller was built with another version's header: nothing was
/// touched); `-EINVAL` for a `NULL` `dev`/`ops`, a `NULL` callback or a
/// configuration out of range.
///
/// # Safety
/// `dev` points to `MLX5VF_DEVICE_SIZE` writable bytes aligned to
/// `MLX5VF_DEVICE_ALIGN` that nothing else uses, and that are not a live
/// device (re-initialising one leaks what it holds); `ops`, `config` and
/// `abi` are null or valid for reads.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_device_init_abi(
    dev: *mut mlx5vf_device,
    ops: *const mlx5vf_platform_ops,
    ctx: *mut c_void,
    config: *const mlx5vf_config,
    abi: *const mlx5vf_abi,
) -> c_int {
    // SAFETY: `abi` is null or valid for reads (caller). Checked first: with
    // another header, the other pointers' structures cannot be trusted.
    if abi.is_null() || unsafe { *abi } != library_abi() {
        return -MLX5VF_EPROTO;
    }
    if dev.is_null() || ops.is_null() {
        return -MLX5VF_EINVAL;
    }
    // SAFETY: `ops` is valid for reads (caller).
    let Some(ops) = Ops::from_table(unsafe { &*ops }) else {
        return -MLX5VF_EINVAL;
    };
    let cfg = if config.is_null() {
        Config::default()
    } else {
        // SAFETY: `config` is valid for reads (caller).
        match config_from_c(unsafe { &*config }) {
            Some(c) => c,
            None => return -MLX5VF_EINVAL,
        }
    };
    let p = dev.cast::<Ctx>();
    // SAFETY: `dev` is writable, aligned and large enough for a `Ctx` (the
    // const assertions above and the caller's promise). Each field is
    // written in place through raw pointers, the device straight into its
    // cell, so the multi-KiB `Device` is never built on this stack frame
    // and no reference to uninitialised memory is made. The magic number
    // goes last: until then no other entry point treats the storage as a
    // device.
    unsafe {
        addr_of_mut!((*p).magic).write(AtomicU64::new(0));
        addr_of_mut!((*p).ops).write(ops);
        addr_of_mut!((*p).ctx).write(ctx);
        addr_of_mut!((*p).events).write(AtomicU32::new(0));
        addr_of_mut!((*p).reset_pending).write(AtomicBool::new(false));
        addr_of_mut!((*p).live_files).write(AtomicU32::new(0));
        addr_of_mut!((*p).flags).write(AtomicU64::new(0));
        UnsafeCell::raw_get(addr_of!((*p).device)).write(Device::new(CHal { ops, ctx }, cfg));
        (*addr_of!((*p).magic)).store(MAGIC, SeqCst);
    }
    0
}

/// Tears a device down: closes both files (freeing their buffers) and
/// drops the device. Takes the lock itself: call it **without** the lock.
///
/// Returns 0, `-EBUSY` while files are still live (release them first),
/// `MLX5VF_RETRY` while a SAVE is in flight (wait for its completion to be
/// delivered, then call again), `-EINVAL` for storage that is not a live
/// device. After 0 the storage may be freed once no thread is still inside
/// a call on it (flush the completion work item first: its
/// `mlx5vf_unlock()` may still be returning).
///
/// # Safety
/// `dev` is null or points to device storage; nothing else uses the device
/// during the call (no waiter, no other entry point) except the delivery of
/// an outstanding SAVE completion.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_device_fini(dev: *mut mlx5vf_device) -> c_int {
    // SAFETY: `dev` is null or device storage (caller).
    let Some(c) = (unsafe { Ctx::from_raw(dev) }) else {
        return -MLX5VF_EINVAL;
    };
    if c.live_files.load(SeqCst) != 0 {
        return -MLX5VF_EBUSY;
    }
    c.lock();
    {
        // SAFETY: locked.
        let d = unsafe { c.device() };
        d.close();
        if !d.is_idle() {
            // Only the SAVE or LOAD in flight keeps it busy (no file is
            // live): its completion moves the event counter.
            c.unlock();
            return MLX5VF_RETRY;
        }
    }
    let (unlock, ctx) = (c.ops.unlock, c.ctx);
    let p = dev.cast::<Ctx>();
    // Mark the storage dead first, so a call that comes later is refused.
    c.magic.store(DEAD, SeqCst);
    // SAFETY: the lock is held, the device idle and no file live: nothing
    // can reach the device (`c` is not used again). Drop it in place, then
    // release the caller's lock with its plain callback (no deferred reset
    // for a device that is gone).
    unsafe {
        ptr::drop_in_place(UnsafeCell::raw_get(addr_of!((*p).device)));
        unlock(ctx);
    }
    0
}

/// Probes VF `vf` (0-based) of the PF: migration support, VHCA id, PRE_COPY
/// and chunk-mode capabilities. `scratch` is `scratch_len` bytes
/// (at least `MLX5VF_PROBE_SCRATCH_LEN`) the device uses during the call
/// only. The state becomes RUNNING. **Lock held** (or not yet shared).
///
/// Returns 0, `-EOPNOTSUPP` if the VF cannot migrate (capability missing),
/// `-EINVAL` for a short or `NULL` scratch or an unknown device, or the
/// errno of the failed command.
///
/// # Safety
/// `dev` is null or device storage; `scratch` is null or valid for
/// `scratch_len` bytes of writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_device_probe(
    dev: *mut mlx5vf_device,
    vf: u16,
    scratch: *mut c_void,
    scratch_len: usize,
) -> c_int {
    // SAFETY: `dev` is null or device storage (caller).
    let Some(c) = (unsafe { Ctx::from_raw(dev) }) else {
        return -MLX5VF_EINVAL;
    };
    if scratch.is_null() || scratch_len < MLX5VF_PROBE_SCRATCH_LEN {
        return -MLX5VF_EINVAL;
    }
    // SAFETY: `scratch` is valid for `scratch_len` bytes (caller) and not
    // otherwise referenced during the call.
    let scratch = unsafe { core::slice::from_raw_parts_mut(scratch.cast::<u8>(), scratch_len) };
    // SAFETY: the caller holds the lock.
    let d = unsafe { c.device() };
    match d.probe(vf, scratch) {
        Ok(p) => {
            c.flags.store(p.flags.into_bits(), SeqCst);
            0
        }
        Err(e) => errno(&e),
    }
}

/// What probing found. **Lock held.** Returns 0, or `-ENODEV` before a
/// successful probe, `-EINVAL` for `NULL` arguments.
///
/// # Safety
/// `dev` is null or device storage; `info` is null or valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_device_probe_info(
    dev: *const mlx5vf_device,
    info: *mut mlx5vf_probe_info,
) -> c_int {
    // SAFETY: `dev` is null or device storage (caller).
    let Some(c) = (unsafe { Ctx::from_raw(dev) }) else {
        return -MLX5VF_EINVAL;
    };
    if info.is_null() {
        return -MLX5VF_EINVAL;
    }
    // SAFETY: the caller holds the lock.
    let Some(p) = unsafe { c.device() }.probed().copied() else {
        return -MLX5VF_ENODEV;
    };
    let out = mlx5vf_probe_info {
        migration_flags: p.flags.into_bits(),
        vf: p.vf,
        vhca_id: p.vhca_id,
        flags: (if p.chunk_mode {
            MLX5VF_PROBE_CHUNK_MODE
        } else {
            0
        }) | (if p.dirty_tracking {
            MLX5VF_PROBE_DIRTY_TRACKING
        } else {
            0
        }),
    };
    // SAFETY: `info` is valid for writes (caller).
    unsafe { info.write(out) };
    0
}

/// The `MLX5VF_MIGRATION_*` flags to advertise (`vdev->migration_flags`);
/// 0 before a successful probe or for an unknown device. No lock needed.
///
/// # Safety
/// `dev` is null or device storage.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_migration_flags(dev: *const mlx5vf_device) -> u64 {
    // SAFETY: `dev` is null or device storage (caller).
    unsafe { Ctx::from_raw(dev) }.map_or(0, |c| c.flags.load(SeqCst))
}

/// Takes the device lock (the platform's `lock` callback). Equivalent to
/// taking your mutex directly.
///
/// # Safety
/// `dev` is null (nothing happens) or device storage.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_lock(dev: *mut mlx5vf_device) {
    // SAFETY: `dev` is null or device storage (caller).
    if let Some(c) = unsafe { Ctx::from_raw(dev) } {
        c.lock();
    }
}

/// Releases the device lock, first running a reset `mlx5vf_reset_done()`
/// deferred (Linux's `mlx5vf_state_mutex_unlock()`). Every release of the
/// device lock must go through here, never a bare `mutex_unlock()`.
///
/// # Safety
/// `dev` is null (nothing happens) or device storage whose lock the caller
/// holds.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_unlock(dev: *mut mlx5vf_device) {
    // SAFETY: `dev` is null or device storage (caller).
    if let Some(c) = unsafe { Ctx::from_raw(dev) } {
        c.unlock();
    }
}

/// The event counter: it moves (and the `wake` callback runs) whenever a
/// blocked reader or a `MLX5VF_RETRY` loop may make progress. Read it
/// before a call that may return `MLX5VF_RETRY`, then sleep until it
/// differs. No lock needed (an atomic load); safe in a `wait_event()`
/// condition.
///
/// # Safety
/// `dev` is null (returns 0) or device storage.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_events(dev: *const mlx5vf_device) -> u32 {
    // SAFETY: `dev` is null or device storage (caller).
    unsafe { Ctx::from_raw(dev) }.map_or(0, |c| c.events.load(SeqCst))
}

/// VFIO `migration_set_state`: walks to `new_state` one arc at a time (the
/// arcs of `vfio_mig_get_next_state()`), issuing the firmware commands of
/// each. **Lock held.**
///
/// Returns
/// - 0: the device is in `new_state` (the `NULL` file of Linux);
/// - `MLX5VF_NEW_SAVING_FILE` / `MLX5VF_NEW_RESUMING_FILE`: done, and
///   `*file` now holds a new migration file (turn it into an fd; if you
///   cannot, drop the lock and `mlx5vf_file_release()` it);
/// - `MLX5VF_RETRY`: a SAVE is in flight. Drop the lock, wait for
///   `mlx5vf_events()` to move past the value read before the call, retake
///   the lock and call again with the same `new_state`: the walk continues
///   from the state reached (which `mlx5vf_get_state()` reports);
/// - a negative errno: the walk stopped at the state `mlx5vf_get_state()`
///   reports. `-EINVAL` for an unknown, unsupported or unreachable state
///   (e.g. STOP_COPY to PRE_COPY) or an incomplete stream when leaving
///   RESUMING, `-EIO` when leaving PRE_COPY after its file failed,
///   `-ENOTCONN` when detached, `-ENODEV` before probing, else the failed
///   command's errno.
///
/// `file` is where a new file goes: it must not be `NULL` (`-EINVAL`, even
/// for a target that opens none) and must not hold a live file.
///
/// # Safety
/// `dev` is null or device storage; `file` is null or valid for writing a
/// `struct mlx5vf_file`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_set_state(
    dev: *mut mlx5vf_device,
    new_state: u32,
    file: *mut mlx5vf_file,
) -> c_int {
    // SAFETY: `dev` is null or device storage (caller).
    let Some(c) = (unsafe { Ctx::from_raw(dev) }) else {
        return -MLX5VF_EINVAL;
    };
    if file.is_null() {
        return -MLX5VF_EINVAL;
    }
    let Ok(target) = MigState::from_raw(new_state) else {
        return -MLX5VF_EINVAL;
    };
    // SAFETY: the caller holds the lock.
    let d = unsafe { c.device() };
    let before = d.state();
    if before == target {
        return 0;
    }
    let result = d.set_state(target);
    let moved = d.state() != before;
    let rc = match result {
        Ok(None) => 0,
        Ok(Some(id)) => {
            let obj = FileObj {
                dev: ptr::from_ref(c),
                id: id.to_bits(),
            };
            // SAFETY: `file` is valid for writes (caller) and large enough
            // (`FileObj` fits `mlx5vf_file`, asserted in `file`).
            unsafe { file.cast::<FileObj>().write(obj) };
            c.live_files.fetch_add(1, SeqCst);
            match id.kind() {
                Session::Saving => MLX5VF_NEW_SAVING_FILE,
                Session::Resuming => MLX5VF_NEW_RESUMING_FILE,
            }
        }
        // LoadInFlight only comes from platforms that LOAD asynchronously;
        // the C ABI's platforms LOAD through exec(), but the wait is the same.
        Err(e)
            if matches!(
                e.error,
                DeviceError::SaveInFlight | DeviceError::LoadInFlight
            ) =>
        {
            if moved {
                c.notify();
            }
            return MLX5VF_RETRY;
        }
        Err(e) => errno(&e.error),
    };
    // Arcs close files and fail them: blocked readers must look again.
    c.notify();
    rc
}

/// VFIO `migration_get_state`. **Lock held.** Returns 0, or `-EINVAL` for
/// `NULL` arguments.
///
/// # Safety
/// `dev` is null or device storage; `state` is null or valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_get_state(dev: *const mlx5vf_device, state: *mut u32) -> c_int {
    // SAFETY: `dev` is null or device storage (caller).
    let Some(c) = (unsafe { Ctx::from_raw(dev) }) else {
        return -MLX5VF_EINVAL;
    };
    if state.is_null() {
        return -MLX5VF_EINVAL;
    }
    // SAFETY: the caller holds the lock; `state` is valid for writes.
    unsafe { state.write(c.device().state().raw()) };
    0
}

/// VFIO `migration_get_data_size` (`VFIO_DEVICE_FEATURE_MIG_DATA_SIZE`):
/// bytes the stop-copy phase will produce. Any state. **Lock held.**
///
/// Returns 0, `-ENODEV` before probing, `-ENOTCONN` when detached, or the
/// QUERY's errno.
///
/// # Safety
/// `dev` is null or device storage; `size` is null or valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_get_data_size(dev: *mut mlx5vf_device, size: *mut u64) -> c_int {
    // SAFETY: `dev` is null or device storage (caller).
    let Some(c) = (unsafe { Ctx::from_raw(dev) }) else {
        return -MLX5VF_EINVAL;
    };
    if size.is_null() {
        return -MLX5VF_EINVAL;
    }
    // SAFETY: the caller holds the lock.
    match unsafe { c.device() }.data_size() {
        Ok(n) => {
            // SAFETY: `size` is valid for writes (caller).
            unsafe { size.write(n) };
            0
        }
        Err(e) => errno(&e),
    }
}

/// The PCI reset of the VF completed (`pci_error_handlers.reset_done`).
/// Call it **without** the lock, from any context that may take a mutex
/// with `trylock`; it never sleeps. The state becomes RUNNING and both files
/// close (readers get `-ENODEV`): right now if the lock is free, otherwise
/// when its holder calls `mlx5vf_unlock()` (Linux's `deferred_reset`, which
/// avoids the ABBA between the state mutex and the reset path's locks).
///
/// # Safety
/// `dev` is null (nothing happens) or device storage.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_reset_done(dev: *mut mlx5vf_device) {
    // SAFETY: `dev` is null or device storage (caller).
    let Some(c) = (unsafe { Ctx::from_raw(dev) }) else {
        return;
    };
    c.reset_pending.store(true, SeqCst);
    // SAFETY: the caller's callback.
    if unsafe { (c.ops.trylock)(c.ctx) } {
        c.unlock();
    }
}

/// The PF is disabling the VF (`MLX5_PF_NOTIFY_DISABLE_VF`): both files
/// close while commands still reach firmware, then every command for the VF
/// fails with `-ENOTCONN` until `mlx5vf_vf_attach()`. **Lock held.**
///
/// # Safety
/// `dev` is null (nothing happens) or device storage.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_vf_detach(dev: *mut mlx5vf_device) {
    // SAFETY: `dev` is null or device storage (caller).
    if let Some(c) = unsafe { Ctx::from_raw(dev) } {
        // SAFETY: the caller holds the lock.
        unsafe { c.device() }.handle_detach();
        c.notify();
    }
}

/// The PF re-enabled the VF (`MLX5_PF_NOTIFY_ENABLE_VF`). **Lock held.**
///
/// # Safety
/// `dev` is null (nothing happens) or device storage.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_vf_attach(dev: *mut mlx5vf_device) {
    // SAFETY: `dev` is null or device storage (caller).
    if let Some(c) = unsafe { Ctx::from_raw(dev) } {
        // SAFETY: the caller holds the lock.
        unsafe { c.device() }.handle_attach();
    }
}

/// VFIO `close_device`: both files close (readers get `-ENODEV`) and their
/// buffers are freed (a buffer a SAVE still writes into is freed when its
/// completion arrives). **Lock held.**
///
/// # Safety
/// `dev` is null (nothing happens) or device storage.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_close_device(dev: *mut mlx5vf_device) {
    // SAFETY: `dev` is null or device storage (caller).
    if let Some(c) = unsafe { Ctx::from_raw(dev) } {
        // SAFETY: the caller holds the lock.
        unsafe { c.device() }.close();
        c.notify();
    }
}

/// VFIO `open_device`: the migration state becomes RUNNING. **Lock held.**
///
/// # Safety
/// `dev` is null (nothing happens) or device storage.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_open_device(dev: *mut mlx5vf_device) {
    // SAFETY: `dev` is null or device storage (caller).
    if let Some(c) = unsafe { Ctx::from_raw(dev) } {
        // SAFETY: the caller holds the lock.
        unsafe { c.device() }.open();
    }
}

/// Delivers the completion of the SAVE started with `token` (by
/// `start_save`). Call it from the completion's **work item, with the lock
/// held** — never from the command interface's interrupt/atomic callback.
/// `status` is 0 when firmware answered (`out` holds `out_len` bytes of
/// `save_vhca_state_out`, whatever its status byte says), or the negative
/// errno of a command that did not complete (`out` is ignored; the file
/// fails). Deliver every started SAVE exactly once, even after its file
/// closed.
///
/// Returns 0, or `-EINVAL` for a token that names no SAVE in flight
/// (nothing changes).
///
/// # Safety
/// `dev` is null or device storage; `out` is null or valid for `out_len`
/// bytes of reads.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_save_complete(
    dev: *mut mlx5vf_device,
    token: u64,
    status: c_int,
    out: *const c_void,
    out_len: usize,
) -> c_int {
    // SAFETY: forwarded from the caller.
    unsafe {
        deliver(dev, status, out, out_len, |d, output| {
            d.handle_save_completion(SaveToken::from_bits(token), output)
        })
    }
}
/// Delivers the completion of the LOAD started with `token` (by the
/// optional `start_load`), as `mlx5vf_save_complete()` does for SAVEs: from
/// the completion's **work item, with the lock held**; `status` 0 with
/// `out`/`out_len` the `load_vhca_state_out` firmware wrote, or the negative
/// errno of a command that did not complete. A refused LOAD fails the
/// resuming file (the next write and RESUMING -> STOP report firmware's
/// status). Deliver every started LOAD exactly once, even after its file
/// closed (its memory is freed here then).
///
/// Returns 0, or `-EINVAL` for a token that names no LOAD in flight
/// (nothing changes).
///
/// # Safety
/// `dev` is null or device storage; `out` is null or valid for `out_len`
/// bytes of reads.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_load_complete(
    dev: *mut mlx5vf_device,
    token: u64,
    status: c_int,
    out: *const c_void,
    out_len: usize,
) -> c_int {
    // SAFETY: forwarded from the caller.
    unsafe {
        deliver(dev, status, out, out_len, |d, output| {
            d.handle_load_completion(LoadToken::from_bits(token), output)
        })
    }
}

/// The body of both completion entry points: the output (empty when the
/// command did not complete, which the core treats as a failed command)
/// handed to `handle`, then waiters woken.
///
/// # Safety
/// As the entry points: `dev` is null or device storage whose lock the
/// caller holds; `out` is null or valid for `out_len` bytes of reads.
unsafe fn deliver(
    dev: *mut mlx5vf_device,
    status: c_int,
    out: *const c_void,
    out_len: usize,
    handle: impl FnOnce(&mut Device<CHal>, &[u8]) -> Result<(), DeviceError>,
) -> c_int {
    // SAFETY: `dev` is null or device storage (caller).
    let Some(c) = (unsafe { Ctx::from_raw(dev) }) else {
        return -MLX5VF_EINVAL;
    };
    let output: &[u8] = if status != 0 || out.is_null() {
        &[]
    } else {
        // SAFETY: `out` is valid for `out_len` bytes of reads (caller).
        unsafe { core::slice::from_raw_parts(out.cast::<u8>(), out_len) }
    };
    // SAFETY: the caller holds the lock.
    match handle(unsafe { c.device() }, output) {
        Ok(()) => {
            c.notify();
            0
        }
        Err(e) => errno(&e),
    }
}
/// `-errno` for a device error.
pub(crate) fn errno(e: &DeviceError) -> c_int {
    e.errno().code().saturating_neg()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header's size is enough and not wasteful: on a mismatch, set
    /// `MLX5VF_DEVICE_SIZE` to the size printed and regenerate the header.
    #[test]
    fn device_storage_is_tight() {
        let need = size_of::<Ctx>().next_multiple_of(MLX5VF_DEVICE_ALIGN);
        assert!(
            need <= MLX5VF_DEVICE_SIZE && MLX5VF_DEVICE_SIZE - need < 256,
            "Ctx needs {need} bytes; MLX5VF_DEVICE_SIZE is {MLX5VF_DEVICE_SIZE}"
        );
    }
}
