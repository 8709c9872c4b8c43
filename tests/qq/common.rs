//! Shared by the API integration tests: a node stand-in behind `NodeControl` (until the
//! real node serves the API in these tests), an in-process API server on a free loopback
//! port, and runners for the real `qq` and the `atrest` client subcommands.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use atrest::api::{
    self, ApiConfig, ApiHandle, ControlError, KeyStoreStatus, KeyStoreType, KeyStoreView,
    KmsConfigRequest, NodeControl, SetKeyStore,
};
use time::OffsetDateTime;

/// The admin password every test server is formatted with.
pub const ADMIN_PASSWORD: &str = "admin-pw-1";

/// A fixed time, so that printed output is exact.
pub fn t0() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(1_780_000_000_123_456_789).unwrap()
}

/// What the stand-in node remembers.
#[derive(Debug, Clone, Default)]
pub struct NodeState {
    pub kms: Option<(String, u16, String)>,
    pub rotations: u32,
    pub keys_created: Vec<String>,
    pub last_private_key_len: usize,
}

/// The stand-in node: it records calls and answers like a node with a local key store.
#[derive(Default)]
pub struct TestNode {
    pub state: Mutex<NodeState>,
}

impl NodeControl for TestNode {
    fn key_store_status(&self) -> KeyStoreStatus {
        let s = self.state.lock().unwrap();
        KeyStoreStatus {
            store_type: if s.kms.is_some() {
                KeyStoreType::Kms
            } else {
                KeyStoreType::Local
            },
            status: if s.kms.is_some() {
                "KMS Available".into()
            } else {
                "Encrypted".into()
            },
            ca_cert_expiry: s
                .kms
                .as_ref()
                .map(|_| t0() + Duration::from_secs(86400 * 365)),
            client_cert_expiry: s
                .kms
                .as_ref()
                .map(|_| t0() + Duration::from_secs(86400 * 30)),
            last_key_rotation_time: (s.rotations > 0).then(t0),
            last_status_update_time: Some(t0()),
        }
    }

    fn key_store(&self) -> KeyStoreView {
        match &self.state.lock().unwrap().kms {
            None => KeyStoreView::Local {
                status: "Encrypted".into(),
            },
            Some((hostname, port, key_id)) => KeyStoreView::Kms {
                hostname: hostname.clone(),
                port: *port,
                key_id: key_id.clone(),
                config_creation_time: t0(),
            },
        }
    }

    fn set_key_store(&self, req: SetKeyStore) -> Result<(), ControlError> {
        let mut s = self.state.lock().unwrap();
        match req {
            SetKeyStore::Local => s.kms = None,
            SetKeyStore::Kms(k) => {
                s.last_private_key_len = k.client_private_key.expose_secret().len();
                let id = k.key_id.unwrap_or_default();
                s.kms = Some((k.hostname, k.port, id));
            }
        }
        s.rotations += 1;
        Ok(())
    }

    fn create_kms_key(
        &self,
        name: &str,
        cfg: Option<KmsConfigRequest>,
    ) -> Result<String, ControlError> {
        let mut s = self.state.lock().unwrap();
        if cfg.is_none() && s.kms.is_none() {
            return Err(ControlError::BadRequest("No KMS is configured".into()));
        }
        s.keys_created.push(name.to_string());
        Ok(format!("key-{}", s.keys_created.len()))
    }

    fn rotate_keys(&self, key_id: Option<String>) -> Result<(), ControlError> {
        let mut s = self.state.lock().unwrap();
        match (&mut s.kms, key_id) {
            (None, Some(id)) => {
                return Err(ControlError::BadRequest(format!(
                    "Key id {id} given, but the key store is Local"
                )));
            }
            (Some(k), Some(id)) => k.2 = id,
            _ => {}
        }
        s.rotations += 1;
        Ok(())
    }
}

/// A running API server with its own state directory and HOME for clients.
pub struct TestServer {
    pub handle: Option<ApiHandle>,
    pub node: Arc<TestNode>,
    pub state: tempfile::TempDir,
    pub home: tempfile::TempDir,
    pub port: u16,
}

impl TestServer {
    /// Formats a state directory (admin password [`ADMIN_PASSWORD`]) and serves it.
    pub fn start() -> Self {
        Self::start_with(|_| {})
    }

    /// As [`start`], with a chance to change the configuration.
    pub fn start_with(tune: impl FnOnce(&mut ApiConfig)) -> Self {
        let state = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        api::init_state(state.path(), Some(ADMIN_PASSWORD)).unwrap();
        let node = Arc::new(TestNode::default());
        let mut cfg = ApiConfig::new(state.path());
        cfg.addr = "127.0.0.1:0".parse().unwrap();
        tune(&mut cfg);
        let handle = api::serve(cfg, node.clone()).unwrap();
        let port = handle.local_addr().port();
        TestServer {
            handle: Some(handle),
            node,
            state,
            home,
            port,
        }
    }

    /// Stops the server and serves the same state directory again (on a new port).
    pub fn restart(&mut self) -> std::time::Duration {
        let start = std::time::Instant::now();
        if let Some(h) = self.handle.take() {
            h.shutdown();
        }
        let stopped = start.elapsed();
        let mut cfg = ApiConfig::new(self.state.path());
        cfg.addr = "127.0.0.1:0".parse().unwrap();
        let handle = api::serve(cfg, self.node.clone()).unwrap();
        self.port = handle.local_addr().port();
        self.handle = Some(handle);
        stopped
    }

    /// The audit log's text.
    pub fn audit(&self) -> String {
        std::fs::read_to_string(self.state.path().join("api/audit.log")).unwrap_or_default()
    }

    /// Runs the real qq with `--host host --port PORT` and this server's HOME.
    pub fn qq_at(&self, host: &str, args: &[&str]) -> Output {
        let port = self.port.to_string();
        let mut all = vec!["--host", host, "--port", &port];
        all.extend_from_slice(args);
        run_bounded(
            Command::new(qq_path())
                .args(&all)
                .env("HOME", self.home.path())
                .env_remove("XDG_CONFIG_HOME"),
        )
    }

    /// Runs the real qq against 127.0.0.1 (as root: the local-root backdoor, unless a
    /// credentials file exists).
    pub fn qq(&self, args: &[&str]) -> Output {
        self.qq_at("127.0.0.1", args)
    }

    /// Runs the `atrest` binary with `args` followed by `--host 127.0.0.1 --port PORT`
    /// inserted by the caller where the subcommand takes them.
    pub fn atrest(&self, args: &[&str]) -> Output {
        run_bounded(
            Command::new(env!("CARGO_BIN_EXE_atrest"))
                .args(args)
                .env("HOME", self.home.path())
                .env_remove("XDG_CONFIG_HOME"),
        )
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown();
        }
    }
}

/// Runs a command with a 120 s bound; a hung client fails the test.
pub fn run_bounded(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn client");
    let start = std::time::Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("client ran longer than 120 s: {cmd:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The venv's qq, made by `tools/pyenv.sh` on first use.
pub fn qq_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = Command::new(root.join("tools/pyenv.sh"))
            .output()
            .expect("run tools/pyenv.sh");
        assert!(
            out.status.success(),
            "tools/pyenv.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let qq = root.join(".venv/bin/qq");
        assert!(qq.exists(), "{} missing", qq.display());
        qq
    })
    .clone()
}

/// stdout as text.
pub fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr as text.
pub fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success and returns stdout.
#[track_caller]
pub fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed ({:?}): stdout={} stderr={}",
        o.status,
        out(o),
        err(o)
    );
    out(o)
}
