//! Unit tests of the filesystem over a `MemDevice`, including crash loops.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng, rngs::StdRng};

use super::store::EXTENTS;
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
    fs.abandon();
    dev.crash();
    let fs = Fs::open(dev.clone()).unwrap();
    assert!(matches!(fs.getattr(ino), Err(FsError::NotFound)));
    clean(&fs);
}

/// What a file may hold after a crash: `None` means it must not exist.
type Allowed = Vec<Option<Vec<u8>>>;

/// Whether `got` is the durable content `a` with changes only where writes or truncates
/// since then `touched` it, and the length of `a` or of the newer state `b`.
fn mix_of(
    got: &Option<Vec<u8>>,
    a: &Option<Vec<u8>>,
    b: &Option<Vec<u8>>,
    touched: &[(usize, usize)],
) -> bool {
    let Some(g) = got else { return false };
    let len_ok = a.as_ref().is_some_and(|a| a.len() == g.len())
        || b.as_ref().is_some_and(|b| b.len() == g.len());
    let empty = Vec::new();
    let a = a.as_ref().unwrap_or(&empty);
    len_ok
        && g.iter().enumerate().all(|(i, &x)| {
            x == a.get(i).copied().unwrap_or(0) || touched.iter().any(|&(s, e)| s <= i && i < e)
        })
}

/// Random operations, fsyncs, injected write failures and power cuts: after each cut, every
/// name holds exactly what it held at the last successful sync (or, if a sync failed part
/// way, what it held at that sync or the one before), and the checker finds nothing.
#[test]
fn crash_loop() {
    for seed in [7, 1, 2, 3] {
        crash_rounds(seed);
    }
}

