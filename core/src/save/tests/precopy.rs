//! PRE_COPY: the Linux accounting, REINIT, BAD_RES_STATE recovery, and
//! chunked PRE_COPY rounds through the slots.

use super::*;

#[test]
#[cfg_attr(
    miri,
    ignore = "moves MiBs of bytes: too slow under miri, runs in the normal suite"
)]
fn precopy_accounting() {
    let (mut h, first) = Harness::open(
        SaveConfig::linux(ImageMode::Chunked, SaveMode::PreCopy),
        32 * MIB,
        MIB,
    );
    assert_eq!(first.kind, SaveKind::Initial);
    assert_eq!(
        (first.scope, first.tracking),
        (Scope::Full, Tracking::Track)
    );
    // Before the initial SAVE completes: only the STOP_COPY_SIZE record.
    assert_eq!(
        h.engine.precopy_info(0, 0, false).unwrap().initial_bytes,
        24
    );
    assert_eq!(h.read(u64::MAX), Ok(None));
    assert_eq!(h.read(u64::MAX), Err(Empty::WouldBlock));
    assert!(h.complete(first).is_none());
    assert_eq!(h.engine.state(), FileState::PreCopy);
    // initial = 24 + 16 + 8 MiB, of which 24 were read.
    let info = h.engine.precopy_info(MIB, 0, false).unwrap();
    assert_eq!(info.initial_bytes, 16 + 8 * MIB);
    assert_eq!((info.dirty_bytes, h.engine.has_actions()), (0, false));
    while h.read(u64::MAX).is_ok() {}
    assert_eq!(h.read(1), Err(Empty::NoMessage));
    // Drained and firmware has 1 MiB: dirty = 0 + 1 MiB, start a SAVE.
    let live = h.live.len();
    let info = h.engine.precopy_info(MIB, 0, false).unwrap();
    assert_eq!(
        info,
        PrecopyInfo {
            initial_bytes: 0,
            dirty_bytes: MIB,
            reinit: false
        }
    );
    let req = h.drain().expect("an incremental SAVE");
    assert_eq!(req.kind, SaveKind::PreCopy { initial: false });
    // The initial 8 MiB buffer came back after reading and is reused.
    assert_eq!((req.buf.npages, h.live.len()), (2048, live));
    assert_eq!(
        (req.scope, req.tracking),
        (Scope::Incremental, Tracking::Track)
    );
    // While it is in flight a blocking reader waits instead of seeing ENOMSG.
    assert_eq!(h.engine.peek(), Err(Empty::WouldBlock));
    assert!(h.complete(req).is_none());
    // Unread bytes count as dirty now.
    let info = h.engine.precopy_info(0, 0, false).unwrap();
    assert_eq!(info.dirty_bytes, 16 + 8 * MIB);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "moves MiBs of bytes: too slow under miri, runs in the normal suite"
)]
fn reinit_restarts_the_initial_bytes() {
    let (mut h, first) = Harness::open(
        SaveConfig::linux(ImageMode::Chunked, SaveMode::PreCopy),
        32 * MIB,
        MIB,
    );
    assert!(h.complete(first).is_none());
    // Read part of the initial image, then firmware reports new initial data.
    h.read(1000).unwrap();
    let unread = h.engine.queued_end() - h.engine.position();
    let info = h.engine.precopy_info(2 * MIB, 0, true).unwrap();
    assert!(info.reinit);
    assert_eq!(info.initial_bytes, unread + 2 * MIB);
    assert_eq!(info.dirty_bytes, 0);
    // Unread images: the new initial data waits for the drain.
    assert!(!h.engine.has_actions());
    let info = h.engine.precopy_info(2 * MIB, 0, false).unwrap();
    assert_eq!(
        (info.initial_bytes, info.reinit, h.engine.has_actions()),
        (unread + 2 * MIB, false, false)
    );
    while h.read(u64::MAX).is_ok() {}
    // Drained: still initial, and now its SAVE starts, marked initial.
    let info = h.engine.precopy_info(2 * MIB, 0, false).unwrap();
    assert_eq!((info.initial_bytes, info.dirty_bytes), (2 * MIB, 0));
    let req = h.drain().expect("the new initial data's SAVE");
    assert_eq!(req.kind, SaveKind::PreCopy { initial: true });
    let image = SaveResult {
        actual_image_size: 2 * MIB as u32,
        next_required_umem_size: 0,
    };
    h.engine.handle_completion(image, 0).unwrap();
    assert!(h.drain().is_none());
    // The new chunk and its header count as initial bytes.
    let info = h.engine.precopy_info(0, 0, false).unwrap();
    assert_eq!(info.initial_bytes, 16 + 2 * MIB);
    assert!(!info.reinit);
    // Reading it all brings initial bytes to zero; later data is dirty again.
    while h.read(u64::MAX).is_ok() {}
    let info = h.engine.precopy_info(MIB, 0, false).unwrap();
    assert_eq!((info.initial_bytes, info.dirty_bytes), (0, MIB));
}

