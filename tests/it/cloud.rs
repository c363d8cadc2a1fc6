//! The object-store backends against real emulators started by the tests:
//! moto for `s3://` (with S3's real 5 MiB part minimum) and for `oss://`
//! (reached virtual-hosted through [`OssProxy`], with OSS's 100 KB part
//! minimum), and Azurite for `az://` (`gs://` has `gcs.rs`).

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use tonic::Code;

use crate::emulators::*;
use crate::harness::*;
use crate::oss_proxy::OssProxy;
use crate::{conformance, multipart};

/// Server configuration for an S3 emulator at `url`.
pub fn s3_yaml(url: &str, part_size: &str) -> String {
    format!(
        "s3.endpoint: {url}\ns3.path.style.access: true\ns3.region: us-east-1\n\
         s3.access-key: test\ns3.secret-key: test\ns3.upload.min.part.size: {part_size}\n"
    )
}

/// The test's own S3 client, to look at what sluice left in a bucket.
pub fn s3_client(url: &str, bucket: &str) -> Arc<dyn ObjectStore> {
    Arc::new(
        AmazonS3Builder::new()
            .with_endpoint(url)
            .with_allow_http(true)
            .with_bucket_name(bucket)
            .with_region("us-east-1")
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .build()
            .unwrap(),
    )
}

fn s3_uploads(moto: &Arc<Emulator>, bucket: &str) -> Arc<dyn Fn() -> usize + Send + Sync> {
    let (moto, bucket) = (moto.clone(), bucket.to_string());
    Arc::new(move || moto.s3_open_uploads(&bucket))
}

#[tokio::test]
async fn conformance_s3_with_real_5_mib_parts() {
    let moto = Arc::new(Emulator::moto(None));
    moto.create_bucket("conformance");
    let server = TestServer::start(&s3_yaml(&moto.url(), "5mb")).await;
    let t = Target::object_store(
        &server,
        "s3://conformance/run".into(),
        s3_client(&moto.url(), "conformance"),
        "run",
        Some(s3_uploads(&moto, "conformance")),
    )
    .await;
    conformance::run_all(&t).await;
    multipart::run_all(&t).await;
    // s3a:// is the same backend.
    let sid = open(&mut t.client.clone(), "s3a://conformance/run/s3a-file")
        .await
        .unwrap();
    abort(&mut t.client.clone(), &sid).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_persisting_writers_stay_live_on_s3() {
    let moto = Arc::new(Emulator::moto(None));
    moto.create_bucket("live");
    let server = TestServer::start(&s3_yaml(&moto.url(), "5mb")).await;
    let t = Target::object_store(
        &server,
        "s3://live/run".into(),
        s3_client(&moto.url(), "live"),
        "run",
        Some(s3_uploads(&moto, "live")),
    )
    .await;
    let health = crate::liveness::health_channel(&server).await;
    crate::liveness::eight_persisting_writers(&t, health, std::time::Duration::from_secs(60)).await;
}

/// Errors a retry cannot fix are not UNAVAILABLE: a bucket that does not
/// exist, credentials the store refuses.
#[tokio::test]
async fn missing_bucket_and_refused_credentials_are_not_retryable() {
    let moto = Emulator::moto(None);
    let server = TestServer::start(&s3_yaml(&moto.url(), "5mb")).await;
    let msg = expect_code(
        open(&mut server.client().await, "s3://no-such-bucket/x").await,
        Code::FailedPrecondition,
    );
    assert!(msg.contains("bucket"), "{msg}");
    let azurite = Emulator::azurite();
    azurite.create_bucket("locked");
    let wrong_key = azure_yaml(&azurite.url()).replace(AZURITE_KEY, &"A".repeat(88));
    let server = TestServer::start(&wrong_key).await;
    let mut c = server.client().await;
    // Azure staging needs no request until the first block is uploaded.
    let sid = open(&mut c, "az://locked/x").await.unwrap();
    write_at(&mut c, &sid, 0, b"refused").await.unwrap();
    let msg = expect_code(close(&mut c, &sid).await, Code::PermissionDenied);
    assert!(msg.contains("credentials"), "{msg}");
}

#[tokio::test]
async fn s3_part_size_below_5_mib_is_a_start_up_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = sluice::config::Config::from_yaml(&s3_yaml("http://127.0.0.1:1", "1mb"));
    let err = config.unwrap_err().to_string();
    assert!(
        err.contains("s3.upload.min.part.size") && err.contains("5242880"),
        "{err}"
    );
    drop(dir);
}

