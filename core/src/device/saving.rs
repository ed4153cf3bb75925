//! The saving file: opening it, SAVE completions, the reader, PRE_COPY info,
//! and the arcs that end PRE_COPY.

use crate::hal::{BufferId, DmaDirection, Hal, HalError};
use crate::ifc::migration::{QueryMigrationState, SaveResult, SaveVhcaState, Scope};
use crate::ifc::{Command, DecodeError, MAX_FIXED_IN};
use crate::save::{
    BufRef, Empty, FileState, ImageMode, PrecopyInfo, SaveAction, SaveConfig, SaveEngine,
    SaveFailure, SaveKind, SaveRequest, Segment, plan_open,
};
use crate::stream::{STREAM_FORMAT_VERSION, StreamInfo, StreamInfoFlags};
use crate::vfio::{MigState, SaveMode, Session};

use super::resources::SessionId;
use super::{Device, DeviceError, FileId, InFlightSave, Lease};

/// Largest inline segment: our stream-info record.
pub const MAX_INLINE: usize = StreamInfo::RECORD_LEN;

pub(crate) struct SavingFile {
    pub(crate) session: SessionId,
    pub(crate) engine: SaveEngine,
    /// The user closed the file; the device keeps it until an arc closes it,
    /// as Linux's driver holds its own reference.
    pub(crate) orphaned: bool,
    /// Bytes firmware held when STOP_COPY began (set then): the chunk size
    /// is tuned for downtime from then on.
    pub(crate) stop_bytes: Option<u64>,
}

/// The next bytes of a saving file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadSegment {
    /// Bytes the device holds (record headers, our records): copy
    /// `bytes[..len]`.
    Inline {
        /// The bytes.
        bytes: [u8; MAX_INLINE],
        /// How many are valid.
        len: usize,
    },
    /// Copy `len` bytes of `buffer` from `offset`.
    Buffer {
        /// The platform's buffer.
        buffer: BufferId,
        /// Offset in the buffer.
        offset: u64,
        /// Bytes.
        len: u64,
    },
    /// End of stream: `read()` returns 0.
    Eof,
}

impl ReadSegment {
    /// The inline bytes, for [`ReadSegment::Inline`].
    pub fn inline_bytes(&self) -> Option<&[u8]> {
        match self {
            Self::Inline { bytes, len } => bytes.get(..*len),
            _ => None,
        }
    }
}

/// What `poll()` reports for a saving file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Poll {
    /// `EPOLLIN | EPOLLRDNORM`: data queued, or end of stream.
    pub readable: bool,
    /// `EPOLLRDHUP`: the file failed.
    pub hangup: bool,
}

impl<H: Hal> Device<H> {
    fn saving_for(&mut self, file: FileId) -> Result<&mut SavingFile, DeviceError> {
        match self.saving.as_mut() {
            Some(f) if file.kind == Session::Saving && f.session == file.session && !f.orphaned => {
                Ok(f)
            }
            _ => Err(DeviceError::NoFile),
        }
    }

    /// Opens a saving file: PD, QUERY, slot buffers, the first SAVE.
    /// Any failure frees whatever was allocated, once.
    pub(super) fn open_saving(&mut self, mode: SaveMode) -> Result<FileId, DeviceError> {
        let session = self.new_session();
        self.alloc_pd(session)?;
        match self.open_saving_in(session, mode) {
            Ok(()) => Ok(FileId {
                kind: Session::Saving,
                session,
            }),
            Err(e) => {
                if self.saving.as_ref().is_some_and(|f| f.session == session) {
                    self.saving = None;
                }
                self.close_session(session);
                Err(e)
            }
        }
    }

