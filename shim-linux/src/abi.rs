//! The C ABI's types and constants: what `include/mlx5vf.h` declares besides
//! the functions.
//!
//! Every type here is `#[repr(C)]` and every constant a literal, so cbindgen
//! can copy them into the header; `const` assertions below tie each literal
//! to the core value it mirrors, so the two cannot drift apart.
#![allow(non_camel_case_types)]

use core::ffi::{c_int, c_void};

/// A pointer into user memory: `void __user *` in the header, so sparse
/// (`make C=1`) flags a caller that dereferences it or passes a kernel
/// pointer. Only the platform's copy callbacks touch what it points to.
/// cbindgen:ignore
pub type mlx5vf_uptr = *mut c_void;
/// A read-only pointer into user memory: `const void __user *`.
/// cbindgen:ignore
pub type mlx5vf_const_uptr = *const c_void;

use mlx5vf_core::device::PROBE_SCRATCH_LEN;
use mlx5vf_core::errno::Errno;
use mlx5vf_core::ifc::Command;
use mlx5vf_core::ifc::migration::SaveVhcaState;
use mlx5vf_core::ifc::mkey::{DestroyMkey, PAGE_SIZE, create_mkey_out};
use mlx5vf_core::stream::PRODUCER_LEN;
use mlx5vf_core::vfio::{MigState, MigrationFlags};

// ---------------------------------------------------------------------------
// Return codes of the protocol (positive; errors are negative errnos).

/// Wait, then call again: a SAVE is in flight (or, for a blocking read, no
/// data is queued yet). Read `mlx5vf_events()` *before* the call, drop the
/// device lock if you hold it, sleep until `mlx5vf_events()` differs from
/// what you read, then repeat the call with the same arguments.
pub const MLX5VF_RETRY: c_int = 1;
/// `mlx5vf_set_state()` reached the target and opened a saving (read-only)
/// file in the caller's `struct mlx5vf_file`.
pub const MLX5VF_NEW_SAVING_FILE: c_int = 2;
/// `mlx5vf_set_state()` reached the target and opened a resuming
/// (write-only) file in the caller's `struct mlx5vf_file`.
pub const MLX5VF_NEW_RESUMING_FILE: c_int = 3;

/// `mlx5vf_file_kind()`: a saving file.
pub const MLX5VF_FILE_SAVING: c_int = 1;
/// `mlx5vf_file_kind()`: a resuming file.
pub const MLX5VF_FILE_RESUMING: c_int = 2;

// ---------------------------------------------------------------------------
// I/O flags of mlx5vf_file_read() / mlx5vf_file_write().

/// The file was opened `O_NONBLOCK`: never return `MLX5VF_RETRY` from a
/// read or write, return `-EAGAIN` instead.
pub const MLX5VF_IO_NONBLOCK: u32 = 1 << 0;
/// The VFS passed a position (`pread`/`pwrite`, `pos != NULL` in the
/// `file_operations` callback): migration files are streams, `-ESPIPE`.
pub const MLX5VF_IO_POSITIONED: u32 = 1 << 1;

// ---------------------------------------------------------------------------
// poll() bits (`__poll_t`, identical on every architecture).

/// `EPOLLIN`.
pub const MLX5VF_EPOLLIN: u32 = 0x0001;
/// `EPOLLOUT`.
pub const MLX5VF_EPOLLOUT: u32 = 0x0004;
/// `EPOLLRDNORM`.
pub const MLX5VF_EPOLLRDNORM: u32 = 0x0040;
/// `EPOLLWRNORM`.
pub const MLX5VF_EPOLLWRNORM: u32 = 0x0100;
/// `EPOLLRDHUP`.
pub const MLX5VF_EPOLLRDHUP: u32 = 0x2000;

// ---------------------------------------------------------------------------
// VFIO uAPI values.

/// `VFIO_MIG_GET_PRECOPY_INFO` = `_IO(';', 121)` on asm-generic
/// architectures (x86, arm64, riscv). On powerpc, mips and sparc `_IO` adds
/// `0x20000000`: the header's trailer fails the build there (see its
/// static assertions), so translate `cmd` before calling
/// `mlx5vf_file_ioctl()` if you ever port to one of them.
pub const MLX5VF_MIG_GET_PRECOPY_INFO: u32 = 0x3B79;
/// `offsetofend(struct vfio_precopy_info, dirty_bytes)`: the smallest
/// `argsz` the precopy ioctl accepts, and the bytes it reads and writes.
pub const MLX5VF_PRECOPY_INFO_MINSZ: u32 = 24;

