//! Job definitions: create, read, list, update, delete. Every field is
//! held to the bounds m0014's CHECKs enforce, so the api accepts nothing
//! the database refuses, and `next_run_at` is kept for ferry-scheduler.

use chrono::{DateTime, Utc};
use ferry_cron::Schedule;
use ferry_db::entities::enums::{AuditResourceType, ConcurrencyPolicy};
use ferry_db::entities::{job_runs, jobs};
use ferry_db::sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, EntityTrait as _,
    IntoActiveModel as _, QueryFilter as _,
};
use ferry_proto::ferry::v1 as pb;
use serde_json::json;
use tonic::Request;
use uuid::Uuid;

use super::JobApi;
use super::runs::{newest_runs, run_to_pb};
use crate::audit::Entry;
use crate::authz::{Action, Caller};
use crate::paging::{Key, Keyset, Kind, asc};
use crate::wire::{parse_id, ts};
use crate::workloads::{unique_as, validate};
use crate::{Error, Result};

/// The longest timeout and starting deadline (7 days), as m0014 checks.
pub const MAX_SECONDS: i32 = 604_800;
/// The most retries (Kubernetes `backoffLimit`), as m0014 checks.
pub const MAX_RETRIES: i32 = 10;
/// Fire times shown in `Job.next_runs`.
pub const NEXT_RUNS: usize = 5;

/// ListJobs' order: by name, then id.
static JOBS: Keyset<jobs::Column> = Keyset {
    list: "jobs",
    columns: &[
        asc(jobs::Column::Name, Kind::Text),
        asc(jobs::Column::Id, Kind::Id),
    ],
};

fn invalid(field: &str, why: &str) -> Error {
    Error::InvalidArgument(format!("{field}: {why}"))
}

/// A schedule or time-zone refusal, naming its field.
fn cron_error(err: ferry_cron::Error) -> Error {
    match err {
        ferry_cron::Error::Schedule(why) => invalid("schedule", &why),
        ferry_cron::Error::Timezone(why) => invalid("timezone", &why),
    }
}

/// The time zone to store: its IANA name, `UTC` when empty.
pub fn timezone(value: &str) -> Result<String> {
    ferry_cron::timezone(value)
        .map(|tz| tz.name().to_owned())
        .map_err(cron_error)
}

/// The schedule `expression` in `tz`; `None` when empty (on demand only).
pub fn schedule(expression: &str, tz: &str) -> Result<Option<Schedule>> {
    if expression.trim().is_empty() {
        return Ok(None);
    }
    Schedule::parse(expression, tz)
        .map(Some)
        .map_err(cron_error)
}

/// A number of seconds where 0 means none: `None`, or 1 to [`MAX_SECONDS`].
pub fn optional_seconds(field: &str, value: i32) -> Result<Option<i32>> {
    match value {
        0 => Ok(None),
        v if (1..=MAX_SECONDS).contains(&v) => Ok(Some(v)),
        _ => Err(invalid(
            field,
            &format!("0 (none) or 1 to {MAX_SECONDS} seconds (7 days)"),
        )),
    }
}

pub fn retries(value: i32) -> Result<i32> {
    if (0..=MAX_RETRIES).contains(&value) {
        Ok(value)
    } else {
        Err(invalid("retries", &format!("0 to {MAX_RETRIES}")))
    }
}

fn concurrency_policy(value: i32) -> Result<ConcurrencyPolicy> {
    match pb::ConcurrencyPolicy::try_from(value) {
        Ok(pb::ConcurrencyPolicy::Unspecified | pb::ConcurrencyPolicy::Forbid) => {
            Ok(ConcurrencyPolicy::Forbid)
        }
        Ok(pb::ConcurrencyPolicy::Allow) => Ok(ConcurrencyPolicy::Allow),
        Ok(pb::ConcurrencyPolicy::Replace) => Ok(ConcurrencyPolicy::Replace),
        Err(_) => Err(invalid(
            "concurrencyPolicy",
            "must be ALLOW, FORBID or REPLACE",
        )),
    }
}

