//! Drives pulled, reinserted and replaced on a mounted volume under fio load (through
//! `tools/drive-sim.sh`), rotation while a drive is out, a drive of another volume, and
//! corrupted blocks repaired by reads and by the scrub.

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use atrest::crypto::{MasterKey, unwrap_data_key};
use atrest::drive::{FileBackend, SlotState, read_slots};
use common::*;

fn sim(scenario: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(root.join("tools/drive-sim.sh"))
        .args([scenario, "24M"])
        .env("ATREST_BIN", bin())
        .env("SIM_RUNTIME", "12")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(&format!("PASS {scenario}")),
        "{scenario}:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn pull_write_reinsert_under_fio() {
    sim("pull-reinsert");
}

#[test]
fn replace_with_blank_under_fio() {
    sim("replace");
}

#[test]
fn pull_two_of_three_replicas_under_fio() {
    sim("pull-two");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn client(port: u16, args: &[&str]) -> std::process::Output {
    let p = port.to_string();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--host", "127.0.0.1", "--port", &p]);
    atrest(&all)
}

fn wait_restriped(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = client(port, &["restriper_status"]);
        if String::from_utf8_lossy(&out.stdout).contains("NOT_RUNNING") {
            return;
        }
        assert!(Instant::now() < deadline, "restriper did not finish");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn rotation_while_pulled_ages_out_the_drive_key() {
    let v = TestVolume::format(3, "64M", 2);
    let port = free_port();
    let m = Mount::start(
        &v.state(),
        &v.dir.path().join("mnt"),
        &["--api", &format!("127.0.0.1:{port}")],
    );
    let data: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 251) as u8).collect();
    std::fs::write(m.path.join("f"), &data).unwrap();
    nix::unistd::sync();
    let old_key = std::fs::read(v.key_file()).unwrap();

    ok(&client(port, &["drive", "pull", "2"]));
    ok(&client(port, &["rotate_encryption_keys"]));
    let out = ok(&client(port, &["drive", "insert", "2"]));
    assert!(
        out.contains("\"unlockable\": false") && out.contains("no longer exists"),
        "{out}"
    );
    wait_restriped(port);
    assert_eq!(std::fs::read(m.path.join("f")).unwrap(), data);
    let slots = ok(&client(port, &["cluster_slots"]));
    assert_eq!(slots.matches("\"healthy\"").count(), 3, "{slots}");
    m.unmount();

    let old = MasterKey::from_bytes(&old_key).unwrap();
    for d in &v.drives {
        let be = FileBackend::open_read_only(d).unwrap();
        for s in read_slots(d, &be).unwrap() {
            let SlotState::Valid(h) = s else {
                panic!("invalid slot")
            };
            assert!(unwrap_data_key(&old, &h.associated_data(), &h.wrapped).is_err());
        }
    }
    assert!(ok(&v.fsck()).contains("clean"));
}

#[test]
fn drive_of_another_volume_is_refused_untouched() {
    let v = TestVolume::format(3, "48M", 2);
    let other = TestVolume::format(3, "48M", 2);
    let port = free_port();
    let m = Mount::start(
        &v.state(),
        &v.dir.path().join("mnt"),
        &["--api", &format!("127.0.0.1:{port}")],
    );
    ok(&client(port, &["drive", "pull", "2"]));
    let before = sha256_file(&other.drives[1], 0);
    let out = client(
        port,
        &["drive", "insert", "2", "--image", &s(&other.drives[1])],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("wrong_cluster"), "{err}");
    assert_eq!(
        sha256_file(&other.drives[1], 0),
        before,
        "foreign drive was written"
    );
    ok(&client(port, &["drive", "insert", "2"]));
    wait_restriped(port);
    m.unmount();
}

#[test]
fn corrupted_blocks_are_served_from_the_other_copy_and_scrubbed() {
    let v = TestVolume::format(3, "64M", 2);
    let m = v.mount();
    let data: Vec<u8> = (0..16 << 20)
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    std::fs::write(m.path.join("f"), &data).unwrap();
    m.unmount();

    // Overwrite 40 random written blocks of drive 1 with random bytes.
    let img = &v.drives[1];
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(img)
        .unwrap();
    let len = f.metadata().unwrap().len();
    let mut hit = 0;
    let mut block = vec![0u8; 4096];
    for _ in 0..5000 {
        if hit == 40 {
            break;
        }
        let b = rand::random_range((1u64 << 20) / 4096..len / 4096 - 64);
        f.read_exact_at(&mut block, b * 4096).unwrap();
        if block.iter().all(|&x| x == 0) {
            continue;
        }
        let noise: Vec<u8> = (0..4096).map(|_| rand::random()).collect();
        f.write_all_at(&noise, b * 4096).unwrap();
        hit += 1;
    }
    assert_eq!(hit, 40);
    drop(f);

    let m = v.mount();
    assert!(
        std::fs::read(m.path.join("f")).unwrap() == data,
        "corrupt copy was returned"
    );
    m.unmount();
    let first = ok(&atrest(&["scrub", "--state-dir", &v.state_str()]));
    let second = ok(&atrest(&["scrub", "--state-dir", &v.state_str()]));
    assert!(
        second.contains(" 0 copies repaired, 0 unrecoverable"),
        "{first}\n{second}"
    );
    assert!(ok(&v.fsck()).contains("clean"));
}
