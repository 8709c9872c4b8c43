//! Durable JSON files of the API's state directory (`STATE/api/`): each is replaced whole
//! through a temporary file, fsync, rename and a directory fsync, so a crash leaves either the
//! old or the new content.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The API's directory under the node's state directory.
pub fn api_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("api")
}

/// Creates `dir` (and its parents) with mode 0700 if it does not exist, and makes sure an
/// existing one is 0700 too.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

/// Writes `bytes` to `path` durably with mode 0600: temporary file, fsync, rename, fsync of
/// the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("state path has no parent"))?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other("state path has no name"))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));

    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);

    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

/// Serializes `value` and writes it with [`write_atomic`].
pub fn save_json<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Reads a JSON file; `Ok(None)` if it does not exist. A file that does not parse is an error
/// naming the file.
pub fn load_json<T: DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.json");
        assert_eq!(load_json::<Vec<u32>>(&p).unwrap(), None);
        save_json(&p, &vec![1u32, 2]).unwrap();
        assert_eq!(load_json::<Vec<u32>>(&p).unwrap(), Some(vec![1, 2]));
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        fs::write(&p, b"{nope").unwrap();
        assert!(load_json::<Vec<u32>>(&p).is_err());
    }
}
