//! What the cluster says about Ferry's services, kept live by watches.
//!
//! [`Cluster::watch_status`] follows kube-runtime watchers on every
//! Deployment, StatefulSet and Pod in the cluster that carries Ferry's
//! labels (`app.kubernetes.io/managed-by=ferry` and `ferry.dev/service-id`;
//! job-run and build pods carry no service id). Reflector writers keep the
//! objects; each event says which services may have changed, and
//! [`StatusWatch::observe`] turns a service's objects into a
//! [`ServiceObservation`]: a [`HealthState`] with its reason, and one
//! [`ContainerObservation`] per container. Nothing here polls or writes.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use futures::stream::BoxStream;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::ResourceExt as _;
use kube::api::Api;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::reflector::Store;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher::{self, Event};

use crate::cluster::Cluster;
use crate::logs::to_chrono;
use crate::render::labels;

/// Longest reason and message kept (the database refuses longer ones).
pub const MAX_REASON: usize = 256;
pub const MAX_MESSAGE: usize = 2048;

/// Waiting reasons that mean the pod cannot start without a change.
const FAILED_REASONS: &[&str] = &[
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// Selector of the objects the status watch follows.
pub fn status_selector() -> String {
    format!(
        "{}={},{}",
        labels::MANAGED_BY,
        labels::FERRY,
        labels::SERVICE_ID
    )
}

/// A service's health as its workload and pods show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HealthState {
    /// Every desired replica is ready and no pod is failing.
    Running,
    /// Some replicas are ready, but fewer than desired, or a pod is failing
    /// beside ready ones (a stuck rollout, a lost node).
    Degraded,
    /// No replica is ready and a container keeps crashing.
    CrashLooping,
    /// No replica is ready yet, and nothing says it cannot become ready
    /// (scheduling, pulling, starting).
    Pending,
    /// Scaled to zero.
    Stopped,
    /// No replica is ready and a pod cannot start without a change (image
    /// not found, bad configuration).
    Failed,
    /// The workload is not on the cluster (never applied, or deleted by
    /// someone else).
    Missing,
}

impl HealthState {
    /// The name stored in `service_health.state` and shown by the api.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Degraded => "degraded",
            Self::CrashLooping => "crash_looping",
            Self::Pending => "pending",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
            Self::Missing => "missing",
        }
    }
}

/// The state of one container, as its pod's status says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    Waiting,
    Running,
    Terminated,
    /// The pod's node stopped reporting (phase `Unknown`).
    Unknown,
}

impl ContainerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Running => "running",
            Self::Terminated => "terminated",
            Self::Unknown => "unknown",
        }
    }
}

/// One container of one pod of a service.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerObservation {
    pub namespace: String,
    pub pod_name: String,
    pub pod_uid: String,
    pub container_name: String,
    pub image: String,
    pub node_name: Option<String>,
    /// The `ferry.dev/deployment-id` label of the pod (unverified).
    pub deployment_id: Option<String>,
    pub state: ContainerState,
    pub ready: bool,
    pub restart_count: i32,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub last_termination_reason: Option<String>,
    pub last_exit_code: Option<i32>,
    pub last_terminated_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    /// Declared container ports (`[{"name", "containerPort", "protocol"}]`).
    pub ports: serde_json::Value,
    pub labels: BTreeMap<String, String>,
}

/// A service's workload and pods, summed up.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceObservation {
    pub service_id: String,
    pub state: HealthState,
    pub desired_replicas: i32,
    pub ready_replicas: i32,
    pub restarts: i32,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub containers: Vec<ContainerObservation>,
}

/// What a watch event means for the services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusChange {
    /// Objects of these services changed.
    Changed(BTreeSet<String>),
    /// A watch (re)listed everything: any service may have changed,
    /// including ones no longer on the cluster. Carries every service seen
    /// before or after.
    Resynced(BTreeSet<String>),
}

/// A watch event of any of the three kinds (boxed: the objects are large).
enum Change {
    Deployment(Box<Event<Deployment>>),
    StatefulSet(Box<Event<StatefulSet>>),
    Pod(Box<Event<Pod>>),
}

