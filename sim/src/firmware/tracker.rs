//! The firmware's page-tracker commands (CREATE / MODIFY / QUERY /
//! DESTROY_GENERAL_OBJECT of type 0x46), the `adv_virtualization` cap page,
//! and the reporting channel's DMA. The model itself is
//! [`crate::tracker`].

use crate::image::Window;
use crate::iommu::{Dma, IommuTable};
use crate::syndrome::Syndrome;
use crate::tracker::wire as tw;
use crate::tracker::{
    ChannelEvent, MAX_SIM_RANGES, MessageSink, TrackerModel, TrackerObject, state,
};
use crate::wire::{hdr, opcode};

use super::Firmware;
use super::memory::{Memory, MkeyWindow};

/// Writes report messages through the channel's mkey, as the firmware QP's
/// SENDs land in the host QP's receive buffer.
struct MkeySink<'a> {
    memory: &'a Memory,
    iommu: &'a IommuTable,
    dma: &'a mut dyn Dma,
    mkey: u32,
}

impl MessageSink for MkeySink<'_> {
    fn write(&mut self, offset: u64, bytes: &[u8]) -> bool {
        // CAST: a slice length fits u64.
        let len = bytes.len() as u64;
        let Ok((runs, base)) = self.memory.resolve(self.mkey, offset, len) else {
            return false;
        };
        let mut window = MkeyWindow {
            runs,
            base,
            iommu: self.iommu,
            dma: &mut *self.dma,
        };
        window
            .write(0, len, &mut |pos, dst| {
                let from = usize::try_from(pos).unwrap_or(usize::MAX);
                if let Some(src) = bytes.get(from..from.saturating_add(dst.len())) {
                    dst.copy_from_slice(src);
                }
            })
            .is_ok()
    }
}

impl Firmware {
    /// The tracker model (ground truth, configuration, counters).
    #[must_use]
    pub fn tracker(&self) -> &TrackerModel {
        &self.tracker
    }

    /// The tracker model, mutably (guest workload, faults, channel).
    pub fn tracker_mut(&mut self) -> &mut TrackerModel {
        &mut self.tracker
    }

    /// Lets firmware take one step on the reporting channel (see
    /// [`TrackerModel::poll`]); messages are written through the channel's
    /// mkey with `dma`.
    pub fn tracker_poll(&mut self, cqe: &mut [u8; 64], dma: &mut dyn Dma) -> ChannelEvent {
        let Some((mkey, _, _)) = self.tracker.channel_geometry() else {
            return ChannelEvent::Nothing;
        };
        let Self {
            tracker,
            memory,
            iommu,
            ..
        } = self;
        let mut sink = MkeySink {
            memory,
            iommu,
            dma,
            mkey,
        };
        tracker.poll(cqe, &mut sink)
    }

    /// QUERY_HCA_CAP of the `adv_virtualization_cap` page into `cap`.
    pub(super) fn adv_virtualization_cap(&self, cap: &mut [u8]) {
        let c = self.tracker.config();
        tw::cap::MAX_NUM_RANGE.set(cap, u32::from(c.max_num_range));
        tw::cap::LOG_MIN_ADDR_SPACE.set(cap, u32::from(c.log_min_addr_space));
        tw::cap::LOG_MAX_ADDR_SPACE.set(cap, u32::from(c.log_max_addr_space));
        tw::cap::LOG_MIN_MSG.set(cap, u32::from(c.log_min_msg));
        tw::cap::LOG_MAX_MSG.set(cap, u32::from(c.log_max_msg));
        tw::cap::LOG_MIN_PAGE.set(cap, u32::from(c.log_min_page));
        tw::cap::LOG_MAX_PAGE.set(cap, u32::from(c.log_max_page));
    }

    /// CREATE / MODIFY / QUERY / DESTROY_GENERAL_OBJECT.
    pub(super) fn general_object(
        &mut self,
        op: u16,
        input: &[u8],
        output: &mut [u8],
    ) -> Result<(), Syndrome> {
        let (in_len, out_len) = match op {
            opcode::CREATE_GENERAL_OBJECT | opcode::MODIFY_GENERAL_OBJECT => {
                (tw::IN_LEN, tw::HDR_LEN)
            }
            opcode::QUERY_GENERAL_OBJECT => (tw::HDR_LEN, tw::QUERY_OUT_LEN),
            _ => (tw::HDR_LEN, tw::HDR_LEN),
        };
        if input.len() < in_len {
            return Err(Syndrome::InputTooShort);
        }
        if output.len() < out_len {
            return Err(Syndrome::OutputTooShort);
        }
        if hdr::UID.get(input) != 0 {
            return Err(Syndrome::UidNotSupported);
        }
        if tw::OBJ_TYPE.get(input) != tw::OBJ_TYPE_PAGE_TRACK {
            return Err(Syndrome::TrackerObjType);
        }
        if !self.pf.adv_virtualization {
            return Err(Syndrome::TrackerObjType);
        }
        if op == opcode::CREATE_GENERAL_OBJECT {
            let id = self.create_tracker(input)?;
            tw::OUT_OBJ_ID.set(output, id);
            return Ok(());
        }
        let id = tw::OBJ_ID.get(input);
        let obj = self
            .tracker
            .object
            .as_mut()
            .filter(|o| o.id == id)
            .ok_or(Syndrome::TrackerUnknown)?;
        match op {
            opcode::MODIFY_GENERAL_OBJECT => {
                if tw::MODIFY_FIELD_SELECT.get(input) != 0x3
                    || tw::STATE.get(input) != u32::from(state::REPORTING)
                {
                    return Err(Syndrome::TrackerParam);
                }
                if obj.state != state::TRACKING {
                    return Err(Syndrome::TrackerBadState);
                }
                let iova = tw::RANGE_START_ADDRESS.get(input);
                let len = tw::LENGTH.get(input);
                let end = iova
                    .checked_add(len)
                    .filter(|_| len > 0)
                    .ok_or(Syndrome::TrackerParam)?;
                let page = 1u64.checked_shl(u32::from(obj.log_page)).unwrap_or(1);
                obj.report = Some((iova & !page.saturating_sub(1), end));
                obj.state = state::REPORTING;
                obj.end_due = false;
            }
            opcode::QUERY_GENERAL_OBJECT => {
                tw::VHCA_ID.set(output, u32::from(obj.vhca_id));
                tw::STATE.set(output, u32::from(obj.state));
                tw::TRACK_TYPE.set(output, 1);
                tw::LOG_ADDR_SPACE_SIZE.set(output, u32::from(obj.log_addr_space));
                tw::LOG_PAGE_SIZE.set(output, u32::from(obj.log_page));
                tw::LOG_MSG_SIZE.set(output, u32::from(obj.log_msg));
                tw::REPORTING_QPN.set(output, obj.qpn);
                // CAST: at most MAX_SIM_RANGES.
                tw::NUM_RANGES.set(output, obj.ranges.len() as u32);
            }
            _ => self.tracker.object = None,
        }
        Ok(())
    }

