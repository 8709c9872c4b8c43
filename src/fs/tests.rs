//! Unit tests of the filesystem over a `MemDevice`, including crash loops.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng, rngs::StdRng};

use super::*;
use crate::pool::MemDevice;

const MIB: u64 = 1024 * 1024 / BLOCK_SIZE as u64;

fn new_fs(blocks: u64, meta: u64) -> (Arc<MemDevice>, Fs) {
    let dev = Arc::new(MemDevice::new(blocks));
    Fs::format(
        dev.clone(),
        &FormatOptions {
            metadata_blocks: Some(meta),
        },
    )
    .unwrap();
    let fs = Fs::open(dev.clone()).unwrap();
    (dev, fs)
}

fn clean(fs: &Fs) {
    let r = fs.check().unwrap();
    assert!(r.is_clean(), "fsck: {:?}", r.problems);
}

fn file(fs: &Fs, parent: u64, name: &str) -> u64 {
    fs.mknod(parent, name.as_bytes(), libc::S_IFREG | 0o644, 0, 0, 0)
        .unwrap()
        .ino
}

#[test]
fn create_write_read_truncate() {
    let (_d, fs) = new_fs(64 * MIB, 8 * MIB);
    let ino = file(&fs, ROOT_INO, "a");
    assert_eq!(fs.lookup(ROOT_INO, b"a").unwrap().ino, ino);
    assert!(matches!(
        fs.mknod(ROOT_INO, b"a", libc::S_IFREG, 0, 0, 0),
        Err(FsError::Exists)
    ));
    let data: Vec<u8> = (0..20000u32).map(|i| (i % 251) as u8).collect();
    fs.write(ino, 100, &data).unwrap();
    assert_eq!(fs.getattr(ino).unwrap().size, 20100);
    let back = fs.read(ino, 0, 30000).unwrap();
    assert_eq!(back.len(), 20100);
    assert!(back[..100].iter().all(|&b| b == 0));
    assert!(back[100..] == data[..]);
    // Overwrite in the middle, across a block boundary.
    fs.write(ino, 4090, b"0123456789ab").unwrap();
    assert_eq!(&fs.read(ino, 4090, 12).unwrap(), b"0123456789ab");
    // Sparse write far away.
    fs.write(ino, 10 << 20, b"end").unwrap();
    assert_eq!(fs.read(ino, (10 << 20) - 2, 10).unwrap(), b"\0\0end");
    assert_eq!(fs.getattr(ino).unwrap().blocks, 8 * 6);
    // Truncate down mid-block, then up: the tail reads as zeros.
    fs.setattr(
        ino,
        &SetAttr {
            size: Some(5000),
            ..Default::default()
        },
    )
    .unwrap();
    fs.setattr(
        ino,
        &SetAttr {
            size: Some(9000),
            ..Default::default()
        },
    )
    .unwrap();
    let back = fs.read(ino, 0, 9000).unwrap();
    let mut want = data[..4900].to_vec();
    want[3990..4002].copy_from_slice(b"0123456789ab");
    assert!(back[100..5000] == want[..]);
    assert!(back[5000..].iter().all(|&b| b == 0));
    clean(&fs);
    fs.sync_all().unwrap();
    clean(&fs);
}

