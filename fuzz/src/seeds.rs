//! The seed corpus: inputs written from typed values, in exactly the byte
//! format `arbitrary` decodes them from (so a seed means what it says), and
//! streams from the sim and by hand.
//!
//! `tests/seeds.rs` checks that every seed decodes back to the values it was
//! written from, and (ignored test `write_seed_corpus`) writes them to
//! `fuzz/corpus/<target>/seed-*`.

use mlx5vf_core::device::Config;
use mlx5vf_core::stream::{Header, RecordFlags, Tag};

use crate::harness::{self, SaveRun};
use crate::streams::{linux_stream, our_stream};
use crate::targets::cmdq_decode::CmdqHead;
use crate::targets::ifc_decode::{CmdFields, IfcHead};
use crate::targets::resume_engine::{Fault, Interrupt, Mutation, ResumeHead};
use crate::targets::save_engine::{Op, SaveHead};
use crate::targets::state_graph::{Caps, GraphOp};

/// Writes values in `arbitrary`'s format: integers little-endian, `bool`
/// as one byte, an enum as the `u32` that selects its variant followed by
/// its fields, an `Option` as a `bool` and the value.
#[derive(Clone, Debug, Default)]
pub struct ArbWriter(pub Vec<u8>);

impl ArbWriter {
    /// A `u8`.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    /// A `u16`.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// A `u32`.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// A `u64`.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// A `bool`.
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u8(u8::from(v))
    }
    /// Variant `index` of an enum with `count` variants (the derive maps a
    /// `u32` `x` to variant `(x * count) >> 32`).
    pub fn variant(&mut self, index: u32, count: u32) -> &mut Self {
        assert!(index < count);
        let x = (u64::from(index) << 32).div_ceil(u64::from(count));
        self.u32(u32::try_from(x).unwrap_or(u32::MAX))
    }
    /// Raw bytes.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
}

/// A type the seed writer can write.
pub trait Encode {
    /// Appends `self` in `arbitrary`'s format.
    fn encode(&self, w: &mut ArbWriter);
}

impl Encode for CmdFields {
    fn encode(&self, w: &mut ArbWriter) {
        w.u16(self.vhca_id)
            .u16(self.function_id)
            .u8(self.flags)
            .u64(self.va)
            .u32(self.mkey)
            .u32(self.size)
            .u32(self.pd)
            .u8(self.npages)
            .u64(self.page_base)
            .u16(self.short);
    }
}

impl Encode for IfcHead {
    fn encode(&self, w: &mut ArbWriter) {
        w.u16(self.len);
        self.cmd.encode(w);
        w.u32(self.field.0).u32(self.field.1).u64(self.field.2);
    }
}

impl Encode for Fault {
    fn encode(&self, w: &mut ArbWriter) {
        match *self {
            Self::None => {
                w.variant(0, 4);
            }
            Self::Firmware { op, nth, status } => {
                w.variant(1, 4).u8(op).u8(nth).u8(status);
            }
            Self::Platform { what, after } => {
                w.variant(2, 4).u8(what).u8(after);
            }
            Self::Lie {
                op,
                skip,
                byte,
                xor,
            } => {
                w.variant(3, 4).u8(op).u8(skip).u8(byte).u8(xor);
            }
        }
    }
}

impl Encode for Interrupt {
    fn encode(&self, w: &mut ArbWriter) {
        let i = match self {
            Self::Reset => 0,
            Self::Detach => 1,
            Self::Close => 2,
            Self::Release => 3,
        };
        w.variant(i, 4);
    }
}

impl Encode for ResumeHead {
    fn encode(&self, w: &mut ArbWriter) {
        w.u8(self.source).u8(self.dst);
        for p in self.pieces {
            w.u16(p);
        }
        for t in self.takes {
            w.u8(t);
        }
        w.u8(self.abandon);
        self.fault.encode(w);
        match self.interrupt {
            None => {
                w.bool(false);
            }
            Some((k, i)) => {
                w.bool(true).u8(k);
                i.encode(w);
            }
        }
    }
}

