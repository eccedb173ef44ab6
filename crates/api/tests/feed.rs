//! The route feed over real TCP gRPC against real databases (SQLite and
//! PostgreSQL): the snapshot carries the routes with their in-cluster
//! upstreams and the decrypted certificate, committed changes arrive as
//! updates, a resuming proxy gets no snapshot again, and the service
//! credential is enforced. One test boots the real `ferry-api` binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ferry_api::ApiState;
use ferry_api::feed::{FeedAuth, FeedHub, FeedToken};
use ferry_common::{GrpcServer, Shutdown, SystemInfo};
use ferry_db::entities::{certificates, route_targets, routes, services};
use ferry_db::sea_orm::prelude::Uuid;
use ferry_db::sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, DatabaseConnection, DbBackend, EntityTrait,
    IntoActiveModel as _,
};
use ferry_proto::ferry::internal::v1 as pb;
use ferry_tests::{TestDb, fixtures};
use fixtures::target;
use pb::route_feed_client::RouteFeedClient;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

const TOKEN: &str = "feed-token-0123456789abcdef";
const KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----\ncurrent-key\n-----END PRIVATE KEY-----\n";

struct Api {
    addr: SocketAddr,
    state: ApiState,
    shutdown: Shutdown,
    server: JoinHandle<ferry_common::Result<()>>,
}

/// The api's gRPC server on a loopback port, with the feed loaded and its
/// reloader running (periodic reload effectively off: only kicks count).
async fn start(conn: &DatabaseConnection, token: Option<&str>) -> Api {
    let keyring = Arc::new(ferry_tests::test_keyring());
    let feed = FeedHub::new();
    feed.reload(conn, &keyring).await.unwrap();
    let token: Option<FeedToken> = token.map(|t| t.parse().unwrap());
    let state = ApiState {
        db: conn.clone(),
        keyring: keyring.clone(),
        feed,
        feed_auth: FeedAuth::new(token.as_ref()),
        cluster: None,
        deploy: ferry_api::workloads::DeployConfig::default(),
        builds: Default::default(),
    };
    let shutdown = Shutdown::new();
    state.feed.spawn_reloader(
        conn.clone(),
        keyring,
        Duration::from_secs(3600),
        shutdown.clone(),
    );
    if conn.get_database_backend() == DbBackend::Postgres {
        // Its first reload after LISTEN must not race the test's writes.
        tokio::time::timeout(Duration::from_secs(10), state.feed.listening())
            .await
            .expect("LISTEN within 10 s");
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        GrpcServer::new(SystemInfo::new("ferry-api", "test"))
            .services(ferry_api::services(&state))
            .grace(Duration::from_secs(5))
            .serve(listener, std::future::ready(()), shutdown.clone()),
    );
    Api {
        addr,
        state,
        shutdown,
        server,
    }
}

async fn client(addr: SocketAddr) -> RouteFeedClient<Channel> {
    RouteFeedClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
        .max_decoding_message_size(usize::MAX)
}

async fn watch(
    addr: SocketAddr,
    token: Option<&str>,
    resume_from_version: u64,
) -> Result<Streaming<pb::FeedMessage>, tonic::Status> {
    let mut request = tonic::Request::new(pb::WatchRequest {
        resume_from_version,
        proxy_id: "test-proxy".into(),
    });
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    client(addr)
        .await
        .watch(request)
        .await
        .map(tonic::Response::into_inner)
}

async fn next(stream: &mut Streaming<pb::FeedMessage>) -> pb::feed_message::Kind {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a feed message within 10 s")
        .unwrap()
        .expect("the stream is open")
        .kind
        .unwrap()
}

fn snapshot(kind: pb::feed_message::Kind) -> pb::Snapshot {
    match kind {
        pb::feed_message::Kind::Snapshot(s) => s,
        other => panic!("expected a snapshot, got {other:?}"),
    }
}

