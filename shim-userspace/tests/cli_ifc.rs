//! `mlx5vf ifc`, run as a process: golden encodes derived by hand from the
//! bit offsets of the mlx5 command fact sheet (§2), round trips of every value
//! member of every layout against an independent bit packer, and every error.
// The tool and the simulated device (default features): built without
// them (a VMM's embedding) there is nothing here to test.
#![cfg(all(feature = "cli", feature = "sim"))]

mod common;

use common::{run, run_stdin};
use mlx5vf_core::ifc::{Field, LAYOUTS, Layout, LayoutKind};

/// A deterministic PRNG (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value of `width` bits, biased toward the edges (0, 1, all ones)
    /// now and then, as a checker feeding random values would hit them.
    fn value(&mut self, width: u32) -> u64 {
        let mask = if width >= 64 {
            u64::MAX
        } else {
            (1 << width) - 1
        };
        match self.next() % 8 {
            0 => 0,
            1 => mask,
            2 => 1,
            _ => self.next() & mask,
        }
    }
}

/// Sets `width` bits at `bit` the way the fact sheet states the convention
/// (bit 0 = MSB of byte 0; fields below 32 bits live in one big-endian dword
/// at shift `32 - bit % 32 - width`; 64-bit fields are a big-endian u64),
/// written here independently of `mlx5vf_core::ifc::Field`.
fn pack(buf: &mut [u8], bit: u32, width: u32, value: u64) {
    let bit = bit as usize;
    if width == 64 {
        buf[bit / 8..bit / 8 + 8].copy_from_slice(&value.to_be_bytes());
        return;
    }
    let at = bit / 32 * 4;
    let shift = 32 - (bit % 32) as u32 - width;
    let mask: u32 = if width == 32 { !0 } else { (1 << width) - 1 };
    let mut dword = u32::from_be_bytes(buf[at..at + 4].try_into().unwrap());
    dword &= !(mask << shift);
    dword |= (value as u32 & mask) << shift;
    buf[at..at + 4].copy_from_slice(&dword.to_be_bytes());
}

