//! [`FeedHub`]: the current routing state, its version, the last updates and
//! the broadcast that carries new ones to the open streams.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_common::Shutdown;
use ferry_db::crypto::Keyring;
use ferry_db::sea_orm::prelude::Uuid;
use ferry_db::sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use ferry_proto::ferry::internal::v1 as pb;
use tokio::sync::{Notify, broadcast, watch};

use super::load::{DbState, load};
use crate::Result;

/// Updates kept for resuming streams; an older version gets a snapshot.
pub const HISTORY_LIMIT: usize = 1024;
/// Updates buffered per stream before a slow one is sent a fresh snapshot.
const BROADCAST_CAPACITY: usize = 256;
/// PostgreSQL channel on which api replicas announce committed changes.
pub const NOTIFY_CHANNEL: &str = "ferry_route_feed";

/// Everything a snapshot contains, keyed by id.
#[derive(Clone, Debug, Default, PartialEq)]
struct FeedState {
    db: DbState,
    acme: BTreeMap<String, String>,
}

impl FeedState {
    /// Every HTTP-01 answer: the database's (the scheduler's orders) and
    /// this process's; the in-memory one wins a shared token.
    fn all_acme(&self) -> BTreeMap<String, String> {
        let mut all = self.db.acme.clone();
        all.extend(self.acme.iter().map(|(k, v)| (k.clone(), v.clone())));
        all
    }
}

#[derive(Default)]
struct Current {
    /// False until the first successful load: serving an empty state then
    /// would wipe the proxies' routes.
    loaded: bool,
    version: u64,
    committed_at_unix_ms: i64,
    state: FeedState,
    /// Consecutive updates, the newest last; `history[i].version ==
    /// history[i + 1].base_version`.
    history: VecDeque<Arc<pb::Update>>,
}

struct Inner {
    current: Mutex<Current>,
    updates: broadcast::Sender<Arc<pb::Update>>,
    /// Serialises reloads so an older read never overwrites a newer one.
    reload: tokio::sync::Mutex<()>,
    kick: Notify,
    /// Set by [`FeedHub::notify_committed`]: the next reload also tells the
    /// other replicas (PostgreSQL `NOTIFY`).
    local_change: AtomicBool,
    /// This replica's id, the `NOTIFY` payload, so it ignores its own.
    instance: String,
    /// When the oldest change not yet reloaded was committed (unix ms).
    pending_since: Mutex<Option<i64>>,
    /// Flips to true when the api shuts down: open streams end.
    closed: watch::Sender<bool>,
    /// True once this replica `LISTEN`s for the others' changes.
    listening: watch::Sender<bool>,
    /// The installation's own route (push webhooks on the public host to
    /// the api's HTTP listener); it replaces any tenant route of that host.
    installation: Option<pb::Route>,
}

/// The api's routing state for the proxies. Cheap to clone (shared).
#[derive(Clone)]
pub struct FeedHub {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FeedHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let current = self.lock();
        f.debug_struct("FeedHub")
            .field("loaded", &current.loaded)
            .field("version", &current.version)
            .field("routes", &current.state.db.routes.len())
            .field("certificates", &current.state.db.certificates.len())
            .finish_non_exhaustive()
    }
}

impl Default for FeedHub {
    fn default() -> Self {
        Self::new()
    }
}

/// What a new stream starts with.
pub(crate) struct Subscription {
    /// Messages to send first (a snapshot, or the missed updates).
    pub initial: Vec<pb::FeedMessage>,
    /// The version the client holds once `initial` is sent.
    pub version: u64,
    pub updates: broadcast::Receiver<Arc<pb::Update>>,
}

