//! Sessions and their appends: Open, Write, Persist, CloseForCommit,
//! Abort, and how a session ended.

use std::sync::Arc;

use super::entropy::apply_entropy;
use super::{Gateway, GlobalSlot, trace_parts, trace_session, trace_target};
use crate::auth::{Caller, SessionSlot};
use crate::backend::{Rope, StagedWriter, Staging};
use crate::error::{Error, Result};
use crate::location::Location;
use crate::metrics::Metrics;
use crate::proto::{HandleBody, HandleKind, SessionStatus, StagingRecord};
use crate::state::{new_staging, session_record};

/// From this size on, a message's checked CRC32C is combined into the
/// file's rather than computed again over its bytes (combining costs a few
/// hundred instructions whatever the size, `crate::crc`; a pass about half
/// an instruction per byte).
const COMBINE_FROM: usize = 4 * 1024;

/// How long a Write call waits for the session's previous Write call to end
/// before it is refused with `ABORTED`.
pub const WRITE_HANDOVER: std::time::Duration = std::time::Duration::from_secs(3);

/// A session Open started.
#[derive(Debug, Clone)]
pub struct Opened {
    pub session_id: String,
    /// The target after the default scheme and entropy were applied.
    pub target: Location,
}

/// A handle Persist or CloseForCommit issued, and the position it covers.
#[derive(Debug, Clone)]
pub struct Issued {
    pub handle: Vec<u8>,
    pub position: u64,
    /// CRC32C of the `position` bytes the handle covers.
    pub crc32c: u32,
}

/// Where a new session starts.
pub(super) struct Start {
    pub position: u64,
    pub crc: u32,
    pub epoch: u64,
    /// The generation's random id (see `recovery::new_generation`).
    pub generation: u64,
    /// A handle names the staging already (a recovered session).
    pub handle_issued: bool,
}

/// A live write session.
pub(super) struct Session {
    pub(super) id: String,
    pub(super) target: Location,
    pub(super) staging_id: String,
    /// The principal that opened or recovered it; empty without auth.
    pub(super) principal: String,
    /// Its places in the principal's and the gateway's session caps, given
    /// back on drop.
    pub(super) _slot: (SessionSlot, GlobalSlot),
    /// Held by the Write call applying messages (one at a time).
    pub(super) writing: Arc<tokio::sync::Semaphore>,
    pub(super) inner: tokio::sync::Mutex<SessionInner>,
    /// `sluice_bytes_written_total` of the session's scheme, looked up once
    /// rather than on every Write message.
    pub(super) bytes_written: prometheus_client::metrics::counter::Counter,
}

pub(super) struct SessionInner {
    /// `None` once the session ended.
    pub(super) writer: Option<Box<dyn StagedWriter>>,
    pub(super) ended: Option<Ended>,
    pub(super) position: u64,
    pub(super) crc: u32,
    pub(super) epoch: u64,
    pub(super) generation: u64,
    /// A handle names this staging: aborting must keep it.
    pub(super) handle_issued: bool,
}

pub(super) const RECLAIMED: &str = "closed due to inactivity timeout (its stream slot was reclaimed); recover from your last handle";

/// How a session ended; what its later calls are told.
#[derive(Debug, Clone)]
pub(super) enum Ended {
    Closed,
    Aborted,
    /// Fenced off by a Recover (naming the new session) or a Commit.
    Superseded(String),
    /// Its writer failed mid-operation.
    Failed(String),
    /// A stream limit took its slot after it made no progress.
    Reclaimed(String),
}

impl Ended {
    pub(super) fn error(&self, id: &str) -> Error {
        if let Ended::Reclaimed(why) = self {
            return Error::Reclaimed(format!("session {id} was {why}"));
        }
        Error::SessionEnded(match self {
            Ended::Closed => {
                format!("session {id} was closed for commit; commit its handle instead of writing")
            }
            Ended::Aborted => format!(
                "session {id} was aborted; recover from your last handle or open the file anew"
            ),
            Ended::Superseded(by) => format!(
                "session {id} was taken over by a Recover or Commit of its staged file{}; continue there",
                if by.is_empty() {
                    String::new()
                } else {
                    format!(" (session {by})")
                }
            ),
            Ended::Failed(why) => {
                format!("session {id} failed earlier ({why}); recover from your last handle")
            }
            Ended::Reclaimed(_) => unreachable!("answered above"),
        })
    }

