//! The device loop: one migratable VF, driven by VFIO-style calls.
//!
//! `Device` is the only place that turns the pure parts' decisions
//! ([`vfio`](crate::vfio) arcs, [`save`](crate::save) and
//! [`load`](crate::load) engines) into [`Hal`] calls. It owns the VF's
//! migration state, its saving and resuming files, and every buffer and PD
//! they use.
//!
//! # Calls, by who makes them
//! - **The VFIO side** (under the caller's state lock): [`Device::probe`],
//!   [`Device::set_state`], [`Device::state`], [`Device::data_size`],
//!   [`Device::handle_reset`], [`Device::handle_detach`] /
//!   [`Device::handle_attach`], [`Device::close`].
//! - **Saving files**: `read()` is [`file_ops::read`] (a shim supplies the
//!   lock and the copy through [`file_ops::ReadPort`]); [`Device::poll`],
//!   [`Device::precopy_info`], [`Device::release`].
//! - **Resuming files**: `write()` is [`file_ops::write`] (through
//!   [`file_ops::WritePort`]).
//! - The steps those loops take ([`Device::read_begin`] /
//!   [`Device::read_end`], [`Device::write_plan`] / [`Device::write_small`] /
//!   [`Device::write_commit`]) stay public for tests that drive one step at a
//!   time; a shim has no reason to call them.
//! - **The platform**: [`Device::handle_save_completion`] for every SAVE it
//!   started.
//!
//! # Waiting
//! The core never blocks. Where the Linux driver would sleep until the SAVE
//! in flight completes (suspending the VHCA, an incremental QUERY, leaving
//! PRE_COPY), the call returns [`DeviceError::SaveInFlight`] having changed
//! nothing; the shim waits for the completion and calls again. Closing a file
//! never waits: a buffer still being saved into (or copied out of) is freed
//! when that ends.

mod dirty;
mod error;
pub mod file_ops;
mod resources;
mod resuming;
mod saving;
mod tuning;

pub use dirty::{DIRTY_SCRATCH_LEN, DirtyTracker, REPORT_WAIT_NS, ReportSummary};
pub use error::{DeviceError, SetStateError};
pub use resources::{MAX_BUFFERS, MAX_PDS, MAX_READ_LEASES};
pub use resuming::WritePlan;
pub use saving::{MAX_INLINE, Poll, ReadSegment};

use crate::hal::{Hal, HalError, SaveToken};
use crate::ifc::hca_cap::{CapMode, CapTarget, CapType, Caps, QueryHcaCap};
use crate::ifc::mkey::PAGE_SIZE;
use crate::ifc::vhca::{ResumeVhca, SuspendVhca, VhcaSide};
use crate::ifc::{Command, MAX_FIXED_IN};
use crate::load::LoadConfig;
use crate::save::{
    ChunkPolicy, LINUX_CHUNK_SIZE, LINUX_CHUNK_SLOTS, MAX_SAVE_BUFFER, PrecopyPolicy, SpeedMeter,
};
use crate::stream::{PRODUCER_LEN, StreamInfo};
use crate::vfio::{MigState, MigrationFlags, Path, Session, Step, arc_info};
use resources::{Resources, SessionId};

/// Bytes of scratch [`Device::probe`] needs for QUERY_HCA_CAP's output.
pub const PROBE_SCRATCH_LEN: usize = crate::ifc::MAX_OUT;

/// Largest command output the device reads outside probing
/// (`query_vhca_migration_state_out`).
const MAX_SMALL_OUT: usize = 64;

/// Driver policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Chunk buffer size the saving policy starts with (Linux: 8 MiB).
    pub chunk_size: u64,
    /// Chunk slots (Linux: 2; at most [`MAX_CHUNK_SLOTS`](crate::save::MAX_CHUNK_SLOTS)).
    pub chunk_slots: u8,
    /// Cap on any SAVE buffer.
    pub max_save_buffer: u64,
    /// Resume-side limits.
    pub load: LoadConfig,
    /// Use chunk mode when the device offers it (`false`: legacy mode).
    pub use_chunks: bool,
    /// Offer PRE_COPY when the device supports it.
    pub use_precopy: bool,
    /// Write our stream-info and stream-end records (integrity checking on
    /// the destination); `false` writes exactly what Linux writes.
    pub integrity_records: bool,
    /// How PRE_COPY moves a chunk-mode state (the stream is the same
    /// format either way).
    pub precopy_policy: PrecopyPolicy,
    /// Whether the chunk size stays `chunk_size` or follows the firmware's
    /// measured speed (needs [`Hal::now_ns`]).
    pub chunk_policy: ChunkPolicy,
    /// Producer named in the stream-info record.
    pub producer: [u8; PRODUCER_LEN],
}

