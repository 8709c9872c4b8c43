//! The namespace: lookup, create, link, unlink, rename, directories, symlinks, attributes and
//! extended attributes. Each operation is one metadata transaction.

use std::sync::atomic::Ordering;

use redb::ReadableTable;

use super::store::{FileKind, Inode, decode_seq, encode_seq};
use super::{
    Attr, CAPS_XATTR, COUNTERS, DIRENTS, DIRSEQ, DirEntry, Fs, FsError, INODES, MAX_FILE_SIZE,
    NAME_MAX, NEXT_INO, ORPHANS, ROOT_INO, RenameMode, SECURITY_PREFIX, SYMLINK_MAX, SetAttr, Tx,
    XATTR_VALUE_MAX, XATTRS, get_inode, now,
};

/// Deepest directory tree walked when checking a rename for loops.
const MAX_DEPTH: usize = 1 << 16;

fn check_name(name: &[u8]) -> Result<(), FsError> {
    if name.len() > NAME_MAX {
        return Err(FsError::NameTooLong);
    }
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(FsError::Invalid(format!(
            "bad entry name {:?}",
            String::from_utf8_lossy(name)
        )));
    }
    Ok(())
}

pub(crate) fn load(t: &mut Tx, ino: u64) -> Result<Inode, FsError> {
    get_inode(&t.tx.open_table(INODES)?, ino)
}

pub(crate) fn store(t: &mut Tx, ino: u64, i: &Inode) -> Result<(), FsError> {
    t.tx.open_table(INODES)?
        .insert(ino, i.encode().as_slice())?;
    Ok(())
}

fn load_dir(t: &mut Tx, ino: u64) -> Result<Inode, FsError> {
    let i = load(t, ino)?;
    if i.kind != FileKind::Dir {
        return Err(FsError::NotDir);
    }
    Ok(i)
}

fn find(t: &mut Tx, parent: u64, name: &[u8]) -> Result<Option<(u64, u64)>, FsError> {
    Ok(t.tx
        .open_table(DIRENTS)?
        .get((parent, name))?
        .map(|v| v.value()))
}

/// Adds the entry `name` -> `ino` to `parent` (whose record the caller passes and stores).
fn add_entry(
    t: &mut Tx,
    parent: u64,
    pi: &mut Inode,
    name: &[u8],
    ino: u64,
    kind: FileKind,
) -> Result<(), FsError> {
    let cookie = pi.next_cookie;
    pi.next_cookie += 1;
    t.tx.open_table(DIRENTS)?
        .insert((parent, name), (ino, cookie))?;
    t.tx.open_table(DIRSEQ)?
        .insert((parent, cookie), encode_seq(ino, kind, name).as_slice())?;
    Ok(())
}

fn remove_entry(t: &mut Tx, parent: u64, name: &[u8]) -> Result<(), FsError> {
    let cookie = match t.tx.open_table(DIRENTS)?.remove((parent, name))? {
        Some(v) => v.value().1,
        None => return Err(FsError::NotFound),
    };
    t.tx.open_table(DIRSEQ)?.remove((parent, cookie))?;
    Ok(())
}

fn dir_is_empty(t: &mut Tx, dir: u64) -> Result<bool, FsError> {
    let tab = t.tx.open_table(DIRSEQ)?;
    let mut r = tab.range((dir, 0)..=(dir, u64::MAX))?;
    Ok(r.next().is_none())
}

