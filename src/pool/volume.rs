//! The replicated volume over unlocked drives: slot states, checksummed block copies,
//! degraded reads and writes, stale-block tracking, pull, reinsert, replace, the background
//! restriper (resync and rebuild) and scrub.
//!
//! Concurrency. Writers take a shared lock on the stripes (runs of [`STRIPE_BLOCKS`] logical
//! blocks) they touch; whatever repairs a block (a read that found a bad copy, scrub, the
//! restriper) takes that block's stripe exclusively and looks at every copy again, so it
//! never writes old data over a write in flight. Slot transitions that change where writes go
//! (pull, insert, replace) take every stripe exclusively for the instant of the switch. Plain
//! reads take no lock.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use serde::Serialize;

use super::bitmap::Bitmap;
use super::layout::{DriveRun, Layout};
use super::stale::{self, REGION_BLOCKS, StaleRecord};
use super::sums::{self, SUMS_PER_BLOCK, block_sum, sum_ok};
use super::{BlockDevice, check_run};
use crate::BLOCK_SIZE;
use crate::drive::Drive;

/// Below this many bytes per request, drives are served one after the other on the calling
/// thread and one core does the cipher work; above, the calling thread shares each drive's
/// part and each half of the cipher work with rayon's worker threads ([`both`], [`on_all`]).
const PARALLEL_THRESHOLD: usize = 256 * 1024;
/// Blocks per chunk when two workers share a large read or write, each taking the next chunk
/// not yet taken (so that a worker woken late takes fewer). Small, because writes to one
/// image file are serialised by the kernel: the smaller the chunks, the sooner the writes
/// start and the shorter the one left at the end (1 MiB direct writes: 64 KiB chunks +18%
/// over 256 KiB ones; 32 KiB gain nothing more).
const PIPELINE_BLOCKS: usize = 16;
/// Logical blocks per lock stripe.
const STRIPE_BLOCKS: u64 = 256;
/// Number of lock stripes.
const STRIPES: usize = 4096;

/// How a pool is opened.
#[derive(Clone, Debug)]
pub struct PoolOptions {
    /// Directory for the stale-block files (`pool-slot-<i>.stale`). Without it, blocks written
    /// while a drive is out are tracked in memory only and a crash forgets them.
    pub state_dir: Option<PathBuf>,
    /// How often the background thread checks that every image is still under its path.
    /// `None`: only after an I/O error or when [`Pool::check_images`] is called.
    pub watch_interval: Option<Duration>,
    /// The last run did not stop cleanly: a block whose every copy fails its checksum is taken
    /// as an unsynced write cut by the crash (copy 0 wins, the sums are rewritten) instead of
    /// an unreadable block. See `docs/FORMAT.md`.
    pub after_unclean_stop: bool,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            state_dir: None,
            watch_interval: Some(Duration::from_secs(1)),
            after_unclean_stop: false,
        }
    }
}

/// What sits in a drive slot when the pool is opened.
pub enum SlotInit {
    /// An unlocked drive of this volume, header checked by the caller.
    Present(Arc<Drive>),
    /// The volume's drive for this slot is not there (image gone or unreadable).
    Missing {
        /// Where it was.
        path: PathBuf,
        /// Its drive id.
        drive_id: [u8; 16],
    },
    /// The image in this slot belongs to another volume.
    WrongCluster {
        /// Its path.
        path: PathBuf,
    },
    /// No drive in the slot.
    Empty,
}

/// State of a drive slot, named as Qumulo names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotState {
    /// The drive is in and serving (possibly still being resynced: see `stale_blocks`).
    Healthy,
    /// The drive was pulled or its image is gone.
    Missing,
    /// The drive gave I/O errors and is no longer used.
    Dead,
    /// The drive offered for this slot belongs to another volume.
    WrongCluster,
    /// No drive in the slot.
    Empty,
}

impl SlotState {
    fn from_u8(v: u8) -> SlotState {
        match v {
            0 => SlotState::Healthy,
            1 => SlotState::Missing,
            2 => SlotState::Dead,
            3 => SlotState::WrongCluster,
            _ => SlotState::Empty,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            SlotState::Healthy => 0,
            SlotState::Missing => 1,
            SlotState::Dead => 2,
            SlotState::WrongCluster => 3,
            SlotState::Empty => 4,
        }
    }

    /// The API name: `healthy`, `missing`, `dead`, `wrong_cluster`, `empty`.
    pub fn as_str(self) -> &'static str {
        match self {
            SlotState::Healthy => "healthy",
            SlotState::Missing => "missing",
            SlotState::Dead => "dead",
            SlotState::WrongCluster => "wrong_cluster",
            SlotState::Empty => "empty",
        }
    }
}

/// One slot as [`Pool::slots`] reports it.
#[derive(Clone, Debug, Serialize)]
pub struct SlotStatus {
    /// Slot number, 0-based.
    pub id: usize,
    /// State.
    pub state: SlotState,
    /// Image path, when known.
    pub path: Option<PathBuf>,
    /// Drive id (hex), when known.
    pub drive_id: Option<String>,
    /// Read I/O errors seen.
    pub read_errors: u64,
    /// Write I/O errors seen.
    pub write_errors: u64,
    /// Copies that failed their checksum.
    pub checksum_errors: u64,
    /// Copies rewritten from another copy (read repair and scrub).
    pub repaired_blocks: u64,
    /// Physical blocks of this slot that do not hold current data yet.
    pub stale_blocks: u64,
    /// The whole drive needs rebuilding (replaced, dead, or unknown).
    pub rebuild: bool,
}

/// What the restriper is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RestriperState {
    /// Nothing to do.
    Idle,
    /// Copying the blocks a reinserted drive missed.
    Resyncing,
    /// Rebuilding every block of a replaced drive.
    Rebuilding,
}

/// Progress of the restriper, for `/v1/cluster/protection/restriper/status`.
#[derive(Clone, Debug, Serialize)]
pub struct RestriperStatus {
    /// State.
    pub state: RestriperState,
    /// Slot being worked on.
    pub slot: Option<usize>,
    /// Blocks done in the current job.
    pub blocks_done: u64,
    /// Blocks in the current job.
    pub blocks_total: u64,
    /// Bytes copied in the current job.
    pub bytes_done: u64,
    /// Copy rate, bytes per second.
    pub rate_bytes_per_sec: u64,
    /// Estimated seconds left.
    pub eta_seconds: Option<u64>,
    /// Blocks that had no good copy to restore from (left stale).
    pub unrecoverable: u64,
}

impl RestriperStatus {
    fn idle() -> Self {
        RestriperStatus {
            state: RestriperState::Idle,
            slot: None,
            blocks_done: 0,
            blocks_total: 0,
            bytes_done: 0,
            rate_bytes_per_sec: 0,
            eta_seconds: None,
            unrecoverable: 0,
        }
    }
}

/// Counts of a scrub.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ScrubReport {
    /// Logical blocks whose copies were read and compared.
    pub checked: u64,
    /// Copies rewritten (failed checksum, differed from the good copy, or unreadable).
    pub repaired: u64,
    /// Logical blocks with no good copy.
    pub unrecoverable: u64,
}

/// Errors of slot operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// No such slot.
    #[error("no drive slot {slot} (the volume has {count})")]
    NoSlot {
        /// Slot asked for.
        slot: usize,
        /// Slots in the volume.
        count: usize,
    },
    /// The slot is not in a state that allows the operation.
    #[error("drive slot {slot} is {state}: cannot {op}")]
    BadState {
        /// Slot.
        slot: usize,
        /// Its state.
        state: &'static str,
        /// What was asked.
        op: &'static str,
    },
    /// The drive offered does not fit the slot.
    #[error("drive {path} does not fit slot {slot}: {detail}")]
    Mismatch {
        /// Slot.
        slot: usize,
        /// Image path.
        path: PathBuf,
        /// What differs.
        detail: String,
    },
    /// I/O on the drive or the state directory failed.
    #[error("drive slot {slot}: {op}: {source}")]
    Io {
        /// Slot.
        slot: usize,
        /// What was being done.
        op: &'static str,
        /// The error.
        source: io::Error,
    },
}

/// A drive attached to a slot, with its checksums.
struct Attached {
    drive: Arc<Drive>,
    /// Checksum of each usable physical block (0: never written).
    sums: Vec<AtomicU32>,
    /// Blocks written since the last sync (their checksum blocks must be written).
    dirty: Bitmap,
    /// Serialises checksum flushes, so that a sync returns only once every checksum block
    /// taken by a concurrent sync is written too.
    flush: Mutex<()>,
}

