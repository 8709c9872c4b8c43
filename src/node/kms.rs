//! The node's KMS key store: the persisted KMS configuration (`kms.json`, and
//! `kms-pending.json` while a rotation to a KMS key runs), the key fetch at start with retries,
//! proving a configuration before a switch, and the background health check.
//!
//! The KMS master key is only ever held in memory. The configuration files hold the client
//! private key, so they are written mode 0600 through a temporary file and destroyed
//! (overwritten, unlinked, directory synced) when no longer needed. Nothing here logs a key,
//! the client private key or a certificate body.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use zeroize::Zeroizing;

use super::{NewMasterKey, Node, NodeError, now_rfc3339};
use crate::api::{ControlError, KmsConfigRequest};
use crate::crypto::MasterKey;
use crate::drive::KeyKind;
use crate::keystore::kmip::{
    KmipClient, KmipError, KmsConfig, STATUS_AVAILABLE, SecretPem, cert_not_after,
};
use crate::keystore::{KeyStoreError, statedir};

/// The active KMS configuration, in the state directory.
pub const KMS_FILE: &str = "kms.json";
/// The configuration of the KMS key a rotation is moving to; present from step 1 of that
/// rotation until step 4 makes it [`KMS_FILE`].
pub const KMS_PENDING_FILE: &str = "kms-pending.json";

/// A certificate closer than this to its expiry is reported as a warning.
const CERT_WARNING: time::Duration = time::Duration::days(30);

/// Bounds on one conversation with the KMS for a health check or a configuration proof.
const CHECK_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const CHECK_IO_TIMEOUT: Duration = Duration::from_secs(10);

/// How the node deals with its KMS: how long to keep trying at start, how often to check.
#[derive(Clone, Debug)]
pub struct KmsOptions {
    /// How long start-up retries an unreachable KMS before giving up.
    pub retry: Duration,
    /// Time between two health checks of the KMS.
    pub health_interval: Duration,
}

impl Default for KmsOptions {
    fn default() -> Self {
        KmsOptions {
            retry: Duration::from_secs(60),
            health_interval: Duration::from_secs(60),
        }
    }
}

/// The last health check of the KMS key store.
#[derive(Clone, Debug, Default)]
pub struct KmsHealth {
    /// One of the documented status strings.
    pub status: String,
    /// Expiry of the server CA certificate.
    pub ca_cert_expiry: Option<OffsetDateTime>,
    /// Expiry of the client certificate.
    pub client_cert_expiry: Option<OffsetDateTime>,
    /// When the check ran.
    pub checked_at: Option<OffsetDateTime>,
}

/// One KMS configuration as stored in `kms.json` or `kms-pending.json`.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct KmsRecord {
    /// Server, certificates, client private key and master key id.
    pub config: KmsConfig,
    /// When this configuration was made (RFC 3339).
    pub config_creation_time: String,
}

fn store_err(path: &Path, detail: String) -> NodeError {
    NodeError::KeyStore(KeyStoreError::Corrupt {
        path: path.to_path_buf(),
        detail,
    })
}

/// Reads a KMS configuration file; `None` if it does not exist. A file that others can read,
/// or that does not parse, is refused ("Configuration Corrupted").
pub(crate) fn read_record(path: &Path) -> Result<Option<KmsRecord>, NodeError> {
    if !path.exists() {
        return Ok(None);
    }
    statedir::check_secret_file(path)?;
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|source| {
        NodeError::KeyStore(KeyStoreError::Io {
            path: path.to_path_buf(),
            op: "read KMS configuration",
            source,
        })
    })?);
    // serde_json's messages quote no input text beyond a position.
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        store_err(
            path,
            format!("Configuration Corrupted: not a KMS configuration: {e}"),
        )
    })
}

/// Writes a KMS configuration file durably, mode 0600.
pub(crate) fn write_record(path: &Path, rec: &KmsRecord) -> Result<(), NodeError> {
    let bytes = Zeroizing::new(serde_json::to_vec_pretty(rec).expect("serialisable"));
    statedir::write_atomic(path, &bytes, 0o600)?;
    Ok(())
}

