//! One raw drive image: its two header slots, its data area, and encrypted block I/O at
//! physical block numbers with this drive's data key.
//!
//! Opening a drive is two steps. [`SealedDrive::open`] reads both header slots and picks the
//! valid one with the highest generation; it needs no key. [`SealedDrive::unlock`] unwraps the
//! data key with a master key and gives a [`Drive`] that encrypts on write and decrypts on
//! read, the XTS tweak being the physical block number. This module knows nothing of other
//! drives or of files.

mod backend;
pub mod header;

pub use backend::{DriveBackend, FaultyBackend, FileBackend, FileIdentity};
pub use header::{DriveHeader, HeaderError, KeyKind};

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::BLOCK_SIZE;
use crate::crypto::{CryptoError, DataCipher, DataKey, MasterKey, unwrap_data_key, wrap_data_key};
use header::{DATA_OFFSET, SLOT_COUNT, SLOT_SIZE, slot_letter};

/// Smallest data area a drive may have: 16 MiB.
pub const MIN_DATA_BLOCKS: u64 = 4096;

/// Errors of the drive layer. Each names the drive by its path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriveError {
    /// The image could not be opened, read or written.
    #[error("drive {path}: {op}: {source}")]
    Io {
        /// Image path.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The system error.
        source: io::Error,
    },
    /// Neither header slot is valid.
    #[error("drive {path}: no valid header ({a}; {b})")]
    NoValidHeader {
        /// Image path.
        path: PathBuf,
        /// Why slot A was rejected.
        a: HeaderError,
        /// Why slot B was rejected.
        b: HeaderError,
    },
    /// The image is shorter than its header says.
    #[error("drive {path}: image is {found} bytes, header needs {needed} (truncated?)")]
    Truncated {
        /// Image path.
        path: PathBuf,
        /// Size found.
        found: u64,
        /// Size the header describes.
        needed: u64,
    },
    /// The master key does not open the wrapped data key.
    #[error(
        "drive {path}: data key does not unwrap with master key {key_id} (wrong key, or header \
         altered or copied from another drive)"
    )]
    Unwrap {
        /// Image path.
        path: PathBuf,
        /// Key id the header names.
        key_id: String,
    },
    /// A size or argument is out of range.
    #[error("drive {path}: {detail}")]
    Invalid {
        /// Image path.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
    /// The crypto layer failed (random source).
    #[error("drive {path}: {source}")]
    Crypto {
        /// Image path.
        path: PathBuf,
        /// Cause.
        source: CryptoError,
    },
}

/// The state of one header slot as read from the drive.
#[derive(Clone, Debug)]
pub enum SlotState {
    /// A valid header.
    Valid(DriveHeader),
    /// Rejected, with the reason.
    Invalid(HeaderError),
}

/// A drive whose headers have been read and validated, but whose data key is still wrapped.
pub struct SealedDrive {
    path: PathBuf,
    backend: Arc<dyn DriveBackend>,
    slots: [SlotState; SLOT_COUNT],
    current: DriveHeader,
}

/// Parameters of a drive being formatted or replaced.
pub struct NewDrive<'a> {
    /// Volume identity.
    pub volume_id: [u8; 16],
    /// Position of the drive in the volume.
    pub slot: u32,
    /// Drives in the volume.
    pub drive_count: u32,
    /// Copies of each block.
    pub replicas: u32,
    /// Data blocks on this drive.
    pub data_blocks: u64,
    /// The wrapping master key, its kind and id.
    pub master: &'a MasterKey,
    /// Where the master key lives.
    pub key_kind: KeyKind,
    /// Its id.
    pub key_id: &'a str,
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> DriveError + 'a {
    move |source| DriveError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// Reads both header slots of a backend, returning each one's state.
pub fn read_slots(path: &Path, backend: &dyn DriveBackend) -> Result<[SlotState; 2], DriveError> {
    let len = backend.len().map_err(io_err(path, "size"))?;
    let mut slots = Vec::with_capacity(SLOT_COUNT);
    for i in 0..SLOT_COUNT {
        let off = i as u64 * SLOT_SIZE;
        if len < off + SLOT_SIZE {
            slots.push(SlotState::Invalid(HeaderError::BadField {
                slot: slot_letter(i),
                field: "length",
                detail: format!("image is only {len} bytes"),
            }));
            continue;
        }
        let mut buf = vec![0u8; SLOT_SIZE as usize];
        backend
            .read_at(off, &mut buf)
            .map_err(io_err(path, "read header"))?;
        slots.push(match DriveHeader::decode(&buf, i) {
            Ok(h) => SlotState::Valid(h),
            Err(e) => SlotState::Invalid(e),
        });
    }
    let b = slots.pop().expect("two slots");
    let a = slots.pop().expect("two slots");
    Ok([a, b])
}

