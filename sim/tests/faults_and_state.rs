//! Fault knobs, the VHCA state machine, and PRE_COPY save semantics.

mod common;

use common::*;
use mlx5vf_sim::fault::FaultError;
use mlx5vf_sim::{SuspendState, Syndrome};

const MIB: u64 = 1 << 20;
const HDR: u32 = 80;

#[test]
fn vhca_state_machine() {
    let mut rig = Rig::one("sim:state=1M");
    let v = rig.vhca(0, 0);
    let state = |rig: &mut Rig| rig.fw(0).vf_state(0).unwrap().suspend;
    // Wrong arcs from Running.
    rig.suspend(0, v, true).refused(Syndrome::SuspendBadState);
    rig.resume(0, v, true).refused(Syndrome::ResumeBadState);
    rig.resume(0, v, false).refused(Syndrome::ResumeBadState);
    rig.suspend(0, v, false).ok();
    assert_eq!(state(&mut rig), SuspendState::InitiatorSuspended);
    rig.suspend(0, v, false).refused(Syndrome::SuspendBadState);
    rig.resume(0, v, false).refused(Syndrome::ResumeBadState); // RESPONDER needs Suspended
    // LOAD needs Suspended.
    let pd = rig.alloc_pd(0);
    let buf = rig.buffer(0, pd, MIB);
    rig.load(0, v, buf, 4096)
        .refused(Syndrome::LoadNotSuspended);
    rig.suspend(0, v, true).ok();
    assert_eq!(state(&mut rig), SuspendState::Suspended);
    rig.suspend(0, v, true).refused(Syndrome::SuspendBadState);
    rig.resume(0, v, true).refused(Syndrome::ResumeBadState); // INITIATOR needs InitiatorSuspended
    rig.resume(0, v, false).ok();
    assert_eq!(state(&mut rig), SuspendState::InitiatorSuspended);
    rig.load(0, v, buf, 4096)
        .refused(Syndrome::LoadNotSuspended);
    rig.resume(0, v, true).ok();
    assert_eq!(state(&mut rig), SuspendState::Running);
    rig.drop_mkey(0, buf);
    rig.free(buf);
    rig.dealloc_pd(0, pd).ok();
    rig.assert_clean();
}

#[test]
fn fail_nth_command_without_side_effects_and_counters() {
    let mut rig = Rig::one("sim:state=4M,object=64K-256K,dirty=256K");
    let v = rig.vhca(0, 0);
    let queries = rig.fw(0).command_count(op::QUERY_MIG);
    rig.fw(0)
        .faults_mut()
        .fail_nth(op::QUERY_MIG, 2, st::BAD_RES_STATE, 0xdead_beef)
        .unwrap();
    rig.query_ok(0, v, false, true);
    let digest = rig.fw(0).digest(0);
    let out = rig.query(0, v, false, true);
    assert_eq!(
        (out.status(), out.syndrome()),
        (st::BAD_RES_STATE, 0xdead_beef)
    );
    assert_eq!(
        digest,
        rig.fw(0).digest(0),
        "no workload tick on an injected failure"
    );
    rig.query_ok(0, v, false, true);
    assert_ne!(digest, rig.fw(0).digest(0), "ticks again");
    assert_eq!(rig.fw(0).command_count(op::QUERY_MIG), queries + 3);
    assert!(rig.fw(0).faults_mut().is_idle());
    assert_eq!(
        rig.fw(0).faults_mut().fail_nth(1, 0, 1, 1),
        Err(FaultError::ZeroNth)
    );
    // Unknown opcodes share a counter.
    rig.exec(0, &Cmd::new(0x0777, 0, 16), 16);
    assert_eq!(rig.fw(0).command_count(0x0777), 1);
    assert_eq!(rig.fw(0).command_count(0x0999), 1);
    rig.assert_clean();
}

#[test]
fn lying_save_outputs() {
    let mut rig = Rig::one("sim:state=4M,object=64K-256K");
    let v = rig.vhca(0, 0);
    rig.stop(0, v);
    let pd = rig.alloc_pd(0);
    let buf = rig.buffer(0, pd, MIB);
    rig.fw(0).faults_mut().oversize_next_save(4096);
    let (actual, next) = rig.save_ok(0, v, false, false, buf, MIB as u32);
    assert_eq!(actual, MIB as u32 + 4096);
    assert_ne!(next, 0);
    rig.fw(0).faults_mut().next_required_umem_size(0xffff_ffff);
    let (actual, next) = rig.save_ok(0, v, true, false, buf, MIB as u32);
    assert!(actual <= MIB as u32);
    assert_eq!(next, 0xffff_ffff);
    let (_, next) = rig.save_ok(0, v, true, false, buf, MIB as u32);
    assert_ne!(next, 0xffff_ffff, "each override applies once");
    rig.drop_mkey(0, buf);
    rig.free(buf);
    rig.dealloc_pd(0, pd).ok();
    rig.assert_clean();
}

