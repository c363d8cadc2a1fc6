//! The clients of other languages, and the exactly-once proof, run from
//! the test suite: the Python client's own pytest suite, the Go client's
//! `go vet` and `go test`, the crash harness of `examples/exactly_once` on
//! file://, s3:// and gs:// (with two replicas), and the TypeScript
//! client's own suite.

use std::path::Path;
use std::process::Command;

use crate::emulators::{Emulator, python_with_client};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `cmd`, failing the test with everything it printed.
fn run_ok(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn python_client_tests_pass() {
    let python = python_with_client();
    let tests = repo().join("clients/python/tests");
    // Run from elsewhere, so the installed package (with its generated
    // stubs) is the one imported, not the source folder.
    let cwd = tempfile::tempdir().unwrap();
    let out = run_ok(
        Command::new(&python)
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
            .arg(&tests)
            .current_dir(cwd.path())
            .env("SLUICE_BIN", env!("CARGO_BIN_EXE_sluice")),
        "pytest clients/python/tests",
    );
    assert!(out.contains(" passed"), "{out}");
    assert!(!out.contains("skipped"), "{out}");
}

/// The Go client: gofmt and go vet clean, and its own tests against the
/// gateway binary (real gateways on loopback, cut and corrupting proxies,
/// TLS, the stub drift check with the protoc this crate builds with, the
/// README's Go example run as written, the worked consumer killed
/// mid-stream). Go modules go to `target/emulators/go-mod`.
#[test]
fn go_client_tests_pass() {
    let dir = repo().join("clients/go");
    let go = |args: &[&str]| {
        let mut cmd = Command::new("go");
        cmd.args(args)
            .current_dir(&dir)
            .env("GOMODCACHE", repo().join("target/emulators/go-mod"))
            .env("GOFLAGS", "-modcacherw")
            .env("SLUICE_BIN", env!("CARGO_BIN_EXE_sluice"))
            .env("PROTOC", protoc_bin_vendored::protoc_bin_path().unwrap());
        cmd
    };
    let unformatted = run_ok(
        Command::new("gofmt").args(["-l", "."]).current_dir(&dir),
        "gofmt -l",
    );
    assert!(
        unformatted.trim().is_empty(),
        "gofmt would change: {unformatted}"
    );
    run_ok(&mut go(&["vet", "./..."]), "go vet ./...");
    let out = run_ok(
        &mut go(&["test", "-count=1", "-v", "./..."]),
        "go test ./...",
    );
    assert!(
        out.contains("ok  \tgithub.com/sluice-gateway/sluice/clients/go"),
        "{out}"
    );
    assert!(!out.contains("--- SKIP"), "{out}");
    for test in [
        "TestCutConnectionsAreRetriedWithoutDuplicates",
        "TestDamagedWritesAreCaughtAndSentAgain",
        "TestStubsMatchTheProto",
        "TestReadmeExampleRunsAsWritten",
        "TestConsumerExampleResumesExactlyOnce",
    ] {
        assert!(
            out.contains(&format!("--- PASS: {test}")),
            "{test} did not pass:\n{out}"
        );
    }
}

/// The Java client and the Flink plugin (clients/java, Maven, artifacts in
/// `target/emulators/m2`): the client's tests against real gateways;
/// Flink's own `AbstractRecoverableWriterTest` (from flink-core's test jar)
/// on file://, memory:// and s3:// (moto) through the plugin, with the
/// cases that cannot pass named by `@Disabled` with their reason; a
/// MiniCluster job with FileSink on s3:// through the plugin, with task
/// failures and the gateway killed with -9 mid-run, every record once;
/// the Flink-writer-against-sluice throughput job at a tiny size; Flink's
/// own writers writing sluice-bench's workload (FlinkWriterBaseline, on
/// file://, moto and fake-gcs-server); the Java sources checked against
/// google-java-format (spotless); then the plugin's shaded jar is packaged;
/// last, `sluice-bench run --flink` on file://, s3:// and gs:// with what it
/// built.
#[test]
fn java_client_and_flink_plugin_tests_pass() {
    let moto = Emulator::moto(None);
    let gcs = Emulator::fake_gcs();
    let dir = repo().join("clients/java");
    let out = run_ok(
        Command::new("mvn")
            .args(["-B", "-ntp", "verify"])
            .arg(format!(
                "-Dmaven.repo.local={}",
                repo().join("target/emulators/m2").display()
            ))
            .current_dir(&dir)
            .env("SLUICE_BIN", env!("CARGO_BIN_EXE_sluice"))
            .env("SLUICE_TEST_S3_ENDPOINT", moto.url())
            .env("SLUICE_TEST_GCS_ENDPOINT", gcs.url()),
        "mvn verify in clients/java",
    );
    assert!(out.contains("BUILD SUCCESS"), "{out}");
    let report = |module: &str, class: &str| {
        let file = dir
            .join(module)
            .join("target/surefire-reports")
            .join(format!("{class}.txt"));
        std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
    };
    for scheme in ["File", "Memory", "S3"] {
        let class = format!("org.apache.flink.core.fs.Sluice{scheme}RecoverableWriterTest");
        let text = report("flink-fs-sluice", &class);
        assert!(
            text.contains("Tests run: 11, Failures: 0, Errors: 0, Skipped: 4,"),
            "Flink's RecoverableWriter suite on {scheme}:\n{text}"
        );
    }
    let job = report("flink-fs-sluice", "dev.sluice.flink.FileSinkJobTest");
    assert!(
        job.contains("Tests run: 1, Failures: 0, Errors: 0, Skipped: 0"),
        "{job}"
    );
    let points = report("flink-fs-sluice", "dev.sluice.flink.RecoveryPointsTest");
    assert!(
        points.contains("Tests run: 4, Failures: 0, Errors: 0, Skipped: 0"),
        "{points}"
    );
    let speed = report(
        "flink-fs-sluice",
        "dev.sluice.flink.FlinkSinkThroughputTest",
    );
    assert!(
        speed.contains("Tests run: 1, Failures: 0, Errors: 0, Skipped: 0"),
        "{speed}"
    );
    let baseline = report(
        "flink-fs-sluice",
        "dev.sluice.flink.FlinkWriterBaselineTest",
    );
    assert!(
        baseline.contains("Tests run: 3, Failures: 0, Errors: 0, Skipped: 0"),
        "{baseline}"
    );
    let client = report("sluice-client", "dev.sluice.client.SluiceClientTest");
    assert!(
        client.contains("Tests run: 6, Failures: 0, Errors: 0, Skipped: 0"),
        "{client}"
    );
    assert!(
        dir.join("flink-fs-sluice/target/flink-fs-sluice-0.1.0.jar")
            .exists()
    );
    // sluice-bench against Flink's own writers, with what this build left.
    moto.create_bucket("bench");
    gcs.create_bucket("bench");
    for scheme in ["file", "s3", "gs"] {
        let out = run_ok(
            Command::new(crate::bench::bench_binary())
                .args(["run", "--quiet", "--runs", "1", "--json", "-"])
                .args(["--scheme", scheme, "--file-size", "12mb"])
                .args(["--persist-every", "4mb", "--s3-endpoint", &moto.url()])
                .args(["--gcs-endpoint", &gcs.url()])
                .args(["--sluice", env!("CARGO_BIN_EXE_sluice")])
                .arg("--flink")
                .arg(dir.join("flink-fs-sluice/target")),
            "sluice-bench run --flink",
        );
        let report: serde_json::Value = serde_json::from_str(&out).expect("JSON");
        let s = &report["scenarios"][0];
        let want = match scheme {
            "file" => "Flink LocalRecoverableWriter (in a JVM)",
            "s3" => "Flink S3 RecoverableWriter (flink-s3-fs-hadoop)",
            _ => "Flink GSRecoverableWriter (flink-gs-fs-hadoop)",
        };
        assert_eq!(s["baseline_name"], want, "{s:#}");
        let flink = &s["baseline"][0];
        // 12 MiB, persisted at 4 and 8 MiB, then committed, by Flink's writer.
        assert_eq!(flink["bytes"], 12 << 20, "{s:#}");
        assert_eq!(flink["persist"]["count"], 2, "{s:#}");
        assert_eq!(flink["commit"]["count"], 1, "{s:#}");
        assert!(flink["mib_per_s"].as_f64().unwrap() > 0.0, "{s:#}");
        assert!(s["ratio"].as_f64().unwrap() > 0.0, "{s:#}");
    }
}

/// The crash harness's summary, as JSON.
fn harness(args: &[&str]) -> serde_json::Value {
    harness_with(args, &[])
}

fn harness_with(args: &[&str], env: &[(&str, std::path::PathBuf)]) -> serde_json::Value {
    let python = python_with_client();
    let out = run_ok(
        Command::new(&python)
            .arg(repo().join("examples/exactly_once/harness.py"))
            .args([
                "--sluice",
                env!("CARGO_BIN_EXE_sluice"),
                "--json",
                "--quiet",
            ])
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v))),
        "examples/exactly_once/harness.py",
    );
    let summary: serde_json::Value = serde_json::from_str(&out).expect("the harness prints JSON");
    eprintln!("{summary:#}");
    // Checked here again from the figures, not only from "ok".
    for zero in ["lost", "duplicated", "out_of_order", "corrupt"] {
        assert_eq!(summary[zero], 0, "{zero} records: {summary:#}");
    }
    assert_eq!(
        summary["records_committed"], summary["records"],
        "{summary:#}"
    );
    assert_eq!(summary["leftovers"], serde_json::json!([]), "{summary:#}");
    assert_eq!(summary["required_points_missed"], serde_json::json!([]));
    assert_eq!(summary["ok"], true);
    summary
}

