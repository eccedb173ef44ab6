//! Users' scheduled jobs on a cluster: one Kubernetes Job per run, in the
//! project's namespace, rendered from a [`JobRunSpec`] and found again by
//! its labels (`app.kubernetes.io/managed-by=ferry`, `ferry.dev/job-run-id`).
//!
//! The pod is hardened like a service's (no service-account token, no
//! service links, RuntimeDefault seccomp, no privilege escalation, every
//! capability dropped); the timeout is `activeDeadlineSeconds`, retries are
//! `backoffLimit`, and finished Jobs are collected after a day
//! (`ttlSecondsAfterFinished`) once ferry-scheduler has stored their logs.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EnvFromSource, LocalObjectReference, Pod, PodSecurityContext, PodSpec,
    PodTemplateSpec, SecretEnvSource,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, ListParams, LogParams, Preconditions};
use uuid::Uuid;

use crate::cluster::{Cluster, check_owned, deleted};
use crate::error::{Error, Result};
use crate::render::{
    CONTAINER_NAME, check_label, container_security_context, labels, non_empty, ownership_labels,
    runtime_default,
};

/// Label carrying the Ferry job's id.
pub const JOB_ID: &str = "ferry.dev/job-id";
/// Label carrying the run's id: one Kubernetes Job per run.
pub const JOB_RUN_ID: &str = "ferry.dev/job-run-id";
/// `app.kubernetes.io/component` of job-run objects.
pub const COMPONENT: &str = "job";
/// Finished Jobs (and their pods and logs) stay this long.
pub const TTL_AFTER_FINISHED_SECONDS: i32 = 86_400;
/// Longest log kept of one run.
pub const MAX_LOG_BYTES: usize = 1024 * 1024;

/// One run of a job, as the scheduler asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRunSpec {
    pub organization_id: Uuid,
    pub project_id: Uuid,
    /// The project's namespace.
    pub namespace: String,
    pub job_id: Uuid,
    /// The job's name (a DNS label).
    pub job_name: String,
    pub run_id: Uuid,
    /// The Kubernetes Job's name, see [`kubernetes_job_name`].
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    /// A service's env Secret (`<service>-env`) read with `envFrom`.
    pub env_secret: Option<String>,
    /// A service's image pull Secret (`<service>-registry`).
    pub pull_secret: Option<String>,
    pub timeout_seconds: Option<i64>,
    /// Extra attempts after a failed one.
    pub retries: i32,
}

/// The Kubernetes Job's name for a run: `<job>-<minutes since the epoch>`
/// for a scheduled slot (as a CronJob names its Jobs, so a slot has one
/// name whoever creates it) and `<job>-m<8 hex of the run id>` otherwise.
pub fn kubernetes_job_name(job_name: &str, slot_minutes: Option<i64>, run_id: Uuid) -> String {
    let suffix = match slot_minutes {
        Some(m) => format!("{m}"),
        None => format!("m{}", &run_id.simple().to_string()[..8]),
    };
    // 63 characters in all; the job name is a DNS label already.
    let keep = 62usize.saturating_sub(suffix.len()).min(job_name.len());
    let stem = job_name[..keep].trim_end_matches('-');
    format!("{stem}-{suffix}")
}

/// Selector of one run's Job and pods.
pub fn run_selector(run_id: Uuid) -> String {
    format!(
        "{}={},{JOB_RUN_ID}={run_id}",
        labels::MANAGED_BY,
        labels::FERRY
    )
}

/// Selector of every job-run Job Ferry manages.
pub fn runs_selector() -> String {
    format!(
        "{}={},{}={COMPONENT}",
        labels::MANAGED_BY,
        labels::FERRY,
        labels::COMPONENT
    )
}

fn run_labels(spec: &JobRunSpec) -> BTreeMap<String, String> {
    let mut l = ownership_labels(spec.organization_id, spec.project_id, &spec.namespace);
    l.extend([
        (labels::NAME.to_owned(), spec.job_name.clone()),
        (labels::INSTANCE.to_owned(), spec.name.clone()),
        (labels::COMPONENT.to_owned(), COMPONENT.to_owned()),
        (JOB_ID.to_owned(), spec.job_id.to_string()),
        (JOB_RUN_ID.to_owned(), spec.run_id.to_string()),
    ]);
    l
}

