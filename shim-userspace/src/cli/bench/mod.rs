//! `mlx5vf bench`: the figures of the benchmarks, each against a reference
//! measured in the same run.
//!
//! 1. **Pipeline vs memcpy**: stop-copy bytes/s of a chunk-mode save read to
//!    a sink (zero-copy from the DMA buffers), against single-thread memcpy
//!    of the same amount.
//! 2. **Policies**: downtime and peak buffer memory of the stop-copy phase
//!    for the Linux policy (2 slots × 8 MiB), legacy mode and other slot /
//!    size settings, under the simulated firmware's timing model.
//! 3. **Scaling**: peak RSS and throughput of `migrate` for 1 GiB and 16 GiB
//!    (separate processes, so RSS is each run's own).
//! 4. **Resume**: bytes/s of parsing, copying and LOAD on the destination,
//!    against memcpy of the same bytes.
//! 5. **Downtime**: `migrate --precopy` under the timing model, for several
//!    state sizes and dirty rates: the Linux-faithful driver (2 × 8 MiB,
//!    Linux PRE_COPY accounting, synchronous LOAD, no records of ours)
//!    against ours, with the model's lower bound (what was dirtied since the
//!    last round plus one chunk, at the firmware rate).
//! 6. **Overhead** and **resume overhead** (`driver.rs`): `migrate`, and the
//!    destination path alone, with instant firmware and no content, against
//!    the same bytes through the same pipe by plain writes and reads.
//! 7. **Per chunk** (`driver.rs`): the core's bookkeeping per chunk and per
//!    image, against a memcpy of the chunk.
//! 8. **TLS** (`tls.rs`): `save | load` of one state over loopback TLS
//!    against plain TCP and the in-process pipe, with the negotiated cipher
//!    suite and whether the CPU has AES instructions.
//! 9. **Command queue** (`cmdq.rs`): commands per second through a PF's
//!    command queue over the register-level model, against direct calls
//!    into the same firmware model; bring-up and teardown times.

use std::io::{self, Cursor, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Deserialize;

mod cmdq;
mod driver;
#[cfg(feature = "tls")]
mod tls;

use super::device::{Summary, Value, human_bytes, parse_size, rate};
use super::guest_dirty::{GuestDirty, WithGuest};
use crate::backend::{self, DriverOptions};
use crate::pipe::pipe;
use crate::transfer::{self, Quiet, SaveOptions};
use mlx5vf_core::save::ChunkPolicy;

/// Arguments of `mlx5vf bench`.
#[derive(Clone, Debug, Args)]
pub struct BenchArgs {
    /// State size of the pipeline benchmark.
    #[arg(long, value_name = "SIZE", default_value = "4G", value_parser = parse_size)]
    pub pipeline_size: u64,
    /// State size of the policy benchmark.
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = parse_size)]
    pub policy_size: u64,
    /// Firmware rate of the policy benchmark's timing model.
    #[arg(long, value_name = "SIZE/s", default_value = "4G")]
    pub fw_rate: String,
    /// Per-command firmware latency of the downtime benchmark's timing
    /// model.
    #[arg(long, value_name = "DURATION", default_value = "50us")]
    pub latency: String,
    /// Per-command firmware latencies of the policy benchmark (comma
    /// separated): the measured policy's chunk size follows them.
    #[arg(long, value_name = "DURATIONS", default_value = "50us,1ms")]
    pub policy_latencies: String,
    /// State sizes of the scaling benchmark (comma separated; the first is
    /// the base of the ratios).
    #[arg(long, value_name = "SIZES", default_value = "1G,16G,64G")]
    pub scaling_sizes: String,
    /// State size of the overhead and resume_overhead benchmarks.
    #[arg(long, value_name = "SIZE", default_value = "4G", value_parser = parse_size)]
    pub overhead_size: u64,
    /// Stream size of the resume benchmark.
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = parse_size)]
    pub resume_size: u64,
    /// State sizes of the downtime benchmark (comma separated).
    #[arg(long, value_name = "SIZES", default_value = "1G,4G,8G")]
    pub downtime_sizes: String,
    /// Dirty rates of the downtime benchmark: bytes of objects the workload
    /// dirties per firmware command (comma separated).
    #[arg(long, value_name = "SIZES", default_value = "256K,2M")]
    pub dirty_rates: String,
    /// Guest pages (4 KiB) per second the source's guest writes by device
    /// DMA in the downtime benchmark (0: no guest). Logging tracks them;
    /// each PRE_COPY round and the stop read and clear the log, the stop's
    /// read inside the downtime, as a VMM's last sync.
    #[arg(long, value_name = "PAGES", default_value_t = 0)]
    pub guest_dirty: u64,
    /// The VMM's downtime budget in the downtime benchmark.
    #[arg(long, value_name = "DURATION", default_value = "300ms", value_parser = super::device::parse_duration)]
    pub downtime_limit: Duration,
    /// State size of the TLS benchmark (`save | load` over a pipe, loopback
    /// TCP and loopback TLS).
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = parse_size)]
    pub tls_size: u64,
    /// The device of the cmdq benchmark: a register-level model in this
    /// process (`sim:…,transport=cmdq`) or a PF through VFIO (`vfio-pf:…`).
    #[arg(long, value_name = "SPEC", default_value = cmdq::SPEC)]
    pub cmdq_device: String,
    /// Only these benchmarks (comma list of pipeline, policies, scaling,
    /// resume, downtime, overhead, resume_overhead, per_chunk, tls, cmdq).
    #[arg(
        long,
        value_name = "LIST",
        default_value = "pipeline,policies,scaling,resume,downtime,overhead,resume_overhead,per_chunk,tls,cmdq"
    )]
    pub only: String,
    /// Print each result as one JSON document per line on stdout (JSON
    /// Lines: a document per benchmark case, as each finishes).
    #[arg(long)]
    pub json: bool,
    /// Also draw the downtime benchmark's table into this SVG file: per
    /// case, the Linux-faithful driver, ours and the model's lower bound.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<std::path::PathBuf>,
}

