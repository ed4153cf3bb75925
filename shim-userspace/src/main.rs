//! The `mlx5vf` command-line tool; the logic lives in the `mlx5vf` library
//! (`mlx5vf::cli`).

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;
use mlx5vf::cli::help::usage_error_line;
use mlx5vf::cli::{Cli, EXIT_USAGE, run};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version: clap prints them on stdout and exits 0.
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            e.exit()
        }
        // Every other parse error is a usage error: one line, exit 2.
        Err(e) => {
            let _ = writeln!(
                io::stderr().lock(),
                "mlx5vf: {}",
                usage_error_line(&e, &args)
            );
            return ExitCode::from(EXIT_USAGE);
        }
    };
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
