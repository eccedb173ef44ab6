//! From rows to a [`WorkloadSpec`], and from a template (or a database
//! engine) to rows.
//!
//! Environment precedence, lowest first: the variable groups attached to the
//! service, in attachment order (a later group overrides an earlier one),
//! then the service's own variables.

use std::collections::BTreeMap;

use chrono::Utc;
use ferry_db::crypto::Keyring;
use ferry_db::entities::enums::{
    DatabaseEngine, PortProtocol, ServiceKind, ServiceStatus, SourceType, VolumeAccessMode,
    VolumeType,
};
use ferry_db::entities::{
    database_configs, organizations, projects, registry_integrations, service_env_vars,
    service_ports, service_variable_groups, services, variable_group_items, volume_mounts, volumes,
};
use ferry_db::sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, ConnectionTrait, EntityTrait as _,
    QueryFilter as _, QueryOrder as _,
};
use ferry_k8s::spec as k8s;
use serde::Deserialize;
use uuid::Uuid;

use super::validate;
use crate::{Error, Result};

pub const ENV_TABLE: &str = "service_env_vars";
pub const GROUP_TABLE: &str = "variable_group_items";
pub const VALUE_COLUMN: &str = "value_encrypted";

/// A stored variable's plain value (decrypting secret ones, bound to row `row`).
pub fn plain_value(
    keyring: &Keyring,
    table: &str,
    row: Uuid,
    value: Option<&String>,
    encrypted: Option<&ferry_db::crypto::Encrypted>,
) -> Result<String> {
    match (value, encrypted) {
        (_, Some(enc)) => Ok(keyring
            .decrypt(table, VALUE_COLUMN, row, enc)?
            .expose()
            .to_owned()),
        (Some(v), None) => Ok(v.clone()),
        (None, None) => Ok(String::new()),
    }
}

/// The merged environment of a service (see the module docs).
pub async fn merged_env<C: ConnectionTrait>(
    db: &C,
    keyring: &Keyring,
    service_id: Uuid,
) -> Result<Vec<k8s::EnvVar>> {
    let mut env: BTreeMap<String, (String, bool)> = BTreeMap::new();
    let groups = service_variable_groups::Entity::find()
        .filter(service_variable_groups::Column::ServiceId.eq(service_id))
        .order_by_asc(service_variable_groups::Column::CreatedAt)
        .order_by_asc(service_variable_groups::Column::Id)
        .all(db)
        .await?;
    for group in groups {
        let items = variable_group_items::Entity::find()
            .filter(variable_group_items::Column::VariableGroupId.eq(group.variable_group_id))
            .all(db)
            .await?;
        for item in items {
            let value = plain_value(
                keyring,
                GROUP_TABLE,
                item.id,
                item.value.as_ref(),
                item.value_encrypted.as_ref(),
            )?;
            env.insert(item.key, (value, item.is_secret));
        }
    }
    let own = service_env_vars::Entity::find()
        .filter(service_env_vars::Column::ServiceId.eq(service_id))
        .all(db)
        .await?;
    for var in own {
        let value = plain_value(
            keyring,
            ENV_TABLE,
            var.id,
            var.value.as_ref(),
            var.value_encrypted.as_ref(),
        )?;
        env.insert(var.key, (value, var.is_secret));
    }
    Ok(env
        .into_iter()
        .map(|(key, (value, secret))| k8s::EnvVar {
            key,
            value: k8s::SecretValue(value),
            secret,
        })
        .collect())
}

/// What a database engine needs (matches the official templates).
#[derive(Debug, Clone, Copy)]
pub struct EngineInfo {
    pub template: &'static str,
    pub repository: &'static str,
    pub port: u16,
    pub data_path: &'static str,
    pub user_key: Option<&'static str>,
    pub password_key: &'static str,
    pub database_key: Option<&'static str>,
    pub default_user: &'static str,
    pub scheme: &'static str,
}

