//! A failing store: a fault-injecting proxy between sluice and the S3
//! emulator resets, truncates and stalls a share of the connections while
//! 100 files are written with persists and recoveries. Every failure a
//! client sees is UNAVAILABLE (the rest object_store retries), nothing a
//! Persist acknowledged is lost, and every committed file is byte-exact.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use object_store::ObjectStoreExt;
use sha2::{Digest, Sha256};
use tonic::{Code, Status};

use crate::cloud::{s3_client, s3_yaml};
use crate::emulators::Emulator;
use crate::harness::*;
use crate::proxy::FaultProxy;

const FILES: usize = 100;

/// What the clients saw.
#[derive(Default)]
struct Seen {
    unavailable: AtomicUsize,
    recoveries: AtomicUsize,
    commit_retries: AtomicUsize,
}

/// File `i`'s bytes: mostly small files (a tail object per persist), every
/// tenth over one 5 MiB part.
fn content(i: usize) -> Vec<u8> {
    let len = if i.is_multiple_of(10) {
        (6 << 20) + i * 1000
    } else {
        (40 << 10) + i * 3517
    };
    crate::multipart::bytes(i as u64 + 1, len)
}

/// Fails the test on anything but UNAVAILABLE; counts that.
fn only_unavailable(status: Status, what: &str, seen: &Seen) {
    assert_eq!(
        status.code(),
        Code::Unavailable,
        "{what}: {}",
        status.message()
    );
    seen.unavailable.fetch_add(1, Relaxed);
}

/// Writes file `i` the way a job does: persist at a third and two thirds,
/// lose the session once after the second persist and recover it, close,
/// commit. Any UNAVAILABLE sends it back to its last handle.
async fn write_file(mut c: Client, i: usize, seen: &Seen) -> Vec<u8> {
    let data = content(i);
    let path = format!("s3://faults/out/file-{i:03}");
    let marks = [data.len() / 3, data.len() * 2 / 3, data.len()];
    // (handle, position) of the last Persist that answered.
    let mut last: Option<(Vec<u8>, u64)> = None;
    let mut crashed_once = false;
    let mut commit_after_recovery = false;
    let commit_handle = 'file: loop {
        // A session: recovered from the last handle, or opened anew.
        let (sid, mut pos) = match &last {
            Some((handle, pos)) => match recover(&mut c, handle).await {
                Ok((sid, p)) => {
                    assert_eq!(p, *pos, "Recover moved the position");
                    seen.recoveries.fetch_add(1, Relaxed);
                    (sid, p)
                }
                Err(s) => {
                    only_unavailable(s, "Recover", seen);
                    continue;
                }
            },
            None => match open(&mut c, &path).await {
                Ok(sid) => (sid, 0),
                Err(s) => {
                    only_unavailable(s, "Open", seen);
                    continue;
                }
            },
        };
        for &mark in &marks {
            if pos as usize >= mark {
                continue;
            }
            let chunks: Vec<(u64, Vec<u8>)> = (pos as usize..mark)
                .step_by(256 << 10)
                .map(|at| (at as u64, data[at..mark.min(at + (256 << 10))].to_vec()))
                .collect();
            match write_chunks(&mut c, &sid, chunks).await {
                Ok(p) => pos = p,
                Err(s) => {
                    only_unavailable(s, "Write", seen);
                    continue 'file;
                }
            }
            if mark == data.len() {
                break;
            }
            match persist(&mut c, &sid).await {
                Ok((h, p)) => {
                    assert_eq!(p, mark as u64);
                    last = Some((h, p));
                }
                Err(s) => {
                    only_unavailable(s, "Persist", seen);
                    continue 'file;
                }
            }
            if mark == marks[1] && !crashed_once {
                // The client loses its session: resume from the handle.
                crashed_once = true;
                continue 'file;
            }
        }
        match close(&mut c, &sid).await {
            Ok((h, size)) => {
                assert_eq!(size, data.len() as u64);
                break h;
            }
            Err(s) => only_unavailable(s, "CloseForCommit", seen),
        }
    };
    loop {
        match commit(&mut c, &commit_handle, commit_after_recovery).await {
            Ok(size) => {
                assert_eq!(size, data.len() as u64);
                break;
            }
            Err(s) => {
                only_unavailable(s, "Commit", seen);
                // Whether the failed attempt published is unknown: the
                // retry says so, as a job's restart would.
                commit_after_recovery = true;
                seen.commit_retries.fetch_add(1, Relaxed);
            }
        }
    }
    Sha256::digest(&data).to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faulty_store_loses_and_duplicates_nothing() {
    let moto = Emulator::moto(None);
    moto.create_bucket("faults");
    let upstream: std::net::SocketAddr = moto.url()["http://".len()..].parse().unwrap();
    let proxy = FaultProxy::start(upstream, 25, std::time::Duration::from_millis(1500), 2026).await;
    let server = TestServer::start(&format!(
        "{}s3.request.timeout: 1s\ns3.retry.max-retries: 2\n",
        s3_yaml(&format!("http://{}", proxy.addr), "5mb")
    ))
    .await;
    let c = server.client().await;
    let seen = Arc::new(Seen::default());
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (c, seen, next) = (c.clone(), seen.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Relaxed);
                if i >= FILES {
                    return done;
                }
                done.push((i, write_file(c.clone(), i, &seen).await));
            }
        }));
    }
    let mut digests = Vec::new();
    for w in workers {
        digests.extend(w.await.unwrap());
    }
    assert_eq!(digests.len(), FILES);

    // Read back straight from the emulator, not through the proxy.
    let store = s3_client(&moto.url(), "faults");
    for (i, digest) in &digests {
        let key = object_store::path::Path::from(format!("out/file-{i:03}"));
        let bytes = store.get(&key).await.unwrap().bytes().await.unwrap();
        assert_eq!(
            &Sha256::digest(&bytes)[..],
            &digest[..],
            "file {i} differs ({} bytes)",
            bytes.len()
        );
    }
    let counts = &proxy.counts;
    let (resets, truncated, stalls) = (
        counts.resets.load(Relaxed),
        counts.truncated.load(Relaxed),
        counts.stalls.load(Relaxed),
    );
    eprintln!(
        "{FILES} files byte-exact; proxy: {} connections, {resets} resets, {truncated} truncated answers, {stalls} stalls; clients: {} UNAVAILABLE, {} recoveries, {} commit retries",
        counts.connections.load(Relaxed),
        seen.unavailable.load(Relaxed),
        seen.recoveries.load(Relaxed),
        seen.commit_retries.load(Relaxed),
    );
    assert!(
        resets >= 10 && truncated >= 10 && stalls >= 10,
        "too few faults to mean anything: {resets} resets, {truncated} truncated, {stalls} stalls"
    );
    assert!(seen.recoveries.load(Relaxed) >= FILES);
}
