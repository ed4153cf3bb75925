//! `save_engine`: a saving device over a sim whose answers and timing the
//! input steers.
//!
//! # Input
//! A [`SaveHead`] (built with `arbitrary`: the source's capabilities, state
//! size and driver policy), then [`Op`]s until the input ends or
//! [`MAX_OPS`] ran: reads of input-chosen sizes (and short copies), SAVE
//! completions delivered when the input says (also twice, truncated,
//! corrupted, or forged), PRE_COPY info, state changes, release, reset,
//! detach/attach, close, poll, data size, guest ticks, and faults (a
//! command failing, firmware lying in an output, the platform failing).
//! The same device can also be taken to RESUMING and fed one of the valid
//! [`bases`] streams while a SAVE of an earlier saving file may still be in
//! flight.
//!
//! The shim is modelled faithfully: a `set_state` that must wait for a SAVE
//! keeps the state lock, so until it is retried successfully, operations
//! needing that lock only retry it; reads and completions go on meanwhile.
//!
//! # Checks
//! After every operation: the device is never in ERROR; unread chunks never
//! exceed the slots, and unread FW_DATA records never exceed what the save
//! queue is sized for (slots + 2); at most one SAVE is in flight, and the
//! device knows exactly when; the device's buffer bytes equal the
//! platform's; no saving file exists outside the saving group; without an
//! injected fault or lie (or a policy cap on SAVE buffers) a saving file
//! never fails. Reads never hand out bytes outside a buffer, and every
//! prefix read is a well-formed stream; `ENOMSG` only in PRE_COPY states,
//! end of stream only in STOP_COPY; a reader told to wait always has a SAVE
//! to wait for; `poll` agrees with `read`; stale and forged file handles and
//! completion tokens are refused. A stream read to its end is complete by
//! the [`reference()`] model (verified when integrity records are on), and,
//! unless firmware lied, loads into a fresh destination that ends with the
//! source's digest (unless the VF holds a load cut short, which the sim
//! saves as if complete). On a healthy device a valid stream the VF can
//! take (several images need multi-load; without it, one image per load
//! session) written to the resuming file is accepted, the shim waiting for
//! SAVEs as the protocol says; once RESUMING → STOP closes the file the VF
//! holds that stream's state, and a stream of ours that was cut short, or
//! failed to write, is refused.
//! At the end the saving file is driven to its end (it must get there),
//! then everything is recovered and nothing may have leaked.

use arbitrary::Arbitrary;
use mlx5vf_core::device::{Config, DeviceError, FileId, Poll};
use mlx5vf_core::hal::{HalErrorKind, SaveToken};
use mlx5vf_core::stream::{Reader, StreamErrorKind, Verdict};
use mlx5vf_core::vfio::{MigState, Session};
use mlx5vf_sim::wire::opcode;

use crate::hal::{ExecCorruption, FailAfter, Knobs};
use crate::harness::{self, Dev, Greedy};
use crate::stats::{Hit, hit};
use crate::streams::reference;
use crate::targets::resume_engine::bases;

/// Most operations one input runs.
pub const MAX_OPS: usize = 200;

/// The source device and policy.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaveHead {
    /// Bit 0 no chunk caps, 1 no PRE_COPY caps, 2 a dirtying guest,
    /// 3 no integrity records, 4 policy without chunk mode, 5 policy
    /// without PRE_COPY, 6 userspace opts in to PRECOPY_INFOv2.
    pub device: u8,
    /// Chunk slots: `1 + slots % 8`.
    pub slots: u8,
    /// Chunk size: `(1 + chunk % 4)` pages.
    pub chunk: u8,
    /// SAVE buffer cap in pages (0: the default cap).
    pub max_pages: u8,
    /// State size: `4 + state % 28` KiB.
    pub state: u8,
}

