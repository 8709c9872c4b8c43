//! The volume's logical block space, replicated over the drives: drive slot states, per-block
//! checksums, degraded reads and writes, stale-block tracking, pull, reinsert, replace, the
//! restriper and scrub. It knows nothing of files, and of keys beyond its unlocked drives.
//!
//! [`BlockDevice`] is what the filesystem sees: numbered 4 KiB logical blocks, plaintext in
//! and out, and a `sync` that makes every completed write durable. [`MemDevice`] is an
//! in-memory one for the filesystem's unit tests and for crash tests (it can drop unsynced
//! writes).

mod bitmap;
pub mod layout;
mod mem;
mod stale;
pub mod sums;
mod volume;

pub use layout::Layout;
pub use mem::MemDevice;
pub use volume::{
    CopyMismatch, Member, Pool, PoolError, PoolOptions, RestriperState, RestriperStatus,
    ScrubReport, SlotInit, SlotState, SlotStatus,
};

use std::io;

use crate::BLOCK_SIZE;

/// A device of numbered 4 KiB logical blocks.
///
/// Buffers are whole blocks: `buf.len()` is a non-zero multiple of [`BLOCK_SIZE`], and the run
/// `[lbn, lbn + buf.len() / BLOCK_SIZE)` lies within [`BlockDevice::block_count`]. Calls may come
/// from many threads at once; writes to distinct blocks do not interfere. A block never
/// written reads as zeros.
pub trait BlockDevice: Send + Sync + 'static {
    /// Number of logical blocks.
    fn block_count(&self) -> u64;

    /// Reads the run of blocks starting at `lbn` into `buf`.
    fn read_blocks(&self, lbn: u64, buf: &mut [u8]) -> io::Result<()>;

    /// Writes `buf` to the run of blocks starting at `lbn`. Not durable until [`Self::sync`].
    fn write_blocks(&self, lbn: u64, buf: &[u8]) -> io::Result<()>;

    /// Makes every write that completed before this call durable.
    fn sync(&self) -> io::Result<()>;
}

/// Checks the buffer and range rules of [`BlockDevice`]; an `InvalidInput` error otherwise.
pub fn check_run(dev_blocks: u64, lbn: u64, len: usize) -> io::Result<u64> {
    if len == 0 || !len.is_multiple_of(BLOCK_SIZE) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("buffer of {len} bytes is not a whole number of blocks"),
        ));
    }
    let count = (len / BLOCK_SIZE) as u64;
    match lbn.checked_add(count) {
        Some(end) if end <= dev_blocks => Ok(count),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("blocks {lbn}+{count} beyond the device's {dev_blocks} blocks"),
        )),
    }
}