/// Makes the pending configuration the active one (step 4 of a rotation to a KMS key). Does
/// nothing if it was already done.
pub(crate) fn promote_pending(dir: &Path) -> Result<(), NodeError> {
    let pending = dir.join(KMS_PENDING_FILE);
    if !pending.exists() {
        return Ok(());
    }
    let current = dir.join(KMS_FILE);
    // The old configuration holds a private key too: wipe it rather than let rename drop it.
    statedir::destroy_file(&current)?;
    std::fs::rename(&pending, &current).map_err(|source| {
        NodeError::KeyStore(KeyStoreError::Io {
            path: current.clone(),
            op: "rename the pending KMS configuration into place",
            source,
        })
    })?;
    statedir::sync_dir(dir)?;
    Ok(())
}

/// Destroys a KMS configuration file of the state directory, if present.
pub(crate) fn destroy_record(dir: &Path, name: &str) -> Result<(), NodeError> {
    let path = dir.join(name);
    if path.exists() {
        statedir::destroy_file(&path)?;
        tracing::info!(file = %path.display(), "removed KMS configuration");
    }
    Ok(())
}

/// The configuration under which KMS key `key_id` is fetched: the pending one first when a
/// rotation is journaled (it may be moving to that key), else the active one.
pub(crate) fn record_for_key(
    dir: &Path,
    key_id: &str,
    rotation_pending: bool,
) -> Result<KmsRecord, NodeError> {
    let mut files: Vec<PathBuf> = Vec::new();
    if rotation_pending {
        files.push(dir.join(KMS_PENDING_FILE));
    }
    files.push(dir.join(KMS_FILE));
    for path in &files {
        if let Some(rec) = read_record(path)?
            && rec.config.key_id == key_id
        {
            return Ok(rec);
        }
    }
    Err(store_err(
        &dir.join(KMS_FILE),
        format!(
            "Configuration Corrupted: the volume's master key {key_id} is held by a KMS, but no \
             KMS configuration for that key is in the state directory"
        ),
    ))
}

fn kms_error(what: String) -> impl FnOnce(KmipError) -> NodeError {
    move |source| NodeError::Kms { what, source }
}

/// Fetches the master key of `rec` (an active AES-256 key). While the KMS cannot be reached,
/// tries again with growing pauses until `retry` has passed; any other refusal (certificates,
/// key not found, key inactive) ends at once.
pub(crate) fn fetch_with_retry(rec: &KmsRecord, retry: Duration) -> Result<MasterKey, NodeError> {
    let cfg = &rec.config;
    let what = format!(
        "master key {} from KMS {}:{}",
        cfg.key_id, cfg.hostname, cfg.port
    );
    let client = KmipClient::new(cfg).map_err(kms_error(what.clone()))?;
    let deadline = Instant::now() + retry;
    let mut pause = Duration::from_millis(500);
    let mut attempt = 1u32;
    loop {
        match client.fetch_master_key(&cfg.key_id) {
            Ok(key) => return Ok(key),
            Err(e @ KmipError::CannotConnect { .. }) => {
                let now = Instant::now();
                if now >= deadline {
                    return Err(kms_error(format!(
                        "{what}: KMS still unreachable after {} s ({attempt} attempts)",
                        retry.as_secs()
                    ))(e));
                }
                tracing::warn!(attempt, error = %e, "KMS unreachable at start; retrying");
                std::thread::sleep(pause.min(deadline - now));
                pause = (pause * 2).min(Duration::from_secs(5));
                attempt += 1;
            }
            Err(e) => return Err(kms_error(what)(e)),
        }
    }
}

/// Converts an API request into a KMIP configuration (`key_id` may be empty for key creation).
fn config_from_request(req: KmsConfigRequest) -> KmsConfig {
    KmsConfig {
        hostname: req.hostname,
        port: req.port,
        client_cert_pem: req.client_cert,
        client_key_pem: SecretPem::new(req.client_private_key.into_string()),
        server_ca_pem: req.server_ca_cert,
        key_id: req.key_id.unwrap_or_default(),
    }
}

