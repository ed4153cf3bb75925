//! Core's test platform is the sim's test kit ([`mlx5vf_sim::testkit`]);
//! this adds a harness that migrates one device's state to another.
#![allow(dead_code, unreachable_pub, missing_docs, unused_imports)]

use mlx5vf_core::device::{Config, Device, DeviceError, FileId};
use mlx5vf_core::vfio::MigState;

pub use mlx5vf_sim::testkit::{
    FailAfter, PAGE, TestHal, complete_one, device, read, write, write_waiting,
};

/// `set_state`, completing SAVEs whenever the device asks to wait.
pub fn set_state(
    dev: &mut Device<TestHal>,
    target: MigState,
) -> Result<Option<FileId>, DeviceError> {
    mlx5vf_sim::testkit::set_state(dev, target, u32::MAX).map_err(|e| e.error)
}

/// A tiny deterministic PRNG for read sizes.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// How reads are sized.
#[derive(Clone, Copy, Debug)]
pub enum Reads {
    /// Always this many bytes.
    Fixed(u64),
    /// Random from 1 byte to `max`, log-uniform-ish.
    Random { seed: u64, max: u64 },
}

impl Reads {
    fn size(&self, rng: &mut Rng) -> u64 {
        match *self {
            Self::Fixed(n) => n,
            Self::Random { max, .. } => {
                let bits = 64 - max.leading_zeros() as u64;
                let b = rng.below(bits + 1);
                1 + rng.below((1u64 << b).min(max))
            }
        }
    }
}

/// What a migration observed.
#[derive(Debug, Default)]
pub struct Report {
    pub stream_bytes: u64,
    pub max_ready_chunks: usize,
    pub peak_buffer_bytes: u64,
    pub precopy_rounds: u32,
    pub stream: Option<Vec<u8>>,
}

pub struct Migration {
    pub src: Device<TestHal>,
    pub dst: Device<TestHal>,
    pub precopy: bool,
    pub reads: Reads,
    /// Keep the whole stream (small states only).
    pub keep_stream: bool,
    /// Limit on PRE_COPY rounds before switching to stop-copy.
    pub max_precopy_rounds: u32,
    /// Firmware faster than the reader: complete every pending SAVE before
    /// each read (otherwise SAVEs complete only when the reader waits).
    pub eager_firmware: bool,
}

impl Migration {
    pub fn new(src: &str, dst: &str, cfg: Config) -> Self {
        Self {
            src: device(src, cfg),
            dst: device(dst, cfg),
            precopy: false,
            reads: Reads::Fixed(1 << 20),
            keep_stream: false,
            max_precopy_rounds: 8,
            eager_firmware: false,
        }
    }

    /// Moves whatever the source has now into the destination; returns when
    /// the source reports `stop_at` (ENOMSG in PRE_COPY, EOF in STOP_COPY).
    fn pump(
        &mut self,
        sf: FileId,
        df: FileId,
        rng: &mut Rng,
        report: &mut Report,
        until_eof: bool,
    ) {
        let slots = self.src.config().chunk_slots as usize;
        let mut buf = Vec::new();
        loop {
            buf.clear();
            if self.eager_firmware {
                while complete_one(&mut self.src) {}
            }
            let want = self.reads.size(rng);
            match read(&mut self.src, sf, want, &mut buf) {
                Ok(0) => {
                    assert!(until_eof, "EOF during PRE_COPY");
                    return;
                }
                Ok(n) => {
                    report.stream_bytes += n;
                    write(&mut self.dst, df, &buf).expect("destination write");
                    if let Some(s) = report.stream.as_mut() {
                        s.extend_from_slice(&buf);
                    }
                }
                Err(DeviceError::WouldBlock) => {
                    assert!(
                        complete_one(&mut self.src),
                        "reader would block with no SAVE in flight"
                    );
                }
                Err(DeviceError::NoMessage) if !until_eof => return,
                Err(e) => panic!("source read: {e}"),
            }
            if let Some(e) = self.src.save_engine() {
                // Back-pressure: never more unread chunks than slots.
                assert!(e.ready_chunks() <= slots.max(1));
                report.max_ready_chunks = report.max_ready_chunks.max(e.ready_chunks());
            }
        }
    }

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
            // Drain initial data, then iterate like QEMU until dirty data is small.
            for _ in 0..self.max_precopy_rounds {
                self.pump(sf, df, &mut rng, &mut report, false);
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
        self.pump(sf, df, &mut rng, &mut report, true);
        report.peak_buffer_bytes = self.src.stats().peak_buffer_bytes;
        set_state(&mut self.src, MigState::Stop).expect("src STOP");
        self.src.release(sf);
        set_state(&mut self.dst, MigState::Stop).expect("dst STOP");
        self.dst.release(df);
        set_state(&mut self.dst, MigState::Running).expect("dst RUNNING");
        report
    }

    pub fn assert_digests_match(&self) {
        let s = self.src.hal().fw.digest(0).unwrap();
        let d = self.dst.hal().fw.digest(0).unwrap();
        assert_eq!(s, d, "destination digest differs from source");
    }

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
