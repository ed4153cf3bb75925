//! The host's side of the page tracker's reporting channel over any core
//! [`Hal`]: a receive buffer under a real MTT mkey of its own PD (ALLOC_PD
//! and CREATE_MKEY through the firmware), the firmware model's channel
//! standing in for the CQ and QPs. The test kit's `Hal` and the tool's
//! simulated device both build their channel from it.

use mlx5vf_core::hal::{
    BufferId, DmaDirection, Hal, HalError, HalErrorKind, ReportChannel, ReportChannelRequest,
};
use mlx5vf_core::ifc::Command;
use mlx5vf_core::ifc::mkey::{Mkey, PAGE_SIZE};
use mlx5vf_core::ifc::pd::{AllocPd, DeallocPd, Pd};

/// What an open channel holds, so closing frees exactly that.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostChannel {
    /// The PD of the receive buffer's mkey.
    pub pd: Pd,
    /// The receive buffer: `slots` messages of `msg_size` bytes.
    pub buffer: BufferId,
    /// Its mkey, which firmware writes messages through.
    pub mkey: Mkey,
    /// Bytes per slot.
    pub msg_size: u32,
    /// Slots.
    pub slots: u32,
}

/// Runs a command whose input and output fit 16 bytes (ALLOC_PD,
/// DEALLOC_PD).
fn small_exec<H: Hal, C: Command>(hal: &mut H, cmd: &C) -> Result<C::Output, HalErrorKind> {
    let (mut input, mut out) = ([0u8; 16], [0u8; 16]);
    cmd.encode(&mut input).map_err(|_| HalErrorKind::Other)?;
    hal.exec(&input, &mut out).map_err(|e| e.kind())?;
    cmd.decode(&out).map_err(|_| HalErrorKind::Other)
}

impl HostChannel {
    /// Allocates the PD, the buffer and its mkey for `req`, then lets
    /// `fw_open` open the firmware's end on the mkey (it returns the
    /// firmware's QP number, or `None` if firmware refused). Any failure
    /// undoes what was done.
    ///
    /// # Errors
    /// The failing step's error ([`HalErrorKind::Other`] for a refused
    /// firmware end, [`HalErrorKind::OutOfMemory`] for a buffer whose
    /// page count does not fit).
    pub fn open<H: Hal>(
        hal: &mut H,
        req: ReportChannelRequest,
        fw_open: impl FnOnce(&mut H, Mkey) -> Option<u32>,
    ) -> Result<(Self, ReportChannel), HalErrorKind> {
        let bytes = u64::from(req.msg_size).saturating_mul(u64::from(req.slots));
        let npages =
            u32::try_from(bytes.div_ceil(PAGE_SIZE)).map_err(|_| HalErrorKind::OutOfMemory)?;
        let pd = small_exec(hal, &AllocPd)?;
        let buffer = match hal.alloc_buffer(npages, DmaDirection::FromDevice) {
            Ok(b) => b,
            Err(e) => {
                let _ = small_exec(hal, &DeallocPd { pd });
                return Err(e.kind());
            }
        };
        let mkey = match hal.map_buffers(pd, &[buffer]) {
            Ok(m) => m,
            Err(e) => {
                hal.free_buffer(buffer);
                let _ = small_exec(hal, &DeallocPd { pd });
                return Err(e.kind());
            }
        };
        let channel = Self {
            pd,
            buffer,
            mkey,
            msg_size: req.msg_size,
            slots: req.slots,
        };
        let Some(fw_qpn) = fw_open(hal, mkey) else {
            channel.close(hal);
            return Err(HalErrorKind::Other);
        };
        Ok((channel, ReportChannel { fw_qpn }))
    }

    /// Where in the buffer `len` bytes at `offset` of message `slot`
    /// start, or `None` if they are not inside that slot's message.
    pub fn message_offset(&self, slot: u32, offset: u32, len: usize) -> Option<u64> {
        let end = u64::from(offset).checked_add(u64::try_from(len).ok()?)?;
        if slot >= self.slots || end > u64::from(self.msg_size) {
            return None;
        }
        Some(
            u64::from(slot)
                .saturating_mul(u64::from(self.msg_size))
                .saturating_add(u64::from(offset)),
        )
    }

    /// Frees the mkey, the buffer and the PD (the firmware's end closed
    /// first, by the caller).
    pub fn close<H: Hal>(self, hal: &mut H) {
        let _ = hal.unmap_buffers(self.mkey, &[self.buffer]);
        hal.free_buffer(self.buffer);
        let _ = small_exec(hal, &DeallocPd { pd: self.pd });
    }
}
