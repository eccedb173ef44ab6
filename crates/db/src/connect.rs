//! Connecting to PostgreSQL or SQLite from a URL or from the environment
//! (`DATABASE_URL`, `DATABASE_POOL_SIZE`, `DATABASE_SSL`).
//!
//! SQLite files are created when missing, with foreign keys on, WAL journaling
//! (`synchronous=NORMAL`) and a busy timeout so a multi-connection pool can
//! share one file. Pooled connections are not pinged on every acquire
//! (SQLite: never; PostgreSQL: after 10 s idle).

use std::fmt;
use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, Database, DatabaseConnection};

use crate::{Error, Result};

/// Environment variable with the database URL.
pub const ENV_URL: &str = "DATABASE_URL";
/// Environment variable with the maximum pool size.
pub const ENV_POOL_SIZE: &str = "DATABASE_POOL_SIZE";
/// Environment variable that requires TLS for PostgreSQL (`true`, `1`, `require`).
pub const ENV_SSL: &str = "DATABASE_SSL";

/// Pool size used for SQLite files when none is configured.
const SQLITE_DEFAULT_POOL: u32 = 5;
/// How long SQLite waits on a locked database before failing.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// A pooled PostgreSQL connection idle at least this long is pinged before
/// use (a dead one is replaced); busier ones are not. The driver default
/// pings on EVERY acquire: one extra round trip per query.
pub const POSTGRES_PING_IF_IDLE: Duration = Duration::from_secs(10);

/// Where and how to connect.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectConfig {
    /// `postgres://...` or `sqlite://...`.
    pub url: String,
    /// Maximum pool connections; the driver default when `None`.
    pub pool_size: Option<u32>,
    /// Require TLS (adds `sslmode=require` to PostgreSQL URLs).
    pub ssl: bool,
}

impl fmt::Debug for ConnectConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectConfig")
            .field("url", &redact_url(&self.url))
            .field("pool_size", &self.pool_size)
            .field("ssl", &self.ssl)
            .finish()
    }
}

impl From<&str> for ConnectConfig {
    fn from(url: &str) -> Self {
        Self::new(url)
    }
}

impl From<String> for ConnectConfig {
    fn from(url: String) -> Self {
        Self::new(url)
    }
}

impl From<&String> for ConnectConfig {
    fn from(url: &String) -> Self {
        Self::new(url.as_str())
    }
}

impl From<&ConnectConfig> for ConnectConfig {
    fn from(config: &ConnectConfig) -> Self {
        config.clone()
    }
}

impl ConnectConfig {
    /// A config for `url` with default pool size and no forced TLS.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pool_size: None,
            ssl: false,
        }
    }

    /// Reads `DATABASE_URL` (required), `DATABASE_POOL_SIZE` and `DATABASE_SSL`.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`ConnectConfig::from_env`] with an injectable variable lookup.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let url = lookup(ENV_URL)
            .map(|u| u.trim().to_owned())
            .filter(|u| !u.is_empty())
            .ok_or_else(|| {
                Error::Config(format!(
                    "{ENV_URL} is not set; set it to a postgres://user:password@host/db \
                     or sqlite://path/to/ferry.db?mode=rwc URL"
                ))
            })?;
        let pool_size = match lookup(ENV_POOL_SIZE).map(|s| s.trim().to_owned()) {
            None => None,
            Some(s) if s.is_empty() => None,
            Some(s) => match s.parse::<u32>() {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    return Err(Error::Config(format!(
                        "{ENV_POOL_SIZE} must be a positive integer, got {s:?}"
                    )));
                }
            },
        };
        let ssl = match lookup(ENV_SSL)
            .map(|s| s.trim().to_ascii_lowercase())
            .as_deref()
        {
            None | Some("" | "false" | "0" | "no" | "off" | "disable") => false,
            Some("true" | "1" | "yes" | "on" | "require") => true,
            Some(other) => {
                return Err(Error::Config(format!(
                    "{ENV_SSL} must be true/1/require or false/0/disable, got {other:?}"
                )));
            }
        };
        Ok(Self {
            url,
            pool_size,
            ssl,
        })
    }

    /// The URL actually used: with `sslmode=require` added for PostgreSQL when
    /// `ssl` is set and the URL does not already choose an `sslmode`.
    pub fn effective_url(&self) -> String {
        if self.ssl && is_postgres(&self.url) && !self.url.contains("sslmode=") {
            let sep = if self.url.contains('?') { '&' } else { '?' };
            format!("{}{sep}sslmode=require", self.url)
        } else {
            self.url.clone()
        }
    }
}

/// Connects using `DATABASE_URL`, `DATABASE_POOL_SIZE` and `DATABASE_SSL`.
pub async fn from_env() -> Result<DatabaseConnection> {
    connect_with(&ConnectConfig::from_env()?).await
}

/// Connects to a URL or a [`ConnectConfig`].
pub async fn connect(target: impl Into<ConnectConfig>) -> Result<DatabaseConnection> {
    connect_with(&target.into()).await
}

/// Connects to a URL with default settings.
pub async fn connect_url(url: &str) -> Result<DatabaseConnection> {
    connect_with(&ConnectConfig::new(url)).await
}

