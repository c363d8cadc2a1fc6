//! The gRPC face of the gateway: protobuf in, a [`Gateway`] call, protobuf
//! out. Status codes come from `status.rs`, the only place they are chosen.

use std::sync::Arc;

use tonic::{Request, Response, Status, Streaming};

use crate::auth::{Authenticator, Caller};
use crate::config::EdgeConfig;
use crate::error::Error;
use crate::gateway::Gateway;
use crate::proto::storage_gateway_server::StorageGateway;
use crate::proto::*;

pub mod status;
mod write_route;

pub use write_route::WriteRoute;

/// Largest `Read` message payload.
pub const READ_CHUNK: usize = 1024 * 1024;

/// `stream`'s bytes regrouped into pieces of `size` bytes (the last one
/// shorter). A piece within one chunk of the store is a slice of it; only
/// pieces that span chunks are copied together. An error ends the stream.
pub fn messages(
    stream: crate::backend::ByteStream,
    size: usize,
) -> impl futures::Stream<Item = crate::error::Result<bytes::Bytes>> {
    use futures::StreamExt;
    struct State {
        stream: crate::backend::ByteStream,
        held: std::collections::VecDeque<bytes::Bytes>,
        len: usize,
        ended: bool,
    }
    let start = State {
        stream,
        held: Default::default(),
        len: 0,
        ended: false,
    };
    futures::stream::unfold(start, move |mut st| async move {
        loop {
            if st.len >= size || (st.ended && st.len > 0) {
                let want = size.min(st.len);
                st.len -= want;
                let slices = crate::backend::take_front(&mut st.held, want);
                let piece = crate::backend::Rope::from(slices).into_bytes();
                return Some((Ok(piece), st));
            }
            if st.ended {
                return None;
            }
            match st.stream.next().await {
                Some(Ok(chunk)) if chunk.is_empty() => {}
                Some(Ok(chunk)) => {
                    st.len += chunk.len();
                    st.held.push_back(chunk);
                }
                Some(Err(e)) => {
                    st.ended = true;
                    st.held.clear();
                    st.len = 0;
                    return Some((Err(e), st));
                }
                None => st.ended = true,
            }
        }
    })
}

/// Implements `sluice.v1.StorageGateway` over a [`Gateway`].
#[derive(Clone)]
pub struct GatewayApi {
    gateway: Arc<Gateway>,
    edge: EdgeConfig,
    /// `None`: authentication is off.
    auth: Option<Arc<Authenticator>>,
}

impl GatewayApi {
    pub fn new(
        gateway: Arc<Gateway>,
        edge: EdgeConfig,
        auth: Option<Arc<Authenticator>>,
    ) -> GatewayApi {
        GatewayApi {
            gateway,
            edge,
            auth,
        }
    }

    /// Who makes this call. Every RPC asks first, so none can skip it.
    fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        self.caller_of(request.metadata())
    }

    fn caller_of(&self, metadata: &tonic::metadata::MetadataMap) -> Result<Caller, Status> {
        let Some(auth) = &self.auth else {
            return Ok(Caller::Anyone);
        };
        let caller = auth.authenticate(metadata)?;
        tracing::Span::current().record("principal", caller.name());
        Ok(caller)
    }

    /// A Write call: its messages applied in order to the session the
    /// first one names.
    async fn write_call(
        &self,
        caller: Caller,
        mut messages: write_route::Frames,
    ) -> Result<WriteResponse, Status> {
        let mut progress = tokio::time::Instant::now();
        let first = self
            .next_write(&mut messages, progress)
            .await?
            .ok_or_else(|| {
                Status::from(Error::InvalidArgument(
                    "the Write call sent no message: send at least one with a session_id".into(),
                ))
            })?;
        let guard = self.gateway.begin_write(&first.session_id, &caller).await?;
        let mut bytes = first.data.len() as u64;
        let checked = check_crc32c(&first)?;
        let mut position = guard.append(first.offset, first.data, checked).await?;
        if bytes > 0 {
            progress = tokio::time::Instant::now();
        }
        while let Some(msg) = self.next_write(&mut messages, progress).await? {
            if !msg.session_id.is_empty() && msg.session_id != first.session_id {
                return Err(Error::InvalidArgument(format!(
                    "one Write call writes one session: got {} after {}",
                    msg.session_id, first.session_id
                ))
                .into());
            }
            bytes += msg.data.len() as u64;
            let checked = check_crc32c(&msg)?;
            let before = position;
            position = guard.append(msg.offset, msg.data, checked).await?;
            if position > before {
                progress = tokio::time::Instant::now();
            }
        }
        tracing::Span::current().record("bytes", bytes);
        Ok(WriteResponse { position })
    }

    /// The next message of a Write call, within the idle timeout counted
    /// from `progress`, the last time the call added bytes: messages that
    /// add none (empty, or all already applied) do not keep a call alive.
    async fn next_write(
        &self,
        messages: &mut write_route::Frames,
        progress: tokio::time::Instant,
    ) -> Result<Option<WriteMessage>, Status> {
        let idle = self.edge.write_idle_timeout;
        match tokio::time::timeout_at(progress + idle, messages.next()).await {
            Ok(next) => next,
            Err(_) => Err(Error::DeadlineExceeded(format!(
                "no Write message for {} ms (rpc.write-idle-timeout); what was acknowledged is kept, continue from the session's position",
                idle.as_millis()
            ))
            .into()),
        }
    }
}

