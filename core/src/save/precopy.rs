//! PRE_COPY: the precopy-info numbers, incremental and cleanup SAVEs, and the
//! list of buffers kept for reuse between them.

use super::{BufRef, Chain, Phase, SaveAction, SaveEngine, SaveError, SaveKind, Wanted};

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

impl SaveEngine {
    /// Puts a buffer on the available list; returns it if the list is full
    /// (the caller frees it, or the device does when the file closes).
    #[must_use]
    pub(super) fn recycle(&mut self, buf: BufRef) -> Option<BufRef> {
        self.avail.push(buf).err()
    }

    /// VFIO_MIG_GET_PRECOPY_INFO, given what the incremental QUERY reported
    /// (`inc_len`: `required_umem_size`, the next SAVE's buffer; `remaining`:
    /// `remaining_total_size`, everything firmware still holds, chunk mode
    /// only; both 0 in PRE_COPY_P2P and after a PRE_COPY error) and whether
    /// firmware reported new initial data with PRECOPY_INFOv2 opted in
    /// (`reinit`). Returns the numbers; when the reader has drained
    /// everything (or on REINIT) and firmware has data, the next PRE_COPY
    /// image is queued as actions.
    ///
    /// Under [`PrecopyPolicy::Linux`](super::PrecopyPolicy::Linux) firmware's
    /// share is `inc_len` (one chunk); under chunked PRE_COPY it is
    /// `remaining`, and it counts as initial bytes while the first image is
    /// still being saved. On REINIT, bytes queued but unread count as
    /// initial bytes (the reader must read them before the new initial
    /// data), as the Linux patch does.
    ///
    /// # Errors
    /// [`SaveError::FileError`] when the file failed.
    pub fn precopy_info(
        &mut self,
        inc_len: u64,
        remaining: u64,
        reinit: bool,
    ) -> Result<PrecopyInfo, SaveError> {
        if self.is_failed() {
            return Err(SaveError::FileError);
        }
        let chunked = self.cfg.chunked_precopy();
        let in_firmware = if chunked {
            remaining.max(inc_len)
        } else {
            inc_len
        };
        let unread = self.end_pos.saturating_sub(self.pos);
        let mut info = PrecopyInfo::default();
        if reinit {
            self.initial_start = self.pos;
            self.initial_len = unread;
            self.reinit_pending = true;
            info.initial_bytes = unread.saturating_add(in_firmware);
            info.reinit = true;
        } else {
            // New initial data still in firmware counts as initial too, as
            // does the rest of a first image still being saved.
            let initial_open = chunked && self.initial_image_open();
            let pending = if self.reinit_pending || initial_open {
                in_firmware
            } else {
                0
            };
            let initial_end = self.initial_start.saturating_add(self.initial_len);
            if initial_end > self.pos || initial_open {
                info.initial_bytes = initial_end.saturating_sub(self.pos).saturating_add(pending);
                return Ok(info);
            }
            if self.reinit_pending {
                info.initial_bytes = unread.saturating_add(in_firmware);
            } else {
                info.dirty_bytes = unread.saturating_add(in_firmware);
            }
        }
        // Only a drained queue takes a new image (a REINIT waits too), and
        // only while PRE_COPY runs.
        let start = unread == 0
            && inc_len != 0
            && self.in_flight.is_none()
            && self.wanted.is_none()
            && self.phase == Phase::PRE_COPY;
        if start {
            let initial = self.reinit_pending;
            self.reinit_pending = false;
            if chunked {
                self.chain_budget = in_firmware;
                match self.free_slot(0) {
                    Some(slot) => self.issue_chunk(slot, inc_len, Chain::PreCopy { initial })?,
                    // Drained means every slot is free; nothing to start.
                    None => self.reinit_pending = initial,
                }
            } else {
                self.issue_fresh(inc_len, SaveKind::PreCopy { initial })?;
            }
        }
        Ok(info)
    }

    /// The VF was suspended (PRE_COPY → PRE_COPY_P2P): chunked PRE_COPY
    /// stops chaining (a held chunk is dropped; the final save, or a
    /// precopy-info after resuming, moves that data).
    pub fn pause_precopy(&mut self) {
        if let Phase::PreCopy { .. } = self.phase {
            self.phase = Phase::PreCopy {
                held: None,
                paused: true,
            };
        }
    }

    /// The VF runs again (PRE_COPY_P2P → PRE_COPY).
    pub fn resume_precopy(&mut self) {
        if let Phase::PreCopy { held, .. } = self.phase {
            self.phase = Phase::PreCopy {
                held,
                paused: false,
            };
        }
    }

    /// Queues a non-slot SAVE of at least `min_bytes`: into a buffer from the
    /// available list when one fits, else an allocation (buffers too small to
    /// reuse are freed, as Linux's `mlx5vf_get_data_buffer` does).
    pub(super) fn issue_fresh(&mut self, min_bytes: u64, kind: SaveKind) -> Result<(), SaveError> {
        let npages = self.cfg.pages_for(min_bytes);
        while let Some(buf) = self.avail.pop() {
            if buf.npages >= npages {
                let req = self.request(buf, kind);
                return self.act(SaveAction::Save(req));
            }
            self.act(SaveAction::Free(buf))?;
        }
        self.want(Wanted::Fresh(kind), npages)
    }

    /// Queues the cleanup save that tells firmware PRE_COPY is over (`inc=0
    /// track=0`) into a buffer of at least `min_bytes`; its data is
    /// discarded.
    ///
    /// # Errors
    /// [`SaveError::WrongState`] with a SAVE in flight.
    pub fn start_cleanup(&mut self, min_bytes: u64) -> Result<(), SaveError> {
        if self.in_flight.is_some() || self.wanted.is_some() {
            return Err(SaveError::WrongState);
        }
        self.issue_fresh(min_bytes, SaveKind::Cleanup)
    }
}
