//! Saving-engine tests without a device: sizing, the chunk pipeline with
//! back-pressure, the exact Linux byte stream, PRE_COPY accounting and
//! hostile completions.

use std::vec;
use std::vec::Vec;

use super::*;
use crate::ifc::CmdStatus;
use crate::ifc::migration::MigrationStateSize;
use crate::ifc::migration::SaveResult;
use crate::stream::{Event, Reader, StreamInfoFlags, Tag, Verdict, crc32c};
use crate::vfio::SaveMode;

const MIB: u64 = 1 << 20;

fn q(required: u32, total: u64) -> MigrationStateSize {
    MigrationStateSize {
        required_umem_size: required,
        remaining_total_size: total,
        migration_state: 0,
    }
}

#[test]
fn open_sizes_follow_linux() {
    let chunk = SaveConfig::linux(ImageMode::Chunked, SaveMode::StopCopy);
    assert_eq!(
        plan_open(&chunk, q(MIB as u32, 1 << 30))
            .unwrap()
            .slot_pages,
        2048
    );
    // A first object above 8 MiB wins.
    assert_eq!(
        plan_open(&chunk, q(12 * MIB as u32, 1 << 30))
            .unwrap()
            .slot_pages,
        3072
    );
    // A small state does not get 8 MiB.
    assert_eq!(plan_open(&chunk, q(4096, 100_000)).unwrap().slot_pages, 25);
    assert_eq!(plan_open(&chunk, q(4096, 100_000)).unwrap().slots, 2);
    // Legacy: required, plus 10 % with tracking; one slot.
    let legacy = SaveConfig::linux(ImageMode::Single, SaveMode::StopCopy);
    let p = plan_open(&legacy, q(10 * MIB as u32, 0)).unwrap();
    assert_eq!((p.slot_pages, p.slots, p.initial_pages), (2560, 1, None));
    let pre = SaveConfig::linux(ImageMode::Single, SaveMode::PreCopy);
    let p = plan_open(&pre, q(10 * MIB as u32, 0)).unwrap();
    assert_eq!(p.slot_pages, 2816);
    assert_eq!(p.initial_pages, Some(2816));
    // The 10 % never pushes past the SAVE limit.
    let p = plan_open(&pre, q(0xF000_0000, 0)).unwrap();
    assert_eq!(p.slot_pages as u64 * 4096, MAX_SAVE_BUFFER);
    // Above the limit: refused before anything is allocated.
    assert_eq!(
        plan_open(&legacy, q(u32::MAX, 0)),
        Err(SaveError::TooLarge {
            required: u32::MAX as u64,
            limit: MAX_SAVE_BUFFER,
            image: ImageMode::Single
        })
    );
}

/// A scripted firmware for the engine: the state is `total` bytes in
/// objects of `obj` bytes, except every `big.1`-th object, which has
/// `big.0` bytes; a SAVE packs whole objects up to the buffer.
struct Script {
    remaining: u64,
    obj: u64,
    /// (size, period) of occasional larger objects; period 0: none.
    big: (u64, u64),
    /// Objects saved so far.
    done: u64,
}

impl Script {
    fn object(&self, n: u64) -> u64 {
        let size = match self.big {
            (size, period) if period > 0 && n % period == period - 1 => size,
            _ => self.obj,
        };
        size.min(self.remaining)
    }

    fn save(&mut self, size: u32) -> SaveResult {
        // As firmware: a buffer that cannot hold the next object is refused.
        let first = self.object(self.done);
        assert!(
            size as u64 >= first,
            "a {size}-byte SAVE cannot hold a {first}-byte object"
        );
        let mut image = 0u64;
        while self.remaining > 0 {
            let next = self.object(self.done);
            if image + next > size as u64 {
                break;
            }
            image += next;
            self.remaining -= next;
            self.done += 1;
        }
        let next = if self.remaining == 0 {
            0
        } else {
            self.object(self.done) as u32
        };
        SaveResult {
            actual_image_size: image as u32,
            next_required_umem_size: next,
        }
    }
}

