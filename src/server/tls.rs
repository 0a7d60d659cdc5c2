//! TLS with rustls: the proxy's server side (PEM certificate chain and key, ALPN h2 and
//! http/1.1, loaded at start and on every reload) and the client side towards `https://`
//! upstreams (the system's roots, plus a CA file when configured).

use std::path::Path;
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsFiles;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{key}: cannot read {}: {e}", path.display()))?
        .collect();
    let certs =
        certs.map_err(|e| format!("{key}: {} is not PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{key}: no certificate in {}", path.display()));
    }
    Ok(certs)
}

/// The server side, from `[proxy.tls]`. Errors name the key and the file.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, String> {
    let chain = certs(&files.cert, "proxy.tls.cert")?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        format!(
            "proxy.tls.key: {} holds no usable PEM private key: {e}",
            files.key.display()
        )
    })?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("proxy.tls: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("proxy.tls: the certificate and key do not fit together: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The client side: system roots and `ca_file`. ALPN is set by the connector (h2 only for the
/// gRPC client, http/1.1 for the rest).
pub fn client_config(ca_file: Option<&Path>) -> Result<ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        for cert in certs(path, "proxy.upstream_ca_file")? {
            roots
                .add(cert)
                .map_err(|e| format!("proxy.upstream_ca_file: {}: {e}", path.display()))?;
        }
    }
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