    pub(super) fn status(&self) -> SessionStatus {
        match self {
            Ended::Closed => SessionStatus::Closed,
            Ended::Aborted | Ended::Failed(_) => SessionStatus::Aborted,
            Ended::Reclaimed(_) => SessionStatus::Reclaimed,
            Ended::Superseded(_) => SessionStatus::Superseded,
        }
    }
}

impl SessionInner {
    pub(super) fn writer(&mut self, id: &str) -> Result<&mut Box<dyn StagedWriter>> {
        if let Some(ended) = &self.ended {
            return Err(ended.error(id));
        }
        self.writer
            .as_mut()
            .ok_or_else(|| Error::Internal("session has no writer".into()))
    }

    /// Ends the session with `how`, dropping its writer.
    pub(super) fn end(&mut self, how: Ended) {
        self.writer = None;
        self.ended = Some(how);
    }

    /// Passes `result` through; a failure ends the session, since what the
    /// staging holds past the last handle is unknown after it.
    pub(super) fn checked<T>(&mut self, result: Result<T>) -> Result<T> {
        match &result {
            Err(Error::Reclaimed(why)) => self.end(Ended::Reclaimed(why.clone())),
            Err(e) => self.end(Ended::Failed(e.to_string())),
            Ok(_) => {}
        }
        result
    }
}

impl Gateway {
    /// Ends the session writing `staging` once a stream limit reclaimed
    /// its slot, freeing what its writer holds; its staged data stays
    /// recoverable. Returns whether it ended one.
    pub async fn end_reclaimed(&self, staging: &str) -> bool {
        let session = self
            .sessions
            .lock()
            .unwrap()
            .values()
            .find(|s| s.staging_id == staging)
            .cloned();
        let Some(session) = session else {
            return false; // ended meanwhile
        };
        let mut inner = session.inner.lock().await;
        if !inner.writer.as_ref().is_some_and(|w| w.reclaimed()) {
            return false; // a Write or Persist saw it first and ended it
        }
        inner.end(Ended::Reclaimed(RECLAIMED.into()));
        self.remove_session(&session.id);
        let _ = self.record_end(&session, &inner, &[]);
        true
    }

    /// Starts a session; returns its id and the resolved target.
    pub async fn open(&self, path: &str, inject_entropy: bool, caller: &Caller) -> Result<Opened> {
        let (target, backend) = self.resolve(path)?;
        let target = match self.entropy.get(&target.scheme) {
            Some(entropy) => apply_entropy(&target, entropy, inject_entropy)?,
            None => target,
        };
        caller.check(&target)?;
        backend.stager.check_target(&target)?;
        let slot = self.take_slots(caller)?;
        let mut writer = backend.stager.open(&target).await?;
        let id = uuid::Uuid::new_v4().to_string();
        let generation = super::recovery::new_generation()?;
        self.state.put_staging(
            writer.staging_id(),
            &StagingRecord {
                owner_session: id.clone(),
                opened_generation: generation,
                ..new_staging(&target, writer.location().to_string())
            },
        )?;
        self.state.put_session(
            &id,
            &session_record(
                &target,
                writer.staging_id(),
                SessionStatus::Open,
                0,
                caller.name(),
            ),
        )?;
        // The staging must be on record before it is created (or, for an
        // upload the store names, before a byte lands in it), so that
        // nothing is ever left behind unknown.
        self.flush_for(&target).await?;
        if let Err(e) = writer.create().await {
            self.state.remove_session(&id)?;
            self.state.remove_staging(writer.staging_id())?;
            return Err(e);
        }
        let start = Start {
            position: 0,
            crc: 0,
            epoch: 0,
            generation,
            handle_issued: false,
        };
        let session = self.insert_session(id.clone(), target.clone(), writer, start, caller, slot);
        trace_target(&target);
        trace_session(&id, 0);
        tracing::info!(session = %id, target = %target, staging = %session.staging_id, "opened");
        Ok(Opened {
            session_id: id,
            target,
        })
    }

