//! TLS configuration from PEM files (`docs/api.md`, "Access control and TLS").
//!
//! `--tls-cert` and `--tls-key` make the one port speak HTTPS to clients and
//! peers. `--tls-ca` names the CA that peers' certificates chain to; with it:
//! - the server asks every connection for a client certificate, accepts
//!   connections without one (clients), refuses a handshake whose
//!   certificate does not chain to the CA, and tells the router whether the
//!   connection presented a verified one ([`PeerCertificate`]), which peer
//!   routes require;
//! - the peer client trusts only that CA and presents the node's own
//!   certificate as its client certificate (mutual TLS).
//!
//! Only the `ring` provider is compiled in (the one reqwest already uses).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The TLS files of one node, as given on the command line.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain of this node (leaf first).
    pub cert: PathBuf,
    /// PEM private key of that certificate.
    pub key: PathBuf,
    /// PEM CA certificate(s) that peers' certificates must chain to.
    pub ca: Option<PathBuf>,
}

/// Whether the connection a request came on presented a client certificate
/// that chains to `--tls-ca`. Put in every request's extensions on a TLS
/// connection; absent on plain connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCertificate {
    /// A verified client certificate was presented.
    pub verified: bool,
}

/// The loaded TLS configuration of a node: its server side and the client
/// side its peer transport uses.
#[derive(Clone)]
pub struct NodeTls {
    /// For the accept loop.
    pub server: Arc<ServerConfig>,
    /// For calls to peers when `--tls-ca` is given: trusts only that CA and
    /// presents the node's certificate. Without it, peers are verified like
    /// any HTTPS server, against the public roots reqwest bundles.
    pub peer_client: Option<ClientConfig>,
    /// Whether peer routes require a verified client certificate.
    pub peers_need_certificate: bool,
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeTls")
            .field("peers_need_certificate", &self.peers_need_certificate)
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file (at least one).
pub fn load_certs(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let fail = |e: &dyn std::fmt::Display| format!("{flag} {}: {e}", path.display());
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(&e))?;
    if certs.is_empty() {
        return Err(fail(&"no PEM certificate in the file"));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        format!(
            "--tls-key {}: {e} (expected a PEM private key: PKCS#8, PKCS#1 or SEC1)",
            path.display()
        )
    })
}

fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path, "--tls-ca")? {
        roots
            .add(cert)
            .map_err(|e| format!("--tls-ca {}: {e}", path.display()))?;
    }
    Ok(roots)
}

impl TlsFiles {
    /// Loads and checks every file: a bad file, a key that does not match
    /// the certificate or an unusable CA is a one-line error.
    pub fn load(&self) -> Result<NodeTls, String> {
        let certs = load_certs(&self.cert, "--tls-cert")?;
        let key = load_key(&self.key)?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let (builder, roots) = match &self.ca {
            Some(ca) => {
                let roots = Arc::new(load_roots(ca)?);
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
                        .allow_unauthenticated()
                        .build()
                        .map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
                (builder.with_client_cert_verifier(verifier), Some(roots))
            }
            None => (builder.with_no_client_auth(), None),
        };
        let mut server = builder
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(|e| {
                format!(
                    "--tls-cert {} / --tls-key {}: {e}",
                    self.cert.display(),
                    self.key.display()
                )
            })?;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        let peer_client = match roots {
            Some(roots) => Some(
                ClientConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| format!("TLS: {e}"))?
                    .with_root_certificates(roots)
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| format!("--tls-cert as client certificate: {e}"))?,
            ),
            None => None,
        };
        Ok(NodeTls {
            server: Arc::new(server),
            peer_client,
            peers_need_certificate: self.ca.is_some(),
        })
    }
}

/// The first byte of every TLS connection: a handshake record.
pub const TLS_HANDSHAKE_RECORD: u8 = 0x16;
