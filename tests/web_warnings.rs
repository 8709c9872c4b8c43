//! The web dashboard's warning banner, drive slots and KMS details in a real headless
//! Chromium. The real node cannot yet report drive slots or a KMS (the lead adds them behind
//! `NodeControl`), so this test serves the real API and pages in-process over a
//! fault-injecting node: a KMS that stops answering, a drive that goes missing, a certificate
//! about to expire, a rotation recommended after a replacement, a rebuild in progress. The
//! faults are switched on while the pages are open, so the banner must appear (and go away)
//! without a reload.

#[path = "web/webdriver.rs"]
mod webdriver;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use atrest::api::{
    ApiConfig, ClusterOverview, ControlError, KeyStoreStatus, KeyStoreType, KeyStoreView,
    KmsConfigRequest, NodeControl, SetKeyStore, SlotInfo, SlotState,
};
use parking_lot::Mutex;
use serde_json::json;
use time::OffsetDateTime;
use webdriver::{Browser, browser_installed, image_path};

const PASSWORD: &str = "warn-admin-pass-1";
const WAIT: Duration = Duration::from_secs(20);

/// The faults a test switches on.
#[derive(Clone, Default)]
struct Faults {
    kms_stopped: bool,
    drive_missing: bool,
    cert_expiring: bool,
    replaced: bool,
}

/// A node over a KMS with three drive slots, whose state the test changes.
struct FaultyNode {
    faults: Mutex<Faults>,
    created: OffsetDateTime,
}

impl NodeControl for FaultyNode {
    fn key_store_status(&self) -> KeyStoreStatus {
        let f = self.faults.lock().clone();
        let now = OffsetDateTime::now_utc();
        let client_days = if f.cert_expiring { 12 } else { 400 };
        KeyStoreStatus {
            store_type: KeyStoreType::Kms,
            status: if f.kms_stopped {
                "Cannot connect to KMS server.".into()
            } else {
                "KMS Available".into()
            },
            ca_cert_expiry: Some(now + time::Duration::days(900)),
            client_cert_expiry: Some(now + time::Duration::days(client_days)),
            last_key_rotation_time: Some(self.created),
            last_status_update_time: Some(now),
        }
    }

    fn key_store(&self) -> KeyStoreView {
        KeyStoreView::Kms {
            hostname: "127.0.0.1".into(),
            port: 5696,
            key_id: "kmip-key-0042".into(),
            config_creation_time: self.created,
        }
    }

    fn set_key_store(&self, _req: SetKeyStore) -> Result<(), ControlError> {
        Err(ControlError::Unavailable("not in this test".into()))
    }

    fn create_kms_key(
        &self,
        _name: &str,
        _cfg: Option<KmsConfigRequest>,
    ) -> Result<String, ControlError> {
        Err(ControlError::Unavailable("not in this test".into()))
    }

    fn rotate_keys(&self, _key_id: Option<String>) -> Result<(), ControlError> {
        Err(ControlError::Unavailable(
            "Cannot connect to KMS server.".into(),
        ))
    }

    fn cluster_overview(&self) -> ClusterOverview {
        let f = self.faults.lock().clone();
        ClusterOverview {
            total_bytes: 3 << 30,
            used_bytes: 1288 << 20,
            free_bytes: (3 << 30) - (1288 << 20),
            drives_total: 3,
            drives_healthy: if f.drive_missing { 2 } else { 3 },
        }
    }

    fn slots(&self) -> Vec<SlotInfo> {
        let f = self.faults.lock().clone();
        let slot = |n: u32, state, rebuild| SlotInfo {
            slot: n,
            state,
            path: format!("/srv/atrest/d{n}.img"),
            capacity_bytes: 2 << 30,
            rebuild_percent: rebuild,
        };
        vec![
            slot(1, SlotState::Healthy, None),
            if f.drive_missing {
                slot(2, SlotState::Missing, None)
            } else {
                slot(2, SlotState::Healthy, None)
            },
            slot(3, SlotState::Healthy, f.replaced.then_some(42.5)),
        ]
    }

    fn warnings(&self) -> Vec<String> {
        if self.faults.lock().replaced {
            vec!["Key rotation recommended: the drive in slot 3 was replaced.".into()]
        } else {
            Vec::new()
        }
    }
}

fn banner(b: &Browser) -> String {
    if b.is_visible("#warning-banner") {
        b.text_of("warning-banner").unwrap_or_default()
    } else {
        String::new()
    }
}

