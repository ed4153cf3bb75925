//! `state_graph`: the VFIO state machine, pure and on a device.
//!
//! # Input
//! A [`Caps`] word (which capabilities the simulated PF and VF report and
//! what the driver policy allows), then [`GraphOp`]s (built with
//! `arbitrary`) until the input ends or [`MAX_OPS`] ran.
//!
//! # Checks
//! - [`next_state`] equals the [`oracle`] (Linux's
//!   `vfio_mig_get_next_state()` with the ERROR-loop fix, written from the
//!   uAPI reference) for any current state, requested state and `u64` flag
//!   word, including which check refused; [`MigState::from_raw`] rejects
//!   exactly the values from 8 up.
//! - A [`Path`] ends within [`MAX_PATH_ARCS`] arcs at its target, never
//!   repeats a state, uses only arcs Linux lets a driver see for those flags
//!   (each with an [`arc_info`]), and only its last arc may open a file.
//! - On a device: every `set_state` either reaches the target or fails
//!   reporting the state it is in; that state is one the device supports,
//!   on the way to the target, never ERROR. A refused transition is refused
//!   by the graph exactly when the oracle refuses it. A new file comes back
//!   exactly when the last arc opens one, of the right kind. Outside the
//!   saving group there is no saving file, outside RESUMING no resuming one.
//!   While no fault was injected since the last reset, every transition the
//!   oracle allows succeeds and the firmware's VHCA state matches the
//!   device's. The SAVE-wait loop always ends. After recovery nothing leaked.

use arbitrary::Arbitrary;
use mlx5vf_core::device::{Config, DeviceError, FileId};
use mlx5vf_core::hal::HalErrorKind;
use mlx5vf_core::vfio::{
    MAX_PATH_ARCS, MigState, MigrationFlags, Path, Session, TransitionError, UnknownState,
    arc_info, next_state,
};
use mlx5vf_sim::firmware::{FirmwareConfig, PfConfig, SuspendState, VfConfig};
use mlx5vf_sim::wire::opcode;

use crate::hal::{FailAfter, Knobs};
use crate::harness::{self, Dev};
use crate::oracle;
use crate::stats::{Hit, hit};

/// Most operations one input runs.
pub const MAX_OPS: usize = 64;

/// Capabilities, as bits that turn things *off* (so zero bytes give a fully
/// capable device).
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps(pub u16);

impl Caps {
    /// PF `migration`.
    pub const NO_PF_MIGRATION: u16 = 1 << 0;
    /// PF `migration_multi_load`.
    pub const NO_PF_MULTI_LOAD: u16 = 1 << 1;
    /// PF `migration_tracking_state`.
    pub const NO_PF_TRACKING: u16 = 1 << 2;
    /// PF `migration_in_chunks`.
    pub const NO_PF_CHUNKS: u16 = 1 << 3;
    /// VF `migratable`.
    pub const NO_VF_MIGRATABLE: u16 = 1 << 4;
    /// VF PRE_COPY caps.
    pub const NO_VF_PRECOPY: u16 = 1 << 5;
    /// VF `migration_in_chunks`.
    pub const NO_VF_CHUNKS: u16 = 1 << 6;
    /// Policy: no chunk mode.
    pub const NO_USE_CHUNKS: u16 = 1 << 7;
    /// Policy: no PRE_COPY.
    pub const NO_USE_PRECOPY: u16 = 1 << 8;
    /// PF `adv_virtualization`.
    pub const NO_PF_ADV_VIRT: u16 = 1 << 9;
    /// Not a capability: the guest dirties 1 KiB per tick.
    pub const DIRTY: u16 = 1 << 10;

    fn off(self, bit: u16) -> bool {
        self.0 & bit != 0
    }

