//! The pool on real image files: pull and reinsert, crash while degraded, replace, I/O errors,
//! corruption found by the checksums, scrub, R=1 EIO, and I/O going on during a pull.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use atrest::BLOCK_SIZE;
use atrest::crypto::MasterKey;
use atrest::drive::header::DATA_OFFSET;
use atrest::drive::{
    Drive, DriveBackend, FaultyBackend, FileBackend, KeyKind, NewDrive, SealedDrive,
};
use atrest::pool::{BlockDevice, Pool, PoolOptions, SlotInit, SlotState};

const BLOCKS: u64 = 4096;
const WAIT: Duration = Duration::from_secs(60);

/// A block of content that depends on the block number and a version.
fn pattern(lbn: u64, ver: u64) -> Vec<u8> {
    let mut x =
        lbn.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ver.wrapping_mul(0xD1B5_4A32_D192_ED03) | 1;
    let mut b = vec![0u8; BLOCK_SIZE];
    for c in b.chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes());
    }
    b
}

struct Vol {
    dir: tempfile::TempDir,
    master: MasterKey,
    volume_id: [u8; 16],
    n: u32,
    r: u32,
    paths: Vec<PathBuf>,
}

impl Vol {
    fn new(n: u32, r: u32) -> Vol {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("state")).unwrap();
        Vol {
            master: MasterKey::from_bytes(&[7u8; 32]).unwrap(),
            volume_id: [n as u8; 16],
            paths: (0..n)
                .map(|i| dir.path().join(format!("d{i}.img")))
                .collect(),
            dir,
            n,
            r,
        }
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Formats the image of `slot` at `path` and returns the drive.
    fn format_at(&self, slot: u32, path: &Path, backend: Option<Arc<FaultyBackend>>) -> Arc<Drive> {
        let f = std::fs::File::create(path).unwrap();
        f.set_len(DATA_OFFSET + BLOCKS * BLOCK_SIZE as u64).unwrap();
        let be: Arc<dyn DriveBackend> = match backend {
            Some(b) => b,
            None => Arc::new(FileBackend::open(path).unwrap()),
        };
        Arc::new(
            Drive::create(
                path,
                be,
                &NewDrive {
                    volume_id: self.volume_id,
                    slot,
                    drive_count: self.n,
                    replicas: self.r,
                    data_blocks: BLOCKS,
                    master: &self.master,
                    key_kind: KeyKind::Local,
                    key_id: "test",
                },
            )
            .unwrap(),
        )
    }

    fn format(&self) -> Vec<Arc<Drive>> {
        (0..self.n)
            .map(|i| self.format_at(i, &self.paths[i as usize], None))
            .collect()
    }

    fn open_drive(&self, slot: usize) -> Arc<Drive> {
        Arc::new(
            SealedDrive::open(&self.paths[slot])
                .unwrap()
                .unlock(&self.master)
                .unwrap(),
        )
    }

    fn faulty(&self, slot: usize) -> (Arc<FaultyBackend>, Arc<Drive>) {
        let fb = Arc::new(FaultyBackend::new(Arc::new(
            FileBackend::open(&self.paths[slot]).unwrap(),
        )));
        let d = SealedDrive::from_backend(&self.paths[slot], fb.clone())
            .unwrap()
            .unlock(&self.master)
            .unwrap();
        (fb, Arc::new(d))
    }

    fn pool(&self, slots: Vec<SlotInit>, unclean: bool) -> Pool {
        Pool::open(
            slots,
            self.r,
            PoolOptions {
                state_dir: Some(self.state_dir()),
                watch_interval: None,
                after_unclean_stop: unclean,
            },
        )
        .unwrap()
    }

    fn present(drives: Vec<Arc<Drive>>) -> Vec<SlotInit> {
        drives.into_iter().map(SlotInit::Present).collect()
    }

    /// Overwrites physical block `pbn` of drive `slot` with random-looking bytes.
    fn corrupt(&self, slot: usize, pbn: u64, seed: u64) {
        let f = OpenOptions::new()
            .write(true)
            .open(&self.paths[slot])
            .unwrap();
        f.write_all_at(
            &pattern(pbn, seed ^ 0xBAD),
            DATA_OFFSET + pbn * BLOCK_SIZE as u64,
        )
        .unwrap();
    }
}

