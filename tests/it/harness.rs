//! Starts the real server on 127.0.0.1:0 and gives tests a gRPC client and a
//! view into the storage behind it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use object_store::ObjectStoreExt;
use sluice::backend::memory::MemoryStores;
use sluice::config::Config;
use sluice::proto::storage_gateway_client::StorageGatewayClient;
use sluice::proto::*;
use sluice::server::{Server, ServerOptions, run};
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::{Code, Status};

pub type Client = StorageGatewayClient<Channel>;

/// A sluice server running in this process.
pub struct TestServer {
    pub addr: SocketAddr,
    /// The admin HTTP port (/metrics, /healthz, /readyz).
    pub admin: SocketAddr,
    pub data_dir: PathBuf,
    pub memory: Arc<MemoryStores>,
    metrics: Arc<sluice::metrics::Metrics>,
    _dir: Option<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server with `yaml` as its config, in a fresh data dir.
    pub async fn start(yaml: &str) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut server = TestServer::start_in(dir.path(), yaml).await;
        server._dir = Some(dir);
        server
    }

    /// Starts a server on an existing data dir (kept by the caller).
    pub async fn start_in(data_dir: &Path, yaml: &str) -> TestServer {
        TestServer::start_with(data_dir, yaml, None).await
    }

    /// Starts a replica of `other`: its own data dir (and sled), the same
    /// memory stores; give both the same `handle.signing.key`.
    pub async fn replica_of(other: &TestServer, yaml: &str) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut server = TestServer::start_with(dir.path(), yaml, Some(other.memory.clone())).await;
        server._dir = Some(dir);
        server
    }

    async fn start_with(
        data_dir: &Path,
        yaml: &str,
        memory: Option<Arc<MemoryStores>>,
    ) -> TestServer {
        let config = Config::from_yaml(yaml).expect("test config");
        let mut options = ServerOptions::new(data_dir, config);
        if let Some(memory) = memory {
            options.memory = memory;
        }
        let memory = options.memory.clone();
        let server = Server::start(options).expect("server starts");
        let metrics = server.gateway.metrics().clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = admin_listener.local_addr().unwrap();
        let server = server.with_admin(admin_listener);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            run(listener, server, async {
                let _ = stopped.await;
            })
            .await
            .expect("server runs");
        });
        TestServer {
            addr,
            admin,
            data_dir: data_dir.to_path_buf(),
            memory,
            metrics,
            _dir: None,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn client(&self) -> Client {
        connect(self.addr).await
    }

    /// What the janitor removed so far, read from its metric.
    pub fn janitor_totals(&self) -> JanitorCounts {
        let removed = |kind| self.metrics.janitor_removed(kind) as usize;
        JanitorCounts {
            uploads: removed("upload"),
            tails: removed("tail_object"),
            temp_files: removed("temp_file"),
        }
    }

    /// Where `file://` targets may go by default.
    pub fn file_root(&self) -> PathBuf {
        std::fs::canonicalize(self.data_dir.join("files")).unwrap()
    }

    /// Stops the server and waits until it has flushed and released sled.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct JanitorCounts {
    pub uploads: usize,
    pub tails: usize,
    pub temp_files: usize,
}

/// gRPC health's status of `service` ("" for the whole server) at `addr`,
/// within 5 s.
pub async fn health_status(addr: SocketAddr, service: &str) -> i32 {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let request = tonic_health::pb::HealthCheckRequest {
        service: service.into(),
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), health.check(request))
        .await
        .expect("health answers")
        .expect("health is not shed")
        .into_inner()
        .status
}

pub async fn connect(addr: SocketAddr) -> Client {
    StorageGatewayClient::connect(format!("http://{addr}"))
        .await
        .expect("connects")
}

/// A view of the storage behind one backend, for checks the gateway's own
/// answers cannot give (what is really stored, what was left behind).
#[async_trait]
pub trait Inspect: Send + Sync {
    /// Every entry under the target base (paths relative to it), hidden
    /// ones included, with sizes.
    async fn entries(&self) -> Vec<(String, u64)>;
    async fn read(&self, name: &str) -> Option<Vec<u8>>;
    async fn delete(&self, name: &str);
    /// Multipart uploads still open in the store, where it can tell.
    fn open_uploads(&self) -> Option<usize>;
}

/// One backend under test: URIs to write and a view inside.
pub struct Target {
    pub client: Client,
    /// URI prefix every case writes under, without a trailing slash.
    pub base: String,
    pub store: Box<dyn Inspect>,
    /// Old resume handles leave data that Cleanup removes.
    pub requires_cleanup: bool,
}

impl Target {
    pub fn uri(&self, name: &str) -> String {
        format!("{}/{name}", self.base)
    }

