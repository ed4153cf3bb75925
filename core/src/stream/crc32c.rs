//! CRC-32C (Castagnoli), the checksum of the stream-end record.
//!
//! A portable slicing-by-8 implementation with tables built at compile time.
//! Platforms with a faster one (SSE4.2 `crc32`, the kernel's `crc32c()`)
//! provide it through the `Hal`; both compute the same function: reflected
//! polynomial 0x82f63b78, initial value and final XOR `0xffffffff`.
//!
//! This is the workspace's one portable CRC-32C: the stream
//! [`Reader`](super::Reader) (and so `mlx5vf inspect`), the C ABI's
//! `mlx5vf_crc32c`, the test kit's `Hal` and the fuzz oracles call it. It is
//! hand-written because no well-kept crate fits a `no_std`, no-alloc,
//! no-panic kernel object:
//! - `crc` (3.4, `CRC_32_ISCSI`, `Table<16>`) is `no_std`, but its
//!   slicing-by-16 loop indexes `bytes[i + k]` under `i + 16 <= len`, which
//!   the optimiser cannot prove in bounds: the fat-LTO kernel object then has
//!   two calls to `panic_bounds_check` in `update` (and five compares per 16
//!   bytes), and `shim-linux/check-symbols.sh` fails. Its bytewise
//!   `Table<1>` runs at 0.38 GiB/s here, a quarter of this one (1.5 GiB/s).
//! - `crc32c` (0.6) needs `std` (runtime CPU detection, `std::io` adapters).

const POLY: u32 = 0x82f6_3b78;

// Evaluated at compile time only: an out-of-range index or overflow fails the
// build, never a run.
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
const fn make_tables() -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        // CAST: i < 256.
        let mut crc = i as u32;
        let mut k = 0;
        while k < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ POLY
            } else {
                crc >> 1
            };
            k += 1;
        }
        t[0][i] = crc;
        i += 1;
    }
    let mut i = 0;
    while i < 256 {
        let mut s = 1;
        while s < 8 {
            let prev = t[s - 1][i];
            t[s][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            s += 1;
        }
        i += 1;
    }
    t
}

static TABLES: [[u32; 256]; 8] = make_tables();

#[inline(always)]
fn lookup(slice: usize, index: u32) -> u32 {
    // PANIC: none; `get` on both levels (slice < 8 and index & 0xff < 256 hold,
    // so the optimiser removes the checks).
    TABLES
        .get(slice)
        .and_then(|t| t.get((index & 0xff) as usize))
        .copied()
        .unwrap_or(0)
}

/// Continues a CRC-32C: `update(update(0, a), b) == update(0, a ++ b)`.
///
/// ```
/// use mlx5vf_core::stream::crc32c::update;
/// assert_eq!(update(0, b"123456789"), 0xe306_9283);
/// assert_eq!(update(update(0, b"1234"), b"56789"), 0xe306_9283);
/// ```
pub fn update(crc: u32, bytes: &[u8]) -> u32 {
    let mut crc = !crc;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let lo = u32::from_le_bytes([w[0], w[1], w[2], w[3]]) ^ crc;
        let hi = u32::from_le_bytes([w[4], w[5], w[6], w[7]]);
        crc = lookup(7, lo)
            ^ lookup(6, lo >> 8)
            ^ lookup(5, lo >> 16)
            ^ lookup(4, lo >> 24)
            ^ lookup(3, hi)
            ^ lookup(2, hi >> 8)
            ^ lookup(1, hi >> 16)
            ^ lookup(0, hi >> 24);
    }
    for &b in chunks.remainder() {
        crc = (crc >> 8) ^ lookup(0, crc ^ u32::from(b));
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bitwise(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ POLY
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn known_vectors() {
        assert_eq!(update(0, b""), 0);
        assert_eq!(update(0, b"123456789"), 0xe306_9283);
        // RFC 3720 B.4: 32 bytes of zeros, of 0xff.
        assert_eq!(update(0, &[0u8; 32]), 0x8a91_36aa);
        assert_eq!(update(0, &[0xffu8; 32]), 0x62a8_ab43);
    }

    #[test]
    fn matches_bitwise_for_every_length_and_split() {
        let data: std::vec::Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in 0..data.len() {
            let whole = update(0, &data[..len]);
            assert_eq!(whole, bitwise(&data[..len]), "len {len}");
            let split = len / 3;
            assert_eq!(update(update(0, &data[..split]), &data[split..len]), whole);
        }
    }
}