pub fn engine_info(engine: DatabaseEngine) -> EngineInfo {
    match engine {
        DatabaseEngine::Postgresql => EngineInfo {
            template: "postgres",
            repository: "postgres",
            port: 5432,
            data_path: "/var/lib/postgresql/data",
            user_key: Some("POSTGRES_USER"),
            password_key: "POSTGRES_PASSWORD",
            database_key: Some("POSTGRES_DB"),
            default_user: "postgres",
            scheme: "postgresql",
        },
        DatabaseEngine::Mysql => EngineInfo {
            template: "mysql",
            repository: "mysql",
            port: 3306,
            data_path: "/var/lib/mysql",
            user_key: Some("MYSQL_USER"),
            password_key: "MYSQL_PASSWORD",
            database_key: Some("MYSQL_DATABASE"),
            default_user: "app",
            scheme: "mysql",
        },
        DatabaseEngine::Mongodb => EngineInfo {
            template: "mongodb",
            repository: "mongo",
            port: 27017,
            data_path: "/data/db",
            user_key: Some("MONGO_INITDB_ROOT_USERNAME"),
            password_key: "MONGO_INITDB_ROOT_PASSWORD",
            database_key: None,
            default_user: "root",
            scheme: "mongodb",
        },
        DatabaseEngine::Redis => EngineInfo {
            template: "redis",
            repository: "redis",
            port: 6379,
            data_path: "/data",
            user_key: None,
            password_key: "REDIS_PASSWORD",
            database_key: None,
            default_user: "default",
            scheme: "redis",
        },
    }
}

/// Builds the desired state of `service` for deployment `deployment_id`.
pub async fn workload_spec<C: ConnectionTrait>(
    db: &C,
    keyring: &Keyring,
    service: &services::Model,
    project: &projects::Model,
    deployment_id: Uuid,
    config: &super::DeployConfig,
) -> Result<k8s::WorkloadSpec> {
    let ports: Vec<k8s::PortSpec> = service_ports::Entity::find()
        .filter(service_ports::Column::ServiceId.eq(service.id))
        .order_by_asc(service_ports::Column::ContainerPort)
        .all(db)
        .await?
        .into_iter()
        .map(|p| k8s::PortSpec {
            name: p.name,
            container_port: u16::try_from(p.container_port).unwrap_or(0),
            protocol: match p.protocol {
                PortProtocol::Tcp => k8s::Protocol::Tcp,
                PortProtocol::Udp => k8s::Protocol::Udp,
            },
        })
        .collect();
    let mut volumes_used: Vec<k8s::VolumeSpec> = Vec::new();
    let mut mounts = Vec::new();
    let rows = volume_mounts::Entity::find()
        .filter(volume_mounts::Column::ServiceId.eq(service.id))
        .find_also_related(volumes::Entity)
        .order_by_asc(volume_mounts::Column::MountPath)
        .all(db)
        .await?;
    for (mount, volume) in rows {
        let Some(volume) = volume else { continue };
        if !volumes_used.iter().any(|v| v.name == volume.name) {
            volumes_used.push(k8s::VolumeSpec {
                name: volume.name.clone(),
                size_gb: volume.size_gb,
                storage_class: volume.storage_class.clone(),
                access_mode: match volume.access_mode {
                    VolumeAccessMode::ReadWriteOnce => k8s::AccessMode::ReadWriteOnce,
                    VolumeAccessMode::ReadWriteMany => k8s::AccessMode::ReadWriteMany,
                    VolumeAccessMode::ReadOnlyMany => k8s::AccessMode::ReadOnlyMany,
                },
            });
        }
        mounts.push(k8s::MountSpec {
            volume: volume.name,
            mount_path: mount.mount_path,
            sub_path: mount.sub_path,
            read_only: mount.read_only,
        });
    }
    let database = database_configs::Entity::find()
        .filter(database_configs::Column::ServiceId.eq(service.id))
        .one(db)
        .await?;
    let kind = match (service.kind, &database) {
        (ServiceKind::Database, Some(d)) => k8s::WorkloadKind::Database {
            engine: match d.engine {
                DatabaseEngine::Postgresql => k8s::DatabaseEngine::Postgres,
                DatabaseEngine::Mysql => k8s::DatabaseEngine::Mysql,
                DatabaseEngine::Mongodb => k8s::DatabaseEngine::Mongodb,
                DatabaseEngine::Redis => k8s::DatabaseEngine::Redis,
            },
            version: d.version.clone(),
            storage_gb: d.storage_size_gb,
            data_path: engine_info(d.engine).data_path.to_owned(),
        },
        (ServiceKind::Database, None) => {
            return Err(Error::Internal(format!(
                "database service {} has no database config",
                service.id
            )));
        }
        (ServiceKind::Application, _) => k8s::WorkloadKind::Application,
    };
    let image_pull = match service.registry_integration_id {
        Some(id) => registry_auth(db, keyring, id).await?,
        None => None,
    };
    let health_check = match (service.health_check_port, &database) {
        (Some(port), _) => Some(k8s::HealthCheck {
            path: service.health_check_path.clone(),
            port: u16::try_from(port).unwrap_or(0),
            interval_seconds: service.health_check_interval_seconds,
        }),
        // Databases get a TCP check on their engine's port.
        (None, Some(d)) => Some(k8s::HealthCheck {
            path: None,
            port: engine_info(d.engine).port,
            interval_seconds: service.health_check_interval_seconds.min(10),
        }),
        (None, None) => None,
    };
    Ok(k8s::WorkloadSpec {
        organization_id: project.organization_id,
        project_id: project.id,
        namespace: project.namespace.clone(),
        service_id: service.id,
        name: service.name.clone(),
        deployment_id,
        kind,
        image: service.image.clone().unwrap_or_default(),
        command: json_strings(service.command.as_ref()),
        args: json_strings(service.args.as_ref()),
        replicas: service.replicas,
        resources: k8s::Resources {
            cpu_request: service.cpu_request.clone(),
            cpu_limit: service.cpu_limit.clone(),
            memory_request: service.memory_request.clone(),
            memory_limit: service.memory_limit.clone(),
        },
        health_check,
        ports,
        env: merged_env(db, keyring, service.id).await?,
        volumes: volumes_used,
        mounts,
        image_pull,
        proxy_namespace: config.proxy_namespace.clone(),
        policy: project_policy(db, &config.policy, project.organization_id).await?,
    })
}

