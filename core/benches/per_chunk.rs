//! The core's bookkeeping per chunk and per image, without the bytes: what
//! the driver itself costs on top of firmware and copies. The engines run
//! against scripted completions, so nothing here waits or copies payload.
//! For scale, the same run measures one memcpy of the 8 MiB chunk the
//! bookkeeping accompanies.
//!
//! Run: `cargo bench -p mlx5vf-core --bench per_chunk`

use std::hint::black_box;

use divan::Bencher;
use mlx5vf_core::ifc::migration::SaveResult;
use mlx5vf_core::load::{LoadConfig, LoadEngine, WriteStep};
use mlx5vf_core::save::{
    BufRef, ImageMode, PrecopyPolicy, SaveAction, SaveConfig, SaveEngine, Segment,
};
use mlx5vf_core::stream::Header;
use mlx5vf_core::vfio::SaveMode;

fn main() {
    divan::main();
}

const CHUNK: u32 = 8 << 20;
/// Chunks per measured iteration (so per-iteration overhead vanishes).
const CHUNKS: u32 = 1024;

fn slot_bufs(slots: u8) -> Vec<BufRef> {
    (0..u16::from(slots))
        .map(|index| BufRef {
            index,
            npages: CHUNK / 4096,
        })
        .collect()
}

/// One stop-copy stream of `CHUNKS` chunks through the saving engine:
/// per chunk a completion, its actions, and the reader consuming its
/// header and payload. Divan reports the time per chunk.
#[divan::bench(args = [1, 2, 8])]
fn save_engine_per_chunk(bencher: Bencher, slots: u8) {
    let cfg = SaveConfig {
        chunk_slots: slots,
        precopy: PrecopyPolicy::Chunked,
        ..SaveConfig::linux(ImageMode::Chunked, SaveMode::StopCopy)
    };
    let bufs = slot_bufs(slots);
    let plan = mlx5vf_core::save::OpenPlan {
        slot_pages: CHUNK / 4096,
        slots,
        initial_pages: None,
        state_bytes: u64::from(CHUNK) * u64::from(CHUNKS),
    };
    bencher
        .counter(divan::counter::ItemsCount::new(CHUNKS))
        .bench_local(|| {
            let mut e = SaveEngine::IDLE;
            e.open(cfg, &bufs).unwrap();
            e.first_save(&plan).unwrap();
            let mut in_flight = true;
            let mut done = 0u32;
            while done < CHUNKS {
                while let Some(a) = e.poll_action() {
                    if let SaveAction::Save(_) = a {
                        in_flight = true;
                    }
                }
                if in_flight {
                    done += 1;
                    let next = if done == CHUNKS { 0 } else { CHUNK };
                    e.handle_completion(
                        SaveResult {
                            actual_image_size: CHUNK,
                            next_required_umem_size: next,
                        },
                        0,
                    )
                    .unwrap();
                    in_flight = false;
                    continue;
                }
                // Read what is queued (header, then the chunk's bytes).
                while let Ok(seg) = e.peek() {
                    let n = match seg {
                        Segment::Inline(b) => b.len() as u64,
                        Segment::Buffer { len, .. } => len,
                    };
                    e.handle_consumed(black_box(n));
                    if e.has_actions() {
                        break;
                    }
                }
            }
            black_box(e.stats())
        });
}

/// One stream of `CHUNKS` images through the resuming engine: per image
/// its header, its payload reported as copied, and its LOAD's start and
/// end.
#[divan::bench]
fn load_engine_per_image(bencher: Bencher) {
    let header = Header::fw_data(u64::from(CHUNK)).to_bytes();
    bencher
        .counter(divan::counter::ItemsCount::new(CHUNKS))
        .bench_local(|| {
            let mut e = LoadEngine::new(LoadConfig::default());
            let mut index = 0u16;
            for _ in 0..CHUNKS {
                let (n, _) = e.write_small(&header).unwrap();
                assert_eq!(n, header.len());
                loop {
                    match e.next_step() {
                        WriteStep::Grow { npages } => {
                            e.add_segment(BufRef { index, npages }).unwrap();
                            index += 1;
                        }
                        WriteStep::Payload { len, .. } => {
                            if e.payload_written(len, 0).unwrap().is_some() {
                                break;
                            }
                        }
                        other => panic!("{other:?}"),
                    }
                }
                let (buf, _) = e.next_due().unwrap();
                e.mark_mapped(buf);
                e.load_started(buf).unwrap();
                e.loaded(buf);
            }
            black_box(e.stats())
        });
}

/// For scale: one memcpy of a chunk, out of cache.
#[divan::bench]
fn memcpy_one_chunk(bencher: Bencher) {
    let src = vec![0x5au8; CHUNK as usize];
    let mut dst = vec![0u8; CHUNK as usize];
    bencher.bench_local(|| {
        dst.copy_from_slice(black_box(&src));
        black_box(&mut dst);
    });
}
