//! ACME issuance and renewal (HTTP-01), run by [`crate::certificates_loop`]
//! under the `certificates` lease, callable on its own ([`Issuer::tick`]).
//!
//! Per verified, live domain with TLS routes, one `certificate_orders` row
//! names the hosts to cover (every TLS route host under the domain). An
//! order is worked when `next_attempt_at` has come: a new order at the CA
//! for those hosts; each HTTP-01 answer is written to `acme_challenges`,
//! which the api's feed hands to every ferry-proxy (a PostgreSQL trigger
//! wakes the api at commit); after `propagation` the challenges are
//! declared ready. A valid order stores a `certificates` row (`source =
//! 'acme'`, key encrypted) and schedules the renewal when a third of the
//! lifetime remains, or inside the CA's suggested window when it offers
//! ACME Renewal Information ([`crate::ari`]; the renewal order then names
//! the certificate it `replaces`). A failure records the CA's error text
//! and backs off exponentially (at least an hour after a rate limit).
//!
//! Notifications go to the outbox in the same transaction as the change:
//! `certificate.issued` with each stored certificate, and
//! `certificate.renewal_failed` with the first failure in a row for a
//! domain that already has a certificate (later retries of the same streak
//! stay quiet; `certificate.expiring` covers a renewal that never comes).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ferry_db::crypto::Keyring;
use ferry_db::entities::enums::CertificateOrderStatus;
use ferry_db::entities::{
    acme_accounts, acme_challenges, certificate_orders, certificates, domains, routes,
};
use ferry_db::outbox::{Event, EventKind};
use ferry_db::sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, DatabaseConnection,
    EntityTrait as _, IntoActiveModel as _, QueryFilter as _, TransactionTrait as _,
};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use serde_json::json;
use uuid::Uuid;
use x509_parser::prelude::{FromDer as _, GeneralName, X509Certificate};

use crate::{Error, Result};

/// Lease name of the certificates loop.
pub const LEASE: &str = "certificates";
/// Longest error text kept (the column's CHECK).
const MAX_ERROR: usize = 4000;
/// The longest wait between failed attempts.
const MAX_BACKOFF: chrono::Duration = chrono::Duration::hours(24);
/// The shortest wait after the CA said "rate limited".
const RATE_LIMIT_BACKOFF: chrono::Duration = chrono::Duration::hours(1);

/// Where and how to order certificates.
#[derive(Debug, Clone)]
pub struct AcmeConfig {
    /// The CA's directory URL (e.g. Let's Encrypt's).
    pub directory_url: String,
    /// `mailto:` contact for the account, if any.
    pub contact: Option<String>,
    /// A PEM root to trust for the CA's HTTPS (test CAs); `None`: the
    /// usual web roots.
    pub root_pem: Option<PathBuf>,
    /// How long to wait after publishing HTTP-01 answers before asking the
    /// CA to check them (the feed's way to the proxies).
    pub propagation: Duration,
    /// The first wait after a failure (doubling per attempt).
    pub backoff: chrono::Duration,
    /// How long the CA may take to validate and issue.
    pub timeout: Duration,
    /// DNS-01 for wildcard domains (one `*.name` + `name` certificate);
    /// `None`: wildcard domains get HTTP-01 certificates for their route
    /// hosts.
    pub dns: Option<std::sync::Arc<dyn crate::dns01::DnsProvider>>,
}

impl AcmeConfig {
    pub fn new(directory_url: impl Into<String>) -> Self {
        Self {
            directory_url: directory_url.into(),
            contact: None,
            root_pem: None,
            propagation: Duration::from_secs(3),
            backoff: chrono::Duration::minutes(5),
            timeout: Duration::from_secs(90),
            dns: None,
        }
    }
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub issued: usize,
    pub failed: usize,
}

/// Orders, renews and stores certificates.
#[derive(Debug, Clone)]
pub struct Issuer {
    db: DatabaseConnection,
    keyring: std::sync::Arc<Keyring>,
    config: AcmeConfig,
}

