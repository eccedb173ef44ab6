//! From run rows to Kubernetes Jobs and back.
//!
//! - dispatch: a `pending` run gets its Job (or, without a cluster, is
//!   recorded as `planned` with the Job as YAML);
//! - track: a `running` run whose Job finished gets its outcome, exit code
//!   and logs; a Job deleted under it fails it;
//! - collect: Jobs of runs that are gone (job deleted) or cancelled
//!   (concurrency policy `replace`) are deleted.
//!
//! Dispatch reads the pending runs' jobs, projects and services in one
//! query each; without a cluster the planned runs are written in one
//! UPDATE. Tracking reads the job-run Jobs and pods from the loop's watch
//! ([`JobRunView`]); only before the watch has listed (or for a one-off
//! [`super::Engine::tick`]) does it LIST them, in two calls whatever the
//! number of runs.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use ferry_db::entities::enums::{ConcurrencyPolicy, DeploymentStatus, JobRunStatus};
use ferry_db::entities::{deployments, job_runs, jobs, projects, services};
use ferry_db::sea_orm::sea_query::{CaseStatement, Expr, ExprTrait as _};
use ferry_db::sea_orm::{
    ColumnTrait as _, Condition, DatabaseConnection, EntityTrait as _, QueryFilter as _,
    QueryOrder as _, QuerySelect as _,
};
use ferry_k8s::jobrun::{JobRunSpec, RunOutcome, RunStatus, job_run_yaml, kubernetes_job_name};
use ferry_k8s::jobwatch::JobRunView;
use ferry_k8s::{Cluster, Error as KubeError};
use uuid::Uuid;

use crate::Result;

/// Runs handled per step and tick.
const BATCH: u64 = 500;
/// A run that could not get its Job for this long fails.
const DISPATCH_GIVE_UP: Duration = Duration::minutes(10);
/// A run started this recently whose Job a watch does not show yet is
/// not failed: the watch may lag the create (a LIST cannot).
const WATCH_GRACE: Duration = Duration::seconds(30);
/// The reason of a planned run.
const PLANNED: &str = "no cluster is configured: this is the Job Ferry would create";

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub started: usize,
    pub planned: usize,
    pub finished: usize,
    pub failed_to_start: usize,
    pub collected: usize,
}

/// Turns run rows into Jobs and Job outcomes into run rows.
#[derive(Clone)]
pub struct Runs {
    db: DatabaseConnection,
    cluster: Option<Cluster>,
}

use super::ACTIVE;

impl Runs {
    pub fn new(db: DatabaseConnection, cluster: Option<Cluster>) -> Self {
        Self { db, cluster }
    }

    pub(crate) fn cluster(&self) -> Option<&Cluster> {
        self.cluster.as_ref()
    }

    /// Starts (or plans) every pending run.
    pub async fn dispatch(&self, now: DateTime<Utc>) -> Result<Report> {
        let pending = job_runs::Entity::find()
            .filter(job_runs::Column::Status.eq(JobRunStatus::Pending))
            .order_by_asc(job_runs::Column::CreatedAt)
            .limit(BATCH)
            .all(&self.db)
            .await?;
        let mut report = Report::default();
        if pending.is_empty() {
            return Ok(report);
        }
        // The runs' jobs with their projects, and the services jobs name.
        let job_ids: HashSet<Uuid> = pending.iter().map(|r| r.job_id).collect();
        let found: HashMap<Uuid, (jobs::Model, projects::Model)> = jobs::Entity::find()
            .filter(jobs::Column::Id.is_in(job_ids))
            .find_also_related(projects::Entity)
            .all(&self.db)
            .await?
            .into_iter()
            .filter_map(|(job, project)| Some((job.id, (job, project?))))
            .collect();
        let service_ids: HashSet<Uuid> = found
            .values()
            .filter(|(job, _)| job.image.is_none())
            .filter_map(|(job, _)| job.service_id)
            .collect();
        let services: HashMap<Uuid, services::Model> = if service_ids.is_empty() {
            HashMap::new()
        } else {
            services::Entity::find()
                .filter(services::Column::Id.is_in(service_ids))
                .all(&self.db)
                .await?
                .into_iter()
                .map(|s| (s.id, s))
                .collect()
        };
        let mut planned = Vec::new();
        for run in pending {
            // A run whose job is gone went with it (cascade).
            let Some((job, project)) = found.get(&run.job_id) else {
                continue;
            };
            let dispatched = self
                .dispatch_one(
                    &run,
                    job,
                    project,
                    &services,
                    now,
                    &mut report,
                    &mut planned,
                )
                .await;
            if let Err(err) = dispatched {
                tracing::warn!(run = %run.id, error = %err, "dispatching a job run failed; retrying next tick");
            }
        }
        report.planned += self.finish_planned(&planned, now).await?;
        Ok(report)
    }

