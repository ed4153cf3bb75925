//! The firmware model: one PF (function 0) and its VFs, answering command
//! bytes exactly as firmware would.
//!
//! # Functions and ids
//! VF `n` is `function_id` n + 1 and has `vhca_id` `0x100 + 3n + 1` (never
//! its function id, so a driver that mixes them up is refused with
//! `UnknownVhca`). The PF itself has vhca_id 0 and is not migratable.
//!
//! # Command execution
//! [`Firmware::exec`] takes the raw big-endian `_in` bytes (with the MTT list
//! for CREATE_MKEY) and an output buffer the caller sized for the `_out`
//! structure. It zeroes the output, then always reports status (byte 0) and
//! syndrome (bytes 4..8, see [`crate::Syndrome`]). Checks run in this order:
//! input ≥ 16 bytes → known opcode → armed fault → input ≥ `_in` size →
//! output ≥ `_out` size → `uid` = 0 → op_mod → reserved bits → the command's
//! own rules. A failed command changes nothing.
//!
//! # Migration model
//! - **VHCA state** per VF: Running → SUSPEND(INITIATOR = 0) →
//!   InitiatorSuspended → SUSPEND(RESPONDER = 1) → Suspended; RESUME
//!   (RESPONDER = 0): Suspended → InitiatorSuspended; RESUME (INITIATOR = 1):
//!   InitiatorSuspended → Running. Any other arc is BAD_RES_STATE_ERR.
//! - **Workload**: while a VF runs (Running or InitiatorSuspended) one tick
//!   happens at the start of every QUERY and SAVE addressed to it (and on
//!   [`Firmware::tick`]), dirtying `dirty_per_tick` bytes' worth of
//!   PRNG-chosen objects (version + 1).
//! - **SAVE** (`incremental`, `set_track`):
//!   - running VF: `inc=0 track=1` starts a full image and tracking (dirty set
//!     cleared); `inc=1` (tracking on) adds the dirty set to the pending set;
//!     `inc=0 track=0` with tracking on is the PRE_COPY cleanup (tracking off,
//!     pending dropped, `actual_image_size` 0); anything else is
//!     BAD_RES_STATE_ERR;
//!   - suspended VF: `inc=0` starts a full image; `inc=1` continues the open
//!     session (dirty objects join the pending ones); `set_track` decides
//!     whether tracking stays on (0 = the final save).
//!
//!   A SAVE writes one image (see [`crate::image`]) of whole pending objects
//!   in index order. With chunk mode (PF and VF `migration_in_chunks`) it
//!   packs as many as fit `size` and reports `next_required_umem_size` (image
//!   header + the next pending record, 0 when none is left); without it the
//!   whole image must fit. A buffer too small for the next object is
//!   BAD_PARAM_ERR on a suspended VF and BAD_RES_STATE_ERR while it runs (the
//!   state grew since QUERY: the driver's PRE_COPY_ERROR path).
//! - **QUERY** (`incremental`, `chunk`): `inc=0` describes a fresh full
//!   image, `inc=1` the pending ∪ dirty objects (needs an open session).
//!   `chunk=1`: `required_umem_size` = image header + the next record,
//!   `remaining_total_size` = header + all those records (a fresh full
//!   state: exactly `state_size`). `chunk=0`: `required_umem_size` = the
//!   whole image (BAD_PARAM_ERR `ImageExceeds32Bit` above `u32::MAX`), and
//!   `remaining_total_size` = 0. An incremental QUERY with nothing pending
//!   or dirty reports 0 and 0 (a SAVE would still write an 80-byte,
//!   record-less continuation image).
//! - The PRE_COPY cleanup SAVE does no DMA and does not check its buffer.
//! - **LOAD** (Suspended VFs only) verifies the image completely before
//!   changing anything. A full-start image replaces the VF's state with the
//!   source's (any seed, size or VF); continuation images must follow in
//!   session and sequence order. Without `migration_multi_load` a VF
//!   accepts one image (in as many chunks as it takes) per load session.
//!   RESUME(RESPONDER) closes the session and is refused while objects are
//!   missing.
//! - A refused LOAD leaves the destination untouched, except in one case the
//!   sim cannot rule out: the host's memory failing or changing between the
//!   verify and apply passes of one LOAD (reported as INT_ERR).

