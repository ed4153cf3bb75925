//! The core's bookkeeping per chunk and per image, without the bytes: the
//! engines run against scripted completions, so nothing waits, copies
//! payload or touches firmware. What is left is what the driver itself
//! costs on top of firmware and copies.
//!
//! Shared by core's divan benchmark (`cargo bench -p mlx5vf-core --bench
//! per_chunk`) and `mlx5vf bench --only per_chunk`, so both measure the same
//! loops.

use std::hint::black_box;
use std::vec::Vec;

use mlx5vf_core::ifc::migration::SaveResult;
use mlx5vf_core::load::{LoadConfig, LoadEngine, LoadStats, WriteStep};
use mlx5vf_core::save::{
    BufRef, ImageMode, OpenPlan, PrecopyPolicy, SaveAction, SaveConfig, SaveEngine, SaveStats,
    Segment,
};
use mlx5vf_core::stream::Header;
use mlx5vf_core::vfio::SaveMode;

/// The chunk (and image) size the loops account: the Linux driver's 8 MiB.
pub const CHUNK: u32 = 8 << 20;

/// Pages of a [`CHUNK`].
const CHUNK_PAGES: u32 = CHUNK / 4096;

/// What stopped a loop: the engine refused a step the script expected to
/// succeed (a regression in the engine, not a measurement).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unexpected(pub &'static str);

impl core::fmt::Display for Unexpected {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "bookkeeping loop: the engine refused {}", self.0)
    }
}

impl std::error::Error for Unexpected {}

/// One stop-copy stream of `chunks` chunks of [`CHUNK`] bytes through the
/// saving engine with `slots` slot buffers: per chunk a completion, the
/// actions it queues, and the reader consuming its header and payload.
///
/// # Errors
/// [`Unexpected`] when the engine refuses a step.
pub fn save_stream(slots: u8, chunks: u32) -> Result<SaveStats, Unexpected> {
    let cfg = SaveConfig {
        chunk_slots: slots,
        precopy: PrecopyPolicy::Chunked,
        ..SaveConfig::linux(ImageMode::Chunked, SaveMode::StopCopy)
    };
    let bufs: Vec<BufRef> = (0..u16::from(slots))
        .map(|index| BufRef {
            index,
            npages: CHUNK_PAGES,
        })
        .collect();
    let plan = OpenPlan {
        slot_pages: CHUNK_PAGES,
        slots,
        initial_pages: None,
        state_bytes: u64::from(CHUNK) * u64::from(chunks),
    };
    let mut e = SaveEngine::IDLE;
    e.open(cfg, &bufs).map_err(|_| Unexpected("open"))?;
    e.first_save(&plan).map_err(|_| Unexpected("first_save"))?;
    let mut in_flight = true;
    let mut done = 0u32;
    while done < chunks {
        while let Some(a) = e.poll_action() {
            if let SaveAction::Save(_) = a {
                in_flight = true;
            }
        }
        if in_flight {
            done += 1;
            let next = if done == chunks { 0 } else { CHUNK };
            e.handle_completion(
                SaveResult {
                    actual_image_size: CHUNK,
                    next_required_umem_size: next,
                },
                0,
            )
            .map_err(|_| Unexpected("a completion"))?;
            in_flight = false;
            continue;
        }
        // Read what is queued (header, then the chunk's bytes).
        let mut read_any = false;
        while let Ok(seg) = e.peek() {
            let n = match seg {
                Segment::Inline(b) => b.len() as u64,
                Segment::Buffer { len, .. } => len,
            };
            e.handle_consumed(black_box(n));
            read_any = true;
            if e.has_actions() {
                break;
            }
        }
        if !read_any && !e.has_actions() {
            return Err(Unexpected("to make progress (nothing to read, no action)"));
        }
    }
    Ok(e.stats())
}

/// One stream of `images` images of [`CHUNK`] bytes through the resuming
/// engine: per image its header, its payload reported as copied, and its
/// LOAD's start and end.
///
/// # Errors
/// [`Unexpected`] when the engine refuses a step.
pub fn load_stream(images: u32) -> Result<LoadStats, Unexpected> {
    let header = Header::fw_data(u64::from(CHUNK)).to_bytes();
    let mut e = LoadEngine::new(LoadConfig::default());
    let mut index = 0u16;
    for _ in 0..images {
        let (n, _) = e.write_small(&header).map_err(|_| Unexpected("a header"))?;
        if n != header.len() {
            return Err(Unexpected("a whole header"));
        }
        loop {
            match e.next_step() {
                WriteStep::Grow { npages } => {
                    e.add_segment(BufRef { index, npages })
                        .map_err(|_| Unexpected("a segment"))?;
                    index = index.wrapping_add(1);
                }
                WriteStep::Payload { len, .. } => {
                    if e.payload_written(len, 0)
                        .map_err(|_| Unexpected("payload"))?
                        .is_some()
                    {
                        break;
                    }
                }
                _ => return Err(Unexpected("to take payload")),
            }
        }
        let (buf, _) = e.next_due().ok_or(Unexpected("a due image"))?;
        e.mark_mapped(buf);
        e.load_started(buf)
            .map_err(|_| Unexpected("a LOAD start"))?;
        e.loaded(buf);
    }
    Ok(e.stats())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The loops do what they claim: every chunk and image is accounted.
    #[test]
    fn loops_account_every_chunk_and_image() {
        for slots in [1, 2, 8] {
            let s = save_stream(slots, 16).unwrap();
            assert_eq!(s.chunks, 16, "{slots} slots: {s:?}");
        }
        let l = load_stream(16).unwrap();
        assert_eq!(l.images, 16, "{l:?}");
    }
}
