//! Command decoding and dispatch: bytes in, bytes out.

use crate::iommu::{Dma, PAGE_SIZE};
use crate::syndrome::Syndrome;
use crate::wire::{
    UsedBits, cmd_hca_cap, cmd_hca_cap_2, hdr, load, mkey, opcode, pd, query_hca_cap, query_mig,
    save, vhca,
};

use super::memory::{MAX_MKEY_PAGES, MkeyWindow, NewMkey, mtt_runs};
use super::vf::{SaveMode, Vf};
use super::{ExecError, Firmware, counter_slot, session_id};

/// A failed command's status and syndrome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fail {
    status: u8,
    syndrome: u32,
}

impl From<Syndrome> for Fail {
    fn from(s: Syndrome) -> Self {
        Self {
            status: s.status(),
            syndrome: s.code(),
        }
    }
}

/// Result of one command handler (outputs are written on success only).
type Outcome = Result<(), Fail>;

/// Input bits of the header-only commands (ALLOC_PD).
const USED_HDR: UsedBits<16> = UsedBits::new(&[], &[]);
/// Input bits of DEALLOC_PD.
const USED_PD: UsedBits<16> = UsedBits::new(&[pd::PD], &[]);
/// Input bits of DESTROY_MKEY.
const USED_DESTROY_MKEY: UsedBits<16> = UsedBits::new(&[mkey::MKEY_INDEX], &[]);
/// Input bits of SUSPEND_VHCA / RESUME_VHCA.
const USED_VHCA: UsedBits<16> = UsedBits::new(&[vhca::VHCA_ID], &[]);
/// Input bits of QUERY_VHCA_MIGRATION_STATE.
const USED_QUERY_MIG: UsedBits<16> = UsedBits::new(
    &[query_mig::INCREMENTAL, query_mig::CHUNK, query_mig::VHCA_ID],
    &[],
);
/// Input bits of SAVE_VHCA_STATE.
const USED_SAVE: UsedBits<32> = UsedBits::new(
    &[
        save::INCREMENTAL,
        save::SET_TRACK,
        save::VHCA_ID,
        save::MKEY,
        save::SIZE,
    ],
    &[save::VA],
);
/// Input bits of LOAD_VHCA_STATE.
const USED_LOAD: UsedBits<32> =
    UsedBits::new(&[load::VHCA_ID, load::MKEY, load::SIZE], &[load::VA]);
/// Input bits of QUERY_HCA_CAP.
const USED_QUERY_CAP: UsedBits<16> = UsedBits::new(
    &[
        query_hca_cap::OTHER_FUNCTION,
        query_hca_cap::EC_VF_FUNCTION,
        query_hca_cap::FUNCTION_ID,
    ],
    &[],
);

/// Fixed input size of CREATE_MKEY before the MTT list.
// CAST: a small constant.
const CREATE_MKEY_FIXED: usize = mkey::MTT_BYTE;

/// Check the generic framing of a fixed-size command.
fn frame<const N: usize>(
    input: &[u8],
    output: &[u8],
    out_len: usize,
    used: &UsedBits<N>,
    op_mod_ok: bool,
) -> Outcome {
    if input.len() < N {
        return Err(Syndrome::InputTooShort.into());
    }
    check_out_and_header(input, output, out_len, op_mod_ok)?;
    if used.reserved_set(input) {
        return Err(Syndrome::ReservedBitsSet.into());
    }
    Ok(())
}

/// Output length, uid and op_mod checks shared by every command.
fn check_out_and_header(input: &[u8], output: &[u8], out_len: usize, op_mod_ok: bool) -> Outcome {
    if output.len() < out_len {
        return Err(Syndrome::OutputTooShort.into());
    }
    if hdr::UID.get(input) != 0 {
        return Err(Syndrome::UidNotSupported.into());
    }
    if !op_mod_ok {
        return Err(Syndrome::BadOpMod.into());
    }
    Ok(())
}

/// The op_mod of a command.
fn op_mod(input: &[u8]) -> u16 {
    // CAST: a 16-bit field.
    hdr::OP_MOD.get(input) as u16
}

impl Firmware {
    /// Execute one command.
    ///
    /// `input` is the raw big-endian `_in` structure (with the MTT list for
    /// CREATE_MKEY); `output` the buffer sized for the `_out` structure. The
    /// output is zeroed, then filled like firmware: status in byte 0,
    /// syndrome in bytes 4..8 (see [`crate::Syndrome`]), fields on success.
    ///
    /// # Errors
    /// [`ExecError::OutputTooShort`] only when `output` is shorter than 16
    /// bytes, so that nothing can be reported.
    pub fn exec(
        &mut self,
        input: &[u8],
        output: &mut [u8],
        dma: &mut dyn Dma,
    ) -> Result<(), ExecError> {
        if output.len() < hdr::LEN {
            return Err(ExecError::OutputTooShort);
        }
        output.fill(0);
        let result = self.dispatch(input, output, dma);
        if let Err(fail) = result {
            output.fill(0);
            hdr::STATUS.set(output, u32::from(fail.status));
            hdr::SYNDROME.set(output, fail.syndrome);
        }
        Ok(())
    }

