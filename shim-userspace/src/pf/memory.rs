//! DMA memory of a PF driven from this process: page-aligned host regions
//! at IOVAs, a registry of them by IOVA (the device's view, and the buffer
//! bytes data files copy), and an IOVA allocator that stays inside the
//! ranges the IOMMU reports.
//!
//! Regions are zeroed at allocation and never move while they live, so a
//! VFIO mapping of their host address stays valid. Host code reaches their
//! bytes under a lock; the device (a real one, through the IOMMU) writes
//! them without it, so the command queue only reads what the device wrote
//! after the entry's owner bit says the device is done, behind an acquire
//! fence (the ordering the kernel gets from `dma_rmb()`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use mlx5vf_core::errno::Errno;
use mlx5vf_core::hal::BufferId;
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use crate::local::BufferAccess;

/// Bytes per page.
pub const PAGE: u64 = 4096;

/// One page of DMA memory: page-aligned by its type, so a slice of them is
/// page-aligned memory without any `unsafe`.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C, align(4096))]
struct Page([u8; 4096]);

/// A region of DMA memory at an IOVA.
pub struct DmaRegion {
    iova: u64,
    len: u64,
    pages: Mutex<Box<[Page]>>,
}

impl std::fmt::Debug for DmaRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DmaRegion({:#x}+{:#x})", self.iova, self.len)
    }
}

fn range(offset: u64, len: u64, size: u64) -> Option<std::ops::Range<usize>> {
    let end = offset.checked_add(len)?;
    (end <= size).then_some(usize::try_from(offset).ok()?..usize::try_from(end).ok()?)
}

impl DmaRegion {
    /// `npages` zeroed pages that will sit at `iova`.
    ///
    /// # Errors
    /// `ENOMEM` when the memory cannot be had.
    pub fn new(iova: u64, npages: u64) -> Result<Self, Errno> {
        let n = usize::try_from(npages).map_err(|_| Errno::ENOMEM)?;
        let pages = <[Page]>::new_box_zeroed_with_elems(n).map_err(|_| Errno::ENOMEM)?;
        Ok(Self {
            iova,
            len: npages.saturating_mul(PAGE),
            pages: Mutex::new(pages),
        })
    }

    /// Where the device sees it.
    pub fn iova(&self) -> u64 {
        self.iova
    }

    /// Its length in bytes (whole pages).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it has no bytes (never: regions have at least one page).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The host address of its first byte (for an IOMMU mapping).
    pub fn host_address(&self) -> usize {
        self.lock().as_ptr() as usize
    }

    fn lock(&self) -> MutexGuard<'_, Box<[Page]>> {
        self.pages.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on bytes `[offset, offset + len)`.
    ///
    /// # Errors
    /// `EFAULT` for a range outside the region.
    pub fn with_bytes<R>(
        &self,
        offset: u64,
        len: u64,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, Errno> {
        let r = range(offset, len, self.len).ok_or(Errno::EFAULT)?;
        let pages = self.lock();
        Ok(f(pages.as_bytes().get(r).ok_or(Errno::EFAULT)?))
    }

    /// Runs `f` on bytes `[offset, offset + len)`, mutably.
    ///
    /// # Errors
    /// `EFAULT` for a range outside the region.
    pub fn with_bytes_mut<R>(
        &self,
        offset: u64,
        len: u64,
        f: impl FnOnce(&mut [u8]) -> R,
    ) -> Result<R, Errno> {
        let r = range(offset, len, self.len).ok_or(Errno::EFAULT)?;
        let mut pages = self.lock();
        Ok(f(pages.as_mut_bytes().get_mut(r).ok_or(Errno::EFAULT)?))
    }
}

/// Every live region by IOVA: the device's address space as this process
/// laid it out.
#[derive(Debug, Default)]
pub struct DmaSpace {
    regions: RwLock<BTreeMap<u64, Arc<DmaRegion>>>,
}

impl DmaSpace {
    /// Registers a region.
    pub fn insert(&self, region: Arc<DmaRegion>) {
        self.regions
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(region.iova, region);
    }

    /// Forgets the region at `iova`.
    pub fn remove(&self, iova: u64) -> Option<Arc<DmaRegion>> {
        self.regions
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&iova)
    }

    /// The region starting at `iova`.
    pub fn get(&self, iova: u64) -> Option<Arc<DmaRegion>> {
        self.regions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&iova)
            .cloned()
    }

    /// The region holding `[iova, iova + len)` and the offset of `iova`
    /// in it.
    pub fn find(&self, iova: u64, len: u64) -> Option<(Arc<DmaRegion>, u64)> {
        let map = self.regions.read().unwrap_or_else(PoisonError::into_inner);
        let (_, r) = map.range(..=iova).next_back()?;
        let off = iova.checked_sub(r.iova)?;
        (off.checked_add(len)? <= r.len).then(|| (Arc::clone(r), off))
    }

    /// Live regions and their bytes.
    pub fn usage(&self) -> (usize, u64) {
        let map = self.regions.read().unwrap_or_else(PoisonError::into_inner);
        (map.len(), map.values().map(|r| r.len).sum())
    }
}

