//! `resume_engine`: streams written into a resuming device over the sim.
//!
//! # Input
//! A [`ResumeHead`] (built with `arbitrary`): which stream to start from (one
//! of the [`bases`], valid streams saved once per process from small sim
//! states, or the raw tail of the input), the destination's capabilities,
//! how `write()` calls are cut and how much of each plan the shim takes, one
//! fault, and an optional interruption (reset, detach, close, release) after
//! a given piece. Then a count byte and that many [`Mutation`]s (flip,
//! insert, delete and truncate bytes; duplicate, drop, swap, splice and
//! forge records; strip our records; recompute the end record); the rest of
//! the input is the raw stream or the pool inserted bytes come from.
//!
//! # Checks
//! The stream goes through `write_plan` / `write_small` / `write_commit`,
//! then RESUMING → STOP and STOP → RUNNING. Nothing may panic, the plans
//! must stay inside the device's buffers, a failed write leaves the file
//! failed for good, and:
//! - RESUMING → STOP succeeds only for a stream the [`reference()`] model
//!   calls complete, and never after a failed write;
//! - when the stream's LOADed images are exactly those of the valid stream it
//!   started from and both arcs succeed, the destination's digest equals the
//!   source's (a stream is accepted with the wrong state only if its images
//!   are different ones);
//! - without faults, a stream with those images that the reference calls
//!   complete must be accepted and restore the source's digest;
//! - after recovery (reset) nothing leaked: device idle, no buffer, PD, mkey
//!   or IOMMU mapping left in the platform or the sim.

use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use mlx5vf_core::device::{Config, DeviceError, FileId};
use mlx5vf_core::hal::HalErrorKind;
use mlx5vf_core::load::LoadError;
use mlx5vf_core::stream::{HEADER_LEN, Tag, Verdict};
use mlx5vf_core::vfio::MigState;
use mlx5vf_sim::Digest;
use mlx5vf_sim::wire::opcode;

use crate::hal::{ExecCorruption, FailAfter};
use crate::harness::{self, Dev, SaveRun, WriteStyle};
use crate::stats::{Hit, hit};
use crate::streams::{self, reference, split_records, tag_of};

/// A valid stream and the digest of the state it carries.
#[derive(Debug)]
pub struct Base {
    /// What it is.
    pub name: &'static str,
    /// The stream.
    pub stream: Vec<u8>,
    /// The source's digest once saving ended.
    pub digest: Digest,
    /// The non-empty FW_DATA images (what a destination LOADs).
    pub loads: Vec<Vec<u8>>,
    /// Saved through PRE_COPY: several images, so the destination needs
    /// multi-load.
    pub precopy: bool,
    /// Has our stream-info and stream-end records.
    pub integrity: bool,
}

/// The source devices the bases are saved from.
const BASE_RUNS: [(&str, &str, bool, bool); 4] = [
    // (name, spec, PRE_COPY, integrity records)
    (
        "stop-copy, chunks, integrity",
        "sim:state=12K,object=256-1K,seed=11",
        false,
        true,
    ),
    (
        "pre-copy, chunks, dirtying, integrity",
        "sim:state=12K,object=256-1K,seed=12,dirty=1K",
        true,
        true,
    ),
    (
        "stop-copy, legacy, Linux format",
        "sim:state=6K,object=256-1K,seed=13,chunks=off",
        false,
        false,
    ),
    (
        "pre-copy, chunks, dirtying, Linux format",
        "sim:state=12K,object=256-1K,seed=14,dirty=2K",
        true,
        false,
    ),
];

/// The valid streams, saved once per process.
pub fn bases() -> &'static [Base] {
    static BASES: OnceLock<Vec<Base>> = OnceLock::new();
    BASES.get_or_init(|| {
        BASE_RUNS
            .iter()
            .map(|&(name, spec, precopy, integrity)| {
                let cfg = Config {
                    chunk_size: 4096,
                    integrity_records: integrity,
                    ..Config::default()
                };
                let (stream, digest) = harness::save_stream(&SaveRun {
                    spec,
                    cfg,
                    precopy,
                    read_size: 1000,
                });
                let t = reference(&stream);
                assert!(
                    matches!(t.verdict, Verdict::Complete { verified } if verified == integrity),
                    "base {name}: {:?}",
                    t.verdict
                );
                let loads = t.loads().into_iter().map(<[u8]>::to_vec).collect();
                Base {
                    name,
                    stream,
                    digest,
                    loads,
                    precopy,
                    integrity,
                }
            })
            .collect()
    })
}

