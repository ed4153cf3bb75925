//! The core's [`Hal`] over the C callback table.

use core::ffi::{c_int, c_void};

use mlx5vf_core::device::MAX_BUFFERS;
use mlx5vf_core::hal::{
    BufferId, DmaDirection, Hal, HalErrorKind, LoadToken, ReportChannel, ReportChannelRequest,
    ReportEvent, SaveToken,
};
use mlx5vf_core::ifc::mkey::Mkey;
use mlx5vf_core::ifc::page_track::CQE_LEN;
use mlx5vf_core::ifc::pd::Pd;

use crate::abi::{
    MLX5VF_DMA_FROM_DEVICE, MLX5VF_DMA_TO_DEVICE, MLX5VF_EFAULT, MLX5VF_EIO, MLX5VF_ENOMEM,
    MLX5VF_ENOTCONN, MLX5VF_EOPNOTSUPP, MLX5VF_ETIMEDOUT, MLX5VF_REPORT_CHANNEL_ERROR,
    MLX5VF_REPORT_CQE, MLX5VF_REPORT_OBJECT_CHANGED, MLX5VF_REPORT_TIMED_OUT, mlx5vf_platform_ops,
};

type ExecFn = unsafe extern "C" fn(*mut c_void, *const c_void, usize, *mut c_void, usize) -> c_int;
type StartSaveFn = unsafe extern "C" fn(*mut c_void, *const c_void, usize, u64) -> c_int;
type AllocFn = unsafe extern "C" fn(*mut c_void, u32, u32, *mut u64) -> c_int;
type MapFn = unsafe extern "C" fn(*mut c_void, u32, *const u64, usize, *mut u32) -> c_int;
type UnmapFn = unsafe extern "C" fn(*mut c_void, u32, *const u64, usize) -> c_int;
type FreeFn = unsafe extern "C" fn(*mut c_void, u64);
type CrcFn = unsafe extern "C" fn(*mut c_void, u64, u64, u64, u32) -> u32;
type BufToUserFn = unsafe extern "C" fn(*mut c_void, *mut c_void, u64, u64, usize) -> i64;
type BufFromUserFn = unsafe extern "C" fn(*mut c_void, u64, u64, *const c_void, usize) -> i64;
type ToUserFn = unsafe extern "C" fn(*mut c_void, *mut c_void, *const c_void, usize) -> i64;
type FromUserFn = unsafe extern "C" fn(*mut c_void, *mut c_void, *const c_void, usize) -> i64;
type LockFn = unsafe extern "C" fn(*mut c_void);
type ReportOpenFn = unsafe extern "C" fn(*mut c_void, u32, u32, *mut u32) -> c_int;
type ReportNextFn = unsafe extern "C" fn(*mut c_void, *mut u8, u64) -> c_int;
type ReportReadFn = unsafe extern "C" fn(*mut c_void, u32, u32, *mut u8, usize) -> c_int;
type ReportRepostFn = unsafe extern "C" fn(*mut c_void, u32) -> c_int;
type TryLockFn = unsafe extern "C" fn(*mut c_void) -> bool;

/// A callback table with every entry present.
///
/// # Invariants
/// Each pointer came from a `mlx5vf_platform_ops` the caller of
/// `mlx5vf_device_init()` promised to implement as documented there.
#[derive(Clone, Copy)]
pub(crate) struct Ops {
    pub(crate) exec: ExecFn,
    pub(crate) start_save: StartSaveFn,
    pub(crate) alloc_buffer: AllocFn,
    pub(crate) map_buffers: MapFn,
    pub(crate) unmap_buffers: UnmapFn,
    pub(crate) free_buffer: FreeFn,
    pub(crate) crc32c: CrcFn,
    pub(crate) buffer_to_user: BufToUserFn,
    pub(crate) buffer_from_user: BufFromUserFn,
    pub(crate) copy_to_user: ToUserFn,
    pub(crate) copy_from_user: FromUserFn,
    pub(crate) lock: LockFn,
    pub(crate) trylock: TryLockFn,
    pub(crate) unlock: LockFn,
    pub(crate) wake: LockFn,
    /// `NULL` in the table: LOADs run through `exec`.
    pub(crate) start_load: Option<StartSaveFn>,
    /// `NULL` in the table: nothing is measured.
    pub(crate) now_ns: Option<unsafe extern "C" fn(ctx: *mut c_void) -> u64>,
    /// The reporting channel: all five callbacks, or none.
    pub(crate) report: Option<ReportOps>,
}

