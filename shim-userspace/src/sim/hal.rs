//! The [`Hal`] over the simulated firmware: page-aligned buffer memory
//! registered with the sim's IOMMU, commands executed under a firmware lock,
//! and SAVE and LOAD run asynchronously on a firmware thread: chunk k+1 is
//! produced while the reader copies chunk k, and image k+1 is received while
//! image k is LOADed.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use memmap2::MmapMut;
use mlx5vf_core::hal::{
    BufferId, DmaDirection, Hal, HalErrorKind, LoadToken, ReportChannel, ReportChannelRequest,
    ReportEvent, SaveToken,
};
use mlx5vf_core::ifc::mkey::{
    DestroyMkey, Mkey, create_mkey_in_len, decode_create_mkey_out, encode_create_mkey_mtt,
};
use mlx5vf_core::ifc::pd::Pd;
use mlx5vf_core::ifc::{Command, Opcode};
use mlx5vf_sim::firmware::Firmware;
use mlx5vf_sim::iommu::{Dma, DmaFault};
use mlx5vf_sim::report_host::HostChannel;
use mlx5vf_sim::timing::{TimingModel, Worker};

use crate::timeline::{Lane, Timeline};

/// Bytes per page.
pub const PAGE_SIZE: u64 = 4096;

/// A DMA buffer: page-aligned memory at an IOVA, its own anonymous
/// mapping, populated when allocated (a driver's DMA allocation is real
/// memory: readers of a buffer firmware left partly unwritten, as
/// `content=off` does, must not read the kernel's shared zero page, which
/// would flatter them) and unmapped when the buffer is freed.
#[derive(Debug)]
pub struct Buffer {
    iova: u64,
    len: u64,
    pages: Mutex<MmapMut>,
}

impl Buffer {
    fn new(iova: u64, npages: u32) -> Result<Self, HalErrorKind> {
        let len = u64::from(npages) * PAGE_SIZE;
        let bytes = usize::try_from(len).map_err(|_| HalErrorKind::OutOfMemory)?;
        let pages = memmap2::MmapOptions::new()
            .len(bytes)
            .populate()
            .map_anon()
            .map_err(|_| HalErrorKind::OutOfMemory)?;
        Ok(Self {
            iova,
            len,
            pages: Mutex::new(pages),
        })
    }

    /// Runs `f` on the bytes `[offset, offset + len)` of the buffer.
    ///
    /// # Errors
    /// The range is outside the buffer.
    pub fn with_bytes<R>(
        &self,
        offset: u64,
        len: u64,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, HalErrorKind> {
        let pages = lock(&self.pages);
        let bytes: &[u8] = &pages;
        let range = range(offset, len, bytes.len()).ok_or(HalErrorKind::Fault)?;
        Ok(f(bytes.get(range).ok_or(HalErrorKind::Fault)?))
    }

    /// Runs `f` on the bytes `[offset, offset + len)` of the buffer, mutably.
    ///
    /// # Errors
    /// The range is outside the buffer.
    pub fn with_bytes_mut<R>(
        &self,
        offset: u64,
        len: u64,
        f: impl FnOnce(&mut [u8]) -> R,
    ) -> Result<R, HalErrorKind> {
        let mut pages = lock(&self.pages);
        let bytes: &mut [u8] = &mut pages;
        let range = range(offset, len, bytes.len()).ok_or(HalErrorKind::Fault)?;
        Ok(f(bytes.get_mut(range).ok_or(HalErrorKind::Fault)?))
    }
}

fn range(offset: u64, len: u64, size: usize) -> Option<std::ops::Range<usize>> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    (end <= size).then_some(start..end)
}

/// Locks a mutex, recovering from poisoning (a panicked peer thread cannot
/// leave these structures half-updated: every critical section is a copy or a
/// map update).
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Every live buffer, by IOVA. Shared between the device (allocation) and
/// the firmware thread and readers (access).
#[derive(Debug, Default)]
pub struct BufferPool {
    by_iova: RwLock<BTreeMap<u64, Arc<Buffer>>>,
}

impl BufferPool {
    /// The buffer a [`BufferId`] names (its IOVA).
    pub fn get(&self, id: BufferId) -> Option<Arc<Buffer>> {
        self.by_iova
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id.0)
            .cloned()
    }

    /// The buffer holding `[iova, iova + len)`.
    fn find(&self, iova: u64, len: usize) -> Option<Arc<Buffer>> {
        let map = self.by_iova.read().unwrap_or_else(PoisonError::into_inner);
        let (_, b) = map.range(..=iova).next_back()?;
        let end = iova.checked_add(len as u64)?;
        (end <= b.iova + b.len).then(|| Arc::clone(b))
    }

    /// Live buffers and their bytes.
    pub fn usage(&self) -> (usize, u64) {
        let map = self.by_iova.read().unwrap_or_else(PoisonError::into_inner);
        (map.len(), map.values().map(|b| b.len).sum())
    }
}

