//! `include/mlx5vf.h` is generated from this crate by cbindgen; this test
//! regenerates it and fails when the checked-in header is stale, so CI
//! catches an ABI change that was not re-exported. `MLX5VF_BLESS=1` writes
//! the fresh header instead.

use std::path::Path;

fn generate() -> Vec<u8> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_crate(dir)
        .with_config(config)
        .generate()
        .expect("cbindgen could not generate the header");
    let mut out = Vec::new();
    bindings.write(&mut out);
    out
}

#[test]
fn header_is_up_to_date() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/mlx5vf.h");
    let fresh = generate();
    if std::env::var_os("MLX5VF_BLESS").is_some() {
        std::fs::write(&path, &fresh).expect("write include/mlx5vf.h");
        return;
    }
    let current = std::fs::read(&path).unwrap_or_default();
    assert!(
        current == fresh,
        "include/mlx5vf.h is stale: run `MLX5VF_BLESS=1 cargo test -p mlx5vf-linux --test header` \
         and review the diff"
    );
}
