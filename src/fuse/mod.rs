//! The adapter from kernel FUSE requests (through `fuser`) to [`crate::fs::Fs`] calls, and
//! the mount and unmount of a session.
//!
//! Nothing here knows an on-disk format: every request becomes one `Fs` call and its
//! [`crate::fs::FsError`] becomes an errno. The mount uses `default_permissions`, so the
//! kernel checks permissions; the session runs on several threads.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, Session, SessionACL, SessionUnmounter, TimeOrNow, WriteFlags,
};
use parking_lot::Mutex;

use crate::fs::{Attr, FileKind, Fs, FsError, RenameMode, SetAttr};

/// Largest write request the kernel sends.
pub const MAX_WRITE: u32 = 1024 * 1024;

/// How to mount.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Name shown as the source in the mount table.
    pub fsname: String,
    /// Threads serving requests.
    pub threads: usize,
    /// Let users other than the mounting one in (`allow_other`).
    pub allow_other: bool,
    /// How long the kernel may cache attributes and names ([`CACHE_TIMEOUT`] by default).
    /// Every change of the namespace and of attributes goes through this mount, and the
    /// kernel drops what a change of its own makes stale, so a long time is safe; it saves a
    /// lookup round trip per name on `stat`, `open` and `unlink` of recently seen files.
    pub attr_ttl: Duration,
    /// Let the kernel gather buffered writes in its page cache (FUSE writeback cache). Much
    /// faster for small buffered writes; the price is that a write error such as ENOSPC shows
    /// at `fsync` or `close` instead of at `write`, and the kernel follows every unlink of a
    /// file with a setattr. Off by default (`atrest mount --writeback-cache`).
    pub writeback_cache: bool,
    /// Keep file data in the kernel's page cache. Off by default: every read and write goes
    /// to the daemon as it comes (FUSE `direct_io`), which on the 2-core bench VM made
    /// buffered 1 MiB reads +37%, buffered 1 MiB writes +80% and buffered 4 KiB random
    /// reads +13% (no page-cache copy, no asynchronous read-ahead requests), keeps plaintext
    /// out of the page cache, and costs the page cache's speed on data read again. Shared
    /// writable `mmap` still works (kernels from 6.6, `FUSE_DIRECT_IO_ALLOW_MMAP`). Always on
    /// with [`MountOptions::writeback_cache`].
    pub page_cache: bool,
    /// Let the kernel check permissions (`default_permissions`). Always on with
    /// `allow_other`; without it only root can use the mount (the session refuses every
    /// other user), root passes the kernel's checks anyway, and leaving them out saves the
    /// kernel's attribute refresh of a directory before each create and unlink in it.
    pub default_permissions: bool,
    /// Read-ahead of the mount, in KiB (`/sys/class/bdi/<dev>/read_ahead_kb`), set once the
    /// kernel has the session. The kernel starts FUSE mounts at 128 KiB and caps it there
    /// through the session's start; a larger window lets it read a sequential stream ahead
    /// in several large requests at once, which the session's threads serve in parallel.
    /// Only sequential readers get a large window; 0 leaves the kernel's value.
    pub read_ahead_kb: u32,
}

/// How long the kernel caches names and attributes unless told otherwise: with 1 s,
/// stat-ing 30,000 files just created took 1.1 s and deleting them 2.8-3.2 s on the bench VM;
/// with 30 s, 0.11 s and 1.5 s (each lookup round trip saved).
pub const CACHE_TIMEOUT: Duration = Duration::from_secs(30);

/// Read-ahead of a mount unless told otherwise: buffered sequential reads of 1 MiB went
/// from about 1.25 to 1.65 GB/s on the 2-core test machine (bench/RESULTS.md).
pub const READ_AHEAD_KB: u32 = 4096;

impl Default for MountOptions {
    fn default() -> Self {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        MountOptions {
            fsname: "atrest".into(),
            threads: threads.clamp(2, 8),
            allow_other: false,
            attr_ttl: CACHE_TIMEOUT,
            writeback_cache: false,
            page_cache: false,
            default_permissions: false,
            read_ahead_kb: READ_AHEAD_KB,
        }
    }
}

/// Unmounts from any thread (for signal handlers); cloning shares the one mount.
#[derive(Clone)]
pub struct Unmounter(Arc<Mutex<UnmountState>>);

struct UnmountState {
    session: SessionUnmounter,
    mountpoint: PathBuf,
    /// The session's own unmount was tried; it gives up its mount even when it fails, so
    /// later attempts go through `fusermount3 -u`.
    tried: bool,
}

impl std::fmt::Debug for Unmounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Unmounter")
    }
}

