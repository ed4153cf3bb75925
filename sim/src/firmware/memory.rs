//! Protection domains and MTT memory keys, and the DMA path from
//! `mkey + offset` through the IOMMU to host memory.

use crate::image::{Window, WindowFault};
use crate::iommu::{Dma, IommuTable, PAGE_SIZE};
use crate::syndrome::Syndrome;

/// Most live PDs. The Linux driver uses one per migration file (two per VF
/// at most); 64 covers every VF of the sim many times over.
pub const MAX_PDS: usize = 64;
/// Most live mkeys. Linux keeps at most a handful of buffers per file
/// (two stop-copy chunks, a pre-copy image or two, the resume buffer).
pub const MAX_MKEYS: usize = 64;
/// Most IOVA-contiguous runs in one mkey. A sim limitation: real MTT mkeys
/// take any page list, but shims that allocate IOVA ranges per buffer need
/// only one run; more fragmented lists fail with LIM_ERR.
pub const MAX_RUNS_PER_MKEY: usize = 64;
/// Runs over all live mkeys (also a sim limitation).
pub const MAX_RUNS_TOTAL: usize = 1024;
/// Most pages in one mkey: 4 GiB, the most a SAVE/LOAD (32-bit `size`)
/// can address.
pub const MAX_MKEY_PAGES: u64 = 1 << 20;
/// Largest piece handed to [`Dma`] in one call, so that a piece length
/// always fits `usize` on 32-bit hosts too.
const MAX_PIECE: u64 = 1 << 30;

/// A run of IOVA-contiguous pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Run {
    pub(crate) iova: u64,
    pub(crate) pages: u32,
}

impl Run {
    fn bytes(&self) -> u64 {
        u64::from(self.pages).saturating_mul(PAGE_SIZE)
    }
}

/// One live mkey.
#[derive(Clone, Copy, Debug)]
struct Mkey {
    index: u32,
    variant: u8,
    pd: u32,
    start_addr: u64,
    len: u64,
    /// Its runs: `runs[first..first + count]` of the shared pool.
    first: usize,
    count: usize,
}

/// What CREATE_MKEY decoded.
#[derive(Clone, Debug)]
pub(crate) struct NewMkey {
    pub(crate) variant: u8,
    pub(crate) pd: u32,
    pub(crate) start_addr: u64,
    pub(crate) len: u64,
    pub(crate) runs: heapless::Vec<Run, MAX_RUNS_PER_MKEY>,
}

/// Largest 24-bit PD / mkey index.
const MAX_24: u32 = 0x00ff_ffff;

/// PDs and mkeys.
#[derive(Clone, Debug, Default)]
pub(crate) struct Memory {
    pds: heapless::Vec<u32, MAX_PDS>,
    next_pd: u32,
    mkeys: heapless::Vec<Mkey, MAX_MKEYS>,
    runs: heapless::Vec<Run, MAX_RUNS_TOTAL>,
    next_mkey: u32,
}

/// Next value of a 24-bit counter that skips 0 and the values in use.
fn next_free(counter: &mut u32, in_use: impl Fn(u32) -> bool) -> u32 {
    // At most MAX_PDS / MAX_MKEYS values are in use, so this finds a free
    // one within that many + 1 steps.
    loop {
        *counter = if *counter >= MAX_24 {
            1
        } else {
            counter.saturating_add(1)
        };
        if !in_use(*counter) {
            return *counter;
        }
    }
}

impl Memory {
    /// No PDs, no mkeys.
    pub(crate) const EMPTY: Self = Self {
        pds: heapless::Vec::new(),
        next_pd: 0,
        mkeys: heapless::Vec::new(),
        runs: heapless::Vec::new(),
        next_mkey: 0,
    };

    /// Forgets every PD and mkey (a firmware reset).
    pub(crate) fn clear(&mut self) {
        self.pds.clear();
        self.next_pd = 0;
        self.mkeys.clear();
        self.runs.clear();
        self.next_mkey = 0;
    }

