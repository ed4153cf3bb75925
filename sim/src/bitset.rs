//! A fixed-capacity set of object indices (one bit per object).
//!
//! Hand-written because the crates need what the sim cannot have (it is
//! `no_std` and allocation-free, and links into a kernel module):
//! `fixedbitset` and `bit-set` allocate; `bitmaps` stops at 1024 bits (we
//! need `MAX_OBJECTS` = 8192); `bitvec`'s `BitArray` would fit but brings
//! four crates for a word array and a count.

use crate::objects::MAX_OBJECTS;

/// Words of the bit array.
const WORDS: usize = MAX_OBJECTS / 64;

// MAX_OBJECTS must be a whole number of words for `WORDS` to cover it.
const _: () = assert!(MAX_OBJECTS % 64 == 0);

/// A set of object indices below [`MAX_OBJECTS`]; indices outside are never
/// members (inserting one is ignored).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BitSet {
    words: [u64; WORDS],
    len: u32,
}

/// Split an index into (word, bit mask); `None` beyond the capacity.
fn locate(index: u32) -> Option<(usize, u64)> {
    let i = usize::try_from(index).ok()?;
    if i >= MAX_OBJECTS {
        return None;
    }
    Some((i / 64, 1u64 << (i % 64)))
}

impl BitSet {
    /// The empty set.
    pub(crate) const EMPTY: Self = Self {
        words: [0; WORDS],
        len: 0,
    };

    /// Number of members.
    pub(crate) fn len(&self) -> u32 {
        self.len
    }

    /// Membership test.
    pub(crate) fn contains(&self, index: u32) -> bool {
        locate(index)
            .and_then(|(w, bit)| self.words.get(w).map(|word| word & bit != 0))
            .unwrap_or(false)
    }

    /// Add `index`; `true` if it was not a member before.
    pub(crate) fn insert(&mut self, index: u32) -> bool {
        let Some((w, bit)) = locate(index) else {
            return false;
        };
        match self.words.get_mut(w) {
            Some(word) if *word & bit == 0 => {
                *word |= bit;
                // At most MAX_OBJECTS members, so no overflow.
                self.len = self.len.saturating_add(1);
                true
            }
            _ => false,
        }
    }

    /// Remove `index`; `true` if it was a member.
    pub(crate) fn remove(&mut self, index: u32) -> bool {
        let Some((w, bit)) = locate(index) else {
            return false;
        };
        match self.words.get_mut(w) {
            Some(word) if *word & bit != 0 => {
                *word &= !bit;
                self.len = self.len.saturating_sub(1);
                true
            }
            _ => false,
        }
    }

    /// Remove every member.
    pub(crate) fn clear(&mut self) {
        *self = Self::EMPTY;
    }

    /// The set `{0, 1, ..., n - 1}` (capped at the capacity).
    pub(crate) fn fill_below(&mut self, n: u32) {
        self.clear();
        let n = usize::try_from(n).unwrap_or(MAX_OBJECTS).min(MAX_OBJECTS);
        for (w, word) in self.words.iter_mut().enumerate() {
            let lo = w.saturating_mul(64);
            *word = if n >= lo.saturating_add(64) {
                u64::MAX
            } else if n > lo {
                (1u64 << (n.saturating_sub(lo))).wrapping_sub(1)
            } else {
                0
            };
        }
        // CAST: n ≤ MAX_OBJECTS, which fits u32.
        self.len = n as u32;
    }

    /// Smallest member ≥ `from`.
    pub(crate) fn next_from(&self, from: u32) -> Option<u32> {
        let start = usize::try_from(from).ok()?;
        if start >= MAX_OBJECTS {
            return None;
        }
        let mut w = start / 64;
        let mut word = self.words.get(w)? & (u64::MAX << (start % 64));
        loop {
            if word != 0 {
                let i = w
                    .saturating_mul(64)
                    .saturating_add(word.trailing_zeros() as usize);
                return u32::try_from(i).ok();
            }
            w = w.saturating_add(1);
            word = *self.words.get(w)?;
        }
    }

    /// Add every member of `other`.
    pub(crate) fn union_with(&mut self, other: &Self) {
        let mut len = 0u32;
        for (mine, theirs) in self.words.iter_mut().zip(other.words.iter()) {
            *mine |= theirs;
            len = len.saturating_add(mine.count_ones());
        }
        self.len = len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_remove_iterate() {
        let mut s = BitSet::EMPTY;
        assert!(s.insert(3));
        assert!(!s.insert(3));
        assert!(s.insert(200));
        assert!(!s.insert(MAX_OBJECTS as u32));
        assert_eq!(s.len(), 2);
        assert_eq!(s.next_from(0), Some(3));
        assert_eq!(s.next_from(4), Some(200));
        assert_eq!(s.next_from(201), None);
        assert!(s.remove(3));
        assert!(!s.remove(3));
        assert_eq!(s.next_from(0), Some(200));
        s.fill_below(130);
        assert_eq!(s.len(), 130);
        assert!(s.contains(129) && !s.contains(130));
        let mut t = BitSet::EMPTY;
        t.insert(129);
        t.insert(1000);
        s.union_with(&t);
        assert_eq!(s.len(), 131);
        s.fill_below(u32::MAX);
        assert_eq!(s.len() as usize, MAX_OBJECTS);
    }
}
