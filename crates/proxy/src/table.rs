//! The compiled routing table: built once per snapshot, then read lock-free
//! by every request (it lives behind an `ArcSwap` in [`crate::ProxyState`]).
//!
//! Lookup order: exact host, then a one-label wildcard (`*.example.com`
//! matches `a.example.com`, not `a.b.example.com` nor `example.com`), then
//! the longest path prefix among the route's targets, on segment
//! boundaries (`/api` matches `/api` and `/api/x`, not `/apix`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hyper::body::Bytes;
use hyper::http::uri::Authority;

use crate::config::{Balance, Route, Snapshot, UpstreamProtocol};
use crate::metrics::{Metrics, RouteCounters};
use crate::tls::CertStore;
use crate::{Error, Result};

/// First ejection of an upstream that refused a connection.
const EJECT_BASE: Duration = Duration::from_secs(10);
/// Longest ejection after repeated failures.
const EJECT_MAX: Duration = Duration::from_secs(60);

/// Maps looked up on every request: foldhash (seeded per process) costs a
/// fraction of SipHash for short keys such as host names.
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// One compiled snapshot.
#[derive(Debug, Default)]
pub struct Table {
    version: u64,
    exact: FastMap<Box<str>, Arc<RouteEntry>>,
    /// Keyed by the suffix after `*.`.
    wildcard: FastMap<Box<str>, Arc<RouteEntry>>,
    acme: HashMap<Box<str>, Bytes>,
    /// Domain challenges: token → the one host it is answered for.
    domain_challenges: HashMap<Box<str>, Box<str>>,
    certs: CertStore,
    /// Upstream state by address; reused by the next compile so health and
    /// in-flight counts survive a route change.
    upstreams: FastMap<Box<str>, Arc<Upstream>>,
    /// Each route's index in `snapshot` and its entry, so the next compile
    /// reuses the entries of unchanged routes instead of rebuilding them.
    by_id: FastMap<Arc<str>, (usize, Arc<RouteEntry>)>,
    snapshot: Arc<Snapshot>,
}

/// One route, with its targets sorted longest prefix first.
#[derive(Debug)]
pub struct RouteEntry {
    pub id: Arc<str>,
    pub redirect_https: bool,
    pub targets: Vec<TargetEntry>,
    pub counters: Arc<RouteCounters>,
}

/// A path prefix and its upstreams.
#[derive(Debug)]
pub struct TargetEntry {
    /// Normalised like request paths ([`crate::path`]), without a trailing
    /// `/`; the root prefix is empty.
    prefix: Box<str>,
    strip: bool,
    balance: Balance,
    pub protocol: UpstreamProtocol,
    upstreams: Vec<Arc<Upstream>>,
    /// Per-upstream weights; empty when all are equal.
    weights: Box<[u32]>,
    /// One period of smooth weighted round robin (indices into
    /// `upstreams`), computed at compile time so a pick stays one atomic
    /// increment; empty when all weights are equal.
    schedule: Box<[u32]>,
    next: AtomicUsize,
}

/// Longest weighted round-robin period kept; larger weight sums are scaled
/// down (each weight stays at least 1).
const MAX_SCHEDULE: u64 = 1024;
/// Largest accepted weight.
pub const MAX_WEIGHT: u32 = 10_000;

/// A `host:port` upstream with passive health state.
#[derive(Debug)]
pub struct Upstream {
    /// Unique for the life of the process (never reused, unlike the
    /// address of a dropped `Arc`): the connection pool's key.
    pub id: u64,
    pub addr: Box<str>,
    pub authority: Authority,
    /// Requests sent and not yet answered (for least-outstanding).
    pub outstanding: AtomicUsize,
    failures: AtomicU32,
    /// Milliseconds since [`epoch`] until which the upstream is skipped.
    ejected_until: AtomicU64,
}

