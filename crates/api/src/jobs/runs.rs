//! Runs of a job: queue one now, list, read, and its output.

use std::collections::HashMap;

use chrono::Utc;
use ferry_db::entities::enums::{AuditResourceType, ConcurrencyPolicy, JobRunStatus, JobTrigger};
use ferry_db::entities::{job_runs, jobs, projects};
use ferry_db::sea_orm::sea_query::{Expr, ExprTrait as _, Query};
use ferry_db::sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, ConnectionTrait, DbBackend,
    EntityTrait as _, Iterable as _, QueryFilter as _, QueryOrder as _, QuerySelect as _, Select,
};
use ferry_k8s::Cluster;
use ferry_proto::ferry::v1 as pb;
use serde_json::json;
use tonic::Request;
use uuid::Uuid;

use super::JobApi;
use crate::audit::Entry;
use crate::auth::Credential;
use crate::authz::{Action, Caller, Scope};
use crate::paging::{Key, Keyset, Kind, desc};
use crate::wire::{parse_id, ts};
use crate::{Error, Result};

/// The most of a run's stored output GetJobRunLogs returns (the end).
pub const MAX_LOG_BYTES: usize = 1 << 20;

/// ListJobRuns' order: newest first, then id.
static RUNS: Keyset<job_runs::Column> = Keyset {
    list: "jobRuns",
    columns: &[
        desc(job_runs::Column::CreatedAt, Kind::Time),
        desc(job_runs::Column::Id, Kind::Id),
    ],
};

fn status_to_pb(s: JobRunStatus) -> pb::JobRunStatus {
    match s {
        JobRunStatus::Pending => pb::JobRunStatus::Pending,
        JobRunStatus::Running => pb::JobRunStatus::Running,
        JobRunStatus::Succeeded => pb::JobRunStatus::Succeeded,
        JobRunStatus::Failed => pb::JobRunStatus::Failed,
        JobRunStatus::Cancelled => pb::JobRunStatus::Cancelled,
        JobRunStatus::TimedOut => pb::JobRunStatus::TimedOut,
        JobRunStatus::Skipped => pb::JobRunStatus::Skipped,
        JobRunStatus::Missed => pb::JobRunStatus::Missed,
        JobRunStatus::Planned => pb::JobRunStatus::Planned,
    }
}

fn trigger_to_pb(t: JobTrigger) -> pb::JobRunTrigger {
    match t {
        JobTrigger::Schedule => pb::JobRunTrigger::Schedule,
        JobTrigger::Manual => pb::JobRunTrigger::Manual,
        JobTrigger::Api => pb::JobRunTrigger::Api,
    }
}

/// Whether a run is still active (`ferry_migration::ACTIVE_RUN`): it
/// counts against FORBID and its output may grow.
fn is_active(s: JobRunStatus) -> bool {
    matches!(s, JobRunStatus::Pending | JobRunStatus::Running)
}

pub(crate) fn run_to_pb(r: &job_runs::Model) -> pb::JobRun {
    pb::JobRun {
        id: r.id.to_string(),
        job_id: r.job_id.to_string(),
        status: status_to_pb(r.status).into(),
        trigger: trigger_to_pb(r.trigger_type).into(),
        scheduled_for: r.scheduled_for.map(ts),
        started_at: r.started_at.map(ts),
        finished_at: r.finished_at.map(ts),
        exit_code: r.exit_code,
        reason: r.reason.clone().unwrap_or_default(),
        attempts: r.attempts,
        kubernetes_job: r.k8s_job_name.clone().unwrap_or_default(),
        triggered_by: r.triggered_by.map(|u| u.to_string()).unwrap_or_default(),
        created_at: Some(ts(r.created_at)),
        rendered_job: r.rendered.clone().unwrap_or_default(),
    }
}

/// `query` without the (unbounded) `logs` column, read as NULL: lists and
/// `last_run` never show output, and a page of 500 runs must not carry it.
fn without_logs(query: Select<job_runs::Entity>) -> Select<job_runs::Entity> {
    query
        .select_only()
        .columns(job_runs::Column::iter().filter(|c| !matches!(c, job_runs::Column::Logs)))
        .column_as(Expr::cust("CAST(NULL AS TEXT)"), "logs")
}