/// Drives an engine like the device does, with buffers as plain numbers.
struct Harness {
    engine: SaveEngine,
    next_index: u16,
    live: Vec<BufRef>,
    fw: Script,
    stream: Vec<u8>,
    max_ready: usize,
}

impl Harness {
    fn alloc(&mut self, npages: u32) -> BufRef {
        let b = BufRef {
            index: self.next_index,
            npages,
        };
        self.next_index += 1;
        self.live.push(b);
        b
    }

    fn free(&mut self, b: BufRef) {
        self.live.retain(|x| x.index != b.index);
    }

    fn open(cfg: SaveConfig, total: u64, obj: u64) -> (Self, SaveRequest) {
        let plan = plan_open(&cfg, q(obj as u32, total)).unwrap();
        let placeholder = vec![
            BufRef {
                index: u16::MAX,
                npages: 1
            };
            plan.slots as usize
        ];
        let mut h = Self {
            engine: SaveEngine::new(cfg, &placeholder).unwrap(),
            next_index: 0,
            live: vec![],
            fw: Script {
                remaining: total,
                obj,
                big: (0, 0),
                done: 0,
            },
            stream: vec![],
            max_ready: 0,
        };
        let slots: Vec<BufRef> = (0..plan.slots).map(|_| h.alloc(plan.slot_pages)).collect();
        h.engine = SaveEngine::new(cfg, &slots).unwrap();
        h.engine.first_save(&plan).unwrap();
        let req = h.drain().expect("the first SAVE");
        (h, req)
    }

    /// Carries out the engine's actions as the device does; returns the
    /// SAVE it issued, if any.
    fn drain(&mut self) -> Option<SaveRequest> {
        let mut issued = None;
        while let Some(action) = self.engine.poll_action() {
            match action {
                SaveAction::Free(b) => self.free(b),
                SaveAction::Allocate { npages } => {
                    let b = self.alloc(npages);
                    self.engine.handle_buffer(b).unwrap();
                }
                SaveAction::Save(req) => {
                    assert!(issued.is_none(), "one SAVE at a time");
                    issued = Some(req);
                }
            }
        }
        issued
    }

    /// Completes a SAVE and starts whatever comes next; returns the next request.
    fn complete(&mut self, req: SaveRequest) -> Option<SaveRequest> {
        let r = self.fw.save(req.size);
        self.engine.handle_completion(r, 0).unwrap();
        self.max_ready = self.max_ready.max(self.engine.ready_chunks());
        assert!(self.engine.ready_chunks() <= self.engine.slot_count());
        self.drain()
    }

    /// Reads up to `max` bytes (payload bytes are represented by 0xee).
    fn read(&mut self, max: u64) -> Result<Option<SaveRequest>, Empty> {
        let seg = self.engine.peek()?;
        let n = match seg {
            Segment::Inline(b) => {
                let n = (b.len() as u64).min(max);
                self.stream.extend_from_slice(&b[..n as usize]);
                n
            }
            Segment::Buffer { len, .. } => {
                let n = len.min(max);
                self.stream.extend(std::iter::repeat_n(0xee, n as usize));
                n
            }
        };
        self.engine.handle_consumed(n);
        Ok(self.drain())
    }
}

