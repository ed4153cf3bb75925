//! The function's own commands (ENABLE/DISABLE_HCA, QUERY/SET_ISSI,
//! QUERY_PAGES, MANAGE_PAGES, SET_HCA_CAP, INIT_HCA, TEARDOWN_HCA) and the
//! gate in front of the firmware's: which commands the PF takes in which
//! lifecycle state. Field offsets from `reference/mlx5-ifc.md` §2.3, §2.5.

use crate::iommu::{Dma, PAGE_SIZE};
use crate::syndrome::Syndrome;
use crate::wire::{Field, be64, hdr, opcode, put_be64};

use super::{FwPage, Pf};

/// Opcodes of the lifecycle commands.
mod op {
    pub(super) const INIT_HCA: u16 = 0x102;
    pub(super) const TEARDOWN_HCA: u16 = 0x103;
    pub(super) const ENABLE_HCA: u16 = 0x104;
    pub(super) const DISABLE_HCA: u16 = 0x105;
    pub(super) const QUERY_PAGES: u16 = 0x107;
    pub(super) const MANAGE_PAGES: u16 = 0x108;
    pub(super) const SET_HCA_CAP: u16 = 0x109;
    pub(super) const QUERY_ISSI: u16 = 0x10a;
    pub(super) const SET_ISSI: u16 = 0x10b;
}

/// `function_id` of ENABLE/DISABLE_HCA, QUERY_PAGES and MANAGE_PAGES.
const FUNCTION_ID: Field = Field::new(0x50, 16);
/// `current_issi` of SET_ISSI's input and QUERY_ISSI's output.
const CURRENT_ISSI: Field = Field::new(0x50, 16);
/// `supported_issi_dw0` of QUERY_ISSI's output (byte 108).
const SUPPORTED_ISSI: Field = Field::new(0x360, 32);
/// QUERY_PAGES' output.
const QP_FUNCTION_ID: Field = Field::new(0x50, 16);
const NUM_PAGES: Field = Field::new(0x60, 32);
/// MANAGE_PAGES' input and output.
const INPUT_NUM_ENTRIES: Field = Field::new(0x60, 32);
const OUTPUT_NUM_ENTRIES: Field = Field::new(0x40, 32);
const PAS_BYTE: usize = 16;
/// `cmd_hca_cap.cmdif_checksum`, inside SET_HCA_CAP's capability (byte 16).
const CMDIF_CHECKSUM: Field = Field::new(0x80 + 0x210, 2);

/// Output sizes.
const QUERY_ISSI_OUT: usize = 112;
const SET_HCA_CAP_IN: usize = 4112;
const INIT_HCA_IN: usize = 16;

/// ISSIs the model supports: 0 and 1.
const SUPPORTED: u32 = 0b11;

/// QUERY_PAGES op_mods.
const BOOT: u16 = 1;
const INIT: u16 = 2;
const REGULAR: u16 = 3;
/// MANAGE_PAGES op_mods.
const GIVE: u16 = 1;
const TAKE: u16 = 2;

type Outcome = Result<(), Syndrome>;

fn op_mod(input: &[u8]) -> u16 {
    // CAST: a 16-bit field.
    hdr::OP_MOD.get(input) as u16
}

fn function_id(input: &[u8]) -> u16 {
    // CAST: a 16-bit field.
    FUNCTION_ID.get(input) as u16
}

fn need(input: &[u8], output: &[u8], inlen: usize, outlen: usize) -> Outcome {
    if input.len() < inlen {
        return Err(Syndrome::InputTooShort);
    }
    if output.len() < outlen {
        return Err(Syndrome::OutputTooShort);
    }
    if hdr::UID.get(input) != 0 {
        return Err(Syndrome::UidNotSupported);
    }
    Ok(())
}

