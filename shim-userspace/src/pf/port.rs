//! A PF's command queue run from this process: the std side of
//! [`mlx5vf_core::cmdq`]. It owns the queue page and each slot's mailbox
//! areas (DMA memory, mapped through the transport), posts commands and
//! rings the doorbell, waits for their entries (completion signals where
//! the transport has them, polling with a short backoff where not), checks
//! the firmware's health while it waits, and runs SAVE and LOAD
//! asynchronously: a completion thread watches their slots and hands their
//! outputs to the device.
//!
//! Locks: the device lock (held by the core around `Hal` calls) is taken
//! before the queue's; the completion thread never holds the queue's while
//! it delivers an output (which takes the device lock).

use std::sync::atomic::{Ordering, fence};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mlx5vf_core::cmdq::entry::{self, Descriptor};
use mlx5vf_core::cmdq::health::{HealthMonitor, HealthSample};
use mlx5vf_core::cmdq::iseg::{self, Geometry};
use mlx5vf_core::cmdq::{
    self, Checksums, CmdQueue, CmdqError, ENTRY_SIZE, INLINE_LEN, Posted, Progress, SlotClass,
    mailbox,
};
use mlx5vf_core::hal::{LoadToken, SaveToken};

use super::error::PfError;
use super::memory::{DmaRegion, DmaSpace, IovaAllocator, PAGE};
use super::transport::Transport;

/// How the queue is driven.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortConfig {
    /// Signatures on entries and blocks (Linux and rdma-core: off). The
    /// queue starts without them; bring-up turns them on in firmware
    /// (SET_HCA_CAP) and then here ([`Port::set_checksums`]).
    pub checksums: Checksums,
    /// Deadline of one command; `None` takes what firmware advertises in
    /// `cmd_exec_to` (60 s when it advertises nothing, at most 10 minutes).
    pub command_timeout: Option<Duration>,
    /// How often the health registers are read while a command waits.
    pub health_interval: Duration,
    /// How long the health counter may stand still (rdma-core: 3 s).
    pub health_stall: Duration,
    /// How long firmware may stay `initializing` (rdma-core: 120 s).
    pub init_timeout: Duration,
}

impl Default for PortConfig {
    fn default() -> Self {
        Self {
            checksums: Checksums::Off,
            command_timeout: None,
            health_interval: Duration::from_secs(1),
            health_stall: Duration::from_secs(3),
            init_timeout: Duration::from_secs(120),
        }
    }
}

/// Firmware's `cmd_exec_to` when it advertises none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest deadline taken from `cmd_exec_to`. The register is device
/// data: garbage (up to `0xffff_fffe` ms, 49 days) must not become a wait
/// no one sits through, and no firmware command needs anywhere near this
/// long (firmware advertises about a minute).
const MAX_ADVERTISED_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Longest sleep between two looks at a pending entry.
const MAX_POLL_STEP: Duration = Duration::from_millis(1);

/// Which asynchronous command completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsyncDone {
    /// A SAVE started with this token.
    Save(SaveToken),
    /// A LOAD started with this token.
    Load(LoadToken),
}

/// Where asynchronous outputs go (installed once the device exists).
pub type Deliver = Arc<dyn Fn(AsyncDone, Vec<u8>) + Send + Sync>;

/// Counters of the queue, for benchmarks and reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortCounters {
    /// Commands posted.
    pub posted: u64,
    /// Commands that completed with their output read.
    pub completed: u64,
    /// Commands that failed in the queue (delivery, timeout, ...).
    pub failed: u64,
}

struct Async {
    opcode: u16,
    posted: Posted,
    outlen: usize,
    done: AsyncDone,
}

#[derive(Default)]
struct SlotMem {
    input: Option<Arc<DmaRegion>>,
    output: Option<Arc<DmaRegion>>,
}