impl Encode for Mutation {
    fn encode(&self, w: &mut ArbWriter) {
        const N: u32 = 15;
        match *self {
            Self::Flip { at, bit } => {
                w.variant(0, N).u32(at).u8(bit);
            }
            Self::Set { at, value } => {
                w.variant(1, N).u32(at).u8(value);
            }
            Self::Insert { at, len } => {
                w.variant(2, N).u32(at).u8(len);
            }
            Self::Delete { at, len } => {
                w.variant(3, N).u32(at).u16(len);
            }
            Self::Truncate { at } => {
                w.variant(4, N).u32(at);
            }
            Self::DupRecord { rec } => {
                w.variant(5, N).u8(rec);
            }
            Self::DropRecord { rec } => {
                w.variant(6, N).u8(rec);
            }
            Self::SwapRecords { a, b } => {
                w.variant(7, N).u8(a).u8(b);
            }
            Self::Splice { rec, from, other } => {
                w.variant(8, N).u8(rec).u8(from).u8(other);
            }
            Self::SetSize { rec, size } => {
                w.variant(9, N).u8(rec).u64(size);
            }
            Self::SetFlags { rec, flags } => {
                w.variant(10, N).u8(rec).u32(flags);
            }
            Self::SetTag { rec, tag } => {
                w.variant(11, N).u8(rec).u32(tag);
            }
            Self::InsertRecord {
                rec,
                tag,
                flags,
                len,
            } => {
                w.variant(12, N).u8(rec).u32(tag).u32(flags).u8(len);
            }
            Self::StripOurs => {
                w.variant(13, N);
            }
            Self::RecomputeEnd => {
                w.variant(14, N);
            }
        }
    }
}

impl Encode for SaveHead {
    fn encode(&self, w: &mut ArbWriter) {
        w.u8(self.device)
            .u8(self.slots)
            .u8(self.chunk)
            .u8(self.max_pages)
            .u8(self.state);
    }
}

impl Encode for Op {
    fn encode(&self, w: &mut ArbWriter) {
        const N: u32 = 24;
        match *self {
            Self::Read { max, copy } => {
                w.variant(0, N).u16(max).u16(copy);
            }
            Self::ReadStale { which } => {
                w.variant(1, N).u64(which);
            }
            Self::Complete => {
                w.variant(2, N);
            }
            Self::CompleteTwice => {
                w.variant(3, N);
            }
            Self::CorruptCompletion { byte, xor } => {
                w.variant(4, N).u8(byte).u8(xor);
            }
            Self::TruncatedCompletion { len } => {
                w.variant(5, N).u8(len);
            }
            Self::ForgedCompletion { bits } => {
                w.variant(6, N).u64(bits);
            }
            Self::PrecopyInfo => {
                w.variant(7, N);
            }
            Self::SetState(s) => {
                w.variant(8, N).u8(s);
            }
            Self::Release => {
                w.variant(9, N);
            }
            Self::Reset { complete_first } => {
                w.variant(10, N).bool(complete_first);
            }
            Self::Detach => {
                w.variant(11, N);
            }
            Self::Attach => {
                w.variant(12, N);
            }
            Self::Close => {
                w.variant(13, N);
            }
            Self::Poll => {
                w.variant(14, N);
            }
            Self::DataSize => {
                w.variant(15, N);
            }
            Self::Tick(n) => {
                w.variant(16, N).u8(n);
            }
            Self::Fail { op, nth, status } => {
                w.variant(17, N).u8(op).u8(nth).u8(status);
            }
            Self::Oversize(by) => {
                w.variant(18, N).u32(by);
            }
            Self::NextRequired(v) => {
                w.variant(19, N).u32(v);
            }
            Self::Platform { what, after } => {
                w.variant(20, N).u8(what).u8(after);
            }
            Self::ReportInit => {
                w.variant(21, N);
            }
            Self::Lie {
                op,
                skip,
                byte,
                xor,
            } => {
                w.variant(22, N).u8(op).u8(skip).u8(byte).u8(xor);
            }
            Self::Write { base, len } => {
                w.variant(23, N).u8(base).u16(len);
            }
        }
    }
}

impl Encode for Caps {
    fn encode(&self, w: &mut ArbWriter) {
        w.u16(self.0);
    }
}

