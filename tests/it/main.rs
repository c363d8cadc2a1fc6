//! Integration tests: the real server on 127.0.0.1:0, over gRPC.
//!
//! - `conformance`: the suite every backend must pass;
//! - `model`: random interleavings checked against a model of the bytes;
//! - `restart`: the `sluice` binary killed with -9 and started again;
//! - `cloud`: the object-store backends against real emulators
//!   (`emulators`), with the multipart cases of `multipart`.

mod bench;
mod cli;
mod client;
mod cloud;
mod conformance;
mod edge;
mod emulators;
mod faults;
mod gcs;
mod hardening;
mod harness;
mod hdfs;
mod helm;
mod hostile;
mod limits;
mod liveness;
mod model;
mod multipart;
mod operate;
mod oss_proxy;
mod polyglot;
mod props;
mod proxy;
mod restart;
mod security;
mod startup;
mod tracing;

use harness::*;
use tonic::Code;

#[tokio::test]
async fn conformance_file() {
    let server = TestServer::start("").await;
    let t = Target::file(&server).await;
    conformance::run_all(&t).await;
    conformance::racing_commits_never_replace(&t, 20, conformance::Preconditions::Enforced).await;
}

#[tokio::test]
async fn conformance_memory() {
    let server = TestServer::start("").await;
    let t = Target::memory(&server).await;
    conformance::run_all(&t).await;
    conformance::racing_commits_never_replace(&t, 20, conformance::Preconditions::Enforced).await;
}

/// Parts of 32 bytes, two in flight: the cases cross part boundaries,
/// persists land inside and on part edges, tails are read back (and the
/// largest case stays under the 10,000-part cap).
#[tokio::test]
async fn conformance_memory_small_parts() {
    let server = TestServer::start(
        "memory.upload.min.part.size: 32\nmemory.upload.max.concurrent.uploads: 2\n",
    )
    .await;
    let t = Target::memory(&server).await;
    conformance::run_all(&t).await;
}

/// Eight writers persisting for 60 s on file:// (this wedged the gateway
/// within 15 s when each Persist called sled's flush_async on its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_persisting_writers_stay_live_on_file() {
    let server = TestServer::start("").await;
    let t = Target::file(&server).await;
    let persists = liveness::eight_persisting_writers(
        &t,
        liveness::health_channel(&server).await,
        std::time::Duration::from_secs(60),
    )
    .await;
    assert!(persists > 1000, "only {persists} persists in 60 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_persisting_writers_stay_live_on_memory() {
    // Every persist stores the bytes past the last full part as a tail,
    // kept while its handle may come back: small parts keep thousands of
    // them small.
    let server = TestServer::start("memory.upload.min.part.size: 64kb\n").await;
    let t = Target::memory(&server).await;
    liveness::eight_persisting_writers(
        &t,
        liveness::health_channel(&server).await,
        std::time::Duration::from_secs(60),
    )
    .await;
}

#[tokio::test]
async fn model_interleavings_file() {
    let server = TestServer::start("").await;
    let t = Target::file(&server).await;
    model::run(&t, 100, 0x5EED_F11E).await;
}

#[tokio::test]
async fn model_interleavings_memory() {
    let server = TestServer::start(
        "memory.upload.min.part.size: 16\nmemory.upload.max.concurrent.uploads: 3\n",
    )
    .await;
    let t = Target::memory(&server).await;
    model::run(&t, 100, 0x05EE_D3E3).await;
}

/// With a 1 s TTL, an abandoned temp file is removed and a live one kept.
#[tokio::test]
async fn janitor_removes_abandoned_temp_files() {
    let server = TestServer::start("janitor.ttl: 1s\njanitor.interval: 200ms\n").await;
    let mut c = server.client().await;
    let dir = server.file_root().join("jobs");
    let abandoned = open(&mut c, &format!("file://{}/abandoned", dir.display()))
        .await
        .unwrap();
    write_at(&mut c, &abandoned, 0, b"staged then abandoned")
        .await
        .unwrap();
    persist(&mut c, &abandoned).await.unwrap();
    abort(&mut c, &abandoned).await.unwrap();
    let live = open(&mut c, &format!("file://{}/live", dir.display()))
        .await
        .unwrap();
    write_at(&mut c, &live, 0, b"still being written")
        .await
        .unwrap();
    persist(&mut c, &live).await.unwrap();
    let temp_files = || {
        std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains(".inprogress."))
            .collect::<Vec<_>>()
    };
    assert_eq!(temp_files().len(), 2);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    // The totals move once the whole sweep is done, just after the removal.
    while temp_files().len() > 1 || server.janitor_totals().temp_files < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the janitor did not remove the abandoned temp file"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(temp_files()[0].starts_with(".live."), "{:?}", temp_files());
    assert_eq!(server.janitor_totals().temp_files, 1);
    let (_, text) = restart::http_get(server.admin, "/metrics").await;
    assert_eq!(
        metric(&text, "sluice_janitor_removed_total{kind=\"temp_file\"}"),
        1.0
    );
    write_at(&mut c, &live, 19, b", and done").await.unwrap();
    let (h, _) = close(&mut c, &live).await.unwrap();
    commit(&mut c, &h, false).await.unwrap();
    assert_eq!(
        std::fs::read(dir.join("live")).unwrap(),
        b"still being written, and done"
    );
}