/// A configuration refused by the KMS or unusable: 400 with the documented status and the
/// reason.
fn refused(e: KmipError) -> ControlError {
    ControlError::BadRequest(format!(
        "KMS configuration refused: {}: {e}",
        e.status_string()
    ))
}

/// Proves a configuration: connects, and checks that its key is an active AES-256 key whose
/// material the server hands out.
fn prove(config: &KmsConfig) -> Result<(), ControlError> {
    if config.key_id.is_empty() {
        return Err(ControlError::BadRequest("no KMS key id given".into()));
    }
    let client = KmipClient::new(config)
        .map_err(refused)?
        .with_timeouts(CHECK_CONNECT_TIMEOUT, CHECK_IO_TIMEOUT);
    client.fetch_master_key(&config.key_id).map_err(refused)?;
    Ok(())
}

/// Runs one health check of `rec`.
fn check(rec: &KmsRecord) -> KmsHealth {
    let cfg = &rec.config;
    let status = match KmipClient::new(cfg) {
        Ok(client) => match client
            .with_timeouts(CHECK_CONNECT_TIMEOUT, CHECK_IO_TIMEOUT)
            .check_key(&cfg.key_id)
        {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "KMS health check failed");
                e.status_string()
            }
        },
        Err(e) => e.status_string(),
    };
    KmsHealth {
        status: status.to_owned(),
        ca_cert_expiry: cert_not_after(&cfg.server_ca_pem).ok(),
        client_cert_expiry: cert_not_after(&cfg.client_cert_pem).ok(),
        checked_at: Some(OffsetDateTime::now_utc()),
    }
}

/// The warnings a health check result calls for: the key unavailable, a certificate expired
/// or expiring within 30 days.
fn warnings_of(rec: &KmsRecord, h: &KmsHealth) -> Vec<String> {
    let cfg = &rec.config;
    let mut out = Vec::new();
    if h.status != STATUS_AVAILABLE {
        out.push(format!(
            "KMS {}:{} master key {}: {}",
            cfg.hostname, cfg.port, cfg.key_id, h.status
        ));
    }
    let now = OffsetDateTime::now_utc();
    for (what, when) in [
        ("KMS server CA certificate", h.ca_cert_expiry),
        ("KMS client certificate", h.client_cert_expiry),
    ] {
        let Some(when) = when else { continue };
        let stamp = when.format(&Rfc3339).unwrap_or_default();
        if when <= now {
            out.push(format!("{what} expired on {stamp}"));
        } else if when - now <= CERT_WARNING {
            out.push(format!("{what} expires on {stamp} (within 30 days)"));
        }
    }
    out
}

/// The node's KMS state shared with its health thread.
pub(crate) struct KmsRuntime {
    dir: PathBuf,
    current: Mutex<Option<KmsRecord>>,
    health: Mutex<KmsHealth>,
    warnings: Mutex<Vec<String>>,
}

impl KmsRuntime {
    /// The runtime of a node whose volume key is `kind`; for a KMS, the master key was just
    /// fetched under the active configuration, so it starts as available.
    pub(crate) fn open(dir: &Path, kind: KeyKind) -> Result<Arc<KmsRuntime>, NodeError> {
        let rt = Arc::new(KmsRuntime {
            dir: dir.to_path_buf(),
            current: Mutex::new(None),
            health: Mutex::new(KmsHealth::default()),
            warnings: Mutex::new(Vec::new()),
        });
        if kind == KeyKind::Kms {
            rt.reload()?;
        }
        Ok(rt)
    }

