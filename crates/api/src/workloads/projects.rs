//! `ferry.v1.ProjectService`: a project is one namespace, whose name Ferry
//! generates (`ferry-<slug>-<id suffix>`), so no tenant can name a project
//! after a namespace Ferry does not own.

use chrono::Utc;
use ferry_db::entities::enums::{AuditResourceType, OrgRole, ResourceAccess, ResourceType};
use ferry_db::entities::{projects, resource_permissions};
use ferry_db::sea_orm::sea_query::{Query, SelectStatement};
use ferry_db::sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, Condition, ConnectionTrait,
    EntityTrait as _, IntoActiveModel as _, Iterable as _, QueryFilter as _,
};
use ferry_proto::ferry::v1 as pb;
use pb::project_service_server::ProjectService;
use serde_json::json;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{Workloads, unique_as, validate};
use crate::audit::Entry;
use crate::authz::{Action, Caller, Resource, Rule};
use crate::paging::{Key, Keyset, Kind, asc};
use crate::wire::{parse_id, ts};
use crate::{Error, Result};

/// The `ProjectService` implementation.
#[derive(Debug, Clone)]
pub struct ProjectApi(pub Workloads);

/// The project's namespace: a fixed prefix, the slug (at most 40
/// characters, for people reading `kubectl get ns`) and the last 12 hex
/// digits of the id (random bits of the UUIDv7). Migration m0009 derives
/// the same name for older projects.
pub(crate) fn project_namespace(slug: &str, id: Uuid) -> String {
    let short: String = slug.chars().take(40).collect();
    let hex = id.simple().to_string();
    format!(
        "ferry-{}-{}",
        short.trim_end_matches('-'),
        &hex[hex.len() - 12..]
    )
}

pub(crate) fn project_to_pb(p: &projects::Model) -> pb::Project {
    pb::Project {
        id: p.id.to_string(),
        organization_id: p.organization_id.to_string(),
        name: p.name.clone(),
        slug: p.slug.clone(),
        namespace: p.namespace.clone(),
        description: p.description.clone().unwrap_or_default(),
        created_at: Some(ts(p.created_at)),
        updated_at: Some(ts(p.updated_at)),
    }
}

fn description(value: &str) -> Result<Option<String>> {
    if value.chars().count() > 2000 {
        return Err(Error::InvalidArgument(
            "description: at most 2000 characters".into(),
        ));
    }
    Ok((!value.trim().is_empty()).then(|| value.trim().to_owned()))
}

/// ListProjects' order: by name, then id.
static PROJECTS: Keyset<projects::Column> = Keyset {
    list: "projects",
    columns: &[
        asc(projects::Column::Name, Kind::Text),
        asc(projects::Column::Id, Kind::Id),
    ],
};

/// Which projects of an organization the caller may see.
#[derive(Debug)]
enum Readable {
    All,
    /// Those matching this condition (the caller's grants).
    Granted(Condition),
    Nothing,
}

/// The projects of `org` for which `can(action, project)` holds, decided in
/// a constant number of queries instead of one `can` per project. `role`
/// is the caller's effective role there, as `can` returned it.
///
/// `can` on the organization answers for every project at once whenever
/// the role decides (a role at the rule's level, a super-admin, a
/// non-member). Below that level only grants help: a project-level grant
/// of the rule's level, if the role reaches the rule's floor.
async fn readable<C: ConnectionTrait>(
    db: &C,
    caller: &Caller,
    action: Action,
    org: Uuid,
    role: Option<OrgRole>,
) -> Result<Readable> {
    match caller.can(db, action, Resource::Organization(org)).await {
        Ok(_) => return Ok(Readable::All),
        Err(Error::PermissionDenied(_)) => {}
        Err(Error::NotFound(_)) => return Ok(Readable::Nothing),
        Err(other) => return Err(other),
    }
    match (action.rule(), role) {
        (Rule::RoleOrGrant { floor, level, .. }, Some(role)) if role >= floor => {
            let granted = projects::Column::Id.in_subquery(granted_projects(caller.user_id, level));
            Ok(Readable::Granted(Condition::all().add(granted)))
        }
        _ => Ok(Readable::Nothing),
    }
}

