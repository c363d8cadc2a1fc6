//! The sink: a `StorageGateway` that only counts what it receives, the
//! transport ceiling every run is measured against.

use super::*;

/// A StorageGateway that accepts writes and only counts them: the ceiling
/// of what the transport carries.
#[derive(Default)]
pub struct Sink {
    /// Each session's position and the CRC32C of its bytes, combined from
    /// the CRC32Cs the messages carry (no pass over the data).
    positions: std::sync::Mutex<HashMap<String, (u64, u32)>>,
    next: AtomicU64,
    received: AtomicU64,
}

impl Sink {
    fn position(&self, id: &str) -> Result<(u64, u32), Status> {
        self.positions
            .lock()
            .unwrap()
            .get(id)
            .copied()
            .ok_or_else(|| Status::not_found(format!("unknown session {id}")))
    }
}

type ReadStream = futures::stream::BoxStream<'static, Result<ReadResponse, Status>>;

#[tonic::async_trait]
impl StorageGateway for Sink {
    async fn open(&self, r: Request<OpenRequest>) -> Result<Response<OpenResponse>, Status> {
        let id = format!("sink-{}", self.next.fetch_add(1, Ordering::Relaxed));
        self.positions.lock().unwrap().insert(id.clone(), (0, 0));
        Ok(Response::new(OpenResponse {
            session_id: id,
            path: r.into_inner().path,
        }))
    }

    async fn write(
        &self,
        r: Request<Streaming<WriteRequest>>,
    ) -> Result<Response<WriteResponse>, Status> {
        let mut stream = r.into_inner();
        let (mut id, mut end) = (String::new(), 0);
        while let Some(m) = stream.message().await? {
            if !m.session_id.is_empty() {
                id = m.session_id;
            }
            end = m.offset + m.data.len() as u64;
            self.received
                .fetch_add(m.data.len() as u64, Ordering::Relaxed);
            if let Some((position, crc)) = self.positions.lock().unwrap().get_mut(&id)
                && m.offset == *position
            {
                *crc = crc32c::crc32c_combine(*crc, m.crc32c.unwrap_or(0), m.data.len());
                *position = end;
            }
        }
        Ok(Response::new(WriteResponse { position: end }))
    }

    async fn persist(
        &self,
        r: Request<PersistRequest>,
    ) -> Result<Response<PersistResponse>, Status> {
        let (position, crc32c) = self.position(&r.into_inner().session_id)?;
        Ok(Response::new(PersistResponse {
            handle: b"sink".to_vec(),
            position,
            crc32c,
        }))
    }

    async fn recover(
        &self,
        _: Request<RecoverRequest>,
    ) -> Result<Response<RecoverResponse>, Status> {
        Err(Status::unimplemented("the sink only counts"))
    }

    async fn close_for_commit(
        &self,
        r: Request<CloseForCommitRequest>,
    ) -> Result<Response<CloseForCommitResponse>, Status> {
        let id = r.into_inner().session_id;
        let (size, crc32c) = self.position(&id)?;
        self.positions.lock().unwrap().remove(&id);
        Ok(Response::new(CloseForCommitResponse {
            // The commit answers the file's CRC32C, as sluice does.
            handle: crc32c.to_be_bytes().to_vec(),
            size,
            crc32c,
        }))
    }

    async fn commit(&self, r: Request<CommitRequest>) -> Result<Response<CommitResponse>, Status> {
        let handle = r.into_inner().handle;
        let crc32c = handle
            .try_into()
            .map(u32::from_be_bytes)
            .map_err(|_| Status::invalid_argument("not a handle of the sink"))?;
        Ok(Response::new(CommitResponse {
            crc32c,
            ..Default::default()
        }))
    }

    async fn cleanup(
        &self,
        _: Request<CleanupRequest>,
    ) -> Result<Response<CleanupResponse>, Status> {
        Ok(Response::new(CleanupResponse::default()))
    }

    async fn abort(&self, r: Request<AbortRequest>) -> Result<Response<AbortResponse>, Status> {
        self.positions
            .lock()
            .unwrap()
            .remove(&r.into_inner().session_id);
        Ok(Response::new(AbortResponse {}))
    }

    async fn capabilities(
        &self,
        _: Request<CapabilitiesRequest>,
    ) -> Result<Response<CapabilitiesResponse>, Status> {
        Ok(Response::new(CapabilitiesResponse::default()))
    }

    type ReadStream = ReadStream;

    async fn read(&self, _: Request<ReadRequest>) -> Result<Response<ReadStream>, Status> {
        Err(Status::unimplemented("the sink only counts"))
    }

    async fn stat(&self, _: Request<StatRequest>) -> Result<Response<StatResponse>, Status> {
        Err(Status::unimplemented("the sink only counts"))
    }

    async fn list(&self, _: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        Err(Status::unimplemented("the sink only counts"))
    }

    async fn delete(&self, _: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        Ok(Response::new(DeleteResponse::default()))
    }

    async fn mkdirs(&self, _: Request<MkdirsRequest>) -> Result<Response<MkdirsResponse>, Status> {
        Ok(Response::new(MkdirsResponse {}))
    }

    async fn rename(&self, _: Request<RenameRequest>) -> Result<Response<RenameResponse>, Status> {
        Err(Status::unimplemented("the sink only counts"))
    }

    async fn exists(&self, _: Request<ExistsRequest>) -> Result<Response<ExistsResponse>, Status> {
        Ok(Response::new(ExistsResponse::default()))
    }
}

/// Serves the sink with the server's HTTP/2 settings and message limit.
pub async fn serve_sink(listen: &str) -> BenchResult<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    eprintln!("sink listening address={}", listener.local_addr()?);
    let limit = sluice::config::EdgeConfig::default().max_message_size;
    tonic::transport::Server::builder()
        .initial_stream_window_size(Some(sluice::server::STREAM_WINDOW))
        .initial_connection_window_size(Some(sluice::server::CONNECTION_WINDOW))
        .add_service(
            StorageGatewayServer::new(Sink::default())
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        )
        .serve_with_incoming(sluice::server::nodelay_incoming(listener))
        .await?;
    Ok(())
}
