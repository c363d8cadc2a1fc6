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

mod entropy;
mod locks;
mod namespace;
mod recovery;
mod session;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use crate::auth::{Caller, SessionSlot};
use crate::backend::{BackendCapabilities, Registry, Served, Staging};
use crate::config::EntropyConfig;
use crate::error::{Error, Result};
use crate::handle::HandleKeys;
use crate::location::{DefaultScheme, Location};
use crate::metrics::Metrics;
use crate::state::StateStore;

use locks::{StagingGuard, StagingLocks};
use session::Session;

pub use namespace::{ListPage, Reading};
pub use recovery::{Committed, Recovered};
pub use session::{Issued, Opened, WRITE_HANDOVER, WriteGuard};

/// Fills in the current RPC span's target fields (see `edge::rpc_span`).
fn trace_target(target: &Location) {
    let span = tracing::Span::current();
    span.record("scheme", target.scheme.as_str());
    span.record("authority", target.authority.as_str());
}

/// The number of uploaded parts a handle lists, on the current RPC span.
fn trace_parts(staging: &Staging) {
    if let Staging::Multipart(m) = staging {
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

    /// Whether session `id` is live on this replica.
    pub(crate) fn is_live(&self, id: &str) -> bool {
        self.sessions.lock().unwrap().contains_key(id)
    }

    pub(crate) fn state(&self) -> &StateStore {
        &self.state
    }

    pub(crate) fn default_scheme(&self) -> &DefaultScheme {
        &self.default_scheme
    }

    /// Holds staging `id` against every other call on it until dropped.
    pub(crate) async fn lock_staging(&self, id: &str) -> StagingGuard<'_> {
        self.staging_locks.lock(id).await
    }

    /// Makes the records of a change to `target` durable before it is
    /// acknowledged; a no-op for schemes whose staged data does not survive
    /// a restart anyway (memory://), where an fsync per call would buy
    /// nothing.
    async fn flush_for(&self, target: &Location) -> Result<()> {
        match self.registry.get(&target.scheme) {
            Ok(backend) if !backend.stager.capabilities().survives_restart => Ok(()),
            _ => self.state.flush().await,
        }
    }

    /// Flushes the state store and marks it closed cleanly (at shutdown).
    pub async fn close_state(&self) -> Result<()> {
        self.state.close().await
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

    fn resolve(&self, path: &str) -> Result<(Location, Served)> {
        let location = Location::resolve(path, &self.default_scheme)?;
        refuse_staging_names(&location)?;
        let backend = self.registry.get(&location.scheme)?.clone();
        Ok((location, backend))
    }

    fn resolve_dir(&self, path: &str) -> Result<(Location, Served)> {
        let location = Location::resolve_dir(path, &self.default_scheme)?;
        refuse_staging_names(&location)?;
        let backend = self.registry.get(&location.scheme)?.clone();
        Ok((location, backend))
    }

    /// What the scheme of `path` promises.
    pub fn capabilities(&self, path: &str) -> Result<SchemeCapabilities> {
        let (location, backend) = self.resolve(path)?;
        Ok(SchemeCapabilities {
            backend: backend.stager.capabilities(),
            location,
        })
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
