//! `mlx5vf states`, run as a process, against the next-state tables and path
//! examples of the VFIO uAPI fact sheet (§2.5, derived by running the Linux
//! algorithm with the 2026 fix).
// The tool and the simulated device (default features): built without
// them (a VMM's embedding) there is nothing here to test.
#![cfg(all(feature = "cli", feature = "sim"))]

mod common;

use common::run;

/// One flag set's table: the flags argument, the column states, then one row
/// per current state (`cur`, then a cell per column; `-` is the diagonal,
/// `EINVAL` an error). Transcribed from the fact sheet.
struct Table {
    flags: &'static str,
    columns: &'static [&'static str],
    rows: &'static [&'static [&'static str]],
}

const TABLES: &[Table] = &[
    Table {
        flags: "stop-copy",
        columns: &["STOP", "RUNNING", "STOP_COPY", "RESUMING"],
        rows: &[
            &["STOP", "-", "RUNNING", "STOP_COPY", "RESUMING"],
            &["RUNNING", "STOP", "-", "STOP", "STOP"],
            &["STOP_COPY", "STOP", "STOP", "-", "STOP"],
            &["RESUMING", "STOP", "STOP", "STOP", "-"],
        ],
    },
    Table {
        flags: "stop-copy,p2p",
        columns: &["STOP", "RUNNING", "STOP_COPY", "RESUMING", "RUNNING_P2P"],
        rows: &[
            &[
                "STOP",
                "-",
                "RUNNING_P2P",
                "STOP_COPY",
                "RESUMING",
                "RUNNING_P2P",
            ],
            &[
                "RUNNING",
                "RUNNING_P2P",
                "-",
                "RUNNING_P2P",
                "RUNNING_P2P",
                "RUNNING_P2P",
            ],
            &["STOP_COPY", "STOP", "STOP", "-", "STOP", "STOP"],
            &["RESUMING", "STOP", "STOP", "STOP", "-", "STOP"],
            &["RUNNING_P2P", "STOP", "RUNNING", "STOP", "STOP", "-"],
        ],
    },
    Table {
        flags: "stop-copy,pre-copy",
        columns: &["STOP", "RUNNING", "STOP_COPY", "RESUMING", "PRE_COPY"],
        rows: &[
            &["STOP", "-", "RUNNING", "STOP_COPY", "RESUMING", "RUNNING"],
            &["RUNNING", "STOP", "-", "STOP", "STOP", "PRE_COPY"],
            &["STOP_COPY", "STOP", "STOP", "-", "STOP", "EINVAL"],
            &["RESUMING", "STOP", "STOP", "STOP", "-", "STOP"],
            &[
                "PRE_COPY",
                "RUNNING",
                "RUNNING",
                "STOP_COPY",
                "RUNNING",
                "-",
            ],
        ],
    },
    Table {
        flags: "stop-copy,p2p,pre-copy",
        columns: &[
            "STOP",
            "RUNNING",
            "STOP_COPY",
            "RESUMING",
            "RUNNING_P2P",
            "PRE_COPY",
            "PRE_COPY_P2P",
        ],
        rows: &[
            &[
                "STOP",
                "-",
                "RUNNING_P2P",
                "STOP_COPY",
                "RESUMING",
                "RUNNING_P2P",
                "RUNNING_P2P",
                "RUNNING_P2P",
            ],
            &[
                "RUNNING",
                "RUNNING_P2P",
                "-",
                "RUNNING_P2P",
                "RUNNING_P2P",
                "RUNNING_P2P",
                "PRE_COPY",
                "RUNNING_P2P",
            ],
            &[
                "STOP_COPY",
                "STOP",
                "STOP",
                "-",
                "STOP",
                "STOP",
                "EINVAL",
                "EINVAL",
            ],
            &[
                "RESUMING", "STOP", "STOP", "STOP", "-", "STOP", "STOP", "STOP",
            ],
            &[
                "RUNNING_P2P",
                "STOP",
                "RUNNING",
                "STOP",
                "STOP",
                "-",
                "RUNNING",
                "PRE_COPY_P2P",
            ],
            &[
                "PRE_COPY",
                "RUNNING",
                "RUNNING",
                "PRE_COPY_P2P",
                "RUNNING",
                "RUNNING",
                "-",
                "PRE_COPY_P2P",
            ],
            &[
                "PRE_COPY_P2P",
                "RUNNING_P2P",
                "RUNNING_P2P",
                "STOP_COPY",
                "RUNNING_P2P",
                "RUNNING_P2P",
                "PRE_COPY",
                "-",
            ],
        ],
    },
];

/// `STOP_COPY` -> `stop-copy`.
fn cli_name(uapi: &str) -> String {
    uapi.to_ascii_lowercase().replace('_', "-")
}

#[test]
fn next_matches_every_cell_of_the_fact_sheet_tables() {
    for table in TABLES {
        for row in table.rows {
            let from = cli_name(row[0]);
            for (col, cell) in table.columns.iter().zip(&row[1..]) {
                let to = cli_name(col);
                let out = run(&["states", "next", &from, &to, "--flags", table.flags]);
                match *cell {
                    "-" => assert_eq!(out.ok(), format!("{from}\n")),
                    "EINVAL" => {
                        out.fails(
                            1,
                            &format!("mlx5vf: states: no transition from {} to {col}", row[0]),
                        );
                    }
                    next => assert_eq!(
                        out.ok(),
                        format!("{}\n", cli_name(next)),
                        "{from} -> {to} with {}",
                        table.flags
                    ),
                }
            }
        }
    }
}

