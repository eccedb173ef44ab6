//! [`WorkloadSpec`] → typed Kubernetes objects.
//!
//! One service renders to: its project's `Namespace` and default-deny
//! `NetworkPolicy`, an env `Secret` (the container reads it with `envFrom`,
//! so values never appear in the pod spec), an optional registry `Secret`,
//! one `PersistentVolumeClaim` per project volume, a ClusterIP `Service`
//! when it has ports, and a `Deployment` (application) or `StatefulSet`
//! (database).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment, StatefulSet,
    StatefulSetSpec, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvFromSource, HTTPGetAction, LimitRange,
    LimitRangeItem, LimitRangeSpec, LocalObjectReference, Namespace, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceQuota, ResourceQuotaSpec, ResourceRequirements, SeccompProfile,
    Secret, SecretEnvSource, SecurityContext, Service, ServicePort, ServiceSpec, TCPSocketAction,
    Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::spec::{
    AccessMode, ProjectPolicy, Protocol, RegistryAuth, Resources, WorkloadKind, WorkloadSpec,
};
use crate::validate;

/// Label keys ferry sets.
pub mod labels {
    pub const NAME: &str = "app.kubernetes.io/name";
    pub const INSTANCE: &str = "app.kubernetes.io/instance";
    pub const COMPONENT: &str = "app.kubernetes.io/component";
    pub const PART_OF: &str = "app.kubernetes.io/part-of";
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    pub const ORGANIZATION_ID: &str = "ferry.dev/organization-id";
    pub const PROJECT_ID: &str = "ferry.dev/project-id";
    pub const SERVICE_ID: &str = "ferry.dev/service-id";
    pub const DEPLOYMENT_ID: &str = "ferry.dev/deployment-id";
    /// On an image build's Job, pod and Secret (see [`crate::build`]).
    pub const BUILD_ID: &str = "ferry.dev/build-id";
    /// On project volume claims (shared by services, never service-labelled).
    pub const VOLUME: &str = "ferry.dev/volume";
    /// Pod-template annotation bumped by [`crate::Cluster::restart`].
    pub const RESTARTED_AT: &str = "ferry.dev/restarted-at";
    /// Well-known label the API server puts on every namespace.
    pub const NAMESPACE_NAME: &str = "kubernetes.io/metadata.name";
    /// Value of [`MANAGED_BY`].
    pub const FERRY: &str = "ferry";
}

/// Name of the project's default-deny NetworkPolicy.
pub const NETWORK_POLICY_NAME: &str = "ferry-default-deny";
/// Name of the project's ResourceQuota.
pub const QUOTA_NAME: &str = "ferry-quota";
/// Name of the project's LimitRange.
pub const LIMIT_RANGE_NAME: &str = "ferry-limits";
/// Name of the single container in every pod.
pub const CONTAINER_NAME: &str = "app";
/// Name of a database StatefulSet's volume claim template.
pub const DATA_VOLUME: &str = "data";
/// What redacted Secret values are replaced with.
pub const REDACTED: &str = "***";

/// Capabilities an official database image needs while its entrypoint
/// (running as root) initialises and chowns the data directory and then
/// drops to the database user (gosu/su-exec). Everything else is dropped.
pub const DATABASE_CAPABILITIES: [&str; 5] =
    ["CHOWN", "SETUID", "SETGID", "FOWNER", "DAC_OVERRIDE"];

/// Type of the image pull Secret.
pub const DOCKER_CONFIG_JSON: &str = "kubernetes.io/dockerconfigjson";

/// Whether to hide Secret values in [`Rendered::to_yaml`] / [`Rendered::to_json`].
///
/// The image pull Secret is redacted either way: registry credentials
/// belong to the organization, not to whoever may deploy one service, so
/// no text rendering ever carries them. The cluster gets the typed
/// objects ([`Rendered::registry_secret`]), never this text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redact {
    /// Replace every Secret `data`/`stringData` value with `***`: for
    /// viewers and for what is stored in the database.
    Secrets,
    /// Real environment values (a deployer's revealed plan); the image
    /// pull Secret is still redacted.
    None,
}

/// The kind of a service's workload object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkloadKindRef {
    Deployment,
    StatefulSet,
}

impl WorkloadKindRef {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKindRef::Deployment => "Deployment",
            WorkloadKindRef::StatefulSet => "StatefulSet",
        }
    }
}

impl fmt::Display for WorkloadKindRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The service's workload object.
#[derive(Clone, PartialEq)]
pub enum Workload {
    Deployment(Deployment),
    StatefulSet(StatefulSet),
}

impl Workload {
    pub fn kind(&self) -> WorkloadKindRef {
        match self {
            Workload::Deployment(_) => WorkloadKindRef::Deployment,
            Workload::StatefulSet(_) => WorkloadKindRef::StatefulSet,
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Workload::Deployment(d) => &d.metadata,
            Workload::StatefulSet(s) => &s.metadata,
        }
    }

