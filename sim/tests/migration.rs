//! Whole migrations driven with raw command bytes: the destination must end
//! with the source's digest.

mod common;

use common::*;
use mlx5vf_sim::{SuspendState, Syndrome};

const MIB: u64 = 1 << 20;
/// The Linux driver's chunk size cap.
const CHUNK_CAP: u64 = 8 * MIB;

/// Free a source/destination buffer pair and both PDs, resume the source,
/// and check nothing leaked.
fn teardown(rig: &mut Rig, src: End, dst: End, bufs: (Buf, Buf), pds: (u32, u32)) {
    rig.drop_mkey(src.fw, bufs.0);
    rig.drop_mkey(dst.fw, bufs.1);
    rig.free(bufs.0);
    rig.dealloc_pd(src.fw, pds.0).ok();
    rig.dealloc_pd(dst.fw, pds.1).ok();
    rig.assert_clean();
}

#[test]
fn non_chunk_migration_of_a_small_state() {
    let mut rig = Rig::new(&[
        spec("sim:state=20M,seed=3,chunks=off,precopy=off"),
        spec("sim:state=1M,seed=99,chunks=off,precopy=off,object=4K-64K"),
    ]);
    let (src, dst) = (rig.end(0, 0), rig.end(1, 0));
    let before = rig.fw(0).digest(0).unwrap();
    assert_ne!(before, rig.fw(1).digest(0).unwrap());
    rig.stop(0, src.vhca);
    rig.stop(1, dst.vhca);
    let (required, remaining) = rig.query_ok(0, src.vhca, false, false);
    assert_eq!(
        u64::from(required),
        20 * MIB,
        "state= is the exact image size"
    );
    assert_eq!(remaining, 0, "remaining_total_size is chunk-mode only");
    let pds = (rig.alloc_pd(0), rig.alloc_pd(1));
    let buf = rig.buffer(0, pds.0, u64::from(required));
    let dbuf = rig.share(1, pds.1, buf);
    let (actual, next) = rig.save_ok(0, src.vhca, false, false, buf, required);
    assert_eq!((actual, next), (required, 0));
    rig.load(1, dst.vhca, dbuf, actual).ok();
    assert_eq!(
        rig.fw(1).vf_state(0).unwrap().load.received,
        rig.fw(1).layout(0).unwrap().count()
    );
    rig.run(1, dst.vhca);
    rig.run(0, src.vhca);
    assert_eq!(rig.fw(1).digest(0).unwrap(), before);
    assert_eq!(rig.fw(0).digest(0).unwrap(), before);
    assert_eq!(
        rig.fw(1).layout(0),
        rig.fw(0).layout(0),
        "destination adopted the source's state"
    );
    teardown(&mut rig, src, dst, (buf, dbuf), pds);
}

#[test]
fn chunk_migration_between_two_vfs_of_one_pf() {
    let mut rig = Rig::one("sim:state=48M,vfs=2,object=64K-3M,seed=21");
    let (src, dst) = (rig.end(0, 0), rig.end(0, 1));
    assert_ne!(src.vhca, dst.vhca);
    let before = rig.fw(0).digest(0).unwrap();
    rig.stop(0, src.vhca);
    rig.stop(0, dst.vhca);
    let (required, total) = rig.query_ok(0, src.vhca, false, true);
    assert_eq!(total, 48 * MIB);
    assert!(u64::from(required) < 4 * MIB);
    let pds = (rig.alloc_pd(0), rig.alloc_pd(0));
    // Deliberately small (1 MiB) buffers: objects up to 3 MiB force growth.
    let mut buf = rig.buffer(0, pds.0, u64::from(required).max(MIB));
    let mut dbuf = rig.share(0, pds.1, buf);
    let images = stop_copy_chunks(&mut rig, src, dst, &mut buf, &mut dbuf, pds, false);
    assert!(images > 16, "{images} images");
    assert!(buf.len > MIB, "the buffer had to grow");
    rig.run(0, dst.vhca);
    assert_eq!(rig.fw(0).digest(1).unwrap(), before);
    rig.run(0, src.vhca);
    teardown(&mut rig, src, dst, (buf, dbuf), pds);
}

/// The > 4 GiB migration without pre-copy: only chunk mode can do it.
#[test]
fn chunk_migration_of_5g_state_stop_copy() {
    let mut rig = Rig::new(&[spec("sim:state=5G,seed=11"), spec("sim:state=1M,seed=2")]);
    let (src, dst) = (rig.end(0, 0), rig.end(1, 0));
    let before = rig.fw(0).digest(0).unwrap();
    rig.stop(0, src.vhca);
    rig.stop(1, dst.vhca);
    // Non-chunk QUERY cannot describe a 5 GiB image.
    rig.query(0, src.vhca, false, false)
        .refused(Syndrome::ImageExceeds32Bit);
    let (required, total) = rig.query_ok(0, src.vhca, false, true);
    assert_eq!(total, 5 << 30);
    let pds = (rig.alloc_pd(0), rig.alloc_pd(1));
    let mut buf = rig.buffer(0, pds.0, u64::from(required).max(CHUNK_CAP.min(total)));
    let mut dbuf = rig.share(1, pds.1, buf);
    let images = stop_copy_chunks(&mut rig, src, dst, &mut buf, &mut dbuf, pds, false);
    assert!(images >= 5 * 1024 / 24, "{images} images");
    assert!(buf.len > CHUNK_CAP, "objects above 8 MiB grew the buffer");
    rig.run(1, dst.vhca);
    assert_eq!(rig.fw(1).digest(0).unwrap(), before);
    rig.run(0, src.vhca);
    teardown(&mut rig, src, dst, (buf, dbuf), pds);
}

