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
//!    multipart API, with sluice's part size and concurrency.

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

pub mod soak;

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
    /// Server CPU (user + system) per GiB written.
    pub server_cpu_s_per_gib: Option<f64>,
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

// ---- child processes -------------------------------------------------------

/// A child process that logged `address=<addr>`; killed when dropped.
pub struct Child {
    process: std::process::Child,
    pub addr: SocketAddr,
}

/// What /proc says of a process.
#[derive(Clone, Copy, Debug)]
pub struct ProcStats {
    pub rss_kib: u64,
    pub peak_rss_kib: u64,
    pub cpu_s: f64,
}

impl Child {
    pub fn spawn(mut cmd: Command, what: &str) -> BenchResult<Child> {
        // SLUICE_BENCH_LOG=<file> keeps the children's logs (with their
        // RUST_LOG, e.g. tower_http=debug for per-request latencies).
        let keep = std::env::var_os("SLUICE_BENCH_LOG").map(PathBuf::from);
        let filter = match &keep {
            Some(_) => std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            None => "info".into(),
        };
        let mut process = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env("RUST_LOG", filter)
            .spawn()
            .map_err(|e| format!("cannot start {what} ({cmd:?}): {e}"))?;
        let stderr = process.stderr.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut log = keep.and_then(|path| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .ok()
            });
            for line in BufReader::new(stderr).lines() {
                let line = line.unwrap_or_default();
                if let Some(log) = log.as_mut() {
                    let _ = writeln!(log, "{line}");
                }
                if let Some(rest) = line.split("address=").nth(1) {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| format!("{what} did not log its address within 30 s"))?
            .parse()
            .map_err(|e| format!("{what} logged a bad address: {e}"))?;
        Ok(Child { process, addr })
    }

    pub fn stats(&self) -> ProcStats {
        proc_stats(self.process.id())
    }

    /// File descriptors the process holds.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.process.id())).map_or(0, |d| d.count())
    }

    /// Restarts the peak-RSS count (Linux `clear_refs` 5).
    pub fn reset_peak(&self) {
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.process.id()), "5");
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

fn proc_stats(pid: u32) -> ProcStats {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces), from field 3.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15: indexes 11 and 12 here.
    let cpu_s = (ticks(11) + ticks(12)) as f64 / clock_ticks() as f64;
    ProcStats {
        rss_kib: field("VmRSS:"),
        peak_rss_kib: field("VmHWM:"),
        cpu_s,
    }
}

fn clock_ticks() -> u64 {
    // sysconf(_SC_CLK_TCK) is 100 on every Linux target Rust supports.
    100
}

/// Starts `sluice serve` on a fresh data dir with `config`.
pub fn start_sluice(bin: &Path, data_dir: &Path, config: &str) -> BenchResult<Child> {
    std::fs::create_dir_all(data_dir)?;
    let config_path = data_dir.join("bench.yaml");
    std::fs::write(&config_path, config)?;
    let mut cmd = Command::new(bin);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "off"])
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--config")
        .arg(&config_path);
    Child::spawn(cmd, "sluice")
}

/// Starts the counting sink: this executable, `sink` subcommand.
pub fn start_sink() -> BenchResult<Child> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["sink", "--listen", "127.0.0.1:0"]);
    Child::spawn(cmd, "the sink")
}

// ---- the sink --------------------------------------------------------------

/// A StorageGateway that accepts writes and only counts them: the ceiling
/// of what the transport carries.
#[derive(Default)]
pub struct Sink {
    positions: std::sync::Mutex<HashMap<String, u64>>,
    next: AtomicU64,
    received: AtomicU64,
}

impl Sink {
    fn position(&self, id: &str) -> Result<u64, Status> {
        self.positions
            .lock()
            .unwrap()
            .get(id)
            .copied()
            .ok_or_else(|| Status::not_found(format!("unknown session {id}")))
    }
}

type ReadStream = futures::stream::BoxStream<'static, Result<ReadResponse, Status>>;

#[tonic::async_trait]
impl StorageGateway for Sink {
    async fn open(&self, r: Request<OpenRequest>) -> Result<Response<OpenResponse>, Status> {
        let id = format!("sink-{}", self.next.fetch_add(1, Ordering::Relaxed));
        self.positions.lock().unwrap().insert(id.clone(), 0);
        Ok(Response::new(OpenResponse {
            session_id: id,
            path: r.into_inner().path,
        }))
    }

