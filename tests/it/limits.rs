//! Flink's stream limits (`fs.<scheme>.limit.*`) through the real server.

use std::time::{Duration, Instant};

use tonic::Code;

use crate::harness::*;

async fn opened(c: &Client, path: &str) -> tokio::task::JoinHandle<Result<String, tonic::Status>> {
    let (mut c, path) = (c.clone(), path.to_string());
    tokio::spawn(async move { open(&mut c, &path).await })
}

async fn finish(c: &mut Client, sid: &str) {
    let (h, _) = close(c, sid).await.unwrap();
    commit(c, &h, false).await.unwrap();
}

#[tokio::test]
async fn output_limit_makes_opens_wait_until_a_session_commits() {
    let server = TestServer::start("fs.memory.limit.output: 2\n").await;
    let mut c = server.client().await;
    let a = open(&mut c, "memory://lim/a").await.unwrap();
    let _b = open(&mut c, "memory://lim/b").await.unwrap();
    let third = opened(&c, "memory://lim/c").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!third.is_finished(), "a third Open did not wait");
    finish(&mut c, &a).await;
    let third = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .expect("the third Open proceeds once a session commits")
        .unwrap();
    assert!(third.is_ok(), "{third:?}");
}

#[tokio::test]
async fn waiting_times_out_with_the_limits_and_counts() {
    let server =
        TestServer::start("fs.memory.limit.output: 2\nfs.memory.limit.timeout: 200\n").await;
    let mut c = server.client().await;
    let a = open(&mut c, "memory://lim/a").await.unwrap();
    open(&mut c, "memory://lim/b").await.unwrap();
    let started = Instant::now();
    let msg = expect_code(
        open(&mut c, "memory://lim/c").await,
        Code::ResourceExhausted,
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(200) && waited < Duration::from_secs(2),
        "waited {waited:?} for a 200 ms timeout"
    );
    assert!(
        msg.contains("output=2") && msg.contains("2 output"),
        "{msg}"
    );
    // The server keeps serving; a slot freed is a slot to have.
    finish(&mut c, &a).await;
    open(&mut c, "memory://lim/c").await.unwrap();
}

/// A Read that the client has not finished holds an input slot.
async fn held_read(c: &Client, path: &str) -> tonic::Streaming<sluice::proto::ReadResponse> {
    let mut stream = c
        .clone()
        .read(sluice::proto::ReadRequest {
            path: path.into(),
            offset: 0,
            length: 0,
        })
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().expect("a first chunk");
    stream
}

async fn eventually_open(c: &mut Client, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match open(c, path).await {
            Ok(_) => return,
            Err(s) if s.code() == Code::ResourceExhausted && Instant::now() < deadline => {}
            Err(s) => panic!("Open never got a slot: {s:?}"),
        }
    }
}

#[tokio::test]
async fn total_counts_reads_and_writes_input_only_reads() {
    let server = TestServer::start(
        "fs.memory.limit.total: 2\nfs.memory.limit.input: 1\nfs.memory.limit.timeout: 200\n",
    )
    .await;
    let mut c = server.client().await;
    put_file(&mut c, "memory://lim/big", &vec![5u8; 8 << 20]).await;
    let _writer = open(&mut c, "memory://lim/w1").await.unwrap();
    let read = held_read(&c, "memory://lim/big").await;
    // One writer and one reader: total is reached, for writes too.
    let msg = expect_code(
        open(&mut c, "memory://lim/w2").await,
        Code::ResourceExhausted,
    );
    assert!(
        msg.contains("total=2") && msg.contains("1 output, 1 input"),
        "{msg}"
    );
    // input=1: a second reader waits, then gives up.
    let second = c
        .read(sluice::proto::ReadRequest {
            path: "memory://lim/big".into(),
            offset: 0,
            length: 0,
        })
        .await;
    expect_code(second.map(drop), Code::ResourceExhausted);
    drop(read);
    eventually_open(&mut c, "memory://lim/w2").await;
}

#[tokio::test]
async fn input_limit_leaves_writes_alone() {
    let server =
        TestServer::start("fs.memory.limit.input: 1\nfs.memory.limit.timeout: 200\n").await;
    let mut c = server.client().await;
    put_file(&mut c, "memory://lim/big", &vec![5u8; 8 << 20]).await;
    let _read = held_read(&c, "memory://lim/big").await;
    for i in 0..3 {
        open(&mut c, &format!("memory://lim/w{i}")).await.unwrap();
    }
}

