//! The API's transport and error handling with hand-made requests (Python's http.client via
//! `tests/qq/raw_request.py`): malformed JSON, wrong types, unknown routes, oversized
//! bodies, stale ETags, keep-alive, and a slow client that must not hold up the others.

#[path = "qq/common.rs"]
mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Runs raw_request.py with the venv's python; returns its stdout lines.
fn raw(s: &TestServer, args: &[&str]) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = qq_path().with_file_name("python");
    let port = s.port.to_string();
    let mut all = vec![
        root.join("tests/qq/raw_request.py")
            .to_string_lossy()
            .into_owned(),
        port,
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    let o = run_bounded(Command::new(python).args(&all));
    assert!(o.status.success(), "raw_request failed: {}", err(&o));
    out(&o).lines().map(str::to_string).collect()
}

/// Logs in as admin and returns the Authorization header argument.
fn admin_header(s: &TestServer) -> String {
    let body = format!("{{\"username\": \"admin\", \"password\": \"{ADMIN_PASSWORD}\"}}");
    let r = raw(s, &["POST", "/v1/session/login", "--body", &body]);
    assert_eq!(r[0], "200", "{r:?}");
    let v: serde_json::Value = serde_json::from_str(&r[2]).unwrap();
    format!(
        "Authorization: Bearer {}",
        v["bearer_token"].as_str().unwrap()
    )
}

fn error_class(line: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(line).expect("error body is JSON");
    for k in [
        "error_class",
        "description",
        "module",
        "stack",
        "user_visible",
    ] {
        assert!(v.get(k).is_some(), "error body lacks {k}: {line}");
    }
    v["error_class"].as_str().unwrap().to_string()
}

#[test]
fn bad_requests_get_json_errors() {
    let s = TestServer::start_with(|c| c.max_body_bytes = 4096);
    let auth = admin_header(&s);
    let h = ["--header", auth.as_str()];

    // Unknown route: 404 even without credentials.
    let r = raw(&s, &["GET", "/v9/nothing/here"]);
    assert_eq!(
        (r[0].as_str(), error_class(&r[2]).as_str()),
        ("404", "http_not_found_error")
    );

    // Known route, no credentials, not the backdoor: 401.
    let r = raw(&s, &["GET", "/v2/encryption/key-store/status"]);
    assert_eq!(
        (r[0].as_str(), error_class(&r[2]).as_str()),
        ("401", "http_unauthorized_error")
    );

    // Malformed JSON and wrong types: 400, and the node is never called.
    for body in [
        "{\"key_id\": ",
        "[1, 2]",
        "{\"key_id\": 7}",
        "{\"key_id\": \"k\", \"extra\": true}",
    ] {
        let r = raw(
            &s,
            &[
                "POST",
                "/v2/encryption/rotate-keys",
                "--body",
                body,
                h[0],
                h[1],
            ],
        );
        assert_eq!(r[0], "400", "{body}: {r:?}");
        assert_eq!(error_class(&r[2]), "http_bad_request_error");
    }
    for body in [
        "{\"type\": \"Cloud\"}",
        "{\"type\": \"KMS\"}",
        "{\"type\": 3}",
        "{\"type\": \"KMS\", \"kms_store\": {\"client_cert\": \"c\", \"client_private_key\": \"k\", \
         \"server_ca_cert\": \"a\", \"hostname\": \"h\", \"port\": \"99999\", \"key_id\": \"x\"}}",
        "{\"type\": \"KMS\", \"kms_store\": {\"client_cert\": \"c\", \"client_private_key\": \"k\", \
         \"server_ca_cert\": \"a\", \"hostname\": \"h\", \"port\": 5696}}",
    ] {
        let r = raw(
            &s,
            &[
                "PUT",
                "/v2/encryption/key-store",
                "--body",
                body,
                h[0],
                h[1],
            ],
        );
        assert_eq!(r[0], "400", "{body}: {r:?}");
        assert_eq!(error_class(&r[2]), "http_bad_request_error");
    }
    let st = s.node.state.lock().unwrap().clone();
    assert_eq!((st.rotations, st.kms), (0, None));

    // The port may be a number or a string.
    let body = "{\"type\": \"KMS\", \"kms_store\": {\"client_cert\": \"c\", \"client_private_key\": \
                \"k\", \"server_ca_cert\": \"a\", \"hostname\": \"h\", \"port\": 5696, \
                \"key_id\": \"x\"}}";
    let r = raw(
        &s,
        &[
            "PUT",
            "/v2/encryption/key-store",
            "--body",
            body,
            h[0],
            h[1],
        ],
    );
    assert_eq!(r[0], "200", "{r:?}");
    assert_eq!(
        s.node.state.lock().unwrap().kms,
        Some(("h".into(), 5696, "x".into()))
    );

    // Oversized body: 413 with a JSON error.
    let r = raw(
        &s,
        &[
            "POST",
            "/v2/encryption/rotate-keys",
            "--body-size",
            "5000",
            h[0],
            h[1],
        ],
    );
    assert_eq!(r[0], "413", "{r:?}");
    assert_eq!(error_class(&r[2]), "http_payload_too_large_error");

    // Wrong method on a known route.
    let r = raw(&s, &["DELETE", "/v2/encryption/key-store", h[0], h[1]]);
    assert_eq!(r[0], "405", "{r:?}");
    error_class(&r[2]);

    // An expired or made-up token.
    let r = raw(
        &s,
        &[
            "GET",
            "/v1/session/who-am-i",
            "--header",
            "Authorization: Bearer atrest-x",
        ],
    );
    assert_eq!(r[0], "401");
}

