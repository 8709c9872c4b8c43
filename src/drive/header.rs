//! The drive header: its byte layout, checksum and validation. `docs/FORMAT.md` is the
//! reference; the offsets below are built one from the other in the same order.

use crate::crypto::{WRAP_NONCE_LEN, WRAPPED_KEY_LEN, WrappedKey};

/// Magic bytes at the start of each header slot.
pub const MAGIC: [u8; 8] = *b"ATRSTHDR";
/// The only header format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes reserved for one header slot on the drive.
pub const SLOT_SIZE: u64 = 4096;
/// Number of header slots (A and B).
pub const SLOT_COUNT: usize = 2;
/// Byte offset of the data area: 1 MiB, leaving room after the two slots for alignment.
pub const DATA_OFFSET: u64 = 1 << 20;
/// Longest master key id a header can hold.
pub const MAX_KEY_ID_LEN: usize = 64;

// Field offsets within a slot, each following the one before.
const OFF_MAGIC: usize = 0;
const OFF_VERSION: usize = OFF_MAGIC + 8;
const OFF_GENERATION: usize = OFF_VERSION + 4;
const OFF_VOLUME_ID: usize = OFF_GENERATION + 8;
const OFF_DRIVE_ID: usize = OFF_VOLUME_ID + 16;
const OFF_SLOT: usize = OFF_DRIVE_ID + 16;
const OFF_DRIVE_COUNT: usize = OFF_SLOT + 4;
const OFF_REPLICAS: usize = OFF_DRIVE_COUNT + 4;
const OFF_BLOCK_SIZE: usize = OFF_REPLICAS + 4;
const OFF_DATA_OFFSET: usize = OFF_BLOCK_SIZE + 4;
const OFF_DATA_BLOCKS: usize = OFF_DATA_OFFSET + 8;
const OFF_KEY_KIND: usize = OFF_DATA_BLOCKS + 8;
const OFF_KEY_ID_LEN: usize = OFF_KEY_KIND + 1;
const OFF_RESERVED: usize = OFF_KEY_ID_LEN + 1;
const OFF_KEY_ID: usize = OFF_RESERVED + 6;
/// End of the fields the wrap authenticates (everything before the nonce).
pub const AUTHENTICATED_LEN: usize = OFF_KEY_ID + MAX_KEY_ID_LEN;
const OFF_NONCE: usize = AUTHENTICATED_LEN;
const OFF_WRAPPED: usize = OFF_NONCE + WRAP_NONCE_LEN;
const OFF_CHECKSUM: usize = OFF_WRAPPED + WRAPPED_KEY_LEN;
/// Bytes of a slot in use: all fields and the checksum. The rest of the slot is zero.
pub const HEADER_LEN: usize = OFF_CHECKSUM + 4;

/// Where the master key that wraps this drive's data key lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum KeyKind {
    /// A root-only key file in the node's state directory.
    Local,
    /// A key held by a KMIP key server.
    Kms,
}

impl KeyKind {
    fn to_byte(self) -> u8 {
        match self {
            KeyKind::Local => 1,
            KeyKind::Kms => 2,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(KeyKind::Local),
            2 => Some(KeyKind::Kms),
            _ => None,
        }
    }
}

/// A validated drive header, as decoded from one slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriveHeader {
    /// Increases by one with every rewrite; the valid slot with the highest one wins.
    pub generation: u64,
    /// The volume this drive belongs to.
    pub volume_id: [u8; 16],
    /// This drive's own identity, made at format or replace time.
    pub drive_id: [u8; 16],
    /// The drive's position in the volume, 0-based.
    pub slot: u32,
    /// Number of drives in the volume.
    pub drive_count: u32,
    /// Copies of each logical block.
    pub replicas: u32,
    /// Byte offset of the data area.
    pub data_offset: u64,
    /// Number of 4 KiB blocks in the data area.
    pub data_blocks: u64,
    /// Where the wrapping master key lives.
    pub key_kind: KeyKind,
    /// Identifier of the wrapping master key.
    pub key_id: String,
    /// The data key, wrapped under the master key with the fields above as associated data.
    pub wrapped: WrappedKey,
}

