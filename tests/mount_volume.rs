//! The whole stack through the kernel: format, mount with FUSE, use the volume like a local
//! filesystem, unmount, scan the images for anything readable, remount and compare.

mod common;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

/// What a file or directory looked like, for comparison after a remount.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    nlink: u64,
    size: u64,
    content: Vec<u8>,
    xattrs: BTreeMap<String, Vec<u8>>,
}

fn xattr_list(p: &Path) -> BTreeMap<String, Vec<u8>> {
    let c = CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let mut names = vec![0u8; 4096];
    let n = unsafe_free_listxattr(&c, &mut names);
    let mut out = BTreeMap::new();
    for name in names[..n].split(|&b| b == 0).filter(|s| !s.is_empty()) {
        let name = String::from_utf8(name.to_vec()).unwrap();
        let v = xattr_get(p, &name);
        out.insert(name, v);
    }
    out
}

// The libc xattr calls, through `nix`-free std::process-less helpers: use the `xattr`
// syscalls via libc with owned buffers. (Tests may use unsafe; the crate itself may not.)
fn unsafe_free_listxattr(c: &CString, buf: &mut [u8]) -> usize {
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(n >= 0, "listxattr: {}", std::io::Error::last_os_error());
    n as usize
}

fn xattr_get(p: &Path, name: &str) -> Vec<u8> {
    let c = CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 65536];
    let len =
        unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(
        len >= 0,
        "getxattr {name}: {}",
        std::io::Error::last_os_error()
    );
    buf.truncate(len as usize);
    buf
}

fn xattr_set(p: &Path, name: &str, value: &[u8]) {
    let c = CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let rc = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "setxattr {name}: {}",
        std::io::Error::last_os_error()
    );
}

fn snapshot(root: &Path) -> BTreeMap<PathBuf, Seen> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let ft = md.file_type();
            let (kind, content) = if ft.is_dir() {
                stack.push(p.clone());
                ("dir", vec![])
            } else if ft.is_symlink() {
                (
                    "symlink",
                    std::fs::read_link(&p)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                )
            } else if ft.is_file() {
                ("file", std::fs::read(&p).unwrap())
            } else {
                ("other", vec![])
            };
            let xattrs = if ft.is_symlink() {
                BTreeMap::new()
            } else {
                xattr_list(&p)
            };
            out.insert(
                p.strip_prefix(root).unwrap().to_path_buf(),
                Seen {
                    kind,
                    mode: md.mode(),
                    uid: md.uid(),
                    gid: md.gid(),
                    mtime: (md.mtime(), md.mtime_nsec()),
                    nlink: md.nlink(),
                    size: md.size(),
                    content,
                    xattrs,
                },
            );
        }
    }
    out
}

