//! `ifc_decode`: every firmware output decoder and field accessor of
//! [`mlx5vf_core::ifc`] on arbitrary bytes, and encode → decode round trips
//! of the typed commands.
//!
//! # Input
//! An [`IfcHead`] (built with `arbitrary`), then the output bytes: the rest
//! of the input. Decoders see those bytes at the length [`IfcHead::len`]
//! asks for (missing bytes are zero), so the 4112-byte QUERY_HCA_CAP output
//! is reachable from short inputs.
//!
//! # Checks
//! - Each `Command::decode`, `decode_create_mkey_out`, `GeneralCaps::parse`,
//!   `General2Caps::parse` and `check_output` returns exactly what the sim's
//!   independent field table ([`mlx5vf_sim::wire`]) says: `Truncated` below
//!   the structure size, `Failed` with the status, syndrome, opcode and
//!   op_mod for a non-zero status, else the fields. Decoded outputs emitted
//!   again through the layout setters decode to the same value.
//! - Every member of every [`LAYOUTS`] structure (nested ones at their
//!   offset) reads what a bit-by-bit reference reads, or `Truncated` /
//!   `NotAValue`; writing changes exactly its bits, or fails with the buffer
//!   untouched. A [`Field`] built from arbitrary offsets and widths behaves
//!   the same, and one whose bits span more than 8 bytes is refused
//!   (`Straddles`).
//! - Each typed command encodes its fields where the sim reads them, with
//!   the right opcode and op_mod, no reserved bit set and nothing written
//!   past its size; parsed back and encoded again it gives the same bytes;
//!   into a short buffer it fails and leaves the buffer untouched.
//!   `encode_create_mkey_mtt` likewise, with its MTT list.
//! - Code tables ([`Opcode`], [`CmdStatus`], [`Tag`]) round-trip any value,
//!   and `Display` of every error never panics.

use std::fmt::Write as _;

use arbitrary::{Arbitrary, Unstructured};
use mlx5vf_core::ifc::hca_cap::{
    CapMode, CapTarget, CapType, Caps, General2Caps, GeneralCaps, QueryHcaCap, cmd_hca_cap,
    cmd_hca_cap_2, query_hca_cap_out,
};
use mlx5vf_core::ifc::migration::{
    LoadVhcaState, MIGRATION_STATE, MigrationStateSize, QueryMigrationState, SaveResult,
    SaveVhcaState, Scope, Tracking, query_vhca_migration_state_out, save_vhca_state_out,
};
use mlx5vf_core::ifc::mkey::{
    DestroyMkey, Mkey, MkeyEncodeError, create_mkey_in_len, create_mkey_out,
    decode_create_mkey_out, encode_create_mkey_mtt,
};
use mlx5vf_core::ifc::pd::{AllocPd, DeallocPd, Pd, alloc_pd_out};
use mlx5vf_core::ifc::vhca::{ResumeVhca, SuspendVhca, VhcaSide};
use mlx5vf_core::ifc::{
    CmdError, CmdStatus, Command, DecodeError, EncodeError, Field, FieldError, LAYOUTS, Layout,
    LayoutKind, Opcode, check_output, layout_by_name,
};
use mlx5vf_core::stream::Tag;
use mlx5vf_sim::wire::{self, UsedBits};

/// Longest output buffer the decoders are shown.
pub const MAX_LEN: usize = 4200;

/// The structured part of the input.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfcHead {
    /// Length of the output the decoders see (modulo [`MAX_LEN`] + 1).
    pub len: u16,
    /// Field values for the typed commands.
    pub cmd: CmdFields,
    /// An arbitrary field: bit offset, width, and a value to write.
    pub field: (u32, u32, u64),
}

/// Values the typed commands are built from.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub struct CmdFields {
    /// VHCA id.
    pub vhca_id: u16,
    /// Function id for QUERY_HCA_CAP of another function.
    pub function_id: u16,
    /// Flags: bit 0 other function, 1 general-2 caps, 2 current caps,
    /// 3 initiator side, 4 incremental, 5 track, 6 chunked, 7 unaligned page.
    pub flags: u8,
    /// `va` of SAVE/LOAD.
    pub va: u64,
    /// `mkey` of SAVE/LOAD/DESTROY.
    pub mkey: u32,
    /// `size` of SAVE/LOAD.
    pub size: u32,
    /// PD number.
    pub pd: u32,
    /// Pages of the CREATE_MKEY buffer (modulo 65).
    pub npages: u8,
    /// Bus address of the first page.
    pub page_base: u64,
    /// Length of a short buffer to encode into.
    pub short: u16,
}

/// The target. See the module documentation.
pub fn run(data: &[u8]) {
    let Some((head, rest)) = decode(data) else {
        return;
    };
    let len = usize::from(head.len) % (MAX_LEN + 1);
    let mut out = rest.to_vec();
    out.resize(len, 0);
    decoders(&out, &head.cmd);
    layouts(&out);
    arbitrary_field(&out, head.field);
    encoders(&head.cmd);
    code_tables(&head.cmd);
}

