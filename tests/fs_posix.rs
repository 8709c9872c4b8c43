//! POSIX behaviour through a real kernel FUSE mount of an `Fs` over a `MemDevice`.
//!
//! Needs root and /dev/fuse. Every mount is unmounted by a guard, also when a test fails,
//! and the filesystem is checked after unmount.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use atrest::fs::{FormatOptions, Fs};
use atrest::fuse::{self, MountHandle, MountOptions};
use atrest::pool::MemDevice;
use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};

const MIB: u64 = 256;

/// Where file data goes between the mount's users and the daemon.
#[derive(Clone, Copy, PartialEq)]
enum Cache {
    /// Straight to the daemon (the default, FUSE direct_io).
    Direct,
    /// Through the page cache; writes reach the daemon at `write()`.
    Page,
    /// Through the page cache; writes reach the daemon at writeback.
    Writeback,
}

/// A mounted filesystem over memory, unmounted and checked on drop.
struct Mounted {
    fs: Arc<Fs>,
    handle: Option<MountHandle>,
    dir: tempfile::TempDir,
}

impl Mounted {
    fn new(blocks: u64, meta: u64, allow_other: bool) -> Mounted {
        Mounted::with(blocks, meta, allow_other, Cache::Direct)
    }

    /// [`Mounted::new`], with file data in the kernel's page cache or not.
    fn with(blocks: u64, meta: u64, allow_other: bool, cache: Cache) -> Mounted {
        let dev = Arc::new(MemDevice::new(blocks));
        Fs::format(
            dev.clone(),
            &FormatOptions {
                metadata_blocks: Some(meta),
            },
        )
        .unwrap();
        let fs = Arc::new(Fs::open(dev).unwrap());
        let dir = tempfile::tempdir().unwrap();
        let opts = MountOptions {
            allow_other,
            threads: 4,
            page_cache: cache != Cache::Direct,
            writeback_cache: cache == Cache::Writeback,
            ..Default::default()
        };
        let handle = fuse::mount(fs.clone(), dir.path(), &opts).unwrap();
        Mounted {
            fs,
            handle: Some(handle),
            dir,
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// Unmounts, then checks the filesystem.
    fn finish(mut self) {
        self.unmount();
        let r = self.fs.check().unwrap();
        assert!(r.is_clean(), "fsck after unmount: {:?}", r.problems);
    }

    fn unmount(&mut self) {
        if let Some(h) = self.handle.take() {
            let u = h.unmounter();
            // The kernel may still be releasing files: retry a busy unmount a few times.
            for _ in 0..50 {
                match u.try_unmount() {
                    Ok(()) => break,
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
            h.join().unwrap();
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            let _ = h.unmounter().unmount();
            let _ = h.join();
        }
    }
}

fn errno_of(e: std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

fn python(args: &[&str]) -> std::process::Output {
    Command::new("python3").args(args).output().unwrap()
}

#[test]
fn files_read_write_truncate_sparse_large() {
    files_read_write_truncate_sparse_large_with(Cache::Direct);
}

#[test]
fn files_read_write_truncate_sparse_large_page_cache() {
    files_read_write_truncate_sparse_large_with(Cache::Page);
}

#[test]
fn files_read_write_truncate_sparse_large_writeback_cache() {
    files_read_write_truncate_sparse_large_with(Cache::Writeback);
}

fn files_read_write_truncate_sparse_large_with(cache: Cache) {
    let m = Mounted::with(256 * MIB, 16 * MIB, false, cache);
    let p = m.path("f");
    let mut f = File::create(&p).unwrap();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 253) as u8).collect();
    f.write_all(&data).unwrap();
    f.seek(SeekFrom::Start(1000)).unwrap();
    f.write_all(b"middle").unwrap();
    f.sync_all().unwrap();
    f.sync_data().unwrap();
    drop(f);
    let back = fs::read(&p).unwrap();
    assert_eq!(back.len(), data.len());
    assert_eq!(&back[1000..1006], b"middle");
    assert!(back[..1000] == data[..1000] && back[1006..] == data[1006..]);

    // Append.
    let mut a = OpenOptions::new().append(true).open(&p).unwrap();
    a.write_all(b"tail").unwrap();
    drop(a);
    assert_eq!(fs::metadata(&p).unwrap().len(), 3_000_004);

    // Truncate down and up: the regrown part reads as zeros.
    let f = OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(5000).unwrap();
    f.set_len(20000).unwrap();
    drop(f);
    let back = fs::read(&p).unwrap();
    assert_eq!(back.len(), 20000);
    assert!(back[5000..].iter().all(|&b| b == 0));
    assert!(back[1006..5000] == data[1006..5000]);

    // A sparse file beyond 4 GiB: holes read as zeros, little space is used.
    let big = m.path("big");
    let mut f = File::create(&big).unwrap();
    let off = 5u64 << 30;
    f.seek(SeekFrom::Start(off)).unwrap();
    f.write_all(b"beyond 4 GiB").unwrap();
    f.seek(SeekFrom::Start(1 << 20)).unwrap();
    f.write_all(b"early").unwrap();
    drop(f);
    let md = fs::metadata(&big).unwrap();
    assert_eq!(md.len(), off + 12);
    // One block for the write past the end, one 64 KiB cluster for the write into a hole.
    assert!(
        md.blocks() <= (4096 + 65536) / 512,
        "sparse file uses {} sectors",
        md.blocks()
    );
    let mut f = File::open(&big).unwrap();
    let mut buf = vec![0u8; 64];
    f.seek(SeekFrom::Start(off - 20)).unwrap();
    f.read_exact(&mut buf[..32]).unwrap();
    assert!(buf[..20].iter().all(|&b| b == 0));
    assert_eq!(&buf[20..32], b"beyond 4 GiB");
    f.seek(SeekFrom::Start(3 << 30)).unwrap();
    f.read_exact(&mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
    drop(f);

    // Reading at and past the end.
    let mut f = File::open(m.path("f")).unwrap();
    f.seek(SeekFrom::Start(30000)).unwrap();
    assert_eq!(f.read(&mut buf).unwrap(), 0);
    drop(f);

    // statfs gives real figures.
    let st = nix::sys::statvfs::statvfs(m.dir.path()).unwrap();
    assert_eq!(st.block_size(), 4096);
    let total = m.fs.superblock().data_blocks;
    assert_eq!(st.blocks(), total);
    assert!(st.blocks_free() < total && st.blocks_free() > total / 2);
    assert!(st.files() > 0 && st.files_free() > 0);
    m.finish();
}

#[test]
fn namespace_and_errors() {
    let m = Mounted::new(64 * MIB, 8 * MIB, false);
    let d = m.path("d");
    fs::create_dir(&d).unwrap();
    assert_eq!(errno_of(fs::create_dir(&d).unwrap_err()), libc::EEXIST);
    fs::write(d.join("x"), b"x").unwrap();
    assert_eq!(errno_of(fs::remove_dir(&d).unwrap_err()), libc::ENOTEMPTY);
    assert_eq!(
        errno_of(fs::read(m.path("missing")).unwrap_err()),
        libc::ENOENT
    );
    assert_eq!(errno_of(fs::remove_file(&d).unwrap_err()), libc::EISDIR);
    assert_eq!(
        errno_of(fs::remove_dir(d.join("x")).unwrap_err()),
        libc::ENOTDIR
    );
    let long = "n".repeat(256);
    assert_eq!(
        errno_of(File::create(m.path(&long)).unwrap_err()),
        libc::ENAMETOOLONG
    );
    fs::create_dir_all(m.path("a/b/c")).unwrap();
    assert_eq!(fs::metadata(m.path("a")).unwrap().nlink(), 3);

    // Rename: over an existing file, across directories, into its own subtree.
    fs::write(m.path("one"), b"1").unwrap();
    fs::write(m.path("two"), b"2").unwrap();
    fs::rename(m.path("one"), m.path("two")).unwrap();
    assert_eq!(fs::read(m.path("two")).unwrap(), b"1");
    assert!(!m.path("one").exists());
    fs::rename(m.path("two"), m.path("a/b/two")).unwrap();
    assert_eq!(fs::read(m.path("a/b/two")).unwrap(), b"1");
    assert_eq!(
        errno_of(fs::rename(m.path("a"), m.path("a/b/c/a")).unwrap_err()),
        libc::EINVAL
    );
    fs::rename(m.path("a/b/c"), m.path("c2")).unwrap();
    assert_eq!(fs::metadata(m.path("a/b")).unwrap().nlink(), 2);
    fs::create_dir(m.path("emptydir")).unwrap();
    fs::rename(m.path("c2"), m.path("emptydir")).unwrap();
    assert_eq!(
        errno_of(fs::rename(m.path("d"), m.path("a")).unwrap_err()),
        libc::ENOTEMPTY
    );

    // renameat2 flags.
    fs::write(m.path("p"), b"p").unwrap();
    fs::write(m.path("q"), b"q").unwrap();
    let r = renameat2(
        AT_FDCWD,
        &m.path("p"),
        AT_FDCWD,
        &m.path("q"),
        RenameFlags::RENAME_NOREPLACE,
    );
    assert_eq!(r, Err(Errno::EEXIST));
    renameat2(
        AT_FDCWD,
        &m.path("p"),
        AT_FDCWD,
        &m.path("q"),
        RenameFlags::RENAME_EXCHANGE,
    )
    .unwrap();
    assert_eq!(fs::read(m.path("p")).unwrap(), b"q");
    assert_eq!(fs::read(m.path("q")).unwrap(), b"p");
    renameat2(
        AT_FDCWD,
        &m.path("d"),
        AT_FDCWD,
        &m.path("q"),
        RenameFlags::RENAME_EXCHANGE,
    )
    .unwrap();
    assert!(m.path("q").is_dir() && m.path("d").is_file());
    renameat2(
        AT_FDCWD,
        &m.path("p"),
        AT_FDCWD,
        &m.path("new"),
        RenameFlags::RENAME_NOREPLACE,
    )
    .unwrap();

    // Hard links, symlinks, fifos.
    fs::hard_link(m.path("new"), m.path("a/hl")).unwrap();
    let (m1, m2) = (
        fs::metadata(m.path("new")).unwrap(),
        fs::metadata(m.path("a/hl")).unwrap(),
    );
    assert_eq!((m1.ino(), m1.nlink()), (m2.ino(), 2));
    std::os::unix::fs::symlink("a/hl", m.path("sl")).unwrap();
    assert_eq!(fs::read_link(m.path("sl")).unwrap(), Path::new("a/hl"));
    assert_eq!(fs::read(m.path("sl")).unwrap(), b"q");
    nix::unistd::mkfifo(
        &m.path("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    let ft = fs::symlink_metadata(m.path("fifo")).unwrap();
    assert!(ft.file_type().is_fifo());
    assert_eq!(ft.mode() & 0o777, 0o640);
    fs::remove_file(m.path("new")).unwrap();
    assert_eq!(fs::metadata(m.path("a/hl")).unwrap().nlink(), 1);

    // chmod, chown, utimens.
    let f = m.path("a/hl");
    fs::set_permissions(&f, fs::Permissions::from_mode(0o604)).unwrap();
    assert_eq!(fs::metadata(&f).unwrap().mode() & 0o7777, 0o604);
    std::os::unix::fs::chown(&f, Some(1234), Some(5678)).unwrap();
    let md = fs::metadata(&f).unwrap();
    assert_eq!((md.uid(), md.gid()), (1234, 5678));
    let t = std::time::UNIX_EPOCH + Duration::new(1_000_000_000, 123_456_789);
    File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_modified(t)
        .unwrap();
    let md = fs::metadata(&f).unwrap();
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_000_000_000, 123_456_789));

    // Unlink of an open file: still readable and writable through the descriptor.
    let mut h = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(m.path("open"))
        .unwrap();
    h.write_all(&vec![9u8; 100_000]).unwrap();
    fs::remove_file(m.path("open")).unwrap();
    assert!(!m.path("open").exists());
    h.write_all(b"more").unwrap();
    h.seek(SeekFrom::Start(99_998)).unwrap();
    let mut b = [0u8; 6];
    h.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"\x09\x09more");
    drop(h);

    // Readdir sees exactly the names.
    let mut names: Vec<String> = fs::read_dir(m.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["a", "d", "emptydir", "fifo", "q", "sl"]);
    m.finish();
}

#[test]
fn xattrs() {
    let m = Mounted::new(32 * MIB, 4 * MIB, false);
    let f = m.path("x");
    fs::write(&f, b"").unwrap();
    let fp = f.to_str().unwrap();
    let script = r#"
import os, sys, errno
p = sys.argv[1]
os.setxattr(p, "user.color", b"blue")
os.setxattr(p, "user.size", b"x" * 3000)
assert os.getxattr(p, "user.color") == b"blue"
assert sorted(os.listxattr(p)) == ["user.color", "user.size"], os.listxattr(p)
try:
    os.setxattr(p, "user.color", b"red", os.XATTR_CREATE); sys.exit("create over existing")
except OSError as e:
    assert e.errno == errno.EEXIST, e
try:
    os.setxattr(p, "user.none", b"red", os.XATTR_REPLACE); sys.exit("replace of missing")
except OSError as e:
    assert e.errno == errno.ENODATA, e
os.setxattr(p, "user.color", b"red", os.XATTR_REPLACE)
assert os.getxattr(p, "user.color") == b"red"
os.removexattr(p, "user.color")
try:
    os.getxattr(p, "user.color"); sys.exit("removed attribute still there")
except OSError as e:
    assert e.errno == errno.ENODATA, e
assert os.listxattr(p) == ["user.size"]
print("ok")
"#;
    let out = python(&["-c", script, fp]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    m.finish();
}

#[test]
fn permissions_checked_by_kernel() {
    let m = Mounted::new(32 * MIB, 4 * MIB, true);
    fs::set_permissions(m.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(m.path("secret"), b"s").unwrap();
    fs::set_permissions(m.path("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(m.path("public"), b"p").unwrap();
    fs::set_permissions(m.path("public"), fs::Permissions::from_mode(0o644)).unwrap();
    let as_nobody = |args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(args)
            .output()
            .unwrap()
    };
    // The mount's parent temp dir is 0700: let others traverse it.
    let parent = m.dir.path();
    let parent_mode = fs::metadata(parent.parent().unwrap()).unwrap().mode();
    assert!(
        parent_mode & 0o001 != 0,
        "temp dir parent must be traversable"
    );
    let out = as_nobody(&["cat", m.path("public").to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"p");
    let out = as_nobody(&["cat", m.path("secret").to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"));
    let out = as_nobody(&["touch", m.path("newfile").to_str().unwrap()]);
    assert!(!out.status.success());
    m.finish();
}

/// The kernel leaves dropping set-user-ID and set-group-ID to the filesystem
/// (FUSE_HANDLE_KILLPRIV_V2): a write or truncate by a user without CAP_FSETID and any change
/// of owner drop them; the filesystem's own view (no kernel cache) is checked.
#[test]
fn setuid_bits_dropped_like_linux() {
    setuid_bits_dropped_like_linux_with(Cache::Direct);
}

#[test]
fn setuid_bits_dropped_like_linux_writeback_cache() {
    setuid_bits_dropped_like_linux_with(Cache::Writeback);
}

fn setuid_bits_dropped_like_linux_with(cache: Cache) {
    let m = Mounted::with(4096, 1024, true, cache);
    let mode_of = |name: &str| {
        let ino = fs::metadata(m.path(name)).unwrap().ino();
        m.fs.getattr(ino).unwrap().perm
    };
    let make = |name: &str, mode: u32| {
        fs::write(m.path(name), b"0123456789").unwrap();
        fs::set_permissions(m.path(name), fs::Permissions::from_mode(mode)).unwrap();
        assert_eq!(u32::from(mode_of(name)), mode, "{name}");
    };
    let as_nobody = |args: &[&str]| {
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let p = |name: &str| m.path(name).to_str().unwrap().to_string();

    // Write by nobody: set-user-ID goes, set-group-ID goes with group execute only.
    make("w-ug", 0o6777);
    make("w-g-noexec", 0o2666);
    for name in ["w-ug", "w-g-noexec"] {
        as_nobody(&[
            "sh",
            "-c",
            &format!("printf x | dd of={} conv=notrunc status=none", p(name)),
        ]);
    }
    assert_eq!(mode_of("w-ug"), 0o777);
    assert_eq!(mode_of("w-g-noexec"), 0o2666);
    assert_eq!(fs::read(m.path("w-ug")).unwrap(), b"x123456789");

    // Write and truncate by root (CAP_FSETID) keep them.
    make("root", 0o6777);
    OpenOptions::new()
        .write(true)
        .open(m.path("root"))
        .unwrap()
        .write_all(b"y")
        .unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(m.path("root"))
        .unwrap()
        .set_len(3)
        .unwrap();
    assert_eq!(mode_of("root"), 0o6777);

    // Truncate by nobody drops them.
    make("t", 0o4777);
    as_nobody(&["truncate", "-s", "2", &p("t")]);
    assert_eq!(mode_of("t"), 0o777);
    assert_eq!(fs::metadata(m.path("t")).unwrap().len(), 2);

    // A change of owner drops them, even by root; a directory keeps its set-group-ID.
    make("c", 0o6755);
    std::os::unix::fs::chown(m.path("c"), Some(65534), None).unwrap();
    assert_eq!(mode_of("c"), 0o755);
    fs::create_dir(m.path("d")).unwrap();
    fs::set_permissions(m.path("d"), fs::Permissions::from_mode(0o2775)).unwrap();
    std::os::unix::fs::chown(m.path("d"), Some(65534), None).unwrap();
    assert_eq!(mode_of("d"), 0o2775);
    m.finish();
}

#[test]
fn enospc_then_consistent() {
    enospc_then_consistent_with(Cache::Direct);
}

#[test]
fn enospc_then_consistent_writeback_cache() {
    enospc_then_consistent_with(Cache::Writeback);
}

fn enospc_then_consistent_with(cache: Cache) {
    let m = Mounted::with(6 * MIB, 2 * MIB, false, cache);
    let mut f = File::create(m.path("fill")).unwrap();
    let chunk = vec![5u8; 1 << 20];
    let mut written = 0u64;
    // Without the kernel's writeback cache write() itself fails; with it the error comes
    // from the write-back, which fsync reports.
    let err = loop {
        match f.write_all(&chunk).and_then(|()| f.sync_data()) {
            Ok(()) => written += chunk.len() as u64,
            Err(e) => break e,
        }
        assert!(written < 64 << 20, "device never filled");
    };
    assert_eq!(errno_of(err), libc::ENOSPC);
    drop(f);
    assert!(written >= 2 << 20);
    let st = nix::sys::statvfs::statvfs(m.dir.path()).unwrap();
    assert!(st.blocks_available() < 256);
    // Removing the file gives the space back.
    fs::remove_file(m.path("fill")).unwrap();
    fs::write(m.path("after"), vec![1u8; 1 << 20]).unwrap();
    assert_eq!(fs::read(m.path("after")).unwrap().len(), 1 << 20);
    let r = m.fs.check().unwrap();
    assert!(r.is_clean(), "{:?}", r.problems);
    m.finish();
}

#[test]
fn directory_with_100k_entries() {
    let m = Mounted::new(1024 * MIB, 512 * MIB, false);
    let d = m.path("many");
    fs::create_dir(&d).unwrap();
    let n = 100_000;
    let start = Instant::now();
    for i in 0..n {
        File::create(d.join(format!("entry-{i:06}"))).unwrap();
    }
    let created = start.elapsed();
    let start = Instant::now();
    let mut count = 0;
    let mut seen = std::collections::HashSet::new();
    for e in fs::read_dir(&d).unwrap() {
        let name = e.unwrap().file_name();
        assert!(seen.insert(name), "name listed twice");
        count += 1;
    }
    assert_eq!(count, n);
    let listed = start.elapsed();
    assert!(fs::metadata(d.join("entry-054321")).is_ok());
    let start = Instant::now();
    for i in 0..n {
        fs::remove_file(d.join(format!("entry-{i:06}"))).unwrap();
    }
    let removed = start.elapsed();
    fs::remove_dir(&d).unwrap();
    eprintln!("100k entries: create {created:?}, list {listed:?}, remove {removed:?}");
    assert_eq!(
        fs::read_dir(m.dir.path()).unwrap().count(),
        0,
        "root not empty after removing everything"
    );
    let _ = ErrorKind::NotFound;
    m.finish();
}

#[test]
fn create_flags_and_fsync_durability() {
    let m = Mounted::new(32 * MIB, 4 * MIB, false);
    let p = m.path("excl");
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&p)
        .unwrap();
    let e = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&p)
        .unwrap_err();
    assert_eq!(errno_of(e), libc::EEXIST);
    fs::write(&p, b"abc").unwrap();
    // O_TRUNC empties the file.
    OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    assert_eq!(fs::metadata(&p).unwrap().len(), 0);
    let d = File::open(m.dir.path()).unwrap();
    d.sync_all().unwrap();
    drop(d);
    m.finish();
}

/// The mount's read-ahead is raised from the kernel's 128 KiB to the configured window, and a
/// large file read through it comes back exactly.
#[test]
fn read_ahead_window_set() {
    // The window matters to reads through the page cache only.
    let m = Mounted::with(64 * MIB, 8 * MIB, false, Cache::Page);
    let dev = fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .rfind(|l| l.split(' ').nth(4) == Some(&*m.dir.path().to_string_lossy()))
        .and_then(|l| l.split(' ').nth(2).map(str::to_string))
        .expect("the mount is in the mount table");
    let kb = fs::read_to_string(format!("/sys/class/bdi/{dev}/read_ahead_kb")).unwrap();
    assert_eq!(kb.trim(), fuse::READ_AHEAD_KB.to_string());
    let data: Vec<u8> = (0..24u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    fs::write(m.path("big"), &data).unwrap();
    let mut back = Vec::new();
    File::open(m.path("big"))
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert!(
        back == data,
        "a sequential read with read-ahead returned other bytes"
    );
    m.finish();
}

/// Without the page cache (the default), shared writable mappings still work and are seen by
/// read() after msync, private mappings of a program run it, and a file read again after a
/// write through another descriptor shows the new bytes (nothing served from a stale cache).
#[test]
fn mmap_exec_and_rereads_without_page_cache() {
    let m = Mounted::new(64 * MIB, 8 * MIB, false);
    let p = m.path("mapped");
    fs::write(&p, vec![b'a'; 3 * 4096 + 100]).unwrap();
    let script = "import mmap, sys\n\
        with open(sys.argv[1], 'r+b') as f:\n\
        \x20   mm = mmap.mmap(f.fileno(), 0)\n\
        \x20   assert mm[5000] == ord('a'), mm[5000]\n\
        \x20   mm[4096:4101] = b'HELLO'\n\
        \x20   mm.flush()\n\
        \x20   mm.close()\n";
    let out = python(&["-c", script, p.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "shared mapping on the mount: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let back = fs::read(&p).unwrap();
    assert_eq!(back.len(), 3 * 4096 + 100);
    assert_eq!(&back[4096..4101], b"HELLO");
    assert!(back[..4096].iter().all(|&b| b == b'a'));

    // Read, overwrite through another descriptor, read again: the new bytes.
    let mut r = File::open(&p).unwrap();
    let mut first = vec![0u8; 4096];
    r.read_exact(&mut first).unwrap();
    let mut w = OpenOptions::new().write(true).open(&p).unwrap();
    w.write_all(&[b'z'; 4096]).unwrap();
    r.seek(SeekFrom::Start(0)).unwrap();
    r.read_exact(&mut first).unwrap();
    assert!(first.iter().all(|&b| b == b'z'));
    // Bytes changed behind the kernel show at the next read of the same descriptor: no page
    // cache holds the file's data.
    let ino = fs::metadata(&p).unwrap().ino();
    m.fs.write(ino, 0, b"QQ").unwrap();
    r.seek(SeekFrom::Start(0)).unwrap();
    r.read_exact(&mut first).unwrap();
    assert_eq!(&first[..3], b"QQz", "a read was served from the page cache");
    drop((r, w));

    // A program copied onto the mount runs from it (its text is mapped privately).
    let exe = m.path("true");
    fs::copy("/bin/true", &exe).unwrap();
    let st = Command::new(&exe).status().unwrap();
    assert!(st.success(), "/bin/true copied onto the mount did not run");
    m.finish();
}
