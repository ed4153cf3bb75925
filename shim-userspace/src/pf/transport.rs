//! What the command queue needs from the device it drives: BAR0 registers,
//! IOMMU mappings of DMA memory, and (where there is one) a completion
//! signal. Two implementations: the register-level model in this process
//! ([`super::sim`], `sim:…,transport=cmdq`) and a real PF through VFIO
//! ([`crate::vfio_pf`], `vfio-pf:`).

use std::io;
use std::time::Duration;

use super::memory::DmaRegion;

/// A PF's BAR0 and its IOMMU, as the driver reaches them.
pub trait Transport: Send + Sync + 'static {
    /// What it is, for messages.
    fn describe(&self) -> String;

    /// Reads a 32-bit BAR0 register (the value `ioread32be` gives).
    ///
    /// # Errors
    /// The access failed (the device is gone, the region is not readable).
    fn read32(&self, offset: u32) -> io::Result<u32>;

    /// Writes a 32-bit BAR0 register (as `iowrite32be`).
    ///
    /// # Errors
    /// The access failed.
    fn write32(&self, offset: u32, value: u32) -> io::Result<()>;

    /// Lets the function master the bus (PCI command: memory + bus master),
    /// so its DMA reaches memory at all.
    ///
    /// # Errors
    /// The config space write failed.
    fn enable_bus_master(&self) -> io::Result<()>;

    /// The IOVA ranges the IOMMU accepts, `[first, last]` inclusive.
    fn iova_ranges(&self) -> Vec<(u64, u64)>;

    /// Maps `region` at its IOVA for device reads and writes.
    ///
    /// # Errors
    /// The IOMMU refused (out of space, a bad range, the limit of mappings).
    fn map_dma(&self, region: &DmaRegion) -> io::Result<()>;

    /// Unmaps what [`Transport::map_dma`] mapped.
    ///
    /// # Errors
    /// The IOMMU refused: the region is still mapped, so the caller keeps
    /// its memory and IOVA (quarantined, counted) until the transport
    /// closes, whose close removes the mapping.
    fn unmap_dma(&self, region: &DmaRegion) -> io::Result<()>;

    /// Waits up to `timeout` for the device to signal completion of a slot
    /// in `mask` and returns the signalled ones (forgetting them). A
    /// transport without completion signals sleeps a little (at most
    /// `timeout`) and returns 0: the queue then polls the entries.
    fn wait_completion(&self, mask: u32, timeout: Duration) -> u32 {
        let _ = mask;
        if !timeout.is_zero() {
            std::thread::sleep(timeout);
        }
        0
    }

    /// A function-level reset of VF `vf` (the migration uAPI's
    /// `VFIO_DEVICE_RESET`), where the transport can do one.
    ///
    /// # Errors
    /// `Unsupported` by default.
    fn reset_vf(&self, vf: u16) -> io::Result<()> {
        let _ = vf;
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this PF transport cannot reset a VF",
        ))
    }

    /// A digest of VF `vf`'s state, where the transport can see it (the
    /// model can, hardware cannot).
    fn digest(&self, vf: u16) -> Option<String> {
        let _ = vf;
        None
    }
}
