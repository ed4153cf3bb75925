//! Driving a [`Device`] over [`TestHal`] the way a shim does: the sim's test
//! kit ([`mlx5vf_sim::testkit`]) with the fuzz platform policy
//! ([`MAX_ALLOC_BYTES`]), plus [`save_stream`], which the targets and the
//! seed corpus share (on the kit's bounded drive loop).

use mlx5vf_core::device::{Config, Device, DeviceError, FileId};
use mlx5vf_core::vfio::MigState;
use mlx5vf_sim::Digest;
use mlx5vf_sim::firmware::FirmwareConfig;
use mlx5vf_sim::testkit::migration::{PumpUntil, Reads, Rng, pump, stream_bound};
use mlx5vf_sim::testkit::ports::{self, OnWait};
use mlx5vf_sim::testkit::{self, TestHal};

pub use mlx5vf_sim::testkit::ports::{Greedy, WriteStyle, read_copying};
pub use mlx5vf_sim::testkit::{
    assert_clean, complete_all, complete_one, firmware_config, recover, set_state,
};

use crate::hal::MAX_ALLOC_BYTES;

/// The device type every target drives.
pub type Dev = Device<TestHal>;

/// A device over a new firmware, not probed, refusing buffers above
/// [`MAX_ALLOC_BYTES`].
///
/// # Panics
/// When the firmware configuration is invalid.
pub fn unprobed(fw: &FirmwareConfig, cfg: Config) -> Dev {
    Device::new(
        TestHal::with_config(fw).with_alloc_limit(MAX_ALLOC_BYTES),
        cfg,
    )
}

/// A device over a new firmware, probed for VF 0.
///
/// # Errors
/// What probing said.
pub fn probed(fw: &FirmwareConfig, cfg: Config) -> Result<Dev, DeviceError> {
    let mut dev = unprobed(fw, cfg);
    testkit::probe(&mut dev)?;
    Ok(dev)
}

/// Writes `bytes` to resuming file `file` as a shim's `write()` does,
/// copying as `style` says and calling it again after each short count or
/// faulted copy until every byte is taken.
///
/// # Errors
/// The device's error. [`DeviceError::SaveInFlight`] when a LOAD must wait
/// for a SAVE before anything more goes in (the caller completes it and
/// writes the rest).
///
/// # Panics
/// As [`ports::write_styled`].
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
    bytes: &[u8],
    style: &mut impl WriteStyle,
    accepted: &mut usize,
) -> Result<(), DeviceError> {
    ports::write_styled(dev, file, bytes, style, OnWait::Fail, accepted).map(|_| ())
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

/// A whole stream saved from a fresh source device (three PRE_COPY rounds
/// with firmware dirtying state between them, when `precopy`), and the
/// source's digest once saving ended. The kit's bounded [`pump`] reads it.
///
/// # Panics
/// When the migration does not run to its end (the specs used are valid).
pub fn save_stream(run: &SaveRun<'_>) -> (Vec<u8>, Digest) {
    const PRECOPY_ROUNDS: u32 = 3;
    let fw = firmware_config(run.spec);
    let state_size = fw.vfs.first().map_or(0, |vf| vf.state_size);
    let mut dev = match probed(&fw, run.cfg) {
        Ok(d) => d,
        Err(e) => panic!("probe {}: {e}", run.spec),
    };
    let target = if run.precopy {
        MigState::PreCopy
    } else {
        MigState::StopCopy
    };
    let file = match set_state(&mut dev, target, 8) {
        Ok(Some(f)) => f,
        r => panic!("open saving file: {r:?}"),
    };
    let reads = Reads::Fixed(run.read_size);
    let mut rng = Rng(1);
    let bound = stream_bound(state_size, PRECOPY_ROUNDS);
    let mut stream = vec![];
    let mut pump_into = |dev: &mut Dev, stream: &mut Vec<u8>, until| {
        let left = bound.saturating_sub(stream.len() as u64);
        pump(dev, file, reads, &mut rng, until, false, left, |b| {
            stream.extend_from_slice(b);
        });
    };
    if run.precopy {
        for _ in 0..PRECOPY_ROUNDS {
            pump_into(&mut dev, &mut stream, PumpUntil::NoMessage);
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
        pump_into(&mut dev, &mut stream, PumpUntil::NoMessage);
        let r = set_state(&mut dev, MigState::StopCopy, 8);
        assert!(r.is_ok(), "PRE_COPY -> STOP_COPY: {r:?}");
    }
    pump_into(&mut dev, &mut stream, PumpUntil::Eof);
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