/// The error with its sources ("client error (Connect): ...: invalid
/// peer certificate"), so the order says why.
fn acme_err(err: instant_acme::Error) -> Error {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    Error::Acme(text)
}

/// The names each verified, live domain with TLS routes should have a
/// certificate for: its route hosts, or with DNS-01 (`dns01`) a wildcard
/// domain's `*.name` and `name`.
async fn wanted(db: &DatabaseConnection, dns01: bool) -> Result<BTreeMap<Uuid, BTreeSet<String>>> {
    let live: BTreeMap<Uuid, domains::Model> = domains::Entity::find()
        .filter(domains::Column::VerifiedAt.is_not_null())
        .filter(domains::Column::DeletedAt.is_null())
        .all(db)
        .await?
        .into_iter()
        .map(|d| (d.id, d))
        .collect();
    let mut out: BTreeMap<Uuid, BTreeSet<String>> = BTreeMap::new();
    for route in routes::Entity::find()
        .filter(routes::Column::TlsEnabled.eq(true))
        .filter(routes::Column::DomainId.is_not_null())
        .all(db)
        .await?
    {
        let Some(domain) = route.domain_id.and_then(|d| live.get(&d)) else {
            continue;
        };
        let names = out.entry(domain.id).or_default();
        if dns01 && domain.wildcard {
            names.insert(format!("*.{}", domain.name));
            names.insert(domain.name.clone());
        } else {
            names.insert(route.hostname);
        }
    }
    Ok(out)
}

/// What the scheduler keeps of an issued leaf: validity, issuer, names.
type LeafFacts = (DateTime<Utc>, DateTime<Utc>, String, Vec<String>);

/// The leaf's validity and DNS names.
fn leaf_facts(chain_pem: &str) -> Result<LeafFacts> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let bad = |why: &str| Error::Acme(format!("the CA's certificate: {why}"));
    let der = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()
        .ok_or_else(|| bad("no PEM certificate"))?
        .map_err(|_| bad("bad PEM"))?;
    let (_, cert) = X509Certificate::from_der(der.as_ref()).map_err(|_| bad("bad X.509"))?;
    let validity = cert.validity();
    let from = DateTime::from_timestamp(validity.not_before.timestamp(), 0)
        .ok_or_else(|| bad("validity out of range"))?;
    let until = DateTime::from_timestamp(validity.not_after.timestamp(), 0)
        .ok_or_else(|| bad("validity out of range"))?;
    let names = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok((from, until, cert.issuer().to_string(), names))
}

/// When to renew a certificate valid from `from` to `until`: when a third
/// of its lifetime remains.
pub fn renew_at(from: DateTime<Utc>, until: DateTime<Utc>) -> DateTime<Utc> {
    until - (until - from) / 3
}

/// The wait after the `attempts`-th failure in a row.
pub fn backoff(first: chrono::Duration, attempts: i32, rate_limited: bool) -> chrono::Duration {
    let factor = 1i32 << attempts.clamp(1, 16).saturating_sub(1);
    let wait = (first * factor).min(MAX_BACKOFF);
    if rate_limited {
        wait.max(RATE_LIMIT_BACKOFF)
    } else {
        wait
    }
}

impl Issuer {
    pub fn new(
        db: DatabaseConnection,
        keyring: std::sync::Arc<Keyring>,
        config: AcmeConfig,
    ) -> Self {
        Self {
            db,
            keyring,
            config,
        }
    }