impl Cluster {
    /// Watches every Ferry-labelled Deployment, StatefulSet and Pod of the
    /// cluster (needs list/watch on them cluster-wide). Watch errors are
    /// retried with backoff and logged.
    pub fn watch_status(&self) -> StatusWatch {
        let config = watcher::Config::default().labels(&status_selector());
        let client = self.client().clone();
        let deployments = watcher::watcher(Api::<Deployment>::all(client.clone()), config.clone())
            .default_backoff()
            .map(|e| e.map(|e| Change::Deployment(Box::new(e))))
            .boxed();
        let stateful_sets =
            watcher::watcher(Api::<StatefulSet>::all(client.clone()), config.clone())
                .default_backoff()
                .map(|e| e.map(|e| Change::StatefulSet(Box::new(e))))
                .boxed();
        let pods = watcher::watcher(Api::<Pod>::all(client), config)
            .default_backoff()
            .map(|e| e.map(|e| Change::Pod(Box::new(e))))
            .boxed();
        StatusWatch {
            changes: futures::stream::select_all([deployments, stateful_sets, pods]).boxed(),
            deployments: Writer::default(),
            stateful_sets: Writer::default(),
            pods: Writer::default(),
            relisting: BTreeSet::new(),
            listed: [false; 3],
        }
    }
}

/// The live state behind [`Cluster::watch_status`].
pub struct StatusWatch {
    changes: BoxStream<'static, Result<Change, watcher::Error>>,
    deployments: Writer<Deployment>,
    stateful_sets: Writer<StatefulSet>,
    pods: Writer<Pod>,
    /// Services seen before a re-list began (a re-list may drop them).
    relisting: BTreeSet<String>,
    /// Which of the three watches have listed once.
    listed: [bool; 3],
}

impl StatusWatch {
    /// The next change. Waits until all three watches have listed once
    /// (the first answer is a [`StatusChange::Resynced`]). `None` only if
    /// the watches end, which they do not unless the client is dropped.
    pub async fn next(&mut self) -> Option<StatusChange> {
        loop {
            let change = match self.changes.next().await? {
                Ok(change) => change,
                Err(err) => {
                    tracing::warn!(error = %err, "status watch failed; retrying");
                    continue;
                }
            };
            let before = self.all_services();
            let (index, affected) = match &change {
                Change::Deployment(event) => {
                    (0, apply(&mut self.deployments, event, labels::SERVICE_ID))
                }
                Change::StatefulSet(event) => {
                    (1, apply(&mut self.stateful_sets, event, labels::SERVICE_ID))
                }
                Change::Pod(event) => (2, apply(&mut self.pods, event, labels::SERVICE_ID)),
            };
            let was_listed = self.listed.iter().all(|l| *l);
            match affected {
                Affected::Objects(ids) if was_listed && !ids.is_empty() => {
                    return Some(StatusChange::Changed(ids));
                }
                Affected::Objects(_) => {}
                Affected::RelistStarted => self.relisting.extend(before),
                Affected::RelistDone => {
                    self.listed[index] = true;
                    if self.listed.iter().all(|l| *l) {
                        let mut ids = std::mem::take(&mut self.relisting);
                        ids.extend(self.all_services());
                        return Some(StatusChange::Resynced(ids));
                    }
                }
            }
        }
    }

    /// Every service with an object on the cluster.
    pub fn all_services(&self) -> BTreeSet<String> {
        self.view().all_services()
    }

    /// A read handle on the objects the watches keep (it follows later
    /// events; it can be shared between tasks).
    pub fn view(&self) -> StatusView {
        StatusView {
            deployments: self.deployments.as_reader(),
            stateful_sets: self.stateful_sets.as_reader(),
            pods: self.pods.as_reader(),
        }
    }
}

/// Read access to [`StatusWatch`]'s objects.
#[derive(Clone)]
pub struct StatusView {
    deployments: Store<Deployment>,
    stateful_sets: Store<StatefulSet>,
    pods: Store<Pod>,
}

impl StatusView {
    /// Every service with an object on the cluster.
    pub fn all_services(&self) -> BTreeSet<String> {
        let mut ids = BTreeSet::new();
        for d in self.deployments.state() {
            ids.extend(service_id(d.labels()));
        }
        for s in self.stateful_sets.state() {
            ids.extend(service_id(s.labels()));
        }
        for p in self.pods.state() {
            ids.extend(service_id(p.labels()));
        }
        ids
    }