    /// ALLOC_PD.
    pub(crate) fn alloc_pd(&mut self) -> Result<u32, Syndrome> {
        if self.pds.is_full() {
            return Err(Syndrome::PdLimit);
        }
        let pds = &self.pds;
        let pd = next_free(&mut self.next_pd, |p| pds.contains(&p));
        self.pds.push(pd).map_err(|_| Syndrome::PdLimit)?;
        Ok(pd)
    }

    /// DEALLOC_PD.
    pub(crate) fn dealloc_pd(&mut self, pd: u32) -> Result<(), Syndrome> {
        let at = self
            .pds
            .iter()
            .position(|p| *p == pd)
            .ok_or(Syndrome::UnknownPd)?;
        if self.mkeys.iter().any(|m| m.pd == pd) {
            return Err(Syndrome::PdInUse);
        }
        self.pds.swap_remove(at);
        Ok(())
    }

    /// `true` when `pd` is allocated.
    pub(crate) fn has_pd(&self, pd: u32) -> bool {
        self.pds.contains(&pd)
    }

    /// CREATE_MKEY; returns the mkey index.
    pub(crate) fn create_mkey(&mut self, new: &NewMkey) -> Result<u32, Syndrome> {
        if !self.has_pd(new.pd) {
            return Err(Syndrome::UnknownPd);
        }
        if self.mkeys.is_full() {
            return Err(Syndrome::MkeyLimit);
        }
        let first = self.runs.len();
        if self.runs.extend_from_slice(&new.runs).is_err() {
            return Err(Syndrome::MkeyTooFragmented);
        }
        let mkeys = &self.mkeys;
        let index = next_free(&mut self.next_mkey, |i| mkeys.iter().any(|m| m.index == i));
        let mkey = Mkey {
            index,
            variant: new.variant,
            pd: new.pd,
            start_addr: new.start_addr,
            len: new.len,
            first,
            count: new.runs.len(),
        };
        if self.mkeys.push(mkey).is_err() {
            self.runs.truncate(first);
            return Err(Syndrome::MkeyLimit);
        }
        Ok(index)
    }

    /// DESTROY_MKEY by index.
    pub(crate) fn destroy_mkey(&mut self, index: u32) -> Result<(), Syndrome> {
        let at = self
            .mkeys
            .iter()
            .position(|m| m.index == index)
            .ok_or(Syndrome::UnknownMkey)?;
        let gone = self.mkeys.swap_remove(at);
        // Close the gap in the run pool and re-point the mkeys behind it.
        let end = gone.first.saturating_add(gone.count);
        if end <= self.runs.len() {
            self.runs.as_mut_slice().copy_within(end.., gone.first);
            self.runs
                .truncate(self.runs.len().saturating_sub(gone.count));
        }
        for m in self.mkeys.iter_mut().filter(|m| m.first >= end) {
            m.first = m.first.saturating_sub(gone.count);
        }
        Ok(())
    }

    /// Resolve a full key (`index << 8 | variant`) and a DMA range
    /// `[va, va + size)` to the mkey's runs and the offset of `va` in it.
    pub(crate) fn resolve(&self, key: u32, va: u64, size: u64) -> Result<(&[Run], u64), Syndrome> {
        let index = key >> 8;
        // CAST: the low byte of the key.
        let variant = (key & 0xff) as u8;
        let m = self
            .mkeys
            .iter()
            .find(|m| m.index == index)
            .ok_or(Syndrome::UnknownMkey)?;
        if m.variant != variant {
            return Err(Syndrome::MkeyVariant);
        }
        let offset = va.checked_sub(m.start_addr).ok_or(Syndrome::MkeyRange)?;
        let end = offset.checked_add(size).ok_or(Syndrome::MkeyRange)?;
        if end > m.len {
            return Err(Syndrome::MkeyRange);
        }
        let runs = m
            .first
            .checked_add(m.count)
            .and_then(|e| self.runs.get(m.first..e))
            .ok_or(Syndrome::UnknownMkey)?;
        Ok((runs, offset))
    }

