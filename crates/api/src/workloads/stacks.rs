//! `ferry.v1.StackService`: Docker Compose files as services of a project.
//!
//! The file is parsed by `ferry-compose` (unsupported keys refused, keys
//! Ferry does not apply reported as warnings). Each compose service becomes
//! a Ferry service of the stack, each named volume a project volume
//! `<stack>-<volume>`. Interpolation variables are not stored: send them
//! again with every update. Environment values are stored as secrets unless
//! their key is clearly not sensitive ([`super::sensitive`]); callers below
//! deploy rights on the stack get the stored file with those values masked.

use std::collections::{BTreeMap, HashMap};

use chrono::Utc;
use ferry_compose::{ComposeProject, ComposeService};
use ferry_db::entities::enums::{
    AuditResourceType, ServiceKind, ServiceStatus, SourceType, StackStatus, TriggerType,
    VolumeAccessMode, VolumeType,
};
use ferry_db::entities::{projects, service_env_vars, services, stacks, volume_mounts, volumes};
use ferry_db::sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, ConnectionTrait, EntityTrait as _,
    IntoActiveModel as _, QueryFilter as _, QueryOrder as _, QuerySelect as _,
};
use ferry_proto::ferry::v1 as pb;
use pb::stack_service_server::StackService;
use serde_json::json;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::deployments::deployment_to_pb;
use super::sensitive::is_secret_key;
use super::services::{delete_service, replace_ports};
use super::{Scope, Workloads, unique_as, validate};
use crate::audit::Entry;
use crate::authz::{Action, Caller, Resource};
use crate::paging::{Key, Keyset, Kind, asc};
use crate::wire::{parse_id, ts};
use crate::{Error, Result};

/// The `StackService` implementation.
#[derive(Debug, Clone)]
pub struct StackApi(pub Workloads);

/// ListStacks' order: by name, then id.
static STACKS: Keyset<stacks::Column> = Keyset {
    list: "stacks",
    columns: &[
        asc(stacks::Column::Name, Kind::Text),
        asc(stacks::Column::Id, Kind::Id),
    ],
};

const MAX_COMPOSE: usize = 256 * 1024;

/// How a stack's compose file is returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ComposeView {
    /// As written: for callers who may deploy the stack (and so read its
    /// secrets anyway).
    AsWritten,
    /// Secret environment values and `x-*` extensions replaced by `***`.
    Masked,
}

/// Shown first in a masked compose file.
const MASKED_NOTE: &str =
    "# Secret environment values are hidden (***): deploy rights on the stack show them.\n";

/// `file` with its secret environment values hidden. The file was parsed
/// when it was stored, so masking fails only on a bug: then nothing of it
/// is shown.
fn masked_compose(file: &str) -> String {
    match ferry_compose::mask_environment(file, is_secret_key) {
        Ok(masked) => format!("{MASKED_NOTE}{masked}"),
        Err(err) => {
            tracing::warn!(error = %err, "a stored compose file could not be masked; hidden");
            "# The compose file is hidden: it could not be masked.\n".to_owned()
        }
    }
}

fn parse(
    file: &str,
    variables: &std::collections::HashMap<String, String>,
) -> Result<ComposeProject> {
    if file.trim().is_empty() || file.len() > MAX_COMPOSE {
        return Err(Error::InvalidArgument(
            "composeFile: must be 1 byte to 256 KiB of YAML".into(),
        ));
    }
    let env: BTreeMap<String, String> = variables
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    ferry_compose::parse(file, &env)
        .map_err(|e| Error::InvalidArgument(format!("composeFile: {e}")))
}

async fn stack_message<C: ConnectionTrait>(
    db: &C,
    s: &stacks::Model,
    view: ComposeView,
) -> Result<pb::Stack> {
    let mut out = stacks_to_pb(db, std::slice::from_ref(s), view).await?;
    out.pop()
        .ok_or_else(|| Error::Internal("stack message not built".into()))
}