impl Pf {
    /// Runs one command: the PF's own, or the firmware's behind the
    /// lifecycle gate. Writes status and syndrome like firmware.
    pub(super) fn dispatch(&mut self, input: &[u8], output: &mut [u8], dma: &mut dyn Dma) {
        output.fill(0);
        // CAST: a 16-bit field.
        let opcode = hdr::OPCODE.get(input) as u16;
        let result = match opcode {
            op::ENABLE_HCA => self.enable_hca(input, output),
            op::DISABLE_HCA => self.disable_hca(input, output),
            op::QUERY_ISSI => self.query_issi(input, output),
            op::SET_ISSI => self.set_issi(input, output),
            op::QUERY_PAGES => self.query_pages(input, output),
            op::MANAGE_PAGES => self.manage_pages(input, output, dma),
            op::SET_HCA_CAP => self.set_hca_cap(input, output),
            op::INIT_HCA => self.init_hca(input, output),
            op::TEARDOWN_HCA => self.teardown_hca(input, output),
            opcode::QUERY_HCA_CAP => self
                .gate(false)
                .map(|()| self.run_firmware(input, output, dma)),
            _ => self
                .gate(true)
                .map(|()| self.run_firmware(input, output, dma)),
        };
        if let Err(s) = result {
            output.fill(0);
            hdr::STATUS.set(output, u32::from(s.status()));
            hdr::SYNDROME.set(output, s.code());
        }
    }

    /// Firmware commands need an enabled PF with its boot pages; all but
    /// QUERY_HCA_CAP also need INIT_HCA.
    fn gate(&self, needs_init: bool) -> Outcome {
        if !self.hca.enabled {
            return Err(Syndrome::HcaNotEnabled);
        }
        if self.hca.boot_owed > 0 {
            return Err(Syndrome::PagesMissing);
        }
        if needs_init && !self.hca.initialized {
            return Err(Syndrome::HcaNotInitialized);
        }
        Ok(())
    }

    fn run_firmware(&mut self, input: &[u8], output: &mut [u8], dma: &mut dyn Dma) {
        // Only an output below 16 bytes fails here, and outlen >= 16 was
        // checked at delivery.
        let _ = self.fw.exec(input, output, dma);
    }

    fn vf_index(&self, function: u16) -> Option<usize> {
        let n = usize::from(function.checked_sub(1)?);
        (n < usize::from(self.fw.vf_count())).then_some(n)
    }

    fn enable_hca(&mut self, input: &[u8], output: &[u8]) -> Outcome {
        need(input, output, 16, 16)?;
        let f = function_id(input);
        if f == 0 {
            if self.hca.initialized {
                return Err(Syndrome::HcaInitialized);
            }
            self.hca.enabled = true;
            return Ok(());
        }
        let n = self.vf_index(f).ok_or(Syndrome::UnknownFunction)?;
        if !self.hca.initialized {
            return Err(Syndrome::HcaNotInitialized);
        }
        if let (Some(en), Some(owed)) = (self.vf_enabled.get_mut(n), self.vf_owed.get_mut(n)) {
            if !*en {
                *en = true;
                *owed = self.cfg.vf_pages;
            }
            if *owed == 0 {
                // CAST: n < MAX_VFS.
                self.fw.attach_vf(n as u16);
            }
        }
        Ok(())
    }

    fn disable_hca(&mut self, input: &[u8], output: &[u8]) -> Outcome {
        need(input, output, 16, 16)?;
        let f = function_id(input);
        if f == 0 {
            if self.hca.initialized {
                return Err(Syndrome::HcaInitialized);
            }
            if !self.pages.is_empty() {
                return Err(Syndrome::PagesNotReturned);
            }
            self.hca = super::Hca {
                boot_owed: self.cfg.boot_pages,
                init_owed: self.cfg.init_pages,
                ..super::Hca::default()
            };
            return Ok(());
        }
        let n = self.vf_index(f).ok_or(Syndrome::UnknownFunction)?;
        if let Some(en) = self.vf_enabled.get_mut(n) {
            *en = false;
        }
        // CAST: n < MAX_VFS.
        self.fw.detach_vf(n as u16);
        Ok(())
    }

    fn query_issi(&mut self, input: &[u8], output: &mut [u8]) -> Outcome {
        need(input, output, 16, QUERY_ISSI_OUT)?;
        if !self.hca.enabled {
            return Err(Syndrome::HcaNotEnabled);
        }
        CURRENT_ISSI.set(output, u32::from(self.hca.issi));
        SUPPORTED_ISSI.set(output, SUPPORTED);
        Ok(())
    }