    /// Makes a session live, from `start`.
    pub(super) fn insert_session(
        &self,
        id: String,
        target: Location,
        writer: Box<dyn StagedWriter>,
        start: Start,
        caller: &Caller,
        slot: (SessionSlot, GlobalSlot),
    ) -> Arc<Session> {
        let session = Arc::new(Session {
            staging_id: writer.staging_id().to_string(),
            principal: caller.name().to_string(),
            _slot: slot,
            id: id.clone(),
            bytes_written: self
                .metrics
                .bytes_written
                .get_or_create(&Metrics::scheme(&target.scheme))
                .clone(),
            target,
            writing: Arc::new(tokio::sync::Semaphore::new(1)),
            inner: tokio::sync::Mutex::new(SessionInner {
                writer: Some(writer),
                ended: None,
                position: start.position,
                crc: start.crc,
                epoch: start.epoch,
                generation: start.generation,
                handle_issued: start.handle_issued,
            }),
        });
        self.sessions.lock().unwrap().insert(id, session.clone());
        self.metrics
            .sessions_open
            .get_or_create(&Metrics::scheme(&session.target.scheme))
            .inc();
        session
    }

    /// The live session `id`, or an error that says what became of it.
    /// Another principal's session is refused.
    pub(super) fn live(&self, id: &str, caller: &Caller) -> Result<Arc<Session>> {
        if id.is_empty() {
            return Err(Error::InvalidArgument(
                "session_id is empty: pass the id Open or Recover returned".into(),
            ));
        }
        let live = self.sessions.lock().unwrap().get(id).cloned();
        if let Some(s) = live {
            caller.check_owner(&s.principal, &format!("session {id}"))?;
            return Ok(s);
        }
        let record = self.state.session(id)?;
        if let Some(r) = &record {
            caller.check_owner(&r.principal, &format!("session {id}"))?;
        }
        let ended = match record {
            None => {
                return Err(Error::SessionNotFound(format!(
                    "unknown session {id:?}: open one with Open, or recover one with Recover"
                )));
            }
            Some(r) => match r.status() {
                SessionStatus::Closed => Ended::Closed,
                SessionStatus::Aborted => Ended::Aborted,
                SessionStatus::Superseded => Ended::Superseded(r.superseded_by),
                SessionStatus::Reclaimed => Ended::Reclaimed(RECLAIMED.into()),
                _ => {
                    return Err(Error::SessionNotFound(format!(
                        "session {id} was lost when the gateway restarted; recover from your last handle"
                    )));
                }
            },
        };
        Err(ended.error(id))
    }

    /// Forgets a live session; returns it when it was live.
    pub(super) fn remove_session(&self, id: &str) -> Option<Arc<Session>> {
        let removed = self.sessions.lock().unwrap().remove(id);
        if let Some(session) = &removed {
            self.metrics
                .sessions_open
                .get_or_create(&Metrics::scheme(&session.target.scheme))
                .dec();
        }
        removed
    }

    /// Claims the session for one Write call. A call that finds another
    /// one still applying messages waits up to [`WRITE_HANDOVER`] for it to
    /// end: a client that resends after its connection was cut often
    /// arrives before the gateway has seen the cut. Past that it is refused.
    pub async fn begin_write(&self, session_id: &str, caller: &Caller) -> Result<WriteGuard> {
        let session = self.live(session_id, caller)?;
        let claim = session.writing.clone().acquire_owned();
        let permit = match tokio::time::timeout(WRITE_HANDOVER, claim).await {
            Ok(Ok(permit)) => permit,
            _ => {
                return Err(Error::Aborted(format!(
                    "another Write call is in progress on session {session_id} and did not end within {}s; wait for it to finish, then continue from the position it acknowledged",
                    WRITE_HANDOVER.as_secs()
                )));
            }
        };
        // The session may have ended while this call waited.
        let session = self.live(session_id, caller)?;
        trace_target(&session.target);
        tracing::Span::current().record("session", session_id);
        Ok(WriteGuard {
            session,
            _claim: permit,
        })
    }

