//! A register-level PF: the simulated firmware ([`crate::firmware`]) behind
//! BAR0 and a command queue in host memory, as a driver that owns the PF
//! (`mlx5vf`'s `vfio-pf:` backend) sees a ConnectX.
//!
//! # BAR0 (`reference/mlx5-ifc.md` §4.1)
//! [`Pf::read32`] and [`Pf::write32`] serve the initialization segment:
//! `fw_rev`, `cmdif_rev_fw_sub` (revision 5), `cmdq_addr_h` /
//! `cmdq_addr_l_sz` (the queue's bus address; read back with
//! `log_cmdq_size` 5 and `log_cmdq_stride` 6 and the `nic_interface`),
//! `cmd_dbell`, `initializing` (bit 31 set for the first
//! [`RegisterConfig::initializing_reads`] reads), the health buffer and
//! `health_counter` (advancing on every read while the firmware lives).
//! Values are the registers as numbers, what `ioread32be` returns.
//!
//! # The command queue
//! A doorbell marks slots pending ([`Pf::take_doorbells`]); the owner of
//! the model runs each with [`Pf::execute`], which reads the entry and the
//! input chain from host memory by IOVA (through the IOMMU table of the
//! firmware: an unmapped address is a DMA fault), checks them as firmware
//! does (type, lengths, block numbers, tokens, alignment, signatures once
//! checksums are on) and answers a bad one with a delivery status; runs the
//! command; writes the output into the entry and the output chain; hands
//! the entry back (owner bit clear) and reports the completion. The model
//! has its own decoder of the entry and block formats, written from the
//! reference, not `mlx5vf-core`'s.
//!
//! Which command runs when is the owner's choice: the `std` device
//! ([`device`]) runs SAVE and LOAD on a worker thread (they complete
//! asynchronously, as on hardware) and everything else at the doorbell.
//!
//! # The function's lifecycle
//! The PF starts disabled, with every VF detached. It needs, in order:
//! ENABLE_HCA(0); QUERY_ISSI / SET_ISSI(1) (ISSI 0 also works); its boot
//! pages (QUERY_PAGES(BOOT) + MANAGE_PAGES(GIVE)); optionally
//! QUERY_HCA_CAP and SET_HCA_CAP (general caps; `cmdif_checksum = 3` turns
//! signature checking on); its init pages; INIT_HCA. PD, mkey and
//! migration commands and VF enables need INIT_HCA. A VF is enabled with
//! ENABLE_HCA(n + 1) and attached once its pages are given (it asks
//! through QUERY_PAGES(REGULAR, n + 1): the model has no event queue, so
//! page requests are polled rather than delivered as events). TEARDOWN_HCA
//! detaches the VFs and makes every page returnable: MANAGE_PAGES(TAKE)
//! hands back up to the count asked of the pages held for that function,
//! and QUERY_PAGES never announces them (no negative counts: the driver
//! takes back by its own count); DISABLE_HCA(0) refuses while firmware
//! still holds pages. Given pages are written through DMA (a marker per
//! page), so a page the device cannot reach fails the GIVE.
//!
//! # Faults ([`QueueFault`], [`Pf::set_health_syndrome`], ...)
//! A stuck firmware (the entry is never handed back), a completion
//! signalled while the entry stays owned by hardware, a wrong token, a
//! chosen delivery status, a cut output chain; a health syndrome (the
//! firmware stops executing commands), a frozen health counter, and pages
//! withheld from MANAGE_PAGES(TAKE) ([`Pf::withhold_pages`]).

#[cfg(feature = "std")]
pub mod device;
mod lifecycle;
mod queue;

pub use queue::{Executed, Peek};

use crate::firmware::{ConfigError, Firmware, FirmwareConfig, MAX_VFS};
use crate::iommu::Dma;