/// The input's parts: the head and the output bytes.
pub fn decode(data: &[u8]) -> Option<(IfcHead, &[u8])> {
    let mut u = Unstructured::new(data);
    let head = IfcHead::arbitrary(&mut u).ok()?;
    Some((head, u.take_rest()))
}

/// The bytes a field of `width` bits at `bit` touches, as one big-endian
/// number, and the shift that brings the field to bit 0 (`mlx5_ifc`
/// convention: bit 0 is the MSB of byte 0). `None` when `buf` is too short.
fn span(buf: &[u8], bit: u64, width: u64) -> Option<(std::ops::Range<usize>, u128, u32)> {
    let start = (bit / 8) as usize;
    let end = usize::try_from((bit + width).div_ceil(8)).ok()?;
    let bytes = buf.get(start..end)?;
    let acc = bytes.iter().fold(0u128, |a, &b| (a << 8) | u128::from(b));
    let shift = (end as u64 * 8 - (bit + width)) as u32;
    Some((start..end, acc, shift))
}

/// The reference reader: `None` when `buf` does not hold every byte the
/// field touches.
fn ref_read(buf: &[u8], bit: u64, width: u64) -> Option<u64> {
    if width > 64 {
        return None;
    }
    let (_, acc, shift) = span(buf, bit, width)?;
    let mask = if width == 64 {
        u64::MAX
    } else {
        (1u64 << width) - 1
    };
    Some((acc >> shift) as u64 & mask)
}

/// What decoding an output of `size` bytes must give before its fields
/// are read: the sim's view of status and syndrome.
fn expect_status(
    out: &[u8],
    structure: &'static str,
    size: usize,
    opcode: Opcode,
    op_mod: u16,
) -> Result<(), DecodeError> {
    // The size first, then the header's own fields (status: byte 0,
    // syndrome: bytes 4..8) must be readable.
    for needed in [size, 1, 8] {
        if out.len() < needed {
            return Err(DecodeError::Truncated {
                structure,
                needed,
                actual: out.len(),
            });
        }
    }
    let status = wire::hdr::STATUS.get(out) as u8;
    if status != 0 {
        return Err(DecodeError::Failed(CmdError {
            opcode,
            op_mod,
            status: CmdStatus::from(status),
            syndrome: wire::hdr::SYNDROME.get(out),
        }));
    }
    Ok(())
}

fn flag(c: &CmdFields, bit: u8) -> bool {
    c.flags & (1 << bit) != 0
}

fn query_hca_cap(c: &CmdFields) -> QueryHcaCap {
    QueryHcaCap {
        target: if flag(c, 0) {
            CapTarget::OtherFunction {
                function_id: c.function_id,
            }
        } else {
            CapTarget::SelfFunction
        },
        cap: if flag(c, 1) {
            CapType::General2
        } else {
            CapType::General
        },
        mode: if flag(c, 2) {
            CapMode::Current
        } else {
            CapMode::Max
        },
    }
}

/// `(cap_type << 1) | mode` with `MLX5_SET_HCA_CAP_OP_MOD_GENERAL_DEVICE` = 0,
/// `..._CAP_2` = 0x20, GET_MAX = 0, GET_CUR = 1.
fn hca_cap_op_mod(q: &QueryHcaCap) -> u16 {
    let t = match q.cap {
        CapType::General => 0x00,
        CapType::General2 => 0x20,
    };
    let m = match q.mode {
        CapMode::Max => 0,
        CapMode::Current => 1,
    };
    (t << 1) | m
}

fn general_caps(cap: &[u8]) -> GeneralCaps {
    use wire::cmd_hca_cap as w;
    GeneralCaps {
        vhca_id: w::VHCA_ID.get(cap) as u16,
        hca_cap_2: w::HCA_CAP_2.flag(cap),
        migration: w::MIGRATION.flag(cap),
        adv_virtualization: w::ADV_VIRTUALIZATION.flag(cap),
    }
}

fn general2_caps(cap: &[u8]) -> General2Caps {
    use wire::cmd_hca_cap_2 as w;
    General2Caps {
        migratable: w::MIGRATABLE.flag(cap),
        migration_multi_load: w::MIGRATION_MULTI_LOAD.flag(cap),
        migration_tracking_state: w::MIGRATION_TRACKING_STATE.flag(cap),
        migration_in_chunks: w::MIGRATION_IN_CHUNKS.flag(cap),
    }
}

fn save_cmd(c: &CmdFields) -> SaveVhcaState {
    SaveVhcaState {
        vhca_id: c.vhca_id,
        scope: if flag(c, 4) {
            Scope::Incremental
        } else {
            Scope::Full
        },
        tracking: if flag(c, 5) {
            Tracking::Track
        } else {
            Tracking::Untracked
        },
        va: c.va,
        mkey: Mkey(c.mkey),
        size: c.size,
    }
}

