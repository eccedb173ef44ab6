//! `ferry-proxy`: the HTTP(S) edge in front of deployed applications.
//!
//! It serves:
//! - plain HTTP (`FERRY_PROXY_HTTP_LISTEN`): HTTP/1.1 and h2c (prior
//!   knowledge), ACME HTTP-01 answers, per-route HTTPS redirects, and
//!   reverse proxying by host and path prefix ([`forward`], [`table`]);
//! - HTTPS (`FERRY_PROXY_HTTPS_LISTEN`): the same behind rustls with SNI
//!   certificates from the snapshot ([`tls`]), ALPN h2 and http/1.1;
//! - gRPC (`FERRY_PROXY_LISTEN`): `ferry.v1.SystemService`, health, reflection;
//! - admin HTTP (`FERRY_PROXY_ADMIN_LISTEN`): `/healthz`, `/readyz`
//!   (ready once a snapshot is loaded), `/metrics`.
//!
//! Routes come from a static `--routes-file` (a JSON [`config::Snapshot`])
//! or the api's feed (`--api-url`). With neither, the proxy serves an empty
//! table (every host answers `404 no route`).
//!
//! The HTTP and HTTPS listeners run thread-per-core, like nginx: one worker
//! thread per CPU, each with a single-threaded tokio runtime, its own
//! `SO_REUSEPORT` listeners and its own upstream connection pool, so a
//! request never crosses threads. gRPC, admin and the feed stay on the
//! caller's runtime.
//!
//! On shutdown `/readyz` turns 503 first, the traffic listeners stop
//! accepting and drain within the grace period, and the admin port closes
//! last. The proxy holds no database credentials and no key.

pub mod args;
pub mod config;
pub mod error;
pub mod feed;
pub mod forward;
pub mod host;
pub mod http;
pub mod idle;
pub mod metrics;
pub mod path;
pub mod resolve;
pub mod state;
pub mod table;
pub mod tls;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ferry_common::grpc::{GrpcServer, bind};
use ferry_common::{Shutdown, SystemInfo};
use hyper::http::uri::Scheme;

pub use args::Args;
pub use error::{Error, Result};
use forward::{Forwarder, ProxyService, Timeouts};
pub use state::ProxyState;

/// The service name used in logs, traces and `ServerInfo`.
pub const SERVICE_NAME: &str = "ferry-proxy";

