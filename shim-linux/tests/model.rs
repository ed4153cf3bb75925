//! The C ABI's lock protocol, model-checked with shuttle: a reader of a
//! PRE_COPY file, the firmware's SAVE completions, a multi-arc
//! `mlx5vf_set_state` (PRE_COPY → PRE_COPY_P2P → STOP_COPY, which waits for
//! the SAVE in flight), a deferred reset and the file's release race through
//! the library exactly as a kernel driver calls it: the device lock is the
//! platform's `lock`/`trylock`/`unlock`, waiters sleep on the event counter,
//! and every `MLX5VF_RETRY` is retried as the header documents.
//!
//! Linux holds the state mutex across a whole multi-arc walk; the library
//! returns `MLX5VF_RETRY` between arcs when it must wait for a SAVE, and the
//! caller drops the lock to wait, so a deferred reset can run between two
//! arcs. Each schedule checks that the outcome is one the uAPI allows all
//! the same, as if the reset had come before or after the whole walk:
//! - the walk ends in STOP_COPY, or fails only if a function reset (FLR)
//!   came while it ran (firmware then refuses its next command, as it would
//!   under Linux); it hands out a new saving file only if a reset came first
//!   (QEMU reports "data_fd out of sync" for exactly this asynchronous
//!   reset);
//! - a reader sees a prefix of the stream, then end of stream or `ENODEV`,
//!   never another error;
//! - the device ends in STOP (the VMM's last request) or RUNNING (a reset
//!   after it), and after close nothing is leaked: no buffer, no mkey, no
//!   PD, no file.
//!
//! Shuttle explores schedules at every lock, condition and thread operation
//! (random scheduler, `MODEL_ITERATIONS` schedules, default 300; PCT with
//! `MODEL_PCT=1`).

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::collections::{HashMap, VecDeque};
use std::ffi::{CString, c_void};
use std::sync::Arc;
use std::sync::Mutex as StdMutex;

use mlx5vf_linux::abi::*;
use mlx5vf_linux::device::*;
use mlx5vf_linux::file::*;
use mlx5vf_linux::sim::*;
use shuttle::sync::atomic::{AtomicBool, Ordering::SeqCst};
use shuttle::sync::{Condvar, Mutex};
use shuttle::thread;

const ENODEV: i32 = 19;
const ENOMSG: i32 = 42;

/// A SAVE started: its token and SAVE_VHCA_STATE input.
type PendingSave = (u64, Vec<u8>);

/// The platform of one device, as a kernel driver's would be over mlx5_core.
struct Plat {
    sim: *mut mlx5vf_sim,
    /// The device lock: held or not, and who waits for it.
    held: Mutex<bool>,
    lock_cv: Condvar,
    /// Sleepers on the event counter (the driver's wait queue).
    waitq: Mutex<()>,
    wake_cv: Condvar,
    /// SAVEs started, for the firmware thread; `None` tells it to stop.
    saves: Mutex<VecDeque<Option<PendingSave>>>,
    saves_cv: Condvar,
    /// Buffer memory, by IOVA (= the address of its first byte). Never
    /// contended: shuttle switches threads only at its own operations.
    bufs: StdMutex<HashMap<u64, (PageBuf, u32)>>,
}

/// Page-aligned, zeroed memory, as the DMA API hands out.
struct PageBuf {
    ptr: *mut u8,
    len: usize,
}

impl PageBuf {
    fn layout(len: usize) -> Layout {
        Layout::from_size_align(len, MLX5VF_PAGE_SIZE).unwrap()
    }
    fn new(len: usize) -> Self {
        // SAFETY: a non-zero size (at least one page).
        let ptr = unsafe { alloc_zeroed(Self::layout(len)) };
        assert!(!ptr.is_null());
        Self { ptr, len }
    }
    fn len(&self) -> usize {
        self.len
    }
    fn bytes(&self) -> &[u8] {
        // SAFETY: `len` bytes we own.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for PageBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ptr, Self::layout(self.len)) }
    }
}

// SAFETY: the simulator handle is used through its own internal mutex;
// buffer memory is reached only through `bufs`' mutex.
unsafe impl Send for Plat {}
// SAFETY: as above.
unsafe impl Sync for Plat {}

