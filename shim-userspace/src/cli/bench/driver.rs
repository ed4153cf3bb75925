//! Benchmarks of the driver alone: the simulated firmware answers at once
//! and neither generates nor checks content (`content=off`), so what is
//! measured is the engines, the buffers and the copies, against the same
//! bytes moved by plain reads and writes in the same run.

use std::io::{self, BufRead, Write};
use std::time::{Duration, Instant};

use mlx5vf_sim::testkit::bookkeeping::{self, CHUNK};

use super::{BenchArgs, Summary, Value, emit, migrate_with, open, result_of};
use crate::backend::{DriverOptions, MigrationDevice};
use crate::cli::device::human_size;
use crate::pipe::{PipeReader, PipeWriter, pipe};
use crate::transfer::{self, Quiet, SaveOptions};

/// The destination of the driver benchmarks: small (its own state is
/// replaced) and without content checks.
const DESTINATION: &str = "sim:state=4M,seed=99,content=off";

/// The pipe `migrate` uses (1 MiB pieces, 4 in flight).
fn migrate_pipe() -> (PipeWriter, PipeReader) {
    pipe(1 << 20, 4)
}

/// Buffers on each side of the plain copy: as many as the driver's chunk
/// slots and image buffers (two each), so both copies touch the same
/// amount of memory.
const PLAIN_BUFFERS: usize = 2;

/// Writes `bytes` bytes into `w` out of [`PLAIN_BUFFERS`] chunk-sized
/// buffers in turn, as the saving side writes out of its slot buffers.
fn write_plain(w: &mut PipeWriter, bytes: u64) -> io::Result<()> {
    let blocks = vec![vec![0x5au8; CHUNK as usize]; PLAIN_BUFFERS];
    let mut left = bytes;
    for block in blocks.iter().cycle() {
        if left == 0 {
            break;
        }
        let n = usize::try_from(left)
            .unwrap_or(block.len())
            .min(block.len());
        w.write_all(block.get(..n).unwrap_or_default())?;
        left -= n as u64;
    }
    w.flush()
}

/// Reads `r` to its end into [`PLAIN_BUFFERS`] chunk-sized buffers in
/// turn, as the loading side copies into its image buffers. Returns the
/// bytes read.
fn read_plain(r: &mut PipeReader) -> io::Result<u64> {
    let mut blocks = vec![vec![0u8; CHUNK as usize]; PLAIN_BUFFERS];
    let (mut which, mut at) = (0usize, 0usize);
    let mut total = 0u64;
    loop {
        let piece = r.fill_buf()?;
        if piece.is_empty() {
            return Ok(total);
        }
        let Some(block) = blocks.get_mut(which) else {
            return Ok(total);
        };
        let n = piece.len().min(block.len() - at);
        if let (Some(dst), Some(src)) = (block.get_mut(at..at + n), piece.get(..n)) {
            dst.copy_from_slice(src);
        }
        r.consume(n);
        at += n;
        if at == block.len() {
            (which, at) = ((which + 1) % PLAIN_BUFFERS, 0);
        }
        total += n as u64;
    }
}

/// `bytes` through the migrate pipe by plain writes and reads on two
/// threads: the reference of both overhead benchmarks.
fn plain_copy(bytes: u64) -> io::Result<Duration> {
    let (mut w, mut r) = migrate_pipe();
    let start = Instant::now();
    let (written, read) = std::thread::scope(|scope| {
        let h = scope.spawn(move || write_plain(&mut w, bytes));
        let read = read_plain(&mut r);
        (h.join(), read)
    });
    let elapsed = start.elapsed();
    written.map_err(|_| io::Error::other("writing thread panicked"))??;
    if read? != bytes {
        return Err(io::Error::other("plain copy lost bytes"));
    }
    Ok(elapsed)
}

/// The two streams the driver benchmarks run: ours (stream-info and
/// stream-end records, a CRC-32C over every payload byte on each side) and
/// the Linux format (no records of ours, no checksum).
const INTEGRITY: [bool; 2] = [true, false];

/// Runs of each measurement (ours and the copy, alternating); the fastest
/// of each counts, the one least disturbed by other work on the machine.
const OVERHEAD_RUNS: usize = 3;

/// `overhead`: a whole `migrate` (save, pipe, load) with instant firmware
/// and no content, against plain copying of the same bytes through the
/// same pipe; once per stream format.
pub(super) fn overhead(args: &BenchArgs, out: &mut dyn Write) -> io::Result<()> {
    let from = format!("sim:state={},content=off", human_size(args.overhead_size));
    for integrity in INTEGRITY {
        let opts = DriverOptions {
            integrity,
            ..DriverOptions::default()
        };
        let (mut ours, mut copy, mut bytes) = (Duration::MAX, Duration::MAX, 0);
        for _ in 0..OVERHEAD_RUNS {
            let m = migrate_with(&from, DESTINATION, &opts, &SaveOptions::default())?;
            bytes = m.report.bytes;
            ours = ours.min(m.elapsed);
            copy = copy.min(plain_copy(bytes)?);
        }
        let mut s = result_of("overhead");
        s.add("device", Value::Text(from.clone()));
        add_ratio(&mut s, integrity, bytes, ours, copy);
        emit(args.json, &s, out)?;
    }
    Ok(())
}

