//! The volume configuration kept in the state directory (`volume.json`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::drive::KeyKind;
use crate::keystore::{KeyStoreError, statedir};

/// Name of the configuration file in the state directory.
pub const CONFIG_FILE: &str = "volume.json";

/// One drive of the volume as the node expects to find it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DriveEntry {
    /// Position in the volume.
    pub slot: u32,
    /// Image path.
    pub path: PathBuf,
    /// The drive id written in its header (hex).
    pub drive_id: String,
}

/// Which master key wraps the drives now.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyRef {
    /// Local or KMS.
    pub kind: KeyKind,
    /// Key id.
    pub key_id: String,
}

/// The node's record of its volume.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct VolumeConfig {
    /// Config format version.
    pub format: u32,
    /// Volume id (hex).
    pub volume_id: String,
    /// Copies of each block.
    pub replicas: u32,
    /// The drives in slot order.
    pub drives: Vec<DriveEntry>,
    /// The master key in force.
    pub key: KeyRef,
    /// When the volume was formatted (RFC 3339).
    pub created: String,
    /// When the master key was last rotated (RFC 3339 with nanoseconds), if ever.
    pub last_key_rotation_time: Option<String>,
    /// False while mounted; a start that finds it false knows the last run did not end
    /// cleanly and checks that the copies of every block in use agree.
    pub clean: bool,
    /// Why a key rotation is recommended (a drive was replaced), until the next rotation.
    #[serde(default)]
    pub rotation_recommended: Option<String>,
}

impl VolumeConfig {
    /// Path of the configuration in state directory `dir`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(CONFIG_FILE)
    }

    /// Loads the configuration of state directory `dir`.
    pub fn load(dir: &Path) -> Result<VolumeConfig, KeyStoreError> {
        let path = Self::path(dir);
        let bytes = std::fs::read(&path).map_err(|source| KeyStoreError::Io {
            path: path.clone(),
            op: "read volume configuration (is this an atrest state directory?)",
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|e| KeyStoreError::Corrupt {
            path,
            detail: format!("not a volume config: {e}"),
        })
    }

    /// Writes the configuration durably.
    pub fn store(&self, dir: &Path) -> Result<(), KeyStoreError> {
        let bytes = serde_json::to_vec_pretty(self).expect("serialisable");
        statedir::write_atomic(&Self::path(dir), &bytes, 0o600)
    }
}

/// Now as RFC 3339 with nanoseconds, in UTC.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("formattable")
}
