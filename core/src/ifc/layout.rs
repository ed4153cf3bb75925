//! Bit-field tables in `mlx5_ifc.h` terms.
//!
//! Every command structure is described once, as a table of
//! `name: type = [bit offset, width]` rows in the big-endian bit convention of
//! the Linux `mlx5_ifc_*_bits` structs: bit 0 is the most significant bit of
//! byte 0, a field of width `w < 32` never crosses a dword, and 64-bit fields
//! are plain big-endian `u64`s on a dword boundary. The `layout!` macro turns
//! a table into a module of typed field constants (named exactly like the Linux
//! members, so `save_vhca_state_in::vhca_id` greps to `MLX5_SET(save_vhca_state_in,
//! in, vhca_id, …)`), a [`Layout`] description for tools, and compile-time
//! checks that the rows tile the structure with no gap or overlap.
//!
//! Accessors never panic: reading or writing a buffer that is too short returns
//! [`FieldError::Truncated`]; writing a value wider than its field returns
//! [`FieldError::TooWide`].

use core::fmt;
use core::marker::PhantomData;

/// Why a field could not be read or written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FieldError {
    /// The buffer ends before the field does.
    Truncated {
        /// The field that did not fit.
        field: &'static str,
        /// Bytes the field needs the buffer to have.
        needed: usize,
        /// Bytes the buffer has.
        actual: usize,
    },
    /// The member is a wide reserved block, not a value.
    NotAValue {
        /// The member.
        field: &'static str,
    },
    /// The field's bits span more than eight bytes (a 64-bit field that
    /// does not start on a byte boundary): no `u64` read or write covers it.
    /// `layout!` tables never contain one; a hand-built `Field` may.
    Straddles {
        /// The field.
        field: &'static str,
    },
    /// The value does not fit in the field's width.
    TooWide {
        /// The field.
        field: &'static str,
        /// Its width in bits.
        width: u32,
        /// The value that was rejected.
        value: u64,
    },
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Truncated {
                field,
                needed,
                actual,
            } => write!(
                f,
                "buffer of {actual} bytes too short for field {field} (needs {needed})"
            ),
            Self::NotAValue { field } => write!(f, "{field} is a reserved block, not a value"),
            Self::Straddles { field } => {
                write!(f, "{field} spans more than 8 bytes (not byte-aligned)")
            }
            Self::TooWide {
                field,
                width,
                value,
            } => write!(
                f,
                "value {value:#x} does not fit the {width}-bit field {field}"
            ),
        }
    }
}

impl core::error::Error for FieldError {}

/// One member of a command structure: name, bit offset and width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Field {
    /// The member's name in `mlx5_ifc.h`.
    pub name: &'static str,
    /// Offset in bits from the start of the structure (bit 0 = MSB of byte 0).
    pub bit: u32,
    /// Width in bits (1..=32, or 64).
    pub width: u32,
}

impl Field {
    /// Whether this is a `reserved_at_*` member.
    pub fn is_reserved(&self) -> bool {
        self.name.starts_with("reserved_")
    }

    /// Whether the member holds a value a tool can read or set: not reserved
    /// and at most 64 bits wide (wider members are opaque blocks such as the
    /// capability union).
    pub fn is_value(&self) -> bool {
        !self.is_reserved() && self.width <= 64
    }

    /// The largest value the field can hold.
    pub const fn max_value(&self) -> u64 {
        if self.width >= 64 {
            u64::MAX
        } else {
            !(u64::MAX << self.width)
        }
    }

    /// Bytes a buffer needs to contain this field.
    pub const fn end_byte(&self) -> usize {
        // CAST: bit offsets are < 2^32 and usize is at least 32 bits on every target we build.
        (self.bit as usize)
            .saturating_add(self.width as usize)
            .div_ceil(8)
    }