    fn dispatch(&mut self, input: &[u8], output: &mut [u8], dma: &mut dyn Dma) -> Outcome {
        if input.len() < hdr::LEN {
            return Err(Syndrome::InputTooShort.into());
        }
        // CAST: a 16-bit field.
        let op = hdr::OPCODE.get(input) as u16;
        if let Some(count) = self.counters.get_mut(counter_slot(op)) {
            *count = count.saturating_add(1);
        }
        if !opcode::ALL.contains(&op) {
            return Err(Syndrome::UnknownOpcode.into());
        }
        if let Some(injected) = self.faults.on_command(op) {
            return Err(Fail {
                status: injected.status,
                syndrome: injected.syndrome,
            });
        }
        match op {
            opcode::QUERY_HCA_CAP => self.query_hca_cap(input, output),
            opcode::ALLOC_PD => {
                frame(input, output, pd::LEN, &USED_HDR, op_mod(input) == 0)?;
                let pdn = self.memory.alloc_pd()?;
                pd::PD.set(output, pdn);
                Ok(())
            }
            opcode::DEALLOC_PD => {
                frame(input, output, pd::LEN, &USED_PD, op_mod(input) == 0)?;
                Ok(self.memory.dealloc_pd(pd::PD.get(input))?)
            }
            opcode::CREATE_MKEY => self.create_mkey(input, output),
            opcode::DESTROY_MKEY => {
                frame(
                    input,
                    output,
                    mkey::OUT_LEN,
                    &USED_DESTROY_MKEY,
                    op_mod(input) == 0,
                )?;
                Ok(self.memory.destroy_mkey(mkey::MKEY_INDEX.get(input))?)
            }
            opcode::SUSPEND_VHCA | opcode::RESUME_VHCA => {
                let m = op_mod(input);
                frame(input, output, vhca::LEN, &USED_VHCA, m <= 1)?;
                let v = self.migration_vf(vhca::VHCA_ID.get(input))?;
                // SUSPEND: INITIATOR 0, RESPONDER 1; RESUME: RESPONDER 0,
                // INITIATOR 1 (reversed).
                if op == opcode::SUSPEND_VHCA {
                    Ok(v.suspend(m == vhca::SUSPEND_RESPONDER)?)
                } else {
                    Ok(v.resume(m == vhca::RESUME_INITIATOR)?)
                }
            }
            opcode::QUERY_VHCA_MIGRATION_STATE => {
                frame(
                    input,
                    output,
                    query_mig::OUT_LEN,
                    &USED_QUERY_MIG,
                    op_mod(input) == 0,
                )?;
                let v = self.migration_vf(query_mig::VHCA_ID.get(input))?;
                v.tick(1);
                let q = v.query(
                    query_mig::INCREMENTAL.flag(input),
                    query_mig::CHUNK.flag(input),
                )?;
                query_mig::REQUIRED_UMEM_SIZE.set(output, q.required);
                query_mig::REMAINING_TOTAL_SIZE.set(output, q.remaining);
                if query_mig::INCREMENTAL.flag(input) && self.faults.take_report_init() {
                    query_mig::MIGRATION_STATE.set(output, query_mig::MIGRATION_STATE_INIT);
                }
                Ok(())
            }
            opcode::SAVE_VHCA_STATE => self.save(input, output, dma),
            opcode::LOAD_VHCA_STATE => self.load(input, output, dma),
            opcode::CREATE_GENERAL_OBJECT
            | opcode::MODIFY_GENERAL_OBJECT
            | opcode::QUERY_GENERAL_OBJECT
            | opcode::DESTROY_GENERAL_OBJECT => Ok(self.general_object(op, input, output)?),
            _ => Err(Syndrome::UnknownOpcode.into()),
        }
    }

    /// The VF a migration command addresses, checking the PF `migration`
    /// cap and the VF's attachment and `migratable` cap.
    fn migration_vf(&mut self, vhca_id: u32) -> Result<&mut Vf, Fail> {
        if !self.pf.migration {
            return Err(Syndrome::MigrationDisabled.into());
        }
        let v = self
            .vfs
            .iter_mut()
            .find(|v| u32::from(v.vhca_id) == vhca_id)
            .ok_or(Syndrome::UnknownVhca)?;
        if !v.attached {
            return Err(Syndrome::VfDetached.into());
        }
        if !v.caps.migratable {
            return Err(Syndrome::NotMigratable.into());
        }
        Ok(v)
    }

