//! Host memory for harnesses that drive the sim from `std` code: buffers at
//! disjoint IOVA ranges, each with the count of memory keys mapping it,
//! served to the device through [`Dma`].
//!
//! The core's tests and the fuzz targets keep their buffers here; their
//! `Hal`s decide when to map, unmap and free, and assert the contract.

use std::collections::BTreeMap;
use std::vec::Vec;

use crate::iommu::{Dma, DmaFault};

/// One host buffer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostBuffer {
    /// Its bytes.
    pub mem: Vec<u8>,
    /// Where the device sees it.
    pub iova: u64,
    /// Memory keys currently mapping it.
    pub maps: u32,
}

/// Host buffers by the harness's buffer id. Place them at disjoint IOVA
/// ranges (a guard page between them makes an off-by-one DMA fault).
///
/// ```
/// use mlx5vf_sim::host::{HostBuffer, HostMemory};
/// use mlx5vf_sim::Dma;
///
/// let mut mem = HostMemory::default();
/// mem.bufs.insert(1, HostBuffer { mem: vec![0; 4096], iova: 0x1000, maps: 0 });
/// mem.dma_write(0x1ff0, 16, &mut |b| b.fill(7)).unwrap();
/// assert_eq!(mem.bufs[&1].mem[0xff0], 7);
/// // Past the end of the buffer: a fault, not a panic.
/// assert!(mem.dma_read(0x1ff0, 17, &mut |_| {}).is_err());
/// ```
#[derive(Clone, Debug, Default)]
pub struct HostMemory {
    /// The buffers.
    pub bufs: BTreeMap<u64, HostBuffer>,
}

impl HostMemory {
    /// The `len` bytes at `iova`, if one buffer holds them all.
    fn find(&mut self, iova: u64, len: usize) -> Option<&mut [u8]> {
        let len = u64::try_from(len).ok()?;
        self.bufs.values_mut().find_map(|b| {
            let start = iova.checked_sub(b.iova)?;
            let end = start.checked_add(len)?;
            b.mem
                .get_mut(usize::try_from(start).ok()?..usize::try_from(end).ok()?)
        })
    }
}

impl Dma for HostMemory {
    fn dma_write(
        &mut self,
        iova: u64,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> Result<(), DmaFault> {
        fill(self.find(iova, len).ok_or(DmaFault)?);
        Ok(())
    }

    fn dma_read(
        &mut self,
        iova: u64,
        len: usize,
        consume: &mut dyn FnMut(&[u8]),
    ) -> Result<(), DmaFault> {
        consume(self.find(iova, len).ok_or(DmaFault)?);
        Ok(())
    }
}