impl FeedHub {
    /// An empty hub that is not loaded yet (`Watch` answers UNAVAILABLE
    /// until the first [`FeedHub::reload`] succeeds).
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                current: Mutex::new(Current::default()),
                updates: broadcast::channel(BROADCAST_CAPACITY).0,
                reload: tokio::sync::Mutex::new(()),
                kick: Notify::new(),
                local_change: AtomicBool::new(false),
                instance: Uuid::new_v4().to_string(),
                pending_since: Mutex::new(None),
                closed: watch::channel(false).0,
                listening: watch::channel(false).0,
                installation: None,
            }),
        }
    }

    /// A hub whose state always carries the installation route: `/hooks/`
    /// on `public_host` to `hooks_upstream` (`host:port` of the api's HTTP
    /// listener as the proxies reach it). Tenants cannot claim that host:
    /// their routes on it are dropped from the feed.
    pub fn with_installation_route(public_host: &str, hooks_upstream: &str) -> Self {
        let mut hub = Self::new();
        let route = pb::Route {
            id: format!("ferry-installation:{public_host}"),
            hosts: vec![public_host.to_owned()],
            targets: vec![pb::Target {
                path_prefix: "/hooks/".into(),
                strip_prefix: false,
                upstreams: vec![hooks_upstream.to_owned()],
                balance: pb::Balance::RoundRobin.into(),
                weights: Vec::new(),
                protocol: pb::UpstreamProtocol::Http1.into(),
            }],
            redirect_https: false,
        };
        if let Some(inner) = Arc::get_mut(&mut hub.inner) {
            inner.installation = Some(route);
        }
        hub
    }

    fn lock(&self) -> MutexGuard<'_, Current> {
        // The state is replaced whole under the lock, so it is consistent
        // even if a holder panicked.
        self.inner
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The current version (0 before the first load).
    pub fn version(&self) -> u64 {
        self.lock().version
    }

    /// Whether the first load has succeeded.
    pub fn is_loaded(&self) -> bool {
        self.lock().loaded
    }

    /// The current state as a full snapshot message.
    pub fn snapshot(&self) -> pb::Snapshot {
        snapshot_of(&self.lock())
    }

    /// Call right after a transaction that changed routes, route targets,
    /// domains, certificates, services or projects has committed. Returns at
    /// once; the reloader picks the change up (several kicks coalesce).
    pub fn notify_committed(&self) {
        self.inner.local_change.store(true, Ordering::Release);
        self.kick();
    }

    /// Marks a change pending and wakes the reloader.
    fn kick(&self) {
        let mut pending = self
            .inner
            .pending_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        pending.get_or_insert_with(now_unix_ms);
        drop(pending);
        self.inner.kick.notify_one();
    }

    /// Rebuilds the state from the database and, if it changed, publishes an
    /// update. Returns the new version, or `None` when nothing changed.
    pub async fn reload(&self, db: &DatabaseConnection, keyring: &Keyring) -> Result<Option<u64>> {
        let _serial = self.inner.reload.lock().await;
        // Taken before reading, so a change committed during the read is
        // still pending and triggers another reload.
        let committed_at = self
            .inner
            .pending_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .unwrap_or_else(now_unix_ms);
        let db_state = match load(db, keyring).await {
            Ok(state) => state,
            Err(err) => {
                // Keep the change pending for the next attempt.
                self.inner
                    .pending_since
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get_or_insert(committed_at);
                return Err(err);
            }
        };
        let mut db_state = db_state;
        if let Some(route) = &self.inner.installation {
            let host = route.hosts.first().cloned().unwrap_or_default();
            if db_state
                .routes
                .insert(host.clone(), route.clone())
                .is_some()
            {
                tracing::warn!(%host, "a tenant route names the installation's public host: ignored");
            }
        }
        let mut current = self.lock();
        let mut next = current.state.clone();
        next.db = db_state;
        Ok(self.publish(&mut current, next, committed_at))
    }

    /// Adds or replaces an ACME HTTP-01 challenge and publishes it at once.
    /// In memory only (the api-side ACME client lives in this process).
    pub fn set_acme_challenge(&self, token: &str, key_authorization: &str) -> Option<u64> {
        let mut current = self.lock();
        let mut next = current.state.clone();
        next.acme
            .insert(token.to_owned(), key_authorization.to_owned());
        self.publish(&mut current, next, now_unix_ms())
    }

    /// Removes an ACME HTTP-01 challenge and publishes the removal.
    pub fn remove_acme_challenge(&self, token: &str) -> Option<u64> {
        let mut current = self.lock();
        let mut next = current.state.clone();
        next.acme.remove(token);
        self.publish(&mut current, next, now_unix_ms())
    }

    /// Swaps in `next` and broadcasts the diff; the first load only sets the
    /// state (no stream exists before it).
    fn publish(&self, current: &mut Current, next: FeedState, committed_at: i64) -> Option<u64> {
        if current.loaded && current.state == next {
            return None;
        }
        let version = next_version(current.version);
        if current.loaded {
            let update = Arc::new(diff_state(
                &current.state,
                &next,
                current.version,
                version,
                committed_at,
            ));
            if current.history.len() == HISTORY_LIMIT {
                current.history.pop_front();
            }
            current.history.push_back(update.clone());
            // No receivers is fine: nobody is watching.
            let _ = self.inner.updates.send(update);
        }
        current.loaded = true;
        current.state = next;
        current.version = version;
        current.committed_at_unix_ms = committed_at;
        tracing::debug!(version, "route feed version published");
        Some(version)
    }

    /// Starts a stream for a client that holds `resume_from` (0: nothing).
    /// `None` until the first load.
    pub(crate) fn subscribe(&self, resume_from: u64) -> Option<Subscription> {
        let current = self.lock();
        if !current.loaded {
            return None;
        }
        // Subscribing under the lock: no update can slip between the initial
        // messages and the receiver.
        let updates = self.inner.updates.subscribe();
        let initial = if resume_from == current.version {
            Vec::new()
        } else if let Some(start) = current
            .history
            .iter()
            .position(|u| u.base_version == resume_from)
        {
            current
                .history
                .iter()
                .skip(start)
                .map(|u| update_message(u))
                .collect()
        } else {
            vec![pb::FeedMessage {
                kind: Some(pb::feed_message::Kind::Snapshot(snapshot_of(&current))),
            }]
        };
        Some(Subscription {
            initial,
            version: current.version,
            updates,
        })
    }

    /// Resolves when the hub is closed (api shutdown).
    pub(crate) fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.inner.closed.subscribe();
        async move {
            let _ = rx.wait_for(|closed| *closed).await;
        }
    }

    /// Ends every open stream (proxies reconnect, e.g. to another replica).
    pub fn close(&self) {
        self.inner.closed.send_replace(true);
    }

    /// Reloads on every [`FeedHub::notify_committed`] and every `interval`
    /// (a safety net), until `shutdown`; then closes the hub. Failed reloads
    /// are logged and retried on the next tick. On PostgreSQL, local changes
    /// are announced with `NOTIFY` and other replicas' announcements kick a
    /// reload here ([`FeedHub::spawn_listener`]), so every replica's
    /// proxies see a change within milliseconds, not at the next interval.
    pub fn spawn_reloader(
        &self,
        db: DatabaseConnection,
        keyring: Arc<Keyring>,
        interval: Duration,
        shutdown: Shutdown,
    ) -> tokio::task::JoinHandle<()> {
        let hub = self.clone();
        let postgres = db.get_database_backend() == DbBackend::Postgres;
        if postgres {
            self.spawn_listener(db.clone(), keyring.clone(), shutdown.clone());
        }
        tokio::spawn(async move {
            let stop = shutdown.wait();
            tokio::pin!(stop);
            // The caller normally loaded already; retry at once if not.
            let first = if hub.is_loaded() {
                tokio::time::Instant::now() + interval
            } else {
                tokio::time::Instant::now()
            };
            let mut ticker = tokio::time::interval_at(first, interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = &mut stop => break,
                    () = hub.inner.kick.notified() => {}
                    _ = ticker.tick() => {}
                }
                if postgres && hub.inner.local_change.swap(false, Ordering::AcqRel) {
                    hub.announce(&db).await;
                }
                match hub.reload(&db, &keyring).await {
                    Ok(Some(version)) => tracing::info!(version, "route feed updated"),
                    Ok(None) => {}
                    Err(err) => {
                        tracing::warn!(error = %err, "route feed reload failed; keeping the last state")
                    }
                }
            }
            hub.close();
        })
    }
}

