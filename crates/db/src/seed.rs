//! Idempotent seed data: the RBAC catalogue (roles, permissions,
//! role_permissions; seed 003) and the official 1-click templates.
//!
//! Everything is upserted by its unique name in one transaction: rows are
//! inserted when missing and updated only when their content differs, and
//! stale role→permission links of the catalogue roles are removed, so a
//! second run changes nothing.

use std::collections::{BTreeMap, BTreeSet};

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    Set, TransactionTrait,
};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::Result;
use crate::entities::enums::OrgRole;
use crate::entities::{permissions, role_permissions, roles, templates};

/// What a seed run changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeedReport {
    pub roles_created: u64,
    pub roles_updated: u64,
    pub permissions_created: u64,
    pub permissions_updated: u64,
    pub role_permissions_created: u64,
    pub role_permissions_removed: u64,
    pub templates_created: u64,
    pub templates_updated: u64,
}

impl SeedReport {
    /// True when the run changed nothing.
    pub fn is_noop(&self) -> bool {
        *self == Self::default()
    }
}

/// The organisation roles, lowest first: `(role, rank, description)`; the
/// ranks are [`OrgRole::rank`]'s.
/// Seed 003's Admin/Manager/Editor/Viewer map onto admin/admin/member/viewer;
/// owner is Meshploy's single owner per organisation.
pub const ROLES: &[(OrgRole, i32, &str)] = &[
    (
        OrgRole::Viewer,
        OrgRole::Viewer.rank() as i32,
        "Read-only access to the organisation's projects and services",
    ),
    (
        OrgRole::Member,
        OrgRole::Member.rank() as i32,
        "Creates, configures and deploys projects, services and jobs",
    ),
    (
        OrgRole::Admin,
        OrgRole::Admin.rank() as i32,
        "Manages members, integrations, nodes and every resource",
    ),
    (
        OrgRole::Owner,
        OrgRole::Owner.rank() as i32,
        "Full control, including deleting and transferring the organisation",
    ),
];

/// The permission catalogue: `(name, lowest role that holds it, description)`.
/// A role holds every permission whose lowest role ranks at or below it.
pub const PERMISSIONS: &[(&str, OrgRole, &str)] = &[
    (
        "org.view",
        OrgRole::Viewer,
        "View the organisation and its settings",
    ),
    ("org.manage", OrgRole::Admin, "Change organisation settings"),
    ("org.delete", OrgRole::Owner, "Delete the organisation"),
    (
        "org.transfer",
        OrgRole::Owner,
        "Transfer ownership to another member",
    ),
    (
        "member.view",
        OrgRole::Viewer,
        "List members and their roles",
    ),
    (
        "member.invite",
        OrgRole::Admin,
        "Invite people to the organisation",
    ),
    (
        "member.manage",
        OrgRole::Admin,
        "Change member roles and remove members",
    ),
    (
        "api_token.manage",
        OrgRole::Admin,
        "Create and revoke API tokens",
    ),
    ("audit.view", OrgRole::Admin, "Read the audit log"),
    ("project.view", OrgRole::Viewer, "View projects"),
    ("project.create", OrgRole::Member, "Create projects"),
    ("project.manage", OrgRole::Member, "Change project settings"),
    ("project.delete", OrgRole::Admin, "Delete projects"),
    (
        "service.view",
        OrgRole::Viewer,
        "View services, deployments and status",
    ),
    (
        "service.logs",
        OrgRole::Viewer,
        "Read build and runtime logs",
    ),
    (
        "service.create",
        OrgRole::Member,
        "Create services and stacks",
    ),
    (
        "service.manage",
        OrgRole::Member,
        "Change service settings, ports and volumes",
    ),
    (
        "service.deploy",
        OrgRole::Member,
        "Deploy, roll back and restart services",
    ),
    (
        "service.delete",
        OrgRole::Member,
        "Delete services and stacks",
    ),
    (
        "env.manage",
        OrgRole::Member,
        "Edit environment variables and variable groups",
    ),
    (
        "env.reveal",
        OrgRole::Admin,
        "Reveal secret environment values",
    ),
    (
        "domain.view",
        OrgRole::Viewer,
        "View domains, routes and certificates",
    ),
    (
        "domain.manage",
        OrgRole::Member,
        "Add domains and edit routes",
    ),
    ("job.view", OrgRole::Viewer, "View jobs and runs"),
    ("job.run", OrgRole::Member, "Trigger job runs"),
    (
        "job.manage",
        OrgRole::Member,
        "Create, edit and delete jobs",
    ),
    (
        "backup.view",
        OrgRole::Viewer,
        "View backup configurations and runs",
    ),
    (
        "backup.manage",
        OrgRole::Member,
        "Configure and trigger backups",
    ),
    ("backup.restore", OrgRole::Admin, "Restore from a backup"),
    ("node.view", OrgRole::Viewer, "View nodes"),
    (
        "node.manage",
        OrgRole::Admin,
        "Register, drain and remove nodes",
    ),
    (
        "integration.view",
        OrgRole::Viewer,
        "View storage, registry and git integrations",
    ),
    (
        "integration.manage",
        OrgRole::Admin,
        "Add and edit integrations and credentials",
    ),
    (
        "notification.view",
        OrgRole::Member,
        "View notification channels and their delivery log",
    ),
    (
        "notification.manage",
        OrgRole::Admin,
        "Configure notification channels and SMTP",
    ),
    (
        "template.manage",
        OrgRole::Member,
        "Create the organisation's own templates",
    ),
];

