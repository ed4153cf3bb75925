//! `mlx5vf check`: the simulated device passes every check, devices that
//! break one uAPI rule each are caught by the check that owns it, and
//! drivers we did not write ([`common::foreign`]) are held to the uAPI, not
//! to our driver's habits.
// The tool and the simulated device (default features): built without
// them (a VMM's embedding) there is nothing here to test.
#![cfg(all(feature = "cli", feature = "sim"))]
mod common;

use std::io::{self, Read, Write};
use std::time::Duration;

use mlx5vf::backend::{self, DataFile, DriverOptions, MigrationDevice, Stats};
use mlx5vf::cli::check::{CheckOptions, check_device};
use mlx5vf_core::save::PrecopyInfo;
use mlx5vf_core::vfio::{MigState, MigrationFlags};

use common::foreign::{Foreign, Quirks};
use common::run;
use mlx5vf::dma_logging::{DmaLogging, ReportFigures};
use mlx5vf::interrupt::Interrupt;
use mlx5vf_core::tracker::IovaRange;

fn lines_with(out: &str, tag: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.starts_with(tag))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_simulated_device_passes_with_pre_copy() {
    let r = run(&[
        "check",
        "--device",
        "sim:state=32M,precopy=on,latency=200us",
        "--strict",
        "--require-eagain",
    ]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(lines_with(&r.stdout, "PASS").len(), 10, "{}", r.stdout);
    assert!(r.stdout.contains("PASS dma-logging"), "{}", r.stdout);
    assert!(
        r.stdout.contains("40 allowed transitions over 7 states"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("2 forbidden refused with EINVAL"),
        "{}",
        r.stdout
    );
}

#[test]
fn the_simulated_device_passes_without_pre_copy() {
    let r = run(&["check", "--device", "sim:state=16M,precopy=off", "--strict"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(lines_with(&r.stdout, "SKIP").len(), 1, "{}", r.stdout);
    assert!(r.stdout.contains("SKIP pre-copy"), "{}", r.stdout);
    assert!(
        r.stdout.contains("20 allowed transitions over 5 states"),
        "{}",
        r.stdout
    );
}

#[test]
fn a_bad_spec_is_a_usage_error() {
    let r = run(&["check", "--device", "vfio-mig:"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(
        r.stderr.contains("vfio-mig: needs a device"),
        "{}",
        r.stderr
    );
    let r = run(&["check", "--device", "vfio-mig:no-such-device-4711"]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    r.fails(
        1,
        "cannot open device: vfio-mig:no-such-device-4711: find the device in sysfs: no such \
         device under /sys/bus/{pci,platform,mdev}/devices",
    );
}

/// Which rule a [`Broken`] device breaks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Flaw {
    /// RUNNING -> RUNNING_P2P hands out a data fd.
    FdOnP2p,
    /// PRE_COPY reads say end of stream instead of ENOMSG.
    EofInPreCopy,
    /// After a reset, the old fd says EAGAIN forever.
    StuckAfterReset,
    /// RESUMING -> STOP accepts anything.
    AcceptsIncomplete,
}

/// The simulated device with one flaw.
struct Broken {
    inner: Box<dyn MigrationDevice>,
    flaw: Flaw,
    reset_happened: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

struct BrokenFile {
    inner: Box<dyn DataFile>,
    flaw: Flaw,
    pre_copy: bool,
    reset_happened: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Read for BrokenFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.flaw == Flaw::StuckAfterReset
            && self
                .reset_happened
                .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        match self.inner.read(buf) {
            Err(e)
                if self.flaw == Flaw::EofInPreCopy
                    && self.pre_copy
                    && backend::is_no_message(&e) =>
            {
                Ok(0)
            }
            other => other,
        }
    }
}

impl Write for BrokenFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl DataFile for BrokenFile {
    fn precopy_info(&mut self) -> io::Result<PrecopyInfo> {
        self.inner.precopy_info()
    }
    fn wait_readable(&mut self, timeout: Duration) -> io::Result<bool> {
        self.inner.wait_readable(timeout)
    }
    fn set_nonblocking(&mut self, on: bool) -> io::Result<()> {
        self.inner.set_nonblocking(on)
    }
}

impl MigrationDevice for Broken {
    fn describe(&self) -> String {
        "broken".to_owned()
    }
    fn migration_flags(&self) -> MigrationFlags {
        self.inner.migration_flags()
    }
    fn state(&mut self) -> io::Result<MigState> {
        self.inner.state()
    }
    fn set_state(&mut self, target: MigState) -> io::Result<Option<Box<dyn DataFile>>> {
        let from = self.inner.state()?;
        self.reset_happened
            .store(false, std::sync::atomic::Ordering::SeqCst);
        if self.flaw == Flaw::AcceptsIncomplete
            && from == MigState::Resuming
            && target == MigState::Stop
        {
            // Pretend the load was fine: reset to leave RESUMING, then walk.
            self.inner.reset()?;
            return self.inner.set_state(target).map(|_| None);
        }
        let file = self.inner.set_state(target)?;
        let wrap = |f: Box<dyn DataFile>| -> Box<dyn DataFile> {
            Box::new(BrokenFile {
                inner: f,
                flaw: self.flaw,
                pre_copy: target == MigState::PreCopy,
                reset_happened: self.reset_happened.clone(),
            })
        };
        if self.flaw == Flaw::FdOnP2p && from == MigState::Running && target == MigState::RunningP2p
        {
            // Hand out some other file as if the arc opened one.
            let spare = backend::open("sim:state=1M", &DriverOptions::default())
                .map_err(io::Error::other)?
                .set_state(MigState::PreCopy)?;
            return Ok(spare.map(wrap));
        }
        Ok(file.map(wrap))
    }
    fn data_size(&mut self) -> io::Result<u64> {
        self.inner.data_size()
    }
    fn reset(&mut self) -> io::Result<()> {
        self.reset_happened
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.inner.reset()
    }
    fn digest(&self) -> Option<String> {
        None
    }
    fn stats(&self) -> Stats {
        Stats::default()
    }
}

fn check_with(dev: &mut dyn MigrationDevice, opts: &CheckOptions) -> (usize, String) {
    let mut out = Vec::new();
    let report = check_device(dev, opts, &mut out).unwrap();
    let out = String::from_utf8(out).unwrap();
    // Every check line cites the rule it applies, and the report (what
    // --json prints) holds the same lines.
    let lines: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(lines.len(), report.checks.len(), "{out}");
    for (line, check) in lines.iter().zip(&report.checks) {
        assert!(line.contains(" [rule: ") && line.ends_with(']'), "{line}");
        let text = format!(
            "{} {:<18} {} [rule: {}]",
            check.result.to_uppercase(),
            check.name,
            check.detail,
            check.rule
        );
        assert_eq!(*line, text);
    }
    assert_eq!(report.passed, report.failed == 0);
    (report.failed, out)
}

fn strict() -> CheckOptions {
    CheckOptions {
        strict: true,
        ..CheckOptions::default()
    }
}

fn check_broken_with(flaw: Flaw, opts: &CheckOptions) -> (usize, String) {
    let inner = backend::open("sim:state=8M,precopy=on", &DriverOptions::default()).unwrap();
    let mut dev = Broken {
        inner,
        flaw,
        reset_happened: Default::default(),
    };
    check_with(&mut dev, opts)
}

fn check_broken(flaw: Flaw) -> (usize, String) {
    check_broken_with(flaw, &strict())
}

#[test]
fn a_data_fd_from_a_non_session_arc_fails_the_arcs_check() {
    let (failed, out) = check_broken(Flaw::FdOnP2p);
    assert!(failed >= 1, "{out}");
    assert!(
        out.contains("FAIL arcs               RUNNING -> RUNNING_P2P: data fd returned but the arc opens none [rule: vfio.h: RUNNING->PRE_COPY"),
        "{out}"
    );
}

/// Issue 15: one failed arc does not stop the check; every arc is tried and
/// the summary counts them (before, the arcs out of RUNNING_P2P, PRE_COPY
/// and PRE_COPY_P2P went unchecked after the first failure).
#[test]
fn the_arcs_check_goes_on_after_a_failure() {
    let (_, out) = check_broken(Flaw::FdOnP2p);
    let arc_failures = lines_with(&out, "FAIL arcs               RUNNING -> ");
    assert_eq!(arc_failures.len(), 1, "{out}");
    assert!(
        out.contains(
            "FAIL arcs               42 of 42 arcs checked: 39 allowed transitions over 7 \
             states (18 opened a data fd), 2 forbidden refused with EINVAL; 1 failed; 0 skipped"
        ),
        "{out}"
    );
}

/// Issue 15: an empty read at PRE_COPY's temporary end breaks a "should"
/// (ENOMSG): a warning, a failure only with --strict.
#[test]
fn an_empty_read_at_the_temporary_end_of_pre_copy_warns() {
    let (failed, out) = check_broken_with(Flaw::EofInPreCopy, &CheckOptions::default());
    assert_eq!(failed, 0, "{out}");
    let warn = lines_with(&out, "WARN pre-copy");
    assert_eq!(warn.len(), 1, "{out}");
    assert!(
        warn[0].contains("(the uAPI says it should fail ENOMSG; 0 means end of stream)"),
        "{out}"
    );
    assert!(
        warn[0].contains("[rule: vfio.h: at PRE_COPY's temporary end read() should fail ENOMSG"),
        "{out}"
    );
    let (failed, _) = check_broken(Flaw::EofInPreCopy);
    assert_eq!(failed, 1, "{out}");
}

#[test]
fn a_fd_left_hanging_by_reset_fails_the_reset_check() {
    let (failed, out) = check_broken(Flaw::StuckAfterReset);
    assert_eq!(failed, 1, "{out}");
    assert!(out.contains("FAIL reset"), "{out}");
    assert!(out.contains("still says EAGAIN after the reset"), "{out}");
}

#[test]
fn accepting_an_incomplete_stream_warns_and_fails_when_strict() {
    let (failed, out) = check_broken(Flaw::AcceptsIncomplete);
    assert_eq!(failed, 1, "{out}");
    assert!(out.contains("WARN incomplete-resume"), "{out}");
}

/// Issue 15: a driver that validates its stream refuses RESUMING -> STOP
/// with no data written; the arcs check allows that (the uAPI does) instead
/// of contradicting the incomplete-resume check.
#[test]
fn a_driver_that_validates_its_stream_passes() {
    let quirks = Quirks {
        validates: true,
        ..Quirks::default()
    };
    let mut dev = Foreign::new("sim:state=8M,precopy=on", quirks);
    let (failed, out) = check_with(&mut dev, &strict());
    assert_eq!(failed, 0, "{out}");
    assert!(
        out.contains(
            "PASS arcs               42 of 42 arcs checked: 34 allowed transitions over 7 \
             states (15 opened a data fd), 2 forbidden refused with EINVAL, 6 refused leaving \
             RESUMING with no data written (allowed); 0 failed; 0 skipped"
        ),
        "{out}"
    );
    assert_eq!(lines_with(&out, "PASS incomplete-resume").len(), 1, "{out}");
    assert_eq!(dev.state().unwrap(), MigState::Running);
}

/// An opaque stream and a synchronous read path (never EAGAIN; an empty
/// read at PRE_COPY's temporary end) pass, warning only where the uAPI
/// says "should"; --require-eagain fails and says why.
#[test]
fn a_synchronous_opaque_driver_passes_with_a_warning() {
    let quirks = Quirks {
        validates: true,
        opaque: true,
        synchronous: true,
    };
    let mut dev = Foreign::new("sim:state=8M,precopy=on", quirks);
    let (failed, out) = check_with(&mut dev, &CheckOptions::default());
    assert_eq!(failed, 0, "{out}");
    assert_eq!(lines_with(&out, "WARN").len(), 1, "{out}");
    assert_eq!(lines_with(&out, "WARN pre-copy").len(), 1, "{out}");
    let nonblocking = lines_with(&out, "PASS nonblocking-read");
    assert_eq!(nonblocking.len(), 1, "{out}");
    assert!(
        nonblocking[0].contains("EAGAIN 0 times, poll() woke 0 times; byte-identical")
            || nonblocking[0].contains("EAGAIN 0 times, poll() woke 0 times; as long as"),
        "{out}"
    );
    assert!(
        nonblocking[0].contains("(a synchronous read path: allowed)"),
        "{out}"
    );
    let opts = CheckOptions {
        require_eagain: true,
        ..CheckOptions::default()
    };
    let (failed, out) = check_with(&mut dev, &opts);
    assert_eq!(failed, 1, "{out}");
    assert!(
        out.contains("EAGAIN was required (--require-eagain) but every read had its data at once"),
        "{out}"
    );
}

/// A signal stops the check between steps; the device still ends RUNNING.
#[test]
fn an_interrupted_check_leaves_the_device_running() {
    let mut dev = Foreign::new("sim:state=8M,precopy=on", Quirks::default());
    let interrupt = Interrupt::new();
    dev.set_state(MigState::PreCopy).unwrap();
    interrupt.raise(2);
    let opts = CheckOptions {
        interrupt,
        ..CheckOptions::default()
    };
    let (failed, out) = check_with(&mut dev, &opts);
    assert_eq!(failed, 1, "{out}");
    assert_eq!(lines_with(&out, "SKIP").len(), 10, "{out}");
    assert!(
        out.contains("FAIL interrupted        interrupted by SIGINT"),
        "{out}"
    );
    assert_eq!(dev.state().unwrap(), MigState::Running);
}

/// A DMA-logging rule a device breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LogFlaw {
    /// A REPORT after STOP succeeds with an empty bitmap.
    ReportsAfterStop,
    /// A second START while logging succeeds.
    SecondStart,
    /// START takes misaligned ranges.
    Misaligned,
    /// A REPORT outside the tracked ranges succeeds.
    ReportsOutside,
}

/// The simulated device whose DMA logging breaks one rule.
struct BrokenLog {
    inner: Box<dyn MigrationDevice>,
    flaw: LogFlaw,
    active: bool,
}

impl MigrationDevice for BrokenLog {
    fn describe(&self) -> String {
        "broken-log".to_owned()
    }
    fn migration_flags(&self) -> MigrationFlags {
        self.inner.migration_flags()
    }
    fn state(&mut self) -> io::Result<MigState> {
        self.inner.state()
    }
    fn set_state(&mut self, target: MigState) -> io::Result<Option<Box<dyn DataFile>>> {
        self.inner.set_state(target)
    }
    fn data_size(&mut self) -> io::Result<u64> {
        self.inner.data_size()
    }
    fn reset(&mut self) -> io::Result<()> {
        self.inner.reset()
    }
    fn digest(&self) -> Option<String> {
        None
    }
    fn stats(&self) -> Stats {
        Stats::default()
    }
    fn dma_logging(&mut self) -> io::Result<&mut dyn DmaLogging> {
        Ok(self)
    }
}

impl DmaLogging for BrokenLog {
    fn start(&mut self, ranges: &[IovaRange], page_size: u64) -> io::Result<u64> {
        if self.active && self.flaw == LogFlaw::SecondStart {
            return Ok(page_size);
        }
        if self.flaw == LogFlaw::Misaligned && ranges.iter().any(|r| r.iova % page_size != 0) {
            return Ok(page_size);
        }
        let p = self.inner.dma_logging()?.start(ranges, page_size)?;
        self.active = true;
        Ok(p)
    }
    fn report(
        &mut self,
        iova: u64,
        length: u64,
        page_size: u64,
        bitmap: &mut [u64],
    ) -> io::Result<Option<ReportFigures>> {
        match self.flaw {
            LogFlaw::ReportsAfterStop if !self.active => return Ok(None),
            LogFlaw::ReportsOutside if iova >= 16 << 20 => return Ok(None),
            _ => {}
        }
        self.inner
            .dma_logging()?
            .report(iova, length, page_size, bitmap)
    }
    fn stop(&mut self) -> io::Result<()> {
        self.active = false;
        self.inner.dma_logging()?.stop()
    }
}

/// Each broken DMA-logging rule fails the dma-logging check, with a line
/// naming it, and nothing else.
#[test]
fn broken_dma_logging_is_caught() {
    for (flaw, says) in [
        (LogFlaw::ReportsAfterStop, "REPORT after STOP succeeded"),
        (
            LogFlaw::SecondStart,
            "a second START succeeded while logging",
        ),
        (
            LogFlaw::Misaligned,
            "START with a range not aligned to the page size succeeded",
        ),
        (
            LogFlaw::ReportsOutside,
            "outside every tracked range, succeeded",
        ),
    ] {
        let mut dev = BrokenLog {
            inner: backend::open("sim:state=8M,precopy=on", &DriverOptions::default()).unwrap(),
            flaw,
            active: false,
        };
        let (failed, out) = check_with(&mut dev, &CheckOptions::default());
        let fails = lines_with(&out, "FAIL");
        assert!(
            fails.iter().all(|l| l.starts_with("FAIL dma-logging")),
            "{flaw:?}: {out}"
        );
        assert_eq!(failed, 1, "{flaw:?}: {out}");
        assert!(fails.iter().any(|l| l.contains(says)), "{flaw:?}: {out}");
    }
}

/// A device without DMA logging skips the check, unless it is required.
#[test]
fn dma_logging_is_skipped_unless_required() {
    let mut dev = Broken {
        inner: backend::open("sim:state=8M,precopy=on", &DriverOptions::default()).unwrap(),
        flaw: Flaw::FdOnP2p,
        reset_happened: Default::default(),
    };
    let (_, out) = check_with(&mut dev, &CheckOptions::default());
    assert!(
        out.contains("SKIP dma-logging        the device offers no DMA logging"),
        "{out}"
    );
    let opts = CheckOptions {
        require_dma_logging: true,
        ..CheckOptions::default()
    };
    let (_, out) = check_with(&mut dev, &opts);
    assert!(
        out.contains("FAIL dma-logging        the device offers no DMA logging"),
        "{out}"
    );
}
