//! The resuming file: writes planned step by step, LOADs, and the verdict
//! when RESUMING ends.

use crate::hal::{BufferId, DmaDirection, Hal, HalError, LoadToken};
use crate::ifc::migration::{LoadVhcaState, load_vhca_state_out};
use crate::ifc::mkey::Mkey;
use crate::ifc::{Command, MAX_FIXED_IN, Opcode, checked_output};
use crate::load::{
    IMAGE_BUFFERS, LoadEngine, LoadError, LoadImage, MAX_IMAGE_SEGMENTS, Refusal, WriteStep,
};
use crate::macros::trace;
use crate::stream::Verdict;
use crate::vfio::Session;

use super::resources::SessionId;
use super::{Device, DeviceError, FileId, InFlightLoad};

pub(crate) struct ResumingFile {
    pub(crate) session: SessionId,
    pub(crate) engine: LoadEngine,
    /// Each image buffer's memory key over its segments, once mapped.
    pub(crate) mkeys: [Option<Mkey>; IMAGE_BUFFERS],
    /// What the last [`Device::write_plan`] asked the caller to do.
    pub(crate) planned: Option<Planned>,
    /// The user closed the file.
    pub(crate) orphaned: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Planned {
    Payload { buffer: BufferId, offset: u64 },
    Skip,
}

/// What to do with the next bytes written to a resuming file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum WritePlan {
    /// Hand up to `max` bytes to [`Device::write_small`].
    Small {
        /// Bytes wanted.
        max: usize,
    },
    /// Copy up to `len` bytes into `buffer` at `offset`, then call
    /// [`Device::write_commit`] with the count.
    Buffer {
        /// The platform's buffer.
        buffer: BufferId,
        /// Offset in it.
        offset: u64,
        /// Bytes it can take.
        len: u64,
    },
    /// Drop up to `len` bytes, then call [`Device::write_commit`] with the count.
    Skip {
        /// Bytes.
        len: u64,
    },
}

/// How a LOAD's failure is remembered: firmware's refusal as such.
fn load_failure(e: &DeviceError) -> LoadError {
    match *e {
        DeviceError::Firmware(c) => LoadError::Refused(c),
        _ => LoadError::LoadFailed,
    }
}

impl<H: Hal> Device<H> {
    fn resuming_for(&mut self, file: FileId) -> Result<&mut ResumingFile, DeviceError> {
        match self.resuming.as_mut() {
            Some(f)
                if file.kind == Session::Resuming && f.session == file.session && !f.orphaned =>
            {
                Ok(f)
            }
            _ => Err(DeviceError::NoFile),
        }
    }

    pub(super) fn open_resuming(&mut self) -> Result<FileId, DeviceError> {
        let session = self.new_session();
        self.alloc_pd(session)?;
        self.resuming = Some(ResumingFile {
            session,
            engine: LoadEngine::new(self.cfg.load),
            mkeys: [None; IMAGE_BUFFERS],
            planned: None,
            orphaned: false,
        });
        Ok(FileId {
            kind: Session::Resuming,
            session,
        })
    }

    /// What to do with the next (at most `avail`) bytes written to resuming
    /// file `file`. Allocates image memory as payload arrives.
    ///
    /// # Errors
    /// `ENODEV` for a dead or failed file; allocation failures (the file
    /// fails); [`DeviceError::SaveInFlight`] if a LOAD is due while a SAVE of
    /// this device is still in flight, [`DeviceError::LoadInFlight`] when
    /// both image buffers wait for LOADs (wait for a completion and retry).
    pub fn write_plan(&mut self, file: FileId, avail: u64) -> Result<WritePlan, DeviceError> {
        self.resuming_for(file)?;
        self.start_due_loads()?;
        loop {
            let f = self.resuming_for(file)?;
            f.planned = None;
            let session = f.session;
            match f.engine.next_step() {
                WriteStep::Small { max } => {
                    return Ok(WritePlan::Small {
                        max: max.min(usize::try_from(avail).unwrap_or(usize::MAX)),
                    });
                }
                WriteStep::Grow { npages } => {
                    let buf = self
                        .alloc_buffer(session, npages, DmaDirection::ToDevice, false)
                        .inspect_err(|e| self.fail_resuming(load_failure(e)))?;
                    let f = self.resuming_for(file)?;
                    f.engine.add_segment(buf)?;
                }
                WriteStep::Payload { buf, offset, len } => {
                    let buffer = self
                        .res
                        .get(buf.index)
                        .map(|b| b.id)
                        .ok_or(DeviceError::NoFile)?;
                    let f = self.resuming_for(file)?;
                    f.planned = Some(Planned::Payload { buffer, offset });
                    return Ok(WritePlan::Buffer {
                        buffer,
                        offset,
                        len: len.min(avail),
                    });
                }
                WriteStep::Skip { len } => {
                    let f = self.resuming_for(file)?;
                    f.planned = Some(Planned::Skip);
                    return Ok(WritePlan::Skip {
                        len: len.min(avail),
                    });
                }
                // Bytes after the end record go through the reader, which
                // reports them as the error they are.
                WriteStep::Refuse(Refusal::AfterEnd) => {
                    return Ok(WritePlan::Small {
                        max: usize::try_from(avail).unwrap_or(usize::MAX).min(1),
                    });
                }
                WriteStep::Wait => return Err(DeviceError::LoadInFlight),
                // A LOAD firmware refused (perhaps asynchronously, after the
                // bytes that completed the image were taken) says so.
                WriteStep::Refuse(Refusal::Failed(e @ LoadError::Refused(_))) => {
                    return Err(DeviceError::Load(e));
                }
                WriteStep::Refuse(Refusal::Failed(_)) => return Err(DeviceError::FileFailed),
            }
        }
    }