#[tokio::test]
async fn default_scheme_resolves_paths_without_scheme() {
    let server = TestServer::start("fs.default-scheme: memory://defaults/\n").await;
    let mut c = server.client().await;
    let r = c
        .open(sluice::proto::OpenRequest {
            path: "/jobs/out/part-0".into(),
            inject_entropy: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.path, "memory://defaults/jobs/out/part-0");
    write_at(&mut c, &r.session_id, 0, b"hello").await.unwrap();
    let (h, _) = close(&mut c, &r.session_id).await.unwrap();
    commit(&mut c, &h, false).await.unwrap();
    let (objects, _) = server.memory.store("defaults");
    assert_eq!(
        read_object(objects.as_ref(), "jobs/out/part-0").await,
        b"hello"
    );
    expect_code(open(&mut c, "jobs/relative").await, Code::InvalidArgument);
}

#[tokio::test]
async fn file_targets_are_confined_to_roots() {
    let server = TestServer::start("").await;
    let mut c = server.client().await;
    let outside = tempfile::tempdir().unwrap();
    let msg = expect_code(
        open(&mut c, &format!("file://{}/x", outside.path().display())).await,
        Code::PermissionDenied,
    );
    assert!(msg.contains("fs.file.allowed-roots"), "{msg}");
    // A symlink inside the root that points outside it is no way out.
    let link = server.file_root().join("escape");
    std::os::unix::fs::symlink(outside.path(), &link).unwrap();
    for escape in ["x", "new/deeper/x"] {
        expect_code(
            open(&mut c, &format!("file://{}/{escape}", link.display())).await,
            Code::PermissionDenied,
        );
    }
    assert_eq!(
        std::fs::read_dir(outside.path()).unwrap().count(),
        0,
        "something was written outside the root"
    );
}

#[tokio::test]
async fn capabilities_describe_each_scheme() {
    let server = TestServer::start("memory.upload.min.part.size: 1mb\n").await;
    let mut c = server.client().await;
    let file = server.file_root().join("x");
    let caps = |path: String| {
        let mut c = c.clone();
        async move {
            c.capabilities(sluice::proto::CapabilitiesRequest { path })
                .await
                .map(|r| r.into_inner())
        }
    };
    let f = caps(format!("file://{}", file.display())).await.unwrap();
    assert!(f.supports_resume && !f.requires_cleanup && f.survives_restart);
    assert_eq!(f.scheme, "file");
    let m = caps("memory://store/x".into()).await.unwrap();
    assert!(m.supports_resume && m.requires_cleanup && !m.survives_restart);
    assert_eq!((m.authority.as_str(), m.min_part_size), ("store", 1 << 20));
    assert!(m.max_message_size >= 4 << 20);
    expect_code(caps("s3://bucket/x".into()).await, Code::Unimplemented);
    let _ = &mut c;
}

#[tokio::test]
async fn health_and_reflection_are_served() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let server = TestServer::start("").await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "sluice.v1.StorageGateway".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);
    // v1 and v1alpha (what grpcurl 1.8 asks for) both list the service.
    macro_rules! listed_services {
        ($version:ident) => {{
            use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
            use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
            use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;
            let request = tonic_reflection::pb::$version::ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let mut answers = ServerReflectionClient::new(channel.clone())
                .server_reflection_info(tokio_stream::iter([request]))
                .await
                .unwrap()
                .into_inner();
            match answers.message().await.unwrap().unwrap().message_response {
                Some(MessageResponse::ListServicesResponse(list)) => {
                    list.service.into_iter().map(|s| s.name).collect::<Vec<_>>()
                }
                other => panic!("unexpected reflection answer: {other:?}"),
            }
        }};
    }
    for names in [listed_services!(v1), listed_services!(v1alpha)] {
        assert!(
            names.contains(&"sluice.v1.StorageGateway".to_string()),
            "{names:?}"
        );
    }
    server.stop().await;
}

