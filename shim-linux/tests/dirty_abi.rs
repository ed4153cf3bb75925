//! The `vfio_log_ops` C functions (`mlx5vf_log_start`, `_read_and_clear`,
//! `_stop`) through the C ABI, over a platform written the way a kernel
//! driver's would be: its `report_*` callbacks build the reporting channel
//! (a receive buffer under a real MTT mkey, ALLOC_PD and CREATE_MKEY through
//! the simulated firmware) and read messages out of it; `set_dirty` plays
//! `iova_bitmap_set`. The simulated guest's ground truth says whether a page
//! was missed.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::cell::RefCell;
use std::ffi::{CString, c_void};

use mlx5vf_linux::abi::*;
use mlx5vf_linux::device::*;
use mlx5vf_linux::dirty::*;
use mlx5vf_linux::sim::*;

const PAGE: u64 = MLX5VF_PAGE_SIZE as u64;
const MIB: u64 = 1 << 20;

/// The reporting channel's resources.
struct Channel {
    mem: *mut u8,
    len: usize,
    pd: u32,
    mkey: u32,
    msg_size: u32,
    slots: u32,
}

struct Plat {
    sim: *mut mlx5vf_sim,
    channel: RefCell<Option<Channel>>,
}

fn plat(ctx: *mut c_void) -> &'static Plat {
    // SAFETY: ctx is the test's `Plat`, alive for the device's life.
    unsafe { &*ctx.cast::<Plat>() }
}

fn exec(sim: *mut mlx5vf_sim, input: &[u8], out: &mut [u8]) {
    // SAFETY: buffers of the lengths passed.
    let rc = unsafe {
        mlx5vf_sim_exec(
            sim,
            input.as_ptr().cast(),
            input.len(),
            out.as_mut_ptr().cast(),
            out.len(),
        )
    };
    assert_eq!(rc, 0);
    assert_eq!(out[0], 0, "firmware refused {:02x?}", &input[..2]);
}

unsafe extern "C" fn op_exec(
    ctx: *mut c_void,
    input: *const c_void,
    in_len: usize,
    out: *mut c_void,
    out_len: usize,
) -> i32 {
    // SAFETY: forwarded buffers from the library.
    unsafe { mlx5vf_sim_exec(plat(ctx).sim, input, in_len, out, out_len) }
}
unsafe extern "C" fn op_start_save(_: *mut c_void, _: *const c_void, _: usize, _: u64) -> i32 {
    -MLX5VF_EIO
}
unsafe extern "C" fn op_alloc(_: *mut c_void, _: u32, _: u32, _: *mut u64) -> i32 {
    -MLX5VF_ENOMEM
}
unsafe extern "C" fn op_map(_: *mut c_void, _: u32, _: *const u64, _: usize, _: *mut u32) -> i32 {
    -MLX5VF_EIO
}
unsafe extern "C" fn op_unmap(_: *mut c_void, _: u32, _: *const u64, _: usize) -> i32 {
    -MLX5VF_EIO
}
unsafe extern "C" fn op_free(_: *mut c_void, _: u64) {}
unsafe extern "C" fn op_crc(_: *mut c_void, _: u64, _: u64, _: u64, crc: u32) -> u32 {
    crc
}
unsafe extern "C" fn op_buf_user(_: *mut c_void, _: *mut c_void, _: u64, _: u64, _: usize) -> i64 {
    -i64::from(MLX5VF_EFAULT)
}
unsafe extern "C" fn op_user_buf(
    _: *mut c_void,
    _: u64,
    _: u64,
    _: *const c_void,
    _: usize,
) -> i64 {
    -i64::from(MLX5VF_EFAULT)
}
unsafe extern "C" fn op_copy(_: *mut c_void, _: *mut c_void, _: *const c_void, _: usize) -> i64 {
    -i64::from(MLX5VF_EFAULT)
}
unsafe extern "C" fn op_nop(_: *mut c_void) {}
unsafe extern "C" fn op_trylock(_: *mut c_void) -> bool {
    true
}

fn layout(len: usize) -> Layout {
    Layout::from_size_align(len, MLX5VF_PAGE_SIZE).unwrap()
}