/// The run's Job. Refuses names and values the API server would refuse.
pub fn render_job_run(spec: &JobRunSpec) -> Result<Job> {
    check_label("namespace", &spec.namespace)?;
    check_label("name", &spec.name)?;
    if spec.image.trim().is_empty() {
        return Err(Error::Invalid {
            field: "image".into(),
            reason: "must not be empty".into(),
        });
    }
    if !(0..=10).contains(&spec.retries) {
        return Err(Error::Invalid {
            field: "retries".into(),
            reason: "must be between 0 and 10".into(),
        });
    }
    let labels = run_labels(spec);
    let container = Container {
        name: CONTAINER_NAME.into(),
        image: Some(spec.image.clone()),
        command: non_empty(&spec.command),
        args: non_empty(&spec.args),
        env_from: spec.env_secret.as_ref().map(|name| {
            vec![EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name: name.clone(),
                    optional: None,
                }),
                ..EnvFromSource::default()
            }]
        }),
        // The last lines of a failed run say why, even after its pod is gone.
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        security_context: Some(container_security_context(false)),
        ..Container::default()
    };
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(spec.name.clone()),
            namespace: Some(spec.namespace.clone()),
            labels: Some(labels.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(spec.retries),
            active_deadline_seconds: spec.timeout_seconds,
            ttl_seconds_after_finished: Some(TTL_AFTER_FINISHED_SECONDS),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    restart_policy: Some("Never".into()),
                    image_pull_secrets: spec
                        .pull_secret
                        .as_ref()
                        .map(|name| vec![LocalObjectReference { name: name.clone() }]),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(PodSecurityContext {
                        seccomp_profile: Some(runtime_default()),
                        ..PodSecurityContext::default()
                    }),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    })
}

/// The run's Job as YAML (what a plan-only installation records).
pub fn job_run_yaml(spec: &JobRunSpec) -> Result<String> {
    Ok(serde_yaml_ng::to_string(&render_job_run(spec)?)?)
}

/// Where a run's Job stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// Created, its pod not running yet (`reason` in words).
    Pending {
        reason: String,
    },
    Running {
        attempts: i32,
    },
    Succeeded {
        attempts: i32,
    },
    Failed {
        attempts: i32,
        exit_code: Option<i32>,
        /// `activeDeadlineSeconds` passed.
        timed_out: bool,
        reason: String,
    },
}

impl RunOutcome {
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            RunOutcome::Succeeded { .. } | RunOutcome::Failed { .. }
        )
    }

    /// Reads a run from its Job and the Job's pods.
    pub fn from_job(job: &Job, pods: &[&Pod]) -> RunOutcome {
        let status = job.status.clone().unwrap_or_default();
        let attempts = (status.failed.unwrap_or(0)
            + status.succeeded.unwrap_or(0)
            + status.active.unwrap_or(0))
        .max(i32::from(!pods.is_empty()));
        let newest = pods
            .iter()
            .max_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
        let terminated = newest
            .and_then(|p| p.status.as_ref())
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.iter().find(|c| c.name == CONTAINER_NAME))
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.terminated.clone());
        let conditions = status.conditions.unwrap_or_default();
        let is_true = |t: &str| {
            conditions
                .iter()
                .find(|c| c.type_ == t && c.status == "True")
        };
        if let Some(failed) = is_true("Failed") {
            let reason = failed.reason.clone().unwrap_or_default();
            let timed_out = reason == "DeadlineExceeded";
            let message = failed.message.clone().unwrap_or_default();
            let tail = terminated
                .as_ref()
                .and_then(|t| t.message.clone())
                .filter(|m| !m.trim().is_empty());
            let reason = match (&tail, timed_out) {
                (_, true) => format!("timed out: {message}"),
                (Some(tail), false) => format!("{message}; last output: {}", last_line(tail)),
                (None, false) => message,
            };
            return RunOutcome::Failed {
                attempts: attempts.max(1),
                exit_code: terminated.as_ref().map(|t| t.exit_code),
                timed_out,
                reason,
            };
        }
        if is_true("Complete").is_some() {
            return RunOutcome::Succeeded {
                attempts: attempts.max(1),
            };
        }
        let running = newest
            .and_then(|p| p.status.as_ref())
            .and_then(|s| s.phase.as_deref())
            == Some("Running");
        if running {
            return RunOutcome::Running { attempts };
        }
        let waiting = newest
            .and_then(|p| p.status.as_ref())
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.first())
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.waiting.as_ref())
            .map(|w| {
                let reason = w.reason.clone().unwrap_or_default();
                match w.message.as_deref() {
                    Some(m) if !m.is_empty() => format!("{reason}: {m}"),
                    _ => reason,
                }
            });
        RunOutcome::Pending {
            reason: waiting.unwrap_or_else(|| "waiting for the Job's pod".into()),
        }
    }
}

