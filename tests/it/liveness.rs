//! The gateway stays live under concurrent writers: eight sessions each
//! loop `Write` 4 KiB + `Persist` for a while (this used to wedge the
//! gateway for good on `file://` within 15 s: concurrent sled flushes
//! deadlocked), while a bystander opens, commits and asks gRPC health.
//! Every call has a deadline; one that misses it fails the test. At the end
//! every writer's file is committed and read back byte for byte.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::harness::*;

/// No single call may take longer than this (a wedged gateway never answers).
const CALL_DEADLINE: Duration = Duration::from_secs(20);
const WRITERS: usize = 8;
const CHUNK: usize = 4096;

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(CALL_DEADLINE, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not answer within {CALL_DEADLINE:?}: the gateway is wedged"),
    }
}

fn chunk_of(writer: usize, n: u64) -> Vec<u8> {
    let mut data = vec![0u8; CHUNK];
    for (i, b) in data.iter_mut().enumerate() {
        *b = (writer as u64 * 31 + n * 7 + i as u64) as u8;
    }
    data
}

/// Runs the eight writers against `t` for `run_for`; returns the persists done.
pub async fn eight_persisting_writers(
    t: &Target,
    health: tonic::transport::Channel,
    run_for: Duration,
) -> u64 {
    let persists = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + run_for;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let mut c = t.client.clone();
        let uri = t.uri(&format!("live-{w}"));
        let persists = persists.clone();
        tasks.push(tokio::spawn(async move {
            let sid = within("Open", open(&mut c, &uri)).await.unwrap();
            let mut n = 0u64;
            let mut previous: Option<Vec<u8>> = None;
            while Instant::now() < deadline {
                let data = chunk_of(w, n);
                within("Write", write_at(&mut c, &sid, n * CHUNK as u64, &data))
                    .await
                    .unwrap();
                n += 1;
                let (handle, pos) = within("Persist", persist(&mut c, &sid)).await.unwrap();
                assert_eq!(pos, n * CHUNK as u64);
                persists.fetch_add(1, Ordering::Relaxed);
                // As Flink does once a checkpoint completes: the handle
                // before it is no longer needed.
                if let Some(old) = previous.replace(handle) {
                    within("Cleanup", cleanup(&mut c, &old)).await.unwrap();
                }
            }
            let t0 = Instant::now();
            let (h, size) = within("CloseForCommit", close(&mut c, &sid)).await.unwrap();
            let t1 = Instant::now();
            within("Commit", commit(&mut c, &h, false)).await.unwrap();
            eprintln!(
                "writer {w}: {n} persists, close {:?}, commit {:?}",
                t1 - t0,
                t1.elapsed()
            );
            (w, n, size)
        }));
    }
    // The bystander: a whole file and a health check, over and over.
    let bystander = {
        let mut c = t.client.clone();
        let uri = t.uri("bystander");
        tokio::spawn(async move {
            let mut health = tonic_health::pb::health_client::HealthClient::new(health);
            let mut rounds = 0u64;
            while Instant::now() < deadline {
                let status = within(
                    "health",
                    health.check(tonic_health::pb::HealthCheckRequest::default()),
                )
                .await
                .unwrap()
                .into_inner()
                .status;
                assert_eq!(status, 1, "health is not SERVING");
                let sid = within("bystander Open", open(&mut c, &format!("{uri}-{rounds}")))
                    .await
                    .unwrap();
                within("bystander Write", write_at(&mut c, &sid, 0, b"bystander"))
                    .await
                    .unwrap();
                let (h, _) = within("bystander Close", close(&mut c, &sid))
                    .await
                    .unwrap();
                within("bystander Commit", commit(&mut c, &h, false))
                    .await
                    .unwrap();
                rounds += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            rounds
        })
    };
    for task in tasks {
        let (w, n, size) = task.await.unwrap();
        assert_eq!(size, n * CHUNK as u64);
        let expected: Vec<u8> = (0..n).flat_map(|i| chunk_of(w, i)).collect();
        let got = t.store.read(&format!("live-{w}")).await.unwrap();
        assert!(got == expected, "writer {w}: the committed file differs");
    }
    assert!(
        bystander.await.unwrap() > 0,
        "the bystander never got through"
    );
    let persists = persists.load(Ordering::Relaxed);
    eprintln!(
        "{} persists by {WRITERS} writers in {run_for:?} on {}",
        persists, t.base
    );
    persists
}

pub async fn health_channel(server: &TestServer) -> tonic::transport::Channel {
    tonic::transport::Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap()
}
