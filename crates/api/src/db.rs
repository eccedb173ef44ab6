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

/// A PostgreSQL `LISTEN` connection (shared with the scheduler).
pub use ferry_common::listen::listen;
