//! The soak: many writers persisting on `file://` for a long time, with the
//! server's RSS, file descriptors and Persist latency sampled at a fixed
//! interval. A gateway that leaks, wedges or slows down over time shows it
//! here: the samples must stay flat.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::{BenchResult, chunk_data, start_sluice};
use sluice_client::{Client, ClientOptions};
use sluice_proto::DeleteRequest;

/// What the soak runs.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    pub writers: usize,
    pub duration: Duration,
    pub interval: Duration,
    pub chunk: usize,
    /// Bytes between persists.
    pub persist_every: u64,
    /// Bytes per file; then it is committed and deleted, and the writer
    /// starts the next.
    pub file_size: u64,
}

/// One sample of the server.
#[derive(Debug, Clone, Serialize)]
pub struct SoakSample {
    pub at_s: f64,
    pub rss_mib: f64,
    pub fds: usize,
    /// Persists answered in this interval.
    pub persists: u64,
    pub persist_p50_ms: f64,
    pub persist_p99_ms: f64,
    pub persist_max_ms: f64,
    /// Written in this interval.
    pub mib_per_s: f64,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
}

/// Runs the soak against a fresh `sluice` (`bin`) and returns its samples;
/// `each` sees every sample as it is taken (for progress).
pub async fn run(
    bin: &Path,
    options: &SoakOptions,
    mut each: impl FnMut(&SoakSample),
) -> BenchResult<Vec<SoakSample>> {
    let dir = tempfile_dir()?;
    let server = start_sluice(bin, &dir, "")?;
    let root = std::fs::canonicalize(dir.join("files"))?;
    let addr = format!("http://{}", server.addr);
    let client = Client::connect_with(
        addr.clone(),
        ClientOptions {
            chunk_size: options.chunk,
            ..ClientOptions::default()
        },
    )
    .await?;
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(std::sync::Mutex::new(histogram()));
    let mut tasks = tokio::task::JoinSet::new();
    let data = chunk_data(options.chunk);
    for writer in 0..options.writers {
        let (client, stop, written, latencies) = (
            client.clone(),
            stop.clone(),
            written.clone(),
            latencies.clone(),
        );
        let (data, options, root) = (data.clone(), options.clone(), root.clone());
        tasks.spawn(async move {
            let mut grpc = client.grpc();
            let mut file = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let path = format!("file://{}/soak/w{writer}-f{file}", root.display());
                file += 1;
                let mut stream = client.open(&path).await?;
                let mut position = 0u64;
                let mut previous = None;
                while position < options.file_size && !stop.load(Ordering::Relaxed) {
                    let mut since = 0u64;
                    while since < options.persist_every {
                        stream.write_bytes(data.clone()).await?;
                        since += data.len() as u64;
                    }
                    position += since;
                    written.fetch_add(since, Ordering::Relaxed);
                    stream.flush().await?;
                    let t = Instant::now();
                    let handle = stream.persist().await?;
                    let micros = t.elapsed().as_micros() as u64;
                    latencies.lock().unwrap().record(micros.max(1))?;
                    // As a job does once its checkpoint completed.
                    if let Some(old) = previous.replace(handle) {
                        client.cleanup(&old).await?;
                    }
                }
                stream.close_for_commit().await?.commit().await?;
                grpc.delete(DeleteRequest {
                    path,
                    recursive: false,
                })
                .await?;
            }
            BenchResult::Ok(())
        });
    }
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut last_written = 0u64;
    while started.elapsed() < options.duration {
        tokio::time::sleep(options.interval).await;
        if let Some(done) = tasks.try_join_next() {
            done??; // a writer failed: report it rather than sample on
        }
        let interval = std::mem::replace(&mut *latencies.lock().unwrap(), histogram());
        let total = written.load(Ordering::Relaxed);
        let stats = server.stats();
        let ms = |q: f64| interval.value_at_quantile(q) as f64 / 1000.0;
        let sample = SoakSample {
            at_s: started.elapsed().as_secs_f64(),
            rss_mib: stats.rss_kib as f64 / 1024.0,
            fds: server.fds(),
            persists: interval.len(),
            persist_p50_ms: ms(0.5),
            persist_p99_ms: ms(0.99),
            persist_max_ms: interval.max() as f64 / 1000.0,
            mib_per_s: (total - last_written) as f64
                / (1 << 20) as f64
                / options.interval.as_secs_f64(),
        };
        last_written = total;
        each(&sample);
        samples.push(sample);
    }
    stop.store(true, Ordering::Relaxed);
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(samples)
}

/// A fresh directory under the system's temp dir.
fn tempfile_dir() -> BenchResult<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("sluice-soak-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The samples as a table.
pub fn table(samples: &[SoakSample]) -> String {
    let mut out = String::from(
        "|  t (s) | RSS (MiB) | fds | persists | Persist p50 (ms) | p99 (ms) | max (ms) | MiB/s |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for s in samples {
        out.push_str(&format!(
            "| {:.0} | {:.1} | {} | {} | {:.2} | {:.2} | {:.1} | {:.1} |\n",
            s.at_s,
            s.rss_mib,
            s.fds,
            s.persists,
            s.persist_p50_ms,
            s.persist_p99_ms,
            s.persist_max_ms,
            s.mib_per_s
        ));
    }
    out
}