fn write(p: &Pool, lbn: u64, ver: u64) {
    p.write_blocks(lbn, &pattern(lbn, ver)).unwrap();
}

fn check(p: &Pool, lbn: u64, ver: u64) {
    let mut b = vec![0u8; BLOCK_SIZE];
    p.read_blocks(lbn, &mut b).unwrap();
    assert!(
        b == pattern(lbn, ver),
        "block {lbn} does not hold version {ver}"
    );
}

fn write_range(p: &Pool, start: u64, count: u64, ver: u64) {
    let mut buf = Vec::with_capacity(count as usize * BLOCK_SIZE);
    for l in start..start + count {
        buf.extend_from_slice(&pattern(l, ver));
    }
    p.write_blocks(start, &buf).unwrap();
}

fn check_range(p: &Pool, start: u64, count: u64, ver: impl Fn(u64) -> u64) {
    let mut buf = vec![0u8; count as usize * BLOCK_SIZE];
    p.read_blocks(start, &mut buf).unwrap();
    for (i, b) in buf.chunks_exact(BLOCK_SIZE).enumerate() {
        let l = start + i as u64;
        assert!(b == &pattern(l, ver(l))[..], "block {l} differs");
    }
}

#[test]
fn pull_write_reinsert_resyncs_exactly_the_changed_blocks() {
    let v = Vol::new(3, 2);
    let p = v.pool(Vol::present(v.format()), false);
    let total = p.block_count();
    write_range(&p, 0, 1000, 1);
    p.sync().unwrap();

    p.pull(1).unwrap();
    assert_eq!(p.slots()[1].state, SlotState::Missing);
    let image_at_pull = std::fs::read(&v.paths[1]).unwrap();
    // 40 single blocks and one 100-block run; count the copies that live on drive 1.
    let mut changed: std::collections::BTreeSet<u64> = (0..40).map(|i| i * 23).collect();
    changed.extend(500..600);
    for &l in &changed {
        write(&p, l, 2);
    }
    let on_1 = changed
        .iter()
        .flat_map(|&l| (0..2).map(move |k| (l, k)))
        .filter(|&(l, k)| p.layout().place(l, k).drive == 1)
        .count() as u64;
    assert_eq!(p.slots()[1].stale_blocks, on_1);
    let ver = |l: u64| if changed.contains(&l) { 2 } else { 1 };
    check_range(&p, 0, 1000, ver);
    p.sync().unwrap();
    assert!(v.state_dir().join("pool-slot-1.stale").exists());
    assert!(
        std::fs::read(&v.paths[1]).unwrap() == image_at_pull,
        "a pulled drive is not touched"
    );

    let n = p.insert(1, v.open_drive(1)).unwrap();
    assert_eq!(n, on_1, "resync only the blocks written while out");
    assert!(p.wait_restriped(WAIT));
    assert_eq!(p.slots()[1].stale_blocks, 0);
    assert_eq!(p.slots()[1].state, SlotState::Healthy);
    p.sync().unwrap();
    assert!(!v.state_dir().join("pool-slot-1.stale").exists());
    assert!(p.verify_copies(&[(0, total)]).unwrap().is_empty());
    // Served with drive 0 out, so copies on drive 1 are read too.
    p.pull(0).unwrap();
    check_range(&p, 0, 1000, ver);
    let mut z = vec![0u8; BLOCK_SIZE];
    p.read_blocks(total - 1, &mut z).unwrap();
    assert!(
        z.iter().all(|&b| b == 0),
        "never-written block reads as zeros"
    );
}

#[test]
fn crash_while_degraded_still_knows_the_stale_blocks() {
    let v = Vol::new(2, 2);
    // Format on plain files, then run on fault-injecting backends.
    drop(v.format());
    let (fb0, d0) = v.faulty(0);
    let (_fb1, d1) = v.faulty(1);
    let drive1_id = d1.header().drive_id;
    let p = v.pool(Vol::present(vec![d0, d1]), false);
    write_range(&p, 0, 300, 1);
    p.sync().unwrap();
    p.pull(1).unwrap();
    for l in 10..20 {
        write(&p, l, 2); // synced below
    }
    p.sync().unwrap();
    for l in 200..205 {
        write(&p, l, 3); // never synced
    }
    fb0.crash();
    drop(p);

    let (_, d0) = v.faulty(0);
    let p = v.pool(
        vec![
            SlotInit::Present(d0),
            SlotInit::Missing {
                path: v.paths[1].clone(),
                drive_id: drive1_id,
            },
        ],
        true,
    );
    let st = &p.slots()[1];
    assert_eq!(st.state, SlotState::Missing);
    assert!(
        st.stale_blocks >= 15,
        "stale blocks forgotten: {}",
        st.stale_blocks
    );
    let n = p.insert(1, v.open_drive(1)).unwrap();
    assert!(n >= 15);
    assert!(p.wait_restriped(WAIT));
    let used = [(0u64, 300u64)];
    assert!(p.verify_copies(&used).unwrap().is_empty());
    // Synced writes survived on both copies.
    p.pull(0).unwrap();
    check_range(&p, 0, 20, |l| if l >= 10 { 2 } else { 1 });
}

