//! `mlx5vf dirty`: device dirty-page tracking (`vfio_log_ops`) on a
//! simulated VF whose guest dirties memory by DMA: start logging over the
//! given ranges, then per round let the guest write, read and clear each
//! range into an `iova_bitmap`, and (with `--verify`) compare the bitmap
//! with the simulated guest's ground truth.

use std::fmt;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use clap::Args;
use mlx5vf_core::tracker::IovaRange;
use mlx5vf_sim::tracker::{MAX_GUEST_PAGES, TrackerConfig};
use serde::Serialize;

use super::device::{parse_duration, parse_size};
use super::json::{self, Document};
use super::{EXIT_FAILURE, EXIT_USAGE};
use crate::backend::DriverOptions;
use crate::sim::{DirtyLog, SimDevice};

/// Long help of `mlx5vf dirty`.
pub const LONG_ABOUT: &str = "Device dirty-page tracking (what VFIO_DEVICE_FEATURE_DMA_LOGGING_* \
    reach through vfio_log_ops) on a simulated VF: logging starts over the --range list (combined \
    to the device's range limit, the page size clamped to the device's and printed), then each \
    round the simulated guest's device writes --dirty-rate pages per second of --interval, inside \
    and outside the ranges, and every range is read and cleared into a bitmap of --page-size \
    pages. Prints per round the pages dirtied and reported and the time the report took, then \
    the report throughput against the dirty rate. With --verify, every page the guest wrote \
    inside a range must be marked in that round's bitmap; a miss exits 1. Guest memory is the \
    sim's first 128 MiB of IOVA; ranges beyond it are tracked but never written.";

/// Arguments of `mlx5vf dirty`.
#[derive(Clone, Debug, Args)]
pub struct DirtyArgs {
    /// The device (`sim[:key=value,...]`; VFIO devices are not supported yet).
    #[arg(long, value_name = "SPEC", default_value = "sim")]
    pub device: String,
    /// A range to track, `IOVA:LEN` (IOVA decimal or 0x-hex, LEN a size
    /// like 64M); repeat for more. Sorted, not overlapping.
    #[arg(long = "range", value_name = "IOVA:LEN", value_parser = parse_range, required = true)]
    pub ranges: Vec<IovaRange>,
    /// The page size asked for (the device may clamp it) and of the bitmap.
    #[arg(long, value_name = "SIZE", default_value = "4096", value_parser = parse_size)]
    pub page_size: u64,
    /// Time between reports.
    #[arg(long, value_name = "DUR", default_value = "100ms", value_parser = parse_duration)]
    pub interval: Duration,
    /// Reports to take.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub rounds: u32,
    /// Guest pages (4 KiB) the simulated device writes per second.
    #[arg(long, value_name = "PAGES", default_value_t = 20_000)]
    pub dirty_rate: u64,
    /// The simulated tracker's range limit (`pg_track_max_num_range`).
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub device_ranges: u8,
    /// The simulated tracker's report message size (a power of two, 64 B..2 MiB).
    #[arg(long, value_name = "SIZE", default_value = "4K", value_parser = parse_size)]
    pub msg_size: u64,
    /// Seed of the guest's write pattern.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Compare every bitmap with the guest's ground truth; exit 1 on a miss.
    #[arg(long)]
    pub verify: bool,
    /// Print one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Parses `IOVA:LEN`.
///
/// # Errors
/// A message for clap.
pub fn parse_range(text: &str) -> Result<IovaRange, String> {
    let (iova, len) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not IOVA:LEN"))?;
    let iova = match iova.strip_prefix("0x").or_else(|| iova.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => iova.parse(),
    }
    .map_err(|_| format!("{iova:?} is not an address (decimal or 0x-hex)"))?;
    Ok(IovaRange {
        iova,
        length: parse_size(len)?,
    })
}

/// Why `mlx5vf dirty` failed.
#[derive(Debug)]
pub enum DirtyError {
    /// Bad arguments or a device other than the sim.
    Usage(String),
    /// The device or driver failed.
    Device(io::Error),
    /// Pages the guest wrote were not reported.
    Missed(u64),
    /// Writing the results failed.
    Output(io::Error),
}

impl DirtyError {
    /// The exit status.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => EXIT_USAGE,
            _ => EXIT_FAILURE,
        }
    }
}