/// Stack messages for many stacks with one query for all their service
/// ids, not one per stack.
async fn stacks_to_pb<C: ConnectionTrait>(
    db: &C,
    rows: &[stacks::Model],
    view: ComposeView,
) -> Result<Vec<pb::Stack>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let mut members: HashMap<Uuid, Vec<String>> = HashMap::new();
    let services: Vec<(Uuid, Option<Uuid>)> = services::Entity::find()
        .select_only()
        .column(services::Column::Id)
        .column(services::Column::StackId)
        .filter(services::Column::StackId.is_in(rows.iter().map(|s| s.id)))
        .order_by_asc(services::Column::Name)
        .into_tuple()
        .all(db)
        .await?;
    for (id, stack) in services {
        if let Some(stack) = stack {
            members.entry(stack).or_default().push(id.to_string());
        }
    }
    Ok(rows
        .iter()
        .map(|s| message(s, members.remove(&s.id).unwrap_or_default(), view))
        .collect())
}

fn message(s: &stacks::Model, service_ids: Vec<String>, view: ComposeView) -> pb::Stack {
    pb::Stack {
        id: s.id.to_string(),
        project_id: s.project_id.to_string(),
        name: s.name.clone(),
        compose_file: match view {
            ComposeView::AsWritten => s.compose_file.clone(),
            ComposeView::Masked => masked_compose(&s.compose_file),
        },
        status: format!("{:?}", s.status).to_lowercase(),
        service_ids,
        created_at: Some(ts(s.created_at)),
        updated_at: Some(ts(s.updated_at)),
    }
}

/// The file as written for callers who may deploy the stack, masked for
/// everyone else (and whenever the check itself fails).
async fn compose_view<C: ConnectionTrait>(
    db: &C,
    scope: &Scope,
    project_id: Uuid,
    id: Uuid,
) -> ComposeView {
    let deployer = scope
        .actor()
        .can(
            db,
            Action::StackDeploy,
            Resource::Stack {
                organization_id: scope.organization_id(),
                project_id,
                id,
            },
        )
        .await
        .is_ok();
    if deployer {
        ComposeView::AsWritten
    } else {
        ComposeView::Masked
    }
}

/// Whether the caller manages the stack's project (a check that fails
/// counts as no).
async fn manages_project<C: ConnectionTrait>(db: &C, scope: &Scope, project_id: Uuid) -> bool {
    scope
        .actor()
        .can(
            db,
            Action::ProjectManage,
            Resource::Project {
                organization_id: scope.organization_id(),
                id: project_id,
            },
        )
        .await
        .is_ok()
}

fn warnings(p: &ComposeProject) -> Vec<pb::StackWarning> {
    p.warnings
        .iter()
        .map(|w| pb::StackWarning {
            path: w.path.clone(),
            message: w.message.clone(),
        })
        .collect()
}

/// Where a stack's services are written.
#[derive(Clone, Copy)]
struct Target<'a> {
    keyring: &'a ferry_db::crypto::Keyring,
    caller: Uuid,
    project: &'a projects::Model,
    stack: &'a stacks::Model,
    volume_ids: &'a BTreeMap<String, Uuid>,
}

