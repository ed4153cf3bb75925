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
//! times its SAVEs with it in a [`SpeedMeter`], which keeps the figures for
//! later sessions. A SAVE's fixed cost is its own (firmware prepares the
//! state; it need not be a QUERY's latency), so both figures come from
//! SAVEs of two sizes: the first chunks, and a smaller probe chunk the
//! device asks for once ([`SpeedMeter::probe_size`]).

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
/// Probe chunks the device asks for at most: an object larger than the
/// probe makes its chunk as large as the first ones, and then the sizes do
/// not differ; after this many tries the configured size stays.
const MAX_PROBES: u8 = 3;
/// The smallest probe chunk.
const MIN_PROBE: u64 = 256 << 10;

/// The firmware's measured speed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FirmwareSpeed {
    /// Fixed cost of a SAVE, nanoseconds.
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
    bounded(ideal, memory_cap, slots)
}

/// The chunk size for the stop (STOP_COPY, the downtime) when `stop_bytes`
/// remain: the stop takes about `stop_bytes / C x L` in fixed costs plus
/// the bytes at the rate plus a tail of about `2 C / R` (the last chunk's
/// SAVE, then its LOAD at the destination). The sum is smallest at
/// `C = sqrt(stop_bytes x L x R / 2)`: small when little remains (a tuned
/// PRE_COPY leaves little), large for a cold stop. Rounded up to a power of
/// two and bounded as [`tuned_chunk_size`] bounds its size.
///
/// ```
/// use mlx5vf_core::save::{FirmwareSpeed, downtime_chunk_size};
/// let speed = FirmwareSpeed { latency_ns: 400_000, bytes_per_sec: 4_000_000_000 };
/// // 50 MB left after PRE_COPY: 6.3 MB -> 8 MiB.
/// assert_eq!(downtime_chunk_size(speed, 64 << 20, 2, 50_000_000), 8 << 20);
/// // A cold stop of 1 GiB: 29 MB -> 32 MiB (the cap allows it).
/// assert_eq!(downtime_chunk_size(speed, 64 << 20, 2, 1 << 30), 32 << 20);
/// ```
pub fn downtime_chunk_size(
    speed: FirmwareSpeed,
    memory_cap: u64,
    slots: u8,
    stop_bytes: u64,
) -> u64 {
    // stop_bytes x L (s) x R / 2, in bytes squared.
    let bytes_seconds = mul_div(stop_bytes, speed.latency_ns, 1_000_000_000);
    let square = mul_div(bytes_seconds, speed.bytes_per_sec, 2);
    bounded(square.isqrt(), memory_cap, slots)
}

/// `bytes` rounded up to a power of two, at least [`MIN_TUNED_CHUNK`] and
/// at most what `memory_cap` allows `slots` (and two) buffers.
fn bounded(bytes: u64, memory_cap: u64, slots: u8) -> u64 {
    let buffers = u64::from(slots).max(BUFFERS_PER_SIDE);
    // `buffers` is at least 2: the division cannot fail.
    let most = memory_cap
        .checked_div(buffers)
        .unwrap_or(memory_cap)
        .max(MIN_TUNED_CHUNK);
    let rounded = bytes.checked_next_power_of_two().unwrap_or(most);
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

/// SAVEs of one size class: their count, bytes and nanoseconds (sums,
/// saturating).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Samples {
    count: u32,
    bytes: u64,
    ns: u64,
}

impl Samples {
    fn add(&mut self, bytes: u64, ns: u64) {
        self.count = self.count.saturating_add(1);
        self.bytes = self.bytes.saturating_add(bytes);
        self.ns = self.ns.saturating_add(ns);
    }

    /// Mean bytes and nanoseconds, once there is a sample.
    fn mean(&self) -> Option<(u64, u64)> {
        let n = u64::from(self.count);
        Some((self.bytes.checked_div(n)?, self.ns.checked_div(n)?))
    }
}

/// What the device has measured of its firmware's SAVEs, as two size
/// classes: "large" (at least half the first sample) and "small". With
/// both, the line through their means gives the fixed cost (where it
/// meets size 0) and the rate (its slope). Means over every sample, so one
/// slow or fast SAVE does not flip the tuned size back and forth.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpeedMeter {
    /// Half the first sample's bytes: the class boundary (0: no sample).
    split: u64,
    small: Samples,
    large: Samples,
    /// Probe chunks asked for.
    probes: u8,
}

impl SpeedMeter {
    /// Nothing measured.
    pub const NEW: Self = Self {
        split: 0,
        small: Samples {
            count: 0,
            bytes: 0,
            ns: 0,
        },
        large: Samples {
            count: 0,
            bytes: 0,
            ns: 0,
        },
        probes: 0,
    };

    /// A SAVE of `bytes` took `ns` from its start to its completion.
    pub fn observe_save(&mut self, bytes: u64, ns: u64) {
        if bytes == 0 {
            return;
        }
        if self.split == 0 {
            self.split = (bytes / 2).max(1);
        }
        if bytes >= self.split {
            self.large.add(bytes, ns);
        } else {
            self.small.add(bytes, ns);
        }
    }