    /// Brings the orders in line with the routes, then works every due
    /// one.
    pub async fn tick(&self, now: DateTime<Utc>) -> Result<Report> {
        // ARI first: a window that has come makes its order due below.
        if let Err(err) = crate::ari::check(&self.db, now, || self.account()).await {
            tracing::warn!(error = %err, "ACME renewal information pass failed");
        }
        let wanted = wanted(&self.db, self.config.dns.is_some()).await?;
        let orders: BTreeMap<Uuid, certificate_orders::Model> = certificate_orders::Entity::find()
            .all(&self.db)
            .await?
            .into_iter()
            .map(|o| (o.domain_id, o))
            .collect();
        let mut due = Vec::new();
        for (domain, hosts) in &wanted {
            let hostnames = json!(hosts);
            match orders.get(domain) {
                None => {
                    let order = certificate_orders::ActiveModel {
                        id: Set(Uuid::now_v7()),
                        domain_id: Set(*domain),
                        hostnames: Set(hostnames),
                        status: Set(CertificateOrderStatus::Pending),
                        certificate_id: Set(None),
                        attempts: Set(0),
                        last_error: Set(None),
                        last_attempt_at: Set(None),
                        next_attempt_at: Set(now),
                        order_url: Set(None),
                        created_at: Set(now),
                        updated_at: Set(now),
                        ari_window_start: Set(None),
                        ari_window_end: Set(None),
                        ari_next_check_at: Set(None),
                    }
                    .insert(&self.db)
                    .await?;
                    due.push((order, hosts.clone()));
                }
                Some(order) if order.hostnames != hostnames => {
                    // New or removed hosts: a new certificate now.
                    let mut update = order.clone().into_active_model();
                    update.hostnames = Set(hostnames);
                    update.status = Set(CertificateOrderStatus::Pending);
                    update.attempts = Set(0);
                    update.next_attempt_at = Set(now);
                    update.updated_at = Set(now);
                    due.push((update.update(&self.db).await?, hosts.clone()));
                }
                Some(order) if order.next_attempt_at <= now => {
                    due.push((order.clone(), hosts.clone()));
                }
                Some(_) => {}
            }
        }
        let mut report = Report::default();
        for (order, hosts) in due {
            let hosts: Vec<String> = hosts.into_iter().collect();
            match self.issue(&order, &hosts).await {
                Ok(()) => report.issued += 1,
                Err(err) => {
                    report.failed += 1;
                    tracing::warn!(domain = %order.domain_id, error = %err, "ACME order failed");
                    self.record_failure(&order, &err.to_string()).await?;
                }
            }
        }
        Ok(report)
    }

    /// The installation's account at the configured CA, created (and its
    /// credentials stored encrypted) the first time.
    async fn account(&self) -> Result<Account> {
        let builder = || match &self.config.root_pem {
            Some(path) => Account::builder_with_root(path).map_err(acme_err),
            None => Account::builder().map_err(acme_err),
        };
        let url = &self.config.directory_url;
        if let Some(row) = acme_accounts::Entity::find()
            .filter(acme_accounts::Column::DirectoryUrl.eq(url.as_str()))
            .one(&self.db)
            .await?
        {
            let json = self
                .keyring
                .decrypt("acme_accounts", "credentials", row.id, &row.credentials)
                .map_err(Error::Key)?;
            let credentials: AccountCredentials = serde_json::from_str(json.expose())
                .map_err(|e| Error::Acme(format!("stored ACME account unreadable: {e}")))?;
            return builder()?
                .from_credentials(credentials)
                .await
                .map_err(acme_err);
        }
        let contact: Vec<&str> = self.config.contact.iter().map(String::as_str).collect();
        let (account, credentials) = builder()?
            .create(
                &NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                url.clone(),
                None,
            )
            .await
            .map_err(acme_err)?;
        let id = Uuid::now_v7();
        let json = serde_json::to_string(&credentials)
            .map_err(|e| Error::Acme(format!("ACME account credentials: {e}")))?;
        let now = Utc::now();
        acme_accounts::ActiveModel {
            id: Set(id),
            directory_url: Set(url.clone()),
            contact: Set(self.config.contact.clone()),
            credentials: Set(self
                .keyring
                .encrypt("acme_accounts", "credentials", id, &json)
                .map_err(Error::Key)?),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&self.db)
        .await?;
        Ok(account)
    }

