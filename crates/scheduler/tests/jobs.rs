//! The job loop against real databases (PostgreSQL and SQLite) and the
//! in-memory Kubernetes API, with a controlled clock: slots fire once,
//! concurrency policies, timeouts, failures with exit codes and logs,
//! missed slots after downtime, manual runs, plan-only mode, orphan
//! collection, and two replicas sharing one database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use ferry_db::entities::enums::{ConcurrencyPolicy, JobRunStatus, JobTrigger};
use ferry_db::entities::{job_runs, jobs, organizations, projects};
use ferry_db::sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, DatabaseConnection,
    EntityTrait as _, QueryFilter as _, QueryOrder as _,
};
use ferry_k8s::Cluster;
use ferry_k8s::fake::{FakeCluster, FakeContainerState};
use ferry_scheduler::jobs::{Engine, LEASE};
use ferry_scheduler::lease::Lease;
use uuid::Uuid;

const NS: &str = "ferry-p-test";

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

async fn project(db: &DatabaseConnection) -> Uuid {
    let org = organizations::ActiveModel {
        id: Set(Uuid::now_v7()),
        name: Set("Acme".into()),
        slug: Set(format!(
            "acme-{}",
            &Uuid::new_v4().simple().to_string()[..6]
        )),
        ..Default::default()
    }
    .insert(db)
    .await
    .unwrap();
    projects::ActiveModel {
        id: Set(Uuid::now_v7()),
        organization_id: Set(org.id),
        name: Set("web".into()),
        slug: Set("web".into()),
        namespace: Set(NS.into()),
        ..Default::default()
    }
    .insert(db)
    .await
    .unwrap()
    .id
}

async fn job(
    db: &DatabaseConnection,
    project: Uuid,
    name: &str,
    schedule: &str,
    next: DateTime<Utc>,
    policy: ConcurrencyPolicy,
) -> jobs::Model {
    jobs::ActiveModel {
        id: Set(Uuid::now_v7()),
        project_id: Set(project),
        name: Set(name.into()),
        schedule: Set(Some(schedule.into())),
        timezone: Set("UTC".into()),
        image: Set(Some("busybox:1.36".into())),
        command: Set(serde_json::json!(["sh", "-c"])),
        args: Set(serde_json::json!(["echo hello"])),
        concurrency_policy: Set(policy),
        timeout_seconds: Set(Some(600)),
        max_retries: Set(1),
        enabled: Set(true),
        next_run_at: Set(Some(next)),
        ..Default::default()
    }
    .insert(db)
    .await
    .unwrap()
}

async fn runs(db: &DatabaseConnection, job: Uuid) -> Vec<job_runs::Model> {
    job_runs::Entity::find()
        .filter(job_runs::Column::JobId.eq(job))
        .order_by_asc(job_runs::Column::CreatedAt)
        .order_by_asc(job_runs::Column::ScheduledFor)
        .all(db)
        .await
        .unwrap()
}

async fn next_run_at(db: &DatabaseConnection, job: Uuid) -> Option<DateTime<Utc>> {
    jobs::Entity::find_by_id(job)
        .one(db)
        .await
        .unwrap()
        .unwrap()
        .next_run_at
}

fn engine(db: &DatabaseConnection, fake: Option<&FakeCluster>, holder: &str) -> Engine {
    Engine::new(
        db.clone(),
        fake.map(|f| Cluster::new(f.client())),
        Lease::new(LEASE, holder, StdDuration::from_secs(15)),
    )
}

/// Makes the run's pod exit with `state` after printing `lines`.
fn finish(fake: &FakeCluster, job_name: &str, lines: &[&str], state: FakeContainerState) {
    let pod = fake.job_pod_name(NS, job_name).expect("the Job has a pod");
    fake.set_container_state(NS, &pod, "app", FakeContainerState::Running);
    for line in lines {
        fake.append_log(NS, &pod, "app", line);
    }
    fake.set_container_state(NS, &pod, "app", state);
}

