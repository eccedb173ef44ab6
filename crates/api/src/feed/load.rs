//! Compiles the database's routing rows into feed messages.
//!
//! One feed `Route` per hostname: the rows of `routes` sharing a hostname
//! (unique per path prefix) become that route's path-prefix targets, so the
//! proxy's longest-prefix match sees all of them. Each `route_targets` row
//! becomes the upstream `<service>.<project-namespace>.svc.cluster.local:<port>`
//! (service names are DNS labels; the namespace is the project's generated one);
//! weight 0 drains a target, other weights go to the proxy as shares. One certificate per domain (the one expiring
//! last), decrypted here: private keys leave the api only over the
//! authenticated feed.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use ferry_db::crypto::Keyring;
use ferry_db::entities::{
    acme_challenges, certificates, domains, projects, route_targets, routes, service_ports,
    services,
};
use ferry_db::sea_orm::prelude::Uuid;
use ferry_db::sea_orm::{
    AccessMode, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait,
    IsolationLevel, QueryFilter, QuerySelect, TransactionTrait,
};
use ferry_proto::ferry::internal::v1 as pb;

use crate::{Error, Result};

/// The proxy's largest weight (the api accepts up to 1,000 per row).
const MAX_WEIGHT: u32 = 10_000;

/// The part of the feed state that comes from the database, keyed by id.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DbState {
    pub routes: BTreeMap<String, pb::Route>,
    pub certificates: BTreeMap<String, pb::Certificate>,
    /// ACME HTTP-01 answers the scheduler published (`acme_challenges`,
    /// unexpired): token → key authorization.
    pub acme: BTreeMap<String, String>,
    /// Domain HTTP challenges ferry-proxy answers, by token.
    pub domain_challenges: BTreeMap<String, pb::DomainChallenge>,
}

/// The in-cluster address of port `port` of service `service` in the
/// project namespace `namespace`.
pub fn upstream_address(service: &str, namespace: &str, port: i32) -> String {
    format!("{service}.{namespace}.svc.cluster.local:{port}")
}

fn db_err(err: DbErr) -> Error {
    Error::Db(err.into())
}

/// Reads routes, targets and certificates in one read-only transaction
/// (repeatable read on PostgreSQL, so the tables agree with each other).
pub async fn load(db: &DatabaseConnection, keyring: &Keyring) -> Result<DbState> {
    let txn = match db.get_database_backend() {
        DbBackend::Postgres => {
            db.begin_with_config(
                Some(IsolationLevel::RepeatableRead),
                Some(AccessMode::ReadOnly),
            )
            .await
        }
        // SQLite transactions are serializable already (and warn on options).
        _ => db.begin().await,
    }
    .map_err(db_err)?;
    let rows = read(&txn).await;
    // Read-only: nothing to keep, and a rollback cannot lose anything.
    txn.rollback().await.map_err(db_err)?;
    Ok(compile(rows?, keyring))
}

struct Rows {
    projects: HashMap<Uuid, String>,
    services: HashMap<Uuid, (Uuid, String)>,
    domains: HashMap<Uuid, domains::Model>,
    routes: Vec<routes::Model>,
    targets: Vec<route_targets::Model>,
    /// `(service, port)` pairs whose port name asks for HTTP/2 upstream.
    h2c_ports: HashSet<(Uuid, i32)>,
    certificates: Vec<certificates::Model>,
    acme: Vec<(String, String)>,
}