    /// The pod template (both kinds have one).
    pub fn template(&self) -> &PodTemplateSpec {
        match self {
            Workload::Deployment(d) => d.spec.as_ref().map(|s| &s.template),
            Workload::StatefulSet(s) => s.spec.as_ref().map(|s| &s.template),
        }
        .unwrap_or(&EMPTY_TEMPLATE)
    }

    fn to_value(&self) -> Value {
        match self {
            Workload::Deployment(d) => to_value(d),
            Workload::StatefulSet(s) => to_value(s),
        }
    }
}

static EMPTY_TEMPLATE: PodTemplateSpec = PodTemplateSpec {
    metadata: None,
    spec: None,
};

/// Everything one service renders to, as typed objects.
#[derive(Clone, PartialEq)]
pub struct Rendered {
    pub namespace: Namespace,
    /// Ingress from the project and the proxy only; egress to DNS, the
    /// project and the internet only.
    pub network_policy: NetworkPolicy,
    pub resource_quota: ResourceQuota,
    pub limit_range: LimitRange,
    /// `<name>-env`: every environment variable.
    pub env_secret: Secret,
    /// `<name>-registry`: docker config for a private image.
    pub registry_secret: Option<Secret>,
    /// `vol-<volume>` per project volume.
    pub volume_claims: Vec<PersistentVolumeClaim>,
    /// ClusterIP Service, when the service has ports.
    pub service: Option<Service>,
    pub workload: Workload,
}

// Hand-written so secret values never reach a log line.
impl fmt::Debug for Rendered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rendered")
            .field("namespace", &self.namespace.metadata.name)
            .field("workload", &self.workload.kind())
            .field("name", &self.workload.metadata().name)
            .field("objects", &self.object_names())
            .finish()
    }
}

impl fmt::Debug for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            self.kind(),
            self.metadata().name.as_deref().unwrap_or("")
        )
    }
}

impl Rendered {
    /// The service's name (the workload's name).
    pub fn name(&self) -> &str {
        self.workload.metadata().name.as_deref().unwrap_or_default()
    }

    /// The namespace everything but the Namespace itself lives in.
    pub fn namespace_name(&self) -> &str {
        self.namespace.metadata.name.as_deref().unwrap_or_default()
    }

    /// `Kind/name` of every object in apply order.
    pub fn object_names(&self) -> Vec<String> {
        self.values()
            .iter()
            .map(|v| {
                format!(
                    "{}/{}",
                    v["kind"].as_str().unwrap_or_default(),
                    v["metadata"]["name"].as_str().unwrap_or_default()
                )
            })
            .collect()
    }

    /// Every object as JSON in apply order: Namespace, NetworkPolicy,
    /// ResourceQuota, LimitRange, Secrets, PVCs, Service, workload.
    fn values(&self) -> Vec<Value> {
        let mut out = vec![
            to_value(&self.namespace),
            to_value(&self.network_policy),
            to_value(&self.resource_quota),
            to_value(&self.limit_range),
        ];
        out.push(to_value(&self.env_secret));
        if let Some(s) = &self.registry_secret {
            out.push(to_value(s));
        }
        out.extend(self.volume_claims.iter().map(to_value));
        if let Some(s) = &self.service {
            out.push(to_value(s));
        }
        out.push(self.workload.to_value());
        out
    }

    /// Multi-document YAML in apply order.
    pub fn to_yaml(&self, redact: Redact) -> Result<String> {
        let mut out = String::new();
        for v in self.redacted_values(redact) {
            out.push_str("---\n");
            out.push_str(&serde_yaml_ng::to_string(&v)?);
        }
        Ok(out)
    }

    /// A JSON list of the objects in apply order (the artefact recorded on a
    /// deployment row).
    pub fn to_json(&self, redact: Redact) -> Value {
        Value::Array(self.redacted_values(redact))
    }

    fn redacted_values(&self, redact: Redact) -> Vec<Value> {
        let mut values = self.values();
        for value in &mut values {
            if redact == Redact::Secrets || is_pull_secret(value) {
                redact_secret(value);
            }
        }
        values
    }