/// Single-thread memcpy bytes/s over `total` bytes (64 MiB blocks, out of cache).
pub fn memcpy_rate(total: u64) -> f64 {
    const BLOCK: usize = 64 << 20;
    let src = vec![0x5au8; BLOCK];
    let mut dst = vec![0u8; BLOCK];
    // Touch both so page faults are not measured.
    dst.copy_from_slice(&src);
    let mut done = 0u64;
    let start = Instant::now();
    while done < total {
        let n = usize::try_from(total - done).unwrap_or(BLOCK).min(BLOCK);
        dst.get_mut(..n)
            .unwrap_or_default()
            .copy_from_slice(src.get(..n).unwrap_or_default());
        std::hint::black_box(&mut dst);
        done += n as u64;
    }
    rate(total, start.elapsed())
}

fn open(spec: &str, opts: &DriverOptions) -> io::Result<Box<dyn backend::MigrationDevice>> {
    backend::open(spec, opts).map_err(|e| io::Error::other(e.to_string()))
}

/// A result of `benchmark`, to which its figures are added.
pub(super) fn result_of(benchmark: &str) -> Summary {
    let mut s = Summary::default();
    s.add("command", Value::Text("bench".into()))
        .add("benchmark", Value::Text(benchmark.into()));
    s
}

pub(super) fn emit(json: bool, s: &Summary, out: &mut dyn Write) -> io::Result<()> {
    if json {
        super::json::write_line(out, s)
    } else {
        write!(out, "{}", s.to_text())?;
        writeln!(out)
    }
}

fn pipeline(args: &BenchArgs, out: &mut dyn Write) -> io::Result<()> {
    let spec = format!(
        "sim:state={}",
        super::device::human_size(args.pipeline_size)
    );
    let mut dev = open(&spec, &DriverOptions::default())?;
    let r = transfer::save(
        dev.as_mut(),
        &mut io::sink(),
        &SaveOptions::default(),
        &Quiet,
    )
    .map_err(|e| io::Error::other(e.to_string()))?;
    let pipe_rate = rate(r.bytes, r.stop_copy_time);
    let mem = memcpy_rate(r.bytes);
    let mut s = result_of("pipeline");
    s.add("device", Value::Text(spec))
        .add("stream_bytes", Value::Int(r.bytes))
        .add(
            "stop_copy_seconds",
            Value::Float(r.stop_copy_time.as_secs_f64()),
        )
        .add("stop_copy_bytes_per_sec", Value::Float(pipe_rate))
        .add("memcpy_bytes_per_sec", Value::Float(mem))
        .add("ratio_to_memcpy", Value::Float(pipe_rate / mem))
        .add(
            "peak_buffer_bytes",
            Value::Int(dev.stats().peak_buffer_bytes),
        );
    emit(args.json, &s, out)
}

