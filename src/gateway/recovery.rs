//! Recover, Commit and Cleanup of handles, and fencing: a Recover or
//! Commit of a staging takes it away from any live session still writing it.

use super::session::{Ended, Start};
use super::{Gateway, trace_parts, trace_session, trace_target};
use crate::auth::Caller;
use crate::backend::settle_without_staging;
use crate::error::{Error, Result};
use crate::handle::resume_point;
use crate::location::Location;
use crate::metrics::Metrics;
use crate::proto::{HandleBody, HandleKind, Recovery, SessionStatus, StagingRecord};
use crate::state::{new_staging, now_ms, session_record};

/// The session a Recover started.
#[derive(Debug, Clone)]
pub struct Recovered {
    pub session_id: String,
    /// Where it resumes: the handle's position.
    pub position: u64,
    /// CRC32C of the bytes before `position`.
    pub crc32c: u32,
    pub target: Location,
}

/// A file a Commit published.
#[derive(Debug, Clone)]
pub struct Committed {
    pub target: Location,
    pub size: u64,
    /// CRC32C of the published bytes (the handle's).
    pub crc32c: u32,
}

impl Gateway {
    /// Reopens a resume handle's staging at its position as a new session.
    pub async fn recover(&self, handle: &[u8], caller: &Caller) -> Result<Recovered> {
        let body = self.keys.open(handle)?;
        caller.check_owner(&body.principal, "this handle")?;
        match body.kind() {
            HandleKind::Resume => {}
            HandleKind::Commit => {
                return Err(Error::FailedPrecondition(format!(
                    "this handle of {} came from CloseForCommit: commit it, it cannot be recovered",
                    body.target
                )));
            }
            HandleKind::Unspecified => return Err(invalid_kind()),
        }
        let point = resume_point(&body)?;
        let (target, backend) = self.resolve(&body.target)?;
        caller.check(&target)?;
        let _staging = self.staging_locks.lock(&body.staging_id).await;
        let mut record = self
            .state
            .staging(&body.staging_id)?
            .unwrap_or_else(|| StagingRecord {
                epoch: body.epoch,
                ..new_staging(&target, point.staging.location().to_string())
            });
        if let Some(size) = record.committed_size {
            return Err(Error::FailedPrecondition(format!(
                "cannot recover: {target} was already committed ({size} bytes) from this staged file"
            )));
        }
        check_not_cut_back(&record, &body, &target, "recover")?;
        let id = uuid::Uuid::new_v4().to_string();
        self.fence(&mut record, &id).await?;
        // After the fence: a session recovered from its own live handle
        // gives its place to the new one, even at the cap.
        let slot = self.take_slots(caller)?;
        let writer = backend.stager.recover(&target, &point).await?;
        let generation = new_generation()?;
        record.recoveries.push(Recovery {
            generation,
            position: body.position,
        });
        record.epoch = record.epoch.max(body.epoch) + 1;
        record.owner_session = id.clone();
        record.updated_ms = now_ms();
        self.state.put_staging(&body.staging_id, &record)?;
        self.state.put_session(
            &id,
            &session_record(
                &target,
                &body.staging_id,
                SessionStatus::Open,
                body.position,
                caller.name(),
            ),
        )?;
        self.flush_for(&target).await?;
        trace_target(&target);
        trace_session(&id, body.position);
        let start = Start {
            position: body.position,
            crc: body.crc32c,
            epoch: record.epoch,
            generation,
            handle_issued: true,
        };
        self.insert_session(id.clone(), target.clone(), writer, start, caller, slot);
        tracing::info!(session = %id, target = %target, position = body.position, "recovered");
        Ok(Recovered {
            session_id: id,
            position: body.position,
            crc32c: body.crc32c,
            target,
        })
    }

    /// Publishes what a commit or resume handle names.
    pub async fn commit(
        &self,
        handle: &[u8],
        after_recovery: bool,
        caller: &Caller,
    ) -> Result<Committed> {
        let started = std::time::Instant::now();
        let body = self.keys.open(handle)?;
        if body.kind() == HandleKind::Unspecified {
            return Err(invalid_kind());
        }
        caller.check_owner(&body.principal, "this handle")?;
        let point = resume_point(&body)?;
        let (target, backend) = self.resolve(&body.target)?;
        caller.check(&target)?;
        trace_target(&target);
        trace_session(&body.session_id, body.position);
        trace_parts(&point.staging);
        let _staging = self.staging_locks.lock(&body.staging_id).await;
        let mut record = self.state.staging(&body.staging_id)?;
        if record.as_ref().is_some_and(|r| r.committed_size.is_some()) {
            // This replica published this staging already: its upload or
            // temp file is consumed, so only the target can answer.
            let size = backend.stager.target_size(&target).await?;
            let size = settle_without_staging(&target, size, body.position, after_recovery)?;
            return Ok(Committed {
                target,
                size,
                crc32c: body.crc32c,
            });
        }
        if let Some(record) = record.as_mut() {
            check_not_cut_back(record, &body, &target, "commit")?;
            self.fence(record, "").await?;
        }
        let size = backend
            .stager
            .commit(&target, &point, after_recovery)
            .await?;
        let mut record =
            record.unwrap_or_else(|| new_staging(&target, point.staging.location().to_string()));
        record.committed_size = Some(size);
        record.updated_ms = now_ms();
        self.state.put_staging(&body.staging_id, &record)?;
        self.flush_for(&target).await?;
        // Every persist's tail is useless once the file is published (the
        // staging can no longer be recovered): remove them now rather than
        // leave them for Cleanup calls that may never come. That includes
        // tails this replica never recorded (another replica's, or one a
        // crash kept out of sled), which the backend finds by name.
        {
            match backend
                .stager
                .remove_artefacts(&target, &body.staging_id, &record.tails)
                .await
            {
                Ok(_) => {
                    record.tails.clear();
                    self.state.put_staging(&body.staging_id, &record)?;
                }
                Err(e) => {
                    tracing::warn!(target = %target, error = %e, "could not remove tail objects after commit; the janitor will")
                }
            }
        }
        self.metrics
            .commit_seconds
            .get_or_create(&Metrics::scheme(&target.scheme))
            .observe(started.elapsed().as_secs_f64());
        tracing::info!(target = %target, size, after_recovery, "committed");
        Ok(Committed {
            target,
            size,
            crc32c: body.crc32c,
        })
    }

