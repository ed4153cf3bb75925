//! `mlx5vf states`: the VFIO migration state graph from the command line.
//!
//! Answers come from [`mlx5vf_core::vfio::next_state`] and
//! [`mlx5vf_core::vfio::Path`], which answer what Linux's
//! `vfio_mig_get_next_state()` answers (with the 2026 fix: STOP_COPY →
//! PRE_COPY is an error, not a soft lockup).

use std::fmt;
use std::io::{self, Write};

use clap::{Args, Subcommand};
use mlx5vf_core::vfio::{MigState, MigrationFlags, Path, TransitionError, next_state};

use serde::Serialize;

use super::json::{self, Document};
use super::{EXIT_FAILURE, EXIT_USAGE, Error, parse_u64};

/// The long help of `mlx5vf states`.
pub const LONG_ABOUT: &str = "Walk the VFIO migration state graph as the Linux VFIO core does \
     (vfio_mig_get_next_state, with the fix that makes stop-copy -> pre-copy an error).\n\n\
     States: error, stop, running, stop-copy, resuming, running-p2p, pre-copy, pre-copy-p2p \
     (the uAPI names such as STOP_COPY work too). --flags gives the device's migration flags \
     (default: stop-copy,p2p,pre-copy). Exit status: 0, 1 when there is no such transition, \
     2 for an unknown state or flag.";

/// The state names, for help texts and errors.
const STATE_NAMES: &str =
    "error, stop, running, stop-copy, resuming, running-p2p, pre-copy, pre-copy-p2p";

const FLAGS_HELP: &str = "Device migration flags: a comma list of stop-copy, p2p, pre-copy \
     (VFIO_MIGRATION_*; `_` may replace `-`, any case), or the flags word as a number \
     (0x7). An empty list is no flags (every state is then unusable, as in Linux). \
     Default: all three (0x7), what an mlx5 VF with PRE_COPY offers.";

/// `--flags`, shared by the `states` subcommands.
#[derive(Debug, Args)]
pub struct FlagsArg {
    #[arg(
        long,
        value_name = "LIST",
        default_value = "stop-copy,p2p,pre-copy",
        long_help = FLAGS_HELP,
        help = "Device migration flags: comma list of stop-copy,p2p,pre-copy [default: all]",
        hide_default_value = true
    )]
    /// The flags list as given.
    pub flags: String,
}

/// `mlx5vf states` subcommands. States are named error, stop, running,
/// stop-copy, resuming, running-p2p, pre-copy, pre-copy-p2p (the uAPI names
/// such as STOP_COPY work too).
#[derive(Debug, Subcommand)]
pub enum StatesCommand {
    /// Print the next state on the way from FROM to TO (exit 1 if there is none).
    #[command(
        long_about = "Print the state the Linux VFIO core steps to next when a device in \
                      state FROM is asked for state TO (vfio_mig_get_next_state). FROM == TO \
                      prints FROM. An invalid request (an unsupported state, or no path such \
                      as stop-copy -> pre-copy) prints an error and exits 1.\n\n\
                      States: error, stop, running, stop-copy, resuming, running-p2p, \
                      pre-copy, pre-copy-p2p (uAPI names such as STOP_COPY work too).",
        after_help = "Example:\n  mlx5vf states next running stop-copy --flags stop-copy,p2p\n  running-p2p"
    )]
    Next {
        /// Current state.
        from: String,
        /// Requested state.
        to: String,
        #[command(flatten)]
        /// Device flags.
        flags: FlagsArg,
        /// Print one JSON document instead.
        #[arg(long)]
        json: bool,
    },
    /// Print every state from FROM to TO, space separated (exit 1 if there is no path).
    #[command(
        long_about = "Print the whole path the Linux VFIO core walks from FROM to TO, space \
                      separated, starting with FROM (FROM == TO prints just FROM). An invalid \
                      request prints an error and exits 1.\n\n\
                      States: error, stop, running, stop-copy, resuming, running-p2p, \
                      pre-copy, pre-copy-p2p (uAPI names such as STOP_COPY work too).",
        after_help = "Example:\n  mlx5vf states path running stop-copy\n  running running-p2p stop stop-copy"
    )]
    Path {
        /// Current state.
        from: String,
        /// Requested state.
        to: String,
        #[command(flatten)]
        /// Device flags.
        flags: FlagsArg,
        /// Print one JSON document instead.
        #[arg(long)]
        json: bool,
    },
    /// Print the 8x8 next-state table (rows: current state, columns: requested).
    #[command(
        long_about = "Print the next-state table for a device with the given flags: one row \
                      per current state, one column per requested state, each cell what \
                      `mlx5vf states next ROW COLUMN` prints, or `-` where that is an error."
    )]
    Table {
        #[command(flatten)]
        /// Device flags.
        flags: FlagsArg,
        /// Print one JSON document instead.
        #[arg(long)]
        json: bool,
    },
}