    fn set_issi(&mut self, input: &[u8], output: &[u8]) -> Outcome {
        need(input, output, 16, 16)?;
        if !self.hca.enabled {
            return Err(Syndrome::HcaNotEnabled);
        }
        if self.hca.initialized {
            return Err(Syndrome::HcaInitialized);
        }
        let issi = CURRENT_ISSI.get(input);
        if issi >= 32 || SUPPORTED & (1 << issi) == 0 {
            return Err(Syndrome::BadIssi);
        }
        // CAST: < 32.
        self.hca.issi = issi as u16;
        Ok(())
    }

    fn query_pages(&mut self, input: &[u8], output: &mut [u8]) -> Outcome {
        need(input, output, 16, 16)?;
        if !self.hca.enabled {
            return Err(Syndrome::HcaNotEnabled);
        }
        let f = function_id(input);
        // Only pages owed are announced here, never pages to give back (a
        // negative count): real firmware asks for those in page-request
        // events, and a driver takes them back by its own count of what it
        // gave (Linux's `mlx5_reclaim_startup_pages` does not ask).
        let wanted: u32 = match (op_mod(input), f) {
            (BOOT, 0) => self.hca.boot_owed,
            (INIT, 0) => self.hca.init_owed,
            (REGULAR, 0) => 0,
            (REGULAR, f) => {
                let n = self.vf_index(f).ok_or(Syndrome::UnknownFunction)?;
                if self.vf_enabled.get(n).copied().unwrap_or(false) && self.hca.initialized {
                    self.vf_owed.get(n).copied().unwrap_or(0)
                } else {
                    0
                }
            }
            (BOOT | INIT, _) => return Err(Syndrome::UnknownFunction),
            _ => return Err(Syndrome::BadOpMod),
        };
        QP_FUNCTION_ID.set(output, u32::from(f));
        NUM_PAGES.set(output, wanted);
        Ok(())
    }

    /// The pages `function` is still owed, as a mutable counter.
    fn owed_mut(&mut self, function: u16) -> Option<&mut u32> {
        if function == 0 {
            return Some(if self.hca.boot_owed > 0 {
                &mut self.hca.boot_owed
            } else {
                &mut self.hca.init_owed
            });
        }
        let n = self.vf_index(function)?;
        if !self.vf_enabled.get(n).copied().unwrap_or(false) {
            return None;
        }
        self.vf_owed.get_mut(n)
    }

    fn manage_pages(&mut self, input: &[u8], output: &mut [u8], dma: &mut dyn Dma) -> Outcome {
        need(input, output, 16, 16)?;
        if !self.hca.enabled {
            return Err(Syndrome::HcaNotEnabled);
        }
        let f = function_id(input);
        if f != 0 && self.vf_index(f).is_none() {
            return Err(Syndrome::UnknownFunction);
        }
        let count = INPUT_NUM_ENTRIES.get(input);
        match op_mod(input) {
            GIVE => self.give(f, count, input, dma),
            TAKE => self.take(f, count, output),
            _ => Err(Syndrome::BadOpMod),
        }
    }

