//! The boundary between the REST API and the node: the [`NodeControl`] trait the node
//! implements, and the request and answer types that cross it.
//!
//! The API never touches keys, drives or the key store itself; every encryption route is a
//! call through this trait. The types here carry no key bytes; the one secret that crosses
//! (a KMS client private key, [`SecretPem`]) zeroizes itself and prints nothing.

use serde::Serialize;
use serde::ser::SerializeMap;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::json::rfc3339_nanos;

/// Which store holds the master key, as the REST API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStoreType {
    /// A root-only key file in the node's state directory (`"Local"`).
    Local,
    /// An external KMIP key server (`"KMS"`).
    Kms,
}

impl KeyStoreType {
    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStoreType::Local => "Local",
            KeyStoreType::Kms => "KMS",
        }
    }
}

/// The answer of `GET /v2/encryption/key-store/status`: all six keys are always sent, `null`
/// where a value does not apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyStoreStatus {
    /// The active store.
    pub store_type: KeyStoreType,
    /// One of the documented values: `Not Encrypted`, `Encrypted`, `Configuration Corrupted`,
    /// `KMS Available`, `KMS Authentication Error`, `Cannot connect to KMS server.`,
    /// `KMS Key Not Found`, `KMS Key Inactive`.
    pub status: String,
    /// Expiry of the KMS server's CA certificate (KMS only).
    pub ca_cert_expiry: Option<OffsetDateTime>,
    /// Expiry of the node's KMS client certificate (KMS only).
    pub client_cert_expiry: Option<OffsetDateTime>,
    /// When the master key was last rotated, if ever.
    pub last_key_rotation_time: Option<OffsetDateTime>,
    /// When `status` was last checked.
    pub last_status_update_time: Option<OffsetDateTime>,
}

impl Serialize for KeyStoreStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let time = |t: &Option<OffsetDateTime>| t.map(rfc3339_nanos);
        let mut m = s.serialize_map(Some(6))?;
        m.serialize_entry("type", self.store_type.as_str())?;
        m.serialize_entry("status", &self.status)?;
        m.serialize_entry("ca_cert_expiry", &time(&self.ca_cert_expiry))?;
        m.serialize_entry("client_cert_expiry", &time(&self.client_cert_expiry))?;
        m.serialize_entry(
            "last_key_rotation_time",
            &time(&self.last_key_rotation_time),
        )?;
        m.serialize_entry(
            "last_status_update_time",
            &time(&self.last_status_update_time),
        )?;
        m.end()
    }
}

/// The answer of `GET /v2/encryption/key-store`: the active configuration, without secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyStoreView {
    /// The local store; `status` is `Encrypted` or `Not Encrypted`.
    Local {
        /// The encryption status.
        status: String,
    },
    /// A KMIP key server.
    Kms {
        /// The server's host name.
        hostname: String,
        /// The server's port.
        port: u16,
        /// The KMIP unique identifier of the master key in use.
        key_id: String,
        /// When this configuration was made.
        config_creation_time: OffsetDateTime,
    },
}

impl Serialize for KeyStoreView {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let value = match self {
            KeyStoreView::Local { status } => serde_json::json!({
                "type": "Local",
                "local_store": { "status": status },
            }),
            KeyStoreView::Kms {
                hostname,
                port,
                key_id,
                config_creation_time,
            } => {
                serde_json::json!({
                    "type": "KMS",
                    "kms_store": {
                        "hostname": hostname,
                        "port": port,
                        "key_id": key_id,
                        "config_creation_time": rfc3339_nanos(*config_creation_time),
                    },
                })
            }
        };
        value.serialize(s)
    }
}

/// A PEM text that is a secret (a KMS client private key): zeroized on drop, never printed.
/// It implements neither `Debug` nor `Display` nor `Clone`.
pub struct SecretPem(Zeroizing<String>);

impl SecretPem {
    /// Takes ownership of the text; it is zeroized when this value is dropped.
    pub fn new(text: String) -> Self {
        SecretPem(Zeroizing::new(text))
    }

    /// The PEM text, for the node to hand to its TLS client configuration.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// Moves the text out without copying it (e.g. into the KMIP client's own secret type,
    /// which then owns its zeroizing).
    pub fn into_string(mut self) -> String {
        std::mem::take(&mut *self.0)
    }
}