/// One step.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `read()` of up to `max` bytes (0: 64 KiB), copying at most `copy`
    /// bytes of each segment (0: all).
    Read {
        /// Bytes asked for.
        max: u16,
        /// Copy limit per segment.
        copy: u16,
    },
    /// `read()` through an old, forged or resuming handle.
    ReadStale {
        /// Which handle (or forged bits).
        which: u64,
    },
    /// Firmware completes the SAVE in flight.
    Complete,
    /// ...and the platform delivers its completion twice.
    CompleteTwice,
    /// ...with one output byte corrupted.
    CorruptCompletion {
        /// Byte (modulo 16).
        byte: u8,
        /// Bits to flip (0 becomes 1).
        xor: u8,
    },
    /// ...with the output cut short.
    TruncatedCompletion {
        /// Bytes kept (modulo 16).
        len: u8,
    },
    /// A completion with a token no SAVE has.
    ForgedCompletion {
        /// Token bits.
        bits: u64,
    },
    /// `VFIO_MIG_GET_PRECOPY_INFO`.
    PrecopyInfo,
    /// `set_state` (value modulo 8).
    SetState(u8),
    /// The user closes the saving file.
    Release,
    /// A VF reset.
    Reset {
        /// Firmware finishes the SAVE in flight first.
        complete_first: bool,
    },
    /// The PF disables the VF.
    Detach,
    /// The PF re-enables it.
    Attach,
    /// VFIO `close_device`, then `open_device` (which resets the VF).
    Close,
    /// `poll()`.
    Poll,
    /// `VFIO_DEVICE_FEATURE_MIG_DATA_SIZE`.
    DataSize,
    /// The guest runs `n % 4` ticks.
    Tick(u8),
    /// Fail the `nth` command of an opcode.
    Fail {
        /// Opcode index.
        op: u8,
        /// 1-based count (modulo 4, plus 1).
        nth: u8,
        /// Status (0 becomes INT_ERR).
        status: u8,
    },
    /// The next SAVE claims `by` bytes more than its buffer.
    Oversize(u32),
    /// The next SAVE reports this `next_required_umem_size`.
    NextRequired(u32),
    /// The platform fails an operation after some succeed.
    Platform {
        /// Allocation, mapping, SAVE start, command delivery.
        what: u8,
        /// Successes first (modulo 8).
        after: u8,
    },
    /// Firmware reports new initial data (`migration_state` INIT) on the
    /// next incremental QUERY.
    ReportInit,
    /// Firmware lies in a synchronous command's output.
    Lie {
        /// Opcode index.
        op: u8,
        /// Commands of it to let through (modulo 4).
        skip: u8,
        /// Byte.
        byte: u8,
        /// Bits to flip (0 becomes 1).
        xor: u8,
    },
    /// `write()` the next `len` bytes (0: all the rest) of a valid stream to
    /// the open resuming file (the first write picks `base % 4`).
    Write {
        /// Which base stream.
        base: u8,
        /// Bytes.
        len: u16,
    },
}

/// The target. See the module documentation.
pub fn run(data: &[u8]) {
    let Some((head, ops)) = decode(data) else {
        return;
    };
    let mut s = Saver::new(head);
    for op in ops {
        s.apply(op);
        s.invariants();
    }
    s.finish();
}

/// The input's parts: the head and at most [`MAX_OPS`] operations.
pub fn decode(data: &[u8]) -> Option<(SaveHead, Vec<Op>)> {
    super::decode_ops(data, MAX_OPS)
}

/// Bytes read from one saving file, and a reader following them.
struct Stream {
    file: FileId,
    bytes: Vec<u8>,
    reader: Reader,
    eof: bool,
    /// The end record caught bytes changed after their CRC was taken, which
    /// only a lying firmware can do (see `read`).
    corrupt: bool,
}

/// The resuming file being written, and how far.
struct Resume {
    file: FileId,
    /// The base stream written (picked by the first write).
    base: Option<usize>,
    /// Bytes of it the device accepted.
    pos: usize,
    /// A write failed.
    failed: bool,
    /// The user closed the file.
    released: bool,
    /// The VF had no load session open when the file opened (a VF without
    /// multi-load takes one image per session, and a session ends only at
    /// RESUME or reset).
    fresh: bool,
}