    /// Parses what [`Rendered::to_json`] produced. Redacted values come
    /// back as the literal bytes `***`.
    pub fn from_json(value: Value) -> Result<Rendered> {
        let Value::Array(items) = value else {
            return Err(Error::Encoding("rendered json: expected a list".into()));
        };
        let mut namespace = None;
        let mut network_policy = None;
        let mut resource_quota = None;
        let mut limit_range = None;
        let mut secrets = Vec::new();
        let mut volume_claims = Vec::new();
        let mut service = None;
        let mut workload = None;
        for mut item in items {
            let kind = item["kind"].as_str().unwrap_or_default().to_owned();
            match kind.as_str() {
                "Namespace" => namespace = Some(serde_json::from_value(item)?),
                "NetworkPolicy" => network_policy = Some(serde_json::from_value(item)?),
                "ResourceQuota" => resource_quota = Some(serde_json::from_value(item)?),
                "LimitRange" => limit_range = Some(serde_json::from_value(item)?),
                "Secret" => {
                    unredact_secret(&mut item);
                    secrets.push(serde_json::from_value::<Secret>(item)?);
                }
                "PersistentVolumeClaim" => volume_claims.push(serde_json::from_value(item)?),
                "Service" => service = Some(serde_json::from_value(item)?),
                "Deployment" => {
                    workload = Some(Workload::Deployment(serde_json::from_value(item)?))
                }
                "StatefulSet" => {
                    workload = Some(Workload::StatefulSet(serde_json::from_value(item)?));
                }
                other => {
                    return Err(Error::Encoding(format!(
                        "rendered json: unexpected kind {other:?}"
                    )));
                }
            }
        }
        let missing = |what: &str| Error::Encoding(format!("rendered json: no {what}"));
        let (registry, env): (Vec<Secret>, Vec<Secret>) = secrets
            .into_iter()
            .partition(|s| s.type_.as_deref() == Some(DOCKER_CONFIG_JSON));
        Ok(Rendered {
            namespace: namespace.ok_or_else(|| missing("Namespace"))?,
            network_policy: network_policy.ok_or_else(|| missing("NetworkPolicy"))?,
            resource_quota: resource_quota.ok_or_else(|| missing("ResourceQuota"))?,
            limit_range: limit_range.ok_or_else(|| missing("LimitRange"))?,
            env_secret: env
                .into_iter()
                .next()
                .ok_or_else(|| missing("env Secret"))?,
            registry_secret: registry.into_iter().next(),
            volume_claims,
            service,
            workload: workload.ok_or_else(|| missing("workload"))?,
        })
    }
}

pub(crate) fn to_value<T: serde::Serialize>(obj: &T) -> Value {
    // k8s-openapi types always serialise (string keys, no non-finite floats).
    serde_json::to_value(obj).unwrap_or_default()
}

fn is_pull_secret(obj: &Value) -> bool {
    obj["kind"] == "Secret" && obj["type"] == DOCKER_CONFIG_JSON
}

fn redact_secret(obj: &mut Value) {
    if obj["kind"] != "Secret" {
        return;
    }
    for field in ["data", "stringData"] {
        if let Some(map) = obj.get_mut(field).and_then(Value::as_object_mut) {
            for v in map.values_mut() {
                *v = Value::String(REDACTED.into());
            }
        }
    }
}

fn unredact_secret(obj: &mut Value) {
    // `***` is not base64: store the literal bytes instead.
    if let Some(map) = obj.get_mut("data").and_then(Value::as_object_mut) {
        for v in map.values_mut() {
            if v == REDACTED {
                *v = Value::String(BASE64.encode(REDACTED));
            }
        }
    }
}

/// Unified diff between two renders (e.g. two [`Rendered::to_yaml`] outputs).
pub fn diff(old_yaml: &str, new_yaml: &str) -> String {
    similar::TextDiff::from_lines(old_yaml, new_yaml)
        .unified_diff()
        .context_radius(3)
        .header("previous", "new")
        .to_string()
}

