//! The filesystem: inodes, directories, extents, allocation, the transactional metadata store
//! that lives in encrypted pool blocks, and the read, write and fsync paths.
//!
//! Layout of the device (see [`layout`]): block 0 is the superblock, then a fixed metadata
//! region holding a redb database (through [`store::MetaBackend`]), then the data region.
//! Data blocks are written in place, before the metadata commit that references them.
//!
//! Metadata changes are redb transactions. Ordinary operations commit without durability;
//! `fsync`, [`Fs::sync_all`] and a background flusher (every few seconds) commit durably,
//! which first syncs the device, so everything written before is durable with it. After a
//! crash, [`Fs::open`] finds the last durable commit; blocks freed after it were never reused
//! (see [`alloc`]), so every file that was fsynced reads back exactly.
//!
//! This module never sees FUSE: [`crate::fuse`] adapts kernel requests to the calls here.

mod alloc;
mod check;
mod file;
pub mod layout;
mod ns;
mod store;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crossbeam::channel::{Receiver, Sender, bounded};
use parking_lot::{Mutex, RwLock};
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, WriteTransaction,
};

pub use check::FsckReport;
pub use store::FileKind;

use alloc::Allocator;
use layout::Superblock;
use store::{
    COUNTERS, DIRENTS, DIRSEQ, EXTENTS, INODES, Inode, MetaBackend, NEXT_INO, ORPHANS, XATTRS,
};

use crate::BLOCK_SIZE;
use crate::pool::BlockDevice;

/// Inode number of the root directory.
pub const ROOT_INO: u64 = 1;
/// Longest name of a directory entry, in bytes.
pub const NAME_MAX: usize = 255;
/// Longest symlink target, in bytes.
pub const SYMLINK_MAX: usize = 4095;
/// Largest file size: 2^48 bytes (64 TiB).
pub const MAX_FILE_SIZE: u64 = 1 << 48;
/// Largest extended attribute value, in bytes.
pub const XATTR_VALUE_MAX: usize = 64 * 1024;
/// How often the background flusher makes the metadata durable.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(3);

const LOCK_SHARDS: usize = 256;

/// An error of a filesystem operation; [`FsError::errno`] gives the errno for the FUSE edge.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FsError {
    /// No such file, directory or attribute owner.
    #[error("no such file or directory")]
    NotFound,
    /// The name exists already.
    #[error("file exists")]
    Exists,
    /// The directory is not empty.
    #[error("directory not empty")]
    NotEmpty,
    /// A directory was needed.
    #[error("not a directory")]
    NotDir,
    /// A non-directory was needed.
    #[error("is a directory")]
    IsDir,
    /// No data or metadata space left.
    #[error("no space left on device")]
    NoSpace,
    /// A name longer than [`NAME_MAX`].
    #[error("file name too long")]
    NameTooLong,
    /// An argument the operation cannot take (the text says which).
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// No such extended attribute.
    #[error("no such attribute")]
    NoAttr,
    /// The caller's buffer is too small.
    #[error("result too large for the buffer")]
    Range,
    /// Beyond [`MAX_FILE_SIZE`].
    #[error("file too large")]
    FileTooBig,
    /// The operation is not permitted on this object.
    #[error("operation not permitted")]
    NotPermitted,
    /// Device I/O failed; the text names the inode and block.
    #[error("I/O error: {what}: {source}")]
    Io {
        /// What was being done: inode and block numbers.
        what: String,
        /// The device's error.
        source: io::Error,
    },
    /// On-disk state that breaks the format's rules (the text gives the values seen).
    #[error("corrupt filesystem: {0}")]
    Corrupt(String),
    /// The metadata store failed.
    #[error("metadata store: {0}")]
    Store(String),
    /// The metadata store could not grow (its region is full).
    #[error("no space left in the metadata region")]
    StoreFull,
}