/// `VFIO_MIGRATION_STOP_COPY`.
pub const MLX5VF_MIGRATION_STOP_COPY: u64 = 1 << 0;
/// `VFIO_MIGRATION_P2P`.
pub const MLX5VF_MIGRATION_P2P: u64 = 1 << 1;
/// `VFIO_MIGRATION_PRE_COPY`.
pub const MLX5VF_MIGRATION_PRE_COPY: u64 = 1 << 2;

/// `VFIO_DEVICE_STATE_ERROR`.
pub const MLX5VF_STATE_ERROR: u32 = 0;
/// `VFIO_DEVICE_STATE_STOP`.
pub const MLX5VF_STATE_STOP: u32 = 1;
/// `VFIO_DEVICE_STATE_RUNNING`.
pub const MLX5VF_STATE_RUNNING: u32 = 2;
/// `VFIO_DEVICE_STATE_STOP_COPY`.
pub const MLX5VF_STATE_STOP_COPY: u32 = 3;
/// `VFIO_DEVICE_STATE_RESUMING`.
pub const MLX5VF_STATE_RESUMING: u32 = 4;
/// `VFIO_DEVICE_STATE_RUNNING_P2P`.
pub const MLX5VF_STATE_RUNNING_P2P: u32 = 5;
/// `VFIO_DEVICE_STATE_PRE_COPY`.
pub const MLX5VF_STATE_PRE_COPY: u32 = 6;
/// `VFIO_DEVICE_STATE_PRE_COPY_P2P`.
pub const MLX5VF_STATE_PRE_COPY_P2P: u32 = 7;

// ---------------------------------------------------------------------------
// DMA directions (the values of the kernel's `enum dma_data_direction`, so
// a platform can hand them to the DMA API unchanged).

/// The device reads the buffer (LOAD): `DMA_TO_DEVICE`.
pub const MLX5VF_DMA_TO_DEVICE: u32 = 1;
/// The device writes the buffer (SAVE): `DMA_FROM_DEVICE`.
pub const MLX5VF_DMA_FROM_DEVICE: u32 = 2;

// ---------------------------------------------------------------------------
// Sizes.

/// Bytes per buffer page; buffers are whole pages.
pub const MLX5VF_PAGE_SIZE: usize = 4096;
/// Scratch `mlx5vf_device_probe()` needs (QUERY_HCA_CAP's output).
pub const MLX5VF_PROBE_SCRATCH_LEN: usize = 4112;
/// Bytes of the producer name in `struct mlx5vf_config`.
pub const MLX5VF_PRODUCER_LEN: usize = 32;
/// Output bytes the platform must provide for an asynchronous SAVE
/// (`save_vhca_state_out`) and pass to `mlx5vf_save_complete()`.
pub const MLX5VF_SAVE_OUT_LEN: usize = 16;
/// Output bytes of CREATE_MKEY.
pub const MLX5VF_CREATE_MKEY_OUT_LEN: usize = 16;
/// Input bytes of DESTROY_MKEY.
pub const MLX5VF_DESTROY_MKEY_IN_LEN: usize = 16;
/// Output bytes of DESTROY_MKEY.
pub const MLX5VF_DESTROY_MKEY_OUT_LEN: usize = 16;

