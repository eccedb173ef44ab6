//! Retention cleanup on PostgreSQL and SQLite, with rows just either side of
//! every cutoff (SQLite compares timestamps as text, so the edges matter).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferry_db::entities::enums::{AuditResourceType, InviteRole, JobRunStatus, LogLevel};
use ferry_db::entities::{
    audit_logs, auth_throttle, container_metrics, containers, deployment_logs, deployments,
    job_runs, jobs, org_invitations, organizations, projects, services, sessions, users,
};
use ferry_db::retention::{RetentionPolicy, RetentionReport, cleanup, cleanup_in_batches};
use ferry_tests::TestDb;
use sea_orm::sea_query::prelude::chrono::{DateTime, Duration, DurationRound, Utc};
use sea_orm::{ActiveModelTrait, EntityTrait, QueryOrder, Set};
use uuid::Uuid;

/// A fixed "now" with a fractional second, so whole-second rows near a cutoff are exercised.
fn test_now() -> DateTime<Utc> {
    Utc::now().duration_trunc(Duration::seconds(1)).unwrap() + Duration::milliseconds(250)
}

struct Fixture {
    deployment: Uuid,
    container: Uuid,
}

async fn fixture(db: &TestDb) -> Fixture {
    let org = organizations::ActiveModel {
        id: Set(Uuid::now_v7()),
        name: Set("Acme".into()),
        slug: Set("acme".into()),
        ..Default::default()
    }
    .insert(&db.conn)
    .await
    .unwrap();
    let project = projects::ActiveModel {
        id: Set(Uuid::now_v7()),
        organization_id: Set(org.id),
        name: Set("web".into()),
        slug: Set("web".into()),
        ..Default::default()
    }
    .insert(&db.conn)
    .await
    .unwrap();
    let service = services::ActiveModel {
        id: Set(Uuid::now_v7()),
        project_id: Set(project.id),
        name: Set("api".into()),
        image: Set(Some("nginx".into())),
        ..Default::default()
    }
    .insert(&db.conn)
    .await
    .unwrap();
    let deployment = deployments::ActiveModel {
        id: Set(Uuid::now_v7()),
        service_id: Set(Some(service.id)),
        ..Default::default()
    }
    .insert(&db.conn)
    .await
    .unwrap();
    let container = containers::ActiveModel {
        id: Set(Uuid::now_v7()),
        service_id: Set(service.id),
        namespace: Set("web".into()),
        pod_name: Set("api-0".into()),
        pod_uid: Set("uid".into()),
        container_name: Set("api".into()),
        image: Set("nginx".into()),
        ..Default::default()
    }
    .insert(&db.conn)
    .await
    .unwrap();
    Fixture {
        deployment: deployment.id,
        container: container.id,
    }
}

async fn log(db: &TestDb, f: &Fixture, at: Option<DateTime<Utc>>, msg: &str) {
    let mut am = deployment_logs::ActiveModel {
        id: Set(Uuid::now_v7()),
        deployment_id: Set(f.deployment),
        level: Set(LogLevel::Info),
        message: Set(msg.into()),
        ..Default::default()
    };
    if let Some(at) = at {
        am.timestamp = Set(at); // otherwise the column default (now) applies
    }
    am.insert(&db.conn).await.unwrap();
}

async fn metric(db: &TestDb, f: &Fixture, at: DateTime<Utc>, cpu: f64) {
    container_metrics::ActiveModel {
        id: Set(Uuid::now_v7()),
        container_id: Set(f.container),
        timestamp: Set(at),
        cpu_percent: Set(Some(cpu)),
        ..Default::default()
    }
    .insert(&db.conn)
    .await
    .unwrap();
}

async fn audit(db: &TestDb, at: DateTime<Utc>, action: &str) {
    audit_logs::ActiveModel {
        id: Set(Uuid::now_v7()),
        action: Set(action.into()),
        resource_type: Set(AuditResourceType::System),
        created_at: Set(at),
        ..Default::default()
    }
    .insert(&db.conn)
    .await
    .unwrap();
}

