//! The real `qq` (PyPI qumulo-api 7.10.2.1) against the real node: `atrest mount` serving its
//! API over a real encrypted volume. Encryption status and key store, rotation (ten times
//! while fio writes and verifies), 401 and 403.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use atrest::crypto::{MasterKey, unwrap_data_key};
use atrest::drive::{FileBackend, SlotState, read_slots};
use common::*;

const ADMIN_PW: &str = "admin-password-1";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn qq_bin() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let st = Command::new(root.join("tools/pyenv.sh"))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "tools/pyenv.sh failed");
    root.join(".venv/bin/qq")
}

/// A node: a formatted volume, mounted, with its API on a free port.
struct Node {
    vol: TestVolume,
    mount: Option<Mount>,
    port: u16,
    qq: PathBuf,
}

impl Node {
    fn start() -> Node {
        let pw = std::env::temp_dir().join(format!("atrest-admin-pw-{}", std::process::id()));
        std::fs::write(&pw, ADMIN_PW).unwrap();
        let vol = TestVolume::format_with(3, "96M", 2, &["--admin-password-file", &s(&pw)]);
        let port = free_port();
        let mount = Mount::start(
            &vol.state(),
            &vol.dir.path().join("mnt"),
            &["--api", &format!("127.0.0.1:{port}")],
        );
        let node = Node {
            vol,
            mount: Some(mount),
            port,
            qq: qq_bin(),
        };
        // Wait (bounded) for the API.
        let deadline = Instant::now() + Duration::from_secs(20);
        while node.qq(&["encryption_get_status"]).status.code() != Some(0) {
            assert!(Instant::now() < deadline, "API did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        node
    }

    fn mnt(&self) -> &Path {
        &self.mount.as_ref().unwrap().path
    }

    /// qq as local root (the backdoor: root on 127.0.0.1, no stored token).
    fn qq(&self, args: &[&str]) -> Output {
        self.qq_with(None, args)
    }

    fn qq_with(&self, creds: Option<&Path>, args: &[&str]) -> Output {
        let mut cmd = Command::new(&self.qq);
        cmd.args(["--host", "127.0.0.1", "--port", &self.port.to_string()]);
        let home = self.vol.dir.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        cmd.env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join(".config"));
        if let Some(c) = creds {
            cmd.arg("--credentials-store").arg(c);
        }
        cmd.args(args).stdin(Stdio::null()).output().unwrap()
    }

    fn status(&self) -> serde_json::Value {
        let out = self.qq(&["encryption_get_status"]);
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }

    fn key_file(&self) -> PathBuf {
        self.vol.key_file()
    }
}

fn qq_ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "qq failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Whether every header slot of every drive opens with `key`, and none with `old`.
fn slots_open_with_only(drives: &[PathBuf], key: &[u8], olds: &[Vec<u8>]) {
    let key = MasterKey::from_bytes(key).unwrap();
    let olds: Vec<MasterKey> = olds
        .iter()
        .map(|k| MasterKey::from_bytes(k).unwrap())
        .collect();
    for d in drives {
        let be = FileBackend::open_read_only(d).unwrap();
        for s in read_slots(d, &be).unwrap() {
            let SlotState::Valid(h) = s else {
                panic!("invalid slot on {}", d.display())
            };
            let aad = h.associated_data();
            assert!(
                unwrap_data_key(&key, &aad, &h.wrapped).is_ok(),
                "slot not under newest key"
            );
            for o in &olds {
                assert!(
                    unwrap_data_key(o, &aad, &h.wrapped).is_err(),
                    "slot opens with an old key"
                );
            }
        }
    }
}

#[test]
fn encryption_commands_on_the_real_node() {
    let node = Node::start();
    let st = node.status();
    let keys: Vec<&str> = st.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    assert_eq!(keys, ["last_status_update_time", "status", "type"], "{st}");
    assert_eq!(st["type"], "Local");
    assert_eq!(st["status"], "Encrypted");

    let ks = qq_ok(&node.qq(&["encryption_get_key_store"]));
    let ks: serde_json::Value = serde_json::from_str(&ks).unwrap();
    assert_eq!(
        ks,
        serde_json::json!({"config_details": {"status": "Encrypted"}, "config_type": "Local"})
    );

    assert_eq!(qq_ok(&node.qq(&["encryption_set_key_store", "local"])), "");
    let before = node.key_file();
    assert_eq!(
        qq_ok(&node.qq(&["rotate_encryption_keys"])).trim(),
        "Key rotation complete"
    );
    assert!(!before.exists());
    let st = node.status();
    let t1 = st["last_key_rotation_time"].as_str().unwrap().to_string();
    assert!(t1.ends_with('Z') && t1.contains('.'), "{t1}");

    // The atrest client prints what qq prints.
    let mine = atrest(&[
        "encryption_get_status",
        "--host",
        "127.0.0.1",
        "--port",
        &node.port.to_string(),
    ]);
    let theirs = node.qq(&["encryption_get_status"]);
    let strip = |o: &Output| -> serde_json::Value {
        let mut v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v.as_object_mut().unwrap().remove("last_status_update_time");
        v
    };
    assert_eq!(strip(&mine), strip(&theirs));

    // A key id on a local store is refused with a clear error, and nothing changes.
    let key_now = node.key_file();
    let out = node.qq(&["rotate_encryption_keys", "--key-id", "123"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Error 400"),
        "{out:?}"
    );
    assert_eq!(node.key_file(), key_now);
    node.mount.unwrap_or_else(|| unreachable!()).unmount();
}

#[test]
fn unauthorised_and_forbidden() {
    let node = Node::start();
    let home = node.vol.dir.path();

    // 401: a stale token in a credentials store.
    let bogus = home.join("bogus-creds");
    std::fs::write(
        &bogus,
        r#"{"bearer_token": "1:not-a-real-token", "version": 1}"#,
    )
    .unwrap();
    let out = node.qq_with(Some(&bogus), &["encryption_get_status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Error 401"),
        "{out:?}"
    );

    // 403: an Observers user may read but not rotate.
    qq_ok(&node.qq(&["auth_add_user", "--name", "olive", "-p", "olive-pw-1"]));
    qq_ok(&node.qq(&["auth_assign_role", "-r", "Observers", "-t", "olive"]));
    let creds = home.join("olive-creds");
    qq_ok(&node.qq_with(Some(&creds), &["login", "-u", "olive", "-p", "olive-pw-1"]));
    qq_ok(&node.qq_with(Some(&creds), &["encryption_get_status"]));
    let key_before = node.key_file();
    let out = node.qq_with(Some(&creds), &["rotate_encryption_keys"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("Error 403") && err.contains("PRIVILEGE_ENCRYPTION_WRITE"),
        "{err}"
    );
    assert_eq!(
        node.key_file(),
        key_before,
        "a refused rotation changed the key"
    );
    let audit = std::fs::read_to_string(node.vol.state().join("api/audit.log")).unwrap();
    assert!(audit.contains("olive"), "denial not audited");
    node.mount.unwrap_or_else(|| unreachable!()).unmount();
}

#[test]
fn ten_rotations_under_fio_load() {
    let node = Node::start();
    let file = node.mnt().join("fio.dat");
    let fio = Command::new("fio")
        .args([
            "--name=rotate-under-load",
            &format!("--filename={}", file.display()),
            "--size=24M",
            "--bs=4k",
            "--rw=randwrite",
            "--ioengine=psync",
            "--verify=crc32c",
            "--verify_backlog=64",
            "--verify_fatal=1",
            "--time_based",
            "--runtime=25",
            "--fsync=32",
            "--output-format=json",
            "--verify_state_save=0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("fio (apt-get install fio)");
    std::thread::sleep(Duration::from_secs(2));

    let mut old_keys = vec![std::fs::read(node.key_file()).unwrap()];
    let mut last_time = String::new();
    for i in 0..10 {
        assert_eq!(
            qq_ok(&node.qq(&["rotate_encryption_keys"])).trim(),
            "Key rotation complete"
        );
        let t = node.status()["last_key_rotation_time"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            t > last_time,
            "rotation {i}: time did not advance ({last_time} -> {t})"
        );
        last_time = t;
        old_keys.push(std::fs::read(node.key_file()).unwrap());
        std::thread::sleep(Duration::from_millis(500));
    }
    let newest = old_keys.pop().unwrap();

    let out = fio.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "fio failed: {report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&report).expect("fio JSON");
    let job = &v["jobs"][0];
    assert_eq!(job["error"], 0, "fio saw an I/O error");
    assert!(job["write"]["io_bytes"].as_u64().unwrap() > 0);

    // Only the newest key file remains, and every slot opens with it and no older key.
    let keys: Vec<_> = std::fs::read_dir(node.vol.state())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("master-"))
        .collect();
    assert_eq!(keys.len(), 1);
    slots_open_with_only(&node.vol.drives, &newest, &old_keys);

    // After the load, the volume is consistent.
    let vol_state = node.vol.state_str();
    let Node { vol, mount, .. } = node;
    mount.unwrap().unmount();
    let out = ok(&atrest(&["fsck", "--state-dir", &vol_state]));
    assert!(out.contains("clean"), "{out}");
    drop(vol);
}

#[test]
fn cluster_commands_follow_a_drive_pull() {
    let node = Node::start();
    let port = node.port.to_string();
    let slots = qq_ok(&node.qq(&["cluster_slots"]));
    assert_eq!(slots.matches("\"healthy\"").count(), 3, "{slots}");
    let prot = qq_ok(&node.qq(&["protection_status_get"]));
    assert!(prot.contains("\"remaining_drive_failures\": 1"), "{prot}");

    ok(&atrest(&[
        "drive",
        "pull",
        "2",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
    ]));
    let slots = qq_ok(&node.qq(&["cluster_slots"]));
    assert!(slots.contains("\"missing\""), "{slots}");
    let prot = qq_ok(&node.qq(&["protection_status_get"]));
    assert!(prot.contains("\"remaining_drive_failures\": 0"), "{prot}");

    ok(&atrest(&[
        "drive",
        "insert",
        "2",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
    ]));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = qq_ok(&node.qq(&["restriper_status"]));
        if st.contains("NOT_RUNNING") {
            break;
        }
        assert!(Instant::now() < deadline, "restriper did not finish: {st}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let slots = qq_ok(&node.qq(&["cluster_slots"]));
    assert_eq!(slots.matches("\"healthy\"").count(), 3, "{slots}");
    node.mount.unwrap_or_else(|| unreachable!()).unmount();
}
