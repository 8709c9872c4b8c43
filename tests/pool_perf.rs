//! Throughput of the pool's data path against its drives' raw encrypted I/O, on sparse images
//! in a temporary directory (page cache). Ignored by default; run with
//! `cargo test --release --test pool_perf -- --ignored --nocapture`.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use atrest::BLOCK_SIZE;
use atrest::crypto::MasterKey;
use atrest::drive::header::DATA_OFFSET;
use atrest::drive::{Drive, FileBackend, KeyKind, NewDrive};
use atrest::pool::{BlockDevice, Pool};

const BLOCKS: u64 = 65536; // 256 MiB per drive

fn drive(dir: &Path, slot: u32, n: u32, r: u32, master: &MasterKey) -> Arc<Drive> {
    let path = dir.join(format!("d{slot}.img"));
    std::fs::File::create(&path)
        .unwrap()
        .set_len(DATA_OFFSET + BLOCKS * BLOCK_SIZE as u64)
        .unwrap();
    Arc::new(
        Drive::create(
            &path,
            Arc::new(FileBackend::open(&path).unwrap()),
            &NewDrive {
                volume_id: [1; 16],
                slot,
                drive_count: n,
                replicas: r,
                data_blocks: BLOCKS,
                master,
                key_kind: KeyKind::Local,
                key_id: "perf",
            },
        )
        .unwrap(),
    )
}

fn mbps(bytes: u64, t: Instant) -> f64 {
    bytes as f64 / t.elapsed().as_secs_f64() / 1e6
}

#[test]
#[ignore]
fn pool_vs_raw_drive_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::from_bytes(&[3; 32]).unwrap();
    let (n, r) = (3u32, 2u32);
    let drives: Vec<_> = (0..n)
        .map(|i| drive(dir.path(), i, n, r, &master))
        .collect();
    let req = 1 << 20;
    let data: Vec<u8> = (0..req).map(|i| (i * 7 + 3) as u8).collect();

    // Raw: each drive's encrypted write path, one after the other, same bytes per drive as
    // the pool below writes to it.
    let per_drive = 128u64 << 20;
    let t = Instant::now();
    let mut buf = data.clone();
    for d in &drives {
        for i in 0..per_drive / req as u64 {
            buf.copy_from_slice(&data);
            d.write_blocks_in_place(i * (req / BLOCK_SIZE) as u64, &mut buf)
                .unwrap();
        }
    }
    let raw_w = mbps(per_drive * n as u64, t);
    let t = Instant::now();
    for d in &drives {
        for i in 0..per_drive / req as u64 {
            d.read_blocks(i * (req / BLOCK_SIZE) as u64, &mut buf)
                .unwrap();
        }
    }
    let raw_r = mbps(per_drive * n as u64, t);

    let pool = Pool::new(drives, r).unwrap();
    let logical = per_drive * n as u64 / r as u64;
    let t = Instant::now();
    for i in 0..logical / req as u64 {
        pool.write_blocks(i * (req / BLOCK_SIZE) as u64, &data)
            .unwrap();
    }
    pool.sync().unwrap();
    let pool_w = mbps(logical * r as u64, t);
    let t = Instant::now();
    let mut out = vec![0u8; req];
    for i in 0..logical / req as u64 {
        pool.read_blocks(i * (req / BLOCK_SIZE) as u64, &mut out)
            .unwrap();
    }
    let pool_r = mbps(logical, t);
    assert_eq!(out, data);
    println!(
        "raw drives: write {raw_w:.0} MB/s, read {raw_r:.0} MB/s (one after the other); \
         pool {n} drives r={r}, 1 MiB requests: write {pool_w:.0} MB/s of copies \
         ({:.0} MB/s logical), read {pool_r:.0} MB/s",
        pool_w / r as f64
    );
}