/// The fixed part of the input.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumeHead {
    /// Below 128: base `source % bases().len()`; from 128: the raw tail.
    pub source: u8,
    /// Destination: bit 0 no PRE_COPY caps (no multi-load), bit 1 no chunk
    /// caps, bit 2 no PRE_COPY policy, bit 3 asynchronous LOAD (pipelined
    /// resume: two image buffers, LOADs completing while writes go on).
    pub dst: u8,
    /// `write()` sizes, cycled (0: everything left).
    pub pieces: [u16; 4],
    /// Bytes the shim takes of each plan, cycled (0: all of it).
    pub takes: [u8; 4],
    /// Abandon every `abandon + 1`-th plan (0: never).
    pub abandon: u8,
    /// One fault to inject.
    pub fault: Fault,
    /// Something that interrupts the migration after a piece.
    pub interrupt: Option<(u8, Interrupt)>,
}

/// A fault on the destination.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Nothing.
    None,
    /// Fail the `nth` command of an opcode (index into the sim's list).
    Firmware {
        /// Opcode index.
        op: u8,
        /// 1-based count (modulo 8, plus 1).
        nth: u8,
        /// Status (0 becomes INT_ERR).
        status: u8,
    },
    /// Fail a platform operation after some succeed.
    Platform {
        /// Allocation, mapping, command delivery.
        what: u8,
        /// Successes first (modulo 16).
        after: u8,
    },
    /// Firmware lies in one command output.
    Lie {
        /// Opcode index.
        op: u8,
        /// Commands of it to let through (modulo 8).
        skip: u8,
        /// Byte of the output.
        byte: u8,
        /// Bits to flip (0 becomes 1).
        xor: u8,
    },
}

/// Something that ends the migration early.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupt {
    /// A VF reset (firmware and device).
    Reset,
    /// The PF disables the VF.
    Detach,
    /// VFIO `close_device`.
    Close,
    /// The user closes the resuming file.
    Release,
}

/// A change to a valid stream. Offsets are taken modulo the stream length
/// plus one, record numbers modulo the record count.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutation {
    /// Flip one bit.
    Flip {
        /// Byte.
        at: u32,
        /// Bit (modulo 8).
        bit: u8,
    },
    /// Set one byte.
    Set {
        /// Byte.
        at: u32,
        /// Value.
        value: u8,
    },
    /// Insert bytes from the pool (zeros when it runs out).
    Insert {
        /// Where.
        at: u32,
        /// How many.
        len: u8,
    },
    /// Delete bytes.
    Delete {
        /// From.
        at: u32,
        /// How many.
        len: u16,
    },
    /// Cut the stream.
    Truncate {
        /// New length.
        at: u32,
    },
    /// Duplicate a record.
    DupRecord {
        /// Which.
        rec: u8,
    },
    /// Remove a record.
    DropRecord {
        /// Which.
        rec: u8,
    },
    /// Swap two records.
    SwapRecords {
        /// One.
        a: u8,
        /// The other.
        b: u8,
    },
    /// Insert a record of another base before a record.
    Splice {
        /// Before which.
        rec: u8,
        /// Base.
        from: u8,
        /// Its record.
        other: u8,
    },
    /// Rewrite a record's size field.
    SetSize {
        /// Which.
        rec: u8,
        /// New size.
        size: u64,
    },
    /// Rewrite a record's flags.
    SetFlags {
        /// Which.
        rec: u8,
        /// New flags.
        flags: u32,
    },
    /// Rewrite a record's tag.
    SetTag {
        /// Which.
        rec: u8,
        /// New tag.
        tag: u32,
    },
    /// Insert a new record (payload from the pool) before a record.
    InsertRecord {
        /// Before which.
        rec: u8,
        /// Tag.
        tag: u32,
        /// Flags.
        flags: u32,
        /// Payload bytes.
        len: u8,
    },
    /// Remove our stream-info and stream-end records.
    StripOurs,
    /// Recompute the end record over the FW_DATA records now in the stream.
    RecomputeEnd,
}

/// Most mutations applied.
pub const MAX_MUTATIONS: usize = 8;

