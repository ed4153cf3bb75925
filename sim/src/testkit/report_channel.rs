//! The test platform's page-tracker reporting channel: a receive buffer
//! under a real MTT mkey (CREATE_MKEY through the firmware), the firmware's
//! channel model standing in for the CQ and QPs.

use mlx5vf_core::hal::{
    BufferId, DmaDirection, Hal, HalErrorKind, ReportChannel, ReportChannelRequest, ReportEvent,
};
use mlx5vf_core::ifc::Command;
use mlx5vf_core::ifc::mkey::Mkey;
use mlx5vf_core::ifc::pd::{AllocPd, DeallocPd, Pd};

use super::hal::{PAGE, TestHal};
use crate::tracker::ChannelEvent;

/// What an open channel holds, so closing frees exactly that.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelResources {
    /// The PD of the receive buffer's mkey.
    pub pd: Pd,
    /// The receive buffer.
    pub buffer: BufferId,
    /// Its mkey.
    pub mkey: Mkey,
    /// Bytes per slot.
    pub msg_size: u32,
    /// Slots.
    pub slots: u32,
}

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
        let bytes = u64::from(req.msg_size) * u64::from(req.slots);
        let npages = u32::try_from(bytes.div_ceil(PAGE)).map_err(|_| HalErrorKind::OutOfMemory)?;
        let mut out = [0u8; 16];
        let mut input = [0u8; 16];
        let alloc = AllocPd;
        alloc.encode(&mut input).map_err(|_| HalErrorKind::Other)?;
        self.exec(&input, &mut out)?;
        let pd = alloc.decode(&out).map_err(|_| HalErrorKind::Other)?;
        let free_pd = |hal: &mut Self| {
            let (mut input, mut out) = ([0u8; 16], [0u8; 16]);
            let cmd = DeallocPd { pd };
            if cmd.encode(&mut input).is_ok() {
                let _ = hal.exec(&input, &mut out);
            }
        };
        let buffer = match self.alloc_buffer(npages, DmaDirection::FromDevice) {
            Ok(b) => b,
            Err(e) => {
                free_pd(self);
                return Err(e);
            }
        };
        let mkey = match self.map_buffers(pd, &[buffer]) {
            Ok(m) => m,
            Err(e) => {
                self.free_buffer(buffer);
                free_pd(self);
                return Err(e);
            }
        };
        let Some(fw_qpn) = self
            .fw
            .tracker_mut()
            .open_channel(mkey.0, req.msg_size, req.slots)
        else {
            let _ = self.unmap_buffers(mkey, &[buffer]);
            self.free_buffer(buffer);
            free_pd(self);
            return Err(HalErrorKind::Other);
        };
        self.report = Some(ChannelResources {
            pd,
            buffer,
            mkey,
            msg_size: req.msg_size,
            slots: req.slots,
        });
        Ok(Some(ReportChannel { fw_qpn }))
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
        let end = u64::from(offset) + dst.len() as u64;
        assert!(slot < r.slots, "read of slot {slot} of {}", r.slots);
        assert!(end <= u64::from(r.msg_size), "read past a message: {end}");
        let at = u64::from(slot) * u64::from(r.msg_size) + u64::from(offset);
        dst.copy_from_slice(self.range(r.buffer, at, dst.len() as u64));
        true
    }

    pub(super) fn channel_close(&mut self) {
        let Some(r) = self.report.take() else {
            panic!("closed a channel that is not open");
        };
        self.fw.tracker_mut().close_channel();
        let _ = self.unmap_buffers(r.mkey, &[r.buffer]);
        self.free_buffer(r.buffer);
        let (mut input, mut out) = ([0u8; 16], [0u8; 16]);
        let cmd = DeallocPd { pd: r.pd };
        if cmd.encode(&mut input).is_ok() {
            let _ = self.exec(&input, &mut out);
        }
    }
}
