//! Driving a [`Device`] over [`FuzzHal`] the way a shim does: probing,
//! walking states while completing SAVEs, reading and writing migration
//! files, recovering, and checking that nothing leaked.
//!
//! Adapted from `core/tests/common/mod.rs`; the fuzz crate keeps its own copy
//! so core's tests never depend on it.

use mlx5vf_core::device::file_ops::{
    self, Blocking, CopyDest, CopySource, IoError, IoOutcome, ReadPort, WritePort,
};
use mlx5vf_core::device::{Config, Device, DeviceError, FileId, PROBE_SCRATCH_LEN, SetStateError};
use mlx5vf_core::errno::Errno;
use mlx5vf_core::vfio::MigState;
use mlx5vf_sim::firmware::FirmwareConfig;
use mlx5vf_sim::{Digest, SimSpec};

use crate::hal::{FuzzHal, Knobs};

/// The device type every target drives.
pub type Dev = Device<FuzzHal>;

/// The firmware a spec string describes.
///
/// # Panics
/// On a spec that does not parse (the targets only use constant ones).
pub fn firmware_config(spec: &str) -> FirmwareConfig {
    let spec: SimSpec = match spec.parse() {
        Ok(s) => s,
        Err(e) => panic!("bad sim spec {spec:?}: {e}"),
    };
    FirmwareConfig::from_spec(&spec)
}

/// A device over a new firmware, not probed.
///
/// # Panics
/// When the firmware configuration is invalid.
pub fn unprobed(fw: &FirmwareConfig, cfg: Config) -> Dev {
    match FuzzHal::new(fw) {
        Ok(hal) => Device::new(hal, cfg),
        Err(e) => panic!("firmware config {fw:?}: {e}"),
    }
}

/// A device over a new firmware, probed for VF 0.
///
/// # Errors
/// What probing said.
pub fn probed(fw: &FirmwareConfig, cfg: Config) -> Result<Dev, DeviceError> {
    let mut dev = unprobed(fw, cfg);
    let mut scratch = vec![0u8; PROBE_SCRATCH_LEN];
    dev.probe(0, &mut scratch)?;
    Ok(dev)
}

/// Executes the oldest pending SAVE of `dev` and hands its output to the
/// device; `false` if none was pending.
///
/// # Panics
/// When the device refuses the completion of the SAVE it started.
pub fn complete_one(dev: &mut Dev) -> bool {
    match dev.hal_mut().run_save() {
        Some((token, out)) => {
            let r = dev.handle_save_completion(token, &out);
            assert!(r.is_ok(), "completion of the SAVE in flight refused: {r:?}");
            true
        }
        None => false,
    }
}

/// Completes every pending SAVE (each completion may start another chunk).
/// At most `limit` completions; returns how many ran.
pub fn complete_all(dev: &mut Dev, limit: u32) -> u32 {
    let mut n = 0;
    while n < limit && complete_one(dev) {
        n += 1;
    }
    n
}

/// `set_state`, completing a SAVE whenever the device says one is in flight
/// (what a shim does while it holds the state lock), at most `max_waits`
/// times.
///
/// # Errors
/// What the device said.
///
/// # Panics
/// When the device waits for a SAVE that was never started.
pub fn set_state(
    dev: &mut Dev,
    target: MigState,
    max_waits: u32,
) -> Result<Option<FileId>, SetStateError> {
    let mut waits = 0;
    loop {
        match dev.set_state(target) {
            Err(e) if e.error == DeviceError::SaveInFlight && waits < max_waits => {
                assert!(
                    complete_one(dev),
                    "set_state({target}) waits for a SAVE that was never started"
                );
                waits += 1;
            }
            r => return r,
        }
    }
}

/// The shim's read side over a fuzz device: the device (the "lock" is
/// `&mut`), the reader's buffer (appended to), and how much of each copy
/// succeeds.
struct Reader<'a, C> {
    dev: &'a mut Dev,
    out: &'a mut Vec<u8>,
    /// `out.len()` when the call began: byte `at` of the call is
    /// `out[start + at]`.
    start: usize,
    /// Bytes the call asked for.
    max: usize,
    copy: C,
}

