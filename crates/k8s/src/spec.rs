//! What the api asks the cluster to run: plain data, no database types.
//!
//! The api builds a [`WorkloadSpec`] from its rows (service, ports, volumes,
//! merged variables, registry credentials); [`crate::render()`] turns it into
//! typed Kubernetes objects. Everything here is already validated by the api.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A value that must never be printed: `Debug` shows `***`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretValue(pub String);

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl SecretValue {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// One service's desired state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadSpec {
    pub organization_id: Uuid,
    pub project_id: Uuid,
    /// The project's slug: the namespace name (DNS-1123 label).
    pub namespace: String,
    pub service_id: Uuid,
    /// The service's name (DNS-1123 label): the name of its objects.
    pub name: String,
    /// The deployment this render belongs to (pod-template label, so the
    /// new rollout's pods can be told apart).
    pub deployment_id: Uuid,
    pub kind: WorkloadKind,
    pub image: String,
    /// Replaces the image's ENTRYPOINT when not empty (argv, never a shell).
    pub command: Vec<String>,
    /// Replaces the image's CMD when not empty.
    pub args: Vec<String>,
    pub replicas: i32,
    pub resources: Resources,
    pub health_check: Option<HealthCheck>,
    pub ports: Vec<PortSpec>,
    /// Final environment, already merged (variable groups, then service
    /// variables), sorted by key. Rendered into one Secret.
    pub env: Vec<EnvVar>,
    /// Project volumes this service mounts (one PVC each).
    pub volumes: Vec<VolumeSpec>,
    pub mounts: Vec<MountSpec>,
    /// Registry credentials for a private image (rendered as a
    /// `kubernetes.io/dockerconfigjson` Secret + `imagePullSecrets`).
    pub image_pull: Option<RegistryAuth>,
    /// Namespace the ferry-proxy runs in: the project's NetworkPolicy admits
    /// traffic from it (and from the project's own namespace).
    pub proxy_namespace: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkloadKind {
    /// A Deployment.
    Application,
    /// A StatefulSet with a `data` volume claim template mounted at
    /// `data_path`.
    Database {
        engine: DatabaseEngine,
        version: String,
        storage_gb: i32,
        data_path: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DatabaseEngine {
    Postgres,
    Mysql,
    Mongodb,
    Redis,
}

/// Kubernetes quantities as given by the user (`250m`, `512Mi`), already
/// validated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub cpu_request: Option<String>,
    pub cpu_limit: Option<String>,
    pub memory_request: Option<String>,
    pub memory_limit: Option<String>,
}

/// HTTP GET `path` on `port` when `path` is set, else a TCP check on `port`.
/// Rendered as readiness and liveness probes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    pub path: Option<String>,
    pub port: u16,
    pub interval_seconds: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Tcp,
    Udp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSpec {
    /// DNS-1123 label, at most 15 characters; defaults to `<proto>-<port>`.
    pub name: Option<String>,
    pub container_port: u16,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    pub key: String,
    pub value: SecretValue,
    /// Marked secret by the user: masked in redacted renders.
    pub secret: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessMode {
    ReadWriteOnce,
    ReadWriteMany,
    ReadOnlyMany,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSpec {
    /// The project volume's name; the PVC is named `vol-<name>`.
    pub name: String,
    pub size_gb: i32,
    pub storage_class: Option<String>,
    pub access_mode: AccessMode,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    /// A [`VolumeSpec::name`] of the same spec.
    pub volume: String,
    pub mount_path: String,
    pub sub_path: Option<String>,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryAuth {
    /// Registry host, e.g. `ghcr.io`.
    pub server: String,
    pub username: String,
    pub password: SecretValue,
}
