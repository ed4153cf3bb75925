//! # mlx5vf-kmod
//!
//! The simulated firmware of [`mlx5vf_sim`] as a kernel object, reached
//! through the `mlx5vf_ksim_*` functions below: the device behind the
//! `mlx5vf_sim` module (`shim-linux/kmod`) and behind the test build of the
//! `mlx5vf_pci` variant driver (`shim-linux/kmod/pci`). The driver itself is
//! a separate object, `mlx5vf-linux`'s, the same one in every module.
//! [`pf`] (`mlx5vf_ksim_pf_*`) is the register-level PF behind the
//! `mlx5vf_pfsim` module (`shim-linux/kmod/pfsim`), which userspace drives
//! through its command queue.
//!
//! The firmware lives in static memory ([`Firmware::EMPTY`], configured in
//! place): a kernel module has no heap for its 180 KiB and no stack for any
//! of it. The C side serialises every `mlx5vf_ksim_*` call with one mutex;
//! a busy flag turns a violation of that rule into `-EBUSY` instead of a
//! data race.
//!
//! Device DMA addresses are kernel virtual addresses: the module allocates
//! each buffer with `vmalloc()`, registers its range with
//! [`mlx5vf_ksim_iommu_map`] before the firmware may touch it, and unmaps it
//! before freeing it. The firmware only accesses memory inside a registered
//! range (it checks its IOMMU table for every piece it DMAs), so every
//! pointer made below comes from memory the module owns at that moment.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )
)]

use core::cell::UnsafeCell;
use core::ffi::{c_char, c_int, c_void};
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, Ordering};

use mlx5vf_sim::{Dma, DmaFault, Firmware, FirmwareConfig, SimSpec};

pub mod pf;
pub mod tracker;

// Hosted targets (the host build that checks and lints this crate) take
// std's panic runtime; the kernel target brings its own handler below.
#[cfg(not(target_os = "none"))]
extern crate std;

/// A panic (none is expected: every entry point returns errors) traps with
/// `ud2`, as `mlx5vf-linux`'s handler does.
#[cfg(all(target_os = "none", target_arch = "x86_64"))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    // SAFETY: `ud2` only raises #UD; it touches no memory and never returns.
    unsafe { core::arch::asm!("ud2", options(noreturn, nomem, nostack)) }
}

/// A panic on other bare-metal targets spins (there is no portable trap).
#[cfg(all(target_os = "none", not(target_arch = "x86_64")))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    loop {
        core::hint::spin_loop();
    }
}

/// `EINVAL`.
const EINVAL: c_int = 22;
/// `EBUSY`.
const EBUSY: c_int = 16;
/// `ENODEV`.
const ENODEV: c_int = 19;

/// The one simulated PF of the module.
struct FirmwareCell {
    busy: AtomicBool,
    fw: UnsafeCell<Firmware>,
}

// SAFETY: `fw` is only reached through `with_firmware`, which admits one
// caller at a time (the `busy` flag, acquire/release).
unsafe impl Sync for FirmwareCell {}

static FIRMWARE: FirmwareCell = FirmwareCell {
    busy: AtomicBool::new(false),
    fw: UnsafeCell::new(Firmware::EMPTY),
};

/// Runs `f` on the firmware, or returns `-EBUSY` if another call is inside
/// (the C mutex was not held).
fn with_firmware(f: impl FnOnce(&mut Firmware) -> c_int) -> c_int {
    if FIRMWARE
        .busy
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        return -EBUSY;
    }
    // SAFETY: the flag was false and is now ours, so no other reference to
    // the firmware exists until we clear it below.
    let fw = unsafe { &mut *FIRMWARE.fw.get() };
    let r = f(fw);
    FIRMWARE.busy.store(false, Ordering::Release);
    r
}

/// Kernel memory as the simulated device reaches it (IOVA = kernel virtual
/// address of a registered, live buffer).
struct KernelMemory;

impl Dma for KernelMemory {
    fn dma_write(
        &mut self,
        iova: u64,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> Result<(), DmaFault> {
        let p = usize::try_from(iova).map_err(|_| DmaFault)? as *mut u8;
        if p.is_null() {
            return Err(DmaFault);
        }
        // SAFETY: the firmware hands out pieces inside one IOMMU mapping
        // (see the crate docs): `[iova, iova + len)` is part of a vmalloc
        // buffer the module registered and has not yet unregistered or
        // freed, and nothing else touches a buffer while the device owns it
        // (the core's contract).
        fill(unsafe { core::slice::from_raw_parts_mut(p, len) });
        Ok(())
    }

    fn dma_read(
        &mut self,
        iova: u64,
        len: usize,
        consume: &mut dyn FnMut(&[u8]),
    ) -> Result<(), DmaFault> {
        let p = usize::try_from(iova).map_err(|_| DmaFault)? as *const u8;
        if p.is_null() {
            return Err(DmaFault);
        }
        // SAFETY: as in `dma_write`, for reads.
        consume(unsafe { core::slice::from_raw_parts(p, len) });
        Ok(())
    }
}

/// Builds the firmware from a `sim:` spec (`len` bytes at `spec`, no NUL
/// needed): 0, or `-EINVAL` for a spec that does not parse or configure.
///
/// # Safety
/// `spec` points to `len` readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_ksim_configure(spec: *const c_char, len: usize) -> c_int {
    if spec.is_null() {
        return -EINVAL;
    }
    // SAFETY: `len` readable bytes (caller).
    let bytes = unsafe { core::slice::from_raw_parts(spec.cast::<u8>(), len) };
    let Ok(text) = core::str::from_utf8(bytes) else {
        return -EINVAL;
    };
    let Ok(parsed) = text.parse::<SimSpec>() else {
        return -EINVAL;
    };
    let config = FirmwareConfig::from_spec(&parsed);
    with_firmware(|fw| match fw.configure(&config) {
        Ok(()) => 0,
        Err(_) => -EINVAL,
    })
}

