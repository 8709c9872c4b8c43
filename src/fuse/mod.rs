//! FUSE adapter (placeholder signatures; the full adapter lands from the `fs` branch).

use std::io;
use std::path::Path;
use std::sync::Arc;

use crate::fs::Fs;

/// Mount options.
#[derive(Clone, Default)]
pub struct MountOptions {
    /// Name shown in mtab.
    pub fsname: String,
    /// Worker threads.
    pub threads: usize,
    /// Let other users in.
    pub allow_other: bool,
}

/// A mounted filesystem.
pub struct MountHandle;

/// Unmounts from another thread.
#[derive(Clone)]
pub struct Unmounter;

impl Unmounter {
    /// Unmounts.
    pub fn unmount(&self) {}
}

impl MountHandle {
    /// Unmounter.
    pub fn unmounter(&self) -> Unmounter {
        Unmounter
    }
    /// Waits for the unmount.
    pub fn join(self) -> io::Result<()> {
        Ok(())
    }
}

/// Mounts.
pub fn mount(_fs: Arc<Fs>, _mountpoint: &Path, _opts: &MountOptions) -> io::Result<MountHandle> {
    Err(io::Error::other("FUSE adapter not yet built"))
}