    /// Header and small-record bytes for [`WritePlan::Small`]. Returns the
    /// bytes consumed; LOADs an image that completes (or, while a SAVE is in
    /// flight, leaves it for the next [`Device::write_plan`] or the
    /// RESUMING → STOP arc, which wait before consuming anything). Never
    /// [`DeviceError::SaveInFlight`]: an error always means the consumed
    /// bytes are gone with the file.
    ///
    /// # Errors
    /// The stream is malformed (`EOPNOTSUPP` for an unknown mandatory record,
    /// `ENOMEM` for an oversized one, …) or a LOAD failed; the file fails.
    pub fn write_small(&mut self, file: FileId, bytes: &[u8]) -> Result<usize, DeviceError> {
        let f = self.resuming_for(file)?;
        let (n, load) = f.engine.write_small(bytes)?;
        if load.is_some() {
            self.load_unless_saving()?;
        }
        Ok(n)
    }

    /// The caller copied (or dropped) `n` bytes as the last
    /// [`Device::write_plan`] said. LOADs an image that completes, or leaves
    /// it pending as [`Device::write_small`] does.
    ///
    /// # Errors
    /// As [`Device::write_small`]; [`DeviceError::UnplannedWrite`] without a
    /// matching plan.
    pub fn write_commit(&mut self, file: FileId, n: u64) -> Result<(), DeviceError> {
        let f = self.resuming_for(file)?;
        let planned = f.planned.take().ok_or(DeviceError::UnplannedWrite)?;
        let load = match planned {
            Planned::Payload { buffer, offset } => {
                let reader = f.engine.reader();
                let (checks, crc) = (reader.checks_payload(), reader.payload_crc());
                let crc = if checks {
                    self.hal.crc32c(buffer, offset, n, crc)
                } else {
                    0
                };
                let f = self.resuming_for(file)?;
                f.engine.payload_written(n, crc)?
            }
            Planned::Skip => f.engine.skipped(n)?,
        };
        if load.is_some() {
            self.load_unless_saving()?;
        }
        Ok(())
    }

    /// Starts due LOADs, or leaves them pending while a SAVE is in flight:
    /// the bytes that completed the image are consumed either way, so a
    /// "wait and retry" here would make the caller write them twice.
    fn load_unless_saving(&mut self) -> Result<(), DeviceError> {
        match self.start_due_loads() {
            Err(DeviceError::SaveInFlight) => Ok(()),
            other => other,
        }
    }

    fn fail_resuming(&mut self, why: LoadError) {
        if let Some(f) = self.resuming.as_mut() {
            f.engine.load_failed(why);
        }
    }

    /// Issues the LOADs the engine has due, in stream order, one at a time:
    /// an asynchronous one returns at once (its completion starts the next),
    /// a synchronous one runs to its end here. A failure fails the file.
    fn start_due_loads(&mut self) -> Result<(), DeviceError> {
        // Bounded: each synchronous LOAD frees one image buffer.
        for _ in 0..IMAGE_BUFFERS {
            if self.loading.is_some() {
                return Ok(());
            }
            let Some((session, buf, img)) = self
                .resuming
                .as_ref()
                .and_then(|f| f.engine.next_due().map(|(buf, img)| (f.session, buf, img)))
            else {
                return Ok(());
            };
            self.no_save_in_flight()?;
            if let Err(e) = self.issue_load(session, buf, img) {
                self.fail_resuming(load_failure(&e));
                return Err(e);
            }
        }
        Ok(())
    }

