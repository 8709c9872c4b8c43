//! Per-block checksums: one CRC-32C per block copy, kept in a region at the end of each
//! drive's data area (encrypted like any block) and cached in memory by the pool.

/// Checksums held by one block of the checksum region.
pub const SUMS_PER_BLOCK: u64 = 1024;

/// Splits a drive's data area of `data_blocks` blocks into the blocks that hold data and the
/// blocks of checksums after them: `(usable, sum_blocks)`.
pub fn split(data_blocks: u64) -> (u64, u64) {
    let sum_blocks = data_blocks.div_ceil(SUMS_PER_BLOCK + 1);
    (data_blocks - sum_blocks, sum_blocks)
}

/// The checksum of a block copy: CRC-32C over the physical block number (8 bytes,
/// little-endian) then the 4096 plaintext bytes. Never 0: 0 is stored for "no checksum" (a
/// block never written), so a computed 0 is stored as 1.
pub fn block_sum(pbn: u64, plain: &[u8]) -> u32 {
    let c = crc32c::crc32c_append(crc32c::crc32c(&pbn.to_le_bytes()), plain);
    if c == 0 { 1 } else { c }
}

/// Whether `plain`, read from physical block `pbn`, agrees with the stored checksum. A stored
/// 0 means the block was never written, which only an all-zero block agrees with.
pub fn sum_ok(stored: u32, pbn: u64, plain: &[u8]) -> bool {
    if stored == 0 {
        plain.iter().all(|&b| b == 0)
    } else {
        block_sum(pbn, plain) == stored
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_fits() {
        for d in [4096u64, 4097, 10_000, 1 << 20, (1 << 20) + 1025] {
            let (u, s) = split(d);
            assert_eq!(u + s, d);
            assert!(u.div_ceil(SUMS_PER_BLOCK) <= s);
        }
    }

    #[test]
    fn sums_bind_block_number() {
        let b = vec![9u8; 4096];
        assert_ne!(block_sum(1, &b), block_sum(2, &b));
        assert!(sum_ok(block_sum(1, &b), 1, &b));
        assert!(!sum_ok(0, 1, &b));
        assert!(sum_ok(0, 1, &[0u8; 4096]));
    }
}