/// Renders one service. Refuses specs Kubernetes would reject with
/// [`Error::Invalid`] naming the field.
pub fn render(spec: &WorkloadSpec) -> Result<Rendered> {
    validate(spec)?;
    let ports = port_names(spec)?;

    let project_labels = project_labels(spec);
    let labels = object_labels(spec);
    let selector = BTreeMap::from([(labels::SERVICE_ID.to_owned(), spec.service_id.to_string())]);
    let mut pod_labels = labels.clone();
    pod_labels.insert(labels::DEPLOYMENT_ID.into(), spec.deployment_id.to_string());

    let ns = spec.namespace.clone();
    let meta = |name: String| ObjectMeta {
        name: Some(name),
        namespace: Some(ns.clone()),
        labels: Some(labels.clone()),
        ..ObjectMeta::default()
    };

    let mut namespace_labels = project_labels.clone();
    namespace_labels.remove(labels::PART_OF);
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(spec.namespace.clone()),
            labels: Some(namespace_labels),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };

    let project_meta = |name: &str| ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(ns.clone()),
        labels: Some(project_labels.clone()),
        ..ObjectMeta::default()
    };
    let network_policy = network_policy(spec, project_meta(NETWORK_POLICY_NAME));
    let (resource_quota, limit_range) = quota(
        &spec.policy,
        project_meta(QUOTA_NAME),
        project_meta(LIMIT_RANGE_NAME),
    );

    let env_secret_name = format!("{}-env", spec.name);
    let env_secret = Secret {
        metadata: meta(env_secret_name.clone()),
        type_: Some("Opaque".into()),
        // `data`, not `stringData`: with server-side apply, keys removed from
        // `stringData` are never pruned from `data`.
        data: Some(
            spec.env
                .iter()
                .map(|e| {
                    (
                        e.key.clone(),
                        ByteString(e.value.expose().as_bytes().to_vec()),
                    )
                })
                .collect(),
        ),
        ..Secret::default()
    };

    let registry_secret_name = format!("{}-registry", spec.name);
    let registry_secret = spec.image_pull.as_ref().map(|auth| Secret {
        metadata: meta(registry_secret_name.clone()),
        type_: Some(DOCKER_CONFIG_JSON.into()),
        data: Some(BTreeMap::from([(
            ".dockerconfigjson".to_owned(),
            ByteString(docker_config_json(Some(auth))),
        )])),
        ..Secret::default()
    });

    let volume_claims: Vec<PersistentVolumeClaim> = spec
        .volumes
        .iter()
        .map(|v| PersistentVolumeClaim {
            // Project volumes can be shared by several services: project
            // labels only, so deleting one service never deletes them.
            metadata: ObjectMeta {
                name: Some(claim_name(&v.name)),
                namespace: Some(ns.clone()),
                labels: Some(volume_labels(spec, &v.name)),
                ..ObjectMeta::default()
            },
            spec: Some(claim_spec(
                v.size_gb,
                v.access_mode,
                v.storage_class.clone(),
            )),
            ..PersistentVolumeClaim::default()
        })
        .collect();

    let service = (!spec.ports.is_empty()).then(|| Service {
        metadata: meta(spec.name.clone()),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector.clone()),
            ports: Some(
                spec.ports
                    .iter()
                    .zip(&ports)
                    .map(|(p, name)| ServicePort {
                        name: Some(name.clone()),
                        port: i32::from(p.container_port),
                        protocol: Some(protocol(p.protocol).into()),
                        target_port: Some(IntOrString::String(name.clone())),
                        ..ServicePort::default()
                    })
                    .collect(),
            ),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    });

    // Pod: volumes point at the PVCs; mounts reference pod volumes.
    let mut volume_mounts: Vec<VolumeMount> = spec
        .mounts
        .iter()
        .map(|m| VolumeMount {
            name: claim_name(&m.volume),
            mount_path: m.mount_path.clone(),
            sub_path: m.sub_path.clone(),
            read_only: m.read_only.then_some(true),
            ..VolumeMount::default()
        })
        .collect();
    if let WorkloadKind::Database { data_path, .. } = &spec.kind {
        volume_mounts.push(VolumeMount {
            name: DATA_VOLUME.into(),
            mount_path: data_path.clone(),
            ..VolumeMount::default()
        });
    }
    let volumes: Vec<Volume> = spec
        .volumes
        .iter()
        .map(|v| Volume {
            name: claim_name(&v.name),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim_name(&v.name),
                read_only: None,
            }),
            ..Volume::default()
        })
        .collect();

    let is_database = matches!(spec.kind, WorkloadKind::Database { .. });
    let container = Container {
        name: CONTAINER_NAME.into(),
        image: Some(spec.image.clone()),
        command: non_empty(&spec.command),
        args: non_empty(&spec.args),
        ports: non_empty(
            &spec
                .ports
                .iter()
                .zip(&ports)
                .map(|(p, name)| ContainerPort {
                    name: Some(name.clone()),
                    container_port: i32::from(p.container_port),
                    protocol: Some(protocol(p.protocol).into()),
                    ..ContainerPort::default()
                })
                .collect::<Vec<_>>(),
        ),
        env_from: Some(vec![EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: env_secret_name,
                optional: None,
            }),
            ..EnvFromSource::default()
        }]),
        resources: resource_requirements(&spec.resources),
        volume_mounts: non_empty(&volume_mounts),
        readiness_probe: probe(spec, 3),
        // More patient than readiness: a slow request is not a dead process.
        liveness_probe: probe(spec, 6),
        security_context: Some(container_security_context(is_database)),
        ..Container::default()
    };

    let template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![container],
            volumes: non_empty(&volumes),
            image_pull_secrets: registry_secret.as_ref().map(|_| {
                vec![LocalObjectReference {
                    name: registry_secret_name,
                }]
            }),
            automount_service_account_token: Some(false),
            // Service links would put other services' addresses in the env.
            enable_service_links: Some(false),
            // runAsNonRoot is deliberately not forced: official database
            // images start as root and drop privileges themselves.
            security_context: Some(PodSecurityContext {
                seccomp_profile: Some(runtime_default()),
                ..PodSecurityContext::default()
            }),
            ..PodSpec::default()
        }),
    };
    let label_selector = LabelSelector {
        match_labels: Some(selector),
        ..LabelSelector::default()
    };

    let workload = match &spec.kind {
        WorkloadKind::Application => Workload::Deployment(Deployment {
            metadata: meta(spec.name.clone()),
            spec: Some(DeploymentSpec {
                replicas: Some(spec.replicas),
                revision_history_limit: Some(3),
                selector: label_selector,
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_unavailable: Some(IntOrString::Int(0)),
                        max_surge: Some(IntOrString::Int(1)),
                    }),
                }),
                template,
                ..DeploymentSpec::default()
            }),
            ..Deployment::default()
        }),
        WorkloadKind::Database { storage_gb, .. } => Workload::StatefulSet(StatefulSet {
            metadata: meta(spec.name.clone()),
            spec: Some(StatefulSetSpec {
                replicas: Some(spec.replicas),
                revision_history_limit: Some(3),
                selector: label_selector,
                service_name: Some(spec.name.clone()),
                update_strategy: Some(StatefulSetUpdateStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: None,
                }),
                template,
                // Labelled like everything else so the created PVCs carry
                // the service id (delete_service finds them).
                volume_claim_templates: Some(vec![PersistentVolumeClaim {
                    metadata: ObjectMeta {
                        name: Some(DATA_VOLUME.into()),
                        labels: Some(labels.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(claim_spec(*storage_gb, AccessMode::ReadWriteOnce, None)),
                    ..PersistentVolumeClaim::default()
                }]),
                ..StatefulSetSpec::default()
            }),
            ..StatefulSet::default()
        }),
    };

    Ok(Rendered {
        namespace,
        network_policy,
        resource_quota,
        limit_range,
        env_secret,
        registry_secret,
        volume_claims,
        service,
        workload,
    })
}

