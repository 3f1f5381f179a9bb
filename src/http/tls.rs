//! Native TLS with rustls: TLS 1.3 preferred, TLS 1.2 as the floor.
//!
//! rustls implements only modern cipher suites (AEAD with forward secrecy:
//! AES-GCM and ChaCha20-Poly1305 over ECDHE); there is no CBC, RC4, 3DES,
//! static-RSA or export suite to switch off, and no renegotiation or
//! compression. What remains to choose is the protocol floor.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// `Strict-Transport-Security` sent on every response served over TLS: a
/// year, the commonly recommended value. `includeSubDomains` is left to the
/// operator (it affects hosts tessera knows nothing about).
pub const HSTS: &str = "max-age=31536000";

/// Builds the server's TLS configuration from a PEM certificate chain
/// (leaf first) and its PEM private key (PKCS#8, SEC1 or PKCS#1).
pub fn server_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<ServerConfig, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Cert(format!("not a PEM certificate chain ({e})")))?;
    if chain.is_empty() {
        return Err(TlsError::Cert("no CERTIFICATE block found".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| TlsError::Key(format!("not a PEM private key ({e})")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Cert(e.to_string()))?
        .with_no_client_auth()
        // Also checks that the key belongs to the leaf certificate.
        .with_single_cert(chain, key)
        .map(|mut config| {
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            config
        })
        .map_err(|e| TlsError::Key(format!("does not fit the certificate ({e})")))
}

/// Reads both files and builds the configuration.
pub fn load(cert_file: &Path, key_file: &Path) -> Result<ServerConfig, TlsError> {
    let cert = std::fs::read(cert_file)
        .map_err(|e| TlsError::Cert(format!("cannot read {} ({e})", cert_file.display())))?;
    let key = std::fs::read(key_file)
        .map_err(|e| TlsError::Key(format!("cannot read {} ({e})", key_file.display())))?;
    server_config(&cert, &key)
}

/// What is wrong with the TLS files; never quotes key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file.
    #[error("certificate: {0}")]
    Cert(String),
    /// The private key file.
    #[error("private key: {0}")]
    Key(String),
}