/// One drive position.
struct SlotCell {
    state: AtomicU8,
    attached: RwLock<Option<Arc<Attached>>>,
    path: Mutex<Option<PathBuf>>,
    drive_id: Mutex<Option<[u8; 16]>>,
    /// Physical blocks that do not hold current data.
    stale: Bitmap,
    stale_count: AtomicU64,
    /// Every block is stale.
    rebuild: AtomicBool,
    /// Regions recorded in the stale file (only set once the file is durable).
    regions: Bitmap,
    /// Stale bits cleared since the last sync began (kept in the file until synced).
    cleared: Bitmap,
    /// Stale bits cleared before the running sync began.
    cleared_syncing: Bitmap,
    /// The stale file exists.
    file_exists: AtomicBool,
    /// Stale bits changed since the stale file was last written.
    changed: AtomicBool,
    /// `cleared` may have bits set.
    has_cleared: AtomicBool,
    /// Serialises stale-file writes.
    persist: Mutex<()>,
    /// The restriper found blocks without a good copy; retried after the next change.
    stuck: AtomicBool,
    read_errors: AtomicU64,
    write_errors: AtomicU64,
    checksum_errors: AtomicU64,
    repaired: AtomicU64,
}

/// A drive of the pool, as [`Pool::members`] lists them.
pub struct Member {
    slot: usize,
    drive: Arc<Drive>,
}

impl Member {
    /// The drive.
    pub fn drive(&self) -> &Arc<Drive> {
        &self.drive
    }

    /// Its slot.
    pub fn slot(&self) -> usize {
        self.slot
    }
}

/// A block mismatch found by [`Pool::verify_copies`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyMismatch {
    /// Logical block.
    pub lbn: u64,
    /// Copy that differs from the reference copy (or could not be read, or fails its sum).
    pub copy: u64,
    /// Drive slot of that copy.
    pub drive: usize,
}

/// How one copy read went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CopyRead {
    Good,
    /// Readable, checksum mismatch.
    BadSum,
    /// Slot out, or block stale.
    Unavailable,
    /// The drive failed now.
    IoError,
}

struct Inner {
    layout: Layout,
    /// First physical block of the checksum region on every drive.
    sum_base: u64,
    sum_blocks: u64,
    volume_id: [u8; 16],
    slots: Vec<SlotCell>,
    stripes: Vec<RwLock<()>>,
    state_dir: Option<PathBuf>,
    watch_interval: Option<Duration>,
    unclean: AtomicBool,
    wake: Mutex<bool>,
    wake_cv: Condvar,
    shutdown: AtomicBool,
    restriper: Mutex<RestriperStatus>,
    busy: AtomicBool,
}

/// The volume: logical blocks, each stored as `r` copies on distinct drives, each copy
/// encrypted under its own drive's key and checksummed.
pub struct Pool {
    inner: Arc<Inner>,
    worker: Option<std::thread::JoinHandle<()>>,
}

/// An unreadable block: the details go to the log, the caller gets a plain EIO.
fn eio(msg: String) -> io::Error {
    tracing::error!("{msg}");
    io::Error::from_raw_os_error(libc::EIO)
}

impl Pool {
    /// Assembles a pool from unlocked drives given in slot order, without a state directory.
    /// Not knowing whether the last run stopped cleanly, it opens with
    /// [`PoolOptions::after_unclean_stop`] set (a block whose every copy fails its checksum
    /// reads as copy 0 instead of EIO); [`Pool::open`] with the real flag is stricter.
    pub fn new(drives: Vec<Arc<Drive>>, replicas: u32) -> io::Result<Pool> {
        let slots = drives.into_iter().map(SlotInit::Present).collect();
        let opts = PoolOptions {
            after_unclean_stop: true,
            ..PoolOptions::default()
        };
        Pool::open(slots, replicas, opts)
    }

    /// Assembles a pool from its slots. With a state directory, each slot's stale file is
    /// loaded: a present drive with stale blocks is resynced in the background (rebuilt if the
    /// file names another drive).
    pub fn open(slots: Vec<SlotInit>, replicas: u32, opts: PoolOptions) -> io::Result<Pool> {
        let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
        let n = slots.len() as u64;
        if n == 0 || replicas == 0 || replicas as u64 > n {
            return Err(invalid(format!("{replicas} replicas over {n} drives")));
        }
        let present: Vec<&Arc<Drive>> = slots
            .iter()
            .filter_map(|s| match s {
                SlotInit::Present(d) => Some(d),
                _ => None,
            })
            .collect();
        let Some(first) = present.first() else {
            return Err(invalid("no drive of the volume is present".into()));
        };
        let volume_id = first.header().volume_id;
        let min_blocks = present.iter().map(|d| d.data_blocks()).min().unwrap_or(0);
        let (usable, sum_blocks) = sums::split(min_blocks);
        let layout = Layout {
            drives: n,
            replicas: replicas as u64,
            drive_blocks: usable,
        };

        let mut cells = Vec::with_capacity(slots.len());
        let mut attach_later = Vec::new();
        for (i, init) in slots.into_iter().enumerate() {
            let cell = SlotCell::new(usable);
            match init {
                SlotInit::Present(d) => {
                    let h = d.header();
                    if h.volume_id != volume_id || h.slot as usize != i {
                        return Err(invalid(format!(
                            "drive {} is slot {} of volume {}, not slot {i} of volume {}",
                            d.path().display(),
                            h.slot,
                            hex::encode(h.volume_id),
                            hex::encode(volume_id)
                        )));
                    }
                    *cell.path.lock() = Some(d.path().to_path_buf());
                    *cell.drive_id.lock() = Some(h.drive_id);
                    attach_later.push((i, d));
                }
                SlotInit::Missing { path, drive_id } => {
                    cell.set_state(SlotState::Missing);
                    *cell.path.lock() = Some(path);
                    *cell.drive_id.lock() = Some(drive_id);
                }
                SlotInit::WrongCluster { path } => {
                    cell.set_state(SlotState::WrongCluster);
                    *cell.path.lock() = Some(path);
                    cell.mark_rebuild();
                }
                SlotInit::Empty => {
                    cell.set_state(SlotState::Empty);
                    cell.mark_rebuild();
                }
            }
            cells.push(cell);
        }

        let inner = Arc::new(Inner {
            layout,
            sum_base: usable,
            sum_blocks,
            volume_id,
            slots: cells,
            stripes: (0..STRIPES).map(|_| RwLock::new(())).collect(),
            state_dir: opts.state_dir.clone(),
            watch_interval: opts.watch_interval,
            unclean: AtomicBool::new(opts.after_unclean_stop),
            wake: Mutex::new(false),
            wake_cv: Condvar::new(),
            shutdown: AtomicBool::new(false),
            restriper: Mutex::new(RestriperStatus::idle()),
            busy: AtomicBool::new(false),
        });
        for (i, d) in attach_later {
            let att = inner.load_attached(d.clone())?;
            *inner.slots[i].attached.write() = Some(Arc::new(att));
        }
        inner.load_stale_files()?;

        let worker_inner = inner.clone();
        let worker = std::thread::Builder::new()
            .name("atrest-restriper".into())
            .spawn(move || worker_inner.worker())?;
        inner.kick();
        Ok(Pool {
            inner,
            worker: Some(worker),
        })
    }

    /// The volume's geometry (`drive_blocks` is the usable part of each drive's data area).
    pub fn layout(&self) -> Layout {
        self.inner.layout
    }

    /// The drives now attached, in slot order.
    pub fn members(&self) -> Vec<Member> {
        self.inner
            .slots
            .iter()
            .enumerate()
            .filter_map(|(slot, c)| {
                c.attached.read().as_ref().map(|a| Member {
                    slot,
                    drive: a.drive.clone(),
                })
            })
            .collect()
    }

    /// Read and write error counts of drive `slot`.
    pub fn error_counts(&self, slot: usize) -> (u64, u64) {
        let c = &self.inner.slots[slot];
        (
            c.read_errors.load(Ordering::Relaxed),
            c.write_errors.load(Ordering::Relaxed),
        )
    }

