//! Filesystem layer (placeholder signatures; the full layer lands from the `fs` branch).

use std::sync::Arc;

use crate::pool::BlockDevice;

/// Filesystem errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FsError(pub String);

/// Format options.
#[derive(Default, Clone)]
pub struct FormatOptions {
    /// Metadata blocks.
    pub metadata_blocks: Option<u64>,
}

/// Result of a check.
#[derive(Debug, Default)]
pub struct FsckReport {
    /// Problems found.
    pub problems: Vec<String>,
}

impl FsckReport {
    /// No problems.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The filesystem.
pub struct Fs {
    _dev: Arc<dyn BlockDevice>,
}

impl Fs {
    /// Formats.
    pub fn format(_dev: Arc<dyn BlockDevice>, _opts: &FormatOptions) -> Result<(), FsError> {
        Ok(())
    }
    /// Opens.
    pub fn open(dev: Arc<dyn BlockDevice>) -> Result<Fs, FsError> {
        Ok(Fs { _dev: dev })
    }
    /// Syncs.
    pub fn sync_all(&self) -> Result<(), FsError> {
        Ok(())
    }
    /// Checks.
    pub fn check(&self) -> Result<FsckReport, FsError> {
        Ok(FsckReport::default())
    }
    /// Used runs.
    pub fn used_blocks(&self) -> Result<Vec<(u64, u64)>, FsError> {
        Ok(vec![])
    }
}
