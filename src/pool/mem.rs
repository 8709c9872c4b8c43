//! An in-memory [`BlockDevice`] that keeps synced and unsynced bytes apart.

use std::collections::HashMap;
use std::io;

use parking_lot::Mutex;

use super::{BlockDevice, check_run};
use crate::BLOCK_SIZE;

/// Blocks held in memory. Writes land in a "live" map and become durable on `sync`;
/// [`MemDevice::crash`] drops everything not yet synced, as a power cut would.
pub struct MemDevice {
    blocks: u64,
    state: Mutex<MemState>,
}

#[derive(Default)]
struct MemState {
    durable: HashMap<u64, Box<[u8; BLOCK_SIZE]>>,
    unsynced: HashMap<u64, Box<[u8; BLOCK_SIZE]>>,
    fail_after_writes: Option<u64>,
}

impl MemDevice {
    /// A zero-filled device of `blocks` blocks.
    pub fn new(blocks: u64) -> Self {
        MemDevice {
            blocks,
            state: Mutex::new(MemState::default()),
        }
    }

    /// Drops every unsynced write: the device now holds what was durable.
    pub fn crash(&self) {
        self.state.lock().unsynced.clear();
    }

    /// After `n` more block writes, every write and sync fails with an I/O error.
    pub fn fail_after_writes(&self, n: u64) {
        self.state.lock().fail_after_writes = Some(n);
    }

    /// Clears a failure set by [`Self::fail_after_writes`].
    pub fn heal(&self) {
        self.state.lock().fail_after_writes = None;
    }
}

fn injected() -> io::Error {
    io::Error::other("injected I/O failure")
}

impl BlockDevice for MemDevice {
    fn block_count(&self) -> u64 {
        self.blocks
    }

    fn read_blocks(&self, lbn: u64, buf: &mut [u8]) -> io::Result<()> {
        check_run(self.blocks, lbn, buf.len())?;
        let st = self.state.lock();
        for (i, chunk) in buf.chunks_exact_mut(BLOCK_SIZE).enumerate() {
            let b = lbn + i as u64;
            match st.unsynced.get(&b).or_else(|| st.durable.get(&b)) {
                Some(data) => chunk.copy_from_slice(&data[..]),
                None => chunk.fill(0),
            }
        }
        Ok(())
    }

    fn write_blocks(&self, lbn: u64, buf: &[u8]) -> io::Result<()> {
        check_run(self.blocks, lbn, buf.len())?;
        let mut st = self.state.lock();
        for (i, chunk) in buf.chunks_exact(BLOCK_SIZE).enumerate() {
            if let Some(left) = st.fail_after_writes.as_mut() {
                if *left == 0 {
                    return Err(injected());
                }
                *left -= 1;
            }
            let mut data = Box::new([0u8; BLOCK_SIZE]);
            data.copy_from_slice(chunk);
            st.unsynced.insert(lbn + i as u64, data);
        }
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        let mut st = self.state.lock();
        if st.fail_after_writes == Some(0) {
            return Err(injected());
        }
        let pending: Vec<_> = st.unsynced.drain().collect();
        st.durable.extend(pending);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_drops_unsynced() {
        let d = MemDevice::new(8);
        let a = vec![1u8; BLOCK_SIZE];
        let b = vec![2u8; BLOCK_SIZE];
        d.write_blocks(1, &a).unwrap();
        d.sync().unwrap();
        d.write_blocks(1, &b).unwrap();
        d.crash();
        let mut out = vec![0u8; BLOCK_SIZE];
        d.read_blocks(1, &mut out).unwrap();
        assert_eq!(out, a);
        assert!(d.read_blocks(8, &mut out).is_err());
    }
}
