//! Instruction counts of the server, from valgrind's callgrind: a figure
//! the host's load does not move, unlike seconds. The server runs under
//! `valgrind --tool=callgrind` with instrumentation off while it starts;
//! it is switched on (through `vgdb`) just before the workload and the
//! counters are dumped just after, so the count is the workload's alone.

use super::*;

/// `sluice serve` under callgrind, its dumps in `data_dir`.
pub fn start_sluice_counted(bin: &Path, data_dir: &Path, config: &str) -> BenchResult<Child> {
    std::fs::create_dir_all(data_dir)?;
    let config_path = data_dir.join("bench.yaml");
    std::fs::write(&config_path, config)?;
    let mut cmd = Command::new("valgrind");
    cmd.args(["--tool=callgrind", "--instr-atstart=no"])
        .arg(format!(
            "--callgrind-out-file={}/callgrind.out.%p",
            data_dir.display()
        ))
        .arg(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "off"])
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--config")
        .arg(&config_path);
    Child::spawn(cmd, "sluice under valgrind (apt-get install valgrind)")
}

/// Sends a callgrind monitor command to the process.
fn vgdb(pid: u32, command: &str) -> BenchResult<()> {
    let out = Command::new("vgdb")
        .arg(format!("--pid={pid}"))
        .args(command.split_whitespace())
        .output()
        .map_err(|e| format!("cannot run vgdb (it comes with valgrind): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "vgdb --pid={pid} {command} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(())
}

/// Runs `work` with the server's instrumentation on; returns its result
/// and the instructions the server executed meanwhile (all threads).
pub async fn counting<T>(
    server: &Child,
    data_dir: &Path,
    work: impl std::future::Future<Output = BenchResult<T>>,
) -> BenchResult<(T, u64)> {
    let pid = server.pid();
    vgdb(pid, "instrumentation on")?;
    let result = work.await?;
    vgdb(pid, "dump")?;
    // The dump is written by the server's own thread: wait for it.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(total) = dumped_total(data_dir, pid)? {
            return Ok((result, total));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "callgrind wrote no dump in {} within 60 s",
                data_dir.display()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The `totals:` (or `summary:`) line of the process's newest complete
/// dump: its Ir.
fn dumped_total(dir: &Path, pid: u32) -> BenchResult<Option<u64>> {
    let prefix = format!("callgrind.out.{pid}.");
    let mut best: Option<(u64, u64)> = None;
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let Some(n) = name
            .strip_prefix(&prefix)
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let text = std::fs::read_to_string(dir.join(&name))?;
        let total = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("totals:")
                    .or_else(|| l.strip_prefix("summary:"))
            })
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok());
        if let Some(total) = total
            && best.is_none_or(|(m, _)| n > m)
        {
            best = Some((n, total));
        }
    }
    Ok(best.map(|(_, total)| total))
}