impl FeedHub {
    /// Waits until this replica listens for other replicas' changes
    /// (PostgreSQL only; never returns on SQLite).
    pub async fn listening(&self) {
        let mut rx = self.inner.listening.subscribe();
        let _ = rx.wait_for(|listening| *listening).await;
    }

    /// Tells the other replicas that a change committed (after the commit:
    /// a `NOTIFY` outside the writer's transaction). Best effort: a lost
    /// announcement is caught by the periodic reload.
    async fn announce(&self, db: &DatabaseConnection) {
        let statement = Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_notify($1, $2)",
            [NOTIFY_CHANNEL.into(), self.inner.instance.clone().into()],
        );
        if let Err(err) = db.execute_raw(statement).await {
            tracing::warn!(error = %err, "announcing a route change to other replicas failed");
        }
    }

    /// Listens for other replicas' announcements (PostgreSQL only) and
    /// kicks a reload for each; after a lost connection it reloads too, as
    /// announcements may have been missed meanwhile.
    pub fn spawn_listener(
        &self,
        db: DatabaseConnection,
        keyring: Arc<Keyring>,
        shutdown: Shutdown,
    ) -> tokio::task::JoinHandle<()> {
        let hub = self.clone();
        tokio::spawn(async move {
            if db.get_database_backend() != DbBackend::Postgres {
                return; // SQLite has no LISTEN; one process owns the file.
            }
            loop {
                let Some(mut listener) =
                    crate::db::listen(&db, NOTIFY_CHANNEL, &shutdown, "route feed").await
                else {
                    return;
                };
                // Anything committed before LISTEN took effect is unseen.
                if let Err(err) = hub.reload(&db, &keyring).await {
                    tracing::warn!(error = %err, "route feed reload failed; retrying");
                    hub.kick();
                }
                hub.inner.listening.send_replace(true);
                loop {
                    let received = tokio::select! {
                        () = shutdown.wait() => return,
                        received = listener.try_recv() => received,
                    };
                    match received {
                        Ok(Some(n)) if n.payload() == hub.inner.instance => {}
                        Ok(Some(_)) => hub.kick(),
                        // Reconnected: something may have been missed.
                        Ok(None) => hub.kick(),
                        Err(err) => {
                            tracing::warn!(error = %err, "route feed: LISTEN connection lost");
                            break;
                        }
                    }
                }
            }
        })
    }
}

