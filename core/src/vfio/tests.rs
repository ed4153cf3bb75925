//! The next-state table for all 8×8 pairs and the four defined flag sets,
//! against `shared/reference/vfio-uapi.md` §2.5 (derived by running the
//! Linux algorithm with the 2026 fix).

use std::vec::Vec;

use super::MigState::*;
use super::*;

const F1: u64 = 0x1;
const F3: u64 = 0x3;
const F5: u64 = 0x5;
const F7: u64 = 0x7;

fn flags(bits: u64) -> MigrationFlags {
    MigrationFlags::from_bits(bits)
}

/// Parses one table row: `-` for the diagonal, `x` for -EINVAL, else a state.
fn cell(s: &str) -> Option<MigState> {
    match s {
        "x" => None,
        "ST" => Some(Stop),
        "RU" => Some(Running),
        "SC" => Some(StopCopy),
        "RE" => Some(Resuming),
        "RP" => Some(RunningP2p),
        "PC" => Some(PreCopy),
        "PCP" => Some(PreCopyP2p),
        other => panic!("bad cell {other}"),
    }
}

/// (flag set, the supported states in column order, rows).
fn tables() -> Vec<(u64, Vec<MigState>, Vec<&'static str>)> {
    std::vec![
        (
            F1,
            std::vec![Stop, Running, StopCopy, Resuming],
            std::vec!["ST RU SC RE", "ST RU ST ST", "ST ST SC ST", "ST ST ST RE"],
        ),
        (
            F3,
            std::vec![Stop, Running, StopCopy, Resuming, RunningP2p],
            std::vec![
                "ST RP SC RE RP",
                "RP RU RP RP RP",
                "ST ST SC ST ST",
                "ST ST ST RE ST",
                "ST RU ST ST RP",
            ],
        ),
        (
            F5,
            std::vec![Stop, Running, StopCopy, Resuming, PreCopy],
            std::vec![
                "ST RU SC RE RU",
                "ST RU ST ST PC",
                "ST ST SC ST x",
                "ST ST ST RE ST",
                "RU RU SC RU PC",
            ],
        ),
        (
            F7,
            std::vec![
                Stop, Running, StopCopy, Resuming, RunningP2p, PreCopy, PreCopyP2p
            ],
            std::vec![
                "ST RP SC RE RP RP RP",
                "RP RU RP RP RP PC RP",
                "ST ST SC ST ST x x",
                "ST ST ST RE ST ST ST",
                "ST RU ST ST RP RU PCP",
                "RU RU PCP RU RU PC PCP",
                "RP RP SC RP RP PC PCP",
            ],
        ),
    ]
}

