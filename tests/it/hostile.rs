//! The hostile-input catalogue: malformed and hostile requests over gRPC,
//! each answered with its documented status code (README, "Security"),
//! while a session running alongside keeps writing and ends byte-exact.

use bytes::Bytes;
use prost::Message;
use sluice::handle::HandleKeys;
use sluice::proto::*;
use tonic::{Code, Status};

use crate::harness::*;

const KEY_HEX: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

/// The cases run so far, and the bystander session that writes between
/// them.
struct Catalogue {
    c: Client,
    results: Vec<(String, Code, Code, String)>,
    bystander: String,
    written: Vec<u8>,
}

impl Catalogue {
    /// Records one case, then lets the bystander write 1 KiB more.
    async fn case<T>(&mut self, name: &str, expected: Code, result: Result<T, Status>) {
        let (got, msg) = match result {
            Ok(_) => (Code::Ok, String::new()),
            Err(s) => (s.code(), s.message().to_string()),
        };
        self.results.push((name.to_string(), expected, got, msg));
        let chunk: Vec<u8> = (0..1024)
            .map(|i| (self.results.len() * 7 + i) as u8)
            .collect();
        let at = self.written.len() as u64;
        let position = write_at(&mut self.c, &self.bystander, at, &chunk)
            .await
            .unwrap_or_else(|e| panic!("the bystander failed after case {name:?}: {e}"));
        self.written.extend_from_slice(&chunk);
        assert_eq!(position, self.written.len() as u64);
    }
}

/// An Open whose path field carries raw bytes (not UTF-8), sent with the
/// same wire format as `OpenRequest`.
#[derive(Clone, PartialEq, Message)]
struct RawOpen {
    #[prost(bytes = "vec", tag = "1")]
    path: Vec<u8>,
}

async fn raw_open(addr: std::net::SocketAddr, path: Vec<u8>) -> Result<OpenResponse, Status> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    grpc.unary(
        tonic::Request::new(RawOpen { path }),
        http::uri::PathAndQuery::from_static("/sluice.v1.StorageGateway/Open"),
        tonic_prost::ProstCodec::<RawOpen, OpenResponse>::default(),
    )
    .await
    .map(|r| r.into_inner())
}

fn signed(keys: &HandleKeys, body: HandleBody) -> Vec<u8> {
    keys.seal(&body)
}

