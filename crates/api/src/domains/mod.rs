//! `ferry.v1.DomainService`: domains a project proves it owns, and the
//! rule routes follow.
//!
//! A domain is added to a project (`example.com` or `*.example.com`) with
//! a random token; the owner publishes it as a TXT record at
//! `_ferry-challenge.<domain>` and calls VerifyDomain, which looks it up
//! through the configured resolver ([`dns`]). Rows live in `domains`
//! (`name` bare, `wildcard` flag; soft-deleted).
//!
//! An apex domain may be proven over HTTP instead ([`http_proof`]):
//! ferry-proxy answers `/.well-known/ferry-challenge/<token>` for it (the
//! feed carries [`http_challenge`]s) and VerifyDomain fetches that from
//! wherever the name points. It proves the name reaches this shared
//! installation, not which tenant controls its DNS, so it only counts
//! while no other organization claims the name, and another
//! organization's TXT proof takes an HTTP-verified name over ([`take_over`]).
//!
//! Which host names a route may use ([`check_route_host`]):
//! - a host under the installation's base domain (`--base-domain`, e.g.
//!   `shop.apps.example.com` under `apps.example.com`): handed out
//!   first-come, the first project that routes it holds it (the routes'
//!   installation-wide host claim);
//! - the name of a verified apex domain of the route's organization;
//! - any name under (or equal to) a verified wildcard domain of the
//!   organization.
//!
//! The most specific verified claim decides: a name another organization
//! verified under this one's wildcard is theirs.
//!
//! A name verified by one organization cannot be added or verified by
//! another (nor a name under another organization's verified wildcard).
//! Deleting or losing a domain keeps the routes already made. A domain
//! whose TXT record ferry-scheduler finds gone is `lost` (its claim no
//! longer counts: no new routes under it, and another organization that
//! proves the name may verify it) until VerifyDomain finds the record
//! again.

pub use ferry_common::dns;
use ferry_common::http_proof::{PATH_PREFIX, http_proof};

use std::net::SocketAddr;
use std::time::Duration;

use chrono::Utc;
use ferry_common::GrpcServices;
use ferry_db::entities::enums::AuditResourceType;
use ferry_db::entities::{domains, projects, routes};
use ferry_db::outbox::{Event, EventKind};
use ferry_db::sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, ConnectionTrait, DbBackend,
    EntityTrait as _, IntoActiveModel as _, QueryFilter as _, Statement,
};
use ferry_proto::ferry::v1 as pb;
use pb::domain_service_server::DomainService;
use serde_json::json;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::audit::{Auditor, Entry};
use crate::authz::{Action, Caller, Resource, Scope};
use crate::paging::{Key, Keyset, Kind, asc};
use crate::wire::{parse_id, ts};
use crate::workloads::{Workloads, unique_as};
use crate::{Error, Result};

pub use ferry_common::dns::CHALLENGE_LABEL;

/// The operator's domain settings.
#[derive(Debug, Clone)]
pub struct DomainConfig {
    /// Host names under it need no verified domain (`--base-domain`).
    pub base_domain: Option<String>,
    /// Where TXT lookups go; `None`: the system's first resolver.
    pub dns_resolver: Option<SocketAddr>,
    /// How long one lookup attempt waits (two attempts).
    pub dns_timeout: Duration,
    /// ferry-proxy's plain-HTTP port the HTTP challenge is fetched from.
    pub http_port: u16,
}

impl Default for DomainConfig {
    fn default() -> Self {
        Self {
            base_domain: None,
            dns_resolver: None,
            dns_timeout: Duration::from_secs(3),
            http_port: 80,
        }
    }
}

impl DomainConfig {
    fn resolver(&self) -> SocketAddr {
        self.dns_resolver.unwrap_or_else(dns::system_resolver)
    }
}