async fn messages(db: &TestDb) -> Vec<String> {
    deployment_logs::Entity::find()
        .order_by_asc(deployment_logs::Column::Message)
        .all(&db.conn)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.message)
        .collect()
}

async fn cpus(db: &TestDb) -> Vec<f64> {
    container_metrics::Entity::find()
        .order_by_asc(container_metrics::Column::CpuPercent)
        .all(&db.conn)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|m| m.cpu_percent)
        .collect()
}

async fn actions(db: &TestDb) -> Vec<String> {
    audit_logs::Entity::find()
        .order_by_asc(audit_logs::Column::Action)
        .all(&db.conn)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.action)
        .collect()
}

#[tokio::test]
async fn default_policy_deletes_exactly_the_rows_past_each_cutoff() {
    let policy = RetentionPolicy::default();
    assert_eq!(
        (
            policy.deployment_logs_days,
            policy.container_metrics_days,
            policy.audit_logs_days
        ),
        (30, 7, 365)
    );
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let f = fixture(&db).await;
        let now = test_now();
        let ms = Duration::milliseconds(1);
        let logs_cut = now - Duration::days(30);
        // The cutoff truncated to the whole second is older than the cutoff.
        let whole = logs_cut.duration_trunc(Duration::seconds(1)).unwrap();
        log(&db, &f, Some(logs_cut - ms), "d-just-older").await;
        log(&db, &f, Some(whole), "d-whole-second-older").await;
        log(&db, &f, Some(now - Duration::days(400)), "d-ancient").await;
        log(&db, &f, Some(logs_cut), "k-at-cutoff").await;
        log(&db, &f, Some(logs_cut + ms), "k-just-newer").await;
        log(
            &db,
            &f,
            Some(whole + Duration::seconds(1)),
            "k-next-whole-second",
        )
        .await;
        log(&db, &f, None, "k-db-default-now").await;

        let metrics_cut = now - Duration::days(7);
        metric(&db, &f, metrics_cut - Duration::microseconds(1), 1.0).await;
        metric(&db, &f, metrics_cut - Duration::days(1), 2.0).await;
        metric(&db, &f, metrics_cut + Duration::microseconds(1), 3.0).await;
        metric(&db, &f, now, 4.0).await;

        let audit_cut = now - Duration::days(365);
        audit(&db, audit_cut - ms, "d.older").await;
        audit(&db, audit_cut + ms, "k.newer").await;
        audit(&db, now - Duration::days(31), "k.month").await;

        let report = cleanup(&db.conn, &ferry_tests::test_keyring(), &policy, now)
            .await
            .unwrap();
        assert_eq!(
            report,
            RetentionReport {
                deployment_logs: 3,
                container_metrics: 2,
                audit_logs: 1,
                auth_throttle: 0,
                ..RetentionReport::default()
            },
            "{b}"
        );
        assert_eq!(
            messages(&db).await,
            [
                "k-at-cutoff",
                "k-db-default-now",
                "k-just-newer",
                "k-next-whole-second"
            ],
            "{b}"
        );
        assert_eq!(cpus(&db).await, [3.0, 4.0], "{b}");
        assert_eq!(actions(&db).await, ["k.month", "k.newer"], "{b}");

        // Nothing left to delete.
        let again = cleanup(&db.conn, &ferry_tests::test_keyring(), &policy, now)
            .await
            .unwrap();
        assert_eq!(again, RetentionReport::default(), "{b}");
    }
}

#[tokio::test]
async fn the_policy_is_configurable_and_zero_keeps_forever() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let f = fixture(&db).await;
        let now = test_now();
        log(&db, &f, Some(now - Duration::days(1000)), "old").await;
        metric(&db, &f, now - Duration::days(1000), 1.0).await;
        audit(&db, now - Duration::days(31), "a.month").await;
        audit(&db, now - Duration::days(29), "b.recent").await;

        let policy = RetentionPolicy {
            deployment_logs_days: 0,
            container_metrics_days: 0,
            audit_logs_days: 30,
            ..RetentionPolicy::default()
        };
        let report = cleanup(&db.conn, &ferry_tests::test_keyring(), &policy, now)
            .await
            .unwrap();
        assert_eq!(
            report,
            RetentionReport {
                deployment_logs: 0,
                container_metrics: 0,
                audit_logs: 1,
                auth_throttle: 0,
                ..RetentionReport::default()
            },
            "{b}"
        );
        assert_eq!(messages(&db).await, ["old"], "{b}");
        assert_eq!(cpus(&db).await, [1.0], "{b}");
        assert_eq!(actions(&db).await, ["b.recent"], "{b}");
    }
}