/// The page tracker's reporting-channel callbacks.
#[derive(Clone, Copy)]
pub(crate) struct ReportOps {
    open: ReportOpenFn,
    next: ReportNextFn,
    read: ReportReadFn,
    repost: ReportRepostFn,
    close: LockFn,
}

impl Ops {
    /// The table, if no required entry is `NULL`.
    pub(crate) fn from_table(t: &mlx5vf_platform_ops) -> Option<Self> {
        Some(Self {
            exec: t.exec?,
            start_save: t.start_save?,
            alloc_buffer: t.alloc_buffer?,
            map_buffers: t.map_buffers?,
            unmap_buffers: t.unmap_buffers?,
            free_buffer: t.free_buffer?,
            crc32c: t.crc32c?,
            buffer_to_user: t.buffer_to_user?,
            buffer_from_user: t.buffer_from_user?,
            copy_to_user: t.copy_to_user?,
            copy_from_user: t.copy_from_user?,
            lock: t.lock?,
            trylock: t.trylock?,
            unlock: t.unlock?,
            wake: t.wake?,
            start_load: t.start_load,
            now_ns: t.now_ns,
            report: match (
                t.report_open,
                t.report_next,
                t.report_read,
                t.report_repost,
                t.report_close,
            ) {
                (Some(open), Some(next), Some(read), Some(repost), Some(close)) => {
                    Some(ReportOps {
                        open,
                        next,
                        read,
                        repost,
                        close,
                    })
                }
                (None, None, None, None, None) => None,
                // Some but not all: a table the caller got wrong.
                _ => return None,
            },
        })
    }
}

/// The platform error kind for a callback's negative errno. The core keeps
/// only the kinds it distinguishes; everything else reads back as `EIO`.
pub(crate) fn kind_of(rc: c_int) -> HalErrorKind {
    match rc.checked_neg() {
        Some(MLX5VF_ENOMEM) => HalErrorKind::OutOfMemory,
        Some(MLX5VF_ETIMEDOUT) => HalErrorKind::Timeout,
        Some(MLX5VF_ENOTCONN) => HalErrorKind::Detached,
        Some(MLX5VF_EFAULT) => HalErrorKind::Fault,
        Some(MLX5VF_EIO) => HalErrorKind::Delivery,
        _ => HalErrorKind::Other,
    }
}

fn check(rc: c_int) -> Result<(), HalErrorKind> {
    if rc == 0 { Ok(()) } else { Err(kind_of(rc)) }
}

/// The `Hal` a device runs on: the callbacks and their context.
pub(crate) struct CHal {
    pub(crate) ops: Ops,
    pub(crate) ctx: *mut c_void,
}

impl CHal {
    /// Buffer handles as the `u64`s the callbacks take (`BufferId` has no
    /// guaranteed layout, so they are copied). `None` above `MAX_BUFFERS`,
    /// more than the device ever maps at once.
    fn handles(buffers: &[BufferId]) -> Option<([u64; MAX_BUFFERS], usize)> {
        let mut ids = [0u64; MAX_BUFFERS];
        if buffers.len() > ids.len() {
            return None;
        }
        for (dst, b) in ids.iter_mut().zip(buffers) {
            *dst = b.0;
        }
        Some((ids, buffers.len()))
    }
}

impl Hal for CHal {
    type Error = HalErrorKind;

    fn exec(&mut self, input: &[u8], output: &mut [u8]) -> Result<(), HalErrorKind> {
        // SAFETY: `exec` is the caller's callback (Ops invariant); both
        // slices are valid for the lengths passed, for the whole call.
        let rc = unsafe {
            (self.ops.exec)(
                self.ctx,
                input.as_ptr().cast(),
                input.len(),
                output.as_mut_ptr().cast(),
                output.len(),
            )
        };
        check(rc)
    }

