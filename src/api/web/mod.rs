//! The web dashboard: a login page, a Dashboard and a Cluster page, served by the API's HTTPS
//! server from text embedded in the binary (`include_str!`). The pages hold no data: their
//! script calls the same REST routes as `qq` with the bearer token of a normal login, so a
//! page shows nothing the user could not read through the API.
//!
//! It owns the page assets, the page paths and the list of warnings the banner shows
//! ([`warnings`]). It never reads keys or drives, and its pages load nothing from any other
//! host (the Content-Security-Policy sent with them says so to the browser).

use time::{Duration, OffsetDateTime};

use super::control::{KeyStoreStatus, KeyStoreType, SlotInfo, SlotState};

/// A static page or asset: its content type and text.
pub(super) struct Asset {
    /// The `Content-Type` header value.
    pub content_type: &'static str,
    /// The text sent as the body.
    pub body: &'static str,
}

const HTML: &str = "text/html; charset=utf-8";

const LOGIN: &str = include_str!("login.html");
const DASHBOARD: &str = include_str!("dashboard.html");
const CLUSTER: &str = include_str!("cluster.html");
const CSS: &str = include_str!("app.css");
const JS: &str = include_str!("app.js");

/// Headers sent with every page: nothing may load from another origin, no framing, no cache.
pub(super) const SECURITY_HEADERS: &[(&str, &str)] = &[
    (
        "content-security-policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    ),
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-store"),
];

/// The asset served at `path` for a GET or HEAD, if `path` is a page path. API routes
/// (`/v1/...`, `/v2/...`) are never pages.
pub(super) fn asset(method: &str, path: &str) -> Option<Asset> {
    if method != "GET" && method != "HEAD" {
        return None;
    }
    let (content_type, body) = match path {
        "/" | "/dashboard" | "/dashboard/" => (HTML, DASHBOARD),
        "/login" | "/login/" => (HTML, LOGIN),
        "/cluster" | "/cluster/" => (HTML, CLUSTER),
        "/web/app.css" => ("text/css; charset=utf-8", CSS),
        "/web/app.js" => ("text/javascript; charset=utf-8", JS),
        _ => return None,
    };
    Some(Asset { content_type, body })
}

/// How long before a certificate's expiry the banner starts warning.
pub(super) const CERT_WARNING_DAYS: i64 = 30;

/// Every warning the banner shows, one sentence each: certificates that expire within
/// [`CERT_WARNING_DAYS`] (or have expired), a master key that is unavailable, drive slots that
/// are missing, dead or hold another volume's drive, then the node's own warnings.
pub(super) fn warnings(
    status: &KeyStoreStatus,
    slots: &[SlotInfo],
    node_warnings: Vec<String>,
    now: OffsetDateTime,
) -> Vec<String> {
    let mut out = Vec::new();

    let certs = [
        ("CA", status.ca_cert_expiry),
        ("client", status.client_cert_expiry),
    ];
    for (which, expiry) in certs {
        let Some(expiry) = expiry else { continue };
        let date = expiry.date();
        if expiry <= now {
            out.push(format!("The KMS {which} certificate expired on {date}."));
        } else if expiry - now <= Duration::days(CERT_WARNING_DAYS) {
            // Whole days left, rounded up: "in 0 days" would read as already expired.
            let days = ((expiry - now).whole_seconds() + 86_399) / 86_400;
            out.push(format!(
                "The KMS {which} certificate expires on {date} (in {days} days)."
            ));
        }
    }

    let key_ok = match status.store_type {
        KeyStoreType::Kms => status.status == "KMS Available",
        KeyStoreType::Local => status.status == "Encrypted",
    };
    if !key_ok {
        out.push(format!(
            "The master key is unavailable (status of the {} key store: {}).",
            status.store_type.as_str(),
            status.status
        ));
    }

    for s in slots {
        let what = match s.state {
            SlotState::Missing => "is missing",
            SlotState::Dead => "is dead",
            SlotState::WrongCluster => "holds a drive of another volume",
            SlotState::Healthy | SlotState::Empty => continue,
        };
        out.push(format!("Drive slot {} ({}) {what}.", s.slot, s.path));
    }

    out.extend(node_warnings);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(store_type: KeyStoreType, text: &str) -> KeyStoreStatus {
        KeyStoreStatus {
            store_type,
            status: text.into(),
            ca_cert_expiry: None,
            client_cert_expiry: None,
            last_key_rotation_time: None,
            last_status_update_time: None,
        }
    }

    fn slot(n: u32, state: SlotState) -> SlotInfo {
        SlotInfo {
            slot: n,
            state,
            path: format!("/d{n}.img"),
            capacity_bytes: 1 << 30,
            rebuild_percent: None,
        }
    }

    #[test]
    fn healthy_node_has_no_warning() {
        let now = OffsetDateTime::now_utc();
        let st = status(KeyStoreType::Local, "Encrypted");
        let slots = [slot(1, SlotState::Healthy), slot(2, SlotState::Empty)];
        assert!(warnings(&st, &slots, Vec::new(), now).is_empty());
        let mut kms = status(KeyStoreType::Kms, "KMS Available");
        kms.ca_cert_expiry = Some(now + Duration::days(31));
        assert!(warnings(&kms, &[], Vec::new(), now).is_empty());
    }

    #[test]
    fn each_condition_warns() {
        let now = OffsetDateTime::now_utc();
        let mut kms = status(KeyStoreType::Kms, "Cannot connect to KMS server.");
        kms.client_cert_expiry = Some(now + Duration::days(10));
        kms.ca_cert_expiry = Some(now - Duration::days(1));
        let slots = [slot(1, SlotState::Missing), slot(2, SlotState::Dead)];
        let w = warnings(&kms, &slots, vec!["Key rotation recommended.".into()], now);
        assert_eq!(w.len(), 6, "{w:?}");
        assert!(w[0].contains("CA certificate expired"));
        assert!(w[1].contains("client certificate expires") && w[1].contains("in 10 days"));
        assert!(w[2].contains("Cannot connect to KMS server."));
        assert_eq!(w[3], "Drive slot 1 (/d1.img) is missing.");
        assert_eq!(w[4], "Drive slot 2 (/d2.img) is dead.");
        assert_eq!(w[5], "Key rotation recommended.");
    }

    #[test]
    fn only_page_paths_are_assets() {
        assert!(asset("GET", "/").is_some());
        assert!(asset("HEAD", "/cluster").is_some());
        assert!(asset("POST", "/login").is_none());
        assert!(asset("GET", "/v1/session/who-am-i").is_none());
        assert!(asset("GET", "/web/../../etc/passwd").is_none());
    }
}
