//! The chunk size from the firmware's measured speed.
//!
//! A chunk SAVE costs the command's fixed latency `L` plus its bytes at the
//! firmware's rate `R`. Chunks much larger than `L x R` hide the latency;
//! chunks smaller than that spend most of the time in it. Larger chunks
//! cost memory on both sides (slots at the source, image buffers at the
//! destination) and time at the stop (the last chunk is saved, read and
//! LOADed after the VM stops). So the tuned size is the smallest that
//! keeps the latency within `1 / LATENCY_SHARE` of a chunk's time, in the
//! bounds below: Linux's fixed 8 MiB is right for one firmware speed only
//! (it hides a 50 us latency at 4 GB/s, but wastes a third of the time at
//! 1 ms).
//!
//! The platform supplies a clock ([`crate::hal::Hal::now_ns`]); the device
//! times its QUERY commands (latency) and SAVEs (rate) with it in a
//! [`SpeedMeter`], which keeps the figures for later sessions.

use core::num::NonZeroU64;

/// A chunk SAVE's fixed cost may be at most this fraction of its transfer
/// time (1/20: at least 95 % of a SAVE moves bytes).
pub const LATENCY_SHARE: u64 = 20;
/// Smallest tuned chunk: below this the driver's own per-chunk work (a
/// syscall's worth per read, a completion) starts to show even with
/// instant firmware.
pub const MIN_TUNED_CHUNK: u64 = 2 << 20;
/// The memory a side may spend on chunk buffers when tuning: the source's
/// slots, or the destination's two image buffers. Four times Linux's
/// 2 x 8 MiB.
pub const DEFAULT_MEMORY_CAP: u64 = 64 << 20;
/// Buffers a chunk needs per side at least: the source saves into one
/// while the reader empties the other; the destination receives into one
/// while the other LOADs.
const BUFFERS_PER_SIDE: u64 = 2;
/// A SAVE this small says little about the rate (its time is mostly
/// latency and noise).
const MIN_RATE_SAMPLE: u64 = 1 << 20;

/// The firmware's measured speed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FirmwareSpeed {
    /// Fixed cost of a command, nanoseconds.
    pub latency_ns: u64,
    /// SAVE bytes per second once the command runs.
    pub bytes_per_sec: u64,
}

/// How the saving policy picks its chunk size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ChunkPolicy {
    /// The configured chunk size and slots, always (the Linux driver's
    /// policy with its defaults).
    Fixed,
    /// Start with the configured size; once the firmware's speed is
    /// measured, use [`tuned_chunk_size`] within `memory_cap` bytes per
    /// side.
    Measured {
        /// Chunk buffer memory allowed per side.
        memory_cap: u64,
    },
}

/// The chunk size for `speed` with `slots` slot buffers within `memory_cap`
/// bytes per side (module docs): the smallest size keeping the latency
/// within [`LATENCY_SHARE`], rounded up to a power of two, at least
/// [`MIN_TUNED_CHUNK`] and at most what the cap allows the larger of the
/// two sides' buffer counts (never below [`MIN_TUNED_CHUNK`]).
///
/// ```
/// use mlx5vf_core::save::{FirmwareSpeed, tuned_chunk_size};
/// // 1 ms per command at 4 GB/s: 64 MiB chunks would hide it; a 64 MiB
/// // cap over two slots allows 32 MiB.
/// let slow = FirmwareSpeed { latency_ns: 1_000_000, bytes_per_sec: 4_000_000_000 };
/// assert_eq!(tuned_chunk_size(slow, 64 << 20, 2), 32 << 20);
/// // 50 us at 4 GB/s: 4 MiB is enough.
/// let fast = FirmwareSpeed { latency_ns: 50_000, bytes_per_sec: 4_000_000_000 };
/// assert_eq!(tuned_chunk_size(fast, 64 << 20, 2), 4 << 20);
/// ```
pub fn tuned_chunk_size(speed: FirmwareSpeed, memory_cap: u64, slots: u8) -> u64 {
    // Bytes the firmware moves during one latency, times the share.
    let ideal = mul_div(
        speed.latency_ns.saturating_mul(LATENCY_SHARE),
        speed.bytes_per_sec,
        1_000_000_000,
    );
    let buffers = u64::from(slots).max(BUFFERS_PER_SIDE);
    // `buffers` is at least 2: the division cannot fail.
    let most = memory_cap
        .checked_div(buffers)
        .unwrap_or(memory_cap)
        .max(MIN_TUNED_CHUNK);
    // Round up to a power of two (then within the bounds): buffer sizes
    // stay few, and page multiples.
    let rounded = ideal.checked_next_power_of_two().unwrap_or(most);
    // `most` is at least the floor; `max`/`min`, not `clamp`, which has a
    // panic path for crossed bounds.
    rounded.max(MIN_TUNED_CHUNK).min(most)
}

