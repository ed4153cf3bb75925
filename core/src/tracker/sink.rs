//! Where dirty extents go: a bitmap window in `iova_bitmap` terms, or
//! anything else a platform has (the kernel's `iova_bitmap_set`).

use core::fmt;

/// Receives dirty extents. Each call names `[iova, iova + length)` (never
/// empty), already clipped to the report's window; calls may come in any
/// order and may overlap.
pub trait DirtySink {
    /// Marks `[iova, iova + length)` dirty.
    fn set_dirty(&mut self, iova: u64, length: u64);
}

impl<S: DirtySink + ?Sized> DirtySink for &mut S {
    fn set_dirty(&mut self, iova: u64, length: u64) {
        (**self).set_dirty(iova, length);
    }
}

/// Counts what it is told, for callers that only want a number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CountingSink {
    /// Calls received.
    pub extents: u64,
    /// Bytes named (overlaps counted twice).
    pub bytes: u64,
}

impl DirtySink for CountingSink {
    fn set_dirty(&mut self, _iova: u64, length: u64) {
        self.extents = self.extents.saturating_add(1);
        self.bytes = self.bytes.saturating_add(length);
    }
}

/// Why a bitmap window could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum WindowError {
    /// The bitmap page size is not a power of two.
    BadPageSize,
    /// The window's last byte lies past 2^64.
    Wraps,
}

impl fmt::Display for WindowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BadPageSize => "bitmap page size is not a power of two",
            Self::Wraps => "bitmap window wraps past 2^64",
        })
    }
}

impl core::error::Error for WindowError {}

/// A caller's bitmap with `iova_bitmap` semantics: bit `i` (bit `i % 64` of
/// word `i / 64`) stands for the page `[iova + i * page_size, + page_size)`.
/// Extents set every page they touch; bits past the window stay alone.
#[derive(Debug)]
pub struct BitmapWindow<'a> {
    iova: u64,
    log_page: u32,
    pages: u64,
    bits: &'a mut [u64],
}

impl<'a> BitmapWindow<'a> {
    /// A window of `bits.len() * 64` pages from `iova`.
    ///
    /// # Errors
    /// [`WindowError`].
    pub fn new(iova: u64, page_size: u64, bits: &'a mut [u64]) -> Result<Self, WindowError> {
        if !page_size.is_power_of_two() {
            return Err(WindowError::BadPageSize);
        }
        // CAST: a slice length fits u64.
        let pages = (bits.len() as u64).saturating_mul(64);
        let log_page = page_size.trailing_zeros();
        let span = pages
            .checked_shl(log_page)
            .filter(|s| s >> log_page == pages)
            .ok_or(WindowError::Wraps)?;
        if iova.checked_add(span.saturating_sub(1)).is_none() {
            return Err(WindowError::Wraps);
        }
        Ok(Self {
            iova,
            log_page,
            pages,
            bits,
        })
    }

    /// Pages the window covers.
    pub const fn pages(&self) -> u64 {
        self.pages
    }

    /// Whether page `i` is marked.
    pub fn is_set(&self, page: u64) -> bool {
        let word = usize::try_from(page / 64)
            .ok()
            .and_then(|w| self.bits.get(w));
        word.is_some_and(|w| w >> (page % 64) & 1 == 1)
    }

    /// Marked pages.
    pub fn count(&self) -> u64 {
        self.bits.iter().map(|w| u64::from(w.count_ones())).sum()
    }
}

impl DirtySink for BitmapWindow<'_> {
    fn set_dirty(&mut self, iova: u64, length: u64) {
        let Some(last_byte) = length
            .checked_sub(1)
            .map(|l| iova.saturating_add(l))
            .filter(|&b| b >= self.iova)
        else {
            return;
        };
        let first = iova.saturating_sub(self.iova) >> self.log_page;
        let last = (last_byte.saturating_sub(self.iova) >> self.log_page)
            .min(self.pages.saturating_sub(1));
        let mut page = first;
        while page <= last {
            let Some(word) = usize::try_from(page / 64)
                .ok()
                .and_then(|w| self.bits.get_mut(w))
            else {
                return;
            };
            // CAST: page % 64 < 64.
            let bit = (page % 64) as u32;
            // Bits `bit..=bit + extra` of this word (whole words at once).
            let extra = last
                .saturating_sub(page)
                .min(u64::from(63u32.saturating_sub(bit)));
            // CAST: extra <= 63.
            let ones = u64::MAX
                .checked_shr(63u32.saturating_sub(extra as u32))
                .unwrap_or(0)
                .checked_shl(bit)
                .unwrap_or(0);
            *word |= ones;
            page = page.saturating_add(extra).saturating_add(1);
        }
    }
}
