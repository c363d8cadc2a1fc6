//! The gRPC face of the gateway: protobuf in, a [`Gateway`] call, protobuf
//! out. Status codes come from `status.rs`, the only place they are chosen.

use std::sync::Arc;

use tonic::{Request, Response, Status, Streaming};

use crate::gateway::Gateway;
use crate::proto::storage_gateway_server::StorageGateway;
use crate::proto::*;

pub mod status;

/// Largest gRPC message accepted, in bytes (a Write chunk plus framing).
pub const MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// Implements `sluice.v1.StorageGateway` over a [`Gateway`].
#[derive(Clone)]
pub struct GatewayApi {
    gateway: Arc<Gateway>,
}

impl GatewayApi {
    pub fn new(gateway: Arc<Gateway>) -> GatewayApi {
        GatewayApi { gateway }
    }
}

#[tonic::async_trait]
impl StorageGateway for GatewayApi {
    async fn open(&self, request: Request<OpenRequest>) -> Result<Response<OpenResponse>, Status> {
        let req = request.into_inner();
        let (session_id, path) = self.gateway.open(&req.path, req.inject_entropy).await?;
        Ok(Response::new(OpenResponse {
            session_id,
            path: path.to_string(),
        }))
    }

    async fn write(
        &self,
        request: Request<Streaming<WriteRequest>>,
    ) -> Result<Response<WriteResponse>, Status> {
        let mut stream = request.into_inner();
        let first = stream.message().await?.ok_or_else(|| {
            Status::invalid_argument(
                "the Write call sent no message: send at least one with a session_id",
            )
        })?;
        let guard = self.gateway.begin_write(&first.session_id)?;
        let mut position = guard.append(first.offset, first.data).await?;
        while let Some(msg) = stream.message().await? {
            if !msg.session_id.is_empty() && msg.session_id != first.session_id {
                return Err(Status::invalid_argument(format!(
                    "one Write call writes one session: got {} after {}",
                    msg.session_id, first.session_id
                )));
            }
            position = guard.append(msg.offset, msg.data).await?;
        }
        Ok(Response::new(WriteResponse { position }))
    }

    async fn persist(
        &self,
        request: Request<PersistRequest>,
    ) -> Result<Response<PersistResponse>, Status> {
        let (handle, position) = self
            .gateway
            .persist(&request.into_inner().session_id)
            .await?;
        Ok(Response::new(PersistResponse { handle, position }))
    }

    async fn recover(
        &self,
        request: Request<RecoverRequest>,
    ) -> Result<Response<RecoverResponse>, Status> {
        let (session_id, position, path) =
            self.gateway.recover(&request.into_inner().handle).await?;
        Ok(Response::new(RecoverResponse {
            session_id,
            position,
            path: path.to_string(),
        }))
    }

    async fn close_for_commit(
        &self,
        request: Request<CloseForCommitRequest>,
    ) -> Result<Response<CloseForCommitResponse>, Status> {
        let (handle, size) = self
            .gateway
            .close_for_commit(&request.into_inner().session_id)
            .await?;
        Ok(Response::new(CloseForCommitResponse { handle, size }))
    }

    async fn commit(
        &self,
        request: Request<CommitRequest>,
    ) -> Result<Response<CommitResponse>, Status> {
        let req = request.into_inner();
        let (path, size) = self.gateway.commit(&req.handle, req.after_recovery).await?;
        Ok(Response::new(CommitResponse {
            path: path.to_string(),
            size,
        }))
    }

    async fn cleanup(
        &self,
        request: Request<CleanupRequest>,
    ) -> Result<Response<CleanupResponse>, Status> {
        let cleaned = self.gateway.cleanup(&request.into_inner().handle).await?;
        Ok(Response::new(CleanupResponse { cleaned }))
    }

    async fn abort(
        &self,
        request: Request<AbortRequest>,
    ) -> Result<Response<AbortResponse>, Status> {
        self.gateway.abort(&request.into_inner().session_id).await?;
        Ok(Response::new(AbortResponse {}))
    }

    async fn capabilities(
        &self,
        request: Request<CapabilitiesRequest>,
    ) -> Result<Response<CapabilitiesResponse>, Status> {
        let caps = self.gateway.capabilities(&request.into_inner().path)?;
        Ok(Response::new(CapabilitiesResponse {
            supports_resume: caps.backend.supports_resume,
            requires_cleanup: caps.backend.requires_cleanup,
            scheme: caps.location.scheme,
            authority: caps.location.authority,
            min_part_size: caps.backend.min_part_size,
            max_concurrent_uploads: caps.backend.max_concurrent_uploads,
            survives_restart: caps.backend.survives_restart,
            max_message_size: MAX_MESSAGE_SIZE as u64,
        }))
    }
}
