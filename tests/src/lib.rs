//! Shared test support for Ferry's integration tests: fresh PostgreSQL and
//! SQLite databases (optionally migrated) and a deterministic test keyring.
//!
//! PostgreSQL comes from `DATABASE_URL`, an admin URL; every [`TestDb`] gets a
//! new database `ferry_test_<uuid>` that is dropped when the `TestDb` is
//! dropped. Run the suite through `tests/scripts/with-postgres.sh` (or
//! `make test`) to get a throwaway server. `FERRY_TEST_SQLITE_ONLY=1` skips
//! PostgreSQL.
// Test support: failing loudly with a clear message is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod fixtures;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use ferry_db::crypto::{Encrypted, Keyring};
use sea_orm::{ConnectionTrait, DatabaseConnection};

/// Which database engine a [`TestDb`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// PostgreSQL (from `DATABASE_URL`).
    Postgres,
    /// SQLite (a file in a temp dir).
    Sqlite,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        })
    }
}

/// A fresh, empty database. Removed (best effort) on drop.
pub struct TestDb {
    /// A pooled connection to the database.
    pub conn: DatabaseConnection,
    /// The engine.
    pub backend: Backend,
    /// The URL of this database (connect again with it to get a second pool).
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    // Field kept only so the directory lives as long as the database.
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres { admin_url: String, name: String },
}

impl fmt::Debug for TestDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestDb")
            .field("backend", &self.backend)
            .field("url", &self.url)
            .finish()
    }
}

/// Env var that restricts the suite to SQLite.
pub const SQLITE_ONLY_ENV: &str = "FERRY_TEST_SQLITE_ONLY";

/// True when `FERRY_TEST_SQLITE_ONLY=1`.
pub fn sqlite_only() -> bool {
    std::env::var(SQLITE_ONLY_ENV).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// The PostgreSQL admin URL, or `None` in SQLite-only mode. Panics with
/// instructions when `DATABASE_URL` is unset and SQLite-only mode is off.
pub fn postgres_admin_url() -> Option<String> {
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() && !sqlite_only() => {
            assert!(
                url.starts_with("postgres://") || url.starts_with("postgresql://"),
                "DATABASE_URL must be a PostgreSQL admin URL for the tests (got a non-postgres URL)"
            );
            Some(url)
        }
        _ if sqlite_only() => None,
        _ => panic!(
            "DATABASE_URL is not set. The database tests run on PostgreSQL and SQLite: \
             use `make test`, or `tests/scripts/with-postgres.sh cargo nextest run ...` \
             (starts a throwaway PostgreSQL), or set {SQLITE_ONLY_ENV}=1 to run on SQLite only."
        ),
    }
}

impl TestDb {
    /// A new SQLite database file in its own temp dir.
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::Builder::new()
            .prefix("ferry-test-")
            .tempdir()
            .expect("create temp dir for SQLite test database");
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("ferry.db").display()
        );
        let conn = ferry_db::connect::connect_url(&url)
            .await
            .expect("connect to SQLite test database");
        TestDb {
            conn,
            backend: Backend::Sqlite,
            url,
            cleanup: Cleanup::Sqlite(dir),
        }
    }

    /// A new PostgreSQL database created through `admin_url`.
    pub async fn postgres(admin_url: &str) -> TestDb {
        let name = format!("ferry_test_{}", uuid::Uuid::new_v4().simple());
        let admin = ferry_db::connect::connect_url(admin_url)
            .await
            .expect("connect to PostgreSQL with DATABASE_URL");
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("create PostgreSQL test database");
        let _ = admin.close().await;
        let url = database_url(admin_url, &name);
        let conn = ferry_db::connect::connect_url(&url)
            .await
            .expect("connect to PostgreSQL test database");
        TestDb {
            conn,
            backend: Backend::Postgres,
            url,
            cleanup: Cleanup::Postgres {
                admin_url: admin_url.to_owned(),
                name,
            },
        }
    }

    /// A second, independent connection pool to the same database (like
    /// another process would have).
    pub async fn connect_again(&self) -> DatabaseConnection {
        ferry_db::connect::connect_url(&self.url)
            .await
            .unwrap_or_else(|e| panic!("reconnect to {} test database: {e}", self.backend))
    }

    /// Applies all migrations.
    pub async fn migrate(&self) {
        ferry_db::migrate::up(&self.conn)
            .await
            .unwrap_or_else(|e| panic!("migrate {} test database: {e}", self.backend));
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Cleanup::Postgres { admin_url, name } = &self.cleanup else {
            return; // the TempDir removes the SQLite file
        };
        let (admin_url, name) = (admin_url.clone(), name.clone());
        // The test's runtime may be single-threaded and is blocked here, so the
        // drop runs on its own thread and runtime; FORCE ends our pool's sessions.
        let worker = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let drop_db = async {
                    let admin = ferry_db::connect::connect_url(&admin_url).await.ok()?;
                    let res = admin
                        .execute_unprepared(&format!(
                            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                        ))
                        .await;
                    let _ = admin.close().await;
                    res.ok()
                };
                let _ = tokio::time::timeout(Duration::from_secs(30), drop_db).await;
            });
        });
        let _ = worker.join();
    }
}