#[tokio::test]
async fn a_slot_runs_once_and_its_outcome_and_logs_are_recorded() {
    for db in ferry_tests::migrated_dbs().await {
        let fake = FakeCluster::new();
        let p = project(&db.conn).await;
        let j = job(
            &db.conn,
            p,
            "report",
            "*/5 * * * *",
            t("2026-01-01T10:05:00Z"),
            ConcurrencyPolicy::Forbid,
        )
        .await;
        let e = engine(&db.conn, Some(&fake), "a");

        // Not due yet.
        let tick = e.tick(t("2026-01-01T10:04:59Z")).await.unwrap();
        assert!(tick.leader);
        assert!(runs(&db.conn, j.id).await.is_empty(), "{}", db.backend);

        let tick = e.tick(t("2026-01-01T10:05:01Z")).await.unwrap();
        assert_eq!(tick.fired.pending.len(), 1, "{}", db.backend);
        assert_eq!(tick.dispatched.started, 1);
        let rs = runs(&db.conn, j.id).await;
        assert_eq!(rs.len(), 1);
        let run = &rs[0];
        assert_eq!(run.status, JobRunStatus::Running);
        assert_eq!(run.trigger_type, JobTrigger::Schedule);
        assert_eq!(run.scheduled_for, Some(t("2026-01-01T10:05:00Z")));
        // The CronJob-style name: the slot in minutes since the epoch.
        let name = format!("report-{}", t("2026-01-01T10:05:00Z").timestamp() / 60);
        assert_eq!(run.k8s_job_name.as_deref(), Some(name.as_str()));
        assert_eq!(
            next_run_at(&db.conn, j.id).await,
            Some(t("2026-01-01T10:10:00Z"))
        );
        let created = fake.get("Job", NS, &name).expect("the Job exists");
        assert_eq!(created["spec"]["activeDeadlineSeconds"], 600);
        assert_eq!(created["spec"]["backoffLimit"], 1);
        assert_eq!(
            created["spec"]["template"]["spec"]["containers"][0]["args"][0],
            "echo hello"
        );

        // A second tick in the same slot changes nothing.
        let tick = e.tick(t("2026-01-01T10:05:03Z")).await.unwrap();
        assert!(tick.fired.pending.is_empty());
        assert_eq!(runs(&db.conn, j.id).await.len(), 1);

        finish(
            &fake,
            &name,
            &["hello", "done"],
            FakeContainerState::succeeded(""),
        );
        let tick = e.tick(t("2026-01-01T10:06:00Z")).await.unwrap();
        assert_eq!(tick.tracked.finished, 1);
        let run = &runs(&db.conn, j.id).await[0];
        assert_eq!(
            run.status,
            JobRunStatus::Succeeded,
            "{}: {:?}",
            db.backend,
            run.reason
        );
        assert_eq!(run.exit_code, Some(0));
        assert_eq!(run.attempts, 1);
        assert!(
            run.logs
                .as_deref()
                .unwrap_or_default()
                .contains("hello\ndone"),
            "{:?}",
            run.logs
        );
        assert!(run.finished_at.is_some());
    }
}

#[tokio::test]
async fn forbid_skips_replace_cancels_and_allow_overlaps() {
    for db in ferry_tests::migrated_dbs().await {
        let fake = FakeCluster::new();
        let p = project(&db.conn).await;
        let slot = t("2026-01-01T10:00:00Z");
        let forbid = job(
            &db.conn,
            p,
            "forbid",
            "* * * * *",
            slot,
            ConcurrencyPolicy::Forbid,
        )
        .await;
        let replace = job(
            &db.conn,
            p,
            "replace",
            "* * * * *",
            slot,
            ConcurrencyPolicy::Replace,
        )
        .await;
        let allow = job(
            &db.conn,
            p,
            "allow",
            "* * * * *",
            slot,
            ConcurrencyPolicy::Allow,
        )
        .await;
        let e = engine(&db.conn, Some(&fake), "a");
        e.tick(t("2026-01-01T10:00:01Z")).await.unwrap();
        // The first runs keep running into the next slot.
        let tick = e.tick(t("2026-01-01T10:01:01Z")).await.unwrap();
        assert_eq!(tick.fired.skipped, 1, "{}", db.backend);
        assert_eq!(tick.fired.cancelled.len(), 1);

        let f = runs(&db.conn, forbid.id).await;
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].status, JobRunStatus::Running);
        assert_eq!(f[1].status, JobRunStatus::Skipped);
        assert!(
            f[1].reason.as_deref().unwrap().contains("forbid"),
            "{:?}",
            f[1].reason
        );

        let r = runs(&db.conn, replace.id).await;
        assert_eq!(r[0].status, JobRunStatus::Cancelled);
        assert!(
            r[0].reason.as_deref().unwrap().contains("replaced"),
            "{:?}",
            r[0].reason
        );
        assert_eq!(r[1].status, JobRunStatus::Running);
        // The replaced run's Job (and its pod) are gone from the cluster.
        let old = r[0].k8s_job_name.clone().unwrap();
        assert!(
            fake.get("Job", NS, &old).is_none(),
            "{}: {old} still exists",
            db.backend
        );
        assert!(
            fake.get("Job", NS, r[1].k8s_job_name.as_deref().unwrap())
                .is_some()
        );

        let a = runs(&db.conn, allow.id).await;
        assert_eq!(
            a.iter().map(|r| r.status).collect::<Vec<_>>(),
            [JobRunStatus::Running, JobRunStatus::Running]
        );
    }
}