#[test]
fn warning_banner_slots_and_kms_details_in_chromium() {
    assert!(
        browser_installed(),
        "the browser tests need: apt-get install -y chromium chromium-driver"
    );
    let dir = tempfile::tempdir().unwrap();
    atrest::api::init_state(dir.path(), Some(PASSWORD)).unwrap();
    let node = Arc::new(FaultyNode {
        faults: Mutex::new(Faults::default()),
        created: OffsetDateTime::now_utc() - time::Duration::days(3),
    });
    let mut cfg = ApiConfig::new(dir.path());
    cfg.addr = SocketAddr::from(([127, 0, 0, 1], 0));
    let api = atrest::api::serve(cfg, node.clone()).expect("serve");
    let origin = format!("https://{}", api.local_addr());

    let b = Browser::start();
    b.goto(&format!("{origin}/login"));
    b.type_into("#username", "admin");
    b.type_into("#password", PASSWORD);
    b.click("#login-button");
    b.wait_until("the dashboard", WAIT, |b| b.url().ends_with("/dashboard"));
    b.wait_text("drives", "3 of 3 healthy", WAIT);
    b.wait_text(
        "encryption-state",
        "Data Encrypted (KMS, KMS Available)",
        WAIT,
    );
    assert_eq!(banner(&b), "", "a healthy node shows no banner");

    // The KMS stops: the banner appears without a reload.
    node.faults.lock().kms_stopped = true;
    b.wait_until("the KMS warning", Duration::from_secs(15), |b| {
        banner(b).contains(
            "The master key is unavailable (status of the KMS key store: Cannot connect to KMS \
             server.).",
        )
    });

    // A drive goes missing, a certificate nears expiry, a replacement is rebuilding.
    {
        let mut f = node.faults.lock();
        f.drive_missing = true;
        f.cert_expiring = true;
        f.replaced = true;
    }
    b.wait_until(
        "every warning on the dashboard",
        Duration::from_secs(15),
        |b| {
            let t = banner(b);
            t.contains("Drive slot 2 (/srv/atrest/d2.img) is missing.")
                && t.contains("The KMS client certificate expires on")
                && t.contains("(in 12 days)")
                && t.contains("Key rotation recommended")
        },
    );
    b.wait_text("drives", "2 of 3 healthy", WAIT);
    b.screenshot(&image_path("web-dashboard-warnings.png"));

    // The Cluster page shows the same banner, the KMS details and every slot.
    b.click("#more-details");
    b.wait_until("the cluster page", WAIT, |b| b.url().ends_with("/cluster"));
    b.wait_text("encryption-state", "Data Encrypted", WAIT);
    b.wait_text("key-store-type", "KMS", WAIT);
    b.wait_text("kms-host", "127.0.0.1:5696", WAIT);
    b.wait_text("kms-key-id", "kmip-key-0042", WAIT);
    b.wait_text("client-cert-expiry", "UTC", WAIT);
    b.wait_text("slot-2", "missing", WAIT);
    b.wait_text("slot-3", "42.5 %", WAIT);
    assert!(
        banner(&b).contains("is missing"),
        "banner on the cluster page: {}",
        banner(&b)
    );
    b.screenshot(&image_path("web-cluster-warnings.png"));

    // A rotation that the node refuses shows its error on the page.
    b.click("#rotate-button");
    b.click("#rotate-confirm");
    b.wait_text(
        "rotate-result",
        "Key rotation failed: Cannot connect to KMS server.",
        WAIT,
    );

    // The faults clear: the banner goes away, again without a reload.
    *node.faults.lock() = Faults::default();
    b.wait_until("the banner to clear", Duration::from_secs(15), |b| {
        banner(b).is_empty()
    });
    b.wait_text("slot-2", "healthy", WAIT);

    // The slots route answers in Qumulo's shape.
    let slots = b.js_async(
        "const done = arguments[arguments.length - 1];\
         fetch('/v1/cluster/slots/', {headers: {\
           'Authorization': 'Bearer ' + sessionStorage.getItem('atrest_token')}})\
         .then(r => r.json()).then(done, e => done(String(e)));",
        json!([]),
    );
    assert_eq!(slots[1]["id"], json!("1.2"));
    assert_eq!(slots[1]["state"], json!("healthy"));
    assert_eq!(slots[1]["capacity"], json!((2u64 << 30).to_string()));
    for u in b.loaded_urls() {
        assert!(u.starts_with(&origin), "the page loaded {u}");
    }
    drop(b);
    api.shutdown();
}