unsafe extern "C" fn op_report_open(
    ctx: *mut c_void,
    msg_size: u32,
    slots: u32,
    qpn: *mut u32,
) -> i32 {
    let p = plat(ctx);
    assert!(p.channel.borrow().is_none(), "a second channel");
    let len = msg_size as usize * slots as usize;
    // SAFETY: a non-zero, page-aligned size.
    let mem = unsafe { alloc_zeroed(layout(len)) };
    let iova = mem as u64;
    // ALLOC_PD.
    let mut input = [0u8; 16];
    input[..2].copy_from_slice(&0x800u16.to_be_bytes());
    let mut out = [0u8; 16];
    exec(p.sim, &input, &mut out);
    let pd = u32::from_be_bytes(out[8..12].try_into().unwrap()) & 0xff_ffff;
    let pages: Vec<u64> = (0..len as u64 / PAGE).map(|i| iova + i * PAGE).collect();
    let in_len = mlx5vf_linux::util::mlx5vf_create_mkey_in_len(pages.len() as u32);
    let mut mk = vec![0u8; in_len];
    let mut mkey = 0u32;
    // SAFETY: memory we own for the channel's life; buffers of the lengths
    // passed.
    unsafe {
        assert_eq!(mlx5vf_sim_mem_add(p.sim, iova, mem.cast(), len), 0);
        assert_eq!(mlx5vf_sim_iommu_map(p.sim, iova, len as u64), 0);
        let n = mlx5vf_linux::util::mlx5vf_encode_create_mkey(
            mk.as_mut_ptr().cast(),
            in_len,
            pd,
            pages.as_ptr(),
            pages.len() as u32,
        );
        assert_eq!(n, in_len as i64);
        exec(p.sim, &mk, &mut out);
        assert_eq!(
            mlx5vf_linux::util::mlx5vf_decode_create_mkey(out.as_ptr().cast(), 16, &mut mkey),
            0
        );
        assert_eq!(
            mlx5vf_sim_tracker_open(p.sim, mkey, msg_size, slots, qpn),
            0
        );
    }
    *p.channel.borrow_mut() = Some(Channel {
        mem,
        len,
        pd,
        mkey,
        msg_size,
        slots,
    });
    0
}

unsafe extern "C" fn op_report_next(ctx: *mut c_void, cqe: *mut u8, _timeout_ns: u64) -> i32 {
    // SAFETY: `cqe` holds 64 bytes (library).
    unsafe { mlx5vf_sim_tracker_poll(plat(ctx).sim, cqe) }
}

unsafe extern "C" fn op_report_read(
    ctx: *mut c_void,
    slot: u32,
    offset: u32,
    dst: *mut u8,
    len: usize,
) -> i32 {
    let ch = plat(ctx).channel.borrow();
    let c = ch.as_ref().expect("read without a channel");
    assert!(
        slot < c.slots && offset as usize + len <= c.msg_size as usize,
        "read outside a slot"
    );
    let at = slot as usize * c.msg_size as usize + offset as usize;
    // SAFETY: inside the channel's memory; `dst` holds `len` bytes.
    unsafe { std::ptr::copy_nonoverlapping(c.mem.add(at), dst, len) };
    0
}

unsafe extern "C" fn op_report_repost(ctx: *mut c_void, _slot: u32) -> i32 {
    // SAFETY: the simulator handle.
    unsafe { mlx5vf_sim_tracker_repost(plat(ctx).sim) };
    0
}

unsafe extern "C" fn op_report_close(ctx: *mut c_void) {
    let p = plat(ctx);
    let c = p
        .channel
        .borrow_mut()
        .take()
        .expect("close without a channel");
    let iova = c.mem as u64;
    let mut input = [0u8; 16];
    let mut out = [0u8; 16];
    // SAFETY: the simulator handle; memory we allocated with this layout.
    unsafe {
        mlx5vf_sim_tracker_close(p.sim);
        mlx5vf_linux::util::mlx5vf_encode_destroy_mkey(input.as_mut_ptr().cast(), 16, c.mkey);
        exec(p.sim, &input, &mut out);
        assert_eq!(mlx5vf_sim_iommu_unmap(p.sim, iova, c.len as u64), 0);
        assert_eq!(mlx5vf_sim_mem_remove(p.sim, iova), 0);
        dealloc(c.mem, layout(c.len));
    }
    input = [0u8; 16];
    input[..2].copy_from_slice(&0x801u16.to_be_bytes());
    input[9..12].copy_from_slice(&c.pd.to_be_bytes()[1..]);
    exec(p.sim, &input, &mut out);
}