#[tokio::test]
async fn timeouts_and_failures_say_why_with_the_exit_code() {
    for db in ferry_tests::migrated_dbs().await {
        let fake = FakeCluster::new();
        let p = project(&db.conn).await;
        let slot = t("2026-01-01T10:00:00Z");
        let slow = job(
            &db.conn,
            p,
            "slow",
            "@hourly",
            slot,
            ConcurrencyPolicy::Forbid,
        )
        .await;
        let bad = job(
            &db.conn,
            p,
            "bad",
            "@hourly",
            slot,
            ConcurrencyPolicy::Forbid,
        )
        .await;
        let e = engine(&db.conn, Some(&fake), "a");
        e.tick(t("2026-01-01T10:00:01Z")).await.unwrap();
        let slow_name = runs(&db.conn, slow.id).await[0]
            .k8s_job_name
            .clone()
            .unwrap();
        let bad_name = runs(&db.conn, bad.id).await[0]
            .k8s_job_name
            .clone()
            .unwrap();

        assert!(fake.fail_job(
            NS,
            &slow_name,
            "DeadlineExceeded",
            "Job was active longer than specified deadline"
        ));
        finish(
            &fake,
            &bad_name,
            &["connecting", "error: no such table"],
            FakeContainerState::failed(3, "error: no such table"),
        );
        e.tick(t("2026-01-01T10:10:00Z")).await.unwrap();

        let s = &runs(&db.conn, slow.id).await[0];
        assert_eq!(
            s.status,
            JobRunStatus::TimedOut,
            "{}: {:?}",
            db.backend,
            s.reason
        );
        assert!(
            s.reason.as_deref().unwrap().contains("timed out"),
            "{:?}",
            s.reason
        );
        let b = &runs(&db.conn, bad.id).await[0];
        assert_eq!(b.status, JobRunStatus::Failed, "{:?}", b.reason);
        assert_eq!(b.exit_code, Some(3));
        assert!(
            b.reason.as_deref().unwrap().contains("no such table"),
            "{:?}",
            b.reason
        );
        assert!(
            b.logs.as_deref().unwrap().contains("connecting"),
            "{:?}",
            b.logs
        );
        // Each failure wrote its notification event with its status.
        let events = ferry_db::entities::notification_outbox::Entity::find()
            .filter(ferry_db::entities::notification_outbox::Column::Event.eq("job_run.failed"))
            .all(&db.conn)
            .await
            .unwrap();
        assert_eq!(events.len(), 2, "{}", db.backend);
        let of = |job: Uuid| {
            events
                .iter()
                .find(|e| e.payload["job"]["id"] == serde_json::json!(job))
                .unwrap()
        };
        assert_eq!(of(slow.id).payload["timedOut"], true);
        assert_eq!(of(slow.id).project_id, Some(p));
        assert!(
            of(bad.id).payload["reason"]
                .as_str()
                .unwrap()
                .contains("no such table")
        );
    }
}