impl crate::local::BufferAccess for BufferPool {
    fn with_bytes(
        &self,
        buffer: BufferId,
        offset: u64,
        len: u64,
        f: &mut dyn FnMut(&[u8]),
    ) -> Result<(), mlx5vf_core::errno::Errno> {
        let b = self.get(buffer).ok_or(mlx5vf_core::errno::Errno::ENODEV)?;
        b.with_bytes(offset, len, f).map_err(HalErrorKind::errno)
    }

    fn with_bytes_mut(
        &self,
        buffer: BufferId,
        offset: u64,
        len: u64,
        f: &mut dyn FnMut(&mut [u8]),
    ) -> Result<(), mlx5vf_core::errno::Errno> {
        let b = self.get(buffer).ok_or(mlx5vf_core::errno::Errno::ENODEV)?;
        b.with_bytes_mut(offset, len, f)
            .map_err(HalErrorKind::errno)
    }
}

/// Device DMA into the pool.
pub(super) struct PoolDma<'a>(pub(super) &'a BufferPool);

impl Dma for PoolDma<'_> {
    fn dma_write(
        &mut self,
        iova: u64,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> Result<(), DmaFault> {
        let b = self.0.find(iova, len).ok_or(DmaFault)?;
        b.with_bytes_mut(iova - b.iova, len as u64, |s| fill(s))
            .map_err(|_| DmaFault)
    }

    fn dma_read(
        &mut self,
        iova: u64,
        len: usize,
        consume: &mut dyn FnMut(&[u8]),
    ) -> Result<(), DmaFault> {
        let b = self.0.find(iova, len).ok_or(DmaFault)?;
        b.with_bytes(iova - b.iova, len as u64, |s| consume(s))
            .map_err(|_| DmaFault)
    }
}

/// Which asynchronous command completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completion {
    /// A SAVE started with this token.
    Save(SaveToken),
    /// A LOAD started with this token.
    Load(LoadToken),
}

/// Where SAVE and LOAD completions go: the device's owner installs it once
/// the device exists.
pub type Deliver = Arc<dyn Fn(Completion, Vec<u8>) + Send + Sync>;

/// The simulated platform of one device.
pub struct SimHal {
    pub(super) fw: Arc<Mutex<Firmware>>,
    pub(super) pool: Arc<BufferPool>,
    /// The page tracker's reporting channel, while open.
    pub(super) report: Option<HostChannel>,
    worker: Worker,
    timing: TimingModel,
    deliver: Arc<std::sync::OnceLock<Deliver>>,
    /// Where SAVEs and LOADs are recorded, once someone asks.
    timeline: Arc<std::sync::OnceLock<Arc<Timeline>>>,
    /// LOADs run on the firmware thread (`false`: through `exec`).
    async_load: bool,
    next_iova: u64,
    /// Memory keys mapping each buffer (by IOVA).
    maps: HashMap<u64, u32>,
    /// The clock's zero ([`Hal::now_ns`]).
    origin: Instant,
}

impl std::fmt::Debug for SimHal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHal")
            .field("timing", &self.timing)
            .finish_non_exhaustive()
    }
}

impl SimHal {
    /// A platform over `fw` with the given timing model.
    ///
    /// # Errors
    /// The firmware thread could not be started.
    pub fn new(fw: Arc<Mutex<Firmware>>, timing: TimingModel) -> std::io::Result<Self> {
        Ok(Self {
            fw,
            pool: Arc::new(BufferPool::default()),
            report: None,
            worker: Worker::new(timing)?,
            timing,
            deliver: Arc::new(std::sync::OnceLock::new()),
            timeline: Arc::new(std::sync::OnceLock::new()),
            async_load: true,
            // Start high so an IOVA is never mistaken for a small number.
            next_iova: 0x10_0000_0000,
            maps: HashMap::new(),
            origin: Instant::now(),
        })
    }

    /// LOAD synchronously, through `exec`, as the Linux driver does.
    #[must_use]
    pub fn with_sync_load(mut self) -> Self {
        self.async_load = false;
        self
    }

    /// Installs where SAVE and LOAD completions go (once).
    pub fn set_deliver(&self, deliver: Deliver) {
        let _ = self.deliver.set(deliver);
    }

    /// Records every SAVE and LOAD from now on on `timeline` (once).
    pub fn set_timeline(&self, timeline: Arc<Timeline>) {
        let _ = self.timeline.set(timeline);
    }

