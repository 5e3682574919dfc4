//! The four Google endpoints the stand-in serves, and per-endpoint request counters.
//!
//! Tests assert on the counters to prove caching (e.g. "one JWKS fetch for a thousand checks").

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// A Google endpoint the stand-in serves; the names are those used by `/_standin/fault`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Endpoint {
    Discovery,
    Jwks,
    Tokeninfo,
    Userinfo,
}

impl Endpoint {
    pub const ALL: [Endpoint; 4] = [
        Endpoint::Discovery,
        Endpoint::Jwks,
        Endpoint::Tokeninfo,
        Endpoint::Userinfo,
    ];

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Requests received on each Google endpoint since start or the last reset, faulted ones
/// included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub discovery: u64,
    pub jwks: u64,
    pub tokeninfo: u64,
    pub userinfo: u64,
}

#[derive(Default)]
pub(crate) struct Counters([AtomicU64; 4]);

impl Counters {
    pub(crate) fn hit(&self, endpoint: Endpoint) {
        self.0[endpoint.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let get = |e: Endpoint| self.0[e.index()].load(Ordering::Relaxed);
        Stats {
            discovery: get(Endpoint::Discovery),
            jwks: get(Endpoint::Jwks),
            tokeninfo: get(Endpoint::Tokeninfo),
            userinfo: get(Endpoint::Userinfo),
        }
    }

    /// Zeroes the counters, returning what they held (each read and zeroed atomically).
    pub(crate) fn reset(&self) -> Stats {
        let take = |e: Endpoint| self.0[e.index()].swap(0, Ordering::Relaxed);
        Stats {
            discovery: take(Endpoint::Discovery),
            jwks: take(Endpoint::Jwks),
            tokeninfo: take(Endpoint::Tokeninfo),
            userinfo: take(Endpoint::Userinfo),
        }
    }
}