#[test]
fn detach_and_reset() {
    let mut rig = Rig::one("sim:state=4M,object=64K-256K,dirty=64K");
    let v = rig.vhca(0, 0);
    rig.fw(0).detach_vf(0);
    rig.suspend(0, v, false).refused(Syndrome::VfDetached);
    rig.query(0, v, false, false).refused(Syndrome::VfDetached);
    rig.query_cap(0, Some(1), 0x01)
        .refused(Syndrome::VfDetached);
    assert!(!rig.fw(0).vf_state(0).unwrap().attached);
    rig.fw(0).attach_vf(0);
    rig.suspend(0, v, false).ok();

    // Reset mid-save: tracking and pending dropped, objects kept, Running.
    let pd = rig.alloc_pd(0);
    let buf = rig.buffer(0, pd, MIB);
    rig.save_ok(0, v, false, true, buf, MIB as u32);
    let s = rig.fw(0).vf_state(0).unwrap();
    assert!(s.tracking && s.pending_objects > 0);
    let digest = rig.fw(0).digest(0);
    rig.fw(0).reset_vf(0);
    let s = rig.fw(0).vf_state(0).unwrap();
    assert_eq!(s.suspend, SuspendState::Running);
    assert!(!s.tracking && !s.saving && s.pending_objects == 0 && s.dirty_objects == 0);
    assert_eq!(rig.fw(0).digest(0), digest, "objects kept");
    // Explicit ticks dirty only a running VF.
    rig.fw(0).tick(0, 2);
    let ticked = rig.fw(0).digest(0);
    assert_ne!(ticked, digest);
    rig.stop(0, v);
    rig.fw(0).tick(0, 5);
    assert_eq!(rig.fw(0).digest(0), ticked);
    rig.drop_mkey(0, buf);
    rig.free(buf);
    rig.dealloc_pd(0, pd).ok();
    rig.assert_clean();
}

#[test]
fn precopy_tracking_incremental_and_cleanup() {
    let mut rig = Rig::one("sim:state=8M,object=64K-256K,dirty=512K");
    let v = rig.vhca(0, 0);
    let pd = rig.alloc_pd(0);
    let buf = rig.buffer(0, pd, 16 * MIB);
    let size = buf.len as u32;
    // Before any full image.
    rig.query(0, v, true, true).refused(Syndrome::NoSaveSession);
    rig.save(0, v, false, false, buf, size)
        .refused(Syndrome::SaveRunningUntracked);
    rig.save(0, v, true, true, buf, size)
        .refused(Syndrome::SaveRunningUntracked);
    // Initial image: everything (the buffer fits it), tracking on.
    let (actual, next) = rig.save_ok(0, v, false, true, buf, size);
    assert_eq!((u64::from(actual), next), (8 * MIB, 0));
    assert!(rig.fw(0).vf_state(0).unwrap().tracking);
    // The guest dirtied objects since: the incremental query sees them.
    let (req, remaining) = rig.query_ok(0, v, true, true);
    assert!(remaining > u64::from(HDR), "{remaining}");
    assert!(req > HDR);
    let (req0, _) = rig.query_ok(0, v, true, false);
    assert!(req0 > HDR);
    let (actual, _) = rig.save_ok(0, v, true, true, buf, size);
    assert!(actual > HDR);
    // PRE_COPY → RUNNING cleanup: QUERY inc, then SAVE inc=0 track=0 (no
    // DMA: even a zero-size buffer without an mkey is fine).
    rig.query_ok(0, v, true, true);
    let nothing = Buf { key: 0, ..buf };
    assert_eq!(rig.save_ok(0, v, false, false, nothing, 0), (0, 0));
    let s = rig.fw(0).vf_state(0).unwrap();
    assert!(!s.tracking && !s.saving && s.pending_objects == 0 && s.dirty_objects == 0);
    rig.query(0, v, true, true).refused(Syndrome::NoSaveSession);
    // Suspended without a session: no incremental save.
    rig.stop(0, v);
    rig.save(0, v, true, false, buf, size)
        .refused(Syndrome::NoSaveSession);
    rig.run(0, v);
    rig.drop_mkey(0, buf);
    rig.free(buf);
    rig.dealloc_pd(0, pd).ok();
    rig.assert_clean();
}

