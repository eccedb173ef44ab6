//! Image build Jobs on a cluster: start, watch, list, cancel, logs.
//!
//! A build is one Job (see [`crate::build`]) found by its labels
//! (`app.kubernetes.io/managed-by=ferry`, `ferry.dev/build-id`). Nothing
//! here polls: [`Cluster::watch_build`] follows kube-runtime watchers on
//! the Job and its pods, and [`Cluster::list_builds`] lets a restarted
//! builder find the builds still running and watch them again.

use std::collections::BTreeMap;

use futures::StreamExt;
use futures::stream::{BoxStream, Stream};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, ListParams, Preconditions};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher::{self, Event};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::build::outcome::{container_order, container_status};
use crate::build::{
    BuildCredentials, BuildOutcome, BuildSpec, BuildStep, BuildsNamespace, FailureReason,
    build_selector, builds_selector, job_name, owned_by_job, render_build, render_build_secret,
};
use crate::cluster::{Cluster, check_owned, deleted};
use crate::error::{Error, Result};
use crate::logs::{LogQuery, PodLogLine, pod_lines};
use crate::render::labels;

/// A build Job that exists on the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartedBuild {
    pub namespace: String,
    pub job_name: String,
    pub job_uid: String,
}

/// One build found on the cluster, and where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildStatus {
    pub build_id: Uuid,
    pub job_name: String,
    pub outcome: BuildOutcome,
    /// The Job's annotations (what [`BuildSpec::annotations`] set).
    pub annotations: BTreeMap<String, String>,
}

impl BuildStatus {
    fn of(build_id: Uuid, job: &Job, pods: &[Pod]) -> BuildStatus {
        BuildStatus {
            build_id,
            job_name: job.name_any(),
            outcome: BuildOutcome::from_job(job, pods),
            annotations: job.annotations().clone(),
        }
    }
}

impl Cluster {
    /// Server-side applies the builds namespace and its NetworkPolicies
    /// (refusing a namespace of that name Ferry does not manage).
    pub async fn ensure_builds_namespace(&self, objects: &BuildsNamespace) -> Result<()> {
        self.apply_one(
            Api::<Namespace>::all(self.client().clone()),
            &objects.namespace,
        )
        .await?;
        let ns = objects.name();
        for policy in [&objects.deny_ingress, &objects.egress] {
            self.apply_one(self.api::<NetworkPolicy>(ns), policy)
                .await?;
        }
        Ok(())
    }

    /// Starts a build: server-side applies its Job, then its Secret with an
    /// owner reference to the Job (so the Secret is collected with the Job
    /// and never outlives it). Applying the same build again changes
    /// nothing. The pod waits for the Secret's volumes, so creating the Job
    /// first costs at most a mount retry.
    pub async fn start_build(
        &self,
        spec: &BuildSpec,
        credentials: &BuildCredentials,
    ) -> Result<StartedBuild> {
        let job = render_build(spec)?;
        let mut secret = render_build_secret(spec, credentials)?;
        let applied = self
            .apply_one(self.api::<Job>(&spec.namespace), &job)
            .await?;
        let name = applied.name_any();
        let uid = applied.metadata.uid.clone().unwrap_or_default();
        owned_by_job(&mut secret, &name, &uid);
        self.apply_one(self.api::<Secret>(&spec.namespace), &secret)
            .await?;
        tracing::info!(namespace = %spec.namespace, job = %name, build_id = %spec.build_id, "build started");
        Ok(StartedBuild {
            namespace: spec.namespace.clone(),
            job_name: name,
            job_uid: uid,
        })
    }

    /// Where one build stands now; [`Error::NotFound`] when it has no Job.
    pub async fn build_outcome(&self, namespace: &str, build_id: Uuid) -> Result<BuildOutcome> {
        self.find_build(namespace, build_id)
            .await?
            .map(|status| status.outcome)
            .ok_or_else(|| not_found(namespace, build_id))
    }