/// A domain as given: lower-cased, without a trailing dot; `*.` makes it a
/// wildcard. Returns the bare name and whether it is a wildcard.
pub fn parse_domain(field: &str, value: &str) -> Result<(String, bool)> {
    let invalid = |why: &str| Error::InvalidArgument(format!("{field}: {why}"));
    let v = value.trim().trim_end_matches('.');
    if v.is_empty() {
        return Err(invalid("required, e.g. example.com or *.example.com"));
    }
    if !v.is_ascii() {
        return Err(invalid(
            "must be ASCII: give an internationalized name in its punycode form (xn--...)",
        ));
    }
    let v = v.to_ascii_lowercase();
    let (name, wildcard) = match v.strip_prefix("*.") {
        Some(rest) => (rest.to_owned(), true),
        None => (v, false),
    };
    if name.contains('*') {
        return Err(invalid(
            "a wildcard is only allowed as the whole first label (*.example.com)",
        ));
    }
    if name.len() > 253 {
        return Err(invalid("at most 253 characters"));
    }
    let labels: Vec<&str> = name.split('.').collect();
    if labels.len() < 2 {
        return Err(invalid("needs at least two labels, like example.com"));
    }
    for label in &labels {
        let ok = (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(invalid(&format!(
                "label {label:?}: 1 to 63 letters, digits or '-', not starting or ending with '-'"
            )));
        }
    }
    if labels
        .last()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(invalid("must be a domain name, not an IP address"));
    }
    Ok((name, wildcard))
}

/// `name` and every parent of it down to the last two labels
/// (`a.b.example.com` → itself, `b.example.com`, `example.com`).
fn suffixes(name: &str) -> Vec<String> {
    let labels: Vec<&str> = name.split('.').collect();
    (0..labels.len().saturating_sub(1))
        .map(|i| labels[i..].join("."))
        .collect()
}

/// Whether a domain (bare `name`, `wildcard`) covers `host`.
pub fn covers(name: &str, wildcard: bool, host: &str) -> bool {
    host == name || (wildcard && host.ends_with(&format!(".{name}")))
}

/// Whether `host` is strictly under `base`.
fn under(base: &str, host: &str) -> bool {
    host.len() > base.len() + 1 && host.ends_with(&format!(".{base}"))
}

/// `FailedPrecondition` naming `hostname` unless the host is under the
/// base domain or covered by a verified domain of `organization_id`.
pub async fn check_route_host<C: ConnectionTrait>(
    db: &C,
    config: &DomainConfig,
    organization_id: Uuid,
    host: &str,
) -> Result<()> {
    if config
        .base_domain
        .as_deref()
        .is_some_and(|base| under(base, host))
    {
        return Ok(());
    }
    // Every organization's live claims over the host: the most specific
    // one decides (a name another organization verified under this one's
    // wildcard is theirs).
    let claims: Vec<domains::Model> = domains::Entity::find()
        .filter(domains::Column::Name.is_in(suffixes(host)))
        .filter(domains::Column::VerifiedAt.is_not_null())
        .filter(domains::Column::VerificationLostAt.is_null())
        .filter(domains::Column::DeletedAt.is_null())
        .all(db)
        .await?
        .into_iter()
        .filter(|d| covers(&d.name, d.wildcard, host))
        .collect();
    let nearest = claims.iter().map(|d| d.name.len()).max();
    let decisive: Vec<&domains::Model> = claims
        .iter()
        .filter(|d| Some(d.name.len()) == nearest)
        .collect();
    if !decisive.is_empty()
        && decisive
            .iter()
            .all(|d| d.organization_id == organization_id)
    {
        return Ok(());
    }
    if let Some(theirs) = decisive
        .iter()
        .find(|d| d.organization_id != organization_id)
        && claims.iter().any(|d| d.organization_id == organization_id)
    {
        return Err(Error::FailedPrecondition(format!(
            "hostname: {host} is under a domain of this organization, but {} is verified by \
             another organization, which holds the names under it",
            display(theirs)
        )));
    }
    let lost = domains::Entity::find()
        .filter(domains::Column::OrganizationId.eq(organization_id))
        .filter(domains::Column::Name.is_in(suffixes(host)))
        .filter(domains::Column::VerificationLostAt.is_not_null())
        .filter(domains::Column::DeletedAt.is_null())
        .all(db)
        .await?
        .into_iter()
        .find(|d| covers(&d.name, d.wildcard, host));
    if let Some(lost) = &lost
        && lost.verification_method.as_deref() == Some("http")
    {
        return Err(Error::FailedPrecondition(format!(
            "hostname: {host} is under {}, which lost its HTTP verification: {}",
            display(lost),
            lost.last_check_error
                .as_deref()
                .unwrap_or("the proof is gone")
        )));
    }
    if let Some(lost) = lost {
        return Err(Error::FailedPrecondition(format!(
            "hostname: {host} is under {}, whose TXT record {CHALLENGE_LABEL}.{} was found gone; \
             publish it again and call VerifyDomain (routes already made keep working)",
            display(&lost),
            lost.name
        )));
    }
    let base = config
        .base_domain
        .as_deref()
        .map(|b| format!(" nor under the base domain {b}"))
        .unwrap_or_default();
    Err(Error::FailedPrecondition(format!(
        "hostname: {host} is not under a verified domain of this organization{base}; \
         add its domain (DomainService.AddDomain) and verify it first"
    )))
}

