//! The superblock: where the metadata and data regions lie on the device.
//!
//! Logical block 0 holds the superblock. Byte layout (little endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `ATRESTFS` |
//! | 8 | 4 | format version (1) |
//! | 12 | 4 | reserved, zero |
//! | 16 | 8 | device block count at format |
//! | 24 | 8 | first block of the metadata region |
//! | 32 | 8 | blocks in the metadata region |
//! | 40 | 8 | first block of the data region |
//! | 48 | 8 | blocks in the data region |
//! | 56 | 8 | metadata store length in bytes (highest ever set) |
//! | 64 | 4 | CRC32C of bytes 0..64 |
//!
//! The rest of the block is zero.

use crate::BLOCK_SIZE;

use super::FsError;

const MAGIC: &[u8; 8] = b"ATRESTFS";
const VERSION: u32 = 1;
const CRC_OFFSET: usize = 64;

/// The validated contents of the superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Superblock {
    /// Device block count at format time.
    pub device_blocks: u64,
    /// First block of the metadata region.
    pub meta_start: u64,
    /// Blocks in the metadata region.
    pub meta_blocks: u64,
    /// First block of the data region.
    pub data_start: u64,
    /// Blocks in the data region.
    pub data_blocks: u64,
    /// Length in bytes of the metadata store, the highest it has ever been.
    pub meta_len: u64,
}

impl Superblock {
    /// Encodes the superblock into one block.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; BLOCK_SIZE];
        b[0..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        let fields = [
            self.device_blocks,
            self.meta_start,
            self.meta_blocks,
            self.data_start,
            self.data_blocks,
            self.meta_len,
        ];
        for (i, v) in fields.iter().enumerate() {
            b[16 + 8 * i..24 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        let crc = crc32c::crc32c(&b[..CRC_OFFSET]);
        b[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a superblock read from a device of `device_blocks` blocks.
    pub fn decode(b: &[u8], device_blocks: u64) -> Result<Superblock, FsError> {
        if b.len() < BLOCK_SIZE || &b[0..8] != MAGIC {
            return Err(FsError::Corrupt(
                "block 0 holds no atrest filesystem superblock".into(),
            ));
        }
        let word = |off: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[off..off + 8]);
            u64::from_le_bytes(w)
        };
        let mut v = [0u8; 4];
        v.copy_from_slice(&b[8..12]);
        let version = u32::from_le_bytes(v);
        if version != VERSION {
            return Err(FsError::Corrupt(format!(
                "superblock format version {version}, this build reads {VERSION}"
            )));
        }
        v.copy_from_slice(&b[CRC_OFFSET..CRC_OFFSET + 4]);
        let (stored, computed) = (u32::from_le_bytes(v), crc32c::crc32c(&b[..CRC_OFFSET]));
        if stored != computed {
            return Err(FsError::Corrupt(format!(
                "superblock checksum {stored:#x}, computed {computed:#x}"
            )));
        }
        let sb = Superblock {
            device_blocks: word(16),
            meta_start: word(24),
            meta_blocks: word(32),
            data_start: word(40),
            data_blocks: word(48),
            meta_len: word(56),
        };
        sb.validate(device_blocks)?;
        Ok(sb)
    }

    /// Checks that the regions are in order and fit the device.
    pub fn validate(&self, device_blocks: u64) -> Result<(), FsError> {
        let meta_end = self.meta_start.checked_add(self.meta_blocks);
        let data_end = self.data_start.checked_add(self.data_blocks);
        let ok = self.meta_start >= 1
            && meta_end.is_some_and(|e| e <= self.data_start)
            && data_end.is_some_and(|e| e <= device_blocks && e <= self.device_blocks)
            && self.meta_len <= self.meta_blocks * BLOCK_SIZE as u64;
        if ok {
            Ok(())
        } else {
            Err(FsError::Corrupt(format!(
                "superblock regions do not fit: metadata {}+{}, data {}+{}, store length {}, \
                 device {} blocks (formatted with {})",
                self.meta_start,
                self.meta_blocks,
                self.data_start,
                self.data_blocks,
                self.meta_len,
                device_blocks,
                self.device_blocks
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let sb = Superblock {
            device_blocks: 1000,
            meta_start: 1,
            meta_blocks: 100,
            data_start: 101,
            data_blocks: 899,
            meta_len: 8192,
        };
        let mut b = sb.encode();
        assert_eq!(Superblock::decode(&b, 1000).unwrap(), sb);
        assert!(Superblock::decode(&b, 500).is_err());
        b[30] ^= 1;
        assert!(Superblock::decode(&b, 1000).is_err());
    }
}
