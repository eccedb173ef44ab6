//! Re-encryption of every encrypted column: key rotation, and the upgrade of
//! legacy v1 values to v2 values bound to their row.
//!
//! Each pass walks a column in primary-key order, a batch per transaction,
//! selecting `(id, value)` for values that need work (rotation: not
//! `v2:<current id>:`; upgrade: `v1:`), decrypts each with any key in the ring
//! (v1 with its legacy associated data), re-encrypts it bound to its row and
//! writes it back with `UPDATE t SET c = new WHERE id = ? AND c = old`.
//! Matching on the old ciphertext (unique thanks to the random nonce) keeps a
//! concurrent write from being clobbered. Walking by id always ends, and a
//! second run updates nothing. Table and column names come only from the
//! static [`ENCRYPTED_COLUMNS`] list.

use sea_orm::sea_query::{Alias, Expr, ExprTrait, Order, Query};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend};
use uuid::Uuid;

use crate::crypto::{Encrypted, Keyring, LEGACY_VERSION};
use crate::encrypted_columns::{ENCRYPTED_COLUMNS, EncryptedColumn};
use crate::{Error, Result};

/// Values re-encrypted per transaction.
const BATCH: u64 = 200;

/// How many rows of one column were re-encrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnRotation {
    /// Table name.
    pub table: &'static str,
    /// Column name.
    pub column: &'static str,
    /// Rows whose value was re-encrypted.
    pub rows_updated: u64,
    /// Legacy values the upgrade could not decrypt (left as they are).
    pub rows_skipped: u64,
}

/// The outcome of a rotation, one entry per column.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RotationReport {
    /// Per-column counts, in the order the columns were given.
    pub columns: Vec<ColumnRotation>,
}

impl RotationReport {
    /// Total rows re-encrypted.
    pub fn total_updated(&self) -> u64 {
        self.columns.iter().map(|c| c.rows_updated).sum()
    }

    /// Rows re-encrypted in `table.column` (0 when it was not part of the run).
    pub fn updated(&self, table: &str, column: &str) -> u64 {
        self.columns
            .iter()
            .find(|c| c.table == table && c.column == column)
            .map_or(0, |c| c.rows_updated)
    }

    /// Total legacy values the upgrade left alone because they did not decrypt.
    pub fn total_skipped(&self) -> u64 {
        self.columns.iter().map(|c| c.rows_skipped).sum()
    }
}

/// Which values a pass rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Everything not v2 under the current key; a value that does not decrypt fails the run.
    Rotate,
    /// Legacy v1 values only; one that does not decrypt is logged and skipped,
    /// so a stray value cannot keep the api from starting.
    BindRows,
}

/// Re-encrypts every column of [`ENCRYPTED_COLUMNS`] under the current key,
/// bound to its row (this upgrades legacy v1 values too).
pub async fn reencrypt_all(db: &DatabaseConnection, keyring: &Keyring) -> Result<RotationReport> {
    reencrypt_columns(db, keyring, ENCRYPTED_COLUMNS).await
}

/// Re-encrypts the given columns under the current key. Fails (leaving
/// earlier batches committed, which is safe) if a value cannot be decrypted.
pub async fn reencrypt_columns(
    db: &DatabaseConnection,
    keyring: &Keyring,
    columns: &[EncryptedColumn],
) -> Result<RotationReport> {
    rewrite(db, keyring, columns, Pass::Rotate).await
}

/// Upgrades every legacy v1 value of [`ENCRYPTED_COLUMNS`] to v2 bound to its
/// row. Idempotent; on PostgreSQL it holds the migration advisory lock, so
/// api replicas starting together do the work once. Values that do not
/// decrypt are skipped and counted, never fatal.
pub async fn bind_rows(db: &DatabaseConnection, keyring: &Keyring) -> Result<RotationReport> {
    if db.get_database_backend() != DbBackend::Postgres {
        return rewrite(db, keyring, ENCRYPTED_COLUMNS, Pass::BindRows).await;
    }
    let conn = crate::migrate::locked_pg_session(db).await?;
    let result = rewrite(&conn, keyring, ENCRYPTED_COLUMNS, Pass::BindRows).await;
    crate::migrate::release_pg_session(conn).await;
    result
}