#[test]
#[cfg_attr(
    miri,
    ignore = "moves MiBs of bytes: too slow under miri, runs in the normal suite"
)]
fn chunk_pipeline_holds_back_when_every_slot_is_unread() {
    // 64 MiB in 1 MiB objects: 8 chunks of 8 MiB.
    let (mut h, first) = Harness::open(
        SaveConfig::linux(ImageMode::Chunked, SaveMode::StopCopy),
        64 * MIB,
        MIB,
    );
    assert_eq!(first.kind, SaveKind::StopCopyChunk { slot: 0 });
    assert_eq!(first.scope, Scope::Full);
    assert_eq!(first.size as u64, 8 * MIB);
    // Complete two chunks without reading: the third is held back.
    let second = h.complete(first).unwrap();
    assert_eq!(second.kind, SaveKind::StopCopyChunk { slot: 1 });
    assert_eq!(second.scope, Scope::Incremental);
    assert!(h.complete(second).is_none());
    assert!(h.engine.is_held_back());
    assert_eq!(h.engine.ready_chunks(), 2);
    // Reading the whole first chunk releases slot 0 and starts the held SAVE.
    let mut started = None;
    while started.is_none() {
        started = h.read(1 << 20).unwrap();
    }
    let third = started.unwrap();
    assert_eq!(third.kind, SaveKind::StopCopyChunk { slot: 0 });
    let mut pending = Some(third);
    loop {
        if let Some(r) = pending.take() {
            pending = h.complete(r);
        }
        match h.read(3 << 20) {
            Ok(Some(r)) => pending = Some(r),
            Ok(None) => {}
            Err(Empty::EndOfStream) => break,
            Err(e) => assert_eq!(e, Empty::WouldBlock, "pending {pending:?}"),
        }
    }
    assert_eq!(h.engine.state(), FileState::Complete);
    assert_eq!(h.engine.stats().chunks, 8);
    assert_eq!(h.max_ready, 2);
    // Only the two slot buffers ever existed.
    assert_eq!(h.live.len(), 2);
}

#[test]
fn reopening_in_place_leaves_nothing_of_the_last_session() {
    // A session part-way through: a chunk saved, some of it read.
    let (mut h, first) = Harness::open(
        SaveConfig::linux(ImageMode::Chunked, SaveMode::StopCopy),
        4 * MIB,
        MIB,
    );
    let _ = h.complete(first);
    let _ = h.read(100).unwrap();
    assert_ne!(h.engine.position(), 0);
    let slots = [
        BufRef {
            index: 7,
            npages: 3,
        },
        BufRef {
            index: 8,
            npages: 3,
        },
    ];
    let cfg = SaveConfig::linux(ImageMode::Chunked, SaveMode::PreCopy);
    let new = SaveEngine::new(cfg, &slots).unwrap();
    h.engine.open(cfg, &slots).unwrap();
    assert_eq!(std::format!("{:?}", h.engine), std::format!("{new:?}"));
    // A refused open leaves the engine idle, not half the old session.
    assert_eq!(h.engine.open(cfg, &slots[..1]), Err(SaveError::WrongState));
    assert_eq!(
        std::format!("{:?}", h.engine),
        std::format!("{:?}", SaveEngine::IDLE)
    );
}

#[test]
#[cfg_attr(
    miri,
    ignore = "moves MiBs of bytes: too slow under miri, runs in the normal suite"
)]
fn linux_stream_bytes_are_exact() {
    // 20 MiB in 4 MiB objects; read everything and parse it back.
    let (mut h, first) = Harness::open(
        SaveConfig::linux(ImageMode::Chunked, SaveMode::StopCopy),
        20 * MIB,
        4 * MIB,
    );
    let mut pending = Some(first);
    loop {
        if let Some(r) = pending.take() {
            pending = h.complete(r);
        }
        match h.read(u64::MAX) {
            Ok(r) => pending = pending.or(r),
            Err(Empty::EndOfStream) => break,
            Err(e) => panic!("{e:?}"),
        }
    }
    // STOP_COPY_SIZE(8 MiB), then 8+8+4 MiB images, each behind a FW_DATA header.
    let s = &h.stream;
    assert_eq!(&s[..16], &[8, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0]);
    assert_eq!(&s[16..24], &(8 * MIB).to_le_bytes());
    let mut at = 24;
    for size in [8 * MIB, 8 * MIB, 4 * MIB] {
        assert_eq!(&s[at..at + 8], &size.to_le_bytes());
        assert_eq!(&s[at + 8..at + 16], &[0; 8]); // MANDATORY, FW_DATA
        at += 16 + size as usize;
    }
    assert_eq!(at, s.len());
}

