//! The data plane: route a request through the current table and forward
//! it to an upstream over a pooled keep-alive HTTP/1.1 connection, or the
//! upstream's multiplexed HTTP/2 connection for `h2c` targets (gRPC). Bodies
//! stream in both directions; HTTP upgrades (WebSocket) become a raw
//! tunnel. The host ([`crate::host`]) and path ([`crate::path`]) are
//! checked and normalised once; routing and the upstream see the same ones.
//! Failures answer with short bodies: 400 malformed or ambiguous host or
//! path, 404 unknown host, 502 upstream unreachable or broken, 503 no
//! upstream, 504 upstream timeout.
//!
//! Each worker thread owns one [`Forwarder`] and so its own connection
//! pool ([`Pool`]): a request never leaves the thread that accepted it.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http_body_util::{Either, Empty, Full};
use hyper::body::{Body as _, Bytes, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{
    CONNECTION, CONTENT_TYPE, Entry, FORWARDED, HOST, HeaderMap, HeaderName, HeaderValue, LOCATION,
    TE, UPGRADE,
};
use hyper::http::uri::{Authority, InvalidUri, PathAndQuery, Scheme};
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::ProxyState;
use crate::config::UpstreamProtocol;
use crate::host::{HostError, RequestHost};
use crate::idle::IdleBody;
use crate::metrics::UpstreamError;
use crate::resolve::ResolveTable;
use crate::table::{FastMap, Upstream};

/// Body of every data-plane response: the upstream's, streamed (failing
/// once idle too long), or a short one of our own.
pub type ProxyBody = Either<IdleBody<Incoming>, Full<Bytes>>;

/// Body sent upstream: the client's, streamed (failing once idle too
/// long), or none.
type UpstreamBody = Either<IdleBody<Incoming>, Empty<Bytes>>;

const HEX: &[u8; 16] = b"0123456789abcdef";
const ACME_PREFIX: &str = "/.well-known/acme-challenge/";
const DOMAIN_PREFIX: &str = "/.well-known/ferry-challenge/";
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Headers that describe one connection and are never forwarded.
static HOP_BY_HOP: [HeaderName; 10] = [
    HeaderName::from_static("connection"),
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("proxy-authenticate"),
    // Credentials for a proxy, consumed by the first one (RFC 9110
    // §11.7.2); this one asks for none, so they go nowhere.
    HeaderName::from_static("proxy-authorization"),
    HeaderName::from_static("te"),
    HeaderName::from_static("trailer"),
    HeaderName::from_static("transfer-encoding"),
    HeaderName::from_static("upgrade"),
    // Only meaningful with an h2c upgrade, never passed (RFC 7540 §3.2.1).
    HeaderName::from_static("http2-settings"),
];

/// Upstream timeouts.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub connect: Duration,
    pub response: Duration,
    /// A pooled upstream connection unused this long is closed, and a body
    /// (either direction) without a frame this long is cut.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(3),
            response: Duration::from_secs(60),
            idle: Duration::from_secs(90),
        }
    }
}

/// Routes and forwards requests; one per worker thread, shared by the
/// connections that thread accepted.
#[derive(Debug)]
pub struct Forwarder {
    state: Arc<ProxyState>,
    pool: Pool,
    timeouts: Timeouts,
    /// `--resolve` overrides; `None` (the default) costs nothing.
    resolve: Option<Arc<ResolveTable>>,
    id_prefix: u64,
    next_id: AtomicU64,
    /// Open upgraded connections (WebSockets), drained on shutdown.
    tunnels: Arc<Tunnels>,
}

/// Counts open tunnels so a draining worker can wait for them.
#[derive(Debug, Default)]
struct Tunnels {
    open: std::sync::atomic::AtomicUsize,
    closed: tokio::sync::Notify,
}

impl Tunnels {
    /// Counts one more open tunnel until the returned guard drops.
    fn track(self: &Arc<Self>) -> TunnelGuard {
        self.open.fetch_add(1, Ordering::AcqRel);
        TunnelGuard(self.clone())
    }
}

/// Held by a tunnel task; its drop counts the tunnel closed.
struct TunnelGuard(Arc<Tunnels>);

