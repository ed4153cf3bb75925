//! Device behaviour over the simulated firmware: every arc, PRE_COPY info,
//! the follow-up fixes of the Linux driver, reset, detach, closing mid-stream.
mod common;

use common::*;
use mlx5vf_core::device::{Config, DeviceError, FileId};
use mlx5vf_core::errno::Errno;
use mlx5vf_core::hal::HalErrorKind;
use mlx5vf_core::ifc::CmdStatus;
use mlx5vf_core::save::{FileState, PrecopyPolicy};
use mlx5vf_core::stream::Verdict;
use mlx5vf_core::vfio::{MigState::*, MigrationFlags};
use mlx5vf_sim::wire::{opcode, status};

const MIB: u64 = 1 << 20;
const SMALL: &str = "sim:state=20M,object=1M-2M,seed=5";

fn dev(spec: &str) -> mlx5vf_core::device::Device<TestHal> {
    device(spec, Config::default())
}

fn assert_clean(d: &mut mlx5vf_core::device::Device<TestHal>) {
    d.close();
    while complete_one(d) {}
    assert!(d.is_idle(), "{d:?}");
    assert_eq!(d.hal().live_buffers, 0);
    assert!(d.hal().accounting().is_zero(), "{:?}", d.hal().accounting());
    assert_eq!(d.stats().leaked_mkeys + d.stats().leaked_pds, 0);
}

fn drain(d: &mut mlx5vf_core::device::Device<TestHal>, f: FileId) -> Result<Vec<u8>, DeviceError> {
    let mut out = vec![];
    loop {
        match read(d, f, 1 << 20, &mut out) {
            Ok(0) => return Ok(out),
            Ok(_) => {}
            Err(DeviceError::WouldBlock) => assert!(complete_one(d)),
            Err(e) => return Err(e),
        }
    }
}

#[test]
fn probe_reports_capabilities() {
    let d = dev(SMALL);
    let p = *d.probed().unwrap();
    assert_eq!(p.flags, MigrationFlags::ALL);
    assert!(p.chunk_mode);
    assert_eq!(Some(p.vhca_id), d.hal().fw.vhca_id(0));
    let d = dev("sim:state=20M,precopy=off,chunks=off");
    assert_eq!(d.probed().unwrap().flags, MigrationFlags::STOP_COPY_P2P);
    assert!(!d.probed().unwrap().chunk_mode);
    let mut d =
        mlx5vf_core::device::Device::new(TestHal::new("sim:migratable=off"), Config::default());
    let mut scratch = vec![0; mlx5vf_core::device::PROBE_SCRATCH_LEN];
    let e = d.probe(0, &mut scratch).unwrap_err();
    assert_eq!(e, DeviceError::NotMigratable("the VF is not migratable"));
    assert_eq!(e.errno(), Errno::EOPNOTSUPP);
    assert_eq!(d.set_state(Stop).unwrap_err().error, DeviceError::NotProbed);
}

/// Every (from, to) pair the graph allows, from a fresh device each time.
#[test]
fn every_arc_the_graph_allows() {
    let states = [
        Stop, Running, StopCopy, Resuming, RunningP2p, PreCopy, PreCopyP2p,
    ];
    for from in states {
        for to in states {
            let mut d = dev(SMALL);
            // Reach `from` (from RUNNING every state is reachable).
            let f1 = set_state(&mut d, from).unwrap_or_else(|e| panic!("reach {from}: {e}"));
            assert_eq!(d.state(), from);
            let r = set_state(&mut d, to);
            let expect_err = from == StopCopy && matches!(to, PreCopy | PreCopyP2p);
            match r {
                Ok(f2) => {
                    assert!(!expect_err);
                    assert_eq!(d.state(), to);
                    // A new fd exactly when the last arc opens a session.
                    let opens = mlx5vf_core::vfio::Path::new(from, to, MigrationFlags::ALL)
                        .last()
                        .and_then(|a| mlx5vf_core::vfio::arc_info(a.unwrap().from, to))
                        .and_then(|i| i.opens);
                    assert_eq!(f2.is_some(), opens.is_some(), "{from}->{to}");
                }
                Err(e) => {
                    assert!(expect_err, "{from}->{to}: {e}");
                    assert_eq!(e.errno(), Errno::EINVAL);
                    assert_eq!(d.state(), from);
                }
            }
            let _ = f1;
            // Back to RUNNING and nothing leaked.
            set_state(&mut d, Running).unwrap_or_else(|e| panic!("{from}->{to}->RUNNING: {e}"));
            assert_clean(&mut d);
        }
    }
}

