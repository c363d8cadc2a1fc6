//! A client for sluice with the shape of Flink's `RecoverableWriter`:
//!
//! ```no_run
//! # async fn job() -> Result<(), sluice_client::ClientError> {
//! use sluice_client::Client;
//! let client = Client::connect("http://127.0.0.1:50051").await?;
//! let mut stream = client.open("memory://demo/out/part-0").await?;
//! stream.write(b"first record\n").await?;
//! let resume = stream.persist().await?; // keep it in the checkpoint
//! stream.write(b"second record\n").await?;
//! let committer = stream.close_for_commit().await?;
//! committer.commit().await?;
//! # let _ = resume; Ok(()) }
//! ```
//!
//! Small writes are batched into messages of `chunk_size` bytes, streamed
//! over one `Write` call while the caller goes on. The bytes of a call stay
//! referenced until the server acknowledges them (at most `max_unacked`
//! bytes, after which the call ends and a new one starts), so that a call cut
//! by `UNAVAILABLE` is sent again from the last acknowledged offset: the
//! server skips what it already has (DESIGN 1.2), and no byte is duplicated.
//! Unary calls are retried on `UNAVAILABLE` with exponential backoff; a
//! retried `Commit` asks for `after_recovery`, since the first attempt may
//! have landed.

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

mod stream;

pub use sluice_proto as proto;
use sluice_proto::storage_gateway_client::StorageGatewayClient;
use sluice_proto::*;
pub use stream::{Committed, Committer, RecoverableStream};

/// What a call to sluice failed with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach sluice at {endpoint}: {source}")]
    Connect {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// The options cannot work (a token that is not a valid header value).
    #[error("{0}")]
    Options(String),
    /// The server's answer; [`ClientError::code`] tells which kind.
    #[error("{}: {}", .0.code(), .0.message())]
    Status(#[from] Status),
}

impl ClientError {
    /// The gRPC status code (`UNAVAILABLE` for a failed connect).
    pub fn code(&self) -> Code {
        match self {
            ClientError::Connect { .. } => Code::Unavailable,
            ClientError::Options(_) => Code::InvalidArgument,
            // A connection that broke is UNAVAILABLE, whatever tonic says.
            ClientError::Status(status) if retryable(status) => Code::Unavailable,
            ClientError::Status(status) => status.code(),
        }
    }

    /// The session is gone (the gateway restarted, or it was fenced or
    /// reclaimed): recover from the last resume handle.
    pub fn is_session_lost(&self) -> bool {
        matches!(self.code(), Code::NotFound | Code::Aborted)
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// How calls are retried on `UNAVAILABLE`.
#[derive(Clone, Debug)]
pub struct Retry {
    /// Attempts in all, the first included.
    pub attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 8,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
        }
    }
}

impl Retry {
    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.min(16);
        (self.initial_backoff * factor).min(self.max_backoff)
    }
}

/// Tuning of a [`Client`].
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Bytes per `Write` message; writes are batched up to this size.
    pub chunk_size: usize,
    /// Bytes one `Write` call carries before it ends and is acknowledged:
    /// what a retry may have to send again, and what the client holds.
    pub max_unacked: usize,
    pub retry: Retry,
    /// Sent as `authorization: Bearer <token>` on every call, for a
    /// gateway with principals configured.
    pub bearer_token: Option<String>,
    /// TLS (with `identity` for mutual TLS); the endpoint is `https://`.
    pub tls: Option<tonic::transport::ClientTlsConfig>,
    /// CRC32C on every `Write` message (the server refuses a damaged one
    /// with `DATA_LOSS`, and it is sent again), and the file's CRC32C that
    /// `Persist`, `CloseForCommit` and `Commit` answer checked against the
    /// bytes written. On by default.
    pub checksums: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            chunk_size: 1 << 20,
            max_unacked: 32 << 20,
            retry: Retry::default(),
            bearer_token: None,
            tls: None,
            checksums: true,
        }
    }
}

/// Adds the bearer token, if any, to every call.
#[derive(Clone)]
pub struct Credentials(Option<tonic::metadata::AsciiMetadataValue>);

impl tonic::service::Interceptor for Credentials {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(token) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        Ok(request)
    }
}

