//! The `vfio-pf:` backend: a ConnectX PF bound to `vfio-pci`, driven by
//! this process through its command queue — BAR0 through the VFIO region,
//! bus mastering through its config space, DMA memory mapped into its
//! container (`VFIO_IOMMU_MAP_DMA`) or IOAS (`IOMMU_IOAS_MAP`) at IOVAs
//! inside the ranges the IOMMU reports — with the migration driver on top
//! for one of its VFs ([`crate::pf`]).
//!
//! # Spec
//! `vfio-pf:PF[,vf=N][,iommu=auto|group|cdev][,timeout=DURATION][,checksums=on|off]`:
//! `PF` as `vfio-mig:` names a device (sysfs path or PCI name); `vf` the
//! VF to migrate (default 0); `iommu` as for `vfio-mig:`; `timeout` each
//! command's deadline (default: the firmware's `cmd_exec_to`); `checksums`
//! signatures on the queue (default off, as Linux).
//!
//! # Before it touches the device
//! From sysfs alone, before the VFIO device is opened (opening it makes
//! `vfio-pci` enable the function, and may reset it): the PF must be a
//! Mellanox/NVIDIA function (PCI vendor 0x15b3) bound to `vfio-pci`, with
//! SR-IOV enabled and VF `N` present (`sriov_numvfs`), and its IOMMU
//! group must not be a noiommu group (`vfio-pf` hands the device DMA
//! memory by IOVA). Once opened: BAR0 must be a readable and writable
//! region covering the initialization segment, and the config space must
//! say vendor 0x15b3 too. Then the queue checks the
//! command-interface revision (5) and waits out `initializing`.
//!
//! One device passes without being a PCI function: the kernel model of a
//! PF, a platform device bound to [`EMULATED_DRIVER`] (the `mlx5vf_pfsim`
//! module, `shim-linux/kmod/pfsim`), which offers a PF's BAR0 and config
//! space through the same VFIO regions and DMA through the same container.
//! For it, the PCI checks (vendor in sysfs, `vfio-pci`, `sriov_numvfs`)
//! give way to the config-space vendor and the VF's enable at bring-up,
//! and messages name it as emulated (whether it is one is read from sysfs
//! too, before the open).
//!
//! Completions are polled (no MSI-X or event queue is set up), and the
//! firmware's page requests for the VF are answered through QUERY_PAGES
//! at bring-up, not as events: see [`crate::pf::bringup`] for what this
//! driver does and does not set up.

mod spec;

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use mlx5vf_core::cmdq::iseg;

use crate::backend::DriverOptions;
use crate::pf::memory::{DmaRegion, DmaSpace};
use crate::pf::transport::Transport;
use crate::pf::{CmdqDevice, port_config};
use crate::vfio::sys::{self, RegionInfo};
use crate::vfio::{PfDma, open_pf, resolve_pf};
pub use spec::PfSpec;

/// Mellanox Technologies' PCI vendor id (ConnectX).
pub const MELLANOX_VENDOR: u16 = 0x15b3;
/// The driver of the kernel model of a PF (`mlx5vf_pfsim`): the one
/// device `vfio-pf:` takes that is not a PCI function.
pub const EMULATED_DRIVER: &str = "mlx5vf-pfsim";
/// IOVA ranges when the IOMMU reports none (rdma-core's fallback: below
/// the x86 MSI window and above it, to 39 bits).
const FALLBACK_RANGES: [(u64, u64); 2] = [(0x1_0000, 0xfedf_ffff), (0xfef0_0000, (1 << 39) - 1)];
/// PCI command register: memory space and bus master enable.
const PCI_COMMAND: u64 = 0x04;
const PCI_COMMAND_MEMORY_MASTER: u16 = 0x6;

/// A PF behind VFIO.
pub struct VfioPfTransport {
    name: String,
    kind: PfKind,
    sysfs: std::path::PathBuf,
    device: OwnedFd,
    dma: PfDma,
    bar0: RegionInfo,
    config: RegionInfo,
    ranges: Vec<(u64, u64)>,
}

fn err(what: impl std::fmt::Display) -> io::Error {
    io::Error::other(what.to_string())
}

fn sysfs_text(dir: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(name))
        .ok()
        .map(|s| s.trim().to_owned())
}

/// What kind of function a `vfio-pf:` spec names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PfKind {
    /// A PCI function (real hardware, or a PCI device QEMU emulates).
    Pci,
    /// The kernel model of a PF ([`EMULATED_DRIVER`]).
    Emulated,
}

/// The last component of the link `dir/name` points to.
fn link_name(dir: &Path, name: &str) -> Option<String> {
    std::fs::read_link(dir.join(name))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
}