/// Ingress: the project's own pods and the ferry-proxy. Egress: DNS
/// (port 53 anywhere, so node-local caches work), the project's own pods,
/// and every address outside `policy.egress_deny_cidrs` (by default the
/// private and link-local ranges: the control plane, the Kubernetes API,
/// other tenants' pods, cloud metadata).
fn network_policy(spec: &WorkloadSpec, metadata: ObjectMeta) -> NetworkPolicy {
    let same_project = NetworkPolicyPeer {
        pod_selector: Some(LabelSelector::default()),
        ..NetworkPolicyPeer::default()
    };
    let proxy = NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                labels::NAMESPACE_NAME.to_owned(),
                spec.proxy_namespace.clone(),
            )])),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    };
    let dns = dns_ports();
    let (v6, v4): (Vec<String>, Vec<String>) = spec
        .policy
        .egress_deny_cidrs
        .iter()
        .cloned()
        .partition(|c| validate::cidr_is_v6(c) == Some(true));
    NetworkPolicy {
        metadata,
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector::default()),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![same_project.clone(), proxy]),
                ..NetworkPolicyIngressRule::default()
            }]),
            egress: Some(vec![
                NetworkPolicyEgressRule {
                    ports: Some(dns),
                    to: None,
                },
                NetworkPolicyEgressRule {
                    ports: None,
                    to: Some(vec![same_project]),
                },
                NetworkPolicyEgressRule {
                    ports: None,
                    to: Some(vec![ip_block("0.0.0.0/0", &v4), ip_block("::/0", &v6)]),
                },
            ]),
        }),
    }
}

/// DNS, UDP and TCP port 53.
pub(crate) fn dns_ports() -> Vec<NetworkPolicyPort> {
    ["UDP", "TCP"]
        .into_iter()
        .map(|protocol| NetworkPolicyPort {
            protocol: Some(protocol.into()),
            port: Some(IntOrString::Int(53)),
            ..NetworkPolicyPort::default()
        })
        .collect()
}

/// A NetworkPolicy peer: `cidr` minus `except`.
pub(crate) fn ip_block(cidr: &str, except: &[String]) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        ip_block: Some(IPBlock {
            cidr: cidr.to_owned(),
            except: non_empty(except),
        }),
        ..NetworkPolicyPeer::default()
    }
}