impl Default for Config {
    /// The Linux buffer policy (8 MiB chunks, 2 slots) to start with, the
    /// chunk size then tuned to the measured firmware speed within
    /// [`DEFAULT_MEMORY_CAP`](crate::save::DEFAULT_MEMORY_CAP) per side,
    /// our integrity records on and chunked PRE_COPY (what makes PRE_COPY
    /// move a chunk-mode state; [`Config::linux`] is the Linux driver
    /// exactly).
    fn default() -> Self {
        Self {
            chunk_size: LINUX_CHUNK_SIZE,
            chunk_slots: LINUX_CHUNK_SLOTS,
            max_save_buffer: MAX_SAVE_BUFFER,
            load: LoadConfig::default(),
            use_chunks: true,
            use_precopy: true,
            integrity_records: true,
            precopy_policy: PrecopyPolicy::Chunked,
            chunk_policy: ChunkPolicy::Measured {
                memory_cap: crate::save::DEFAULT_MEMORY_CAP,
            },
            producer: StreamInfo::producer_from(concat!("mlx5vf ", env!("CARGO_PKG_VERSION"))),
        }
    }
}

impl Config {
    /// What the Linux driver does: its buffer policy, its PRE_COPY
    /// accounting, no records of ours (the stream is byte-identical).
    pub fn linux() -> Self {
        Self {
            integrity_records: false,
            precopy_policy: PrecopyPolicy::Linux,
            chunk_policy: ChunkPolicy::Fixed,
            ..Self::default()
        }
    }
}

/// What probing found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Probe {
    /// VF index (0-based) on the PF.
    pub vf: u16,
    /// The VF's VHCA id.
    pub vhca_id: u16,
    /// Migration flags to advertise.
    pub flags: MigrationFlags,
    /// Saving uses chunk mode.
    pub chunk_mode: bool,
    /// Device dirty-page tracking exists (`adv_virtualization`).
    pub dirty_tracking: bool,
}

/// A migration file, as handed out by [`Device::set_state`]. Stale handles
/// (their file was closed or replaced) get `ENODEV`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FileId {
    kind: Session,
    session: SessionId,
}

impl FileId {
    /// Saving or resuming.
    pub const fn kind(&self) -> Session {
        self.kind
    }
    /// The handle as a number (for C callers).
    pub const fn to_bits(self) -> u64 {
        let kind = match self.kind {
            Session::Saving => 1u64,
            Session::Resuming => 2u64,
        };
        (kind << 32) | self.session as u64
    }
    /// A handle from a number; `None` for numbers no handle has.
    pub const fn from_bits(bits: u64) -> Option<Self> {
        let kind = match bits >> 32 {
            1 => Session::Saving,
            2 => Session::Resuming,
            _ => return None,
        };
        // CAST: the low 32 bits.
        Some(Self {
            kind,
            session: bits as u32,
        })
    }
}

/// Resource counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DeviceStats {
    /// Bytes of DMA buffers allocated now.
    pub buffer_bytes: u64,
    /// The most ever allocated at once.
    pub peak_buffer_bytes: u64,
    /// Memory keys the platform failed to destroy.
    pub leaked_mkeys: u32,
    /// PDs firmware failed to free.
    pub leaked_pds: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct InFlightSave {
    token: SaveToken,
    buf: u16,
    session: SessionId,
    /// When it started ([`Hal::now_ns`]), to measure the firmware's rate.
    started_ns: Option<core::num::NonZeroU64>,
}

