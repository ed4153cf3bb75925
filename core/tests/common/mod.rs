//! A test `Hal` over the simulated firmware, owning real buffer memory, and
//! a harness that migrates one device's state to another.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::VecDeque;

use mlx5vf_core::device::file_ops::{
    self, Blocking, CopyDest, CopySource, IoError, IoOutcome, ReadPort, WaitFor, WritePort,
};
use mlx5vf_core::device::{Config, Device, DeviceError, FileId, PROBE_SCRATCH_LEN};
use mlx5vf_core::errno::Errno;
use mlx5vf_core::hal::{BufferId, DmaDirection, Hal, HalErrorKind, SaveToken};
use mlx5vf_core::ifc::Command;
use mlx5vf_core::ifc::mkey::{
    DestroyMkey, Mkey, create_mkey_in_len, decode_create_mkey_out, encode_create_mkey_mtt,
};
use mlx5vf_core::ifc::pd::Pd;
use mlx5vf_core::stream::crc32c;
use mlx5vf_core::vfio::MigState;
use mlx5vf_sim::firmware::{Accounting, Firmware, FirmwareConfig};
use mlx5vf_sim::host::{HostBuffer, HostMemory};
use mlx5vf_sim::spec::SimSpec;

pub const PAGE: u64 = 4096;

/// The platform of one device: a firmware, buffers, and SAVEs that complete
/// only when the test says so.
pub struct TestHal {
    pub fw: Box<Firmware>,
    pub mem: HostMemory,
    next_id: u64,
    next_iova: u64,
    /// SAVEs started and not yet executed.
    pub pending: VecDeque<(SaveToken, Vec<u8>)>,
    pub saves_started: u32,
    /// Fail one allocation after this many more succeed.
    pub fail_alloc_after: Option<u32>,
    pub live_buffers: u32,
    /// `(actual_image_size, next_required_umem_size)` of every SAVE run.
    pub save_log: Vec<(u32, u32)>,
}

impl TestHal {
    pub fn new(spec: &str) -> Self {
        let spec: SimSpec = spec.parse().expect("spec");
        Self::with_config(&FirmwareConfig::from_spec(&spec))
    }

    pub fn with_config(cfg: &FirmwareConfig) -> Self {
        Self {
            fw: Box::new(Firmware::new(cfg).expect("firmware")),
            mem: HostMemory::default(),
            next_id: 1,
            next_iova: 0x1_0000_0000,
            pending: VecDeque::new(),
            saves_started: 0,
            fail_alloc_after: None,
            live_buffers: 0,
            save_log: Vec::new(),
        }
    }

    fn exec_raw(&mut self, input: &[u8], out: &mut [u8]) {
        self.fw.exec(input, out, &mut self.mem).expect("exec");
    }

    /// Executes the oldest pending SAVE and returns its completion.
    pub fn run_save(&mut self) -> Option<(SaveToken, Vec<u8>)> {
        let (token, input) = self.pending.pop_front()?;
        let mut out = vec![0u8; 16];
        self.exec_raw(&input, &mut out);
        if out[0] == 0 {
            let word = |i: usize| u32::from_be_bytes(out[i..i + 4].try_into().unwrap());
            self.save_log.push((word(8), word(12)));
        }
        Some((token, out))
    }

    pub fn accounting(&self) -> Accounting {
        self.fw.accounting()
    }

    pub fn buffer(&mut self, id: BufferId) -> &mut Vec<u8> {
        &mut self.mem.bufs.get_mut(&id.0).expect("buffer").mem
    }
}

impl Hal for TestHal {
    type Error = HalErrorKind;

    fn exec(&mut self, input: &[u8], output: &mut [u8]) -> Result<(), HalErrorKind> {
        self.exec_raw(input, output);
        Ok(())
    }

    fn start_save(&mut self, input: &[u8], token: SaveToken) -> Result<(), HalErrorKind> {
        self.saves_started += 1;
        self.pending.push_back((token, input.to_vec()));
        Ok(())
    }

