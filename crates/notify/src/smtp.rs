//! The one SMTP client of Ferry: an organization's settings
//! (`org_email_configs`, password decrypted only to send), the message, and
//! the transport (lettre on rustls with ring). Used by the delivery worker
//! and TestChannel ([`crate::Sender`]) and by the api's invitation e-mails.
//!
//! TLS modes: `none` (plain), `starttls` (required, never downgraded) and
//! `tls` (implicit TLS from the first byte). Server certificates are checked
//! against the webpki roots plus the operator's extra CA ([`SmtpTrust`],
//! `--smtp-ca-file`), which is what a private relay needs.
//!
//! Errors carry no secret: the password never reaches a message.

use std::sync::Arc;
use std::time::Duration;

use ferry_db::crypto::{Keyring, Secret};
use ferry_db::entities::enums::SmtpTlsMode;
use ferry_db::entities::org_email_configs;
use ferry_db::sea_orm::{ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _};
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};
use uuid::Uuid;

use crate::{Error, Result};

/// An organization's SMTP settings, password decrypted.
pub struct Smtp {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub from_address: String,
    pub from_name: Option<String>,
    pub tls_mode: SmtpTlsMode,
}

impl std::fmt::Debug for Smtp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Smtp")
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
) -> Result<Option<Smtp>> {
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
        .map_err(|_| Error::Smtp(None, "the organization's SMTP port is invalid".into()))?;
    Ok(Some(Smtp {
        host: row.smtp_host,
        port,
        username: row.username.filter(|u| !u.is_empty()),
        password,
        from_address: row.from_address,
        from_name: row.from_name.filter(|n| !n.is_empty()),
        tls_mode: row.tls_mode,
    }))
}

/// Extra CA certificates trusted for SMTP relays, on top of the webpki
/// roots (`--smtp-ca-file`). Cheap to clone.
#[derive(Clone, Default)]
pub struct SmtpTrust {
    /// PEM, checked when loaded.
    pem: Option<Arc<[u8]>>,
}

impl std::fmt::Debug for SmtpTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpTrust")
            .field("extra_ca", &self.pem.is_some())
            .finish()
    }
}

impl SmtpTrust {
    /// Trusts the PEM certificates in `pem` as well; fails unless it holds
    /// at least one certificate rustls accepts as a root.
    pub fn from_pem(pem: &[u8]) -> Result<Self> {
        let invalid = |why: &str| Error::Config(format!("SMTP CA file: {why}"));
        if !String::from_utf8_lossy(pem).contains("-----BEGIN CERTIFICATE-----") {
            return Err(invalid("no PEM certificate in it"));
        }
        let cert = Certificate::from_pem(pem).map_err(|e| invalid(&e.to_string()))?;
        // The same check a send makes, once at start-up.
        TlsParameters::builder("localhost".into())
            .add_root_certificate(cert)
            .build_rustls()
            .map_err(|e| invalid(&e.to_string()))?;
        Ok(Self {
            pem: Some(Arc::from(pem)),
        })
    }

    /// [`Self::from_pem`] of the file at `path`.
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        let pem = std::fs::read(path)
            .map_err(|e| Error::Config(format!("SMTP CA file {}: {e}", path.display())))?;
        Self::from_pem(&pem)
    }

    /// A clap value parser for `--smtp-ca-file`: the file is read and
    /// checked at start-up, so a bad file stops the process at once.
    pub fn parse_file(path: &str) -> std::result::Result<Self, String> {
        Self::from_file(std::path::Path::new(path)).map_err(|e| e.to_string())
    }

    /// TLS parameters for a connection to `host`.
    fn parameters(&self, host: &str) -> Result<TlsParameters, String> {
        let mut builder = TlsParameters::builder(host.to_owned());
        if let Some(pem) = &self.pem {
            builder = builder.add_root_certificate(
                Certificate::from_pem(pem).map_err(|e| format!("SMTP TLS setup: {e}"))?,
            );
        }
        builder
            .build_rustls()
            .map_err(|e| format!("SMTP TLS setup: {e}"))
    }
}

/// A plain-text e-mail to one or more recipients.
#[derive(Debug, Clone)]
pub struct Mail {
    pub to: Vec<String>,
    pub subject: String,
    pub body: String,
}

/// Whether `to` is an address lettre can send to.
pub fn is_address(to: &str) -> bool {
    to.parse::<Mailbox>().is_ok()
}

/// The message `mail` from `smtp`'s sender.
fn message(smtp: &Smtp, mail: Mail) -> Result<Message> {
    let from = smtp
        .from_address
        .parse()
        .map(|a| Mailbox::new(smtp.from_name.clone(), a))
        .map_err(|_| Error::Smtp(None, "the SMTP from address is invalid".into()))?;
    let mut message = Message::builder().from(from).subject(mail.subject);
    for r in &mail.to {
        let to = r
            .parse::<Mailbox>()
            .map_err(|_| Error::Smtp(None, format!("recipient {r} is not an address")))?;
        message = message.to(to);
    }
    message
        .header(ContentType::TEXT_PLAIN)
        .body(mail.body)
        .map_err(|e| Error::Smtp(None, format!("building the e-mail: {e}")))
}

/// The transport for `smtp`: its TLS mode, port, timeout and credentials.
fn transport(
    smtp: &Smtp,
    trust: &SmtpTrust,
    timeout: Duration,
) -> Result<AsyncSmtpTransport<Tokio1Executor>> {
    let tls = match smtp.tls_mode {
        SmtpTlsMode::None => Tls::None,
        SmtpTlsMode::Starttls => Tls::Required(
            trust
                .parameters(&smtp.host)
                .map_err(|e| Error::Smtp(None, e))?,
        ),
        SmtpTlsMode::Tls => Tls::Wrapper(
            trust
                .parameters(&smtp.host)
                .map_err(|e| Error::Smtp(None, e))?,
        ),
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host.as_str())
        .port(smtp.port)
        .tls(tls)
        .timeout(Some(timeout));
    if let (Some(user), Some(password)) = (&smtp.username, &smtp.password) {
        builder = builder.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
    }
    Ok(builder.build())
}

/// Sends `mail` through `smtp`; the server's final reply code on success.
/// `timeout` bounds the connection and each SMTP command.
pub async fn send(smtp: &Smtp, trust: &SmtpTrust, timeout: Duration, mail: Mail) -> Result<u16> {
    let message = message(smtp, mail)?;
    let transport = transport(smtp, trust, timeout)?;
    match transport.send(message).await {
        Ok(response) => Ok(code(&response.code())),
        Err(err) => Err(Error::Smtp(
            err.status().map(|c| code(&c)),
            format!("SMTP: {}", crate::send::chain(&err)),
        )),
    }
}

/// A reply code as a number (they are always three digits).
fn code(c: &lettre::transport::smtp::response::Code) -> u16 {
    c.to_string().parse().unwrap_or_default()
}