/// The LOAD in flight: what its completion must find (and, when the file
/// closed meanwhile, release: the key, then the segments).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct InFlightLoad {
    token: crate::hal::LoadToken,
    session: SessionId,
    /// The image buffer being LOADed.
    buf: usize,
    mkey: crate::ifc::mkey::Mkey,
    /// Buffer-table indexes of its segments (pinned until the completion).
    segs: [u16; crate::load::MAX_IMAGE_SEGMENTS],
    nsegs: usize,
    /// The resuming file closed while the LOAD ran: the completion unmaps
    /// the key and frees the segments.
    orphaned: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Lease {
    session: SessionId,
    buf: Option<u16>,
}

/// One migratable VF. See the module documentation.
pub struct Device<H: Hal> {
    hal: H,
    cfg: Config,
    probe: Option<Probe>,
    state: MigState,
    detached: bool,
    saving: Option<saving::SavingFile>,
    resuming: Option<resuming::ResumingFile>,
    in_flight: Option<InFlightSave>,
    loading: Option<InFlightLoad>,
    /// Readers copying a segment now: one per file at most, and a file
    /// replaced while its reader copies keeps its lease until the copy ends.
    leases: heapless::Vec<Lease, MAX_READ_LEASES>,
    res: Resources,
    next_session: SessionId,
    next_token: u32,
    /// Outcome of a PRE_COPY cleanup whose SAVE completed, for the retried arc.
    cleanup_done: Option<Result<(), DeviceError>>,
    leaked_mkeys: u32,
    leaked_pds: u32,
    /// Userspace opted in to VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2.
    precopy_info_v2: bool,
    /// What the device measured of its firmware (kept across sessions).
    speed: SpeedMeter,
    /// The chunk size the last saving file ended with.
    last_chunk_size: u64,
}

impl<H: Hal> Device<H> {
    /// A device driven through `hal` with policy `cfg`. Call
    /// [`Device::probe`] next.
    pub fn new(hal: H, cfg: Config) -> Self {
        Self {
            hal,
            cfg,
            probe: None,
            state: MigState::Running,
            detached: false,
            saving: None,
            resuming: None,
            in_flight: None,
            loading: None,
            leases: heapless::Vec::new(),
            res: Resources::new(PAGE_SIZE),
            next_session: 1,
            next_token: 1,
            cleanup_done: None,
            leaked_mkeys: 0,
            leaked_pds: 0,
            precopy_info_v2: false,
            speed: SpeedMeter::NEW,
            last_chunk_size: cfg.chunk_size,
        }
    }

    /// `VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2` (SET): userspace opts in to
    /// the precopy ioctl's output flags, i.e. to `VFIO_PRECOPY_INFO_REINIT`.
    /// Without it [`PrecopyInfo::reinit`](crate::save::PrecopyInfo) is never
    /// set (old userspace echoes the flags word back).
    pub fn set_precopy_info_v2(&mut self, on: bool) {
        self.precopy_info_v2 = on;
    }

    /// The platform.
    pub fn hal(&self) -> &H {
        &self.hal
    }
    /// The platform, mutably (for shims that keep state in it).
    pub fn hal_mut(&mut self) -> &mut H {
        &mut self.hal
    }
    /// The policy.
    pub const fn config(&self) -> &Config {
        &self.cfg
    }
    /// What probing found.
    pub const fn probed(&self) -> Option<&Probe> {
        self.probe.as_ref()
    }
    /// The migration state.
    pub const fn state(&self) -> MigState {
        self.state
    }
    /// The migration flags to advertise (empty before probing).
    pub fn migration_flags(&self) -> MigrationFlags {
        self.probe.map_or(MigrationFlags::new(), |p| p.flags)
    }
    /// Resource counters.
    pub fn stats(&self) -> DeviceStats {
        DeviceStats {
            buffer_bytes: self.res.bytes,
            peak_buffer_bytes: self.res.peak_bytes,
            leaked_mkeys: self.leaked_mkeys,
            leaked_pds: self.leaked_pds,
        }
    }
    /// Nothing is allocated, in flight or leased: the device may be dropped.
    pub fn is_idle(&self) -> bool {
        self.in_flight.is_none()
            && self.loading.is_none()
            && self.leases.is_empty()
            && self.res.is_empty()
    }
    /// Whether a SAVE is in flight.
    pub const fn save_in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Whether an asynchronous LOAD is in flight.
    pub const fn load_in_flight(&self) -> bool {
        self.loading.is_some()
    }

