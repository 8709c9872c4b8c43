//! The replicated volume over unlocked drives.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::layout::{DriveRun, Layout};
use super::{BlockDevice, check_run};
use crate::BLOCK_SIZE;
use crate::drive::Drive;

/// Below this many bytes per request, drives are served one after the other on the calling
/// thread; above, each drive's part runs on its own thread.
const PARALLEL_THRESHOLD: usize = 256 * 1024;

/// One drive position in the volume.
pub struct Member {
    drive: Arc<Drive>,
    failed: AtomicBool,
    read_errors: AtomicU64,
    write_errors: AtomicU64,
}

impl Member {
    /// The drive.
    pub fn drive(&self) -> &Arc<Drive> {
        &self.drive
    }

    /// Whether the drive was marked failed after an I/O error.
    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    fn fail(&self, slot: usize, op: &str, e: &io::Error) {
        if !self.failed.swap(true, Ordering::Relaxed) {
            tracing::error!(slot, drive = %self.drive.path().display(), op, error = %e,
                "drive I/O error: drive marked failed");
        }
    }
}

/// A block mismatch found by [`Pool::verify_copies`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyMismatch {
    /// Logical block.
    pub lbn: u64,
    /// Copy that differs from copy 0 (or could not be read).
    pub copy: u64,
    /// Drive index of that copy.
    pub drive: usize,
}

/// The volume: logical blocks, each stored as `r` copies on distinct drives, each copy
/// encrypted under its own drive's key.
pub struct Pool {
    layout: Layout,
    members: Vec<Member>,
}