    fn open_saving_in(&mut self, session: SessionId, mode: SaveMode) -> Result<(), DeviceError> {
        let probe = self.probe.ok_or(DeviceError::NotProbed)?;
        let q = self.exec_vf(&QueryMigrationState {
            vhca_id: probe.vhca_id,
            scope: Scope::Full,
            chunked: probe.chunk_mode,
        })?;
        let tracking = mode == SaveMode::PreCopy;
        // A speed measured by an earlier session sizes the chunks from the
        // start: for downtime when this is the stop itself.
        let stop_bytes = (mode == SaveMode::StopCopy).then_some(q.remaining_total_size);
        let chunk_size = self.wanted_chunk(stop_bytes).unwrap_or(self.cfg.chunk_size);
        let cfg = SaveConfig {
            image: if probe.chunk_mode {
                ImageMode::Chunked
            } else {
                ImageMode::Single
            },
            mode,
            precopy: self.cfg.precopy_policy,
            chunk_size,
            chunk_slots: self.cfg.chunk_slots,
            page_size: crate::ifc::mkey::PAGE_SIZE,
            max_buffer: self.cfg.max_save_buffer,
            stream_info: self.cfg.integrity_records.then(|| StreamInfo {
                version: STREAM_FORMAT_VERSION,
                flags: StreamInfoFlags::new()
                    .with_chunk_mode(probe.chunk_mode)
                    .with_pre_copy(tracking),
                // CAST: 4096.
                page_size: crate::ifc::mkey::PAGE_SIZE as u32,
                chunk_size: if probe.chunk_mode { chunk_size } else { 0 },
                chunk_slots: u32::from(self.cfg.chunk_slots),
                producer: self.cfg.producer,
            }),
        };
        let plan = plan_open(&cfg, q)?;
        let mut slots = [BufRef {
            index: 0,
            npages: 0,
        }; crate::save::MAX_CHUNK_SLOTS];
        let count = usize::from(plan.slots).min(slots.len());
        for slot in slots.iter_mut().take(count) {
            *slot = self.alloc_buffer(session, plan.slot_pages, DmaDirection::FromDevice, true)?;
        }
        // The engine is opened where it lives: built on the stack and moved,
        // it would put kilobytes on a kernel's 16 KiB stack. On an error
        // `open_saving` drops the file.
        let file = self.saving.insert(SavingFile {
            session,
            engine: SaveEngine::IDLE,
            orphaned: false,
            stop_bytes,
        });
        file.engine
            .open(cfg, slots.get(..count).unwrap_or_default())?;
        file.engine.first_save(&plan)?;
        self.last_chunk_size = u64::from(plan.slot_pages).saturating_mul(cfg.page_size);
        self.drive_saving()
    }