    fn alloc_buffer(&mut self, npages: u32, _dir: DmaDirection) -> Result<BufferId, HalErrorKind> {
        match self.fail_alloc_after {
            Some(0) => {
                self.fail_alloc_after = None;
                return Err(HalErrorKind::OutOfMemory);
            }
            Some(n) => self.fail_alloc_after = Some(n - 1),
            None => {}
        }
        let id = self.next_id;
        self.next_id += 1;
        let len = npages as u64 * PAGE;
        let iova = self.next_iova;
        // Leave a guard page between buffers so an off-by-one DMA faults.
        self.next_iova += len + PAGE;
        self.mem.bufs.insert(
            id,
            HostBuffer {
                mem: vec![0; len as usize],
                iova,
                maps: 0,
            },
        );
        self.live_buffers += 1;
        Ok(BufferId(id))
    }

    fn map_buffers(&mut self, pd: Pd, buffers: &[BufferId]) -> Result<Mkey, HalErrorKind> {
        let mut pages = vec![];
        for id in buffers {
            let b = self.mem.bufs.get_mut(&id.0).ok_or(HalErrorKind::Other)?;
            if b.maps == 0 {
                self.fw
                    .iommu_map(b.iova, b.mem.len() as u64)
                    .map_err(|_| HalErrorKind::Other)?;
            }
            b.maps += 1;
            pages.extend((0..b.mem.len() as u64 / PAGE).map(|p| b.iova + p * PAGE));
        }
        let mut input = vec![0u8; create_mkey_in_len(pages.len() as u32)];
        encode_create_mkey_mtt(&mut input, pd, pages.iter().copied())
            .map_err(|_| HalErrorKind::Other)?;
        let mut out = [0u8; 16];
        self.exec_raw(&input, &mut out);
        match decode_create_mkey_out(&out) {
            Ok(mkey) => Ok(mkey),
            Err(_) => {
                self.unmap_iommu(buffers);
                Err(HalErrorKind::Other)
            }
        }
    }

    fn unmap_buffers(&mut self, mkey: Mkey, buffers: &[BufferId]) -> Result<(), HalErrorKind> {
        let cmd = DestroyMkey { mkey };
        let mut input = [0u8; 16];
        cmd.encode(&mut input).unwrap();
        let mut out = [0u8; 16];
        self.exec_raw(&input, &mut out);
        self.unmap_iommu(buffers);
        cmd.decode(&out).map_err(|_| HalErrorKind::Other)
    }

    fn free_buffer(&mut self, buffer: BufferId) {
        let b = self.mem.bufs.remove(&buffer.0).expect("double free");
        assert_eq!(b.maps, 0, "freeing a mapped buffer");
        self.live_buffers -= 1;
    }

    fn crc32c(&mut self, buffer: BufferId, offset: u64, len: u64, crc: u32) -> u32 {
        let b = &self.mem.bufs[&buffer.0];
        crc32c::update(crc, &b.mem[offset as usize..(offset + len) as usize])
    }
}

impl TestHal {
    fn unmap_iommu(&mut self, buffers: &[BufferId]) {
        for id in buffers {
            if let Some(b) = self.mem.bufs.get_mut(&id.0) {
                b.maps -= 1;
                if b.maps == 0 {
                    self.fw
                        .iommu_unmap(b.iova, b.mem.len() as u64)
                        .expect("iommu unmap");
                }
            }
        }
    }
}

pub fn device(spec: &str, cfg: Config) -> Device<TestHal> {
    let mut dev = Device::new(TestHal::new(spec), cfg);
    let mut scratch = vec![0u8; PROBE_SCRATCH_LEN];
    dev.probe(0, &mut scratch).expect("probe");
    dev
}

/// Completes one pending SAVE of `dev`; false if none was pending.
pub fn complete_one(dev: &mut Device<TestHal>) -> bool {
    match dev.hal_mut().run_save() {
        Some((token, out)) => {
            dev.handle_save_completion(token, &out).expect("completion");
            true
        }
        None => false,
    }
}