#[test]
#[cfg_attr(
    miri,
    ignore = "moves MiBs of bytes: too slow under miri, runs in the normal suite"
)]
fn our_records_wrap_the_stream_and_verify() {
    let info = StreamInfo {
        version: crate::stream::STREAM_FORMAT_VERSION,
        flags: StreamInfoFlags::new().with_chunk_mode(true),
        page_size: 4096,
        chunk_size: 8 * MIB,
        chunk_slots: 2,
        producer: StreamInfo::producer_from("test"),
    };
    let cfg = SaveConfig {
        stream_info: Some(info),
        ..SaveConfig::linux(ImageMode::Chunked, SaveMode::StopCopy)
    };
    let (mut h, first) = Harness::open(cfg, 10 * MIB, MIB);
    // Feed completions with a CRC of the (0xee) payload bytes.
    let mut pending = Some(first);
    loop {
        if let Some(req) = pending.take() {
            let r = h.fw.save(req.size);
            let crc = crc32c::update(
                h.engine.payload_crc(),
                &vec![0xee; r.actual_image_size as usize],
            );
            h.engine.handle_completion(r, crc).unwrap();
            pending = h.drain();
        }
        match h.read(u64::MAX) {
            Ok(r) => pending = pending.or(r),
            Err(Empty::EndOfStream) => break,
            Err(e) => panic!("{e:?}"),
        }
    }
    let mut reader = Reader::new();
    let mut rest = &h.stream[..];
    let mut tags = vec![];
    while !rest.is_empty() {
        let step = reader.feed(rest).unwrap();
        for e in &step.events {
            if let Event::RecordStart { header, .. } = e {
                tags.push(header.tag);
            }
        }
        rest = &rest[step.consumed..];
    }
    assert_eq!(
        tags,
        [
            Tag::StreamInfo,
            Tag::StopCopySize,
            Tag::FwData,
            Tag::FwData,
            Tag::StreamEnd
        ]
    );
    assert_eq!(reader.verdict(), Verdict::Complete { verified: true });
}

#[test]
fn hostile_completions_are_refused() {
    let (mut h, first) = Harness::open(
        SaveConfig::linux(ImageMode::Chunked, SaveMode::StopCopy),
        32 * MIB,
        MIB,
    );
    let too_big = SaveResult {
        actual_image_size: first.size + 1,
        next_required_umem_size: 0,
    };
    assert_eq!(
        h.engine.check_completion(&too_big),
        Err(SaveError::ImageOverflow {
            actual: first.size + 1,
            buffer: first.size as u64
        })
    );
    assert!(h.engine.handle_completion(too_big, 0).is_err());
    assert_eq!(h.engine.state(), FileState::Error);
    assert_eq!(
        h.engine.failure(),
        Some(SaveFailure::Engine(SaveError::ImageOverflow {
            actual: first.size + 1,
            buffer: first.size as u64
        }))
    );
    assert_eq!(
        h.engine.handle_completion(too_big, 0),
        Err(SaveError::NoSaveInFlight)
    );

    let (mut h, _) = Harness::open(
        SaveConfig::linux(ImageMode::Chunked, SaveMode::StopCopy),
        32 * MIB,
        MIB,
    );
    let absurd = SaveResult {
        actual_image_size: 4096,
        next_required_umem_size: u32::MAX,
    };
    assert!(matches!(
        h.engine.handle_completion(absurd, 0),
        Err(SaveError::TooLarge { .. })
    ));
    assert_eq!(h.engine.state(), FileState::Error);
    // Nothing was queued for the refused image.
    assert_eq!(h.engine.queued_end(), 24);
}

#[test]
fn legacy_mode_is_one_image() {
    // Legacy QUERY reports the whole image as required.
    let (mut h, first) = Harness::open(
        SaveConfig::linux(ImageMode::Single, SaveMode::StopCopy),
        3 * MIB,
        3 * MIB,
    );
    assert_eq!(first.kind, SaveKind::StopCopyChunk { slot: 0 });
    assert_eq!(first.size as u64, 3 * MIB);
    let r = h.fw.save(first.size);
    assert_eq!(r.actual_image_size as u64, 3 * MIB);
    // Legacy ignores next_required_umem_size even if firmware sends one.
    let r = SaveResult {
        next_required_umem_size: 12345,
        ..r
    };
    h.engine.handle_completion(r, 0).unwrap();
    assert_eq!(h.drain(), None);
    assert_eq!(h.engine.state(), FileState::Complete);
}