#[test]
fn same_state_is_a_no_op() {
    let mut d = dev(SMALL);
    assert_eq!(set_state(&mut d, Running), Ok(None));
    assert_eq!(d.hal().fw.command_count(opcode::SUSPEND_VHCA), 0);
}

#[test]
fn end_of_stream_is_sticky_and_reads_after_close_are_enodev() {
    let mut d = dev(SMALL);
    let f = set_state(&mut d, StopCopy).unwrap().unwrap();
    let s = drain(&mut d, f).unwrap();
    assert!(s.len() as u64 > 20 * MIB);
    let mut out = vec![];
    // EOF every time.
    assert_eq!(read(&mut d, f, 100, &mut out), Ok(0));
    assert_eq!(read(&mut d, f, 100, &mut out), Ok(0));
    assert!(d.poll(f).readable);
    set_state(&mut d, Stop).unwrap();
    // The file was disabled: a reader (blocked or new) gets ENODEV.
    let e = d.read_begin(f, 1).unwrap_err();
    assert_eq!(e, DeviceError::NoFile);
    assert_eq!(e.errno(), Errno::ENODEV);
    assert!(d.poll(f).hangup);
    assert_clean(&mut d);
}

#[test]
fn reader_waits_for_the_save_in_flight() {
    let mut d = dev(SMALL);
    let f = set_state(&mut d, StopCopy).unwrap().unwrap();
    let mut out = vec![];
    // Our records and STOP_COPY_SIZE are there at once.
    assert!(read(&mut d, f, 1 << 20, &mut out).unwrap() > 0);
    // The first chunk is still being saved: block (EAGAIN if non-blocking).
    let e = d.read_begin(f, 1).unwrap_err();
    assert_eq!(e, DeviceError::WouldBlock);
    assert_eq!(e.errno(), Errno::EAGAIN);
    assert!(!d.poll(f).readable);
    // The completion wakes it and the next chunk's SAVE starts right away
    // (no work item needed on success).
    assert!(complete_one(&mut d));
    assert!(d.poll(f).readable);
    assert_eq!(
        d.hal().pending.len(),
        1,
        "next chunk started by the completion"
    );
    assert!(read(&mut d, f, 1 << 20, &mut out).unwrap() > 0);
    drain(&mut d, f).unwrap();
    set_state(&mut d, Stop).unwrap();
    assert_clean(&mut d);
}

fn precopy_file(spec: &str) -> (mlx5vf_core::device::Device<TestHal>, FileId) {
    let mut d = dev(spec);
    let f = set_state(&mut d, PreCopy).unwrap().unwrap();
    (d, f)
}

/// The Linux driver's PRE_COPY accounting (one chunk per precopy-info).
fn linux_precopy() -> Config {
    Config {
        precopy_policy: PrecopyPolicy::Linux,
        ..Config::default()
    }
}

const POLICIES: [PrecopyPolicy; 2] = [PrecopyPolicy::Linux, PrecopyPolicy::Chunked];

fn info(d: &mut mlx5vf_core::device::Device<TestHal>, f: FileId) -> mlx5vf_core::save::PrecopyInfo {
    loop {
        match d.precopy_info(f) {
            Err(DeviceError::SaveInFlight) => assert!(complete_one(d)),
            r => return r.unwrap(),
        }
    }
}