#[tokio::test]
async fn hostile_requests_get_their_documented_codes_and_harm_no_one() {
    let server = TestServer::start(&format!(
        "handle.signing.key: \"{KEY_HEX}\"\nhandle.signing.key-id: cat\n\
         rpc.max-message-size: 1mb\n"
    ))
    .await;
    let mut c = server.client().await;
    let bystander = open(&mut c, "memory://cat/bystander").await.unwrap();
    let mut cat = Catalogue {
        c: c.clone(),
        results: Vec::new(),
        bystander,
        written: Vec::new(),
    };
    let keys = HandleKeys::new(hex::decode(KEY_HEX).unwrap(), Some("cat".into()));
    let root = server.file_root();

    // ---- paths ----
    cat.case("empty path", Code::InvalidArgument, open(&mut c, "").await)
        .await;
    let huge = format!("memory://cat/{}", "x".repeat(5000));
    cat.case(
        "5,000-byte path",
        Code::InvalidArgument,
        open(&mut c, &huge).await,
    )
    .await;
    cat.case(
        "NUL in the path",
        Code::InvalidArgument,
        open(&mut c, "memory://cat/a\0b").await,
    )
    .await;
    cat.case(
        "newline in the path",
        Code::InvalidArgument,
        open(&mut c, "memory://cat/a\nb").await,
    )
    .await;
    cat.case(
        "path not UTF-8",
        Code::InvalidArgument,
        raw_open(server.addr, b"memory://cat/\xff\xfe".to_vec()).await,
    )
    .await;
    cat.case(
        "dot-dot segment",
        Code::InvalidArgument,
        open(
            &mut c,
            &format!("file://{}/a/../../etc/passwd", root.display()),
        )
        .await,
    )
    .await;
    cat.case(
        "empty segment",
        Code::InvalidArgument,
        open(&mut c, "memory://cat/a//b").await,
    )
    .await;
    cat.case(
        "relative path",
        Code::InvalidArgument,
        open(&mut c, "cat/relative").await,
    )
    .await;
    cat.case(
        "scheme with no backend",
        Code::Unimplemented,
        open(&mut c, "ftp://host/x").await,
    )
    .await;
    cat.case(
        "malformed scheme",
        Code::InvalidArgument,
        open(&mut c, "1mem://cat/x").await,
    )
    .await;
    cat.case(
        "user info in the authority",
        Code::InvalidArgument,
        open(&mut c, "memory://user:pw@cat/x").await,
    )
    .await;
    cat.case(
        "query string",
        Code::InvalidArgument,
        open(&mut c, "memory://cat/x?acl=public").await,
    )
    .await;
    cat.case(
        "directory, not a file",
        Code::InvalidArgument,
        open(&mut c, "memory://cat/dir/").await,
    )
    .await;
    cat.case(
        "file outside the roots",
        Code::PermissionDenied,
        open(&mut c, "file:///etc/sluice-was-here").await,
    )
    .await;
    // A confusable name (Cyrillic 'а') is a name of its own: written as
    // given, never folded onto the Latin one.
    let confusable = "memory://cat/p\u{0430}rt";
    put_file(&mut c, confusable, b"cyrillic").await;
    cat.case(
        "confusable name stays distinct",
        Code::NotFound,
        stat(&mut c, "memory://cat/part").await,
    )
    .await;

    // ---- sessions and offsets ----
    let sid = open(&mut c, "memory://cat/victim").await.unwrap();
    write_at(&mut c, &sid, 0, b"0123456789").await.unwrap();
    cat.case(
        "offset u64::MAX",
        Code::OutOfRange,
        write_at(&mut c, &sid, u64::MAX, b"x").await,
    )
    .await;
    cat.case(
        "offset + length overflows",
        Code::OutOfRange,
        write_at(&mut c, &sid, u64::MAX - 2, b"overflow").await,
    )
    .await;
    cat.case(
        "offset past the position",
        Code::OutOfRange,
        write_at(&mut c, &sid, 11, b"gap").await,
    )
    .await;
    cat.case(
        "unknown session id",
        Code::NotFound,
        write_at(&mut c, "not-a-session", 0, b"x").await,
    )
    .await;
    cat.case(
        "foreign session id (a UUID never issued)",
        Code::NotFound,
        persist(&mut c, &uuid::Uuid::new_v4().to_string()).await,
    )
    .await;
    cat.case(
        "empty session id",
        Code::InvalidArgument,
        persist(&mut c, "").await,
    )
    .await;
    cat.case(
        "Write call with no message",
        Code::InvalidArgument,
        c.write(tokio_stream::iter(Vec::<WriteRequest>::new()))
            .await,
    )
    .await;
    // Compressed messages (sluice accepts none) are refused by tonic
    // before any handler: the Write route leaves such calls to it.
    let mut compressed = tonic::Request::new(tokio_stream::iter(vec![WriteRequest {
        crc32c: None,
        session_id: sid.clone(),
        offset: 10,
        data: Bytes::from_static(b"z"),
    }]));
    compressed
        .metadata_mut()
        .insert("grpc-encoding", "gzip".parse().unwrap());
    cat.case(
        "Write call declaring gzip",
        Code::Unimplemented,
        c.write(compressed).await,
    )
    .await;
    let two_sessions = vec![
        WriteRequest {
            crc32c: None,
            session_id: sid.clone(),
            offset: 10,
            data: Bytes::from_static(b"a"),
        },
        WriteRequest {
            crc32c: None,
            session_id: cat.bystander.clone(),
            offset: 0,
            data: Bytes::from_static(b"b"),
        },
    ];
    cat.case(
        "two sessions in one Write call",
        Code::InvalidArgument,
        c.write(tokio_stream::iter(two_sessions)).await,
    )
    .await;
    // A Write call held open, and a second one on the same session.
    let position_now = persist(&mut c, &sid).await.unwrap().1;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(WriteRequest {
        crc32c: None,
        session_id: sid.clone(),
        offset: position_now,
        data: Bytes::from_static(b"first"),
    })
    .await
    .unwrap();
    let mut first_client = c.clone();
    let first = tokio::spawn(async move {
        first_client
            .write(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    // The first call has claimed the session once its message is applied.
    let mut claimed = false;
    for _ in 0..200 {
        if persist(&mut c, &sid).await.unwrap().1 == position_now + 5 {
            claimed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(claimed, "the first Write call's message was not applied");
    // A second call waits for the first to end (a client resending after
    // a cut connection often arrives before the gateway has seen the cut),
    // and is refused only when the first is still open after that wait.
    let waited = std::time::Instant::now();
    cat.case(
        "concurrent Write calls on one session",
        Code::Aborted,
        write_at(&mut c, &sid, position_now + 5, b"second").await,
    )
    .await;
    assert!(
        waited.elapsed() >= sluice::gateway::WRITE_HANDOVER,
        "the second Write call was refused after {:?}, before the handover wait",
        waited.elapsed()
    );
    let mut second_client = c.clone();
    let second_sid = sid.clone();
    let second = tokio::spawn(async move {
        write_at(&mut second_client, &second_sid, position_now + 5, b"second").await
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    drop(tx);
    assert_eq!(
        first.await.unwrap().unwrap().into_inner().position,
        position_now + 5
    );
    assert_eq!(
        second
            .await
            .unwrap()
            .expect("the second Write call, once the first ended"),
        position_now + 11,
        "the waiting Write call applies its bytes after the first call ends"
    );
    let oversized = vec![0u8; 2 << 20];
    cat.case(
        "message over rpc.max-message-size",
        Code::ResourceExhausted,
        write_at(&mut c, &sid, position_now + 11, &oversized).await,
    )
    .await;
    let (_, size) = close(&mut c, &sid).await.unwrap();
    cat.case(
        "write after CloseForCommit",
        Code::FailedPrecondition,
        write_at(&mut c, &sid, size, b"late").await,
    )
    .await;
    cat.case(
        "abort of an unknown session",
        Code::NotFound,
        abort(&mut c, "never-opened").await,
    )
    .await;

    // ---- handles ----
    let open_again = open(&mut c, "memory://cat/h").await.unwrap();
    write_at(&mut c, &open_again, 0, b"persisted")
        .await
        .unwrap();
    let (good, _) = persist(&mut c, &open_again).await.unwrap();
    cat.case(
        "empty handle",
        Code::InvalidArgument,
        recover(&mut c, &[]).await,
    )
    .await;
    cat.case(
        "garbage handle",
        Code::InvalidArgument,
        recover(&mut c, b"\x08\x01garbage-garbage-garbage").await,
    )
    .await;
    cat.case(
        "truncated handle",
        Code::InvalidArgument,
        commit(&mut c, &good[..good.len() / 2], false).await,
    )
    .await;
    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x40;
    cat.case(
        "one bit flipped",
        Code::InvalidArgument,
        recover(&mut c, &flipped).await,
    )
    .await;
    let future = SignedHandle {
        version: 2,
        ..SignedHandle::decode(good.as_slice()).unwrap()
    }
    .encode_to_vec();
    cat.case(
        "future envelope version",
        Code::InvalidArgument,
        recover(&mut c, &future).await,
    )
    .await;
    let other_key = HandleKeys::new(vec![1; 32], Some("cat".into()));
    let body = HandleBody::decode(
        SignedHandle::decode(good.as_slice())
            .unwrap()
            .body
            .as_slice(),
    )
    .unwrap();
    cat.case(
        "wrong key, same key id",
        Code::InvalidArgument,
        recover(&mut c, &signed(&other_key, body.clone())).await,
    )
    .await;
    let unknown_id = HandleKeys::new(vec![1; 32], Some("dog".into()));
    cat.case(
        "unknown key id",
        Code::InvalidArgument,
        commit(&mut c, &signed(&unknown_id, body.clone()), true).await,
    )
    .await;
    cat.case(
        "900 KiB of garbage as a handle",
        Code::InvalidArgument,
        cleanup(&mut c, &vec![0x0a; 900 << 10]).await,
    )
    .await;
    cat.case(
        "handle over rpc.max-message-size",
        Code::ResourceExhausted,
        cleanup(&mut c, &vec![0x0a; (4 << 20) + 1]).await,
    )
    .await;
    // Signed with the real key (an insider, or a key leak), the content is
    // still checked like a request.
    cat.case(
        "signed handle, kind unspecified",
        Code::InvalidArgument,
        recover(
            &mut c,
            &signed(
                &keys,
                HandleBody {
                    kind: HandleKind::Unspecified as i32,
                    ..body.clone()
                },
            ),
        )
        .await,
    )
    .await;
    cat.case(
        "signed handle naming a dot-dot path",
        Code::InvalidArgument,
        commit(
            &mut c,
            &signed(
                &keys,
                HandleBody {
                    target: format!("file://{}/../../etc/x", root.display()),
                    ..body.clone()
                },
            ),
            false,
        )
        .await,
    )
    .await;
    let file_handle = |target: String, temp: &str| HandleBody {
        target,
        staging: Some(handle_body::Staging::File(FileStaging {
            temp_path: temp.into(),
        })),
        ..body.clone()
    };
    cat.case(
        "signed handle naming a path outside the roots",
        Code::PermissionDenied,
        commit(
            &mut c,
            &signed(
                &keys,
                file_handle(
                    "file:///etc/sluice-was-here".into(),
                    "/etc/.sluice-was-here.inprogress.x",
                ),
            ),
            false,
        )
        .await,
    )
    .await;
    let bait = root.join("bait");
    cat.case(
        "signed handle whose staged file is any file",
        Code::InvalidArgument,
        commit(
            &mut c,
            &signed(
                &keys,
                file_handle(format!("file://{}", bait.display()), "/etc/hostname"),
            ),
            true,
        )
        .await,
    )
    .await;
    assert!(!bait.exists(), "a forged handle published a file");
    cat.case(
        "commit handle given to Recover",
        Code::FailedPrecondition,
        {
            let s = open(&mut c, "memory://cat/closed").await.unwrap();
            let (h, _) = close(&mut c, &s).await.unwrap();
            recover(&mut c, &h).await
        },
    )
    .await;
    // Abort is Flink's close(): what a handle names stays committable.
    abort(&mut c, &open_again).await.unwrap();
    cat.case(
        "commit of an aborted session's resume handle",
        Code::Ok,
        commit(&mut c, &good, false).await,
    )
    .await;
    assert_eq!(
        read_all(&mut c, "memory://cat/h", 0, 0).await.unwrap(),
        b"persisted"
    );
    cat.case(
        "the same commit again",
        Code::AlreadyExists,
        commit(&mut c, &good, false).await,
    )
    .await;
    cat.case(
        "recover of a committed handle",
        Code::FailedPrecondition,
        recover(&mut c, &good).await,
    )
    .await;

    // ---- the read side ----
    cat.case(
        "read past the end",
        Code::OutOfRange,
        read_all(&mut c, "memory://cat/h", 1 << 40, 0).await,
    )
    .await;
    cat.case(
        "read of a missing file",
        Code::NotFound,
        read_all(&mut c, "memory://cat/missing", 0, 0).await,
    )
    .await;
    cat.case(
        "delete of a whole store",
        Code::PermissionDenied,
        delete(&mut c, "memory://cat/", true).await,
    )
    .await;
    cat.case(
        "rename across schemes",
        Code::InvalidArgument,
        c.rename(RenameRequest {
            from: "memory://cat/h".into(),
            to: format!("file://{}/h", root.display()),
        })
        .await,
    )
    .await;

    // ---- floods ----
    // Thousands of Opens that never write: all served, nothing else hurt.
    let mut opens = Vec::new();
    for i in 0..3000 {
        let mut c = c.clone();
        opens.push(tokio::spawn(async move {
            open(&mut c, &format!("memory://cat/idle/{i}")).await
        }));
    }
    let mut refused = 0;
    for o in opens {
        if o.await.unwrap().is_err() {
            refused += 1;
        }
    }
    cat.case(
        "3,000 Opens without writes",
        Code::Ok,
        if refused == 0 {
            Ok(())
        } else {
            Err(Status::internal(format!("{refused} refused")))
        },
    )
    .await;
    // Not HTTP/2 at all on the gRPC port: the connection is dropped.
    let junk = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let _ = s
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\xff\x00\xff garbage")
            .await;
        let mut buf = vec![0u8; 4096];
        let closed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        closed.map_err(|_| Status::internal("the junk connection was kept open"))
    };
    cat.case("bytes that are not HTTP/2", Code::Ok, junk).await;

    // Every case got its code.
    let wrong: Vec<_> = cat
        .results
        .iter()
        .filter(|(_, expected, got, _)| expected != got)
        .collect();
    assert!(wrong.is_empty(), "cases answered wrongly: {wrong:#?}");
    assert!(cat.results.len() >= 30, "{} cases", cat.results.len());
    // Error messages say what is wrong; none is empty.
    for (name, _, got, msg) in &cat.results {
        assert!(*got == Code::Ok || !msg.is_empty(), "{name}: empty message");
    }
    // The bystander ends byte-exact.
    let (h, size) = close(&mut c, &cat.bystander).await.unwrap();
    assert_eq!(size, cat.written.len() as u64);
    commit(&mut c, &h, false).await.unwrap();
    assert_eq!(
        read_all(&mut c, "memory://cat/bystander", 0, 0)
            .await
            .unwrap(),
        cat.written
    );
    eprintln!("{} hostile cases answered as documented", cat.results.len());
}