/// The project's ResourceQuota (totals, no LoadBalancer or NodePort
/// Services) and LimitRange (defaults for containers that set no
/// resources: with a quota on CPU and memory, Kubernetes refuses pods
/// without them).
fn quota(
    policy: &ProjectPolicy,
    quota_meta: ObjectMeta,
    limits_meta: ObjectMeta,
) -> (ResourceQuota, LimitRange) {
    let q = &policy.quota;
    let quantity = |v: &str| Quantity(v.to_owned());
    let count = |n: i32| Quantity(n.to_string());
    let hard = BTreeMap::from([
        ("requests.cpu".to_owned(), quantity(&q.cpu)),
        ("limits.cpu".to_owned(), quantity(&q.cpu)),
        ("requests.memory".to_owned(), quantity(&q.memory)),
        ("limits.memory".to_owned(), quantity(&q.memory)),
        ("requests.storage".to_owned(), quantity(&q.storage)),
        ("pods".to_owned(), count(q.pods)),
        ("services".to_owned(), count(q.services)),
        ("services.loadbalancers".to_owned(), count(0)),
        ("services.nodeports".to_owned(), count(0)),
        (
            "persistentvolumeclaims".to_owned(),
            count(q.persistent_volume_claims),
        ),
        ("secrets".to_owned(), count(q.secrets)),
        ("configmaps".to_owned(), count(q.config_maps)),
    ]);
    let resource_quota = ResourceQuota {
        metadata: quota_meta,
        spec: Some(ResourceQuotaSpec {
            hard: Some(hard),
            ..ResourceQuotaSpec::default()
        }),
        ..ResourceQuota::default()
    };
    let pair = |cpu: &str, memory: &str| {
        Some(BTreeMap::from([
            ("cpu".to_owned(), quantity(cpu)),
            ("memory".to_owned(), quantity(memory)),
        ]))
    };
    let limit_range = LimitRange {
        metadata: limits_meta,
        spec: Some(LimitRangeSpec {
            limits: vec![
                LimitRangeItem {
                    type_: "Container".into(),
                    default: pair(&q.default_cpu_limit, &q.default_memory_limit),
                    default_request: pair(&q.default_cpu_request, &q.default_memory_request),
                    // No single container may ask for more than the project has.
                    max: pair(&q.cpu, &q.memory),
                    ..LimitRangeItem::default()
                },
                LimitRangeItem {
                    type_: "PersistentVolumeClaim".into(),
                    max: Some(BTreeMap::from([(
                        "storage".to_owned(),
                        quantity(&q.storage),
                    )])),
                    ..LimitRangeItem::default()
                },
            ],
        }),
    };
    (resource_quota, limit_range)
}

/// PVC (and pod volume) name of a project volume.
pub fn claim_name(volume: &str) -> String {
    format!("vol-{volume}")
}

/// A docker `config.json` with the credentials of one registry (or none):
/// the image pull Secret's `.dockerconfigjson` and a build's push config.
pub(crate) fn docker_config_json(auth: Option<&RegistryAuth>) -> Vec<u8> {
    let auths = match auth {
        Some(auth) => serde_json::json!({ auth.server.clone(): {
            "username": auth.username,
            "password": auth.password.expose(),
            "auth": BASE64.encode(format!("{}:{}", auth.username, auth.password.expose())),
        }}),
        None => serde_json::json!({}),
    };
    serde_json::json!({ "auths": auths })
        .to_string()
        .into_bytes()
}

fn project_labels(spec: &WorkloadSpec) -> BTreeMap<String, String> {
    ownership_labels(spec.organization_id, spec.project_id, &spec.namespace)
}

/// The labels every project-owned object carries: managed by Ferry, part
/// of `part_of`, and the organization and project ids the ownership checks
/// of [`crate::Cluster`] compare.
pub(crate) fn ownership_labels(
    organization_id: Uuid,
    project_id: Uuid,
    part_of: &str,
) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::MANAGED_BY.to_owned(), labels::FERRY.to_owned()),
        (labels::PART_OF.to_owned(), part_of.to_owned()),
        (
            labels::ORGANIZATION_ID.to_owned(),
            organization_id.to_string(),
        ),
        (labels::PROJECT_ID.to_owned(), project_id.to_string()),
    ])
}

fn volume_labels(spec: &WorkloadSpec, volume: &str) -> BTreeMap<String, String> {
    let mut l = project_labels(spec);
    l.insert(labels::VOLUME.to_owned(), volume.to_owned());
    l
}

fn object_labels(spec: &WorkloadSpec) -> BTreeMap<String, String> {
    let component = match spec.kind {
        WorkloadKind::Application => "application",
        WorkloadKind::Database { .. } => "database",
    };
    let mut l = project_labels(spec);
    l.extend([
        (labels::NAME.to_owned(), spec.name.clone()),
        (labels::INSTANCE.to_owned(), spec.name.clone()),
        (labels::COMPONENT.to_owned(), component.to_owned()),
        (labels::SERVICE_ID.to_owned(), spec.service_id.to_string()),
    ]);
    l
}

fn protocol(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
    }
}

pub(crate) fn non_empty<T: Clone>(items: &[T]) -> Option<Vec<T>> {
    (!items.is_empty()).then(|| items.to_vec())
}

fn claim_spec(
    size_gb: i32,
    mode: AccessMode,
    storage_class: Option<String>,
) -> PersistentVolumeClaimSpec {
    let mode = match mode {
        AccessMode::ReadWriteOnce => "ReadWriteOnce",
        AccessMode::ReadWriteMany => "ReadWriteMany",
        AccessMode::ReadOnlyMany => "ReadOnlyMany",
    };
    PersistentVolumeClaimSpec {
        access_modes: Some(vec![mode.into()]),
        storage_class_name: storage_class,
        resources: Some(VolumeResourceRequirements {
            requests: Some(BTreeMap::from([(
                "storage".to_owned(),
                Quantity(format!("{size_gb}Gi")),
            )])),
            limits: None,
        }),
        ..PersistentVolumeClaimSpec::default()
    }
}

