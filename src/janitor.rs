//! The janitor: a background task that removes what abandoned sessions
//! staged (multipart uploads, which S3 bills until aborted; tail objects;
//! temp files) once it is older than `janitor.ttl` and no live session owns
//! it. It logs what it removed and counts it in
//! `sluice_janitor_removed_total{kind}`.

use std::sync::Arc;

use crate::backend::Removed;
use crate::config::JanitorConfig;
use crate::gateway::Gateway;

/// Sweeps every `config.interval` until the task is dropped or aborted.
pub async fn run(gateway: Arc<Gateway>, config: JanitorConfig) {
    let metrics = gateway.metrics().clone();
    let record = move |kind: &str, n: usize| {
        metrics
            .janitor_removed
            .get_or_create(&crate::metrics::KindLabel {
                kind: kind.to_string(),
            })
            .inc_by(n as u64);
    };
    let mut tick = tokio::time::interval(config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate; start one interval in
    loop {
        tick.tick().await;
        match gateway.sweep(config.ttl).await {
            Ok(r) if r == Removed::default() => {}
            Ok(r) => {
                record("upload", r.uploads);
                record("tail_object", r.tails);
                record("temp_file", r.temp_files);
                tracing::info!(
                    uploads_aborted = r.uploads,
                    tail_objects_deleted = r.tails,
                    temp_files_deleted = r.temp_files,
                    "janitor removed abandoned staging"
                );
            }
            Err(e) => tracing::warn!(error = %e, "janitor sweep failed; will try again"),
        }
    }
}
