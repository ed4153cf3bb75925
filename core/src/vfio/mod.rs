//! The VFIO device migration states and the graph the Linux VFIO core walks.
//!
//! [`next_state`] answers exactly what Linux's `vfio_mig_get_next_state()`
//! answers (including the 2026 fix: a walk that would reach ERROR is an
//! invalid transition, never a loop). [`Path`] walks a whole request one arc
//! at a time, and [`arc_info`] says what each arc means for an mlx5 driver: the
//! firmware commands it takes, whether it opens or ends a data session. The
//! device loop dispatches on [`arc_info`], so this module is the single source
//! of that knowledge.

use core::fmt;

use bitfield_struct::bitfield;

use crate::ifc::vhca::VhcaSide;

/// `enum vfio_device_mig_state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u32)]
pub enum MigState {
    /// The device failed and must be reset; never requested.
    Error = 0,
    /// Stopped: no DMA, no interrupts, internal state frozen.
    Stop = 1,
    /// Fully running.
    Running = 2,
    /// Stopped, with the internal state streaming out on the data fd.
    StopCopy = 3,
    /// Stopped, loading state written to the data fd.
    Resuming = 4,
    /// Running, but initiating no peer-to-peer DMA.
    RunningP2p = 5,
    /// Running, tracking changes, with state streaming out.
    PreCopy = 6,
    /// PRE_COPY plus P2P quiescence.
    PreCopyP2p = 7,
}

/// Number of states (`VFIO_DEVICE_STATE_NR`).
pub const NUM_STATES: usize = 8;

impl MigState {
    /// All states, by uAPI value.
    pub const ALL: [Self; NUM_STATES] = [
        Self::Error,
        Self::Stop,
        Self::Running,
        Self::StopCopy,
        Self::Resuming,
        Self::RunningP2p,
        Self::PreCopy,
        Self::PreCopyP2p,
    ];

    /// The uAPI value.
    pub const fn raw(self) -> u32 {
        self as u32
    }

    /// The state for a uAPI value.
    ///
    /// # Errors
    /// [`UnknownState`] for values of 8 and above.
    pub const fn from_raw(raw: u32) -> Result<Self, UnknownState> {
        Ok(match raw {
            0 => Self::Error,
            1 => Self::Stop,
            2 => Self::Running,
            3 => Self::StopCopy,
            4 => Self::Resuming,
            5 => Self::RunningP2p,
            6 => Self::PreCopy,
            7 => Self::PreCopyP2p,
            other => return Err(UnknownState(other)),
        })
    }

    /// The name the command line uses: `stop-copy`, `running-p2p`, …
    pub const fn name(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Stop => "stop",
            Self::Running => "running",
            Self::StopCopy => "stop-copy",
            Self::Resuming => "resuming",
            Self::RunningP2p => "running-p2p",
            Self::PreCopy => "pre-copy",
            Self::PreCopyP2p => "pre-copy-p2p",
        }
    }

    /// Parses a command-line name (see [`MigState::name`]); the uAPI name
    /// (`STOP_COPY`, any case) is accepted too.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|s| s.name() == name || s.uapi_name().eq_ignore_ascii_case(name))
    }

    /// The uAPI name without the `VFIO_DEVICE_STATE_` prefix.
    pub const fn uapi_name(self) -> &'static str {
        match self {
            Self::Error => "ERROR",
            Self::Stop => "STOP",
            Self::Running => "RUNNING",
            Self::StopCopy => "STOP_COPY",
            Self::Resuming => "RESUMING",
            Self::RunningP2p => "RUNNING_P2P",
            Self::PreCopy => "PRE_COPY",
            Self::PreCopyP2p => "PRE_COPY_P2P",
        }
    }

    /// The migration flags a device needs for this state to exist
    /// (`vfio_main.c`'s `state_flags_table`); `None` for ERROR, which no
    /// flag set supports.
    pub const fn required_flags(self) -> Option<MigrationFlags> {
        let stop_copy = MigrationFlags::new().with_stop_copy(true);
        Some(match self {
            Self::Error => return None,
            Self::Stop | Self::Running | Self::StopCopy | Self::Resuming => stop_copy,
            Self::RunningP2p => stop_copy.with_p2p(true),
            Self::PreCopy => stop_copy.with_pre_copy(true),
            Self::PreCopyP2p => stop_copy.with_p2p(true).with_pre_copy(true),
        })
    }

    /// Whether a device with `flags` supports this state.
    pub const fn is_supported(self, flags: MigrationFlags) -> bool {
        match self.required_flags() {
            Some(req) => req.into_bits() & flags.into_bits() == req.into_bits(),
            None => false,
        }
    }

    /// PRE_COPY, PRE_COPY_P2P and STOP_COPY share one data fd.
    pub const fn is_saving_group(self) -> bool {
        matches!(self, Self::PreCopy | Self::PreCopyP2p | Self::StopCopy)
    }
}

