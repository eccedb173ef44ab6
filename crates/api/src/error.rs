//! The one error type of `ferry-api`.

/// api errors. Messages name the setting at fault and never contain secrets.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} (`ferry-api generate-key` also prints a new key)")]
    Key(#[source] ferry_db::Error),
    #[error("{0}")]
    Db(#[from] ferry_db::Error),
    #[error(transparent)]
    Common(#[from] ferry_common::Error),
    /// A request field is malformed; the message starts with the field name.
    #[error("{0}")]
    InvalidArgument(String),
    /// No, or no valid, credential.
    #[error("{0}")]
    Unauthenticated(String),
    /// Authenticated, but the role or grant does not allow the action.
    #[error("{0}")]
    PermissionDenied(String),
    /// Absent, or in an organization the caller does not belong to.
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// Too many failed attempts: locked out for a while.
    #[error("too many failed attempts; retry in {retry_after_secs} s")]
    Throttled { retry_after_secs: u64 },
    /// A dependency (the Kubernetes API) failed; details only in the log.
    #[error("{0}")]
    Unavailable(String),
    /// A server-side bug or broken invariant (details only in the log).
    #[error("internal error: {0}")]
    Internal(String),
}

/// Constraint violations are the caller's conflict, not an outage: a unique
/// index says the thing exists already, a foreign key that what it names is
/// gone or still in use. Handlers that know better map them first (naming
/// the field); this is the deliberate default.
impl From<ferry_db::sea_orm::DbErr> for Error {
    fn from(err: ferry_db::sea_orm::DbErr) -> Self {
        use ferry_db::sea_orm::SqlErr;
        match err.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(detail)) => {
                tracing::debug!(%detail, "unique violation");
                Error::AlreadyExists("it conflicts with an existing resource".into())
            }
            Some(SqlErr::ForeignKeyConstraintViolation(detail)) => {
                tracing::debug!(%detail, "foreign key violation");
                Error::FailedPrecondition(
                    "a resource it refers to no longer exists, or it is still in use".into(),
                )
            }
            _ => Error::Db(ferry_db::Error::Db(err)),
        }
    }
}

/// The one mapping of cluster errors: a foreign object in the way is the
/// caller's precondition, a spec that cannot render names its field, the
/// rest is the Kubernetes API being unavailable (details only in the log).
impl From<ferry_k8s::Error> for Error {
    fn from(err: ferry_k8s::Error) -> Self {
        match err {
            ferry_k8s::Error::NotOwned { .. } => Error::FailedPrecondition(err.to_string()),
            ferry_k8s::Error::Invalid { field, reason } => {
                Error::FailedPrecondition(format!("cannot render: {field}: {reason}"))
            }
            other => Error::Unavailable(other.to_string()),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for tonic::Status {
    /// Logs the full error; the caller gets a generic message with a code
    /// that says whose problem it is.
    fn from(err: Error) -> Self {
        // The caller's own mistakes are not server errors.
        match err {
            Error::InvalidArgument(m) => return tonic::Status::invalid_argument(m),
            Error::Unauthenticated(m) => return tonic::Status::unauthenticated(m),
            Error::PermissionDenied(m) => return tonic::Status::permission_denied(m),
            Error::NotFound(m) => return tonic::Status::not_found(m),
            Error::AlreadyExists(m) => return tonic::Status::already_exists(m),
            Error::FailedPrecondition(m) => return tonic::Status::failed_precondition(m),
            Error::Throttled { retry_after_secs } => {
                let mut status = tonic::Status::resource_exhausted(format!(
                    "too many failed attempts; retry in {retry_after_secs} s"
                ));
                status
                    .metadata_mut()
                    .insert("retry-after", retry_after_secs.into());
                return status;
            }
            _ => {}
        }
        tracing::error!(error = %err, "api request failed");
        match err {
            Error::Key(_) => {
                tonic::Status::failed_precondition("server encryption is not configured")
            }
            Error::Db(ferry_db::Error::Db(_)) => tonic::Status::unavailable("database unavailable"),
            Error::Unavailable(_) => {
                tonic::Status::unavailable("the Kubernetes API is unavailable; retry later")
            }
            // The stored value is lost to this row (wrong key, or copied from
            // another row); name where, never what, and never the reason.
            Error::Db(ferry_db::Error::Decrypt { table, column, .. }) => tonic::Status::data_loss(
                format!("a stored secret in {table}.{column} could not be decrypted"),
            ),
            _ => tonic::Status::internal("internal error"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_are_deliberate_and_messages_safe() {
        let status = tonic::Status::from(Error::Db(ferry_db::Error::Config(
            "postgres://u:hunter2@h".into(),
        )));
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(!status.message().contains("hunter2"));
        let status = tonic::Status::from(Error::Key(ferry_db::Error::KeyMissing("x".into())));
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        let status = tonic::Status::from(Error::Db(ferry_db::Error::Decrypt {
            table: "service_env_vars".into(),
            column: "value_encrypted".into(),
            reason: "unknown key id abcdef01".into(),
        }));
        assert_eq!(status.code(), tonic::Code::DataLoss);
        assert!(
            status
                .message()
                .contains("service_env_vars.value_encrypted"),
            "{status:?}"
        );
        assert!(!status.message().contains("abcdef01"));
    }
}
