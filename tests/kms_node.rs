//! The node with a KMS key store, end to end: a real PyKMIP server (tools/kms/), the real
//! `atrest mount --api` and the real `qq` client (venv of tools/pyenv.sh).
//!
//! Switching a mounted volume from its local key to a KMS key and back, rotations under load,
//! remounts that fetch the key, the health status while the KMS goes away and comes back, a
//! destroyed key refusing the mount without writing, configurations refused at set time, and
//! cuts of a rotation to a KMS key at every step.

mod common;
#[path = "qq/common.rs"]
#[allow(unused)]
mod qqc;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use atrest::keystore::kmip::{KmipClient, KmsConfig, SecretPem};
use common::{Mount, TestVolume, s};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn run_script(script: &str, args: &[&str]) -> Output {
    Command::new(root().join(script))
        .args(args)
        .output()
        .expect("script runs")
}

/// A PyKMIP server from tools/kms/; stopped on drop.
struct Kms {
    dir: tempfile::TempDir,
    port: u16,
}

impl Kms {
    /// Certificates in a new directory, and a server; with `wrong_name` it presents a
    /// certificate valid only for another host name.
    fn start(wrong_name: bool) -> Kms {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = s(dir.path());
        let out = run_script("tools/kms/gen-certs.sh", &[&path]);
        assert!(out.status.success(), "gen-certs: {out:?}");
        if wrong_name {
            for ext in ["pem", "key"] {
                std::fs::copy(
                    dir.path().join(format!("server-wrongname.{ext}")),
                    dir.path().join(format!("server.{ext}")),
                )
                .expect("copy");
            }
        }
        for _ in 0..3 {
            let port = free_port();
            let out = run_script("tools/kms/start.sh", &[&path, &port.to_string()]);
            if out.status.success() {
                return Kms { dir, port };
            }
            eprintln!("KMS start failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        panic!("PyKMIP server did not start");
    }

    fn path(&self, name: &str) -> String {
        s(&self.dir.path().join(name))
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).expect("read cert file")
    }

    /// A KMIP client with the node's identity (`client`), so that the node sees its keys.
    fn client(&self) -> KmipClient {
        KmipClient::new(&KmsConfig {
            hostname: "127.0.0.1".into(),
            port: self.port,
            client_cert_pem: self.read("client.pem"),
            client_key_pem: SecretPem::new(self.read("client.key")),
            server_ca_pem: self.read("ca.pem"),
            key_id: String::new(),
        })
        .expect("valid config")
    }

    fn stop(&self) {
        let out = run_script("tools/kms/stop.sh", &[&s(self.dir.path())]);
        assert!(out.status.success(), "stop: {out:?}");
    }

    /// Starts the server again on the same port and with the same database (start.sh begins
    /// with an empty one): the same command line start.sh uses.
    fn restart_keeping_keys(&self) {
        let python = root().join(".venv/bin/pykmip-server");
        let conf = self.dir.path().join("pykmip.conf");
        let log = self.dir.path().join("pykmip.log");
        let child = Command::new("setsid")
            .arg(&python)
            .arg("-f")
            .arg(&conf)
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn pykmip-server");
        // setsid execs in place (the child is not a group leader), so this is the server's pid.
        std::fs::write(self.dir.path().join("pykmip.pid"), child.id().to_string())
            .expect("pid file");
        // stop.sh signals it by pid; this thread reaps it, so that no zombie outlives it.
        std::thread::spawn(move || {
            let mut child = child;
            let _ = child.wait();
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "KMS did not come back in 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The qq arguments of a KMS configuration: client identity `client`, CA `ca`, host name.
    fn qq_config(&self, client: &str, ca: &str, host: &str, port: u16) -> Vec<String> {
        vec![
            "--client-cert".into(),
            self.path(&format!("{client}.pem")),
            "--client-private-key".into(),
            self.path(&format!("{client}.key")),
            "--server-ca-cert".into(),
            self.path(&format!("{ca}.pem")),
            "--hostname".into(),
            host.into(),
            "--port".into(),
            port.to_string(),
        ]
    }

    fn good_config(&self) -> Vec<String> {
        self.qq_config("client", "ca", "127.0.0.1", self.port)
    }
}

impl Drop for Kms {
    fn drop(&mut self) {
        let _ = Command::new(root().join("tools/kms/stop.sh"))
            .arg(self.dir.path())
            .status();
    }
}

/// A mounted volume serving the API on a free port, with a 1 s KMS health interval.
struct Node {
    mount: Option<Mount>,
    api_port: u16,
    home: tempfile::TempDir,
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "API did not listen within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn mount_args(api_port: u16) -> Vec<String> {
    vec![
        "--api".into(),
        format!("127.0.0.1:{api_port}"),
        "--kms-health-interval".into(),
        "1".into(),
        "--kms-retry-seconds".into(),
        "3".into(),
    ]
}

impl Node {
    fn try_start(v: &TestVolume, env: &[(&str, &str)]) -> Result<Node, String> {
        let api_port = free_port();
        let args = mount_args(api_port);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let mount = Mount::try_start(&v.state(), &mnt(v), &argv, env)?;
        wait_port(api_port);
        Ok(Node {
            mount: Some(mount),
            api_port,
            home: tempfile::tempdir().expect("tempdir"),
        })
    }

    fn start(v: &TestVolume) -> Node {
        Self::try_start(v, &[]).expect("mount")
    }

    fn qq(&self, args: &[&str]) -> Output {
        let port = self.api_port.to_string();
        let mut all = vec!["--host", "127.0.0.1", "--port", &port];
        all.extend_from_slice(args);
        qqc::run_bounded(
            Command::new(qqc::qq_path())
                .args(&all)
                .env("HOME", self.home.path())
                .env_remove("XDG_CONFIG_HOME"),
        )
    }

    fn qq_ok(&self, args: &[&str]) -> String {
        qqc::ok(&self.qq(args))
    }

    fn json(&self, cmd: &str) -> serde_json::Value {
        serde_json::from_str(&self.qq_ok(&[cmd])).expect("qq prints JSON")
    }

    fn status(&self) -> String {
        self.json("encryption_get_status")["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits (bounded) until the status is `want`; returns how long it took.
    fn wait_status(&self, want: &str, bound: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let got = self.status();
            if got == want {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < bound,
                "status still {got:?}, not {want:?}, after {bound:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn set_kms(&self, cfg: &[String], extra: &[&str]) -> Output {
        let mut args: Vec<&str> = vec!["encryption_set_key_store", "kms"];
        args.extend(cfg.iter().map(String::as_str));
        args.extend_from_slice(extra);
        self.qq(&args)
    }

    fn unmount(mut self) {
        self.mount.take().expect("mounted").unmount();
    }
}

fn mnt(v: &TestVolume) -> PathBuf {
    v.dir.path().join("mnt")
}

/// Local master key files in the state directory.
fn local_keys(v: &TestVolume) -> Vec<String> {
    let mut keys: Vec<String> = std::fs::read_dir(v.state())
        .expect("state dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("master-"))
        .collect();
    keys.sort();
    keys
}

fn volume_json(v: &TestVolume) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(v.state().join("volume.json")).expect("volume.json"))
        .expect("JSON")
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
}

/// Writes, fsyncs and reads back files in the mount until told to stop; counts rounds and
/// failures (an I/O error or a mismatch).
struct Writer {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl Writer {
    fn start(dir: PathBuf) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let (st, rd) = (stop.clone(), rounds.clone());
        let handle = std::thread::spawn(move || {
            use std::io::Write;
            let mut errors = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(300);
            let mut i = 0u64;
            while !st.load(Ordering::Relaxed) && Instant::now() < deadline {
                let path = dir.join(format!("w{}.bin", i % 8));
                let data: Vec<u8> = (0..256 * 1024u64)
                    .map(|b| (b.wrapping_mul(31) ^ i) as u8)
                    .collect();
                let res = std::fs::File::create(&path)
                    .and_then(|mut f| f.write_all(&data).and_then(|_| f.sync_all()))
                    .and_then(|_| std::fs::read(&path));
                match res {
                    Ok(back) if back == data => {}
                    Ok(_) => errors.push(format!("{}: read back differs", path.display())),
                    Err(e) => errors.push(format!("{}: {e}", path.display())),
                }
                i += 1;
                rd.store(i, Ordering::Relaxed);
            }
            errors
        });
        Writer {
            stop,
            rounds,
            handle: Some(handle),
        }
    }

    /// Stops the writer; returns (rounds, errors).
    fn finish(mut self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let errors = self.handle.take().expect("running").join().expect("writer");
        (self.rounds.load(Ordering::Relaxed), errors)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[test]
fn local_to_kms_rotate_remount_health_and_destroyed_key() {
    let kms = Kms::start(false);
    let v = TestVolume::format(2, "64M", 2);
    let node = Node::start(&v);
    let m = mnt(&v);
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(m.join("keep.bin"), &payload).expect("write");
    assert_eq!(local_keys(&v).len(), 1);

    // Local -> KMS with an existing key.
    let key1 = kms
        .client()
        .create_key("atrest-node-key-1")
        .expect("create key");
    let out = node.set_kms(&kms.good_config(), &["--key-id", &key1]);
    assert_eq!(qqc::ok(&out), "");
    assert!(local_keys(&v).is_empty(), "local key file left behind");
    let kms_json = v.state().join("kms.json");
    assert_eq!(mode(&kms_json), 0o600);
    assert!(!v.state().join("kms-pending.json").exists());
    assert_eq!(volume_json(&v)["key"]["key_id"], key1.as_str());

    let store = node.json("encryption_get_key_store");
    assert_eq!(store["config_type"], "KMS", "{store}");
    let d = &store["config_details"];
    assert_eq!(d["hostname"], "127.0.0.1");
    assert_eq!(d["port"], kms.port);
    assert_eq!(d["key_id"], key1.as_str());
    assert!(d["config_creation_time"].as_str().is_some(), "{store}");

    let st = node.json("encryption_get_status");
    assert_eq!(st["status"], "KMS Available", "{st}");
    assert_eq!(st["type"], "KMS");
    let expiry = |k: &str| {
        let t = st[k]
            .as_str()
            .unwrap_or_else(|| panic!("{k} missing: {st}"));
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
            .expect("RFC 3339")
    };
    let (ca, client) = (expiry("ca_cert_expiry"), expiry("client_cert_expiry"));
    assert_eq!(
        ca,
        atrest::keystore::kmip::cert_not_after(&kms.read("ca.pem")).unwrap()
    );
    assert_eq!(
        client,
        atrest::keystore::kmip::cert_not_after(&kms.read("client.pem")).unwrap()
    );
    assert!(st["last_key_rotation_time"].as_str().is_some(), "{st}");

    // Rotations under a writer: to a key made by name, then to a given key id.
    let writer = Writer::start(m.clone());
    std::thread::sleep(Duration::from_millis(500));
    let out = node.qq_ok(&["rotate_encryption_keys", "--create-key-with-name", "second"]);
    assert!(
        out.starts_with("A new KMS key was created with ID "),
        "{out}"
    );
    assert!(out.ends_with("Key rotation complete\n"), "{out}");
    let key2 = out
        .lines()
        .next()
        .unwrap()
        .trim_start_matches("A new KMS key was created with ID ")
        .to_owned();
    assert_ne!(key2, key1);
    let key3 = kms.client().create_key("third").expect("create");
    assert_eq!(
        node.qq_ok(&["rotate_encryption_keys", "--key-id", &key3]),
        "Key rotation complete\n"
    );
    std::thread::sleep(Duration::from_millis(500));
    let (rounds, errors) = writer.finish();
    assert!(errors.is_empty(), "writer saw errors: {errors:?}");
    assert!(rounds >= 2, "writer made only {rounds} rounds");
    assert_eq!(
        node.json("encryption_get_key_store")["config_details"]["key_id"],
        key3.as_str()
    );
    // A key id that does not exist is refused; the key stays.
    let out = node.qq(&["rotate_encryption_keys", "--key-id", "424242"]);
    assert!(!out.status.success());
    assert!(qqc::err(&out).contains("KMS Key Not Found"), "{out:?}");
    assert_eq!(volume_json(&v)["key"]["key_id"], key3.as_str());

    // Remount: the key comes from the KMS.
    node.unmount();
    let node = Node::start(&v);
    assert_eq!(std::fs::read(m.join("keep.bin")).expect("read"), payload);
    assert_eq!(node.status(), "KMS Available");

    // The KMS goes away: the status says so within a health interval; I/O goes on.
    kms.stop();
    let took = node.wait_status("Cannot connect to KMS server.", Duration::from_secs(15));
    eprintln!("status turned to Cannot connect after {took:?}");
    std::fs::write(m.join("while-down.bin"), &payload).expect("write while KMS down");
    assert_eq!(std::fs::read(m.join("keep.bin")).expect("read"), payload);
    kms.restart_keeping_keys();
    node.wait_status("KMS Available", Duration::from_secs(15));

    // Back to a local key, then to a KMS key created from the configuration.
    node.qq_ok(&["encryption_set_key_store", "local"]);
    assert_eq!(local_keys(&v).len(), 1);
    assert!(!kms_json.exists(), "kms.json left behind");
    assert_eq!(node.status(), "Encrypted");
    let out = node.set_kms(&kms.good_config(), &["--create-key-with-name", "fourth"]);
    let text = qqc::ok(&out);
    let key4 = text
        .trim()
        .trim_start_matches("A new KMS key was created with ID ")
        .to_owned();
    assert!(
        text.starts_with("A new KMS key was created with ID "),
        "{text}"
    );
    assert!(local_keys(&v).is_empty());
    assert_eq!(volume_json(&v)["key"]["key_id"], key4.as_str());
    node.unmount();

    // Unreachable KMS at start: retried for --kms-retry-seconds, then a clear refusal.
    let images = v.image_hashes();
    let state_before = std::fs::read(v.state().join("volume.json")).unwrap();
    kms.stop();
    let started = Instant::now();
    let err = Node::try_start(&v, &[]).err().expect("mount refused");
    eprintln!("{err}");
    assert!(err.contains("Cannot connect to KMS server."), "{err}");
    assert!(started.elapsed() >= Duration::from_secs(3), "no retry");
    assert_eq!(v.image_hashes(), images);
    kms.restart_keeping_keys();

    // The key revoked and destroyed on the KMS: the node refuses to mount and writes nothing.
    let c = kms.client();
    c.revoke(&key4).expect("revoke");
    c.destroy(&key4).expect("destroy");
    let err = Node::try_start(&v, &[]).err().expect("mount refused");
    eprintln!("{err}");
    assert!(
        err.contains("KMS Key Not Found") && err.contains(&key4),
        "{err}"
    );
    assert_eq!(v.image_hashes(), images, "an image changed");
    assert_eq!(
        std::fs::read(v.state().join("volume.json")).unwrap(),
        state_before
    );
    let _ = key2;
}

#[test]
fn bad_kms_configurations_are_refused_and_the_old_store_stays() {
    let kms = Kms::start(false);
    let wrong = Kms::start(true);
    let v = TestVolume::format(1, "48M", 1);
    let node = Node::start(&v);
    let keys = local_keys(&v);
    let key = kms.client().create_key("good").expect("create");
    let dead_port = free_port();

    let cases: Vec<(&str, Vec<String>, String, &str)> = vec![
        (
            "client cert from another CA",
            kms.qq_config("client-foreign", "ca", "127.0.0.1", kms.port),
            key.clone(),
            "KMS Authentication Error",
        ),
        (
            "server checked against another CA",
            kms.qq_config("client", "other-ca", "127.0.0.1", kms.port),
            key.clone(),
            "KMS Authentication Error",
        ),
        (
            "expired client cert",
            kms.qq_config("client-expired", "ca", "127.0.0.1", kms.port),
            key.clone(),
            "KMS Authentication Error",
        ),
        (
            "wrong key id",
            kms.good_config(),
            "987654".into(),
            "KMS Key Not Found",
        ),
        (
            "server with the wrong name",
            wrong.good_config(),
            key.clone(),
            "KMS Authentication Error",
        ),
        (
            "unreachable server",
            kms.qq_config("client", "ca", "127.0.0.1", dead_port),
            key.clone(),
            "Cannot connect to KMS server.",
        ),
    ];
    for (what, cfg, key_id, reason) in cases {
        let out = node.set_kms(&cfg, &["--key-id", &key_id]);
        let err = qqc::err(&out);
        eprintln!("{what}: {err}");
        assert!(!out.status.success(), "{what}: accepted");
        assert!(err.contains("Error 400"), "{what}: {err}");
        assert!(err.contains(reason), "{what}: {err}");
        assert!(!err.contains("PRIVATE KEY"), "{what}: {err}");
        assert_eq!(
            node.json("encryption_get_key_store")["config_type"],
            "Local"
        );
        assert_eq!(node.status(), "Encrypted", "{what}");
        assert_eq!(local_keys(&v), keys, "{what}: local key changed");
        assert!(!v.state().join("kms.json").exists(), "{what}");
        assert!(!v.state().join("kms-pending.json").exists(), "{what}");
    }
    // Creating a key with a bad configuration is refused too; with a local store and no
    // configuration it is an error.
    let out = node.set_kms(
        &kms.qq_config("client-foreign", "ca", "127.0.0.1", kms.port),
        &["--create-key-with-name", "x"],
    );
    assert!(
        qqc::err(&out).contains("KMS Authentication Error"),
        "{out:?}"
    );
    let out = node.qq(&["rotate_encryption_keys", "--create-key-with-name", "x"]);
    assert!(qqc::err(&out).contains("No KMS is configured"), "{out:?}");

    // And the good configuration works after all that.
    qqc::ok(&node.set_kms(&kms.good_config(), &["--key-id", &key]));
    assert_eq!(node.status(), "KMS Available");
    node.unmount();
}

#[test]
fn rotation_to_and_from_kms_cut_at_every_step_rolls_forward() {
    let kms = Kms::start(false);
    let to_kms = [
        "after-new-key",
        "after-journal",
        "drive0-slot0",
        "drive1-slot1",
        "after-rewrap",
        "after-config",
        "after-kms-config",
        "after-destroy",
    ];
    for point in to_kms {
        let v = TestVolume::format(2, "32M", 2);
        let old_keys = local_keys(&v);
        let key = kms.client().create_key(point).expect("create");
        let node = Node::start_with_crash(&v, point);
        let data = write_synced(&v, point);
        let out = node.set_kms(&kms.good_config(), &["--key-id", &key]);
        assert!(!out.status.success(), "{point}: qq succeeded");
        node.crashed(point);

        // The next start finishes (or, before the journal, abandons) the rotation.
        let node = Node::start(&v);
        let cfg = volume_json(&v);
        if point == "after-new-key" {
            assert_eq!(cfg["key"]["kind"], "Local", "{point}");
            assert_eq!(local_keys(&v), old_keys, "{point}");
            assert!(!v.state().join("kms.json").exists(), "{point}");
            assert_eq!(node.status(), "Encrypted");
        } else {
            assert_eq!(cfg["key"]["key_id"], key.as_str(), "{point}: {cfg}");
            assert!(local_keys(&v).is_empty(), "{point}: old key file left");
            assert!(v.state().join("kms.json").exists(), "{point}");
            assert_eq!(node.status(), "KMS Available", "{point}");
        }
        assert!(!v.state().join("kms-pending.json").exists(), "{point}");
        assert!(!v.state().join("rotation.journal").exists(), "{point}");
        assert_eq!(read_back(&v, point), data, "{point}: file differs");
        node.unmount();
        common::ok(&v.fsck());
    }

    // And back from the KMS to a local key.
    for point in [
        "after-new-key",
        "after-journal",
        "after-config",
        "after-kms-config",
    ] {
        let v = TestVolume::format(2, "32M", 2);
        let key = kms.client().create_key(point).expect("create");
        let node = Node::start(&v);
        qqc::ok(&node.set_kms(&kms.good_config(), &["--key-id", &key]));
        node.unmount();
        let node = Node::start_with_crash(&v, point);
        let data = write_synced(&v, point);
        let out = node.qq(&["encryption_set_key_store", "local"]);
        assert!(!out.status.success(), "{point}: qq succeeded");
        node.crashed(point);

        let node = Node::start(&v);
        let cfg = volume_json(&v);
        if point == "after-new-key" {
            assert_eq!(cfg["key"]["key_id"], key.as_str(), "{point}");
            assert!(local_keys(&v).is_empty(), "{point}: orphan key file kept");
            assert_eq!(node.status(), "KMS Available", "{point}");
        } else {
            assert_eq!(cfg["key"]["kind"], "Local", "{point}: {cfg}");
            assert_eq!(local_keys(&v).len(), 1, "{point}");
            assert!(!v.state().join("kms.json").exists(), "{point}");
            assert_eq!(node.status(), "Encrypted", "{point}");
        }
        assert_eq!(read_back(&v, point), data, "{point}: file differs");
        node.unmount();
        common::ok(&v.fsck());
    }
}

/// Writes and fsyncs a file named after `point` in the mount; returns its content.
fn write_synced(v: &TestVolume, point: &str) -> Vec<u8> {
    use std::io::Write;
    let data: Vec<u8> = point.bytes().cycle().take(200_000).collect();
    let mut f = std::fs::File::create(mnt(v).join(point)).expect("create");
    f.write_all(&data).expect("write");
    f.sync_all().expect("fsync");
    data
}

fn read_back(v: &TestVolume, point: &str) -> Vec<u8> {
    std::fs::read(mnt(v).join(point)).expect("read back")
}

impl Node {
    /// Mounts with `ATREST_TEST_CRASH_POINT` set: the daemon exits at that point of a
    /// rotation.
    fn start_with_crash(v: &TestVolume, point: &str) -> Node {
        Self::try_start(v, &[("ATREST_TEST_CRASH_POINT", point)]).expect("mount")
    }

    /// Checks that the daemon ended at its crash point (exit 99) and cleans the mount up.
    fn crashed(mut self, point: &str) {
        let mut mount = self.mount.take().expect("mounted");
        let child = mount.child.as_mut().expect("child");
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(st) = child.try_wait().expect("wait") {
                break st;
            }
            assert!(Instant::now() < deadline, "{point}: daemon still running");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(status.code(), Some(99), "{point}: {status}");
        mount.kill9();
    }
}

/// Runs `atrest SUBCOMMAND --host 127.0.0.1 --port API [rest...]` (a client subcommand).
fn atrest_client(node: &Node, sub: &str, rest: &[&str]) -> Output {
    let port = node.api_port.to_string();
    let mut args = vec![sub, "--host", "127.0.0.1", "--port", &port];
    args.extend_from_slice(rest);
    qqc::run_bounded(
        Command::new(common::bin())
            .args(&args)
            .env("HOME", node.home.path())
            .env_remove("XDG_CONFIG_HOME"),
    )
}

#[test]
fn atrest_client_subcommands_drive_the_kms_store() {
    let kms = Kms::start(false);
    let v = TestVolume::format(2, "32M", 2);
    let node = Node::start(&v);
    let key1 = kms.client().create_key("client-1").expect("create");

    let mut rest: Vec<&str> = vec!["kms"];
    let cfg = kms.good_config();
    rest.extend(cfg.iter().map(String::as_str));
    rest.extend_from_slice(&["--key-id", &key1]);
    assert_eq!(
        qqc::ok(&atrest_client(&node, "encryption_set_key_store", &rest)),
        ""
    );
    assert!(local_keys(&v).is_empty());
    let status: serde_json::Value = serde_json::from_str(&qqc::ok(&atrest_client(
        &node,
        "encryption_get_status",
        &[],
    )))
    .expect("JSON");
    assert_eq!(status["status"], "KMS Available", "{status}");
    assert!(status["client_cert_expiry"].is_string(), "{status}");

    let key2 = kms.client().create_key("client-2").expect("create");
    assert_eq!(
        qqc::ok(&atrest_client(
            &node,
            "rotate_encryption_keys",
            &["--key-id", &key2]
        )),
        "Key rotation complete\n"
    );
    let out = qqc::ok(&atrest_client(
        &node,
        "rotate_encryption_keys",
        &["--create-key-with-name", "client-3"],
    ));
    assert!(
        out.starts_with("A new KMS key was created with ID "),
        "{out}"
    );
    let store: serde_json::Value = serde_json::from_str(&qqc::ok(&atrest_client(
        &node,
        "encryption_get_key_store",
        &[],
    )))
    .expect("JSON");
    let key3 = out.lines().next().unwrap().rsplit(' ').next().unwrap();
    assert_eq!(store["config_details"]["key_id"], key3, "{store}");
    assert_eq!(volume_json(&v)["key"]["key_id"], key3);

    assert_eq!(
        qqc::ok(&atrest_client(
            &node,
            "encryption_set_key_store",
            &["local"]
        )),
        ""
    );
    assert_eq!(local_keys(&v).len(), 1);
    assert_eq!(node.status(), "Encrypted");
    node.unmount();
}
