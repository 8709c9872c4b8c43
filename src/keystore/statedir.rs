//! The node's state directory: permission checks and durable file replacement.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::KeyStoreError;

fn io(path: &Path, op: &'static str) -> impl FnOnce(std::io::Error) -> KeyStoreError {
    let path = path.to_path_buf();
    move |source| KeyStoreError::Io { path, op, source }
}

/// Creates the state directory with mode 0700 if it does not exist, and checks it.
pub fn create(dir: &Path) -> Result<(), KeyStoreError> {
    if !dir.exists() {
        fs::create_dir_all(dir).map_err(io(dir, "create state directory"))?;
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(io(dir, "set mode 0700"))?;
    check_dir(dir)
}

/// Refuses a state directory that others can enter or that another user owns.
pub fn check_dir(dir: &Path) -> Result<(), KeyStoreError> {
    let md = fs::metadata(dir).map_err(io(dir, "open state directory"))?;
    if !md.is_dir() {
        return Err(KeyStoreError::Permissions {
            path: dir.to_path_buf(),
            detail: "is not a directory".into(),
        });
    }
    check_owner_mode(dir, &md, 0o700)
}

/// Refuses a key file that others can read or write, or that another user owns.
pub fn check_secret_file(path: &Path) -> Result<(), KeyStoreError> {
    let md = fs::symlink_metadata(path).map_err(io(path, "open key file"))?;
    if !md.is_file() {
        return Err(KeyStoreError::Permissions {
            path: path.to_path_buf(),
            detail: "is not a regular file".into(),
        });
    }
    check_owner_mode(path, &md, 0o600)
}

fn check_owner_mode(path: &Path, md: &fs::Metadata, allowed: u32) -> Result<(), KeyStoreError> {
    let uid = nix::unistd::geteuid().as_raw();
    if md.uid() != uid {
        return Err(KeyStoreError::Permissions {
            path: path.to_path_buf(),
            detail: format!("owned by uid {}, must be owned by uid {uid}", md.uid()),
        });
    }
    let mode = md.mode() & 0o777;
    if mode & !allowed != 0 {
        return Err(KeyStoreError::Permissions {
            path: path.to_path_buf(),
            detail: format!(
                "mode {mode:04o} gives access to group or others; must be {allowed:04o} \
                 (chmod {allowed:o} {})",
                path.display()
            ),
        });
    }
    Ok(())
}

/// Writes `bytes` to `path` durably and atomically: a temporary file of mode `mode` in the
/// same directory, fsync, rename over `path`, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyStoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp"));
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp, "create"))?;
    f.write_all(bytes).map_err(io(&tmp, "write"))?;
    f.sync_all().map_err(io(&tmp, "sync"))?;
    drop(f);
    fs::rename(&tmp, path).map_err(io(path, "rename into place"))?;
    sync_dir(dir)
}

/// Fsyncs a directory so that renames and unlinks in it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), KeyStoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir, "sync directory"))
}

/// Overwrites a file with zeros, syncs it, unlinks it and syncs its directory.
pub fn destroy_file(path: &Path) -> Result<(), KeyStoreError> {
    if let Ok(md) = fs::metadata(path) {
        let mut f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io(path, "open"))?;
        f.write_all(&vec![0u8; md.len() as usize])
            .map_err(io(path, "overwrite"))?;
        f.sync_all().map_err(io(path, "sync"))?;
        drop(f);
        fs::remove_file(path).map_err(io(path, "unlink"))?;
    }
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}
