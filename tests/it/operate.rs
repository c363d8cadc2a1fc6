//! The operator's view, checked for real: promtool checks and unit-tests
//! the alert rules, and a real Prometheus scrapes a real gateway under a
//! known workload while every dashboard panel's query and every alert
//! expression is run against it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tonic::Code;

use crate::emulators::{Emulator, prometheus_bin};
use crate::harness::*;

fn monitoring() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("helm/sluice/monitoring")
}

#[track_caller]
fn promtool(args: &[&str]) -> String {
    let out = Command::new(prometheus_bin().join("promtool"))
        .args(args)
        .current_dir(monitoring())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let checked = promtool(&["check", "rules", "alerts.yaml"]);
    assert!(checked.contains("SUCCESS: 7 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", "alerts.test.yaml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
    // Every alert has a unit test.
    let tests = std::fs::read_to_string(monitoring().join("alerts.test.yaml")).unwrap();
    for alert in alert_rules() {
        assert!(
            tests.contains(&format!("alertname: {}", alert.name)),
            "{} has no promtool test",
            alert.name
        );
    }
}

struct Alert {
    name: String,
    expr: String,
    /// `$labels.<name>` the annotations use.
    labels: BTreeSet<String>,
}

fn alert_rules() -> Vec<Alert> {
    let text = std::fs::read_to_string(monitoring().join("alerts.yaml")).unwrap();
    let doc: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    doc["groups"][0]["rules"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| {
            let annotations = serde_norway::to_string(&r["annotations"]).unwrap();
            Alert {
                name: r["alert"].as_str().unwrap().to_string(),
                expr: r["expr"].as_str().unwrap().trim().to_string(),
                labels: names_after(&annotations, "$labels."),
            }
        })
        .collect()
}

/// The identifiers that follow each `marker` in `text`.
fn names_after(text: &str, marker: &str) -> BTreeSet<String> {
    text.split(marker)
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|n| !n.is_empty())
        .collect()
}

/// An alert expression without its final comparison: `a / b > 0.05` gives
/// `a / b`, the series the alert is about whatever their values.
fn signal(expr: &str) -> &str {
    let (mut depth, mut quoted, mut cut) = (0i32, false, None);
    let bytes = expr.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            b'(' | b'{' | b'[' if !quoted => depth += 1,
            b')' | b'}' | b']' if !quoted => depth -= 1,
            b'>' | b'<' | b'=' | b'!' if !quoted && depth == 0 && i > 0 && bytes[i - 1] == b' ' => {
                cut = Some(i)
            }
            _ => {}
        }
    }
    expr[..cut.expect("the expression ends in a comparison")].trim()
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs an instant query; returns each series' labels and value.
async fn query(prometheus: &Emulator, expr: &str) -> Vec<(serde_json::Value, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // HTTP/1.0, so the answer is never chunked.
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", prometheus.port))
        .await
        .unwrap();
    let request = format!(
        "GET /api/v1/query?query={} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n",
        percent_encode(expr)
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    conn.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{expr}: {raw}"
    );
    let json: serde_json::Value =
        serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("{expr}: {e}: {body}"));
    assert_eq!(json["status"], "success", "{expr}: {json}");
    json["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["metric"].clone(),
                r["value"][1].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// One round of the known workload: a file committed on each scheme, a
/// read, an Open refused by the file:// limit after waiting, an Open that
/// waited and got its slot, and an aborted session the janitor removes.
async fn workload(c: &mut Client, root: &Path, round: u32) {
    for scheme in ["memory://ops", &format!("file://{}", root.display())] {
        let target = format!("{scheme}/out/part-{round}");
        let sid = open(c, &target).await.unwrap();
        write_at(c, &sid, 0, &[7u8; 4096]).await.unwrap();
        persist(c, &sid).await.unwrap();
        let (h, _) = close(c, &sid).await.unwrap();
        commit(c, &h, false).await.unwrap();
        read_all(c, &target, 0, 0).await.unwrap();
    }
    let file = |name: &str| format!("file://{}/held/{name}-{round}", root.display());
    let held = open(c, &file("a")).await.unwrap();
    expect_code(open(c, &file("refused")).await, Code::ResourceExhausted);
    let waiter = {
        let (mut c, path) = (c.clone(), file("waited"));
        tokio::spawn(async move { open(&mut c, &path).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    abort(c, &held).await.unwrap();
    let waited = waiter.await.unwrap().unwrap();
    abort(c, &waited).await.unwrap();
    let abandoned = open(c, &format!("memory://ops/abandoned/{round}"))
        .await
        .unwrap();
    write_at(c, &abandoned, 0, b"left behind").await.unwrap();
    persist(c, &abandoned).await.unwrap();
    abort(c, &abandoned).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_queries_and_alert_expressions_return_their_series() {
    let server = TestServer::start(
        "fs.file.limit.total: 1\nfs.file.limit.timeout: 300\njanitor.ttl: 1s\njanitor.interval: 500ms\n",
    )
    .await;
    let root = server.file_root();
    let prometheus = Emulator::prometheus(&format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n  - job_name: sluice\n    static_configs:\n      - targets: [\"{}\"]\n",
        server.admin
    ));
    // The workload goes on while the queries run, so every rate has data
    // (one round at a time: the rounds share the one file:// slot).
    let load = {
        let (mut c, root) = (server.client().await, root.clone());
        tokio::spawn(async move {
            for round in 0.. {
                workload(&mut c, &root, round).await;
            }
        })
    };
    // Scraped a few times after the first round, and the janitor has swept.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let removed = query(&prometheus, "sum(sluice_janitor_removed_total)").await;
        let samples = query(&prometheus, "count_over_time(up{job=\"sluice\"}[1m])").await;
        let enough = |v: &[(serde_json::Value, String)], n: f64| {
            v.first()
                .is_some_and(|(_, x)| x.parse::<f64>().unwrap_or(0.0) >= n)
        };
        if enough(&removed, 1.0) && enough(&samples, 5.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus has not scraped the gateway's janitor removals: {removed:?} {samples:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Every panel of the dashboard, with Grafana's variables filled in.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(monitoring().join("dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        let Some(targets) = panel["targets"].as_array() else {
            continue;
        };
        for target in targets {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "30s")
                .replace("$job", "sluice")
                .replace("$instance", ".*");
            let series = query(&prometheus, &expr).await;
            let title = panel["title"].as_str().unwrap();
            assert!(
                !series.is_empty(),
                "panel {title:?}: {expr} returned nothing"
            );
            let legend = target["legendFormat"].as_str().unwrap_or_default();
            for label in names_after(legend, "{{") {
                for (metric, _) in &series {
                    assert!(
                        metric[label.as_str()].is_string(),
                        "panel {title:?}: a series without {label}: {metric}"
                    );
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} panel queries");
    // Both schemes are seen where the dashboard splits by scheme.
    let written = query(
        &prometheus,
        "sum by (scheme) (rate(sluice_bytes_written_total{job=\"sluice\"}[30s]))",
    )
    .await;
    let schemes: BTreeSet<&str> = written
        .iter()
        .filter_map(|(m, _)| m["scheme"].as_str())
        .collect();
    assert_eq!(schemes, BTreeSet::from(["file", "memory"]));

    // Every alert's series, with the labels its annotations name; and the
    // two this workload sets off (Opens refused by the file:// limit are
    // ResourceExhausted, a gateway-side answer) are over their thresholds.
    for alert in alert_rules() {
        let series = query(&prometheus, signal(&alert.expr)).await;
        assert!(
            !series.is_empty(),
            "{}: {} returned nothing",
            alert.name,
            signal(&alert.expr)
        );
        for (metric, _) in &series {
            for label in &alert.labels {
                assert!(
                    metric[label.as_str()].is_string(),
                    "{}: a series without {label}: {metric}",
                    alert.name
                );
            }
        }
        if matches!(
            alert.name.as_str(),
            "SluiceLimiterTimeouts" | "SluiceErrorRatioHigh"
        ) {
            let firing = query(&prometheus, &alert.expr).await;
            assert!(
                firing
                    .iter()
                    .any(|(m, _)| m["scheme"] == "file" || m["method"] == "Open"),
                "{} is not over its threshold: {firing:?}",
                alert.name
            );
        }
    }
    // The gateway is up, and SluiceDown's own expression says nothing.
    let down = alert_rules()
        .into_iter()
        .find(|a| a.name == "SluiceDown")
        .unwrap();
    assert!(query(&prometheus, &down.expr).await.is_empty());
    if load.is_finished() {
        panic!("the workload stopped early: {:?}", load.await);
    }
    load.abort();
}

#[test]
fn signal_drops_only_the_final_comparison() {
    assert_eq!(signal("up{job=~\".*\"} == 0"), "up{job=~\".*\"}");
    assert_eq!(
        signal("sum(rate(x{code=~\"A|B\"}[5m])) / sum(rate(x[5m])) > 0.05"),
        "sum(rate(x{code=~\"A|B\"}[5m])) / sum(rate(x[5m]))"
    );
    assert_eq!(
        signal("histogram_quantile(0.99, sum by (le) (rate(h[5m]))) > 1"),
        "histogram_quantile(0.99, sum by (le) (rate(h[5m])))"
    );
}
