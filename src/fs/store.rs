//! The metadata store: redb over the metadata region of the device, its tables and the
//! encoding of inode records.
//!
//! [`MetaBackend`] maps redb's byte-addressed file onto whole logical blocks of the metadata
//! region, read-modify-writing partial blocks, so every metadata byte goes through the
//! (encrypting) block device. redb's `sync_data` is the device's `sync`.

use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use redb::{BackendError, StorageBackend, TableDefinition};

use super::layout::Superblock;
use crate::BLOCK_SIZE;
use crate::pool::BlockDevice;

/// Inode number -> encoded [`Inode`].
pub(crate) const INODES: TableDefinition<u64, &[u8]> = TableDefinition::new("inodes");
/// (directory, name) -> (inode, cookie).
pub(crate) const DIRENTS: TableDefinition<(u64, &[u8]), (u64, u64)> =
    TableDefinition::new("dirents");
/// (directory, cookie) -> inode (8 bytes), kind (1 byte), name: the readdir order.
pub(crate) const DIRSEQ: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("dirseq");
/// (inode, file block) -> (logical block, length in blocks).
pub(crate) const EXTENTS: TableDefinition<(u64, u64), (u64, u64)> = TableDefinition::new("extents");
/// (inode, name) -> value.
pub(crate) const XATTRS: TableDefinition<(u64, &[u8]), &[u8]> = TableDefinition::new("xattrs");
/// Inodes with no name left that were open when their last link went; reaped on release or at
/// the next open of the filesystem.
pub(crate) const ORPHANS: TableDefinition<u64, ()> = TableDefinition::new("orphans");
/// Named counters (`next_ino`).
pub(crate) const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");

/// Counter key: the next inode number to hand out. Inode numbers are never reused.
pub(crate) const NEXT_INO: &str = "next_ino";

/// redb storage over the metadata region.
pub(crate) struct MetaBackend {
    dev: Arc<dyn BlockDevice>,
    start: u64,
    capacity: u64,
    state: Mutex<BackendState>,
}

struct BackendState {
    len: u64,
    sb: Superblock,
}

impl std::fmt::Debug for MetaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaBackend")
            .field("start", &self.start)
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl MetaBackend {
    /// A backend over the metadata region named by `sb`.
    pub(crate) fn new(dev: Arc<dyn BlockDevice>, sb: Superblock) -> Self {
        MetaBackend {
            dev,
            start: sb.meta_start,
            capacity: sb.meta_blocks * BLOCK_SIZE as u64,
            state: Mutex::new(BackendState {
                len: sb.meta_len,
                sb,
            }),
        }
    }

    fn check(&self, offset: u64, len: usize, cur: u64) -> io::Result<()> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= cur => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("metadata access {offset}+{len} beyond store length {cur}"),
            )),
        }
    }

    /// Reads any byte range, whole blocks straight into `out` where aligned.
    fn read_bytes(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let bs = BLOCK_SIZE as u64;
        if offset.is_multiple_of(bs) && out.len().is_multiple_of(BLOCK_SIZE) && !out.is_empty() {
            return self.dev.read_blocks(self.start + offset / bs, out);
        }
        let first = offset / bs;
        let last = (offset + out.len() as u64).div_ceil(bs);
        let mut buf = vec![0u8; ((last - first) * bs) as usize];
        self.dev.read_blocks(self.start + first, &mut buf)?;
        let skip = (offset - first * bs) as usize;
        out.copy_from_slice(&buf[skip..skip + out.len()]);
        Ok(())
    }

    /// Writes any byte range; partial blocks are read, patched and written back. The caller
    /// holds the state lock, so two partial writes to one block cannot interleave.
    fn write_bytes(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let bs = BLOCK_SIZE as u64;
        if data.is_empty() {
            return Ok(());
        }
        if offset.is_multiple_of(bs) && data.len().is_multiple_of(BLOCK_SIZE) {
            return self.dev.write_blocks(self.start + offset / bs, data);
        }
        let first = offset / bs;
        let last = (offset + data.len() as u64).div_ceil(bs);
        let mut buf = vec![0u8; ((last - first) * bs) as usize];
        self.dev.read_blocks(self.start + first, &mut buf)?;
        let skip = (offset - first * bs) as usize;
        buf[skip..skip + data.len()].copy_from_slice(data);
        self.dev.write_blocks(self.start + first, &buf)
    }

    fn zero_range(&self, from: u64, to: u64) -> io::Result<()> {
        const CHUNK: u64 = 256 * BLOCK_SIZE as u64;
        let zeros = vec![0u8; CHUNK as usize];
        let mut at = from;
        while at < to {
            let n = (to - at).min(CHUNK - at % BLOCK_SIZE as u64);
            self.write_bytes(at, &zeros[..n as usize])?;
            at += n;
        }
        Ok(())
    }
}

