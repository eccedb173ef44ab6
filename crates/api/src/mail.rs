//! Outgoing e-mail over an organization's own SMTP server
//! (`org_email_configs`), through the one SMTP client of Ferry
//! ([`ferry_notify::smtp`]).
//!
//! The SMTP password is stored encrypted and decrypted only to send; it is
//! never logged. Send failures are logged in full and reported to the
//! caller without server details. Callers send after their transaction
//! commits: a send can take [`SMTP_TIMEOUT`] per SMTP command.

use std::time::Duration;

use ferry_db::crypto::Keyring;
use ferry_db::sea_orm::ConnectionTrait;
use ferry_notify::smtp::{self, SmtpTrust};
use uuid::Uuid;

use crate::{Error, Result};

/// Longest wait for the SMTP server (connect and each command).
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(15);

/// An organization's SMTP settings, password decrypted.
pub type SmtpSettings = smtp::Smtp;

/// A notify error as the api's: the database's as it is, the rest a
/// failed precondition in words.
fn from_notify(err: ferry_notify::Error) -> Error {
    match err {
        ferry_notify::Error::Db(e) => Error::Db(e),
        other => Error::FailedPrecondition(other.to_string()),
    }
}

/// The enabled SMTP settings of `org`, if any.
pub async fn org_settings<C: ConnectionTrait>(
    db: &C,
    keyring: &Keyring,
    org: Uuid,
) -> Result<Option<SmtpSettings>> {
    smtp::org_settings(db, keyring, org)
        .await
        .map_err(from_notify)
}

/// A plain-text e-mail.
#[derive(Debug, Clone)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub body: String,
}

/// `InvalidArgument` (`email:`) unless `to` is an address lettre can send
/// to; check it before storing what the e-mail is about.
pub fn check_recipient(to: &str) -> Result<()> {
    if smtp::is_address(to) {
        Ok(())
    } else {
        Err(Error::InvalidArgument(
            "email: not a deliverable address".into(),
        ))
    }
}

/// Sends `mail` through `settings`, trusting `trust`'s extra CAs.
pub async fn send(settings: &SmtpSettings, trust: &SmtpTrust, mail: Mail) -> Result<()> {
    check_recipient(&mail.to)?;
    let mail = smtp::Mail {
        to: vec![mail.to],
        subject: mail.subject,
        body: mail.body,
    };
    smtp::send(settings, trust, SMTP_TIMEOUT, mail)
        .await
        .map_err(|err| {
            tracing::warn!(error = %err, "sending e-mail over SMTP failed");
            Error::FailedPrecondition(
                "the e-mail could not be sent; check the organization's SMTP settings".into(),
            )
        })?;
    Ok(())
}