impl FsError {
    /// The errno for this error.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::Exists => libc::EEXIST,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::NoSpace | FsError::StoreFull => libc::ENOSPC,
            FsError::NameTooLong => libc::ENAMETOOLONG,
            FsError::Invalid(_) => libc::EINVAL,
            FsError::NoAttr => libc::ENODATA,
            FsError::Range => libc::ERANGE,
            FsError::FileTooBig => libc::EFBIG,
            FsError::NotPermitted => libc::EPERM,
            FsError::Io { .. } | FsError::Corrupt(_) | FsError::Store(_) => libc::EIO,
        }
    }

    pub(crate) fn io(what: String, source: io::Error) -> FsError {
        tracing::error!(%what, error = %source, "device I/O failed");
        FsError::Io { what, source }
    }
}

fn from_redb(e: redb::Error) -> FsError {
    match e {
        redb::Error::Io(io) if io.raw_os_error() == Some(libc::ENOSPC) => FsError::StoreFull,
        other => {
            tracing::error!(error = %other, "metadata store error");
            FsError::Store(other.to_string())
        }
    }
}

macro_rules! redb_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for FsError {
            fn from(e: $t) -> FsError {
                from_redb(e.into())
            }
        }
    )*};
}
redb_errors!(
    redb::Error,
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    redb::DatabaseError,
    redb::SetDurabilityError
);

/// Options of [`Fs::format`].
#[derive(Debug, Clone, Default)]
pub struct FormatOptions {
    /// Blocks of the metadata region; default clamp(blocks/16, 16 MiB, 16 GiB), at most half
    /// the device.
    pub metadata_blocks: Option<u64>,
}

/// Attributes of an inode, as `stat` shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: u64,
    /// Kind of file.
    pub kind: FileKind,
    /// Permission bits (07777).
    pub perm: u16,
    /// Link count.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Space used, in 512-byte units.
    pub blocks: u64,
    /// Last access.
    pub atime: SystemTime,
    /// Last data change.
    pub mtime: SystemTime,
    /// Last inode change.
    pub ctime: SystemTime,
    /// Device number of a device node.
    pub rdev: u32,
}

impl Attr {
    fn from_inode(ino: u64, i: &Inode) -> Attr {
        Attr {
            ino,
            kind: i.kind,
            perm: i.perm,
            nlink: i.nlink,
            uid: i.uid,
            gid: i.gid,
            size: i.size,
            blocks: i.blocks * (BLOCK_SIZE as u64 / 512),
            atime: i.atime,
            mtime: i.mtime,
            ctime: i.ctime,
            rdev: i.rdev,
        }
    }
}

/// Changes of [`Fs::setattr`]; `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct SetAttr {
    /// New permission bits.
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size (truncate or extend).
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<SystemTime>,
    /// New modification time.
    pub mtime: Option<SystemTime>,
    /// New change time.
    pub ctime: Option<SystemTime>,
    /// Drop set-user-ID and, on a group-executable file, set-group-ID (ignored for
    /// directories and when `mode` is given): the kernel leaves this to the filesystem on a
    /// change of owner and on a truncate by a user without `CAP_FSETID`.
    pub kill_suidgid: bool,
}

/// Figures of [`Fs::statfs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatFs {
    /// Data blocks in all.
    pub blocks: u64,
    /// Data blocks free (including those waiting for a durable commit).
    pub bfree: u64,
    /// Data blocks available to users.
    pub bavail: u64,
    /// Inodes that could exist.
    pub files: u64,
    /// Inodes that could still be made.
    pub ffree: u64,
    /// Block size.
    pub bsize: u32,
    /// Longest name.
    pub namelen: u32,
}

/// One directory entry of [`Fs::readdir`].
#[derive(Debug, Clone)]
pub struct DirEntry {
    /// Inode of the entry.
    pub ino: u64,
    /// Offset to pass to continue after this entry.
    pub next_offset: u64,
    /// Kind of the entry.
    pub kind: FileKind,
    /// Name.
    pub name: Vec<u8>,
}