fn update(kind: pb::feed_message::Kind) -> pb::Update {
    match kind {
        pb::feed_message::Kind::Update(u) => u,
        other => panic!("expected an update, got {other:?}"),
    }
}

/// The rows of one project `shop`: services `web` (:8080) and `api`
/// (:9000), domain `example.com` with two certificates, routes
/// `app.example.com/` → web and `app.example.com/api` (stripped) → api, and
/// a route on a soft-deleted domain that must not be served.
struct Fixture {
    project: Uuid,
    web: Uuid,
    api: Uuid,
    domain: Uuid,
    api_target: Uuid,
}

async fn seed(conn: &DatabaseConnection) -> Fixture {
    let now = Utc::now();
    let org = fixtures::organization(conn, "Acme", "acme").await;
    let project = fixtures::project(conn, org, "Shop", "shop").await;
    let web = fixtures::service(conn, project, "web", 8080).await;
    let api = fixtures::service(conn, project, "api", 9000).await;
    let gone = fixtures::domain(conn, org, "old.example.org", true).await;
    let domain = fixtures::domain(conn, org, "example.com", false).await;

    // The older certificate must lose to the one expiring last.
    for (days, key) in [(30, "old-key"), (90, KEY_PEM)] {
        let id = Uuid::now_v7();
        certificates::Entity::insert(
            certificates::Model {
                id,
                domain_id: domain,
                issuer: "test".into(),
                certificate_pem: format!("CHAIN-{days}"),
                private_key: ferry_tests::test_keyring()
                    .encrypt("certificates", "private_key", id, key)
                    .unwrap(),
                not_before: Some(now),
                expires_at: now + chrono::Duration::days(days),
                created_at: now,
                source: "uploaded".into(),
                hostnames: serde_json::json!([]),
                expiring_notified_at: None,
            }
            .into_active_model(),
        )
        .exec_without_returning(conn)
        .await
        .unwrap();
    }

    let root = route(conn, project, Some(domain), "app.example.com", "/").await;
    target(conn, root, web, 8080, false).await;
    let prefixed = route(conn, project, Some(domain), "app.example.com", "/api").await;
    let api_target = target(conn, prefixed, api, 9000, true).await;
    let hidden = route(conn, project, Some(gone), "www.old.example.org", "/").await;
    target(conn, hidden, web, 8080, false).await;
    Fixture {
        project,
        web,
        api,
        domain,
        api_target,
    }
}

/// An HTTPS route (TLS + redirect), as the feed tests expect.
async fn route<C: ferry_db::sea_orm::ConnectionTrait>(
    conn: &C,
    project: Uuid,
    domain: Option<Uuid>,
    hostname: &str,
    path_prefix: &str,
) -> Uuid {
    fixtures::route(conn, project, domain, hostname, path_prefix, true).await
}

fn app_route(api_port: u16) -> pb::Route {
    pb::Route {
        id: "app.example.com".into(),
        hosts: vec!["app.example.com".into()],
        targets: vec![
            pb::Target {
                path_prefix: "/".into(),
                strip_prefix: false,
                upstreams: vec!["web.shop.svc.cluster.local:8080".into()],
                balance: 0,
                weights: vec![],
                protocol: 0,
            },
            pb::Target {
                path_prefix: "/api".into(),
                strip_prefix: true,
                upstreams: vec![format!("api.shop.svc.cluster.local:{api_port}")],
                balance: 0,
                weights: vec![],
                protocol: 0,
            },
        ],
        redirect_https: true,
    }
}

