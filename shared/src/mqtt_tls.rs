//! The TLS client side of a device's MQTT connection: trust only the cloud's device CA, and present
//! the device's certificate. ring is the crypto provider (no C toolchain needed beyond ring's own).

use std::sync::Arc;

use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("the CA certificate is not valid PEM: {0}")]
    Ca(String),
    #[error("the client certificate is not valid PEM: {0}")]
    Certificate(String),
    #[error("the private key is not valid PEM: {0}")]
    Key(String),
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A client configuration that trusts `ca_pem` only and authenticates with `cert_pem`/`key_pem`.
pub fn client_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| TlsSetupError::Ca(e.to_string()))?;
        roots.add(cert)?;
    }
    if roots.is_empty() {
        return Err(TlsSetupError::Ca("no certificate found".into()));
    }
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsSetupError::Certificate(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| TlsSetupError::Key(e.to_string()))?;
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?;
    Ok(Arc::new(config))
}