#[test]
fn precopy_info_semantics_under_the_linux_policy() {
    let mut d = device("sim:state=40M,object=1M-2M,dirty=3M", linux_precopy());
    let f = set_state(&mut d, PreCopy).unwrap().unwrap();
    complete_one(&mut d);
    let i = info(&mut d, f);
    // Initial bytes: our info record + STOP_COPY_SIZE + FW_DATA header + image.
    assert!(i.initial_bytes > 7 * MIB, "{i:?}");
    assert_eq!(i.dirty_bytes, 0);
    // Read 1000 bytes: initial shrinks by exactly that.
    let mut out = vec![];
    read(&mut d, f, 1000, &mut out).unwrap();
    assert_eq!(info(&mut d, f).initial_bytes, i.initial_bytes - 1000);
    // Drain what is queued; then ENOMSG (temporary end).
    loop {
        match read(&mut d, f, 4 << 20, &mut out) {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e, DeviceError::NoMessage);
                assert_eq!(e.errno(), Errno::ENOMSG);
                break;
            }
        }
    }
    // Firmware has more (the rest of the initial image and dirtied objects):
    // dirty = unread (0) + incremental, and a SAVE starts so the next read finds it.
    let queries = d.hal().fw.command_count(opcode::QUERY_VHCA_MIGRATION_STATE);
    let i = info(&mut d, f);
    assert_eq!(i.initial_bytes, 0);
    assert!(i.dirty_bytes > 0);
    assert_eq!(
        d.hal().fw.command_count(opcode::QUERY_VHCA_MIGRATION_STATE),
        queries + 1
    );
    assert_eq!(d.hal().pending.len(), 1);
    // While that SAVE is in flight a blocking reader waits instead of ENOMSG.
    assert_eq!(d.read_begin(f, 1).unwrap_err(), DeviceError::WouldBlock);
    // And another precopy info must wait for it (no incremental query overlaps a SAVE).
    assert_eq!(d.precopy_info(f).unwrap_err(), DeviceError::SaveInFlight);
    complete_one(&mut d);
    // Now unread bytes count as dirty.
    let i2 = info(&mut d, f);
    assert!(i2.dirty_bytes >= i.dirty_bytes.min(16), "{i2:?}");
    // In PRE_COPY_P2P the VF is suspended: no firmware query.
    set_state(&mut d, PreCopyP2p).unwrap();
    let q = d.hal().fw.command_count(opcode::QUERY_VHCA_MIGRATION_STATE);
    let i3 = info(&mut d, f);
    assert_eq!(
        d.hal().fw.command_count(opcode::QUERY_VHCA_MIGRATION_STATE),
        q
    );
    // Only the unread bytes are known then.
    let e = d.save_engine().unwrap();
    assert_eq!(i3.dirty_bytes, e.queued_end() - e.position());
    assert!(i3.dirty_bytes <= i2.dirty_bytes);
    // Outside PRE_COPY states: EINVAL.
    set_state(&mut d, StopCopy).unwrap();
    let e = d.precopy_info(f).unwrap_err();
    assert_eq!((e, e.errno()), (DeviceError::NotPreCopy, Errno::EINVAL));
    drain(&mut d, f).unwrap();
    set_state(&mut d, Stop).unwrap();
    assert_clean(&mut d);
}

#[test]
fn bad_res_state_in_precopy_falls_back_to_a_full_final_image() {
    let (mut d, f) = precopy_file("sim:state=30M,object=1M-2M,dirty=1M");
    complete_one(&mut d);
    // Drain, then make the next incremental SAVE fail with BAD_RES_STATE_ERR.
    let mut out = vec![];
    while read(&mut d, f, 8 << 20, &mut out).is_ok() {}
    d.hal_mut()
        .fw
        .faults_mut()
        .fail_nth(
            opcode::SAVE_VHCA_STATE,
            1,
            status::BAD_RES_STATE_ERR,
            0x1234,
        )
        .unwrap();
    info(&mut d, f);
    complete_one(&mut d);
    // Firmware status decoded from the async output: PRE_COPY_ERROR, not ERROR.
    assert_eq!(d.save_engine().unwrap().state(), FileState::PreCopyError);
    // No more incremental queries; reads see the temporary end.
    let q = d.hal().fw.command_count(opcode::QUERY_VHCA_MIGRATION_STATE);
    assert_eq!(info(&mut d, f).dirty_bytes, 0);
    assert_eq!(
        d.hal().fw.command_count(opcode::QUERY_VHCA_MIGRATION_STATE),
        q
    );
    assert_eq!(d.read_begin(f, 1).unwrap_err(), DeviceError::NoMessage);
    // Final save: full image; the destination ends with the source's state.
    let mut dst = dev("sim:state=4M");
    let df = set_state(&mut dst, Resuming).unwrap().unwrap();
    write(&mut dst, df, &out).unwrap();
    set_state(&mut d, StopCopy).unwrap();
    let rest = drain(&mut d, f).unwrap();
    write(&mut dst, df, &rest).unwrap();
    set_state(&mut dst, Running).unwrap();
    assert_eq!(d.hal().fw.digest(0), dst.hal().fw.digest(0));
    set_state(&mut d, Stop).unwrap();
    assert_clean(&mut d);
    assert_clean(&mut dst);
}

#[test]
fn leaving_precopy_runs_the_cleanup_save() {
    for policy in POLICIES {
        let cfg = Config {
            precopy_policy: policy,
            ..Config::default()
        };
        let mut d = device(SMALL, cfg);
        let f = set_state(&mut d, PreCopy).unwrap().unwrap();
        complete_one(&mut d);
        let saves = d.hal().fw.command_count(opcode::SAVE_VHCA_STATE);
        // Chunked PRE_COPY has chained the next chunk: it is waited for,
        // and no further chunk starts.
        let in_flight = u64::from(d.save_engine().unwrap().in_flight().is_some());
        // PRE_COPY -> RUNNING: QUERY, cleanup SAVE (waited for), file closed.
        assert_eq!(set_state(&mut d, Running), Ok(None));
        assert_eq!(
            d.hal().fw.command_count(opcode::SAVE_VHCA_STATE),
            saves + in_flight + 1,
            "{policy:?}"
        );
        assert!(
            !d.hal().fw.vf_state(0).unwrap().tracking,
            "firmware still tracking"
        );
        assert_eq!(d.read_begin(f, 1).unwrap_err(), DeviceError::NoFile);
        assert_clean(&mut d);
    }
}