    /// Live PDs.
    pub(crate) fn pd_count(&self) -> usize {
        self.pds.len()
    }

    /// Live mkeys.
    pub(crate) fn mkey_count(&self) -> usize {
        self.mkeys.len()
    }

    /// Bytes covered by live mkeys.
    pub(crate) fn mkey_bytes(&self) -> u64 {
        self.mkeys
            .iter()
            .fold(0u64, |acc, m| acc.saturating_add(m.len))
    }
}

/// Compress an MTT list (be64 IOVAs from byte 0 of `mtts`, `npages`
/// entries) into runs of IOVA-contiguous pages.
pub(crate) fn mtt_runs(
    mtts: &[u8],
    npages: u64,
) -> Result<heapless::Vec<Run, MAX_RUNS_PER_MKEY>, Syndrome> {
    let mut runs: heapless::Vec<Run, MAX_RUNS_PER_MKEY> = heapless::Vec::new();
    let count = usize::try_from(npages).map_err(|_| Syndrome::MkeyTooLarge)?;
    for entry in mtts.chunks_exact(8).take(count) {
        let raw = u64::from_be_bytes(entry.try_into().unwrap_or([0xff; 8]));
        let iova = raw & !crate::wire::mkey::MTT_PERM_MASK;
        if iova % PAGE_SIZE != 0 {
            return Err(Syndrome::MttNotAligned);
        }
        match runs.last_mut() {
            Some(last)
                if last.iova.checked_add(last.bytes()) == Some(iova) && last.pages < u32::MAX =>
            {
                last.pages = last.pages.saturating_add(1);
            }
            _ => runs
                .push(Run { iova, pages: 1 })
                .map_err(|_| Syndrome::MkeyTooFragmented)?,
        }
    }
    Ok(runs)
}

/// An image window through an mkey: image offset 0 is `base` bytes into the
/// mkey. Each piece handed to the host lies inside one run and one IOMMU
/// mapping.
pub(crate) struct MkeyWindow<'a> {
    pub(crate) runs: &'a [Run],
    pub(crate) base: u64,
    pub(crate) iommu: &'a IommuTable,
    pub(crate) dma: &'a mut dyn Dma,
}

/// Direction of a DMA walk.
enum Access<'f> {
    Write(&'f mut dyn FnMut(u64, &mut [u8])),
    Read(&'f mut dyn FnMut(u64, &[u8])),
}

impl MkeyWindow<'_> {
    /// Walk `[pos, pos + len)` of the image piece by piece.
    fn walk(&mut self, pos: u64, len: u64, mut access: Access<'_>) -> Result<(), WindowFault> {
        let mut done = 0u64;
        while done < len {
            let image_pos = pos.saturating_add(done);
            let offset = self.base.saturating_add(image_pos);
            let (iova, in_run) = locate(self.runs, offset).ok_or(WindowFault::Unmapped)?;
            let mapped = self.iommu.mapped_run(iova);
            if mapped == 0 {
                return Err(WindowFault::Unmapped);
            }
            // CAST: usize -> u64 is lossless on every target we build.
            let host_limit = (self.dma.max_access() as u64).max(PAGE_SIZE);
            let piece = len
                .saturating_sub(done)
                .min(in_run)
                .min(mapped)
                .min(MAX_PIECE)
                .min(host_limit);
            let n = usize::try_from(piece).map_err(|_| WindowFault::Unmapped)?;
            let mut short = false;
            let result = match &mut access {
                Access::Write(fill) => self.dma.dma_write(iova, n, &mut |s| {
                    if s.len() == n {
                        fill(image_pos, s);
                    } else {
                        short = true;
                    }
                }),
                Access::Read(consume) => self.dma.dma_read(iova, n, &mut |s| {
                    if s.len() == n {
                        consume(image_pos, s);
                    } else {
                        short = true;
                    }
                }),
            };
            if result.is_err() || short {
                return Err(WindowFault::Host);
            }
            done = done.saturating_add(piece);
        }
        Ok(())
    }
}