/// The ids of projects `user` holds a project grant of at least `level` on
/// (the grants `can` counts for a project).
fn granted_projects(user: Uuid, level: ResourceAccess) -> SelectStatement {
    use resource_permissions::Column as G;
    // ResourceAccess orders view < deploy < manage (tested below).
    let enough: Vec<ResourceAccess> = ResourceAccess::iter().filter(|l| *l >= level).collect();
    Query::select()
        .column(G::ProjectId)
        .from(resource_permissions::Entity)
        .and_where(G::UserId.eq(user))
        .and_where(G::ResourceType.eq(ResourceType::Project))
        .and_where(G::Permission.is_in(enough))
        .to_owned()
}

impl ProjectApi {
    async fn create(&self, request: Request<pb::CreateProjectRequest>) -> Result<pb::Project> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let org = parse_id("organizationId", &req.organization_id)?;
        let db = &self.0.identity.db;
        let (scope, role) = caller.organization(db, Action::ProjectCreate, org).await?;
        let name = validate::display_name("name", &req.name)?;
        let slug = if req.slug.trim().is_empty() {
            validate::slugify(&name)
        } else {
            req.slug.trim().to_owned()
        };
        validate::dns_label("slug", &slug, 63)?;
        let description = description(&req.description)?;
        let now = Utc::now();
        let txn = crate::db::begin_write(db).await?;
        let id = Uuid::now_v7();
        let project = projects::ActiveModel {
            id: Set(id),
            organization_id: Set(org),
            name: Set(name),
            namespace: Set(project_namespace(&slug, id)),
            slug: Set(slug),
            description: Set(description),
            created_by: Set(Some(caller.user_id)),
            metadata: Set(json!({})),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&txn)
        .await
        .map_err(unique_as(
            "a project with this name or slug already exists in this organization",
        ))?;
        // A member who creates a project may manage it.
        if role == Some(OrgRole::Member) {
            resource_permissions::ActiveModel {
                id: Set(Uuid::now_v7()),
                organization_id: Set(org),
                user_id: Set(caller.user_id),
                resource_type: Set(ResourceType::Project),
                project_id: Set(Some(project.id)),
                service_id: Set(None),
                stack_id: Set(None),
                job_id: Set(None),
                permission: Set(ResourceAccess::Manage),
                granted_by: Set(Some(caller.user_id)),
                created_at: Set(now),
            }
            .insert(&txn)
            .await?;
        }