/// Another organization's verified domain that covers `name` (the same
/// name, or a wildcard above it), if any.
async fn claimed_elsewhere<C: ConnectionTrait>(
    db: &C,
    organization_id: Uuid,
    name: &str,
) -> Result<Option<domains::Model>> {
    if db.get_database_backend() == DbBackend::Postgres {
        db.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_advisory_xact_lock(hashtext($1))",
            [format!("domain:{name}").into()],
        ))
        .await?;
    }
    Ok(domains::Entity::find()
        .filter(domains::Column::OrganizationId.ne(organization_id))
        .filter(domains::Column::Name.is_in(suffixes(name)))
        .filter(domains::Column::VerifiedAt.is_not_null())
        .filter(domains::Column::VerificationLostAt.is_null())
        .filter(domains::Column::DeletedAt.is_null())
        .all(db)
        .await?
        .into_iter()
        .find(|d| covers(&d.name, d.wildcard, name)))
}

/// The HTTP challenge ferry-proxy answers for `d`, as (host, token): for
/// a live apex domain that is pending, lost, or verified over HTTP (the
/// scheduler's re-checks fetch it too).
pub fn http_challenge(d: &domains::Model) -> Option<(String, String)> {
    let wanted = d.verified_at.is_none()
        || d.verification_lost_at.is_some()
        || d.verification_method.as_deref() == Some("http");
    (d.deleted_at.is_none() && !d.wildcard && wanted)
        .then(|| Some((d.name.clone(), d.verification_token.clone()?)))
        .flatten()
}

/// How VerifyDomain is asked to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Dns,
    Http,
}

impl Method {
    fn parse(value: &str) -> Result<Self> {
        match value {
            "" | "dns" => Ok(Self::Dns),
            "http" => Ok(Self::Http),
            other => Err(Error::InvalidArgument(format!(
                "method: {other:?} is not a proof method; use dns (the TXT record) or http"
            ))),
        }
    }
    fn as_str(self) -> &'static str {
        match self {
            Self::Dns => "dns",
            Self::Http => "http",
        }
    }
}

/// Another organization's live row (pending or verified) over `name`: the
/// same name, or a wildcard above it. An HTTP proof cannot tell two
/// claimants apart, so any such row refuses it.
async fn contested<C: ConnectionTrait>(
    db: &C,
    organization_id: Uuid,
    name: &str,
) -> Result<Option<domains::Model>> {
    Ok(domains::Entity::find()
        .filter(domains::Column::OrganizationId.ne(organization_id))
        .filter(domains::Column::Name.is_in(suffixes(name)))
        .filter(domains::Column::DeletedAt.is_null())
        .all(db)
        .await?
        .into_iter()
        .find(|d| covers(&d.name, d.wildcard, name)))
}