/// The newest run of each of `jobs` (without output), in ONE query: runs
/// whose `(job_id, created_at)` is their job's latest; a tie goes to the
/// larger id.
pub(crate) async fn newest_runs<C: ConnectionTrait>(
    db: &C,
    jobs: &[Uuid],
) -> Result<HashMap<Uuid, job_runs::Model>> {
    use job_runs::Column as R;
    if jobs.is_empty() {
        return Ok(HashMap::new());
    }
    let latest = Query::select()
        .column(R::JobId)
        .expr(Expr::col(R::CreatedAt).max())
        .from(job_runs::Entity)
        .and_where(Expr::col(R::JobId).is_in(jobs.iter().copied()))
        .group_by_col(R::JobId)
        .to_owned();
    let rows = without_logs(job_runs::Entity::find())
        .filter(R::JobId.is_in(jobs.iter().copied()))
        .filter(
            Expr::tuple([
                Expr::col((job_runs::Entity, R::JobId)),
                Expr::col((job_runs::Entity, R::CreatedAt)),
            ])
            .in_subquery(latest),
        )
        .all(db)
        .await?;
    let mut newest: HashMap<Uuid, job_runs::Model> = HashMap::new();
    for run in rows {
        match newest.get(&run.job_id) {
            Some(kept) if kept.id > run.id => {}
            _ => {
                newest.insert(run.job_id, run);
            }
        }
    }
    Ok(newest)
}

/// The last `max` bytes of `logs` as lines, oldest first; a line cut by
/// the limit is dropped whole.
fn tail_lines(logs: &str, max: usize) -> Vec<String> {
    let tail = if logs.len() > max {
        let mut start = logs.len() - max;
        while !logs.is_char_boundary(start) {
            start += 1;
        }
        let rest = &logs[start..];
        if logs[..start].ends_with('\n') {
            rest
        } else {
            rest.split_once('\n').map_or("", |(_, after)| after)
        }
    } else {
        logs
    };
    tail.lines().map(str::to_owned).collect()
}

impl JobApi {
    /// The run `id`, if the caller may perform `action` on its job.
    async fn run_row(
        &self,
        caller: &Caller,
        action: Action,
        id: Uuid,
    ) -> Result<(Scope, job_runs::Model)> {
        let db = &self.0.identity.db;
        let run = job_runs::Entity::find_by_id(id)
            .one(db)
            .await?
            .ok_or_else(|| Error::NotFound("job run not found".into()))?;
        let (scope, _, _) = caller
            .job(db, action, run.job_id)
            .await
            .map_err(|e| match e {
                Error::NotFound(_) => Error::NotFound("job run not found".into()),
                other => other,
            })?;
        Ok((scope, run))
    }

