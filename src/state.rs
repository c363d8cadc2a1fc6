//! What must outlive a gateway restart on this replica, kept in sled.
//!
//! Two trees: `sessions` (one `SessionRecord` per session, so a call naming a
//! session from before a restart gets a precise answer) and `stagings` (one
//! `StagingRecord` per temp file or upload: recovery generations, the owning
//! session, and the committed size once published, so a repeated commit is
//! recognised). Records are protobuf, like handles, so they keep decoding
//! after upgrades. Callers `flush` before acknowledging a change a crash must
//! not lose: sled otherwise batches writes on a timer.
//!
//! Flushes are a group commit: at most one runs at a time (a blocking
//! `Db::flush` on the blocking pool), and every caller that arrived while it
//! ran is covered by the next one. sled 0.34's `flush_async` must never be
//! called concurrently: it deadlocks (spacejam/sled#1308), and eight
//! persisting writers used to wedge the gateway for good that way.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;

use crate::error::{Error, Result};
use crate::location::Location;
use crate::proto::{SessionRecord, SessionStatus, StagingRecord};

/// sled's page cache at most (its default, 1 GiB, let a soak's RSS climb
/// by 150 MiB in four minutes of persists).
const CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// Key in sled's default tree, present while a gateway has the state open:
/// finding it at start means the last one did not close it (killed, or the
/// machine stopped), so sled rebuilt its state from its log.
const OPEN_MARK: &str = "open-since";

/// The sled database and its trees.
#[derive(Clone)]
pub struct StateStore {
    db: sled::Db,
    sessions: sled::Tree,
    stagings: sled::Tree,
    group: Arc<GroupCommit>,
    /// The last failure of sled, until a probe write succeeds again: while
    /// set, the gateway reports itself not ready.
    failure: Arc<std::sync::Mutex<Option<String>>>,
    /// Whether the last gateway on this state stopped without closing it.
    unclean: bool,
}

/// Tickets of the group commit: a caller takes the next request number
/// after its writes; a flush that read `requested` before it started covers
/// every request up to that number.
#[derive(Default)]
struct GroupCommit {
    requested: AtomicU64,
    flushed: AtomicU64,
    /// Held while a flush runs, by the blocking task itself, so a caller
    /// that gives up waiting never lets a second flush start beside it;
    /// tokio's mutex queues waiters in order.
    running: Arc<tokio::sync::Mutex<()>>,
    /// Flushes run (not requests), for tests and the bench.
    flushes: AtomicU64,
}

impl StateStore {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: &Path) -> Result<StateStore> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(|e| {
            let hint = match &e {
                sled::Error::Io(io) if io.kind() == std::io::ErrorKind::PermissionDenied => {
                    "the data dir is not writable by this user: fix its owner or mode, or pass another --data-dir"
                }
                sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
                    "another sluice is using this data dir: stop it, or give each gateway its own --data-dir"
                }
                _ => "check that the data dir is a local, writable directory with free space",
            };
            Error::Internal(format!(
                "cannot open the state store in {}: {e}; {hint}",
                dir.display()
            ))
        })?;
        let unclean = db.was_recovered() && db.get(OPEN_MARK)?.is_some();
        db.insert(OPEN_MARK, &now_ms().to_be_bytes()[..])?;
        db.flush()?;
        Ok(StateStore {
            sessions: db.open_tree("sessions")?,
            stagings: db.open_tree("stagings")?,
            db,
            group: Arc::default(),
            failure: Arc::default(),
            unclean,
        })
    }

    /// Whether the gateway that had this state before did not close it
    /// (killed with -9, crashed, or the machine lost power). sled then
    /// rebuilt its trees from its log on open: everything flushed before
    /// is there, and what was written but never flushed (nothing that was
    /// acknowledged) is gone. sled 0.34 does not report that it repaired
    /// anything, so this mark is the gateway's own.
    pub fn opened_after_crash(&self) -> bool {
        self.unclean
    }

    /// Flushes and marks the state closed cleanly (at shutdown).
    pub async fn close(&self) -> Result<()> {
        let removed = self.db.remove(OPEN_MARK);
        self.noted(removed)?;
        self.flush().await
    }

    /// Whether any session or staging is on record.
    pub fn has_records(&self) -> bool {
        !self.sessions.is_empty() || !self.stagings.is_empty()
    }

    /// Passes a sled result through, remembering a failure.
    fn noted<T>(&self, result: sled::Result<T>) -> Result<T> {
        result.map_err(|e| {
            *self.failure.lock().unwrap() = Some(e.to_string());
            Error::from(e)
        })
    }

    /// Why the state store is failing, if it is.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().unwrap().clone()
    }

    /// Writes and flushes a probe record; a success clears the failure.
    pub async fn probe(&self) -> Result<()> {
        let written = self.db.insert("probe", &now_ms().to_be_bytes()[..]);
        self.noted(written)?;
        self.flush().await?;
        *self.failure.lock().unwrap() = None;
        Ok(())
    }

    pub fn session(&self, id: &str) -> Result<Option<SessionRecord>> {
        get(&self.sessions, id)
    }

    pub fn put_session(&self, id: &str, record: &SessionRecord) -> Result<()> {
        let inserted = self.sessions.insert(id, record.encode_to_vec());
        self.noted(inserted).map(drop)
    }

    pub fn staging(&self, id: &str) -> Result<Option<StagingRecord>> {
        get(&self.stagings, id)
    }

    pub fn put_staging(&self, id: &str, record: &StagingRecord) -> Result<()> {
        let inserted = self.stagings.insert(id, record.encode_to_vec());
        self.noted(inserted).map(drop)
    }

    /// Staging records last changed before `before_ms`.
    pub fn stagings_before(&self, before_ms: u64) -> Result<Vec<(String, StagingRecord)>> {
        older(&self.stagings, before_ms, |r: &StagingRecord| r.updated_ms)
    }

    /// Session records last changed before `before_ms`.
    pub fn sessions_before(&self, before_ms: u64) -> Result<Vec<(String, SessionRecord)>> {
        older(&self.sessions, before_ms, |r: &SessionRecord| r.updated_ms)
    }

    pub fn remove_staging(&self, id: &str) -> Result<()> {
        let removed = self.stagings.remove(id);
        self.noted(removed).map(drop)
    }

    pub fn remove_session(&self, id: &str) -> Result<()> {
        let removed = self.sessions.remove(id);
        self.noted(removed).map(drop)
    }

    /// Makes every change so far durable. Concurrent callers share flushes
    /// (see the module doc).
    pub async fn flush(&self) -> Result<()> {
        let group = &self.group;
        let ticket = group.requested.fetch_add(1, Ordering::SeqCst) + 1;
        loop {
            if group.flushed.load(Ordering::SeqCst) >= ticket {
                return Ok(());
            }
            let running = group.running.clone().lock_owned().await;
            if group.flushed.load(Ordering::SeqCst) >= ticket {
                return Ok(());
            }
            let covers = group.requested.load(Ordering::SeqCst);
            let (db, group, failure) = (self.db.clone(), group.clone(), self.failure.clone());
            tokio::task::spawn_blocking(move || {
                let _running = running;
                if let Err(e) = db.flush() {
                    *failure.lock().unwrap() = Some(e.to_string());
                    return Err(Error::from(e));
                }
                group.flushes.fetch_add(1, Ordering::Relaxed);
                group.flushed.fetch_max(covers, Ordering::SeqCst);
                Ok::<_, Error>(())
            })
            .await
            .map_err(|e| Error::Internal(format!("the state flush task failed: {e}")))??;
        }
    }

    /// How many flushes ran since start (each covering one or more callers).
    pub fn flushes(&self) -> u64 {
        self.group.flushes.load(Ordering::Relaxed)
    }
}