/// How [`Fs::rename`] treats an existing target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenameMode {
    /// Replace the target if it exists.
    Replace,
    /// Fail with `EEXIST` if the target exists.
    NoReplace,
    /// Swap source and target, which must both exist.
    Exchange,
}

/// The state shared by the filesystem's handle and its flusher thread.
pub(crate) struct Inner {
    dev: Arc<dyn BlockDevice>,
    db: Database,
    backend_usage: Arc<dyn Fn() -> (u64, u64) + Send + Sync>,
    sb: Superblock,
    alloc: Mutex<Allocator>,
    /// Incremented when a durable commit starts; tags pending frees.
    epoch: AtomicU64,
    /// A non-durable commit happened since the last durable one.
    dirty: AtomicBool,
    /// Serializes durable commits.
    sync_lock: Mutex<()>,
    /// The open metadata transaction that every operation runs in ([`Inner::write_tx`]).
    batch: Mutex<Option<Tx>>,
    /// The store failed inside an operation: all further work is refused.
    poisoned: AtomicBool,
    /// Per-inode data locks (striped): reads share, writes and truncates exclude.
    data_locks: Vec<RwLock<()>>,
    /// Open handles per inode, for unlink of open files.
    open_counts: Mutex<HashMap<u64, u32>>,
    /// Modification times of overwrites that changed no block map or size: kept here instead
    /// of a transaction per write, shown by `getattr` and written by the next sync.
    dirty_mtime: Mutex<HashMap<u64, SystemTime>>,
    /// Inodes that may have a `security.*` xattr (a superset: filled at open, grown by
    /// `setxattr`, shrunk by `removexattr`), so that the kernel's `security.capability` query
    /// before every write is answered without a read transaction.
    security_xattrs: Mutex<HashSet<u64>>,
    inode_count: AtomicU64,
    /// Size, permissions and block map of files read or written lately, so that reads and
    /// overwrites need no metadata lookup ([`file::FileMaps`]).
    maps: file::FileMaps,
}

/// The name prefix of the xattrs the kernel queries on every write.
pub(crate) const SECURITY_PREFIX: &[u8] = b"security.";
/// File capabilities: dropped by every write, truncate and change of owner.
pub(crate) const CAPS_XATTR: &[u8] = b"security.capability";

/// A mounted-in-process filesystem over a [`BlockDevice`].
pub struct Fs {
    inner: Arc<Inner>,
    flusher: Option<(Sender<()>, JoinHandle<()>)>,
}

impl std::fmt::Debug for Fs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fs")
            .field("superblock", &self.inner.sb)
            .finish()
    }
}

fn now() -> SystemTime {
    SystemTime::now()
}

/// Maps a device error to [`FsError::Io`]; `what` (formatted only on error) says what failed.
fn dev_err(what: impl FnOnce() -> String) -> impl FnOnce(io::Error) -> FsError {
    move |e| FsError::io(what(), e)
}

fn redb_builder() -> redb::Builder {
    let mut b = redb::Builder::new();
    b.set_cache_size(256 * 1024 * 1024);
    b
}