/// `winner` proved `theirs`' name with its TXT record while `theirs` was
/// only verified over HTTP: `theirs` becomes lost, its organization's
/// routes on the names `winner` covers are removed (the host is the
/// winner's now), and that organization is told (audit row in its chain,
/// notification), all in `txn`.
async fn take_over<C: ConnectionTrait>(
    txn: &C,
    caller: &Caller,
    winner: &domains::Model,
    theirs: &domains::Model,
) -> Result<u64> {
    let now = Utc::now();
    let mut lost = theirs.clone().into_active_model();
    lost.verification_lost_at = Set(Some(now));
    lost.last_checked_at = Set(Some(now));
    lost.last_check_error = Set(Some(format!(
        "another organization proved {} with its TXT record; an HTTP proof gives way to DNS",
        display(winner)
    )));
    lost.updated_at = Set(now);
    lost.update(txn).await?;
    let their_projects = projects::Entity::find()
        .filter(projects::Column::OrganizationId.eq(theirs.organization_id))
        .all(txn)
        .await?
        .into_iter()
        .map(|p| p.id);
    // An HTTP-verified domain is an apex: its routes use exactly its name.
    let count = routes::Entity::delete_many()
        .filter(routes::Column::ProjectId.is_in(their_projects))
        .filter(routes::Column::Hostname.eq(theirs.name.as_str()))
        .exec(txn)
        .await?
        .rows_affected;
    let reason = format!(
        "another organization proved {} with its TXT record",
        display(winner)
    );
    Auditor::org(caller, theirs.organization_id)
        .record(
            txn,
            Entry::new("domain.taken_over", AuditResourceType::Domain, theirs.id).details(json!({
                "domain": display(theirs),
                "byDomainId": winner.id,
                "routesRemoved": count,
            })),
        )
        .await?;
    let shown = display(theirs);
    ferry_db::outbox::enqueue(
        txn,
        Event::new(
            theirs.organization_id,
            theirs.project_id,
            EventKind::DomainVerificationLost,
            json!({
                "domainId": theirs.id,
                "domain": shown,
                "reason": reason,
                "summary": format!(
                    "Domain {shown} lost its verification: {reason}. It was verified over HTTP \
                     only; its {count} route(s) on the name were removed."
                ),
            }),
        ),
    )
    .await?;
    Ok(count)
}

fn display(d: &domains::Model) -> String {
    if d.wildcard {
        format!("*.{}", d.name)
    } else {
        d.name.clone()
    }
}

fn refuse_claimed(d: &domains::Model) -> Error {
    Error::FailedPrecondition(format!(
        "domain: {} is verified by another organization; it cannot be claimed here",
        display(d)
    ))
}

fn refuse_contested(d: &domains::Model) -> Error {
    Error::FailedPrecondition(format!(
        "domain: {} is also claimed by another organization, so an HTTP proof cannot tell \
         who controls it; publish the TXT record and verify with method dns",
        display(d)
    ))
}

fn domain_message(d: &domains::Model) -> pb::Domain {
    let token = d.verification_token.clone().unwrap_or_default();
    let (http_token, http_url) = if d.wildcard {
        (String::new(), String::new())
    } else {
        let url = format!("http://{}{PATH_PREFIX}{token}", d.name);
        (token.clone(), url)
    };
    pb::Domain {
        id: d.id.to_string(),
        domain: display(d),
        verified: d.verified_at.is_some(),
        txt_record_name: format!("{CHALLENGE_LABEL}.{}", d.name),
        txt_record_value: token.clone(),
        http_token,
        http_url,
        project_id: d.project_id.map(|p| p.to_string()).unwrap_or_default(),
        organization_id: d.organization_id.to_string(),
        wildcard: d.wildcard,
        status: match (d.verified_at, d.verification_lost_at) {
            (Some(_), Some(_)) => "lost",
            (Some(_), None) => "verified",
            (None, _) => "pending",
        }
        .into(),
        method: d.verification_method.clone().unwrap_or_default(),
        verified_at: d.verified_at.map(ts),
        verified_by: d.verified_by.map(|u| u.to_string()).unwrap_or_default(),
        last_checked_at: d.last_checked_at.map(ts),
        last_check_error: d.last_check_error.clone().unwrap_or_default(),
        created_at: Some(ts(d.created_at)),
        verification_lost_at: d.verification_lost_at.map(ts),
    }
}

