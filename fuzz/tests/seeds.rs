//! The seed corpus: every seed decodes back to the values it was written
//! from (checked as the seeds are built), and the committed
//! `fuzz/corpus/<target>/seed-*` files are what the seed writer produces.
//!
//! To rewrite them after changing a target's input format:
//! `cargo test -p mlx5vf-fuzz --test seeds -- --ignored`.

use std::path::Path;

use mlx5vf_fuzz::seeds;

fn path(target: &str, name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
        .join(if name.starts_with("regress-") {
            name.to_string()
        } else {
            format!("seed-{name}")
        })
}

#[test]
fn seeds_decode_as_written() {
    assert!(seeds::all().len() >= 20);
}

#[test]
fn committed_seeds_are_current() {
    for (target, name, bytes) in seeds::all() {
        let p = path(target, name);
        let committed = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(
            committed == bytes,
            "{} is stale; rewrite with `cargo test -p mlx5vf-fuzz --test seeds -- --ignored`",
            p.display()
        );
    }
}

#[test]
#[ignore = "rewrites fuzz/corpus/*/seed-*"]
fn write_seed_corpus() {
    for (target, name, bytes) in seeds::all() {
        let p = path(target, name);
        std::fs::create_dir_all(p.parent().unwrap_or(Path::new("."))).unwrap_or_else(|e| {
            panic!("{}: {e}", p.display());
        });
        std::fs::write(&p, &bytes).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        eprintln!("{} ({} bytes)", p.display(), bytes.len());
    }
}
