//! Compiles sluice's private storage format,
//! `proto/sluice/internal/v1/handle.proto` (handles and sled records), with
//! the vendored `protoc`. The public API is the `sluice-proto` crate's.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the
    // environment while it is set.
    unsafe { std::env::set_var("PROTOC", protoc) };
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .compile_protos(&["proto/sluice/internal/v1/handle.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/sluice/internal");
    Ok(())
}