impl Encode for GraphOp {
    fn encode(&self, w: &mut ArbWriter) {
        const N: u32 = 11;
        match *self {
            Self::Set(s) => {
                w.variant(0, N).u8(s);
            }
            Self::SetRaw(raw) => {
                w.variant(1, N).u32(raw);
            }
            Self::Oracle { cur, new, flags } => {
                w.variant(2, N).u32(cur).u32(new).u64(flags);
            }
            Self::Path { cur, new, flags } => {
                w.variant(3, N).u8(cur).u8(new).u8(flags);
            }
            Self::Fail { op, status } => {
                w.variant(4, N).u8(op).u8(status);
            }
            Self::HalFail { what, after } => {
                w.variant(5, N).u8(what).u8(after);
            }
            Self::Detach => {
                w.variant(6, N);
            }
            Self::Attach => {
                w.variant(7, N);
            }
            Self::Reset { complete_first } => {
                w.variant(8, N).bool(complete_first);
            }
            Self::Tick => {
                w.variant(9, N);
            }
            Self::Complete => {
                w.variant(10, N);
            }
        }
    }
}

/// A seed: target, name and bytes. It is written to
/// `fuzz/corpus/<target>/seed-<name>`, or `.../<name>` for names starting
/// with `regress-` (inputs that once found a bug).
pub type Seed = (&'static str, &'static str, Vec<u8>);

fn encode_all<T: Encode>(w: &mut ArbWriter, items: &[T]) {
    for i in items {
        i.encode(w);
    }
}

/// An operations target's `decode`: the head and the operations.
type Decode<H, O> = fn(&[u8]) -> Option<(H, Vec<O>)>;

/// A seed of an operations target: `head` then `ops`, checked to decode
/// back to them with the target's `decode`.
fn ops_seed<H, O>(
    target: &'static str,
    name: &'static str,
    head: &H,
    ops: &[O],
    decode: Decode<H, O>,
) -> Seed
where
    H: Encode + PartialEq + std::fmt::Debug,
    O: Encode + PartialEq + std::fmt::Debug,
{
    let mut w = ArbWriter::default();
    head.encode(&mut w);
    encode_all(&mut w, ops);
    let decoded = decode(&w.0);
    assert!(
        decoded
            .as_ref()
            .is_some_and(|(h, o)| h == head && o.as_slice() == ops),
        "seed {name}: decodes as {decoded:?}"
    );
    (target, name, w.0)
}

fn ifc_seed(name: &'static str, head: IfcHead, out: &[u8]) -> Seed {
    let mut w = ArbWriter::default();
    head.encode(&mut w);
    w.bytes(out);
    let decoded = crate::targets::ifc_decode::decode(&w.0);
    assert_eq!(decoded, Some((head, out)), "seed {name}");
    ("ifc_decode", name, w.0)
}