impl fmt::Display for MigState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.uapi_name())
    }
}

/// A `u32` that is not a migration state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct UnknownState(pub u32);

impl fmt::Display for UnknownState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown migration state {}", self.0)
    }
}

impl core::error::Error for UnknownState {}

impl TryFrom<u32> for MigState {
    type Error = UnknownState;
    fn try_from(raw: u32) -> Result<Self, UnknownState> {
        Self::from_raw(raw)
    }
}

/// `vfio_device_feature_migration.flags`: which optional parts of the
/// protocol a device supports.
#[bitfield(u64, defmt = cfg(feature = "defmt"))]
#[derive(PartialEq, Eq, Hash)]
pub struct MigrationFlags {
    /// `VFIO_MIGRATION_STOP_COPY`: STOP, STOP_COPY and RESUMING (mandatory).
    pub stop_copy: bool,
    /// `VFIO_MIGRATION_P2P`: RUNNING_P2P.
    pub p2p: bool,
    /// `VFIO_MIGRATION_PRE_COPY`: PRE_COPY (and PRE_COPY_P2P with P2P).
    pub pre_copy: bool,
    #[bits(61)]
    __: u64,
}

impl MigrationFlags {
    /// STOP_COPY | P2P, what every mlx5 migratable VF offers.
    pub const STOP_COPY_P2P: Self = Self::new().with_stop_copy(true).with_p2p(true);
    /// STOP_COPY | P2P | PRE_COPY, with the multi-load and tracking caps.
    pub const ALL: Self = Self::STOP_COPY_P2P.with_pre_copy(true);
}

/// Why a transition was refused. `vfio_mig_get_next_state()` returns
/// `-EINVAL` for each of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum TransitionError {
    /// The current state is ERROR or not supported by the device.
    UnsupportedCurrent(MigState),
    /// The target is ERROR or not supported by the device.
    UnsupportedTarget(MigState),
    /// No path: the walk reaches ERROR (e.g. STOP_COPY → PRE_COPY).
    NoPath {
        /// Where the walk starts.
        from: MigState,
        /// The requested state.
        to: MigState,
    },
}

impl fmt::Display for TransitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnsupportedCurrent(s) => write!(f, "current state {s} is not usable"),
            Self::UnsupportedTarget(s) => {
                write!(f, "state {s} cannot be requested on this device")
            }
            Self::NoPath { from, to } => write!(f, "no transition from {from} to {to}"),
        }
    }
}

impl core::error::Error for TransitionError {}

use MigState::{
    Error as E, PreCopy as PC, PreCopyP2p as PCP, Resuming as RE, Running as RU, RunningP2p as RP,
    Stop as ST, StopCopy as SC,
};

/// `vfio_from_fsm_table`: the next step from `cur` (row) toward `new`
/// (column) on a device with every optional state.
const FSM: [[MigState; NUM_STATES]; NUM_STATES] = [
    // new:  ERROR STOP RUNNING STOP_COPY RESUMING RUNNING_P2P PRE_COPY PRE_COPY_P2P
    [E, E, E, E, E, E, E, E],          // ERROR
    [E, ST, RP, SC, RE, RP, RP, RP],   // STOP
    [E, RP, RU, RP, RP, RP, PC, RP],   // RUNNING
    [E, ST, ST, SC, ST, ST, E, E],     // STOP_COPY
    [E, ST, ST, ST, RE, ST, ST, ST],   // RESUMING
    [E, ST, RU, ST, ST, RP, RU, PCP],  // RUNNING_P2P
    [E, RU, RU, PCP, RU, RU, PC, PCP], // PRE_COPY
    [E, RP, RP, SC, RP, RP, PC, PCP],  // PRE_COPY_P2P
];