fn decoders(out: &[u8], c: &CmdFields) {
    // QUERY_HCA_CAP, both structures, every mode and target.
    for bits in 0..8u8 {
        let q = query_hca_cap(&CmdFields { flags: bits, ..*c });
        let op_mod = hca_cap_op_mod(&q);
        assert_eq!(q.op_mod(), op_mod, "{q:?} op_mod");
        let cap = out.get(16..).unwrap_or_default();
        let expected = expect_status(out, "query_hca_cap_out", 4112, Opcode::QueryHcaCap, op_mod)
            .map(|()| match q.cap {
                CapType::General => Caps::General(general_caps(cap)),
                CapType::General2 => Caps::General2(general2_caps(cap)),
            });
        let got = q.decode(out);
        assert_eq!(got, expected, "{q:?}");
        if let Ok(caps) = got {
            // Emit the decoded caps into a fresh output and decode again.
            let mut again = vec![0u8; query_hca_cap_out::SIZE];
            let area = &mut again[16..];
            match caps {
                Caps::General(g) => {
                    let ok = cmd_hca_cap::vhca_id.set(area, g.vhca_id).is_ok()
                        && cmd_hca_cap::hca_cap_2.set(area, g.hca_cap_2).is_ok()
                        && cmd_hca_cap::migration.set(area, g.migration).is_ok()
                        && cmd_hca_cap::adv_virtualization
                            .set(area, g.adv_virtualization)
                            .is_ok();
                    assert!(ok, "emitting general caps");
                }
                Caps::General2(g) => {
                    let ok = cmd_hca_cap_2::migratable.set(area, g.migratable).is_ok()
                        && cmd_hca_cap_2::migration_multi_load
                            .set(area, g.migration_multi_load)
                            .is_ok()
                        && cmd_hca_cap_2::migration_tracking_state
                            .set(area, g.migration_tracking_state)
                            .is_ok()
                        && cmd_hca_cap_2::migration_in_chunks
                            .set(area, g.migration_in_chunks)
                            .is_ok();
                    assert!(ok, "emitting general-2 caps");
                }
            }
            assert_eq!(q.decode(&again), Ok(caps), "caps parse -> emit -> parse");
        }
    }

    // The capability parsers on their own, at any length.
    let min = cmd_hca_cap::LAYOUT.min_decode_len();
    let g = GeneralCaps::parse(out);
    assert_eq!(
        g.is_ok(),
        out.len() >= min,
        "GeneralCaps::parse({})",
        out.len()
    );
    if let Ok(g) = g {
        assert_eq!(g, general_caps(out));
    }
    let min2 = cmd_hca_cap_2::LAYOUT.min_decode_len();
    let g2 = General2Caps::parse(out);
    assert_eq!(
        g2.is_ok(),
        out.len() >= min2,
        "General2Caps::parse({})",
        out.len()
    );
    if let Ok(g2) = g2 {
        assert_eq!(g2, general2_caps(out));
    }

    // ALLOC_PD: pd is 24 bits at 0x48.
    let pd = expect_status(out, "alloc_pd_out", 16, Opcode::AllocPd, 0)
        .map(|()| Pd(wire::pd::PD.get(out)));
    let got = AllocPd.decode(out);
    assert_eq!(got, pd, "AllocPd");
    if let Ok(p) = got {
        let mut again = [0u8; 16];
        assert!(alloc_pd_out::pd.set(&mut again, p.0).is_ok());
        assert_eq!(AllocPd.decode(&again), Ok(p), "pd parse -> emit -> parse");
    }

    // Outputs with no fields.
    let unit = |name, opcode, op_mod| expect_status(out, name, 16, opcode, op_mod);
    let dealloc = DeallocPd { pd: Pd(c.pd) };
    assert_eq!(
        dealloc.decode(out),
        unit("dealloc_pd_out", Opcode::DeallocPd, 0)
    );
    for s in [VhcaSide::Initiator, VhcaSide::Responder] {
        let sus = SuspendVhca {
            vhca_id: c.vhca_id,
            side: s,
        };
        let res = ResumeVhca {
            vhca_id: c.vhca_id,
            side: s,
        };
        // The op_mods are reversed between the two commands.
        let (sus_mod, res_mod) = match s {
            VhcaSide::Initiator => (wire::vhca::SUSPEND_INITIATOR, wire::vhca::RESUME_INITIATOR),
            VhcaSide::Responder => (wire::vhca::SUSPEND_RESPONDER, wire::vhca::RESUME_RESPONDER),
        };
        assert_eq!(
            sus.decode(out),
            unit("suspend_vhca_out", Opcode::SuspendVhca, sus_mod)
        );
        assert_eq!(
            res.decode(out),
            unit("resume_vhca_out", Opcode::ResumeVhca, res_mod)
        );
    }
    let load = LoadVhcaState {
        vhca_id: c.vhca_id,
        va: c.va,
        mkey: Mkey(c.mkey),
        size: c.size,
    };
    assert_eq!(
        load.decode(out),
        unit("load_vhca_state_out", Opcode::LoadVhcaState, 0)
    );
    let destroy = DestroyMkey { mkey: Mkey(c.mkey) };
    assert_eq!(
        destroy.decode(out),
        unit("destroy_mkey_out", Opcode::DestroyMkey, 0)
    );

    // QUERY_VHCA_MIGRATION_STATE.
    let q = QueryMigrationState {
        vhca_id: c.vhca_id,
        scope: if flag(c, 4) {
            Scope::Incremental
        } else {
            Scope::Full
        },
        chunked: flag(c, 6),
    };
    let expected = expect_status(
        out,
        "query_vhca_migration_state_out",
        64,
        Opcode::QueryVhcaMigrationState,
        0,
    )
    .map(|()| MigrationStateSize {
        required_umem_size: wire::query_mig::REQUIRED_UMEM_SIZE.get(out),
        remaining_total_size: wire::query_mig::REMAINING_TOTAL_SIZE.get(out),
        migration_state: wire::query_mig::MIGRATION_STATE.get(out) as u8,
    });
    let got = q.decode(out);
    assert_eq!(got, expected, "QueryMigrationState");
    if let Ok(s) = got {
        let mut again = [0u8; 64];
        let ok = query_vhca_migration_state_out::required_umem_size
            .set(&mut again, s.required_umem_size)
            .is_ok()
            && query_vhca_migration_state_out::remaining_total_size
                .set(&mut again, s.remaining_total_size)
                .is_ok()
            && MIGRATION_STATE.set(&mut again, s.migration_state).is_ok();
        assert!(ok);
        assert_eq!(q.decode(&again), Ok(s), "query parse -> emit -> parse");
    }

    // SAVE_VHCA_STATE.
    let save = save_cmd(c);
    let expected =
        expect_status(out, "save_vhca_state_out", 16, Opcode::SaveVhcaState, 0).map(|()| {
            SaveResult {
                actual_image_size: wire::save::ACTUAL_IMAGE_SIZE.get(out),
                next_required_umem_size: wire::save::NEXT_REQUIRED_UMEM_SIZE.get(out),
            }
        });
    let got = save.decode(out);
    assert_eq!(got, expected, "SaveVhcaState");
    if let Ok(r) = got {
        let mut again = [0u8; 16];
        let ok = save_vhca_state_out::actual_image_size
            .set(&mut again, r.actual_image_size)
            .is_ok()
            && save_vhca_state_out::next_required_umem_size
                .set(&mut again, r.next_required_umem_size)
                .is_ok();
        assert!(ok);
        assert_eq!(save.decode(&again), Ok(r), "save parse -> emit -> parse");
    }

    // CREATE_MKEY: the key is the 24-bit index with variant 0.
    let expected = expect_status(out, "create_mkey_out", 16, Opcode::CreateMkey, 0)
        .map(|()| Mkey(wire::mkey::MKEY_INDEX.get(out) << 8));
    let got = decode_create_mkey_out(out);
    assert_eq!(got, expected, "create_mkey_out");
    if let Ok(k) = got {
        assert_eq!(k.index(), k.0 >> 8);
        assert_eq!(Mkey::from_index(k.index()), k);
        let mut again = [0u8; 16];
        assert!(
            create_mkey_out::mkey_index
                .set(&mut again, k.index())
                .is_ok()
        );
        assert_eq!(decode_create_mkey_out(&again), Ok(k));
    }

    // check_output for an arbitrary structure size, opcode and op_mod.
    let size = usize::from(c.short) % (MAX_LEN + 1);
    let opcode = Opcode::from(c.function_id);
    let expected = expect_status(out, "fuzz_out", size, opcode, c.vhca_id);
    assert_eq!(
        check_output("fuzz_out", size, opcode, c.vhca_id, out),
        expected
    );
    if let Err(e) = expected {
        let mut s = String::new();
        let _ = write!(s, "{e}");
        if let DecodeError::Failed(c) = e {
            let _ = write!(s, "{c} {:?}", c.errno());
        }
    }
}