fn ops(with_report: bool) -> mlx5vf_platform_ops {
    mlx5vf_platform_ops {
        exec: Some(op_exec),
        start_save: Some(op_start_save),
        alloc_buffer: Some(op_alloc),
        map_buffers: Some(op_map),
        unmap_buffers: Some(op_unmap),
        free_buffer: Some(op_free),
        crc32c: Some(op_crc),
        buffer_to_user: Some(op_buf_user),
        buffer_from_user: Some(op_user_buf),
        copy_to_user: Some(op_copy),
        copy_from_user: Some(op_copy),
        lock: Some(op_nop),
        trylock: Some(op_trylock),
        unlock: Some(op_nop),
        wake: Some(op_nop),
        start_load: None,
        now_ns: None,
        report_open: with_report.then_some(op_report_open as _),
        report_next: with_report.then_some(op_report_next as _),
        report_read: with_report.then_some(op_report_read as _),
        report_repost: with_report.then_some(op_report_repost as _),
        report_close: with_report.then_some(op_report_close as _),
    }
}

struct Rig {
    plat: Box<Plat>,
    dev: Box<mlx5vf_device>,
    dirty: Box<mlx5vf_dirty>,
}

impl Rig {
    fn new(with_report: bool) -> Self {
        let spec = CString::new("sim:state=1M,seed=4").unwrap();
        // SAFETY: a NUL-terminated spec.
        let sim = unsafe { mlx5vf_sim_new(spec.as_ptr()) };
        assert!(!sim.is_null());
        let plat = Box::new(Plat {
            sim,
            channel: RefCell::new(None),
        });
        let mut dev = Box::new(mlx5vf_device {
            _opaque: [0; MLX5VF_DEVICE_WORDS],
        });
        let mut dirty = Box::new(mlx5vf_dirty {
            _opaque: [0; MLX5VF_DIRTY_WORDS],
        });
        let ops = Box::leak(Box::new(ops(with_report)));
        let ctx = std::ptr::from_ref::<Plat>(&plat).cast_mut().cast();
        let mut scratch = vec![0u8; MLX5VF_PROBE_SCRATCH_LEN];
        // SAFETY: live storage for every argument; the platform outlives
        // the device (dropped together, device first).
        unsafe {
            assert_eq!(
                mlx5vf_device_init_abi(&mut *dev, ops, ctx, std::ptr::null(), &library_abi()),
                0
            );
            assert_eq!(
                mlx5vf_device_probe(&mut *dev, 0, scratch.as_mut_ptr().cast(), scratch.len()),
                0
            );
            assert_eq!(mlx5vf_dirty_init(&mut *dirty), 0);
        }
        Self { plat, dev, dirty }
    }

    fn start(&mut self, ranges: &[(u64, u64)], page_size: u64) -> (i32, u64) {
        let rs: Vec<mlx5vf_iova_range> = ranges
            .iter()
            .map(|&(iova, length)| mlx5vf_iova_range { iova, length })
            .collect();
        let mut page = page_size;
        let mut scratch = vec![0u8; MLX5VF_DIRTY_SCRATCH_LEN];
        // SAFETY: live storage for every argument.
        let rc = unsafe {
            mlx5vf_log_start(
                &mut *self.dev,
                &mut *self.dirty,
                rs.as_ptr(),
                rs.len() as u32,
                &mut page,
                scratch.as_mut_ptr().cast(),
                scratch.len(),
            )
        };
        (rc, page)
    }

