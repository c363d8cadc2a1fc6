//! One async lock per staging.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One async lock per staging id, made on demand and dropped when unused.
#[derive(Default)]
pub(super) struct StagingLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

pub(crate) struct StagingGuard<'a> {
    owner: &'a StagingLocks,
    id: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl StagingLocks {
    pub(super) async fn lock(&self, id: &str) -> StagingGuard<'_> {
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