/// Why a header slot was rejected. Each names the slot; the caller names the drive.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// All bytes zero: never written, or wiped.
    #[error("slot {slot} is blank")]
    Blank {
        /// Slot letter.
        slot: char,
    },
    /// No atrest magic.
    #[error("slot {slot} has no atrest header (magic {found:02x?})")]
    BadMagic {
        /// Slot letter.
        slot: char,
        /// Magic bytes found.
        found: [u8; 8],
    },
    /// Stored and computed checksums differ.
    #[error("slot {slot} checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum {
        /// Slot letter.
        slot: char,
        /// Checksum stored in the slot.
        stored: u32,
        /// Checksum of the bytes read.
        computed: u32,
    },
    /// A field holds a value this build cannot accept.
    #[error("slot {slot} field {field} is invalid: {detail}")]
    BadField {
        /// Slot letter.
        slot: char,
        /// Field name as in FORMAT.md.
        field: &'static str,
        /// What was found and what was wanted.
        detail: String,
    },
}

/// Letter of slot index `i` (A, B).
pub fn slot_letter(i: usize) -> char {
    if i == 0 { 'A' } else { 'B' }
}

fn get_u32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

fn get_u64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

fn get_array<const N: usize>(b: &[u8], off: usize) -> [u8; N] {
    b[off..off + N].try_into().expect("fixed length")
}

impl DriveHeader {
    /// The bytes the wrap authenticates: every field before the nonce, as encoded.
    pub fn associated_data(&self) -> Vec<u8> {
        self.encode()[..AUTHENTICATED_LEN].to_vec()
    }