#[tokio::test]
async fn idle_session_is_reclaimed_for_a_waiter_and_stays_recoverable() {
    let server =
        TestServer::start("fs.memory.limit.output: 1\nfs.memory.limit.stream-timeout: 300\n").await;
    let mut c = server.client().await;
    let idle = open(&mut c, "memory://lim/idle").await.unwrap();
    write_at(&mut c, &idle, 0, b"persisted, ").await.unwrap();
    let (handle, _) = persist(&mut c, &idle).await.unwrap();
    let started = Instant::now();
    let waiter = open(&mut c, "memory://lim/waiter").await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the waiter waited {:?}",
        started.elapsed()
    );
    let msg = expect_code(write_at(&mut c, &idle, 11, b"late").await, Code::Aborted);
    assert!(msg.contains("inactivity timeout"), "{msg}");
    expect_code(persist(&mut c, &idle).await, Code::Aborted);
    finish(&mut c, &waiter).await;
    // What the reclaimed session persisted is all there.
    let (sid, pos) = recover(&mut c, &handle).await.unwrap();
    assert_eq!(pos, 11);
    write_at(&mut c, &sid, pos, b"then finished").await.unwrap();
    finish(&mut c, &sid).await;
    assert_eq!(
        read_all(&mut c, "memory://lim/idle", 0, 0).await.unwrap(),
        b"persisted, then finished"
    );
}

#[tokio::test]
async fn the_reaper_reclaims_idle_sessions_without_waiters() {
    let server = TestServer::start("fs.memory.limit.stream-timeout: 500\n").await;
    let mut c = server.client().await;
    let idle = open(&mut c, "memory://lim/idle").await.unwrap();
    write_at(&mut c, &idle, 0, b"x").await.unwrap();
    let busy = open(&mut c, "memory://lim/busy").await.unwrap();
    // One session makes progress every 50 ms (a tenth of the timeout) while
    // the other idles for three times the timeout.
    for i in 0..30u64 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        write_at(&mut c, &busy, i, b"y").await.unwrap();
    }
    let msg = expect_code(write_at(&mut c, &idle, 1, b"x").await, Code::Aborted);
    assert!(msg.contains("inactivity timeout"), "{msg}");
    finish(&mut c, &busy).await;
}

/// A reclaimed session ends as soon as the limiter reclaims its slot (the
/// limiter tells the gateway), freeing what its writer holds, even when its
/// client never calls again; its next call says why.
#[tokio::test]
async fn a_reclaimed_session_ends_without_another_call() {
    let server = TestServer::start("fs.memory.limit.stream-timeout: 300\n").await;
    let mut c = server.client().await;
    let idle = open(&mut c, "memory://lim/idle").await.unwrap();
    write_at(&mut c, &idle, 0, b"x").await.unwrap();
    let open_sessions = || async {
        let (_, text) = crate::restart::http_get(server.admin, "/metrics").await;
        crate::metric(&text, "sluice_sessions_open{scheme=\"memory\"}")
    };
    assert_eq!(open_sessions().await, 1.0);
    let started = Instant::now();
    while open_sessions().await != 0.0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the reclaimed session is still open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let msg = expect_code(write_at(&mut c, &idle, 1, b"x").await, Code::Aborted);
    assert!(msg.contains("inactivity timeout"), "{msg}");
}

#[tokio::test]
async fn waiters_are_served_first_come_first_served() {
    let server = TestServer::start("fs.memory.limit.output: 1\n").await;
    let mut c = server.client().await;
    let holder = open(&mut c, "memory://lim/holder").await.unwrap();
    let first = opened(&c, "memory://lim/first").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = opened(&c, "memory://lim/second").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    finish(&mut c, &holder).await;
    let first = tokio::time::timeout(Duration::from_secs(5), first)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!second.is_finished(), "the later waiter went first");
    finish(&mut c, &first).await;
    tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn pools_are_per_authority_and_per_scheme() {
    let server =
        TestServer::start("fs.memory.limit.output: 1\nfs.memory.limit.timeout: 200\n").await;
    let mut c = server.client().await;
    open(&mut c, "memory://pool-a/x").await.unwrap();
    open(&mut c, "memory://pool-b/y").await.unwrap();
    expect_code(
        open(&mut c, "memory://pool-a/z").await,
        Code::ResourceExhausted,
    );
    let root = server.file_root();
    for i in 0..3 {
        open(&mut c, &format!("file://{}/f{i}", root.display()))
            .await
            .unwrap();
    }
}
