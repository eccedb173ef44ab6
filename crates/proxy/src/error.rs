//! The one error type of `ferry-proxy`.

use std::path::PathBuf;

/// Proxy errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Common(#[from] ferry_common::Error),
    #[error("proxy I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A snapshot (feed, on-disk copy or routes file) failed validation; the
    /// previous routing table stays in place.
    #[error("invalid snapshot: {0}")]
    InvalidSnapshot(String),
    #[error("cannot read routes file {path}: {source}")]
    RoutesFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("routes file {path} is not a valid snapshot: {source}")]
    RoutesJson {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// Unusable command-line or environment configuration.
    #[error("configuration error: {0}")]
    Config(String),
    /// Certificate or key material that rustls cannot use (never includes key bytes).
    #[error("TLS configuration error: {0}")]
    Tls(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for tonic::Status {
    /// Logs the detail; callers only learn that the proxy failed.
    fn from(err: Error) -> Self {
        tracing::error!(error = %err, "proxy request failed");
        tonic::Status::internal("internal proxy error")
    }
}