/// The target. See the module documentation.
pub fn run(data: &[u8]) {
    let Some((head, mutations, tail)) = decode(data) else {
        return;
    };
    let bases = bases();
    let base = (head.source < 128).then(|| &bases[usize::from(head.source) % bases.len()]);
    let stream = match base {
        Some(b) => {
            let mut pool = Pool(tail);
            let mut s = b.stream.clone();
            for m in &mutations {
                mutate(&mut s, *m, &mut pool, bases);
            }
            s
        }
        None => tail.to_vec(),
    };
    resume(&head, &stream, base);
}

/// The input's parts: the head, the mutations and the tail.
pub fn decode(data: &[u8]) -> Option<(ResumeHead, Vec<Mutation>, &[u8])> {
    let mut u = Unstructured::new(data);
    let head = ResumeHead::arbitrary(&mut u).ok()?;
    let n = usize::from(u.arbitrary::<u8>().unwrap_or(0)) % (MAX_MUTATIONS + 1);
    let mut mutations = vec![];
    for _ in 0..n {
        match Mutation::arbitrary(&mut u) {
            Ok(m) => mutations.push(m),
            Err(_) => break,
        }
    }
    Some((head, mutations, u.take_rest()))
}

/// Bytes for insertions.
struct Pool<'a>(&'a [u8]);

impl Pool<'_> {
    fn take(&mut self, n: usize) -> Vec<u8> {
        let k = n.min(self.0.len());
        let mut v = self.0[..k].to_vec();
        self.0 = &self.0[k..];
        v.resize(n, 0);
        v
    }
}

fn at(at: u32, len: usize) -> usize {
    at as usize % (len + 1)
}

/// Applies one mutation.
fn mutate(s: &mut Vec<u8>, m: Mutation, pool: &mut Pool<'_>, bases: &[Base]) {
    let (records, _) = split_records(s);
    let rec =
        |i: u8| (!records.is_empty()).then(|| records[usize::from(i) % records.len()].clone());
    match m {
        Mutation::Flip { at: a, bit } => {
            if !s.is_empty() {
                let i = a as usize % s.len();
                s[i] ^= 1 << (bit % 8);
            }
        }
        Mutation::Set { at: a, value } => {
            if !s.is_empty() {
                let i = a as usize % s.len();
                s[i] = value;
            }
        }
        Mutation::Insert { at: a, len } => {
            let i = at(a, s.len());
            let bytes = pool.take(usize::from(len));
            s.splice(i..i, bytes);
        }
        Mutation::Delete { at: a, len } => {
            let i = at(a, s.len());
            let end = (i + usize::from(len)).min(s.len());
            s.drain(i..end);
        }
        Mutation::Truncate { at: a } => {
            let i = at(a, s.len());
            s.truncate(i);
        }
        Mutation::DupRecord { rec: r } => {
            if let Some(r) = rec(r) {
                let copy = s[r.clone()].to_vec();
                s.splice(r.end..r.end, copy);
            }
        }
        Mutation::DropRecord { rec: r } => {
            if let Some(r) = rec(r) {
                s.drain(r);
            }
        }
        Mutation::SwapRecords { a, b } => {
            if let (Some(a), Some(b)) = (rec(a), rec(b)) {
                let (first, second) = if a.start <= b.start { (a, b) } else { (b, a) };
                if first.end <= second.start {
                    let x = s[first.clone()].to_vec();
                    let y = s[second.clone()].to_vec();
                    s.splice(second, x);
                    s.splice(first, y);
                }
            }
        }
        Mutation::Splice {
            rec: r,
            from,
            other,
        } => {
            let src = &bases[usize::from(from) % bases.len()].stream;
            let (theirs, _) = split_records(src);
            if theirs.is_empty() {
                return;
            }
            let piece = src[theirs[usize::from(other) % theirs.len()].clone()].to_vec();
            let i = rec(r).map_or(s.len(), |r| r.start);
            s.splice(i..i, piece);
        }
        Mutation::SetSize { rec: r, size } => {
            if let Some(r) = rec(r) {
                s[r.start..r.start + 8].copy_from_slice(&size.to_le_bytes());
            }
        }
        Mutation::SetFlags { rec: r, flags } => {
            if let Some(r) = rec(r) {
                s[r.start + 8..r.start + 12].copy_from_slice(&flags.to_le_bytes());
            }
        }
        Mutation::SetTag { rec: r, tag } => {
            if let Some(r) = rec(r) {
                s[r.start + 12..r.start + 16].copy_from_slice(&tag.to_le_bytes());
            }
        }
        Mutation::InsertRecord {
            rec: r,
            tag,
            flags,
            len,
        } => {
            let mut piece = Vec::with_capacity(HEADER_LEN + usize::from(len));
            piece.extend_from_slice(&u64::from(len).to_le_bytes());
            piece.extend_from_slice(&flags.to_le_bytes());
            piece.extend_from_slice(&tag.to_le_bytes());
            piece.extend(pool.take(usize::from(len)));
            let i = rec(r).map_or(s.len(), |r| r.start);
            s.splice(i..i, piece);
        }
        Mutation::StripOurs => {
            let mut out = Vec::with_capacity(s.len());
            let (records, tail) = split_records(s);
            for r in &records {
                if !matches!(tag_of(s, r), Tag::StreamInfo | Tag::StreamEnd) {
                    out.extend_from_slice(&s[r.clone()]);
                }
            }
            out.extend_from_slice(&s[tail]);
            *s = out;
        }
        Mutation::RecomputeEnd => streams::recompute_end(s),
    }
}

