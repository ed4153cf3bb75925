//! The register-level PF ([`mlx5vf_sim::pf::Pf`]) as kernel objects: the
//! devices behind the `mlx5vf_pfsim` module (`shim-linux/kmod/pfsim`), each
//! a ConnectX PF a userspace driver (`mlx5vf`'s `vfio-pf:` backend) owns
//! through a real `/dev/vfio` device: its BAR0 reads and writes land in
//! [`Pf::read32`] / [`Pf::write32`], and the model's DMA goes through
//! `vfio_dma_rw()` to the IOVAs the user mapped with `VFIO_IOMMU_MAP_DMA`.
//!
//! # Memory
//! [`MAX_PFS`] PFs live in static memory ([`Pf::EMPTY`], configured in
//! place): a module has no heap for their 200 KiB each and no stack for
//! any of it. The C side serialises the calls for one PF with that
//! device's mutex; a busy flag per PF turns a violation into `-EBUSY`.
//!
//! # DMA
//! Every access goes through the device's bounce buffer
//! ([`mlx5vf_ksim_pf_dma`]): for a device write the model fills the bounce
//! buffer and C copies it out with `vfio_dma_rw()`; for a read C copies in
//! first. The model never sees user memory, and no access is longer than
//! the bounce buffer ([`Dma::max_access`]). The firmware's own IOMMU table
//! holds one mapping of the whole address space while the device is open
//! ([`mlx5vf_ksim_pf_attach_iommu`]): the real check is VFIO's, and an
//! IOVA the user did not map fails in `vfio_dma_rw()`, which the model
//! reports as a DMA fault (a delivery error or a failed command, counted
//! in [`mlx5vf_ksim_pf_status::dma_faults`]).

use core::cell::UnsafeCell;
use core::ffi::{c_char, c_int, c_void};
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, Ordering};

use mlx5vf_sim::pf::{Pf, QueueFault, RegisterConfig};
use mlx5vf_sim::wire::opcode;
use mlx5vf_sim::{Dma, DmaFault, FirmwareConfig, MAX_VFS, SimSpec};

use crate::{ByteWriter, EBUSY, EINVAL, ENODEV};

/// Most PFs the module serves (the `pfs` parameter's bound): four are
/// 800 KiB of static memory; the rig uses two.
pub const MAX_PFS: usize = 4;

/// The firmware's IOMMU window while the device is open: everything from
/// the second page up (IOVA 0 means "none" to the queue). `vfio_dma_rw()`
/// decides what is really mapped.
const IOMMU_FIRST: u64 = 4096;
const IOMMU_LEN: u64 = (1 << 63) - IOMMU_FIRST;

/// One PF and the flag that admits one caller at a time.
struct PfCell {
    busy: AtomicBool,
    pf: UnsafeCell<Pf>,
}

// SAFETY: `pf` is only reached through `with_pf`, which admits one caller
// at a time per cell (the `busy` flag, acquire/release).
unsafe impl Sync for PfCell {}

static PFS: [PfCell; MAX_PFS] = [const {
    PfCell {
        busy: AtomicBool::new(false),
        pf: UnsafeCell::new(Pf::EMPTY),
    }
}; MAX_PFS];

/// Runs `f` on PF `index`: `-ENODEV` for no such PF, `-EBUSY` if another
/// call is inside (the C mutex was not held).
fn with_pf(index: u32, f: impl FnOnce(&mut Pf) -> c_int) -> c_int {
    let Some(cell) = usize::try_from(index).ok().and_then(|i| PFS.get(i)) else {
        return -ENODEV;
    };
    if cell
        .busy
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        return -EBUSY;
    }
    // SAFETY: the flag was false and is now ours, so no other reference to
    // this PF exists until we clear it below.
    let pf = unsafe { &mut *cell.pf.get() };
    let r = f(pf);
    cell.busy.store(false, Ordering::Release);
    r
}

/// How the model reaches user memory: a bounce buffer and the C function
/// that copies it to or from an IOVA with `vfio_dma_rw()`.
#[repr(C)]
#[derive(Debug)]
pub struct mlx5vf_ksim_pf_dma {
    /// Passed back to `rw`.
    pub ctx: *mut c_void,
    /// The bounce buffer, `bounce_len` bytes the device owns.
    pub bounce: *mut u8,
    /// Its length: the longest access.
    pub bounce_len: usize,
    /// Copies `len` bytes between `buf` and IOVA `iova` (`write`: to the
    /// IOVA): 0, or a negative errno when the IOVA is not mapped, the
    /// function may not master the bus, or the copy failed.
    pub rw: Option<
        unsafe extern "C" fn(
            ctx: *mut c_void,
            iova: u64,
            buf: *mut u8,
            len: usize,
            write: bool,
        ) -> c_int,
    >,
}