        scope
            .audit(&txn, Entry::new("project.create", AuditResourceType::Project, project.id).details(json!({ "name": project.name, "slug": project.slug, "namespace": project.namespace })))
            .await?;
        txn.commit().await?;
        Ok(project_to_pb(&project))
    }

    async fn get(&self, request: Request<pb::GetProjectRequest>) -> Result<pb::Project> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let id = parse_id("id", &request.get_ref().id)?;
        let (_, project) = caller
            .project(&self.0.identity.db, Action::ProjectRead, id)
            .await?;
        Ok(project_to_pb(&project))
    }

    async fn list(
        &self,
        request: Request<pb::ListProjectsRequest>,
    ) -> Result<pb::ListProjectsResponse> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let org = parse_id("organizationId", &req.organization_id)?;
        let page = PROJECTS.page(req.page_size, &req.page_token)?;
        let db = &self.0.identity.db;
        // Membership is checked even when the organization has no projects.
        let role = caller
            .can(db, Action::OrganizationRead, Resource::Organization(org))
            .await?;
        let query = match readable(db, &caller, Action::ProjectRead, org, role).await? {
            Readable::All => projects::Entity::find(),
            Readable::Granted(ids) => projects::Entity::find().filter(ids),
            Readable::Nothing => return Ok(pb::ListProjectsResponse::default()),
        };
        let rows = page
            .apply(query.filter(projects::Column::OrganizationId.eq(org)))
            .all(db)
            .await?;
        let (rows, next_page_token) =
            page.finish(rows, |p| vec![Key::Text(p.name.clone()), Key::Id(p.id)]);
        Ok(pb::ListProjectsResponse {
            projects: rows.iter().map(project_to_pb).collect(),
            next_page_token,
        })
    }

    async fn update(&self, request: Request<pb::UpdateProjectRequest>) -> Result<pb::Project> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let id = parse_id("id", &req.id)?;
        let db = &self.0.identity.db;
        let (scope, project) = caller.project(db, Action::ProjectManage, id).await?;
        let name = req
            .name
            .as_deref()
            .map(|n| validate::display_name("name", n))
            .transpose()?;
        let description = req.description.as_deref().map(description).transpose()?;
        let txn = crate::db::begin_write(db).await?;
        let mut row = project.into_active_model();
        if let Some(name) = &name {
            row.name = Set(name.clone());
        }
        if let Some(d) = description {
            row.description = Set(d);
        }
        row.updated_at = Set(Utc::now());
        let project = row
            .update(&txn)
            .await
            .map_err(unique_as("a project with this name already exists"))?;
        scope
            .audit(
                &txn,
                Entry::new("project.update", AuditResourceType::Project, id)
                    .details(json!({ "name": name })),
            )
            .await?;
        txn.commit().await?;
        Ok(project_to_pb(&project))
    }

    async fn delete(&self, request: Request<pb::DeleteProjectRequest>) -> Result<()> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let id = parse_id("id", &request.get_ref().id)?;
        let db = &self.0.identity.db;
        let (scope, project) = caller.project(db, Action::ProjectManage, id).await?;
        // The cluster first: rows are only removed once the namespace is.
        delete_project_namespace(&self.0, &project).await?;
        let txn = crate::db::begin_write(db).await?;
        projects::Entity::delete_by_id(id).exec(&txn).await?;
        scope
            .audit(
                &txn,
                Entry::new("project.delete", AuditResourceType::Project, id)
                    .details(json!({ "slug": project.slug, "namespace": project.namespace })),
            )
            .await?;
        txn.commit().await?;
        self.0.feed.notify_committed();
        Ok(())
    }
}

/// Deletes a project's namespace (refused when the namespace is not this
/// project's). DeleteProject and DeleteOrganization both go through here.
pub(crate) async fn delete_project_namespace(
    w: &Workloads,
    project: &projects::Model,
) -> Result<()> {
    if let Some(cluster) = &w.deployer.cluster {
        cluster
            .delete_namespace(&ferry_k8s::Owner::project(&project.namespace, project.id))
            .await?;
    }
    Ok(())
}

#[tonic::async_trait]
impl ProjectService for ProjectApi {
    async fn create_project(
        &self,
        request: Request<pb::CreateProjectRequest>,
    ) -> Result<Response<pb::Project>, Status> {
        Ok(Response::new(self.create(request).await?))
    }

    async fn get_project(
        &self,
        request: Request<pb::GetProjectRequest>,
    ) -> Result<Response<pb::Project>, Status> {
        Ok(Response::new(self.get(request).await?))
    }

    async fn list_projects(
        &self,
        request: Request<pb::ListProjectsRequest>,
    ) -> Result<Response<pb::ListProjectsResponse>, Status> {
        Ok(Response::new(self.list(request).await?))
    }

    async fn update_project(
        &self,
        request: Request<pb::UpdateProjectRequest>,
    ) -> Result<Response<pb::Project>, Status> {
        Ok(Response::new(self.update(request).await?))
    }