/// Every member of every structure (nested structures at their offset).
fn layouts(out: &[u8]) {
    for layout in LAYOUTS {
        assert!(
            layout_by_name(layout.name)
                .is_some_and(|l| l.size == layout.size && l.fields == layout.fields),
            "layout_by_name({})",
            layout.name
        );
        let min = layout.min_decode_len();
        match layout.kind {
            LayoutKind::Capability => assert!(min <= layout.size),
            _ => assert_eq!(min, layout.size),
        }
        layout_fields(layout, 0, out);
        for n in layout.nested {
            layout_fields(n.layout, n.bit, out);
        }
    }
}

fn layout_fields(layout: &Layout, base: u32, out: &[u8]) {
    for f in layout.fields {
        assert!(f.is_well_formed(), "{}.{}", layout.name, f.name);
        let f = Field {
            name: f.name,
            bit: f.bit + base,
            width: f.width,
        };
        check_field(
            &f,
            out,
            ref_read(out, 0, 64.min(out.len() as u64 * 8)).unwrap_or(0),
        );
    }
}

/// Reads `f` from `out` and writes `value` (and its masked form) into a copy,
/// against the reference.
fn check_field(f: &Field, out: &[u8], value: u64) {
    let read = f.read(out);
    // Bits that no `u64` covers (64 bits not starting on a byte boundary).
    let straddles = f.width <= 64 && u64::from(f.bit % 8) + u64::from(f.width) > 64;
    if f.width > 64 {
        assert_eq!(read, Err(FieldError::NotAValue { field: f.name }));
    } else if straddles {
        assert_eq!(
            read,
            Err(FieldError::Straddles { field: f.name }),
            "read {f:?}"
        );
    } else {
        match ref_read(out, u64::from(f.bit), u64::from(f.width)) {
            Some(v) => assert_eq!(read, Ok(v), "read {f:?}"),
            None => assert!(
                matches!(read, Err(FieldError::Truncated { needed, actual, .. })
                    if actual == out.len() && needed == f.end_byte()),
                "read {f:?} of {} bytes: {read:?}",
                out.len()
            ),
        }
        assert!(read.is_err() || read.is_ok_and(|v| v <= f.max_value()));
    }
    // Writes only touch the field's bytes, and succeed or fail on whether the
    // buffer reaches its end: a prefix a little longer than that behaves as
    // the whole buffer and keeps the copies cheap.
    let keep = out.len().min(f.end_byte().saturating_add(8));
    let out = &out[..keep];
    for v in [value, value & f.max_value()] {
        let mut buf = out.to_vec();
        let r = f.write(&mut buf, v);
        let fits = f.width <= 64 && !straddles && v <= f.max_value();
        let room = f.width > 64 || ref_read(out, u64::from(f.bit), u64::from(f.width)).is_some();
        match r {
            Ok(()) => {
                assert!(fits && room, "write {f:?} = {v:#x} accepted");
                assert_eq!(
                    ref_read(&buf, u64::from(f.bit), u64::from(f.width)),
                    Some(v),
                    "write {f:?} = {v:#x} then read"
                );
                assert_eq!(f.read(&buf), Ok(v), "write {f:?} = {v:#x} then read()");
                let (bit, width) = (u64::from(f.bit), u64::from(f.width));
                let (Some((range, a, shift)), Some((_, b, _))) =
                    (span(&buf, bit, width), span(out, bit, width))
                else {
                    panic!("write {f:?} succeeded on a short buffer");
                };
                assert_eq!(
                    buf[..range.start],
                    out[..range.start],
                    "write {f:?} changed bytes before it"
                );
                assert_eq!(
                    buf[range.end..],
                    out[range.end..],
                    "write {f:?} changed bytes after it"
                );
                let field = ((1u128 << width) - 1) << shift;
                assert_eq!(
                    (a ^ b) & !field,
                    0,
                    "write {f:?} = {v:#x} changed other bits"
                );
            }
            Err(e) => {
                assert!(!(fits && room), "write {f:?} = {v:#x} refused: {e}");
                assert_eq!(buf, out, "failed write {f:?} changed the buffer");
            }
        }
    }
}

