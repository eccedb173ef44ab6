//! The one error type of `ferry-proxy`.

/// Proxy errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Common(#[from] ferry_common::Error),
    #[error("proxy I/O error: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for tonic::Status {
    /// Logs the detail; callers only learn that the proxy failed.
    fn from(err: Error) -> Self {
        tracing::error!(error = %err, "proxy request failed");
        match err {
            Error::Common(_) | Error::Io(_) => tonic::Status::internal("internal proxy error"),
        }
    }
}