impl fmt::Display for DirtyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Usage(m) => f.write_str(m),
            Self::Device(e) => write!(f, "device: {e}"),
            Self::Missed(n) => write!(f, "{n} written pages were not reported"),
            Self::Output(e) => write!(f, "writing output: {e}"),
        }
    }
}

impl std::error::Error for DirtyError {}

/// One round's figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Round {
    /// Guest page writes this round (4 KiB; some land on the same page).
    pub guest_writes: u64,
    /// Tracked pages the reports named.
    pub reported_pages: u64,
    /// Bitmap bits set.
    pub bitmap_pages: u64,
    /// Report messages.
    pub messages: u64,
    /// Time spent in read-and-clear, seconds.
    pub report_seconds: f64,
    /// Written pages inside the ranges whose bit was clear (with `--verify`).
    pub missed: Option<u64>,
}

/// What `mlx5vf dirty` measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DirtySummary {
    /// Ranges given.
    pub ranges: usize,
    /// Ranges the tracker holds after combining.
    pub tracked_ranges: usize,
    /// Page size the device tracks.
    pub tracked_page_size: u64,
    /// Report message size.
    pub msg_size: u32,
    /// Per round.
    pub rounds: Vec<Round>,
    /// Tracked pages reported per second of read-and-clear.
    pub report_pages_per_sec: f64,
    /// Guest page writes per second asked for.
    pub dirty_pages_per_sec: u64,
    /// Whether every round was verified without a miss.
    pub verified: Option<bool>,
}

