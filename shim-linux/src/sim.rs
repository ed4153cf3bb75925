//! Test only (feature `test-sim`, hosted targets): the simulated firmware
//! behind `extern "C"` entry points, so the C harness (`tests/c/harness.c`)
//! can implement the platform callbacks over it the way a kernel driver
//! implements them over `mlx5_core`.
//!
//! The harness owns all buffer memory (malloc); it registers each buffer's
//! range with [`mlx5vf_sim_mem_add`] under an IOVA of its choosing, maps it
//! for the device with [`mlx5vf_sim_iommu_map`], and the simulated firmware
//! then reads and writes it through memory keys, as real firmware DMAs into
//! pages. One mutex serialises the firmware: synchronous commands and the
//! harness's "firmware thread" running SAVEs may call concurrently.

#![allow(non_camel_case_types)]

use core::ffi::{c_char, c_int, c_void};
use std::boxed::Box;
use std::ffi::CStr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::vec::Vec;

use ::mlx5vf_sim::{Dma, DmaFault, Firmware, FirmwareConfig, SimSpec};

use crate::abi::{
    MLX5VF_EINVAL, MLX5VF_ENOMEM, MLX5VF_REPORT_CQE, MLX5VF_REPORT_OBJECT_CHANGED,
    MLX5VF_REPORT_TIMED_OUT,
};

/// A registered range of harness memory.
struct Region {
    iova: u64,
    ptr: *mut u8,
    len: usize,
}

/// Harness memory as the device sees it.
#[derive(Default)]
struct HostMemory {
    regions: Vec<Region>,
}

impl HostMemory {
    /// The registered range holding `[iova, iova + len)`, as a pointer to
    /// its first byte.
    fn find(&self, iova: u64, len: usize) -> Option<*mut u8> {
        let len = u64::try_from(len).ok()?;
        self.regions.iter().find_map(|r| {
            let off = iova.checked_sub(r.iova)?;
            let end = off.checked_add(len)?;
            let r_len = u64::try_from(r.len).ok()?;
            (end <= r_len).then(|| r.ptr.wrapping_add(usize::try_from(off).unwrap_or(0)))
        })
    }
}

impl Dma for HostMemory {
    fn dma_write(
        &mut self,
        iova: u64,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> Result<(), DmaFault> {
        let p = self.find(iova, len).ok_or(DmaFault)?;
        // SAFETY: `p..p+len` lies in a range the harness registered as
        // memory it owns until `mlx5vf_sim_mem_remove`; the harness does not
        // touch a buffer while a SAVE writes it (the core's contract), and
        // the sim mutex serialises device accesses.
        fill(unsafe { core::slice::from_raw_parts_mut(p, len) });
        Ok(())
    }

    fn dma_read(
        &mut self,
        iova: u64,
        len: usize,
        consume: &mut dyn FnMut(&[u8]),
    ) -> Result<(), DmaFault> {
        let p = self.find(iova, len).ok_or(DmaFault)?;
        // SAFETY: as in `dma_write`, for reads.
        consume(unsafe { core::slice::from_raw_parts(p, len) });
        Ok(())
    }
}

struct Inner {
    fw: Box<Firmware>,
    mem: HostMemory,
}

/// A simulated PF (opaque to C).
pub struct mlx5vf_sim {
    inner: Mutex<Inner>,
}

impl mlx5vf_sim {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The simulator behind `sim`.
///
/// # Safety
/// `sim` is null or came from `mlx5vf_sim_new` and was not freed.
unsafe fn get<'a>(sim: *const mlx5vf_sim) -> Option<&'a mlx5vf_sim> {
    // SAFETY: see above.
    unsafe { sim.as_ref() }
}

/// A simulated PF from a device spec (`"sim:state=20M,seed=5"`); `NULL` for
/// a bad spec.
///
/// # Safety
/// `spec` is a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_sim_new(spec: *const c_char) -> *mut mlx5vf_sim {
    if spec.is_null() {
        return core::ptr::null_mut();
    }
    // SAFETY: NUL-terminated (caller).
    let Ok(text) = unsafe { CStr::from_ptr(spec) }.to_str() else {
        return core::ptr::null_mut();
    };
    let Ok(spec) = text.parse::<SimSpec>() else {
        return core::ptr::null_mut();
    };
    let Ok(fw) = Firmware::new(&FirmwareConfig::from_spec(&spec)) else {
        return core::ptr::null_mut();
    };
    Box::into_raw(Box::new(mlx5vf_sim {
        inner: Mutex::new(Inner {
            fw: Box::new(fw),
            mem: HostMemory::default(),
        }),
    }))
}

/// Frees a simulator.
///
/// # Safety
/// `sim` is null or came from `mlx5vf_sim_new`; no call on it runs or
/// follows.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_sim_free(sim: *mut mlx5vf_sim) {
    if !sim.is_null() {
        // SAFETY: from `Box::into_raw` (caller), freed once.
        drop(unsafe { Box::from_raw(sim) });
    }
}