/// Creates or updates one compose service's rows inside `txn`.
async fn upsert<C: ConnectionTrait>(
    txn: &C,
    to: &Target<'_>,
    cs: &ComposeService,
    existing: Option<services::Model>,
) -> Result<services::Model> {
    let Target {
        keyring,
        caller,
        project,
        stack,
        volume_ids,
    } = *to;
    let now = Utc::now();
    let field = |f: &str| format!("services.{}.{f}", cs.name);
    validate::dns_label(&field("name"), &cs.name, 63)?;
    validate::image(&field("image"), &cs.image)?;
    // Not stored by Ferry yet: refused rather than silently dropped.
    if cs.working_dir.is_some() {
        return Err(Error::InvalidArgument(format!(
            "{}: not supported by Ferry yet; set it in the image",
            field("working_dir")
        )));
    }
    if cs.run_as_user.is_some() || cs.run_as_group.is_some() {
        return Err(Error::InvalidArgument(format!(
            "{}: not supported by Ferry yet; set USER in the image",
            field("user")
        )));
    }
    let replicas = validate::replicas(
        &field("deploy.replicas"),
        i32::try_from(cs.replicas.unwrap_or(1)).unwrap_or(i32::MAX),
    )?;
    let row = match existing {
        Some(s) => {
            if s.kind != ServiceKind::Application {
                return Err(Error::FailedPrecondition(format!(
                    "{}: an existing database service has this name",
                    field("name")
                )));
            }
            s.into_active_model()
        }
        None => services::ActiveModel {
            id: Set(Uuid::now_v7()),
            project_id: Set(project.id),
            stack_id: Set(Some(stack.id)),
            name: Set(cs.name.clone()),
            kind: Set(ServiceKind::Application),
            source_type: Set(SourceType::Compose),
            status: Set(ServiceStatus::Pending),
            health_check_interval_seconds: Set(30),
            auto_deploy: Set(true),
            template_slug: Set(None),
            registry_integration_id: Set(None),
            created_by: Set(Some(caller)),
            created_at: Set(now),
            ..Default::default()
        },
    };
    let mut row = row;
    row.image = Set(Some(cs.image.clone()));
    row.command = Set((!cs.entrypoint.is_empty()).then(|| json!(cs.entrypoint)));
    row.args = Set((!cs.command.is_empty()).then(|| json!(cs.command)));
    row.replicas = Set(replicas);
    row.cpu_request = Set(cs.cpu_request.clone());
    row.cpu_limit = Set(cs.cpu_limit.clone());
    row.memory_request = Set(cs.memory_request.clone());
    row.memory_limit = Set(cs.memory_limit.clone());
    row.health_check_port = Set(cs.healthcheck_port.map(i32::from));
    row.health_check_path = Set(cs.healthcheck_path.clone());
    row.updated_at = Set(now);
    let service = if row.id.is_unchanged() {
        row.update(txn).await?
    } else {
        row.insert(txn).await.map_err(unique_as(
            "a service with this name already exists in the project",
        ))?
    };
    // Ports, variables and mounts follow the file exactly.
    let ports: Vec<pb::Port> = cs
        .ports
        .iter()
        .map(|p| pb::Port {
            name: String::new(),
            container_port: u32::from(p.container_port),
            protocol: match p.protocol {
                ferry_compose::Protocol::Udp => pb::Protocol::Udp,
                ferry_compose::Protocol::Tcp => pb::Protocol::Tcp,
            }
            .into(),
        })
        .collect();
    let mut unique_ports: Vec<pb::Port> = Vec::new();
    for p in ports {
        if !unique_ports
            .iter()
            .any(|q| q.container_port == p.container_port && q.protocol == p.protocol)
        {
            unique_ports.push(p);
        }
    }
    let ports = validate::ports(&unique_ports).map_err(|e| match e {
        Error::InvalidArgument(m) => Error::InvalidArgument(format!("services.{}.{m}", cs.name)),
        other => other,
    })?;
    replace_ports(txn, service.id, &ports).await?;
    service_env_vars::Entity::delete_many()
        .filter(service_env_vars::Column::ServiceId.eq(service.id))
        .exec(txn)
        .await?;
    for (key, value) in &cs.environment {
        validate::env_key(&field(&format!("environment.{key}")), key)?;
        validate::env_value(&field(&format!("environment.{key}")), value)?;
        super::spec::insert_env(txn, keyring, service.id, key, value, is_secret_key(key)).await?;
    }
    volume_mounts::Entity::delete_many()
        .filter(volume_mounts::Column::ServiceId.eq(service.id))
        .exec(txn)
        .await?;
    for m in &cs.mounts {
        validate::mount_path(&field("volumes"), &m.target)?;
        let volume = volume_ids.get(&m.volume).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{}: volume {} is not declared under top-level volumes",
                field("volumes"),
                m.volume
            ))
        })?;
        volume_mounts::ActiveModel {
            id: Set(Uuid::now_v7()),
            volume_id: Set(*volume),
            service_id: Set(service.id),
            mount_path: Set(m.target.clone()),
            sub_path: Set(validate::sub_path(
                &field("volumes"),
                m.sub_path.as_deref().unwrap_or(""),
            )?),
            read_only: Set(m.read_only),
            created_at: Set(now),
        }
        .insert(txn)
        .await
        .map_err(unique_as("two volumes are mounted at the same path"))?;
    }
    Ok(service)
}