/// ListDomains' order: by name, then id.
static DOMAINS: Keyset<domains::Column> = Keyset {
    list: "domains",
    columns: &[
        asc(domains::Column::Name, Kind::Text),
        asc(domains::Column::Id, Kind::Id),
    ],
};

/// The `DomainService` implementation.
#[derive(Debug, Clone)]
pub struct DomainApi(pub Workloads);

/// Adds `DomainService` to `services`.
pub fn add_domain_service(services: GrpcServices, workloads: &Workloads) -> GrpcServices {
    services.add_service(pb::domain_service_server::DomainServiceServer::new(
        DomainApi(workloads.clone()),
    ))
}

impl DomainApi {
    fn config(&self) -> &DomainConfig {
        &self.0.deployer.config.domains
    }

    /// A live domain the caller may `action` (through its project).
    async fn authorize(
        &self,
        caller: &Caller,
        action: Action,
        id: Uuid,
    ) -> Result<(Scope, domains::Model)> {
        let db = &self.0.identity.db;
        let missing = || Error::NotFound("domain not found".into());
        let row = domains::Entity::find_by_id(id)
            .filter(domains::Column::DeletedAt.is_null())
            .one(db)
            .await?
            .ok_or_else(missing)?;
        let project_id = row.project_id.ok_or_else(missing)?;
        let (scope, project) = caller.project(db, action, project_id).await?;
        if project.organization_id != row.organization_id {
            return Err(missing());
        }
        Ok((scope, row))
    }

