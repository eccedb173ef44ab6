//! The api's route feed (`ferry.internal.v1.RouteFeed`), client side.
//!
//! [`run`] watches the feed, applies every snapshot and update to a local
//! copy of the routing state and swaps it into [`ProxyState`]. It never
//! clears routes: while the api is unreachable the last table keeps serving,
//! and the stream is re-opened with exponential backoff and jitter (100 ms
//! to 10 s), resuming from the last applied version.
//!
//! Every applied state is persisted to `<state_dir>/snapshot.json` (written
//! to a temporary file and renamed, mode 0600: it holds private keys), so a
//! restart without the api still serves ([`load_persisted`]). The file is a
//! [`Snapshot`] (the `--routes-file` shape) plus the certificate ids that
//! later updates refer to. Persisting runs off the apply path and coalesces:
//! only the newest state is written.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_common::Shutdown;
use ferry_common::telemetry::TraceContextInterceptor;
use ferry_proto::ferry::internal::v1 as pb;
use pb::feed_message::Kind;
use pb::route_feed_client::RouteFeedClient;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Endpoint;
use tracing::Instrument as _;

use crate::config::{
    AcmeChallenge, Balance, Certificate, DomainChallenge, Route, Snapshot, Target, UpstreamProtocol,
};
use crate::state::ProxyState;
use crate::{Error, Result};

/// The persisted state's file name inside the state directory.
pub const SNAPSHOT_FILE: &str = "snapshot.json";
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 pings notice a dead api (or a silently dropped connection) even
/// when no route changes for hours.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how to reach the feed.
#[derive(Clone)]
pub struct FeedConfig {
    /// The api's gRPC URL, e.g. `http://ferry-api:50051`.
    pub api_url: String,
    /// The service credential (`FERRY_PROXY_FEED_TOKEN`); never logged.
    pub token: String,
    /// Directory of the persisted snapshot.
    pub state_dir: PathBuf,
}

impl std::fmt::Debug for FeedConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedConfig")
            .field("api_url", &self.api_url)
            .field("token", &"<redacted>")
            .field("state_dir", &self.state_dir)
            .finish()
    }
}

/// The feed's view of the routing state, keyed by the ids updates use.
#[derive(Clone, Debug, Default, PartialEq)]
struct Mirror {
    version: u64,
    committed_at_unix_ms: i64,
    routes: BTreeMap<String, Route>,
    certificates: BTreeMap<String, Certificate>,
    acme: BTreeMap<String, String>,
    /// Domain challenges by token.
    domains: BTreeMap<String, DomainChallenge>,
}

fn domain_challenge(d: pb::DomainChallenge) -> (String, DomainChallenge) {
    (
        d.token.clone(),
        DomainChallenge {
            host: d.host,
            token: d.token,
        },
    )
}

impl Mirror {
    fn from_snapshot(s: pb::Snapshot) -> Self {
        Self {
            version: s.version,
            committed_at_unix_ms: s.committed_at_unix_ms,
            routes: s
                .routes
                .into_iter()
                .map(|r| (r.id.clone(), route(r)))
                .collect(),
            certificates: s
                .certificates
                .into_iter()
                .map(|c| (c.id.clone(), certificate(c)))
                .collect(),
            acme: s
                .acme_challenges
                .into_iter()
                .map(|a| (a.token, a.key_authorization))
                .collect(),
            domains: s
                .domain_challenges
                .into_iter()
                .map(domain_challenge)
                .collect(),
        }
    }

    /// `self` with `update` applied, or `None` when it does not follow on.
    fn updated(&self, u: pb::Update) -> Option<Self> {
        if u.base_version != self.version {
            return None;
        }
        let mut next = self.clone();
        next.version = u.version;
        next.committed_at_unix_ms = u.committed_at_unix_ms;
        for id in u.removed_route_ids {
            next.routes.remove(&id);
        }
        for r in u.upserted_routes {
            next.routes.insert(r.id.clone(), route(r));
        }
        for id in u.removed_certificate_ids {
            next.certificates.remove(&id);
        }
        for c in u.upserted_certificates {
            next.certificates.insert(c.id.clone(), certificate(c));
        }
        for token in u.removed_acme_tokens {
            next.acme.remove(&token);
        }
        for a in u.set_acme_challenges {
            next.acme.insert(a.token, a.key_authorization);
        }
        for token in u.removed_domain_challenge_tokens {
            next.domains.remove(&token);
        }
        next.domains
            .extend(u.set_domain_challenges.into_iter().map(domain_challenge));
        Some(next)
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            version: self.version,
            routes: self.routes.values().cloned().collect(),
            certificates: self.certificates.values().cloned().collect(),
            acme_challenges: self
                .acme
                .iter()
                .map(|(token, key_authorization)| AcmeChallenge {
                    token: token.clone(),
                    key_authorization: key_authorization.clone(),
                })
                .collect(),
            domain_challenges: self.domains.values().cloned().collect(),
        }
    }

    fn file(&self) -> FeedFile {
        FeedFile {
            snapshot: self.snapshot(),
            certificate_ids: self.certificates.keys().cloned().collect(),
            committed_at_unix_ms: self.committed_at_unix_ms,
        }
    }
}

