//! The `sluice` binary killed with -9 and started again on the same data
//! dir: everything acknowledged survives.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use tonic::Code;

use crate::harness::*;

pub struct Gateway {
    child: Child,
    pub addr: SocketAddr,
    /// The admin HTTP port (/metrics, /healthz, /readyz).
    pub admin: SocketAddr,
    /// Addresses and the final "stopped" line, as the process logs them.
    logs: std::sync::mpsc::Receiver<(bool, String)>,
    /// Whether it warned that the last gateway on its state did not stop
    /// cleanly (logged before its addresses).
    pub warned_unclean: bool,
}

impl Gateway {
    /// Starts `sluice serve` on a free port and reads the address it logs.
    fn start(data_dir: &Path) -> Gateway {
        Gateway::start_with(data_dir, None)
    }

    /// The same, with `yaml` as its config file.
    fn start_with(data_dir: &Path, yaml: Option<&str>) -> Gateway {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir);
        Gateway::spawn(cmd, data_dir, yaml)
    }

    /// `sluice serve` on its defaults in `dir` (as the README runs it).
    pub fn start_on_defaults(dir: &Path) -> Gateway {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.args(["serve", "--listen", "127.0.0.1:0"])
            .current_dir(dir);
        Gateway::spawn(cmd, dir, None)
    }

    /// A gateway started by `cmd`, which must run `sluice serve` with its
    /// own --listen and --admin-listen addresses (e.g. through a wrapper).
    pub fn from_command(cmd: Command) -> Gateway {
        Gateway::spawn(cmd, Path::new("."), None)
    }

    fn spawn(mut cmd: Command, data_dir: &Path, yaml: Option<&str>) -> Gateway {
        if let Some(yaml) = yaml {
            let file = data_dir.join("sluice.yaml");
            std::fs::create_dir_all(data_dir).unwrap();
            std::fs::write(&file, yaml).unwrap();
            cmd.arg("--config").arg(file);
        }
        // A port of its own for the admin endpoints: tests run side by side.
        let mut child = cmd
            .args(["--admin-listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the sluice binary starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let line = line.unwrap_or_default();
                if let Some(addr) = line.split("address=").nth(1) {
                    let addr = addr.split_whitespace().next().unwrap().to_string();
                    let _ = tx.send((line.contains("admin"), addr));
                }
                if line.contains("did not stop cleanly") {
                    let _ = tx.send((false, "unclean".into()));
                }
                if line.contains("stopped") {
                    let _ = tx.send((false, "stopped".into()));
                }
                // Keep draining so the server never blocks on a full pipe.
            }
        });
        let (mut addr, mut admin, mut warned_unclean) = (None, None, false);
        while addr.is_none() || admin.is_none() {
            let (is_admin, value) = rx
                .recv_timeout(std::time::Duration::from_secs(30))
                .expect("sluice logs its addresses");
            if value == "unclean" {
                warned_unclean = true;
                continue;
            }
            let value = Some(value.parse().expect("a socket address"));
            if is_admin {
                admin = value
            } else {
                addr = value
            }
        }
        Gateway {
            child,
            addr: addr.unwrap(),
            admin: admin.unwrap(),
            logs: rx,
            warned_unclean,
        }
    }

    fn sigterm(&self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success(), "kill -TERM {pid} failed");
    }

    /// Waits for the process to exit.
    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "sluice did not exit after SIGTERM"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    pub fn kill9(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }
}

