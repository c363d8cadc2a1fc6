//! Assembling and running the gRPC server.
//!
//! [`Server::start`] opens the data dir (sled, signing key, file root) and
//! the backends; [`run`] serves a [`Server`] on an already-bound listener
//! until a shutdown future resolves, so the binary passes Ctrl-C/SIGTERM and
//! tests bind `127.0.0.1:0`.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::api::GatewayApi;
use crate::auth::Authenticator;
use crate::backend::Registry;
use crate::backend::memory::MemoryStores;
use crate::config::{Config, JanitorConfig};
use crate::error::{Error, Result, StartError, StartResult};
use crate::gateway::Gateway;
use crate::handle::HandleKeys;
use crate::metrics::Metrics;
use crate::proto::storage_gateway_server::StorageGatewayServer;
use crate::state::StateStore;
use std::sync::atomic::{AtomicBool, Ordering};

/// HTTP/2 receive window per stream (the sink of `sluice-bench` uses it too).
pub const STREAM_WINDOW: u32 = 8 * 1024 * 1024;
/// HTTP/2 receive window per connection.
pub const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;

/// What a server needs to start.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Holds sled (`state/`), the signing key and the default file root (`files/`).
    pub data_dir: PathBuf,
    pub config: Config,
    /// The memory stores to serve (tests pass their own to look inside).
    pub memory: Arc<MemoryStores>,
}

impl ServerOptions {
    pub fn new(data_dir: impl Into<PathBuf>, config: Config) -> ServerOptions {
        ServerOptions {
            data_dir: data_dir.into(),
            config,
            memory: Arc::default(),
        }
    }
}

/// A gateway ready to serve.
pub struct Server {
    pub gateway: Arc<Gateway>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served, if anywhere.
    pub admin: Option<TcpListener>,
    /// How long in-flight RPCs may run once a shutdown began.
    pub grace_period: std::time::Duration,
    pub janitor: JanitorConfig,
    pub edge: crate::config::EdgeConfig,
    /// The stream limiters of the schemes that have limits.
    pub limiters: Vec<Arc<crate::limit::StreamLimiter>>,
    /// The stagings whose streams the limiters reclaimed, as they do.
    pub reclaimed: Option<tokio::sync::mpsc::UnboundedReceiver<String>>,
    /// Bearer tokens and principals; `None`: authentication off.
    pub auth: Option<Arc<Authenticator>>,
    /// TLS (and mutual TLS) on the gRPC port; `None`: plaintext.
    pub tls: Option<tonic::transport::ServerTlsConfig>,
    /// `rpc.plaintext`: plaintext allowed on a non-loopback address.
    pub plaintext: bool,
}

impl Server {
    /// Opens state and backends. Fails with a clear message when the data
    /// dir cannot be used (unwritable, or locked by another sluice).
    pub fn start(options: ServerOptions) -> StartResult<Server> {
        let data_dir = &options.data_dir;
        std::fs::create_dir_all(data_dir).map_err(|e| {
            StartError::Files(format!(
                "cannot create the data dir {}: {e}",
                data_dir.display()
            ))
        })?;
        let state = StateStore::open(&data_dir.join("state"))?;
        if state.opened_after_crash() {
            tracing::warn!(
                state = %data_dir.join("state").display(),
                "the last gateway on this state did not stop cleanly (killed, crashed or a power cut): sled rebuilt the state from its log. Everything that was acknowledged is kept; if this repeats, look for OOM kills or a liveness probe that fires too early"
            );
        }
        let config = &options.config;
        let keys = HandleKeys::load_or_create(
            config.signing.key.clone(),
            config.signing.key_id.clone(),
            data_dir,
            state.has_records(),
        )?
        .with_verification(config.signing.verification.clone())?;
        tracing::info!(signing = keys.signing_id(), accepted = ?keys.accepted_ids(), "handle keys");
        let context = crate::backend::BuildContext {
            data_dir,
            memory: &options.memory,
        };
        let mut registry = Registry::build(&config.backends, &context)?;
        let auth = Authenticator::new(
            &config.principals,
            &config.default_scheme,
            config.edge.max_sessions_per_principal,
        )
        .map_err(|e| StartError::Config(e.to_string()))?
        .map(Arc::new);
        let tls = config.tls.as_ref().map(load_tls).transpose()?;
        let metrics = Metrics::new();
        let (reclaimed_tx, reclaimed) = tokio::sync::mpsc::unbounded_channel();
        let limiters = crate::limit::apply(&mut registry, &config.limits, &metrics, &reclaimed_tx);
        for key in &config.unknown_keys {
            tracing::warn!(key = %key, "unknown configuration key ignored (see `sluice keys` for the known ones)");
        }
        let gateway = Gateway::new(
            registry,
            config.default_scheme.clone(),
            config.entropy.clone(),
            keys,
            state,
            metrics,
        )
        .with_max_sessions(config.edge.max_sessions);
        Ok(Server {
            admin: None,
            grace_period: config.shutdown_grace,
            edge: config.edge,
            limiters,
            reclaimed: Some(reclaimed),
            gateway: Arc::new(gateway),
            janitor: config.janitor,
            auth,
            tls,
            plaintext: config.plaintext,
        })
    }
}

