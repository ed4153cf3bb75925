//! Every way an image can be refused on LOAD, and that a refused LOAD leaves
//! the destination as it was.

mod common;

use common::*;
use mlx5vf_sim::image::{ImageHeader, RecordHeader, checksum};
use mlx5vf_sim::{Dma, DmaFault, Syndrome};

const MIB: u64 = 1 << 20;

/// A source that saved its state as several chunk images (one buffer per
/// image, so they can be replayed in any order), and a stopped destination.
struct Setup {
    rig: Rig,
    src: End,
    dst: End,
    pds: (u32, u32),
    /// (source-side buffer, destination mkey over it, image size)
    images: Vec<(Buf, Buf, u32)>,
}

fn save_all(rig: &mut Rig, src: End, dst: End, pds: (u32, u32), out: &mut Vec<(Buf, Buf, u32)>) {
    let mut inc = false;
    loop {
        let buf = rig.buffer(src.fw, pds.0, MIB);
        let dbuf = rig.share(dst.fw, pds.1, buf);
        let (actual, next) = rig.save_ok(src.fw, src.vhca, inc, false, buf, MIB as u32);
        out.push((buf, dbuf, actual));
        inc = true;
        if next == 0 {
            return;
        }
    }
}

fn setup(dst_spec: &str) -> Setup {
    let mut rig = Rig::new(&[spec("sim:state=3M,object=64K-512K,seed=4"), spec(dst_spec)]);
    let (src, dst) = (rig.end(0, 0), rig.end(1, 0));
    rig.stop(0, src.vhca);
    rig.stop(1, dst.vhca);
    let pds = (rig.alloc_pd(0), rig.alloc_pd(1));
    let mut images = Vec::new();
    save_all(&mut rig, src, dst, pds, &mut images);
    assert!(images.len() >= 4, "{} images", images.len());
    Setup {
        rig,
        src,
        dst,
        pds,
        images,
    }
}

impl Setup {
    fn load(&mut self, i: usize) -> Out {
        let (_, dbuf, size) = self.images[i];
        self.rig.load(self.dst.fw, self.dst.vhca, dbuf, size)
    }
    fn bytes(&mut self, i: usize) -> &mut Vec<u8> {
        let iova = self.images[i].0.iova;
        self.rig.mem.bytes_mut(iova)
    }
    /// Assert `out` is `s` and the destination did not change.
    #[track_caller]
    fn refused_untouched(&mut self, out: Out, s: Syndrome) {
        out.refused(s);
    }
    fn finish(mut self) {
        for (buf, dbuf, _) in std::mem::take(&mut self.images) {
            self.rig.drop_mkey(self.src.fw, buf);
            self.rig.drop_mkey(self.dst.fw, dbuf);
            self.rig.free(buf);
        }
        self.rig.dealloc_pd(0, self.pds.0).ok();
        self.rig.dealloc_pd(1, self.pds.1).ok();
        self.rig.assert_clean();
    }
}

/// Run `f` on a copy of image `i`'s bytes, LOAD it, restore the bytes, and
/// check the refusal left the destination untouched.
fn tampered(s: &mut Setup, i: usize, f: impl FnOnce(&mut Vec<u8>) -> Option<u32>, want: Syndrome) {
    let before = (s.rig.fw(1).digest(0), s.rig.fw(1).vf_state(0));
    let saved = s.bytes(i).clone();
    let size = f(s.bytes(i)).unwrap_or(s.images[i].2);
    let (_, dbuf, _) = s.images[i];
    let out = s.rig.load(1, s.dst.vhca, dbuf, size);
    *s.bytes(i) = saved;
    out.refused(want);
    assert_eq!(
        before,
        (s.rig.fw(1).digest(0), s.rig.fw(1).vf_state(0)),
        "refused LOAD changed the destination"
    );
}

/// Rewrite an image header through the sim's own format helpers.
fn rewrite_header(bytes: &mut [u8], f: impl FnOnce(&mut ImageHeader)) {
    let mut h = ImageHeader::decode(bytes[..80].try_into().unwrap()).unwrap();
    f(&mut h);
    bytes[..80].copy_from_slice(&h.encode());
}

