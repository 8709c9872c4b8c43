//! Where a drive's bytes live: a file or block device, or a fault-injecting wrapper for tests.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

/// Positioned byte I/O on one drive image. Implementations are thread-safe.
pub trait DriveBackend: Send + Sync {
    /// Reads exactly `buf.len()` bytes at `offset`; reading past the end is an error.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes all of `buf` at `offset`. Not durable until [`DriveBackend::sync`].
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// Makes every completed write durable.
    fn sync(&self) -> io::Result<()>;
    /// Size of the image in bytes.
    fn len(&self) -> io::Result<u64>;

    /// Whether the image has no bytes at all.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// The identity of the open file (device, inode, link count), for telling that the image
    /// was deleted or renamed under a running volume; `None` where there is no such thing.
    fn identity(&self) -> Option<FileIdentity> {
        None
    }
}

/// Device and inode of an open image file, and its current link count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileIdentity {
    /// Device number.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Links to the inode now (0 once the image was deleted).
    pub nlink: u64,
}

/// A drive image file or block device, opened read-write.
pub struct FileBackend {
    file: File,
}

impl FileBackend {
    /// Opens an existing image for reading and writing.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        Ok(FileBackend { file })
    }

    /// Opens an existing image read-only (inspection, tests).
    pub fn open_read_only(path: &Path) -> io::Result<Self> {
        Ok(FileBackend {
            file: File::open(path)?,
        })
    }
}

impl DriveBackend for FileBackend {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn len(&self) -> io::Result<u64> {
        use std::io::{Seek, SeekFrom};
        // Works for regular files and block devices alike.
        (&self.file).seek(SeekFrom::End(0))
    }

    fn identity(&self) -> Option<FileIdentity> {
        use std::os::unix::fs::MetadataExt;
        let m = self.file.metadata().ok()?;
        Some(FileIdentity {
            dev: m.dev(),
            ino: m.ino(),
            nlink: m.nlink(),
        })
    }
}

/// A test backend that keeps synced and unsynced bytes apart, and can fail I/O on command.
///
/// Writes go to an overlay; `sync` folds the overlay into the inner backend; `crash` drops it,
/// as a power cut drops what the drive had not made durable.
pub struct FaultyBackend {
    inner: Arc<dyn DriveBackend>,
    state: Mutex<FaultState>,
}

#[derive(Default)]
struct FaultState {
    overlay: BTreeMap<u64, Vec<u8>>,
    ops_before_failure: Option<u64>,
}

impl FaultyBackend {
    /// Wraps `inner`; nothing is written to it until `sync`.
    pub fn new(inner: Arc<dyn DriveBackend>) -> Self {
        FaultyBackend {
            inner,
            state: Mutex::new(FaultState::default()),
        }
    }

    /// Drops every unsynced write.
    pub fn crash(&self) {
        self.state.lock().overlay.clear();
    }

    /// After `n` more reads, writes or syncs, every operation fails with an I/O error.
    pub fn fail_after(&self, n: u64) {
        self.state.lock().ops_before_failure = Some(n);
    }

    fn tick(st: &mut FaultState) -> io::Result<()> {
        if let Some(left) = st.ops_before_failure.as_mut() {
            if *left == 0 {
                return Err(io::Error::other("injected drive failure"));
            }
            *left -= 1;
        }
        Ok(())
    }
}

impl DriveBackend for FaultyBackend {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut st = self.state.lock();
        Self::tick(&mut st)?;
        self.inner.read_at(offset, buf)?;
        // Overlay writes are whole writes at their offsets; apply the overlapping ones in order.
        let end = offset + buf.len() as u64;
        for (&woff, data) in st.overlay.range(..end) {
            let wend = woff + data.len() as u64;
            if wend <= offset {
                continue;
            }
            let from = woff.max(offset);
            let to = wend.min(end);
            buf[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&data[(from - woff) as usize..(to - woff) as usize]);
        }
        Ok(())
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let mut st = self.state.lock();
        Self::tick(&mut st)?;
        // Split into 512-byte sectors so later overlapping writes replace earlier ones cleanly.
        for (i, sector) in buf.chunks(512).enumerate() {
            st.overlay
                .insert(offset + (i * 512) as u64, sector.to_vec());
        }
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        let mut st = self.state.lock();
        Self::tick(&mut st)?;
        for (off, data) in std::mem::take(&mut st.overlay) {
            self.inner.write_at(off, &data)?;
        }
        self.inner.sync()
    }

    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn identity(&self) -> Option<FileIdentity> {
        self.inner.identity()
    }
}