fn last_line(text: &str) -> &str {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default()
}

/// Where each run of `jobs` stands, its pods found among `pods` by the run
/// id label (a Job without a valid run id or namespace is skipped).
pub(crate) fn run_statuses<'a>(
    jobs: impl Iterator<Item = &'a Job>,
    pods: impl Iterator<Item = &'a Pod>,
) -> Vec<RunStatus> {
    let mut by_run: BTreeMap<&str, Vec<&Pod>> = BTreeMap::new();
    for pod in pods {
        if let Some(id) = pod.labels().get(JOB_RUN_ID) {
            by_run.entry(id).or_default().push(pod);
        }
    }
    jobs.filter_map(|job| {
        let id = job.labels().get(JOB_RUN_ID)?;
        let run_id = Uuid::parse_str(id).ok()?;
        let pods = by_run
            .get(id.as_str())
            .map(Vec::as_slice)
            .unwrap_or_default();
        Some(RunStatus {
            run_id,
            namespace: job.namespace()?,
            name: job.name_any(),
            outcome: RunOutcome::from_job(job, pods),
        })
    })
    .collect()
}

/// One run's Job found on the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStatus {
    pub run_id: Uuid,
    pub namespace: String,
    pub name: String,
    pub outcome: RunOutcome,
}

impl Cluster {
    /// Creates the run's Job (server-side apply: starting the same run
    /// twice changes nothing). Refuses a Job of that name Ferry does not
    /// own or that belongs to another run.
    pub async fn start_job_run(&self, spec: &JobRunSpec) -> Result<String> {
        let job = render_job_run(spec)?;
        let api = self.api::<Job>(&spec.namespace);
        let wanted = [
            (labels::MANAGED_BY, labels::FERRY.to_owned()),
            (JOB_RUN_ID, spec.run_id.to_string()),
        ];
        if let Some(existing) = api.get_metadata_opt(&spec.name).await? {
            check_owned("Job", &existing.metadata, &wanted)?;
        }
        let applied = self.apply_one(api, &job).await?;
        tracing::info!(namespace = %spec.namespace, job = %applied.name_any(), run_id = %spec.run_id, "job run started");
        Ok(applied.name_any())
    }

    /// Where one run stands; `None` when it has no Job (never created, or
    /// collected).
    pub async fn job_run_status(&self, namespace: &str, run_id: Uuid) -> Result<Option<RunStatus>> {
        let Some((job, pods)) = self.labelled_job(namespace, &run_selector(run_id)).await? else {
            return Ok(None);
        };
        Ok(Some(RunStatus {
            run_id,
            namespace: namespace.to_owned(),
            name: job.name_any(),
            outcome: RunOutcome::from_job(&job, &pods.iter().collect::<Vec<_>>()),
        }))
    }

    /// Every job-run Job Ferry manages, in every namespace, with where it
    /// stands: two LIST calls whatever the number of runs. The scheduler's
    /// loop follows them with [`Cluster::watch_job_runs`] instead; this is
    /// for a one-off look.
    pub async fn job_runs(&self) -> Result<Vec<RunStatus>> {
        let params = ListParams::default().labels(&runs_selector());
        let jobs = Api::<Job>::all(self.client().clone()).list(&params).await?;
        let pods = Api::<Pod>::all(self.client().clone()).list(&params).await?;
        Ok(run_statuses(jobs.items.iter(), pods.items.iter()))
    }

    /// A cheap readiness check: the API server answers and lets this
    /// identity list Ferry's job-run Jobs in every namespace (what
    /// [`Cluster::job_runs`] needs). One LIST with `limit=1`, so its cost
    /// does not grow with the cluster.
    pub async fn probe_job_runs(&self) -> Result<()> {
        let params = ListParams::default().labels(&runs_selector()).limit(1);
        Api::<Job>::all(self.client().clone()).list(&params).await?;
        Ok(())
    }

