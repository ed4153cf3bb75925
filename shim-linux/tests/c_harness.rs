//! Builds the C harness (`tests/c/harness.c`) with the system `gcc` against
//! this crate's host static library and runs each of its tests.
//!
//! Which library: `cargo test` compiles this package's lib target once with
//! all its crate types, so next to the `.rlib` this test links there is a
//! `libmlx5vf_linux-<hash>.a`, built with the `test-sim` feature (the
//! package's self dev-dependency turns it on for tests). The test takes the
//! newest such archive in its own `deps` directory that exports
//! `mlx5vf_sim_new`, so a plain `cargo build` (no `test-sim`, other hash)
//! never gets picked. The harness binary goes to `CARGO_TARGET_TMPDIR`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The libraries Rust's std needs when linked from C
/// (`rustc --print native-static-libs` on x86_64-unknown-linux-gnu).
const NATIVE_LIBS: &[&str] = &[
    "-lgcc_s",
    "-lutil",
    "-lrt",
    "-lpthread",
    "-lm",
    "-ldl",
    "-lc",
];

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn staticlib() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("deps directory");
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(deps)
        .expect("read deps")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libmlx5vf_linux-") && n.ends_with(".a"))
        })
        .filter(|p| {
            std::fs::read(p)
                .map(|bytes| bytes.windows(14).any(|w| w == b"mlx5vf_sim_new"))
                .unwrap_or(false)
        })
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, p)| p)
        .expect("no libmlx5vf_linux-*.a with the test-sim entry points next to the test binary")
}

fn gcc(args: &[&str]) {
    let out = Command::new("gcc")
        .args(args)
        .output()
        .expect("running gcc (is it installed?)");
    assert!(
        out.status.success(),
        "gcc {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The harness executable, built once per test run.
fn harness() -> &'static Path {
    static HARNESS: OnceLock<PathBuf> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("mlx5vf-linux-c");
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let include = crate_dir().join("include");
        let source = crate_dir().join("tests/c/harness.c");
        let lib = staticlib();
        let exe = dir.join("harness");
        let mut args: Vec<String> = [
            "-std=gnu11",
            "-O1",
            "-g",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pthread",
            "-fsanitize=address,undefined",
            "-fno-sanitize-recover=undefined",
            "-I",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(include.display().to_string());
        args.push(source.display().to_string());
        args.push(lib.display().to_string());
        args.extend(NATIVE_LIBS.iter().map(|s| s.to_string()));
        args.push("-o".into());
        args.push(exe.display().to_string());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        gcc(&args);
        exe
    })
}

fn run(test: &str) {
    let out = Command::new(harness())
        .arg(test)
        // Rust's std allocates outside ASan's view and never frees some of
        // it at exit; leaks are checked by the harness's own accounting.
        .env("ASAN_OPTIONS", "detect_leaks=0")
        .output()
        .expect("running the harness");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed, 0 failed"),
        "C test {test} failed ({}):\n{stdout}{stderr}",
        out.status
    );
}

/// The header compiles on its own, as C11 and as C++, without the test-only
/// declarations, with every warning an error.
#[test]
fn header_compiles_standalone() {
    let include = crate_dir().join("include").display().to_string();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("mlx5vf-linux-c");
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let c = dir.join("only_header.c");
    std::fs::write(
        &c,
        "#include \"mlx5vf.h\"\nint main(void) { return MLX5VF_RETRY - 1; }\n",
    )
    .expect("write");
    let c = c.display().to_string();
    for std in ["-std=c11", "-std=gnu89"] {
        let pedantic = if std == "-std=c11" { "-pedantic" } else { "-w" };
        gcc(&[
            std,
            pedantic,
            "-Wall",
            "-Wextra",
            "-Werror",
            "-fsyntax-only",
            "-I",
            &include,
            &c,
        ]);
    }
    let has_gxx = Command::new("g++").arg("--version").output().is_ok();
    if has_gxx {
        let out = Command::new("g++")
            .args([
                "-x",
                "c++",
                "-std=c++11",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-fsyntax-only",
            ])
            .args(["-I", &include, &c])
            .output()
            .expect("g++");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

macro_rules! c_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run(stringify!($name));
            }
        )*

        /// Every test the harness has is run by one of the tests above.
        #[test]
        fn every_c_test_is_run() {
            let out = Command::new(harness()).arg("--list").output().expect("harness --list");
            let listed = String::from_utf8_lossy(&out.stdout);
            let mut listed: Vec<&str> = listed.lines().collect();
            let mut ours = vec![$(stringify!($name)),*];
            listed.sort_unstable();
            ours.sort_unstable();
            assert_eq!(listed, ours);
        }
    };
}

c_tests!(
    abi_layout,
    stale_header_refused,
    next_state,
    roundtrip_chunked,
    roundtrip_legacy,
    measured_chunks,
    roundtrip_async_load,
    roundtrip_short_copies,
    precopy,
    enomsg_first_segment_only,
    blocking_read_woken_by_completion,
    blocking_read_woken_by_disable,
    blocking_read_woken_by_reset,
    nonblocking_eagain,
    espipe,
    set_state_retry,
    deferred_reset,
    errno_table,
    detach_wakes_reader,
    write_waits_for_save,
    fini_waits_for_save,
);
