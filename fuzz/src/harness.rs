//! Driving a [`Device`] over [`FuzzHal`] the way a shim does: probing,
//! walking states while completing SAVEs, reading and writing migration
//! files, recovering, and checking that nothing leaked.
//!
//! Adapted from `core/tests/common/mod.rs`; the fuzz crate keeps its own copy
//! so core's tests never depend on it.

use mlx5vf_core::device::{
    Config, Device, DeviceError, FileId, PROBE_SCRATCH_LEN, ReadSegment, SetStateError, WritePlan,
};
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

/// Reads once from saving file `file` into `out`, as a shim's `read()`
/// does: as many segments as fit in `max`, copying only `copy(len)` bytes of
/// each (a short copy ends the read). Returns bytes read (0 at end of
/// stream), or the error of the first segment.
///
/// # Errors
/// What `read_begin` said for the first segment.
///
/// # Panics
/// When the device hands out bytes outside its buffer, or refuses the
/// `read_end` of the segment it handed out.
pub fn read(
    dev: &mut Dev,
    file: FileId,
    max: u64,
    out: &mut Vec<u8>,
    mut copy: impl FnMut(u64) -> u64,
) -> Result<u64, DeviceError> {
    let mut done = 0u64;
    while done < max {
        let seg = match dev.read_begin(file, max - done) {
            Ok(s) => s,
            Err(e) if done == 0 => return Err(e),
            Err(_) => break,
        };
        let (avail, short) = match seg {
            // End of stream holds no lease: nothing to end.
            ReadSegment::Eof => break,
            ReadSegment::Inline { .. } => {
                let bytes = seg.inline_bytes().unwrap_or_default();
                assert!(
                    bytes.len() as u64 <= max - done,
                    "inline segment longer than asked"
                );
                let n = copy(bytes.len() as u64).min(bytes.len() as u64);
                out.extend_from_slice(&bytes[..n as usize]);
                (bytes.len() as u64, n)
            }
            ReadSegment::Buffer {
                buffer,
                offset,
                len,
            } => {
                assert!(len <= max - done, "buffer segment longer than asked");
                let bytes = dev.hal().range(buffer, offset, len);
                let n = copy(len).min(len);
                out.extend_from_slice(&bytes[..n as usize]);
                (len, n)
            }
        };
        let r = dev.read_end(file, short);
        assert!(r.is_ok(), "read_end of a segment just handed out: {r:?}");
        done += short;
        if short < avail || avail == 0 {
            break;
        }
    }
    Ok(done)
}

/// How [`write()`] hands bytes to a resuming file.
pub trait WriteStyle {
    /// Bytes to copy or skip of a planned `len` (at least 1 is used; more
    /// than `len` is clamped).
    fn take(&mut self, len: u64) -> u64;
    /// Whether to abandon this plan (as a shim whose copy faulted before
    /// copying anything) and ask again.
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

/// Writes `bytes` to resuming file `file` as a shim's `write()` does:
/// `write_plan`, then `write_small` or a copy and `write_commit`, until every
/// byte is taken.
///
/// # Errors
/// The first error of the device (bytes taken before it were accepted).
///
/// # Panics
/// When a plan names bytes outside the device's buffer, or a plan is not
/// making progress.
pub fn write(
    dev: &mut Dev,
    file: FileId,
    bytes: &[u8],
    style: &mut impl WriteStyle,
) -> Result<(), DeviceError> {
    write_counted(dev, file, bytes, style, &mut 0)
}

/// [`write()`], adding the bytes the device accepted to `accepted`.
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
    let mut idle = 0u32;
    while !bytes.is_empty() {
        let plan = dev.write_plan(file, bytes.len() as u64)?;
        if style.abandon() {
            idle += 1;
            assert!(idle < 1000, "write plans abandoned forever");
            continue;
        }
        let taken = match plan {
            WritePlan::Small { max } => {
                assert!(max <= bytes.len(), "small plan larger than offered");
                let want = style.take(max as u64).clamp(1, max.max(1) as u64) as usize;
                dev.write_small(file, &bytes[..want.min(bytes.len())])?
            }
            WritePlan::Buffer {
                buffer,
                offset,
                len,
            } => {
                assert!(len <= bytes.len() as u64, "buffer plan larger than offered");
                let n = style.take(len).clamp(1, len.max(1)).min(len);
                let end = offset
                    .checked_add(n)
                    .filter(|&e| e <= dev.hal().buffer(buffer).len() as u64);
                assert!(
                    end.is_some(),
                    "write plan names bytes {offset}+{n} outside buffer {buffer:?}"
                );
                dev.hal_mut().buffer_mut(buffer)[offset as usize..(offset + n) as usize]
                    .copy_from_slice(&bytes[..n as usize]);
                dev.write_commit(file, n)?;
                n as usize
            }
            WritePlan::Skip { len } => {
                assert!(len <= bytes.len() as u64, "skip plan larger than offered");
                let n = style.take(len).clamp(1, len.max(1)).min(len);
                dev.write_commit(file, n)?;
                n as usize
            }
        };
        if taken == 0 {
            idle += 1;
            assert!(idle < 1000, "writes make no progress");
        } else {
            idle = 0;
        }
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
