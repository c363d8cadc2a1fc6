//! Uploads one file of a given size through a running sluice, in fixed-size
//! chunks with a persist every N bytes, then commits it and prints the
//! throughput. Used to measure the server's memory during a large upload:
//!
//! ```sh
//! cargo run --release --example upload -- http://127.0.0.1:50051 s3://bucket/big 1024 1 64
//! ```
//! (server, target, MiB to write, MiB per chunk, MiB between persists)

use std::time::Instant;

use bytes::Bytes;
use sluice::proto::storage_gateway_client::StorageGatewayClient;
use sluice::proto::*;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 {
        eprintln!("usage: upload SERVER TARGET MIB CHUNK_MIB PERSIST_EVERY_MIB");
        std::process::exit(2);
    }
    let mib = |i: usize| -> u64 { args[i].parse::<u64>().expect("a whole number of MiB") << 20 };
    let (total, chunk, persist_every) = (mib(3), mib(4) as usize, mib(5));
    let mut client = StorageGatewayClient::connect(args[1].clone())
        .await?
        .max_encoding_message_size(64 << 20);
    let session_id = client
        .open(OpenRequest {
            path: args[2].clone(),
            inject_entropy: false,
        })
        .await?
        .into_inner()
        .session_id;
    let data = Bytes::from((0..chunk).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let started = Instant::now();
    let mut offset = 0u64;
    while offset < total {
        // One Write call per persist interval, then a persist.
        let end = (offset + persist_every).min(total);
        let messages: Vec<WriteRequest> = (offset..end)
            .step_by(chunk)
            .map(|at| {
                let data = data.slice(..(end - at).min(chunk as u64) as usize);
                WriteRequest {
                    session_id: session_id.clone(),
                    offset: at,
                    crc32c: Some(crc32c::crc32c(&data)),
                    data,
                }
            })
            .collect();
        offset = client
            .write(tokio_stream::iter(messages))
            .await?
            .into_inner()
            .position;
        client
            .persist(PersistRequest {
                session_id: session_id.clone(),
            })
            .await?;
        eprint!("\r{} / {} MiB", offset >> 20, total >> 20);
    }
    let handle = client
        .close_for_commit(CloseForCommitRequest { session_id })
        .await?
        .into_inner()
        .handle;
    let committed = client
        .commit(CommitRequest {
            handle,
            after_recovery: false,
        })
        .await?
        .into_inner();
    let secs = started.elapsed().as_secs_f64();
    eprintln!();
    println!(
        "committed {} ({} bytes) in {secs:.1} s: {:.1} MiB/s",
        committed.path,
        committed.size,
        committed.size as f64 / (1 << 20) as f64 / secs
    );
    Ok(())
}