#[tokio::test]
async fn after_downtime_one_missed_slot_runs_within_the_deadline() {
    for db in ferry_tests::migrated_dbs().await {
        let fake = FakeCluster::new();
        let p = project(&db.conn).await;
        let first = t("2026-01-01T10:05:00Z");
        let strict = job(
            &db.conn,
            p,
            "strict",
            "*/5 * * * *",
            first,
            ConcurrencyPolicy::Forbid,
        )
        .await;
        let lenient = job(
            &db.conn,
            p,
            "lenient",
            "*/5 * * * *",
            first,
            ConcurrencyPolicy::Forbid,
        )
        .await;
        jobs::Entity::update(jobs::ActiveModel {
            id: Set(lenient.id),
            starting_deadline_seconds: Set(Some(300)),
            ..Default::default()
        })
        .exec(&db.conn)
        .await
        .unwrap();
        let e = engine(&db.conn, Some(&fake), "a");
        // The scheduler was down from 10:04 to 10:32.
        e.tick(t("2026-01-01T10:32:00Z")).await.unwrap();

        let s = runs(&db.conn, strict.id).await;
        assert_eq!(s.len(), 1, "{}", db.backend);
        assert_eq!(s[0].status, JobRunStatus::Missed);
        assert_eq!(s[0].scheduled_for, Some(t("2026-01-01T10:30:00Z")));
        assert!(
            s[0].reason.as_deref().unwrap().contains("6 slots"),
            "{:?}",
            s[0].reason
        );

        let l = runs(&db.conn, lenient.id).await;
        let by_status = |st| l.iter().filter(|r| r.status == st).collect::<Vec<_>>();
        assert_eq!(by_status(JobRunStatus::Running).len(), 1, "{l:?}");
        assert_eq!(
            by_status(JobRunStatus::Running)[0].scheduled_for,
            Some(t("2026-01-01T10:30:00Z"))
        );
        assert_eq!(by_status(JobRunStatus::Missed).len(), 1);
        assert!(
            by_status(JobRunStatus::Missed)[0]
                .reason
                .as_deref()
                .unwrap()
                .contains("5 slots")
        );
        for j in [strict.id, lenient.id] {
            assert_eq!(
                next_run_at(&db.conn, j).await,
                Some(t("2026-01-01T10:35:00Z"))
            );
        }
    }
}

#[tokio::test]
async fn manual_runs_start_and_plan_only_records_the_job() {
    for db in ferry_tests::migrated_dbs().await {
        let fake = FakeCluster::new();
        let p = project(&db.conn).await;
        let j = job(
            &db.conn,
            p,
            "manual",
            "@daily",
            t("2030-01-01T00:00:00Z"),
            ConcurrencyPolicy::Forbid,
        )
        .await;
        let manual = job_runs::ActiveModel {
            id: Set(Uuid::now_v7()),
            job_id: Set(j.id),
            status: Set(JobRunStatus::Pending),
            trigger_type: Set(JobTrigger::Manual),
            created_at: Set(t("2026-01-01T09:00:00Z")),
            ..Default::default()
        }
        .insert(&db.conn)
        .await
        .unwrap();
        let e = engine(&db.conn, Some(&fake), "a");
        e.tick(t("2026-01-01T09:00:01Z")).await.unwrap();
        let run = job_runs::Entity::find_by_id(manual.id)
            .one(&db.conn)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            run.status,
            JobRunStatus::Running,
            "{}: {:?}",
            db.backend,
            run.reason
        );
        let name = run.k8s_job_name.unwrap();
        assert!(name.starts_with("manual-m"), "{name}");

        // Without a cluster the run is planned, with the Job as YAML.
        let planned = job_runs::ActiveModel {
            id: Set(Uuid::now_v7()),
            job_id: Set(j.id),
            status: Set(JobRunStatus::Pending),
            trigger_type: Set(JobTrigger::Api),
            created_at: Set(t("2026-01-01T09:01:00Z")),
            ..Default::default()
        }
        .insert(&db.conn)
        .await
        .unwrap();
        let plan_only = engine(&db.conn, None, "a");
        let tick = plan_only.tick(t("2026-01-01T09:01:01Z")).await.unwrap();
        assert_eq!(tick.dispatched.planned, 1);
        let run = job_runs::Entity::find_by_id(planned.id)
            .one(&db.conn)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(run.status, JobRunStatus::Planned);
        let yaml = run.rendered.unwrap();
        assert!(yaml.contains("activeDeadlineSeconds: 600"), "{yaml}");
        assert!(
            yaml.contains("automountServiceAccountToken: false"),
            "{yaml}"
        );
    }
}