struct Saver {
    dev: Dev,
    resuming: Option<Resume>,
    /// The VF accepts several images per load session.
    multi_load: bool,
    integrity: bool,
    /// PRECOPY_INFOv2 opted in.
    v2: bool,
    /// A fault was injected, firmware lied, or the policy caps SAVE buffers:
    /// a saving file may fail. Otherwise it must not.
    disturbed: bool,
    /// A `set_state` waiting for a SAVE (the shim holds the state lock).
    waiting: Option<MigState>,
    /// The saving file reads go to.
    current: Option<FileId>,
    /// Every file handle seen.
    files: Vec<FileId>,
    streams: Vec<Stream>,
    /// A stream was checked against a destination already.
    loaded: bool,
}

impl Saver {
    fn new(head: SaveHead) -> Self {
        let bit = |b: u8| head.device & (1 << b) != 0;
        let onoff = |off: bool| if off { "off" } else { "on" };
        let spec = format!(
            "sim:state={}K,object=256-2K,seed={},chunks={},precopy={},dirty={}",
            4 + u32::from(head.state % 28),
            u32::from(head.state) + 1,
            onoff(bit(0)),
            onoff(bit(1)),
            if bit(2) { "1K" } else { "0" },
        );
        let cfg = Config {
            chunk_size: (1 + u64::from(head.chunk % 4)) * 4096,
            chunk_slots: 1 + head.slots % 8,
            max_save_buffer: match head.max_pages {
                0 => Config::default().max_save_buffer,
                n => u64::from(n) * 4096,
            },
            integrity_records: !bit(3),
            use_chunks: !bit(4),
            use_precopy: !bit(5),
            ..Config::default()
        };
        let mut dev = match harness::probed(&harness::firmware_config(&spec), cfg) {
            Ok(d) => d,
            Err(e) => panic!("probe {spec}: {e}"),
        };
        dev.set_precopy_info_v2(bit(6));
        Self {
            dev,
            resuming: None,
            multi_load: !bit(1),
            integrity: cfg.integrity_records,
            v2: bit(6),
            disturbed: head.max_pages != 0,
            waiting: None,
            current: None,
            files: vec![],
            streams: vec![],
            loaded: false,
        }
    }

    /// Retries a waiting `set_state`; `true` when the state lock is free.
    fn lock(&mut self) -> bool {
        let Some(target) = self.waiting else {
            return true;
        };
        match self.dev.set_state(target) {
            Err(e) if e.error == DeviceError::SaveInFlight => {
                assert!(self.dev.save_in_flight(), "waiting for no SAVE");
                // Arcs before the wait may have closed the resuming file.
                self.resume_finished();
                false
            }
            r => {
                self.waiting = None;
                self.after_set(r);
                true
            }
        }
    }

    fn after_set(&mut self, r: Result<Option<FileId>, mlx5vf_core::device::SetStateError>) {
        match r {
            Ok(Some(f)) => {
                self.files.push(f);
                if f.kind() == Session::Resuming {
                    let fresh = self
                        .dev
                        .hal()
                        .fw
                        .vf_state(0)
                        .is_some_and(|v| !v.load.active);
                    self.resuming = Some(Resume {
                        file: f,
                        base: None,
                        pos: 0,
                        failed: false,
                        released: false,
                        fresh,
                    });
                }
                if f.kind() == Session::Saving {
                    self.current = Some(f);
                    self.streams.push(Stream {
                        file: f,
                        bytes: vec![],
                        reader: Reader::new(),
                        eof: false,
                        corrupt: false,
                    });
                }
            }
            Ok(None) => {}
            Err(e) => {
                assert_ne!(e.reached, MigState::Error);
                assert_eq!(e.reached, self.dev.state());
                plausible(e.error);
            }
        }
        self.resume_finished();
    }

