//! SUSPEND_VHCA and RESUME_VHCA: the P2P-quiesce and stop arcs.
//!
//! Note that the op_mod values are reversed between the two commands:
//! SUSPEND uses INITIATOR = 0, RESPONDER = 1; RESUME uses RESPONDER = 0,
//! INITIATOR = 1.

use super::command::{Command, EncodeError};
use super::layout::{Checked, CheckedMut, layout};
use super::status::Opcode;

layout! {
    /// `suspend_vhca_in`.
    pub mod suspend_vhca_in: LayoutKind::Input { opcode: 0x115 }, 16 bytes, tiled {
        opcode: u16 = [0x00, 0x10],
        uid: u16 = [0x10, 0x10],
        reserved_at_20: u16 = [0x20, 0x10],
        op_mod: u16 = [0x30, 0x10],
        reserved_at_40: u16 = [0x40, 0x10],
        vhca_id: u16 = [0x50, 0x10],
        reserved_at_60: u32 = [0x60, 0x20],
    }
}

layout! {
    /// `suspend_vhca_out`.
    pub mod suspend_vhca_out: LayoutKind::Output, 16 bytes, tiled {
        status: u8 = [0x00, 0x08],
        reserved_at_8: u32 = [0x08, 0x18],
        syndrome: u32 = [0x20, 0x20],
        reserved_at_40: u64 = [0x40, 0x40],
    }
}

layout! {
    /// `resume_vhca_in`.
    pub mod resume_vhca_in: LayoutKind::Input { opcode: 0x116 }, 16 bytes, tiled {
        opcode: u16 = [0x00, 0x10],
        uid: u16 = [0x10, 0x10],
        reserved_at_20: u16 = [0x20, 0x10],
        op_mod: u16 = [0x30, 0x10],
        reserved_at_40: u16 = [0x40, 0x10],
        vhca_id: u16 = [0x50, 0x10],
        reserved_at_60: u32 = [0x60, 0x20],
    }
}

layout! {
    /// `resume_vhca_out`.
    pub mod resume_vhca_out: LayoutKind::Output, 16 bytes, tiled {
        status: u8 = [0x00, 0x08],
        reserved_at_8: u32 = [0x08, 0x18],
        syndrome: u32 = [0x20, 0x20],
        reserved_at_40: u64 = [0x40, 0x40],
    }
}

/// Which side of the VHCA a SUSPEND or RESUME acts on.
///
/// The initiator side stops (or restarts) the function initiating DMA and
/// P2P traffic (VFIO `RUNNING <-> RUNNING_P2P`); the responder side stops (or
/// restarts) it answering (VFIO `RUNNING_P2P <-> STOP`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum VhcaSide {
    /// `*_OP_MOD_*_INITIATOR`.
    Initiator,
    /// `*_OP_MOD_*_RESPONDER`.
    Responder,
}

/// `MLX5_SUSPEND_VHCA_IN_OP_MOD_SUSPEND_INITIATOR`.
pub const SUSPEND_OP_MOD_INITIATOR: u16 = 0;
/// `MLX5_SUSPEND_VHCA_IN_OP_MOD_SUSPEND_RESPONDER`.
pub const SUSPEND_OP_MOD_RESPONDER: u16 = 1;
/// `MLX5_RESUME_VHCA_IN_OP_MOD_RESUME_RESPONDER`.
pub const RESUME_OP_MOD_RESPONDER: u16 = 0;
/// `MLX5_RESUME_VHCA_IN_OP_MOD_RESUME_INITIATOR`.
pub const RESUME_OP_MOD_INITIATOR: u16 = 1;

/// SUSPEND_VHCA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SuspendVhca {
    /// The VF's VHCA id.
    pub vhca_id: u16,
    /// Which side to suspend.
    pub side: VhcaSide,
}

/// RESUME_VHCA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResumeVhca {
    /// The VF's VHCA id.
    pub vhca_id: u16,
    /// Which side to resume.
    pub side: VhcaSide,
}

impl Command for SuspendVhca {
    const OPCODE: Opcode = Opcode::SuspendVhca;
    type In = suspend_vhca_in::Bits;
    type Out = suspend_vhca_out::Bits;
    type Output = ();

    fn op_mod(&self) -> u16 {
        match self.side {
            VhcaSide::Initiator => SUSPEND_OP_MOD_INITIATOR,
            VhcaSide::Responder => SUSPEND_OP_MOD_RESPONDER,
        }
    }
    fn encode_fields(&self, input: &mut CheckedMut<'_, Self::In>) -> Result<(), EncodeError> {
        Ok(input.set(suspend_vhca_in::vhca_id, self.vhca_id)?)
    }
    fn decode_fields(&self, _out: Checked<'_, Self::Out>) {}
}

impl Command for ResumeVhca {
    const OPCODE: Opcode = Opcode::ResumeVhca;
    type In = resume_vhca_in::Bits;
    type Out = resume_vhca_out::Bits;
    type Output = ();

    fn op_mod(&self) -> u16 {
        match self.side {
            VhcaSide::Initiator => RESUME_OP_MOD_INITIATOR,
            VhcaSide::Responder => RESUME_OP_MOD_RESPONDER,
        }
    }
    fn encode_fields(&self, input: &mut CheckedMut<'_, Self::In>) -> Result<(), EncodeError> {
        Ok(input.set(resume_vhca_in::vhca_id, self.vhca_id)?)
    }
    fn decode_fields(&self, _out: Checked<'_, Self::Out>) {}
}
