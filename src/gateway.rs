//! The write protocol, independent of gRPC.
//!
//! [`Gateway`] holds the live sessions of this replica and carries out Open,
//! Write, Persist, Recover, CloseForCommit, Commit, Cleanup and Abort over
//! the backends. What is the same for every backend lives here: offsets
//! (idempotent writes), the CRC32C of what was written, handles, the sled
//! records, and *fencing*: a Recover or Commit of a staging takes it away
//! from any live session still writing it, whose later calls then fail.
//!
//! Lock order: a staging's lock, then a session's lock. Writes take only the
//! session's lock.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::auth::{Caller, SessionSlot};
use crate::backend::{
    Backend, BackendCapabilities, ByteStream, Entry, Registry, Removed, StagedWriter, Staging,
    settle_without_staging, staging_location,
};
use crate::config::EntropyConfig;
use crate::error::{Error, Result};
use crate::handle::HandleKeys;
use crate::location::{DefaultScheme, Location};
use crate::metrics::Metrics;
use crate::proto::{HandleBody, HandleKind, SessionRecord, SessionStatus, StagingRecord};
use crate::state::{StateStore, now_ms};

/// Fills in the current RPC span's target fields (see `edge::rpc_span`).
fn trace_target(target: &Location) {
    let span = tracing::Span::current();
    span.record("scheme", target.scheme.as_str());
    span.record("authority", target.authority.as_str());
}

/// The number of uploaded parts a handle lists, on the current RPC span.
fn trace_parts(body: &HandleBody) {
    if let Some(Staging::Multipart(m)) = &body.staging {
        tracing::Span::current().record("parts", m.parts.len());
    }
}

/// Fills in the current RPC span's session fields.
fn trace_session(session: &str, position: u64) {
    let span = tracing::Span::current();
    span.record("session", session);
    span.record("position", position);
}

/// A resolved path and what its scheme promises.
#[derive(Debug, Clone)]
pub struct SchemeCapabilities {
    pub location: Location,
    pub backend: BackendCapabilities,
}

/// Sessions, backends, keys and state of one gateway process.
pub struct Gateway {
    registry: Registry,
    default_scheme: DefaultScheme,
    entropy: BTreeMap<String, EntropyConfig>,
    keys: HandleKeys,
    state: StateStore,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    staging_locks: StagingLocks,
    metrics: Arc<Metrics>,
    /// Sessions open (by their `GlobalSlot`s) and the most there may be.
    open_sessions: Arc<std::sync::atomic::AtomicUsize>,
    max_sessions: usize,
}