/// A thousand crashes, as issue 20 asks of the harness: 800,000 records
/// in 3,200 parts, every named point for every victim (about 9 minutes on
/// a debug build; `s3://` at that scale takes over an hour on moto, so it
/// is run by hand with the README's command).
#[test]
fn exactly_once_under_a_thousand_crashes_on_file() {
    // 1,600 records per crash: with the harness's default 800, a fast
    // host finished the job after 690 crashes (2026-12-04).
    let summary = harness(&[
        "--backend",
        "file",
        "--crashes",
        "1000",
        "--records",
        "1600000",
    ]);
    assert!(summary["crashes"].as_u64().unwrap() >= 1000);
    assert_eq!(summary["records"], 1_600_000, "{summary:#}");
}

#[test]
fn exactly_once_under_crashes_across_two_replicas_on_s3() {
    let moto = Emulator::moto(None);
    moto.create_bucket("jobs");
    let summary = harness(&[
        "--backend",
        "s3",
        "--s3-endpoint",
        &moto.url(),
        "--bucket",
        "jobs",
        "--replicas",
        "2",
        "--crashes",
        "15",
    ]);
    assert!(summary["crashes"].as_u64().unwrap() >= 15);
    assert!(
        summary["replica_switches"].as_u64().unwrap() >= 3,
        "the job should have resumed on the other replica: {summary:#}"
    );
}

