//! Scheduled jobs (`ferry.v1.JobService`) over real gRPC/TCP, on PostgreSQL
//! and SQLite: validation naming the field, schedules previewed as
//! ferry-cron computes them, `jobs.next_run_at` (the scheduler's contract)
//! kept on create and update, manual runs under the concurrency policy,
//! stored logs, deletion, paging, and who may do what.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use chrono::{DateTime, Timelike as _, Utc};
use ferry_cron::Schedule;
use ferry_db::entities::enums::{JobRunStatus, OrgRole};
use ferry_db::entities::{audit_logs, job_runs, jobs};
use ferry_db::sea_orm::prelude::Uuid;
use ferry_db::sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, DatabaseConnection,
    EntityTrait as _, IntoActiveModel as _, PaginatorTrait as _, QueryFilter as _,
};
use ferry_proto::ferry::v1 as pb;
use pb::job_service_client::JobServiceClient;
use pb::project_service_client::ProjectServiceClient;
use pb::service_service_client::ServiceServiceClient;
use support::*;
use tonic::transport::Channel;
use tonic::{Code, Status};

const IMAGE: &str = "ghcr.io/acme/report:1.2";

struct Env {
    api: Api,
    c: Clients,
    jobs: JobServiceClient<Channel>,
    services: ServiceServiceClient<Channel>,
    projects: ProjectServiceClient<Channel>,
    token: String,
    user_id: String,
    org: String,
    project: String,
}

async fn env(db: &DatabaseConnection) -> Env {
    let api = start(db, relaxed()).await;
    let mut c = clients(api.addr).await;
    let user = register(&mut c, "olga").await;
    let token = login(&mut c, "olga").await;
    let org = create_org(&mut c, &token, "Jobs Org").await.id;
    let mut projects = ProjectServiceClient::new(c.channel.clone());
    let project = new_project(&mut projects, &token, &org, "Shop").await;
    Env {
        api,
        jobs: JobServiceClient::new(c.channel.clone()),
        services: ServiceServiceClient::new(c.channel.clone()),
        projects,
        c,
        token,
        user_id: user.id,
        org,
        project,
    }
}