    fn query_hca_cap(&self, input: &[u8], output: &mut [u8]) -> Outcome {
        let m = op_mod(input);
        let cap_type = m >> 1;
        let adv = cap_type == crate::tracker::wire::cap::CAP_TYPE;
        let known = cap_type == query_hca_cap::CAP_GENERAL
            || cap_type == query_hca_cap::CAP_GENERAL_2
            || (adv && self.pf.adv_virtualization);
        frame(
            input,
            output,
            query_hca_cap::OUT_LEN,
            &USED_QUERY_CAP,
            known,
        )?;
        if query_hca_cap::EC_VF_FUNCTION.flag(input) {
            return Err(Syndrome::EcVfFunction.into());
        }
        let vf = if query_hca_cap::OTHER_FUNCTION.flag(input) {
            let function = query_hca_cap::FUNCTION_ID.get(input);
            let index = function
                .checked_sub(1)
                .and_then(|n| usize::try_from(n).ok())
                .ok_or(Syndrome::UnknownFunction)?;
            let v = self.vfs.get(index).ok_or(Syndrome::UnknownFunction)?;
            if !v.attached {
                return Err(Syndrome::VfDetached.into());
            }
            Some(v)
        } else {
            None
        };
        // MAX (mode 0) and CUR (mode 1) report the same values here.
        let cap = output
            .get_mut(query_hca_cap::CAP_BYTE..)
            .ok_or(Syndrome::OutputTooShort)?;
        if adv {
            // The PF's own page tracker limits; a VF has none.
            if vf.is_some() {
                return Err(Syndrome::UnknownFunction.into());
            }
            self.adv_virtualization_cap(cap);
            return Ok(());
        }
        let bit = |b: bool| u32::from(b);
        match (cap_type == query_hca_cap::CAP_GENERAL_2, vf) {
            (false, None) => {
                cmd_hca_cap::HCA_CAP_2.set(cap, 1);
                cmd_hca_cap::VHCA_ID.set(cap, 0);
                cmd_hca_cap::MIGRATION.set(cap, bit(self.pf.migration));
                cmd_hca_cap::ADV_VIRTUALIZATION.set(cap, bit(self.pf.adv_virtualization));
            }
            (true, None) => {
                cmd_hca_cap_2::MIGRATION_MULTI_LOAD.set(cap, bit(self.pf.multi_load));
                cmd_hca_cap_2::MIGRATION_TRACKING_STATE.set(cap, bit(self.pf.tracking_state));
                cmd_hca_cap_2::MIGRATION_IN_CHUNKS.set(cap, bit(self.pf.in_chunks));
            }
            (false, Some(v)) => {
                cmd_hca_cap::HCA_CAP_2.set(cap, 1);
                cmd_hca_cap::VHCA_ID.set(cap, u32::from(v.vhca_id));
            }
            (true, Some(v)) => {
                cmd_hca_cap_2::MIGRATABLE.set(cap, bit(v.caps.migratable));
                cmd_hca_cap_2::MIGRATION_MULTI_LOAD.set(cap, bit(v.caps.precopy));
                cmd_hca_cap_2::MIGRATION_TRACKING_STATE.set(cap, bit(v.caps.precopy));
                cmd_hca_cap_2::MIGRATION_IN_CHUNKS.set(cap, bit(v.caps.chunks));
            }
        }
        Ok(())
    }

