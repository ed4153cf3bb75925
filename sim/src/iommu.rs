//! The host side of device DMA: the [`Dma`] trait through which the sim
//! touches host memory, and the IOMMU table of IOVA ranges the host has
//! mapped for the device.
//!
//! The sim never owns host memory. A SAVE or LOAD resolves `mkey + va` to
//! IOVA pieces (see [`crate::firmware`]); each piece must lie inside one
//! registered mapping, or the command fails with a DMA fault (INT_ERR), as a
//! real IOMMU would fault the access. Only then is the host asked, through
//! [`Dma`], for the bytes.

use core::fmt;

/// The page size of IOMMU mappings and MTT entries.
pub const PAGE_SIZE: u64 = 4096;

/// How many IOVA ranges can be mapped at once.
///
/// A migration maps a handful of buffers per file (the kernel: two chunk
/// buffers plus one buffer per pre-copy image); 1024 leaves room for shims
/// that map each buffer page by page (up to 4 MiB that way) and for tests
/// that deliberately fragment. Exceeding it is an [`IommuError::TableFull`].
pub const MAX_MAPPINGS: usize = 1024;

/// The host refused a DMA access (bad IOVA, memory gone...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DmaFault;

impl fmt::Display for DmaFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("host DMA fault")
    }
}

impl core::error::Error for DmaFault {}

/// Host memory as the device sees it.
///
/// # Contract
/// The sim only calls these methods for a range that lies inside one
/// contiguous IOVA run of an mkey *and* inside one range registered with
/// [`Firmware::iommu_map`](crate::Firmware::iommu_map); `len` is never 0.
/// The implementation calls the closure exactly once with a slice of exactly
/// `len` bytes, or returns [`DmaFault`] without calling it. Accesses through
/// an mkey are at most [`max_access`](Self::max_access) bytes long.
pub trait Dma {
    /// Give the device write access to `len` bytes at `iova`.
    ///
    /// # Errors
    /// [`DmaFault`] if the host cannot provide that memory.
    fn dma_write(
        &mut self,
        iova: u64,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> Result<(), DmaFault>;

    /// Give the device read access to `len` bytes at `iova`.
    ///
    /// # Errors
    /// [`DmaFault`] if the host cannot provide that memory.
    fn dma_read(
        &mut self,
        iova: u64,
        len: usize,
        consume: &mut dyn FnMut(&[u8]),
    ) -> Result<(), DmaFault>;

    /// The longest access the host takes at once (default: no limit). A
    /// host that copies through a bounce buffer (a kernel model reaching
    /// user memory with `vfio_dma_rw()`) returns its size; the firmware
    /// then splits SAVE and LOAD data into pieces of at most this many
    /// bytes. Values below [`PAGE_SIZE`] count as [`PAGE_SIZE`]: the
    /// queue's entries, mailbox blocks and page markers are never split.
    fn max_access(&self) -> usize {
        usize::MAX
    }
}

impl<D: Dma + ?Sized> Dma for &mut D {
    fn dma_write(
        &mut self,
        iova: u64,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> Result<(), DmaFault> {
        (**self).dma_write(iova, len, fill)
    }

    fn dma_read(
        &mut self,
        iova: u64,
        len: usize,
        consume: &mut dyn FnMut(&[u8]),
    ) -> Result<(), DmaFault> {
        (**self).dma_read(iova, len, consume)
    }

    fn max_access(&self) -> usize {
        (**self).max_access()
    }
}

/// A [`Dma`] with no memory behind it: every access faults. For commands
/// that do no DMA.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoDma;

impl Dma for NoDma {
    fn dma_write(
        &mut self,
        _iova: u64,
        _len: usize,
        _fill: &mut dyn FnMut(&mut [u8]),
    ) -> Result<(), DmaFault> {
        Err(DmaFault)
    }

    fn dma_read(
        &mut self,
        _iova: u64,
        _len: usize,
        _consume: &mut dyn FnMut(&[u8]),
    ) -> Result<(), DmaFault> {
        Err(DmaFault)
    }
}

/// Why an IOMMU map/unmap request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IommuError {
    /// `len` is zero.
    ZeroLength,
    /// `iova` or `len` is not a multiple of [`PAGE_SIZE`].
    Misaligned,
    /// `iova + len` overflows the 64-bit IOVA space.
    Overflow,
    /// The range overlaps an existing mapping.
    Overlap,
    /// [`MAX_MAPPINGS`] mappings already exist.
    TableFull,
    /// Nothing is mapped in the range.
    NotMapped,
    /// The range cuts through a mapping (mappings are unmapped whole).
    PartialUnmap,
}

impl fmt::Display for IommuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ZeroLength => "IOMMU: zero-length range",
            Self::Misaligned => "IOMMU: range is not 4 KiB aligned",
            Self::Overflow => "IOMMU: range overflows the IOVA space",
            Self::Overlap => "IOMMU: range overlaps an existing mapping",
            Self::TableFull => "IOMMU: mapping table full",
            Self::NotMapped => "IOMMU: nothing mapped in range",
            Self::PartialUnmap => "IOMMU: range cuts through a mapping",
        })
    }
}

impl core::error::Error for IommuError {}

/// One mapped IOVA range `[iova, iova + len)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Mapping {
    iova: u64,
    len: u64,
}