impl Drop for TunnelGuard {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.closed.notify_waiters();
        }
    }
}

impl Forwarder {
    pub fn new(state: Arc<ProxyState>, timeouts: Timeouts) -> Self {
        // Request ids: a per-forwarder random prefix and a counter, cheaper
        // than a UUID per request and unique enough to correlate logs.
        let id_prefix = std::hash::BuildHasher::hash_one(
            &std::collections::hash_map::RandomState::new(),
            std::time::SystemTime::now(),
        );
        Self {
            state,
            pool: Pool::default(),
            timeouts,
            resolve: None,
            id_prefix,
            next_id: AtomicU64::new(0),
            tunnels: Arc::default(),
        }
    }

    /// Waits until every upgraded connection this forwarder opened has
    /// closed (the HTTP drain does not see them: hyper is done with a
    /// connection once it is upgraded).
    pub async fn tunnels_closed(&self) {
        loop {
            let closed = self.tunnels.closed.notified();
            tokio::pin!(closed);
            closed.as_mut().enable();
            if self.tunnels.open.load(Ordering::Acquire) == 0 {
                return;
            }
            closed.await;
        }
    }

    /// Upgraded connections currently open.
    pub fn open_tunnels(&self) -> usize {
        self.tunnels.open.load(Ordering::Acquire)
    }

    /// Connects to the `--resolve` address of an upstream that has one
    /// instead of resolving its name.
    #[must_use]
    pub fn with_resolve(mut self, resolve: Option<Arc<ResolveTable>>) -> Self {
        self.resolve = resolve.filter(|table| !table.is_empty());
        self
    }