/// Bytes of `struct mlx5vf_device` (64-bit targets).
pub const MLX5VF_DEVICE_SIZE: usize = 4608;
/// Alignment of `struct mlx5vf_device`.
pub const MLX5VF_DEVICE_ALIGN: usize = 8;
/// `MLX5VF_DEVICE_SIZE` in 64-bit words (the storage array's length).
pub const MLX5VF_DEVICE_WORDS: usize = 576;
/// Bytes of `struct mlx5vf_file` (64-bit targets).
pub const MLX5VF_FILE_SIZE: usize = 16;
/// Alignment of `struct mlx5vf_file`.
pub const MLX5VF_FILE_ALIGN: usize = 8;
/// `MLX5VF_FILE_SIZE` in 64-bit words (the storage array's length).
pub const MLX5VF_FILE_WORDS: usize = 2;
/// Bytes of `struct mlx5vf_dirty` (64-bit targets): the tracker plan of up
/// to 256 ranges and its state.
pub const MLX5VF_DIRTY_SIZE: usize = 4352;
/// Alignment of `struct mlx5vf_dirty`.
pub const MLX5VF_DIRTY_ALIGN: usize = 8;
/// `MLX5VF_DIRTY_SIZE` in 64-bit words (the storage array's length).
pub const MLX5VF_DIRTY_WORDS: usize = 544;
/// Scratch `mlx5vf_log_start()` needs: QUERY_HCA_CAP's output or CREATE's
/// input with 255 ranges, whichever is larger.
pub const MLX5VF_DIRTY_SCRATCH_LEN: usize = 4144;
/// Bytes of a report CQE the `report_next` callback copies out.
pub const MLX5VF_REPORT_CQE_LEN: usize = 64;

// ---------------------------------------------------------------------------
// What the `report_next` callback found (its non-negative return values).

/// The next CQE was copied out and consumed.
pub const MLX5VF_REPORT_CQE: c_int = 0;
/// An OBJECT_CHANGE event for a page tracker arrived.
pub const MLX5VF_REPORT_OBJECT_CHANGED: c_int = 1;
/// A CQ or WQ error event on the channel.
pub const MLX5VF_REPORT_CHANNEL_ERROR: c_int = 2;
/// Nothing arrived within the timeout.
pub const MLX5VF_REPORT_TIMED_OUT: c_int = 3;

// ---------------------------------------------------------------------------
// Errno numbers the functions return (negated). asm-generic numbering: the
// header's trailer checks them against <linux/errno.h> (or <errno.h>), so a
// build for alpha, mips, parisc or sparc fails instead of misreporting.

/// `EPERM`.
pub const MLX5VF_EPERM: c_int = 1;
/// `EIO`.
pub const MLX5VF_EIO: c_int = 5;
/// `EAGAIN`.
pub const MLX5VF_EAGAIN: c_int = 11;
/// `ENOMEM`.
pub const MLX5VF_ENOMEM: c_int = 12;
/// `EFAULT`.
pub const MLX5VF_EFAULT: c_int = 14;
/// `EBUSY`.
pub const MLX5VF_EBUSY: c_int = 16;
/// `ENODEV`.
pub const MLX5VF_ENODEV: c_int = 19;
/// `EINVAL`.
pub const MLX5VF_EINVAL: c_int = 22;
/// `ENOTTY`.
pub const MLX5VF_ENOTTY: c_int = 25;
/// `ESPIPE`.
pub const MLX5VF_ESPIPE: c_int = 29;
/// `ENOMSG`.
pub const MLX5VF_ENOMSG: c_int = 42;
/// `EBADR`.
pub const MLX5VF_EBADR: c_int = 53;
/// `EPROTO`.
pub const MLX5VF_EPROTO: c_int = 71;
/// `EOPNOTSUPP`.
pub const MLX5VF_EOPNOTSUPP: c_int = 95;
/// `ENOTCONN`.
pub const MLX5VF_ENOTCONN: c_int = 107;
/// `ETIMEDOUT`.
pub const MLX5VF_ETIMEDOUT: c_int = 110;
/// `EREMOTEIO`.
pub const MLX5VF_EREMOTEIO: c_int = 121;

/// Every errno constant above with the core's value it mirrors.
pub(crate) const ERRNOS: [(c_int, Errno); 17] = [
    (MLX5VF_EPERM, Errno::EPERM),
    (MLX5VF_EIO, Errno::EIO),
    (MLX5VF_EAGAIN, Errno::EAGAIN),
    (MLX5VF_ENOMEM, Errno::ENOMEM),
    (MLX5VF_EFAULT, Errno::EFAULT),
    (MLX5VF_EBUSY, Errno::EBUSY),
    (MLX5VF_ENODEV, Errno::ENODEV),
    (MLX5VF_EINVAL, Errno::EINVAL),
    (MLX5VF_ENOTTY, Errno::ENOTTY),
    (MLX5VF_ESPIPE, Errno::ESPIPE),
    (MLX5VF_ENOMSG, Errno::ENOMSG),
    (MLX5VF_EBADR, Errno::EBADR),
    (MLX5VF_EPROTO, Errno::EPROTO),
    (MLX5VF_EOPNOTSUPP, Errno::EOPNOTSUPP),
    (MLX5VF_ENOTCONN, Errno::ENOTCONN),
    (MLX5VF_ETIMEDOUT, Errno::ETIMEDOUT),
    (MLX5VF_EREMOTEIO, Errno::EREMOTEIO),
];

