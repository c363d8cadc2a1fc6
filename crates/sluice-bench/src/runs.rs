//! The runs: the same workload through sluice and directly (`std::fs`,
//! object_store), timed the same way.

use super::*;

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

pub(crate) fn histogram() -> Histogram<u64> {
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
                let (mut written, mut points) = (0u64, w.persist_points());
                while written < w.file_size {
                    let n = (w.file_size - written).min(w.chunk as u64) as usize;
                    stream.write_bytes(data.slice(..n)).await?;
                    written += n as u64;
                    bar.inc(n as u64);
                    if points.due(written) {
                        // The Persist call alone: the bytes before it are
                        // sent and acknowledged first.
                        stream.flush().await?;
                        let t = Instant::now();
                        stream.persist().await?;
                        persists.record(t.elapsed().as_micros() as u64)?;
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
/// With `fresh`, each chunk is first copied into a buffer of its own, as a
/// gateway receives every message into new memory; without, the same
/// cache-hot buffer is written each time.
pub async fn direct_file(
    dir: &Path,
    w: &Workload,
    fresh: bool,
    bar: &ProgressBar,
) -> BenchResult<Run> {
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
                let (mut written, mut points) = (0u64, w.persist_points());
                while written < w.file_size {
                    let n = (w.file_size - written).min(w.chunk as u64) as usize;
                    if fresh {
                        let received = data[..n].to_vec();
                        f.write_all(std::hint::black_box(&received))?;
                    } else {
                        f.write_all(&data[..n])?;
                    }
                    written += n as u64;
                    bar.inc(n as u64);
                    if points.due(written) {
                        f.sync_data()?;
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
/// sluice's part size and parts in flight. At each persist point it waits
/// until every part in flight is stored, as the file:// and hdfs://
/// baselines sync there: the bytes of whole parts are then durable. (It
/// does less than a persist through sluice, which also stores the bytes
/// short of a part as a tail object.)
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
                let (mut written, mut points) = (0u64, w.persist_points());
                while written < w.file_size {
                    let n = (w.file_size - written).min(w.chunk as u64) as usize;
                    multipart.wait_for_capacity(in_flight).await?;
                    multipart.put(data.slice(..n));
                    written += n as u64;
                    bar.inc(n as u64);
                    if points.due(written) {
                        multipart.wait_for_capacity(0).await?;
                    }
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

/// The HDFS baseline: the same file written with hdfs-native directly, to
/// a temp file, `hsync` at the persist points, closed and renamed onto its
/// target (what Flink's Hadoop writer does, without sluice).
pub async fn direct_hdfs(
    client: &hdfs_native::Client,
    dir: &str,
    w: &Workload,
    bar: &ProgressBar,
) -> BenchResult<Run> {
    let data = chunk_data(w.chunk);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for writer in 0..w.writers {
        let (client, data, w, bar) = (client.clone(), data.clone(), w.clone(), bar.clone());
        let dir = dir.to_string();
        tasks.spawn(async move {
            let mut paths = Vec::new();
            for file in 0..w.files_per_writer {
                let name = format!("w{writer}-f{file}-{}", uuid::Uuid::new_v4().simple());
                let temp = format!("{dir}/.{name}.inprogress");
                let mut f = client
                    .create(&temp, hdfs_native::WriteOptions::default())
                    .await?;
                let (mut written, mut points) = (0u64, w.persist_points());
                while written < w.file_size {
                    let n = (w.file_size - written).min(w.chunk as u64) as usize;
                    f.write_bytes(data.slice(..n)).await?;
                    written += n as u64;
                    bar.inc(n as u64);
                    if points.due(written) {
                        f.hsync().await?;
                    }
                }
                f.close().await?;
                let target = format!("{dir}/{name}");
                client.rename(&temp, &target, false).await?;
                paths.push(target);
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
        client.delete(&path, false).await?;
    }
    Ok(Run::timed(w.total(), seconds))
}

/// What a Recover costs on `base` for a file of `size` bytes: the seconds
/// of a Recover from a handle at `size` when the staging holds 1 MiB more
/// (HDFS copies the handle's prefix into a new temp file), and when it
/// holds exactly the handle's bytes (HDFS appends to it).
pub async fn recover_cost(
    addr: SocketAddr,
    base: &str,
    size: u64,
    bar: &ProgressBar,
) -> BenchResult<(f64, f64)> {
    let client = Client::connect(format!("http://{addr}")).await?;
    let data = chunk_data(MIB as usize);
    let mut seconds = [0.0; 2];
    for (i, more) in [MIB, 0].into_iter().enumerate() {
        let path = format!(
            "{base}/recover-{size}-{i}-{}",
            uuid::Uuid::new_v4().simple()
        );
        let mut stream = client.open(&path).await?;
        for _ in 0..size / MIB {
            stream.write_bytes(data.clone()).await?;
            bar.inc(MIB);
        }
        let handle = stream.persist().await?;
        if more > 0 {
            stream.write_bytes(data.clone()).await?;
            stream.flush().await?;
        }
        stream.abort().await?;
        let t = Instant::now();
        let stream = client.recover(&handle).await?;
        seconds[i] = t.elapsed().as_secs_f64();
        stream.close_for_commit().await?.commit().await?;
        delete_all(addr, &[path]).await?;
    }
    Ok((seconds[0], seconds[1]))
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
    after.record_since(&before, w.total(), &mut run);
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

/// The Flink baseline: the same workload written by Flink's own
/// recoverable writer for `dir_uri` (LocalRecoverableWriter on file://,
/// flink-s3-fs-hadoop's on s3://) in a JVM, `FlinkWriterBaseline` of
/// clients/java/flink-fs-sluice; `flink` is that module's `target` folder
/// after `mvn install -DskipTests`. The JVM writes a warm-up file first and
/// times only the workload; `conf` is Flink configuration (`key=value`).
pub async fn flink_writer(
    flink: &Path,
    dir_uri: &str,
    w: &Workload,
    conf: &[String],
    bar: &ProgressBar,
) -> BenchResult<Run> {
    let listed = flink.join("bench.classpath");
    let deps = std::fs::read_to_string(&listed).map_err(|e| {
        format!(
            "{}: {e}; build it first: cd clients/java && mvn -B -q install -DskipTests",
            listed.display()
        )
    })?;
    // Not the plugin's own classes: Flink's factories alone serve the URI.
    let classpath = format!("{}:{}", flink.join("test-classes").display(), deps.trim());
    bar.set_message("Flink's writer, in a JVM (warm-up file first)");
    let mut java = Command::new("java");
    java.arg("-cp")
        .arg(classpath)
        .arg("dev.sluice.flink.FlinkWriterBaseline")
        .arg(dir_uri)
        .args([
            w.file_size.to_string(),
            w.chunk.to_string(),
            w.persist_every.to_string(),
            w.writers.to_string(),
            w.files_per_writer.to_string(),
        ])
        .args(conf)
        .env("FLINK_PLUGINS_DIR", flink.join("flink-plugins"))
        .stdin(Stdio::null());
    let out = tokio::task::spawn_blocking(move || java.output())
        .await?
        .map_err(|e| format!("cannot start java for the Flink baseline: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "the Flink baseline failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| format!("the Flink baseline printed no result: {stdout}"))?;
    let v: serde_json::Value = serde_json::from_str(line)?;
    let seconds = v["seconds"]
        .as_f64()
        .ok_or("the Flink baseline gave no seconds")?;
    let histogram = |key: &str| -> BenchResult<Histogram<u64>> {
        let mut h = Histogram::<u64>::new(3)?;
        for us in v[key]
            .as_array()
            .ok_or("the Flink baseline's result lacks a list")?
        {
            h.record(us.as_u64().unwrap_or(0).max(1))?;
        }
        Ok(h)
    };
    bar.inc(w.total());
    let mut run = Run::timed(w.total(), seconds);
    run.persist = Latency::of(&histogram("persist_us")?);
    run.commit = Latency::of(&histogram("commit_us")?);
    Ok(run)
}