/// A field from arbitrary numbers: accessors must not panic, must agree
/// with the reference, and must refuse what no `u64` covers.
fn arbitrary_field(out: &[u8], (bit, width, value): (u32, u32, u64)) {
    // Keep the offset near the buffer so both outcomes happen.
    let bit = bit % ((out.len() as u32 + 16) * 8);
    let f = Field {
        name: "fuzz",
        bit,
        width: width % 80,
    };
    let _ = f.end_byte();
    let _ = f.max_value();
    if let Err(e) = f.read(out) {
        let _ = e.to_string();
    }
    check_field(&f, out, value);
}

const QUERY_HCA_CAP_IN: UsedBits<16> = UsedBits::new(
    &[
        wire::query_hca_cap::OTHER_FUNCTION,
        wire::query_hca_cap::EC_VF_FUNCTION,
        wire::query_hca_cap::FUNCTION_ID,
    ],
    &[],
);
const NO_FIELDS_IN: UsedBits<16> = UsedBits::new(&[], &[]);
const DEALLOC_PD_IN: UsedBits<16> = UsedBits::new(&[wire::pd::PD], &[]);
const VHCA_IN: UsedBits<16> = UsedBits::new(&[wire::vhca::VHCA_ID], &[]);
const QUERY_MIG_IN: UsedBits<16> = UsedBits::new(
    &[
        wire::query_mig::INCREMENTAL,
        wire::query_mig::CHUNK,
        wire::query_mig::VHCA_ID,
    ],
    &[],
);
const SAVE_IN: UsedBits<32> = UsedBits::new(
    &[
        wire::save::INCREMENTAL,
        wire::save::SET_TRACK,
        wire::save::VHCA_ID,
        wire::save::MKEY,
        wire::save::SIZE,
    ],
    &[wire::save::VA],
);
const LOAD_IN: UsedBits<32> = UsedBits::new(
    &[wire::load::VHCA_ID, wire::load::MKEY, wire::load::SIZE],
    &[wire::load::VA],
);
const DESTROY_MKEY_IN: UsedBits<16> = UsedBits::new(&[wire::mkey::MKEY_INDEX], &[]);