    /// Closes pooled upstream connections idle for longer than the idle
    /// timeout, every few seconds, until `shutdown` fires.
    pub async fn expire_idle(self: Arc<Self>, shutdown: ferry_common::Shutdown) {
        let period =
            (self.timeouts.idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(15));
        let stop = shutdown.wait();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(period) => self.pool.expire(self.timeouts.idle),
            }
        }
    }

    /// Serves one request that arrived over `scheme` from the client at
    /// `client_ip` ([`client_ip_header`]).
    pub async fn handle(
        &self,
        mut req: Request<Incoming>,
        client_ip: &HeaderValue,
        scheme: &Scheme,
    ) -> Response<ProxyBody> {
        let https = *scheme == Scheme::HTTPS;
        if !https {
            self.state.http_requests.fetch_add(1, Ordering::Relaxed);
        }
        let table = self.state.table();
        let host = match RequestHost::of(&req, scheme) {
            Ok(host) => host,
            Err(err) => {
                self.state.metrics.unrouted.record(400);
                return bad_request(&err);
            }
        };
        // Routing and the upstream see the same, normalised path.
        let path = match crate::path::normalize(req.uri().path()) {
            Ok(path) => path,
            Err(err) => {
                self.state.metrics.unrouted.record(400);
                return bad_request(&err);
            }
        };
        if !https
            && let Some(token) = path.strip_prefix(ACME_PREFIX)
            && let Some(answer) = table.acme(token)
        {
            let mut response = Response::new(Either::Right(Full::new(answer.clone())));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            return response;
        }
        if !https
            && let Some(token) = path.strip_prefix(DOMAIN_PREFIX)
            && table.domain_challenge(host.name(), token)
        {
            let mut response =
                Response::new(Either::Right(Full::new(Bytes::from(token.to_owned()))));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            return response;
        }
        let Some(route) = table.route(host.name()) else {
            self.state.metrics.unrouted.record(404);
            return no_route();
        };
        if !https && route.redirect_https {
            route.counters.record(308);
            return redirect(host.name(), req.uri());
        }
        let Some(target) = route.target(&path) else {
            route.counters.record(404);
            return no_route();
        };
        let Some(upstream) = target.pick() else {
            self.state.metrics.upstream_error(UpstreamError::NoUpstream);
            route.counters.record(503);
            return short(StatusCode::SERVICE_UNAVAILABLE, "no upstream\n");
        };

        let Some(forwarded_host) = host.forwarded() else {
            route.counters.record(400);
            return bad_request(&HostError::Malformed);
        };
        let path_and_query = match upstream_path(req.uri(), target.rewrite(&path)) {
            Ok(path_and_query) => path_and_query,
            Err(err) => {
                route.counters.record(400);
                return bad_request(&err);
            }
        };
        let started = Instant::now();
        let upgrade = if req.version() == Version::HTTP_11 {
            requested_upgrade(req.headers())
        } else {
            None
        };
        let wants_upgrade = upgrade.is_some();
        let client_upgrade = wants_upgrade.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        // Upgrades always go over HTTP/1.1.
        let protocol = if wants_upgrade {
            UpstreamProtocol::Http1
        } else {
            target.protocol
        };
        let h2c = protocol == UpstreamProtocol::H2c;
        // gRPC needs `te: trailers` end to end; it is hop-by-hop otherwise.
        let te_trailers = h2c
            && parts
                .headers
                .get(TE)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));

        prepare_request_headers(&mut parts.headers, upgrade);
        let headers = &mut parts.headers;
        // Entry API: one hash per header instead of a get and an insert.
        let request_id = match headers.entry(&X_REQUEST_ID) {
            Entry::Occupied(mut id) => {
                if id.get().len() > 128 {
                    id.insert(self.request_id());
                }
                id.get().clone()
            }
            Entry::Vacant(slot) => slot.insert(self.request_id()).clone(),
        };
        append_forwarded_for(headers, client_ip);
        // Only the peer is known first-hand: a client's X-Real-IP is replaced.
        headers.insert(X_REAL_IP.clone(), client_ip.clone());
        headers.insert(
            X_FORWARDED_PROTO.clone(),
            HeaderValue::from_static(if https { "https" } else { "http" }),
        );
        // The host routing used, normalised: never the client's spelling
        // of it, nor a second host it named.
        headers.insert(HOST, forwarded_host.clone());
        headers.insert(X_FORWARDED_HOST.clone(), forwarded_host);

        if h2c {
            // HTTP/2 carries the host as `:authority` in an absolute URI.
            let authority = parts
                .headers
                .remove(HOST)
                .and_then(|h| Authority::try_from(h.as_bytes()).ok())
                .unwrap_or_else(|| upstream.authority.clone());
            parts.version = Version::HTTP_2;
            parts.uri = Uri::builder()
                .scheme(Scheme::HTTP)
                .authority(authority)
                .path_and_query(path_and_query)
                .build()
                .unwrap_or_default();
            if te_trailers {
                parts
                    .headers
                    .insert(TE, HeaderValue::from_static("trailers"));
            }
        } else {
            parts.version = Version::HTTP_11;
            // Origin form: the upstream connection already names the host.
            parts.uri = Uri::from(path_and_query);
        }
        // A bodiless request goes out with an empty body and can be
        // replayed on another upstream if the first refuses the connection.
        let bodiless = body.is_end_stream();
        let replay = (bodiless && target.upstream_count() > 1).then(|| {
            (
                parts.method.clone(),
                parts.headers.clone(),
                parts.uri.clone(),
                parts.version,
            )
        });
        let body = if bodiless {
            Either::Right(Empty::new())
        } else {
            Either::Left(IdleBody::new(body, self.timeouts.idle))
        };
        let request = Request::from_parts(parts, body);
        // One timer for the whole exchange, retry included.
        let exchange = async {
            let outcome = self.send(upstream, protocol, request).await;
            if matches!(outcome, Err(UpstreamError::Connect))
                && let Some((method, headers, uri, version)) = replay
                && let Some(other) = target.pick_other(upstream)
            {
                self.state.metrics.upstream_error(UpstreamError::Connect);
                let mut request = Request::new(Either::Right(Empty::new()));
                *request.method_mut() = method;
                *request.headers_mut() = headers;
                *request.uri_mut() = uri;
                *request.version_mut() = version;
                return self.send(other, protocol, request).await;
            }
            outcome
        };
        let outcome = tokio::time::timeout(self.timeouts.response, exchange)
            .await
            .unwrap_or(Err(UpstreamError::Timeout));
        self.state.metrics.observe_latency(started.elapsed());
        let mut response = match outcome {
            Ok(response) => response,
            Err(kind) => {
                self.state.metrics.upstream_error(kind);
                let response = match kind {
                    UpstreamError::Timeout => {
                        short(StatusCode::GATEWAY_TIMEOUT, "upstream timeout\n")
                    }
                    _ => short(StatusCode::BAD_GATEWAY, "upstream unavailable\n"),
                };
                route.counters.record(response.status().as_u16());
                return response;
            }
        };
        route.counters.record(response.status().as_u16());
        // The client's own version is used on the way back (hyper would
        // otherwise warn about an HTTP/2 response on an HTTP/1.1 connection).
        *response.version_mut() = Version::HTTP_11;
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            match client_upgrade {
                Some(client) => {
                    let upstream_side = hyper::upgrade::on(&mut response);
                    let guard = self.tunnels.track();
                    tokio::spawn(async move {
                        tunnel(client, upstream_side).await;
                        drop(guard);
                    });
                }
                None => return short(StatusCode::BAD_GATEWAY, "upstream unavailable\n"),
            }
        } else {
            strip_hop_by_hop(response.headers_mut());
        }
        response
            .headers_mut()
            .insert(X_REQUEST_ID.clone(), request_id);
        let idle = self.timeouts.idle;
        response.map(|body| Either::Left(IdleBody::new(body, idle)))
    }

    /// One attempt against `upstream`: a pooled connection, or a new one.
    async fn send(
        &self,
        upstream: &Upstream,
        protocol: UpstreamProtocol,
        request: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        upstream.outstanding.fetch_add(1, Ordering::Relaxed);
        let result = match protocol {
            UpstreamProtocol::Http1 => self.exchange(upstream, request).await,
            // Boxed: its connect and handshake states would otherwise
            // enlarge every request's future (moved, so copied, per request).
            UpstreamProtocol::H2c => Box::pin(self.exchange_h2(upstream, request)).await,
        };
        upstream.outstanding.fetch_sub(1, Ordering::Relaxed);
        if result.is_ok() {
            upstream.healthy();
        }
        result
    }

    async fn exchange(
        &self,
        upstream: &Upstream,
        mut request: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        // A pooled connection the upstream closed meanwhile gives the
        // request back unsent: try the next one, then a fresh connection.
        while let Some(mut sender) = self.pool.checkout(upstream.id) {
            match sender.try_send_request(request).await {
                Ok(response) => {
                    self.pool.checkin(upstream.id, sender);
                    return Ok(response);
                }
                Err(mut err) => match err.take_message() {
                    Some(unsent) => request = unsent,
                    None => {
                        tracing::debug!(upstream = %upstream.addr, error = %err.error(), "upstream request failed");
                        return Err(UpstreamError::Protocol);
                    }
                },
            }
        }
        let mut sender = self.connect(upstream).await?;
        match sender.send_request(request).await {
            Ok(response) => {
                self.pool.checkin(upstream.id, sender);
                Ok(response)
            }
            Err(err) => {
                tracing::debug!(upstream = %upstream.addr, error = %err, "upstream request failed");
                Err(UpstreamError::Protocol)
            }
        }
    }

    /// Over the worker's HTTP/2 connection to `upstream`, opened on first
    /// use and replaced once closed. A request the connection never took
    /// (it closed meanwhile) is sent once more on a fresh one.
    async fn exchange_h2(
        &self,
        upstream: &Upstream,
        request: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut request = request;
        let mut fresh = false;
        loop {
            let mut sender = match self.pool.h2(upstream.id) {
                Some(sender) if !fresh => sender,
                _ => {
                    fresh = true;
                    let sender = self.connect_h2(upstream).await?;
                    self.pool.set_h2(upstream.id, sender.clone());
                    sender
                }
            };
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(response),
                Err(mut err) => {
                    let unsent = err.take_message();
                    if unsent.is_some() || sender.is_closed() {
                        self.pool.forget_h2(upstream.id);
                    }
                    match unsent {
                        // The pooled connection never took it: once more, fresh.
                        Some(unsent) if !fresh => {
                            request = unsent;
                            fresh = true;
                        }
                        _ => {
                            tracing::debug!(upstream = %upstream.addr, error = %err.error(), "upstream h2 request failed");
                            return Err(UpstreamError::Protocol);
                        }
                    }
                }
            }
        }
    }

    async fn connect_h2(&self, upstream: &Upstream) -> Result<Http2Sender, UpstreamError> {
        let stream = self.dial(upstream).await?;
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|err| {
                tracing::debug!(upstream = %upstream.addr, error = %err, "upstream h2 handshake failed");
                UpstreamError::Protocol
            })?;
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                tracing::debug!(error = %err, "upstream h2 connection ended");
            }
        });
        Ok(sender)
    }

    /// A new keep-alive connection; a refusal or timeout ejects `upstream`.
    async fn connect(
        &self,
        upstream: &Upstream,
    ) -> Result<SendRequest<UpstreamBody>, UpstreamError> {
        let stream = self.dial(upstream).await?;
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|err| {
                tracing::debug!(upstream = %upstream.addr, error = %err, "upstream handshake failed");
                UpstreamError::Protocol
            })?;
        tokio::spawn(async move {
            if let Err(err) = conn.with_upgrades().await {
                tracing::debug!(error = %err, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// A TCP connection to `upstream`; a refusal or timeout ejects it.
    async fn dial(&self, upstream: &Upstream) -> Result<tokio::net::TcpStream, UpstreamError> {
        let pinned = self.resolve.as_ref().and_then(|r| r.get(&upstream.addr));
        let connect = async {
            match pinned {
                Some(addr) => tokio::net::TcpStream::connect(addr).await,
                None => tokio::net::TcpStream::connect(&*upstream.addr).await,
            }
        };
        let stream = match tokio::time::timeout(self.timeouts.connect, connect).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => {
                upstream.eject();
                tracing::debug!(upstream = %upstream.addr, error = %err, "upstream connect failed");
                return Err(if err.kind() == std::io::ErrorKind::TimedOut {
                    UpstreamError::Timeout
                } else {
                    UpstreamError::Connect
                });
            }
            Err(_) => {
                upstream.eject();
                tracing::debug!(upstream = %upstream.addr, "upstream connect timed out");
                return Err(UpstreamError::Timeout);
            }
        };
        let _ = stream.set_nodelay(true);
        let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        Ok(stream)
    }

    fn request_id(&self) -> HeaderValue {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        // 32 hex digits, formatted without an intermediate String.
        let v = (u128::from(self.id_prefix) << 64) | u128::from(n);
        let mut id = [0u8; 32];
        for (i, digit) in id.iter_mut().enumerate() {
            *digit = HEX[((v >> (124 - 4 * i)) & 0xf) as usize];
        }
        HeaderValue::from_bytes(&id).unwrap_or_else(|_| HeaderValue::from_static("0"))
    }
}

/// The path and query sent upstream: `path` (normalised, the prefix
/// stripped when configured) and the client's query as sent. The received
/// one is reused, without a copy, when the path is unchanged.
fn upstream_path(uri: &Uri, path: &str) -> Result<PathAndQuery, InvalidUri> {
    if let Some(received) = uri.path_and_query()
        && let Some(rest) = received.as_str().strip_prefix(path)
        && (rest.is_empty() || rest.starts_with('?'))
    {
        return Ok(received.clone());
    }
    let query = uri.query();
    let mut text = String::with_capacity(path.len() + query.map_or(0, |q| q.len() + 1));
    text.push_str(path);
    if let Some(query) = query {
        text.push('?');
        text.push_str(query);
    }
    PathAndQuery::try_from(text)
}

/// The `Upgrade` to send upstream, if any: the client's protocols without
/// `h2c`. An h2c upgrade would turn the upstream connection into HTTP/2
/// that the proxy only tunnels, so the client could send it requests that
/// were never routed (h2c smuggling). WebSocket and the rest pass.
fn requested_upgrade(headers: &HeaderMap) -> Option<HeaderValue> {
    let values = headers.get_all(UPGRADE);
    let mut iter = values.iter();
    let first = iter.next()?;
    // The common case, one value without h2c, is passed as is.
    if iter.next().is_none() && !first.to_str().ok()?.split(',').any(is_h2c) {
        return Some(first.clone());
    }
    let kept: Vec<&str> = values
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty() && !is_h2c(p))
        .collect();
    if kept.is_empty() {
        return None;
    }
    HeaderValue::try_from(kept.join(", ")).ok()
}

/// `h2c` as an `Upgrade` protocol (`name[/version]`).
fn is_h2c(protocol: &str) -> bool {
    let name = protocol.split('/').next().unwrap_or(protocol);
    name.trim().eq_ignore_ascii_case("h2c")
}

/// Removes hop-by-hop headers and `Forwarded`; for an upgrade, sends
/// `upgrade` (see [`requested_upgrade`]) with `Connection: upgrade`.
///
/// `Forwarded` is the client's account of hops before the proxy. The proxy
/// is the edge: it states what it saw in `X-Forwarded-*` and `X-Real-IP`,
/// and an upstream reading a client's `for=`, `host=` or `proto=` would
/// trust what anyone can write (rewriting it instead would format a header
/// per request).
fn prepare_request_headers(headers: &mut HeaderMap, upgrade: Option<HeaderValue>) {
    // Most requests carry none of them: one pass over the names.
    if headers
        .keys()
        .any(|name| is_hop_by_hop(name) || *name == FORWARDED)
    {
        remove_hop_by_hop(headers);
        headers.remove(FORWARDED);
    }
    if let Some(value) = upgrade {
        headers.insert(UPGRADE, value);
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the names instead of ten
    // hashed removals.
    if headers.keys().any(is_hop_by_hop) {
        remove_hop_by_hop(headers);
    }
}

fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Names listed in `Connection` are hop-by-hop too (RFC 9110 §7.6.1).
    let listed: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "http2-settings"
    )
}

