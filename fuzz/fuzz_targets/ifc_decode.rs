#![no_main]
//! `cargo fuzz run ifc_decode`: see `mlx5vf_fuzz::targets::ifc_decode`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| mlx5vf_fuzz::targets::ifc_decode(data));
