//! The feed client against a small in-test `RouteFeed` server over real
//! TCP gRPC, with real HTTP through the proxy to local upstreams: snapshot
//! and updates are applied, the routes survive the api going away, the
//! client reconnects and resumes from its version (or resyncs after a gap),
//! and a restart with no api at all serves the persisted snapshot.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_common::Shutdown;
use ferry_common::testing::free_addr;
use ferry_proto::ferry::internal::v1 as pb;
use ferry_proxy::ProxyState;
use ferry_proxy::feed::{self, FeedConfig};
use hyper::StatusCode;
use pb::route_feed_server::{RouteFeed, RouteFeedServer};
use support::{Proxy, field, snapshot, try_get, upstream};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

const TOKEN: &str = "proxy-feed-test-token";

/// A scripted api: answers `Watch` with its snapshot unless the client
/// resumes from exactly its version, then forwards pushed messages.
#[derive(Clone)]
struct FakeApi {
    /// `(resume_from_version, authorization)` of every Watch.
    seen: Arc<Mutex<Vec<(u64, String)>>>,
    state: Arc<Mutex<pb::Snapshot>>,
    live: broadcast::Sender<pb::FeedMessage>,
    kill: watch::Sender<bool>,
}

impl FakeApi {
    fn new(state: pb::Snapshot) -> Self {
        Self {
            seen: Arc::default(),
            state: Arc::new(Mutex::new(state)),
            live: broadcast::channel(64).0,
            kill: watch::channel(false).0,
        }
    }

    /// Sends `update` to open streams; the fake's state becomes `after`.
    fn push(&self, update: pb::Update, after: pb::Snapshot) {
        *self.state.lock().unwrap() = after;
        self.live
            .send(pb::FeedMessage {
                kind: Some(pb::feed_message::Kind::Update(update)),
            })
            .unwrap();
    }

    fn seen(&self) -> Vec<(u64, String)> {
        self.seen.lock().unwrap().clone()
    }
}

#[tonic::async_trait]
impl RouteFeed for FakeApi {
    type WatchStream = ReceiverStream<Result<pb::FeedMessage, Status>>;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let auth = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let resume = request.get_ref().resume_from_version;
        // Subscribed before the call is visible to the test, so nothing
        // pushed afterwards is missed.
        let mut live = self.live.subscribe();
        let mut kill = self.kill.subscribe();
        self.seen.lock().unwrap().push((resume, auth.clone()));
        if auth != format!("Bearer {TOKEN}") {
            return Err(Status::unauthenticated("bad token"));
        }
        let current = self.state.lock().unwrap().clone();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            if resume != current.version {
                let first = pb::FeedMessage {
                    kind: Some(pb::feed_message::Kind::Snapshot(current)),
                };
                if tx.send(Ok(first)).await.is_err() {
                    return;
                }
            }
            loop {
                tokio::select! {
                    () = async { let _ = kill.wait_for(|k| *k).await; } => return,
                    message = live.recv() => match message {
                        Ok(m) => if tx.send(Ok(m)).await.is_err() { return },
                        Err(_) => return,
                    },
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

struct Running {
    shutdown: Shutdown,
    task: JoinHandle<()>,
    fake: FakeApi,
}

impl Running {
    /// Ends every stream and closes the port.
    async fn kill(self) {
        self.fake.kill.send_replace(true);
        self.shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("fake api stops")
            .unwrap();
    }
}

async fn serve(addr: SocketAddr, fake: FakeApi) -> Running {
    fake.kill.send_replace(false);
    let listener = TcpListener::bind(addr).await.unwrap();
    let shutdown = Shutdown::new();
    let stop = shutdown.wait();
    let server = RouteFeedServer::new(fake.clone());
    let task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(server)
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), stop)
            .await
            .unwrap();
    });
    Running {
        shutdown,
        task,
        fake,
    }
}

fn pb_route(id: &str, upstream: SocketAddr) -> pb::Route {
    pb::Route {
        id: id.into(),
        hosts: vec![id.into()],
        targets: vec![pb::Target {
            path_prefix: "/".into(),
            strip_prefix: false,
            upstreams: vec![upstream.to_string()],
            balance: 0,
            weights: vec![],
            protocol: 0,
        }],
        redirect_https: false,
    }
}