#[tokio::test]
async fn kill_9_after_persist_then_recover_and_commit_exact_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("files");
    let target = format!("file://{}/out/part-0", root.display());
    let other = format!("file://{}/out/part-1", root.display());
    let done = format!("file://{}/out/part-2", root.display());

    let first = Gateway::start(dir.path());
    assert!(!first.warned_unclean, "a new state is no crash");
    let mut c = connect(first.addr).await;
    let sid = open(&mut c, &target).await.unwrap();
    write_at(&mut c, &sid, 0, b"persisted bytes|")
        .await
        .unwrap();
    let (resume, _) = persist(&mut c, &sid).await.unwrap();
    write_at(&mut c, &sid, 16, b"lost in the crash")
        .await
        .unwrap();
    // A file closed but not yet committed, and one fully committed.
    let s1 = open(&mut c, &other).await.unwrap();
    write_at(&mut c, &s1, 0, b"closed before the crash")
        .await
        .unwrap();
    let (pending, _) = close(&mut c, &s1).await.unwrap();
    let s2 = open(&mut c, &done).await.unwrap();
    write_at(&mut c, &s2, 0, b"committed before the crash")
        .await
        .unwrap();
    let (committed_handle, _) = close(&mut c, &s2).await.unwrap();
    commit(&mut c, &committed_handle, false).await.unwrap();
    first.kill9();

    let second = Gateway::start(dir.path());
    assert!(second.warned_unclean, "no warning after kill -9");
    let mut c = connect(second.addr).await;
    let msg = expect_code(write_at(&mut c, &sid, 33, b"x").await, Code::NotFound);
    assert!(msg.contains("restarted"), "{msg}");
    let (sid2, pos) = recover(&mut c, &resume).await.unwrap();
    assert_eq!(pos, 16);
    write_at(&mut c, &sid2, pos, b"written after recovery")
        .await
        .unwrap();
    let (h, _) = close(&mut c, &sid2).await.unwrap();
    commit(&mut c, &h, false).await.unwrap();
    assert_eq!(
        std::fs::read(root.join("out/part-0")).unwrap(),
        b"persisted bytes|written after recovery"
    );
    commit(&mut c, &h, true).await.unwrap();
    expect_code(commit(&mut c, &h, false).await, Code::AlreadyExists);
    commit(&mut c, &pending, true).await.unwrap();
    assert_eq!(
        std::fs::read(root.join("out/part-1")).unwrap(),
        b"closed before the crash"
    );
    commit(&mut c, &committed_handle, true).await.unwrap();
    expect_code(
        commit(&mut c, &committed_handle, false).await,
        Code::AlreadyExists,
    );
    second.kill9();

    // sled remembers the commit across another crash.
    let third = Gateway::start(dir.path());
    let mut c = connect(third.addr).await;
    let msg = expect_code(recover(&mut c, &resume).await, Code::FailedPrecondition);
    assert!(msg.contains("committed"), "{msg}");
    let leftovers: Vec<_> = std::fs::read_dir(root.join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "in-progress files left: {leftovers:?}"
    );
    third.kill9();
}

/// An object store: the gateway is killed with -9 between Persist and
/// Recover; a new gateway recovers the upload from the handle alone.
#[tokio::test]
async fn kill_9_between_persist_and_recover_on_s3() {
    use crate::cloud::{s3_client, s3_yaml};
    use crate::emulators::Emulator;
    use crate::multipart::{bytes, write_all};
    let moto = Emulator::moto(None);
    moto.create_bucket("restart");
    let yaml = s3_yaml(&moto.url(), "5mb");
    let dir = tempfile::tempdir().unwrap();
    let part = 5 * 1024 * 1024;
    let first = bytes(11, part + 4321);

    let gateway = Gateway::start_with(dir.path(), Some(&yaml));
    let mut c = connect(gateway.addr).await;
    let sid = open(&mut c, "s3://restart/out/part-0").await.unwrap();
    write_all(&mut c, &sid, 0, &first, 1 << 20).await;
    let (resume, pos) = persist(&mut c, &sid).await.unwrap();
    assert_eq!(pos, first.len() as u64);
    write_all(&mut c, &sid, pos, &bytes(12, part), 1 << 20).await;
    gateway.kill9();

    let gateway = Gateway::start_with(dir.path(), Some(&yaml));
    let mut c = connect(gateway.addr).await;
    let (sid, pos) = recover(&mut c, &resume).await.unwrap();
    assert_eq!(pos, first.len() as u64);
    let last = bytes(13, part / 2);
    write_all(&mut c, &sid, pos, &last, 1 << 20).await;
    let (h, size) = close(&mut c, &sid).await.unwrap();
    assert_eq!(size, (first.len() + last.len()) as u64);
    commit(&mut c, &h, false).await.unwrap();
    gateway.kill9();

    let got = read_object(s3_client(&moto.url(), "restart").as_ref(), "out/part-0").await;
    assert!(
        got == [first, last].concat(),
        "content differs after the restart"
    );
}

