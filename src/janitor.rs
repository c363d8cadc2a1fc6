//! The janitor: a background task that removes what abandoned sessions
//! staged (multipart uploads, which S3 bills until aborted; tail objects;
//! temp files) once it is older than `janitor.ttl` and no live session owns
//! it. It logs what it removed and counts it in
//! `sluice_janitor_removed_total{kind}`.

use std::sync::Arc;

use crate::backend::Removed;
use crate::config::JanitorConfig;
use crate::error::Result;
use crate::gateway::Gateway;
use crate::location::Location;
use crate::state::now_ms;

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
        match sweep(&gateway, config.ttl).await {
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

/// Removes staging that nothing can use any more: every staging record
/// untouched for `ttl` whose session is not live here, with what it
/// staged (temp file, or upload and tail objects), and old session
/// records. Returns what it removed.
pub async fn sweep(gateway: &Gateway, ttl: std::time::Duration) -> Result<Removed> {
    let before = now_ms().saturating_sub(ttl.as_millis() as u64);
    let mut removed = Removed::default();
    let mut failed = 0;
    for (id, record) in gateway.state().stagings_before(before)? {
        let _staging = gateway.lock_staging(&id).await;
        if gateway.is_live(&record.owner_session) {
            continue;
        }
        // Re-read under the lock: a Recover may have just taken it.
        match gateway.state().staging(&id)? {
            Some(current) if current.updated_ms < before => {}
            _ => continue,
        }
        let target = match Location::resolve(&record.target, gateway.default_scheme()) {
            Ok(t) => t,
            Err(_) => {
                gateway.state().remove_staging(&id)?;
                continue;
            }
        };
        let Ok(backend) = gateway.registry().get(&target.scheme) else {
            // Its scheme is no longer configured: keep the record, so
            // the staging is removed once the scheme is back.
            continue;
        };
        let result = if record.committed_size.is_some() {
            // Published: only tails that the commit failed to remove.
            backend
                .stager
                .remove_artefacts(&target, &id, &record.tails)
                .await
                .map(|tails| Removed {
                    tails,
                    ..Removed::default()
                })
        } else {
            backend
                .stager
                .remove_staging(&target, &id, &record.location, &record.tails)
                .await
        };
        match result {
            Ok(r) => {
                removed += r;
                gateway.state().remove_staging(&id)?;
            }
            Err(e) => {
                failed += 1;
                tracing::warn!(target = %target, error = %e, "janitor could not remove a staging; will try again")
            }
        }
    }
    gateway.metrics().janitor_pending.set(failed);
    for (id, _) in gateway.state().sessions_before(before)? {
        if !gateway.is_live(&id) {
            gateway.state().remove_session(&id)?;
        }
    }
    gateway.state().flush().await?;
    Ok(removed)
}
