//! `mlx5vf dirty`: device dirty-page tracking (VFIO DMA logging, the
//! kernel's `vfio_log_ops`) on a simulated VF or on any VFIO device: start
//! logging over the given ranges, then per round let the guest write, read
//! and clear each range into an `iova_bitmap`, and (with `--verify`) compare
//! each bitmap with the guest's ground truth: the simulated guest's, or the
//! one our kernel module's simulated VFs publish in debugfs (`--guest`).

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use clap::Args;
use mlx5vf_core::tracker::IovaRange;
use mlx5vf_sim::firmware::Firmware;
use mlx5vf_sim::tracker::{GUEST_PAGE, MAX_GUEST_PAGES, TrackerConfig};
use serde::Serialize;

use super::device::{parse_duration, parse_size};
use super::json::{self, Document};
use super::{EXIT_FAILURE, EXIT_USAGE};
use crate::backend::{self, DriverOptions, MigrationDevice};
use crate::dma_logging::{DmaLogging, bitmap_words, start_problem};
use crate::sim::SimDevice;
use crate::vfio::errno_name;

/// Long help of `mlx5vf dirty`.
pub const LONG_ABOUT: &str = "Device dirty-page tracking, as a VMM drives it with \
    VFIO_DEVICE_FEATURE_DMA_LOGGING_START/REPORT/STOP (the kernel's vfio_log_ops): logging \
    starts over the --range list (the device may combine ranges to its limit and clamp the page \
    size; both are printed), then each round the guest's device writes --dirty-rate pages per \
    second of --interval, inside and outside the ranges, and every range is read and cleared \
    into a bitmap of the tracked page size. Prints per round the pages written and reported and \
    the time the reports took, then the report throughput against the dirty rate.\n\n\
    On a simulated VF (sim:...) the guest is simulated in-process: guest memory is the first \
    128 MiB of IOVA (ranges beyond it are tracked but never written), and --device-ranges and \
    --msg-size set its tracker. On a VFIO device (vfio-mig:... or vfio-fd:...) the guest is \
    whoever runs on the device; with --guest DIR the guest is the simulated one of our kernel \
    module, driven and read through DIR (/sys/kernel/debug/mlx5vf_sim/<device>: guest_dma, \
    guest_truth, guest_pages).\n\n\
    With --verify (a simulated guest, in-process or --guest), every page the guest wrote \
    inside a range must be marked in that round's bitmap; a miss exits 1. A device that offers \
    no DMA logging (PROBE answers ENOTTY) exits 1 and says so.";

/// Arguments of `mlx5vf dirty`.
#[derive(Clone, Debug, Args)]
pub struct DirtyArgs {
    /// The device (`sim[:key=value,...]`, `vfio-mig:...` or `vfio-fd:...`).
    #[arg(long, value_name = "SPEC", default_value = "sim")]
    pub device: String,
    /// A range to track, `IOVA:LEN` (IOVA decimal or 0x-hex, LEN a size
    /// like 64M); repeat for more. Sorted, not overlapping.
    #[arg(long = "range", value_name = "IOVA:LEN", value_parser = parse_range, required = true)]
    pub ranges: Vec<IovaRange>,
    /// The page size asked for (the device may clamp it); reports use the
    /// size the device chose.
    #[arg(long, value_name = "SIZE", default_value = "4096", value_parser = parse_size)]
    pub page_size: u64,
    /// Time between reports.
    #[arg(long, value_name = "DUR", default_value = "100ms", value_parser = parse_duration)]
    pub interval: Duration,
    /// Reports to take.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub rounds: u32,
    /// Guest pages (4 KiB) the simulated guest's device writes per second.
    #[arg(long, value_name = "PAGES", default_value_t = 20_000)]
    pub dirty_rate: u64,
    /// The simulated tracker's range limit (`pg_track_max_num_range`; sim only).
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub device_ranges: u8,
    /// The simulated tracker's report message size (a power of two, 64 B..2 MiB;
    /// sim only).
    #[arg(long, value_name = "SIZE", default_value = "4K", value_parser = parse_size)]
    pub msg_size: u64,
    /// Seed of the guest's write pattern.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The debugfs directory of a kernel-simulated guest on a VFIO device
    /// (`/sys/kernel/debug/mlx5vf_sim/<device>`): the tool makes it write
    /// and reads its ground truth.
    #[arg(long, value_name = "DIR")]
    pub guest: Option<PathBuf>,
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
    /// Bad arguments, or arguments that do not fit the device.
    Usage(String),
    /// The device, its driver or the guest's debugfs failed.
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
    /// Guest page writes this round (4 KiB; some land on the same page),
    /// when the guest is simulated.
    pub guest_writes: Option<u64>,
    /// Tracked pages the firmware's reports named (when the driver runs here).
    pub reported_pages: Option<u64>,
    /// Bitmap bits set.
    pub bitmap_pages: u64,
    /// Report messages (when the driver runs here).
    pub messages: Option<u64>,
    /// Time spent in the reports, seconds.
    pub report_seconds: f64,
    /// Written pages inside the ranges whose bit was clear (with `--verify`).
    pub missed: Option<u64>,
}

