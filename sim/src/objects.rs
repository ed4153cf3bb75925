//! The device-state object model: a VF's state is a sequence of objects
//! `(index, size, version)`, whose sizes and bytes are *generated*.
//!
//! - **Sizes** come from the generator parameters ([`GenParams`]): object
//!   `i` has size `object_min + h(seed, i) mod (object_max - object_min + 1)`,
//!   computed in O(1) from `(seed, i)`. The number of objects is chosen so
//!   that a full single-image SAVE is *exactly* `state_size` bytes: image
//!   header + Σ (record header + object size). The last object absorbs the
//!   remainder, so its size lies in `[object_min, object_max + object_min +
//!   RECORD_HEADER_LEN)`.
//! - **Content** of object `i` at version `v` is a pure function of
//!   `(seed, i, v, offset)`: little-endian 64-bit words
//!   `w(k) = f(key ^ k)` with `key = mix(seed, i, v)` and `f` an invertible
//!   multiply–xorshift, so any byte can be produced (or checked) at random
//!   access without storing it. Only a `u32` version per object is stored.
//! - **Digest** ([`Digest`]): SHA-256 over
//!   `"mlx5vf-sim digest v1\0"`, then little-endian `seed`, `state_size`,
//!   `object_min`, `object_max` (u64 each) and the object count (u32), then
//!   every object's version (u32 LE, index order), then one byte: 1 if the
//!   state is complete, 0 if a LOAD is still missing objects. Two VFs with
//!   equal digests hold byte-identical state.

use core::fmt;

use crate::image::{IMAGE_HEADER_LEN, RECORD_HEADER_LEN};
use sha2::{Digest as _, Sha256};

/// Most objects one VF state may have.
///
/// A version (`u32`) and three bits per object are stored per VF, so this
/// bounds the per-VF memory (~35 KiB; kept small so that a whole
/// [`crate::Firmware`] can be built on a 2 MiB test-thread stack even
/// unoptimised). With the default object sizes (64 KiB–12 MiB, ~6 MiB on
/// average) it allows states of ~48 GiB; a spec
/// needing more objects is a [`LayoutError::TooManyObjects`].
pub const MAX_OBJECTS: usize = 8192;

/// Smallest allowed object size.
pub const MIN_OBJECT_SIZE: u64 = 1;

/// Largest allowed `object_max`: 1 GiB, so that even the last object
/// (which may grow by `object_min + RECORD_HEADER_LEN`) plus an image
/// header fits a 32-bit SAVE buffer.
pub const MAX_OBJECT_SIZE: u64 = 1 << 30;

/// The parameters every size and byte of a state is generated from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GenParams {
    /// Generator seed.
    pub seed: u64,
    /// Exact byte size of a full single-image SAVE.
    pub state_size: u64,
    /// Smallest object size.
    pub object_min: u64,
    /// Largest object size (before the last object's remainder).
    pub object_max: u64,
}

/// Why generator parameters do not describe a state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LayoutError {
    /// `object_min` is 0, above `object_max`, or `object_max` exceeds
    /// [`MAX_OBJECT_SIZE`].
    ObjectRange,
    /// `state_size` cannot hold even one object; `min` is the smallest that
    /// can.
    StateTooSmall {
        /// Smallest valid `state_size` for these object sizes.
        min: u64,
    },
    /// More than [`MAX_OBJECTS`] objects would be needed.
    TooManyObjects,
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ObjectRange => write!(
                f,
                "object sizes must satisfy 0 < MIN <= MAX <= {MAX_OBJECT_SIZE} (object=MIN-MAX)"
            ),
            Self::StateTooSmall { min } => write!(
                f,
                "state too small to hold one object: use state={min} or more, or a smaller \
                 object= minimum"
            ),
            Self::TooManyObjects => write!(
                f,
                "state needs more than {MAX_OBJECTS} objects: raise the object= sizes or lower \
                 state="
            ),
        }
    }
}

impl core::error::Error for LayoutError {}

/// splitmix64's finaliser: a strong 64-bit mixer.
#[must_use]
pub const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The golden-ratio increment of splitmix64 (also the workload PRNG step).
pub(crate) const GOLDEN_STEP: u64 = 0x9e37_79b9_7f4a_7c15;
/// Short local name.
const GOLDEN: u64 = GOLDEN_STEP;
/// Domain separators, so sizes, content and check values never share inputs.
const SIZE_SALT: u64 = 0x5349_5a45_5f73_696d; // "SIZE_sim"
/// Salt of content keys.
const CONTENT_SALT: u64 = 0x434f_4e54_5f73_696d; // "CONT_sim"

