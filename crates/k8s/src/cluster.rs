//! Talking to a cluster: server-side apply, rollout watch, scale, restart,
//! delete.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::path::PathBuf;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    LimitRange, Namespace, PersistentVolumeClaim, Pod, ResourceQuota, Secret, Service,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::render::{Rendered, Workload, WorkloadKindRef, labels};

/// Field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "ferry";
/// Field manager of [`Cluster::restart`]'s merge patch: a separate owner, so
/// the next apply (which does not carry the annotation) keeps it.
pub const RESTART_FIELD_MANAGER: &str = "ferry-restart";
/// Field manager of [`Cluster::scale`].
pub const SCALE_FIELD_MANAGER: &str = "ferry-scale";

/// Container waiting reasons that fail a rollout. `ErrImagePull` only
/// counts once seen on two pod checks (registries hiccup).
const FATAL_WAITING: [&str; 5] = [
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CrashLoopBackOff",
];

/// A connection to one cluster.
///
/// # RBAC
///
/// The minimal rules the identity behind the client needs (see also
/// `crates/k8s/RBAC.md`). Namespaces are cluster-scoped, so this is a
/// ClusterRole:
///
/// | API group | Resources | Verbs |
/// |---|---|---|
/// | `""` | `namespaces` | get, create, patch, delete |
/// | `""` | `secrets`, `services`, `persistentvolumeclaims` | get, list, create, patch, delete |
/// | `""` | `pods` | list, watch |
/// | `""` | `pods/log` | get |
/// | `""` | `events` | list |
/// | `apps` | `deployments`, `statefulsets` | get, list, watch, create, patch, delete |
/// | `apps` | `deployments/scale`, `statefulsets/scale` | patch |
/// | `""` | `resourcequotas`, `limitranges` | get, create, patch |
/// | `networking.k8s.io` | `networkpolicies` | get, create, patch |
///
/// Server-side apply is a PATCH; when it creates the object the API server
/// also checks `create`.
///
/// # Ownership
///
/// Before any apply, scale, restart or delete by name, the existing object
/// (if any) must carry `app.kubernetes.io/managed-by=ferry` and the same
/// `ferry.dev/project-id` (plus `service-id` / `volume` where the object
/// has them) as what Ferry would write; otherwise [`Error::NotOwned`].
/// Deletes by label selector only ever see owned objects. Applies are
/// forced only after that check: the remaining conflicts are with Ferry's
/// own other field managers (`ferry-scale`, `ferry-restart`) or with a
/// hand edit of a Ferry-owned object, where the desired state wins.
#[derive(Clone)]
pub struct Cluster {
    client: kube::Client,
    pod_check_interval: Duration,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("default_namespace", &self.client.default_namespace())
            .field("pod_check_interval", &self.pod_check_interval)
            .finish()
    }
}

/// What [`Cluster::apply`] did to the workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The workload's `metadata.generation` after the apply: the rollout is
    /// done once the controller has observed it.
    pub generation: i64,
    pub kind: WorkloadKindRef,
    pub name: String,
    pub namespace: String,
}

/// How a rollout ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutOutcome {
    Succeeded,
    Failed { reason: String },
    TimedOut,
}

/// Progress reported while waiting for a rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutEvent {
    /// The workload's replica counts changed.
    Progress {
        updated: i32,
        ready: i32,
        available: i32,
        desired: i32,
    },
    /// A container of the new rollout's pods is waiting (pulling, backing
    /// off, ...). Reported once per pod, container and reason.
    PodWaiting {
        pod: String,
        reason: String,
        message: String,
    },
    /// Watching or listing failed; the wait goes on (retried with backoff).
    WatchError { message: String },
}

impl Cluster {
    pub fn new(client: kube::Client) -> Self {
        Cluster {
            client,
            pod_check_interval: Duration::from_secs(2),
        }
    }