/// What `mlx5vf dirty` measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DirtySummary {
    /// Ranges given.
    pub ranges: usize,
    /// Ranges the tracker holds after combining (when the driver runs here).
    pub tracked_ranges: Option<usize>,
    /// Page size the device tracks (what START wrote back).
    pub tracked_page_size: u64,
    /// Report message size (when the driver runs here).
    pub msg_size: Option<u32>,
    /// Per round.
    pub rounds: Vec<Round>,
    /// Bitmap pages reported per second of report time.
    pub report_pages_per_sec: f64,
    /// Guest page writes per second asked for (a simulated guest).
    pub dirty_pages_per_sec: Option<u64>,
    /// Whether every round was verified without a miss.
    pub verified: Option<bool>,
}

/// A simulated guest: it writes guest memory through the device on
/// request and keeps the ground truth of what it wrote.
trait Guest {
    /// The guest's device writes `pages` PRNG-chosen guest pages.
    fn dma(&mut self, pages: u64, seed: u64) -> io::Result<()>;
    /// Takes and clears the ground truth: bit `p` (word `p / 64`, bit
    /// `p % 64`) is guest page `p` (4 KiB), written since the last take.
    fn take_truth(&mut self) -> io::Result<Vec<u64>>;
}

/// The in-process simulated guest of a `sim:` device.
struct SimGuest {
    fw: Arc<Mutex<Firmware>>,
}

impl Guest for SimGuest {
    fn dma(&mut self, pages: u64, seed: u64) -> io::Result<()> {
        let mut fw = self.fw.lock().unwrap_or_else(PoisonError::into_inner);
        fw.tracker_mut().seed(seed);
        fw.tracker_mut().guest_dma(pages);
        Ok(())
    }

    fn take_truth(&mut self) -> io::Result<Vec<u64>> {
        let mut fw = self.fw.lock().unwrap_or_else(PoisonError::into_inner);
        let truth = fw.tracker().written().words().to_vec();
        fw.tracker_mut().clear_written();
        Ok(truth)
    }
}

/// The simulated guest of our kernel module's VF, through its debugfs
/// directory: `guest_dma` takes `"PAGES SEED\n"`; each open of
/// `guest_truth` takes and clears the ground truth, read as little-endian
/// u64 words; `guest_pages` says how many guest pages there are.
struct DebugfsGuest {
    dir: PathBuf,
    words: usize,
}

impl DebugfsGuest {
    fn open(dir: &Path) -> io::Result<Self> {
        let file = dir.join("guest_pages");
        let text = fs::read_to_string(&file).map_err(|e| with_path(&file, e))?;
        let pages: u64 = text.trim().parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {text:?} is not a page count", file.display()),
            )
        })?;
        let words = usize::try_from(pages.div_ceil(64))
            .ok()
            .filter(|&w| w > 0 && w <= 1 << 20)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {pages} guest pages is out of range", file.display()),
                )
            })?;
        Ok(Self {
            dir: dir.to_owned(),
            words,
        })
    }
}

fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

impl Guest for DebugfsGuest {
    fn dma(&mut self, pages: u64, seed: u64) -> io::Result<()> {
        let file = self.dir.join("guest_dma");
        fs::write(&file, format!("{pages} {seed}\n")).map_err(|e| with_path(&file, e))
    }

