//! KMIP key server client: fetches and manages the node master key on an external KMIP server.
//!
//! This module owns everything the crate says to a KMIP server: the TTLV wire encoding
//! ([`ttlv`]), the message layout of KMIP 1.2 requests and responses, mutual TLS (rustls with
//! the ring provider, TLS 1.2 or 1.3, the server checked against the configured CA and
//! hostname, this node authenticated by its client certificate), and the mapping of every
//! failure to one of the key store statuses the management API reports
//! ([`KmipError::status_string`]).
//!
//! It never writes a key to disk, never logs key bytes, and none of its errors or `Debug`
//! outputs carries key material or the client private key. Log lines and errors name the
//! server (host and port) and the key id.

mod client;
mod config;
pub mod ttlv;

pub use client::{KeyAttributes, KeyState, KmipClient, STATUS_AVAILABLE};
pub use config::{KmsConfig, SecretPem, cert_not_after};

/// Errors of the KMIP client. Each maps to one documented key store status
/// ([`KmipError::status_string`]). Descriptions name the server and key id, never key bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KmipError {
    /// No TCP connection could be made, or the server stopped answering (timeout, closed
    /// connection).
    #[error("cannot connect to KMS server {host}:{port}: {reason}")]
    CannotConnect {
        /// Server host name or address.
        host: String,
        /// Server port.
        port: u16,
        /// What failed.
        reason: String,
    },
    /// The TLS handshake failed (server certificate not trusted or not for this host name,
    /// client certificate refused or expired), or the server refused the client's identity.
    #[error("KMS authentication with {host}:{port} failed: {reason}")]
    Authentication {
        /// Server host name or address.
        host: String,
        /// Server port.
        port: u16,
        /// What failed.
        reason: String,
    },
    /// The server has no object with this id visible to this client, or the object is not a
    /// 256-bit AES symmetric key.
    #[error("KMS key {key_id:?} not found on {host}:{port}: {reason}")]
    KeyNotFound {
        /// Server host name or address.
        host: String,
        /// Server port.
        port: u16,
        /// The key id asked for.
        key_id: String,
        /// What the server said, or what was wrong with the object.
        reason: String,
    },
    /// The key exists but is not in the Active state.
    #[error("KMS key {key_id:?} on {host}:{port} is {state}, not Active")]
    KeyInactive {
        /// Server host name or address.
        host: String,
        /// Server port.
        port: u16,
        /// The key id.
        key_id: String,
        /// The state the server reported.
        state: KeyState,
    },
    /// The KMS configuration cannot be used: unreadable certificate or key PEM, a key that
    /// does not match the certificate, an invalid host name.
    #[error("KMS configuration corrupted: {reason}")]
    ConfigCorrupted {
        /// What is wrong.
        reason: String,
    },
    /// The server's answer is not a well-formed KMIP response to the request sent.
    #[error("KMS server {host}:{port} sent an invalid response: {reason}")]
    Protocol {
        /// Server host name or address.
        host: String,
        /// Server port.
        port: u16,
        /// What was wrong with the response.
        reason: String,
    },
    /// The server carried the request but refused it for a reason other than the ones above.
    #[error("KMS server {host}:{port} refused {operation} (result reason {reason:#x}): {message}")]
    OperationFailed {
        /// Server host name or address.
        host: String,
        /// Server port.
        port: u16,
        /// The KMIP operation.
        operation: &'static str,
        /// The KMIP Result Reason code.
        reason: u32,
        /// The server's Result Message.
        message: String,
    },
}

impl KmipError {
    /// The key store status string the management API reports for this error, exactly as
    /// documented for `GET /v2/encryption/key-store/status`. A malformed response or a refused
    /// operation means the key server cannot be used, and reports as a connection failure.
    pub fn status_string(&self) -> &'static str {
        match self {
            KmipError::CannotConnect { .. }
            | KmipError::Protocol { .. }
            | KmipError::OperationFailed { .. } => "Cannot connect to KMS server.",
            KmipError::Authentication { .. } => "KMS Authentication Error",
            KmipError::KeyNotFound { .. } => "KMS Key Not Found",
            KmipError::KeyInactive { .. } => "KMS Key Inactive",
            KmipError::ConfigCorrupted { .. } => "Configuration Corrupted",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_strings_are_the_documented_ones() {
        let host = || "kms.example".to_owned();
        let cases = [
            (
                KmipError::CannotConnect {
                    host: host(),
                    port: 5696,
                    reason: "refused".into(),
                },
                "Cannot connect to KMS server.",
            ),
            (
                KmipError::Authentication {
                    host: host(),
                    port: 1,
                    reason: "bad cert".into(),
                },
                "KMS Authentication Error",
            ),
            (
                KmipError::KeyNotFound {
                    host: host(),
                    port: 1,
                    key_id: "7".into(),
                    reason: "no such object".into(),
                },
                "KMS Key Not Found",
            ),
            (
                KmipError::KeyInactive {
                    host: host(),
                    port: 1,
                    key_id: "7".into(),
                    state: KeyState::Deactivated,
                },
                "KMS Key Inactive",
            ),
            (
                KmipError::ConfigCorrupted { reason: "x".into() },
                "Configuration Corrupted",
            ),
        ];
        for (err, status) in cases {
            assert_eq!(err.status_string(), status, "{err}");
        }
    }
}