impl<C: FnMut(u64) -> u64> ReadPort<FuzzHal> for Reader<'_, C> {
    fn device(&mut self) -> &mut Dev {
        self.dev
    }

    fn copy_out(&mut self, at: usize, src: CopySource<'_>) -> Result<usize, Errno> {
        assert_eq!(self.start + at, self.out.len(), "read copies out of order");
        let len = src.len();
        let kind = match src {
            CopySource::Bytes(_) => "inline",
            CopySource::Buffer { .. } => "buffer",
        };
        // `file_ops::read` cuts buffer segments to what is left of the call,
        // so only an inline segment can show the device's mistake here.
        assert!(
            at.checked_add(len).is_some_and(|end| end <= self.max),
            "{kind} segment longer than asked"
        );
        // CAST: usize <-> u64 is lossless here (the result is at most `len`).
        let n = (self.copy)(len as u64).min(len as u64) as usize;
        if n == 0 && len > 0 {
            // A copy that faults before its first byte.
            return Err(Errno::EFAULT);
        }
        match src {
            CopySource::Bytes(b) => self.out.extend_from_slice(&b[..n]),
            CopySource::Buffer { buffer, offset, .. } => {
                // Panics when the range is outside the buffer.
                let bytes = self.dev.hal().range(buffer, offset, len as u64);
                self.out.extend_from_slice(&bytes[..n]);
            }
        }
        Ok(n)
    }
}

/// Reads once from saving file `file` into `out` through
/// [`file_ops::read`], as a shim's blocking `read()` does: as many segments
/// as fit in `max`, copying only `copy(len)` bytes of each (a short copy ends
/// the read). Returns bytes read (0 at end of stream), or the error of the
/// first segment (`WouldBlock` where a blocking reader would sleep until a
/// SAVE completes).
///
/// # Errors
/// What the device said for the first segment.
///
/// # Panics
/// When the device hands out bytes outside its buffer or more than asked,
/// or when `copy` copies nothing of the first segment (see below).
pub fn read(
    dev: &mut Dev,
    file: FileId,
    max: u64,
    out: &mut Vec<u8>,
    copy: impl FnMut(u64) -> u64,
) -> Result<u64, DeviceError> {
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    let start = out.len();
    let mut port = Reader {
        dev,
        out,
        start,
        max,
        copy,
    };
    match file_ops::read(&mut port, file, max, Blocking::Blocking) {
        // CAST: usize -> u64 is lossless.
        IoOutcome::Done(n) => Ok(n as u64),
        IoOutcome::Wait(_) => Err(DeviceError::WouldBlock),
        IoOutcome::Failed(IoError::Device(e)) => Err(e),
        // `copy` returned 0 for the first segment: the read's EFAULT. No
        // answer of this function fits it: `Ok(0)` is end of stream (callers
        // then check the stream ended in STOP_COPY and is complete) and an
        // `Err` is the device's refusal (callers check it against the
        // device's state), while a fault leaves the stream where it was.
        // Callers never fault the first byte (their `copy` is `|n| n` or
        // `n.min(limit)` with `limit >= 1`), so this is a harness misuse.
        IoOutcome::Failed(IoError::Copy(e)) => {
            panic!(
                "read: `copy` copied nothing of the first segment ({e:?}); callers copy >= 1 byte"
            )
        }
    }
}

/// How [`write()`]'s copies go: how much of each copy succeeds, and which
/// fault.
pub trait WriteStyle {
    /// Bytes to copy of a copy of `len` (at least 1 is used; more than `len`
    /// is clamped): a short copy, as of a user buffer that faults after them.
    /// Skipped payloads are not copied, so not asked about.
    fn take(&mut self, len: u64) -> u64;
    /// Whether this copy faults before copying anything. `write()` ends
    /// there (`EFAULT` if it consumed nothing yet) and [`write()`] calls it
    /// again.
    fn abandon(&mut self) -> bool {
        false
    }
}

/// Takes everything offered.
#[derive(Clone, Copy, Debug, Default)]
pub struct Greedy;

impl WriteStyle for Greedy {
    fn take(&mut self, len: u64) -> u64 {
        len
    }
}

/// The shim's write side over a fuzz device: the device, the writer's bytes,
/// and how much of each copy succeeds.
struct Writer<'a, 'b, S> {
    dev: &'a mut Dev,
    bytes: &'b [u8],
    style: &'a mut S,
}