#[test]
fn exactly_once_under_crashes_across_two_replicas_on_gs() {
    let gcs = Emulator::fake_gcs();
    gcs.create_bucket("jobs");
    let summary = harness(&[
        "--backend",
        "gs",
        "--gs-endpoint",
        &gcs.url(),
        "--bucket",
        "jobs",
        "--replicas",
        "2",
        "--crashes",
        "15",
    ]);
    assert!(summary["crashes"].as_u64().unwrap() >= 15);
    assert!(
        summary["replica_switches"].as_u64().unwrap() >= 3,
        "the job should have resumed on the other replica: {summary:#}"
    );
}

#[test]
fn exactly_once_under_crashes_across_two_replicas_on_hdfs() {
    let dfs = crate::emulators::MiniDfs::start();
    let summary = harness(&[
        "--backend",
        "hdfs",
        "--hdfs",
        &dfs.url,
        "--webhdfs",
        &dfs.webhdfs,
        "--replicas",
        "2",
        "--crashes",
        "15",
    ]);
    assert!(summary["crashes"].as_u64().unwrap() >= 15);
    assert!(
        summary["replica_switches"].as_u64().unwrap() >= 3,
        "the job should have resumed on the other replica: {summary:#}"
    );
}

/// The crash harness with the job written in Go (clients/go/examples/job)
/// and in TypeScript (clients/node/examples/job.ts), across two replicas:
/// each language's verifier counts lost 0, duplicated 0.
#[test]
fn exactly_once_with_the_go_job() {
    let summary = harness_with(
        &[
            "--job",
            "go",
            "--backend",
            "file",
            "--replicas",
            "2",
            "--crashes",
            "12",
        ],
        &[
            ("GOMODCACHE", repo().join("target/emulators/go-mod")),
            ("GOFLAGS", "-modcacherw".into()),
        ],
    );
    assert_eq!(summary["job"], "go");
}

#[test]
fn exactly_once_with_the_typescript_job() {
    let _built = node_client_built();
    let summary = harness_with(
        &[
            "--job",
            "ts",
            "--backend",
            "file",
            "--replicas",
            "2",
            "--crashes",
            "12",
        ],
        &[],
    );
    assert_eq!(summary["job"], "ts");
}

#[test]
fn exactly_once_across_two_replicas_on_file() {
    let summary = harness(&["--backend", "file", "--replicas", "2", "--crashes", "12"]);
    assert!(
        summary["replica_switches"].as_u64().unwrap() >= 3,
        "{summary:#}"
    );
}

fn npm(args: &[&str]) -> Command {
    let mut cmd = Command::new("npm");
    cmd.args(args)
        .current_dir(repo().join("clients/node"))
        .env("SLUICE_BIN", env!("CARGO_BIN_EXE_sluice"));
    cmd
}

/// `clients/node` installed from its lock file (when its node_modules is
/// older than the lock) and built; the returned lock keeps other tests
/// from rebuilding it meanwhile.
fn node_client_built() -> std::fs::File {
    let lock = std::fs::File::create(repo().join("target/.node-client.lock")).unwrap();
    lock.lock().unwrap();
    let dir = repo().join("clients/node");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let installed = modified(&dir.join("node_modules/.package-lock.json"));
    if installed.is_none() || installed < modified(&dir.join("package-lock.json")) {
        run_ok(
            &mut npm(&["ci", "--no-audit", "--no-fund", "--ignore-scripts"]),
            "npm ci in clients/node",
        );
    }
    run_ok(&mut npm(&["run", "build"]), "npm run build");
    lock
}

/// The TypeScript client: installed from its lock file into
/// `clients/node/node_modules`, built (types generated from `proto/`),
/// type-checked and prettier-clean, and its node:test suite run against
/// the gateway binary (cut and corrupting proxies, a token, TLS, the
/// README's example as written).
#[test]
fn node_client_tests_pass() {
    let _built = node_client_built();
    run_ok(&mut npm(&["run", "lint"]), "npm run lint");
    let out = run_ok(&mut npm(&["test"]), "npm test");
    assert!(out.contains("# fail 0"), "{out}");
    assert!(out.contains("# skipped 0"), "{out}");
    assert!(!out.contains("# pass 0"), "{out}");
}