impl Table {
    /// Validates and compiles `snapshot`. `previous` lends its upstream
    /// health state; `metrics` its per-route counters.
    pub fn compile(
        snapshot: Snapshot,
        previous: Option<&Table>,
        metrics: &Metrics,
    ) -> Result<Self> {
        let mut table = Table {
            version: snapshot.version,
            ..Table::default()
        };
        table.by_id.reserve(snapshot.routes.len());
        for (index, route) in snapshot.routes.iter().enumerate() {
            if route.id.trim().is_empty() {
                return Err(invalid("a route has an empty id".to_owned()));
            }
            if route.hosts.is_empty() {
                return Err(invalid(format!("route {} has no hosts", route.id)));
            }
            // An unchanged route keeps its entry: its upstreams, weights
            // schedule, round-robin position and counters.
            let unchanged = previous.and_then(|p| {
                let (at, entry) = p.by_id.get(route.id.as_str())?;
                (p.snapshot.routes.get(*at) == Some(route)).then(|| entry.clone())
            });
            let entry = match unchanged {
                Some(entry) => {
                    for up in entry.targets.iter().flat_map(|t| &t.upstreams) {
                        table.upstreams.insert(up.addr.clone(), up.clone());
                    }
                    entry
                }
                None => Self::compile_route(&mut table, route, previous, metrics)?,
            };
            table.by_id.insert(entry.id.clone(), (index, entry.clone()));
            for host in &route.hosts {
                let host =
                    validate_host(host).map_err(|e| invalid(format!("route {}: {e}", route.id)))?;
                let (map, key) = match host.strip_prefix("*.") {
                    Some(suffix) => (&mut table.wildcard, suffix.to_owned()),
                    None => (&mut table.exact, host),
                };
                if let Some(other) = map.insert(key.clone().into(), entry.clone()) {
                    return Err(invalid(format!(
                        "host {key} belongs to both route {} and route {}",
                        other.id, route.id
                    )));
                }
            }
        }
        for challenge in &snapshot.acme_challenges {
            let token = challenge.token.as_str();
            if token.is_empty()
                || !token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(invalid(
                    "an ACME token is not base64url (RFC 8555 §8.3)".to_owned(),
                ));
            }
            table.acme.insert(
                token.into(),
                Bytes::from(challenge.key_authorization.clone()),
            );
        }
        for challenge in &snapshot.domain_challenges {
            table.domain_challenges.insert(
                challenge.token.as_str().into(),
                challenge.host.to_ascii_lowercase().into(),
            );
        }
        table.certs = CertStore::build(
            &snapshot.certificates,
            previous.map(|p| (p.snapshot.certificates.as_slice(), &p.certs)),
            metrics,
        );
        table.snapshot = Arc::new(snapshot);
        Ok(table)
    }

    /// Compiles one new or changed route; its upstreams join `table`.
    fn compile_route(
        table: &mut Table,
        route: &Route,
        previous: Option<&Table>,
        metrics: &Metrics,
    ) -> Result<Arc<RouteEntry>> {
        let mut targets = Vec::with_capacity(route.targets.len());
        for target in &route.targets {
            let prefix = normalize_prefix(&target.path_prefix).map_err(|e| {
                invalid(format!(
                    "route {}: path prefix {:?}: {e}",
                    route.id, target.path_prefix
                ))
            })?;
            if targets.iter().any(|t: &TargetEntry| *t.prefix == *prefix) {
                return Err(invalid(format!(
                    "route {}: path prefix {:?} appears twice",
                    route.id, target.path_prefix
                )));
            }
            let mut upstreams = Vec::with_capacity(target.upstreams.len());
            for addr in &target.upstreams {
                let addr = addr.trim();
                // One `Upstream` per address, shared by every route
                // naming it: one health state and one connection pool.
                let known = table
                    .upstreams
                    .get(addr)
                    .or_else(|| previous.and_then(|p| p.upstreams.get(addr)));
                let upstream = match known {
                    Some(up) => up.clone(),
                    None => Arc::new(
                        Upstream::parse(addr)
                            .map_err(|e| invalid(format!("route {}: {e}", route.id)))?,
                    ),
                };
                table.upstreams.insert(addr.into(), upstream.clone());
                upstreams.push(upstream);
            }
            let weights = check_weights(&target.weights, upstreams.len())
                .map_err(|e| invalid(format!("route {}: {e}", route.id)))?;
            targets.push(TargetEntry {
                prefix: prefix.into(),
                strip: target.strip_prefix,
                balance: target.balance,
                protocol: target.protocol,
                upstreams,
                schedule: smooth_schedule(&weights),
                weights,
                next: AtomicUsize::new(0),
            });
        }
        targets.sort_by_key(|t| std::cmp::Reverse(t.prefix.len()));
        Ok(Arc::new(RouteEntry {
            id: Arc::from(route.id.as_str()),
            redirect_https: route.redirect_https,
            targets,
            counters: metrics.route(&route.id),
        }))
    }

    /// The snapshot this table was compiled from.
    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snapshot
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// Number of routes.
    pub fn routes(&self) -> usize {
        self.snapshot.routes.len()
    }

    pub fn certs(&self) -> &CertStore {
        &self.certs
    }

    /// Whether `token` is the domain challenge of exactly `host`.
    pub fn domain_challenge(&self, host: &str, token: &str) -> bool {
        self.domain_challenges
            .get(token)
            .is_some_and(|h| h.as_ref() == host)
    }

    /// The key authorization for an ACME HTTP-01 token.
    pub fn acme(&self, token: &str) -> Option<&Bytes> {
        self.acme.get(token)
    }

    /// The route for a normalised host (see [`crate::host::Host::name`]).
    pub fn route(&self, host: &str) -> Option<&Arc<RouteEntry>> {
        if let Some(route) = self.exact.get(host) {
            return Some(route);
        }
        let (label, suffix) = host.split_once('.')?;
        if label.is_empty() {
            return None;
        }
        self.wildcard.get(suffix)
    }
}