impl SealedDrive {
    /// Opens an image file read-write and reads its headers.
    pub fn open(path: &Path) -> Result<SealedDrive, DriveError> {
        let backend = FileBackend::open(path).map_err(io_err(path, "open"))?;
        Self::from_backend(path, Arc::new(backend))
    }

    /// Reads the headers of a drive behind any backend.
    pub fn from_backend(
        path: &Path,
        backend: Arc<dyn DriveBackend>,
    ) -> Result<SealedDrive, DriveError> {
        let slots = read_slots(path, backend.as_ref())?;
        let current = match (&slots[0], &slots[1]) {
            (SlotState::Valid(a), SlotState::Valid(b)) => {
                if b.generation > a.generation {
                    b.clone()
                } else {
                    a.clone()
                }
            }
            (SlotState::Valid(a), SlotState::Invalid(_)) => a.clone(),
            (SlotState::Invalid(_), SlotState::Valid(b)) => b.clone(),
            (SlotState::Invalid(a), SlotState::Invalid(b)) => {
                return Err(DriveError::NoValidHeader {
                    path: path.to_path_buf(),
                    a: a.clone(),
                    b: b.clone(),
                });
            }
        };
        let needed = DATA_OFFSET + current.data_blocks * BLOCK_SIZE as u64;
        let found = backend.len().map_err(io_err(path, "size"))?;
        if found < needed {
            return Err(DriveError::Truncated {
                path: path.to_path_buf(),
                found,
                needed,
            });
        }
        Ok(SealedDrive {
            path: path.to_path_buf(),
            backend,
            slots,
            current,
        })
    }

    /// The header in force: the valid slot with the highest generation.
    pub fn header(&self) -> &DriveHeader {
        &self.current
    }

    /// Both slots as read.
    pub fn slots(&self) -> &[SlotState; 2] {
        &self.slots
    }

    /// The image path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Unwraps the data key with `master` and gives the usable drive.
    pub fn unlock(self, master: &MasterKey) -> Result<Drive, DriveError> {
        let aad = self.current.associated_data();
        let key = unwrap_data_key(master, &aad, &self.current.wrapped).map_err(|_| {
            DriveError::Unwrap {
                path: self.path.clone(),
                key_id: self.current.key_id.clone(),
            }
        })?;
        Ok(Drive::assemble(
            self.path,
            self.backend,
            self.slots,
            self.current,
            &key,
        ))
    }
}

/// An unlocked drive: encrypted block I/O, and header rewrites for rotation.
pub struct Drive {
    path: PathBuf,
    backend: Arc<dyn DriveBackend>,
    cipher: DataCipher,
    /// Serialises header rewrites; block I/O never takes it.
    headers: Mutex<HeaderState>,
    data_blocks: u64,
}

struct HeaderState {
    /// Generation in each slot (0 when the slot is invalid).
    slot_generations: [u64; 2],
    current: DriveHeader,
    /// The unwrapped data key, kept so the header can be re-wrapped.
    key: DataKey,
}

impl Drive {
    fn assemble(
        path: PathBuf,
        backend: Arc<dyn DriveBackend>,
        slots: [SlotState; 2],
        current: DriveHeader,
        key: &DataKey,
    ) -> Drive {
        let generation_of = |s: &SlotState| match s {
            SlotState::Valid(h) => h.generation,
            SlotState::Invalid(_) => 0,
        };
        let key = DataKey::from_bytes(key.expose_secret()).expect("same length");
        Drive {
            cipher: DataCipher::new(&key),
            data_blocks: current.data_blocks,
            headers: Mutex::new(HeaderState {
                slot_generations: [generation_of(&slots[0]), generation_of(&slots[1])],
                current,
                key,
            }),
            path,
            backend,
        }
    }

