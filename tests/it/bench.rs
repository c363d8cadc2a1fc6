//! A smoke run of `sluice-bench suite --quick --instructions` (tiny sizes,
//! one run, and valgrind's instruction counts) with
//! moto and a MiniDFSCluster, so the benchmark never rots; the full run is
//! the README's command.

use std::process::Command;

use crate::emulators::{Emulator, MiniDfs};

#[test]
fn bench_suite_smoke_run_reports_every_scenario_and_baseline() {
    let moto = Emulator::moto(None);
    moto.create_bucket("bench");
    let dfs = MiniDfs::start();
    let dir = tempfile::tempdir().unwrap();
    let (json, svg) = (dir.path().join("bench.json"), dir.path().join("chart.svg"));
    let out = Command::new(bench_binary())
        .args([
            "suite",
            "--quick",
            "--quiet",
            "--instructions",
            "--bucket",
            "bench",
        ])
        .args(["--sluice", env!("CARGO_BIN_EXE_sluice")])
        .args(["--s3-endpoint", &moto.url()])
        .args(["--hdfs", &dfs.url])
        .arg("--json")
        .arg(&json)
        .arg("--svg")
        .arg(&svg)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "sluice-bench failed:\n{table}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let scenarios = report["scenarios"].as_array().unwrap();
    let names: Vec<&str> = scenarios
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "memory://, 1 writer",
            "file://, 1 writer",
            "file://, 1 writer, fresh-buffer baseline",
            "s3:// (moto), 1 writer",
            "hdfs://, 1 writer"
        ]
    );
    for s in scenarios {
        let (ours, theirs) = (&s["sluice"][0], &s["baseline"][0]);
        // The same bytes on both sides, and real figures.
        assert_eq!(ours["bytes"], theirs["bytes"], "{s:#}");
        assert!(ours["mib_per_s"].as_f64().unwrap() > 0.0, "{s:#}");
        assert!(theirs["mib_per_s"].as_f64().unwrap() > 0.0, "{s:#}");
        assert!(s["ratio"].as_f64().unwrap() > 0.0, "{s:#}");
        assert!(ours["persist"]["count"].as_u64().unwrap() >= 3, "{s:#}");
        assert_eq!(ours["commit"]["count"], 1, "{s:#}");
        assert!(ours["server_cpu_s_per_gib"].as_f64().is_some(), "{s:#}");
    }
    let concurrency = report["concurrency"].as_array().unwrap();
    assert_eq!(concurrency.len(), 2);
    let figures: Vec<&str> = report["figures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(figures.len(), 10, "{figures:?}");
    // Instructions per GiB, counted under callgrind for each scheme: real
    // counts (a server that did nothing would count far below 0.1 G).
    for scheme in ["memory", "file", "s3", "hdfs"] {
        let counted = report["figures"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| {
                f["name"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("server instructions per GiB, {scheme}://"))
            })
            .unwrap_or_else(|| panic!("no instruction count for {scheme}: {figures:?}"));
        let giga = counted["value"].as_f64().unwrap();
        assert!(giga > 0.1 && giga < 1000.0, "{counted:#}");
    }
    assert!(
        figures
            .iter()
            .any(|f| f.contains("Recover at 2 MiB, 1 MiB past the handle (copy)")),
        "{figures:?}"
    );
    assert!(table.contains("transport ceiling"), "{table}");
    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(
        chart.starts_with("<svg") && chart.contains("<polyline"),
        "{chart}"
    );
}

/// `sluice-bench`, built beside `sluice`. It is another crate of the
/// workspace, so Cargo neither builds its binary for these tests nor names
/// a `CARGO_BIN_EXE_` for it: the test builds it (a no-op when it is up to
/// date), with the profile the tests were built with.
pub(crate) fn bench_binary() -> std::path::PathBuf {
    let sluice = std::path::Path::new(env!("CARGO_BIN_EXE_sluice"));
    let mut build = Command::new(env!("CARGO"));
    build
        .args([
            "build",
            "--quiet",
            "-p",
            "sluice-bench",
            "--bin",
            "sluice-bench",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if sluice.parent().and_then(|d| d.file_name()) == Some(std::ffi::OsStr::new("release")) {
        build.arg("--release");
    }
    let status = build.status().expect("cargo runs");
    assert!(status.success(), "cargo build -p sluice-bench failed");
    let bench = sluice.with_file_name(format!("sluice-bench{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bench.exists(),
        "{} is missing after its build",
        bench.display()
    );
    bench
}
