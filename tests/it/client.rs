//! `sluice_client` against the real server: the Flink-shaped API, batching,
//! and retries across cut connections that never duplicate a byte.

use std::time::Duration;

use bytes::Bytes;
use sluice_client::{Client, ClientOptions, ResumeHandle, Retry};
use tonic::Code;

use crate::harness::*;
use crate::proxy::{CorruptProxy, CutProxy};

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

#[tokio::test]
async fn client_writes_persists_recovers_and_commits() {
    let server = TestServer::start("").await;
    let options = ClientOptions {
        chunk_size: 1000,
        ..ClientOptions::default()
    };
    let client = Client::connect_with(format!("http://{}", server.addr), options)
        .await
        .unwrap();
    let target = format!("file://{}/out/part-0", server.file_root().display());
    let data = pattern(25_000, 7);

    let mut stream = client.open(&target).await.unwrap();
    assert_eq!(stream.path(), target);
    // Many small writes are batched into 1000-byte messages.
    for piece in data[..10_000].chunks(37) {
        stream.write(piece).await.unwrap();
    }
    let handle = stream.persist().await.unwrap();
    assert_eq!(stream.position(), 10_000);
    stream.write(&data[10_000..12_345]).await.unwrap();
    stream.abort().await.unwrap();

    // Resume from the handle as a restarted job would, from its bytes.
    let restored = ResumeHandle(handle.0.clone());
    let mut stream = client.recover(&restored).await.unwrap();
    assert_eq!(stream.position(), 10_000);
    stream
        .write_bytes(Bytes::copy_from_slice(&data[10_000..]))
        .await
        .unwrap();
    let committer = stream.close_for_commit().await.unwrap();
    let committed = committer.commit().await.unwrap();
    assert_eq!(
        (committed.path.as_str(), committed.size),
        (target.as_str(), 25_000)
    );
    assert_eq!(client.read_all(&target).await.unwrap(), data);

    // A second commit of the same handle: ALREADY_EXISTS, unless after
    // recovery, where it is recognised as done.
    let again = committer.commit().await.unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists, "{again}");
    assert_eq!(
        committer.commit_after_recovery().await.unwrap().size,
        25_000
    );
    assert!(!client.cleanup(&handle).await.unwrap());
}

#[tokio::test]
async fn client_errors_carry_the_status_code() {
    let server = TestServer::start("").await;
    let client = Client::connect(format!("http://{}", server.addr))
        .await
        .unwrap();
    let err = client.open("nope://x/y").await.err().unwrap();
    assert_eq!(err.code(), Code::Unimplemented, "{err}");
    let err = client
        .recover(&ResumeHandle(b"forged".to_vec()))
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    // Nothing listens here: connect fails at once, as UNAVAILABLE.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let options = ClientOptions {
        retry: Retry {
            attempts: 1,
            ..Retry::default()
        },
        ..ClientOptions::default()
    };
    let err = Client::connect_with(format!("http://127.0.0.1:{port}"), options)
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
}

/// The connection is cut again and again while a file streams through;
/// the client sends the unacknowledged bytes again and the committed file
/// holds every byte exactly once.
#[tokio::test]
async fn cut_connections_are_retried_without_duplicating_bytes() {
    let server = TestServer::start("").await;
    let proxy = CutProxy::start(server.addr).await;
    let options = ClientOptions {
        chunk_size: 64 << 10,
        max_unacked: 4 << 20,
        retry: Retry {
            attempts: 20,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(200),
        },
        ..ClientOptions::default()
    };
    let client = Client::connect_with(format!("http://{}", proxy.addr), options)
        .await
        .unwrap();
    let target = format!("file://{}/cut/part-0", server.file_root().display());
    let data = pattern(24 << 20, 3);

    let mut stream = client.open(&target).await.unwrap();
    let mut cuts = 0;
    for (i, piece) in data.chunks(1 << 20).enumerate() {
        stream.write(piece).await.unwrap();
        if i % 3 == 1 {
            // Let some bytes reach the server, then cut mid-call.
            tokio::time::sleep(Duration::from_millis(5)).await;
            cuts += proxy.cut();
        }
        if i % 8 == 7 {
            stream.persist().await.unwrap();
        }
    }
    let committer = stream.close_for_commit().await.unwrap();
    proxy.cut();
    committer.commit().await.unwrap();
    assert!(cuts >= 5, "only {cuts} connections were cut");
    let stored = std::fs::read(server.file_root().join("cut/part-0")).unwrap();
    assert_eq!(stored.len(), data.len());
    assert!(
        stored == data,
        "the committed bytes differ from the bytes written"
    );
}