    /// The firmware and policy these bits describe.
    pub fn build(self) -> (FirmwareConfig, Config) {
        let pf = PfConfig {
            migration: !self.off(Self::NO_PF_MIGRATION),
            adv_virtualization: !self.off(Self::NO_PF_ADV_VIRT),
            multi_load: !self.off(Self::NO_PF_MULTI_LOAD),
            tracking_state: !self.off(Self::NO_PF_TRACKING),
            in_chunks: !self.off(Self::NO_PF_CHUNKS),
        };
        let vf = VfConfig {
            migratable: !self.off(Self::NO_VF_MIGRATABLE),
            precopy: !self.off(Self::NO_VF_PRECOPY),
            chunks: !self.off(Self::NO_VF_CHUNKS),
            state_size: 8 << 10,
            seed: 3,
            object_min: 256,
            object_max: 1024,
            dirty_per_tick: if self.off(Self::DIRTY) { 1024 } else { 0 },
            content: true,
        };
        let mut fw = FirmwareConfig::single(vf);
        fw.pf = pf;
        let cfg = Config {
            chunk_size: 4096,
            use_chunks: !self.off(Self::NO_USE_CHUNKS),
            use_precopy: !self.off(Self::NO_USE_PRECOPY),
            ..Config::default()
        };
        (fw, cfg)
    }
}

/// One step.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphOp {
    /// `set_state` to a state (value modulo 8).
    Set(u8),
    /// `set_state` to a raw uAPI value (rejected from 8 up).
    SetRaw(u32),
    /// Compare `next_state` with the oracle.
    Oracle {
        /// Current state (raw).
        cur: u32,
        /// Requested state (raw).
        new: u32,
        /// Migration flags.
        flags: u64,
    },
    /// Check the path between two states (values modulo 8) for flags.
    Path {
        /// From.
        cur: u8,
        /// To.
        new: u8,
        /// Flags (low bits matter).
        flags: u8,
    },
    /// Fail the next firmware command of an opcode (index into the sim's
    /// opcode list) with a non-zero status.
    Fail {
        /// Which opcode.
        op: u8,
        /// Status (0 becomes INT_ERR).
        status: u8,
    },
    /// Fail a platform operation after `after` more succeed.
    HalFail {
        /// What fails: allocation, mapping, SAVE start, command delivery.
        what: u8,
        /// Successes first.
        after: u8,
    },
    /// The PF disables the VF (firmware and device).
    Detach,
    /// The PF re-enables the VF.
    Attach,
    /// A VF reset; `complete_first` lets firmware finish a SAVE in flight
    /// before the reset.
    Reset {
        /// Run the pending SAVE before the reset.
        complete_first: bool,
    },
    /// The guest runs for a tick.
    Tick,
    /// Deliver a pending SAVE completion now.
    Complete,
}

/// The target. See the module documentation.
pub fn run(data: &[u8]) {
    let Some((caps, ops)) = decode(data) else {
        return;
    };
    let (fw, cfg) = caps.build();
    let mut g = Graph::new(&fw, cfg);
    for op in ops {
        g.apply(op);
    }
    g.finish();
}

/// The input's parts: the capabilities and at most [`MAX_OPS`] operations.
pub fn decode(data: &[u8]) -> Option<(Caps, Vec<GraphOp>)> {
    super::decode_ops(data, MAX_OPS)
}

struct Graph {
    dev: Dev,
    probed: bool,
    /// Nothing went wrong since the last reset (no fault armed, no error).
    clean: bool,
}

impl Graph {
    fn new(fw: &FirmwareConfig, cfg: Config) -> Self {
        let mut dev = harness::unprobed(fw, cfg);
        let mut scratch = vec![0u8; mlx5vf_core::device::PROBE_SCRATCH_LEN];
        let probe = dev.probe(0, &mut scratch);
        let pf = fw.pf;
        let vf = fw.vfs[0];
        let migratable = pf.migration && vf.migratable;
        match probe {
            Ok(p) => {
                assert!(migratable, "probe accepted a non-migratable VF");
                let precopy =
                    pf.multi_load && pf.tracking_state && vf.precopy && dev.config().use_precopy;
                let chunks = pf.in_chunks && vf.chunks && dev.config().use_chunks;
                assert_eq!(
                    p.flags,
                    MigrationFlags::STOP_COPY_P2P.with_pre_copy(precopy)
                );
                assert_eq!(p.chunk_mode, chunks);
                assert_eq!(p.dirty_tracking, pf.adv_virtualization);
                assert_eq!(Some(p.vhca_id), dev.hal().fw.vhca_id(0));
            }
            Err(e) => {
                assert!(!migratable, "probe of a migratable VF failed: {e}");
                assert!(matches!(e, DeviceError::NotMigratable(_)), "{e}");
            }
        }
        Self {
            probed: probe.is_ok(),
            dev,
            clean: true,
        }
    }