#[test]
fn leaving_precopy_after_the_file_failed_is_eio_then_succeeds() {
    let (mut d, f) = precopy_file(SMALL);
    // The initial SAVE fails hard: the file is in error.
    d.hal_mut()
        .fw
        .faults_mut()
        .fail_nth(opcode::SAVE_VHCA_STATE, 1, status::INT_ERR, 7)
        .unwrap();
    complete_one(&mut d);
    assert_eq!(d.read_begin(f, 1).unwrap_err().errno(), Errno::ENODEV);
    // The incremental query is blocked after ERROR.
    let q = d.hal().fw.command_count(opcode::QUERY_VHCA_MIGRATION_STATE);
    assert_eq!(d.precopy_info(f).unwrap_err().errno(), Errno::ENODEV);
    assert_eq!(
        d.hal().fw.command_count(opcode::QUERY_VHCA_MIGRATION_STATE),
        q
    );
    // Leaving PRE_COPY: the cleanup still runs (tracking must stop) but the
    // arc reports EIO and the device stays in PRE_COPY...
    let e = set_state(&mut d, Running).unwrap_err();
    assert_eq!((e, e.errno()), (DeviceError::SaveFileFailed, Errno::EIO));
    assert_eq!(d.state(), PreCopy);
    assert!(!d.hal().fw.vf_state(0).unwrap().tracking);
    // ...and with no saving file left, the next attempt succeeds.
    assert_eq!(set_state(&mut d, Running), Ok(None));
    assert_clean(&mut d);
}

#[test]
fn streams_without_headers_are_rejected() {
    // Save a Linux-format stream, strip the record headers, and feed the raw
    // firmware image to a destination.
    let mut src = device(
        SMALL,
        Config {
            integrity_records: false,
            ..Config::default()
        },
    );
    let f = set_state(&mut src, StopCopy).unwrap().unwrap();
    let s = drain(&mut src, f).unwrap();
    let raw = &s[24 + 16..];
    let mut dst = dev(SMALL);
    let df = set_state(&mut dst, Resuming).unwrap().unwrap();
    let e = write(&mut dst, df, raw).unwrap_err();
    assert!(
        matches!(e.errno(), Errno::ENOMEM | Errno::EOPNOTSUPP | Errno::EINVAL),
        "{e}"
    );
    // Later writes: ENODEV; leaving RESUMING fails.
    assert_eq!(
        write(&mut dst, df, &[0]).unwrap_err().errno(),
        Errno::ENODEV
    );
    assert!(set_state(&mut dst, Stop).is_err());
    assert_eq!(dst.state(), Resuming);
    dst.handle_reset();
    assert_eq!(dst.state(), Running);
    set_state(&mut src, Stop).unwrap();
    assert_clean(&mut src);
    assert_clean(&mut dst);
}

#[test]
fn allocation_failure_mid_open_unwinds_once() {
    // PRE_COPY opening allocates two slot buffers (and under the Linux
    // policy a fresh one for the initial image): fail each.
    for (policy, nth) in [
        (PrecopyPolicy::Linux, 0),
        (PrecopyPolicy::Linux, 1),
        (PrecopyPolicy::Linux, 2),
        (PrecopyPolicy::Chunked, 0),
        (PrecopyPolicy::Chunked, 1),
    ] {
        let cfg = Config {
            precopy_policy: policy,
            ..Config::default()
        };
        let mut d = device(SMALL, cfg);
        d.hal_mut().knobs.fail_alloc = Some(FailAfter::new(nth, HalErrorKind::OutOfMemory));
        let e = set_state(&mut d, PreCopy).unwrap_err();
        assert_eq!(e.errno(), Errno::ENOMEM, "allocation {nth}");
        // The state did not change and nothing was left behind.
        assert_eq!(d.state(), Running);
        assert!(d.is_idle());
        assert!(d.hal().accounting().is_zero());
        assert_eq!(d.hal().live_buffers, 0);
        // And the next attempt works.
        set_state(&mut d, PreCopy).unwrap();
        set_state(&mut d, Running).unwrap();
        assert_clean(&mut d);
    }
}

