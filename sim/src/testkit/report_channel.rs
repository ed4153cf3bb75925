//! The test platform's page-tracker reporting channel: the shared host side
//! ([`HostChannel`]) over the test `Hal`, the firmware's channel model
//! standing in for the CQ and QPs. Misuse panics: a test driving the core
//! must never call it out of order.

use mlx5vf_core::hal::{HalErrorKind, ReportChannel, ReportChannelRequest, ReportEvent};

use super::hal::TestHal;
use crate::report_host::HostChannel;
use crate::tracker::ChannelEvent;

impl TestHal {
    pub(super) fn channel_open(
        &mut self,
        req: ReportChannelRequest,
    ) -> Result<Option<ReportChannel>, HalErrorKind> {
        assert!(
            self.report.is_none(),
            "a second reporting channel was opened"
        );
        if !self.report_channel_supported {
            return Ok(None);
        }
        let (channel, open) = HostChannel::open(self, req, |hal, mkey| {
            hal.fw
                .tracker_mut()
                .open_channel(mkey.0, req.msg_size, req.slots)
        })?;
        self.report = Some(channel);
        Ok(Some(open))
    }

    pub(super) fn channel_next(&mut self, cqe: &mut [u8; 64]) -> ReportEvent {
        assert!(self.report.is_some(), "polled a channel that is not open");
        if self.report_channel_broken {
            return ReportEvent::ChannelError;
        }
        match self.fw.tracker_poll(cqe, &mut self.mem) {
            ChannelEvent::Cqe => ReportEvent::Cqe,
            ChannelEvent::ObjectChanged => ReportEvent::ObjectChanged,
            // The sim changes only when called: nothing now is nothing ever.
            ChannelEvent::Nothing => ReportEvent::TimedOut,
        }
    }

    pub(super) fn channel_read(&mut self, slot: u32, offset: u32, dst: &mut [u8]) -> bool {
        let Some(r) = self.report else {
            panic!("read from a channel that is not open");
        };
        let Some(at) = r.message_offset(slot, offset, dst.len()) else {
            panic!(
                "read of {} bytes at {offset} of slot {slot}: {r:?}",
                dst.len()
            );
        };
        dst.copy_from_slice(self.range(r.buffer, at, dst.len() as u64));
        true
    }

    pub(super) fn channel_close(&mut self) {
        let Some(r) = self.report.take() else {
            panic!("closed a channel that is not open");
        };
        self.fw.tracker_mut().close_channel();
        r.close(self);
    }
}