/// Number of VFs the firmware has.
#[unsafe(no_mangle)]
pub extern "C" fn mlx5vf_ksim_vf_count() -> c_int {
    with_firmware(|fw| c_int::from(fw.vf_count()))
}

/// Executes one firmware command (`in_len` bytes at `input`, `out_len` at
/// `out`): 0 when firmware answered (with any status), `-EINVAL` if `out`
/// cannot hold a status.
///
/// # Safety
/// `input` has `in_len` readable bytes, `out` `out_len` writable bytes, and
/// neither overlaps a buffer registered with the IOMMU.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_ksim_exec(
    input: *const c_void,
    in_len: usize,
    out: *mut c_void,
    out_len: usize,
) -> c_int {
    if input.is_null() || out.is_null() {
        return -EINVAL;
    }
    // SAFETY: sizes and access as the caller promised.
    let input = unsafe { core::slice::from_raw_parts(input.cast::<u8>(), in_len) };
    // SAFETY: as above; `out` is distinct from `input` and from DMA memory.
    let out = unsafe { core::slice::from_raw_parts_mut(out.cast::<u8>(), out_len) };
    with_firmware(|fw| match fw.exec(input, out, &mut KernelMemory) {
        Ok(()) => 0,
        Err(_) => -EINVAL,
    })
}

/// Registers `[iova, iova + len)` for device DMA: 0 or `-EINVAL`.
#[unsafe(no_mangle)]
pub extern "C" fn mlx5vf_ksim_iommu_map(iova: u64, len: u64) -> c_int {
    with_firmware(|fw| fw.iommu_map(iova, len).map_or(-EINVAL, |()| 0))
}

/// Unregisters `[iova, iova + len)`: 0 or `-EINVAL`.
#[unsafe(no_mangle)]
pub extern "C" fn mlx5vf_ksim_iommu_unmap(iova: u64, len: u64) -> c_int {
    with_firmware(|fw| fw.iommu_unmap(iova, len).map_or(-EINVAL, |()| 0))
}

/// A function-level reset of VF `vf` (what vfio-pci does at open and on
/// `VFIO_DEVICE_RESET`): it runs again, its sessions end, its state stays.
#[unsafe(no_mangle)]
pub extern "C" fn mlx5vf_ksim_reset_vf(vf: u16) -> c_int {
    with_firmware(|fw| {
        fw.reset_vf(vf);
        0
    })
}

/// Writes VF `vf`'s state digest (64 hex digits, NUL-terminated) to `out`:
/// 0, `-ENODEV` for no such VF, `-EINVAL` for a short buffer.
///
/// # Safety
/// `out` has `out_len` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_ksim_digest(vf: u16, out: *mut c_char, out_len: usize) -> c_int {
    if out.is_null() {
        return -EINVAL;
    }
    // SAFETY: `out_len` writable bytes (caller).
    let out = unsafe { core::slice::from_raw_parts_mut(out.cast::<u8>(), out_len) };
    with_firmware(|fw| {
        let Some(digest) = fw.digest(vf) else {
            return -ENODEV;
        };
        let mut w = ByteWriter { buf: out, len: 0 };
        if write!(w, "{digest}").is_err() || w.terminate().is_err() {
            return -EINVAL;
        }
        0
    })
}

/// Live firmware resources (`mlx5vf_ksim_accounting`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct mlx5vf_ksim_accounting {
    /// Allocated PDs.
    pub pds: u32,
    /// Live mkeys.
    pub mkeys: u32,
    /// Live IOMMU mappings.
    pub iommu_mappings: u32,
    /// Reserved (0).
    pub reserved: u32,
    /// Bytes mapped in the IOMMU.
    pub iommu_bytes: u64,
}

/// Fills `out` with the firmware's live resources: 0 or `-EINVAL`.
///
/// # Safety
/// `out` is null or points to a writable `mlx5vf_ksim_accounting`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_ksim_accounting(out: *mut mlx5vf_ksim_accounting) -> c_int {
    // SAFETY: null or valid for writes (caller).
    let Some(out) = (unsafe { out.as_mut() }) else {
        return -EINVAL;
    };
    with_firmware(|fw| {
        let a = fw.accounting();
        *out = mlx5vf_ksim_accounting {
            pds: a.pds,
            mkeys: a.mkeys,
            iommu_mappings: a.iommu_mappings,
            reserved: 0,
            iommu_bytes: a.iommu_bytes,
        };
        0
    })
}

/// `core::fmt` into a byte buffer, leaving room for a NUL.
struct ByteWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl ByteWriter<'_> {
    fn terminate(&mut self) -> Result<(), core::fmt::Error> {
        *self.buf.get_mut(self.len).ok_or(core::fmt::Error)? = 0;
        Ok(())
    }
}

impl Write for ByteWriter<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.len.checked_add(s.len()).ok_or(core::fmt::Error)?;
        // Keep one byte for the NUL.
        if end >= self.buf.len() {
            return Err(core::fmt::Error);
        }
        self.buf
            .get_mut(self.len..end)
            .ok_or(core::fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}