/// Which existing project volumes a stack may use by name.
#[derive(Debug, Clone, Copy)]
enum Adopt<'a> {
    /// Any: the caller manages the project.
    Any,
    /// Only those these services (the stack's own) already mount: rights
    /// on a stack must not reach the project's other volumes, e.g. another
    /// stack's (`a` + `b-data` and `a-b` + `data` share a name).
    MountedBy(&'a [Uuid]),
}

/// Refuses `volume` unless `adopt` allows the stack to use it.
async fn check_adopt<C: ConnectionTrait>(
    txn: &C,
    adopt: Adopt<'_>,
    volume: &volumes::Model,
    field: &str,
) -> Result<()> {
    let Adopt::MountedBy(own) = adopt else {
        return Ok(());
    };
    let mounted = volume_mounts::Entity::find()
        .filter(volume_mounts::Column::VolumeId.eq(volume.id))
        .filter(volume_mounts::Column::ServiceId.is_in(own.to_vec()))
        .one(txn)
        .await?
        .is_some();
    if mounted {
        return Ok(());
    }
    Err(Error::PermissionDenied(format!(
        "{field}: project volume {} is not this stack's; using it needs manage rights on the project (rename the compose volume, or ask an admin)",
        volume.name
    )))
}

/// Ensures a project volume per named compose volume; returns name → id.
async fn ensure_volumes<C: ConnectionTrait>(
    txn: &C,
    project: &projects::Model,
    stack_name: &str,
    parsed: &ComposeProject,
    adopt: Adopt<'_>,
) -> Result<BTreeMap<String, Uuid>> {
    let mut ids = BTreeMap::new();
    for v in &parsed.volumes {
        let name = format!("{stack_name}-{}", v.name.replace('_', "-"));
        let field = format!("volumes.{}", v.name);
        validate::dns_label(&field, &name, 58)?;
        let existing = volumes::Entity::find()
            .filter(volumes::Column::ProjectId.eq(project.id))
            .filter(volumes::Column::Name.eq(&name))
            .one(txn)
            .await?;
        let id = match existing {
            Some(v) => {
                check_adopt(txn, adopt, &v, &field).await?;
                v.id
            }
            None => {
                let now = Utc::now();
                volumes::ActiveModel {
                    id: Set(Uuid::now_v7()),
                    project_id: Set(project.id),
                    name: Set(name),
                    volume_type: Set(VolumeType::Pvc),
                    size_gb: Set(v.size_gb.unwrap_or(1)),
                    storage_class: Set(None),
                    access_mode: Set(VolumeAccessMode::ReadWriteOnce),
                    created_at: Set(now),
                    updated_at: Set(now),
                }
                .insert(txn)
                .await?
                .id
            }
        };
        ids.insert(v.name.clone(), id);
    }
    Ok(ids)
}

fn stack_spec(parsed: &ComposeProject) -> serde_json::Value {
    json!({
        "services": parsed.services.iter().map(|s| json!({
            "name": s.name,
            "dependsOn": s.depends_on,
        })).collect::<Vec<_>>(),
    })
}