/// What one in-process migration measured.
struct Migrated {
    /// From the first byte saved to the destination running again.
    elapsed: Duration,
    downtime: Duration,
    source_peak_buffer_bytes: u64,
    /// The source's chunk size at the end (tuned, or as configured).
    chunk_size: u64,
    report: transfer::SaveReport,
    /// The source's guest, when it had one.
    guest: Option<std::sync::Arc<GuestDirty>>,
}

/// One in-process migration with these save options.
fn migrate_with(
    from: &str,
    to: &str,
    opts: &DriverOptions,
    save_opts: &SaveOptions,
) -> io::Result<Migrated> {
    migrate_with_guest(from, to, opts, save_opts, 0)
}

/// As [`migrate_with`], with a guest writing `guest_dirty` pages per
/// second on the source (none when 0).
fn migrate_with_guest(
    from: &str,
    to: &str,
    opts: &DriverOptions,
    save_opts: &SaveOptions,
    guest_dirty: u64,
) -> io::Result<Migrated> {
    let (mut src, guest) = if guest_dirty > 0 {
        let (dev, guest) = GuestDirty::open(from, opts, guest_dirty)
            .map_err(|e| io::Error::other(e.to_string()))?;
        (dev, Some(std::sync::Arc::new(guest)))
    } else {
        (open(from, opts)?, None)
    };
    let mut dst = open(to, opts)?;
    let (mut w, mut r) = pipe(1 << 20, 4);
    let start = Instant::now();
    let with_guest = guest.as_ref().map(|g| WithGuest {
        inner: &Quiet,
        guest: std::sync::Arc::clone(g),
    });
    let observer: &dyn transfer::Observer = match &with_guest {
        Some(w) => w,
        None => &Quiet,
    };
    let (saved, loaded) = std::thread::scope(|scope| {
        let h = scope.spawn(|| {
            let rep = transfer::save(src.as_mut(), &mut w, save_opts, observer);
            drop(w);
            rep
        });
        let loaded = transfer::load(dst.as_mut(), &mut r, &Quiet);
        drop(r);
        (h.join(), loaded)
    });
    let elapsed = start.elapsed();
    let saved = saved
        .map_err(|_| io::Error::other("saving thread panicked"))?
        .map_err(|e| io::Error::other(e.to_string()))?;
    let loaded = loaded.map_err(|e| io::Error::other(e.to_string()))?;
    if src.digest() != dst.digest() {
        return Err(io::Error::other("digests differ"));
    }
    let downtime = match (saved.stopped_at, loaded.running_at) {
        (Some(a), Some(b)) => b.saturating_duration_since(a),
        _ => Duration::ZERO,
    };
    let stats = src.stats();
    Ok(Migrated {
        elapsed,
        downtime,
        source_peak_buffer_bytes: stats.peak_buffer_bytes,
        chunk_size: stats.chunk_size.unwrap_or(0),
        report: saved,
        guest,
    })
}