    /// The bytes holding the field (at most 8: a field never crosses a dword
    /// unless it is a dword-aligned 64-bit one) and the right shift that
    /// brings it to bit 0.
    /// A value field whose bytes fit one `u64`.
    fn check_word(&self) -> Result<(), FieldError> {
        if self.width > 64 {
            return Err(FieldError::NotAValue { field: self.name });
        }
        if (self.bit % 8).saturating_add(self.width) > 64 {
            return Err(FieldError::Straddles { field: self.name });
        }
        Ok(())
    }

    fn span(&self) -> (core::ops::Range<usize>, u32) {
        // CAST: bit offsets are far below 2^32; usize is at least 32 bits.
        let start = (self.bit / 8) as usize;
        let end = self.end_byte();
        let end_bit = self.bit.saturating_add(self.width);
        // CAST: end <= (2^32 + 64) / 8, so end * 8 fits u64; the shift is < 8.
        let shift = (end as u64)
            .saturating_mul(8)
            .saturating_sub(u64::from(end_bit)) as u32;
        (start..end, shift)
    }

    fn truncated(&self, actual: usize) -> FieldError {
        FieldError::Truncated {
            field: self.name,
            needed: self.end_byte(),
            actual,
        }
    }

    /// Reads the field from `buf`.
    pub fn read(&self, buf: &[u8]) -> Result<u64, FieldError> {
        self.check_word()?;
        let (range, shift) = self.span();
        let bytes = buf.get(range).ok_or_else(|| self.truncated(buf.len()))?;
        let raw = bytes.iter().fold(0u64, |acc, &b| acc << 8 | u64::from(b));
        Ok((raw >> shift) & self.max_value())
    }

    /// Writes `value` into the field of `buf`, leaving every other bit alone.
    pub fn write(&self, buf: &mut [u8], value: u64) -> Result<(), FieldError> {
        self.check_word()?;
        if value > self.max_value() {
            return Err(FieldError::TooWide {
                field: self.name,
                width: self.width,
                value,
            });
        }
        let actual = buf.len();
        let (range, shift) = self.span();
        let bytes = buf.get_mut(range).ok_or_else(|| self.truncated(actual))?;
        let raw = bytes.iter().fold(0u64, |acc, &b| acc << 8 | u64::from(b));
        let mask = self.max_value() << shift;
        let merged = (raw & !mask) | (value << shift);
        let be = merged.to_be_bytes();
        // The span is 4 or 8 bytes, so it is a suffix of the 8-byte word.
        // (A zip, not copy_from_slice: equal lengths, and no panic path.)
        let src = be
            .get(be.len().saturating_sub(bytes.len())..)
            .ok_or_else(|| self.truncated(actual))?;
        for (dst, &b) in bytes.iter_mut().zip(src) {
            *dst = b;
        }
        Ok(())
    }

    /// Compile-time shape check used by `layout!`: a width of 1..=32 that does
    /// not cross a dword, a dword-aligned 64-bit field, or a dword-aligned
    /// reserved block of whole dwords.
    pub const fn is_well_formed(&self) -> bool {
        if self.width >= 64 {
            self.bit % 32 == 0 && self.width % 32 == 0
        } else {
            self.width >= 1 && self.width <= 32 && self.bit % 32 <= 32u32.saturating_sub(self.width)
        }
    }
}

/// A value type a field decodes to.
pub trait FieldValue: Copy {
    /// Bits the type can hold.
    const BITS: u32;
    /// Converts the raw field bits (already masked to the field's width).
    fn from_raw(raw: u64) -> Self;
    /// Converts to raw field bits.
    fn to_raw(self) -> u64;
}

macro_rules! field_value_int {
    ($($t:ty),*) => {$(
        impl FieldValue for $t {
            const BITS: u32 = <$t>::BITS;
            fn from_raw(raw: u64) -> Self {
                // CAST: `raw` is masked to the field width, which layout! checks is <= BITS.
                raw as $t
            }
            fn to_raw(self) -> u64 {
                u64::from(self)
            }
        }
    )*};
}
field_value_int!(u8, u16, u32, u64);

/// The value type of a wide reserved block: it has no value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reserved;