    fn apply(&mut self, op: Op) {
        if matches!(
            op,
            Op::CorruptCompletion { .. }
                | Op::TruncatedCompletion { .. }
                | Op::Fail { .. }
                | Op::Oversize(_)
                | Op::NextRequired(_)
                | Op::Platform { .. }
                | Op::Lie { .. }
        ) {
            self.disturbed = true;
        }
        match op {
            Op::Read { max, copy } => {
                let max = if max == 0 { 1 << 16 } else { u64::from(max) };
                let _ = self.read(max, copy);
            }
            Op::ReadStale { which } => self.read_stale(which),
            Op::Complete => {
                harness::complete_one(&mut self.dev);
            }
            Op::CompleteTwice => {
                if let Some((token, out)) = self.dev.hal_mut().run_save() {
                    let r = self.dev.handle_save_completion(token, &out);
                    assert!(r.is_ok(), "completion refused: {r:?}");
                    let again = self.dev.handle_save_completion(token, &out);
                    assert_eq!(
                        again,
                        Err(DeviceError::StaleCompletion),
                        "replayed completion"
                    );
                }
            }
            Op::CorruptCompletion { byte, xor } => {
                if let Some((token, mut out)) = self.dev.hal_mut().run_save() {
                    out[usize::from(byte % 16)] ^= if xor == 0 { 1 } else { xor };
                    self.dev.hal_mut().taint.lied = true;
                    let r = self.dev.handle_save_completion(token, &out);
                    assert!(r.is_ok(), "corrupted completion refused: {r:?}");
                }
            }
            Op::TruncatedCompletion { len } => {
                if let Some((token, mut out)) = self.dev.hal_mut().run_save() {
                    out.truncate(usize::from(len % 16));
                    self.dev.hal_mut().taint.lied = true;
                    let r = self.dev.handle_save_completion(token, &out);
                    assert!(r.is_ok(), "truncated completion refused: {r:?}");
                }
            }
            Op::ForgedCompletion { bits } => {
                let token = SaveToken::from_bits(bits);
                if self.dev.hal().pending.iter().all(|p| p.token != token) {
                    let r = self.dev.handle_save_completion(token, &[0u8; 16]);
                    assert_eq!(
                        r,
                        Err(DeviceError::StaleCompletion),
                        "forged token {bits:#x}"
                    );
                }
            }
            Op::PrecopyInfo => {
                if self.lock() {
                    self.precopy_info();
                }
            }
            Op::SetState(s) => {
                if self.lock() {
                    let target = MigState::ALL[usize::from(s % 8)];
                    match self.dev.set_state(target) {
                        Err(e) if e.error == DeviceError::SaveInFlight => {
                            assert!(self.dev.save_in_flight(), "waiting for no SAVE");
                            hit(Hit::SaveWaited);
                            self.waiting = Some(target);
                            // Arcs before the wait may have closed the
                            // resuming file (RESUMING -> STOP -> ...).
                            self.resume_finished();
                        }
                        r => self.after_set(r),
                    }
                }
            }
            Op::Release => {
                if let Some(f) = self.current.take() {
                    self.dev.release(f);
                    assert_eq!(self.dev.read_begin(f, 1), Err(DeviceError::NoFile));
                } else if let Some(r) = self.resuming.as_mut().filter(|r| !r.released) {
                    r.released = true;
                    self.dev.release(r.file);
                    assert_eq!(self.dev.write_plan(r.file, 1), Err(DeviceError::NoFile));
                }
            }
            Op::Reset { complete_first } => {
                if self.lock() {
                    let done = if complete_first {
                        self.dev.hal_mut().run_save()
                    } else {
                        None
                    };
                    self.dev.hal_mut().fw.reset_vf(0);
                    self.dev.handle_reset();
                    self.resuming = None;
                    assert_eq!(self.dev.state(), MigState::Running);
                    assert!(self.dev.save_engine().is_none() && self.dev.load_engine().is_none());
                    if let Some((token, out)) = done {
                        let r = self.dev.handle_save_completion(token, &out);
                        assert!(r.is_ok(), "completion after reset: {r:?}");
                    }
                }
            }
            Op::Detach => {
                if self.lock() {
                    self.dev.handle_detach();
                    self.dev.hal_mut().fw.detach_vf(0);
                    self.resuming = None;
                    assert!(self.dev.save_engine().is_none());
                }
            }
            Op::Attach => {
                if self.lock() {
                    self.dev.hal_mut().fw.attach_vf(0);
                    self.dev.handle_attach();
                }
            }
            Op::Close => {
                if self.lock() {
                    self.dev.close();
                    self.dev.hal_mut().fw.reset_vf(0);
                    self.dev.open();
                    self.resuming = None;
                    assert!(self.dev.save_engine().is_none());
                }
            }
            Op::Poll => self.poll(),
            Op::DataSize => {
                if let Some(Err(e)) = self.lock().then(|| self.dev.data_size()) {
                    plausible(e);
                }
            }
            Op::Tick(n) => self.dev.hal_mut().fw.tick(0, u32::from(n % 4)),
            Op::Fail { op, nth, status } => {
                let op = opcode::ALL[usize::from(op) % opcode::ALL.len()];
                let status = if status == 0 { 1 } else { status };
                let _ = self.dev.hal_mut().fw.faults_mut().fail_nth(
                    op,
                    u32::from(nth % 4) + 1,
                    status,
                    0x5a7e,
                );
            }
            Op::Oversize(by) => {
                self.dev.hal_mut().fw.faults_mut().oversize_next_save(by);
                self.dev.hal_mut().taint.lied = true;
            }
            Op::NextRequired(v) => {
                self.dev
                    .hal_mut()
                    .fw
                    .faults_mut()
                    .next_required_umem_size(v);
                self.dev.hal_mut().taint.lied = true;
            }
            Op::Platform { what, after } => {
                let after = u32::from(after % 8);
                let k = &mut self.dev.hal_mut().knobs;
                match what % 4 {
                    0 => k.fail_alloc = Some(FailAfter::new(after, HalErrorKind::OutOfMemory)),
                    1 => k.fail_map = Some(FailAfter::new(after, HalErrorKind::OutOfMemory)),
                    2 => k.fail_start_save = Some(FailAfter::new(after, HalErrorKind::Delivery)),
                    _ => k.fail_exec = Some(FailAfter::new(after, HalErrorKind::Timeout)),
                }
            }
            Op::ReportInit => self
                .dev
                .hal_mut()
                .fw
                .faults_mut()
                .report_init_on_next_query(),
            Op::Write { base, len } => self.write(base, len),
            Op::Lie {
                op,
                skip,
                byte,
                xor,
            } => {
                self.dev.hal_mut().knobs.corrupt_exec = Some(ExecCorruption {
                    opcode: opcode::ALL[usize::from(op) % opcode::ALL.len()],
                    skip: u32::from(skip % 4),
                    byte: u16::from(byte),
                    xor: if xor == 0 { 1 } else { xor },
                });
            }
        }
    }

