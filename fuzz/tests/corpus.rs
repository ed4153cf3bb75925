//! Runs every fuzz target over every file of its committed corpus
//! (`fuzz/corpus/<target>/`), on stable, as part of `cargo test`.
//!
//! To replay one input (a crash artifact, say) with the checks' messages:
//! `MLX5VF_FUZZ_REPLAY=<target>:<file> cargo test -p mlx5vf-fuzz --test corpus -- --nocapture`.

use std::path::{Path, PathBuf};

use mlx5vf_fuzz::targets::by_name;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

/// `path` as given if it exists, else from the repository root (`cargo
/// test` runs in `fuzz/`, users type paths from the root).
fn from_root(path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.exists() {
        p.to_path_buf()
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(p)
    }
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => vec![],
    };
    out.sort();
    out
}

fn run_dir(target: &str) {
    let f = by_name(target).unwrap_or_else(|| panic!("no target {target}"));
    let dir = corpus_dir(target);
    let inputs = files(&dir);
    assert!(!inputs.is_empty(), "no corpus in {}", dir.display());
    for path in inputs {
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        eprintln!("{target}: {}", path.display());
        f(&data);
    }
}

#[test]
fn tracker_report() {
    run_dir("tracker_report");
}

#[test]
fn ifc_decode() {
    run_dir("ifc_decode");
}

#[test]
fn stream_reader() {
    run_dir("stream_reader");
}

#[test]
fn resume_engine() {
    run_dir("resume_engine");
}

#[test]
fn save_engine() {
    run_dir("save_engine");
}

#[test]
fn state_graph() {
    run_dir("state_graph");
}

#[test]
fn cmdq_decode() {
    run_dir("cmdq_decode");
}

/// `MLX5VF_FUZZ_STATS=<target>:<dir>` runs a corpus directory (a fuzzing
/// run's, say) and prints how deep the target got; a no-op otherwise.
#[test]
fn stats() {
    let Ok(spec) = std::env::var("MLX5VF_FUZZ_STATS") else {
        return;
    };
    let (target, dir) = spec
        .split_once(':')
        .unwrap_or_else(|| panic!("MLX5VF_FUZZ_STATS={spec}: want <target>:<dir>"));
    let f = by_name(target).unwrap_or_else(|| panic!("no target {target}"));
    let dir = from_root(dir);
    assert!(dir.is_dir(), "{}: not a directory", dir.display());
    let inputs = files(&dir);
    for path in &inputs {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        f(&data);
    }
    eprintln!("{target}: {} inputs", inputs.len());
    for (name, n) in mlx5vf_fuzz::stats::snapshot() {
        if n > 0 {
            eprintln!("  {name:28} {n}");
        }
    }
}

/// `MLX5VF_FUZZ_REPLAY=<target>:<file>` replays one input (a path from the
/// repository root or the current directory); a no-op otherwise.
#[test]
fn replay() {
    let Ok(spec) = std::env::var("MLX5VF_FUZZ_REPLAY") else {
        return;
    };
    let (target, file) = spec
        .split_once(':')
        .unwrap_or_else(|| panic!("MLX5VF_FUZZ_REPLAY={spec}: want <target>:<file>"));
    let f = by_name(target).unwrap_or_else(|| panic!("no target {target}"));
    let data = std::fs::read(from_root(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    f(&data);
}