/// Runs `mlx5vf dirty`.
///
/// # Errors
/// [`DirtyError`].
pub fn run(args: &DirtyArgs, out: &mut dyn Write) -> Result<(), DirtyError> {
    let spec = if args.device.is_empty() {
        "sim"
    } else {
        &args.device
    };
    if spec != "sim" && !spec.starts_with("sim:") {
        return Err(DirtyError::Usage(format!(
            "{spec:?}: dirty tracking runs on sim devices only (the vfio-mig client has no \
             DMA_LOGGING support yet)"
        )));
    }
    if !args.msg_size.is_power_of_two() || !(64..=2 << 20).contains(&args.msg_size) {
        return Err(DirtyError::Usage(format!(
            "--msg-size {} is not a power of two from 64 to 2M",
            args.msg_size
        )));
    }
    let mut ranges = args.ranges.clone();
    ranges.sort_by_key(|r| r.iova);
    let parsed = spec
        .parse()
        .map_err(|e| DirtyError::Usage(format!("{spec}: {e}")))?;
    let dev =
        SimDevice::open(spec, &parsed, &DriverOptions::default()).map_err(DirtyError::Device)?;
    let mut log = dev.dirty_log();
    {
        let fw = log.firmware();
        let mut fw = fw.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let log_msg = args.msg_size.trailing_zeros() as u8;
        fw.tracker_mut().set_config(TrackerConfig {
            max_num_range: args.device_ranges,
            log_min_msg: log_msg,
            log_max_msg: log_msg,
            ..TrackerConfig::DEFAULT
        });
        fw.tracker_mut().seed(args.seed);
    }
    let tracked = log
        .start(&ranges, args.page_size)
        .map_err(DirtyError::Device)?;
    let plan = log.tracker().plan().cloned();
    let mut summary = DirtySummary {
        ranges: ranges.len(),
        tracked_ranges: plan.as_ref().map_or(0, |p| p.ranges().len()),
        tracked_page_size: tracked,
        msg_size: plan.as_ref().map_or(0, |p| p.msg_size()),
        dirty_pages_per_sec: args.dirty_rate,
        ..DirtySummary::default()
    };
    if !args.json {
        writeln!(
            out,
            "dirty: {} ranges tracked as {}, page size {} (asked {}), messages of {} bytes, \
             guest memory {} MiB",
            summary.ranges,
            summary.tracked_ranges,
            tracked,
            args.page_size,
            summary.msg_size,
            (u64::from(MAX_GUEST_PAGES) * 4096) >> 20
        )
        .map_err(DirtyError::Output)?;
    }
    let per_round = (args.dirty_rate as f64 * args.interval.as_secs_f64()).round() as u64;
    let mut missed_total = 0u64;
    for n in 1..=args.rounds {
        let started = Instant::now();
        let round = one_round(&mut log, &ranges, args, per_round)?;
        missed_total += round.missed.unwrap_or(0);
        if !args.json {
            writeln!(
                out,
                "round {n}: guest wrote {} pages, reported {} pages ({} bitmap bits) in {} \
                 messages, {:.3} ms{}",
                round.guest_writes,
                round.reported_pages,
                round.bitmap_pages,
                round.messages,
                round.report_seconds * 1e3,
                round
                    .missed
                    .map_or(String::new(), |m| format!(", missed {m}")),
            )
            .map_err(DirtyError::Output)?;
        }
        summary.rounds.push(round);
        if let Some(left) = args.interval.checked_sub(started.elapsed()) {
            std::thread::sleep(left);
        }
    }
    log.stop().map_err(DirtyError::Device)?;
    let (pages, secs) = summary.rounds.iter().fold((0u64, 0f64), |(p, s), r| {
        (p + r.reported_pages, s + r.report_seconds)
    });
    summary.report_pages_per_sec = if secs > 0.0 { pages as f64 / secs } else { 0.0 };
    summary.verified = args.verify.then_some(missed_total == 0);
    if args.json {
        json::write_line(out, &Document::new("dirty", &summary)).map_err(DirtyError::Output)?;
    } else {
        writeln!(
            out,
            "dirty: reported {pages} pages at {:.0} pages/s of report time; guest dirty rate \
             {} pages/s{}",
            summary.report_pages_per_sec,
            args.dirty_rate,
            match summary.verified {
                Some(true) => ", verified: no page missed",
                Some(false) => ", verified: PAGES MISSED",
                None => "",
            }
        )
        .map_err(DirtyError::Output)?;
    }
    if missed_total > 0 {
        return Err(DirtyError::Missed(missed_total));
    }
    Ok(())
}

/// Lets the guest write, then reads and clears every range.
fn one_round(
    log: &mut DirtyLog,
    ranges: &[IovaRange],
    args: &DirtyArgs,
    writes: u64,
) -> Result<Round, DirtyError> {
    let fw = log.firmware();
    fw.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .tracker_mut()
        .guest_dma(writes);
    let mut round = Round {
        guest_writes: writes,
        ..Round::default()
    };
    let mut missed = 0u64;
    for r in ranges {
        let pages = r.length.div_ceil(args.page_size);
        let words = usize::try_from(pages.div_ceil(64)).map_err(|_| {
            DirtyError::Usage(format!("range {:#x}+{:#x} is too long", r.iova, r.length))
        })?;
        let mut bitmap = vec![0u64; words];
        let t = Instant::now();
        let s = log
            .read_and_clear(r.iova, r.length, args.page_size, &mut bitmap)
            .map_err(DirtyError::Device)?;
        round.report_seconds += t.elapsed().as_secs_f64();
        round.reported_pages += s.pages;
        round.messages += u64::from(s.messages);
        round.bitmap_pages += bitmap
            .iter()
            .map(|w| u64::from(w.count_ones()))
            .sum::<u64>();
        if args.verify {
            let fw = fw.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            // This range only: the bitmap's window may reach past it.
            missed += fw
                .tracker()
                .missed(&[(r.iova, r.length)], r.iova, args.page_size, &bitmap);
        }
    }
    fw.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .tracker_mut()
        .clear_written();
    round.missed = args.verify.then_some(missed);
    Ok(round)
}