#[tokio::test]
async fn feed_streams_snapshot_then_committed_changes_on_each_backend() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let conn = &db.conn;
        let fx = seed(conn).await;
        let api = start(conn, Some(TOKEN)).await;

        let mut stream = watch(api.addr, Some(TOKEN), 0).await.unwrap();
        let first = snapshot(next(&mut stream).await);
        assert_eq!(first.version, api.state.feed.version(), "{b}");
        assert!(first.committed_at_unix_ms > 0, "{b}");
        assert_eq!(
            first.routes,
            vec![app_route(9000)],
            "{b}: soft-deleted domain hidden"
        );
        assert_eq!(first.certificates.len(), 1, "{b}");
        let cert = &first.certificates[0];
        assert_eq!(cert.id, fx.domain.to_string(), "{b}");
        assert_eq!(cert.hosts, vec!["app.example.com", "example.com"], "{b}");
        assert_eq!(
            cert.cert_pem, "CHAIN-90",
            "{b}: the certificate expiring last"
        );
        assert_eq!(cert.key_pem, KEY_PEM, "{b}: decrypted");
        assert!(first.acme_challenges.is_empty(), "{b}");

        // A new host and a changed port, committed in one transaction (as a
        // handler does), then announced.
        let txn = ferry_db::sea_orm::TransactionTrait::begin(conn)
            .await
            .unwrap();
        let shop = route(&txn, fx.project, None, "shop.example.net", "/").await;
        target(&txn, shop, fx.web, 8080, false).await;
        let mut changed = route_targets::Entity::find_by_id(fx.api_target)
            .one(&txn)
            .await
            .unwrap()
            .unwrap()
            .into_active_model();
        changed.port = Set(9001);
        changed.update(&txn).await.unwrap();
        txn.commit().await.unwrap();
        api.state.feed.notify_committed();

        let up = update(next(&mut stream).await);
        assert_eq!(up.base_version, first.version, "{b}");
        assert!(up.version > first.version, "{b}");
        assert!(up.committed_at_unix_ms >= first.committed_at_unix_ms, "{b}");
        let shop_route = pb::Route {
            id: "shop.example.net".into(),
            hosts: vec!["shop.example.net".into()],
            targets: vec![pb::Target {
                path_prefix: "/".into(),
                strip_prefix: false,
                upstreams: vec!["web.shop.svc.cluster.local:8080".into()],
                balance: 0,
                weights: vec![],
                protocol: 0,
            }],
            redirect_https: true,
        };
        assert_eq!(up.upserted_routes, vec![app_route(9001), shop_route], "{b}");
        assert!(up.removed_route_ids.is_empty(), "{b}");
        assert!(
            up.upserted_certificates.is_empty(),
            "{b}: unchanged cert not resent"
        );

        // Removal; an ACME challenge is pushed at once.
        routes::Entity::delete_by_id(shop).exec(conn).await.unwrap();
        api.state.feed.notify_committed();
        let removed = update(next(&mut stream).await);
        assert_eq!(removed.base_version, up.version, "{b}");
        assert_eq!(removed.removed_route_ids, vec!["shop.example.net"], "{b}");
        api.state
            .feed
            .set_acme_challenge("tok-1", "tok-1.thumb")
            .unwrap();
        let acme = update(next(&mut stream).await);
        assert_eq!(acme.base_version, removed.version, "{b}");
        assert_eq!(
            acme.set_acme_challenges[0].key_authorization, "tok-1.thumb",
            "{b}"
        );

        // A notify without a change publishes nothing; the next change does.
        api.state.feed.notify_committed();
        let current = api.state.feed.version();
        assert_eq!(current, acme.version, "{b}");

        // Resuming at the current version: no snapshot, then the next change.
        let mut resumed = watch(api.addr, Some(TOKEN), current).await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(300), resumed.message())
                .await
                .is_err(),
            "{b}: nothing is resent to an up-to-date proxy"
        );
        // Resuming from an older version of this process replays updates.
        let mut replay = watch(api.addr, Some(TOKEN), first.version).await.unwrap();
        for expected in [up.version, removed.version, acme.version] {
            assert_eq!(update(next(&mut replay).await).version, expected, "{b}");
        }
        // A version this process never issued gets a snapshot.
        let mut stale = watch(api.addr, Some(TOKEN), first.version - 1)
            .await
            .unwrap();
        assert_eq!(snapshot(next(&mut stale).await).version, current, "{b}");

        services::Entity::delete_by_id(fx.api)
            .exec(conn)
            .await
            .unwrap();
        api.state.feed.notify_committed();
        for stream in [&mut stream, &mut resumed, &mut replay, &mut stale] {
            let up = update(next(stream).await);
            assert_eq!(up.base_version, current, "{b}");
            // The /api target lost its only backend (cascade), the prefix stays.
            assert_eq!(up.upserted_routes[0].targets[1].upstreams.len(), 0, "{b}");
        }
        let _ = fx.web;

        // Shutdown ends open streams, so the server drains promptly.
        api.shutdown.trigger();
        let ended = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("stream ends on shutdown");
        assert!(matches!(ended, Ok(None) | Err(_)), "{b}");
        tokio::time::timeout(Duration::from_secs(8), api.server)
            .await
            .expect("server stops")
            .unwrap()
            .unwrap();
    }
}

