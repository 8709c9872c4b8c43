//! Where the master key lives, and the rotation journal.
//!
//! The `local` store keeps each master key in a root-only file `master-<key id>.key` in the
//! node's state directory (mode 0700); the node refuses keys that anyone else can read. The
//! `kms` store (module `kmip`) fetches keys from a KMIP server and never writes them to disk.
//! The journal records a rotation in progress so that a cut-off rotation is rolled forward at
//! the next start. This module knows nothing of blocks or files.

pub mod journal;
pub mod kmip;
pub mod local;
pub mod statedir;

pub use journal::{Journal, RotationRecord};
pub use local::LocalStore;

use std::path::PathBuf;

/// Errors of the key store. None carries key bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyStoreError {
    /// A file or directory could not be read or written.
    #[error("{path}: {op}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// System error.
        source: std::io::Error,
    },
    /// A key file or the state directory is readable or writable by others.
    #[error("{path}: {detail}")]
    Permissions {
        /// The offending path.
        path: PathBuf,
        /// Mode or owner found and what is required.
        detail: String,
    },
    /// The key named by the volume is not in the store.
    #[error("master key {key_id} not found: {detail}")]
    KeyNotFound {
        /// The key id.
        key_id: String,
        /// Where it was looked for.
        detail: String,
    },
    /// A key file or journal is damaged.
    #[error("{path}: {detail}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// The random source failed.
    #[error("{0}")]
    Crypto(#[from] crate::crypto::CryptoError),
}