fn crash_rounds(seed: u64) {
    let dev = Arc::new(MemDevice::new(8 * MIB));
    Fs::format(
        dev.clone(),
        &FormatOptions {
            metadata_blocks: Some(2 * MIB),
        },
    )
    .unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let names: Vec<String> = (0..10).map(|i| format!("f{i}")).collect();
    // The durable state (each name's content or absence) and what else a failed sync allows.
    let mut durable: HashMap<String, Option<Vec<u8>>> = HashMap::new();
    let mut also: HashMap<String, Option<Vec<u8>>> = HashMap::new();
    // Byte ranges of each name written or truncated since the last durable point.
    let mut touched: HashMap<String, Vec<(usize, usize)>> = HashMap::new();
    let mut rounds = 0;
    let mut failed_round = false;
    while rounds < 400 && started.elapsed() < Duration::from_secs(20) {
        rounds += 1;
        let fs = Fs::open(dev.clone()).unwrap();
        clean(&fs);
        // Check every name against what may have survived, then adopt what did.
        let mut current: HashMap<String, Option<Vec<u8>>> = HashMap::new();
        for n in &names {
            let got = fs.lookup(ROOT_INO, n.as_bytes()).ok().map(|a| {
                let back = fs.read(a.ino, 0, (a.size + 1) as u32).unwrap();
                assert_eq!(back.len() as u64, a.size);
                back
            });
            let mut allowed: Allowed = vec![durable.get(n).cloned().flatten()];
            if let Some(a) = also.get(n) {
                allowed.push(a.clone());
            }
            // After a failed sync, data overwritten in place may have reached the device
            // while the metadata did not: each byte may come from either state.
            let t = touched.get(n).map(|v| v.as_slice()).unwrap_or(&[]);
            // Data overwritten in place may reach the device before the metadata does (any
            // device sync does that, even one inside a non-durable commit): bytes may differ
            // from the durable state only where this name was written or truncated since.
            let newer = allowed.last().cloned().flatten();
            let mixed = mix_of(&got, &allowed[0], &newer, t);
            if !(allowed.contains(&got) || mixed)
                && let (Some(g), Some(d)) = (&got, &allowed[0])
            {
                {
                    let a = fs.lookup(ROOT_INO, n.as_bytes()).unwrap();
                    eprintln!("after crash: extents {:?}", fs.extents_of(a.ino));
                    let bad: Vec<usize> = (0..g.len())
                        .filter(|&i| g[i] != d.get(i).copied().unwrap_or(0))
                        .collect();
                    eprintln!(
                        "differs at {} bytes, first {:?} last {:?}; got {:#x} want {:#x}; touched {t:?}",
                        bad.len(),
                        bad.first(),
                        bad.last(),
                        g[bad[0]],
                        d.get(bad[0]).copied().unwrap_or(0)
                    );
                }
            }
            assert!(
                allowed.contains(&got) || mixed,
                "seed {seed} round {rounds} (after {}, {} alternatives): {n} holds {:?} bytes, allowed {:?}",
                if failed_round {
                    "a failed sync"
                } else {
                    "a clean cut"
                },
                also.len(),
                got.as_ref().map(|g| g.len()),
                allowed
                    .iter()
                    .map(|a| a.as_ref().map(|v| v.len()))
                    .collect::<Vec<_>>()
            );
            current.insert(n.clone(), got);
        }
        durable = current.clone();
        also.clear();
        touched.clear();
        // Some rounds end in an injected write failure instead of a clean cut.
        let fail_at = if rng.random_bool(0.5) {
            Some(rng.random_range(1..400))
        } else {
            None
        };
        failed_round = false;
        if let Some(n) = fail_at {
            dev.fail_after_writes(n);
        }
        for _ in 0..50 {
            let name = names[rng.random_range(0..names.len())].clone();
            let op = rng.random_range(0..12);
            let res: Result<(), FsError> = (|| {
                match op {
                    0..=5 => {
                        let ino = match fs.lookup(ROOT_INO, name.as_bytes()) {
                            Ok(a) => a.ino,
                            Err(_) => {
                                let a = fs.mknod(
                                    ROOT_INO,
                                    name.as_bytes(),
                                    libc::S_IFREG | 0o644,
                                    0,
                                    0,
                                    0,
                                )?;
                                current.insert(name.clone(), Some(Vec::new()));
                                a.ino
                            }
                        };
                        let off = rng.random_range(0..60000usize);
                        let len = rng.random_range(1..40000usize);
                        let data = vec![rng.random::<u8>() | 1; len];
                        fs.write(ino, off as u64, &data)?;
                        let c = current.get_mut(&name).unwrap().as_mut().unwrap();
                        if c.len() < off + len {
                            c.resize(off + len, 0);
                        }
                        c[off..off + len].copy_from_slice(&data);
                        touched
                            .entry(name.clone())
                            .or_default()
                            .push((off, off + len));
                    }
                    6 => {
                        fs.unlink(ROOT_INO, name.as_bytes())?;
                        current.insert(name.clone(), None);
                    }
                    7 => {
                        let a = fs.lookup(ROOT_INO, name.as_bytes())?;
                        let size = rng.random_range(0..50000usize);
                        fs.setattr(
                            a.ino,
                            &SetAttr {
                                size: Some(size as u64),
                                ..Default::default()
                            },
                        )?;
                        current
                            .get_mut(&name)
                            .unwrap()
                            .as_mut()
                            .unwrap()
                            .resize(size, 0);
                        touched
                            .entry(name.clone())
                            .or_default()
                            .push((size, size.next_multiple_of(4096)));
                    }
                    8 if fail_at.is_none() => {
                        let to = names[rng.random_range(0..names.len())].clone();
                        fs.rename(
                            ROOT_INO,
                            name.as_bytes(),
                            ROOT_INO,
                            to.as_bytes(),
                            RenameMode::Replace,
                        )?;
                        if to != name {
                            let moved = current.insert(name.clone(), None).flatten();
                            current.insert(to, moved);
                        }
                    }
                    _ => {
                        let before = durable.clone();
                        if let Err(e) = fs.fsync(ROOT_INO, false) {
                            // Part way: either state may be what survives.
                            also = current.clone();
                            durable = before;
                            failed_round = true;
                            return Err(e);
                        }
                        durable = current.clone();
                        also.clear();
                        touched.clear();
                    }
                }
                Ok(())
            })();
            match res {
                Ok(()) => {}
                Err(FsError::NotFound) => {}
                Err(_) if fail_at.is_some() => break,
                Err(e) => panic!("round {rounds}: {e}"),
            }
        }
        if fail_at.is_none() {
            clean(&fs);
        }
        fs.abandon();
        dev.crash();
        dev.heal();
    }
    assert!(rounds >= 10, "only {rounds} rounds ran");
}