/// A throttle row (`key`) last touched at `updated`, locked until `locked`.
async fn throttle(db: &TestDb, key: &str, updated: DateTime<Utc>, locked: Option<DateTime<Utc>>) {
    auth_throttle::ActiveModel {
        id: Set(Uuid::now_v7()),
        key: Set(key.into()),
        failures: Set(3),
        window_start: Set(updated),
        locked_until: Set(locked),
        updated_at: Set(updated),
    }
    .insert(&db.conn)
    .await
    .unwrap();
}

#[tokio::test]
async fn dead_throttle_rows_are_swept_live_ones_and_locks_kept() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let now = test_now();
        let horizon = now - ferry_db::retention::THROTTLE_HORIZON;
        let ms = Duration::milliseconds(1);
        throttle(&db, "ip:d.old", horizon - ms, None).await;
        throttle(&db, "ip:d.old-lock-ended", horizon - ms, Some(now - ms)).await;
        throttle(&db, "account:k.recent", horizon + ms, None).await;
        throttle(
            &db,
            "account:k.still-locked",
            horizon - ms,
            Some(now + Duration::minutes(5)),
        )
        .await;

        let report = cleanup(
            &db.conn,
            &ferry_tests::test_keyring(),
            &RetentionPolicy::default(),
            now,
        )
        .await
        .unwrap();
        assert_eq!(report.auth_throttle, 2, "{b}");
        let mut left: Vec<String> = auth_throttle::Entity::find()
            .all(&db.conn)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.key)
            .collect();
        left.sort();
        assert_eq!(left, ["account:k.recent", "account:k.still-locked"], "{b}");
    }
}