impl StatesCommand {
    /// Whether `--json` was given.
    pub fn json(&self) -> bool {
        match self {
            Self::Next { json, .. } | Self::Path { json, .. } | Self::Table { json, .. } => *json,
        }
    }

    /// Its name in a JSON document.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Next { .. } => "states next",
            Self::Path { .. } => "states path",
            Self::Table { .. } => "states table",
        }
    }
}

/// The fields of a `states next` document (`flags`: the
/// `VFIO_MIGRATION_*` word).
#[derive(Serialize)]
struct NextJson {
    from: &'static str,
    to: &'static str,
    flags: u64,
    next: &'static str,
}

/// The fields of a `states path` document.
#[derive(Serialize)]
struct PathJson {
    from: &'static str,
    to: &'static str,
    flags: u64,
    path: Vec<&'static str>,
}

/// The fields of a `states table` document: `next[row][column]` is what
/// `states next STATES[row] STATES[column]` prints, `null` for an error.
#[derive(Serialize)]
struct TableJson {
    flags: u64,
    states: Vec<&'static str>,
    next: Vec<Vec<Option<&'static str>>>,
}

/// Runs a `states` subcommand.
///
/// # Errors
/// [`StatesError`] (as [`Error::States`]) or a failed write.
pub fn run(cmd: &StatesCommand, out: &mut dyn Write) -> Result<(), Error> {
    let name = cmd.name();
    match cmd {
        StatesCommand::Next {
            from,
            to,
            flags,
            json,
        } => {
            let (from, to, flags) = (
                parse_state(from)?,
                parse_state(to)?,
                parse_flags(&flags.flags)?,
            );
            let next = next_state(from, to, flags).map_err(StatesError::Transition)?;
            if *json {
                let body = NextJson {
                    from: from.name(),
                    to: to.name(),
                    flags: flags.into_bits(),
                    next: next.name(),
                };
                json::write_line(out, &Document::new(name, body))
            } else {
                writeln!(out, "{}", next.name())
            }
            .map_err(Error::Output)
        }
        StatesCommand::Path {
            from,
            to,
            flags,
            json,
        } => {
            let (from, to, flags) = (
                parse_state(from)?,
                parse_state(to)?,
                parse_flags(&flags.flags)?,
            );
            let names: Vec<&str> = path(from, to, flags)?.iter().map(|s| s.name()).collect();
            if *json {
                let body = PathJson {
                    from: from.name(),
                    to: to.name(),
                    flags: flags.into_bits(),
                    path: names,
                };
                json::write_line(out, &Document::new(name, body))
            } else {
                writeln!(out, "{}", names.join(" "))
            }
            .map_err(Error::Output)
        }
        StatesCommand::Table { flags, json } => {
            let flags = parse_flags(&flags.flags)?;
            if *json {
                let body = TableJson {
                    flags: flags.into_bits(),
                    states: MigState::ALL.iter().map(|s| s.name()).collect(),
                    next: MigState::ALL
                        .iter()
                        .map(|&from| {
                            MigState::ALL
                                .iter()
                                .map(|&to| next_state(from, to, flags).ok().map(MigState::name))
                                .collect()
                        })
                        .collect(),
                };
                json::write_line(out, &Document::new(name, body))
            } else {
                table(flags, out)
            }
            .map_err(Error::Output)
        }
    }
}

/// Why a `states` request failed.
#[derive(Debug)]
pub enum StatesError {
    /// Not a state name.
    UnknownState(String),
    /// Not a flag name (or the flags word has unknown bits).
    UnknownFlag(String),
    /// The graph has no such transition.
    Transition(TransitionError),
}

impl StatesError {
    /// [`EXIT_USAGE`] for bad names, [`EXIT_FAILURE`] for a refused transition.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::UnknownState(_) | Self::UnknownFlag(_) => EXIT_USAGE,
            Self::Transition(_) => EXIT_FAILURE,
        }
    }
}

impl fmt::Display for StatesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownState(s) => {
                write!(f, "unknown state {s:?} (expected one of: {STATE_NAMES})")
            }
            Self::UnknownFlag(s) => write!(
                f,
                "unknown migration flag {s:?} (expected a comma list of stop-copy, p2p, pre-copy)"
            ),
            Self::Transition(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StatesError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Transition(e) => Some(e),
            _ => None,
        }
    }
}