    async fn write(
        &self,
        r: Request<Streaming<WriteRequest>>,
    ) -> Result<Response<WriteResponse>, Status> {
        let mut stream = r.into_inner();
        let (mut id, mut end) = (String::new(), 0);
        while let Some(m) = stream.message().await? {
            if !m.session_id.is_empty() {
                id = m.session_id;
            }
            end = m.offset + m.data.len() as u64;
            self.received
                .fetch_add(m.data.len() as u64, Ordering::Relaxed);
        }
        if let Some(p) = self.positions.lock().unwrap().get_mut(&id) {
            *p = (*p).max(end);
        }
        Ok(Response::new(WriteResponse { position: end }))
    }

    async fn persist(
        &self,
        r: Request<PersistRequest>,
    ) -> Result<Response<PersistResponse>, Status> {
        let position = self.position(&r.into_inner().session_id)?;
        Ok(Response::new(PersistResponse {
            handle: b"sink".to_vec(),
            position,
        }))
    }

    async fn recover(
        &self,
        _: Request<RecoverRequest>,
    ) -> Result<Response<RecoverResponse>, Status> {
        Err(Status::unimplemented("the sink only counts"))
    }

    async fn close_for_commit(
        &self,
        r: Request<CloseForCommitRequest>,
    ) -> Result<Response<CloseForCommitResponse>, Status> {
        let id = r.into_inner().session_id;
        let size = self.position(&id)?;
        self.positions.lock().unwrap().remove(&id);
        Ok(Response::new(CloseForCommitResponse {
            handle: b"sink".to_vec(),
            size,
        }))
    }

    async fn commit(&self, _: Request<CommitRequest>) -> Result<Response<CommitResponse>, Status> {
        Ok(Response::new(CommitResponse::default()))
    }

    async fn cleanup(
        &self,
        _: Request<CleanupRequest>,
    ) -> Result<Response<CleanupResponse>, Status> {
        Ok(Response::new(CleanupResponse::default()))
    }

    async fn abort(&self, r: Request<AbortRequest>) -> Result<Response<AbortResponse>, Status> {
        self.positions
            .lock()
            .unwrap()
            .remove(&r.into_inner().session_id);
        Ok(Response::new(AbortResponse {}))
    }

    async fn capabilities(
        &self,
        _: Request<CapabilitiesRequest>,
    ) -> Result<Response<CapabilitiesResponse>, Status> {
        Ok(Response::new(CapabilitiesResponse::default()))
    }

    type ReadStream = ReadStream;

    async fn read(&self, _: Request<ReadRequest>) -> Result<Response<ReadStream>, Status> {
        Err(Status::unimplemented("the sink only counts"))
    }

    async fn stat(&self, _: Request<StatRequest>) -> Result<Response<StatResponse>, Status> {
        Err(Status::unimplemented("the sink only counts"))
    }

    async fn list(&self, _: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        Err(Status::unimplemented("the sink only counts"))
    }

    async fn delete(&self, _: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        Ok(Response::new(DeleteResponse::default()))
    }

    async fn mkdirs(&self, _: Request<MkdirsRequest>) -> Result<Response<MkdirsResponse>, Status> {
        Ok(Response::new(MkdirsResponse {}))
    }

    async fn rename(&self, _: Request<RenameRequest>) -> Result<Response<RenameResponse>, Status> {
        Err(Status::unimplemented("the sink only counts"))
    }

    async fn exists(&self, _: Request<ExistsRequest>) -> Result<Response<ExistsResponse>, Status> {
        Ok(Response::new(ExistsResponse::default()))
    }
}

/// Serves the sink with the server's HTTP/2 settings and message limit.
pub async fn serve_sink(listen: &str) -> BenchResult<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    eprintln!("sink listening address={}", listener.local_addr()?);
    let limit = sluice::config::EdgeConfig::default().max_message_size;
    tonic::transport::Server::builder()
        .initial_stream_window_size(Some(sluice::server::STREAM_WINDOW))
        .initial_connection_window_size(Some(sluice::server::CONNECTION_WINDOW))
        .add_service(
            StorageGatewayServer::new(Sink::default())
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        )
        .serve_with_incoming(sluice::server::nodelay_incoming(listener))
        .await?;
    Ok(())
}

// ---- the runs --------------------------------------------------------------

/// The bytes every run writes: one chunk of pseudo-random data, sliced.
pub fn chunk_data(chunk: usize) -> Bytes {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..chunk)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

