//! Stand-alone helpers: the VFIO state graph, CRC-32C, and the memory-key
//! commands a platform's `map_buffers`/`unmap_buffers` issue. None needs a
//! device or a lock.

use core::ffi::{c_int, c_void};

use mlx5vf_core::device::DeviceError;
use mlx5vf_core::ifc::Command;
use mlx5vf_core::ifc::mkey::{
    DestroyMkey, MAX_MKEY_PAGES, Mkey, MkeyEncodeError, create_mkey_in_len, decode_create_mkey_out,
    encode_create_mkey_mtt,
};
use mlx5vf_core::ifc::pd::Pd;
use mlx5vf_core::stream::crc32c;
use mlx5vf_core::vfio::{MigState, MigrationFlags, next_state};

use crate::abi::{MLX5VF_EINVAL, MLX5VF_ENOMEM};
use crate::device::errno;

/// Linux's `vfio_mig_get_next_state()`: the next state on the way from
/// `cur` to `target` for a device with migration flags `flags`, in `*next`.
/// `cur == target` gives `cur`. Returns 0, or `-EINVAL` when either state is
/// unknown, ERROR or unsupported by `flags`, or no path exists (e.g.
/// STOP_COPY to PRE_COPY; the 2026 fix, never a loop).
///
/// # Safety
/// `next` is null (`-EINVAL`) or valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_mig_next_state(
    cur: u32,
    target: u32,
    flags: u64,
    next: *mut u32,
) -> c_int {
    if next.is_null() {
        return -MLX5VF_EINVAL;
    }
    let (Ok(cur), Ok(target)) = (MigState::from_raw(cur), MigState::from_raw(target)) else {
        return -MLX5VF_EINVAL;
    };
    match next_state(cur, target, MigrationFlags::from_bits(flags)) {
        Ok(s) => {
            // SAFETY: `next` is valid for writes (caller).
            unsafe { next.write(s.raw()) };
            0
        }
        Err(_) => -MLX5VF_EINVAL,
    }
}

/// Continues the standard CRC-32C (Castagnoli; initial value and final XOR
/// `0xffffffff`) `crc` over `len` bytes at `p`: `mlx5vf_crc32c(0, "123456789",
/// 9) == 0xe3069283`, and `mlx5vf_crc32c(mlx5vf_crc32c(0, a), b)` is the CRC
/// of `a` then `b`. The kernel's raw `crc32c()` computes the same as
/// `~crc32c(~crc, p, len)`.
///
/// # Safety
/// `p` is valid for `len` bytes of reads (or `len` is 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_crc32c(crc: u32, p: *const c_void, len: usize) -> u32 {
    if p.is_null() || len == 0 {
        return crc;
    }
    // SAFETY: `p` is valid for `len` bytes (caller).
    crc32c::update(crc, unsafe {
        core::slice::from_raw_parts(p.cast::<u8>(), len)
    })
}

/// Bytes of a CREATE_MKEY input for `npages` pages (header, mkey context
/// and the MTT list rounded up to 16-byte octwords); 0 for 0 pages or more
/// than one key can describe (2^20).
#[unsafe(no_mangle)]
pub extern "C" fn mlx5vf_create_mkey_in_len(npages: u32) -> usize {
    if (1..=MAX_MKEY_PAGES).contains(&npages) {
        create_mkey_in_len(npages)
    } else {
        0
    }
}