#[test]
fn a_failing_command_while_opening_frees_everything_once() {
    for (policy, op, nth) in [
        (PrecopyPolicy::Linux, opcode::QUERY_VHCA_MIGRATION_STATE, 1),
        (PrecopyPolicy::Linux, opcode::CREATE_MKEY, 1),
        (PrecopyPolicy::Linux, opcode::CREATE_MKEY, 2),
        (PrecopyPolicy::Linux, opcode::CREATE_MKEY, 3),
        (
            PrecopyPolicy::Chunked,
            opcode::QUERY_VHCA_MIGRATION_STATE,
            1,
        ),
        (PrecopyPolicy::Chunked, opcode::CREATE_MKEY, 1),
        (PrecopyPolicy::Chunked, opcode::CREATE_MKEY, 2),
    ] {
        let cfg = Config {
            precopy_policy: policy,
            ..Config::default()
        };
        let mut d = device(SMALL, cfg);
        d.hal_mut()
            .fw
            .faults_mut()
            .fail_nth(op, nth, status::LIM_ERR, 9)
            .unwrap();
        let e = set_state(&mut d, PreCopy).unwrap_err();
        assert!(
            matches!(e.errno(), Errno::ENOMEM | Errno::EIO),
            "{op:#x}: {e}"
        );
        assert_eq!(d.state(), Running);
        assert!(d.is_idle());
        assert!(
            d.hal().accounting().is_zero(),
            "{op:#x} {:?}",
            d.hal().accounting()
        );
        assert_clean(&mut d);
    }
}

#[test]
fn regrow_for_an_object_larger_than_the_chunk() {
    let mut m = Migration::new(
        "sim:state=100M,object=9M-12M,seed=2",
        "sim:state=1M",
        Config::default(),
    );
    m.run(1);
    m.assert_digests_match();
    // Two slots of 8 MiB could not hold 9-12 MiB objects: they grew, and
    // never beyond two buffers of the largest chunk firmware asked for (the
    // sim's last object absorbs the state's remainder, so it can exceed 12 MiB).
    let layout = m.src.hal().fw.layout(0).unwrap();
    let largest = (0..layout.count())
        .map(|i| layout.record_len(i))
        .max()
        .unwrap();
    let slot = (largest + 80).div_ceil(4096) * 4096;
    let peak = m.src.stats().peak_buffer_bytes;
    assert!(peak > 2 * 8 * MIB, "{peak}");
    assert!(peak <= 2 * slot, "{peak} > 2 x {slot}");
    m.assert_no_leaks();
}

#[test]
fn deferred_reset_during_a_save() {
    let mut d = dev(SMALL);
    let f = set_state(&mut d, StopCopy).unwrap().unwrap();
    complete_one(&mut d);
    let mut out = vec![];
    read(&mut d, f, 5000, &mut out).unwrap();
    // A SAVE is in flight and a reader holds a lease when the reset lands.
    let seg = d.read_begin(f, 100).unwrap();
    assert!(d.save_in_flight());
    d.hal_mut().fw.reset_vf(0);
    d.handle_reset();
    assert_eq!(d.state(), Running);
    assert!(!d.is_idle(), "the pinned buffers must survive");
    // The reader finishes its copy, then gets ENODEV.
    let _ = seg;
    d.read_end(f, 10).unwrap();
    assert_eq!(d.read_begin(f, 1).unwrap_err(), DeviceError::NoFile);
    // The SAVE completes (whatever firmware says) and its buffer goes.
    complete_one(&mut d);
    assert!(d.is_idle(), "{d:?}");
    // And a new migration works.
    let f = set_state(&mut d, StopCopy).unwrap().unwrap();
    drain(&mut d, f).unwrap();
    set_state(&mut d, Running).unwrap();
    assert_clean(&mut d);
}

#[test]
fn deferred_reset_during_a_load() {
    let mut src = dev(SMALL);
    let f = set_state(&mut src, StopCopy).unwrap().unwrap();
    let s = drain(&mut src, f).unwrap();
    let mut dst = dev(SMALL);
    let df = set_state(&mut dst, Resuming).unwrap().unwrap();
    write(&mut dst, df, &s[..s.len() / 2]).unwrap();
    dst.hal_mut().fw.reset_vf(0);
    dst.handle_reset();
    assert_eq!(dst.state(), Running);
    assert!(dst.is_idle());
    assert_eq!(
        write(&mut dst, df, &s[s.len() / 2..]).unwrap_err(),
        DeviceError::NoFile
    );
    set_state(&mut src, Stop).unwrap();
    assert_clean(&mut src);
    assert_clean(&mut dst);
}

