//! The register-level model as a [`Transport`]: `sim:…,transport=cmdq`.
//! The same command queue, bring-up and `Hal` as `vfio-pf:`, with
//! [`mlx5vf_sim::pf`] behind BAR0 and its IOMMU table standing in for the
//! real one; the model reaches the port's DMA memory through its registry.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use mlx5vf_sim::firmware::{Firmware, FirmwareConfig};
use mlx5vf_sim::iommu::{Dma, DmaFault};
use mlx5vf_sim::pf::device::PfDevice;
use mlx5vf_sim::pf::{Pf, RegisterConfig};
use mlx5vf_sim::spec::SimSpec;
use mlx5vf_sim::timing::TimingModel;

use super::CmdqDevice;
use super::memory::{DmaRegion, DmaSpace};
use super::port::PortConfig;
use super::transport::Transport;
use crate::backend::DriverOptions;

/// The model's DMA into the port's memory.
struct SpaceDma(Arc<DmaSpace>);

impl Dma for SpaceDma {
    fn dma_write(
        &mut self,
        iova: u64,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> Result<(), DmaFault> {
        let (r, off) = self.0.find(iova, len as u64).ok_or(DmaFault)?;
        r.with_bytes_mut(off, len as u64, |b| fill(b))
            .map_err(|_| DmaFault)
    }

    fn dma_read(
        &mut self,
        iova: u64,
        len: usize,
        consume: &mut dyn FnMut(&[u8]),
    ) -> Result<(), DmaFault> {
        let (r, off) = self.0.find(iova, len as u64).ok_or(DmaFault)?;
        r.with_bytes(off, len as u64, |b| consume(b))
            .map_err(|_| DmaFault)
    }
}

/// A register-level simulated PF.
pub struct SimTransport {
    dev: PfDevice,
    spec: String,
}

/// IOVA ranges like an x86 IOMMU reports them: everything below the MSI
/// window and above it, up to 48 bits.
const IOVA_RANGES: [(u64, u64); 2] = [(0, 0xfedf_ffff), (0xfef0_0000, (1 << 48) - 1)];

impl SimTransport {
    /// A model of the PF `parsed` describes, with registers `regs`,
    /// reaching host memory through `space`.
    ///
    /// # Errors
    /// The spec describes no valid firmware, or the firmware thread did
    /// not start.
    pub fn new(
        spec: &str,
        parsed: &SimSpec,
        regs: RegisterConfig,
        space: &Arc<DmaSpace>,
    ) -> io::Result<Self> {
        let fw = Firmware::new(&FirmwareConfig::from_spec(parsed))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("sim: {e}")))?;
        let pf = Box::new(Pf::new(fw, regs));
        let dev = PfDevice::new(
            pf,
            Box::new(SpaceDma(Arc::clone(space))),
            TimingModel::from_spec(parsed),
        )?;
        Ok(Self {
            dev,
            spec: spec.to_owned(),
        })
    }

    /// Runs `f` on the model (fault knobs, the firmware, counters).
    pub fn with_pf<R>(&self, f: impl FnOnce(&mut Pf) -> R) -> R {
        self.dev.with_pf(f)
    }
}

impl Transport for SimTransport {
    fn describe(&self) -> String {
        self.spec.clone()
    }

    fn read32(&self, offset: u32) -> io::Result<u32> {
        Ok(self.dev.read32(offset))
    }

    fn write32(&self, offset: u32, value: u32) -> io::Result<()> {
        self.dev.write32(offset, value);
        Ok(())
    }

    fn enable_bus_master(&self) -> io::Result<()> {
        Ok(())
    }

    fn iova_ranges(&self) -> Vec<(u64, u64)> {
        IOVA_RANGES.to_vec()
    }

    fn map_dma(&self, region: &DmaRegion) -> io::Result<()> {
        self.dev
            .with_pf(|pf| pf.firmware_mut().iommu_map(region.iova(), region.len()))
            .map_err(io::Error::other)
    }

    fn unmap_dma(&self, region: &DmaRegion) -> io::Result<()> {
        self.dev
            .with_pf(|pf| pf.firmware_mut().iommu_unmap(region.iova(), region.len()))
            .map_err(io::Error::other)
    }

    fn wait_completion(&self, mask: u32, timeout: Duration) -> u32 {
        self.dev.wait_completion(mask, timeout)
    }

    fn reset_vf(&self, vf: u16) -> io::Result<()> {
        self.dev.with_pf(|pf| pf.firmware_mut().reset_vf(vf));
        Ok(())
    }

    fn digest(&self, vf: u16) -> Option<String> {
        self.dev
            .with_pf(|pf| pf.firmware().digest(vf))
            .map(|d| d.to_string())
    }
}

/// Opens `sim:…,transport=cmdq`: VF 0 of a register-level model, driven
/// through its command queue.
///
/// # Errors
/// As [`CmdqDevice::open`].
pub fn open(
    spec: &str,
    parsed: &SimSpec,
    opts: &DriverOptions,
) -> io::Result<CmdqDevice<SimTransport>> {
    open_with(
        spec,
        parsed,
        opts,
        RegisterConfig::DEFAULT,
        PortConfig::default(),
    )
}

/// [`open`] with the model's registers and the queue's settings chosen
/// (tests: short timeouts, checksums).
///
/// # Errors
/// As [`CmdqDevice::open`].
pub fn open_with(
    spec: &str,
    parsed: &SimSpec,
    opts: &DriverOptions,
    regs: RegisterConfig,
    cfg: PortConfig,
) -> io::Result<CmdqDevice<SimTransport>> {
    let space = Arc::new(DmaSpace::default());
    let transport = Arc::new(SimTransport::new(spec, parsed, regs, &space)?);
    CmdqDevice::open(spec, transport, space, 0, opts, cfg)
}