/// The `ifc_decode` seeds: real-looking outputs of each size.
pub fn ifc_decode() -> Vec<Seed> {
    let cmd = CmdFields {
        vhca_id: 0x104,
        function_id: 1,
        flags: 0b0000_0111,
        va: 0,
        mkey: 0x1234_5600,
        size: 0x80_0000,
        pd: 5,
        npages: 3,
        page_base: 0x1_0000_0000,
        short: 7,
    };
    let mut seeds = vec![];
    // QUERY_HCA_CAP general caps: vhca_id, hca_cap_2, adv_virtualization,
    // migration set (status OK).
    let mut cap = vec![0u8; 16 + 212];
    cap[16 + 4] = 0x80; // hca_cap_2 (bit 0x20)
    cap[16 + 6..16 + 8].copy_from_slice(&0x104u16.to_be_bytes()); // vhca_id (bit 0x30)
    cap[16 + 175] |= 0x40; // adv_virtualization (bit 0x579)
    cap[16 + 209] |= 0x04; // migration (bit 0x68d)
    seeds.push(ifc_seed(
        "query-hca-cap-general",
        IfcHead {
            len: 4112,
            cmd: CmdFields {
                flags: 0b100,
                ..cmd
            },
            field: (0x40, 32, 0xdead_beef),
        },
        &cap,
    ));
    // General-2 caps: migratable, multi-load, tracking, chunks.
    let mut cap2 = vec![0u8; 16 + 28];
    cap2[16 + 16] = 0x80;
    cap2[16 + 25] = 0xc0;
    cap2[16 + 26] = 0x80;
    seeds.push(ifc_seed(
        "query-hca-cap-general2",
        IfcHead {
            len: 4112,
            cmd: CmdFields {
                flags: 0b110,
                ..cmd
            },
            field: (0xc8, 1, 1),
        },
        &cap2,
    ));
    // SAVE_VHCA_STATE OK: actual 0x7ff000, next 0x800000.
    let mut save = vec![0u8; 16];
    save[8..12].copy_from_slice(&0x7f_f000u32.to_be_bytes());
    save[12..16].copy_from_slice(&0x80_0000u32.to_be_bytes());
    seeds.push(ifc_seed(
        "save-ok",
        IfcHead {
            len: 16,
            cmd,
            field: (0x60, 32, 7),
        },
        &save,
    ));
    // QUERY_VHCA_MIGRATION_STATE OK with sizes and migration_state INIT.
    let mut q = vec![0u8; 64];
    q[12] = 0x40;
    q[16..20].copy_from_slice(&0x1_0000u32.to_be_bytes());
    q[24..32].copy_from_slice(&0x1_4000_0000u64.to_be_bytes());
    seeds.push(ifc_seed(
        "query-migration-state",
        IfcHead {
            len: 64,
            cmd: CmdFields { flags: 0x50, ..cmd },
            field: (0xc0, 64, u64::MAX),
        },
        &q,
    ));
    // Fuzz find 1 (fixed in 14c0bc6): a 64-bit field at a bit offset that
    // is not a multiple of 8 spans nine bytes.
    seeds.push(ifc_seed(
        "regress-field-64-bits-unaligned",
        IfcHead {
            len: 16,
            cmd,
            field: (4, 64, 0x0123_4567_89ab_cdef),
        },
        &[0xff; 16],
    ));
    // A failed command: BAD_RES_STATE_ERR with a syndrome.
    seeds.push(ifc_seed(
        "failed-status",
        IfcHead {
            len: 16,
            cmd: CmdFields { flags: 0x88, ..cmd },
            field: (0x04, 64, 1),
        },
        &[
            0x09, 0, 0, 0, 0x00, 0x1f, 0x2e, 0x3d, 0, 0, 0, 0, 0, 0, 0x12, 0x34,
        ],
    ));
    seeds
}

/// The `stream_reader` seeds: Linux-format streams by hand, streams of ours
/// saved from small sim states, and some awkward records.
pub fn stream_reader() -> Vec<Seed> {
    let img_a: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
    let img_b: Vec<u8> = (0..45u32).map(|i| (i ^ 0x5a) as u8).collect();
    let mut seeds = vec![];
    // Split sizes 1, 16, 255 and 4096 (0), then the stream.
    let prefix = [4u8, 1, 16, 255, 0];
    let linux = linux_stream(0x8000, &[&img_a, &img_b]);
    seeds.push((
        "stream_reader",
        "linux-two-images",
        [&prefix[..], &linux].concat(),
    ));
    let ours = our_stream(4096, &[&img_a, &[], &img_b]);
    seeds.push((
        "stream_reader",
        "ours-with-empty-image",
        [&[2u8, 3, 100][..], &ours].concat(),
    ));
    // An unknown optional record, a long STOP_COPY_SIZE, then a truncated
    // FW_DATA record.
    let mut odd = vec![];
    let unknown = Header {
        record_size: 5,
        flags: RecordFlags::OPTIONAL,
        tag: Tag::Unknown(0x99),
    };
    odd.extend_from_slice(&unknown.to_bytes());
    odd.extend_from_slice(b"hello");
    let long_size = Header {
        record_size: 12,
        flags: RecordFlags::OPTIONAL,
        tag: Tag::StopCopySize,
    };
    odd.extend_from_slice(&long_size.to_bytes());
    odd.extend_from_slice(&[0, 0x10, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]);
    odd.extend_from_slice(&Header::fw_data(100).to_bytes());
    odd.extend_from_slice(&img_a[..60]);
    seeds.push(("stream_reader", "odd-records", [&[0u8][..], &odd].concat()));
    // Sim-produced: stop-copy in chunks, and PRE_COPY, with our records.
    for (name, spec, precopy) in [
        (
            "sim-stop-copy-chunks",
            "sim:state=2K,object=300-600,seed=21",
            false,
        ),
        (
            "sim-pre-copy",
            "sim:state=768,object=128-256,seed=22,dirty=256",
            true,
        ),
    ] {
        let (s, _) = harness::save_stream(&SaveRun {
            spec,
            cfg: Config {
                chunk_size: 4096,
                ..Config::default()
            },
            precopy,
            read_size: 333,
        });
        seeds.push(("stream_reader", name, [&[1u8, 7][..], &s].concat()));
    }
    seeds
}