/// Encodes `cmd` into a poisoned buffer and a short one; checks the header
/// and reserved bits; returns the encoded input (or the encode error).
fn encode<C: Command + std::fmt::Debug>(
    cmd: &C,
    short: u16,
    used: impl Fn(&[u8]) -> bool,
) -> Result<Vec<u8>, EncodeError> {
    let mut buf = [0xa5u8; 64];
    let r = cmd.encode(&mut buf);
    let n = match r {
        Ok(n) => n,
        Err(e) => {
            assert!(
                matches!(e, EncodeError::ValueTooWide { .. }),
                "{cmd:?}: {e}"
            );
            return Err(e);
        }
    };
    assert_eq!(n, C::IN_SIZE, "{cmd:?}: encoded length");
    assert!(
        buf[n..].iter().all(|&b| b == 0xa5),
        "{cmd:?}: bytes written past the input"
    );
    let input = &buf[..n];
    assert_eq!(
        wire::hdr::OPCODE.get(input),
        u32::from(u16::from(C::OPCODE)),
        "{cmd:?}: opcode"
    );
    assert_eq!(
        wire::hdr::OP_MOD.get(input),
        u32::from(cmd.op_mod()),
        "{cmd:?}: op_mod"
    );
    assert_eq!(wire::hdr::UID.get(input), 0, "{cmd:?}: uid");
    assert!(!used(input), "{cmd:?}: reserved bits set: {input:02x?}");
    // Into a short buffer: refused, untouched.
    let short = usize::from(short) % C::IN_SIZE;
    let mut small = vec![0x5au8; short];
    assert_eq!(
        cmd.encode(&mut small),
        Err(EncodeError::InsufficientSize {
            required: C::IN_SIZE
        }),
        "{cmd:?} into {short} bytes"
    );
    assert!(
        small.iter().all(|&b| b == 0x5a),
        "{cmd:?}: short buffer written"
    );
    Ok(input.to_vec())
}

/// The side a SUSPEND_VHCA or RESUME_VHCA input names by its op_mod, given
/// that command's two op_mods.
fn vhca_side(input: &[u8], initiator: u16, responder: u16) -> VhcaSide {
    match wire::hdr::OP_MOD.get(input) as u16 {
        m if m == initiator => VhcaSide::Initiator,
        m if m == responder => VhcaSide::Responder,
        other => panic!(
            "VHCA op_mod {other} (opcode {:#x})",
            wire::hdr::OPCODE.get(input)
        ),
    }
}

/// Parse → emit → parse: `parsed` (the command rebuilt from the sim's view
/// of `input`) must equal `cmd`, and encode to the same bytes.
fn round_trip<C: Command + PartialEq + std::fmt::Debug>(cmd: &C, parsed: &C, input: &[u8]) {
    assert_eq!(parsed, cmd, "parsed back from {input:02x?}");
    let mut again = [0u8; 64];
    assert_eq!(parsed.encode(&mut again), Ok(C::IN_SIZE));
    assert_eq!(&again[..C::IN_SIZE], input, "{cmd:?}: emit after parse");
}

