//! Logging and tracing set-up.
//!
//! Logs go to stdout as text or JSON, filtered by an `EnvFilter` (`RUST_LOG`).
//! Spans are exported over OTLP/gRPC only when `OTEL_EXPORTER_OTLP_ENDPOINT`
//! is set: a batch exporter without a collector blocks for seconds on
//! shutdown, so none is built otherwise.
//!
//! Trace context travels between services as W3C `traceparent` gRPC
//! metadata: servers read it in [`grpc_request_span`], clients add it with
//! [`inject_context`] or the [`TraceContextInterceptor`].

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tonic::codegen::http;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _, Registry};

use crate::{Error, Result};

/// Environment variable that turns OTLP export on.
pub const ENV_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Keeps the tracer provider alive; flushes and shuts exporting down on drop.
#[must_use = "dropping the guard stops span export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl std::fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryGuard")
            .field("otlp", &self.provider.is_some())
            .finish()
    }
}

impl TelemetryGuard {
    /// Whether spans are exported over OTLP.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            // The subscriber may already be gone; stderr always works.
            if let Err(err) = provider.shutdown() {
                eprintln!("telemetry: flushing spans failed: {err}");
            }
        }
    }
}

/// Installs the global `tracing` subscriber for `service_name`.
///
/// `filter` is an `EnvFilter` directive string (the `--log-filter` flag,
/// which defaults to `RUST_LOG` or `info`). Must run inside a Tokio runtime
/// when OTLP export is on. Fails if a global subscriber is already set.
pub fn init_tracing(
    service_name: &'static str,
    format: LogFormat,
    filter: &str,
) -> Result<TelemetryGuard> {
    let filter = EnvFilter::try_new(filter)
        .map_err(|e| Error::Telemetry(format!("invalid log filter {filter:?}: {e}")))?;
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    type Sub = tracing_subscriber::layer::Layered<EnvFilter, Registry>;
    let mut layers: Vec<Box<dyn tracing_subscriber::Layer<Sub> + Send + Sync>> = Vec::new();
    layers.push(match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_target(true)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    });

    let provider = match std::env::var(ENV_OTLP_ENDPOINT) {
        Ok(endpoint) if !endpoint.trim().is_empty() => Some(otlp_provider(service_name)?),
        _ => None,
    };
    if let Some(provider) = &provider {
        layers.push(
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer(service_name))
                .boxed(),
        );
    }

    tracing_subscriber::registry()
        .with(filter)
        .with(layers)
        .try_init()
        .map_err(|e| Error::Telemetry(format!("a tracing subscriber is already installed: {e}")))?;
    if provider.is_some() {
        tracing::info!(service = service_name, "exporting traces over OTLP");
    }
    Ok(TelemetryGuard { provider })
}

fn otlp_provider(service_name: &'static str) -> Result<SdkTracerProvider> {
    // The exporter reads OTEL_EXPORTER_OTLP_* itself (endpoint, headers, timeout).
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .map_err(|e| Error::Telemetry(format!("OTLP exporter: {e}")))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service_name)
        .build();
    Ok(SdkTracerProvider::builder()
        .with_resource(resource)
        .with_batch_exporter(exporter)
        .build())
}

/// The span every incoming RPC runs in (used as tonic's `trace_fn`).
///
/// Links to the caller's trace from the W3C `traceparent` header; the
/// caller's trace id is also recorded as a field so logs correlate even when
/// no OTLP exporter is configured.
pub fn grpc_request_span(request: &http::Request<()>) -> tracing::Span {
    let headers = HeaderExtractor(request.headers());
    let trace_id = headers.get("traceparent").and_then(traceparent_trace_id);
    let span = tracing::info_span!(
        "grpc",
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.method = %request.uri().path(),
        trace_id = tracing::field::Empty,
    );
    if let Some(id) = trace_id {
        span.record("trace_id", id);
    }
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&headers));
    // Fails only when no OpenTelemetry layer is installed, which is normal without OTLP.
    let _ = span.set_parent(parent);
    span
}

/// Adds the current span's trace context (`traceparent`, `tracestate`) to
/// outgoing gRPC metadata.
pub fn inject_context(metadata: &mut MetadataMap) {
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut MetadataInjector(metadata));
    });
}

/// A tonic client interceptor that calls [`inject_context`] on every request.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceContextInterceptor;

impl tonic::service::Interceptor for TraceContextInterceptor {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        inject_context(request.metadata_mut());
        Ok(request)
    }
}

/// The trace id of a W3C `traceparent` value (`00-<32 hex>-<16 hex>-<2 hex>`),
/// when well formed and not all zeros.
pub fn traceparent_trace_id(value: &str) -> Option<&str> {
    let mut parts = value.trim().split('-');
    let (version, trace_id, span_id, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    let valid = hex(version, 2)
        && version != "ff"
        && hex(trace_id, 32)
        && hex(span_id, 16)
        && hex(flags, 2)
        && trace_id.bytes().any(|b| b != b'0');
    valid.then_some(trace_id)
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_parsed_strictly() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(
            traceparent_trace_id(&format!("00-{id}-00f067aa0ba902b7-01")),
            Some(id)
        );
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert_eq!(traceparent_trace_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn request_span_reads_traceparent_header() {
        let request = http::Request::builder()
            .uri("/ferry.v1.SystemService/GetServerInfo")
            .header(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .body(())
            .unwrap();
        let headers = HeaderExtractor(request.headers());
        assert_eq!(
            headers.get("traceparent").and_then(traceparent_trace_id),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(headers.keys(), vec!["traceparent"]);
        // Building the span must not panic without a subscriber.
        let _span = grpc_request_span(&request);
    }

    #[test]
    fn injector_writes_metadata() {
        let mut md = MetadataMap::new();
        MetadataInjector(&mut md).set("traceparent", "00-ab-cd-01".into());
        MetadataInjector(&mut md).set("bad key\n", "x".into());
        assert_eq!(md.get("traceparent").unwrap(), "00-ab-cd-01");
        assert_eq!(md.len(), 1);
    }
}
