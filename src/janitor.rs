//! The janitor: a background task that removes what abandoned sessions
//! staged (multipart uploads, which S3 bills until aborted; tail objects;
//! temp files) once it is older than `janitor.ttl` and no live session owns
//! it. It logs what it removed and keeps the running totals.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::backend::Removed;
use crate::config::JanitorConfig;
use crate::gateway::Gateway;

/// Totals since start, for logs and metrics.
#[derive(Debug, Default)]
pub struct JanitorTotals {
    pub uploads: AtomicUsize,
    pub tails: AtomicUsize,
    pub temp_files: AtomicUsize,
}

impl JanitorTotals {
    fn add(&self, r: Removed) {
        self.uploads.fetch_add(r.uploads, Ordering::Relaxed);
        self.tails.fetch_add(r.tails, Ordering::Relaxed);
        self.temp_files.fetch_add(r.temp_files, Ordering::Relaxed);
    }
}

/// Sweeps every `config.interval` until the task is dropped or aborted.
pub async fn run(gateway: Arc<Gateway>, config: JanitorConfig, totals: Arc<JanitorTotals>) {
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
                totals.add(r);
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