/// The same on `gs://` (fake-gcs-server): the handle's components survive
/// the gateway, the recovery goes on after them, and the commit composes
/// exactly the persisted bytes and what followed the recovery.
#[tokio::test]
async fn kill_9_between_persist_and_recover_on_gs() {
    use crate::emulators::Emulator;
    use crate::gcs::{gs_bucket, gs_yaml};
    use crate::multipart::{bytes, write_all};
    let gcs = Emulator::fake_gcs();
    gcs.create_bucket("restart");
    let yaml = gs_yaml(&gcs.url());
    let dir = tempfile::tempdir().unwrap();
    let first = bytes(21, 700_000);

    let gateway = Gateway::start_with(dir.path(), Some(&yaml));
    let mut c = connect(gateway.addr).await;
    let sid = open(&mut c, "gs://restart/out/part-0").await.unwrap();
    write_all(&mut c, &sid, 0, &first, 1 << 18).await;
    let (resume, pos) = persist(&mut c, &sid).await.unwrap();
    assert_eq!(pos, first.len() as u64);
    write_all(&mut c, &sid, pos, &bytes(22, 600_000), 1 << 18).await;
    gateway.kill9();

    let gateway = Gateway::start_with(dir.path(), Some(&yaml));
    let mut c = connect(gateway.addr).await;
    let (sid, pos) = recover(&mut c, &resume).await.unwrap();
    assert_eq!(pos, first.len() as u64);
    let last = bytes(23, 300_000);
    write_all(&mut c, &sid, pos, &last, 1 << 18).await;
    let (h, size) = close(&mut c, &sid).await.unwrap();
    assert_eq!(size, (first.len() + last.len()) as u64);
    commit(&mut c, &h, false).await.unwrap();
    gateway.kill9();

    let got = read_object(gs_bucket(&gcs.url(), "restart").as_ref(), "out/part-0").await;
    assert!(
        got == [first, last].concat(),
        "content differs after the restart"
    );
}

/// The same on `hdfs://` (a MiniDFSCluster): the gateway dies holding the
/// HDFS leases of two temp files, one with unpersisted bytes after its
/// handle and one killed right after its persist. A new gateway recovers
/// each lease; the first continues a copy of the handle's prefix, the
/// second appends to the file itself; both commits hold exactly the
/// persisted bytes and what followed the recovery.
#[tokio::test]
async fn kill_9_between_persist_and_recover_on_hdfs() {
    use crate::emulators::MiniDfs;
    use crate::multipart::{bytes, write_all};
    let dfs = MiniDfs::start();
    let yaml = dfs.yaml();
    let dir = tempfile::tempdir().unwrap();
    let first = bytes(31, 5_000_000);
    let base = format!("{}/restart", dfs.url);

    let gateway = Gateway::start_with(dir.path(), Some(&yaml));
    let mut c = connect(gateway.addr).await;
    let sid = open(&mut c, &format!("{base}/more")).await.unwrap();
    write_all(&mut c, &sid, 0, &first, 1 << 20).await;
    let (more, pos) = persist(&mut c, &sid).await.unwrap();
    assert_eq!(pos, first.len() as u64);
    write_all(&mut c, &sid, pos, &bytes(32, 3_000_000), 1 << 20).await;
    let sid = open(&mut c, &format!("{base}/exact")).await.unwrap();
    write_all(&mut c, &sid, 0, &first, 1 << 20).await;
    let (exact, _) = persist(&mut c, &sid).await.unwrap();
    gateway.kill9();

    let gateway = Gateway::start_with(dir.path(), Some(&yaml));
    let mut c = connect(gateway.addr).await;
    let last = bytes(33, 700_000);
    for (name, handle) in [("more", &more), ("exact", &exact)] {
        let (sid, pos) = recover(&mut c, handle).await.unwrap();
        assert_eq!(pos, first.len() as u64, "{name}");
        write_all(&mut c, &sid, pos, &last, 1 << 20).await;
        let (h, size) = close(&mut c, &sid).await.unwrap();
        assert_eq!(size, (first.len() + last.len()) as u64);
        commit(&mut c, &h, false).await.unwrap();
    }
    gateway.kill9();

    let client = dfs.client();
    for name in ["more", "exact"] {
        let reader = client.read(&format!("/restart/{name}")).await.unwrap();
        let got = reader.read_range(0, reader.file_length()).await.unwrap();
        assert!(
            got == [&first[..], &last[..]].concat(),
            "{name}: content differs after the restart"
        );
    }
    let left: Vec<String> = client
        .list_status("/restart", false)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.path)
        .collect();
    assert_eq!(left, ["/restart/exact", "/restart/more"], "temp files left");
}

/// The README's quickstart, run as written with real grpcurl against the
/// binary on its embedded defaults.
#[test]
fn readme_quickstart_works_as_written() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("```sh\nROOT=$PWD/sluice-data/files")
        .expect("the quickstart block")
        + "```sh\n".len();
    let block = &readme[start..start + readme[start..].find("```").unwrap()];
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start_on_defaults(dir.path());
    let path = format!(
        "{}:{}",
        crate::emulators::tools_bin().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .args(["-c", block])
        .current_dir(dir.path())
        .env("PATH", path)
        .env("ADDR", gateway.addr.to_string())
        .output()
        .unwrap();
    gateway.kill9();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        stdout.contains("hello, world"),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stderr.contains("AlreadyExists"), "stderr:\n{stderr}");
    assert!(
        stdout.contains("\"name\": \"hello.txt\""),
        "stdout:\n{stdout}"
    );
    assert!(!stdout.contains("inprogress"), "stdout:\n{stdout}");
}