/// How many stored values are not yet bound to their row (legacy v1).
pub async fn unbound_count<C: ConnectionTrait>(db: &C) -> Result<u64> {
    let mut total = 0u64;
    for col in ENCRYPTED_COLUMNS {
        let count = Query::select()
            .expr(Expr::col(Alias::new(col.column)).count())
            .from(Alias::new(col.table))
            .and_where(Expr::col(Alias::new(col.column)).like(format!("{LEGACY_VERSION}:%")))
            .to_owned();
        let n: i64 = match db.query_one(&count).await? {
            Some(row) => row.try_get_by_index(0)?,
            None => 0,
        };
        total += u64::try_from(n).unwrap_or(0);
    }
    Ok(total)
}

async fn rewrite(
    db: &DatabaseConnection,
    keyring: &Keyring,
    columns: &[EncryptedColumn],
    pass: Pass,
) -> Result<RotationReport> {
    let mut report = RotationReport::default();
    for col in columns {
        let done = rewrite_column(db, keyring, col, pass).await?;
        if done.rows_updated > 0 || done.rows_skipped > 0 {
            tracing::info!(
                table = col.table,
                column = col.column,
                rows_updated = done.rows_updated,
                rows_skipped = done.rows_skipped,
                "re-encrypted"
            );
        }
        report.columns.push(done);
    }
    Ok(report)
}

async fn rewrite_column(
    db: &DatabaseConnection,
    keyring: &Keyring,
    col: &EncryptedColumn,
    pass: Pass,
) -> Result<ColumnRotation> {
    let (id, value) = (Alias::new("id"), Alias::new(col.column));
    let needs_work = match pass {
        Pass::Rotate => Expr::col(value.clone()).not_like(format!("{}%", keyring.current_prefix())),
        Pass::BindRows => Expr::col(value.clone()).like(format!("{LEGACY_VERSION}:%")),
    };
    let mut done = ColumnRotation {
        table: col.table,
        column: col.column,
        rows_updated: 0,
        rows_skipped: 0,
    };
    let mut after: Option<Uuid> = None;
    loop {
        // IMMEDIATE on SQLite: a concurrent writer (the api serving while
        // `rotate-key` runs) queues on the busy timeout instead of failing.
        let txn = crate::begin_write(db).await?;
        let mut select = Query::select()
            .column(id.clone())
            .column(value.clone())
            .from(Alias::new(col.table))
            .and_where(Expr::col(value.clone()).is_not_null())
            .and_where(needs_work.clone())
            .order_by(id.clone(), Order::Asc)
            .limit(BATCH)
            .to_owned();
        if let Some(last) = after {
            select.and_where(Expr::col(id.clone()).gt(last));
        }
        let rows = txn.query_all(&select).await?;
        let Some(last) = rows.last() else {
            txn.commit().await?;
            return Ok(done);
        };
        after = Some(last.try_get_by_index(0)?);
        for row in rows {
            let row_id: Uuid = row.try_get_by_index(0)?;
            let old = Encrypted(row.try_get_by_index(1)?);
            let plain = match keyring.decrypt_upgrading(col.table, col.column, row_id, &old) {
                Ok(plain) => plain,
                Err(err @ Error::Decrypt { .. }) if pass == Pass::BindRows => {
                    tracing::error!(table = col.table, column = col.column, row = %row_id,
                        error = %err, "cannot upgrade a stored value; it stays unreadable");
                    done.rows_skipped += 1;
                    continue;
                }
                Err(err) => return Err(err),
            };
            let new = keyring.encrypt(col.table, col.column, row_id, plain.expose())?;
            let update = Query::update()
                .table(Alias::new(col.table))
                .value(value.clone(), new.0)
                .and_where(Expr::col(id.clone()).eq(row_id))
                .and_where(Expr::col(value.clone()).eq(old.0))
                .to_owned();
            done.rows_updated += txn.execute(&update).await?.rows_affected();
        }
        txn.commit().await?;
    }
}