/// The IOVA of mkey offset `offset` and the bytes left in its run.
fn locate(runs: &[Run], offset: u64) -> Option<(u64, u64)> {
    let mut start = 0u64;
    for run in runs {
        let end = start.checked_add(run.bytes())?;
        if offset < end {
            let into = offset.saturating_sub(start);
            return Some((run.iova.checked_add(into)?, end.saturating_sub(offset)));
        }
        start = end;
    }
    None
}

impl Window for MkeyWindow<'_> {
    fn write(
        &mut self,
        pos: u64,
        len: u64,
        fill: &mut dyn FnMut(u64, &mut [u8]),
    ) -> Result<(), WindowFault> {
        self.walk(pos, len, Access::Write(fill))
    }

    fn read(
        &mut self,
        pos: u64,
        len: u64,
        consume: &mut dyn FnMut(u64, &[u8]),
    ) -> Result<(), WindowFault> {
        self.walk(pos, len, Access::Read(consume))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mtts(iovas: &[u64]) -> std::vec::Vec<u8> {
        iovas.iter().flat_map(|i| i.to_be_bytes()).collect()
    }

    #[test]
    fn runs_compress_and_mask_permissions() {
        let r = mtt_runs(&mtts(&[0x1000 | 3, 0x2000, 0x3000 | 1, 0x9000]), 4).unwrap();
        assert_eq!(
            r.as_slice(),
            &[
                Run {
                    iova: 0x1000,
                    pages: 3
                },
                Run {
                    iova: 0x9000,
                    pages: 1
                }
            ]
        );
        assert_eq!(mtt_runs(&mtts(&[0x1004]), 1), Err(Syndrome::MttNotAligned));
        let scattered: std::vec::Vec<u64> = (0..65).map(|i| i * 0x2000).collect();
        assert_eq!(
            mtt_runs(&mtts(&scattered), 65),
            Err(Syndrome::MkeyTooFragmented)
        );
        assert_eq!(locate(&r, 0), Some((0x1000, 0x3000)));
        assert_eq!(locate(&r, 0x2ff0), Some((0x3ff0, 0x10)));
        assert_eq!(locate(&r, 0x3000), Some((0x9000, 0x1000)));
        assert_eq!(locate(&r, 0x4000), None);
    }

    #[test]
    fn pd_and_mkey_lifecycle() {
        let mut m = Memory::default();
        let pd = m.alloc_pd().unwrap();
        let new = NewMkey {
            variant: 0x42,
            pd,
            start_addr: 0,
            len: 0x2000,
            runs: mtt_runs(&mtts(&[0x1000, 0x2000]), 2).unwrap(),
        };
        let a = m.create_mkey(&new).unwrap();
        let b = m.create_mkey(&new).unwrap();
        assert_ne!(a, b);
        assert_eq!(m.dealloc_pd(pd), Err(Syndrome::PdInUse));
        assert_eq!(
            m.resolve(a << 8 | 0x41, 0, 1).unwrap_err(),
            Syndrome::MkeyVariant
        );
        assert_eq!(
            m.resolve(a << 8 | 0x42, 0x1000, 0x1001).unwrap_err(),
            Syndrome::MkeyRange
        );
        assert_eq!(m.resolve(a << 8 | 0x42, 0x1000, 0x1000).unwrap().1, 0x1000);
        m.destroy_mkey(a).unwrap();
        assert_eq!(m.destroy_mkey(a), Err(Syndrome::UnknownMkey));
        assert_eq!(m.resolve(b << 8 | 0x42, 0, 0x2000).unwrap().0.len(), 1);
        m.destroy_mkey(b).unwrap();
        m.dealloc_pd(pd).unwrap();
        assert_eq!(m.dealloc_pd(pd), Err(Syndrome::UnknownPd));
        assert_eq!((m.pd_count(), m.mkey_count(), m.runs.len()), (0, 0, 0));
    }
}