/// Executes one command (DMA through registered memory). Returns 0 (status
/// in `out[0]`) or `-EINVAL` (bad arguments, `out_len < 16`).
///
/// # Safety
/// `input`/`out` are valid for `in_len`/`out_len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_sim_exec(
    sim: *mut mlx5vf_sim,
    input: *const c_void,
    in_len: usize,
    out: *mut c_void,
    out_len: usize,
) -> c_int {
    // SAFETY: forwarded from the caller.
    let Some(s) = (unsafe { get(sim) }) else {
        return -MLX5VF_EINVAL;
    };
    if input.is_null() || out.is_null() {
        return -MLX5VF_EINVAL;
    }
    // SAFETY: valid for the lengths given (caller); distinct buffers.
    let (input, out) = unsafe {
        (
            core::slice::from_raw_parts(input.cast::<u8>(), in_len),
            core::slice::from_raw_parts_mut(out.cast::<u8>(), out_len),
        )
    };
    let mut g = s.lock();
    let Inner { fw, mem } = &mut *g;
    match fw.exec(input, out, mem) {
        Ok(()) => 0,
        Err(_) => -MLX5VF_EINVAL,
    }
}

/// Registers `len` bytes at `ptr` as device-visible memory at `iova`
/// (still to be IOMMU-mapped). Returns 0 or `-EINVAL`.
///
/// # Safety
/// `ptr` is valid for `len` bytes until `mlx5vf_sim_mem_remove(iova)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_sim_mem_add(
    sim: *mut mlx5vf_sim,
    iova: u64,
    ptr: *mut c_void,
    len: usize,
) -> c_int {
    // SAFETY: forwarded from the caller.
    let Some(s) = (unsafe { get(sim) }) else {
        return -MLX5VF_EINVAL;
    };
    if ptr.is_null() || len == 0 {
        return -MLX5VF_EINVAL;
    }
    let mut g = s.lock();
    if g.mem.regions.try_reserve(1).is_err() {
        return -MLX5VF_ENOMEM;
    }
    g.mem.regions.push(Region {
        iova,
        ptr: ptr.cast(),
        len,
    });
    0
}

/// Forgets the range registered at `iova`. Returns 0 or `-EINVAL`.
///
/// # Safety
/// `sim` is null or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_sim_mem_remove(sim: *mut mlx5vf_sim, iova: u64) -> c_int {
    // SAFETY: forwarded from the caller.
    let Some(s) = (unsafe { get(sim) }) else {
        return -MLX5VF_EINVAL;
    };
    let mut g = s.lock();
    let before = g.mem.regions.len();
    g.mem.regions.retain(|r| r.iova != iova);
    if g.mem.regions.len() == before {
        -MLX5VF_EINVAL
    } else {
        0
    }
}

/// Maps `[iova, iova + len)` in the simulated IOMMU. Returns 0 or `-EINVAL`.
///
/// # Safety
/// `sim` is null or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_sim_iommu_map(sim: *mut mlx5vf_sim, iova: u64, len: u64) -> c_int {
    // SAFETY: forwarded from the caller.
    let Some(s) = (unsafe { get(sim) }) else {
        return -MLX5VF_EINVAL;
    };
    match s.lock().fw.iommu_map(iova, len) {
        Ok(()) => 0,
        Err(_) => -MLX5VF_EINVAL,
    }
}

/// Unmaps `[iova, iova + len)` from the simulated IOMMU. Returns 0 or
/// `-EINVAL`.
///
/// # Safety
/// `sim` is null or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_sim_iommu_unmap(
    sim: *mut mlx5vf_sim,
    iova: u64,
    len: u64,
) -> c_int {
    // SAFETY: forwarded from the caller.
    let Some(s) = (unsafe { get(sim) }) else {
        return -MLX5VF_EINVAL;
    };
    match s.lock().fw.iommu_unmap(iova, len) {
        Ok(()) => 0,
        Err(_) => -MLX5VF_EINVAL,
    }
}

