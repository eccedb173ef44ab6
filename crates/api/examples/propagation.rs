//! Route propagation benchmark, end to end over loopback HTTP.
//!
//! Everything runs in this process: the api's feed server (reading SQLite,
//! or PostgreSQL when `DATABASE_URL` is set), a `ferry-proxy` data plane with
//! its feed client, and two local HTTP/1.1 upstream servers. The api names
//! upstreams `<svc>.<ns>.svc.cluster.local:<port>`; the proxy reaches them
//! through `--resolve NAME:PORT=ADDR`, so requests go all the way through.
//!
//! A route change is committed exactly as the api does it: the rows are
//! written in one transaction, then `FeedHub::notify_committed` is called.
//!
//! 1. Propagation, over CHANGES (200) new routes: from the commit to the
//!    first request for the new host answered 200 by the upstream. A client
//!    polls the proxy with the new `Host` in a tight loop on one keep-alive
//!    connection (each poll also checks the proxy's routing table, which
//!    gives the commit → routing table time as well). Target: p99 ≤ 50 ms.
//! 2. Changes under load: LOAD_CHANGES (1,000) changes are committed back to
//!    back while CONNECTIONS (32) keep-alive connections send requests to a
//!    stable route and to 8 routes that are modified in ways that keep them
//!    routable (an extra target on a second upstream is added and removed);
//!    in between, routes for other hosts are added and deleted. Every answer
//!    that is not 200 and every connection error counts as a failure.
//!    Target: 0 failures.
//!
//! `cargo run --release -p ferry-api --example propagation [-- CHANGES [LOAD_CHANGES [CONNECTIONS]]]`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser as _;
use ferry_api::ApiState;
use ferry_api::feed::{FeedAuth, FeedHub, FeedToken};
use ferry_common::testing::free_addr;
use ferry_common::{GrpcServer, Shutdown, SystemInfo};
use ferry_db::crypto::Keyring;
use ferry_db::entities::{route_targets, routes};
use ferry_db::sea_orm::prelude::{DateTimeUtc, Uuid};
use ferry_db::sea_orm::{
    ColumnTrait as _, ConnectionTrait, DatabaseConnection, EntityTrait as _, IntoActiveModel as _,
    QueryFilter as _, TransactionTrait as _,
};
use ferry_proxy::ProxyState;
use ferry_proxy::feed::FeedConfig;
use ferry_tests::fixtures;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};

const TOKEN: &str = "propagation-benchmark-token";
/// The project slug: the namespace in upstream names.
const NAMESPACE: &str = "bench";
const STABLE_HOST: &str = "stable.bench.test";
/// Routes that are modified under load and must stay routable.
const CHURN_ROUTES: usize = 8;