#[test]
fn corrupted_foreign_and_misplaced_images_are_refused() {
    let mut s = setup("sim:state=1M,seed=8,object=4K-64K");
    let dst_before = s.rig.fw(1).digest(0).unwrap();
    // Continuation before any full start.
    let out = s.load(1);
    s.refused_untouched(out, Syndrome::ImageNoFullStart);
    // Truncated / length mismatch.
    tampered(&mut s, 0, |_| Some(79), Syndrome::ImageTruncated);
    tampered(
        &mut s,
        0,
        |b| Some(u32::try_from(b.len()).unwrap().min(1 << 20) - 8),
        Syndrome::ImageLengthMismatch,
    );
    // Foreign or corrupted headers.
    tampered(
        &mut s,
        0,
        |b| {
            b[0] ^= 0xff;
            None
        },
        Syndrome::ImageBadMagic,
    );
    tampered(
        &mut s,
        0,
        |b| {
            b[4] = 2;
            None
        },
        Syndrome::ImageBadModel,
    );
    tampered(
        &mut s,
        0,
        |b| {
            b[30] ^= 1;
            None
        },
        Syndrome::ImageHeaderChecksum,
    );
    tampered(
        &mut s,
        0,
        |b| {
            b[6] = 3; // unknown kind, checksum made valid again
            let sum = checksum(&b[..72]);
            b[72..80].copy_from_slice(&sum.to_le_bytes());
            None
        },
        Syndrome::ImageBadKind,
    );
    tampered(
        &mut s,
        0,
        |b| {
            rewrite_header(b, |h| h.params.object_min = 0);
            None
        },
        Syndrome::ImageBadParams,
    );
    tampered(
        &mut s,
        0,
        |b| {
            rewrite_header(b, |h| h.sequence = 1);
            None
        },
        Syndrome::ImageOutOfOrder,
    );
    // Records.
    tampered(
        &mut s,
        0,
        |b| {
            b[84] ^= 1;
            None
        },
        Syndrome::RecordBadHeader,
    );
    tampered(
        &mut s,
        0,
        |b| {
            let r = RecordHeader {
                index: 9999,
                version: 0,
                size: 1,
            };
            b[80..112].copy_from_slice(&r.encode());
            None
        },
        Syndrome::RecordBadIndex,
    );
    tampered(
        &mut s,
        0,
        |b| {
            let r = RecordHeader {
                index: 0,
                version: 0,
                size: 12345,
            };
            b[80..112].copy_from_slice(&r.encode());
            None
        },
        Syndrome::RecordBadSize,
    );
    tampered(
        &mut s,
        0,
        |b| {
            b[5000] ^= 0x40;
            None
        },
        Syndrome::RecordContentMismatch,
    );
    tampered(
        &mut s,
        0,
        |b| {
            // Same header, but the record claims a newer version.
            let mut r = RecordHeader::decode(b[80..112].try_into().unwrap()).unwrap();
            r.version += 1;
            b[80..112].copy_from_slice(&r.encode());
            None
        },
        Syndrome::RecordContentMismatch,
    );
    assert_eq!(s.rig.fw(1).digest(0).unwrap(), dst_before);

    // The real thing, in order, with misplaced images refused on the way.
    s.load(0).ok();
    s.load(1).ok();
    let out = s.load(1);
    s.refused_untouched(out, Syndrome::ImageDuplicate);
    let out = s.load(3);
    s.refused_untouched(out, Syndrome::ImageOutOfOrder);
    tampered(
        &mut s,
        2,
        |b| {
            rewrite_header(b, |h| h.session ^= 1);
            None
        },
        Syndrome::ImageSessionMismatch,
    );
    tampered(
        &mut s,
        2,
        |b| {
            rewrite_header(b, |h| h.params.seed ^= 1);
            None
        },
        Syndrome::ImageParamsMismatch,
    );
    // Not resumable while objects are missing.
    s.rig
        .resume(1, s.dst.vhca, false)
        .refused(Syndrome::IncompleteImage);
    assert!(!s.rig.fw(1).vf_state(0).unwrap().load.is_complete());
    for i in 2..s.images.len() {
        s.load(i).ok();
    }
    s.rig.run(1, s.dst.vhca);
    assert_eq!(s.rig.fw(1).digest(0), s.rig.fw(0).digest(0));
    s.rig.run(0, s.src.vhca);
    s.finish();
}