/// The 32-byte digest of VF `vf`'s state into `out`. Returns 0 or `-EINVAL`.
///
/// # Safety
/// `out` is valid for 32 bytes of writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_sim_digest(sim: *mut mlx5vf_sim, vf: u16, out: *mut u8) -> c_int {
    // SAFETY: forwarded from the caller.
    let Some(s) = (unsafe { get(sim) }) else {
        return -MLX5VF_EINVAL;
    };
    let Some(d) = s.lock().fw.digest(vf) else {
        return -MLX5VF_EINVAL;
    };
    if out.is_null() {
        return -MLX5VF_EINVAL;
    }
    // SAFETY: `out` is valid for 32 bytes (caller).
    unsafe { core::ptr::copy_nonoverlapping(d.as_bytes().as_ptr(), out, 32) };
    0
}

/// Whether the firmware holds no PD, no mkey and no IOMMU mapping.
///
/// # Safety
/// `sim` is null or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_sim_idle(sim: *mut mlx5vf_sim) -> bool {
    // SAFETY: forwarded from the caller.
    unsafe { get(sim) }.is_some_and(|s| s.lock().fw.accounting().is_zero())
}

/// Fails the `nth` (from 1) next command of `opcode` with `status`.
/// Returns 0 or `-EINVAL`.
///
/// # Safety
/// `sim` is null or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_sim_fail_nth(
    sim: *mut mlx5vf_sim,
    opcode: u16,
    nth: u32,
    status: u8,
) -> c_int {
    // SAFETY: forwarded from the caller.
    let Some(s) = (unsafe { get(sim) }) else {
        return -MLX5VF_EINVAL;
    };
    match s
        .lock()
        .fw
        .faults_mut()
        .fail_nth(opcode, nth, status, 0x5151)
    {
        Ok(()) => 0,
        Err(_) => -MLX5VF_EINVAL,
    }
}

/// Advances VF `vf`'s guest workload (dirtying state while it runs).
///
/// # Safety
/// `sim` is null or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_sim_tick(sim: *mut mlx5vf_sim, vf: u16, ticks: u32) {
    // SAFETY: forwarded from the caller.
    if let Some(s) = unsafe { get(sim) } {
        s.lock().fw.tick(vf, ticks);
    }
}

/// Detaches (`on`) or re-attaches VF `vf`: while detached every command
/// addressed to it fails.
///
/// # Safety
/// `sim` is null or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_sim_detach_vf(sim: *mut mlx5vf_sim, vf: u16, on: bool) {
    // SAFETY: forwarded from the caller.
    if let Some(s) = unsafe { get(sim) } {
        let mut g = s.lock();
        if on {
            g.fw.detach_vf(vf);
        } else {
            g.fw.attach_vf(vf);
        }
    }
}

/// FLR-like reset of VF `vf` (running, tracking off).
///
/// # Safety
/// `sim` is null or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_sim_reset_vf(sim: *mut mlx5vf_sim, vf: u16) {
    // SAFETY: forwarded from the caller.
    if let Some(s) = unsafe { get(sim) } {
        s.lock().fw.reset_vf(vf);
    }
}

/// Commands of `opcode` executed so far.
///
/// # Safety
/// `sim` is null or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_sim_command_count(sim: *mut mlx5vf_sim, opcode: u16) -> u64 {
    // SAFETY: forwarded from the caller.
    unsafe { get(sim) }.map_or(0, |s| s.lock().fw.command_count(opcode))
}

/// Opens the tracker model's reporting channel (standing for the CQ and
/// QPs a kernel driver creates): `slots` slots of `msg_size` bytes at
/// `slot * msg_size` of memory key `mkey`. Writes the firmware QP number to
/// `qpn`. Returns 0 or `-EINVAL` (a channel is open, or bad geometry).
///
/// # Safety
/// `sim` is null or live; `qpn` null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_sim_tracker_open(
    sim: *mut mlx5vf_sim,
    mkey: u32,
    msg_size: u32,
    slots: u32,
    qpn: *mut u32,
) -> c_int {
    // SAFETY: forwarded from the caller.
    let Some(s) = (unsafe { get(sim) }) else {
        return -MLX5VF_EINVAL;
    };
    if qpn.is_null() {
        return -MLX5VF_EINVAL;
    }
    match s
        .lock()
        .fw
        .tracker_mut()
        .open_channel(mkey, msg_size, slots)
    {
        Some(n) => {
            // SAFETY: valid for a write (caller).
            unsafe { qpn.write(n) };
            0
        }
        None => -MLX5VF_EINVAL,
    }
}