    /// The service's health and containers as the watches last said,
    /// from its objects in `namespace` only (the project's: an object
    /// labelled with the service's id elsewhere is not the service's).
    pub fn observe(&self, service_id: &str, namespace: &str) -> ServiceObservation {
        let of_service = |o: &dyn ResourceLabels| {
            o.labels_of().get(labels::SERVICE_ID).map(String::as_str) == Some(service_id)
                && o.namespace_of() == Some(namespace)
        };
        let deployments: Vec<_> = self
            .deployments
            .state()
            .into_iter()
            .filter(|d| of_service(&**d))
            .collect();
        let stateful_sets: Vec<_> = self
            .stateful_sets
            .state()
            .into_iter()
            .filter(|s| of_service(&**s))
            .collect();
        let mut pods: Vec<_> = self
            .pods
            .state()
            .into_iter()
            .filter(|p| of_service(&**p))
            .collect();
        pods.sort_by_key(|p| p.name_any());
        let mut replicas: Option<(i32, i32)> = None;
        for d in &deployments {
            let (desired, ready) = deployment_replicas(d);
            let (w, r) = replicas.unwrap_or((0, 0));
            replicas = Some((w + desired, r + ready));
        }
        for s in &stateful_sets {
            let desired = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let ready = s
                .status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0);
            let (w, r) = replicas.unwrap_or((0, 0));
            replicas = Some((w + desired, r + ready));
        }
        let containers: Vec<ContainerObservation> = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .flat_map(|p| containers_of(p))
            .collect();
        summarize(service_id, replicas, containers)
    }
}

/// Sums a service's replicas and containers up into a state with a reason.
fn summarize(
    service_id: &str,
    replicas: Option<(i32, i32)>,
    containers: Vec<ContainerObservation>,
) -> ServiceObservation {
    let restarts = containers.iter().map(|c| c.restart_count).sum();
    let problem = containers
        .iter()
        .filter(|c| !c.ready)
        .find_map(|c| match c.reason.as_deref() {
            Some(r @ "CrashLoopBackOff") => Some((HealthState::CrashLooping, r, c)),
            Some(r) if FAILED_REASONS.contains(&r) => Some((HealthState::Failed, r, c)),
            _ => None,
        });
    let lost = containers
        .iter()
        .find(|c| c.state == ContainerState::Unknown);
    let (state, reason, message) = match replicas {
        None => (
            HealthState::Missing,
            Some("WorkloadMissing".to_owned()),
            Some("no Deployment or StatefulSet of this service is on the cluster".to_owned()),
        ),
        Some((0, _)) => (HealthState::Stopped, None, None),
        Some((desired, ready)) if ready >= desired => match problem {
            Some((_, reason, c)) => (
                HealthState::Degraded,
                Some(reason.to_owned()),
                Some(format!(
                    "{}: {}",
                    c.pod_name,
                    c.message.clone().unwrap_or_default()
                )),
            ),
            None => (HealthState::Running, None, None),
        },
        Some((desired, ready)) => {
            let (reason, message) = match (problem, lost) {
                (Some((_, reason, c)), _) => (
                    reason.to_owned(),
                    format!("{}: {}", c.pod_name, c.message.clone().unwrap_or_default()),
                ),
                (None, Some(c)) => (
                    "NodeLost".to_owned(),
                    format!(
                        "{}: its node {} stopped reporting",
                        c.pod_name,
                        c.node_name.clone().unwrap_or_default()
                    ),
                ),
                (None, None) => (
                    "ReplicasNotReady".to_owned(),
                    format!("{ready} of {desired} replicas ready"),
                ),
            };
            let state = match problem {
                _ if ready > 0 => HealthState::Degraded,
                Some((state, ..)) => state,
                None => HealthState::Pending,
            };
            (state, Some(reason), Some(message))
        }
    };
    let (desired_replicas, ready_replicas) = replicas.unwrap_or((0, 0));
    ServiceObservation {
        service_id: service_id.to_owned(),
        state,
        desired_replicas,
        ready_replicas,
        restarts,
        reason: reason.map(|r| truncate(r, MAX_REASON)),
        message: message.map(|m| truncate(m.trim_end_matches(": ").to_owned(), MAX_MESSAGE)),
        containers,
    }
}

