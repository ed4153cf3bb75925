//! Checked views: a buffer whose length was checked once against a
//! `layout!` structure, after which every field of that structure reads
//! (and writes, but for a too-wide value) without a `Result`.

use core::marker::PhantomData;

use super::layout::{FieldError, FieldValue, Layout, TypedField};

/// A structure described by a `layout!` table; implemented by the `Bits`
/// marker each table declares (named after Linux's `mlx5_ifc_*_bits`).
pub trait Structure {
    /// The table.
    const LAYOUT: &'static Layout;
}

/// Whether `len` bytes hold every field of `S`.
fn holds<S: Structure>(len: usize) -> Result<(), FieldError> {
    let needed = S::LAYOUT.min_decode_len();
    if len < needed {
        return Err(FieldError::Truncated {
            field: S::LAYOUT.name,
            needed,
            actual: len,
        });
    }
    Ok(())
}

/// A buffer whose length was checked once against structure `S`, in the
/// manner of smoltcp's `new_checked` views: every field of `S` then reads
/// without a `Result`.
#[derive(Debug)]
pub struct Checked<'a, S> {
    bytes: &'a [u8],
    _structure: PhantomData<fn() -> S>,
}

impl<S> Clone for Checked<'_, S> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<S> Copy for Checked<'_, S> {}

impl<'a, S: Structure> Checked<'a, S> {
    /// Checks that `bytes` hold every field of `S`
    /// ([`Layout::min_decode_len`]).
    ///
    /// # Errors
    /// [`FieldError::Truncated`] naming the structure.
    pub fn new(bytes: &'a [u8]) -> Result<Self, FieldError> {
        holds::<S>(bytes.len())?;
        Ok(Self {
            bytes,
            _structure: PhantomData,
        })
    }

    /// Reads a field of `S`.
    pub fn get<T: FieldValue>(&self, field: TypedField<T, S>) -> T {
        // Cannot fail: `layout!` proves at compile time that every field of
        // `S` is a well-formed word ending within `min_decode_len`, which
        // `new` checked. Only a wide reserved block refuses to be a value,
        // and its type (`Reserved`) carries none. No unwrap, so no panic path.
        T::from_raw(field.field().read(self.bytes).unwrap_or(0))
    }

    /// The structure `N` nested at byte `AT`, checked at compile time to lie
    /// within what `new` checked.
    pub fn nested<N: Structure, const AT: usize>(&self) -> Checked<'a, N> {
        const {
            assert!(AT.saturating_add(N::LAYOUT.min_decode_len()) <= S::LAYOUT.min_decode_len());
        }
        Checked {
            // Never empty in practice: the assertion above and `new`'s check.
            bytes: self.bytes.get(AT..).unwrap_or_default(),
            _structure: PhantomData,
        }
    }

    /// The underlying bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

/// A mutable buffer checked once against structure `S`: writes can only
/// fail on a value wider than its field.
#[derive(Debug)]
pub struct CheckedMut<'a, S> {
    bytes: &'a mut [u8],
    _structure: PhantomData<fn() -> S>,
}

impl<'a, S: Structure> CheckedMut<'a, S> {
    /// Checks that `bytes` hold every field of `S`.
    ///
    /// # Errors
    /// [`FieldError::Truncated`] naming the structure.
    pub fn new(bytes: &'a mut [u8]) -> Result<Self, FieldError> {
        holds::<S>(bytes.len())?;
        Ok(Self {
            bytes,
            _structure: PhantomData,
        })
    }

    /// Writes a field of `S`.
    ///
    /// # Errors
    /// [`FieldError::TooWide`] only (the length was checked).
    pub fn set<T: FieldValue>(
        &mut self,
        field: TypedField<T, S>,
        value: T,
    ) -> Result<(), FieldError> {
        field.field().write(self.bytes, value.to_raw())
    }

    /// Reads back a field of `S`.
    pub fn get<T: FieldValue>(&self, field: TypedField<T, S>) -> T {
        // As `Checked::get`: in range by construction.
        T::from_raw(field.field().read(self.bytes).unwrap_or(0))
    }

    /// The underlying bytes.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        self.bytes
    }
}