fn downtime(args: &BenchArgs, out: &mut dyn Write) -> io::Result<()> {
    let fw_text = args.fw_rate.trim_end_matches("/s");
    let fw_rate = super::device::parse_size(fw_text).map_err(io::Error::other)?;
    let timing = format!("fw-rate={fw_text}/s,latency={}", args.latency);
    let to = format!("sim:state=4M,seed=99,{timing}");
    let save_opts = SaveOptions {
        precopy: true,
        downtime_limit: args.downtime_limit,
        ..SaveOptions::default()
    };
    let linux = DriverOptions {
        integrity: false,
        linux_precopy: true,
        sync_load: true,
        chunk_policy: ChunkPolicy::Fixed,
        ..DriverOptions::default()
    };
    let ours = DriverOptions::default();
    let mut cases = Vec::new();
    for size in args.downtime_sizes.split(',').filter(|s| !s.is_empty()) {
        for dirty in args.dirty_rates.split(',').filter(|s| !s.is_empty()) {
            let from = format!("sim:state={size},object=256K-2M,dirty={dirty},{timing}");
            let base = migrate_with_guest(&from, &to, &linux, &save_opts, args.guest_dirty)?;
            let m = migrate_with_guest(&from, &to, &ours, &save_opts, args.guest_dirty)?;
            // The model's floor: what was dirtied since the last round (the
            // last precopy-info's dirty bytes) plus one chunk (the one the
            // policy ended with), at the firmware rate.
            let dirty_at_stop = m.report.last_precopy_info.map_or(0, |(i, d)| i + d);
            let floor = (dirty_at_stop + m.chunk_size) as f64 / fw_rate as f64;
            let secs = m.downtime.as_secs_f64();
            let linux_secs = base.downtime.as_secs_f64();
            cases.push(super::plot::DowntimeCase {
                label: format!("{size}, dirty {dirty}"),
                linux: linux_secs,
                ours: secs,
                limit: floor,
            });
            let mut s = result_of("downtime");
            s.add("state", Value::Text(size.into()))
                .add("dirty", Value::Text(dirty.into()))
                .add("device", Value::Text(from.clone()))
                .add("linux_downtime_seconds", Value::Float(linux_secs))
                .add("downtime_seconds", Value::Float(secs))
                .add("ratio_to_linux", Value::Float(secs / linux_secs.max(1e-9)))
                .add("limit_seconds", Value::Float(floor))
                .add("ratio_to_limit", Value::Float(secs / floor.max(1e-9)))
                .add(
                    "linux_stop_copy_bytes",
                    Value::Int(base.report.bytes - base.report.precopy_bytes),
                )
                .add(
                    "stop_copy_bytes",
                    Value::Int(m.report.bytes - m.report.precopy_bytes),
                )
                .add(
                    "precopy_rounds",
                    Value::Int(u64::from(m.report.precopy_rounds)),
                )
                .add("precopy_bytes", Value::Int(m.report.precopy_bytes))
                .add(
                    "source_peak_buffer_bytes",
                    Value::Int(m.source_peak_buffer_bytes),
                )
                .add("chunk_size", Value::Int(m.chunk_size));
            if let Some(g) = &m.guest {
                g.add_to(&mut s);
            }
            emit(args.json, &s, out)?;
        }
    }
    if let Some(path) = &args.plot {
        super::plot::downtime_svg(path, &cases)?;
    }
    Ok(())
}

/// `policies`: the stop-copy downtime and source buffer memory of fixed
/// policies and of the measured one, at each firmware latency, with the
/// Linux policy's downtime at that latency as the reference.
fn policies(args: &BenchArgs, out: &mut dyn Write) -> io::Result<()> {
    let mib = 1u64 << 20;
    let fixed = |chunk_size, chunk_slots, legacy| DriverOptions {
        chunk_size,
        chunk_slots,
        legacy,
        chunk_policy: ChunkPolicy::Fixed,
        ..DriverOptions::default()
    };
    let cases: [(&str, DriverOptions); 8] = [
        ("linux (2 x 8M)", fixed(8 * mib, 2, false)),
        ("1 x 8M", fixed(8 * mib, 1, false)),
        ("4 x 8M", fixed(8 * mib, 4, false)),
        ("2 x 2M", fixed(2 * mib, 2, false)),
        ("2 x 32M", fixed(32 * mib, 2, false)),
        ("8 x 4M", fixed(4 * mib, 8, false)),
        ("legacy", fixed(8 * mib, 1, true)),
        ("measured (2 slots, 64M cap)", DriverOptions::default()),
    ];
    for latency in args.policy_latencies.split(',').filter(|s| !s.is_empty()) {
        let timing = format!(
            "fw-rate={}/s,latency={latency}",
            args.fw_rate.trim_end_matches("/s"),
        );
        // Objects of at most 1 MiB, so the chunk size (not the largest
        // object) decides the buffers; no content, so the timing model
        // (not the generator) sets the pace.
        let from = format!(
            "sim:state={},object=64K-1M,content=off,{timing}",
            super::device::human_size(args.policy_size)
        );
        let to = format!("sim:state=4M,seed=99,content=off,{timing}");
        let mut linux = None;
        for (name, opts) in &cases {
            let m = migrate_with(&from, &to, opts, &SaveOptions::default())?;
            let secs = m.downtime.as_secs_f64();
            let linux_secs = *linux.get_or_insert(secs);
            let mut s = result_of("policies");
            s.add("policy", Value::Text((*name).into()))
                .add("latency", Value::Text(latency.into()))
                .add("device", Value::Text(from.clone()))
                .add("downtime_seconds", Value::Float(secs))
                .add("ratio_to_linux", Value::Float(secs / linux_secs.max(1e-9)))
                .add(
                    "source_peak_buffer_bytes",
                    Value::Int(m.source_peak_buffer_bytes),
                )
                .add("chunk_size", Value::Int(m.chunk_size))
                .add("stream_bytes", Value::Int(m.report.bytes));
            emit(args.json, &s, out)?;
        }
    }
    Ok(())
}