    /// Encodes the header into one slot's bytes, checksum included.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; SLOT_SIZE as usize];
        b[OFF_MAGIC..OFF_MAGIC + 8].copy_from_slice(&MAGIC);
        b[OFF_VERSION..OFF_VERSION + 4].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[OFF_GENERATION..OFF_GENERATION + 8].copy_from_slice(&self.generation.to_le_bytes());
        b[OFF_VOLUME_ID..OFF_VOLUME_ID + 16].copy_from_slice(&self.volume_id);
        b[OFF_DRIVE_ID..OFF_DRIVE_ID + 16].copy_from_slice(&self.drive_id);
        b[OFF_SLOT..OFF_SLOT + 4].copy_from_slice(&self.slot.to_le_bytes());
        b[OFF_DRIVE_COUNT..OFF_DRIVE_COUNT + 4].copy_from_slice(&self.drive_count.to_le_bytes());
        b[OFF_REPLICAS..OFF_REPLICAS + 4].copy_from_slice(&self.replicas.to_le_bytes());
        let block_size = crate::BLOCK_SIZE as u32;
        b[OFF_BLOCK_SIZE..OFF_BLOCK_SIZE + 4].copy_from_slice(&block_size.to_le_bytes());
        b[OFF_DATA_OFFSET..OFF_DATA_OFFSET + 8].copy_from_slice(&self.data_offset.to_le_bytes());
        b[OFF_DATA_BLOCKS..OFF_DATA_BLOCKS + 8].copy_from_slice(&self.data_blocks.to_le_bytes());
        b[OFF_KEY_KIND] = self.key_kind.to_byte();
        let id = self.key_id.as_bytes();
        assert!(
            id.len() <= MAX_KEY_ID_LEN,
            "key id length checked by the caller"
        );
        b[OFF_KEY_ID_LEN] = id.len() as u8;
        b[OFF_KEY_ID..OFF_KEY_ID + id.len()].copy_from_slice(id);
        b[OFF_NONCE..OFF_NONCE + WRAP_NONCE_LEN].copy_from_slice(&self.wrapped.nonce);
        b[OFF_WRAPPED..OFF_WRAPPED + WRAPPED_KEY_LEN].copy_from_slice(&self.wrapped.sealed);
        let sum = crc32c::crc32c(&b[..OFF_CHECKSUM]);
        b[OFF_CHECKSUM..OFF_CHECKSUM + 4].copy_from_slice(&sum.to_le_bytes());
        b
    }

    /// Decodes and validates one slot's bytes. `slot_index` is 0 for A and 1 for B.
    pub fn decode(b: &[u8], slot_index: usize) -> Result<DriveHeader, HeaderError> {
        let slot = slot_letter(slot_index);
        let bad = |field: &'static str, detail: String| HeaderError::BadField {
            slot,
            field,
            detail,
        };
        if b.len() < HEADER_LEN {
            return Err(bad(
                "length",
                format!("{} bytes, need {HEADER_LEN}", b.len()),
            ));
        }
        if b[..HEADER_LEN].iter().all(|&x| x == 0) {
            return Err(HeaderError::Blank { slot });
        }
        let magic: [u8; 8] = get_array(b, OFF_MAGIC);
        if magic != MAGIC {
            return Err(HeaderError::BadMagic { slot, found: magic });
        }
        let stored = get_u32(b, OFF_CHECKSUM);
        let computed = crc32c::crc32c(&b[..OFF_CHECKSUM]);
        if stored != computed {
            return Err(HeaderError::Checksum {
                slot,
                stored,
                computed,
            });
        }

        // The checksum holds, so every field below is as written; still check each value
        // before use, since a header can be forged with a matching checksum.
        let version = get_u32(b, OFF_VERSION);
        if version != FORMAT_VERSION {
            return Err(bad(
                "format_version",
                format!("{version}, this build reads {FORMAT_VERSION}"),
            ));
        }
        let block_size = get_u32(b, OFF_BLOCK_SIZE);
        if block_size as usize != crate::BLOCK_SIZE {
            return Err(bad(
                "block_size",
                format!("{block_size}, expected {}", crate::BLOCK_SIZE),
            ));
        }
        let drive_count = get_u32(b, OFF_DRIVE_COUNT);
        if drive_count == 0 || drive_count > 1024 {
            return Err(bad(
                "drive_count",
                format!("{drive_count}, expected 1..=1024"),
            ));
        }
        let slot_no = get_u32(b, OFF_SLOT);
        if slot_no >= drive_count {
            return Err(bad(
                "drive_slot",
                format!("{slot_no}, volume has {drive_count} drives"),
            ));
        }
        let replicas = get_u32(b, OFF_REPLICAS);
        if replicas == 0 || replicas > drive_count {
            return Err(bad(
                "replicas",
                format!("{replicas}, expected 1..={drive_count}"),
            ));
        }
        let data_offset = get_u64(b, OFF_DATA_OFFSET);
        if data_offset != DATA_OFFSET {
            return Err(bad(
                "data_offset",
                format!("{data_offset}, expected {DATA_OFFSET}"),
            ));
        }
        let data_blocks = get_u64(b, OFF_DATA_BLOCKS);
        if data_blocks == 0 || data_blocks > (1u64 << 40) {
            return Err(bad(
                "data_blocks",
                format!("{data_blocks}, expected 1..=2^40"),
            ));
        }
        let key_kind = KeyKind::from_byte(b[OFF_KEY_KIND])
            .ok_or_else(|| bad("key_kind", format!("{}, expected 1 or 2", b[OFF_KEY_KIND])))?;
        let id_len = b[OFF_KEY_ID_LEN] as usize;
        if id_len == 0 || id_len > MAX_KEY_ID_LEN {
            return Err(bad(
                "key_id_len",
                format!("{id_len}, expected 1..={MAX_KEY_ID_LEN}"),
            ));
        }
        let key_id = std::str::from_utf8(&b[OFF_KEY_ID..OFF_KEY_ID + id_len])
            .map_err(|_| bad("key_id", "not UTF-8".into()))?
            .to_string();
        if b[OFF_RESERVED..OFF_KEY_ID].iter().any(|&x| x != 0)
            || b[OFF_KEY_ID + id_len..AUTHENTICATED_LEN]
                .iter()
                .any(|&x| x != 0)
        {
            return Err(bad("reserved", "non-zero padding".into()));
        }

        Ok(DriveHeader {
            generation: get_u64(b, OFF_GENERATION),
            volume_id: get_array(b, OFF_VOLUME_ID),
            drive_id: get_array(b, OFF_DRIVE_ID),
            slot: slot_no,
            drive_count,
            replicas,
            data_offset,
            data_blocks,
            key_kind,
            key_id,
            wrapped: WrappedKey {
                nonce: get_array(b, OFF_NONCE),
                sealed: get_array(b, OFF_WRAPPED),
            },
        })
    }
}

