//! Migration entry points: `up`, `down`, `status`, `fresh`, and a registry so
//! other crates can add migrations without editing `db` or `migrations/`.
//!
//! ## Concurrent `up` on PostgreSQL
//! Advisory locks belong to a database *session*, and a pool hands out a
//! different session per statement. So every mutating entry point opens a
//! dedicated one-connection pool to the same server (same connect options),
//! takes `pg_advisory_lock(MIGRATION_LOCK_ID)` on it, runs the migrations on
//! that very connection (sea-orm still wraps each migration in its own
//! transaction), unlocks and closes it. A second replica blocks on the lock,
//! then finds nothing pending. If the process dies, PostgreSQL ends the
//! session and frees the lock. SQLite is embedded and single-node: no lock,
//! but the same dedicated-connection approach (see [`fresh`]).

use std::sync::Mutex;
use std::time::Duration;

use sea_orm::sqlx::postgres::PgPoolOptions;
use sea_orm::sqlx::sqlite::SqlitePoolOptions;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, SqlxPostgresConnector, SqlxSqliteConnector,
};
use sea_orm_migration::{MigrationTrait, MigratorTrait};

use crate::{Error, Result};

/// Key of the PostgreSQL advisory lock guarding migrations ("ferrymig" in ASCII).
pub const MIGRATION_LOCK_ID: i64 = 0x6665_7272_796d_6967;

/// Builds one extra migration; see [`register_migration`].
pub type MigrationFactory = fn() -> Box<dyn MigrationTrait>;

static EXTRA: Mutex<Vec<MigrationFactory>> = Mutex::new(Vec::new());

/// Adds a migration that runs after the core ones (extras are ordered by
/// name). Registering the same factory twice has no effect. Call it before
/// [`up`]; the registry is process-wide.
pub fn register_migration(factory: MigrationFactory) {
    let mut extra = EXTRA
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if !extra.iter().any(|f| std::ptr::fn_addr_eq(*f, factory)) {
        extra.push(factory);
    }
}

/// The core migrations followed by the registered ones.
#[derive(Debug, Clone, Copy, Default)]
pub struct Migrator;

#[sea_orm_migration::async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        let mut all = ferry_migration::migrations();
        let factories = EXTRA
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let mut extra: Vec<Box<dyn MigrationTrait>> = factories.iter().map(|f| f()).collect();
        extra.sort_by(|a, b| a.name().cmp(b.name()));
        all.extend(extra);
        all
    }
}

/// One migration and whether it has been applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationStatus {
    /// The migration's name (its version in `seaql_migrations`).
    pub name: String,
    /// Whether it is recorded as applied.
    pub applied: bool,
}

/// Applies every pending migration (under the advisory lock on PostgreSQL).
pub async fn up(db: &DatabaseConnection) -> Result<()> {
    with_lock(db, Op::Up).await
}

/// Rolls back the last `steps` applied migrations (all when `None`).
pub async fn down(db: &DatabaseConnection, steps: Option<u32>) -> Result<()> {
    with_lock(db, Op::Down(steps)).await
}

/// Drops every table and re-applies all migrations. Destroys all data.
pub async fn fresh(db: &DatabaseConnection) -> Result<()> {
    with_lock(db, Op::Fresh).await
}

/// Every known migration in order, with its applied state.
pub async fn status(db: &DatabaseConnection) -> Result<Vec<MigrationStatus>> {
    let migrations = Migrator::get_migration_with_status(db)
        .await
        .map_err(|e| Error::Migration(e.to_string()))?;
    Ok(migrations
        .iter()
        .map(|m| MigrationStatus {
            name: m.name().to_owned(),
            applied: m.status() == sea_orm_migration::MigrationStatus::Applied,
        })
        .collect())
}

#[derive(Clone, Copy)]
enum Op {
    Up,
    Down(Option<u32>),
    Fresh,
}

impl Op {
    async fn run(self, conn: &DatabaseConnection) -> Result<()> {
        match self {
            Op::Up => Migrator::up(conn, None).await,
            Op::Down(steps) => Migrator::down(conn, steps).await,
            Op::Fresh => Migrator::fresh(conn).await,
        }
        .map_err(|e| Error::Migration(e.to_string()))
    }
}