    /// After a transition: if RESUMING → STOP closed the resuming file,
    /// check what it accepted.
    fn resume_finished(&mut self) {
        if self.resuming.is_none() || self.dev.load_engine().is_some() {
            return;
        }
        let Some(r) = self.resuming.take() else {
            return;
        };
        hit(Hit::SaveResumeFinished);
        let Some(base) = r.base else {
            return;
        };
        let b = &bases()[base];
        assert!(
            !r.failed,
            "{}: RESUMING -> STOP after a failed write",
            b.name
        );
        let whole = r.pos == b.stream.len();
        assert!(
            whole || r.pos == 0 || !b.integrity,
            "{}: RESUMING -> STOP accepted {} of {} bytes of a stream of ours",
            b.name,
            r.pos,
            b.stream.len()
        );
        let lied = self.dev.hal().taint.lied;
        if whole
            && !self.disturbed
            && !lied
            && matches!(
                self.dev.state(),
                MigState::Stop | MigState::RunningP2p | MigState::Running
            )
        {
            assert_eq!(
                self.dev.hal().fw.digest(0),
                Some(b.digest),
                "{}: the VF does not hold the state it was loaded with",
                b.name
            );
            hit(Hit::SaveResumeDigestChecked);
        }
    }

    /// Writes the next bytes of a base stream to the resuming file, waiting
    /// for SAVEs as a shim does.
    fn write(&mut self, base: u8, len: u16) {
        let Some(r) = self.resuming.as_mut().filter(|r| !r.failed && !r.released) else {
            return;
        };
        let (file, pos, fresh) = (r.file, r.pos, r.fresh);
        let base = *r.base.get_or_insert(usize::from(base) % bases().len());
        let stream = &bases()[base].stream;
        let end = match len {
            0 => stream.len(),
            n => (pos + usize::from(n)).min(stream.len()),
        };
        let mut pos = pos;
        let mut failed = false;
        for _ in 0..8 {
            let mut accepted = 0;
            let w = harness::write_counted(
                &mut self.dev,
                file,
                &stream[pos..end],
                &mut Greedy,
                &mut accepted,
            );
            pos += accepted;
            match w {
                Ok(()) => break,
                // The LOAD waits for a SAVE of an earlier file: the shim
                // waits for its completion and writes the rest.
                Err(DeviceError::SaveInFlight) => {
                    hit(Hit::SaveWriteWaited);
                    assert!(harness::complete_one(&mut self.dev), "waiting for no SAVE");
                }
                Err(e) => {
                    plausible(e);
                    let b = &bases()[base];
                    let one_image = !b.precopy && fresh;
                    assert!(
                        self.disturbed
                            || self.dev.hal().taint.lied
                            || !(self.multi_load || one_image),
                        "{}: writing a valid stream failed at byte {pos} on a healthy device: {e}",
                        b.name
                    );
                    failed = true;
                    break;
                }
            }
        }
        if let Some(r) = self.resuming.as_mut() {
            r.pos = pos;
            r.failed |= failed;
        }
    }