    fn apply(&mut self, op: GraphOp) {
        match op {
            GraphOp::Set(s) => self.set(u32::from(s % 8)),
            GraphOp::SetRaw(raw) => self.set(raw),
            GraphOp::Oracle { cur, new, flags } => check_oracle(cur, new, flags),
            GraphOp::Path { cur, new, flags } => {
                check_path(u32::from(cur % 8), u32::from(new % 8), u64::from(flags));
            }
            GraphOp::Fail { op, status } => {
                let op = opcode::ALL[usize::from(op) % opcode::ALL.len()];
                let status = if status == 0 { 1 } else { status };
                if self
                    .dev
                    .hal_mut()
                    .fw
                    .faults_mut()
                    .fail_nth(op, 1, status, 0xf022)
                    .is_ok()
                {
                    self.clean = false;
                }
            }
            GraphOp::HalFail { what, after } => {
                let after = u32::from(after % 8);
                let k = &mut self.dev.hal_mut().knobs;
                match what % 4 {
                    0 => k.fail_alloc = Some(FailAfter::new(after, HalErrorKind::OutOfMemory)),
                    1 => k.fail_map = Some(FailAfter::new(after, HalErrorKind::OutOfMemory)),
                    2 => k.fail_start_save = Some(FailAfter::new(after, HalErrorKind::Delivery)),
                    _ => {
                        k.fail_exec = Some(FailAfter::new(after, HalErrorKind::Timeout));
                    }
                }
                self.clean = false;
            }
            GraphOp::Detach => {
                self.dev.handle_detach();
                self.dev.hal_mut().fw.detach_vf(0);
                self.clean = false;
            }
            GraphOp::Attach => {
                self.dev.hal_mut().fw.attach_vf(0);
                self.dev.handle_attach();
            }
            GraphOp::Reset { complete_first } => {
                let done = if complete_first {
                    self.dev.hal_mut().run_save()
                } else {
                    None
                };
                self.dev.hal_mut().fw.reset_vf(0);
                self.dev.hal_mut().fw.faults_mut().clear();
                self.dev.hal_mut().knobs = Knobs::default();
                self.dev.handle_reset();
                if let Some((token, out)) = done {
                    let r = self.dev.handle_save_completion(token, &out);
                    assert!(r.is_ok(), "completion after reset: {r:?}");
                }
                // Completions still to come may belong to the old session;
                // the device and firmware agree again only once they ran.
                self.clean = self.dev.hal().pending.is_empty() && !self.dev.is_detached();
            }
            GraphOp::Tick => self.dev.hal_mut().fw.tick(0, 1),
            GraphOp::Complete => {
                harness::complete_one(&mut self.dev);
            }
        }
        self.invariants();
    }