    /// One order at the CA for `hosts`, through to a stored certificate;
    /// the DNS-01 records it published are removed either way.
    async fn issue(&self, row: &certificate_orders::Model, hosts: &[String]) -> Result<()> {
        let mut txt = Vec::new();
        let outcome = self.order(row, hosts, &mut txt).await;
        if let Some(dns) = &self.config.dns {
            for (name, value) in txt {
                if let Err(err) = dns.remove_txt(&name, &value).await {
                    tracing::warn!(%name, error = %err, "removing a DNS-01 record failed");
                }
            }
        }
        outcome
    }

    async fn order(
        &self,
        row: &certificate_orders::Model,
        hosts: &[String],
        txt: &mut Vec<(String, String)>,
    ) -> Result<()> {
        let account = self.account().await?;
        let dns = self
            .config
            .dns
            .as_ref()
            .filter(|_| hosts.iter().any(|h| h.starts_with("*.")));
        let identifiers: Vec<Identifier> =
            hosts.iter().map(|h| Identifier::Dns(h.clone())).collect();
        let mut order = self.new_order(&account, row, &identifiers).await?;
        let expires = Utc::now() + chrono::Duration::hours(1);
        let mut published = Vec::new();
        {
            let mut authorizations = order.authorizations();
            while let Some(authz) = authorizations.next().await {
                let mut authz = authz.map_err(acme_err)?;
                if authz.status != AuthorizationStatus::Pending {
                    continue;
                }
                if let Some(dns) = dns {
                    let Identifier::Dns(name) = authz.identifier().identifier.clone() else {
                        continue;
                    };
                    let challenge = authz.challenge(ChallengeType::Dns01).ok_or_else(|| {
                        Error::Acme("the CA offers no DNS-01 challenge for a wildcard".into())
                    })?;
                    let record = format!("_acme-challenge.{}", name.trim_start_matches("*."));
                    let value = challenge.key_authorization().dns_value();
                    dns.add_txt(&record, &value).await?;
                    txt.push((record, value));
                    published.push(challenge.url.clone());
                    continue;
                }
                let mut challenge = authz.challenge(ChallengeType::Http01).ok_or_else(|| {
                    Error::Acme("the CA offers no HTTP-01 challenge for a host".into())
                })?;
                let token = challenge.token.clone();
                acme_challenges::ActiveModel {
                    id: Set(Uuid::now_v7()),
                    order_id: Set(row.id),
                    token: Set(token),
                    key_authorization: Set(challenge.key_authorization().as_str().to_owned()),
                    expires_at: Set(expires),
                    created_at: Set(Utc::now()),
                }
                .insert(&self.db)
                .await?;
                published.push(challenge.url.clone());
                // Ready is declared below, once the proxies have the answer.
                let _ = &mut challenge;
            }
        }
        if !published.is_empty() {
            tokio::time::sleep(self.config.propagation).await;
        }
        {
            let mut authorizations = order.authorizations();
            while let Some(authz) = authorizations.next().await {
                let mut authz = authz.map_err(acme_err)?;
                if authz.status != AuthorizationStatus::Pending {
                    continue;
                }
                let kind = if dns.is_some() {
                    ChallengeType::Dns01
                } else {
                    ChallengeType::Http01
                };
                if let Some(mut challenge) = authz.challenge(kind) {
                    challenge.set_ready().await.map_err(acme_err)?;
                }
            }
        }
        let retry = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .backoff(1.5)
            .timeout(self.config.timeout);
        let status = order.poll_ready(&retry).await.map_err(acme_err)?;
        if status != OrderStatus::Ready {
            // The challenges' errors say why (the CA's words).
            let mut why = Vec::new();
            let mut authorizations = order.authorizations();
            while let Some(authz) = authorizations.next().await {
                let Ok(authz) = authz else { continue };
                for c in &authz.challenges {
                    if let Some(problem) = &c.error {
                        why.push(problem.to_string());
                    }
                }
            }
            return Err(Error::Acme(if why.is_empty() {
                format!("the order became {status:?}")
            } else {
                why.join("; ")
            }));
        }
        let key = rcgen::KeyPair::generate().map_err(|e| Error::Acme(format!("key: {e}")))?;
        let csr = rcgen::CertificateParams::new(hosts.to_vec())
            .and_then(|p| p.serialize_request(&key))
            .map_err(|e| Error::Acme(format!("CSR: {e}")))?;
        order.finalize_csr(csr.der()).await.map_err(acme_err)?;
        let chain = order.poll_certificate(&retry).await.map_err(acme_err)?;
        let (from, until, issuer, names) = leaf_facts(&chain)?;
        let now = Utc::now();
        let id = Uuid::now_v7();
        let private_key = self
            .keyring
            .encrypt("certificates", "private_key", id, &key.serialize_pem())
            .map_err(Error::Key)?;
        let txn = self.db.begin().await?;
        certificates::ActiveModel {
            id: Set(id),
            domain_id: Set(row.domain_id),
            issuer: Set(issuer),
            certificate_pem: Set(chain),
            private_key: Set(private_key),
            not_before: Set(Some(from)),
            expires_at: Set(until),
            created_at: Set(now),
            source: Set("acme".into()),
            hostnames: Set(json!(names)),
            expiring_notified_at: Set(None),
        }
        .insert(&txn)
        .await?;
        if let Some(domain) = domains::Entity::find_by_id(row.domain_id).one(&txn).await? {
            let summary = format!(
                "Certificate issued for {} (expires {})",
                names.join(", "),
                until.format("%Y-%m-%d")
            );
            let payload = cert_payload(&domain, id, &names, until, summary);
            ferry_db::outbox::enqueue(&txn, event(&domain, EventKind::CertificateIssued, payload))
                .await?;
        }
        let mut update = row.clone().into_active_model();
        update.status = Set(CertificateOrderStatus::Valid);
        update.certificate_id = Set(Some(id));
        update.attempts = Set(0);
        update.last_error = Set(None);
        update.last_attempt_at = Set(Some(now));
        update.next_attempt_at = Set(renew_at(from, until));
        update.order_url = Set(Some(order.url().to_owned()));
        update.ari_window_start = Set(None);
        update.ari_window_end = Set(None);
        update.ari_next_check_at = Set(None);
        update.updated_at = Set(now);
        update.update(&txn).await?;
        acme_challenges::Entity::delete_many()
            .filter(acme_challenges::Column::OrderId.eq(row.id))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        tracing::info!(domain = %row.domain_id, certificate = %id, expires = %until, "ACME certificate issued");
        Ok(())
    }

