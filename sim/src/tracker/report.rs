//! Firmware's side of a report: one message per poll.

use super::wire::cqe;
use super::{ChannelEvent, GUEST_PAGE, TrackerFault, TrackerModel, state};

/// Where firmware writes a message: byte `offset` of the channel's receive
/// buffer (through its mkey). `false` means the DMA failed.
pub trait MessageSink {
    /// Writes `bytes` at `offset`.
    fn write(&mut self, offset: u64, bytes: &[u8]) -> bool;
}

/// Entries staged before each DMA write: 64 addresses.
const STAGE: usize = 512;

/// An address no tracker range holds (the top page of the address space).
const BAD_ADDRESS: u64 = 0xffff_ffff_ffff_f000;

impl TrackerModel {
    /// Lets firmware take one step on the reporting channel: at most one
    /// message (or event). The CQE, if any, goes to `cqe` in `mlx5_cqe64`
    /// layout; message bytes go to `sink`.
    pub fn poll(&mut self, cqe_out: &mut [u8; 64], sink: &mut dyn MessageSink) -> ChannelEvent {
        if self.fault == TrackerFault::SpuriousEvent {
            self.fault = TrackerFault::None;
            return ChannelEvent::ObjectChanged;
        }
        if self.fault == TrackerFault::EventStorm && self.object.is_some() {
            return ChannelEvent::ObjectChanged;
        }
        let sent = self.stats.messages;
        let cfg_end_marker = self.cfg.end_marker;
        let fault = self.fault;
        let (Some(o), Some(c)) = (self.object.as_mut(), self.channel.as_mut()) else {
            return ChannelEvent::Nothing;
        };
        if o.state != state::REPORTING || o.qpn != c.qpn {
            return ChannelEvent::Nothing;
        }
        match fault {
            TrackerFault::Silent { after } if sent >= after => return ChannelEvent::Nothing,
            TrackerFault::ErrorSilently { after } if sent >= after => {
                o.state = state::ERROR;
                o.report = None;
                self.fault = TrackerFault::None;
                return ChannelEvent::ObjectChanged;
            }
            _ => {}
        }
        if c.posted == 0 {
            // Receiver not ready: firmware retries forever (rnr_retry 7).
            return ChannelEvent::Nothing;
        }
        let slot = u32::from(c.rq_ci) & c.slots.saturating_sub(1);
        let base = u64::from(slot).saturating_mul(u64::from(c.msg_size));
        let error_now = matches!(fault, TrackerFault::ErrorWithReport { after } if sent >= after);
        let (len, after_state) = if error_now {
            o.state = state::ERROR;
            o.report = None;
            self.fault = TrackerFault::None;
            (0, state::ERROR)
        } else if o.end_due {
            o.end_due = false;
            o.state = state::TRACKING;
            o.report = None;
            (0, state::TRACKING)
        } else {
            let Some((mut cursor, end)) = o.report else {
                return ChannelEvent::Nothing;
            };
            let page_size = 1u64
                .checked_shl(u32::from(o.log_page))
                .unwrap_or(GUEST_PAGE);
            let per_msg = c.msg_size / 8;
            let bad = matches!(fault, TrackerFault::BadAddress { after } if sent == after);
            let mut stage = [0u8; STAGE];
            let (mut fill, mut count, mut written) = (0usize, 0u32, 0u64);
            // CAST: guest page numbers fit u32 (MAX_GUEST_PAGES).
            let end_page = u32::try_from(end.div_ceil(GUEST_PAGE)).unwrap_or(u32::MAX);
            while count < per_msg {
                let from = u32::try_from(cursor / GUEST_PAGE).unwrap_or(u32::MAX);
                let Some(p) = o.dirty.next_in(from, end_page) else {
                    break;
                };
                let tracked =
                    u64::from(p).saturating_mul(GUEST_PAGE) & !page_size.saturating_sub(1);
                let tracked_end = tracked.saturating_add(page_size);
                let mut q = tracked / GUEST_PAGE;
                while q < tracked_end / GUEST_PAGE {
                    o.dirty.remove(u32::try_from(q).unwrap_or(u32::MAX));
                    q = q.saturating_add(1);
                }
                let entry = if bad && count == 0 {
                    BAD_ADDRESS
                } else {
                    tracked
                };
                if let Some(dst) = stage.get_mut(fill..fill.saturating_add(8)) {
                    dst.copy_from_slice(&entry.to_be_bytes());
                }
                fill = fill.saturating_add(8);
                count = count.saturating_add(1);
                cursor = tracked_end;
                if fill == STAGE {
                    if !sink.write(base.saturating_add(written), &stage) {
                        o.state = state::ERROR;
                        return ChannelEvent::Nothing;
                    }
                    written = written.saturating_add(STAGE as u64);
                    fill = 0;
                }
            }
            if fill > 0
                && !sink.write(
                    base.saturating_add(written),
                    stage.get(..fill).unwrap_or(&[]),
                )
            {
                o.state = state::ERROR;
                return ChannelEvent::Nothing;
            }
            self.stats.addresses = self.stats.addresses.saturating_add(u64::from(count));
            let from = u32::try_from(cursor / GUEST_PAGE).unwrap_or(u32::MAX);
            let more = o.dirty.next_in(from, end_page).is_some();
            let full = count == per_msg;
            let after = if more {
                o.report = Some((cursor, end));
                state::REPORTING
            } else if full && cfg_end_marker {
                o.end_due = true;
                o.report = None;
                state::REPORTING
            } else {
                o.state = state::TRACKING;
                o.report = None;
                state::TRACKING
            };
            (count.saturating_mul(8), after)
        };
        let owner = u32::from(c.rq_ci).checked_div(c.slots).unwrap_or(0) & 1;
        cqe_out.fill(0);
        let put = |out: &mut [u8; 64], at: usize, bytes: &[u8]| {
            if let Some(d) = out.get_mut(at..at.saturating_add(bytes.len())) {
                d.copy_from_slice(bytes);
            }
        };
        put(
            cqe_out,
            cqe::IMM,
            &(u32::from(after_state) << 28).to_be_bytes(),
        );
        put(cqe_out, cqe::BYTE_CNT, &len.to_be_bytes());
        put(cqe_out, cqe::WQE_COUNTER, &c.rq_ci.to_be_bytes());
        // CAST: owner is 0 or 1.
        put(
            cqe_out,
            cqe::OP_OWN,
            &[(cqe::RESP_SEND_IMM << 4) | owner as u8],
        );
        c.rq_ci = c.rq_ci.wrapping_add(1);
        c.posted = c.posted.saturating_sub(1);
        self.stats.messages = self.stats.messages.saturating_add(1);
        ChannelEvent::Cqe
    }
}
