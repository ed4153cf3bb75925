//! The register-level PF as a device a driver thread talks to (feature
//! `std`): BAR0 reads and writes from any thread; a doorbell runs its
//! commands at once, except SAVE and LOAD, which a firmware thread runs
//! and completes later (as hardware does: the driver sees their entries
//! handed back while it does other things). With a timing model
//! ([`TimingModel`]) every command goes to the firmware thread, which
//! takes as long as the model says before handing the entry back.
//!
//! A completion is signalled per slot ([`PfDevice::wait_completion`]), the
//! way an EQE of type CMD names completed slots; a driver may also poll
//! the entries in host memory.

use std::boxed::Box;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use std::vec::Vec;

use crate::iommu::Dma;
use crate::timing::TimingModel;
use crate::wire::{be32, opcode};

use super::{MAX_INLEN, MAX_OUTLEN, Pf, reg};

struct State {
    pf: Box<Pf>,
    dma: Box<dyn Dma + Send>,
    scratch_in: Vec<u8>,
    scratch_out: Vec<u8>,
    /// Slots completed and not yet collected by a waiter.
    signalled: u32,
    /// Slots for the firmware thread, in doorbell order.
    queued: VecDeque<u8>,
    stop: bool,
}

struct Shared {
    state: Mutex<State>,
    /// The firmware thread waits here for queued slots.
    work: Condvar,
    /// Waiters for completions.
    signal: Condvar,
    timing: TimingModel,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A register-level PF with its firmware thread.
pub struct PfDevice {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl core::fmt::Debug for PfDevice {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PfDevice").finish_non_exhaustive()
    }
}

impl PfDevice {
    /// A device around `pf`, whose DMA reaches host memory through `dma`.
    ///
    /// # Errors
    /// The firmware thread could not be started.
    pub fn new(
        pf: Box<Pf>,
        dma: Box<dyn Dma + Send>,
        timing: TimingModel,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                pf,
                dma,
                scratch_in: Vec::new(),
                scratch_out: Vec::new(),
                signalled: 0,
                queued: VecDeque::new(),
                stop: false,
            }),
            work: Condvar::new(),
            signal: Condvar::new(),
            timing,
        });
        let worker = Arc::clone(&shared);
        let thread = thread::Builder::new()
            .name("mlx5vf-sim-pf".into())
            .spawn(move || firmware_thread(&worker))?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Reads a BAR0 register.
    pub fn read32(&self, offset: u32) -> u32 {
        self.shared.lock().pf.read32(offset)
    }

    /// Writes a BAR0 register; a doorbell runs (or queues) its commands.
    pub fn write32(&self, offset: u32, value: u32) {
        let mut st = self.shared.lock();
        st.pf.write32(offset, value);
        if offset != reg::CMD_DBELL {
            return;
        }
        let rung = st.pf.take_doorbells();
        for slot in (0u8..32).filter(|s| rung & (1 << s) != 0) {
            let State { pf, dma, .. } = &mut *st;
            let op = pf.peek(slot, dma.as_mut()).map(|p| p.opcode);
            let slow = op == Some(opcode::SAVE_VHCA_STATE) || op == Some(opcode::LOAD_VHCA_STATE);
            if slow || !self.shared.timing.is_off() {
                st.queued.push_back(slot);
                self.shared.work.notify_one();
            } else if run(&mut st, slot).is_some_and(|done| hand_back(&mut st, &done)) {
                st.signalled |= 1 << slot;
                self.shared.signal.notify_all();
            }
        }
    }

    /// Waits until one of the slots in `mask` completes or `timeout`
    /// passes; returns (and forgets) the completed ones.
    pub fn wait_completion(&self, mask: u32, timeout: Duration) -> u32 {
        let start = Instant::now();
        let mut st = self.shared.lock();
        loop {
            let hit = st.signalled & mask;
            if hit != 0 {
                st.signalled &= !hit;
                return hit;
            }
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return 0;
            }
            st = self
                .shared
                .signal
                .wait_timeout(st, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Runs `f` on the model (fault knobs, the firmware, counters).
    pub fn with_pf<R>(&self, f: impl FnOnce(&mut Pf) -> R) -> R {
        f(&mut self.shared.lock().pf)
    }
}

impl Drop for PfDevice {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.work.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The completed entry, not yet handed back.
type Done = super::Executed;

/// Runs slot `slot` with scratch space sized for it.
fn run(st: &mut State, slot: u8) -> Option<Done> {
    let State {
        pf,
        dma,
        scratch_in,
        scratch_out,
        ..
    } = st;
    let peek = pf.peek(slot, dma.as_mut())?;
    // Grow the scratch up to the model's limits; beyond them the command is
    // refused with a length delivery error.
    if peek.inlen <= MAX_INLEN && scratch_in.len() < peek.inlen {
        scratch_in.resize(peek.inlen, 0);
    }
    if peek.outlen <= MAX_OUTLEN && scratch_out.len() < peek.outlen {
        scratch_out.resize(peek.outlen, 0);
    }
    pf.execute(slot, dma.as_mut(), scratch_in, scratch_out)
}

fn hand_back(st: &mut State, done: &Done) -> bool {
    let State { pf, dma, .. } = st;
    pf.hand_back(done, dma.as_mut())
}

fn firmware_thread(shared: &Shared) {
    loop {
        let mut st = shared.lock();
        let slot = loop {
            if st.stop {
                return;
            }
            if let Some(slot) = st.queued.pop_front() {
                break slot;
            }
            st = shared.work.wait(st).unwrap_or_else(PoisonError::into_inner);
        };
        let start = Instant::now();
        let Some(done) = run(&mut st, slot) else {
            continue;
        };
        // What the command moved, for the timing model: SAVE's image size,
        // LOAD's `size` (input dword 7).
        let op = u16::try_from(be32(&st.scratch_in, 0) >> 16).unwrap_or(0);
        let moved = match op {
            opcode::SAVE_VHCA_STATE if done.status() == 0 => be32(done.output_head(), 8),
            opcode::LOAD_VHCA_STATE => be32(&st.scratch_in, 28),
            _ => 0,
        };
        drop(st);
        let cost = shared.timing.cost(op, u64::from(moved));
        if let Some(left) = cost.checked_sub(start.elapsed()) {
            thread::sleep(left);
        }
        let mut st = shared.lock();
        if hand_back(&mut st, &done) {
            st.signalled |= 1 << (done.slot() & 31);
            shared.signal.notify_all();
        }
    }
}
