//! The core's bookkeeping per chunk and per image, without the bytes: what
//! the driver itself costs on top of firmware and copies. The loops are the
//! test kit's ([`mlx5vf_sim::testkit::bookkeeping`], which `mlx5vf bench
//! --only per_chunk` runs too); divan times them here. For scale, the same
//! run measures one memcpy of the 8 MiB chunk the bookkeeping accompanies.
//!
//! Run: `cargo bench -p mlx5vf-core --bench per_chunk`
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use divan::Bencher;
use mlx5vf_sim::testkit::bookkeeping::{CHUNK, load_stream, save_stream};

fn main() {
    divan::main();
}

/// Chunks per measured iteration (so per-iteration overhead vanishes).
const CHUNKS: u32 = 1024;

/// One stop-copy stream of `CHUNKS` chunks through the saving engine.
/// Divan reports the time per chunk.
#[divan::bench(args = [1, 2, 8])]
fn save_engine_per_chunk(bencher: Bencher, slots: u8) {
    bencher
        .counter(divan::counter::ItemsCount::new(CHUNKS))
        .bench_local(|| black_box(save_stream(black_box(slots), CHUNKS).unwrap()));
}

/// One stream of `CHUNKS` images through the resuming engine.
#[divan::bench]
fn load_engine_per_image(bencher: Bencher) {
    bencher
        .counter(divan::counter::ItemsCount::new(CHUNKS))
        .bench_local(|| black_box(load_stream(CHUNKS).unwrap()));
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