    /// Formats a drive: makes a fresh data key, wraps it, and writes both header slots.
    /// The data area is left as it is (sparse zeros on a new image).
    pub fn create(
        path: &Path,
        backend: Arc<dyn DriveBackend>,
        new: &NewDrive<'_>,
    ) -> Result<Drive, DriveError> {
        let invalid = |detail: String| DriveError::Invalid {
            path: path.to_path_buf(),
            detail,
        };
        if new.key_id.is_empty() || new.key_id.len() > header::MAX_KEY_ID_LEN {
            return Err(invalid(format!("key id of {} bytes", new.key_id.len())));
        }
        if new.data_blocks < MIN_DATA_BLOCKS {
            return Err(invalid(format!(
                "data area of {} blocks is below the minimum of {MIN_DATA_BLOCKS}",
                new.data_blocks
            )));
        }
        let crypto = |source| DriveError::Crypto {
            path: path.to_path_buf(),
            source,
        };
        let key = DataKey::generate().map_err(crypto)?;
        let mut drive_id = [0u8; 16];
        crate::crypto::random_bytes(&mut drive_id).map_err(crypto)?;

        let mut header = DriveHeader {
            generation: 1,
            volume_id: new.volume_id,
            drive_id,
            slot: new.slot,
            drive_count: new.drive_count,
            replicas: new.replicas,
            data_offset: DATA_OFFSET,
            data_blocks: new.data_blocks,
            key_kind: new.key_kind,
            key_id: new.key_id.to_string(),
            wrapped: crate::crypto::WrappedKey {
                nonce: [0; 12],
                sealed: [0; 80],
            },
        };
        header.wrapped =
            wrap_data_key(new.master, &header.associated_data(), &key).map_err(crypto)?;
        let bytes = header.encode();
        for i in 0..SLOT_COUNT {
            backend
                .write_at(i as u64 * SLOT_SIZE, &bytes)
                .map_err(io_err(path, "write header"))?;
        }
        backend.sync().map_err(io_err(path, "sync"))?;
        let slots = [
            SlotState::Valid(header.clone()),
            SlotState::Valid(header.clone()),
        ];
        Ok(Drive::assemble(
            path.to_path_buf(),
            backend,
            slots,
            header,
            &key,
        ))
    }

    /// The image path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the image this drive was opened from is still there under its path: false once
    /// the file was deleted (no links left) or its path names another file (renamed or
    /// replaced). Always true for backends that have no file identity.
    pub fn image_present(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Some(id) = self.backend.identity() else {
            return true;
        };
        if id.nlink == 0 {
            return false;
        }
        match std::fs::metadata(&self.path) {
            Ok(m) => m.dev() == id.dev && m.ino() == id.ino,
            Err(_) => false,
        }
    }

    /// A copy of the header in force.
    pub fn header(&self) -> DriveHeader {
        self.headers.lock().current.clone()
    }

    /// Number of blocks in the data area.
    pub fn data_blocks(&self) -> u64 {
        self.data_blocks
    }

