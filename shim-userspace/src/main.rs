//! The `mlx5vf` command-line tool; the logic lives in the `mlx5vf` library
//! (`mlx5vf::cli`).

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;
use mlx5vf::cli::{Cli, run};

fn main() -> ExitCode {
    // clap prints its own usage errors (exit 2) and --help/--version (exit 0).
    let cli = Cli::parse();
    let mut out = io::BufWriter::new(io::stdout().lock());
    match run(&cli.command, &mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !e.is_quiet() {
                // stdout was flushed by `run`; nothing useful can be done if
                // stderr is gone too.
                let _ = writeln!(io::stderr().lock(), "mlx5vf: {e}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}