pub(crate) fn resource_requirements(r: &Resources) -> Option<ResourceRequirements> {
    let map = |cpu: &Option<String>, mem: &Option<String>| {
        let m: BTreeMap<String, Quantity> = [("cpu", cpu), ("memory", mem)]
            .into_iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| (k.to_owned(), Quantity(v.clone()))))
            .collect();
        (!m.is_empty()).then_some(m)
    };
    let requests = map(&r.cpu_request, &r.memory_request);
    let limits = map(&r.cpu_limit, &r.memory_limit);
    (requests.is_some() || limits.is_some()).then(|| ResourceRequirements {
        requests,
        limits,
        ..ResourceRequirements::default()
    })
}

fn probe(spec: &WorkloadSpec, failure_threshold: i32) -> Option<Probe> {
    let hc = spec.health_check.as_ref()?;
    let port = IntOrString::Int(i32::from(hc.port));
    let (http_get, tcp_socket) = match &hc.path {
        Some(path) => (
            Some(HTTPGetAction {
                path: Some(path.clone()),
                port,
                ..HTTPGetAction::default()
            }),
            None,
        ),
        None => (None, Some(TCPSocketAction { port, host: None })),
    };
    Some(Probe {
        http_get,
        tcp_socket,
        period_seconds: Some(hc.interval_seconds),
        timeout_seconds: Some(hc.interval_seconds.clamp(1, 5)),
        failure_threshold: Some(failure_threshold),
        ..Probe::default()
    })
}

pub(crate) fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        localhost_profile: None,
    }
}

pub(crate) fn container_security_context(is_database: bool) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: is_database.then(|| {
                DATABASE_CAPABILITIES
                    .iter()
                    .map(|c| (*c).to_owned())
                    .collect()
            }),
        }),
        seccomp_profile: Some(runtime_default()),
        ..SecurityContext::default()
    }
}

/// Port names, defaulting to `<proto>-<port>`; refuses duplicates.
fn port_names(spec: &WorkloadSpec) -> Result<Vec<String>> {
    let mut seen = BTreeSet::new();
    let mut seen_ports = BTreeSet::new();
    let mut out = Vec::with_capacity(spec.ports.len());
    for (i, p) in spec.ports.iter().enumerate() {
        let field = format!("ports[{i}].name");
        let name = match &p.name {
            Some(n) => n.clone(),
            None => format!(
                "{}-{}",
                protocol(p.protocol).to_ascii_lowercase(),
                p.container_port
            ),
        };
        check_port_name(&field, &name)?;
        if !seen.insert(name.clone()) {
            return Err(Error::invalid(
                field,
                format!("duplicate port name {name:?}"),
            ));
        }
        if p.container_port == 0 {
            return Err(Error::invalid(
                format!("ports[{i}].container_port"),
                "must be 1-65535",
            ));
        }
        if !seen_ports.insert((p.container_port, protocol(p.protocol))) {
            return Err(Error::invalid(
                format!("ports[{i}].container_port"),
                format!("duplicate port {}", p.container_port),
            ));
        }
        out.push(name);
    }
    Ok(out)
}

