//! The web dashboard end to end in a real headless Chromium against the real `atrest` binary:
//! a formatted and mounted volume serving its API and pages on 127.0.0.1. A logged-out
//! visitor is sent to the login page; the admin logs in, opens the Dashboard, follows "More
//! details" to the Cluster page, finds "Data Encrypted", rotates the master key and sees the
//! last rotation time change; an Observers user sees the pages without the rotate button and
//! is refused by the API. Screenshots go to docs/images/.
//!
//! Needs the Debian packages `chromium` and `chromium-driver`, root and /dev/fuse.

mod common;
#[path = "web/webdriver.rs"]
mod webdriver;

use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use atrest::api::client::Client;
use common::{Mount, ok, s};
use serde_json::json;
use webdriver::{Browser, browser_installed, free_port, image_path};

const ADMIN_PASSWORD: &str = "web-admin-pass-1";
const OBSERVER: &str = "watcher";
const OBSERVER_PASSWORD: &str = "watcher-pass-1";
const WAIT: Duration = Duration::from_secs(20);

/// A formatted volume mounted with its API on a free 127.0.0.1 port.
struct Node {
    mount: Option<Mount>,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Node {
    fn start() -> Node {
        let dir = tempfile::Builder::new()
            .prefix("atrest-web-")
            .tempdir()
            .expect("tempdir");
        let state = dir.path().join("state");
        let pw = dir.path().join("admin-password");
        std::fs::write(&pw, ADMIN_PASSWORD).unwrap();
        let d0 = dir.path().join("d0.img");
        let d1 = dir.path().join("d1.img");
        ok(&common::atrest(&[
            "format",
            "--state-dir",
            &s(&state),
            "--drive",
            &s(&d0),
            "--drive",
            &s(&d1),
            "--drive-size",
            "64M",
            "--replicas",
            "2",
            "--admin-password-file",
            &s(&pw),
        ]));
        let port = free_port();
        let api = format!("127.0.0.1:{port}");
        let mount = Mount::start(&state, &dir.path().join("mnt"), &["--api", &api]);
        wait_listening(port);
        Node {
            mount: Some(mount),
            port,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// A client of the node's API as local root (qq's backdoor: root, loopback, port < 1024).
    fn root_client(&self) -> Client {
        Client::new("127.0.0.1", self.port, None)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(m) = self.mount.take() {
            drop(m);
        }
    }
}

fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the API did not listen on port {port} within 20 s");
}

fn login(b: &Browser, node: &Node, user: &str, password: &str) {
    b.goto(&node.url("/login"));
    b.type_into("#username", user);
    b.type_into("#password", password);
    b.click("#login-button");
    b.wait_until("the dashboard after login", WAIT, |b| {
        b.url().ends_with("/dashboard")
    });
}

/// Every URL the page loaded is on the node's own origin.
fn assert_local_only(b: &Browser, node: &Node) {
    let origin = node.url("/");
    for u in b.loaded_urls() {
        assert!(
            u.starts_with(&origin),
            "the page loaded {u}, not from {origin}"
        );
    }
}

#[test]
fn dashboard_cluster_rotation_and_observer_in_chromium() {
    assert!(
        browser_installed(),
        "the browser tests need: apt-get install -y chromium chromium-driver"
    );
    let node = Node::start();

    // An Observers user, added through the API like `qq auth_add_user` + `auth_assign_role`.
    let mut root = node.root_client();
    root.send(
        "POST",
        "/v1/users/",
        Some(&json!({"name": OBSERVER, "primary_group": "0", "uid": "",
                     "password": OBSERVER_PASSWORD, "home_directory": null})),
    )
    .expect("add the observer user");
    root.send(
        "POST",
        "/v1/auth/roles/Observers/members",
        Some(&json!({"name": OBSERVER})),
    )
    .expect("assign Observers");

    let b = Browser::start();

    // A logged-out visitor is sent to the login page, from any page.
    for page in ["/", "/dashboard", "/cluster"] {
        b.goto(&node.url(page));
        b.wait_until("the redirect to /login", WAIT, |b| {
            b.url().contains("/login")
        });
        assert!(b.is_visible("#login-form"));
    }

    // A wrong password is refused on the page.
    b.goto(&node.url("/login"));
    b.type_into("#username", "admin");
    b.type_into("#password", "not-the-password");
    b.click("#login-button");
    b.wait_text("login-error", "Login failed", WAIT);
    assert!(b.url().contains("/login"));

    // The admin logs in and opens the Dashboard.
    login(&b, &node, "admin", ADMIN_PASSWORD);
    b.wait_visible("#overview-card", WAIT);
    b.wait_text("encryption-state", "Data Encrypted", WAIT);
    b.wait_text("user-name", "admin", WAIT);
    let card = b.text_of("overview-card").unwrap();
    for label in [
        "Cluster Overview",
        "Capacity used",
        "Capacity free",
        "Drives",
        "More details",
    ] {
        assert!(
            card.contains(label),
            "the overview card lacks {label:?}: {card}"
        );
    }
    // Live: the figures refresh without a reload.
    let first = b.wait_text("updated", ":", WAIT);
    b.wait_until("a refresh of the dashboard", Duration::from_secs(15), |b| {
        b.text_of("updated")
            .is_some_and(|t| t != first && t.contains(':'))
    });
    assert!(
        !b.is_visible("#warning-banner"),
        "a healthy node shows no warning"
    );
    b.screenshot(&image_path("web-dashboard.png"));
    assert_local_only(&b, &node);

    // "More details" leads to the Cluster page, which says "Data Encrypted".
    b.click("#more-details");
    b.wait_until("the cluster page", WAIT, |b| b.url().ends_with("/cluster"));
    b.wait_text("encryption-state", "Data Encrypted", WAIT);
    b.wait_text("key-store-type", "Local", WAIT);
    b.wait_text("key-store-status", "Encrypted", WAIT);
    b.wait_visible("#rotate-button", WAIT);
    let before = b.wait_text("last-rotation", "", WAIT);
    b.screenshot(&image_path("web-cluster.png"));
    assert_local_only(&b, &node);

    // Rotate the master key from the page, with its confirmation.
    b.click("#rotate-button");
    b.wait_visible("#rotate-confirm", WAIT);
    b.click("#rotate-confirm");
    b.wait_text(
        "rotate-result",
        "Key rotation complete",
        Duration::from_secs(60),
    );
    let after = {
        let mut t = String::new();
        b.wait_until("the last rotation time to change", WAIT, |b| {
            t = b.text_of("last-rotation").unwrap_or_default();
            t != before && t.contains("UTC")
        });
        t
    };

    // A rotation made elsewhere (the API, as qq would) shows up without a reload.
    std::thread::sleep(Duration::from_millis(1100));
    root.send("POST", "/v2/encryption/rotate-keys", Some(&json!({})))
        .expect("rotate through the API");
    b.wait_until(
        "the page to show the API's rotation",
        Duration::from_secs(15),
        |b| {
            b.text_of("last-rotation")
                .is_some_and(|t| t != after && t.contains("UTC"))
        },
    );

    // A drive pulled on the real node brings up the warning banner; reinserted, it goes.
    root.send("POST", "/v1/atrest/drives/2/pull", Some(&json!({})))
        .expect("pull a drive through the API");
    b.wait_until("the missing-drive banner", Duration::from_secs(15), |b| {
        b.is_visible("#warning-banner")
            && b.text_of("warning-banner")
                .is_some_and(|t| t.contains("is missing"))
    });
    root.send("POST", "/v1/atrest/drives/2/insert", Some(&json!({})))
        .expect("reinsert the drive through the API");
    b.wait_until("the banner to clear", Duration::from_secs(30), |b| {
        !b.is_visible("#warning-banner")
    });

    // Log out: back to the login page, and the pages need a login again.
    b.click("#logout");
    b.wait_until("the login page after logout", WAIT, |b| {
        b.url().contains("/login")
    });
    b.goto(&node.url("/cluster"));
    b.wait_until("the redirect to /login", WAIT, |b| {
        b.url().contains("/login")
    });

    // An Observers user sees the pages, no rotate button, and the API refuses a rotation.
    login(&b, &node, OBSERVER, OBSERVER_PASSWORD);
    b.wait_text("encryption-state", "Data Encrypted", WAIT);
    b.click("#more-details");
    b.wait_until("the cluster page", WAIT, |b| b.url().ends_with("/cluster"));
    b.wait_text("encryption-state", "Data Encrypted", WAIT);
    b.wait_text("key-store-type", "Local", WAIT);
    assert!(
        !b.is_visible("#rotate-button"),
        "an observer must not see the rotate button"
    );
    let status = b.js_async(
        "const done = arguments[arguments.length - 1];\
         fetch('/v2/encryption/rotate-keys', {method: 'POST', headers: {\
           'Content-Type': 'application/json',\
           'Authorization': 'Bearer ' + sessionStorage.getItem('atrest_token')}, body: '{}'})\
         .then(r => done(r.status), e => done(String(e)));",
        json!([]),
    );
    assert_eq!(
        status,
        json!(403),
        "the API must refuse an observer's rotation"
    );
    b.wait_text("last-rotation", "UTC", WAIT);
    assert_local_only(&b, &node);
    drop(b);
    assert!(Path::new(&image_path("web-cluster.png")).exists());
}