/// Object sizes and count for one set of generator parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    params: GenParams,
    count: u32,
    last_size: u64,
}

impl Layout {
    /// A layout with no objects (a placeholder before configuration).
    pub const EMPTY: Self = Self {
        params: GenParams {
            seed: 0,
            state_size: 0,
            object_min: 0,
            object_max: 0,
        },
        count: 0,
        last_size: 0,
    };

    /// Compute the object count and the last object's size (O(count)).
    ///
    /// # Errors
    /// [`LayoutError`] when the parameters describe no valid state.
    pub fn new(params: GenParams) -> Result<Self, LayoutError> {
        let GenParams {
            object_min: min,
            object_max: max,
            state_size,
            ..
        } = params;
        if min < MIN_OBJECT_SIZE || min > max || max > MAX_OBJECT_SIZE {
            return Err(LayoutError::ObjectRange);
        }
        // No overflow: every term ≤ 2^30 + small constants.
        let smallest_record = RECORD_HEADER_LEN.saturating_add(min);
        let min_state = IMAGE_HEADER_LEN.saturating_add(smallest_record);
        if state_size < min_state {
            return Err(LayoutError::StateTooSmall { min: min_state });
        }
        // Invariant: `budget` (bytes left for records) ≥ smallest_record.
        let mut budget = state_size.saturating_sub(IMAGE_HEADER_LEN);
        let mut index = 0u32;
        loop {
            if usize::try_from(index).map_or(true, |i| i >= MAX_OBJECTS) {
                return Err(LayoutError::TooManyObjects);
            }
            let record = RECORD_HEADER_LEN.saturating_add(draw_size(&params, index));
            match budget.checked_sub(record) {
                // Another minimal record still fits after this one: go on.
                Some(left) if left >= smallest_record => {
                    budget = left;
                    index = index.saturating_add(1);
                }
                // This object is the last and takes the remainder.
                _ => {
                    return Ok(Self {
                        params,
                        count: index.saturating_add(1),
                        last_size: budget.saturating_sub(RECORD_HEADER_LEN),
                    });
                }
            }
        }
    }

    /// The generator parameters.
    #[must_use]
    pub fn params(&self) -> GenParams {
        self.params
    }

    /// Number of objects.
    #[must_use]
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Size of object `index`, `None` past the last object.
    #[must_use]
    pub fn size(&self, index: u32) -> Option<u64> {
        if index >= self.count {
            None
        } else if index.saturating_add(1) == self.count {
            Some(self.last_size)
        } else {
            Some(draw_size(&self.params, index))
        }
    }

    /// Bytes of object `index`'s record (header + content), 0 past the end.
    #[must_use]
    pub fn record_len(&self, index: u32) -> u64 {
        self.size(index)
            .map_or(0, |s| s.saturating_add(RECORD_HEADER_LEN))
    }

    /// Bytes of a full single image: exactly `state_size`.
    #[must_use]
    pub fn full_image_len(&self) -> u64 {
        self.params.state_size
    }
}

/// Size drawn for object `index` (before the last-object adjustment).
fn draw_size(params: &GenParams, index: u32) -> u64 {
    let span = params
        .object_max
        .saturating_sub(params.object_min)
        .saturating_add(1);
    let h = mix64(params.seed ^ SIZE_SALT ^ u64::from(index).wrapping_mul(GOLDEN));
    // `span` ≥ 1, so the remainder is defined; `checked_rem` keeps it total.
    params
        .object_min
        .saturating_add(h.checked_rem(span).unwrap_or(0))
}

/// The content key of object `index` at `version` under `seed`.
#[must_use]
pub fn content_key(seed: u64, index: u32, version: u32) -> u64 {
    let iv = (u64::from(index) << 32) | u64::from(version);
    mix64(mix64(seed ^ CONTENT_SALT) ^ iv.wrapping_mul(GOLDEN))
}

/// Content word `k` of the object with `key` (an invertible function of
/// `key ^ k`, so distinct words of one object never collide).
#[inline(always)]
fn word(key: u64, k: u64) -> u64 {
    let x = (key ^ k).wrapping_mul(0xd6e8_feb8_6659_fd93);
    x ^ (x >> 32)
}

