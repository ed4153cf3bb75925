//! A source and a destination device migrated through the core's file
//! operations, with a bounded drive loop: what core's round-trip tests and
//! the fuzz targets' stream builders share.

use std::vec::Vec;

use mlx5vf_core::device::{Config, Device, DeviceError, FileId};
use mlx5vf_core::vfio::MigState;

use super::{Platform, TestHal, complete_one, device, firmware_config, ports};
use crate::Digest;

/// A tiny deterministic PRNG (xorshift64) for read sizes.
///
/// Kept over a PRNG crate on purpose: the committed fuzz regressions
/// (`fuzz/corpus/*/regress-*`) and the round-trip tests replay the read
/// splits this exact sequence produces; another generator would silently
/// change what each of them tests.
#[derive(Clone, Copy, Debug)]
pub struct Rng(pub u64);

impl Rng {
    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value below `n` (0 for `n` = 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// How reads are sized.
#[derive(Clone, Copy, Debug)]
pub enum Reads {
    /// Always this many bytes.
    Fixed(u64),
    /// Random from 1 byte to `max`, log-uniform-ish.
    Random {
        /// Seed of the sizes.
        seed: u64,
        /// Largest read.
        max: u64,
    },
}

impl Reads {
    /// The size of the next read.
    pub fn size(&self, rng: &mut Rng) -> u64 {
        match *self {
            Self::Fixed(n) => n,
            Self::Random { max, .. } => {
                let bits = 64 - u64::from(max.leading_zeros());
                let b = rng.below(bits + 1);
                1 + rng.below((1u64 << b).min(max))
            }
        }
    }
}

/// Where [`pump`] stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PumpUntil {
    /// End of stream (stop-copy).
    Eof,
    /// `ENOMSG`: PRE_COPY has nothing more for now.
    NoMessage,
}

/// What [`pump`] moved and saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pumped {
    /// Stream bytes moved.
    pub bytes: u64,
    /// Most unread stop-copy chunks seen after any read.
    pub max_ready_chunks: usize,
}

/// Reads saving file `file` of `src` into `sink` until `until`, completing
/// a SAVE whenever the reader would block (first every pending one, when
/// `eager_firmware`).
///
/// Bounded: a read that would block with no SAVE to complete panics (the
/// device waits for nothing), and so does a stream longer than
/// `max_bytes` (a device that never ends its stream).
///
/// # Panics
/// On either bound, EOF during PRE_COPY, or any other read error.
#[allow(clippy::too_many_arguments)]
pub fn pump<H: Platform>(
    src: &mut Device<H>,
    file: FileId,
    reads: Reads,
    rng: &mut Rng,
    until: PumpUntil,
    eager_firmware: bool,
    max_bytes: u64,
    mut sink: impl FnMut(&[u8]),
) -> Pumped {
    let slots = usize::from(src.config().chunk_slots).max(1);
    let mut buf = Vec::new();
    let mut seen = Pumped::default();
    loop {
        buf.clear();
        if eager_firmware {
            while complete_one(src) {}
        }
        match ports::read(src, file, reads.size(rng), &mut buf) {
            Ok(0) => {
                assert!(until == PumpUntil::Eof, "EOF during PRE_COPY");
                return seen;
            }
            Ok(n) => {
                seen.bytes += n;
                assert!(
                    seen.bytes <= max_bytes,
                    "runaway stream: {} bytes, more than the {max_bytes} this state can make",
                    seen.bytes
                );
                sink(&buf);
            }
            Err(DeviceError::WouldBlock) => {
                assert!(
                    complete_one(src),
                    "reader would block with no SAVE in flight"
                );
            }
            Err(DeviceError::NoMessage) if until == PumpUntil::NoMessage => return seen,
            Err(e) => panic!("source read: {e}"),
        }
        if let Some(e) = src.save_engine() {
            // Back-pressure: never more unread chunks than slots.
            assert!(
                e.ready_chunks() <= slots,
                "{} unread chunks",
                e.ready_chunks()
            );
            seen.max_ready_chunks = seen.max_ready_chunks.max(e.ready_chunks());
        }
    }
}

/// The most stream bytes a state of `state_size` can make in `rounds`
/// PRE_COPY rounds plus the stop-copy: every round at most the whole state
/// again, each byte with at most the same again in record overhead (the
/// smallest object is a page, its header 16 bytes), plus a page for the
/// opening and closing records.
pub const fn stream_bound(state_size: u64, rounds: u32) -> u64 {
    (rounds as u64 + 1)
        .saturating_mul(state_size)
        .saturating_mul(2)
        .saturating_add(4096)
}

/// What a migration observed.
#[derive(Debug, Default)]
pub struct Report {
    /// Stream bytes moved.
    pub stream_bytes: u64,
    /// Most unread stop-copy chunks seen at once.
    pub max_ready_chunks: usize,
    /// The source's peak buffer memory.
    pub peak_buffer_bytes: u64,
    /// PRE_COPY rounds run.
    pub precopy_rounds: u32,
    /// The whole stream, when kept.
    pub stream: Option<Vec<u8>>,
}