/// Runs `op` on one dedicated connection: on PostgreSQL holding the advisory
/// lock; on SQLite so `fresh`'s `PRAGMA foreign_keys = OFF` applies to the
/// connection that drops the tables.
async fn with_lock(db: &DatabaseConnection, op: Op) -> Result<()> {
    match db.get_database_backend() {
        DbBackend::Postgres => with_pg_lock(db, op).await,
        DbBackend::Sqlite => {
            let pool = db.get_sqlite_connection_pool();
            // A one-connection pool (e.g. in-memory) already is a single session.
            if pool.options().get_max_connections() <= 1 {
                return op.run(db).await;
            }
            let single = SqlitePoolOptions::new()
                .max_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with((*pool.connect_options()).clone())
                .await
                .map_err(|e| {
                    Error::Migration(format!("cannot open the migration connection: {e}"))
                })?;
            let conn = SqlxSqliteConnector::from_sqlx_sqlite_pool(single);
            let result = op.run(&conn).await;
            let _ = conn.close().await;
            result
        }
        _ => op.run(db).await,
    }
}

async fn with_pg_lock(db: &DatabaseConnection, op: Op) -> Result<()> {
    let conn = locked_pg_session(db).await?;
    let result = op.run(&conn).await;
    release_pg_session(conn).await;
    result
}

/// A dedicated one-connection pool holding `pg_advisory_lock(MIGRATION_LOCK_ID)`:
/// schema migrations and the row-binding upgrade run there, one replica at a time.
pub(crate) async fn locked_pg_session(db: &DatabaseConnection) -> Result<DatabaseConnection> {
    let pool = db.get_postgres_connection_pool();
    // One connection that never idles out, so the session (and lock) lasts the whole run.
    let single = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .idle_timeout(None)
        .max_lifetime(None)
        .acquire_timeout(Duration::from_secs(30 * 60))
        .connect_with((*pool.connect_options()).clone())
        .await
        .map_err(|e| Error::Migration(format!("cannot open the migration connection: {e}")))?;
    let conn = SqlxPostgresConnector::from_sqlx_postgres_pool(single);
    conn.execute_unprepared(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK_ID})"))
        .await
        .map_err(|e| Error::Migration(format!("cannot take the migration lock: {e}")))?;
    tracing::debug!("holding the migration advisory lock");
    Ok(conn)
}

/// Unlocks and closes a [`locked_pg_session`].
pub(crate) async fn release_pg_session(conn: DatabaseConnection) {
    // Closing the session releases the lock even if the unlock fails.
    let _ = conn
        .execute_unprepared(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_ID})"))
        .await;
    let _ = conn.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    #[test]
    fn entry_point_futures_are_send() {
        // The api spawns migrations on a multi-threaded runtime.
        let db = DatabaseConnection::default();
        assert_send(&up(&db));
        assert_send(&down(&db, None));
        assert_send(&fresh(&db));
        assert_send(&status(&db));
    }

    #[test]
    fn registering_twice_is_a_no_op() {
        fn extra() -> Box<dyn MigrationTrait> {
            struct M;
            impl sea_orm_migration::MigrationName for M {
                fn name(&self) -> &str {
                    "zz_unit_test_extra"
                }
            }
            #[sea_orm_migration::async_trait::async_trait]
            impl MigrationTrait for M {
                async fn up(
                    &self,
                    _: &sea_orm_migration::SchemaManager,
                ) -> std::result::Result<(), sea_orm::DbErr> {
                    Ok(())
                }
            }
            Box::new(M)
        }
        let core = ferry_migration::migrations().len();
        register_migration(extra);
        register_migration(extra);
        let names: Vec<String> = Migrator::migrations()
            .iter()
            .map(|m| m.name().to_owned())
            .collect();
        assert_eq!(names.len(), core + 1);
        assert_eq!(names.last().map(String::as_str), Some("zz_unit_test_extra"));
    }
}