    /// Reads one range into a 4 KiB bitmap; returns the errno and the
    /// pages missed against the ground truth.
    fn read(&mut self, iova: u64, len: u64) -> (i32, u64) {
        struct Bitmap {
            iova: u64,
            bits: Vec<u64>,
        }
        unsafe extern "C" fn set_dirty(ctx: *mut c_void, iova: u64, length: u64) {
            // SAFETY: the `Bitmap` passed below, alive for the call.
            let b = unsafe { &mut *ctx.cast::<Bitmap>() };
            for page in (iova - b.iova) / PAGE..(iova + length - b.iova).div_ceil(PAGE) {
                b.bits[(page / 64) as usize] |= 1 << (page % 64);
            }
        }
        let mut b = Bitmap {
            iova,
            bits: vec![0; (len / PAGE).div_ceil(64) as usize],
        };
        // SAFETY: live storage; `b` outlives the call.
        let rc = unsafe {
            mlx5vf_log_read_and_clear(
                &mut *self.dev,
                &mut *self.dirty,
                iova,
                len,
                Some(set_dirty),
                std::ptr::from_mut(&mut b).cast(),
            )
        };
        // SAFETY: the simulator handle; the bitmap's words.
        let missed = unsafe {
            mlx5vf_sim_missed_and_clear(
                self.plat.sim,
                iova,
                len,
                PAGE,
                b.bits.as_ptr(),
                b.bits.len(),
            )
        };
        (rc, missed)
    }

    fn stop(&mut self) -> i32 {
        // SAFETY: live storage.
        unsafe { mlx5vf_log_stop(&mut *self.dev, &mut *self.dirty) }
    }

    fn write(&self, iova: u64, len: u64) {
        // SAFETY: the simulator handle.
        unsafe { mlx5vf_sim_guest_write(self.plat.sim, iova, len) };
    }

