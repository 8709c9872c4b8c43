//! File data: the extent map, read, write, truncate and fsync.
//!
//! An extent maps a run of file blocks to a run of logical blocks of the data region. A write
//! allocates blocks for the holes it covers, writes the data to the device in place, then
//! records the new extents and the size in one metadata transaction. Holes read as zeros.
//! The invariant that bytes past the end of file in its last block are zero is kept by
//! truncate, so extending a file never exposes old bytes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::RwLock;
use redb::ReadableTable;

use super::ns::{load, store};
use super::store::FileKind;
use super::{
    CAPS_XATTR, EXTENTS, Fs, FsError, INODES, MAX_FILE_SIZE, Tx, XATTRS, dev_err, get_inode, now,
};
use crate::BLOCK_SIZE;

const BS: u64 = BLOCK_SIZE as u64;

/// A mapped run: file block, logical block, length.
type Seg = (u64, u64, u64);

/// Files with more extents than this are not cached: their block maps are looked up each
/// time.
const CACHED_EXTENTS_MAX: usize = if cfg!(test) { 64 } else { 4096 };
/// Files cached at most; the cache starts over when full.
const CACHED_FILES_MAX: usize = 1024;
/// Extents cached at most over all files (24 bytes each); the cache starts over when full.
const CACHED_EXTENTS_TOTAL: usize = 1 << 18;

/// Blocks of the aligned cluster a write into a hole of a file allocates at once: the other
/// blocks of the cluster that were holes get zeros, so that the next writes there are
/// overwrites, which change no metadata (64 KiB).
pub(crate) const FILL_CLUSTER_BLOCKS: u64 = 16;

/// What a read or an overwrite needs to know of a regular file: its size, permission bits
/// and whole block map.
pub(crate) struct FileMap {
    size: u64,
    perm: u16,
    killed_perm: u16,
    extents: Vec<Seg>,
}

impl FileMap {
    /// The mapped runs within file blocks `[from, to)`, clipped, in file order (as
    /// [`mapped`] gives them).
    fn mapped(&self, from: u64, to: u64) -> Vec<Seg> {
        let first = self.extents.partition_point(|&(f, _, n)| f + n <= from);
        let mut out = Vec::new();
        for &(f, l, n) in &self.extents[first..] {
            if f >= to {
                break;
            }
            let (s, e) = (f.max(from), (f + n).min(to));
            out.push((s, l + (s - f), e - s));
        }
        out
    }

    /// This map after a write that mapped the holes `new` and left the inode as `i`; `None`
    /// when that makes too many extents to cache.
    fn after_write(&self, new: &[Seg], i: &super::store::Inode) -> Option<FileMap> {
        let mut all: Vec<Seg> = Vec::with_capacity(self.extents.len() + new.len());
        all.extend_from_slice(&self.extents);
        all.extend_from_slice(new);
        all.sort_unstable_by_key(|s| s.0);
        let mut extents: Vec<Seg> = Vec::with_capacity(all.len());
        for (f, l, n) in all {
            match extents.last_mut() {
                Some((pf, pl, pn)) if *pf + *pn == f && *pl + *pn == l => *pn += n,
                _ => extents.push((f, l, n)),
            }
        }
        (extents.len() <= CACHED_EXTENTS_MAX).then(|| FileMap {
            size: i.size,
            perm: i.perm,
            killed_perm: i.killed_perm(),
            extents,
        })
    }
}

#[derive(Default)]
struct Cached {
    files: HashMap<u64, Arc<FileMap>>,
    /// Extents held by `files`.
    extents: usize,
}

impl Cached {
    fn remove(&mut self, ino: u64) {
        if let Some(old) = self.files.remove(&ino) {
            self.extents -= old.extents.len();
        }
    }

    fn insert(&mut self, ino: u64, map: FileMap) {
        self.remove(ino);
        if self.files.len() >= CACHED_FILES_MAX
            || self.extents + map.extents.len() > CACHED_EXTENTS_TOTAL
        {
            self.files.clear();
            self.extents = 0;
        }
        self.extents += map.extents.len();
        self.files.insert(ino, Arc::new(map));
    }
}