/// DMA memory kept back from the heap and the IOVA allocator because the
/// device may still reach it, until the transport closes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Quarantined {
    /// Regions the IOMMU refused to unmap (still mapped).
    pub unmap_failed: usize,
    /// Regions holding pages firmware never returned (left mapped: the
    /// device may still use them).
    pub firmware_regions: usize,
    /// Those pages.
    pub firmware_pages: u64,
    /// Bytes of all of them.
    pub bytes: u64,
}

impl Quarantined {
    /// Whether nothing is kept back.
    pub fn is_empty(&self) -> bool {
        self.unmap_failed == 0 && self.firmware_regions == 0
    }
}

impl std::fmt::Display for Quarantined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} DMA regions ({} bytes) stay allocated and mapped until the device is closed",
            self.unmap_failed + self.firmware_regions,
            self.bytes
        )?;
        let mut sep = ": ";
        if self.unmap_failed > 0 {
            write!(f, "{sep}the IOMMU refused to unmap {}", self.unmap_failed)?;
            sep = "; ";
        }
        if self.firmware_regions > 0 {
            write!(
                f,
                "{sep}{} hold {} pages firmware never returned",
                self.firmware_regions, self.firmware_pages
            )?;
        }
        Ok(())
    }
}

/// Why a region is kept back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Keep {
    /// Its unmap failed.
    UnmapFailed,
    /// Firmware never returned this many of its pages (not unmapped).
    FirmwarePages(u64),
}

#[derive(Default)]
struct Quarantine {
    regions: Vec<Arc<DmaRegion>>,
    summary: Quarantined,
}

struct State {
    queue: CmdQueue,
    queue_page: Arc<DmaRegion>,
    slots: Vec<SlotMem>,
    asyncs: Vec<Async>,
    health: HealthMonitor,
    next_health: Instant,
    fatal: Option<CmdqError>,
    stop: bool,
    counters: PortCounters,
}

pub(crate) struct Inner<T: Transport> {
    pub(crate) transport: Arc<T>,
    pub(crate) space: Arc<DmaSpace>,
    iova: Mutex<IovaAllocator>,
    state: Mutex<State>,
    work: Condvar,
    cfg: PortConfig,
    timeout: Duration,
    origin: Instant,
    deliver: OnceLock<Deliver>,
    /// The last failure, for messages that otherwise only carry an errno.
    detail: Mutex<Option<String>>,
    /// Regions the device may still reach. Declared after `transport`, so
    /// dropped after it: the memory outlives the transport, whose close
    /// (VFIO: the container's or the IOAS's) removes the mappings.
    quarantine: Mutex<Quarantine>,
}

/// The command queue of one PF.
pub struct Port<T: Transport> {
    inner: Arc<Inner<T>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl<T: Transport> std::fmt::Debug for Port<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Port")
            .field("transport", &self.inner.transport.describe())
            .finish_non_exhaustive()
    }
}

fn lock<X>(m: &Mutex<X>) -> MutexGuard<'_, X> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn opcode_of(input: &[u8]) -> u16 {
    match input {
        [hi, lo, ..] => u16::from_be_bytes([*hi, *lo]),
        _ => 0,
    }
}