#[test]
fn all_pairs_all_flag_sets_match_the_reference() {
    let mut checked = 0;
    for (bits, supported, rows) in tables() {
        let f = flags(bits);
        for cur in MigState::ALL {
            for new in MigState::ALL {
                let got = next_state(cur, new, f);
                let ci = supported.iter().position(|&s| s == cur);
                let ni = supported.iter().position(|&s| s == new);
                match (ci, ni) {
                    (Some(ci), Some(ni)) => {
                        let want = cell(rows[ci].split(' ').nth(ni).unwrap());
                        match want {
                            Some(w) => assert_eq!(got, Ok(w), "flags {bits:#x} {cur}->{new}"),
                            None => assert_eq!(
                                got,
                                Err(TransitionError::NoPath { from: cur, to: new }),
                                "flags {bits:#x} {cur}->{new}"
                            ),
                        }
                    }
                    (None, _) => assert_eq!(got, Err(TransitionError::UnsupportedCurrent(cur))),
                    (Some(_), None) => {
                        assert_eq!(got, Err(TransitionError::UnsupportedTarget(new)))
                    }
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 4 * 64);
}

#[test]
fn same_state_is_same_state() {
    for s in MigState::ALL.into_iter().skip(1) {
        assert_eq!(next_state(s, s, MigrationFlags::ALL), Ok(s));
    }
}

#[test]
fn error_is_never_usable() {
    for s in MigState::ALL {
        assert!(next_state(Error, s, MigrationFlags::ALL).is_err());
        assert!(next_state(s, Error, MigrationFlags::ALL).is_err());
    }
}

#[test]
fn raw_values_and_names() {
    for (i, s) in MigState::ALL.into_iter().enumerate() {
        assert_eq!(s.raw(), i as u32);
        assert_eq!(MigState::from_raw(i as u32), Ok(s));
        assert_eq!(MigState::from_name(s.name()), Some(s));
        assert_eq!(MigState::from_name(s.uapi_name()), Some(s));
    }
    assert_eq!(MigState::from_raw(8), Err(UnknownState(8)));
    assert_eq!(MigState::from_name("stopcopy"), None);
    assert_eq!(flags(F7), MigrationFlags::ALL);
    assert_eq!(flags(F3), MigrationFlags::STOP_COPY_P2P);
}

fn path(from: MigState, to: MigState, bits: u64) -> Vec<MigState> {
    Path::new(from, to, flags(bits))
        .map(|a| a.unwrap().to)
        .collect()
}

#[test]
fn paths_match_the_kernel_comment() {
    assert_eq!(
        path(PreCopy, Resuming, F7),
        [Running, RunningP2p, Stop, Resuming]
    );
    assert_eq!(path(PreCopy, StopCopy, F7), [PreCopyP2p, StopCopy]);
    assert_eq!(
        path(Resuming, PreCopy, F7),
        [Stop, RunningP2p, Running, PreCopy]
    );
    assert_eq!(path(StopCopy, Running, F7), [Stop, RunningP2p, Running]);
    assert_eq!(path(Running, StopCopy, F7), [RunningP2p, Stop, StopCopy]);
    assert_eq!(path(PreCopy, StopCopy, F5), [StopCopy]);
    assert_eq!(path(Stop, PreCopy, F5), [Running, PreCopy]);
    assert_eq!(path(Running, StopCopy, F1), [Stop, StopCopy]);
    assert!(path(Running, Running, F7).is_empty());
}

#[test]
fn invalid_paths_end_with_one_error() {
    let items: Vec<_> = Path::new(StopCopy, PreCopy, flags(F7)).collect();
    assert_eq!(
        items,
        [Err(TransitionError::NoPath {
            from: StopCopy,
            to: PreCopy
        })]
    );
    let items: Vec<_> = Path::new(Running, PreCopy, flags(F3)).collect();
    assert_eq!(items, [Err(TransitionError::UnsupportedTarget(PreCopy))]);
}

#[test]
fn every_arc_any_path_takes_has_a_meaning() {
    for bits in [F1, F3, F5, F7] {
        for from in MigState::ALL {
            for to in MigState::ALL {
                for arc in Path::new(from, to, flags(bits)).flatten() {
                    let info = arc_info(arc.from, arc.to)
                        .unwrap_or_else(|| panic!("flags {bits:#x}: no meaning for {arc}"));
                    assert!(!info.steps.is_empty());
                    // A new fd is only ever returned by the last arc of a request
                    // whose target opens a session.
                    if info.opens.is_some() {
                        assert_eq!(arc.to, to, "{arc} opens a file mid-path");
                    }
                }
            }
        }
    }
}

#[test]
fn arc_semantics_follow_the_driver() {
    use crate::ifc::vhca::VhcaSide::*;
    let i = |a, b| arc_info(a, b).unwrap();
    assert_eq!(i(Running, RunningP2p).steps, [Step::Suspend(Initiator)]);
    assert_eq!(i(PreCopy, PreCopyP2p).steps, [Step::Suspend(Initiator)]);
    assert_eq!(i(RunningP2p, Stop).steps, [Step::Suspend(Responder)]);
    assert_eq!(i(Stop, RunningP2p).steps, [Step::Resume(Responder)]);
    assert_eq!(i(RunningP2p, Running).steps, [Step::Resume(Initiator)]);
    assert_eq!(i(PreCopyP2p, PreCopy).steps, [Step::Resume(Initiator)]);
    assert_eq!(i(Stop, StopCopy).opens, Some(Session::Saving));
    assert_eq!(
        i(Running, PreCopy).steps,
        [Step::OpenSaving(SaveMode::PreCopy)]
    );
    assert_eq!(i(RunningP2p, PreCopyP2p).opens, Some(Session::Saving));
    assert_eq!(
        i(PreCopyP2p, StopCopy).steps,
        [Step::Suspend(Responder), Step::FinalSave]
    );
    assert_eq!(i(PreCopyP2p, StopCopy).opens, None);
    assert_eq!(i(PreCopy, Running).ends, Some(Session::Saving));
    assert_eq!(i(PreCopyP2p, RunningP2p).steps, [Step::PreCopyCleanup]);
    assert_eq!(i(StopCopy, Stop).ends, Some(Session::Saving));
    assert_eq!(i(Stop, Resuming).opens, Some(Session::Resuming));
    assert_eq!(i(Resuming, Stop).ends, Some(Session::Resuming));
    assert_eq!(arc_info(StopCopy, PreCopy), None);
    assert_eq!(arc_info(Stop, Stop), None);
}