fn append_forwarded_for(headers: &mut HeaderMap, client_ip: &HeaderValue) {
    match headers.entry(&X_FORWARDED_FOR) {
        Entry::Vacant(e) => {
            e.insert(client_ip.clone());
        }
        Entry::Occupied(mut e) => {
            let existing = e.get().as_bytes();
            if existing.trim_ascii().is_empty() {
                e.insert(client_ip.clone());
                return;
            }
            let joined = [existing, b", ", client_ip.as_bytes()].concat();
            if let Ok(value) = HeaderValue::from_bytes(&joined) {
                e.insert(value);
            }
        }
    }
}

/// The peer's address as an `X-Forwarded-For` element (IPv4-mapped IPv6
/// shown as IPv4), formatted once per connection: `Display` for an IP
/// costs about a thousand instructions, a measurable share of a request.
pub fn client_ip_header(peer: SocketAddr) -> HeaderValue {
    HeaderValue::try_from(peer.ip().to_canonical().to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Copies bytes both ways between the upgraded client and upstream
/// connections until either side closes.
async fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(err) => {
            tracing::debug!(error = %err, "upgrade failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    if let Err(err) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(error = %err, "upgraded connection closed with an error");
    }
}

fn redirect(host: &str, uri: &Uri) -> Response<ProxyBody> {
    let path = uri.path_and_query().map_or("/", PathAndQuery::as_str);
    let mut response = short(StatusCode::PERMANENT_REDIRECT, "redirecting to https\n");
    if let Ok(location) = HeaderValue::try_from(format!("https://{host}{path}")) {
        response.headers_mut().insert(LOCATION, location);
    }
    response
}

fn no_route() -> Response<ProxyBody> {
    short(StatusCode::NOT_FOUND, "no route\n")
}

/// 400, saying what was wrong with the request.
fn bad_request(why: &dyn std::fmt::Display) -> Response<ProxyBody> {
    text(
        StatusCode::BAD_REQUEST,
        Bytes::from(format!("bad request: {why}\n")),
    )
}

fn short(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    text(status, Bytes::from_static(body.as_bytes()))
}

fn text(status: StatusCode, body: Bytes) -> Response<ProxyBody> {
    let mut response = Response::new(Either::Right(Full::new(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Keep-alive HTTP/1.1 connections by upstream ([`Upstream::id`]). A connection goes
/// back as soon as the response head arrives; it is handed out again only
/// once hyper reports it ready (the previous response fully read), and
/// dropped once closed (upstream hangup, upgrade) or idle too long.
#[derive(Debug, Default)]
struct Pool {
    /// Only the owning worker thread touches it, so the lock never waits.
    idle: Mutex<FastMap<u64, Vec<Pooled>>>,
    /// One multiplexed HTTP/2 connection per h2c upstream.
    h2: Mutex<FastMap<u64, Http2Sender>>,
}

type Http2Sender = hyper::client::conn::http2::SendRequest<UpstreamBody>;

#[derive(Debug)]
struct Pooled {
    sender: SendRequest<UpstreamBody>,
    since: Instant,
}

impl Pool {
    fn checkout(&self, upstream: u64) -> Option<SendRequest<UpstreamBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let conns = idle.get_mut(&upstream)?;
        let mut i = conns.len();
        while i > 0 {
            i -= 1;
            if conns[i].sender.is_closed() {
                conns.swap_remove(i);
            } else if conns[i].sender.is_ready() {
                return Some(conns.swap_remove(i).sender);
            }
        }
        None
    }

    fn checkin(&self, upstream: u64, sender: SendRequest<UpstreamBody>) {
        let pooled = Pooled {
            sender,
            since: Instant::now(),
        };
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.entry(upstream).or_default().push(pooled);
    }

    fn h2(&self, upstream: u64) -> Option<Http2Sender> {
        let mut h2 = self.h2.lock().unwrap_or_else(PoisonError::into_inner);
        match h2.get(&upstream) {
            Some(sender) if !sender.is_closed() => Some(sender.clone()),
            Some(_) => {
                h2.remove(&upstream);
                None
            }
            None => None,
        }
    }

    fn set_h2(&self, upstream: u64, sender: Http2Sender) {
        let mut h2 = self.h2.lock().unwrap_or_else(PoisonError::into_inner);
        h2.insert(upstream, sender);
    }

    /// Forgets the connection after it failed; the next request opens a
    /// new one.
    fn forget_h2(&self, upstream: u64) {
        let mut h2 = self.h2.lock().unwrap_or_else(PoisonError::into_inner);
        h2.remove(&upstream);
    }

    fn expire(&self, max_idle: Duration) {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.retain(|_, conns| {
            conns.retain(|c| {
                let expired = c.sender.is_ready() && now - c.since > max_idle;
                !c.sender.is_closed() && !expired
            });
            !conns.is_empty()
        });
    }
}

/// A hyper service for one accepted connection.
#[derive(Clone, Debug)]
pub struct ProxyService {
    forwarder: Arc<Forwarder>,
    client_ip: HeaderValue,
    scheme: Scheme,
}

impl ProxyService {
    pub fn new(forwarder: Arc<Forwarder>, peer: SocketAddr, scheme: Scheme) -> Self {
        Self {
            forwarder,
            client_ip: client_ip_header(peer),
            scheme,
        }
    }
}

impl hyper::service::Service<Request<Incoming>> for ProxyService {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            Ok(this
                .forwarder
                .handle(req, &this.client_ip, &this.scheme)
                .await)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn request_ids_are_a_random_prefix_and_a_counter_in_hex() {
        let f = Forwarder::new(Arc::default(), Timeouts::default());
        let ids: Vec<String> = (0..3)
            .map(|_| f.request_id().to_str().unwrap().to_owned())
            .collect();
        let prefix = format!("{:016x}", f.id_prefix);
        for (n, id) in ids.iter().enumerate() {
            assert_eq!(*id, format!("{prefix}{n:016x}"));
        }
    }

    #[test]
    fn forwarded_for_appends_the_client_to_an_existing_chain() {
        let v4 = client_ip_header("10.1.2.3:5000".parse().unwrap());
        let mapped = client_ip_header("[::ffff:10.1.2.3]:5000".parse().unwrap());
        assert_eq!(
            (v4.as_bytes(), mapped.as_bytes()),
            (&b"10.1.2.3"[..], &b"10.1.2.3"[..])
        );
        let v6 = client_ip_header("[2001:db8::1]:443".parse().unwrap());
        let mut headers = HeaderMap::new();
        append_forwarded_for(&mut headers, &v4);
        assert_eq!(headers[&X_FORWARDED_FOR], "10.1.2.3");
        headers.insert(
            X_FORWARDED_FOR.clone(),
            HeaderValue::from_static("203.0.113.9"),
        );
        append_forwarded_for(&mut headers, &v6);
        assert_eq!(headers[&X_FORWARDED_FOR], "203.0.113.9, 2001:db8::1");
        headers.insert(X_FORWARDED_FOR.clone(), HeaderValue::from_static("  "));
        append_forwarded_for(&mut headers, &v4);
        assert_eq!(headers[&X_FORWARDED_FOR], "10.1.2.3");
    }

    #[test]
    fn the_upstream_path_is_the_routed_path_with_the_query_as_sent() {
        let uri: Uri = "/a/b?q=%2F..".parse().unwrap();
        assert_eq!(upstream_path(&uri, "/a/b").unwrap(), "/a/b?q=%2F..");
        assert_eq!(upstream_path(&uri, "/b").unwrap(), "/b?q=%2F..");
        assert_eq!(upstream_path(&uri, "/a").unwrap(), "/a?q=%2F..");
        let uri: Uri = "/x/../y".parse().unwrap();
        assert_eq!(upstream_path(&uri, "/y").unwrap(), "/y");
        let uri: Uri = "http://a.test".parse().unwrap();
        assert_eq!(upstream_path(&uri, "/").unwrap(), "/");
    }

    #[test]
    fn h2c_is_never_an_upgrade_sent_upstream() {
        let upgrade = |values: &[&'static str]| {
            let mut headers = HeaderMap::new();
            for v in values {
                headers.append(UPGRADE, HeaderValue::from_static(v));
            }
            requested_upgrade(&headers).map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(upgrade(&[]), None);
        assert_eq!(upgrade(&["websocket"]).unwrap(), "websocket");
        assert_eq!(upgrade(&["h2c"]), None);
        assert_eq!(upgrade(&[" H2C "]), None);
        assert_eq!(upgrade(&["h2c, websocket"]).unwrap(), "websocket");
        assert_eq!(upgrade(&["h2c", "websocket"]).unwrap(), "websocket");
        assert_eq!(upgrade(&["foo/2", "h2c/1"]).unwrap(), "foo/2");
        assert_eq!(upgrade(&["h2c", ","]), None);
    }

    #[test]
    fn the_fast_hop_by_hop_check_knows_every_stripped_name() {
        for name in &HOP_BY_HOP {
            assert!(is_hop_by_hop(name), "{name}");
        }
        assert!(!is_hop_by_hop(&HOST));
        assert!(!is_hop_by_hop(&X_FORWARDED_FOR));
    }

    #[test]
    fn requests_lose_forwarded_and_proxy_credentials_only() {
        let mut headers = HeaderMap::new();
        headers.insert(FORWARDED, HeaderValue::from_static("for=203.0.113.9"));
        headers.insert(
            "proxy-authorization",
            HeaderValue::from_static("Basic eDp5"),
        );
        headers.insert("authorization", HeaderValue::from_static("Bearer t"));
        prepare_request_headers(&mut headers, None);
        let left: Vec<_> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["authorization"]);
        // Alone, Forwarded is found by the one pass too.
        let mut headers = HeaderMap::new();
        headers.insert(FORWARDED, HeaderValue::from_static("for=203.0.113.9"));
        prepare_request_headers(&mut headers, None);
        assert!(headers.is_empty());
    }

    #[test]
    fn strip_removes_standard_and_connection_listed_headers_only() {
        let mut headers = HeaderMap::new();
        headers.insert(CONNECTION, HeaderValue::from_static("close, x-secret-hop"));
        headers.insert("x-secret-hop", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(HOST, HeaderValue::from_static("a.example"));
        strip_hop_by_hop(&mut headers);
        let left: Vec<_> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["host"]);

        let mut plain = HeaderMap::new();
        plain.insert(HOST, HeaderValue::from_static("a.example"));
        strip_hop_by_hop(&mut plain);
        assert_eq!(plain.len(), 1);
    }
}