    fn check_range(&self, pbn: u64, len: usize) -> io::Result<()> {
        let count = (len / BLOCK_SIZE) as u64;
        if !len.is_multiple_of(BLOCK_SIZE)
            || pbn.checked_add(count).is_none_or(|e| e > self.data_blocks)
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "drive {}: blocks {pbn}+{count} outside the data area of {} blocks",
                    self.path.display(),
                    self.data_blocks
                ),
            ));
        }
        Ok(())
    }

    /// Reads and decrypts the run of physical blocks starting at `pbn` into `buf`.
    pub fn read_blocks(&self, pbn: u64, buf: &mut [u8]) -> io::Result<()> {
        self.check_range(pbn, buf.len())?;
        self.backend
            .read_at(DATA_OFFSET + pbn * BLOCK_SIZE as u64, buf)?;
        self.decrypt_blocks(pbn, buf);
        Ok(())
    }

    /// Reads the run of physical blocks starting at `pbn` into `buf` without decrypting it;
    /// pair with [`Self::decrypt_block`] for the blocks wanted.
    pub fn read_ciphertext(&self, pbn: u64, buf: &mut [u8]) -> io::Result<()> {
        self.check_range(pbn, buf.len())?;
        self.backend
            .read_at(DATA_OFFSET + pbn * BLOCK_SIZE as u64, buf)
    }

    /// Decrypts one block read from physical block `pbn` in place. A block of all zeros was
    /// never written (a sparse or freshly zeroed image) and reads as zeros: a real ciphertext
    /// block is all zeros with probability 2^-32768.
    pub fn decrypt_block(&self, pbn: u64, block: &mut [u8]) {
        self.decrypt_blocks(pbn, &mut block[..BLOCK_SIZE]);
    }

    /// Decrypts whole blocks read from the physical blocks from `pbn` on in place, runs of
    /// written blocks in one call; all-zero blocks stay zeros ([`Drive::decrypt_block`]).
    pub fn decrypt_blocks(&self, pbn: u64, buf: &mut [u8]) {
        let n = buf.len() / BLOCK_SIZE;
        let mut i = 0;
        while i < n {
            let never_written = |k: usize| {
                buf[k * BLOCK_SIZE..(k + 1) * BLOCK_SIZE]
                    .iter()
                    .all(|&b| b == 0)
            };
            if never_written(i) {
                i += 1;
                continue;
            }
            let mut e = i + 1;
            while e < n && !never_written(e) {
                e += 1;
            }
            self.cipher
                .decrypt_units(pbn + i as u64, &mut buf[i * BLOCK_SIZE..e * BLOCK_SIZE]);
            i = e;
        }
    }

    /// Encrypts `buf`, whole blocks meant for the physical blocks from `pbn` on, in place
    /// (no I/O; [`Drive::write_ciphertext`] writes it).
    pub fn encrypt_blocks(&self, pbn: u64, buf: &mut [u8]) {
        self.cipher.encrypt_units(pbn, buf);
    }

    /// Writes `buf`, already encrypted by [`Drive::encrypt_blocks`], to the run of physical
    /// blocks starting at `pbn`.
    pub fn write_ciphertext(&self, pbn: u64, buf: &[u8]) -> io::Result<()> {
        self.check_range(pbn, buf.len())?;
        self.backend
            .write_at(DATA_OFFSET + pbn * BLOCK_SIZE as u64, buf)
    }

    /// Encrypts `buf` in place and writes it to the run of physical blocks starting at `pbn`.
    /// On return `buf` holds ciphertext.
    pub fn write_blocks_in_place(&self, pbn: u64, buf: &mut [u8]) -> io::Result<()> {
        self.check_range(pbn, buf.len())?;
        self.cipher.encrypt_units(pbn, buf);
        self.backend
            .write_at(DATA_OFFSET + pbn * BLOCK_SIZE as u64, buf)
    }

    /// Makes completed writes durable.
    pub fn sync(&self) -> io::Result<()> {
        self.backend.sync()
    }

    /// Re-wraps the data key under `master` (rotation step 3 of DESIGN.md): the new header,
    /// one generation up, goes first into the slot holding the older generation and is
    /// synced, then into the other slot and synced. Afterwards no slot holds the old wrap.
    /// The data area is not touched. `after_slot` is called after each slot is synced (a test
    /// hook for cutting a rotation at every step).
    pub fn rewrap(
        &self,
        master: &MasterKey,
        key_kind: KeyKind,
        key_id: &str,
        after_slot: &mut dyn FnMut(usize),
    ) -> Result<(), DriveError> {
        let mut st = self.headers.lock();
        if key_id.is_empty() || key_id.len() > header::MAX_KEY_ID_LEN {
            return Err(DriveError::Invalid {
                path: self.path.clone(),
                detail: format!("key id of {} bytes", key_id.len()),
            });
        }
        let mut next = st.current.clone();
        next.generation = st.slot_generations.iter().max().copied().unwrap_or(0) + 1;
        next.key_kind = key_kind;
        next.key_id = key_id.to_string();
        next.wrapped =
            wrap_data_key(master, &next.associated_data(), &st.key).map_err(|source| {
                DriveError::Crypto {
                    path: self.path.clone(),
                    source,
                }
            })?;
        let bytes = next.encode();

        let older = if st.slot_generations[0] <= st.slot_generations[1] {
            0
        } else {
            1
        };
        for slot in [older, 1 - older] {
            self.backend
                .write_at(slot as u64 * SLOT_SIZE, &bytes)
                .map_err(io_err(&self.path, "write header"))?;
            self.backend
                .sync()
                .map_err(io_err(&self.path, "sync header"))?;
            st.slot_generations[slot] = next.generation;
            tracing::debug!(drive = %self.path.display(), slot = %slot_letter(slot),
                generation = next.generation, key_id, "header slot rewritten");
            after_slot(slot);
        }
        st.current = next;
        Ok(())
    }

    /// Rewrites both slots from the header in force if either is invalid or behind (a torn
    /// or damaged slot found at open). Returns whether anything was written.
    pub fn repair_slots(&self) -> Result<bool, DriveError> {
        let mut st = self.headers.lock();
        let g = st.current.generation;
        if st.slot_generations == [g, g] {
            return Ok(false);
        }
        let bytes = st.current.encode();
        for slot in 0..SLOT_COUNT {
            if st.slot_generations[slot] != g {
                self.backend
                    .write_at(slot as u64 * SLOT_SIZE, &bytes)
                    .map_err(io_err(&self.path, "write header"))?;
                self.backend
                    .sync()
                    .map_err(io_err(&self.path, "sync header"))?;
                st.slot_generations[slot] = g;
                tracing::warn!(drive = %self.path.display(), slot = %slot_letter(slot),
                    generation = g, "repaired header slot from the other slot");
            }
        }
        Ok(true)
    }
}