    /// Carries out what the saving engine asks for (SAVEs, allocations,
    /// frees) until it asks for nothing: the one loop every input of the
    /// saving file ends in. An action that cannot be carried out fails the
    /// file through the engine (which drops what depended on it; queued
    /// frees still run), and the first such error is returned.
    fn drive_saving(&mut self) -> Result<(), DeviceError> {
        let mut first_error = None;
        // Bounded: every action is popped once, and carrying one out queues
        // at most one more (an allocation its SAVE, a failed SAVE its free),
        // so the engine's MAX_ACTIONS bounds each chain.
        while let Some((session, action)) = self
            .saving
            .as_mut()
            .and_then(|f| f.engine.poll_action().map(|a| (f.session, a)))
        {
            let outcome = match action {
                SaveAction::Free(buf) => {
                    self.free_buffer(buf.index);
                    Ok(())
                }
                SaveAction::Allocate { npages } => self.supply_save_buffer(session, npages),
                SaveAction::Save(req) => self.issue_save(req),
            };
            if let Err(e) = outcome {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Allocates the buffer the engine asked for and hands it over.
    fn supply_save_buffer(&mut self, session: SessionId, npages: u32) -> Result<(), DeviceError> {
        let buf = match self.alloc_buffer(session, npages, DmaDirection::FromDevice, true) {
            Ok(buf) => buf,
            Err(e) => {
                self.fail_saving(SaveFailure::NotStarted);
                return Err(e);
            }
        };
        let handed = self
            .saving
            .as_mut()
            .ok_or(DeviceError::NoFile)
            .and_then(|f| Ok(f.engine.handle_buffer(buf)?));
        if handed.is_err() {
            // The engine did not take it.
            self.free_buffer(buf.index);
        }
        handed
    }

    /// Issues a SAVE the engine asked for; one that cannot be issued goes
    /// back to the engine as failed.
    fn issue_save(&mut self, req: SaveRequest) -> Result<(), DeviceError> {
        let result = self
            .probed_vhca()
            .and_then(|vhca_id| self.try_start_save(vhca_id, req));
        if result.is_err() {
            if let Some(f) = self.saving.as_mut() {
                let _ = f.engine.handle_save_failed(SaveFailure::NotStarted);
            }
        }
        result
    }

    fn try_start_save(&mut self, vhca_id: u16, req: SaveRequest) -> Result<(), DeviceError> {
        if self.detached {
            return Err(DeviceError::Detached);
        }
        self.no_save_in_flight()?;
        let session = self
            .saving
            .as_ref()
            .map(|f| f.session)
            .ok_or(DeviceError::NoFile)?;
        let mkey = self
            .res
            .get(req.buf.index)
            .and_then(|b| b.mkey)
            .ok_or(DeviceError::NoFile)?;
        let cmd = SaveVhcaState {
            vhca_id,
            scope: req.scope,
            tracking: req.tracking,
            va: 0,
            mkey,
            size: req.size,
        };
        let mut input = [0u8; MAX_FIXED_IN];
        let n = cmd.encode(&mut input)?;
        let token = self.next_token(session);
        // A clock reading of 0 counts as 1 ns: a niche keeps the field small.
        let started_ns = self
            .hal
            .now_ns()
            .map(|t| core::num::NonZeroU64::new(t).unwrap_or(core::num::NonZeroU64::MIN));
        self.hal
            .start_save(input.get(..n).unwrap_or_default(), token)
            .map_err(|e| DeviceError::Platform(e.kind()))?;
        if let Some(b) = self.res.get_mut(req.buf.index) {
            b.in_dma = true;
        }
        self.in_flight = Some(InFlightSave {
            token,
            buf: req.buf.index,
            session,
            started_ns,
        });
        Ok(())
    }

    fn fail_saving(&mut self, why: SaveFailure) {
        if let Some(f) = self.saving.as_mut() {
            f.engine.fail(why);
        }
    }

    /// The platform delivers the output of the SAVE started with `token`.
    ///
    /// A SAVE that failed (firmware status, hostile sizes) puts the file in
    /// error (or PRE_COPY_ERROR, as Linux does); that is not an error of this
    /// call. The next chunk, if one is due and a slot is free, is started here.
    ///
    /// # Errors
    /// [`DeviceError::StaleCompletion`] when `token` does not name the SAVE in
    /// flight (a completion delivered twice, or for another session); nothing
    /// changes.
    pub fn handle_save_completion(
        &mut self,
        token: crate::hal::SaveToken,
        output: &[u8],
    ) -> Result<(), DeviceError> {
        let f = self
            .in_flight
            .filter(|f| f.token == token)
            .ok_or(DeviceError::StaleCompletion)?;
        self.in_flight = None;
        let mut doomed = false;
        if let Some(b) = self.res.get_mut(f.buf) {
            b.in_dma = false;
            doomed = b.doomed;
        }
        let live = self.saving.as_ref().is_some_and(|s| s.session == f.session);
        if !live || doomed {
            // The file closed while firmware was writing: the buffer can go.
            self.free_buffer(f.buf);
            return Ok(());
        }
        let kind = self
            .saving
            .as_ref()
            .and_then(|s| s.engine.in_flight())
            .map(|(_, k)| k);
        self.measure_save(f.started_ns, output);
        self.apply_completion(f.buf, output);
        if kind == Some(SaveKind::Cleanup) {
            let failed = self.saving.as_ref().is_some_and(|s| s.engine.is_failed());
            self.cleanup_done = Some(if failed {
                Err(DeviceError::SaveFileFailed)
            } else {
                Ok(())
            });
            self.close_saving();
        }
        Ok(())
    }

    fn apply_completion(&mut self, buf_index: u16, output: &[u8]) {
        let decoded = SaveResult::parse(output);
        let buf_id = self.res.get(buf_index).map(|b| b.id);
        let integrity = self.cfg.integrity_records;
        let Some(file) = self.saving.as_mut() else {
            return;
        };
        let result = match decoded {
            Ok(r) => r,
            Err(e) => {
                let why = match e {
                    DecodeError::Failed(c) => SaveFailure::Refused(c.status),
                    _ => SaveFailure::BadOutput,
                };
                let _ = file.engine.handle_save_failed(why);
                let _ = self.drive_saving();
                return;
            }
        };
        let crc = match (file.engine.check_completion(&result), buf_id) {
            (Ok(image), Some(id)) if integrity => {
                let crc = file.engine.payload_crc();
                self.hal.crc32c(id, 0, u64::from(image), crc)
            }
            _ => 0,
        };
        let Some(file) = self.saving.as_mut() else {
            return;
        };
        // On error the engine has failed the file (with the reason); what it
        // still asks for (frees) runs below, and a failure to start the next
        // chunk fails the file the same way: no caller waits on this call.
        let _ = file.engine.handle_completion(result, crc);
        let _ = self.drive_saving();
    }

    /// The final save when PRE_COPY ends (PRE_COPY_P2P → STOP_COPY).
    pub(super) fn final_save(&mut self) -> Result<(), DeviceError> {
        let probe = self.probe.ok_or(DeviceError::NotProbed)?;
        let state = match self.saving.as_ref() {
            Some(f) => f.engine.state(),
            None => return Err(DeviceError::NoFile),
        };
        if state == FileState::Error {
            return Err(DeviceError::FileFailed);
        }
        // After a PRE_COPY error the final image is a full one, so the
        // QUERY asks for the full size.
        let scope = if state == FileState::PreCopyError {
            Scope::Full
        } else {
            Scope::Incremental
        };
        let result = self
            .exec_vf(&QueryMigrationState {
                vhca_id: probe.vhca_id,
                scope,
                chunked: probe.chunk_mode,
            })
            .and_then(|q| {
                self.tune_for_stop(q.remaining_total_size);
                let file = self.saving.as_mut().ok_or(DeviceError::NoFile)?;
                Ok(file.engine.start_final(u64::from(q.required_umem_size))?)
            })
            .and_then(|()| self.drive_saving());
        if result.is_err() {
            self.fail_saving(SaveFailure::NotStarted);
        }
        result
    }

    /// Leaving PRE_COPY without migrating (PRE_COPY → RUNNING, PRE_COPY_P2P →
    /// RUNNING_P2P): a cleanup SAVE so firmware stops tracking, then the file
    /// closes. The first call starts the SAVE and returns
    /// [`DeviceError::SaveInFlight`]; the call after the completion finishes
    /// the arc (`EIO` if the file had failed).
    pub(super) fn precopy_cleanup(&mut self) -> Result<(), DeviceError> {
        if let Some(done) = self.cleanup_done.take() {
            return done;
        }
        let Some(failed) = self.saving.as_ref().map(|f| f.engine.is_failed()) else {
            // No saving file (closed earlier): nothing to clean up.
            return Ok(());
        };
        self.no_save_in_flight()?;
        let started = self.start_cleanup();
        match started {
            Ok(()) => Err(DeviceError::SaveInFlight),
            // A failed file still gets its cleanup attempt (firmware may be
            // tracking); if that cannot even start, close it and report EIO.
            Err(_) if failed => {
                self.close_saving();
                Err(DeviceError::SaveFileFailed)
            }
            Err(e) => Err(e),
        }
    }

    fn start_cleanup(&mut self) -> Result<(), DeviceError> {
        let probe = self.probe.ok_or(DeviceError::NotProbed)?;
        let q = self.exec_vf(&QueryMigrationState {
            vhca_id: probe.vhca_id,
            scope: Scope::Incremental,
            chunked: probe.chunk_mode,
        })?;
        self.saving
            .as_mut()
            .ok_or(DeviceError::NoFile)?
            .engine
            .start_cleanup(u64::from(q.required_umem_size))?;
        self.drive_saving()
    }

    /// Closes the saving file and frees what it holds (buffers being saved
    /// into or copied out of go when that ends).
    pub(super) fn close_saving(&mut self) {
        // Not `take()`: that would move the engine onto the stack.
        if let Some(session) = self.saving.as_ref().map(|f| f.session) {
            self.saving = None;
            self.close_session(session);
        }
    }

    /// The next bytes of saving file `file`, at most `max`. Copy them to the
    /// reader (the device lock may be dropped meanwhile), then call
    /// [`Device::read_end`] with the count copied.
    ///
    /// # Errors
    /// [`DeviceError::NoFile`] / [`DeviceError::FileFailed`] (`ENODEV`),
    /// [`DeviceError::NoMessage`] (`ENOMSG`: PRE_COPY drained),
    /// [`DeviceError::WouldBlock`] (wait, or `EAGAIN`),
    /// [`DeviceError::ReaderBusy`].
    pub fn read_begin(&mut self, file: FileId, max: u64) -> Result<ReadSegment, DeviceError> {
        // One reader per file (Linux's migf->lock); a reader of a file that
        // was replaced may still be copying, and must not block this one.
        if self.leases.is_full() || self.leases.iter().any(|l| l.session == file.session) {
            return Err(DeviceError::ReaderBusy);
        }
        let f = self.saving_for(file)?;
        let session = f.session;
        let seg = match f.engine.peek() {
            Ok(Segment::Inline(bytes)) => {
                let mut out = [0u8; MAX_INLINE];
                let n = bytes
                    .len()
                    .min(MAX_INLINE)
                    .min(usize::try_from(max).unwrap_or(usize::MAX));
                if let (Some(dst), Some(src)) = (out.get_mut(..n), bytes.get(..n)) {
                    dst.copy_from_slice(src);
                }
                self.leases
                    .push(Lease { session, buf: None })
                    .map_err(|_| DeviceError::ReaderBusy)?;
                ReadSegment::Inline { bytes: out, len: n }
            }
            Ok(Segment::Buffer { buf, offset, len }) => {
                let id = self
                    .res
                    .get(buf.index)
                    .map(|b| b.id)
                    .ok_or(DeviceError::NoFile)?;
                self.leases
                    .push(Lease {
                        session,
                        buf: Some(buf.index),
                    })
                    .map_err(|_| DeviceError::ReaderBusy)?;
                if let Some(b) = self.res.get_mut(buf.index) {
                    b.leased = true;
                }
                ReadSegment::Buffer {
                    buffer: id,
                    offset,
                    len: len.min(max),
                }
            }
            Err(Empty::EndOfStream) => ReadSegment::Eof,
            Err(Empty::NoMessage) => return Err(DeviceError::NoMessage),
            Err(Empty::WouldBlock) => return Err(DeviceError::WouldBlock),
            Err(Empty::Error) => return Err(DeviceError::FileFailed),
        };
        Ok(seg)
    }

    /// The reader copied `n` bytes of the segment [`Device::read_begin`]
    /// returned. Starts a chunk SAVE that was held back for a free slot.
    ///
    /// # Errors
    /// [`DeviceError::UnplannedWrite`] without a matching `read_begin`.
    pub fn read_end(&mut self, file: FileId, n: u64) -> Result<(), DeviceError> {
        let at = self
            .leases
            .iter()
            .position(|l| l.session == file.session && file.kind == Session::Saving)
            .ok_or(DeviceError::UnplannedWrite)?;
        let lease = self.leases.swap_remove(at);
        if let Some(i) = lease.buf {
            let doomed = self.res.get_mut(i).is_some_and(|b| {
                b.leased = false;
                b.doomed
            });
            if doomed {
                self.free_buffer(i);
            }
        }
        let Some(f) = self.saving.as_mut().filter(|f| f.session == lease.session) else {
            return Ok(());
        };
        f.engine.handle_consumed(n);
        // A held-back chunk that cannot start fails the file (the next read
        // reports it); this read itself succeeded.
        let _ = self.drive_saving();
        Ok(())
    }

    /// Why saving file `file` failed, once it has (what a read's
    /// [`DeviceError::FileFailed`] stands for): for messages and logs.
    pub fn save_failure(&self, file: FileId) -> Option<SaveFailure> {
        match self.saving.as_ref() {
            Some(f) if file.kind == Session::Saving && f.session == file.session => {
                f.engine.failure()
            }
            _ => None,
        }
    }

    /// `poll()` on a saving file.
    pub fn poll(&self, file: FileId) -> Poll {
        match self.saving.as_ref() {
            Some(f) if file.kind == Session::Saving && f.session == file.session => {
                match f.engine.peek() {
                    Ok(_) | Err(Empty::EndOfStream) => Poll {
                        readable: true,
                        hangup: false,
                    },
                    Err(Empty::Error) => Poll {
                        readable: true,
                        hangup: true,
                    },
                    Err(_) => Poll::default(),
                }
            }
            _ => Poll {
                readable: true,
                hangup: true,
            },
        }
    }

    /// VFIO_MIG_GET_PRECOPY_INFO on saving file `file`. In PRE_COPY (not
    /// PRE_COPY_P2P, where the VF is suspended) it asks firmware for its
    /// incremental size, and when the reader has drained everything and
    /// firmware has new data it starts an incremental SAVE so the next read
    /// finds it. With PRECOPY_INFOv2 opted in
    /// ([`Device::set_precopy_info_v2`]) and firmware reporting new initial
    /// data (`migration_state` INIT), the answer carries REINIT and the new
    /// data counts as initial bytes.
    ///
    /// # Errors
    /// [`DeviceError::NotPreCopy`] outside PRE_COPY states (`EINVAL`),
    /// `ENODEV` for a failed file, [`DeviceError::SaveInFlight`] (wait and
    /// retry), or the QUERY's error.
    pub fn precopy_info(&mut self, file: FileId) -> Result<PrecopyInfo, DeviceError> {
        if !matches!(self.state, MigState::PreCopy | MigState::PreCopyP2p) {
            return Err(DeviceError::NotPreCopy);
        }
        let running = self.state == MigState::PreCopy;
        let f = self.saving_for(file)?;
        if running {
            // An arc out of PRE_COPY that failed may have paused chaining.
            f.engine.resume_precopy();
        }
        let state = f.engine.state();
        let mut inc = 0u64;
        let mut remaining = 0u64;
        let mut reinit = false;
        if self.state == MigState::PreCopy {
            match state {
                // The incremental query is refused once the file failed.
                FileState::Error => return Err(DeviceError::FileFailed),
                // After a PRE_COPY error there is nothing incremental to ask for.
                FileState::PreCopyError => {}
                _ => {
                    self.no_save_in_flight()?;
                    let probe = self.probe.ok_or(DeviceError::NotProbed)?;
                    let q = self.exec_vf(&QueryMigrationState {
                        vhca_id: probe.vhca_id,
                        scope: Scope::Incremental,
                        chunked: probe.chunk_mode,
                    })?;
                    inc = u64::from(q.required_umem_size);
                    remaining = q.remaining_total_size;
                    reinit = self.precopy_info_v2
                        && q.migration_state == crate::ifc::migration::migration_state::INIT;
                }
            }
        }
        let info = self
            .saving_for(file)?
            .engine
            .precopy_info(inc, remaining, reinit)?;
        self.drive_saving()?;
        Ok(info)
    }

    /// The user closed file `file`. A saving file stays with the device until
    /// an arc closes it (as in Linux, where the driver holds its own
    /// reference); a resuming file likewise keeps its verdict for RESUMING →
    /// STOP. The handle is dead from now on.
    pub fn release(&mut self, file: FileId) {
        match file.kind {
            Session::Saving => {
                if let Some(f) = self.saving.as_mut().filter(|f| f.session == file.session) {
                    f.orphaned = true;
                }
            }
            Session::Resuming => {
                if let Some(f) = self.resuming.as_mut().filter(|f| f.session == file.session) {
                    f.orphaned = true;
                }
            }
        }
    }

    /// The saving engine of the open saving file (for tests and statistics).
    pub fn save_engine(&self) -> Option<&SaveEngine> {
        self.saving.as_ref().map(|f| &f.engine)
    }
}