    fn set(&mut self, raw: u32) {
        let target = match MigState::from_raw(raw) {
            Ok(s) => {
                assert!(raw < 8);
                assert_eq!(s.raw(), raw);
                assert_eq!(MigState::try_from(raw), Ok(s));
                assert_eq!(MigState::from_name(s.name()), Some(s));
                assert_eq!(MigState::from_name(s.uapi_name()), Some(s));
                s
            }
            Err(e) => {
                assert!(raw >= 8, "from_raw({raw}) refused");
                assert_eq!(e, UnknownState(raw));
                return;
            }
        };
        let prev = self.dev.state();
        let flags = self.dev.migration_flags();
        let r = harness::set_state(&mut self.dev, target, 8);
        let now = self.dev.state();
        assert_ne!(now, MigState::Error, "device in ERROR");
        if !self.probed {
            assert!(
                matches!(r, Err(e) if e.error == DeviceError::NotProbed && e.reached == prev),
                "{r:?}"
            );
            return;
        }
        let walk = oracle_walk(prev.raw(), target.raw(), flags.into_bits());
        match r {
            Ok(file) => {
                hit(Hit::StateOk);
                assert_eq!(now, target, "set_state succeeded elsewhere");
                let arcs = walk.unwrap_or_else(|e| {
                    panic!("{prev} -> {target} succeeded; the oracle refuses: {e:?}")
                });
                check_file(file, &arcs, target);
            }
            Err(e) => {
                assert_eq!(e.reached, now, "reported state");
                assert!(now.is_supported(flags), "{now} not supported");
                match e.error {
                    DeviceError::Transition(t) => {
                        hit(Hit::StateRefused);
                        assert_eq!(e.reached, prev, "graph refusal after moving");
                        let refused = walk.err().unwrap_or_else(|| {
                            panic!("{prev} -> {target} refused ({t}); the oracle allows it")
                        });
                        let expected = match refused {
                            oracle::Refusal::Current => TransitionError::UnsupportedCurrent(prev),
                            oracle::Refusal::Target => TransitionError::UnsupportedTarget(target),
                            oracle::Refusal::NoPath => TransitionError::NoPath {
                                from: prev,
                                to: target,
                            },
                        };
                        assert_eq!(t, expected);
                    }
                    other => {
                        hit(Hit::StateFailed);
                        let arcs = walk.unwrap_or_else(|r| {
                            panic!("{prev} -> {target}: {other}; the oracle refuses: {r:?}")
                        });
                        // The state reached lies on the path.
                        assert!(
                            now == prev || arcs.iter().any(|a| a.1 == now.raw()),
                            "{now} is not on the path {prev} -> {target}"
                        );
                        assert!(
                            !self.clean,
                            "{prev} -> {target} failed on a healthy device: {other}"
                        );
                        assert_ne!(other, DeviceError::SaveInFlight, "SAVE wait did not end");
                    }
                }
                self.clean = false;
            }
        }
    }

    fn invariants(&self) {
        let d = &self.dev;
        let s = d.state();
        assert_ne!(s, MigState::Error);
        if !s.is_saving_group() {
            assert!(d.save_engine().is_none(), "saving file open in {s}");
        }
        if s != MigState::Resuming {
            assert!(d.load_engine().is_none(), "resuming file open in {s}");
        }
        if d.save_engine().is_some() {
            assert!(d.load_engine().is_none(), "two files open");
        }
        assert!(d.hal().pending.len() <= 1, "two SAVEs in flight");
        assert_eq!(d.save_in_flight(), d.hal().pending.len() == 1);
        assert_eq!(d.stats().buffer_bytes, d.hal().live_bytes, "buffer bytes");
        if self.clean && self.probed && d.hal().pending.is_empty() {
            let Some(fw) = d.hal().fw.vf_state(0) else {
                panic!("no VF 0");
            };
            let expected = match s {
                MigState::Running | MigState::PreCopy => SuspendState::Running,
                MigState::RunningP2p | MigState::PreCopyP2p => SuspendState::InitiatorSuspended,
                _ => SuspendState::Suspended,
            };
            assert_eq!(fw.suspend, expected, "firmware VHCA state in {s}");
            hit(Hit::StateFirmwareChecked);
        }
    }

    fn finish(mut self) {
        harness::recover(&mut self.dev);
        harness::assert_clean(&self.dev);
    }
}

/// The oracle's walk from `cur` to `new`: the arcs, or the refusal.
fn oracle_walk(cur: u32, new: u32, flags: u64) -> Result<Vec<(u32, u32)>, oracle::Refusal> {
    let mut arcs = vec![];
    let mut s = cur;
    while s != new {
        let next = oracle::next_state(s, new, flags)?;
        arcs.push((s, next));
        s = next;
        assert!(arcs.len() <= MAX_PATH_ARCS, "oracle walk does not end");
    }
    Ok(arcs)
}