/// An official template: `(slug, name, category, description, spec)`.
struct Template {
    slug: &'static str,
    name: &'static str,
    category: &'static str,
    description: &'static str,
    spec: Value,
}

fn secret(key: &str) -> Value {
    json!({ "key": key, "generate": "password", "secret": true })
}

fn var(key: &str, value: &str) -> Value {
    json!({ "key": key, "value": value })
}

fn volume(mount_path: &str, size_gb: u32) -> Value {
    json!({ "name": "data", "mount_path": mount_path, "size_gb": size_gb })
}

fn port(name: &str, container_port: u16) -> Value {
    json!({ "name": name, "container_port": container_port, "protocol": "tcp" })
}

/// The blueprint of the official template `slug` (what `seed` stores), so
/// callers need not depend on the seed having run.
pub fn official_template_spec(slug: &str) -> Option<Value> {
    official_templates()
        .into_iter()
        .find(|t| t.slug == slug)
        .map(|t| t.spec)
}

/// The official templates. `spec` is documented in docs/data-model.md.
fn official_templates() -> Vec<Template> {
    vec![
        Template {
            slug: "postgres",
            name: "PostgreSQL",
            category: "database",
            description: "PostgreSQL relational database",
            spec: json!({
                "kind": "database",
                "engine": "postgresql",
                "image": "postgres:17-alpine",
                "ports": [port("postgres", 5432)],
                "env": [
                    var("POSTGRES_USER", "postgres"),
                    secret("POSTGRES_PASSWORD"),
                    var("POSTGRES_DB", "app"),
                    // A sub-directory: a fresh volume's root holds lost+found.
                    var("PGDATA", "/var/lib/postgresql/data/pgdata"),
                ],
                "volumes": [volume("/var/lib/postgresql/data", 10)],
            }),
        },
        Template {
            slug: "mysql",
            name: "MySQL",
            category: "database",
            description: "MySQL relational database",
            spec: json!({
                "kind": "database",
                "engine": "mysql",
                "image": "mysql:8.4",
                "ports": [port("mysql", 3306)],
                "env": [
                    secret("MYSQL_ROOT_PASSWORD"),
                    var("MYSQL_DATABASE", "app"),
                    var("MYSQL_USER", "app"),
                    secret("MYSQL_PASSWORD"),
                ],
                "volumes": [volume("/var/lib/mysql", 10)],
            }),
        },
        Template {
            slug: "mongodb",
            name: "MongoDB",
            category: "database",
            description: "MongoDB document database",
            spec: json!({
                "kind": "database",
                "engine": "mongodb",
                "image": "mongo:8.0",
                "ports": [port("mongodb", 27017)],
                "env": [
                    var("MONGO_INITDB_ROOT_USERNAME", "root"),
                    secret("MONGO_INITDB_ROOT_PASSWORD"),
                ],
                "volumes": [volume("/data/db", 10)],
            }),
        },
        Template {
            slug: "redis",
            name: "Redis",
            category: "database",
            description: "Redis in-memory key-value store with append-only persistence",
            spec: json!({
                "kind": "database",
                "engine": "redis",
                "image": "redis:7.4-alpine",
                "ports": [port("redis", 6379)],
                "env": [secret("REDIS_PASSWORD")],
                // Kubernetes expands $(VAR) in container args.
                "command": [
                    "redis-server", "--appendonly", "yes",
                    "--requirepass", "$(REDIS_PASSWORD)"
                ],
                "volumes": [volume("/data", 1)],
            }),
        },
        Template {
            slug: "nginx",
            name: "Nginx",
            category: "web",
            description: "Nginx serving static files from a volume",
            spec: json!({
                "kind": "application",
                "image": "nginx:1.27-alpine",
                "ports": [port("http", 80)],
                "http_port": 80,
                "env": [],
                "volumes": [volume("/usr/share/nginx/html", 1)],
            }),
        },
        Template {
            slug: "uptime-kuma",
            name: "Uptime Kuma",
            category: "monitoring",
            description: "Self-hosted uptime monitoring with status pages",
            spec: json!({
                "kind": "application",
                "image": "louislam/uptime-kuma:1",
                "ports": [port("http", 3001)],
                "http_port": 3001,
                "env": [],
                "volumes": [volume("/app/data", 1)],
            }),
        },
        Template {
            slug: "gitea",
            name: "Gitea",
            category: "devtools",
            description: "Lightweight self-hosted Git service",
            spec: json!({
                "kind": "application",
                "image": "gitea/gitea:1.22",
                "ports": [port("http", 3000), port("ssh", 22)],
                "http_port": 3000,
                "env": [var("USER_UID", "1000"), var("USER_GID", "1000")],
                "volumes": [volume("/data", 10)],
            }),
        },
        Template {
            slug: "n8n",
            name: "n8n",
            category: "automation",
            description: "Workflow automation",
            spec: json!({
                "kind": "application",
                "image": "docker.n8n.io/n8nio/n8n:latest",
                "ports": [port("http", 5678)],
                "http_port": 5678,
                "env": [
                    json!({ "key": "N8N_ENCRYPTION_KEY", "generate": "hex32", "secret": true }),
                    var("GENERIC_TIMEZONE", "UTC"),
                ],
                "volumes": [volume("/home/node/.n8n", 1)],
            }),
        },
    ]
}