async fn read(txn: &impl ConnectionTrait) -> Result<Rows> {
    let projects = projects::Entity::find()
        .select_only()
        .columns([projects::Column::Id, projects::Column::Namespace])
        .into_tuple::<(Uuid, String)>()
        .all(txn)
        .await
        .map_err(db_err)?
        .into_iter()
        .collect();
    let services = services::Entity::find()
        .select_only()
        .columns([
            services::Column::Id,
            services::Column::ProjectId,
            services::Column::Name,
        ])
        .into_tuple::<(Uuid, Uuid, String)>()
        .all(txn)
        .await
        .map_err(db_err)?
        .into_iter()
        .map(|(id, project, name)| (id, (project, name)))
        .collect();
    let domains = domains::Entity::find()
        .all(txn)
        .await
        .map_err(db_err)?
        .into_iter()
        .map(|d| (d.id, d))
        .collect();
    let h2c_ports = service_ports::Entity::find()
        .select_only()
        .columns([
            service_ports::Column::ServiceId,
            service_ports::Column::ContainerPort,
            service_ports::Column::Name,
        ])
        .into_tuple::<(Uuid, i32, Option<String>)>()
        .all(txn)
        .await
        .map_err(db_err)?
        .into_iter()
        .filter(|(_, _, name)| name.as_deref().is_some_and(speaks_h2c))
        .map(|(service, port, _)| (service, port))
        .collect();
    Ok(Rows {
        projects,
        services,
        domains,
        h2c_ports,
        routes: routes::Entity::find().all(txn).await.map_err(db_err)?,
        targets: route_targets::Entity::find()
            .all(txn)
            .await
            .map_err(db_err)?,
        certificates: certificates::Entity::find()
            .all(txn)
            .await
            .map_err(db_err)?,
        acme: acme_challenges::Entity::find()
            .select_only()
            .columns([
                acme_challenges::Column::Token,
                acme_challenges::Column::KeyAuthorization,
            ])
            .filter(acme_challenges::Column::ExpiresAt.gt(chrono::Utc::now()))
            .into_tuple::<(String, String)>()
            .all(txn)
            .await
            .map_err(db_err)?,
    })
}

/// Whether a port name asks for HTTP/2 with prior knowledge upstream, by
/// Istio's port-naming convention: `grpc`, `h2c` or `http2`, alone or
/// before a `-suffix` (`grpc-api`). `grpc-web` is HTTP/1.1 and stays so.
pub fn speaks_h2c(port_name: &str) -> bool {
    let name = port_name.to_ascii_lowercase();
    if name == "grpc-web" || name.starts_with("grpc-web-") {
        return false;
    }
    ["grpc", "h2c", "http2"].iter().any(|p| {
        name == *p
            || name
                .strip_prefix(p)
                .is_some_and(|rest| rest.starts_with('-'))
    })
}