impl FieldValue for Reserved {
    const BITS: u32 = u32::MAX;
    fn from_raw(_raw: u64) -> Self {
        Self
    }
    fn to_raw(self) -> u64 {
        0
    }
}

impl FieldValue for bool {
    const BITS: u32 = 1;
    fn from_raw(raw: u64) -> Self {
        raw != 0
    }
    fn to_raw(self) -> u64 {
        u64::from(self)
    }
}

/// A [`Field`] with the Rust type its value decodes to and the structure
/// `S` it belongs to (the `Bits` marker of its `layout!` module), so a
/// [`Checked`] view of `S` reads it without a length check and a field of
/// another structure does not type-check.
#[derive(Debug)]
pub struct TypedField<T, S> {
    field: Field,
    _type: PhantomData<fn() -> (T, S)>,
}

impl<T, S> Clone for TypedField<T, S> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T, S> Copy for TypedField<T, S> {}

impl<T: FieldValue, S> TypedField<T, S> {
    /// Builds a typed field; used by `layout!`.
    pub const fn new(name: &'static str, bit: u32, width: u32) -> Self {
        Self {
            field: Field { name, bit, width },
            _type: PhantomData,
        }
    }

    /// The untyped description.
    pub const fn field(&self) -> Field {
        self.field
    }

    /// Reads and converts the field from an unchecked buffer.
    ///
    /// # Errors
    /// [`FieldError::Truncated`] when `buf` ends before the field.
    pub fn get(&self, buf: &[u8]) -> Result<T, FieldError> {
        self.field.read(buf).map(T::from_raw)
    }

    /// Writes the field into an unchecked buffer.
    ///
    /// # Errors
    /// [`FieldError::Truncated`] or [`FieldError::TooWide`].
    pub fn set(&self, buf: &mut [u8], value: T) -> Result<(), FieldError> {
        self.field.write(buf, value.to_raw())
    }
}

pub use super::checked::{Checked, CheckedMut, Structure};

/// What a structure is, for tools that encode and decode by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LayoutKind {
    /// A command input; `opcode` defaults to the command's opcode.
    Input {
        /// The command's opcode.
        opcode: u16,
    },
    /// A command output.
    Output,
    /// A capability structure (decode only; shorter buffers that still cover
    /// every listed field are accepted).
    Capability,
    /// A structure nested in others (e.g. `mkc`).
    Context,
}

/// A structure nested inside another, e.g. `memory_key_mkey_entry` (an `mkc`)
/// inside `create_mkey_in`.
#[derive(Clone, Copy, Debug)]
pub struct Nested {
    /// The member name in the outer structure.
    pub name: &'static str,
    /// Its bit offset in the outer structure.
    pub bit: u32,
    /// Its layout.
    pub layout: &'static Layout,
}

/// A variable-length array after the fixed part, e.g. `klm_pas_mtt[]` of
/// `create_mkey_in` (declared `klm_pas_mtt[][0x20]` in Linux: 32-bit
/// elements, two per 64-bit MTT entry).
#[derive(Clone, Copy, Debug)]
pub struct Tail {
    /// The member name.
    pub name: &'static str,
    /// Byte offset where the array starts (the fixed part's size).
    pub byte: usize,
    /// Width of one element in bits.
    pub element_bits: u32,
}

/// A whole structure, for tools: name, size and members.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    /// The Linux struct name without `mlx5_ifc_` and `_bits`.
    pub name: &'static str,
    /// Size of the fixed part in bytes.
    pub size: usize,
    /// What kind of structure it is.
    pub kind: LayoutKind,
    /// Members, in order (reserved members included for tiled layouts).
    pub fields: &'static [Field],
    /// Nested structures.
    pub nested: &'static [Nested],
    /// Variable-length tail, if any.
    pub tail: Option<Tail>,
}

impl Layout {
    /// The bytes a decoder needs: the whole structure, or for capabilities the
    /// end of the last listed field.
    pub const fn min_decode_len(&self) -> usize {
        match self.kind {
            LayoutKind::Capability => {
                let mut end = 0;
                let mut rest = self.fields;
                while let [f, tail @ ..] = rest {
                    if f.end_byte() > end {
                        end = f.end_byte();
                    }
                    rest = tail;
                }
                end
            }
            _ => self.size,
        }
    }