/// Many rows go in several short transactions (batches smaller than the
/// backlog); finished job runs, expired sessions and settled invitations
/// are swept, active runs and live rows are kept.
#[tokio::test]
async fn batches_delete_everything_due_and_nothing_else() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let f = fixture(&db).await;
        let now = test_now();
        for i in 0..25 {
            log(&db, &f, Some(now - Duration::days(40)), &format!("d-{i}")).await;
        }
        log(&db, &f, Some(now), "k-fresh").await;

        let service = deployments::Entity::find_by_id(f.deployment)
            .one(&db.conn)
            .await
            .unwrap()
            .unwrap()
            .service_id
            .unwrap();
        let project = services::Entity::find_by_id(service)
            .one(&db.conn)
            .await
            .unwrap()
            .unwrap()
            .project_id;
        let job = jobs::ActiveModel {
            id: Set(Uuid::now_v7()),
            project_id: Set(project),
            name: Set("nightly".into()),
            image: Set(Some("busybox".into())),
            ..Default::default()
        }
        .insert(&db.conn)
        .await
        .unwrap();
        let run = |status, finished: Option<DateTime<Utc>>, reason: &str| job_runs::ActiveModel {
            id: Set(Uuid::now_v7()),
            job_id: Set(job.id),
            status: Set(status),
            finished_at: Set(finished),
            reason: Set(Some(reason.into())),
            created_at: Set(now - Duration::days(60)),
            ..Default::default()
        };
        for r in [
            run(
                JobRunStatus::Succeeded,
                Some(now - Duration::days(31)),
                "d-old",
            ),
            run(
                JobRunStatus::Failed,
                Some(now - Duration::days(45)),
                "d-older",
            ),
            run(
                JobRunStatus::Succeeded,
                Some(now - Duration::days(29)),
                "k-recent",
            ),
            // Started two months ago and still running: never cut.
            run(JobRunStatus::Running, None, "k-running"),
        ] {
            r.insert(&db.conn).await.unwrap();
        }

        let user = users::ActiveModel {
            id: Set(Uuid::now_v7()),
            username: Set("ann".into()),
            email: Set("ann@example.com".into()),
            ..Default::default()
        }
        .insert(&db.conn)
        .await
        .unwrap();
        let hash = |c: char| c.to_string().repeat(64);
        for (token, expired) in [(hash('d'), 31), (hash('e'), 29)] {
            sessions::ActiveModel {
                id: Set(Uuid::now_v7()),
                user_id: Set(user.id),
                token_hash: Set(token),
                expires_at: Set(now - Duration::days(expired)),
                ..Default::default()
            }
            .insert(&db.conn)
            .await
            .unwrap();
        }
        let org = projects::Entity::find_by_id(project)
            .one(&db.conn)
            .await
            .unwrap()
            .unwrap()
            .organization_id;
        let invite =
            |email: &str, expires: i64, accepted: Option<i64>| org_invitations::ActiveModel {
                id: Set(Uuid::now_v7()),
                organization_id: Set(org),
                email: Set(email.into()),
                role: Set(InviteRole::Member),
                token_hash: Set(format!(
                    "{:064x}",
                    email.len() as u64 * 7919 + expires.unsigned_abs()
                )),
                expires_at: Set(now + Duration::days(expires)),
                accepted_at: Set(accepted.map(|d| now - Duration::days(d))),
                ..Default::default()
            };
        for i in [
            invite("d-expired@x.test", -31, None),
            invite("d-accepted@x.test", 7, Some(40)),
            invite("k-pending@x.test", 7, None),
            invite("k-accepted-lately@x.test", 7, Some(2)),
        ] {
            i.insert(&db.conn).await.unwrap();
        }

        let report = cleanup_in_batches(
            &db.conn,
            &ferry_tests::test_keyring(),
            &RetentionPolicy::default(),
            now,
            10,
        )
        .await
        .unwrap();
        assert_eq!(report.deployment_logs, 25, "{b}");
        assert_eq!(report.job_runs, 2, "{b}");
        assert_eq!(report.sessions, 1, "{b}");
        assert_eq!(report.invitations, 2, "{b}");
        assert_eq!(messages(&db).await, ["k-fresh"], "{b}");
        let mut runs: Vec<String> = job_runs::Entity::find()
            .all(&db.conn)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|r| r.reason)
            .collect();
        runs.sort();
        assert_eq!(runs, ["k-recent", "k-running"], "{b}");
        let left = sessions::Entity::find().all(&db.conn).await.unwrap();
        assert_eq!(left.len(), 1, "{b}");
        assert_eq!(left[0].token_hash, hash('e'));
        let mut emails: Vec<String> = org_invitations::Entity::find()
            .all(&db.conn)
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.email)
            .collect();
        emails.sort();
        assert_eq!(
            emails,
            ["k-accepted-lately@x.test", "k-pending@x.test"],
            "{b}"
        );
    }
}

/// One organization with a row of every organization-owned kind at each age.
struct Tenant {
    org: Uuid,
    deployments: [Uuid; 2],
    container: Uuid,
    job: Uuid,
    git: Uuid,
}

/// Ages (days) of the rows each tenant gets: none falls on a window.
const AGES: [i64; 8] = [1, 5, 8, 20, 35, 60, 100, 400];

