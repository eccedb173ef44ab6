//! A short-lived, per-replica memory of credentials that authenticated, so
//! an authenticated read does not pay a database round trip for its token.
//!
//! Why it stays correct:
//! - An entry lives at most [`CACHE_TTL`], and never past the credential's
//!   own expiry.
//! - Every revocation in this process (logout, session and token revocation,
//!   password change, member removal, organization deletion, ...) goes
//!   through [`CredentialCache::forget_all`] after its commit.
//! - On PostgreSQL, triggers on `sessions`, `api_tokens` and `users`
//!   (migration m0012) `NOTIFY ferry_credentials` at commit, whatever wrote
//!   the row (another replica, the scheduler, an operator's SQL); every
//!   replica `LISTEN`s and forgets everything. While the listener is down,
//!   nothing is cached at all; on SQLite nothing is ever cached (other
//!   processes write the same file and cannot announce it).
//! - A change made outside this process reaches it a few milliseconds
//!   after its commit (the notification's trip), not before.
//! - Only successes are kept; a token that failed is looked up each time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ferry_common::Shutdown;
use ferry_db::sea_orm::{DatabaseConnection, DbBackend};
use uuid::Uuid;

use super::Credential;

/// Longest a cached credential is trusted without asking the database.
pub const CACHE_TTL: Duration = Duration::from_secs(10);
/// Most credentials remembered; a full cache starts over.
pub const CACHE_CAPACITY: usize = 10_000;
/// The channel the m0012 triggers notify.
pub const NOTIFY_CHANNEL: &str = "ferry_credentials";

/// What authentication learned about one token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    pub user_id: Uuid,
    pub super_admin: bool,
    pub credential: Credential,
    /// When the database last saw the credential used (`sessions.
    /// last_active_at` / `api_tokens.last_used_at`).
    pub last_used_at: Option<DateTime<Utc>>,
    /// Trusted until then: the credential's expiry or the cache TTL.
    pub valid_until: DateTime<Utc>,
}

/// Token hash → [`Known`], shared by the clones of an `Identity`.
#[derive(Debug, Clone)]
pub struct CredentialCache {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    entries: RwLock<HashMap<String, Known>>,
    /// Whether entries may be kept at all (see the module docs).
    enabled: AtomicBool,
    /// Bumped by every [`CredentialCache::forget_all`], so a lookup that
    /// read the database before a revocation cannot store its stale answer
    /// after it.
    generation: AtomicU64,
}

impl CredentialCache {
    /// A cache that keeps entries from the start (tests).
    pub fn enabled() -> Self {
        Self::new(true)
    }

    /// A cache that keeps nothing until [`CredentialCache::enable`] (set
    /// once a PostgreSQL replica listens for revocations).
    pub fn disabled() -> Self {
        Self::new(false)
    }

    fn new(enabled: bool) -> Self {
        Self {
            inner: Arc::new(Inner {
                entries: RwLock::new(HashMap::new()),
                enabled: AtomicBool::new(enabled),
                generation: AtomicU64::new(0),
            }),
        }
    }

    /// The entry for `hash`, if still trusted at `now`.
    pub fn get(&self, hash: &str, now: DateTime<Utc>) -> Option<Known> {
        if !self.inner.enabled.load(Ordering::Acquire) {
            return None;
        }
        let entries = self.inner.entries.read().ok()?;
        entries.get(hash).filter(|k| now < k.valid_until).copied()
    }

    /// The current generation: read it before asking the database and hand
    /// it to [`CredentialCache::put`].
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// Remembers `known` for `hash`, unless the cache is disabled or was
    /// emptied since `generation` was read (the answer may predate a
    /// revocation).
    pub fn put(&self, hash: String, known: Known, generation: u64) {
        if !self.inner.enabled.load(Ordering::Acquire) {
            return;
        }
        if let Ok(mut entries) = self.inner.entries.write() {
            if self.inner.generation.load(Ordering::Acquire) != generation {
                return;
            }
            if entries.len() >= CACHE_CAPACITY {
                entries.clear();
            }
            entries.insert(hash, known);
        }
    }