/// The checks made from sysfs before the device is opened (module docs);
/// messages start with `spec` and the sysfs directory.
fn check_device(spec: &str, sysfs: &Path, vf: u16) -> io::Result<PfKind> {
    let at = format!("{spec} ({})", sysfs.display());
    let bus = link_name(sysfs, "subsystem");
    if bus.as_deref() != Some("pci") {
        let driver = link_name(sysfs, "driver");
        if driver.as_deref() == Some(EMULATED_DRIVER) {
            return Ok(PfKind::Emulated);
        }
        return Err(err(format!(
            "{at}: not a PCI function (bus {}, driver {}): vfio-pf drives ConnectX PFs, and the \
             emulated ones of the {EMULATED_DRIVER} kernel model",
            bus.unwrap_or_else(|| "unknown".into()),
            driver.unwrap_or_else(|| "none".into())
        )));
    }
    let vendor = sysfs_text(sysfs, "vendor").unwrap_or_default();
    if u16::from_str_radix(vendor.trim_start_matches("0x"), 16).ok() != Some(MELLANOX_VENDOR) {
        return Err(err(format!(
            "{at}: PCI vendor {vendor:?} is not Mellanox/NVIDIA (0x15b3): vfio-pf drives ConnectX \
             PFs only"
        )));
    }
    let driver = link_name(sysfs, "driver");
    if driver.as_deref() != Some("vfio-pci") {
        return Err(err(format!(
            "{at}: bound to {:?}, not vfio-pci (echo vfio-pci > driver_override, then bind)",
            driver.unwrap_or_else(|| "no driver".into())
        )));
    }
    let numvfs: u32 = sysfs_text(sysfs, "sriov_numvfs")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if u32::from(vf) >= numvfs {
        return Err(err(format!(
            "{at}: VF {vf} does not exist ({numvfs} VFs enabled; vfio-pci needs enable_sriov=1, \
             then echo N > sriov_numvfs)"
        )));
    }
    Ok(PfKind::Pci)
}

impl VfioPfTransport {
    /// Checks the PF a spec names from sysfs, then opens it and checks what
    /// needs the open device (module docs).
    ///
    /// # Errors
    /// The step that failed, naming the device.
    pub fn open(spec: &str, parsed: &PfSpec) -> io::Result<Self> {
        let sysfs = resolve_pf(spec, &parsed.device).map_err(io::Error::other)?;
        let kind = check_device(spec, &sysfs, parsed.vf)?;
        let opened = open_pf(spec, sysfs, parsed.iommu).map_err(io::Error::other)?;
        let name = match kind {
            PfKind::Pci => spec.to_owned(),
            PfKind::Emulated => format!("{spec} (emulated PF: {EMULATED_DRIVER})"),
        };
        let bar0 = sys::region_info(&opened.device, sys::BAR0_REGION)
            .map_err(|e| err(format!("{spec}: VFIO_DEVICE_GET_REGION_INFO (BAR0): {e}")))?;
        if bar0.flags & sys::REGION_READ_WRITE != sys::REGION_READ_WRITE
            || bar0.size < u64::from(iseg::SEGMENT_LEN)
        {
            return Err(err(format!(
                "{spec}: BAR0 is not a read-write region of at least {:#x} bytes (flags {:#x}, size {:#x})",
                iseg::SEGMENT_LEN,
                bar0.flags,
                bar0.size
            )));
        }
        let config = sys::region_info(&opened.device, sys::CONFIG_REGION)
            .map_err(|e| err(format!("{name}: VFIO_DEVICE_GET_REGION_INFO (config): {e}")))?;
        let ranges = match &opened.dma {
            PfDma::Container { container, .. } => sys::type1_iova_ranges(container),
            PfDma::Iommufd { iommufd, ioas } => sys::ioas_iova_ranges(iommufd, *ioas),
        }
        .map_err(|e| err(format!("{spec}: reading the IOVA ranges: {e}")))?;
        let ranges = if ranges.is_empty() {
            FALLBACK_RANGES.to_vec()
        } else {
            ranges
        };
        let transport = Self {
            name,
            kind,
            sysfs: opened.sysfs,
            device: opened.device,
            dma: opened.dma,
            bar0,
            config,
            ranges,
        };
        let mut id = [0u8; 2];
        transport
            .pread(transport.config.offset, &mut id)
            .map_err(|e| err(format!("{}: reading the vendor id: {e}", transport.name)))?;
        let vendor = u16::from_le_bytes(id);
        if vendor != MELLANOX_VENDOR {
            return Err(err(format!(
                "{}: config space says vendor {vendor:#06x}, not Mellanox/NVIDIA (0x15b3)",
                transport.name
            )));
        }
        Ok(transport)
    }

