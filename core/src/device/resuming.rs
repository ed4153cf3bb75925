//! The resuming file: writes planned step by step, LOADs, and the verdict
//! when RESUMING ends.

use crate::hal::{BufferId, DmaDirection, Hal, HalError};
use crate::ifc::migration::LoadVhcaState;
use crate::ifc::mkey::Mkey;
use crate::load::{LoadEngine, LoadError, LoadImage, Refusal, WriteStep};
use crate::stream::Verdict;
use crate::vfio::Session;

use super::resources::{MAX_BUFFERS, SessionId};
use super::{Device, DeviceError, FileId};

pub(crate) struct ResumingFile {
    pub(crate) session: SessionId,
    pub(crate) engine: LoadEngine,
    /// The memory key over the image segments, once mapped.
    pub(crate) mkey: Option<Mkey>,
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
            mkey: None,
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
    /// this device is still in flight (wait and retry).
    pub fn write_plan(&mut self, file: FileId, avail: u64) -> Result<WritePlan, DeviceError> {
        self.resuming_for(file)?;
        self.load_if_due()?;
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
                        .inspect_err(|_| self.fail_resuming())?;
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
                let crc = f.engine.reader().payload_crc();
                let crc = self.hal.crc32c(buffer, offset, n, crc);
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

    /// Issues a due LOAD, or leaves it pending while a SAVE is in flight:
    /// the bytes that completed the image are consumed either way, so a
    /// "wait and retry" here would make the caller write them twice.
    fn load_unless_saving(&mut self) -> Result<(), DeviceError> {
        match self.load_if_due() {
            Err(DeviceError::SaveInFlight) => Ok(()),
            other => other,
        }
    }

    fn fail_resuming(&mut self) {
        if let Some(f) = self.resuming.as_mut() {
            f.engine.load_failed();
        }
    }

    /// Issues the LOAD the engine reported, mapping new segments first.
    fn load_if_due(&mut self) -> Result<(), DeviceError> {
        let Some((session, img)) = self
            .resuming
            .as_ref()
            .and_then(|f| f.engine.pending_load().map(|img| (f.session, img)))
        else {
            return Ok(());
        };
        self.no_save_in_flight()?;
        let result = self.load_image(session, img);
        if let Some(f) = self.resuming.as_mut() {
            match result {
                Ok(()) => f.engine.loaded(),
                Err(_) => f.engine.load_failed(),
            }
        }
        result
    }

    fn load_image(&mut self, session: SessionId, img: LoadImage) -> Result<(), DeviceError> {
        let vhca_id = self.probed_vhca()?;
        if self.detached {
            return Err(DeviceError::Detached);
        }
        let needs_map = self.resuming.as_ref().is_some_and(|f| f.engine.needs_map());
        if needs_map {
            self.map_segments(session)?;
        }
        let mkey = self
            .resuming
            .as_ref()
            .and_then(|f| f.mkey)
            .ok_or(DeviceError::NoFile)?;
        self.exec_vf(&LoadVhcaState {
            vhca_id,
            va: 0,
            mkey,
            size: img.size,
        })
    }

    /// (Re)creates the memory key over every image segment.
    fn map_segments(&mut self, session: SessionId) -> Result<(), DeviceError> {
        let mut ids = [BufferId(0); MAX_BUFFERS];
        let mut n = 0usize;
        let mut covered = 0usize;
        if let Some(f) = self.resuming.as_ref() {
            for (dst, seg) in ids.iter_mut().zip(f.engine.segments()) {
                *dst = self.res.get(seg.index).map_or(BufferId(0), |b| b.id);
                n = n.saturating_add(1);
            }
            covered = f.engine.mapped_segments();
        }
        if let Some(old) = self.resuming.as_mut().and_then(|f| f.mkey.take()) {
            // The old key covered the segments that existed when it was made.
            self.unmap(old, ids.get(..covered).unwrap_or_default());
        }
        let pd = self.res.pd_of(session).ok_or(DeviceError::NoFile)?;
        let mkey = self
            .hal
            .map_buffers(pd, ids.get(..n).unwrap_or_default())
            .map_err(|e| DeviceError::Platform(e.kind()))?;
        if let Some(f) = self.resuming.as_mut() {
            f.mkey = Some(mkey);
            f.engine.mark_mapped();
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
        self.load_if_due()?;
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

    /// Closes the resuming file: the image key, then every buffer and the PD.
    pub(super) fn close_resuming(&mut self) {
        // Borrowed, not `take()`n: that would move the engine onto the stack.
        let Some(f) = self.resuming.as_mut() else {
            return;
        };
        let session = f.session;
        let mkey = f.mkey.take();
        let mut ids = [BufferId(0); MAX_BUFFERS];
        let mut covered = 0;
        if mkey.is_some() {
            covered = f.engine.mapped_segments();
            for (dst, seg) in ids.iter_mut().zip(f.engine.segments()) {
                *dst = self.res.get(seg.index).map_or(BufferId(0), |b| b.id);
            }
        }
        self.resuming = None;
        if let Some(mkey) = mkey {
            self.unmap(mkey, ids.get(..covered).unwrap_or_default());
        }
        self.close_session(session);
    }

    /// The resuming engine of the open resuming file (for tests and statistics).
    pub fn load_engine(&self) -> Option<&LoadEngine> {
        self.resuming.as_ref().map(|f| &f.engine)
    }
}
