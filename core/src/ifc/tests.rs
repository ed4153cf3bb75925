//! Layout tests: every declared field against the reference tables
//! (`shared/reference/mlx5-ifc.md` §2, cross-checked with the Linux header),
//! exactly-which-bits-change checks for every member of every structure,
//! golden bytes for every encoder and decode tests for every output.

use std::vec;
use std::vec::Vec;

use super::hca_cap::*;
use super::layout::Field;
use super::migration::*;
use super::mkey::*;
use super::pd::*;
use super::vhca::*;
use super::*;

/// (structure, member, bit offset, width) as the reference tables give them.
/// Members marked "§2.1" come from the generic header table.
const REFERENCE: &[(&str, &str, u32, u32)] = &[
    // §2.1 generic header
    ("save_vhca_state_in", "opcode", 0x00, 16),
    ("save_vhca_state_in", "uid", 0x10, 16),
    ("save_vhca_state_in", "op_mod", 0x30, 16),
    ("save_vhca_state_out", "status", 0x00, 8),
    ("save_vhca_state_out", "syndrome", 0x20, 32),
    // §2.2 migration commands
    ("suspend_vhca_in", "op_mod", 0x30, 16),
    ("suspend_vhca_in", "vhca_id", 0x50, 16),
    ("resume_vhca_in", "op_mod", 0x30, 16),
    ("resume_vhca_in", "vhca_id", 0x50, 16),
    ("query_vhca_migration_state_in", "incremental", 0x40, 1),
    ("query_vhca_migration_state_in", "chunk", 0x41, 1),
    ("query_vhca_migration_state_in", "vhca_id", 0x50, 16),
    (
        "query_vhca_migration_state_out",
        "required_umem_size",
        0x80,
        32,
    ),
    (
        "query_vhca_migration_state_out",
        "remaining_total_size",
        0xc0,
        64,
    ),
    ("save_vhca_state_in", "incremental", 0x40, 1),
    ("save_vhca_state_in", "set_track", 0x41, 1),
    ("save_vhca_state_in", "vhca_id", 0x50, 16),
    ("save_vhca_state_in", "va", 0x80, 64),
    ("save_vhca_state_in", "mkey", 0xc0, 32),
    ("save_vhca_state_in", "size", 0xe0, 32),
    ("save_vhca_state_out", "actual_image_size", 0x40, 32),
    ("save_vhca_state_out", "next_required_umem_size", 0x60, 32),
    ("load_vhca_state_in", "vhca_id", 0x50, 16),
    ("load_vhca_state_in", "va", 0x80, 64),
    ("load_vhca_state_in", "mkey", 0xc0, 32),
    ("load_vhca_state_in", "size", 0xe0, 32),
    // §2.3 QUERY_HCA_CAP
    ("query_hca_cap_in", "op_mod", 0x30, 16),
    ("query_hca_cap_in", "other_function", 0x40, 1),
    ("query_hca_cap_in", "ec_vf_function", 0x41, 1),
    ("query_hca_cap_in", "function_id", 0x50, 16),
    ("cmd_hca_cap", "vhca_resource_manager", 0x1f, 1),
    ("cmd_hca_cap", "hca_cap_2", 0x20, 1),
    ("cmd_hca_cap", "vhca_id", 0x30, 16),
    ("cmd_hca_cap", "adv_virtualization", 0x579, 1),
    ("cmd_hca_cap", "migration", 0x68d, 1),
    ("cmd_hca_cap_2", "migratable", 0x80, 1),
    ("cmd_hca_cap_2", "migration_multi_load", 0xc8, 1),
    ("cmd_hca_cap_2", "migration_tracking_state", 0xc9, 1),
    ("cmd_hca_cap_2", "migration_in_chunks", 0xd0, 1),
    // §2.4 PD / MKEY
    ("alloc_pd_out", "pd", 0x48, 24),
    ("dealloc_pd_in", "pd", 0x48, 24),
    ("create_mkey_in", "pg_access", 0x60, 1),
    ("create_mkey_in", "mkey_umem_valid", 0x61, 1),
    ("create_mkey_in", "memory_key_mkey_entry", 0x80, 512),
    (
        "create_mkey_in",
        "translations_octword_actual_size",
        0x300,
        32,
    ),
    ("create_mkey_out", "mkey_index", 0x48, 24),
    ("destroy_mkey_in", "mkey_index", 0x48, 24),
    ("mkc", "free", 0x1, 1),
    ("mkc", "access_mode_4_2", 0x3, 3),
    ("mkc", "umr_en", 0x10, 1),
    ("mkc", "a", 0x11, 1),
    ("mkc", "rw", 0x12, 1),
    ("mkc", "rr", 0x13, 1),
    ("mkc", "lw", 0x14, 1),
    ("mkc", "lr", 0x15, 1),
    ("mkc", "access_mode_1_0", 0x16, 2),
    ("mkc", "qpn", 0x20, 24),
    ("mkc", "mkey_7_0", 0x38, 8),
    ("mkc", "length64", 0x60, 1),
    ("mkc", "pd", 0x68, 24),
    ("mkc", "start_addr", 0x80, 64),
    ("mkc", "len", 0xc0, 64),
    ("mkc", "bsf_octword_size", 0x100, 32),
    ("mkc", "translations_octword_size", 0x1a0, 32),
    ("mkc", "relaxed_ordering_read", 0x1d9, 1),
    ("mkc", "log_page_size", 0x1da, 6),
];