    /// Starts `run`'s Job. Without a cluster the run is planned: pushed on
    /// `planned` (run id, Job YAML) for one UPDATE of them all, except for
    /// a REPLACE job's, finished at once, so its next run sees it done.
    #[allow(clippy::too_many_arguments)]
    async fn dispatch_one(
        &self,
        run: &job_runs::Model,
        job: &jobs::Model,
        project: &projects::Model,
        services: &HashMap<Uuid, services::Model>,
        now: DateTime<Utc>,
        report: &mut Report,
        planned: &mut Vec<(Uuid, String)>,
    ) -> Result<()> {
        let spec = match self.spec(run, job, project, services).await? {
            Ok(spec) => spec,
            Err(reason) => {
                report.failed_to_start += 1;
                return self
                    .finish_pending(run.id, JobRunStatus::Failed, reason, None, now)
                    .await;
            }
        };
        if job.concurrency_policy == ConcurrencyPolicy::Replace {
            // A manual run of a replace job displaces the older active ones
            // (scheduled runs did so when they fired).
            super::cancel_active(
                &self.db,
                job.id,
                Condition::all()
                    .add(job_runs::Column::Id.ne(run.id))
                    .add(job_runs::Column::CreatedAt.lte(run.created_at)),
                format!("replaced by run {}", run.id),
                now,
            )
            .await?;
        }
        let Some(cluster) = &self.cluster else {
            return match job_run_yaml(&spec) {
                Ok(yaml) if job.concurrency_policy == ConcurrencyPolicy::Replace => {
                    report.planned += 1;
                    self.finish_pending(
                        run.id,
                        JobRunStatus::Planned,
                        PLANNED.to_owned(),
                        Some(yaml),
                        now,
                    )
                    .await
                }
                Ok(yaml) => {
                    planned.push((run.id, yaml));
                    Ok(())
                }
                Err(err) => {
                    let why = format!("the Job is invalid: {err}");
                    self.finish_pending(run.id, JobRunStatus::Failed, why, None, now)
                        .await
                }
            };
        };
        match cluster.start_job_run(&spec).await {
            Ok(name) => {
                let moved = job_runs::Entity::update_many()
                    .col_expr(job_runs::Column::Status, Expr::value(JobRunStatus::Running))
                    .col_expr(job_runs::Column::K8sJobName, Expr::value(name.clone()))
                    .col_expr(job_runs::Column::StartedAt, Expr::value(now))
                    .col_expr(job_runs::Column::Attempts, Expr::value(1))
                    .filter(job_runs::Column::Id.eq(run.id))
                    .filter(job_runs::Column::Status.eq(JobRunStatus::Pending))
                    .exec(&self.db)
                    .await?;
                if moved.rows_affected == 0 {
                    // Cancelled while its Job was being created.
                    cluster
                        .cancel_job_run(&spec.namespace, &name, run.id)
                        .await?;
                } else {
                    report.started += 1;
                }
                Ok(())
            }
            Err(KubeError::Invalid { field, reason }) => {
                report.failed_to_start += 1;
                let why = format!("the Job is invalid: {field}: {reason}");
                self.finish_pending(run.id, JobRunStatus::Failed, why, None, now)
                    .await
            }
            Err(err @ KubeError::NotOwned { .. }) => {
                report.failed_to_start += 1;
                self.finish_pending(run.id, JobRunStatus::Failed, err.to_string(), None, now)
                    .await
            }
            Err(KubeError::Kube(kube::Error::Api(status))) if status.is_not_found() => {
                report.failed_to_start += 1;
                let why = format!(
                    "namespace {} does not exist yet: deploy a service of the project first",
                    spec.namespace
                );
                self.finish_pending(run.id, JobRunStatus::Failed, why, None, now)
                    .await
            }
            Err(err) if now - run.created_at > DISPATCH_GIVE_UP => {
                report.failed_to_start += 1;
                let why = format!("could not create the Job for {DISPATCH_GIVE_UP}: {err}");
                self.finish_pending(run.id, JobRunStatus::Failed, why, None, now)
                    .await
            }
            Err(err) => Err(err.into()),
        }
    }