fn table(cur: MigState, new: MigState) -> MigState {
    // PANIC: none; both indices are enum discriminants below NUM_STATES and the
    // lookups go through `get`.
    FSM.get(cur as usize)
        .and_then(|row| row.get(new as usize))
        .copied()
        .unwrap_or(MigState::Error)
}

/// The next state on the way from `cur` to `new` for a device with `flags`:
/// what Linux's `vfio_mig_get_next_state()` returns. `cur == new` returns `cur`.
///
/// ```
/// use mlx5vf_core::vfio::{next_state, MigState, MigrationFlags};
/// let all = MigrationFlags::ALL;
/// assert_eq!(next_state(MigState::Running, MigState::StopCopy, all), Ok(MigState::RunningP2p));
/// assert!(next_state(MigState::StopCopy, MigState::PreCopy, all).is_err());
/// ```
///
/// # Errors
/// See [`TransitionError`].
pub fn next_state(
    cur: MigState,
    new: MigState,
    flags: MigrationFlags,
) -> Result<MigState, TransitionError> {
    if !cur.is_supported(flags) {
        return Err(TransitionError::UnsupportedCurrent(cur));
    }
    if !new.is_supported(flags) {
        return Err(TransitionError::UnsupportedTarget(new));
    }
    let mut next = table(cur, new);
    // Skip over optional states the device lacks. Each skip moves to a
    // different row and ERROR ends the walk, so NUM_STATES rounds always
    // suffice; the bound only guards against a table edit gone wrong.
    for _ in 0..NUM_STATES {
        if next == MigState::Error || next.is_supported(flags) {
            break;
        }
        next = table(next, new);
    }
    if next == MigState::Error || !next.is_supported(flags) {
        return Err(TransitionError::NoPath { from: cur, to: new });
    }
    Ok(next)
}

/// The longest path the graph can produce (e.g. PRE_COPY → RESUMING is four
/// arcs); [`Path`] never yields more than this many arcs.
pub const MAX_PATH_ARCS: usize = NUM_STATES;

/// One arc of a path: a direct transition a driver implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Arc {
    /// State before.
    pub from: MigState,
    /// State after.
    pub to: MigState,
}

impl fmt::Display for Arc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}=>{}", self.from, self.to)
    }
}

/// Iterator over the arcs from one state to another.
///
/// ```
/// use mlx5vf_core::vfio::{MigState::*, MigrationFlags, Path};
/// let arcs: Vec<_> = Path::new(PreCopy, Resuming, MigrationFlags::ALL)
///     .map(|a| a.unwrap().to).collect();
/// assert_eq!(arcs, [Running, RunningP2p, Stop, Resuming]);
/// ```
#[derive(Clone, Debug)]
pub struct Path {
    cur: MigState,
    target: MigState,
    flags: MigrationFlags,
    steps: usize,
    done: bool,
}

impl Path {
    /// The arcs from `cur` to `target` on a device with `flags`.
    pub fn new(cur: MigState, target: MigState, flags: MigrationFlags) -> Self {
        Self {
            cur,
            target,
            flags,
            steps: 0,
            done: false,
        }
    }
}

