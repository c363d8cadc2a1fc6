//! Start-up on a data dir that cannot be used: a clear message and a
//! non-zero exit, never a panic; and a file root that fills up under
//! Write and Persist.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tonic::Code;

use crate::harness::*;
use crate::restart::Gateway;

/// Runs `sluice serve` on `data_dir` (through `wrap` if given) and waits
/// for it to exit on its own.
fn serve_expecting_exit(data_dir: &Path, wrap: &[&str]) -> Output {
    let sluice = env!("CARGO_BIN_EXE_sluice");
    let mut argv: Vec<String> = wrap.iter().map(|s| s.to_string()).collect();
    argv.extend(
        [
            sluice,
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "off",
            "--data-dir",
        ]
        .map(String::from),
    );
    argv.push(data_dir.display().to_string());
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!(
                "sluice kept running on an unusable data dir {}",
                data_dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[track_caller]
fn failed_clearly(out: &Output, wanted: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "exit status; stderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for w in wanted {
        assert!(stderr.contains(w), "stderr lacks {w:?}:\n{stderr}");
    }
    stderr
}

#[test]
fn a_data_dir_that_is_a_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let out = serve_expecting_exit(&file, &[]);
    failed_clearly(&out, &["cannot create the data dir", "not-a-dir"]);
}

#[test]
fn an_unwritable_data_dir_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o555)).unwrap();
    // Root ignores permissions: run sluice as nobody then. (The temp dir
    // we just made is owned by our effective user.)
    let root = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(dir.path()).unwrap()) == 0;
    let wrap: &[&str] = if root {
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ]
    } else {
        &[]
    };
    let out = serve_expecting_exit(&data, wrap);
    failed_clearly(&out, &["Permission denied", "data"]);
}

#[test]
fn a_data_dir_in_use_by_another_sluice_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = Gateway::start_on_defaults(dir.path());
    let out = serve_expecting_exit(&dir.path().join("sluice-data"), &[]);
    failed_clearly(&out, &["another sluice", "sluice-data"]);
    first.kill9();
}

/// `sluice serve` with `args`, after mounting a tmpfs of `size` on `dir`
/// in user and mount namespaces of its own (so the mount needs no
/// privilege outside them).
fn serve_on_tmpfs(dir: &std::path::Path, size: &str, args: &str) -> Gateway {
    let script = format!(
        "mount -t tmpfs -o size={size} tmpfs '{dir}' && exec '{sluice}' serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 {args}",
        dir = dir.display(),
        sluice = env!("CARGO_BIN_EXE_sluice"),
    );
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--user",
        "--map-root-user",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
    ]);
    Gateway::from_command(cmd)
}

/// A file root on a 4 MiB tmpfs (mounted in user and mount namespaces of
/// the gateway's own): a Write that fills it gets RESOURCE_EXHAUSTED; what was
/// persisted before recovers and commits byte-exact once space is freed.
#[tokio::test]
async fn a_full_disk_fails_writes_and_keeps_what_was_persisted() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("small");
    std::fs::create_dir(&root).unwrap();
    let config = dir.path().join("sluice.yaml");
    std::fs::write(
        &config,
        format!("fs.file.allowed-roots: {}\n", root.display()),
    )
    .unwrap();
    let gateway = serve_on_tmpfs(
        &root,
        "4m",
        &format!(
            "--data-dir '{}' --config '{}'",
            dir.path().join("data").display(),
            config.display()
        ),
    );
    let mut c = connect(gateway.addr).await;
    let at = |name: &str| format!("file://{}/{name}", root.display());

    // 1.5 MiB of filler, then 1 MiB persisted in the file that matters.
    put_file(&mut c, &at("filler"), &vec![1u8; 3 << 19]).await;
    let kept: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    let sid = open(&mut c, &at("kept")).await.unwrap();
    write_at(&mut c, &sid, 0, &kept).await.unwrap();
    let (handle, position) = persist(&mut c, &sid).await.unwrap();
    assert_eq!(position, 1 << 20);

    // Another file fills the disk.
    let hog = open(&mut c, &at("hog")).await.unwrap();
    let chunk = vec![2u8; 256 << 10];
    let mut offset = 0u64;
    let status = loop {
        match write_at(&mut c, &hog, offset, &chunk).await {
            Ok(p) => offset = p,
            Err(status) => break status,
        }
        match persist(&mut c, &hog).await {
            Ok(_) => {}
            Err(status) => break status,
        }
        assert!(offset < 8 << 20, "a 4 MiB tmpfs took {offset} bytes");
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("free space"),
        "{}",
        status.message()
    );
    // The first session's next write may fail too; its persisted state
    // stays.
    let _ = write_at(&mut c, &sid, position, b"more").await;

    // Space freed: recover from the handle, finish, commit, read back.
    abort(&mut c, &hog).await.unwrap();
    assert!(delete(&mut c, &at("filler"), false).await.unwrap());
    let (sid, position) = recover(&mut c, &handle).await.unwrap();
    assert_eq!(position, 1 << 20);
    write_at(&mut c, &sid, position, b"|after the disk filled")
        .await
        .unwrap();
    let (h, _) = close(&mut c, &sid).await.unwrap();
    commit(&mut c, &h, false).await.unwrap();
    let mut expected = kept;
    expected.extend_from_slice(b"|after the disk filled");
    assert_eq!(read_all(&mut c, &at("kept"), 0, 0).await.unwrap(), expected);
    gateway.kill9();
}

