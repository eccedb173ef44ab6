//! Hand-rolled Prometheus counters for the data plane. Every hot-path
//! update is a relaxed atomic add on a counter the request already holds a
//! pointer to (no map lookup, no lock).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram buckets.
const LATENCY_BUCKETS: [f64; 12] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Why a request could not be served by its upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamError {
    /// Refused, unreachable or unresolvable (502).
    Connect,
    /// Connect or response-header timeout (504).
    Timeout,
    /// The upstream broke the protocol or closed mid-response (502).
    Protocol,
    /// The target has no upstream at all (503).
    NoUpstream,
}

impl UpstreamError {
    const ALL: [Self; 4] = [
        Self::Connect,
        Self::Timeout,
        Self::Protocol,
        Self::NoUpstream,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Protocol => "protocol",
            Self::NoUpstream => "no_upstream",
        }
    }
}

/// Requests of one route by status class (1xx..5xx).
#[derive(Debug, Default)]
pub struct RouteCounters {
    by_class: [AtomicU64; 5],
}

impl RouteCounters {
    /// Counts one answered request.
    pub fn record(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
    }

    /// Requests answered with status class `class` (1..=5).
    pub fn get(&self, class: usize) -> u64 {
        self.by_class
            .get(class.wrapping_sub(1))
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

/// All data-plane metrics of one proxy.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Version of the snapshot in use.
    pub feed_version: AtomicU64,
    /// Milliseconds between the api's commit and the proxy applying it
    /// (set by the feed, 0 when unknown).
    pub feed_lag_ms: AtomicU64,
    /// Routes in the current table.
    pub routes: AtomicU64,
    /// Snapshots applied since start.
    pub snapshots_applied: AtomicU64,
    /// Requests for hosts no route matches.
    pub unrouted: RouteCounters,
    /// Certificates in the snapshot that could not be loaded.
    pub bad_certificates: AtomicU64,
    routes_by_id: Mutex<HashMap<Arc<str>, Arc<RouteCounters>>>,
    latency: Histogram,
    upstream_errors: [AtomicU64; UpstreamError::ALL.len()],
}

impl Metrics {
    /// The counters of route `id`, shared across table swaps.
    pub fn route(&self, id: &str) -> Arc<RouteCounters> {
        let mut routes = self
            .routes_by_id
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(counters) = routes.get(id) {
            return counters.clone();
        }
        let counters = Arc::new(RouteCounters::default());
        routes.insert(Arc::from(id), counters.clone());
        counters
    }

    /// Records the time to the response head of one proxied request.
    pub fn observe_latency(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            self.latency.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.latency.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.latency.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Counts one upstream failure.
    pub fn upstream_error(&self, kind: UpstreamError) {
        self.upstream_errors[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Upstream failures of `kind` so far.
    pub fn upstream_errors(&self, kind: UpstreamError) -> u64 {
        self.upstream_errors[kind as usize].load(Ordering::Relaxed)
    }

    /// Appends the data-plane metrics in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP ferry_proxy_route_requests_total Proxied requests by route and status class.\n\
             # TYPE ferry_proxy_route_requests_total counter"
        );
        let mut routes: Vec<(Arc<str>, Arc<RouteCounters>)> = self
            .routes_by_id
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        routes.sort_by(|a, b| a.0.cmp(&b.0));
        let unrouted: (Arc<str>, &RouteCounters) = (Arc::from(""), &self.unrouted);
        for (id, counters) in routes
            .iter()
            .map(|(k, v)| (k.clone(), v.as_ref()))
            .chain(std::iter::once(unrouted))
        {
            for class in 1..=5 {
                let n = counters.get(class);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "ferry_proxy_route_requests_total{{route=\"{}\",class=\"{class}xx\"}} {n}",
                        escape(&id)
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP ferry_proxy_request_duration_seconds Time from request to upstream response head.\n\
             # TYPE ferry_proxy_request_duration_seconds histogram"
        );
        let mut cumulative = 0;
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.latency.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "ferry_proxy_request_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.latency.count.load(Ordering::Relaxed);
        let sum = self.latency.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "ferry_proxy_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}\n\
             ferry_proxy_request_duration_seconds_sum {sum}\n\
             ferry_proxy_request_duration_seconds_count {count}"
        );
        let _ = writeln!(
            out,
            "# HELP ferry_proxy_upstream_errors_total Upstream failures by kind.\n\
             # TYPE ferry_proxy_upstream_errors_total counter"
        );
        for kind in UpstreamError::ALL {
            let _ = writeln!(
                out,
                "ferry_proxy_upstream_errors_total{{kind=\"{}\"}} {}",
                kind.label(),
                self.upstream_errors(kind)
            );
        }
        let gauges = [
            (
                "ferry_proxy_feed_version",
                "gauge",
                "Version of the routing snapshot in use.",
                &self.feed_version,
            ),
            (
                "ferry_proxy_feed_lag_milliseconds",
                "gauge",
                "Delay between the api committing a change and the proxy applying it.",
                &self.feed_lag_ms,
            ),
            (
                "ferry_proxy_routes",
                "gauge",
                "Routes in the routing table.",
                &self.routes,
            ),
            (
                "ferry_proxy_snapshots_applied_total",
                "counter",
                "Routing snapshots applied since start.",
                &self.snapshots_applied,
            ),
            (
                "ferry_proxy_bad_certificates",
                "gauge",
                "Certificates in the snapshot that could not be loaded.",
                &self.bad_certificates,
            ),
        ];
        for (name, kind, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
    }
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
