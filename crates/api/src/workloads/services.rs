//! `ferry.v1.ServiceService`: applications and managed databases, their
//! ports, variables, volume mounts and variable groups.

use std::collections::HashMap;

use chrono::Utc;
use ferry_db::entities::enums::{
    AuditResourceType, DatabaseEngine, PortProtocol, ServiceKind, VolumeAccessMode,
};
use ferry_db::entities::{
    database_configs, projects, registry_integrations, service_env_vars, service_ports,
    service_variable_groups, services, variable_groups, volume_mounts, volumes,
};
use ferry_db::sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, ConnectionTrait, EntityTrait as _,
    IntoActiveModel as _, QueryFilter as _, QueryOrder as _,
};
use ferry_proto::ferry::v1 as pb;
use pb::service_service_server::ServiceService;
use serde_json::json;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::spec::{self, NewService, TemplateSpec, engine_info, json_strings};
use super::variables::env_to_pb;
use super::{Scope, Workloads, unique_as, validate};
use crate::audit::Entry;
use crate::authz::{Action, Caller, Resource};
use crate::paging::{Key, Keyset, Kind, asc};
use crate::wire::{parse_id, ts};
use crate::{Error, Result};

/// The `ServiceService` implementation.
#[derive(Debug, Clone)]
pub struct ServiceApi(pub Workloads);

/// ListServices' order: by name, then id.
static SERVICES: Keyset<services::Column> = Keyset {
    list: "services",
    columns: &[
        asc(services::Column::Name, Kind::Text),
        asc(services::Column::Id, Kind::Id),
    ],
};

/// ListEnvVars' order: by key, then id.
static ENV_VARS: Keyset<service_env_vars::Column> = Keyset {
    list: "env-vars",
    columns: &[
        asc(service_env_vars::Column::Key, Kind::Text),
        asc(service_env_vars::Column::Id, Kind::Id),
    ],
};

fn engine_to_pb(e: DatabaseEngine) -> pb::DatabaseEngine {
    match e {
        DatabaseEngine::Postgresql => pb::DatabaseEngine::Postgres,
        DatabaseEngine::Mysql => pb::DatabaseEngine::Mysql,
        DatabaseEngine::Mongodb => pb::DatabaseEngine::Mongodb,
        DatabaseEngine::Redis => pb::DatabaseEngine::Redis,
    }
}

/// The full API view of a service (never a secret).
pub(crate) async fn service_to_pb<C: ConnectionTrait>(
    db: &C,
    s: &services::Model,
) -> Result<pb::Service> {
    let mut out = services_to_pb(db, std::slice::from_ref(s)).await?;
    out.pop()
        .ok_or_else(|| Error::Internal("service message not built".into()))
}

/// [`service_to_pb`] for many services with five queries in all (ports,
/// mounts, variable groups, database configs, health), not five per service.
pub(crate) async fn services_to_pb<C: ConnectionTrait>(
    db: &C,
    rows: &[services::Model],
) -> Result<Vec<pb::Service>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = rows.iter().map(|s| s.id).collect();
    let mut ports: HashMap<Uuid, Vec<service_ports::Model>> = HashMap::new();
    for p in service_ports::Entity::find()
        .filter(service_ports::Column::ServiceId.is_in(ids.clone()))
        .order_by_asc(service_ports::Column::ContainerPort)
        .all(db)
        .await?
    {
        ports.entry(p.service_id).or_default().push(p);
    }
    let mut mounts: HashMap<Uuid, Vec<(volume_mounts::Model, Option<volumes::Model>)>> =
        HashMap::new();
    for (m, v) in volume_mounts::Entity::find()
        .filter(volume_mounts::Column::ServiceId.is_in(ids.clone()))
        .find_also_related(volumes::Entity)
        .order_by_asc(volume_mounts::Column::MountPath)
        .all(db)
        .await?
    {
        mounts.entry(m.service_id).or_default().push((m, v));
    }
    let mut groups: HashMap<Uuid, Vec<service_variable_groups::Model>> = HashMap::new();
    for g in service_variable_groups::Entity::find()
        .filter(service_variable_groups::Column::ServiceId.is_in(ids.clone()))
        .order_by_asc(service_variable_groups::Column::CreatedAt)
        .all(db)
        .await?
    {
        groups.entry(g.service_id).or_default().push(g);
    }
    let mut health = super::health::health_of(db, &ids).await?;
    let mut databases: HashMap<Uuid, database_configs::Model> = database_configs::Entity::find()
        .filter(database_configs::Column::ServiceId.is_in(ids))
        .all(db)
        .await?
        .into_iter()
        .map(|d| (d.service_id, d))
        .collect();
    Ok(rows
        .iter()
        .map(|s| pb::Service {
            health: health.remove(&s.id),
            ..service_message(
                s,
                &ports.remove(&s.id).unwrap_or_default(),
                &mounts.remove(&s.id).unwrap_or_default(),
                &groups.remove(&s.id).unwrap_or_default(),
                databases.remove(&s.id),
            )
        })
        .collect())
}

