//! The `atrest` client subcommands against the API server: same flags, same credentials
//! file, same output as the real `qq` (each is run beside qq and compared).

#[path = "qq/common.rs"]
mod common;

use common::*;

/// Runs `atrest <cmd> --host 127.0.0.1 --port P [extra...]`.
fn atrest(s: &TestServer, cmd: &[&str], extra: &[&str]) -> std::process::Output {
    let port = s.port.to_string();
    let mut a: Vec<&str> = cmd.to_vec();
    a.extend_from_slice(&["--host", "127.0.0.1", "--port", &port]);
    a.extend_from_slice(extra);
    s.atrest(&a)
}

#[test]
fn same_output_as_qq() {
    let s = TestServer::start();
    let compare = |cmd: &[&str]| {
        let theirs = s.qq(cmd);
        let ours = atrest(&s, cmd, &[]);
        assert_eq!(out(&ours), out(&theirs), "stdout of {cmd:?}");
        assert_eq!(err(&ours), err(&theirs), "stderr of {cmd:?}");
        assert_eq!(ours.status.code(), theirs.status.code(), "rc of {cmd:?}");
        out(&ours)
    };
    // As root on 127.0.0.1 both use the local-root backdoor.
    compare(&["encryption_get_status"]);
    compare(&["encryption_get_key_store"]);
    assert_eq!(
        compare(&["rotate_encryption_keys"]),
        "Key rotation complete\n"
    );
    compare(&["encryption_get_status"]);
    compare(&["rotate_encryption_keys", "--key-id", "k1"]);
    compare(&["rotate_encryption_keys", "--create-key-with-name", "n"]);
    assert_eq!(s.node.state.lock().unwrap().rotations, 2);

    // KMS settings: qq's flags, after the subcommand's `kms`.
    let d = s.home.path();
    for (n, t) in [("c.pem", "cert"), ("k.pem", "key"), ("ca.pem", "ca")] {
        std::fs::write(d.join(n), t).unwrap();
    }
    let p = |n: &str| d.join(n).to_string_lossy().into_owned();
    let (c, k, ca) = (p("c.pem"), p("k.pem"), p("ca.pem"));
    let port = s.port.to_string();
    let o = s.atrest(&[
        "encryption_set_key_store",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "kms",
        "--client-cert",
        &c,
        "--client-private-key",
        &k,
        "--server-ca-cert",
        &ca,
        "--hostname",
        "kms.example",
        "--port",
        "5699",
        "--create-key-with-name",
        "mk",
    ]);
    assert_eq!(ok(&o), "A new KMS key was created with ID key-1\n");
    assert_eq!(
        s.node.state.lock().unwrap().kms,
        Some(("kms.example".into(), 5699, "key-1".into()))
    );
    compare(&["encryption_get_key_store"]);
    compare(&["encryption_get_status"]);
    // Each run makes a new key, so the ids differ by one.
    let cmd = ["rotate_encryption_keys", "--create-key-with-name", "n2"];
    assert_eq!(
        ok(&s.qq(&cmd)),
        "A new KMS key was created with ID key-2\nKey rotation complete\n"
    );
    let ours = atrest(&s, &cmd, &[]);
    assert_eq!(
        ok(&ours),
        "A new KMS key was created with ID key-3\nKey rotation complete\n"
    );
    let o = s.atrest(&[
        "encryption_set_key_store",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "local",
    ]);
    assert_eq!(ok(&o), "");
    assert_eq!(s.node.state.lock().unwrap().kms, None);
}

#[test]
fn login_writes_qqs_credentials_file() {
    let s = TestServer::start();
    let port = s.port.to_string();

    // atrest login, then qq uses the stored token (and vice versa).
    let o = atrest(&s, &["login", "-u", "admin", "-p", ADMIN_PASSWORD], &[]);
    assert_eq!(ok(&o), "");
    let cred = s
        .home
        .path()
        .join(format!(".config/qumulo/credentials/127.0.0.1_{port}"));
    let text = std::fs::read_to_string(&cred).unwrap();
    assert!(
        text.starts_with("{\"bearer_token\": \"atrest-") && text.ends_with(", \"version\": 1}\n")
    );
    assert!(ok(&s.qq(&["who_am_i"])).contains("\"name\": \"admin\""));

    // A wrong password prints qq's error line.
    let ours = atrest(&s, &["login", "-u", "admin", "-p", "bad"], &[]);
    let theirs = s.qq(&["login", "-u", "admin", "-p", "bad"]);
    assert_eq!(err(&ours), err(&theirs));
    assert_eq!(ours.status.code(), Some(1));

    // An Observers user: 403 on rotation, in qq's words.
    ok(&s.qq(&["auth_add_user", "--name", "otto", "-p", "otto-pw"]));
    ok(&s.qq(&["auth_assign_role", "-r", "Observers", "-t", "otto"]));
    let store = s.home.path().join("otto.cred");
    let store = store.to_str().unwrap();
    ok(&atrest(
        &s,
        &["login", "-u", "otto", "-p", "otto-pw"],
        &["--credentials-store", store],
    ));
    let ours = atrest(
        &s,
        &["rotate_encryption_keys"],
        &["--credentials-store", store],
    );
    let theirs = s.qq(&["--credentials-store", store, "rotate_encryption_keys"]);
    assert_eq!(
        err(&ours),
        "Error 403: http_forbidden_error: Missing privilege PRIVILEGE_ENCRYPTION_WRITE\n"
    );
    assert_eq!(err(&ours), err(&theirs));
    assert_eq!(s.node.state.lock().unwrap().rotations, 0);
    let status = atrest(
        &s,
        &["encryption_get_status"],
        &["--credentials-store", store],
    );
    assert!(ok(&status).contains("\"status\": \"Encrypted\""));

    // logout deletes the file; a bogus store gives qq's 401 line.
    assert_eq!(ok(&atrest(&s, &["logout"], &[])), "");
    assert!(!cred.exists());
    std::fs::write(
        s.home.path().join("bogus"),
        "{\"bearer_token\": \"x\", \"version\": 1}\n",
    )
    .unwrap();
    let bogus = s.home.path().join("bogus");
    let ours = atrest(
        &s,
        &["encryption_get_status"],
        &["--credentials-store", bogus.to_str().unwrap()],
    );
    assert_eq!(
        err(&ours),
        "Error 401: http_unauthorized_error: The session is unknown or has expired\n"
    );
}