/// Reads a JSON snapshot (the `--routes-file` format).
pub fn load_routes_file(path: &Path) -> Result<config::Snapshot> {
    let text = std::fs::read(path).map_err(|source| Error::RoutesFile {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_slice(&text).map_err(|source| Error::RoutesJson {
        path: path.to_owned(),
        source,
    })
}

/// Runs the proxy until `shutdown` fires, then drains.
pub async fn run(args: Args, shutdown: Shutdown) -> Result<()> {
    run_with_state(args, Arc::new(ProxyState::default()), shutdown).await
}

/// [`run`] with a caller-provided state (tests apply snapshots directly).
pub async fn run_with_state(args: Args, state: Arc<ProxyState>, shutdown: Shutdown) -> Result<()> {
    // A broken routes file fails start-up before any port is taken (and
    // without racing whatever else holds the default ports).
    if let Some(path) = &args.routes_file {
        load_routes_file(path)?;
    }
    let listeners = Listeners::bind(&args).await?;
    run_with_listeners(args, listeners, state, shutdown).await
}

/// Every socket the proxy listens on, bound before anything is served, so
/// a caller asking for port 0 learns the real ports first.
#[derive(Debug)]
pub struct Listeners {
    grpc: tokio::net::TcpListener,
    http: Vec<std::net::TcpListener>,
    https: Vec<std::net::TcpListener>,
    admin: tokio::net::TcpListener,
}

impl Listeners {
    /// Binds the four listeners of `args`, the traffic ones once per worker.
    pub async fn bind(args: &Args) -> Result<Self> {
        let workers = worker_count(args);
        Ok(Self {
            grpc: bind(args.listen).await?,
            http: bind_reuseport(args.http_listen, workers)?,
            https: bind_reuseport(args.https_listen, workers)?,
            admin: bind(args.admin_listen).await?,
        })
    }

    pub fn http_addr(&self) -> std::io::Result<SocketAddr> {
        first_addr(&self.http)
    }

    pub fn https_addr(&self) -> std::io::Result<SocketAddr> {
        first_addr(&self.https)
    }

    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.admin.local_addr()
    }
}

fn first_addr(listeners: &[std::net::TcpListener]) -> std::io::Result<SocketAddr> {
    match listeners.first() {
        Some(l) => l.local_addr(),
        None => Err(std::io::ErrorKind::NotFound.into()),
    }
}

/// [`run_with_state`] on listeners bound by [`Listeners::bind`].
pub async fn run_with_listeners(
    args: Args,
    listeners: Listeners,
    state: Arc<ProxyState>,
    shutdown: Shutdown,
) -> Result<()> {
    tls::install_provider();
    let grace = args.common.shutdown_grace();
    let default_cert = match (&args.default_cert, &args.default_key) {
        (Some(cert), Some(key)) => Some(tls::load_default(cert, key)?),
        _ => None,
    };
    if let Some(path) = &args.routes_file {
        let snapshot = load_routes_file(path)?;
        let routes = snapshot.routes.len();
        state.apply_snapshot(snapshot)?;
        tracing::info!(path = %path.display(), routes, "routes file loaded");
    } else if args.api_url.is_none() && !state.loaded() {
        // Nothing will ever feed us: serve an empty table (404 everywhere).
        state.apply_snapshot(config::Snapshot::default())?;
    }
    let Listeners {
        grpc: grpc_listener,
        http: http_listeners,
        https: https_listeners,
        admin: admin_listener,
    } = listeners;
    let workers = http_listeners.len();
    tracing::info!(
        http = %first_addr(&http_listeners)?,
        https = %first_addr(&https_listeners)?,
        admin = %admin_listener.local_addr()?,
        workers,
        "proxy HTTP listeners bound"
    );

    // The admin port outlives the traffic listeners so probes see the drain.
    let admin_stop = Shutdown::new();
    let options = http::ServeOptions::default();
    let admin = {
        let service = http::admin_service(state.clone());
        tokio::spawn(http::serve(
            admin_listener,
            "admin",
            move |_| service.clone(),
            None,
            options,
            admin_stop.clone(),
            grace,
        ))
    };
    let unready = {
        let state = state.clone();
        let shutdown = shutdown.clone();
        async move {
            shutdown.wait().await;
            state.ready.store(false, Ordering::Relaxed);
        }
    };

    let feed = spawn_feed(&args, &state, &shutdown)?;

    let mut system = SystemInfo::new(SERVICE_NAME, env!("CARGO_PKG_VERSION"));
    system.kube_configured = ferry_common::kubernetes_configured();
    let grpc = {
        let shutdown = shutdown.clone();
        async move {
            let served = GrpcServer::new(system)
                .grace(grace)
                .serve(grpc_listener, std::future::ready(()), shutdown.clone())
                .await;
            // A failed gRPC server takes the HTTP listeners down with it.
            shutdown.trigger();
            served
        }
    };
    let timeouts = Timeouts {
        connect: args.connect_timeout(),
        response: args.response_timeout(),
        idle: args.idle_timeout(),
    };
    let resolve = (!args.resolve.is_empty()).then(|| {
        for o in &args.resolve {
            tracing::info!(upstream = %o.upstream, addr = %o.addr, "upstream address overridden (--resolve)");
        }
        Arc::new(resolve::ResolveTable::new(&args.resolve))
    });
    let acceptor =
        tokio_rustls::TlsAcceptor::from(tls::server_config(state.clone(), default_cert)?);
    let mut done = Vec::with_capacity(workers);
    for (i, (http, https)) in http_listeners.into_iter().zip(https_listeners).enumerate() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let worker = Worker {
            state: state.clone(),
            timeouts,
            resolve: resolve.clone(),
            acceptor: acceptor.clone(),
            options,
            shutdown: shutdown.clone(),
            grace,
        };
        std::thread::Builder::new()
            .name(format!("ferry-proxy-{i}"))
            .spawn(move || {
                if let Err(err) = worker.run(http, https) {
                    tracing::error!(error = %err, "proxy worker failed");
                    worker.shutdown.trigger();
                }
                let _ = tx.send(());
            })?;
        done.push(rx);
    }
    let data = async {
        for rx in done {
            // A worker that died early takes the proxy down with it.
            if rx.await.is_err() {
                shutdown.trigger();
            }
        }
    };

    state.ready.store(true, Ordering::Relaxed);
    let (grpc, (), ()) = tokio::join!(grpc, data, unready);

    if let Some(feed) = feed {
        // The feed flushes its last snapshot to disk on shutdown.
        if tokio::time::timeout(grace, feed).await.is_err() {
            tracing::warn!("route feed did not stop within the grace period");
        }
    }
    admin_stop.trigger();
    if let Err(err) = admin.await {
        tracing::warn!(error = %err, "admin server task failed");
    }
    grpc?;
    Ok(())
}

/// Worker threads for the traffic listeners: `--workers`, or one per CPU.
fn worker_count(args: &Args) -> usize {
    args.workers
        .map(usize::from)
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(1)
}