impl Iterator for Path {
    type Item = Result<Arc, TransitionError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.cur == self.target {
            return None;
        }
        if self.steps >= MAX_PATH_ARCS {
            self.done = true;
            return Some(Err(TransitionError::NoPath {
                from: self.cur,
                to: self.target,
            }));
        }
        self.steps = self.steps.saturating_add(1);
        match next_state(self.cur, self.target, self.flags) {
            Ok(to) => {
                let arc = Arc { from: self.cur, to };
                self.cur = to;
                Some(Ok(arc))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// The data session a file carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Session {
    /// A saving (read) file.
    Saving,
    /// A resuming (write) file.
    Resuming,
}

/// Whether a new saving file tracks changes (PRE_COPY) or not (STOP_COPY).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SaveMode {
    /// STOP → STOP_COPY: one untracked full save.
    StopCopy,
    /// RUNNING(_P2P) → PRE_COPY(_P2P): an initial tracked save, then incremental ones.
    PreCopy,
}

/// One thing an arc makes the driver do, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Step {
    /// SUSPEND_VHCA with this side's op_mod.
    Suspend(VhcaSide),
    /// RESUME_VHCA with this side's op_mod.
    Resume(VhcaSide),
    /// Open a saving file (returned to the caller as a new data fd).
    OpenSaving(SaveMode),
    /// Start the final incremental save of a PRE_COPY file (same fd).
    FinalSave,
    /// Leave PRE_COPY without migrating: a cleanup SAVE so firmware drops
    /// tracking, then close the saving file (EIO if it had failed).
    PreCopyCleanup,
    /// Close the saving file and free its buffers (STOP_COPY → STOP).
    CloseSaving,
    /// Open a resuming file (returned as a new data fd).
    OpenResuming,
    /// Finish the resuming file: check the stream is complete, then close it.
    FinishResuming,
}

/// What an arc means for an mlx5 driver (`kernel-behaviour.md`, "State arcs").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ArcInfo {
    /// The steps, in order (at most three).
    pub steps: &'static [Step],
    /// The arc returns a new data fd for this session.
    pub opens: Option<Session>,
    /// The arc ends this session.
    pub ends: Option<Session>,
}

const fn info(steps: &'static [Step], opens: Option<Session>, ends: Option<Session>) -> ArcInfo {
    ArcInfo { steps, opens, ends }
}

/// What the arc `from → to` does, or `None` for a pair that is not a direct
/// arc of the graph (the kernel's `WARN_ON(true); return -EINVAL`).
///
/// Arcs that exist only on devices without P2P (RUNNING ↔ STOP,
/// PRE_COPY → STOP_COPY) are the P2P pairs run back to back, so every flag set
/// is covered; mlx5 devices always offer P2P.
pub const fn arc_info(from: MigState, to: MigState) -> Option<ArcInfo> {
    use Step::*;
    use VhcaSide::{Initiator, Responder};
    const SAVING: Option<Session> = Some(Session::Saving);
    const RESUMING: Option<Session> = Some(Session::Resuming);
    Some(match (from, to) {
        // SUSPEND_VHCA op_mod=INITIATOR: stop initiating P2P/DMA.
        (RU, RP) | (PC, PCP) => info(&[Suspend(Initiator)], None, None),
        // SUSPEND_VHCA op_mod=RESPONDER: stop answering.
        (RP, ST) => info(&[Suspend(Responder)], None, None),
        // RESUME_VHCA op_mod=RESPONDER.
        (ST, RP) => info(&[Resume(Responder)], None, None),
        // RESUME_VHCA op_mod=INITIATOR.
        (RP, RU) | (PCP, PC) => info(&[Resume(Initiator)], None, None),
        // No-P2P devices: both sides at once.
        (RU, ST) => info(&[Suspend(Initiator), Suspend(Responder)], None, None),
        (ST, RU) => info(&[Resume(Responder), Resume(Initiator)], None, None),
        // Saving files.
        (ST, SC) => info(&[OpenSaving(SaveMode::StopCopy)], SAVING, None),
        (RU, PC) | (RP, PCP) => info(&[OpenSaving(SaveMode::PreCopy)], SAVING, None),
        (PCP, SC) => info(&[Suspend(Responder), FinalSave], None, None),
        (PC, SC) => info(
            &[Suspend(Initiator), Suspend(Responder), FinalSave],
            None,
            None,
        ),
        (PC, RU) | (PCP, RP) => info(&[PreCopyCleanup], None, SAVING),
        (SC, ST) => info(&[CloseSaving], None, SAVING),
        // Resuming files.
        (ST, RE) => info(&[OpenResuming], RESUMING, None),
        (RE, ST) => info(&[FinishResuming], None, RESUMING),
        _ => return None,
    })
}

#[cfg(test)]
mod tests;