/// Whether `ino` has any `security.*` xattr in `x`.
fn has_security_xattr(
    x: &redb::Table<(u64, &'static [u8]), &'static [u8]>,
    ino: u64,
) -> Result<bool, FsError> {
    match x.range((ino, SECURITY_PREFIX)..)?.next().transpose()? {
        Some((k, _)) => {
            let (owner, n) = k.value();
            Ok(owner == ino && n.starts_with(SECURITY_PREFIX))
        }
        None => Ok(false),
    }
}

/// Removes an inode and everything it owns; its blocks become pending-free.
pub(crate) fn delete_inode(t: &mut Tx, ino: u64) -> Result<(), FsError> {
    super::file::punch_from(t, ino, 0)?;
    {
        let mut x = t.tx.open_table(XATTRS)?;
        let keys: Vec<Vec<u8>> = x
            .range((ino, &[][..])..)?
            .map_while(|r| r.ok())
            .take_while(|(k, _)| k.value().0 == ino)
            .map(|(k, _)| k.value().1.to_vec())
            .collect();
        for k in keys {
            x.remove((ino, k.as_slice()))?;
        }
    }
    t.tx.open_table(INODES)?.remove(ino)?;
    t.inode_delta -= 1;
    Ok(())
}

/// Whether `ancestor` is `dir` or one of its ancestors.
fn is_ancestor(t: &mut Tx, ancestor: u64, mut dir: u64) -> Result<bool, FsError> {
    for _ in 0..MAX_DEPTH {
        if dir == ancestor {
            return Ok(true);
        }
        if dir == ROOT_INO {
            return Ok(false);
        }
        dir = load(t, dir)?.parent;
    }
    Err(FsError::Corrupt(format!(
        "directory {dir}: parent chain longer than {MAX_DEPTH}"
    )))
}

impl Fs {
    /// Attributes of `ino`.
    pub fn getattr(&self, ino: u64) -> Result<Attr, FsError> {
        let i = self.inner.view(|t| load(t, ino))?;
        Ok(self.inner.overlay(Attr::from_inode(ino, &i)))
    }

    /// The entry `name` of directory `parent`.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Attr, FsError> {
        if name.len() > NAME_MAX {
            return Err(FsError::NameTooLong);
        }
        let (ino, i) = self.inner.view(|t| {
            let inodes = t.tx.open_table(INODES)?;
            let p = get_inode(&inodes, parent)?;
            if p.kind != FileKind::Dir {
                return Err(FsError::NotDir);
            }
            let ino = match t.tx.open_table(DIRENTS)?.get((parent, name))? {
                Some(v) => v.value().0,
                None => return Err(FsError::NotFound),
            };
            let i = get_inode(&inodes, ino).map_err(|e| match e {
                FsError::NotFound => FsError::Corrupt(format!(
                    "entry {:?} of directory {parent} names missing inode {ino}",
                    String::from_utf8_lossy(name)
                )),
                e => e,
            })?;
            Ok((ino, i))
        })?;
        Ok(self.inner.overlay(Attr::from_inode(ino, &i)))
    }

    /// Makes a new inode of any kind under `parent`. `mode` carries the kind bits
    /// (`S_IFREG`, `S_IFDIR`, ...) and the permission bits.
    pub fn mknod(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        rdev: u32,
        uid: u32,
        gid: u32,
    ) -> Result<Attr, FsError> {
        let kind = FileKind::from_mode(mode)
            .ok_or_else(|| FsError::Invalid(format!("mode {mode:#o} names no file kind")))?;
        if kind == FileKind::Symlink {
            return Err(FsError::Invalid("symlinks are made by symlink".into()));
        }
        self.create_inode(
            parent,
            name,
            kind,
            (mode & 0o7777) as u16,
            rdev,
            uid,
            gid,
            Vec::new(),
        )
    }

    /// Makes a directory.
    pub fn mkdir(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<Attr, FsError> {
        self.create_inode(
            parent,
            name,
            FileKind::Dir,
            (mode & 0o7777) as u16,
            0,
            uid,
            gid,
            vec![],
        )
    }

    /// Makes a symlink to `target`.
    pub fn symlink(
        &self,
        parent: u64,
        name: &[u8],
        target: &[u8],
        uid: u32,
        gid: u32,
    ) -> Result<Attr, FsError> {
        if target.is_empty() || target.len() > SYMLINK_MAX {
            return Err(FsError::NameTooLong);
        }
        self.create_inode(
            parent,
            name,
            FileKind::Symlink,
            0o777,
            0,
            uid,
            gid,
            target.to_vec(),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn create_inode(
        &self,
        parent: u64,
        name: &[u8],
        kind: FileKind,
        perm: u16,
        rdev: u32,
        uid: u32,
        gid: u32,
        target: Vec<u8>,
    ) -> Result<Attr, FsError> {
        check_name(name)?;
        self.inner.check_meta_space()?;
        self.inner.write_tx(|t| {
            let mut p = load_dir(t, parent)?;
            if p.nlink == 0 {
                return Err(FsError::NotFound);
            }
            if find(t, parent, name)?.is_some() {
                return Err(FsError::Exists);
            }
            let ino = {
                let mut c = t.tx.open_table(COUNTERS)?;
                let ino = c
                    .get(super::NEXT_INO)?
                    .map(|v| v.value())
                    .unwrap_or(ROOT_INO + 1);
                c.insert(NEXT_INO, ino + 1)?;
                ino
            };
            let tm = now();
            // New entries in a set-group-id directory take its group; subdirectories its bit.
            let sgid = p.perm & 0o2000 != 0;
            let gid = if sgid { p.gid } else { gid };
            let perm = if sgid && kind == FileKind::Dir {
                perm | 0o2000
            } else {
                perm
            };
            let size = target.len() as u64;
            let node = Inode {
                kind,
                perm,
                uid,
                gid,
                nlink: if kind == FileKind::Dir { 2 } else { 1 },
                size,
                blocks: 0,
                atime: tm,
                mtime: tm,
                ctime: tm,
                rdev,
                parent: if kind == FileKind::Dir { parent } else { 0 },
                next_cookie: 0,
                target,
            };
            store(t, ino, &node)?;
            add_entry(t, parent, &mut p, name, ino, kind)?;
            if kind == FileKind::Dir {
                p.nlink += 1;
            }
            p.mtime = tm;
            p.ctime = tm;
            store(t, parent, &p)?;
            t.inode_delta += 1;
            Ok(Attr::from_inode(ino, &node))
        })
    }

    /// Adds the name `newname` in `newparent` for the existing non-directory `ino`.
    pub fn link(&self, ino: u64, newparent: u64, newname: &[u8]) -> Result<Attr, FsError> {
        check_name(newname)?;
        self.inner.check_meta_space()?;
        let a = self.inner.write_tx(|t| {
            let mut i = load(t, ino)?;
            if i.kind == FileKind::Dir {
                return Err(FsError::NotPermitted);
            }
            if i.nlink == 0 {
                return Err(FsError::NotFound);
            }
            if i.nlink == u32::MAX {
                return Err(FsError::Invalid(format!(
                    "inode {ino} has the most links it can"
                )));
            }
            let mut p = load_dir(t, newparent)?;
            if find(t, newparent, newname)?.is_some() {
                return Err(FsError::Exists);
            }
            let tm = now();
            add_entry(t, newparent, &mut p, newname, ino, i.kind)?;
            p.mtime = tm;
            p.ctime = tm;
            store(t, newparent, &p)?;
            i.nlink += 1;
            i.ctime = tm;
            store(t, ino, &i)?;
            Ok(Attr::from_inode(ino, &i))
        })?;
        // The kernel caches what link returns: show a pending overwrite time.
        Ok(self.inner.overlay(a))
    }

    /// Drops one link of `ino`; the inode goes when no link and no open handle is left.
    fn drop_link(&self, t: &mut Tx, ino: u64, i: &mut Inode) -> Result<(), FsError> {
        i.nlink = i.nlink.saturating_sub(1);
        i.ctime = now();
        let gone = i.nlink == 0 || (i.kind == FileKind::Dir && i.nlink <= 1);
        if !gone {
            return store(t, ino, i);
        }
        i.nlink = 0;
        let open = self
            .inner
            .open_counts
            .lock()
            .get(&ino)
            .copied()
            .unwrap_or(0)
            > 0;
        if open {
            store(t, ino, i)?;
            t.tx.open_table(ORPHANS)?.insert(ino, ())?;
            Ok(())
        } else {
            delete_inode(t, ino)
        }
    }

    /// Removes the non-directory entry `name` of `parent`.
    pub fn unlink(&self, parent: u64, name: &[u8]) -> Result<(), FsError> {
        self.inner.write_tx(|t| {
            let mut p = load_dir(t, parent)?;
            let (ino, _) = find(t, parent, name)?.ok_or(FsError::NotFound)?;
            let mut i = load(t, ino)?;
            if i.kind == FileKind::Dir {
                return Err(FsError::IsDir);
            }
            remove_entry(t, parent, name)?;
            let tm = now();
            p.mtime = tm;
            p.ctime = tm;
            store(t, parent, &p)?;
            self.drop_link(t, ino, &mut i)
        })
    }

    /// Removes the empty directory `name` of `parent`.
    pub fn rmdir(&self, parent: u64, name: &[u8]) -> Result<(), FsError> {
        if name == b"." {
            return Err(FsError::Invalid("rmdir of \".\"".into()));
        }
        if name == b".." {
            return Err(FsError::NotEmpty);
        }
        self.inner.write_tx(|t| {
            let mut p = load_dir(t, parent)?;
            let (ino, _) = find(t, parent, name)?.ok_or(FsError::NotFound)?;
            let mut i = load(t, ino)?;
            if i.kind != FileKind::Dir {
                return Err(FsError::NotDir);
            }
            if !dir_is_empty(t, ino)? {
                return Err(FsError::NotEmpty);
            }
            remove_entry(t, parent, name)?;
            let tm = now();
            p.nlink -= 1;
            p.mtime = tm;
            p.ctime = tm;
            store(t, parent, &p)?;
            self.drop_link(t, ino, &mut i)
        })
    }

    /// Renames `name` of `parent` to `newname` of `newparent`.
    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        mode: RenameMode,
    ) -> Result<(), FsError> {
        check_name(newname)?;
        self.inner.write_tx(|t| {
            load_dir(t, parent)?;
            load_dir(t, newparent)?;
            let (src, _) = find(t, parent, name)?.ok_or(FsError::NotFound)?;
            let dst = find(t, newparent, newname)?.map(|d| d.0);
            let si = load(t, src)?;
            let tm = now();
            match (mode, dst) {
                (RenameMode::Exchange, None) => return Err(FsError::NotFound),
                (RenameMode::Exchange, Some(dst)) => {
                    return self.exchange(t, (parent, name, src), (newparent, newname, dst));
                }
                (RenameMode::NoReplace, Some(_)) => return Err(FsError::Exists),
                (_, Some(d)) if d == src => return Ok(()),
                _ => {}
            }
            if si.kind == FileKind::Dir && parent != newparent && is_ancestor(t, src, newparent)? {
                return Err(FsError::Invalid(
                    "cannot move a directory under itself".into(),
                ));
            }
            if let Some(dst) = dst {
                let mut di = load(t, dst)?;
                match (si.kind == FileKind::Dir, di.kind == FileKind::Dir) {
                    (true, false) => return Err(FsError::NotDir),
                    (false, true) => return Err(FsError::IsDir),
                    (true, true) if !dir_is_empty(t, dst)? => return Err(FsError::NotEmpty),
                    _ => {}
                }
                remove_entry(t, newparent, newname)?;
                if di.kind == FileKind::Dir {
                    let mut np = load(t, newparent)?;
                    np.nlink -= 1;
                    store(t, newparent, &np)?;
                }
                self.drop_link(t, dst, &mut di)?;
            }
            remove_entry(t, parent, name)?;
            let mut np = load(t, newparent)?;
            add_entry(t, newparent, &mut np, newname, src, si.kind)?;
            np.mtime = tm;
            np.ctime = tm;
            if si.kind == FileKind::Dir && parent != newparent {
                np.nlink += 1;
            }
            store(t, newparent, &np)?;
            let mut p = load(t, parent)?;
            if si.kind == FileKind::Dir && parent != newparent {
                p.nlink -= 1;
            }
            p.mtime = tm;
            p.ctime = tm;
            store(t, parent, &p)?;
            let mut si = load(t, src)?;
            if si.kind == FileKind::Dir {
                si.parent = newparent;
            }
            si.ctime = tm;
            store(t, src, &si)
        })
    }

    fn exchange(
        &self,
        t: &mut Tx,
        (p1, n1, i1): (u64, &[u8], u64),
        (p2, n2, i2): (u64, &[u8], u64),
    ) -> Result<(), FsError> {
        if i1 == i2 {
            return Ok(());
        }
        let (a, b) = (load(t, i1)?, load(t, i2)?);
        let (a_dir, b_dir) = (a.kind == FileKind::Dir, b.kind == FileKind::Dir);
        if p1 != p2 && ((a_dir && is_ancestor(t, i1, p2)?) || (b_dir && is_ancestor(t, i2, p1)?)) {
            return Err(FsError::Invalid(
                "cannot move a directory under itself".into(),
            ));
        }
        // Point each entry at the other inode, keeping the cookies.
        for (p, n, ino, kind) in [(p1, n1, i2, b.kind), (p2, n2, i1, a.kind)] {
            let cookie = find(t, p, n)?.ok_or(FsError::NotFound)?.1;
            t.tx.open_table(DIRENTS)?.insert((p, n), (ino, cookie))?;
            t.tx.open_table(DIRSEQ)?
                .insert((p, cookie), encode_seq(ino, kind, n).as_slice())?;
        }
        let tm = now();
        if p1 != p2 {
            let delta = a_dir as i64 - b_dir as i64;
            let mut pp1 = load(t, p1)?;
            pp1.nlink = (pp1.nlink as i64 - delta) as u32;
            pp1.mtime = tm;
            pp1.ctime = tm;
            store(t, p1, &pp1)?;
            let mut pp2 = load(t, p2)?;
            pp2.nlink = (pp2.nlink as i64 + delta) as u32;
            pp2.mtime = tm;
            pp2.ctime = tm;
            store(t, p2, &pp2)?;
        } else {
            let mut pp = load(t, p1)?;
            pp.mtime = tm;
            pp.ctime = tm;
            store(t, p1, &pp)?;
        }
        for (ino, newp) in [(i1, p2), (i2, p1)] {
            let mut i = load(t, ino)?;
            if i.kind == FileKind::Dir {
                i.parent = newp;
            }
            i.ctime = tm;
            store(t, ino, &i)?;
        }
        Ok(())
    }

    /// The target of a symlink.
    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>, FsError> {
        let i = self.inner.view(|t| load(t, ino))?;
        if i.kind != FileKind::Symlink {
            return Err(FsError::Invalid(format!("inode {ino} is not a symlink")));
        }
        Ok(i.target)
    }

    /// Entries of directory `ino` from `offset` on (0 starts with "." and ".."), as many as
    /// `add` takes: it returns `true` when it is full.
    pub fn readdir(
        &self,
        ino: u64,
        offset: u64,
        mut add: impl FnMut(DirEntry) -> bool,
    ) -> Result<(), FsError> {
        self.inner.view(|t| {
            let i = load(t, ino)?;
            if i.kind != FileKind::Dir {
                return Err(FsError::NotDir);
            }
            let dot = |name: &[u8], ino, off| DirEntry {
                ino,
                next_offset: off,
                kind: FileKind::Dir,
                name: name.to_vec(),
            };
            if offset < 1 && add(dot(b".", ino, 1)) {
                return Ok(());
            }
            if offset < 2 && add(dot(b"..", i.parent, 2)) {
                return Ok(());
            }
            let from = offset.saturating_sub(2);
            let seq = t.tx.open_table(DIRSEQ)?;
            for row in seq.range((ino, from)..=(ino, u64::MAX))? {
                let (k, v) = row?;
                let cookie = k.value().1;
                let v = v.value();
                let (child, kind, name) = decode_seq(v).ok_or_else(|| {
                    FsError::Corrupt(format!("directory {ino} cookie {cookie}: malformed entry"))
                })?;
                let e = DirEntry {
                    ino: child,
                    next_offset: cookie + 3,
                    kind,
                    name: name.to_vec(),
                };
                if add(e) {
                    break;
                }
            }
            Ok(())
        })
    }

    /// Changes attributes; a size change truncates or extends a regular file.
    pub fn setattr(&self, ino: u64, s: &SetAttr) -> Result<Attr, FsError> {
        let _g = s.size.map(|_| self.inner.data_lock(ino).write());
        if let Some(size) = s.size
            && size > MAX_FILE_SIZE
        {
            return Err(FsError::FileTooBig);
        }
        // A size change is checked, and the tail of the block that becomes the last (or
        // whose tail becomes file content) zeroed, before the transaction: device I/O inside
        // it could fail halfway through an operation.
        if let Some(size) = s.size {
            let i = self.inner.view(|t| load(t, ino))?;
            match i.kind {
                FileKind::File => {}
                FileKind::Dir => return Err(FsError::IsDir),
                _ => return Err(FsError::Invalid(format!("truncate of inode {ino}"))),
            }
            self.zero_tail(ino, size.min(i.size))?;
        }
        let mut taken = None;
        let res = self.inner.write_tx(|t| {
            let mut i = load(t, ino)?;
            let tm = now();
            taken = self.inner.take_dirty_mtime(ino);
            if let Some(dirty) = taken {
                i.mtime = i.mtime.max(dirty);
            }
            if let Some(size) = s.size {
                match i.kind {
                    FileKind::File => {}
                    FileKind::Dir => return Err(FsError::IsDir),
                    _ => return Err(FsError::Invalid(format!("truncate of inode {ino}"))),
                }
                if size < i.size {
                    self.truncate_down(t, ino, &mut i, size)?;
                }
                i.size = size;
                i.mtime = tm;
            }
            if let Some(mode) = s.mode {
                i.perm = (mode & 0o7777) as u16;
            } else if s.kill_suidgid && i.kind != FileKind::Dir {
                i.perm = i.killed_perm();
            }
            // A truncate or a change of owner drops file capabilities, as in Linux.
            if (s.size.is_some() || s.uid.is_some() || s.gid.is_some())
                && i.kind != FileKind::Dir
                && self.inner.may_have_security_xattr(ino)
            {
                t.tx.open_table(XATTRS)?.remove((ino, CAPS_XATTR))?;
            }
            if let Some(uid) = s.uid {
                i.uid = uid;
            }
            if let Some(gid) = s.gid {
                i.gid = gid;
            }
            if let Some(a) = s.atime {
                i.atime = a;
            }
            if let Some(m) = s.mtime {
                i.mtime = m;
            }
            i.ctime = s.ctime.unwrap_or(tm);
            store(t, ino, &i)?;
            Ok(Attr::from_inode(ino, &i))
        });
        // Not committed: the pending overwrite time goes back to wait for the next sync.
        if res.is_err()
            && let Some(dirty) = taken
        {
            self.inner.restore_dirty_mtime(ino, dirty);
        }
        res
    }

    /// Records an open handle of `ino`.
    pub fn open_handle(&self, ino: u64) -> Result<Attr, FsError> {
        // Counted inside the transaction lock, so that an unlink cannot come between the
        // inode's load and the count (the lock order is transaction, then open counts).
        let i = self.inner.view(|t| {
            let i = load(t, ino)?;
            *self.inner.open_counts.lock().entry(ino).or_insert(0) += 1;
            Ok(i)
        })?;
        Ok(self.inner.overlay(Attr::from_inode(ino, &i)))
    }

    /// Drops an open handle of `ino`; an unlinked inode goes with its last handle.
    pub fn release_handle(&self, ino: u64) -> Result<(), FsError> {
        {
            let mut oc = self.inner.open_counts.lock();
            match oc.get_mut(&ino) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    return Ok(());
                }
                Some(_) => {
                    oc.remove(&ino);
                }
                None => return Ok(()),
            }
        }
        // Only an unlinked inode needs a transaction here; most releases end at this read.
        let orphaned = self
            .inner
            .view(|t| Ok(t.tx.open_table(ORPHANS)?.get(ino)?.is_some()))?;
        if !orphaned {
            return Ok(());
        }
        let _g = self.inner.data_lock(ino).write();
        self.inner.write_tx(|t| {
            let orphan = t.tx.open_table(ORPHANS)?.remove(ino)?.is_some();
            if orphan && self.inner.open_counts.lock().get(&ino).is_none() {
                delete_inode(t, ino)?;
            } else if orphan {
                t.tx.open_table(ORPHANS)?.insert(ino, ())?;
            }
            Ok(())
        })
    }

    /// Number of open handles of `ino` (for tests and the checker).
    pub fn open_count(&self, ino: u64) -> u32 {
        self.inner
            .open_counts
            .lock()
            .get(&ino)
            .copied()
            .unwrap_or(0)
    }

    /// Sets an extended attribute. `create`: fail if it exists; `replace`: fail if it does not.
    pub fn setxattr(
        &self,
        ino: u64,
        name: &[u8],
        value: &[u8],
        create: bool,
        replace: bool,
    ) -> Result<(), FsError> {
        if name.is_empty() || name.len() > NAME_MAX {
            return Err(FsError::Range);
        }
        if value.len() > XATTR_VALUE_MAX {
            return Err(FsError::Invalid(format!(
                "xattr value of {} bytes",
                value.len()
            )));
        }
        self.inner.check_meta_space()?;
        self.inner.write_tx(|t| {
            let mut i = load(t, ino)?;
            let mut x = t.tx.open_table(XATTRS)?;
            let exists = x.get((ino, name))?.is_some();
            if create && exists {
                return Err(FsError::Exists);
            }
            if replace && !exists {
                return Err(FsError::NoAttr);
            }
            x.insert((ino, name), value)?;
            drop(x);
            // Noted inside the transaction (write transactions run one at a time), so that
            // a concurrent removal cannot forget it after this commit; a superset is safe.
            if name.starts_with(SECURITY_PREFIX) {
                self.inner.note_security_xattr(ino);
            }
            i.ctime = now();
            store(t, ino, &i)
        })
    }

    /// The value of an extended attribute.
    ///
    /// A `security.*` name of an inode known to have none is answered from memory, without
    /// checking that the inode exists: the kernel asks for `security.capability` before every
    /// write.
    pub fn getxattr(&self, ino: u64, name: &[u8]) -> Result<Vec<u8>, FsError> {
        if name.starts_with(SECURITY_PREFIX) && !self.inner.may_have_security_xattr(ino) {
            return Err(FsError::NoAttr);
        }
        self.inner.view(|t| {
            load(t, ino)?;
            match t.tx.open_table(XATTRS)?.get((ino, name))? {
                Some(v) => Ok(v.value().to_vec()),
                None => Err(FsError::NoAttr),
            }
        })
    }

    /// The names of the extended attributes, each followed by a NUL byte.
    pub fn listxattr(&self, ino: u64) -> Result<Vec<u8>, FsError> {
        self.inner.view(|t| {
            load(t, ino)?;
            let x = t.tx.open_table(XATTRS)?;
            let mut out = Vec::new();
            for row in x.range((ino, &[][..])..)? {
                let (k, _) = row?;
                let (owner, name) = k.value();
                if owner != ino {
                    break;
                }
                out.extend_from_slice(name);
                out.push(0);
            }
            Ok(out)
        })
    }

    /// Removes an extended attribute.
    pub fn removexattr(&self, ino: u64, name: &[u8]) -> Result<(), FsError> {
        let security = name.starts_with(SECURITY_PREFIX);
        let res = self.inner.write_tx(|t| {
            let mut i = load(t, ino)?;
            let mut x = t.tx.open_table(XATTRS)?;
            if x.remove((ino, name))?.is_none() {
                return Err(FsError::NoAttr);
            }
            if security && !has_security_xattr(&x, ino)? {
                self.inner.forget_security_xattr(ino);
            }
            drop(x);
            i.ctime = now();
            store(t, ino, &i)
        });
        // The transaction did not commit: the xattr may still be there.
        if res.is_err() && security {
            self.inner.note_security_xattr(ino);
        }
        res
    }

    /// Number of inodes.
    pub fn inode_count(&self) -> u64 {
        self.inner.inode_count.load(Ordering::Relaxed)
    }
}
