//! What must outlive a gateway restart on this replica, kept in sled.
//!
//! Two trees: `sessions` (one `SessionRecord` per session, so a call naming a
//! session from before a restart gets a precise answer) and `stagings` (one
//! `StagingRecord` per temp file or upload: recovery generations, the owning
//! session, and the committed size once published, so a repeated commit is
//! recognised). Records are protobuf, like handles, so they keep decoding
//! after upgrades. Callers `flush` before acknowledging a change a crash must
//! not lose: sled otherwise batches writes on a timer.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;

use crate::error::{Error, Result};
use crate::proto::{SessionRecord, StagingRecord};

/// The sled database and its trees.
#[derive(Clone)]
pub struct StateStore {
    db: sled::Db,
    sessions: sled::Tree,
    stagings: sled::Tree,
}

impl StateStore {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: &Path) -> Result<StateStore> {
        let db = sled::Config::new().path(dir).open().map_err(|e| {
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
        Ok(StateStore {
            sessions: db.open_tree("sessions")?,
            stagings: db.open_tree("stagings")?,
            db,
        })
    }

    pub fn session(&self, id: &str) -> Result<Option<SessionRecord>> {
        get(&self.sessions, id)
    }

    pub fn put_session(&self, id: &str, record: &SessionRecord) -> Result<()> {
        self.sessions.insert(id, record.encode_to_vec())?;
        Ok(())
    }

    pub fn staging(&self, id: &str) -> Result<Option<StagingRecord>> {
        get(&self.stagings, id)
    }

    pub fn put_staging(&self, id: &str, record: &StagingRecord) -> Result<()> {
        self.stagings.insert(id, record.encode_to_vec())?;
        Ok(())
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
        self.stagings.remove(id)?;
        Ok(())
    }

    pub fn remove_session(&self, id: &str) -> Result<()> {
        self.sessions.remove(id)?;
        Ok(())
    }

    /// Makes every change so far durable.
    pub async fn flush(&self) -> Result<()> {
        self.db.flush_async().await?;
        Ok(())
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
