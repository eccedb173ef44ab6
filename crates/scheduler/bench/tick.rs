//! The scheduler's cost: one job tick with 10,000 enabled jobs (nothing
//! due, and 100 due at once), on SQLite and PostgreSQL, plan-only (no
//! cluster, so only Ferry's own work is timed); and the idle memory of the
//! `ferry-scheduler` process. A measurement, not a test:
//!
//! ```text
//! make bench-scheduler
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration as StdDuration, Instant};

use chrono::{Duration, DurationRound as _, Utc};
use ferry_common::testing::{boot, free_addr};
use ferry_db::entities::enums::ConcurrencyPolicy;
use ferry_db::entities::{jobs, organizations, projects};
use ferry_db::sea_orm::sea_query::Expr;
use ferry_db::sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, EntityTrait as _, QueryFilter as _,
    QuerySelect as _,
};
use ferry_scheduler::jobs::runs::Runs;
use ferry_scheduler::jobs::{Engine, LEASE, fire};
use ferry_scheduler::lease::Lease;
use ferry_tests::test_key;
use uuid::Uuid;

const JOBS: usize = 10_000;
const DUE: usize = 100;
/// Further bursts of `DUE` jobs timed after the first.
const BURSTS: usize = 10;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run with make bench-scheduler"]
async fn tick_with_10000_enabled_jobs() {
    for db in ferry_tests::migrated_dbs().await {
        let org = organizations::ActiveModel {
            id: Set(Uuid::now_v7()),
            name: Set("Bench".into()),
            slug: Set("bench".into()),
            ..Default::default()
        }
        .insert(&db.conn)
        .await
        .unwrap();
        let project = projects::ActiveModel {
            id: Set(Uuid::now_v7()),
            organization_id: Set(org.id),
            name: Set("p".into()),
            slug: Set("p".into()),
            namespace: Set("ferry-p-bench".into()),
            ..Default::default()
        }
        .insert(&db.conn)
        .await
        .unwrap();
        // Half past a minute: no job's hourly slot falls in the 20 s the
        // bench ticks through, so each burst fires exactly its own jobs.
        let now = Utc::now().duration_trunc(Duration::minutes(1)).unwrap() + Duration::seconds(30);
        // Hourly jobs spread over the coming hour; DUE of them are due now.
        let rows: Vec<jobs::ActiveModel> = (0..JOBS)
            .map(|i| {
                let next = if i < DUE {
                    now - Duration::seconds(1)
                } else {
                    now + Duration::seconds(60 + (i as i64 % 3540))
                };
                jobs::ActiveModel {
                    id: Set(Uuid::now_v7()),
                    project_id: Set(project.id),
                    name: Set(format!("job-{i}")),
                    schedule: Set(Some(format!("{} * * * *", i % 60))),
                    timezone: Set("UTC".into()),
                    image: Set(Some("busybox:1.36".into())),
                    command: Set(serde_json::json!([])),
                    args: Set(serde_json::json!([])),
                    concurrency_policy: Set(ConcurrencyPolicy::Forbid),
                    max_retries: Set(0),
                    enabled: Set(true),
                    next_run_at: Set(Some(next)),
                    created_at: Set(now),
                    updated_at: Set(now),
                    ..Default::default()
                }
            })
            .collect();
        for chunk in rows.chunks(500) {
            jobs::Entity::insert_many(chunk.to_vec())
                .exec(&db.conn)
                .await
                .unwrap();
        }
        let engine = Engine::new(
            db.conn.clone(),
            None,
            Lease::new(LEASE, "bench", StdDuration::from_secs(15)),
        );
        let started = Instant::now();
        let tick = engine.tick(now).await.unwrap();
        let first_ms = started.elapsed().as_secs_f64() * 1e3;
        assert_eq!(tick.fired.pending.len(), DUE, "{}", db.backend);
        assert_eq!(tick.dispatched.planned, DUE);
        let mut idle = Vec::new();
        for i in 0..20 {
            let at = now + Duration::milliseconds(100 * i);
            let started = Instant::now();
            let tick = engine.tick(at).await.unwrap();
            idle.push(started.elapsed().as_secs_f64() * 1e3);
            assert!(tick.fired.pending.is_empty());
        }
        // More bursts, each of 100 other jobs made due at once.
        let ids: Vec<Uuid> = jobs::Entity::find()
            .select_only()
            .column(jobs::Column::Id)
            .filter(jobs::Column::NextRunAt.gt(now + Duration::seconds(30)))
            .limit((BURSTS * DUE) as u64)
            .into_tuple()
            .all(&db.conn)
            .await
            .unwrap();
        let (mut bursts, mut fire_ms, mut plan_ms) = (Vec::new(), Vec::new(), Vec::new());
        for (b, chunk) in ids.chunks(DUE).enumerate() {
            let at = now + Duration::seconds(5 + b as i64);
            jobs::Entity::update_many()
                .col_expr(
                    jobs::Column::NextRunAt,
                    Expr::value(at - Duration::seconds(1)),
                )
                .filter(jobs::Column::Id.is_in(chunk.to_vec()))
                .exec(&db.conn)
                .await
                .unwrap();
            let started = Instant::now();
            let tick = engine.tick(at).await.unwrap();
            bursts.push(started.elapsed().as_secs_f64() * 1e3);
            assert_eq!(tick.fired.pending.len(), DUE, "{}", db.backend);
            assert_eq!(tick.dispatched.planned, DUE);
            // The same again at the next second, one step at a time.
            let at = at + Duration::milliseconds(500);
            jobs::Entity::update_many()
                .col_expr(
                    jobs::Column::NextRunAt,
                    Expr::value(at - Duration::milliseconds(200)),
                )
                .filter(jobs::Column::Id.is_in(chunk.to_vec()))
                .exec(&db.conn)
                .await
                .unwrap();
            let started = Instant::now();
            let fired = fire::fire_due(&db.conn, at).await.unwrap();
            fire_ms.push(started.elapsed().as_secs_f64() * 1e3);
            let started = Instant::now();
            let planned = Runs::new(db.conn.clone(), None).dispatch(at).await.unwrap();
            plan_ms.push(started.elapsed().as_secs_f64() * 1e3);
            assert_eq!(fired.pending.len(), planned.planned, "{}", db.backend);
        }
        println!(
            "{}: {JOBS} enabled jobs: tick with nothing due {:.2} ms (median of 20); \
             tick with {DUE} due (fire + plan) {:.1} ms the first time, {:.1} ms median of {} more \
             (fire {:.1} ms, plan {:.1} ms)",
            db.backend,
            median(idle),
            first_ms,
            median(bursts.clone()),
            bursts.len(),
            median(fire_ms),
            median(plan_ms),
        );
    }
}

#[tokio::test]
#[ignore = "measurement; run with make bench-scheduler"]
async fn idle_memory_of_the_scheduler_process() {
    let db = ferry_tests::TestDb::sqlite().await;
    db.migrate().await;
    let addr = free_addr();
    let listen = addr.to_string();
    let (process, _) = boot(
        env!("CARGO_BIN_EXE_ferry-scheduler"),
        &[],
        &[
            ("FERRY_SCHEDULER_LISTEN", listen.as_str()),
            ("DATABASE_URL", db.url.as_str()),
            ("ENCRYPTION_KEY", test_key()),
        ],
        addr,
        "ferry-scheduler",
    )
    .await;
    // A few job ticks and the first retention run.
    tokio::time::sleep(StdDuration::from_secs(5)).await;
    let pid = process.pid().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    println!(
        "ferry-scheduler idle (SQLite, no cluster): VmRSS {}, VmHWM {}",
        field("VmRSS:"),
        field("VmHWM:")
    );
}