/// `set_state`, completing SAVEs whenever the device asks to wait.
pub fn set_state(
    dev: &mut Device<TestHal>,
    target: MigState,
) -> Result<Option<FileId>, DeviceError> {
    loop {
        match dev.set_state(target) {
            Err(e) if e.error == DeviceError::SaveInFlight => {
                assert!(
                    complete_one(dev),
                    "device waits for a SAVE that was never started"
                );
            }
            Err(e) => return Err(e.error),
            Ok(f) => return Ok(f),
        }
    }
}

/// A tiny deterministic PRNG for read sizes.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// How reads are sized.
#[derive(Clone, Copy, Debug)]
pub enum Reads {
    /// Always this many bytes.
    Fixed(u64),
    /// Random from 1 byte to `max`, log-uniform-ish.
    Random { seed: u64, max: u64 },
}

impl Reads {
    fn size(&self, rng: &mut Rng) -> u64 {
        match *self {
            Self::Fixed(n) => n,
            Self::Random { max, .. } => {
                let bits = 64 - max.leading_zeros() as u64;
                let b = rng.below(bits + 1);
                1 + rng.below((1u64 << b).min(max))
            }
        }
    }
}

/// The test shim's read side: the device (the "lock" is `&mut`) and the
/// reader's buffer, appended to.
struct TestReader<'a> {
    dev: &'a mut Device<TestHal>,
    out: &'a mut Vec<u8>,
    /// `out.len()` when the call began: byte `at` of the call is
    /// `out[start + at]`.
    start: usize,
}

impl ReadPort<TestHal> for TestReader<'_> {
    fn device(&mut self) -> &mut Device<TestHal> {
        self.dev
    }

    fn copy_out(&mut self, at: usize, src: CopySource<'_>) -> Result<usize, Errno> {
        assert_eq!(self.start + at, self.out.len(), "read copies out of order");
        match src {
            CopySource::Bytes(b) => self.out.extend_from_slice(b),
            CopySource::Buffer {
                buffer,
                offset,
                len,
            } => {
                let mem = self.dev.hal_mut().buffer(buffer);
                self.out
                    .extend_from_slice(&mem[offset as usize..offset as usize + len]);
            }
        }
        Ok(src.len())
    }
}

/// Reads once from `file` into `out`, through [`file_ops::read`] as a shim's
/// read() does: as many segments as fit. Returns bytes read (0 at end of
/// stream), or the error of the first segment (`WouldBlock` when a blocking
/// reader would wait: the caller completes a SAVE and reads again).
pub fn read(
    dev: &mut Device<TestHal>,
    file: FileId,
    max: u64,
    out: &mut Vec<u8>,
) -> Result<u64, DeviceError> {
    let start = out.len();
    let mut port = TestReader { dev, out, start };
    match file_ops::read(&mut port, file, max as usize, Blocking::Blocking) {
        IoOutcome::Done(n) => Ok(n as u64),
        IoOutcome::Wait(_) => Err(DeviceError::WouldBlock),
        IoOutcome::Failed(IoError::Device(e)) => Err(e),
        // This port's copies never fail.
        IoOutcome::Failed(IoError::Copy(e)) => panic!("test read copy failed: {e:?}"),
    }
}

/// The test shim's write side: the device and the writer's bytes; `wait`
/// (when asked to) completes the SAVE the write waits for, as the sleep of a
/// blocking write() ends when that SAVE completes.
struct TestWriter<'a, 'b> {
    dev: &'a mut Device<TestHal>,
    bytes: &'b [u8],
    wait: bool,
    waits: u32,
}

impl WritePort<TestHal> for TestWriter<'_, '_> {
    fn device(&mut self) -> &mut Device<TestHal> {
        self.dev
    }