#[test]
fn replace_rebuilds_while_io_goes_on() {
    let v = Vol::new(3, 2);
    let p = v.pool(Vol::present(v.format()), false);
    write_range(&p, 0, 3000, 1);
    p.sync().unwrap();
    p.pull(2).unwrap();
    let new_path = v.dir.path().join("d2-new.img");
    let fresh = v.format_at(2, &new_path, None);
    assert!(
        p.insert(2, fresh.clone()).is_err(),
        "a fresh drive is not the pulled one"
    );
    let n = p.replace(2, fresh).unwrap();
    assert_eq!(n, p.layout().drive_blocks);
    // Writes during the rebuild land on the new drive too.
    for l in (0..3000).step_by(7) {
        write(&p, l, 2);
    }
    assert!(p.wait_restriped(WAIT));
    let st = p.restriper_status();
    assert!(st.blocks_total > 0 && st.blocks_total <= n);
    let s = &p.slots()[2];
    assert_eq!(
        (s.state, s.stale_blocks, s.rebuild),
        (SlotState::Healthy, 0, false)
    );
    assert_eq!(s.path.as_deref(), Some(new_path.as_path()));
    let ver = |l: u64| if l.is_multiple_of(7) { 2 } else { 1 };
    assert!(p.verify_copies(&[(0, p.block_count())]).unwrap().is_empty());
    let rep = p.scrub(Some(&[(0, 3000)])).unwrap();
    assert_eq!((rep.checked, rep.repaired, rep.unrecoverable), (3000, 0, 0));
    p.pull(0).unwrap();
    check_range(&p, 0, 3000, ver);
}

#[test]
fn three_replicas_two_pulled_keep_serving() {
    let v = Vol::new(3, 3);
    let p = v.pool(Vol::present(v.format()), false);
    write_range(&p, 0, 500, 1);
    p.pull(0).unwrap();
    p.pull(2).unwrap();
    check_range(&p, 0, 500, |_| 1);
    write_range(&p, 100, 50, 2);
    check_range(&p, 0, 500, |l| if (100..150).contains(&l) { 2 } else { 1 });
    p.sync().unwrap();
    assert!(p.pull(0).is_err(), "already out");
}

#[test]
fn io_error_marks_the_drive_dead_and_reads_go_on() {
    let v = Vol::new(2, 2);
    drop(v.format());
    let (_fb0, d0) = v.faulty(0);
    let (fb1, d1) = v.faulty(1);
    let p = v.pool(Vol::present(vec![d0, d1]), false);
    write_range(&p, 0, 200, 1);
    p.sync().unwrap();
    fb1.fail_after(0);
    // Drive 1 holds every copy 1; reads use copy 0, so make a write hit drive 1.
    write(&p, 5, 2);
    let s = &p.slots()[1];
    assert_eq!(s.state, SlotState::Dead);
    assert!(s.write_errors >= 1);
    assert!(s.rebuild);
    check_range(&p, 0, 200, |l| if l == 5 { 2 } else { 1 });
    p.sync().unwrap();
}

