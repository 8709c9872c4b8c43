//! The node: formatting a volume, start-up (load the master key, unlock the drives, open the
//! pool and the filesystem), key rotation, and clean shutdown.
//!
//! This layer orchestrates; it knows no byte layouts. Start-up checks everything before it
//! writes anything: a wrong key, a foreign or damaged header, a missing or truncated image
//! stops it with an error naming the drive, and the images are left as they were.

pub mod config;
mod control;
mod kms;
mod rotation;

pub use config::{DriveEntry, KeyRef, VolumeConfig, now_rfc3339};
pub use control::NodeService;
pub use kms::KmsHealth;
pub use rotation::NewMasterKey;

use std::fs::OpenOptions;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::BLOCK_SIZE;
use crate::crypto::{MasterKey, random_bytes};
use crate::drive::header::DATA_OFFSET;
use crate::drive::{
    Drive, DriveError, DriveHeader, FileBackend, KeyKind, MIN_DATA_BLOCKS, NewDrive, SealedDrive,
    SlotState,
};
use crate::fs::{Fs, FsError};
use crate::keystore::{Journal, KeyStoreError, LocalStore, statedir};
use crate::pool::{BlockDevice, Pool, PoolOptions, SlotInit};

/// Errors of the node. Each says what it was doing and names the drive, key or file involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// A drive-layer error (names its drive).
    #[error(transparent)]
    Drive(#[from] DriveError),
    /// A key-store error (names its file or key).
    #[error(transparent)]
    KeyStore(#[from] KeyStoreError),
    /// The filesystem failed.
    #[error("filesystem: {0}")]
    Fs(#[from] FsError),
    /// The volume's drives do not belong together or do not match the configuration.
    #[error("drive {path}: {detail}")]
    Mismatch {
        /// Image path.
        path: PathBuf,
        /// What differs.
        detail: String,
    },
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
    /// Another process holds the volume.
    #[error("state directory {path} is in use by another atrest process (mounted?)")]
    Busy {
        /// State directory.
        path: PathBuf,
    },
    /// I/O on the assembled volume failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// System error.
        source: std::io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NodeError {
    let what = what.into();
    move |source| NodeError::Io { what, source }
}

/// What `atrest format` is asked to do.
#[derive(Clone, Debug, Default)]
pub struct FormatRequest {
    /// The node's state directory (created with mode 0700).
    pub state_dir: PathBuf,
    /// Drive image paths, in slot order.
    pub drives: Vec<PathBuf>,
    /// Size of each image to create, in bytes; existing images keep theirs when `None`.
    pub drive_size: Option<u64>,
    /// Copies of each block; default 2 with two drives or more, else 1.
    pub replicas: Option<u32>,
    /// Overwrite drives that already carry an atrest header, and an existing state directory.
    pub force: bool,
    /// Metadata area size in blocks (default chosen by the filesystem).
    pub metadata_blocks: Option<u64>,
}

/// What a format produced.
#[derive(Debug)]
pub struct FormatSummary {
    /// Volume id (hex).
    pub volume_id: String,
    /// Master key id.
    pub key_id: String,
    /// Logical blocks offered by the pool.
    pub logical_blocks: u64,
    /// Replicas.
    pub replicas: u32,
}

/// The lock file that keeps two processes off one volume.
struct StateLock {
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl StateLock {
    fn acquire(dir: &Path) -> Result<StateLock, NodeError> {
        let path = dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(format!("open {}", path.display())))?;
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|_| NodeError::Busy {
                path: dir.to_path_buf(),
            })?;
        Ok(StateLock { _lock: lock })
    }
}

/// Whether either header slot of the image at `path` holds something that looks like an
/// atrest header (valid, or damaged but with the magic).
fn carries_header(path: &Path) -> bool {
    use crate::drive::HeaderError;
    match SealedDrive::open(path) {
        Ok(_) | Err(DriveError::Truncated { .. }) => true,
        Err(DriveError::NoValidHeader { a, b, .. }) => [a, b]
            .iter()
            .any(|e| !matches!(e, HeaderError::BadMagic { .. } | HeaderError::Blank { .. })),
        Err(_) => false,
    }
}

/// Prepares an image path: creates it sparse at `size`, or empties the existing one (a
/// regular file is truncated and re-extended, a block device zeroed), so that nothing of an
/// earlier volume survives and unwritten blocks read as zeros. Returns its size in bytes.
fn prepare_image(path: &Path, size: Option<u64>) -> Result<u64, NodeError> {
    use crate::drive::DriveBackend;
    let usage = |m: String| NodeError::Usage(format!("drive {}: {m}", path.display()));
    let md = match std::fs::metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let size = size.ok_or_else(|| usage("does not exist; give --drive-size".into()))?;
            let f = OpenOptions::new()
                .create_new(true)
                .write(true)
                .open(path)
                .map_err(|e| usage(format!("cannot create: {e}")))?;
            f.set_len(size)
                .map_err(|e| usage(format!("cannot size: {e}")))?;
            return Ok(size);
        }
        Err(e) => return Err(usage(format!("cannot open: {e}"))),
    };
    if md.file_type().is_block_device() {
        let dev = FileBackend::open(path).map_err(|e| usage(format!("cannot open: {e}")))?;
        let len = dev.len().map_err(|e| usage(e.to_string()))?;
        let zeros = vec![0u8; 1 << 20];
        let mut off = 0;
        while off < len {
            let n = zeros.len().min((len - off) as usize);
            dev.write_at(off, &zeros[..n])
                .map_err(|e| usage(format!("cannot zero: {e}")))?;
            off += n as u64;
        }
        dev.sync().map_err(|e| usage(e.to_string()))?;
        return Ok(len);
    }
    if !md.is_file() {
        return Err(usage("is neither a regular file nor a block device".into()));
    }
    let size = size.unwrap_or(md.len());
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| usage(format!("cannot open: {e}")))?;
    f.set_len(0)
        .and_then(|_| f.set_len(size))
        .and_then(|_| f.sync_all())
        .map_err(|e| usage(format!("cannot size: {e}")))?;
    Ok(size)
}