fn plat(ctx: *mut c_void) -> &'static Plat {
    // SAFETY: ctx is the `Plat` the test keeps alive across the model run.
    unsafe { &*ctx.cast::<Plat>() }
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

unsafe extern "C" fn op_start_save(
    ctx: *mut c_void,
    input: *const c_void,
    in_len: usize,
    token: u64,
) -> i32 {
    // SAFETY: `in_len` bytes at `input` (library).
    let bytes = unsafe { std::slice::from_raw_parts(input.cast::<u8>(), in_len) }.to_vec();
    let p = plat(ctx);
    p.saves.lock().unwrap().push_back(Some((token, bytes)));
    p.saves_cv.notify_all();
    0
}

unsafe extern "C" fn op_alloc(ctx: *mut c_void, npages: u32, _dir: u32, id: *mut u64) -> i32 {
    let p = plat(ctx);
    let mem = PageBuf::new(npages.max(1) as usize * MLX5VF_PAGE_SIZE);
    let iova = mem.ptr as u64;
    // SAFETY: the memory lives in `bufs` until free_buffer removes it.
    let rc = unsafe { mlx5vf_sim_mem_add(p.sim, iova, mem.ptr.cast(), mem.len()) };
    assert_eq!(rc, 0);
    p.bufs.lock().unwrap().insert(iova, (mem, 0));
    // SAFETY: `id` is valid for writes (library).
    unsafe { id.write(iova) };
    0
}

unsafe extern "C" fn op_map(
    ctx: *mut c_void,
    pd: u32,
    buffers: *const u64,
    count: usize,
    mkey: *mut u32,
) -> i32 {
    let p = plat(ctx);
    // SAFETY: `count` ids at `buffers` (library).
    let ids = unsafe { std::slice::from_raw_parts(buffers, count) };
    let mut pages = vec![];
    {
        let mut bufs = p.bufs.lock().unwrap();
        for id in ids {
            let (mem, maps) = bufs.get_mut(id).expect("map of an unknown buffer");
            if *maps == 0 {
                // SAFETY: the simulator handle.
                assert_eq!(
                    unsafe { mlx5vf_sim_iommu_map(p.sim, *id, mem.len() as u64) },
                    0
                );
            }
            *maps += 1;
            pages.extend(
                (0..mem.len() / MLX5VF_PAGE_SIZE).map(|i| id + (i * MLX5VF_PAGE_SIZE) as u64),
            );
        }
    }
    let len = mlx5vf_linux::util::mlx5vf_create_mkey_in_len(pages.len() as u32);
    let mut input = vec![0u8; len];
    let mut out = [0u8; MLX5VF_CREATE_MKEY_OUT_LEN];
    // SAFETY: buffers of the lengths passed.
    unsafe {
        let n = mlx5vf_linux::util::mlx5vf_encode_create_mkey(
            input.as_mut_ptr().cast(),
            len,
            pd,
            pages.as_ptr(),
            pages.len() as u32,
        );
        assert_eq!(n, len as i64);
        let rc = mlx5vf_sim_exec(
            p.sim,
            input.as_ptr().cast(),
            len,
            out.as_mut_ptr().cast(),
            out.len(),
        );
        assert_eq!(rc, 0);
        mlx5vf_linux::util::mlx5vf_decode_create_mkey(out.as_ptr().cast(), out.len(), mkey)
    }
}

fn unmap_iommu(p: &Plat, ids: &[u64]) {
    let mut bufs = p.bufs.lock().unwrap();
    for id in ids {
        let (mem, maps) = bufs.get_mut(id).expect("unmap of an unknown buffer");
        *maps -= 1;
        if *maps == 0 {
            // SAFETY: the simulator handle.
            assert_eq!(
                unsafe { mlx5vf_sim_iommu_unmap(p.sim, *id, mem.len() as u64) },
                0
            );
        }
    }
}

