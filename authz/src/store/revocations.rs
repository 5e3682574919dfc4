//! This replica's copy of the revocations, for the hot path.
//!
//! The ext_authz Check runs on every request and must refuse a revoked token without a network
//! call, so each replica keeps the revocations in force in memory: [`Revocations::is_revoked`]
//! is a read lock and a hash lookup. [`Revocations::revoke`] writes the store first and then the
//! local copy (this replica refuses at once); [`Revocations::run`] polls the store so that a
//! revocation made on another replica is refused here within one poll interval.
//!
//! The poll asks for everything recorded since the latest recording time seen, minus
//! [`OVERLAP`]: the times come from the store's clock, and the overlap covers a revocation that
//! commits with a time a little older than one already seen (a clock step on the store's
//! machine). Reading a revocation twice is harmless.
//!
//! **Bounded, and fail closed when the bound is hit.** At most `cap` ids are kept (default
//! [`DEFAULT_CAP`]). Dropping one would let a revoked token pass on this replica, so when the
//! cap is hit the view reports itself out of sync ([`Revocations::synced_recently`] turns false,
//! so readiness fails) and reads everything in force again once expiries have made room.

use std::{
    collections::{BTreeSet, HashMap},
    fmt,
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio_util::sync::CancellationToken;

use super::{Revocation, Store, StoreError, ttl_ms, unix_ms};

/// How far before the latest recording time seen each poll starts reading again.
pub const OVERLAP: Duration = Duration::from_secs(10);
/// The default bound on ids kept in memory: about 100 MB at worst, far past any real use.
pub const DEFAULT_CAP: usize = 1_000_000;
/// A view is in sync when its last successful read is at most this many polls old.
const SYNC_POLLS: u32 = 3;
/// ... and never less than this, so a short poll interval does not make readiness flap.
const SYNC_MIN: Duration = Duration::from_secs(3);

/// The local view of the revocations in force.
pub struct Revocations {
    store: Arc<dyn Store>,
    local: RwLock<Local>,
    cap: usize,
    /// When the store was last read successfully. A mutex: written once per poll, read by
    /// readiness probes, never on the hot path.
    last_sync: Mutex<Option<Instant>>,
    /// The poll interval `run` was started with, in ms (0 before that).
    poll_ms: AtomicU64,
}

#[derive(Default)]
struct Local {
    /// id -> expiry (unix ms).
    until: HashMap<String, u64>,
    /// (expiry, id), so pruning touches only what has expired.
    by_expiry: BTreeSet<(u64, String)>,
    /// The latest recording time read from the store (store clock, unix ms).
    cursor: u64,
    /// An id was dropped because the cap was hit: out of sync until a full re-read fits.
    overflowed: bool,
}

/// What one insert did.
#[derive(Debug, PartialEq, Eq)]
enum Added {
    Yes,
    /// Already known with an expiry at least as late.
    Known,
    /// The cap was hit.
    Dropped,
}

// === impl Revocations ===

impl Revocations {
    pub fn new(store: Arc<dyn Store>) -> Revocations {
        Revocations::with_cap(store, DEFAULT_CAP)
    }

    /// A view holding at most `cap` ids.
    pub fn with_cap(store: Arc<dyn Store>, cap: usize) -> Revocations {
        Revocations {
            store,
            local: RwLock::new(Local::default()),
            cap,
            last_sync: Mutex::new(None),
            poll_ms: AtomicU64::new(0),
        }
    }

    /// Revokes `id` for `ttl` (the remaining life of what it names): in the store first, so
    /// every replica learns it, then here, so this replica refuses it at once. A store error
    /// revokes nothing and is the caller's 503.
    pub async fn revoke(&self, id: &str, ttl: Duration) -> Result<(), StoreError> {
        self.store.revoke(id, ttl).await?;
        let expires_ms = unix_ms().saturating_add(ttl_ms(ttl));
        let mut local = self.write();
        if local.add(id, expires_ms, self.cap) == Added::Dropped {
            local.overflow(self.cap);
        }
        Ok(())
    }

    /// Whether `id` is revoked, from memory alone. Entries stop counting at their expiry.
    pub fn is_revoked(&self, id: &str) -> bool {
        let local = self.local.read().unwrap_or_else(PoisonError::into_inner);
        local
            .until
            .get(id)
            .is_some_and(|&expires_ms| expires_ms > unix_ms())
    }

    /// How many ids are held (some may have expired since the last prune).
    pub fn len(&self) -> usize {
        self.local
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .until
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// For readiness: the store was read successfully within the last few poll intervals (at
    /// least [`SYNC_MIN`]) and no revocation had to be dropped.
    pub fn synced_recently(&self) -> bool {
        if self
            .local
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .overflowed
        {
            return false;
        }
        let poll = Duration::from_millis(self.poll_ms.load(Ordering::Relaxed));
        let window = (poll * SYNC_POLLS).max(SYNC_MIN);
        let last = *self
            .last_sync
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        last.is_some_and(|at| at.elapsed() <= window)
    }

    /// Reads the revocations recorded since the last read (less [`OVERLAP`]) into memory and
    /// drops those that have expired; returns how many were read.
    pub async fn sync(&self) -> Result<usize, StoreError> {
        let since = {
            let local = self.local.read().unwrap_or_else(PoisonError::into_inner);
            if local.overflowed {
                0
            } else {
                local.cursor.saturating_sub(ttl_ms(OVERLAP))
            }
        };
        let found = self.store.revocations_since(since).await?;
        let read = found.len();
        let mut local = self.write();
        local.prune(unix_ms());
        let mut dropped = false;
        for Revocation {
            id,
            recorded_ms,
            expires_ms,
        } in found
        {
            local.cursor = local.cursor.max(recorded_ms);
            dropped |= local.add(&id, expires_ms, self.cap) == Added::Dropped;
        }
        if dropped {
            local.overflow(self.cap);
        } else if local.overflowed && since == 0 {
            local.overflowed = false;
            tracing::info!(
                held = local.until.len(),
                "revocations: every revocation in force fits again"
            );
        }
        drop(local);
        *self
            .last_sync
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        Ok(read)
    }

    /// Syncs every `poll` until `shutdown`. A store that cannot be read is logged once when the
    /// outage starts and once when it ends, not on every poll.
    pub async fn run(self: Arc<Self>, poll: Duration, shutdown: CancellationToken) {
        self.poll_ms.store(ttl_ms(poll), Ordering::Relaxed);
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            if shutdown.run_until_cancelled(tick.tick()).await.is_none() {
                return;
            }
            let Some(result) = shutdown.run_until_cancelled(self.sync()).await else {
                return;
            };
            match result {
                Ok(_) if failing => {
                    failing = false;
                    tracing::info!("revocations: the store can be read again");
                }
                Ok(_) => {}
                Err(error) if !failing => {
                    failing = true;
                    tracing::warn!(
                        %error,
                        "revocations: cannot read the store; revocations made on other \
                         replicas are not seen here until it recovers"
                    );
                }
                Err(_) => {}
            }
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Local> {
        self.local.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Shows the figures, not the ids.
impl fmt::Debug for Revocations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Revocations")
            .field("store", &self.store)
            .field("held", &self.len())
            .field("cap", &self.cap)
            .finish_non_exhaustive()
    }
}

// === impl Local ===

impl Local {
    fn add(&mut self, id: &str, expires_ms: u64, cap: usize) -> Added {
        if let Some(old) = self.until.get(id).copied() {
            if old >= expires_ms {
                return Added::Known;
            }
            self.by_expiry.remove(&(old, id.to_string()));
        } else if self.until.len() >= cap {
            // Expired ids make room before anything is given up.
            self.prune(unix_ms());
            if self.until.len() >= cap {
                return Added::Dropped;
            }
        }
        self.by_expiry.insert((expires_ms, id.to_string()));
        self.until.insert(id.to_string(), expires_ms);
        Added::Yes
    }

    /// Drops the ids whose expiry has passed.
    fn prune(&mut self, now_ms: u64) {
        while let Some((expires_ms, _)) = self.by_expiry.first() {
            if *expires_ms > now_ms {
                break;
            }
            if let Some((_, id)) = self.by_expiry.pop_first() {
                self.until.remove(&id);
            }
        }
    }

    fn overflow(&mut self, cap: usize) {
        if !self.overflowed {
            tracing::error!(
                cap,
                "revocations: more revocations in force than this replica holds; reporting \
                 not ready until they fit"
            );
        }
        self.overflowed = true;
    }
}
