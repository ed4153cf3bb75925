//! The `dma-logging` check: device dirty-page tracking's uAPI
//! (`VFIO_DEVICE_FEATURE_DMA_LOGGING_*`), as the VFIO core and a driver's
//! `vfio_log_ops` must answer it. No guest writes here: `mlx5vf dirty
//! --verify` checks what is reported.

use std::io;

use mlx5vf_core::tracker::IovaRange;
use rustix::io::Errno;

use super::{Ctx, Outcome, errno_name, rule};
use crate::backend::errno_of;
use crate::dma_logging::{DmaLogging, MAX_START_RANGES, bitmap_words};

/// The page size START asks for (the VMM's usual, 4 KiB).
const PAGE: u64 = 4096;
/// Two tracked ranges (1 MiB each, a gap between) and one outside both.
const TRACKED: [IovaRange; 2] = [
    IovaRange {
        iova: 0,
        length: 1 << 20,
    },
    IovaRange {
        iova: 2 << 20,
        length: 1 << 20,
    },
];
const OUTSIDE: IovaRange = IovaRange {
    iova: 16 << 20,
    length: 1 << 20,
};

fn is(e: &io::Error, want: Errno) -> bool {
    errno_of(e) == Some(want.raw_os_error())
}

/// A REPORT of `r` in `page`-byte pages.
fn report(log: &mut dyn DmaLogging, r: &IovaRange, page: u64) -> io::Result<()> {
    let words = bitmap_words(r.length, page).unwrap_or(0);
    let mut bitmap = vec![0u64; words];
    log.report(r.iova, r.length, page, &mut bitmap).map(drop)
}

impl Ctx<'_> {
    /// START's argument checks, START, a second START, REPORTs inside, with
    /// a bad page size and outside the ranges, STOP, REPORT after STOP, and
    /// START again after STOP. Logging ends stopped whatever happens.
    pub(super) fn dma_logging(&mut self) -> Outcome {
        let require = self.require_dma_logging;
        let log = match self.dev.dma_logging() {
            Ok(log) => log,
            Err(e) if require => {
                return Outcome::Fail(format!("the device offers no DMA logging: {e}"));
            }
            Err(e) => return Outcome::Skip(format!("the device offers no DMA logging: {e}")),
        };
        let mut findings = Vec::new();
        let outcome = run(log, &mut findings);
        // Whatever failed above, leave nothing started.
        let _ = log.stop();
        self.findings.extend(findings);
        outcome
    }
}

fn run(log: &mut dyn DmaLogging, findings: &mut Vec<(Outcome, &'static str)>) -> Outcome {
    let mut fail = |what: String, rule: &'static str| findings.push((Outcome::Fail(what), rule));
    // START refusals, each with the VFIO core's errno.
    let misaligned = [IovaRange {
        iova: 0x800,
        length: 0x1000,
    }];
    let overlapping = [
        IovaRange {
            iova: 0,
            length: 2 << 20,
        },
        IovaRange {
            iova: 1 << 20,
            length: 2 << 20,
        },
    ];
    let too_many: Vec<IovaRange> = (0..=MAX_START_RANGES as u64)
        .map(|i| IovaRange {
            iova: i * 2 * PAGE,
            length: PAGE,
        })
        .collect();
    let refusals: [(&str, &[IovaRange], Errno); 4] = [
        ("no ranges", &[], Errno::INVAL),
        (
            "a range not aligned to the page size",
            &misaligned,
            Errno::INVAL,
        ),
        ("overlapping ranges", &overlapping, Errno::INVAL),
        ("more ranges than PAGE_SIZE/16", &too_many, Errno::TOOBIG),
    ];
    for (what, ranges, want) in refusals {
        match log.start(ranges, PAGE) {
            Ok(_) => {
                let _ = log.stop();
                fail(format!("START with {what} succeeded"), rule::DMA_START);
            }
            Err(e) if is(&e, want) => {}
            Err(e) => fail(
                format!("START with {what}: {} (expected {want:?})", errno_name(&e)),
                rule::DMA_START,
            ),
        }
    }
    let page = match log.start(&TRACKED, PAGE) {
        Ok(p) if p.is_power_of_two() && p >= PAGE => p,
        Ok(p) => {
            return Outcome::Fail(format!(
                "START chose page size {p}, not a power of two >= 4096"
            ));
        }
        Err(e) => return Outcome::Fail(format!("START over two 1 MiB ranges: {}", errno_name(&e))),
    };
    if log.start(&TRACKED, PAGE).is_ok() {
        fail(
            "a second START succeeded while logging".into(),
            rule::DMA_START,
        );
    }
    for r in &TRACKED {
        if let Err(e) = report(log, r, page) {
            fail(
                format!(
                    "REPORT of tracked range {:#x}+{:#x}: {}",
                    r.iova,
                    r.length,
                    errno_name(&e)
                ),
                rule::DMA_REPORT,
            );
        }
    }
    match report(log, &TRACKED[0], 2048) {
        Ok(()) => fail("REPORT in 2 KiB pages succeeded".into(), rule::DMA_REPORT),
        Err(e) if is(&e, Errno::INVAL) => {}
        Err(e) => fail(
            format!(
                "REPORT in 2 KiB pages: {} (expected EINVAL)",
                errno_name(&e)
            ),
            rule::DMA_REPORT,
        ),
    }
    if report(log, &OUTSIDE, page).is_ok() {
        fail(
            format!(
                "REPORT of {:#x}+{:#x}, outside every tracked range, succeeded",
                OUTSIDE.iova, OUTSIDE.length
            ),
            rule::DMA_OUTSIDE,
        );
    }
    if let Err(e) = log.stop() {
        return Outcome::Fail(format!("STOP: {}", errno_name(&e)));
    }
    if report(log, &TRACKED[0], page).is_ok() {
        fail("REPORT after STOP succeeded".into(), rule::DMA_STOPPED);
    }
    match log.start(&TRACKED, PAGE) {
        Ok(_) => {
            if let Err(e) = log.stop() {
                fail(
                    format!("STOP after a restart: {}", errno_name(&e)),
                    rule::DMA_START,
                );
            }
        }
        Err(e) => fail(
            format!("START after STOP: {}", errno_name(&e)),
            rule::DMA_START,
        ),
    }
    if findings.is_empty() {
        Outcome::Pass(format!(
            "START refused bad ranges, tracked two ranges in {page}-byte pages, REPORT refused \
             bad pages and untracked ranges, STOP ended logging and START worked again"
        ))
    } else {
        Outcome::Fail(format!("{} finding(s) above", findings.len()))
    }
}