/// Two api replicas on one PostgreSQL database, periodic reload off: a
/// change committed through one reaches a proxy watching the other through
/// LISTEN/NOTIFY, not the 30 s safety reload.
#[tokio::test]
async fn postgres_replicas_announce_changes_to_each_other() {
    let Some(db) = ferry_tests::postgres_db().await else {
        return; // SQLite-only mode: there is nothing to LISTEN on.
    };
    db.migrate().await;
    let fx = seed(&db.conn).await;
    let a = start(&db.conn, Some(TOKEN)).await;
    let b = start(&db.connect_again().await, Some(TOKEN)).await;
    let mut stream = watch(b.addr, Some(TOKEN), 0).await.unwrap();
    let first = snapshot(next(&mut stream).await);
    assert_eq!(first.routes.len(), 1);

    for (i, host) in ["shop.example.net", "blog.example.net"].iter().enumerate() {
        // One transaction, as a handler writes it (each commit is announced).
        let txn = ferry_db::sea_orm::TransactionTrait::begin(&db.conn)
            .await
            .unwrap();
        let id = route(&txn, fx.project, None, host, "/").await;
        target(&txn, id, fx.web, 8080, false).await;
        txn.commit().await.unwrap();
        let started = std::time::Instant::now();
        a.state.feed.notify_committed();
        let up = update(next(&mut stream).await);
        let ids: Vec<_> = up.upserted_routes.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, vec![*host], "change {i}");
        eprintln!("replica b saw change {i} after {:?}", started.elapsed());
    }
    for api in [a, b] {
        api.shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(8), api.server)
            .await
            .expect("server stops")
            .unwrap()
            .unwrap();
    }
}

#[tokio::test]
async fn feed_requires_the_service_credential() {
    let db = TestDb::sqlite().await;
    db.migrate().await;
    let api = start(&db.conn, Some(TOKEN)).await;
    for bad in [None, Some("feed-token-0123456789abcdeX"), Some("")] {
        let err = watch(api.addr, bad, 0).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{bad:?}");
    }
    // A user-style token is not the service credential either.
    let err = watch(api.addr, Some("ferry_pat_abcdefghijklmnopqrstuvwxyz"), 0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(watch(api.addr, Some(TOKEN), 0).await.is_ok());
    api.shutdown.trigger();

    let disabled = start(&db.conn, None).await;
    let err = watch(disabled.addr, Some(TOKEN), 0).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("FERRY_PROXY_FEED_TOKEN"), "{err}");
    disabled.shutdown.trigger();
}