unsafe extern "C" fn op_unmap(
    ctx: *mut c_void,
    mkey: u32,
    buffers: *const u64,
    count: usize,
) -> i32 {
    let p = plat(ctx);
    let mut input = [0u8; MLX5VF_DESTROY_MKEY_IN_LEN];
    let mut out = [0u8; MLX5VF_DESTROY_MKEY_OUT_LEN];
    // SAFETY: buffers of the lengths passed; `count` ids at `buffers`.
    unsafe {
        mlx5vf_linux::util::mlx5vf_encode_destroy_mkey(
            input.as_mut_ptr().cast(),
            input.len(),
            mkey,
        );
        let rc = mlx5vf_sim_exec(
            p.sim,
            input.as_ptr().cast(),
            input.len(),
            out.as_mut_ptr().cast(),
            out.len(),
        );
        unmap_iommu(p, std::slice::from_raw_parts(buffers, count));
        if rc != 0 {
            return rc;
        }
        mlx5vf_linux::util::mlx5vf_decode_destroy_mkey(out.as_ptr().cast(), out.len())
    }
}

unsafe extern "C" fn op_free(ctx: *mut c_void, id: u64) {
    let p = plat(ctx);
    let (_, maps) = p.bufs.lock().unwrap().remove(&id).expect("double free");
    assert_eq!(maps, 0, "freeing a mapped buffer");
    // SAFETY: the simulator handle.
    assert_eq!(unsafe { mlx5vf_sim_mem_remove(p.sim, id) }, 0);
}

unsafe extern "C" fn op_crc(ctx: *mut c_void, id: u64, offset: u64, len: u64, crc: u32) -> u32 {
    let bufs = plat(ctx).bufs.lock().unwrap();
    let bytes = &bufs[&id].0.bytes()[offset as usize..(offset + len) as usize];
    // SAFETY: `bytes` is a live slice.
    unsafe { mlx5vf_linux::util::mlx5vf_crc32c(crc, bytes.as_ptr().cast(), bytes.len()) }
}

unsafe extern "C" fn op_buffer_to_user(
    ctx: *mut c_void,
    dst: *mut c_void,
    id: u64,
    offset: u64,
    len: usize,
) -> i64 {
    let bufs = plat(ctx).bufs.lock().unwrap();
    let src = &bufs.get(&id).expect("copy from a freed buffer").0.bytes()[offset as usize..][..len];
    // SAFETY: `dst` is the reader's buffer, `len` bytes (library).
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.cast(), len) };
    len as i64
}

unsafe extern "C" fn op_buffer_from_user(
    ctx: *mut c_void,
    id: u64,
    offset: u64,
    src: *const c_void,
    len: usize,
) -> i64 {
    let mut bufs = plat(ctx).bufs.lock().unwrap();
    let dst = &mut bufs
        .get_mut(&id)
        .expect("copy into a freed buffer")
        .0
        .bytes_mut()[offset as usize..][..len];
    // SAFETY: `src` is the writer's buffer, `len` bytes (library).
    unsafe { std::ptr::copy_nonoverlapping(src.cast(), dst.as_mut_ptr(), len) };
    len as i64
}

unsafe extern "C" fn op_copy(
    _ctx: *mut c_void,
    dst: *mut c_void,
    src: *const c_void,
    len: usize,
) -> i64 {
    // SAFETY: both are `len` bytes (library).
    unsafe { std::ptr::copy_nonoverlapping(src.cast::<u8>(), dst.cast::<u8>(), len) };
    len as i64
}

unsafe extern "C" fn op_lock(ctx: *mut c_void) {
    let p = plat(ctx);
    let mut held = p.held.lock().unwrap();
    while *held {
        held = p.lock_cv.wait(held).unwrap();
    }
    *held = true;
}

unsafe extern "C" fn op_trylock(ctx: *mut c_void) -> bool {
    let mut held = plat(ctx).held.lock().unwrap();
    !std::mem::replace(&mut *held, true)
}

unsafe extern "C" fn op_unlock(ctx: *mut c_void) {
    let p = plat(ctx);
    let mut held = p.held.lock().unwrap();
    assert!(*held, "unlock of a free lock");
    *held = false;
    p.lock_cv.notify_one();
}

