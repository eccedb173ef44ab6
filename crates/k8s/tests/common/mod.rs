//! Specs shared by the integration tests.
#![allow(dead_code)]

use ferry_k8s::spec::*;
use uuid::Uuid;

pub mod build;

pub const SECRET_VALUE: &str = "s3cr3t-database-password";
pub const REGISTRY_PASSWORD: &str = "ghp_registrytoken123";

pub fn app_spec() -> WorkloadSpec {
    WorkloadSpec {
        organization_id: Uuid::from_u128(1),
        project_id: Uuid::from_u128(2),
        namespace: "shop".into(),
        service_id: Uuid::from_u128(3),
        name: "web".into(),
        deployment_id: Uuid::from_u128(4),
        kind: WorkloadKind::Application,
        image: "ghcr.io/acme/web:1.2.3".into(),
        command: vec!["/bin/server".into()],
        args: vec!["--port".into(), "8080".into()],
        replicas: 2,
        resources: Resources {
            cpu_request: Some("250m".into()),
            cpu_limit: Some("1".into()),
            memory_request: Some("256Mi".into()),
            memory_limit: Some("512Mi".into()),
        },
        health_check: Some(HealthCheck {
            path: Some("/healthz".into()),
            port: 8080,
            interval_seconds: 10,
        }),
        ports: vec![
            PortSpec {
                name: Some("http".into()),
                container_port: 8080,
                protocol: Protocol::Tcp,
            },
            PortSpec {
                name: None,
                container_port: 9090,
                protocol: Protocol::Udp,
            },
        ],
        env: vec![
            EnvVar {
                key: "DATABASE_URL".into(),
                value: SecretValue(format!("postgres://app:{SECRET_VALUE}@db/app")),
                secret: true,
            },
            EnvVar {
                key: "LOG_LEVEL".into(),
                value: SecretValue("info".into()),
                secret: false,
            },
        ],
        volumes: vec![VolumeSpec {
            name: "uploads".into(),
            size_gb: 5,
            storage_class: Some("fast".into()),
            access_mode: AccessMode::ReadWriteMany,
        }],
        mounts: vec![MountSpec {
            volume: "uploads".into(),
            mount_path: "/srv/uploads".into(),
            sub_path: Some("web".into()),
            read_only: true,
        }],
        image_pull: Some(RegistryAuth {
            server: "ghcr.io".into(),
            username: "acme".into(),
            password: SecretValue(REGISTRY_PASSWORD.into()),
        }),
        proxy_namespace: "ferry-system".into(),
        policy: ferry_k8s::spec::ProjectPolicy::default(),
    }
}

pub fn db_spec() -> WorkloadSpec {
    WorkloadSpec {
        service_id: Uuid::from_u128(5),
        name: "db".into(),
        deployment_id: Uuid::from_u128(6),
        kind: WorkloadKind::Database {
            engine: DatabaseEngine::Postgres,
            version: "17".into(),
            storage_gb: 10,
            data_path: "/var/lib/postgresql/data".into(),
        },
        image: "postgres:17".into(),
        command: vec![],
        args: vec![],
        replicas: 1,
        resources: Resources::default(),
        health_check: Some(HealthCheck {
            path: None,
            port: 5432,
            interval_seconds: 5,
        }),
        ports: vec![PortSpec {
            name: Some("postgres".into()),
            container_port: 5432,
            protocol: Protocol::Tcp,
        }],
        env: vec![EnvVar {
            key: "POSTGRES_PASSWORD".into(),
            value: SecretValue(SECRET_VALUE.into()),
            secret: true,
        }],
        volumes: vec![],
        mounts: vec![],
        image_pull: None,
        ..app_spec()
    }
}

/// `text` followed by every base64 run in it decoded (three levels deep:
/// a docker config inside a Secret holds base64 `user:password` again).
/// Secret `data` is base64, so asserting a value is absent from rendered
/// YAML only means something on this.
pub fn revealed(text: &str) -> String {
    use base64::Engine as _;
    let mut out = text.to_owned();
    let mut layer = text.to_owned();
    for _ in 0..3 {
        let decoded: Vec<String> = layer
            .split(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=')))
            .filter(|run| run.len() >= 4)
            .filter_map(|run| base64::engine::general_purpose::STANDARD.decode(run).ok())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .collect();
        layer = decoded.join("\n");
        out.push('\n');
        out.push_str(&layer);
    }
    out
}