    async fn delete_project(
        &self,
        request: Request<pb::DeleteProjectRequest>,
    ) -> Result<Response<pb::DeleteProjectResponse>, Status> {
        self.delete(request).await?;
        Ok(Response::new(pb::DeleteProjectResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Credential, RequestMeta};
    use ferry_db::entities::{organization_members, users};
    use ferry_db::sea_orm::DatabaseConnection;

    #[test]
    fn resource_access_orders_by_privilege() {
        // `granted_projects` relies on it, as `can` relies on its ranks.
        assert!(ResourceAccess::View < ResourceAccess::Deploy);
        assert!(ResourceAccess::Deploy < ResourceAccess::Manage);
    }

    async fn user(db: &DatabaseConnection, name: &str, super_admin: bool) -> Uuid {
        let now = Utc::now();
        let id = Uuid::now_v7();
        users::ActiveModel {
            id: Set(id),
            username: Set(name.into()),
            email: Set(format!("{name}@example.com")),
            password_hash: Set(None),
            display_name: Set(None),
            avatar_url: Set(None),
            is_super_admin: Set(super_admin),
            totp_secret: Set(None),
            totp_enabled: Set(false),
            preferences: Set(json!({})),
            last_login_at: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(db)
        .await
        .unwrap_or_else(|e| panic!("insert user: {e}"));
        id
    }

    async fn member(db: &DatabaseConnection, org: Uuid, user: Uuid, role: OrgRole) {
        organization_members::ActiveModel {
            id: Set(Uuid::now_v7()),
            organization_id: Set(org),
            user_id: Set(user),
            role: Set(role),
            invited_by: Set(None),
            joined_at: Set(Utc::now()),
        }
        .insert(db)
        .await
        .unwrap_or_else(|e| panic!("insert member: {e}"));
    }

    async fn grant(
        db: &DatabaseConnection,
        org: Uuid,
        user: Uuid,
        project: Uuid,
        level: ResourceAccess,
    ) {
        resource_permissions::ActiveModel {
            id: Set(Uuid::now_v7()),
            organization_id: Set(org),
            user_id: Set(user),
            resource_type: Set(ResourceType::Project),
            project_id: Set(Some(project)),
            service_id: Set(None),
            stack_id: Set(None),
            job_id: Set(None),
            permission: Set(level),
            granted_by: Set(None),
            created_at: Set(Utc::now()),
        }
        .insert(db)
        .await
        .unwrap_or_else(|e| panic!("insert grant: {e}"));
    }

    fn caller(user_id: Uuid, super_admin: bool, credential: Credential) -> Caller {
        Caller::authenticated(crate::auth::Actor {
            user_id,
            super_admin,
            credential,
            meta: RequestMeta::default(),
        })
    }

    /// What ListProjects shows through [`readable`], and what one `can` per
    /// project allows; `None` when the membership gate refuses.
    async fn both(
        db: &DatabaseConnection,
        caller: &Caller,
        action: Action,
        org: Uuid,
        all: &[Uuid],
    ) -> Option<(Vec<Uuid>, Vec<Uuid>)> {
        let role = caller
            .can(db, Action::OrganizationRead, Resource::Organization(org))
            .await
            .ok()?;
        let bulk = match readable(db, caller, action, org, role).await {
            Ok(Readable::All) => all.to_vec(),
            Ok(Readable::Nothing) => Vec::new(),
            Ok(Readable::Granted(only)) => projects::Entity::find()
                .filter(projects::Column::OrganizationId.eq(org))
                .filter(only)
                .all(db)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .iter()
                .map(|p| p.id)
                .collect(),
            Err(e) => panic!("{action}: {e}"),
        };
        let mut one_by_one = Vec::new();
        for &id in all {
            let resource = Resource::Project {
                organization_id: org,
                id,
            };
            if caller.can(db, action, resource).await.is_ok() {
                one_by_one.push(id);
            }
        }
        let mut bulk = bulk;
        bulk.sort_unstable();
        one_by_one.sort_unstable();
        Some((bulk, one_by_one))
    }

    /// The bulk decision equals `can` per project for every kind of caller,
    /// on the read rule (role decides) and on a grant rule (project.manage:
    /// members need a manage grant, viewers are below the floor).
    #[tokio::test]
    async fn bulk_visibility_equals_can_per_project() {
        use ferry_tests::fixtures;
        for db in ferry_tests::migrated_dbs().await {
            let b = db.backend;
            let conn = &db.conn;
            let org = fixtures::organization(conn, "Acme", "acme").await;
            let elsewhere = fixtures::organization(conn, "Other", "other").await;
            let mut all = Vec::new();
            for i in 0..4 {
                all.push(fixtures::project(conn, org, &format!("P{i}"), &format!("p{i}")).await);
            }
            let foreign = fixtures::project(conn, elsewhere, "X", "x").await;

            let admin = user(conn, "admin", false).await;
            member(conn, org, admin, OrgRole::Admin).await;
            let granted = user(conn, "granted", false).await;
            member(conn, org, granted, OrgRole::Member).await;
            grant(conn, org, granted, all[0], ResourceAccess::Manage).await;
            grant(conn, org, granted, all[1], ResourceAccess::View).await;
            grant(conn, elsewhere, granted, foreign, ResourceAccess::Manage).await;
            let plain = user(conn, "plain", false).await;
            member(conn, org, plain, OrgRole::Member).await;
            let viewer = user(conn, "viewer", false).await;
            member(conn, org, viewer, OrgRole::Viewer).await;
            grant(conn, org, viewer, all[2], ResourceAccess::Manage).await;
            let outsider = user(conn, "outsider", false).await;
            let root = user(conn, "root", true).await;

            let session = || Credential::Session { id: Uuid::now_v7() };
            let capped = |role| Credential::ApiToken {
                id: Uuid::now_v7(),
                organization_id: org,
                role,
            };
            let callers = [
                ("admin", caller(admin, false, session())),
                (
                    "admin token capped to member",
                    caller(admin, false, capped(OrgRole::Member)),
                ),
                ("member with grants", caller(granted, false, session())),
                (
                    "member token capped to viewer",
                    caller(granted, false, capped(OrgRole::Viewer)),
                ),
                ("member without grants", caller(plain, false, session())),
                (
                    "viewer with a manage grant",
                    caller(viewer, false, session()),
                ),
                ("outsider", caller(outsider, false, session())),
                ("super-admin, not a member", caller(root, true, session())),
            ];
            for (who, caller) in &callers {
                for action in [Action::ProjectRead, Action::ProjectManage] {
                    match both(conn, caller, action, org, &all).await {
                        Some((bulk, one_by_one)) => {
                            assert_eq!(bulk, one_by_one, "{b}: {who}: {action}");
                        }
                        None => assert_eq!(*who, "outsider", "{b}: {who} refused"),
                    }
                }
            }
            // The grant path is really taken: exactly the managed project.
            let (bulk, _) = both(conn, &callers[2].1, Action::ProjectManage, org, &all)
                .await
                .unwrap_or_default();
            assert_eq!(bulk, vec![all[0]], "{b}");
        }
    }

    #[test]
    fn namespaces_are_generated_labels_with_the_id_suffix() {
        let id = Uuid::parse_str("01890a5d-ac96-774b-bcce-b302099a8057").unwrap_or_default();
        assert_eq!(project_namespace("web", id), "ferry-web-b302099a8057");
        let long = "a".repeat(39) + "-tail-that-is-cut";
        let ns = project_namespace(&long, id);
        assert_eq!(ns, format!("ferry-{}-b302099a8057", "a".repeat(39)));
        assert!(ferry_k8s::validate::is_label(&ns, 63));
        assert!(ferry_k8s::validate::is_label(
            &project_namespace(&"z".repeat(63), id),
            63
        ));
    }
}