    fn create_tracker(&mut self, input: &[u8]) -> Result<u32, Syndrome> {
        let cfg = *self.tracker.config();
        let vhca_id = tw::VHCA_ID.get(input);
        let vf = self
            .vfs
            .as_slice()
            .iter()
            .find(|v| u32::from(v.vhca_id) == vhca_id)
            .ok_or(Syndrome::UnknownVhca)?;
        if !vf.attached {
            return Err(Syndrome::VfDetached);
        }
        let num = tw::NUM_RANGES.get(input);
        if num == 0 || num > u32::from(cfg.max_num_range) {
            return Err(Syndrome::TrackerLimit);
        }
        // CAST: num <= 64.
        let needed = tw::RANGES_BYTE.saturating_add(16usize.saturating_mul(num as usize));
        if input.len() < needed {
            return Err(Syndrome::InputTooShort);
        }
        let log_page = tw::LOG_PAGE_SIZE.get(input);
        let log_msg = tw::LOG_MSG_SIZE.get(input);
        let log_space = tw::LOG_ADDR_SPACE_SIZE.get(input);
        let within = |v: u32, lo: u8, hi: u8| v >= u32::from(lo) && v <= u32::from(hi);
        if tw::TRACK_TYPE.get(input) != 1
            || tw::STATE.get(input) != 0
            || !within(log_page, cfg.log_min_page, cfg.log_max_page)
            || !within(log_msg, cfg.log_min_msg, cfg.log_max_msg)
            || !within(log_space, cfg.log_min_addr_space, cfg.log_max_addr_space)
        {
            return Err(Syndrome::TrackerParam);
        }
        let channel = self.tracker.channel.ok_or(Syndrome::TrackerNoChannel)?;
        if tw::REPORTING_QPN.get(input) != channel.qpn {
            return Err(Syndrome::TrackerNoChannel);
        }
        // The channel's slots must hold a message of this size.
        if channel.msg_size != 1u32.checked_shl(log_msg).unwrap_or(0) {
            return Err(Syndrome::TrackerParam);
        }
        if self.tracker.object.is_some() {
            return Err(Syndrome::TrackerLimit);
        }
        let mut ranges: heapless::Vec<(u64, u64), MAX_SIM_RANGES> = heapless::Vec::new();
        let mut total = 0u64;
        let mut prev_end = 0u64;
        let raw = input.get(tw::RANGES_BYTE..needed).unwrap_or(&[]);
        for r in raw.chunks_exact(16) {
            let word = |at: usize| {
                let mut b = [0u8; 8];
                b.iter_mut()
                    .zip(r.iter().skip(at))
                    .for_each(|(d, s)| *d = *s);
                u64::from_be_bytes(b)
            };
            let (start, len) = (word(0), word(8));
            let end = start.checked_add(len).ok_or(Syndrome::TrackerParam)?;
            if len == 0 || (!ranges.is_empty() && start < prev_end) {
                return Err(Syndrome::TrackerParam);
            }
            prev_end = end;
            total = total.checked_add(len).ok_or(Syndrome::TrackerParam)?;
            ranges
                .push((start, len))
                .map_err(|_| Syndrome::TrackerLimit)?;
        }
        // The address space must hold the ranges' total length.
        if total > 1u64.checked_shl(log_space).unwrap_or(u64::MAX) {
            return Err(Syndrome::TrackerParam);
        }
        let id = self.tracker.new_id();
        // CAST: the fields are 5 and 8 bits wide; vhca_id is 16 bits.
        self.tracker.object = Some(TrackerObject {
            id,
            vhca_id: vhca_id as u16,
            state: state::TRACKING,
            log_page: log_page as u8,
            log_msg: log_msg as u8,
            log_addr_space: log_space as u8,
            qpn: channel.qpn,
            ranges,
            dirty: crate::tracker::PageBits::EMPTY,
            report: None,
            end_due: false,
        });
        Ok(id)
    }
}