#[test]
fn namespace_operations() {
    let (_d, fs) = new_fs(64 * MIB, 8 * MIB);
    let d = fs.mkdir(ROOT_INO, b"d", 0o755, 0, 0).unwrap().ino;
    let e = fs.mkdir(d, b"e", 0o755, 0, 0).unwrap().ino;
    assert_eq!(fs.getattr(ROOT_INO).unwrap().nlink, 3);
    assert_eq!(fs.getattr(d).unwrap().nlink, 3);
    let f = file(&fs, e, "f");
    fs.write(f, 0, b"hello").unwrap();
    assert!(matches!(fs.rmdir(ROOT_INO, b"d"), Err(FsError::NotEmpty)));
    assert!(matches!(fs.unlink(ROOT_INO, b"d"), Err(FsError::IsDir)));
    assert!(matches!(fs.rmdir(e, b"f"), Err(FsError::NotDir)));
    // Hard link and symlink.
    fs.link(f, ROOT_INO, b"hard").unwrap();
    assert_eq!(fs.getattr(f).unwrap().nlink, 2);
    let s = fs.symlink(ROOT_INO, b"sym", b"d/e/f", 0, 0).unwrap().ino;
    assert_eq!(fs.readlink(s).unwrap(), b"d/e/f");
    // Rename across directories, over an existing file, no-replace, exchange, into itself.
    fs.rename(e, b"f", ROOT_INO, b"moved", RenameMode::Replace)
        .unwrap();
    assert!(matches!(fs.lookup(e, b"f"), Err(FsError::NotFound)));
    let g = file(&fs, ROOT_INO, "g");
    assert!(matches!(
        fs.rename(ROOT_INO, b"g", ROOT_INO, b"moved", RenameMode::NoReplace),
        Err(FsError::Exists)
    ));
    fs.rename(ROOT_INO, b"g", ROOT_INO, b"moved", RenameMode::Replace)
        .unwrap();
    assert_eq!(fs.lookup(ROOT_INO, b"moved").unwrap().ino, g);
    assert_eq!(fs.getattr(f).unwrap().nlink, 1);
    fs.rename(ROOT_INO, b"moved", d, b"e", RenameMode::Exchange)
        .unwrap();
    assert_eq!(fs.lookup(d, b"e").unwrap().ino, g);
    assert_eq!(fs.lookup(ROOT_INO, b"moved").unwrap().ino, e);
    assert_eq!(fs.getattr(d).unwrap().nlink, 2);
    assert_eq!(fs.getattr(ROOT_INO).unwrap().nlink, 4);
    clean(&fs);
    assert!(matches!(
        fs.rename(ROOT_INO, b"d", d, b"x", RenameMode::Replace),
        Err(FsError::Invalid(_))
    ));
    assert!(matches!(
        fs.rename(ROOT_INO, b"moved", ROOT_INO, b"hard", RenameMode::Replace),
        Err(FsError::NotDir)
    ));
    // Directory over an empty directory.
    fs.mkdir(ROOT_INO, b"empty", 0o755, 0, 0).unwrap();
    fs.rename(ROOT_INO, b"moved", ROOT_INO, b"empty", RenameMode::Replace)
        .unwrap();
    // Xattrs.
    fs.setxattr(f, b"user.a", b"1", true, false).unwrap();
    assert!(matches!(
        fs.setxattr(f, b"user.a", b"2", true, false),
        Err(FsError::Exists)
    ));
    assert!(matches!(
        fs.setxattr(f, b"user.b", b"2", false, true),
        Err(FsError::NoAttr)
    ));
    fs.setxattr(f, b"user.b", b"22", false, false).unwrap();
    assert_eq!(fs.getxattr(f, b"user.b").unwrap(), b"22");
    assert_eq!(fs.listxattr(f).unwrap(), b"user.a\0user.b\0");
    fs.removexattr(f, b"user.a").unwrap();
    assert!(matches!(fs.getxattr(f, b"user.a"), Err(FsError::NoAttr)));
    // Readdir with offsets.
    let mut names = Vec::new();
    fs.readdir(ROOT_INO, 0, |e| {
        names.push(String::from_utf8(e.name).unwrap());
        false
    })
    .unwrap();
    names.sort();
    assert_eq!(names, [".", "..", "d", "empty", "hard", "sym"]);
    // Unlink of an open file: it lives until release.
    fs.open_handle(f).unwrap();
    fs.unlink(ROOT_INO, b"hard").unwrap();
    assert_eq!(fs.read(f, 0, 10).unwrap(), b"hello");
    clean(&fs);
    fs.release_handle(f).unwrap();
    assert!(matches!(fs.getattr(f), Err(FsError::NotFound)));
    clean(&fs);
}

#[test]
fn enospc_keeps_consistency() {
    let (_d, fs) = new_fs(4 * MIB, 2 * MIB);
    let ino = file(&fs, ROOT_INO, "big");
    let chunk = vec![7u8; 256 * 1024];
    let mut off = 0;
    let err = loop {
        match fs.write(ino, off, &chunk) {
            Ok(n) => off += n as u64,
            Err(e) => break e,
        }
        assert!(off < 8 << 20, "never ran out of space");
    };
    assert!(matches!(err, FsError::NoSpace), "{err}");
    clean(&fs);
    fs.unlink(ROOT_INO, b"big").unwrap();
    // The freed space comes back (after the durable commit the allocator forces).
    let ino = file(&fs, ROOT_INO, "again");
    fs.write(ino, 0, &chunk).unwrap();
    clean(&fs);
}

