//! `sluice cp`, `cat`, `ls` and `rm` against a real gateway: a copy
//! interrupted (Ctrl-C, then kill -9) and resumed by the same command
//! commits the exact bytes once.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

fn sluice(addr: std::net::SocketAddr, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.args(args).env("SLUICE_ADDR", format!("http://{addr}"));
    cmd
}

#[track_caller]
fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The position the resume file records, once it records one above 0.
fn resume_position(file: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("position "))
        .and_then(|p| p.parse().ok())
        .filter(|&p| p > 0)
}

/// Starts `sluice cp` and stops it (with `signal`) once it has persisted
/// past the start; returns its output and the position it had saved.
fn interrupted_cp(mut cmd: Command, resume: &Path, signal: &str) -> (Output, u64) {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let position = loop {
        if let Some(p) = resume_position(resume) {
            break p;
        }
        assert!(Instant::now() < deadline, "cp persisted nothing in 60 s");
        std::thread::sleep(Duration::from_millis(5));
    };
    let sent = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    (child.wait_with_output().unwrap(), position)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_cp_resumes_and_commits_the_exact_bytes_once() {
    let server = TestServer::start("").await;
    let root = server.file_root();
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("big.bin");
    let data = crate::multipart::bytes(7, 160 << 20);
    std::fs::write(&source, &data).unwrap();
    let resume = work.path().join(".big.bin.sluice-cp");
    let target = format!("file://{}/up/big.bin", root.display());
    let cp = || {
        sluice(
            server.addr,
            &[
                "cp",
                "--persist-every",
                "1mb",
                source.to_str().unwrap(),
                &target,
            ],
        )
    };

    // Ctrl-C: the copy persists what it sent, says how to go on, exits 1.
    let (out, _) = interrupted_cp(cp(), &resume, "-INT");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("run the same command again"), "{stderr}");
    let after_int = resume_position(&resume).expect("the resume file stays");
    assert!(
        after_int < data.len() as u64,
        "the copy finished before the interrupt"
    );
    assert!(
        !root.join("up/big.bin").exists(),
        "published before the commit"
    );

    // kill -9 mid-copy: the next run goes on from the last saved handle.
    let (out, saved) = interrupted_cp(cp(), &resume, "-KILL");
    assert!(!out.status.success());
    assert!(saved >= after_int);

    let out = cp().output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("resuming the copy"), "{stderr}");
    assert!(
        stderr.contains(&format!("copied {} bytes", data.len())),
        "{stderr}"
    );
    assert!(
        !resume.exists(),
        "the resume file is removed after the commit"
    );
    assert!(
        std::fs::read(root.join("up/big.bin")).unwrap() == data,
        "the committed bytes differ from the source"
    );
    // Once only: the same command again is refused, the file unchanged.
    let again = cp().output().unwrap();
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("ALREADY_EXISTS")
            || String::from_utf8_lossy(&again.stderr).contains("already exists"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // cat, ls and rm on the read side.
    let cat = sluice(server.addr, &["cat", &target]).output().unwrap();
    assert!(cat.status.success());
    assert!(cat.stdout == data, "cat printed other bytes");
    let dir = format!("file://{}/up", root.display());
    let listing = ok(sluice(server.addr, &["ls", &dir]).output().unwrap(), "ls");
    assert!(
        listing.contains(&format!("{} ", data.len())) && listing.contains("big.bin"),
        "{listing}"
    );
    assert!(!listing.contains("inprogress"), "{listing}");
    ok(
        sluice(server.addr, &["rm", &target]).output().unwrap(),
        "rm",
    );
    let listing = ok(sluice(server.addr, &["ls", &dir]).output().unwrap(), "ls");
    assert!(!listing.contains("big.bin"), "{listing}");
    let gone = sluice(server.addr, &["rm", &target]).output().unwrap();
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("does not exist"));
}

#[test]
fn cp_without_a_gateway_says_what_to_do() {
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("f");
    std::fs::write(&source, b"x").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["cp", source.to_str().unwrap(), "memory://m/f"])
        .env("SLUICE_ADDR", "http://127.0.0.1:1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is `sluice serve` running"), "{stderr}");
}