impl BufferAccess for DmaSpace {
    fn with_bytes(
        &self,
        buffer: BufferId,
        offset: u64,
        len: u64,
        f: &mut dyn FnMut(&[u8]),
    ) -> Result<(), Errno> {
        self.get(buffer.0)
            .ok_or(Errno::ENODEV)?
            .with_bytes(offset, len, f)
    }

    fn with_bytes_mut(
        &self,
        buffer: BufferId,
        offset: u64,
        len: u64,
        f: &mut dyn FnMut(&mut [u8]),
    ) -> Result<(), Errno> {
        self.get(buffer.0)
            .ok_or(Errno::ENODEV)?
            .with_bytes_mut(offset, len, f)
    }
}

/// Hands out page-aligned IOVA ranges from the ranges an IOMMU accepts,
/// with an unmapped guard page after each (an overrunning DMA faults).
#[derive(Clone, Debug, Default)]
pub struct IovaAllocator {
    /// Free ranges `start -> end` (exclusive), disjoint, page-aligned.
    free: BTreeMap<u64, u64>,
}

impl IovaAllocator {
    /// An allocator over `ranges` (`[first, last]`, inclusive, as VFIO
    /// reports them), trimmed to whole pages; the first page of the address
    /// space is never handed out (a zero IOVA means "none" to the queue).
    pub fn new(ranges: &[(u64, u64)]) -> Self {
        let mut free = BTreeMap::new();
        for &(first, last) in ranges {
            let start = first.max(PAGE).div_ceil(PAGE).saturating_mul(PAGE);
            let end = last.saturating_add(1) / PAGE * PAGE;
            if end > start {
                free.insert(start, end);
            }
        }
        Self { free }
    }

    /// A range of `len` bytes (rounded up to pages) aligned to `align` (a
    /// power of two of at least a page), plus its guard page.
    pub fn alloc(&mut self, len: u64, align: u64) -> Option<u64> {
        let len = len.div_ceil(PAGE).checked_mul(PAGE)?.checked_add(PAGE)?;
        let align = align.max(PAGE);
        let (start, end, at) = self.free.iter().find_map(|(&s, &e)| {
            let at = s.checked_add(align - 1)? & !(align - 1);
            (at.checked_add(len)? <= e).then_some((s, e, at))
        })?;
        self.free.remove(&start);
        if at > start {
            self.free.insert(start, at);
        }
        let stop = at + len;
        if stop < end {
            self.free.insert(stop, end);
        }
        Some(at)
    }

    /// Returns a range [`IovaAllocator::alloc`] gave for `len` bytes.
    pub fn free(&mut self, at: u64, len: u64) {
        let Some(len) = len
            .div_ceil(PAGE)
            .checked_mul(PAGE)
            .and_then(|l| l.checked_add(PAGE))
        else {
            return;
        };
        let mut start = at;
        let mut end = at.saturating_add(len);
        if let Some((&s, &e)) = self.free.range(..start).next_back() {
            if e == start {
                self.free.remove(&s);
                start = s;
            }
        }
        if let Some(e) = self.free.remove(&end) {
            end = e;
        }
        self.free.insert(start, end);
    }

    /// Bytes free.
    pub fn free_bytes(&self) -> u64 {
        self.free.iter().map(|(s, e)| e - s).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_are_aligned_zeroed_and_bounded() {
        let r = DmaRegion::new(0x10_0000, 3).unwrap();
        assert_eq!(r.host_address() % 4096, 0);
        assert_eq!(r.len(), 3 * 4096);
        r.with_bytes(0, 3 * 4096, |b| assert!(b.iter().all(|x| *x == 0)))
            .unwrap();
        r.with_bytes_mut(4095, 2, |b| b.copy_from_slice(&[1, 2]))
            .unwrap();
        assert_eq!(r.with_bytes(4095, 2, <[u8]>::to_vec), Ok(vec![1, 2]));
        assert_eq!(r.with_bytes(3 * 4096 - 1, 2, |_| ()), Err(Errno::EFAULT));
        let space = DmaSpace::default();
        space.insert(Arc::new(r));
        assert_eq!(space.find(0x10_1000, 0x2000).map(|(_, o)| o), Some(0x1000));
        assert!(space.find(0x10_1000, 0x2001).is_none());
        assert!(space.find(0xf_ffff, 1).is_none());
    }

    #[test]
    fn iovas_stay_in_the_reported_ranges() {
        // VFIO's fallback ranges: below the MSI window and above it.
        let mut a = IovaAllocator::new(&[(0x10000, 0xfedf_ffff), (0xfef0_0000, (1 << 39) - 1)]);
        let total = a.free_bytes();
        let x = a.alloc(4096, 4096).unwrap();
        assert_eq!(x, 0x10000);
        let big = a.alloc(0xff00_0000, 4096).unwrap();
        assert_eq!(big, 0xfef0_0000, "too big for the first range");
        let y = a.alloc(100, 1 << 20).unwrap();
        assert_eq!(y % (1 << 20), 0);
        assert!(y > x);
        a.free(x, 4096);
        a.free(big, 0xff00_0000);
        a.free(y, 100);
        assert_eq!(a.free_bytes(), total, "everything coalesces back");
        assert_eq!(IovaAllocator::new(&[(0, 0xfff)]).alloc(1, 1), None);
        assert_eq!(
            IovaAllocator::new(&[(0, 0x2fff)]).alloc(4096, 1),
            Some(0x1000)
        );
    }
}
