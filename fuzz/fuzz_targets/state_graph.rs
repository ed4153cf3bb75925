#![no_main]
//! `cargo fuzz run state_graph`: see `mlx5vf_fuzz::targets::state_graph`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| mlx5vf_fuzz::targets::state_graph(data));