fn field(layout: &str, name: &str) -> Field {
    let l = layout_by_name(layout).unwrap_or_else(|| panic!("no layout {layout}"));
    *l.fields
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("{layout} has no member {name}"))
}

/// Bit `i` in the big-endian bit numbering, computed independently of the
/// accessor code.
fn bit_is_set(buf: &[u8], i: u32) -> bool {
    buf[(i / 8) as usize] & (0x80 >> (i % 8)) != 0
}

#[test]
fn declared_offsets_match_the_reference_tables() {
    for &(layout, name, bit, width) in REFERENCE {
        let f = field(layout, name);
        assert_eq!((f.bit, f.width), (bit, width), "{layout}.{name}");
    }
}

/// The buffer with exactly bits `[bit, bit + width)` set, built bit by bit
/// independently of the accessor code.
fn expected_ones(size: usize, bit: u32, width: u32) -> Vec<u8> {
    let mut buf = vec![0u8; size];
    for i in bit..bit + width {
        buf[(i / 8) as usize] |= 0x80 >> (i % 8);
    }
    buf
}

#[test]
fn every_member_sets_exactly_its_own_bits() {
    for layout in LAYOUTS {
        for f in layout.fields.iter().filter(|f| f.width <= 64) {
            let want = expected_ones(layout.size, f.bit, f.width);
            let mut buf = vec![0u8; layout.size];
            f.write(&mut buf, f.max_value()).unwrap();
            assert!(buf == want, "{}.{}", layout.name, f.name);
            assert!(bit_is_set(&buf, f.bit), "{}.{}", layout.name, f.name);
            assert_eq!(f.read(&buf).unwrap(), f.max_value());
            // And the complement: clearing the field in an all-ones buffer
            // clears exactly those bits.
            let mut ones = vec![0xffu8; layout.size];
            f.write(&mut ones, 0).unwrap();
            assert!(
                ones.iter().zip(&want).all(|(o, w)| *o == !*w),
                "{}.{}",
                layout.name,
                f.name
            );
        }
    }
}

#[test]
fn nested_mkc_sits_at_byte_16_of_create_mkey_in() {
    let l = layout_by_name("create_mkey_in").unwrap();
    assert_eq!(l.nested.len(), 1);
    assert_eq!(l.nested[0].name, "memory_key_mkey_entry");
    assert_eq!(l.nested[0].bit, 0x80);
    assert_eq!(l.nested[0].layout.name, "mkc");
    assert_eq!(l.tail.unwrap().byte, 272);
    assert_eq!(l.tail.unwrap().element_bits, 32);
}

