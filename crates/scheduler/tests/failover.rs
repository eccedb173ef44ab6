//! Two real `ferry-scheduler` processes on one database with a short lease
//! TTL; the one holding the leases is killed with SIGKILL (no release, no
//! drain). The other takes the `jobs` and `retention` leases over within
//! the TTL and a little, and every due slot gets exactly one run: none is
//! duplicated, none lost, none left pending. Without a cluster runs end
//! `planned`.
//!
//! The jobs are yearly (`0 0 1 1 *`) with `next_run_at` a moment ago, so
//! each has exactly one due slot during the test, whatever minute it runs
//! in (an every-minute job crossing a minute boundary while no replica
//! leads would rightly record a `missed` slot, which would make the
//! expected outcome depend on the clock).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Duration, SubsecRound as _, Utc};
use ferry_common::testing::{ServiceProcess, free_addr, stop_cleanly, wait_until_serving};
use ferry_db::entities::enums::{ConcurrencyPolicy, JobRunStatus};
use ferry_db::entities::{job_runs, jobs, leases, organizations, projects};
use ferry_db::sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, DatabaseConnection,
    EntityTrait as _, QueryFilter as _,
};
use ferry_tests::{TestDb, test_key};
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_ferry-scheduler");
const TTL_SECS: u64 = 3;
const WAVE: usize = 150;

async fn spawn(db: &TestDb) -> (ServiceProcess, SocketAddr) {
    let addr = free_addr();
    let listen = addr.to_string();
    let ttl = TTL_SECS.to_string();
    let mut process = ServiceProcess::spawn(
        BIN,
        &[],
        &[
            ("FERRY_SCHEDULER_LISTEN", listen.as_str()),
            ("DATABASE_URL", db.url.as_str()),
            ("ENCRYPTION_KEY", test_key()),
            ("FERRY_SCHEDULER_LEASE_TTL_SECS", ttl.as_str()),
            ("FERRY_SCHEDULER_JOBS_INTERVAL_MS", "200"),
            ("FERRY_SCHEDULER_RETENTION_INTERVAL_SECS", "1"),
            ("FERRY_SCHEDULER_READINESS_INTERVAL_MS", "500"),
            ("FERRY_SHUTDOWN_GRACE_SECS", "5"),
        ],
    );
    wait_until_serving(&mut process, addr, StdDuration::from_secs(30)).await;
    (process, addr)
}

/// Holder of each lease (empty when free or expired).
async fn holders(db: &DatabaseConnection) -> HashMap<String, String> {
    let now = Utc::now();
    leases::Entity::find()
        .all(db)
        .await
        .unwrap()
        .into_iter()
        .map(|l| {
            let holder = if l.expires_at > now {
                l.holder
            } else {
                String::new()
            };
            (l.name, holder)
        })
        .collect()
}

/// Whether `holder` (`<host>/<pid>/<random>`) is the process `pid`.
fn is(holder: &str, pid: u32) -> bool {
    holder.split('/').nth(1) == Some(pid.to_string().as_str())
}

async fn wait_for(what: &str, timeout: StdDuration, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
}

async fn project(db: &DatabaseConnection) -> Uuid {
    let org = organizations::ActiveModel {
        id: Set(Uuid::now_v7()),
        name: Set("Acme".into()),
        slug: Set("acme".into()),
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
        namespace: Set("ferry-web-test".into()),
        ..Default::default()
    }
    .insert(db)
    .await
    .unwrap()
    .id
}

/// `WAVE` enabled jobs, each with one slot due a moment ago.
async fn wave(db: &DatabaseConnection, project: Uuid, n: usize) -> HashMap<Uuid, DateTime<Utc>> {
    let now = Utc::now();
    // Whole seconds: PostgreSQL keeps microseconds, chrono nanoseconds.
    let due = (now - Duration::seconds(1)).trunc_subsecs(0);
    let rows: Vec<jobs::ActiveModel> = (0..WAVE)
        .map(|i| jobs::ActiveModel {
            id: Set(Uuid::now_v7()),
            project_id: Set(project),
            name: Set(format!("w{n}-{i}")),
            schedule: Set(Some("0 0 1 1 *".into())),
            timezone: Set("UTC".into()),
            image: Set(Some("busybox:1.36".into())),
            command: Set(serde_json::json!([])),
            args: Set(serde_json::json!([])),
            concurrency_policy: Set(ConcurrencyPolicy::Forbid),
            max_retries: Set(0),
            enabled: Set(true),
            next_run_at: Set(Some(due)),
            created_at: Set(now),
            updated_at: Set(now),
            ..Default::default()
        })
        .collect();
    let ids = rows.iter().map(|r| (r.id.clone().unwrap(), due)).collect();
    jobs::Entity::insert_many(rows).exec(db).await.unwrap();
    ids
}