fn pb_snapshot(version: u64, routes: Vec<pb::Route>) -> pb::Snapshot {
    pb::Snapshot {
        version,
        committed_at_unix_ms: now_ms(),
        routes,
        ..pb::Snapshot::default()
    }
}

fn pb_update(base_version: u64, version: u64, upserted_routes: Vec<pb::Route>) -> pb::Update {
    pb::Update {
        version,
        base_version,
        committed_at_unix_ms: now_ms(),
        upserted_routes,
        ..pb::Update::default()
    }
}

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

fn start_feed(api: SocketAddr, state: &Arc<ProxyState>, dir: &Path) -> (Shutdown, JoinHandle<()>) {
    let shutdown = Shutdown::new();
    let config = FeedConfig {
        api_url: format!("http://{api}"),
        token: TOKEN.into(),
        state_dir: dir.to_owned(),
    };
    let task = tokio::spawn({
        let state = state.clone();
        let shutdown = shutdown.clone();
        async move { feed::run(config, state, shutdown).await.unwrap() }
    });
    (shutdown, task)
}

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..750 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

/// The upstream's name answering `host` through the proxy (or the status).
async fn via(proxy: &Proxy, host: &str) -> String {
    match try_get(proxy.http, host, "/", &[]).await {
        Ok((StatusCode::OK, _, body)) => field(&body, "upstream").to_owned(),
        Ok((status, _, _)) => status.as_u16().to_string(),
        Err(err) => format!("error: {err}"),
    }
}

