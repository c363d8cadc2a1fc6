//! sluice-bench: throughput, latency, memory and CPU of sluice against
//! baselines measured in the same run. See the `sluice_bench` library and the README's
//! "Performance" section.
//!
//! ```sh
//! cargo build --release --workspace
//! target/release/sluice-bench suite --s3-endpoint http://127.0.0.1:5000 --bucket bench \
//!     --json bench.json --svg concurrency.svg
//! target/release/sluice-bench suite --quick          # seconds; what the tests run
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use sluice_bench::*;

#[derive(Parser)]
#[command(
    name = "sluice-bench",
    about = "Measures sluice against the transport ceiling and direct writes"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The scenarios of the README's Performance table, each with its baseline.
    Suite(SuiteArgs),
    /// One workload through sluice, with the baseline for its scheme.
    Run(RunArgs),
    /// The server's instructions per GiB for one workload (valgrind's
    /// callgrind): a count the host's load does not move.
    Count(CountArgs),
    /// Many writers persisting on file:// for a long time (default 64 for
    /// 10 minutes), the server's RSS, fds and Persist latency every 10 s.
    Soak(SoakArgs),
    /// Draws the throughput-by-writers chart (SVG) from a report's JSON.
    Chart {
        /// A report written by `suite --json`.
        #[arg(long)]
        json: PathBuf,
        #[arg(long)]
        svg: PathBuf,
    },
    /// The counting sink (the transport-ceiling baseline); started by the
    /// other commands.
    Sink {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
}

#[derive(clap::Args)]
struct Common {
    /// The sluice binary; default: beside this executable.
    #[arg(long)]
    sluice: Option<PathBuf>,
    /// S3 endpoint (an emulator such as moto) for the s3:// scenarios.
    #[arg(long)]
    s3_endpoint: Option<String>,
    /// A GCS emulator (fake-gcs-server's URL) for the gs:// scenarios,
    /// measured against Flink's GCS writer: needs --flink.
    #[arg(long)]
    gcs_endpoint: Option<String>,
    /// An HDFS NameNode (hdfs://host:port) for the hdfs:// scenarios.
    #[arg(long)]
    hdfs: Option<String>,
    /// An existing bucket at --s3-endpoint and --gcs-endpoint.
    #[arg(long, default_value = "bench")]
    bucket: String,
    /// Runs of each scenario; figures are medians.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Write the report as JSON to this file ("-": stdout, instead of the table).
    #[arg(long)]
    json: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
    /// The file:// baseline copies each chunk into a buffer of its own
    /// before writing it, as a gateway receives bytes, instead of writing
    /// one cache-hot buffer again and again.
    #[arg(long)]
    fresh_buffers: bool,
    /// Flink's own writers as the baselines of file://, s3:// and gs://
    /// (its LocalRecoverableWriter; flink-s3-fs-hadoop's and
    /// flink-gs-fs-hadoop's writers), run in a JVM: the `target` folder of clients/java/flink-fs-sluice after
    /// `mvn install -DskipTests` in clients/java. `run` uses them in place
    /// of the direct writes; `suite` adds them as scenarios of their own.
    #[arg(long)]
    flink: Option<PathBuf>,
}

#[derive(clap::Args)]
struct SuiteArgs {
    #[command(flatten)]
    common: Common,
    /// Tiny sizes, one run: a smoke test that takes seconds.
    #[arg(long)]
    quick: bool,
    /// Write the throughput-by-writers chart (SVG) to this file.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Also count the server's instructions per GiB of each scheme under
    /// valgrind's callgrind (64 MiB each; slow, but immune to the host's load).
    #[arg(long)]
    instructions: bool,
}