async fn tenant(db: &TestDb, slug: &str, settings: serde_json::Value) -> Tenant {
    use ferry_db::crypto::Encrypted;
    use ferry_db::entities::enums::{GitAuthType, GitProvider};
    use ferry_db::entities::{git_integrations, stacks};
    let org = organizations::ActiveModel {
        id: Set(Uuid::now_v7()),
        name: Set(slug.into()),
        slug: Set(slug.into()),
        settings: Set(settings),
        ..Default::default()
    }
    .insert(&db.conn)
    .await
    .unwrap();
    let project = projects::ActiveModel {
        id: Set(Uuid::now_v7()),
        organization_id: Set(org.id),
        name: Set("web".into()),
        slug: Set("web".into()),
        namespace: Set(format!("ferry-{slug}")),
        ..Default::default()
    }
    .insert(&db.conn)
    .await
    .unwrap();
    let service = services::ActiveModel {
        id: Set(Uuid::now_v7()),
        project_id: Set(project.id),
        name: Set("api".into()),
        image: Set(Some("nginx".into())),
        ..Default::default()
    }
    .insert(&db.conn)
    .await
    .unwrap();
    let stack = stacks::ActiveModel {
        id: Set(Uuid::now_v7()),
        project_id: Set(project.id),
        name: Set("st".into()),
        compose_file: Set("services: {}".into()),
        ..Default::default()
    }
    .insert(&db.conn)
    .await
    .unwrap();
    let mut ids = [Uuid::nil(); 2];
    for (i, (service, stack)) in [(Some(service.id), None), (None, Some(stack.id))]
        .into_iter()
        .enumerate()
    {
        ids[i] = deployments::ActiveModel {
            id: Set(Uuid::now_v7()),
            service_id: Set(service),
            stack_id: Set(stack),
            ..Default::default()
        }
        .insert(&db.conn)
        .await
        .unwrap()
        .id;
    }
    let container = containers::ActiveModel {
        id: Set(Uuid::now_v7()),
        service_id: Set(service.id),
        namespace: Set("web".into()),
        pod_name: Set("api-0".into()),
        pod_uid: Set(format!("uid-{slug}")),
        container_name: Set("api".into()),
        image: Set("nginx".into()),
        ..Default::default()
    }
    .insert(&db.conn)
    .await
    .unwrap();
    let job = jobs::ActiveModel {
        id: Set(Uuid::now_v7()),
        project_id: Set(project.id),
        name: Set("nightly".into()),
        image: Set(Some("busybox".into())),
        ..Default::default()
    }
    .insert(&db.conn)
    .await
    .unwrap();
    let git = git_integrations::ActiveModel {
        id: Set(Uuid::now_v7()),
        organization_id: Set(org.id),
        name: Set("gh".into()),
        provider: Set(GitProvider::Github),
        auth_type: Set(GitAuthType::Token),
        access_token: Set(Some(Encrypted("v2:unset:AAAA".into()))),
        webhook_secret: Set(Encrypted("v2:unset:AAAA".into())),
        ..Default::default()
    }
    .insert(&db.conn)
    .await
    .unwrap();
    Tenant {
        org: org.id,
        deployments: ids,
        container: container.id,
        job: job.id,
        git: git.id,
    }
}

/// A row of every kind at each of [`AGES`] for `t`.
async fn age_rows(db: &TestDb, t: &Tenant, now: DateTime<Utc>) {
    use ferry_db::entities::enums::WebhookDeliveryStatus;
    use ferry_db::entities::webhook_deliveries;
    for age in AGES {
        let at = now - Duration::days(age);
        for (i, deployment) in t.deployments.iter().enumerate() {
            deployment_logs::ActiveModel {
                id: Set(Uuid::now_v7()),
                deployment_id: Set(*deployment),
                level: Set(LogLevel::Info),
                message: Set(format!("{i}:{age}")),
                timestamp: Set(at),
                ..Default::default()
            }
            .insert(&db.conn)
            .await
            .unwrap();
        }
        container_metrics::ActiveModel {
            id: Set(Uuid::now_v7()),
            container_id: Set(t.container),
            timestamp: Set(at),
            cpu_percent: Set(Some(age as f64)),
            ..Default::default()
        }
        .insert(&db.conn)
        .await
        .unwrap();
        job_runs::ActiveModel {
            id: Set(Uuid::now_v7()),
            job_id: Set(t.job),
            status: Set(JobRunStatus::Succeeded),
            finished_at: Set(Some(at)),
            reason: Set(Some(age.to_string())),
            created_at: Set(at),
            ..Default::default()
        }
        .insert(&db.conn)
        .await
        .unwrap();
        webhook_deliveries::ActiveModel {
            id: Set(Uuid::now_v7()),
            organization_id: Set(t.org),
            git_integration_id: Set(t.git),
            delivery_id: Set(age.to_string()),
            event: Set("push".into()),
            status: Set(WebhookDeliveryStatus::Ignored),
            created_at: Set(at),
            ..Default::default()
        }
        .insert(&db.conn)
        .await
        .unwrap();
        audit_logs::ActiveModel {
            id: Set(Uuid::now_v7()),
            organization_id: Set(Some(t.org)),
            action: Set(format!("a.{age}")),
            resource_type: Set(AuditResourceType::Organization),
            created_at: Set(at),
            ..Default::default()
        }
        .insert(&db.conn)
        .await
        .unwrap();
    }
}

