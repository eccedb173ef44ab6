//! The one error type of `ferry-builder`.

/// Builder errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Common(#[from] ferry_common::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for tonic::Status {
    /// Logs the detail; callers only learn that the builder failed.
    fn from(err: Error) -> Self {
        tracing::error!(error = %err, "builder request failed");
        match err {
            Error::Common(_) => tonic::Status::internal("internal builder error"),
        }
    }
}