impl Unmounter {
    /// Unmounts the filesystem; the session then ends. A busy mount is detached lazily: it
    /// goes when the last file on it is closed. An error means neither worked.
    pub fn unmount(&self) -> io::Result<()> {
        let Err(e) = self.try_unmount() else {
            return Ok(());
        };
        tracing::warn!(error = %e, "unmount failed, detaching lazily");
        let mountpoint = self.0.lock().mountpoint.clone();
        let out = Command::new("fusermount3")
            .arg("-uz")
            .arg(&mountpoint)
            .output()?;
        if out.status.success() || !is_mounted(&mountpoint) {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "unmount {}: {e}; fusermount3 -uz: {}",
                mountpoint.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }

    /// Unmounts the filesystem; the session then ends. A busy mount gives an error and may be
    /// retried; unmounting an unmounted filesystem is harmless.
    pub fn try_unmount(&self) -> io::Result<()> {
        let mut st = self.0.lock();
        if !st.tried {
            st.tried = true;
            return st.session.unmount();
        }
        let out = Command::new("fusermount3")
            .arg("-u")
            .arg(&st.mountpoint)
            .output()?;
        if out.status.success() || !is_mounted(&st.mountpoint) {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "fusermount3 -u {}: {}",
                st.mountpoint.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }
}

/// A mounted session.
pub struct MountHandle {
    fs: Arc<Fs>,
    unmounter: Unmounter,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl std::fmt::Debug for MountHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountHandle").finish_non_exhaustive()
    }
}

impl MountHandle {
    /// A handle that unmounts from another thread.
    pub fn unmounter(&self) -> Unmounter {
        self.unmounter.clone()
    }

    /// Waits until the filesystem is unmounted (by [`Unmounter::unmount`] or
    /// `fusermount3 -u`), then makes everything durable.
    pub fn join(mut self) -> io::Result<()> {
        let res = self.wait();
        let synced = self
            .fs
            .sync_all()
            .map_err(|e| io::Error::other(e.to_string()));
        res.and(synced)
    }

    fn wait(&mut self) -> io::Result<()> {
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| io::Error::other("FUSE session thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for MountHandle {
    fn drop(&mut self) {
        if self.thread.is_some() {
            if let Err(e) = self.unmounter.unmount() {
                tracing::error!(error = %e, "unmount on drop failed");
            }
            if let Err(e) = self.wait() {
                tracing::warn!(error = %e, "FUSE session ended with an error");
            }
            if let Err(e) = self.fs.sync_all() {
                tracing::error!(error = %e, "sync after unmount failed");
            }
        }
    }
}

/// Mounts `fs` at `mountpoint` and serves it on background threads.
pub fn mount(fs: Arc<Fs>, mountpoint: &Path, opts: &MountOptions) -> io::Result<MountHandle> {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(opts.fsname.clone()),
        MountOption::Subtype("atrest".into()),
        MountOption::RW,
        MountOption::Dev,
        MountOption::Suid,
        MountOption::Exec,
    ];
    if opts.allow_other {
        config.acl = SessionACL::All;
    }
    if opts.allow_other || opts.default_permissions {
        config.mount_options.push(MountOption::DefaultPermissions);
    }
    config.n_threads = Some(opts.threads.max(1));
    config.clone_fd = opts.threads > 1;
    let started = Arc::new(AtomicBool::new(false));
    let adapter = Adapter {
        fs: fs.clone(),
        ttl: opts.attr_ttl,
        writeback_cache: opts.writeback_cache,
        open_flags: if opts.page_cache || opts.writeback_cache {
            FopenFlags::empty()
        } else {
            FopenFlags::FOPEN_DIRECT_IO
        },
        started: started.clone(),
    };
    // Found in the mount table by its absolute path once mounted.
    let table_path = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.into());
    let mut session = Session::new(adapter, mountpoint, &config)?;
    let unmounter = Unmounter(Arc::new(Mutex::new(UnmountState {
        session: session.unmount_callable(),
        mountpoint: mountpoint.to_path_buf(),
        tried: false,
    })));
    let thread = std::thread::Builder::new()
        .name("atrest-fuse".into())
        .spawn(move || session.run())?;
    if opts.read_ahead_kb > 0 {
        set_read_ahead(&table_path, opts.read_ahead_kb, &started);
    }
    tracing::info!(mountpoint = %mountpoint.display(), threads = opts.threads, "mounted");
    Ok(MountHandle {
        fs,
        unmounter,
        thread: Some(thread),
    })
}

/// Whether `path` is a FUSE mount point of ours, by the mount table.
fn is_mounted(path: &Path) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    table
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(&*want) && l.contains(" fuse"))
}

