//! Data block allocation, kept in memory.
//!
//! The allocator is rebuilt at open from the durable extent map: every block of the data
//! region not referenced by an extent is free. Blocks freed by a transaction that is not yet
//! durable go to a pending list and are handed out again only after a durable commit, so that
//! a crash can never bring back a file whose blocks were meanwhile reused by another.

use std::collections::BTreeMap;

/// Free runs of the data region, plus the pending (freed but not yet durably) runs.
pub(crate) struct Allocator {
    /// Free runs: start -> length. Never adjacent, never overlapping.
    free: BTreeMap<u64, u64>,
    free_blocks: u64,
    /// Freed runs waiting for a durable commit, oldest first, each tagged with its epoch.
    pending: Vec<(u64, u64, u64)>,
    pending_blocks: u64,
    /// Where the next search for a run starts.
    cursor: u64,
}

impl Allocator {
    /// An allocator whose free space is `region` minus the sorted, non-overlapping `used` runs.
    pub(crate) fn new(region: (u64, u64), used: &[(u64, u64)]) -> Allocator {
        let mut a = Allocator {
            free: BTreeMap::new(),
            free_blocks: 0,
            pending: Vec::new(),
            pending_blocks: 0,
            cursor: region.0,
        };
        let end = region.0 + region.1;
        let mut at = region.0;
        for &(s, n) in used {
            if s > at {
                a.insert_free(at, s - at);
            }
            at = at.max(s + n);
        }
        if at < end {
            a.insert_free(at, end - at);
        }
        a
    }

    /// Blocks free now.
    pub(crate) fn free_blocks(&self) -> u64 {
        self.free_blocks
    }

    /// Blocks waiting for a durable commit.
    pub(crate) fn pending_blocks(&self) -> u64 {
        self.pending_blocks
    }

    /// The free runs, for the checker.
    pub(crate) fn free_runs(&self) -> Vec<(u64, u64)> {
        self.free.iter().map(|(&s, &n)| (s, n)).collect()
    }

    /// The pending runs, for the checker.
    pub(crate) fn pending_runs(&self) -> Vec<(u64, u64)> {
        self.pending.iter().map(|&(s, n, _)| (s, n)).collect()
    }

    /// Takes `count` blocks, preferring a run starting at `hint`, then long runs from the
    /// cursor on. `None` if fewer than `count` blocks are free; nothing is taken then.
    pub(crate) fn allocate(&mut self, count: u64, hint: Option<u64>) -> Option<Vec<(u64, u64)>> {
        if count == 0 {
            return Some(Vec::new());
        }
        if count > self.free_blocks {
            return None;
        }
        let mut out = Vec::new();
        let mut left = count;
        if let Some(h) = hint
            && let Some((&s, &n)) = self.free.range(..=h).next_back()
            && s + n > h
        {
            let take = left.min(s + n - h);
            self.take(h, take);
            out.push((h, take));
            left -= take;
        }
        while left > 0 {
            // First a run from the cursor on that holds all that is left, else the next run.
            let fit = self
                .free
                .range(self.cursor..)
                .find(|&(_, &n)| n >= left)
                .map(|(&s, &n)| (s, n));
            let (s, n) = match fit
                .or_else(|| self.free.range(self.cursor..).next().map(|(&s, &n)| (s, n)))
            {
                Some(r) => r,
                None => match self.free.iter().next() {
                    Some((&s, &n)) => (s, n),
                    None => break,
                },
            };
            let take = left.min(n);
            self.take(s, take);
            out.push((s, take));
            left -= take;
            self.cursor = s + take;
        }
        Some(out)
    }

    /// Returns runs that were never committed to the free list at once.
    pub(crate) fn release_now(&mut self, runs: &[(u64, u64)]) {
        for &(s, n) in runs {
            self.insert_free(s, n);
        }
    }

    /// Queues runs freed by a committed, not yet durable, transaction.
    pub(crate) fn release_pending(&mut self, runs: &[(u64, u64)], epoch: u64) {
        for &(s, n) in runs {
            if n > 0 {
                self.pending.push((s, n, epoch));
                self.pending_blocks += n;
            }
        }
    }

    /// Frees every pending run whose epoch is below `durable_epoch`.
    pub(crate) fn durable_up_to(&mut self, durable_epoch: u64) {
        let (done, keep): (Vec<_>, Vec<_>) = self
            .pending
            .drain(..)
            .partition(|&(_, _, e)| e < durable_epoch);
        self.pending = keep;
        for (s, n, _) in done {
            self.pending_blocks -= n;
            self.insert_free(s, n);
        }
    }

    fn take(&mut self, at: u64, count: u64) {
        let Some((&s, &n)) = self.free.range(..=at).next_back() else {
            return;
        };
        debug_assert!(s <= at && at + count <= s + n);
        self.free.remove(&s);
        if at > s {
            self.free.insert(s, at - s);
        }
        if at + count < s + n {
            self.free.insert(at + count, s + n - at - count);
        }
        self.free_blocks -= count;
    }

    fn insert_free(&mut self, start: u64, count: u64) {
        if count == 0 {
            return;
        }
        let (mut s, mut n) = (start, count);
        if let Some((&ps, &pn)) = self.free.range(..s).next_back()
            && ps + pn == s
        {
            self.free.remove(&ps);
            s = ps;
            n += pn;
        }
        if let Some(&nn) = self.free.get(&(start + count)) {
            self.free.remove(&(start + count));
            n += nn;
        }
        self.free.insert(s, n);
        self.free_blocks += count;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocate_free_and_pending() {
        let mut a = Allocator::new((100, 100), &[(110, 10), (150, 5)]);
        assert_eq!(a.free_blocks(), 85);
        let got = a.allocate(15, None).unwrap();
        assert_eq!(got.iter().map(|r| r.1).sum::<u64>(), 15);
        assert_eq!(a.free_blocks(), 70);
        a.release_pending(&got, 1);
        assert_eq!(a.free_blocks(), 70);
        a.durable_up_to(1);
        assert_eq!(a.pending_blocks(), 15);
        a.durable_up_to(2);
        assert_eq!(a.free_blocks(), 85);
        assert!(a.allocate(86, None).is_none());
        let all = a.allocate(85, Some(100)).unwrap();
        assert_eq!(all[0], (100, 10));
        assert_eq!(a.free_blocks(), 0);
        a.release_now(&all);
        assert_eq!(a.free_runs(), vec![(100, 10), (120, 30), (155, 45)]);
    }
}