pub fn progress(label: &str, total: u64, hidden: bool) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>28} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(label.to_string());
    bar
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
}

/// Writes the workload through a sluice (or sink) at `addr`, under
/// `base`; returns the run and the paths it committed.
pub async fn through_gateway(
    addr: SocketAddr,
    base: &str,
    w: &Workload,
    bar: &ProgressBar,
) -> BenchResult<(Run, Vec<String>)> {
    let options = ClientOptions {
        chunk_size: w.chunk,
        ..ClientOptions::default()
    };
    let client = Client::connect_with(format!("http://{addr}"), options.clone()).await?;
    let data = chunk_data(w.chunk);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for writer in 0..w.writers {
        let (shared, data, w, bar) = (client.clone(), data.clone(), w.clone(), bar.clone());
        let base = base.to_string();
        let options = options.clone();
        tasks.spawn(async move {
            let client = if w.connection_per_writer {
                Client::connect_with(format!("http://{addr}"), options).await?
            } else {
                shared
            };
            let (mut persists, mut commits) = (histogram(), histogram());
            let mut paths = Vec::new();
            for file in 0..w.files_per_writer {
                let path = format!("{base}/w{writer}-f{file}-{}", uuid::Uuid::new_v4().simple());
                let mut stream = client.open(&path).await?;
                let (mut written, mut next_persist) = (0u64, w.persist_every);
                while written < w.file_size {
                    let n = (w.file_size - written).min(w.chunk as u64) as usize;
                    stream.write_bytes(data.slice(..n)).await?;
                    written += n as u64;
                    bar.inc(n as u64);
                    if w.persist_every > 0 && written >= next_persist && written < w.file_size {
                        // The Persist call alone: the bytes before it are
                        // sent and acknowledged first.
                        stream.flush().await?;
                        let t = Instant::now();
                        stream.persist().await?;
                        persists.record(t.elapsed().as_micros() as u64)?;
                        next_persist += w.persist_every;
                    }
                }
                let committer = stream.close_for_commit().await?;
                let t = Instant::now();
                committer.commit().await?;
                commits.record(t.elapsed().as_micros() as u64)?;
                paths.push(path);
            }
            BenchResult::Ok((persists, commits, paths))
        });
    }
    let (mut persists, mut commits, mut paths) = (histogram(), histogram(), Vec::new());
    while let Some(done) = tasks.join_next().await {
        let (p, c, written) = done??;
        persists.add(p)?;
        commits.add(c)?;
        paths.extend(written);
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok((
        Run {
            persist: Latency::of(&persists),
            commit: Latency::of(&commits),
            ..Run::timed(w.total(), seconds)
        },
        paths,
    ))
}

/// Deletes what a run committed, so the next starts from the same state.
pub async fn delete_all(addr: SocketAddr, paths: &[String]) -> BenchResult<()> {
    let mut grpc = Client::connect(format!("http://{addr}")).await?.grpc();
    for path in paths {
        grpc.delete(DeleteRequest {
            path: path.clone(),
            recursive: false,
        })
        .await?;
    }
    Ok(())
}

/// The file baseline: `std::fs` writes, `fsync` at the persist points,
/// `fsync` + rename at the end (what a careful job does without sluice).
pub async fn direct_file(dir: &Path, w: &Workload, bar: &ProgressBar) -> BenchResult<Run> {
    std::fs::create_dir_all(dir)?;
    let data = chunk_data(w.chunk);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for writer in 0..w.writers {
        let (dir, data, w, bar) = (dir.to_path_buf(), data.clone(), w.clone(), bar.clone());
        tasks.spawn_blocking(move || -> BenchResult<()> {
            for file in 0..w.files_per_writer {
                let name = format!("w{writer}-f{file}-{}", uuid::Uuid::new_v4().simple());
                let temp = dir.join(format!(".{name}.inprogress"));
                let mut f = std::fs::File::create(&temp)?;
                let (mut written, mut next_persist) = (0u64, w.persist_every);
                while written < w.file_size {
                    let n = (w.file_size - written).min(w.chunk as u64) as usize;
                    f.write_all(&data[..n])?;
                    written += n as u64;
                    bar.inc(n as u64);
                    if w.persist_every > 0 && written >= next_persist && written < w.file_size {
                        f.sync_data()?;
                        next_persist += w.persist_every;
                    }
                }
                f.sync_all()?;
                drop(f);
                let target = dir.join(&name);
                std::fs::rename(&temp, &target)?;
                std::fs::File::open(&dir)?.sync_all()?;
                std::fs::remove_file(&target)?;
            }
            Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(Run::timed(w.total(), seconds))
}

/// The object-store baseline: object_store's own multipart upload, with
/// sluice's part size and parts in flight.
pub async fn direct_object(
    store: Arc<dyn object_store::ObjectStore>,
    prefix: &str,
    w: &Workload,
    part_size: usize,
    in_flight: usize,
    bar: &ProgressBar,
) -> BenchResult<Run> {
    use object_store::ObjectStoreExt;
    let data = chunk_data(w.chunk);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for writer in 0..w.writers {
        let (store, data, w, bar) = (store.clone(), data.clone(), w.clone(), bar.clone());
        let prefix = prefix.to_string();
        tasks.spawn(async move {
            let mut paths = Vec::new();
            for file in 0..w.files_per_writer {
                let path = object_store::path::Path::from(format!(
                    "{prefix}/direct-w{writer}-f{file}-{}",
                    uuid::Uuid::new_v4().simple()
                ));
                let upload = store.put_multipart(&path).await?;
                let mut multipart =
                    object_store::WriteMultipart::new_with_chunk_size(upload, part_size);
                let mut written = 0u64;
                while written < w.file_size {
                    let n = (w.file_size - written).min(w.chunk as u64) as usize;
                    multipart.wait_for_capacity(in_flight).await?;
                    multipart.put(data.slice(..n));
                    written += n as u64;
                    bar.inc(n as u64);
                }
                multipart.finish().await?;
                paths.push(path);
            }
            BenchResult::Ok(paths)
        });
    }
    let mut paths = Vec::new();
    while let Some(done) = tasks.join_next().await {
        paths.extend(done??);
    }
    let seconds = started.elapsed().as_secs_f64();
    for path in paths {
        store.delete(&path).await?;
    }
    Ok(Run::timed(w.total(), seconds))
}

/// Runs `through_gateway` against a sluice child, adding its server-side
/// figures (peak RSS above the start, CPU per GiB).
pub async fn measured_sluice(
    server: &Child,
    base: &str,
    w: &Workload,
    bar: &ProgressBar,
) -> BenchResult<Run> {
    server.reset_peak();
    let before = server.stats();
    let (mut run, paths) = through_gateway(server.addr, base, w, bar).await?;
    let after = server.stats();
    run.server_peak_rss_mib = Some(after.peak_rss_kib as f64 / 1024.0);
    run.server_peak_rss_above_start_mib =
        Some(after.peak_rss_kib.saturating_sub(before.rss_kib) as f64 / 1024.0);
    run.server_cpu_s_per_gib = Some((after.cpu_s - before.cpu_s) / (w.total() as f64 / GIB as f64));
    delete_all(server.addr, &paths).await?;
    Ok(run)
}

/// Opens `count` sessions and leaves them idle; returns the server's RSS
/// (MiB) before and with them open. The sessions are aborted afterwards.
pub async fn idle_sessions(
    server: &Child,
    base: &str,
    count: usize,
    bar: &ProgressBar,
) -> BenchResult<(f64, f64)> {
    let client = Client::connect(format!("http://{}", server.addr)).await?;
    let before = server.stats().rss_kib as f64 / 1024.0;
    let mut streams = Vec::with_capacity(count);
    for i in 0..count {
        streams.push(client.open(&format!("{base}/idle-{i}")).await?);
        bar.inc(1);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let with = server.stats().rss_kib as f64 / 1024.0;
    for stream in streams {
        stream.abort().await?;
    }
    Ok((before, with))
}

// ---- output ----------------------------------------------------------------

/// The table printed at the end of a run.
pub fn table(report: &Report) -> String {
    let mut out = String::new();
    out += &format!(
        "sluice-bench on {} (medians of {} runs)\n\n",
        report.machine, report.runs
    );
    out += &format!(
        "{:<34} {:>10} {:<22} {:>10} {:>7}  {:<9} {:>24} {:>24} {:>10} {:>9}\n",
        "scenario",
        "sluice",
        "baseline",
        "baseline",
        "ratio",
        "goal",
        "persist p50/p99/max ms",
        "commit p50/p99/max ms",
        "RSS +MiB",
        "CPU s/GiB"
    );
    for s in &report.scenarios {
        let best = s
            .sluice
            .iter()
            .max_by(|a, b| a.mib_per_s.total_cmp(&b.mib_per_s));
        let lat = |l: &Option<Latency>| {
            l.as_ref().map_or("-".to_string(), |l| {
                format!("{:.1}/{:.1}/{:.1}", l.p50_ms, l.p99_ms, l.max_ms)
            })
        };
        let mut rss: Vec<f64> = s
            .sluice
            .iter()
            .filter_map(|r| r.server_peak_rss_above_start_mib)
            .collect();
        let mut cpu: Vec<f64> = s
            .sluice
            .iter()
            .filter_map(|r| r.server_cpu_s_per_gib)
            .collect();
        out += &format!(
            "{:<34} {:>7.1} MB/s {:<22} {:>7.1} MB/s {:>6.3}  {:<9} {:>24} {:>24} {:>10.1} {:>9.2}\n",
            s.name,
            s.sluice_median_mib_per_s,
            s.baseline_name,
            s.baseline_median_mib_per_s,
            s.ratio,
            s.goal,
            lat(&best.and_then(|r| r.persist.clone())),
            lat(&best.and_then(|r| r.commit.clone())),
            median(&mut rss),
            median(&mut cpu),
        );
    }
    if !report.concurrency.is_empty() {
        out += "\nmemory://, aggregate MiB/s by writers: ";
        out += &report
            .concurrency
            .iter()
            .map(|(n, v)| format!("{n}: {v:.1}"))
            .collect::<Vec<_>>()
            .join(", ");
        out += "\n";
    }
    for f in &report.figures {
        out += &format!(
            "{:<60} {:>10.2} {:<6} goal {}\n",
            f.name, f.value, f.unit, f.goal
        );
    }
    out
}

/// An SVG line chart of aggregate throughput against writers.
pub fn svg_chart(points: &[(usize, f64)], ceiling: Option<f64>) -> String {
    let (w, h, left, bottom, top, right) = (640.0, 400.0, 70.0, 50.0, 40.0, 20.0);
    let max_y = points
        .iter()
        .map(|p| p.1)
        .chain(ceiling)
        .fold(1.0f64, f64::max)
        * 1.15;
    let xs: Vec<f64> = points.iter().map(|p| (p.0 as f64).log2()).collect();
    let max_x = xs.iter().cloned().fold(1.0f64, f64::max);
    let px = |x: f64| left + x / max_x * (w - left - right);
    let py = |y: f64| h - bottom - y / max_y * (h - bottom - top);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">sluice memory://: aggregate throughput by concurrent writers</text>\n",
        w / 2.0
    );
    svg += &format!(
        "<line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{}\" stroke=\"black\"/>\n",
        h - bottom,
        w - right,
        h - bottom,
        h - bottom
    );
    for i in 0..=5 {
        let y = max_y * i as f64 / 5.0;
        svg += &format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{y:.0}</text><line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#ddd\"/>\n",
            left - 6.0,
            py(y) + 4.0,
            py(y),
            w - right,
            py(y)
        );
    }
    for (p, x) in points.iter().zip(&xs) {
        svg += &format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
            px(*x),
            h - bottom + 18.0,
            p.0
        );
    }
    svg += &format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">writers</text>\n<text x=\"16\" y=\"{}\" transform=\"rotate(-90 16 {})\" text-anchor=\"middle\">MiB/s</text>\n",
        (left + w - right) / 2.0,
        h - 12.0,
        (top + h - bottom) / 2.0,
        (top + h - bottom) / 2.0
    );
    if let Some(c) = ceiling {
        svg += &format!(
            "<line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#999\" stroke-dasharray=\"6 4\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\" fill=\"#666\">transport ceiling, 1 writer ({c:.0})</text>\n",
            py(c),
            w - right,
            py(c),
            w - right,
            py(c) - 6.0
        );
    }
    let line: Vec<String> = points
        .iter()
        .zip(&xs)
        .map(|(p, x)| format!("{:.1},{:.1}", px(*x), py(p.1)))
        .collect();
    svg += &format!(
        "<polyline points=\"{}\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\"/>\n",
        line.join(" ")
    );
    for (p, x) in points.iter().zip(&xs) {
        svg += &format!(
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"#1f77b4\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{:.0}</text>\n",
            px(*x),
            py(p.1),
            px(*x),
            py(p.1) - 9.0,
            p.1
        );
    }
    svg + "</svg>\n"
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
