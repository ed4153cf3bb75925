//! Fault injection: every command of a migration fails in turn, with each
//! relevant status. Each time the failure surfaces as a specific error, the
//! devices end in a state VFIO allows, and nothing leaks (sim accounting and
//! the test Hal's own count), except what firmware itself refused to free,
//! which the device must report.
mod common;

use common::*;
use mlx5vf_core::device::{Config, Device, DeviceError};
use mlx5vf_core::hal::HalErrorKind;
use mlx5vf_core::ifc::{CmdStatus, Opcode};
use mlx5vf_core::vfio::MigState;
use mlx5vf_sim::wire::{opcode, status};

const SRC: &str = "sim:state=20M,object=1M-3M,seed=4,dirty=1M";
const DST: &str = "sim:state=2M,seed=40";

/// A migration that stops at the first error instead of panicking.
fn try_migrate(
    src: &mut Device<TestHal>,
    dst: &mut Device<TestHal>,
    precopy: bool,
) -> Result<(), DeviceError> {
    let df = set_state(dst, MigState::Resuming)?.ok_or(DeviceError::NoFile)?;
    let target = if precopy {
        MigState::PreCopy
    } else {
        MigState::StopCopy
    };
    let sf = set_state(src, target)?.ok_or(DeviceError::NoFile)?;
    let mut buf = vec![];
    let mut rounds = 0;
    loop {
        buf.clear();
        match read(src, sf, 3 << 20, &mut buf) {
            Ok(0) => break,
            Ok(_) => write(dst, df, &buf)?,
            Err(DeviceError::WouldBlock) => {
                if !complete_one(src) {
                    return Err(DeviceError::WouldBlock);
                }
            }
            Err(DeviceError::NoMessage) if rounds < 3 => {
                rounds += 1;
                loop {
                    match src.precopy_info(sf) {
                        Err(DeviceError::SaveInFlight) => {
                            complete_one(src);
                        }
                        r => {
                            r?;
                            break;
                        }
                    }
                }
            }
            Err(DeviceError::NoMessage) => {
                set_state(src, MigState::StopCopy)?;
            }
            Err(e) => return Err(e),
        }
    }
    set_state(src, MigState::Stop)?;
    set_state(dst, MigState::Stop)?;
    set_state(dst, MigState::Running)?;
    Ok(())
}

fn fresh() -> (Device<TestHal>, Device<TestHal>) {
    (
        device(SRC, Config::default()),
        device(DST, Config::default()),
    )
}

fn counts(d: &Device<TestHal>) -> Vec<(u16, u64)> {
    opcode::ALL
        .iter()
        .map(|&op| (op, d.hal().fw.command_count(op)))
        .collect()
}

/// Brings a device back to RUNNING with nothing allocated.
fn recover(d: &mut Device<TestHal>) {
    d.hal_mut().fw.faults_mut().clear();
    d.close();
    while complete_one(d) {}
    d.hal_mut().fw.reset_vf(0);
    d.handle_reset();
    assert!(d.is_idle(), "{d:?}");
    assert_eq!(d.state(), MigState::Running);
}

fn check_clean(d: &Device<TestHal>, op: u16, what: &str) {
    let acc = d.hal().accounting();
    let s = d.stats();
    assert_eq!(d.hal().live_buffers, 0, "{what}: buffers");
    assert_eq!(d.stats().buffer_bytes, 0, "{what}");
    match op {
        // Firmware refused to free: the device says so, the sim still holds it.
        opcode::DESTROY_MKEY => {
            assert_eq!(s.leaked_mkeys, acc.mkeys, "{what}: {acc:?} {s:?}");
            // The PD that key still uses cannot be freed either.
            assert_eq!(s.leaked_pds, acc.pds, "{what}: {acc:?} {s:?}");
        }
        opcode::DEALLOC_PD => {
            assert_eq!(acc.mkeys, 0, "{what}");
            assert_eq!(s.leaked_pds, acc.pds, "{what}: {acc:?} {s:?}");
        }
        _ => {
            assert!(acc.is_zero(), "{what}: {acc:?}");
            assert_eq!(s.leaked_mkeys + s.leaked_pds, 0, "{what}: {s:?}");
        }
    }
}

fn statuses_for(op: u16) -> &'static [u8] {
    match op {
        opcode::SAVE_VHCA_STATE => &[
            status::INT_ERR,
            status::BAD_RES_STATE_ERR,
            status::BAD_PARAM_ERR,
        ],
        opcode::ALLOC_PD | opcode::CREATE_MKEY => &[status::LIM_ERR, status::BAD_PARAM_ERR],
        _ => &[status::INT_ERR, status::BAD_RES_STATE_ERR],
    }
}