    fn read(&mut self, max: u64, copy: u16) -> Option<Result<u64, DeviceError>> {
        let f = self.current?;
        let mut buf = vec![];
        let copy = |len: u64| {
            if copy == 0 {
                len
            } else {
                len.min(u64::from(copy))
            }
        };
        let r = harness::read_copying(&mut self.dev, f, max, &mut buf, copy);
        let state = self.dev.state();
        match r {
            Ok(0) => {
                assert_eq!(state, MigState::StopCopy, "end of stream in {state}");
                self.stream_ended(f);
            }
            Ok(n) => {
                assert!(n <= max);
                let lied = self.dev.hal().taint.lied;
                let s = self.stream(f);
                assert!(!s.eof, "data after end of stream");
                s.bytes.extend_from_slice(&buf);
                // Every prefix of a saved stream is well formed, unless
                // firmware lied: a corrupted CREATE_MKEY output, say, sends
                // a SAVE into another buffer whose bytes were already
                // summed, and the end record's CRC is what catches that.
                let mut rest = &buf[..];
                while !rest.is_empty() && !s.corrupt {
                    match s.reader.feed(rest) {
                        Ok(step) => rest = &rest[step.consumed..],
                        Err(e)
                            if lied && matches!(e.kind, StreamErrorKind::IntegrityMismatch(_)) =>
                        {
                            hit(Hit::SaveLieCaughtByIntegrity);
                            s.corrupt = true;
                        }
                        Err(e) => panic!("the saved stream is malformed: {e}"),
                    }
                }
            }
            Err(DeviceError::NoMessage) => {
                assert!(
                    matches!(state, MigState::PreCopy | MigState::PreCopyP2p),
                    "ENOMSG in {state}"
                );
            }
            Err(DeviceError::WouldBlock) => {
                assert!(self.dev.save_in_flight(), "reader waits for no SAVE");
            }
            Err(DeviceError::FileFailed) => {
                hit(Hit::SaveFileFailed);
                assert!(self.disturbed, "saving file failed on a healthy device");
            }
            Err(DeviceError::NoFile) => {}
            Err(e) => panic!("read: {e:?}"),
        }
        Some(r)
    }

    fn stream(&mut self, f: FileId) -> &mut Stream {
        let i = self.streams.iter().position(|s| s.file == f);
        match i {
            Some(i) => &mut self.streams[i],
            None => panic!("no stream for {f:?}"),
        }
    }