#[test]
fn stale_etag_is_refused_and_keep_alive_works() {
    let s = TestServer::start();
    let auth = admin_header(&s);
    let create = "{\"name\": \"R1\", \"description\": \"d\", \"privileges\": []}";
    let r = raw(
        &s,
        &[
            "POST",
            "/v1/auth/roles/",
            "--body",
            create,
            "--header",
            &auth,
        ],
    );
    assert_eq!(r[0], "200", "{r:?}");

    // Two PATCHes with the same If-Match on one connection: the first changes the role and
    // its ETag, so the second is stale.
    let patch = "{\"privileges\": [\"PRIVILEGE_ROLE_READ\"]}";
    let r = raw(
        &s,
        &[
            "PATCH",
            "/v1/auth/roles/R1",
            "--body",
            patch,
            "--header",
            &auth,
            "--if-match-from",
            "/v1/auth/roles/R1",
            "--twice",
        ],
    );
    assert_eq!(r.len(), 6, "{r:?}");
    assert_eq!(r[0], "200", "{r:?}");
    assert_eq!(r[3], "412", "{r:?}");
    assert_eq!(error_class(&r[5]), "http_precondition_failed_error");

    // An unknown privilege is refused.
    let bad = "{\"privileges\": [\"PRIVILEGE_NOPE\"]}";
    let r = raw(
        &s,
        &[
            "PATCH",
            "/v1/auth/roles/R1",
            "--body",
            bad,
            "--header",
            &auth,
        ],
    );
    assert_eq!(r[0], "400", "{r:?}");
}

#[test]
fn slow_client_does_not_hold_up_others() {
    let s = TestServer::start_with(|c| c.header_read_timeout = Duration::from_secs(2));

    // One client sends half a request head and stalls; another runs qq meanwhile.
    let slow = {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = qq_path().with_file_name("python");
        Command::new(python)
            .args([
                root.join("tests/qq/raw_request.py")
                    .to_string_lossy()
                    .as_ref(),
                &s.port.to_string(),
                "GET",
                "/",
                "--stall-headers",
                "20",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    // A plain TCP connection that never even starts TLS.
    let idle = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();

    let start = Instant::now();
    for _ in 0..3 {
        assert!(ok(&s.qq(&["encryption_get_status"])).contains("\"type\": \"Local\""));
    }
    assert!(start.elapsed() < Duration::from_secs(30));

    let o = slow.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        said.starts_with("closed after"),
        "the stalled client was not cut off: {said}"
    );
    let secs: f64 = said.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(secs < 10.0, "{said}");

    // A kept-alive connection that sends no next request is closed by the same timeout.
    let r = raw(&s, &["GET", "/v9/none", "--idle", "20"]);
    assert_eq!(r[0], "HTTP/1.1 404 Not Found", "{r:?}");
    assert!(r[1].starts_with("closed after"), "{r:?}");
    let secs: f64 = r[1].split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(secs < 10.0, "{r:?}");

    // The idle TCP connection is closed by the TLS handshake timeout.
    use std::io::Read;
    idle.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = [0u8; 16];
    let n = (&idle).read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the idle connection should be closed");
}

#[test]
fn connection_cap_queues_clients_until_a_slot_frees() {
    let s = TestServer::start_with(|c| c.max_connections = 1);
    // This connection takes the only slot and holds it until the TLS handshake times out.
    let hog = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    assert!(ok(&s.qq(&["encryption_get_status"])).contains("\"type\": \"Local\""));
    let waited = start.elapsed();
    assert!(
        waited > Duration::from_secs(5),
        "served at once past the cap: {waited:?}"
    );
    assert!(waited < Duration::from_secs(30), "{waited:?}");
    drop(hog);
}

#[test]
fn state_survives_restart_and_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let mut s = TestServer::start();
    let store = s.home.path().join("admin.cred");
    let store = store.to_str().unwrap().to_string();
    ok(&s.qq(&[
        "--credentials-store",
        &store,
        "login",
        "-u",
        "admin",
        "-p",
        ADMIN_PASSWORD,
    ]));
    ok(&s.qq(&["auth_add_user", "--name", "kept", "-p", "kept-pw"]));
    let api = s.state.path().join("api");
    let cert = std::fs::read(api.join("tls-cert.pem")).unwrap();

    // Shut down with an idle connection open: bounded, and the port is released.
    let idle = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    let old_port = s.port;
    let stopped = s.restart();
    assert!(
        stopped < Duration::from_secs(12),
        "shutdown took {stopped:?}"
    );
    drop(idle);
    std::net::TcpListener::bind(("127.0.0.1", old_port)).expect("old port released");

    // Same certificate, same users, same sessions.
    assert_eq!(std::fs::read(api.join("tls-cert.pem")).unwrap(), cert);
    let users = ok(&s.qq(&["--credentials-store", &store, "auth_list_users"]));
    assert!(users.contains("\"name\": \"kept\""), "{users}");

    // Private files: the directory 0700, the key, users and sessions 0600.
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&api), 0o700);
    for f in [
        "tls-key.pem",
        "users.json",
        "sessions.json",
        "roles.json",
        "audit.log",
    ] {
        assert_eq!(mode(&api.join(f)), 0o600, "{f}");
    }
    let users_file = std::fs::read_to_string(api.join("users.json")).unwrap();
    assert!(!users_file.contains("kept-pw") && users_file.contains("$argon2id$"));
}