    /// One build's Job (found by its labels, so only Ferry's), its outcome
    /// and annotations; `None` when it has no Job. A restarted builder
    /// re-attaches to a build from this instead of starting it again.
    pub async fn find_build(&self, namespace: &str, build_id: Uuid) -> Result<Option<BuildStatus>> {
        let Some((job, pods)) = self
            .labelled_job(namespace, &build_selector(build_id))
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(BuildStatus::of(build_id, &job, &pods)))
    }

    /// The Job carrying `selector` in `namespace` (the first, if several)
    /// and the pods carrying it too; `None` without such a Job.
    pub(crate) async fn labelled_job(
        &self,
        namespace: &str,
        selector: &str,
    ) -> Result<Option<(Job, Vec<Pod>)>> {
        let params = ListParams::default().labels(selector);
        let Some(job) = self
            .api::<Job>(namespace)
            .list(&params)
            .await?
            .items
            .into_iter()
            .next()
        else {
            return Ok(None);
        };
        let pods = self.api::<Pod>(namespace).list(&params).await?.items;
        Ok(Some((job, pods)))
    }

    /// Every Ferry build Job in the namespace with its outcome, oldest
    /// first: a restarted builder resumes watching the ones not terminal.
    pub async fn list_builds(&self, namespace: &str) -> Result<Vec<BuildStatus>> {
        let params = ListParams::default().labels(&builds_selector());
        let jobs = self.api::<Job>(namespace).list(&params).await?.items;
        let mut pods: BTreeMap<String, Vec<Pod>> = BTreeMap::new();
        for pod in self.api::<Pod>(namespace).list(&params).await?.items {
            if let Some(id) = pod.labels().get(labels::BUILD_ID).cloned() {
                pods.entry(id).or_default().push(pod);
            }
        }
        let mut out: Vec<_> = jobs
            .iter()
            .filter_map(|job| {
                let id = job.labels().get(labels::BUILD_ID)?;
                let build_id = Uuid::parse_str(id).ok()?;
                let pods = pods.get(id).map(Vec::as_slice).unwrap_or_default();
                let status = BuildStatus::of(build_id, job, pods);
                let created = job.metadata.creation_timestamp.as_ref().map(|t| t.0);
                Some(((created, status.job_name.clone()), status))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out.into_iter().map(|(_, s)| s).collect())
    }

    /// Follows one build: yields its outcome each time it changes, ending
    /// after a terminal one. Driven by watches on the Job and its pods
    /// (label `ferry.dev/build-id`), never by polling. A Job deleted under
    /// it ends with `Failed { reason: Deleted }`; one that does not exist
    /// (or is not Ferry's) yields [`Error::NotFound`]. Watch errors are
    /// retried with backoff (and logged).
    pub fn watch_build(
        &self,
        namespace: &str,
        build_id: Uuid,
    ) -> impl Stream<Item = Result<BuildOutcome>> + Send + 'static {
        let config = watcher::Config::default().labels(&build_selector(build_id));
        let jobs = watcher::watcher(self.api::<Job>(namespace), config.clone())
            .default_backoff()
            .map(|e| e.map(|e| Change::Job(Box::new(e))))
            .boxed();
        let pods = watcher::watcher(self.api::<Pod>(namespace), config)
            .default_backoff()
            .map(|e| e.map(|e| Change::Pod(Box::new(e))))
            .boxed();
        let state = BuildWatch {
            changes: futures::stream::select(jobs, pods).boxed(),
            jobs: Writer::default(),
            pods: Writer::default(),
            jobs_listed: false,
            pods_listed: false,
            job_seen: false,
            pod_seen: false,
            last: None,
            last_step: None,
            done: false,
            object: format!("{namespace}/{}", job_name(build_id)),
        };
        futures::stream::unfold(state, |mut state| async move {
            let item = state.next_outcome().await?;
            Some((item, state))
        })
    }

    /// Cancels a build: deletes its Job with background propagation (a
    /// Job's API default is to orphan its pods) and its Secret. Refuses
    /// ([`Error::NotOwned`]) a Job of that name without Ferry's labels and
    /// this build's id; the delete is conditional on the checked Job's uid,
    /// so a Job recreated in between is not touched. `false` when there
    /// was no Job.
    pub async fn cancel_build(&self, namespace: &str, build_id: Uuid) -> Result<bool> {
        let name = job_name(build_id);
        let wanted = [
            (labels::MANAGED_BY, labels::FERRY.to_owned()),
            (labels::BUILD_ID, build_id.to_string()),
        ];
        let jobs = self.api::<Job>(namespace);
        let job_deleted = match jobs.get_metadata_opt(&name).await? {
            None => false,
            Some(job) => {
                check_owned("Job", &job.metadata, &wanted)?;
                let params = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: job.metadata.uid.clone(),
                        resource_version: None,
                    }),
                    ..DeleteParams::background()
                };
                deleted(jobs.delete(&name, &params).await)?
            }
        };
        // Its owner reference takes the Secret along; deleting it here as
        // well means no credential waits for the garbage collector.
        let secrets = self.api::<Secret>(namespace);
        if self.ensure_owned(&secrets, &name, &wanted).await? {
            deleted(secrets.delete(&name, &DeleteParams::background()).await)?;
        }
        if job_deleted {
            tracing::info!(namespace, job = %name, %build_id, "build cancelled");
        }
        Ok(job_deleted)
    }

    /// Sends a build's log lines (each through `wrap`) to `tx`, container
    /// after container in the order they run (clone, prepare, build).
    /// Following, it waits for each container to start, reads its log to
    /// the end and goes on to the next; it returns when the last container
    /// has ended, a container failed (nothing after it runs), the pod is
    /// gone, or `tx` closes. Without `follow`, it sends what the started
    /// containers have written so far.
    pub async fn stream_build_logs<T>(
        &self,
        namespace: &str,
        build_id: Uuid,
        follow: bool,
        tx: &mpsc::Sender<T>,
        wrap: impl Fn(PodLogLine) -> T,
    ) -> Result<()> {
        let api = self.api::<Pod>(namespace);
        let selector = build_selector(build_id);
        let query = LogQuery {
            follow,
            ..LogQuery::default()
        };
        if !follow {
            let pods = api.list(&ListParams::default().labels(&selector)).await?;
            let Some(pod) = pods
                .items
                .iter()
                .max_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0))
            else {
                return Ok(());
            };
            for container in container_order(pod) {
                if !started(pod, &container) {
                    break;
                }
                let lines = pod_lines(api.clone(), pod.name_any(), container, &query);
                if !forward(lines, tx, &wrap).await {
                    return Ok(());
                }
            }
            return Ok(());
        }
        let mut pods = watcher::watcher(api.clone(), watcher::Config::default().labels(&selector))
            .default_backoff()
            .boxed();
        let mut pod: Option<Pod> = None;
        let mut next = 0;
        loop {
            if let Some(current) = &pod {
                let order = container_order(current);
                let Some(container) = order.get(next) else {
                    return Ok(());
                };
                if started(current, container) {
                    let lines =
                        pod_lines(api.clone(), current.name_any(), container.clone(), &query);
                    if !forward(lines, tx, &wrap).await {
                        return Ok(());
                    }
                    next += 1;
                    continue;
                }
                if finished(current) {
                    return Ok(());
                }
            }
            tokio::select! {
                event = pods.next() => match event {
                    Some(Ok(Event::Apply(p) | Event::InitApply(p))) => pod = Some(p),
                    Some(Ok(Event::Delete(_))) => return Ok(()),
                    Some(Ok(Event::Init | Event::InitDone)) => {}
                    Some(Err(err)) => tracing::debug!(error = %err, "build pod watch failed; retrying"),
                    None => return Ok(()),
                },
                () = tx.closed() => return Ok(()),
            }
        }
    }
}