/// The figures `bench scaling` takes from a `migrate --json` document.
#[derive(Debug, Deserialize, PartialEq)]
pub struct MigrateFigures {
    /// The document's schema.
    pub schema: String,
    /// Stream bytes.
    pub bytes: u64,
    /// Wall-clock throughput.
    pub bytes_per_sec: f64,
    /// The process's peak RSS (absent where /proc is not).
    pub peak_rss_bytes: Option<u64>,
    /// Peak DMA buffer memory of each side.
    pub source_peak_buffer_bytes: u64,
    /// See `source_peak_buffer_bytes`.
    pub destination_peak_buffer_bytes: u64,
}

/// Reads the document a `migrate --json` child printed on stdout.
///
/// # Errors
/// Not one JSON document of schema [`SCHEMA`](super::json::SCHEMA) with
/// those figures.
pub fn migrate_figures(stdout: &[u8]) -> io::Result<MigrateFigures> {
    let figures: MigrateFigures = serde_json::from_slice(stdout)
        .map_err(|e| io::Error::other(format!("migrate --json printed no document: {e}")))?;
    if figures.schema != super::json::SCHEMA {
        return Err(io::Error::other(format!(
            "migrate --json printed schema {:?}, expected {:?}",
            figures.schema,
            super::json::SCHEMA
        )));
    }
    Ok(figures)
}

/// `migrate --json` of a `size` state in a child process (so its peak RSS
/// is its own), without content (RSS does not depend on it, time would),
/// with fixed 8 MiB chunks: the measured policy's chunk size follows the
/// firmware's timing (within its 64 MiB cap per side), which would make
/// the runs differ by more than their state size.
/// Objects are 4-16 MiB from 1 GiB up, whatever the size (64 GiB of the
/// default 64K-12M objects needs more than the sim's 8192), and scaled down
/// below it so a small state still holds several.
fn migrate_child(size: &str) -> io::Result<MigrateFigures> {
    let bytes = parse_size(size).map_err(io::Error::other)?;
    let max = (16u64 << 20).min(bytes / 2).max(64 << 10);
    let min = (4u64 << 20).min(max / 4).max(4 << 10);
    let exe = std::env::current_exe()?;
    let child = Command::new(&exe)
        .args([
            "migrate",
            "--json",
            "--from",
            &format!(
                "sim:state={size},object={}-{},content=off",
                super::device::human_size(min),
                super::device::human_size(max)
            ),
            "--to",
            "sim:state=4M,seed=99,content=off",
            "--fixed-chunks",
        ])
        .output()?;
    if !child.status.success() {
        let stderr = String::from_utf8_lossy(&child.stderr);
        let why = stderr.lines().last().unwrap_or("no message");
        return Err(io::Error::other(format!("migrate {size}: {why}")));
    }
    migrate_figures(&child.stdout)
}

/// `scaling`: peak RSS per state size against the first size's run
/// (`ratio_to_first`; also `ratio_to_1g` when that is 1 GiB, the default).
fn scaling(args: &BenchArgs, out: &mut dyn Write) -> io::Result<()> {
    let sizes: Vec<&str> = args
        .scaling_sizes
        .split(',')
        .filter(|s| !s.is_empty())
        .collect();
    let mut base: Option<(u64, u64)> = None;
    for size in sizes {
        let m = migrate_child(size)?;
        let rss = m.peak_rss_bytes.unwrap_or(0);
        let bytes = parse_size(size).map_err(io::Error::other)?;
        let (base_bytes, base_rss) = *base.get_or_insert((bytes, rss));
        let ratio = rss as f64 / (base_rss as f64).max(1.0);
        let mut s = result_of("scaling");
        s.add("state", Value::Text(size.into()))
            .add("bytes", Value::Int(m.bytes))
            .add("bytes_per_sec", Value::Float(m.bytes_per_sec))
            .add("peak_rss_bytes", Value::Int(rss))
            .add(
                "base_state",
                Value::Text(super::device::human_size(base_bytes)),
            )
            .add("ratio_to_first", Value::Float(ratio));
        if base_bytes == 1 << 30 {
            s.add("ratio_to_1g", Value::Float(ratio));
        }
        s.add(
            "peak_buffer_bytes",
            Value::Int(m.source_peak_buffer_bytes + m.destination_peak_buffer_bytes),
        );
        emit(args.json, &s, out)?;
    }
    Ok(())
}