    /// Probes VF `vf` of the PF: migration support, VHCA id, PRE_COPY and
    /// chunk-mode capabilities. `scratch` holds QUERY_HCA_CAP's 4112-byte
    /// output ([`PROBE_SCRATCH_LEN`]); the driver does not keep it. The state
    /// becomes RUNNING.
    ///
    /// Migration needs the PF's `migration` cap and the VF's `migratable`;
    /// PRE_COPY needs `migration_multi_load` and `migration_tracking_state`,
    /// chunk mode `migration_in_chunks`. Linux reads those three from the PF;
    /// this driver requires the VF to report them too (they agree on
    /// hardware; the simulated device can switch them per VF).
    ///
    /// # Errors
    /// [`DeviceError::NotMigratable`] naming the missing capability, or the
    /// command that failed.
    pub fn probe(&mut self, vf: u16, scratch: &mut [u8]) -> Result<Probe, DeviceError> {
        let pf = CapTarget::SelfFunction;
        let this_vf = CapTarget::vf(vf).ok_or(DeviceError::NotMigratable("bad VF index"))?;
        let Caps::General(pf_gen) = self.query_caps(pf, CapType::General, scratch)? else {
            return Err(DeviceError::NotProbed);
        };
        if !pf_gen.migration {
            return Err(DeviceError::NotMigratable(
                "the PF does not report the migration capability",
            ));
        }
        if !pf_gen.hca_cap_2 {
            return Err(DeviceError::NotMigratable(
                "the PF has no general-2 capabilities",
            ));
        }
        // Linux asks about the VF's migratable bit with MAX.
        let Caps::General2(vf_cap2) =
            self.query_caps_mode(this_vf, CapType::General2, CapMode::Max, scratch)?
        else {
            return Err(DeviceError::NotProbed);
        };
        if !vf_cap2.migratable {
            return Err(DeviceError::NotMigratable("the VF is not migratable"));
        }
        let Caps::General(vf_gen) = self.query_caps(this_vf, CapType::General, scratch)? else {
            return Err(DeviceError::NotProbed);
        };
        let Caps::General2(pf_cap2) = self.query_caps(pf, CapType::General2, scratch)? else {
            return Err(DeviceError::NotProbed);
        };
        let precopy = pf_cap2.migration_multi_load
            && pf_cap2.migration_tracking_state
            && vf_cap2.migration_multi_load
            && vf_cap2.migration_tracking_state
            && self.cfg.use_precopy;
        let chunk_mode =
            pf_cap2.migration_in_chunks && vf_cap2.migration_in_chunks && self.cfg.use_chunks;
        let probe = Probe {
            vf,
            vhca_id: vf_gen.vhca_id,
            flags: MigrationFlags::STOP_COPY_P2P.with_pre_copy(precopy),
            chunk_mode,
            dirty_tracking: pf_gen.adv_virtualization,
        };
        self.probe = Some(probe);
        self.state = MigState::Running;
        Ok(probe)
    }

    fn query_caps(
        &mut self,
        target: CapTarget,
        cap: CapType,
        scratch: &mut [u8],
    ) -> Result<Caps, DeviceError> {
        self.query_caps_mode(target, cap, CapMode::Current, scratch)
    }

    fn query_caps_mode(
        &mut self,
        target: CapTarget,
        cap: CapType,
        mode: CapMode,
        scratch: &mut [u8],
    ) -> Result<Caps, DeviceError> {
        if self.detached {
            return Err(DeviceError::Detached);
        }
        let q = QueryHcaCap { target, cap, mode };
        let mut input = [0u8; MAX_FIXED_IN];
        let n = q.encode(&mut input)?;
        let out = scratch
            .get_mut(..QueryHcaCap::OUT_SIZE)
            .ok_or(DeviceError::TableFull)?;
        out.fill(0);
        self.hal
            .exec(input.get(..n).unwrap_or_default(), out)
            .map_err(|e| DeviceError::Platform(e.kind()))?;
        Ok(q.decode(out)?)
    }

    /// Runs a fixed-size command synchronously.
    fn exec<C: Command>(&mut self, cmd: &C) -> Result<C::Output, DeviceError> {
        let mut input = [0u8; MAX_FIXED_IN];
        let n = cmd.encode(&mut input)?;
        let mut out = [0u8; MAX_SMALL_OUT];
        let out = out.get_mut(..C::OUT_SIZE).ok_or(DeviceError::TableFull)?;
        self.hal
            .exec(input.get(..n).unwrap_or_default(), out)
            .map_err(|e| DeviceError::Platform(e.kind()))?;
        Ok(cmd.decode(out)?)
    }