/// A proxy flips a byte in every 100th large DATA frame towards the
/// server: each damaged message is refused with DATA_LOSS (its CRC32C is
/// the client's, taken before it left), the client sends it again, and the
/// committed file is exactly the bytes written. Without checksums the same
/// damage is published.
#[tokio::test]
async fn damaged_writes_are_caught_and_sent_again() {
    let server = TestServer::start("").await;
    let proxy = CorruptProxy::start(server.addr, 100).await;
    let options = |checksums| ClientOptions {
        chunk_size: 256 << 10,
        max_unacked: 1 << 20,
        retry: Retry {
            attempts: 50,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(20),
        },
        checksums,
        ..ClientOptions::default()
    };
    let data = pattern(16 << 20, 5);
    let root = server.file_root();
    for (checksums, name) in [(true, "checked"), (false, "unchecked")] {
        let client = Client::connect_with(format!("http://{}", proxy.addr), options(checksums))
            .await
            .unwrap();
        let before = proxy.flipped.load(std::sync::atomic::Ordering::Relaxed);
        let mut stream = client
            .open(&format!("file://{}/crc/{name}", root.display()))
            .await
            .unwrap();
        for (i, piece) in data.chunks(1 << 20).enumerate() {
            stream.write(piece).await.unwrap();
            if i % 4 == 3 {
                stream.persist().await.unwrap();
            }
        }
        let committed = stream
            .close_for_commit()
            .await
            .unwrap()
            .commit()
            .await
            .unwrap();
        let flipped = proxy.flipped.load(std::sync::atomic::Ordering::Relaxed) - before;
        assert!(flipped >= 10, "only {flipped} bytes were flipped");
        let stored = std::fs::read(root.join("crc").join(name)).unwrap();
        if checksums {
            assert!(stored == data, "a damaged message was applied");
            assert_eq!(committed.crc32c, crc32c::crc32c(&data));
        } else {
            assert_eq!(stored.len(), data.len());
            assert!(stored != data, "the damage went unseen by this test");
        }
    }
}

/// `Write` streams travel on a connection of their own, so the bytes they
/// have in flight never sit ahead of a `Persist` or a `Commit` (HTTP/2 flow
/// control and TCP order are per connection). Measured with sluice-bench:
/// at 64 writers on one connection, a Persist waited for the connection's
/// window behind the other writers' bytes.
#[tokio::test]
async fn write_streams_use_a_connection_of_their_own() {
    let server = TestServer::start("").await;
    let proxy = CutProxy::start(server.addr).await;
    let client = Client::connect(format!("http://{}", proxy.addr))
        .await
        .unwrap();
    let target = format!("file://{}/out/separate", server.file_root().display());
    let data = pattern(6 << 20, 3);
    let mut stream = client.open(&target).await.unwrap();
    stream.write(&data[..3 << 20]).await.unwrap();
    stream.persist().await.unwrap();
    stream.write(&data[3 << 20..]).await.unwrap();
    let committer = stream.close_for_commit().await.unwrap();
    committer.commit().await.unwrap();
    drop((committer, client));

    let mut ended = Vec::new();
    for _ in 0..200 {
        ended = proxy.ended_connections();
        if ended.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ended.sort();
    assert_eq!(ended.len(), 2, "connections and their bytes: {ended:?}");
    assert!(
        ended[0] < 64 << 10,
        "the control connection carried {} bytes: Write data went over it",
        ended[0]
    );
    assert!(
        ended[1] >= 6 << 20,
        "the data connection carried only {} bytes",
        ended[1]
    );
    assert_eq!(
        std::fs::read(server.file_root().join("out/separate")).unwrap(),
        data
    );
}