/// Sets the read-ahead of the FUSE mount at `mountpoint` once the session answered the
/// kernel's INIT (whose reply would cap it again); bounded to about two seconds. A failure
/// costs speed only and is logged.
fn set_read_ahead(mountpoint: &Path, kb: u32, started: &AtomicBool) {
    let bdi = match mount_device(mountpoint) {
        Some(dev) => PathBuf::from(format!("/sys/class/bdi/{dev}/read_ahead_kb")),
        None => {
            tracing::warn!(mountpoint = %mountpoint.display(),
                "read-ahead left as it is: the mount is not in /proc/self/mountinfo");
            return;
        }
    };
    let want = kb.to_string();
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(50));
        if !started.load(Ordering::Acquire) {
            continue;
        }
        let now = std::fs::read_to_string(&bdi).unwrap_or_default();
        if now.trim() == want {
            return;
        }
        if let Err(e) = std::fs::write(&bdi, &want) {
            tracing::warn!(path = %bdi.display(), error = %e, "read-ahead left as it is");
            return;
        }
    }
    tracing::warn!(path = %bdi.display(), "read-ahead not set: the session did not start in time");
}

/// The device (`major:minor`) of the mount at `path`, by the mount table (a `stat` of the
/// mount point would wait for the session itself).
fn mount_device(path: &Path) -> Option<String> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    // The table writes space, tab, newline and backslash as octal escapes.
    let mut want = String::new();
    for c in path.to_string_lossy().chars() {
        match c {
            ' ' | '\t' | '\n' | '\\' => want.push_str(&format!("\\{:03o}", c as u32)),
            c => want.push(c),
        }
    }
    table
        .lines()
        .rfind(|l| l.split(' ').nth(4) == Some(&*want))
        .and_then(|l| l.split(' ').nth(2))
        .map(str::to_string)
}

struct Adapter {
    fs: Arc<Fs>,
    ttl: Duration,
    writeback_cache: bool,
    /// Flags of every open file: `FOPEN_DIRECT_IO` unless the page cache holds file data.
    open_flags: FopenFlags,
    /// Set when the kernel's INIT has been answered.
    started: Arc<AtomicBool>,
}

fn errno(e: FsError) -> Errno {
    if let FsError::Io { .. } | FsError::Corrupt(_) | FsError::Store(_) = &e {
        tracing::error!(error = %e, "returning EIO");
    }
    Errno::from_i32(e.errno())
}

fn file_type(k: FileKind) -> FileType {
    match k {
        FileKind::File => FileType::RegularFile,
        FileKind::Dir => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
        FileKind::CharDev => FileType::CharDevice,
        FileKind::BlockDev => FileType::BlockDevice,
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: a.atime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: a.ctime,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: crate::BLOCK_SIZE as u32,
        flags: 0,
    }
}

fn time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

impl Adapter {
    fn entry(&self, reply: ReplyEntry, r: Result<Attr, FsError>) {
        match r {
            Ok(a) => reply.entry(&self.ttl, &file_attr(&a), Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }
}

fn empty(reply: ReplyEmpty, r: Result<(), FsError>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(e)),
    }
}