    /// The opcode of a command input table; `None` for other kinds.
    pub const fn opcode(&self) -> Option<u16> {
        match self.kind {
            LayoutKind::Input { opcode } => Some(opcode),
            _ => None,
        }
    }
}

/// Compile-time check that `fields` tile `size` bytes exactly, in order.
pub const fn tiles(fields: &[Field], size: usize) -> bool {
    let mut next = 0u32;
    let mut rest = fields;
    while let [f, tail @ ..] = rest {
        if f.bit != next || !f.is_well_formed() {
            return false;
        }
        next = match f.bit.checked_add(f.width) {
            Some(end) => end,
            None => return false,
        };
        rest = tail;
    }
    // CAST: structure sizes are far below 2^32 bits.
    next as usize == size.saturating_mul(8)
}

/// Compile-time check that `fields` are well formed, in increasing order, do
/// not overlap and lie inside `size` bytes (for sparse capability tables).
pub const fn ordered_within(fields: &[Field], size: usize) -> bool {
    let mut end = 0u32;
    let mut rest = fields;
    while let [f, tail @ ..] = rest {
        if f.bit < end || !f.is_well_formed() {
            return false;
        }
        end = match f.bit.checked_add(f.width) {
            Some(end) => end,
            None => return false,
        };
        rest = tail;
    }
    // CAST: as in `tiles`.
    end as usize <= size.saturating_mul(8)
}