/// An upload stops at 10,000 parts with a clear error, rather than growing
/// a handle no client can carry; the session must then be recovered.
#[tokio::test]
async fn uploads_stop_at_ten_thousand_parts() {
    let server = TestServer::start("memory.upload.min.part.size: 1\n").await;
    let mut c = server.client().await;
    let sid = open(&mut c, "memory://caps/too-many-parts").await.unwrap();
    // A part goes up once a part's worth (here 1 byte) follows it: 9,999
    // parts, 1 byte kept back; then 10,000, and the next one is refused.
    write_at(&mut c, &sid, 0, &[7u8; 10_000]).await.unwrap();
    let msg = expect_code(
        write_at(&mut c, &sid, 10_000, &[7u8; 2]).await,
        Code::ResourceExhausted,
    );
    assert!(
        msg.contains("10000 parts") && msg.contains("upload.min.part.size"),
        "{msg}"
    );
}

/// Entropy: injected paths carry random [0-9A-Za-z] in place of the marker
/// and differ between opens; without the flag the marker disappears.
#[tokio::test]
async fn entropy_is_injected_or_removed() {
    let server =
        TestServer::start("memory.entropy.key: _entropy_\nmemory.entropy.length: 6\n").await;
    let mut c = server.client().await;
    let base = c.clone();
    let open_with = |inject: bool| {
        let mut c = base.clone();
        async move {
            c.open(sluice::proto::OpenRequest {
                path: "memory://ent/_entropy_/checkpoints/chk-1".into(),
                inject_entropy: inject,
            })
            .await
            .unwrap()
            .into_inner()
        }
    };
    let mut seen = std::collections::HashSet::new();
    for _ in 0..20 {
        let opened = open_with(true).await;
        let random = opened
            .path
            .strip_prefix("memory://ent/")
            .and_then(|rest| rest.strip_suffix("/checkpoints/chk-1"))
            .unwrap_or_else(|| panic!("unexpected path {}", opened.path));
        assert_eq!(random.len(), 6, "{random}");
        assert!(
            random.chars().all(|ch| ch.is_ascii_alphanumeric()),
            "{random}"
        );
        seen.insert(random.to_string());
        abort(&mut c, &opened.session_id).await.unwrap();
    }
    assert!(seen.len() >= 19, "entropy repeats: {seen:?}");
    let plain = open_with(false).await;
    assert_eq!(plain.path, "memory://ent/checkpoints/chk-1");
    // The file lands where Open said, and its handles carry that path.
    write_at(&mut c, &plain.session_id, 0, b"checkpoint")
        .await
        .unwrap();
    let (h, _) = close(&mut c, &plain.session_id).await.unwrap();
    let path = c
        .commit(sluice::proto::CommitRequest {
            handle: h,
            after_recovery: false,
        })
        .await
        .unwrap()
        .into_inner()
        .path;
    assert_eq!(path, "memory://ent/checkpoints/chk-1");
    assert_eq!(read_all(&mut c, &path, 0, 0).await.unwrap(), b"checkpoint");
    // Other schemes are untouched.
    let f = server.file_root().join("_entropy_/x");
    let r = c
        .open(sluice::proto::OpenRequest {
            path: format!("file://{}", f.display()),
            inject_entropy: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.path.contains("_entropy_"), "{}", r.path);
}

/// One value of the Prometheus text at `/metrics`.
pub(crate) fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// A known workload, then a scrape of /metrics with the exact numbers.
#[tokio::test]
async fn metrics_count_a_known_workload() {
    let server =
        TestServer::start("fs.memory.limit.output: 2\nfs.memory.limit.timeout: 100\n").await;
    let mut c = server.client().await;
    let sid = open(&mut c, "memory://metrics/a").await.unwrap();
    write_chunks(
        &mut c,
        &sid,
        vec![(0, vec![1u8; 600]), (600, vec![2u8; 400])],
    )
    .await
    .unwrap();
    write_at(&mut c, &sid, 0, &[1u8; 600]).await.unwrap(); // a retry: nothing new
    persist(&mut c, &sid).await.unwrap();
    let (h, _) = close(&mut c, &sid).await.unwrap();
    commit(&mut c, &h, false).await.unwrap();
    assert_eq!(
        read_all(&mut c, "memory://metrics/a", 0, 0)
            .await
            .unwrap()
            .len(),
        1000
    );
    expect_code(open(&mut c, "gopher://x/y").await, Code::Unimplemented);
    // Two holders fill the pool; a third Open waits and times out.
    let _h1 = open(&mut c, "memory://metrics/h1").await.unwrap();
    let _h2 = open(&mut c, "memory://metrics/h2").await.unwrap();
    expect_code(
        open(&mut c, "memory://metrics/h3").await,
        Code::ResourceExhausted,
    );

    let (status, text) = restart::http_get(server.admin, "/metrics").await;
    assert_eq!(status, 200);
    let m = |series: &str| metric(&text, series);
    assert_eq!(m("sluice_bytes_written_total{scheme=\"memory\"}"), 1000.0);
    assert_eq!(m("sluice_bytes_read_total{scheme=\"memory\"}"), 1000.0);
    assert_eq!(m("sluice_sessions_open{scheme=\"memory\"}"), 2.0);
    assert_eq!(m("sluice_persist_seconds_count{scheme=\"memory\"}"), 1.0);
    assert_eq!(m("sluice_commit_seconds_count{scheme=\"memory\"}"), 1.0);
    assert_eq!(m("sluice_rpcs_total{method=\"Open\",code=\"Ok\"}"), 3.0);
    assert_eq!(
        m("sluice_rpcs_total{method=\"Open\",code=\"Unimplemented\"}"),
        1.0
    );
    assert_eq!(
        m("sluice_rpcs_total{method=\"Open\",code=\"ResourceExhausted\"}"),
        1.0
    );
    assert_eq!(m("sluice_rpcs_total{method=\"Write\",code=\"Ok\"}"), 2.0);
    assert_eq!(m("sluice_rpcs_total{method=\"Read\",code=\"Ok\"}"), 1.0);
    assert_eq!(m("sluice_limiter_waits_total{scheme=\"memory\"}"), 1.0);
    assert_eq!(m("sluice_limiter_timeouts_total{scheme=\"memory\"}"), 1.0);
    assert_eq!(restart::http_get(server.admin, "/healthz").await.0, 200);
    assert_eq!(restart::http_get(server.admin, "/readyz").await.0, 200);
}

/// A tail object that a crash kept out of sled (written, then the gateway
/// died before recording it) is still removed at commit: its name carries
/// its staging's token.
#[tokio::test]
async fn commit_removes_tails_that_sled_never_recorded() {
    use object_store::ObjectStoreExt;
    let server = TestServer::start("memory.upload.min.part.size: 1kb").await;
    let t = Target::memory(&server).await;
    let c = &mut t.client.clone();
    let sid = open(c, &t.uri("orphans/part-0")).await.unwrap();
    write_at(c, &sid, 0, b"first persist").await.unwrap();
    persist(c, &sid).await.unwrap();
    let tails = |entries: Vec<(String, u64)>| -> Vec<String> {
        entries
            .into_iter()
            .map(|(name, _)| name)
            .filter(|name| name.contains(".part-0.tail."))
            .collect()
    };
    let recorded = tails(t.store.entries().await);
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    // The same staging's tail name with another uuid, as a lost persist
    // would have left it; and another staging's tail, which must stay.
    let (prefix, _) = recorded[0].rsplit_once('.').unwrap();
    let name = t.base.rsplit('/').nth(1).unwrap().to_string();
    let (objects, _) = server.memory.store(&name);
    let orphan = format!("data/{prefix}.{}", uuid::Uuid::new_v4());
    let foreign = "data/orphans/.part-0.tail.0123456789abcdef.x".to_string();
    for key in [&orphan, &foreign] {
        objects
            .put(
                &object_store::path::Path::from(key.as_str()),
                b"tail".to_vec().into(),
            )
            .await
            .unwrap();
    }
    assert_eq!(tails(t.store.entries().await).len(), 3);

    let (handle, _) = close(c, &sid).await.unwrap();
    commit(c, &handle, false).await.unwrap();
    assert_eq!(
        tails(t.store.entries().await),
        vec!["orphans/.part-0.tail.0123456789abcdef.x".to_string()],
        "the staging's recorded and unrecorded tails are gone, another's stays"
    );
}