    async fn record_failure(&self, row: &certificate_orders::Model, error: &str) -> Result<()> {
        let now = Utc::now();
        let attempts = row.attempts.saturating_add(1);
        let rate_limited = error.contains("rateLimited");
        let mut text: String = error.chars().take(MAX_ERROR).collect();
        if text.is_empty() {
            text = "unknown error".into();
        }
        let txn = self.db.begin().await?;
        let mut update = row.clone().into_active_model();
        update.status = Set(CertificateOrderStatus::Failed);
        update.attempts = Set(attempts);
        update.last_error = Set(Some(text));
        update.last_attempt_at = Set(Some(now));
        update.next_attempt_at = Set(now + backoff(self.config.backoff, attempts, rate_limited));
        update.updated_at = Set(now);
        update.update(&txn).await?;
        acme_challenges::Entity::delete_many()
            .filter(acme_challenges::Column::OrderId.eq(row.id))
            .exec(&txn)
            .await?;
        if attempts == 1 {
            renewal_failed(&txn, row, error).await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// A new order at the CA; a renewal whose CA offered ARI names the
    /// certificate it `replaces` (RFC 9773 §5). A CA that refuses that
    /// field, or (as pebble 2.4 behind an ARI front) ignores it, gets the
    /// plain order: `replaces` is a courtesy, never worth a failed renewal.
    async fn new_order(
        &self,
        account: &Account,
        row: &certificate_orders::Model,
        identifiers: &[Identifier],
    ) -> Result<instant_acme::Order> {
        let replaced = match (row.certificate_id, row.ari_window_start) {
            (Some(id), Some(_)) => certificates::Entity::find_by_id(id).one(&self.db).await?,
            _ => None,
        };
        if let Some(old) = replaced {
            let id = crate::ari::certificate_id(&old.certificate_pem)?;
            match account
                .new_order(&NewOrder::new(identifiers).replaces(id))
                .await
            {
                Ok(order) => return Ok(order),
                Err(err) if err.to_string().to_lowercase().contains("replace") => {
                    tracing::warn!(domain = %row.domain_id, error = %err,
                        "the CA did not take `replaces`; ordering without it");
                }
                Err(err) => return Err(acme_err(err)),
            }
        }
        account
            .new_order(&NewOrder::new(identifiers))
            .await
            .map_err(acme_err)
    }
}

/// An event about `domain`'s certificates.
fn event(domain: &domains::Model, kind: EventKind, payload: serde_json::Value) -> Event {
    Event::new(domain.organization_id, domain.project_id, kind, payload)
}

/// The payload of a certificate event (names and dates, never key material).
pub fn cert_payload(
    domain: &domains::Model,
    certificate: Uuid,
    names: &[String],
    expires: DateTime<Utc>,
    summary: String,
) -> serde_json::Value {
    json!({
        "summary": summary,
        "domain": { "id": domain.id, "name": domain.name },
        "certificateId": certificate,
        "hostnames": names,
        "expiresAt": expires.to_rfc3339(),
    })
}

/// `certificate.renewal_failed`, in `txn`, when the order's domain already
/// has a certificate (a first issuance failing is only on the order).
async fn renewal_failed(
    txn: &ferry_db::sea_orm::DatabaseTransaction,
    row: &certificate_orders::Model,
    error: &str,
) -> Result<()> {
    use ferry_db::sea_orm::QueryOrder as _;
    let current = certificates::Entity::find()
        .filter(certificates::Column::DomainId.eq(row.domain_id))
        .order_by_desc(certificates::Column::ExpiresAt)
        .one(txn)
        .await?;
    let (Some(current), Some(domain)) = (
        current,
        domains::Entity::find_by_id(row.domain_id).one(txn).await?,
    ) else {
        return Ok(());
    };
    let names: Vec<String> = serde_json::from_value(row.hostnames.clone()).unwrap_or_default();
    let mut payload = cert_payload(
        &domain,
        current.id,
        &names,
        current.expires_at,
        format!(
            "Certificate renewal failed for {}: {}",
            domain.name,
            error.chars().take(300).collect::<String>()
        ),
    );
    payload["error"] = json!(error.chars().take(1000).collect::<String>());
    ferry_db::outbox::enqueue(
        txn,
        event(&domain, EventKind::CertificateRenewalFailed, payload),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn renewal_at_a_third_left_and_backoff_doubles_to_a_day() {
        let from = DateTime::from_timestamp(0, 0).unwrap();
        let until = from + chrono::Duration::days(90);
        assert_eq!(renew_at(from, until), from + chrono::Duration::days(60));
        let m = chrono::Duration::minutes(5);
        assert_eq!(backoff(m, 1, false), m);
        assert_eq!(backoff(m, 3, false), m * 4);
        assert_eq!(backoff(m, 30, false), MAX_BACKOFF);
        assert_eq!(backoff(m, 1, true), RATE_LIMIT_BACKOFF);
    }
}
