//! The RPC edge: load shedding, message size, deadlines, request ids.

use std::time::{Duration, Instant};

use tonic::Code;

use crate::harness::*;

async fn capabilities(
    c: &mut Client,
) -> Result<tonic::Response<sluice::proto::CapabilitiesResponse>, tonic::Status> {
    c.capabilities(sluice::proto::CapabilitiesRequest {
        path: "memory://edge/x".into(),
    })
    .await
}

/// The cause sluice names in a status's `sluice-cause` metadata.
fn cause(status: &tonic::Status) -> &str {
    status
        .metadata()
        .get("sluice-cause")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Every status sluice answers names its cause; tonic's own decoding
/// failures are told from sluice's answers by it, not by their words.
#[tokio::test]
async fn statuses_name_their_cause() {
    let server = TestServer::start("").await;
    let mut c = server.client().await;
    let unknown = c
        .open(sluice::proto::OpenRequest {
            path: "gopher://x/y".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::Unimplemented);
    assert_eq!(cause(&unknown), "Unimplemented");
    let gap = c
        .persist(sluice::proto::PersistRequest {
            session_id: "no-such-session".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(cause(&gap), "SessionNotFound", "{gap:?}");
}

#[tokio::test]
async fn calls_past_the_bound_are_shed_and_the_server_keeps_serving() {
    let server =
        TestServer::start("rpc.max-concurrent-requests: 1\nfs.memory.limit.output: 1\n").await;
    let mut c = server.client().await;
    let holder = open(&mut c, "memory://edge/holder").await.unwrap();
    // In flight: an Open waiting for the one output slot (the one unary
    // slot), and a Write call whose stream stays open (a stream slot,
    // counted apart).
    let waiter = {
        let mut c = c.clone();
        tokio::spawn(async move { open(&mut c, "memory://edge/waiter").await })
    };
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(sluice::proto::WriteRequest {
        crc32c: None,
        session_id: holder.clone(),
        offset: 0,
        data: bytes::Bytes::from_static(b"held"),
    })
    .await
    .unwrap();
    let writing = {
        let mut c = c.clone();
        tokio::spawn(async move {
            c.write(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let shed = capabilities(&mut c).await.unwrap_err();
    assert_eq!(cause(&shed), "Shed", "{shed:?}");
    let msg = expect_code(Err::<(), _>(shed), Code::ResourceExhausted);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "shedding should be immediate"
    );
    assert!(msg.contains("rpc.max-concurrent-requests"), "{msg}");
    // The waiting Open is given up: its slot is free for a call again.
    waiter.abort();
    let _ = waiter.await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while capabilities(&mut c).await.is_err() {
        assert!(Instant::now() < deadline, "the given-up Open kept its slot");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(tx);
    writing.await.unwrap().unwrap();
    let (h, _) = close(&mut c, &holder).await.unwrap();
    commit(&mut c, &h, false).await.unwrap();
    let sid = open(&mut c, "memory://edge/after").await.unwrap();
    abort(&mut c, &sid).await.unwrap();
}

#[tokio::test]
async fn oversized_messages_are_resource_exhausted_and_the_session_goes_on() {
    let server = TestServer::start("rpc.max-message-size: 64kb\n").await;
    let mut c = server.client().await;
    let sid = open(&mut c, "memory://edge/file").await.unwrap();
    write_at(&mut c, &sid, 0, &[1u8; 1000]).await.unwrap();
    let msg = expect_code(
        write_at(&mut c, &sid, 1000, &vec![2u8; 100 * 1024]).await,
        Code::ResourceExhausted,
    );
    assert!(msg.contains("rpc.max-message-size"), "{msg}");
    let huge_path = format!("memory://edge/{}", "p".repeat(100 * 1024));
    expect_code(open(&mut c, &huge_path).await, Code::ResourceExhausted);
    // Nothing of the refused message was applied; the session goes on.
    write_at(&mut c, &sid, 1000, &[3u8; 1000]).await.unwrap();
    let (h, size) = close(&mut c, &sid).await.unwrap();
    assert_eq!(size, 2000);
    commit(&mut c, &h, false).await.unwrap();
    let caps = capabilities(&mut c).await.unwrap().into_inner();
    assert_eq!(caps.max_message_size, 64 * 1024);
}

#[tokio::test]
async fn unary_rpcs_have_a_deadline() {
    let server = TestServer::start("rpc.unary-timeout: 200ms\nfs.memory.limit.output: 1\n").await;
    let mut c = server.client().await;
    let holder = open(&mut c, "memory://edge/holder").await.unwrap();
    let started = Instant::now();
    let msg = expect_code(
        open(&mut c, "memory://edge/late").await,
        Code::DeadlineExceeded,
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(200) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    assert!(msg.contains("rpc.unary-timeout"), "{msg}");
    // The abandoned wait left no trace in the pool.
    abort(&mut c, &holder).await.unwrap();
    open(&mut c, "memory://edge/next").await.unwrap();
}

#[tokio::test]
async fn a_write_stream_that_goes_quiet_is_ended_and_keeps_what_it_sent() {
    let server = TestServer::start("rpc.write-idle-timeout: 200ms\n").await;
    let mut c = server.client().await;
    let sid = open(&mut c, "memory://edge/quiet").await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(sluice::proto::WriteRequest {
        crc32c: None,
        session_id: sid.clone(),
        offset: 0,
        data: bytes::Bytes::from_static(b"first"),
    })
    .await
    .unwrap();
    let started = Instant::now();
    let result = c
        .clone()
        .write(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map(|r| r.into_inner().position);
    let msg = expect_code(result, Code::DeadlineExceeded);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(msg.contains("rpc.write-idle-timeout"), "{msg}");
    drop(tx);
    assert_eq!(
        persist(&mut c, &sid).await.unwrap().1,
        5,
        "the acknowledged message was kept"
    );
}

#[tokio::test]
async fn every_rpc_has_a_request_id() {
    let server = TestServer::start("").await;
    let mut c = server.client().await;
    let made = capabilities(&mut c).await.unwrap();
    let id = made
        .metadata()
        .get("x-request-id")
        .expect("a request id")
        .to_str()
        .unwrap();
    assert_eq!(id.len(), 36, "a uuid: {id}");
    let mut request = tonic::Request::new(sluice::proto::CapabilitiesRequest {
        path: "memory://edge/x".into(),
    });
    request
        .metadata_mut()
        .insert("x-request-id", "job-42-checkpoint-7".parse().unwrap());
    let kept = c.capabilities(request).await.unwrap();
    assert_eq!(
        kept.metadata().get("x-request-id").unwrap(),
        "job-42-checkpoint-7"
    );
}