/// SIGTERM with a Write call in flight: readiness turns 503 at once, the
/// call completes or fails cleanly, the process flushes and exits 0 within
/// its grace period, and everything persisted recovers after a restart.
#[tokio::test]
async fn sigterm_drains_flushes_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let target = format!("file://{}/files/out/part-0", dir.path().display());
    let mut gateway = Gateway::start_with(dir.path(), Some("shutdown.grace-period: 1s\n"));
    let mut c = connect(gateway.addr).await;
    let sid = open(&mut c, &target).await.unwrap();
    write_at(&mut c, &sid, 0, b"persisted before, ")
        .await
        .unwrap();
    // A Write call in flight: one message applied, the stream still open.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(sluice::proto::WriteRequest {
        crc32c: None,
        session_id: sid.clone(),
        offset: 18,
        data: bytes::Bytes::from_static(b"and during."),
    })
    .await
    .unwrap();
    let mut writer = c.clone();
    let in_flight = tokio::spawn(async move {
        writer
            .write(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map(|r| r.into_inner().position)
    });
    let mut persisted = None;
    for _ in 0..100 {
        let (handle, pos) = persist(&mut c, &sid).await.unwrap();
        if pos == 29 {
            persisted = Some(handle);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let handle = persisted.expect("the in-flight message was applied");
    assert_eq!(http_get(gateway.admin, "/readyz").await.0, 200);

    gateway.sigterm();
    let mut saw_not_ready = false;
    for _ in 0..50 {
        match tokio::time::timeout(
            std::time::Duration::from_millis(200),
            http_get(gateway.admin, "/readyz"),
        )
        .await
        {
            Ok((503, _)) => {
                saw_not_ready = true;
                break;
            }
            Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            Err(_) => break,
        }
    }
    assert!(saw_not_ready, "/readyz never said 503 during the drain");
    let status = gateway.wait_exit();
    assert!(status.success(), "sluice exited with {status}");
    let mut stopped = false;
    while let Ok((_, line)) = gateway.logs.recv_timeout(std::time::Duration::from_secs(2)) {
        stopped |= line == "stopped";
    }
    assert!(stopped, "sluice did not log that it flushed and stopped");
    // The Write call ended one way or the other, not hanging.
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(10), in_flight)
        .await
        .expect("the in-flight Write call ended")
        .unwrap();
    if let Ok(position) = outcome {
        assert_eq!(position, 29);
    }
    drop(tx);

    let gateway = Gateway::start(dir.path());
    assert!(!gateway.warned_unclean, "a warning after a clean stop");
    let mut c = connect(gateway.addr).await;
    let (sid, pos) = recover(&mut c, &handle).await.unwrap();
    assert_eq!(pos, 29);
    let (h, _) = close(&mut c, &sid).await.unwrap();
    commit(&mut c, &h, false).await.unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("files/out/part-0")).unwrap(),
        b"persisted before, and during."
    );
    gateway.kill9();
}

/// A plain HTTP/1.1 GET; returns the status and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = String::new();
    conn.read_to_string(&mut raw).await.unwrap();
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// Gateways killed with -9 while Opens are in flight leave no temp file
/// that their sled does not name: after a restart the janitor finds and
/// removes every one of them.
#[tokio::test]
async fn kill_9_during_opens_leaves_nothing_unrecorded() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("files/out");
    let mut opened = 0usize;
    for round in 0..4u64 {
        let gateway = Gateway::start(dir.path());
        let c = connect(gateway.addr).await;
        let openers: Vec<_> = (0..8)
            .map(|task| {
                let mut c = c.clone();
                let out = out.clone();
                tokio::spawn(async move {
                    let mut n = 0usize;
                    loop {
                        let path = format!("file://{}/r{round}-t{task}-{n}", out.display());
                        if open(&mut c, &path).await.is_err() {
                            return n;
                        }
                        n += 1;
                    }
                })
            })
            .collect();
        // Kill at a different moment of the Open traffic each round.
        tokio::time::sleep(std::time::Duration::from_millis(150 + 37 * round)).await;
        gateway.kill9();
        for opener in openers {
            opened += opener.await.unwrap();
        }
    }
    assert!(opened > 0, "no Open succeeded before the kills");
    let temp_files = || -> Vec<String> {
        std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains(".inprogress."))
            .collect()
    };
    assert!(!temp_files().is_empty(), "the Opens created temp files");
    let gateway = Gateway::start_with(
        dir.path(),
        Some("janitor.ttl: 1s\njanitor.interval: 200ms\n"),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !temp_files().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        temp_files(),
        Vec::<String>::new(),
        "temp files no record names, after {opened} Opens and 4 kills"
    );
    gateway.kill9();
}
