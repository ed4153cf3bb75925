#![no_main]
//! `cargo fuzz run save_engine`: see `mlx5vf_fuzz::targets::save_engine`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| mlx5vf_fuzz::targets::save_engine(data));