fn check_file(file: Option<FileId>, arcs: &[(u32, u32)], target: MigState) {
    let opens = arcs.last().is_some_and(|&(a, b)| oracle::opens_fd(a, b));
    match file {
        Some(f) => {
            assert!(opens, "a file from a walk whose last arc opens none");
            let kind = if target == MigState::Resuming {
                Session::Resuming
            } else {
                Session::Saving
            };
            assert_eq!(f.kind(), kind);
            assert_eq!(FileId::from_bits(f.to_bits()), Some(f));
        }
        None => assert!(!opens, "no file from {arcs:?}"),
    }
}

fn check_oracle(cur: u32, new: u32, flags: u64) {
    let expected = oracle::next_state(cur, new, flags);
    let (c, n) = match (MigState::from_raw(cur), MigState::from_raw(new)) {
        (Ok(c), Ok(n)) => (c, n),
        (c, n) => {
            assert_eq!(c.is_err(), cur >= 8);
            assert_eq!(n.is_err(), new >= 8);
            // Out-of-range values never reach next_state; the oracle
            // refuses them too.
            assert!(expected.is_err());
            return;
        }
    };
    let got = next_state(c, n, MigrationFlags::from_bits(flags));
    match (got, expected) {
        (Ok(g), Ok(e)) => assert_eq!(g.raw(), e, "next_state({c}, {n}, {flags:#x})"),
        (Err(g), Err(e)) => {
            let want = match e {
                oracle::Refusal::Current => TransitionError::UnsupportedCurrent(c),
                oracle::Refusal::Target => TransitionError::UnsupportedTarget(n),
                oracle::Refusal::NoPath => TransitionError::NoPath { from: c, to: n },
            };
            assert_eq!(g, want, "next_state({c}, {n}, {flags:#x})");
            let _ = g.to_string();
        }
        (g, e) => panic!("next_state({c}, {n}, {flags:#x}) = {g:?}, oracle {e:?}"),
    }
    for s in [c, n] {
        assert_eq!(
            s.is_supported(MigrationFlags::from_bits(flags)),
            oracle::supported(s.raw(), flags)
        );
    }
}

fn check_path(cur: u32, new: u32, flags: u64) {
    let (Ok(c), Ok(n)) = (MigState::from_raw(cur), MigState::from_raw(new)) else {
        return;
    };
    let f = MigrationFlags::from_bits(flags);
    let allowed = oracle::direct_arcs(flags);
    let mut seen = vec![c];
    let mut arcs = vec![];
    let mut failed = false;
    for (i, step) in Path::new(c, n, f).enumerate() {
        assert!(i < MAX_PATH_ARCS, "path {c} -> {n} too long");
        match step {
            Ok(arc) => {
                assert!(!failed, "arc after a refusal");
                assert_eq!(arc.from, *seen.last().unwrap_or(&c), "disconnected arc");
                assert!(
                    allowed.contains(&(arc.from.raw(), arc.to.raw())),
                    "{arc} is not an arc Linux shows a driver with flags {flags:#x}"
                );
                assert!(arc_info(arc.from, arc.to).is_some(), "{arc} has no meaning");
                assert!(
                    !seen.contains(&arc.to),
                    "path {c} -> {n} revisits {}",
                    arc.to
                );
                seen.push(arc.to);
                arcs.push((arc.from.raw(), arc.to.raw()));
            }
            Err(_) => failed = true,
        }
    }
    let walk = oracle_walk(cur, new, flags);
    match walk {
        Ok(w) => {
            assert!(!failed, "path {c} -> {n} refused; oracle walks {w:?}");
            assert_eq!(arcs, w, "path {c} -> {n}");
            if let Some((_, before)) = arcs.split_last() {
                for &(a, b) in before {
                    assert!(!oracle::opens_fd(a, b), "intermediate arc opens a file");
                    let info = arc_info(
                        MigState::from_raw(a).unwrap_or(MigState::Error),
                        MigState::from_raw(b).unwrap_or(MigState::Error),
                    );
                    assert!(info.is_some_and(|i| i.opens.is_none()));
                }
            }
        }
        Err(_) => assert!(failed || c == n, "path {c} -> {n} allowed; oracle refuses"),
    }
}