/// Versions follow the wall clock (unix ms) so they never go backwards
/// across api restarts, and still grow by at least one per change.
fn next_version(previous: u64) -> u64 {
    let now = u64::try_from(now_unix_ms()).unwrap_or(0);
    now.max(previous.saturating_add(1))
}

pub(crate) fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn snapshot_of(current: &Current) -> pb::Snapshot {
    let state = &current.state;
    pb::Snapshot {
        version: current.version,
        committed_at_unix_ms: current.committed_at_unix_ms,
        routes: state.db.routes.values().cloned().collect(),
        certificates: state.db.certificates.values().cloned().collect(),
        acme_challenges: acme_list(state.all_acme().iter()),
        domain_challenges: state.db.domain_challenges.values().cloned().collect(),
    }
}

pub(crate) fn update_message(update: &pb::Update) -> pb::FeedMessage {
    pb::FeedMessage {
        kind: Some(pb::feed_message::Kind::Update(update.clone())),
    }
}

fn acme_list<'a>(items: impl Iterator<Item = (&'a String, &'a String)>) -> Vec<pb::AcmeChallenge> {
    items
        .map(|(token, key_authorization)| pb::AcmeChallenge {
            token: token.clone(),
            key_authorization: key_authorization.clone(),
        })
        .collect()
}

/// Upserts and removals that turn `old` into `new`.
fn diff_map<V: Clone + PartialEq>(
    old: &BTreeMap<String, V>,
    new: &BTreeMap<String, V>,
) -> (Vec<V>, Vec<String>) {
    let upserted = new
        .iter()
        .filter(|(id, value)| old.get(*id) != Some(value))
        .map(|(_, value)| value.clone())
        .collect();
    let removed = old
        .keys()
        .filter(|id| !new.contains_key(*id))
        .cloned()
        .collect();
    (upserted, removed)
}