fn not_found(namespace: &str, build_id: Uuid) -> Error {
    Error::NotFound {
        kind: "Job".into(),
        object: format!("{namespace}/{}", job_name(build_id)),
    }
}

/// The container has run (or runs): it has a log to read.
fn started(pod: &Pod, container: &str) -> bool {
    container_status(pod, container)
        .and_then(|s| s.state.as_ref())
        .is_some_and(|s| s.running.is_some() || s.terminated.is_some())
}

/// No further container of the pod will start.
fn finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Sends every line to `tx`; false when `tx` closed.
async fn forward<T>(
    mut lines: BoxStream<'static, PodLogLine>,
    tx: &mpsc::Sender<T>,
    wrap: &impl Fn(PodLogLine) -> T,
) -> bool {
    loop {
        tokio::select! {
            line = lines.next() => match line {
                Some(line) => {
                    if tx.send(wrap(line)).await.is_err() {
                        return false;
                    }
                }
                None => return true,
            },
            () = tx.closed() => return false,
        }
    }
}

/// A watch event of either kind (boxed: Jobs and pods are large).
enum Change {
    Job(Box<Event<Job>>),
    Pod(Box<Event<Pod>>),
}

/// The state behind [`Cluster::watch_build`]: the Job and pods as the
/// watches last said, kept by kube-runtime's reflector writers (which
/// buffer a re-list until it is complete).
struct BuildWatch {
    changes: BoxStream<'static, Result<Change, watcher::Error>>,
    jobs: Writer<Job>,
    pods: Writer<Pod>,
    jobs_listed: bool,
    pods_listed: bool,
    job_seen: bool,
    /// A pod was seen: its disappearance while the Job still runs is the
    /// Job going (cancelled, timed out), not a pod yet to be created.
    pod_seen: bool,
    last: Option<BuildOutcome>,
    /// The last step seen running: a timeout kills the pod, and this says
    /// which step it was in.
    last_step: Option<BuildStep>,
    done: bool,
    /// `namespace/job name`, for errors.
    object: String,
}