/// The `resume_engine` seeds: each base stream as is, a few mutated ones,
/// and raw Linux-format streams.
pub fn resume_engine() -> Vec<Seed> {
    let head = ResumeHead {
        source: 0,
        dst: 0,
        pieces: [0, 0, 0, 0],
        takes: [0, 0, 0, 0],
        abandon: 0,
        fault: Fault::None,
        interrupt: None,
    };
    let mut seeds = vec![];
    let mut seed = |name, head: ResumeHead, muts: &[Mutation], tail: &[u8]| {
        let mut w = ArbWriter::default();
        head.encode(&mut w);
        w.u8(u8::try_from(muts.len()).unwrap_or(0));
        encode_all(&mut w, muts);
        w.bytes(tail);
        let decoded = crate::targets::resume_engine::decode(&w.0);
        assert_eq!(decoded, Some((head, muts.to_vec(), tail)), "seed {name}");
        seeds.push(("resume_engine", name, w.0));
    };
    for (i, name) in [
        "base-stop-copy-chunks",
        "base-pre-copy",
        "base-legacy-linux",
        "base-pre-copy-linux",
    ]
    .into_iter()
    .enumerate()
    {
        seed(
            name,
            ResumeHead {
                source: i as u8,
                pieces: [1000, 17, 4096, 3],
                takes: [0, 100, 0, 7],
                ..head
            },
            &[],
            &[],
        );
    }
    seed(
        "base-pre-copy-record-dropped-end-fixed",
        ResumeHead { source: 1, ..head },
        &[Mutation::DropRecord { rec: 4 }, Mutation::RecomputeEnd],
        &[],
    );
    seed(
        "base-stripped-with-optional-record",
        ResumeHead { source: 0, ..head },
        &[
            Mutation::StripOurs,
            Mutation::InsertRecord {
                rec: 1,
                tag: 0x1234,
                flags: 1,
                len: 9,
            },
        ],
        b"optional!",
    );
    seed(
        "base-reset-mid-stream",
        ResumeHead {
            source: 1,
            pieces: [500, 500, 500, 500],
            interrupt: Some((3, Interrupt::Reset)),
            ..head
        },
        &[],
        &[],
    );
    seed(
        "base-load-fails",
        ResumeHead {
            source: 0,
            fault: Fault::Firmware {
                op: 7,
                nth: 1,
                status: 9,
            },
            ..head
        },
        &[],
        &[],
    );
    // Fuzz find 2 (fixed in 14c0bc6): a byte after the stream-end record.
    seed(
        "regress-data-after-end-record",
        ResumeHead { source: 0, ..head },
        &[Mutation::Insert {
            at: u32::try_from(crate::targets::resume_engine::bases()[0].stream.len()).unwrap_or(0),
            len: 1,
        }],
        &[0x42],
    );
    let img: Vec<u8> = (0..200u32).map(|i| (i * 13) as u8).collect();
    seed(
        "raw-linux-not-an-image",
        ResumeHead {
            source: 0x80,
            ..head
        },
        &[],
        &linux_stream(1 << 20, &[&img]),
    );
    seeds
}

