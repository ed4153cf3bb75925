//! The simulated platform's page-tracker reporting channel: the sim
//! crate's host side ([`HostChannel`]: a receive buffer from the pool
//! under a real MTT mkey) over this `Hal`, the firmware's channel model
//! standing in for the CQ and QPs.

use mlx5vf_core::hal::{HalErrorKind, ReportChannel, ReportChannelRequest, ReportEvent};
use mlx5vf_sim::report_host::HostChannel;
use mlx5vf_sim::tracker::ChannelEvent;

use super::hal::{PoolDma, SimHal, lock};

impl SimHal {
    pub(super) fn channel_open(
        &mut self,
        req: ReportChannelRequest,
    ) -> Result<Option<ReportChannel>, HalErrorKind> {
        if self.report.is_some() {
            return Err(HalErrorKind::Other);
        }
        let (channel, open) = HostChannel::open(self, req, |hal, mkey| {
            lock(&hal.fw)
                .tracker_mut()
                .open_channel(mkey.0, req.msg_size, req.slots)
        })?;
        self.report = Some(channel);
        Ok(Some(open))
    }

    pub(super) fn channel_next(&mut self, cqe: &mut [u8; 64]) -> ReportEvent {
        if self.report.is_none() {
            return ReportEvent::ChannelError;
        }
        let pool = std::sync::Arc::clone(&self.pool);
        match lock(&self.fw).tracker_poll(cqe, &mut PoolDma(&pool)) {
            ChannelEvent::Cqe => ReportEvent::Cqe,
            ChannelEvent::ObjectChanged => ReportEvent::ObjectChanged,
            // The firmware model changes only when called: nothing now is
            // nothing ever, so there is no point sleeping out the timeout.
            ChannelEvent::Nothing => ReportEvent::TimedOut,
        }
    }

    pub(super) fn channel_read(&mut self, slot: u32, offset: u32, dst: &mut [u8]) -> bool {
        let Some(r) = self.report else {
            return false;
        };
        let Some(at) = r.message_offset(slot, offset, dst.len()) else {
            return false;
        };
        self.pool
            .get(r.buffer)
            .and_then(|b| {
                b.with_bytes(at, dst.len() as u64, |s| dst.copy_from_slice(s))
                    .ok()
            })
            .is_some()
    }

    pub(super) fn channel_repost(&mut self) {
        lock(&self.fw).tracker_mut().repost();
    }

    pub(super) fn channel_close(&mut self) {
        let Some(r) = self.report.take() else {
            return;
        };
        lock(&self.fw).tracker_mut().close_channel();
        r.close(self);
    }
}