/// Reads `rpc.tls.*` and checks that rustls accepts it, so a bad file
/// stops the start with a message rather than failing every handshake.
fn load_tls(config: &crate::config::TlsConfig) -> StartResult<tonic::transport::ServerTlsConfig> {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    let read = |key: &str, path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|e| StartError::Tls(format!("cannot read {key} {}: {e}", path.display())))
    };
    let cert = read("rpc.tls.cert-file", &config.cert_file)?;
    let key = read("rpc.tls.key-file", &config.key_file)?;
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
    if let Some(ca) = &config.client_ca_file {
        tls = tls.client_ca_root(Certificate::from_pem(read("rpc.tls.client-ca-file", ca)?));
    }
    tonic::transport::Server::builder()
        .tls_config(tls.clone())
        .map_err(|e| {
            StartError::Tls(format!(
                "rpc.tls.*: {} with {}: {e} (PEM certificate chain and PKCS#8, PKCS#1 or SEC1 key expected)",
                config.cert_file.display(),
                config.key_file.display()
            ))
        })?;
    Ok(tls)
}

/// Ends the session of every staging whose stream slot a limiter
/// reclaimed, as the limiter tells it.
async fn end_reclaimed_sessions(
    gateway: Arc<Gateway>,
    reclaimed: Option<tokio::sync::mpsc::UnboundedReceiver<String>>,
) {
    let Some(mut reclaimed) = reclaimed else {
        return;
    };
    while let Some(staging) = reclaimed.recv().await {
        gateway.end_reclaimed(&staging).await;
    }
}

impl Server {
    /// Serves the admin HTTP endpoints on `listener` too.
    pub fn with_admin(mut self, listener: TcpListener) -> Server {
        self.admin = Some(listener);
        self
    }
}

/// Keeps glibc's heap from growing with the number of concurrent writers.
/// glibc serves a large allocation with mmap, but after the first such
/// buffer is freed it raises its threshold and serves later ones (64 KiB
/// messages, 1 MiB write buffers) from the heap, which it rarely gives back.
/// A 10-minute soak of 64 writers then climbed from 70 to 339 MiB and had
/// not levelled off. With the thresholds fixed, the first 240 s levelled off
/// at about 140 MiB, where they had climbed to 231 MiB. Explicit
/// `MALLOC_MMAP_THRESHOLD_` / `MALLOC_TRIM_THRESHOLD_` settings in the
/// environment win. A no-op on other C libraries.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let unset = |name: &str| std::env::var_os(name).is_none();
        // SAFETY: mallopt only sets allocator parameters; called once at
        // start-up, before the runtime's threads exist.
        unsafe {
            if unset("MALLOC_MMAP_THRESHOLD_") {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
            }
            if unset("MALLOC_TRIM_THRESHOLD_") {
                libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024);
            }
        }
    }
}

