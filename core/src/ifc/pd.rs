//! ALLOC_PD / DEALLOC_PD: one protection domain per migration file.

use super::command::{Command, EncodeError};
use super::layout::{Checked, CheckedMut, layout};
use super::status::Opcode;

layout! {
    /// `alloc_pd_in`.
    pub mod alloc_pd_in: LayoutKind::Input { opcode: 0x800 }, 16 bytes, tiled {
        opcode: u16 = [0x00, 0x10],
        uid: u16 = [0x10, 0x10],
        reserved_at_20: u16 = [0x20, 0x10],
        op_mod: u16 = [0x30, 0x10],
        reserved_at_40: u64 = [0x40, 0x40],
    }
}

layout! {
    /// `alloc_pd_out`.
    pub mod alloc_pd_out: LayoutKind::Output, 16 bytes, tiled {
        status: u8 = [0x00, 0x08],
        reserved_at_8: u32 = [0x08, 0x18],
        syndrome: u32 = [0x20, 0x20],
        reserved_at_40: u8 = [0x40, 0x08],
        pd: u32 = [0x48, 0x18],
        reserved_at_60: u32 = [0x60, 0x20],
    }
}

layout! {
    /// `dealloc_pd_in`.
    pub mod dealloc_pd_in: LayoutKind::Input { opcode: 0x801 }, 16 bytes, tiled {
        opcode: u16 = [0x00, 0x10],
        uid: u16 = [0x10, 0x10],
        reserved_at_20: u16 = [0x20, 0x10],
        op_mod: u16 = [0x30, 0x10],
        reserved_at_40: u8 = [0x40, 0x08],
        pd: u32 = [0x48, 0x18],
        reserved_at_60: u32 = [0x60, 0x20],
    }
}

layout! {
    /// `dealloc_pd_out`.
    pub mod dealloc_pd_out: LayoutKind::Output, 16 bytes, tiled {
        status: u8 = [0x00, 0x08],
        reserved_at_8: u32 = [0x08, 0x18],
        syndrome: u32 = [0x20, 0x20],
        reserved_at_40: u64 = [0x40, 0x40],
    }
}

/// A protection domain number (24 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Pd(pub u32);

/// ALLOC_PD.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocPd;

impl Command for AllocPd {
    const OPCODE: Opcode = Opcode::AllocPd;
    type In = alloc_pd_in::Bits;
    type Out = alloc_pd_out::Bits;
    type Output = Pd;

    fn encode_fields(&self, _input: &mut CheckedMut<'_, Self::In>) -> Result<(), EncodeError> {
        Ok(())
    }
    fn decode_fields(&self, out: Checked<'_, Self::Out>) -> Pd {
        Pd(out.get(alloc_pd_out::pd))
    }
}

/// DEALLOC_PD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeallocPd {
    /// The domain to free.
    pub pd: Pd,
}

impl Command for DeallocPd {
    const OPCODE: Opcode = Opcode::DeallocPd;
    type In = dealloc_pd_in::Bits;
    type Out = dealloc_pd_out::Bits;
    type Output = ();

    fn encode_fields(&self, input: &mut CheckedMut<'_, Self::In>) -> Result<(), EncodeError> {
        Ok(input.set(dealloc_pd_in::pd, self.pd.0)?)
    }
    fn decode_fields(&self, _out: Checked<'_, Self::Out>) {}
}
