//! Where the copies of a logical block live.
//!
//! The copies of all logical blocks, taken in order (block 0 copy 0, block 0 copy 1, ...,
//! block 1 copy 0, ...), are dealt round-robin over the drives: copy `k` of logical block `L`
//! is copy number `j = L * r + k`, stored on drive `j mod N` at physical block `j div N`.
//! Since `r <= N`, the `r` copies of a block land on `r` distinct drives; and a run of logical
//! blocks maps, on each drive, to one contiguous run of physical blocks.

/// The geometry of a volume: drive count, replica count, data blocks per drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Number of drives, N.
    pub drives: u64,
    /// Copies of each logical block, r (1 <= r <= N).
    pub replicas: u64,
    /// Physical blocks in each drive's data area.
    pub drive_blocks: u64,
}

/// One copy of one logical block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Drive index.
    pub drive: usize,
    /// Physical block number on that drive.
    pub pbn: u64,
}

/// The run of physical blocks that one drive holds for a run of logical blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DriveRun {
    /// Drive index.
    pub drive: usize,
    /// First physical block.
    pub pbn: u64,
    /// Number of physical blocks.
    pub count: u64,
    /// Copy number `j` of the first block; the i-th block of the run is copy `first_j + i*N`.
    pub first_j: u64,
}

impl Layout {
    /// Number of logical blocks the volume offers.
    pub fn logical_blocks(&self) -> u64 {
        self.drives * self.drive_blocks / self.replicas
    }

    /// Copy `k` of logical block `lbn`.
    pub fn place(&self, lbn: u64, k: u64) -> Placement {
        let j = lbn * self.replicas + k;
        Placement {
            drive: (j % self.drives) as usize,
            pbn: j / self.drives,
        }
    }

    /// The logical block and copy number stored at physical block `pbn` of `drive`, if that
    /// physical block is in use by the layout.
    pub fn logical_of(&self, drive: usize, pbn: u64) -> Option<(u64, u64)> {
        let j = pbn * self.drives + drive as u64;
        let lbn = j / self.replicas;
        (lbn < self.logical_blocks()).then_some((lbn, j % self.replicas))
    }

    /// For the logical run `[lbn, lbn + count)`, the physical run on each drive that holds
    /// any of its copies.
    pub fn drive_runs(&self, lbn: u64, count: u64) -> Vec<DriveRun> {
        let j0 = lbn * self.replicas;
        let j1 = (lbn + count) * self.replicas;
        let mut runs = Vec::with_capacity(self.drives as usize);
        for d in 0..self.drives {
            let first_j = j0 + (d + self.drives - j0 % self.drives) % self.drives;
            if first_j >= j1 {
                continue;
            }
            let n = (j1 - 1 - first_j) / self.drives + 1;
            runs.push(DriveRun {
                drive: d as usize,
                pbn: first_j / self.drives,
                count: n,
                first_j,
            });
        }
        runs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_on_distinct_drives_and_runs_cover_all() {
        for n in 1..=6u64 {
            for r in 1..=n {
                let l = Layout {
                    drives: n,
                    replicas: r,
                    drive_blocks: 50,
                };
                let total = l.logical_blocks();
                let mut seen = vec![vec![false; 50]; n as usize];
                for lbn in 0..total {
                    let mut ds: Vec<usize> = (0..r).map(|k| l.place(lbn, k).drive).collect();
                    ds.sort();
                    ds.dedup();
                    assert_eq!(ds.len() as u64, r);
                    for k in 0..r {
                        let p = l.place(lbn, k);
                        assert!(p.pbn < 50);
                        assert!(!seen[p.drive][p.pbn as usize]);
                        seen[p.drive][p.pbn as usize] = true;
                        assert_eq!(l.logical_of(p.drive, p.pbn), Some((lbn, k)));
                    }
                }
                for (start, count) in [(0, 1), (3, 7), (0, total)] {
                    if start + count > total {
                        continue;
                    }
                    let runs = l.drive_runs(start, count);
                    let blocks: u64 = runs.iter().map(|r| r.count).sum();
                    assert_eq!(blocks, count * r);
                    for run in runs {
                        for i in 0..run.count {
                            let j = run.first_j + i * n;
                            assert_eq!(j % n, run.drive as u64);
                            assert_eq!(j / n, run.pbn + i);
                        }
                    }
                }
            }
        }
    }
}
