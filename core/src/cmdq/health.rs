//! Is the firmware alive? From the health buffer's syndrome and the health
//! counter, which firmware keeps changing while it runs
//! (`reference/mlx5-ifc.md` §4.1; rdma-core samples it every second and
//! gives up after three unchanged samples).
//!
//! The monitor is fed samples with the caller's time; it never reads a
//! register or a clock itself.

use core::time::Duration;

use super::error::CmdqError;
use super::iseg::ALL_ONES;
use super::queue::Instant;

/// The counter bits firmware advances.
const COUNTER_MASK: u32 = 0x00ff_ffff;

/// One reading of the health registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct HealthSample {
    /// `health_counter`.
    pub counter: u32,
    /// The health word at [`iseg::HEALTH_SYND`](super::iseg::HEALTH_SYND):
    /// `irisc_index` (31:24), `synd` (23:16), `ext_synd` (15:0).
    pub syndrome_word: u32,
    /// `health.fw_ver` (all ones: the device is gone).
    pub fw_ver: u32,
}

impl HealthSample {
    /// `synd`.
    pub const fn syndrome(&self) -> u8 {
        // CAST: an 8-bit field.
        (self.syndrome_word >> 16) as u8
    }

    /// `ext_synd`.
    pub const fn ext_syndrome(&self) -> u16 {
        // CAST: the low 16 bits.
        self.syndrome_word as u16
    }
}

/// Watches the health counter and syndrome across samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct HealthMonitor {
    /// How long the counter may stand still before the firmware counts as
    /// hung.
    stall_limit: Duration,
    /// The last counter value and when it was first seen.
    last: Option<(u32, Instant)>,
}

impl HealthMonitor {
    /// A monitor that declares the firmware hung when its counter stands
    /// still for longer than `stall_limit`.
    pub const fn new(stall_limit: Duration) -> Self {
        Self {
            stall_limit,
            last: None,
        }
    }

    /// Judges a sample taken at `now`.
    ///
    /// # Errors
    /// [`CmdqError::DeviceGone`] when the registers read as all ones,
    /// [`CmdqError::HealthSyndrome`] when firmware reports a syndrome,
    /// [`CmdqError::HealthCounterStuck`] when the counter has not changed
    /// for longer than the stall limit.
    pub fn handle_sample(&mut self, sample: HealthSample, now: Instant) -> Result<(), CmdqError> {
        if sample.fw_ver == ALL_ONES && sample.counter == ALL_ONES {
            return Err(CmdqError::DeviceGone);
        }
        if sample.syndrome() != 0 {
            return Err(CmdqError::HealthSyndrome {
                syndrome: sample.syndrome(),
                ext_syndrome: sample.ext_syndrome(),
            });
        }
        let counter = sample.counter & COUNTER_MASK;
        match self.last {
            Some((seen, since)) if seen == counter => {
                if now.saturating_since(since) > self.stall_limit {
                    return Err(CmdqError::HealthCounterStuck);
                }
            }
            _ => self.last = Some((counter, now)),
        }
        Ok(())
    }
}