    /// Re-reads `kms.json` after a key-store change; a key just fetched counts as available.
    pub(crate) fn reload(&self) -> Result<(), NodeError> {
        let rec = read_record(&self.dir.join(KMS_FILE))?;
        let health = match &rec {
            Some(r) => KmsHealth {
                status: STATUS_AVAILABLE.into(),
                ca_cert_expiry: cert_not_after(&r.config.server_ca_pem).ok(),
                client_cert_expiry: cert_not_after(&r.config.client_cert_pem).ok(),
                checked_at: Some(OffsetDateTime::now_utc()),
            },
            None => KmsHealth::default(),
        };
        if let Some(r) = &rec {
            self.set_warnings(warnings_of(r, &health));
        } else {
            self.warnings.lock().clear();
        }
        *self.health.lock() = health;
        *self.current.lock() = rec;
        Ok(())
    }

    /// Records new warnings; each one not already present is logged.
    fn set_warnings(&self, new: Vec<String>) {
        let mut old = self.warnings.lock();
        for w in new.iter().filter(|w| !old.contains(w)) {
            tracing::warn!("{w}");
        }
        for w in old.iter().filter(|w| !new.contains(w)) {
            tracing::info!(resolved = %w, "KMS warning cleared");
        }
        *old = new;
    }

    /// Checks the KMS of the active configuration once and records the result.
    fn check_now(&self) {
        let Some(rec) = self.current.lock().clone() else {
            return;
        };
        let h = check(&rec);
        // A key-store change while the check ran makes its result stale: drop it.
        let still = self
            .current
            .lock()
            .as_ref()
            .is_some_and(|c| c.config.key_id == rec.config.key_id);
        if still {
            self.set_warnings(warnings_of(&rec, &h));
            *self.health.lock() = h;
        }
    }

    /// Starts the health thread; it ends when the returned sender is dropped.
    pub(crate) fn spawn_health(self: &Arc<Self>, interval: Duration) -> Option<Sender<()>> {
        let (tx, rx) = mpsc::channel::<()>();
        let rt = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("kms-health".into())
            .spawn(move || {
                // A message or a dropped sender (the node is gone) ends the thread.
                while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(interval) {
                    rt.check_now();
                }
            });
        match spawned {
            Ok(_) => Some(tx),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the KMS health thread");
                None
            }
        }
    }
}

impl Node {
    /// The last KMS health check.
    pub fn kms_health(&self) -> KmsHealth {
        let h = self.kms.health.lock().clone();
        if h.status.is_empty() {
            return KmsHealth {
                status: "Configuration Corrupted".into(),
                ..h
            };
        }
        h
    }

    /// Warnings for the operator: the KMS key unavailable, a KMS certificate expiring within
    /// 30 days or expired. Empty when all is well (and always with a local key store).
    pub fn warnings(&self) -> Vec<String> {
        self.kms.warnings.lock().clone()
    }

    /// Host, port and creation time of the KMS configuration, when one is active.
    pub fn kms_view(&self) -> Option<(String, u16, OffsetDateTime)> {
        let cur = self.kms.current.lock();
        let rec = cur.as_ref()?;
        let created = OffsetDateTime::parse(&rec.config_creation_time, &Rfc3339).ok()?;
        Some((rec.config.hostname.clone(), rec.config.port, created))
    }

    /// Proves a KMS configuration from the API (connects, fetches its key, checks that it is
    /// an active AES-256 key) and returns it as the next master key source.
    pub fn kms_key_from_request(
        &self,
        req: KmsConfigRequest,
    ) -> Result<NewMasterKey, ControlError> {
        let config = config_from_request(req);
        prove(&config)?;
        let key_id = config.key_id.clone();
        Ok(NewMasterKey::Kms {
            config,
            key_id,
            config_creation_time: now_rfc3339(),
        })
    }

    /// The KMS key `id` under the active KMS configuration, proven, as the next master key
    /// source. The configuration keeps its creation time.
    pub fn kms_key_with_current_config(&self, id: &str) -> Result<NewMasterKey, ControlError> {
        let rec = self.kms.current.lock().clone().ok_or_else(no_kms)?;
        let mut config = rec.config;
        config.key_id = id.to_owned();
        prove(&config)?;
        Ok(NewMasterKey::Kms {
            config,
            key_id: id.to_owned(),
            config_creation_time: rec.config_creation_time,
        })
    }