    fn start_save(&mut self, input: &[u8], token: SaveToken) -> Result<(), HalErrorKind> {
        // SAFETY: as in `exec`; the platform copies `input` if it needs it
        // after returning (documented on `start_save`).
        let rc = unsafe {
            (self.ops.start_save)(
                self.ctx,
                input.as_ptr().cast(),
                input.len(),
                token.to_bits(),
            )
        };
        check(rc)
    }

    fn start_load(&mut self, input: &[u8], token: LoadToken) -> Result<bool, HalErrorKind> {
        let Some(start_load) = self.ops.start_load else {
            return Ok(false);
        };
        // SAFETY: as in `start_save`.
        let rc = unsafe {
            start_load(
                self.ctx,
                input.as_ptr().cast(),
                input.len(),
                token.to_bits(),
            )
        };
        check(rc).map(|()| true)
    }

    fn alloc_buffer(&mut self, npages: u32, dir: DmaDirection) -> Result<BufferId, HalErrorKind> {
        let dir = match dir {
            DmaDirection::FromDevice => MLX5VF_DMA_FROM_DEVICE,
            DmaDirection::ToDevice => MLX5VF_DMA_TO_DEVICE,
        };
        let mut id = 0u64;
        // SAFETY: the callback writes one u64 through a pointer to a local.
        let rc = unsafe { (self.ops.alloc_buffer)(self.ctx, npages, dir, &mut id) };
        check(rc)?;
        if id == 0 {
            // 0 is not a handle (the core uses it as a filler): give the
            // buffer back and fail as out of memory.
            // SAFETY: returning what the platform just handed out.
            unsafe { (self.ops.free_buffer)(self.ctx, id) };
            return Err(HalErrorKind::OutOfMemory);
        }
        Ok(BufferId(id))
    }

    fn map_buffers(&mut self, pd: Pd, buffers: &[BufferId]) -> Result<Mkey, HalErrorKind> {
        let (ids, n) = Self::handles(buffers).ok_or(HalErrorKind::Other)?;
        let mut mkey = 0u32;
        // SAFETY: `ids` holds `n` handles and outlives the call; the callback
        // writes one u32 through a pointer to a local.
        let rc = unsafe { (self.ops.map_buffers)(self.ctx, pd.0, ids.as_ptr(), n, &mut mkey) };
        check(rc)?;
        Ok(Mkey(mkey))
    }

    fn unmap_buffers(&mut self, mkey: Mkey, buffers: &[BufferId]) -> Result<(), HalErrorKind> {
        let (ids, n) = Self::handles(buffers).ok_or(HalErrorKind::Other)?;
        // SAFETY: `ids` holds `n` handles and outlives the call.
        let rc = unsafe { (self.ops.unmap_buffers)(self.ctx, mkey.0, ids.as_ptr(), n) };
        check(rc)
    }

    fn free_buffer(&mut self, buffer: BufferId) {
        // SAFETY: a handle `alloc_buffer` returned, freed once (the core's
        // resource table guarantees it).
        unsafe { (self.ops.free_buffer)(self.ctx, buffer.0) }
    }

    fn crc32c(&mut self, buffer: BufferId, offset: u64, len: u64, crc: u32) -> u32 {
        // SAFETY: a live handle and a range the core computed inside it.
        unsafe { (self.ops.crc32c)(self.ctx, buffer.0, offset, len, crc) }
    }

    fn now_ns(&mut self) -> Option<u64> {
        let now_ns = self.ops.now_ns?;
        // SAFETY: the caller's optional callback (Ops invariant), called
        // with the lock held as documented.
        Some(unsafe { now_ns(self.ctx) })
    }

    fn report_channel_open(
        &mut self,
        req: ReportChannelRequest,
    ) -> Result<Option<ReportChannel>, HalErrorKind> {
        let Some(r) = self.ops.report else {
            return Ok(None);
        };
        let mut fw_qpn = 0u32;
        // SAFETY: the caller's callback (Ops invariant); `fw_qpn` is a live
        // local, valid for the write.
        let rc = unsafe { (r.open)(self.ctx, req.msg_size, req.slots, &mut fw_qpn) };
        match rc.checked_neg() {
            Some(0) => Ok(Some(ReportChannel { fw_qpn })),
            Some(MLX5VF_EOPNOTSUPP) => Ok(None),
            _ => Err(kind_of(rc)),
        }
    }

