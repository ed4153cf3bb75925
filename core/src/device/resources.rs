//! Who owns which buffer and PD, and when each may be freed.
//!
//! Every buffer belongs to one file session. A buffer is *pinned* while a
//! SAVE writes into it or a reader copies out of it outside the device lock;
//! closing a session frees every unpinned buffer at once and marks pinned
//! ones *doomed*: they are freed when unpinned. A session's PD is freed when
//! the session is closed and its last buffer is gone, because firmware
//! refuses to free a PD that memory keys still use.

use crate::hal::{BufferId, DmaDirection, Hal, HalError};
use crate::ifc::mkey::Mkey;
use crate::ifc::pd::{AllocPd, DeallocPd, Pd};
use crate::save::BufRef;

use super::{Device, DeviceError};

/// Readers copying at once: the live saving file's, and one of a file that
/// was replaced (by a reset and a new walk) while its reader was copying. A
/// third reader waits (`EBUSY`) until one of them ends its copy.
pub const MAX_READ_LEASES: usize = 2;
/// Buffers the device tracks at once. A saving file holds at most
/// `MAX_CHUNK_SLOTS` (8) slot buffers, one initial PRE_COPY buffer, one
/// incremental or cleanup buffer and `MAX_AVAIL` (4) spare ones: 14; a
/// resuming file holds up to `MAX_IMAGE_SEGMENTS` (16) in each of its
/// `IMAGE_BUFFERS` (2): 32; closed sessions still hold what is pinned: one
/// SAVE in flight and `MAX_READ_LEASES` (2) leased to readers, or the
/// segments of a LOAD in flight (16, and then no new resuming file opens
/// until it completes, so it never adds to the 32). 14 + 32 + 3 = 49.
pub const MAX_BUFFERS: usize = 49;
/// PDs the device tracks at once: one per open file (2) plus closed sessions
/// whose pinned buffers are still draining (at most 3, one per pin).
pub const MAX_PDS: usize = 5;

/// A session's identity: its generation number.
pub(crate) type SessionId = u32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Buf {
    pub(crate) id: BufferId,
    pub(crate) npages: u32,
    pub(crate) dir: DmaDirection,
    pub(crate) session: SessionId,
    /// The buffer's own memory key (save buffers; load segments share one
    /// key held by the resuming file).
    pub(crate) mkey: Option<Mkey>,
    pub(crate) in_dma: bool,
    pub(crate) leased: bool,
    pub(crate) doomed: bool,
}

