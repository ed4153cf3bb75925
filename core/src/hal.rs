//! What the core cannot do itself: talk to firmware and own memory.
//!
//! The trait is small on purpose (one required method per capability):
//! a synchronous command, one asynchronous SAVE at a time, optionally one
//! asynchronous LOAD at a time, DMA buffers by handle, and a CRC-32C over
//! buffer bytes (so platforms can use their fast one). Copying bytes between buffers and the user is the shim's job; the
//! core says which buffer, which offset and how many bytes.
//!
//! Device dirty-page tracking adds an optional reporting channel
//! ([`Hal::report_channel_open`] and four companions, all with defaults
//! meaning "unsupported"): the queue mechanics (CQ, QPs, doorbells, events)
//! stay with the platform, which has them (mlx5_core in a kernel, the
//! command queue and BAR in userspace); the core sends the tracker's
//! commands itself and judges every CQE and message byte.
//!
//! Two implementations exist: the userspace shim's (over the simulated
//! firmware or a real PF) and the kernel-style shim's (a table of C
//! callbacks).

use core::fmt;

use crate::errno::Errno;
use crate::ifc::mkey::Mkey;
use crate::ifc::page_track::CQE_LEN;
use crate::ifc::pd::Pd;

/// What the core asks of a page tracker's reporting channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ReportChannelRequest {
    /// Bytes of one message (a power of two, at most 2 MiB): each receive
    /// slot holds one.
    pub msg_size: u32,
    /// Receive slots (a power of two, at least 4).
    pub slots: u32,
}

/// An open reporting channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ReportChannel {
    /// The firmware-side QP that sends reports (the tracker's `reporting_qpn`).
    pub fw_qpn: u32,
}

/// What [`Hal::report_channel_next`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ReportEvent {
    /// The next CQE was copied out (and its CQ entry consumed).
    Cqe,
    /// An OBJECT_CHANGE event for a page tracker arrived: the core QUERYs
    /// the tracker's state (a spurious one costs a QUERY, nothing more).
    ObjectChanged,
    /// The channel broke (a CQ or WQ error event on either QP).
    ChannelError,
    /// Nothing arrived within the timeout.
    TimedOut,
}

/// A DMA buffer, as the platform names it. Opaque to the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BufferId(pub u64);

/// Which way data moves through a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DmaDirection {
    /// The device writes (SAVE).
    FromDevice,
    /// The device reads (LOAD).
    ToDevice,
}

/// Names an asynchronous SAVE so its completion can be matched to it.
///
/// The platform carries it from [`Hal::start_save`] to
/// [`Device::handle_save_completion`](crate::device::Device::handle_save_completion);
/// a token that does not name the SAVE in flight (stale, repeated or forged)
/// is refused there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SaveToken(pub(crate) u64);

impl SaveToken {
    /// The token as a plain number (for C callers).
    pub const fn to_bits(self) -> u64 {
        self.0
    }
    /// A token from a plain number; the core validates it on use.
    pub const fn from_bits(bits: u64) -> Self {
        Self(bits)
    }
}

/// Names an asynchronous LOAD so its completion can be matched to it, as
/// [`SaveToken`] does for SAVEs: carried from [`Hal::start_load`] to
/// [`Device::handle_load_completion`](crate::device::Device::handle_load_completion).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LoadToken(pub(crate) u64);

impl LoadToken {
    /// The token as a plain number (for C callers).
    pub const fn to_bits(self) -> u64 {
        self.0
    }
    /// A token from a plain number; the core validates it on use.
    pub const fn from_bits(bits: u64) -> Self {
        Self(bits)
    }
}

/// The kinds of platform failure the core distinguishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum HalErrorKind {
    /// Memory (or IOVA space) could not be allocated: `ENOMEM`.
    OutOfMemory,
    /// The command could not be delivered to firmware (command queue or
    /// transport failure, signature error): `EIO`.
    Delivery,
    /// Firmware did not answer in time: `ETIMEDOUT`.
    Timeout,
    /// The function is gone (PF driver unbound, VF disabled): `ENOTCONN`.
    Detached,
    /// A copy to or from the caller's memory failed: `EFAULT`.
    Fault,
    /// Anything else: `EIO`.
    Other,
}

impl HalErrorKind {
    /// The errno for this kind.
    pub const fn errno(self) -> Errno {
        match self {
            Self::OutOfMemory => Errno::ENOMEM,
            Self::Timeout => Errno::ETIMEDOUT,
            Self::Detached => Errno::ENOTCONN,
            Self::Fault => Errno::EFAULT,
            Self::Delivery | Self::Other => Errno::EIO,
        }
    }
}

impl fmt::Display for HalErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::OutOfMemory => "out of memory",
            Self::Delivery => "command delivery failed",
            Self::Timeout => "firmware timed out",
            Self::Detached => "function detached",
            Self::Fault => "bad address",
            Self::Other => "platform error",
        })
    }
}

