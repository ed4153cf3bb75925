//! QUERY_HCA_CAP and the capability bits migration depends on.
//!
//! The driver asks the PF for its own general caps (`migration`,
//! `adv_virtualization`) and general-2 caps (`migration_multi_load`,
//! `migration_tracking_state`, `migration_in_chunks`), and asks about the VF
//! with `other_function = 1, function_id = vf + 1` (`vhca_id`, `migratable`).

use super::command::{Command, EncodeError};
use super::layout::{Checked, CheckedMut, FieldError, layout};
use super::status::Opcode;

layout! {
    /// `query_hca_cap_in`.
    pub mod query_hca_cap_in: LayoutKind::Input { opcode: 0x100 }, 16 bytes, tiled {
        opcode: u16 = [0x00, 0x10],
        reserved_at_10: u16 = [0x10, 0x10],
        reserved_at_20: u16 = [0x20, 0x10],
        op_mod: u16 = [0x30, 0x10],
        other_function: bool = [0x40, 0x01],
        ec_vf_function: bool = [0x41, 0x01],
        reserved_at_42: u16 = [0x42, 0x0e],
        function_id: u16 = [0x50, 0x10],
        reserved_at_60: u32 = [0x60, 0x20],
    }
}

layout! {
    /// `query_hca_cap_out`: header, then the 4096-byte capability union at byte 16.
    pub mod query_hca_cap_out: LayoutKind::Output, 4112 bytes, tiled {
        status: u8 = [0x00, 0x08],
        reserved_at_8: u32 = [0x08, 0x18],
        syndrome: u32 = [0x20, 0x20],
        reserved_at_40: u64 = [0x40, 0x40],
        capability: Reserved = [0x80, 0x8000],
    }
}

/// Byte offset of the capability area inside `query_hca_cap_out`.
pub const CAPABILITY_OFFSET: usize = 16;
/// Size of the capability area.
pub const CAPABILITY_SIZE: usize = 4096;

layout! {
    /// `cmd_hca_cap` (general device caps): the members migration needs.
    pub mod cmd_hca_cap: LayoutKind::Capability, 4096 bytes, sparse {
        vhca_resource_manager: bool = [0x1f, 0x01],
        hca_cap_2: bool = [0x20, 0x01],
        vhca_id: u16 = [0x30, 0x10],
        cmdif_checksum: u8 = [0x210, 0x02],
        adv_virtualization: bool = [0x579, 0x01],
        migration: bool = [0x68d, 0x01],
    }
}

layout! {
    /// `cmd_hca_cap_2` (general device caps 2): the migration members.
    pub mod cmd_hca_cap_2: LayoutKind::Capability, 4096 bytes, sparse {
        migratable: bool = [0x80, 0x01],
        migration_multi_load: bool = [0xc8, 0x01],
        migration_tracking_state: bool = [0xc9, 0x01],
        migration_in_chunks: bool = [0xd0, 0x01],
    }
}

/// Which capability structure to query (`cap_type`, op_mod bits 15:1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum CapType {
    /// `cmd_hca_cap` (`MLX5_SET_HCA_CAP_OP_MOD_GENERAL_DEVICE` = 0).
    General,
    /// `cmd_hca_cap_2` (`MLX5_SET_HCA_CAP_OP_MOD_GENERAL_DEVICE_CAP_2` = 0x20).
    General2,
}

/// Maximum (supported) or current (enabled) values (op_mod bit 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum CapMode {
    /// `HCA_CAP_OPMOD_GET_MAX` = 0.
    Max,
    /// `HCA_CAP_OPMOD_GET_CUR` = 1.
    Current,
}

/// Whose capabilities to query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum CapTarget {
    /// The function issuing the command (the PF).
    SelfFunction,
    /// Another function: VF `n` is `function_id = n + 1`.
    OtherFunction {
        /// The function id.
        function_id: u16,
    },
}

impl CapTarget {
    /// VF `vf` (0-based) of the PF issuing the command.
    pub const fn vf(vf: u16) -> Option<Self> {
        match vf.checked_add(1) {
            Some(function_id) => Some(Self::OtherFunction { function_id }),
            None => None,
        }
    }
}

/// QUERY_HCA_CAP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueryHcaCap {
    /// Whose caps.
    pub target: CapTarget,
    /// Which structure.
    pub cap: CapType,
    /// Max or current.
    pub mode: CapMode,
}

/// The decoded capability area of a QUERY_HCA_CAP output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Caps {
    /// General caps.
    General(GeneralCaps),
    /// General-2 caps.
    General2(General2Caps),
}