impl BuildWatch {
    /// The next changed outcome (or error); `None` once the build ended.
    async fn next_outcome(&mut self) -> Option<Result<BuildOutcome>> {
        while !self.done {
            let change = match self.changes.next().await {
                None => {
                    self.done = true;
                    return Some(Err(Error::Encoding("build watch ended".into())));
                }
                Some(Err(err)) => {
                    tracing::warn!(error = %err, object = %self.object, "build watch failed; retrying");
                    continue;
                }
                Some(Ok(change)) => change,
            };
            match &change {
                Change::Job(event) => {
                    self.jobs.apply_watcher_event(event);
                    self.jobs_listed |= matches!(**event, Event::InitDone);
                }
                Change::Pod(event) => {
                    self.pods.apply_watcher_event(event);
                    self.pods_listed |= matches!(**event, Event::InitDone);
                }
            }
            if !(self.jobs_listed && self.pods_listed) {
                continue;
            }
            let jobs = self.jobs.as_reader().state();
            let outcome = match jobs.first() {
                Some(job) => {
                    self.job_seen = true;
                    let pods: Vec<Pod> = self
                        .pods
                        .as_reader()
                        .state()
                        .iter()
                        .map(|p| (**p).clone())
                        .collect();
                    let outcome = BuildOutcome::from_job(job, &pods);
                    if pods.is_empty() && self.pod_seen && !outcome.is_terminal() {
                        // The Job's verdict (or its deletion) is on its way.
                        continue;
                    }
                    self.pod_seen |= !pods.is_empty();
                    outcome
                }
                None if self.job_seen => BuildOutcome::Failed {
                    step: self.last_step,
                    reason: FailureReason::Deleted,
                    exit_code: None,
                    message: "the build's Job was deleted (cancelled) before it finished".into(),
                },
                None => {
                    self.done = true;
                    return Some(Err(Error::NotFound {
                        kind: "Job".into(),
                        object: self.object.clone(),
                    }));
                }
            };
            let outcome = match outcome {
                BuildOutcome::Failed {
                    step: None,
                    reason: reason @ FailureReason::TimedOut,
                    exit_code,
                    message,
                } => BuildOutcome::Failed {
                    step: self.last_step,
                    reason,
                    exit_code,
                    message,
                },
                other => other,
            };
            if let BuildOutcome::Running { step } = &outcome {
                self.last_step = Some(*step);
            }
            if self.last.as_ref() == Some(&outcome) {
                continue;
            }
            self.done = outcome.is_terminal();
            self.last = Some(outcome.clone());
            return Some(Ok(outcome));
        }
        None
    }
}
