//! A fixed-size set of guest pages.

/// Guest pages the model holds: 32 768 pages of 4 KiB = 128 MiB of guest
/// memory, 4 KiB per set (the firmware keeps two: dirty set and ground
/// truth), within the firmware's size budget.
pub const MAX_GUEST_PAGES: u32 = 32_768;

/// Words of a set.
// CAST: a small constant.
const WORDS: usize = MAX_GUEST_PAGES as usize / 64;

/// A set of guest page numbers below [`MAX_GUEST_PAGES`]; others are never
/// members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageBits {
    words: [u64; WORDS],
    len: u32,
}

fn locate(page: u32) -> Option<(usize, u64)> {
    if page >= MAX_GUEST_PAGES {
        return None;
    }
    let w = usize::try_from(page / 64).ok()?;
    Some((w, 1u64 << (page % 64)))
}

impl PageBits {
    /// No pages.
    pub const EMPTY: Self = Self {
        words: [0; WORDS],
        len: 0,
    };

    /// Members.
    pub const fn len(&self) -> u32 {
        self.len
    }

    /// No members.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Membership.
    pub fn contains(&self, page: u32) -> bool {
        locate(page)
            .and_then(|(w, bit)| self.words.get(w).map(|word| word & bit != 0))
            .unwrap_or(false)
    }

    /// Adds `page`.
    pub fn insert(&mut self, page: u32) {
        let Some((w, bit)) = locate(page) else { return };
        if let Some(word) = self.words.get_mut(w) {
            if *word & bit == 0 {
                *word |= bit;
                self.len = self.len.saturating_add(1);
            }
        }
    }

    /// Removes `page`.
    pub fn remove(&mut self, page: u32) {
        let Some((w, bit)) = locate(page) else { return };
        if let Some(word) = self.words.get_mut(w) {
            if *word & bit != 0 {
                *word &= !bit;
                self.len = self.len.saturating_sub(1);
            }
        }
    }

    /// The set as a bitmap: bit `p % 64` of word `p / 64` is page `p`.
    pub const fn words(&self) -> &[u64] {
        &self.words
    }

    /// Empties the set.
    pub fn clear(&mut self) {
        self.words.fill(0);
        self.len = 0;
    }

    /// The first member at or after `from` and below `end`.
    pub fn next_in(&self, from: u32, end: u32) -> Option<u32> {
        let end = end.min(MAX_GUEST_PAGES);
        let mut page = from;
        while page < end {
            let (w, _) = locate(page)?;
            let word = self.words.get(w).copied().unwrap_or(0) >> (page % 64);
            if word != 0 {
                let found = page.saturating_add(word.trailing_zeros());
                return (found < end).then_some(found);
            }
            page = (page | 63).saturating_add(1);
        }
        None
    }
}