    /// Makes the session's bytes durable and returns a resume handle.
    pub async fn persist(&self, session_id: &str, caller: &Caller) -> Result<Issued> {
        let started = std::time::Instant::now();
        let session = self.live(session_id, caller)?;
        let _staging = self.staging_locks.lock(&session.staging_id).await;
        let mut inner = session.inner.lock().await;
        let staging = inner.writer(&session.id)?.persist().await;
        let staging = inner.checked(staging)?;
        inner.handle_issued = true;
        trace_target(&session.target);
        trace_session(&session.id, inner.position);
        trace_parts(&staging);
        if let Staging::Multipart(m) = &staging
            && let Some(tail) = &m.tail
        {
            self.update_staging(&session.staging_id, &session.target, |r| {
                r.tails.push(tail.path.clone())
            })?;
        }
        let body = handle_body(&session, &inner, HandleKind::Resume, staging);
        self.state.put_session(
            &session.id,
            &session_record(
                &session.target,
                &session.staging_id,
                SessionStatus::Open,
                inner.position,
                &session.principal,
            ),
        )?;
        self.flush_for(&session.target).await?;
        self.metrics
            .persist_seconds
            .get_or_create(&Metrics::scheme(&session.target.scheme))
            .observe(started.elapsed().as_secs_f64());
        Ok(Issued {
            handle: self.keys.seal(&body),
            position: inner.position,
            crc32c: inner.crc,
        })
    }

    /// Makes everything durable, ends the session, returns a commit handle.
    /// A retry of a CloseForCommit that succeeded gets the same handle: the
    /// first answer may have been lost with the connection.
    pub async fn close_for_commit(&self, session_id: &str, caller: &Caller) -> Result<Issued> {
        // `close_live` checked the owner of the record read here.
        match self.close_live(session_id, caller).await {
            Err(e @ (Error::SessionEnded(_) | Error::FailedPrecondition(_))) => {
                match self.state.session(session_id)? {
                    Some(r)
                        if r.status() == SessionStatus::Closed && !r.commit_handle.is_empty() =>
                    {
                        Ok(Issued {
                            crc32c: self.keys.open(&r.commit_handle)?.crc32c,
                            handle: r.commit_handle,
                            position: r.persisted_position,
                        })
                    }
                    _ => Err(e),
                }
            }
            closed => closed,
        }
    }

    async fn close_live(&self, session_id: &str, caller: &Caller) -> Result<Issued> {
        let session = self.live(session_id, caller)?;
        let _staging = self.staging_locks.lock(&session.staging_id).await;
        let mut inner = session.inner.lock().await;
        let staging = inner.writer(&session.id)?.close_for_commit().await;
        let staging = inner.checked(staging)?;
        inner.end(Ended::Closed);
        inner.handle_issued = true;
        trace_target(&session.target);
        trace_session(&session.id, inner.position);
        trace_parts(&staging);
        let body = handle_body(&session, &inner, HandleKind::Commit, staging);
        self.update_staging(&session.staging_id, &session.target, |r| {
            r.owner_session.clear()
        })?;
        let handle = self.keys.seal(&body);
        self.record_end(&session, &inner, &handle)?;
        self.flush_for(&session.target).await?;
        self.remove_session(&session.id);
        tracing::info!(session = %session.id, target = %session.target, size = inner.position, "closed for commit");
        Ok(Issued {
            handle,
            position: inner.position,
            crc32c: inner.crc,
        })
    }

    /// Disposes of a session. Staged data that a handle names is kept (it
    /// can still be recovered or committed); otherwise it is removed.
    pub async fn abort(&self, session_id: &str, caller: &Caller) -> Result<()> {
        let live = self.sessions.lock().unwrap().get(session_id).cloned();
        let Some(session) = live else {
            // Aborting a session that already ended (or died with a restart)
            // is a no-op, as Flink's close() is; an id never seen is not,
            // nor another principal's.
            return match self.live(session_id, caller) {
                Err(e @ Error::PermissionDenied(_)) => Err(e),
                Err(Error::SessionNotFound(_)) if self.state.session(session_id)?.is_none() => {
                    self.live(session_id, caller).map(drop)
                }
                _ => Ok(()),
            };
        };
        caller.check_owner(&session.principal, &format!("session {session_id}"))?;
        let _staging = self.staging_locks.lock(&session.staging_id).await;
        let mut inner = session.inner.lock().await;
        let writer = inner.writer.take();
        inner.end(Ended::Aborted);
        self.remove_session(&session.id);
        self.update_staging(&session.staging_id, &session.target, |r| {
            r.owner_session.clear()
        })?;
        self.record_end(&session, &inner, &[])?;
        if let Some(writer) = writer
            && !inner.handle_issued
            && let Err(e) = writer.discard().await
        {
            tracing::warn!(session = %session.id, error = %e, "could not remove the staging of an aborted session; the janitor will");
        }
        tracing::info!(session = %session.id, target = %session.target, "aborted");
        Ok(())
    }