/// Seeds the RBAC catalogue and the official templates.
pub async fn run(db: &DatabaseConnection) -> Result<SeedReport> {
    let txn = db.begin().await?;
    let mut report = SeedReport::default();
    let role_ids = seed_roles(&txn, &mut report).await?;
    let permission_ids = seed_permissions(&txn, &mut report).await?;
    seed_role_permissions(&txn, &role_ids, &permission_ids, &mut report).await?;
    seed_templates(&txn, &mut report).await?;
    txn.commit().await?;
    tracing::info!(?report, "seed complete");
    Ok(report)
}

async fn seed_roles<C: ConnectionTrait>(
    db: &C,
    report: &mut SeedReport,
) -> Result<BTreeMap<i32, Uuid>> {
    let existing = roles::Entity::find().all(db).await?;
    let mut ids = BTreeMap::new();
    for &(role, rank, description) in ROLES {
        match existing.iter().find(|r| r.name == role) {
            Some(row) => {
                if row.rank != rank || row.description != description {
                    let mut am: roles::ActiveModel = row.clone().into();
                    am.rank = Set(rank);
                    am.description = Set(description.to_owned());
                    am.update(db).await?;
                    report.roles_updated += 1;
                }
                ids.insert(rank, row.id);
            }
            None => {
                let id = Uuid::now_v7();
                roles::ActiveModel {
                    id: Set(id),
                    name: Set(role),
                    description: Set(description.to_owned()),
                    rank: Set(rank),
                    created_at: Set(Utc::now()),
                }
                .insert(db)
                .await?;
                report.roles_created += 1;
                ids.insert(rank, id);
            }
        }
    }
    Ok(ids)
}

