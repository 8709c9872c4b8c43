//! The node as the REST API sees it: [`NodeControl`] over a started [`Node`].

use std::sync::Arc;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{NewMasterKey, Node, NodeError};
use crate::api::{
    ControlError, KeyStoreStatus, KeyStoreType, KeyStoreView, KmsConfigRequest, NodeControl,
    SetKeyStore,
};
use crate::drive::KeyKind;

/// The API's handle on the node.
pub struct NodeService {
    node: Arc<Node>,
}

impl NodeService {
    /// Serves `node` to the API.
    pub fn new(node: Arc<Node>) -> Self {
        NodeService { node }
    }
}

fn parse_time(s: &Option<String>) -> Option<OffsetDateTime> {
    s.as_deref()
        .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
}

/// How a node error reaches an API client: a refusal of the request, or a failure of the node.
fn control_error(e: NodeError) -> ControlError {
    match e {
        NodeError::Usage(m) => ControlError::BadRequest(m),
        // The KMS refused the new key or could not be reached: the request cannot be served
        // with that configuration, and nothing changed.
        e @ NodeError::Kms { .. } => ControlError::BadRequest(e.to_string()),
        NodeError::Busy { .. } => ControlError::Conflict(e.to_string()),
        other => ControlError::Internal(other.to_string()),
    }
}

impl NodeControl for NodeService {
    fn key_store_status(&self) -> KeyStoreStatus {
        let cfg = self.node.config();
        match cfg.key.kind {
            KeyKind::Local => KeyStoreStatus {
                store_type: KeyStoreType::Local,
                status: "Encrypted".into(),
                ca_cert_expiry: None,
                client_cert_expiry: None,
                last_key_rotation_time: parse_time(&cfg.last_key_rotation_time),
                last_status_update_time: Some(OffsetDateTime::now_utc()),
            },
            KeyKind::Kms => {
                let h = self.node.kms_health();
                KeyStoreStatus {
                    store_type: KeyStoreType::Kms,
                    status: h.status,
                    ca_cert_expiry: h.ca_cert_expiry,
                    client_cert_expiry: h.client_cert_expiry,
                    last_key_rotation_time: parse_time(&cfg.last_key_rotation_time),
                    last_status_update_time: h.checked_at,
                }
            }
        }
    }

    fn key_store(&self) -> KeyStoreView {
        let cfg = self.node.config();
        match (cfg.key.kind, self.node.kms_view()) {
            (KeyKind::Kms, Some((hostname, port, created))) => KeyStoreView::Kms {
                hostname,
                port,
                key_id: cfg.key.key_id,
                config_creation_time: created,
            },
            _ => KeyStoreView::Local {
                status: "Encrypted".into(),
            },
        }
    }

    fn set_key_store(&self, req: SetKeyStore) -> Result<(), ControlError> {
        match req {
            SetKeyStore::Local => {
                if self.node.config().key.kind == KeyKind::Local {
                    return Ok(());
                }
                self.node
                    .rotate(NewMasterKey::Local)
                    .map(|_| ())
                    .map_err(control_error)
            }
            SetKeyStore::Kms(req) => {
                let new = self.node.kms_key_from_request(req)?;
                self.node.rotate(new).map(|_| ()).map_err(control_error)
            }
        }
    }

    fn create_kms_key(
        &self,
        name: &str,
        cfg: Option<KmsConfigRequest>,
    ) -> Result<String, ControlError> {
        self.node.create_kms_key(name, cfg)
    }

    fn rotate_keys(&self, key_id: Option<String>) -> Result<(), ControlError> {
        let kind = self.node.config().key.kind;
        let new = match (kind, key_id) {
            (KeyKind::Local, None) => NewMasterKey::Local,
            (KeyKind::Local, Some(id)) => {
                return Err(ControlError::BadRequest(format!(
                    "key id {id} given, but the key store is Local; switch to a KMS first \
                     (encryption_set_key_store kms)"
                )));
            }
            (KeyKind::Kms, None) => {
                return Err(ControlError::BadRequest(
                    "the key store is a KMS: give the new key with --key-id or \
                     --create-key-with-name"
                        .into(),
                ));
            }
            (KeyKind::Kms, Some(id)) => self.node.kms_key_with_current_config(&id)?,
        };
        self.node.rotate(new).map(|_| ()).map_err(control_error)
    }

    fn cluster_overview(&self) -> crate::api::ClusterOverview {
        self.node.overview()
    }

    fn slots(&self) -> Vec<crate::api::SlotInfo> {
        self.node.slot_infos()
    }

    fn warnings(&self) -> Vec<String> {
        self.node.node_warnings()
    }

    fn protection_status(&self) -> serde_json::Value {
        self.node.protection_json()
    }

    fn restriper_status(&self) -> serde_json::Value {
        self.node.restriper_json()
    }

    fn drive_pull(&self, slot: u32) -> Result<serde_json::Value, ControlError> {
        self.node.drive_pull(slot)
    }

    fn drive_insert(
        &self,
        slot: u32,
        image: Option<String>,
    ) -> Result<serde_json::Value, ControlError> {
        self.node.drive_insert(slot, image)
    }

    fn drive_replace(&self, slot: u32, image: String) -> Result<serde_json::Value, ControlError> {
        self.node.drive_replace(slot, image)
    }
}