#[test]
fn corruption_is_detected_served_from_the_other_copy_and_repaired() {
    let v = Vol::new(2, 2);
    let p = v.pool(Vol::present(v.format()), false);
    write_range(&p, 0, 400, 1);
    p.sync().unwrap();
    // With 2 drives and 2 copies, copy k of block L is on drive k at physical block L.
    let bad0: Vec<u64> = (0..400).step_by(13).collect();
    let bad1: Vec<u64> = (6..400).step_by(13).collect();
    for &l in &bad0 {
        v.corrupt(0, l, l);
    }
    for &l in &bad1 {
        v.corrupt(1, l, l);
    }
    check_range(&p, 0, 400, |_| 1);
    let s0 = &p.slots()[0];
    assert!(s0.checksum_errors >= bad0.len() as u64);
    assert_eq!(s0.repaired_blocks, bad0.len() as u64);
    // Copies on drive 1 are not read while copy 0 is good: scrub finds them.
    let rep = p.scrub(Some(&[(0, 400)])).unwrap();
    assert_eq!(rep.checked, 400);
    assert_eq!(rep.repaired, bad1.len() as u64);
    assert_eq!(rep.unrecoverable, 0);
    let again = p.scrub(None).unwrap();
    assert_eq!((again.repaired, again.unrecoverable), (0, 0));
    p.sync().unwrap();
    drop(p);
    // The repairs are on disk, checksums included.
    let p = v.pool(Vol::present(vec![v.open_drive(0), v.open_drive(1)]), false);
    let rep = p.scrub(Some(&[(0, 400)])).unwrap();
    assert_eq!((rep.repaired, rep.unrecoverable), (0, 0));
    check_range(&p, 0, 400, |_| 1);
}

#[test]
fn one_replica_unreadable_block_fails_alone() {
    let v = Vol::new(2, 1);
    let p = v.pool(Vol::present(v.format()), false);
    write_range(&p, 0, 64, 1);
    p.sync().unwrap();
    // With 2 drives and 1 copy, block L is on drive L mod 2 at physical block L div 2.
    v.corrupt(1, 10, 1); // logical block 21
    let mut b = vec![0u8; BLOCK_SIZE];
    let e = p.read_blocks(21, &mut b).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO));
    let mut run = vec![0u8; 4 * BLOCK_SIZE];
    assert!(p.read_blocks(19, &mut run).is_err());
    check_range(&p, 0, 21, |_| 1);
    check_range(&p, 22, 42, |_| 1);
    let rep = p.scrub(Some(&[(0, 64)])).unwrap();
    assert_eq!((rep.repaired, rep.unrecoverable), (0, 1));
    // Rewriting the block heals it.
    write(&p, 21, 2);
    check(&p, 21, 2);
}

#[test]
fn data_durable_but_checksum_not_after_a_crash() {
    let v = Vol::new(2, 2);
    drop(v.format());
    let (fb0, d0) = v.faulty(0);
    let (fb1, d1) = v.faulty(1);
    let p = v.pool(Vol::present(vec![d0, d1]), false);
    write(&p, 3, 1);
    p.sync().unwrap();
    write(&p, 3, 2);
    // The data reaches both images but the checksum blocks (written by the pool's sync)
    // do not: the cut between a data write and its checksum.
    for m in p.members() {
        m.drive().sync().unwrap();
    }
    fb0.crash();
    fb1.crash();
    drop(p);

    let strict = v.pool(Vol::present(vec![v.faulty(0).1, v.faulty(1).1]), false);
    let mut b = vec![0u8; BLOCK_SIZE];
    let e = strict.read_blocks(3, &mut b).unwrap_err();
    assert_eq!(
        e.raw_os_error(),
        Some(libc::EIO),
        "after a clean stop this is corruption"
    );
    drop(strict);

    let p = v.pool(Vol::present(vec![v.faulty(0).1, v.faulty(1).1]), true);
    let rep = p.scrub(Some(&[(0, 8)])).unwrap();
    assert_eq!(rep.unrecoverable, 0);
    assert!(rep.repaired >= 2);
    p.end_unclean_recovery();
    check(&p, 3, 2);
    assert_eq!(p.scrub(None).unwrap().repaired, 0);
}

#[test]
fn deleted_image_is_treated_as_pulled() {
    let v = Vol::new(2, 2);
    let p = v.pool(Vol::present(v.format()), false);
    write_range(&p, 0, 50, 1);
    p.sync().unwrap();
    std::fs::rename(&v.paths[1], v.dir.path().join("moved.img")).unwrap();
    assert_eq!(p.check_images(), vec![1]);
    assert_eq!(p.slots()[1].state, SlotState::Missing);
    write_range(&p, 0, 10, 2);
    check_range(&p, 0, 50, |l| if l < 10 { 2 } else { 1 });
    std::fs::rename(v.dir.path().join("moved.img"), &v.paths[1]).unwrap();
    assert_eq!(p.insert(1, v.open_drive(1)).unwrap(), 10);
    assert!(p.wait_restriped(WAIT));
    assert!(p.verify_copies(&[(0, 50)]).unwrap().is_empty());
}