/// Bytes of one command-queue entry.
pub const ENTRY_SIZE: usize = 64;
/// Most pages firmware holds at once (the model's pages are counted, not
/// used: boot + init + per-VF pages of [`RegisterConfig::DEFAULT`] are 64
/// for 4 VFs; 256 leaves room for drivers that give more).
pub const MAX_FW_PAGES: usize = 256;
/// Longest command input the model accepts: CREATE_MKEY with the largest
/// MTT ([`crate::firmware::MAX_MKEY_PAGES`] entries).
pub const MAX_INLEN: usize = 272 + 8 * (1 << 20);
/// Longest command output: QUERY_HCA_CAP's 4112 bytes (MANAGE_PAGES(TAKE)
/// returning every page needs less).
pub const MAX_OUTLEN: usize = 4112;
/// Fault rules armed at once.
pub const MAX_QUEUE_FAULTS: usize = 8;

const _: () = assert!(16 + 8 * MAX_FW_PAGES <= MAX_OUTLEN);

/// Register offsets (`mlx5_init_seg`).
pub mod reg {
    /// `fw_rev`.
    pub const FW_REV: u32 = 0x000;
    /// `cmdif_rev_fw_sub`.
    pub const CMDIF_REV_FW_SUB: u32 = 0x004;
    /// `cmdq_addr_h`.
    pub const CMDQ_ADDR_H: u32 = 0x010;
    /// `cmdq_addr_l_sz`.
    pub const CMDQ_ADDR_L_SZ: u32 = 0x014;
    /// `cmd_dbell`.
    pub const CMD_DBELL: u32 = 0x018;
    /// `initializing`.
    pub const INITIALIZING: u32 = 0x1fc;
    /// `health.fw_ver`.
    pub const HEALTH_FW_VER: u32 = 0x230;
    /// `health` word: `irisc_index`, `synd`, `ext_synd`.
    pub const HEALTH_SYND: u32 = 0x23c;
    /// `cmd_exec_to` (ms).
    pub const CMD_EXEC_TO: u32 = 0xff8;
    /// `health_counter`.
    pub const HEALTH_COUNTER: u32 = 0x1010;
}

/// The register-level shape of the PF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegisterConfig {
    /// Firmware version: major, minor, subminor.
    pub fw_version: (u16, u16, u16),
    /// `log_cmdq_size` (slots = 2^n, at most 5).
    pub log_cmdq_size: u8,
    /// `log_cmdq_stride` (at least 6).
    pub log_cmdq_stride: u8,
    /// Reads of `initializing` that still show bit 31.
    pub initializing_reads: u32,
    /// Pages QUERY_PAGES(BOOT) asks for.
    pub boot_pages: u32,
    /// Pages QUERY_PAGES(INIT) asks for.
    pub init_pages: u32,
    /// Pages each VF asks for once enabled.
    pub vf_pages: u32,
    /// `cmd_exec_to`: the command timeout firmware advertises (ms).
    pub cmd_exec_timeout_ms: u32,
}

impl RegisterConfig {
    /// A ConnectX-7-like PF: 32 slots of 64 bytes, a short initialization,
    /// 8 boot, 24 init and 4 pages per VF.
    pub const DEFAULT: Self = Self {
        fw_version: (28, 39, 1002),
        log_cmdq_size: 5,
        log_cmdq_stride: 6,
        initializing_reads: 2,
        boot_pages: 8,
        init_pages: 24,
        vf_pages: 4,
        cmd_exec_timeout_ms: 60_000,
    };
}

impl Default for RegisterConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A fault the queue applies to one command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueFault {
    /// Firmware never hands the entry back (and never signals it).
    Stuck,
    /// Firmware executes the command and signals the completion but leaves
    /// the owner bit set.
    BadOwnership,
    /// Firmware executes the command but writes another token into the
    /// completed entry.
    WrongToken,
    /// Firmware refuses delivery with this status (bits 7:1 of
    /// `status_own`; any value, garbage included) and does not execute the
    /// command.
    Delivery(u8),
    /// Firmware writes the output but zeroes the first output block's
    /// `next` (a chain cut short; needs two or more output blocks).
    ShortOutputChain,
}

/// One armed fault: for the next command of `opcode` (any opcode when
/// `None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ArmedFault {
    opcode: Option<u16>,
    fault: QueueFault,
}

/// Where the function is in its lifecycle.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Hca {
    enabled: bool,
    issi: u16,
    boot_owed: u32,
    init_owed: u32,
    initialized: bool,
    /// SET_HCA_CAP turned `cmdif_checksum` on (3).
    checksums: bool,
}

