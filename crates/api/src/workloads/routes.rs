//! `ferry.v1.RouteService`: host names and path prefixes forwarded to
//! services. Every change kicks the route feed after its commit. A new
//! route's host must be under the base domain or a verified domain of the
//! organization ([`crate::domains::check_route_host`]); host names never
//! change after creation (no UpdateRoute).

use std::collections::HashMap;

use chrono::Utc;
use ferry_db::entities::enums::AuditResourceType;
use ferry_db::entities::{route_targets, routes, service_ports, services};
use ferry_db::sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, ConnectionTrait, DbBackend,
    EntityTrait as _, QueryFilter as _, QueryOrder as _, Statement,
};
use ferry_proto::ferry::v1 as pb;
use pb::route_service_server::RouteService;
use serde_json::json;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{Workloads, unique_as, validate};
use crate::audit::Entry;
use crate::authz::{Action, Caller};
use crate::paging::{Key, Keyset, Kind, asc};
use crate::wire::{parse_id, ts};
use crate::{Error, Result};

/// The `RouteService` implementation.
#[derive(Debug, Clone)]
pub struct RouteApi(pub Workloads);

fn path_prefix(value: &str) -> Result<String> {
    if value.is_empty() {
        return Ok("/".into());
    }
    let ok = value.starts_with('/')
        && value.len() <= 1024
        && !value.contains(['?', '#', ' '])
        && !value.split('/').any(|s| s == "..");
    if ok {
        Ok(value.to_owned())
    } else {
        Err(Error::InvalidArgument(
            "pathPrefix: must start with '/', without '?', '#', spaces or '..'".into(),
        ))
    }
}

/// Checks targets against the project's services and their ports: a
/// service of any other project (or organization) is not found.
async fn targets<C: ConnectionTrait>(
    db: &C,
    project: Uuid,
    targets: &[pb::RouteTarget],
) -> Result<Vec<(Uuid, i32, i32, bool)>> {
    if targets.is_empty() || targets.len() > 32 {
        return Err(Error::InvalidArgument("targets: 1 to 32".into()));
    }
    let mut out = Vec::with_capacity(targets.len());
    for (i, t) in targets.iter().enumerate() {
        let field = |f: &str| format!("targets[{i}].{f}");
        let id = parse_id(&field("serviceId"), &t.service_id)?;
        let service = services::Entity::find_by_id(id)
            .filter(services::Column::ProjectId.eq(project))
            .one(db)
            .await?
            // NotFound, as for every id naming another tenant's resource.
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "{}: service not found in this project",
                    field("serviceId")
                ))
            })?;
        let port = i32::try_from(t.port).unwrap_or(0);
        let exposed = service_ports::Entity::find()
            .filter(service_ports::Column::ServiceId.eq(id))
            .filter(service_ports::Column::ContainerPort.eq(port))
            .one(db)
            .await?
            .is_some();
        if !exposed {
            return Err(Error::InvalidArgument(format!(
                "{}: service {} has no port {}",
                field("port"),
                service.name,
                t.port
            )));
        }
        let weight = if t.weight == 0 { 100 } else { t.weight };
        if weight > 1000 {
            return Err(Error::InvalidArgument(format!(
                "{}: 0 to 1000",
                field("weight")
            )));
        }
        if out.iter().any(|(s, p, _, _)| *s == id && *p == port) {
            return Err(Error::InvalidArgument(format!(
                "{}: duplicate target",
                field("serviceId")
            )));
        }
        out.push((id, port, i32::try_from(weight).unwrap_or(100), t.strip_path));
    }
    Ok(out)
}

/// A host name belongs to the first project that routes it: another
/// project (of any organization) adding a path under it would capture that
/// host's traffic. Serialised per host on PostgreSQL (SQLite serialises
/// writers already).
async fn claim_host<C: ConnectionTrait>(txn: &C, host: &str, project: Uuid) -> Result<()> {
    if txn.get_database_backend() == DbBackend::Postgres {
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_advisory_xact_lock(hashtext($1))",
            [format!("route-host:{host}").into()],
        ))
        .await?;
    }
    let taken = routes::Entity::find()
        .filter(routes::Column::Hostname.eq(host))
        .filter(routes::Column::ProjectId.ne(project))
        .one(txn)
        .await?
        .is_some();
    if taken {
        return Err(Error::AlreadyExists(
            "hostname: already routed by another project".into(),
        ));
    }
    Ok(())
}

