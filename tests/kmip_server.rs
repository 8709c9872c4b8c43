//! The KMIP client against a real PyKMIP server, started by `tools/kms/start.sh` on a free
//! 127.0.0.1 port with certificates from `tools/kms/gen-certs.sh`, and stopped by a Drop guard.
//! Needs the venv of `tools/pyenv.sh` (PyKMIP) and the openssl CLI.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use atrest::keystore::kmip::{KeyState, KmipClient, KmipError, KmsConfig, SecretPem};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(script: &str, args: &[&str]) {
    let out = Command::new(root().join(script))
        .args(args)
        .output()
        .expect("script runs");
    assert!(
        out.status.success(),
        "{script} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// A running PyKMIP server; stopped (and its directory removed) on drop.
struct Server {
    dir: tempfile::TempDir,
    port: u16,
}

impl Server {
    /// Generates certificates in a new directory and starts a server using them. With
    /// `wrong_name`, the server presents a certificate for another host name.
    fn start(wrong_name: bool) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_str().expect("utf-8 path").to_owned();
        run("tools/kms/gen-certs.sh", &[&path]);
        if wrong_name {
            for ext in ["pem", "key"] {
                let from = dir.path().join(format!("server-wrongname.{ext}"));
                std::fs::copy(from, dir.path().join(format!("server.{ext}"))).expect("copy");
            }
        }
        // A port can be taken between probing and binding: retry a few times.
        for attempt in 0..3 {
            let port = free_port();
            let out = Command::new(root().join("tools/kms/start.sh"))
                .args([&path, &port.to_string()])
                .output()
                .expect("start.sh runs");
            if out.status.success() {
                return Server { dir, port };
            }
            eprintln!(
                "start attempt {attempt} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        panic!("PyKMIP server did not start");
    }

    fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).expect("read cert file")
    }

    /// A configuration for client identity `client` (file prefix), trusting `ca`.
    fn config_with(&self, client: &str, ca: &str, hostname: &str) -> KmsConfig {
        KmsConfig {
            hostname: hostname.to_owned(),
            port: self.port,
            client_cert_pem: self.file(&format!("{client}.pem")),
            client_key_pem: SecretPem::new(self.file(&format!("{client}.key"))),
            server_ca_pem: self.file(&format!("{ca}.pem")),
            key_id: String::new(),
        }
    }

    fn client_with(&self, client: &str, ca: &str) -> KmipClient {
        KmipClient::new(&self.config_with(client, ca, "127.0.0.1"))
            .expect("config is valid")
            .with_timeouts(Duration::from_secs(3), Duration::from_secs(10))
    }

    fn client(&self) -> KmipClient {
        self.client_with("client", "ca")
    }

    /// The key material the server stored for `key_id`, read from its sqlite database with
    /// Python's sqlite3 module: an independent check of what the client decoded.
    fn stored_key(&self, key_id: &str) -> Vec<u8> {
        let db = self.dir.path().join("pykmip.db");
        let script = "import sqlite3, sys\n\
            row = sqlite3.connect(sys.argv[1]).execute(\n\
                'select value from managed_objects where uid = ?', (int(sys.argv[2]),)).fetchone()\n\
            sys.stdout.buffer.write(row[0])";
        let out = Command::new("python3")
            .args(["-c", script])
            .arg(&db)
            .arg(key_id)
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn stop(&self) {
        run(
            "tools/kms/stop.sh",
            &[self.dir.path().to_str().expect("utf-8")],
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new(root().join("tools/kms/stop.sh"))
            .arg(self.dir.path())
            .status();
    }
}

fn unique_name(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    format!("atrest-test-{what}-{nanos}")
}

#[test]
fn key_lifecycle_create_get_locate_revoke_destroy() {
    let server = Server::start(false);
    let client = server.client();
    let name = unique_name("lifecycle");

    let key_id = client.create_key(&name).expect("create and activate");
    let attrs = client.get_attributes(&key_id).expect("get attributes");
    assert_eq!(attrs.state, KeyState::Active);
    assert!(attrs.is_aes_256(), "{attrs:?}");
    assert_eq!(client.check_key(&key_id).expect("check"), "KMS Available");

    let key = client.fetch_master_key(&key_id).expect("fetch");
    assert_eq!(key.expose_secret().len(), 32);
    // Compared without printing: key bytes never go to test output.
    assert!(
        server.stored_key(&key_id) == key.expose_secret(),
        "key differs from server's"
    );
    let again = client.get_key(&key_id).expect("get");
    assert_eq!(
        again.expose_secret(),
        key.expose_secret(),
        "same key on a second Get"
    );

    assert_eq!(client.locate(&name).expect("locate"), vec![key_id.clone()]);
    assert!(
        client
            .locate(&unique_name("absent"))
            .expect("locate")
            .is_empty()
    );

    // A second key is a different key.
    let other_id = client
        .create_key(&unique_name("second"))
        .expect("second key");
    assert_ne!(other_id, key_id);
    let other = client.fetch_master_key(&other_id).expect("fetch second");
    assert_ne!(other.expose_secret(), key.expose_secret());

    // Another client identity of the same CA cannot see the key.
    let stranger = server.client_with("client-other", "ca");
    let err = stranger
        .fetch_master_key(&key_id)
        .err()
        .expect("invisible to others");
    eprintln!("{err}");
    assert!(matches!(err, KmipError::KeyNotFound { .. }), "{err}");

    client.revoke(&key_id).expect("revoke");
    let attrs = client
        .get_attributes(&key_id)
        .expect("attributes after revoke");
    assert_eq!(attrs.state, KeyState::Deactivated);
    let err = client
        .fetch_master_key(&key_id)
        .err()
        .expect("inactive key refused");
    eprintln!("{err}");
    assert!(
        matches!(
            err,
            KmipError::KeyInactive {
                state: KeyState::Deactivated,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.status_string(), "KMS Key Inactive");
    assert!(err.to_string().contains(&key_id), "{err}");

    client.destroy(&key_id).expect("destroy");
    let err = client
        .fetch_master_key(&key_id)
        .err()
        .expect("destroyed key gone");
    eprintln!("{err}");
    assert!(matches!(err, KmipError::KeyNotFound { .. }), "{err}");
    assert_eq!(err.status_string(), "KMS Key Not Found");
    assert!(client.locate(&name).expect("locate").is_empty());

    // Destroying an active key is refused by the server.
    let err = client
        .destroy(&other_id)
        .expect_err("active key not destroyable");
    eprintln!("{err}");
    assert!(matches!(err, KmipError::OperationFailed { .. }), "{err}");
}

#[test]
fn unknown_key_id_is_key_not_found() {
    let server = Server::start(false);
    let err = server
        .client()
        .fetch_master_key("999999")
        .err()
        .expect("no such key");
    eprintln!("{err}");
    assert!(matches!(err, KmipError::KeyNotFound { .. }), "{err}");
    assert_eq!(err.status_string(), "KMS Key Not Found");
    let text = err.to_string();
    assert!(
        text.contains("999999") && text.contains(&server.port.to_string()),
        "{text}"
    );
}

#[test]
fn tls_failures_are_authentication_errors() {
    let server = Server::start(false);
    let cases = [
        (
            "server checked against an unrelated CA",
            "client",
            "other-ca",
        ),
        (
            "client certificate from an unrelated CA",
            "client-foreign",
            "ca",
        ),
        ("expired client certificate", "client-expired", "ca"),
    ];
    for (what, client, ca) in cases {
        let err = server
            .client_with(client, ca)
            .create_key("x")
            .expect_err(what);
        eprintln!("{what}: {err}");
        assert!(
            matches!(err, KmipError::Authentication { .. }),
            "{what}: {err}"
        );
        assert_eq!(err.status_string(), "KMS Authentication Error", "{what}");
    }
    // The server stays usable for a good client after all that.
    server
        .client()
        .create_key(&unique_name("after-failures"))
        .expect("good client works");
}

#[test]
fn wrong_server_name_is_authentication_error() {
    let server = Server::start(true);
    let err = server
        .client()
        .fetch_master_key("1")
        .err()
        .expect("name mismatch");
    eprintln!("{err}");
    assert!(matches!(err, KmipError::Authentication { .. }), "{err}");
    assert_eq!(err.status_string(), "KMS Authentication Error");
    // A host name that resolves to the server but is not in its certificate fails the same way.
    let config = server.config_with("client", "ca", "localhost");
    let client = KmipClient::new(&config).expect("valid config");
    let err = client.fetch_master_key("1").err().expect("name mismatch");
    eprintln!("{err}");
    assert!(matches!(err, KmipError::Authentication { .. }), "{err}");
}

#[test]
fn stopped_server_cannot_connect() {
    let server = Server::start(false);
    let client = server.client();
    let key_id = client.create_key(&unique_name("stopped")).expect("create");
    server.stop();
    let err = client
        .fetch_master_key(&key_id)
        .err()
        .expect("server is down");
    eprintln!("{err}");
    assert!(matches!(err, KmipError::CannotConnect { .. }), "{err}");
    assert_eq!(err.status_string(), "Cannot connect to KMS server.");
    assert!(
        err.to_string()
            .contains(&format!("127.0.0.1:{}", server.port)),
        "{err}"
    );
}

#[test]
fn silent_server_times_out_as_cannot_connect() {
    // Fault injection: a listener that accepts and never answers the TLS handshake.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let holder = std::thread::spawn(move || {
        let conn = listener.accept();
        std::thread::sleep(Duration::from_secs(3));
        drop(conn);
    });
    let certs = tempfile::tempdir().expect("tempdir");
    run(
        "tools/kms/gen-certs.sh",
        &[certs.path().to_str().expect("utf-8")],
    );
    let read = |name: &str| std::fs::read_to_string(certs.path().join(name)).expect("read");
    let config = KmsConfig {
        hostname: "127.0.0.1".into(),
        port,
        client_cert_pem: read("client.pem"),
        client_key_pem: SecretPem::new(read("client.key")),
        server_ca_pem: read("ca.pem"),
        key_id: "1".into(),
    };
    let client = KmipClient::new(&config)
        .expect("valid config")
        .with_timeouts(Duration::from_secs(1), Duration::from_secs(1));
    let started = std::time::Instant::now();
    let err = client.fetch_master_key("1").err().expect("no answer");
    eprintln!("silent: {err}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "timeout not honoured"
    );
    assert!(matches!(err, KmipError::CannotConnect { .. }), "{err}");
    holder.join().expect("holder thread");
}

#[test]
fn bad_configuration_is_configuration_corrupted() {
    let certs = tempfile::tempdir().expect("tempdir");
    run(
        "tools/kms/gen-certs.sh",
        &[certs.path().to_str().expect("utf-8")],
    );
    let read = |name: &str| std::fs::read_to_string(certs.path().join(name)).expect("read");
    let good = KmsConfig {
        hostname: "127.0.0.1".into(),
        port: 5696,
        client_cert_pem: read("client.pem"),
        client_key_pem: SecretPem::new(read("client.key")),
        server_ca_pem: read("ca.pem"),
        key_id: "1".into(),
    };
    assert!(KmipClient::new(&good).is_ok());

    let mut broken = Vec::new();
    let mut c = good.clone();
    c.client_key_pem = SecretPem::new("-----BEGIN PRIVATE KEY-----\nAAAA\n".into());
    broken.push(("truncated key", c));
    let mut c = good.clone();
    c.client_key_pem = SecretPem::new(read("client-other.key"));
    broken.push(("key of another certificate", c));
    let mut c = good.clone();
    c.server_ca_pem = "garbage".into();
    broken.push(("no CA certificate", c));
    let mut c = good.clone();
    c.client_cert_pem = String::new();
    broken.push(("no client certificate", c));
    let mut c = good.clone();
    c.hostname = "not a host name".into();
    broken.push(("bad host name", c));
    for (what, config) in broken {
        let err = KmipClient::new(&config).expect_err(what);
        eprintln!("{what}: {err}");
        assert_eq!(
            err.status_string(),
            "Configuration Corrupted",
            "{what}: {err}"
        );
        assert!(!err.to_string().contains("BEGIN"), "{what}: {err}");
    }
}

#[test]
fn cert_expiry_matches_openssl() {
    let certs = tempfile::tempdir().expect("tempdir");
    run(
        "tools/kms/gen-certs.sh",
        &[certs.path().to_str().expect("utf-8")],
    );
    for name in ["ca.pem", "client.pem", "client-expired.pem"] {
        let path = certs.path().join(name);
        let pem = std::fs::read_to_string(&path).expect("read");
        let ours = atrest::keystore::kmip::cert_not_after(&pem).expect("parses");
        let out = Command::new("openssl")
            .args(["x509", "-noout", "-enddate", "-dateopt", "iso_8601", "-in"])
            .arg(Path::new(&path))
            .output()
            .expect("openssl runs");
        // "notAfter=2029-03-07 17:49:04Z"
        let text = String::from_utf8_lossy(&out.stdout);
        let stamp = text.trim().trim_start_matches("notAfter=");
        let format =
            time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]Z");
        let theirs = time::PrimitiveDateTime::parse(stamp, format)
            .unwrap_or_else(|e| panic!("{name}: openssl said {text:?}: {e}"))
            .assume_utc();
        assert_eq!(ours, theirs, "{name}");
    }
    let expired = std::fs::read_to_string(certs.path().join("client-expired.pem")).expect("read");
    let when = atrest::keystore::kmip::cert_not_after(&expired).expect("parses");
    assert_eq!(when.year(), 2020);
}