/// A platform error: anything with a [`HalErrorKind`].
pub trait HalError: fmt::Debug {
    /// What kind of failure this is.
    fn kind(&self) -> HalErrorKind;
}

impl HalError for HalErrorKind {
    fn kind(&self) -> HalErrorKind {
        *self
    }
}

/// The platform side of the driver.
///
/// # Contract
/// - Every method is called with the caller's device lock held; none is
///   called concurrently with another for the same device.
/// - At most one SAVE is in flight per device. Each [`Hal::start_save`] that
///   returns `Ok` must later be completed exactly once, by calling
///   [`Device::handle_save_completion`](crate::device::Device::handle_save_completion)
///   with the token and the command output, even if the file was closed
///   meanwhile (the buffer stays allocated and mapped until then).
/// - Likewise at most one LOAD is in flight per device, never while a SAVE
///   is; each [`Hal::start_load`] that returns `Ok(true)` is completed
///   exactly once through
///   [`Device::handle_load_completion`](crate::device::Device::handle_load_completion).
/// - Buffers are whole pages of [`PAGE_SIZE`](crate::ifc::mkey::PAGE_SIZE)
///   bytes.
pub trait Hal {
    /// The platform's error type.
    type Error: HalError;

    /// Runs one command synchronously: `input` bytes in, `output` filled
    /// (status in byte 0). `Err` means the command was not executed (the core
    /// decodes firmware status from `output` itself).
    ///
    /// # Errors
    /// Delivery failures.
    fn exec(&mut self, input: &[u8], output: &mut [u8]) -> Result<(), Self::Error>;

    /// Starts SAVE_VHCA_STATE with `input` asynchronously; its output comes
    /// back through `Device::handle_save_completion(token, output)`.
    ///
    /// # Errors
    /// The command could not be started; nothing will complete.
    fn start_save(&mut self, input: &[u8], token: SaveToken) -> Result<(), Self::Error>;

    /// Starts LOAD_VHCA_STATE with `input` asynchronously, so the next image
    /// can arrive while firmware loads this one: `Ok(true)` means started,
    /// its output comes back through `Device::handle_load_completion(token,
    /// output)`. `Ok(false)` (the default) means this platform LOADs
    /// synchronously: the core sends the command with [`Hal::exec`] instead.
    ///
    /// # Errors
    /// The command could not be started; nothing will complete.
    fn start_load(&mut self, input: &[u8], token: LoadToken) -> Result<bool, Self::Error> {
        let _ = (input, token);
        Ok(false)
    }

    /// Allocates a buffer of `npages` pages (never 0).
    ///
    /// # Errors
    /// Out of memory.
    fn alloc_buffer(&mut self, npages: u32, dir: DmaDirection) -> Result<BufferId, Self::Error>;

    /// Makes `buffers` (in order, as one virtual range starting at 0)
    /// reachable by the device through a new MTT memory key under `pd`:
    /// DMA-map their pages, then CREATE_MKEY (see
    /// [`encode_create_mkey_mtt`](crate::ifc::mkey::encode_create_mkey_mtt)).
    ///
    /// # Errors
    /// Mapping or CREATE_MKEY failed; nothing stays mapped.
    fn map_buffers(&mut self, pd: Pd, buffers: &[BufferId]) -> Result<Mkey, Self::Error>;

    /// Undoes [`Hal::map_buffers`]: DESTROY_MKEY, then DMA-unmap.
    ///
    /// # Errors
    /// Only reported (the core counts a leak); the buffers are unmapped anyway.
    fn unmap_buffers(&mut self, mkey: Mkey, buffers: &[BufferId]) -> Result<(), Self::Error>;

    /// Frees a buffer (unmapped).
    fn free_buffer(&mut self, buffer: BufferId);

    /// Continues the CRC-32C `crc` over `len` bytes of `buffer` from `offset`
    /// (see [`crc32c::update`](crate::stream::crc32c::update)).
    fn crc32c(&mut self, buffer: BufferId, offset: u64, len: u64, crc: u32) -> u32;

    /// A monotonic clock in nanoseconds, if the platform has one. With it
    /// the device times its SAVEs (a SAVE's fixed cost, the rate) and a
    /// [`ChunkPolicy::Measured`](crate::save::ChunkPolicy) tunes the chunk
    /// size; without it (the default) the configured size stays.
    fn now_ns(&mut self) -> Option<u64> {
        None
    }