    /// A command addressed to the VF: refused while detached.
    fn exec_vf<C: Command>(&mut self, cmd: &C) -> Result<C::Output, DeviceError> {
        if self.detached {
            return Err(DeviceError::Detached);
        }
        self.exec(cmd)
    }

    fn probed_vhca(&self) -> Result<u16, DeviceError> {
        self.probe.map(|p| p.vhca_id).ok_or(DeviceError::NotProbed)
    }

    fn no_save_in_flight(&self) -> Result<(), DeviceError> {
        if self.in_flight.is_some() {
            Err(DeviceError::SaveInFlight)
        } else {
            Ok(())
        }
    }

    /// Neither a SAVE nor a LOAD runs (commands to the VHCA wait for both).
    fn quiet(&self) -> Result<(), DeviceError> {
        self.no_save_in_flight()?;
        if self.loading.is_some() {
            Err(DeviceError::LoadInFlight)
        } else {
            Ok(())
        }
    }

    fn new_session(&mut self) -> SessionId {
        let id = self.next_session;
        self.next_session = self.next_session.wrapping_add(1).max(1);
        id
    }

    /// Walks to `target` one arc at a time, as Linux's
    /// `mlx5vf_pci_set_device_state()` does. Returns the new data file when
    /// the target opens one (STOP_COPY from STOP, PRE_COPY(_P2P), RESUMING).
    ///
    /// # Errors
    /// The error and the state reached. [`DeviceError::SaveInFlight`] means
    /// "wait for the SAVE completion, then call again": the walk continues
    /// from where it stopped.
    pub fn set_state(&mut self, target: MigState) -> Result<Option<FileId>, SetStateError> {
        let flags = self.migration_flags();
        let fail = |reached, error| SetStateError { reached, error };
        if self.probe.is_none() {
            return Err(fail(self.state, DeviceError::NotProbed));
        }
        let mut file = None;
        for arc in Path::new(self.state, target, flags) {
            let arc = arc.map_err(|e| fail(self.state, e.into()))?;
            let info = arc_info(arc.from, arc.to).ok_or_else(|| {
                fail(
                    self.state,
                    DeviceError::Transition(crate::vfio::TransitionError::NoPath {
                        from: arc.from,
                        to: arc.to,
                    }),
                )
            })?;
            let opened = self.run_arc(info.steps).map_err(|e| {
                crate::macros::trace_warn!("mlx5vf: arc {}=>{} failed: {}", arc.from, arc.to, e);
                fail(self.state, e)
            })?;
            crate::macros::trace!("mlx5vf: state {}=>{}", arc.from, arc.to);
            self.state = arc.to;
            // Chunked PRE_COPY chains chunks only while the VF runs.
            if let Some(f) = self.saving.as_mut() {
                match (arc.from, arc.to) {
                    (MigState::PreCopy, MigState::PreCopyP2p) => f.engine.pause_precopy(),
                    (MigState::PreCopyP2p, MigState::PreCopy) => f.engine.resume_precopy(),
                    _ => {}
                }
            }
            if opened.is_some() {
                // Only the last arc of a walk opens a file (see vfio tests).
                file = opened;
            }
        }
        Ok(file)
    }