/// The installation's policy with the organization's quota overrides
/// (`settings.limits`, any subset of [`k8s::ProjectQuota`]'s fields).
pub async fn project_policy<C: ConnectionTrait>(
    db: &C,
    default: &k8s::ProjectPolicy,
    organization_id: Uuid,
) -> Result<k8s::ProjectPolicy> {
    let mut policy = default.clone();
    let settings = organizations::Entity::find_by_id(organization_id)
        .one(db)
        .await?
        .map(|o| o.settings);
    if let Some(settings) = settings {
        policy.quota = merge_quota(&default.quota, &quota_overrides(&settings))?;
    }
    Ok(policy)
}

/// An organization's quota overrides: `settings.limits` (empty if none).
pub fn quota_overrides(settings: &serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match settings.get("limits") {
        Some(serde_json::Value::Object(overrides)) => overrides.clone(),
        _ => serde_json::Map::new(),
    }
}

/// `default` with `overrides` (keyed by [`k8s::ProjectQuota`]'s field names).
pub fn merge_quota(
    default: &k8s::ProjectQuota,
    overrides: &serde_json::Map<String, serde_json::Value>,
) -> Result<k8s::ProjectQuota> {
    let mut quota = serde_json::to_value(default).map_err(|e| Error::Internal(e.to_string()))?;
    if let serde_json::Value::Object(base) = &mut quota {
        base.extend(overrides.clone());
    }
    serde_json::from_value(quota).map_err(|e| {
        Error::FailedPrecondition(format!("the organization's limits are malformed: {e}"))
    })
}

