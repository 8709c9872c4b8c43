//! Shared helpers of the integration tests: temp volumes, running the real binary, mounts
//! that are always unmounted.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `atrest` binary built for these tests.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_atrest"))
}

/// Runs `atrest ARGS`, returning its output.
pub fn atrest(args: &[&str]) -> Output {
    atrest_env(args, &[])
}

/// Runs `atrest ARGS` with extra environment variables.
pub fn atrest_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args).env("RUST_LOG", "atrest=warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run atrest")
}

/// Asserts success and returns stdout.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "atrest failed: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts failure with exit code 1, no panic, and returns stderr.
pub fn fails(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "expected exit 1; stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    err
}

/// A volume in a temporary directory: state dir and drive images.
pub struct TestVolume {
    pub dir: tempfile::TempDir,
    pub drives: Vec<PathBuf>,
}

impl TestVolume {
    /// Formats `n` drives of `size` (e.g. "64M") with `replicas`.
    pub fn format(n: usize, size: &str, replicas: u32) -> TestVolume {
        Self::format_with(n, size, replicas, &[])
    }

    /// As [`TestVolume::format`], with extra `atrest format` arguments.
    pub fn format_with(n: usize, size: &str, replicas: u32, extra: &[&str]) -> TestVolume {
        let dir = tempfile::Builder::new()
            .prefix("atrest-test-")
            .tempdir()
            .expect("tempdir");
        let drives: Vec<PathBuf> = (0..n)
            .map(|i| dir.path().join(format!("d{i}.img")))
            .collect();
        let state = dir.path().join("state");
        let mut args: Vec<String> = vec!["format".into(), "--state-dir".into(), s(&state)];
        for d in &drives {
            args.push("--drive".into());
            args.push(s(d));
        }
        args.extend([
            "--drive-size".into(),
            size.into(),
            "--replicas".into(),
            replicas.to_string(),
        ]);
        args.extend(extra.iter().map(|a| a.to_string()));
        let argv: Vec<&str> = args.iter().map(|a| a.as_str()).collect();
        ok(&atrest(&argv));
        TestVolume { dir, drives }
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn state_str(&self) -> String {
        s(&self.state())
    }

    /// The single local master key file.
    pub fn key_file(&self) -> PathBuf {
        let mut keys: Vec<PathBuf> = std::fs::read_dir(self.state())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("master-")
            })
            .collect();
        assert_eq!(keys.len(), 1, "expected one key file, found {keys:?}");
        keys.pop().unwrap()
    }

    /// SHA-256 of every drive image, whole.
    pub fn image_hashes(&self) -> Vec<String> {
        self.drives.iter().map(|d| sha256_file(d, 0)).collect()
    }

    /// SHA-256 of every drive's data area (from the 1 MiB data offset).
    pub fn data_area_hashes(&self) -> Vec<String> {
        self.drives
            .iter()
            .map(|d| sha256_file(d, 1 << 20))
            .collect()
    }

    pub fn mount(&self) -> Mount {
        Mount::start(&self.state(), &self.dir.path().join("mnt"), &[])
    }

    pub fn fsck(&self) -> Output {
        atrest(&["fsck", "--state-dir", &self.state_str()])
    }
}

pub fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// SHA-256 (hex) of a file from `offset` to its end.
pub fn sha256_file(path: &Path, offset: u64) -> String {
    use sha2::Digest;
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).expect("open image");
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

/// Whether `path` is a mount point right now.
pub fn is_mounted(path: &Path) -> bool {
    let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(&*target.to_string_lossy()))
}

/// A running `atrest mount`. Dropping it unmounts and reaps the process, also when a test
/// fails.
pub struct Mount {
    pub child: Option<Child>,
    pub path: PathBuf,
}

impl Mount {
    /// Starts `atrest mount` and waits (at most 30 s) until the mount is live.
    pub fn start(state: &Path, mnt: &Path, extra: &[&str]) -> Mount {
        Self::try_start(state, mnt, extra, &[]).expect("mount")
    }

    pub fn try_start(
        state: &Path,
        mnt: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Mount, String> {
        std::fs::create_dir_all(mnt).unwrap();
        let mut cmd = Command::new(bin());
        cmd.arg("mount")
            .arg("--state-dir")
            .arg(state)
            .args(extra)
            .arg(mnt);
        if !extra.contains(&"--api") {
            cmd.arg("--no-api");
        }
        cmd.env("RUST_LOG", "atrest=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn atrest mount");
        let mut m = Mount {
            child: Some(child),
            path: mnt.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if is_mounted(mnt) {
                return Ok(m);
            }
            if let Some(status) = m.child.as_mut().unwrap().try_wait().unwrap() {
                let mut err = String::new();
                use std::io::Read;
                m.child
                    .take()
                    .unwrap()
                    .stderr
                    .unwrap()
                    .read_to_string(&mut err)
                    .ok();
                return Err(format!("atrest mount exited {status}: {err}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err("mount did not appear within 30 s".into())
    }

    /// Unmounts with `fusermount3 -u` and waits for a clean exit (status 0).
    pub fn unmount(mut self) {
        let status = self.stop();
        assert_eq!(status, Some(0), "atrest mount did not exit cleanly");
    }

    /// Kills the daemon with SIGKILL, leaving the mount to be cleaned up.
    pub fn kill9(mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().ok();
            c.wait().ok();
        }
        let _ = Command::new("fusermount3")
            .arg("-u")
            .arg(&self.path)
            .status();
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .stderr(Stdio::null())
            .status();
    }

    fn stop(&mut self) -> Option<i32> {
        let _ = Command::new("fusermount3")
            .arg("-u")
            .arg(&self.path)
            .stderr(Stdio::null())
            .status();
        let mut child = self.child.take()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(st) = child.try_wait().unwrap() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.kill().ok();
        child.wait().ok();
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .stderr(Stdio::null())
            .status();
        None
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
    }
}