/// The maps of files read or written lately, so that a read or an overwrite takes no lock on
/// the metadata transaction and makes no lookup in it.
///
/// Coherence: entries are only added or changed while the metadata transaction is held
/// ([`Inner::view`], [`Inner::write_tx_file`]) and the whole cache is emptied by every other
/// metadata operation before the transaction is let go ([`Inner::write_tx`]), so an entry
/// always equals what a lookup would find. A write that changes one file's map only
/// ([`Inner::write_tx_file`]) brings that file's entry up to date instead. A reader that uses
/// an entry holds the file's data lock, which every change of a file's size or block map
/// holds for writing.
///
/// [`Inner::view`]: super::Inner::view
/// [`Inner::write_tx`]: super::Inner::write_tx
/// [`Inner::write_tx_file`]: super::Inner::write_tx_file
///
/// Files found with too many extents are remembered apart, so that their maps are not loaded
/// again after each operation; this is a hint only (it is never wrong to look the map up),
/// kept over metadata operations and forgotten at each durable commit.
#[derive(Default)]
pub(crate) struct FileMaps {
    maps: RwLock<Cached>,
    fragmented: RwLock<HashSet<u64>>,
}

impl FileMaps {
    fn get(&self, ino: u64) -> Option<Arc<FileMap>> {
        self.maps.read().files.get(&ino).cloned()
    }

    /// Whether `ino` was found with too many extents to cache lately.
    fn fragmented(&self, ino: u64) -> bool {
        self.fragmented.read().contains(&ino)
    }

    /// Caches the map of `ino`, or remembers that `ino` has too many extents (`None`).
    /// Called with the metadata transaction held only.
    pub(crate) fn put_or_mark(&self, ino: u64, map: Option<FileMap>) {
        if let Some(map) = map {
            self.maps.write().insert(ino, map);
            return;
        }
        self.maps.write().remove(ino);
        let mut f = self.fragmented.write();
        if f.len() >= CACHED_FILES_MAX {
            f.clear();
        }
        f.insert(ino);
    }

    /// Forgets which files had too many extents (they may have fewer now).
    pub(crate) fn forget_fragmented(&self) {
        let mut f = self.fragmented.write();
        if !f.is_empty() {
            f.clear();
        }
    }

    /// Called with the metadata transaction held only.
    pub(crate) fn clear(&self) {
        let mut m = self.maps.write();
        if !m.files.is_empty() {
            m.files.clear();
            m.extents = 0;
        }
    }

    /// Drops the entry of `ino`. Called with the metadata transaction held only.
    pub(crate) fn forget(&self, ino: u64) {
        self.maps.write().remove(ino);
    }
}

/// The map of regular file `ino` with inode `i`; None if it has too many extents to cache.
fn load_map(
    t: &impl ReadableTable<(u64, u64), (u64, u64)>,
    ino: u64,
    i: &super::store::Inode,
) -> Result<Option<FileMap>, FsError> {
    let mut extents = Vec::new();
    for row in t.range((ino, 0)..=(ino, u64::MAX))? {
        if extents.len() == CACHED_EXTENTS_MAX {
            return Ok(None);
        }
        let (k, v) = row?;
        let (f, (l, n)) = (k.value().1, v.value());
        extents.push((f, l, n));
    }
    Ok(Some(FileMap {
        size: i.size,
        perm: i.perm,
        killed_perm: i.killed_perm(),
        extents,
    }))
}

/// The mapped runs of `ino` within file blocks `[from, to)`, clipped, in file order.
fn mapped(
    t: &impl ReadableTable<(u64, u64), (u64, u64)>,
    ino: u64,
    from: u64,
    to: u64,
) -> Result<Vec<Seg>, FsError> {
    let mut out = Vec::new();
    if let Some(row) = t.range((ino, 0)..(ino, from))?.next_back() {
        let (k, v) = row?;
        let (f, (l, n)) = (k.value().1, v.value());
        if f + n > from {
            let end = (f + n).min(to);
            out.push((from, l + (from - f), end - from));
        }
    }
    for row in t.range((ino, from)..(ino, to))? {
        let (k, v) = row?;
        let (f, (l, n)) = (k.value().1, v.value());
        out.push((f, l, n.min(to - f)));
    }
    Ok(out)
}

