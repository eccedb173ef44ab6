//! One delivery attempt to one channel.
//!
//! HTTP channels are POSTed their JSON body ([`crate::format`]) with a
//! per-request timeout covering connect, TLS, request and response; 2xx is
//! delivered, anything else (redirects included: they are not followed) a
//! failure with the status code. Connections go through a resolver that
//! drops private addresses ([`crate::target`]) unless the operator allowed
//! them, and IP-literal hosts are checked the same way, so a target cannot
//! reach the installation's own network by resolving somewhere new later.
//! TLS: rustls with ring and the webpki roots.
//!
//! E-mail goes through the organization's SMTP settings
//! (`org_email_configs`: none / STARTTLS / TLS) with [`crate::smtp`], one
//! message to all of the channel's recipients.
//!
//! Outcomes carry no secret: the URL is never part of an error message.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use ferry_db::crypto::{Keyring, Secret};
use ferry_db::entities::enums::NotificationKind;
use ferry_db::entities::notification_channels;
use ferry_db::sea_orm::ConnectionTrait;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::format::{self, Notification};
use crate::smtp::{Smtp, SmtpTrust};
use crate::target;
use crate::{Error, Result};

/// The most recipients an e-mail channel has.
pub const MAX_RECIPIENTS: usize = 20;

/// How the sender behaves.
#[derive(Debug, Clone, Copy)]
pub struct SendConfig {
    /// Send to loopback / private / link-local targets too (operators with
    /// receivers inside their network; tests).
    pub allow_private: bool,
    /// The whole attempt, connect to response (and each SMTP command).
    pub timeout: Duration,
}

impl Default for SendConfig {
    fn default() -> Self {
        Self {
            allow_private: false,
            timeout: Duration::from_secs(10),
        }
    }
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub delivered: bool,
    /// The HTTP status, when a response came.
    pub status: Option<u16>,
    /// Why it failed, in words (no secrets).
    pub error: Option<String>,
}

impl Outcome {
    fn failed(status: Option<u16>, error: impl Into<String>) -> Self {
        Self {
            delivered: false,
            status,
            error: Some(error.into()),
        }
    }
}

/// A channel's target, decrypted.
pub enum Target {
    Http {
        kind: NotificationKind,
        url: Secret,
        signing_secret: Option<Secret>,
    },
    Email {
        recipients: Vec<String>,
    },
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Http { kind, .. } => f
                .debug_struct("Http")
                .field("kind", kind)
                .finish_non_exhaustive(),
            Target::Email { recipients } => f
                .debug_struct("Email")
                .field("recipients", &recipients.len())
                .finish(),
        }
    }
}

/// The e-mail recipients stored in a channel's `config`.
pub fn recipients(config: &Value) -> Vec<String> {
    config
        .get("recipients")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Decrypts what sending to `channel` needs.
pub fn target(channel: &notification_channels::Model, keyring: &Keyring) -> Result<Target> {
    const TABLE: &str = "notification_channels";
    if channel.kind == NotificationKind::Email {
        let recipients = recipients(&channel.config);
        if recipients.is_empty() {
            return Err(Error::Channel(
                "the channel has no e-mail recipients".into(),
            ));
        }
        return Ok(Target::Email { recipients });
    }
    let url = channel
        .webhook_url
        .as_ref()
        .ok_or_else(|| Error::Channel("the channel has no webhook URL".into()))?;
    let url = keyring.decrypt(TABLE, "webhook_url", channel.id, url)?;
    let signing_secret = match &channel.signing_secret {
        Some(s) => Some(keyring.decrypt(TABLE, "signing_secret", channel.id, s)?),
        None => None,
    };
    Ok(Target::Http {
        kind: channel.kind,
        url,
        signing_secret,
    })
}

/// A resolver that drops private addresses (unless allowed).
#[derive(Debug, Clone, Copy)]
struct GuardedResolver {
    allow_private: bool,
}

impl tower::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future =
        Pin<Box<dyn Future<Output = std::io::Result<std::vec::IntoIter<SocketAddr>>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow = self.allow_private;
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let kept: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| allow || !target::is_private(a.ip()))
                .collect();
            if kept.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "the host resolves only to loopback, private or link-local addresses",
                ));
            }
            Ok(kept.into_iter())
        })
    }
}

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector<GuardedResolver>>, Full<Bytes>>;

