//! The device measures its firmware and tunes the saving policy: SAVEs of
//! two sizes give a SAVE's fixed cost and the rate (the device asks for
//! one smaller probe chunk to get the second size). Under
//! [`ChunkPolicy::Measured`] the chunk size then follows: before the stop
//! for throughput ([`tuned_chunk_size`]), from the stop on for downtime,
//! from what the stop has to move ([`downtime_chunk_size`]). Without a
//! platform clock nothing is measured and the configured size stays.
//!
//! Tried and dropped: chunks that taper as a chain drains (the downtime
//! size from what remains, chunk by chunk). Under the sim's timing model
//! the many small last chunks cost more in fixed costs than the shorter
//! tail saved (4 GiB at 2 MiB dirty per tick: 0.16 s of downtime against
//! 0.08 s).

use core::num::NonZeroU64;

use super::Device;
use crate::hal::Hal;
use crate::ifc::migration::SaveResult;
use crate::save::{ChunkPolicy, FirmwareSpeed, downtime_chunk_size, tuned_chunk_size};

impl<H: Hal> Device<H> {
    /// What the device measured of its firmware, once it has both figures.
    pub fn firmware_speed(&self) -> Option<FirmwareSpeed> {
        self.speed.speed()
    }

    /// The chunk size the saving policy used last (the open file's, or the
    /// last file's): tuned, or as configured.
    pub fn chunk_size(&self) -> u64 {
        self.saving
            .as_ref()
            .map_or(self.last_chunk_size, |f| f.engine.stats().chunk_size)
    }

    /// The chunk size the policy wants: under [`ChunkPolicy::Measured`],
    /// once the speed is known, the throughput size or, with `stop_bytes`
    /// left to move at the stop, the downtime size; else `None` (keep what
    /// is configured or running).
    pub(super) fn wanted_chunk(&self, stop_bytes: Option<u64>) -> Option<u64> {
        let ChunkPolicy::Measured { memory_cap } = self.cfg.chunk_policy else {
            return None;
        };
        let speed = self.speed.speed()?;
        let slots = self.cfg.chunk_slots;
        Some(match stop_bytes {
            Some(bytes) => downtime_chunk_size(speed, memory_cap, slots, bytes),
            None => tuned_chunk_size(speed, memory_cap, slots),
        })
    }

    /// The open saving file's chunk size becomes `chunk` from its next
    /// chunk on.
    pub(super) fn retune_saving(&mut self, chunk: u64) {
        if let Some(f) = self.saving.as_mut() {
            if f.engine.stats().chunk_size != chunk {
                f.engine.retune_chunk(chunk);
            }
            self.last_chunk_size = f.engine.stats().chunk_size;
        }
    }

    /// The stop: `stop_bytes` remain to be saved (firmware's answer when
    /// STOP_COPY begins). From now on the chunks are sized for downtime.
    pub(super) fn tune_for_stop(&mut self, stop_bytes: u64) {
        if let Some(f) = self.saving.as_mut() {
            f.stop_bytes = Some(stop_bytes);
        }
        if let Some(chunk) = self.wanted_chunk(Some(stop_bytes)) {
            self.retune_saving(chunk);
        }
    }

    /// A SAVE that started at `started_ns` delivered `output`: a rate
    /// sample, and the saving file's chunk size retuned if the policy now
    /// wants another (or a probe chunk, to measure a second size).
    pub(super) fn measure_save(&mut self, started_ns: Option<NonZeroU64>, output: &[u8]) {
        let (Some(start), Some(end)) = (started_ns, self.hal.now_ns()) else {
            return;
        };
        let image = SaveResult::parse(output).map_or(0, |r| u64::from(r.actual_image_size));
        self.speed
            .observe_save(image, end.saturating_sub(start.get()));
        if !matches!(self.cfg.chunk_policy, ChunkPolicy::Measured { .. }) {
            return;
        }
        let stop_bytes = self.saving.as_ref().and_then(|f| f.stop_bytes);
        let chunk = match self.wanted_chunk(stop_bytes) {
            Some(chunk) => chunk,
            None => match self.speed.probe_size() {
                Some(probe) => probe,
                None => return,
            },
        };
        self.retune_saving(chunk);
    }
}
