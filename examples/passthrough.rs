//! A plain passthrough FUSE filesystem for the benchmarks in `bench/`: every request is
//! served from a source directory, with no encryption and no block layer. It uses the same
//! FUSE library (`fuser`) as atrest, so the difference between the two in `bench/run.sh` is
//! atrest's own work; the difference between this and the raw directory is the cost of FUSE.
//!
//! Usage: `passthrough SOURCE_DIR MOUNTPOINT [THREADS]` (foreground; `fusermount3 -u
//! MOUNTPOINT` ends it). Enough operations for fio and a shell: lookup, getattr, setattr,
//! create, open, read, write, flush, fsync, release, unlink, mkdir, rmdir, readdir, statfs.
//! Not a general-purpose filesystem: no links, renames, xattrs or locks.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use parking_lot::RwLock;

const TTL: Duration = Duration::from_secs(1);

struct Passthrough {
    source: PathBuf,
    /// Inode number to path relative to the source (the root is the empty path).
    paths: RwLock<HashMap<u64, PathBuf>>,
    /// Relative path to inode number.
    inodes: RwLock<HashMap<PathBuf, u64>>,
    next_inode: AtomicU64,
    files: RwLock<HashMap<u64, File>>,
    next_handle: AtomicU64,
}

fn errno(e: io::Error) -> Errno {
    Errno::from(e)
}

fn time(secs: i64, nsecs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsecs as u32)
    } else {
        UNIX_EPOCH
    }
}

impl Passthrough {
    fn new(source: PathBuf) -> Self {
        let fs = Passthrough {
            source,
            paths: RwLock::new(HashMap::new()),
            inodes: RwLock::new(HashMap::new()),
            next_inode: AtomicU64::new(2),
            files: RwLock::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
        };
        fs.paths.write().insert(1, PathBuf::new());
        fs.inodes.write().insert(PathBuf::new(), 1);
        fs
    }