    fn run_arc(&mut self, steps: &[Step]) -> Result<Option<FileId>, DeviceError> {
        // Steps that talk to the VHCA must not overlap a SAVE; check up front
        // so a retried arc never repeats a step that already ran.
        let needs_quiet = steps.iter().any(|s| {
            matches!(
                s,
                Step::Suspend(_) | Step::Resume(_) | Step::OpenSaving(_) | Step::FinalSave
            )
        });
        // A LOAD of a file closed meanwhile still holds its segments: a new
        // resuming file waits for it (the buffer table counts on that).
        if steps.contains(&Step::OpenResuming) && self.loading.is_some() {
            return Err(DeviceError::LoadInFlight);
        }
        // Leaving PRE_COPY: chunked PRE_COPY stops chaining first, so the
        // SAVE in flight (if any) is the last one this waits for.
        if steps
            .iter()
            .any(|s| matches!(s, Step::FinalSave | Step::PreCopyCleanup))
        {
            if let Some(f) = self.saving.as_mut() {
                f.engine.pause_precopy();
            }
        }
        if needs_quiet {
            self.quiet()?;
        }
        let mut opened = None;
        for step in steps {
            match *step {
                Step::Suspend(side) => self.suspend(side)?,
                Step::Resume(side) => self.resume(side)?,
                Step::OpenSaving(mode) => opened = Some(self.open_saving(mode)?),
                Step::FinalSave => self.final_save()?,
                Step::PreCopyCleanup => self.precopy_cleanup()?,
                Step::CloseSaving => self.close_saving(),
                Step::OpenResuming => opened = Some(self.open_resuming()?),
                Step::FinishResuming => self.finish_resuming()?,
            }
        }
        Ok(opened)
    }

    fn suspend(&mut self, side: VhcaSide) -> Result<(), DeviceError> {
        let vhca_id = self.probed_vhca()?;
        self.exec_vf(&SuspendVhca { vhca_id, side })
    }

    fn resume(&mut self, side: VhcaSide) -> Result<(), DeviceError> {
        let vhca_id = self.probed_vhca()?;
        self.exec_vf(&ResumeVhca { vhca_id, side })
    }

    /// VFIO_DEVICE_FEATURE_MIG_DATA_SIZE: bytes the stop-copy phase will
    /// produce (chunk mode: `remaining_total_size`, else `required_umem_size`).
    ///
    /// # Errors
    /// The QUERY failed.
    pub fn data_size(&mut self) -> Result<u64, DeviceError> {
        let vhca_id = self.probed_vhca()?;
        let chunked = self.probe.is_some_and(|p| p.chunk_mode);
        let q = crate::ifc::migration::QueryMigrationState {
            vhca_id,
            scope: crate::ifc::migration::Scope::Full,
            chunked,
        };
        let size = self.exec_vf(&q)?;
        Ok(if chunked {
            size.remaining_total_size
        } else {
            u64::from(size.required_umem_size)
        })
    }

    /// A PCI reset of the VF completed (VFIO `reset_done`): the state becomes
    /// RUNNING and both files close. The shim calls this when it holds the
    /// state lock, which gives Linux's deferred-reset behaviour.
    pub fn handle_reset(&mut self) {
        self.state = MigState::Running;
        self.cleanup_done = None;
        self.close_saving();
        self.close_resuming();
    }

    /// The PF is disabling the VF: close both files (while commands still
    /// reach firmware), then refuse every VF command with `ENOTCONN`.
    pub fn handle_detach(&mut self) {
        self.close_saving();
        self.close_resuming();
        self.detached = true;
    }

    /// The PF re-enabled the VF.
    pub fn handle_attach(&mut self) {
        self.detached = false;
    }

    /// Whether the VF is detached.
    pub const fn is_detached(&self) -> bool {
        self.detached
    }

    /// VFIO `close_device`: close both files. The state is set to RUNNING at
    /// the next open (as Linux's `open_device` does).
    pub fn close(&mut self) {
        self.close_saving();
        self.close_resuming();
        self.cleanup_done = None;
    }

    /// VFIO `open_device`: the device starts RUNNING.
    pub fn open(&mut self) {
        self.state = MigState::Running;
    }

    fn next_token(&mut self, session: SessionId) -> SaveToken {
        SaveToken(self.next_token_bits(session))
    }

    /// A token no earlier command of this device used: the session in the
    /// high half, a sequence number in the low half.
    fn next_token_bits(&mut self, session: SessionId) -> u64 {
        let seq = self.next_token;
        self.next_token = self.next_token.wrapping_add(1);
        (u64::from(session) << 32) | u64::from(seq)
    }
}

impl<H: Hal> core::fmt::Debug for Device<H> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Device")
            .field("state", &self.state)
            .field("probe", &self.probe)
            .field("detached", &self.detached)
            .field("saving", &self.saving.is_some())
            .field("resuming", &self.resuming.is_some())
            .field("in_flight", &self.in_flight)
            .field("loading", &self.loading)
            .finish_non_exhaustive()
    }
}