    /// Opens a page tracker's reporting channel: on mlx5, a CQ and two
    /// loopback RC QPs on the PF (the host QP receive-only with `slots`
    /// receive WQEs of `msg_size` bytes under one MTT mkey, all posted; the
    /// firmware QP with a zero-length RQ), connected, plus a subscription to
    /// OBJECT_CHANGE and CQ/WQ error events. `Ok(None)` (the default) means
    /// the platform has no channel: device dirty tracking is unsupported
    /// (`EOPNOTSUPP`). At most one channel is open per device.
    ///
    /// # Errors
    /// The channel could not be built; nothing stays allocated.
    fn report_channel_open(
        &mut self,
        req: ReportChannelRequest,
    ) -> Result<Option<ReportChannel>, Self::Error> {
        let _ = req;
        Ok(None)
    }

    /// Copies the next valid CQE of the channel into `cqe` (its owner bit
    /// and `INVALID` opcode already judged: that is queue mechanics) and
    /// consumes it; or, if none is there, waits up to `timeout_ns` for one
    /// (arming the CQ) or for an event. Returns what it found. The default
    /// reports [`ReportEvent::ChannelError`]: without a channel there is
    /// nothing to poll.
    ///
    /// # Errors
    /// The platform failed; the core then treats the channel as broken.
    fn report_channel_next(
        &mut self,
        cqe: &mut [u8; CQE_LEN],
        timeout_ns: u64,
    ) -> Result<ReportEvent, Self::Error> {
        let _ = (cqe, timeout_ns);
        Ok(ReportEvent::ChannelError)
    }

    /// Copies `dst.len()` bytes of the message in receive slot `slot` from
    /// byte `offset` (the core reads a message in pieces, never past the
    /// length its CQE gave). `Ok(false)` (the default) means there is no
    /// such slot or range: the core treats the channel as broken.
    ///
    /// # Errors
    /// The platform failed.
    fn report_channel_read(
        &mut self,
        slot: u32,
        offset: u32,
        dst: &mut [u8],
    ) -> Result<bool, Self::Error> {
        let _ = (slot, offset, dst);
        Ok(false)
    }

    /// Gives receive slot `slot` back to firmware (re-posts its WQE and
    /// rings the RQ doorbell record) once the core has read it.
    ///
    /// # Errors
    /// The platform failed; the core treats the channel as broken.
    fn report_channel_repost(&mut self, slot: u32) -> Result<(), Self::Error> {
        let _ = slot;
        Ok(())
    }

    /// Closes the channel: unsubscribes, destroys both QPs, the mkey and
    /// buffers, the CQ and what else `report_channel_open` built. Called
    /// after the tracker object is destroyed.
    fn report_channel_close(&mut self) {}
}

impl<H: Hal + ?Sized> Hal for &mut H {
    type Error = H::Error;
    fn exec(&mut self, input: &[u8], output: &mut [u8]) -> Result<(), Self::Error> {
        (**self).exec(input, output)
    }
    fn start_save(&mut self, input: &[u8], token: SaveToken) -> Result<(), Self::Error> {
        (**self).start_save(input, token)
    }
    fn start_load(&mut self, input: &[u8], token: LoadToken) -> Result<bool, Self::Error> {
        (**self).start_load(input, token)
    }
    fn alloc_buffer(&mut self, npages: u32, dir: DmaDirection) -> Result<BufferId, Self::Error> {
        (**self).alloc_buffer(npages, dir)
    }
    fn map_buffers(&mut self, pd: Pd, buffers: &[BufferId]) -> Result<Mkey, Self::Error> {
        (**self).map_buffers(pd, buffers)
    }
    fn unmap_buffers(&mut self, mkey: Mkey, buffers: &[BufferId]) -> Result<(), Self::Error> {
        (**self).unmap_buffers(mkey, buffers)
    }
    fn free_buffer(&mut self, buffer: BufferId) {
        (**self).free_buffer(buffer)
    }
    fn crc32c(&mut self, buffer: BufferId, offset: u64, len: u64, crc: u32) -> u32 {
        (**self).crc32c(buffer, offset, len, crc)
    }
    fn now_ns(&mut self) -> Option<u64> {
        (**self).now_ns()
    }
    fn report_channel_open(
        &mut self,
        req: ReportChannelRequest,
    ) -> Result<Option<ReportChannel>, Self::Error> {
        (**self).report_channel_open(req)
    }
    fn report_channel_next(
        &mut self,
        cqe: &mut [u8; CQE_LEN],
        timeout_ns: u64,
    ) -> Result<ReportEvent, Self::Error> {
        (**self).report_channel_next(cqe, timeout_ns)
    }
    fn report_channel_read(
        &mut self,
        slot: u32,
        offset: u32,
        dst: &mut [u8],
    ) -> Result<bool, Self::Error> {
        (**self).report_channel_read(slot, offset, dst)
    }
    fn report_channel_repost(&mut self, slot: u32) -> Result<(), Self::Error> {
        (**self).report_channel_repost(slot)
    }
    fn report_channel_close(&mut self) {
        (**self).report_channel_close()
    }
}