impl StackApi {
    async fn create(&self, request: Request<pb::CreateStackRequest>) -> Result<pb::StackResponse> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let project_id = parse_id("projectId", &req.project_id)?;
        let db = &self.0.identity.db;
        let (scope, project) = caller
            .project(db, Action::ProjectManage, project_id)
            .await?;
        validate::dns_label("name", &req.name, 40)?;
        let parsed = parse(&req.compose_file, &req.variables)?;
        let keyring = self.0.identity.keyring()?;
        let now = Utc::now();
        let txn = crate::db::begin_write(db).await?;
        let stack = stacks::ActiveModel {
            id: Set(Uuid::now_v7()),
            project_id: Set(project.id),
            name: Set(req.name.clone()),
            compose_file: Set(req.compose_file.clone()),
            spec: Set(stack_spec(&parsed)),
            status: Set(StackStatus::Pending),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&txn)
        .await
        .map_err(unique_as(
            "a stack with this name already exists in the project",
        ))?;
        let volume_ids = ensure_volumes(&txn, &project, &stack.name, &parsed, Adopt::Any).await?;
        let mut created = Vec::new();
        for cs in &parsed.services {
            upsert(
                &txn,
                &Target {
                    keyring,
                    caller: caller.user_id,
                    project: &project,
                    stack: &stack,
                    volume_ids: &volume_ids,
                },
                cs,
                None,
            )
            .await?;
            created.push(cs.name.clone());
        }
        scope
            .audit(
                &txn,
                Entry::new("stack.create", AuditResourceType::Stack, stack.id)
                    .details(json!({ "name": stack.name, "services": created })),
            )
            .await?;
        txn.commit().await?;
        Ok(pb::StackResponse {
            stack: Some(stack_message(db, &stack, ComposeView::AsWritten).await?),
            warnings: warnings(&parsed),
            created,
            updated: Vec::new(),
            removed: Vec::new(),
        })
    }

    async fn get(&self, request: Request<pb::GetStackRequest>) -> Result<pb::StackResponse> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let id = parse_id("id", &request.get_ref().id)?;
        let db = &self.0.identity.db;
        let (scope, stack, project) = caller.stack(db, Action::StackRead, id).await?;
        let view = compose_view(db, &scope, project.id, stack.id).await;
        Ok(pb::StackResponse {
            stack: Some(stack_message(db, &stack, view).await?),
            ..Default::default()
        })
    }

    async fn list(
        &self,
        request: Request<pb::ListStacksRequest>,
    ) -> Result<pb::ListStacksResponse> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let project_id = parse_id("projectId", &req.project_id)?;
        let page = STACKS.page(req.page_size, &req.page_token)?;
        let db = &self.0.identity.db;
        caller.project(db, Action::ProjectRead, project_id).await?;
        let query = stacks::Entity::find().filter(stacks::Column::ProjectId.eq(project_id));
        let rows = page.apply(query).all(db).await?;
        let (rows, next_page_token) =
            page.finish(rows, |s| vec![Key::Text(s.name.clone()), Key::Id(s.id)]);
        Ok(pb::ListStacksResponse {
            stacks: stacks_to_pb(db, &rows, ComposeView::Masked).await?,
            next_page_token,
        })
    }

    async fn update(&self, request: Request<pb::UpdateStackRequest>) -> Result<pb::StackResponse> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let id = parse_id("id", &req.id)?;
        let db = &self.0.identity.db;
        let (scope, stack, project) = caller.stack(db, Action::StackManage, id).await?;
        let parsed = parse(&req.compose_file, &req.variables)?;
        let keyring = self.0.identity.keyring()?;
        let txn = crate::db::begin_write(db).await?;
        let current = services::Entity::find()
            .filter(services::Column::StackId.eq(stack.id))
            .all(&txn)
            .await?;
        let own: Vec<Uuid> = current.iter().map(|s| s.id).collect();
        let adopt = if manages_project(&txn, &scope, project.id).await {
            Adopt::Any
        } else {
            Adopt::MountedBy(&own)
        };
        let volume_ids = ensure_volumes(&txn, &project, &stack.name, &parsed, adopt).await?;
        let (mut created, mut updated) = (Vec::new(), Vec::new());
        for cs in &parsed.services {
            let existing = current.iter().find(|s| s.name == cs.name).cloned();
            if existing.is_some() {
                updated.push(cs.name.clone());
            } else {
                created.push(cs.name.clone());
            }
            upsert(
                &txn,
                &Target {
                    keyring,
                    caller: caller.user_id,
                    project: &project,
                    stack: &stack,
                    volume_ids: &volume_ids,
                },
                cs,
                existing,
            )
            .await?;
        }
        let removed: Vec<services::Model> = current
            .into_iter()
            .filter(|s| !parsed.services.iter().any(|cs| cs.name == s.name))
            .collect();
        let mut row = stack.clone().into_active_model();
        row.compose_file = Set(req.compose_file.clone());
        row.spec = Set(stack_spec(&parsed));
        row.updated_at = Set(Utc::now());
        let stack = row.update(&txn).await?;
        scope
            .audit(
                &txn,
                Entry::new("stack.update", AuditResourceType::Stack, stack.id).details(json!({
                    "created": created,
                    "updated": updated,
                    "removed": removed.iter().map(|s| &s.name).collect::<Vec<_>>(),
                })),
            )
            .await?;
        txn.commit().await?;
        // Removed services leave the cluster first, then the database.
        let mut removed_names = Vec::new();
        for s in &removed {
            delete_service(&self.0, &scope, s, &project).await?;
            removed_names.push(s.name.clone());
        }
        Ok(pb::StackResponse {
            stack: Some(stack_message(db, &stack, ComposeView::AsWritten).await?),
            warnings: warnings(&parsed),
            created,
            updated,
            removed: removed_names,
        })
    }

    async fn delete(&self, request: Request<pb::DeleteStackRequest>) -> Result<()> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let id = parse_id("id", &request.get_ref().id)?;
        let db = &self.0.identity.db;
        let (scope, stack, project) = caller.stack(db, Action::StackManage, id).await?;
        let members = services::Entity::find()
            .filter(services::Column::StackId.eq(stack.id))
            .all(db)
            .await?;
        for s in &members {
            delete_service(&self.0, &scope, s, &project).await?;
        }
        let txn = crate::db::begin_write(db).await?;
        stacks::Entity::delete_by_id(stack.id).exec(&txn).await?;
        scope
            .audit(
                &txn,
                Entry::new("stack.delete", AuditResourceType::Stack, stack.id)
                    .details(json!({ "name": stack.name })),
            )
            .await?;
        txn.commit().await?;
        Ok(())
    }

    async fn deploy(
        &self,
        request: Request<pb::DeployStackRequest>,
    ) -> Result<pb::DeployStackResponse> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let id = parse_id("id", &request.get_ref().id)?;
        let db = &self.0.identity.db;
        let (scope, stack, project) = caller.stack(db, Action::StackDeploy, id).await?;
        // The order recorded at parse time: dependencies first.
        let order: Vec<String> = stack
            .spec
            .get("services")
            .and_then(|s| s.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.get("name").and_then(|n| n.as_str()).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let mut members = services::Entity::find()
            .filter(services::Column::StackId.eq(stack.id))
            .all(db)
            .await?;
        members.sort_by_key(|s| {
            order
                .iter()
                .position(|n| *n == s.name)
                .unwrap_or(usize::MAX)
        });
        // Before any rollout starts: their outcomes roll the status up.
        let mut row = stack.into_active_model();
        row.status = Set(if self.0.deployer.cluster.is_some() {
            StackStatus::Deploying
        } else {
            StackStatus::Pending
        });
        row.updated_at = Set(Utc::now());
        row.update(db).await?;
        let mut deployments = Vec::new();
        for s in &members {
            let d = self
                .0
                .deployer
                .start(&scope, s, &project, TriggerType::Manual, None)
                .await?;
            deployments.push(deployment_to_pb(&d));
        }
        Ok(pb::DeployStackResponse { deployments })
    }
}

