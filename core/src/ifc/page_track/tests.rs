//! Golden bytes for the page-tracker layouts, written out by hand from the
//! `mlx5_ifc.h` member lists (`reference/page-tracker.md` §1–3).

use std::vec;
use std::vec::Vec;

use super::*;
use crate::ifc::{CmdError, CmdStatus, layout_by_name};

fn hex(s: &str) -> Vec<u8> {
    let s: std::string::String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn offsets_match_the_reference() {
    let table: &[(&str, &str, u32, u32)] = &[
        ("adv_virtualization_cap", "pg_track_log_max_num", 0x03, 5),
        ("adv_virtualization_cap", "pg_track_max_num_range", 0x08, 8),
        (
            "adv_virtualization_cap",
            "pg_track_log_min_addr_space",
            0x10,
            8,
        ),
        (
            "adv_virtualization_cap",
            "pg_track_log_max_addr_space",
            0x18,
            8,
        ),
        (
            "adv_virtualization_cap",
            "pg_track_log_min_msg_size",
            0x23,
            5,
        ),
        (
            "adv_virtualization_cap",
            "pg_track_log_max_msg_size",
            0x2b,
            5,
        ),
        (
            "adv_virtualization_cap",
            "pg_track_log_min_page_size",
            0x33,
            5,
        ),
        (
            "adv_virtualization_cap",
            "pg_track_log_max_page_size",
            0x3b,
            5,
        ),
        ("page_track", "modify_field_select", 0x00, 64),
        ("page_track", "vhca_id", 0x50, 16),
        ("page_track", "state", 0x80, 4),
        ("page_track", "track_type", 0x84, 4),
        ("page_track", "log_addr_space_size", 0x88, 8),
        ("page_track", "log_page_size", 0x93, 5),
        ("page_track", "log_msg_size", 0x9b, 5),
        ("page_track", "reporting_qpn", 0xa8, 24),
        ("page_track", "num_ranges", 0xd8, 8),
        ("page_track", "range_start_address", 0x100, 64),
        ("page_track", "length", 0x140, 64),
        ("create_page_track_obj_in", "obj_type", 0x30, 16),
        ("create_page_track_obj_in", "obj_id", 0x40, 32),
        ("general_obj_out_cmd_hdr", "obj_id", 0x40, 32),
        ("cqe64", "imm_inval_pkey", 36 * 8, 32),
        ("cqe64", "byte_cnt", 44 * 8, 32),
        ("cqe64", "wqe_counter", 60 * 8, 16),
        ("cqe64", "op_own", 63 * 8, 8),
    ];
    for &(layout, name, bit, width) in table {
        let l = layout_by_name(layout).unwrap();
        let f = l.fields.iter().find(|f| f.name == name).unwrap();
        assert_eq!((f.bit, f.width), (bit, width), "{layout}.{name}");
    }
    // The flattened CREATE/MODIFY tables are the context shifted by 0x80.
    let ctx = layout_by_name("page_track").unwrap();
    for outer in ["create_page_track_obj_in", "modify_page_track_obj_in"] {
        let l = layout_by_name(outer).unwrap();
        for f in ctx.fields.iter().filter(|f| !f.is_reserved()) {
            let g = l.fields.iter().find(|g| g.name == f.name).unwrap();
            assert_eq!(
                (g.bit, g.width),
                (f.bit + 0x80, f.width),
                "{outer}.{}",
                f.name
            );
        }
    }
    let sizes = [
        ("adv_virtualization_cap", 256),
        ("page_track", 48),
        ("create_page_track_obj_in", 64),
        ("modify_page_track_obj_in", 64),
        ("query_page_track_obj_in", 16),
        ("destroy_page_track_obj_in", 16),
        ("query_page_track_obj_out", 64),
        ("general_obj_out_cmd_hdr", 16),
        ("page_track_range", 16),
        ("page_track_report_entry", 8),
    ];
    for (name, size) in sizes {
        assert_eq!(layout_by_name(name).unwrap().size, size, "{name}");
    }
}

#[test]
fn caps_decode_from_golden_bytes() {
    // max_num_range 4, addr space 12..52, msg 12..16, page 12..21; the
    // reserved top bits of the 5-bit members set, to prove they are masked.
    let mut cap = vec![0u8; 256];
    cap[..8].copy_from_slice(&hex("e4 04 0c 34 ec f0 ec f5"));
    let caps = AdvVirtualizationCaps::parse(&cap).unwrap();
    assert_eq!(
        caps,
        AdvVirtualizationCaps {
            pg_track_log_max_num: 4,
            pg_track_max_num_range: 4,
            pg_track_log_min_addr_space: 12,
            pg_track_log_max_addr_space: 52,
            pg_track_log_min_msg_size: 12,
            pg_track_log_max_msg_size: 16,
            pg_track_log_min_page_size: 12,
            pg_track_log_max_page_size: 21,
        }
    );
    let mut round = vec![0u8; 256];
    caps.emit(&mut round).unwrap();
    assert_eq!(&round[..8], &hex("04 04 0c 34 0c 10 0c 15")[..]);
    assert!(AdvVirtualizationCaps::parse(&cap[..255]).is_err());
}

#[test]
fn create_encodes_golden_bytes() {
    let ranges = [
        TrackRange {
            start_address: 0x1_0000,
            length: 0x2000,
        },
        TrackRange {
            start_address: 0x10_0000,
            length: 0x1000,
        },
    ];
    let cmd = CreatePageTrack {
        vhca_id: 0x102,
        log_addr_space_size: 30,
        log_page_size: 12,
        log_msg_size: 12,
        reporting_qpn: 0x1234,
        ranges: &ranges,
    };
    let mut buf = vec![0xa5u8; 100];
    assert_eq!(cmd.encode(&mut buf), Ok(96));
    let want = hex("0a00 0000 0000 0046 00000000 00000000
         0000000000000000 0000 0102 00000000
         01 1e 0c 0c 00001234 00000002 00000000
         0000000000000000 0000000000000000
         0000000000010000 0000000000002000
         0000000000100000 0000000000001000");
    assert_eq!(&buf[..96], &want[..]);
    assert_eq!(&buf[96..], &[0xa5; 4], "nothing past the input is touched");
    let mut small = vec![0x5au8; 95];
    assert_eq!(
        cmd.encode(&mut small),
        Err(EncodeError::InsufficientSize { required: 96 })
    );
    assert!(small.iter().all(|&b| b == 0x5a));
    let many = vec![ranges[0]; 256];
    let too_many = CreatePageTrack {
        ranges: &many,
        ..cmd
    };
    assert!(matches!(
        too_many.encode(&mut vec![0; 8192]),
        Err(EncodeError::ValueTooWide {
            field: "num_ranges",
            ..
        })
    ));
}

#[test]
fn modify_query_destroy_encode_golden_bytes() {
    let t = TrackerId(0xabcd);
    let mut buf = [0u8; 64];
    let n = ModifyPageTrack {
        tracker: t,
        iova: 0x8000_0000,
        length: 0x40_0000,
    }
    .encode(&mut buf)
    .unwrap();
    assert_eq!(n, 64);
    let want = hex("0a01 0000 0000 0046 0000abcd 00000000
         0000000000000003 0000 0000 00000000
         10 00 00 00 00000000 00000000 00000000
         0000000080000000 0000000000400000");
    assert_eq!(&buf[..], &want[..]);
    let mut q = [0u8; 16];
    QueryPageTrack { tracker: t }.encode(&mut q).unwrap();
    assert_eq!(&q[..], &hex("0a02 0000 0000 0046 0000abcd 00000000")[..]);
    DestroyPageTrack { tracker: t }.encode(&mut q).unwrap();
    assert_eq!(&q[..], &hex("0a03 0000 0000 0046 0000abcd 00000000")[..]);
}

#[test]
fn outputs_decode() {
    let mut out = [0u8; 16];
    out[8..12].copy_from_slice(&0x77u32.to_be_bytes());
    assert_eq!(CreatePageTrack::decode(&out), Ok(TrackerId(0x77)));
    out[0] = 0x03;
    out[4..8].copy_from_slice(&0x1234u32.to_be_bytes());
    assert_eq!(
        CreatePageTrack::decode(&out),
        Err(DecodeError::Failed(CmdError {
            opcode: Opcode::CreateGeneralObject,
            op_mod: OBJ_TYPE_PAGE_TRACK,
            status: CmdStatus::BadParamErr,
            syndrome: 0x1234,
        }))
    );
    let q = QueryPageTrack {
        tracker: TrackerId(1),
    };
    let mut qo = [0u8; 64];
    for (raw, state) in [
        (0u8, TrackerState::Tracking),
        (1, TrackerState::Reporting),
        (2, TrackerState::Error),
        (9, TrackerState::Unknown(9)),
    ] {
        qo[32] = raw << 4 | 0x1; // state nibble, track_type 1 beside it
        assert_eq!(q.decode(&qo), Ok(state));
    }
    assert!(q.decode(&qo[..63]).is_err());
}

#[test]
fn cqe_round_trips_and_matches_mlx5_cqe64_offsets() {
    let mut raw = [0u8; 64];
    raw[36..40].copy_from_slice(&0x1000_0000u32.to_be_bytes());
    raw[44..48].copy_from_slice(&4096u32.to_be_bytes());
    raw[60..62].copy_from_slice(&0x0203u16.to_be_bytes());
    raw[63] = 0x31;
    let c = ReportCqe::parse(&raw).unwrap();
    assert_eq!(
        c,
        ReportCqe {
            opcode: CQE_OPCODE_RESP_SEND_IMM,
            owner: true,
            byte_cnt: 4096,
            wqe_counter: 0x203,
            state: TrackerState::Reporting,
        }
    );
    let mut back = [0u8; 64];
    c.emit(&mut back).unwrap();
    assert_eq!(back, raw);
    assert!(ReportCqe::parse(&raw[..63]).is_err());
}

#[test]
fn adv_virtualization_query_uses_cap_type_0x26() {
    let mut q = [0u8; 16];
    QueryAdvVirtualizationCap {
        mode: CapMode::Current,
    }
    .encode(&mut q)
    .unwrap();
    assert_eq!(&q[..], &hex("0100 0000 0000 004d 00000000 00000000")[..]);
    QueryAdvVirtualizationCap { mode: CapMode::Max }
        .encode(&mut q)
        .unwrap();
    assert_eq!(&q[6..8], &[0x00, 0x4c]);
    let mut out = vec![0u8; 4112];
    out[17] = 7; // pg_track_max_num_range at cap byte 1
    let caps = QueryAdvVirtualizationCap {
        mode: CapMode::Current,
    }
    .decode(&out)
    .unwrap();
    assert_eq!(caps.pg_track_max_num_range, 7);
}