unsafe extern "C" fn op_wake(ctx: *mut c_void) {
    let p = plat(ctx);
    assert!(*p.held.lock().unwrap(), "wake without the device lock");
    let _q = p.waitq.lock().unwrap();
    p.wake_cv.notify_all();
}

const OPS: mlx5vf_platform_ops = mlx5vf_platform_ops {
    exec: Some(op_exec),
    start_save: Some(op_start_save),
    alloc_buffer: Some(op_alloc),
    map_buffers: Some(op_map),
    unmap_buffers: Some(op_unmap),
    free_buffer: Some(op_free),
    crc32c: Some(op_crc),
    buffer_to_user: Some(op_buffer_to_user),
    buffer_from_user: Some(op_buffer_from_user),
    copy_to_user: Some(op_copy),
    copy_from_user: Some(op_copy),
    lock: Some(op_lock),
    trylock: Some(op_trylock),
    unlock: Some(op_unlock),
    wake: Some(op_wake),
    // LOADs through exec: the model checks the SAVE side's lock protocol.
    start_load: None,
    now_ns: None,
    // No dirty tracking: the model checks the migration lock protocol.
    report_open: None,
    report_next: None,
    report_read: None,
    report_repost: None,
    report_close: None,
};

/// One device and its platform, shared by the model's threads.
struct Rig {
    plat: Box<Plat>,
    /// From `Box::into_raw`: the library mutates it behind shared handles.
    dev: *mut mlx5vf_device,
}

// SAFETY: the library's entry points are made for concurrent callers under
// the documented lock protocol, which is what the model checks.
unsafe impl Send for Rig {}
// SAFETY: as above.
unsafe impl Sync for Rig {}

impl Rig {
    fn new() -> Self {
        let spec = CString::new("sim:state=96K,object=8K-16K,seed=3").unwrap();
        // SAFETY: a NUL-terminated spec.
        let sim = unsafe { mlx5vf_sim_new(spec.as_ptr()) };
        assert!(!sim.is_null());
        let plat = Box::new(Plat {
            sim,
            held: Mutex::new(false),
            lock_cv: Condvar::new(),
            waitq: Mutex::new(()),
            wake_cv: Condvar::new(),
            saves: Mutex::new(VecDeque::new()),
            saves_cv: Condvar::new(),
            bufs: StdMutex::new(HashMap::new()),
        });
        let dev = Box::into_raw(Box::new(mlx5vf_device {
            _opaque: [0; MLX5VF_DEVICE_WORDS],
        }));
        // SAFETY: a plain C struct; mlx5vf_config_default fills it.
        let mut cfg: mlx5vf_config = unsafe { std::mem::zeroed() };
        let mut scratch = vec![0u8; MLX5VF_PROBE_SCRATCH_LEN];
        let ctx = std::ptr::from_ref::<Plat>(&*plat).cast_mut().cast();
        // SAFETY: live storage for each argument; the platform outlives the
        // device (fini runs in `finish`).
        unsafe {
            mlx5vf_config_default(&mut cfg);
            // Small chunks: several SAVEs per stream, so more interleavings.
            cfg.chunk_size = 4 * MLX5VF_PAGE_SIZE as u64;
            assert_eq!(
                mlx5vf_device_init_abi(dev, &OPS, ctx, &cfg, &library_abi()),
                0
            );
            mlx5vf_lock(dev);
            let rc = mlx5vf_device_probe(dev, 0, scratch.as_mut_ptr().cast(), scratch.len());
            mlx5vf_unlock(dev);
            assert_eq!(rc, 0);
        }
        Self { plat, dev }
    }

    fn dev(&self) -> *mut mlx5vf_device {
        self.dev
    }

    /// Sleeps until the event counter moves past `seq`.
    fn wait_event(&self, seq: u32) {
        let mut q = self.plat.waitq.lock().unwrap();
        // SAFETY: live device.
        while unsafe { mlx5vf_events(self.dev()) } == seq {
            q = self.plat.wake_cv.wait(q).unwrap();
        }
    }

