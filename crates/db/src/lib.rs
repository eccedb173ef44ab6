//! Ferry's data layer: SeaORM entities, encrypted columns, password and token
//! hashing, connection and migration entry points, retention, seeding and key
//! rotation. Works on PostgreSQL (production) and SQLite (embedded default).

pub mod audit;
pub mod connect;
pub mod crypto;
pub mod encrypted_columns;
pub mod entities;
pub mod error;
pub mod migrate;
pub mod outbox;
pub mod password;
pub mod retention;
pub mod roles;
pub mod rotate;
pub mod seed;
pub mod token;

pub use error::{Error, Result};
pub use sea_orm;

use sea_orm::{DbErr, SqliteTransactionMode, TransactionOptions, TransactionTrait};

/// Opens a write transaction: `BEGIN IMMEDIATE` on SQLite, so concurrent
/// writers queue on the busy timeout instead of failing when a read turns
/// into a write; a plain `BEGIN` on PostgreSQL.
pub async fn begin_write<C: TransactionTrait>(
    db: &C,
) -> std::result::Result<C::Transaction, DbErr> {
    db.begin_with_options(TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..TransactionOptions::default()
    })
    .await
}