    fn take_truth(&mut self) -> io::Result<Vec<u64>> {
        let file = self.dir.join("guest_truth");
        let bytes = fs::read(&file).map_err(|e| with_path(&file, e))?;
        if bytes.len() != self.words * 8 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: {} bytes, expected {} (guest_pages)",
                    file.display(),
                    bytes.len(),
                    self.words * 8
                ),
            ));
        }
        Ok(bytes
            .chunks_exact(8)
            .map(|w| u64::from_le_bytes(w.try_into().unwrap_or_default()))
            .collect())
    }
}

/// Pages of `truth` (guest pages written) inside `range` whose bit in
/// `bitmap` (bit `i` = page `range.iova + i * page_size`) is clear.
fn missed_pages(truth: &[u64], range: &IovaRange, page_size: u64, bitmap: &[u64]) -> u64 {
    let mut missed = 0;
    for (w, &word) in truth.iter().enumerate() {
        let mut bits = word;
        while bits != 0 {
            let page = w as u64 * 64 + u64::from(bits.trailing_zeros());
            bits &= bits - 1;
            let addr = page * GUEST_PAGE;
            if addr < range.iova || addr - range.iova >= range.length {
                continue;
            }
            let bit = (addr - range.iova) / page_size;
            let set = usize::try_from(bit / 64)
                .ok()
                .and_then(|i| bitmap.get(i))
                .is_some_and(|w| w >> (bit % 64) & 1 == 1);
            if !set {
                missed += 1;
            }
        }
    }
    missed
}

/// A device and, when simulated, its guest.
type DeviceAndGuest = (Box<dyn MigrationDevice>, Option<Box<dyn Guest>>);

/// The device and, when simulated, its guest.
fn open(args: &DirtyArgs) -> Result<DeviceAndGuest, DirtyError> {
    let spec = if args.device.is_empty() {
        "sim"
    } else {
        &args.device
    };
    if spec == "sim" || spec.starts_with("sim:") {
        if args.guest.is_some() {
            return Err(DirtyError::Usage(
                "--guest names a kernel module's guest; a sim device's guest is in-process".into(),
            ));
        }
        let parsed = spec
            .parse()
            .map_err(|e| DirtyError::Usage(format!("{spec}: {e}")))?;
        let dev = SimDevice::open(spec, &parsed, &DriverOptions::default())
            .map_err(DirtyError::Device)?;
        let fw = dev.firmware();
        {
            let mut fw = fw.lock().unwrap_or_else(PoisonError::into_inner);
            // CAST: msg_size is a power of two up to 2 MiB (checked).
            let log_msg = args.msg_size.trailing_zeros() as u8;
            fw.tracker_mut().set_config(TrackerConfig {
                max_num_range: args.device_ranges,
                log_min_msg: log_msg,
                log_max_msg: log_msg,
                ..TrackerConfig::DEFAULT
            });
        }
        return Ok((Box::new(dev), Some(Box::new(SimGuest { fw }))));
    }
    if !spec.starts_with("vfio-") {
        return Err(DirtyError::Usage(format!(
            "{spec:?}: dirty tracking runs on sim, vfio-mig and vfio-fd devices"
        )));
    }
    let guest = match &args.guest {
        Some(dir) => Some(Box::new(DebugfsGuest::open(dir).map_err(DirtyError::Device)?) as _),
        None if args.verify => {
            return Err(DirtyError::Usage(
                "--verify on a VFIO device needs --guest DIR (a simulated guest's ground truth)"
                    .into(),
            ));
        }
        None => None,
    };
    let dev = backend::open(spec, &DriverOptions::default())
        .map_err(|e| DirtyError::Device(io::Error::other(e.to_string())))?;
    Ok((dev, guest))
}

