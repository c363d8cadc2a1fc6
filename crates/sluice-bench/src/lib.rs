//! `sluice-bench`: measures sluice against baselines run in the same run,
//! with the same bytes and the same chunking.
//!
//! It starts the `sluice` binary (found beside its own executable, or
//! `--sluice`) as a child process on a fresh data dir, drives it over gRPC
//! with [`sluice_client`], and reads the server's peak RSS and CPU time from
//! `/proc`. The baselines:
//! 1. the transport ceiling: the same client streaming the same bytes to a
//!    sink (`sluice-bench sink`, also a child process, with the server's
//!    HTTP/2 settings) that only counts them;
//! 2. `file://`: the same file written with `std::fs`, `fsync` at the same
//!    persist points, then renamed;
//! 3. object stores: the same upload done directly with object_store's
//!    multipart API, with sluice's part size and concurrency, waiting for
//!    the parts in flight at the same persist points;
//! 4. `hdfs://`: the same file written directly with hdfs-native (the
//!    client crate sluice uses), `hsync` at the same persist points, closed
//!    and renamed;
//! 5. with `--flink`: Flink's own recoverable writers in a JVM (file://,
//!    flink-s3-fs-hadoop's on s3://, flink-gs-fs-hadoop's on gs://), the
//!    same bytes and persist points, then commit.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tonic::{Request, Response, Status, Streaming};

use sluice_client::{Client, ClientOptions};
use sluice_proto::storage_gateway_server::{StorageGateway, StorageGatewayServer};
use sluice_proto::*;

pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

mod child;
mod count;
mod report;
mod runs;
mod sink;
pub mod soak;

pub use child::*;
pub use count::*;
pub use report::*;
pub use runs::*;
pub use sink::*;

pub type BenchResult<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// What one run writes.
#[derive(Clone, Debug, Serialize)]
pub struct Workload {
    pub writers: usize,
    pub file_size: u64,
    pub chunk: usize,
    /// Bytes between persists; 0: none.
    pub persist_every: u64,
    pub files_per_writer: usize,
    /// Each writer on a connection of its own (default: one shared).
    pub connection_per_writer: bool,
}

impl Workload {
    pub fn total(&self) -> u64 {
        self.file_size * (self.writers * self.files_per_writer) as u64
    }

    /// The persist points of one file of this workload.
    pub fn persist_points(&self) -> PersistPoints {
        PersistPoints {
            every: self.persist_every,
            next: self.persist_every,
            size: self.file_size,
        }
    }
}

/// Where a writer persists one file: each time `every` more bytes are
/// written, never at the file's end (the commit covers that), never with
/// `every` 0. The same points for sluice and every baseline.
pub struct PersistPoints {
    every: u64,
    next: u64,
    size: u64,
}

impl PersistPoints {
    /// Whether a persist is due now that `written` bytes are written.
    pub fn due(&mut self, written: u64) -> bool {
        let due = self.every > 0 && written >= self.next && written < self.size;
        if due {
            self.next += self.every;
        }
        due
    }
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Option<Latency> {
        (!h.is_empty()).then(|| Latency {
            count: h.len(),
            p50_ms: h.value_at_quantile(0.50) as f64 / 1000.0,
            p99_ms: h.value_at_quantile(0.99) as f64 / 1000.0,
            max_ms: h.max() as f64 / 1000.0,
        })
    }
}

/// One measured run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Run {
    pub bytes: u64,
    pub seconds: f64,
    pub mib_per_s: f64,
    pub persist: Option<Latency>,
    pub commit: Option<Latency>,
    /// Peak RSS of the server process during the run, above its RSS before.
    pub server_peak_rss_above_start_mib: Option<f64>,
    pub server_peak_rss_mib: Option<f64>,
    /// Server CPU (user + system) per GiB written; for a baseline, the CPU
    /// of the process that writes (see `Bench::baseline`).
    pub server_cpu_s_per_gib: Option<f64>,
    /// Minor page faults of the same process per GiB written: pages it
    /// touched for the first time, each a trap (and on a VM, possibly the
    /// host backing the page again).
    pub server_minor_faults_per_gib: Option<f64>,
}

impl Run {
    /// A run that moved `bytes` in `seconds`; the other figures are added
    /// by whoever measures them.
    fn timed(bytes: u64, seconds: f64) -> Run {
        Run {
            bytes,
            seconds,
            mib_per_s: bytes as f64 / MIB as f64 / seconds,
            ..Run::default()
        }
    }
}

/// A scenario: sluice and its baseline, run alternately `runs` times.
#[derive(Clone, Debug, Serialize)]
pub struct Scenario {
    pub name: String,
    pub target: String,
    pub workload: Workload,
    pub baseline_name: String,
    pub sluice: Vec<Run>,
    pub baseline: Vec<Run>,
    pub sluice_median_mib_per_s: f64,
    pub baseline_median_mib_per_s: f64,
    /// sluice / baseline, from the medians.
    pub ratio: f64,
    /// What the issue asks of the ratio (or of the figure it names).
    pub goal: String,
}

/// A figure that is not a throughput ratio.
#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: String,
    pub goal: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub machine: String,
    pub runs: usize,
    pub scenarios: Vec<Scenario>,
    /// Aggregate MiB/s on memory:// by number of writers.
    pub concurrency: Vec<(usize, f64)>,
    pub figures: Vec<Figure>,
}

pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Where the `sluice` binary is: `--sluice`, else beside this executable.
pub fn find_sluice(given: Option<PathBuf>) -> BenchResult<PathBuf> {
    if let Some(path) = given {
        return Ok(path);
    }
    let beside = std::env::current_exe()?.with_file_name("sluice");
    if beside.is_file() {
        return Ok(beside);
    }
    Err(format!(
        "no sluice binary beside {}; build it (cargo build --release) or pass --sluice PATH",
        std::env::current_exe()?.display()
    )
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due_at(file_size: u64, persist_every: u64, chunk: u64) -> Vec<u64> {
        let w = Workload {
            writers: 1,
            file_size,
            chunk: chunk as usize,
            persist_every,
            files_per_writer: 1,
            connection_per_writer: false,
        };
        let mut points = w.persist_points();
        let mut at = Vec::new();
        let mut written = 0;
        while written < file_size {
            written = (written + chunk).min(file_size);
            if points.due(written) {
                at.push(written);
            }
        }
        at
    }

    #[test]
    fn persist_points_fall_every_n_bytes_but_never_at_the_end() {
        assert_eq!(due_at(11, 3, 1), [3, 6, 9]);
        assert_eq!(due_at(12, 4, 1), [4, 8]);
        // Chunks larger than the interval: one persist per chunk at most.
        assert_eq!(due_at(12, 2, 5), [5, 10]);
        assert_eq!(due_at(12, 0, 1), Vec::<u64>::new());
    }
}