/// Field names and byte ranges, in order, for FORMAT.md and for the header tests.
pub const FIELDS: &[(&str, usize, usize)] = &[
    ("magic", OFF_MAGIC, 8),
    ("format_version", OFF_VERSION, 4),
    ("generation", OFF_GENERATION, 8),
    ("volume_id", OFF_VOLUME_ID, 16),
    ("drive_id", OFF_DRIVE_ID, 16),
    ("drive_slot", OFF_SLOT, 4),
    ("drive_count", OFF_DRIVE_COUNT, 4),
    ("replicas", OFF_REPLICAS, 4),
    ("block_size", OFF_BLOCK_SIZE, 4),
    ("data_offset", OFF_DATA_OFFSET, 8),
    ("data_blocks", OFF_DATA_BLOCKS, 8),
    ("key_kind", OFF_KEY_KIND, 1),
    ("key_id_len", OFF_KEY_ID_LEN, 1),
    ("reserved", OFF_RESERVED, 6),
    ("key_id", OFF_KEY_ID, MAX_KEY_ID_LEN),
    ("wrap_nonce", OFF_NONCE, WRAP_NONCE_LEN),
    ("wrapped_key", OFF_WRAPPED, WRAPPED_KEY_LEN),
    ("checksum", OFF_CHECKSUM, 4),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DriveHeader {
        DriveHeader {
            generation: 7,
            volume_id: [1; 16],
            drive_id: [2; 16],
            slot: 1,
            drive_count: 3,
            replicas: 2,
            data_offset: DATA_OFFSET,
            data_blocks: 1000,
            key_kind: KeyKind::Local,
            key_id: "local-abc".into(),
            wrapped: WrappedKey {
                nonce: [3; 12],
                sealed: [4; WRAPPED_KEY_LEN],
            },
        }
    }

    #[test]
    fn round_trip_and_layout() {
        let h = sample();
        let b = h.encode();
        assert_eq!(DriveHeader::decode(&b, 0).unwrap(), h);
        assert_eq!(HEADER_LEN, 252);
        let (_, last_off, last_len) = FIELDS[FIELDS.len() - 1];
        assert_eq!(last_off + last_len, HEADER_LEN);
        for w in FIELDS.windows(2) {
            assert_eq!(w[0].1 + w[0].2, w[1].1, "{} then {}", w[0].0, w[1].0);
        }
    }

    #[test]
    fn every_bit_flip_is_caught() {
        let b = sample().encode();
        for byte in 0..HEADER_LEN {
            for bit in 0..8 {
                let mut c = b.clone();
                c[byte] ^= 1 << bit;
                assert!(
                    DriveHeader::decode(&c, 1).is_err(),
                    "flip at {byte}.{bit} accepted"
                );
            }
        }
    }

    #[test]
    fn blank_and_short() {
        assert_eq!(
            DriveHeader::decode(&[0u8; 4096], 0),
            Err(HeaderError::Blank { slot: 'A' })
        );
        assert!(DriveHeader::decode(&[0u8; 10], 0).is_err());
    }
}