    /// Records how a session ended; `commit_handle` is empty unless closed.
    pub(super) fn record_end(
        &self,
        session: &Session,
        inner: &SessionInner,
        commit_handle: &[u8],
    ) -> Result<()> {
        let ended = inner.ended.as_ref().unwrap_or(&Ended::Aborted);
        let mut record = session_record(
            &session.target,
            &session.staging_id,
            ended.status(),
            inner.position,
            &session.principal,
        );
        if let Ended::Superseded(by) = ended {
            record.superseded_by = by.clone();
        }
        record.commit_handle = commit_handle.to_vec();
        self.state.put_session(&session.id, &record)
    }
}

pub(super) fn handle_body(
    session: &Session,
    inner: &SessionInner,
    kind: HandleKind,
    staging: Staging,
) -> HandleBody {
    HandleBody {
        kind: kind as i32,
        target: session.target.to_string(),
        position: inner.position,
        crc32c: inner.crc,
        staging_id: session.staging_id.clone(),
        epoch: inner.epoch,
        generation: inner.generation,
        session_id: session.id.clone(),
        principal: session.principal.clone(),
        staging: Some(staging.into()),
    }
}

/// One Write call's claim on a session; released when dropped.
pub struct WriteGuard {
    session: Arc<Session>,
    _claim: tokio::sync::OwnedSemaphorePermit,
}

impl WriteGuard {
    /// Applies one message: `data` starts at `offset` in the file. Returns
    /// the position after it (DESIGN.md 1.2 for overlaps and gaps).
    /// `crc32c` is the message's own CRC32C when it carried one that was
    /// checked.
    pub async fn append(&self, offset: u64, data: Rope, crc32c: Option<u32>) -> Result<u64> {
        // Runs to completion even when the RPC is dropped (its connection
        // broke mid-call): a write cut off between the backend and the
        // position update would leave the two apart, and the client's retry
        // would then store its bytes twice. Found by the Python client's
        // cut-connection test under load.
        let session = self.session.clone();
        let span = tracing::Span::current();
        let task = async move { append_to(&session, offset, data, crc32c, span).await };
        tokio::spawn(tracing::Instrument::in_current_span(task))
            .await
            .map_err(|e| Error::Internal(format!("a write task failed: {e}")))?
    }
}

async fn append_to(
    session: &Session,
    offset: u64,
    data: Rope,
    message_crc: Option<u32>,
    span: tracing::Span,
) -> Result<u64> {
    {
        let mut inner = session.inner.lock().await;
        inner.writer(&session.id)?;
        let position = inner.position;
        let end = offset.checked_add(data.len() as u64).ok_or_else(|| {
            Error::OutOfRange(format!(
                "offset {offset} plus {} bytes overflows on session {}",
                data.len(),
                session.id
            ))
        })?;
        if offset > position {
            return Err(Error::OffsetGap {
                session: session.id.clone(),
                offset,
                position,
            });
        }
        if end <= position {
            return Ok(position);
        }
        // A retry that overlaps what was applied keeps only its new bytes,
        // copied: a slice would keep the whole message alive with them.
        let skip = (position - offset) as usize;
        let fresh = if skip == 0 {
            data
        } else {
            data.copy_after(skip)
        };
        let crc = match message_crc {
            // The message's own CRC32C, checked already, joins the file's
            // without a second pass over the bytes; for small messages
            // the pass costs less than the joining.
            Some(c) if skip == 0 && fresh.len() >= COMBINE_FROM => {
                crate::crc::combine(inner.crc, c, fresh.len() as u64)
            }
            _ => fresh.crc32c_append(inner.crc),
        };
        let len = fresh.len() as u64;
        let written = inner.writer(&session.id)?.write(fresh).await;
        inner.checked(written)?;
        inner.crc = crc;
        inner.position = end;
        span.record("offset", offset);
        span.record("position", end);
        session.bytes_written.inc_by(len);
        debug_assert_eq!(end, position + len);
        Ok(end)
    }
}