impl<S: WriteStyle> WritePort<FuzzHal> for Writer<'_, '_, S> {
    fn device(&mut self) -> &mut Dev {
        self.dev
    }

    fn copy_in(&mut self, at: usize, dst: CopyDest<'_>) -> Result<usize, Errno> {
        let len = dst.len();
        let kind = match dst {
            CopyDest::Bytes(_) => "small",
            CopyDest::Buffer { .. } => "buffer",
        };
        // `file_ops::write` cuts plans to what is left of the call: this
        // checks its cut.
        assert!(
            at.checked_add(len)
                .is_some_and(|end| end <= self.bytes.len()),
            "{kind} plan larger than offered"
        );
        if self.style.abandon() {
            // The copy faults before its first byte.
            return Err(Errno::EFAULT);
        }
        // CAST: usize <-> u64 is lossless here (the result is at most `len`).
        let n = self
            .style
            .take(len as u64)
            .clamp(1, len.max(1) as u64)
            .min(len as u64) as usize;
        let src = &self.bytes[at..at + n];
        match dst {
            CopyDest::Bytes(b) => b[..n].copy_from_slice(src),
            CopyDest::Buffer { buffer, offset, .. } => {
                let end = offset
                    .checked_add(n as u64)
                    .filter(|&e| e <= self.dev.hal().buffer(buffer).len() as u64);
                assert!(
                    end.is_some(),
                    "write plan names bytes {offset}+{n} outside buffer {buffer:?}"
                );
                self.dev.hal_mut().buffer_mut(buffer)[offset as usize..offset as usize + n]
                    .copy_from_slice(src);
            }
        }
        Ok(n)
    }
}

/// Writes `bytes` to resuming file `file` through [`file_ops::write`], as a
/// shim's `write()` does, calling it again after each short count or faulted
/// copy until every byte is taken.
///
/// # Errors
/// The device's error. [`DeviceError::SaveInFlight`] when a LOAD must wait
/// for a SAVE before anything more goes in (the caller completes it and
/// writes the rest).
///
/// # Panics
/// When a copy names bytes outside the device's buffer or beyond those
/// offered, or writes make no progress.
pub fn write(
    dev: &mut Dev,
    file: FileId,
    bytes: &[u8],
    style: &mut impl WriteStyle,
) -> Result<(), DeviceError> {
    write_counted(dev, file, bytes, style, &mut 0)
}

/// [`write()`], adding the bytes the device accepted to `accepted` (on an
/// error, those of the calls before the failing one).
///
/// # Errors
/// As [`write()`].
///
/// # Panics
/// As [`write()`].
pub fn write_counted(
    dev: &mut Dev,
    file: FileId,
    mut bytes: &[u8],
    style: &mut impl WriteStyle,
    accepted: &mut usize,
) -> Result<(), DeviceError> {
    let mut port = Writer { dev, bytes, style };
    let mut idle = 0u32;
    while !bytes.is_empty() {
        port.bytes = bytes;
        let taken = match file_ops::write(&mut port, file, bytes.len(), Blocking::Blocking) {
            IoOutcome::Done(0) => {
                idle += 1;
                assert!(idle < 1000, "writes make no progress");
                continue;
            }
            IoOutcome::Done(n) => n,
            // The port does not sleep: the LOAD of an image waits for a SAVE
            // in flight, and nothing was consumed in this call.
            IoOutcome::Wait(_) => return Err(DeviceError::SaveInFlight),
            IoOutcome::Failed(IoError::Device(e)) => return Err(e),
            // An abandoned copy (a fault before the first byte of the
            // call): call again.
            IoOutcome::Failed(IoError::Copy(_)) => {
                idle += 1;
                assert!(idle < 1000, "write plans abandoned forever");
                continue;
            }
        };
        idle = 0;
        bytes = &bytes[taken..];
        *accepted += taken;
    }
    Ok(())
}

/// Brings a device back to RUNNING with nothing allocated, as a VFIO user
/// does after a failure: every fault disarmed, the VF attached, files closed,
/// outstanding SAVEs completed, then a reset.
pub fn recover(dev: &mut Dev) {
    dev.hal_mut().knobs = Knobs::default();
    dev.hal_mut().fw.faults_mut().clear();
    dev.hal_mut().fw.attach_vf(0);
    dev.handle_attach();
    complete_all(dev, 64);
    dev.close();
    complete_all(dev, 64);
    dev.hal_mut().fw.reset_vf(0);
    dev.handle_reset();
    dev.open();
}