/// Encodes CREATE_MKEY in MTT mode into `input` (`in_len` bytes, at least
/// `mlx5vf_create_mkey_in_len(npages)`): read/write access for local and
/// remote, protection domain `pd`, start address 0, length
/// `npages * MLX5VF_PAGE_SIZE`, and the 4 KiB-aligned bus addresses
/// `pages[0..npages]` in order. Returns the input length, `-ENOMEM` for a
/// short `input`, or `-EINVAL` for a bad page count, a misaligned page or a
/// `pd` above 24 bits.
///
/// # Safety
/// `input` is valid for `in_len` bytes of writes; `pages` for `npages`
/// reads.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_encode_create_mkey(
    input: *mut c_void,
    in_len: usize,
    pd: u32,
    pages: *const u64,
    npages: u32,
) -> i64 {
    if input.is_null() || pages.is_null() {
        return (-MLX5VF_EINVAL).into();
    }
    let Ok(n) = usize::try_from(npages) else {
        return (-MLX5VF_EINVAL).into();
    };
    // SAFETY: `input` is valid for `in_len` bytes and `pages` for `npages`
    // u64s (caller); the two do not overlap (different types, caller).
    let (buf, pages) = unsafe {
        (
            core::slice::from_raw_parts_mut(input.cast::<u8>(), in_len),
            core::slice::from_raw_parts(pages, n),
        )
    };
    match encode_create_mkey_mtt(buf, Pd(pd), pages.iter().copied()) {
        Ok(len) => i64::try_from(len).unwrap_or(i64::MAX),
        Err(MkeyEncodeError::InsufficientSize { .. }) => (-MLX5VF_ENOMEM).into(),
        Err(_) => (-MLX5VF_EINVAL).into(),
    }
}

/// Decodes a CREATE_MKEY output (`out_len` bytes, at least
/// `MLX5VF_CREATE_MKEY_OUT_LEN`) into the memory key to use in SAVE/LOAD
/// (`mkey_index << 8`), in `*mkey`. Returns 0, the errno of a firmware
/// status (`-EINVAL`, `-ENOMEM`, …), or `-EIO` for an unusable output.
///
/// # Safety
/// `out` is valid for `out_len` bytes of reads; `mkey` for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_decode_create_mkey(
    out: *const c_void,
    out_len: usize,
    mkey: *mut u32,
) -> c_int {
    if out.is_null() || mkey.is_null() {
        return -MLX5VF_EINVAL;
    }
    // SAFETY: `out` is valid for `out_len` bytes (caller).
    let out = unsafe { core::slice::from_raw_parts(out.cast::<u8>(), out_len) };
    match decode_create_mkey_out(out) {
        Ok(Mkey(k)) => {
            // SAFETY: `mkey` is valid for writes (caller).
            unsafe { mkey.write(k) };
            0
        }
        Err(e) => errno(&DeviceError::from(e)),
    }
}

/// Encodes DESTROY_MKEY for `mkey` into `input` (`in_len` bytes, at least
/// `MLX5VF_DESTROY_MKEY_IN_LEN`). Returns the input length or `-ENOMEM`
/// for a short `input`.
///
/// # Safety
/// `input` is valid for `in_len` bytes of writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_encode_destroy_mkey(
    input: *mut c_void,
    in_len: usize,
    mkey: u32,
) -> c_int {
    if input.is_null() {
        return -MLX5VF_EINVAL;
    }
    // SAFETY: `input` is valid for `in_len` bytes (caller).
    let buf = unsafe { core::slice::from_raw_parts_mut(input.cast::<u8>(), in_len) };
    match (DestroyMkey { mkey: Mkey(mkey) }).encode(buf) {
        Ok(n) => c_int::try_from(n).unwrap_or(-MLX5VF_EINVAL),
        Err(_) => -MLX5VF_ENOMEM,
    }
}

/// Checks a DESTROY_MKEY output: 0, the errno of a firmware status, or
/// `-EIO` for an unusable output.
///
/// # Safety
/// `out` is valid for `out_len` bytes of reads.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_decode_destroy_mkey(out: *const c_void, out_len: usize) -> c_int {
    if out.is_null() {
        return -MLX5VF_EINVAL;
    }
    // SAFETY: `out` is valid for `out_len` bytes (caller).
    let out = unsafe { core::slice::from_raw_parts(out.cast::<u8>(), out_len) };
    match (DestroyMkey { mkey: Mkey(0) }).decode(out) {
        Ok(_) => 0,
        Err(e) => errno(&DeviceError::from(e)),
    }
}
