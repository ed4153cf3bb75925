//! Running the built `mlx5vf` binary from integration tests.
#![allow(dead_code)]

pub(crate) mod foreign;

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// What a run of the binary produced.
pub(crate) struct Run {
    /// Exit status (`None` if killed by a signal).
    pub(crate) code: Option<i32>,
    /// Standard output.
    pub(crate) stdout: String,
    /// Standard error.
    pub(crate) stderr: String,
}

impl Run {
    fn from_output(out: Output) -> Self {
        Self {
            code: out.status.code(),
            stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
        }
    }

    /// Asserts success and returns stdout.
    pub(crate) fn ok(&self) -> &str {
        assert_eq!(self.code, Some(0), "stderr: {}", self.stderr);
        assert!(self.stderr.is_empty(), "stderr: {}", self.stderr);
        &self.stdout
    }

    /// Asserts exit status `code` with exactly one stderr line starting
    /// `mlx5vf: ` and containing `needle`; returns that line.
    pub(crate) fn fails(&self, code: i32, needle: &str) -> &str {
        assert_eq!(
            self.code,
            Some(code),
            "stdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "stderr: {:?}", self.stderr);
        assert!(
            lines[0].starts_with("mlx5vf: "),
            "stderr: {:?}",
            self.stderr
        );
        assert!(
            lines[0].contains(needle),
            "stderr {:?} lacks {needle:?}",
            self.stderr
        );
        lines[0]
    }
}

/// The binary under test.
pub(crate) fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mlx5vf"))
}

/// Runs `mlx5vf ARGS` with no input.
pub(crate) fn run(args: &[&str]) -> Run {
    let out = bin()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("binary runs");
    Run::from_output(out)
}

/// Runs `mlx5vf ARGS` with `input` on standard input.
pub(crate) fn run_stdin(args: &[&str], input: &[u8]) -> Run {
    let mut child = bin()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary runs");
    let mut stdin = child.stdin.take().expect("stdin piped");
    let input = input.to_vec();
    // Write from a thread so a child that stops reading early (a rejected
    // stream) cannot deadlock us on a full pipe.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("binary finishes");
    writer.join().expect("writer thread");
    Run::from_output(out)
}

/// The one JSON document `--json` printed on stdout (panics on none, on
/// more than one, or on anything else around it).
pub(crate) fn one_json_document(stdout: &str) -> serde_json::Value {
    let mut docs = serde_json::Deserializer::from_str(stdout).into_iter::<serde_json::Value>();
    let doc = docs
        .next()
        .unwrap_or_else(|| panic!("no JSON document in {stdout:?}"))
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout:?}"));
    assert!(docs.next().is_none(), "more than one document: {stdout:?}");
    assert_eq!(doc["schema"], "mlx5vf/1", "{stdout}");
    doc
}