async fn write_targets<C: ConnectionTrait>(
    txn: &C,
    route: Uuid,
    targets: &[(Uuid, i32, i32, bool)],
) -> Result<()> {
    route_targets::Entity::delete_many()
        .filter(route_targets::Column::RouteId.eq(route))
        .exec(txn)
        .await?;
    for (service, port, weight, strip) in targets {
        route_targets::ActiveModel {
            id: Set(Uuid::now_v7()),
            route_id: Set(route),
            service_id: Set(*service),
            port: Set(*port),
            weight: Set(*weight),
            strip_path: Set(*strip),
            created_at: Set(Utc::now()),
        }
        .insert(txn)
        .await?;
    }
    Ok(())
}

async fn route_to_pb<C: ConnectionTrait>(db: &C, r: &routes::Model) -> Result<pb::Route> {
    let mut out = routes_to_pb(db, std::slice::from_ref(r)).await?;
    out.pop()
        .ok_or_else(|| Error::Internal("route message not built".into()))
}

/// [`route_to_pb`] for many routes with one query for all their targets,
/// not one per route.
async fn routes_to_pb<C: ConnectionTrait>(
    db: &C,
    rows: &[routes::Model],
) -> Result<Vec<pb::Route>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let mut targets: HashMap<Uuid, Vec<route_targets::Model>> = HashMap::new();
    for t in route_targets::Entity::find()
        .filter(route_targets::Column::RouteId.is_in(rows.iter().map(|r| r.id)))
        .order_by_asc(route_targets::Column::CreatedAt)
        .all(db)
        .await?
    {
        targets.entry(t.route_id).or_default().push(t);
    }
    Ok(rows
        .iter()
        .map(|r| route_message(r, &targets.remove(&r.id).unwrap_or_default()))
        .collect())
}

fn route_message(r: &routes::Model, targets: &[route_targets::Model]) -> pb::Route {
    pb::Route {
        id: r.id.to_string(),
        project_id: r.project_id.to_string(),
        hostname: r.hostname.clone(),
        path_prefix: r.path_prefix.clone(),
        tls_enabled: r.tls_enabled,
        https_redirect: r.https_redirect,
        targets: targets
            .iter()
            .map(|t| pb::RouteTarget {
                service_id: t.service_id.to_string(),
                port: u32::try_from(t.port).unwrap_or(0),
                weight: u32::try_from(t.weight).unwrap_or(0),
                strip_path: t.strip_path,
            })
            .collect(),
        created_at: Some(ts(r.created_at)),
    }
}

/// ListRoutes' order: by host name, then path prefix, then id.
static ROUTES: Keyset<routes::Column> = Keyset {
    list: "routes",
    columns: &[
        asc(routes::Column::Hostname, Kind::Text),
        asc(routes::Column::PathPrefix, Kind::Text),
        asc(routes::Column::Id, Kind::Id),
    ],
};