    /// The run's Job, or why it cannot have one (in words).
    async fn spec(
        &self,
        run: &job_runs::Model,
        job: &jobs::Model,
        project: &projects::Model,
        services: &HashMap<Uuid, services::Model>,
    ) -> Result<std::result::Result<JobRunSpec, String>> {
        let strings = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        };
        let (image, env_secret, pull_secret) = match (job.image.clone(), job.service_id) {
            (Some(image), _) => (image, None, None),
            (None, Some(service_id)) => {
                let Some(service) = services.get(&service_id) else {
                    return Ok(Err("its service was deleted".into()));
                };
                let image = match service.image.clone() {
                    Some(image) => Some(image),
                    None => deployments::Entity::find()
                        .filter(deployments::Column::ServiceId.eq(service.id))
                        .filter(
                            deployments::Column::Status
                                .is_in([DeploymentStatus::Running, DeploymentStatus::Success]),
                        )
                        .filter(deployments::Column::Image.is_not_null())
                        .order_by_desc(deployments::Column::CreatedAt)
                        .one(&self.db)
                        .await?
                        .and_then(|d| d.image),
                };
                let Some(image) = image else {
                    return Ok(Err(format!(
                        "service {} has no image yet: deploy it first",
                        service.name
                    )));
                };
                let pull = service
                    .registry_integration_id
                    .map(|_| format!("{}-registry", service.name));
                (image, Some(format!("{}-env", service.name)), pull)
            }
            (None, None) => return Ok(Err("the job names neither an image nor a service".into())),
        };
        Ok(Ok(JobRunSpec {
            organization_id: project.organization_id,
            project_id: project.id,
            namespace: project.namespace.clone(),
            job_id: job.id,
            job_name: job.name.clone(),
            run_id: run.id,
            name: kubernetes_job_name(
                &job.name,
                run.scheduled_for.map(|t| t.timestamp().div_euclid(60)),
                run.id,
            ),
            image,
            command: strings(&job.command),
            args: strings(&job.args),
            env_secret,
            pull_secret,
            timeout_seconds: job.timeout_seconds.map(i64::from),
            retries: job.max_retries,
        }))
    }

    /// Marks the `planned` runs (id, Job YAML) planned in one UPDATE; the
    /// number of runs that were still pending.
    async fn finish_planned(
        &self,
        planned: &[(Uuid, String)],
        now: DateTime<Utc>,
    ) -> Result<usize> {
        if planned.is_empty() {
            return Ok(0);
        }
        let mut rendered = CaseStatement::new();
        for (id, yaml) in planned {
            rendered = rendered.case(
                Expr::col(job_runs::Column::Id).eq(*id),
                Expr::value(yaml.clone()),
            );
        }
        let done = job_runs::Entity::update_many()
            .col_expr(job_runs::Column::Status, Expr::value(JobRunStatus::Planned))
            .col_expr(job_runs::Column::Reason, Expr::value(PLANNED))
            .col_expr(job_runs::Column::Rendered, rendered.into())
            .col_expr(job_runs::Column::FinishedAt, Expr::value(now))
            .filter(job_runs::Column::Id.is_in(planned.iter().map(|(id, _)| *id)))
            .filter(job_runs::Column::Status.eq(JobRunStatus::Pending))
            .exec(&self.db)
            .await?;
        Ok(usize::try_from(done.rows_affected).unwrap_or(usize::MAX))
    }

    async fn finish_pending(
        &self,
        id: Uuid,
        status: JobRunStatus,
        reason: String,
        rendered: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let txn = ferry_db::begin_write(&self.db).await?;
        let done = job_runs::Entity::update_many()
            .col_expr(job_runs::Column::Status, Expr::value(status))
            .col_expr(job_runs::Column::Reason, Expr::value(reason.clone()))
            .col_expr(job_runs::Column::Rendered, Expr::value(rendered))
            .col_expr(job_runs::Column::FinishedAt, Expr::value(now))
            .filter(job_runs::Column::Id.eq(id))
            .filter(job_runs::Column::Status.eq(JobRunStatus::Pending))
            .exec(&txn)
            .await?;
        // The notification event commits with the status (or not at all).
        ferry_db::outbox::job_run_finished(
            &txn,
            id,
            None,
            status,
            &reason,
            done.rows_affected == 1,
        )
        .await?;
        txn.commit().await?;
        Ok(())
    }

    /// Records finished Jobs on their runs and deletes the Jobs of runs
    /// that are gone or cancelled; the Jobs come from `watched` when the
    /// loop's watch has listed, else from two LISTs.
    pub async fn track(&self, now: DateTime<Utc>, watched: Option<&JobRunView>) -> Result<Report> {
        let Some(cluster) = &self.cluster else {
            return Ok(Report::default());
        };
        let found = match watched {
            Some(view) => view.runs(),
            None => cluster.job_runs().await?,
        };
        let on_cluster: HashMap<Uuid, RunStatus> =
            found.into_iter().map(|s| (s.run_id, s)).collect();
        let mut report = Report::default();
        let running = job_runs::Entity::find()
            .filter(job_runs::Column::Status.eq(JobRunStatus::Running))
            .order_by_asc(job_runs::Column::StartedAt)
            .limit(BATCH)
            .all(&self.db)
            .await?;
        for run in &running {
            match on_cluster.get(&run.id) {
                None if watched.is_some()
                    && run.started_at.is_some_and(|at| now - at < WATCH_GRACE) => {}
                None => {
                    self.finish_running(
                        run.id,
                        JobRunStatus::Failed,
                        run.attempts,
                        None,
                        "its Kubernetes Job was deleted outside Ferry".into(),
                        None,
                        now,
                    )
                    .await?;
                    report.finished += 1;
                }
                Some(found) if found.outcome.is_terminal() => {
                    let logs = match cluster.job_run_logs(&found.namespace, run.id).await {
                        Ok(logs) => Some(logs),
                        Err(err) => {
                            tracing::warn!(run = %run.id, error = %err, "reading a finished run's logs failed");
                            None
                        }
                    };
                    let (status, attempts, exit_code, reason) = match &found.outcome {
                        RunOutcome::Succeeded { attempts } => {
                            (JobRunStatus::Succeeded, *attempts, Some(0), String::new())
                        }
                        RunOutcome::Failed {
                            attempts,
                            exit_code,
                            timed_out,
                            reason,
                        } => (
                            if *timed_out {
                                JobRunStatus::TimedOut
                            } else {
                                JobRunStatus::Failed
                            },
                            *attempts,
                            *exit_code,
                            reason.clone(),
                        ),
                        _ => continue,
                    };
                    self.finish_running(run.id, status, attempts, exit_code, reason, logs, now)
                        .await?;
                    report.finished += 1;
                }
                Some(_) => {}
            }
        }
        report.collected = self.collect(cluster, &on_cluster).await?;
        Ok(report)
    }

    #[allow(clippy::too_many_arguments)]
    async fn finish_running(
        &self,
        id: Uuid,
        status: JobRunStatus,
        attempts: i32,
        exit_code: Option<i32>,
        reason: String,
        logs: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let txn = ferry_db::begin_write(&self.db).await?;
        let done = job_runs::Entity::update_many()
            .col_expr(job_runs::Column::Status, Expr::value(status))
            .col_expr(job_runs::Column::Attempts, Expr::value(attempts))
            .col_expr(job_runs::Column::ExitCode, Expr::value(exit_code))
            .col_expr(
                job_runs::Column::Reason,
                Expr::value((!reason.is_empty()).then(|| reason.clone())),
            )
            .col_expr(job_runs::Column::Logs, Expr::value(logs))
            .col_expr(job_runs::Column::FinishedAt, Expr::value(now))
            .filter(job_runs::Column::Id.eq(id))
            .filter(job_runs::Column::Status.eq(JobRunStatus::Running))
            .exec(&txn)
            .await?;
        // The notification event commits with the status (or not at all).
        ferry_db::outbox::job_run_finished(
            &txn,
            id,
            None,
            status,
            &reason,
            done.rows_affected == 1,
        )
        .await?;
        txn.commit().await?;
        Ok(())
    }

    /// Deletes still-active Jobs whose run is gone or was cancelled.
    async fn collect(
        &self,
        cluster: &Cluster,
        on_cluster: &HashMap<Uuid, RunStatus>,
    ) -> Result<usize> {
        let active: Vec<&RunStatus> = on_cluster
            .values()
            .filter(|s| !s.outcome.is_terminal())
            .collect();
        let mut keep: HashSet<Uuid> = HashSet::new();
        for chunk in active.chunks(500) {
            let ids: Vec<Uuid> = chunk.iter().map(|s| s.run_id).collect();
            let rows = job_runs::Entity::find()
                .select_only()
                .column(job_runs::Column::Id)
                .filter(job_runs::Column::Id.is_in(ids))
                .filter(job_runs::Column::Status.is_in(ACTIVE))
                .into_tuple::<Uuid>()
                .all(&self.db)
                .await?;
            keep.extend(rows);
        }
        let mut collected = 0;
        for status in active.into_iter().filter(|s| !keep.contains(&s.run_id)) {
            match cluster
                .cancel_job_run(&status.namespace, &status.name, status.run_id)
                .await
            {
                Ok(true) => collected += 1,
                Ok(false) => {}
                Err(err) => {
                    tracing::warn!(job = %status.name, error = %err, "deleting a stale job-run Job failed")
                }
            }
        }
        Ok(collected)
    }
}