#[test]
fn capability_decoders_accept_exactly_min_decode_len() {
    let cap = layout_by_name("cmd_hca_cap").unwrap();
    let n = cap.min_decode_len();
    assert_eq!(n, 210); // migration is bit 0x68d: byte 209
    assert!(GeneralCaps::parse(&vec![0; n]).is_ok());
    assert!(GeneralCaps::parse(&vec![0; n - 1]).is_err());
    let cap2 = layout_by_name("cmd_hca_cap_2").unwrap();
    let n = cap2.min_decode_len();
    assert_eq!(n, 27); // migration_in_chunks is bit 0xd0: byte 26
    assert!(General2Caps::parse(&vec![0; n]).is_ok());
    assert!(General2Caps::parse(&vec![0; n - 1]).is_err());
}

#[test]
fn sizes_match_linux() {
    let sizes: &[(&str, usize)] = &[
        ("query_hca_cap_in", 16),
        ("query_hca_cap_out", 4112),
        ("alloc_pd_in", 16),
        ("alloc_pd_out", 16),
        ("dealloc_pd_in", 16),
        ("dealloc_pd_out", 16),
        ("create_mkey_in", 272),
        ("create_mkey_out", 16),
        ("destroy_mkey_in", 16),
        ("destroy_mkey_out", 16),
        ("mkc", 64),
        ("suspend_vhca_in", 16),
        ("suspend_vhca_out", 16),
        ("resume_vhca_in", 16),
        ("resume_vhca_out", 16),
        ("query_vhca_migration_state_in", 16),
        ("query_vhca_migration_state_out", 64),
        ("save_vhca_state_in", 32),
        ("save_vhca_state_out", 16),
        ("load_vhca_state_in", 32),
        ("load_vhca_state_out", 16),
    ];
    for &(name, size) in sizes {
        assert_eq!(layout_by_name(name).unwrap().size, size, "{name}");
    }
}