/// Parses a state name ([`MigState::from_name`]).
///
/// # Errors
/// [`StatesError::UnknownState`].
pub fn parse_state(name: &str) -> Result<MigState, StatesError> {
    MigState::from_name(name).ok_or_else(|| StatesError::UnknownState(name.to_owned()))
}

/// Parses a `--flags` list (see the option's help).
///
/// # Errors
/// [`StatesError::UnknownFlag`].
pub fn parse_flags(list: &str) -> Result<MigrationFlags, StatesError> {
    let known = MigrationFlags::ALL.into_bits();
    if let Some(word) = parse_u64(list.trim()) {
        return if word & !known == 0 {
            Ok(MigrationFlags::from_bits(word))
        } else {
            Err(StatesError::UnknownFlag(list.to_owned()))
        };
    }
    let mut flags = MigrationFlags::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let norm = item.to_ascii_lowercase().replace('_', "-");
        flags = match norm.as_str() {
            "stop-copy" => flags.with_stop_copy(true),
            "p2p" => flags.with_p2p(true),
            "pre-copy" => flags.with_pre_copy(true),
            _ => return Err(StatesError::UnknownFlag(item.to_owned())),
        };
    }
    Ok(flags)
}

/// The states from `from` to `to`, both included; `[from]` when they are
/// equal and `from` is usable.
///
/// # Errors
/// [`StatesError::Transition`] as [`next_state`] reports it.
pub fn path(
    from: MigState,
    to: MigState,
    flags: MigrationFlags,
) -> Result<Vec<MigState>, StatesError> {
    if from == to {
        // Linux never asks for this step (drivers loop while cur != new), but
        // the request is still checked: an unusable state has no path.
        next_state(from, to, flags).map_err(StatesError::Transition)?;
        return Ok(vec![from]);
    }
    let mut states = vec![from];
    for arc in Path::new(from, to, flags) {
        states.push(arc.map_err(StatesError::Transition)?.to);
    }
    Ok(states)
}

fn table(flags: MigrationFlags, out: &mut dyn Write) -> io::Result<()> {
    let width = MigState::ALL
        .iter()
        .map(|s| s.name().len())
        .max()
        .unwrap_or(0);
    let row = |first: &str, cells: &mut dyn Iterator<Item = &str>| {
        let mut line = format!("{first:<width$}");
        for cell in cells {
            line.push(' ');
            line.push_str(&format!("{cell:<width$}"));
        }
        line.trim_end().to_owned()
    };
    let header = row("from\\to", &mut MigState::ALL.iter().map(|s| s.name()));
    writeln!(out, "{header}")?;
    for from in MigState::ALL {
        let mut cells = MigState::ALL
            .iter()
            .map(|&to| next_state(from, to, flags).map_or("-", MigState::name));
        writeln!(out, "{}", row(from.name(), &mut cells))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use MigState::*;

    #[test]
    fn flags() {
        assert_eq!(
            parse_flags("stop-copy,p2p,pre-copy").unwrap(),
            MigrationFlags::ALL
        );
        assert_eq!(
            parse_flags("STOP_COPY, P2P").unwrap(),
            MigrationFlags::STOP_COPY_P2P
        );
        assert_eq!(parse_flags("0x3").unwrap(), MigrationFlags::STOP_COPY_P2P);
        assert_eq!(parse_flags("7").unwrap(), MigrationFlags::ALL);
        assert_eq!(parse_flags("").unwrap(), MigrationFlags::new());
        assert!(parse_flags("0x8").is_err());
        assert!(parse_flags("stop-copy,bogus").is_err());
    }

    #[test]
    fn paths_from_the_fact_sheet() {
        let all = MigrationFlags::ALL;
        assert_eq!(
            path(PreCopy, Resuming, all).unwrap(),
            [PreCopy, Running, RunningP2p, Stop, Resuming]
        );
        assert_eq!(
            path(Running, StopCopy, all).unwrap(),
            [Running, RunningP2p, Stop, StopCopy]
        );
        assert_eq!(path(Stop, Stop, all).unwrap(), [Stop]);
        assert!(path(StopCopy, PreCopy, all).is_err());
        assert!(path(Error, Error, all).is_err());
        let no_p2p = parse_flags("stop-copy,pre-copy").unwrap();
        assert_eq!(
            path(Stop, PreCopy, no_p2p).unwrap(),
            [Stop, Running, PreCopy]
        );
    }

    #[test]
    fn table_shape() {
        let mut out = Vec::new();
        table(MigrationFlags::ALL, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 9);
        let stop_copy_row = text.lines().nth(4).unwrap();
        let cells: Vec<&str> = stop_copy_row.split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "stop-copy",
                "-",
                "stop",
                "stop",
                "stop-copy",
                "stop",
                "stop",
                "-",
                "-"
            ]
        );
    }
}
