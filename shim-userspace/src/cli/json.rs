//! What `--json` prints, for every command that reports: one JSON document
//! on standard output (`bench`: one per result, JSON Lines), with
//! `"schema": "mlx5vf/1"` and the `command` that wrote it. A command that
//! fails after `--json` was given still prints one document, with an
//! `error` object. Everything is written by `serde_json`.

use std::io::{self, Write};

use serde::Serialize;

/// The `schema` of every document. A field that changes meaning or goes
/// away makes it `mlx5vf/2`; new fields do not.
pub const SCHEMA: &str = "mlx5vf/1";

/// A document: `schema`, `command`, then the fields of `body`.
#[derive(Debug, Serialize)]
pub struct Document<'a, T> {
    schema: &'static str,
    command: &'a str,
    #[serde(flatten)]
    body: T,
}

impl<'a, T: Serialize> Document<'a, T> {
    /// `body` as the document of `command` (`"save"`, `"states next"`, ...).
    pub fn new(command: &'a str, body: T) -> Self {
        Self {
            schema: SCHEMA,
            command,
            body,
        }
    }
}

/// Why a command failed, as its document says.
#[derive(Clone, Debug, Serialize)]
pub struct Failure {
    /// The error line, without `mlx5vf: `.
    pub message: String,
    /// The exit status.
    pub exit_code: u8,
}

/// Writes `doc` as one line of compact JSON.
///
/// # Errors
/// Writing to `out` failed.
pub fn write_line(out: &mut dyn Write, doc: &impl Serialize) -> io::Result<()> {
    serde_json::to_writer(&mut *out, doc).map_err(io::Error::from)?;
    writeln!(out)
}