    /// Checks a stream read to its end; loads the first clean one into a
    /// destination.
    fn stream_ended(&mut self, f: FileId) {
        let integrity = self.integrity;
        let s = self.stream(f);
        if s.eof {
            return;
        }
        s.eof = true;
        hit(Hit::SaveEof);
        if s.corrupt {
            return;
        }
        let t = reference(&s.bytes);
        assert_eq!(
            t.verdict,
            Verdict::Complete {
                verified: integrity
            },
            "stream read to its end"
        );
        if self.loaded || self.dev.hal().taint.lied {
            return;
        }
        // A VF whose load was cut short (its resuming file closed by a
        // detach or close before the stream ended) holds a state the sim
        // marks incomplete; the sim still saves it, as a complete image, so
        // the digests differ by construction (see the fuzz report).
        let Some(vf) = self.dev.hal().fw.vf_state(0) else {
            panic!("no VF 0");
        };
        if vf.load.active && vf.load.received < vf.load.total {
            return;
        }
        self.loaded = true;
        let stream = self.stream(f).bytes.clone();
        let Some(digest) = self.dev.hal().fw.digest(0) else {
            panic!("no VF 0");
        };
        let fw = harness::firmware_config("sim:state=4K,object=256-1K,seed=98");
        let mut dst = match harness::probed(&fw, Config::default()) {
            Ok(d) => d,
            Err(e) => panic!("destination probe: {e}"),
        };
        let df = match harness::set_state(&mut dst, MigState::Resuming, 0) {
            Ok(Some(f)) => f,
            r => panic!("destination RESUMING: {r:?}"),
        };
        let w = harness::write(&mut dst, df, &stream, &mut Greedy);
        assert!(w.is_ok(), "destination write: {w:?}");
        let r = harness::set_state(&mut dst, MigState::Stop, 0);
        assert!(r.is_ok(), "destination STOP: {r:?}");
        dst.release(df);
        let r = harness::set_state(&mut dst, MigState::Running, 0);
        assert!(r.is_ok(), "destination RUNNING: {r:?}");
        assert_eq!(
            dst.hal().fw.digest(0),
            Some(digest),
            "the destination does not hold the source's state"
        );
        hit(Hit::SaveDigestChecked);
        harness::recover(&mut dst);
        harness::assert_clean(&dst);
    }

    fn read_stale(&mut self, which: u64) {
        let live = self.current;
        let f = if self.files.is_empty() || which & 1 == 1 {
            FileId::from_bits(which >> 1)
        } else {
            Some(self.files[(which >> 1) as usize % self.files.len()])
        };
        let Some(f) = f.filter(|f| Some(*f) != live) else {
            return;
        };
        let r = self.dev.read_begin(f, 1 << 16);
        assert_eq!(
            r,
            Err(DeviceError::NoFile),
            "read through stale handle {f:?}"
        );
        assert_eq!(self.dev.read_end(f, 1), Err(DeviceError::UnplannedWrite));
    }

    fn precopy_info(&mut self) {
        let Some(f) = self.current else {
            return;
        };
        let state = self.dev.state();
        let mut r = self.dev.precopy_info(f);
        if r == Err(DeviceError::SaveInFlight) {
            // The ioctl waits for the SAVE, then asks again.
            assert!(harness::complete_one(&mut self.dev), "waiting for no SAVE");
            r = self.dev.precopy_info(f);
        }
        match r {
            Ok(info) => {
                hit(Hit::SavePrecopyInfo);
                assert!(matches!(state, MigState::PreCopy | MigState::PreCopyP2p));
                if info.reinit {
                    hit(Hit::SaveReinit);
                    assert!(self.v2, "REINIT without PRECOPY_INFOv2");
                    assert_eq!(state, MigState::PreCopy, "REINIT in {state}");
                }
            }
            Err(DeviceError::NotPreCopy) => {
                assert!(!matches!(state, MigState::PreCopy | MigState::PreCopyP2p));
            }
            Err(DeviceError::SaveInFlight) => {}
            Err(e) => plausible(e),
        }
    }

    fn poll(&mut self) {
        let Some(f) = self.current else {
            return;
        };
        let p = self.dev.poll(f);
        let r = self.dev.read_begin(f, 1);
        match r {
            Ok(_) => {
                assert_eq!(
                    p,
                    Poll {
                        readable: true,
                        hangup: false
                    },
                    "poll vs read {r:?}"
                );
                if r != Ok(mlx5vf_core::device::ReadSegment::Eof) {
                    let e = self.dev.read_end(f, 0);
                    assert!(e.is_ok(), "read_end(0): {e:?}");
                }
            }
            Err(DeviceError::WouldBlock | DeviceError::NoMessage) => {
                assert!(!p.readable, "poll readable, read says {r:?}");
            }
            Err(DeviceError::FileFailed | DeviceError::NoFile) => {
                assert!(p.readable && p.hangup, "poll {p:?}, read says {r:?}");
            }
            Err(e) => panic!("read_begin: {e:?}"),
        }
    }