fn service_message(
    s: &services::Model,
    ports: &[service_ports::Model],
    mounts: &[(volume_mounts::Model, Option<volumes::Model>)],
    groups: &[service_variable_groups::Model],
    database: Option<database_configs::Model>,
) -> pb::Service {
    pb::Service {
        id: s.id.to_string(),
        project_id: s.project_id.to_string(),
        name: s.name.clone(),
        kind: match s.kind {
            ServiceKind::Application => pb::ServiceKind::Application,
            ServiceKind::Database => pb::ServiceKind::Database,
        }
        .into(),
        status: format!("{:?}", s.status).to_lowercase(),
        image: s.image.clone().unwrap_or_default(),
        command: json_strings(s.command.as_ref()),
        args: json_strings(s.args.as_ref()),
        replicas: s.replicas,
        resources: Some(pb::Resources {
            cpu_request: s.cpu_request.clone().unwrap_or_default(),
            cpu_limit: s.cpu_limit.clone().unwrap_or_default(),
            memory_request: s.memory_request.clone().unwrap_or_default(),
            memory_limit: s.memory_limit.clone().unwrap_or_default(),
        }),
        health_check: s.health_check_port.map(|port| pb::HealthCheck {
            path: s.health_check_path.clone().unwrap_or_default(),
            port: u32::try_from(port).unwrap_or(0),
            interval_seconds: s.health_check_interval_seconds,
        }),
        ports: ports
            .iter()
            .map(|p| pb::Port {
                name: p.name.clone().unwrap_or_default(),
                container_port: u32::try_from(p.container_port).unwrap_or(0),
                protocol: match p.protocol {
                    PortProtocol::Tcp => pb::Protocol::Tcp,
                    PortProtocol::Udp => pb::Protocol::Udp,
                }
                .into(),
            })
            .collect(),
        mounts: mounts
            .iter()
            .map(|(m, v)| pb::VolumeMount {
                volume_id: m.volume_id.to_string(),
                volume_name: v.as_ref().map(|v| v.name.clone()).unwrap_or_default(),
                mount_path: m.mount_path.clone(),
                sub_path: m.sub_path.clone().unwrap_or_default(),
                read_only: m.read_only,
            })
            .collect(),
        variable_group_ids: groups
            .iter()
            .map(|g| g.variable_group_id.to_string())
            .collect(),
        engine: database
            .as_ref()
            .map_or(pb::DatabaseEngine::Unspecified, |d| engine_to_pb(d.engine))
            .into(),
        version: database
            .as_ref()
            .map(|d| d.version.clone())
            .unwrap_or_default(),
        storage_size_gb: database.as_ref().map_or(0, |d| d.storage_size_gb),
        stack_id: s.stack_id.map(|i| i.to_string()).unwrap_or_default(),
        template_slug: s.template_slug.clone().unwrap_or_default(),
        registry_integration_id: s
            .registry_integration_id
            .map(|i| i.to_string())
            .unwrap_or_default(),
        created_at: Some(ts(s.created_at)),
        updated_at: Some(ts(s.updated_at)),
        health: None,
        containers: Vec::new(),
        metrics_unavailable_reason: String::new(),
    }
}

/// Replaces a service's ports inside `txn`.
pub(crate) async fn replace_ports<C: ConnectionTrait>(
    txn: &C,
    service_id: Uuid,
    ports: &[(Option<String>, u16, pb::Protocol)],
) -> Result<()> {
    service_ports::Entity::delete_many()
        .filter(service_ports::Column::ServiceId.eq(service_id))
        .exec(txn)
        .await?;
    for (name, port, protocol) in ports {
        service_ports::ActiveModel {
            id: Set(Uuid::now_v7()),
            service_id: Set(service_id),
            name: Set(name.clone()),
            container_port: Set(i32::from(*port)),
            protocol: Set(if *protocol == pb::Protocol::Udp {
                PortProtocol::Udp
            } else {
                PortProtocol::Tcp
            }),
            created_at: Set(Utc::now()),
        }
        .insert(txn)
        .await?;
    }
    Ok(())
}

