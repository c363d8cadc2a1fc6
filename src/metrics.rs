//! Prometheus metrics, served as text on the admin port (`/metrics`).
//!
//! One [`Metrics`] per process, shared by the gateway, the stream limiters,
//! the janitor and the RPC edge. Families are labelled by scheme (never by
//! path or session, which would make unbounded series).

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SchemeLabel {
    pub scheme: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabel {
    pub method: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

type Latency = Family<SchemeLabel, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.5 ms to about 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every metric sluice exports.
pub struct Metrics {
    registry: Registry,
    pub bytes_written: Family<SchemeLabel, Counter>,
    pub bytes_read: Family<SchemeLabel, Counter>,
    pub sessions_open: Family<SchemeLabel, Gauge>,
    pub rpcs: Family<RpcLabel, Counter>,
    pub persist_seconds: Latency,
    pub commit_seconds: Latency,
    pub limiter_waits: Family<SchemeLabel, Counter>,
    pub limiter_timeouts: Family<SchemeLabel, Counter>,
    pub janitor_removed: Family<KindLabel, Counter>,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("sluice");
        let m = Metrics {
            bytes_written: Family::default(),
            bytes_read: Family::default(),
            sessions_open: Family::default(),
            rpcs: Family::default(),
            persist_seconds: Family::new_with_constructor(latency_histogram),
            commit_seconds: Family::new_with_constructor(latency_histogram),
            limiter_waits: Family::default(),
            limiter_timeouts: Family::default(),
            janitor_removed: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "bytes_written",
            "Bytes appended by Write",
            m.bytes_written.clone(),
        );
        registry.register("bytes_read", "Bytes streamed by Read", m.bytes_read.clone());
        registry.register(
            "sessions_open",
            "Live write sessions",
            m.sessions_open.clone(),
        );
        registry.register(
            "rpcs",
            "RPCs answered, by method and status code",
            m.rpcs.clone(),
        );
        registry.register(
            "persist_seconds",
            "Persist latency",
            m.persist_seconds.clone(),
        );
        registry.register("commit_seconds", "Commit latency", m.commit_seconds.clone());
        registry.register(
            "limiter_waits",
            "Streams that had to wait for a slot (fs.<scheme>.limit.*)",
            m.limiter_waits.clone(),
        );
        registry.register(
            "limiter_timeouts",
            "Streams refused after fs.<scheme>.limit.timeout",
            m.limiter_timeouts.clone(),
        );
        registry.register(
            "janitor_removed",
            "Abandoned staging removed by the janitor, by kind",
            m.janitor_removed.clone(),
        );
        Arc::new(Metrics { registry, ..m })
    }

    pub fn scheme(scheme: &str) -> SchemeLabel {
        SchemeLabel {
            scheme: scheme.to_string(),
        }
    }

    /// What the janitor removed of `kind` (`upload`, `tail_object`,
    /// `temp_file`) since start.
    pub fn janitor_removed(&self, kind: &str) -> u64 {
        self.janitor_removed
            .get_or_create(&KindLabel {
                kind: kind.to_string(),
            })
            .get()
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