    fn issue_load(
        &mut self,
        session: SessionId,
        buf: usize,
        img: LoadImage,
    ) -> Result<(), DeviceError> {
        let vhca_id = self.probed_vhca()?;
        if self.detached {
            return Err(DeviceError::Detached);
        }
        let needs_map = self
            .resuming
            .as_ref()
            .is_some_and(|f| f.engine.needs_map(buf));
        if needs_map {
            self.map_segments(session, buf)?;
        }
        let mkey = self
            .resuming
            .as_ref()
            .and_then(|f| f.mkeys.get(buf).copied().flatten())
            .ok_or(DeviceError::NoFile)?;
        let cmd = LoadVhcaState {
            vhca_id,
            va: 0,
            mkey,
            size: img.size,
        };
        let mut input = [0u8; MAX_FIXED_IN];
        let n = cmd.encode(&mut input)?;
        let token = LoadToken(self.next_token_bits(session));
        let started = self
            .hal
            .start_load(input.get(..n).unwrap_or_default(), token)
            .map_err(|e| DeviceError::Platform(e.kind()))?;
        let f = self.resuming.as_mut().ok_or(DeviceError::NoFile)?;
        f.engine.load_started(buf)?;
        if !started {
            // This platform LOADs synchronously.
            let result = self.exec_vf(&cmd);
            if let Some(f) = self.resuming.as_mut() {
                match &result {
                    Ok(()) => f.engine.loaded(buf),
                    Err(e) => f.engine.load_failed(load_failure(e)),
                }
            }
            return result;
        }
        trace!("load: LOAD of {} bytes started (buffer {})", img.size, buf);
        let mut segs = [0u16; MAX_IMAGE_SEGMENTS];
        let mut nsegs = 0usize;
        for (dst, seg) in segs.iter_mut().zip(f.engine.segments(buf)) {
            *dst = seg.index;
            nsegs = nsegs.saturating_add(1);
        }
        // Pinned: a close while firmware reads them must not free them.
        for &i in segs.get(..nsegs).unwrap_or_default() {
            if let Some(b) = self.res.get_mut(i) {
                b.in_dma = true;
            }
        }
        self.loading = Some(InFlightLoad {
            token,
            session,
            buf,
            mkey,
            segs,
            nsegs,
            orphaned: false,
        });
        Ok(())
    }

    /// The platform delivers the output of the LOAD started with `token`.
    /// A refused LOAD fails the resuming file (writes get `ENODEV`, RESUMING
    /// → STOP the error); that is not an error of this call. The next due
    /// image's LOAD starts here.
    ///
    /// # Errors
    /// [`DeviceError::StaleCompletion`] when `token` does not name the LOAD
    /// in flight; nothing changes.
    pub fn handle_load_completion(
        &mut self,
        token: LoadToken,
        output: &[u8],
    ) -> Result<(), DeviceError> {
        let l = self
            .loading
            .filter(|l| l.token == token)
            .ok_or(DeviceError::StaleCompletion)?;
        self.loading = None;
        let outcome = checked_output::<load_vhca_state_out::Bits>(Opcode::LoadVhcaState, 0, output);
        let segs = l.segs.get(..l.nsegs).unwrap_or_default();
        for &i in segs {
            if let Some(b) = self.res.get_mut(i) {
                b.in_dma = false;
            }
        }
        let live = !l.orphaned
            && self
                .resuming
                .as_ref()
                .is_some_and(|f| f.session == l.session);
        if !live {
            self.release_orphaned_load(&l);
            return Ok(());
        }
        trace!(
            "load: LOAD completed (buffer {}, ok {})",
            l.buf,
            outcome.is_ok()
        );
        if let Some(f) = self.resuming.as_mut() {
            match outcome {
                Ok(_) => f.engine.loaded(l.buf),
                Err(e) => f.engine.load_failed(load_failure(&DeviceError::from(e))),
            }
        }
        // A failure here has failed the file; the writer sees it.
        let _ = self.start_due_loads();
        Ok(())
    }

    /// The file closed while firmware read: the LOAD's key, then its
    /// segments (doomed by the close) go now.
    // Out of line: its id array stays out of the completion path's frame.
    #[inline(never)]
    fn release_orphaned_load(&mut self, l: &InFlightLoad) {
        let segs = l.segs.get(..l.nsegs).unwrap_or_default();
        let mut ids = [BufferId(0); MAX_IMAGE_SEGMENTS];
        for (dst, &i) in ids.iter_mut().zip(segs) {
            *dst = self.res.get(i).map_or(BufferId(0), |b| b.id);
        }
        self.unmap(l.mkey, ids.get(..l.nsegs).unwrap_or_default());
        for &i in segs {
            self.free_buffer(i);
        }
    }

