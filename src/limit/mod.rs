//! Flink's connection limits (`fs.<scheme>.limit.*`) as a wrapper around a
//! backend, the way object_store's `LimitStore` wraps a store.
//!
//! Every (scheme, authority) has its own pool of stream slots: a write
//! session holds an output slot from `Open`/`Recover` until it is closed,
//! aborted or reclaimed; a `Read` holds an input slot while it streams.
//! Waiters are served strictly first come, first served. A stream that made
//! no progress for `stream-timeout` is reclaimed when a waiter needs its
//! slot, and by a background reaper; its session's next call is `ABORTED`,
//! and what it staged stays recoverable from its last handle.
//!
//! [`StreamLimitLayer`] is a `tower::Layer` over backends: a slot spans many
//! RPCs, so the limit wraps the backend rather than each request.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

mod layer;

pub use layer::{StreamLimitLayer, apply};

use crate::error::{Error, Result};

pub use crate::backend::StreamLimits;

fn describe(limits: &StreamLimits, scheme: &str) -> String {
    let n = |v: Option<usize>| v.map_or("unlimited".to_string(), |v| v.to_string());
    format!(
        "fs.{scheme}.limit.total={}, output={}, input={}",
        n(limits.total),
        n(limits.output),
        n(limits.input)
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Input,
    Output,
}

/// Progress of one open stream, shared by its slot and the pool.
#[derive(Debug)]
struct Activity {
    /// Milliseconds since the limiter started, at the last progress.
    last: AtomicU64,
    reclaimed: AtomicBool,
    /// The staging an output stream writes, told to the gateway when the
    /// stream is reclaimed.
    staging: std::sync::OnceLock<String>,
}

/// Where a limiter tells which stagings' streams it reclaimed, so that
/// the gateway ends their sessions and frees what their writers hold.
pub type ReclaimedTx = tokio::sync::mpsc::UnboundedSender<String>;

/// A slot handed to a waiter: its id and its activity record.
type Grant = (u64, Arc<Activity>);

struct PoolState {
    open_output: usize,
    open_input: usize,
    next_id: u64,
    streams: HashMap<u64, (Kind, Arc<Activity>)>,
    waiters: VecDeque<(u64, Kind, oneshot::Sender<Grant>)>,
}

/// The slots of one (scheme, authority).
struct Pool {
    state: Mutex<PoolState>,
}

/// The pools of one scheme.
pub struct StreamLimiter {
    scheme: String,
    metrics: Arc<crate::metrics::Metrics>,
    limits: StreamLimits,
    started: Instant,
    pools: Mutex<HashMap<String, Arc<Pool>>>,
    reclaimed: Option<ReclaimedTx>,
}

/// A held slot; released when dropped (unless it was reclaimed).
pub struct Slot {
    pool: Arc<Pool>,
    limiter: Arc<StreamLimiter>,
    id: u64,
    kind: Kind,
    activity: Arc<Activity>,
}

impl Slot {
    /// Records progress; fails once the slot was reclaimed.
    fn touch(&self) -> Result<()> {
        if self.activity.reclaimed.load(Ordering::Acquire) {
            return Err(Error::Reclaimed(format!(
                "closed due to inactivity timeout: no progress for {} ms (fs.{}.limit.stream-timeout); recover from your last handle",
                self.limiter
                    .limits
                    .stream_timeout
                    .map_or(0, |d| d.as_millis()),
                self.limiter.scheme
            )));
        }
        self.activity
            .last
            .store(self.limiter.now(), Ordering::Release);
        Ok(())
    }

    fn reclaimed(&self) -> bool {
        self.activity.reclaimed.load(Ordering::Acquire)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.pool.state.lock().unwrap();
        if state.streams.remove(&self.id).is_some() {
            match self.kind {
                Kind::Output => state.open_output -= 1,
                Kind::Input => state.open_input -= 1,
            }
            self.limiter.dispatch(&mut state);
        }
    }
}

impl StreamLimiter {
    pub fn new(
        scheme: &str,
        limits: StreamLimits,
        metrics: Arc<crate::metrics::Metrics>,
        reclaimed: Option<ReclaimedTx>,
    ) -> Arc<StreamLimiter> {
        Arc::new(StreamLimiter {
            scheme: scheme.to_string(),
            metrics,
            limits,
            started: Instant::now(),
            pools: Mutex::new(HashMap::new()),
            reclaimed,
        })
    }

    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn pool(&self, authority: &str) -> Arc<Pool> {
        self.pools
            .lock()
            .unwrap()
            .entry(authority.to_string())
            .or_insert_with(|| {
                Arc::new(Pool {
                    state: Mutex::new(PoolState {
                        open_output: 0,
                        open_input: 0,
                        next_id: 0,
                        streams: HashMap::new(),
                        waiters: VecDeque::new(),
                    }),
                })
            })
            .clone()
    }

    fn fits(&self, state: &PoolState, kind: Kind) -> bool {
        let under = |limit: Option<usize>, open: usize| limit.is_none_or(|l| open < l);
        let own = match kind {
            Kind::Output => under(self.limits.output, state.open_output),
            Kind::Input => under(self.limits.input, state.open_input),
        };
        own && under(self.limits.total, state.open_output + state.open_input)
    }

    fn grant(&self, state: &mut PoolState, kind: Kind) -> (u64, Arc<Activity>) {
        let id = state.next_id;
        state.next_id += 1;
        let activity = Arc::new(Activity {
            last: AtomicU64::new(self.now()),
            reclaimed: AtomicBool::new(false),
            staging: std::sync::OnceLock::new(),
        });
        state.streams.insert(id, (kind, activity.clone()));
        match kind {
            Kind::Output => state.open_output += 1,
            Kind::Input => state.open_input += 1,
        }
        (id, activity)
    }

    /// Hands free slots to waiters, first come first served.
    fn dispatch(&self, state: &mut PoolState) {
        while let Some((_, kind, _)) = state.waiters.front() {
            if !self.fits(state, *kind) {
                break;
            }
            let (_, kind, tx) = state.waiters.pop_front().expect("a front waiter");
            let (id, activity) = self.grant(state, kind);
            if tx.send((id, activity)).is_err() {
                // The waiter gave up meanwhile: take the slot back.
                state.streams.remove(&id);
                match kind {
                    Kind::Output => state.open_output -= 1,
                    Kind::Input => state.open_input -= 1,
                }
            }
        }
    }

    /// Reclaims streams idle longer than `stream-timeout`; with `only_one`,
    /// just the longest idle. Returns how many.
    fn reclaim_idle(&self, state: &mut PoolState, only_one: bool) -> usize {
        let Some(idle) = self.limits.stream_timeout else {
            return 0;
        };
        let cutoff = self.now().saturating_sub(idle.as_millis() as u64);
        let mut idle_streams: Vec<(u64, u64)> = state
            .streams
            .iter()
            .map(|(id, (_, a))| (*id, a.last.load(Ordering::Acquire)))
            .filter(|(_, last)| *last < cutoff)
            .collect();
        idle_streams.sort_by_key(|(_, last)| *last);
        if only_one {
            idle_streams.truncate(1);
        }
        for (id, _) in &idle_streams {
            if let Some((kind, activity)) = state.streams.remove(id) {
                activity.reclaimed.store(true, Ordering::Release);
                if let (Some(tx), Some(staging)) = (&self.reclaimed, activity.staging.get()) {
                    // The gateway may be gone (shutting down): nothing to end then.
                    let _ = tx.send(staging.clone());
                }
                match kind {
                    Kind::Output => state.open_output -= 1,
                    Kind::Input => state.open_input -= 1,
                }
                tracing::info!(scheme = %self.scheme, "reclaimed a stream idle past fs.{}.limit.stream-timeout", self.scheme);
            }
        }
        idle_streams.len()
    }

    async fn acquire(self: &Arc<Self>, authority: &str, kind: Kind) -> Result<Slot> {
        let pool = self.pool(authority);
        let (waiter_id, mut rx) = {
            let mut state = pool.state.lock().unwrap();
            if state.waiters.is_empty() && !self.fits(&state, kind) {
                // A waiter needs a slot: an idle stream gives its up.
                self.reclaim_idle(&mut state, true);
            }
            if state.waiters.is_empty() && self.fits(&state, kind) {
                let (id, activity) = self.grant(&mut state, kind);
                return Ok(self.slot(pool.clone(), id, kind, activity));
            }
            self.metrics
                .limiter_waits
                .get_or_create(&crate::metrics::Metrics::scheme(&self.scheme))
                .inc();
            let (tx, rx) = oneshot::channel();
            let waiter_id = state.next_id;
            state.next_id += 1;
            state.waiters.push_back((waiter_id, kind, tx));
            (waiter_id, rx)
        };
        let granted = match self.limits.timeout {
            None => rx.await.ok(),
            Some(limit) => match tokio::time::timeout(limit, &mut rx).await {
                Ok(granted) => granted.ok(),
                Err(_) => {
                    let mut state = pool.state.lock().unwrap();
                    let before = state.waiters.len();
                    state.waiters.retain(|(id, _, _)| *id != waiter_id);
                    if state.waiters.len() == before {
                        // Granted just as the wait ran out: take it.
                        drop(state);
                        rx.try_recv().ok()
                    } else {
                        let message = self.exhausted(authority, &state, limit);
                        self.metrics
                            .limiter_timeouts
                            .get_or_create(&crate::metrics::Metrics::scheme(&self.scheme))
                            .inc();
                        // Waiters behind this one may fit now.
                        self.dispatch(&mut state);
                        return Err(Error::ResourceExhausted(message));
                    }
                }
            },
        };
        let (id, activity) =
            granted.ok_or_else(|| Error::Internal("the stream limiter dropped a waiter".into()))?;
        Ok(self.slot(pool, id, kind, activity))
    }

    fn slot(
        self: &Arc<Self>,
        pool: Arc<Pool>,
        id: u64,
        kind: Kind,
        activity: Arc<Activity>,
    ) -> Slot {
        Slot {
            pool,
            limiter: self.clone(),
            id,
            kind,
            activity,
        }
    }

    fn exhausted(&self, authority: &str, state: &PoolState, waited: Duration) -> String {
        format!(
            "no stream slot for {}://{authority} within {} ms (fs.{}.limit.timeout): {}; open now: {} output, {} input, {} waiting; close or abort streams, or raise the limits",
            self.scheme,
            waited.as_millis(),
            self.scheme,
            describe(&self.limits, &self.scheme),
            state.open_output,
            state.open_input,
            state.waiters.len()
        )
    }

    /// Reclaims every idle stream and serves waiters (the reaper's round).
    pub fn reap(&self) {
        let pools: Vec<Arc<Pool>> = self.pools.lock().unwrap().values().cloned().collect();
        for pool in pools {
            let mut state = pool.state.lock().unwrap();
            if self.reclaim_idle(&mut state, false) > 0 {
                self.dispatch(&mut state);
            }
        }
    }

    /// Runs [`StreamLimiter::reap`] until the limiter is gone.
    pub fn spawn_reaper(limiter: &Arc<StreamLimiter>) {
        let Some(idle) = limiter.limits.stream_timeout else {
            return;
        };
        let weak: Weak<StreamLimiter> = Arc::downgrade(limiter);
        let every = (idle / 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match weak.upgrade() {
                    Some(limiter) => limiter.reap(),
                    None => return,
                }
            }
        });
    }
}
