#![no_main]
//! `cargo fuzz run stream_reader`: see `mlx5vf_fuzz::targets::stream_reader`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| mlx5vf_fuzz::targets::stream_reader(data));