fn encoders(c: &CmdFields) {
    for bits in 0..8u8 {
        let q = query_hca_cap(&CmdFields { flags: bits, ..*c });
        if let Ok(input) = encode(&q, c.short, |i| QUERY_HCA_CAP_IN.reserved_set(i)) {
            use wire::query_hca_cap as w;
            let op_mod = wire::hdr::OP_MOD.get(&input) as u16;
            assert!(!w::EC_VF_FUNCTION.flag(&input));
            let parsed = QueryHcaCap {
                target: if w::OTHER_FUNCTION.flag(&input) {
                    CapTarget::OtherFunction {
                        function_id: w::FUNCTION_ID.get(&input) as u16,
                    }
                } else {
                    assert_eq!(w::FUNCTION_ID.get(&input), 0);
                    CapTarget::SelfFunction
                },
                cap: if op_mod >> 1 == w::CAP_GENERAL_2 {
                    CapType::General2
                } else {
                    assert_eq!(op_mod >> 1, w::CAP_GENERAL);
                    CapType::General
                },
                mode: if op_mod & 1 == 1 {
                    CapMode::Current
                } else {
                    CapMode::Max
                },
            };
            round_trip(&q, &parsed, &input);
        } else {
            panic!("{q:?} refused");
        }
    }
    assert!(encode(&AllocPd, c.short, |i| NO_FIELDS_IN.reserved_set(i)).is_ok());
    let dealloc = DeallocPd { pd: Pd(c.pd) };
    match encode(&dealloc, c.short, |i| DEALLOC_PD_IN.reserved_set(i)) {
        Ok(input) => {
            assert!(c.pd <= 0xff_ffff);
            let parsed = DeallocPd {
                pd: Pd(wire::pd::PD.get(&input)),
            };
            round_trip(&dealloc, &parsed, &input);
        }
        Err(e) => assert!(c.pd > 0xff_ffff, "DeallocPd({:#x}): {e}", c.pd),
    }
    for s in [VhcaSide::Initiator, VhcaSide::Responder] {
        let sus = SuspendVhca {
            vhca_id: c.vhca_id,
            side: s,
        };
        let Ok(input) = encode(&sus, c.short, |i| VHCA_IN.reserved_set(i)) else {
            panic!("{sus:?} refused");
        };
        let parsed = SuspendVhca {
            vhca_id: wire::vhca::VHCA_ID.get(&input) as u16,
            side: vhca_side(
                &input,
                wire::vhca::SUSPEND_INITIATOR,
                wire::vhca::SUSPEND_RESPONDER,
            ),
        };
        round_trip(&sus, &parsed, &input);
        let res = ResumeVhca {
            vhca_id: c.vhca_id,
            side: s,
        };
        let Ok(input) = encode(&res, c.short, |i| VHCA_IN.reserved_set(i)) else {
            panic!("{res:?} refused");
        };
        let parsed = ResumeVhca {
            vhca_id: wire::vhca::VHCA_ID.get(&input) as u16,
            side: vhca_side(
                &input,
                wire::vhca::RESUME_INITIATOR,
                wire::vhca::RESUME_RESPONDER,
            ),
        };
        round_trip(&res, &parsed, &input);
    }
    let q = QueryMigrationState {
        vhca_id: c.vhca_id,
        scope: if flag(c, 4) {
            Scope::Incremental
        } else {
            Scope::Full
        },
        chunked: flag(c, 6),
    };
    let Ok(input) = encode(&q, c.short, |i| QUERY_MIG_IN.reserved_set(i)) else {
        panic!("{q:?} refused");
    };
    let parsed = QueryMigrationState {
        vhca_id: wire::query_mig::VHCA_ID.get(&input) as u16,
        scope: if wire::query_mig::INCREMENTAL.flag(&input) {
            Scope::Incremental
        } else {
            Scope::Full
        },
        chunked: wire::query_mig::CHUNK.flag(&input),
    };
    round_trip(&q, &parsed, &input);
    let save = save_cmd(c);
    let Ok(input) = encode(&save, c.short, |i| SAVE_IN.reserved_set(i)) else {
        panic!("{save:?} refused");
    };
    let parsed = SaveVhcaState {
        vhca_id: wire::save::VHCA_ID.get(&input) as u16,
        scope: if wire::save::INCREMENTAL.flag(&input) {
            Scope::Incremental
        } else {
            Scope::Full
        },
        tracking: if wire::save::SET_TRACK.flag(&input) {
            Tracking::Track
        } else {
            Tracking::Untracked
        },
        va: wire::save::VA.get(&input),
        mkey: Mkey(wire::save::MKEY.get(&input)),
        size: wire::save::SIZE.get(&input),
    };
    round_trip(&save, &parsed, &input);
    let load = LoadVhcaState {
        vhca_id: c.vhca_id,
        va: c.va,
        mkey: Mkey(c.mkey),
        size: c.size,
    };
    let Ok(input) = encode(&load, c.short, |i| LOAD_IN.reserved_set(i)) else {
        panic!("{load:?} refused");
    };
    let parsed = LoadVhcaState {
        vhca_id: wire::load::VHCA_ID.get(&input) as u16,
        va: wire::load::VA.get(&input),
        mkey: Mkey(wire::load::MKEY.get(&input)),
        size: wire::load::SIZE.get(&input),
    };
    round_trip(&load, &parsed, &input);
    let destroy = DestroyMkey { mkey: Mkey(c.mkey) };
    let Ok(input) = encode(&destroy, c.short, |i| DESTROY_MKEY_IN.reserved_set(i)) else {
        panic!("{destroy:?} refused");
    };
    assert_eq!(wire::mkey::MKEY_INDEX.get(&input), c.mkey >> 8);
    let parsed = DestroyMkey {
        mkey: Mkey::from_index(wire::mkey::MKEY_INDEX.get(&input)),
    };
    // The variant byte is not part of DESTROY_MKEY.
    let mut again = [0u8; 64];
    assert_eq!(parsed.encode(&mut again), Ok(16));
    assert_eq!(&again[..16], &input[..]);
    create_mkey(c);
}