/// One Write message, its data as the slices it arrived in.
#[derive(Debug, Default, PartialEq)]
pub struct WriteMessage {
    pub session_id: String,
    pub offset: u64,
    pub data: crate::backend::Rope,
    pub crc32c: Option<u32>,
}

/// A Write message's CRC32C, when it carries one, must be its data's:
/// nothing of a damaged message is applied.
/// Checks a message's CRC32C when it carries one; returns it once checked.
fn check_crc32c(msg: &WriteMessage) -> Result<Option<u32>, Status> {
    match msg.crc32c {
        Some(sent) if msg.data.crc32c_append(0) != sent => Err(Error::DataLoss(format!(
            "the Write message at offset {} ({} bytes) does not match its CRC32C {sent:#010x}: it was damaged on the way and nothing of it was applied; send it again",
            msg.offset,
            msg.data.len()
        ))
        .into()),
        checked => Ok(checked),
    }
}

fn file_status(entry: crate::backend::Entry) -> FileStatus {
    FileStatus {
        name: entry.location.file_name().to_string(),
        path: entry.location.to_string(),
        size: entry.size,
        is_dir: entry.is_dir,
        modified_ms: entry.modified_ms,
    }
}

#[tonic::async_trait]
impl StorageGateway for GatewayApi {
    type ReadStream = futures::stream::BoxStream<'static, Result<ReadResponse, Status>>;

    async fn read(
        &self,
        request: Request<ReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        use futures::StreamExt;
        let caller = self.caller(&request)?;
        let req = request.into_inner();
        let crate::gateway::Reading { location, stream } = self
            .gateway
            .read(&req.path, req.offset, req.length, &caller)
            .await?;
        let bytes_read = self
            .gateway
            .metrics()
            .bytes_read
            .get_or_create(&crate::metrics::Metrics::scheme(&location.scheme))
            .clone();
        let mut offset = req.offset;
        // READ_CHUNK bytes a message (the last one less), whatever the store
        // hands back: clients with gRPC's default 4 MiB limit can read any
        // file, and a read of a small file is one message even when the
        // store keeps it in pieces.
        let responses = messages(stream, READ_CHUNK).map(move |chunk| {
            let data = chunk?;
            let at = offset;
            offset += data.len() as u64;
            bytes_read.inc_by(data.len() as u64);
            Ok(ReadResponse { offset: at, data })
        });
        Ok(Response::new(responses.boxed()))
    }