impl Hca {
    /// Out of reset: disabled, owed its boot and init pages.
    const fn power_on(cfg: &RegisterConfig) -> Self {
        Self {
            enabled: false,
            issi: 0,
            boot_owed: cfg.boot_pages,
            init_owed: cfg.init_pages,
            initialized: false,
            checksums: false,
        }
    }
}

/// Pages of one function held by firmware.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FwPage {
    function: u16,
    addr: u64,
}

/// What the model has done, for tests and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PfCounters {
    /// Commands executed (delivered or refused with a delivery status).
    pub commands: u64,
    /// Commands refused with a non-zero delivery status.
    pub delivery_errors: u64,
    /// Doorbells for slots whose entry was not owned by hardware, or
    /// before the queue had an address.
    pub spurious_doorbells: u64,
    /// Entries or blocks the device could not reach (IOMMU).
    pub dma_faults: u64,
}

impl PfCounters {
    /// Nothing done yet.
    pub const ZERO: Self = Self {
        commands: 0,
        delivery_errors: 0,
        spurious_doorbells: 0,
        dma_faults: 0,
    };
}

/// The register-level PF. About 200 KiB (the firmware inside): keep it in
/// a `Box` or a `static`.
#[derive(Clone, Debug)]
pub struct Pf {
    fw: Firmware,
    cfg: RegisterConfig,
    cmdq_addr_h: u32,
    cmdq_addr_l: u32,
    nic_interface: u8,
    initializing_left: u32,
    health_counter: u32,
    health_frozen: bool,
    health_syndrome: u32,
    /// MANAGE_PAGES(TAKE) returns no page.
    withhold_pages: bool,
    doorbells: u32,
    hca: Hca,
    vf_enabled: [bool; MAX_VFS],
    vf_owed: [u32; MAX_VFS],
    pages: heapless::Vec<FwPage, MAX_FW_PAGES>,
    faults: heapless::Vec<ArmedFault, MAX_QUEUE_FAULTS>,
    counters: PfCounters,
}

impl Pf {
    /// A PF just out of reset around `fw`: disabled, every VF detached.
    #[must_use]
    pub fn new(mut fw: Firmware, cfg: RegisterConfig) -> Self {
        for vf in 0..fw.vf_count() {
            fw.detach_vf(vf);
        }
        Self {
            fw,
            cfg,
            cmdq_addr_h: 0,
            cmdq_addr_l: 0,
            nic_interface: 0,
            initializing_left: cfg.initializing_reads,
            health_counter: 0,
            health_frozen: false,
            health_syndrome: 0,
            withhold_pages: false,
            doorbells: 0,
            hca: Hca::power_on(&cfg),
            vf_enabled: [false; MAX_VFS],
            vf_owed: [0; MAX_VFS],
            pages: heapless::Vec::new(),
            faults: heapless::Vec::new(),
            counters: PfCounters::ZERO,
        }
    }

    /// A PF around [`Firmware::EMPTY`] (no VFs, every command refused)
    /// until [`Pf::configure`]: a `static` initialiser for owners without
    /// a heap (a kernel module), where neither this nor `configure` builds
    /// anything large on the stack.
    pub const EMPTY: Self = Self {
        fw: Firmware::EMPTY,
        cfg: RegisterConfig::DEFAULT,
        cmdq_addr_h: 0,
        cmdq_addr_l: 0,
        nic_interface: 0,
        initializing_left: 0,
        health_counter: 0,
        health_frozen: false,
        health_syndrome: 0,
        withhold_pages: false,
        doorbells: 0,
        hca: Hca::power_on(&RegisterConfig::DEFAULT),
        vf_enabled: [false; MAX_VFS],
        vf_owed: [0; MAX_VFS],
        pages: heapless::Vec::new(),
        faults: heapless::Vec::new(),
        counters: PfCounters::ZERO,
    };

    /// Rebuilds this PF in place, as [`Pf::new`] builds one around
    /// firmware from `config`: just out of reset, counters zero. On an
    /// error nothing changes.
    ///
    /// # Errors
    /// As [`Firmware::configure`].
    pub fn configure(
        &mut self,
        config: &FirmwareConfig,
        cfg: RegisterConfig,
    ) -> Result<(), ConfigError> {
        self.fw.configure(config)?;
        self.cfg = cfg;
        self.reset();
        self.counters = PfCounters::ZERO;
        Ok(())
    }