/// Fuzz find (save_engine, bug 3): every REINIT started a SAVE even with
/// images unread, so REINITs with nothing read outgrew the image queue and
/// failed the file. Now the queue never grows while images are unread.
#[test]
fn reinits_with_nothing_read_never_outgrow_the_queue() {
    let (mut h, first) = Harness::open(
        SaveConfig::linux(ImageMode::Chunked, SaveMode::PreCopy),
        4 * MIB,
        MIB,
    );
    assert!(h.complete(first).is_none());
    let queued = h.engine.queued_end();
    for _ in 0..64 {
        let info = h.engine.precopy_info(MIB, 0, true).unwrap();
        assert!(info.reinit);
        assert!(!h.engine.has_actions());
    }
    assert_eq!(h.engine.queued_end(), queued);
    assert_ne!(h.engine.state(), FileState::Error);
}

#[test]
fn bad_res_state_during_precopy_is_recoverable() {
    let cfg = SaveConfig::linux(ImageMode::Chunked, SaveMode::PreCopy);
    let (mut h, _) = Harness::open(cfg, 32 * MIB, MIB);
    h.engine
        .handle_save_failed(SaveFailure::Refused(CmdStatus::BadResStateErr))
        .unwrap();
    // The failed buffer went to the available list: nothing to free.
    assert!(!h.engine.has_actions());
    assert_eq!(h.engine.state(), FileState::PreCopyError);
    assert_eq!(h.engine.failure(), None);
    assert!(h.engine.in_flight().is_none());
    // The final save then takes a full image, into slot 0.
    h.engine.start_final(4096).unwrap();
    let final_req = h.drain().unwrap();
    assert_eq!(final_req.kind, SaveKind::StopCopyChunk { slot: 0 });
    assert_eq!(
        (final_req.scope, final_req.tracking),
        (Scope::Full, Tracking::Untracked)
    );
    // The failed buffer is reused by the next non-slot SAVE.
    let (mut h, first) = Harness::open(cfg, 32 * MIB, MIB);
    h.engine
        .handle_save_failed(SaveFailure::Refused(CmdStatus::BadResStateErr))
        .unwrap();
    h.engine.start_cleanup(4096).unwrap();
    assert_eq!(h.drain().map(|r| r.buf), Some(first.buf));
    // Any other failure is fatal, and says why.
    let (mut h, _) = Harness::open(cfg, 32 * MIB, MIB);
    let refused = SaveFailure::Refused(CmdStatus::BadParamErr);
    h.engine.handle_save_failed(refused).unwrap();
    assert_eq!(h.engine.state(), FileState::Error);
    assert_eq!(h.engine.failure(), Some(refused));
    assert_eq!(h.engine.peek(), Err(Empty::Error));
    // A stop-copy chunk failing with BAD_RES_STATE is fatal too.
    let (mut h, _) = Harness::open(
        SaveConfig::linux(ImageMode::Chunked, SaveMode::StopCopy),
        32 * MIB,
        MIB,
    );
    h.engine
        .handle_save_failed(SaveFailure::Refused(CmdStatus::BadResStateErr))
        .unwrap();
    assert_eq!(h.engine.state(), FileState::Error);
}

#[test]
fn failing_drops_what_depended_on_the_file_and_keeps_the_first_reason() {
    let cfg = SaveConfig::linux(ImageMode::Chunked, SaveMode::StopCopy);
    let (mut h, first) = Harness::open(cfg, 64 * MIB, MIB);
    // The next chunk needs a bigger slot 1: a free and an allocation queue.
    let r = SaveResult {
        actual_image_size: first.size,
        next_required_umem_size: 12 * MIB as u32,
    };
    h.engine.handle_completion(r, 0).unwrap();
    // The allocation fails: the file fails, the allocation is forgotten,
    // the free still runs.
    h.engine.fail(SaveFailure::NotStarted);
    h.engine.fail(SaveFailure::Abandoned);
    assert_eq!(h.engine.failure(), Some(SaveFailure::NotStarted));
    assert!(matches!(h.engine.poll_action(), Some(SaveAction::Free(_))));
    assert_eq!(h.engine.poll_action(), None);
    let late = BufRef {
        index: 500,
        npages: 3072,
    };
    assert_eq!(h.engine.handle_buffer(late), Err(SaveError::WrongState));
}

