//! The RPC edge: the tower layers between the network and the gRPC
//! services. They are assembled in one place, `server::run`, outermost
//! first, so their order reads top to bottom:
//!
//! 0. RPCs counted by method and status code (for `/metrics`);
//! 1. a request id (`x-request-id`, kept from the caller or made), returned
//!    to the caller and carried by a tracing span per RPC;
//! 2. a bound on RPCs in flight: past it, a call is shed at once with
//!    `RESOURCE_EXHAUSTED` instead of queueing;
//! 3. a deadline for unary RPCs (`DEADLINE_EXCEEDED`); streams are bounded
//!    by the idle timeout of `Write` (in the API) and by stream limits;
//! 4. oversized messages answered `RESOURCE_EXHAUSTED`, as the gRPC status
//!    code guide has it (tonic says `OUT_OF_RANGE`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use tokio::sync::Semaphore;
use tonic::body::Body;
use tower::{Layer, Service};

use crate::error::Error;

/// Streaming RPCs: no unary deadline applies to them.
const STREAMING: &[&str] = &[
    "/sluice.v1.StorageGateway/Write",
    "/sluice.v1.StorageGateway/Read",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// The methods sluice serves, by their gRPC paths. Every other path shares
/// the label `unknown`, in metrics and span names alike: a caller must not
/// make the server keep one series per name it makes up.
const METHODS: &[&str] = &[
    "/sluice.v1.StorageGateway/Open",
    "/sluice.v1.StorageGateway/Write",
    "/sluice.v1.StorageGateway/Persist",
    "/sluice.v1.StorageGateway/Recover",
    "/sluice.v1.StorageGateway/CloseForCommit",
    "/sluice.v1.StorageGateway/Commit",
    "/sluice.v1.StorageGateway/Cleanup",
    "/sluice.v1.StorageGateway/Abort",
    "/sluice.v1.StorageGateway/Capabilities",
    "/sluice.v1.StorageGateway/Read",
    "/sluice.v1.StorageGateway/Stat",
    "/sluice.v1.StorageGateway/List",
    "/sluice.v1.StorageGateway/Delete",
    "/sluice.v1.StorageGateway/Mkdirs",
    "/sluice.v1.StorageGateway/Rename",
    "/sluice.v1.StorageGateway/Exists",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// The method name of a served path (`Open`, `Check`, ...), or `unknown`.
pub fn method_label(path: &str) -> &'static str {
    METHODS
        .iter()
        .find(|m| **m == path)
        .and_then(|m| m.rsplit('/').next())
        .unwrap_or("unknown")
}

/// The tracing span of one RPC, carrying its request id. The caller's W3C
/// trace context becomes its parent (the one place it is extracted). The
/// domain fills in scheme, authority, session, bytes, position and parts;
/// `record_status` the code.
pub fn rpc_span(request: &Request<Body>) -> tracing::Span {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let path = request.uri().path();
    let method = match method_label(path) {
        "unknown" => "unknown",
        _ => path.trim_start_matches('/'),
    };
    let span = tracing::info_span!(
        "rpc",
        otel.name = %method,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        rpc.system = "grpc",
        rpc.method = %method,
        request_id = %id,
        rpc.grpc.status_code = tracing::field::Empty,
        scheme = tracing::field::Empty,
        authority = tracing::field::Empty,
        session = tracing::field::Empty,
        principal = tracing::field::Empty,
        offset = tracing::field::Empty,
        bytes = tracing::field::Empty,
        position = tracing::field::Empty,
        parts = tracing::field::Empty,
    );
    if crate::telemetry::enabled() {
        crate::telemetry::adopt_caller_trace(&span, request.headers());
    }
    span
}

/// Records the gRPC status code of a response on its RPC span.
pub fn record_status<B>(response: &Response<B>, _latency: Duration, span: &tracing::Span) {
    let code =
        tonic::Status::from_header_map(response.headers()).map_or(tonic::Code::Ok, |s| s.code());
    span.record("rpc.grpc.status_code", code as i32);
    if code != tonic::Code::Ok {
        span.record("otel.status_code", "ERROR");
    }
}

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The answer to a call the edge refuses itself.
fn refusal(err: Error) -> Response<Body> {
    tonic::Status::from(err).into_http()
}

/// One rule of the RPC edge: what it does around a call. The `Layer` and
/// `Service` plumbing is [`EdgeLayer`]'s and [`Edge`]'s, written once.
pub trait Rule<R>: Clone + Send + Sync + 'static {
    /// Runs one call to `path`. `next` starts the inner service's call; a
    /// rule that answers by itself (a shed call) never starts it.
    fn around<E: Send + 'static>(
        &self,
        path: &str,
        next: impl FnOnce() -> BoxFuture<Result<Response<R>, E>>,
    ) -> BoxFuture<Result<Response<R>, E>>;
}

/// Puts a [`Rule`] around a service.
#[derive(Clone, Copy)]
pub struct EdgeLayer<P>(pub P);

impl<P: Clone, S> Layer<S> for EdgeLayer<P> {
    type Service = Edge<P, S>;
    fn layer(&self, inner: S) -> Edge<P, S> {
        Edge {
            rule: self.0.clone(),
            inner,
        }
    }
}

/// A service with a [`Rule`] around it.
#[derive(Clone)]
pub struct Edge<P, S> {
    rule: P,
    inner: S,
}