/// Adds an extent, merging with its neighbours where both file and logical runs continue.
fn insert_extent(t: &mut Tx, ino: u64, f: u64, l: u64, n: u64) -> Result<(), FsError> {
    let mut tab = t.tx.open_table(EXTENTS)?;
    let (mut f, mut l, mut n) = (f, l, n);
    let prev = tab
        .range((ino, 0)..(ino, f))?
        .next_back()
        .transpose()?
        .map(|(k, v)| (k.value().1, v.value()));
    if let Some((pf, (pl, pn))) = prev
        && pf + pn == f
        && pl + pn == l
    {
        tab.remove((ino, pf))?;
        f = pf;
        l = pl;
        n += pn;
    }
    let next = tab.get((ino, f + n))?.map(|v| v.value());
    if let Some((nl, nn)) = next
        && nl == l + n
    {
        tab.remove((ino, f + n))?;
        n += nn;
    }
    tab.insert((ino, f), (l, n))?;
    Ok(())
}

/// Drops every mapping of file blocks `from..` of `ino`; the runs go to `t.freed`. Returns
/// the number of blocks dropped.
pub(crate) fn punch_from(t: &mut Tx, ino: u64, from: u64) -> Result<u64, FsError> {
    let mut tab = t.tx.open_table(EXTENTS)?;
    let mut dropped = 0;
    let straddle = tab
        .range((ino, 0)..(ino, from))?
        .next_back()
        .transpose()?
        .map(|(k, v)| (k.value().1, v.value()));
    if let Some((f, (l, n))) = straddle
        && f + n > from
    {
        let keep = from - f;
        tab.insert((ino, f), (l, keep))?;
        t.freed.push((l + keep, n - keep));
        dropped += n - keep;
    }
    let rest: Vec<Seg> = tab
        .range((ino, from)..=(ino, u64::MAX))?
        .map(|r| r.map(|(k, v)| (k.value().1, v.value().0, v.value().1)))
        .collect::<Result<_, _>>()?;
    for (f, l, n) in rest {
        tab.remove((ino, f))?;
        t.freed.push((l, n));
        dropped += n;
    }
    Ok(dropped)
}

/// The unmapped runs (file block, length) of `[from, to)` given its mapped segments.
fn holes_of(segs: &[Seg], from: u64, to: u64) -> Vec<(u64, u64)> {
    let mut holes = Vec::new();
    let mut at = from;
    for &(f, _, n) in segs {
        if f > at {
            holes.push((at, f - at));
        }
        at = f + n;
    }
    if at < to {
        holes.push((at, to - at));
    }
    holes
}

/// Lays allocated runs over holes, in order: the new segments.
fn assign(holes: &[(u64, u64)], runs: &[(u64, u64)]) -> Result<Vec<Seg>, FsError> {
    let mut out = Vec::new();
    let mut run_iter = runs.iter().copied();
    let mut cur: Option<(u64, u64)> = None;
    for &(mut f, mut n) in holes {
        while n > 0 {
            let (l, rn) = match cur.take() {
                Some(c) => c,
                None => run_iter.next().ok_or_else(|| {
                    FsError::Corrupt("allocator returned fewer blocks than asked".into())
                })?,
            };
            let take = n.min(rn);
            out.push((f, l, take));
            if rn > take {
                cur = Some((l + take, rn - take));
            }
            f += take;
            n -= take;
        }
    }
    Ok(out)
}

impl Fs {
    /// Reads up to `size` bytes at `offset`; short at end of file.
    pub fn read(&self, ino: u64, offset: u64, size: u32) -> Result<Vec<u8>, FsError> {
        let mut buf = Vec::new();
        let range = self.read_range(ino, offset, size, &mut buf)?;
        buf.truncate(range.end);
        buf.drain(..range.start);
        Ok(buf)
    }

