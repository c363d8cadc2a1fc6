//! The Helm chart: linted, rendered with the default values and with every
//! feature on, and the manifests validated against Kubernetes 1.33's
//! schemas; the rendered configuration is loaded by sluice itself.

use std::path::Path;
use std::process::{Command, Output};

use crate::emulators::tools_bin;

fn chart() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/helm/sluice"))
}

fn all_features() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/helm/ci/all-features.yaml"
    ))
}

/// Runs a tool from the test venv with a throw-away home.
fn tool(name: &str, args: &[&str], home: &Path) -> Output {
    Command::new(tools_bin().join(name))
        .args(args)
        .env("HOME", home)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .unwrap()
}

#[track_caller]
fn succeeded(out: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn render(home: &Path, extra: &[&str]) -> String {
    let mut args = vec!["template", "r", chart().to_str().unwrap()];
    args.extend_from_slice(extra);
    succeeded(&tool("helm", &args, home), "helm template")
}

fn validate(home: &Path, manifests: &str) -> Output {
    let file = home.join(format!("rendered-{}.yaml", uuid::Uuid::new_v4()));
    std::fs::write(&file, manifests).unwrap();
    tool(
        "kubernetes-validate",
        &["-k", "1.33.0", "--strict", file.to_str().unwrap()],
        home,
    )
}

/// The documents of a multi-document YAML stream.
fn documents(manifests: &str) -> Vec<serde_norway::Value> {
    use serde::Deserialize;
    serde_norway::Deserializer::from_str(manifests)
        .map(|doc| serde_norway::Value::deserialize(doc).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn kind<'a>(docs: &'a [serde_norway::Value], kind: &str) -> &'a serde_norway::Value {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("no {kind} rendered"))
}

#[test]
fn chart_lints_renders_and_validates() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let all = all_features().to_str().unwrap();
    succeeded(
        &tool(
            "helm",
            &["lint", "--strict", chart().to_str().unwrap()],
            home,
        ),
        "helm lint",
    );
    succeeded(
        &tool(
            "helm",
            &["lint", "--strict", chart().to_str().unwrap(), "-f", all],
            home,
        ),
        "helm lint with every feature",
    );
    for (what, manifests) in [
        ("defaults", render(home, &[])),
        ("every feature", render(home, &["-f", all])),
    ] {
        let out = validate(home, &manifests);
        let report = succeeded(&out, &format!("kubernetes-validate of the {what} render"));
        assert!(report.contains("statefulset/r-sluice"), "{report}");
    }

    let docs = documents(&render(home, &["-f", all]));
    let set = kind(&docs, "StatefulSet");
    let pod = &set["spec"]["template"]["spec"];
    assert_eq!(set["spec"]["replicas"].as_u64(), Some(3));
    assert_eq!(
        pod["terminationGracePeriodSeconds"].as_u64(),
        Some(75),
        "grace 60s + 15s"
    );
    assert!(set["spec"]["template"]["metadata"]["annotations"]["checksum/config"].is_string());
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    let container = &pod["containers"][0];
    // Kubernetes' gRPC probes cannot speak TLS: with TLS on, /readyz.
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    assert!(
        pod["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|v| v["secret"]["secretName"].as_str() == Some("sluice-tls"))
    );
    // Without TLS, the default render asks for plaintext explicitly.
    let defaults = documents(&render(home, &[]));
    let default_config = kind(&defaults, "ConfigMap")["data"]["config.yaml"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        default_config.contains("rpc.plaintext: true"),
        "{default_config}"
    );
    assert_eq!(
        kind(&defaults, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]
            ["readinessProbe"]["grpc"]["port"]
            .as_u64(),
        Some(50051)
    );
    assert_eq!(
        container["securityContext"]["readOnlyRootFilesystem"].as_bool(),
        Some(true)
    );
    assert_eq!(
        set["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"].as_str(),
        Some("50Gi")
    );
    let env: Vec<(&str, &str)> = container["env"]
        .as_sequence()
        .expect("OTel variables")
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["value"].as_str().unwrap()))
        .collect();
    assert!(
        env.contains(&(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://otel-collector.observability:4317"
        )),
        "{env:?}"
    );
    assert!(
        env.contains(&("OTEL_SERVICE_NAME", "sluice-eu1")),
        "{env:?}"
    );
    let monitor = kind(&docs, "ServiceMonitor");
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"].as_str(),
        Some("metrics")
    );
    assert_eq!(
        kind(&docs, "PodDisruptionBudget")["spec"]["maxUnavailable"].as_u64(),
        Some(1)
    );
    // The dashboard and the alert rules, both off by default.
    let dashboard = docs
        .iter()
        .find(|d| {
            d["kind"].as_str() == Some("ConfigMap")
                && d["metadata"]["labels"]["grafana_dashboard"].as_str() == Some("1")
        })
        .expect("a ConfigMap with the Grafana sidecar's label");
    assert_eq!(
        dashboard["metadata"]["annotations"]["grafana_folder"].as_str(),
        Some("Storage")
    );
    let json: serde_json::Value =
        serde_json::from_str(dashboard["data"]["sluice.json"].as_str().unwrap()).unwrap();
    let shipped: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(chart().join("monitoring/dashboard.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        json, shipped,
        "the ConfigMap holds the dashboard as shipped"
    );
    let rules = &kind(&docs, "PrometheusRule")["spec"]["groups"][0]["rules"];
    let alerts: Vec<&str> = rules
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| r["alert"].as_str().unwrap())
        .collect();
    assert!(alerts.contains(&"SluiceDown"), "{alerts:?}");
    assert_eq!(alerts.len(), 7, "{alerts:?}");
    assert!(
        rules[0]["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("{{ $labels.instance }}"),
        "Helm must not render the alert templates"
    );
    assert!(
        !defaults
            .iter()
            .any(|d| d["kind"].as_str() == Some("PrometheusRule")
                || d["metadata"]["labels"]["grafana_dashboard"].is_string()),
        "the dashboard and rules are off by default"
    );

    // The rendered config is one sluice accepts, with no unknown key.
    let config = kind(&docs, "ConfigMap")["data"]["config.yaml"]
        .as_str()
        .unwrap()
        .to_string();
    let key_file = home.join("handle-signing-key");
    std::fs::write(&key_file, "00".repeat(32)).unwrap();
    let config = config.replace(
        "/etc/sluice/secret/handle-signing-key",
        key_file.to_str().unwrap(),
    );
    let parsed =
        sluice::config::Config::from_yaml(&config).unwrap_or_else(|e| panic!("{e}\n{config}"));
    assert!(
        parsed.unknown_keys.is_empty(),
        "unknown keys {:?}",
        parsed.unknown_keys
    );
    assert_eq!(parsed.shutdown_grace.as_secs(), 60);
    let tls = parsed.tls.expect("TLS from tls.secretName");
    assert_eq!(
        tls.client_ca_file.as_deref(),
        Some(Path::new("/etc/sluice/tls/ca.crt"))
    );
    assert!(!parsed.plaintext);
    assert_eq!(parsed.limits["s3"].output, Some(12));

    // Without a key in the values, the chart makes one (64 hex digits).
    let secret = kind(&documents(&render(home, &[])), "Secret").clone();
    let key = secret["stringData"]["handle-signing-key"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        key.len() == 64 && key.chars().all(|c| c.is_ascii_hexdigit()),
        "{key}"
    );

    // The validator does catch a broken manifest.
    let broken = render(home, &["--set", "service.grpcPort=not-a-port"]);
    assert!(
        !validate(home, &broken).status.success(),
        "a port that is not a number passed validation"
    );
}
