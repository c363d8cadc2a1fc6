//! `hdfs://` on a real HDFS: Hadoop's MiniDFSCluster (a NameNode and two
//! DataNodes, replication 2, 4 MiB blocks) started by the tests. The whole
//! conformance suite, the multipart cases with the block size as their
//! unit, a file of many blocks recovered from the middle, racing commits,
//! a DataNode stopped during writes, and which NameNodes a URI may name.

use async_trait::async_trait;
use futures::StreamExt;
use tonic::Code;

use crate::emulators::MiniDfs;
use crate::harness::*;
use crate::{conformance, multipart};

/// The MiniDFSCluster's block size (tests/hdfs).
pub const BLOCK: usize = 4 << 20;

/// What a folder of the cluster holds, through a client of the test's own.
pub struct HdfsInspect {
    client: hdfs_native::Client,
    dir: String,
}

impl HdfsInspect {
    pub fn new(dfs: &MiniDfs, dir: &str) -> HdfsInspect {
        HdfsInspect {
            client: dfs.client(),
            dir: dir.trim_end_matches('/').to_string(),
        }
    }
}

#[async_trait]
impl Inspect for HdfsInspect {
    async fn entries(&self) -> Vec<(String, u64)> {
        let listed = match self.client.list_status(&self.dir, true).await {
            Ok(listed) => listed,
            Err(hdfs_native::HdfsError::FileNotFound(_)) => Vec::new(),
            Err(e) => panic!("listing {}: {e}", self.dir),
        };
        let mut out: Vec<(String, u64)> = listed
            .into_iter()
            .filter(|s| !s.isdir)
            .map(|s| {
                let rel = s.path[self.dir.len() + 1..].to_string();
                (rel, s.length as u64)
            })
            .collect();
        out.sort();
        out
    }

    async fn read(&self, name: &str) -> Option<Vec<u8>> {
        let reader = self
            .client
            .read(&format!("{}/{name}", self.dir))
            .await
            .ok()?;
        let len = reader.file_length();
        Some(reader.read_range(0, len).await.unwrap().to_vec())
    }

    async fn delete(&self, name: &str) {
        self.client
            .delete(&format!("{}/{name}", self.dir), false)
            .await
            .unwrap();
    }

    fn open_uploads(&self) -> Option<usize> {
        None
    }
}

/// A fresh folder of the cluster as a conformance target.
pub async fn hdfs_target(server: &TestServer, dfs: &MiniDfs) -> Target {
    let dir = format!("/run-{}", uuid::Uuid::new_v4().simple());
    Target {
        client: server.client().await,
        base: format!("{}{dir}", dfs.url),
        store: Box::new(HdfsInspect::new(dfs, &dir)),
        requires_cleanup: false,
    }
}

#[tokio::test]
async fn conformance_hdfs_on_minidfs() {
    let dfs = MiniDfs::start();
    let server = TestServer::start(&dfs.yaml()).await;
    let t = hdfs_target(&server, &dfs).await;
    let caps = t
        .client
        .clone()
        .capabilities(sluice::proto::CapabilitiesRequest { path: t.uri("x") })
        .await
        .unwrap()
        .into_inner();
    assert!(caps.supports_resume && caps.survives_restart && !caps.requires_cleanup);
    conformance::run_all(&t).await;
    multipart::run_with_part(&t, BLOCK).await;
    many_blocks_recovered_from_the_middle(&t).await;
    conformance::racing_commits_never_replace(&t, 10, conformance::Preconditions::Enforced).await;
    namenodes_a_uri_may_name(&t, &dfs).await;
}

/// 40 MiB (ten blocks) with a persist every 8 MiB; more blocks follow the
/// last handle, then the session dies. A recovery from the handle at
/// 24 MiB copies its prefix (the temp file holds more), goes on, and the
/// commit holds exactly the handle's bytes and what followed; no temp file
/// of any generation is left.
async fn many_blocks_recovered_from_the_middle(t: &Target) {
    eprintln!("hdfs case: many_blocks_recovered_from_the_middle");
    let c = &mut t.client.clone();
    let data = multipart::bytes(41, 40 << 20);
    let sid = open(c, &t.uri("big")).await.unwrap();
    let mut handles = Vec::new();
    for (i, chunk) in data.chunks(8 << 20).enumerate() {
        multipart::write_all(c, &sid, (i * (8 << 20)) as u64, chunk, 1 << 20).await;
        handles.push(persist(c, &sid).await.unwrap());
    }
    abort(c, &sid).await.unwrap();
    let (h24, at) = handles[2].clone();
    assert_eq!(at, 24 << 20);
    let (sid, pos) = recover(c, &h24).await.unwrap();
    assert_eq!(pos, at);
    let last = multipart::bytes(42, BLOCK + 5);
    multipart::write_all(c, &sid, pos, &last, 1 << 20).await;
    let (h, size) = close(c, &sid).await.unwrap();
    assert_eq!(size, at + last.len() as u64);
    commit(c, &h, false).await.unwrap();
    let want = [&data[..at as usize], &last[..]].concat();
    assert!(
        t.store.read("big").await.unwrap() == want,
        "content differs"
    );
    conformance::assert_no_staging_left(t, "big").await;
}

/// `hdfs:///path` goes to `fs.defaultFS`; a NameNode the configuration does
/// not name is refused before anything is opened.
async fn namenodes_a_uri_may_name(t: &Target, dfs: &MiniDfs) {
    eprintln!("hdfs case: namenodes_a_uri_may_name");
    let c = &mut t.client.clone();
    let dir = t.base.trim_start_matches(&dfs.url);
    let sid = open(c, &format!("hdfs://{dir}/default-fs")).await.unwrap();
    write_at(c, &sid, 0, b"via fs.defaultFS").await.unwrap();
    let (h, _) = close(c, &sid).await.unwrap();
    commit(c, &h, false).await.unwrap();
    assert_eq!(
        t.store.read("default-fs").await.unwrap(),
        b"via fs.defaultFS"
    );
    let msg = expect_code(
        open(c, "hdfs://169.254.169.254:80/latest").await,
        Code::PermissionDenied,
    );
    assert!(msg.contains("fs.hdfs.namenodes"), "{msg}");
}