    /// Forgets every credential: call after committing any change that can
    /// end one.
    pub fn forget_all(&self) {
        // Under the write lock, so a `put` either lands before (and is
        // cleared) or sees the new generation (and is dropped).
        let mut entries = match self.inner.entries.write() {
            Ok(entries) => entries,
            Err(poisoned) => poisoned.into_inner(),
        };
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
        entries.clear();
    }

    /// Starts or stops keeping entries; stopping forgets everything.
    pub fn set_enabled(&self, enabled: bool) {
        self.inner.enabled.store(enabled, Ordering::Release);
        if !enabled {
            self.forget_all();
        }
    }

    /// `valid_until` for a credential expiring at `expires_at`, read at `now`.
    pub fn trust_until(now: DateTime<Utc>, expires_at: Option<DateTime<Utc>>) -> DateTime<Utc> {
        let ttl =
            chrono::Duration::from_std(CACHE_TTL).unwrap_or_else(|_| chrono::Duration::zero());
        let until = now + ttl;
        expires_at.map_or(until, |e| e.min(until))
    }
}

/// Keeps `cache` in step with revocations committed anywhere (PostgreSQL
/// only): enabled while `LISTEN ferry_credentials` is up, emptied on every
/// notification, disabled (and emptied) while the connection is down.
pub fn spawn_listener(
    db: DatabaseConnection,
    cache: CredentialCache,
    shutdown: Shutdown,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if db.get_database_backend() != DbBackend::Postgres {
            return;
        }
        loop {
            let Some(mut listener) =
                crate::db::listen(&db, NOTIFY_CHANNEL, &shutdown, "credential cache").await
            else {
                return;
            };
            cache.set_enabled(true);
            loop {
                let received = tokio::select! {
                    () = shutdown.wait() => return,
                    received = listener.try_recv() => received,
                };
                match received {
                    // A revocation, or a reconnect that may have missed one.
                    Ok(_) => cache.forget_all(),
                    Err(err) => {
                        tracing::warn!(error = %err, "credential cache: LISTEN lost; not caching");
                        cache.set_enabled(false);
                        break;
                    }
                }
            }
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn known(valid_until: DateTime<Utc>) -> Known {
        Known {
            user_id: Uuid::nil(),
            super_admin: false,
            credential: Credential::Session { id: Uuid::nil() },
            last_used_at: None,
            valid_until,
        }
    }

    #[test]
    fn entries_expire_are_forgotten_and_a_disabled_cache_keeps_nothing() {
        let now = Utc::now();
        let cache = CredentialCache::enabled();
        cache.put(
            "a".into(),
            known(now + chrono::Duration::seconds(5)),
            cache.generation(),
        );
        assert!(cache.get("a", now).is_some());
        assert!(cache.get("a", now + chrono::Duration::seconds(5)).is_none());
        cache.forget_all();
        assert!(cache.get("a", now).is_none());

        let off = CredentialCache::disabled();
        off.put(
            "a".into(),
            known(now + chrono::Duration::seconds(5)),
            off.generation(),
        );
        assert!(off.get("a", now).is_none());
        off.set_enabled(true);
        assert!(
            off.get("a", now).is_none(),
            "nothing was kept while disabled"
        );
    }

    #[test]
    fn an_answer_read_before_a_revocation_is_not_kept_after_it() {
        let now = Utc::now();
        let cache = CredentialCache::enabled();
        let before = cache.generation();
        cache.forget_all(); // a revocation commits while the lookup runs
        cache.put(
            "a".into(),
            known(now + chrono::Duration::seconds(5)),
            before,
        );
        assert!(cache.get("a", now).is_none());
        cache.put(
            "a".into(),
            known(now + chrono::Duration::seconds(5)),
            cache.generation(),
        );
        assert!(cache.get("a", now).is_some());
    }

    #[test]
    fn trust_never_outlives_the_credential_or_the_ttl() {
        let now = Utc::now();
        let soon = now + chrono::Duration::seconds(1);
        assert_eq!(CredentialCache::trust_until(now, Some(soon)), soon);
        let later = now + chrono::Duration::days(1);
        assert_eq!(
            CredentialCache::trust_until(now, Some(later)),
            now + chrono::Duration::from_std(CACHE_TTL).unwrap()
        );
    }
}