async fn seed_permissions<C: ConnectionTrait>(
    db: &C,
    report: &mut SeedReport,
) -> Result<BTreeMap<&'static str, Uuid>> {
    let existing = permissions::Entity::find().all(db).await?;
    let mut ids = BTreeMap::new();
    for &(name, _, description) in PERMISSIONS {
        match existing.iter().find(|p| p.name == name) {
            Some(row) => {
                if row.description != description {
                    let mut am: permissions::ActiveModel = row.clone().into();
                    am.description = Set(description.to_owned());
                    am.update(db).await?;
                    report.permissions_updated += 1;
                }
                ids.insert(name, row.id);
            }
            None => {
                let id = Uuid::now_v7();
                permissions::ActiveModel {
                    id: Set(id),
                    name: Set(name.to_owned()),
                    description: Set(description.to_owned()),
                    created_at: Set(Utc::now()),
                }
                .insert(db)
                .await?;
                report.permissions_created += 1;
                ids.insert(name, id);
            }
        }
    }
    Ok(ids)
}

async fn seed_role_permissions<C: ConnectionTrait>(
    db: &C,
    role_ids: &BTreeMap<i32, Uuid>,
    permission_ids: &BTreeMap<&'static str, Uuid>,
    report: &mut SeedReport,
) -> Result<()> {
    let mut wanted = BTreeSet::new();
    for (&role_rank, &role_id) in role_ids {
        for &(name, lowest, _) in PERMISSIONS {
            if i32::from(lowest.rank()) <= role_rank
                && let Some(&permission_id) = permission_ids.get(name)
            {
                wanted.insert((role_id, permission_id));
            }
        }
    }
    let catalogue_roles: Vec<Uuid> = role_ids.values().copied().collect();
    let existing = role_permissions::Entity::find()
        .filter(role_permissions::Column::RoleId.is_in(catalogue_roles))
        .all(db)
        .await?;
    let have: BTreeSet<(Uuid, Uuid)> = existing
        .iter()
        .map(|rp| (rp.role_id, rp.permission_id))
        .collect();
    for rp in &existing {
        if !wanted.contains(&(rp.role_id, rp.permission_id)) {
            role_permissions::Entity::delete_by_id(rp.id)
                .exec(db)
                .await?;
            report.role_permissions_removed += 1;
        }
    }
    for &(role_id, permission_id) in wanted.difference(&have) {
        role_permissions::ActiveModel {
            id: Set(Uuid::now_v7()),
            role_id: Set(role_id),
            permission_id: Set(permission_id),
            created_at: Set(Utc::now()),
        }
        .insert(db)
        .await?;
        report.role_permissions_created += 1;
    }
    Ok(())
}

async fn seed_templates<C: ConnectionTrait>(db: &C, report: &mut SeedReport) -> Result<()> {
    let existing = templates::Entity::find()
        .filter(templates::Column::OrganizationId.is_null())
        .all(db)
        .await?;
    for t in official_templates() {
        match existing.iter().find(|row| row.slug == t.slug) {
            Some(row) => {
                let same = row.name == t.name
                    && row.category == t.category
                    && row.description == t.description
                    && row.spec == t.spec
                    && row.is_official;
                if !same {
                    let mut am: templates::ActiveModel = row.clone().into();
                    am.name = Set(t.name.to_owned());
                    am.category = Set(t.category.to_owned());
                    am.description = Set(t.description.to_owned());
                    am.spec = Set(t.spec);
                    am.is_official = Set(true);
                    am.updated_at = Set(Utc::now());
                    am.update(db).await?;
                    report.templates_updated += 1;
                }
            }
            None => {
                let now = Utc::now();
                templates::ActiveModel {
                    id: Set(Uuid::now_v7()),
                    organization_id: Set(None),
                    slug: Set(t.slug.to_owned()),
                    name: Set(t.name.to_owned()),
                    description: Set(t.description.to_owned()),
                    category: Set(t.category.to_owned()),
                    icon_url: Set(None),
                    is_official: Set(true),
                    spec: Set(t.spec),
                    created_by: Set(None),
                    created_at: Set(now),
                    updated_at: Set(now),
                }
                .insert(db)
                .await?;
                report.templates_created += 1;
            }
        }
    }
    Ok(())
}
