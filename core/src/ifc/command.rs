//! The shape every firmware command shares: typed input, fixed sizes, typed
//! output. `device` sends any [`Command`] through one generic path.

use core::fmt;

use super::header::{DecodeError, check_output};
use super::layout::FieldError;
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
pub trait Command {
    /// The opcode.
    const OPCODE: Opcode;
    /// The Linux name of the input structure.
    const IN_NAME: &'static str;
    /// The Linux name of the output structure.
    const OUT_NAME: &'static str;
    /// Size of the input in bytes.
    const IN_SIZE: usize;
    /// Size of the output in bytes.
    const OUT_SIZE: usize;
    /// What a successful output decodes to.
    type Output;

    /// The op_mod this input carries.
    fn op_mod(&self) -> u16;

    /// Writes the input into `buf` (at least [`Command::IN_SIZE`] bytes; only
    /// the first `IN_SIZE` bytes are written, all of them). Returns the length.
    ///
    /// # Errors
    /// [`EncodeError::InsufficientSize`] with `buf` untouched, or
    /// [`EncodeError::ValueTooWide`].
    fn encode(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        let dst = buf
            .get_mut(..Self::IN_SIZE)
            .ok_or(EncodeError::InsufficientSize {
                required: Self::IN_SIZE,
            })?;
        dst.fill(0);
        super::header::write_in_header(dst, Self::OPCODE, self.op_mod())?;
        self.encode_fields(dst)?;
        Ok(Self::IN_SIZE)
    }

    /// Writes the command-specific fields into a zeroed input whose header is
    /// already filled.
    ///
    /// # Errors
    /// As [`Command::encode`].
    fn encode_fields(&self, buf: &mut [u8]) -> Result<(), EncodeError>;

    /// Checks the status and decodes the fields of an output.
    ///
    /// # Errors
    /// [`DecodeError::Failed`] for a non-OK status, `Truncated` for a short
    /// output.
    fn decode(&self, out: &[u8]) -> Result<Self::Output, DecodeError> {
        check_output(
            Self::OUT_NAME,
            Self::OUT_SIZE,
            Self::OPCODE,
            self.op_mod(),
            out,
        )?;
        self.decode_fields(out)
            .map_err(|e| DecodeError::from_field(Self::OUT_NAME, e))
    }

    /// Decodes the fields of an output whose status is OK and whose length was
    /// checked.
    ///
    /// # Errors
    /// Only on a truncated buffer.
    fn decode_fields(&self, out: &[u8]) -> Result<Self::Output, FieldError>;
}
