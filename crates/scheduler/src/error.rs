//! The one error type of `ferry-scheduler`.

/// Scheduler errors. Messages name the setting at fault and never contain secrets.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Key(#[source] ferry_db::Error),
    #[error("{0}")]
    Db(#[from] ferry_db::Error),
    #[error(
        "the database schema is not migrated ({pending} pending migrations, first: {first}); \
         start ferry-api (it migrates on start) or run `ferry-api migrate up`"
    )]
    SchemaMissing { pending: usize, first: String },
    #[error("could not read the migration state: {0}")]
    SchemaCheck(String),
    #[error(transparent)]
    Common(#[from] ferry_common::Error),
    #[error("database: {0}")]
    Sql(#[from] ferry_db::sea_orm::DbErr),
    #[error("kubernetes: {0}")]
    Kube(#[from] ferry_k8s::Error),
    /// The ACME CA refused or failed (its own words), or what it sent
    /// could not be used.
    #[error("ACME: {0}")]
    Acme(String),
    /// A DNS-01 record could not be published (the server's answer).
    #[error("DNS-01: {0}")]
    Dns(String),
    /// A flag's value cannot be used; the message names the flag (never
    /// its value when it is a secret). Stops start-up.
    #[error("invalid configuration: {0}")]
    Config(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for tonic::Status {
    /// Logs the full error; the caller gets a generic message with a code
    /// that says whose problem it is.
    fn from(err: Error) -> Self {
        tracing::error!(error = %err, "scheduler request failed");
        match err {
            Error::Db(ferry_db::Error::Db(_)) | Error::Sql(_) | Error::SchemaCheck(_) => {
                tonic::Status::unavailable("database unavailable")
            }
            Error::SchemaMissing { .. } => {
                tonic::Status::failed_precondition("database schema is not migrated")
            }
            Error::Key(_) => tonic::Status::failed_precondition("scheduler is misconfigured"),
            Error::Kube(_) => tonic::Status::unavailable("cluster unavailable"),
            Error::Acme(_) | Error::Dns(_) => {
                tonic::Status::unavailable("certificate authority unavailable")
            }
            Error::Config(_) => tonic::Status::failed_precondition("scheduler is misconfigured"),
            Error::Db(_) | Error::Common(_) => tonic::Status::internal("internal error"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_are_deliberate_and_messages_safe() {
        let status = tonic::Status::from(Error::SchemaMissing {
            pending: 2,
            first: "m0001_identity".into(),
        });
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert!(!status.message().contains("m0001"));
        let status = tonic::Status::from(Error::Key(ferry_db::Error::KeyInvalid(
            "ENCRYPTION_KEY: secret-ish detail".into(),
        )));
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert!(!status.message().contains("secret"));
        let status = tonic::Status::from(Error::SchemaCheck("boom".into()));
        assert_eq!(status.code(), tonic::Code::Unavailable);
    }
}