async fn runs_of(
    db: &DatabaseConnection,
    jobs: &HashMap<Uuid, DateTime<Utc>>,
) -> Vec<job_runs::Model> {
    let ids: Vec<Uuid> = jobs.keys().copied().collect();
    let mut all = Vec::new();
    for chunk in ids.chunks(200) {
        all.extend(
            job_runs::Entity::find()
                .filter(job_runs::Column::JobId.is_in(chunk.to_vec()))
                .all(db)
                .await
                .unwrap(),
        );
    }
    all
}

/// Every job of `jobs` has exactly one run, for its due slot, planned.
async fn all_planned(db: &DatabaseConnection, jobs: &HashMap<Uuid, DateTime<Utc>>) -> bool {
    let runs = runs_of(db, jobs).await;
    runs.len() == jobs.len() && runs.iter().all(|r| r.status == JobRunStatus::Planned)
}

#[tokio::test]
async fn a_killed_leader_is_replaced_within_the_ttl_and_no_slot_is_lost_or_doubled() {
    for db in ferry_tests::migrated_dbs().await {
        let backend = db.backend;
        let started = Instant::now();
        let project = project(&db.conn).await;

        // A starts alone and takes both leases; B starts once A holds them.
        let (a, _) = spawn(&db).await;
        let a_pid = a.pid().unwrap();
        wait_for(
            "A to hold both leases",
            StdDuration::from_secs(10),
            async || {
                let h = holders(&db.conn).await;
                ["jobs", "retention"]
                    .iter()
                    .all(|name| h.get(*name).is_some_and(|holder| is(holder, a_pid)))
            },
        )
        .await;
        let (b, _) = spawn(&db).await;
        let b_pid = b.pid().unwrap();

        // Wave 1: fired by A.
        let mut expected = wave(&db.conn, project, 1).await;
        let first = expected.clone();
        wait_for("wave 1 planned", StdDuration::from_secs(15), async || {
            all_planned(&db.conn, &first).await
        })
        .await;
        // B waits: retention ran on A only (every second), never on B.
        assert!(
            a.wait_for_stdout("retention cleanup finished", StdDuration::from_secs(5))
                .await,
            "{}",
            a.output()
        );
        assert!(
            !b.stdout().contains("retention cleanup finished"),
            "{backend}: retention ran on the replica without the lease\n{}",
            b.output()
        );
        let h = holders(&db.conn).await;
        assert!(is(&h["jobs"], a_pid) && is(&h["retention"], a_pid), "{h:?}");

        // Wave 2, and A is killed as soon as it starts on it (or at once).
        let second = wave(&db.conn, project, 2).await;
        expected.extend(second.iter().map(|(k, v)| (*k, *v)));
        let _ = tokio::time::timeout(StdDuration::from_secs(2), async {
            while runs_of(&db.conn, &second).await.is_empty() {
                tokio::time::sleep(StdDuration::from_millis(5)).await;
            }
        })
        .await;
        a.sigkill();
        let killed = Instant::now();
        let before_kill = runs_of(&db.conn, &second).await.len();
        // Wave 3 comes due while no replica leads.
        let third = wave(&db.conn, project, 3).await;
        expected.extend(third);

        // B takes both leases over within the TTL (plus its tick and slack).
        wait_for(
            "B to take both leases over",
            StdDuration::from_secs(TTL_SECS + 3),
            async || {
                let h = holders(&db.conn).await;
                ["jobs", "retention"]
                    .iter()
                    .all(|name| h.get(*name).is_some_and(|holder| is(holder, b_pid)))
            },
        )
        .await;
        let takeover = killed.elapsed();
        wait_for(
            "every slot planned",
            StdDuration::from_secs(15),
            async || all_planned(&db.conn, &expected).await,
        )
        .await;
        assert!(
            b.wait_for_stdout("retention cleanup finished", StdDuration::from_secs(5))
                .await,
            "{backend}: B never ran retention after taking over\n{}",
            b.output()
        );

        // Exactly one run per slot, for the slot that was due.
        let runs = runs_of(&db.conn, &expected).await;
        let mut seen = HashSet::new();
        for run in &runs {
            assert!(
                seen.insert((run.job_id, run.scheduled_for)),
                "{backend}: slot fired twice: {run:?}"
            );
            assert_eq!(run.scheduled_for, Some(expected[&run.job_id]), "{run:?}");
            assert_eq!(run.status, JobRunStatus::Planned, "{run:?}");
        }
        assert_eq!(runs.len(), expected.len(), "{backend}: a slot was lost");
        // Every job moved on to next year's slot.
        let moved = jobs::Entity::find()
            .filter(jobs::Column::NextRunAt.lte(Utc::now()))
            .all(&db.conn)
            .await
            .unwrap();
        assert!(
            moved.is_empty(),
            "{backend}: jobs still due: {}",
            moved.len()
        );

        println!(
            "{backend}: leases taken over {:.1} s after SIGKILL (TTL {TTL_SECS} s); \
             {before_kill}/{WAVE} of wave 2 fired before the kill; {} slots, one run each; {:.1} s in all",
            takeover.as_secs_f64(),
            expected.len(),
            started.elapsed().as_secs_f64()
        );
        drop(a);
        stop_cleanly(b, StdDuration::from_secs(10)).await;
    }
}