fn hex(s: &str) -> Vec<u8> {
    let s: std::string::String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn encoded<C: Command>(cmd: &C) -> Vec<u8> {
    let mut buf = vec![0xa5u8; C::IN_SIZE + 8];
    let n = cmd.encode(&mut buf).unwrap();
    assert_eq!(n, C::IN_SIZE);
    // Nothing past the structure is touched.
    assert!(buf[n..].iter().all(|&b| b == 0xa5));
    buf.truncate(n);
    buf
}

#[test]
fn golden_query_hca_cap() {
    let q = QueryHcaCap {
        target: CapTarget::vf(2).unwrap(),
        cap: CapType::General,
        mode: CapMode::Current,
    };
    assert_eq!(encoded(&q), hex("0100 0000 0000 0001 8000 0003 0000 0000"));
    let q = QueryHcaCap {
        target: CapTarget::SelfFunction,
        cap: CapType::General2,
        mode: CapMode::Max,
    };
    assert_eq!(encoded(&q), hex("0100 0000 0000 0040 0000 0000 0000 0000"));
    let q = QueryHcaCap {
        target: CapTarget::vf(0).unwrap(),
        cap: CapType::General2,
        mode: CapMode::Current,
    };
    assert_eq!(encoded(&q), hex("0100 0000 0000 0041 8000 0001 0000 0000"));
}

#[test]
fn golden_pd() {
    assert_eq!(
        encoded(&AllocPd),
        hex("0800 0000 0000 0000 0000 0000 0000 0000")
    );
    assert_eq!(
        encoded(&DeallocPd { pd: Pd(0x12_3456) }),
        hex("0801 0000 0000 0000 0012 3456 0000 0000")
    );
    let mut buf = [0u8; 16];
    assert!(matches!(
        DeallocPd { pd: Pd(0x100_0000) }.encode(&mut buf),
        Err(EncodeError::ValueTooWide { field: "pd", .. })
    ));
}

#[test]
fn golden_suspend_resume_op_mods_are_reversed() {
    let s = |side| {
        encoded(&SuspendVhca {
            vhca_id: 0x0102,
            side,
        })
    };
    let r = |side| {
        encoded(&ResumeVhca {
            vhca_id: 0x0102,
            side,
        })
    };
    assert_eq!(
        s(VhcaSide::Initiator),
        hex("0115 0000 0000 0000 0000 0102 0000 0000")
    );
    assert_eq!(
        s(VhcaSide::Responder),
        hex("0115 0000 0000 0001 0000 0102 0000 0000")
    );
    assert_eq!(
        r(VhcaSide::Responder),
        hex("0116 0000 0000 0000 0000 0102 0000 0000")
    );
    assert_eq!(
        r(VhcaSide::Initiator),
        hex("0116 0000 0000 0001 0000 0102 0000 0000")
    );
}

#[test]
fn golden_query_migration_state() {
    let q = QueryMigrationState {
        vhca_id: 0xbeef,
        scope: Scope::Incremental,
        chunked: true,
    };
    assert_eq!(encoded(&q), hex("0117 0000 0000 0000 c000 beef 0000 0000"));
    let q = QueryMigrationState {
        vhca_id: 7,
        scope: Scope::Full,
        chunked: false,
    };
    assert_eq!(encoded(&q), hex("0117 0000 0000 0000 0000 0007 0000 0000"));
}

#[test]
fn golden_save_and_load() {
    let save = SaveVhcaState {
        vhca_id: 0x1234,
        scope: Scope::Full,
        tracking: Tracking::Track,
        va: 0x1122_3344_5566_7788,
        mkey: Mkey(0xaabb_cc00),
        size: 0x0080_0000,
    };
    assert_eq!(
        encoded(&save),
        hex("0118 0000 0000 0000 4000 1234 0000 0000 1122 3344 5566 7788 aabb cc00 0080 0000")
    );
    let save = SaveVhcaState {
        scope: Scope::Incremental,
        tracking: Tracking::Untracked,
        va: 0,
        ..save
    };
    assert_eq!(
        encoded(&save),
        hex("0118 0000 0000 0000 8000 1234 0000 0000 0000 0000 0000 0000 aabb cc00 0080 0000")
    );
    let load = LoadVhcaState {
        vhca_id: 0x1234,
        va: 0,
        mkey: Mkey(0x0000_0500),
        size: 0xffff_ffff,
    };
    assert_eq!(
        encoded(&load),
        hex("0119 0000 0000 0000 0000 1234 0000 0000 0000 0000 0000 0000 0000 0500 ffff ffff")
    );
}

#[test]
fn golden_destroy_mkey_takes_the_index() {
    let d = DestroyMkey {
        mkey: Mkey(0x00ab_cd00),
    };
    assert_eq!(encoded(&d), hex("0202 0000 0000 0000 0000 abcd 0000 0000"));
    assert_eq!(Mkey::from_index(0xabcd), Mkey(0x00ab_cd00));
}

#[test]
fn golden_create_mkey_mtt() {
    let pages = [0x0000_0001_0000_0000u64, 0x2000, 0x7fff_f000];
    let mut buf = vec![0xeeu8; 400];
    let len = encode_create_mkey_mtt(&mut buf, Pd(0x42), pages.iter().copied()).unwrap();
    assert_eq!(len, 272 + 4 * 8);
    let mut want = vec![0u8; len];
    want[..2].copy_from_slice(&[0x02, 0x00]); // opcode
    // mkc at byte 16: dword 0 = rw rr lw lr | access_mode_1_0 = 1
    want[16..20].copy_from_slice(&[0x00, 0x00, 0x3d, 0x00]);
    want[20..24].copy_from_slice(&[0xff, 0xff, 0xff, 0x00]); // qpn, mkey_7_0
    want[28..32].copy_from_slice(&[0x00, 0x00, 0x00, 0x42]); // pd
    want[40..48].copy_from_slice(&(3u64 * 4096).to_be_bytes()); // len
    want[68..72].copy_from_slice(&2u32.to_be_bytes()); // translations_octword_size
    want[72..76].copy_from_slice(&[0x00, 0x00, 0x00, 0x0c]); // log_page_size 12
    want[96..100].copy_from_slice(&2u32.to_be_bytes()); // actual size
    for (i, p) in pages.iter().enumerate() {
        want[272 + 8 * i..280 + 8 * i].copy_from_slice(&p.to_be_bytes());
    }
    assert_eq!(buf[..len], want[..]);
    assert!(buf[len..].iter().all(|&b| b == 0xee));

    let mut small = [0u8; 280];
    assert_eq!(
        encode_create_mkey_mtt(&mut small, Pd(1), pages.iter().copied()),
        Err(MkeyEncodeError::InsufficientSize { required: 304 })
    );
    assert_eq!(small, [0u8; 280]);
    assert_eq!(
        encode_create_mkey_mtt(&mut buf, Pd(1), [0x1001u64].into_iter()),
        Err(MkeyEncodeError::UnalignedPage(0x1001))
    );
    assert_eq!(
        encode_create_mkey_mtt(&mut buf, Pd(1), core::iter::empty()),
        Err(MkeyEncodeError::BadPageCount(0))
    );
    assert_eq!(create_mkey_in_len(1), 288);
    assert_eq!(create_mkey_in_len(2048), 272 + 2048 * 8);
}

fn out_with_status(size: usize, status: u8, syndrome: u32) -> Vec<u8> {
    let mut out = vec![0u8; size];
    out[0] = status;
    out[4..8].copy_from_slice(&syndrome.to_be_bytes());
    out
}

#[test]
fn decode_ok_outputs() {
    let mut out = out_with_status(16, 0, 0);
    out[9..12].copy_from_slice(&[0x12, 0x34, 0x56]);
    assert_eq!(AllocPd.decode(&out), Ok(Pd(0x12_3456)));
    assert_eq!(decode_create_mkey_out(&out), Ok(Mkey(0x1234_5600)));

    let mut out = out_with_status(64, 0, 0);
    out[16..20].copy_from_slice(&0x0080_1000u32.to_be_bytes());
    out[24..32].copy_from_slice(&0x0000_0001_4000_0000u64.to_be_bytes());
    let q = QueryMigrationState {
        vhca_id: 1,
        scope: Scope::Full,
        chunked: true,
    };
    assert_eq!(
        q.decode(&out),
        Ok(MigrationStateSize {
            required_umem_size: 0x0080_1000,
            remaining_total_size: 0x1_4000_0000,
            migration_state: 0,
        })
    );

    let mut out = out_with_status(16, 0, 0);
    out[8..12].copy_from_slice(&0x0010_0000u32.to_be_bytes());
    out[12..16].copy_from_slice(&0x0080_0000u32.to_be_bytes());
    let save = SaveVhcaState {
        vhca_id: 1,
        scope: Scope::Full,
        tracking: Tracking::Untracked,
        va: 0,
        mkey: Mkey(0x100),
        size: 0x0080_0000,
    };
    assert_eq!(
        save.decode(&out),
        Ok(SaveResult {
            actual_image_size: 0x0010_0000,
            next_required_umem_size: 0x0080_0000
        })
    );

    let mut out = out_with_status(4112, 0, 0);
    out[16 + 6..16 + 8].copy_from_slice(&0x0042u16.to_be_bytes());
    out[16 + 4] |= 0x80; // hca_cap_2
    out[16 + 175] |= 0x40; // adv_virtualization
    out[16 + 209] |= 0x04; // migration
    let q = QueryHcaCap {
        target: CapTarget::vf(0).unwrap(),
        cap: CapType::General,
        mode: CapMode::Current,
    };
    assert_eq!(
        q.decode(&out),
        Ok(Caps::General(GeneralCaps {
            vhca_id: 0x42,
            hca_cap_2: true,
            migration: true,
            adv_virtualization: true
        }))
    );
    let mut out = out_with_status(4112, 0, 0);
    out[16 + 16] = 0x80; // migratable
    out[16 + 25] = 0xc0; // multi_load, tracking_state
    out[16 + 26] = 0x80; // in_chunks
    let q = QueryHcaCap {
        cap: CapType::General2,
        ..q
    };
    assert_eq!(
        q.decode(&out),
        Ok(Caps::General2(General2Caps {
            migratable: true,
            migration_multi_load: true,
            migration_tracking_state: true,
            migration_in_chunks: true
        }))
    );
}

#[test]
fn the_proposed_migration_state_field() {
    let mut out = out_with_status(64, 0, 0);
    out[12] = 0x40; // bits 0x60..0x63 = 4 (INIT)
    let q = QueryMigrationState {
        vhca_id: 1,
        scope: Scope::Incremental,
        chunked: true,
    };
    assert_eq!(
        q.decode(&out).unwrap().migration_state,
        migration_state::INIT
    );
    // It lies in what the merged header calls reserved_at_40.
    let r = field("query_vhca_migration_state_out", "reserved_at_40");
    assert!(
        r.bit <= MIGRATION_STATE.field().bit && MIGRATION_STATE.field().bit + 4 <= r.bit + r.width
    );
}

#[test]
fn decode_error_statuses() {
    let cases: &[(u8, CmdStatus, crate::errno::Errno)] = &[
        (0x01, CmdStatus::IntErr, crate::errno::Errno::EIO),
        (0x03, CmdStatus::BadParamErr, crate::errno::Errno::EINVAL),
        (0x06, CmdStatus::ResBusy, crate::errno::Errno::EBUSY),
        (0x08, CmdStatus::LimErr, crate::errno::Errno::ENOMEM),
        (0x09, CmdStatus::BadResStateErr, crate::errno::Errno::EINVAL),
        (0x0f, CmdStatus::NoResErr, crate::errno::Errno::EAGAIN),
        (0x50, CmdStatus::BadInpLenErr, crate::errno::Errno::EIO),
        (0xee, CmdStatus::Unknown(0xee), crate::errno::Errno::EIO),
    ];
    for &(raw, status, errno) in cases {
        let out = out_with_status(16, raw, 0xdead_beef);
        let r = SuspendVhca {
            vhca_id: 3,
            side: VhcaSide::Responder,
        }
        .decode(&out);
        let Err(DecodeError::Failed(e)) = r else {
            panic!("{r:?}")
        };
        assert_eq!(e.opcode, Opcode::SuspendVhca);
        assert_eq!(e.op_mod, 1);
        assert_eq!(e.status, status);
        assert_eq!(e.syndrome, 0xdead_beef);
        assert_eq!(e.errno(), errno);
        // Every output decoder reports the status the same way.
        let out64 = out_with_status(64, raw, 1);
        assert!(matches!(
            QueryMigrationState {
                vhca_id: 0,
                scope: Scope::Full,
                chunked: false
            }
            .decode(&out64),
            Err(DecodeError::Failed(CmdError { status: s, syndrome: 1, .. })) if s == status
        ));
        assert!(matches!(AllocPd.decode(&out), Err(DecodeError::Failed(_))));
        assert!(matches!(
            decode_create_mkey_out(&out),
            Err(DecodeError::Failed(_))
        ));
        assert!(matches!(
            DestroyMkey { mkey: Mkey(0) }.decode(&out),
            Err(DecodeError::Failed(_))
        ));
        assert!(matches!(
            DeallocPd { pd: Pd(1) }.decode(&out),
            Err(DecodeError::Failed(_))
        ));
        assert!(matches!(
            LoadVhcaState {
                vhca_id: 0,
                va: 0,
                mkey: Mkey(0),
                size: 0
            }
            .decode(&out),
            Err(DecodeError::Failed(_))
        ));
        assert!(matches!(
            ResumeVhca {
                vhca_id: 0,
                side: VhcaSide::Initiator
            }
            .decode(&out),
            Err(DecodeError::Failed(_))
        ));
    }
}

#[test]
fn short_outputs_are_errors() {
    for len in [0usize, 1, 7, 15] {
        let out = vec![0u8; len];
        assert_eq!(
            AllocPd.decode(&out),
            Err(DecodeError::Truncated {
                structure: "alloc_pd_out",
                needed: 16,
                actual: len
            })
        );
    }
    let q = QueryHcaCap {
        target: CapTarget::SelfFunction,
        cap: CapType::General,
        mode: CapMode::Max,
    };
    assert!(matches!(
        q.decode(&[0u8; 4111]),
        Err(DecodeError::Truncated { needed: 4112, .. })
    ));
}

#[test]
fn error_display_reads_like_a_driver_log() {
    let e = CmdError {
        opcode: Opcode::LoadVhcaState,
        op_mod: 0,
        status: CmdStatus::BadParamErr,
        syndrome: 0x0123_4567,
    };
    assert_eq!(
        std::format!("{e}"),
        "LOAD_VHCA_STATE(0x119) op_mod 0x0 failed: status BAD_PARAM_ERR(0x3), syndrome 0x01234567 (EINVAL)"
    );
}

#[test]
fn a_save_completion_parses_itself_with_the_same_checks_as_any_output() {
    let mut out = out_with_status(16, 0, 0);
    out[8..12].copy_from_slice(&0x0010_0000u32.to_be_bytes());
    out[12..16].copy_from_slice(&0x0080_0000u32.to_be_bytes());
    assert_eq!(
        SaveResult::parse(&out),
        Ok(SaveResult {
            actual_image_size: 0x0010_0000,
            next_required_umem_size: 0x0080_0000
        })
    );
    // A refused SAVE names the opcode it was, though no command was at hand.
    let refused = out_with_status(16, 0x05, 0xdead);
    match SaveResult::parse(&refused) {
        Err(DecodeError::Failed(e)) => {
            assert_eq!(e.opcode, Opcode::SaveVhcaState);
            assert_eq!(e.syndrome, 0xdead);
        }
        other => panic!("expected a firmware refusal, got {other:?}"),
    }
    assert_eq!(
        SaveResult::parse(&out[..15]),
        Err(DecodeError::Truncated {
            structure: "save_vhca_state_out",
            needed: 16,
            actual: 15
        })
    );
}

#[test]
fn a_checked_view_checks_the_length_once_and_reads_every_field() {
    use crate::ifc::migration::save_vhca_state_in as f;
    assert_eq!(
        Checked::<f::Bits>::new(&[0u8; 31]).map(|_| ()),
        Err(FieldError::Truncated {
            field: "save_vhca_state_in",
            needed: 32,
            actual: 31
        })
    );
    let mut buf = [0u8; 32];
    let mut input = CheckedMut::<f::Bits>::new(&mut buf).unwrap();
    input.set(f::vhca_id, 0x1234).unwrap();
    input.set(f::va, 0x0102_0304_0506_0708).unwrap();
    input.set(f::set_track, true).unwrap();
    assert!(matches!(
        input.set(f::reserved_at_42, 0x4000),
        Err(FieldError::TooWide { width: 14, .. })
    ));
    let view = Checked::<f::Bits>::new(&buf).unwrap();
    assert_eq!(view.get(f::vhca_id), 0x1234);
    assert_eq!(view.get(f::va), 0x0102_0304_0506_0708);
    assert!(view.get(f::set_track));
    assert!(!view.get(f::incremental));
    // A capability area nested in a QUERY_HCA_CAP output: the offset is
    // checked against the outer table at compile time.
    let mut out = out_with_status(4112, 0, 0);
    out[16 + 16] |= 0x80; // cmd_hca_cap_2.migratable (bit 0x80)
    let outer = Checked::<crate::ifc::hca_cap::query_hca_cap_out::Bits>::new(&out).unwrap();
    let cap2 = outer.nested::<crate::ifc::hca_cap::cmd_hca_cap_2::Bits, { crate::ifc::hca_cap::CAPABILITY_OFFSET }>();
    assert!(cap2.get(crate::ifc::hca_cap::cmd_hca_cap_2::migratable));
}