    /// A file target in a fresh folder under the server's file root.
    pub async fn file(server: &TestServer) -> Target {
        let run = format!("run-{}", uuid::Uuid::new_v4());
        let dir = server.file_root().join(&run);
        std::fs::create_dir_all(&dir).unwrap();
        Target {
            client: server.client().await,
            base: format!("file://{}", dir.display()),
            store: Box::new(FileInspect { dir }),
            requires_cleanup: false,
        }
    }

    /// A memory target in a fresh store.
    pub async fn memory(server: &TestServer) -> Target {
        let name = format!("t{}", uuid::Uuid::new_v4().simple());
        let (objects, uploads) = server.memory.store(&name);
        let open_uploads: Arc<dyn Fn() -> usize + Send + Sync> =
            Arc::new(move || uploads.open_uploads());
        Target {
            client: server.client().await,
            base: format!("memory://{name}/data"),
            store: Box::new(ObjectInspect {
                objects,
                prefix: "data".into(),
                open_uploads: Some(open_uploads),
            }),
            requires_cleanup: true,
        }
    }

    /// An object-store target: `base` is `scheme://bucket/prefix`, and
    /// `objects` a client of that bucket of the test's own.
    pub async fn object_store(
        server: &TestServer,
        base: String,
        objects: Arc<dyn object_store::ObjectStore>,
        prefix: &str,
        open_uploads: Option<Arc<dyn Fn() -> usize + Send + Sync>>,
    ) -> Target {
        Target {
            client: server.client().await,
            base,
            store: Box::new(ObjectInspect {
                objects,
                prefix: prefix.into(),
                open_uploads,
            }),
            requires_cleanup: true,
        }
    }
}

struct FileInspect {
    dir: PathBuf,
}

#[async_trait]
impl Inspect for FileInspect {
    async fn entries(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        let mut stack = vec![self.dir.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let entry = entry.unwrap();
                let meta = entry.metadata().unwrap();
                if meta.is_dir() {
                    stack.push(entry.path());
                } else {
                    let rel = entry
                        .path()
                        .strip_prefix(&self.dir)
                        .unwrap()
                        .display()
                        .to_string();
                    out.push((rel, meta.len()));
                }
            }
        }
        out.sort();
        out
    }

    async fn read(&self, name: &str) -> Option<Vec<u8>> {
        std::fs::read(self.dir.join(name)).ok()
    }

    async fn delete(&self, name: &str) {
        std::fs::remove_file(self.dir.join(name)).unwrap();
    }

    fn open_uploads(&self) -> Option<usize> {
        None
    }
}

/// What an object store holds, through a client of the test's own.
struct ObjectInspect {
    objects: Arc<dyn object_store::ObjectStore>,
    prefix: String,
    open_uploads: Option<Arc<dyn Fn() -> usize + Send + Sync>>,
}

#[async_trait]
impl Inspect for ObjectInspect {
    async fn entries(&self) -> Vec<(String, u64)> {
        use futures::TryStreamExt;
        use object_store::ObjectStore;
        let prefix = object_store::path::Path::from(self.prefix.as_str());
        let mut out: Vec<(String, u64)> = self
            .objects
            .list(Some(&prefix))
            .map_ok(|m| {
                let full = m.location.to_string();
                (full[self.prefix.len() + 1..].to_string(), m.size)
            })
            .try_collect()
            .await
            .unwrap();
        out.sort();
        out
    }

    async fn read(&self, name: &str) -> Option<Vec<u8>> {
        let path = object_store::path::Path::from(format!("{}/{name}", self.prefix));
        let got = self.objects.get(&path).await.ok()?;
        Some(got.bytes().await.unwrap().to_vec())
    }

    async fn delete(&self, name: &str) {
        let path = object_store::path::Path::from(format!("{}/{name}", self.prefix));
        self.objects.delete(&path).await.unwrap();
    }

    fn open_uploads(&self) -> Option<usize> {
        self.open_uploads.as_ref().map(|count| count())
    }
}

// ---- small wrappers over the raw gRPC calls ----

pub async fn open(c: &mut Client, path: &str) -> Result<String, Status> {
    Ok(c.open(OpenRequest {
        path: path.into(),
        inject_entropy: false,
    })
    .await?
    .into_inner()
    .session_id)
}

/// One Write call with one message.
pub async fn write_at(c: &mut Client, sid: &str, offset: u64, data: &[u8]) -> Result<u64, Status> {
    write_chunks(c, sid, vec![(offset, data.to_vec())]).await
}