impl Mapping {
    /// One past the last byte (never overflows: checked at map time).
    fn end(&self) -> u64 {
        self.iova.saturating_add(self.len)
    }
}

/// The IOVA ranges the host has mapped for the device, sorted and disjoint.
#[derive(Clone, Debug, Default)]
pub struct IommuTable {
    maps: heapless::Vec<Mapping, MAX_MAPPINGS>,
}

impl IommuTable {
    /// An empty table.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            maps: heapless::Vec::new(),
        }
    }

    /// Removes every mapping.
    pub fn clear(&mut self) {
        self.maps.clear();
    }

    /// Register `[iova, iova + len)` as mapped.
    ///
    /// # Errors
    /// Zero or misaligned ranges, overflow, overlap, or a full table.
    pub fn map(&mut self, iova: u64, len: u64) -> Result<(), IommuError> {
        let end = check_range(iova, len)?;
        // First mapping that ends after `iova`: the only one that can overlap
        // from below; everything from there on starts at or after it.
        let at = self.maps.partition_point(|m| m.end() <= iova);
        if self.maps.get(at).is_some_and(|m| m.iova < end) {
            return Err(IommuError::Overlap);
        }
        self.maps
            .insert(at, Mapping { iova, len })
            .map_err(|_| IommuError::TableFull)
    }

    /// Remove every mapping inside `[iova, iova + len)`.
    ///
    /// # Errors
    /// Zero or misaligned ranges, overflow, a range that cuts through a
    /// mapping, or one that covers none.
    pub fn unmap(&mut self, iova: u64, len: u64) -> Result<(), IommuError> {
        let end = check_range(iova, len)?;
        let first = self.maps.partition_point(|m| m.end() <= iova);
        let last = self.maps.partition_point(|m| m.iova < end);
        let covered = self.maps.get(first..last).unwrap_or(&[]);
        if covered.is_empty() {
            return Err(IommuError::NotMapped);
        }
        if covered.iter().any(|m| m.iova < iova || m.end() > end) {
            return Err(IommuError::PartialUnmap);
        }
        let removed = last.saturating_sub(first);
        self.maps.as_mut_slice().copy_within(last.., first);
        self.maps.truncate(self.maps.len().saturating_sub(removed));
        Ok(())
    }

    /// How many bytes starting at `iova` lie inside the mapping containing
    /// `iova` (0 when `iova` is not mapped).
    #[must_use]
    pub fn mapped_run(&self, iova: u64) -> u64 {
        let at = self.maps.partition_point(|m| m.end() <= iova);
        match self.maps.get(at) {
            Some(m) if m.iova <= iova => m.end().saturating_sub(iova),
            _ => 0,
        }
    }

    /// Number of live mappings.
    #[must_use]
    pub fn count(&self) -> usize {
        self.maps.len()
    }

    /// Bytes mapped in total.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.maps
            .iter()
            .fold(0u64, |acc, m| acc.saturating_add(m.len))
    }
}

/// Validate a map/unmap range and return its end.
fn check_range(iova: u64, len: u64) -> Result<u64, IommuError> {
    if len == 0 {
        return Err(IommuError::ZeroLength);
    }
    if iova % PAGE_SIZE != 0 || len % PAGE_SIZE != 0 {
        return Err(IommuError::Misaligned);
    }
    iova.checked_add(len).ok_or(IommuError::Overflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_lookup_unmap() {
        let mut t = IommuTable::new();
        t.map(0x10_000, 0x4000).unwrap();
        t.map(0x20_000, 0x1000).unwrap();
        assert_eq!(t.map(0x12_000, 0x1000), Err(IommuError::Overlap));
        assert_eq!(t.map(0xf_000, 0x2000), Err(IommuError::Overlap));
        assert_eq!(t.map(0x1000, 0x10), Err(IommuError::Misaligned));
        assert_eq!(t.map(0, 0), Err(IommuError::ZeroLength));
        assert_eq!(t.map(u64::MAX - 0xffe, 0x1000), Err(IommuError::Misaligned));
        assert_eq!(
            t.map(0xffff_ffff_ffff_f000, 0x2000),
            Err(IommuError::Overflow)
        );
        assert_eq!(t.mapped_run(0x10_000), 0x4000);
        assert_eq!(t.mapped_run(0x13_ff0), 0x10);
        assert_eq!(t.mapped_run(0x14_000), 0);
        assert_eq!(t.count(), 2);
        assert_eq!(t.bytes(), 0x5000);
        assert_eq!(t.unmap(0x11_000, 0x1000), Err(IommuError::PartialUnmap));
        assert_eq!(t.unmap(0x30_000, 0x1000), Err(IommuError::NotMapped));
        t.unmap(0x0, 0x100_000).unwrap();
        assert_eq!(t.count(), 0);
        assert_eq!(t.bytes(), 0);
    }

    #[test]
    fn table_full_is_an_error() {
        let mut t = IommuTable::new();
        for i in 0..MAX_MAPPINGS as u64 {
            t.map(i * 2 * PAGE_SIZE, PAGE_SIZE).unwrap();
        }
        assert_eq!(t.map(1 << 40, PAGE_SIZE), Err(IommuError::TableFull));
    }
}