#[test]
fn orphans_are_reaped_after_crash() {
    let (dev, fs) = new_fs(16 * MIB, 4 * MIB);
    let ino = file(&fs, ROOT_INO, "o");
    fs.write(ino, 0, &[1u8; 10000]).unwrap();
    fs.open_handle(ino).unwrap();
    fs.unlink(ROOT_INO, b"o").unwrap();
    fs.sync_all().unwrap();
    std::mem::forget(fs);
    dev.crash();
    let fs = Fs::open(dev.clone()).unwrap();
    assert!(matches!(fs.getattr(ino), Err(FsError::NotFound)));
    clean(&fs);
}

/// Random operations with crashes: every file fsynced (and not touched since) reads back
/// exactly after the crash, and the checker finds nothing.
#[test]
fn crash_loop() {
    let dev = Arc::new(MemDevice::new(16 * MIB));
    Fs::format(
        dev.clone(),
        &FormatOptions {
            metadata_blocks: Some(4 * MIB),
        },
    )
    .unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    let started = Instant::now();
    // name -> (content, durable)
    let mut model: HashMap<String, (Vec<u8>, bool)> = HashMap::new();
    for round in 0..12 {
        if started.elapsed() > Duration::from_secs(60) {
            break;
        }
        let fs = Fs::open(dev.clone()).unwrap();
        clean(&fs);
        for (name, (content, durable)) in &model {
            if *durable {
                let a = fs
                    .lookup(ROOT_INO, name.as_bytes())
                    .unwrap_or_else(|e| panic!("round {round}: fsynced {name} lost: {e}"));
                let back = fs.read(a.ino, 0, content.len() as u32 + 10).unwrap();
                assert!(back == *content, "round {round}: fsynced {name} differs");
            }
        }
        // Files not durable may or may not exist; forget them in the model and the fs.
        model.retain(|_, v| v.1);
        let mut names: Vec<String> = Vec::new();
        fs.readdir(ROOT_INO, 2, |e| {
            names.push(String::from_utf8(e.name).unwrap());
            false
        })
        .unwrap();
        for n in names {
            if !model.contains_key(&n) {
                fs.unlink(ROOT_INO, n.as_bytes()).unwrap();
            }
        }
        for _ in 0..60 {
            let name = format!("f{}", rng.random_range(0..12));
            match rng.random_range(0..10) {
                0..=4 => {
                    let ino = match fs.lookup(ROOT_INO, name.as_bytes()) {
                        Ok(a) => a.ino,
                        Err(_) => file(&fs, ROOT_INO, &name),
                    };
                    let entry = model.entry(name.clone()).or_insert((Vec::new(), false));
                    let off = rng.random_range(0..40000usize);
                    let len = rng.random_range(1..30000usize);
                    let byte: u8 = rng.random();
                    let data = vec![byte; len];
                    fs.write(ino, off as u64, &data).unwrap();
                    if entry.0.len() < off + len {
                        entry.0.resize(off + len, 0);
                    }
                    entry.0[off..off + len].copy_from_slice(&data);
                    entry.1 = false;
                }
                5 => {
                    if fs.unlink(ROOT_INO, name.as_bytes()).is_ok() {
                        model.remove(&name);
                    }
                }
                6 => {
                    if let Ok(a) = fs.lookup(ROOT_INO, name.as_bytes()) {
                        let size = rng.random_range(0..20000usize);
                        fs.setattr(
                            a.ino,
                            &SetAttr {
                                size: Some(size as u64),
                                ..Default::default()
                            },
                        )
                        .unwrap();
                        if let Some(e) = model.get_mut(&name) {
                            e.0.resize(size, 0);
                            e.1 = false;
                        }
                    }
                }
                _ => {
                    if let Ok(a) = fs.lookup(ROOT_INO, name.as_bytes()) {
                        fs.fsync(a.ino, false).unwrap();
                        // fsync is a full sync here: every file is durable now.
                        for v in model.values_mut() {
                            v.1 = true;
                        }
                    }
                }
            }
        }
        clean(&fs);
        // Cut the power without any final sync.
        std::mem::forget(fs);
        dev.crash();
    }
}