fn diff_state(
    old: &FeedState,
    new: &FeedState,
    base_version: u64,
    version: u64,
    committed_at_unix_ms: i64,
) -> pb::Update {
    let (upserted_routes, removed_route_ids) = diff_map(&old.db.routes, &new.db.routes);
    let (upserted_certificates, removed_certificate_ids) =
        diff_map(&old.db.certificates, &new.db.certificates);
    let (old_acme, new_acme) = (old.all_acme(), new.all_acme());
    let set_acme = new_acme
        .iter()
        .filter(|(token, ka)| old_acme.get(*token) != Some(ka));
    let removed_acme_tokens = old_acme
        .keys()
        .filter(|token| !new_acme.contains_key(*token))
        .cloned()
        .collect();
    let (set_domain_challenges, removed_domain_challenge_tokens) =
        diff_map(&old.db.domain_challenges, &new.db.domain_challenges);
    pb::Update {
        version,
        base_version,
        committed_at_unix_ms,
        upserted_routes,
        removed_route_ids,
        upserted_certificates,
        removed_certificate_ids,
        set_acme_challenges: acme_list(set_acme),
        removed_acme_tokens,
        set_domain_challenges,
        removed_domain_challenge_tokens,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn route(id: &str, upstream: &str) -> pb::Route {
        pb::Route {
            id: id.into(),
            hosts: vec![id.into()],
            targets: vec![pb::Target {
                path_prefix: "/".into(),
                strip_prefix: false,
                upstreams: vec![upstream.into()],
                balance: 0,
                weights: vec![],
                protocol: 0,
            }],
            redirect_https: false,
        }
    }

    fn hub_with(routes: &[pb::Route]) -> FeedHub {
        let hub = FeedHub::new();
        let mut current = hub.lock();
        let mut next = FeedState::default();
        for r in routes {
            next.db.routes.insert(r.id.clone(), r.clone());
        }
        hub.publish(&mut current, next, 1);
        drop(current);
        hub
    }

    fn set_routes(hub: &FeedHub, routes: &[pb::Route]) -> Option<u64> {
        let mut current = hub.lock();
        let mut next = current.state.clone();
        next.db.routes = routes.iter().map(|r| (r.id.clone(), r.clone())).collect();
        hub.publish(&mut current, next, 2)
    }

    #[test]
    fn versions_follow_the_clock_and_always_grow() {
        let now = u64::try_from(now_unix_ms()).unwrap();
        assert!(next_version(0) >= now);
        let far = now + 1_000_000;
        assert_eq!(next_version(far), far + 1);
    }

    #[test]
    fn unloaded_hub_refuses_streams() {
        assert!(FeedHub::new().subscribe(0).is_none());
    }

    #[tokio::test]
    async fn diffs_resume_and_snapshots() {
        let a = route("a.example.com", "a:80");
        let b = route("b.example.com", "b:80");
        let hub = hub_with(std::slice::from_ref(&a));
        let v1 = hub.version();

        // Fresh client: a snapshot.
        let sub = hub.subscribe(0).unwrap();
        assert_eq!(sub.initial.len(), 1);
        assert!(matches!(
            &sub.initial[0].kind,
            Some(pb::feed_message::Kind::Snapshot(s)) if s.version == v1 && s.routes == vec![a.clone()]
        ));
        // Up to date: nothing.
        let mut live = hub.subscribe(v1).unwrap();
        assert!(live.initial.is_empty());

        // Unchanged state publishes nothing.
        assert_eq!(set_routes(&hub, std::slice::from_ref(&a)), None);
        let a2 = route("a.example.com", "a2:80");
        let v2 = set_routes(&hub, &[a2.clone(), b.clone()]).unwrap();
        assert!(v2 > v1);
        let update = live.updates.try_recv().unwrap();
        assert_eq!((update.base_version, update.version), (v1, v2));
        assert_eq!(update.upserted_routes, vec![a2.clone(), b.clone()]);
        assert!(update.removed_route_ids.is_empty());

        let v3 = set_routes(&hub, std::slice::from_ref(&b)).unwrap();
        let update = live.updates.try_recv().unwrap();
        assert_eq!(update.removed_route_ids, vec!["a.example.com".to_owned()]);
        assert!(update.upserted_routes.is_empty());

        // Resuming from v1 replays both updates in order.
        let resumed = hub.subscribe(v1).unwrap();
        let versions: Vec<u64> = resumed
            .initial
            .iter()
            .map(|m| match &m.kind {
                Some(pb::feed_message::Kind::Update(u)) => u.version,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(versions, vec![v2, v3]);
        // An unknown version (another process) gets a snapshot.
        let other = hub.subscribe(v1 - 1).unwrap();
        assert!(matches!(
            &other.initial[0].kind,
            Some(pb::feed_message::Kind::Snapshot(s)) if s.version == v3
        ));

        // ACME challenges are published at once, and removed.
        let v4 = hub.set_acme_challenge("tok", "tok.key").unwrap();
        let update = live.updates.try_recv().unwrap();
        assert_eq!(update.version, v4);
        assert_eq!(update.set_acme_challenges[0].token, "tok");
        hub.remove_acme_challenge("tok").unwrap();
        let update = live.updates.try_recv().unwrap();
        assert_eq!(update.removed_acme_tokens, vec!["tok".to_owned()]);
        assert_eq!(hub.remove_acme_challenge("tok"), None);
    }

    #[test]
    fn history_is_bounded() {
        let hub = hub_with(&[]);
        let first = hub.version();
        for i in 0..=HISTORY_LIMIT {
            set_routes(&hub, &[route(&format!("h{i}.example.com"), "x:1")]).unwrap();
        }
        let sub = hub.subscribe(first).unwrap();
        assert!(matches!(
            &sub.initial[0].kind,
            Some(pb::feed_message::Kind::Snapshot(_))
        ));
    }
}
