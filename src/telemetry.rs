//! OpenTelemetry traces over OTLP/gRPC.
//!
//! On when `OTEL_EXPORTER_OTLP_ENDPOINT` (or the config key
//! `otel.exporter.otlp.endpoint`) is set; otherwise no exporter, no
//! propagation, no cost. The service name and resource come from
//! `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` (or `otel.service.name`).
//! The caller's W3C `traceparent`, `tracestate` and baggage become the
//! parent of the RPC's span (see `edge::rpc_span`), so a job's trace shows
//! its writes. [`Telemetry::shutdown`] flushes what is still buffered.

use std::sync::OnceLock;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;

use crate::error::{Error, Result};

/// Set once telemetry is on; the edge extracts trace context only then.
static ON: OnceLock<()> = OnceLock::new();

/// Whether spans are exported (and callers' trace context is honoured).
pub fn enabled() -> bool {
    ON.get().is_some()
}

/// The tracer provider, when telemetry is on.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Off: nothing is exported.
    pub fn off() -> Telemetry {
        Telemetry { provider: None }
    }

    /// Starts exporting to `endpoint` (e.g. `http://127.0.0.1:4317`).
    pub fn otlp(endpoint: &str, service_name: Option<&str>) -> Result<Telemetry> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .map_err(|e| {
                Error::InvalidArgument(format!(
                    "cannot export traces to {endpoint}: {e}; check OTEL_EXPORTER_OTLP_ENDPOINT"
                ))
            })?;
        let mut resource = opentelemetry_sdk::Resource::builder();
        if let Some(name) = service_name {
            resource = resource.with_service_name(name.to_string());
        } else if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name("sluice");
        }
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build();
        opentelemetry::global::set_text_map_propagator(
            opentelemetry::propagation::TextMapCompositePropagator::new(vec![
                Box::new(opentelemetry_sdk::propagation::TraceContextPropagator::new()),
                Box::new(opentelemetry_sdk::propagation::BaggagePropagator::new()),
            ]),
        );
        let _ = ON.set(());
        Ok(Telemetry {
            provider: Some(provider),
        })
    }

    /// The `tracing` layer that turns spans into OpenTelemetry spans.
    pub fn layer<S>(&self) -> Option<impl tracing_subscriber::Layer<S> + use<S>>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        use tracing_subscriber::Layer as _;
        let provider = self.provider.as_ref()?;
        // Only sluice's own spans: the HTTP/2 stack's (the exporter's too)
        // would flood the exporter, and feed back into it.
        let only_sluice =
            tracing_subscriber::filter::Targets::new().with_target("sluice", tracing::Level::INFO);
        Some(
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("sluice"))
                .with_filter(only_sluice),
        )
    }

    /// Exports what is buffered and stops. The SDK blocks while it
    /// flushes, and its exporter needs the runtime: so off a worker thread.
    pub async fn shutdown(&self) {
        let Some(provider) = self.provider.clone() else {
            return;
        };
        match tokio::task::spawn_blocking(move || provider.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("sluice: flushing telemetry failed: {e}"),
            Err(e) => eprintln!("sluice: flushing telemetry failed: {e}"),
        }
    }

    /// Telemetry as the environment and `config` ask: on when an OTLP
    /// endpoint is named (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, or `otel.exporter.otlp.endpoint`).
    pub fn from_env(config: &crate::config::Config) -> Result<Telemetry> {
        let endpoint = std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT"))
            .ok()
            .filter(|e| !e.is_empty())
            .or_else(|| config.otel_endpoint.clone());
        match endpoint {
            Some(endpoint) => Telemetry::otlp(&endpoint, config.otel_service_name.as_deref()),
            None => Ok(Telemetry::off()),
        }
    }
}

/// Reads W3C trace context and baggage from gRPC metadata (HTTP headers).
struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Makes the caller's trace (if any) the parent of `span`.
pub fn adopt_caller_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let context =
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)));
    let _ = span.set_parent(context);
}
