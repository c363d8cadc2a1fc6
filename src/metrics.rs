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
    /// Stagings past `janitor.ttl` that the last sweep could not remove
    /// (the store refused or was down): a backlog that grows is an alert.
    pub janitor_pending: Gauge,
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
            janitor_pending: Gauge::default(),
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
        registry.register(
            "janitor_pending",
            "Stagings past janitor.ttl that the last sweep failed to remove",
            m.janitor_pending.clone(),
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
        prometheus_client::encoding::text::encode_registry(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        process_metrics(&mut out);
        prometheus_client::encoding::text::encode_eof(&mut out)
            .expect("writing to a String cannot fail");
        out
    }
}

/// The process's CPU time, memory and descriptors under the names every
/// Prometheus client library uses (`process_*`), read from `/proc` at
/// scrape time. Nothing is written where `/proc` is missing.
fn process_metrics(out: &mut String) {
    use std::fmt::Write;
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // Fields after the command name, which is in parentheses and may hold
    // spaces: utime and stime are fields 14 and 15, starttime 22, rss 24.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<f64>().ok());
    // SAFETY: sysconf only reads a constant of the running system.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK) as f64,
            libc::sysconf(libc::_SC_PAGESIZE) as f64,
        )
    };
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    });
    let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}.\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    if let (Some(user), Some(system)) = (field(14), field(15)) {
        metric(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds",
            (user + system) / ticks,
        );
    }
    if let Some(rss) = field(24) {
        metric(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes",
            rss * page,
        );
    }
    if let (Some(start), Some(boot)) = (field(22), boot) {
        metric(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds",
            boot + start / ticks,
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        metric(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors",
            fds.count() as f64,
        );
    }
}
