//! `gs://` over the GCS JSON API against two real emulators,
//! gcp-storage-emulator and fake-gcs-server: the whole conformance suite
//! and the multipart cases on both, files of more than 32 components (so
//! that commits compose through intermediate objects), components in a
//! temporary bucket, the janitor, and a commit that never takes another
//! writer's file of the same size for its own.

use std::sync::Arc;

use object_store::{ObjectStore, ObjectStoreExt};
use sluice::backend::gcs::GcsBucket;
use sluice::backend::gcs::json::GcsClient;
use tonic::Code;

use crate::emulators::*;
use crate::harness::*;
use crate::{conformance, multipart};

/// Server configuration for a GCS emulator at `url`; 256 KiB components,
/// so that the multipart cases stay small.
pub fn gs_yaml(url: &str) -> String {
    format!("gs.endpoint: {url}\ngs.writer.chunk.size: 256kb\n")
}

/// The test's own view of a bucket, through the JSON API.
pub fn gs_bucket(url: &str, bucket: &str) -> Arc<GcsBucket> {
    let options = object_store::ClientOptions::new().with_allow_http(true);
    let http = object_store::client::HttpConnector::connect(
        &object_store::client::ReqwestConnector::default(),
        &options,
    )
    .unwrap();
    let client = Arc::new(GcsClient::new(http, url.to_string(), None));
    Arc::new(GcsBucket::new(client, bucket, None))
}

pub async fn gs_target(server: &TestServer, emulator: &Emulator, bucket: &str) -> Target {
    Target::object_store(
        server,
        format!("gs://{bucket}/run"),
        gs_bucket(&emulator.url(), bucket),
        "run",
        None,
    )
    .await
}

/// Neither GCS emulator enforces `ifGenerationMatch` on compose (the
/// README says so); real GCS does.
async fn conformance_on(emulator: Emulator) {
    emulator.create_bucket("conformance");
    let server = TestServer::start(&gs_yaml(&emulator.url())).await;
    let t = gs_target(&server, &emulator, "conformance").await;
    let caps = t
        .client
        .clone()
        .capabilities(sluice::proto::CapabilitiesRequest { path: t.uri("x") })
        .await
        .unwrap()
        .into_inner();
    assert!(caps.supports_resume && caps.survives_restart && caps.requires_cleanup);
    conformance::run_all(&t).await;
    multipart::run_all(&t).await;
    more_than_32_components(&t).await;
    conformance::racing_commits_never_replace(&t, 20, conformance::Preconditions::Ignored).await;
    // gcs:// is Hadoop's name for the same backend.
    let mut c = t.client.clone();
    let sid = open(&mut c, "gcs://conformance/run/gcs-alias")
        .await
        .unwrap();
    write_at(&mut c, &sid, 0, b"alias").await.unwrap();
    let (h, _) = close(&mut c, &sid).await.unwrap();
    commit(&mut c, &h, false).await.unwrap();
    assert_eq!(t.store.read("gcs-alias").await.unwrap(), b"alias");
}

#[tokio::test]
async fn conformance_gs_on_gcp_storage_emulator() {
    conformance_on(Emulator::gcs()).await;
}

#[tokio::test]
async fn conformance_gs_on_fake_gcs_server() {
    conformance_on(Emulator::fake_gcs()).await;
}