/// `n` listening sockets sharing `addr` through `SO_REUSEPORT`, so the
/// kernel spreads connections across the workers. A port 0 is resolved by
/// the first socket and shared by the others.
///
/// `SO_REUSEPORT` would also let a second process of the same user join an
/// explicit port silently and take half its connections (seen in CI: two
/// test proxies on one port answered each other's hosts with 404). A plain
/// bind first makes an occupied port fail loudly instead.
fn bind_reuseport(addr: SocketAddr, n: usize) -> Result<Vec<std::net::TcpListener>> {
    let bind_err = |source| ferry_common::Error::Bind { addr, source };
    if addr.port() != 0 {
        drop(std::net::TcpListener::bind(addr).map_err(bind_err)?);
    }
    let bind_one = |addr: SocketAddr| -> std::io::Result<std::net::TcpListener> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        Ok(socket.into())
    };
    let first = bind_one(addr).map_err(bind_err)?;
    let shared = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..n {
        listeners.push(bind_one(shared).map_err(bind_err)?);
    }
    Ok(listeners)
}

/// One traffic worker: a single-threaded runtime serving its own HTTP and
/// HTTPS listeners with its own [`Forwarder`].
struct Worker {
    state: Arc<ProxyState>,
    timeouts: Timeouts,
    resolve: Option<Arc<resolve::ResolveTable>>,
    acceptor: tokio_rustls::TlsAcceptor,
    options: http::ServeOptions,
    shutdown: Shutdown,
    grace: Duration,
}

impl Worker {
    fn run(&self, http: std::net::TcpListener, https: std::net::TcpListener) -> Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let http = tokio::net::TcpListener::from_std(http)?;
            let https = tokio::net::TcpListener::from_std(https)?;
            let forwarder = Arc::new(
                Forwarder::new(self.state.clone(), self.timeouts)
                    .with_resolve(self.resolve.clone()),
            );
            let expiry = tokio::spawn(forwarder.clone().expire_idle(self.shutdown.clone()));
            let plain = {
                let forwarder = forwarder.clone();
                http::serve(
                    http,
                    "http",
                    move |peer| ProxyService::new(forwarder.clone(), peer, Scheme::HTTP),
                    None,
                    self.options,
                    self.shutdown.clone(),
                    self.grace,
                )
            };
            let state = &self.state;
            let https_forwarder = forwarder.clone();
            let secure = http::serve(
                https,
                "https",
                move |peer| {
                    state.https_connections.fetch_add(1, Ordering::Relaxed);
                    ProxyService::new(https_forwarder.clone(), peer, Scheme::HTTPS)
                },
                Some(self.acceptor.clone()),
                self.options,
                self.shutdown.clone(),
                self.grace,
            );
            // When the drain began: tunnels get what is left of the grace
            // period after the HTTP connections, then the runtime's end
            // closes them.
            let drain_started = async {
                self.shutdown.wait().await;
                tokio::time::Instant::now()
            };
            let ((), (), drain_started) = tokio::join!(plain, secure, drain_started);
            let left = self.grace.saturating_sub(drain_started.elapsed());
            if tokio::time::timeout(left, forwarder.tunnels_closed())
                .await
                .is_err()
            {
                tracing::warn!(
                    open = forwarder.open_tunnels(),
                    "grace period elapsed; closing upgraded connections"
                );
            }
            expiry.abort();
            Ok(())
        })
    }
}

/// Starts the api feed when `--api-url` is set. A feed that cannot start
/// (bad URL or token) shuts the proxy down rather than serving stale routes
/// forever without notice.
fn spawn_feed(
    args: &Args,
    state: &Arc<ProxyState>,
    shutdown: &Shutdown,
) -> Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(api_url) = &args.api_url else {
        return Ok(None);
    };
    let token = args
        .feed_token
        .clone()
        .ok_or_else(|| Error::Config("--feed-token is required with --api-url".to_owned()))?;
    let config = feed::FeedConfig {
        api_url: api_url.clone(),
        token,
        state_dir: args.state_dir.clone(),
    };
    let (state, shutdown) = (state.clone(), shutdown.clone());
    Ok(Some(tokio::spawn(async move {
        if let Err(err) = feed::run(config, state, shutdown.clone()).await {
            tracing::error!(error = %err, "route feed failed; shutting down");
            shutdown.trigger();
        }
    })))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn an_explicit_port_held_by_another_reuseport_socket_is_refused() {
        let mine = bind_reuseport("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let addr = mine[0].local_addr().unwrap();
        assert_eq!(mine[1].local_addr().unwrap(), addr);
        // A second proxy asking for the same port must not join it silently.
        let err = bind_reuseport(addr, 2).unwrap_err();
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
        drop(mine);
        assert_eq!(bind_reuseport(addr, 1).unwrap().len(), 1);
    }
}