/// The KMS settings a client sends with `PUT /v2/encryption/key-store` (type `KMS`) or
/// `POST /v2/encryption/external-kms/keys/create` (`kms_config`).
///
/// It implements no `Debug`: it holds the client's private key.
pub struct KmsConfigRequest {
    /// PEM of the node's KMIP client certificate.
    pub client_cert: String,
    /// PEM of the private key of `client_cert`.
    pub client_private_key: SecretPem,
    /// PEM of the CA that signs the KMIP server's certificate.
    pub server_ca_cert: String,
    /// The KMIP server's host name or address.
    pub hostname: String,
    /// The KMIP server's port (qq sends it as a string; both forms are accepted).
    pub port: u16,
    /// The master key's KMIP unique identifier. Always `Some` in [`SetKeyStore::Kms`] (the
    /// API answers 400 before calling the node otherwise); `None` in a key creation request.
    pub key_id: Option<String>,
}

/// The configuration a client asks for with `PUT /v2/encryption/key-store`.
pub enum SetKeyStore {
    /// Move the master key to the local store.
    Local,
    /// Move the master key to a KMIP server, using the key `key_id` of the request.
    Kms(KmsConfigRequest),
}

impl SetKeyStore {
    /// The store type asked for.
    pub fn store_type(&self) -> KeyStoreType {
        match self {
            SetKeyStore::Local => KeyStoreType::Local,
            SetKeyStore::Kms(_) => KeyStoreType::Kms,
        }
    }
}

/// Why the node refused or failed a control call. Each variant carries a description meant
/// for the user (it is sent in the error body): it must never contain key bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The request is wrong (unknown key id, bad certificate, missing KMS settings): 400.
    #[error("{0}")]
    BadRequest(String),
    /// The request conflicts with the node's state (a rotation already running, the store
    /// asked for is already active): 409.
    #[error("{0}")]
    Conflict(String),
    /// Something the node depends on is unavailable (the KMS cannot be reached): 503.
    #[error("{0}")]
    Unavailable(String),
    /// The node failed (I/O error on a drive or the state directory): 500.
    #[error("{0}")]
    Internal(String),
}

impl ControlError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            ControlError::BadRequest(_) => 400,
            ControlError::Conflict(_) => 409,
            ControlError::Unavailable(_) => 503,
            ControlError::Internal(_) => 500,
        }
    }

    /// The `error_class` of the error body.
    pub fn error_class(&self) -> &'static str {
        match self {
            ControlError::BadRequest(_) => "http_bad_request_error",
            ControlError::Conflict(_) => "http_conflict_error",
            ControlError::Unavailable(_) => "http_service_unavailable_error",
            ControlError::Internal(_) => "http_internal_server_error",
        }
    }
}