/// 40 persists of a few bytes each, then a recovery from the 35th and a
/// commit: 36 components or more, composed 32 at a time through an
/// intermediate object; the committed bytes are the handle's, and no
/// component is left.
async fn more_than_32_components(t: &Target) {
    eprintln!("gs case: more_than_32_components");
    let c = &mut t.client.clone();
    let sid = open(c, &t.uri("many")).await.unwrap();
    let mut data = Vec::new();
    let mut handles = Vec::new();
    for i in 0..40u64 {
        let chunk = multipart::bytes(100 + i, 1000 + i as usize);
        write_at(c, &sid, data.len() as u64, &chunk).await.unwrap();
        data.extend_from_slice(&chunk);
        handles.push((persist(c, &sid).await.unwrap().0, data.len()));
    }
    abort(c, &sid).await.unwrap();
    let (h35, at) = handles[34].clone();
    let (sid, pos) = recover(c, &h35).await.unwrap();
    assert_eq!(pos, at as u64);
    let last = multipart::bytes(999, 70_000);
    write_at(c, &sid, pos, &last).await.unwrap();
    let (h, size) = close(c, &sid).await.unwrap();
    assert_eq!(size, (at + last.len()) as u64);
    commit(c, &h, false).await.unwrap();
    let want = [&data[..at], &last[..]].concat();
    assert!(
        t.store.read("many").await.unwrap() == want,
        "content differs"
    );
    let hidden: Vec<_> = t
        .store
        .entries()
        .await
        .into_iter()
        .filter(|(name, _)| name.starts_with(".many."))
        .collect();
    assert!(hidden.is_empty(), "components left behind: {hidden:?}");
}

/// 300 persists of a component each (256 KiB, the least a persist makes a
/// component of): the session joins its components once it has 256, so
/// later handles stay short; a handle from before the join still recovers
/// (its components stay until the commit), and the commit holds exactly
/// its bytes.
#[tokio::test]
async fn hundreds_of_persists_join_their_components() {
    let gcs = Emulator::fake_gcs();
    gcs.create_bucket("joins");
    let server = TestServer::start(&gs_yaml(&gcs.url())).await;
    let t = gs_target(&server, &gcs, "joins").await;
    let c = &mut t.client.clone();
    let sid = open(c, &t.uri("joined")).await.unwrap();
    let mut data = Vec::new();
    let mut handles = Vec::new();
    for i in 0..300u64 {
        let chunk = multipart::bytes(i, 256 * 1024);
        write_at(c, &sid, data.len() as u64, &chunk).await.unwrap();
        data.extend_from_slice(&chunk);
        handles.push((persist(c, &sid).await.unwrap().0, data.len()));
    }
    let longest = handles.iter().map(|(h, _)| h.len()).max().unwrap();
    assert_eq!(
        longest,
        handles[254].0.len(),
        "the 255th handle lists the most"
    );
    assert!(
        handles[299].0.len() * 4 < longest,
        "handles after the join are not shorter: {} against {longest} bytes",
        handles[299].0.len()
    );
    abort(c, &sid).await.unwrap();
    let (early, at) = handles[99].clone();
    let (sid, pos) = recover(c, &early).await.unwrap();
    assert_eq!(pos, at as u64);
    let (h, _) = close(c, &sid).await.unwrap();
    commit(c, &h, false).await.unwrap();
    assert!(
        t.store.read("joined").await.unwrap() == data[..at],
        "content differs"
    );
    let hidden: Vec<_> = t
        .store
        .entries()
        .await
        .into_iter()
        .filter(|(name, _)| name.starts_with(".joined."))
        .collect();
    assert!(
        hidden.is_empty(),
        "components left behind: {}",
        hidden.len()
    );
}

/// How many hidden staging objects `name` has.
async fn staged(t: &Target, name: &str) -> usize {
    let hidden = format!(".{name}.");
    t.store
        .entries()
        .await
        .into_iter()
        .filter(|(entry, _)| entry.starts_with(&hidden))
        .count()
}

/// Persists of fewer bytes than a component go to a tail object, as on
/// S3, which Cleanup removes and a recovery reads back.
#[tokio::test]
async fn small_persists_write_tails_that_cleanup_removes() {
    let gcs = Emulator::fake_gcs();
    gcs.create_bucket("tails");
    let server = TestServer::start(&gs_yaml(&gcs.url())).await;
    let t = gs_target(&server, &gcs, "tails").await;
    let c = &mut t.client.clone();
    let sid = open(c, &t.uri("small")).await.unwrap();
    write_at(c, &sid, 0, b"first").await.unwrap();
    let (r1, _) = persist(c, &sid).await.unwrap();
    write_at(c, &sid, 5, b" second").await.unwrap();
    let (r2, _) = persist(c, &sid).await.unwrap();
    assert_eq!(staged(&t, "small").await, 2, "one tail per persist");
    assert!(cleanup(c, &r1).await.unwrap());
    assert_eq!(staged(&t, "small").await, 1);
    abort(c, &sid).await.unwrap();
    let (sid, pos) = recover(c, &r2).await.unwrap();
    assert_eq!(pos, 12);
    write_at(c, &sid, pos, b" third").await.unwrap();
    let (h, _) = close(c, &sid).await.unwrap();
    commit(c, &h, false).await.unwrap();
    assert_eq!(t.store.read("small").await.unwrap(), b"first second third");
    assert_eq!(staged(&t, "small").await, 0);
}