    /// The buffer pool (for readers and writers copying outside the device lock).
    pub fn pool(&self) -> Arc<BufferPool> {
        Arc::clone(&self.pool)
    }

    /// The firmware.
    pub fn firmware(&self) -> Arc<Mutex<Firmware>> {
        Arc::clone(&self.fw)
    }

    /// Runs an asynchronous command on the firmware thread: executes it,
    /// paces it by the timing model for the bytes `moved` says it moved, and
    /// delivers its output as `done`.
    fn run_async(
        &self,
        input: &[u8],
        done: Completion,
        moved: impl Fn(&[u8]) -> u64 + Send + 'static,
    ) -> Result<(), HalErrorKind> {
        let input = input.to_vec();
        let fw = Arc::clone(&self.fw);
        let pool = Arc::clone(&self.pool);
        let deliver = Arc::clone(&self.deliver);
        let timeline = Arc::clone(&self.timeline);
        let timing = self.timing;
        let (op, lane) = match done {
            Completion::Save(_) => (Opcode::SaveVhcaState, Lane::Save),
            Completion::Load(_) => (Opcode::LoadVhcaState, Lane::Load),
        };
        let job = Box::new(move || {
            let start = Instant::now();
            let mut out = vec![0u8; 16];
            {
                let mut fw = lock(&fw);
                // A firmware that cannot report has failed the command; the
                // zeroed output would read as success, so mark it failed.
                if fw.exec(&input, &mut out, &mut PoolDma(&pool)).is_err() {
                    if let Some(status) = out.first_mut() {
                        *status = 0x01;
                    }
                }
            }
            pace(start, timing.cost(u16::from(op), moved(&out)));
            if let Some(t) = timeline.get() {
                t.firmware(lane, start, Instant::now());
            }
            if let Some(d) = deliver.get() {
                d(done, out);
            }
        });
        self.worker
            .submit(Duration::ZERO, job)
            .map_err(|_| HalErrorKind::Other)
    }

    fn exec_locked(&self, input: &[u8], output: &mut [u8]) -> Result<(), HalErrorKind> {
        let mut fw = lock(&self.fw);
        fw.exec(input, output, &mut PoolDma(&self.pool))
            .map_err(|_| HalErrorKind::Delivery)
    }

    fn unmap_iommu(&mut self, buffers: &[BufferId]) {
        for id in buffers {
            if let Some(n) = self.maps.get_mut(&id.0) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.maps.remove(&id.0);
                    if let Some(b) = self.pool.get(*id) {
                        let _ = lock(&self.fw).iommu_unmap(b.iova, b.len);
                    }
                }
            }
        }
    }
}

fn be32(bytes: &[u8], at: usize) -> u32 {
    bytes
        .get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_be_bytes)
}

impl Hal for SimHal {
    type Error = HalErrorKind;

    fn now_ns(&mut self) -> Option<u64> {
        u64::try_from(self.origin.elapsed().as_nanos()).ok()
    }

    fn exec(&mut self, input: &[u8], output: &mut [u8]) -> Result<(), HalErrorKind> {
        // CAST: a 16-bit field.
        let op = be32(input, 0) >> 16;
        // LOAD moves its `size` bytes (dw7); everything else only costs latency.
        let bytes = if op == u32::from(u16::from(Opcode::LoadVhcaState)) {
            u64::from(be32(input, 28))
        } else {
            0
        };
        let cost = self.timing.cost(op as u16, bytes);
        let start = Instant::now();
        let r = self.exec_locked(input, output);
        pace(start, cost);
        if let (Some(t), true) = (self.timeline.get(), bytes > 0) {
            t.firmware(Lane::Load, start, Instant::now());
        }
        r
    }

    fn start_save(&mut self, input: &[u8], token: SaveToken) -> Result<(), HalErrorKind> {
        // SAVE takes as long as the firmware rate says for what it wrote.
        self.run_async(input, Completion::Save(token), |out| {
            if out.first() == Some(&0) {
                u64::from(be32(out, 8))
            } else {
                0
            }
        })
    }

    fn start_load(&mut self, input: &[u8], token: LoadToken) -> Result<bool, HalErrorKind> {
        if !self.async_load {
            return Ok(false);
        }
        // LOAD moves its `size` bytes (dw7) at the firmware rate.
        let bytes = u64::from(be32(input, 28));
        self.run_async(input, Completion::Load(token), move |_| bytes)?;
        Ok(true)
    }

