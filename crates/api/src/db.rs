//! Database helpers every layer shares (no dependency on the rest of the
//! crate, so auth, audit and the RPC modules can all use them).

use ferry_db::sea_orm::{DbErr, SqlErr, TransactionTrait};

use crate::Result;

/// Opens a write transaction: `BEGIN IMMEDIATE` on SQLite, so concurrent
/// writers queue on the busy timeout instead of failing when a read turns
/// into a write; a plain `BEGIN` on PostgreSQL.
pub async fn begin_write<C: TransactionTrait>(db: &C) -> Result<C::Transaction> {
    Ok(ferry_db::begin_write(db).await?)
}

/// Whether a database error is a unique-constraint violation.
pub fn is_unique_violation(err: &DbErr) -> bool {
    matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

/// A PostgreSQL `LISTEN channel` connection, retried with backoff (250 ms
/// doubling to 10 s) until it is up; `None` once `shutdown` fires. `what`
/// names the listener in the log.
pub async fn listen(
    db: &ferry_db::sea_orm::DatabaseConnection,
    channel: &str,
    shutdown: &ferry_common::Shutdown,
    what: &str,
) -> Option<ferry_db::sea_orm::sqlx::postgres::PgListener> {
    use ferry_db::sea_orm::sqlx::postgres::PgListener;
    let mut backoff = std::time::Duration::from_millis(250);
    loop {
        let listening = async {
            let mut listener = PgListener::connect_with(db.get_postgres_connection_pool()).await?;
            listener.listen(channel).await?;
            Ok::<_, ferry_db::sea_orm::sqlx::Error>(listener)
        };
        tokio::select! {
            () = shutdown.wait() => return None,
            listener = listening => match listener {
                Ok(listener) => return Some(listener),
                Err(err) => tracing::warn!(error = %err, "{what}: LISTEN failed; retrying"),
            },
        }
        tokio::select! {
            () = shutdown.wait() => return None,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(std::time::Duration::from_secs(10));
    }
}