#[tokio::test]
async fn feed_is_not_served_before_the_first_load() {
    let db = TestDb::sqlite().await;
    db.migrate().await;
    let token: FeedToken = TOKEN.parse().unwrap();
    let state = ApiState {
        db: db.conn.clone(),
        keyring: Arc::new(ferry_tests::test_keyring()),
        feed: FeedHub::new(),
        feed_auth: FeedAuth::new(Some(&token)),
        cluster: None,
        deploy: ferry_api::workloads::DeployConfig::default(),
        builds: Default::default(),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    tokio::spawn(
        GrpcServer::new(SystemInfo::new("ferry-api", "test"))
            .services(ferry_api::services(&state))
            .serve(listener, std::future::ready(()), shutdown.clone()),
    );
    // An empty snapshot now would wipe every proxy's routes.
    let err = watch(addr, Some(TOKEN), 0).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    shutdown.trigger();
}

#[tokio::test]
async fn api_binary_serves_the_feed_with_its_token() {
    use ferry_common::testing::{boot, free_addr, stop_cleanly};
    let db = TestDb::sqlite().await;
    db.migrate().await;
    seed(&db.conn).await;
    let addr = free_addr();
    let listen = addr.to_string();
    let (process, _) = boot(
        env!("CARGO_BIN_EXE_ferry-api"),
        &[],
        &[
            ("FERRY_API_LISTEN", listen.as_str()),
            // Parallel tests must not share the default webhook port.
            ("FERRY_API_HTTP_LISTEN", "127.0.0.1:0"),
            ("DATABASE_URL", db.url.as_str()),
            ("ENCRYPTION_KEY", ferry_tests::test_key()),
            ("FERRY_PROXY_FEED_TOKEN", TOKEN),
            ("FERRY_SHUTDOWN_GRACE_SECS", "5"),
        ],
        addr,
        "ferry-api",
    )
    .await;
    let mut stream = watch(addr, Some(TOKEN), 0).await.unwrap();
    let first = snapshot(next(&mut stream).await);
    assert_eq!(first.routes, vec![app_route(9000)]);
    assert_eq!(first.certificates[0].key_pem, KEY_PEM);
    let err = watch(addr, Some("wrong-token-0123456789"), 0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    // An open feed stream does not hold up a clean stop.
    let output = stop_cleanly(process, Duration::from_secs(8)).await;
    assert!(!output.contains(TOKEN), "the feed token leaked into logs");
    assert!(
        !output.contains("current-key"),
        "a private key leaked into logs"
    );
    drop(stream);
}

/// On PostgreSQL the notification is part of the commit (triggers on the
/// feed's tables): a write that no handler announced still reaches the
/// proxies at once. SQLite is one process with explicit notifications.
#[tokio::test]
async fn on_postgres_an_unannounced_commit_still_reaches_the_feed() {
    let Some(db) = ferry_tests::migrated_dbs()
        .await
        .into_iter()
        .find(|d| d.backend == ferry_tests::Backend::Postgres)
    else {
        return;
    };
    let api = start(&db.conn, Some(TOKEN)).await;
    let org = fixtures::organization(&db.conn, "Acme", "acme").await;
    let project = fixtures::project(&db.conn, org, "Shop", "shop").await;
    let web = fixtures::service(&db.conn, project, "web", 8080).await;
    // Written straight to the database, as a handler that forgot to call
    // notify_committed would; the periodic reload is an hour away.
    let txn = ferry_db::sea_orm::TransactionTrait::begin(&db.conn)
        .await
        .unwrap();
    let route = fixtures::route(&txn, project, None, "quiet.example.com", "/", false).await;
    target(&txn, route, web, 8080, false).await;
    txn.commit().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let snap = api.state.feed.snapshot();
        if snap
            .routes
            .iter()
            .any(|r| r.hosts.iter().any(|h| h == "quiet.example.com") && !r.targets.is_empty())
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the unannounced route never reached the feed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A rolled-back write announces nothing and changes nothing.
    let version = api.state.feed.snapshot().version;
    {
        use ferry_db::sea_orm::TransactionTrait as _;
        let txn = db.conn.begin().await.unwrap();
        fixtures::route(&txn, project, None, "never.example.com", "/", false).await;
        txn.rollback().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(api.state.feed.snapshot().version, version);
    api.shutdown.trigger();
}