/// Write the object's content bytes `[offset, offset + out.len())` into `out`.
pub fn fill_content(key: u64, offset: u64, out: &mut [u8]) {
    let (head_len, mut k) = head(offset, out.len());
    let (head_part, body) = out.split_at_mut(head_len);
    if !head_part.is_empty() {
        let bytes = word(key, offset / 8).to_le_bytes();
        // CAST: offset % 8 < 8.
        let skip = (offset % 8) as usize;
        for (dst, src) in head_part.iter_mut().zip(bytes.iter().skip(skip)) {
            *dst = *src;
        }
        k = k.wrapping_add(1);
    }
    let mut chunks = body.chunks_exact_mut(8);
    for chunk in &mut chunks {
        chunk.copy_from_slice(&word(key, k).to_le_bytes());
        k = k.wrapping_add(1);
    }
    let tail = chunks.into_remainder();
    let bytes = word(key, k).to_le_bytes();
    for (dst, src) in tail.iter_mut().zip(bytes.iter()) {
        *dst = *src;
    }
}

/// `true` when `data` equals the object's content bytes at `offset`.
#[must_use]
pub fn content_matches(key: u64, offset: u64, data: &[u8]) -> bool {
    let (head_len, mut k) = head(offset, data.len());
    let (head_part, body) = data.split_at(head_len.min(data.len()));
    let mut diff = 0u64;
    if !head_part.is_empty() {
        let bytes = word(key, offset / 8).to_le_bytes();
        // CAST: offset % 8 < 8.
        let skip = (offset % 8) as usize;
        if head_part
            .iter()
            .ne(bytes.iter().skip(skip).take(head_part.len()))
        {
            return false;
        }
        k = k.wrapping_add(1);
    }
    let mut chunks = body.chunks_exact(8);
    // Accumulate differences without branching so the loop stays tight.
    for chunk in &mut chunks {
        let got = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        diff |= got ^ word(key, k);
        k = k.wrapping_add(1);
    }
    let tail = chunks.remainder();
    let bytes = word(key, k).to_le_bytes();
    diff == 0 && tail.iter().eq(bytes.iter().take(tail.len()))
}

/// Length of the unaligned head of a range at `offset` (bytes before the
/// next 8-byte boundary, capped at `len`) and the index of the first word
/// *after* the head (or of the first word when there is no head).
fn head(offset: u64, len: usize) -> (usize, u64) {
    // CAST: offset % 8 < 8.
    let misalign = (offset % 8) as usize;
    if misalign == 0 {
        (0, offset / 8)
    } else {
        ((8usize.saturating_sub(misalign)).min(len), offset / 8)
    }
}

/// The versions of every object of one VF state.
#[derive(Clone, Debug)]
pub struct ObjectStore {
    layout: Layout,
    versions: [u32; MAX_OBJECTS],
}

impl ObjectStore {
    /// A store with no objects.
    pub const EMPTY: Self = Self {
        layout: Layout::EMPTY,
        versions: [0; MAX_OBJECTS],
    };

    /// Replace the state by `layout` with every object at version 0.
    pub fn reset(&mut self, layout: Layout) {
        self.layout = layout;
        self.versions = [0; MAX_OBJECTS];
    }

    /// The layout (sizes, count, parameters).
    #[must_use]
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Version of object `index`.
    #[must_use]
    pub fn version(&self, index: u32) -> Option<u32> {
        if index >= self.layout.count {
            return None;
        }
        usize::try_from(index)
            .ok()
            .and_then(|i| self.versions.get(i))
            .copied()
    }

    /// Set object `index` to `version` (ignored past the last object).
    pub fn set_version(&mut self, index: u32, version: u32) {
        if index >= self.layout.count {
            return;
        }
        if let Some(v) = usize::try_from(index)
            .ok()
            .and_then(|i| self.versions.get_mut(i))
        {
            *v = version;
        }
    }

    /// The content key of object `index` at its current version.
    #[must_use]
    pub fn key(&self, index: u32) -> u64 {
        content_key(
            self.layout.params.seed,
            index,
            self.version(index).unwrap_or(0),
        )
    }

    /// The state's digest (see the module docs for the exact input).
    #[must_use]
    pub fn digest(&self, complete: bool) -> Digest {
        let p = self.layout.params;
        let mut h = Sha256::new();
        h.update(b"mlx5vf-sim digest v1\0");
        for v in [p.seed, p.state_size, p.object_min, p.object_max] {
            h.update(v.to_le_bytes());
        }
        h.update(self.layout.count.to_le_bytes());
        let count = usize::try_from(self.layout.count).unwrap_or(0);
        for v in self.versions.iter().take(count) {
            h.update(v.to_le_bytes());
        }
        h.update([u8::from(complete)]);
        Digest(h.finalize().into())
    }
}