/// Declares a structure table. See the module documentation.
///
/// ```text
/// layout! {
///     /// SAVE_VHCA_STATE input.
///     pub mod save_vhca_state_in: Input(0x118), 32 bytes, tiled {
///         opcode: u16 = [0x00, 0x10],
///         ...
///     }
/// }
/// ```
macro_rules! layout {
    (
        $(#[$meta:meta])*
        $vis:vis mod $name:ident : $kind:expr, $size:literal bytes, $shape:ident {
            $( $field:ident : $ty:ty = [$bit:literal, $width:literal] ),* $(,)?
        }
        $( nested { $( $nname:ident : $nlayout:path = $nbit:literal ),* $(,)? } )?
        $( tail $tname:ident [$tbits:literal] at $tbyte:literal )?
    ) => {
        $(#[$meta])*
        #[allow(non_upper_case_globals)]
        $vis mod $name {
            #[allow(unused_imports)]
            use $crate::ifc::layout::{Field, Layout, LayoutKind, Nested, Reserved, Structure, Tail, TypedField};

            /// Size of the fixed part in bytes.
            pub const SIZE: usize = $size;

            /// The structure as a type (Linux's `mlx5_ifc_*_bits`): what
            /// its fields and [`Checked`]($crate::ifc::layout::Checked) views are tagged with.
            #[derive(Clone, Copy, Debug)]
            pub struct Bits;

            impl Structure for Bits {
                const LAYOUT: &'static Layout = &LAYOUT;
            }

            $(
                #[doc = concat!("`", stringify!($field), "`: bit ", stringify!($bit), ", width ", stringify!($width), ".")]
                pub const $field: TypedField<$ty, Bits> = TypedField::new(stringify!($field), $bit, $width);
                const _: () = assert!($width <= <$ty as $crate::ifc::layout::FieldValue>::BITS);
            )*

            /// Every member, in order.
            pub const FIELDS: &[Field] = &[$( $field.field() ),*];

            /// The structure description for tools.
            pub const LAYOUT: Layout = Layout {
                name: stringify!($name),
                size: SIZE,
                kind: $kind,
                fields: FIELDS,
                nested: &[$($( Nested { name: stringify!($nname), bit: $nbit, layout: &$nlayout }),*)?],
                tail: $crate::ifc::layout::layout!(@tail $( $tname $tbyte $tbits )?),
            };

            const _: () = assert!($crate::ifc::layout::layout!(@shape $shape, FIELDS, SIZE));
        }
    };
    (@tail) => { None };
    (@tail $tname:ident $tbyte:literal $tbits:literal) => {
        Some(Tail { name: stringify!($tname), byte: $tbyte, element_bits: $tbits })
    };
    (@shape tiled, $fields:expr, $size:expr) => { $crate::ifc::layout::tiles($fields, $size) };
    (@shape sparse, $fields:expr, $size:expr) => { $crate::ifc::layout::ordered_within($fields, $size) };
}
pub(crate) use layout;

#[cfg(test)]
mod tests {
    use super::*;

    const ONE_BIT: Field = Field {
        name: "x",
        bit: 0x41,
        width: 1,
    };

    #[test]
    fn single_bit_lands_where_linux_puts_it() {
        let mut buf = [0u8; 16];
        ONE_BIT.write(&mut buf, 1).unwrap();
        // bit 0x41 = dword 2, second most significant bit.
        assert_eq!(buf[8], 0x40);
        assert_eq!(ONE_BIT.read(&buf).unwrap(), 1);
    }

    #[test]
    fn write_keeps_neighbours_and_rejects_wide_values() {
        let f = Field {
            name: "vhca_id",
            bit: 0x50,
            width: 16,
        };
        let mut buf = [0xffu8; 12];
        f.write(&mut buf, 0x1234).unwrap();
        assert_eq!(&buf[8..12], &[0xff, 0xff, 0x12, 0x34]);
        assert!(matches!(
            f.write(&mut buf, 0x1_0000),
            Err(FieldError::TooWide { width: 16, .. })
        ));
    }

    #[test]
    /// Fuzz find (ifc_decode, bug 1): a 64-bit field 4 bits into a byte
    /// spans nine bytes; it read with its top bits dropped and wrote over
    /// its neighbours. Both are refused now, and the buffer is untouched.
    fn a_field_spanning_nine_bytes_is_refused() {
        let f = Field {
            name: "straddler",
            bit: 4,
            width: 64,
        };
        let mut buf = [0xffu8; 16];
        assert_eq!(
            f.read(&buf),
            Err(FieldError::Straddles { field: "straddler" })
        );
        assert_eq!(
            f.write(&mut buf, 0x0123_4567_89ab_cdef),
            Err(FieldError::Straddles { field: "straddler" })
        );
        assert_eq!(buf, [0xff; 16]);
        // 60 bits at the same offset fit one word and work.
        let g = Field {
            name: "fits",
            bit: 4,
            width: 60,
        };
        g.write(&mut buf, 0x0012_3456_789a_bcde).unwrap();
        assert_eq!(g.read(&buf), Ok(0x0012_3456_789a_bcde));
        assert_eq!(buf[0] & 0xf0, 0xf0, "the 4 bits before the field are kept");
    }

    #[test]
    fn short_buffers_are_errors_not_panics() {
        let f = Field {
            name: "va",
            bit: 0x80,
            width: 64,
        };
        let mut buf = [0u8; 20];
        assert!(matches!(
            f.read(&buf),
            Err(FieldError::Truncated {
                needed: 24,
                actual: 20,
                ..
            })
        ));
        assert!(f.write(&mut buf, 1).is_err());
        assert_eq!(buf, [0u8; 20]);
    }

    #[test]
    fn shape_checks() {
        let good = [
            Field {
                name: "a",
                bit: 0,
                width: 16,
            },
            Field {
                name: "b",
                bit: 16,
                width: 16,
            },
            Field {
                name: "c",
                bit: 32,
                width: 64,
            },
        ];
        assert!(tiles(&good, 12));
        assert!(!tiles(&good, 16));
        let crossing = [Field {
            name: "a",
            bit: 24,
            width: 16,
        }];
        assert!(!ordered_within(&crossing, 8));
        let overlap = [
            Field {
                name: "a",
                bit: 0,
                width: 16,
            },
            Field {
                name: "b",
                bit: 8,
                width: 8,
            },
        ];
        assert!(!ordered_within(&overlap, 4));
    }
}