    /// Every slot's state.
    pub fn slots(&self) -> Vec<SlotStatus> {
        self.inner
            .slots
            .iter()
            .enumerate()
            .map(|(id, c)| SlotStatus {
                id,
                state: c.state(),
                path: c.path.lock().clone(),
                drive_id: c.drive_id.lock().map(hex::encode),
                read_errors: c.read_errors.load(Ordering::Relaxed),
                write_errors: c.write_errors.load(Ordering::Relaxed),
                checksum_errors: c.checksum_errors.load(Ordering::Relaxed),
                repaired_blocks: c.repaired.load(Ordering::Relaxed),
                stale_blocks: c.stale_count.load(Ordering::Relaxed),
                rebuild: c.rebuild.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// What the restriper is doing.
    pub fn restriper_status(&self) -> RestriperStatus {
        self.inner.restriper.lock().clone()
    }

    /// Ends the crash-recovery rule of [`PoolOptions::after_unclean_stop`] (call once the
    /// blocks in use were scrubbed after an unclean start).
    pub fn end_unclean_recovery(&self) {
        self.inner.unclean.store(false, Ordering::Relaxed);
    }

    /// Waits until no attached drive has stale blocks left that can be restored (or until
    /// `timeout`). Returns whether the pool got there.
    pub fn wait_restriped(&self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if !self.inner.restripe_pending() && !self.inner.busy.load(Ordering::Acquire) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Takes the drive out of slot `slot` as if it were pulled: its image is closed and no
    /// longer touched, and every block written from now on (and any written since the last
    /// sync) is recorded as stale for it.
    pub fn pull(&self, slot: usize) -> Result<(), PoolError> {
        self.inner.check_slot(slot)?;
        if !self.inner.detach(slot, SlotState::Missing, "pulled") {
            return Err(PoolError::BadState {
                slot,
                state: self.inner.slots[slot].state().as_str(),
                op: "pull",
            });
        }
        Ok(())
    }

    /// Puts the volume's own drive back into slot `slot` (missing, dead or wrong_cluster). Its
    /// header must name this volume, this slot and the drive id last seen there. The blocks it
    /// missed are resynced in the background from the other copies (a drive that was dead is
    /// rebuilt whole). Returns the number of blocks to resync.
    pub fn insert(&self, slot: usize, drive: Arc<Drive>) -> Result<u64, PoolError> {
        let inner = &self.inner;
        inner.check_slot(slot)?;
        let cell = &inner.slots[slot];
        let state = cell.state();
        if !matches!(
            state,
            SlotState::Missing | SlotState::Dead | SlotState::WrongCluster
        ) {
            return Err(PoolError::BadState {
                slot,
                state: state.as_str(),
                op: "insert",
            });
        }
        let h = drive.header();
        let mismatch = |detail: String| PoolError::Mismatch {
            slot,
            path: drive.path().to_path_buf(),
            detail,
        };
        if h.volume_id != inner.volume_id {
            cell.set_state(SlotState::WrongCluster);
            *cell.path.lock() = Some(drive.path().to_path_buf());
            return Err(mismatch(format!(
                "it belongs to volume {}, this is {}",
                hex::encode(h.volume_id),
                hex::encode(inner.volume_id)
            )));
        }
        if h.slot as usize != slot {
            return Err(mismatch(format!("its header names slot {}", h.slot)));
        }
        let expected = *cell.drive_id.lock();
        if expected.is_some_and(|id| id != h.drive_id) {
            return Err(mismatch(format!(
                "drive id {} is not the drive {} of this slot (use replace)",
                hex::encode(h.drive_id),
                hex::encode(expected.unwrap_or_default())
            )));
        }
        let att = inner
            .load_attached(drive.clone())
            .map_err(|source| PoolError::Io {
                slot,
                op: "read checksums",
                source,
            })?;
        let count = {
            let _all = inner.lock_all();
            if state == SlotState::Dead {
                cell.mark_rebuild();
            }
            *cell.attached.write() = Some(Arc::new(att));
            *cell.path.lock() = Some(drive.path().to_path_buf());
            *cell.drive_id.lock() = Some(h.drive_id);
            cell.set_state(SlotState::Healthy);
            cell.stale_count.load(Ordering::Acquire)
        };
        inner.persist_or_log(slot);
        inner.unstick_all();
        tracing::info!(slot, drive = %drive.path().display(), stale_blocks = count,
            "drive reinserted; resyncing the blocks it missed");
        inner.kick();
        Ok(count)
    }

    /// Puts a freshly formatted drive of this volume into slot `slot` (any state), in place of
    /// whatever was there. Every block of the slot is rebuilt from the other copies in the
    /// background while I/O goes on; writes meanwhile land on the new drive too. Returns the
    /// number of blocks to rebuild.
    pub fn replace(&self, slot: usize, drive: Arc<Drive>) -> Result<u64, PoolError> {
        let inner = &self.inner;
        inner.check_slot(slot)?;
        let cell = &inner.slots[slot];
        let h = drive.header();
        let mismatch = |detail: String| PoolError::Mismatch {
            slot,
            path: drive.path().to_path_buf(),
            detail,
        };
        if h.volume_id != inner.volume_id {
            return Err(mismatch(format!(
                "it belongs to volume {}",
                hex::encode(h.volume_id)
            )));
        }
        if h.slot as usize != slot {
            return Err(mismatch(format!("its header names slot {}", h.slot)));
        }
        if *cell.drive_id.lock() == Some(h.drive_id) {
            return Err(mismatch(
                "it is the drive already known in this slot (use insert)".into(),
            ));
        }
        if drive.data_blocks() < inner.sum_base + inner.sum_blocks {
            return Err(mismatch(format!(
                "{} data blocks, the volume needs {}",
                drive.data_blocks(),
                inner.sum_base + inner.sum_blocks
            )));
        }
        // A fresh drive: no checksum recorded, every block stale.
        let att = Attached {
            sums: (0..inner.sum_base).map(|_| AtomicU32::new(0)).collect(),
            dirty: Bitmap::new(inner.sum_base),
            flush: Mutex::new(()),
            drive: drive.clone(),
        };
        let (old, count) = {
            let _all = inner.lock_all();
            cell.mark_rebuild();
            let old = cell.attached.write().replace(Arc::new(att));
            *cell.path.lock() = Some(drive.path().to_path_buf());
            *cell.drive_id.lock() = Some(h.drive_id);
            cell.set_state(SlotState::Healthy);
            (old, cell.stale_count.load(Ordering::Acquire))
        };
        drop(old);
        inner.persist_or_log(slot);
        inner.unstick_all();
        tracing::info!(slot, drive = %drive.path().display(), blocks = count,
            "drive replaced; rebuilding");
        inner.kick();
        Ok(count)
    }

    /// Checks that every attached drive's image is still under its path; one that was deleted
    /// or renamed is treated as pulled. Returns the slots found gone. (The background thread
    /// does this every [`PoolOptions::watch_interval`].)
    pub fn check_images(&self) -> Vec<usize> {
        self.inner.check_images()
    }

    /// Reads every copy of every block in `runs` (`(first, count)` logical runs, as the
    /// filesystem's `used_blocks` gives; `None`: every block), checks each against its
    /// checksum and the copies against each other, and rewrites a copy that fails or differs
    /// from the good one.
    pub fn scrub(&self, runs: Option<&[(u64, u64)]>) -> io::Result<ScrubReport> {
        let all = [(0, self.inner.layout.logical_blocks())];
        let runs = runs.unwrap_or(&all);
        let inner = &self.inner;
        let mut report = ScrubReport::default();
        let r = inner.layout.replicas as usize;
        let mut copies = vec![[0u8; BLOCK_SIZE]; r];
        let mut states = vec![CopyRead::Unavailable; r];
        for &(start, count) in runs {
            check_run(
                inner.layout.logical_blocks(),
                start,
                count as usize * BLOCK_SIZE,
            )?;
            for lbn in start..start + count {
                let _g = inner.stripe(lbn).write();
                for k in 0..r {
                    states[k] = inner.read_copy_checked(lbn, k as u64, &mut copies[k]);
                }
                report.checked += 1;
                let reference = states
                    .iter()
                    .position(|s| *s == CopyRead::Good)
                    .or_else(|| {
                        let k = states.iter().position(|s| *s == CopyRead::BadSum)?;
                        inner.unclean.load(Ordering::Relaxed).then(|| {
                            tracing::warn!(
                                lbn,
                                copy = k,
                                "no copy matches its checksum after an \
                            unclean stop: taking it as a cut write"
                            );
                            k
                        })
                    });
                let Some(good) = reference else {
                    report.unrecoverable += 1;
                    tracing::error!(lbn, "scrub: no good copy of the block");
                    continue;
                };
                let g = copies[good];
                for k in 0..r {
                    let needs = match states[k] {
                        CopyRead::BadSum => true,
                        CopyRead::Good => k != good && copies[k] != g,
                        CopyRead::Unavailable | CopyRead::IoError => false,
                    };
                    if needs && inner.write_copy_of(lbn, k as u64, &g) {
                        report.repaired += 1;
                        let slot = inner.layout.place(lbn, k as u64).drive;
                        inner.slots[slot].repaired.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(lbn, copy = k, slot, "scrub rewrote a block copy");
                    }
                }
            }
        }
        Ok(report)
    }

    /// Compares every available copy of every block in `runs` with the first available copy
    /// (by content, and against its checksum). Returns the mismatches. Copies on a drive that
    /// is out, or stale, are skipped.
    pub fn verify_copies(&self, runs: &[(u64, u64)]) -> io::Result<Vec<CopyMismatch>> {
        let inner = &self.inner;
        let mut out = Vec::new();
        let mut first = vec![0u8; BLOCK_SIZE];
        let mut other = vec![0u8; BLOCK_SIZE];
        for &(start, count) in runs {
            check_run(
                inner.layout.logical_blocks(),
                start,
                count as usize * BLOCK_SIZE,
            )?;
            for lbn in start..start + count {
                let mut reference = None;
                for k in 0..inner.layout.replicas {
                    let buf = if reference.is_none() {
                        &mut first
                    } else {
                        &mut other
                    };
                    let st = inner.read_copy_checked(lbn, k, buf);
                    let drive = inner.layout.place(lbn, k).drive;
                    match st {
                        CopyRead::Unavailable => continue,
                        CopyRead::IoError | CopyRead::BadSum => {
                            out.push(CopyMismatch {
                                lbn,
                                copy: k,
                                drive,
                            });
                            if st == CopyRead::BadSum && reference.is_none() {
                                reference = Some(k);
                            }
                        }
                        CopyRead::Good => {
                            if reference.is_none() {
                                reference = Some(k);
                            } else if other != first {
                                out.push(CopyMismatch {
                                    lbn,
                                    copy: k,
                                    drive,
                                });
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.inner.shutdown.store(true, Ordering::Release);
        self.inner.kick();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

impl SlotCell {
    fn new(blocks: u64) -> SlotCell {
        SlotCell {
            state: AtomicU8::new(SlotState::Healthy.to_u8()),
            attached: RwLock::new(None),
            path: Mutex::new(None),
            drive_id: Mutex::new(None),
            stale: Bitmap::new(blocks),
            stale_count: AtomicU64::new(0),
            rebuild: AtomicBool::new(false),
            regions: stale::new_regions(blocks),
            cleared: Bitmap::new(blocks),
            cleared_syncing: Bitmap::new(blocks),
            file_exists: AtomicBool::new(false),
            changed: AtomicBool::new(false),
            has_cleared: AtomicBool::new(false),
            persist: Mutex::new(()),
            stuck: AtomicBool::new(false),
            read_errors: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            checksum_errors: AtomicU64::new(0),
            repaired: AtomicU64::new(0),
        }
    }

    fn state(&self) -> SlotState {
        SlotState::from_u8(self.state.load(Ordering::Acquire))
    }

    fn set_state(&self, s: SlotState) {
        self.state.store(s.to_u8(), Ordering::Release);
    }

    /// The attached drive, if the slot is healthy.
    fn usable(&self) -> Option<Arc<Attached>> {
        if self.state() != SlotState::Healthy {
            return None;
        }
        self.attached.read().clone()
    }

    fn mark_rebuild(&self) {
        self.rebuild.store(true, Ordering::Release);
        self.changed.store(true, Ordering::Release);
        let newly = self.stale.set_all();
        self.stale_count.fetch_add(newly, Ordering::AcqRel);
    }

    /// Marks `count` blocks from `pbn` stale; returns whether any was new.
    fn mark_stale(&self, pbn: u64, count: u64) -> bool {
        if self.rebuild.load(Ordering::Acquire) {
            return false;
        }
        let mut newly = 0;
        for p in pbn..pbn + count {
            if self.stale.set(p) {
                newly += 1;
            }
        }
        self.stale_count.fetch_add(newly, Ordering::AcqRel);
        if newly > 0 {
            self.changed.store(true, Ordering::Release);
        }
        newly > 0
    }

    /// Clears the stale bit of a block that now holds current data.
    fn clear_stale(&self, pbn: u64) {
        if self.stale.clear(pbn) {
            self.cleared.set(pbn);
            self.has_cleared.store(true, Ordering::Release);
            self.changed.store(true, Ordering::Release);
            self.stale_count.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Inner {
    fn check_slot(&self, slot: usize) -> Result<(), PoolError> {
        if slot >= self.slots.len() {
            return Err(PoolError::NoSlot {
                slot,
                count: self.slots.len(),
            });
        }
        Ok(())
    }

    fn kick(&self) {
        *self.wake.lock() = true;
        self.wake_cv.notify_all();
    }

    fn stripe(&self, lbn: u64) -> &RwLock<()> {
        &self.stripes[((lbn / STRIPE_BLOCKS) % STRIPES as u64) as usize]
    }

    /// Shared locks on the stripes of a logical run, taken in stripe order.
    fn lock_shared(&self, lbn: u64, count: u64) -> Vec<RwLockReadGuard<'_, ()>> {
        let c0 = lbn / STRIPE_BLOCKS;
        let c1 = (lbn + count - 1) / STRIPE_BLOCKS;
        if c1 - c0 + 1 >= STRIPES as u64 {
            return self.stripes.iter().map(|s| s.read()).collect();
        }
        let mut idx: Vec<usize> = (c0..=c1).map(|c| (c % STRIPES as u64) as usize).collect();
        idx.sort_unstable();
        idx.into_iter().map(|i| self.stripes[i].read()).collect()
    }

    fn lock_all(&self) -> Vec<RwLockWriteGuard<'_, ()>> {
        self.stripes.iter().map(|s| s.write()).collect()
    }

    /// Reads a drive's checksum region.
    fn load_attached(&self, drive: Arc<Drive>) -> io::Result<Attached> {
        const CHUNK: u64 = 256;
        let sums: Vec<AtomicU32> = (0..self.sum_base).map(|_| AtomicU32::new(0)).collect();
        let mut buf = vec![0u8; CHUNK as usize * BLOCK_SIZE];
        for b0 in (0..self.sum_blocks).step_by(CHUNK as usize) {
            let n = CHUNK.min(self.sum_blocks - b0) as usize;
            let buf = &mut buf[..n * BLOCK_SIZE];
            drive.read_blocks(self.sum_base + b0, buf)?;
            for (i, v) in buf.chunks_exact(4).enumerate() {
                let pbn = b0 * SUMS_PER_BLOCK + i as u64;
                if pbn < self.sum_base {
                    sums[pbn as usize].store(
                        u32::from_le_bytes(v.try_into().expect("4")),
                        Ordering::Relaxed,
                    );
                }
            }
        }
        Ok(Attached {
            dirty: Bitmap::new(self.sum_base),
            flush: Mutex::new(()),
            sums,
            drive,
        })
    }

    fn load_stale_files(&self) -> io::Result<()> {
        let Some(dir) = &self.state_dir else {
            return Ok(());
        };
        for (i, cell) in self.slots.iter().enumerate() {
            let rec = match stale::load(dir, i, self.sum_base) {
                Ok(Some(rec)) => rec,
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!(slot = i, error = %e,
                        "stale-block file unreadable: the slot will be rebuilt");
                    cell.mark_rebuild();
                    continue;
                }
            };
            cell.file_exists.store(true, Ordering::Release);
            let known = *cell.drive_id.lock();
            if rec.rebuild || (known.is_some() && known != Some(rec.drive_id)) {
                if !rec.rebuild {
                    tracing::warn!(slot = i, "stale file names another drive: rebuilding");
                }
                cell.mark_rebuild();
                continue;
            }
            let mut n = 0;
            for (w, &bits) in rec.blocks.iter().enumerate() {
                n += cell.stale.or_word(w, bits);
            }
            for (w, &bits) in rec.regions.iter().enumerate() {
                for b in 0..64 {
                    if bits & (1 << b) != 0 {
                        let region = w as u64 * 64 + b;
                        cell.regions.set(region);
                        let first = region * REGION_BLOCKS;
                        let end = (first + REGION_BLOCKS).min(self.sum_base);
                        for p in first..end {
                            if cell.stale.set(p) {
                                n += 1;
                            }
                        }
                    }
                }
            }
            cell.stale_count.fetch_add(n, Ordering::AcqRel);
            tracing::info!(
                slot = i,
                stale_blocks = n,
                "stale blocks recorded for the slot"
            );
        }
        Ok(())
    }

    /// Writes slot `slot`'s stale file from its current state (or removes it when nothing is
    /// stale). `extra_regions` are regions to record in the file; they are marked once the
    /// file is durable.
    fn persist(&self, slot: usize, extra_regions: Option<(u64, u64)>) -> io::Result<()> {
        let Some(dir) = &self.state_dir else {
            return Ok(());
        };
        let cell = &self.slots[slot];
        let _p = cell.persist.lock();
        if let Some((r0, r1)) = extra_regions
            && (r0..=r1).all(|r| cell.regions.get(r))
        {
            return Ok(());
        }
        cell.changed.store(false, Ordering::Release);
        let nothing = !cell.rebuild.load(Ordering::Acquire)
            && cell.stale_count.load(Ordering::Acquire) == 0
            && !cell.cleared.any()
            && !cell.cleared_syncing.any();
        if nothing && extra_regions.is_none() {
            if cell.file_exists.swap(false, Ordering::AcqRel) {
                stale::remove(dir, slot)?;
                cell.regions.clear_all();
            }
            return Ok(());
        }
        let blocks = (0..cell.stale.word_count())
            .map(|w| cell.stale.word(w) | cell.cleared.word(w) | cell.cleared_syncing.word(w))
            .collect();
        let mut regions: Vec<u64> = (0..cell.regions.word_count())
            .map(|w| cell.regions.word(w))
            .collect();
        if let Some((r0, r1)) = extra_regions {
            for r in r0..=r1 {
                regions[(r / 64) as usize] |= 1 << (r % 64);
            }
        }
        let rec = StaleRecord {
            drive_id: cell.drive_id.lock().unwrap_or_default(),
            rebuild: cell.rebuild.load(Ordering::Acquire),
            blocks,
            regions,
        };
        stale::store(dir, slot, self.sum_base, &rec)?;
        cell.file_exists.store(true, Ordering::Release);
        if let Some((r0, r1)) = extra_regions {
            for r in r0..=r1 {
                cell.regions.set(r);
            }
        }
        Ok(())
    }

    fn persist_or_log(&self, slot: usize) {
        if let Err(e) = self.persist(slot, None) {
            tracing::error!(slot, error = %e, "could not write the stale-block file");
        }
    }

    /// Records that a run of a slot's blocks missed a write, durably (the region is in the
    /// stale file) before the write is acknowledged.
    fn record_missed(&self, slot: usize, pbn: u64, count: u64) -> io::Result<()> {
        let cell = &self.slots[slot];
        cell.mark_stale(pbn, count);
        if self.state_dir.is_none() || cell.rebuild.load(Ordering::Acquire) {
            return Ok(());
        }
        let r0 = pbn / REGION_BLOCKS;
        let r1 = (pbn + count - 1) / REGION_BLOCKS;
        if (r0..=r1).all(|r| cell.regions.get(r)) {
            return Ok(());
        }
        self.persist(slot, Some((r0, r1)))
    }

    fn restripe_pending(&self) -> bool {
        self.slots.iter().any(|c| {
            c.state() == SlotState::Healthy
                && c.stale_count.load(Ordering::Acquire) > 0
                && !c.stuck.load(Ordering::Acquire)
        })
    }

    fn unstick_all(&self) {
        for c in &self.slots {
            c.stuck.store(false, Ordering::Release);
        }
    }

    /// Takes the drive out of a slot (pull, image gone). False if no drive was attached.
    fn detach(&self, slot: usize, to: SlotState, why: &str) -> bool {
        let cell = &self.slots[slot];
        let att = {
            let _all = self.lock_all();
            if cell.state() != SlotState::Healthy {
                return false;
            }
            let Some(att) = cell.attached.write().take() else {
                return false;
            };
            cell.set_state(to);
            // Blocks written since the last sync may not have reached the image.
            let mut n = 0;
            for w in 0..att.dirty.word_count() {
                n += cell.stale.or_word(w, att.dirty.word(w));
            }
            if !cell.rebuild.load(Ordering::Acquire) {
                cell.stale_count.fetch_add(n, Ordering::AcqRel);
            }
            att
        };
        self.persist_or_log(slot);
        tracing::warn!(slot, drive = %att.drive.path().display(), why,
            stale_blocks = cell.stale_count.load(Ordering::Relaxed), "drive out of the volume");
        true
    }

    /// A drive gave an I/O error: it is missing if its image is gone, dead otherwise. Called
    /// from the I/O paths (which may hold stripe locks), so it takes none.
    fn drive_failed(&self, slot: usize, att: &Attached, op: &'static str, e: &io::Error) {
        let cell = &self.slots[slot];
        let to = if att.drive.image_present() {
            SlotState::Dead
        } else {
            SlotState::Missing
        };
        if cell
            .state
            .compare_exchange(
                SlotState::Healthy.to_u8(),
                to.to_u8(),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            return;
        }
        tracing::error!(slot, drive = %att.drive.path().display(), op, error = %e,
            state = to.as_str(), "drive I/O error: drive taken out of the volume");
        if to == SlotState::Dead {
            cell.mark_rebuild();
        } else {
            let mut n = 0;
            for w in 0..att.dirty.word_count() {
                n += cell.stale.or_word(w, att.dirty.word(w));
            }
            cell.stale_count.fetch_add(n, Ordering::AcqRel);
        }
        cell.attached.write().take();
        self.persist_or_log(slot);
    }

    fn check_images(&self) -> Vec<usize> {
        let mut gone = Vec::new();
        for (i, cell) in self.slots.iter().enumerate() {
            let Some(att) = cell.usable() else { continue };
            if !att.drive.image_present() {
                drop(att);
                if self.detach(i, SlotState::Missing, "image deleted or renamed") {
                    gone.push(i);
                }
            }
        }
        gone
    }

    /// Reads copy `k` of `lbn` into `buf` and checks it, counting and logging a checksum
    /// failure (callers hold the block's stripe lock, so no write is in flight).
    fn read_copy_checked(&self, lbn: u64, k: u64, buf: &mut [u8]) -> CopyRead {
        self.read_copy(lbn, k, buf, true)
    }

    /// Reads copy `k` of `lbn` into `buf` and checks it. Unless `confirmed`, a checksum failure
    /// may be a write in flight, and is neither counted nor logged.
    fn read_copy(&self, lbn: u64, k: u64, buf: &mut [u8], confirmed: bool) -> CopyRead {
        let p = self.layout.place(lbn, k);
        let cell = &self.slots[p.drive];
        let Some(att) = cell.usable() else {
            return CopyRead::Unavailable;
        };
        if cell.stale.get(p.pbn) {
            return CopyRead::Unavailable;
        }
        let buf = &mut buf[..BLOCK_SIZE];
        if let Err(e) = att.drive.read_blocks(p.pbn, buf) {
            cell.read_errors.fetch_add(1, Ordering::Relaxed);
            self.drive_failed(p.drive, &att, "read", &e);
            return CopyRead::IoError;
        }
        if sum_ok(att.sums[p.pbn as usize].load(Ordering::Acquire), p.pbn, buf) {
            CopyRead::Good
        } else if !confirmed {
            CopyRead::BadSum
        } else {
            cell.checksum_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                lbn,
                copy = k,
                slot = p.drive,
                pbn = p.pbn,
                "block copy fails its checksum"
            );
            CopyRead::BadSum
        }
    }

    /// Writes `plain` as copy `k` of `lbn` (with its checksum). False if the slot is out or the
    /// write failed.
    fn write_copy_of(&self, lbn: u64, k: u64, plain: &[u8]) -> bool {
        let p = self.layout.place(lbn, k);
        self.write_copy(p.drive, p.pbn, plain)
    }

    fn write_copy(&self, slot: usize, pbn: u64, plain: &[u8]) -> bool {
        let cell = &self.slots[slot];
        let Some(att) = cell.usable() else {
            return false;
        };
        let mut block = [0u8; BLOCK_SIZE];
        block.copy_from_slice(&plain[..BLOCK_SIZE]);
        let sum = block_sum(pbn, &block);
        if let Err(e) = att.drive.write_blocks_in_place(pbn, &mut block) {
            cell.write_errors.fetch_add(1, Ordering::Relaxed);
            self.drive_failed(slot, &att, "write", &e);
            return false;
        }
        att.sums[pbn as usize].store(sum, Ordering::Release);
        att.dirty.set(pbn);
        cell.clear_stale(pbn);
        true
    }

    /// Reads one logical block from any good copy, without locks; falls back to
    /// [`Self::read_repair`] when a copy fails its checksum or none is good.
    fn read_any(&self, lbn: u64, dst: &mut [u8]) -> io::Result<()> {
        for k in 0..self.layout.replicas {
            match self.read_copy(lbn, k, dst, false) {
                CopyRead::Good => return Ok(()),
                CopyRead::BadSum => break,
                CopyRead::Unavailable | CopyRead::IoError => {}
            }
        }
        self.read_repair(lbn, dst)
    }

    /// Reads one logical block under its stripe's exclusive lock: takes the first good copy
    /// and rewrites the copies that failed their checksum from it.
    fn read_repair(&self, lbn: u64, dst: &mut [u8]) -> io::Result<()> {
        let _g = self.stripe(lbn).write();
        let r = self.layout.replicas;
        let mut bad = Vec::new();
        let mut good = None;
        for k in 0..r {
            match self.read_copy_checked(lbn, k, dst) {
                CopyRead::Good => {
                    good = Some(k);
                    break;
                }
                CopyRead::BadSum => bad.push(k),
                CopyRead::Unavailable | CopyRead::IoError => {}
            }
        }
        if good.is_none() {
            // Copies after the bad ones were not tried if a good one came first; here none did.
            if bad.is_empty() {
                return Err(eio(format!("logical block {lbn}: no readable copy")));
            }
            if !self.unclean.load(Ordering::Relaxed) {
                return Err(eio(format!(
                    "logical block {lbn}: every readable copy fails its checksum"
                )));
            }
            let k = bad.remove(0);
            if self.read_copy_checked(lbn, k, dst) == CopyRead::IoError {
                return Err(eio(format!("logical block {lbn}: no readable copy")));
            }
            tracing::warn!(
                lbn,
                copy = k,
                "no copy matches its checksum after an unclean stop: \
                taking copy {k} as a write cut by the crash and rewriting the copies"
            );
            self.write_copy_of(lbn, k, dst);
            for k2 in 0..r {
                if k2 != k && !bad.contains(&k2) {
                    self.write_copy_of(lbn, k2, dst);
                }
            }
        }
        for k in bad {
            if self.write_copy_of(lbn, k, dst) {
                let slot = self.layout.place(lbn, k).drive;
                self.slots[slot].repaired.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(lbn, copy = k, slot, "block copy rewritten from a good copy");
            }
        }
        Ok(())
    }

    /// Writes one drive's part of a logical run. False if the copies did not land (slot out or
    /// I/O error; they are then recorded stale).
    ///
    /// The run goes down in chunks: each chunk's plaintext is copied once into a buffer, then
    /// checksummed and encrypted while in cache ([`seal_chunk`]) and written. A large run is
    /// shared by two workers, each taking the next chunk not yet taken, so that one encrypts
    /// while the other writes (writes to one image are serialised by the kernel, encryption
    /// is not) and a worker that starts late takes fewer chunks.
    fn write_run(&self, lbn: u64, src: &[u8], run: &DriveRun) -> io::Result<bool> {
        let cell = &self.slots[run.drive];
        let Some(att) = cell.usable() else {
            self.record_missed(run.drive, run.pbn, run.count)?;
            return Ok(false);
        };
        let n = run.count as usize;
        let mut sums = vec![0u32; n];
        // The chunks: first block and checksums of each.
        let mut chunks = sums
            .chunks_mut(PIPELINE_BLOCKS)
            .enumerate()
            .map(|(c, part)| (c * PIPELINE_BLOCKS, part));
        let seal_and_write = |(i0, part): (usize, &mut [u32]), buf: &mut Vec<u8>| {
            buf.clear();
            // Each piece is copied, checksummed and encrypted while it is in cache.
            for (c, sums) in part.chunks_mut(CHUNK_BLOCKS).enumerate() {
                let (a, b) = (i0 + c * CHUNK_BLOCKS, i0 + c * CHUNK_BLOCKS + sums.len());
                let at = buf.len();
                self.gather(lbn, src, run, a, b, buf);
                seal_chunk(&att.drive, run.pbn + a as u64, &mut buf[at..], sums);
            }
            att.drive.write_ciphertext(run.pbn + i0 as u64, buf)
        };
        let res = if n * BLOCK_SIZE < PARALLEL_THRESHOLD {
            let mut buf = Vec::new();
            chunks.try_for_each(|chunk| seal_and_write(chunk, &mut buf))
        } else {
            let [(r0, _), (r1, _)] = shared_by_two(chunks, seal_and_write);
            r0.and(r1)
        };
        if let Err(e) = res {
            cell.write_errors.fetch_add(1, Ordering::Relaxed);
            self.drive_failed(run.drive, &att, "write", &e);
            self.record_missed(run.drive, run.pbn, run.count)?;
            return Ok(false);
        }
        let any_stale = cell.stale_count.load(Ordering::Acquire) > 0;
        for (i, s) in sums.into_iter().enumerate() {
            let pbn = run.pbn + i as u64;
            att.sums[pbn as usize].store(s, Ordering::Release);
            att.dirty.set(pbn);
            if any_stale {
                cell.clear_stale(pbn);
            }
        }
        Ok(true)
    }

    /// Appends to `out` the plaintext of blocks `i0..i1` of a drive's part `run` of the
    /// logical run that starts at `lbn` and whose plaintext is `src`.
    fn gather(
        &self,
        lbn: u64,
        src: &[u8],
        run: &DriveRun,
        i0: usize,
        i1: usize,
        out: &mut Vec<u8>,
    ) {
        if self.layout.drives == self.layout.replicas {
            // A mirror: the drive holds one copy of every block of the run, in order.
            out.extend_from_slice(&src[i0 * BLOCK_SIZE..i1 * BLOCK_SIZE]);
            return;
        }
        for i in i0 as u64..i1 as u64 {
            let j = run.first_j + i * self.layout.drives;
            let l = (j / self.layout.replicas - lbn) as usize;
            out.extend_from_slice(&src[l * BLOCK_SIZE..(l + 1) * BLOCK_SIZE]);
        }
    }

    /// Reads a run of logical blocks on a mirror layout (as many drives as copies), where
    /// copy 0 of block `lbn + i` is block `lbn + i` of the drive in slot 0: one read straight
    /// into `buf`, then decryption and checks in place. Blocks that are stale there or fail
    /// their checksum are read again one by one from any good copy ([`Self::read_any`]).
    /// `None` if slot 0 cannot serve the run (the caller reads the blocks one by one then).
    fn read_mirror(&self, lbn: u64, buf: &mut [u8]) -> Option<io::Result<()>> {
        let cell = &self.slots[0];
        let att = cell.usable()?;
        let read_and_open = |pbn: u64, part: &mut [u8], first: usize, bad: &mut Vec<usize>| {
            att.drive.read_ciphertext(pbn, part)?;
            open_chunks(&att, pbn, part, first, bad);
            io::Result::Ok(())
        };
        let mut bad = Vec::new();
        let res = if buf.len() < PARALLEL_THRESHOLD {
            read_and_open(lbn, buf, 0, &mut bad)
        } else {
            // Reads of one image run in parallel, each worker on its own core.
            let chunks = buf
                .chunks_mut(PIPELINE_BLOCKS * BLOCK_SIZE)
                .enumerate()
                .map(|(c, part)| (c * PIPELINE_BLOCKS, part));
            let [(r0, mut bad0), (r1, mut bad1)] = shared_by_two(
                chunks,
                |(i0, part): (usize, &mut [u8]), bad: &mut Vec<usize>| {
                    read_and_open(lbn + i0 as u64, part, i0, bad)
                },
            );
            bad.append(&mut bad0);
            bad.append(&mut bad1);
            r0.and(r1)
        };
        if let Err(e) = res {
            cell.read_errors.fetch_add(1, Ordering::Relaxed);
            self.drive_failed(0, &att, "read", &e);
            return None;
        }
        let mut result = Ok(());
        let any_stale = cell.stale_count.load(Ordering::Acquire) > 0;
        for (i, dst) in buf.chunks_exact_mut(BLOCK_SIZE).enumerate() {
            let l = lbn + i as u64;
            if (bad.contains(&i) || (any_stale && cell.stale.get(l)))
                && let Err(e) = self.read_any(l, dst)
            {
                result = Err(e);
            }
        }
        Some(result)
    }

    /// Reads one drive's span for a logical run and decrypts and checks the copy-0 blocks in
    /// it. Returns the span and whether each copy-0 block in it is good (by index in the span),
    /// or `None` if the drive is out or failed.
    fn read_span(&self, run: &DriveRun) -> Option<(Vec<u8>, Vec<bool>)> {
        let cell = &self.slots[run.drive];
        let att = cell.usable()?;
        let mut span = vec![0u8; run.count as usize * BLOCK_SIZE];
        if let Err(e) = att.drive.read_ciphertext(run.pbn, &mut span) {
            cell.read_errors.fetch_add(1, Ordering::Relaxed);
            self.drive_failed(run.drive, &att, "read", &e);
            return None;
        }
        let any_stale = cell.stale_count.load(Ordering::Acquire) > 0;
        let mut ok = vec![false; run.count as usize];
        for (i, block) in span.chunks_exact_mut(BLOCK_SIZE).enumerate() {
            let j = run.first_j + i as u64 * self.layout.drives;
            if !j.is_multiple_of(self.layout.replicas) {
                continue;
            }
            let pbn = run.pbn + i as u64;
            if any_stale && cell.stale.get(pbn) {
                continue;
            }
            att.drive.decrypt_block(pbn, block);
            // A failure here may be a write in flight; it is confirmed under the lock.
            ok[i] = sum_ok(att.sums[pbn as usize].load(Ordering::Acquire), pbn, block);
        }
        Some((span, ok))
    }

    /// Reads a run of logical blocks: one contiguous read per drive over the span it holds
    /// (with `r` copies that span also holds other copies, which are skipped), decrypting and
    /// checking only copy 0 of each block. A block whose copy 0 is out, stale or bad is read
    /// from another copy (and repaired).
    fn read_run(&self, lbn: u64, buf: &mut [u8]) -> io::Result<()> {
        if self.layout.drives == self.layout.replicas
            && let Some(res) = self.read_mirror(lbn, buf)
        {
            return res;
        }
        let count = (buf.len() / BLOCK_SIZE) as u64;
        let mut runs = self.layout.drive_runs(lbn, count);
        // A drive whose part of the run holds no copy 0 is not read at all.
        let r = self.layout.replicas;
        let n = self.layout.drives;
        runs.retain(|run| (0..run.count.min(r)).any(|i| (run.first_j + i * n).is_multiple_of(r)));
        let spans: Vec<Option<(Vec<u8>, Vec<bool>)>> =
            if buf.len() >= PARALLEL_THRESHOLD && runs.len() > 1 {
                on_all(&runs, |run| self.read_span(run))
            } else {
                runs.iter().map(|run| self.read_span(run)).collect()
            };

        let mut result = Ok(());
        for (run, span) in runs.iter().zip(spans) {
            for i in 0..run.count {
                let j = run.first_j + i * self.layout.drives;
                if !j.is_multiple_of(self.layout.replicas) {
                    continue;
                }
                let l = (j / self.layout.replicas - lbn) as usize;
                let dst = &mut buf[l * BLOCK_SIZE..(l + 1) * BLOCK_SIZE];
                match &span {
                    Some((span, ok)) if ok[i as usize] => {
                        let at = i as usize * BLOCK_SIZE;
                        dst.copy_from_slice(&span[at..at + BLOCK_SIZE]);
                    }
                    _ => {
                        if let Err(e) = self.read_any(lbn + l as u64, dst) {
                            result = Err(e);
                        }
                    }
                }
            }
        }
        result
    }

    /// Flushes the checksum blocks of a drive whose blocks were written since the last sync.
    fn flush_sums(&self, att: &Attached) -> io::Result<()> {
        let _serial = att.flush.lock();
        let words_per_block = (SUMS_PER_BLOCK / 64) as usize;
        let mut block = vec![0u8; BLOCK_SIZE];
        for b in 0..self.sum_blocks as usize {
            let w0 = b * words_per_block;
            let w1 = (w0 + words_per_block).min(att.dirty.word_count());
            let mut any = 0;
            for w in w0..w1 {
                any |= att.dirty.take_word(w);
            }
            if any == 0 {
                continue;
            }
            for (i, v) in block.chunks_exact_mut(4).enumerate() {
                let pbn = b as u64 * SUMS_PER_BLOCK + i as u64;
                let s = if pbn < self.sum_base {
                    att.sums[pbn as usize].load(Ordering::Acquire)
                } else {
                    0
                };
                v.copy_from_slice(&s.to_le_bytes());
            }
            att.drive
                .write_blocks_in_place(self.sum_base + b as u64, &mut block)?;
        }
        att.drive.sync()
    }

    fn sync(&self) -> io::Result<()> {
        // Stale bits cleared so far stay in the stale file until this sync made their data
        // durable; newly missed blocks are recorded before the other drives make them durable.
        for (i, cell) in self.slots.iter().enumerate() {
            let moving = cell.has_cleared.swap(false, Ordering::AcqRel);
            for w in (0..cell.cleared.word_count()).filter(|_| moving) {
                let bits = cell.cleared.take_word(w);
                if bits != 0 {
                    cell.cleared_syncing.or_word(w, bits);
                }
            }
            if cell.changed.load(Ordering::Acquire) {
                self.persist(i, None)?;
            }
        }

        let attached: Vec<(usize, Arc<Attached>)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.usable().map(|a| (i, a)))
            .collect();
        let results: Vec<(usize, io::Result<()>)> = std::thread::scope(|s| {
            let handles: Vec<_> = attached
                .iter()
                .map(|(i, a)| (*i, s.spawn(move || self.flush_sums(a))))
                .collect();
            handles
                .into_iter()
                .map(|(i, h)| {
                    (
                        i,
                        h.join()
                            .unwrap_or_else(|_| Err(io::Error::other("sync thread panicked"))),
                    )
                })
                .collect()
        });
        let mut first_err = None;
        for ((i, res), (_, att)) in results.into_iter().zip(&attached) {
            if let Err(e) = res {
                self.slots[i].write_errors.fetch_add(1, Ordering::Relaxed);
                self.drive_failed(i, att, "sync", &e);
                if self.layout.replicas == 1 {
                    first_err.get_or_insert(e);
                }
            }
        }
        if !self.slots.iter().any(|c| c.usable().is_some()) {
            return Err(io::Error::other("no drive of the volume is left"));
        }
        if let Some(e) = first_err {
            return Err(e);
        }

        // What this sync made durable no longer needs to be in the stale files.
        for (i, cell) in self.slots.iter().enumerate() {
            let had = cell.cleared_syncing.any();
            if had {
                cell.cleared_syncing.clear_all();
            }
            let settled = cell.stale_count.load(Ordering::Acquire) == 0
                && !cell.rebuild.load(Ordering::Acquire)
                && !cell.has_cleared.load(Ordering::Acquire);
            if had || (settled && cell.file_exists.load(Ordering::Acquire)) {
                self.persist(i, None)?;
            }
        }
        Ok(())
    }

    /// The background thread: watches the images and runs the restriper.
    fn worker(self: Arc<Self>) {
        let period = self.watch_interval.unwrap_or(Duration::from_secs(1));
        loop {
            if self.shutdown.load(Ordering::Acquire) {
                return;
            }
            if self.watch_interval.is_some() {
                self.check_images();
            }
            let next = self.slots.iter().position(|c| {
                c.state() == SlotState::Healthy
                    && c.stale_count.load(Ordering::Acquire) > 0
                    && !c.stuck.load(Ordering::Acquire)
            });
            match next {
                Some(slot) => {
                    self.busy.store(true, Ordering::Release);
                    self.restripe(slot);
                    self.busy.store(false, Ordering::Release);
                }
                None => {
                    let mut w = self.wake.lock();
                    if !*w {
                        self.wake_cv.wait_for(&mut w, period);
                    }
                    *w = false;
                }
            }
        }
    }

    /// Restores every stale block of `slot` from the other copies.
    fn restripe(&self, slot: usize) {
        let cell = &self.slots[slot];
        let rebuilding = cell.rebuild.load(Ordering::Acquire);
        let total = cell.stale_count.load(Ordering::Acquire);
        let started = Instant::now();
        *self.restriper.lock() = RestriperStatus {
            state: if rebuilding {
                RestriperState::Rebuilding
            } else {
                RestriperState::Resyncing
            },
            slot: Some(slot),
            blocks_total: total,
            ..RestriperStatus::idle()
        };
        tracing::info!(slot, blocks = total, rebuilding, "restriper started");
        let mut buf = [0u8; BLOCK_SIZE];
        let mut done = 0u64;
        let mut unrecoverable = 0u64;
        let mut pbn = 0;
        let mut last_check = Instant::now();
        while let Some(p) = cell.stale.next_set(pbn) {
            pbn = p + 1;
            if self.shutdown.load(Ordering::Acquire) || cell.state() != SlotState::Healthy {
                break;
            }
            let Some((lbn, k)) = self.layout.logical_of(slot, p) else {
                // Past the last logical block: nothing lives there.
                cell.clear_stale(p);
                continue;
            };
            {
                let _g = self.stripe(lbn).write();
                if !cell.stale.get(p) {
                    continue;
                }
                let source = (0..self.layout.replicas)
                    .filter(|&k2| k2 != k)
                    .find(|&k2| self.read_copy_checked(lbn, k2, &mut buf) == CopyRead::Good);
                if source.is_none() {
                    unrecoverable += 1;
                    continue;
                }
                if !self.write_copy(slot, p, &buf) {
                    break;
                }
            }
            done += 1;
            if done.is_multiple_of(256) {
                self.progress(done, total, unrecoverable, started);
                if self.watch_interval.is_some() && last_check.elapsed() > Duration::from_secs(1) {
                    last_check = Instant::now();
                    self.check_images();
                }
            }
        }
        self.progress(done, total, unrecoverable, started);
        if cell.stale_count.load(Ordering::Acquire) == 0 {
            cell.rebuild.store(false, Ordering::Release);
            if let Err(e) = self.sync() {
                tracing::error!(slot, error = %e, "sync after restripe failed");
            }
            tracing::info!(
                slot,
                blocks = done,
                secs = started.elapsed().as_secs_f64(),
                "restriper finished: slot is fully in sync"
            );
            self.unstick_all();
        } else if unrecoverable > 0 && cell.state() == SlotState::Healthy {
            tracing::error!(
                slot,
                unrecoverable,
                "blocks with no good copy to restore from"
            );
            cell.stuck.store(true, Ordering::Release);
        }
        let mut st = self.restriper.lock();
        st.state = RestriperState::Idle;
        st.eta_seconds = None;
    }

    fn progress(&self, done: u64, total: u64, unrecoverable: u64, started: Instant) {
        let secs = started.elapsed().as_secs_f64().max(1e-6);
        let bytes = done * BLOCK_SIZE as u64;
        let rate = (bytes as f64 / secs) as u64;
        let left = total.saturating_sub(done) * BLOCK_SIZE as u64;
        let mut st = self.restriper.lock();
        st.blocks_done = done;
        st.bytes_done = bytes;
        st.rate_bytes_per_sec = rate;
        st.eta_seconds = (rate > 0).then(|| left / rate);
        st.unrecoverable = unrecoverable;
    }
}

/// Runs `a` on the calling thread and `b` on one of rayon's worker threads at the same time.
/// (`rayon::join` called outside the pool would hand both to the pool and leave the calling
/// FUSE thread waiting.)
fn both<RA, RB: Send>(a: impl FnOnce() -> RA, b: impl FnOnce() -> RB + Send) -> (RA, RB) {
    let mut rb = None;
    let ra = rayon::in_place_scope(|s| {
        s.spawn(|_| rb = Some(b()));
        a()
    });
    (ra, rb.expect("a scope ends after its tasks"))
}

/// Runs `f` over `items` on the calling thread and one of rayon's workers at the same time,
/// each taking the next item not yet taken (so that a worker woken late takes fewer) and
/// keeping its own scratch state `S`. A worker stops at its first error; the other goes on.
fn shared_by_two<I, S>(
    items: I,
    f: impl Fn(I::Item, &mut S) -> io::Result<()> + Sync,
) -> [(io::Result<()>, S); 2]
where
    I: Iterator + Send,
    S: Default + Send,
{
    let items = Mutex::new(items);
    let work = || {
        let mut state = S::default();
        let res =
            std::iter::from_fn(|| items.lock().next()).try_for_each(|item| f(item, &mut state));
        (res, state)
    };
    let (a, b) = both(work, work);
    [a, b]
}

/// `f` of each item, the first on the calling thread and the others on rayon's workers, all at
/// the same time.
fn on_all<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let mut out: Vec<Option<R>> = items.iter().map(|_| None).collect();
    if let Some((first_out, rest_out)) = out.split_first_mut() {
        let f = &f;
        rayon::in_place_scope(|s| {
            for (item, slot) in items[1..].iter().zip(rest_out) {
                s.spawn(move |_| *slot = Some(f(item)));
            }
            *first_out = Some(f(&items[0]));
        });
    }
    out.into_iter()
        .map(|r| r.expect("a scope ends after its tasks"))
        .collect()
}

/// Blocks per chunk of the checksum and cipher passes over a run: small enough that a chunk
/// stays in cache from one pass to the next.
const CHUNK_BLOCKS: usize = 16;

/// Checksums (into `sums`) and encrypts in place the plaintext blocks of `buf` (a chunk of
/// at most [`CHUNK_BLOCKS`] blocks), bound for the physical blocks from `pbn` on of `drive`.
fn seal_chunk(drive: &Drive, pbn: u64, buf: &mut [u8], sums: &mut [u32]) {
    for (i, (b, s)) in buf.chunks_exact(BLOCK_SIZE).zip(sums).enumerate() {
        *s = block_sum(pbn + i as u64, b);
    }
    drive.encrypt_blocks(pbn, buf);
}

/// Decrypts in place the blocks of `buf`, read from the physical blocks from `pbn` on of
/// `att`'s drive, and checks each against its checksum; the indices (counted from `first`)
/// of the blocks that fail go to `bad`.
fn open_chunks(att: &Attached, pbn: u64, buf: &mut [u8], first: usize, bad: &mut Vec<usize>) {
    for (c, chunk) in buf.chunks_mut(CHUNK_BLOCKS * BLOCK_SIZE).enumerate() {
        let p = pbn + (c * CHUNK_BLOCKS) as u64;
        att.drive.decrypt_blocks(p, chunk);
        for (i, b) in chunk.chunks_exact(BLOCK_SIZE).enumerate() {
            let q = p + i as u64;
            // A failure here may be a write in flight; it is confirmed under the lock.
            if !sum_ok(att.sums[q as usize].load(Ordering::Acquire), q, b) {
                bad.push(first + c * CHUNK_BLOCKS + i);
            }
        }
    }
}

impl BlockDevice for Pool {
    fn block_count(&self) -> u64 {
        self.inner.layout.logical_blocks()
    }

    fn read_blocks(&self, lbn: u64, buf: &mut [u8]) -> io::Result<()> {
        check_run(self.block_count(), lbn, buf.len())?;
        self.inner.read_run(lbn, buf)
    }

    fn write_blocks(&self, lbn: u64, buf: &[u8]) -> io::Result<()> {
        let inner = &*self.inner;
        let count = check_run(self.block_count(), lbn, buf.len())?;
        let _locks = inner.lock_shared(lbn, count);
        let runs = inner.layout.drive_runs(lbn, count);
        let results: Vec<io::Result<bool>> = if buf.len() >= PARALLEL_THRESHOLD && runs.len() > 1 {
            on_all(&runs, |run| inner.write_run(lbn, buf, run))
        } else {
            runs.iter()
                .map(|run| inner.write_run(lbn, buf, run))
                .collect()
        };
        let mut landed = vec![true; inner.layout.drives as usize];
        for (run, res) in runs.iter().zip(results) {
            landed[run.drive] = res?;
        }
        if landed.iter().all(|&l| l) {
            return Ok(());
        }
        // The write stands if every block has at least one copy that landed.
        for l in lbn..lbn + count {
            let alive = (0..inner.layout.replicas).any(|k| landed[inner.layout.place(l, k).drive]);
            if !alive {
                return Err(eio(format!(
                    "logical block {l}: no drive holding a copy took the write"
                )));
            }
        }
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        self.inner.sync()
    }
}