mod commands;
mod config;
mod memory;
mod tracker;
mod vf;

pub use config::{ConfigError, FirmwareConfig, MAX_VFS, PfConfig, VfConfig};
pub use memory::{MAX_MKEY_PAGES, MAX_MKEYS, MAX_PDS, MAX_RUNS_PER_MKEY, MAX_RUNS_TOTAL};
pub use vf::{LoadProgress, SuspendState, VhcaState};

use core::fmt;

use crate::fault::Faults;
use crate::iommu::{IommuError, IommuTable};
use crate::objects::{Digest, Layout, mix64};
use crate::wire::opcode;

use memory::Memory;
use vf::{Vf, VfTable};

/// `exec` could not report anything: the output is shorter than 16 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExecError {
    /// The output buffer cannot hold status and syndrome.
    OutputTooShort,
}

impl fmt::Display for ExecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("command output buffer shorter than 16 bytes")
    }
}

impl core::error::Error for ExecError {}

/// Live resources, so tests can assert that nothing leaked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Accounting {
    /// Allocated PDs.
    pub pds: u32,
    /// Live mkeys.
    pub mkeys: u32,
    /// Bytes covered by live mkeys.
    pub mkey_bytes: u64,
    /// Live IOMMU mappings.
    pub iommu_mappings: u32,
    /// Bytes mapped in the IOMMU.
    pub iommu_bytes: u64,
}

impl Accounting {
    /// Nothing live.
    pub const ZERO: Self = Self {
        pds: 0,
        mkeys: 0,
        mkey_bytes: 0,
        iommu_mappings: 0,
        iommu_bytes: 0,
    };

    /// `true` when nothing is live.
    #[must_use]
    pub fn is_zero(&self) -> bool {
        *self == Self::ZERO
    }
}

/// Counter slots: one per implemented opcode, plus one for the rest.
const COUNTERS: usize = opcode::ALL.len() + 1;

/// A simulated PF with its VFs.
///
/// The struct holds every object version of every VF inline (no allocation),
/// about 180 KiB: keep it in a `Box` or a `static` rather than on a small
/// stack. Where there is no heap (a kernel module), start from
/// [`Firmware::EMPTY`] in static memory and [`configure`](Firmware::configure)
/// it in place: neither builds anything large on the stack.
#[derive(Clone, Debug)]
pub struct Firmware {
    pf: PfConfig,
    vfs: VfTable,
    memory: Memory,
    iommu: IommuTable,
    faults: Faults,
    counters: [u64; COUNTERS],
    sessions: u64,
    tracker: crate::tracker::TrackerModel,
}

impl Firmware {
    /// Build the PF and its VFs, each VF running with its initial state.
    ///
    /// # Errors
    /// [`ConfigError`] when there are no or too many VFs, or a VF's state
    /// parameters describe no valid state.
    pub fn new(config: &FirmwareConfig) -> Result<Self, ConfigError> {
        let mut fw = Self::EMPTY;
        fw.configure(config)?;
        Ok(fw)
    }

    /// A PF with no VFs, every command refused until
    /// [`configure`](Self::configure); usable as a `static` initialiser.
    pub const EMPTY: Self = Self {
        pf: PfConfig::DEFAULT,
        vfs: VfTable::EMPTY,
        memory: Memory::EMPTY,
        iommu: IommuTable::new(),
        faults: Faults::EMPTY,
        counters: [0; COUNTERS],
        sessions: 0,
        tracker: crate::tracker::TrackerModel::EMPTY,
    };

