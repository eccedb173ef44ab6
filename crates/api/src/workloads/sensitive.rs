//! Which environment values are secret when nobody said so.
//!
//! A Compose file has no `secret` flag, so the key decides, and the safer
//! default wins: **a value is secret unless its key is clearly not
//! sensitive**. Clearly not sensitive, with the key upper-cased, means both:
//!
//! - it contains none of [`CREDENTIAL_WORDS`] (`PASSWORD`, `SECRET`,
//!   `TOKEN`, `KEY`, `AUTH`, ...), and
//! - it is one of [`PUBLIC_NAMES`] (`TZ`, `NODE_ENV`, `LOG_LEVEL`, `PORT`,
//!   ...) or ends with one of [`PUBLIC_SUFFIXES`] (`_HOST`, `_PORT`,
//!   `_ENV`, `_LEVEL`, ...).
//!
//! Everything else (`DATABASE_URL`, `SMTP_PASS`, `SESSION_SALT`,
//! `POSTGRES_USER`, ...) is stored encrypted, reads as `***`, and is
//! masked in the compose file and template specs shown to viewers.

/// Words that make a key secret even when it also looks like a setting.
pub const CREDENTIAL_WORDS: &[&str] = &[
    "PASSWORD",
    "PASSWD",
    "PASS",
    "PWD",
    "SECRET",
    "TOKEN",
    "KEY",
    "CREDENTIAL",
    "AUTH",
    "PRIVATE",
    "SALT",
    "SIGNATURE",
    "COOKIE",
    "SESSION",
];

/// Well-known settings that never carry credentials.
pub const PUBLIC_NAMES: &[&str] = &[
    "TZ",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "ENV",
    "ENVIRONMENT",
    "NODE_ENV",
    "RAILS_ENV",
    "RACK_ENV",
    "APP_ENV",
    "FLASK_ENV",
    "DEBUG",
    "MODE",
    "LOG_LEVEL",
    "LOGLEVEL",
    "LOG_FORMAT",
    "RUST_LOG",
    "RUST_BACKTRACE",
    "PYTHONUNBUFFERED",
    "PYTHONDONTWRITEBYTECODE",
    "GOMAXPROCS",
    "WEB_CONCURRENCY",
    "WORKERS",
    "HOST",
    "HOSTNAME",
    "PORT",
    "PUID",
    "PGID",
    "UMASK",
];

/// Suffixes of settings that never carry credentials.
pub const PUBLIC_SUFFIXES: &[&str] = &[
    "_HOST",
    "_HOSTNAME",
    "_PORT",
    "_ENV",
    "_MODE",
    "_LEVEL",
    "_TIMEOUT",
    "_WORKERS",
    "_THREADS",
    "_CONCURRENCY",
    "_REGION",
    "_LOCALE",
];

/// Whether `key`'s value must be stored and shown as a secret (see the
/// module docs for the rule).
pub fn is_secret_key(key: &str) -> bool {
    !is_clearly_public(&key.to_ascii_uppercase())
}

fn is_clearly_public(key: &str) -> bool {
    let names_credential = CREDENTIAL_WORDS.iter().any(|w| key.contains(w));
    let is_setting =
        PUBLIC_NAMES.contains(&key) || PUBLIC_SUFFIXES.iter().any(|s| key.ends_with(s));
    !names_credential && is_setting
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_unless_clearly_not_sensitive() {
        for key in [
            "DATABASE_URL",
            "POSTGRES_PASSWORD",
            "SMTP_PASS",
            "SESSION_SALT",
            "API_KEY",
            "GITHUB_TOKEN",
            "POSTGRES_USER",
            "SECRET_KEY_BASE",
            "AUTH_HOST",
            "PRIVATE_KEY_MODE",
            "something",
            "",
        ] {
            assert!(is_secret_key(key), "{key} should be secret");
        }
        for key in [
            "TZ",
            "tz",
            "NODE_ENV",
            "LOG_LEVEL",
            "DB_HOST",
            "REDIS_PORT",
            "APP_ENV",
            "PORT",
            "MODE",
            "worker_threads",
        ] {
            assert!(!is_secret_key(key), "{key} should be plain");
        }
    }
}
