//! The shape every firmware command shares: typed input, fixed sizes, typed
//! output. `device` sends any [`Command`] through one generic path.

use core::fmt;

use super::header::{DecodeError, checked_output};
use super::layout::{Checked, CheckedMut, FieldError, LayoutKind, Structure};
use super::status::Opcode;

/// Why an input could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum EncodeError {
    /// The caller's buffer is too small; nothing was written.
    InsufficientSize {
        /// Bytes the encoding needs.
        required: usize,
    },
    /// A value does not fit its field (e.g. a PD number above 24 bits).
    ValueTooWide {
        /// The field.
        field: &'static str,
        /// The rejected value.
        value: u64,
    },
}

impl From<FieldError> for EncodeError {
    fn from(e: FieldError) -> Self {
        match e {
            FieldError::Truncated { needed, .. } => Self::InsufficientSize { required: needed },
            FieldError::TooWide { field, value, .. } => Self::ValueTooWide { field, value },
            FieldError::NotAValue { field } | FieldError::Straddles { field } => {
                Self::ValueTooWide { field, value: 0 }
            }
        }
    }
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InsufficientSize { required } => {
                write!(f, "buffer too small: {required} bytes required")
            }
            Self::ValueTooWide { field, value } => {
                write!(f, "value {value:#x} does not fit field {field}")
            }
        }
    }
}

impl core::error::Error for EncodeError {}

/// A firmware command with a fixed-size input.
///
/// Names, sizes and the opcode come from the command's `layout!` tables
/// ([`Command::In`], [`Command::Out`]); [`Command::TABLES_AGREE`] checks at
/// compile time that the input table's opcode is [`Command::OPCODE`] (see
/// the list in `ifc/mod.rs`). A command pairing SAVE's input table with
/// LOAD's opcode does not build:
///
/// ```compile_fail,E0080
/// use mlx5vf_core::ifc::{Checked, CheckedMut, Command, EncodeError, Opcode};
/// use mlx5vf_core::ifc::migration::{load_vhca_state_out, save_vhca_state_in};
/// struct Mixed;
/// impl Command for Mixed {
///     const OPCODE: Opcode = Opcode::LoadVhcaState;
///     type In = save_vhca_state_in::Bits;
///     type Out = load_vhca_state_out::Bits;
///     type Output = ();
///     fn encode_fields(&self, _: &mut CheckedMut<'_, Self::In>) -> Result<(), EncodeError> {
///         Ok(())
///     }
///     fn decode_fields(&self, _: Checked<'_, Self::Out>) {}
/// }
/// const _: () = <Mixed as Command>::TABLES_AGREE;
/// ```
pub trait Command {
    /// The opcode.
    const OPCODE: Opcode;
    /// The input structure.
    type In: Structure;
    /// The output structure.
    type Out: Structure;
    /// What a successful output decodes to.
    type Output;

    /// The Linux name of the input structure.
    const IN_NAME: &'static str = <Self::In as Structure>::LAYOUT.name;
    /// The Linux name of the output structure.
    const OUT_NAME: &'static str = <Self::Out as Structure>::LAYOUT.name;
    /// Size of the input in bytes.
    const IN_SIZE: usize = <Self::In as Structure>::LAYOUT.size;
    /// Size of the output in bytes.
    const OUT_SIZE: usize = <Self::Out as Structure>::LAYOUT.size;
    /// Compile-time agreement of the tables with [`Command::OPCODE`]: the
    /// input is an input table carrying this opcode, the output an output
    /// table. Evaluating it fails the build when they disagree.
    const TABLES_AGREE: () = {
        assert!(
            matches!(
                <Self::In as Structure>::LAYOUT.opcode(),
                Some(op) if op == Self::OPCODE.raw()
            ),
            "the input table's opcode differs from Command::OPCODE (or it is no input table)"
        );
        assert!(
            matches!(<Self::Out as Structure>::LAYOUT.kind, LayoutKind::Output),
            "a command's output table must be LayoutKind::Output"
        );
    };

    /// The op_mod this input carries.
    fn op_mod(&self) -> u16 {
        0
    }

    /// Writes the input into `buf` (at least [`Command::IN_SIZE`] bytes; only
    /// the first `IN_SIZE` bytes are written, all of them). Returns the length.
    ///
    /// # Errors
    /// [`EncodeError::InsufficientSize`] with `buf` untouched, or
    /// [`EncodeError::ValueTooWide`].
    fn encode(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        let () = Self::TABLES_AGREE;
        let dst = buf
            .get_mut(..Self::IN_SIZE)
            .ok_or(EncodeError::InsufficientSize {
                required: Self::IN_SIZE,
            })?;
        dst.fill(0);
        super::header::write_in_header(dst, Self::OPCODE, self.op_mod())?;
        let mut input = CheckedMut::new(dst)?;
        self.encode_fields(&mut input)?;
        Ok(Self::IN_SIZE)
    }

    /// Writes the command-specific fields into a zeroed input whose header is
    /// already filled.
    ///
    /// # Errors
    /// [`EncodeError::ValueTooWide`].
    fn encode_fields(&self, input: &mut CheckedMut<'_, Self::In>) -> Result<(), EncodeError>;

    /// Checks the length and status of an output and decodes its fields.
    ///
    /// # Errors
    /// [`DecodeError::Failed`] for a non-OK status, `Truncated` for a short
    /// output.
    fn decode(&self, out: &[u8]) -> Result<Self::Output, DecodeError> {
        let out = checked_output::<Self::Out>(Self::OPCODE, self.op_mod(), out)?;
        Ok(self.decode_fields(out))
    }

    /// Decodes the fields of an output whose status is OK and whose length
    /// was checked: it cannot fail.
    fn decode_fields(&self, out: Checked<'_, Self::Out>) -> Self::Output;
}