    async fn add(&self, request: Request<pb::AddDomainRequest>) -> Result<pb::Domain> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let project_id = parse_id("projectId", &req.project_id)?;
        let db = &self.0.identity.db;
        let (scope, project) = caller.project(db, Action::DomainManage, project_id).await?;
        let (name, wildcard) = parse_domain("domain", &req.domain)?;
        if req.preverified {
            caller
                .can(
                    db,
                    Action::DomainPreverify,
                    Resource::Project {
                        organization_id: project.organization_id,
                        id: project.id,
                    },
                )
                .await?;
        }
        let txn = crate::db::begin_write(db).await?;
        // An HTTP-only claim can be taken over by a TXT proof, so adding
        // the name stays open.
        if let Some(other) = claimed_elsewhere(&txn, project.organization_id, &name).await?
            && other.verification_method.as_deref() != Some("http")
        {
            return Err(refuse_claimed(&other));
        }
        let now = Utc::now();
        let token = hex::encode(rand::random::<[u8; 20]>());
        let row = domains::ActiveModel {
            id: Set(Uuid::now_v7()),
            organization_id: Set(project.organization_id),
            project_id: Set(Some(project_id)),
            name: Set(name),
            wildcard: Set(wildcard),
            verification_token: Set(Some(format!("ferry-{token}"))),
            verified_at: Set(req.preverified.then_some(now)),
            verified_by: Set(req.preverified.then_some(caller.user_id)),
            verification_method: Set(req.preverified.then(|| "operator".to_owned())),
            last_checked_at: Set(None),
            last_check_error: Set(None),
            verification_lost_at: Set(None),
            tls_enabled: Set(true),
            created_by: Set(Some(caller.user_id)),
            created_at: Set(now),
            updated_at: Set(now),
            deleted_at: Set(None),
        }
        .insert(&txn)
        .await
        .map_err(unique_as(
            "domain: already added to this organization (as an apex or wildcard domain)",
        ))?;
        scope
            .audit(
                &txn,
                Entry::new("domain.add", AuditResourceType::Domain, row.id).details(json!({
                    "domain": display(&row),
                    "projectId": project_id,
                    "preverified": req.preverified,
                })),
            )
            .await?;
        txn.commit().await?;
        self.0.feed.notify_committed();
        Ok(domain_message(&row))
    }

    async fn verify(&self, request: Request<pb::VerifyDomainRequest>) -> Result<pb::Domain> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let id = parse_id("id", &req.id)?;
        let method = Method::parse(&req.method)?;
        let (scope, row) = self.authorize(&caller, Action::DomainManage, id).await?;
        if row.verified_at.is_some() && row.verification_lost_at.is_none() {
            return Ok(domain_message(&row));
        }
        if method == Method::Http && row.wildcard {
            return Err(Error::InvalidArgument(format!(
                "method: {} is a wildcard domain; prove it with the TXT record (method dns)",
                display(&row)
            )));
        }
        let db = &self.0.identity.db;
        if method == Method::Http
            && let Some(other) = contested(db, row.organization_id, &row.name).await?
        {
            return Err(refuse_contested(&other));
        }
        let problem = match self.proof(&row, method).await {
            dns::Proof::Present => None,
            dns::Proof::Missing(why) | dns::Proof::Unknown(why) => Some(why),
        };
        let now = Utc::now();
        let txn = crate::db::begin_write(db).await?;
        let (other, contender) = match (&problem, method) {
            (Some(_), _) => (None, None),
            (None, Method::Dns) => (
                claimed_elsewhere(&txn, row.organization_id, &row.name).await?,
                None,
            ),
            // Checked again under the name's lock: a claim made meanwhile.
            (None, Method::Http) => (None, contested(&txn, row.organization_id, &row.name).await?),
        };
        // A TXT proof outranks another organization's HTTP-only proof.
        let overtaken = other
            .as_ref()
            .filter(|o| o.verification_method.as_deref() == Some("http"));
        let refused = match (&other, &contender) {
            (_, Some(c)) => Some(refuse_contested(c)),
            (Some(o), _) if overtaken.is_none() => Some(refuse_claimed(o)),
            _ => None,
        };
        let mut update = row.clone().into_active_model();
        update.last_checked_at = Set(Some(now));
        update.updated_at = Set(now);
        let verified = problem.is_none() && refused.is_none();
        if verified {
            update.verified_at = Set(Some(now));
            update.verified_by = Set(Some(caller.user_id));
            update.verification_method = Set(Some(method.as_str().into()));
            update.last_check_error = Set(None);
            update.verification_lost_at = Set(None);
        } else {
            let refusal = refused.as_ref().map(ToString::to_string);
            update.last_check_error = Set(problem.clone().or(refusal));
        }
        let updated = update.update(&txn).await?;
        if verified {
            let routes_removed = match overtaken {
                Some(theirs) => Some(take_over(&txn, &caller, &updated, theirs).await?),
                None => None,
            };
            scope
                .audit(
                    &txn,
                    Entry::new("domain.verify", AuditResourceType::Domain, id).details(json!({
                        "domain": display(&row),
                        "method": method.as_str(),
                        "tookOverDomainId": overtaken.map(|t| t.id),
                        "theirRoutesRemoved": routes_removed,
                    })),
                )
                .await?;
        }
        txn.commit().await?;
        if let Some(refused) = refused {
            return Err(refused);
        }
        match problem {
            Some(problem) => Err(Error::FailedPrecondition(format!(
                "domain: {} is not verified: {problem}",
                display(&row)
            ))),
            None => {
                self.0.feed.notify_committed();
                Ok(domain_message(&updated))
            }
        }
    }

    /// Looks the proof of `row` up the way `method` says.
    async fn proof(&self, row: &domains::Model, method: Method) -> dns::Proof {
        let config = self.config();
        let token = row.verification_token.clone().unwrap_or_default();
        match method {
            Method::Dns => {
                let record = format!("{CHALLENGE_LABEL}.{}", row.name);
                dns::txt_proof(config.resolver(), &record, &token, config.dns_timeout).await
            }
            Method::Http => {
                http_proof(
                    config.resolver(),
                    &row.name,
                    config.http_port,
                    &token,
                    config.dns_timeout,
                )
                .await
            }
        }
    }

    async fn list(
        &self,
        request: Request<pb::ListDomainsRequest>,
    ) -> Result<pb::ListDomainsResponse> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let project_id = parse_id("projectId", &req.project_id)?;
        let page = DOMAINS.page(req.page_size, &req.page_token)?;
        let db = &self.0.identity.db;
        let (_, project) = caller.project(db, Action::DomainRead, project_id).await?;
        let query = domains::Entity::find()
            .filter(domains::Column::ProjectId.eq(project_id))
            .filter(domains::Column::OrganizationId.eq(project.organization_id))
            .filter(domains::Column::DeletedAt.is_null());
        let rows = page.apply(query).all(db).await?;
        let (rows, next_page_token) =
            page.finish(rows, |d| vec![Key::Text(d.name.clone()), Key::Id(d.id)]);
        Ok(pb::ListDomainsResponse {
            domains: rows.iter().map(domain_message).collect(),
            next_page_token,
        })
    }

    async fn delete(&self, request: Request<pb::DeleteDomainRequest>) -> Result<()> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let id = parse_id("id", &request.get_ref().id)?;
        let (scope, row) = self.authorize(&caller, Action::DomainManage, id).await?;
        let txn = crate::db::begin_write(&self.0.identity.db).await?;
        let now = Utc::now();
        let mut update = row.clone().into_active_model();
        update.deleted_at = Set(Some(now));
        update.updated_at = Set(now);
        update.update(&txn).await?;
        scope
            .audit(
                &txn,
                Entry::new("domain.delete", AuditResourceType::Domain, id)
                    .details(json!({ "domain": display(&row) })),
            )
            .await?;
        txn.commit().await?;
        self.0.feed.notify_committed();
        Ok(())
    }
}

