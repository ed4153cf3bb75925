//! What `--help` teaches and how usage errors read (issue 14): every command
//! that takes a device documents the spec grammar with examples, flags that
//! do not apply to a command are not offered, and a usage error is one line
//! with exit status 2.
// The tool and the simulated device (default features): built without
// them (a VMM's embedding) there is nothing here to test.
#![cfg(all(feature = "cli", feature = "sim"))]
mod common;

use common::run;
use mlx5vf_sim::spec::KEYS;

/// The commands that take a device, with the option that names it.
const DEVICE_COMMANDS: [&str; 4] = ["save", "load", "migrate", "check"];

#[test]
fn every_device_command_documents_the_spec_grammar() {
    for command in DEVICE_COMMANDS {
        let help = run(&[command, "--help"]);
        let text = help.ok();
        for key in &KEYS {
            let entry = format!("{}={}", key.name, key.value);
            assert!(
                text.contains(&entry),
                "{command} --help lacks {entry}:\n{text}"
            );
            let default = format!("[default: {}]", key.default_value());
            let line = text.lines().find(|l| l.contains(&entry)).unwrap();
            assert!(line.ends_with(&default), "{command}: {line}");
        }
        for needle in [
            "vfs=N",
            "vfio-mig:DEVICE[,iommu=auto|group|cdev]",
            "/dev/vfio/devices/vfioN",
            "Examples:",
            &format!("  mlx5vf {command} --"),
        ] {
            assert!(
                text.contains(needle),
                "{command} --help lacks {needle:?}:\n{text}"
            );
        }
        // -h points to it in one line.
        let short = run(&[command, "-h"]);
        assert!(
            short.ok().contains("--help lists the keys"),
            "{command} -h:\n{}",
            short.stdout
        );
    }
}

/// The saving policy is not offered where nothing is saved, nor the
/// loading policy where nothing is loaded.
#[test]
fn flags_that_do_not_apply_are_not_offered() {
    const SAVING: [&str; 5] = [
        "--chunk-size",
        "--chunk-slots",
        "--legacy",
        "--no-integrity",
        "--linux-precopy",
    ];
    let load = run(&["load", "--help"]);
    for flag in SAVING {
        assert!(!load.ok().contains(flag), "load --help offers {flag}");
    }
    assert!(load.ok().contains("--sync-load"));
    let save = run(&["save", "--help"]);
    for flag in SAVING {
        assert!(save.ok().contains(flag), "save --help lacks {flag}");
    }
    assert!(
        !save.ok().contains("--sync-load"),
        "save --help offers --sync-load"
    );
    for command in ["migrate", "check"] {
        let help = run(&[command, "--help"]);
        for flag in SAVING.iter().chain(&["--sync-load"]) {
            assert!(help.ok().contains(flag), "{command} --help lacks {flag}");
        }
    }
    run(&["load", "--legacy", "-i", "/dev/null"]).fails(
        2,
        "unexpected argument '--legacy' found; see 'mlx5vf load --help'",
    );
    run(&["save", "--sync-load", "-o", "/dev/null"]).fails(
        2,
        "unexpected argument '--sync-load' found; see 'mlx5vf save --help'",
    );
}

/// clap's own errors span several lines (message, tip, usage, "for more
/// information"); ours are one, with exit status 2 and nothing on stdout.
#[test]
fn usage_errors_are_one_line_with_exit_status_2() {
    let cases: [(&[&str], &str); 8] = [
        (
            &["save", "--frobnicate"],
            "unexpected argument '--frobnicate' found",
        ),
        (&["save", "--josn"], "(a similar argument exists: '--json')"),
        (
            &["states", "next", "running"],
            "missing required argument(s): <TO>",
        ),
        (
            &["ifc", "decode"],
            "missing required argument(s): <NAME> <HEX>",
        ),
        (&["migrate", "--chunk-slots", "9"], "9 is not in 1..=8"),
        (&["teleport"], "unrecognized subcommand 'teleport'"),
        (
            &["states"],
            "a subcommand is required; see 'mlx5vf states --help'",
        ),
        (&[], "a subcommand is required; see 'mlx5vf --help'"),
    ];
    for (args, needle) in cases {
        let r = run(args);
        r.fails(2, needle);
        assert_eq!(r.stdout, "", "{args:?}");
    }
    // Help and version still go to stdout with exit status 0.
    assert!(run(&["--version"]).ok().starts_with("mlx5vf "));
    assert!(run(&["--help"]).ok().contains("Usage: mlx5vf"));
}

/// The README's table of sim keys is the parser's (names and defaults).
#[test]
fn the_readme_lists_the_sim_keys_of_the_parser() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // In the repository the README is the workspace's; a packaged crate
    // carries a copy beside its manifest.
    let readme = std::fs::read_to_string(dir.join("../README.md"))
        .or_else(|_| std::fs::read_to_string(dir.join("README.md")))
        .unwrap();
    let table = readme
        .split("## Simulated device spec")
        .nth(1)
        .expect("README has a simulated device spec section");
    let rows: Vec<(String, String)> = table
        .lines()
        .skip_while(|l| !l.starts_with("| key"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let unquote = |c: &str| c.trim_matches('`').to_owned();
            (unquote(cells[1]), unquote(cells[cells.len() - 2]))
        })
        .collect();
    let expected: Vec<(String, String)> = KEYS
        .iter()
        .map(|k| (k.name.to_owned(), k.default_value().to_string()))
        .collect();
    assert_eq!(rows, expected);
}