/// One Write call with several messages.
pub async fn write_chunks(
    c: &mut Client,
    sid: &str,
    chunks: Vec<(u64, Vec<u8>)>,
) -> Result<u64, Status> {
    let msgs: Vec<WriteRequest> = chunks
        .into_iter()
        .map(|(offset, data)| WriteRequest {
            // Every message carries its CRC32C, as the clients send them.
            crc32c: Some(crc32c::crc32c(&data)),
            session_id: sid.into(),
            offset,
            data: Bytes::from(data),
        })
        .collect();
    Ok(c.write(tokio_stream::iter(msgs))
        .await?
        .into_inner()
        .position)
}

pub async fn persist(c: &mut Client, sid: &str) -> Result<(Vec<u8>, u64), Status> {
    let r = c
        .persist(PersistRequest {
            session_id: sid.into(),
        })
        .await?
        .into_inner();
    Ok((r.handle, r.position))
}

pub async fn recover(c: &mut Client, handle: &[u8]) -> Result<(String, u64), Status> {
    let r = c
        .recover(RecoverRequest {
            handle: handle.to_vec(),
        })
        .await?
        .into_inner();
    Ok((r.session_id, r.position))
}

pub async fn close(c: &mut Client, sid: &str) -> Result<(Vec<u8>, u64), Status> {
    let r = c
        .close_for_commit(CloseForCommitRequest {
            session_id: sid.into(),
        })
        .await?
        .into_inner();
    Ok((r.handle, r.size))
}

pub async fn commit(c: &mut Client, handle: &[u8], after_recovery: bool) -> Result<u64, Status> {
    Ok(c.commit(CommitRequest {
        handle: handle.to_vec(),
        after_recovery,
    })
    .await?
    .into_inner()
    .size)
}

pub async fn cleanup(c: &mut Client, handle: &[u8]) -> Result<bool, Status> {
    Ok(c.cleanup(CleanupRequest {
        handle: handle.to_vec(),
    })
    .await?
    .into_inner()
    .cleaned)
}

pub async fn abort(c: &mut Client, sid: &str) -> Result<(), Status> {
    c.abort(AbortRequest {
        session_id: sid.into(),
    })
    .await?;
    Ok(())
}

/// Asserts `result` failed with `code`; returns the message.
#[track_caller]
pub fn expect_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code) -> String {
    match result {
        Ok(v) => panic!("expected {code:?}, got Ok({v:?})"),
        Err(s) => {
            assert_eq!(s.code(), code, "wrong code; message: {}", s.message());
            s.message().to_string()
        }
    }
}

/// Reads a file through the Read stream; checks the offsets it reports.
pub async fn read_all(
    c: &mut Client,
    path: &str,
    offset: u64,
    length: u64,
) -> Result<Vec<u8>, Status> {
    let mut stream = c
        .read(ReadRequest {
            path: path.into(),
            offset,
            length,
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = stream.message().await? {
        assert_eq!(
            chunk.offset,
            offset + out.len() as u64,
            "Read reported a wrong offset"
        );
        out.extend_from_slice(&chunk.data);
    }
    Ok(out)
}

pub async fn stat(c: &mut Client, path: &str) -> Result<FileStatus, Status> {
    Ok(c.stat(StatRequest { path: path.into() })
        .await?
        .into_inner()
        .status
        .expect("a status"))
}

/// Every entry of a directory, page after page.
pub async fn list_names(c: &mut Client, path: &str) -> Result<Vec<(String, bool)>, Status> {
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = c
            .list(ListRequest {
                path: path.into(),
                page_size: 0,
                page_token,
            })
            .await?
            .into_inner();
        out.extend(page.entries.into_iter().map(|e| (e.name, e.is_dir)));
        if page.next_page_token.is_empty() {
            return Ok(out);
        }
        page_token = page.next_page_token;
    }
}

pub async fn exists(c: &mut Client, path: &str) -> bool {
    c.exists(ExistsRequest { path: path.into() })
        .await
        .unwrap()
        .into_inner()
        .exists
}

pub async fn delete(c: &mut Client, path: &str, recursive: bool) -> Result<bool, Status> {
    Ok(c.delete(DeleteRequest {
        path: path.into(),
        recursive,
    })
    .await?
    .into_inner()
    .deleted)
}

/// Writes and commits a whole file in one go.
pub async fn put_file(c: &mut Client, path: &str, data: &[u8]) {
    let sid = open(c, path).await.unwrap();
    write_at(c, &sid, 0, data).await.unwrap();
    let (h, _) = close(c, &sid).await.unwrap();
    commit(c, &h, false).await.unwrap();
}

/// What an object store holds at `key`, through the test's own client.
pub async fn read_object(store: &dyn object_store::ObjectStore, key: &str) -> Vec<u8> {
    use object_store::ObjectStoreExt;
    store
        .get(&object_store::path::Path::from(key))
        .await
        .unwrap_or_else(|e| panic!("{key} cannot be read: {e}"))
        .bytes()
        .await
        .unwrap()
        .to_vec()
}