/// [`Dma`] over a [`mlx5vf_ksim_pf_dma`].
struct VfioDma<'a>(&'a mlx5vf_ksim_pf_dma);

impl VfioDma<'_> {
    /// The first `len` bytes of the bounce buffer, if it is that long.
    fn bounce(&mut self, len: usize) -> Result<&mut [u8], DmaFault> {
        if self.0.bounce.is_null() || len > self.0.bounce_len {
            return Err(DmaFault);
        }
        // SAFETY: the C caller passes a buffer of `bounce_len` bytes that
        // only this device uses, and holds the device's lock for the whole
        // call into the model (module docs); `len <= bounce_len`.
        Ok(unsafe { core::slice::from_raw_parts_mut(self.0.bounce, len) })
    }

    fn copy(&self, iova: u64, len: usize, write: bool) -> Result<(), DmaFault> {
        let rw = self.0.rw.ok_or(DmaFault)?;
        // SAFETY: `rw` is the C copy function, given the context C made it
        // for and the bounce buffer, which holds at least `len` bytes
        // (checked by `bounce` before every call).
        let r = unsafe { rw(self.0.ctx, iova, self.0.bounce, len, write) };
        if r == 0 { Ok(()) } else { Err(DmaFault) }
    }
}

impl Dma for VfioDma<'_> {
    fn dma_write(
        &mut self,
        iova: u64,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> Result<(), DmaFault> {
        let b = self.bounce(len)?;
        // What the model leaves unwritten is zero, not an earlier access.
        b.fill(0);
        fill(b);
        self.copy(iova, len, true)
    }

    fn dma_read(
        &mut self,
        iova: u64,
        len: usize,
        consume: &mut dyn FnMut(&[u8]),
    ) -> Result<(), DmaFault> {
        self.bounce(len)?;
        self.copy(iova, len, false)?;
        consume(self.bounce(len)?);
        Ok(())
    }

    fn max_access(&self) -> usize {
        self.0.bounce_len
    }
}

/// The DMA of a call, or `None` for a null pointer.
///
/// # Safety
/// `dma` is null or points to a valid [`mlx5vf_ksim_pf_dma`] for the call.
unsafe fn dma_of<'a>(dma: *const mlx5vf_ksim_pf_dma) -> Option<VfioDma<'a>> {
    // SAFETY: null or valid (caller).
    unsafe { dma.as_ref() }.map(VfioDma)
}

/// PFs the module can serve.
#[unsafe(no_mangle)]
pub extern "C" fn mlx5vf_ksim_pf_max() -> c_int {
    // CAST: a small constant.
    MAX_PFS as c_int
}

/// Builds PF `index` from a `sim:` spec (`len` bytes at `spec`), its VFs'
/// seeds moved by `index * MAX_VFS` so that no two VFs of the module share
/// a state: 0, `-EINVAL` for a spec that does not parse or configure.
///
/// # Safety
/// `spec` points to `len` readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_ksim_pf_configure(
    index: u32,
    spec: *const c_char,
    len: usize,
) -> c_int {
    if spec.is_null() {
        return -EINVAL;
    }
    // SAFETY: `len` readable bytes (caller).
    let bytes = unsafe { core::slice::from_raw_parts(spec.cast::<u8>(), len) };
    let Ok(text) = core::str::from_utf8(bytes) else {
        return -EINVAL;
    };
    let Ok(mut parsed) = text.parse::<SimSpec>() else {
        return -EINVAL;
    };
    // CAST: both small.
    let shift = u64::from(index).saturating_mul(MAX_VFS as u64);
    parsed.seed = parsed.seed.wrapping_add(shift);
    let config = FirmwareConfig::from_spec(&parsed);
    with_pf(index, |pf| {
        match pf.configure(&config, RegisterConfig::DEFAULT) {
            Ok(()) => 0,
            Err(_) => -EINVAL,
        }
    })
}

/// A function-level reset of PF `index` ([`Pf::reset`]): 0 or `-ENODEV`.
#[unsafe(no_mangle)]
pub extern "C" fn mlx5vf_ksim_pf_reset(index: u32) -> c_int {
    with_pf(index, |pf| {
        pf.reset();
        0
    })
}