impl RouteEntry {
    /// The target with the longest prefix matching `path`, normalised
    /// ([`crate::path::normalize`]): a raw path could climb out of a prefix.
    pub fn target(&self, path: &str) -> Option<&TargetEntry> {
        self.targets.iter().find(|t| t.matches(path))
    }
}

impl TargetEntry {
    fn matches(&self, path: &str) -> bool {
        match path.strip_prefix(&*self.prefix) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }

    /// The path to send upstream for the matched, normalised `path`: the
    /// prefix removed when configured. Always starts with `/`.
    pub fn rewrite<'a>(&self, path: &'a str) -> &'a str {
        if !self.strip {
            return path;
        }
        match path.strip_prefix(&*self.prefix) {
            Some("") => "/",
            Some(rest) if rest.starts_with('/') => rest,
            _ => path,
        }
    }

    /// Picks an upstream by the target's balance and weights: healthy ones
    /// first; when all are ejected, any.
    pub fn pick(&self) -> Option<&Arc<Upstream>> {
        let n = self.upstreams.len();
        if n <= 1 {
            return self.upstreams.first();
        }
        let tick = self.next.fetch_add(1, Ordering::Relaxed);
        let now = now_ms();
        let healthy = |i: &usize| !self.upstreams[*i].is_ejected(now);
        let picked = match (self.balance, self.schedule.len()) {
            (Balance::RoundRobin, 0) => (0..n).map(|i| (tick + i) % n).find(healthy),
            (Balance::RoundRobin, len) => (0..len)
                .map(|i| self.schedule[(tick + i) % len] as usize)
                .find(healthy),
            // Least outstanding / weight, compared by cross-multiplying.
            (Balance::LeastOutstanding, _) => (0..n)
                .map(|i| (tick + i) % n)
                .filter(healthy)
                .min_by(|&a, &b| {
                    (self.outstanding(a) * self.weight(b))
                        .cmp(&(self.outstanding(b) * self.weight(a)))
                }),
        };
        self.upstreams.get(picked.unwrap_or(tick % n))
    }

    fn outstanding(&self, i: usize) -> u64 {
        self.upstreams[i].outstanding.load(Ordering::Relaxed) as u64
    }

    fn weight(&self, i: usize) -> u64 {
        self.weights.get(i).copied().map_or(1, u64::from)
    }

    /// Another healthy upstream than `failed`, for one retry of a request
    /// that never reached `failed`.
    pub fn pick_other(&self, failed: &Upstream) -> Option<&Arc<Upstream>> {
        let now = now_ms();
        self.upstreams
            .iter()
            .filter(|u| !std::ptr::eq(u.as_ref(), failed) && !u.is_ejected(now))
            .min_by_key(|u| u.outstanding.load(Ordering::Relaxed))
    }

    pub fn upstream_count(&self) -> usize {
        self.upstreams.len()
    }
}