#[tokio::test]
async fn feed_applies_survives_the_api_going_away_and_resumes() {
    let (a, b, c) = (
        upstream("a").await,
        upstream("b").await,
        upstream("c").await,
    );
    let proxy = Proxy::start(snapshot(0, vec![]), &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let fake = FakeApi::new(pb_snapshot(100, vec![pb_route("a.test", a.addr)]));
    let api = serve(addr, fake.clone()).await;
    let (feed_stop, feed_task) = start_feed(addr, &proxy.state, dir.path());

    until("the snapshot", || proxy.state.current_version() == 100).await;
    assert_eq!(via(&proxy, "a.test").await, "a");
    assert_eq!(fake.seen(), vec![(0, format!("Bearer {TOKEN}"))]);

    // An update adds a route; requests reach it.
    fake.push(
        pb_update(100, 101, vec![pb_route("b.test", b.addr)]),
        pb_snapshot(
            101,
            vec![pb_route("a.test", a.addr), pb_route("b.test", b.addr)],
        ),
    );
    until("the update", || proxy.state.current_version() == 101).await;
    assert_eq!(via(&proxy, "b.test").await, "b");
    assert_eq!(via(&proxy, "a.test").await, "a");
    let lag = proxy.metrics().await;
    assert!(lag.contains("ferry_proxy_feed_version 101\n"), "{lag}");
    until("the persisted copy", || {
        feed::load_persisted(dir.path()).is_some_and(|s| s.version == 101)
    })
    .await;

    // The api goes away: routes keep serving.
    api.kill().await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(proxy.state.current_version(), 101);
    assert_eq!(via(&proxy, "a.test").await, "a");
    assert_eq!(via(&proxy, "b.test").await, "b");

    // It comes back on the same address knowing version 101: the proxy
    // resumes from it and no snapshot is resent.
    let api = serve(addr, fake.clone()).await;
    until("the reconnect", || fake.seen().len() == 2).await;
    assert_eq!(fake.seen()[1].0, 101);
    fake.push(
        pb_update(101, 102, vec![pb_route("c.test", c.addr)]),
        pb_snapshot(
            102,
            vec![
                pb_route("a.test", a.addr),
                pb_route("b.test", b.addr),
                pb_route("c.test", c.addr),
            ],
        ),
    );
    until("the resumed update", || {
        proxy.state.current_version() == 102
    })
    .await;
    assert_eq!(via(&proxy, "c.test").await, "c");

    // An update that does not follow on (a gap) makes the proxy resync
    // with a snapshot instead of applying it.
    *fake.state.lock().unwrap() = pb_snapshot(300, vec![pb_route("c.test", c.addr)]);
    fake.push(
        pb_update(250, 251, vec![pb_route("a.test", b.addr)]),
        pb_snapshot(300, vec![pb_route("c.test", c.addr)]),
    );
    until("the resync", || proxy.state.current_version() == 300).await;
    assert_eq!(
        fake.seen().last().unwrap().0,
        0,
        "resync asks for a snapshot"
    );
    assert_eq!(
        via(&proxy, "a.test").await,
        "404",
        "snapshot replaced the routes"
    );
    assert_eq!(via(&proxy, "c.test").await, "c");

    // Shutdown writes the newest state.
    feed_stop.trigger();
    tokio::time::timeout(Duration::from_secs(5), feed_task)
        .await
        .expect("feed stops")
        .unwrap();
    assert_eq!(feed::load_persisted(dir.path()).unwrap().version, 300);
    api.kill().await;
    proxy.stop().await;
}

#[tokio::test]
async fn restart_without_the_api_serves_the_persisted_snapshot() {
    let a = upstream("a").await;
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();

    // A first life: the feed delivers and persists routes and a challenge.
    {
        let mut first = pb_snapshot(500, vec![pb_route("a.test", a.addr)]);
        first.acme_challenges.push(pb::AcmeChallenge {
            token: "tok".into(),
            key_authorization: "tok.thumb".into(),
        });
        let fake = FakeApi::new(first);
        let api = serve(addr, fake).await;
        let state = Arc::new(ProxyState::default());
        let (stop, task) = start_feed(addr, &state, dir.path());
        until("the snapshot", || state.current_version() == 500).await;
        until("the persisted copy", || {
            feed::load_persisted(dir.path()).is_some_and(|s| s.version == 500)
        })
        .await;
        stop.trigger();
        task.await.unwrap();
        api.kill().await;
    }
    {
        use std::os::unix::fs::PermissionsExt as _;
        let meta = std::fs::metadata(dir.path().join(feed::SNAPSHOT_FILE)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }

    // Second life, nothing listening at the api address.
    let proxy = Proxy::start(snapshot(0, vec![]), &[]).await;
    assert_eq!(via(&proxy, "a.test").await, "404");
    let (stop, task) = start_feed(addr, &proxy.state, dir.path());
    until("the persisted routes", || {
        proxy.state.current_version() == 500
    })
    .await;
    assert_eq!(via(&proxy, "a.test").await, "a");
    let (status, _, body) = try_get(proxy.http, "a.test", "/.well-known/acme-challenge/tok", &[])
        .await
        .unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "tok.thumb"));

    // Still down a while later: still serving, never cleared.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(via(&proxy, "a.test").await, "a");

    // The api comes back knowing 500: the proxy resumes, no snapshot.
    let fake = FakeApi::new(pb_snapshot(500, vec![pb_route("a.test", a.addr)]));
    let api = serve(addr, fake.clone()).await;
    until("the reconnect", || !fake.seen().is_empty()).await;
    assert_eq!(fake.seen()[0].0, 500);
    stop.trigger();
    task.await.unwrap();
    api.kill().await;
    proxy.stop().await;
}

#[tokio::test]
async fn a_refused_token_keeps_the_routes_and_retries() {
    let a = upstream("a").await;
    let proxy = Proxy::start(
        support::snapshot(
            9,
            vec![support::route(
                "a.test",
                &["a.test"],
                &[("/", false, &[a.addr])],
            )],
        ),
        &[],
    )
    .await;
    let addr = free_addr();
    let fake = FakeApi::new(pb_snapshot(10, vec![]));
    let api = serve(addr, fake.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let shutdown = Shutdown::new();
    let task = tokio::spawn(feed::run(
        FeedConfig {
            api_url: format!("http://{addr}"),
            token: "not-the-token".into(),
            state_dir: dir.path().to_owned(),
        },
        proxy.state.clone(),
        shutdown.clone(),
    ));
    until("a few refused attempts", || fake.seen().len() >= 3).await;
    assert_eq!(proxy.state.current_version(), 9);
    assert_eq!(via(&proxy, "a.test").await, "a");
    assert!(feed::load_persisted(dir.path()).is_none());
    shutdown.trigger();
    task.await.unwrap().unwrap();
    api.kill().await;
    proxy.stop().await;
}