#[test]
fn without_multi_load_one_image_only() {
    let mut s = setup("sim:state=1M,precopy=off");
    let n = s.images.len();
    for i in 0..n {
        s.load(i).ok(); // the chunks of the one full image are fine
    }
    let out = s.load(0);
    s.refused_untouched(out, Syndrome::SecondLoad);
    // After RESUME the load session is over: a new migration may start.
    s.rig.run(1, s.dst.vhca);
    s.rig.stop(1, s.dst.vhca);
    s.load(0).ok();
    s.rig.reset_vf_for_test();
    s.finish();
}

trait ResetForTest {
    fn reset_vf_for_test(&mut self);
}

impl ResetForTest for Rig {
    fn reset_vf_for_test(&mut self) {
        self.fw(1).reset_vf(0);
        assert!(
            self.fw(1).vf_state(0).unwrap().load.is_complete(),
            "reset drops the partial load"
        );
    }
}

#[test]
fn multi_load_accepts_a_new_full_start() {
    let mut s = setup("sim:state=1M");
    s.load(0).ok();
    s.load(1).ok();
    // A fresh full image (e.g. after a PRE_COPY error) restarts the load.
    let mut second = Vec::new();
    let (rig, src, dst, pds) = (&mut s.rig, s.src, s.dst, s.pds);
    save_all(rig, src, dst, pds, &mut second);
    let first_len = s.images.len();
    s.images.extend(second);
    s.load(first_len).ok();
    assert_eq!(s.rig.fw(1).vf_state(0).unwrap().load.images, 1);
    // The old session's images are now from another session.
    let out = s.load(2);
    s.refused_untouched(out, Syndrome::ImageSessionMismatch);
    for i in first_len + 1..s.images.len() {
        s.load(i).ok();
    }
    assert_eq!(s.rig.fw(1).digest(0), s.rig.fw(0).digest(0));
    s.rig.run(1, s.dst.vhca);
    s.rig.run(0, s.src.vhca);
    s.finish();
}

/// Host memory that changes a byte between LOAD's verify and apply passes.
struct FlipOnSecondRead<'a> {
    mem: &'a mut HostMem,
    target: u64,
    seen: u32,
}

impl Dma for FlipOnSecondRead<'_> {
    fn dma_write(
        &mut self,
        iova: u64,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> Result<(), DmaFault> {
        self.mem.dma_write(iova, len, fill)
    }
    fn dma_read(
        &mut self,
        iova: u64,
        len: usize,
        consume: &mut dyn FnMut(&[u8]),
    ) -> Result<(), DmaFault> {
        let (target, seen) = (self.target, &mut self.seen);
        self.mem.dma_read(iova, len, &mut |s| {
            if (iova..iova + s.len() as u64).contains(&target) {
                *seen += 1;
                if *seen >= 2 {
                    let mut copy = s.to_vec();
                    copy[(target - iova) as usize] ^= 1;
                    return consume(&copy);
                }
            }
            consume(s)
        })
    }
}

#[test]
fn memory_changing_under_load_is_an_internal_error() {
    let mut s = setup("sim:state=1M");
    let (buf, dbuf, size) = s.images[0];
    let before = s.rig.fw(1).digest(0);
    let Rig { fws, mem, .. } = &mut s.rig;
    let mut flaky = FlipOnSecondRead {
        mem,
        target: buf.iova + 80 + 24,
        seen: 0,
    };
    let mut out = vec![0u8; 16];
    fws[1]
        .exec(
            &Rig::load_cmd(s.dst.vhca, dbuf, size).0,
            &mut out,
            &mut flaky,
        )
        .unwrap();
    Out(out).refused(Syndrome::ImageChangedDuringLoad);
    assert_eq!(
        before,
        s.rig.fw(1).digest(0),
        "recheck happens before anything is applied"
    );
    s.finish();
}