/// The ages of `t`'s rows left, per kind: deployment logs (of the service's
/// and of the stack's deployment), metrics, job runs, deliveries, audit.
async fn ages_left(db: &TestDb, t: &Tenant) -> [Vec<i64>; 6] {
    use ferry_db::entities::webhook_deliveries;
    use sea_orm::{ColumnTrait as _, QueryFilter as _};
    let sorted = |mut v: Vec<i64>| {
        v.sort_unstable();
        v
    };
    let mut logs = [Vec::new(), Vec::new()];
    for l in deployment_logs::Entity::find()
        .filter(deployment_logs::Column::DeploymentId.is_in(t.deployments))
        .all(&db.conn)
        .await
        .unwrap()
    {
        let (i, age) = l.message.split_once(':').unwrap();
        logs[i.parse::<usize>().unwrap()].push(age.parse().unwrap());
    }
    let [service_logs, stack_logs] = logs;
    let metrics = container_metrics::Entity::find()
        .filter(container_metrics::Column::ContainerId.eq(t.container))
        .all(&db.conn)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.cpu_percent.unwrap() as i64)
        .collect();
    let runs = job_runs::Entity::find()
        .filter(job_runs::Column::JobId.eq(t.job))
        .all(&db.conn)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.reason.unwrap().parse().unwrap())
        .collect();
    let deliveries = webhook_deliveries::Entity::find()
        .filter(webhook_deliveries::Column::OrganizationId.eq(t.org))
        .all(&db.conn)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.delivery_id.parse().unwrap())
        .collect();
    let audit = audit_logs::Entity::find()
        .filter(audit_logs::Column::OrganizationId.eq(t.org))
        .all(&db.conn)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.action[2..].parse().unwrap())
        .collect();
    [
        sorted(service_logs),
        sorted(stack_logs),
        sorted(metrics),
        sorted(runs),
        sorted(deliveries),
        sorted(audit),
    ]
}

/// The ages below `days`.
fn younger(days: i64) -> Vec<i64> {
    AGES.into_iter().filter(|a| *a < days).collect()
}

/// Organization A keeps its data 90 days, B a week (audit 40 days), C has
/// no overrides and D's are malformed: each loses exactly what its own
/// windows say, in small batches, on both backends; the statements do
/// not depend on how many organizations share a window.
#[tokio::test]
async fn organizations_keep_their_data_as_long_as_their_own_windows_say() {
    use ferry_db::retention::OrgRetention;
    use serde_json::json;
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let now = test_now();
        let all = |days: u32| {
            json!({"theme": "dark", "retention": {
                "deployment_logs_days": days, "container_metrics_days": days,
                "audit_logs_days": days, "job_runs_days": days,
                "webhook_deliveries_days": days,
            }})
        };
        let a = tenant(&db, "a", all(90)).await;
        // A second organization on A's window: still one pass for both.
        let a2 = tenant(&db, "a2", all(90)).await;
        let b_settings = json!({"retention": {
            "deployment_logs_days": 7, "container_metrics_days": 2,
            "audit_logs_days": 40, "job_runs_days": 7, "webhook_deliveries_days": 7,
        }});
        let bb = tenant(&db, "b", b_settings).await;
        let c = tenant(&db, "c", json!({})).await;
        let malformed = json!({"retention": {
            "deployment_logs_days": "1", "container_metrics_days": 0,
            "audit_logs_days": 99999, "job_runs_days": 1.5, "webhook_deliveries_days": -3,
        }});
        assert!(OrgRetention::from_settings(&malformed).is_empty());
        let d = tenant(&db, "d", malformed).await;
        let e = tenant(&db, "e", json!({"retention": "forever"})).await;
        for t in [&a, &a2, &bb, &c, &d, &e] {
            age_rows(&db, t, now).await;
        }

        cleanup_in_batches(
            &db.conn,
            &ferry_tests::test_keyring(),
            &RetentionPolicy::default(),
            now,
            3,
        )
        .await
        .unwrap();

        let y = younger;
        for (name, t) in [("a", &a), ("a2", &a2)] {
            assert_eq!(
                ages_left(&db, t).await,
                [y(90), y(90), y(90), y(90), y(90), y(90)],
                "{b}: {name}"
            );
        }
        assert_eq!(
            ages_left(&db, &bb).await,
            [y(7), y(7), y(2), y(7), y(7), y(40)],
            "{b}: b"
        );
        // The installation's defaults: 30, 7, 30, 30 and 365 days.
        for (name, t) in [("c", &c), ("d", &d), ("e", &e)] {
            assert_eq!(
                ages_left(&db, t).await,
                [y(30), y(30), y(7), y(30), y(30), y(365)],
                "{b}: {name}"
            );
        }
    }
}