#[test]
fn short_buffer_is_state_changed_while_running_and_bad_param_when_stopped() {
    for chunks in ["on", "off"] {
        let mut rig = Rig::one(&format!(
            "sim:state=8M,object=1M-2M,dirty=1M,chunks={chunks}"
        ));
        let v = rig.vhca(0, 0);
        let pd = rig.alloc_pd(0);
        let buf = rig.buffer(0, pd, 16 * MIB);
        let small = 512 * 1024; // below the smallest object
        rig.save(0, v, false, true, buf, small)
            .refused(Syndrome::StateChanged);
        assert!(
            !rig.fw(0).vf_state(0).unwrap().saving,
            "refused SAVE has no effect"
        );
        rig.stop(0, v);
        rig.save(0, v, false, false, buf, small)
            .refused(Syndrome::BufferTooSmall);
        rig.save(0, v, false, false, buf, HDR - 1)
            .refused(Syndrome::BufferTooSmall);
        // 4 MiB holds some objects but not the whole 8 MiB image.
        let out = rig.save(0, v, false, false, buf, 4 << 20);
        if chunks == "on" {
            assert_ne!(out.ok().u32(12), 0, "more chunks follow");
        } else {
            out.refused(Syndrome::BufferTooSmall);
        }
        rig.run(0, v);
        rig.fw(0).reset_vf(0);
        rig.drop_mkey(0, buf);
        rig.free(buf);
        rig.dealloc_pd(0, pd).ok();
        rig.assert_clean();
    }
}

/// The Linux PRE_COPY_ERROR path: an incremental pre-copy SAVE fails with
/// BAD_RES_STATE_ERR, later the final save takes a full image (inc=0).
#[test]
fn precopy_error_then_full_final_image() {
    let mut rig = Rig::new(&[
        spec("sim:state=16M,object=256K-2M,dirty=4M,seed=31"),
        spec("sim:state=1M"),
    ]);
    let (src, dst) = (rig.end(0, 0), rig.end(1, 0));
    rig.stop(1, dst.vhca);
    let pds = (rig.alloc_pd(0), rig.alloc_pd(1));
    let mut buf = rig.buffer(0, pds.0, 4 * MIB);
    let mut dbuf = rig.share(1, pds.1, buf);
    let (actual, _) = rig.save_ok(0, src.vhca, false, true, buf, buf.len as u32);
    rig.load(1, dst.vhca, dbuf, actual).ok();
    // Size the next buffer from QUERY, but the SAVE's tick dirties a big
    // low-index object first: too small.
    let mut refused = false;
    for _ in 0..50 {
        let (req, _) = rig.query_ok(0, src.vhca, true, true);
        let out = rig.save(0, src.vhca, true, true, buf, req);
        if out.status() != 0 {
            out.refused(Syndrome::StateChanged);
            refused = true;
            break;
        }
        rig.load(1, dst.vhca, dbuf, out.u32(8)).ok();
    }
    assert!(
        refused,
        "a running VF eventually outgrows a QUERY-sized buffer"
    );
    // PRE_COPY_P2P → STOP_COPY with a full final image.
    rig.stop(0, src.vhca);
    let expected = rig.fw(0).digest(0);
    stop_copy_chunks(&mut rig, src, dst, &mut buf, &mut dbuf, pds, false);
    assert!(!rig.fw(0).vf_state(0).unwrap().tracking);
    rig.run(1, dst.vhca);
    assert_eq!(rig.fw(1).digest(0), expected);
    rig.run(0, src.vhca);
    rig.drop_mkey(0, buf);
    rig.drop_mkey(1, dbuf);
    rig.free(buf);
    rig.dealloc_pd(0, pds.0).ok();
    rig.dealloc_pd(1, pds.1).ok();
    rig.assert_clean();
}

#[test]
fn incremental_query_is_zero_when_nothing_changed() {
    let mut rig = Rig::one("sim:state=2M,object=64K-256K");
    let v = rig.vhca(0, 0);
    let pd = rig.alloc_pd(0);
    let buf = rig.buffer(0, pd, 4 * MIB);
    rig.save_ok(0, v, false, true, buf, buf.len as u32);
    assert_eq!(rig.query_ok(0, v, true, true), (0, 0));
    assert_eq!(rig.query_ok(0, v, true, false), (0, 0));
    // A SAVE anyway writes a record-less continuation image.
    assert_eq!(rig.save_ok(0, v, true, true, buf, buf.len as u32), (HDR, 0));
    rig.fw(0).reset_vf(0);
    rig.drop_mkey(0, buf);
    rig.free(buf);
    rig.dealloc_pd(0, pd).ok();
    rig.assert_clean();
}