/// A registry integration of the project's organization that `scope` may
/// attach (`field` names it in errors). Its credentials become the
/// service's image pull secret, so attaching one needs `registry.manage` on
/// the organization: rights on the service alone would hand the
/// organization's registry password to whoever may configure that service.
/// Keeping the registry the service already has needs nothing more.
async fn registry_of<C: ConnectionTrait>(
    db: &C,
    scope: &Scope,
    field: &str,
    value: &str,
    current: Option<Uuid>,
) -> Result<Option<Uuid>> {
    if value.trim().is_empty() {
        return Ok(None);
    }
    let id = parse_id(field, value)?;
    registry_integrations::Entity::find_by_id(id)
        .filter(registry_integrations::Column::OrganizationId.eq(scope.organization_id()))
        .one(db)
        .await?
        .ok_or_else(|| Error::NotFound(format!("{field}: registry integration not found")))?;
    if current != Some(id) {
        scope.actor().can(db, Action::RegistryManage,
            Resource::Organization(scope.organization_id()),
        )
        .await
        .map_err(|e| denied_as(e, &format!("{field}: attaching a registry's credentials to a service needs the registry.manage permission (an organization admin); ask one to attach it")))?;
    }
    Ok(Some(id))
}

/// Project-wide resources (volumes, variable groups) reach every service
/// that uses them, so attaching one needs `project.manage` on its project:
/// a grant on one service must not reach the project's data or secrets.
async fn authorize_project_resource<C: ConnectionTrait>(
    db: &C,
    scope: &Scope,
    project_id: Uuid,
    field: &str,
) -> Result<()> {
    scope.actor().can(db, Action::ProjectManage,
        Resource::Project {
            organization_id: scope.organization_id(),
            id: project_id,
        },
    )
    .await
    .map_err(|e| denied_as(e, &format!("{field}: needs manage rights on the project (a grant on the service is not enough); ask an admin for a project grant")))?;
    Ok(())
}

/// `err` with `message` when it is PermissionDenied (which says what to
/// do); other errors unchanged.
fn denied_as(err: Error, message: &str) -> Error {
    match err {
        Error::PermissionDenied(_) => Error::PermissionDenied(message.to_owned()),
        other => other,
    }
}