/// Runs `mlx5vf dirty`.
///
/// # Errors
/// [`DirtyError`].
pub fn run(args: &DirtyArgs, out: &mut dyn Write) -> Result<(), DirtyError> {
    if !args.msg_size.is_power_of_two() || !(64..=2 << 20).contains(&args.msg_size) {
        return Err(DirtyError::Usage(format!(
            "--msg-size {} is not a power of two from 64 to 2M",
            args.msg_size
        )));
    }
    if !args.page_size.is_power_of_two() {
        return Err(DirtyError::Usage(format!(
            "--page-size {} is not a power of two (the driver refuses it, EINVAL)",
            args.page_size
        )));
    }
    // The VFIO core's START rules, said here with the range that breaks
    // one (the core itself answers only an errno).
    if let Some((errno, problem)) = start_problem(&args.ranges, args.page_size) {
        return Err(DirtyError::Usage(format!(
            "{problem}: the VFIO core refuses such a DMA_LOGGING_START ({})",
            errno_name(errno).unwrap_or("an error")
        )));
    }
    let (mut dev, mut guest) = open(args)?;
    let log = dev.dma_logging().map_err(DirtyError::Device)?;
    let tracked = log
        .start(&args.ranges, args.page_size)
        .map_err(DirtyError::Device)?;
    let result = rounds(log, &mut guest, args, tracked, out);
    let stopped = log.stop().map_err(DirtyError::Device);
    let summary = result?;
    stopped?;
    let missed: u64 = summary.rounds.iter().filter_map(|r| r.missed).sum();
    if args.json {
        json::write_line(out, &Document::new("dirty", &summary)).map_err(DirtyError::Output)?;
    } else {
        let pages: u64 = summary.rounds.iter().map(|r| r.bitmap_pages).sum();
        writeln!(
            out,
            "dirty: reported {pages} pages at {:.0} pages/s of report time{}{}",
            summary.report_pages_per_sec,
            summary
                .dirty_pages_per_sec
                .map_or(String::new(), |r| format!("; guest dirty rate {r} pages/s")),
            match summary.verified {
                Some(true) => ", verified: no page missed",
                Some(false) => ", verified: PAGES MISSED",
                None => "",
            }
        )
        .map_err(DirtyError::Output)?;
    }
    if missed > 0 {
        return Err(DirtyError::Missed(missed));
    }
    Ok(())
}