    /// [`Fs::read`] into `buf`, which a caller keeps from one read to the next so that large
    /// reads allocate and clear no memory: returns the bytes read, a part of `buf`.
    pub fn read_into<'a>(
        &self,
        ino: u64,
        offset: u64,
        size: u32,
        buf: &'a mut Vec<u8>,
    ) -> Result<&'a [u8], FsError> {
        let range = self.read_range(ino, offset, size, buf)?;
        Ok(&buf[range])
    }

    /// Reads the blocks holding `size` bytes at `offset` into the start of `buf` (grown when
    /// too short; its old bytes are all overwritten) and returns where the bytes asked for are.
    fn read_range(
        &self,
        ino: u64,
        offset: u64,
        size: u32,
        buf: &mut Vec<u8>,
    ) -> Result<std::ops::Range<usize>, FsError> {
        let _g = self.inner.data_lock(ino).read();
        // The span read: end of the bytes returned, first and past-last file block.
        let span = |file_size: u64| {
            if offset >= file_size || size == 0 {
                return None;
            }
            let end = (offset + size as u64).min(file_size);
            Some((end, offset / BS, end.div_ceil(BS)))
        };
        let found = match self.inner.maps.get(ino) {
            Some(m) => span(m.size).map(|(end, fb0, fb1)| (end, fb0, fb1, m.mapped(fb0, fb1))),
            None => self.inner.view(|t| {
                let i = get_inode(&t.tx.open_table(INODES)?, ino)?;
                match i.kind {
                    FileKind::File => {}
                    FileKind::Dir => return Err(FsError::IsDir),
                    _ => return Err(FsError::Invalid(format!("read of inode {ino}"))),
                }
                let ext = t.tx.open_table(EXTENTS)?;
                let Some((end, fb0, fb1)) = span(i.size) else {
                    return Ok(None);
                };
                // Files known to have too many extents are looked up each time.
                if !self.inner.maps.fragmented(ino) {
                    let m = load_map(&ext, ino, &i)?;
                    let segs = m.as_ref().map(|m| m.mapped(fb0, fb1));
                    self.inner.maps.put_or_mark(ino, m);
                    if let Some(segs) = segs {
                        return Ok(Some((end, fb0, fb1, segs)));
                    }
                }
                Ok(Some((end, fb0, fb1, mapped(&ext, ino, fb0, fb1)?)))
            })?,
        };
        let Some((end, fb0, fb1, segs)) = found else {
            return Ok(0..0);
        };
        let len = ((fb1 - fb0) * BS) as usize;
        if buf.len() < len {
            buf.resize(len, 0);
        }
        for (f, n) in holes_of(&segs, fb0, fb1) {
            let at = ((f - fb0) * BS) as usize;
            buf[at..at + (n * BS) as usize].fill(0);
        }
        for (f, l, n) in segs {
            let at = ((f - fb0) * BS) as usize;
            self.inner
                .dev
                .read_blocks(l, &mut buf[at..at + (n * BS) as usize])
                .map_err(dev_err(|| {
                    format!("reading inode {ino} file block {f} at block {l}+{n}")
                }))?;
        }
        let head = (offset - fb0 * BS) as usize;
        Ok(head..head + (end - offset) as usize)
    }

    /// Writes `data` at `offset`, allocating blocks for holes. Returns the bytes written.
    /// A write drops the file's `security.capability` xattr, as Linux does.
    pub fn write(&self, ino: u64, offset: u64, data: &[u8]) -> Result<usize, FsError> {
        self.write_killing(ino, offset, data, false)
    }

    /// [`Fs::write`] that also drops the set-user-ID bit, and the set-group-ID bit of a
    /// group-executable file, when `kill_suidgid` (the kernel asks for it when the writer
    /// lacks `CAP_FSETID`).
    pub fn write_killing(
        &self,
        ino: u64,
        offset: u64,
        data: &[u8],
        kill_suidgid: bool,
    ) -> Result<usize, FsError> {
        if data.is_empty() {
            return Ok(0);
        }
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&e| e <= MAX_FILE_SIZE)
            .ok_or(FsError::FileTooBig)?;
        let _g = self.inner.data_lock(ino).write();
        let (fb0, fb1) = (offset / BS, end.div_ceil(BS));
        // An overwrite of mapped blocks inside the file that drops no privilege changes no
        // metadata: with the file's map cached it goes straight to the device.
        let cached = self.inner.maps.get(ino);
        if let Some(m) = &cached
            && end <= m.size
            && !(kill_suidgid && m.killed_perm != m.perm)
            && !self.inner.may_have_security_xattr(ino)
            && let segs = m.mapped(fb0, fb1)
            && holes_of(&segs, fb0, fb1).is_empty()
        {
            self.write_segments(ino, offset, data, m.size, &segs, &[])?;
            self.inner.touch(ino);
            return Ok(data.len());
        }
        let (segs, mut holes, hint, size, drop_privs) = self.inner.view(|t| {
            let i = get_inode(&t.tx.open_table(INODES)?, ino)?;
            match i.kind {
                FileKind::File => {}
                FileKind::Dir => return Err(FsError::IsDir),
                _ => return Err(FsError::Invalid(format!("write to inode {ino}"))),
            }
            let drop_privs = (kill_suidgid && i.killed_perm() != i.perm)
                || (self.inner.may_have_security_xattr(ino)
                    && t.tx.open_table(XATTRS)?.get((ino, CAPS_XATTR))?.is_some());
            let ext = t.tx.open_table(EXTENTS)?;
            let segs = mapped(&ext, ino, fb0, fb1)?;
            let mut holes = holes_of(&segs, fb0, fb1);
            if holes.is_empty() {
                // An overwrite: the next ones may take the fast path above.
                if cached.is_none() && end <= i.size && !self.inner.maps.fragmented(ino) {
                    self.inner.maps.put_or_mark(ino, load_map(&ext, ino, &i)?);
                }
                return Ok((segs, holes, None, i.size, drop_privs));
            }
            // A write into a hole inside the file fills the holes of its aligned clusters
            // too (with zeros), so that the writes that follow there are overwrites.
            let size_blocks = i.size.div_ceil(BS);
            if fb1 <= size_blocks {
                let c0 = fb0 - fb0 % FILL_CLUSTER_BLOCKS;
                let c1 = fb1.next_multiple_of(FILL_CLUSTER_BLOCKS).min(size_blocks);
                holes = holes_of(&mapped(&ext, ino, c0, c1)?, c0, c1);
            }
            // The first new block goes where the extent before it would continue.
            let h = holes[0].0;
            let hint = match ext.range((ino, 0)..(ino, h))?.next_back().transpose()? {
                Some((k, v)) => {
                    let (f, (l, n)) = (k.value().1, v.value());
                    Some(l + n + (h - (f + n).min(h)))
                }
                None => None,
            };
            Ok((segs, holes, hint, i.size, drop_privs))
        })?;

        let total = |holes: &[(u64, u64)]| holes.iter().map(|h| h.1).sum::<u64>();
        let mut need = total(&holes);
        let runs = match (need > 0).then(|| self.allocate(need, hint)) {
            None => Vec::new(),
            Some(Ok(runs)) => runs,
            // Too little space for the clusters: the write's own holes only.
            Some(Err(FsError::NoSpace)) => {
                let own = holes_of(&segs, fb0, fb1);
                if own == holes {
                    return Err(FsError::NoSpace);
                }
                need = total(&own);
                holes = own;
                self.allocate(need, hint)?
            }
            Some(Err(e)) => return Err(e),
        };
        let new_segs = assign(&holes, &runs)?;

        // A write that starts past the block holding the old end of file leaves that block
        // out: clear its tail here, so the gap reads as zeros.
        let mut res = Ok(());
        if offset > size && size % BS != 0 && offset / BS > size / BS {
            res = self.zero_tail(ino, size);
        }
        let res = res.and_then(|()| self.write_segments(ino, offset, data, size, &segs, &new_segs));
        // An overwrite inside the file changes no block map and no size: its new mtime waits
        // in memory for the next sync instead of costing a transaction.
        if res.is_ok() && new_segs.is_empty() && end <= size && !drop_privs {
            self.inner.touch(ino);
            return Ok(data.len());
        }
        let res = res.and_then(|()| {
            self.inner.write_tx_file(ino, |t| {
                let mut i = load(t, ino)?;
                for &(f, l, n) in &new_segs {
                    insert_extent(t, ino, f, l, n)?;
                }
                i.blocks += need;
                i.size = i.size.max(end);
                let tm = now();
                i.mtime = tm;
                i.ctime = tm;
                if drop_privs {
                    if kill_suidgid {
                        i.perm = i.killed_perm();
                    }
                    t.tx.open_table(XATTRS)?.remove((ino, CAPS_XATTR))?;
                }
                store(t, ino, &i)?;
                // The batch lock is held: a cached map is current and may be brought up to
                // date.
                let map = self
                    .inner
                    .maps
                    .get(ino)
                    .and_then(|m| m.after_write(&new_segs, &i));
                Ok(((), map))
            })
        });
        if let Err(e) = res {
            self.inner.alloc.lock().release_now(&runs);
            return Err(e);
        }
        Ok(data.len())
    }

    /// Reserves blocks for `[offset, offset + len)` (zero-filled where there were holes) and
    /// extends the size to cover it, as `fallocate` mode 0 does.
    pub fn fallocate(&self, ino: u64, offset: u64, len: u64) -> Result<(), FsError> {
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= MAX_FILE_SIZE && len > 0)
            .ok_or(FsError::FileTooBig)?;
        let _g = self.inner.data_lock(ino).write();
        let (fb0, fb1) = (offset / BS, end.div_ceil(BS));
        let segs = self.inner.view(|t| {
            let i = get_inode(&t.tx.open_table(INODES)?, ino)?;
            if i.kind != FileKind::File {
                return Err(FsError::Invalid(format!("fallocate of inode {ino}")));
            }
            mapped(&t.tx.open_table(EXTENTS)?, ino, fb0, fb1)
        })?;
        let holes = holes_of(&segs, fb0, fb1);
        let need: u64 = holes.iter().map(|h| h.1).sum();
        let runs = if need > 0 {
            self.allocate(need, None)?
        } else {
            Vec::new()
        };
        let new_segs = assign(&holes, &runs)?;
        let zeros = vec![0u8; 256 * BLOCK_SIZE];
        let old_size = self.getattr(ino)?.size;
        let res = (|| {
            if end > old_size {
                self.zero_tail(ino, old_size)?;
            }
            for &(f, l, n) in &new_segs {
                let mut done = 0;
                while done < n {
                    let k = (n - done).min(256);
                    self.inner
                        .dev
                        .write_blocks(l + done, &zeros[..(k * BS) as usize])
                        .map_err(dev_err(|| format!("zeroing inode {ino} file block {f}")))?;
                    done += k;
                }
            }
            self.inner.write_tx(|t| {
                let mut i = load(t, ino)?;
                for &(f, l, n) in &new_segs {
                    insert_extent(t, ino, f, l, n)?;
                }
                i.blocks += need;
                i.size = i.size.max(end);
                i.ctime = now();
                store(t, ino, &i)
            })
        })();
        if let Err(e) = res {
            self.inner.alloc.lock().release_now(&runs);
            return Err(e);
        }
        Ok(())
    }

    /// Takes `count` data blocks; with none free, waits for pending frees to become durable
    /// once before giving up.
    fn allocate(&self, count: u64, hint: Option<u64>) -> Result<Vec<(u64, u64)>, FsError> {
        self.inner.check_meta_space()?;
        if let Some(r) = self.inner.alloc.lock().allocate(count, hint) {
            return Ok(r);
        }
        if self.inner.alloc.lock().pending_blocks() == 0 && !self.inner.batch_frees_blocks() {
            return Err(FsError::NoSpace);
        }
        self.inner.sync_all()?;
        self.inner
            .alloc
            .lock()
            .allocate(count, hint)
            .ok_or(FsError::NoSpace)
    }

    /// Writes the data of one write request to its old and new blocks, merging partial
    /// blocks with the bytes already there.
    fn write_segments(
        &self,
        ino: u64,
        offset: u64,
        data: &[u8],
        size: u64,
        old: &[Seg],
        new: &[Seg],
    ) -> Result<(), FsError> {
        let end = offset + data.len() as u64;
        let mut all: Vec<(Seg, bool)> = old
            .iter()
            .map(|&s| (s, false))
            .chain(new.iter().map(|&s| (s, true)))
            .collect();
        all.sort_unstable_by_key(|(s, _)| s.0);
        let mut buf = Vec::new();
        for ((f, l, n), fresh) in all {
            let seg_start = f * BS;
            let seg_end = (f + n) * BS;
            if offset <= seg_start && end >= seg_end {
                // Whole blocks of the request: they go down as they are.
                let src = &data[(seg_start - offset) as usize..(seg_end - offset) as usize];
                self.inner.dev.write_blocks(l, src).map_err(dev_err(|| {
                    format!("writing inode {ino} file block {f} at block {l}+{n}")
                }))?;
                continue;
            }
            buf.clear();
            buf.resize((n * BS) as usize, 0);
            // Partial blocks at either end keep the bytes already stored there.
            if !fresh && (offset > seg_start || end < seg_end) {
                let first_partial = offset > seg_start;
                let last_partial = end < seg_end && seg_end - BS < size;
                if first_partial {
                    self.read_block(ino, f, l, &mut buf[..BLOCK_SIZE])?;
                }
                if last_partial && (n > 1 || !first_partial) {
                    let at = ((n - 1) * BS) as usize;
                    self.read_block(ino, f + n - 1, l + n - 1, &mut buf[at..])?;
                }
                // Bytes past the old end of file read as zeros whatever the block holds (a
                // crash may have left bytes of a lost write there).
                if size < seg_end {
                    buf[size.saturating_sub(seg_start) as usize..].fill(0);
                }
            }
            // (A fresh segment of the write's clusters may lie outside it: zeros only.)
            let from = offset.max(seg_start);
            let to = end.min(seg_end);
            if from < to {
                let src = &data[(from - offset) as usize..(to - offset) as usize];
                let at = (from - seg_start) as usize;
                buf[at..at + src.len()].copy_from_slice(src);
            }
            self.inner.dev.write_blocks(l, &buf).map_err(dev_err(|| {
                format!("writing inode {ino} file block {f} at block {l}+{n}")
            }))?;
        }
        Ok(())
    }

    fn read_block(&self, ino: u64, f: u64, l: u64, out: &mut [u8]) -> Result<(), FsError> {
        self.inner.dev.read_blocks(l, out).map_err(dev_err(|| {
            format!("reading inode {ino} file block {f} at block {l}")
        }))
    }

    /// Zeroes the bytes of the block holding byte `size` from there to the block's end, if
    /// that block is mapped. Device I/O: called outside the metadata transaction.
    pub(crate) fn zero_tail(&self, ino: u64, size: u64) -> Result<(), FsError> {
        if size.is_multiple_of(BS) {
            return Ok(());
        }
        let fb = size / BS;
        let seg = self
            .inner
            .view(|t| mapped(&t.tx.open_table(EXTENTS)?, ino, fb, fb + 1))?;
        if let Some(&(_, l, _)) = seg.first() {
            let mut b = vec![0u8; BLOCK_SIZE];
            self.read_block(ino, fb, l, &mut b)?;
            b[(size % BS) as usize..].fill(0);
            self.inner
                .dev
                .write_blocks(l, &b)
                .map_err(dev_err(|| format!("zeroing tail of inode {ino} block {l}")))?;
        }
        Ok(())
    }

    /// Shrinks the block map of `ino` to `size` bytes (the caller zeroed the tail of the new
    /// last block before, with [`Fs::zero_tail`]).
    pub(crate) fn truncate_down(
        &self,
        t: &mut Tx,
        ino: u64,
        i: &mut super::store::Inode,
        size: u64,
    ) -> Result<(), FsError> {
        let keep = size.div_ceil(BS);
        i.blocks = i.blocks.saturating_sub(punch_from(t, ino, keep)?);
        Ok(())
    }

    /// Makes the file's data and metadata durable (`datasync` is treated alike: the size and
    /// block map are needed to read the data back).
    pub fn fsync(&self, ino: u64, _datasync: bool) -> Result<(), FsError> {
        let _ = ino;
        self.inner.sync_all()
    }
}