/// Every value member of `layout` with its full name and absolute field.
fn value_members(layout: &Layout) -> Vec<(String, Field)> {
    let mut all: Vec<(String, Field)> = layout
        .fields
        .iter()
        .filter(|f| f.is_value())
        .map(|f| (f.name.to_owned(), *f))
        .collect();
    for n in layout.nested {
        for f in n.layout.fields.iter().filter(|f| f.is_value()) {
            let abs = Field {
                bit: n.bit + f.bit,
                ..*f
            };
            all.push((format!("{}.{}", n.name, f.name), abs));
        }
    }
    all
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn encode(args: &[&str]) -> String {
    let mut full = vec!["ifc", "encode"];
    full.extend_from_slice(args);
    let run = run(&full);
    let out = run.ok();
    assert!(out.ends_with('\n') && out.lines().count() == 1, "{out:?}");
    out.trim_end().to_owned()
}

// --- Golden encodes: one per command input, hex written out by hand. ---

#[test]
fn golden_save_vhca_state_in() {
    // dw0 opcode 0x118 | uid 0; dw1 op_mod 0; dw2 incremental (bit 0x40 =
    // dw2 >> 31) | vhca_id (dw2 & 0xffff); va bytes 16..24; mkey dw6; size dw7.
    assert_eq!(
        encode(&[
            "save_vhca_state_in",
            "vhca_id=0x1234",
            "incremental=1",
            "size=0x800000"
        ]),
        "0118000000000000800012340000000000000000000000000000000000800000"
    );
    assert_eq!(
        encode(&[
            "save_vhca_state_in",
            "set_track=1",
            "uid=1",
            "va=0x1122334455667788",
            "mkey=0xaabbccdd"
        ]),
        concat!(
            "01180001",
            "00000000",
            "40000000",
            "00000000", // header, set_track = dw2 >> 30
            "1122334455667788",
            "aabbccdd",
            "00000000"
        )
    );
}

#[test]
fn golden_load_vhca_state_in() {
    assert_eq!(
        encode(&[
            "load_vhca_state_in",
            "vhca_id=0x1234",
            "va=0x1000",
            "mkey=0x4200",
            "size=65536"
        ]),
        concat!(
            "01190000",
            "00000000",
            "00001234",
            "00000000",
            "0000000000001000",
            "00004200",
            "00010000"
        )
    );
}

#[test]
fn golden_query_vhca_migration_state_in() {
    // incremental dw2 >> 31, chunk dw2 >> 30.
    assert_eq!(
        encode(&[
            "query_vhca_migration_state_in",
            "incremental=1",
            "chunk=1",
            "vhca_id=7"
        ]),
        "0117000000000000c000000700000000"
    );
    assert_eq!(
        encode(&["query_vhca_migration_state_in", "chunk=1"]),
        "01170000000000004000000000000000"
    );
}

#[test]
fn golden_suspend_resume_vhca_in() {
    assert_eq!(
        encode(&["suspend_vhca_in", "op_mod=1", "vhca_id=0x10"]),
        "01150000000000010000001000000000"
    );
    assert_eq!(
        encode(&["resume_vhca_in", "vhca_id=0xffff"]),
        "01160000000000000000ffff00000000"
    );
}

#[test]
fn golden_query_hca_cap_in() {
    // op_mod 0x41 = cap2 current; other_function dw2 >> 31; function_id dw2 & 0xffff.
    assert_eq!(
        encode(&[
            "query_hca_cap_in",
            "op_mod=0x41",
            "other_function=1",
            "function_id=3"
        ]),
        "01000000000000418000000300000000"
    );
    assert_eq!(
        encode(&["query_hca_cap_in", "ec_vf_function=1"]),
        "01000000000000004000000000000000"
    );
}

#[test]
fn golden_pd_in() {
    assert_eq!(
        encode(&["alloc_pd_in", "uid=0x55"]),
        "08000055000000000000000000000000"
    );
    // pd: bit 0x48, 24 bits = dw2 & 0xffffff.
    assert_eq!(
        encode(&["dealloc_pd_in", "pd=0xabcdef"]),
        "080100000000000000abcdef00000000"
    );
}

#[test]
fn golden_mkey_in() {
    assert_eq!(
        encode(&["destroy_mkey_in", "mkey_index=0x123456", "op_mod=2"]),
        "02020000000000020012345600000000"
    );
    // The MTT recipe of §2.4 for two pages; mkc at byte 16 (bit 0x80).
    let got = encode(&[
        "create_mkey_in",
        "memory_key_mkey_entry.pd=5",
        "lr=1",
        "lw=1",
        "access_mode_1_0=1",
        "qpn=0xffffff",
        "log_page_size=12",
        "len=0x2000",
        "translations_octword_size=1",
        "translations_octword_actual_size=1",
        "klm_pas_mtt[0]=0x12",
        "klm_pas_mtt[1]=0x34567000",
        "klm_pas_mtt[3]=0x35000",
    ]);
    let want = [
        // create_mkey_in dw0..dw3: opcode 0x200; op_mod, pg_access.. all 0.
        "02000000",
        "00000000",
        "00000000",
        "00000000",
        // mkc dw0: lr (bit 0x15: << 10) | lw (0x14: << 11) | access_mode_1_0 (0x16: << 8).
        "00000d00",
        // mkc dw1: qpn (bit 0x20, 24 bits: << 8) | mkey_7_0 0.
        "ffffff00",
        // mkc dw2: reserved.
        "00000000",
        // mkc dw3: pd (bit 0x68, 24 bits: << 0).
        "00000005",
        // mkc start_addr (be64 at mkc byte 16), len (be64 at mkc byte 24).
        "0000000000000000",
        "0000000000002000",
        // mkc dw8 bsf_octword_size; dw9..dw11 reserved_at_120; dw12 crossing_target_vhca_id.
        "00000000",
        "00000000",
        "00000000",
        "00000000",
        "00000000",
        // mkc dw13 translations_octword_size (bit 0x1a0).
        "00000001",
        // mkc dw14 log_page_size (bit 0x1da, 6 bits: << 0); dw15 reserved.
        "0000000c",
        "00000000",
        // create_mkey_in reserved_at_280: 16 bytes.
        "00000000000000000000000000000000",
        // translations_octword_actual_size (bit 0x300 = byte 96).
        "00000001",
    ]
    .concat();
    // ... then zeros up to byte 272, then the 32-bit tail elements 0..=3.
    let want = format!(
        "{want}{}{}",
        "00".repeat(272 - 100),
        "00000012345670000000000000035000"
    );
    assert_eq!(got.len(), (272 + 16) * 2);
    assert_eq!(got, want);
}

#[test]
fn golden_decode_outputs_and_caps() {
    let out = run(&[
        "ifc",
        "decode",
        "query_vhca_migration_state_out",
        &format!(
            "0x0{}{}{}{}",
            "3000000 0000abcd 00000000 00000000",
            " 00100000 00000000 0000000123456789",
            " 00000000000000000000000000000000",
            " 00000000000000000000000000000000"
        ),
    ]);
    assert_eq!(
        out.ok(),
        "status=3\nsyndrome=43981\nrequired_umem_size=1048576\nremaining_total_size=4886718345\n"
    );
    // cmd_hca_cap_2: migratable byte 16 0x80; multi_load byte 25 0x80,
    // tracking_state byte 25 0x40; in_chunks byte 26 0x80. 27 bytes cover them.
    let mut cap2 = vec![0u8; 27];
    cap2[16] = 0x80;
    cap2[25] = 0x40;
    cap2[26] = 0x80;
    assert_eq!(
        run(&["ifc", "decode", "cmd_hca_cap_2", &hex(&cap2)]).ok(),
        "migratable=1\nmigration_multi_load=0\nmigration_tracking_state=1\nmigration_in_chunks=1\n"
    );
    // cmd_hca_cap: vhca_id bytes 6-7; adv_virtualization byte 175 0x40;
    // migration byte 209 0x04; hca_cap_2 byte 4 0x80.
    let mut cap = vec![0u8; 4096];
    cap[4] = 0x80;
    cap[6] = 0x12;
    cap[7] = 0x34;
    cap[175] = 0x40;
    cap[209] = 0x04;
    assert_eq!(
        run(&["ifc", "decode", "cmd_hca_cap", &hex(&cap)]).ok(),
        "vhca_resource_manager=0\nhca_cap_2=1\nvhca_id=4660\ncmdif_checksum=0\nadv_virtualization=1\nmigration=1\n"
    );
}

// --- Round trips of every value member of every layout. ---

#[test]
fn every_value_member_of_every_layout_round_trips() {
    let mut rng = Rng(0x6d76_1f0c);
    for layout in LAYOUTS {
        let members = value_members(layout);
        assert!(!members.is_empty(), "{}", layout.name);
        for round in 0..6 {
            let values: Vec<u64> = members.iter().map(|(_, f)| rng.value(f.width)).collect();
            let mut expected = vec![0u8; layout.size];
            if let LayoutKind::Input { opcode } = layout.kind {
                pack(&mut expected, 0, 16, u64::from(opcode));
            }
            // Half the rounds set every member, the others a random subset
            // (so defaults are exercised too).
            let mut args = Vec::new();
            let mut decoded = Vec::new();
            for ((name, field), &v) in members.iter().zip(&values) {
                let set = round % 2 == 0 || rng.next() % 2 == 0;
                if set {
                    pack(&mut expected, field.bit, field.width, v);
                    args.push(format!(
                        "{name}={}",
                        if v % 2 == 0 {
                            format!("{v:#x}")
                        } else {
                            v.to_string()
                        }
                    ));
                }
            }
            for (name, field) in &members {
                decoded.push(format!("{name}={}", read_back(&expected, field)));
            }
            let want_lines = decoded.join("\n") + "\n";
            let hex_in = if layout.kind == LayoutKind::Capability {
                hex(&expected)
            } else {
                let mut full = vec!["ifc", "encode", layout.name];
                full.extend(args.iter().map(String::as_str));
                let got = run(&full).ok().trim_end().to_owned();
                assert_eq!(got, hex(&expected), "{} {args:?}", layout.name);
                got
            };
            let out = run(&["ifc", "decode", layout.name, &hex_in]);
            assert_eq!(out.ok(), want_lines, "{}", layout.name);
        }
    }
}

/// Reads a field with the fact sheet's formula (independent of core).
fn read_back(buf: &[u8], f: &Field) -> u64 {
    let bit = f.bit as usize;
    if f.width == 64 {
        return u64::from_be_bytes(buf[bit / 8..bit / 8 + 8].try_into().unwrap());
    }
    let at = bit / 32 * 4;
    let dword = u32::from_be_bytes(buf[at..at + 4].try_into().unwrap());
    let shift = 32 - (bit % 32) as u32 - f.width;
    let mask: u64 = (1u64 << f.width) - 1;
    (u64::from(dword) >> shift) & mask
}

#[test]
fn nested_members_by_dotted_and_bare_name() {
    let dotted = encode(&[
        "create_mkey_in",
        "memory_key_mkey_entry.start_addr=0xfedcba9876543210",
    ]);
    let bare = encode(&["create_mkey_in", "start_addr=0xfedcba9876543210"]);
    assert_eq!(dotted, bare);
    // start_addr: mkc bit 0x80 = byte 16 of the mkc = byte 32 of the input.
    assert_eq!(&dotted[64..80], "fedcba9876543210");
    let out = run(&["ifc", "decode", "create_mkey_in", &dotted]);
    assert!(
        out.ok()
            .lines()
            .any(|l| l == "memory_key_mkey_entry.start_addr=18364758544493064720")
    );
    // mkc alone is a structure too.
    assert_eq!(
        encode(&["mkc", "pd=0xffffff"]),
        format!("{}00ffffff{}", "0".repeat(24), "0".repeat(96))
    );
}

#[test]
fn tail_elements_decode_in_order() {
    let mut bytes = vec![0u8; 272 + 8];
    bytes[272..280].copy_from_slice(&[0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff]);
    let out = run(&["ifc", "decode", "create_mkey_in", &hex(&bytes)]);
    let text = out.ok();
    let tail: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("klm_pas_mtt"))
        .collect();
    assert_eq!(tail, ["klm_pas_mtt[0]=1", "klm_pas_mtt[1]=4294967295"]);
    // The tail comes after every fixed and nested member.
    assert!(text.trim_end().ends_with("klm_pas_mtt[1]=4294967295"));
    // Fixed part only: no tail lines.
    let out = run(&["ifc", "decode", "create_mkey_in", &"00".repeat(272)]);
    assert!(!out.ok().contains("klm_pas_mtt"));
}

