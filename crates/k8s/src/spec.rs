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
    /// The project's generated namespace (`ferry-<slug>-<id suffix>`),
    /// never a user-chosen name.
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
    /// The project namespace's quota, defaults and egress rules. Specs
    /// recorded before it existed read as the defaults.
    #[serde(default)]
    pub policy: ProjectPolicy,
}

/// Guard rails of one project namespace, so one tenant cannot starve the
/// cluster or reach the control plane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProjectPolicy {
    pub quota: ProjectQuota,
    /// Destinations tenant pods may not reach (besides their own project
    /// and DNS): the cloud metadata address, and by default the private
    /// ranges where the control plane and the Kubernetes API live.
    pub egress_deny_cidrs: Vec<String>,
}

impl Default for ProjectPolicy {
    fn default() -> Self {
        ProjectPolicy {
            quota: ProjectQuota::default(),
            egress_deny_cidrs: DEFAULT_EGRESS_DENY
                .iter()
                .map(|c| (*c).to_owned())
                .collect(),
        }
    }
}

/// What tenant pods cannot reach by default: link-local (cloud metadata at
/// 169.254.169.254 and fd00:ec2::254 is inside fc00::/7), RFC 1918 and CGNAT
/// ranges (node, pod and service networks: the control plane, the API
/// server), and IPv6 unique-local/link-local.
pub const DEFAULT_EGRESS_DENY: [&str; 8] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "127.0.0.0/8",
    "fc00::/7",
    "fe80::/10",
];

/// A project's ResourceQuota (totals) and LimitRange (per-container
/// defaults, applied to containers that set none), and the resources of
/// the organization's image builds (not rendered here: builds run in the
/// builds namespace). Quantities are Kubernetes quantities, validated by
/// the api. Missing fields read as the defaults (`serde(default)`), so
/// specs and settings stored before a field existed still parse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProjectQuota {
    /// Total CPU requests and limits of the namespace.
    pub cpu: String,
    /// Total memory requests and limits.
    pub memory: String,
    /// Total requested PVC storage.
    pub storage: String,
    pub pods: i32,
    pub services: i32,
    pub persistent_volume_claims: i32,
    pub secrets: i32,
    pub config_maps: i32,
    pub default_cpu_request: String,
    pub default_memory_request: String,
    pub default_cpu_limit: String,
    pub default_memory_limit: String,
    /// CPU limit of one image build (a Job in the builds namespace, so
    /// not part of the project's ResourceQuota or LimitRange).
    pub build_cpu: String,
    /// Memory limit of one image build.
    pub build_memory: String,
    /// Builds of the organization running at once.
    pub concurrent_builds: i32,
}

impl Default for ProjectQuota {
    fn default() -> Self {
        ProjectQuota {
            cpu: "8".into(),
            memory: "16Gi".into(),
            storage: "100Gi".into(),
            pods: 50,
            services: 50,
            persistent_volume_claims: 20,
            secrets: 100,
            config_maps: 50,
            default_cpu_request: "100m".into(),
            default_memory_request: "128Mi".into(),
            default_cpu_limit: "1".into(),
            default_memory_limit: "512Mi".into(),
            build_cpu: "2".into(),
            build_memory: "4Gi".into(),
            concurrent_builds: 2,
        }
    }
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