impl RouteApi {
    async fn create(&self, request: Request<pb::CreateRouteRequest>) -> Result<pb::Route> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let project_id = parse_id("projectId", &req.project_id)?;
        let db = &self.0.identity.db;
        let (scope, _) = caller
            .project(db, Action::ProjectManage, project_id)
            .await?;
        let host = validate::hostname("hostname", &req.hostname)?;
        let prefix = path_prefix(&req.path_prefix)?;
        let txn = crate::db::begin_write(db).await?;
        crate::domains::check_route_host(
            &txn,
            &self.0.deployer.config.domains,
            scope.organization_id(),
            &host,
        )
        .await?;
        claim_host(&txn, &host, project_id).await?;
        let wanted = targets(&txn, project_id, &req.targets).await?;
        let now = Utc::now();
        let route = routes::ActiveModel {
            id: Set(Uuid::now_v7()),
            project_id: Set(project_id),
            domain_id: Set(None),
            hostname: Set(host),
            path_prefix: Set(prefix),
            tls_enabled: Set(req.tls_enabled),
            https_redirect: Set(req.https_redirect),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&txn)
        .await
        .map_err(unique_as(
            "this host name and path prefix are already routed",
        ))?;
        write_targets(&txn, route.id, &wanted).await?;
        scope
            .audit(
                &txn,
                Entry::new("route.create", AuditResourceType::Route, route.id).details(
                    json!({ "hostname": route.hostname, "pathPrefix": route.path_prefix }),
                ),
            )
            .await?;
        txn.commit().await?;
        self.0.feed.notify_committed();
        route_to_pb(db, &route).await
    }

    async fn list(
        &self,
        request: Request<pb::ListRoutesRequest>,
    ) -> Result<pb::ListRoutesResponse> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let project_id = parse_id("projectId", &req.project_id)?;
        let page = ROUTES.page(req.page_size, &req.page_token)?;
        let db = &self.0.identity.db;
        caller.project(db, Action::ProjectRead, project_id).await?;
        let query = routes::Entity::find().filter(routes::Column::ProjectId.eq(project_id));
        let rows = page.apply(query).all(db).await?;
        let (rows, next_page_token) = page.finish(rows, |r| {
            vec![
                Key::Text(r.hostname.clone()),
                Key::Text(r.path_prefix.clone()),
                Key::Id(r.id),
            ]
        });
        Ok(pb::ListRoutesResponse {
            routes: routes_to_pb(db, &rows).await?,
            next_page_token,
        })
    }

    /// A route whose project the caller may `action`.
    async fn authorize(
        &self,
        caller: &Caller,
        action: Action,
        id: Uuid,
    ) -> Result<(super::Scope, routes::Model)> {
        let db = &self.0.identity.db;
        let route = routes::Entity::find_by_id(id)
            .one(db)
            .await?
            .ok_or_else(|| Error::NotFound("route not found".into()))?;
        let (scope, _) = caller.project(db, action, route.project_id).await?;
        Ok((scope, route))
    }

    async fn set_targets(&self, request: Request<pb::SetRouteTargetsRequest>) -> Result<pb::Route> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let id = parse_id("id", &req.id)?;
        let (scope, route) = self.authorize(&caller, Action::ProjectManage, id).await?;
        let db = &self.0.identity.db;
        let txn = crate::db::begin_write(db).await?;
        let wanted = targets(&txn, route.project_id, &req.targets).await?;
        write_targets(&txn, id, &wanted).await?;
        scope
            .audit(
                &txn,
                Entry::new("route.set_targets", AuditResourceType::Route, id)
                    .details(json!({ "targets": wanted.len() })),
            )
            .await?;
        txn.commit().await?;
        self.0.feed.notify_committed();
        route_to_pb(db, &route).await
    }

    async fn delete(&self, request: Request<pb::DeleteRouteRequest>) -> Result<()> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let id = parse_id("id", &request.get_ref().id)?;
        let (scope, route) = self.authorize(&caller, Action::ProjectManage, id).await?;
        let txn = crate::db::begin_write(&self.0.identity.db).await?;
        routes::Entity::delete_by_id(id).exec(&txn).await?;
        scope
            .audit(
                &txn,
                Entry::new("route.delete", AuditResourceType::Route, id).details(
                    json!({ "hostname": route.hostname, "pathPrefix": route.path_prefix }),
                ),
            )
            .await?;
        txn.commit().await?;
        self.0.feed.notify_committed();
        Ok(())
    }
}

#[tonic::async_trait]
impl RouteService for RouteApi {
    async fn create_route(
        &self,
        request: Request<pb::CreateRouteRequest>,
    ) -> Result<Response<pb::Route>, Status> {
        Ok(Response::new(self.create(request).await?))
    }
    async fn list_routes(
        &self,
        request: Request<pb::ListRoutesRequest>,
    ) -> Result<Response<pb::ListRoutesResponse>, Status> {
        Ok(Response::new(self.list(request).await?))
    }
    async fn set_route_targets(
        &self,
        request: Request<pb::SetRouteTargetsRequest>,
    ) -> Result<Response<pb::Route>, Status> {
        Ok(Response::new(self.set_targets(request).await?))
    }
    async fn delete_route(
        &self,
        request: Request<pb::DeleteRouteRequest>,
    ) -> Result<Response<pb::DeleteRouteResponse>, Status> {
        self.delete(request).await?;
        Ok(Response::new(pb::DeleteRouteResponse {}))
    }
}