fn policy_to_pb(p: ConcurrencyPolicy) -> pb::ConcurrencyPolicy {
    match p {
        ConcurrencyPolicy::Allow => pb::ConcurrencyPolicy::Allow,
        ConcurrencyPolicy::Forbid => pb::ConcurrencyPolicy::Forbid,
        ConcurrencyPolicy::Replace => pb::ConcurrencyPolicy::Replace,
    }
}

/// What a job runs: exactly one of an image and a service (whose current
/// image and environment the scheduler resolves at run time).
fn target(image: Option<&str>, service: Option<Uuid>) -> Result<()> {
    match (image, service) {
        (None, None) => Err(invalid(
            "image",
            "required: the image to run, or serviceId to run a service's current image",
        )),
        (Some(_), Some(_)) => Err(invalid(
            "serviceId",
            "a job runs either image or serviceId, not both (send an empty one to clear it)",
        )),
        (Some(image), None) => validate::image("image", image),
        (None, Some(_)) => Ok(()),
    }
}

/// THE `jobs.next_run_at` rule, the contract with ferry-scheduler: the
/// first fire time after `now` of an enabled job's schedule, else none.
pub fn next_run_at(
    schedule: Option<&Schedule>,
    enabled: bool,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    schedule.filter(|_| enabled).and_then(|s| s.next_after(now))
}

/// The wire form of `job`, with its newest run and the fire times after
/// `now`.
pub(crate) fn job_to_pb(
    job: &jobs::Model,
    last_run: Option<&job_runs::Model>,
    now: DateTime<Utc>,
) -> pb::Job {
    // Stored schedules were validated when written; one that no longer
    // parses shows neither fire times nor a description.
    let parsed = job
        .schedule
        .as_deref()
        .and_then(|e| Schedule::parse(e, &job.timezone).ok());
    let next_runs = match &parsed {
        Some(s) if job.enabled => s.upcoming(now, NEXT_RUNS).into_iter().map(ts).collect(),
        _ => Vec::new(),
    };
    pb::Job {
        id: job.id.to_string(),
        project_id: job.project_id.to_string(),
        name: job.name.clone(),
        schedule: job.schedule.clone().unwrap_or_default(),
        timezone: job.timezone.clone(),
        image: job.image.clone().unwrap_or_default(),
        command: serde_json::from_value(job.command.clone()).unwrap_or_default(),
        args: serde_json::from_value(job.args.clone()).unwrap_or_default(),
        service_id: job.service_id.map(|s| s.to_string()).unwrap_or_default(),
        timeout_seconds: job.timeout_seconds.unwrap_or(0),
        retries: job.max_retries,
        concurrency_policy: policy_to_pb(job.concurrency_policy).into(),
        starting_deadline_seconds: job.starting_deadline_seconds.unwrap_or(0),
        enabled: job.enabled,
        next_runs,
        schedule_description: parsed.map(|s| s.describe()).unwrap_or_default(),
        last_run: last_run.map(run_to_pb),
        created_at: Some(ts(job.created_at)),
        updated_at: Some(ts(job.updated_at)),
    }
}

fn service_not_in_project() -> Error {
    Error::NotFound("serviceId: no such service in the job's project".into())
}

impl JobApi {
    /// Checks that the job of `project_id` may run the service
    /// `service_id`: a service of the same project (else `NotFound`, also
    /// for another organization's), which the caller may manage, since the
    /// job runs with its environment, secrets included.
    async fn check_service(
        &self,
        caller: &Caller,
        project_id: Uuid,
        service_id: Uuid,
    ) -> Result<()> {
        let db = &self.0.identity.db;
        let (_, service, _) = caller
            .service(db, Action::ServiceManage, service_id)
            .await
            .map_err(|e| match e {
                Error::NotFound(_) => service_not_in_project(),
                Error::PermissionDenied(_) => Error::PermissionDenied(
                    "serviceId: a job that runs a service gets its environment, secrets included: \
                     it needs manage rights on the service"
                        .into(),
                ),
                other => other,
            })?;
        if service.project_id != project_id {
            return Err(service_not_in_project());
        }
        Ok(())
    }