    fn assert_clean(&self) {
        assert!(self.plat.channel.borrow().is_none(), "channel left open");
        // SAFETY: the simulator handle.
        unsafe {
            assert_eq!(
                mlx5vf_sim_tracker_state(self.plat.sim),
                -1,
                "tracker object left"
            );
            assert!(mlx5vf_sim_idle(self.plat.sim), "PD, mkey or mapping left");
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        // SAFETY: live storage; the simulator is freed last.
        unsafe {
            mlx5vf_log_stop(&mut *self.dev, &mut *self.dirty);
            assert_eq!(mlx5vf_device_fini(&mut *self.dev), 0);
            mlx5vf_sim_free(self.plat.sim);
        }
    }
}

#[test]
fn log_start_read_stop_through_the_c_abi_misses_nothing() {
    let mut r = Rig::new(true);
    // Six ranges for a device that holds four; 1 KiB asked, 4 KiB tracked.
    let ranges: Vec<(u64, u64)> = (0..6).map(|i| (i * 8 * MIB, MIB)).collect();
    let (rc, page) = r.start(&ranges, 1024);
    assert_eq!((rc, page), (0, PAGE));
    for round in 0..3 {
        for (i, &(iova, _)) in ranges.iter().enumerate() {
            r.write(iova + (i as u64 + round) * PAGE, 3 * PAGE);
        }
        r.write(5 * MIB, 2 * PAGE); // in a merged gap: tracked, not asked for
        for &(iova, len) in &ranges {
            assert_eq!(r.read(iova, len), (0, 0), "round {round}, range {iova:#x}");
        }
    }
    assert_eq!(r.stop(), 0);
    r.assert_clean();
}

#[test]
fn a_tracker_in_error_ends_logging_with_eio_and_frees_everything() {
    // ERROR with a report, ERROR with only an event, silence, an event storm.
    for kind in [1u32, 2, 3, 6] {
        let mut r = Rig::new(true);
        assert_eq!(r.start(&[(0, 8 * MIB)], PAGE).0, 0);
        r.write(0, 1000 * PAGE);
        // SAFETY: the simulator handle.
        unsafe { mlx5vf_sim_tracker_fault(r.plat.sim, kind, 1) };
        let want = if kind == 3 {
            -MLX5VF_ETIMEDOUT
        } else {
            -MLX5VF_EIO
        };
        assert_eq!(r.read(0, 8 * MIB).0, want, "fault {kind}");
        r.assert_clean();
        assert_eq!(r.read(0, 8 * MIB).0, -MLX5VF_EIO, "later reads fail");
        assert_eq!(r.stop(), 0);
        // SAFETY: the simulator handle.
        unsafe { mlx5vf_sim_tracker_fault(r.plat.sim, 0, 0) };
        assert_eq!(r.start(&[(0, 8 * MIB)], PAGE).0, 0, "logging starts again");
        assert_eq!(r.stop(), 0);
        r.assert_clean();
    }
}

#[test]
fn disabling_the_vf_ends_logging_through_the_c_abi() {
    let mut r = Rig::new(true);
    assert_eq!(r.start(&[(0, MIB)], PAGE).0, 0);
    r.write(0, 8 * PAGE);
    // SAFETY: live storage; the platform's lock is not modelled here.
    unsafe {
        assert_eq!(mlx5vf_log_detach(&mut *r.dev, &mut *r.dirty), 0);
        mlx5vf_vf_detach(&mut *r.dev);
    }
    r.assert_clean();
    assert_eq!(r.read(0, MIB).0, -MLX5VF_ENOTCONN);
    // SAFETY: live storage.
    unsafe { mlx5vf_vf_attach(&mut *r.dev) };
    assert_eq!(r.read(0, MIB).0, -MLX5VF_EIO, "until stopped");
    assert_eq!(r.stop(), 0);
    assert_eq!(r.start(&[(0, MIB)], PAGE).0, 0, "logging starts again");
    assert_eq!(r.stop(), 0);
    r.assert_clean();
    // SAFETY: a null tracker is what is being tested.
    unsafe {
        assert_eq!(
            mlx5vf_log_detach(&mut *r.dev, std::ptr::null_mut()),
            -MLX5VF_EINVAL
        );
    }
}

#[test]
fn misuse_and_missing_callbacks_are_refused() {
    let mut r = Rig::new(false);
    assert_eq!(r.start(&[(0, MIB)], PAGE).0, -MLX5VF_EOPNOTSUPP);
    r.assert_clean();
    let mut r = Rig::new(true);
    assert_eq!(r.read(0, MIB).0, -MLX5VF_EINVAL, "read before start");
    assert_eq!(
        r.start(&[(MIB, PAGE), (0, PAGE)], PAGE).0,
        -MLX5VF_EINVAL,
        "unsorted"
    );
    assert_eq!(r.start(&[(0, MIB)], PAGE).0, 0);
    assert_eq!(r.start(&[(0, MIB)], PAGE).0, -MLX5VF_EINVAL, "second start");
    assert_eq!(
        r.read(64 * MIB, MIB).0,
        -MLX5VF_EINVAL,
        "outside the ranges"
    );
    assert_eq!(r.stop(), 0);
    assert_eq!(r.stop(), 0, "stopping twice");
    // NULLs.
    // SAFETY: null pointers are what is being tested.
    unsafe {
        assert_eq!(mlx5vf_dirty_init(std::ptr::null_mut()), -MLX5VF_EINVAL);
        assert_eq!(
            mlx5vf_log_stop(&mut *r.dev, std::ptr::null_mut()),
            -MLX5VF_EINVAL
        );
        assert_eq!(
            mlx5vf_log_read_and_clear(
                &mut *r.dev,
                &mut *r.dirty,
                0,
                PAGE,
                None,
                std::ptr::null_mut()
            ),
            -MLX5VF_EINVAL
        );
    }
    // A table with some report callbacks but not all is refused at init.
    let mut partial = ops(true);
    partial.report_close = None;
    let mut dev = Box::new(mlx5vf_device {
        _opaque: [0; MLX5VF_DEVICE_WORDS],
    });
    // SAFETY: live storage.
    let rc = unsafe {
        mlx5vf_device_init_abi(
            &mut *dev,
            &partial,
            std::ptr::null_mut(),
            std::ptr::null(),
            &library_abi(),
        )
    };
    assert_eq!(rc, -MLX5VF_EINVAL);
}