#[tonic::async_trait]
impl DomainService for DomainApi {
    async fn add_domain(
        &self,
        request: Request<pb::AddDomainRequest>,
    ) -> Result<Response<pb::Domain>, Status> {
        Ok(Response::new(self.add(request).await?))
    }
    async fn verify_domain(
        &self,
        request: Request<pb::VerifyDomainRequest>,
    ) -> Result<Response<pb::Domain>, Status> {
        Ok(Response::new(self.verify(request).await?))
    }
    async fn list_domains(
        &self,
        request: Request<pb::ListDomainsRequest>,
    ) -> Result<Response<pb::ListDomainsResponse>, Status> {
        Ok(Response::new(self.list(request).await?))
    }
    async fn delete_domain(
        &self,
        request: Request<pb::DeleteDomainRequest>,
    ) -> Result<Response<pb::DeleteDomainResponse>, Status> {
        self.delete(request).await?;
        Ok(Response::new(pb::DeleteDomainResponse {}))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_validated_naming_the_field() {
        assert_eq!(
            parse_domain("domain", "Example.COM.").unwrap(),
            ("example.com".into(), false)
        );
        assert_eq!(
            parse_domain("domain", "*.example.com").unwrap(),
            ("example.com".into(), true)
        );
        for bad in [
            "",
            "com",
            "bücher.de",
            "a.*.example.com",
            "*.com",
            "-a.example.com",
            "a_b.example.com",
            "1.2.3.4",
            &format!("{}.com", "a".repeat(64)),
            &format!("{}com", "a.".repeat(130)),
        ] {
            let err = parse_domain("domain", bad).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidArgument(m) if m.starts_with("domain: ")),
                "{bad}: {err:?}"
            );
        }
        assert!(
            parse_domain("domain", "bücher.de")
                .unwrap_err()
                .to_string()
                .contains("punycode")
        );
    }

    #[test]
    fn coverage_of_apex_wildcard_and_base() {
        assert!(covers("example.com", false, "example.com"));
        assert!(!covers("example.com", false, "www.example.com"));
        assert!(covers("example.com", true, "a.b.example.com"));
        assert!(covers("example.com", true, "example.com"));
        assert!(!covers("example.com", true, "badexample.com"));
        assert!(under("apps.example.com", "shop.apps.example.com"));
        assert!(!under("apps.example.com", "apps.example.com"));
        assert!(!under("apps.example.com", "evilapps.example.com"));
        assert_eq!(
            suffixes("a.b.example.com"),
            vec!["a.b.example.com", "b.example.com", "example.com"]
        );
    }
}