/// An organization's window applies even where the installation keeps the
/// data forever (0), and leaves everyone else's alone.
#[tokio::test]
async fn an_override_applies_where_the_installation_keeps_data_forever() {
    use serde_json::json;
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let now = test_now();
        let short = tenant(
            &db,
            "short",
            json!({"retention": {"deployment_logs_days": 10, "job_runs_days": 50}}),
        )
        .await;
        let other = tenant(&db, "other", json!({})).await;
        age_rows(&db, &short, now).await;
        age_rows(&db, &other, now).await;
        let forever = RetentionPolicy {
            deployment_logs_days: 0,
            container_metrics_days: 0,
            audit_logs_days: 0,
            job_runs_days: 0,
            webhook_deliveries_days: 0,
        };
        let report = cleanup(&db.conn, &ferry_tests::test_keyring(), &forever, now)
            .await
            .unwrap();
        assert_eq!((report.deployment_logs, report.job_runs), (10, 3), "{b}");
        let every = AGES.to_vec();
        assert_eq!(
            ages_left(&db, &short).await,
            [
                younger(10),
                younger(10),
                every.clone(),
                younger(50),
                every.clone(),
                every.clone()
            ],
            "{b}"
        );
        let left = ages_left(&db, &other).await;
        assert!(left.iter().all(|ages| *ages == every), "{b}: {left:?}");
    }
}

