//! Compiles `proto/sluice/v1/gateway.proto` (at the repository root, where
//! every client's build finds it) with the vendored `protoc`, so a build
//! needs nothing installed, and writes the descriptor set that server
//! reflection serves.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the
    // environment while it is set.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("sluice_descriptor.bin"))
        .bytes(".sluice.v1.WriteRequest.data")
        .bytes(".sluice.v1.ReadResponse.data")
        .compile_protos(
            &[root.join("sluice/v1/gateway.proto")],
            std::slice::from_ref(&root),
        )?;
    println!(
        "cargo:rerun-if-changed={}",
        root.join("sluice/v1").display()
    );
    Ok(())
}
