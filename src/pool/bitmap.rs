//! A fixed-size bitmap of atomic words, shared between threads without a lock.

use std::sync::atomic::{AtomicU64, Ordering};

/// `bits` bits, each set and cleared atomically.
pub(crate) struct Bitmap {
    words: Vec<AtomicU64>,
    bits: u64,
}

impl Bitmap {
    /// All clear.
    pub fn new(bits: u64) -> Bitmap {
        Bitmap {
            words: (0..bits.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            bits,
        }
    }

    /// Whether bit `i` is set (false beyond the end).
    pub fn get(&self, i: u64) -> bool {
        i < self.bits
            && self.words[(i / 64) as usize].load(Ordering::Acquire) & (1 << (i % 64)) != 0
    }

    /// Sets bit `i`; true if it was clear.
    pub fn set(&self, i: u64) -> bool {
        if i >= self.bits {
            return false;
        }
        let m = 1u64 << (i % 64);
        self.words[(i / 64) as usize].fetch_or(m, Ordering::AcqRel) & m == 0
    }

    /// Clears bit `i`; true if it was set.
    pub fn clear(&self, i: u64) -> bool {
        if i >= self.bits {
            return false;
        }
        let m = 1u64 << (i % 64);
        self.words[(i / 64) as usize].fetch_and(!m, Ordering::AcqRel) & m != 0
    }

    /// Sets every bit; returns how many were clear.
    pub fn set_all(&self) -> u64 {
        let mut newly = 0;
        for (w, word) in self.words.iter().enumerate() {
            let full = self.word_mask(w);
            newly += u64::from((!word.fetch_or(full, Ordering::AcqRel) & full).count_ones());
        }
        newly
    }

    /// Clears every bit.
    pub fn clear_all(&self) {
        for w in &self.words {
            w.store(0, Ordering::Release);
        }
    }

    /// Number of set bits.
    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.words
            .iter()
            .map(|w| u64::from(w.load(Ordering::Acquire).count_ones()))
            .sum()
    }

    /// Whether any bit is set.
    pub fn any(&self) -> bool {
        self.words.iter().any(|w| w.load(Ordering::Acquire) != 0)
    }

    /// The first set bit at or after `from`.
    pub fn next_set(&self, from: u64) -> Option<u64> {
        if from >= self.bits {
            return None;
        }
        let mut w = (from / 64) as usize;
        let mut word = self.words[w].load(Ordering::Acquire) & (u64::MAX << (from % 64));
        loop {
            if word != 0 {
                let i = w as u64 * 64 + u64::from(word.trailing_zeros());
                return (i < self.bits).then_some(i);
            }
            w += 1;
            if w >= self.words.len() {
                return None;
            }
            word = self.words[w].load(Ordering::Acquire);
        }
    }

    /// Number of words.
    pub fn word_count(&self) -> usize {
        self.words.len()
    }

    /// Word `w`.
    pub fn word(&self, w: usize) -> u64 {
        self.words[w].load(Ordering::Acquire)
    }

    /// Clears word `w`, returning what it held.
    pub fn take_word(&self, w: usize) -> u64 {
        self.words[w].swap(0, Ordering::AcqRel)
    }

    /// ORs `bits` into word `w` (bits past the end are dropped); returns how many were new.
    pub fn or_word(&self, w: usize, bits: u64) -> u64 {
        let bits = bits & self.word_mask(w);
        u64::from((!self.words[w].fetch_or(bits, Ordering::AcqRel) & bits).count_ones())
    }

    fn word_mask(&self, w: usize) -> u64 {
        let end = self.bits - w as u64 * 64;
        if end >= 64 {
            u64::MAX
        } else {
            (1u64 << end) - 1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_clear_count_scan() {
        let b = Bitmap::new(130);
        assert!(b.set(3));
        assert!(!b.set(3));
        assert!(b.set(129));
        assert!(!b.set(130));
        assert_eq!(b.count(), 2);
        assert_eq!(b.next_set(0), Some(3));
        assert_eq!(b.next_set(4), Some(129));
        assert!(b.clear(3));
        assert_eq!(b.next_set(0), Some(129));
        assert_eq!(b.set_all(), 129);
        assert_eq!(b.count(), 130);
        b.clear_all();
        assert!(!b.any());
        assert_eq!(b.or_word(2, u64::MAX), 2);
        assert_eq!(b.count(), 2);
    }
}