    /// Removes what only this resume handle references.
    pub async fn cleanup(&self, handle: &[u8], caller: &Caller) -> Result<bool> {
        let body = self.keys.open(handle)?;
        if body.kind() == HandleKind::Unspecified {
            return Err(invalid_kind());
        }
        caller.check_owner(&body.principal, "this handle")?;
        let (target, backend) = self.resolve(&body.target)?;
        caller.check(&target)?;
        let point = resume_point(&body)?;
        let _staging = self.staging_locks.lock(&body.staging_id).await;
        backend.stager.cleanup(&target, &point).await
    }

    /// Takes a staging away from the live session that still writes it,
    /// so that a recovered or committed file is never written twice.
    pub(super) async fn fence(&self, record: &mut StagingRecord, by: &str) -> Result<()> {
        if record.owner_session.is_empty() {
            return Ok(());
        }
        let owner = std::mem::take(&mut record.owner_session);
        if let Some(session) = self.remove_session(&owner) {
            let mut inner = session.inner.lock().await;
            inner.end(Ended::Superseded(by.to_string()));
            self.record_end(&session, &inner, &[])?;
            tracing::info!(session = %owner, "superseded");
        }
        Ok(())
    }

    /// Changes a staging's record (made anew when there is none).
    pub(super) fn update_staging(
        &self,
        id: &str,
        target: &Location,
        change: impl FnOnce(&mut StagingRecord),
    ) -> Result<()> {
        let mut record = self
            .state
            .staging(id)?
            .unwrap_or_else(|| new_staging(target, String::new()));
        change(&mut record);
        record.updated_ms = now_ms();
        self.state.put_staging(id, &record)
    }
}

/// A random, non-zero id for a new session generation.
pub(super) fn new_generation() -> Result<u64> {
    loop {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(|e| Error::Internal(format!("no randomness: {e}")))?;
        let id = u64::from_le_bytes(bytes);
        if id != 0 {
            return Ok(id);
        }
    }
}

/// The smallest position a Recover done here after generation `generation`
/// was created moved the staging to: that generation's handles beyond it
/// lost their bytes. `None` when no such Recover happened here, or when the
/// generation was made elsewhere (another replica, or before generation ids
/// existed): this replica's own Recovers cannot be ordered against it, so
/// only what the store itself checks applies then (a `file://` resume
/// handle's CRC, an upload's part ids).
fn recovered_floor(record: &StagingRecord, generation: u64) -> Option<u64> {
    if generation == 0 {
        return None;
    }
    let later = if generation == record.opened_generation {
        &record.recoveries[..]
    } else {
        let k = record
            .recoveries
            .iter()
            .position(|r| r.generation == generation)?;
        &record.recoveries[k + 1..]
    };
    later.iter().map(|r| r.position).min()
}

/// A handle whose bytes a later Recover cut off (it moved the staging back
/// below the handle's position) names bytes that are gone: neither recover
/// nor commit may use it, or the result would match no handle.
fn check_not_cut_back(
    record: &StagingRecord,
    body: &HandleBody,
    target: &Location,
    what: &str,
) -> Result<()> {
    match recovered_floor(record, body.generation) {
        Some(floor) if body.position > floor => Err(Error::FailedPrecondition(format!(
            "cannot {what}: a later Recover moved the staged file of {target} back to {floor} bytes, discarding the {} this handle covers; use a handle from after that Recover",
            body.position
        ))),
        _ => Ok(()),
    }
}

fn invalid_kind() -> Error {
    Error::InvalidArgument("invalid handle: it has no kind (not issued by sluice)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recovery(generation: u64, position: u64) -> Recovery {
        Recovery {
            generation,
            position,
        }
    }

    #[test]
    fn recovered_floor_is_the_minimum_since_the_handles_generation() {
        let record = StagingRecord {
            opened_generation: 7,
            recoveries: vec![recovery(11, 20), recovery(12, 10), recovery(13, 30)],
            ..Default::default()
        };
        assert_eq!(recovered_floor(&record, 7), Some(10));
        assert_eq!(recovered_floor(&record, 11), Some(10));
        assert_eq!(recovered_floor(&record, 12), Some(30));
        assert_eq!(recovered_floor(&record, 13), None);
    }

    /// Two replicas count epochs apart, so a generation made on the other
    /// replica cannot be ordered against this one's Recovers: its handles
    /// are not refused here (they were, by epoch number, at 1,000 crashes
    /// with two replicas: a legitimate commit answered FAILED_PRECONDITION).
    #[test]
    fn generations_made_elsewhere_are_never_cut_back_here() {
        let record = StagingRecord {
            opened_generation: 7,
            recoveries: vec![recovery(11, 3800), recovery(12, 3800)],
            ..Default::default()
        };
        assert_eq!(recovered_floor(&record, 99), None);
        assert_eq!(
            recovered_floor(&record, 0),
            None,
            "handles from before generation ids"
        );
    }
}