    /// What kind of function it is.
    pub fn kind(&self) -> PfKind {
        self.kind
    }

    fn pread(&self, at: u64, buf: &mut [u8]) -> io::Result<()> {
        let n = rustix::io::pread(&self.device, &mut *buf, at)?;
        if n != buf.len() {
            return Err(err(format!("short region read at {at:#x}")));
        }
        Ok(())
    }

    fn pwrite(&self, at: u64, buf: &[u8]) -> io::Result<()> {
        let n = rustix::io::pwrite(&self.device, buf, at)?;
        if n != buf.len() {
            return Err(err(format!("short region write at {at:#x}")));
        }
        Ok(())
    }
}

impl Transport for VfioPfTransport {
    fn describe(&self) -> String {
        self.name.clone()
    }

    fn read32(&self, offset: u32) -> io::Result<u32> {
        let mut b = [0u8; 4];
        self.pread(self.bar0.offset + u64::from(offset), &mut b)?;
        Ok(u32::from_be_bytes(b))
    }

    fn write32(&self, offset: u32, value: u32) -> io::Result<()> {
        self.pwrite(self.bar0.offset + u64::from(offset), &value.to_be_bytes())
    }

    fn enable_bus_master(&self) -> io::Result<()> {
        let mut b = [0u8; 2];
        let at = self.config.offset + PCI_COMMAND;
        self.pread(at, &mut b)?;
        let cmd = u16::from_le_bytes(b) | PCI_COMMAND_MEMORY_MASTER;
        self.pwrite(at, &cmd.to_le_bytes())
    }

    fn iova_ranges(&self) -> Vec<(u64, u64)> {
        self.ranges.clone()
    }

    fn map_dma(&self, region: &DmaRegion) -> io::Result<()> {
        let (va, iova, len) = (region.host_address(), region.iova(), region.len());
        match &self.dma {
            PfDma::Container { container, .. } => sys::type1_map(container.as_fd(), va, iova, len),
            PfDma::Iommufd { iommufd, ioas } => {
                sys::ioas_map(iommufd.as_fd(), *ioas, va, iova, len)
            }
        }
        .map_err(io::Error::from)
    }

    /// The emulated PF resets a VF through its model (`mlx5vf/vf_reset`);
    /// a PCI PF's VFs are functions of their own, reset by whoever holds
    /// them (a VMM's `VFIO_DEVICE_RESET` on the VF), not through the PF.
    fn reset_vf(&self, vf: u16) -> io::Result<()> {
        match self.kind {
            PfKind::Emulated => {
                std::fs::write(self.sysfs.join("mlx5vf/vf_reset"), format!("{vf}\n")).map_err(|e| {
                    err(format!(
                        "{}: resetting VF {vf} (mlx5vf/vf_reset): {e}",
                        self.name
                    ))
                })
            }
            PfKind::Pci => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "{}: a VF of a PCI PF is reset by its own holder (VFIO_DEVICE_RESET on the \
                     VF), not through the PF",
                    self.name
                ),
            )),
        }
    }

    /// The emulated PF's model shows its VFs' digests (`mlx5vf/digests`);
    /// hardware shows none.
    fn digest(&self, vf: u16) -> Option<String> {
        if self.kind != PfKind::Emulated {
            return None;
        }
        let text = std::fs::read_to_string(self.sysfs.join("mlx5vf/digests")).ok()?;
        let want = format!("vf{vf} ");
        text.lines()
            .find_map(|l| l.strip_prefix(want.as_str()))
            .map(str::to_owned)
    }

    fn unmap_dma(&self, region: &DmaRegion) -> io::Result<()> {
        let (iova, len) = (region.iova(), region.len());
        match &self.dma {
            PfDma::Container { container, .. } => sys::type1_unmap(container.as_fd(), iova, len),
            PfDma::Iommufd { iommufd, ioas } => sys::ioas_unmap(iommufd.as_fd(), *ioas, iova, len),
        }
        .map_err(io::Error::from)
    }
}

