//! `migrate --precopy --guest-dirty RATE`: a guest whose device writes its
//! memory while the source runs, tracked through the device's page tracker
//! the way a VMM tracks it (`DMA_LOGGING_START`, a `REPORT` per PRE_COPY
//! round and one at the stop), so the summary says how many guest pages a
//! VMM would send per round and in the downtime, besides the device state.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use mlx5vf_core::tracker::IovaRange;
use mlx5vf_sim::tracker::{GUEST_PAGE, MAX_GUEST_PAGES};

use super::device::{Summary, Value};
use super::transfer_cmds::TransferCmdError;
use crate::backend::{DriverOptions, MigrationDevice, OpenError};
use crate::dma_logging::DmaLogging;
use crate::sim::{DirtyLog, SimDevice};
use crate::timeline::Timeline;
use crate::transfer::{Observer, Phase};

/// The guest's memory: all of the sim's, tracked as one range.
const GUEST_BYTES: u64 = MAX_GUEST_PAGES as u64 * GUEST_PAGE;

/// What the guest did and what the tracker reported.
#[derive(Debug, Default)]
struct Counts {
    /// Pages reported per PRE_COPY round.
    rounds: Vec<u64>,
    /// Pages reported at the stop (sent in the downtime).
    at_stop: Option<u64>,
    /// Guest page writes in all.
    writes: u64,
    /// The first report failure (logging then ends; a VMM would resend
    /// all memory).
    error: Option<String>,
}

/// The source's guest and its dirty log.
pub struct GuestDirty {
    log: Mutex<DirtyLog>,
    /// Guest page writes per second.
    rate: u64,
    last: Mutex<Instant>,
    counts: Mutex<Counts>,
}

impl GuestDirty {
    /// Opens the simulated source `spec` with a guest writing `rate` pages
    /// per second, and starts logging over all of its memory.
    ///
    /// # Errors
    /// A spec that is not `sim`, or a device that will not track.
    pub fn open(
        spec: &str,
        opts: &DriverOptions,
        rate: u64,
    ) -> Result<(Box<dyn MigrationDevice>, Self), TransferCmdError> {
        let spec = if spec.is_empty() { "sim" } else { spec };
        if spec != "sim" && !spec.starts_with("sim:") {
            return Err(TransferCmdError::Open(OpenError::Spec(format!(
                "--guest-dirty needs a simulated source, not {spec:?}"
            ))));
        }
        let parsed = spec
            .parse()
            .map_err(|e| TransferCmdError::Open(OpenError::Spec(format!("{e}"))))?;
        let dev = SimDevice::open(spec, &parsed, opts)
            .map_err(|e| TransferCmdError::Open(OpenError::Device(e)))?;
        let mut log = dev.dirty_log();
        let all = IovaRange {
            iova: 0,
            length: GUEST_BYTES,
        };
        log.start(&[all], GUEST_PAGE)
            .map_err(|e| TransferCmdError::Open(OpenError::Device(e)))?;
        Ok((
            Box::new(dev),
            Self {
                log: Mutex::new(log),
                rate,
                last: Mutex::new(Instant::now()),
                counts: Mutex::new(Counts::default()),
            },
        ))
    }

    /// The guest writes what its rate gives since the last sync, then the
    /// log is read and cleared; returns the pages reported.
    fn sync(&self) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let writes = (self.rate as f64 * last.elapsed().as_secs_f64()).round() as u64;
        *last = Instant::now();
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        log.firmware()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .tracker_mut()
            .guest_dma(writes);
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.writes += writes;
        if counts.error.is_some() {
            return None;
        }
        let mut bitmap = vec![0u64; (MAX_GUEST_PAGES / 64) as usize];
        match log.report(0, GUEST_BYTES, GUEST_PAGE, &mut bitmap) {
            Ok(_) => Some(bitmap.iter().map(|w| u64::from(w.count_ones())).sum()),
            Err(e) => {
                counts.error = Some(e.to_string());
                None
            }
        }
    }

    fn round(&self) {
        if let Some(n) = self.sync() {
            self.counts
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .rounds
                .push(n);
        }
    }

    fn stop(&self) {
        let n = self.sync();
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .at_stop = n;
    }

    /// Adds the guest's figures to the migration summary.
    pub fn add_to(&self, s: &mut Summary) {
        let c = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let rounds: Vec<String> = c.rounds.iter().map(u64::to_string).collect();
        s.add("guest_dirty_pages_per_sec", Value::Int(self.rate))
            .add("guest_page_writes", Value::Int(c.writes))
            .add("guest_pages_per_round", Value::Text(rounds.join(",")))
            .add(
                "guest_precopy_bytes",
                Value::Int(c.rounds.iter().sum::<u64>() * GUEST_PAGE),
            );
        match (&c.error, c.at_stop) {
            (None, Some(n)) => {
                s.add("guest_stop_pages", Value::Int(n))
                    .add("guest_stop_bytes", Value::Int(n * GUEST_PAGE));
            }
            (Some(e), _) => {
                // Logging ended: the VMM resends all of guest memory.
                s.add("guest_tracking_error", Value::Text(e.clone()))
                    .add("guest_stop_bytes", Value::Int(GUEST_BYTES));
            }
            (None, None) => {}
        }
    }
}

/// An observer that also lets the guest run and syncs its dirty log at each
/// PRE_COPY round and at the stop.
pub struct WithGuest<'a> {
    /// The observer reports go to.
    pub inner: &'a dyn Observer,
    /// The guest.
    pub guest: Arc<GuestDirty>,
}

impl Observer for WithGuest<'_> {
    fn progress(&self, total: u64, phase: Phase) {
        self.inner.progress(total, phase);
    }
    fn interrupted_by(&self) -> Option<i32> {
        self.inner.interrupted_by()
    }
    fn timeline(&self) -> Option<&Timeline> {
        self.inner.timeline()
    }
    fn precopy_round(&self, round: u32) {
        self.inner.precopy_round(round);
        self.guest.round();
    }
    fn stopped(&self) {
        self.inner.stopped();
        self.guest.stop();
    }
}