fn create_mkey(c: &CmdFields) {
    use wire::mkey as w;
    let n = usize::from(c.npages % 65);
    let base = c.page_base & !0xfff;
    let unaligned = flag(c, 7) && n > 0;
    let pages: Vec<u64> = (0..n as u64)
        .map(|i| {
            let a = base.wrapping_add(i.wrapping_mul(0x3000)) & !0xfff;
            if unaligned && i + 1 == n as u64 {
                a | 0x800
            } else {
                a
            }
        })
        .collect();
    let len = create_mkey_in_len(n as u32);
    let mut buf = vec![0xa5u8; len + 16];
    let r = encode_create_mkey_mtt(&mut buf, Pd(c.pd), pages.iter().copied());
    if n == 0 {
        assert_eq!(r, Err(MkeyEncodeError::BadPageCount(0)));
        return;
    }
    if c.pd > 0xff_ffff {
        assert_eq!(r, Err(MkeyEncodeError::BadPd(c.pd)));
        return;
    }
    if unaligned {
        assert_eq!(r, Err(MkeyEncodeError::UnalignedPage(pages[n - 1])));
        return;
    }
    assert_eq!(r, Ok(len), "CREATE_MKEY length for {n} pages");
    assert_eq!(len, 272 + 16 * n.div_ceil(2));
    assert!(
        buf[len..].iter().all(|&b| b == 0xa5),
        "written past the input"
    );
    let input = &buf[..len];
    let octwords = n.div_ceil(2) as u32;
    assert_eq!(
        wire::hdr::OPCODE.get(input),
        u32::from(wire::opcode::CREATE_MKEY)
    );
    assert_eq!(wire::hdr::OP_MOD.get(input), 0);
    assert_eq!(w::PD.get(input), c.pd);
    assert_eq!(w::QPN.get(input), 0xff_ffff);
    assert_eq!(w::ACCESS_MODE_1_0.get(input), 1);
    assert_eq!(w::ACCESS_MODE_4_2.get(input), 0);
    assert_eq!(w::LOG_PAGE_SIZE.get(input), 12);
    assert_eq!(w::START_ADDR.get(input), 0);
    assert_eq!(w::LEN.get(input), n as u64 * 4096);
    assert_eq!(w::TRANSLATIONS_OCTWORD_SIZE.get(input), octwords);
    assert_eq!(w::TRANSLATIONS_OCTWORD_ACTUAL_SIZE.get(input), octwords);
    assert!(!w::PG_ACCESS.flag(input) && !w::MKEY_UMEM_VALID.flag(input));
    // lr lw rr rw: mkc bits 0x12..=0x15.
    assert_eq!(
        ref_read(input, 0x80 + 0x12, 4),
        Some(0xf),
        "mkc access bits"
    );
    for (i, p) in pages.iter().enumerate() {
        let at = w::MTT_BYTE + 8 * i;
        assert_eq!(wire::be64(input, at), *p, "MTT entry {i}");
    }
    if n % 2 == 1 {
        assert_eq!(wire::be64(input, w::MTT_BYTE + 8 * n), 0, "octword padding");
    }
    // Short buffer: refused, untouched.
    let short = usize::from(c.short) % len;
    let mut small = vec![0x5au8; short];
    assert_eq!(
        encode_create_mkey_mtt(&mut small, Pd(c.pd), pages.iter().copied()),
        Err(MkeyEncodeError::InsufficientSize { required: len })
    );
    assert!(small.iter().all(|&b| b == 0x5a));
}

fn code_tables(c: &CmdFields) {
    for raw in [c.function_id, c.vhca_id, c.short] {
        let op = Opcode::from(raw);
        assert_eq!(u16::from(op), raw);
        assert_eq!(op.linux_name().is_some(), Opcode::KNOWN.contains(&op));
        let _ = op.to_string();
    }
    let st = CmdStatus::from(c.flags);
    assert_eq!(u8::from(st), c.flags);
    assert_eq!(st.errno().is_none(), c.flags == 0);
    let _ = st.to_string();
    let tag = Tag::from(c.size);
    assert_eq!(u32::from(tag), c.size);
    let _ = tag.to_string();
    let e = CmdError {
        opcode: Opcode::from(c.function_id),
        op_mod: c.vhca_id,
        status: st,
        syndrome: c.mkey,
    };
    let _ = e.to_string();
}
