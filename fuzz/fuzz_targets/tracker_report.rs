#![no_main]
//! `cargo fuzz run tracker_report`: see `mlx5vf_fuzz::targets::tracker_report`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| mlx5vf_fuzz::targets::tracker_report(data));