// Evaluated at compile time only: an out-of-range index fails the build.
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
const fn errnos_match() -> bool {
    let mut i = 0;
    while i < ERRNOS.len() {
        if ERRNOS[i].0 != ERRNOS[i].1.code() {
            return false;
        }
        i += 1;
    }
    ERRNOS.len() == Errno::ALL.len()
}

// ---------------------------------------------------------------------------
// ABI identity.

/// The version of this header's ABI: bumped whenever a structure, a
/// function signature or a constant's meaning changes. A caller built with
/// another version's header is refused at init (`-EPROTO`) instead of
/// handing the library structures it would misread.
pub const MLX5VF_ABI_VERSION: u32 = 4;

/// What the caller's header says about the ABI, checked by
/// `mlx5vf_device_init_abi()` against the library's own view. The header's
/// `mlx5vf_device_init()` (an inline wrapper) fills it from `sizeof` of the
/// structures as the caller was compiled, so a stale header linked against
/// a newer library (or the reverse) fails at init with `-EPROTO`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct mlx5vf_abi {
    /// `MLX5VF_ABI_VERSION` of the caller's header.
    pub version: u32,
    /// `sizeof(struct mlx5vf_device)`.
    pub device_size: u32,
    /// `sizeof(struct mlx5vf_file)`.
    pub file_size: u32,
    /// `sizeof(struct mlx5vf_config)`.
    pub config_size: u32,
    /// `sizeof(struct mlx5vf_probe_info)`.
    pub probe_info_size: u32,
    /// `sizeof(struct mlx5vf_platform_ops)`.
    pub ops_size: u32,
}

// ---------------------------------------------------------------------------
// Configuration flags.

/// `struct mlx5vf_config.flags`: use chunk mode when the device offers it.
pub const MLX5VF_CFG_CHUNKS: u32 = 1 << 0;
/// `struct mlx5vf_config.flags`: offer PRE_COPY when the device supports it.
pub const MLX5VF_CFG_PRECOPY: u32 = 1 << 1;
/// `struct mlx5vf_config.flags`: write the stream-info and stream-end
/// records (optional records Linux skips; the destination then proves the
/// stream arrived whole). Without it the stream is exactly what Linux writes.
pub const MLX5VF_CFG_INTEGRITY: u32 = 1 << 2;
/// `mlx5vf_config.flags`: account PRE_COPY as the Linux driver does (one
/// chunk per precopy-info call; `dirty_bytes` is the next chunk's size).
/// Off (the default): chunked PRE_COPY saves whole images through the
/// chunk slots and reports what firmware still holds.
pub const MLX5VF_CFG_LINUX_PRECOPY: u32 = 1 << 3;
/// `mlx5vf_config.flags`: tune the chunk size to the firmware's measured
/// SAVE fixed cost and rate, within `memory_cap` bytes of chunk
/// buffers per side (on by default). Needs the optional `now_ns` callback;
/// without it, or without this flag, `chunk_size` stays.
pub const MLX5VF_CFG_MEASURED_CHUNKS: u32 = 1 << 4;

/// `struct mlx5vf_probe_info.flags`: saving uses chunk mode.
pub const MLX5VF_PROBE_CHUNK_MODE: u32 = 1 << 0;
/// `struct mlx5vf_probe_info.flags`: device dirty-page tracking exists.
pub const MLX5VF_PROBE_DIRTY_TRACKING: u32 = 1 << 1;

// ---------------------------------------------------------------------------
// Types.

/// Storage for one device (one migratable VF). Embed it in your device
/// structure or allocate `MLX5VF_DEVICE_SIZE` bytes aligned to
/// `MLX5VF_DEVICE_ALIGN`; initialise it with `mlx5vf_device_init()` and
/// never copy or move it afterwards. Opaque: no field is for the caller.
#[repr(C)]
pub struct mlx5vf_device {
    /// Opaque.
    pub _opaque: [u64; MLX5VF_DEVICE_WORDS],
}