    /// A reset of the whole function, as a PCI function-level reset of the
    /// PF (or the close of the device that owns it) does: the queue address,
    /// the lifecycle, the pages firmware held, every PD and mkey, armed
    /// faults and the health state go; each VF's sessions end and it is
    /// detached (disabled) as at power-on, keeping its state. The counters
    /// stay, and so does the firmware's IOMMU table: the IOMMU belongs to
    /// the host, not to the device.
    pub fn reset(&mut self) {
        self.fw.release_resources();
        for vf in 0..self.fw.vf_count() {
            self.fw.reset_vf(vf);
            self.fw.detach_vf(vf);
        }
        self.cmdq_addr_h = 0;
        self.cmdq_addr_l = 0;
        self.nic_interface = 0;
        self.initializing_left = self.cfg.initializing_reads;
        self.health_counter = 0;
        self.health_frozen = false;
        self.health_syndrome = 0;
        self.withhold_pages = false;
        self.doorbells = 0;
        self.hca = Hca::power_on(&self.cfg);
        self.vf_enabled = [false; MAX_VFS];
        self.vf_owed = [0; MAX_VFS];
        self.pages.clear();
        self.faults.clear();
    }

    /// Reads a BAR0 register (unknown offsets read 0).
    pub fn read32(&mut self, offset: u32) -> u32 {
        let (maj, min, sub) = self.cfg.fw_version;
        match offset {
            reg::FW_REV => u32::from(min) << 16 | u32::from(maj),
            reg::CMDIF_REV_FW_SUB => 5 << 16 | u32::from(sub),
            reg::CMDQ_ADDR_H => self.cmdq_addr_h,
            reg::CMDQ_ADDR_L_SZ => {
                (self.cmdq_addr_l & 0xffff_f000)
                    | u32::from(self.nic_interface & 7) << 8
                    | u32::from(self.cfg.log_cmdq_size & 0xf) << 4
                    | u32::from(self.cfg.log_cmdq_stride & 0xf)
            }
            reg::INITIALIZING if self.initializing_left > 0 => {
                self.initializing_left = self.initializing_left.saturating_sub(1);
                1 << 31
            }
            reg::HEALTH_FW_VER => u32::from(maj) << 16 | u32::from(min),
            reg::HEALTH_SYND => self.health_syndrome,
            reg::CMD_EXEC_TO => self.cfg.cmd_exec_timeout_ms,
            reg::HEALTH_COUNTER => {
                if !self.health_frozen {
                    self.health_counter = self.health_counter.wrapping_add(1) & 0x00ff_ffff;
                }
                self.health_counter
            }
            _ => 0,
        }
    }

    /// Writes a BAR0 register (read-only and unknown offsets ignore it).
    pub fn write32(&mut self, offset: u32, value: u32) {
        match offset {
            reg::CMDQ_ADDR_H => self.cmdq_addr_h = value,
            reg::CMDQ_ADDR_L_SZ => {
                self.cmdq_addr_l = value & 0xffff_f000;
                // CAST: a 3-bit field.
                self.nic_interface = ((value >> 8) & 7) as u8;
            }
            reg::CMD_DBELL => {
                if self.queue_address().is_none() {
                    self.counters.spurious_doorbells =
                        self.counters.spurious_doorbells.saturating_add(1);
                } else {
                    self.doorbells |= value & self.slot_mask();
                }
            }
            _ => {}
        }
    }

    /// The slots rung since the last call (bit n = slot n), now cleared.
    pub fn take_doorbells(&mut self) -> u32 {
        core::mem::take(&mut self.doorbells)
    }

    /// The queue's bus address, once programmed (non-zero).
    #[must_use]
    pub fn queue_address(&self) -> Option<u64> {
        let addr = u64::from(self.cmdq_addr_h) << 32 | u64::from(self.cmdq_addr_l);
        (addr != 0).then_some(addr)
    }

    fn slot_mask(&self) -> u32 {
        1u32.checked_shl(1 << self.cfg.log_cmdq_size.min(5))
            .map_or(u32::MAX, |b| b.wrapping_sub(1))
    }