fn route(r: pb::Route) -> Route {
    Route {
        id: r.id,
        hosts: r.hosts,
        targets: r
            .targets
            .into_iter()
            .map(|t| Target {
                balance: match pb::Balance::try_from(t.balance) {
                    Ok(pb::Balance::LeastOutstanding) => Balance::LeastOutstanding,
                    // Unspecified, round robin, or a value newer than us.
                    _ => Balance::RoundRobin,
                },
                path_prefix: t.path_prefix,
                strip_prefix: t.strip_prefix,
                protocol: match pb::UpstreamProtocol::try_from(t.protocol) {
                    Ok(pb::UpstreamProtocol::H2c) => UpstreamProtocol::H2c,
                    // HTTP/1.1, or a value newer than us.
                    _ => UpstreamProtocol::Http1,
                },
                upstreams: t.upstreams,
                weights: t.weights,
            })
            .collect(),
        redirect_https: r.redirect_https,
    }
}

fn certificate(c: pb::Certificate) -> Certificate {
    Certificate {
        hosts: c.hosts,
        cert_pem: c.cert_pem,
        key_pem: c.key_pem,
    }
}

/// `snapshot.json`: a [`Snapshot`] (readable as a routes file) plus what
/// resuming needs.
#[derive(Serialize, Deserialize)]
struct FeedFile {
    #[serde(flatten)]
    snapshot: Snapshot,
    /// The feed ids of `snapshot.certificates`, in the same order.
    #[serde(default)]
    certificate_ids: Vec<String>,
    #[serde(default)]
    committed_at_unix_ms: i64,
}

impl FeedFile {
    /// The mirror, if the file has everything updates refer to.
    fn mirror(self) -> Option<Mirror> {
        let FeedFile {
            snapshot,
            certificate_ids,
            committed_at_unix_ms,
        } = self;
        if certificate_ids.len() != snapshot.certificates.len() {
            return None;
        }
        Some(Mirror {
            version: snapshot.version,
            committed_at_unix_ms,
            routes: snapshot
                .routes
                .into_iter()
                .map(|r| (r.id.clone(), r))
                .collect(),
            certificates: certificate_ids
                .into_iter()
                .zip(snapshot.certificates)
                .collect(),
            acme: snapshot
                .acme_challenges
                .into_iter()
                .map(|a| (a.token, a.key_authorization))
                .collect(),
            domains: snapshot
                .domain_challenges
                .into_iter()
                .map(|d| (d.token.clone(), d))
                .collect(),
        })
    }
}

fn snapshot_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SNAPSHOT_FILE)
}

fn read_file(state_dir: &Path) -> Option<FeedFile> {
    let path = snapshot_path(state_dir);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return None,
        Err(err) => {
            tracing::warn!(path = %path.display(), error = %err, "cannot read the persisted snapshot");
            return None;
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(file) => Some(file),
        Err(err) => {
            tracing::warn!(path = %path.display(), error = %err, "ignoring a corrupt persisted snapshot");
            None
        }
    }
}

/// The last snapshot the feed persisted in `state_dir`, if there is a
/// readable one. Serve it at start when the api may be down.
pub fn load_persisted(state_dir: &Path) -> Option<Snapshot> {
    read_file(state_dir).map(|file| file.snapshot)
}