fn compile(rows: Rows, keyring: &Keyring) -> DbState {
    let mut targets_by_route: HashMap<Uuid, Vec<&route_targets::Model>> = HashMap::new();
    for target in &rows.targets {
        targets_by_route
            .entry(target.route_id)
            .or_default()
            .push(target);
    }
    // A soft-deleted domain takes its routes offline.
    let live_domain = |id: Option<Uuid>| match id {
        None => true,
        Some(id) => rows
            .domains
            .get(&id)
            .is_some_and(|d| d.deleted_at.is_none()),
    };

    let mut by_host: BTreeMap<String, pb::Route> = BTreeMap::new();
    let mut hosts_by_domain: HashMap<Uuid, BTreeSet<String>> = HashMap::new();
    for route in rows.routes.iter().filter(|r| live_domain(r.domain_id)) {
        if let Some(domain) = route.domain_id {
            hosts_by_domain
                .entry(domain)
                .or_default()
                .insert(route.hostname.clone());
        }
        let rows_targets = targets_by_route
            .get(&route.id)
            .map(Vec::as_slice)
            .unwrap_or_default();
        // Two rows naming one address add up their weights.
        let mut weighted: BTreeMap<String, u32> = BTreeMap::new();
        for t in rows_targets.iter().filter(|t| t.weight > 0) {
            let Some((project, service)) = rows.services.get(&t.service_id) else {
                continue;
            };
            let Some(namespace) = rows.projects.get(project) else {
                continue;
            };
            let weight = weighted
                .entry(upstream_address(service, namespace, t.port))
                .or_default();
            *weight = weight
                .saturating_add(u32::try_from(t.weight).unwrap_or(0))
                .min(MAX_WEIGHT);
        }
        let mut weights: Vec<u32> = weighted.values().copied().collect();
        if weights.windows(2).all(|w| w[0] == w[1]) {
            weights.clear();
        }
        // A path's upstreams share one protocol: h2c only if every target
        // port is named for it.
        let h2c = !rows_targets.is_empty()
            && rows_targets
                .iter()
                .all(|t| rows.h2c_ports.contains(&(t.service_id, t.port)));
        let protocol = if h2c {
            pb::UpstreamProtocol::H2c
        } else {
            pb::UpstreamProtocol::Http1
        };
        let target = pb::Target {
            path_prefix: route.path_prefix.clone(),
            strip_prefix: rows_targets.iter().any(|t| t.strip_path),
            upstreams: weighted.into_keys().collect(),
            balance: pb::Balance::Unspecified.into(),
            weights,
            protocol: protocol.into(),
        };
        let redirect = route.tls_enabled && route.https_redirect;
        let entry = by_host
            .entry(route.hostname.clone())
            .or_insert_with(|| pb::Route {
                id: route.hostname.clone(),
                hosts: vec![route.hostname.clone()],
                targets: Vec::new(),
                redirect_https: true,
            });
        entry.targets.push(target);
        // Redirect a host only if every path of it asks for it.
        entry.redirect_https &= redirect;
    }
    for route in by_host.values_mut() {
        route
            .targets
            .sort_by(|a, b| a.path_prefix.cmp(&b.path_prefix));
    }

    // The certificate expiring last is the current one of its domain.
    let mut current: HashMap<Uuid, &certificates::Model> = HashMap::new();
    for cert in &rows.certificates {
        let newer = current.get(&cert.domain_id).is_none_or(|best| {
            (cert.expires_at, cert.created_at, cert.id)
                > (best.expires_at, best.created_at, best.id)
        });
        if newer {
            current.insert(cert.domain_id, cert);
        }
    }
    let mut certificates = BTreeMap::new();
    for (domain_id, cert) in current {
        let Some(domain) = rows
            .domains
            .get(&domain_id)
            .filter(|d| d.deleted_at.is_none())
        else {
            continue;
        };
        let key = match keyring.decrypt("certificates", "private_key", cert.id, &cert.private_key) {
            Ok(key) => key,
            Err(err) => {
                // One bad row must not stop every other route change.
                tracing::error!(certificate = %cert.id, domain = %domain.name, error = %err,
                    "skipping a certificate whose private key cannot be decrypted");
                continue;
            }
        };
        let mut hosts = hosts_by_domain.remove(&domain_id).unwrap_or_default();
        hosts.insert(domain.name.clone());
        // Only the hosts its names cover (rows from before m0018 name none:
        // all of the domain's hosts).
        let names = crate::certificates::stored_hostnames(&cert.hostnames);
        if !names.is_empty() {
            hosts.retain(|h| {
                names
                    .iter()
                    .any(|n| crate::certificates::validate::name_matches(n, h))
            });
        }
        let id = domain_id.to_string();
        certificates.insert(
            id.clone(),
            pb::Certificate {
                id,
                hosts: hosts.into_iter().collect(),
                cert_pem: cert.certificate_pem.clone(),
                key_pem: key.expose().to_owned(),
            },
        );
    }
    let domain_challenges = rows
        .domains
        .values()
        .filter_map(crate::domains::http_challenge)
        .map(|(host, token)| (token.clone(), pb::DomainChallenge { host, token }))
        .collect();
    DbState {
        routes: by_host,
        certificates,
        acme: rows.acme.into_iter().collect(),
        domain_challenges,
    }
}

#[cfg(test)]
mod tests {
    use super::speaks_h2c;

    #[test]
    fn port_names_that_ask_for_h2c() {
        for yes in ["grpc", "GRPC", "grpc-api", "h2c", "http2", "http2-api"] {
            assert!(speaks_h2c(yes), "{yes}");
        }
        for no in [
            "http",
            "grpcx",
            "grpc-web",
            "grpc-web-1",
            "h2",
            "http-2",
            "",
        ] {
            assert!(!speaks_h2c(no), "{no}");
        }
    }
}