    /// Arms `fault` for the next command of `opcode` (any when `None`).
    /// Returns `false` when [`MAX_QUEUE_FAULTS`] are already armed.
    pub fn arm_fault(&mut self, opcode: Option<u16>, fault: QueueFault) -> bool {
        self.faults.push(ArmedFault { opcode, fault }).is_ok()
    }

    /// Reports a health syndrome from now on (`synd`, `ext_synd`); the
    /// firmware stops executing commands (they never complete). 0 clears it.
    pub fn set_health_syndrome(&mut self, syndrome: u8, ext_syndrome: u16) {
        self.health_syndrome = u32::from(syndrome) << 16 | u32::from(ext_syndrome);
    }

    /// Makes MANAGE_PAGES(TAKE) answer with no page while `on` (firmware
    /// that keeps its pages, e.g. because it still uses them).
    pub fn withhold_pages(&mut self, on: bool) {
        self.withhold_pages = on;
    }

    /// Stops (or restarts) the health counter: a hung firmware.
    pub fn freeze_health_counter(&mut self, frozen: bool) {
        self.health_frozen = frozen;
    }

    /// The firmware inside.
    #[must_use]
    pub fn firmware(&self) -> &Firmware {
        &self.fw
    }

    /// The firmware inside, for its own fault knobs and IOMMU.
    pub fn firmware_mut(&mut self) -> &mut Firmware {
        &mut self.fw
    }

    /// Pages firmware holds.
    #[must_use]
    pub fn fw_pages(&self) -> usize {
        self.pages.len()
    }

    /// Whether INIT_HCA has run (and no TEARDOWN_HCA since).
    #[must_use]
    pub fn is_initialized(&self) -> bool {
        self.hca.initialized
    }

    /// Whether the PF is enabled (ENABLE_HCA(0), no DISABLE_HCA(0) since).
    #[must_use]
    pub fn is_enabled(&self) -> bool {
        self.hca.enabled
    }

    /// Whether VF `vf` is enabled (ENABLE_HCA(vf + 1)).
    #[must_use]
    pub fn vf_enabled(&self, vf: u16) -> bool {
        self.vf_enabled
            .get(usize::from(vf))
            .copied()
            .unwrap_or(false)
    }

    /// What the model has done.
    #[must_use]
    pub fn counters(&self) -> PfCounters {
        self.counters
    }

    /// Whether signatures are checked (SET_HCA_CAP `cmdif_checksum` = 3).
    #[must_use]
    pub fn checksums(&self) -> bool {
        self.hca.checksums
    }

    /// The armed fault for `opcode`, taken.
    fn take_fault(&mut self, opcode: u16) -> Option<QueueFault> {
        let at = self
            .faults
            .iter()
            .position(|f| f.opcode.is_none_or(|o| o == opcode))?;
        Some(self.faults.remove(at).fault)
    }

    /// Reads `buf.len()` bytes at `iova` if the device may.
    fn dma_read(&mut self, dma: &mut dyn Dma, iova: u64, buf: &mut [u8]) -> bool {
        // CAST: usize -> u64 is lossless on every target we build.
        let ok = self.fw.dma_reachable(iova, buf.len() as u64)
            && dma
                .dma_read(iova, buf.len(), &mut |src| {
                    for (d, s) in buf.iter_mut().zip(src) {
                        *d = *s;
                    }
                })
                .is_ok();
        if !ok {
            self.counters.dma_faults = self.counters.dma_faults.saturating_add(1);
        }
        ok
    }

    /// Writes `buf` at `iova` if the device may.
    fn dma_write(&mut self, dma: &mut dyn Dma, iova: u64, buf: &[u8]) -> bool {
        // CAST: as above.
        let ok = self.fw.dma_reachable(iova, buf.len() as u64)
            && dma
                .dma_write(iova, buf.len(), &mut |dst| {
                    for (d, s) in dst.iter_mut().zip(buf) {
                        *d = *s;
                    }
                })
                .is_ok();
        if !ok {
            self.counters.dma_faults = self.counters.dma_faults.saturating_add(1);
        }
        ok
    }
}

#[cfg(test)]
mod tests;