/// Writes `file` atomically (temporary file, fsync, rename) with mode 0600.
fn persist(state_dir: &Path, file: &FeedFile) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)?;
    let path = snapshot_path(state_dir);
    let tmp = state_dir.join(format!(".{SNAPSHOT_FILE}.tmp"));
    let json = serde_json::to_vec(file).map_err(std::io::Error::from)?;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    out.write_all(&json)?;
    out.sync_all()?;
    drop(out);
    std::fs::rename(&tmp, &path)?;
    // Make the rename itself durable.
    if let Ok(dir) = std::fs::File::open(state_dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Writes the newest state in the background; intermediate states that
/// were superseded before their turn are skipped.
struct Persister {
    latest: watch::Sender<Option<Arc<FeedFile>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Persister {
    fn start(state_dir: PathBuf) -> Self {
        let (latest, mut rx) = watch::channel::<Option<Arc<FeedFile>>>(None);
        let task = tokio::spawn(async move {
            // Ends once the sender is dropped and the last value is written.
            while rx.changed().await.is_ok() {
                let Some(file) = rx.borrow_and_update().clone() else {
                    continue;
                };
                let dir = state_dir.clone();
                let version = file.snapshot.version;
                match tokio::task::spawn_blocking(move || persist(&dir, &file)).await {
                    Ok(Ok(())) => tracing::debug!(version, "route snapshot persisted"),
                    Ok(Err(err)) => {
                        tracing::warn!(version, error = %err, "persisting the route snapshot failed");
                    }
                    Err(err) => tracing::warn!(error = %err, "snapshot persister task failed"),
                }
            }
        });
        Self { latest, task }
    }

    fn save(&self, mirror: &Mirror) {
        self.latest.send_replace(Some(Arc::new(mirror.file())));
    }

    /// Writes what is pending, then stops.
    async fn finish(self) {
        drop(self.latest);
        if let Err(err) = self.task.await {
            tracing::warn!(error = %err, "snapshot persister task failed");
        }
    }
}

/// Exponential backoff with full jitter between `BACKOFF_MIN` and the
/// current ceiling, which doubles up to `BACKOFF_MAX`.
#[derive(Debug)]
struct Backoff {
    ceiling: Duration,
}

impl Backoff {
    fn new() -> Self {
        Self {
            ceiling: BACKOFF_MIN,
        }
    }

    fn reset(&mut self) {
        self.ceiling = BACKOFF_MIN;
    }

    fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling;
        self.ceiling = (self.ceiling * 2).min(BACKOFF_MAX);
        let spread = ceiling.saturating_sub(BACKOFF_MIN).as_millis();
        let jitter = rand::random_range(0..=u64::try_from(spread).unwrap_or(u64::MAX));
        BACKOFF_MIN + Duration::from_millis(jitter)
    }
}

/// How a stream ended.
enum End {
    /// The api closed it (e.g. it is shutting down): reconnect soon.
    Closed,
    /// Connecting or streaming failed, or a message could not be applied.
    Failed,
}

struct Client {
    endpoint: Endpoint,
    authorization: MetadataValue<Ascii>,
    proxy_id: String,
}

/// Follows the feed until `shutdown`: restores the persisted snapshot when
/// the state holds nothing newer, then watches, applies and persists.
/// Returns an error only for unusable configuration.
pub async fn run(config: FeedConfig, state: Arc<ProxyState>, shutdown: Shutdown) -> Result<()> {
    let endpoint = Endpoint::from_shared(config.api_url.clone())
        .map_err(|e| {
            Error::Io(invalid_input(format!(
                "invalid api URL {:?}: {e}",
                config.api_url
            )))
        })?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    let authorization = format!("Bearer {}", config.token.trim())
        .parse::<MetadataValue<Ascii>>()
        .map_err(|_| Error::Io(invalid_input("the feed token must be visible ASCII".into())))?;
    let client = Client {
        endpoint,
        authorization,
        proxy_id: std::env::var("HOSTNAME").unwrap_or_else(|_| "ferry-proxy".to_owned()),
    };

    let mut mirror = restore(&config.state_dir, &state);
    let persister = Persister::start(config.state_dir.clone());
    let mut backoff = Backoff::new();
    let stop = shutdown.wait();
    tokio::pin!(stop);
    loop {
        let end = tokio::select! {
            () = &mut stop => break,
            end = follow(&client, &state, &mut mirror, &persister, &mut backoff) => end,
        };
        let delay = backoff.next_delay();
        if matches!(end, End::Closed) {
            tracing::info!(
                version = state.current_version(),
                "route feed closed by the api; reconnecting"
            );
        }
        tokio::select! {
            () = &mut stop => break,
            () = tokio::time::sleep(delay) => {}
        }
    }
    persister.finish().await;
    Ok(())
}

fn invalid_input(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, msg)
}

