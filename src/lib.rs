//! sluice: a gRPC storage gateway that gives streaming jobs in any language
//! what Apache Flink's `RecoverableWriter` gives JVM jobs. Write a file,
//! checkpoint it (`Persist`), crash, resume (`Recover`), publish it exactly
//! once (`CloseForCommit` → `Commit`).
//!
//! # Layout
//! The protocol's generated code is the `sluice-proto` crate, the Rust
//! client `sluice-client`, the benchmarks `sluice-bench` (all in `crates/`).
//! This crate is the server:
//! - [`server`]: opens the data dir and backends, serves gRPC on a listener.
//! - [`edge`]: the tower layers at the RPC edge, assembled in one place.
//! - [`api`]: the gRPC adapter (`sluice.v1.StorageGateway`) and the one
//!   mapping from errors to status codes.
//! - [`gateway`]: the write protocol: sessions, offsets, checksums, handles,
//!   fencing; no gRPC types.
//! - [`backend`]: the backend contract and registry, and one folder per
//!   backend (`file`, `memory`, `s3`, `oss`, `gcs`, `azure`, and `object`,
//!   the multipart machinery the object stores share).
//! - [`handle`]: signed, versioned, self-contained handles.
//! - [`state`]: sled records that outlive a restart.
//! - [`janitor`]: removes abandoned uploads, tail objects and temp files.
//! - [`limit`]: Flink's per-scheme stream limits, wrapped around backends.
//! - [`location`]: target URIs and the default scheme.
//! - [`metrics`]: the Prometheus metrics of the admin port.
//! - [`telemetry`]: OpenTelemetry traces over OTLP, with the caller's trace
//!   as parent.
//! - [`config`]: Flink-style YAML keys and their environment overrides;
//!   [`settings`] holds the value syntaxes every section reads with.
//! - [`error`]: the domain error type.

pub mod api;
pub mod auth;
pub mod backend;
pub mod config;
pub mod crc;
pub mod edge;
pub mod error;
pub mod gateway;
pub mod handle;
pub mod incoming;
pub mod janitor;
pub mod limit;
pub mod location;
pub mod metrics;
pub mod server;
pub mod settings;
pub mod state;
pub mod telemetry;

/// The protocol: the public API `sluice.v1` (the `sluice-proto` crate) and
/// sluice's private storage format `sluice.internal.v1` (handles and sled
/// records, `proto/sluice/internal/v1/handle.proto`), which is not API.
pub mod proto {
    pub use sluice_proto::*;

    mod internal {
        #![allow(clippy::all)]
        tonic::include_proto!("sluice.internal.v1");
    }
    pub use internal::*;
}

pub use error::{Error, Result};