#[test]
fn default_flags_are_all_three() {
    assert_eq!(
        run(&["states", "next", "running", "stop-copy"]).ok(),
        "running-p2p\n"
    );
    assert_eq!(
        run(&["states", "next", "running", "pre-copy"]).ok(),
        "pre-copy\n"
    );
    run(&["states", "next", "stop-copy", "pre-copy"]).fails(
        1,
        "mlx5vf: states: no transition from STOP_COPY to PRE_COPY",
    );
    run(&["states", "next", "stop-copy", "pre-copy-p2p"])
        .fails(1, "no transition from STOP_COPY to PRE_COPY_P2P");
}

#[test]
fn unsupported_and_error_states_exit_1() {
    run(&[
        "states",
        "next",
        "running",
        "running-p2p",
        "--flags",
        "stop-copy",
    ])
    .fails(1, "state RUNNING_P2P cannot be requested on this device");
    run(&[
        "states",
        "next",
        "pre-copy",
        "stop",
        "--flags",
        "stop-copy,p2p",
    ])
    .fails(1, "current state PRE_COPY is not usable");
    run(&["states", "next", "error", "stop"]).fails(1, "current state ERROR is not usable");
    run(&["states", "next", "stop", "error"]).fails(1, "state ERROR cannot be requested");
    run(&[
        "states",
        "path",
        "running",
        "pre-copy",
        "--flags",
        "stop-copy,p2p",
    ])
    .fails(1, "state PRE_COPY cannot be requested");
    // No flags at all: nothing is usable, as in Linux.
    run(&["states", "next", "stop", "running", "--flags", ""]).fails(1, "not usable");
}

#[test]
fn paths_from_the_fact_sheet() {
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "running",
            "stop-copy",
            "stop-copy,p2p,pre-copy",
            "running running-p2p stop stop-copy",
        ),
        (
            "pre-copy",
            "resuming",
            "stop-copy,p2p,pre-copy",
            "pre-copy running running-p2p stop resuming",
        ),
        (
            "pre-copy",
            "stop-copy",
            "stop-copy,p2p,pre-copy",
            "pre-copy pre-copy-p2p stop-copy",
        ),
        (
            "resuming",
            "pre-copy",
            "stop-copy,p2p,pre-copy",
            "resuming stop running-p2p running pre-copy",
        ),
        (
            "stop-copy",
            "running",
            "stop-copy,p2p,pre-copy",
            "stop-copy stop running-p2p running",
        ),
        // With 0x5, PRE_COPY -> STOP_COPY is direct and STOP -> PRE_COPY goes through RUNNING.
        (
            "pre-copy",
            "stop-copy",
            "stop-copy,pre-copy",
            "pre-copy stop-copy",
        ),
        (
            "stop",
            "pre-copy",
            "stop-copy,pre-copy",
            "stop running pre-copy",
        ),
        // With 0x1, every path goes through STOP.
        ("running", "resuming", "stop-copy", "running stop resuming"),
        ("stop", "stop", "stop-copy", "stop"),
    ];
    for (from, to, flags, want) in cases {
        let out = run(&["states", "path", from, to, "--flags", flags]);
        assert_eq!(out.ok(), format!("{want}\n"), "{from} -> {to} with {flags}");
    }
    assert_eq!(
        run(&["states", "path", "running", "stop-copy"]).ok(),
        "running running-p2p stop stop-copy\n"
    );
    run(&["states", "path", "stop-copy", "pre-copy"])
        .fails(1, "no transition from STOP_COPY to PRE_COPY");
}

#[test]
fn uapi_names_and_numeric_flags_are_accepted() {
    assert_eq!(
        run(&["states", "path", "RUNNING", "STOP_COPY", "--flags", "0x7"]).ok(),
        "running running-p2p stop stop-copy\n"
    );
    assert_eq!(
        run(&["states", "next", "running", "stop", "--flags", "STOP_COPY"]).ok(),
        "stop\n"
    );
}

#[test]
fn table_has_eight_rows_and_columns() {
    let out = run(&["states", "table", "--flags", "stop-copy,pre-copy"]);
    let text = out.ok();
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines.len(), 9);
    assert!(lines.iter().all(|l| l.len() == 9));
    // Row pre-copy, column stop-copy: direct with 0x5.
    assert_eq!(lines[7][0], "pre-copy");
    assert_eq!(lines[7][4], "stop-copy");
}

#[test]
fn bad_names_and_flags_exit_2() {
    run(&["states", "next", "runing", "stop"]).fails(2, "mlx5vf: states: unknown state \"runing\"");
    run(&["states", "path", "stop", "bogus"]).fails(2, "unknown state \"bogus\"");
    run(&[
        "states",
        "next",
        "stop",
        "running",
        "--flags",
        "stop-copy,p3p",
    ])
    .fails(2, "unknown migration flag \"p3p\"");
    run(&["states", "table", "--flags", "0x8"]).fails(2, "unknown migration flag \"0x8\"");
    // Missing arguments are clap's usage errors: exit 2 too.
    assert_eq!(run(&["states", "next", "stop"]).code, Some(2));
}