pub(crate) async fn registry_auth<C: ConnectionTrait>(
    db: &C,
    keyring: &Keyring,
    id: Uuid,
) -> Result<Option<k8s::RegistryAuth>> {
    let Some(reg) = registry_integrations::Entity::find_by_id(id)
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    let password = match &reg.password {
        Some(enc) => keyring
            .decrypt("registry_integrations", "password", reg.id, enc)?
            .expose()
            .to_owned(),
        None => String::new(),
    };
    let server = reg
        .url
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    Ok(Some(k8s::RegistryAuth {
        server,
        username: reg.username.unwrap_or_default(),
        password: k8s::SecretValue(password),
    }))
}

pub fn json_strings(value: Option<&serde_json::Value>) -> Vec<String> {
    value
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The template blueprint (docs/data-model.md, "Template spec").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSpec {
    pub kind: String,
    #[serde(default)]
    pub engine: Option<String>,
    pub image: String,
    #[serde(default)]
    pub ports: Vec<TemplatePort>,
    #[serde(default)]
    pub http_port: Option<u16>,
    #[serde(default)]
    pub env: Vec<TemplateVar>,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub volumes: Vec<TemplateVolume>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplatePort {
    #[serde(default)]
    pub name: Option<String>,
    pub container_port: u16,
    #[serde(default)]
    pub protocol: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateVar {
    pub key: String,
    #[serde(default)]
    pub value: Option<String>,
    /// `password` (24 alphanumerics) or `hex32`.
    #[serde(default)]
    pub generate: Option<String>,
    #[serde(default)]
    pub secret: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateVolume {
    pub name: String,
    pub mount_path: String,
    pub size_gb: i32,
}

impl TemplateSpec {
    /// Parses and validates a stored or submitted blueprint.
    pub fn parse(value: &serde_json::Value) -> Result<Self> {
        let spec: TemplateSpec = serde_json::from_value(value.clone())
            .map_err(|e| Error::InvalidArgument(format!("specJson: {e}")))?;
        match (spec.kind.as_str(), spec.engine.as_deref()) {
            ("application", None) => {}
            ("database", Some(e)) if engine_from_str(e).is_some() => {}
            _ => {
                return Err(Error::InvalidArgument(
                    "specJson.kind: must be \"application\", or \"database\" with an engine (postgresql, mysql, mongodb, redis)".into(),
                ));
            }
        }
        validate::image("specJson.image", &spec.image)?;
        validate::argv("specJson.command", &spec.command)?;
        validate::argv("specJson.args", &spec.args)?;
        for (i, v) in spec.env.iter().enumerate() {
            validate::env_key(&format!("specJson.env[{i}].key"), &v.key)?;
            match (&v.value, v.generate.as_deref()) {
                (Some(value), None) => {
                    validate::env_value(&format!("specJson.env[{i}].value"), value)?
                }
                (None, Some("password" | "hex32")) => {}
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "specJson.env[{i}]: needs a value, or generate: \"password\" | \"hex32\""
                    )));
                }
            }
        }
        for (i, v) in spec.volumes.iter().enumerate() {
            validate::dns_label(&format!("specJson.volumes[{i}].name"), &v.name, 50)?;
            validate::mount_path(&format!("specJson.volumes[{i}].mountPath"), &v.mount_path)?;
            validate::size_gb(&format!("specJson.volumes[{i}].sizeGb"), v.size_gb)?;
        }
        let ports: Vec<_> = spec
            .ports
            .iter()
            .map(|p| ferry_proto::ferry::v1::Port {
                name: p.name.clone().unwrap_or_default(),
                container_port: u32::from(p.container_port),
                protocol: match p.protocol.as_deref() {
                    Some("udp") => ferry_proto::ferry::v1::Protocol::Udp.into(),
                    _ => ferry_proto::ferry::v1::Protocol::Tcp.into(),
                },
            })
            .collect();
        validate::ports(&ports).map_err(|e| match e {
            Error::InvalidArgument(m) => Error::InvalidArgument(format!("specJson.{m}")),
            other => other,
        })?;
        Ok(spec)
    }
}

