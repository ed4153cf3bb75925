#![no_main]
//! `cargo fuzz run cmdq_decode`: see `mlx5vf_fuzz::targets::cmdq_decode`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| mlx5vf_fuzz::targets::cmdq_decode(data));
