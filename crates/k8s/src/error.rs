//! The crate's one error type.

/// Everything that can go wrong rendering, applying or watching.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec cannot be rendered: `field` names the offending input.
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },
    /// The Kubernetes API answered with an error (or could not be reached).
    #[error("kubernetes api: {0}")]
    Kube(#[from] kube::Error),
    /// A watch on the cluster failed.
    #[error("kubernetes watch: {0}")]
    Watch(#[from] kube::runtime::watcher::Error),
    /// No usable kubeconfig / in-cluster configuration.
    #[error("kubernetes config: {0}")]
    Config(String),
    /// An object Ferry would change or delete exists without Ferry's
    /// ownership labels (or belongs to another project or service): it is
    /// never adopted or overwritten.
    #[error(
        "{kind} {object} exists but is not managed by this Ferry project ({reason}); \
         rename or remove it, Ferry never adopts objects it did not create"
    )]
    NotOwned {
        kind: String,
        /// `namespace/name`, or the name of a cluster-scoped object.
        object: String,
        reason: String,
    },
    /// The object an operation needs does not exist (or is not Ferry's, so
    /// a selector on Ferry's labels does not see it).
    #[error(
        "{kind} {object} does not exist; it may have finished and been cleaned up, or never been created"
    )]
    NotFound {
        kind: String,
        /// `namespace/name`.
        object: String,
    },
    /// Encoding or decoding a rendered object.
    #[error("encoding: {0}")]
    Encoding(String),
}

impl Error {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// True when the API answered 404 Not Found (or the object was not
    /// found among Ferry's).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
            || matches!(self, Error::Kube(kube::Error::Api(status)) if status.is_not_found())
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Encoding(e.to_string())
    }
}

impl From<serde_yaml_ng::Error> for Error {
    fn from(e: serde_yaml_ng::Error) -> Self {
        Error::Encoding(e.to_string())
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
