//! The one error type of `ferry-notify`.

/// Errors of the worker and of loading a channel. A failed delivery is not
/// an error: it is an [`crate::Outcome`] recorded on the delivery.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database, or decrypting a stored secret.
    #[error("{0}")]
    Db(#[from] ferry_db::Error),
    /// A stored channel is unusable (a missing URL, bad recipients); the
    /// message says which setting.
    #[error("{0}")]
    Channel(String),
    /// An e-mail was not sent: the SMTP reply code when the server gave
    /// one, and why in words (never the password).
    #[error("{1}")]
    Smtp(Option<u16>, String),
    /// The operator's settings are unusable (e.g. the SMTP CA file).
    #[error("{0}")]
    Config(String),
}

impl From<ferry_db::sea_orm::DbErr> for Error {
    fn from(err: ferry_db::sea_orm::DbErr) -> Self {
        Error::Db(ferry_db::Error::Db(err))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
