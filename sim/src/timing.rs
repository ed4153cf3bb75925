//! A timing model for benchmarks (feature `std`): how long the firmware
//! takes for a command, and a worker thread that completes jobs after that
//! long, one at a time, in submission order — the way firmware serves
//! asynchronous SAVEs, so that chunk k + 1 can be produced while chunk k is
//! being read.
//!
//! The sim itself never sleeps: [`crate::Firmware::exec`] is instantaneous.
//! A shim that wants modelled time runs `exec` inside a [`Worker`] job.

use std::boxed::Box;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use crate::spec::SimSpec;
use crate::wire::opcode;

/// Firmware speed: a fixed latency per command plus, for SAVE and LOAD,
/// the image bytes at `fw_bytes_per_sec`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TimingModel {
    /// Bandwidth of SAVE/LOAD data, `None` = infinitely fast.
    pub fw_bytes_per_sec: Option<u64>,
    /// Fixed cost of every command.
    pub latency: Duration,
}

impl TimingModel {
    /// No modelled time at all (the default).
    pub const OFF: Self = Self {
        fw_bytes_per_sec: None,
        latency: Duration::ZERO,
    };

    /// The model a spec string describes (`fw-rate=`, `latency=`).
    #[must_use]
    pub fn from_spec(spec: &SimSpec) -> Self {
        Self {
            fw_bytes_per_sec: spec.fw_rate,
            latency: spec.latency,
        }
    }

    /// `true` when every command is free.
    #[must_use]
    pub fn is_off(&self) -> bool {
        self.fw_bytes_per_sec.is_none() && self.latency.is_zero()
    }

    /// Modelled duration of one command of `opcode` moving `bytes` of
    /// image data (only SAVE and LOAD pay for bytes).
    #[must_use]
    pub fn cost(&self, op: u16, bytes: u64) -> Duration {
        let moves_data = op == opcode::SAVE_VHCA_STATE || op == opcode::LOAD_VHCA_STATE;
        let transfer = match self.fw_bytes_per_sec {
            Some(rate) if moves_data && rate > 0 => {
                let nanos = u128::from(bytes)
                    .saturating_mul(1_000_000_000)
                    .checked_div(u128::from(rate))
                    .unwrap_or(0);
                Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
            }
            _ => Duration::ZERO,
        };
        self.latency.saturating_add(transfer)
    }
}

/// A job for the [`Worker`].
pub type Job = Box<dyn FnOnce() + Send + 'static>;

/// The worker thread is gone (it panicked in a job).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkerGone;

impl core::fmt::Display for WorkerGone {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("sim timing worker thread is gone")
    }
}

impl std::error::Error for WorkerGone {}

/// One firmware "engine": a thread that runs jobs in FIFO order, each after
/// its modelled delay (measured from when the previous job finished or the
/// job was submitted, whichever is later).
#[derive(Debug)]
pub struct Worker {
    model: TimingModel,
    queue: Option<mpsc::Sender<(Duration, Job)>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Worker {
    /// Start the worker thread.
    ///
    /// # Errors
    /// The OS error when the thread cannot be spawned.
    pub fn new(model: TimingModel) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<(Duration, Job)>();
        let thread = thread::Builder::new()
            .name("mlx5vf-sim-fw".into())
            .spawn(move || {
                for (delay, job) in rx {
                    if !delay.is_zero() {
                        thread::sleep(delay);
                    }
                    job();
                }
            })?;
        Ok(Self {
            model,
            queue: Some(tx),
            thread: Some(thread),
        })
    }

    /// The model this worker applies.
    #[must_use]
    pub fn model(&self) -> TimingModel {
        self.model
    }

    /// Run `job` after the modelled cost of a command of `opcode` moving
    /// `bytes`.
    ///
    /// # Errors
    /// [`WorkerGone`] if the thread died.
    pub fn submit_command(&self, op: u16, bytes: u64, job: Job) -> Result<(), WorkerGone> {
        self.submit(self.model.cost(op, bytes), job)
    }

    /// Run `job` after `delay`.
    ///
    /// # Errors
    /// [`WorkerGone`] if the thread died.
    pub fn submit(&self, delay: Duration, job: Job) -> Result<(), WorkerGone> {
        self.queue
            .as_ref()
            .ok_or(WorkerGone)?
            .send((delay, job))
            .map_err(|_| WorkerGone)
    }
}

impl Drop for Worker {
    /// Finish the queued jobs, then stop the thread.
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(t) = self.thread.take() {
            // Dropped by one of its own jobs (a completion callback holding
            // the last reference to its device): joining would deadlock
            // (std panics with EDEADLK). The queue is closed, so the thread
            // ends when this job returns; let it go.
            if t.thread().id() == thread::current().id() {
                return;
            }
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;
    use std::vec::Vec;

    /// Flake seen in the CLI tests: the last reference to a worker dropped
    /// inside one of its jobs made the worker join its own thread, and std
    /// panicked ("Resource deadlock avoided").
    #[test]
    fn a_worker_dropped_by_its_own_job_does_not_join_itself() {
        let worker = Arc::new(Mutex::new(Some(
            Worker::new(TimingModel::default()).unwrap(),
        )));
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let inside = Arc::clone(&worker);
        let job = Box::new(move || {
            // The job takes the worker out and drops it on the worker's thread.
            let w = inside.lock().unwrap().take();
            drop(w);
            done_tx.send(()).unwrap();
        });
        worker
            .lock()
            .unwrap()
            .as_ref()
            .unwrap()
            .submit(Duration::ZERO, job)
            .unwrap();
        done_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the job ran to its end");
    }

    #[test]
    fn cost_adds_latency_and_transfer() {
        let m = TimingModel {
            fw_bytes_per_sec: Some(1 << 30),
            latency: Duration::from_micros(50),
        };
        assert_eq!(m.cost(opcode::ALLOC_PD, 1 << 30), Duration::from_micros(50));
        assert_eq!(
            m.cost(opcode::SAVE_VHCA_STATE, 1 << 30),
            Duration::from_secs(1) + Duration::from_micros(50)
        );
        assert_eq!(
            TimingModel::OFF.cost(opcode::LOAD_VHCA_STATE, 1 << 40),
            Duration::ZERO
        );
        assert!(TimingModel::OFF.is_off());
    }

    #[test]
    fn worker_runs_fifo_after_delay() {
        let w = Worker::new(TimingModel {
            fw_bytes_per_sec: None,
            latency: Duration::from_millis(5),
        })
        .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let start = Instant::now();
        for i in 0..3 {
            let log = Arc::clone(&log);
            w.submit_command(
                opcode::SAVE_VHCA_STATE,
                0,
                Box::new(move || log.lock().unwrap().push(i)),
            )
            .unwrap();
        }
        drop(w);
        assert_eq!(*log.lock().unwrap(), [0, 1, 2]);
        assert!(start.elapsed() >= Duration::from_millis(15));
    }
}
