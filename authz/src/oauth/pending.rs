//! The bound on sign-ins waiting for Google's callback.
//!
//! Anyone can load a consent page and post it: each post that reaches Google leaves a pending
//! sign-in in the store for `oauth.sign_in_ttl`. So this replica admits at most
//! `oauth.max_pending_sign_ins` of them at once, and at most [`PER_BROWSER`] per browser
//! cookie; past either, a new sign-in is refused (a page asking to wait), and nothing else is
//! affected: codes, refreshes and revocations live under their own bound (a store of their
//! own with the memory backend; with Redis, every pending sign-in expires within
//! `sign_in_ttl`, so this bound caps the keys too). A pending sign-in stays stored, used or
//! not, until it expires (that is what makes its consent form single use), so it stays
//! counted until then too.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

/// Sign-ins one browser may have in progress at once.
pub const PER_BROWSER: usize = 10;

/// Why a new sign-in was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    Replica,
    Browser,
}

#[derive(Debug)]
pub struct PendingBudget {
    max: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// state -> (browser, expiry)
    live: HashMap<String, (String, Instant)>,
    per_browser: HashMap<String, usize>,
    /// (expiry, state), oldest first: all entries share one lifetime.
    order: VecDeque<(Instant, String)>,
}

impl PendingBudget {
    pub fn new(max: usize) -> PendingBudget {
        PendingBudget {
            max: max.max(1),
            inner: Mutex::default(),
        }
    }

    /// Counts a new pending sign-in of `browser` under `state` for `ttl`, if there is room;
    /// `Ok(false)` when `state` is counted already (the same consent form again).
    pub fn admit(&self, state: &str, browser: &str, ttl: Duration) -> Result<bool, Full> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        inner.prune(now);
        if inner.live.contains_key(state) {
            // The same consent form again: counted once (the store refuses the second).
            return Ok(false);
        }
        if inner.live.len() >= self.max {
            return Err(Full::Replica);
        }
        if inner.per_browser.get(browser).copied().unwrap_or(0) >= PER_BROWSER {
            return Err(Full::Browser);
        }
        let expires = now + ttl;
        inner
            .live
            .insert(state.to_owned(), (browser.to_owned(), expires));
        *inner.per_browser.entry(browser.to_owned()).or_default() += 1;
        inner.order.push_back((expires, state.to_owned()));
        Ok(true)
    }

    /// The sign-in under `state` was not stored after all (a store error, or a form already
    /// used, seen first by another replica).
    pub fn release(&self, state: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.remove(state);
    }

    /// Pending sign-ins counted now.
    pub fn len(&self) -> usize {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.prune(Instant::now());
        inner.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    fn prune(&mut self, now: Instant) {
        while let Some((expires, _)) = self.order.front() {
            if *expires > now {
                break;
            }
            if let Some((_, state)) = self.order.pop_front() {
                self.remove(&state);
            }
        }
        // Released entries leave stale order slots; keep the queue bounded by the live set.
        if self.order.len() > 2 * self.live.len() + 64 {
            let live = &self.live;
            self.order.retain(|(_, state)| live.contains_key(state));
        }
    }

    fn remove(&mut self, state: &str) {
        if let Some((browser, _)) = self.live.remove(state) {
            if let Some(count) = self.per_browser.get_mut(&browser) {
                *count -= 1;
                if *count == 0 {
                    self.per_browser.remove(&browser);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_per_replica_and_per_browser_and_released() {
        let budget = PendingBudget::new(15);
        let minute = Duration::from_secs(60);
        for i in 0..PER_BROWSER {
            budget.admit(&format!("a{i}"), "browser-a", minute).unwrap();
        }
        assert_eq!(
            budget.admit("a-more", "browser-a", minute),
            Err(Full::Browser)
        );
        // The same form again is not a second sign-in.
        assert_eq!(budget.admit("a1", "browser-a", minute), Ok(false));
        for i in 0..5 {
            budget.admit(&format!("b{i}"), "browser-b", minute).unwrap();
        }
        assert_eq!(budget.admit("c0", "browser-c", minute), Err(Full::Replica));
        budget.release("a0");
        budget.admit("c0", "browser-c", minute).unwrap();
        assert_eq!(budget.len(), 15);
        // Expired entries make room by themselves.
        let short = PendingBudget::new(1);
        short.admit("x", "b", Duration::from_millis(20)).unwrap();
        assert_eq!(short.admit("y", "b", minute), Err(Full::Replica));
        std::thread::sleep(Duration::from_millis(30));
        short.admit("y", "b", minute).unwrap();
    }
}
