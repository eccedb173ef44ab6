//! The one error type of `ferry-builder`.
//!
//! Git failures, watch-path skips and failed builds are not errors here:
//! they are terminal events of the RunBuild stream, which the api records.
//! These are the failures of the call itself.

/// Builder errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Common(#[from] ferry_common::Error),
    /// A request field is malformed: `field` names it as the API does
    /// (`repositoryUrl`, `watchPaths[2]`, `buildArgs[NODE_ENV]`).
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// The builder is not set up to do what was asked (no registry, a
    /// configured value the render refuses); the message names the setting.
    #[error("{0}")]
    Config(String),
    /// The cluster refused or could not be reached.
    #[error(transparent)]
    Kube(#[from] ferry_k8s::Error),
    #[error("builder I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for tonic::Status {
    /// Logs the detail; callers learn what they can act on and nothing of
    /// the cluster's internals.
    fn from(err: Error) -> Self {
        use tonic::Status;
        match err {
            // The caller's own input, echoed back by field name.
            Error::Invalid { .. } => Status::invalid_argument(err.to_string()),
            Error::Config(message) => {
                tracing::warn!(%message, "builder configuration refused a request");
                Status::failed_precondition(message)
            }
            Error::Kube(ferry_k8s::Error::NotOwned { .. }) => {
                tracing::error!(error = %err, "a build object is not Ferry's");
                Status::failed_precondition(
                    "a Kubernetes object of this build exists but is not managed by Ferry",
                )
            }
            Error::Kube(e) => {
                tracing::error!(error = %e, "kubernetes request failed");
                Status::unavailable("the Kubernetes API could not be reached; try again")
            }
            Error::Common(_) | Error::Io(_) => {
                tracing::error!(error = %err, "builder request failed");
                Status::internal("internal builder error")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_deliberate() {
        let status = tonic::Status::from(Error::invalid("watchPaths[2]", "is empty"));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(status.message(), "watchPaths[2]: is empty");
        let status = tonic::Status::from(Error::Kube(ferry_k8s::Error::Config(
            "https://10.0.0.1:6443 refused".into(),
        )));
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(!status.message().contains("10.0.0.1"));
        let status = tonic::Status::from(Error::Io(std::io::Error::other("/var/secret/x")));
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(!status.message().contains("/var"));
    }
}