impl Fs {
    /// The extents of an inode: (file block, logical block, length).
    fn extents_of(&self, ino: u64) -> Vec<(u64, u64, u64)> {
        use redb::ReadableDatabase;
        self.inner.flush_batch().unwrap();
        let rx = self.inner.db.begin_read().unwrap();
        let t = rx.open_table(EXTENTS).unwrap();
        t.range((ino, 0)..=(ino, u64::MAX))
            .unwrap()
            .map(|r| {
                let (k, v) = r.unwrap();
                (k.value().1, v.value().0, v.value().1)
            })
            .collect()
    }
}

#[test]
fn overwrite_times_survive_sync() {
    let (dev, fs) = new_fs(16 * MIB, 4 * MIB);
    let ino = file(&fs, ROOT_INO, "t");
    fs.write(ino, 0, &[1u8; 8192]).unwrap();
    let before = fs.getattr(ino).unwrap().mtime;
    std::thread::sleep(Duration::from_millis(20));
    fs.write(ino, 100, b"in place").unwrap();
    let after = fs.getattr(ino).unwrap().mtime;
    assert!(after > before, "overwrite did not move mtime");
    fs.sync_all().unwrap();
    drop(fs);
    let fs = Fs::open(dev.clone()).unwrap();
    assert_eq!(fs.getattr(ino).unwrap().mtime, after);
    // An explicit time wins over a pending overwrite time.
    fs.write(ino, 0, b"x").unwrap();
    let old = std::time::UNIX_EPOCH + Duration::from_secs(1000);
    fs.setattr(
        ino,
        &SetAttr {
            mtime: Some(old),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(fs.getattr(ino).unwrap().mtime, old);
    fs.sync_all().unwrap();
    assert_eq!(fs.getattr(ino).unwrap().mtime, old);
    clean(&fs);
}

#[test]
fn pending_overwrite_time_shown_kept_on_failure_and_fsynced() {
    let (dev, fs) = new_fs(16 * MIB, 4 * MIB);
    let ino = file(&fs, ROOT_INO, "p");
    fs.write(ino, 0, &[1u8; 8192]).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    fs.write(ino, 10, b"in place").unwrap();
    let pending = fs.getattr(ino).unwrap().mtime;
    // A link reports the pending time too.
    assert_eq!(fs.link(ino, ROOT_INO, b"p2").unwrap().mtime, pending);
    // A setattr that fails inside its transaction gives the taken time back.
    let d = fs.mkdir(ROOT_INO, b"d", 0o755, 0, 0).unwrap().ino;
    std::thread::sleep(Duration::from_millis(20));
    fs.inner.touch(d);
    let dir_pending = fs.getattr(d).unwrap().mtime;
    let trunc = SetAttr {
        size: Some(0),
        ..Default::default()
    };
    assert!(matches!(fs.setattr(d, &trunc), Err(FsError::IsDir)));
    assert_eq!(fs.getattr(d).unwrap().mtime, dir_pending);
    assert_eq!(fs.getattr(ino).unwrap().mtime, pending);
    // fsync makes it durable: it survives a crash.
    fs.fsync(ino, true).unwrap();
    fs.abandon();
    dev.crash();
    let fs = Fs::open(dev.clone()).unwrap();
    assert_eq!(fs.getattr(ino).unwrap().mtime, pending);
    clean(&fs);
}

/// Rough cost of metadata operations without FUSE (run with --ignored --nocapture).
#[test]
#[ignore]
fn bench_create_stat_delete() {
    let (_d, fs) = new_fs(1024 * MIB, 256 * MIB);
    let n = 100_000;
    let t = Instant::now();
    for i in 0..n {
        let a = fs.mknod(
            ROOT_INO,
            format!("f{i}").as_bytes(),
            libc::S_IFREG | 0o644,
            0,
            0,
            0,
        );
        let a = a.unwrap();
        fs.open_handle(a.ino).unwrap();
        fs.release_handle(a.ino).unwrap();
    }
    let c = t.elapsed();
    let t = Instant::now();
    for i in 0..n {
        fs.lookup(ROOT_INO, format!("f{i}").as_bytes()).unwrap();
    }
    let s = t.elapsed();
    let t = Instant::now();
    for i in 0..n {
        fs.unlink(ROOT_INO, format!("f{i}").as_bytes()).unwrap();
    }
    eprintln!("100k: create {c:?}, lookup {s:?}, unlink {:?}", t.elapsed());
    let t = Instant::now();
    let ino = file(&fs, ROOT_INO, "big");
    let chunk = vec![3u8; 1 << 20];
    for i in 0..512u64 {
        fs.write(ino, i << 20, &chunk).unwrap();
    }
    let w = t.elapsed();
    let t = Instant::now();
    for i in 0..512u64 {
        fs.read(ino, i << 20, 1 << 20).unwrap();
    }
    let r = t.elapsed();
    let t = Instant::now();
    for i in 0..20000u64 {
        fs.write(ino, (i * 7919 % 131072) << 12, &chunk[..4096])
            .unwrap();
    }
    eprintln!(
        "512 MiB: write {w:?}, read {r:?}; 20k random 4k overwrites {:?}",
        t.elapsed()
    );
}

#[test]
fn security_xattrs_answered_from_memory_and_rebuilt_at_open() {
    let (dev, fs) = new_fs(16 * MIB, 4 * MIB);
    let (a, b) = (file(&fs, ROOT_INO, "a"), file(&fs, ROOT_INO, "b"));
    assert!(matches!(
        fs.getxattr(a, b"security.capability"),
        Err(FsError::NoAttr)
    ));
    fs.setxattr(a, b"security.capability", b"cap", false, false)
        .unwrap();
    fs.setxattr(a, b"security.selinux", b"ctx", false, false)
        .unwrap();
    fs.setxattr(b, b"user.x", b"1", false, false).unwrap();
    assert_eq!(fs.getxattr(a, b"security.capability").unwrap(), b"cap");
    assert!(matches!(
        fs.getxattr(b, b"security.capability"),
        Err(FsError::NoAttr)
    ));
    // One security xattr left: still answered from the table.
    fs.removexattr(a, b"security.capability").unwrap();
    assert!(matches!(
        fs.getxattr(a, b"security.capability"),
        Err(FsError::NoAttr)
    ));
    assert_eq!(fs.getxattr(a, b"security.selinux").unwrap(), b"ctx");
    fs.setxattr(b, b"security.capability", b"bcap", false, false)
        .unwrap();
    fs.sync_all().unwrap();
    drop(fs);
    // Reopened: the set is rebuilt from the xattrs table.
    let fs = Fs::open(dev.clone()).unwrap();
    assert_eq!(fs.getxattr(a, b"security.selinux").unwrap(), b"ctx");
    assert_eq!(fs.getxattr(b, b"security.capability").unwrap(), b"bcap");
    assert_eq!(fs.getxattr(b, b"user.x").unwrap(), b"1");
    fs.removexattr(a, b"security.selinux").unwrap();
    assert!(!fs.inner.may_have_security_xattr(a));
    assert!(fs.inner.may_have_security_xattr(b));
    assert!(matches!(
        fs.getxattr(a, b"security.selinux"),
        Err(FsError::NoAttr)
    ));
    clean(&fs);
}

/// Reads and overwrites served from the cached file maps agree with a model of the files
/// through writes that extend, fill holes and overwrite, truncates both ways, fallocate,
/// set-user-ID drops, unlink and re-create, and syncs, interleaved on three files.
#[test]
fn cached_file_maps_stay_coherent() {
    let (_d, fs) = new_fs(64 * MIB, 8 * MIB);
    let mut rng = StdRng::seed_from_u64(0x6d617073);
    // f3 starts with more extents than a cached map holds.
    let names = ["f0", "f1", "f2", "f3"];
    let mut inos: Vec<u64> = names.iter().map(|n| file(&fs, ROOT_INO, n)).collect();
    let mut model: Vec<Vec<u8>> = vec![Vec::new(); names.len()];
    let mut perms = vec![0o644u16; names.len()];
    let fragment = |ino: u64, m: &mut Vec<u8>| {
        for j in 0..100u64 {
            fs.write(ino, 2 * j * BLOCK_SIZE as u64, &[j as u8 + 1])
                .unwrap();
            m.resize(2 * j as usize * BLOCK_SIZE + 1, 0);
            m[2 * j as usize * BLOCK_SIZE] = j as u8 + 1;
        }
        assert!(fs.read(ino, 0, 900 * 1024).unwrap() == *m);
    };
    fragment(inos[3], &mut model[3]);
    for step in 0..4000u32 {
        let k = rng.random_range(0..names.len());
        let ino = inos[k];
        const SPAN: u64 = 96 * 1024;
        let span_of = |k: usize| if k == 3 { 800 * 1024 } else { SPAN };
        match rng.random_range(0..100) {
            0..40 => {
                let off = rng.random_range(0..span_of(k));
                let len = rng.random_range(1..20_000usize);
                let data: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                let kill = rng.random_bool(0.2);
                fs.write_killing(ino, off, &data, kill).unwrap();
                let m = &mut model[k];
                let end = off as usize + len;
                if m.len() < end {
                    m.resize(end, 0);
                }
                m[off as usize..end].copy_from_slice(&data);
                if kill {
                    let mut p = perms[k] & !(libc::S_ISUID as u16);
                    if p & (libc::S_IXGRP as u16) != 0 {
                        p &= !(libc::S_ISGID as u16);
                    }
                    perms[k] = p;
                }
            }
            40..75 => {
                let off = rng.random_range(0..span_of(k) + 8192);
                let len = rng.random_range(1..40_000u32);
                let got = fs.read(ino, off, len).unwrap();
                let m = &model[k];
                let want = if off as usize >= m.len() {
                    &[][..]
                } else {
                    &m[off as usize..(off as usize + len as usize).min(m.len())]
                };
                assert!(
                    got == want,
                    "step {step}: read of {names:?}[{k}] at {off}+{len}"
                );
            }
            75..83 => {
                let size = rng.random_range(span_of(k) / 2..span_of(k));
                let s = SetAttr {
                    size: Some(size),
                    ..SetAttr::default()
                };
                fs.setattr(ino, &s).unwrap();
                model[k].resize(size as usize, 0);
            }
            83..87 => {
                let off = rng.random_range(0..SPAN);
                let len = rng.random_range(1..30_000u64);
                fs.fallocate(ino, off, len).unwrap();
                let m = &mut model[k];
                if m.len() < (off + len) as usize {
                    m.resize((off + len) as usize, 0);
                }
            }
            87..92 => {
                let mode = if rng.random_bool(0.5) { 0o6755 } else { 0o644 };
                let s = SetAttr {
                    mode: Some(mode),
                    ..SetAttr::default()
                };
                fs.setattr(ino, &s).unwrap();
                perms[k] = mode as u16;
            }
            92..95 => {
                fs.unlink(ROOT_INO, names[k].as_bytes()).unwrap();
                inos[k] = file(&fs, ROOT_INO, names[k]);
                model[k].clear();
                perms[k] = 0o644;
                if k == 3 {
                    fragment(inos[3], &mut model[3]);
                }
            }
            _ => fs.sync_all().unwrap(),
        }
        let a = fs.getattr(inos[k]).unwrap();
        assert_eq!(
            a.size,
            model[k].len() as u64,
            "step {step}: size of {}",
            names[k]
        );
        assert_eq!(a.perm, perms[k], "step {step}: permissions of {}", names[k]);
    }
    clean(&fs);
}

/// A read into a kept buffer overwrites every byte it returns: holes come back as zeros
/// whatever the buffer held before.
#[test]
fn read_into_kept_buffer_zeroes_holes() {
    let (_d, fs) = new_fs(64 * MIB, 8 * MIB);
    let ino = file(&fs, ROOT_INO, "sparse");
    fs.write(ino, 5000, b"middle").unwrap();
    fs.write(ino, 40_000, b"end").unwrap();
    let mut buf = vec![0xaa; 64 * 1024];
    let got = fs.read_into(ino, 100, 40_000, &mut buf).unwrap().to_vec();
    let mut want = vec![0u8; 39_903];
    want[4900..4906].copy_from_slice(b"middle");
    want[39_900..].copy_from_slice(b"end");
    assert!(got == want);
    assert_eq!(fs.read_into(ino, 50_000, 10, &mut buf).unwrap(), b"");
    assert!(
        fs.read(ino, 0, 1 << 20).unwrap()[..5000]
            .iter()
            .all(|&b| b == 0)
    );
}

/// Time per 4 KiB write filling the holes of a sparse 64 MiB file in random order, and per
/// overwrite after (`cargo test --release --lib bench_hole_fill -- --ignored --nocapture`).
#[test]
#[ignore = "timing, run by hand"]
fn bench_hole_fill() {
    let (_d, fs) = new_fs(256 * MIB, 32 * MIB);
    let ino = file(&fs, ROOT_INO, "sparse");
    let blocks = 16_384u64;
    let s = SetAttr {
        size: Some(blocks * BLOCK_SIZE as u64),
        ..SetAttr::default()
    };
    fs.setattr(ino, &s).unwrap();
    let mut order: Vec<u64> = (0..blocks).collect();
    let mut rng = StdRng::seed_from_u64(7);
    for i in (1..order.len()).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    let data = vec![0x5au8; BLOCK_SIZE];
    for pass in ["fill", "overwrite"] {
        let t = Instant::now();
        for &b in &order {
            fs.write(ino, b * BLOCK_SIZE as u64, &data).unwrap();
        }
        let per = t.elapsed().as_secs_f64() * 1e6 / blocks as f64;
        println!("{pass}: {per:.2} us per 4 KiB write");
    }
}

/// A write into a hole inside a file maps its whole aligned cluster, and the blocks of the
/// cluster it does not cover read as zeros even where the blocks reused held another file's
/// data; the cluster stops at the end of file; later writes there allocate nothing.
#[test]
fn hole_writes_fill_their_cluster() {
    let (_d, fs) = new_fs(4 * MIB, 2 * MIB);
    // Fill the whole data region with bytes, then free it durably, so that every block
    // handed out next holds old ciphertext.
    let free0 = fs.statfs().unwrap().bfree;
    let junk = file(&fs, ROOT_INO, "junk");
    let bytes = vec![0xa5u8; free0 as usize * BLOCK_SIZE];
    fs.write(junk, 0, &bytes).unwrap();
    assert_eq!(fs.statfs().unwrap().bfree, 0);
    fs.unlink(ROOT_INO, b"junk").unwrap();
    fs.sync_all().unwrap();
    fs.sync_all().unwrap();
    assert_eq!(fs.statfs().unwrap().bfree, free0);

    let bs = BLOCK_SIZE as u64;
    let c = file::FILL_CLUSTER_BLOCKS;
    let ino = file(&fs, ROOT_INO, "sparse");
    // 2.5 clusters and 100 bytes.
    let size = (2 * c + c / 2) * bs + 100;
    let s = SetAttr {
        size: Some(size),
        ..SetAttr::default()
    };
    fs.setattr(ino, &s).unwrap();
    let mut model = vec![0u8; size as usize];
    let put = |fs: &Fs, model: &mut Vec<u8>, off: u64, data: &[u8]| {
        fs.write(ino, off, data).unwrap();
        model[off as usize..off as usize + data.len()].copy_from_slice(data);
    };
    // 10 bytes in the middle of block 3: the whole first cluster is mapped.
    put(&fs, &mut model, 3 * bs + 7, b"0123456789");
    assert_eq!(fs.getattr(ino).unwrap().blocks, c * bs / 512);
    // Into the last, partial cluster: mapped up to the block holding the end of file only.
    put(&fs, &mut model, (2 * c + 1) * bs, &[7u8; 5000]);
    assert_eq!(fs.getattr(ino).unwrap().blocks, (c + c / 2 + 1) * bs / 512);
    // Writes inside mapped clusters allocate nothing.
    put(&fs, &mut model, 0, &[1u8; 3]);
    put(&fs, &mut model, (c - 1) * bs, &[2u8; 4096]);
    put(&fs, &mut model, (2 * c + c / 2) * bs, &[3u8; 100]);
    assert_eq!(fs.getattr(ino).unwrap().blocks, (c + c / 2 + 1) * bs / 512);
    assert!(fs.read(ino, 0, size as u32 + 10).unwrap() == model);
    // A write straddling a mapped and an unmapped cluster maps the second one.
    put(&fs, &mut model, c * bs - 10, &[4u8; 20]);
    assert_eq!(
        fs.getattr(ino).unwrap().blocks,
        (2 * c + c / 2 + 1) * bs / 512
    );
    assert!(fs.read(ino, 0, size as u32 + 10).unwrap() == model);
    // A write past the end of file maps what it covers only.
    let far = 10 * c * bs;
    fs.write(ino, far, b"x").unwrap();
    assert_eq!(
        fs.getattr(ino).unwrap().blocks,
        (2 * c + c / 2 + 2) * bs / 512
    );
    model.resize(far as usize, 0);
    model.push(b'x');
    assert!(fs.read(ino, 0, model.len() as u32 + 10).unwrap() == model);
    fs.sync_all().unwrap();
    assert!(fs.read(ino, 0, model.len() as u32 + 10).unwrap() == model);
    clean(&fs);
}

/// With fewer free blocks than a cluster needs, a write into a hole still gets the blocks it
/// covers itself.
#[test]
fn hole_write_with_little_space_left_takes_its_own_blocks() {
    let (_d, fs) = new_fs(4 * MIB, 2 * MIB);
    let bs = BLOCK_SIZE as u64;
    let ino = file(&fs, ROOT_INO, "sparse");
    let s = SetAttr {
        size: Some(64 * file::FILL_CLUSTER_BLOCKS * bs),
        ..SetAttr::default()
    };
    fs.setattr(ino, &s).unwrap();
    let free = fs.statfs().unwrap().bfree;
    let filler = file(&fs, ROOT_INO, "filler");
    fs.write(filler, 0, &vec![1u8; (free - 3) as usize * BLOCK_SIZE])
        .unwrap();
    assert_eq!(fs.statfs().unwrap().bfree, 3);
    fs.write(ino, 5 * file::FILL_CLUSTER_BLOCKS * bs + 10, b"fits")
        .unwrap();
    fs.write(ino, 9 * file::FILL_CLUSTER_BLOCKS * bs, &[2u8; 8192])
        .unwrap();
    assert_eq!(fs.statfs().unwrap().bfree, 0);
    assert_eq!(fs.getattr(ino).unwrap().blocks, 3 * bs / 512);
    let err = fs.write(ino, 20 * file::FILL_CLUSTER_BLOCKS * bs, b"no room");
    assert!(matches!(err, Err(FsError::NoSpace)), "{err:?}");
    let back = fs
        .read(ino, 5 * file::FILL_CLUSTER_BLOCKS * bs, 16)
        .unwrap();
    assert_eq!(&back[10..14], b"fits");
    clean(&fs);
}