/// The `save_engine` seeds: whole migrations (stop-copy, PRE_COPY with
/// dirtying and PRECOPY_INFOv2), and some hostile firmware.
pub fn save_engine() -> Vec<Seed> {
    let mut seeds = vec![];
    let mut seed = |name, head: SaveHead, ops: &[Op]| {
        seeds.push(ops_seed(
            "save_engine",
            name,
            &head,
            ops,
            crate::targets::save_engine::decode,
        ));
    };
    let head = SaveHead {
        device: 0,
        slots: 1,
        chunk: 0,
        max_pages: 0,
        state: 8,
    };
    let read = Op::Read { max: 3000, copy: 0 };
    let mut stop_copy = vec![Op::SetState(3)];
    for _ in 0..8 {
        stop_copy.extend([Op::Complete, read, read]);
    }
    stop_copy.extend([Op::SetState(1), Op::Release, Op::SetState(2)]);
    seed("stop-copy", head, &stop_copy);
    let mut pre_copy = vec![Op::SetState(6), Op::Complete, read, read, read];
    for _ in 0..3 {
        pre_copy.extend([Op::Tick(1), Op::PrecopyInfo, Op::Complete, read, read]);
    }
    pre_copy.extend([Op::SetState(7), Op::SetState(3)]);
    for _ in 0..6 {
        pre_copy.extend([Op::Complete, read, read]);
    }
    pre_copy.push(Op::SetState(1));
    seed(
        "pre-copy-dirty",
        SaveHead {
            device: 0b100,
            slots: 2,
            ..head
        },
        &pre_copy,
    );
    let mut reinit = vec![Op::SetState(6), Op::Complete];
    for _ in 0..3 {
        reinit.extend([Op::Tick(1), Op::ReportInit, Op::PrecopyInfo, Op::Complete]);
    }
    reinit.extend([read, read, read, read, Op::SetState(2)]);
    seed(
        "pre-copy-reinit",
        SaveHead {
            device: 0b100_0100,
            ..head
        },
        &reinit,
    );
    // Fuzz find 3 (fixed in b34e68c): REINIT after REINIT with nothing read
    // outgrew the PRE_COPY image queue.
    let mut overflow = vec![Op::SetState(6), Op::Complete];
    for _ in 0..12 {
        overflow.extend([Op::Tick(1), Op::ReportInit, Op::PrecopyInfo, Op::Complete]);
    }
    overflow.push(read);
    seed(
        "regress-reinit-queue-overflow",
        SaveHead {
            device: 0b100_0100,
            ..head
        },
        &overflow,
    );
    seed(
        "hostile-completions",
        SaveHead { slots: 3, ..head },
        &[
            Op::SetState(3),
            Op::CompleteTwice,
            read,
            Op::ForgedCompletion {
                bits: 0x1_0000_0001,
            },
            Op::CorruptCompletion {
                byte: 12,
                xor: 0xff,
            },
            read,
            Op::Poll,
            Op::ReadStale { which: 3 },
            Op::Reset {
                complete_first: true,
            },
            Op::SetState(3),
            Op::Oversize(4096),
            Op::Complete,
            read,
            Op::SetState(1),
        ],
    );
    // A SAVE of a closed saving file is still in flight when the same VF
    // resumes: the LOAD waits for it.
    seed(
        "resume-while-a-save-is-in-flight",
        SaveHead {
            device: 0b100,
            ..head
        },
        &[
            Op::SetState(3),
            Op::SetState(1),
            Op::SetState(4),
            Op::Write { base: 1, len: 3000 },
            Op::Write { base: 0, len: 0 },
            Op::SetState(1),
            Op::SetState(2),
            Op::SetState(3),
            read,
            Op::Complete,
            read,
            read,
            Op::Complete,
            read,
            Op::Complete,
            read,
        ],
    );
    seed(
        "faults-detach",
        SaveHead {
            device: 0b1_0001,
            ..head
        },
        &[
            Op::Fail {
                op: 7,
                nth: 1,
                status: 9,
            },
            Op::SetState(6),
            Op::SetState(3),
            Op::Platform { what: 0, after: 1 },
            Op::Complete,
            read,
            Op::Detach,
            read,
            Op::SetState(2),
            Op::Attach,
            Op::DataSize,
            Op::SetState(3),
            Op::Complete,
            read,
        ],
    );
    seeds
}