impl Buf {
    pub(crate) fn pinned(&self) -> bool {
        self.in_dma || self.leased
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PdSlot {
    pub(crate) pd: Pd,
    pub(crate) session: SessionId,
    pub(crate) closed: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct Resources {
    pub(crate) bufs: [Option<Buf>; MAX_BUFFERS],
    pub(crate) pds: [Option<PdSlot>; MAX_PDS],
    /// Bytes of live buffers, and the most ever live at once.
    pub(crate) bytes: u64,
    pub(crate) peak_bytes: u64,
    pub(crate) page_size: u64,
}

impl Resources {
    pub(crate) const fn new(page_size: u64) -> Self {
        Self {
            bufs: [None; MAX_BUFFERS],
            pds: [None; MAX_PDS],
            bytes: 0,
            peak_bytes: 0,
            page_size,
        }
    }

    pub(crate) fn get(&self, index: u16) -> Option<&Buf> {
        self.bufs.get(usize::from(index)).and_then(Option::as_ref)
    }

    pub(crate) fn get_mut(&mut self, index: u16) -> Option<&mut Buf> {
        self.bufs
            .get_mut(usize::from(index))
            .and_then(Option::as_mut)
    }

    /// Records a new buffer; `None` if the table is full.
    pub(crate) fn insert(&mut self, buf: Buf) -> Option<u16> {
        let (i, slot) = self
            .bufs
            .iter_mut()
            .enumerate()
            .find(|(_, b)| b.is_none())?;
        *slot = Some(buf);
        let bytes = u64::from(buf.npages).saturating_mul(self.page_size);
        self.bytes = self.bytes.saturating_add(bytes);
        self.peak_bytes = self.peak_bytes.max(self.bytes);
        u16::try_from(i).ok()
    }

    /// Forgets a buffer (after the platform freed it).
    pub(crate) fn remove(&mut self, index: u16) -> Option<Buf> {
        let buf = self.bufs.get_mut(usize::from(index))?.take()?;
        let bytes = u64::from(buf.npages).saturating_mul(self.page_size);
        self.bytes = self.bytes.saturating_sub(bytes);
        Some(buf)
    }

    /// Indexes of a session's buffers.
    pub(crate) fn of_session(&self, session: SessionId) -> impl Iterator<Item = u16> + '_ {
        self.bufs
            .iter()
            .enumerate()
            .filter_map(move |(i, b)| match b {
                Some(b) if b.session == session => u16::try_from(i).ok(),
                _ => None,
            })
    }

    pub(crate) fn has_buffers(&self, session: SessionId) -> bool {
        self.of_session(session).next().is_some()
    }

    pub(crate) fn insert_pd(&mut self, pd: Pd, session: SessionId) -> bool {
        match self.pds.iter_mut().find(|p| p.is_none()) {
            Some(slot) => {
                *slot = Some(PdSlot {
                    pd,
                    session,
                    closed: false,
                });
                true
            }
            None => false,
        }
    }

    pub(crate) fn pd_of(&self, session: SessionId) -> Option<Pd> {
        self.pds
            .iter()
            .flatten()
            .find(|p| p.session == session)
            .map(|p| p.pd)
    }

    pub(crate) fn pd_slot_mut(&mut self, session: SessionId) -> Option<&mut PdSlot> {
        self.pds.iter_mut().flatten().find(|p| p.session == session)
    }

    pub(crate) fn remove_pd(&mut self, session: SessionId) -> Option<Pd> {
        let slot = self
            .pds
            .iter_mut()
            .find(|p| p.is_some_and(|p| p.session == session))?;
        slot.take().map(|p| p.pd)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.bufs.iter().all(Option::is_none) && self.pds.iter().all(Option::is_none)
    }
}

/// Buffers and PDs through the platform, with the table above kept in step.
impl<H: Hal> Device<H> {
    /// Allocates a buffer of `npages` for `session` and, for save buffers,
    /// maps it under the session's PD.
    pub(super) fn alloc_buffer(
        &mut self,
        session: SessionId,
        npages: u32,
        dir: DmaDirection,
        map: bool,
    ) -> Result<BufRef, DeviceError> {
        let id = self
            .hal
            .alloc_buffer(npages, dir)
            .map_err(|e| DeviceError::Platform(e.kind()))?;
        let buf = Buf {
            id,
            npages,
            dir,
            session,
            mkey: None,
            in_dma: false,
            leased: false,
            doomed: false,
        };
        let Some(index) = self.res.insert(buf) else {
            self.hal.free_buffer(id);
            return Err(DeviceError::TableFull);
        };
        if map {
            let Some(pd) = self.res.pd_of(session) else {
                self.free_buffer(index);
                return Err(DeviceError::NoFile);
            };
            match self.hal.map_buffers(pd, &[id]) {
                Ok(mkey) => {
                    if let Some(b) = self.res.get_mut(index) {
                        b.mkey = Some(mkey);
                    }
                }
                Err(e) => {
                    self.free_buffer(index);
                    return Err(DeviceError::Platform(e.kind()));
                }
            }
        }
        Ok(BufRef { index, npages })
    }

    /// Unmaps and frees a buffer now, or marks it doomed if pinned.
    pub(super) fn free_buffer(&mut self, index: u16) {
        let Some(buf) = self.res.get_mut(index) else {
            return;
        };
        if buf.pinned() {
            buf.doomed = true;
            return;
        }
        let session = buf.session;
        let mkey = buf.mkey.take();
        let id = buf.id;
        if let Some(mkey) = mkey {
            self.unmap(mkey, &[id]);
        }
        self.hal.free_buffer(id);
        let _ = self.res.remove(index);
        self.release_pd_if_unused(session);
    }

    pub(super) fn unmap(&mut self, mkey: Mkey, ids: &[BufferId]) {
        if self.hal.unmap_buffers(mkey, ids).is_err() {
            self.leaked_mkeys = self.leaked_mkeys.saturating_add(1);
        }
    }

    /// Frees a closed session's PD once its last buffer is gone.
    pub(super) fn release_pd_if_unused(&mut self, session: SessionId) {
        let closed = self.res.pd_slot_mut(session).is_some_and(|p| p.closed);
        if closed && !self.res.has_buffers(session) {
            if let Some(pd) = self.res.remove_pd(session) {
                self.dealloc_pd(pd);
            }
        }
    }

    pub(super) fn dealloc_pd(&mut self, pd: Pd) {
        // Freeing is attempted even when detached: PDs belong to the PF.
        if self.exec(&DeallocPd { pd }).is_err() {
            self.leaked_pds = self.leaked_pds.saturating_add(1);
        }
    }

    pub(super) fn alloc_pd(&mut self, session: SessionId) -> Result<(), DeviceError> {
        let pd = self.exec_vf(&AllocPd)?;
        if !self.res.insert_pd(pd, session) {
            self.dealloc_pd(pd);
            return Err(DeviceError::TableFull);
        }
        Ok(())
    }

    /// Closes a session's resources: every unpinned buffer now, pinned ones
    /// when unpinned, the PD after the last buffer.
    pub(super) fn close_session(&mut self, session: SessionId) {
        if let Some(p) = self.res.pd_slot_mut(session) {
            p.closed = true;
        }
        let mut indexes = [0u16; MAX_BUFFERS];
        let mut n = 0usize;
        for (slot, i) in indexes.iter_mut().zip(self.res.of_session(session)) {
            *slot = i;
            n = n.saturating_add(1);
        }
        for &i in indexes.get(..n).unwrap_or_default() {
            self.free_buffer(i);
        }
        self.release_pd_if_unused(session);
    }
}