/// Labels and namespace of any of the three kinds.
trait ResourceLabels {
    fn labels_of(&self) -> &BTreeMap<String, String>;
    fn namespace_of(&self) -> Option<&str>;
}

impl<K: kube::Resource> ResourceLabels for K {
    fn labels_of(&self) -> &BTreeMap<String, String> {
        self.labels()
    }
    fn namespace_of(&self) -> Option<&str> {
        self.meta().namespace.as_deref()
    }
}

fn deployment_replicas(d: &Deployment) -> (i32, i32) {
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let ready = d
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    (desired, ready)
}

/// What a watch event changed.
/// What one watch event did to a reflector store (shared with the
/// job-run watch).
pub(crate) enum Affected {
    /// Objects carrying these values of the watched label changed.
    Objects(BTreeSet<String>),
    RelistStarted,
    RelistDone,
}

/// Applies `event` to `writer`; the values of `label` it touched.
pub(crate) fn apply<K>(writer: &mut Writer<K>, event: &Event<K>, label: &str) -> Affected
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Clone + Default + Eq + std::hash::Hash,
{
    writer.apply_watcher_event(event);
    match event {
        Event::Apply(obj) | Event::Delete(obj) => {
            Affected::Objects(obj.labels().get(label).cloned().into_iter().collect())
        }
        Event::Init => Affected::RelistStarted,
        Event::InitApply(_) => Affected::Objects(BTreeSet::new()),
        Event::InitDone => Affected::RelistDone,
    }
}

fn service_id(labels: &BTreeMap<String, String>) -> Option<String> {
    labels.get(labels::SERVICE_ID).cloned()
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// One observation per container of the pod (spec order; a container
/// without a status yet is waiting).
fn containers_of(pod: &Pod) -> Vec<ContainerObservation> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    let status = pod.status.as_ref();
    let node_lost = status.and_then(|s| s.phase.as_deref()) == Some("Unknown");
    let statuses = status.and_then(|s| s.container_statuses.as_ref());
    spec.containers
        .iter()
        .map(|container| {
            let cs = statuses.and_then(|all| all.iter().find(|s| s.name == container.name));
            let mut obs = ContainerObservation {
                namespace: pod.namespace().unwrap_or_default(),
                pod_name: pod.name_any(),
                pod_uid: pod.uid().unwrap_or_default(),
                container_name: container.name.clone(),
                image: cs
                    .map(|s| s.image.clone())
                    .or_else(|| container.image.clone())
                    .unwrap_or_default(),
                node_name: spec.node_name.clone(),
                deployment_id: pod.labels().get(labels::DEPLOYMENT_ID).cloned(),
                state: ContainerState::Waiting,
                ready: false,
                restart_count: 0,
                reason: None,
                message: None,
                last_termination_reason: None,
                last_exit_code: None,
                last_terminated_at: None,
                started_at: None,
                ports: serde_json::to_value(container.ports.clone().unwrap_or_default())
                    .unwrap_or_default(),
                labels: pod.labels().clone(),
            };
            match cs {
                Some(cs) => fill_status(&mut obs, cs),
                None => obs.reason = Some(pod_waiting_reason(pod)),
            }
            if node_lost {
                obs.state = ContainerState::Unknown;
                obs.ready = false;
            }
            obs.reason = obs.reason.map(|r| truncate(r, MAX_REASON));
            obs.message = obs.message.map(|m| truncate(m, MAX_MESSAGE));
            obs.last_termination_reason =
                obs.last_termination_reason.map(|r| truncate(r, MAX_REASON));
            obs
        })
        .collect()
}

