//! OpenTelemetry: a caller's trace shows its writes, exported over OTLP to an
//! in-process collector.

use std::collections::HashMap;
use std::time::Duration;

use fake_opentelemetry_collector::{ExportedSpan, FakeCollectorServer};
use tracing_subscriber::layer::SubscriberExt;

use crate::harness::*;

/// An attribute's value; the collector prints it as `Some(AnyValue {...})`.
fn attr(span: &ExportedSpan, key: &str) -> Option<String> {
    let raw = span.attributes.get(key)?;
    let inner = |tag: &str, end: &str| {
        raw.split_once(tag)
            .and_then(|(_, rest)| rest.split_once(end))
            .map(|(v, _)| v.to_string())
    };
    inner("StringValue(\"", "\")")
        .or_else(|| inner("IntValue(", ")"))
        .or_else(|| inner("BoolValue(", ")"))
}

fn with_trace<T>(message: T, traceparent: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_trace_shows_its_writes() {
    let mut collector = FakeCollectorServer::start().await.unwrap();
    let telemetry =
        sluice::telemetry::Telemetry::otlp(&collector.endpoint(), Some("sluice-test")).unwrap();
    let subscriber = tracing_subscriber::registry().with(telemetry.layer());
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let server = TestServer::start("memory.upload.min.part.size: 16\n").await;
    let mut c = server.client().await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace}-{parent}-01");
    use sluice::proto::*;
    let sid = c
        .open(with_trace(
            OpenRequest {
                path: "memory://traced/out/part-0".into(),
                inject_entropy: false,
            },
            &traceparent,
        ))
        .await
        .unwrap()
        .into_inner()
        .session_id;
    let secret_content = "do-not-log-this-content-0123456789";
    let messages = vec![WriteRequest {
        crc32c: None,
        session_id: sid.clone(),
        offset: 0,
        data: bytes::Bytes::from(secret_content),
    }];
    c.write(with_trace(tokio_stream::iter(messages), &traceparent))
        .await
        .unwrap();
    c.persist(with_trace(
        PersistRequest {
            session_id: sid.clone(),
        },
        &traceparent,
    ))
    .await
    .unwrap();
    let handle = c
        .close_for_commit(with_trace(
            CloseForCommitRequest {
                session_id: sid.clone(),
            },
            &traceparent,
        ))
        .await
        .unwrap()
        .into_inner()
        .handle;
    c.commit(with_trace(
        CommitRequest {
            handle,
            after_recovery: false,
        },
        &traceparent,
    ))
    .await
    .unwrap();
    telemetry.shutdown().await;

    let spans: Vec<ExportedSpan> = collector.exported_spans(8, Duration::from_secs(20)).await;
    let rpc = |method: &str| -> &ExportedSpan {
        let name = format!("sluice.v1.StorageGateway/{method}");
        spans.iter().find(|s| s.name == name).unwrap_or_else(|| {
            panic!(
                "no span {name} among {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        })
    };
    for method in ["Open", "Write", "Persist", "CloseForCommit", "Commit"] {
        let span = rpc(method);
        assert_eq!(
            span.trace_id, trace,
            "{method} is not in the caller's trace"
        );
        assert_eq!(
            span.parent_span_id, parent,
            "{method}'s parent is not the caller's span"
        );
        assert_eq!(span.kind, "SPAN_KIND_SERVER");
        assert_eq!(
            attr(span, "scheme").as_deref(),
            Some("memory"),
            "{method}: {:?}",
            span.attributes
        );
        assert_eq!(
            attr(span, "authority").as_deref(),
            Some("traced"),
            "{method}"
        );
        assert_eq!(
            attr(span, "rpc.grpc.status_code").as_deref(),
            Some("0"),
            "{method}"
        );
    }
    assert_eq!(attr(rpc("Open"), "session"), Some(sid.clone()));
    assert_eq!(
        attr(rpc("Write"), "bytes"),
        Some(secret_content.len().to_string())
    );
    assert_eq!(attr(rpc("Write"), "position").as_deref(), Some("34"));
    assert_eq!(
        attr(rpc("Persist"), "parts").as_deref(),
        Some("2"),
        "a 16-byte part while writing, the other 18 bytes as a part at the persist"
    );
    assert_eq!(attr(rpc("CloseForCommit"), "parts").as_deref(), Some("2"));
    // Backend calls are children of the RPC that caused them.
    let children = |parent: &ExportedSpan, name: &str| -> usize {
        spans
            .iter()
            .filter(|s| s.name == name && s.parent_span_id == parent.span_id && s.trace_id == trace)
            .count()
    };
    // A part goes up while the bytes after it still fill a part: 16 of
    // the 34 while writing; the persist uploads the other 18 as a part
    // rather than a tail object; nothing is left for CloseForCommit.
    assert_eq!(children(rpc("Write"), "upload_part"), 1);
    assert_eq!(children(rpc("Persist"), "upload_part"), 1);
    assert_eq!(children(rpc("Persist"), "put_tail"), 0);
    assert_eq!(children(rpc("CloseForCommit"), "upload_part"), 0);
    assert_eq!(children(rpc("Commit"), "complete_multipart"), 1);
    // No file contents anywhere in what was exported.
    let everything: HashMap<&str, &str> = spans
        .iter()
        .flat_map(|s| s.attributes.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .collect();
    assert!(
        everything.values().all(|v| !v.contains(secret_content)),
        "file contents were exported"
    );
}