impl ServiceApi {
    async fn create(&self, request: Request<pb::CreateServiceRequest>) -> Result<pb::Service> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let project_id = parse_id("projectId", &req.project_id)?;
        let db = &self.0.identity.db;
        let (scope, project) = caller
            .project(db, Action::ProjectManage, project_id)
            .await?;
        validate::dns_label("name", &req.name, 63)?;
        let keyring = self.0.identity.keyring()?;
        let txn = crate::db::begin_write(db).await?;
        let service = match &req.spec {
            Some(pb::create_service_request::Spec::Application(app)) => {
                validate::image("application.image", &app.image)?;
                validate::argv("application.command", &app.command)?;
                validate::argv("application.args", &app.args)?;
                let replicas =
                    validate::replicas("application.replicas", app.replicas.unwrap_or(1))?;
                let quantities = validate::resources(app.resources.as_ref())?;
                let health = validate::health_check(app.health_check.as_ref())?;
                let ports = validate::ports(&req.ports)?;
                let registry = registry_of(
                    &txn,
                    &scope,
                    "application.registryIntegrationId",
                    &app.registry_integration_id,
                    None,
                )
                .await?;
                let now = Utc::now();
                let service = services::ActiveModel {
                    id: Set(Uuid::now_v7()),
                    project_id: Set(project.id),
                    stack_id: Set(None),
                    name: Set(req.name.clone()),
                    kind: Set(ServiceKind::Application),
                    source_type: Set(ferry_db::entities::enums::SourceType::Image),
                    status: Set(ferry_db::entities::enums::ServiceStatus::Pending),
                    image: Set(Some(app.image.clone())),
                    replicas: Set(replicas),
                    cpu_request: Set(quantities.cpu_request),
                    cpu_limit: Set(quantities.cpu_limit),
                    memory_request: Set(quantities.memory_request),
                    memory_limit: Set(quantities.memory_limit),
                    command: Set((!app.command.is_empty()).then(|| json!(app.command))),
                    args: Set((!app.args.is_empty()).then(|| json!(app.args))),
                    health_check_path: Set(health.as_ref().and_then(|h| h.0.clone())),
                    health_check_port: Set(health.as_ref().map(|h| i32::from(h.1))),
                    health_check_interval_seconds: Set(health.as_ref().map_or(30, |h| h.2)),
                    auto_deploy: Set(true),
                    template_slug: Set(None),
                    registry_integration_id: Set(registry),
                    created_by: Set(Some(caller.user_id)),
                    created_at: Set(now),
                    updated_at: Set(now),
                }
                .insert(&txn)
                .await
                .map_err(unique_as(
                    "a service with this name already exists in the project",
                ))?;
                replace_ports(&txn, service.id, &ports).await?;
                service
            }
            Some(pb::create_service_request::Spec::Database(d)) => {
                let engine = match pb::DatabaseEngine::try_from(d.engine) {
                    Ok(pb::DatabaseEngine::Postgres) => DatabaseEngine::Postgresql,
                    Ok(pb::DatabaseEngine::Mysql) => DatabaseEngine::Mysql,
                    Ok(pb::DatabaseEngine::Mongodb) => DatabaseEngine::Mongodb,
                    Ok(pb::DatabaseEngine::Redis) => DatabaseEngine::Redis,
                    _ => {
                        return Err(Error::InvalidArgument(
                            "database.engine: must be POSTGRES, MYSQL, MONGODB or REDIS".into(),
                        ));
                    }
                };
                if !req.ports.is_empty() {
                    return Err(Error::InvalidArgument(
                        "ports: databases get their engine's port; leave empty".into(),
                    ));
                }
                let version = if d.version.is_empty() {
                    None
                } else {
                    let ok = d.version.len() <= 64
                        && d.version
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
                    if !ok {
                        return Err(Error::InvalidArgument(
                            "database.version: must be an image tag like 16 or 8.4".into(),
                        ));
                    }
                    Some(d.version.clone())
                };
                let storage = if d.storage_size_gb == 0 {
                    None
                } else {
                    Some(validate::size_gb(
                        "database.storageSizeGb",
                        d.storage_size_gb,
                    )?)
                };
                let quantities = validate::resources(d.resources.as_ref())?;
                let slug = engine_info(engine).template;
                let blueprint = ferry_db::seed::official_template_spec(slug)
                    .ok_or_else(|| Error::Internal(format!("no official template {slug}")))?;
                let blueprint = TemplateSpec::parse(&blueprint)?;
                spec::create_from_template(
                    &txn,
                    keyring,
                    NewService {
                        project: &project,
                        name: &req.name,
                        created_by: caller.user_id,
                        stack_id: None,
                        template_slug: Some(slug.to_owned()),
                        version,
                        storage_gb: storage,
                        quantities,
                        replicas: 1,
                    },
                    &blueprint,
                )
                .await?
            }
            None => {
                return Err(Error::InvalidArgument(
                    "spec: set application or database".into(),
                ));
            }
        };
        scope
            .audit(&txn, Entry::new("service.create", AuditResourceType::Service, service.id).details(json!({ "name": service.name, "kind": format!("{:?}", service.kind).to_lowercase(), "image": service.image })))
            .await?;
        txn.commit().await?;
        service_to_pb(db, &service).await
    }

    async fn get(&self, request: Request<pb::GetServiceRequest>) -> Result<pb::Service> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let id = parse_id("id", &request.get_ref().id)?;
        let db = &self.0.identity.db;
        let (_, service, _) = caller.service(db, Action::ServiceRead, id).await?;
        let mut out = service_to_pb(db, &service).await?;
        super::health::fill_live(db, &mut out, service.id).await?;
        Ok(out)
    }

    async fn list(
        &self,
        request: Request<pb::ListServicesRequest>,
    ) -> Result<pb::ListServicesResponse> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let project_id = parse_id("projectId", &req.project_id)?;
        let page = SERVICES.page(req.page_size, &req.page_token)?;
        let db = &self.0.identity.db;
        caller.project(db, Action::ProjectRead, project_id).await?;
        let query = services::Entity::find().filter(services::Column::ProjectId.eq(project_id));
        let rows = page.apply(query).all(db).await?;
        let (rows, next_page_token) =
            page.finish(rows, |s| vec![Key::Text(s.name.clone()), Key::Id(s.id)]);
        Ok(pb::ListServicesResponse {
            services: services_to_pb(db, &rows).await?,
            next_page_token,
        })
    }

    async fn update(&self, request: Request<pb::UpdateServiceRequest>) -> Result<pb::Service> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let id = parse_id("id", &req.id)?;
        let db = &self.0.identity.db;
        let (scope, service, _) = caller.service(db, Action::ServiceManage, id).await?;
        let database = service.kind == ServiceKind::Database;
        let mut changed = Vec::new();
        let mut row = service.clone().into_active_model();
        if let Some(image) = &req.image {
            if database {
                return Err(Error::InvalidArgument(
                    "image: a database's image follows its engine and version".into(),
                ));
            }
            validate::image("image", image)?;
            row.image = Set(Some(image.clone()));
            changed.push("image");
        }
        if req.set_command {
            validate::argv("command", &req.command)?;
            row.command = Set((!req.command.is_empty()).then(|| json!(req.command)));
            changed.push("command");
        }
        if req.set_args {
            validate::argv("args", &req.args)?;
            row.args = Set((!req.args.is_empty()).then(|| json!(req.args)));
            changed.push("args");
        }
        if let Some(r) = req.replicas {
            let r = validate::replicas("replicas", r)?;
            if database && r > 1 {
                return Err(Error::InvalidArgument(
                    "replicas: a database runs 0 or 1 replica".into(),
                ));
            }
            row.replicas = Set(r);
            changed.push("replicas");
        }
        if req.resources.is_some() {
            let q = validate::resources(req.resources.as_ref())?;
            row.cpu_request = Set(q.cpu_request);
            row.cpu_limit = Set(q.cpu_limit);
            row.memory_request = Set(q.memory_request);
            row.memory_limit = Set(q.memory_limit);
            changed.push("resources");
        }
        if req.clear_health_check {
            row.health_check_path = Set(None);
            row.health_check_port = Set(None);
            changed.push("healthCheck");
        } else if let Some((path, port, interval)) =
            validate::health_check(req.health_check.as_ref())?
        {
            row.health_check_path = Set(path);
            row.health_check_port = Set(Some(i32::from(port)));
            row.health_check_interval_seconds = Set(interval);
            changed.push("healthCheck");
        }
        let txn = crate::db::begin_write(db).await?;
        if let Some(reg) = &req.registry_integration_id {
            row.registry_integration_id = Set(registry_of(
                &txn,
                &scope,
                "registryIntegrationId",
                reg,
                service.registry_integration_id,
            )
            .await?);
            changed.push("registryIntegrationId");
        }
        row.updated_at = Set(Utc::now());
        let service = row.update(&txn).await?;
        scope
            .audit(
                &txn,
                Entry::new("service.update", AuditResourceType::Service, id)
                    .details(json!({ "changed": changed })),
            )
            .await?;
        txn.commit().await?;
        service_to_pb(db, &service).await
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteServiceRequest>,
    ) -> Result<pb::DeleteServiceResponse> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let id = parse_id("id", &request.get_ref().id)?;
        let db = &self.0.identity.db;
        let (scope, service, project) = caller.service(db, Action::ServiceManage, id).await?;
        let deleted_objects = delete_service(&self.0, &scope, &service, &project).await?;
        Ok(pb::DeleteServiceResponse { deleted_objects })
    }

    async fn set_ports(&self, request: Request<pb::SetPortsRequest>) -> Result<pb::Service> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let id = parse_id("serviceId", &req.service_id)?;
        let db = &self.0.identity.db;
        let (scope, service, _) = caller.service(db, Action::ServiceManage, id).await?;
        let ports = validate::ports(&req.ports)?;
        let txn = crate::db::begin_write(db).await?;
        replace_ports(&txn, id, &ports).await?;
        scope
            .audit(
                &txn,
                Entry::new("service.set_ports", AuditResourceType::Service, id)
                    .details(json!({ "ports": ports.iter().map(|p| p.1).collect::<Vec<_>>() })),
            )
            .await?;
        txn.commit().await?;
        // Port names decide the upstream protocol (h2c) of its routes.
        self.0.feed.notify_committed();
        service_to_pb(db, &service).await
    }

    async fn list_env(
        &self,
        request: Request<pb::ListEnvVarsRequest>,
    ) -> Result<pb::ListEnvVarsResponse> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let id = parse_id("serviceId", &req.service_id)?;
        let page = ENV_VARS.page(req.page_size, &req.page_token)?;
        let db = &self.0.identity.db;
        caller.service(db, Action::ServiceRead, id).await?;
        let query =
            service_env_vars::Entity::find().filter(service_env_vars::Column::ServiceId.eq(id));
        let rows = page.apply(query).all(db).await?;
        let (rows, next_page_token) =
            page.finish(rows, |v| vec![Key::Text(v.key.clone()), Key::Id(v.id)]);
        Ok(pb::ListEnvVarsResponse {
            env_vars: rows
                .iter()
                .map(|v| env_to_pb(&v.key, v.value.as_ref(), v.is_secret, v.updated_at))
                .collect(),
            next_page_token,
        })
    }

    async fn set_env(&self, request: Request<pb::SetEnvVarRequest>) -> Result<pb::EnvVar> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let id = parse_id("serviceId", &req.service_id)?;
        let db = &self.0.identity.db;
        let (scope, _, _) = caller.service(db, Action::ServiceManage, id).await?;
        validate::env_key("key", &req.key)?;
        validate::env_value("value", &req.value)?;
        let keyring = self.0.identity.keyring()?;
        let txn = crate::db::begin_write(db).await?;
        service_env_vars::Entity::delete_many()
            .filter(service_env_vars::Column::ServiceId.eq(id))
            .filter(service_env_vars::Column::Key.eq(&req.key))
            .exec(&txn)
            .await?;
        let row = spec::insert_env(&txn, keyring, id, &req.key, &req.value, req.secret).await?;
        // The key is audited, never the value.
        scope
            .audit(
                &txn,
                Entry::new("service.set_env", AuditResourceType::Service, id)
                    .details(json!({ "key": req.key, "secret": req.secret })),
            )
            .await?;
        txn.commit().await?;
        Ok(env_to_pb(
            &row.key,
            row.value.as_ref(),
            row.is_secret,
            row.updated_at,
        ))
    }

    async fn delete_env(&self, request: Request<pb::DeleteEnvVarRequest>) -> Result<()> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let id = parse_id("serviceId", &req.service_id)?;
        let db = &self.0.identity.db;
        let (scope, _, _) = caller.service(db, Action::ServiceManage, id).await?;
        scope
            .remove(
                db,
                service_env_vars::Entity::delete_many()
                    .filter(service_env_vars::Column::ServiceId.eq(id))
                    .filter(service_env_vars::Column::Key.eq(&req.key)),
                "variable not found",
                Entry::new("service.delete_env", AuditResourceType::Service, id)
                    .details(json!({ "key": req.key })),
            )
            .await?;
        Ok(())
    }

    async fn mount(&self, request: Request<pb::MountVolumeRequest>) -> Result<pb::Service> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let id = parse_id("serviceId", &req.service_id)?;
        let db = &self.0.identity.db;
        let (scope, service, _) = caller.service(db, Action::ServiceManage, id).await?;
        let volume_id = parse_id("volumeId", &req.volume_id)?;
        validate::mount_path("mountPath", &req.mount_path)?;
        let sub_path = validate::sub_path("subPath", &req.sub_path)?;
        let txn = crate::db::begin_write(db).await?;
        let volume = volumes::Entity::find_by_id(volume_id)
            .filter(volumes::Column::ProjectId.eq(service.project_id))
            .one(&txn)
            .await?
            .ok_or_else(|| Error::NotFound("volumeId: volume not found in this project".into()))?;
        authorize_project_resource(&txn, &scope, volume.project_id, "volumeId").await?;
        if volume.access_mode == VolumeAccessMode::ReadOnlyMany && !req.read_only {
            return Err(Error::InvalidArgument(
                "readOnly: a READ_ONLY_MANY volume must be mounted read-only".into(),
            ));
        }
        volume_mounts::ActiveModel {
            id: Set(Uuid::now_v7()),
            volume_id: Set(volume_id),
            service_id: Set(id),
            mount_path: Set(req.mount_path.clone()),
            sub_path: Set(sub_path),
            read_only: Set(req.read_only),
            created_at: Set(Utc::now()),
        }
        .insert(&txn)
        .await
        .map_err(unique_as("something is already mounted at this path"))?;
        scope
            .audit(&txn, Entry::new("service.mount_volume", AuditResourceType::Service, id).details(json!({ "volume": volume.name, "mountPath": req.mount_path, "readOnly": req.read_only })))
            .await?;
        txn.commit().await?;
        service_to_pb(db, &service).await
    }

    async fn unmount(&self, request: Request<pb::UnmountVolumeRequest>) -> Result<pb::Service> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let id = parse_id("serviceId", &req.service_id)?;
        let db = &self.0.identity.db;
        let (scope, service, _) = caller.service(db, Action::ServiceManage, id).await?;
        scope
            .remove(
                db,
                volume_mounts::Entity::delete_many()
                    .filter(volume_mounts::Column::ServiceId.eq(id))
                    .filter(volume_mounts::Column::MountPath.eq(&req.mount_path)),
                "no volume is mounted at this path",
                Entry::new("service.unmount_volume", AuditResourceType::Service, id)
                    .details(json!({ "mountPath": req.mount_path })),
            )
            .await?;
        service_to_pb(db, &service).await
    }

    async fn attach(
        &self,
        request: Request<pb::AttachVariableGroupRequest>,
    ) -> Result<pb::Service> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let id = parse_id("serviceId", &req.service_id)?;
        let db = &self.0.identity.db;
        let (scope, service, _) = caller.service(db, Action::ServiceManage, id).await?;
        let group_id = parse_id("variableGroupId", &req.variable_group_id)?;
        let txn = crate::db::begin_write(db).await?;
        let group = variable_groups::Entity::find_by_id(group_id)
            .filter(variable_groups::Column::ProjectId.eq(service.project_id))
            .one(&txn)
            .await?
            .ok_or_else(|| {
                Error::NotFound("variableGroupId: variable group not found in this project".into())
            })?;
        authorize_project_resource(&txn, &scope, group.project_id, "variableGroupId").await?;
        service_variable_groups::ActiveModel {
            id: Set(Uuid::now_v7()),
            service_id: Set(id),
            variable_group_id: Set(group_id),
            created_at: Set(Utc::now()),
        }
        .insert(&txn)
        .await
        .map_err(unique_as("the group is already attached"))?;
        scope
            .audit(
                &txn,
                Entry::new(
                    "service.attach_variable_group",
                    AuditResourceType::Service,
                    id,
                )
                .details(json!({ "variableGroupId": group_id.to_string() })),
            )
            .await?;
        txn.commit().await?;
        service_to_pb(db, &service).await
    }

    async fn detach(
        &self,
        request: Request<pb::DetachVariableGroupRequest>,
    ) -> Result<pb::Service> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let id = parse_id("serviceId", &req.service_id)?;
        let db = &self.0.identity.db;
        let (scope, service, _) = caller.service(db, Action::ServiceManage, id).await?;
        let group_id = parse_id("variableGroupId", &req.variable_group_id)?;
        scope
            .remove(
                db,
                service_variable_groups::Entity::delete_many()
                    .filter(service_variable_groups::Column::ServiceId.eq(id))
                    .filter(service_variable_groups::Column::VariableGroupId.eq(group_id)),
                "the group is not attached",
                Entry::new(
                    "service.detach_variable_group",
                    AuditResourceType::Service,
                    id,
                )
                .details(json!({ "variableGroupId": group_id.to_string() })),
            )
            .await?;
        service_to_pb(db, &service).await
    }

    async fn connection_info(
        &self,
        request: Request<pb::GetConnectionInfoRequest>,
    ) -> Result<pb::ConnectionInfo> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let id = parse_id("serviceId", &request.get_ref().service_id)?;
        let db = &self.0.identity.db;
        let (_, service, project) = caller.service(db, Action::ServiceReadSecrets, id).await?;
        let config = database_configs::Entity::find()
            .filter(database_configs::Column::ServiceId.eq(id))
            .one(db)
            .await?
            .ok_or_else(|| Error::FailedPrecondition("not a database service".into()))?;
        let keyring = self.0.identity.keyring()?;
        let password = match &config.password {
            Some(p) => keyring
                .decrypt("database_configs", "password", config.id, p)?
                .expose()
                .to_owned(),
            None => String::new(),
        };
        let url = match &config.connection_string {
            Some(c) => keyring
                .decrypt("database_configs", "connection_string", config.id, c)?
                .expose()
                .to_owned(),
            None => String::new(),
        };
        Ok(pb::ConnectionInfo {
            host: format!("{}.{}.svc.cluster.local", service.name, project.namespace),
            port: u32::from(engine_info(config.engine).port),
            username: config.username.unwrap_or_default(),
            password,
            database: config.database_name.unwrap_or_default(),
            url,
        })
    }
}