    fn copy_in(&mut self, at: usize, dst: CopyDest<'_>) -> Result<usize, Errno> {
        let n = dst.len();
        let src = &self.bytes[at..at + n];
        match dst {
            CopyDest::Bytes(b) => b.copy_from_slice(src),
            CopyDest::Buffer { buffer, offset, .. } => {
                self.dev.hal_mut().buffer(buffer)[offset as usize..offset as usize + n]
                    .copy_from_slice(src);
            }
        }
        Ok(n)
    }

    fn wait(&mut self, _why: WaitFor) -> bool {
        if !self.wait {
            return false;
        }
        assert!(complete_one(self.dev), "asked to wait for no SAVE");
        self.waits += 1;
        true
    }
}

/// Writes all of `bytes` to a resuming file, through [`file_ops::write`] as
/// a shim's write() does (called again after each short count). When the
/// LOAD must wait for a SAVE, fails with `SaveInFlight` (bytes before it
/// were consumed).
pub fn write(dev: &mut Device<TestHal>, file: FileId, bytes: &[u8]) -> Result<(), DeviceError> {
    write_inner(dev, file, bytes, false).map(|_| ())
}

/// As [`write`], but when the write must wait for a SAVE it completes that
/// SAVE and goes on, as a shim's blocking write() does. Returns the number
/// of waits.
pub fn write_waiting(
    dev: &mut Device<TestHal>,
    file: FileId,
    bytes: &[u8],
) -> Result<u32, DeviceError> {
    write_inner(dev, file, bytes, true)
}

fn write_inner(
    dev: &mut Device<TestHal>,
    file: FileId,
    mut bytes: &[u8],
    wait: bool,
) -> Result<u32, DeviceError> {
    let mut port = TestWriter {
        dev,
        bytes,
        wait,
        waits: 0,
    };
    while !bytes.is_empty() {
        port.bytes = bytes;
        match file_ops::write(&mut port, file, bytes.len(), Blocking::Blocking) {
            IoOutcome::Done(0) => panic!(
                "write() consumed nothing of {} bytes without an error",
                bytes.len()
            ),
            // Short (a LOAD waits for a SAVE, or the step limit): call
            // again; the next call waits first.
            IoOutcome::Done(n) => bytes = &bytes[n..],
            // Only when `wait` is off: a waiting port sleeps itself.
            IoOutcome::Wait(_) => {
                assert!(!wait, "write() returned Wait to a port that waits");
                return Err(DeviceError::SaveInFlight);
            }
            IoOutcome::Failed(IoError::Device(e)) => return Err(e),
            IoOutcome::Failed(IoError::Copy(e)) => panic!("test write copy failed: {e:?}"),
        }
    }
    Ok(port.waits)
}

/// What a migration observed.
#[derive(Debug, Default)]
pub struct Report {
    pub stream_bytes: u64,
    pub max_ready_chunks: usize,
    pub peak_buffer_bytes: u64,
    pub precopy_rounds: u32,
    pub stream: Option<Vec<u8>>,
}

pub struct Migration {
    pub src: Device<TestHal>,
    pub dst: Device<TestHal>,
    pub precopy: bool,
    pub reads: Reads,
    /// Keep the whole stream (small states only).
    pub keep_stream: bool,
    /// Limit on PRE_COPY rounds before switching to stop-copy.
    pub max_precopy_rounds: u32,
    /// Firmware faster than the reader: complete every pending SAVE before
    /// each read (otherwise SAVEs complete only when the reader waits).
    pub eager_firmware: bool,
}

impl Migration {
    pub fn new(src: &str, dst: &str, cfg: Config) -> Self {
        Self {
            src: device(src, cfg),
            dst: device(dst, cfg),
            precopy: false,
            reads: Reads::Fixed(1 << 20),
            keep_stream: false,
            max_precopy_rounds: 8,
            eager_firmware: false,
        }
    }

