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
pub mod password;
pub mod retention;
pub mod roles;
pub mod rotate;
pub mod seed;
pub mod token;

pub use error::{Error, Result};
pub use sea_orm;