/// Validates a target's weights against its upstream count. All-equal
/// weights come back empty: the plain round robin needs none.
fn check_weights(weights: &[u32], upstreams: usize) -> Result<Box<[u32]>, String> {
    if weights.is_empty() {
        return Ok(Box::default());
    }
    if weights.len() != upstreams {
        return Err(format!(
            "{} weights for {upstreams} upstreams (give one per upstream, or none)",
            weights.len()
        ));
    }
    if let Some(w) = weights.iter().find(|w| !(1..=MAX_WEIGHT).contains(*w)) {
        return Err(format!("weight {w} is outside 1..={MAX_WEIGHT}"));
    }
    if weights.iter().all(|w| *w == weights[0]) {
        return Ok(Box::default());
    }
    Ok(weights.into())
}

/// One period of nginx's smooth weighted round robin over `weights`: each
/// step adds every weight to its current value, picks the largest and
/// subtracts the total from it. Heavier upstreams come more often, spread
/// out rather than in bursts. The period is the weight sum over its gcd,
/// scaled down to at most [`MAX_SCHEDULE`] steps.
fn smooth_schedule(weights: &[u32]) -> Box<[u32]> {
    if weights.is_empty() {
        return Box::default();
    }
    let mut w: Vec<u64> = weights.iter().map(|w| u64::from(*w)).collect();
    let sum: u64 = w.iter().sum();
    if sum > MAX_SCHEDULE {
        for x in &mut w {
            *x = (*x * MAX_SCHEDULE / sum).max(1);
        }
    }
    let g = w.iter().fold(0, |g, x| gcd(g, *x));
    for x in &mut w {
        *x /= g.max(1);
    }
    let total: u64 = w.iter().sum();
    let mut current = vec![0i64; w.len()];
    let mut schedule = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        let mut best = 0;
        for (i, x) in w.iter().enumerate() {
            current[i] += *x as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total as i64;
        schedule.push(u32::try_from(best).unwrap_or(0));
    }
    schedule.into()
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl Upstream {
    fn parse(addr: &str) -> Result<Self, String> {
        let authority: Authority = addr
            .parse()
            .map_err(|_| format!("upstream {addr:?} is not host:port"))?;
        if authority.port_u16().is_none() || authority.host().is_empty() {
            return Err(format!("upstream {addr:?} has no port"));
        }
        if authority.as_str().contains('@') {
            return Err(format!("upstream {addr:?} must not carry credentials"));
        }
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        Ok(Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            addr: addr.into(),
            authority,
            outstanding: AtomicUsize::new(0),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
        })
    }

    fn is_ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now
    }

    /// Whether the upstream is currently ejected.
    pub fn ejected(&self) -> bool {
        self.is_ejected(now_ms())
    }

    /// The upstream refused or timed out a connection: skip it for a
    /// while (10 s, doubling per consecutive failure, at most 60 s).
    pub fn eject(&self) {
        let now = now_ms();
        let was_ejected = self.is_ejected(now);
        let failures = self.failures.fetch_add(1, Ordering::Relaxed).min(8);
        let backoff = EJECT_BASE.saturating_mul(1 << failures).min(EJECT_MAX);
        let until = now + u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX / 2);
        self.ejected_until.store(until, Ordering::Relaxed);
        // Requests still reach an ejected upstream when it is the only one:
        // warn once per ejection, not once per refused request.
        if was_ejected {
            tracing::debug!(upstream = %self.addr, backoff_secs = backoff.as_secs(), "upstream still refusing");
        } else {
            tracing::warn!(upstream = %self.addr, backoff_secs = backoff.as_secs(), "upstream ejected");
        }
    }

    /// The upstream answered: forget earlier failures.
    pub fn healthy(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
            self.ejected_until.store(0, Ordering::Relaxed);
        }
    }
}