/// The `cmd_hca_cap` members migration uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct GeneralCaps {
    /// The function's VHCA id: what every migration command names.
    pub vhca_id: u16,
    /// `cmd_hca_cap_2` exists.
    pub hca_cap_2: bool,
    /// The device supports VF migration.
    pub migration: bool,
    /// Device dirty-page tracking is available.
    pub adv_virtualization: bool,
}

/// The `cmd_hca_cap_2` members migration uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct General2Caps {
    /// The function can be migrated.
    pub migratable: bool,
    /// Several LOADs may be applied (initial then incremental images).
    pub migration_multi_load: bool,
    /// Dirty tracking during SAVE (`set_track`), i.e. PRE_COPY.
    pub migration_tracking_state: bool,
    /// SAVE can split the state into chunks (states above 4 GiB).
    pub migration_in_chunks: bool,
}

impl QueryHcaCap {
    /// The raw op_mod: `(cap_type << 1) | mode`.
    pub const fn raw_op_mod(&self) -> u16 {
        let cap_type: u16 = match self.cap {
            CapType::General => 0,
            CapType::General2 => 0x20,
        };
        let mode: u16 = match self.mode {
            CapMode::Max => 0,
            CapMode::Current => 1,
        };
        (cap_type << 1) | mode
    }
}

impl Command for QueryHcaCap {
    const OPCODE: Opcode = Opcode::QueryHcaCap;
    type In = query_hca_cap_in::Bits;
    type Out = query_hca_cap_out::Bits;
    type Output = Caps;

    fn op_mod(&self) -> u16 {
        self.raw_op_mod()
    }

    fn encode_fields(&self, input: &mut CheckedMut<'_, Self::In>) -> Result<(), EncodeError> {
        if let CapTarget::OtherFunction { function_id } = self.target {
            input.set(query_hca_cap_in::other_function, true)?;
            input.set(query_hca_cap_in::function_id, function_id)?;
        }
        Ok(())
    }

    fn decode_fields(&self, out: Checked<'_, Self::Out>) -> Caps {
        match self.cap {
            CapType::General => Caps::General(GeneralCaps::from_checked(
                out.nested::<cmd_hca_cap::Bits, CAPABILITY_OFFSET>(),
            )),
            CapType::General2 => Caps::General2(General2Caps::from_checked(
                out.nested::<cmd_hca_cap_2::Bits, CAPABILITY_OFFSET>(),
            )),
        }
    }
}

impl GeneralCaps {
    /// Parses a `cmd_hca_cap` (the capability area, from byte 16 of the output).
    ///
    /// # Errors
    /// When `cap` is too short to hold the fields.
    pub fn parse(cap: &[u8]) -> Result<Self, FieldError> {
        Checked::new(cap).map(Self::from_checked)
    }

    /// Reads the members from a checked `cmd_hca_cap`.
    pub fn from_checked(cap: Checked<'_, cmd_hca_cap::Bits>) -> Self {
        use cmd_hca_cap as f;
        Self {
            vhca_id: cap.get(f::vhca_id),
            hca_cap_2: cap.get(f::hca_cap_2),
            migration: cap.get(f::migration),
            adv_virtualization: cap.get(f::adv_virtualization),
        }
    }
}

impl General2Caps {
    /// Parses a `cmd_hca_cap_2`.
    ///
    /// # Errors
    /// When `cap` is too short to hold the fields.
    pub fn parse(cap: &[u8]) -> Result<Self, FieldError> {
        Checked::new(cap).map(Self::from_checked)
    }

    /// Reads the members from a checked `cmd_hca_cap_2`.
    pub fn from_checked(cap: Checked<'_, cmd_hca_cap_2::Bits>) -> Self {
        use cmd_hca_cap_2 as f;
        Self {
            migratable: cap.get(f::migratable),
            migration_multi_load: cap.get(f::migration_multi_load),
            migration_tracking_state: cap.get(f::migration_tracking_state),
            migration_in_chunks: cap.get(f::migration_in_chunks),
        }
    }
}

// The table's size and the two constants that locate the capability area
// are written separately; they must agree.
static_assertions::const_assert_eq!(query_hca_cap_out::SIZE, CAPABILITY_OFFSET + CAPABILITY_SIZE);
static_assertions::const_assert_eq!(cmd_hca_cap::SIZE, CAPABILITY_SIZE);
static_assertions::const_assert_eq!(cmd_hca_cap_2::SIZE, CAPABILITY_SIZE);
