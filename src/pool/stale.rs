//! The stale-block file of one drive slot: which physical blocks of that slot do not hold the
//! current data (written while the drive was out, or never rebuilt), kept in the pool's state
//! directory so that a crash while degraded does not lose track. Layout in `docs/FORMAT.md`.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::bitmap::Bitmap;

const MAGIC: &[u8; 8] = b"ATRSTALE";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 48;
/// Physical blocks covered by one region bit.
pub(crate) const REGION_BLOCKS: u64 = 1024;
/// The rebuild flag: every block of the slot is stale.
const FLAG_REBUILD: u8 = 1;

/// What a stale file says.
pub(crate) struct StaleRecord {
    /// Drive expected in the slot (zero when unknown).
    pub drive_id: [u8; 16],
    /// Every block is stale.
    pub rebuild: bool,
    /// Stale blocks, one word per 64 blocks.
    pub blocks: Vec<u64>,
    /// Regions (of [`REGION_BLOCKS`]) in which blocks may have gone stale since `blocks` was
    /// written.
    pub regions: Vec<u64>,
}

/// Path of slot `slot`'s stale file in `dir`.
pub(crate) fn path(dir: &Path, slot: usize) -> PathBuf {
    dir.join(format!("pool-slot-{slot}.stale"))
}

fn region_words(blocks: u64) -> usize {
    blocks.div_ceil(REGION_BLOCKS).div_ceil(64) as usize
}

/// Encodes a record for a slot of `blocks` usable physical blocks.
fn encode(slot: usize, blocks: u64, rec: &StaleRecord) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEADER_LEN + 8 * (rec.blocks.len() + rec.regions.len()) + 4);
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&VERSION.to_le_bytes());
    b.extend_from_slice(&(slot as u32).to_le_bytes());
    b.extend_from_slice(&rec.drive_id);
    b.extend_from_slice(&blocks.to_le_bytes());
    b.push(if rec.rebuild { FLAG_REBUILD } else { 0 });
    b.extend_from_slice(&[0u8; 7]);
    for w in rec.blocks.iter().chain(&rec.regions) {
        b.extend_from_slice(&w.to_le_bytes());
    }
    let sum = crc32c::crc32c(&b);
    b.extend_from_slice(&sum.to_le_bytes());
    b
}

/// Writes the record (temporary file, fsync, rename, fsync of the directory).
pub(crate) fn store(dir: &Path, slot: usize, blocks: u64, rec: &StaleRecord) -> io::Result<()> {
    let bytes = encode(slot, blocks, rec);
    let dst = path(dir, slot);
    let tmp = dir.join(format!("pool-slot-{slot}.stale.tmp"));
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &dst)?;
    File::open(dir)?.sync_all()
}

/// Removes the record (and syncs the directory); absent is fine.
pub(crate) fn remove(dir: &Path, slot: usize) -> io::Result<()> {
    match std::fs::remove_file(path(dir, slot)) {
        Ok(()) => File::open(dir)?.sync_all(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Reads slot `slot`'s record, if there is one. Any damage is an `InvalidData` error naming
/// what was wrong.
pub(crate) fn load(dir: &Path, slot: usize, blocks: u64) -> io::Result<Option<StaleRecord>> {
    let p = path(dir, slot);
    let b = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let bad = |what: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("stale file {}: {what}", p.display()),
        )
    };
    let words = blocks.div_ceil(64) as usize;
    let rwords = region_words(blocks);
    let want = HEADER_LEN + 8 * (words + rwords) + 4;
    if b.len() != want {
        return Err(bad(format!("{} bytes, expected {want}", b.len())));
    }
    let (body, tail) = b.split_at(want - 4);
    let sum = u32::from_le_bytes(tail.try_into().expect("4 bytes"));
    if crc32c::crc32c(body) != sum {
        return Err(bad("checksum mismatch".into()));
    }
    if &body[..8] != MAGIC {
        return Err(bad("bad magic".into()));
    }
    let u32_at = |o: usize| u32::from_le_bytes(body[o..o + 4].try_into().expect("4 bytes"));
    let u64_at = |o: usize| u64::from_le_bytes(body[o..o + 8].try_into().expect("8 bytes"));
    if u32_at(8) != VERSION {
        return Err(bad(format!("version {}", u32_at(8))));
    }
    if u32_at(12) as usize != slot {
        return Err(bad(format!("names slot {}, expected {slot}", u32_at(12))));
    }
    if u64_at(32) != blocks {
        return Err(bad(format!(
            "covers {} blocks, expected {blocks}",
            u64_at(32)
        )));
    }
    let mut drive_id = [0u8; 16];
    drive_id.copy_from_slice(&body[16..32]);
    let all: Vec<u64> = (0..words + rwords)
        .map(|i| u64_at(HEADER_LEN + 8 * i))
        .collect();
    Ok(Some(StaleRecord {
        drive_id,
        rebuild: body[40] & FLAG_REBUILD != 0,
        blocks: all[..words].to_vec(),
        regions: all[words..].to_vec(),
    }))
}

/// An empty region bitmap for a slot of `blocks` blocks.
pub(crate) fn new_regions(blocks: u64) -> Bitmap {
    Bitmap::new(blocks.div_ceil(REGION_BLOCKS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let rec = StaleRecord {
            drive_id: [7; 16],
            rebuild: false,
            blocks: vec![5, 0, 1 << 9],
            regions: vec![2],
        };
        store(dir.path(), 3, 150, &rec).unwrap();
        let back = load(dir.path(), 3, 150).unwrap().unwrap();
        assert_eq!(back.blocks, rec.blocks);
        assert_eq!(back.regions, rec.regions);
        assert_eq!(back.drive_id, [7; 16]);
        assert!(load(dir.path(), 2, 150).unwrap().is_none());
        assert!(load(dir.path(), 3, 151).is_err());
        let p = path(dir.path(), 3);
        let mut b = std::fs::read(&p).unwrap();
        b[50] ^= 1;
        std::fs::write(&p, &b).unwrap();
        assert!(load(dir.path(), 3, 150).is_err());
        remove(dir.path(), 3).unwrap();
        assert!(load(dir.path(), 3, 150).unwrap().is_none());
    }
}