async fn new_project(
    projects: &mut ProjectServiceClient<Channel>,
    token: &str,
    org: &str,
    name: &str,
) -> String {
    projects
        .create_project(authed(
            pb::CreateProjectRequest {
                organization_id: org.into(),
                name: name.into(),
                ..Default::default()
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner()
        .id
}

impl Env {
    fn job(&self, name: &str) -> pb::CreateJobRequest {
        pb::CreateJobRequest {
            project_id: self.project.clone(),
            name: name.into(),
            image: IMAGE.into(),
            command: vec!["/bin/report".into()],
            args: vec!["--daily".into()],
            ..Default::default()
        }
    }

    async fn create(&mut self, request: pb::CreateJobRequest) -> Result<pb::Job, Status> {
        self.jobs
            .create_job(authed(request, &self.token))
            .await
            .map(tonic::Response::into_inner)
    }

    async fn get(&mut self, id: &str) -> Result<pb::Job, Status> {
        self.jobs
            .get_job(authed(pb::GetJobRequest { id: id.into() }, &self.token))
            .await
            .map(tonic::Response::into_inner)
    }

    async fn update(&mut self, request: pb::UpdateJobRequest) -> Result<pb::Job, Status> {
        self.jobs
            .update_job(authed(request, &self.token))
            .await
            .map(tonic::Response::into_inner)
    }

    async fn run(&mut self, id: &str) -> Result<pb::JobRun, Status> {
        self.jobs
            .run_job_now(authed(pb::RunJobNowRequest { id: id.into() }, &self.token))
            .await
            .map(tonic::Response::into_inner)
    }

    async fn runs(&mut self, job: &str) -> Vec<pb::JobRun> {
        self.jobs
            .list_job_runs(authed(
                pb::ListJobRunsRequest {
                    job_id: job.into(),
                    ..Default::default()
                },
                &self.token,
            ))
            .await
            .unwrap()
            .into_inner()
            .runs
    }

    async fn service(&mut self, project: &str, name: &str) -> String {
        self.services
            .create_service(authed(
                pb::CreateServiceRequest {
                    project_id: project.into(),
                    name: name.into(),
                    spec: Some(pb::create_service_request::Spec::Application(
                        pb::ApplicationSpec {
                            image: "ghcr.io/acme/web:1.0".into(),
                            ..Default::default()
                        },
                    )),
                    ports: vec![],
                },
                &self.token,
            ))
            .await
            .unwrap()
            .into_inner()
            .id
    }
}

fn time(t: Option<&prost_types::Timestamp>) -> DateTime<Utc> {
    let t = t.expect("a timestamp");
    DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap()).unwrap()
}

fn uuid(id: &str) -> Uuid {
    id.parse().unwrap()
}

async fn row(db: &DatabaseConnection, id: &str) -> jobs::Model {
    jobs::Entity::find_by_id(uuid(id))
        .one(db)
        .await
        .unwrap()
        .expect("the job row")
}

/// Asserts `InvalidArgument` whose message starts with `field: `.
#[track_caller]
fn assert_invalid<T: std::fmt::Debug>(result: Result<T, Status>, field: &str, what: &str) {
    let status = result.expect_err(what);
    assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
    assert!(
        status.message().starts_with(&format!("{field}: ")),
        "{what}: {}",
        status.message()
    );
}

/// The audit actions recorded for `resource`, oldest first.
async fn audited(db: &DatabaseConnection, resource: &str) -> Vec<String> {
    let mut rows = audit_logs::Entity::find()
        .filter(audit_logs::Column::ResourceId.eq(uuid(resource)))
        .all(db)
        .await
        .unwrap();
    rows.sort_by_key(|r| r.id);
    rows.into_iter().map(|r| r.action).collect()
}

#[tokio::test]
async fn jobs_are_validated_and_preview_their_schedule() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let mut e = env(&db.conn).await;

        // A cron in a time zone: the next 5 fire times, as ferry-cron
        // computes them, and the same first one stored for the scheduler.
        let job = e
            .create(pb::CreateJobRequest {
                schedule: "30 2 * * 1-5".into(),
                timezone: "Europe/Berlin".into(),
                ..e.job("nightly-report")
            })
            .await
            .unwrap();
        assert_eq!(job.schedule, "30 2 * * 1-5", "{b}");
        assert_eq!(job.timezone, "Europe/Berlin", "{b}");
        assert!(job.enabled, "{b}");
        assert_eq!(
            job.concurrency_policy(),
            pb::ConcurrencyPolicy::Forbid,
            "{b}: unspecified means forbid"
        );
        assert_eq!((job.command.len(), job.args.len()), (1, 1), "{b}");
        let created = time(job.created_at.as_ref());
        let expected = Schedule::parse("30 2 * * 1-5", "Europe/Berlin")
            .unwrap()
            .upcoming(created, 5);
        let next: Vec<DateTime<Utc>> = job.next_runs.iter().map(|t| time(Some(t))).collect();
        assert_eq!(next.len(), 5, "{b}");
        assert!(next.windows(2).all(|w| w[0] < w[1]), "{b}: {next:?}");
        assert_eq!(
            next.iter().map(DateTime::timestamp).collect::<Vec<_>>(),
            expected.iter().map(DateTime::timestamp).collect::<Vec<_>>(),
            "{b}"
        );
        assert!(
            job.schedule_description.contains("Europe/Berlin"),
            "{b}: {}",
            job.schedule_description
        );
        let stored = row(&db.conn, &job.id).await;
        assert_eq!(
            stored.next_run_at.map(|t| t.timestamp()),
            Some(next[0].timestamp()),
            "{b}"
        );
        assert_eq!(
            stored.created_by.map(|u| u.to_string()),
            Some(e.user_id.clone())
        );

        // Macros.
        for (name, expr, gap) in [("hourly", "@hourly", 3600), ("daily", "@daily", 86_400)] {
            let job = e
                .create(pb::CreateJobRequest {
                    schedule: expr.into(),
                    ..e.job(name)
                })
                .await
                .unwrap();
            let next: Vec<i64> = job.next_runs.iter().map(|t| t.seconds).collect();
            assert_eq!(next.len(), 5, "{b}: {expr}");
            assert!(next.windows(2).all(|w| w[1] - w[0] == gap), "{b}: {expr}");
            assert!(!job.schedule_description.is_empty(), "{b}: {expr}");
            assert!(job.schedule_description.contains("UTC"), "{b}: {expr}");
        }

        // No schedule: on demand only, nothing for the scheduler to fire.
        let manual = e.create(e.job("on-demand")).await.unwrap();
        assert!(manual.next_runs.is_empty(), "{b}");
        assert!(manual.schedule_description.is_empty(), "{b}");
        assert_eq!(manual.timezone, "UTC", "{b}");
        assert_eq!(row(&db.conn, &manual.id).await.next_run_at, None, "{b}");
        // Created disabled: a schedule, but no fire times.
        let off = e
            .create(pb::CreateJobRequest {
                schedule: "@hourly".into(),
                disabled: true,
                ..e.job("off")
            })
            .await
            .unwrap();
        assert!(!off.enabled && off.next_runs.is_empty(), "{b}");
        assert_eq!(row(&db.conn, &off.id).await.next_run_at, None, "{b}");

        // Everything the database would refuse is refused first, by field.
        let before = jobs::Entity::find().count(&db.conn).await.unwrap();
        let other = new_project(&mut e.projects, &e.token.clone(), &e.org.clone(), "Other").await;
        let foreign_service = e.service(&other, "elsewhere").await;
        let cases: Vec<(&str, pb::CreateJobRequest)> = vec![
            (
                "schedule",
                pb::CreateJobRequest {
                    schedule: "61 * * * *".into(),
                    ..e.job("a")
                },
            ),
            (
                "schedule",
                pb::CreateJobRequest {
                    schedule: "* * * *".into(),
                    ..e.job("a")
                },
            ),
            (
                "schedule",
                pb::CreateJobRequest {
                    schedule: "0 0 31 2 *".into(),
                    ..e.job("a")
                },
            ),
            (
                "schedule",
                pb::CreateJobRequest {
                    schedule: "@every 5m".into(),
                    ..e.job("a")
                },
            ),
            (
                "timezone",
                pb::CreateJobRequest {
                    schedule: "@daily".into(),
                    timezone: "Mars/Olympus_Mons".into(),
                    ..e.job("a")
                },
            ),
            (
                "timezone",
                pb::CreateJobRequest {
                    timezone: "Nowhere".into(),
                    ..e.job("a")
                },
            ),
            (
                "serviceId",
                pb::CreateJobRequest {
                    service_id: foreign_service.clone(),
                    ..e.job("a")
                },
            ),
            (
                "image",
                pb::CreateJobRequest {
                    image: String::new(),
                    ..e.job("a")
                },
            ),
            (
                "image",
                pb::CreateJobRequest {
                    image: "not an image".into(),
                    ..e.job("a")
                },
            ),
            (
                "serviceId",
                pb::CreateJobRequest {
                    image: String::new(),
                    service_id: "nope".into(),
                    ..e.job("a")
                },
            ),
            ("name", e.job("Bad_Name")),
            ("name", e.job("")),
            ("name", e.job(&"x".repeat(64))),
            ("name", e.job("-lead")),
            (
                "retries",
                pb::CreateJobRequest {
                    retries: 11,
                    ..e.job("a")
                },
            ),
            (
                "retries",
                pb::CreateJobRequest {
                    retries: -1,
                    ..e.job("a")
                },
            ),
            (
                "timeoutSeconds",
                pb::CreateJobRequest {
                    timeout_seconds: 604_801,
                    ..e.job("a")
                },
            ),
            (
                "timeoutSeconds",
                pb::CreateJobRequest {
                    timeout_seconds: -5,
                    ..e.job("a")
                },
            ),
            (
                "startingDeadlineSeconds",
                pb::CreateJobRequest {
                    starting_deadline_seconds: 604_801,
                    ..e.job("a")
                },
            ),
            (
                "concurrencyPolicy",
                pb::CreateJobRequest {
                    concurrency_policy: 9,
                    ..e.job("a")
                },
            ),
            (
                "command",
                pb::CreateJobRequest {
                    command: vec!["x".into(); 257],
                    ..e.job("a")
                },
            ),
            (
                "args",
                pb::CreateJobRequest {
                    args: vec!["a\0b".into()],
                    ..e.job("a")
                },
            ),
        ];
        for (field, request) in cases {
            let what = format!("{b}: {field} {:?}", (&request.name, &request.schedule));
            assert_invalid(e.create(request).await, field, &what);
        }
        // Both image and service: the field that should go is named.
        let here = e.service(&e.project.clone(), "web").await;
        assert_invalid(
            e.create(pb::CreateJobRequest {
                service_id: here.clone(),
                ..e.job("both")
            })
            .await,
            "serviceId",
            "both",
        );
        // Another project's service is not this job's to run.
        let err = e
            .create(pb::CreateJobRequest {
                image: String::new(),
                service_id: foreign_service.clone(),
                ..e.job("foreign")
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{b}: {err:?}");
        assert!(err.message().starts_with("serviceId: "), "{b}: {err:?}");
        // Bounds that are allowed.
        let edge = e
            .create(pb::CreateJobRequest {
                retries: 10,
                timeout_seconds: 604_800,
                starting_deadline_seconds: 1,
                concurrency_policy: pb::ConcurrencyPolicy::Replace.into(),
                ..e.job(&"e".repeat(63))
            })
            .await
            .unwrap();
        assert_eq!(
            (
                edge.retries,
                edge.timeout_seconds,
                edge.starting_deadline_seconds
            ),
            (10, 604_800, 1),
            "{b}"
        );
        // A service of the project, instead of an image.
        let svc_job = e
            .create(pb::CreateJobRequest {
                image: String::new(),
                service_id: here.clone(),
                ..e.job("migrate")
            })
            .await
            .unwrap();
        assert_eq!(
            (svc_job.image.as_str(), svc_job.service_id.as_str()),
            ("", here.as_str()),
            "{b}"
        );
        assert_eq!(
            jobs::Entity::find().count(&db.conn).await.unwrap(),
            before + 2,
            "{b}: refused requests wrote nothing"
        );

        // A name is unique in its project, not across projects.
        let dup = e.create(e.job("on-demand")).await.unwrap_err();
        assert_eq!(dup.code(), Code::AlreadyExists, "{b}: {dup:?}");
        assert!(dup.message().starts_with("name: "), "{b}: {dup:?}");
        e.create(pb::CreateJobRequest {
            project_id: other.clone(),
            ..e.job("on-demand")
        })
        .await
        .unwrap();

        assert_eq!(audited(&db.conn, &job.id).await, ["job.create"], "{b}");
        e.api.stop().await;
    }
}

#[tokio::test]
async fn updates_keep_next_run_at_for_the_scheduler() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let mut e = env(&db.conn).await;
        let job = e
            .create(pb::CreateJobRequest {
                schedule: "0 2 * * *".into(),
                ..e.job("backup")
            })
            .await
            .unwrap();
        let at = row(&db.conn, &job.id).await.next_run_at.unwrap();
        assert_eq!((at.hour(), at.minute()), (2, 0), "{b}: 02:00 UTC");

        // Another zone: 02:00 in Tokyo is 17:00 UTC.
        let tokyo = e
            .update(pb::UpdateJobRequest {
                id: job.id.clone(),
                timezone: Some("Asia/Tokyo".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        let at = row(&db.conn, &job.id).await.next_run_at.unwrap();
        assert_eq!((at.hour(), at.minute()), (17, 0), "{b}: {at}");
        assert_eq!(tokyo.next_runs[0].seconds, at.timestamp(), "{b}");
        assert_eq!(tokyo.schedule, "0 2 * * *", "{b}");

        // A new schedule: the next quarter hour.
        let before = Utc::now();
        e.update(pb::UpdateJobRequest {
            id: job.id.clone(),
            schedule: Some("*/15 * * * *".into()),
            ..Default::default()
        })
        .await
        .unwrap();
        let at = row(&db.conn, &job.id).await.next_run_at.unwrap();
        assert!(at > before, "{b}: {at}");
        assert!(at - before <= chrono::Duration::minutes(15), "{b}: {at}");
        assert_eq!((at.minute() % 15, at.second()), (0, 0), "{b}: {at}");

        // Disabled: no slot for the scheduler, no fire times shown.
        let off = e
            .update(pb::UpdateJobRequest {
                id: job.id.clone(),
                enabled: Some(false),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(!off.enabled && off.next_runs.is_empty(), "{b}");
        assert_eq!(row(&db.conn, &job.id).await.next_run_at, None, "{b}");
        // Enabled again: from now, never the slots missed while off.
        e.update(pb::UpdateJobRequest {
            id: job.id.clone(),
            enabled: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
        let at = row(&db.conn, &job.id).await.next_run_at.unwrap();
        assert!(at > Utc::now() - chrono::Duration::seconds(1), "{b}: {at}");

        // A slot the scheduler has not fired yet survives updates of
        // anything else, also a schedule sent again unchanged.
        let due = Utc::now() - chrono::Duration::minutes(3);
        let mut lagging = row(&db.conn, &job.id).await.into_active_model();
        lagging.next_run_at = Set(Some(due));
        lagging.update(&db.conn).await.unwrap();
        e.update(pb::UpdateJobRequest {
            id: job.id.clone(),
            retries: Some(3),
            schedule: Some("*/15 * * * *".into()),
            enabled: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
        let kept = row(&db.conn, &job.id).await;
        assert_eq!(
            kept.next_run_at.map(|t| t.timestamp()),
            Some(due.timestamp()),
            "{b}"
        );
        assert_eq!(kept.max_retries, 3, "{b}");

        // An empty schedule: on demand only.
        let manual = e
            .update(pb::UpdateJobRequest {
                id: job.id.clone(),
                schedule: Some(String::new()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(
            manual.schedule.is_empty() && manual.next_runs.is_empty(),
            "{b}"
        );
        let stored = row(&db.conn, &job.id).await;
        assert_eq!((stored.schedule, stored.next_run_at), (None, None), "{b}");

        // Refusals name the field and change nothing.
        let svc = e.service(&e.project.clone(), "web").await;
        for (field, request) in [
            (
                "schedule",
                pb::UpdateJobRequest {
                    schedule: Some("nope".into()),
                    ..Default::default()
                },
            ),
            (
                "timezone",
                pb::UpdateJobRequest {
                    timezone: Some("Atlantis/Capital".into()),
                    ..Default::default()
                },
            ),
            (
                "retries",
                pb::UpdateJobRequest {
                    retries: Some(11),
                    ..Default::default()
                },
            ),
            (
                "timeoutSeconds",
                pb::UpdateJobRequest {
                    timeout_seconds: Some(604_801),
                    ..Default::default()
                },
            ),
            (
                "image",
                pb::UpdateJobRequest {
                    image: Some(String::new()),
                    ..Default::default()
                },
            ),
            (
                "serviceId",
                pb::UpdateJobRequest {
                    service_id: Some(svc.clone()),
                    ..Default::default()
                },
            ),
            (
                "command",
                pb::UpdateJobRequest {
                    command: vec!["x".repeat(4097)],
                    set_command: true,
                    ..Default::default()
                },
            ),
        ] {
            let request = pb::UpdateJobRequest {
                id: job.id.clone(),
                ..request
            };
            assert_invalid(
                e.update(request).await,
                field,
                &format!("{b}: update {field}"),
            );
        }
        // Switching to the service's image: clear the image in the same call.
        let switched = e
            .update(pb::UpdateJobRequest {
                id: job.id.clone(),
                image: Some(String::new()),
                service_id: Some(svc.clone()),
                command: vec![],
                set_command: true,
                timeout_seconds: Some(0),
                concurrency_policy: Some(pb::ConcurrencyPolicy::Allow.into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            (
                switched.image.as_str(),
                switched.service_id.as_str(),
                switched.command.len()
            ),
            ("", svc.as_str(), 0),
            "{b}"
        );
        assert_eq!(
            switched.concurrency_policy(),
            pb::ConcurrencyPolicy::Allow,
            "{b}"
        );
        let stored = row(&db.conn, &job.id).await;
        assert_eq!((stored.image, stored.timeout_seconds), (None, None), "{b}");
        assert_eq!(stored.max_retries, 3, "{b}: untouched fields stay");

        let actions = audited(&db.conn, &job.id).await;
        assert_eq!(
            actions.first().map(String::as_str),
            Some("job.create"),
            "{b}"
        );
        assert_eq!(
            actions.iter().filter(|a| *a == "job.update").count(),
            7,
            "{b}: {actions:?}"
        );
        e.api.stop().await;
    }
}

async fn set_status(db: &DatabaseConnection, run: &str, status: JobRunStatus) {
    let mut r = job_runs::Entity::find_by_id(uuid(run))
        .one(db)
        .await
        .unwrap()
        .unwrap()
        .into_active_model();
    r.status = Set(status);
    r.update(db).await.unwrap();
}

#[tokio::test]
async fn run_now_queues_a_pending_run_under_the_concurrency_policy() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let mut e = env(&db.conn).await;
        // FORBID (the default): one active run at a time.
        let job = e
            .create(pb::CreateJobRequest {
                schedule: "@daily".into(),
                ..e.job("forbid")
            })
            .await
            .unwrap();
        assert!(job.last_run.is_none(), "{b}");
        let run = e.run(&job.id).await.unwrap();
        assert_eq!(run.status(), pb::JobRunStatus::Pending, "{b}");
        assert_eq!(run.trigger(), pb::JobRunTrigger::Manual, "{b}");
        assert_eq!(run.triggered_by, e.user_id, "{b}");
        assert_eq!((run.scheduled_for, run.attempts), (None, 0), "{b}");
        assert_eq!(run.job_id, job.id, "{b}");
        let listed = e.runs(&job.id).await;
        assert_eq!(listed, vec![run.clone()], "{b}");
        let stored = job_runs::Entity::find_by_id(uuid(&run.id))
            .one(&db.conn)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.scheduled_for, None, "{b}");

        for status in [JobRunStatus::Pending, JobRunStatus::Running] {
            set_status(&db.conn, &run.id, status).await;
            let err = e.run(&job.id).await.unwrap_err();
            assert_eq!(
                err.code(),
                Code::FailedPrecondition,
                "{b}: {status:?}: {err:?}"
            );
            assert!(err.message().contains(&run.id), "{b}: {}", err.message());
            assert!(
                err.message().contains("forbid"),
                "{b}: names the job: {}",
                err.message()
            );
            assert!(err.message().contains("REPLACE"), "{b}: {}", err.message());
        }
        assert_eq!(e.runs(&job.id).await.len(), 1, "{b}: nothing queued");
        // Once it ended, the next one may go.
        set_status(&db.conn, &run.id, JobRunStatus::Failed).await;
        let second = e.run(&job.id).await.unwrap();
        let got = e.get(&job.id).await.unwrap();
        assert_eq!(got.last_run.map(|r| r.id), Some(second.id.clone()), "{b}");
        let ids: Vec<String> = e.runs(&job.id).await.into_iter().map(|r| r.id).collect();
        assert_eq!(
            ids,
            [second.id.clone(), run.id.clone()],
            "{b}: newest first"
        );

        // REPLACE (and ALLOW) queue beside an active run; the scheduler
        // applies the policy when it dispatches.
        for (name, policy) in [
            ("replace", pb::ConcurrencyPolicy::Replace),
            ("allow", pb::ConcurrencyPolicy::Allow),
        ] {
            let job = e
                .create(pb::CreateJobRequest {
                    concurrency_policy: policy.into(),
                    ..e.job(name)
                })
                .await
                .unwrap();
            let first = e.run(&job.id).await.unwrap();
            let second = e.run(&job.id).await.unwrap();
            assert_ne!(first.id, second.id, "{b}");
            let runs = e.runs(&job.id).await;
            assert_eq!(runs.len(), 2, "{b}: {name}");
            assert!(
                runs.iter().all(|r| r.status() == pb::JobRunStatus::Pending),
                "{b}"
            );
        }

        // A disabled job still runs on demand.
        let off = e
            .create(pb::CreateJobRequest {
                schedule: "@hourly".into(),
                disabled: true,
                concurrency_policy: pb::ConcurrencyPolicy::Allow.into(),
                ..e.job("off")
            })
            .await
            .unwrap();
        e.run(&off.id).await.unwrap();

        // Through an API token: an `api` run, on the token's user.
        let pat =
            e.c.tokens
                .create_api_token(authed(
                    pb::CreateApiTokenRequest {
                        organization_id: e.org.clone(),
                        name: "ci".into(),
                        role: pb::OrganizationRole::Admin.into(),
                        expires_at: None,
                    },
                    &e.token,
                ))
                .await
                .unwrap()
                .into_inner()
                .token;
        let by_token = e
            .jobs
            .run_job_now(authed(pb::RunJobNowRequest { id: off.id.clone() }, &pat))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(by_token.trigger(), pb::JobRunTrigger::Api, "{b}");
        assert_eq!(by_token.triggered_by, e.user_id, "{b}");

        let got = e
            .jobs
            .get_job_run(authed(
                pb::GetJobRunRequest {
                    id: second.id.clone(),
                },
                &e.token,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.id, second.id, "{b}");
        assert_eq!(
            audited(&db.conn, &job.id).await,
            ["job.create", "job.run", "job.run"],
            "{b}: refused runs are not audited"
        );
        e.api.stop().await;
    }
}

#[tokio::test]
async fn stored_logs_and_rendered_jobs_are_returned() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let mut e = env(&db.conn).await;
        let job = e.create(e.job("report")).await.unwrap();
        let run = e.run(&job.id).await.unwrap();
        let logs = |e: &mut Env, id: &str| {
            let mut jobs = e.jobs.clone();
            let token = e.token.clone();
            let id = id.to_owned();
            async move {
                jobs.get_job_run_logs(authed(pb::GetJobRunLogsRequest { id }, &token))
                    .await
                    .unwrap()
                    .into_inner()
            }
        };
        let empty = logs(&mut e, &run.id).await;
        assert!(empty.lines.is_empty() && empty.partial, "{b}: {empty:?}");

        let mut r = job_runs::Entity::find_by_id(uuid(&run.id))
            .one(&db.conn)
            .await
            .unwrap()
            .unwrap()
            .into_active_model();
        r.status = Set(JobRunStatus::Running);
        r.logs = Set(Some("starting\nrow 1\r\nrow 2\n".into()));
        r.update(&db.conn).await.unwrap();
        let got = logs(&mut e, &run.id).await;
        assert_eq!(got.run_id, run.id, "{b}");
        assert_eq!(got.lines, ["starting", "row 1", "row 2"], "{b}");
        assert!(got.partial, "{b}: still running");

        // Ended, with more output than is returned: the last MiB, whole
        // lines only.
        let line = format!("{}\n", "y".repeat(999));
        let big = format!("first line\n{}done\n", line.repeat(1100));
        let mut r = job_runs::Entity::find_by_id(uuid(&run.id))
            .one(&db.conn)
            .await
            .unwrap()
            .unwrap()
            .into_active_model();
        r.status = Set(JobRunStatus::Succeeded);
        r.exit_code = Set(Some(0));
        r.logs = Set(Some(big));
        r.update(&db.conn).await.unwrap();
        let got = logs(&mut e, &run.id).await;
        assert!(!got.partial, "{b}");
        assert_eq!(got.lines.last().map(String::as_str), Some("done"), "{b}");
        assert_ne!(
            got.lines.first().map(String::as_str),
            Some("first line"),
            "{b}"
        );
        let bytes: usize = got.lines.iter().map(|l| l.len() + 1).sum();
        assert!(bytes <= 1 << 20, "{b}: {bytes}");
        assert!(bytes > (1 << 20) - 1000, "{b}: {bytes}");
        assert!(
            got.lines.iter().all(|l| l == "done" || l.len() == 999),
            "{b}"
        );
        // Lists never carry the output; the run's fields do show.
        let listed = &e.runs(&job.id).await[0];
        assert_eq!(
            (listed.status(), listed.exit_code),
            (pb::JobRunStatus::Succeeded, Some(0)),
            "{b}"
        );

        // A planned run (no cluster): the Job it would have been.
        let yaml = "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: report-1\n";
        let mut r = job_runs::Entity::find_by_id(uuid(&run.id))
            .one(&db.conn)
            .await
            .unwrap()
            .unwrap()
            .into_active_model();
        r.status = Set(JobRunStatus::Planned);
        r.rendered = Set(Some(yaml.into()));
        r.k8s_job_name = Set(Some("report-1".into()));
        r.update(&db.conn).await.unwrap();
        let got = e
            .jobs
            .get_job_run(authed(
                pb::GetJobRunRequest { id: run.id.clone() },
                &e.token,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.status(), pb::JobRunStatus::Planned, "{b}");
        assert_eq!(
            (got.rendered_job.as_str(), got.kubernetes_job.as_str()),
            (yaml, "report-1"),
            "{b}"
        );
        e.api.stop().await;
    }
}

#[tokio::test]
async fn deleting_a_job_deletes_its_runs() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let mut e = env(&db.conn).await;
        let job = e
            .create(pb::CreateJobRequest {
                concurrency_policy: pb::ConcurrencyPolicy::Allow.into(),
                ..e.job("doomed")
            })
            .await
            .unwrap();
        let keep = e.create(e.job("kept")).await.unwrap();
        let run = e.run(&job.id).await.unwrap();
        e.run(&job.id).await.unwrap();
        e.run(&keep.id).await.unwrap();
        e.jobs
            .delete_job(authed(
                pb::DeleteJobRequest { id: job.id.clone() },
                &e.token,
            ))
            .await
            .unwrap();
        assert_eq!(code(e.get(&job.id).await), Code::NotFound, "{b}");
        let gone = e
            .jobs
            .get_job_run(authed(
                pb::GetJobRunRequest { id: run.id.clone() },
                &e.token,
            ))
            .await;
        assert_eq!(code(gone), Code::NotFound, "{b}");
        let left = job_runs::Entity::find().all(&db.conn).await.unwrap();
        assert_eq!(left.len(), 1, "{b}: the other job's run stays");
        assert_eq!(left[0].job_id, uuid(&keep.id), "{b}");
        assert_eq!(
            audited(&db.conn, &job.id).await,
            ["job.create", "job.run", "job.run", "job.delete"],
            "{b}"
        );
        let again = e
            .jobs
            .delete_job(authed(
                pb::DeleteJobRequest { id: job.id.clone() },
                &e.token,
            ))
            .await;
        assert_eq!(code(again), Code::NotFound, "{b}");
        e.api.stop().await;
    }
}

#[tokio::test]
async fn jobs_page_by_name_and_runs_newest_first() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let mut e = env(&db.conn).await;
        let mut names = Vec::new();
        for i in [4, 1, 6, 0, 3, 5, 2] {
            let name = format!("job-{i}");
            e.create(pb::CreateJobRequest {
                concurrency_policy: pb::ConcurrencyPolicy::Allow.into(),
                ..e.job(&name)
            })
            .await
            .unwrap();
            names.push(name);
        }
        names.sort();
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let page = e
                .jobs
                .list_jobs(authed(
                    pb::ListJobsRequest {
                        project_id: e.project.clone(),
                        page_size: 3,
                        page_token: token,
                    },
                    &e.token,
                ))
                .await
                .unwrap()
                .into_inner();
            assert!(page.jobs.len() <= 3, "{b}");
            seen.extend(page.jobs);
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(
            seen.iter().map(|j| j.name.clone()).collect::<Vec<_>>(),
            names,
            "{b}"
        );

        // Runs of two jobs; each job's last run is its own newest.
        let (a, z) = (seen[0].id.clone(), seen[6].id.clone());
        let mut a_runs = Vec::new();
        for _ in 0..5 {
            a_runs.push(e.run(&a).await.unwrap().id);
            e.run(&z).await.unwrap();
        }
        let z_last = e.run(&z).await.unwrap().id;
        a_runs.reverse();
        let mut walked = Vec::new();
        let mut token = String::new();
        loop {
            let page = e
                .jobs
                .list_job_runs(authed(
                    pb::ListJobRunsRequest {
                        job_id: a.clone(),
                        page_size: 2,
                        page_token: token,
                    },
                    &e.token,
                ))
                .await
                .unwrap()
                .into_inner();
            walked.extend(page.runs.into_iter().map(|r| r.id));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(walked, a_runs, "{b}: newest first, no gaps or repeats");
        let listed = e
            .jobs
            .list_jobs(authed(
                pb::ListJobsRequest {
                    project_id: e.project.clone(),
                    ..Default::default()
                },
                &e.token,
            ))
            .await
            .unwrap()
            .into_inner()
            .jobs;
        let last: Vec<Option<String>> = listed
            .iter()
            .map(|j| j.last_run.as_ref().map(|r| r.id.clone()))
            .collect();
        assert_eq!(last[0], Some(a_runs[0].clone()), "{b}");
        assert_eq!(last[6], Some(z_last), "{b}");
        assert!(last[1..6].iter().all(Option::is_none), "{b}: {last:?}");

        // Page sizes and tokens as on every list.
        let too_big = e
            .jobs
            .list_jobs(authed(
                pb::ListJobsRequest {
                    project_id: e.project.clone(),
                    page_size: 501,
                    ..Default::default()
                },
                &e.token,
            ))
            .await;
        assert_invalid(too_big, "pageSize", "501");
        let foreign_token = e
            .jobs
            .list_job_runs(authed(
                pb::ListJobRunsRequest {
                    job_id: a.clone(),
                    page_size: 1,
                    ..Default::default()
                },
                &e.token,
            ))
            .await
            .unwrap()
            .into_inner()
            .next_page_token;
        let wrong_list = e
            .jobs
            .list_jobs(authed(
                pb::ListJobsRequest {
                    project_id: e.project.clone(),
                    page_token: foreign_token,
                    ..Default::default()
                },
                &e.token,
            ))
            .await;
        assert_invalid(wrong_list, "pageToken", "a runs token on jobs");
        e.api.stop().await;
    }
}

/// A user of the org with `role`, logged in.
async fn member(
    e: &mut Env,
    db: &DatabaseConnection,
    name: &str,
    role: OrgRole,
) -> (String, String) {
    let user = register(&mut e.c, name).await;
    add_member(db, &e.org, &user.id, role).await;
    (user.id, login(&mut e.c, name).await)
}

async fn grant(
    e: &mut Env,
    user: &str,
    kind: pb::GrantResourceType,
    id: &str,
    level: pb::GrantLevel,
) {
    e.c.grants
        .create_grant(authed(
            pb::CreateGrantRequest {
                organization_id: e.org.clone(),
                user_id: user.into(),
                resource_type: kind.into(),
                resource_id: id.into(),
                level: level.into(),
            },
            &e.token,
        ))
        .await
        .unwrap();
}

/// What `token` gets from each JobService RPC on `job` and `run`.
async fn outcomes(e: &Env, token: &str, job: &str, run: &str) -> Vec<(&'static str, Code)> {
    let mut c = e.jobs.clone();
    let project = e.project.clone();
    let code_of = |r: Result<(), Status>| r.map_or_else(|s| s.code(), |()| Code::Ok);
    vec![
        (
            "GetJob",
            code_of(
                c.get_job(authed(pb::GetJobRequest { id: job.into() }, token))
                    .await
                    .map(drop),
            ),
        ),
        (
            "ListJobs",
            code_of(
                c.list_jobs(authed(
                    pb::ListJobsRequest {
                        project_id: project.clone(),
                        ..Default::default()
                    },
                    token,
                ))
                .await
                .map(drop),
            ),
        ),
        (
            "ListJobRuns",
            code_of(
                c.list_job_runs(authed(
                    pb::ListJobRunsRequest {
                        job_id: job.into(),
                        ..Default::default()
                    },
                    token,
                ))
                .await
                .map(drop),
            ),
        ),
        (
            "GetJobRun",
            code_of(
                c.get_job_run(authed(pb::GetJobRunRequest { id: run.into() }, token))
                    .await
                    .map(drop),
            ),
        ),
        (
            "GetJobRunLogs",
            code_of(
                c.get_job_run_logs(authed(pb::GetJobRunLogsRequest { id: run.into() }, token))
                    .await
                    .map(drop),
            ),
        ),
        (
            "CreateJob",
            code_of(
                c.create_job(authed(
                    pb::CreateJobRequest {
                        project_id: project.clone(),
                        name: format!("new-{}", &Uuid::now_v7().simple().to_string()[20..]),
                        image: IMAGE.into(),
                        ..Default::default()
                    },
                    token,
                ))
                .await
                .map(drop),
            ),
        ),
        (
            "UpdateJob",
            code_of(
                c.update_job(authed(
                    pb::UpdateJobRequest {
                        id: job.into(),
                        retries: Some(1),
                        ..Default::default()
                    },
                    token,
                ))
                .await
                .map(drop),
            ),
        ),
        (
            "RunJobNow",
            code_of(
                c.run_job_now(authed(pb::RunJobNowRequest { id: job.into() }, token))
                    .await
                    .map(drop),
            ),
        ),
    ]
}

/// The RPCs of [`outcomes`] that answered OK (the rest must be denied).
fn allowed(got: &[(&'static str, Code)], who: &str) -> Vec<&'static str> {
    for (rpc, code) in got {
        assert!(
            matches!(code, Code::Ok | Code::PermissionDenied),
            "{who}: {rpc}: {code:?}"
        );
    }
    got.iter()
        .filter(|(_, c)| *c == Code::Ok)
        .map(|(r, _)| *r)
        .collect()
}

const READS: [&str; 5] = [
    "GetJob",
    "ListJobs",
    "ListJobRuns",
    "GetJobRun",
    "GetJobRunLogs",
];

#[tokio::test]
async fn members_read_admins_manage_and_grants_add_rights() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let mut e = env(&db.conn).await;
        let job = e
            .create(pb::CreateJobRequest {
                concurrency_policy: pb::ConcurrencyPolicy::Allow.into(),
                ..e.job("guarded")
            })
            .await
            .unwrap();
        let run = e.run(&job.id).await.unwrap();
        let svc = e.service(&e.project.clone(), "web").await;

        let (_, admin) = member(&mut e, &db.conn, "adam", OrgRole::Admin).await;
        let (_, mel) = member(&mut e, &db.conn, "mel", OrgRole::Member).await;
        let (vic_id, vic) = member(&mut e, &db.conn, "vic", OrgRole::Viewer).await;
        let (runner_id, runner) = member(&mut e, &db.conn, "rhea", OrgRole::Member).await;
        let (keeper_id, keeper) = member(&mut e, &db.conn, "kai", OrgRole::Member).await;
        let (lead_id, lead) = member(&mut e, &db.conn, "lea", OrgRole::Member).await;

        let all = [READS.as_slice(), &["CreateJob", "UpdateJob", "RunJobNow"]].concat();
        let got = outcomes(&e, &admin, &job.id, &run.id).await;
        assert_eq!(allowed(&got, "admin"), all, "{b}");
        // Members read jobs and their runs' output, and change nothing.
        let got = outcomes(&e, &mel, &job.id, &run.id).await;
        assert_eq!(allowed(&got, "member"), READS, "{b}");
        // Viewers see no jobs without a grant.
        let got = outcomes(&e, &vic, &job.id, &run.id).await;
        assert_eq!(allowed(&got, "viewer"), Vec::<&str>::new(), "{b}");
        // A view grant on the job lets a viewer read it (not list the
        // project's jobs: that needs the project).
        grant(
            &mut e,
            &vic_id,
            pb::GrantResourceType::Job,
            &job.id,
            pb::GrantLevel::View,
        )
        .await;
        let got = outcomes(&e, &vic, &job.id, &run.id).await;
        assert_eq!(
            allowed(&got, "viewer with a view grant"),
            ["GetJob", "ListJobRuns", "GetJobRun", "GetJobRunLogs"],
            "{b}"
        );
        // Deploy on the job: run it. Manage on the job: change it too.
        grant(
            &mut e,
            &runner_id,
            pb::GrantResourceType::Job,
            &job.id,
            pb::GrantLevel::Deploy,
        )
        .await;
        let got = outcomes(&e, &runner, &job.id, &run.id).await;
        assert_eq!(
            allowed(&got, "deploy grant"),
            [READS.as_slice(), &["RunJobNow"]].concat(),
            "{b}"
        );
        grant(
            &mut e,
            &keeper_id,
            pb::GrantResourceType::Job,
            &job.id,
            pb::GrantLevel::Manage,
        )
        .await;
        let got = outcomes(&e, &keeper, &job.id, &run.id).await;
        assert_eq!(
            allowed(&got, "manage grant"),
            [READS.as_slice(), &["UpdateJob", "RunJobNow"]].concat(),
            "{b}"
        );
        // ... but a grant on a job does not reach a service's environment.
        let err = e
            .jobs
            .update_job(authed(
                pb::UpdateJobRequest {
                    id: job.id.clone(),
                    image: Some(String::new()),
                    service_id: Some(svc.clone()),
                    ..Default::default()
                },
                &keeper,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{b}: {err:?}");
        assert!(err.message().starts_with("serviceId: "), "{b}: {err:?}");
        assert!(row(&db.conn, &job.id).await.service_id.is_none(), "{b}");
        // Manage on the project: create jobs there, and name its services.
        let project = e.project.clone();
        grant(
            &mut e,
            &lead_id,
            pb::GrantResourceType::Project,
            &project,
            pb::GrantLevel::Manage,
        )
        .await;
        let got = outcomes(&e, &lead, &job.id, &run.id).await;
        assert_eq!(allowed(&got, "project manage grant"), all, "{b}");
        e.jobs
            .create_job(authed(
                pb::CreateJobRequest {
                    project_id: e.project.clone(),
                    name: "by-lead".into(),
                    service_id: svc.clone(),
                    ..Default::default()
                },
                &lead,
            ))
            .await
            .unwrap();

        // An API token acts at most at its role.
        let member_token =
            e.c.tokens
                .create_api_token(authed(
                    pb::CreateApiTokenRequest {
                        organization_id: e.org.clone(),
                        name: "ro".into(),
                        role: pb::OrganizationRole::Member.into(),
                        expires_at: None,
                    },
                    &e.token,
                ))
                .await
                .unwrap()
                .into_inner()
                .token;
        let got = outcomes(&e, &member_token, &job.id, &run.id).await;
        assert_eq!(allowed(&got, "member token"), READS, "{b}");

        // Another organization sees nothing at all: NotFound everywhere.
        register(&mut e.c, "mallory").await;
        let mallory = login(&mut e.c, "mallory").await;
        let m_org = create_org(&mut e.c, &mallory, "Mallory Org").await.id;
        let m_project = new_project(&mut e.projects, &mallory, &m_org, "Loot").await;
        for (rpc, code) in outcomes(&e, &mallory, &job.id, &run.id).await {
            assert_eq!(code, Code::NotFound, "{b}: outsider {rpc}");
        }
        // Nor can a job of theirs name this organization's service.
        let err = e
            .jobs
            .create_job(authed(
                pb::CreateJobRequest {
                    project_id: m_project,
                    name: "steal".into(),
                    service_id: svc.clone(),
                    ..Default::default()
                },
                &mallory,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{b}: {err:?}");
        e.api.stop().await;
    }
}

/// While a run runs, its log is read live from its pod; once it ended,
/// what the scheduler stored is the answer.
#[tokio::test]
async fn a_running_run_logs_live_from_its_pod() {
    use ferry_db::entities::projects;
    use ferry_k8s::fake::{FakeCluster, FakeContainerState};
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let fake = FakeCluster::new();
        let (api, _state) =
            start_with_cluster(&db.conn, Some(&fake), std::time::Duration::from_secs(5)).await;
        let mut c = clients(api.addr).await;
        register(&mut c, "lena").await;
        let token = login(&mut c, "lena").await;
        let org = create_org(&mut c, &token, "Live Org").await.id;
        let mut projects_client = ProjectServiceClient::new(c.channel.clone());
        let project = new_project(&mut projects_client, &token, &org, "Live").await;
        let mut jobs_client = JobServiceClient::new(c.channel.clone());
        let job = jobs_client
            .create_job(authed(
                pb::CreateJobRequest {
                    project_id: project.clone(),
                    name: "report".into(),
                    image: IMAGE.into(),
                    ..Default::default()
                },
                &token,
            ))
            .await
            .unwrap()
            .into_inner();
        let project_row = projects::Entity::find_by_id(Uuid::parse_str(&project).unwrap())
            .one(&db.conn)
            .await
            .unwrap()
            .unwrap();
        let run_id = Uuid::now_v7();
        let spec = ferry_k8s::JobRunSpec {
            organization_id: project_row.organization_id,
            project_id: project_row.id,
            namespace: project_row.namespace.clone(),
            job_id: Uuid::parse_str(&job.id).unwrap(),
            job_name: "report".into(),
            run_id,
            name: ferry_k8s::kubernetes_job_name("report", None, run_id),
            image: IMAGE.into(),
            command: vec![],
            args: vec![],
            env_secret: None,
            pull_secret: None,
            timeout_seconds: None,
            retries: 0,
        };
        let name = ferry_k8s::Cluster::new(fake.client())
            .start_job_run(&spec)
            .await
            .unwrap();
        let pod = fake.job_pod_name(&spec.namespace, &name).unwrap();
        fake.set_container_state(&spec.namespace, &pod, "app", FakeContainerState::Running);
        fake.append_log(&spec.namespace, &pod, "app", "step 1 of 3");
        fake.append_log(&spec.namespace, &pod, "app", "step 2 of 3");
        job_runs::ActiveModel {
            id: Set(run_id),
            job_id: Set(spec.job_id),
            status: Set(JobRunStatus::Running),
            k8s_job_name: Set(Some(name.clone())),
            logs: Set(Some("stale".into())),
            ..Default::default()
        }
        .insert(&db.conn)
        .await
        .unwrap();
        let logs = |id: Uuid| authed(pb::GetJobRunLogsRequest { id: id.to_string() }, &token);
        let live = jobs_client
            .get_job_run_logs(logs(run_id))
            .await
            .unwrap()
            .into_inner();
        assert!(live.partial, "{b}");
        assert_eq!(live.lines, ["step 1 of 3", "step 2 of 3"], "{b}");

        // Ended: the stored log answers, whatever the pod says.
        job_runs::Entity::update(job_runs::ActiveModel {
            id: Set(run_id),
            status: Set(JobRunStatus::Succeeded),
            logs: Set(Some("step 1 of 3\nstep 2 of 3\nstep 3 of 3\n".into())),
            ..Default::default()
        })
        .exec(&db.conn)
        .await
        .unwrap();
        let done = jobs_client
            .get_job_run_logs(logs(run_id))
            .await
            .unwrap()
            .into_inner();
        assert!(!done.partial, "{b}");
        assert_eq!(done.lines.len(), 3, "{b}: {done:?}");
    }
}
