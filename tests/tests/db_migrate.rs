//! Migration entry points on PostgreSQL and SQLite: status, up/down/fresh,
//! extra registered migrations, and concurrent `up` under the advisory lock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferry_db::migrate::{self, MigrationStatus};
use ferry_tests::Backend;
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use sea_orm_migration::prelude::*;

const EXTRA_TABLE: &str = "ferry_extra_plugin_things";

/// A migration as another crate would register it.
struct ExtraMigration;

impl MigrationName for ExtraMigration {
    fn name(&self) -> &str {
        "m0000_extra_plugin_things" // sorts before the core names, must still run after them
    }
}

#[async_trait::async_trait]
impl MigrationTrait for ExtraMigration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(&format!(
                "CREATE TABLE {EXTRA_TABLE} (id INTEGER PRIMARY KEY, note TEXT NOT NULL)"
            ))
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(&format!("DROP TABLE {EXTRA_TABLE}"))
            .await?;
        Ok(())
    }
}

fn extra() -> Box<dyn MigrationTrait> {
    Box::new(ExtraMigration)
}

fn core_names() -> Vec<String> {
    ferry_migration::migrations()
        .iter()
        .map(|m| m.name().to_owned())
        .collect()
}

async fn has_table(conn: &DatabaseConnection, table: &str) -> bool {
    SchemaManager::new(conn).has_table(table).await.unwrap()
}

async fn applied_versions(conn: &DatabaseConnection) -> Vec<String> {
    let backend = conn.get_database_backend();
    conn.query_all_raw(Statement::from_string(
        backend,
        "SELECT version FROM seaql_migrations ORDER BY version",
    ))
    .await
    .unwrap()
    .iter()
    .map(|r| r.try_get_by_index::<String>(0).unwrap())
    .collect()
}

#[tokio::test]
async fn status_up_down_fresh_on_both_backends() {
    let core = core_names();
    assert!(!core.is_empty(), "no core migrations");
    for db in ferry_tests::test_dbs().await {
        let b = db.backend;
        let status = migrate::status(&db.conn).await.unwrap();
        let core_status: Vec<_> = status.iter().take(core.len()).cloned().collect();
        assert_eq!(
            core_status,
            core.iter()
                .map(|n| MigrationStatus {
                    name: n.clone(),
                    applied: false
                })
                .collect::<Vec<_>>(),
            "{b}: fresh database has every core migration pending, in order"
        );

        migrate::up(&db.conn).await.unwrap();
        let status = migrate::status(&db.conn).await.unwrap();
        assert!(
            status.iter().all(|s| s.applied),
            "{b}: all applied after up: {status:?}"
        );
        migrate::up(&db.conn).await.unwrap(); // idempotent

        migrate::down(&db.conn, Some(1)).await.unwrap();
        let status = migrate::status(&db.conn).await.unwrap();
        assert!(!status.last().unwrap().applied, "{b}: last rolled back");
        assert_eq!(status.iter().filter(|s| !s.applied).count(), 1, "{b}");

        migrate::down(&db.conn, None).await.unwrap();
        assert!(
            migrate::status(&db.conn)
                .await
                .unwrap()
                .iter()
                .all(|s| !s.applied),
            "{b}: everything rolled back"
        );
        assert!(applied_versions(&db.conn).await.is_empty(), "{b}");

        migrate::up(&db.conn).await.unwrap();
        db.conn
            .execute_unprepared("CREATE TABLE stray_table (x INTEGER)")
            .await
            .unwrap();
        migrate::fresh(&db.conn).await.unwrap();
        assert!(
            !has_table(&db.conn, "stray_table").await,
            "{b}: fresh drops everything"
        );
        assert!(
            migrate::status(&db.conn)
                .await
                .unwrap()
                .iter()
                .all(|s| s.applied),
            "{b}: fresh re-applies everything"
        );
    }
}

#[tokio::test]
async fn registered_migration_runs_after_core_and_rolls_back() {
    migrate::register_migration(extra);
    migrate::register_migration(extra); // idempotent
    let core = core_names();
    for db in ferry_tests::test_dbs().await {
        let b = db.backend;
        let names: Vec<_> = migrate::status(&db.conn)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names.len(), core.len() + 1, "{b}: {names:?}");
        assert_eq!(names[..core.len()], core[..], "{b}: core first");
        assert_eq!(names.last().unwrap(), "m0000_extra_plugin_things", "{b}");

        migrate::up(&db.conn).await.unwrap();
        assert!(
            has_table(&db.conn, EXTRA_TABLE).await,
            "{b}: extra table created"
        );
        let status = migrate::status(&db.conn).await.unwrap();
        assert!(status.iter().all(|s| s.applied), "{b}: {status:?}");

        // Rolling back one step undoes the extra migration only.
        migrate::down(&db.conn, Some(1)).await.unwrap();
        assert!(
            !has_table(&db.conn, EXTRA_TABLE).await,
            "{b}: extra table dropped"
        );
        let status = migrate::status(&db.conn).await.unwrap();
        assert!(
            status[..core.len()].iter().all(|s| s.applied),
            "{b}: core kept"
        );
        assert!(!status.last().unwrap().applied, "{b}: extra pending");

        migrate::up(&db.conn).await.unwrap();
        assert!(has_table(&db.conn, EXTRA_TABLE).await, "{b}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_up_applies_schema_once() {
    let Some(db) = ferry_tests::postgres_db().await else {
        return; // FERRY_TEST_SQLITE_ONLY=1: the lock is PostgreSQL-only
    };
    assert_eq!(db.backend, Backend::Postgres);
    // Separate pools, as separate replicas would have.
    let mut handles = Vec::new();
    for _ in 0..4 {
        let conn = db.connect_again().await;
        handles.push(tokio::spawn(async move {
            let res = migrate::up(&conn).await;
            let _ = conn.close().await;
            res
        }));
    }
    for h in handles {
        h.await.unwrap().expect("every concurrent up succeeds");
    }
    let versions = applied_versions(&db.conn).await;
    let mut expected = core_names();
    // Another test in this process may have registered an extra migration.
    let listed: Vec<String> = migrate::status(&db.conn)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    expected.extend(listed.into_iter().skip(expected.len()));
    expected.sort();
    assert_eq!(versions, expected, "each migration recorded exactly once");
}

#[tokio::test]
async fn up_waits_for_the_advisory_lock() {
    // While another session holds the lock, `up` must wait; it completes once released.
    let Some(db) = ferry_tests::postgres_db().await else {
        return;
    };
    let single = ferry_db::connect::ConnectConfig {
        url: db.url.clone(),
        pool_size: Some(1),
        ssl: false,
    };
    let holder = ferry_db::connect::connect(&single).await.unwrap();
    let lock_id = migrate::MIGRATION_LOCK_ID;
    holder
        .execute_unprepared(&format!("SELECT pg_advisory_lock({lock_id})"))
        .await
        .unwrap();
    let conn = db.connect_again().await;
    let task = tokio::spawn(async move { migrate::up(&conn).await });
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(
        !task.is_finished(),
        "up must block while another session holds the lock"
    );
    let status = migrate::status(&db.conn).await.unwrap();
    assert!(
        status.iter().all(|s| !s.applied),
        "nothing applied while locked: {status:?}"
    );
    holder
        .execute_unprepared(&format!("SELECT pg_advisory_unlock({lock_id})"))
        .await
        .unwrap();
    task.await.unwrap().unwrap();
    let status = migrate::status(&db.conn).await.unwrap();
    assert!(
        status.iter().all(|s| s.applied),
        "applied after release: {status:?}"
    );
}