    /// Rebuilds this firmware from `config` in place, as [`new`](Self::new)
    /// builds a fresh one: every VF running with its initial state, no PDs,
    /// mkeys, mappings, faults or counters. On an error nothing changes.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn configure(&mut self, config: &FirmwareConfig) -> Result<(), ConfigError> {
        if config.vfs.is_empty() {
            return Err(ConfigError::NoVfs);
        }
        // Check every VF before touching anything.
        for (n, cfg) in config.vfs.iter().enumerate() {
            // CAST: n < MAX_VFS.
            Layout::new(cfg.gen_params()).map_err(|error| ConfigError::Layout {
                vf: n as u16,
                error,
            })?;
        }
        self.pf = config.pf;
        self.vfs.clear();
        for (n, cfg) in config.vfs.iter().enumerate() {
            // CAST: n < MAX_VFS.
            let n = n as u16;
            let layout = Layout::new(cfg.gen_params())
                .map_err(|error| ConfigError::Layout { vf: n, error })?;
            self.vfs
                .push_with(|v| v.configure(n, &config.pf, cfg, layout))
                .ok_or(ConfigError::TooManyVfs)?;
        }
        self.memory.clear();
        self.iommu.clear();
        self.faults.clear();
        self.counters.fill(0);
        self.sessions = 0;
        self.tracker.reset();
        Ok(())
    }

    /// Register `[iova, iova + len)` as mapped for device DMA.
    ///
    /// # Errors
    /// [`IommuError`] for zero, misaligned, overflowing or overlapping
    /// ranges, or a full table.
    pub fn iommu_map(&mut self, iova: u64, len: u64) -> Result<(), IommuError> {
        self.iommu.map(iova, len)
    }

    /// Remove every mapping inside `[iova, iova + len)`.
    ///
    /// # Errors
    /// [`IommuError`] when the range covers no mapping or cuts through one.
    pub fn iommu_unmap(&mut self, iova: u64, len: u64) -> Result<(), IommuError> {
        self.iommu.unmap(iova, len)
    }

    /// Whether the device may touch `[iova, iova + len)`: it lies inside
    /// one mapping registered with [`iommu_map`](Self::iommu_map). The
    /// register-level PF ([`crate::pf`]) checks this before each access to
    /// its queue, mailboxes and pages, as [`Dma`](crate::Dma)'s contract
    /// asks.
    #[must_use]
    pub fn dma_reachable(&self, iova: u64, len: u64) -> bool {
        self.iommu.mapped_run(iova) >= len
    }

    /// Frees every PD and mkey, as a function's teardown does
    /// (TEARDOWN_HCA of the register-level PF, [`crate::pf`]).
    pub fn release_resources(&mut self) {
        self.memory.clear();
    }

    /// Number of VFs.
    #[must_use]
    pub fn vf_count(&self) -> u16 {
        // CAST: at most MAX_VFS.
        self.vfs.len() as u16
    }

    /// The vhca_id of VF `vf`.
    #[must_use]
    pub fn vhca_id(&self, vf: u16) -> Option<u16> {
        self.vf(vf).map(|v| v.vhca_id)
    }

    /// The digest of VF `vf`'s state (see [`crate::objects`]).
    #[must_use]
    pub fn digest(&self, vf: u16) -> Option<Digest> {
        self.vf(vf).map(Vf::digest)
    }

    /// The generator layout of VF `vf`'s current state.
    #[must_use]
    pub fn layout(&self, vf: u16) -> Option<Layout> {
        self.vf(vf).map(|v| *v.store().layout())
    }

    /// Live resources.
    #[must_use]
    pub fn accounting(&self) -> Accounting {
        let n = |x: usize| u32::try_from(x).unwrap_or(u32::MAX);
        Accounting {
            pds: n(self.memory.pd_count()),
            mkeys: n(self.memory.mkey_count()),
            mkey_bytes: self.memory.mkey_bytes(),
            iommu_mappings: n(self.iommu.count()),
            iommu_bytes: self.iommu.bytes(),
        }
    }

    /// The fault knobs.
    pub fn faults_mut(&mut self) -> &mut Faults {
        &mut self.faults
    }

    /// Commands of `opcode` executed so far (failed ones included; any
    /// unimplemented opcode counts in one shared slot).
    #[must_use]
    pub fn command_count(&self, opcode: u16) -> u64 {
        self.counters
            .get(counter_slot(opcode))
            .copied()
            .unwrap_or(0)
    }

    /// Advance VF `vf`'s guest workload by `ticks` (no effect unless it runs).
    pub fn tick(&mut self, vf: u16, ticks: u32) {
        if let Some(v) = self.vf_mut(vf) {
            v.tick(ticks);
        }
    }

    /// FLR-like reset of VF `vf`: Running, tracking off, pending objects and
    /// partial-load progress dropped; the objects are kept.
    pub fn reset_vf(&mut self, vf: u16) {
        if let Some(v) = self.vf_mut(vf) {
            v.reset();
        }
    }

    /// Detach VF `vf`: every command addressed to it fails (BAD_PARAM_ERR,
    /// `VfDetached`) until [`attach_vf`](Self::attach_vf).
    pub fn detach_vf(&mut self, vf: u16) {
        if let Some(v) = self.vf_mut(vf) {
            v.attached = false;
        }
    }

    /// Re-attach VF `vf`.
    pub fn attach_vf(&mut self, vf: u16) {
        if let Some(v) = self.vf_mut(vf) {
            v.attached = true;
        }
    }

    /// VF `vf`'s migration state.
    #[must_use]
    pub fn vf_state(&self, vf: u16) -> Option<VhcaState> {
        self.vf(vf).map(Vf::state)
    }

    fn vf(&self, vf: u16) -> Option<&Vf> {
        self.vfs.get(usize::from(vf))
    }

    fn vf_mut(&mut self, vf: u16) -> Option<&mut Vf> {
        self.vfs.get_mut(usize::from(vf))
    }
}