/// Opens `vfio-pf:…`: the PF behind VFIO, brought up, with the driver on
/// VF `vf`.
///
/// # Errors
/// The step that failed.
pub fn open(
    spec: &str,
    parsed: &PfSpec,
    opts: &DriverOptions,
) -> io::Result<CmdqDevice<VfioPfTransport>> {
    let transport = Arc::new(VfioPfTransport::open(spec, parsed)?);
    let space = Arc::new(DmaSpace::default());
    let name = transport.describe();
    CmdqDevice::open(
        &name,
        transport,
        space,
        parsed.vf,
        opts,
        port_config(parsed.checksums, parsed.timeout),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A made-up sysfs directory for the checks, of a device on the PCI bus.
    fn fake_sysfs(vendor: &str, driver: Option<&str>, numvfs: &str) -> PathBuf {
        fake_sysfs_on("pci", vendor, driver, numvfs)
    }

    fn fake_sysfs_on(bus: &str, vendor: &str, driver: Option<&str>, numvfs: &str) -> PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mlx5vf-pf-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("drivers")).unwrap();
        std::fs::write(dir.join("vendor"), format!("{vendor}\n")).unwrap();
        std::fs::write(dir.join("sriov_numvfs"), format!("{numvfs}\n")).unwrap();
        std::fs::create_dir_all(dir.join("bus").join(bus)).unwrap();
        std::os::unix::fs::symlink(dir.join("bus").join(bus), dir.join("subsystem")).unwrap();
        if let Some(d) = driver {
            std::fs::create_dir_all(dir.join("drivers").join(d)).unwrap();
            std::os::unix::fs::symlink(dir.join("drivers").join(d), dir.join("driver")).unwrap();
        }
        dir
    }

    #[test]
    fn the_device_is_checked_before_it_is_touched() {
        let cases = [
            ("0x15b3", Some("vfio-pci"), "2", 1, None),
            ("0x8086", Some("vfio-pci"), "2", 0, Some("is not Mellanox")),
            ("0x15b3", Some("mlx5_core"), "2", 0, Some("not vfio-pci")),
            ("0x15b3", None, "2", 0, Some("no driver")),
            (
                "0x15b3",
                Some("vfio-pci"),
                "0",
                0,
                Some("VF 0 does not exist (0 VFs"),
            ),
            (
                "0x15b3",
                Some("vfio-pci"),
                "2",
                2,
                Some("VF 2 does not exist"),
            ),
        ];
        for (vendor, driver, numvfs, vf, want) in cases {
            let dir = fake_sysfs(vendor, driver, numvfs);
            let r = check_device("vfio-pf:x", &dir, vf);
            std::fs::remove_dir_all(&dir).unwrap();
            match (r, want) {
                (Ok(PfKind::Pci), None) => {}
                (Err(e), Some(w)) => {
                    let m = e.to_string();
                    assert!(m.starts_with("vfio-pf:x (") && m.contains(w), "{m}");
                }
                (r, w) => panic!("{vendor} {driver:?} {numvfs} {vf}: {r:?}, wanted {w:?}"),
            }
        }
    }

    /// Off the PCI bus only the kernel model passes, and is named as such.
    #[test]
    fn only_the_kernel_model_passes_off_the_pci_bus() {
        let dir = fake_sysfs_on("platform", "", Some(EMULATED_DRIVER), "0");
        assert_eq!(
            check_device("vfio-pf:x", &dir, 3).unwrap(),
            PfKind::Emulated
        );
        std::fs::remove_dir_all(&dir).unwrap();
        let dir = fake_sysfs_on("platform", "0x15b3", Some("mlx5vf-sim"), "2");
        let e = check_device("vfio-pf:x", &dir, 0).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            e.contains("not a PCI function (bus platform, driver mlx5vf-sim)"),
            "{e}"
        );
    }

    /// A device that is no PF is refused from sysfs, before VFIO is asked
    /// for anything, naming the spec.
    #[test]
    fn a_device_without_vfio_is_refused_clearly() {
        let spec = "vfio-pf:/sys/devices/system/cpu/cpu0";
        let parsed = PfSpec::parse(spec).unwrap();
        let e = open(spec, &parsed, &DriverOptions::default())
            .err()
            .unwrap();
        let m = e.to_string();
        assert!(
            m.starts_with(spec) && m.contains("not a PCI function (bus cpu"),
            "{m}"
        );
    }

    /// The sysfs checks run before the device is opened: a function of
    /// another vendor is refused as such, not at the VFIO open its group
    /// (made up here: no such node) would fail.
    #[test]
    fn the_sysfs_checks_run_before_the_open() {
        let dir = fake_sysfs("0x8086", Some("vfio-pci"), "2");
        std::os::unix::fs::symlink(
            "../../kernel/iommu_groups/4294967295",
            dir.join("iommu_group"),
        )
        .unwrap();
        let spec = format!("vfio-pf:{}", dir.display());
        let parsed = PfSpec::parse(&spec).unwrap();
        let e = VfioPfTransport::open(&spec, &parsed).err().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let m = e.to_string();
        assert!(m.contains("is not Mellanox"), "{m}");
        assert!(!m.contains("/dev/vfio"), "nothing was opened: {m}");
    }
}