    fn report_channel_next(
        &mut self,
        cqe: &mut [u8; CQE_LEN],
        timeout_ns: u64,
    ) -> Result<ReportEvent, HalErrorKind> {
        let Some(r) = self.ops.report else {
            return Ok(ReportEvent::ChannelError);
        };
        // SAFETY: the caller's callback; `cqe` is valid for CQE_LEN bytes
        // of writes (what the header promises the callback).
        let rc = unsafe { (r.next)(self.ctx, cqe.as_mut_ptr(), timeout_ns) };
        Ok(match rc {
            MLX5VF_REPORT_CQE => ReportEvent::Cqe,
            MLX5VF_REPORT_OBJECT_CHANGED => ReportEvent::ObjectChanged,
            MLX5VF_REPORT_TIMED_OUT => ReportEvent::TimedOut,
            MLX5VF_REPORT_CHANNEL_ERROR => ReportEvent::ChannelError,
            rc if rc < 0 => return Err(kind_of(rc)),
            // An answer the header does not define: the channel is broken.
            _ => ReportEvent::ChannelError,
        })
    }

    fn report_channel_read(
        &mut self,
        slot: u32,
        offset: u32,
        dst: &mut [u8],
    ) -> Result<bool, HalErrorKind> {
        let Some(r) = self.ops.report else {
            return Ok(false);
        };
        // SAFETY: the caller's callback; `dst` is valid for its length.
        let rc = unsafe { (r.read)(self.ctx, slot, offset, dst.as_mut_ptr(), dst.len()) };
        check(rc).map(|()| true)
    }

    fn report_channel_repost(&mut self, slot: u32) -> Result<(), HalErrorKind> {
        let Some(r) = self.ops.report else {
            return Err(HalErrorKind::Other);
        };
        // SAFETY: the caller's callback.
        check(unsafe { (r.repost)(self.ctx, slot) })
    }

    fn report_channel_close(&mut self) {
        if let Some(r) = self.ops.report {
            // SAFETY: the caller's callback.
            unsafe { (r.close)(self.ctx) }
        }
    }
}

/// A copy callback's result as bytes copied, at most `want`; `Err` with a
/// negative errno when nothing was copied.
pub(crate) fn copied(r: i64, want: usize) -> Result<usize, c_int> {
    match usize::try_from(r) {
        Ok(n) => Ok(n.min(want)),
        // A negative count: pass a plausible errno on, anything else is EFAULT.
        Err(_) => Err(match c_int::try_from(r) {
            Ok(e) if (-4095..0).contains(&e) => e,
            _ => -MLX5VF_EFAULT,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_errnos_keep_what_the_core_distinguishes() {
        assert_eq!(kind_of(-MLX5VF_ENOMEM), HalErrorKind::OutOfMemory);
        assert_eq!(kind_of(-MLX5VF_ETIMEDOUT), HalErrorKind::Timeout);
        assert_eq!(kind_of(-MLX5VF_ENOTCONN), HalErrorKind::Detached);
        assert_eq!(kind_of(-MLX5VF_EFAULT), HalErrorKind::Fault);
        assert_eq!(kind_of(-MLX5VF_EIO), HalErrorKind::Delivery);
        // Anything else (an errno the core has no kind for, a positive
        // value, c_int::MIN) reads back as EIO.
        for rc in [-32, 7, c_int::MIN] {
            assert_eq!(kind_of(rc).errno().code(), MLX5VF_EIO);
        }
    }

    #[test]
    fn copy_results_are_clamped_or_errnos() {
        assert_eq!(copied(10, 4), Ok(4));
        assert_eq!(copied(3, 4), Ok(3));
        assert_eq!(copied(0, 4), Ok(0));
        assert_eq!(copied(-14, 4), Err(-14));
        assert_eq!(copied(-5000, 4), Err(-MLX5VF_EFAULT));
        assert_eq!(copied(i64::MIN, 4), Err(-MLX5VF_EFAULT));
    }
}