    fn give(&mut self, f: u16, count: u32, input: &[u8], dma: &mut dyn Dma) -> Outcome {
        // CAST: u32 -> usize is lossless.
        let n = count as usize;
        let pas = input
            .get(PAS_BYTE..PAS_BYTE.saturating_add(n.saturating_mul(8)))
            .ok_or(Syndrome::InputTooShort)?;
        let owed = self.owed_mut(f).map_or(0, |o| *o);
        if count > owed {
            return Err(Syndrome::PagesNotRequested);
        }
        if self.pages.len().saturating_add(n) > super::MAX_FW_PAGES {
            return Err(Syndrome::TooManyPages);
        }
        // Check every page before taking any.
        for i in 0..n {
            let addr = be64(pas, i.saturating_mul(8));
            if addr % PAGE_SIZE != 0 || !self.fw.dma_reachable(addr, PAGE_SIZE) {
                return Err(Syndrome::PageNotMapped);
            }
        }
        for i in 0..n {
            let addr = be64(pas, i.saturating_mul(8));
            // Firmware uses its pages: a marker (function, page number).
            let mut marker = [0u8; 16];
            marker[..8].copy_from_slice(b"mlx5fwpg");
            put_be64(&mut marker, 8, u64::from(f) << 32 | i as u64);
            if !self.dma_write(dma, addr, &marker) {
                return Err(Syndrome::PageNotMapped);
            }
            self.pages
                .push(FwPage { function: f, addr })
                .map_err(|_| Syndrome::TooManyPages)?;
        }
        if let Some(o) = self.owed_mut(f) {
            *o = o.saturating_sub(count);
            if *o == 0 && f != 0 {
                // The VF's pages are in: it can run.
                self.fw.attach_vf(f.saturating_sub(1));
            }
        }
        Ok(())
    }

    /// Returns up to `count` (and up to what the output holds) of the pages
    /// firmware holds for `f`, and only those: a page it never held for `f`
    /// is never handed back. None once `f` is torn down and holds none, or
    /// while pages are withheld ([`Pf::withhold_pages`]).
    fn take(&mut self, f: u16, count: u32, output: &mut [u8]) -> Outcome {
        let in_use = if f == 0 {
            self.hca.initialized
        } else {
            self.vf_index(f)
                .is_some_and(|n| self.vf_enabled.get(n).copied().unwrap_or(false))
                && self.hca.initialized
        };
        if in_use {
            return Err(Syndrome::PagesInUse);
        }
        let room = output.len().saturating_sub(PAS_BYTE) / 8;
        // CAST: u32 -> usize is lossless.
        let want = if self.withhold_pages {
            0
        } else {
            (count as usize).min(room)
        };
        let mut given = 0usize;
        while given < want {
            let Some(at) = self.pages.iter().position(|p| p.function == f) else {
                break;
            };
            let page = self.pages.swap_remove(at);
            put_be64(
                output,
                PAS_BYTE.saturating_add(given.saturating_mul(8)),
                page.addr,
            );
            given = given.saturating_add(1);
        }
        // CAST: given <= count, a u32.
        OUTPUT_NUM_ENTRIES.set(output, given as u32);
        Ok(())
    }

    fn set_hca_cap(&mut self, input: &[u8], output: &[u8]) -> Outcome {
        need(input, output, SET_HCA_CAP_IN, 16)?;
        if !self.hca.enabled {
            return Err(Syndrome::HcaNotEnabled);
        }
        if self.hca.initialized {
            return Err(Syndrome::HcaInitialized);
        }
        if self.hca.boot_owed > 0 {
            return Err(Syndrome::PagesMissing);
        }
        match op_mod(input) >> 1 {
            0 => {
                self.hca.checksums = CMDIF_CHECKSUM.get(input) == 3;
                Ok(())
            }
            // General caps 2: nothing the model lets a driver change.
            0x20 => Ok(()),
            _ => Err(Syndrome::BadCapType),
        }
    }

    fn init_hca(&mut self, input: &[u8], output: &[u8]) -> Outcome {
        need(input, output, INIT_HCA_IN, 16)?;
        if !self.hca.enabled {
            return Err(Syndrome::HcaNotEnabled);
        }
        if self.hca.initialized {
            return Err(Syndrome::HcaInitialized);
        }
        if self.hca.boot_owed > 0 || self.hca.init_owed > 0 {
            return Err(Syndrome::PagesMissing);
        }
        self.hca.initialized = true;
        Ok(())
    }

    fn teardown_hca(&mut self, input: &[u8], output: &[u8]) -> Outcome {
        need(input, output, 16, 16)?;
        if !self.hca.initialized {
            return Err(Syndrome::HcaNotInitialized);
        }
        self.hca.initialized = false;
        // The function's objects go with it.
        self.fw.release_resources();
        for n in 0..self.fw.vf_count() {
            self.fw.detach_vf(n);
        }
        self.vf_enabled = [false; crate::firmware::MAX_VFS];
        Ok(())
    }
}