/// The figures both overhead benchmarks report.
fn add_ratio(s: &mut Summary, integrity: bool, bytes: u64, ours: Duration, copy: Duration) {
    let rate = bytes as f64 / ours.as_secs_f64().max(1e-9);
    let reference = bytes as f64 / copy.as_secs_f64().max(1e-9);
    s.add("integrity", Value::Bool(integrity))
        .add("stream_bytes", Value::Int(bytes))
        .add("seconds", Value::Float(ours.as_secs_f64()))
        .add("bytes_per_sec", Value::Float(rate))
        .add("copy_seconds", Value::Float(copy.as_secs_f64()))
        .add("copy_bytes_per_sec", Value::Float(reference))
        .add("ratio_to_copy", Value::Float(rate / reference));
}

/// `resume_overhead`: the destination path alone (parse, copy into image
/// buffers, LOAD) fed a saved stream through the migrate pipe, against
/// plain reads of the same stream through the same pipe; once per stream
/// format.
pub(super) fn resume_overhead(args: &BenchArgs, out: &mut dyn Write) -> io::Result<()> {
    let from = format!("sim:state={},content=off", human_size(args.overhead_size));
    let capacity = usize::try_from(args.overhead_size.saturating_add(64 << 20)).unwrap_or(0);
    let mut stream = Vec::with_capacity(capacity);
    for integrity in INTEGRITY {
        let opts = DriverOptions {
            integrity,
            ..DriverOptions::default()
        };
        let mut src = open(&from, &opts)?;
        stream.clear();
        transfer::save(src.as_mut(), &mut stream, &SaveOptions::default(), &Quiet)
            .map_err(|e| io::Error::other(e.to_string()))?;
        let (mut elapsed, mut copy, mut bytes) = (Duration::MAX, Duration::MAX, 0);
        for _ in 0..OVERHEAD_RUNS {
            let mut dst = open(DESTINATION, &opts)?;
            let (took, loaded) = load_through_pipe(dst.as_mut(), &stream)?;
            if src.digest() != dst.digest() {
                return Err(io::Error::other("digests differ"));
            }
            (elapsed, bytes) = (elapsed.min(took), loaded);
            // The reference writes from chunk buffers, not from the stream:
            // the writer's side is the same plain copy either way.
            copy = copy.min(plain_copy(bytes)?);
        }
        let mut s = result_of("resume_overhead");
        s.add("device", Value::Text(DESTINATION.into()));
        add_ratio(&mut s, integrity, bytes, elapsed, copy);
        emit(args.json, &s, out)?;
    }
    Ok(())
}

/// `stream` written into the migrate pipe by a second thread and loaded
/// into `dst` from it: the time taken and the bytes loaded.
fn load_through_pipe(dst: &mut dyn MigrationDevice, stream: &[u8]) -> io::Result<(Duration, u64)> {
    let (mut w, mut r) = migrate_pipe();
    let start = Instant::now();
    let (written, loaded) = std::thread::scope(|scope| {
        let h = scope.spawn(move || {
            let done = w.write_all(stream).and_then(|()| w.flush());
            drop(w);
            done
        });
        let loaded = transfer::load(dst, &mut r, &Quiet);
        drop(r);
        (h.join(), loaded)
    });
    let elapsed = start.elapsed();
    written.map_err(|_| io::Error::other("writing thread panicked"))??;
    let loaded = loaded.map_err(|e| io::Error::other(e.to_string()))?;
    Ok((elapsed, loaded.bytes))
}

/// Runs of each bookkeeping loop; the fastest counts (the least disturbed
/// by other work on the machine).
const PER_CHUNK_RUNS: u32 = 16;
/// Chunks (and images) per run.
const PER_CHUNK_ITEMS: u32 = 4096;

/// The fastest of [`PER_CHUNK_RUNS`] runs of `f`, in ns per item.
fn fastest_ns_per_item(
    items: u32,
    mut f: impl FnMut() -> Result<(), bookkeeping::Unexpected>,
) -> io::Result<f64> {
    let mut best = Duration::MAX;
    for _ in 0..PER_CHUNK_RUNS {
        let start = Instant::now();
        f().map_err(io::Error::other)?;
        best = best.min(start.elapsed());
    }
    Ok(best.as_secs_f64() * 1e9 / f64::from(items.max(1)))
}

/// `per_chunk`: the core's bookkeeping per chunk (saving, Linux's two
/// slots) and per image (resuming), with no bytes moved, against one
/// memcpy of the chunk.
pub(super) fn per_chunk(args: &BenchArgs, out: &mut dyn Write) -> io::Result<()> {
    let save_ns = fastest_ns_per_item(PER_CHUNK_ITEMS, || {
        std::hint::black_box(bookkeeping::save_stream(2, PER_CHUNK_ITEMS)?);
        Ok(())
    })?;
    let load_ns = fastest_ns_per_item(PER_CHUNK_ITEMS, || {
        std::hint::black_box(bookkeeping::load_stream(PER_CHUNK_ITEMS)?);
        Ok(())
    })?;
    let src = vec![0x5au8; CHUNK as usize];
    let mut dst = vec![0u8; CHUNK as usize];
    let memcpy_ns = fastest_ns_per_item(1, || {
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
        Ok(())
    })?;
    let mut s = result_of("per_chunk");
    s.add("chunk_bytes", Value::Int(u64::from(CHUNK)))
        .add("save_ns_per_chunk", Value::Float(save_ns))
        .add("load_ns_per_image", Value::Float(load_ns))
        .add("memcpy_chunk_ns", Value::Float(memcpy_ns))
        .add(
            "ratio_to_memcpy",
            Value::Float(save_ns / memcpy_ns.max(1e-9)),
        );
    emit(args.json, &s, out)
}