fn validate(spec: &WorkloadSpec) -> Result<()> {
    check_label("namespace", &spec.namespace)?;
    check_label("proxy_namespace", &spec.proxy_namespace)?;
    check_label("name", &spec.name)?;
    // The name is also a Service name: DNS-1035 (starts with a letter), and
    // room for the `-registry` suffix.
    if !spec.name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(Error::invalid("name", "must start with a letter"));
    }
    if spec.image.trim().is_empty() {
        return Err(Error::invalid("image", "must not be empty"));
    }
    if spec.image.chars().any(char::is_whitespace) {
        return Err(Error::invalid("image", "must not contain whitespace"));
    }
    if spec.replicas < 0 {
        return Err(Error::invalid("replicas", "must not be negative"));
    }
    for (i, e) in spec.env.iter().enumerate() {
        let valid = !e.key.is_empty()
            && e.key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            return Err(Error::invalid(
                format!("env[{i}].key"),
                "must consist of letters, digits, '-', '_' or '.'",
            ));
        }
    }
    if let Some(hc) = &spec.health_check {
        if hc.interval_seconds < 1 {
            return Err(Error::invalid(
                "health_check.interval_seconds",
                "must be at least 1",
            ));
        }
        if hc.port == 0 {
            return Err(Error::invalid("health_check.port", "must be 1-65535"));
        }
        if let Some(path) = &hc.path
            && !path.starts_with('/')
        {
            return Err(Error::invalid("health_check.path", "must start with '/'"));
        }
    }
    let mut volumes = BTreeSet::new();
    for (i, v) in spec.volumes.iter().enumerate() {
        check_label(&format!("volumes[{i}].name"), &claim_name(&v.name))?;
        if !volumes.insert(v.name.as_str()) {
            return Err(Error::invalid(
                format!("volumes[{i}].name"),
                "duplicate volume",
            ));
        }
        if v.size_gb < 1 {
            return Err(Error::invalid(
                format!("volumes[{i}].size_gb"),
                "must be at least 1",
            ));
        }
    }
    let mut paths = BTreeSet::new();
    if let WorkloadKind::Database {
        storage_gb,
        data_path,
        ..
    } = &spec.kind
    {
        if *storage_gb < 1 {
            return Err(Error::invalid("kind.storage_gb", "must be at least 1"));
        }
        check_path("kind.data_path", data_path)?;
        paths.insert(data_path.as_str());
    }
    for (i, m) in spec.mounts.iter().enumerate() {
        if !volumes.contains(m.volume.as_str()) {
            return Err(Error::invalid(
                format!("mounts[{i}].volume"),
                format!("unknown volume {:?}", m.volume),
            ));
        }
        check_path(&format!("mounts[{i}].mount_path"), &m.mount_path)?;
        if !paths.insert(m.mount_path.as_str()) {
            return Err(Error::invalid(
                format!("mounts[{i}].mount_path"),
                "mounted twice",
            ));
        }
        if let Some(sub) = &m.sub_path
            && (sub.starts_with('/') || sub.split('/').any(|s| s == ".."))
        {
            return Err(Error::invalid(
                format!("mounts[{i}].sub_path"),
                "must be relative and must not contain '..'",
            ));
        }
    }
    if let Some(auth) = &spec.image_pull
        && auth.server.trim().is_empty()
    {
        return Err(Error::invalid("image_pull.server", "must not be empty"));
    }
    validate_policy(&spec.policy)
}

fn validate_policy(policy: &ProjectPolicy) -> Result<()> {
    let q = &policy.quota;
    for (field, value) in [
        ("policy.quota.cpu", &q.cpu),
        ("policy.quota.default_cpu_request", &q.default_cpu_request),
        ("policy.quota.default_cpu_limit", &q.default_cpu_limit),
    ] {
        if !validate::is_cpu(value) {
            return Err(Error::invalid(
                field,
                "must be a CPU quantity like 250m or 4",
            ));
        }
    }
    for (field, value) in [
        ("policy.quota.memory", &q.memory),
        ("policy.quota.storage", &q.storage),
        (
            "policy.quota.default_memory_request",
            &q.default_memory_request,
        ),
        ("policy.quota.default_memory_limit", &q.default_memory_limit),
    ] {
        if !validate::is_memory(value) {
            return Err(Error::invalid(
                field,
                "must be a quantity like 512Mi or 100Gi",
            ));
        }
    }
    for (field, value) in [
        ("policy.quota.pods", q.pods),
        ("policy.quota.services", q.services),
        (
            "policy.quota.persistent_volume_claims",
            q.persistent_volume_claims,
        ),
        ("policy.quota.secrets", q.secrets),
        ("policy.quota.config_maps", q.config_maps),
    ] {
        if value < 0 {
            return Err(Error::invalid(field, "must not be negative"));
        }
    }
    for (i, cidr) in policy.egress_deny_cidrs.iter().enumerate() {
        if validate::cidr_is_v6(cidr).is_none() {
            return Err(Error::invalid(
                format!("policy.egress_deny_cidrs[{i}]"),
                format!("{cidr:?} is not a CIDR like 10.0.0.0/8"),
            ));
        }
    }
    Ok(())
}

fn check_path(field: &str, path: &str) -> Result<()> {
    if !path.starts_with('/') {
        return Err(Error::invalid(field, "must be an absolute path"));
    }
    if path.split('/').any(|s| s == "..") {
        return Err(Error::invalid(field, "must not contain '..'"));
    }
    Ok(())
}

/// RFC 1123 label: at most 63 of `[a-z0-9-]`, alphanumeric at both ends.
pub(crate) fn check_label(field: &str, value: &str) -> Result<()> {
    if validate::is_label(value, 63) {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!(
                "{value:?} is not a DNS-1123 label (lowercase letters, digits, '-', at most 63)"
            ),
        ))
    }
}

/// IANA service name: at most 15 of `[a-z0-9-]`, at least one letter, no
/// leading, trailing or double `-`.
fn check_port_name(field: &str, value: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= 15
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && value.bytes().any(|b| b.is_ascii_lowercase())
        && !value.starts_with('-')
        && !value.ends_with('-')
        && !value.contains("--");
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!(
                "{value:?} is not a valid port name (at most 15 lowercase letters, digits, '-')"
            ),
        ))
    }
}
