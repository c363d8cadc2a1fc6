//! Generated protobuf and gRPC code of sluice's public API, `sluice.v1`:
//! the messages, the `StorageGateway` client and the server trait. The
//! source is `proto/sluice/v1/gateway.proto` at the repository root.

#![allow(clippy::all)]

tonic::include_proto!("sluice.v1");

/// Descriptors of `sluice.v1`, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("sluice_descriptor");