    /// How often [`Cluster::wait_rollout`] lists the rollout's pods
    /// (default 2 s; tests use milliseconds).
    pub fn with_pod_check_interval(mut self, interval: Duration) -> Self {
        self.pod_check_interval = interval;
        self
    }

    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// A cluster from the environment: `KUBECONFIG`, `~/.kube/config` or
    /// the in-cluster service account. `None` when there is none of them,
    /// so the api can run in "planned" mode.
    pub async fn from_env() -> Result<Option<Cluster>> {
        let kubeconfig = std::env::var_os("KUBECONFIG").is_some_and(|v| !v.is_empty());
        let home_config = std::env::var_os("HOME")
            .map(|home| PathBuf::from(home).join(".kube").join("config"))
            .is_some_and(|p| p.is_file());
        let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
        if !(kubeconfig || home_config || in_cluster) {
            return Ok(None);
        }
        let config = kube::Config::infer()
            .await
            .map_err(|e| Error::Config(e.to_string()))?;
        let client = kube::Client::try_from(config)?;
        Ok(Some(Cluster::new(client)))
    }

    /// Server-side applies every object (field manager `ferry`, forced once
    /// ownership is checked), in order: Namespace, NetworkPolicy,
    /// ResourceQuota, LimitRange, Secrets, PVCs, Service, workload.
    pub async fn apply(&self, rendered: &Rendered) -> Result<Applied> {
        let ns = rendered.namespace_name();
        self.apply_one(
            Api::<Namespace>::all(self.client.clone()),
            &rendered.namespace,
        )
        .await?;
        self.apply_one(self.api::<NetworkPolicy>(ns), &rendered.network_policy)
            .await?;
        self.apply_one(self.api::<ResourceQuota>(ns), &rendered.resource_quota)
            .await?;
        self.apply_one(self.api::<LimitRange>(ns), &rendered.limit_range)
            .await?;
        self.apply_one(self.api::<Secret>(ns), &rendered.env_secret)
            .await?;
        if let Some(secret) = &rendered.registry_secret {
            self.apply_one(self.api::<Secret>(ns), secret).await?;
        }
        for pvc in &rendered.volume_claims {
            self.apply_one(self.api::<PersistentVolumeClaim>(ns), pvc)
                .await?;
        }
        if let Some(service) = &rendered.service {
            self.apply_one(self.api::<Service>(ns), service).await?;
        }
        let meta = match &rendered.workload {
            Workload::Deployment(d) => {
                self.apply_one(self.api::<Deployment>(ns), d)
                    .await?
                    .metadata
            }
            Workload::StatefulSet(s) => {
                self.apply_one(self.api::<StatefulSet>(ns), s)
                    .await?
                    .metadata
            }
        };
        self.prune(rendered).await?;
        let name = meta.name.unwrap_or_default();
        let generation = meta.generation.unwrap_or_else(|| {
            tracing::warn!(%name, "applied workload has no metadata.generation");
            0
        });
        tracing::info!(namespace = ns, %name, generation, kind = %rendered.workload.kind(), "applied");
        Ok(Applied {
            generation,
            kind: rendered.workload.kind(),
            name,
            namespace: ns.to_owned(),
        })
    }

    /// Deletes the Services and Secrets of this service that the new
    /// render no longer has (its ports were all removed, its private
    /// registry unset). Claims are never pruned: they hold data and go with
    /// DeleteVolume or DeleteService only.
    async fn prune(&self, rendered: &Rendered) -> Result<()> {
        let ns = rendered.namespace_name();
        let Some(service_id) = rendered
            .workload
            .metadata()
            .labels
            .as_ref()
            .and_then(|l| l.get(labels::SERVICE_ID))
        else {
            return Ok(());
        };
        let selector = format!(
            "{}={},{}={service_id}",
            labels::MANAGED_BY,
            labels::FERRY,
            labels::SERVICE_ID
        );
        let keep_service = rendered.service.as_ref().map(|s| s.name_any());
        let keep_secrets = [
            Some(rendered.env_secret.name_any()),
            rendered.registry_secret.as_ref().map(|s| s.name_any()),
        ];
        let mut pruned = Vec::new();
        self.delete_labelled_except(
            self.api::<Service>(ns),
            &selector,
            &[keep_service],
            &mut pruned,
        )
        .await?;
        self.delete_labelled_except(
            self.api::<Secret>(ns),
            &selector,
            &keep_secrets,
            &mut pruned,
        )
        .await?;
        if !pruned.is_empty() {
            tracing::info!(
                namespace = ns,
                ?pruned,
                "pruned objects the service no longer has"
            );
        }
        Ok(())
    }