/// A DataNode stops while files are written: writes go on (the pipeline
/// is rebuilt on the DataNode left) or fail with UNAVAILABLE, and a client
/// that does what UNAVAILABLE asks (recover from its last handle, write
/// again) gets every byte in: every persisted byte is in what is committed,
/// read back after the DataNode is back; nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_datanode_stopped_during_writes_loses_nothing_acknowledged() {
    let mut dfs = MiniDfs::start();
    let server = TestServer::start(&dfs.yaml()).await;
    let t = hdfs_target(&server, &dfs).await;
    let c = &mut t.client.clone();
    let first = multipart::bytes(51, BLOCK + 1000);
    let sid = open(c, &t.uri("dn")).await.unwrap();
    multipart::write_all(c, &sid, 0, &first, 1 << 18).await;
    let (resume, pos) = persist(c, &sid).await.unwrap();
    assert_eq!(pos, first.len() as u64);

    // Bytes in flight while the DataNode goes.
    let second = multipart::bytes(52, BLOCK);
    let writer = {
        let (mut c, sid, second) = (t.client.clone(), sid.clone(), second.clone());
        tokio::spawn(async move {
            let mut at = pos;
            for chunk in second.chunks(1 << 16) {
                at = write_at(&mut c, &sid, at, chunk).await?;
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            persist(&mut c, &sid).await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    tokio::task::block_in_place(|| dfs.stop_datanode(0));
    let (handle, end) = match writer.await.unwrap() {
        Ok(done) => {
            eprintln!("the write went on without the DataNode");
            done
        }
        Err(status) => {
            eprintln!("the write failed: {status:?}");
            assert_eq!(status.code(), Code::Unavailable, "{status:?}");
            let _ = abort(c, &sid).await;
            until_available("writing on from the handle", || async {
                let mut c = t.client.clone();
                let (sid, p) = recover(&mut c, &resume).await?;
                assert_eq!(p, pos, "the handle's bytes are all there");
                let written = async {
                    write_at(&mut c, &sid, p, &second).await?;
                    persist(&mut c, &sid).await
                };
                let result = written.await;
                if result.is_err() {
                    let _ = abort(&mut c, &sid).await;
                }
                result
            })
            .await
        }
    };
    assert_eq!(end, (first.len() + second.len()) as u64);
    // With the DataNode still down, another file goes to the one left.
    let other = multipart::bytes(53, 3000);
    until_available("a new file", || async {
        let mut c = t.client.clone();
        let sid = open(&mut c, &t.uri("dn-other")).await?;
        let result = async {
            write_at(&mut c, &sid, 0, &other).await?;
            let (h, _) = close(&mut c, &sid).await?;
            commit(&mut c, &h, false).await
        }
        .await;
        if result.is_err() {
            let _ = abort(&mut c, &sid).await;
        }
        result
    })
    .await;

    tokio::task::block_in_place(|| dfs.start_datanode(0));
    let (sid, p) = recover(c, &handle).await.unwrap();
    assert_eq!(p, end);
    let (h, _) = close(c, &sid).await.unwrap();
    commit(c, &h, false).await.unwrap();
    assert!(
        t.store.read("dn").await.unwrap() == [first, second].concat(),
        "content differs"
    );
    assert_eq!(t.store.read("dn-other").await.unwrap(), other);
}

/// Runs `attempt` until it succeeds, as a client does on UNAVAILABLE (any
/// other status fails the test), for at most two minutes: until the
/// NameNode stops handing out the stopped DataNode for new blocks.
async fn until_available<T, F, Fut>(what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt().await {
            Ok(done) => {
                eprintln!("{what}: done after {tries} attempt(s)");
                return done;
            }
            Err(s) if s.code() == Code::Unavailable && tokio::time::Instant::now() < deadline => {
                eprintln!("{what}: UNAVAILABLE ({}), trying again", s.message());
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
            Err(s) => panic!("{what}: {s:?}"),
        }
    }
}

/// Reads through the gateway see HDFS as it is: a range of a committed
/// file, streamed.
#[tokio::test]
async fn reads_and_listings_of_files_written_by_others() {
    let dfs = MiniDfs::start();
    let server = TestServer::start(&dfs.yaml()).await;
    let t = hdfs_target(&server, &dfs).await;
    // Written by a Hadoop-protocol client that is not sluice.
    let client = dfs.client();
    let dir = t.base.trim_start_matches(&dfs.url).to_string();
    client.mkdirs(&dir, 0o755, true).await.unwrap();
    let data = multipart::bytes(61, BLOCK * 2 + 17);
    let mut w = client
        .create(
            &format!("{dir}/theirs"),
            hdfs_native::WriteOptions::default(),
        )
        .await
        .unwrap();
    w.write_bytes(bytes::Bytes::from(data.clone()))
        .await
        .unwrap();
    w.close().await.unwrap();
    let mut c = t.client.clone();
    let got = c
        .read(sluice::proto::ReadRequest {
            path: t.uri("theirs"),
            offset: (BLOCK - 10) as u64,
            length: 20 + BLOCK as u64,
        })
        .await
        .unwrap()
        .into_inner()
        .map(|m| m.unwrap().data)
        .collect::<Vec<_>>()
        .await
        .concat();
    assert!(got == data[BLOCK - 10..BLOCK * 2 + 10], "range differs");
}
