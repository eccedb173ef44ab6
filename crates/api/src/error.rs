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
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for tonic::Status {
    /// Logs the full error; the caller gets a generic message with a code
    /// that says whose problem it is.
    fn from(err: Error) -> Self {
        tracing::error!(error = %err, "api request failed");
        match err {
            Error::Key(_) => {
                tonic::Status::failed_precondition("server encryption is not configured")
            }
            Error::Db(ferry_db::Error::Db(_)) => tonic::Status::unavailable("database unavailable"),
            Error::Db(ferry_db::Error::Decrypt { .. }) => {
                tonic::Status::internal("a stored secret could not be decrypted")
            }
            Error::Db(_) | Error::Common(_) => tonic::Status::internal("internal error"),
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
            table: "t".into(),
            column: "c".into(),
            reason: "r".into(),
        }));
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(!status.message().contains("t.c"));
    }
}