impl StorageBackend for MetaBackend {
    fn len(&self) -> Result<u64, BackendError> {
        Ok(self.state.lock().len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), BackendError> {
        let cur = self.state.lock().len;
        self.check(offset, out.len(), cur)?;
        Ok(self.read_bytes(offset, out)?)
    }

    fn set_len(&self, len: u64) -> Result<(), BackendError> {
        let mut st = self.state.lock();
        if len > self.capacity {
            return Err(BackendError::Io(io::Error::from_raw_os_error(libc::ENOSPC)));
        }
        if len > st.len {
            self.zero_range(st.len, len)?;
        }
        // The superblock keeps the highest length ever set: a shrink that a crash undoes
        // must not cut off pages the last durable commit still uses.
        if len > st.sb.meta_len {
            st.sb.meta_len = len;
            self.dev.write_blocks(0, &st.sb.encode())?;
        }
        st.len = len;
        Ok(())
    }

    fn sync_data(&self) -> Result<(), BackendError> {
        Ok(self.dev.sync()?)
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), BackendError> {
        let bs = BLOCK_SIZE as u64;
        let aligned = offset.is_multiple_of(bs) && data.len().is_multiple_of(BLOCK_SIZE);
        let st = self.state.lock();
        self.check(offset, data.len(), st.len)?;
        if aligned {
            // Whole blocks need no read-modify-write and so no lock.
            drop(st);
            return Ok(self.write_bytes(offset, data)?);
        }
        let res = self.write_bytes(offset, data);
        drop(st);
        Ok(res?)
    }
}

impl MetaBackend {
    /// Current store length in bytes and the region's capacity.
    pub(crate) fn usage(&self) -> (u64, u64) {
        (self.state.lock().len, self.capacity)
    }
}

/// Kinds of inode, as stored (one byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Named pipe.
    Fifo,
    /// Unix socket.
    Socket,
    /// Character device.
    CharDev,
    /// Block device.
    BlockDev,
}

impl FileKind {
    pub(crate) fn to_byte(self) -> u8 {
        match self {
            FileKind::File => 1,
            FileKind::Dir => 2,
            FileKind::Symlink => 3,
            FileKind::Fifo => 4,
            FileKind::Socket => 5,
            FileKind::CharDev => 6,
            FileKind::BlockDev => 7,
        }
    }

    pub(crate) fn from_byte(b: u8) -> Option<FileKind> {
        Some(match b {
            1 => FileKind::File,
            2 => FileKind::Dir,
            3 => FileKind::Symlink,
            4 => FileKind::Fifo,
            5 => FileKind::Socket,
            6 => FileKind::CharDev,
            7 => FileKind::BlockDev,
            _ => return None,
        })
    }

    /// The kind named by the `S_IFMT` bits of a mode.
    pub fn from_mode(mode: u32) -> Option<FileKind> {
        Some(match mode & libc::S_IFMT {
            libc::S_IFREG => FileKind::File,
            libc::S_IFDIR => FileKind::Dir,
            libc::S_IFLNK => FileKind::Symlink,
            libc::S_IFIFO => FileKind::Fifo,
            libc::S_IFSOCK => FileKind::Socket,
            libc::S_IFCHR => FileKind::CharDev,
            libc::S_IFBLK => FileKind::BlockDev,
            _ => return None,
        })
    }
}

/// One inode as stored in the `inodes` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Inode {
    pub kind: FileKind,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub size: u64,
    /// Data blocks referenced by the inode's extents.
    pub blocks: u64,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub rdev: u32,
    /// For directories: the parent directory (the root is its own parent).
    pub parent: u64,
    /// For directories: the next readdir cookie to hand out.
    pub next_cookie: u64,
    /// For symlinks: the target.
    pub target: Vec<u8>,
}

const INODE_FIXED: usize = 1 + 1 + 2 + 4 * 3 + 8 * 2 + 12 * 3 + 4 + 8 * 2;
const INODE_VERSION: u8 = 1;

fn put_time(out: &mut Vec<u8>, t: SystemTime) {
    let (secs, nanos) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            if d.subsec_nanos() == 0 {
                (-(d.as_secs() as i64), 0)
            } else {
                (-(d.as_secs() as i64) - 1, 1_000_000_000 - d.subsec_nanos())
            }
        }
    };
    out.extend_from_slice(&secs.to_le_bytes());
    out.extend_from_slice(&nanos.to_le_bytes());
}