#[tokio::main]
async fn main() {
    let arg = |n: usize, default: usize| {
        std::env::args()
            .nth(n)
            .map_or(default, |v| v.parse().expect("arguments are numbers"))
    };
    let (changes, load_changes, connections) = (arg(1, 200), arg(2, 1000), arg(3, 32));
    let db = match std::env::var("DATABASE_URL") {
        Ok(admin) => ferry_tests::TestDb::postgres(&admin).await,
        Err(_) => ferry_tests::TestDb::sqlite().await,
    };
    db.migrate().await;
    let conn = db.conn.clone();

    // Two local upstreams: `web` and `extra` services point at them.
    let (web_addr, web_hits) = upstream_server().await;
    let (extra_addr, extra_hits) = upstream_server().await;
    let org = fixtures::organization(&conn, "Bench", NAMESPACE).await;
    let project = fixtures::project(&conn, org, "Bench", NAMESPACE).await;
    let web = fixtures::service(&conn, project, "web", 8080).await;
    let extra = fixtures::service(&conn, project, "extra", 8080).await;
    let upstream_name = |svc: &str| ferry_api::feed::upstream_address(svc, NAMESPACE, 8080);

    let ids = Ids { project, web };
    let mut churn = Vec::with_capacity(CHURN_ROUTES);
    commit(&conn, |txn| async move {
        add_route(&*txn, &ids, "warm.test").await;
        add_route(&*txn, &ids, STABLE_HOST).await;
    })
    .await;
    for k in 0..CHURN_ROUTES {
        let host = format!("m{k}.bench.test");
        let route = commit(
            &conn,
            |txn| async move { add_route(&*txn, &ids, &host).await },
        )
        .await;
        churn.push((format!("m{k}.bench.test"), route));
    }

    // api: feed hub + reloader + gRPC server.
    let keyring = Arc::new(ferry_tests::test_keyring());
    let hub = FeedHub::new();
    hub.reload(&conn, &keyring).await.unwrap();
    let token: FeedToken = TOKEN.parse().unwrap();
    let state = ApiState {
        db: conn.clone(),
        keyring: keyring.clone(),
        feed: hub.clone(),
        feed_auth: FeedAuth::new(Some(&token)),
        cluster: None,
        deploy: ferry_api::workloads::DeployConfig::default(),
        builds: Default::default(),
    };
    let shutdown = Shutdown::new();
    hub.spawn_reloader(
        conn.clone(),
        keyring.clone(),
        Duration::from_secs(3600),
        shutdown.clone(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_addr = listener.local_addr().unwrap();
    tokio::spawn(
        GrpcServer::new(SystemInfo::new("ferry-api", "bench"))
            .services(ferry_api::services(&state))
            .serve(listener, std::future::ready(()), shutdown.clone()),
    );

    // proxy: data plane (in-cluster names pinned to the local upstreams) +
    // feed client.
    let http = free_addr();
    let args = ferry_proxy::Args::parse_from([
        "ferry-proxy".to_owned(),
        "--listen".into(),
        free_addr().to_string(),
        "--http-listen".into(),
        http.to_string(),
        "--https-listen".into(),
        free_addr().to_string(),
        "--admin-listen".into(),
        free_addr().to_string(),
        "--resolve".into(),
        format!("{}={web_addr}", upstream_name("web")),
        "--resolve".into(),
        format!("{}={extra_addr}", upstream_name("extra")),
    ]);
    let proxy_state = Arc::new(ProxyState::default());
    tokio::spawn(ferry_proxy::run_with_state(
        args,
        proxy_state.clone(),
        shutdown.clone(),
    ));
    let state_dir = tempfile::tempdir().unwrap();
    tokio::spawn(ferry_proxy::feed::run(
        FeedConfig {
            api_url: format!("http://{api_addr}"),
            token: TOKEN.into(),
            state_dir: state_dir.path().to_owned(),
        },
        proxy_state.clone(),
        shutdown.clone(),
    ));
    let mut client = Client::new(http);
    while proxy_state.current_version() != hub.version()
        || client.get("warm.test", "/").await != Ok(200)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "route propagation ({}; proxy workers: {}):",
        db.backend,
        std::env::var("FERRY_PROXY_WORKERS").unwrap_or_else(|_| "one per CPU".into())
    );

    // 1. Commit → first request served 200 through the new route.
    let mut to_table = Vec::with_capacity(changes);
    let mut to_served = Vec::with_capacity(changes);
    let mut polls = 0u64;
    for i in 0..changes {
        let host = format!("r{i}.bench.test");
        assert_eq!(client.get(&host, "/").await, Ok(404), "{host} routed early");
        let h = host.clone();
        commit(&conn, |txn| async move { add_route(&*txn, &ids, &h).await }).await;
        let committed = Instant::now();
        hub.notify_committed();
        let mut in_table = None;
        loop {
            if in_table.is_none() && proxy_state.table().route(&host).is_some() {
                in_table = Some(committed.elapsed());
            }
            polls += 1;
            match client.get(&host, "/").await {
                Ok(200) => break,
                Ok(404) => {}
                other => panic!("{host}: unexpected answer {other:?}"),
            }
            assert!(
                committed.elapsed() < Duration::from_secs(10),
                "{host} never served"
            );
        }
        let served = committed.elapsed();
        to_served.push(served);
        to_table.push(in_table.unwrap_or(served));
    }
    if changes > 0 {
        println!(
            "  {changes} new routes, {:.1} polls per change on one keep-alive connection",
            polls as f64 / changes as f64
        );
        report("commit -> proxy routing table", to_table);
        report("commit -> first 200 from upstream", to_served);
    }

    // 2. LOAD_CHANGES changes committed back to back under load.
    let stop = Arc::new(AtomicBool::new(false));
    let mut hosts: Vec<String> = vec![STABLE_HOST.to_owned()];
    hosts.extend(churn.iter().map(|(host, _)| host.clone()));
    let hosts = Arc::new(hosts);
    let extra_before = extra_hits.load(Ordering::Relaxed);
    let load_started = Instant::now();
    let load: Vec<_> = (0..connections)
        .map(|c| tokio::spawn(load_connection(http, hosts.clone(), c, stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let version_before = proxy_state.current_version();
    let applied_before = proxy_state
        .metrics
        .snapshots_applied
        .load(Ordering::Relaxed);
    let changes_started = Instant::now();
    let mut extra_targets: Vec<Option<Uuid>> = vec![None; CHURN_ROUTES];
    let mut other_routes: std::collections::VecDeque<Uuid> = Default::default();
    for i in 0..load_changes {
        let k = (i / 4) % CHURN_ROUTES;
        let route = churn[k].1;
        match i % 4 {
            // A second upstream joins a loaded route…
            0 => {
                let target = commit(
                    &conn,
                    |txn| async move { add_target(&*txn, route, extra).await },
                )
                .await;
                extra_targets[k] = Some(target);
            }
            // …and leaves it again.
            2 => {
                if let Some(target) = extra_targets[k].take() {
                    commit(&conn, |txn| async move {
                        route_targets::Entity::delete_by_id(target)
                            .exec(&*txn)
                            .await
                            .unwrap();
                    })
                    .await;
                }
            }
            // A route for another host appears…
            1 => {
                let host = format!("n{i}.bench.test");
                let route = commit(
                    &conn,
                    |txn| async move { add_route(&*txn, &ids, &host).await },
                )
                .await;
                other_routes.push_back(route);
            }
            // …and an older one goes away.
            _ => {
                if other_routes.len() > 16
                    && let Some(route) = other_routes.pop_front()
                {
                    commit(&conn, |txn| async move {
                        route_targets::Entity::delete_many()
                            .filter(route_targets::Column::RouteId.eq(route))
                            .exec(&*txn)
                            .await
                            .unwrap();
                        routes::Entity::delete_by_id(route)
                            .exec(&*txn)
                            .await
                            .unwrap();
                    })
                    .await;
                } else {
                    let host = format!("n{i}.bench.test");
                    let route = commit(
                        &conn,
                        |txn| async move { add_route(&*txn, &ids, &host).await },
                    )
                    .await;
                    other_routes.push_back(route);
                }
            }
        }
        hub.notify_committed();
    }
    let commit_time = changes_started.elapsed();
    // Wait until the proxy serves the final state.
    let expected = expected_hosts(&conn, &keyring).await;
    let converged = loop {
        let table = proxy_state.table();
        if table.routes() == expected.len() && expected.iter().all(|h| table.route(h).is_some()) {
            break changes_started.elapsed();
        }
        assert!(
            changes_started.elapsed() < Duration::from_secs(60),
            "the proxy never caught up"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let version_after = proxy_state.current_version();
    let applied = proxy_state
        .metrics
        .snapshots_applied
        .load(Ordering::Relaxed)
        - applied_before;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = LoadCounts::default();
    for task in load {
        total.merge(task.await.unwrap());
    }
    let load_time = load_started.elapsed();
    let failures = total.errors + total.statuses.values().sum::<u64>();
    println!(
        "  {load_changes} changes under load: committed in {:.2} s ({:.0} changes/s), proxy caught up {:.0} ms after the first commit ({applied} routing tables swapped in; feed version {version_before} -> {version_after})",
        commit_time.as_secs_f64(),
        load_changes as f64 / commit_time.as_secs_f64().max(1e-9),
        converged.as_secs_f64() * 1000.0,
    );
    println!(
        "  load: {connections} keep-alive connections over {:.2} s: {} requests, {:.0} req/s, {} OK, {failures} failed (non-200: {:?}, connection errors: {}); {} served by the extra targets",
        load_time.as_secs_f64(),
        total.requests,
        total.requests as f64 / load_time.as_secs_f64(),
        total.ok,
        total.statuses,
        total.errors,
        extra_hits.load(Ordering::Relaxed) - extra_before,
    );
    if let Some(error) = &total.first_error {
        println!("  first connection error: {error}");
    }
    println!(
        "  upstream hits: web {}, extra {}",
        web_hits.load(Ordering::Relaxed),
        extra_hits.load(Ordering::Relaxed)
    );
    shutdown.trigger();
    if failures > 0 {
        std::process::exit(1);
    }
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let pct = |p: f64| {
        let idx = ((samples.len() as f64 - 1.0) * p).round() as usize;
        samples[idx].as_secs_f64() * 1000.0
    };
    println!(
        "  {what}: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(1.0)
    );
}

/// The ids every change needs.
#[derive(Clone, Copy)]
struct Ids {
    project: Uuid,
    web: Uuid,
}

/// Runs `f` in a transaction and commits it.
async fn commit<T, F, Fut>(conn: &DatabaseConnection, f: F) -> T
where
    F: FnOnce(Arc<ferry_db::sea_orm::DatabaseTransaction>) -> Fut,
    Fut: Future<Output = T>,
{
    let txn = Arc::new(conn.begin().await.unwrap());
    let out = f(txn.clone()).await;
    Arc::into_inner(txn)
        .expect("the transaction is not kept")
        .commit()
        .await
        .unwrap();
    out
}

fn now() -> DateTimeUtc {
    DateTimeUtc::from(std::time::SystemTime::now())
}

/// A route for `host` at `/` with one target on the `web` service.
async fn add_route(txn: &impl ConnectionTrait, ids: &Ids, host: &str) -> Uuid {
    let (id, now) = (Uuid::now_v7(), now());
    routes::Entity::insert(
        routes::Model {
            id,
            project_id: ids.project,
            domain_id: None,
            hostname: host.into(),
            path_prefix: "/".into(),
            tls_enabled: false,
            https_redirect: false,
            created_at: now,
            updated_at: now,
        }
        .into_active_model(),
    )
    .exec_without_returning(txn)
    .await
    .unwrap();
    add_target(txn, id, ids.web).await;
    id
}

/// A target of `route` on port 8080 of `service`.
async fn add_target(txn: &impl ConnectionTrait, route: Uuid, service: Uuid) -> Uuid {
    let id = Uuid::now_v7();
    route_targets::Entity::insert(
        route_targets::Model {
            id,
            route_id: route,
            service_id: service,
            port: 8080,
            weight: 100,
            strip_path: false,
            created_at: now(),
        }
        .into_active_model(),
    )
    .exec_without_returning(txn)
    .await
    .unwrap();
    id
}

/// The hosts the database routes now.
async fn expected_hosts(conn: &DatabaseConnection, keyring: &Keyring) -> Vec<String> {
    let state = ferry_api::feed::load(conn, keyring).await.unwrap();
    state
        .routes
        .values()
        .flat_map(|r| r.hosts.iter().cloned())
        .collect()
}

/// A minimal keep-alive HTTP/1.1 server answering every request `200 ok`;
/// returns its address and a request counter.
async fn upstream_server() -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicU64::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let hits = counter.clone();
            tokio::spawn(async move {
                let _ = stream.set_nodelay(true);
                let mut stream = BufReader::new(stream);
                let mut line = String::new();
                loop {
                    // Request head; GETs carry no body.
                    let mut got_line = false;
                    loop {
                        line.clear();
                        match stream.read_line(&mut line).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        if line == "\r\n" && got_line {
                            break;
                        }
                        got_line = true;
                    }
                    hits.fetch_add(1, Ordering::Relaxed);
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-type: text/plain\r\n\r\nok\n";
                    if stream.get_mut().write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, hits)
}

/// A keep-alive HTTP/1.1 client on raw TCP; reconnects after an error.
struct Client {
    addr: SocketAddr,
    stream: Option<BufReader<TcpStream>>,
    line: String,
    body: Vec<u8>,
}

impl Client {
    fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            stream: None,
            line: String::new(),
            body: Vec::new(),
        }
    }

    /// `GET path` with `Host: host`: the status, or what went wrong (the
    /// connection is dropped then).
    async fn get(&mut self, host: &str, path: &str) -> Result<u16, String> {
        let result = self.exchange(host, path).await;
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    async fn exchange(&mut self, host: &str, path: &str) -> Result<u16, String> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(self.addr)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let _ = stream.set_nodelay(true);
            self.stream = Some(BufReader::new(stream));
        }
        let stream = self.stream.as_mut().ok_or("no connection")?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        stream
            .get_mut()
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let io = |e: std::io::Error| format!("read: {e}");
        self.line.clear();
        if stream.read_line(&mut self.line).await.map_err(io)? == 0 {
            return Err("connection closed before a response".into());
        }
        let status: u16 = self
            .line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {:?}", self.line))?;
        let (mut length, mut chunked, mut close) = (None, false, false);
        loop {
            self.line.clear();
            if stream.read_line(&mut self.line).await.map_err(io)? == 0 {
                return Err("connection closed in the response head".into());
            }
            let header = self.line.trim_end();
            if header.is_empty() {
                break;
            }
            let Some((name, value)) = header.split_once(':') else {
                return Err(format!("bad header {header:?}"));
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.parse::<usize>().map_err(|e| e.to_string())?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            }
        }
        if chunked {
            loop {
                self.line.clear();
                stream.read_line(&mut self.line).await.map_err(io)?;
                let size =
                    usize::from_str_radix(self.line.trim().split(';').next().unwrap_or(""), 16)
                        .map_err(|_| format!("bad chunk size {:?}", self.line))?;
                self.body.resize(size + 2, 0);
                stream.read_exact(&mut self.body).await.map_err(io)?;
                if size == 0 {
                    break;
                }
            }
        } else if let Some(length) = length {
            self.body.resize(length, 0);
            stream.read_exact(&mut self.body).await.map_err(io)?;
        } else {
            return Err("a response without a length".into());
        }
        if close {
            self.stream = None;
        }
        Ok(status)
    }
}

#[derive(Default)]
struct LoadCounts {
    requests: u64,
    ok: u64,
    /// Answers that were not 200, by status.
    statuses: BTreeMap<u16, u64>,
    errors: u64,
    first_error: Option<String>,
}

impl LoadCounts {
    fn merge(&mut self, other: LoadCounts) {
        self.requests += other.requests;
        self.ok += other.ok;
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// One keep-alive connection sending requests back to back, cycling over
/// `hosts` (starting at `offset`), until `stop`.
async fn load_connection(
    addr: SocketAddr,
    hosts: Arc<Vec<String>>,
    offset: usize,
    stop: Arc<AtomicBool>,
) -> LoadCounts {
    let mut client = Client::new(addr);
    let mut counts = LoadCounts::default();
    let mut i = offset;
    while !stop.load(Ordering::Relaxed) {
        let host = &hosts[i % hosts.len()];
        i += 1;
        counts.requests += 1;
        match client.get(host, "/").await {
            Ok(200) => counts.ok += 1,
            Ok(status) => *counts.statuses.entry(status).or_default() += 1,
            Err(error) => {
                counts.errors += 1;
                counts
                    .first_error
                    .get_or_insert_with(|| format!("{host}: {error}"));
            }
        }
    }
    counts
}