/// Sends notifications; cheap to clone (one connection pool).
#[derive(Clone)]
pub struct Sender {
    config: SendConfig,
    client: HttpClient,
    /// Extra CAs for SMTP relays.
    smtp_trust: SmtpTrust,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The error and its sources, in one line.
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

impl Sender {
    /// A sender with its own connection pool; fails only if rustls cannot
    /// set up TLS with ring.
    pub fn new(config: SendConfig) -> Result<Self> {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Channel(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut http = HttpConnector::new_with_resolver(GuardedResolver {
            allow_private: config.allow_private,
        });
        http.enforce_http(false);
        http.set_connect_timeout(Some(config.timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(4)
            .build(https);
        Ok(Self {
            config,
            client,
            smtp_trust: SmtpTrust::default(),
        })
    }

    /// This sender, trusting `trust`'s extra CAs for SMTP relays too.
    pub fn with_smtp_trust(mut self, trust: SmtpTrust) -> Self {
        self.smtp_trust = trust;
        self
    }

    pub fn config(&self) -> SendConfig {
        self.config
    }

    /// One attempt to deliver `n` to `channel`.
    pub async fn send<C: ConnectionTrait>(
        &self,
        db: &C,
        keyring: &Keyring,
        channel: &notification_channels::Model,
        n: &Notification,
    ) -> Outcome {
        let target = match target(channel, keyring) {
            Ok(t) => t,
            Err(err) => return Outcome::failed(None, err.to_string()),
        };
        match target {
            Target::Http {
                kind,
                url,
                signing_secret,
            } => {
                let Some(body) = format::body(kind, n) else {
                    return Outcome::failed(None, "not an HTTP channel");
                };
                self.post(url.expose(), &body, signing_secret.as_ref(), n)
                    .await
            }
            Target::Email { recipients } => {
                match crate::smtp::org_settings(db, keyring, channel.organization_id).await {
                    Ok(Some(smtp)) => self.mail(&smtp, &recipients, n).await,
                    Ok(None) => Outcome::failed(
                        None,
                        "the organization has no enabled SMTP settings (SetEmailConfig)",
                    ),
                    Err(err) => Outcome::failed(None, err.to_string()),
                }
            }
        }
    }

    /// POSTs `body` to `url`.
    pub async fn post(
        &self,
        url: &str,
        body: &Value,
        signing_secret: Option<&Secret>,
        n: &Notification,
    ) -> Outcome {
        let parsed = match target::parse_url("webhookUrl", url) {
            Ok(u) => u,
            Err(err) => return Outcome::failed(None, err),
        };
        if !self.config.allow_private {
            let literal: Option<IpAddr> = match parsed.host() {
                Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
                Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
                _ => None,
            };
            if literal.is_some_and(target::is_private) {
                return Outcome::failed(
                    None,
                    "the target is a loopback, private or link-local address",
                );
            }
        }
        let bytes = match serde_json::to_vec(body) {
            Ok(b) => b,
            Err(err) => return Outcome::failed(None, format!("encoding the body: {err}")),
        };
        let mut request = http::Request::post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("Ferry-Notifications/", env!("CARGO_PKG_VERSION")),
            )
            .header("ferry-event", n.event.as_str())
            .header("ferry-delivery", n.id.to_string());
        if let Some(secret) = signing_secret {
            let t = chrono::Utc::now().timestamp();
            request = request.header(
                crate::sign::HEADER,
                crate::sign::header_value(secret.expose().as_bytes(), t, &bytes),
            );
        }
        let request = match request.body(Full::new(Bytes::from(bytes))) {
            Ok(r) => r,
            Err(_) => return Outcome::failed(None, "the webhook URL is not a valid request URI"),
        };
        let exchange = async {
            let response = self.client.request(request).await?;
            let status = response.status().as_u16();
            // A short excerpt of the answer, for the delivery log.
            let text = match Limited::new(response.into_body(), 4096).collect().await {
                Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
                Err(_) => String::new(),
            };
            Ok::<_, hyper_util::client::legacy::Error>((status, text))
        };
        match tokio::time::timeout(self.config.timeout, exchange).await {
            Err(_) => Outcome::failed(
                None,
                format!("no answer within {} s", self.config.timeout.as_secs_f32()),
            ),
            Ok(Err(err)) => Outcome::failed(None, scrub(&chain(&err), url)),
            Ok(Ok((status, _))) if (200..300).contains(&status) => Outcome {
                delivered: true,
                status: Some(status),
                error: None,
            },
            Ok(Ok((status, text))) => {
                let excerpt: String = text.trim().chars().take(200).collect();
                let error = if excerpt.is_empty() {
                    format!("HTTP {status}")
                } else {
                    format!("HTTP {status}: {}", scrub(&excerpt, url))
                };
                Outcome::failed(Some(status), error)
            }
        }
    }

    /// Sends `n` as one e-mail to `recipients` through `smtp`.
    pub async fn mail(&self, smtp: &Smtp, recipients: &[String], n: &Notification) -> Outcome {
        let (subject, body) = format::email(n);
        let mail = crate::smtp::Mail {
            to: recipients.to_vec(),
            subject,
            body,
        };
        match crate::smtp::send(smtp, &self.smtp_trust, self.config.timeout, mail).await {
            Ok(code) => Outcome {
                delivered: true,
                status: Some(code),
                error: None,
            },
            Err(Error::Smtp(code, why)) => Outcome::failed(code, why),
            Err(err) => Outcome::failed(None, err.to_string()),
        }
    }
}

/// `text` with `url` (and its path, which carries the token) removed.
fn scrub(text: &str, url: &str) -> String {
    let mut out = text.replace(url, "[webhook URL]");
    if let Ok(u) = url::Url::parse(url) {
        let path = u.path();
        if path.len() > 1 {
            out = out.replace(path, "/[redacted]");
        }
    }
    out
}
