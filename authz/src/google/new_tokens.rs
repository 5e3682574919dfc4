//! A bound on verifying never-seen opaque tokens.
//!
//! Each distinct access token we have not seen costs a tokeninfo call (and, if Google accepts
//! it, a userinfo call). Without a bound, a caller spraying junk tokens would set our call rate
//! to Google, and once Google answers 429 every new user would get a 503 anyway. So at most
//! `google.max_concurrent_new_tokens` are verified at once and at most
//! `google.new_tokens_per_second` start per second (a token bucket with a burst of one
//! second's worth); beyond that a verification is shed: a 503 for that request, never an allow
//! and never a cached denial (outages are not cached). Cached tokens, ID tokens (verified
//! locally) and our own tokens never pass through here.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Instant,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a verification was not started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    Concurrency,
    Rate,
}

impl Shed {
    pub fn as_str(self) -> &'static str {
        match self {
            Shed::Concurrency => "concurrency",
            Shed::Rate => "rate",
        }
    }
}

#[derive(Debug)]
pub struct NewTokens {
    running: Arc<Semaphore>,
    bucket: Mutex<Bucket>,
    per_second: f64,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl NewTokens {
    pub fn new(max_concurrent: usize, per_second: u32) -> NewTokens {
        let per_second = f64::from(per_second.max(1));
        NewTokens {
            running: Arc::new(Semaphore::new(max_concurrent.max(1))),
            bucket: Mutex::new(Bucket {
                tokens: per_second,
                at: Instant::now(),
            }),
            per_second,
        }
    }

    /// A permit to verify one new token (held until the verification ends), or why not.
    pub fn admit(&self) -> Result<OwnedSemaphorePermit, Shed> {
        let permit = self
            .running
            .clone()
            .try_acquire_owned()
            .map_err(|_| Shed::Concurrency)?;
        let mut bucket = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let refill = now.duration_since(bucket.at).as_secs_f64() * self.per_second;
        bucket.tokens = (bucket.tokens + refill).min(self.per_second);
        bucket.at = now;
        if bucket.tokens < 1.0 {
            return Err(Shed::Rate);
        }
        bucket.tokens -= 1.0;
        Ok(permit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_and_rate_are_bounded() {
        let gate = NewTokens::new(2, 3);
        let first = gate.admit().unwrap();
        let second = gate.admit().unwrap();
        assert_eq!(gate.admit().unwrap_err(), Shed::Concurrency);
        drop(first);
        let third = gate.admit().unwrap();
        drop((second, third));
        // Three per second, burst three: the fourth start within the second is shed.
        assert_eq!(gate.admit().unwrap_err(), Shed::Rate);
        std::thread::sleep(std::time::Duration::from_millis(400));
        assert!(gate.admit().is_ok(), "refilled at three per second");
    }
}
