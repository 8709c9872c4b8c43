//! The node's KMS key store: configuration persistence, key fetch at start, health checks.
//! (Being built; until then every KMS request is refused with a clear error.)

use time::OffsetDateTime;

use super::{NewMasterKey, Node};
use crate::api::{ControlError, KmsConfigRequest};

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

fn not_yet() -> ControlError {
    ControlError::BadRequest("the KMS key store is not available in this build yet".into())
}

impl Node {
    /// The last KMS health check.
    pub fn kms_health(&self) -> KmsHealth {
        KmsHealth {
            status: "Configuration Corrupted".into(),
            ..Default::default()
        }
    }

    /// Host, port and creation time of the KMS configuration, when one is active.
    pub fn kms_view(&self) -> Option<(String, u16, OffsetDateTime)> {
        None
    }

    /// Checks a KMS configuration from the API and makes it the next master key source.
    pub fn kms_key_from_request(
        &self,
        _req: KmsConfigRequest,
    ) -> Result<NewMasterKey, ControlError> {
        Err(not_yet())
    }

    /// The KMS key `id` under the active KMS configuration, as the next master key source.
    pub fn kms_key_with_current_config(&self, _id: &str) -> Result<NewMasterKey, ControlError> {
        Err(not_yet())
    }

    /// Creates a key on the KMS.
    pub fn create_kms_key(
        &self,
        _name: &str,
        _cfg: Option<KmsConfigRequest>,
    ) -> Result<String, ControlError> {
        Err(not_yet())
    }
}