/// Storage for one device's dirty-page tracker (`vfio_log_ops` state).
/// Embed it beside the device storage; initialise it with
/// `mlx5vf_dirty_init()`. Opaque; never copy or move it once initialised.
#[repr(C)]
pub struct mlx5vf_dirty {
    /// Opaque.
    pub _opaque: [u64; MLX5VF_DIRTY_WORDS],
}

/// One range to track: `struct vfio_device_feature_dma_logging_range`'s
/// layout (what the VFIO core's interval tree nodes hold as
/// `[start, last]`: pass `length = last - start + 1`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct mlx5vf_iova_range {
    /// First byte.
    pub iova: u64,
    /// Bytes.
    pub length: u64,
}

/// Storage for one migration file (the handle `mlx5vf_set_state()` fills
/// when it opens one). Embed it in your per-file structure (the one your
/// `struct file`'s `private_data` points to). Opaque; may be copied only
/// before it is used.
#[repr(C)]
pub struct mlx5vf_file {
    /// Opaque.
    pub _opaque: [u64; MLX5VF_FILE_WORDS],
}

/// Driver policy for `mlx5vf_device_init()`; `mlx5vf_config_default()` fills
/// the Linux policy.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct mlx5vf_config {
    /// Chunk buffer size saving starts with (Linux: 8 MiB). At least one
    /// page, at most `2^32 - 4096`.
    pub chunk_size: u64,
    /// Cap on any SAVE buffer (at most and by default `2^32 - 4096`).
    pub max_save_buffer: u64,
    /// Largest image a resuming file accepts (at most and by default
    /// `2^32 - 1`, LOAD's size field).
    pub max_image: u64,
    /// Cap on how much of the incoming STOP_COPY_SIZE hint a resuming file
    /// allocates up front (default 64 MiB).
    pub max_hint: u64,
    /// With `MLX5VF_CFG_MEASURED_CHUNKS`: chunk buffer memory per side the
    /// tuned chunk size stays within (default 64 MiB; 0: the default).
    pub memory_cap: u64,
    /// Chunk buffers in flight or unread at once (Linux: 2; 1 to 8).
    pub chunk_slots: u32,
    /// `MLX5VF_CFG_*` bits (default: chunks, PRE_COPY, integrity).
    pub flags: u32,
    /// Producer named in the stream-info record (NUL padded).
    pub producer: [u8; MLX5VF_PRODUCER_LEN],
}

/// What `mlx5vf_device_probe()` found.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct mlx5vf_probe_info {
    /// `MLX5VF_MIGRATION_*` flags to advertise (`vdev->migration_flags`).
    pub migration_flags: u64,
    /// VF index (0-based) on the PF.
    pub vf: u16,
    /// The VF's VHCA id.
    pub vhca_id: u16,
    /// `MLX5VF_PROBE_*` bits.
    pub flags: u32,
}

/// `struct vfio_precopy_info`, byte for byte.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct mlx5vf_precopy_info {
    /// Size of the caller's structure (at least `MLX5VF_PRECOPY_INFO_MINSZ`).
    pub argsz: u32,
    /// Echoed back unchanged (precopy-info v1 semantics).
    pub flags: u32,
    /// Bytes of the initial image not yet read.
    pub initial_bytes: u64,
    /// Bytes of later changes: unread queued bytes plus what firmware holds.
    pub dirty_bytes: u64,
}