/// A LOAD that must wait for a SAVE still in flight (from a saving session
/// closed just before RESUMING) stays pending: the bytes that completed its
/// image are never reported as an error, so a shim that waits and retries
/// on `SaveInFlight` cannot write them twice. Only `write_plan` (before
/// consuming anything) asks to wait.
#[test]
fn a_load_waiting_for_a_save_keeps_the_bytes_it_consumed() {
    let mut src = dev(SMALL);
    let f = set_state(&mut src, StopCopy).unwrap().unwrap();
    let s = drain(&mut src, f).unwrap();
    set_state(&mut src, Stop).unwrap();

    let mut dst = dev("sim:state=20M,object=1M-2M,seed=6");
    dst.set_state(StopCopy).unwrap().unwrap();
    assert!(dst.save_in_flight());
    dst.set_state(Stop).unwrap();
    let df = dst.set_state(Resuming).unwrap().unwrap();
    assert!(
        dst.save_in_flight(),
        "closing the saving file does not wait"
    );

    let waits = write_waiting(&mut dst, df, &s).unwrap();
    assert_eq!(waits, 1, "the first image's LOAD waits once for the SAVE");
    set_state(&mut dst, Stop).unwrap();
    set_state(&mut dst, Running).unwrap();
    assert_eq!(dst.hal().fw.digest(0), src.hal().fw.digest(0));
    assert_clean(&mut src);
    assert_clean(&mut dst);
}

/// Fuzz find (resume_engine, bug 2): a byte after the stream-end record was
/// refused as a caller mistake and the file stayed good, so RESUMING → STOP
/// accepted the stream. It is the stream's error: the file fails.
#[test]
fn a_byte_after_the_end_record_fails_the_stream() {
    let mut src = dev(SMALL);
    let f = set_state(&mut src, StopCopy).unwrap().unwrap();
    let s = drain(&mut src, f).unwrap();
    set_state(&mut src, Stop).unwrap();
    let mut dst = dev("sim:state=20M,object=1M-2M,seed=6");
    let df = set_state(&mut dst, Resuming).unwrap().unwrap();
    write(&mut dst, df, &s).unwrap();
    let e = write(&mut dst, df, &[0x42]).unwrap_err();
    assert_eq!(e.errno(), Errno::EINVAL, "{e}");
    assert!(
        e.to_string().contains("data after the stream-end record"),
        "{e}"
    );
    assert!(
        set_state(&mut dst, Stop).is_err(),
        "the failed stream must not load"
    );
    assert_clean(&mut src);
    assert_clean(&mut dst);
}

#[test]
fn vf_detach_mid_stream() {
    let mut d = dev(SMALL);
    let f = set_state(&mut d, StopCopy).unwrap().unwrap();
    complete_one(&mut d);
    let mut out = vec![];
    read(&mut d, f, 5000, &mut out).unwrap();
    // The PF disables the VF: files close while commands still work...
    d.handle_detach();
    d.hal_mut().fw.detach_vf(0);
    assert_eq!(d.read_begin(f, 1).unwrap_err().errno(), Errno::ENODEV);
    // ...the SAVE in flight completes (failing: the VF is gone) and is freed.
    complete_one(&mut d);
    assert!(d.is_idle());
    assert!(d.hal().accounting().is_zero(), "{:?}", d.hal().accounting());
    // Every VF command now fails with ENOTCONN without reaching firmware.
    let before = d.hal().fw.command_count(opcode::RESUME_VHCA);
    let e = set_state(&mut d, Running).unwrap_err();
    assert_eq!((e, e.errno()), (DeviceError::Detached, Errno::ENOTCONN));
    assert_eq!(d.hal().fw.command_count(opcode::RESUME_VHCA), before);
    assert_eq!(d.data_size().unwrap_err().errno(), Errno::ENOTCONN);
    // Re-attached, it works again.
    d.hal_mut().fw.attach_vf(0);
    d.handle_attach();
    set_state(&mut d, Running).unwrap();
    assert_clean(&mut d);
}

#[test]
fn closing_mid_stream_frees_everything() {
    // Saving file released and device state changed with a SAVE in flight.
    let mut d = dev(SMALL);
    let f = set_state(&mut d, StopCopy).unwrap().unwrap();
    d.release(f);
    set_state(&mut d, Stop).unwrap();
    assert!(d.save_in_flight());
    complete_one(&mut d);
    assert_clean(&mut d);
    // Resuming file closed half-way: RESUMING -> STOP fails with a clear
    // verdict, then a reset recovers.
    let mut src = dev(SMALL);
    let sf = set_state(&mut src, StopCopy).unwrap().unwrap();
    let s = drain(&mut src, sf).unwrap();
    let mut dst = dev(SMALL);
    let df = set_state(&mut dst, Resuming).unwrap().unwrap();
    write(&mut dst, df, &s[..s.len() - 100]).unwrap();
    dst.release(df);
    let e = set_state(&mut dst, Stop).unwrap_err();
    assert!(
        matches!(e, DeviceError::Incomplete(Verdict::PartialRecord { .. })),
        "{e}"
    );
    assert_eq!(e.errno(), Errno::EINVAL);
    assert!(e.to_string().contains("missing"), "{e}");
    dst.handle_reset();
    set_state(&mut src, Stop).unwrap();
    assert_clean(&mut src);
    assert_clean(&mut dst);
}