fn get_time(secs: i64, nanos: u32) -> SystemTime {
    let nanos = nanos.min(999_999_999);
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nanos)
    } else {
        UNIX_EPOCH - Duration::new(secs.unsigned_abs(), 0) + Duration::new(0, nanos)
    }
}

impl Inode {
    /// The permission bits after dropping privileges as a write by an unprivileged user does:
    /// set-user-ID goes, and set-group-ID too on a group-executable file (without group
    /// execute it marks mandatory locking and stays).
    pub(crate) fn killed_perm(&self) -> u16 {
        let mut p = self.perm & !(libc::S_ISUID as u16);
        if p & (libc::S_IXGRP as u16) != 0 {
            p &= !(libc::S_ISGID as u16);
        }
        p
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(INODE_FIXED + self.target.len());
        out.push(INODE_VERSION);
        out.push(self.kind.to_byte());
        out.extend_from_slice(&self.perm.to_le_bytes());
        out.extend_from_slice(&self.uid.to_le_bytes());
        out.extend_from_slice(&self.gid.to_le_bytes());
        out.extend_from_slice(&self.nlink.to_le_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.blocks.to_le_bytes());
        put_time(&mut out, self.atime);
        put_time(&mut out, self.mtime);
        put_time(&mut out, self.ctime);
        out.extend_from_slice(&self.rdev.to_le_bytes());
        out.extend_from_slice(&self.parent.to_le_bytes());
        out.extend_from_slice(&self.next_cookie.to_le_bytes());
        out.extend_from_slice(&self.target);
        out
    }

    /// Decodes an inode record; `None` if it is malformed.
    pub(crate) fn decode(b: &[u8]) -> Option<Inode> {
        if b.len() < INODE_FIXED || b[0] != INODE_VERSION {
            return None;
        }
        let mut at = 2;
        let mut take = |n: usize| {
            let s = &b[at..at + n];
            at += n;
            s
        };
        let u16_ = |s: &[u8]| u16::from_le_bytes([s[0], s[1]]);
        let u32_ = |s: &[u8]| u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
        let u64_ = |s: &[u8]| {
            let mut w = [0u8; 8];
            w.copy_from_slice(s);
            u64::from_le_bytes(w)
        };
        let kind = FileKind::from_byte(b[1])?;
        let perm = u16_(take(2));
        let uid = u32_(take(4));
        let gid = u32_(take(4));
        let nlink = u32_(take(4));
        let size = u64_(take(8));
        let blocks = u64_(take(8));
        let mut time = || {
            let s = u64_(take(8)) as i64;
            let n = u32_(take(4));
            get_time(s, n)
        };
        let (atime, mtime, ctime) = (time(), time(), time());
        let rdev = u32_(take(4));
        let parent = u64_(take(8));
        let next_cookie = u64_(take(8));
        let target = b[at..].to_vec();
        Some(Inode {
            kind,
            perm,
            uid,
            gid,
            nlink,
            size,
            blocks,
            atime,
            mtime,
            ctime,
            rdev,
            parent,
            next_cookie,
            target,
        })
    }
}

/// Encodes a `dirseq` value.
pub(crate) fn encode_seq(ino: u64, kind: FileKind, name: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(9 + name.len());
    v.extend_from_slice(&ino.to_le_bytes());
    v.push(kind.to_byte());
    v.extend_from_slice(name);
    v
}

/// Decodes a `dirseq` value.
pub(crate) fn decode_seq(v: &[u8]) -> Option<(u64, FileKind, &[u8])> {
    if v.len() < 9 {
        return None;
    }
    let mut w = [0u8; 8];
    w.copy_from_slice(&v[..8]);
    Some((u64::from_le_bytes(w), FileKind::from_byte(v[8])?, &v[9..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inode_round_trip() {
        let ino = Inode {
            kind: FileKind::Symlink,
            perm: 0o777,
            uid: 5,
            gid: 6,
            nlink: 1,
            size: 3,
            blocks: 0,
            atime: UNIX_EPOCH - Duration::new(5, 3),
            mtime: UNIX_EPOCH + Duration::new(77, 999),
            ctime: SystemTime::now(),
            rdev: 9,
            parent: 0,
            next_cookie: 0,
            target: b"abc".to_vec(),
        };
        assert_eq!(Inode::decode(&ino.encode()), Some(ino));
        assert_eq!(Inode::decode(&[1, 2, 3]), None);
    }
}