#[derive(clap::Args)]
struct RunArgs {
    #[command(flatten)]
    common: Common,
    /// memory, file, s3, gs or hdfs.
    #[arg(long, default_value = "memory")]
    scheme: String,
    #[arg(long, default_value_t = 1)]
    writers: usize,
    #[arg(long, default_value = "1gb")]
    file_size: String,
    #[arg(long, default_value = "1mb")]
    chunk: String,
    /// Bytes between persists; 0: none.
    #[arg(long, default_value = "64mb")]
    persist_every: String,
    #[arg(long, default_value_t = 1)]
    files_per_writer: usize,
    /// Give each writer its own connection (HTTP/2 channel).
    #[arg(long)]
    connection_per_writer: bool,
}

#[derive(clap::Args)]
struct CountArgs {
    #[command(flatten)]
    common: Common,
    /// memory, file, s3, gs or hdfs.
    #[arg(long, default_value = "file")]
    scheme: String,
    #[arg(long, default_value_t = 1)]
    writers: usize,
    #[arg(long, default_value = "64mb")]
    file_size: String,
    #[arg(long, default_value = "1mb")]
    chunk: String,
    /// Bytes between persists; 0: none.
    #[arg(long, default_value = "8mb")]
    persist_every: String,
}

#[derive(clap::Args)]
struct SoakArgs {
    /// The sluice binary; default: beside this executable.
    #[arg(long)]
    sluice: Option<PathBuf>,
    #[arg(long, default_value_t = 64)]
    writers: usize,
    /// How long, e.g. 10min or 30s.
    #[arg(long, default_value = "10min")]
    duration: String,
    /// How often the server is sampled.
    #[arg(long, default_value = "10s")]
    interval: String,
    #[arg(long, default_value = "64kb")]
    chunk: String,
    #[arg(long, default_value = "1mb")]
    persist_every: String,
    /// Each file is committed and deleted at this size, then the next begins.
    #[arg(long, default_value = "64mb")]
    file_size: String,
    /// Write the samples as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

async fn soak(args: SoakArgs) -> BenchResult<()> {
    use sluice::config::parse_duration;
    use sluice_bench::soak;
    let bin = find_sluice(args.sluice)?;
    let options = soak::SoakOptions {
        writers: args.writers,
        duration: parse_duration("--duration", &args.duration)?,
        interval: parse_duration("--interval", &args.interval)?,
        chunk: size("--chunk", &args.chunk)?.max(1) as usize,
        persist_every: size("--persist-every", &args.persist_every)?.max(1),
        file_size: size("--file-size", &args.file_size)?.max(1),
    };
    eprintln!(
        "soak: {} writers on file:// for {:?}, a sample every {:?} (Ctrl-C stops it)",
        options.writers, options.duration, options.interval
    );
    let samples = soak::run(&bin, &options, |s| {
        eprintln!(
            "  t={:>5.0}s  rss={:>7.1} MiB  fds={:>5}  persists={:>6}  p99={:>7.2} ms  {:>6.1} MiB/s",
            s.at_s, s.rss_mib, s.fds, s.persists, s.persist_p99_ms, s.mib_per_s
        );
    })
    .await?;
    print!("{}", soak::table(&samples));
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_string_pretty(&samples)?)?;
    }
    Ok(())
}

fn size(key: &str, value: &str) -> BenchResult<u64> {
    if value == "0" {
        return Ok(0);
    }
    Ok(sluice::config::parse_memory_size(key, value)?)
}

fn main() {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let result = runtime.block_on(async move {
        match cli.command {
            Cmd::Sink { listen } => serve_sink(&listen).await,
            Cmd::Suite(args) => suite(args).await,
            Cmd::Run(args) => run_one(args).await,
            Cmd::Count(args) => count_one(args).await,
            Cmd::Soak(args) => soak(args).await,
            Cmd::Chart { json, svg } => chart(&json, &svg),
        }
    });
    if let Err(e) = result {
        eprintln!("sluice-bench: {e}");
        std::process::exit(1);
    }
}

/// One machine-readable line of what this machine is.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0.0, |kib| kib as f64 / 1024.0 / 1024.0);
    format!("{cores} cores ({cpu}), {mem_gib:.0} GiB")
}