/// A function-level reset of VF `vf` of PF `index` (what a PCI FLR of the
/// VF does): it runs again and its sessions end; its state stays. 0, or
/// `-ENODEV` for no such PF or VF.
#[unsafe(no_mangle)]
pub extern "C" fn mlx5vf_ksim_pf_reset_vf(index: u32, vf: u16) -> c_int {
    with_pf(index, |pf| {
        if vf >= pf.firmware().vf_count() {
            return -ENODEV;
        }
        pf.firmware_mut().reset_vf(vf);
        0
    })
}

/// Opens (`attach`) or closes the firmware's IOMMU window (module docs):
/// 0, or `-EINVAL` when it is already in that state.
#[unsafe(no_mangle)]
pub extern "C" fn mlx5vf_ksim_pf_attach_iommu(index: u32, attach: bool) -> c_int {
    with_pf(index, |pf| {
        let fw = pf.firmware_mut();
        let r = if attach {
            fw.iommu_map(IOMMU_FIRST, IOMMU_LEN)
        } else {
            fw.iommu_unmap(IOMMU_FIRST, IOMMU_LEN)
        };
        r.map_or(-EINVAL, |()| 0)
    })
}

/// Reads BAR0 register `offset` into `value`: 0, `-ENODEV` or `-EINVAL`.
///
/// # Safety
/// `value` is null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_ksim_pf_read32(index: u32, offset: u32, value: *mut u32) -> c_int {
    // SAFETY: null or writable (caller).
    let Some(value) = (unsafe { value.as_mut() }) else {
        return -EINVAL;
    };
    with_pf(index, |pf| {
        *value = pf.read32(offset);
        0
    })
}

/// Writes BAR0 register `offset`; `rung` gets the slots whose doorbell
/// rang (bit n = slot n) and that the caller must now run with
/// [`mlx5vf_ksim_pf_execute`]: 0, `-ENODEV` or `-EINVAL`.
///
/// # Safety
/// `rung` is null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_ksim_pf_write32(
    index: u32,
    offset: u32,
    value: u32,
    rung: *mut u32,
) -> c_int {
    // SAFETY: null or writable (caller).
    let Some(rung) = (unsafe { rung.as_mut() }) else {
        return -EINVAL;
    };
    with_pf(index, |pf| {
        pf.write32(offset, value);
        *rung = pf.take_doorbells();
        0
    })
}

/// What a pending slot holds.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct mlx5vf_ksim_pf_slot {
    /// The command's opcode.
    pub opcode: u32,
    /// 1 for SAVE and LOAD (they run asynchronously, as on hardware).
    pub slow: u32,
    /// `inlen`: the input scratch [`mlx5vf_ksim_pf_execute`] needs.
    pub inlen: u64,
    /// `outlen`: the output scratch it needs.
    pub outlen: u64,
}

/// Looks at slot `slot`: 1 with `info` filled when its entry is owned by
/// hardware, 0 when not (or unreachable), a negative errno otherwise.
///
/// # Safety
/// `dma` as [`mlx5vf_ksim_pf_dma`] says, `info` null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_ksim_pf_peek(
    index: u32,
    slot: u8,
    dma: *const mlx5vf_ksim_pf_dma,
    info: *mut mlx5vf_ksim_pf_slot,
) -> c_int {
    // SAFETY: as the caller promised.
    let (Some(mut dma), Some(info)) = (unsafe { dma_of(dma) }, unsafe { info.as_mut() }) else {
        return -EINVAL;
    };
    with_pf(index, |pf| match pf.peek(slot, &mut dma) {
        Some(p) => {
            *info = mlx5vf_ksim_pf_slot {
                opcode: u32::from(p.opcode),
                slow: u32::from(
                    p.opcode == opcode::SAVE_VHCA_STATE || p.opcode == opcode::LOAD_VHCA_STATE,
                ),
                // CAST: usize -> u64 is lossless on every target we build.
                inlen: p.inlen as u64,
                outlen: p.outlen as u64,
            };
            1
        }
        None => 0,
    })
}

