//! The one error type of the `db` crate.

/// Errors raised by the data layer. Messages never contain secret values.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database error: {0}")]
    Db(#[from] sea_orm::DbErr),
    #[error("configuration error: {0}")]
    Config(String),
    #[error("encryption key is missing: {0}")]
    KeyMissing(String),
    #[error("encryption key is invalid: {0}")]
    KeyInvalid(String),
    #[error("could not decrypt {table}.{column}: {reason}")]
    Decrypt {
        table: String,
        column: String,
        reason: String,
    },
    #[error("could not encrypt: {0}")]
    Encrypt(String),
    #[error("password hashing failed: {0}")]
    Password(String),
    #[error("migration error: {0}")]
    Migration(String),
    #[error("seed error: {0}")]
    Seed(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