/// The generated client, with the credentials of the options.
pub type GrpcClient =
    StorageGatewayClient<tonic::service::interceptor::InterceptedService<Channel, Credentials>>;

/// A resume handle (Flink's `ResumeRecoverable`): opaque, signed bytes to
/// keep in a checkpoint. Every resume handle is also a commit handle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResumeHandle(pub Vec<u8>);

/// A commit handle (Flink's `CommitRecoverable`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitHandle(pub Vec<u8>);

impl From<ResumeHandle> for CommitHandle {
    fn from(handle: ResumeHandle) -> Self {
        CommitHandle(handle.0)
    }
}

/// Connections to sluice (one for `Write` streams, one for every other
/// call); cheap to clone.
#[derive(Clone)]
pub struct Client {
    grpc: GrpcClient,
    /// Where `Write` streams go: a connection of their own, so that their
    /// bytes never hold back a `Persist` or `Commit` (HTTP/2 flow control
    /// and TCP order are per connection).
    data: GrpcClient,
    options: ClientOptions,
}

impl Client {
    /// Connects to `endpoint` (e.g. `http://127.0.0.1:50051`).
    pub async fn connect(endpoint: impl Into<String>) -> Result<Client> {
        Client::connect_with(endpoint, ClientOptions::default()).await
    }

    pub async fn connect_with(
        endpoint: impl Into<String>,
        options: ClientOptions,
    ) -> Result<Client> {
        let endpoint = endpoint.into();
        let connect_error = |source| ClientError::Connect {
            endpoint: endpoint.clone(),
            source,
        };
        let mut channel = Endpoint::from_shared(endpoint.clone()).map_err(connect_error)?;
        if let Some(tls) = options.tls.clone() {
            channel = channel.tls_config(tls).map_err(connect_error)?;
        }
        let channel = tuned(channel);
        let client =
            Client::from_channels(channel.connect_lazy(), channel.connect_lazy(), options)?;
        // Fail here, not on the first call, when nothing listens.
        let mut grpc = client.grpc.clone();
        grpc.capabilities(CapabilitiesRequest {
            path: String::new(),
        })
        .await
        .map(drop)
        .or_else(|status| {
            // Nothing listens, or it will not have us: say so now.
            if retryable(&status) || status.code() == Code::Unauthenticated {
                Err(status)
            } else {
                Ok(())
            }
        })?;
        Ok(client)
    }

    /// A client over a channel made elsewhere (its own TLS or layers);
    /// `options.tls` is for [`Client::connect_with`] and unused here.
    pub fn from_channel(channel: Channel, options: ClientOptions) -> Result<Client> {
        Client::from_channels(channel.clone(), channel, options)
    }

    /// A client that sends `Write` streams over `data` and every other call
    /// over `control`.
    pub fn from_channels(
        control: Channel,
        data: Channel,
        options: ClientOptions,
    ) -> Result<Client> {
        let token = match &options.bearer_token {
            Some(token) => Some(format!("Bearer {token}").parse().map_err(|_| {
                ClientError::Options(
                    "the bearer token holds characters a gRPC header cannot carry".into(),
                )
            })?),
            None => None,
        };
        let limit = options.chunk_size + (64 << 10);
        let grpc = |channel| {
            StorageGatewayClient::with_interceptor(channel, Credentials(token.clone()))
                .max_encoding_message_size(limit.max(4 << 20))
                .max_decoding_message_size(64 << 20)
        };
        Ok(Client {
            grpc: grpc(control),
            data: grpc(data),
            options,
        })
    }

    /// The generated gRPC client, for the calls this module does not wrap.
    pub fn grpc(&self) -> GrpcClient {
        self.grpc.clone()
    }

    /// Starts writing a new file at `path`; nothing is visible there before
    /// the commit.
    pub async fn open(&self, path: &str) -> Result<RecoverableStream> {
        self.open_request(path, false).await
    }

    /// Like [`Client::open`], with the scheme's entropy key replaced.
    pub async fn open_with_entropy(&self, path: &str) -> Result<RecoverableStream> {
        self.open_request(path, true).await
    }