/// Writes a tree whose names and contents carry unique markers. Returns the markers.
fn write_tree(root: &Path) -> Vec<String> {
    let tag = format!("{:016x}", rand::random::<u64>());
    let mut markers = Vec::new();
    let top = root.join(format!("secretdir-{tag}"));
    std::fs::create_dir(&top).unwrap();
    markers.push(format!("secretdir-{tag}"));
    for i in 0..20 {
        let name = format!("confidential-{tag}-{i}.txt");
        let body = format!("TOP-SECRET-PAYLOAD-{tag}-{i} ").repeat(50 + i * 300);
        let p = top.join(&name);
        std::fs::write(&p, &body).unwrap();
        markers.push(name);
        markers.push(format!("TOP-SECRET-PAYLOAD-{tag}-{i}"));
    }
    // A file larger than one extent, with a recognisable pattern.
    let big: Vec<u8> = (0..3 << 20)
        .map(|i: u32| b"ZEBRA-STRIPE-PATTERN"[(i % 20) as usize])
        .collect();
    std::fs::write(top.join("big.bin"), &big).unwrap();
    markers.push("ZEBRA-STRIPE-PATTERN".into());
    // Sparse file with a hole and data at a far offset.
    let f = std::fs::File::create(top.join("sparse.bin")).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(format!("FAR-AWAY-{tag}").as_bytes(), 40 << 20)
        .unwrap();
    markers.push(format!("FAR-AWAY-{tag}"));
    drop(f);

    let sub = top.join("sub");
    std::fs::create_dir(&sub).unwrap();
    std::os::unix::fs::symlink(format!("../symlink-target-{tag}"), sub.join("link")).unwrap();
    markers.push(format!("symlink-target-{tag}"));
    std::fs::hard_link(
        top.join(format!("confidential-{tag}-1.txt")),
        sub.join("hard"),
    )
    .unwrap();
    let x = top.join(format!("confidential-{tag}-2.txt"));
    xattr_set(&x, "user.secret", format!("XATTR-VALUE-{tag}").as_bytes());
    markers.push(format!("XATTR-VALUE-{tag}"));
    std::fs::set_permissions(&x, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(&x, Some(1234), Some(4321)).unwrap();
    let times = std::fs::FileTimes::new()
        .set_modified(std::time::UNIX_EPOCH + Duration::new(1_000_000_000, 123_456_789));
    std::fs::File::options()
        .write(true)
        .open(&x)
        .unwrap()
        .set_times(times)
        .unwrap();
    nix::unistd::mkfifo(
        &sub.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    // Sync everything through the mount.
    std::fs::File::open(&x).unwrap().sync_all().unwrap();
    nix::unistd::sync();
    markers
}

/// Searches every image for each needle; returns the needles found. Blocks of zeros (the
/// sparse, never written parts) are skipped; a needle may straddle two written blocks.
fn scan_images(images: &[PathBuf], needles: &[Vec<u8>]) -> Vec<String> {
    let longest = needles.iter().map(|n| n.len()).max().unwrap_or(0);
    let mut found = Vec::new();
    for img in images {
        let data = std::fs::read(img).unwrap();
        for (i, block) in data.chunks(4096).enumerate() {
            if block.iter().all(|&b| b == 0) {
                continue;
            }
            let start = i * 4096;
            let end = (start + 4096 + longest).min(data.len());
            let window = &data[start..end];
            for n in needles {
                if window.windows(n.len()).any(|w| w == &n[..]) {
                    found.push(format!(
                        "{} in {}",
                        String::from_utf8_lossy(n),
                        img.display()
                    ));
                }
            }
        }
    }
    found
}

#[test]
fn nothing_readable_on_the_images_and_everything_back_after_remount() {
    let v = TestVolume::format(3, "128M", 2);
    let m = v.mount();
    let markers = write_tree(&m.path);
    let before = snapshot(&m.path);
    assert!(before.len() >= 25, "tree not written: {}", before.len());
    m.unmount();

    let mut needles: Vec<Vec<u8>> = markers.iter().map(|s| s.as_bytes().to_vec()).collect();
    let key = std::fs::read(v.key_file()).unwrap();
    needles.push(key[..16].to_vec());
    needles.push(key[16..].to_vec());
    let found = scan_images(&v.drives, &needles);
    assert!(found.is_empty(), "readable on the images: {found:?}");

    let m = v.mount();
    let after = snapshot(&m.path);
    assert_eq!(before.len(), after.len());
    for (k, b) in &before {
        assert_eq!(
            Some(b),
            after.get(k),
            "{} differs after remount",
            k.display()
        );
    }
    m.unmount();
    let out = ok(&v.fsck());
    assert!(out.contains("clean"), "{out}");
}

#[test]
fn rotation_keeps_every_file() {
    let v = TestVolume::format(3, "64M", 2);
    let m = v.mount();
    write_tree(&m.path);
    let before = snapshot(&m.path);
    m.unmount();
    ok(&atrest(&["rotate-keys", "--state-dir", &v.state_str()]));
    for point in ["after-journal", "drive1-slot0", "after-config"] {
        let out = atrest_env(
            &["rotate-keys", "--state-dir", &v.state_str()],
            &[("ATREST_TEST_CRASH_POINT", point)],
        );
        assert_eq!(out.status.code(), Some(99), "{point}");
        let m = v.mount();
        assert_eq!(
            snapshot(&m.path),
            before,
            "files changed after a rotation cut at {point}"
        );
        m.unmount();
    }
    ok(&v.fsck());
}

/// `kill -9` of the daemon in the middle of a write-and-fsync workload: every file whose
/// fsync returned reads back exactly after a remount, and fsck is clean.
#[test]
fn kill9_during_fsync_workload_loses_nothing_fsynced() {
    use std::io::Write;
    let v = TestVolume::format(3, "128M", 2);
    for round in 0..2 {
        let m = v.mount();
        let dir = m.path.join(format!("round{round}"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::File::open(&m.path).unwrap().sync_all().unwrap();
        let dir2 = dir.clone();
        let writer = std::thread::spawn(move || {
            let mut synced: Vec<(PathBuf, Vec<u8>)> = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(3);
            let mut i = 0u64;
            while Instant::now() < deadline && i < 5000 {
                let p = dir2.join(format!("f{i}"));
                let body: Vec<u8> = (0..(1000 + (i * 7919) % 200_000))
                    .map(|b| (b * 31 + i) as u8)
                    .collect();
                let r = (|| -> std::io::Result<()> {
                    let mut f = std::fs::File::create(&p)?;
                    f.write_all(&body)?;
                    f.sync_all()?;
                    std::fs::File::open(&dir2)?.sync_all()
                })();
                if r.is_err() {
                    break;
                }
                synced.push((p, body));
                i += 1;
            }
            synced
        });
        std::thread::sleep(Duration::from_millis(1500));
        m.kill9();
        let synced = writer.join().unwrap();
        assert!(
            synced.len() > 5,
            "workload made too little progress: {}",
            synced.len()
        );

        let m = v.mount();
        for (p, body) in &synced {
            let got = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert!(got == *body, "{} differs after kill -9", p.display());
        }
        m.unmount();
        let out = ok(&v.fsck());
        assert!(out.contains("clean"), "{out}");
    }
}