    /// Creates an AES-256 key named `name` on the KMS of `cfg`, or of the active configuration
    /// when `cfg` is `None` (an error with a local key store), and returns its id.
    pub fn create_kms_key(
        &self,
        name: &str,
        cfg: Option<KmsConfigRequest>,
    ) -> Result<String, ControlError> {
        let config = match cfg {
            Some(req) => config_from_request(req),
            None => self.kms.current.lock().clone().ok_or_else(no_kms)?.config,
        };
        KmipClient::new(&config)
            .map_err(refused)?
            .with_timeouts(CHECK_CONNECT_TIMEOUT, CHECK_IO_TIMEOUT)
            .create_key(name)
            .map_err(refused)
    }

    /// After a rotation: the active KMS configuration is whatever `kms.json` now holds.
    pub(crate) fn kms_after_rotation(&self) {
        if let Err(e) = self.kms.reload() {
            tracing::error!(error = %e, "cannot re-read the KMS configuration after rotation");
        }
    }
}

fn no_kms() -> ControlError {
    ControlError::BadRequest(
        "No KMS is configured: the key store is Local (use encryption_set_key_store kms)".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate (PEM) valid until `days` days from now.
    fn cert_valid_for(days: i64) -> String {
        let mut params =
            rcgen::CertificateParams::new(vec!["kms.test".to_string()]).expect("params");
        params.not_after = OffsetDateTime::now_utc() + time::Duration::days(days);
        let key = rcgen::KeyPair::generate().expect("key pair");
        params.self_signed(&key).expect("cert").pem()
    }

    fn record(ca: String, client: String) -> KmsRecord {
        KmsRecord {
            config: KmsConfig {
                hostname: "kms.test".into(),
                port: 5696,
                client_cert_pem: client,
                client_key_pem: SecretPem::new(String::new()),
                server_ca_pem: ca,
                key_id: "7".into(),
            },
            config_creation_time: now_rfc3339(),
        }
    }

    fn health_of(rec: &KmsRecord, status: &str) -> KmsHealth {
        KmsHealth {
            status: status.into(),
            ca_cert_expiry: cert_not_after(&rec.config.server_ca_pem).ok(),
            client_cert_expiry: cert_not_after(&rec.config.client_cert_pem).ok(),
            checked_at: Some(OffsetDateTime::now_utc()),
        }
    }

    #[test]
    fn certificates_near_expiry_and_unavailable_keys_are_warnings() {
        let fine = record(cert_valid_for(400), cert_valid_for(400));
        assert!(warnings_of(&fine, &health_of(&fine, STATUS_AVAILABLE)).is_empty());

        let soon = record(cert_valid_for(400), cert_valid_for(10));
        let w = warnings_of(&soon, &health_of(&soon, STATUS_AVAILABLE));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("KMS client certificate expires on"),
            "{w:?}"
        );

        let gone = record(cert_valid_for(-1), cert_valid_for(400));
        let w = warnings_of(&gone, &health_of(&gone, "Cannot connect to KMS server."));
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].contains("kms.test:5696") && w[0].contains("Cannot connect"),
            "{w:?}"
        );
        assert!(
            w[1].starts_with("KMS server CA certificate expired on"),
            "{w:?}"
        );
    }

    #[test]
    fn kms_records_are_private_and_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(KMS_FILE);
        assert!(read_record(&path).expect("absent is fine").is_none());
        let rec = record("ca".into(), "client".into());
        write_record(&path, &rec).expect("write");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = read_record(&path).expect("read").expect("present");
        assert!(back.config == rec.config);

        std::fs::write(&path, b"{").unwrap();
        let err = read_record(&path).err().expect("corrupt");
        assert!(err.to_string().contains("Configuration Corrupted"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            read_record(&path).is_err(),
            "a world-readable file is refused"
        );
    }
}