    fn alloc_buffer(&mut self, npages: u32, _dir: DmaDirection) -> Result<BufferId, HalErrorKind> {
        let iova = self.next_iova;
        let buf = Buffer::new(iova, npages)?;
        // A guard page between buffers: an off-by-one DMA faults in the IOMMU.
        self.next_iova = iova + buf.len + PAGE_SIZE;
        self.pool
            .by_iova
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(iova, Arc::new(buf));
        Ok(BufferId(iova))
    }

    fn map_buffers(&mut self, pd: Pd, buffers: &[BufferId]) -> Result<Mkey, HalErrorKind> {
        let mut pages = Vec::new();
        for (i, id) in buffers.iter().enumerate() {
            let mapped = self.pool.get(*id).ok_or(HalErrorKind::Fault).and_then(|b| {
                let first = !self.maps.contains_key(&id.0);
                if first && lock(&self.fw).iommu_map(b.iova, b.len).is_err() {
                    return Err(HalErrorKind::OutOfMemory);
                }
                *self.maps.entry(id.0).or_insert(0) += 1;
                Ok(b)
            });
            match mapped {
                Ok(b) => pages.extend((0..b.len / PAGE_SIZE).map(|p| b.iova + p * PAGE_SIZE)),
                Err(e) => {
                    self.unmap_iommu(buffers.get(..i).unwrap_or_default());
                    return Err(e);
                }
            }
        }
        let npages = u32::try_from(pages.len()).map_err(|_| HalErrorKind::OutOfMemory)?;
        let mut input = vec![0u8; create_mkey_in_len(npages)];
        let encoded = encode_create_mkey_mtt(&mut input, pd, pages.iter().copied());
        let mut out = [0u8; 16];
        let result = encoded
            .map_err(|_| HalErrorKind::OutOfMemory)
            .and_then(|_| self.exec_locked(&input, &mut out))
            .and_then(|()| decode_create_mkey_out(&out).map_err(|_| HalErrorKind::OutOfMemory));
        if result.is_err() {
            self.unmap_iommu(buffers);
        }
        result
    }

    fn unmap_buffers(&mut self, mkey: Mkey, buffers: &[BufferId]) -> Result<(), HalErrorKind> {
        let cmd = DestroyMkey { mkey };
        let mut input = [0u8; 16];
        let mut out = [0u8; 16];
        let result = cmd
            .encode(&mut input)
            .map_err(|_| HalErrorKind::Other)
            .and_then(|_| self.exec_locked(&input, &mut out))
            .and_then(|()| cmd.decode(&out).map_err(|_| HalErrorKind::Other));
        self.unmap_iommu(buffers);
        result
    }

    fn free_buffer(&mut self, buffer: BufferId) {
        self.pool
            .by_iova
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&buffer.0);
    }

    /// The `crc32c` crate, not core's portable CRC: this is the faster
    /// platform CRC the `Hal` method exists for (as the kernel shim passes
    /// the kernel's `crc32c()`). It uses SSE4.2 `crc32` when the CPU has it:
    /// ~10 GiB/s against the portable 1.5 GiB/s, and every saved and loaded
    /// byte goes through it. With core's here, `mlx5vf bench` measured the
    /// 4 GiB stop-copy pipeline at 1.39 GiB/s instead of 7.64 GiB/s and the
    /// resume at 1.3 instead of 3.8 GiB/s.
    fn crc32c(&mut self, buffer: BufferId, offset: u64, len: u64, crc: u32) -> u32 {
        self.pool
            .get(buffer)
            .and_then(|b| {
                b.with_bytes(offset, len, |s| crc32c::crc32c_append(crc, s))
                    .ok()
            })
            .unwrap_or(!crc)
    }

    fn report_channel_open(
        &mut self,
        req: ReportChannelRequest,
    ) -> Result<Option<ReportChannel>, HalErrorKind> {
        self.channel_open(req)
    }

    fn report_channel_next(
        &mut self,
        cqe: &mut [u8; 64],
        _timeout_ns: u64,
    ) -> Result<ReportEvent, HalErrorKind> {
        Ok(self.channel_next(cqe))
    }

    fn report_channel_read(
        &mut self,
        slot: u32,
        offset: u32,
        dst: &mut [u8],
    ) -> Result<bool, HalErrorKind> {
        Ok(self.channel_read(slot, offset, dst))
    }

    fn report_channel_repost(&mut self, _slot: u32) -> Result<(), HalErrorKind> {
        self.channel_repost();
        Ok(())
    }

    fn report_channel_close(&mut self) {
        self.channel_close();
    }
}

/// Sleeps until `cost` has passed since `start` (the modelled firmware time).
fn pace(start: Instant, cost: Duration) {
    if let Some(left) = cost.checked_sub(start.elapsed()) {
        std::thread::sleep(left);
    }
}