/// The connections `listener` accepts, with TCP_NODELAY set.
pub fn nodelay_incoming(listener: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Serves `server` on `listener` until `shutdown` resolves, then flushes state.
pub async fn run(
    listener: TcpListener,
    mut server: Server,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<StorageGatewayServer<GatewayApi>>()
        .await;
    // Both reflection versions: grpcurl and many tools still speak v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .map_err(|e| Error::Internal(format!("reflection: {e}")))?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| Error::Internal(format!("reflection: {e}")))?;
    let edge = server.edge;
    let handlers = GatewayApi::new(server.gateway.clone(), edge, server.auth.clone());
    let api = StorageGatewayServer::new(handlers.clone())
        .max_decoding_message_size(edge.max_message_size)
        .max_encoding_message_size(edge.max_message_size);
    let api = crate::api::WriteRoute::new(api, handlers, edge.max_message_size);
    for limiter in &server.limiters {
        crate::limit::StreamLimiter::spawn_reaper(limiter);
    }
    let reclaimed = tokio::spawn(end_reclaimed_sessions(
        server.gateway.clone(),
        server.reclaimed.take(),
    ));
    let janitor = tokio::spawn(crate::janitor::run(server.gateway.clone(), server.janitor));
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Internal(format!("the listener has no address: {e}")))?;
    if server.tls.is_none() && !server.plaintext && !addr.ip().is_loopback() {
        janitor.abort();
        reclaimed.abort();
        return Err(Error::InvalidArgument(format!(
            "refusing to serve plaintext gRPC on {addr}: configure rpc.tls.cert-file and rpc.tls.key-file, or set rpc.plaintext: true where the network is trusted (loopback addresses need neither)"
        )));
    }
    if server.tls.is_none() && server.auth.is_some() && !addr.ip().is_loopback() {
        tracing::warn!(address = %addr, "bearer tokens travel in plaintext: configure rpc.tls.*");
    }
    let connections = crate::incoming::connection_bound(edge.max_connections);
    tracing::info!(
        address = %addr,
        max_connections = connections,
        schemes = ?server.gateway.registry().schemes().collect::<Vec<_>>(),
        tls = if server.tls.is_some() { "on" } else { "off" },
        auth = if server.auth.is_some() { "bearer tokens" } else { "off" },
        "sluice listening"
    );
    use crate::edge::{EdgeLayer, Oversize, RpcMetrics, Shed, UnaryDeadline, rpc_span};
    use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
    // The RPC edge, outermost first (see edge.rs for each layer's why).
    let edge_layers = tower::ServiceBuilder::new()
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(
            tower_http::trace::TraceLayer::new_for_grpc()
                .make_span_with(rpc_span)
                .on_response(crate::edge::record_status),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(EdgeLayer(Shed::new(
            edge.max_concurrent_requests,
            edge.max_concurrent_streams,
        )))
        .layer(EdgeLayer(UnaryDeadline(edge.unary_timeout)))
        .layer(EdgeLayer(Oversize));
    let edge_layers = tower::ServiceBuilder::new()
        .layer(EdgeLayer(RpcMetrics(server.gateway.metrics().clone())))
        .layer(edge_layers);
    // Ready until a shutdown begins: then health says NOT_SERVING, /readyz
    // 503, no new connection is accepted, and in-flight RPCs get at most the
    // grace period to finish.
    let ready = Arc::new(AtomicBool::new(true));
    let state_failure = StateFailure::default();
    let state_watch = tokio::spawn(watch_state(
        server.gateway.clone(),
        health.clone(),
        ready.clone(),
        state_failure.clone(),
    ));
    let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let admin = match server.admin.take() {
        Some(listener) => Some(tokio::spawn(serve_admin(
            listener,
            server.gateway.metrics().clone(),
            (ready.clone(), state_failure),
            admin_stopped,
        ))),
        None => None,
    };
    let (draining, drain_started) = tokio::sync::oneshot::channel::<()>();
    let signal = {
        let (health, ready) = (health.clone(), ready.clone());
        async move {
            shutdown.await;
            ready.store(false, Ordering::Release);
            health
                .set_not_serving::<StorageGatewayServer<GatewayApi>>()
                .await;
            tracing::info!("shutting down: refusing new connections, draining RPCs in flight");
            let _ = draining.send(());
        }
    };
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = server.tls.take() {
        builder = builder
            .tls_config(tls)
            .map_err(|e| Error::InvalidArgument(format!("rpc.tls.*: {e}")))?;
    }
    let serve = builder
        // h2's 64 KiB default windows let a client send only that much per
        // round trip: far below what a Write stream can carry.
        .initial_stream_window_size(Some(STREAM_WINDOW))
        .initial_connection_window_size(Some(CONNECTION_WINDOW))
        // A peer that stops answering pings is dropped with its streams.
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)))
        .layer(edge_layers)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(api)
        // Bounded connections with TCP_NODELAY (see incoming.rs).
        .serve_with_incoming_shutdown(
            crate::incoming::bounded(listener, connections, edge.handshake_timeout),
            signal,
        );
    let grace = server.grace_period;
    let result = tokio::select! {
        result = serve => result,
        _ = async {
            match drain_started.await {
                Ok(()) => tokio::time::sleep(grace).await,
                Err(_) => std::future::pending().await,
            }
        } => {
            tracing::warn!(grace_ms = grace.as_millis() as u64, "grace period over: RPCs still running were cut short; their sessions recover from their last handles");
            Ok(())
        }
    };
    health
        .set_not_serving::<StorageGatewayServer<GatewayApi>>()
        .await;
    let _ = admin_stop.send(());
    if let Some(admin) = admin {
        let _ = admin.await;
    }
    janitor.abort();
    reclaimed.abort();
    state_watch.abort();
    server.gateway.close_state().await?;
    tracing::info!("state flushed; stopped");
    result.map_err(|e| Error::Internal(format!("the gRPC server failed: {e}")))
}