/// One open session counted against the gateway's cap.
struct GlobalSlot(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for GlobalSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A live write session.
struct Session {
    id: String,
    target: Location,
    staging_id: String,
    /// The principal that opened or recovered it; empty without auth.
    principal: String,
    /// Its places in the principal's and the gateway's session caps, given
    /// back on drop.
    _slot: (SessionSlot, GlobalSlot),
    /// Set while a Write call is applying messages (one at a time).
    writing: AtomicBool,
    inner: tokio::sync::Mutex<SessionInner>,
    /// `sluice_bytes_written_total` of the session's scheme, looked up once
    /// rather than on every Write message.
    bytes_written: prometheus_client::metrics::counter::Counter,
}

struct SessionInner {
    /// `None` once the session ended.
    writer: Option<Box<dyn StagedWriter>>,
    ended: Option<Ended>,
    position: u64,
    crc: u32,
    epoch: u64,
    /// A handle names this staging: aborting must keep it.
    handle_issued: bool,
}

/// Entries a List answers with by default, and at most.
const DEFAULT_PAGE: usize = 1000;
const MAX_PAGE: usize = 10_000;

const RECLAIMED: &str = "closed due to inactivity timeout (its stream slot was reclaimed); recover from your last handle";

/// How a session ended; what its later calls are told.
#[derive(Debug, Clone)]
enum Ended {
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
    fn error(&self, id: &str) -> Error {
        if let Ended::Reclaimed(why) = self {
            return Error::Reclaimed(format!("session {id} was {why}"));
        }
        Error::FailedPrecondition(match self {
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

    fn status(&self) -> SessionStatus {
        match self {
            Ended::Closed => SessionStatus::Closed,
            Ended::Aborted | Ended::Failed(_) => SessionStatus::Aborted,
            Ended::Reclaimed(_) => SessionStatus::Reclaimed,
            Ended::Superseded(_) => SessionStatus::Superseded,
        }
    }
}

impl SessionInner {
    fn writer(&mut self, id: &str) -> Result<&mut Box<dyn StagedWriter>> {
        if let Some(ended) = &self.ended {
            return Err(ended.error(id));
        }
        self.writer
            .as_mut()
            .ok_or_else(|| Error::Internal("session has no writer".into()))
    }

    /// Ends the session with `how`, dropping its writer.
    fn end(&mut self, how: Ended) {
        self.writer = None;
        self.ended = Some(how);
    }

    /// Passes `result` through; a failure ends the session, since what the
    /// staging holds past the last handle is unknown after it.
    fn checked<T>(&mut self, result: Result<T>) -> Result<T> {
        match &result {
            Err(Error::Reclaimed(why)) => self.end(Ended::Reclaimed(why.clone())),
            Err(e) => self.end(Ended::Failed(e.to_string())),
            Ok(_) => {}
        }
        result
    }
}

impl Gateway {
    pub fn new(
        registry: Registry,
        default_scheme: DefaultScheme,
        entropy: BTreeMap<String, EntropyConfig>,
        keys: HandleKeys,
        state: StateStore,
        metrics: Arc<Metrics>,
    ) -> Gateway {
        let gateway = Gateway {
            registry,
            default_scheme,
            entropy,
            keys,
            state,
            sessions: Mutex::new(HashMap::new()),
            staging_locks: StagingLocks::default(),
            metrics,
            open_sessions: Arc::default(),
            max_sessions: crate::config::EdgeConfig::default().max_sessions,
        };
        // Every served scheme shows up at zero from the start, so dashboards
        // and alerts see the series before the first write.
        for scheme in gateway.registry.schemes() {
            let label = Metrics::scheme(scheme);
            let _ = gateway.metrics.sessions_open.get_or_create(&label);
            let _ = gateway.metrics.bytes_written.get_or_create(&label);
            let _ = gateway.metrics.bytes_read.get_or_create(&label);
        }
        gateway
    }

    /// Caps the sessions open at once (`sessions.max-open`).
    pub fn with_max_sessions(mut self, max: usize) -> Gateway {
        self.max_sessions = max;
        self
    }

    /// A place among the gateway's open sessions, then one of the caller's.
    fn take_slots(&self, caller: &Caller) -> Result<(SessionSlot, GlobalSlot)> {
        let max = self.max_sessions;
        let taken = self
            .open_sessions
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            });
        if taken.is_err() {
            return Err(Error::ResourceExhausted(format!(
                "the gateway has {max} write sessions open, its limit (sessions.max-open); close for commit or abort sessions, or retry later"
            )));
        }
        let global = GlobalSlot(self.open_sessions.clone());
        Ok((caller.take_session_slot()?, global))
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Number of live sessions.
    pub fn live_sessions(&self) -> usize {
        self.sessions.lock().unwrap().len()
    }

    /// Removes staging that nothing can use any more: every staging record
    /// untouched for `ttl` whose session is not live here, with what it
    /// staged (temp file, or upload and tail objects), and old session
    /// records. Returns what it removed.
    pub async fn sweep(&self, ttl: std::time::Duration) -> Result<Removed> {
        let before = now_ms().saturating_sub(ttl.as_millis() as u64);
        let mut removed = Removed::default();
        for (id, record) in self.state.stagings_before(before)? {
            let _staging = self.staging_locks.lock(&id).await;
            if self
                .sessions
                .lock()
                .unwrap()
                .contains_key(&record.owner_session)
            {
                continue;
            }
            // Re-read under the lock: a Recover may have just taken it.
            match self.state.staging(&id)? {
                Some(current) if current.updated_ms < before => {}
                _ => continue,
            }
            let target = match Location::resolve(&record.target, &self.default_scheme) {
                Ok(t) => t,
                Err(_) => {
                    self.state.remove_staging(&id)?;
                    continue;
                }
            };
            let Ok(backend) = self.registry.get(&target.scheme) else {
                // Its scheme is no longer configured: keep the record, so
                // the staging is removed once the scheme is back.
                continue;
            };
            let result = if record.committed_size.is_some() {
                // Published: only tails that the commit failed to remove.
                backend
                    .remove_artefacts(&target, &id, &record.tails)
                    .await
                    .map(|tails| Removed {
                        tails,
                        ..Removed::default()
                    })
            } else {
                backend
                    .remove_staging(&target, &id, &record.location, &record.tails)
                    .await
            };
            match result {
                Ok(r) => {
                    removed += r;
                    self.state.remove_staging(&id)?;
                }
                Err(e) => {
                    tracing::warn!(target = %target, error = %e, "janitor could not remove a staging; will try again")
                }
            }
        }
        for (id, _) in self.state.sessions_before(before)? {
            if !self.sessions.lock().unwrap().contains_key(&id) {
                self.state.remove_session(&id)?;
            }
        }
        self.state.flush().await?;
        Ok(removed)
    }

    /// Ends the sessions whose stream slot was reclaimed, freeing what their
    /// writers hold; their staged data stays recoverable. Returns how many.
    pub async fn end_reclaimed(&self) -> usize {
        let sessions: Vec<Arc<Session>> = self.sessions.lock().unwrap().values().cloned().collect();
        let mut ended = 0;
        for session in sessions {
            let Ok(mut inner) = session.inner.try_lock() else {
                continue; // busy, so not idle
            };
            if inner.writer.as_ref().is_some_and(|w| w.reclaimed()) {
                inner.end(Ended::Reclaimed(RECLAIMED.into()));
                self.remove_session(&session.id);
                let _ = self.record_end(&session, &inner, &[]);
                ended += 1;
            }
        }
        ended
    }

    /// Flushes the state store (at shutdown).
    /// Makes the records of a change to `target` durable before it is
    /// acknowledged; a no-op for schemes whose staged data does not survive
    /// a restart anyway (memory://), where an fsync per call would buy
    /// nothing.
    async fn flush_for(&self, target: &Location) -> Result<()> {
        match self.registry.get(&target.scheme) {
            Ok(backend) if !backend.capabilities().survives_restart => Ok(()),
            _ => self.state.flush().await,
        }
    }

    pub async fn flush(&self) -> Result<()> {
        self.state.flush().await
    }

    /// Why the state store is failing, if it is: after a probe that fails
    /// again (it clears the failure when sled works once more).
    pub async fn state_failure(&self) -> Option<String> {
        self.state.failure()?;
        match self.state.probe().await {
            Ok(()) => None,
            Err(e) => Some(e.to_string()),
        }
    }

    fn resolve(&self, path: &str) -> Result<(Location, Arc<dyn Backend>)> {
        let location = Location::resolve(path, &self.default_scheme)?;
        refuse_staging_names(&location)?;
        let backend = self.registry.get(&location.scheme)?.clone();
        Ok((location, backend))
    }

    fn resolve_dir(&self, path: &str) -> Result<(Location, Arc<dyn Backend>)> {
        let location = Location::resolve_dir(path, &self.default_scheme)?;
        refuse_staging_names(&location)?;
        let backend = self.registry.get(&location.scheme)?.clone();
        Ok((location, backend))
    }

    /// Refuses to `what` a path that holds a live session's target: the
    /// session's staged bytes (acknowledged by its Persists) would go with
    /// it.
    fn refuse_live_under(&self, path: &Location, what: &str) -> Result<()> {
        let sessions = self.sessions.lock().unwrap();
        let under = |target: &Location| {
            target.scheme == path.scheme
                && target.authority == path.authority
                && (path.path.is_empty()
                    || target.path == path.path
                    || target
                        .path
                        .strip_prefix(path.path.as_str())
                        .is_some_and(|rest| rest.starts_with('/')))
        };
        match sessions.values().find(|s| under(&s.target)) {
            Some(s) => Err(Error::FailedPrecondition(format!(
                "cannot {what} {path}: session {} is writing {} under it; close it for commit or abort it first",
                s.id, s.target
            ))),
            None => Ok(()),
        }
    }

    // ---- the read side ----

    /// Streams `length` bytes (0: to the end) of a file from `offset`.
    pub async fn read(
        &self,
        path: &str,
        offset: u64,
        length: u64,
        caller: &Caller,
    ) -> Result<(Location, ByteStream)> {
        let (location, backend) = self.resolve(path)?;
        caller.check(&location)?;
        let stream = backend
            .read(&location, offset, (length > 0).then_some(length))
            .await?;
        Ok((location, stream))
    }

    /// What is at `path`; `NotFound` when nothing is.
    pub async fn stat(&self, path: &str, caller: &Caller) -> Result<Entry> {
        let (location, backend) = self.resolve_dir(path)?;
        caller.check(&location)?;
        backend
            .stat(&location)
            .await?
            .ok_or_else(|| Error::NotFound(format!("{location} does not exist")))
    }

    pub async fn exists(&self, path: &str, caller: &Caller) -> Result<bool> {
        let (location, backend) = self.resolve_dir(path)?;
        caller.check(&location)?;
        Ok(backend.stat(&location).await?.is_some())
    }

    /// One page of the entries one level below a directory: at most
    /// `page_size` (0: 1000; at most 10,000) after the name `page_token`.
    /// Returns them and the next page's token (empty on the last page).
    pub async fn list(
        &self,
        path: &str,
        page_size: u32,
        page_token: &str,
        caller: &Caller,
    ) -> Result<(Vec<Entry>, String)> {
        let (location, backend) = self.resolve_dir(path)?;
        caller.check(&location)?;
        let limit = match page_size {
            0 => DEFAULT_PAGE,
            n => (n as usize).min(MAX_PAGE),
        };
        let page = crate::backend::Page {
            after: page_token.to_string(),
            limit,
        };
        let listing = backend.list(&location, &page).await?;
        let next = match listing.entries.last() {
            Some(last) if listing.more => last.location.file_name().to_string(),
            _ => String::new(),
        };
        Ok((listing.entries, next))
    }

    /// Removes a file, or a directory with `recursive`.
    pub async fn delete(&self, path: &str, recursive: bool, caller: &Caller) -> Result<bool> {
        let (location, backend) = self.resolve_dir(path)?;
        caller.check(&location)?;
        if location.path.is_empty() {
            return Err(Error::PermissionDenied(format!(
                "{location} is a whole bucket or root; sluice does not delete those"
            )));
        }
        self.refuse_live_under(&location, "delete")?;
        backend.delete(&location, recursive).await
    }

    pub async fn mkdirs(&self, path: &str, caller: &Caller) -> Result<()> {
        let (location, backend) = self.resolve_dir(path)?;
        caller.check(&location)?;
        backend.mkdirs(&location).await
    }

    /// Moves a file within one scheme; never replaces.
    pub async fn rename(&self, from: &str, to: &str, caller: &Caller) -> Result<()> {
        let (from, backend) = self.resolve(from)?;
        let to = Location::resolve(to, &self.default_scheme)?;
        caller.check(&from)?;
        caller.check(&to)?;
        if from.scheme != to.scheme {
            return Err(Error::InvalidArgument(format!(
                "cannot rename {from} to {to}: both must have the same scheme"
            )));
        }
        refuse_staging_names(&to)?;
        self.refuse_live_under(&from, "rename")?;
        backend.rename(&from, &to).await
    }

    /// What the scheme of `path` promises.
    pub fn capabilities(&self, path: &str) -> Result<SchemeCapabilities> {
        let (location, backend) = self.resolve(path)?;
        Ok(SchemeCapabilities {
            backend: backend.capabilities(),
            location,
        })
    }

    /// Starts a session; returns its id and the resolved target.
    pub async fn open(
        &self,
        path: &str,
        inject_entropy: bool,
        caller: &Caller,
    ) -> Result<(String, Location)> {
        let (target, backend) = self.resolve(path)?;
        let target = match self.entropy.get(&target.scheme) {
            Some(entropy) => apply_entropy(&target, entropy, inject_entropy)?,
            None => target,
        };
        caller.check(&target)?;
        backend.check_target(&target)?;
        let slot = self.take_slots(caller)?;
        let mut writer = backend.open(&target).await?;
        let id = uuid::Uuid::new_v4().to_string();
        self.state.put_staging(
            writer.staging_id(),
            &StagingRecord {
                owner_session: id.clone(),
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
        let session = self.insert_session(
            id.clone(),
            target.clone(),
            writer,
            (0, 0, 0),
            false,
            (caller, slot),
        );
        trace_target(&target);
        trace_session(&id, 0);
        tracing::info!(session = %id, target = %target, staging = %session.staging_id, "opened");
        Ok((id, target))
    }

    /// Starts from `(position, crc, epoch)`.
    fn insert_session(
        &self,
        id: String,
        target: Location,
        writer: Box<dyn StagedWriter>,
        (position, crc, epoch): (u64, u32, u64),
        handle_issued: bool,
        (caller, slot): (&Caller, (SessionSlot, GlobalSlot)),
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
            writing: AtomicBool::new(false),
            inner: tokio::sync::Mutex::new(SessionInner {
                writer: Some(writer),
                ended: None,
                position,
                crc,
                epoch,
                handle_issued,
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
    fn live(&self, id: &str, caller: &Caller) -> Result<Arc<Session>> {
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
    fn remove_session(&self, id: &str) -> Option<Arc<Session>> {
        let removed = self.sessions.lock().unwrap().remove(id);
        if let Some(session) = &removed {
            self.metrics
                .sessions_open
                .get_or_create(&Metrics::scheme(&session.target.scheme))
                .dec();
        }
        removed
    }

    /// Claims the session for one Write call; a concurrent call is refused.
    pub fn begin_write(&self, session_id: &str, caller: &Caller) -> Result<WriteGuard> {
        let session = self.live(session_id, caller)?;
        if session.writing.swap(true, Ordering::AcqRel) {
            return Err(Error::Aborted(format!(
                "another Write call is in progress on session {session_id}; wait for it to finish, then continue from the position it acknowledged"
            )));
        }
        trace_target(&session.target);
        tracing::Span::current().record("session", session_id);
        Ok(WriteGuard { session })
    }

    /// Makes the session's bytes durable and returns a resume handle.
    pub async fn persist(&self, session_id: &str, caller: &Caller) -> Result<(Vec<u8>, u64)> {
        let started = std::time::Instant::now();
        let session = self.live(session_id, caller)?;
        let _staging = self.staging_locks.lock(&session.staging_id).await;
        let mut inner = session.inner.lock().await;
        let staging = inner.writer(&session.id)?.persist().await;
        let staging = inner.checked(staging)?;
        inner.handle_issued = true;
        trace_target(&session.target);
        trace_session(&session.id, inner.position);
        let body = handle_body(&session, &inner, HandleKind::Resume, staging);
        trace_parts(&body);
        if let Some(crate::backend::Staging::Multipart(m)) = &body.staging
            && let Some(tail) = &m.tail
        {
            self.update_staging(&session.staging_id, &session.target, |r| {
                r.tails.push(tail.path.clone())
            })?;
        }
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
        Ok((self.keys.seal(&body), inner.position))
    }

    /// Makes everything durable, ends the session, returns a commit handle.
    /// A retry of a CloseForCommit that succeeded gets the same handle: the
    /// first answer may have been lost with the connection.
    pub async fn close_for_commit(
        &self,
        session_id: &str,
        caller: &Caller,
    ) -> Result<(Vec<u8>, u64)> {
        // `close_live` checked the owner of the record read here.
        match self.close_live(session_id, caller).await {
            Err(Error::FailedPrecondition(why)) => match self.state.session(session_id)? {
                Some(r) if r.status() == SessionStatus::Closed && !r.commit_handle.is_empty() => {
                    Ok((r.commit_handle, r.persisted_position))
                }
                _ => Err(Error::FailedPrecondition(why)),
            },
            closed => closed,
        }
    }

    async fn close_live(&self, session_id: &str, caller: &Caller) -> Result<(Vec<u8>, u64)> {
        let session = self.live(session_id, caller)?;
        let _staging = self.staging_locks.lock(&session.staging_id).await;
        let mut inner = session.inner.lock().await;
        let staging = inner.writer(&session.id)?.close_for_commit().await;
        let staging = inner.checked(staging)?;
        inner.end(Ended::Closed);
        inner.handle_issued = true;
        trace_target(&session.target);
        trace_session(&session.id, inner.position);
        let body = handle_body(&session, &inner, HandleKind::Commit, staging);
        trace_parts(&body);
        self.update_staging(&session.staging_id, &session.target, |r| {
            r.owner_session.clear()
        })?;
        let handle = self.keys.seal(&body);
        self.record_end(&session, &inner, &handle)?;
        self.flush_for(&session.target).await?;
        self.remove_session(&session.id);
        tracing::info!(session = %session.id, target = %session.target, size = inner.position, "closed for commit");
        Ok((handle, inner.position))
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

    /// Reopens a resume handle's staging at its position as a new session.
    pub async fn recover(&self, handle: &[u8], caller: &Caller) -> Result<(String, u64, Location)> {
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
        let (target, backend) = self.resolve(&body.target)?;
        caller.check(&target)?;
        let _staging = self.staging_locks.lock(&body.staging_id).await;
        let mut record = self
            .state
            .staging(&body.staging_id)?
            .unwrap_or_else(|| StagingRecord {
                epoch: body.epoch,
                ..new_staging(&target, staging_location(&body))
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
        let writer = backend.recover(&target, &body).await?;
        record.epoch = record.epoch.max(body.epoch) + 1;
        // Pad for generations this replica never saw (another replica's).
        while (record.recovered_at.len() as u64) < record.epoch - 1 {
            record.recovered_at.push(u64::MAX);
        }
        record.recovered_at.push(body.position);
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
        self.insert_session(
            id.clone(),
            target.clone(),
            writer,
            (body.position, body.crc32c, record.epoch),
            true,
            (caller, slot),
        );
        tracing::info!(session = %id, target = %target, position = body.position, "recovered");
        Ok((id, body.position, target))
    }

    /// Publishes what a commit or resume handle names.
    pub async fn commit(
        &self,
        handle: &[u8],
        after_recovery: bool,
        caller: &Caller,
    ) -> Result<(Location, u64)> {
        let started = std::time::Instant::now();
        let body = self.keys.open(handle)?;
        if body.kind() == HandleKind::Unspecified {
            return Err(invalid_kind());
        }
        caller.check_owner(&body.principal, "this handle")?;
        let (target, backend) = self.resolve(&body.target)?;
        caller.check(&target)?;
        trace_target(&target);
        trace_session(&body.session_id, body.position);
        trace_parts(&body);
        let _staging = self.staging_locks.lock(&body.staging_id).await;
        let mut record = self.state.staging(&body.staging_id)?;
        if record.as_ref().is_some_and(|r| r.committed_size.is_some()) {
            // This replica published this staging already: its upload or
            // temp file is consumed, so only the target can answer.
            let size = backend.target_size(&target).await?;
            let size = settle_without_staging(&target, size, body.position, after_recovery)?;
            return Ok((target, size));
        }
        if let Some(record) = record.as_mut() {
            check_not_cut_back(record, &body, &target, "commit")?;
            self.fence(record, "").await?;
        }
        let size = backend.commit(&target, &body, after_recovery).await?;
        let mut record = record.unwrap_or_else(|| new_staging(&target, staging_location(&body)));
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
        Ok((target, size))
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
        let _staging = self.staging_locks.lock(&body.staging_id).await;
        backend.cleanup(&target, &body).await
    }

    /// Takes a staging away from the live session that still writes it,
    /// so that a recovered or committed file is never written twice.
    async fn fence(&self, record: &mut StagingRecord, by: &str) -> Result<()> {
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

    /// Records in sled how a session ended.
    /// Records how a session ended; `commit_handle` is empty unless closed.
    fn record_end(
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

    fn update_staging(
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

/// Staged files and tail objects are reachable only through the write
/// protocol: reading one would show uncommitted bytes, renaming one would
/// publish a file that keeps growing, deleting one would lose acknowledged
/// bytes. No namespace call, and no Open, may name one.
fn refuse_staging_names(location: &Location) -> Result<()> {
    match location
        .path
        .split('/')
        .find(|segment| crate::backend::is_staging_name(segment))
    {
        Some(name) => Err(Error::InvalidArgument(format!(
            "{location}: {name:?} is a name sluice gives its staged files; they are reached only through Recover and Commit of their handles"
        ))),
        None => Ok(()),
    }
}

/// Replaces the first occurrence of the entropy key in the path with random
/// `[0-9A-Za-z]` characters, or removes it (and the empty segment that
/// leaves) when no entropy is asked for, as Flink's `EntropyInjector` does.
fn apply_entropy(target: &Location, entropy: &EntropyConfig, inject: bool) -> Result<Location> {
    if !target.path.contains(&entropy.key) {
        return Ok(target.clone());
    }
    let replacement = if inject {
        random_alphanumeric(entropy.length)?
    } else {
        String::new()
    };
    let path = target.path.replacen(&entropy.key, &replacement, 1);
    let path: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if path.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "{target} is nothing but its entropy marker; name a file"
        )));
    }
    Ok(target.with_path(path.join("/")))
}

fn random_alphanumeric(n: usize) -> Result<String> {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(n);
    while out.len() < n {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| Error::Internal(format!("no randomness: {e}")))?;
        // 248 = 4 × 62: rejecting the rest keeps every character equally likely.
        out.extend(
            bytes
                .iter()
                .filter(|b| **b < 248)
                .map(|b| ALPHABET[(*b % 62) as usize] as char)
                .take(n - out.len()),
        );
    }
    Ok(out)
}

/// The smallest position any Recover after generation `epoch` moved the
/// staging to: handles of that generation beyond it lost their bytes.
fn recovered_floor(record: &StagingRecord, epoch: u64) -> Option<u64> {
    record
        .recovered_at
        .iter()
        .skip(epoch as usize)
        .copied()
        .min()
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
    match recovered_floor(record, body.epoch) {
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

fn handle_body(
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
        session_id: session.id.clone(),
        principal: session.principal.clone(),
        staging: Some(staging),
    }
}

/// A staging's first record: `location` is what the janitor removes.
fn new_staging(target: &Location, location: String) -> StagingRecord {
    let now = now_ms();
    StagingRecord {
        target: target.to_string(),
        location,
        created_ms: now,
        updated_ms: now,
        ..Default::default()
    }
}

fn session_record(
    target: &Location,
    staging_id: &str,
    status: SessionStatus,
    position: u64,
    principal: &str,
) -> SessionRecord {
    let now = now_ms();
    SessionRecord {
        target: target.to_string(),
        staging_id: staging_id.to_string(),
        status: status as i32,
        persisted_position: position,
        created_ms: now,
        updated_ms: now,
        superseded_by: String::new(),
        commit_handle: Vec::new(),
        principal: principal.to_string(),
    }
}

/// One Write call's claim on a session; released when dropped.
pub struct WriteGuard {
    session: Arc<Session>,
}

impl WriteGuard {
    /// Applies one message: `data` starts at `offset` in the file. Returns
    /// the position after it (DESIGN.md 1.2 for overlaps and gaps).
    pub async fn append(&self, offset: u64, data: Bytes) -> Result<u64> {
        // Runs to completion even when the RPC is dropped (its connection
        // broke mid-call): a write cut off between the backend and the
        // position update would leave the two apart, and the client's retry
        // would then store its bytes twice. Found by the Python client's
        // cut-connection test under load.
        let session = self.session.clone();
        let span = tracing::Span::current();
        let task = async move { append_to(&session, offset, data, span).await };
        tokio::spawn(tracing::Instrument::in_current_span(task))
            .await
            .map_err(|e| Error::Internal(format!("a write task failed: {e}")))?
    }
}

async fn append_to(
    session: &Session,
    offset: u64,
    data: Bytes,
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
            return Err(Error::OutOfRange(format!(
                "write at offset {offset} on session {} leaves a gap: the position is {position}; resend from {position}",
                session.id
            )));
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
            Bytes::copy_from_slice(&data[skip..])
        };
        let crc = crc32c::crc32c_append(inner.crc, &fresh);
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

impl Drop for WriteGuard {
    fn drop(&mut self) {
        self.session.writing.store(false, Ordering::Release);
    }
}

/// One async lock per staging id, made on demand and dropped when unused.
#[derive(Default)]
struct StagingLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

struct StagingGuard<'a> {
    owner: &'a StagingLocks,
    id: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl StagingLocks {
    async fn lock(&self, id: &str) -> StagingGuard<'_> {
        let lock = self
            .locks
            .lock()
            .unwrap()
            .entry(id.to_string())
            .or_default()
            .clone();
        StagingGuard {
            owner: self,
            id: id.to_string(),
            guard: Some(lock.lock_owned().await),
        }
    }
}

impl Drop for StagingGuard<'_> {
    fn drop(&mut self) {
        self.guard = None;
        let mut locks = self.owner.locks.lock().unwrap();
        if locks
            .get(&self.id)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            locks.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovered_floor_is_the_minimum_since_the_handles_generation() {
        let record = StagingRecord {
            epoch: 3,
            recovered_at: vec![20, 10, 30],
            ..Default::default()
        };
        assert_eq!(recovered_floor(&record, 0), Some(10));
        assert_eq!(recovered_floor(&record, 1), Some(10));
        assert_eq!(recovered_floor(&record, 2), Some(30));
        assert_eq!(recovered_floor(&record, 3), None);
    }
}