fn get<M: Message + Default>(tree: &sled::Tree, id: &str) -> Result<Option<M>> {
    match tree.get(id)? {
        None => Ok(None),
        Some(bytes) => M::decode(bytes.as_ref())
            .map(Some)
            .map_err(|e| Error::Internal(format!("state record {id:?} does not decode: {e}"))),
    }
}

fn older<M: Message + Default>(
    tree: &sled::Tree,
    before_ms: u64,
    updated: impl Fn(&M) -> u64,
) -> Result<Vec<(String, M)>> {
    let mut out = Vec::new();
    for entry in tree.iter() {
        let (key, value) = entry?;
        let key = String::from_utf8_lossy(&key).into_owned();
        match M::decode(value.as_ref()) {
            Ok(record) if updated(&record) < before_ms => out.push((key, record)),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(record = %key, error = %e, "skipping a state record that does not decode")
            }
        }
    }
    Ok(out)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A staging's first record: `location` is what the janitor removes.
pub fn new_staging(target: &Location, location: String) -> StagingRecord {
    let now = now_ms();
    StagingRecord {
        target: target.to_string(),
        location,
        created_ms: now,
        updated_ms: now,
        ..Default::default()
    }
}

/// A session's record as of now.
pub fn session_record(
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A state closed at shutdown opens quietly; one left open (the
    /// process gone without closing it) is reported on the next open.
    #[tokio::test]
    async fn a_state_not_closed_is_reported_on_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateStore::open(dir.path()).unwrap();
        assert!(!state.opened_after_crash(), "a new state is not a crash");
        state.close().await.unwrap();
        drop(state);
        let state = reopen(dir.path()).await;
        assert!(!state.opened_after_crash(), "closed cleanly");
        state.put_session("s", &SessionRecord::default()).unwrap();
        state.flush().await.unwrap();
        drop(state);
        let state = reopen(dir.path()).await;
        assert!(state.opened_after_crash(), "never closed");
        assert!(state.session("s").unwrap().is_some());
    }

    /// Opens `dir` again in this process: sled's own threads may hold the
    /// dropped store's file lock for a moment (another process would get
    /// it once the first is gone).
    async fn reopen(dir: &Path) -> StateStore {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match StateStore::open(dir) {
                Ok(state) => return state,
                Err(e)
                    if std::time::Instant::now() < deadline && e.to_string().contains("lock") =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(e) => panic!("reopening the state: {e}"),
            }
        }
    }

    /// Many concurrent flushes all finish (sled 0.34's own flush_async
    /// deadlocks here), and they share flushes rather than run one each.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_flushes_finish_and_are_grouped() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateStore::open(dir.path()).unwrap();
        let mut tasks = Vec::new();
        for i in 0..64 {
            let state = state.clone();
            tasks.push(tokio::spawn(async move {
                for j in 0..20 {
                    state
                        .put_session(&format!("{i}-{j}"), &SessionRecord::default())
                        .unwrap();
                    state.flush().await.unwrap();
                }
            }));
        }
        let all = futures::future::join_all(tasks);
        tokio::time::timeout(std::time::Duration::from_secs(60), all)
            .await
            .expect("concurrent flushes wedged");
        assert!(state.flushes() > 0);
        assert!(
            state.flushes() < 64 * 20,
            "{} flushes for {} requests: nothing was grouped",
            state.flushes(),
            64 * 20
        );
        drop(state);
        let state = StateStore::open(dir.path()).unwrap();
        assert!(state.session("63-19").unwrap().is_some());
    }
}