/// moto enforces S3's 5 MiB minimum for every part but the last: two 1 MiB
/// parts are refused when the upload completes (`EntityTooSmall`). So the
/// conformance run above, which passes against the same unlowered moto,
/// shows sluice never sends a short middle part.
#[tokio::test]
async fn moto_refuses_parts_below_its_minimum() {
    let moto = Emulator::moto(None);
    moto.create_bucket("small");
    let store = AmazonS3Builder::new()
        .with_endpoint(moto.url())
        .with_allow_http(true)
        .with_bucket_name("small")
        .with_region("us-east-1")
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .build()
        .unwrap();
    use object_store::multipart::MultipartStore;
    let path = object_store::path::Path::from("too-small");
    let id = store.create_multipart(&path).await.unwrap();
    let mut parts = Vec::new();
    for i in 0..2 {
        parts.push(
            store
                .put_part(&path, &id, i, vec![7u8; 1024 * 1024].into())
                .await
                .unwrap(),
        );
    }
    let err = store
        .complete_multipart(&path, &id, parts)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("EntityTooSmall"), "{err}");
}

#[tokio::test]
async fn conformance_oss_virtual_hosted_with_100_kb_parts() {
    // OSS's minimum part is 100 KB; moto is told to enforce exactly that.
    let moto = Arc::new(Emulator::moto(Some(100 * 1024)));
    moto.create_bucket("ossbucket");
    let endpoint_host = "oss-cn-hangzhou.aliyuncs.test";
    let upstream = format!("127.0.0.1:{}", moto.port).parse().unwrap();
    let proxy = OssProxy::start(upstream, endpoint_host).await;
    let server = TestServer::start(&format!(
        "fs.oss.endpoint: http://{endpoint_host}\nfs.oss.accessKeyId: test\nfs.oss.accessKeySecret: test\n\
         fs.oss.proxy.host: 127.0.0.1\nfs.oss.proxy.port: {}\noss.upload.min.part.size: 100kb\n",
        proxy.addr.port()
    ))
    .await;
    let t = Target::object_store(
        &server,
        "oss://ossbucket/run".into(),
        s3_client(&moto.url(), "ossbucket"),
        "run",
        Some(s3_uploads(&moto, "ossbucket")),
    )
    .await;
    conformance::run_all(&t).await;
    multipart::run_all(&t).await;
    let hosted = proxy
        .virtual_hosted
        .load(std::sync::atomic::Ordering::SeqCst);
    let refused = proxy
        .path_style_refused
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        hosted > 100,
        "only {hosted} virtual-hosted requests went through"
    );
    assert_eq!(
        refused, 0,
        "sluice sent {refused} path-style requests, which OSS refuses"
    );
    // The proxy does refuse path-style, as OSS does.
    let path_style = AmazonS3Builder::new()
        .with_endpoint(format!("http://{endpoint_host}"))
        .with_allow_http(true)
        .with_proxy_url(format!("http://{}", proxy.addr))
        .with_bucket_name("ossbucket")
        .with_region("oss-cn-hangzhou")
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .with_retry(object_store::RetryConfig {
            max_retries: 0,
            ..Default::default()
        })
        .build()
        .unwrap();
    use object_store::ObjectStoreExt;
    let err = path_style
        .put(&object_store::path::Path::from("x"), vec![1u8].into())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("SecondLevelDomainForbidden") || err.to_string().contains("403"),
        "{err}"
    );
}

