//! sluice: a gRPC storage gateway that gives streaming jobs in any language
//! what Apache Flink's `RecoverableWriter` gives JVM jobs. Write a file,
//! checkpoint it (`Persist`), crash, resume (`Recover`), publish it exactly
//! once (`CloseForCommit` → `Commit`).
//!
//! # Layout
//! - [`bench`]: `sluice-bench`'s runs, baselines and report.
//! - [`client`]: a Rust client shaped like Flink's `RecoverableWriter`.
//! - [`server`]: opens the data dir and backends, serves gRPC on a listener.
//! - [`edge`]: the tower layers at the RPC edge, assembled in one place.
//! - [`api`]: the gRPC adapter (`sluice.v1.StorageGateway`) and the one
//!   mapping from errors to status codes.
//! - [`gateway`]: the write protocol: sessions, offsets, checksums, handles,
//!   fencing; no gRPC types.
//! - [`backend`]: one backend per URI scheme (`file`, `memory`, and the
//!   multipart machinery object stores share).
//! - [`handle`]: signed, versioned, self-contained handles.
//! - [`state`]: sled records that outlive a restart.
//! - [`janitor`]: removes abandoned uploads, tail objects and temp files.
//! - [`limit`]: Flink's per-scheme stream limits, wrapped around backends.
//! - [`location`]: target URIs and the default scheme.
//! - [`metrics`]: the Prometheus metrics of the admin port.
//! - [`telemetry`]: OpenTelemetry traces over OTLP, with the caller's trace
//!   as parent.
//! - [`config`]: Flink-style YAML keys and their environment overrides.
//! - [`error`]: the domain error type.

pub mod api;
pub mod auth;
pub mod backend;
pub mod bench;
pub mod client;
pub mod config;
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

/// Generated protobuf and gRPC code for `sluice.v1`.
pub mod proto {
    #![allow(clippy::all)]
    tonic::include_proto!("sluice.v1");

    /// Descriptors of `sluice.v1`, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("sluice_descriptor");
}

pub use error::{Error, Result};