    pub(super) async fn run_now(
        &self,
        request: Request<pb::RunJobNowRequest>,
    ) -> Result<pb::JobRun> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let id = parse_id("id", &request.get_ref().id)?;
        let db = &self.0.identity.db;
        let (scope, _, _) = caller.job(db, Action::JobRun, id).await?;
        // A run asked for through an API token (CI) is an `api` run; the
        // token's user is still recorded.
        let trigger = match caller.credential {
            Credential::Session { .. } => JobTrigger::Manual,
            Credential::ApiToken { .. } => JobTrigger::Api,
        };
        let txn = crate::db::begin_write(db).await?;
        // Re-read inside the transaction, locked on PostgreSQL (SQLite's
        // `BEGIN IMMEDIATE` already serializes): two calls under FORBID, or
        // one racing the scheduler, must not both find no active run.
        let mut query = jobs::Entity::find_by_id(id);
        if txn.get_database_backend() == DbBackend::Postgres {
            query = query.lock_exclusive();
        }
        let job = query
            .one(&txn)
            .await?
            .ok_or_else(|| Error::NotFound("job not found".into()))?;
        // A disabled job still runs on demand (`kubectl create job
        // --from=cronjob`); only the schedule stops.
        if job.concurrency_policy == ConcurrencyPolicy::Forbid {
            let active = without_logs(job_runs::Entity::find())
                .filter(job_runs::Column::JobId.eq(id))
                .filter(Expr::cust(ferry_migration::ACTIVE_RUN))
                .order_by_desc(job_runs::Column::CreatedAt)
                .one(&txn)
                .await?;
            if let Some(active) = active {
                let state = match active.status {
                    JobRunStatus::Pending => "waiting to start",
                    _ => "running",
                };
                return Err(Error::FailedPrecondition(format!(
                    "a run of job {} is still {state} (id {}); wait for it to end, or set the \
                     job's concurrency policy to REPLACE (or ALLOW) to run anyway",
                    job.name, active.id
                )));
            }
        }
        // REPLACE and ALLOW just queue: ferry-scheduler dispatches pending
        // runs and cancels the active one under REPLACE.
        let run = job_runs::ActiveModel {
            id: Set(Uuid::now_v7()),
            job_id: Set(id),
            status: Set(JobRunStatus::Pending),
            trigger_type: Set(trigger),
            scheduled_for: Set(None),
            triggered_by: Set(Some(caller.user_id)),
            attempts: Set(0),
            k8s_job_name: Set(None),
            logs: Set(None),
            exit_code: Set(None),
            reason: Set(None),
            rendered: Set(None),
            started_at: Set(None),
            finished_at: Set(None),
            created_at: Set(Utc::now()),
        }
        .insert(&txn)
        .await?;
        scope
            .audit(
                &txn,
                Entry::new("job.run", AuditResourceType::Job, id).details(json!({
                    "name": job.name,
                    "runId": run.id,
                    "trigger": format!("{trigger:?}").to_lowercase(),
                })),
            )
            .await?;
        txn.commit().await?;
        Ok(run_to_pb(&run))
    }

    pub(super) async fn list_runs(
        &self,
        request: Request<pb::ListJobRunsRequest>,
    ) -> Result<pb::ListJobRunsResponse> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let id = parse_id("jobId", &req.job_id)?;
        let page = RUNS.page(req.page_size, &req.page_token)?;
        let db = &self.0.identity.db;
        caller.job(db, Action::JobRead, id).await?;
        let query = without_logs(job_runs::Entity::find()).filter(job_runs::Column::JobId.eq(id));
        let rows = page.apply(query).all(db).await?;
        let (rows, next_page_token) =
            page.finish(rows, |r| vec![Key::Time(r.created_at), Key::Id(r.id)]);
        Ok(pb::ListJobRunsResponse {
            runs: rows.iter().map(run_to_pb).collect(),
            next_page_token,
        })
    }

    pub(super) async fn get_run(
        &self,
        request: Request<pb::GetJobRunRequest>,
    ) -> Result<pb::JobRun> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let id = parse_id("id", &request.get_ref().id)?;
        let (_, run) = self.run_row(&caller, Action::JobRead, id).await?;
        Ok(run_to_pb(&run))
    }

    /// The run's output: what the scheduler stored when it ended, or, while
    /// it runs, its pod's log read from the cluster (what is stored, if the
    /// cluster cannot be read), marked `partial`.
    pub(super) async fn run_logs(
        &self,
        request: Request<pb::GetJobRunLogsRequest>,
    ) -> Result<pb::JobRunLogs> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let id = parse_id("id", &request.get_ref().id)?;
        let (_, run) = self.run_row(&caller, Action::JobRead, id).await?;
        let live = match (&self.0.deployer.cluster, run.status) {
            (Some(cluster), JobRunStatus::Running) => self.live_logs(cluster, &run).await,
            _ => None,
        };
        let text = live.as_deref().or(run.logs.as_deref()).unwrap_or_default();
        Ok(pb::JobRunLogs {
            run_id: run.id.to_string(),
            lines: tail_lines(text, MAX_LOG_BYTES),
            partial: is_active(run.status),
        })
    }

    /// A running run's pod log, from its project's namespace; `None` (and
    /// a warning) when the cluster cannot say.
    async fn live_logs(&self, cluster: &Cluster, run: &job_runs::Model) -> Option<String> {
        let db = &self.0.identity.db;
        let namespace = jobs::Entity::find_by_id(run.job_id)
            .find_also_related(projects::Entity)
            .one(db)
            .await
            .ok()
            .flatten()
            .and_then(|(_, project)| project)
            .map(|p| p.namespace)?;
        match cluster.job_run_logs(&namespace, run.id).await {
            Ok(text) => Some(text),
            Err(err) => {
                tracing::warn!(run = %run.id, error = %err, "reading a running job's log failed; answering what is stored");
                None
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn logs_keep_the_last_bytes_in_whole_lines() {
        assert!(tail_lines("", 10).is_empty());
        assert_eq!(tail_lines("a\nb\n", 10), ["a", "b"]);
        assert_eq!(tail_lines("a\r\nb", 10), ["a", "b"]);
        // The cut falls inside "first": that line is dropped whole.
        assert_eq!(
            tail_lines("first\nsecond\nthird\n", 14),
            ["second", "third"]
        );
        // The cut falls on a line start: nothing is dropped.
        assert_eq!(
            tail_lines("first\nsecond\nthird\n", 13),
            ["second", "third"]
        );
        // Never inside a UTF-8 character.
        assert_eq!(tail_lines("ééé\nok", 4), ["ok"]);
        let big = "x".repeat(MAX_LOG_BYTES) + "\nlast\n";
        assert_eq!(tail_lines(&big, MAX_LOG_BYTES), ["last"]);
    }

    #[test]
    fn active_runs_are_the_migrations_active_runs() {
        use ferry_db::sea_orm::{ActiveEnum as _, Iterable as _};
        let active: Vec<String> = JobRunStatus::iter()
            .filter(|s| is_active(*s))
            .map(|s| format!("'{}'", s.to_value()))
            .collect();
        assert_eq!(
            ferry_migration::ACTIVE_RUN,
            format!("status IN ({})", active.join(", "))
        );
    }
}