/// The data dir, sled's state included, on an 8 MiB tmpfs: once the disk
/// is full, no call answers INTERNAL (sled's failures are
/// RESOURCE_EXHAUSTED or UNAVAILABLE), and the gateway says it is not
/// ready (health NOT_SERVING, `/readyz` 503 with the reason) for as long as
/// its state store fails; it never looks healthy while it cannot keep
/// state. Once space is freed, it is ready again exactly when calls work.
#[tokio::test]
async fn a_full_state_disk_makes_the_gateway_not_ready_until_state_works() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let gateway = serve_on_tmpfs(&data, "8m", &format!("--data-dir '{}'", data.display()));
    let mut c = connect(gateway.addr).await;
    let root = data.join("files");
    let at = |name: &str| format!("file://{}/{name}", root.display());
    put_file(&mut c, &at("filler"), &vec![1u8; 3 << 20]).await;
    let (code, _) = crate::restart::http_get(gateway.admin, "/readyz").await;
    assert_eq!(code, 200);

    // Fill the disk, then keep sled writing (each file:// Open flushes it).
    let hog = open(&mut c, &at("hog")).await.unwrap();
    let chunk = vec![2u8; 256 << 10];
    let mut offset = 0u64;
    while let Ok(p) = write_at(&mut c, &hog, offset, &chunk).await {
        offset = p;
        assert!(offset < 16 << 20, "an 8 MiB tmpfs took {offset} bytes");
    }
    let mut not_ready = None;
    for i in 0..400 {
        if let Err(status) = open(&mut c, &at(&format!("small-{i}"))).await {
            assert_ne!(status.code(), Code::Internal, "{status:?}");
        }
        let (code, body) = crate::restart::http_get(gateway.admin, "/readyz").await;
        if code == 503 {
            not_ready = Some(body);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let body = not_ready.expect("the gateway stayed ready on a full state disk");
    assert!(body.contains("state store"), "{body}");
    let status = health_status(gateway.addr, "sluice.v1.StorageGateway").await;
    assert_eq!(status, 2, "health says SERVING while the state store fails");

    // Free space. Ready again exactly when calls work again.
    abort(&mut c, &hog).await.ok();
    assert!(delete(&mut c, &at("filler"), false).await.unwrap());
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let (code, body) = crate::restart::http_get(gateway.admin, "/readyz").await;
    let works = async {
        let sid = open(&mut c, "memory://after/full").await?;
        write_at(&mut c, &sid, 0, b"works").await?;
        let (h, _) = close(&mut c, &sid).await?;
        commit(&mut c, &h, false).await
    }
    .await;
    let (live, live_body) = crate::restart::http_get(gateway.admin, "/healthz").await;
    eprintln!(
        "after freeing space: /readyz {code}: {}; /healthz {live}",
        body.trim()
    );
    match code {
        200 => {
            works.expect("ready, yet calls fail");
            assert_eq!(live, 200);
        }
        _ => {
            // sled 0.34 stays failed in this process: not ready, and not
            // live either, so an orchestrator restarts it.
            assert!(body.contains("restart the gateway"), "{body}");
            assert_eq!(live, 503, "{live_body}");
            let status = works.expect_err("calls work, yet not ready");
            assert_ne!(status.code(), Code::Internal, "{status:?}");
        }
    }
    gateway.kill9();
}