/// Runs slot `slot` and hands its entry back: 1 when it was handed back
/// (the command completed, with any status), 0 when firmware keeps it
/// (stuck, health syndrome, or an entry it could not reach or does not
/// own), a negative errno otherwise. `input`/`output` are scratch of
/// `in_len`/`out_len` bytes; shorter than the entry's lengths, the command
/// is refused with a length delivery status.
///
/// # Safety
/// `dma` as [`mlx5vf_ksim_pf_dma`] says; `input` and `output` have
/// `in_len` and `out_len` writable bytes, distinct from each other and
/// from the bounce buffer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_ksim_pf_execute(
    index: u32,
    slot: u8,
    dma: *const mlx5vf_ksim_pf_dma,
    input: *mut u8,
    in_len: usize,
    output: *mut u8,
    out_len: usize,
) -> c_int {
    if input.is_null() || output.is_null() {
        return -EINVAL;
    }
    // SAFETY: as the caller promised.
    let Some(mut dma) = (unsafe { dma_of(dma) }) else {
        return -EINVAL;
    };
    // SAFETY: `in_len` writable bytes, not aliased (caller).
    let input = unsafe { core::slice::from_raw_parts_mut(input, in_len) };
    // SAFETY: `out_len` writable bytes, not aliased (caller).
    let output = unsafe { core::slice::from_raw_parts_mut(output, out_len) };
    with_pf(index, |pf| {
        match pf.execute(slot, &mut dma, input, output) {
            Some(done) => c_int::from(pf.hand_back(&done, &mut dma)),
            None => 0,
        }
    })
}

/// Arms a stuck firmware for PF `index`: the next command of `op` (any
/// command for `u32::MAX`) is never handed back. 0, `-EINVAL` for a bad
/// opcode, `-EBUSY` when too many faults are armed.
#[unsafe(no_mangle)]
pub extern "C" fn mlx5vf_ksim_pf_arm_stuck(index: u32, op: u32) -> c_int {
    let opcode = match op {
        u32::MAX => None,
        o => match u16::try_from(o) {
            Ok(o) => Some(o),
            Err(_) => return -EINVAL,
        },
    };
    with_pf(index, |pf| {
        if pf.arm_fault(opcode, QueueFault::Stuck) {
            0
        } else {
            -EBUSY
        }
    })
}

/// Writes VF `vf` of PF `index`'s state digest (64 hex digits and a NUL):
/// 0, `-ENODEV` for no such PF or VF, `-EINVAL` for a short buffer.
///
/// # Safety
/// `out` has `out_len` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_ksim_pf_digest(
    index: u32,
    vf: u16,
    out: *mut c_char,
    out_len: usize,
) -> c_int {
    if out.is_null() {
        return -EINVAL;
    }
    // SAFETY: `out_len` writable bytes (caller).
    let out = unsafe { core::slice::from_raw_parts_mut(out.cast::<u8>(), out_len) };
    with_pf(index, |pf| {
        let Some(digest) = pf.firmware().digest(vf) else {
            return -ENODEV;
        };
        let mut w = ByteWriter { buf: out, len: 0 };
        if write!(w, "{digest}").is_err() || w.terminate().is_err() {
            return -EINVAL;
        }
        0
    })
}

/// A PF's state and what it has done.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct mlx5vf_ksim_pf_status {
    /// VFs.
    pub vfs: u32,
    /// 1 while ENABLE_HCA(0) holds.
    pub enabled: u32,
    /// 1 while INIT_HCA holds.
    pub initialized: u32,
    /// Pages firmware holds.
    pub fw_pages: u32,
    /// Live PDs.
    pub pds: u32,
    /// Live mkeys.
    pub mkeys: u32,
    /// Live IOMMU mappings in the firmware's table (1 while the device is
    /// open: the window; nothing else).
    pub iommu_mappings: u32,
    /// Reserved (0).
    pub reserved: u32,
    /// Commands executed.
    pub commands: u64,
    /// Commands refused with a delivery status.
    pub delivery_errors: u64,
    /// Doorbells for entries not owned by hardware.
    pub spurious_doorbells: u64,
    /// Accesses the device could not make (unmapped IOVAs, no bus master).
    pub dma_faults: u64,
}

/// Fills `out` with PF `index`'s status: 0, `-ENODEV` or `-EINVAL`.
///
/// # Safety
/// `out` is null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlx5vf_ksim_pf_status(
    index: u32,
    out: *mut mlx5vf_ksim_pf_status,
) -> c_int {
    // SAFETY: null or writable (caller).
    let Some(out) = (unsafe { out.as_mut() }) else {
        return -EINVAL;
    };
    with_pf(index, |pf| {
        let a = pf.firmware().accounting();
        let c = pf.counters();
        *out = mlx5vf_ksim_pf_status {
            vfs: u32::from(pf.firmware().vf_count()),
            enabled: u32::from(pf.is_enabled()),
            initialized: u32::from(pf.is_initialized()),
            fw_pages: u32::try_from(pf.fw_pages()).unwrap_or(u32::MAX),
            pds: a.pds,
            mkeys: a.mkeys,
            iommu_mappings: a.iommu_mappings,
            reserved: 0,
            commands: c.commands,
            delivery_errors: c.delivery_errors,
            spurious_doorbells: c.spurious_doorbells,
            dma_faults: c.dma_faults,
        };
        0
    })
}
