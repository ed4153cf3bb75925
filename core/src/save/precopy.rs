//! PRE_COPY: the precopy-info numbers, incremental and cleanup SAVEs, and the
//! list of buffers kept for reuse between them.

use heapless::Vec;

use crate::ifc::migration::{Scope, Tracking};

use super::{BufRef, FileState, MAX_AVAIL, SaveEngine, SaveError, SaveKind, SaveRequest};

/// A buffer for a non-slot SAVE (PRE_COPY, cleanup): reuse one from the
/// available list, or allocate; buffers too small to reuse are freed
/// (as Linux's `mlx5vf_get_data_buffer` does).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TakeBuffer {
    /// A buffer to reuse, if any fits.
    pub reuse: Option<BufRef>,
    /// Pages to allocate when nothing fits.
    pub npages: u32,
    /// Buffers to free.
    pub free: Vec<BufRef, MAX_AVAIL>,
}

/// VFIO_MIG_GET_PRECOPY_INFO numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PrecopyInfo {
    /// Bytes of the initial image still unread.
    pub initial_bytes: u64,
    /// Bytes of later changes: unread queued bytes plus what firmware has.
    pub dirty_bytes: u64,
    /// `VFIO_PRECOPY_INFO_REINIT` (PRECOPY_INFOv2 only): new initial data
    /// appeared; `initial_bytes` restarts from this value.
    pub reinit: bool,
}

/// An incremental PRE_COPY SAVE the device must start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PrecopyStart {
    /// Buffer bytes it needs.
    pub bytes: u64,
    /// It carries new initial data (REINIT).
    pub initial: bool,
}

impl SaveEngine {
    /// Puts a buffer on the available list; returns it if the list is full
    /// (the caller frees it, or the device does when the file closes).
    #[must_use]
    pub(super) fn recycle(&mut self, buf: BufRef) -> Option<BufRef> {
        self.avail.push(buf).err()
    }

    /// VFIO_MIG_GET_PRECOPY_INFO, given the incremental size firmware reports
    /// (`inc_len`; 0 in PRE_COPY_P2P and after a PRE_COPY error) and whether
    /// firmware reported new initial data with PRECOPY_INFOv2 opted in
    /// (`reinit`). Returns the numbers and, when the reader has drained
    /// everything (or on REINIT) and firmware has data, the incremental SAVE
    /// to start.
    ///
    /// On REINIT, bytes queued but unread count as initial bytes (the reader
    /// must read them before the new initial data), as the Linux patch does.
    ///
    /// # Errors
    /// [`SaveError::FileError`] when the file failed.
    pub fn precopy_info(
        &mut self,
        inc_len: u64,
        reinit: bool,
    ) -> Result<(PrecopyInfo, Option<PrecopyStart>), SaveError> {
        if self.state == FileState::Error {
            return Err(SaveError::FileError);
        }
        let unread = self.end_pos.saturating_sub(self.pos);
        let mut info = PrecopyInfo::default();
        if reinit {
            self.initial_start = self.pos;
            self.initial_len = unread;
            self.reinit_pending = true;
            info.initial_bytes = unread.saturating_add(inc_len);
            info.reinit = true;
        } else {
            // The new initial data still in firmware counts as initial too.
            let pending = if self.reinit_pending { inc_len } else { 0 };
            let initial_end = self.initial_start.saturating_add(self.initial_len);
            if initial_end > self.pos {
                info.initial_bytes = initial_end.saturating_sub(self.pos).saturating_add(pending);
                return Ok((info, None));
            }
            if self.reinit_pending {
                info.initial_bytes = unread.saturating_add(inc_len);
            } else {
                info.dirty_bytes = unread.saturating_add(inc_len);
            }
        }
        // Only a drained queue takes a new image (a REINIT waits too).
        let start =
            (unread == 0 && inc_len != 0 && self.in_flight.is_none()).then_some(PrecopyStart {
                bytes: inc_len,
                initial: self.reinit_pending,
            });
        Ok((info, start))
    }

    /// A buffer of at least `min_bytes` for a non-slot SAVE.
    pub fn take_buffer(&mut self, min_bytes: u64) -> TakeBuffer {
        let npages = self.cfg.pages_for(min_bytes);
        let mut out = TakeBuffer {
            reuse: None,
            npages,
            free: Vec::new(),
        };
        while let Some(buf) = self.avail.pop() {
            if buf.npages >= npages {
                out.reuse = Some(buf);
                break;
            }
            // Too small: free it rather than keep redundant buffers.
            let _ = out.free.push(buf);
        }
        out
    }

    /// Starts an incremental PRE_COPY save (`inc=1 track=1`) into `buf`;
    /// `initial` as [`PrecopyStart::initial`] said.
    ///
    /// # Errors
    /// [`SaveError::WrongState`] outside PRE_COPY or with a SAVE in flight.
    pub fn start_precopy(&mut self, buf: BufRef, initial: bool) -> Result<SaveRequest, SaveError> {
        if self.state != FileState::PreCopy || self.in_flight.is_some() {
            return Err(SaveError::WrongState);
        }
        if initial {
            self.reinit_pending = false;
        }
        Ok(self.request(
            buf,
            Scope::Incremental,
            Tracking::Track,
            SaveKind::PreCopy { initial },
        ))
    }

    /// Starts the cleanup save that tells firmware PRE_COPY is over (`inc=0
    /// track=0`); its data is discarded.
    ///
    /// # Errors
    /// [`SaveError::WrongState`] with a SAVE in flight.
    pub fn start_cleanup(&mut self, buf: BufRef) -> Result<SaveRequest, SaveError> {
        if self.in_flight.is_some() {
            return Err(SaveError::WrongState);
        }
        Ok(self.request(buf, Scope::Full, Tracking::Untracked, SaveKind::Cleanup))
    }
}