#[test]
fn a_truncated_stream_is_caught_on_resuming_to_stop() {
    let mut src = dev(SMALL);
    let sf = set_state(&mut src, StopCopy).unwrap().unwrap();
    let s = drain(&mut src, sf).unwrap();
    // Cut exactly at a record boundary before the end record: only our end
    // record can tell (Linux would accept this).
    let cut = s.len() - 40;
    let mut dst = dev(SMALL);
    let df = set_state(&mut dst, Resuming).unwrap().unwrap();
    write(&mut dst, df, &s[..cut]).unwrap();
    let e = set_state(&mut dst, Stop).unwrap_err();
    assert_eq!(e, DeviceError::Incomplete(Verdict::MissingEnd));
    // Writing the rest completes it: RESUMING -> STOP now succeeds.
    write(&mut dst, df, &s[cut..]).unwrap();
    set_state(&mut dst, Running).unwrap();
    assert_eq!(src.hal().fw.digest(0), dst.hal().fw.digest(0));
    set_state(&mut src, Stop).unwrap();
    assert_clean(&mut src);
    assert_clean(&mut dst);
}

#[test]
fn completions_are_matched_to_the_save_in_flight() {
    let mut d = dev(SMALL);
    let _f = set_state(&mut d, StopCopy).unwrap().unwrap();
    let (token, out) = d.hal_mut().run_save().unwrap();
    d.handle_save_completion(token, &out).unwrap();
    // The same completion again: refused, nothing changes.
    let e = d.handle_save_completion(token, &out).unwrap_err();
    assert_eq!(e, DeviceError::StaleCompletion);
    // A forged token for the SAVE that is in flight now.
    let forged = mlx5vf_core::hal::SaveToken::from_bits(token.to_bits() ^ 1 << 40);
    assert_eq!(
        d.handle_save_completion(forged, &out).unwrap_err(),
        DeviceError::StaleCompletion
    );
    set_state(&mut d, Stop).unwrap();
    assert_clean(&mut d);
}

#[test]
fn errors_carry_firmware_status_and_errno() {
    let mut d = dev(SMALL);
    d.hal_mut()
        .fw
        .faults_mut()
        .fail_nth(opcode::SUSPEND_VHCA, 1, status::BAD_RES_STATE_ERR, 0xabcd)
        .unwrap();
    let e = d.set_state(Stop).unwrap_err();
    assert_eq!(e.reached, Running);
    let DeviceError::Firmware(c) = e.error else {
        panic!("{e}")
    };
    assert_eq!(c.status, CmdStatus::BadResStateErr);
    assert_eq!(c.syndrome, 0xabcd);
    assert_eq!(e.error.errno(), Errno::EINVAL);
    assert!(e.to_string().contains("SUSPEND_VHCA(0x115)"), "{e}");
    // The second arc fails: RUNNING_P2P reached.
    d.hal_mut()
        .fw
        .faults_mut()
        .fail_nth(opcode::SUSPEND_VHCA, 2, status::INT_ERR, 1)
        .unwrap();
    let e = d.set_state(Stop).unwrap_err();
    assert_eq!(e.reached, RunningP2p);
    assert_eq!(e.error.errno(), Errno::EIO);
    set_state(&mut d, Running).unwrap();
    assert_clean(&mut d);
}

#[test]
fn precopy_info_v2_reports_reinit_only_when_opted_in() {
    for opted_in in [false, true] {
        let (mut d, f) = precopy_file("sim:state=20M,object=1M-2M,dirty=1M");
        d.set_precopy_info_v2(opted_in);
        complete_one(&mut d);
        let mut out = vec![];
        read(&mut d, f, 1000, &mut out).unwrap();
        // Firmware reports new initial data on the next incremental query.
        d.hal_mut().fw.faults_mut().report_init_on_next_query();
        let i = info(&mut d, f);
        assert_eq!(i.reinit, opted_in);
        if opted_in {
            // Unread bytes and the new data are initial bytes; the new
            // data's SAVE waits until the reader drains what is queued.
            assert!(i.initial_bytes > 0 && i.dirty_bytes == 0, "{i:?}");
            assert!(d.hal().pending.is_empty());
            loop {
                match read(&mut d, f, u64::MAX, &mut out) {
                    Err(DeviceError::NoMessage) => break,
                    Err(DeviceError::WouldBlock) => assert!(complete_one(&mut d)),
                    r => {
                        r.unwrap();
                    }
                }
            }
            // Drained: the new data is still initial, and its SAVE starts.
            let drained = info(&mut d, f);
            assert!(!drained.reinit);
            assert!(
                drained.initial_bytes > 0 && drained.dirty_bytes == 0,
                "{drained:?}"
            );
            assert_eq!(d.hal().pending.len(), 1);
            complete_one(&mut d);
            let after = info(&mut d, f);
            assert!(after.initial_bytes >= drained.initial_bytes, "{after:?}");
        } else {
            // v1: the flag never shows; the old initial bytes count down.
            assert!(i.initial_bytes > 0);
            assert!(d.hal().pending.is_empty());
        }
        set_state(&mut d, Running).unwrap();
        assert_clean(&mut d);
    }
}