fn every_command_fails_in_turn(precopy: bool) {
    // A reference run to count commands on each side.
    let (mut s, mut d) = fresh();
    try_migrate(&mut s, &mut d, precopy).expect("reference migration");
    let (src_counts, dst_counts) = (counts(&s), counts(&d));
    let mut runs = 0;
    for (side, table) in [("source", &src_counts), ("destination", &dst_counts)] {
        for &(op, count) in table.iter().filter(|(op, _)| *op != opcode::QUERY_HCA_CAP) {
            for nth in 1..=count {
                for &st in statuses_for(op) {
                    let what = format!(
                        "{side} {:?} #{nth} status {st:#x} precopy={precopy}",
                        Opcode::from(op)
                    );
                    let (mut src, mut dst) = fresh();
                    let victim = if side == "source" { &mut src } else { &mut dst };
                    victim
                        .hal_mut()
                        .fw
                        .faults_mut()
                        .fail_nth(op, nth as u32, st, 0x5eed)
                        .unwrap();
                    let result = try_migrate(&mut src, &mut dst, precopy);
                    match result {
                        Ok(()) => {
                            // Only failures the driver absorbs may succeed: a PRE_COPY
                            // SAVE refused with BAD_RES_STATE (recovered by a full final
                            // image), and frees firmware refused (reported as leaks).
                            let absorbed = (op == opcode::SAVE_VHCA_STATE
                                && st == status::BAD_RES_STATE_ERR
                                && precopy)
                                || op == opcode::DESTROY_MKEY
                                || op == opcode::DEALLOC_PD;
                            assert!(absorbed, "{what}: migration succeeded");
                            if op == opcode::SAVE_VHCA_STATE {
                                assert_eq!(
                                    src.hal().fw.digest(0),
                                    dst.hal().fw.digest(0),
                                    "{what}"
                                );
                            }
                        }
                        Err(e) => {
                            // The failure names the command and status, or (for the
                            // asynchronous SAVE) shows as the file's ENODEV.
                            let specific = match e {
                                DeviceError::Firmware(c) => {
                                    c.opcode == Opcode::from(op) && c.status == CmdStatus::from(st)
                                }
                                DeviceError::FileFailed => op == opcode::SAVE_VHCA_STATE,
                                DeviceError::Platform(_) => op == opcode::CREATE_MKEY,
                                DeviceError::SaveFileFailed => op == opcode::SAVE_VHCA_STATE,
                                _ => false,
                            };
                            assert!(specific, "{what}: unexpected error {e:?}");
                        }
                    }
                    // The devices are in states VFIO allows.
                    for dev in [&src, &dst] {
                        assert_ne!(dev.state(), MigState::Error, "{what}");
                    }
                    recover(&mut src);
                    recover(&mut dst);
                    check_clean(&src, if side == "source" { op } else { 0 }, &what);
                    check_clean(&dst, if side == "destination" { op } else { 0 }, &what);
                    runs += 1;
                }
            }
        }
    }
    assert!(runs > 50, "{runs}");
}

#[test]
fn every_command_fails_in_turn_stop_copy() {
    every_command_fails_in_turn(false);
}

#[test]
fn every_command_fails_in_turn_precopy() {
    every_command_fails_in_turn(true);
}

#[test]
fn allocation_failures_in_turn() {
    let (mut s, mut d) = fresh();
    try_migrate(&mut s, &mut d, true).unwrap();
    let (sa, da) = (s.hal().live_buffers, d.hal().live_buffers);
    assert_eq!((sa, da), (0, 0));
    for side in 0..2 {
        for nth in 0..12 {
            let (mut src, mut dst) = fresh();
            let victim = if side == 0 { &mut src } else { &mut dst };
            victim.hal_mut().knobs.fail_alloc =
                Some(FailAfter::new(nth, HalErrorKind::OutOfMemory));
            match try_migrate(&mut src, &mut dst, true) {
                Ok(()) => {}
                Err(e) => assert!(
                    matches!(
                        e.errno(),
                        mlx5vf_core::errno::Errno::ENOMEM | mlx5vf_core::errno::Errno::ENODEV
                    ),
                    "side {side} alloc {nth}: {e}"
                ),
            }
            recover(&mut src);
            recover(&mut dst);
            check_clean(&src, 0, "alloc");
            check_clean(&dst, 0, "alloc");
        }
    }
}