/// `admin_url` with its database path replaced by `name`; query parameters
/// (such as `host=/socket/dir&port=5432`) are kept.
pub fn database_url(admin_url: &str, name: &str) -> String {
    let mut url = url::Url::parse(admin_url).expect("DATABASE_URL is not a valid URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// Fresh empty databases: SQLite, then PostgreSQL (unless SQLite-only mode).
pub async fn test_dbs() -> Vec<TestDb> {
    let mut dbs = vec![TestDb::sqlite().await];
    if let Some(admin) = postgres_admin_url() {
        dbs.push(TestDb::postgres(&admin).await);
    }
    dbs
}

/// Like [`test_dbs`], with every migration applied.
pub async fn migrated_dbs() -> Vec<TestDb> {
    let dbs = test_dbs().await;
    for db in &dbs {
        db.migrate().await;
    }
    dbs
}

/// A fresh PostgreSQL database, or `None` in SQLite-only mode.
pub async fn postgres_db() -> Option<TestDb> {
    match postgres_admin_url() {
        Some(admin) => Some(TestDb::postgres(&admin).await),
        None => None,
    }
}

/// The deterministic test encryption key (64 hex characters). Test use only.
pub fn test_key() -> &'static str {
    "5f0c6a3e1d9b4e7f8a2c3b4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7081"
}

/// A second deterministic key, for rotation tests.
pub fn test_key_b() -> &'static str {
    "c0ffee00c0ffee01c0ffee02c0ffee03c0ffee04c0ffee05c0ffee06c0ffee07"
}

/// A keyring whose current key is [`test_key`].
pub fn test_keyring() -> Keyring {
    Keyring::new(test_key(), &[]).expect("test key is valid")
}

/// A value in the legacy v1 format (associated data `table.column`, no row),
/// written here independently of `ferry_db`, as Ferry stored it before row
/// binding. For upgrade tests.
pub fn legacy_v1(key_hex: &str, table: &str, column: &str, plaintext: &str) -> Encrypted {
    use aes_gcm::aead::{Aead, Generate, KeyInit, Payload};
    use base64::Engine as _;
    use sha2::Digest as _;
    let key = hex::decode(key_hex).expect("a hex key");
    let cipher = aes_gcm::Aes256Gcm::new_from_slice(&key).expect("a 32-byte key");
    let nonce = aes_gcm::aead::Nonce::<aes_gcm::Aes256Gcm>::try_generate().expect("randomness");
    let aad = format!("{table}.{column}");
    let sealed = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: plaintext.as_bytes(),
                aad: aad.as_bytes(),
            },
        )
        .expect("encryption");
    let mut blob = nonce.to_vec();
    blob.extend_from_slice(&sealed);
    let id = hex::encode(&sha2::Sha256::digest(&key)[..4]);
    Encrypted(format!(
        "v1:{id}:{}",
        base64::engine::general_purpose::STANDARD.encode(blob)
    ))
}

/// The workspace root directory.
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}