    /// Deletes a run's Job and its pods (background propagation; a Job's
    /// API default would orphan them), only if it carries Ferry's labels
    /// and this run's id, conditional on the checked uid. `false` when
    /// there was none.
    pub async fn cancel_job_run(&self, namespace: &str, name: &str, run_id: Uuid) -> Result<bool> {
        let wanted = [
            (labels::MANAGED_BY, labels::FERRY.to_owned()),
            (JOB_RUN_ID, run_id.to_string()),
        ];
        let jobs = self.api::<Job>(namespace);
        let Some(job) = jobs.get_metadata_opt(name).await? else {
            return Ok(false);
        };
        check_owned("Job", &job.metadata, &wanted)?;
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: job.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        let gone = deleted(jobs.delete(name, &params).await)?;
        if gone {
            tracing::info!(namespace, job = name, %run_id, "job run deleted");
        }
        Ok(gone)
    }

    /// The run's output so far (newest pod; at most the last
    /// [`MAX_LOG_BYTES`]); empty when it has no pod.
    pub async fn job_run_logs(&self, namespace: &str, run_id: Uuid) -> Result<String> {
        let api = self.api::<Pod>(namespace);
        let pods = api
            .list(&ListParams::default().labels(&run_selector(run_id)))
            .await?;
        let Some(pod) = pods
            .items
            .iter()
            .max_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0))
        else {
            return Ok(String::new());
        };
        let params = LogParams {
            container: Some(CONTAINER_NAME.into()),
            limit_bytes: Some(MAX_LOG_BYTES as i64),
            tail_lines: Some(10_000),
            ..LogParams::default()
        };
        match api.logs(&pod.name_any(), &params).await {
            Ok(text) => Ok(text),
            // A pod that never started has no log yet.
            Err(kube::Error::Api(status)) if status.code == 400 || status.is_not_found() => {
                Ok(String::new())
            }
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn spec() -> JobRunSpec {
        JobRunSpec {
            organization_id: Uuid::nil(),
            project_id: Uuid::nil(),
            namespace: "ferry-p-1234".into(),
            job_id: Uuid::nil(),
            job_name: "nightly-report".into(),
            run_id: Uuid::nil(),
            name: kubernetes_job_name("nightly-report", Some(29_000_000), Uuid::nil()),
            image: "busybox:1.36".into(),
            command: vec!["sh".into(), "-c".into()],
            args: vec!["echo hi".into()],
            env_secret: Some("web-env".into()),
            pull_secret: None,
            timeout_seconds: Some(600),
            retries: 2,
        }
    }

    #[test]
    fn names_are_deterministic_labels() {
        assert_eq!(
            kubernetes_job_name("nightly", Some(29_000_000), Uuid::new_v4()),
            "nightly-29000000"
        );
        let long = "a".repeat(63);
        let name = kubernetes_job_name(&long, Some(29_000_000), Uuid::nil());
        assert!(name.len() <= 63, "{name}");
        let manual = kubernetes_job_name("x", None, Uuid::nil());
        assert_eq!(manual, "x-m00000000");
        // A stem ending in '-' after truncation is trimmed.
        let dashy = format!("{}-b", "a".repeat(53));
        let name = kubernetes_job_name(&dashy, Some(29_000_000), Uuid::nil());
        assert!(!name.contains("--"), "{name}");
    }

    #[test]
    fn the_job_is_hardened_and_bounded() {
        let job = render_job_run(&spec()).unwrap();
        let js = job.spec.as_ref().unwrap();
        assert_eq!(js.backoff_limit, Some(2));
        assert_eq!(js.active_deadline_seconds, Some(600));
        assert_eq!(
            js.ttl_seconds_after_finished,
            Some(TTL_AFTER_FINISHED_SECONDS)
        );
        let pod = js.template.spec.as_ref().unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.enable_service_links, Some(false));
        let c = &pod.containers[0];
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_owned()][..])
        );
        assert_eq!(c.args.as_deref(), Some(&["echo hi".to_owned()][..]));
        let labels = job.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[JOB_RUN_ID], Uuid::nil().to_string());
        assert_eq!(labels[labels::MANAGED_BY], "ferry");
    }

    #[test]
    fn bad_specs_are_refused() {
        let mut s = spec();
        s.name = "Bad_Name".into();
        assert!(render_job_run(&s).is_err());
        let mut s = spec();
        s.image = " ".into();
        assert!(render_job_run(&s).is_err());
        let mut s = spec();
        s.retries = 11;
        assert!(render_job_run(&s).is_err());
    }
}