/// A source and a destination over simulated firmware.
pub struct Migration {
    /// The saving side.
    pub src: Device<TestHal>,
    /// The resuming side.
    pub dst: Device<TestHal>,
    /// Go through PRE_COPY first.
    pub precopy: bool,
    /// How the reader sizes its reads.
    pub reads: Reads,
    /// Keep the whole stream (small states only).
    pub keep_stream: bool,
    /// Limit on PRE_COPY rounds before switching to stop-copy.
    pub max_precopy_rounds: u32,
    /// Firmware faster than the reader: complete every pending SAVE before
    /// each read (otherwise SAVEs complete only when the reader waits).
    pub eager_firmware: bool,
    /// The source's state size, for the runaway bound.
    state_size: u64,
}

impl Migration {
    /// Devices over the firmware `src` and `dst` describe, probed.
    ///
    /// # Panics
    /// On a bad spec or a failed probe.
    pub fn new(src: &str, dst: &str, cfg: Config) -> Self {
        let state_size = firmware_config(src)
            .vfs
            .first()
            .map_or(0, |vf| vf.state_size);
        Self {
            src: device(src, cfg),
            dst: device(dst, cfg),
            precopy: false,
            reads: Reads::Fixed(1 << 20),
            keep_stream: false,
            max_precopy_rounds: 8,
            eager_firmware: false,
            state_size,
        }
    }

    fn pump(
        &mut self,
        sf: FileId,
        df: FileId,
        rng: &mut Rng,
        report: &mut Report,
        until: PumpUntil,
    ) {
        let max = stream_bound(self.state_size, self.max_precopy_rounds);
        let dst = &mut self.dst;
        let stream = &mut report.stream;
        let seen = pump(
            &mut self.src,
            sf,
            self.reads,
            rng,
            until,
            self.eager_firmware,
            max.saturating_sub(report.stream_bytes),
            |bytes| {
                ports::write(dst, df, bytes).expect("destination write");
                if let Some(s) = stream.as_mut() {
                    s.extend_from_slice(bytes);
                }
            },
        );
        report.stream_bytes += seen.bytes;
        report.max_ready_chunks = report.max_ready_chunks.max(seen.max_ready_chunks);
    }

    /// Runs the migration: the destination to RESUMING, the source through
    /// PRE_COPY rounds (QEMU-style, until nothing is left or the round limit)
    /// when `precopy`, then stop-copy; both sides back to STOP, the
    /// destination to RUNNING.
    ///
    /// # Panics
    /// On any refusal along the way.
    pub fn run(&mut self, seed: u64) -> Report {
        let mut rng = Rng(seed | 1);
        let mut report = Report {
            stream: self.keep_stream.then(Vec::new),
            ..Report::default()
        };
        let df = set_state(&mut self.dst, MigState::Resuming)
            .expect("dst RESUMING")
            .expect("resuming fd");
        let sf;
        if self.precopy {
            sf = set_state(&mut self.src, MigState::PreCopy)
                .expect("src PRE_COPY")
                .expect("fd");
            for _ in 0..self.max_precopy_rounds {
                self.pump(sf, df, &mut rng, &mut report, PumpUntil::NoMessage);
                report.precopy_rounds += 1;
                let info = loop {
                    match self.src.precopy_info(sf) {
                        Err(DeviceError::SaveInFlight) => assert!(complete_one(&mut self.src)),
                        r => break r.expect("precopy info"),
                    }
                };
                if info.initial_bytes == 0 && info.dirty_bytes == 0 {
                    break;
                }
            }
            assert_eq!(
                set_state(&mut self.src, MigState::StopCopy).expect("src STOP_COPY"),
                None
            );
        } else {
            sf = set_state(&mut self.src, MigState::StopCopy)
                .expect("src STOP_COPY")
                .expect("fd");
        }
        self.pump(sf, df, &mut rng, &mut report, PumpUntil::Eof);
        report.peak_buffer_bytes = self.src.stats().peak_buffer_bytes;
        set_state(&mut self.src, MigState::Stop).expect("src STOP");
        self.src.release(sf);
        set_state(&mut self.dst, MigState::Stop).expect("dst STOP");
        self.dst.release(df);
        set_state(&mut self.dst, MigState::Running).expect("dst RUNNING");
        report
    }

    /// The destination's state equals the source's.
    ///
    /// # Panics
    /// When it does not.
    pub fn assert_digests_match(&self) {
        let s: Option<Digest> = self.src.hal().fw.digest(0);
        let d = self.dst.hal().fw.digest(0);
        assert!(s.is_some(), "source has no VF 0");
        assert_eq!(s, d, "destination digest differs from source");
    }

    /// Both sides idle with nothing allocated.
    ///
    /// # Panics
    /// When something is left.
    pub fn assert_no_leaks(&mut self) {
        for dev in [&mut self.src, &mut self.dst] {
            assert!(dev.is_idle(), "device not idle: {dev:?}");
            assert_eq!(dev.stats().buffer_bytes, 0);
            assert_eq!(dev.stats().leaked_mkeys, 0);
            assert_eq!(dev.stats().leaked_pds, 0);
            assert_eq!(dev.hal().live_buffers, 0);
            assert!(
                dev.hal().accounting().is_zero(),
                "{:?}",
                dev.hal().accounting()
            );
        }
    }
}

/// `set_state` completing SAVEs whenever the device asks to wait.
fn set_state(dev: &mut Device<TestHal>, target: MigState) -> Result<Option<FileId>, DeviceError> {
    super::set_state(dev, target, u32::MAX).map_err(|e| e.error)
}
