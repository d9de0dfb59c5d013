//! The KBS listener's TLS, on the client crate's crypto provider and PEM reader.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use vouch_kbs_client::tls::provider;

pub use vouch_kbs_client::tls::certificates;

/// The listener's side: a certificate chain (leaf first) and its private key (PEM).
pub fn acceptor(
    chain: Vec<CertificateDer<'static>>,
    key: &Path,
) -> Result<tokio_rustls::TlsAcceptor, String> {
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| e.to_string())?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("the certificate and key do not make a usable pair: {e}"))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
