#![no_main]
//! `cargo fuzz run resume_engine`: see `mlx5vf_fuzz::targets::resume_engine`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| mlx5vf_fuzz::targets::resume_engine(data));