    fn create_mkey(&mut self, input: &[u8], output: &mut [u8]) -> Outcome {
        if input.len() < CREATE_MKEY_FIXED {
            return Err(Syndrome::InputTooShort.into());
        }
        check_out_and_header(input, output, mkey::OUT_LEN, op_mod(input) == 0)?;
        if mkey::MKEY_UMEM_VALID.flag(input) {
            return Err(Syndrome::MkeyUmem.into());
        }
        if mkey::ACCESS_MODE_1_0.get(input) != 1 || mkey::ACCESS_MODE_4_2.get(input) != 0 {
            return Err(Syndrome::MkeyAccessMode.into());
        }
        if mkey::LOG_PAGE_SIZE.get(input) != 12 {
            return Err(Syndrome::MkeyPageSize.into());
        }
        if mkey::QPN.get(input) != 0x00ff_ffff {
            return Err(Syndrome::MkeyQpn.into());
        }
        let len = mkey::LEN.get(input);
        if mkey::LENGTH64.flag(input) || len == 0 || len % PAGE_SIZE != 0 {
            return Err(Syndrome::MkeyLength.into());
        }
        let npages = len / PAGE_SIZE;
        if npages > MAX_MKEY_PAGES {
            return Err(Syndrome::MkeyTooLarge.into());
        }
        // Two 8-byte MTTs per octword; the list is padded to whole octwords.
        let octwords = npages.div_ceil(2);
        let needed = usize::try_from(octwords.saturating_mul(16))
            .ok()
            .and_then(|mtt| mtt.checked_add(CREATE_MKEY_FIXED))
            .ok_or(Syndrome::MkeyTooLarge)?;
        if input.len() < needed {
            return Err(Syndrome::InputTooShort.into());
        }
        if u64::from(mkey::TRANSLATIONS_OCTWORD_SIZE.get(input)) != octwords
            || u64::from(mkey::TRANSLATIONS_OCTWORD_ACTUAL_SIZE.get(input)) != octwords
        {
            return Err(Syndrome::MkeyOctwords.into());
        }
        let pdn = mkey::PD.get(input);
        if !self.memory.has_pd(pdn) {
            return Err(Syndrome::UnknownPd.into());
        }
        let mtts = input.get(CREATE_MKEY_FIXED..).unwrap_or(&[]);
        let runs = mtt_runs(mtts, npages)?;
        let new = NewMkey {
            // CAST: an 8-bit field.
            variant: mkey::MKEY_7_0.get(input) as u8,
            pd: pdn,
            start_addr: mkey::START_ADDR.get(input),
            len,
            runs,
        };
        let index = self.memory.create_mkey(&new)?;
        mkey::MKEY_INDEX.set(output, index);
        Ok(())
    }

    fn save(&mut self, input: &[u8], output: &mut [u8], dma: &mut dyn Dma) -> Outcome {
        frame(input, output, save::OUT_LEN, &USED_SAVE, op_mod(input) == 0)?;
        let inc = save::INCREMENTAL.flag(input);
        let track = save::SET_TRACK.flag(input);
        let size = u64::from(save::SIZE.get(input));
        let va = save::VA.get(input);
        let key = save::MKEY.get(input);
        let vhca_id = self.migration_vf(save::VHCA_ID.get(input))?.vhca_id;
        let Self {
            vfs,
            memory,
            iommu,
            faults,
            sessions,
            ..
        } = self;
        let v = vfs
            .iter_mut()
            .find(|v| v.vhca_id == vhca_id)
            .ok_or(Syndrome::UnknownVhca)?;
        v.tick(1);
        let mode = v.save_mode(inc, track)?;
        let outcome = if mode == SaveMode::Cleanup {
            // No DMA happens, so the buffer is not looked at (Linux sizes it
            // from an incremental QUERY, which may have reported 0).
            v.cleanup();
            super::vf::SaveOutcome {
                actual: 0,
                next_required: 0,
            }
        } else {
            let (runs, base) = memory.resolve(key, va, size)?;
            let mut window = MkeyWindow {
                runs,
                base,
                iommu,
                dma,
            };
            let session = if mode == SaveMode::Full {
                session_id(sessions, vhca_id)
            } else {
                0
            };
            v.save(mode, track, size, session, &mut window)?
        };
        let (oversize, next_override) = faults.take_save_overrides();
        // Both fit u32: the image is at most `size`, the next record at
        // most a header plus the largest object (< 2^31).
        let mut actual = u32::try_from(outcome.actual).unwrap_or(u32::MAX);
        if let Some(by) = oversize {
            actual = save::SIZE.get(input).saturating_add(by);
        }
        let next =
            next_override.unwrap_or(u32::try_from(outcome.next_required).unwrap_or(u32::MAX));
        save::ACTUAL_IMAGE_SIZE.set(output, actual);
        save::NEXT_REQUIRED_UMEM_SIZE.set(output, next);
        Ok(())
    }

    fn load(&mut self, input: &[u8], output: &mut [u8], dma: &mut dyn Dma) -> Outcome {
        frame(input, output, load::OUT_LEN, &USED_LOAD, op_mod(input) == 0)?;
        let size = u64::from(load::SIZE.get(input));
        let va = load::VA.get(input);
        let key = load::MKEY.get(input);
        let vhca_id = self.migration_vf(load::VHCA_ID.get(input))?.vhca_id;
        let Self {
            vfs, memory, iommu, ..
        } = self;
        let v = vfs
            .iter_mut()
            .find(|v| v.vhca_id == vhca_id)
            .ok_or(Syndrome::UnknownVhca)?;
        let (runs, base) = memory.resolve(key, va, size)?;
        let mut window = MkeyWindow {
            runs,
            base,
            iommu,
            dma,
        };
        Ok(v.load(size, &mut window)?)
    }
}
