//! Rows that many tests need (organization → project → service → route),
//! inserted directly through the entities. Every helper returns the new id.

use ferry_db::entities::enums::{PortProtocol, ServiceKind, ServiceStatus, SourceType};
use ferry_db::entities::{
    certificates, domains, organizations, projects, route_targets, routes, service_ports, services,
};
use sea_orm::prelude::{DateTimeUtc, Uuid};
use sea_orm::{DatabaseConnection, EntityTrait as _, IntoActiveModel as _};

fn now() -> DateTimeUtc {
    DateTimeUtc::from(std::time::SystemTime::now())
}

/// An organization named `name` with slug `slug`.
pub async fn organization(conn: &DatabaseConnection, name: &str, slug: &str) -> Uuid {
    let (id, now) = (Uuid::now_v7(), now());
    organizations::Entity::insert(
        organizations::Model {
            id,
            name: name.into(),
            slug: slug.into(),
            settings: serde_json::json!({}),
            created_at: now,
            updated_at: now,
        }
        .into_active_model(),
    )
    .exec_without_returning(conn)
    .await
    .expect("insert organization");
    id
}

/// A project (Kubernetes namespace `slug`) of `org`.
pub async fn project(conn: &DatabaseConnection, org: Uuid, name: &str, slug: &str) -> Uuid {
    let (id, now) = (Uuid::now_v7(), now());
    projects::Entity::insert(
        projects::Model {
            id,
            organization_id: org,
            name: name.into(),
            slug: slug.into(),
            description: None,
            created_by: None,
            metadata: serde_json::json!({}),
            created_at: now,
            updated_at: now,
            // Fixtures name the namespace after the slug, so tests can
            // spell upstream addresses; the api generates its own.
            namespace: slug.into(),
        }
        .into_active_model(),
    )
    .exec_without_returning(conn)
    .await
    .expect("insert project");
    id
}

/// A running image-based application service with one TCP port named `http`.
pub async fn service(conn: &DatabaseConnection, project: Uuid, name: &str, port: i32) -> Uuid {
    let (id, now) = (Uuid::now_v7(), now());
    services::Entity::insert(
        services::Model {
            id,
            project_id: project,
            stack_id: None,
            name: name.into(),
            kind: ServiceKind::Application,
            source_type: SourceType::Image,
            status: ServiceStatus::Running,
            image: Some("nginx:1".into()),
            replicas: 1,
            cpu_request: None,
            cpu_limit: None,
            memory_request: None,
            memory_limit: None,
            command: None,
            args: None,
            health_check_path: None,
            health_check_port: None,
            health_check_interval_seconds: 30,
            auto_deploy: false,
            template_slug: None,
            registry_integration_id: None,
            created_by: None,
            created_at: now,
            updated_at: now,
        }
        .into_active_model(),
    )
    .exec_without_returning(conn)
    .await
    .expect("insert service");
    service_ports::Entity::insert(
        service_ports::Model {
            id: Uuid::now_v7(),
            service_id: id,
            name: Some("http".into()),
            container_port: port,
            protocol: PortProtocol::Tcp,
            created_at: now,
        }
        .into_active_model(),
    )
    .exec_without_returning(conn)
    .await
    .expect("insert service port");
    id
}

/// A verified domain of `org`, soft-deleted when `deleted`.
pub async fn domain(conn: &DatabaseConnection, org: Uuid, name: &str, deleted: bool) -> Uuid {
    let (id, now) = (Uuid::now_v7(), now());
    domains::Entity::insert(
        domains::Model {
            id,
            organization_id: org,
            name: name.into(),
            verification_token: None,
            verified_at: Some(now),
            tls_enabled: true,
            created_by: None,
            created_at: now,
            updated_at: now,
            deleted_at: deleted.then_some(now),
            project_id: None,
            wildcard: false,
            verification_method: Some("operator".into()),
            verified_by: None,
            last_checked_at: None,
            last_check_error: None,
            verification_lost_at: None,
        }
        .into_active_model(),
    )
    .exec_without_returning(conn)
    .await
    .expect("insert domain");
    id
}

/// A certificate row of `domain` (an uploaded one, expiring in 90 days);
/// its PEM is a placeholder and its key is `key` encrypted with
/// [`crate::test_keyring`].
pub async fn certificate(conn: &DatabaseConnection, domain: Uuid, key: &str) -> Uuid {
    let (id, now) = (Uuid::now_v7(), now());
    certificates::Entity::insert(
        certificates::Model {
            id,
            domain_id: domain,
            issuer: "CN=Fixture CA".into(),
            certificate_pem: "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n".into(),
            private_key: crate::test_keyring()
                .encrypt("certificates", "private_key", id, key)
                .expect("encrypt"),
            not_before: Some(now),
            expires_at: now + std::time::Duration::from_secs(90 * 86_400),
            created_at: now,
            source: "uploaded".into(),
            hostnames: serde_json::json!([]),
            expiring_notified_at: None,
        }
        .into_active_model(),
    )
    .exec_without_returning(conn)
    .await
    .expect("insert certificate");
    id
}

/// A route for `hostname` + `path_prefix`; `https` turns on TLS and the
/// HTTP→HTTPS redirect.
pub async fn route<C: ferry_db::sea_orm::ConnectionTrait>(
    conn: &C,
    project: Uuid,
    domain: Option<Uuid>,
    hostname: &str,
    path_prefix: &str,
    https: bool,
) -> Uuid {
    let (id, now) = (Uuid::now_v7(), now());
    routes::Entity::insert(
        routes::Model {
            id,
            project_id: project,
            domain_id: domain,
            hostname: hostname.into(),
            path_prefix: path_prefix.into(),
            tls_enabled: https,
            https_redirect: https,
            created_at: now,
            updated_at: now,
        }
        .into_active_model(),
    )
    .exec_without_returning(conn)
    .await
    .expect("insert route");
    id
}

/// Sends `route` to `service:port` (weight 100), optionally stripping the prefix.
pub async fn target<C: ferry_db::sea_orm::ConnectionTrait>(
    conn: &C,
    route: Uuid,
    service: Uuid,
    port: i32,
    strip: bool,
) -> Uuid {
    let id = Uuid::now_v7();
    route_targets::Entity::insert(
        route_targets::Model {
            id,
            route_id: route,
            service_id: service,
            port,
            weight: 100,
            strip_path: strip,
            created_at: now(),
        }
        .into_active_model(),
    )
    .exec_without_returning(conn)
    .await
    .expect("insert route target");
    id
}
