//! Property tests: spec round-trip, and no panic on hostile command or
//! image bytes.

mod common;

use std::time::Duration;

use common::*;
use mlx5vf_sim::{Firmware, SimSpec, Syndrome};
use proptest::prelude::*;

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        any::<u64>().prop_map(Duration::from_nanos),
        (0..u64::MAX / 1000).prop_map(|n| Duration::from_nanos(n * 1000)),
        (0..u64::MAX / 1_000_000).prop_map(|n| Duration::from_nanos(n * 1_000_000)),
        any::<u64>().prop_map(Duration::from_secs),
    ]
}

fn size() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        (0u64..1 << 20).prop_map(|n| n << 10),
        (0u64..1 << 20).prop_map(|n| n << 30),
    ]
}

fn sim_spec() -> impl Strategy<Value = SimSpec> {
    (
        (
            size(),
            any::<u64>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        ),
        (1u64..u64::MAX, size(), size()),
        (
            proptest::option::of(1u64..u64::MAX),
            duration(),
            1u16..=4,
            any::<bool>(),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (state, seed, chunks, precopy, migratable),
                (min, extra, dirty),
                (fw_rate, latency, vfs, content, cmdq),
            )| {
                SimSpec {
                    state,
                    seed,
                    chunks,
                    precopy,
                    migratable,
                    object_min: min,
                    object_max: min.saturating_add(extra),
                    dirty,
                    fw_rate,
                    latency,
                    vfs,
                    content,
                    transport: if cmdq {
                        mlx5vf_sim::spec::Transport::Cmdq
                    } else {
                        mlx5vf_sim::spec::Transport::Call
                    },
                }
            },
        )
}

/// Strings made of spec tokens, to reach deep into the parser.
fn spec_text() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("state=".to_string()),
        Just("object=".to_string()),
        Just("latency=".to_string()),
        Just("fw-rate=".to_string()),
        Just("vfs=".to_string()),
        Just(",".to_string()),
        Just("-".to_string()),
        Just("/s".to_string()),
        "[0-9]{1,22}",
        "[KMGTkmgtnsum]{1,2}",
        ".{0,3}",
    ];
    proptest::collection::vec(token, 0..12).prop_map(|t| format!("sim:{}", t.concat()))
}

proptest! {
    #[test]
    fn spec_round_trips(spec in sim_spec()) {
        prop_assert_eq!(SimSpec::parse(&spec.to_string()).unwrap(), spec);
        prop_assert_eq!(SimSpec::parse(&format!("{spec:#}")).unwrap(), spec);
    }

    #[test]
    fn spec_parser_never_panics(text in prop_oneof![spec_text(), ".{0,64}"]) {
        if let Ok(spec) = SimSpec::parse(&text) {
            prop_assert_eq!(SimSpec::parse(&spec.to_string()).unwrap(), spec);
        }
    }
}

/// A device with a PD, a mapped buffer and an mkey, so random commands can
/// reach the DMA paths.
fn device() -> (Rig, Buf, u16, u32) {
    let mut rig = Rig::one("sim:state=2M,object=4K-256K,dirty=64K,vfs=2");
    let pd = rig.alloc_pd(0);
    let buf = rig.buffer(0, pd, 1 << 20);
    let vhca = rig.vhca(0, 0);
    (rig, buf, vhca, pd)
}

/// One command: either raw random bytes, or a known opcode with random but
/// plausible fields.
fn command(vhca: u16, key: u32) -> impl Strategy<Value = (Vec<u8>, usize)> {
    let raw = (proptest::collection::vec(any::<u8>(), 0..400), 0usize..5000);
    let shaped = (
        prop::sample::select(vec![
            0x100u16, 0x200, 0x202, 0x115, 0x116, 0x117, 0x118, 0x119, 0x800, 0x801,
        ]),
        0u16..4,
        any::<u8>(),
        prop_oneof![Just(vhca), any::<u16>()],
        prop_oneof![Just(key), any::<u32>()],
        prop_oneof![Just(0u64), any::<u64>()],
        prop_oneof![0u32..(2 << 20), any::<u32>()],
        prop_oneof![Just(16usize), Just(64), Just(4112), 0usize..5000],
        prop_oneof![Just(32usize), Just(16), Just(272 + 16), 0usize..600],
    )
        .prop_map(
            |(op, op_mod, flags, vhca, key, va, size, out_len, in_len)| {
                let mut c = Cmd::new(op, op_mod, in_len.max(32));
                c.put8(8, flags & 0xc0)
                    .put16(10, vhca)
                    .put64(16, va)
                    .put32(24, key)
                    .put32(28, size);
                c.0.truncate(in_len);
                (c.0, out_len)
            },
        );
    prop_oneof![raw, shaped]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_commands_never_panic(cmds in proptest::collection::vec(command(0x101, 0x5a), 1..40)) {
        let (mut rig, buf, _, _) = device();
        for (input, out_len) in cmds {
            let mut out = vec![0xee; out_len];
            let fw: &mut Firmware = &mut rig.fws[0];
            let r = fw.exec(&input, &mut out, &mut rig.mem);
            prop_assert_eq!(r.is_err(), out_len < 16);
            if out_len >= 16 && out[0] != 0 {
                // Every refusal carries a syndrome the sim defines, with its status.
                let s = Syndrome::from_code(u32::from_be_bytes(out[4..8].try_into().unwrap()));
                prop_assert!(s.is_some_and(|s| s.status() == out[0]), "{:?}", &out[..8]);
            }
        }
        let _ = buf;
    }

    #[test]
    fn random_image_bytes_never_panic_and_never_change_state(
        mode in 0u8..3,
        noise in proptest::collection::vec((any::<u16>(), any::<u8>()), 0..16),
        raw in proptest::collection::vec(any::<u8>(), 0..4096),
        size in prop_oneof![Just(None), (0u32..(1 << 20) + 10).prop_map(Some)],
    ) {
        let (mut rig, buf, v, pd) = device();
        let v1 = rig.vhca(0, 1);
        rig.stop(0, v);
        rig.stop(0, v1);
        // A real image as the base (modes 0, 1), or pure noise (mode 2).
        let (actual, _) = rig.save_ok(0, v, false, false, buf, 1 << 20);
        let bytes = rig.mem.bytes_mut(buf.iova);
        match mode {
            0 => {
                for (at, x) in &noise {
                    let at = usize::from(*at) % bytes.len();
                    bytes[at] ^= x | 1;
                }
            }
            1 => {
                for (at, x) in &noise {
                    let at = usize::from(*at) % 200;
                    bytes[at] = *x;
                }
            }
            _ => bytes[..raw.len()].copy_from_slice(&raw),
        }
        let before = (rig.fws[0].digest(1), rig.fws[0].vf_state(1));
        let out = rig.load(0, v1, buf, size.unwrap_or(actual));
        let refused = out.status() != 0;
        if refused {
            prop_assert_eq!(before, (rig.fws[0].digest(1), rig.fws[0].vf_state(1)));
            prop_assert!(Syndrome::from_code(out.syndrome()).is_some());
        } else {
            // Only an image that verified can load; no noise may survive.
            prop_assert!(mode == 0 && noise.is_empty() || size.is_none_or(|s| s == actual));
        }
        rig.fws[0].reset_vf(1);
        rig.drop_mkey(0, buf);
        rig.free(buf);
        rig.dealloc_pd(0, pd).ok();
        rig.assert_clean();
    }
}