#[test]
fn growing_a_slot_for_a_large_object() {
    let (mut h, first) = Harness::open(
        SaveConfig::linux(ImageMode::Chunked, SaveMode::StopCopy),
        64 * MIB,
        MIB,
    );
    // Firmware says the next chunk needs 12 MiB.
    let r = SaveResult {
        actual_image_size: first.size,
        next_required_umem_size: 12 * MIB as u32,
    };
    h.engine.handle_completion(r, 0).unwrap();
    // Slot 1's 8 MiB buffer goes, a 12 MiB one is asked for...
    let old = match h.engine.poll_action() {
        Some(SaveAction::Free(old)) => old,
        other => panic!("{other:?}"),
    };
    assert_eq!(old.npages, 2048);
    assert_eq!(
        h.engine.poll_action(),
        Some(SaveAction::Allocate { npages: 3072 })
    );
    assert_eq!(h.engine.poll_action(), None);
    // ... and the chunk starts into it once it arrives.
    let grown = BufRef {
        index: 77,
        npages: 3072,
    };
    h.engine.handle_buffer(grown).unwrap();
    match h.engine.poll_action() {
        Some(SaveAction::Save(req)) => {
            assert_eq!(req.buf, grown);
            assert_eq!(req.kind, SaveKind::StopCopyChunk { slot: 1 });
            assert_eq!(req.size as u64, 12 * MIB);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(h.engine.stats().grown, 1);
    // A buffer nobody asked for is refused (the driver keeps it).
    assert_eq!(h.engine.handle_buffer(grown), Err(SaveError::WrongState));
}

/// A retune replaces each slot buffer with one of the new size as it is
/// next filled, up or down, and keeps the slot count: memory stays within
/// slots x chunk; the stream moves every byte either way.
#[test]
fn retuning_resizes_the_slots_as_they_are_refilled() {
    // (new size, every 16th object's size, the pages each later chunk's
    // buffer may have): an object larger than the new size still gets a
    // buffer that holds it, and the next refill goes back to the new size.
    let obj = MIB;
    for (to, big, pages) in [
        (32 * MIB, MIB, &[8192u32][..]),
        (2 * MIB, MIB, &[512][..]),
        (2 * MIB, 9 * MIB, &[512, 2304][..]),
    ] {
        let total = 256 * MIB;
        let (mut h, first) = Harness::open(
            SaveConfig::linux(ImageMode::Chunked, SaveMode::StopCopy),
            total,
            obj,
        );
        h.fw.big = (big, 16);
        assert_eq!(h.engine.stats().chunk_size, 8 * MIB);
        h.engine.retune_chunk(to);
        assert_eq!(h.engine.stats().chunk_size, to);
        let mut next = h.complete(first);
        let (mut sizes, mut peak) = (vec![], 0u64);
        loop {
            let live: u64 = h.live.iter().map(|b| u64::from(b.npages) * 4096).sum();
            peak = peak.max(live);
            if let Some(req) = next.take() {
                sizes.push(req.buf.npages);
                next = h.complete(req);
                continue;
            }
            // Consume without keeping the payload (256 MiB of it would
            // take miri minutes).
            match h.engine.peek() {
                Ok(seg) => {
                    let n = match seg {
                        Segment::Inline(b) => b.len() as u64,
                        Segment::Buffer { len, .. } => len,
                    };
                    h.engine.handle_consumed(n);
                    next = h.drain();
                }
                Err(Empty::EndOfStream) => break,
                Err(e) => panic!("{e:?}"),
            }
        }
        // Every chunk after the first goes into a buffer of the new size
        // (or of an object, if larger).
        assert!(sizes.iter().all(|p| pages.contains(p)), "{to}: {sizes:?}");
        assert_eq!(h.engine.stats().fw_data_bytes, total);
        // Two slots of the largest of the old size, the new one and an
        // object, at most (an old buffer is freed before its successor is
        // allocated).
        assert!(peak <= 2 * to.max(8 * MIB).max(big), "{to}: peak {peak}");
        assert_eq!(h.live.len(), 2);
    }
}

mod precopy;