impl Pool {
    /// Assembles a pool from unlocked drives given in slot order.
    pub fn new(drives: Vec<Arc<Drive>>, replicas: u32) -> io::Result<Pool> {
        let n = drives.len() as u64;
        if n == 0 || replicas == 0 || replicas as u64 > n {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{replicas} replicas over {n} drives"),
            ));
        }
        let drive_blocks = drives.iter().map(|d| d.data_blocks()).min().unwrap_or(0);
        let layout = Layout {
            drives: n,
            replicas: replicas as u64,
            drive_blocks,
        };
        let members = drives
            .into_iter()
            .map(|drive| Member {
                drive,
                failed: AtomicBool::new(false),
                read_errors: AtomicU64::new(0),
                write_errors: AtomicU64::new(0),
            })
            .collect();
        Ok(Pool { layout, members })
    }

    /// The volume's geometry.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The drives, in slot order.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Read and write error counts of drive `slot`.
    pub fn error_counts(&self, slot: usize) -> (u64, u64) {
        let m = &self.members[slot];
        (
            m.read_errors.load(Ordering::Relaxed),
            m.write_errors.load(Ordering::Relaxed),
        )
    }

    fn write_run(&self, lbn: u64, src: &[u8], run: &DriveRun) -> io::Result<()> {
        let member = &self.members[run.drive];
        if member.is_failed() {
            return Ok(());
        }
        let mut buf = vec![0u8; run.count as usize * BLOCK_SIZE];
        for (i, dst) in buf.chunks_exact_mut(BLOCK_SIZE).enumerate() {
            let j = run.first_j + i as u64 * self.layout.drives;
            let l = (j / self.layout.replicas - lbn) as usize;
            dst.copy_from_slice(&src[l * BLOCK_SIZE..(l + 1) * BLOCK_SIZE]);
        }
        if let Err(e) = member.drive.write_blocks_in_place(run.pbn, &mut buf) {
            member.write_errors.fetch_add(1, Ordering::Relaxed);
            member.fail(run.drive, "write", &e);
        }
        Ok(())
    }

    /// Reads copy `k` of one logical block from its drive.
    pub fn read_copy(&self, lbn: u64, k: u64, buf: &mut [u8]) -> io::Result<()> {
        let p = self.layout.place(lbn, k);
        self.members[p.drive]
            .drive
            .read_blocks(p.pbn, &mut buf[..BLOCK_SIZE])
    }

    /// Reads one logical block from the first copy that reads.
    fn read_one(&self, lbn: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut last = None;
        for k in 0..self.layout.replicas {
            let p = self.layout.place(lbn, k);
            let member = &self.members[p.drive];
            if member.is_failed() {
                continue;
            }
            match member.drive.read_blocks(p.pbn, buf) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    member.read_errors.fetch_add(1, Ordering::Relaxed);
                    member.fail(p.drive, "read", &e);
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::other(format!(
                "logical block {lbn}: no readable copy (all drives failed)"
            ))
        }))
    }

    /// Reads one drive's span for a logical run and decrypts the copy-0 blocks in it, in
    /// place. Returns the span buffer, or the error that failed the drive.
    fn read_span(&self, run: &DriveRun) -> io::Result<Vec<u8>> {
        let member = &self.members[run.drive];
        let mut span = vec![0u8; run.count as usize * BLOCK_SIZE];
        if let Err(e) = member.drive.read_ciphertext(run.pbn, &mut span) {
            member.read_errors.fetch_add(1, Ordering::Relaxed);
            member.fail(run.drive, "read", &e);
            return Err(e);
        }
        for (i, block) in span.chunks_exact_mut(BLOCK_SIZE).enumerate() {
            let j = run.first_j + i as u64 * self.layout.drives;
            if j.is_multiple_of(self.layout.replicas) {
                member.drive.decrypt_block(run.pbn + i as u64, block);
            }
        }
        Ok(span)
    }

    /// Reads a run of logical blocks: one contiguous read per drive over the span it holds
    /// (with `r` copies that span also holds other copies, which are skipped), decrypting only
    /// copy 0 of each block. A drive that is failed or fails now is replaced, block by block,
    /// by the other copies.
    fn read_run(&self, lbn: u64, buf: &mut [u8]) -> io::Result<()> {
        let count = (buf.len() / BLOCK_SIZE) as u64;
        let runs = self.layout.drive_runs(lbn, count);
        let spans: Vec<Option<Vec<u8>>> = if buf.len() >= PARALLEL_THRESHOLD && runs.len() > 1 {
            std::thread::scope(|s| {
                let handles: Vec<_> = runs
                    .iter()
                    .map(|run| {
                        s.spawn(move || {
                            if self.members[run.drive].is_failed() {
                                None
                            } else {
                                self.read_span(run).ok()
                            }
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("reader thread"))
                    .collect()
            })
        } else {
            runs.iter()
                .map(|run| {
                    if self.members[run.drive].is_failed() {
                        None
                    } else {
                        self.read_span(run).ok()
                    }
                })
                .collect()
        };

        for (run, span) in runs.iter().zip(spans) {
            for i in 0..run.count {
                let j = run.first_j + i * self.layout.drives;
                if !j.is_multiple_of(self.layout.replicas) {
                    continue;
                }
                let l = (j / self.layout.replicas - lbn) as usize;
                let dst = &mut buf[l * BLOCK_SIZE..(l + 1) * BLOCK_SIZE];
                match &span {
                    Some(span) => {
                        let at = i as usize * BLOCK_SIZE;
                        dst.copy_from_slice(&span[at..at + BLOCK_SIZE]);
                    }
                    None => self.read_one(lbn + l as u64, dst)?,
                }
            }
        }
        Ok(())
    }

    /// Compares every copy of every block in `runs` with copy 0. Returns the mismatches.
    pub fn verify_copies(&self, runs: &[(u64, u64)]) -> io::Result<Vec<CopyMismatch>> {
        let mut out = Vec::new();
        let mut first = vec![0u8; BLOCK_SIZE];
        let mut other = vec![0u8; BLOCK_SIZE];
        for &(start, count) in runs {
            for lbn in start..start + count {
                self.read_copy(lbn, 0, &mut first)?;
                for k in 1..self.layout.replicas {
                    let drive = self.layout.place(lbn, k).drive;
                    let same = self.read_copy(lbn, k, &mut other).is_ok() && other == first;
                    if !same {
                        out.push(CopyMismatch {
                            lbn,
                            copy: k,
                            drive,
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    /// Rewrites every copy of the given blocks from copy 0, making the copies agree again.
    pub fn resync_from_primary(&self, lbns: &[u64]) -> io::Result<()> {
        let mut buf = vec![0u8; BLOCK_SIZE];
        for &lbn in lbns {
            self.read_copy(lbn, 0, &mut buf)?;
            for k in 1..self.layout.replicas {
                let p = self.layout.place(lbn, k);
                let mut copy = buf.clone();
                self.members[p.drive]
                    .drive
                    .write_blocks_in_place(p.pbn, &mut copy)?;
            }
        }
        self.sync()
    }
}

impl BlockDevice for Pool {
    fn block_count(&self) -> u64 {
        self.layout.logical_blocks()
    }

    fn read_blocks(&self, lbn: u64, buf: &mut [u8]) -> io::Result<()> {
        check_run(self.block_count(), lbn, buf.len())?;
        self.read_run(lbn, buf)
    }

    fn write_blocks(&self, lbn: u64, buf: &[u8]) -> io::Result<()> {
        let count = check_run(self.block_count(), lbn, buf.len())?;
        let runs = self.layout.drive_runs(lbn, count);
        if buf.len() >= PARALLEL_THRESHOLD && runs.len() > 1 {
            std::thread::scope(|s| {
                let handles: Vec<_> = runs
                    .iter()
                    .map(|run| s.spawn(move || self.write_run(lbn, buf, run)))
                    .collect();
                handles
                    .into_iter()
                    .try_for_each(|h| h.join().expect("writer thread"))
            })?;
        } else {
            for run in &runs {
                self.write_run(lbn, buf, run)?;
            }
        }
        // The write stands if every block kept at least one copy on a working drive.
        for l in lbn..lbn + count {
            let alive = (0..self.layout.replicas)
                .any(|k| !self.members[self.layout.place(l, k).drive].is_failed());
            if !alive {
                return Err(io::Error::other(format!(
                    "logical block {l}: every drive holding a copy has failed"
                )));
            }
        }
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        let results: Vec<io::Result<()>> = std::thread::scope(|s| {
            let handles: Vec<_> = self
                .members
                .iter()
                .filter(|m| !m.is_failed())
                .map(|m| s.spawn(move || m.drive.sync()))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("sync thread"))
                .collect()
        });
        results.into_iter().collect()
    }
}
