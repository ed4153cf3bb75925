//! The device measures its firmware and tunes the saving policy: SAVEs of
//! two sizes give a SAVE's fixed cost and the rate (the device asks for
//! one smaller probe chunk to get the second size), and under
//! [`ChunkPolicy::Measured`] the chunk size follows
//! ([`tuned_chunk_size`]). Without a platform clock nothing is measured and
//! the configured size stays.

use core::num::NonZeroU64;

use super::Device;
use crate::hal::Hal;
use crate::ifc::migration::SaveResult;
use crate::save::{ChunkPolicy, FirmwareSpeed, tuned_chunk_size};

impl<H: Hal> Device<H> {
    /// What the device measured of its firmware, once it has both figures.
    pub fn firmware_speed(&self) -> Option<FirmwareSpeed> {
        self.speed.speed()
    }

    /// The chunk size a saving file opened now would start with: the tuned
    /// one (see [`Device::firmware_speed`]) or the configured one.
    pub fn chunk_size(&self) -> u64 {
        self.tuned_chunk().unwrap_or(self.cfg.chunk_size)
    }

    /// The chunk size the policy wants now: the tuned one once the speed is
    /// known under [`ChunkPolicy::Measured`], else `None` (keep what is
    /// configured or running).
    pub(super) fn tuned_chunk(&self) -> Option<u64> {
        match self.cfg.chunk_policy {
            ChunkPolicy::Fixed => None,
            ChunkPolicy::Measured { memory_cap } => self
                .speed
                .speed()
                .map(|s| tuned_chunk_size(s, memory_cap, self.cfg.chunk_slots)),
        }
    }

    /// A SAVE that started at `started_ns` delivered `output`: a rate
    /// sample, and the saving file's chunk size retuned if the policy now
    /// wants another.
    pub(super) fn measure_save(&mut self, started_ns: Option<NonZeroU64>, output: &[u8]) {
        let (Some(start), Some(end)) = (started_ns, self.hal.now_ns()) else {
            return;
        };
        if let Ok(r) = SaveResult::parse(output) {
            self.speed.observe_save(
                u64::from(r.actual_image_size),
                end.saturating_sub(start.get()),
            );
        }
        if !matches!(self.cfg.chunk_policy, ChunkPolicy::Measured { .. }) {
            return;
        }
        let chunk = match self.tuned_chunk() {
            Some(chunk) => chunk,
            None => match self.speed.probe_size() {
                Some(probe) => probe,
                None => return,
            },
        };
        if let Some(f) = self.saving.as_mut() {
            if f.engine.stats().chunk_size != chunk {
                f.engine.retune_chunk(chunk);
            }
        }
    }
}