    async fn stat(&self, request: Request<StatRequest>) -> Result<Response<StatResponse>, Status> {
        let caller = self.caller(&request)?;
        let entry = self
            .gateway
            .stat(&request.into_inner().path, &caller)
            .await?;
        Ok(Response::new(StatResponse {
            status: Some(file_status(entry)),
        }))
    }

    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let caller = self.caller(&request)?;
        let req = request.into_inner();
        let page = self
            .gateway
            .list(&req.path, req.page_size, &req.page_token, &caller)
            .await?;
        Ok(Response::new(ListResponse {
            entries: page.entries.into_iter().map(file_status).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let caller = self.caller(&request)?;
        let req = request.into_inner();
        let deleted = self
            .gateway
            .delete(&req.path, req.recursive, &caller)
            .await?;
        Ok(Response::new(DeleteResponse { deleted }))
    }

    async fn mkdirs(
        &self,
        request: Request<MkdirsRequest>,
    ) -> Result<Response<MkdirsResponse>, Status> {
        let caller = self.caller(&request)?;
        self.gateway
            .mkdirs(&request.into_inner().path, &caller)
            .await?;
        Ok(Response::new(MkdirsResponse {}))
    }

    async fn rename(
        &self,
        request: Request<RenameRequest>,
    ) -> Result<Response<RenameResponse>, Status> {
        let caller = self.caller(&request)?;
        let req = request.into_inner();
        self.gateway.rename(&req.from, &req.to, &caller).await?;
        Ok(Response::new(RenameResponse {}))
    }

    async fn exists(
        &self,
        request: Request<ExistsRequest>,
    ) -> Result<Response<ExistsResponse>, Status> {
        let caller = self.caller(&request)?;
        let exists = self
            .gateway
            .exists(&request.into_inner().path, &caller)
            .await?;
        Ok(Response::new(ExistsResponse { exists }))
    }

    async fn open(&self, request: Request<OpenRequest>) -> Result<Response<OpenResponse>, Status> {
        let caller = self.caller(&request)?;
        let req = request.into_inner();
        let opened = self
            .gateway
            .open(&req.path, req.inject_entropy, &caller)
            .await?;
        Ok(Response::new(OpenResponse {
            session_id: opened.session_id,
            path: opened.target.to_string(),
        }))
    }

    async fn write(
        &self,
        _request: Request<Streaming<WriteRequest>>,
    ) -> Result<Response<WriteResponse>, Status> {
        // Never reached: `WriteRoute` (write_route.rs) serves every Write
        // call with uncompressed messages straight from its frames, and
        // tonic refuses compressed ones (sluice accepts no compression)
        // before it would call this.
        Err(
            Error::Internal("Write is served by api::WriteRoute, which is not mounted".into())
                .into(),
        )
    }

    async fn persist(
        &self,
        request: Request<PersistRequest>,
    ) -> Result<Response<PersistResponse>, Status> {
        let caller = self.caller(&request)?;
        let issued = self
            .gateway
            .persist(&request.into_inner().session_id, &caller)
            .await?;
        Ok(Response::new(PersistResponse {
            handle: issued.handle,
            position: issued.position,
            crc32c: issued.crc32c,
        }))
    }

    async fn recover(
        &self,
        request: Request<RecoverRequest>,
    ) -> Result<Response<RecoverResponse>, Status> {
        let caller = self.caller(&request)?;
        let recovered = self
            .gateway
            .recover(&request.into_inner().handle, &caller)
            .await?;
        Ok(Response::new(RecoverResponse {
            session_id: recovered.session_id,
            position: recovered.position,
            path: recovered.target.to_string(),
            crc32c: recovered.crc32c,
        }))
    }

    async fn close_for_commit(
        &self,
        request: Request<CloseForCommitRequest>,
    ) -> Result<Response<CloseForCommitResponse>, Status> {
        let caller = self.caller(&request)?;
        let issued = self
            .gateway
            .close_for_commit(&request.into_inner().session_id, &caller)
            .await?;
        Ok(Response::new(CloseForCommitResponse {
            handle: issued.handle,
            size: issued.position,
            crc32c: issued.crc32c,
        }))
    }

    async fn commit(
        &self,
        request: Request<CommitRequest>,
    ) -> Result<Response<CommitResponse>, Status> {
        let caller = self.caller(&request)?;
        let req = request.into_inner();
        let committed = self
            .gateway
            .commit(&req.handle, req.after_recovery, &caller)
            .await?;
        Ok(Response::new(CommitResponse {
            path: committed.target.to_string(),
            size: committed.size,
            crc32c: committed.crc32c,
        }))
    }

    async fn cleanup(
        &self,
        request: Request<CleanupRequest>,
    ) -> Result<Response<CleanupResponse>, Status> {
        let caller = self.caller(&request)?;
        let cleaned = self
            .gateway
            .cleanup(&request.into_inner().handle, &caller)
            .await?;
        Ok(Response::new(CleanupResponse { cleaned }))
    }

    async fn abort(
        &self,
        request: Request<AbortRequest>,
    ) -> Result<Response<AbortResponse>, Status> {
        let caller = self.caller(&request)?;
        self.gateway
            .abort(&request.into_inner().session_id, &caller)
            .await?;
        Ok(Response::new(AbortResponse {}))
    }

    async fn capabilities(
        &self,
        request: Request<CapabilitiesRequest>,
    ) -> Result<Response<CapabilitiesResponse>, Status> {
        self.caller(&request)?;
        let caps = self.gateway.capabilities(&request.into_inner().path)?;
        let limits = caps.backend.limits;
        Ok(Response::new(CapabilitiesResponse {
            supports_resume: caps.backend.supports_resume,
            requires_cleanup: caps.backend.requires_cleanup,
            scheme: caps.location.scheme,
            authority: caps.location.authority,
            min_part_size: caps.backend.min_part_size,
            max_concurrent_uploads: caps.backend.max_concurrent_uploads,
            survives_restart: caps.backend.survives_restart,
            max_message_size: self.edge.max_message_size as u64,
            limit_total: limits.total.unwrap_or(0) as u64,
            limit_output: limits.output.unwrap_or(0) as u64,
            limit_input: limits.input.unwrap_or(0) as u64,
            limit_timeout_ms: limits.timeout.map_or(0, |d| d.as_millis() as u64),
            limit_stream_timeout_ms: limits.stream_timeout.map_or(0, |d| d.as_millis() as u64),
        }))
    }
}

#[cfg(test)]
mod message_tests {
    use super::*;
    use futures::StreamExt;

    async fn regrouped(chunks: &[&[u8]], size: usize) -> Vec<Vec<u8>> {
        let stream = futures::stream::iter(
            chunks
                .iter()
                .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        )
        .boxed();
        messages(stream, size)
            .map(|m| m.unwrap().to_vec())
            .collect()
            .await
    }

    #[tokio::test]
    async fn pieces_are_full_until_the_last() {
        let got = regrouped(&[b"THIS IS A TEST 1.", b"", b"THIS IS A TEST 2."], 1024).await;
        assert_eq!(got, [b"THIS IS A TEST 1.THIS IS A TEST 2.".to_vec()]);
        let got = regrouped(&[b"abc", b"defgh", b"i", b"jklmnopq"], 4).await;
        assert_eq!(got, [&b"abcd"[..], b"efgh", b"ijkl", b"mnop", b"q"]);
        assert!(regrouped(&[], 4).await.is_empty());
        assert!(regrouped(&[b""], 4).await.is_empty());
    }

    #[tokio::test]
    async fn a_piece_inside_one_chunk_is_not_copied() {
        let big = bytes::Bytes::from(vec![1u8; 10]);
        let stream = futures::stream::iter(vec![Ok(big.clone())]).boxed();
        let got: Vec<bytes::Bytes> = messages(stream, 4).map(|m| m.unwrap()).collect().await;
        assert_eq!(got.iter().map(|b| b.len()).collect::<Vec<_>>(), [4, 4, 2]);
        assert_eq!(got[1].as_ptr(), big[4..].as_ptr());
    }

    #[tokio::test]
    async fn an_error_ends_the_stream() {
        let stream = futures::stream::iter(vec![
            Ok(bytes::Bytes::from_static(b"ab")),
            Err(crate::error::Error::Internal("gone".into())),
            Ok(bytes::Bytes::from_static(b"cd")),
        ])
        .boxed();
        let got: Vec<_> = messages(stream, 4).collect().await;
        assert_eq!(got.len(), 1);
        assert!(got[0].is_err());
    }
}