    fn invariants(&mut self) {
        let s = self.dev.state();
        assert_ne!(s, MigState::Error, "device in ERROR");
        if let Some(e) = self.dev.save_engine() {
            assert!(
                e.ready_chunks() <= e.slot_count(),
                "{} unread chunks in {} slots",
                e.ready_chunks(),
                e.slot_count()
            );
            assert!(s.is_saving_group(), "saving file open in {s}");
            // The queue is sized for the slots' chunks plus two PRE_COPY
            // images (`save::QUEUE_CAP`).
            // The open saving file is the last one opened (released or not).
            let read = self
                .streams
                .last()
                .map_or(0, |st| st.reader.fw_data_records());
            let unread = e.stats().fw_data_records.saturating_sub(read);
            let bound = e.slot_count() as u64 + 2;
            assert!(
                unread <= bound,
                "{unread} unread FW_DATA records, the queue holds {bound}"
            );
            assert!(
                self.disturbed || e.state() != mlx5vf_core::save::FileState::Error,
                "saving file failed on a healthy device: {:?}",
                e.stats()
            );
        }
        let d = &self.dev;
        assert!(d.load_engine().is_none() || s == MigState::Resuming);
        assert!(d.hal().pending.len() <= 1, "two SAVEs in flight");
        assert_eq!(
            d.save_in_flight(),
            d.hal().pending.len() == 1,
            "device and platform disagree on the SAVE in flight"
        );
        assert_eq!(d.stats().buffer_bytes, d.hal().live_bytes, "buffer bytes");
    }

    /// Finishes the waiting transition, drives the saving file to its end,
    /// then recovers and checks for leaks.
    fn finish(mut self) {
        for _ in 0..16 {
            if self.waiting.is_none() {
                break;
            }
            harness::complete_one(&mut self.dev);
            self.lock();
        }
        assert!(self.waiting.is_none(), "set_state waits forever");
        self.invariants();
        // Drive the saving file to its end: PRE_COPY -> STOP_COPY, then
        // read until end of stream or failure. It must get there.
        self.dev.hal_mut().knobs = Knobs::default();
        self.dev.hal_mut().fw.faults_mut().clear();
        if let Some(f) = self.current {
            if matches!(self.dev.state(), MigState::PreCopy | MigState::PreCopyP2p) {
                let r = harness::set_state(&mut self.dev, MigState::StopCopy, 4);
                if let Err(e) = r {
                    plausible(e.error);
                }
                self.invariants();
            }
            if self.dev.state() == MigState::StopCopy {
                let mut rounds = 0;
                loop {
                    rounds += 1;
                    assert!(rounds < 100_000, "saving file never ends");
                    match self.read(1 << 16, 0) {
                        Some(Ok(0) | Err(DeviceError::NoFile | DeviceError::FileFailed)) | None => {
                            break;
                        }
                        Some(Ok(_)) => {}
                        Some(Err(DeviceError::WouldBlock)) => {
                            assert!(harness::complete_one(&mut self.dev));
                        }
                        Some(Err(e)) => panic!("draining {f:?}: {e:?}"),
                    }
                    self.invariants();
                }
            }
        }
        harness::recover(&mut self.dev);
        harness::assert_clean(&self.dev);
    }
}

/// Errors a correct driver never reports to a shim that follows the
/// protocol.
fn plausible(e: DeviceError) {
    assert!(
        !matches!(
            e,
            DeviceError::UnplannedWrite
                | DeviceError::TableFull
                | DeviceError::StaleCompletion
                | DeviceError::ReaderBusy
                | DeviceError::Encode(_)
                | DeviceError::Save(mlx5vf_core::save::SaveError::Capacity)
        ),
        "unexpected error: {e:?}"
    );
}