#[tokio::test]
async fn jobs_of_deleted_jobs_are_collected() {
    for db in ferry_tests::migrated_dbs().await {
        let fake = FakeCluster::new();
        let p = project(&db.conn).await;
        let j = job(
            &db.conn,
            p,
            "gone",
            "@hourly",
            t("2026-01-01T10:00:00Z"),
            ConcurrencyPolicy::Forbid,
        )
        .await;
        let e = engine(&db.conn, Some(&fake), "a");
        e.tick(t("2026-01-01T10:00:01Z")).await.unwrap();
        let name = runs(&db.conn, j.id).await[0].k8s_job_name.clone().unwrap();
        assert!(fake.get("Job", NS, &name).is_some());
        jobs::Entity::delete_by_id(j.id)
            .exec(&db.conn)
            .await
            .unwrap();
        let tick = e.tick(t("2026-01-01T10:00:05Z")).await.unwrap();
        assert_eq!(tick.tracked.collected, 1, "{}", db.backend);
        assert!(fake.get("Job", NS, &name).is_none());
        // A Job Ferry does not own is never touched.
        fake.insert(serde_json::json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": { "name": "theirs", "namespace": NS, "labels": { "ferry.dev/job-run-id": Uuid::new_v4().to_string() } },
            "spec": { "template": { "spec": { "containers": [] } } },
        }));
        e.tick(t("2026-01-01T10:00:10Z")).await.unwrap();
        assert!(fake.get("Job", NS, "theirs").is_some());
    }
}

/// Two replicas on one database: the lease keeps one acting at a time,
/// the survivor carries on after the other dies mid-run, and every slot of
/// 100 has exactly one run.
#[tokio::test]
async fn two_replicas_make_one_run_per_slot_and_take_over_after_a_crash() {
    for db in ferry_tests::migrated_dbs().await {
        let fake = FakeCluster::new();
        let p = project(&db.conn).await;
        let start = t("2026-01-01T00:00:00Z");
        let j = job(
            &db.conn,
            p,
            "minutely",
            "* * * * *",
            start,
            ConcurrencyPolicy::Allow,
        )
        .await;
        let other = db.connect_again().await;
        let a = engine(&db.conn, Some(&fake), "replica-a");
        let b = engine(&other, Some(&fake), "replica-b");
        for minute in 0..100 {
            let now = start + Duration::minutes(minute) + Duration::seconds(1);
            // A dies at minute 50 (it never ticks again; its lease is left
            // to expire); until then both tick at the same moment.
            let (a_led, b_led) = if minute < 50 {
                let (ta, tb) = tokio::join!(a.tick(now), b.tick(now));
                (ta.unwrap().leader, tb.unwrap().leader)
            } else {
                (false, b.tick(now).await.unwrap().leader)
            };
            // Ticks a minute apart outlive the 15 s lease, so either may
            // win a minute, but never both, and never neither.
            assert!(
                a_led ^ b_led,
                "{}: minute {minute}: a {a_led}, b {b_led}",
                db.backend
            );
        }
        let rs = runs(&db.conn, j.id).await;
        let mut slots: Vec<_> = rs.iter().filter_map(|r| r.scheduled_for).collect();
        slots.sort();
        slots.dedup();
        assert_eq!(slots.len(), rs.len(), "{}: a slot ran twice", db.backend);
        // Every slot ran on time, before and after the crash.
        assert_eq!(rs.len(), 100, "{}", db.backend);
        assert!(rs.iter().all(|r| r.status == JobRunStatus::Running));
    }
}

/// Without the lease, two replicas firing the same due jobs at the same
/// time still create one run per slot (unique slot, conditional advance).
#[tokio::test]
async fn racing_fires_without_a_lease_create_one_run_per_slot() {
    for db in ferry_tests::migrated_dbs().await {
        let p = project(&db.conn).await;
        let start = t("2026-01-01T00:00:00Z");
        let mut ids = Vec::new();
        for i in 0..20 {
            ids.push(
                job(
                    &db.conn,
                    p,
                    &format!("j{i}"),
                    "* * * * *",
                    start,
                    ConcurrencyPolicy::Allow,
                )
                .await
                .id,
            );
        }
        let other = db.connect_again().await;
        for minute in 0..5 {
            let now = start + Duration::minutes(minute) + Duration::seconds(1);
            let (x, y) = tokio::join!(
                ferry_scheduler::jobs::fire::fire_due(&db.conn, now),
                ferry_scheduler::jobs::fire::fire_due(&other, now)
            );
            // SQLite may answer one of them "busy"; that replica retries
            // at its next tick, which is the point.
            let fired =
                x.map(|f| f.pending.len()).unwrap_or(0) + y.map(|f| f.pending.len()).unwrap_or(0);
            assert!(fired <= 20, "{}: {fired} runs for 20 due jobs", db.backend);
        }
        for id in ids {
            let rs = runs(&db.conn, id).await;
            let mut slots: Vec<_> = rs.iter().filter_map(|r| r.scheduled_for).collect();
            slots.dedup();
            assert_eq!(slots.len(), rs.len(), "{}: a slot ran twice", db.backend);
        }
    }
}