/// The platform: the `Hal` of the core, as C callbacks. Every callback gets
/// the `ctx` given to `mlx5vf_device_init()` first. All are required
/// (`mlx5vf_device_init()` refuses a table with a `NULL` entry).
///
/// Callbacks returning `int` return 0 or a negative errno; the core keeps
/// `-ENOMEM`, `-ETIMEDOUT`, `-ENOTCONN` and `-EFAULT` and reports anything
/// else as `-EIO`. The copy callbacks return the bytes copied (a short count
/// is allowed) or a negative errno.
///
/// Callbacks run with the device lock held, except the four copy callbacks
/// when `mlx5vf_file_read()` calls them (it drops the lock around the copy)
/// and `lock`/`trylock` themselves.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct mlx5vf_platform_ops {
    /// Runs one firmware command synchronously (`mlx5_cmd_do()`): `in_len`
    /// bytes of `input`, `out_len` bytes of `out` filled. Return 0 whenever
    /// firmware answered, *even with a bad status* (the core decodes status
    /// and syndrome from `out`); a negative errno only when the command was
    /// not executed.
    pub exec: Option<
        unsafe extern "C" fn(
            ctx: *mut c_void,
            input: *const c_void,
            in_len: usize,
            out: *mut c_void,
            out_len: usize,
        ) -> c_int,
    >,
    /// Starts SAVE_VHCA_STATE (`input`, `in_len` bytes; copy them if needed
    /// after returning) asynchronously
    /// (`mlx5_cmd_exec_cb()` into a `MLX5VF_SAVE_OUT_LEN`-byte output the
    /// platform owns). Its completion must later reach
    /// `mlx5vf_save_complete()` with `token`, exactly once, from a context
    /// that can take the device lock (a work item). Return 0 if started; on
    /// an error nothing may complete.
    pub start_save: Option<
        unsafe extern "C" fn(
            ctx: *mut c_void,
            input: *const c_void,
            in_len: usize,
            token: u64,
        ) -> c_int,
    >,
    /// Allocates a buffer of `npages` (never 0) pages of `MLX5VF_PAGE_SIZE`
    /// for DMA direction `dir` (`MLX5VF_DMA_*`) and stores a non-zero handle
    /// of the platform's choosing in `*buffer`.
    pub alloc_buffer: Option<
        unsafe extern "C" fn(ctx: *mut c_void, npages: u32, dir: u32, buffer: *mut u64) -> c_int,
    >,
    /// Makes `count` buffers, in order, one device-visible range starting at
    /// virtual address 0: DMA-map their pages, then CREATE_MKEY in MTT mode
    /// under protection domain `pd` (see `mlx5vf_encode_create_mkey()`), and
    /// store the key in `*mkey`. On an error nothing stays mapped.
    pub map_buffers: Option<
        unsafe extern "C" fn(
            ctx: *mut c_void,
            pd: u32,
            buffers: *const u64,
            count: usize,
            mkey: *mut u32,
        ) -> c_int,
    >,
    /// Undoes `map_buffers`: DESTROY_MKEY `mkey`, then DMA-unmap the buffers.
    /// Unmap even if DESTROY_MKEY failed; a non-zero return is only counted
    /// as a leaked key.
    pub unmap_buffers: Option<
        unsafe extern "C" fn(
            ctx: *mut c_void,
            mkey: u32,
            buffers: *const u64,
            count: usize,
        ) -> c_int,
    >,
    /// Frees an (unmapped) buffer.
    pub free_buffer: Option<unsafe extern "C" fn(ctx: *mut c_void, buffer: u64)>,
    /// Continues the standard CRC-32C `crc` (initial value and final XOR
    /// `0xffffffff` already applied) over `len` bytes of `buffer` from
    /// `offset`. With the kernel's raw `crc32c()`:
    /// `~crc32c(~crc, bytes, len)`; `mlx5vf_crc32c()` is a portable one.
    pub crc32c: Option<
        unsafe extern "C" fn(ctx: *mut c_void, buffer: u64, offset: u64, len: u64, crc: u32) -> u32,
    >,
    /// Copies `len` bytes of `buffer` from `offset` to the reader's memory
    /// `user_dst` (`copy_to_user()` page by page). Returns bytes copied
    /// (short on a fault) or a negative errno.
    pub buffer_to_user: Option<
        unsafe extern "C" fn(
            ctx: *mut c_void,
            user_dst: mlx5vf_uptr,
            buffer: u64,
            offset: u64,
            len: usize,
        ) -> i64,
    >,
    /// Copies `len` bytes from the writer's memory `user_src` into `buffer`
    /// at `offset` (`copy_from_user()` page by page). Returns bytes copied
    /// (short on a fault) or a negative errno.
    pub buffer_from_user: Option<
        unsafe extern "C" fn(
            ctx: *mut c_void,
            buffer: u64,
            offset: u64,
            user_src: mlx5vf_const_uptr,
            len: usize,
        ) -> i64,
    >,
    /// `copy_to_user(user_dst, src, len)` from kernel memory `src` (record
    /// headers, the precopy-info reply). Returns bytes copied or a negative
    /// errno.
    pub copy_to_user: Option<
        unsafe extern "C" fn(
            ctx: *mut c_void,
            user_dst: mlx5vf_uptr,
            src: *const c_void,
            len: usize,
        ) -> i64,
    >,
    /// `copy_from_user(dst, user_src, len)` into kernel memory `dst`.
    /// Returns bytes copied or a negative errno.
    pub copy_from_user: Option<
        unsafe extern "C" fn(
            ctx: *mut c_void,
            dst: *mut c_void,
            user_src: mlx5vf_const_uptr,
            len: usize,
        ) -> i64,
    >,
    /// Takes the device lock (the VFIO state mutex: `mutex_lock()`).
    pub lock: Option<unsafe extern "C" fn(ctx: *mut c_void)>,
    /// Tries to take the device lock without sleeping (`mutex_trylock()`);
    /// `true` if taken.
    pub trylock: Option<unsafe extern "C" fn(ctx: *mut c_void) -> bool>,
    /// Releases the device lock (a plain `mutex_unlock()`: the deferred-reset
    /// handling is done by `mlx5vf_unlock()`, which calls this).
    pub unlock: Option<unsafe extern "C" fn(ctx: *mut c_void)>,
    /// Wakes every waiter (`wake_up_all()` on the queue readers and
    /// `MLX5VF_RETRY` loops sleep on); called with the device lock held,
    /// after `mlx5vf_events()` moved.
    pub wake: Option<unsafe extern "C" fn(ctx: *mut c_void)>,
    /// OPTIONAL (may be `NULL`: LOADs then run synchronously through
    /// `exec`). Starts LOAD_VHCA_STATE (`input`, `in_len` bytes; copy them if
    /// needed after returning) asynchronously, so the next image arrives
    /// while firmware LOADs this one. Its completion must later reach
    /// `mlx5vf_load_complete()` with `token`, exactly once, from a context
    /// that can take the device lock (a work item), even if the file closed
    /// meanwhile. Return 0 if started; on an error nothing may complete.
    pub start_load: Option<
        unsafe extern "C" fn(
            ctx: *mut c_void,
            input: *const c_void,
            in_len: usize,
            token: u64,
        ) -> c_int,
    >,
    /// OPTIONAL (may be `NULL`: nothing is measured and `chunk_size`
    /// stays). A monotonic clock in nanoseconds (`ktime_get_ns()`), with
    /// which the core times SAVEs to tune the chunk size
    /// (`MLX5VF_CFG_MEASURED_CHUNKS`). Called with the device lock held.
    pub now_ns: Option<unsafe extern "C" fn(ctx: *mut c_void) -> u64>,
    /// Optional (device dirty tracking; `NULL`: `mlx5vf_log_start()` answers
    /// `-EOPNOTSUPP`). Builds the page tracker's reporting channel on the
    /// PF: a CQ and two loopback RC QPs (the host QP receive-only with
    /// `slots` posted receive WQEs of `msg_size` bytes under one MTT mkey;
    /// the firmware QP with a zero-length RQ), connected, and subscribes to
    /// OBJECT_CHANGE and CQ/WQ error events. Writes the firmware QP number
    /// to `fw_qpn`. Returns 0, `-EOPNOTSUPP` for "no channel here", or a
    /// negative errno with nothing left allocated. **Lock held.**
    pub report_open: Option<
        unsafe extern "C" fn(
            ctx: *mut c_void,
            msg_size: u32,
            slots: u32,
            fw_qpn: *mut u32,
        ) -> c_int,
    >,
    /// Copies the next valid CQE (`MLX5VF_REPORT_CQE_LEN` bytes, owner bit
    /// and invalid opcode already judged) to `cqe` and consumes it, or waits
    /// up to `timeout_ns` (arming the CQ) for one or for an event. Returns
    /// `MLX5VF_REPORT_*` or a negative errno. **Lock held** (Linux also
    /// sleeps here with its state mutex held).
    pub report_next:
        Option<unsafe extern "C" fn(ctx: *mut c_void, cqe: *mut u8, timeout_ns: u64) -> c_int>,
    /// Copies `len` bytes of the message in receive slot `slot` from byte
    /// `offset` to `dst`. Returns 0 or a negative errno. **Lock held.**
    pub report_read: Option<
        unsafe extern "C" fn(
            ctx: *mut c_void,
            slot: u32,
            offset: u32,
            dst: *mut u8,
            len: usize,
        ) -> c_int,
    >,
    /// Re-posts receive slot `slot` (its WQE and the RQ doorbell record).
    /// Returns 0 or a negative errno. **Lock held.**
    pub report_repost: Option<unsafe extern "C" fn(ctx: *mut c_void, slot: u32) -> c_int>,
    /// Tears the channel down (after the tracker object is destroyed).
    /// **Lock held.**
    pub report_close: Option<unsafe extern "C" fn(ctx: *mut c_void)>,
}