/// `a x b / c` exactly, saturating at `u64::MAX`, 0 for `c` = 0. The
/// 128-bit product is divided by shift-and-subtract: a 128-bit `/` is a
/// compiler-runtime call (`__udivti3`) a kernel does not link.
fn mul_div(a: u64, b: u64, c: u64) -> u64 {
    if c == 0 {
        return 0;
    }
    let product = u128::from(a).wrapping_mul(u128::from(b));
    // CAST: the high and low halves of a u128.
    let (mut high, mut low) = ((product >> 64) as u64, product as u64);
    if high >= c {
        // The quotient needs more than 64 bits.
        return u64::MAX;
    }
    // Invariant: high < c, so each step's remainder fits and the quotient
    // takes exactly 64 steps.
    let mut quotient = 0u64;
    for _ in 0..64 {
        let carry = high >> 63;
        high = (high << 1) | (low >> 63);
        low <<= 1;
        quotient <<= 1;
        if carry != 0 || high >= c {
            high = high.wrapping_sub(c);
            quotient |= 1;
        }
    }
    quotient
}

/// What the device has measured of its firmware: the fastest command seen
/// (latency) and the rate over every SAVE large enough to tell one (total
/// bytes over total time less latency: one slow or fast sample does not
/// flip the tuned size back and forth).
// Option<NonZeroU64> is 8 bytes where Option<u64> is 16: the meter lives in
// the device, whose size a C caller reserves (MLX5VF_DEVICE_SIZE).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpeedMeter {
    /// Nanoseconds, at least 1.
    latency_ns: Option<NonZeroU64>,
    /// Bytes of the SAVEs sampled (saturating).
    save_bytes: u64,
    /// Their nanoseconds beyond the latency, each at least 1 (saturating).
    save_ns: u64,
}

impl SpeedMeter {
    /// Nothing measured.
    pub const NEW: Self = Self {
        latency_ns: None,
        save_bytes: 0,
        save_ns: 0,
    };

    /// A command that moves no bulk data took `ns`.
    pub fn observe_command(&mut self, ns: u64) {
        let ns = NonZeroU64::new(ns).unwrap_or(NonZeroU64::MIN);
        self.latency_ns = Some(self.latency_ns.map_or(ns, |l| l.min(ns)));
    }

    /// A SAVE of `bytes` took `ns` from its start to its completion. Needs
    /// a latency first (the rate is what remains after it).
    pub fn observe_save(&mut self, bytes: u64, ns: u64) {
        let Some(latency) = self.latency_ns else {
            return;
        };
        if bytes < MIN_RATE_SAMPLE {
            return;
        }
        // The bytes' share of the time; at least 1 ns, so instant firmware
        // reads as very fast rather than dividing by zero.
        let moving = ns.saturating_sub(latency.get()).max(1);
        self.save_bytes = self.save_bytes.saturating_add(bytes);
        self.save_ns = self.save_ns.saturating_add(moving);
    }