    pub(super) async fn create(&self, request: Request<pb::CreateJobRequest>) -> Result<pb::Job> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let project_id = parse_id("projectId", &req.project_id)?;
        let db = &self.0.identity.db;
        let (scope, project) = caller.project(db, Action::JobManage, project_id).await?;
        validate::dns_label("name", &req.name, 63)?;
        let tz = timezone(&req.timezone)?;
        let parsed = schedule(&req.schedule, &tz)?;
        let image = (!req.image.is_empty()).then_some(req.image.as_str());
        let service_id = match req.service_id.trim() {
            "" => None,
            id => Some(parse_id("serviceId", id)?),
        };
        target(image, service_id)?;
        validate::argv("command", &req.command)?;
        validate::argv("args", &req.args)?;
        let timeout = optional_seconds("timeoutSeconds", req.timeout_seconds)?;
        let retries = retries(req.retries)?;
        let policy = concurrency_policy(req.concurrency_policy)?;
        let deadline = optional_seconds("startingDeadlineSeconds", req.starting_deadline_seconds)?;
        if let Some(service_id) = service_id {
            self.check_service(&caller, project.id, service_id).await?;
        }
        let enabled = !req.disabled;
        let now = Utc::now();
        let txn = crate::db::begin_write(db).await?;
        let job = jobs::ActiveModel {
            id: Set(Uuid::now_v7()),
            project_id: Set(project.id),
            name: Set(req.name.clone()),
            schedule: Set(parsed.as_ref().map(|s| s.expression().to_owned())),
            timezone: Set(tz),
            image: Set(image.map(str::to_owned)),
            service_id: Set(service_id),
            command: Set(json!(req.command)),
            args: Set(json!(req.args)),
            concurrency_policy: Set(policy),
            timeout_seconds: Set(timeout),
            max_retries: Set(retries),
            starting_deadline_seconds: Set(deadline),
            enabled: Set(enabled),
            next_run_at: Set(next_run_at(parsed.as_ref(), enabled, now)),
            created_by: Set(Some(caller.user_id)),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&txn)
        .await
        .map_err(unique_as(
            "name: the project already has a job with this name",
        ))?;
        scope
            .audit(
                &txn,
                Entry::new("job.create", AuditResourceType::Job, job.id).details(json!({
                    "name": job.name,
                    "projectId": job.project_id,
                    "schedule": job.schedule,
                    "timezone": job.timezone,
                    "image": job.image,
                    "serviceId": job.service_id,
                    "enabled": job.enabled,
                })),
            )
            .await?;
        txn.commit().await?;
        Ok(job_to_pb(&job, None, now))
    }

    pub(super) async fn get(&self, request: Request<pb::GetJobRequest>) -> Result<pb::Job> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let id = parse_id("id", &request.get_ref().id)?;
        let db = &self.0.identity.db;
        let (_, job, _) = caller.job(db, Action::JobRead, id).await?;
        let last = newest_runs(db, &[job.id]).await?;
        Ok(job_to_pb(&job, last.get(&job.id), Utc::now()))
    }

    pub(super) async fn list(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<pb::ListJobsResponse> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let project_id = parse_id("projectId", &req.project_id)?;
        let page = JOBS.page(req.page_size, &req.page_token)?;
        let db = &self.0.identity.db;
        caller.project(db, Action::JobRead, project_id).await?;
        let query = jobs::Entity::find().filter(jobs::Column::ProjectId.eq(project_id));
        let rows = page.apply(query).all(db).await?;
        let (rows, next_page_token) =
            page.finish(rows, |j| vec![Key::Text(j.name.clone()), Key::Id(j.id)]);
        // The page's newest runs in one query, not one per job.
        let ids: Vec<Uuid> = rows.iter().map(|j| j.id).collect();
        let last = newest_runs(db, &ids).await?;
        let now = Utc::now();
        Ok(pb::ListJobsResponse {
            jobs: rows
                .iter()
                .map(|j| job_to_pb(j, last.get(&j.id), now))
                .collect(),
            next_page_token,
        })
    }

    pub(super) async fn update(&self, request: Request<pb::UpdateJobRequest>) -> Result<pb::Job> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let id = parse_id("id", &req.id)?;
        let db = &self.0.identity.db;
        let (scope, job, _) = caller.job(db, Action::JobManage, id).await?;
        let now = Utc::now();
        let mut changed = Vec::new();
        let mut row = job.clone().into_active_model();

        // Schedule, time zone and enabled decide `next_run_at` together:
        // validated in the final zone, recomputed only when one of them
        // really changes (so a due slot the scheduler has not fired yet
        // is not skipped by an update of something else).
        if req.schedule.is_some() || req.timezone.is_some() || req.enabled.is_some() {
            let tz = match &req.timezone {
                Some(t) => timezone(t)?,
                None => job.timezone.clone(),
            };
            let expression = match &req.schedule {
                Some(s) => s.as_str(),
                None => job.schedule.as_deref().unwrap_or_default(),
            };
            let parsed = schedule(expression, &tz)?;
            let stored = parsed.as_ref().map(|s| s.expression().to_owned());
            let enabled = req.enabled.unwrap_or(job.enabled);
            if stored != job.schedule || tz != job.timezone || enabled != job.enabled {
                row.next_run_at = Set(next_run_at(parsed.as_ref(), enabled, now));
            }
            if req.schedule.is_some() {
                row.schedule = Set(stored);
                changed.push("schedule");
            }
            if req.timezone.is_some() {
                row.timezone = Set(tz);
                changed.push("timezone");
            }
            if let Some(enabled) = req.enabled {
                row.enabled = Set(enabled);
                changed.push("enabled");
            }
        }

        let image = match &req.image {
            Some(i) if i.is_empty() => None,
            Some(i) => Some(i.as_str()),
            None => job.image.as_deref(),
        };
        let service_id = match req.service_id.as_deref().map(str::trim) {
            Some("") => None,
            Some(s) => Some(parse_id("serviceId", s)?),
            None => job.service_id,
        };
        target(image, service_id)?;
        if req.image.is_some() {
            row.image = Set(image.map(str::to_owned));
            changed.push("image");
        }
        if req.service_id.is_some() {
            row.service_id = Set(service_id);
            changed.push("serviceId");
        }
        if req.set_command {
            validate::argv("command", &req.command)?;
            row.command = Set(json!(req.command));
            changed.push("command");
        }
        if req.set_args {
            validate::argv("args", &req.args)?;
            row.args = Set(json!(req.args));
            changed.push("args");
        }
        if let Some(t) = req.timeout_seconds {
            row.timeout_seconds = Set(optional_seconds("timeoutSeconds", t)?);
            changed.push("timeoutSeconds");
        }
        if let Some(r) = req.retries {
            row.max_retries = Set(retries(r)?);
            changed.push("retries");
        }
        if let Some(p) = req.concurrency_policy {
            row.concurrency_policy = Set(concurrency_policy(p)?);
            changed.push("concurrencyPolicy");
        }
        if let Some(d) = req.starting_deadline_seconds {
            row.starting_deadline_seconds = Set(optional_seconds("startingDeadlineSeconds", d)?);
            changed.push("startingDeadlineSeconds");
        }
        // What runs with a service's environment is the service manager's
        // call: naming the service, or changing the command it runs.
        if let Some(service_id) = service_id
            && (req.service_id.is_some() || req.set_command || req.set_args)
        {
            self.check_service(&caller, job.project_id, service_id)
                .await?;
        }
        row.updated_at = Set(now);
        let txn = crate::db::begin_write(db).await?;
        let job = row.update(&txn).await?;
        scope
            .audit(
                &txn,
                Entry::new("job.update", AuditResourceType::Job, id)
                    .details(json!({ "name": job.name, "changed": changed })),
            )
            .await?;
        txn.commit().await?;
        let last = newest_runs(db, &[job.id]).await?;
        Ok(job_to_pb(&job, last.get(&job.id), now))
    }

    pub(super) async fn delete(&self, request: Request<pb::DeleteJobRequest>) -> Result<()> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let id = parse_id("id", &request.get_ref().id)?;
        let db = &self.0.identity.db;
        let (scope, job, _) = caller.job(db, Action::JobManage, id).await?;
        // Its runs go with it (cascade); ferry-scheduler deletes the
        // Kubernetes Jobs whose run row is gone.
        scope
            .remove(
                db,
                jobs::Entity::delete_many().filter(jobs::Column::Id.eq(id)),
                "job not found",
                Entry::new("job.delete", AuditResourceType::Job, id)
                    .details(json!({ "name": job.name, "projectId": job.project_id })),
            )
            .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn field_of(err: Error) -> String {
        match err {
            Error::InvalidArgument(m) => m.split(':').next().unwrap().to_owned(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bounds_match_the_database_checks() {
        assert_eq!(optional_seconds("timeoutSeconds", 0).unwrap(), None);
        assert_eq!(optional_seconds("timeoutSeconds", 1).unwrap(), Some(1));
        assert_eq!(
            optional_seconds("timeoutSeconds", 604_800).unwrap(),
            Some(604_800)
        );
        for bad in [-1, 604_801, i32::MAX, i32::MIN] {
            let err = optional_seconds("timeoutSeconds", bad).unwrap_err();
            assert_eq!(field_of(err), "timeoutSeconds", "{bad}");
        }
        assert_eq!(retries(0).unwrap(), 0);
        assert_eq!(retries(10).unwrap(), 10);
        assert_eq!(field_of(retries(11).unwrap_err()), "retries");
        assert_eq!(field_of(retries(-1).unwrap_err()), "retries");
        assert_eq!(
            concurrency_policy(0).unwrap(),
            ConcurrencyPolicy::Forbid,
            "unspecified is forbid"
        );
        assert_eq!(
            field_of(concurrency_policy(9).unwrap_err()),
            "concurrencyPolicy"
        );
    }

    #[test]
    fn schedules_and_zones_name_their_field() {
        assert_eq!(timezone("").unwrap(), "UTC");
        assert_eq!(timezone(" Europe/Berlin ").unwrap(), "Europe/Berlin");
        assert_eq!(field_of(timezone("Mars/Olympus").unwrap_err()), "timezone");
        assert!(schedule("  ", "UTC").unwrap().is_none());
        assert_eq!(
            schedule(" */5 * * * * ", "UTC")
                .unwrap()
                .unwrap()
                .expression(),
            "*/5 * * * *"
        );
        assert_eq!(
            field_of(schedule("61 * * * *", "UTC").unwrap_err()),
            "schedule"
        );
        assert_eq!(
            field_of(schedule("@daily", "Nowhere").unwrap_err()),
            "timezone"
        );
    }

    #[test]
    fn exactly_one_target() {
        let service = Some(Uuid::now_v7());
        assert!(target(Some("nginx:1"), None).is_ok());
        assert!(target(None, service).is_ok());
        assert_eq!(field_of(target(None, None).unwrap_err()), "image");
        assert_eq!(
            field_of(target(Some("nginx:1"), service).unwrap_err()),
            "serviceId"
        );
        assert_eq!(
            field_of(target(Some("bad image"), None).unwrap_err()),
            "image"
        );
    }

    #[test]
    fn next_run_at_only_for_enabled_scheduled_jobs() {
        let now = DateTime::parse_from_rfc3339("2026-03-01T10:07:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let s = schedule("*/15 * * * *", "UTC").unwrap();
        assert_eq!(
            next_run_at(s.as_ref(), true, now).map(|t| t.to_rfc3339()),
            Some("2026-03-01T10:15:00+00:00".to_owned())
        );
        assert_eq!(next_run_at(s.as_ref(), false, now), None);
        assert_eq!(next_run_at(None, true, now), None);
    }
}
