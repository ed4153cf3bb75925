//! Round trips source → stream → destination over the simulated device.
mod common;

use common::*;
use mlx5vf_core::device::Config;

const MIB: u64 = 1 << 20;

fn spec(state: u64, chunks: bool, extra: &str) -> String {
    format!(
        "sim:state={state},chunks={},object=64K-12M{extra}",
        if chunks { "on" } else { "off" }
    )
}

fn round_trip(state: u64, chunks: bool, precopy: bool, reads: Reads) -> Report {
    round_trip_with(state, chunks, precopy, reads, false)
}

fn round_trip_with(state: u64, chunks: bool, precopy: bool, reads: Reads, eager: bool) -> Report {
    let dirty = if precopy { ",dirty=2M" } else { "" };
    let mut m = Migration::new(
        &spec(state, chunks, &format!(",seed=3{dirty}")),
        &spec(4 * MIB, chunks, ",seed=99"),
        Config::default(),
    );
    m.precopy = precopy;
    m.reads = reads;
    m.eager_firmware = eager;
    let r = m.run(state ^ 0x5eed);
    m.assert_digests_match();
    m.assert_no_leaks();
    r
}

#[test]
fn small_sizes_chunk_and_legacy_stop_copy_and_precopy() {
    // One small object; exactly 8 MiB (one chunk); 8 MiB + 1 (two chunks).
    let sizes = [64 * 1024 + 200, 8 * MIB, 8 * MIB + 1];
    for &state in &sizes {
        for chunks in [true, false] {
            for precopy in [false, true] {
                for reads in [
                    Reads::Random {
                        seed: state,
                        max: 3 * MIB,
                    },
                    Reads::Fixed(1),
                ] {
                    if matches!(reads, Reads::Fixed(1)) && state > MIB {
                        continue; // byte-at-a-time on big states is covered below
                    }
                    let r = round_trip(state, chunks, precopy, reads);
                    assert!(r.stream_bytes >= state);
                }
            }
        }
    }
}

#[test]
fn byte_at_a_time_over_two_chunks() {
    round_trip(8 * MIB + 1, true, false, Reads::Fixed(1));
}

#[test]
fn chunk_memory_is_bounded_by_slots() {
    // Firmware faster than the reader: both slots fill and SAVEs are held back.
    let r = round_trip_with(
        200 * MIB,
        true,
        false,
        Reads::Random {
            seed: 7,
            max: 5 * MIB,
        },
        true,
    );
    assert_eq!(r.max_ready_chunks, 2);
    // Two slots of at most 12 MiB (the largest object) plus the destination's
    // own source-side nothing: the source never held more than that.
    assert!(
        r.peak_buffer_bytes <= 2 * 12 * MIB + 2 * 4096,
        "{}",
        r.peak_buffer_bytes
    );
}

const GIB: u64 = 1 << 30;

/// States above 4 GiB: chunk mode round-trips, legacy mode refuses before any
/// data is streamed.
fn large(state: u64, precopy: bool) {
    let r = round_trip(
        state,
        true,
        precopy,
        Reads::Random {
            seed: state,
            max: 6 * MIB,
        },
    );
    assert!(r.stream_bytes > state);
    // Two stop-copy slots of at most the largest object (12 MiB); PRE_COPY
    // also holds the buffer its incremental images go to (as Linux does).
    let buffers = if precopy { 3 } else { 2 };
    assert!(
        r.peak_buffer_bytes <= buffers * 12 * MIB,
        "{}",
        r.peak_buffer_bytes
    );

    let mut m = Migration::new(
        &spec(state, false, ""),
        &spec(4 * MIB, false, ""),
        Config::default(),
    );
    let target = if precopy {
        mlx5vf_core::vfio::MigState::PreCopy
    } else {
        mlx5vf_core::vfio::MigState::StopCopy
    };
    let err = set_state(&mut m.src, target).unwrap_err();
    // Firmware refuses to size a single image above 32 bits.
    match err {
        mlx5vf_core::device::DeviceError::Firmware(e) => {
            assert_eq!(e.opcode, mlx5vf_core::ifc::Opcode::QueryVhcaMigrationState);
            assert_eq!(e.status, mlx5vf_core::ifc::CmdStatus::BadParamErr);
        }
        other => panic!("{other:?}"),
    }
    assert!(m.src.hal().pending.is_empty(), "no SAVE may start");
    assert_eq!(m.src.hal().saves_started, 0);
    m.src.close();
    m.src.handle_reset();
    m.assert_no_leaks();
}

#[test]
#[ignore = "large: run in release by .ci/run (cargo test --release -- --ignored)"]
fn four_gib_plus_a_page_stop_copy() {
    large(4 * GIB + 4096, false);
}

#[test]
#[ignore = "large: run in release by .ci/run (cargo test --release -- --ignored)"]
fn four_gib_plus_a_page_precopy() {
    large(4 * GIB + 4096, true);
}

#[test]
#[ignore = "large: run in release by .ci/run (cargo test --release -- --ignored)"]
fn five_gib_stop_copy() {
    large(5 * GIB, false);
}

#[test]
#[ignore = "large: run in release by .ci/run (cargo test --release -- --ignored)"]
fn five_gib_precopy() {
    large(5 * GIB, true);
}