impl Fs {
    /// Writes an empty filesystem (superblock, metadata store with the root directory) to
    /// `dev`, durably.
    pub fn format(dev: Arc<dyn BlockDevice>, opts: &FormatOptions) -> Result<(), FsError> {
        let blocks = dev.block_count();
        let min_meta = 256u64;
        let meta = opts.metadata_blocks.unwrap_or_else(|| {
            let mib16 = 16 * 1024 * 1024 / BLOCK_SIZE as u64;
            let gib16 = 16 * 1024 * mib16;
            (blocks / 16).clamp(mib16, gib16).min(blocks / 2)
        });
        if meta < min_meta || blocks < 1 + meta + 16 {
            return Err(FsError::Invalid(format!(
                "device of {blocks} blocks with a metadata region of {meta} blocks: need at \
                 least {min_meta} metadata blocks and 16 data blocks"
            )));
        }
        let sb = Superblock {
            device_blocks: blocks,
            meta_start: 1,
            meta_blocks: meta,
            data_start: 1 + meta,
            data_blocks: blocks - 1 - meta,
            meta_len: 0,
        };
        dev.write_blocks(0, &sb.encode())
            .map_err(dev_err(|| "writing superblock".into()))?;
        let db = redb_builder().create_with_backend(MetaBackend::new(dev.clone(), sb))?;
        let tx = db.begin_write()?;
        {
            let t = now();
            let root = Inode {
                kind: FileKind::Dir,
                perm: 0o755,
                uid: 0,
                gid: 0,
                nlink: 2,
                size: 0,
                blocks: 0,
                atime: t,
                mtime: t,
                ctime: t,
                rdev: 0,
                parent: ROOT_INO,
                next_cookie: 0,
                target: Vec::new(),
            };
            tx.open_table(INODES)?
                .insert(ROOT_INO, root.encode().as_slice())?;
            tx.open_table(COUNTERS)?.insert(NEXT_INO, ROOT_INO + 1)?;
            tx.open_table(DIRENTS)?;
            tx.open_table(DIRSEQ)?;
            tx.open_table(EXTENTS)?;
            tx.open_table(XATTRS)?;
            tx.open_table(ORPHANS)?;
        }
        tx.commit()?;
        drop(db);
        dev.sync()
            .map_err(dev_err(|| "syncing after format".into()))?;
        tracing::info!(blocks, meta_blocks = meta, "formatted filesystem");
        Ok(())
    }

    /// Opens the filesystem on `dev`, recovering to the last durable state after a crash, and
    /// reaps files that were unlinked while open.
    pub fn open(dev: Arc<dyn BlockDevice>) -> Result<Fs, FsError> {
        let mut b = vec![0u8; BLOCK_SIZE];
        dev.read_blocks(0, &mut b)
            .map_err(dev_err(|| "reading superblock (block 0)".into()))?;
        let sb = Superblock::decode(&b, dev.block_count())?;
        let backend = Arc::new(MetaBackend::new(dev.clone(), sb));
        let db = redb_builder().create_with_backend(SharedBackend(backend.clone()))?;
        let usage_backend = backend.clone();
        let (used, inode_count) = Self::scan(&db, &sb)?;
        let security_xattrs = Self::scan_security_xattrs(&db)?;
        let alloc = Allocator::new((sb.data_start, sb.data_blocks), &used);
        let inner = Arc::new(Inner {
            dev,
            db,
            backend_usage: Arc::new(move || usage_backend.usage()),
            sb,
            alloc: Mutex::new(alloc),
            epoch: AtomicU64::new(1),
            dirty: AtomicBool::new(false),
            sync_lock: Mutex::new(()),
            batch: Mutex::new(None),
            poisoned: AtomicBool::new(false),
            data_locks: (0..LOCK_SHARDS).map(|_| RwLock::new(())).collect(),
            open_counts: Mutex::new(HashMap::new()),
            dirty_mtime: Mutex::new(HashMap::new()),
            security_xattrs: Mutex::new(security_xattrs),
            inode_count: AtomicU64::new(inode_count),
            maps: file::FileMaps::default(),
        });
        inner.reap_orphans()?;
        let (stop_tx, stop_rx) = bounded(1);
        let weak = Arc::downgrade(&inner);
        let handle = std::thread::Builder::new()
            .name("atrest-flush".into())
            .spawn(move || flusher(weak, stop_rx))
            .map_err(|e| FsError::io("starting the flusher thread".into(), e))?;
        Ok(Fs {
            inner,
            flusher: Some((stop_tx, handle)),
        })
    }

    /// The inodes having at least one `security.*` xattr.
    fn scan_security_xattrs(db: &Database) -> Result<HashSet<u64>, FsError> {
        let rx = db.begin_read()?;
        let mut set = HashSet::new();
        for row in rx.open_table(XATTRS)?.iter()? {
            let (k, _) = row?;
            let (ino, name) = k.value();
            if name.starts_with(SECURITY_PREFIX) {
                set.insert(ino);
            }
        }
        Ok(set)
    }

