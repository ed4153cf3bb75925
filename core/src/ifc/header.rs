//! The generic command header every `_in` and `_out` structure starts with,
//! and the status check every command result goes through.

use core::fmt;

use super::layout::{Checked, FieldError, Structure, layout};
use super::status::{CmdError, CmdStatus, Opcode};

layout! {
    /// The first 8 bytes of every command input (`mbox_in`).
    pub mod cmd_in_header: LayoutKind::Context, 8 bytes, tiled {
        opcode: u16 = [0x00, 0x10],
        uid: u16 = [0x10, 0x10],
        reserved_at_20: u16 = [0x20, 0x10],
        op_mod: u16 = [0x30, 0x10],
    }
}

layout! {
    /// The first 8 bytes of every command output (`mbox_out`).
    pub mod cmd_out_header: LayoutKind::Context, 8 bytes, tiled {
        status: u8 = [0x00, 0x08],
        reserved_at_8: u32 = [0x08, 0x18],
        syndrome: u32 = [0x20, 0x20],
    }
}

/// Why a command output could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DecodeError {
    /// The output is shorter than the structure it must hold.
    Truncated {
        /// The structure, by Linux name.
        structure: &'static str,
        /// Bytes required.
        needed: usize,
        /// Bytes present.
        actual: usize,
    },
    /// Firmware executed the command and refused it.
    Failed(CmdError),
    /// A field could not be read for another reason (a table bug; never
    /// expected, reported rather than panicking).
    Field {
        /// The structure.
        structure: &'static str,
        /// What the field accessor said.
        error: FieldError,
    },
}

impl DecodeError {
    pub(crate) fn from_field(structure: &'static str, e: FieldError) -> Self {
        match e {
            FieldError::Truncated { needed, actual, .. } => Self::Truncated {
                structure,
                needed,
                actual,
            },
            error => Self::Field { structure, error },
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated {
                structure,
                needed,
                actual,
            } => write!(f, "{structure}: {actual} bytes, need {needed}"),
            Self::Failed(e) => e.fmt(f),
            Self::Field { structure, error } => write!(f, "{structure}: {error}"),
        }
    }
}

impl core::error::Error for DecodeError {}

/// Checks the status of a command output of structure `structure` (which must
/// be at least `size` bytes) for the command `opcode`/`op_mod`.
///
/// # Errors
/// [`DecodeError::Truncated`] when `out` is shorter than `size`,
/// [`DecodeError::Failed`] when the status is not `OK`.
pub fn check_output(
    structure: &'static str,
    size: usize,
    opcode: Opcode,
    op_mod: u16,
    out: &[u8],
) -> Result<(), DecodeError> {
    if out.len() < size {
        return Err(DecodeError::Truncated {
            structure,
            needed: size,
            actual: out.len(),
        });
    }
    let status = cmd_out_header::status
        .get(out)
        .map_err(|e| DecodeError::from_field(structure, e))?;
    let syndrome = cmd_out_header::syndrome
        .get(out)
        .map_err(|e| DecodeError::from_field(structure, e))?;
    match CmdStatus::from(status) {
        CmdStatus::Ok => Ok(()),
        status => Err(DecodeError::Failed(CmdError {
            opcode,
            op_mod,
            status,
            syndrome,
        })),
    }
}

/// [`check_output`] for a structure known by type; the checked view it
/// returns reads every field of `S` without a `Result`.
///
/// # Errors
/// As [`check_output`].
pub fn checked_output<S: Structure>(
    opcode: Opcode,
    op_mod: u16,
    out: &[u8],
) -> Result<Checked<'_, S>, DecodeError> {
    let layout = S::LAYOUT;
    check_output(layout.name, layout.min_decode_len(), opcode, op_mod, out)?;
    Checked::new(out).map_err(|e| DecodeError::from_field(layout.name, e))
}

/// Writes the generic input header (opcode, uid 0, op_mod) into `buf`.
pub(crate) fn write_in_header(
    buf: &mut [u8],
    opcode: Opcode,
    op_mod: u16,
) -> Result<(), FieldError> {
    cmd_in_header::opcode.set(buf, u16::from(opcode))?;
    cmd_in_header::op_mod.set(buf, op_mod)
}