/// A state digest: SHA-256, displayed as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The raw hash bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(state: u64, min: u64, max: u64) -> GenParams {
        GenParams {
            seed: 7,
            state_size: state,
            object_min: min,
            object_max: max,
        }
    }

    #[test]
    fn layout_sums_to_state_size_exactly() {
        for (state, min, max) in [
            (1 << 30, 64 << 10, 12 << 20),
            (20 << 20, 64 << 10, 12 << 20),
            (5 << 30, 64 << 10, 12 << 20),
            (10_000, 1, 100),
            (IMAGE_HEADER_LEN + RECORD_HEADER_LEN + 5, 5, 5),
        ] {
            let l = Layout::new(params(state, min, max)).unwrap();
            let total: u64 =
                IMAGE_HEADER_LEN + (0..l.count()).map(|i| l.record_len(i)).sum::<u64>();
            assert_eq!(total, state);
            for i in 0..l.count() {
                let s = l.size(i).unwrap();
                assert!(s >= min);
                assert!(s < max + min + RECORD_HEADER_LEN);
            }
            assert_eq!(l.size(l.count()), None);
        }
    }

    #[test]
    fn layout_errors() {
        assert_eq!(
            Layout::new(params(100, 64, 64)),
            Err(LayoutError::StateTooSmall {
                min: IMAGE_HEADER_LEN + RECORD_HEADER_LEN + 64
            })
        );
        assert_eq!(
            Layout::new(params(1 << 30, 0, 5)),
            Err(LayoutError::ObjectRange)
        );
        assert_eq!(
            Layout::new(params(1 << 30, 6, 5)),
            Err(LayoutError::ObjectRange)
        );
        assert_eq!(
            Layout::new(params(1 << 30, 1, 2 << 30)),
            Err(LayoutError::ObjectRange)
        );
        assert_eq!(
            Layout::new(params(1 << 30, 4096, 4096)),
            Err(LayoutError::TooManyObjects)
        );
    }

    #[test]
    fn content_is_random_access_and_checkable() {
        let key = content_key(1, 2, 3);
        let mut whole = [0u8; 203];
        fill_content(key, 5, &mut whole);
        for start in 0..40usize {
            for len in [0usize, 1, 3, 8, 9, 17, 100] {
                let end = (start + len).min(whole.len());
                let mut part = std::vec![0u8; end - start];
                fill_content(key, 5 + start as u64, &mut part);
                assert_eq!(part, whole[start..end]);
                assert!(content_matches(key, 5 + start as u64, &part));
                if !part.is_empty() {
                    let mid = part.len() / 2;
                    part[mid] ^= 1;
                    assert!(!content_matches(key, 5 + start as u64, &part));
                }
            }
        }
        // Another version or index gives other bytes.
        let mut other = [0u8; 203];
        fill_content(content_key(1, 2, 4), 5, &mut other);
        assert_ne!(whole, other);
        fill_content(content_key(1, 3, 3), 5, &mut other);
        assert_ne!(whole, other);
    }

    #[test]
    fn digest_depends_on_versions_and_completeness() {
        let mut a = ObjectStore::EMPTY;
        a.reset(Layout::new(params(1 << 20, 1024, 4096)).unwrap());
        let d0 = a.digest(true);
        assert_ne!(d0, a.digest(false));
        a.set_version(3, 1);
        assert_ne!(d0, a.digest(true));
        a.set_version(3, 0);
        assert_eq!(d0, a.digest(true));
        assert_eq!(std::format!("{d0}").len(), 64);
    }

    /// The digest is the documented function of the state (module docs), so
    /// digests printed by any build compare equal. These values were computed
    /// outside this crate, by Python's `hashlib.sha256` over the documented
    /// input bytes (seed 7, 1 MiB, objects 1–4 KiB: 406 objects).
    #[test]
    fn digest_known_answers() {
        let mut store = ObjectStore::EMPTY;
        store.reset(Layout::new(params(1 << 20, 1024, 4096)).unwrap());
        assert_eq!(store.layout().count(), 406);
        assert_eq!(
            std::format!("{}", store.digest(true)),
            "b56c3af9ed25e71ff5e9efcf317d689ef02f431a3f2fdd855d6d1f88a4c67f9c"
        );
        assert_eq!(
            std::format!("{}", store.digest(false)),
            "83e5fb424489a098282e95d9096051add135f0c40c63b34ebee21260b401bb33"
        );
        store.set_version(3, 1);
        store.set_version(405, 0xdead_beef);
        assert_eq!(
            std::format!("{}", store.digest(true)),
            "1340b67165c35aedeae8f0d215b9a1e8a147e60bdb77e30a369827258abf9f51"
        );
    }
}
