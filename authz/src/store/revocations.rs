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
//! cap is hit the view reports itself out of sync ([`Revocations::synced_recently`] turns false)
//! and reads everything in force again once expiries have made room.
//!
//! **Stale is out of sync.** A view whose last successful read is more than [`SYNC_POLLS`]
//! polls old (at least [`SYNC_MIN`]) is out of sync too. The Check refuses our own tokens with
//! a 503 while the view is out of sync (it cannot know what was revoked elsewhere), and `run`
//! logs the change and sets `authz_revocations_in_sync`.
//!
//! **Off-boarding travels the same way.** An id `user:<random>:<email>` is a user's invalidation: each
//! replica that reads it for the first time calls the hook set with
//! [`Revocations::on_user_invalidated`] (the authorizer drops its cached verdicts, identities
//! and memberships of that user).

use std::{
    collections::{BTreeSet, HashMap},
    fmt,
    sync::{
        Arc, OnceLock, PoisonError, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use ring::rand::{SecureRandom as _, SystemRandom};
use tokio_util::sync::CancellationToken;

use super::{Revocation, Store, StoreError, ttl_ms, unix_ms};
use crate::metrics::Metrics;

/// How far before the latest recording time seen each poll starts reading again.
pub const OVERLAP: Duration = Duration::from_secs(10);
/// The default bound on ids kept in memory: about 100 MB at worst, far past any real use.
pub const DEFAULT_CAP: usize = 1_000_000;
/// A view is in sync when its last successful read is at most this many polls old.
pub const SYNC_POLLS: u32 = 3;
/// ... and never less than this, so a short poll interval does not make readiness flap.
pub const SYNC_MIN: Duration = Duration::from_secs(3);

/// The prefix of a user's invalidation in the revocation feed.
pub const USER_PREFIX: &str = "user:";

/// What a replica does when it learns of a user's invalidation.
pub type UserHook = Arc<dyn Fn(String) + Send + Sync>;

/// The local view of the revocations in force.
pub struct Revocations {
    store: Arc<dyn Store>,
    local: RwLock<Local>,
    cap: usize,
    /// When the store was last read successfully, in ms since `origin` plus one (0: never).
    /// An atomic: the Check reads it for every token of ours.
    last_sync: AtomicU64,
    origin: Instant,
    /// A copy of `Local::overflowed`, readable without the lock.
    overflowed: AtomicBool,
    /// The poll interval `run` was started with, in ms (0 before that).
    poll_ms: AtomicU64,
    user_hook: OnceLock<UserHook>,
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
            last_sync: AtomicU64::new(0),
            origin: Instant::now(),
            overflowed: AtomicBool::new(false),
            poll_ms: AtomicU64::new(0),
            user_hook: OnceLock::new(),
        }
    }

    /// Sets what to do when a user's invalidation is read from the store (once; later calls
    /// are ignored).
    pub fn on_user_invalidated(&self, hook: UserHook) {
        let _ = self.user_hook.set(hook);
    }

    /// Records a user's invalidation for every replica: each drops what it cached about
    /// `email` when it next reads the store.
    pub async fn invalidate_user(&self, email: &str, ttl: Duration) -> Result<(), StoreError> {
        // A new id each time, so a second invalidation of the same user is news to every
        // replica: `user:<random>:<email>`.
        let mut nonce = [0u8; 8];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| StoreError {
                backend: self.store.backend(),
                problem: "the system random number generator failed".into(),
            })?;
        let id = format!(
            "{USER_PREFIX}{:016x}:{}",
            u64::from_be_bytes(nonce),
            email.to_lowercase()
        );
        self.revoke(&id, ttl).await
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
            self.overflowed.store(true, Ordering::Relaxed);
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

    /// Whether this view can be trusted: the store was read successfully within the last few
    /// poll intervals (at least [`SYNC_MIN`]) and no revocation had to be dropped. Two atomic
    /// loads: the Check asks it for every token of ours.
    pub fn synced_recently(&self) -> bool {
        if self.overflowed.load(Ordering::Relaxed) {
            return false;
        }
        let last = self.last_sync.load(Ordering::Relaxed);
        if last == 0 {
            return false;
        }
        let poll = Duration::from_millis(self.poll_ms.load(Ordering::Relaxed));
        let window = ttl_ms((poll * SYNC_POLLS).max(SYNC_MIN));
        self.elapsed_ms().saturating_sub(last - 1) <= window
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
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
        let mut users = Vec::new();
        for Revocation {
            id,
            recorded_ms,
            expires_ms,
        } in found
        {
            local.cursor = local.cursor.max(recorded_ms);
            match local.add(&id, expires_ms, self.cap) {
                Added::Dropped => dropped = true,
                Added::Yes => {
                    let email = id
                        .strip_prefix(USER_PREFIX)
                        .and_then(|rest| rest.split_once(':'))
                        .map(|(_, email)| email);
                    if let Some(email) = email {
                        users.push(email.to_owned());
                    }
                }
                Added::Known => {}
            }
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
        self.overflowed.store(local.overflowed, Ordering::Relaxed);
        drop(local);
        self.last_sync
            .store(self.elapsed_ms().saturating_add(1), Ordering::Relaxed);
        if let Some(hook) = self.user_hook.get() {
            for email in users {
                hook(email);
            }
        }
        Ok(read)
    }

    /// Syncs every `poll` until `shutdown`. A store that cannot be read is logged once when the
    /// outage starts and once when it ends, not on every poll.
    pub async fn run(
        self: Arc<Self>,
        poll: Duration,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) {
        self.poll_ms.store(ttl_ms(poll), Ordering::Relaxed);
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        let mut in_sync = None;
        loop {
            if shutdown.run_until_cancelled(tick.tick()).await.is_none() {
                return;
            }
            let Some(result) = shutdown.run_until_cancelled(self.sync()).await else {
                return;
            };
            let now_in_sync = self.synced_recently();
            if in_sync != Some(now_in_sync) {
                metrics.set_revocations_in_sync(now_in_sync);
                match (in_sync, now_in_sync) {
                    (_, false) => tracing::error!(
                        "revocations: this replica's copy is stale or overflowing; tokens of \
                         our own are refused (503) until it is current again"
                    ),
                    (Some(false), true) => {
                        tracing::info!("revocations: current again; tokens of our own accepted");
                    }
                    _ => {}
                }
                in_sync = Some(now_in_sync);
            }
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