/// How the shim takes bytes of each plan.
struct Style {
    takes: [u8; 4],
    abandon: u8,
    plans: u32,
    asked: u32,
}

impl WriteStyle for Style {
    fn take(&mut self, len: u64) -> u64 {
        let t = self.takes[self.plans as usize % 4];
        self.plans = self.plans.wrapping_add(1);
        if t == 0 { len } else { len.min(u64::from(t)) }
    }

    fn abandon(&mut self) -> bool {
        // Never two in a row, so writes always progress.
        self.asked = self.asked.wrapping_add(1);
        self.abandon != 0 && self.asked % (u32::from(self.abandon) + 1) == 0
    }
}

/// Errors a correct driver and a shim that follows the plans never see.
fn assert_plausible(e: DeviceError) {
    assert!(
        !matches!(
            e,
            DeviceError::UnplannedWrite
                | DeviceError::TableFull
                | DeviceError::SaveInFlight
                | DeviceError::StaleCompletion
                | DeviceError::ReaderBusy
                | DeviceError::Encode(_)
                | DeviceError::Load(LoadError::Misuse | LoadError::Capacity)
        ),
        "unexpected error: {e:?}"
    );
}

fn arm(dev: &mut Dev, fault: Fault) -> bool {
    match fault {
        Fault::None => false,
        Fault::Firmware { op, nth, status } => {
            let op = opcode::ALL[usize::from(op) % opcode::ALL.len()];
            let status = if status == 0 { 1 } else { status };
            let nth = u32::from(nth % 8) + 1;
            dev.hal_mut()
                .fw
                .faults_mut()
                .fail_nth(op, nth, status, 0xf022)
                .is_ok()
        }
        Fault::Platform { what, after } => {
            let after = u32::from(after % 16);
            let k = &mut dev.hal_mut().knobs;
            match what % 3 {
                0 => k.fail_alloc = Some(FailAfter::new(after, HalErrorKind::OutOfMemory)),
                1 => k.fail_map = Some(FailAfter::new(after, HalErrorKind::OutOfMemory)),
                _ => k.fail_exec = Some(FailAfter::new(after, HalErrorKind::Delivery)),
            }
            true
        }
        Fault::Lie {
            op,
            skip,
            byte,
            xor,
        } => {
            dev.hal_mut().knobs.corrupt_exec = Some(ExecCorruption {
                opcode: opcode::ALL[usize::from(op) % opcode::ALL.len()],
                skip: u32::from(skip % 8),
                byte: u16::from(byte),
                xor: if xor == 0 { 1 } else { xor },
            });
            true
        }
    }
}

fn interrupt(dev: &mut Dev, file: FileId, what: Interrupt) {
    match what {
        Interrupt::Reset => {
            dev.hal_mut().fw.reset_vf(0);
            dev.handle_reset();
        }
        Interrupt::Detach => {
            dev.handle_detach();
            dev.hal_mut().fw.detach_vf(0);
        }
        Interrupt::Close => {
            dev.close();
            dev.hal_mut().fw.reset_vf(0);
            dev.open();
        }
        Interrupt::Release => dev.release(file),
    }
}