impl<P, S, B, R> Service<Request<B>> for Edge<P, S>
where
    P: Rule<R>,
    S: Service<Request<B>, Response = Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<R>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let path = request.uri().path().to_string();
        let inner = &mut self.inner;
        self.rule
            .around(&path, move || Box::pin(inner.call(request)))
    }
}

/// Sheds calls past a bound on RPCs in flight. Unary calls and streams
/// have bounds of their own, so streams that sit idle until their timeout
/// never keep a Persist or Commit out; health checks are never shed, so a
/// loaded gateway is not taken for a dead one.
#[derive(Clone)]
pub struct Shed {
    unary: Arc<Semaphore>,
    streams: Arc<Semaphore>,
    limits: (usize, usize),
}

impl Shed {
    pub fn new(unary: usize, streams: usize) -> Shed {
        Shed {
            unary: Arc::new(Semaphore::new(unary)),
            streams: Arc::new(Semaphore::new(streams)),
            limits: (unary, streams),
        }
    }
}

impl Rule<Body> for Shed {
    fn around<E: Send + 'static>(
        &self,
        path: &str,
        next: impl FnOnce() -> BoxFuture<Result<Response<Body>, E>>,
    ) -> BoxFuture<Result<Response<Body>, E>> {
        if path.starts_with("/grpc.health.v1.Health/") {
            return next();
        }
        let (permits, limit, key, what) = if STREAMING.contains(&path) {
            let limit = self.limits.1;
            (
                &self.streams,
                limit,
                "rpc.max-concurrent-streams",
                "streams",
            )
        } else {
            let limit = self.limits.0;
            (
                &self.unary,
                limit,
                "rpc.max-concurrent-requests",
                "unary RPCs",
            )
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            return Box::pin(async move { Ok(refusal(Error::Shed { limit, what, key })) });
        };
        let future = next();
        Box::pin(async move {
            let response = future.await;
            drop(permit);
            response
        })
    }
}

/// A deadline for unary RPCs.
#[derive(Clone, Copy)]
pub struct UnaryDeadline(pub Duration);

impl Rule<Body> for UnaryDeadline {
    fn around<E: Send + 'static>(
        &self,
        path: &str,
        next: impl FnOnce() -> BoxFuture<Result<Response<Body>, E>>,
    ) -> BoxFuture<Result<Response<Body>, E>> {
        let future = next();
        if STREAMING.contains(&path) {
            return future;
        }
        let (deadline, path) = (self.0, path.to_string());
        Box::pin(async move {
            match tokio::time::timeout(deadline, future).await {
                Ok(response) => response,
                Err(_) => Ok(refusal(Error::DeadlineExceeded(format!(
                    "{path} took longer than {} ms (rpc.unary-timeout)",
                    deadline.as_millis()
                )))),
            }
        })
    }
}

/// Answers oversized messages with `RESOURCE_EXHAUSTED`, and messages
/// that do not decode (a string field that is not UTF-8, truncated or
/// garbage protobuf) with `INVALID_ARGUMENT`: tonic says `INTERNAL`, which
/// would send the client looking for a server bug.
#[derive(Clone, Copy)]
pub struct Oversize;

impl Rule<Body> for Oversize {
    fn around<E: Send + 'static>(
        &self,
        _path: &str,
        next: impl FnOnce() -> BoxFuture<Result<Response<Body>, E>>,
    ) -> BoxFuture<Result<Response<Body>, E>> {
        let future = next();
        Box::pin(async move {
            let response = future.await?;
            // A unary decode failure is a trailers-only response: its status
            // is in the headers.
            match tonic::Status::from_header_map(response.headers())
                .as_ref()
                .and_then(crate::api::status::decoding_failure)
            {
                Some(err) => Ok(refusal(err)),
                None => Ok(response),
            }
        })
    }
}

/// Counts RPCs by method and status code. An error is in the response
/// headers (tonic answers errors trailers-only); anything else counts as OK
/// (a streaming RPC that fails mid-stream is counted OK).
#[derive(Clone)]
pub struct RpcMetrics(pub Arc<crate::metrics::Metrics>);

impl<R: Send + 'static> Rule<R> for RpcMetrics {
    fn around<E: Send + 'static>(
        &self,
        path: &str,
        next: impl FnOnce() -> BoxFuture<Result<Response<R>, E>>,
    ) -> BoxFuture<Result<Response<R>, E>> {
        let method = method_label(path).to_string();
        let future = next();
        let metrics = self.0.clone();
        Box::pin(async move {
            let response = future.await?;
            let code = tonic::Status::from_header_map(response.headers())
                .map_or(tonic::Code::Ok, |s| s.code());
            metrics
                .rpcs
                .get_or_create(&crate::metrics::RpcLabel {
                    method,
                    code: format!("{code:?}"),
                })
                .inc();
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every RPC of the proto files is a known method, so none of them is
    /// counted as `unknown`.
    #[test]
    fn every_proto_method_has_its_own_label() {
        let proto = include_str!("../proto/sluice/v1/gateway.proto");
        let rpcs: Vec<&str> = proto
            .lines()
            .filter_map(|l| l.trim().strip_prefix("rpc "))
            .map(|l| l.split('(').next().unwrap().trim())
            .collect();
        assert_eq!(rpcs.len(), 16);
        for rpc in rpcs {
            let path = format!("/sluice.v1.StorageGateway/{rpc}");
            assert_eq!(method_label(&path), rpc);
        }
        assert_eq!(method_label("/sluice.v1.StorageGateway/Nope"), "unknown");
        assert_eq!(method_label(&format!("/{}", "x".repeat(8000))), "unknown");
    }
}