/// Asserts that a recovered device holds nothing: no buffer, PD, mkey or
/// IOMMU mapping, no SAVE in flight. When firmware refused to free an mkey
/// or PD the device must say so (its leak counters match what the sim still
/// holds), unless firmware lied about those resources' numbers.
///
/// # Panics
/// When something leaked.
pub fn assert_clean(dev: &Dev) {
    let acc = dev.hal().accounting();
    let stats = dev.stats();
    assert!(dev.is_idle(), "device not idle after recovery: {dev:?}");
    assert_eq!(dev.state(), MigState::Running, "state after recovery");
    assert_eq!(stats.buffer_bytes, 0, "device buffer bytes after recovery");
    assert_eq!(dev.hal().live_buffers, 0, "platform buffers leaked");
    assert_eq!(dev.hal().live_bytes, 0, "platform buffer bytes leaked");
    assert!(dev.hal().pending.is_empty(), "SAVE still pending");
    assert_eq!(
        (acc.iommu_mappings, acc.iommu_bytes),
        (0, 0),
        "IOMMU mappings leaked: {acc:?}"
    );
    if !dev.hal().taint.resource_lie {
        assert_eq!(
            acc.mkeys, stats.leaked_mkeys,
            "mkeys alive in firmware vs reported leaked: {acc:?} {stats:?}"
        );
        assert_eq!(
            acc.pds, stats.leaked_pds,
            "PDs alive in firmware vs reported leaked: {acc:?} {stats:?}"
        );
    }
}

/// How the saving side of [`save_stream`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SaveRun<'a> {
    /// Source device spec.
    pub spec: &'a str,
    /// Driver policy.
    pub cfg: Config,
    /// Go through PRE_COPY first.
    pub precopy: bool,
    /// Bytes per read.
    pub read_size: u64,
}

/// A whole stream saved from a fresh source device, and the source's digest
/// once saving ended.
///
/// # Panics
/// When the migration does not run to its end (the specs used are valid).
pub fn save_stream(run: &SaveRun<'_>) -> (Vec<u8>, Digest) {
    let fw = firmware_config(run.spec);
    let mut dev = match probed(&fw, run.cfg) {
        Ok(d) => d,
        Err(e) => panic!("probe {}: {e}", run.spec),
    };
    let mut stream = vec![];
    let target = if run.precopy {
        MigState::PreCopy
    } else {
        MigState::StopCopy
    };
    let file = match set_state(&mut dev, target, 8) {
        Ok(Some(f)) => f,
        r => panic!("open saving file: {r:?}"),
    };
    let mut rounds = 0;
    loop {
        match read(&mut dev, file, run.read_size, &mut stream, |n| n) {
            Ok(0) => break,
            Ok(_) => {}
            Err(DeviceError::WouldBlock) => {
                assert!(complete_one(&mut dev), "reader blocks with no SAVE");
            }
            Err(DeviceError::NoMessage) if rounds < 3 => {
                rounds += 1;
                dev.hal_mut().fw.tick(0, 1);
                loop {
                    match dev.precopy_info(file) {
                        Err(DeviceError::SaveInFlight) => {
                            complete_one(&mut dev);
                        }
                        r => {
                            assert!(r.is_ok(), "precopy info: {r:?}");
                            break;
                        }
                    }
                }
            }
            Err(DeviceError::NoMessage) => {
                let r = set_state(&mut dev, MigState::StopCopy, 8);
                assert!(r.is_ok(), "PRE_COPY -> STOP_COPY: {r:?}");
            }
            Err(e) => panic!("source read: {e}"),
        }
    }
    let r = set_state(&mut dev, MigState::Stop, 8);
    assert!(r.is_ok(), "STOP_COPY -> STOP: {r:?}");
    let digest = match dev.hal().fw.digest(0) {
        Some(d) => d,
        None => panic!("no VF 0"),
    };
    dev.release(file);
    recover(&mut dev);
    assert_clean(&dev);
    (stream, digest)
}