/// The > 4 GiB migration with PRE_COPY and a dirtying guest.
#[test]
fn chunk_migration_of_5g_state_with_precopy() {
    let mut rig = Rig::new(&[
        spec("sim:state=5G,seed=5,dirty=24M"),
        spec("sim:state=1M,seed=6"),
    ]);
    let (src, dst) = (rig.end(0, 0), rig.end(1, 0));
    rig.stop(1, dst.vhca);
    let pds = (rig.alloc_pd(0), rig.alloc_pd(1));
    // Opening the saving file: QUERY, then the initial image (inc=0, track=1).
    let (required, total) = rig.query_ok(0, src.vhca, false, true);
    let size = u64::from(required).max((16 * MIB).min(total));
    let mut pre = rig.buffer(0, pds.0, size);
    let mut dpre = rig.share(1, pds.1, pre);
    let (actual, _) = rig.save_ok(0, src.vhca, false, true, pre, pre.len as u32);
    rig.load(1, dst.vhca, dpre, actual).ok();
    assert!(rig.fw(0).vf_state(0).unwrap().tracking);
    // Pre-copy rounds (the precopy ioctl + read loop), bounded.
    let mut rounds = 0;
    let mut sent = u64::from(actual);
    while sent < 2 << 30 && rounds < 400 {
        let (req, _) = rig.query_ok(0, src.vhca, true, true);
        if u64::from(req) > pre.len {
            rig.drop_mkey(0, pre);
            rig.drop_mkey(1, dpre);
            rig.free(pre);
            pre = rig.buffer(0, pds.0, u64::from(req));
            dpre = rig.share(1, pds.1, pre);
        }
        let out = rig.save(0, src.vhca, true, true, pre, pre.len as u32);
        if out.status() != 0 {
            // The object grew past the buffer between QUERY and SAVE.
            out.refused(Syndrome::StateChanged);
            continue;
        }
        let actual = out.u32(8);
        rig.load(1, dst.vhca, dpre, actual).ok();
        sent += u64::from(actual);
        rounds += 1;
    }
    // The SAVE just merged the dirty set; the guest keeps running.
    assert_eq!(rig.fw(0).vf_state(0).unwrap().dirty_objects, 0);
    rig.fw(0).tick(0, 3);
    assert!(
        rig.fw(0).vf_state(0).unwrap().dirty_objects > 0,
        "the guest dirtied objects"
    );
    // PRE_COPY → PRE_COPY_P2P → STOP_COPY: suspend, then the final images.
    rig.suspend(0, src.vhca, false).ok();
    rig.query_ok(0, src.vhca, true, true); // one more tick while in RUNNING_P2P
    rig.suspend(0, src.vhca, true).ok();
    let before = rig.fw(0).digest(0).unwrap();
    let images = stop_copy_chunks(&mut rig, src, dst, &mut pre, &mut dpre, pds, true);
    assert!(images > 100, "{images} final images");
    assert!(
        !rig.fw(0).vf_state(0).unwrap().tracking,
        "the final save ended tracking"
    );
    let load = rig.fw(1).vf_state(0).unwrap().load;
    assert!(load.images as usize > rounds, "{load:?}");
    rig.run(1, dst.vhca);
    assert_eq!(rig.fw(1).digest(0).unwrap(), before);
    assert_eq!(
        rig.fw(1).vf_state(0).unwrap().suspend,
        SuspendState::Running
    );
    rig.run(0, src.vhca);
    teardown(&mut rig, src, dst, (pre, dpre), pds);
}

/// A host that takes DMA through a bounce buffer (the kernel model's
/// `vfio_dma_rw()`) gets SAVE and LOAD data in pieces no longer than it
/// says, and the migration is the same.
#[test]
fn data_comes_in_pieces_no_longer_than_the_host_takes() {
    let mut rig = Rig::new(&[
        spec("sim:state=2M,seed=3,chunks=off,precopy=off"),
        spec("sim:state=1M,seed=99,chunks=off,precopy=off,object=4K-64K"),
    ]);
    rig.mem.max_access = Some(12288);
    let (src, dst) = (rig.end(0, 0), rig.end(1, 0));
    let before = rig.fw(0).digest(0).unwrap();
    rig.stop(0, src.vhca);
    rig.stop(1, dst.vhca);
    let (required, _) = rig.query_ok(0, src.vhca, false, false);
    let pds = (rig.alloc_pd(0), rig.alloc_pd(1));
    let buf = rig.buffer(0, pds.0, u64::from(required));
    let dbuf = rig.share(1, pds.1, buf);
    let (actual, _) = rig.save_ok(0, src.vhca, false, false, buf, required);
    rig.load(1, dst.vhca, dbuf, actual).ok();
    assert_eq!(rig.mem.longest, 12288, "the host's size, never more");
    rig.run(1, dst.vhca);
    rig.run(0, src.vhca);
    assert_eq!(rig.fw(1).digest(0).unwrap(), before);
    teardown(&mut rig, src, dst, (buf, dbuf), pds);
}