    async fn open_request(&self, path: &str, inject_entropy: bool) -> Result<RecoverableStream> {
        let opened = self
            .retrying(|mut grpc, _| async move {
                grpc.open(OpenRequest {
                    path: path.to_string(),
                    inject_entropy,
                })
                .await
            })
            .await?;
        Ok(self.stream(opened.session_id, opened.path, 0, 0))
    }

    /// Reopens the file of `handle` at exactly its position; bytes written
    /// after the handle are discarded.
    pub async fn recover(&self, handle: &ResumeHandle) -> Result<RecoverableStream> {
        let recovered = self
            .retrying(|mut grpc, _| {
                let handle = handle.0.clone();
                async move { grpc.recover(RecoverRequest { handle }).await }
            })
            .await?;
        Ok(self.stream(
            recovered.session_id,
            recovered.path,
            recovered.position,
            recovered.crc32c,
        ))
    }

    /// A committer for a handle restored from a checkpoint (Flink's
    /// `recoverForCommit`).
    pub fn committer(&self, handle: impl Into<CommitHandle>) -> Committer {
        Committer {
            client: self.clone(),
            handle: handle.into(),
            crc32c: None,
        }
    }

    /// Frees what only `handle` keeps (tail objects); true when something
    /// was removed. Never fails because it was already cleaned.
    pub async fn cleanup(&self, handle: &ResumeHandle) -> Result<bool> {
        let cleaned = self
            .retrying(|mut grpc, _| {
                let handle = handle.0.clone();
                async move { grpc.cleanup(CleanupRequest { handle }).await }
            })
            .await?;
        Ok(cleaned.cleaned)
    }

    /// What the scheme of `path` promises.
    pub async fn capabilities(&self, path: &str) -> Result<CapabilitiesResponse> {
        self.retrying(|mut grpc, _| async move {
            grpc.capabilities(CapabilitiesRequest {
                path: path.to_string(),
            })
            .await
        })
        .await
    }

    /// Reads a whole committed file.
    pub async fn read_all(&self, path: &str) -> Result<Vec<u8>> {
        let mut grpc = self.grpc.clone();
        let mut stream = grpc
            .read(ReadRequest {
                path: path.to_string(),
                offset: 0,
                length: 0,
            })
            .await?
            .into_inner();
        let mut out = Vec::new();
        while let Some(message) = stream.message().await? {
            out.extend_from_slice(&message.data);
        }
        Ok(out)
    }

    fn stream(
        &self,
        session_id: String,
        path: String,
        position: u64,
        crc32c: u32,
    ) -> RecoverableStream {
        RecoverableStream {
            client: self.clone(),
            session_id,
            path,
            crc32c,
            acked: position,
            sent: VecDeque::new(),
            sent_len: 0,
            pending: BytesMut::new(),
            call: None,
        }
    }

    /// Runs a unary call, again on `UNAVAILABLE` while attempts remain.
    /// `call` gets the attempt number (0 first).
    async fn retrying<T, F, Fut>(&self, mut call: F) -> Result<T>
    where
        F: FnMut(GrpcClient, u32) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, Status>>,
    {
        let retry = &self.options.retry;
        let mut attempt = 0;
        loop {
            match call(self.grpc.clone(), attempt).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) if retryable(&status) && attempt + 1 < retry.attempts => {
                    tokio::time::sleep(retry.backoff(attempt)).await;
                    attempt += 1;
                }
                Err(status) => return Err(status.into()),
            }
        }
    }
}

pub(crate) fn tuned(endpoint: Endpoint) -> Endpoint {
    endpoint
        .tcp_nodelay(true)
        .initial_stream_window_size(8 << 20)
        .initial_connection_window_size(16 << 20)
        .connect_timeout(Duration::from_secs(5))
}

/// `UNAVAILABLE`, or a connection that broke under the call (tonic reports
/// that as `UNKNOWN` with a transport error inside; sluice itself never
/// answers `UNKNOWN`). Every call here is safe to send again: writes carry
/// offsets, and a retried commit asks for `after_recovery`.
pub(crate) fn retryable(status: &Status) -> bool {
    use std::error::Error as _;
    status.code() == Code::Unavailable
        || status
            .source()
            .is_some_and(|e| e.downcast_ref::<tonic::transport::Error>().is_some())
}