/// Connects with explicit settings.
pub async fn connect_with(config: &ConnectConfig) -> Result<DatabaseConnection> {
    let url = config.effective_url();
    let mut options = ConnectOptions::new(url.clone());
    // Statement logging would put SQL (and literal values) in the logs.
    options.sqlx_logging(false);
    if is_postgres(&url) {
        if let Some(n) = config.pool_size {
            options.max_connections(n);
        }
        options.test_before_acquire_if_idle_for(POSTGRES_PING_IF_IDLE);
    } else if is_sqlite(&url) {
        // A SQLite connection is a local file handle: nothing to ping (the
        // default pings on every acquire, a round trip to the connection's
        // worker thread per query).
        options.test_before_acquire(false);
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        // Each connection to an in-memory database is a separate database.
        let pool = if in_memory {
            1
        } else {
            config.pool_size.unwrap_or(SQLITE_DEFAULT_POOL)
        };
        options.max_connections(pool);
        options.map_sqlx_sqlite_opts(move |o| {
            let o = o
                .foreign_keys(true)
                .busy_timeout(SQLITE_BUSY_TIMEOUT)
                .create_if_missing(true);
            if in_memory {
                o
            } else {
                o.journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
            }
        });
    } else {
        return Err(Error::Config(format!(
            "unsupported database URL {}: use postgres:// or sqlite://",
            redact_url(&url)
        )));
    }
    tracing::info!(url = %redact_url(&url), "connecting to database");
    Ok(Database::connect(options).await?)
}

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

fn is_sqlite(url: &str) -> bool {
    url.starts_with("sqlite:")
}

/// The URL with any password (in the authority or a `password=` parameter) replaced by `****`.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let authority_end = out[rest_start..]
            .find(['/', '?', '#'])
            .map_or(out.len(), |i| rest_start + i);
        if let Some(at) = out[rest_start..authority_end].rfind('@') {
            let userinfo = &out[rest_start..rest_start + at];
            if let Some(colon) = userinfo.find(':') {
                out.replace_range(rest_start + colon + 1..rest_start + at, "****");
            }
        }
    }
    if let Some(q) = out.find('?') {
        let (base, query) = out.split_at(q + 1);
        let query = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=****"),
                _ => pair.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("&");
        out = format!("{base}{query}");
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use sea_orm::{ConnectionTrait, DbBackend, Statement};

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn from_env_requires_url() {
        let err = ConnectConfig::from_lookup(env(&[])).unwrap_err();
        assert!(err.to_string().contains("DATABASE_URL is not set"), "{err}");
    }

    #[test]
    fn from_env_reads_pool_and_ssl() {
        let c = ConnectConfig::from_lookup(env(&[
            (ENV_URL, "postgres://u:p@h/db"),
            (ENV_POOL_SIZE, "7"),
            (ENV_SSL, "require"),
        ]))
        .unwrap();
        assert_eq!(c.pool_size, Some(7));
        assert!(c.ssl);
        assert_eq!(c.effective_url(), "postgres://u:p@h/db?sslmode=require");
        let c = ConnectConfig {
            url: "postgres://h/db?port=5433".into(),
            pool_size: None,
            ssl: true,
        };
        assert_eq!(
            c.effective_url(),
            "postgres://h/db?port=5433&sslmode=require"
        );
        let c = ConnectConfig {
            url: "sqlite://x.db".into(),
            pool_size: None,
            ssl: true,
        };
        assert_eq!(c.effective_url(), "sqlite://x.db");
        for bad in [
            (ENV_POOL_SIZE, "0"),
            (ENV_POOL_SIZE, "ten"),
            (ENV_SSL, "maybe"),
        ] {
            let vars = [(ENV_URL, "postgres://h/db"), bad];
            assert!(matches!(
                ConnectConfig::from_lookup(env(&vars)),
                Err(Error::Config(_))
            ));
        }
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("postgres://ferry:s3cret@db:5432/ferry?sslmode=require"),
            "postgres://ferry:****@db:5432/ferry?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://db/ferry?user=x&password=s3cret"),
            "postgres://db/ferry?user=x&password=****"
        );
        assert_eq!(redact_url("postgres://ferry@db/x"), "postgres://ferry@db/x");
        assert_eq!(
            redact_url("sqlite://data/ferry.db?mode=rwc"),
            "sqlite://data/ferry.db?mode=rwc"
        );
        let c = ConnectConfig::new("postgres://a:topsecret@h/db");
        assert!(!format!("{c:?}").contains("topsecret"));
    }

    #[tokio::test]
    async fn sqlite_file_is_created_with_foreign_keys_and_wal() {
        let dir = std::env::temp_dir().join(format!("ferry-connect-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("new.db");
        let db = connect(format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        assert!(path.exists());
        let get = |sql: &'static str| {
            let db = db.clone();
            async move {
                let row = db
                    .query_one_raw(Statement::from_string(DbBackend::Sqlite, sql))
                    .await
                    .unwrap()
                    .unwrap();
                row.try_get_by_index::<String>(0)
                    .or_else(|_| row.try_get_by_index::<i64>(0).map(|v| v.to_string()))
                    .unwrap()
            }
        };
        assert_eq!(get("PRAGMA foreign_keys").await, "1");
        assert_eq!(get("PRAGMA journal_mode").await.to_lowercase(), "wal");
        assert_eq!(get("PRAGMA busy_timeout").await, "10000");
        db.close().await.unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn unsupported_scheme_is_rejected() {
        let err = connect("mysql://root:pw@h/db").await.unwrap_err();
        assert!(matches!(err, Error::Config(_)));
        assert!(!err.to_string().contains("pw@"));
    }
}
