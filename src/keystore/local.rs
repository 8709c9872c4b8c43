//! The local key store: one root-only file per master key in the state directory.

use std::fs;
use std::path::{Path, PathBuf};

use zeroize::Zeroize;

use super::{KeyStoreError, statedir};
use crate::crypto::{MasterKey, random_bytes};

const PREFIX: &str = "master-";
const SUFFIX: &str = ".key";

/// Master keys kept as files `master-<id>.key` (32 raw bytes, mode 0600) in a 0700 directory.
pub struct LocalStore {
    dir: PathBuf,
}

impl LocalStore {
    /// The store in state directory `dir`, which is checked to be root-only.
    pub fn open(dir: &Path) -> Result<LocalStore, KeyStoreError> {
        statedir::check_dir(dir)?;
        Ok(LocalStore {
            dir: dir.to_path_buf(),
        })
    }

    /// Path of the file for key `key_id`.
    pub fn key_path(&self, key_id: &str) -> PathBuf {
        self.dir.join(format!("{PREFIX}{key_id}{SUFFIX}"))
    }

    /// Makes a new random key, writes it durably (temp file, fsync, rename, directory fsync)
    /// and returns its id and the key.
    pub fn create_key(&self) -> Result<(String, MasterKey), KeyStoreError> {
        let mut id = [0u8; 8];
        random_bytes(&mut id)?;
        let key_id = format!("local-{}", hex::encode(id));
        let key = MasterKey::generate()?;
        statedir::write_atomic(&self.key_path(&key_id), key.expose_secret(), 0o600)?;
        tracing::info!(key_id, "created local master key");
        Ok((key_id, key))
    }

    /// Loads key `key_id`, refusing a file that others can read.
    pub fn load_key(&self, key_id: &str) -> Result<MasterKey, KeyStoreError> {
        let path = self.key_path(key_id);
        if !path.exists() {
            return Err(KeyStoreError::KeyNotFound {
                key_id: key_id.to_string(),
                detail: format!("no file {}", path.display()),
            });
        }
        statedir::check_secret_file(&path)?;
        let mut bytes = fs::read(&path).map_err(|source| KeyStoreError::Io {
            path: path.clone(),
            op: "read",
            source,
        })?;
        let key = MasterKey::from_bytes(&bytes).map_err(|_| KeyStoreError::Corrupt {
            path: path.clone(),
            detail: format!(
                "key file has {} bytes, expected {}",
                bytes.len(),
                MasterKey::LEN
            ),
        });
        bytes.zeroize();
        key
    }

    /// Whether a key file for `key_id` exists.
    pub fn has_key(&self, key_id: &str) -> bool {
        self.key_path(key_id).exists()
    }

    /// Destroys key `key_id`: overwrite, unlink, directory sync.
    pub fn destroy_key(&self, key_id: &str) -> Result<(), KeyStoreError> {
        statedir::destroy_file(&self.key_path(key_id))?;
        tracing::info!(key_id, "destroyed local master key");
        Ok(())
    }

    /// Ids of every key file present.
    pub fn key_ids(&self) -> Result<Vec<String>, KeyStoreError> {
        let rd = fs::read_dir(&self.dir).map_err(|source| KeyStoreError::Io {
            path: self.dir.clone(),
            op: "list",
            source,
        })?;
        let mut ids = Vec::new();
        for entry in rd.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(id) = name
                .strip_prefix(PREFIX)
                .and_then(|n| n.strip_suffix(SUFFIX))
            {
                ids.push(id.to_string());
            }
        }
        ids.sort();
        Ok(ids)
    }
}
