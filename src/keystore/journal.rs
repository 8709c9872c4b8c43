//! The rotation journal: a small JSON file recording a rotation in progress.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{KeyStoreError, statedir};
use crate::drive::KeyKind;

/// One rotation: the key being retired and the key replacing it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationRecord {
    /// Kind of the old key.
    pub old_kind: KeyKind,
    /// Id of the old key.
    pub old_key_id: String,
    /// Kind of the new key.
    pub new_kind: KeyKind,
    /// Id of the new key.
    pub new_key_id: String,
    /// When the rotation started (RFC 3339).
    pub started: String,
}

/// The journal file `rotation.journal` in the state directory.
pub struct Journal {
    path: PathBuf,
}

impl Journal {
    /// The journal of state directory `dir`.
    pub fn new(dir: &Path) -> Journal {
        Journal {
            path: dir.join("rotation.journal"),
        }
    }

    /// Records a rotation durably (step 2 of the protocol).
    pub fn begin(&self, rec: &RotationRecord) -> Result<(), KeyStoreError> {
        let bytes = serde_json::to_vec_pretty(rec).expect("serialisable");
        statedir::write_atomic(&self.path, &bytes, 0o600)
    }

    /// The rotation in progress, if any.
    pub fn pending(&self) -> Result<Option<RotationRecord>, KeyStoreError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| KeyStoreError::Corrupt {
                        path: self.path.clone(),
                        detail: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(KeyStoreError::Io {
                path: self.path.clone(),
                op: "read",
                source,
            }),
        }
    }

    /// Removes the journal durably: the rotation is complete.
    pub fn finish(&self) -> Result<(), KeyStoreError> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(KeyStoreError::Io {
                    path: self.path.clone(),
                    op: "remove",
                    source,
                });
            }
        }
        statedir::sync_dir(self.path.parent().unwrap_or(Path::new(".")))
    }
}
