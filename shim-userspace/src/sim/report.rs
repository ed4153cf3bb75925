//! The simulated platform's page-tracker reporting channel: a receive
//! buffer from the pool under a real MTT mkey (CREATE_MKEY through the
//! firmware), the firmware's channel model standing in for the CQ and QPs.

use mlx5vf_core::hal::{
    BufferId, DmaDirection, Hal, HalErrorKind, ReportChannel, ReportChannelRequest, ReportEvent,
};
use mlx5vf_core::ifc::Command;
use mlx5vf_core::ifc::mkey::{Mkey, PAGE_SIZE};
use mlx5vf_core::ifc::pd::{AllocPd, DeallocPd, Pd};
use mlx5vf_sim::tracker::ChannelEvent;

use super::hal::{PoolDma, SimHal, lock};

/// What an open channel holds, so closing frees exactly that.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Channel {
    pd: Pd,
    buffer: BufferId,
    mkey: Mkey,
    msg_size: u32,
    slots: u32,
}

impl SimHal {
    fn small_exec<C: Command>(&mut self, cmd: &C) -> Result<C::Output, HalErrorKind> {
        let (mut input, mut out) = ([0u8; 16], [0u8; 16]);
        cmd.encode(&mut input).map_err(|_| HalErrorKind::Other)?;
        self.exec(&input, &mut out)?;
        cmd.decode(&out).map_err(|_| HalErrorKind::Other)
    }

    pub(super) fn channel_open(
        &mut self,
        req: ReportChannelRequest,
    ) -> Result<Option<ReportChannel>, HalErrorKind> {
        if self.report.is_some() {
            return Err(HalErrorKind::Other);
        }
        let bytes = u64::from(req.msg_size) * u64::from(req.slots);
        let npages =
            u32::try_from(bytes.div_ceil(PAGE_SIZE)).map_err(|_| HalErrorKind::OutOfMemory)?;
        let pd = self.small_exec(&AllocPd)?;
        let buffer = match self.alloc_buffer(npages, DmaDirection::FromDevice) {
            Ok(b) => b,
            Err(e) => {
                let _ = self.small_exec(&DeallocPd { pd });
                return Err(e);
            }
        };
        let undo = |hal: &mut Self, mkey: Option<Mkey>| {
            if let Some(m) = mkey {
                let _ = hal.unmap_buffers(m, &[buffer]);
            }
            hal.free_buffer(buffer);
            let _ = hal.small_exec(&DeallocPd { pd });
        };
        let mkey = match self.map_buffers(pd, &[buffer]) {
            Ok(m) => m,
            Err(e) => {
                undo(self, None);
                return Err(e);
            }
        };
        let qpn = lock(&self.fw)
            .tracker_mut()
            .open_channel(mkey.0, req.msg_size, req.slots);
        let Some(fw_qpn) = qpn else {
            undo(self, Some(mkey));
            return Err(HalErrorKind::Other);
        };
        self.report = Some(Channel {
            pd,
            buffer,
            mkey,
            msg_size: req.msg_size,
            slots: req.slots,
        });
        Ok(Some(ReportChannel { fw_qpn }))
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
        let end = u64::from(offset) + dst.len() as u64;
        if slot >= r.slots || end > u64::from(r.msg_size) {
            return false;
        }
        let at = u64::from(slot) * u64::from(r.msg_size) + u64::from(offset);
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
        let _ = self.unmap_buffers(r.mkey, &[r.buffer]);
        self.free_buffer(r.buffer);
        let _ = self.small_exec(&DeallocPd { pd: r.pd });
    }
}