/// The `state_graph` seeds: walks over every state on a fully capable
/// device and on reduced ones, oracle and path probes, faults.
pub fn state_graph() -> Vec<Seed> {
    let mut seeds = vec![];
    let mut seed = |name, caps: Caps, ops: &[GraphOp]| {
        seeds.push(ops_seed(
            "state_graph",
            name,
            &caps,
            ops,
            crate::targets::state_graph::decode,
        ));
    };
    let tour: Vec<GraphOp> = [2u8, 6, 7, 3, 1, 4, 1, 5, 7, 6, 2, 4, 6, 3, 5, 2]
        .into_iter()
        .map(GraphOp::Set)
        .collect();
    seed("tour-all-caps", Caps(0), &tour);
    seed(
        "tour-no-precopy-no-chunks",
        Caps(Caps::NO_VF_PRECOPY | Caps::NO_PF_CHUNKS),
        &tour,
    );
    seed(
        "oracle-and-paths",
        Caps(Caps::DIRTY),
        &[
            GraphOp::Oracle {
                cur: 3,
                new: 6,
                flags: 7,
            },
            GraphOp::Oracle {
                cur: 6,
                new: 4,
                flags: 5,
            },
            GraphOp::Oracle {
                cur: 9,
                new: 1,
                flags: u64::MAX,
            },
            GraphOp::Path {
                cur: 6,
                new: 4,
                flags: 7,
            },
            GraphOp::Path {
                cur: 1,
                new: 6,
                flags: 5,
            },
            GraphOp::SetRaw(8),
            GraphOp::Set(6),
            GraphOp::Tick,
            GraphOp::Set(3),
        ],
    );
    seed(
        "faults",
        Caps(0),
        &[
            GraphOp::Set(6),
            GraphOp::Fail { op: 3, status: 9 },
            GraphOp::Set(7),
            GraphOp::HalFail { what: 0, after: 0 },
            GraphOp::Set(3),
            GraphOp::Detach,
            GraphOp::Set(1),
            GraphOp::Attach,
            GraphOp::Reset {
                complete_first: true,
            },
            GraphOp::Set(4),
            GraphOp::Set(2),
        ],
    );
    seed("not-migratable", Caps(Caps::NO_VF_MIGRATABLE), &tour[..4]);
    seeds
}

impl Encode for CmdqHead {
    fn encode(&self, w: &mut ArbWriter) {
        w.u16(self.inlen)
            .u16(self.outlen)
            .u8(self.flags)
            .u8(self.warm)
            .u8(self.log_size);
    }
}

fn cmdq_seed(name: &'static str, head: CmdqHead, entry: &[u8], area: &[u8]) -> Seed {
    let mut w = ArbWriter::default();
    head.encode(&mut w);
    w.bytes(entry).bytes(area);
    let decoded = crate::targets::cmdq_decode::decode(&w.0);
    assert!(
        decoded.is_some_and(|(h, _)| h == head),
        "seed {name}: decodes as {decoded:?}"
    );
    ("cmdq_decode", name, w.0)
}

