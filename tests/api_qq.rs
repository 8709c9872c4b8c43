//! The real `qq` client (PyPI qumulo-api 7.10.2.1, from the venv of `tools/pyenv.sh`)
//! against the API server, for every command of `shared/QQ-API.md`, with exact output.
//!
//! As root, `qq --host 127.0.0.1` uses the local-root backdoor (privileged source port, no
//! credentials file); the 401 tests use `--host 127.1` or a bogus credentials store.

#[path = "qq/common.rs"]
mod common;

use common::*;

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn encryption_commands() {
    let s = TestServer::start();
    let status = ok(&s.qq(&["encryption_get_status"]));
    assert_eq!(
        status,
        "{\n    \"last_status_update_time\": \"2026-05-28T20:26:40.123456789Z\",\n    \
         \"status\": \"Encrypted\",\n    \"type\": \"Local\"\n}\n"
    );
    let store = ok(&s.qq(&["encryption_get_key_store"]));
    assert_eq!(
        store,
        "{\n    \"config_details\": {\n        \"status\": \"Encrypted\"\n    },\n    \
         \"config_type\": \"Local\"\n}\n"
    );

    // Rotation of the local key.
    assert_eq!(
        ok(&s.qq(&["rotate_encryption_keys"])),
        "Key rotation complete\n"
    );
    assert_eq!(s.node.state.lock().unwrap().rotations, 1);
    let status = ok(&s.qq(&["encryption_get_status"]));
    assert!(status.contains("\"last_key_rotation_time\": \"2026-05-28T20:26:40.123456789Z\""));

    // A key id with a local store: the node's 400 reaches qq as its error line.
    let o = s.qq(&["rotate_encryption_keys", "--key-id", "k9"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        err(&o),
        "Error 400: http_bad_request_error: Key id k9 given, but the key store is Local\n"
    );
    // Creating a key with no KMS configured is refused, and nothing rotates.
    let o = s.qq(&["rotate_encryption_keys", "--create-key-with-name", "n1"]);
    assert_eq!(
        err(&o),
        "Error 400: http_bad_request_error: No KMS is configured\n"
    );
    assert_eq!(s.node.state.lock().unwrap().rotations, 1);

    // Switch to a KMS with an existing key id (qq sends the port as a string).
    let d = s.home.path();
    let cert = write(
        d,
        "client.pem",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    let key = write(
        d,
        "client.key",
        "-----BEGIN PRIVATE KEY-----\nBBBB\n-----END PRIVATE KEY-----\n",
    );
    let ca = write(
        d,
        "ca.pem",
        "-----BEGIN CERTIFICATE-----\nCCCC\n-----END CERTIFICATE-----\n",
    );
    let kms = |extra: &[&str]| {
        let mut a = vec![
            "encryption_set_key_store",
            "kms",
            "--client-cert",
            &cert,
            "--client-private-key",
            &key,
            "--server-ca-cert",
            &ca,
            "--hostname",
            "kms.local",
            "--port",
            "5697",
        ];
        a.extend_from_slice(extra);
        s.qq(&a)
    };
    assert_eq!(ok(&kms(&["--key-id", "kid-1"])), "");
    {
        let st = s.node.state.lock().unwrap();
        assert_eq!(
            st.kms,
            Some(("kms.local".to_string(), 5697, "kid-1".to_string()))
        );
        assert_eq!(st.last_private_key_len, 59);
    }
    assert_eq!(
        ok(&s.qq(&["encryption_get_key_store"])),
        "{\n    \"config_details\": {\n        \"config_creation_time\": \
         \"2026-05-28T20:26:40.123456789Z\",\n        \"hostname\": \"kms.local\",\n        \
         \"key_id\": \"kid-1\",\n        \"port\": 5697\n    },\n    \"config_type\": \"KMS\"\n}\n"
    );
    assert_eq!(
        ok(&s.qq(&["encryption_get_status"])),
        "{\n    \"ca_cert_expiry\": \"2027-05-28T20:26:40.123456789Z\",\n    \
         \"client_cert_expiry\": \"2026-06-27T20:26:40.123456789Z\",\n    \
         \"last_key_rotation_time\": \"2026-05-28T20:26:40.123456789Z\",\n    \
         \"last_status_update_time\": \"2026-05-28T20:26:40.123456789Z\",\n    \
         \"status\": \"KMS Available\",\n    \"type\": \"KMS\"\n}\n"
    );

    // Rotation to a given key, then to a key made on the KMS.
    assert_eq!(
        ok(&s.qq(&["rotate_encryption_keys", "--key-id", "kid-2"])),
        "Key rotation complete\n"
    );
    assert_eq!(
        ok(&s.qq(&["rotate_encryption_keys", "--create-key-with-name", "n2"])),
        "A new KMS key was created with ID key-1\nKey rotation complete\n"
    );
    assert_eq!(
        s.node.state.lock().unwrap().kms.as_ref().unwrap().2,
        "key-1"
    );

    // Set a KMS with a key created from the given settings.
    assert_eq!(
        ok(&kms(&["--create-key-with-name", "n3"])),
        "A new KMS key was created with ID key-2\n"
    );
    assert_eq!(
        s.node.state.lock().unwrap().kms.as_ref().unwrap().2,
        "key-2"
    );

    // And back to the local store.
    assert_eq!(ok(&s.qq(&["encryption_set_key_store", "local"])), "");
    assert_eq!(s.node.state.lock().unwrap().kms, None);

    // The audit log names actions and key ids, never the private key.
    let audit = s.audit();
    assert!(audit.contains("\"action\":\"rotate_keys\""), "{audit}");
    assert!(audit.contains("\"action\":\"set_key_store\""), "{audit}");
    assert!(audit.contains("kid-2"), "{audit}");
    assert!(!audit.contains("BBBB"), "{audit}");
}

#[test]
fn login_logout_and_401() {
    let s = TestServer::start();
    let port = s.port.to_string();

    // Login stores qq's credentials file; who_am_i then runs as admin.
    // `localhost` is in qq's list too: the backdoor answers as root.
    assert!(ok(&s.qq_at("localhost", &["who_am_i"])).contains("\"name\": \"root\""));

    assert_eq!(
        ok(&s.qq(&["login", "-u", "admin", "-p", ADMIN_PASSWORD])),
        ""
    );
    let cred = s
        .home
        .path()
        .join(format!(".config/qumulo/credentials/127.0.0.1_{port}"));
    let text = std::fs::read_to_string(&cred).unwrap();
    assert!(
        text.starts_with("{\"bearer_token\": \"atrest-") && text.ends_with(", \"version\": 1}\n")
    );
    let me = ok(&s.qq(&["who_am_i"]));
    assert!(me.contains("\"name\": \"admin\""), "{me}");
    assert!(me.contains("This user is granted the following roles:\n[\n    \"Administrators\"\n]"));
    assert!(
        me.contains("User 500 is a member of following groups: ["),
        "{me}"
    );
    assert!(
        me.contains("Expanded identity information for user 500: {"),
        "{me}"
    );

    // A second login carries the stored token; the server ignores it.
    assert_eq!(
        ok(&s.qq(&["login", "-u", "admin", "-p", ADMIN_PASSWORD])),
        ""
    );

    // Wrong password.
    let o = s.qq(&["login", "-u", "admin", "-p", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        err(&o),
        "Error 401: auth_login_failed_error: Invalid username or password\n"
    );
    let o = s.qq(&["login", "-u", "ghost", "-p", "nope"]);
    assert_eq!(
        err(&o),
        "Error 401: auth_login_failed_error: Invalid username or password\n"
    );
    assert!(
        s.audit()
            .contains("\"outcome\":\"failure: bad credentials\"")
    );
    assert!(!s.audit().contains("nope"));

    // logout removes the file and tells the server nothing.
    assert_eq!(ok(&s.qq(&["logout"])), "");
    assert!(!cred.exists());

    // A bogus credentials store: the token is unknown.
    let bogus = s.home.path().join("bogus");
    std::fs::write(
        &bogus,
        "{\"bearer_token\": \"atrest-00\", \"version\": 1}\n",
    )
    .unwrap();
    let o = s.qq(&[
        "--credentials-store",
        bogus.to_str().unwrap(),
        "encryption_get_status",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        err(&o),
        "Error 401: http_unauthorized_error: The session is unknown or has expired\n"
    );

    // `::ffff:127.0.0.1` is not in qq's list of local hosts, so qq uses no privileged port: no
    // backdoor, and no credentials. The connection still goes to 127.0.0.1. (`--host 127.1`
    // cannot serve here: Python sends it as TLS SNI, which rustls refuses as malformed.)
    let o = s.qq_at("::ffff:127.0.0.1", &["encryption_get_status"]);
    assert_eq!(
        err(&o),
        "Error 401: http_unauthorized_error: Need to log in first to establish credentials.\n"
    );
    let o = s.qq_at("::ffff:127.0.0.1", &["rotate_encryption_keys"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(s.node.state.lock().unwrap().rotations, 0);
}

#[test]
fn observer_gets_403_and_nothing_changes() {
    let s = TestServer::start();
    let added = ok(&s.qq(&["auth_add_user", "--name", "olga", "-p", "olga-pw"]));
    assert!(added.contains("\"name\": \"olga\""), "{added}");
    assert_eq!(
        ok(&s.qq(&["auth_assign_role", "-r", "observers", "-t", "olga"])),
        ""
    );

    let store = s.home.path().join("olga.cred");
    let store = store.to_str().unwrap();
    assert_eq!(
        ok(&s.qq(&[
            "--credentials-store",
            store,
            "login",
            "-u",
            "olga",
            "-p",
            "olga-pw"
        ])),
        ""
    );
    let as_olga = |args: &[&str]| {
        let mut a = vec!["--credentials-store", store];
        a.extend_from_slice(args);
        s.qq(&a)
    };
    ok(&as_olga(&["encryption_get_status"]));
    ok(&as_olga(&["encryption_get_key_store"]));

    let o = as_olga(&["rotate_encryption_keys"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        err(&o),
        "Error 403: http_forbidden_error: Missing privilege PRIVILEGE_ENCRYPTION_WRITE\n"
    );
    let o = as_olga(&["encryption_set_key_store", "local"]);
    assert_eq!(
        err(&o),
        "Error 403: http_forbidden_error: Missing privilege PRIVILEGE_ENCRYPTION_WRITE\n"
    );
    let o = as_olga(&["auth_create_role", "-r", "Mine"]);
    assert_eq!(
        err(&o),
        "Error 403: http_forbidden_error: Missing privilege PRIVILEGE_ROLE_WRITE\n"
    );
    assert_eq!(s.node.state.lock().unwrap().rotations, 0);
    assert!(!ok(&s.qq(&["auth_list_roles", "--json"])).contains("Mine"));

    let audit = s.audit();
    assert!(
        audit.contains("\"user\":\"olga\",") && audit.contains("privilege_denied"),
        "{audit}"
    );

    // who_am_i works for her, with her roles.
    let me = ok(&as_olga(&["who_am_i"]));
    assert!(me.contains("[\n    \"Observers\"\n]"), "{me}");
}

#[test]
fn roles_and_users() {
    let s = TestServer::start();
    let d = s.home.path();
    let privs = write(
        d,
        "privs",
        "PRIVILEGE_ENCRYPTION_READ\nPRIVILEGE_ROLE_READ\n",
    );

    assert_eq!(
        ok(&s.qq(&[
            "auth_create_role",
            "-r",
            "Ops",
            "-d",
            "Operators",
            "-p",
            &privs
        ])),
        ""
    );
    let o = s.qq(&["auth_create_role", "-r", "ops"]);
    assert_eq!(
        err(&o),
        "Error 409: http_conflict_error: Role ops already exists\n"
    );
    assert_eq!(
        ok(&s.qq(&["auth_list_role", "-r", "ops"])),
        "Operators\nMembers:\n"
    );

    // -G/-R read the ETag and send it back in If-Match.
    ok(&s.qq(&[
        "auth_modify_role",
        "-r",
        "Ops",
        "-G",
        "PRIVILEGE_ENCRYPTION_WRITE",
        "-R",
        "PRIVILEGE_ROLE_READ",
    ]));
    ok(&s.qq(&["auth_modify_role", "-r", "Ops", "-d", "Key operators"]));
    assert_eq!(
        ok(&s.qq(&["auth_list_privileges", "-r", "Ops"])),
        "PRIVILEGE_ENCRYPTION_READ: Read the status and configuration of encryption at rest\n\
         PRIVILEGE_ENCRYPTION_WRITE: Change the encryption key store and rotate the master key\n"
    );
    let roles = ok(&s.qq(&["auth_list_roles", "--json"]));
    assert!(
        roles.contains("\"description\": \"Key operators\""),
        "{roles}"
    );

    // Users: add, list, set password (by name), members, unassign, delete.
    let added = ok(&s.qq(&[
        "auth_add_user",
        "--name",
        "bob",
        "-p",
        "pw",
        "--uid",
        "1234",
    ]));
    assert!(
        added.contains("\"id\": \"1000\"") && added.contains("\"uid\": \"1234\""),
        "{added}"
    );
    assert!(
        added.contains("Expanded identity information for user 1000: {"),
        "{added}"
    );
    let users = ok(&s.qq(&["auth_list_users"]));
    assert!(users.contains("\"name\": \"admin\"") && users.contains("\"name\": \"bob\""));
    assert_eq!(
        ok(&s.qq(&["auth_set_password", "--id", "bob", "-p", "pw2"])),
        "Changed password for bob\n"
    );
    let o = s.qq(&["auth_set_password", "--id", "nobody", "-p", "x"]);
    assert_eq!(
        err(&o),
        "Command error: Unable to convert \"nobody\" to a user id\n"
    );

    ok(&s.qq(&["auth_assign_role", "-r", "Ops", "-t", "bob"]));
    ok(&s.qq(&["auth_assign_role", "-r", "Ops", "-t", "uid:77"]));
    ok(&s.qq(&["auth_assign_role", "-r", "Ops", "-t", "Everyone"]));
    let members = ok(&s.qq(&["auth_list_role", "-r", "Ops"]));
    assert!(members.starts_with("Key operators\nMembers:\n    bob\n        auth_id    1000\n"));
    assert!(members.contains(
        "    auth_id:12884901965\n        auth_id    12884901965\n        uid        77\n"
    ));
    assert!(
        members
            .contains("    Everyone\n        auth_id    8589934592\n        sid        S-1-1-0\n")
    );

    // bob (via his role) may now rotate.
    let store = d.join("bob.cred");
    let store = store.to_str().unwrap();
    ok(&s.qq(&[
        "--credentials-store",
        store,
        "login",
        "-u",
        "bob",
        "-p",
        "pw2",
    ]));
    assert_eq!(
        ok(&s.qq(&["--credentials-store", store, "rotate_encryption_keys"])),
        "Key rotation complete\n"
    );

    ok(&s.qq(&["auth_unassign_role", "-r", "Ops", "-t", "bob"]));
    let members = ok(&s.qq(&["auth_list_role", "-r", "Ops"]));
    assert!(!members.contains("bob"), "{members}");
    let o = s.qq(&["auth_unassign_role", "-r", "Ops", "-t", "bob"]);
    assert_eq!(o.status.code(), Some(1));

    assert_eq!(
        ok(&s.qq(&["auth_delete_user", "--id", "bob"])),
        "User was deleted.\n"
    );
    assert!(!ok(&s.qq(&["auth_list_users"])).contains("bob"));
    let o = s.qq(&["--credentials-store", store, "encryption_get_status"]);
    assert_eq!(o.status.code(), Some(1), "a deleted user's token must die");

    assert_eq!(ok(&s.qq(&["auth_delete_role", "-r", "Ops"])), "");
    let o = s.qq(&["auth_delete_role", "-r", "Observers"]);
    assert_eq!(
        err(&o),
        "Error 409: http_conflict_error: Built-in role Observers cannot be deleted\n"
    );
    let o = s.qq(&["auth_list_role", "-r", "Ops"]);
    assert_eq!(err(&o), "Error 404: http_not_found_error: No role Ops\n");
}