/// A directory of this run's own, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> BenchResult<Scratch> {
        let dir =
            std::env::temp_dir().join(format!("sluice-bench-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        Ok(Scratch(dir))
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The S3 keys sluice and Flink both take (the same names, as sluice
/// follows Flink's) for the emulator at `endpoint`. Only the region's key
/// differs: `s3.region` for sluice, `s3.endpoint.region` for Flink.
fn s3_keys(endpoint: &str) -> [(&'static str, String); 4] {
    [
        ("s3.endpoint", endpoint.to_string()),
        ("s3.access-key", "test".into()),
        ("s3.secret-key", "test".into()),
        ("s3.path.style.access", "true".into()),
    ]
}

/// Why a gs:// scenario cannot run without `--flink`.
const GS_NEEDS_FLINK: &str = "gs:// is measured against Flink's GCS writer (flink-gs-fs-hadoop): \
     give --flink clients/java/flink-fs-sluice/target too, after \
     `mvn -B -q install -DskipTests` in clients/java";

/// What a scenario's baseline is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Against {
    /// The scheme's direct write (std::fs, object_store, hdfs-native) or,
    /// for memory://, the transport ceiling.
    Direct,
    /// file://: the direct write, from a fresh buffer per chunk.
    FreshBuffers,
    /// file://, s3:// and gs://: Flink's own recoverable writer (`--flink`).
    Flink,
}

/// What the scenarios share: how to start sluice, the sink, a scratch dir.
/// Every measurement gets a sluice process of its own: a process that held
/// a 1 GiB memory:// file keeps those pages, and would hide the RSS of what
/// runs after it.
struct Bench {
    bin: PathBuf,
    config: String,
    sink: Child,
    dir: Scratch,
    common: Common,
    s3: Option<Arc<dyn object_store::ObjectStore>>,
    hdfs: Option<hdfs_native::Client>,
}

impl Bench {
    fn start(common: Common) -> BenchResult<Bench> {
        let bin = find_sluice(common.sluice.clone())?;
        let dir = Scratch::new()?;
        let mut config = String::new();
        let mut s3 = None;
        if let Some(endpoint) = &common.s3_endpoint {
            for (key, value) in s3_keys(endpoint) {
                config += &format!("{key}: {value}\n");
            }
            config += "s3.region: us-east-1\n";
            let store = object_store::aws::AmazonS3Builder::new()
                .with_endpoint(endpoint)
                .with_bucket_name(&common.bucket)
                .with_access_key_id("test")
                .with_secret_access_key("test")
                .with_region("us-east-1")
                .with_allow_http(true)
                .with_virtual_hosted_style_request(false)
                .build()?;
            s3 = Some(Arc::new(store) as Arc<dyn object_store::ObjectStore>);
        }
        if let Some(endpoint) = &common.gcs_endpoint {
            config += &format!("gs.endpoint: {endpoint}\n");
        }
        let mut hdfs = None;
        if let Some(namenode) = &common.hdfs {
            config += &format!("fs.defaultFS: {namenode}\n");
            hdfs = Some(
                hdfs_native::ClientBuilder::new()
                    .with_url(namenode.as_str())
                    .build()?,
            );
        }
        let sink = start_sink()?;
        Ok(Bench {
            bin,
            config,
            sink,
            dir,
            common,
            s3,
            hdfs,
        })
    }

    /// A new sluice process on the bench's data dir.
    fn fresh(&self) -> BenchResult<Child> {
        start_sluice(&self.bin, &self.dir.path().join("sluice"), &self.config)
    }

    fn files(&self) -> PathBuf {
        self.dir.path().join("sluice/files")
    }

    fn bar(&self, label: &str, total: u64) -> indicatif::ProgressBar {
        progress(label, total, self.common.quiet)
    }

    /// sluice at `base` and the baseline for its scheme, alternately.
    async fn scenario(
        &self,
        name: &str,
        base: &str,
        w: &Workload,
        goal: &str,
    ) -> BenchResult<Scenario> {
        let against = if self.common.flink.is_some() {
            Against::Flink
        } else if self.common.fresh_buffers {
            Against::FreshBuffers
        } else {
            Against::Direct
        };
        self.scenario_with(name, base, w, goal, against).await
    }

    /// As `scenario`, against the baseline `against` picks.
    async fn scenario_with(
        &self,
        name: &str,
        base: &str,
        w: &Workload,
        goal: &str,
        against: Against,
    ) -> BenchResult<Scenario> {
        let scheme = base.split("://").next().unwrap_or("");
        if scheme == "gs" && self.common.flink.is_none() {
            return Err(GS_NEEDS_FLINK.into());
        }
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        let fresh = against == Against::FreshBuffers;
        let flink = self
            .common
            .flink
            .as_deref()
            .filter(|_| against == Against::Flink && matches!(scheme, "file" | "s3" | "gs"));
        let baseline_name = match scheme {
            "file" if flink.is_some() => "Flink LocalRecoverableWriter (in a JVM)",
            "s3" if flink.is_some() => "Flink S3 RecoverableWriter (flink-s3-fs-hadoop)",
            "gs" => "Flink GSRecoverableWriter (flink-gs-fs-hadoop)",
            "memory" => "transport ceiling",
            "file" if fresh => "std::fs, fresh buffers + fsync + rename",
            "file" => "std::fs + fsync + rename",
            "hdfs" => "hdfs-native + hsync + rename",
            _ => "object_store multipart",
        };
        for run in 0..self.common.runs {
            // Every other run the baseline goes first, so that neither
            // always writes into the memory the other just freed (on a VM
            // that reports free pages to its host, memory freed long ago
            // costs more to touch again than memory freed a moment ago).
            let baseline_first = run % 2 == 1;
            let label = |who: &str| format!("{name} #{}: {who}", run + 1);
            if baseline_first {
                theirs.push(
                    self.baseline(scheme, flink, fresh, w, &label("baseline"))
                        .await?,
                );
            }
            let bar = self.bar(&label("sluice"), w.total());
            ours.push(measured_sluice(&self.fresh()?, base, w, &bar).await?);
            bar.finish_and_clear();
            if !baseline_first {
                theirs.push(
                    self.baseline(scheme, flink, fresh, w, &label("baseline"))
                        .await?,
                );
            }
        }
        let mut a: Vec<f64> = ours.iter().map(|r| r.mib_per_s).collect();
        let mut b: Vec<f64> = theirs.iter().map(|r| r.mib_per_s).collect();
        let (a, b) = (median(&mut a), median(&mut b));
        Ok(Scenario {
            name: name.to_string(),
            target: base.to_string(),
            workload: w.clone(),
            baseline_name: baseline_name.to_string(),
            sluice: ours,
            baseline: theirs,
            sluice_median_mib_per_s: a,
            baseline_median_mib_per_s: b,
            ratio: a / b,
            goal: goal.to_string(),
        })
    }

    /// One run of the baseline `scheme` and `flink` pick.
    async fn baseline(
        &self,
        scheme: &str,
        flink: Option<&std::path::Path>,
        fresh: bool,
        w: &Workload,
        label: &str,
    ) -> BenchResult<Run> {
        let bar = self.bar(label, w.total());
        // The CPU of the process that writes: the sink behind the transport
        // ceiling, or this one for the writes it does itself (std::fs,
        // object_store, hdfs-native); Flink's JVM is not measured.
        let writer = match (scheme, flink) {
            (_, Some(_)) | ("gs", _) => None,
            ("memory", _) => Some(self.sink.pid()),
            _ => Some(std::process::id()),
        };
        let before = writer.map(proc_stats);
        let mut baseline = match (scheme, flink) {
            ("file", Some(dir)) => {
                let at = self.dir.path().join("flink");
                std::fs::create_dir_all(&at)?;
                flink_writer(dir, &format!("file://{}", at.display()), w, &[], &bar).await?
            }
            ("s3", Some(dir)) => {
                let endpoint = self
                    .common
                    .s3_endpoint
                    .as_deref()
                    .ok_or("an s3:// scenario needs --s3-endpoint")?;
                let mut conf: Vec<String> = s3_keys(endpoint)
                    .iter()
                    .map(|(key, value)| format!("{key}={value}"))
                    .collect();
                conf.extend([
                    "s3.endpoint.region=us-east-1".into(),
                    // sluice's parts in flight and part size.
                    "s3.upload.max.concurrent.uploads=4".into(),
                    "s3.upload.min.part.size=5242880".into(),
                ]);
                let dir_uri = format!("s3://{}/flink", self.common.bucket);
                flink_writer(dir, &dir_uri, w, &conf, &bar).await?
            }
            ("gs", dir) => {
                let dir = dir.ok_or(GS_NEEDS_FLINK)?;
                let endpoint = self
                    .common
                    .gcs_endpoint
                    .as_deref()
                    .ok_or("a gs:// scenario needs --gcs-endpoint")?;
                // FlinkWriterBaseline.gcsEmulatorConf's keys, and
                // sluice's component size (gs.writer.chunk.size, the
                // same key in both).
                let conf = [
                    format!("gs.storage.root.url={endpoint}"),
                    "gs.auth.service.account.enable=false".into(),
                    "gs.auth.null.enable=true".into(),
                    "gs.writer.chunk.size=8mb".into(),
                ];
                let dir_uri = format!("gs://{}/flink", self.common.bucket);
                flink_writer(dir, &dir_uri, w, &conf, &bar).await?
            }
            ("memory", _) => {
                through_gateway(self.sink.addr, "sink://x", w, &bar)
                    .await?
                    .0
            }
            ("file", _) => direct_file(&self.dir.path().join("direct"), w, fresh, &bar).await?,
            ("hdfs", _) => {
                let client = self
                    .hdfs
                    .as_ref()
                    .ok_or("an hdfs:// scenario needs --hdfs")?;
                direct_hdfs(client, "/bench-direct", w, &bar).await?
            }
            _ => {
                let store = self
                    .s3
                    .clone()
                    .ok_or("an s3:// scenario needs --s3-endpoint")?;
                direct_object(store, "direct", w, 5 << 20, 4, &bar).await?
            }
        };
        bar.finish_and_clear();
        if let (Some(pid), Some(before)) = (writer, before) {
            proc_stats(pid).record_since(&before, w.total(), &mut baseline);
        }
        Ok(baseline)
    }

    /// The server's instructions per GiB for `w` at `base`, counted by
    /// callgrind (a server of its own on the bench's data dir).
    async fn instructions(&self, base: &str, w: &Workload) -> BenchResult<f64> {
        let dir = self.dir.path().join("sluice");
        let server = start_sluice_counted(&self.bin, &dir, &self.config)?;
        let bar = self.bar(&format!("{base} under callgrind"), w.total());
        let work = through_gateway(server.addr, base, w, &bar);
        let ((_, paths), instructions) = counting(&server, &dir, work).await?;
        bar.finish_and_clear();
        delete_all(server.addr, &paths).await?;
        Ok(instructions as f64 / (w.total() as f64 / GIB as f64))
    }

    /// The base URI of a scheme's scenarios.
    fn base(&self, scheme: &str) -> BenchResult<String> {
        Ok(match scheme {
            "memory" => "memory://bench/run".to_string(),
            "file" => format!("file://{}/run", self.files().display()),
            "s3" => format!("s3://{}/run", self.common.bucket),
            "gs" => format!("gs://{}/run", self.common.bucket),
            "hdfs" => "hdfs:///run".to_string(),
            other => {
                return Err(format!("--scheme {other}: use memory, file, s3, gs or hdfs").into());
            }
        })
    }

    fn emit(&self, report: &Report) -> BenchResult<()> {
        let json = serde_json::to_string_pretty(report)?;
        let out = match &self.common.json {
            Some(path) if path.as_os_str() == "-" => json + "\n",
            Some(path) => {
                std::fs::write(path, json)?;
                table(report)
            }
            None => table(report),
        };
        // A reader that stops early (`| head`) is not an error of the bench.
        match std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
            _ => Ok(()),
        }
    }
}

async fn suite(args: SuiteArgs) -> BenchResult<()> {
    let mut common = args.common;
    if args.quick {
        common.runs = 1;
    }
    if common.gcs_endpoint.is_some() && common.flink.is_none() {
        return Err(GS_NEEDS_FLINK.into());
    }
    let bench = Bench::start(common)?;
    let q = args.quick;
    let one = |file_size: u64, persist_every: u64| Workload {
        writers: 1,
        file_size,
        chunk: MIB as usize,
        persist_every,
        files_per_writer: 1,
        connection_per_writer: false,
    };
    let mut scenarios = Vec::new();
    let big = if q { 8 * MIB } else { GIB };
    let every = if q { 2 * MIB } else { 64 * MIB };
    scenarios.push(
        bench
            .scenario_with(
                "memory://, 1 writer",
                "memory://bench/m",
                &one(big, every),
                ">= 0.80",
                Against::Direct,
            )
            .await?,
    );
    let files = format!("file://{}/bench", bench.files().display());
    scenarios.push(
        bench
            .scenario_with(
                "file://, 1 writer",
                &files,
                &one(big, every),
                ">= 0.90",
                Against::Direct,
            )
            .await?,
    );
    scenarios.push(
        bench
            .scenario_with(
                "file://, 1 writer, fresh-buffer baseline",
                &files,
                &one(big, every),
                ">= 0.90",
                Against::FreshBuffers,
            )
            .await?,
    );
    if bench.common.flink.is_some() {
        scenarios.push(
            bench
                .scenario_with(
                    "file://, 1 writer, Flink's writer",
                    &files,
                    &one(big, every),
                    ">= 1.0",
                    Against::Flink,
                )
                .await?,
        );
    }
    let mut figures = Vec::new();
    if bench.s3.is_some() {
        let size = if q { 12 * MIB } else { 256 * MIB };
        let base = format!("s3://{}/bench", bench.common.bucket);
        scenarios.push(
            bench
                .scenario_with(
                    "s3:// (moto), 1 writer",
                    &base,
                    &one(size, every),
                    ">= 0.95",
                    Against::Direct,
                )
                .await?,
        );
        if bench.common.flink.is_some() {
            scenarios.push(
                bench
                    .scenario_with(
                        "s3:// (moto), 1 writer, Flink's writer",
                        &base,
                        &one(size, every),
                        ">= 1.0",
                        Against::Flink,
                    )
                    .await?,
            );
        }
        // Memory of one large upload (no baseline).
        let size = if q { 12 * MIB } else { GIB };
        let bar = bench.bar("s3:// memory of one upload", size);
        let run = measured_sluice(&bench.fresh()?, &base, &one(size, every), &bar).await?;
        bar.finish_and_clear();
        figures.push(Figure {
            name: format!(
                "server peak RSS above start, one {} MiB s3:// upload",
                size >> 20
            ),
            value: run.server_peak_rss_above_start_mib.unwrap_or(0.0),
            unit: "MiB".into(),
            goal: "<= 64".into(),
        });
    }

    if bench.common.gcs_endpoint.is_some() {
        let size = if q { 12 * MIB } else { 256 * MIB };
        scenarios.push(
            bench
                .scenario_with(
                    "gs:// (fake-gcs-server), 1 writer, Flink's writer",
                    &format!("gs://{}/bench", bench.common.bucket),
                    &one(size, every),
                    ">= 1.0",
                    Against::Flink,
                )
                .await?,
        );
    }

    if bench.hdfs.is_some() {
        scenarios.push(
            bench
                .scenario(
                    "hdfs://, 1 writer",
                    "hdfs:///bench",
                    &one(big, every),
                    ">= 0.90",
                )
                .await?,
        );
        // What a Recover costs as the file grows: a copy of the handle's
        // prefix when the staging holds more, an append when it does not.
        let sizes: &[u64] = if q {
            &[2 * MIB]
        } else {
            &[16 * MIB, 64 * MIB, 256 * MIB]
        };
        for &size in sizes {
            let (mut copies, mut appends) = (Vec::new(), Vec::new());
            for run in 0..bench.common.runs {
                let label = format!("hdfs:// Recover at {} MiB #{}", size >> 20, run + 1);
                let bar = bench.bar(&label, 2 * size);
                let server = bench.fresh()?;
                let (copy, append) = recover_cost(server.addr, "hdfs:///bench", size, &bar).await?;
                bar.finish_and_clear();
                copies.push(copy);
                appends.push(append);
            }
            let (copy, append) = (median(&mut copies), median(&mut appends));
            figures.push(Figure {
                name: format!(
                    "hdfs:// Recover at {} MiB, 1 MiB past the handle (copy)",
                    size >> 20
                ),
                value: copy,
                unit: "s".into(),
                goal: "-".into(),
            });
            figures.push(Figure {
                name: format!(
                    "hdfs:// Recover at {} MiB, nothing past the handle (append)",
                    size >> 20
                ),
                value: append,
                unit: "s".into(),
                goal: "-".into(),
            });
        }
    }

    // Concurrency on memory://: the same total bytes split over more writers.
    let total = if q { 8 * MIB } else { GIB };
    let counts: &[usize] = if q {
        &[1, 4]
    } else {
        &[1, 2, 4, 8, 16, 32, 64]
    };
    let mut concurrency = Vec::new();
    let mut persist_at_most = None;
    for &writers in counts {
        let file_size = total / writers as u64;
        let w = Workload {
            writers,
            file_size,
            chunk: MIB.min(file_size) as usize,
            persist_every: (file_size / 8).max(1),
            files_per_writer: 1,
            connection_per_writer: false,
        };
        let mut rates = Vec::new();
        let mut p99s = Vec::new();
        for run in 0..bench.common.runs {
            let bar = bench.bar(
                &format!("memory://, {writers} writers #{}", run + 1),
                w.total(),
            );
            let r = measured_sluice(&bench.fresh()?, "memory://bench/c", &w, &bar).await?;
            bar.finish_and_clear();
            rates.push(r.mib_per_s);
            if let Some(p) = &r.persist {
                p99s.push(p.p99_ms);
            }
        }
        concurrency.push((writers, median(&mut rates)));
        persist_at_most = Some((writers, median(&mut p99s)));
    }
    let first = concurrency.first().map_or(1.0, |c| c.1);
    if let Some(&(n, last)) = concurrency.last() {
        figures.push(Figure {
            name: format!("memory:// aggregate, {n} writers / 1 writer"),
            value: last / first,
            unit: "x".into(),
            goal: ">= 0.9".into(),
        });
    }
    if let Some((n, p99)) = persist_at_most {
        figures.push(Figure {
            name: format!("Persist p99 on memory://, {n} concurrent writers"),
            value: p99,
            unit: "ms".into(),
            goal: "<= 5".into(),
        });
    }

    if args.instructions {
        let w = one(
            if q { 4 * MIB } else { 64 * MIB },
            if q { MIB } else { 8 * MIB },
        );
        let mut schemes = vec!["memory", "file"];
        if bench.s3.is_some() {
            schemes.push("s3");
        }
        if bench.common.gcs_endpoint.is_some() {
            schemes.push("gs");
        }
        if bench.hdfs.is_some() {
            schemes.push("hdfs");
        }
        for scheme in schemes {
            let per_gib = bench.instructions(&bench.base(scheme)?, &w).await?;
            figures.push(Figure {
                name: format!(
                    "server instructions per GiB, {scheme}:// ({} MiB, a persist every {} MiB, callgrind)",
                    w.file_size >> 20,
                    w.persist_every >> 20
                ),
                value: per_gib / 1e9,
                unit: "G".into(),
                goal: "-".into(),
            });
        }
    }

    let sessions = if q { 200 } else { 10_000 };
    let bar = bench.bar("idle sessions", sessions as u64);
    let (before, with) =
        idle_sessions(&bench.fresh()?, "memory://bench/idle", sessions, &bar).await?;
    bar.finish_and_clear();
    figures.push(Figure {
        name: format!("server RSS with {sessions} idle sessions open (was {before:.1} MiB)"),
        value: with,
        unit: "MiB".into(),
        goal: "<= 256".into(),
    });

    let ceiling = scenarios.first().map(|s| s.baseline_median_mib_per_s);
    let report = Report {
        machine: machine(),
        runs: bench.common.runs,
        scenarios,
        concurrency,
        figures,
    };
    if let Some(path) = &args.svg {
        std::fs::write(path, svg_chart(&report.concurrency, ceiling))?;
    }
    bench.emit(&report)
}

/// The chart from a report's JSON: its `concurrency` points, and the
/// transport ceiling of its first (memory://) scenario as a reference line.
fn chart(json: &std::path::Path, svg: &std::path::Path) -> BenchResult<()> {
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(json)?)?;
    let points: Vec<(usize, f64)> = report["concurrency"]
        .as_array()
        .ok_or("the report has no concurrency figures; run `suite`")?
        .iter()
        .filter_map(|p| Some((p[0].as_u64()? as usize, p[1].as_f64()?)))
        .collect();
    let ceiling = report["scenarios"][0]["baseline_median_mib_per_s"].as_f64();
    std::fs::write(svg, svg_chart(&points, ceiling))?;
    Ok(())
}

async fn run_one(args: RunArgs) -> BenchResult<()> {
    let w = Workload {
        writers: args.writers,
        file_size: size("--file-size", &args.file_size)?,
        chunk: size("--chunk", &args.chunk)? as usize,
        persist_every: size("--persist-every", &args.persist_every)?,
        files_per_writer: args.files_per_writer,
        connection_per_writer: args.connection_per_writer,
    };
    let bench = Bench::start(args.common)?;
    let base = bench.base(&args.scheme)?;
    let name = format!("{}://, {} writers", args.scheme, w.writers);
    let scenario = bench.scenario(&name, &base, &w, "-").await?;
    let report = Report {
        machine: machine(),
        runs: bench.common.runs,
        scenarios: vec![scenario],
        concurrency: Vec::new(),
        figures: Vec::new(),
    };
    bench.emit(&report)
}

async fn count_one(args: CountArgs) -> BenchResult<()> {
    let w = Workload {
        writers: args.writers,
        file_size: size("--file-size", &args.file_size)?,
        chunk: size("--chunk", &args.chunk)? as usize,
        persist_every: size("--persist-every", &args.persist_every)?,
        files_per_writer: 1,
        connection_per_writer: false,
    };
    let bench = Bench::start(args.common)?;
    let base = bench.base(&args.scheme)?;
    let mut counts = Vec::new();
    for _ in 0..bench.common.runs {
        counts.push(bench.instructions(&base, &w).await?);
    }
    let figure = Figure {
        name: format!(
            "server instructions per GiB, {}:// ({} writer(s), {} MiB each, a persist every {} bytes, callgrind)",
            args.scheme,
            w.writers,
            w.file_size >> 20,
            w.persist_every
        ),
        value: median(&mut counts) / 1e9,
        unit: "G".into(),
        goal: "-".into(),
    };
    eprintln!(
        "runs (G per GiB): {:?}",
        counts
            .iter()
            .map(|c| (c / 1e7).round() / 100.0)
            .collect::<Vec<_>>()
    );
    let report = Report {
        machine: machine(),
        runs: bench.common.runs,
        scenarios: Vec::new(),
        concurrency: Vec::new(),
        figures: vec![figure],
    };
    bench.emit(&report)
}