    /// The chunk size to SAVE once, smaller than the first ones, so both
    /// size classes have a sample; `None` when not needed (or tried
    /// three times). Asking counts as a try.
    pub fn probe_size(&mut self) -> Option<u64> {
        if self.large.count == 0 || self.small.count > 0 || self.probes >= MAX_PROBES {
            return None;
        }
        self.probes = self.probes.saturating_add(1);
        Some((self.split / 2).max(MIN_PROBE))
    }

    /// The speed, once SAVEs of two sizes (the larger mean at least 1.5
    /// times the smaller) were timed. A time that does not grow with the
    /// size reads as a fixed cost and an unlimited rate.
    pub fn speed(&self) -> Option<FirmwareSpeed> {
        let (small_bytes, small_ns) = self.small.mean()?;
        let (large_bytes, large_ns) = self.large.mean()?;
        let more_bytes = large_bytes.checked_sub(small_bytes)?;
        if more_bytes < small_bytes / 2 || more_bytes == 0 {
            return None;
        }
        let Some(more_ns) = large_ns.checked_sub(small_ns).filter(|&d| d > 0) else {
            return Some(FirmwareSpeed {
                latency_ns: small_ns.max(large_ns),
                bytes_per_sec: u64::MAX,
            });
        };
        // The small class's time less its bytes' share of the slope.
        let latency_ns = small_ns.saturating_sub(mul_div(small_bytes, more_ns, more_bytes));
        Some(FirmwareSpeed {
            latency_ns,
            bytes_per_sec: mul_div(more_bytes, 1_000_000_000, more_ns).max(1),
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
    fn the_stop_chunk_follows_what_remains() {
        let s = speed(400_000, 4_000_000_000);
        // Little left: the floor. A cold 8 GiB stop: the cap.
        assert_eq!(
            downtime_chunk_size(s, 64 * MIB, 2, 1 << 20),
            MIN_TUNED_CHUNK
        );
        assert_eq!(downtime_chunk_size(s, 64 * MIB, 2, 8 << 30), 32 * MIB);
        // Instant firmware (no fixed cost): the floor, whatever remains.
        assert_eq!(
            downtime_chunk_size(speed(0, u64::MAX), 64 * MIB, 2, 8 << 30),
            MIN_TUNED_CHUNK
        );
        // Saturating figures stay within the cap.
        assert_eq!(
            downtime_chunk_size(speed(u64::MAX, u64::MAX), 64 * MIB, 2, u64::MAX),
            32 * MIB
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
    fn the_meter_fits_a_fixed_cost_and_a_rate_from_two_sizes() {
        // 1 ms per SAVE plus 4 GB/s (4 bytes per ns).
        let time = |bytes: u64| 1_000_000 + bytes / 4;
        let mut m = SpeedMeter::NEW;
        assert_eq!(m.probe_size(), None, "nothing to probe against yet");
        for _ in 0..3 {
            m.observe_save(8 * MIB, time(8 * MIB));
        }
        assert_eq!(m.speed(), None, "one size says nothing of the fixed cost");
        // The probe: a quarter of the first sample.
        assert_eq!(m.probe_size(), Some(2 * MIB));
        m.observe_save(2 * MIB, time(2 * MIB));
        assert_eq!(m.probe_size(), None, "both classes sampled");
        assert_eq!(m.speed(), Some(speed(1_000_000, 4_000_000_000)));
        // A short last chunk joins the small class; the fit stays.
        m.observe_save(MIB, time(MIB));
        let s = m.speed().unwrap();
        assert_eq!((s.latency_ns, s.bytes_per_sec), (1_000_000, 4_000_000_000));
    }

    #[test]
    fn the_meter_reads_size_independent_times_as_a_fixed_cost() {
        let mut m = SpeedMeter::NEW;
        m.observe_save(8 * MIB, 3_000_000);
        m.observe_save(2 * MIB, 3_100_000);
        assert_eq!(m.speed(), Some(speed(3_100_000, u64::MAX)));
    }

    #[test]
    fn the_meter_gives_up_probing_when_sizes_do_not_differ() {
        let mut m = SpeedMeter::NEW;
        m.observe_save(8 * MIB, 2_000_000);
        for _ in 0..MAX_PROBES {
            assert!(m.probe_size().is_some());
            // A large object made the probe chunk as large as the others.
            m.observe_save(7 * MIB, 1_900_000);
        }
        assert_eq!(m.probe_size(), None);
        assert_eq!(m.speed(), None);
        // Means too close to tell a slope (5.3 MiB against 3.9): no speed.
        let mut near = SpeedMeter::NEW;
        for bytes in [8 * MIB, 4 * MIB, 4 * MIB] {
            near.observe_save(bytes, 2_000_000);
        }
        near.observe_save(3_900 * 1024, 1_000_000);
        assert_eq!(near.speed(), None);
    }
}