pub fn engine_from_str(s: &str) -> Option<DatabaseEngine> {
    match s {
        "postgresql" | "postgres" => Some(DatabaseEngine::Postgresql),
        "mysql" => Some(DatabaseEngine::Mysql),
        "mongodb" => Some(DatabaseEngine::Mongodb),
        "redis" => Some(DatabaseEngine::Redis),
        _ => None,
    }
}

/// A random alphanumeric password.
pub fn generate_password() -> String {
    use rand::Rng as _;
    use rand::distr::Alphanumeric;
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(24)
        .map(char::from)
        .collect()
}

fn generate(kind: &str) -> String {
    if kind == "hex32" {
        use rand::RngCore as _;
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        hex::encode(bytes)
    } else {
        generate_password()
    }
}

/// What creating a service needs besides its blueprint.
#[derive(Debug, Clone)]
pub struct NewService<'a> {
    pub project: &'a projects::Model,
    pub name: &'a str,
    pub created_by: Uuid,
    pub stack_id: Option<Uuid>,
    pub template_slug: Option<String>,
    /// Database image tag override.
    pub version: Option<String>,
    pub storage_gb: Option<i32>,
    pub quantities: validate::Quantities,
    pub replicas: i32,
}

/// Creates a service with its ports, variables and volumes (or database
/// config) from a blueprint, inside the caller's transaction.
pub async fn create_from_template<C: ConnectionTrait>(
    txn: &C,
    keyring: &Keyring,
    new: NewService<'_>,
    spec: &TemplateSpec,
) -> Result<services::Model> {
    let now = Utc::now();
    let service_id = Uuid::now_v7();
    let engine = spec.engine.as_deref().and_then(engine_from_str);
    let image = match (engine, &new.version) {
        (Some(e), Some(v)) => format!("{}:{v}", engine_info(e).repository),
        _ => spec.image.clone(),
    };
    let http_port = spec.http_port;
    let service = services::ActiveModel {
        id: Set(service_id),
        project_id: Set(new.project.id),
        stack_id: Set(new.stack_id),
        name: Set(new.name.to_owned()),
        kind: Set(if engine.is_some() {
            ServiceKind::Database
        } else {
            ServiceKind::Application
        }),
        source_type: Set(if new.stack_id.is_some() {
            SourceType::Compose
        } else {
            SourceType::Image
        }),
        status: Set(ServiceStatus::Pending),
        image: Set(Some(image.clone())),
        replicas: Set(new.replicas),
        cpu_request: Set(new.quantities.cpu_request.clone()),
        cpu_limit: Set(new.quantities.cpu_limit.clone()),
        memory_request: Set(new.quantities.memory_request.clone()),
        memory_limit: Set(new.quantities.memory_limit.clone()),
        command: Set((!spec.command.is_empty()).then(|| serde_json::json!(spec.command))),
        args: Set((!spec.args.is_empty()).then(|| serde_json::json!(spec.args))),
        health_check_path: Set(http_port.map(|_| "/".to_owned())),
        health_check_port: Set(http_port.map(i32::from)),
        health_check_interval_seconds: Set(30),
        auto_deploy: Set(true),
        template_slug: Set(new.template_slug.clone()),
        registry_integration_id: Set(None),
        created_by: Set(Some(new.created_by)),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(txn)
    .await
    .map_err(super::unique_as(
        "a service with this name already exists in the project",
    ))?;

    for p in &spec.ports {
        service_ports::ActiveModel {
            id: Set(Uuid::now_v7()),
            service_id: Set(service_id),
            name: Set(p.name.clone()),
            container_port: Set(i32::from(p.container_port)),
            protocol: Set(if p.protocol.as_deref() == Some("udp") {
                PortProtocol::Udp
            } else {
                PortProtocol::Tcp
            }),
            created_at: Set(now),
        }
        .insert(txn)
        .await?;
    }
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    for var in &spec.env {
        let value = match (&var.value, var.generate.as_deref()) {
            (Some(v), _) => v.clone(),
            (None, Some(kind)) => generate(kind),
            (None, None) => String::new(),
        };
        insert_env(txn, keyring, service_id, &var.key, &value, var.secret).await?;
        values.insert(var.key.clone(), value);
    }
    match engine {
        Some(engine) => {
            let info = engine_info(engine);
            let user = info
                .user_key
                .and_then(|k| values.get(k).cloned())
                .unwrap_or_else(|| info.default_user.to_owned());
            let password = values.get(info.password_key).cloned().unwrap_or_default();
            let database = info.database_key.and_then(|k| values.get(k).cloned());
            let host = format!("{}.{}.svc.cluster.local", new.name, new.project.namespace);
            let url = connection_url(info, &user, &password, &host, database.as_deref());
            let storage = new
                .storage_gb
                .or_else(|| spec.volumes.first().map(|v| v.size_gb))
                .unwrap_or(10);
            let config_id = Uuid::now_v7();
            database_configs::ActiveModel {
                id: Set(config_id),
                service_id: Set(service_id),
                engine: Set(engine),
                version: Set(image
                    .rsplit_once(':')
                    .map_or("latest", |(_, t)| t)
                    .to_owned()),
                storage_size_gb: Set(storage),
                database_name: Set(database),
                username: Set(Some(user)),
                password: Set(Some(keyring.encrypt(
                    "database_configs",
                    "password",
                    config_id,
                    &password,
                )?)),
                connection_string: Set(Some(keyring.encrypt(
                    "database_configs",
                    "connection_string",
                    config_id,
                    &url,
                )?)),
                config: Set(serde_json::json!({})),
                external_port: Set(None),
                created_at: Set(now),
                updated_at: Set(now),
            }
            .insert(txn)
            .await?;
        }
        None => {
            for v in &spec.volumes {
                let volume_name = format!("{}-{}", new.name, v.name);
                let volume = volumes::ActiveModel {
                    id: Set(Uuid::now_v7()),
                    project_id: Set(new.project.id),
                    name: Set(volume_name.clone()),
                    volume_type: Set(VolumeType::Pvc),
                    size_gb: Set(v.size_gb),
                    storage_class: Set(None),
                    access_mode: Set(VolumeAccessMode::ReadWriteOnce),
                    created_at: Set(now),
                    updated_at: Set(now),
                }
                .insert(txn)
                .await
                .map_err(super::unique_as(
                    "a volume with this service's volume name already exists in the project",
                ))?;
                volume_mounts::ActiveModel {
                    id: Set(Uuid::now_v7()),
                    volume_id: Set(volume.id),
                    service_id: Set(service_id),
                    mount_path: Set(v.mount_path.clone()),
                    sub_path: Set(None),
                    read_only: Set(false),
                    created_at: Set(now),
                }
                .insert(txn)
                .await?;
            }
        }
    }
    Ok(service)
}

/// `scheme://user:password@host:port/database`.
pub fn connection_url(
    info: EngineInfo,
    user: &str,
    password: &str,
    host: &str,
    database: Option<&str>,
) -> String {
    let path = database.map(|d| format!("/{d}")).unwrap_or_default();
    format!(
        "{}://{}:{}@{host}:{}{path}",
        info.scheme, user, password, info.port
    )
}

/// Inserts a service variable (encrypting secret values).
pub async fn insert_env<C: ConnectionTrait>(
    txn: &C,
    keyring: &Keyring,
    service_id: Uuid,
    key: &str,
    value: &str,
    secret: bool,
) -> Result<service_env_vars::Model> {
    let now = Utc::now();
    let id = Uuid::now_v7();
    let (plain, enc) = if secret {
        (
            None,
            Some(keyring.encrypt(ENV_TABLE, VALUE_COLUMN, id, value)?),
        )
    } else {
        (Some(value.to_owned()), None)
    };
    Ok(service_env_vars::ActiveModel {
        id: Set(id),
        service_id: Set(service_id),
        key: Set(key.to_owned()),
        value: Set(plain),
        value_encrypted: Set(enc),
        is_secret: Set(secret),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(txn)
    .await?)
}