#[test]
fn decode_accepts_prefix_whitespace_and_stdin() {
    let spaced = "0x 00000000 00000000\n0000002a\t00000000 ";
    assert_eq!(
        run(&["ifc", "decode", "alloc_pd_out", spaced]).ok(),
        "status=0\nsyndrome=0\npd=42\n"
    );
    let out = run_stdin(
        &["ifc", "decode", "alloc_pd_out", "-"],
        b"00000000000000000000002a00000000\n",
    );
    assert_eq!(out.ok(), "status=0\nsyndrome=0\npd=42\n");
}

#[test]
fn list_and_fields() {
    let out = run(&["ifc", "list"]);
    let text = out.ok();
    assert_eq!(text.lines().count(), LAYOUTS.len());
    let line = text
        .lines()
        .find(|l| l.starts_with("save_vhca_state_in "))
        .unwrap();
    assert_eq!(
        line.split_whitespace().collect::<Vec<_>>(),
        ["save_vhca_state_in", "32", "input", "opcode=0x118"]
    );
    let out = run(&["ifc", "fields", "save_vhca_state_in"]);
    assert!(out.ok().lines().any(|l| l == "0x0050 0x0010 vhca_id"));
}

// --- Errors: exit 2, one line, naming the problem. ---

#[test]
fn errors_exit_2_with_one_line() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["ifc", "encode", "save_vhca_state_in", "size=0x100000000"],
            "mlx5vf: ifc: field \"size\" of save_vhca_state_in is 32 bits; 0x100000000 does not fit",
        ),
        (
            &[
                "ifc",
                "encode",
                "create_mkey_in",
                "memory_key_mkey_entry.pd=0x1000000",
            ],
            "field \"memory_key_mkey_entry.pd\" of create_mkey_in is 24 bits; 0x1000000 does not fit",
        ),
        (
            &[
                "ifc",
                "encode",
                "create_mkey_in",
                "klm_pas_mtt[5]=0x100000000",
            ],
            "field \"klm_pas_mtt[5]\" of create_mkey_in is 32 bits",
        ),
        (
            &["ifc", "encode", "bogus_in"],
            "unknown structure \"bogus_in\"",
        ),
        (
            &["ifc", "decode", "bogus_in", "00"],
            "unknown structure \"bogus_in\"",
        ),
        (
            &["ifc", "encode", "save_vhca_state_in", "vhca=1"],
            "save_vhca_state_in has no field \"vhca\"",
        ),
        (
            &["ifc", "encode", "save_vhca_state_in", "vhca_id=12x"],
            "bad number \"12x\" for field \"vhca_id\"",
        ),
        (
            &["ifc", "encode", "save_vhca_state_in", "vhca_id=-1"],
            "bad number \"-1\"",
        ),
        (
            &["ifc", "encode", "save_vhca_state_in", "vhca_id="],
            "bad number \"\"",
        ),
        (
            &[
                "ifc",
                "encode",
                "save_vhca_state_in",
                "va=18446744073709551616",
            ],
            "bad number \"18446744073709551616\"",
        ),
        (
            &["ifc", "encode", "save_vhca_state_in", "vhca_id"],
            "expected FIELD=VALUE, got \"vhca_id\"",
        ),
        (
            &[
                "ifc",
                "encode",
                "save_vhca_state_in",
                "vhca_id=1",
                "vhca_id=2",
            ],
            "field \"vhca_id\" of save_vhca_state_in is given twice",
        ),
        (
            &["ifc", "encode", "save_vhca_state_in", "reserved_at_60=1"],
            "field \"reserved_at_60\" of save_vhca_state_in is reserved",
        ),
        (
            &["ifc", "encode", "create_mkey_in", "klm_pas_mtt[x]=1"],
            "bad tail element \"klm_pas_mtt[x]\"",
        ),
        (
            &["ifc", "encode", "cmd_hca_cap", "vhca_id=1"],
            "decode only",
        ),
        (&["ifc", "encode", "cmd_hca_cap_2"], "decode only"),
        (
            &[
                "ifc",
                "decode",
                "alloc_pd_out",
                "00000000000000000000002a0000000g",
            ],
            "bad hex digit 'g' at digit 31",
        ),
        (
            &[
                "ifc",
                "decode",
                "alloc_pd_out",
                "00000000000000000000002a0000000",
            ],
            "odd number of hex digits (31)",
        ),
        (
            &[
                "ifc",
                "decode",
                "alloc_pd_out",
                "00000000000000000000002a000000",
            ],
            "alloc_pd_out is 16 bytes; got 15",
        ),
        (
            &[
                "ifc",
                "decode",
                "alloc_pd_out",
                "00000000000000000000002a0000000000",
            ],
            "alloc_pd_out is 16 bytes; got 17",
        ),
        (
            &["ifc", "decode", "create_mkey_in", &"00".repeat(274)],
            "create_mkey_in is 272 bytes plus 4-byte klm_pas_mtt elements; got 274",
        ),
        (
            &["ifc", "decode", "cmd_hca_cap_2", &"00".repeat(26)],
            "cmd_hca_cap_2 takes 27 to 4096 bytes of the capability area; got 26",
        ),
        (
            &["ifc", "decode", "cmd_hca_cap", &"00".repeat(4097)],
            "cmd_hca_cap takes 210 to 4096 bytes of the capability area; got 4097",
        ),
    ];
    for (args, needle) in cases {
        run(args).fails(2, needle);
    }
}
