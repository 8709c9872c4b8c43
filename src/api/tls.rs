//! The server's TLS identity: a self-signed certificate made on first start and kept in
//! `STATE/api/tls-cert.pem` and `STATE/api/tls-key.pem` (mode 0600), and the rustls server
//! configuration (ring provider) built from it.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use zeroize::Zeroizing;

use super::store::write_atomic;

/// The rustls crypto provider used by the server and the client (ring; no aws-lc, no
/// OpenSSL).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads the certificate and key of `api_dir`, making a self-signed pair first if there is
/// none.
pub fn load_or_create(api_dir: &Path) -> io::Result<Arc<ServerConfig>> {
    let cert_path = api_dir.join("tls-cert.pem");
    let key_path = api_dir.join("tls-key.pem");
    if !cert_path.exists() || !key_path.exists() {
        create(&cert_path, &key_path)?;
    }

    let bad = |what: &Path, e: rustls_pki_types::pem::Error| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", what.display()),
        )
    };
    let certs = CertificateDer::pem_file_iter(&cert_path)
        .map_err(|e| bad(&cert_path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&cert_path, e))?;
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| bad(&key_path, e))?;

    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("TLS identity: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn create(cert_path: &Path, key_path: &Path) -> io::Result<()> {
    let names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let made = rcgen::generate_simple_self_signed(names).map_err(io::Error::other)?;
    let key_pem = Zeroizing::new(made.signing_key.serialize_pem());
    // The key goes first: a certificate without its key would be useless.
    write_atomic(key_path, key_pem.as_bytes())?;
    write_atomic(cert_path, made.cert.pem().as_bytes())?;
    tracing::info!(cert = %cert_path.display(), "made a self-signed TLS certificate");
    Ok(())
}