// ---------------------------------------------------------------------------
// The literals above against the core's values.

const _: () = {
    assert!(errnos_match());
    assert!(MLX5VF_PROBE_SCRATCH_LEN == PROBE_SCRATCH_LEN);
    assert!(MLX5VF_SAVE_OUT_LEN == SaveVhcaState::OUT_SIZE);
    assert!(MLX5VF_CREATE_MKEY_OUT_LEN == create_mkey_out::SIZE);
    assert!(MLX5VF_DESTROY_MKEY_IN_LEN == DestroyMkey::IN_SIZE);
    assert!(MLX5VF_DESTROY_MKEY_OUT_LEN == DestroyMkey::OUT_SIZE);
    // CAST: PAGE_SIZE is 4096.
    assert!(MLX5VF_PAGE_SIZE as u64 == PAGE_SIZE);
    assert!(MLX5VF_PRODUCER_LEN == PRODUCER_LEN);
    assert!(MLX5VF_MIGRATION_STOP_COPY == MigrationFlags::new().with_stop_copy(true).into_bits());
    assert!(MLX5VF_MIGRATION_P2P == MigrationFlags::new().with_p2p(true).into_bits());
    assert!(MLX5VF_MIGRATION_PRE_COPY == MigrationFlags::new().with_pre_copy(true).into_bits());
    assert!(MLX5VF_STATE_ERROR == MigState::Error.raw());
    assert!(MLX5VF_STATE_STOP == MigState::Stop.raw());
    assert!(MLX5VF_STATE_RUNNING == MigState::Running.raw());
    assert!(MLX5VF_STATE_STOP_COPY == MigState::StopCopy.raw());
    assert!(MLX5VF_STATE_RESUMING == MigState::Resuming.raw());
    assert!(MLX5VF_STATE_RUNNING_P2P == MigState::RunningP2p.raw());
    assert!(MLX5VF_STATE_PRE_COPY == MigState::PreCopy.raw());
    assert!(MLX5VF_STATE_PRE_COPY_P2P == MigState::PreCopyP2p.raw());
    // CAST: usize -> u32, 24.
    assert!(MLX5VF_PRECOPY_INFO_MINSZ as usize == core::mem::size_of::<mlx5vf_precopy_info>());
    assert!(core::mem::size_of::<mlx5vf_device>() == MLX5VF_DEVICE_SIZE);
    assert!(core::mem::align_of::<mlx5vf_device>() == MLX5VF_DEVICE_ALIGN);
    assert!(core::mem::size_of::<mlx5vf_file>() == MLX5VF_FILE_SIZE);
    assert!(core::mem::align_of::<mlx5vf_file>() == MLX5VF_FILE_ALIGN);
    assert!(MLX5VF_DEVICE_WORDS * 8 == MLX5VF_DEVICE_SIZE);
    assert!(MLX5VF_FILE_WORDS * 8 == MLX5VF_FILE_SIZE);
    assert!(core::mem::size_of::<mlx5vf_dirty>() == MLX5VF_DIRTY_SIZE);
    assert!(core::mem::align_of::<mlx5vf_dirty>() == MLX5VF_DIRTY_ALIGN);
    assert!(MLX5VF_DIRTY_WORDS * 8 == MLX5VF_DIRTY_SIZE);
    assert!(MLX5VF_DIRTY_SCRATCH_LEN == mlx5vf_core::device::DIRTY_SCRATCH_LEN);
    assert!(MLX5VF_REPORT_CQE_LEN == mlx5vf_core::ifc::page_track::CQE_LEN);
    assert!(core::mem::size_of::<mlx5vf_iova_range>() == 16);
};