/// Reads PRE_COPY data until ENOMSG, checking back-pressure on the way.
fn until_no_message(d: &mut mlx5vf_core::device::Device<TestHal>, f: FileId, out: &mut Vec<u8>) {
    loop {
        match read(d, f, 1 << 20, out) {
            Ok(_) => {}
            Err(DeviceError::WouldBlock) => assert!(complete_one(d)),
            Err(DeviceError::NoMessage) => return,
            Err(e) => panic!("{e}"),
        }
        assert!(d.save_engine().unwrap().ready_chunks() <= 2);
    }
}

/// Issue 16: in chunk mode PRE_COPY moved one chunk per precopy-info call and
/// reported only the next chunk as dirty, so a VMM saw a converged device
/// with the state still in firmware. Chunked PRE_COPY saves the whole
/// initial image through the slots before the reader first sees ENOMSG, and
/// reports what firmware still holds.
#[test]
fn chunked_precopy_moves_the_whole_initial_image_before_the_stop() {
    const STATE: u64 = 40 * MIB;
    // The workload dirties 1 MiB of objects at every QUERY and SAVE.
    let spec = "sim:state=40M,object=1M-2M,dirty=1M,seed=3";
    let (mut d, f) = precopy_file(spec);
    // Before anything is read, the whole state counts as initial data.
    let first = info(&mut d, f);
    assert!(first.initial_bytes >= STATE, "{first:?}");
    assert_eq!(first.dirty_bytes, 0);
    // Read until the temporary end: the whole initial image arrives, with
    // never more unread chunks than slots and no buffer beyond the slots.
    let mut out = vec![];
    until_no_message(&mut d, f, &mut out);
    assert!(
        out.len() as u64 > STATE,
        "{} bytes before ENOMSG",
        out.len()
    );
    assert!(d.stats().peak_buffer_bytes <= 2 * 8 * MIB + 2 * 4096);
    // The initial image is read; what the workload dirtied meanwhile is
    // dirty data.
    let done = info(&mut d, f);
    assert_eq!(done.initial_bytes, 0, "{done:?}");
    // Ten more ticks dirty about 10 MiB: dirty_bytes counts all of it
    // (remaining_total_size), not one chunk's worth as the Linux policy does.
    d.hal_mut().fw.tick(0, 10);
    let dirty = info(&mut d, f);
    assert_eq!(dirty.initial_bytes, 0);
    assert!(dirty.dirty_bytes >= 8 * MIB, "{dirty:?}");
    // A round moves what firmware held when it started (data dirtied
    // meanwhile waits for the next round, so a round always ends): drain
    // the current one, then the next precopy-info starts an image of all
    // that dirt, which arrives chunk after chunk before the next ENOMSG.
    until_no_message(&mut d, f, &mut out);
    let round = info(&mut d, f);
    assert!(round.dirty_bytes >= 8 * MIB, "{round:?}");
    let before = out.len() as u64;
    until_no_message(&mut d, f, &mut out);
    let moved = out.len() as u64 - before;
    assert!(moved + 2 * MIB >= round.dirty_bytes, "{moved} of {round:?}");
    // Stop: the final save carries what is left; the destination matches.
    let mut dst = dev("sim:state=4M");
    let df = set_state(&mut dst, Resuming).unwrap().unwrap();
    write(&mut dst, df, &out).unwrap();
    set_state(&mut d, StopCopy).unwrap();
    let rest = drain(&mut d, f).unwrap();
    assert!(
        (rest.len() as u64) < STATE / 4,
        "{} bytes after the stop",
        rest.len()
    );
    // Under the Linux policy the same run moves one chunk per round: most of
    // the state is still in firmware at the stop (see the benchmark).
    write(&mut dst, df, &rest).unwrap();
    set_state(&mut dst, Running).unwrap();
    assert_eq!(d.hal().fw.digest(0), dst.hal().fw.digest(0));
    set_state(&mut d, Stop).unwrap();
    assert_clean(&mut d);
    assert_clean(&mut dst);
}