/// The lease itself: held while renewed, taken over only after it expires,
/// given up on release.
#[tokio::test]
async fn a_lease_is_held_until_it_expires_or_is_released() {
    for db in ferry_tests::migrated_dbs().await {
        let ttl = StdDuration::from_secs(15);
        let a = Lease::new("test", "a", ttl);
        let b = Lease::new("test", "b", ttl);
        let t0 = t("2026-01-01T00:00:00Z");
        assert!(a.acquire(&db.conn, t0).await.unwrap(), "{}", db.backend);
        assert!(
            !b.acquire(&db.conn, t0 + Duration::seconds(5))
                .await
                .unwrap()
        );
        // Renewed by its holder: still not B's 14 s later.
        assert!(
            a.acquire(&db.conn, t0 + Duration::seconds(10))
                .await
                .unwrap()
        );
        assert!(
            !b.acquire(&db.conn, t0 + Duration::seconds(24))
                .await
                .unwrap()
        );
        // A stops renewing (killed): B takes over once it expires.
        assert!(
            b.acquire(&db.conn, t0 + Duration::seconds(26))
                .await
                .unwrap()
        );
        assert!(
            !a.acquire(&db.conn, t0 + Duration::seconds(27))
                .await
                .unwrap()
        );
        b.release(&db.conn).await.unwrap();
        assert!(
            a.acquire(&db.conn, t0 + Duration::seconds(28))
                .await
                .unwrap()
        );
    }
}

/// A due job the api changed after the scheduler read it: the advance is
/// conditional on the value read, so that job is left alone (its new
/// `next_run_at` stands, no run) while the rest of its chunk fires once;
/// firing the same stale read again does nothing.
#[tokio::test]
async fn a_job_changed_after_it_was_read_is_left_alone_and_the_rest_fire_once() {
    for db in ferry_tests::migrated_dbs().await {
        let p = project(&db.conn).await;
        let start = t("2026-01-01T00:00:00Z");
        let mut ids = Vec::new();
        for i in 0..5 {
            let j = job(
                &db.conn,
                p,
                &format!("j{i}"),
                "* * * * *",
                start,
                ConcurrencyPolicy::Allow,
            )
            .await;
            ids.push(j.id);
        }
        let now = start + Duration::seconds(1);
        let read = jobs::Entity::find().all(&db.conn).await.unwrap();
        // The api moves job 0 on after the scheduler read it.
        let moved = start + Duration::minutes(10);
        let mut changed: jobs::ActiveModel = jobs::Entity::find_by_id(ids[0])
            .one(&db.conn)
            .await
            .unwrap()
            .unwrap()
            .into();
        changed.next_run_at = Set(Some(moved));
        changed.update(&db.conn).await.unwrap();

        let fired = ferry_scheduler::jobs::fire::fire_jobs(&db.conn, &read, now).await;
        assert_eq!(fired.pending.len(), 4, "{}", db.backend);
        assert!(runs(&db.conn, ids[0]).await.is_empty(), "{}", db.backend);
        assert_eq!(next_run_at(&db.conn, ids[0]).await, Some(moved));
        for id in &ids[1..] {
            let rs = runs(&db.conn, *id).await;
            assert_eq!(rs.len(), 1, "{}", db.backend);
            assert_eq!(rs[0].scheduled_for, Some(start));
            assert_eq!(
                next_run_at(&db.conn, *id).await,
                Some(start + Duration::minutes(1))
            );
        }
        let again = ferry_scheduler::jobs::fire::fire_jobs(&db.conn, &read, now).await;
        assert_eq!(again, ferry_scheduler::jobs::fire::Fired::default());
    }
}