/// Scale check, run by hand (`-- --ignored`): 3,000 organizations (a third
/// keeping logs 90 days, a third 7, a third on the default), 60,000 log
/// lines. Cleanup runs one statement per window and batch, whatever the
/// number of organizations; prints how long it took.
#[tokio::test]
#[ignore = "scale check, run by hand"]
async fn many_organizations_cost_one_pass_per_window() {
    use sea_orm::EntityTrait as _;
    use serde_json::json;
    const ORGS: usize = 3_000;
    const AGES: [i64; 20] = [
        1, 2, 3, 5, 6, 8, 10, 12, 20, 25, 29, 31, 40, 50, 60, 80, 89, 91, 120, 400,
    ];
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let now = test_now();
        let mut orgs = Vec::new();
        let mut projects_ = Vec::new();
        let mut services_ = Vec::new();
        let mut deployments_ = Vec::new();
        let mut logs = Vec::new();
        for i in 0..ORGS {
            let settings = match i % 3 {
                0 => json!({"retention": {"deployment_logs_days": 90}}),
                1 => json!({"retention": {"deployment_logs_days": 7}}),
                _ => json!({}),
            };
            let (org, project, service, deployment) = (
                Uuid::now_v7(),
                Uuid::now_v7(),
                Uuid::now_v7(),
                Uuid::now_v7(),
            );
            orgs.push(organizations::ActiveModel {
                id: Set(org),
                name: Set(format!("o{i}")),
                slug: Set(format!("o{i}")),
                settings: Set(settings),
                ..Default::default()
            });
            projects_.push(projects::ActiveModel {
                id: Set(project),
                organization_id: Set(org),
                name: Set("web".into()),
                slug: Set("web".into()),
                namespace: Set(format!("ferry-o{i}")),
                ..Default::default()
            });
            services_.push(services::ActiveModel {
                id: Set(service),
                project_id: Set(project),
                name: Set("api".into()),
                image: Set(Some("nginx".into())),
                ..Default::default()
            });
            deployments_.push(deployments::ActiveModel {
                id: Set(deployment),
                service_id: Set(Some(service)),
                ..Default::default()
            });
            for age in AGES {
                logs.push(deployment_logs::ActiveModel {
                    id: Set(Uuid::now_v7()),
                    deployment_id: Set(deployment),
                    level: Set(LogLevel::Info),
                    message: Set(age.to_string()),
                    timestamp: Set(now - Duration::days(age)),
                    ..Default::default()
                });
            }
        }
        async fn insert<A: sea_orm::ActiveModelTrait + Send>(db: &TestDb, rows: Vec<A>) {
            let mut rows = rows.into_iter().peekable();
            while rows.peek().is_some() {
                let chunk: Vec<A> = rows.by_ref().take(500).collect();
                <A::Entity as sea_orm::EntityTrait>::insert_many(chunk)
                    .exec(&db.conn)
                    .await
                    .unwrap();
            }
        }
        insert(&db, orgs).await;
        insert(&db, projects_).await;
        insert(&db, services_).await;
        insert(&db, deployments_).await;
        insert(&db, logs).await;

        let started = std::time::Instant::now();
        let report = cleanup(
            &db.conn,
            &ferry_tests::test_keyring(),
            &RetentionPolicy::default(),
            now,
        )
        .await
        .unwrap();
        let took = started.elapsed();
        let older = |days: i64| AGES.iter().filter(|a| **a > days).count() as u64;
        let per_third = (ORGS / 3) as u64;
        assert_eq!(
            report.deployment_logs,
            per_third * (older(90) + older(7) + older(30)),
            "{b}"
        );
        let left = deployment_logs::Entity::find()
            .all(&db.conn)
            .await
            .unwrap()
            .len() as u64;
        assert_eq!(
            left,
            (ORGS * AGES.len()) as u64 - report.deployment_logs,
            "{b}"
        );
        println!(
            "{b}: {ORGS} organizations, {} log lines: {} deleted in {took:?}",
            ORGS * AGES.len(),
            report.deployment_logs
        );
    }
}

#[tokio::test]
async fn containers_gone_longer_than_the_metrics_window_are_removed_with_their_samples() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let f = fixture(&db).await;
        let now = Utc::now();
        let policy = RetentionPolicy::default(); // metrics: 7 days
        metric(&db, &f, now - Duration::days(1), 1.0).await;
        let removed = |at: DateTime<Utc>| containers::ActiveModel {
            id: Set(f.container),
            removed_at: Set(Some(at)),
            ..Default::default()
        };
        // Removed 6 days ago: kept (an organization may still read its samples).
        removed(now - Duration::days(6))
            .update(&db.conn)
            .await
            .unwrap();
        let report =
            ferry_db::retention::cleanup(&db.conn, &ferry_tests::test_keyring(), &policy, now)
                .await
                .unwrap();
        assert_eq!(report.removed_containers, 0, "{b}");
        assert_eq!(cpus(&db).await, vec![1.0], "{b}");
        // Removed 8 days ago: the row and its samples go.
        removed(now - Duration::days(8))
            .update(&db.conn)
            .await
            .unwrap();
        let report =
            ferry_db::retention::cleanup(&db.conn, &ferry_tests::test_keyring(), &policy, now)
                .await
                .unwrap();
        assert_eq!(report.removed_containers, 1, "{b}");
        assert!(cpus(&db).await.is_empty(), "{b}");
        // Never while metrics are kept forever.
        let forever = RetentionPolicy {
            container_metrics_days: 0,
            ..RetentionPolicy::default()
        };
        let report =
            ferry_db::retention::cleanup(&db.conn, &ferry_tests::test_keyring(), &forever, now)
                .await
                .unwrap();
        assert_eq!(report.removed_containers, 0, "{b}");
    }
}