#[test]
fn wrong_volume_drive_is_refused() {
    let v = Vol::new(2, 2);
    let p = v.pool(Vol::present(v.format()), false);
    let other = Vol::new(3, 2);
    let foreign = other.format_at(1, &v.dir.path().join("foreign.img"), None);
    p.pull(1).unwrap();
    assert!(p.insert(1, foreign).is_err());
    assert_eq!(p.slots()[1].state, SlotState::WrongCluster);
    assert_eq!(p.insert(1, v.open_drive(1)).unwrap(), 0);
}

#[test]
fn io_goes_on_during_pull_and_insert() {
    let v = Vol::new(3, 2);
    let p = Arc::new(v.pool(Vol::present(v.format()), false));
    let threads = 4u64;
    let per = 400u64;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let p = p.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let base = t * per;
                let mut vers = vec![0u64; per as usize];
                let mut round = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && round < 2000 {
                    round += 1;
                    let i = (round * 37 + t) % (per - 8);
                    let count = 1 + round % 8;
                    let mut buf = Vec::new();
                    for l in base + i..base + i + count {
                        buf.extend_from_slice(&pattern(l, round));
                    }
                    p.write_blocks(base + i, &buf).unwrap();
                    for k in i..i + count {
                        vers[k as usize] = round;
                    }
                    let j = (round * 11) % (per - 8);
                    let mut rb = vec![0u8; 8 * BLOCK_SIZE];
                    p.read_blocks(base + j, &mut rb).unwrap();
                    for (x, b) in rb.chunks_exact(BLOCK_SIZE).enumerate() {
                        let l = base + j + x as u64;
                        let ver = vers[(j + x as u64) as usize];
                        let want = if ver == 0 {
                            vec![0u8; BLOCK_SIZE]
                        } else {
                            pattern(l, ver)
                        };
                        assert!(b == &want[..], "thread {t} block {l}");
                    }
                }
                vers
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    p.pull(1).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    p.insert(1, v.open_drive(1)).unwrap();
    assert!(p.wait_restriped(WAIT));
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let vers: Vec<Vec<u64>> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    assert!(p.wait_restriped(WAIT));
    assert!(p.verify_copies(&[(0, threads * per)]).unwrap().is_empty());
    p.pull(0).unwrap();
    for (t, vs) in vers.iter().enumerate() {
        for (i, &ver) in vs.iter().enumerate() {
            if ver > 0 {
                check(&p, t as u64 * per + i as u64, ver);
            }
        }
    }
}

#[test]
fn status_names_and_restriper_progress() {
    let names: Vec<String> = [
        SlotState::Healthy,
        SlotState::Missing,
        SlotState::Dead,
        SlotState::WrongCluster,
        SlotState::Empty,
    ]
    .iter()
    .map(|s| serde_json::to_string(s).unwrap())
    .collect();
    assert_eq!(
        names,
        [
            "\"healthy\"",
            "\"missing\"",
            "\"dead\"",
            "\"wrong_cluster\"",
            "\"empty\""
        ]
    );
    let v = Vol::new(2, 2);
    let p = v.pool(Vol::present(v.format()), false);
    write_range(&p, 0, 100, 1);
    p.sync().unwrap();
    p.pull(0).unwrap();
    let fresh = v.format_at(0, &v.dir.path().join("d0-new.img"), None);
    let n = p.replace(0, fresh).unwrap();
    assert!(p.wait_restriped(WAIT));
    let st = p.restriper_status();
    let json = serde_json::to_value(&st).unwrap();
    assert_eq!(json["state"], "idle");
    assert_eq!(st.slot, Some(0));
    assert_eq!(st.blocks_done, n);
    assert_eq!(st.bytes_done, n * BLOCK_SIZE as u64);
    let slots = serde_json::to_value(p.slots()).unwrap();
    assert_eq!(slots[0]["state"], "healthy");
    assert_eq!(slots[0]["stale_blocks"], 0);
    p.pull(1).unwrap();
    check_range(&p, 0, 100, |_| 1);
}