/// A fresh, deterministic save-session id (the counter is per firmware).
fn session_id(counter: &mut u64, vhca_id: u16) -> u64 {
    *counter = counter.wrapping_add(1);
    mix64(*counter ^ (u64::from(vhca_id) << 48) ^ 0x7365_7373_696f_6e00)
}

/// The counter slot of `opcode`.
fn counter_slot(op: u16) -> usize {
    opcode::ALL
        .iter()
        .position(|o| *o == op)
        .unwrap_or(opcode::ALL.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::boxed::Box;

    /// The documented bound; it keeps `Firmware::new` + `Box::new` within a
    /// 2 MiB test thread's stack even without optimisation.
    #[test]
    fn firmware_stays_small() {
        let size = core::mem::size_of::<Firmware>();
        assert!(size < 200 * 1024, "Firmware is {size} bytes");
    }

    fn config(spec: &str) -> FirmwareConfig {
        FirmwareConfig::from_spec(&spec.parse().unwrap())
    }

    /// In-place configuration gives what `new` gives, and reconfiguring a
    /// used firmware forgets everything it held.
    #[test]
    fn configure_in_place_equals_new() {
        let cfg = config("sim:state=3M,seed=7,vfs=2");
        let fresh = Box::new(Firmware::new(&cfg).unwrap());
        let mut fw = Box::new(Firmware::EMPTY);
        assert_eq!(fw.vf_count(), 0);
        assert_eq!(fw.digest(0), None);
        fw.configure(&cfg).unwrap();
        assert_eq!(fw.vf_count(), 2);
        for vf in 0..2 {
            assert_eq!(fw.digest(vf), fresh.digest(vf));
            assert_eq!(fw.vf_state(vf), fresh.vf_state(vf));
        }
        // Use it: a mapping, a fault, a detached VF, a different state.
        fw.iommu_map(0x10_0000, 4096).unwrap();
        fw.faults_mut().fail_nth(0x118, 1, 3, 1).unwrap();
        fw.detach_vf(1);
        fw.reset_vf(0);
        fw.configure(&cfg).unwrap();
        assert!(fw.accounting().is_zero());
        assert!(fw.faults_mut().is_idle());
        assert_eq!(fw.vf_state(1), fresh.vf_state(1));
        assert_eq!(fw.digest(1), fresh.digest(1));
    }

    #[test]
    fn a_refused_configuration_changes_nothing() {
        let mut fw = Box::new(Firmware::new(&config("sim:state=1M,seed=3")).unwrap());
        let before = fw.digest(0);
        let mut bad = config("sim:state=1M,seed=3");
        bad.vfs.clear();
        assert_eq!(fw.configure(&bad), Err(ConfigError::NoVfs));
        // VF 0 fine, VF 1 impossible: VF 0 must not be rebuilt either.
        let mut bad = config("sim:state=2M,seed=9,vfs=2");
        bad.vfs[1].object_min = bad.vfs[1].object_max + 1;
        assert!(matches!(
            fw.configure(&bad),
            Err(ConfigError::Layout { vf: 1, .. })
        ));
        assert_eq!(fw.vf_count(), 1);
        assert_eq!(fw.digest(0), before);
    }
}