    /// (Re)creates image buffer `buf`'s memory key over its segments.
    #[inline(never)]
    fn map_segments(&mut self, session: SessionId, buf: usize) -> Result<(), DeviceError> {
        let mut ids = [BufferId(0); MAX_IMAGE_SEGMENTS];
        let mut n = 0usize;
        let mut covered = 0usize;
        if let Some(f) = self.resuming.as_ref() {
            for (dst, seg) in ids.iter_mut().zip(f.engine.segments(buf)) {
                *dst = self.res.get(seg.index).map_or(BufferId(0), |b| b.id);
                n = n.saturating_add(1);
            }
            covered = f.engine.mapped_segments(buf);
        }
        let old = self
            .resuming
            .as_mut()
            .and_then(|f| f.mkeys.get_mut(buf))
            .and_then(Option::take);
        if let Some(old) = old {
            // The old key covered the segments that existed when it was made.
            self.unmap(old, ids.get(..covered).unwrap_or_default());
        }
        let pd = self.res.pd_of(session).ok_or(DeviceError::NoFile)?;
        let mkey = self
            .hal
            .map_buffers(pd, ids.get(..n).unwrap_or_default())
            .map_err(|e| DeviceError::Platform(e.kind()))?;
        if let Some(f) = self.resuming.as_mut() {
            if let Some(slot) = f.mkeys.get_mut(buf) {
                *slot = Some(mkey);
            }
            f.engine.mark_mapped(buf);
        }
        Ok(())
    }

    /// RESUMING → STOP: the stream must be complete (on a record boundary,
    /// and with its end record if it began with stream-info); then the file
    /// closes. Otherwise the arc fails and the file stays open (write the
    /// rest and try again, or reset).
    pub(super) fn finish_resuming(&mut self) -> Result<(), DeviceError> {
        if self.resuming.is_none() {
            return Ok(());
        }
        self.start_due_loads()?;
        if self.loading.is_some() {
            return Err(DeviceError::LoadInFlight);
        }
        let Some(f) = self.resuming.as_ref() else {
            return Ok(());
        };
        if let Some(e) = f.engine.error() {
            return Err(match e {
                LoadError::Stream(s) => DeviceError::Incomplete(Verdict::Failed(s)),
                other => DeviceError::Load(other),
            });
        }
        match f.engine.verdict() {
            Verdict::Complete { .. } => {
                self.close_resuming();
                Ok(())
            }
            v => Err(DeviceError::Incomplete(v)),
        }
    }

    /// Closes the resuming file: the image keys, then every buffer and the
    /// PD. A LOAD in flight keeps its key and segments until its completion.
    // Not inlined into the arcs and reset paths that call it: its buffer-id
    // array would sit in their (kernel-stack) frames.
    #[inline(never)]
    pub(super) fn close_resuming(&mut self) {
        let Some(session) = self.resuming.as_ref().map(|f| f.session) else {
            return;
        };
        let loading_buf = match self.loading.as_mut() {
            Some(l) if l.session == session => {
                l.orphaned = true;
                Some(l.buf)
            }
            _ => None,
        };
        for buf in 0..IMAGE_BUFFERS {
            // Borrowed, not `take()`n: that would move the engine onto the stack.
            let Some(f) = self.resuming.as_mut() else {
                return;
            };
            let mkey = f.mkeys.get_mut(buf).and_then(Option::take);
            // The key of the buffer under LOAD is the completion's to destroy.
            let Some(mkey) = mkey.filter(|_| Some(buf) != loading_buf) else {
                continue;
            };
            let mut ids = [BufferId(0); MAX_IMAGE_SEGMENTS];
            let covered = f.engine.mapped_segments(buf);
            for (dst, seg) in ids.iter_mut().zip(f.engine.segments(buf)) {
                *dst = self.res.get(seg.index).map_or(BufferId(0), |b| b.id);
            }
            self.unmap(mkey, ids.get(..covered).unwrap_or_default());
        }
        self.resuming = None;
        self.close_session(session);
    }

    /// The resuming engine of the open resuming file (for tests and statistics).
    pub fn load_engine(&self) -> Option<&LoadEngine> {
        self.resuming.as_ref().map(|f| &f.engine)
    }
}