/// The mirror to resume from: the persisted state, applied first if the
/// proxy holds nothing newer (a routes file has version 0). Without a
/// usable mirror the feed asks for a snapshot (resume from 0).
fn restore(state_dir: &Path, state: &ProxyState) -> Option<Mirror> {
    let file = read_file(state_dir)?;
    let version = file.snapshot.version;
    if !state.loaded() || version > state.current_version() {
        match state.apply_snapshot(file.snapshot.clone()) {
            Ok(()) => tracing::info!(
                version,
                routes = file.snapshot.routes.len(),
                "serving the persisted route snapshot until the feed connects"
            ),
            Err(err) => {
                tracing::warn!(version, error = %err, "the persisted route snapshot is unusable");
                return None;
            }
        }
    }
    file.mirror()
        .filter(|mirror| mirror.version == state.current_version())
}

/// One stream: connect, watch from the mirror's version, apply messages.
async fn follow(
    client: &Client,
    state: &ProxyState,
    mirror: &mut Option<Mirror>,
    persister: &Persister,
    backoff: &mut Backoff,
) -> End {
    let channel = match client.endpoint.connect().await {
        Ok(channel) => channel,
        Err(err) => {
            tracing::warn!(error = %err, "route feed: cannot connect to the api; serving the last routes");
            return End::Failed;
        }
    };
    // The api's RPC span joins this proxy's trace (W3C traceparent).
    let mut feed = RouteFeedClient::with_interceptor(channel, TraceContextInterceptor)
        .max_decoding_message_size(usize::MAX);
    // Resume only from a state the proxy really serves.
    let resume_from_version = mirror
        .as_ref()
        .filter(|m| m.version == state.current_version())
        .map_or(0, |m| m.version);
    let mut request = tonic::Request::new(pb::WatchRequest {
        resume_from_version,
        proxy_id: client.proxy_id.clone(),
    });
    request
        .metadata_mut()
        .insert("authorization", client.authorization.clone());
    let call = tracing::info_span!(
        "route_feed.watch",
        otel.kind = "client",
        rpc.system = "grpc",
        rpc.method = "/ferry.internal.v1.RouteFeed/Watch",
    );
    let mut stream = match feed.watch(request).instrument(call).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            tracing::warn!(code = ?status.code(), message = status.message(),
                "route feed: the api refused the watch; serving the last routes");
            return End::Failed;
        }
    };
    backoff.reset();
    tracing::info!(resume_from_version, "route feed connected");
    loop {
        let message = match stream.message().await {
            Ok(Some(message)) => message,
            Ok(None) => return End::Closed,
            Err(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(),
                    "route feed stream failed; serving the last routes");
                return End::Failed;
            }
        };
        let next = match message.kind {
            Some(Kind::Snapshot(snapshot)) => Mirror::from_snapshot(snapshot),
            Some(Kind::Update(update)) => {
                let base = update.base_version;
                match mirror.as_ref().and_then(|m| m.updated(update)) {
                    Some(next) => next,
                    None => {
                        // Missed something: start over with a snapshot.
                        tracing::warn!(
                            base,
                            "route feed update does not follow our version; resyncing"
                        );
                        *mirror = None;
                        return End::Failed;
                    }
                }
            }
            None => continue,
        };
        if let Err(err) = state.apply_snapshot(next.snapshot()) {
            // The table stays as it was; retry after a backoff (the api
            // resends, hopefully fixed by then).
            tracing::error!(version = next.version, error = %err, "route feed state rejected; keeping the last routes");
            return End::Failed;
        }
        let lag = now_unix_ms()
            .saturating_sub(next.committed_at_unix_ms)
            .max(0);
        state
            .metrics
            .feed_lag_ms
            .store(u64::try_from(lag).unwrap_or(0), Ordering::Relaxed);
        tracing::debug!(version = next.version, lag_ms = lag, "route feed applied");
        persister.save(&next);
        *mirror = Some(next);
    }
}

fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn pb_route(id: &str, upstream: &str) -> pb::Route {
        pb::Route {
            id: id.into(),
            hosts: vec![id.into()],
            targets: vec![pb::Target {
                path_prefix: "/".into(),
                strip_prefix: false,
                upstreams: vec![upstream.into()],
                balance: pb::Balance::LeastOutstanding.into(),
                weights: vec![],
                protocol: 0,
            }],
            redirect_https: false,
        }
    }

    fn pb_cert(id: &str, host: &str) -> pb::Certificate {
        pb::Certificate {
            id: id.into(),
            hosts: vec![host.into()],
            cert_pem: "CERT".into(),
            key_pem: "KEY".into(),
        }
    }

    #[test]
    fn updates_apply_in_order_only() {
        let mirror = Mirror::from_snapshot(pb::Snapshot {
            version: 10,
            committed_at_unix_ms: 1,
            routes: vec![pb_route("a.test", "a:1"), pb_route("b.test", "b:1")],
            certificates: vec![pb_cert("d1", "a.test")],
            acme_challenges: vec![],
            domain_challenges: vec![pb::DomainChallenge {
                host: "old.test".into(),
                token: "ferry-old".into(),
            }],
        });
        assert_eq!(
            mirror.routes["a.test"].targets[0].balance,
            Balance::LeastOutstanding
        );
        let update = pb::Update {
            version: 11,
            base_version: 10,
            committed_at_unix_ms: 2,
            upserted_routes: vec![pb_route("a.test", "a:2")],
            removed_route_ids: vec!["b.test".into()],
            upserted_certificates: vec![],
            removed_certificate_ids: vec!["d1".into()],
            set_acme_challenges: vec![pb::AcmeChallenge {
                token: "t".into(),
                key_authorization: "t.k".into(),
            }],
            removed_acme_tokens: vec![],
            set_domain_challenges: vec![pb::DomainChallenge {
                host: "shop.test".into(),
                token: "ferry-1".into(),
            }],
            removed_domain_challenge_tokens: vec!["ferry-old".into()],
        };
        assert!(
            mirror
                .updated(pb::Update {
                    base_version: 9,
                    ..update.clone()
                })
                .is_none()
        );
        let next = mirror.updated(update).unwrap();
        let snapshot = next.snapshot();
        assert_eq!(snapshot.version, 11);
        assert_eq!(snapshot.routes.len(), 1);
        assert_eq!(snapshot.routes[0].targets[0].upstreams, vec!["a:2"]);
        assert!(snapshot.certificates.is_empty());
        assert_eq!(snapshot.acme_challenges[0].key_authorization, "t.k");
        assert_eq!(
            snapshot.domain_challenges,
            vec![DomainChallenge {
                host: "shop.test".into(),
                token: "ferry-1".into()
            }]
        );
    }

    #[test]
    fn persisted_file_round_trips_privately_and_reads_as_a_routes_file() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        let mirror = Mirror::from_snapshot(pb::Snapshot {
            version: 42,
            committed_at_unix_ms: 7,
            routes: vec![pb_route("a.test", "a:1")],
            certificates: vec![pb_cert("d1", "a.test")],
            acme_challenges: vec![],
            domain_challenges: vec![pb::DomainChallenge {
                host: "shop.test".into(),
                token: "ferry-1".into(),
            }],
        });
        persist(&state_dir, &mirror.file()).unwrap();
        let path = snapshot_path(&state_dir);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_persisted(&state_dir).unwrap(), mirror.snapshot());
        assert_eq!(read_file(&state_dir).unwrap().mirror().unwrap(), mirror);
        // Same shape as --routes-file.
        assert_eq!(crate::load_routes_file(&path).unwrap(), mirror.snapshot());
        // Corrupt or missing files are ignored, not fatal.
        std::fs::write(&path, b"{not json").unwrap();
        assert!(load_persisted(&state_dir).is_none());
        assert!(load_persisted(&dir.path().join("missing")).is_none());
    }

    #[test]
    fn backoff_grows_with_jitter_and_resets() {
        let mut backoff = Backoff::new();
        let delays: Vec<Duration> = (0..12).map(|_| backoff.next_delay()).collect();
        assert_eq!(delays[0], BACKOFF_MIN);
        assert!(
            delays
                .iter()
                .all(|d| *d >= BACKOFF_MIN && *d <= BACKOFF_MAX)
        );
        assert_eq!(backoff.ceiling, BACKOFF_MAX);
        backoff.reset();
        assert_eq!(backoff.next_delay(), BACKOFF_MIN);
    }

    #[test]
    fn config_debug_hides_the_token() {
        let config = FeedConfig {
            api_url: "http://api:50051".into(),
            token: "s3cret-token".into(),
            state_dir: "/tmp".into(),
        };
        assert!(!format!("{config:?}").contains("s3cret"));
    }
}
