//! Key rotation: re-encrypts every encrypted column under the keyring's
//! current key.
//!
//! Each pass selects a batch of values *not* under the current key (their
//! stored prefix is not `v1:<current id>:`), decrypts them with any key in the
//! ring, and writes the new ciphertext back with
//! `UPDATE t SET c = new WHERE c = old`. Matching on the old ciphertext (unique
//! thanks to the random nonce) keeps a concurrent write from being clobbered
//! and needs no knowledge of the primary key's storage type. Rows leave the
//! selection once rotated, so the loop ends, and a second run updates nothing.
//! Table and column names come only from the static [`ENCRYPTED_COLUMNS`] list.

use sea_orm::sea_query::{Alias, Expr, ExprTrait, Query};
use sea_orm::{ConnectionTrait, DatabaseConnection, TransactionTrait};

use crate::Result;
use crate::crypto::{Encrypted, Keyring};
use crate::encrypted_columns::{ENCRYPTED_COLUMNS, EncryptedColumn};

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
}

/// Re-encrypts every column of [`ENCRYPTED_COLUMNS`] under the current key.
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
    let mut report = RotationReport::default();
    for col in columns {
        let rows_updated = rotate_column(db, keyring, col).await?;
        if rows_updated > 0 {
            tracing::info!(
                table = col.table,
                column = col.column,
                rows_updated,
                "re-encrypted"
            );
        }
        report.columns.push(ColumnRotation {
            table: col.table,
            column: col.column,
            rows_updated,
        });
    }
    Ok(report)
}

async fn rotate_column(
    db: &DatabaseConnection,
    keyring: &Keyring,
    col: &EncryptedColumn,
) -> Result<u64> {
    let current_prefix = format!("v1:{}:%", keyring.current_key_id());
    let mut total = 0;
    loop {
        let txn = db.begin().await?;
        let select = Query::select()
            .column(Alias::new(col.column))
            .from(Alias::new(col.table))
            .and_where(Expr::col(Alias::new(col.column)).is_not_null())
            .and_where(Expr::col(Alias::new(col.column)).not_like(current_prefix.as_str()))
            .limit(BATCH)
            .to_owned();
        let rows = txn.query_all(&select).await?;
        if rows.is_empty() {
            txn.commit().await?;
            return Ok(total);
        }
        for row in rows {
            let old: String = row.try_get_by_index(0)?;
            let old = Encrypted(old);
            let plain = keyring.decrypt(col.table, col.column, &old)?;
            let new = keyring.encrypt(col.table, col.column, plain.expose())?;
            let update = Query::update()
                .table(Alias::new(col.table))
                .value(Alias::new(col.column), new.0)
                .and_where(Expr::col(Alias::new(col.column)).eq(old.0))
                .to_owned();
            total += txn.execute(&update).await?.rows_affected();
        }
        txn.commit().await?;
    }
}