    /// Reads every extent (sorted and checked) and counts the inodes.
    fn scan(db: &Database, sb: &Superblock) -> Result<(Vec<(u64, u64)>, u64), FsError> {
        let rx = db.begin_read()?;
        let mut used = Vec::new();
        for row in rx.open_table(EXTENTS)?.iter()? {
            let (k, v) = row?;
            let ((ino, fb), (lbn, len)) = (k.value(), v.value());
            let end = lbn.checked_add(len);
            if len == 0
                || lbn < sb.data_start
                || end.is_none_or(|e| e > sb.data_start + sb.data_blocks)
            {
                return Err(FsError::Corrupt(format!(
                    "inode {ino} file block {fb}: extent {lbn}+{len} outside the data region"
                )));
            }
            used.push((lbn, len));
        }
        used.sort_unstable();
        for w in used.windows(2) {
            if w[0].0 + w[0].1 > w[1].0 {
                return Err(FsError::Corrupt(format!(
                    "extents {}+{} and {}+{} overlap",
                    w[0].0, w[0].1, w[1].0, w[1].1
                )));
            }
        }
        let count = rx.open_table(INODES)?.len()?;
        Ok((used, count))
    }

    /// Makes everything done so far durable: device sync and a durable metadata commit.
    pub fn sync_all(&self) -> Result<(), FsError> {
        self.inner.sync_all()
    }

    /// Space and inode figures.
    pub fn statfs(&self) -> Result<StatFs, FsError> {
        let a = self.inner.alloc.lock();
        let bfree = a.free_blocks() + a.pending_blocks();
        drop(a);
        let used = self.inner.inode_count.load(Ordering::Relaxed);
        let (len, cap) = (self.inner.backend_usage)();
        // An inode with its entry costs a few hundred bytes of metadata.
        let files = used + (cap / 2).saturating_sub(len) / 512;
        Ok(StatFs {
            blocks: self.inner.sb.data_blocks,
            bfree,
            bavail: bfree,
            files,
            ffree: files - used,
            bsize: BLOCK_SIZE as u32,
            namelen: NAME_MAX as u32,
        })
    }

    /// The superblock this filesystem was opened with.
    pub fn superblock(&self) -> Superblock {
        self.inner.sb
    }
}

impl Fs {
    /// Stops the flusher and leaks the in-memory state without any final sync, as a power cut
    /// would leave it. For crash tests only.
    #[cfg(test)]
    pub(crate) fn abandon(mut self) {
        if let Some((stop, handle)) = self.flusher.take() {
            let _ = stop.send(());
            let _ = handle.join();
        }
        std::mem::forget(self);
    }
}

impl Drop for Fs {
    fn drop(&mut self) {
        if let Some((stop, handle)) = self.flusher.take() {
            let _ = stop.send(());
            let _ = handle.join();
        }
        if let Err(e) = self.inner.sync_all() {
            tracing::error!(error = %e, "final sync of the filesystem failed");
        }
    }
}

/// Lets the filesystem keep a handle on the backend that redb owns.
#[derive(Debug)]
struct SharedBackend(Arc<MetaBackend>);

impl redb::StorageBackend for SharedBackend {
    fn len(&self) -> Result<u64, redb::BackendError> {
        self.0.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), redb::BackendError> {
        self.0.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), redb::BackendError> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> Result<(), redb::BackendError> {
        self.0.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), redb::BackendError> {
        self.0.write(offset, data)
    }
}