/// Polls `check` every 10 ms until it holds or `within` passes.
async fn eventually<F, Fut>(within: StdDuration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(StdDuration::from_millis(10)).await;
    }
    false
}

async fn status_of(db: &DatabaseConnection, run: Uuid) -> job_runs::Model {
    job_runs::Entity::find_by_id(run)
        .one(db)
        .await
        .unwrap()
        .unwrap()
}

/// LISTs of job-run Jobs or pods that are not a watch.
fn job_run_lists(fake: &FakeCluster) -> usize {
    fake.requests()
        .iter()
        .filter(|r| {
            r.method == "GET" && (r.path == "/apis/batch/v1/jobs" || r.path == "/api/v1/pods")
        })
        .filter(|r| r.param("watch") != Some("true"))
        .count()
}

/// The real loop with a tick interval of a minute: runs finish and vanish
/// in the rows within moments because the leader watches the job-run Jobs
/// and pods, and after the watch's first list nothing lists them again.
#[tokio::test]
async fn the_leader_follows_runs_by_watching_not_listing() {
    for db in ferry_tests::migrated_dbs().await {
        let fake = FakeCluster::new();
        let p = project(&db.conn).await;
        let j = job(
            &db.conn,
            p,
            "watched",
            "@daily",
            t("2030-01-01T00:00:00Z"),
            ConcurrencyPolicy::Allow,
        )
        .await;
        let run =
            |status, started: Option<DateTime<Utc>>, name: Option<&str>| job_runs::ActiveModel {
                id: Set(Uuid::now_v7()),
                job_id: Set(j.id),
                status: Set(status),
                trigger_type: Set(JobTrigger::Manual),
                started_at: Set(started),
                k8s_job_name: Set(name.map(str::to_owned)),
                created_at: Set(Utc::now() - Duration::minutes(10)),
                ..Default::default()
            };
        let pending = run(JobRunStatus::Pending, None, None)
            .insert(&db.conn)
            .await
            .unwrap();

        let e = engine(&db.conn, Some(&fake), "a");
        let shutdown = ferry_common::Shutdown::new();
        let stop = shutdown.clone();
        let task = tokio::spawn(async move { e.run(StdDuration::from_secs(60), &stop).await });

        // The first tick (at once) starts the pending run.
        assert!(
            eventually(StdDuration::from_secs(5), || async {
                status_of(&db.conn, pending.id).await.status == JobRunStatus::Running
            })
            .await,
            "{}",
            db.backend
        );
        let name = status_of(&db.conn, pending.id).await.k8s_job_name.unwrap();
        // The leader's watches on Jobs and pods are open: they have listed.
        assert!(
            eventually(StdDuration::from_secs(5), || async {
                fake.open_watches() == 2
            })
            .await,
            "{}",
            db.backend
        );
        let lists = job_run_lists(&fake);
        // A run whose Job someone deleted long ago.
        let orphan = run(
            JobRunStatus::Running,
            Some(Utc::now() - Duration::minutes(5)),
            Some("watched-gone"),
        )
        .insert(&db.conn)
        .await
        .unwrap();

        finish(
            &fake,
            &name,
            &["watched"],
            FakeContainerState::failed(3, "boom"),
        );
        assert!(
            eventually(StdDuration::from_secs(2), || async {
                status_of(&db.conn, pending.id).await.status == JobRunStatus::Failed
            })
            .await,
            "{}: a finished run is recorded long before the next tick",
            db.backend
        );
        let done = status_of(&db.conn, pending.id).await;
        assert_eq!(done.exit_code, Some(3), "{}", db.backend);
        let gone = status_of(&db.conn, orphan.id).await;
        assert_eq!(gone.status, JobRunStatus::Failed, "{}", db.backend);
        assert!(
            gone.reason
                .unwrap_or_default()
                .contains("deleted outside Ferry")
        );
        assert!(done.logs.unwrap_or_default().contains("watched"));
        assert_eq!(
            job_run_lists(&fake),
            lists,
            "{}: tracking reads the watch, it does not list",
            db.backend
        );

        shutdown.trigger();
        task.await.unwrap();
        assert_eq!(fake.open_watches(), 0, "{}", db.backend);
    }
}