#[tokio::test]
async fn oss_part_size_below_100_kb_is_a_start_up_error() {
    let err = sluice::config::Config::from_yaml(
        "fs.oss.endpoint: https://oss-cn-hangzhou.aliyuncs.com\noss.upload.min.part.size: 64kb\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("102400"), "{err}");
}

fn azure_yaml(url: &str) -> String {
    format!(
        "azure.account.name: {AZURITE_ACCOUNT}\nazure.account.key: {AZURITE_KEY}\n\
         azure.endpoint: {url}/{AZURITE_ACCOUNT}\nazure.upload.min.part.size: 64kb\n"
    )
}

pub fn azure_client(url: &str, container: &str) -> Arc<dyn ObjectStore> {
    Arc::new(
        MicrosoftAzureBuilder::new()
            .with_account(AZURITE_ACCOUNT)
            .with_access_key(AZURITE_KEY)
            .with_endpoint(format!("{url}/{AZURITE_ACCOUNT}"))
            .with_allow_http(true)
            .with_container_name(container)
            .build()
            .unwrap(),
    )
}

#[tokio::test]
async fn conformance_azure_blocks() {
    let azurite = Emulator::azurite();
    azurite.create_bucket("conformance");
    let server = TestServer::start(&azure_yaml(&azurite.url())).await;
    let t = Target::object_store(
        &server,
        "az://conformance/run".into(),
        azure_client(&azurite.url(), "conformance"),
        "run",
        None,
    )
    .await;
    conformance::run_all(&t).await;
    multipart::run_all(&t).await;
    conformance::racing_commits_never_replace(&t, 20, conformance::Preconditions::Enforced).await;
    // abfs:// names the container and the account in its authority.
    let c = &mut t.client.clone();
    let sid = open(
        c,
        &format!("abfs://conformance@{AZURITE_ACCOUNT}.dfs.core.windows.net/run/abfs-file"),
    )
    .await
    .unwrap();
    write_at(c, &sid, 0, b"through abfs").await.unwrap();
    let (h, _) = close(c, &sid).await.unwrap();
    commit(c, &h, false).await.unwrap();
    assert_eq!(t.store.read("abfs-file").await.unwrap(), b"through abfs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_persisting_writers_stay_live_on_azure() {
    let azurite = Emulator::azurite();
    azurite.create_bucket("live");
    let server = TestServer::start(&azure_yaml(&azurite.url())).await;
    let t = Target::object_store(
        &server,
        "az://live/run".into(),
        azure_client(&azurite.url(), "live"),
        "run",
        None,
    )
    .await;
    let health = crate::liveness::health_channel(&server).await;
    crate::liveness::eight_persisting_writers(&t, health, std::time::Duration::from_secs(60)).await;
}

/// With a 1 s TTL, the janitor aborts an abandoned upload and deletes its
/// tail object, and leaves a live session's staging alone.
#[tokio::test]
async fn janitor_removes_abandoned_uploads_and_tails_on_s3() {
    let moto = Arc::new(Emulator::moto(None));
    moto.create_bucket("janitor");
    let yaml = format!(
        "{}janitor.ttl: 1s\njanitor.interval: 200ms\n",
        s3_yaml(&moto.url(), "5mb")
    );
    let server = TestServer::start(&yaml).await;
    let mut c = server.client().await;
    let objects = s3_client(&moto.url(), "janitor");
    let part = 5 * 1024 * 1024;

    // Abandoned: a part and a tail staged, handles issued, then aborted.
    // (A persist uploads a part's worth or more as a part; the 100 bytes
    // of the second one go to a tail object.)
    let abandoned = open(&mut c, "s3://janitor/out/abandoned").await.unwrap();
    let data = multipart::bytes(1, part + 100);
    multipart::write_all(&mut c, &abandoned, 0, &data[..part], part).await;
    persist(&mut c, &abandoned).await.unwrap();
    multipart::write_all(&mut c, &abandoned, part as u64, &data[part..], part).await;
    persist(&mut c, &abandoned).await.unwrap();
    abort(&mut c, &abandoned).await.unwrap();
    // Live: staged too, and still open.
    let live = open(&mut c, "s3://janitor/out/live").await.unwrap();
    let first = multipart::bytes(2, part + 200);
    multipart::write_all(&mut c, &live, 0, &first[..part], part).await;
    persist(&mut c, &live).await.unwrap();
    multipart::write_all(&mut c, &live, part as u64, &first[part..], part).await;
    persist(&mut c, &live).await.unwrap();
    assert_eq!(moto.s3_open_uploads("janitor"), 2);

    let tails = |objects: Arc<dyn ObjectStore>| async move {
        use futures::TryStreamExt;
        let all: Vec<_> = objects.list(None).try_collect().await.unwrap();
        all.into_iter()
            .map(|m| m.location.to_string())
            .filter(|p| p.contains(".tail."))
            .collect::<Vec<_>>()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    // The totals move once the whole sweep is done, just after the removals.
    while moto.s3_open_uploads("janitor") > 1 || server.janitor_totals().tails < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the janitor did not abort the abandoned upload"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let left = tails(objects.clone()).await;
    assert_eq!(left.len(), 1, "tails left: {left:?}");
    assert!(
        left[0].contains(".live.tail."),
        "the live session's tail was removed: {left:?}"
    );
    assert_eq!(server.janitor_totals().uploads, 1);
    assert_eq!(server.janitor_totals().tails, 1);

    // The live session is unharmed and commits.
    let rest = multipart::bytes(3, 1000);
    multipart::write_all(&mut c, &live, first.len() as u64, &rest, part).await;
    let (h, _) = close(&mut c, &live).await.unwrap();
    commit(&mut c, &h, false).await.unwrap();
    let got = read_object(objects.as_ref(), "out/live").await;
    assert!(got == [first, rest].concat(), "live file content differs");
}

/// The race case of the conformance suite on `s3://` (moto on one thread:
/// its threaded server checks a completion's condition and completes in
/// two steps, which S3 does atomically).
#[tokio::test]
async fn racing_commits_on_s3() {
    let moto = Arc::new(Emulator::moto_one_thread());
    moto.create_bucket("races");
    let server = TestServer::start(&s3_yaml(&moto.url(), "5mb")).await;
    let t = Target::object_store(
        &server,
        "s3://races/run".into(),
        s3_client(&moto.url(), "races"),
        "run",
        None,
    )
    .await;
    conformance::racing_commits_never_replace(&t, 20, conformance::Preconditions::Enforced).await;
}

/// Eight stagings of one key, closed, then committed all at once through
/// two replicas (each with its own sled and locks, as two gateways behind
/// one load balancer): S3 completes exactly one, the others answer
/// ALREADY_EXISTS, and the object holds the winner's bytes. Before
/// completions carried `If-None-Match: *`, each commit's HEAD could run
/// before any completion, and several answered OK, each replacing the last.
/// (moto on one thread: its threaded server checks the condition and
/// completes in two steps, which S3 does atomically.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_commits_of_one_key_never_replace_on_s3() {
    let moto = Arc::new(Emulator::moto_one_thread());
    moto.create_bucket("race");
    let yaml = format!(
        "{}handle.signing.key: {}\n",
        s3_yaml(&moto.url(), "5mb"),
        "ab".repeat(32)
    );
    let a = TestServer::start(&yaml).await;
    let b = TestServer::replica_of(&a, &yaml).await;
    let objects = s3_client(&moto.url(), "race");
    for round in 0..4 {
        let target = format!("s3://race/out/part-{round}");
        let mut staged = Vec::new();
        for i in 0..8u64 {
            let server = if i % 2 == 0 { &a } else { &b };
            let mut c = server.client().await;
            let sid = open(&mut c, &target).await.unwrap();
            let data = multipart::bytes(round * 100 + i, 1000 + i as usize);
            write_at(&mut c, &sid, 0, &data).await.unwrap();
            let (handle, _) = close(&mut c, &sid).await.unwrap();
            staged.push((c, handle, data));
        }
        let commits = staged.iter().map(|(c, handle, _)| {
            let (mut c, handle) = (c.clone(), handle.clone());
            async move { commit(&mut c, &handle, false).await }
        });
        let results = futures::future::join_all(commits).await;
        let winners: Vec<usize> = (0..8).filter(|&i| results[i].is_ok()).collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: {} commits of one key answered OK: {results:?}",
            winners.len()
        );
        for (i, result) in results.into_iter().enumerate() {
            if i != winners[0] {
                expect_code(result, Code::AlreadyExists);
            }
        }
        let got = read_object(objects.as_ref(), &format!("out/part-{round}")).await;
        assert!(
            got == staged[winners[0]].2,
            "round {round}: the object is not the bytes of the commit that answered OK"
        );
    }
}