impl Filesystem for Adapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let _ = config.set_max_write(MAX_WRITE);
        // The kernel offers its current window (128 KiB) and takes no larger one here; the
        // mount raises it afterwards ([`MountOptions::read_ahead_kb`]).
        let _ = config
            .set_max_readahead(MAX_WRITE)
            .or_else(|max| config.set_max_readahead(max));
        let _ = config.set_max_background(64);
        // HANDLE_KILLPRIV_V2: this filesystem drops set-user-ID, set-group-ID and file
        // capabilities itself (on write, truncate and chown), so the kernel stops asking for
        // `security.capability` before every write. WRITEBACK_CACHE: buffered writes gather
        // in the page cache and reach the daemon in large runs at writeback, `fsync` or
        // `close`, as on a local filesystem (README, "Speed and safety"). DIRECT_IO_ALLOW_MMAP:
        // files opened without the page cache can still be mapped shared.
        let direct = self.open_flags.contains(FopenFlags::FOPEN_DIRECT_IO);
        for flag in [
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_ASYNC_DIO,
            InitFlags::FUSE_HANDLE_KILLPRIV_V2,
            InitFlags::FUSE_WRITEBACK_CACHE,
            InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP,
        ] {
            if (flag == InitFlags::FUSE_WRITEBACK_CACHE && !self.writeback_cache)
                || (flag == InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP && !direct)
            {
                continue;
            }
            if config.add_capabilities(flag).is_err() {
                tracing::info!(?flag, "the kernel does not offer this FUSE capability");
            }
        }
        self.started.store(true, Ordering::Release);
        Ok(())
    }

    fn destroy(&mut self) {
        if let Err(e) = self.fs.sync_all() {
            tracing::error!(error = %e, "sync at unmount failed");
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.entry(reply, self.fs.lookup(parent.0, name.as_bytes()));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(ino.0) {
            Ok(a) => reply.attr(&self.ttl, &file_attr(&a)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let s = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(time),
            mtime: mtime.map(time),
            ctime,
            // With HANDLE_KILLPRIV_V2 the kernel leaves this to us: always on a change of
            // owner, and on a truncate by a caller without CAP_FSETID (taken to be non-root).
            kill_suidgid: uid.is_some() || gid.is_some() || (size.is_some() && req.uid() != 0),
        };
        match self.fs.setattr(ino.0, &s) {
            Ok(a) => reply.attr(&self.ttl, &file_attr(&a)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.fs.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let mode = mode & !(umask & 0o777);
        let r = self
            .fs
            .mknod(parent.0, name.as_bytes(), mode, rdev, req.uid(), req.gid());
        self.entry(reply, r);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mode = mode & !umask & 0o7777;
        self.entry(
            reply,
            self.fs
                .mkdir(parent.0, name.as_bytes(), mode, req.uid(), req.gid()),
        );
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, self.fs.unlink(parent.0, name.as_bytes()));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, self.fs.rmdir(parent.0, name.as_bytes()));
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let target = target.as_os_str().as_bytes();
        let r = self
            .fs
            .symlink(parent.0, link_name.as_bytes(), target, req.uid(), req.gid());
        self.entry(reply, r);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mode = if flags.contains(RenameFlags::RENAME_WHITEOUT)
            || flags.contains(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_NOREPLACE)
        {
            return reply.error(Errno::EINVAL);
        } else if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            RenameMode::Exchange
        } else if flags.contains(RenameFlags::RENAME_NOREPLACE) {
            RenameMode::NoReplace
        } else {
            RenameMode::Replace
        };
        let r = self.fs.rename(
            parent.0,
            name.as_bytes(),
            newparent.0,
            newname.as_bytes(),
            mode,
        );
        empty(reply, r);
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.entry(reply, self.fs.link(ino.0, newparent.0, newname.as_bytes()));
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.open_handle(ino.0) {
            Ok(_) => reply.opened(FileHandle(0), self.open_flags),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        thread_local! {
            /// Each session thread's read buffer, kept from one read to the next.
            static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        READ_BUF.with_borrow_mut(|buf| match self.fs.read_into(ino.0, offset, size, buf) {
            Ok(d) => reply.data(d),
            Err(e) => reply.error(errno(e)),
        });
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let kill = write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID);
        match self.fs.write_killing(ino.0, offset, data, kill) {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing to do at close: data reached the volume at write (or, with the writeback
        // cache, the kernel wrote it back and checked for errors before asking). ENOSYS makes
        // the kernel stop sending FLUSH at all, which saves a round trip per close.
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.fs.release_handle(ino.0));
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.fs.fsync(ino.0, datasync));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.getattr(ino.0) {
            Ok(a) if a.kind == FileKind::Dir => reply.opened(FileHandle(0), FopenFlags::empty()),
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let r = self.fs.readdir(ino.0, offset, |e| {
            reply.add(
                INodeNo(e.ino),
                e.next_offset,
                file_type(e.kind),
                OsStr::from_bytes(&e.name),
            )
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.fs.fsync(ino.0, datasync));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.fs.statfs() {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.bsize,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let create = flags & libc::XATTR_CREATE != 0;
        let replace = flags & libc::XATTR_REPLACE != 0;
        empty(
            reply,
            self.fs
                .setxattr(ino.0, name.as_bytes(), value, create, replace),
        );
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        xattr_reply(reply, size, self.fs.getxattr(ino.0, name.as_bytes()));
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        xattr_reply(reply, size, self.fs.listxattr(ino.0));
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, self.fs.removexattr(ino.0, name.as_bytes()));
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        empty(reply, self.fs.getattr(ino.0).map(|_| ()));
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mode = (mode & !(umask & 0o777) & 0o7777) | libc::S_IFREG;
        let r = self
            .fs
            .mknod(parent.0, name.as_bytes(), mode, 0, req.uid(), req.gid())
            .and_then(|a| self.fs.open_handle(a.ino));
        match r {
            Ok(a) => reply.created(
                &self.ttl,
                &file_attr(&a),
                Generation(0),
                FileHandle(0),
                self.open_flags,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if mode != 0 {
            return reply.error(Errno::from_i32(libc::EOPNOTSUPP));
        }
        empty(reply, self.fs.fallocate(ino.0, offset, length));
    }
}

fn xattr_reply(reply: ReplyXattr, size: u32, r: Result<Vec<u8>, FsError>) {
    match r {
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if v.len() > size as usize => reply.error(Errno::from_i32(libc::ERANGE)),
        Ok(v) => reply.data(&v),
        Err(e) => reply.error(errno(e)),
    }
}