#[tonic::async_trait]
impl StackService for StackApi {
    async fn create_stack(
        &self,
        request: Request<pb::CreateStackRequest>,
    ) -> Result<Response<pb::StackResponse>, Status> {
        Ok(Response::new(self.create(request).await?))
    }
    async fn get_stack(
        &self,
        request: Request<pb::GetStackRequest>,
    ) -> Result<Response<pb::StackResponse>, Status> {
        Ok(Response::new(self.get(request).await?))
    }
    async fn list_stacks(
        &self,
        request: Request<pb::ListStacksRequest>,
    ) -> Result<Response<pb::ListStacksResponse>, Status> {
        Ok(Response::new(self.list(request).await?))
    }
    async fn update_stack(
        &self,
        request: Request<pb::UpdateStackRequest>,
    ) -> Result<Response<pb::StackResponse>, Status> {
        Ok(Response::new(self.update(request).await?))
    }
    async fn delete_stack(
        &self,
        request: Request<pb::DeleteStackRequest>,
    ) -> Result<Response<pb::DeleteStackResponse>, Status> {
        self.delete(request).await?;
        Ok(Response::new(pb::DeleteStackResponse {}))
    }
    async fn deploy_stack(
        &self,
        request: Request<pb::DeployStackRequest>,
    ) -> Result<Response<pb::DeployStackResponse>, Status> {
        Ok(Response::new(self.deploy(request).await?))
    }
}