/// Eight writers persisting 4 KiB at a time for 60 s, with a bystander
/// and health checked (as on every other scheme).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_persisting_writers_stay_live_on_gs() {
    let gcs = Emulator::fake_gcs();
    gcs.create_bucket("live");
    let server = TestServer::start(&gs_yaml(&gcs.url())).await;
    let t = gs_target(&server, &gcs, "live").await;
    let health = crate::liveness::health_channel(&server).await;
    crate::liveness::eight_persisting_writers(&t, health, std::time::Duration::from_secs(60)).await;
}

/// With `gs.writer.temporary.bucket.name`, components never touch the
/// target's bucket; the commit composes them in theirs and copies the
/// result across, and the temporary bucket is empty afterwards.
#[tokio::test]
async fn components_in_a_temporary_bucket() {
    let gcs = Emulator::fake_gcs();
    gcs.create_bucket("final");
    gcs.create_bucket("scratch");
    let yaml = format!(
        "{}gs.writer.temporary.bucket.name: scratch\n",
        gs_yaml(&gcs.url())
    );
    let server = TestServer::start(&yaml).await;
    let final_bucket = gs_bucket(&gcs.url(), "final");
    let scratch = gs_bucket(&gcs.url(), "scratch");
    let count = |store: Arc<GcsBucket>| async move {
        use futures::TryStreamExt;
        store
            .list(None)
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .len()
    };
    let c = &mut server.client().await;
    let sid = open(c, "gs://final/out/part-0").await.unwrap();
    let first = multipart::bytes(1, 600_000);
    write_at(c, &sid, 0, &first).await.unwrap();
    let (r, _) = persist(c, &sid).await.unwrap();
    assert_eq!(
        count(final_bucket.clone()).await,
        0,
        "a component in the target's bucket"
    );
    assert!(
        count(scratch.clone()).await >= 2,
        "no component in the temporary bucket"
    );
    abort(c, &sid).await.unwrap();
    let (sid, pos) = recover(c, &r).await.unwrap();
    let rest = multipart::bytes(2, 1234);
    write_at(c, &sid, pos, &rest).await.unwrap();
    let (h, _) = close(c, &sid).await.unwrap();
    commit(c, &h, false).await.unwrap();
    let got = final_bucket
        .get(&"out/part-0".into())
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(got == [first, rest].concat(), "content differs");
    assert_eq!(
        count(scratch).await,
        0,
        "components left in the temporary bucket"
    );
    assert_eq!(count(final_bucket).await, 1);
}

/// A target of the handle's size but other bytes is not this handle's
/// commit: `after_recovery` answers FAILED_PRECONDITION there, and OK on
/// the handle's own bytes (GCS keeps a CRC32C of every object, composite
/// ones included).
#[tokio::test]
async fn commit_after_recovery_tells_other_bytes_of_the_same_size() {
    let gcs = Emulator::gcs();
    gcs.create_bucket("same-size");
    let server = TestServer::start(&gs_yaml(&gcs.url())).await;
    let store = gs_bucket(&gcs.url(), "same-size");
    let c = &mut server.client().await;
    let sid = open(c, "gs://same-size/a").await.unwrap();
    write_at(c, &sid, 0, b"the handle's bytes").await.unwrap();
    let (h, _) = close(c, &sid).await.unwrap();
    // Another writer's file of the same length lands first.
    store
        .put(&"a".into(), b"someone else's!!!!".to_vec().into())
        .await
        .unwrap();
    let msg = expect_code(commit(c, &h, true).await, Code::FailedPrecondition);
    assert!(msg.contains("other bytes"), "{msg}");
    expect_code(commit(c, &h, false).await, Code::AlreadyExists);
    // Its own commit, answered once already, is recognised.
    let sid = open(c, "gs://same-size/b").await.unwrap();
    write_at(c, &sid, 0, b"the handle's bytes").await.unwrap();
    let (h, _) = close(c, &sid).await.unwrap();
    commit(c, &h, false).await.unwrap();
    assert_eq!(commit(c, &h, true).await.unwrap(), 18);
}