fn resume(head: &ResumeHead, stream: &[u8], base: Option<&Base>) {
    let spec = format!(
        "sim:state=4K,object=256-1K,seed=99,precopy={},chunks={}",
        if head.dst & 1 != 0 { "off" } else { "on" },
        if head.dst & 2 != 0 { "off" } else { "on" },
    );
    let cfg = Config {
        use_precopy: head.dst & 4 == 0,
        ..Config::default()
    };
    let mut dev = match harness::probed(&harness::firmware_config(&spec), cfg) {
        Ok(d) => d,
        Err(e) => panic!("probe {spec}: {e}"),
    };
    if head.dst & 8 != 0 {
        dev.hal_mut().async_load = true;
        hit(Hit::ResumeAsyncLoad);
    }
    let faulty = arm(&mut dev, head.fault);
    let file = match harness::set_state(&mut dev, MigState::Resuming, 0) {
        Ok(Some(f)) => f,
        r => {
            assert!(faulty, "STOP -> RESUMING on a healthy device: {r:?}");
            if let Err(e) = r {
                assert_plausible(e.error);
            }
            finish(dev);
            return;
        }
    };
    hit(Hit::ResumeOpened);
    if base.is_some() {
        hit(Hit::ResumeFromBase);
    }
    let mut style = Style {
        takes: head.takes,
        abandon: head.abandon,
        plans: 0,
        asked: 0,
    };
    let mut rest = stream;
    let mut write_error = None;
    let mut interrupted = false;
    let mut piece = 0usize;
    while !rest.is_empty() {
        let size = match head.pieces[piece % 4] {
            0 => rest.len(),
            n => usize::from(n).min(rest.len()),
        };
        let (now, later) = rest.split_at(size);
        rest = later;
        if let Err(e) = harness::write(&mut dev, file, now, &mut style) {
            assert_plausible(e);
            hit(Hit::ResumeWriteError);
            if !interrupted {
                write_error = Some(e);
                // Sticky: the file stays failed.
                let again = dev.write_plan(file, 1);
                assert!(again.is_err(), "write after {e:?} planned: {again:?}");
            }
            break;
        }
        if let Some((_, what)) = head
            .interrupt
            .filter(|&(k, _)| !interrupted && usize::from(k) == piece)
        {
            interrupt(&mut dev, file, what);
            interrupted = true;
        }
        piece += 1;
    }
    // RESUMING -> STOP waits for the last asynchronous LOAD (each completion
    // may start the next complete image: at most one per image buffer).
    let stop = harness::set_state(&mut dev, MigState::Stop, 4);
    let run = match stop {
        Ok(f) => {
            hit(Hit::ResumeStopOk);
            assert_eq!(f, None, "RESUMING -> STOP opened a file");
            dev.release(file);
            Some(harness::set_state(&mut dev, MigState::Running, 0))
        }
        Err(e) => {
            assert_plausible(e.error);
            assert_ne!(e.reached, MigState::Error);
            None
        }
    };
    match run {
        Some(Err(e)) => assert_plausible(e.error),
        Some(Ok(_)) => hit(Hit::ResumeRunOk),
        None => {}
    }
    if !interrupted {
        let t = reference(stream);
        if stop.is_ok() {
            assert!(write_error.is_none(), "STOP accepted after {write_error:?}");
            assert!(
                matches!(t.verdict, Verdict::Complete { .. }),
                "STOP accepted a stream the reference calls {:?}",
                t.verdict
            );
        }
        if let Some(b) = base {
            let same = t.loads() == b.loads.iter().map(Vec::as_slice).collect::<Vec<_>>();
            let complete = matches!(t.verdict, Verdict::Complete { .. });
            let lied = dev.hal().taint.lied;
            let multi_load = head.dst & 1 == 0;
            if same && complete && !faulty && (multi_load || !b.precopy) {
                assert!(
                    write_error.is_none(),
                    "{}: writing its images failed: {write_error:?}",
                    b.name
                );
                assert!(stop.is_ok(), "{}: RESUMING -> STOP: {stop:?}", b.name);
                assert!(
                    matches!(run, Some(Ok(_))),
                    "{}: STOP -> RUNNING: {run:?}",
                    b.name
                );
            }
            if !same && stop.is_ok() && matches!(run, Some(Ok(_))) {
                hit(Hit::ResumeOtherImagesAccepted);
            }
            if same && !lied && stop.is_ok() && matches!(run, Some(Ok(_))) {
                hit(Hit::ResumeDigestChecked);
                assert_eq!(
                    dev.hal().fw.digest(0),
                    Some(b.digest),
                    "{}: destination digest differs from the source's",
                    b.name
                );
            }
        }
    }
    finish(dev);
}

fn finish(mut dev: Dev) {
    harness::recover(&mut dev);
    harness::assert_clean(&dev);
}