    fn relative(&self, ino: INodeNo) -> Result<PathBuf, Errno> {
        self.paths
            .read()
            .get(&u64::from(ino))
            .cloned()
            .ok_or(Errno::ENOENT)
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<PathBuf, Errno> {
        Ok(self.relative(parent)?.join(name))
    }

    fn inode_of(&self, rel: &Path) -> u64 {
        if let Some(ino) = self.inodes.read().get(rel) {
            return *ino;
        }
        let mut inodes = self.inodes.write();
        *inodes.entry(rel.to_path_buf()).or_insert_with(|| {
            let ino = self.next_inode.fetch_add(1, Ordering::Relaxed);
            self.paths.write().insert(ino, rel.to_path_buf());
            ino
        })
    }

    fn forget_path(&self, rel: &Path) {
        if let Some(ino) = self.inodes.write().remove(rel) {
            self.paths.write().remove(&ino);
        }
    }

    fn attr(&self, ino: u64, meta: &Metadata) -> FileAttr {
        let kind = if meta.is_dir() {
            FileType::Directory
        } else if meta.file_type().is_symlink() {
            FileType::Symlink
        } else {
            FileType::RegularFile
        };
        FileAttr {
            ino: INodeNo(ino),
            size: meta.size(),
            blocks: meta.blocks(),
            atime: time(meta.atime(), meta.atime_nsec()),
            mtime: time(meta.mtime(), meta.mtime_nsec()),
            ctime: time(meta.ctime(), meta.ctime_nsec()),
            crtime: time(meta.ctime(), meta.ctime_nsec()),
            kind,
            perm: (meta.mode() & 0o7777) as u16,
            nlink: meta.nlink() as u32,
            uid: meta.uid(),
            gid: meta.gid(),
            rdev: meta.rdev() as u32,
            flags: 0,
            blksize: meta.blksize() as u32,
        }
    }

    fn stat(&self, rel: &Path) -> Result<FileAttr, Errno> {
        let meta = std::fs::symlink_metadata(self.source.join(rel)).map_err(errno)?;
        Ok(self.attr(self.inode_of(rel), &meta))
    }

    fn add_handle(&self, file: File) -> FileHandle {
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        self.files.write().insert(fh, file);
        FileHandle(fh)
    }

    /// Opens the backing file. O_DIRECT is left to the kernel's FUSE client (which already
    /// bypasses its page cache for such files); the backing open never uses it, since FUSE's
    /// buffers are not aligned for it.
    fn open_backing(&self, rel: &Path, flags: i32, create: Option<u32>) -> io::Result<File> {
        let mut options = OpenOptions::new();
        let access = flags & libc::O_ACCMODE;
        options.read(access == libc::O_RDONLY || access == libc::O_RDWR);
        options.write(access == libc::O_WRONLY || access == libc::O_RDWR);
        options.custom_flags(flags & !(libc::O_ACCMODE | libc::O_DIRECT | libc::O_CREAT));
        if let Some(mode) = create {
            options.create(true).mode(mode);
        }
        options.open(self.source.join(rel))
    }
}

impl Filesystem for Passthrough {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.child(parent, name).and_then(|rel| self.stat(&rel)) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.relative(ino).and_then(|rel| self.stat(&rel)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let result = self.relative(ino).and_then(|rel| {
            let path = self.source.join(&rel);
            if let Some(size) = size {
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_len(size))
                    .map_err(errno)?;
            }
            if let Some(mode) = mode {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                    .map_err(errno)?;
            }
            self.stat(&rel)
        });
        match result {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let result = self.child(parent, name).and_then(|rel| {
            std::fs::DirBuilder::new()
                .mode(mode)
                .create(self.source.join(&rel))
                .map_err(errno)?;
            self.stat(&rel)
        });
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let result = self.child(parent, name).and_then(|rel| {
            std::fs::remove_file(self.source.join(&rel)).map_err(errno)?;
            self.forget_path(&rel);
            Ok(())
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let result = self.child(parent, name).and_then(|rel| {
            std::fs::remove_dir(self.source.join(&rel)).map_err(errno)?;
            self.forget_path(&rel);
            Ok(())
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let result = self
            .relative(ino)
            .and_then(|rel| self.open_backing(&rel, flags.0, None).map_err(errno));
        match result {
            Ok(file) => reply.opened(self.add_handle(file), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let result = self.child(parent, name).and_then(|rel| {
            let file = self.open_backing(&rel, flags, Some(mode)).map_err(errno)?;
            Ok((self.stat(&rel)?, file))
        });
        match result {
            Ok((attr, file)) => {
                let fh = self.add_handle(file);
                reply.created(&TTL, &attr, Generation(0), fh, FopenFlags::empty());
            }
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let files = self.files.read();
        let Some(file) = files.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        let mut buf = vec![0u8; size as usize];
        let mut done = 0;
        while done < buf.len() {
            match file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return reply.error(errno(e)),
            }
        }
        reply.data(&buf[..done]);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let files = self.files.read();
        let Some(file) = files.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        match file.write_all_at(data, offset) {
            Ok(()) => reply.written(data.len() as u32),
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
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let files = self.files.read();
        let Some(file) = files.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        let synced = if datasync {
            file.sync_data()
        } else {
            file.sync_all()
        };
        match synced {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.files.write().remove(&fh.0);
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let rel = match self.relative(ino) {
            Ok(rel) => rel,
            Err(e) => return reply.error(e),
        };
        let entries = match std::fs::read_dir(self.source.join(&rel)) {
            Ok(entries) => entries,
            Err(e) => return reply.error(errno(e)),
        };
        let mut names: Vec<(String, FileType)> = vec![
            (".".into(), FileType::Directory),
            ("..".into(), FileType::Directory),
        ];
        for entry in entries.flatten() {
            let kind = match entry.file_type() {
                Ok(t) if t.is_dir() => FileType::Directory,
                Ok(t) if t.is_symlink() => FileType::Symlink,
                _ => FileType::RegularFile,
            };
            names.push((entry.file_name().to_string_lossy().into_owned(), kind));
        }
        for (i, (name, kind)) in names.into_iter().enumerate().skip(offset as usize) {
            let child_ino = match name.as_str() {
                "." | ".." => u64::from(ino),
                _ => self.inode_of(&rel.join(&name)),
            };
            if reply.add(INodeNo(child_ino), i as u64 + 1, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match nix::sys::statvfs::statvfs(&self.source) {
            Ok(s) => reply.statfs(
                s.blocks(),
                s.blocks_free(),
                s.blocks_available(),
                s.files(),
                s.files_free(),
                s.block_size() as u32,
                s.name_max() as u32,
                s.fragment_size() as u32,
            ),
            Err(e) => reply.error(Errno::from_i32(e as i32)),
        }
    }
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 || args.len() > 4 {
        eprintln!("usage: passthrough SOURCE_DIR MOUNTPOINT [THREADS]");
        std::process::exit(2);
    }
    let source = std::fs::canonicalize(&args[1])?;
    let threads = match args.get(3) {
        Some(t) => t
            .parse()
            .map_err(|_| io::Error::other(format!("bad thread count {t}")))?,
        None => 2,
    };
    let mut config = Config::default();
    config.mount_options = vec![MountOption::FSName("passthrough".into())];
    config.n_threads = Some(threads);
    fuser::mount(Passthrough::new(source), &args[2], &config)
}