    /// `mlx5vf_set_state` with the documented retry loop.
    fn set_state(&self, state: u32, file: &mut mlx5vf_file) -> i32 {
        let dev = self.dev();
        // SAFETY: live device and file storage; the lock protocol as the
        // header documents it.
        unsafe {
            mlx5vf_lock(dev);
            loop {
                let seq = mlx5vf_events(dev);
                let rc = mlx5vf_set_state(dev, state, file);
                if rc != MLX5VF_RETRY {
                    mlx5vf_unlock(dev);
                    return rc;
                }
                mlx5vf_unlock(dev);
                self.wait_event(seq);
                mlx5vf_lock(dev);
            }
        }
    }

    fn state(&self) -> u32 {
        let mut s = 0;
        // SAFETY: live device; `get_state` wants the lock.
        unsafe {
            mlx5vf_lock(self.dev());
            assert_eq!(mlx5vf_get_state(self.dev(), &mut s), 0);
            mlx5vf_unlock(self.dev());
        }
        s
    }

    /// Reads `file` until end of stream or `ENODEV`, sleeping on
    /// `MLX5VF_RETRY` and on PRE_COPY's `ENOMSG` (an arc or a reset moves
    /// the counter). Returns the bytes and how it ended.
    fn drain(&self, file: &mut mlx5vf_file) -> (usize, i32) {
        let mut total = 0;
        let mut buf = vec![0u8; 8192];
        loop {
            let mut done = 0usize;
            // SAFETY: live device and file; `buf` is ours.
            let (seq, rc) = unsafe {
                let seq = mlx5vf_events(self.dev());
                let rc = mlx5vf_file_read(file, buf.as_mut_ptr().cast(), buf.len(), 0, &mut done);
                (seq, rc)
            };
            match rc {
                0 if done == 0 => return (total, 0),
                0 => total += done,
                MLX5VF_RETRY => self.wait_event(seq),
                e if e == -ENOMSG => self.wait_event(seq),
                e if e == -ENODEV => return (total, e),
                e => panic!("read failed with {e} after {total} bytes"),
            }
        }
    }

    /// The firmware: runs each SAVE and delivers its completion under the
    /// device lock, as a driver's work item does.
    fn firmware(&self) {
        loop {
            let next = {
                let mut q = self.plat.saves.lock().unwrap();
                loop {
                    if let Some(item) = q.pop_front() {
                        break item;
                    }
                    q = self.plat.saves_cv.wait(q).unwrap();
                }
            };
            let Some((token, input)) = next else { return };
            let mut out = [0u8; MLX5VF_SAVE_OUT_LEN];
            // SAFETY: buffers of the lengths passed; live device.
            unsafe {
                let status = mlx5vf_sim_exec(
                    self.plat.sim,
                    input.as_ptr().cast(),
                    input.len(),
                    out.as_mut_ptr().cast(),
                    out.len(),
                );
                mlx5vf_lock(self.dev());
                let rc =
                    mlx5vf_save_complete(self.dev(), token, status, out.as_ptr().cast(), out.len());
                mlx5vf_unlock(self.dev());
                assert_eq!(rc, 0, "a completion for the SAVE in flight");
            }
        }
    }

    fn stop_firmware(&self) {
        self.plat.saves.lock().unwrap().push_back(None);
        self.plat.saves_cv.notify_all();
    }

    /// Closes the device, runs what is left of the firmware's work, and
    /// checks that nothing leaked.
    fn finish(self) {
        let dev = self.dev();
        // SAFETY: live device; the lock protocol.
        unsafe {
            mlx5vf_lock(dev);
            mlx5vf_close_device(dev);
            mlx5vf_unlock(dev);
        }
        // SAVEs still queued complete into closed files: their buffers go.
        self.stop_firmware();
        self.firmware();
        assert!(self.plat.bufs.lock().unwrap().is_empty(), "buffers leaked");
        // SAFETY: live simulator; no file is live any more.
        unsafe {
            assert!(mlx5vf_sim_idle(self.plat.sim), "firmware resources leaked");
            assert_eq!(mlx5vf_device_fini(dev), 0);
            drop(Box::from_raw(dev));
            mlx5vf_sim_free(self.plat.sim);
        }
    }
}

