//! The measured processes: the `sluice` server and the sink, as children
//! whose RSS and CPU time are read from `/proc`.

use super::*;

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
    pub minor_faults: u64,
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

    pub fn pid(&self) -> u32 {
        self.process.id()
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

impl ProcStats {
    /// Sets `run`'s CPU and page faults per GiB from this process's figures
    /// before and after it wrote `bytes`.
    pub fn record_since(&self, before: &ProcStats, bytes: u64, run: &mut Run) {
        let gib = bytes as f64 / GIB as f64;
        run.server_cpu_s_per_gib = Some((self.cpu_s - before.cpu_s) / gib);
        run.server_minor_faults_per_gib =
            Some(self.minor_faults.saturating_sub(before.minor_faults) as f64 / gib);
    }
}

pub fn proc_stats(pid: u32) -> ProcStats {
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
    let number = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15: indexes 11 and 12 here.
    let cpu_s = (number(11) + number(12)) as f64 / clock_ticks() as f64;
    ProcStats {
        rss_kib: field("VmRSS:"),
        peak_rss_kib: field("VmHWM:"),
        cpu_s,
        // minflt is field 10.
        minor_faults: number(7),
    }
}

pub(crate) fn clock_ticks() -> u64 {
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