/// A component replaced behind sluice's back before the commit: real GCS
/// refuses the compose (each component's generation is a precondition);
/// gcp-storage-emulator ignores that and composes the other bytes, and the
/// CRC32C GCS computes for the result, which is not the handle's, makes the
/// commit DATA_LOSS rather than OK.
#[tokio::test]
async fn a_replaced_component_is_never_published_as_the_handles_bytes() {
    let gcs = Emulator::gcs();
    gcs.create_bucket("tamper");
    let server = TestServer::start(&gs_yaml(&gcs.url())).await;
    let store = gs_bucket(&gcs.url(), "tamper");
    let c = &mut server.client().await;
    let sid = open(c, "gs://tamper/f").await.unwrap();
    // Two components: one of 256 KiB, cut once another 256 KiB followed
    // it, and the rest at the close.
    write_at(c, &sid, 0, &multipart::bytes(31, 600_000))
        .await
        .unwrap();
    let (h, _) = close(c, &sid).await.unwrap();
    let components: Vec<_> = {
        use futures::TryStreamExt;
        store
            .list(None)
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .into_iter()
            .filter(|m| m.location.as_ref().starts_with(".f.tail."))
            .collect()
    };
    assert_eq!(components.len(), 2, "{components:?}");
    let first = &components[0];
    store
        .put(&first.location, vec![0u8; first.size as usize].into())
        .await
        .unwrap();
    let msg = expect_code(commit(c, &h, false).await, Code::DataLoss);
    assert!(msg.contains("CRC32C"), "{msg}");
}

/// With a 1 s TTL the janitor deletes an abandoned staging's components
/// and leaves a live session's alone.
#[tokio::test]
async fn janitor_removes_abandoned_components() {
    let gcs = Emulator::fake_gcs();
    gcs.create_bucket("janitor");
    let yaml = format!(
        "{}janitor.ttl: 1s\njanitor.interval: 200ms\n",
        gs_yaml(&gcs.url())
    );
    let server = TestServer::start(&yaml).await;
    let store = gs_bucket(&gcs.url(), "janitor");
    let c = &mut server.client().await;
    let dead = open(c, "gs://janitor/out/dead").await.unwrap();
    write_at(c, &dead, 0, &multipart::bytes(3, 300_000))
        .await
        .unwrap();
    persist(c, &dead).await.unwrap();
    let live = open(c, "gs://janitor/out/live").await.unwrap();
    let first = multipart::bytes(4, 1000);
    write_at(c, &live, 0, &first).await.unwrap();
    persist(c, &live).await.unwrap();
    // The dead session's process is gone: its staging is abandoned.
    abort(c, &dead).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        use futures::TryStreamExt;
        let names: Vec<String> = store
            .list(None)
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap();
        if !names.iter().any(|n| n.contains(".dead.")) {
            assert!(
                names.iter().any(|n| n.contains(".live.")),
                "the live session's component went too: {names:?}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "abandoned components stay: {names:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let rest = b" and the rest";
    write_at(c, &live, first.len() as u64, rest).await.unwrap();
    let (h, _) = close(c, &live).await.unwrap();
    commit(c, &h, false).await.unwrap();
    let got = store
        .get(&"out/live".into())
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(
        got == [&first[..], rest].concat(),
        "live file content differs"
    );
}