    pub(crate) fn api<K>(&self, namespace: &str) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), namespace)
    }

    pub(crate) async fn apply_one<K>(&self, api: Api<K>, obj: &K) -> Result<K>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug,
    {
        let name = obj.meta().name.clone().unwrap_or_default();
        let wanted = ownership(obj.meta().labels.as_ref());
        self.ensure_owned(&api, &name, &wanted).await?;
        let params = PatchParams::apply(FIELD_MANAGER).force();
        Ok(api.patch(&name, &params, &Patch::Apply(obj)).await?)
    }

    /// Refuses with [`Error::NotOwned`] when `name` exists without the
    /// `wanted` labels; an absent object is fine (Ferry creates it).
    pub(crate) async fn ensure_owned<K>(
        &self,
        api: &Api<K>,
        name: &str,
        wanted: &[(&'static str, String)],
    ) -> Result<bool>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
    {
        let Some(existing) = api.get_metadata_opt(name).await? else {
            return Ok(false);
        };
        check_owned(K::kind(&()).as_ref(), &existing.metadata, wanted)?;
        Ok(true)
    }

    /// Waits until the applied workload has rolled out, a pod of this
    /// deployment (label `ferry.dev/deployment-id`) fails in a way that
    /// will not heal by itself, or `timeout` passes. The workload status
    /// comes from a watch; the pods are listed every pod-check interval.
    pub async fn wait_rollout(
        &self,
        applied: &Applied,
        deployment_id: Uuid,
        timeout: Duration,
        mut events: impl FnMut(RolloutEvent),
    ) -> Result<RolloutOutcome> {
        match tokio::time::timeout(
            timeout,
            self.watch_rollout(applied, deployment_id, &mut events),
        )
        .await
        {
            Ok(outcome) => outcome,
            Err(_elapsed) => Ok(RolloutOutcome::TimedOut),
        }
    }

    async fn watch_rollout(
        &self,
        applied: &Applied,
        deployment_id: Uuid,
        events: &mut impl FnMut(RolloutEvent),
    ) -> Result<RolloutOutcome> {
        let config = watcher::Config::default().fields(&format!("metadata.name={}", applied.name));
        let ns = applied.namespace.as_str();
        let mut states: BoxStream<'static, Result<Option<WorkloadState>, watcher::Error>> =
            match applied.kind {
                WorkloadKindRef::Deployment => watcher::watcher(self.api::<Deployment>(ns), config)
                    .default_backoff()
                    .map_ok(|ev| state_of(ev, WorkloadState::of_deployment))
                    .boxed(),
                WorkloadKindRef::StatefulSet => {
                    watcher::watcher(self.api::<StatefulSet>(ns), config)
                        .default_backoff()
                        .map_ok(|ev| state_of(ev, WorkloadState::of_stateful_set))
                        .boxed()
                }
            };
        let pods = self.api::<Pod>(ns);
        let pod_params =
            ListParams::default().labels(&format!("{}={deployment_id}", labels::DEPLOYMENT_ID));
        let mut pod_check = PodCheck::default();
        let mut tick = tokio::time::interval(self.pod_check_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_progress = None;
        loop {
            tokio::select! {
                item = states.next() => match item {
                    None => return Err(Error::Encoding("workload watch ended".into())),
                    Some(Err(e)) => events(RolloutEvent::WatchError { message: e.to_string() }),
                    Some(Ok(None)) => {}
                    Some(Ok(Some(state))) => {
                        let progress = state.progress();
                        if last_progress.as_ref() != Some(&progress) {
                            events(progress.clone());
                            last_progress = Some(progress);
                        }
                        if let Some(reason) = state.failure {
                            return Ok(RolloutOutcome::Failed { reason });
                        }
                        if state.is_done(applied.generation) {
                            return Ok(RolloutOutcome::Succeeded);
                        }
                    }
                },
                _ = tick.tick() => match pods.list(&pod_params).await {
                    Ok(list) => {
                        if let Some(reason) = pod_check.check(&list.items, events) {
                            return Ok(RolloutOutcome::Failed { reason });
                        }
                    }
                    Err(e) => events(RolloutEvent::WatchError { message: e.to_string() }),
                },
            }
        }
    }

    /// Sets the replica count through the `scale` subresource (a merge
    /// patch with its own field manager: an apply by `ferry` here would
    /// drop every other field `ferry` owns).
    pub async fn scale(
        &self,
        owner: &Owner,
        name: &str,
        kind: WorkloadKindRef,
        replicas: i32,
    ) -> Result<()> {
        let namespace = owner.namespace.as_str();
        self.ensure_workload_owned(owner, name, kind).await?;
        let patch = Patch::Merge(serde_json::json!({ "spec": { "replicas": replicas } }));
        let params = PatchParams {
            field_manager: Some(SCALE_FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        match kind {
            WorkloadKindRef::Deployment => {
                self.api::<Deployment>(namespace)
                    .patch_scale(name, &params, &patch)
                    .await?;
            }
            WorkloadKindRef::StatefulSet => {
                self.api::<StatefulSet>(namespace)
                    .patch_scale(name, &params, &patch)
                    .await?;
            }
        }
        Ok(())
    }

    /// Rolls every pod by stamping the pod template with
    /// `ferry.dev/restarted-at` (what `kubectl rollout restart` does).
    pub async fn restart(&self, owner: &Owner, name: &str, kind: WorkloadKindRef) -> Result<()> {
        let namespace = owner.namespace.as_str();
        self.ensure_workload_owned(owner, name, kind).await?;
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let patch = Patch::Merge(serde_json::json!({
            "spec": { "template": { "metadata": { "annotations": { labels::RESTARTED_AT: now } } } }
        }));
        let params = PatchParams {
            field_manager: Some(RESTART_FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        match kind {
            WorkloadKindRef::Deployment => {
                self.api::<Deployment>(namespace)
                    .patch(name, &params, &patch)
                    .await?;
            }
            WorkloadKindRef::StatefulSet => {
                self.api::<StatefulSet>(namespace)
                    .patch(name, &params, &patch)
                    .await?;
            }
        }
        Ok(())
    }

    /// A scale or restart touches only a workload of this service.
    async fn ensure_workload_owned(
        &self,
        owner: &Owner,
        name: &str,
        kind: WorkloadKindRef,
    ) -> Result<()> {
        let wanted = owner.labels();
        let ns = owner.namespace.as_str();
        match kind {
            WorkloadKindRef::Deployment => {
                self.ensure_owned(&self.api::<Deployment>(ns), name, &wanted)
                    .await?
            }
            WorkloadKindRef::StatefulSet => {
                self.ensure_owned(&self.api::<StatefulSet>(ns), name, &wanted)
                    .await?
            }
        };
        Ok(())
    }

    /// Deletes a project volume's claim (`vol-<volume>`), and with it the
    /// data; already gone is fine. Refused when the claim is not this
    /// project's volume.
    pub async fn delete_volume_claim(&self, owner: &Owner, volume: &str) -> Result<()> {
        let api = self.api::<PersistentVolumeClaim>(&owner.namespace);
        let name = crate::render::claim_name(volume);
        let mut wanted = owner.labels();
        wanted.push((labels::VOLUME, volume.to_owned()));
        if !self.ensure_owned(&api, &name, &wanted).await? {
            return Ok(());
        }
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = Error::from(e);
                if e.is_not_found() { Ok(()) } else { Err(e) }
            }
        }
    }

    /// Deletes every ferry-managed object of one service (workload,
    /// Service, Secrets, PVCs, including a database's data claims) and
    /// returns `Kind/name` of each. Objects already gone are skipped.
    pub async fn delete_service(&self, namespace: &str, service_id: Uuid) -> Result<Vec<String>> {
        let selector = format!(
            "{}={},{}={service_id}",
            labels::MANAGED_BY,
            labels::FERRY,
            labels::SERVICE_ID
        );
        let mut deleted = Vec::new();
        self.delete_labelled(self.api::<Deployment>(namespace), &selector, &mut deleted)
            .await?;
        self.delete_labelled(self.api::<StatefulSet>(namespace), &selector, &mut deleted)
            .await?;
        self.delete_labelled(self.api::<Service>(namespace), &selector, &mut deleted)
            .await?;
        self.delete_labelled(self.api::<Secret>(namespace), &selector, &mut deleted)
            .await?;
        self.delete_labelled(
            self.api::<PersistentVolumeClaim>(namespace),
            &selector,
            &mut deleted,
        )
        .await?;
        Ok(deleted)
    }

    async fn delete_labelled<K>(
        &self,
        api: Api<K>,
        selector: &str,
        deleted: &mut Vec<String>,
    ) -> Result<()>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
    {
        self.delete_labelled_except(api, selector, &[], deleted)
            .await
    }

    // List + delete one by one: not every resource supports deletecollection.
    async fn delete_labelled_except<K>(
        &self,
        api: Api<K>,
        selector: &str,
        keep: &[Option<String>],
        deleted: &mut Vec<String>,
    ) -> Result<()>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
    {
        let kind = K::kind(&());
        for obj in api.list(&ListParams::default().labels(selector)).await? {
            let name = obj.name_any();
            if keep.iter().flatten().any(|k| *k == name) {
                continue;
            }
            if self::deleted(api.delete(&name, &DeleteParams::background()).await)? {
                deleted.push(format!("{kind}/{name}"));
            }
        }
        Ok(())
    }

    /// Deletes a project's namespace (and so everything in it). A missing
    /// namespace is not an error; one that is not this project's is
    /// refused.
    pub async fn delete_namespace(&self, owner: &Owner) -> Result<()> {
        let api = Api::<Namespace>::all(self.client.clone());
        let namespace = owner.namespace.as_str();
        if !self.ensure_owned(&api, namespace, &owner.labels()).await? {
            return Ok(());
        }
        deleted(api.delete(namespace, &DeleteParams::background()).await)?;
        Ok(())
    }

    /// The live workload object, `None` when it does not exist.
    pub async fn get_workload_json(
        &self,
        namespace: &str,
        name: &str,
        kind: WorkloadKindRef,
    ) -> Result<Option<serde_json::Value>> {
        let value = match kind {
            WorkloadKindRef::Deployment => self
                .api::<Deployment>(namespace)
                .get_opt(name)
                .await?
                .map(serde_json::to_value),
            WorkloadKindRef::StatefulSet => self
                .api::<StatefulSet>(namespace)
                .get_opt(name)
                .await?
                .map(serde_json::to_value),
        };
        Ok(value.transpose()?)
    }
}

/// A delete's result: `Ok(true)` deleted, `Ok(false)` already gone.
pub(crate) fn deleted<T>(result: Result<T, kube::Error>) -> Result<bool> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Whose objects an operation may touch: a project's namespace, and, for
/// service objects, the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub namespace: String,
    pub project_id: Uuid,
    pub service_id: Option<Uuid>,
}

impl Owner {
    /// The project's namespace itself (and project-wide objects).
    pub fn project(namespace: impl Into<String>, project_id: Uuid) -> Self {
        Owner {
            namespace: namespace.into(),
            project_id,
            service_id: None,
        }
    }

    /// One service's objects in its project's namespace.
    pub fn service(namespace: impl Into<String>, project_id: Uuid, service_id: Uuid) -> Self {
        Owner {
            namespace: namespace.into(),
            project_id,
            service_id: Some(service_id),
        }
    }

    fn labels(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![
            (labels::MANAGED_BY, labels::FERRY.to_owned()),
            (labels::PROJECT_ID, self.project_id.to_string()),
        ];
        if let Some(id) = self.service_id {
            out.push((labels::SERVICE_ID, id.to_string()));
        }
        out
    }
}

/// The ownership labels of a rendered object: the ones an existing object
/// of that name must already carry.
fn ownership(
    labels: Option<&std::collections::BTreeMap<String, String>>,
) -> Vec<(&'static str, String)> {
    const KEYS: [&str; 5] = [
        labels::MANAGED_BY,
        labels::PROJECT_ID,
        labels::SERVICE_ID,
        labels::VOLUME,
        labels::BUILD_ID,
    ];
    let mut out: Vec<(&'static str, String)> = KEYS
        .iter()
        .filter_map(|k| labels.and_then(|l| l.get(*k)).map(|v| (*k, v.clone())))
        .collect();
    // An object rendered without ferry's labels would be a bug; still demand
    // the managed-by label so nothing foreign is ever adopted.
    if !out.iter().any(|(k, _)| *k == labels::MANAGED_BY) {
        out.push((labels::MANAGED_BY, labels::FERRY.to_owned()));
    }
    out
}

pub(crate) fn check_owned(
    kind: &str,
    existing: &ObjectMeta,
    wanted: &[(&'static str, String)],
) -> Result<()> {
    let have = existing.labels.as_ref();
    for (key, value) in wanted {
        let found = have.and_then(|l| l.get(*key));
        if found != Some(value) {
            let object = match &existing.namespace {
                Some(ns) => format!("{ns}/{}", existing.name.as_deref().unwrap_or_default()),
                None => existing.name.clone().unwrap_or_default(),
            };
            let reason = match found {
                None => format!("label {key} is missing"),
                Some(other) => format!("label {key} is {other:?}"),
            };
            return Err(Error::NotOwned {
                kind: kind.to_owned(),
                object,
                reason,
            });
        }
    }
    Ok(())
}

fn state_of<K>(event: Event<K>, of: fn(&K) -> WorkloadState) -> Option<WorkloadState> {
    match event {
        Event::Apply(obj) | Event::InitApply(obj) => Some(of(&obj)),
        Event::Delete(_) => Some(WorkloadState {
            failure: Some("Deleted: the workload was deleted during the rollout".into()),
            ..WorkloadState::default()
        }),
        Event::Init | Event::InitDone => None,
    }
}

/// The parts of a workload's status a rollout is judged by.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct WorkloadState {
    pub observed_generation: i64,
    pub desired: i32,
    pub updated: i32,
    pub ready: i32,
    pub available: i32,
    /// StatefulSet: `updateRevision == currentRevision`; Deployment: true.
    pub revision_current: bool,
    /// Deployment: readiness is judged by `available`, StatefulSet by
    /// `ready`.
    pub is_stateful_set: bool,
    pub failure: Option<String>,
}

impl WorkloadState {
    pub(crate) fn of_deployment(d: &Deployment) -> Self {
        let status = d.status.clone().unwrap_or_default();
        let failure = status
            .conditions
            .unwrap_or_default()
            .into_iter()
            .find_map(|c| {
                (c.type_ == "Progressing"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("ProgressDeadlineExceeded"))
                .then(|| {
                    format!(
                        "ProgressDeadlineExceeded: {}",
                        c.message.unwrap_or_default()
                    )
                })
            });
        WorkloadState {
            observed_generation: status.observed_generation.unwrap_or(0),
            desired: d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            updated: status.updated_replicas.unwrap_or(0),
            ready: status.ready_replicas.unwrap_or(0),
            available: status.available_replicas.unwrap_or(0),
            revision_current: true,
            is_stateful_set: false,
            failure,
        }
    }

    pub(crate) fn of_stateful_set(s: &StatefulSet) -> Self {
        let status = s.status.clone().unwrap_or_default();
        WorkloadState {
            observed_generation: status.observed_generation.unwrap_or(0),
            desired: s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            updated: status.updated_replicas.unwrap_or(0),
            ready: status.ready_replicas.unwrap_or(0),
            available: status.available_replicas.unwrap_or(0),
            revision_current: status.update_revision.is_some()
                && status.update_revision == status.current_revision,
            is_stateful_set: true,
            failure: None,
        }
    }

    pub(crate) fn is_done(&self, generation: i64) -> bool {
        if self.desired == 0 {
            // Nothing to roll out.
            return true;
        }
        if self.observed_generation < generation {
            return false;
        }
        if self.is_stateful_set {
            (self.revision_current || self.updated == self.desired) && self.ready == self.desired
        } else {
            self.updated == self.desired && self.available == self.desired
        }
    }

    fn progress(&self) -> RolloutEvent {
        RolloutEvent::Progress {
            updated: self.updated,
            ready: self.ready,
            available: self.available,
            desired: self.desired,
        }
    }
}

/// Pod checks across ticks: what was reported, how often each waiting
/// reason was seen.
#[derive(Debug, Default)]
pub(crate) struct PodCheck {
    reported: HashSet<(String, String, String)>,
    seen: HashMap<(String, String, String), u32>,
}

impl PodCheck {
    /// Reports new waiting containers; returns a failure reason when one of
    /// them will not heal by itself.
    pub(crate) fn check(
        &mut self,
        pods: &[Pod],
        events: &mut impl FnMut(RolloutEvent),
    ) -> Option<String> {
        for pod in pods {
            let pod_name = pod.name_any();
            let Some(status) = &pod.status else { continue };
            let statuses = status
                .init_container_statuses
                .iter()
                .flatten()
                .chain(status.container_statuses.iter().flatten());
            for cs in statuses {
                let Some(waiting) = cs.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
                    continue;
                };
                let reason = waiting.reason.clone().unwrap_or_default();
                let message = waiting.message.clone().unwrap_or_default();
                let key = (pod_name.clone(), cs.name.clone(), reason.clone());
                if self.reported.insert(key.clone()) {
                    events(RolloutEvent::PodWaiting {
                        pod: pod_name.clone(),
                        reason: reason.clone(),
                        message: message.clone(),
                    });
                }
                if !FATAL_WAITING.contains(&reason.as_str()) {
                    continue;
                }
                let count = self.seen.entry(key).or_insert(0);
                *count += 1;
                if reason == "ErrImagePull" && *count < 2 {
                    continue;
                }
                return Some(if message.is_empty() {
                    reason
                } else {
                    format!("{reason}: {message}")
                });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    fn deployment(status: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": { "name": "web", "generation": 2 },
            "spec": { "replicas": 2, "selector": {}, "template": {} },
            "status": status,
        }))
        .unwrap()
    }

    fn stateful_set(status: serde_json::Value) -> StatefulSet {
        serde_json::from_value(json!({
            "metadata": { "name": "db", "generation": 1 },
            "spec": { "replicas": 1, "selector": {}, "template": {} },
            "status": status,
        }))
        .unwrap()
    }

    fn pod(name: &str, reason: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": { "name": name },
            "status": { "containerStatuses": [{
                "name": "app", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": { "waiting": { "reason": reason, "message": "details" } },
            }]},
        }))
        .unwrap()
    }

    #[test]
    fn deployment_done_needs_observed_generation_and_all_replicas() {
        let ready = json!({ "observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2, "readyReplicas": 2 });
        assert!(WorkloadState::of_deployment(&deployment(ready.clone())).is_done(2));
        assert!(!WorkloadState::of_deployment(&deployment(ready)).is_done(3));
        let partial =
            json!({ "observedGeneration": 2, "updatedReplicas": 2, "availableReplicas": 1 });
        assert!(!WorkloadState::of_deployment(&deployment(partial)).is_done(2));
    }

    #[test]
    fn progress_deadline_exceeded_fails() {
        let status = json!({ "observedGeneration": 2, "conditions": [{
            "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
            "message": "ReplicaSet \"web-1\" has timed out progressing.",
        }]});
        let state = WorkloadState::of_deployment(&deployment(status));
        assert_eq!(
            state.failure.as_deref(),
            Some("ProgressDeadlineExceeded: ReplicaSet \"web-1\" has timed out progressing.")
        );
    }

    #[test]
    fn stateful_set_done_needs_current_revision_and_ready() {
        let done = json!({ "observedGeneration": 1, "replicas": 1, "readyReplicas": 1, "currentRevision": "db-2", "updateRevision": "db-2" });
        assert!(WorkloadState::of_stateful_set(&stateful_set(done)).is_done(1));
        let old = json!({ "observedGeneration": 1, "replicas": 1, "readyReplicas": 1, "currentRevision": "db-1", "updateRevision": "db-2" });
        assert!(!WorkloadState::of_stateful_set(&stateful_set(old)).is_done(1));
        let updated = json!({ "observedGeneration": 1, "replicas": 1, "readyReplicas": 1, "updatedReplicas": 1, "currentRevision": "db-1", "updateRevision": "db-2" });
        assert!(WorkloadState::of_stateful_set(&stateful_set(updated)).is_done(1));
    }

    #[test]
    fn err_image_pull_fails_only_when_seen_twice() {
        let mut check = PodCheck::default();
        let mut events = Vec::new();
        let pods = [pod("web-1", "ErrImagePull")];
        assert_eq!(check.check(&pods, &mut |e| events.push(e)), None);
        assert_eq!(
            check.check(&pods, &mut |e| events.push(e)).as_deref(),
            Some("ErrImagePull: details")
        );
        // Reported once.
        assert_eq!(events.len(), 1);
    }

    #[test]
    fn benign_waiting_is_reported_not_fatal() {
        let mut check = PodCheck::default();
        let mut events = Vec::new();
        for _ in 0..3 {
            assert_eq!(
                check.check(&[pod("web-1", "ContainerCreating")], &mut |e| events
                    .push(e)),
                None
            );
        }
        assert_eq!(
            events,
            [RolloutEvent::PodWaiting {
                pod: "web-1".into(),
                reason: "ContainerCreating".into(),
                message: "details".into()
            }]
        );
        for reason in [
            "InvalidImageName",
            "CreateContainerConfigError",
            "CrashLoopBackOff",
            "ImagePullBackOff",
        ] {
            let failure = PodCheck::default().check(&[pod("p", reason)], &mut |_| {});
            assert_eq!(failure, Some(format!("{reason}: details")));
        }
    }
}