    /// Moves whatever the source has now into the destination; returns when
    /// the source reports `stop_at` (ENOMSG in PRE_COPY, EOF in STOP_COPY).
    fn pump(
        &mut self,
        sf: FileId,
        df: FileId,
        rng: &mut Rng,
        report: &mut Report,
        until_eof: bool,
    ) {
        let slots = self.src.config().chunk_slots as usize;
        let mut buf = Vec::new();
        loop {
            buf.clear();
            if self.eager_firmware {
                while complete_one(&mut self.src) {}
            }
            let want = self.reads.size(rng);
            match read(&mut self.src, sf, want, &mut buf) {
                Ok(0) => {
                    assert!(until_eof, "EOF during PRE_COPY");
                    return;
                }
                Ok(n) => {
                    report.stream_bytes += n;
                    write(&mut self.dst, df, &buf).expect("destination write");
                    if let Some(s) = report.stream.as_mut() {
                        s.extend_from_slice(&buf);
                    }
                }
                Err(DeviceError::WouldBlock) => {
                    assert!(
                        complete_one(&mut self.src),
                        "reader would block with no SAVE in flight"
                    );
                }
                Err(DeviceError::NoMessage) if !until_eof => return,
                Err(e) => panic!("source read: {e}"),
            }
            if let Some(e) = self.src.save_engine() {
                // Back-pressure: never more unread chunks than slots.
                assert!(e.ready_chunks() <= slots.max(1));
                report.max_ready_chunks = report.max_ready_chunks.max(e.ready_chunks());
            }
        }
    }

    pub fn run(&mut self, seed: u64) -> Report {
        let mut rng = Rng(seed | 1);
        let mut report = Report {
            stream: self.keep_stream.then(Vec::new),
            ..Report::default()
        };
        let df = set_state(&mut self.dst, MigState::Resuming)
            .expect("dst RESUMING")
            .expect("resuming fd");
        let sf;
        if self.precopy {
            sf = set_state(&mut self.src, MigState::PreCopy)
                .expect("src PRE_COPY")
                .expect("fd");
            // Drain initial data, then iterate like QEMU until dirty data is small.
            for _ in 0..self.max_precopy_rounds {
                self.pump(sf, df, &mut rng, &mut report, false);
                report.precopy_rounds += 1;
                let info = loop {
                    match self.src.precopy_info(sf) {
                        Err(DeviceError::SaveInFlight) => assert!(complete_one(&mut self.src)),
                        r => break r.expect("precopy info"),
                    }
                };
                if info.initial_bytes == 0 && info.dirty_bytes == 0 {
                    break;
                }
            }
            assert_eq!(
                set_state(&mut self.src, MigState::StopCopy).expect("src STOP_COPY"),
                None
            );
        } else {
            sf = set_state(&mut self.src, MigState::StopCopy)
                .expect("src STOP_COPY")
                .expect("fd");
        }
        self.pump(sf, df, &mut rng, &mut report, true);
        report.peak_buffer_bytes = self.src.stats().peak_buffer_bytes;
        set_state(&mut self.src, MigState::Stop).expect("src STOP");
        self.src.release(sf);
        set_state(&mut self.dst, MigState::Stop).expect("dst STOP");
        self.dst.release(df);
        set_state(&mut self.dst, MigState::Running).expect("dst RUNNING");
        report
    }

    pub fn assert_digests_match(&self) {
        let s = self.src.hal().fw.digest(0).unwrap();
        let d = self.dst.hal().fw.digest(0).unwrap();
        assert_eq!(s, d, "destination digest differs from source");
    }

    pub fn assert_no_leaks(&mut self) {
        for dev in [&mut self.src, &mut self.dst] {
            assert!(dev.is_idle(), "device not idle: {dev:?}");
            assert_eq!(dev.stats().buffer_bytes, 0);
            assert_eq!(dev.stats().leaked_mkeys, 0);
            assert_eq!(dev.stats().leaked_pds, 0);
            assert_eq!(dev.hal().live_buffers, 0);
            assert!(
                dev.hal().accounting().is_zero(),
                "{:?}",
                dev.hal().accounting()
            );
        }
    }
}