/// What the API asks of the node. The node implements it; every method may block (it is
/// called from a blocking thread, never from the server's event loop).
pub trait NodeControl: Send + Sync + 'static {
    /// The six fields of `GET /v2/encryption/key-store/status`.
    fn key_store_status(&self) -> KeyStoreStatus;

    /// The active key store configuration, without secrets.
    fn key_store(&self) -> KeyStoreView;

    /// Switches the master key to another store (a rotation whose new key comes from it).
    fn set_key_store(&self, req: SetKeyStore) -> Result<(), ControlError>;

    /// Creates an AES-256 key named `name` on the KMIP server of `cfg`, or of the active
    /// configuration when `cfg` is `None`, and returns its unique identifier.
    fn create_kms_key(
        &self,
        name: &str,
        cfg: Option<KmsConfigRequest>,
    ) -> Result<String, ControlError>;

    /// Rotates the master key. With `None`: to a new key in the active store (a new random
    /// local key; for a KMS, as the node's store defines). With `Some(id)`: to the KMS key `id`.
    fn rotate_keys(&self, key_id: Option<String>) -> Result<(), ControlError>;

    /// Capacity and drive counts of the volume, for the web dashboard's Cluster Overview and
    /// `GET /v1/atrest/overview`. The default knows nothing: all zeros.
    fn cluster_overview(&self) -> ClusterOverview {
        ClusterOverview::default()
    }

    /// Every drive slot of the volume with its state, for `GET /v1/cluster/slots/`. The
    /// default lists none.
    fn slots(&self) -> Vec<SlotInfo> {
        Vec::new()
    }

    /// Node-side warnings for the operator, one sentence each (e.g. "Key rotation recommended:
    /// drive 2 was replaced"). The API adds its own for certificate expiry, the KMS status and
    /// missing or dead slots, so the node need not repeat those. The default has none.
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }

    /// The restriper (resync and rebuild) state, for
    /// `GET /v1/cluster/protection/restriper/status`.
    fn restriper_status(&self) -> serde_json::Value {
        serde_json::json!({"state": "NOT_RUNNING", "phase": "FINISHED", "percent_complete": 100,
            "elapsed_seconds": 0, "data_at_risk": false})
    }

    /// The protection status, for `GET /v1/cluster/protection/status`.
    fn protection_status(&self) -> serde_json::Value {
        serde_json::json!({"protection_system_type": "PROTECTION_SYSTEM_TYPE_EC",
            "blocks_per_stripe": 1, "data_blocks_per_stripe": 1, "max_drive_failures": 0,
            "max_node_failures": 0, "remaining_drive_failures": 0, "remaining_node_failures": 0})
    }

    /// Detaches the drive in `slot` (from 1) as if it were pulled.
    fn drive_pull(&self, slot: u32) -> Result<serde_json::Value, ControlError> {
        Err(ControlError::BadRequest(format!(
            "slot {slot}: drive operations are not supported"
        )))
    }

    /// Brings a pulled drive back (its own image, or `image`); its stale blocks are resynced.
    fn drive_insert(
        &self,
        slot: u32,
        image: Option<String>,
    ) -> Result<serde_json::Value, ControlError> {
        let _ = image;
        Err(ControlError::BadRequest(format!(
            "slot {slot}: drive operations are not supported"
        )))
    }

    /// Puts the blank image `image` in `slot` with a fresh data key and rebuilds it.
    fn drive_replace(&self, slot: u32, image: String) -> Result<serde_json::Value, ControlError> {
        let _ = image;
        Err(ControlError::BadRequest(format!(
            "slot {slot}: drive operations are not supported"
        )))
    }
}

/// Capacity and drive health of the volume (`GET /v1/atrest/overview`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClusterOverview {
    /// Usable bytes of the volume (after replication).
    pub total_bytes: u64,
    /// Bytes in use.
    pub used_bytes: u64,
    /// Bytes still free.
    pub free_bytes: u64,
    /// Drive slots of the volume.
    pub drives_total: u32,
    /// Drives that are online and in sync.
    pub drives_healthy: u32,
}

/// The state of one drive slot, with Qumulo's names on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotState {
    /// Online and in sync (also while resyncing or rebuilding; see `rebuild_percent`).
    Healthy,
    /// Pulled: its image is gone or was taken out.
    Missing,
    /// Failed with I/O errors.
    Dead,
    /// The drive in the slot belongs to another volume.
    WrongCluster,
    /// No drive in the slot.
    Empty,
}

impl SlotState {
    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            SlotState::Healthy => "healthy",
            SlotState::Missing => "missing",
            SlotState::Dead => "dead",
            SlotState::WrongCluster => "wrong_cluster",
            SlotState::Empty => "empty",
        }
    }
}

/// One drive slot (`GET /v1/cluster/slots/` entry, in Qumulo's shape plus atrest fields).
#[derive(Debug, Clone, PartialEq)]
pub struct SlotInfo {
    /// The slot number, from 1.
    pub slot: u32,
    /// The slot's state.
    pub state: SlotState,
    /// The drive's path (image file or block device).
    pub path: String,
    /// Capacity of the drive in bytes.
    pub capacity_bytes: u64,
    /// Progress of a resync or rebuild of this drive, 0 to 100; `None` when none runs.
    pub rebuild_percent: Option<f64>,
}

impl Serialize for SlotInfo {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(11))?;
        m.serialize_entry("id", &format!("1.{}", self.slot))?;
        m.serialize_entry("node_id", &1)?;
        m.serialize_entry("slot", &self.slot)?;
        m.serialize_entry("state", self.state.as_str())?;
        m.serialize_entry("slot_type", "SSD")?;
        m.serialize_entry("disk_type", "SSD")?;
        m.serialize_entry("disk_model", "atrest image")?;
        m.serialize_entry("capacity", &self.capacity_bytes.to_string())?;
        m.serialize_entry("raw_capacity", &self.capacity_bytes.to_string())?;
        m.serialize_entry("path", &self.path)?;
        m.serialize_entry("rebuild_percent", &self.rebuild_percent)?;
        m.end()
    }
}