/// The `cmdq_decode` seeds: good completions and each kind of bad one, as
/// masks over what a good firmware leaves.
pub fn cmdq_decode() -> Vec<Seed> {
    use CmdqHead as H;
    // A QUERY_HCA_CAP-shaped command: 16 bytes in, 4112 out (8 blocks).
    let head = CmdqHead {
        inlen: 0,
        outlen: 4112 - 16,
        flags: H::XOR | H::CHECKSUMS,
        warm: 3,
        log_size: 5,
    };
    let mut entry_mask = [0u8; 64];
    let mut seeds = vec![cmdq_seed("good-query-hca-cap", head, &entry_mask, &[])];
    entry_mask[0x3c] = 0x40;
    seeds.push(cmdq_seed("wrong-token", head, &entry_mask, &[]));
    entry_mask[0x3c] = 0;
    entry_mask[0x3f] = 0x5c << 1;
    seeds.push(cmdq_seed("garbage-delivery-status", head, &entry_mask, &[]));
    entry_mask[0x3f] = 1;
    seeds.push(cmdq_seed(
        "signalled-but-owned",
        CmdqHead {
            flags: head.flags | H::SIGNALLED,
            ..head
        },
        &entry_mask,
        &[],
    ));
    seeds.push(cmdq_seed(
        "timed-out",
        CmdqHead {
            flags: head.flags | H::LATE,
            ..head
        },
        &entry_mask,
        &[],
    ));
    // Block 2's next zeroed (XOR with its value): a short chain.
    let mut area_mask = vec![0u8; 3 * 1024];
    let next = 0x9_0000_0400u64 + 3 * 1024;
    area_mask[2 * 1024 + 0x230..2 * 1024 + 0x238].copy_from_slice(&next.to_be_bytes());
    seeds.push(cmdq_seed("short-chain", head, &[0; 64], &area_mask));
    // Raw bytes, no masks: a large input chain and an all-zero entry.
    seeds.push(cmdq_seed(
        "raw-large-input",
        CmdqHead {
            inlen: 6000,
            outlen: 0,
            flags: 0,
            warm: 0,
            log_size: 0,
        },
        &[0; 64],
        &[0x11; 700],
    ));
    seeds
}

/// Every seed of every target.
pub fn all() -> Vec<Seed> {
    let mut v = ifc_decode();
    v.extend(cmdq_decode());
    v.extend(stream_reader());
    v.extend(resume_engine());
    v.extend(save_engine());
    v.extend(state_graph());
    v.extend(tracker_report());
    v
}

/// `tracker_report` seeds: written byte by byte (its `Vec` fields are a
/// `bool` "one more" before each element, then `false`), checked to run.
fn tracker_report() -> Vec<Seed> {
    // Engine: caps (4 ranges, 2^12..2^52 space, 4 KiB messages, 4 KiB to
    // 2 MiB pages), ranges of 16 pages at pages 0 and 32, 4 KiB pages, a
    // window over both, 8 slots; then two messages: pages 1 and 33, and
    // the empty end marker.
    let mut e = ArbWriter::default();
    e.u8(0).bytes(&[0, 4, 12, 52, 12, 12, 12, 21]);
    for (gap, len) in [(0u16, 16u16), (16, 16)] {
        e.bool(true).u16(gap).u16(len);
    }
    e.bool(false).u8(12).u32(0).u32(48).u8(3);
    let cqe = |w: &mut ArbWriter, len: u32, state: u8| {
        w.variant(0, 5).u8(3).u32(len).u16(0).u8(state);
    };
    cqe(&mut e, 16, 1);
    e.variant(1, 5);
    for page in [1u32, 33] {
        e.bool(true).u32(page).u8(0);
    }
    e.bool(false).variant(3, 5);
    cqe(&mut e, 0, 0);
    e.variant(3, 5);
    // Device: start over two 1 MiB ranges with 4 KiB pages, dirty, read,
    // an ERROR after one message, read (EIO), stop; start again, a silent
    // firmware, read (ETIMEDOUT), stop.
    let mut d = ArbWriter::default();
    d.u8(1);
    let start = |w: &mut ArbWriter| {
        w.variant(0, 7);
        for (gap, len) in [(0u8, 15u8), (16, 15)] {
            w.bool(true).u8(gap).u8(len);
        }
        w.bool(false).u8(0);
    };
    start(&mut d);
    d.variant(1, 7).u16(500).variant(2, 7);
    d.variant(4, 7)
        .u8(1)
        .u8(1)
        .variant(1, 7)
        .u16(2000)
        .variant(2, 7)
        .variant(3, 7);
    start(&mut d);
    d.variant(1, 7)
        .u16(900)
        .variant(4, 7)
        .u8(3)
        .u8(0)
        .variant(2, 7)
        .variant(3, 7);
    for (_, data) in [("engine", &e.0), ("device", &d.0)] {
        crate::targets::tracker_report::run(data);
    }
    vec![
        ("tracker_report", "engine-report", e.0),
        ("tracker_report", "device-lifecycle", d.0),
    ]
}