/// Lets the firmware take one reporting step: returns `MLX5VF_REPORT_CQE`
/// with the CQE in `cqe` (64 bytes), `MLX5VF_REPORT_OBJECT_CHANGED`, or
/// `MLX5VF_REPORT_TIMED_OUT` when nothing happens (the model never changes
/// by itself, so there is nothing to wait for).
///
/// # Safety
/// `sim` is null or live; `cqe` valid for 64 bytes of writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_sim_tracker_poll(sim: *mut mlx5vf_sim, cqe: *mut u8) -> c_int {
    // SAFETY: forwarded from the caller.
    let Some(s) = (unsafe { get(sim) }) else {
        return -MLX5VF_EINVAL;
    };
    if cqe.is_null() {
        return -MLX5VF_EINVAL;
    }
    let mut buf = [0u8; 64];
    let mut g = s.lock();
    let Inner { fw, mem } = &mut *g;
    match fw.tracker_poll(&mut buf, mem) {
        ::mlx5vf_sim::tracker::ChannelEvent::Cqe => {
            // SAFETY: valid for 64 bytes (caller).
            unsafe { core::ptr::copy_nonoverlapping(buf.as_ptr(), cqe, buf.len()) };
            MLX5VF_REPORT_CQE
        }
        ::mlx5vf_sim::tracker::ChannelEvent::ObjectChanged => MLX5VF_REPORT_OBJECT_CHANGED,
        ::mlx5vf_sim::tracker::ChannelEvent::Nothing => MLX5VF_REPORT_TIMED_OUT,
    }
}

/// The host re-posted a receive slot.
///
/// # Safety
/// `sim` is null or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_sim_tracker_repost(sim: *mut mlx5vf_sim) {
    // SAFETY: forwarded from the caller.
    if let Some(s) = unsafe { get(sim) } {
        s.lock().fw.tracker_mut().repost();
    }
}

/// Closes the reporting channel.
///
/// # Safety
/// `sim` is null or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_sim_tracker_close(sim: *mut mlx5vf_sim) {
    // SAFETY: forwarded from the caller.
    if let Some(s) = unsafe { get(sim) } {
        s.lock().fw.tracker_mut().close_channel();
    }
}

/// The tracker object's state (0 TRACKING, 1 REPORTING, 2 ERROR), or -1
/// when there is none.
///
/// # Safety
/// `sim` is null or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_sim_tracker_state(sim: *mut mlx5vf_sim) -> c_int {
    // SAFETY: forwarded from the caller.
    unsafe { get(sim) }
        .and_then(|s| s.lock().fw.tracker().object_state())
        .map_or(-1, c_int::from)
}

/// Arms a tracker fault: `kind` 0 none, 1 ERROR with a final CQE, 2 ERROR
/// with only an object-change event, 3 silence, 4 an untracked address,
/// 5 a spurious object-change event, 6 object-change events in a loop;
/// `after` messages first.
///
/// # Safety
/// `sim` is null or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_sim_tracker_fault(sim: *mut mlx5vf_sim, kind: u32, after: u64) {
    use ::mlx5vf_sim::tracker::TrackerFault as F;
    let fault = match kind {
        1 => F::ErrorWithReport { after },
        2 => F::ErrorSilently { after },
        3 => F::Silent { after },
        4 => F::BadAddress { after },
        5 => F::SpuriousEvent,
        6 => F::EventStorm,
        _ => F::None,
    };
    // SAFETY: forwarded from the caller.
    if let Some(s) = unsafe { get(sim) } {
        s.lock().fw.tracker_mut().set_fault(fault);
    }
}

/// The guest's device writes `[iova, iova + len)` (ground truth, and the
/// tracker's dirty set inside its ranges).
///
/// # Safety
/// `sim` is null or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_sim_guest_write(sim: *mut mlx5vf_sim, iova: u64, len: u64) {
    // SAFETY: forwarded from the caller.
    if let Some(s) = unsafe { get(sim) } {
        s.lock().fw.tracker_mut().guest_write(iova, len);
    }
}

/// Written guest pages inside `[iova, iova + len)` whose bit in `bitmap`
/// (`words` u64s, bit i = page `iova + i * page_size`) is clear; then
/// forgets the ground truth. `u64::MAX` for bad arguments.
///
/// # Safety
/// `sim` is null or live; `bitmap` valid for `words` reads.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_sim_missed_and_clear(
    sim: *mut mlx5vf_sim,
    iova: u64,
    len: u64,
    page_size: u64,
    bitmap: *const u64,
    words: usize,
) -> u64 {
    // SAFETY: forwarded from the caller.
    let Some(s) = (unsafe { get(sim) }) else {
        return u64::MAX;
    };
    if bitmap.is_null() || !page_size.is_power_of_two() {
        return u64::MAX;
    }
    // SAFETY: valid for `words` reads (caller).
    let bits = unsafe { core::slice::from_raw_parts(bitmap, words) };
    let mut g = s.lock();
    let missed = g.fw.tracker().missed(&[(iova, len)], iova, page_size, bits);
    g.fw.tracker_mut().clear_written();
    missed
}
