//! The KMS configuration (server address, certificates, client private key, key id) and its
//! conversion into a rustls client configuration; certificate expiry for the status API.
//!
//! The client private key is a [`SecretPem`]: zeroized on drop, hidden from `Debug`.

use std::fmt;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use super::KmipError;

/// A PEM text that is secret (the client private key): zeroized on drop, never shown by
/// `Debug`. It serializes as a plain string, for the node's root-only configuration file.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretPem(String);

impl PartialEq for SecretPem {
    fn eq(&self, other: &Self) -> bool {
        // Constant time in the contents (the length is not secret).
        use subtle::ConstantTimeEq;
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl Eq for SecretPem {}

impl SecretPem {
    /// Wraps a PEM text.
    pub fn new(pem: String) -> Self {
        SecretPem(pem)
    }

    /// The PEM text, for building a TLS configuration or persisting the configuration.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl Drop for SecretPem {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for SecretPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretPem(<redacted>)")
    }
}

/// How to reach and authenticate to the KMIP server, and which key is the master key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KmsConfig {
    /// Server host name or IP address; the server certificate must be valid for it.
    pub hostname: String,
    /// Server TCP port (5696 is KMIP's registered port).
    pub port: u16,
    /// This node's client certificate (PEM, optionally followed by its chain).
    pub client_cert_pem: String,
    /// The private key of the client certificate (PEM: PKCS#8, SEC1 or PKCS#1).
    pub client_key_pem: SecretPem,
    /// The CA certificate(s) (PEM) that the server's certificate must chain to.
    pub server_ca_pem: String,
    /// KMIP Unique Identifier of the master key.
    pub key_id: String,
}

impl fmt::Debug for KmsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The private key is left out entirely; certificates are public but long.
        f.debug_struct("KmsConfig")
            .field("hostname", &self.hostname)
            .field("port", &self.port)
            .field(
                "client_cert_pem",
                &format_args!("<{} bytes>", self.client_cert_pem.len()),
            )
            .field(
                "server_ca_pem",
                &format_args!("<{} bytes>", self.server_ca_pem.len()),
            )
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

fn corrupted(reason: impl Into<String>) -> KmipError {
    KmipError::ConfigCorrupted {
        reason: reason.into(),
    }
}

/// Every certificate of a PEM text, or an error naming `what` if there is none.
fn pem_certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, KmipError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| corrupted(format!("{what}: unreadable PEM: {e}")))?;
    if certs.is_empty() {
        return Err(corrupted(format!("{what}: no certificate in PEM")));
    }
    Ok(certs)
}

impl KmsConfig {
    /// The server name the server certificate is checked against.
    pub(crate) fn server_name(&self) -> Result<ServerName<'static>, KmipError> {
        ServerName::try_from(self.hostname.clone())
            .map_err(|_| corrupted(format!("invalid KMS host name {:?}", self.hostname)))
    }

    /// Builds the rustls client configuration: ring provider, TLS 1.2 and 1.3, server checked
    /// against `server_ca_pem`, client authenticated with `client_cert_pem`/`client_key_pem`.
    pub(crate) fn tls_config(&self) -> Result<Arc<rustls::ClientConfig>, KmipError> {
        let mut roots = RootCertStore::empty();
        for ca in pem_certs(&self.server_ca_pem, "server CA certificate")? {
            roots
                .add(ca)
                .map_err(|e| corrupted(format!("server CA certificate not usable: {e}")))?;
        }
        let chain = pem_certs(&self.client_cert_pem, "client certificate")?;
        // The PEM parser's errors may quote a line of the input: say only what kind of failure.
        let key = PrivateKeyDer::from_pem_slice(self.client_key_pem.expose_secret().as_bytes())
            .map_err(|e| {
                corrupted(match e {
                    rustls::pki_types::pem::Error::NoItemsFound => {
                        "no private key in client key PEM"
                    }
                    _ => "client private key PEM is unreadable",
                })
            })?;

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
            .map_err(|e| corrupted(format!("TLS setup: {e}")))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| corrupted(format!("client certificate and key not usable: {e}")))?;
        Ok(Arc::new(config))
    }
}

/// The end of the validity period ("not after") of the first certificate in a PEM text; the
/// API reports it as `ca_cert_expiry` and `client_cert_expiry`.
pub fn cert_not_after(pem: &str) -> Result<time::OffsetDateTime, KmipError> {
    let der = pem_certs(pem, "certificate")?.remove(0);
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| corrupted(format!("certificate is not valid X.509: {e}")))?;
    Ok(cert.validity().not_after.to_datetime())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_private_key() {
        let config = KmsConfig {
            hostname: "127.0.0.1".into(),
            port: 5696,
            client_cert_pem: "CERT".into(),
            client_key_pem: SecretPem::new("-----BEGIN PRIVATE KEY-----\nSECRETKEYTEXT".into()),
            server_ca_pem: "CA".into(),
            key_id: "42".into(),
        };
        let shown = format!("{config:?} {:?}", config.client_key_pem);
        assert!(!shown.contains("SECRETKEYTEXT"), "{shown}");
        assert!(
            shown.contains("127.0.0.1") && shown.contains("42"),
            "{shown}"
        );
    }

    #[test]
    fn serde_round_trip_keeps_every_field() {
        let config = KmsConfig {
            hostname: "kms".into(),
            port: 1,
            client_cert_pem: "c".into(),
            client_key_pem: SecretPem::new("k".into()),
            server_ca_pem: "a".into(),
            key_id: "9".into(),
        };
        let json = serde_json::to_string(&config).expect("serializes");
        let back: KmsConfig = serde_json::from_str(&json).expect("parses");
        assert!(back == config);
    }

    #[test]
    fn garbage_pem_is_configuration_corrupted() {
        let err = cert_not_after("not a pem").unwrap_err();
        assert_eq!(err.status_string(), "Configuration Corrupted");
        let config = KmsConfig {
            hostname: "bad host name!".into(),
            port: 1,
            client_cert_pem: String::new(),
            client_key_pem: SecretPem::default(),
            server_ca_pem: String::new(),
            key_id: String::new(),
        };
        assert_eq!(
            config.tls_config().unwrap_err().status_string(),
            "Configuration Corrupted"
        );
        assert_eq!(
            config.server_name().unwrap_err().status_string(),
            "Configuration Corrupted"
        );
    }
}