    /// The speed, once both figures are known.
    pub fn speed(&self) -> Option<FirmwareSpeed> {
        let latency_ns = self.latency_ns?.get();
        if self.save_ns == 0 {
            return None;
        }
        Some(FirmwareSpeed {
            latency_ns,
            bytes_per_sec: mul_div(self.save_bytes, 1_000_000_000, self.save_ns).max(1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn speed(latency_ns: u64, bytes_per_sec: u64) -> FirmwareSpeed {
        FirmwareSpeed {
            latency_ns,
            bytes_per_sec,
        }
    }

    #[test]
    fn the_chunk_hides_the_latency_within_the_cap() {
        // 50 us x 4 GB/s x 20 = 4 MB -> 4 MiB.
        assert_eq!(
            tuned_chunk_size(speed(50_000, 4_000_000_000), 64 * MIB, 2),
            4 * MIB
        );
        // 1 ms at 4 GB/s wants 80 MB: the cap over two buffers allows 32 MiB,
        // over four slots 16 MiB.
        assert_eq!(
            tuned_chunk_size(speed(1_000_000, 4_000_000_000), 64 * MIB, 2),
            32 * MIB
        );
        assert_eq!(
            tuned_chunk_size(speed(1_000_000, 4_000_000_000), 64 * MIB, 4),
            16 * MIB
        );
        // Instant firmware: the floor.
        assert_eq!(
            tuned_chunk_size(speed(0, u64::MAX), 64 * MIB, 2),
            MIN_TUNED_CHUNK
        );
        // A cap below the floor still gets the floor, not zero.
        assert_eq!(
            tuned_chunk_size(speed(1_000_000, 4_000_000_000), MIB, 2),
            MIN_TUNED_CHUNK
        );
        // Absurd figures saturate instead of overflowing.
        assert_eq!(
            tuned_chunk_size(speed(u64::MAX, u64::MAX), u64::MAX, 1),
            u64::MAX / 2
        );
    }

    #[test]
    fn mul_div_saturates_without_wide_division() {
        assert_eq!(
            mul_div(50_000 * 20, 4_000_000_000, 1_000_000_000),
            4_000_000
        );
        assert_eq!(mul_div(7, 3, 0), 0);
        assert_eq!(mul_div(u64::MAX, u64::MAX, 1), u64::MAX);
        assert_eq!(mul_div(u64::MAX, u64::MAX, u64::MAX), u64::MAX);
        // Products beyond 64 bits, either factor below the divisor.
        assert_eq!(mul_div(1 << 40, 1 << 30, 1 << 20), 1 << 50);
        assert_eq!(
            mul_div(20_000, 2_000_000_000_000_000, 1_000_000_000),
            40_000_000_000
        );
        assert_eq!(mul_div(3, u64::MAX, u64::MAX), 3);
        // Against 128-bit arithmetic on a spread of values.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..1000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let (a, b, c) = (
                x >> (x % 64),
                x.rotate_left(17) >> (x % 50),
                (x >> 20).max(1),
            );
            let want = (u128::from(a) * u128::from(b)) / u128::from(c);
            assert_eq!(
                mul_div(a, b, c),
                u64::try_from(want).unwrap_or(u64::MAX),
                "{a} {b} {c}"
            );
        }
    }

    #[test]
    fn the_meter_needs_a_latency_and_a_real_sample() {
        let mut m = SpeedMeter::NEW;
        m.observe_save(8 * MIB, 2_000_000);
        assert_eq!(m.speed(), None, "no latency yet");
        m.observe_command(60_000);
        m.observe_command(50_000);
        m.observe_command(70_000);
        m.observe_save(4096, 1_000_000);
        assert_eq!(m.speed(), None, "too small to tell a rate");
        // 8 MiB in 2.05 ms, 50 us of it latency: 8 MiB / 2 ms.
        m.observe_save(8 * MIB, 2_050_000);
        assert_eq!(m.speed(), Some(speed(50_000, 4_194_304_000)));
        // The rate is over every sample: 16 MiB in 2 + 6 ms.
        m.observe_save(8 * MIB, 6_050_000);
        assert_eq!(m.speed(), Some(speed(50_000, 2_097_152_000)));
        // Faster than the latency counts as 1 ns, not a division by zero.
        let mut instant = SpeedMeter::NEW;
        instant.observe_command(50_000);
        instant.observe_save(8 * MIB, 10);
        assert_eq!(
            instant.speed().map(|s| s.bytes_per_sec),
            Some(8 * MIB * 1_000_000_000)
        );
    }
}