/// A chunked PRE_COPY round moves what firmware held when it started: a
/// workload that dirties as fast as chunks are saved (firmware always has
/// a next chunk) cannot extend the round without end.
#[test]
#[cfg_attr(
    miri,
    ignore = "moves MiBs of bytes: too slow under miri, runs in the normal suite"
)]
fn a_chunked_precopy_round_ends_when_its_budget_is_spent() {
    let cfg = SaveConfig {
        precopy: PrecopyPolicy::Chunked,
        ..SaveConfig::linux(ImageMode::Chunked, SaveMode::PreCopy)
    };
    // 16 MiB of state: a budget of two 8 MiB chunks.
    let (mut h, first) = Harness::open(cfg, 16 * MIB, MIB);
    assert_eq!(
        first.kind,
        SaveKind::PreCopyChunk {
            slot: 0,
            initial: true
        }
    );
    assert_eq!(
        (first.scope, first.tracking),
        (Scope::Full, Tracking::Track)
    );
    // No fresh buffer: the slots are all the memory PRE_COPY uses.
    assert_eq!(h.live.len(), 2);
    let busy = SaveResult {
        actual_image_size: 8 * MIB as u32,
        next_required_umem_size: MIB as u32,
    };
    h.engine.handle_completion(busy, 0).unwrap();
    let second = h.drain().expect("the chain continues into slot 1");
    assert_eq!(
        second.kind,
        SaveKind::PreCopyChunk {
            slot: 1,
            initial: true
        }
    );
    assert_eq!(second.scope, Scope::Incremental);
    // Both slots unread is back-pressure, not the end: read one chunk...
    h.engine.handle_completion(busy, 0).unwrap();
    assert_eq!(h.drain(), None);
    assert_eq!(h.engine.in_flight(), None);
    // ... the budget (16 MiB) is spent: reading frees slots but starts
    // nothing, and the reader reaches the round's end.
    while h.read(u64::MAX).is_ok() {}
    assert_eq!(h.engine.peek(), Err(Empty::NoMessage));
    assert_eq!(h.engine.state(), FileState::PreCopy);
    // The next round starts from precopy-info with what firmware holds now.
    let info = h.engine.precopy_info(MIB, 5 * MIB, false).unwrap();
    assert_eq!((info.initial_bytes, info.dirty_bytes), (0, 5 * MIB));
    let next = h.drain().expect("a new round");
    assert_eq!(
        next.kind,
        SaveKind::PreCopyChunk {
            slot: 0,
            initial: false
        }
    );
}

/// Fuzz find (save_engine): a chunked PRE_COPY chunk refused with
/// BAD_RES_STATE left its slot marked busy with nothing queued, so the
/// final save was held back forever and the reader waited for nothing.
#[test]
fn a_failed_precopy_chunk_gives_its_slot_back() {
    let cfg = SaveConfig {
        precopy: PrecopyPolicy::Chunked,
        chunk_slots: 1,
        ..SaveConfig::linux(ImageMode::Chunked, SaveMode::PreCopy)
    };
    let (mut h, first) = Harness::open(cfg, 4 * MIB, MIB);
    assert!(matches!(first.kind, SaveKind::PreCopyChunk { slot: 0, .. }));
    h.engine
        .handle_save_failed(SaveFailure::Refused(CmdStatus::BadResStateErr))
        .unwrap();
    assert_eq!(h.engine.state(), FileState::PreCopyError);
    assert!(h.drain().is_none());
    // The final save finds slot 0 usable (it allocates a buffer for it):
    // it is not held back behind a slot nothing will ever free.
    h.engine.start_final(MIB).unwrap();
    assert!(!h.engine.is_held_back());
    let fin = h.drain().expect("the final SAVE starts");
    assert_eq!(fin.kind, SaveKind::StopCopyChunk { slot: 0 });
    assert_eq!(fin.scope, Scope::Full);
}