/// START has succeeded: the rounds, and the summary of them.
fn rounds(
    log: &mut dyn DmaLogging,
    guest: &mut Option<Box<dyn Guest>>,
    args: &DirtyArgs,
    tracked: u64,
    out: &mut dyn Write,
) -> Result<DirtySummary, DirtyError> {
    let plan = log.device_plan();
    let mut summary = DirtySummary {
        ranges: args.ranges.len(),
        tracked_ranges: plan.map(|p| p.ranges),
        tracked_page_size: tracked,
        msg_size: plan.map(|p| p.msg_size),
        dirty_pages_per_sec: guest.is_some().then_some(args.dirty_rate),
        ..DirtySummary::default()
    };
    if !args.json {
        writeln!(
            out,
            "dirty: {} ranges{}, page size {} (asked {}){}",
            summary.ranges,
            plan.map_or(String::new(), |p| format!(" tracked as {}", p.ranges)),
            tracked,
            args.page_size,
            plan.map_or(String::new(), |p| format!(
                ", messages of {} bytes, guest memory {} MiB",
                p.msg_size,
                (u64::from(MAX_GUEST_PAGES) * GUEST_PAGE) >> 20
            )),
        )
        .map_err(DirtyError::Output)?;
    }
    // Writes before START are not the tracker's business.
    if let Some(g) = guest {
        g.take_truth().map_err(DirtyError::Device)?;
    }
    let per_round = (args.dirty_rate as f64 * args.interval.as_secs_f64()).round() as u64;
    let mut report_secs = 0f64;
    for n in 1..=args.rounds {
        let started = Instant::now();
        let round = one_round(log, guest, args, tracked, per_round, n)?;
        report_secs += round.report_seconds;
        if !args.json {
            writeln!(
                out,
                "round {n}: {}{} bitmap pages{}, {:.3} ms{}",
                round
                    .guest_writes
                    .map_or(String::new(), |w| format!("guest wrote {w} pages, ")),
                round.bitmap_pages,
                match (round.reported_pages, round.messages) {
                    (Some(p), Some(m)) => format!(" ({p} pages reported in {m} messages)"),
                    _ => String::new(),
                },
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
    let pages: u64 = summary.rounds.iter().map(|r| r.bitmap_pages).sum();
    summary.report_pages_per_sec = if report_secs > 0.0 {
        pages as f64 / report_secs
    } else {
        0.0
    };
    summary.verified = args
        .verify
        .then(|| summary.rounds.iter().all(|r| r.missed == Some(0)));
    Ok(summary)
}

/// Lets the guest write, then reads and clears every range in the page
/// size the device tracks.
fn one_round(
    log: &mut dyn DmaLogging,
    guest: &mut Option<Box<dyn Guest>>,
    args: &DirtyArgs,
    page_size: u64,
    writes: u64,
    n: u32,
) -> Result<Round, DirtyError> {
    let mut round = Round::default();
    if let Some(g) = guest.as_mut() {
        g.dma(writes, args.seed.wrapping_add(u64::from(n)))
            .map_err(DirtyError::Device)?;
        round.guest_writes = Some(writes);
    }
    let mut bitmaps = Vec::with_capacity(args.ranges.len());
    for r in &args.ranges {
        let words = bitmap_words(r.length, page_size).ok_or_else(|| {
            DirtyError::Usage(format!("range {:#x}+{:#x} is too long", r.iova, r.length))
        })?;
        let mut bitmap = vec![0u64; words];
        let t = Instant::now();
        let figures = log
            .report(r.iova, r.length, page_size, &mut bitmap)
            .map_err(DirtyError::Device)?;
        round.report_seconds += t.elapsed().as_secs_f64();
        if let Some(f) = figures {
            *round.reported_pages.get_or_insert(0) += f.pages;
            *round.messages.get_or_insert(0) += f.messages;
        }
        round.bitmap_pages += bitmap
            .iter()
            .map(|w| u64::from(w.count_ones()))
            .sum::<u64>();
        bitmaps.push(bitmap);
    }
    if let Some(g) = guest {
        let truth = g.take_truth().map_err(DirtyError::Device)?;
        if args.verify {
            round.missed = Some(
                args.ranges
                    .iter()
                    .zip(&bitmaps)
                    .map(|(r, b)| missed_pages(&truth, r, page_size, b))
                    .sum(),
            );
        }
    }
    Ok(round)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_page_without_its_bit_is_a_miss() {
        // Guest pages 1, 2 and 70 written.
        let truth = [0b110u64, 1 << 6];
        let range = IovaRange {
            iova: 0x1000,
            length: 0x100_0000,
        };
        // Pages 1 and 2 are bits 0 and 1 of a 4 KiB bitmap at 0x1000.
        let mut bitmap = vec![0u64; 64];
        bitmap[0] = 0b11;
        assert_eq!(missed_pages(&truth, &range, 4096, &bitmap), 1);
        bitmap[1] |= 1 << 5; // page 70 = bit 69
        assert_eq!(missed_pages(&truth, &range, 4096, &bitmap), 0);
        // In 2 MiB pages all three are bit 0.
        assert_eq!(missed_pages(&truth, &range, 2 << 20, &[1]), 0);
        assert_eq!(missed_pages(&truth, &range, 2 << 20, &[0]), 3);
        // Outside the range nothing counts.
        let far = IovaRange {
            iova: 0x100_0000,
            length: 0x1000,
        };
        assert_eq!(missed_pages(&truth, &far, 4096, &[0]), 0);
    }

    #[test]
    fn a_debugfs_guest_is_driven_and_read_through_its_files() {
        let dir = std::env::temp_dir().join(format!("mlx5vf-guest-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("guest_pages"), "128\n").unwrap();
        let mut guest = DebugfsGuest::open(&dir).unwrap();
        guest.dma(40, 9).unwrap();
        assert_eq!(fs::read_to_string(dir.join("guest_dma")).unwrap(), "40 9\n");
        let mut truth = vec![0u8; 16];
        truth[0] = 0b101;
        truth[15] = 0x80;
        fs::write(dir.join("guest_truth"), &truth).unwrap();
        assert_eq!(guest.take_truth().unwrap(), vec![0b101, 1 << 63]);
        // A file of the wrong size is refused, by name.
        fs::write(dir.join("guest_truth"), [0u8; 8]).unwrap();
        let e = guest.take_truth().unwrap_err().to_string();
        assert!(e.contains("guest_truth: 8 bytes, expected 16"), "{e}");
        fs::write(dir.join("guest_pages"), "lots\n").unwrap();
        assert!(DebugfsGuest::open(&dir).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
