//! The consistency checker and the map of blocks in use.
//!
//! [`Fs::check`] reads one snapshot of the metadata and checks every rule of the format:
//! extents inside the data region, no block used twice, no block both used and free, no
//! block lost, block counts and link counts matching, every directory entry naming a live
//! inode of its kind, every inode reachable from the root (or an orphan of an open file),
//! and the readdir order table agreeing with the name table.

use std::collections::{HashMap, HashSet};

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};

use super::store::{FileKind, Inode, decode_seq};
use super::{DIRENTS, DIRSEQ, EXTENTS, Fs, FsError, INODES, ORPHANS, ROOT_INO, XATTRS};
use crate::BLOCK_SIZE;

/// What [`Fs::check`] found.
#[derive(Debug, Clone, Default)]
pub struct FsckReport {
    /// Inodes checked.
    pub inodes: u64,
    /// Directory entries checked.
    pub entries: u64,
    /// Data blocks referenced by extents.
    pub data_blocks_used: u64,
    /// Data blocks free or waiting for a durable commit.
    pub data_blocks_free: u64,
    /// Each broken rule, naming the inode or block.
    pub problems: Vec<String>,
}

impl FsckReport {
    /// Whether no rule was broken.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

impl Fs {
    /// Checks every invariant of the format against the current metadata. Best run while no
    /// operation is in flight (blocks being written are allocated but not yet mapped).
    pub fn check(&self) -> Result<FsckReport, FsError> {
        let mut r = FsckReport::default();
        self.inner.flush_batch()?;
        let rx = self.inner.db.begin_read()?;
        let sb = self.inner.sb;

        // Inodes.
        let mut inodes: HashMap<u64, Inode> = HashMap::new();
        for row in rx.open_table(INODES)?.iter()? {
            let (k, v) = row?;
            match Inode::decode(v.value()) {
                Some(i) => {
                    inodes.insert(k.value(), i);
                }
                None => r
                    .problems
                    .push(format!("inode {}: malformed record", k.value())),
            }
        }
        r.inodes = inodes.len() as u64;
        if inodes.get(&ROOT_INO).map(|i| i.kind) != Some(FileKind::Dir) {
            r.problems
                .push("root inode 1 missing or not a directory".into());
        }
        let orphans: HashSet<u64> = rx
            .open_table(ORPHANS)?
            .iter()?
            .map(|row| row.map(|(k, _)| k.value()))
            .collect::<Result<_, _>>()?;
        for &o in &orphans {
            match inodes.get(&o) {
                None => r.problems.push(format!("orphan {o} has no inode")),
                Some(i) if i.nlink != 0 => r
                    .problems
                    .push(format!("orphan {o} still has {} links", i.nlink)),
                Some(_) if self.open_count(o) == 0 => {
                    r.problems.push(format!("orphan {o} is not open by anyone"))
                }
                _ => {}
            }
        }

        // Directory entries and the readdir order.
        let mut links: HashMap<u64, u32> = HashMap::new();
        let mut subdirs: HashMap<u64, u32> = HashMap::new();
        let mut dir_parent: HashMap<u64, u64> = HashMap::new();
        let mut cookies: HashSet<(u64, u64)> = HashSet::new();
        for row in rx.open_table(DIRENTS)?.iter()? {
            let (k, v) = row?;
            let ((parent, name), (ino, cookie)) = (k.value(), v.value());
            let name = String::from_utf8_lossy(name).into_owned();
            r.entries += 1;
            cookies.insert((parent, cookie));
            match inodes.get(&parent) {
                Some(p) if p.kind == FileKind::Dir => {
                    if cookie >= p.next_cookie {
                        r.problems.push(format!(
                            "entry {name:?} of directory {parent}: cookie {cookie} not below \
                             the directory's next cookie {}",
                            p.next_cookie
                        ));
                    }
                }
                _ => r
                    .problems
                    .push(format!("entry {name:?} in {parent}, not a directory")),
            }
            let Some(child) = inodes.get(&ino) else {
                r.problems.push(format!(
                    "entry {name:?} of {parent} names missing inode {ino}"
                ));
                continue;
            };
            *links.entry(ino).or_default() += 1;
            if child.kind == FileKind::Dir {
                *subdirs.entry(parent).or_default() += 1;
                if dir_parent.insert(ino, parent).is_some() {
                    r.problems
                        .push(format!("directory {ino} has more than one name"));
                }
                if child.parent != parent {
                    r.problems.push(format!(
                        "directory {ino} is named in {parent} but records parent {}",
                        child.parent
                    ));
                }
            }
        }
        let mut seq_count = 0u64;
        for row in rx.open_table(DIRSEQ)?.iter()? {
            let (k, v) = row?;
            let (parent, cookie) = k.value();
            seq_count += 1;
            let Some((ino, kind, name)) = decode_seq(v.value()) else {
                r.problems
                    .push(format!("directory {parent} cookie {cookie}: malformed"));
                continue;
            };
            let de = rx
                .open_table(DIRENTS)?
                .get((parent, name))?
                .map(|v| v.value());
            if de != Some((ino, cookie)) {
                r.problems.push(format!(
                    "directory {parent} cookie {cookie} ({:?} -> {ino}) disagrees with the name \
                     table ({de:?})",
                    String::from_utf8_lossy(name)
                ));
            }
            if inodes.get(&ino).is_some_and(|i| i.kind != kind) {
                r.problems.push(format!(
                    "entry for inode {ino} in {parent} has the wrong kind"
                ));
            }
        }
        if seq_count != r.entries || cookies.len() as u64 != r.entries {
            r.problems.push(format!(
                "{} names but {seq_count} readdir entries ({} distinct cookies)",
                r.entries,
                cookies.len()
            ));
        }

        // Link counts and reachability.
        for (&ino, i) in &inodes {
            let n = links.get(&ino).copied().unwrap_or(0);
            if ino == ROOT_INO {
                if n != 0 {
                    r.problems.push(format!("root directory has {n} names"));
                }
            } else if n == 0 && !orphans.contains(&ino) {
                r.problems
                    .push(format!("inode {ino} has no name and is no orphan (leaked)"));
            }
            if i.kind == FileKind::Dir {
                let want = 2 + subdirs.get(&ino).copied().unwrap_or(0);
                if i.nlink != want {
                    r.problems
                        .push(format!("directory {ino}: nlink {} but {want}", i.nlink));
                }
            } else if !orphans.contains(&ino) && i.nlink != n {
                r.problems
                    .push(format!("inode {ino}: nlink {} but {n} names", i.nlink));
            }
            if i.kind == FileKind::Symlink && i.size != i.target.len() as u64 {
                r.problems.push(format!(
                    "symlink {ino}: size {} but target {}",
                    i.size,
                    i.target.len()
                ));
            }
        }
        for &d in dir_parent.keys() {
            let mut at = d;
            let mut steps = 0;
            while at != ROOT_INO {
                match dir_parent.get(&at) {
                    Some(&p) => at = p,
                    None => {
                        r.problems
                            .push(format!("directory {d} is not reachable from the root"));
                        break;
                    }
                }
                steps += 1;
                if steps > dir_parent.len() {
                    r.problems.push(format!("directory {d} lies on a loop"));
                    break;
                }
            }
        }

        // Extents and blocks.
        let mut used: Vec<(u64, u64, u64)> = Vec::new();
        let mut per_inode: HashMap<u64, u64> = HashMap::new();
        for row in rx.open_table(EXTENTS)?.iter()? {
            let (k, v) = row?;
            let ((ino, f), (l, n)) = (k.value(), v.value());
            *per_inode.entry(ino).or_default() += n;
            used.push((l, n, ino));
            match inodes.get(&ino) {
                Some(i) if i.kind == FileKind::File => {
                    if (f + n) * BLOCK_SIZE as u64
                        > i.size.div_ceil(BLOCK_SIZE as u64) * BLOCK_SIZE as u64
                    {
                        r.problems.push(format!(
                            "inode {ino}: extent at file block {f}+{n} beyond size {}",
                            i.size
                        ));
                    }
                }
                _ => r
                    .problems
                    .push(format!("extent {l}+{n} of inode {ino}, not a file")),
            }
            if n == 0 || l < sb.data_start || l + n > sb.data_start + sb.data_blocks {
                r.problems.push(format!(
                    "inode {ino}: extent {l}+{n} outside the data region"
                ));
            }
        }
        for (&ino, i) in &inodes {
            let n = per_inode.get(&ino).copied().unwrap_or(0);
            if i.blocks != n {
                r.problems.push(format!(
                    "inode {ino}: records {} blocks, extents hold {n}",
                    i.blocks
                ));
            }
        }
        used.sort_unstable();
        for w in used.windows(2) {
            if w[0].0 + w[0].1 > w[1].0 {
                r.problems.push(format!(
                    "block {} used by inode {} and inode {}",
                    w[1].0, w[0].2, w[1].2
                ));
            }
        }
        r.data_blocks_used = used.iter().map(|u| u.1).sum();

        // Free space against use.
        let (free, pending) = {
            let a = self.inner.alloc.lock();
            (a.free_runs(), a.pending_runs())
        };
        let mut all: Vec<(u64, u64, &str)> = used.iter().map(|&(l, n, _)| (l, n, "used")).collect();
        all.extend(free.iter().map(|&(l, n)| (l, n, "free")));
        all.extend(pending.iter().map(|&(l, n)| (l, n, "pending-free")));
        all.sort_unstable();
        for w in all.windows(2) {
            if w[0].0 + w[0].1 > w[1].0 {
                r.problems.push(format!(
                    "block {} is both {} and {}",
                    w[1].0, w[0].2, w[1].2
                ));
            }
        }
        r.data_blocks_free = free.iter().chain(pending.iter()).map(|f| f.1).sum();
        let total = r.data_blocks_used + r.data_blocks_free;
        if total != sb.data_blocks {
            r.problems.push(format!(
                "{} blocks used + {} free = {total}, data region has {} (leak of {})",
                r.data_blocks_used,
                r.data_blocks_free,
                sb.data_blocks,
                sb.data_blocks as i64 - total as i64
            ));
        }
        for row in rx.open_table(XATTRS)?.iter()? {
            let (k, _) = row?;
            let ino = k.value().0;
            if !inodes.contains_key(&ino) {
                r.problems.push(format!("xattr of missing inode {ino}"));
            }
        }
        let _ = rx.open_table(INODES)?.len()?;
        for p in &r.problems {
            tracing::warn!(problem = %p, "fsck");
        }
        Ok(r)
    }

    /// Logical block runs in use: the superblock, the metadata store and every extent.
    pub fn used_blocks(&self) -> Result<Vec<(u64, u64)>, FsError> {
        let sb = self.inner.sb;
        let (len, _) = (self.inner.backend_usage)();
        let mut runs = vec![(0u64, 1u64)];
        let meta = len
            .div_ceil(BLOCK_SIZE as u64)
            .max(sb.meta_len.div_ceil(BLOCK_SIZE as u64));
        if meta > 0 {
            runs.push((sb.meta_start, meta.min(sb.meta_blocks)));
        }
        self.inner.flush_batch()?;
        let rx = self.inner.db.begin_read()?;
        let mut data: Vec<(u64, u64)> = Vec::new();
        for row in rx.open_table(EXTENTS)?.iter()? {
            let (_, v) = row?;
            data.push(v.value());
        }
        data.sort_unstable();
        runs.extend(data);
        // Merge adjacent runs.
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(runs.len());
        for (s, n) in runs {
            match out.last_mut() {
                Some(last) if last.0 + last.1 >= s => {
                    let end = (last.0 + last.1).max(s + n);
                    last.1 = end - last.0;
                }
                _ => out.push((s, n)),
            }
        }
        Ok(out)
    }
}