/// Removes a service's cluster objects (by label), then its rows, with the
/// audit row. Used by DeleteService and by stack reconciliation.
pub(crate) async fn delete_service(
    w: &Workloads,
    scope: &Scope,
    service: &services::Model,
    project: &projects::Model,
) -> Result<Vec<String>> {
    let deleted = match &w.deployer.cluster {
        Some(cluster) => {
            cluster
                .delete_service(&project.namespace, service.id)
                .await?
        }
        None => Vec::new(),
    };
    let txn = crate::db::begin_write(&w.identity.db).await?;
    services::Entity::delete_by_id(service.id)
        .exec(&txn)
        .await?;
    scope
        .audit(
            &txn,
            Entry::new("service.delete", AuditResourceType::Service, service.id)
                .details(json!({ "name": service.name, "clusterObjects": deleted.len() })),
        )
        .await?;
    txn.commit().await?;
    w.feed.notify_committed();
    Ok(deleted)
}

#[tonic::async_trait]
impl ServiceService for ServiceApi {
    async fn create_service(
        &self,
        request: Request<pb::CreateServiceRequest>,
    ) -> Result<Response<pb::Service>, Status> {
        Ok(Response::new(self.create(request).await?))
    }
    async fn get_service(
        &self,
        request: Request<pb::GetServiceRequest>,
    ) -> Result<Response<pb::Service>, Status> {
        Ok(Response::new(self.get(request).await?))
    }
    async fn list_services(
        &self,
        request: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        Ok(Response::new(self.list(request).await?))
    }
    async fn update_service(
        &self,
        request: Request<pb::UpdateServiceRequest>,
    ) -> Result<Response<pb::Service>, Status> {
        Ok(Response::new(self.update(request).await?))
    }
    async fn delete_service(
        &self,
        request: Request<pb::DeleteServiceRequest>,
    ) -> Result<Response<pb::DeleteServiceResponse>, Status> {
        Ok(Response::new(self.delete(request).await?))
    }
    async fn set_ports(
        &self,
        request: Request<pb::SetPortsRequest>,
    ) -> Result<Response<pb::Service>, Status> {
        Ok(Response::new(ServiceApi::set_ports(self, request).await?))
    }
    async fn list_env_vars(
        &self,
        request: Request<pb::ListEnvVarsRequest>,
    ) -> Result<Response<pb::ListEnvVarsResponse>, Status> {
        Ok(Response::new(self.list_env(request).await?))
    }
    async fn set_env_var(
        &self,
        request: Request<pb::SetEnvVarRequest>,
    ) -> Result<Response<pb::EnvVar>, Status> {
        Ok(Response::new(self.set_env(request).await?))
    }
    async fn delete_env_var(
        &self,
        request: Request<pb::DeleteEnvVarRequest>,
    ) -> Result<Response<pb::DeleteEnvVarResponse>, Status> {
        self.delete_env(request).await?;
        Ok(Response::new(pb::DeleteEnvVarResponse {}))
    }
    async fn mount_volume(
        &self,
        request: Request<pb::MountVolumeRequest>,
    ) -> Result<Response<pb::Service>, Status> {
        Ok(Response::new(self.mount(request).await?))
    }
    async fn unmount_volume(
        &self,
        request: Request<pb::UnmountVolumeRequest>,
    ) -> Result<Response<pb::Service>, Status> {
        Ok(Response::new(self.unmount(request).await?))
    }
    async fn attach_variable_group(
        &self,
        request: Request<pb::AttachVariableGroupRequest>,
    ) -> Result<Response<pb::Service>, Status> {
        Ok(Response::new(self.attach(request).await?))
    }
    async fn detach_variable_group(
        &self,
        request: Request<pb::DetachVariableGroupRequest>,
    ) -> Result<Response<pb::Service>, Status> {
        Ok(Response::new(self.detach(request).await?))
    }
    async fn get_connection_info(
        &self,
        request: Request<pb::GetConnectionInfoRequest>,
    ) -> Result<Response<pb::ConnectionInfo>, Status> {
        Ok(Response::new(self.connection_info(request).await?))
    }

    type StreamLogsStream = super::logs::LogStream;
    async fn stream_logs(
        &self,
        request: Request<pb::StreamLogsRequest>,
    ) -> Result<Response<Self::StreamLogsStream>, Status> {
        Ok(Response::new(self.logs(request).await?))
    }
    async fn get_service_events(
        &self,
        request: Request<pb::GetServiceEventsRequest>,
    ) -> Result<Response<pb::GetServiceEventsResponse>, Status> {
        Ok(Response::new(self.events(request).await?))
    }
}
