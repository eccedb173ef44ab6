//! Outgoing e-mail over an organization's own SMTP server
//! (`org_email_configs`), with lettre on rustls.
//!
//! The SMTP password is stored encrypted and decrypted only to send; it is
//! never logged. Send failures are logged in full and reported to the
//! caller without server details. Callers send after their transaction
//! commits: a send can take [`SMTP_TIMEOUT`] per SMTP command.

use std::time::Duration;

use ferry_db::crypto::{Keyring, Secret};
use ferry_db::entities::enums::SmtpTlsMode;
use ferry_db::entities::org_email_configs;
use ferry_db::sea_orm::{ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _};
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};
use uuid::Uuid;

use crate::{Error, Result};

/// Longest wait for the SMTP server (connect and each command).
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(15);

/// An organization's SMTP settings, password decrypted.
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub from_address: String,
    pub from_name: Option<String>,
    pub tls_mode: SmtpTlsMode,
}

impl std::fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("tls_mode", &self.tls_mode)
            .finish_non_exhaustive()
    }
}

/// The enabled SMTP settings of `org`, if any.
pub async fn org_settings<C: ConnectionTrait>(
    db: &C,
    keyring: &Keyring,
    org: Uuid,
) -> Result<Option<SmtpSettings>> {
    let Some(row) = org_email_configs::Entity::find()
        .filter(org_email_configs::Column::OrganizationId.eq(org))
        .filter(org_email_configs::Column::Enabled.eq(true))
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    let password = match &row.password {
        Some(p) => Some(keyring.decrypt("org_email_configs", "password", row.id, p)?),
        None => None,
    };
    let port = u16::try_from(row.smtp_port)
        .map_err(|_| Error::FailedPrecondition("the organization's SMTP port is invalid".into()))?;
    Ok(Some(SmtpSettings {
        host: row.smtp_host,
        port,
        username: row.username.filter(|u| !u.is_empty()),
        password,
        from_address: row.from_address,
        from_name: row.from_name.filter(|n| !n.is_empty()),
        tls_mode: row.tls_mode,
    }))
}

/// A plain-text e-mail.
#[derive(Debug, Clone)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub body: String,
}

fn send_failed(what: &str, err: &dyn std::fmt::Display) -> Error {
    tracing::warn!(error = %err, "{what}");
    Error::FailedPrecondition(
        "the e-mail could not be sent; check the organization's SMTP settings".into(),
    )
}

/// `InvalidArgument` (`email:`) unless `to` is an address lettre can send
/// to; check it before storing what the e-mail is about.
pub fn check_recipient(to: &str) -> Result<Mailbox> {
    to.parse()
        .map_err(|_| Error::InvalidArgument("email: not a deliverable address".into()))
}

/// Sends `mail` through `settings`.
pub async fn send(settings: &SmtpSettings, mail: Mail) -> Result<()> {
    let from = Mailbox::new(
        settings.from_name.clone(),
        settings
            .from_address
            .parse()
            .map_err(|e| send_failed("invalid SMTP from address", &e))?,
    );
    let to = check_recipient(&mail.to)?;
    let message = Message::builder()
        .from(from)
        .to(to)
        .subject(mail.subject)
        .header(ContentType::TEXT_PLAIN)
        .body(mail.body)
        .map_err(|e| send_failed("building the e-mail failed", &e))?;
    let builder = match settings.tls_mode {
        SmtpTlsMode::None => {
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(settings.host.as_str())
        }
        SmtpTlsMode::Starttls => {
            AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&settings.host)
                .map_err(|e| send_failed("SMTP STARTTLS setup failed", &e))?
        }
        SmtpTlsMode::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&settings.host)
            .map_err(|e| send_failed("SMTP TLS setup failed", &e))?,
    };
    let mut builder = builder.port(settings.port).timeout(Some(SMTP_TIMEOUT));
    if let (Some(user), Some(password)) = (&settings.username, &settings.password) {
        builder = builder.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
    }
    builder
        .build()
        .send(message)
        .await
        .map_err(|e| send_failed("sending e-mail over SMTP failed", &e))?;
    Ok(())
}