fn no_file() -> mlx5vf_file {
    mlx5vf_file {
        _opaque: [0; MLX5VF_FILE_WORDS],
    }
}

/// One schedule: see the module documentation.
fn reader_completion_walk_reset_release() {
    let rig = Arc::new(Rig::new());
    let mut precopy = no_file();
    assert_eq!(
        rig.set_state(MLX5VF_STATE_PRE_COPY, &mut precopy),
        MLX5VF_NEW_SAVING_FILE
    );
    let firmware = {
        let rig = Arc::clone(&rig);
        thread::spawn(move || rig.firmware())
    };
    let reader = {
        let rig = Arc::clone(&rig);
        thread::spawn(move || {
            let mut f = precopy;
            let ended = rig.drain(&mut f);
            // SAFETY: our file, released once.
            unsafe { mlx5vf_file_release(&mut f) };
            ended
        })
    };
    let reset_called = Arc::new(AtomicBool::new(false));
    let reset = {
        let rig = Arc::clone(&rig);
        let called = Arc::clone(&reset_called);
        thread::spawn(move || {
            called.store(true, SeqCst);
            // SAFETY: live simulator and device; reset_done takes no lock of
            // ours. The function-level reset first, then the driver's
            // `reset_done` handler, as the PCI core calls it.
            unsafe {
                mlx5vf_sim_reset_vf(rig.plat.sim, 0);
                mlx5vf_reset_done(rig.dev());
            }
        })
    };
    // The VMM: PRE_COPY → PRE_COPY_P2P → STOP_COPY, then STOP.
    let mut fresh = no_file();
    let walked = rig.set_state(MLX5VF_STATE_STOP_COPY, &mut fresh);
    let reset_before_stop = reset_called.load(SeqCst);
    // An FLR under a walk makes firmware refuse the walk's next command, as
    // on Linux; the deferred reset then returns the device to RUNNING.
    assert!(
        walked == 0 || walked == MLX5VF_NEW_SAVING_FILE || (walked < 0 && reset_before_stop),
        "the walk to STOP_COPY failed with {walked} and no reset"
    );
    if walked == MLX5VF_NEW_SAVING_FILE {
        // Only a reset between the arcs (or before the walk) puts the
        // device back in RUNNING, from where STOP_COPY opens a file.
        assert!(reset_before_stop, "a new saving file without a reset");
        let (bytes, end) = rig.drain(&mut fresh);
        assert!(end == 0 || end == -ENODEV);
        assert!(end != 0 || bytes > 0, "an empty stream");
        // SAFETY: our file, released once.
        unsafe { mlx5vf_file_release(&mut fresh) };
    }
    let stopped = rig.set_state(MLX5VF_STATE_STOP, &mut fresh);
    assert!(
        stopped == 0 || (stopped < 0 && reset_called.load(SeqCst)),
        "STOP failed with {stopped} and no reset"
    );
    let (read, end) = reader.join().unwrap();
    assert!(end == 0 || end == -ENODEV, "reader ended with {end}");
    assert!(end != 0 || read > 0, "end of stream with no bytes");
    reset.join().unwrap();
    let state = rig.state();
    assert!(
        state == MLX5VF_STATE_STOP || state == MLX5VF_STATE_RUNNING,
        "ended in state {state}"
    );
    rig.stop_firmware();
    firmware.join().unwrap();
    let rig = Arc::into_inner(rig).expect("every thread let go of the rig");
    rig.finish();
}

#[test]
fn every_schedule_ends_in_a_state_the_uapi_allows() {
    let iterations = std::env::var("MODEL_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let mut config = shuttle::Config::new();
    // Debug builds of the driver loop have large frames.
    config.stack_size = 8 << 20;
    if std::env::var_os("MODEL_PCT").is_some() {
        let scheduler = shuttle::scheduler::PctScheduler::new(3, iterations);
        shuttle::Runner::new(scheduler, config).run(reader_completion_walk_reset_release);
    } else {
        let scheduler = shuttle::scheduler::RandomScheduler::new(iterations);
        shuttle::Runner::new(scheduler, config).run(reader_completion_walk_reset_release);
    }
}