fn resume(args: &BenchArgs, out: &mut dyn Write) -> io::Result<()> {
    let spec = format!("sim:state={}", super::device::human_size(args.resume_size));
    let mut src = open(&spec, &DriverOptions::default())?;
    let mut stream =
        Vec::with_capacity(usize::try_from(args.resume_size + (16 << 20)).unwrap_or(0));
    transfer::save(src.as_mut(), &mut stream, &SaveOptions::default(), &Quiet)
        .map_err(|e| io::Error::other(e.to_string()))?;
    let mut dst = open("sim:state=4M,seed=99", &DriverOptions::default())?;
    // Feed it in 1 MiB pieces, as a socket would.
    let mut input = io::BufReader::with_capacity(1 << 20, Cursor::new(&stream[..]));
    let r = transfer::load(dst.as_mut(), &mut input, &Quiet)
        .map_err(|e| io::Error::other(e.to_string()))?;
    if src.digest() != dst.digest() {
        return Err(io::Error::other("digests differ"));
    }
    let load_rate = rate(r.bytes, r.total_time);
    let mem = memcpy_rate(r.bytes);
    let mut s = result_of("resume");
    s.add("stream_bytes", Value::Int(r.bytes))
        .add("seconds", Value::Float(r.total_time.as_secs_f64()))
        .add("resume_bytes_per_sec", Value::Float(load_rate))
        .add("memcpy_bytes_per_sec", Value::Float(mem))
        .add("ratio_to_memcpy", Value::Float(load_rate / mem))
        .add(
            "peak_buffer_bytes",
            Value::Int(dst.stats().peak_buffer_bytes),
        );
    emit(args.json, &s, out)
}

/// `mlx5vf bench`.
///
/// # Errors
/// A benchmark failed (a migration did not complete or digests differ).
pub fn run(args: &BenchArgs, out: &mut dyn Write) -> io::Result<()> {
    let only: Vec<&str> = args.only.split(',').map(str::trim).collect();
    let want = |n: &str| only.contains(&n);
    if !args.json {
        writeln!(
            out,
            "# mlx5vf bench (simulated device; memcpy measured in the same run, {})",
            human_bytes(64 << 20) + " blocks"
        )?;
    }
    if want("pipeline") {
        pipeline(args, out)?;
    }
    if want("policies") {
        policies(args, out)?;
    }
    if want("scaling") {
        scaling(args, out)?;
    }
    if want("resume") {
        resume(args, out)?;
    }
    if want("downtime") {
        downtime(args, out)?;
    }
    if want("overhead") {
        driver::overhead(args, out)?;
    }
    if want("resume_overhead") {
        driver::resume_overhead(args, out)?;
    }
    if want("per_chunk") {
        driver::per_chunk(args, out)?;
    }
    if want("tls") {
        #[cfg(feature = "tls")]
        tls::run(args, out)?;
        #[cfg(not(feature = "tls"))]
        return Err(io::Error::other("tls: this mlx5vf was built without TLS"));
    }
    if want("cmdq") {
        cmdq::run(args, out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The child's document is parsed, not searched: key order, text that
    /// looks like a field and a second document change nothing or fail.
    #[test]
    fn migrate_figures_are_parsed_from_the_document() {
        let doc = br#"{"schema":"mlx5vf/1","command":"migrate","from":"sim:\"bytes\":1,",
            "destination_peak_buffer_bytes":2,"bytes":1048576,"source_peak_buffer_bytes":3,
            "bytes_per_sec":1.5e9,"peak_rss_bytes":4096}"#;
        assert_eq!(
            migrate_figures(doc).unwrap(),
            MigrateFigures {
                schema: "mlx5vf/1".into(),
                bytes: 1 << 20,
                bytes_per_sec: 1.5e9,
                peak_rss_bytes: Some(4096),
                source_peak_buffer_bytes: 3,
                destination_peak_buffer_bytes: 2,
            }
        );
        let other_schema = br#"{"schema":"mlx5vf/2","bytes":1,"bytes_per_sec":1,
            "source_peak_buffer_bytes":0,"destination_peak_buffer_bytes":0}"#;
        assert!(migrate_figures(other_schema).is_err());
        let mut two = doc.to_vec();
        two.extend_from_slice(doc);
        assert!(migrate_figures(&two).is_err());
        assert!(migrate_figures(b"bytes=1048576\n").is_err());
    }
}