fn fill_status(obs: &mut ContainerObservation, cs: &ContainerStatus) {
    obs.ready = cs.ready;
    obs.restart_count = cs.restart_count.max(0);
    if let Some(state) = &cs.state {
        if let Some(running) = &state.running {
            obs.state = ContainerState::Running;
            obs.started_at = running.started_at.as_ref().and_then(|t| to_chrono(t.0));
        } else if let Some(terminated) = &state.terminated {
            obs.state = ContainerState::Terminated;
            obs.reason = terminated.reason.clone();
            obs.message = terminated.message.clone();
            obs.started_at = terminated.started_at.as_ref().and_then(|t| to_chrono(t.0));
        } else if let Some(waiting) = &state.waiting {
            obs.state = ContainerState::Waiting;
            obs.reason = waiting.reason.clone();
            obs.message = waiting.message.clone();
        }
    }
    if let Some(last) = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref()) {
        obs.last_termination_reason = last.reason.clone();
        obs.last_exit_code = Some(last.exit_code);
        obs.last_terminated_at = last.finished_at.as_ref().and_then(|t| to_chrono(t.0));
    }
}

/// Why a pod whose containers have no status yet waits: unschedulable,
/// or simply being created.
fn pod_waiting_reason(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| {
            c.iter()
                .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        })
        .and_then(|c| c.reason.clone())
        .unwrap_or_else(|| "ContainerCreating".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(ready: bool, reason: Option<&str>, state: ContainerState) -> ContainerObservation {
        ContainerObservation {
            namespace: "ns".into(),
            pod_name: "web-1".into(),
            pod_uid: "uid".into(),
            container_name: "app".into(),
            image: "nginx".into(),
            node_name: Some("node-a".into()),
            deployment_id: None,
            state,
            ready,
            restart_count: 2,
            reason: reason.map(Into::into),
            message: reason.map(|r| format!("{r} happened")),
            last_termination_reason: None,
            last_exit_code: None,
            last_terminated_at: None,
            started_at: None,
            ports: serde_json::json!([]),
            labels: BTreeMap::new(),
        }
    }

    fn state(
        replicas: Option<(i32, i32)>,
        containers: Vec<ContainerObservation>,
    ) -> (HealthState, Option<String>) {
        let obs = summarize("svc", replicas, containers);
        (obs.state, obs.reason)
    }

    #[test]
    fn states_follow_replicas_and_container_reasons() {
        use ContainerState::*;
        use HealthState as H;
        let running = || container(true, None, Running);
        let crashing = || container(false, Some("CrashLoopBackOff"), Waiting);
        let pulling = || container(false, Some("ImagePullBackOff"), Waiting);
        let creating = || container(false, Some("ContainerCreating"), Waiting);
        let lost = || container(false, None, Unknown);
        type Case = (
            Option<(i32, i32)>,
            Vec<ContainerObservation>,
            H,
            Option<&'static str>,
        );
        let cases: Vec<Case> = vec![
            (None, vec![], H::Missing, Some("WorkloadMissing")),
            (Some((0, 0)), vec![], H::Stopped, None),
            (Some((2, 2)), vec![running(), running()], H::Running, None),
            (
                Some((1, 1)),
                vec![running(), crashing()],
                H::Degraded,
                Some("CrashLoopBackOff"),
            ),
            (
                Some((2, 1)),
                vec![running(), crashing()],
                H::Degraded,
                Some("CrashLoopBackOff"),
            ),
            (
                Some((2, 1)),
                vec![running(), lost()],
                H::Degraded,
                Some("NodeLost"),
            ),
            (
                Some((1, 0)),
                vec![crashing()],
                H::CrashLooping,
                Some("CrashLoopBackOff"),
            ),
            (
                Some((1, 0)),
                vec![pulling()],
                H::Failed,
                Some("ImagePullBackOff"),
            ),
            (
                Some((1, 0)),
                vec![creating()],
                H::Pending,
                Some("ReplicasNotReady"),
            ),
            (Some((3, 0)), vec![], H::Pending, Some("ReplicasNotReady")),
        ];
        for (replicas, containers, want, reason) in cases {
            assert_eq!(
                state(replicas, containers.clone()),
                (want, reason.map(Into::into)),
                "{replicas:?} {containers:?}"
            );
        }
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let s = "é".repeat(MAX_MESSAGE);
        let cut = truncate(s, MAX_MESSAGE);
        assert!(cut.len() <= MAX_MESSAGE);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
