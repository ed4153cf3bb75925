//! What a simulated PF and its VFs look like: capabilities and state
//! generator parameters.

use core::fmt;

use crate::objects::{GenParams, LayoutError};
use crate::spec::SimSpec;

/// Most VFs one simulated PF can have.
///
/// Each VF stores a version per object ([`crate::objects::MAX_OBJECTS`]),
/// ~35 KiB; four VFs keep a whole [`crate::Firmware`] under 200 KiB while
/// allowing a source and a destination (and spares) on one PF.
pub const MAX_VFS: usize = 4;

/// The PF's own capabilities (what QUERY_HCA_CAP reports for function 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PfConfig {
    /// `cmd_hca_cap.migration`: without it every migration command is
    /// refused.
    pub migration: bool,
    /// `cmd_hca_cap.adv_virtualization` (reported only).
    pub adv_virtualization: bool,
    /// `cmd_hca_cap_2.migration_multi_load`.
    pub multi_load: bool,
    /// `cmd_hca_cap_2.migration_tracking_state`.
    pub tracking_state: bool,
    /// `cmd_hca_cap_2.migration_in_chunks`.
    pub in_chunks: bool,
}

impl PfConfig {
    /// Every capability on.
    pub const DEFAULT: Self = Self {
        migration: true,
        adv_virtualization: true,
        multi_load: true,
        tracking_state: true,
        in_chunks: true,
    };
}

impl Default for PfConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// One VF: capabilities and its device state's generator parameters.
///
/// A capability is in effect when both the PF and the VF have it (the Linux
/// driver reads multi-load, tracking and chunks from the PF, `migratable`
/// from the VF).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VfConfig {
    /// `cmd_hca_cap_2.migratable`.
    pub migratable: bool,
    /// PRE_COPY support: `migration_multi_load` + `migration_tracking_state`.
    pub precopy: bool,
    /// `migration_in_chunks`.
    pub chunks: bool,
    /// Exact byte size of a full single-image SAVE.
    pub state_size: u64,
    /// Generator seed.
    pub seed: u64,
    /// Smallest object size.
    pub object_min: u64,
    /// Largest object size.
    pub object_max: u64,
    /// Bytes the guest workload dirties per tick while the VF runs.
    pub dirty_per_tick: u64,
    /// SAVE writes object content and LOAD checks it (see
    /// [`SimSpec::content`]).
    pub content: bool,
}

impl VfConfig {
    /// The defaults of the `sim` spec (1 GiB state, objects 64 KiB–12 MiB,
    /// every capability on, no dirtying).
    pub const DEFAULT: Self = Self::from_spec_vf(&SimSpec::DEFAULT, 0);

    /// VF `n` as described by `spec` (seed + n, so VFs differ).
    #[must_use]
    pub const fn from_spec_vf(spec: &SimSpec, n: u16) -> Self {
        Self {
            migratable: spec.migratable,
            precopy: spec.precopy,
            chunks: spec.chunks,
            state_size: spec.state,
            // CAST: u16 → u64 is lossless.
            seed: spec.seed.wrapping_add(n as u64),
            object_min: spec.object_min,
            object_max: spec.object_max,
            dirty_per_tick: spec.dirty,
            content: spec.content,
        }
    }

    /// The generator parameters of this VF's initial state.
    #[must_use]
    pub const fn gen_params(&self) -> GenParams {
        GenParams {
            seed: self.seed,
            state_size: self.state_size,
            object_min: self.object_min,
            object_max: self.object_max,
        }
    }
}

impl Default for VfConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A PF and 1..=[`MAX_VFS`] VFs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirmwareConfig {
    /// The PF's capabilities.
    pub pf: PfConfig,
    /// The VFs; VF n is `function_id` n + 1.
    pub vfs: heapless::Vec<VfConfig, MAX_VFS>,
}

impl FirmwareConfig {
    /// A default PF with the given VFs.
    ///
    /// # Errors
    /// [`ConfigError::NoVfs`] / [`ConfigError::TooManyVfs`].
    pub fn with_vfs(vfs: &[VfConfig]) -> Result<Self, ConfigError> {
        if vfs.is_empty() {
            return Err(ConfigError::NoVfs);
        }
        Ok(Self {
            pf: PfConfig::DEFAULT,
            vfs: heapless::Vec::from_slice(vfs).map_err(|_| ConfigError::TooManyVfs)?,
        })
    }

    /// A default PF with one VF.
    #[must_use]
    pub fn single(vf: VfConfig) -> Self {
        let mut vfs = heapless::Vec::new();
        // Capacity MAX_VFS ≥ 1, so one push always fits.
        let _ = vfs.push(vf);
        Self {
            pf: PfConfig::DEFAULT,
            vfs,
        }
    }

    /// The device a spec string describes: PF caps follow the spec's
    /// `chunks` / `precopy` (so a driver reading PF caps, as Linux does, sees
    /// them), `spec.vfs` VFs built by [`VfConfig::from_spec_vf`].
    #[must_use]
    pub fn from_spec(spec: &SimSpec) -> Self {
        let pf = PfConfig {
            migration: true,
            adv_virtualization: true,
            multi_load: spec.precopy,
            tracking_state: spec.precopy,
            in_chunks: spec.chunks,
        };
        let mut vfs = heapless::Vec::new();
        for n in 0..spec.vfs.max(1) {
            if vfs.push(VfConfig::from_spec_vf(spec, n)).is_err() {
                break;
            }
        }
        Self { pf, vfs }
    }
}

impl Default for FirmwareConfig {
    fn default() -> Self {
        Self::single(VfConfig::DEFAULT)
    }
}

/// Why a configuration cannot be simulated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// No VF configured.
    NoVfs,
    /// More than [`MAX_VFS`] VFs.
    TooManyVfs,
    /// A VF's state parameters describe no valid state.
    Layout {
        /// The VF.
        vf: u16,
        /// What is wrong, and how to fix it.
        error: LayoutError,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoVfs => f.write_str("sim config: at least one VF is needed (vfs=1)"),
            Self::TooManyVfs => write!(f, "sim config: at most {MAX_VFS} VFs (vfs=N)"),
            Self::Layout { vf, error } => write!(f, "sim config: VF {vf}: {error}"),
        }
    }
}

impl core::error::Error for ConfigError {}
