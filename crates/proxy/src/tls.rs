//! TLS termination: a rustls `ServerConfig` whose certificate resolver reads
//! the current routing table. Certificates are parsed when a snapshot is
//! applied ([`CertStore::build`]), never per handshake; SNI picks an exact
//! name, then a one-label wildcard, then the configured default
//! certificate, and otherwise the handshake is refused.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Once};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::ProxyState;
use crate::config::Certificate;
use crate::metrics::Metrics;
use crate::{Error, Result};

/// Certificates by SNI name, compiled from a snapshot.
#[derive(Debug, Default)]
pub struct CertStore {
    exact: HashMap<Box<str>, Arc<CertifiedKey>>,
    /// Keyed by the suffix after `*.`.
    wildcard: HashMap<Box<str>, Arc<CertifiedKey>>,
    /// The parsed key of each certificate of the snapshot, in order.
    parsed: Vec<Option<Arc<CertifiedKey>>>,
}

impl CertStore {
    /// Parses every certificate; one that rustls cannot use is skipped
    /// (logged and counted) so it cannot block route updates. Certificates
    /// unchanged since `previous` (the last snapshot's certificates and
    /// their store) are not parsed again: a route change with many
    /// certificates then costs no key parsing.
    pub fn build(
        certs: &[Certificate],
        previous: Option<(&[Certificate], &CertStore)>,
        metrics: &Metrics,
    ) -> Self {
        let known: HashMap<&str, usize> = previous
            .map(|(certs, _)| {
                certs
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.cert_pem.as_str(), i))
                    .collect()
            })
            .unwrap_or_default();
        let mut store = Self::default();
        store.parsed.reserve(certs.len());
        let mut bad = 0;
        for cert in certs {
            let reused = previous.and_then(|(old, old_store)| {
                let i = *known.get(cert.cert_pem.as_str())?;
                if old.get(i)?.key_pem != cert.key_pem {
                    return None;
                }
                old_store.parsed.get(i)?.clone()
            });
            let parsed = match reused {
                Some(key) => Ok(key),
                None => certified_key(cert.cert_pem.as_bytes(), cert.key_pem.as_bytes()),
            };
            store.parsed.push(parsed.as_ref().ok().cloned());
            match parsed {
                Ok(key) => {
                    for host in &cert.hosts {
                        let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
                        match host.strip_prefix("*.") {
                            Some(suffix) => store.wildcard.insert(suffix.into(), key.clone()),
                            None => store.exact.insert(host.into(), key.clone()),
                        };
                    }
                }
                Err(err) => {
                    bad += 1;
                    tracing::warn!(hosts = ?cert.hosts, error = %err, "skipping unusable certificate");
                }
            }
        }
        metrics
            .bad_certificates
            .store(bad, std::sync::atomic::Ordering::Relaxed);
        store
    }

    /// The certificate for an SNI name (already lowercase per RFC 6066).
    pub fn get(&self, name: &str) -> Option<&Arc<CertifiedKey>> {
        let name = name.trim_end_matches('.');
        if let Some(key) = self.exact.get(name) {
            return Some(key);
        }
        let (label, suffix) = name.split_once('.')?;
        if label.is_empty() {
            return None;
        }
        self.wildcard.get(suffix)
    }

    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A chain and key from PEM text. Errors never include key material.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<CertifiedKey>> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Tls(format!("certificate PEM: {e}")))?;
    if chain.is_empty() {
        return Err(Error::Tls("no certificate in PEM".to_owned()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|_| Error::Tls("private key PEM is unreadable".to_owned()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|_| Error::Tls("unsupported private key type".to_owned()))?;
    let certified = CertifiedKey::new(chain, signing);
    // Catches a key that does not belong to the certificate.
    certified
        .keys_match()
        .map_err(|e| Error::Tls(format!("certificate and key do not match: {e}")))?;
    Ok(Arc::new(certified))
}

/// Reads the `--default-cert` / `--default-key` pair.
pub fn load_default(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| Error::RoutesFile {
            path: p.to_owned(),
            source,
        })
    };
    certified_key(&read(cert)?, &read(key)?)
}

/// Resolves SNI against the current table.
#[derive(Debug)]
struct Resolver {
    state: Arc<ProxyState>,
    default: Option<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = hello.server_name() {
            let table = self.state.table();
            if let Some(key) = table.certs().get(name) {
                return Some(key.clone());
            }
        }
        self.default.clone()
    }
}

/// Installs ring as the process-wide rustls provider (idempotent).
pub fn install_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err only means another provider is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The server config for the HTTPS listener (ALPN h2, http/1.1).
pub fn server_config(
    state: Arc<ProxyState>,
    default: Option<Arc<CertifiedKey>>,
) -> Result<Arc<rustls::ServerConfig>> {
    install_provider();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Resolver { state, default }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