/// Waits until firmware is no longer `initializing`.
fn wait_initializing<T: Transport>(t: &T, limit: Duration) -> Result<(), PfError> {
    let start = Instant::now();
    loop {
        let v = t
            .read32(iseg::INITIALIZING)
            .map_err(PfError::io("read initializing"))?;
        let busy = iseg::is_initializing(v).map_err(|error| PfError::Queue { opcode: 0, error })?;
        if !busy {
            return Ok(());
        }
        if start.elapsed() > limit {
            return Err(PfError::Queue {
                opcode: 0,
                error: CmdqError::StillInitializing,
            });
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

impl<T: Transport> Port<T> {
    /// Takes over the PF's command queue: checks the command-interface
    /// revision, waits for firmware, allocates and programs the queue page,
    /// enables bus mastering, waits again, and starts the completion
    /// thread. DMA memory is registered in `space` (where a simulated
    /// device finds it). The function itself is not brought up (see
    /// [`super::bringup`]).
    ///
    /// # Errors
    /// A register access failed, the revision or geometry is wrong,
    /// firmware stayed `initializing`, or no DMA memory could be had.
    pub fn open(transport: Arc<T>, space: Arc<DmaSpace>, cfg: PortConfig) -> Result<Self, PfError> {
        let t = &*transport;
        let rev = t
            .read32(iseg::CMDIF_REV_FW_SUB)
            .map_err(PfError::io("read cmdif_rev_fw_sub"))?;
        iseg::check_cmdif_revision(rev).map_err(|error| PfError::Queue { opcode: 0, error })?;
        wait_initializing(t, cfg.init_timeout)?;
        let sz = t
            .read32(iseg::CMDQ_ADDR_L_SZ)
            .map_err(PfError::io("read cmdq_addr_l_sz"))?;
        let geometry =
            Geometry::from_register(sz).map_err(|error| PfError::Queue { opcode: 0, error })?;
        let advertised = t
            .read32(iseg::CMD_EXEC_TO)
            .map_err(PfError::io("read cmd_exec_to"))?;
        let timeout = cfg.command_timeout.unwrap_or(if advertised == 0 {
            DEFAULT_TIMEOUT
        } else {
            Duration::from_millis(u64::from(advertised)).min(MAX_ADVERTISED_TIMEOUT)
        });
        let mut iova = IovaAllocator::new(&t.iova_ranges());
        let page_iova = iova
            .alloc(PAGE, PAGE)
            .ok_or(PfError::Memory("the command queue"))?;
        let page = Arc::new(
            DmaRegion::new(page_iova, 1).map_err(|_| PfError::Memory("the command queue"))?,
        );
        t.map_dma(&page)
            .map_err(PfError::io("map the command queue"))?;
        space.insert(Arc::clone(&page));
        let now = Instant::now();
        let inner = Arc::new(Inner {
            transport: Arc::clone(&transport),
            space,
            iova: Mutex::new(iova),
            state: Mutex::new(State {
                queue: CmdQueue::new(geometry, Checksums::Off),
                queue_page: Arc::clone(&page),
                slots: (0..cmdq::MAX_SLOTS).map(|_| SlotMem::default()).collect(),
                asyncs: Vec::new(),
                health: HealthMonitor::new(cfg.health_stall),
                next_health: now,
                fatal: None,
                stop: false,
                counters: PortCounters::default(),
            }),
            work: Condvar::new(),
            cfg,
            timeout,
            origin: now,
            deliver: OnceLock::new(),
            detail: Mutex::new(None),
            quarantine: Mutex::new(Quarantine::default()),
        });
        let port = Self {
            inner: Arc::clone(&inner),
            thread: Mutex::new(None),
        };
        // From here on, dropping `port` releases what was set up.
        let (hi, lo) = iseg::queue_address_words(page.iova())
            .map_err(|error| PfError::Queue { opcode: 0, error })?;
        t.write32(iseg::CMDQ_ADDR_H, hi)
            .map_err(PfError::io("write cmdq_addr_h"))?;
        t.write32(iseg::CMDQ_ADDR_L_SZ, lo)
            .map_err(PfError::io("write cmdq_addr_l_sz"))?;
        t.enable_bus_master()
            .map_err(PfError::io("enable bus mastering"))?;
        wait_initializing(t, cfg.init_timeout)?;
        let worker = Arc::clone(&inner);
        let handle = std::thread::Builder::new()
            .name("mlx5vf-cmdq".into())
            .spawn(move || completions(&worker))
            .map_err(PfError::io("start the completion thread"))?;
        *lock(&port.thread) = Some(handle);
        Ok(port)
    }

    pub(crate) fn inner(&self) -> &Arc<Inner<T>> {
        &self.inner
    }

    /// Runs one command in a slot of `class` and waits for it: `input` in,
    /// `output` filled (its length is the command's `outlen`).
    ///
    /// # Errors
    /// [`PfError::Queue`] for anything the queue refused or lost.
    pub fn exec(&self, class: SlotClass, input: &[u8], output: &mut [u8]) -> Result<(), PfError> {
        self.inner.exec(class, input, output, self.inner.timeout)
    }

    /// [`Port::exec`] with a deadline of its own, at most the port's (a
    /// step with a budget, such as teardown's page reclaim).
    ///
    /// # Errors
    /// As [`Port::exec`].
    pub fn exec_within(
        &self,
        class: SlotClass,
        input: &[u8],
        output: &mut [u8],
        timeout: Duration,
    ) -> Result<(), PfError> {
        let timeout = timeout.min(self.inner.timeout);
        self.inner.exec(class, input, output, timeout)
    }

    /// Starts a command whose output goes to the deliver function
    /// ([`Port::set_deliver`]) when it completes (or fails: then its output
    /// reports `INT_ERR`).
    ///
    /// # Errors
    /// The command could not be posted; nothing will be delivered.
    pub fn start(&self, input: &[u8], outlen: usize, done: AsyncDone) -> Result<(), PfError> {
        let posted = self
            .inner
            .post(SlotClass::Command, input, outlen, self.inner.timeout)?;
        let mut st = lock(&self.inner.state);
        st.asyncs.push(Async {
            opcode: opcode_of(input),
            posted,
            outlen,
            done,
        });
        drop(st);
        self.inner.work.notify_all();
        Ok(())
    }

    /// Signs and checks commands posted from now on (or stops).
    pub fn set_checksums(&self, checksums: Checksums) {
        lock(&self.inner.state).queue.set_checksums(checksums);
    }

    /// Installs where asynchronous outputs go (once).
    pub fn set_deliver(&self, deliver: Deliver) {
        let _ = self.inner.deliver.set(deliver);
    }

    /// The queue's counters.
    pub fn counters(&self) -> PortCounters {
        lock(&self.inner.state).counters
    }

    /// The last failure's message, taken.
    pub fn take_detail(&self) -> Option<String> {
        lock(&self.inner.detail).take()
    }

    /// The command deadline in force.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// DMA memory kept back because the device may still reach it (see
    /// [`Quarantined`]); freed when the port and its transport go.
    pub fn quarantined(&self) -> Quarantined {
        lock(&self.inner.quarantine).summary
    }

    /// Whether commands are still in flight for the completion thread.
    pub fn asyncs_in_flight(&self) -> usize {
        lock(&self.inner.state).asyncs.len()
    }

    /// Stops the completion thread (after the commands it watches end) and
    /// releases the mailboxes and the queue page. Call after the function
    /// was torn down; firmware owns no entry then (a stuck one's memory is
    /// unmapped, so a late write faults in the IOMMU).
    pub fn shut_down(&self) {
        lock(&self.inner.state).stop = true;
        self.inner.work.notify_all();
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
        let regions: Vec<Arc<DmaRegion>> = {
            let mut st = lock(&self.inner.state);
            let mut v: Vec<Arc<DmaRegion>> = st
                .slots
                .iter_mut()
                .flat_map(|s| [s.input.take(), s.output.take()])
                .flatten()
                .collect();
            v.push(Arc::clone(&st.queue_page));
            v
        };
        for r in regions {
            self.inner.release(&r, true);
        }
    }
}

impl<T: Transport> Drop for Port<T> {
    fn drop(&mut self) {
        if lock(&self.thread).is_some() {
            self.shut_down();
        } else if let Some(page) = self
            .inner
            .space
            .get(lock(&self.inner.state).queue_page.iova())
        {
            // Opened no further than the queue page.
            self.inner.release(&page, true);
        }
    }
}

impl<T: Transport> Inner<T> {
    fn now(&self) -> cmdq::Instant {
        cmdq::Instant::from_nanos(
            u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX),
        )
    }

    pub(crate) fn record(&self, e: &PfError) {
        *lock(&self.detail) = Some(e.to_string());
    }

    /// A region of `npages` at a fresh IOVA, registered, and mapped when
    /// `map` says so.
    pub(crate) fn allocate(
        &self,
        npages: u64,
        map: bool,
        what: &'static str,
    ) -> Result<Arc<DmaRegion>, PfError> {
        let len = npages.saturating_mul(PAGE);
        let iova = lock(&self.iova)
            .alloc(len, PAGE)
            .ok_or(PfError::Memory(what))?;
        let region = match DmaRegion::new(iova, npages) {
            Ok(r) => Arc::new(r),
            Err(_) => {
                lock(&self.iova).free(iova, len);
                return Err(PfError::Memory(what));
            }
        };
        if map {
            if let Err(e) = self.transport.map_dma(&region) {
                lock(&self.iova).free(iova, len);
                return Err(PfError::Io {
                    step: "map DMA memory",
                    error: e,
                });
            }
        }
        self.space.insert(Arc::clone(&region));
        Ok(region)
    }

    /// Undoes [`Inner::allocate`]; `mapped` says whether to unmap. A region
    /// the IOMMU refuses to unmap is quarantined instead of freed.
    pub(crate) fn release(&self, region: &Arc<DmaRegion>, mapped: bool) {
        if mapped {
            if let Err(error) = self.transport.unmap_dma(region) {
                self.record(&PfError::Io {
                    step: "unmap DMA memory",
                    error,
                });
                self.quarantine(region, Keep::UnmapFailed);
                return;
            }
        }
        self.space.remove(region.iova());
        lock(&self.iova).free(region.iova(), region.len());
    }

    /// Keeps `region` (still mapped) from the heap and its IOVA from the
    /// allocator until the transport closes: the device may still write it,
    /// and reusing either would hand it live memory or a taken address.
    pub(crate) fn quarantine(&self, region: &Arc<DmaRegion>, why: Keep) {
        let mut q = lock(&self.quarantine);
        match why {
            Keep::UnmapFailed => q.summary.unmap_failed += 1,
            Keep::FirmwarePages(n) => {
                q.summary.firmware_regions += 1;
                q.summary.firmware_pages += n;
            }
        }
        q.summary.bytes = q.summary.bytes.saturating_add(region.len());
        q.regions.push(Arc::clone(region));
    }

    /// Slot `slot`'s mailbox area for one side, at least `len` bytes.
    fn area(
        &self,
        st: &mut State,
        slot: u8,
        output: bool,
        len: usize,
    ) -> Result<Option<Arc<DmaRegion>>, PfError> {
        if len == 0 {
            return Ok(None);
        }
        let mem = st
            .slots
            .get_mut(usize::from(slot))
            .ok_or(PfError::Memory("a mailbox"))?;
        let place = if output {
            &mut mem.output
        } else {
            &mut mem.input
        };
        if let Some(r) = place.as_ref().filter(|r| r.len() >= len as u64) {
            return Ok(Some(Arc::clone(r)));
        }
        if let Some(old) = place.take() {
            self.release(&old, true);
        }
        let r = self.allocate((len as u64).div_ceil(PAGE), true, "a mailbox")?;
        *place = Some(Arc::clone(&r));
        Ok(Some(r))
    }

    /// Posts a command and rings its doorbell.
    fn post(
        &self,
        class: SlotClass,
        input: &[u8],
        outlen: usize,
        timeout: Duration,
    ) -> Result<Posted, PfError> {
        let opcode = opcode_of(input);
        let queue_err = |error| PfError::Queue { opcode, error };
        let mut st = lock(&self.state);
        if let Some(error) = st.fatal {
            return Err(queue_err(error));
        }
        self.reclaim_stuck(&mut st);
        let slot = st
            .queue
            .next_free(class)
            .ok_or(queue_err(CmdqError::NoFreeSlot))?;
        let in_area = self.area(&mut st, slot, false, mailbox::area_len(input.len()))?;
        let out_area = self.area(&mut st, slot, true, mailbox::area_len(outlen))?;
        let descriptor = Descriptor::new(
            input.len(),
            in_area.as_ref().map(|r| r.iova()),
            outlen,
            out_area.as_ref().map(|r| r.iova()),
        )
        .map_err(queue_err)?;
        let now = self.now();
        let posted = st
            .queue
            .post(class, opcode, descriptor, now, timeout)
            .map_err(queue_err)?;
        let checksums = st.queue.checksums();
        let token = posted.token();
        let mut filled = Ok(());
        if let Some(r) = &in_area {
            filled = r
                .with_bytes_mut(0, r.len(), |a| {
                    mailbox::write_input_chain(a, r.iova(), input, token, checksums)
                })
                .unwrap_or(Err(CmdqError::BadAreaAddress));
        }
        if let (Ok(()), Some(r)) = (&filled, &out_area) {
            filled = r
                .with_bytes_mut(0, r.len(), |a| {
                    mailbox::prepare_output_chain(a, r.iova(), outlen, token, checksums)
                })
                .unwrap_or(Err(CmdqError::BadAreaAddress));
        }
        let mut entry = [0u8; ENTRY_SIZE];
        let filled = filled.and_then(|()| posted.encode_entry(&mut entry, input));
        let offset = st.queue.geometry().entry_offset(slot).unwrap_or(0) as u64;
        let written = filled.and_then(|()| {
            st.queue_page
                .with_bytes_mut(offset, ENTRY_SIZE as u64, |d| d.copy_from_slice(&entry))
                .map_err(|_| CmdqError::BadAreaAddress)
        });
        if let Err(error) = written {
            // Nothing reached the device: the slot is free again.
            st.queue.cancel(slot);
            st.counters.failed += 1;
            return Err(queue_err(error));
        }
        st.counters.posted += 1;
        drop(st);
        // A completion signal left over from this slot's last command must
        // not count for this one.
        let _ = self.transport.wait_completion(1 << slot, Duration::ZERO);
        fence(Ordering::Release);
        if let Err(e) = self.transport.write32(iseg::CMD_DBELL, posted.doorbell()) {
            lock(&self.state).queue.abandon(slot);
            return Err(PfError::Io {
                step: "ring the doorbell",
                error: e,
            });
        }
        Ok(posted)
    }

    /// Reads slot `slot`'s `status_own` byte alone (what the device wrote
    /// last when it handed the entry back).
    fn status_own(&self, st: &State, slot: u8) -> Result<u8, CmdqError> {
        let offset = st.queue.geometry().entry_offset(slot).unwrap_or(0) as u64;
        st.queue_page
            .with_bytes(offset + entry::field::STATUS_OWN as u64, 1, |b| {
                b.first().copied().unwrap_or(entry::OWNER_HW)
            })
            .map_err(|_| CmdqError::BadAreaAddress)
    }

    /// Frees the stuck slots whose entry firmware has handed back since (a
    /// late completion after a timeout, or an owner bit that trailed its
    /// completion signal), so that they serve commands again; the late
    /// output is dropped. A slot firmware still owns stays stuck.
    fn reclaim_stuck(&self, st: &mut State) {
        let mut stuck = st.queue.stuck();
        while stuck != 0 {
            // CAST: trailing_zeros of a non-zero u32 is below 32.
            let slot = stuck.trailing_zeros() as u8;
            stuck &= stuck - 1;
            if let Ok(status_own) = self.status_own(st, slot) {
                let mut entry = [0u8; ENTRY_SIZE];
                if let Some(b) = entry.get_mut(entry::field::STATUS_OWN) {
                    *b = status_own;
                }
                st.queue.reclaim(slot, &entry);
            }
        }
    }

    /// Reads slot `slot`'s entry and judges it.
    fn check(&self, st: &mut State, slot: u8, signalled: bool) -> Result<Progress, CmdqError> {
        let mut entry = [0u8; ENTRY_SIZE];
        let status_own = self.status_own(st, slot)?;
        if let Some(b) = entry.get_mut(entry::field::STATUS_OWN) {
            *b = status_own;
        }
        if status_own & entry::OWNER_HW == 0 {
            // Owner byte, fence, then the rest: one copy may load stale out[] before status_own.
            fence(Ordering::Acquire);
            let offset = st.queue.geometry().entry_offset(slot).unwrap_or(0) as u64;
            st.queue_page
                .with_bytes(offset, ENTRY_SIZE as u64, |b| entry.copy_from_slice(b))
                .map_err(|_| CmdqError::BadAreaAddress)?;
        }
        let now = self.now();
        st.queue.handle_entry(slot, &entry, signalled, now)
    }

    /// Reads the health registers when a sample is due (or `force`).
    fn health(&self, st: &mut State, force: bool) -> Result<(), CmdqError> {
        let now = Instant::now();
        if !force && now < st.next_health {
            return Ok(());
        }
        st.next_health = now + self.cfg.health_interval;
        let t = &self.transport;
        let sample = (|| {
            Ok::<_, std::io::Error>(HealthSample {
                counter: t.read32(iseg::HEALTH_COUNTER)?,
                syndrome_word: t.read32(iseg::HEALTH_SYND)?,
                fw_ver: t.read32(iseg::HEALTH_FW_VER)?,
            })
        })();
        let r = match sample {
            Ok(sample) => st.health.handle_sample(sample, self.now()),
            // A register that cannot be read at all says the device is gone
            // (or unreachable), not that firmware reports a syndrome.
            Err(_) => Err(CmdqError::DeviceGone),
        };
        if let Err(e) = r {
            st.fatal = Some(e);
        }
        r
    }

    /// The output of a completed command: `head` from the entry, the rest
    /// from its output chain.
    fn gather(
        &self,
        st: &State,
        posted: &Posted,
        head: [u8; INLINE_LEN],
        output: &mut [u8],
    ) -> Result<(), CmdqError> {
        for (d, s) in output.iter_mut().zip(head) {
            *d = s;
        }
        if output.len() <= INLINE_LEN {
            return Ok(());
        }
        let area = st
            .slots
            .get(usize::from(posted.slot()))
            .and_then(|m| m.output.as_ref())
            .ok_or(CmdqError::BadAreaAddress)?;
        let checksums = st.queue.checksums();
        area.with_bytes(0, area.len(), |a| {
            mailbox::read_output_chain(a, area.iova(), output, posted.token(), checksums)
        })
        .unwrap_or(Err(CmdqError::BadAreaAddress))
    }

    fn exec(
        &self,
        class: SlotClass,
        input: &[u8],
        output: &mut [u8],
        timeout: Duration,
    ) -> Result<(), PfError> {
        let opcode = opcode_of(input);
        let result = self
            .post(class, input, output.len(), timeout)
            .and_then(|posted| {
                self.wait(&posted, output)
                    .map_err(|error| PfError::Queue { opcode, error })
            });
        if let Err(e) = &result {
            self.record(e);
        }
        result
    }

    /// One look at the command in `slot`, for either waiter (a caller's
    /// or the completion thread): `None` while pending, its first output
    /// bytes once done. Every failure leaves the slot given up: the queue
    /// already fatal (a command timed out, or health failed, in another
    /// waiter: given up at once, not at this command's own deadline),
    /// health failing while it waits, its own timeout (which makes the
    /// queue fatal), or a bad entry.
    fn poll_slot(
        &self,
        st: &mut State,
        slot: u8,
        signalled: bool,
    ) -> Result<Option<[u8; INLINE_LEN]>, CmdqError> {
        if let Some(e) = st.fatal {
            st.queue.abandon(slot);
            return Err(e);
        }
        match self.check(st, slot, signalled) {
            Ok(Progress::Pending) => match self.health(st, false) {
                Ok(()) => Ok(None),
                Err(e) => {
                    st.queue.abandon(slot);
                    Err(e)
                }
            },
            Ok(Progress::Done(head)) => Ok(Some(head)),
            // A dead firmware explains a timeout better than the timeout.
            Err(e @ CmdqError::Timeout { .. }) => Err(timed_out(self, st, e)),
            Err(e) => Err(e),
        }
    }

    fn wait(&self, posted: &Posted, output: &mut [u8]) -> Result<(), CmdqError> {
        let slot = posted.slot();
        let bit = 1u32 << slot;
        let mut step = Duration::ZERO;
        loop {
            let signalled = self.transport.wait_completion(bit, step) & bit != 0;
            let mut st = lock(&self.state);
            let verdict = match self.poll_slot(&mut st, slot, signalled) {
                Ok(None) => Ok(None),
                Ok(Some(head)) => self.gather(&st, posted, head, output).map(Some),
                Err(e) => Err(e),
            };
            match verdict {
                Ok(None) => {}
                Ok(Some(())) => {
                    st.counters.completed += 1;
                    return Ok(());
                }
                Err(e) => {
                    st.counters.failed += 1;
                    return Err(e);
                }
            }
            drop(st);
            step = (step * 2).max(Duration::from_micros(1)).min(MAX_POLL_STEP);
        }
    }
}

/// A command timed out: the error to report (the health registers', when
/// they explain it). Firmware that let a command time out is not trusted
/// with more: later commands, and those still in flight (a SAVE on the
/// completion thread), fail at once with the same error, so that tearing
/// down a hung PF does not wait out a deadline per command.
fn timed_out<T: Transport>(inner: &Inner<T>, st: &mut State, timeout: CmdqError) -> CmdqError {
    let e = inner.health(st, true).err().unwrap_or(timeout);
    st.fatal = Some(e);
    e
}

/// The output an asynchronous command reports when the queue lost it: a
/// failed command (`INT_ERR`), so the device fails the SAVE or LOAD with
/// `EIO` as it would for a firmware error.
fn lost_output(outlen: usize) -> Vec<u8> {
    let mut out = vec![0u8; outlen.max(INLINE_LEN)];
    if let Some(s) = out.first_mut() {
        *s = 0x01;
    }
    out
}

/// The completion thread: watches the asynchronous commands' slots.
fn completions<T: Transport>(inner: &Inner<T>) {
    loop {
        let mask = {
            let mut st = lock(&inner.state);
            while st.asyncs.is_empty() && !st.stop {
                st = inner.work.wait(st).unwrap_or_else(PoisonError::into_inner);
            }
            if st.asyncs.is_empty() {
                return;
            }
            st.asyncs.iter().fold(0u32, |m, a| m | 1 << a.posted.slot())
        };
        let signalled = inner.transport.wait_completion(mask, MAX_POLL_STEP);
        let mut finished: Vec<(AsyncDone, Result<Vec<u8>, PfError>)> = Vec::new();
        {
            let mut st = lock(&inner.state);
            let mut i = 0;
            while i < st.asyncs.len() {
                let (posted, outlen, opcode) = match st.asyncs.get(i) {
                    Some(a) => (a.posted, a.outlen, a.opcode),
                    None => break,
                };
                let slot = posted.slot();
                let opcode_err = |error| PfError::Queue { opcode, error };
                let result = match inner.poll_slot(&mut st, slot, signalled & (1 << slot) != 0) {
                    Ok(None) => {
                        i += 1;
                        continue;
                    }
                    Ok(Some(head)) => {
                        let mut out = vec![0u8; outlen];
                        inner
                            .gather(&st, &posted, head, &mut out)
                            .map(|()| out)
                            .map_err(opcode_err)
                    }
                    Err(e) => Err(opcode_err(e)),
                };
                if result.is_ok() {
                    st.counters.completed += 1;
                } else {
                    st.counters.failed += 1;
                }
                let a = st.asyncs.swap_remove(i);
                finished.push((a.done, result));
            }
        }
        for (done, result) in finished {
            let out = match result {
                Ok(out) => out,
                Err(e) => {
                    inner.record(&e);
                    lost_output(INLINE_LEN)
                }
            };
            if let Some(d) = inner.deliver.get() {
                d(done, out);
            }
        }
    }
}