fn validate_host(host: &str) -> Result<String, String> {
    let lower = host.trim().trim_end_matches('.').to_ascii_lowercase();
    let name = lower.strip_prefix("*.").unwrap_or(&lower);
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if valid {
        Ok(lower)
    } else {
        Err(format!("host {host:?} is not a DNS name or *.wildcard"))
    }
}

/// A target's prefix in the form request paths are matched in: normalised
/// like them (`/a/./b/` is `/a/b`; in any other form it could never match),
/// without the trailing `/`.
fn normalize_prefix(prefix: &str) -> Result<String, crate::path::PathError> {
    let normal = crate::path::normalize(prefix)?;
    Ok(normal.trim_end_matches('/').to_owned())
}

fn invalid(msg: String) -> Error {
    Error::InvalidSnapshot(msg)
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX / 2)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::config::{Route, Target};

    fn route(id: &str, hosts: &[&str], targets: &[(&str, bool, &[&str])]) -> Route {
        Route {
            id: id.into(),
            hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
            targets: targets
                .iter()
                .map(|(p, strip, ups)| Target {
                    path_prefix: (*p).to_owned(),
                    strip_prefix: *strip,
                    upstreams: ups.iter().map(|u| (*u).to_owned()).collect(),
                    weights: Vec::new(),
                    balance: Balance::RoundRobin,
                    protocol: UpstreamProtocol::Http1,
                })
                .collect(),
            redirect_https: false,
        }
    }

    fn compile(routes: Vec<Route>) -> Result<Table> {
        let snapshot = Snapshot {
            version: 1,
            routes,
            ..Snapshot::default()
        };
        Table::compile(snapshot, None, &Metrics::default())
    }

    #[test]
    fn routes_naming_one_address_share_its_health_and_pool_key() {
        let t = compile(vec![
            route("a", &["a.example"], &[("/", false, &["10.0.0.1:80"])]),
            route(
                "b",
                &["b.example"],
                &[("/", false, &["10.0.0.1:80", "10.0.0.2:80"])],
            ),
        ])
        .unwrap();
        let a = t
            .route("a.example")
            .unwrap()
            .target("/")
            .unwrap()
            .pick()
            .unwrap()
            .clone();
        let b = &t.route("b.example").unwrap().target("/").unwrap().upstreams;
        assert!(Arc::ptr_eq(&a, &b[0]));
        assert_ne!(b[0].id, b[1].id);
        a.eject();
        assert!(
            b[0].ejected(),
            "an ejection holds for every route of the address"
        );
    }

    #[test]
    fn exact_beats_wildcard_and_wildcard_is_one_label() {
        let t = compile(vec![
            route("w", &["*.Example.com"], &[("/", false, &["10.0.0.1:80"])]),
            route("e", &["app.example.com"], &[("/", false, &["10.0.0.2:80"])]),
        ])
        .unwrap();
        assert_eq!(&*t.route("app.example.com").unwrap().id, "e");
        assert_eq!(&*t.route("x.example.com").unwrap().id, "w");
        assert!(t.route("a.b.example.com").is_none());
        assert!(t.route("example.com").is_none());
    }

    #[test]
    fn longest_prefix_on_segment_boundaries_with_strip() {
        let t = compile(vec![route(
            "r",
            &["a.test"],
            &[
                ("/", false, &["10.0.0.1:80"]),
                ("/api", true, &["10.0.0.2:80"]),
                ("/api/v2/", false, &["10.0.0.3:80"]),
            ],
        )])
        .unwrap();
        let r = t.route("a.test").unwrap();
        let up = |p: &str| r.target(p).unwrap().pick().unwrap().addr.to_string();
        assert_eq!(up("/apix"), "10.0.0.1:80");
        assert_eq!(up("/api"), "10.0.0.2:80");
        assert_eq!(up("/api/users"), "10.0.0.2:80");
        assert_eq!(up("/api/v2"), "10.0.0.3:80");
        assert_eq!(up("/api/v2/x"), "10.0.0.3:80");
        let api = r.target("/api/users").unwrap();
        assert_eq!(api.rewrite("/api/users"), "/users");
        assert_eq!(api.rewrite("/api"), "/");
        assert_eq!(api.rewrite("/api/"), "/");
        assert_eq!(r.target("/").unwrap().rewrite("/x"), "/x");
    }

    #[test]
    fn prefixes_are_normalised_like_request_paths() {
        let t = compile(vec![route(
            "r",
            &["a.test"],
            &[
                ("/", false, &["10.0.0.1:80"]),
                ("/a/./b//", true, &["10.0.0.2:80"]),
                ("/%7Euser", false, &["10.0.0.3:80"]),
            ],
        )])
        .unwrap();
        let r = t.route("a.test").unwrap();
        let up = |p: &str| r.target(p).unwrap().pick().unwrap().addr.to_string();
        assert_eq!(up("/a/b/c"), "10.0.0.2:80");
        assert_eq!(r.target("/a/b/c").unwrap().rewrite("/a/b/c"), "/c");
        assert_eq!(up("/~user/x"), "10.0.0.3:80");
        // One that no normalised path could match is refused, saying why.
        let err = compile(vec![route("r", &["a.test"], &[("/a%2Fb", false, &[])])])
            .unwrap_err()
            .to_string();
        assert!(err.contains("route r") && err.contains("%2F"), "{err}");
    }

    #[test]
    fn invalid_snapshots_are_rejected() {
        for bad in [
            vec![route("", &["a.test"], &[])],
            vec![route("r", &["a b"], &[])],
            vec![route("r", &["a.*.test"], &[])],
            vec![route("r", &["a.test"], &[("api", false, &[])])],
            vec![route("r", &["a.test"], &[("/", false, &["nohost"])])],
            vec![route("r", &["a.test"], &[("/", false, &["u:p@h:80"])])],
            vec![route("r", &["a.test"], &[]), route("s", &["A.test"], &[])],
        ] {
            assert!(compile(bad.clone()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn round_robin_skips_ejected_until_all_are() {
        let t = compile(vec![route(
            "r",
            &["a.test"],
            &[("/", false, &["10.0.0.1:80", "10.0.0.2:80"])],
        )])
        .unwrap();
        let target = t.route("a.test").unwrap().target("/").unwrap();
        let picks: Vec<_> = (0..4)
            .map(|_| target.pick().unwrap().addr.to_string())
            .collect();
        assert_eq!(
            picks,
            ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.1:80", "10.0.0.2:80"]
        );
        target.upstreams[0].eject();
        assert!((0..4).all(|_| &*target.pick().unwrap().addr == "10.0.0.2:80"));
        target.upstreams[1].eject();
        assert!(target.pick().is_some());
        target.upstreams[0].healthy();
        assert!(!target.upstreams[0].ejected());
    }

    fn weighted(ups: &[&str], weights: &[u32], balance: Balance) -> Result<Table> {
        let mut r = route("r", &["a.test"], &[("/", false, ups)]);
        r.targets[0].weights = weights.to_vec();
        r.targets[0].balance = balance;
        compile(vec![r])
    }

    #[test]
    fn smooth_weighted_round_robin_follows_nginx() {
        // nginx's documented sequence for weights 5, 1, 1.
        assert_eq!(&*smooth_schedule(&[5, 1, 1]), &[0, 0, 1, 0, 2, 0, 0]);
        // Reduced by the gcd: 30:10 is 3:1, spread out.
        assert_eq!(&*smooth_schedule(&[30, 10]), &[0, 0, 1, 0]);
        // Large sums are scaled to at most MAX_SCHEDULE steps, and a
        // light upstream keeps at least one slot.
        let big = smooth_schedule(&[10_000, 1, 5_000]);
        assert!(big.len() as u64 <= MAX_SCHEDULE, "{}", big.len());
        let count = |i| big.iter().filter(|x| **x == i).count();
        assert_eq!(count(1), 1);
        assert!((count(0) as f64 / count(2) as f64 - 2.0).abs() < 0.01);
    }

    #[test]
    fn weighted_round_robin_shares_and_skips_ejected() {
        let t = weighted(
            &["10.0.0.1:80", "10.0.0.2:80"],
            &[3, 1],
            Balance::RoundRobin,
        )
        .unwrap();
        let target = t.route("a.test").unwrap().target("/").unwrap();
        let picks: Vec<_> = (0..400).map(|_| target.pick().unwrap().id).collect();
        let heavy = picks
            .iter()
            .filter(|id| **id == target.upstreams[0].id)
            .count();
        assert_eq!(heavy, 300);
        target.upstreams[0].eject();
        assert!((0..8).all(|_| &*target.pick().unwrap().addr == "10.0.0.2:80"));
        target.upstreams[1].eject();
        assert!(target.pick().is_some(), "all ejected: still answers");
    }

    #[test]
    fn equal_weights_are_plain_round_robin() {
        let t = weighted(
            &["10.0.0.1:80", "10.0.0.2:80"],
            &[7, 7],
            Balance::RoundRobin,
        )
        .unwrap();
        let target = t.route("a.test").unwrap().target("/").unwrap();
        assert!(target.schedule.is_empty() && target.weights.is_empty());
    }

    #[test]
    fn weighted_least_outstanding_divides_by_weight() {
        let t = weighted(
            &["10.0.0.1:80", "10.0.0.2:80"],
            &[3, 1],
            Balance::LeastOutstanding,
        )
        .unwrap();
        let target = t.route("a.test").unwrap().target("/").unwrap();
        let set = |i: usize, n| target.upstreams[i].outstanding.store(n, Ordering::Relaxed);
        // 2/3 < 1/1: the heavy one still has room.
        set(0, 2);
        set(1, 1);
        assert!((0..4).all(|_| &*target.pick().unwrap().addr == "10.0.0.1:80"));
        // 4/3 > 1/1.
        set(0, 4);
        assert!((0..4).all(|_| &*target.pick().unwrap().addr == "10.0.0.2:80"));
    }

    #[test]
    fn bad_weights_are_rejected_naming_the_route() {
        let ups = ["10.0.0.1:80", "10.0.0.2:80"];
        for (weights, needle) in [
            (&[1][..], "1 weights for 2 upstreams"),
            (&[0, 1][..], "weight 0"),
            (&[1, MAX_WEIGHT + 1][..], "weight 10001"),
        ] {
            let err = weighted(&ups, weights, Balance::RoundRobin)
                .unwrap_err()
                .to_string();
            assert!(err.contains("route r") && err.contains(needle), "{err}");
        }
    }

    #[test]
    fn unchanged_routes_keep_their_entries_across_a_compile() {
        let ups: &[&str] = &["10.0.0.1:80", "10.0.0.2:80"];
        let routes = |b_port: &'static str| {
            vec![
                route("a", &["a.test"], &[("/", false, ups)]),
                route("b", &["b.test"], &[("/", false, &[b_port])]),
            ]
        };
        let first = compile(routes("10.0.0.9:80")).unwrap();
        let a = first.route("a.test").unwrap().clone();
        a.target("/").unwrap().pick();
        // b changes and a route is inserted before a: a is still reused.
        let mut next = routes("10.0.0.9:81");
        next.insert(
            0,
            route("c", &["c.test"], &[("/", false, &["10.0.0.3:80"])]),
        );
        let snapshot = Snapshot {
            version: 2,
            routes: next,
            ..Snapshot::default()
        };
        let second = Table::compile(snapshot, Some(&first), &Metrics::default()).unwrap();
        assert!(Arc::ptr_eq(&a, second.route("a.test").unwrap()));
        assert!(!Arc::ptr_eq(
            first.route("b.test").unwrap(),
            second.route("b.test").unwrap()
        ));
        // Round robin continues where it was.
        let next_pick = second.route("a.test").unwrap().target("/").unwrap().pick();
        assert_eq!(&*next_pick.unwrap().addr, "10.0.0.2:80");
        // Reused upstreams stay known to the next compile.
        assert!(second.upstreams.contains_key("10.0.0.1:80"));
        assert_eq!(
            &*second.route("b.test").unwrap().targets[0].upstreams[0].addr,
            "10.0.0.9:81"
        );
        // A reused entry still lives under every one of its hosts.
        assert_eq!(second.by_id.len(), 3);
    }
}