/// Formats a new volume: state directory, local master key, drive headers, empty filesystem.
pub fn format(req: &FormatRequest) -> Result<FormatSummary, NodeError> {
    let n = req.drives.len();
    if n == 0 {
        return Err(NodeError::Usage(
            "no drives given (use --drive PATH, repeated)".into(),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for d in &req.drives {
        let canon = d.canonicalize().unwrap_or_else(|_| d.clone());
        if !seen.insert(canon) {
            return Err(NodeError::Usage(format!(
                "drive {} is given twice",
                d.display()
            )));
        }
    }
    let replicas = req.replicas.unwrap_or(if n >= 2 { 2 } else { 1 });
    if replicas == 0 || replicas as usize > n {
        return Err(NodeError::Usage(format!(
            "--replicas {replicas} is out of range: must be 1..={n} for {n} drives"
        )));
    }
    if let Some(size) = req.drive_size {
        let min = DATA_OFFSET + MIN_DATA_BLOCKS * BLOCK_SIZE as u64;
        if size < min {
            return Err(NodeError::Usage(format!(
                "--drive-size {size} is too small: each drive needs at least {min} bytes ({} MiB)",
                min >> 20
            )));
        }
    }
    if VolumeConfig::path(&req.state_dir).exists() && !req.force {
        return Err(NodeError::Usage(format!(
            "state directory {} already holds a volume; add --force to replace it",
            req.state_dir.display()
        )));
    }
    statedir::create(&req.state_dir)?;
    let _lock = StateLock::acquire(&req.state_dir)?;

    // Check every drive before changing any.
    for d in &req.drives {
        match std::fs::metadata(d) {
            Ok(_) => {
                if !req.force && carries_header(d) {
                    return Err(NodeError::Usage(format!(
                        "drive {}: already carries an atrest header; add --force to destroy it \
                         and its data",
                        d.display()
                    )));
                }
            }
            Err(_) if req.drive_size.is_some() => {}
            Err(e) => {
                return Err(NodeError::Usage(format!(
                    "drive {}: {e}; give --drive-size to create it",
                    d.display()
                )));
            }
        }
    }
    let mut sizes = Vec::with_capacity(n);
    for d in &req.drives {
        sizes.push(prepare_image(d, req.drive_size)?);
    }
    let data_blocks = sizes
        .iter()
        .map(|s| s.saturating_sub(DATA_OFFSET) / BLOCK_SIZE as u64)
        .min()
        .unwrap_or(0);
    if data_blocks < MIN_DATA_BLOCKS {
        return Err(NodeError::Usage(format!(
            "drives are too small: {data_blocks} data blocks, need at least {MIN_DATA_BLOCKS} \
             (drive size >= {} MiB)",
            (DATA_OFFSET + MIN_DATA_BLOCKS * BLOCK_SIZE as u64) >> 20
        )));
    }

    // Remove an earlier volume's keys when replacing it.
    let store = LocalStore::open(&req.state_dir)?;
    for old in store.key_ids()? {
        store.destroy_key(&old)?;
    }
    Journal::new(&req.state_dir).finish()?;
    let (key_id, master) = store.create_key()?;
    let mut volume_id = [0u8; 16];
    random_bytes(&mut volume_id).map_err(KeyStoreError::from)?;

    let mut drives = Vec::with_capacity(n);
    let mut entries = Vec::with_capacity(n);
    for (slot, path) in req.drives.iter().enumerate() {
        let backend = FileBackend::open(path).map_err(|source| DriveError::Io {
            path: path.clone(),
            op: "open",
            source,
        })?;
        let drive = Drive::create(
            path,
            Arc::new(backend),
            &NewDrive {
                volume_id,
                slot: slot as u32,
                drive_count: n as u32,
                replicas,
                data_blocks,
                master: &master,
                key_kind: KeyKind::Local,
                key_id: &key_id,
            },
        )?;
        entries.push(DriveEntry {
            slot: slot as u32,
            path: path.canonicalize().unwrap_or_else(|_| path.clone()),
            drive_id: hex::encode(drive.header().drive_id),
        });
        drives.push(Arc::new(drive));
    }
    let pool = Arc::new(Pool::new(drives, replicas).map_err(io_err("assemble pool"))?);
    let logical_blocks = pool.block_count();
    Fs::format(
        pool.clone(),
        &crate::fs::FormatOptions {
            metadata_blocks: req.metadata_blocks,
        },
    )?;
    pool.sync().map_err(io_err("sync drives"))?;

    let config = VolumeConfig {
        format: 1,
        volume_id: hex::encode(volume_id),
        replicas,
        drives: entries,
        key: KeyRef {
            kind: KeyKind::Local,
            key_id: key_id.clone(),
        },
        created: now_rfc3339(),
        last_key_rotation_time: None,
        clean: true,
    };
    config.store(&req.state_dir)?;
    tracing::info!(volume = %config.volume_id, drives = n, replicas, key_id, "formatted volume");
    Ok(FormatSummary {
        volume_id: config.volume_id,
        key_id,
        logical_blocks,
        replicas,
    })
}

/// A started node: the volume unlocked, its pool and filesystem open.
pub struct Node {
    state_dir: PathBuf,
    config: Mutex<VolumeConfig>,
    master: Mutex<MasterKey>,
    pool: Arc<Pool>,
    fs: Arc<Fs>,
    /// Serialises rotations and key-store changes.
    rotation: Mutex<()>,
    _lock: StateLock,
}

/// Loads the master key named by a key reference.
fn load_master(state_dir: &Path, key: &KeyRef) -> Result<MasterKey, NodeError> {
    match key.kind {
        KeyKind::Local => Ok(LocalStore::open(state_dir)?.load_key(&key.key_id)?),
        KeyKind::Kms => Err(NodeError::Usage(format!(
            "master key {} is held by a KMS, which this build cannot reach yet",
            key.key_id
        ))),
    }
}

/// Checks that a drive's header matches what the configuration expects of slot `slot`.
fn check_member(
    cfg: &VolumeConfig,
    entry: &DriveEntry,
    h: &DriveHeader,
    n: usize,
) -> Result<(), NodeError> {
    let mismatch = |detail: String| NodeError::Mismatch {
        path: entry.path.clone(),
        detail,
    };
    if hex::encode(h.volume_id) != cfg.volume_id {
        return Err(mismatch(format!(
            "belongs to volume {}, not to this volume {}",
            hex::encode(h.volume_id),
            cfg.volume_id
        )));
    }
    if hex::encode(h.drive_id) != entry.drive_id {
        return Err(mismatch(format!(
            "is drive {}, but slot {} expects drive {}",
            hex::encode(h.drive_id),
            entry.slot,
            entry.drive_id
        )));
    }
    if h.slot != entry.slot || h.drive_count as usize != n || h.replicas != cfg.replicas {
        return Err(mismatch(format!(
            "header says slot {} of {} with {} replicas; configuration says slot {} of {n} with \
             {} replicas",
            h.slot, h.drive_count, h.replicas, entry.slot, cfg.replicas
        )));
    }
    Ok(())
}

/// A volume whose drives are unlocked and checked and whose cut-off rotation, if any, has
/// been finished; its data area is untouched. [`Node::open`] goes on from here to the pool
/// and the filesystem; offline key operations stop here.
pub struct Unlocked {
    dir: PathBuf,
    cfg: VolumeConfig,
    drives: Vec<Arc<Drive>>,
    master: MasterKey,
    lock: StateLock,
}

impl Unlocked {
    /// Loads the master key, unlocks and checks every drive, then (and only then, so that a
    /// refusal writes nothing) repairs damaged header slots and finishes a cut-off rotation.
    pub fn open(dir: &Path) -> Result<Unlocked, NodeError> {
        statedir::check_dir(dir)?;
        let lock = StateLock::acquire(dir)?;
        let mut cfg = VolumeConfig::load(dir)?;
        let journal = Journal::new(dir);
        let pending = journal.pending()?;

        // Keys that may wrap a drive now: the current one and, mid-rotation, the new one.
        let current = load_master(dir, &cfg.key)?;
        let next = match &pending {
            Some(rec) => {
                let r = KeyRef {
                    kind: rec.new_kind,
                    key_id: rec.new_key_id.clone(),
                };
                let k = load_master(dir, &r)?;
                Some((r, k))
            }
            None => None,
        };

        let n = cfg.drives.len();
        let mut drives = Vec::with_capacity(n);
        for entry in &cfg.drives {
            let sealed = SealedDrive::open(&entry.path)?;
            check_member(&cfg, entry, sealed.header(), n)?;
            for (i, s) in sealed.slots().iter().enumerate() {
                if let SlotState::Invalid(e) = s {
                    tracing::warn!(drive = %entry.path.display(), slot = i, error = %e,
                        "header slot unusable; using the other slot");
                }
            }
            let hdr_key = sealed.header().key_id.clone();
            let key = match &next {
                Some((r, k)) if r.key_id == hdr_key => k,
                _ if hdr_key == cfg.key.key_id => &current,
                _ => {
                    return Err(NodeError::Mismatch {
                        path: entry.path.clone(),
                        detail: format!(
                            "is wrapped under master key {hdr_key}, but the volume's key is {}",
                            cfg.key.key_id
                        ),
                    });
                }
            };
            drives.push(Arc::new(sealed.unlock(key)?));
        }

        // From here on the node may write, to headers and the state directory only.
        for d in &drives {
            d.repair_slots()?;
        }
        let mut master = current;
        if let Some(rec) = pending {
            let (new_ref, new_key) = next.expect("loaded with the journal");
            tracing::warn!(
                old = rec.old_key_id,
                new = rec.new_key_id,
                "finishing a rotation that was cut off"
            );
            rotation::finish(dir, &mut cfg, &drives, &rec, &new_ref, &new_key)?;
            master = new_key;
        } else {
            rotation::remove_orphan_keys(dir, &cfg)?;
        }
        Ok(Unlocked {
            dir: dir.to_path_buf(),
            cfg,
            drives,
            master,
            lock,
        })
    }

    /// The volume configuration.
    pub fn config(&self) -> &VolumeConfig {
        &self.cfg
    }

    /// The unlocked drives in slot order.
    pub fn drives(&self) -> &[Arc<Drive>] {
        &self.drives
    }

    /// Rotates the master key of the unmounted volume: headers only.
    pub fn rotate(&mut self, new: NewMasterKey) -> Result<KeyRef, NodeError> {
        let (r, k) = rotation::rotate(&self.dir, &mut self.cfg, &self.drives, new)?;
        self.master = k;
        Ok(r)
    }
}

impl Node {
    /// Starts the node on state directory `dir`: unlocks the volume ([`Unlocked::open`]),
    /// then opens the pool and the filesystem. After an unclean stop, the copies of every
    /// block in use are compared and made to agree.
    pub fn open(dir: &Path) -> Result<Node, NodeError> {
        let Unlocked {
            dir,
            mut cfg,
            drives,
            master,
            lock,
        } = Unlocked::open(dir)?;
        let slots = drives.into_iter().map(SlotInit::Present).collect();
        let opts = PoolOptions {
            state_dir: Some(dir.clone()),
            watch_interval: Some(std::time::Duration::from_secs(1)),
            after_unclean_stop: !cfg.clean,
        };
        let pool =
            Arc::new(Pool::open(slots, cfg.replicas, opts).map_err(io_err("assemble pool"))?);
        let fs = Arc::new(Fs::open(pool.clone())?);
        if !cfg.clean {
            // Writes cut by the crash may have reached some copies and not others, or a block
            // and not its checksum: make every copy of every block in use agree again.
            let used = fs.used_blocks()?;
            let report = pool.scrub(Some(&used)).map_err(io_err("scrub after unclean stop"))?;
            tracing::warn!(checked = report.checked, repaired = report.repaired,
                unrecoverable = report.unrecoverable,
                "last run did not end cleanly; copies of every block in use compared");
            pool.end_unclean_recovery();
        }
        cfg.clean = false;
        cfg.store(&dir)?;
        Ok(Node {
            state_dir: dir,
            config: Mutex::new(cfg),
            master: Mutex::new(master),
            pool,
            fs,
            rotation: Mutex::new(()),
            _lock: lock,
        })
    }

    /// The filesystem.
    pub fn fs(&self) -> &Arc<Fs> {
        &self.fs
    }

    /// The pool.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// A copy of the volume configuration.
    pub fn config(&self) -> VolumeConfig {
        self.config.lock().clone()
    }

    /// Makes everything durable and records a clean shutdown.
    pub fn shutdown(&self) -> Result<(), NodeError> {
        self.fs.sync_all()?;
        self.pool.sync().map_err(io_err("sync drives"))?;
        let mut cfg = self.config.lock();
        cfg.clean = true;
        cfg.store(&self.state_dir)?;
        tracing::info!("volume shut down cleanly");
        Ok(())
    }

    /// Rotates the master key (DESIGN.md section 3), online: block I/O goes on meanwhile.
    pub fn rotate(&self, new: NewMasterKey) -> Result<KeyRef, NodeError> {
        let _serial = self.rotation.lock();
        let drives: Vec<Arc<Drive>> = self
            .pool
            .members()
            .iter()
            .map(|m| m.drive().clone())
            .collect();
        let mut cfg = self.config.lock().clone();
        let (new_ref, new_key) = rotation::rotate(&self.state_dir, &mut cfg, &drives, new)?;
        {
            let mut live = self.config.lock();
            live.key = cfg.key.clone();
            live.last_key_rotation_time = cfg.last_key_rotation_time.clone();
        }
        *self.master.lock() = new_key;
        Ok(new_ref)
    }

    /// Runs every check: the filesystem's invariants and the agreement of every copy of
    /// every block in use. Returns the problems found (empty when clean).
    pub fn check(&self) -> Result<Vec<String>, NodeError> {
        let mut problems: Vec<String> = self.fs.check()?.problems.clone();
        let used = self.fs.used_blocks()?;
        for m in self
            .pool
            .verify_copies(&used)
            .map_err(io_err("compare copies"))?
        {
            problems.push(format!(
                "logical block {}: copy {} on drive slot {} differs from copy 0",
                m.lbn, m.copy, m.drive
            ));
        }
        Ok(problems)
    }
}