fn flusher(inner: std::sync::Weak<Inner>, stop: Receiver<()>) {
    loop {
        match stop.recv_timeout(FLUSH_INTERVAL) {
            Err(crossbeam::channel::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let Some(inner) = inner.upgrade() else { return };
        if inner.dirty.load(Ordering::Acquire)
            && let Err(e) = inner.sync_all()
        {
            tracing::error!(error = %e, "periodic metadata commit failed");
        }
    }
}

/// Operations a batch takes before it is committed (without durability) and a new one
/// begins: bounds the memory of one transaction and the work of its commit.
const BATCH_OPS: u32 = 1024;

/// The open metadata transaction: every operation's changes, not yet committed, and the
/// blocks they free.
pub(crate) struct Tx {
    pub tx: WriteTransaction,
    /// Runs freed by the operations in this transaction; pending until durable once it
    /// commits.
    pub freed: Vec<(u64, u64)>,
    /// Change in the inode count by the operation running now.
    pub inode_delta: i64,
    /// Operations that changed something in this transaction.
    ops: u32,
}

impl FsError {
    /// Whether an operation that failed with this error may have changed the transaction
    /// already. Operations check everything a caller can get wrong before they change
    /// anything, so only the store's own failures (and the device's under it) remain.
    fn may_leave_partial_change(&self) -> bool {
        matches!(
            self,
            FsError::Io { .. } | FsError::Corrupt(_) | FsError::Store(_) | FsError::StoreFull
        )
    }
}

impl Inner {
    /// Runs one operation in the open metadata transaction (beginning one if none is open).
    ///
    /// Operations share one redb write transaction, which is committed after
    /// [`BATCH_OPS`] operations and by every [`Inner::sync_all`] (durably): committing each
    /// operation on its own cost more than the operation itself. Nothing is lost by it:
    /// a commit without durability survived only in memory before as well. Reads go through
    /// the same transaction ([`Inner::view`]), so every operation sees every earlier one.
    ///
    /// On `Err` the operation changed nothing, except when the store or the device failed
    /// under it: the open transaction then holds half an operation and is dropped with the
    /// operations before it, and the filesystem refuses all further work ([`FsError::Store`])
    /// until it is mounted again, which recovers the last durable state.
    pub(crate) fn write_tx<T>(
        &self,
        f: impl FnOnce(&mut Tx) -> Result<T, FsError>,
    ) -> Result<T, FsError> {
        let mut g = self.batch.lock();
        let t = self.open_batch(&mut g)?;
        t.inode_delta = 0;
        let res = f(t);
        // Any operation may change a file's size, permissions or block map: the cached maps
        // go before the batch lock is released.
        self.maps.clear();
        match res {
            Ok(v) => {
                t.ops += 1;
                let delta = std::mem::take(&mut t.inode_delta);
                if delta != 0 {
                    self.inode_count.fetch_add(delta as u64, Ordering::Relaxed);
                }
                self.dirty.store(true, Ordering::Release);
                if t.ops >= BATCH_OPS {
                    self.commit_batch(&mut g)?;
                }
                Ok(v)
            }
            Err(e) => {
                if e.may_leave_partial_change() {
                    self.poison(&mut g, &e);
                }
                Err(e)
            }
        }
    }

    /// [`Inner::write_tx`] for an operation that changes the size, permissions or block map
    /// of file `ino` only: `f` also returns that file's new map if the old one was cached
    /// ([`file::FileMaps`]), which then replaces it, and the other files' maps stay.
    pub(crate) fn write_tx_file<T>(
        &self,
        ino: u64,
        f: impl FnOnce(&mut Tx) -> Result<(T, Option<file::FileMap>), FsError>,
    ) -> Result<T, FsError> {
        let mut g = self.batch.lock();
        let t = self.open_batch(&mut g)?;
        t.inode_delta = 0;
        match f(t) {
            Ok((v, map)) => {
                match map {
                    Some(m) => self.maps.put_or_mark(ino, Some(m)),
                    None => self.maps.forget(ino),
                }
                t.ops += 1;
                self.dirty.store(true, Ordering::Release);
                if t.ops >= BATCH_OPS {
                    self.commit_batch(&mut g)?;
                }
                Ok(v)
            }
            Err(e) => {
                self.maps.clear();
                if e.may_leave_partial_change() {
                    self.poison(&mut g, &e);
                }
                Err(e)
            }
        }
    }

    /// Runs a read-only `f` against the open metadata transaction (beginning one if none is
    /// open), so that it sees every operation so far.
    pub(crate) fn view<T>(
        &self,
        f: impl FnOnce(&mut Tx) -> Result<T, FsError>,
    ) -> Result<T, FsError> {
        let mut g = self.batch.lock();
        let t = self.open_batch(&mut g)?;
        f(t)
    }

    fn open_batch<'a>(&self, g: &'a mut Option<Tx>) -> Result<&'a mut Tx, FsError> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(FsError::Store(
                "the metadata store failed earlier; unmount and mount again to recover the \
                 last durable state"
                    .into(),
            ));
        }
        if g.is_none() {
            let mut tx = self.db.begin_write()?;
            tx.set_durability(Durability::None)?;
            *g = Some(Tx {
                tx,
                freed: Vec::new(),
                inode_delta: 0,
                ops: 0,
            });
        }
        Ok(g.as_mut().expect("opened above"))
    }

    /// Commits the open transaction without durability (its frees become pending).
    fn commit_batch(&self, g: &mut Option<Tx>) -> Result<(), FsError> {
        let Some(t) = g.take() else { return Ok(()) };
        let Tx { tx, freed, .. } = t;
        if let Err(e) = tx.commit() {
            let e = FsError::from(e);
            self.poison(g, &e);
            return Err(e);
        }
        if !freed.is_empty() {
            let epoch = self.epoch.load(Ordering::Acquire);
            self.alloc.lock().release_pending(&freed, epoch);
        }
        Ok(())
    }

    /// Whether the open transaction frees blocks (they become allocatable after a sync).
    pub(crate) fn batch_frees_blocks(&self) -> bool {
        self.batch
            .lock()
            .as_ref()
            .is_some_and(|t| !t.freed.is_empty())
    }

    /// Commits what is open, so that a new read transaction sees it (for the checker).
    pub(crate) fn flush_batch(&self) -> Result<(), FsError> {
        self.commit_batch(&mut self.batch.lock())
    }

    /// Drops the open transaction after a failure inside an operation and refuses all
    /// further work.
    fn poison(&self, g: &mut Option<Tx>, e: &FsError) {
        tracing::error!(error = %e, "metadata store failed inside an operation: the changes \
            since the last commit are dropped and the filesystem refuses further work until \
            it is mounted again");
        self.poisoned.store(true, Ordering::Release);
        self.maps.clear();
        if let Some(t) = g.take() {
            let _ = t.tx.abort();
        }
    }

    /// A durable commit of the open transaction (redb syncs the device first, so every data
    /// block written before is durable with it); then frees the blocks that waited for it.
    pub(crate) fn sync_all(&self) -> Result<(), FsError> {
        let _s = self.sync_lock.lock();
        self.maps.forget_fragmented();
        let mut g = self.batch.lock();
        self.open_batch(&mut g)?;
        let next = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        self.dirty.store(false, Ordering::Release);
        let times: Vec<(u64, SystemTime)> = self.dirty_mtime.lock().drain().collect();
        let res = Self::apply_times(g.as_mut().expect("opened above"), &times);
        let res = res.and_then(|()| {
            let Tx { mut tx, freed, .. } = g.take().expect("opened above");
            tx.set_durability(Durability::Immediate)?;
            // A durable commit of no change still writes a new commit slot and syncs.
            tx.commit()?;
            Ok(freed)
        });
        match res {
            Ok(freed) => {
                let mut a = self.alloc.lock();
                a.release_pending(&freed, next - 1);
                a.durable_up_to(next);
                Ok(())
            }
            Err(e) => {
                self.dirty.store(true, Ordering::Release);
                let mut d = self.dirty_mtime.lock();
                for (ino, t) in times {
                    d.entry(ino).or_insert(t);
                }
                drop(d);
                self.poison(&mut g, &e);
                Err(e)
            }
        }
    }

    fn apply_times(t: &mut Tx, times: &[(u64, SystemTime)]) -> Result<(), FsError> {
        let mut tab = t.tx.open_table(INODES)?;
        for &(ino, tm) in times {
            let Ok(mut i) = get_inode(&tab, ino) else {
                continue;
            };
            if tm > i.mtime {
                i.mtime = tm;
                i.ctime = i.ctime.max(tm);
                tab.insert(ino, i.encode().as_slice())?;
            }
        }
        Ok(())
    }

    /// Shows a pending overwrite time in `a`.
    pub(crate) fn overlay(&self, mut a: Attr) -> Attr {
        if let Some(&t) = self.dirty_mtime.lock().get(&a.ino) {
            a.mtime = a.mtime.max(t);
            a.ctime = a.ctime.max(t);
        }
        a
    }

    /// Takes the pending overwrite time of `ino`, for a transaction that stores the inode.
    pub(crate) fn take_dirty_mtime(&self, ino: u64) -> Option<SystemTime> {
        self.dirty_mtime.lock().remove(&ino)
    }

    /// Puts back a pending overwrite time taken by a transaction that did not commit.
    pub(crate) fn restore_dirty_mtime(&self, ino: u64, t: SystemTime) {
        let mut d = self.dirty_mtime.lock();
        let e = d.entry(ino).or_insert(t);
        *e = (*e).max(t);
        self.dirty.store(true, Ordering::Release);
    }

    /// Records an overwrite that needs no transaction.
    pub(crate) fn touch(&self, ino: u64) {
        self.dirty_mtime.lock().insert(ino, now());
        self.dirty.store(true, Ordering::Release);
    }

    /// Whether `ino` may have a `security.*` xattr (false: it surely has none).
    pub(crate) fn may_have_security_xattr(&self, ino: u64) -> bool {
        self.security_xattrs.lock().contains(&ino)
    }

    /// Records that `ino` may have a `security.*` xattr.
    pub(crate) fn note_security_xattr(&self, ino: u64) {
        self.security_xattrs.lock().insert(ino);
    }

    /// Records that `ino` has no `security.*` xattr left.
    pub(crate) fn forget_security_xattr(&self, ino: u64) {
        self.security_xattrs.lock().remove(&ino);
    }

    fn data_lock(&self, ino: u64) -> &RwLock<()> {
        &self.data_locks[(ino as usize) % LOCK_SHARDS]
    }

    /// Whether the metadata store may grow further: redb doubles its length when it grows,
    /// and a growth past the region would fail the store, so allocating operations stop at
    /// half the region.
    pub(crate) fn check_meta_space(&self) -> Result<(), FsError> {
        let (len, cap) = (self.backend_usage)();
        if len > cap / 2 {
            Err(FsError::NoSpace)
        } else {
            Ok(())
        }
    }

    /// Deletes every orphan left by a crash (or an unclean stop).
    fn reap_orphans(&self) -> Result<(), FsError> {
        let orphans: Vec<u64> = {
            let rx = self.db.begin_read()?;
            let t = rx.open_table(ORPHANS)?;
            let mut v = Vec::new();
            for row in t.iter()? {
                v.push(row?.0.value());
            }
            v
        };
        for ino in orphans {
            tracing::info!(ino, "reaping orphan inode");
            self.write_tx(|t| {
                t.tx.open_table(ORPHANS)?.remove(ino)?;
                ns::delete_inode(t, ino)
            })?;
        }
        Ok(())
    }
}

/// Reads an inode from any table handle; `NotFound` if absent, `Corrupt` if malformed.
pub(crate) fn get_inode(
    t: &impl ReadableTable<u64, &'static [u8]>,
    ino: u64,
) -> Result<Inode, FsError> {
    match t.get(ino)? {
        Some(v) => Inode::decode(v.value())
            .ok_or_else(|| FsError::Corrupt(format!("inode {ino}: malformed record"))),
        None => Err(FsError::NotFound),
    }
}