/// Why the state store fails, while it does.
type StateFailure = Arc<std::sync::Mutex<Option<String>>>;

/// Watches the state store every second. While it fails (a full or broken
/// disk), gRPC health says NOT_SERVING and `/readyz` 503 with the reason,
/// so no load balancer sends calls that can only fail; once a probe write
/// succeeds again, both return to serving.
async fn watch_state(
    gateway: Arc<Gateway>,
    health: tonic_health::server::HealthReporter,
    ready: Arc<AtomicBool>,
    failure: StateFailure,
) {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let now = gateway.state_failure().await;
        let before = failure.lock().unwrap().clone();
        if now == before {
            continue;
        }
        *failure.lock().unwrap() = now.clone();
        if !ready.load(Ordering::Acquire) {
            continue; // shutting down: health stays NOT_SERVING
        }
        match now {
            Some(why) => {
                tracing::error!(error = %why, "the state store fails: not ready until it works again");
                health
                    .set_not_serving::<StorageGatewayServer<GatewayApi>>()
                    .await;
            }
            None => {
                tracing::info!("the state store works again: ready");
                health
                    .set_serving::<StorageGatewayServer<GatewayApi>>()
                    .await;
            }
        }
    }
}

/// The admin HTTP port: `/metrics` (Prometheus text), `/healthz` (the
/// process is up), `/readyz` (503 once a shutdown began, or while the state
/// store fails).
async fn serve_admin(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    (ready, state_failure): (Arc<AtomicBool>, StateFailure),
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    use axum::http::{StatusCode, header};
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics.encode(),
                )
            }),
        )
        .route("/healthz", {
            // Live unless the state store failed: sled 0.34 does not resume
            // after a failed write in a running process, so only a restart
            // (which an orchestrator makes on a failing liveness probe)
            // brings the gateway back once space is freed.
            let state_failure = state_failure.clone();
            get(move || async move {
                match state_failure.lock().unwrap().clone() {
                    None => (StatusCode::OK, "ok\n".to_string()),
                    Some(why) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("the state store failed ({why}); free space or fix the data dir's disk, then restart the gateway\n"),
                    ),
                }
            })
        })
        .route(
            "/readyz",
            get(move || async move {
                let failure = state_failure.lock().unwrap().clone();
                if !ready.load(Ordering::Acquire) {
                    (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".to_string())
                } else if let Some(why) = failure {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("not ready: the state store fails ({why}); free space or fix the data dir's disk, then restart the gateway (/healthz fails meanwhile, so an orchestrator does)\n"),
                    )
                } else {
                    (StatusCode::OK, "ready\n".to_string())
                }
            }),
        );
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(address = %addr, "admin (metrics, health) listening");
    }
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = stop.await;
        })
        .await;
    if let Err(e) = served {
        tracing::warn!(error = %e, "the admin server failed");
    }
}
