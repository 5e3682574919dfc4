//! The Google endpoints the stand-in serves, and per-method request counters.
//!
//! Tests assert on the counters to prove caching (e.g. "one JWKS fetch for a thousand checks").
//! Faults are set per [`Endpoint`] (one Google API or OpenID endpoint); counters are finer, one
//! per method ([`Counter`]), so a test can tell `hasMember` calls from `members.get` fallbacks.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// A Google endpoint (or, for the Cloud APIs, a whole API) the stand-in serves; the names are
/// those used by `/_standin/fault`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Endpoint {
    Discovery,
    Jwks,
    Tokeninfo,
    Userinfo,
    /// The OAuth token endpoint, `POST /token`.
    Token,
    /// The Admin SDK Directory API (`hasMember`, `members.get`).
    Directory,
    /// The Cloud Identity Groups API (`groups:lookup`, `checkTransitiveMembership`).
    Cloudidentity,
    /// The IAM Service Account Credentials API (`signJwt`, `generateAccessToken`).
    Iamcredentials,
    /// The Security Token Service, `POST /v1/token`.
    Sts,
    /// Google's sign-in: the authorization endpoint and its account chooser.
    Authorize,
}

impl Endpoint {
    /// Every endpoint: what a fault without `endpoints` applies to.
    pub const ALL: [Endpoint; 10] = [
        Endpoint::Discovery,
        Endpoint::Jwks,
        Endpoint::Tokeninfo,
        Endpoint::Userinfo,
        Endpoint::Token,
        Endpoint::Directory,
        Endpoint::Cloudidentity,
        Endpoint::Iamcredentials,
        Endpoint::Sts,
        Endpoint::Authorize,
    ];

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// One counted method: what [`Stats`] has a field for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counter {
    Discovery,
    Jwks,
    Tokeninfo,
    Userinfo,
    Token,
    TokenAuthorizationCode,
    DirectoryHasMember,
    DirectoryMembersGet,
    CloudidentityLookup,
    CloudidentityCheck,
    IamcredentialsSignJwt,
    IamcredentialsGenerateAccessToken,
    Sts,
    Authorize,
    AuthorizeSignIn,
    DirectoryUsersGet,
}

const COUNTERS: usize = 16;

impl Counter {
    /// The endpoint whose fault the method plays.
    pub(crate) fn endpoint(self) -> Endpoint {
        match self {
            Counter::Discovery => Endpoint::Discovery,
            Counter::Jwks => Endpoint::Jwks,
            Counter::Tokeninfo => Endpoint::Tokeninfo,
            Counter::Userinfo => Endpoint::Userinfo,
            Counter::Token | Counter::TokenAuthorizationCode => Endpoint::Token,
            Counter::DirectoryHasMember
            | Counter::DirectoryMembersGet
            | Counter::DirectoryUsersGet => Endpoint::Directory,
            Counter::CloudidentityLookup | Counter::CloudidentityCheck => Endpoint::Cloudidentity,
            Counter::IamcredentialsSignJwt | Counter::IamcredentialsGenerateAccessToken => {
                Endpoint::Iamcredentials
            }
            Counter::Sts => Endpoint::Sts,
            Counter::Authorize | Counter::AuthorizeSignIn => Endpoint::Authorize,
        }
    }
}

/// Requests received on each Google method since start or the last reset, faulted ones
/// included. Fields are only ever added (scripts deserialize `/_standin/stats`), and the newer
/// ones default to zero when absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub discovery: u64,
    pub jwks: u64,
    pub tokeninfo: u64,
    pub userinfo: u64,
    /// `POST /token`, every grant type.
    #[serde(default)]
    pub token: u64,
    /// `POST /token` with `grant_type=authorization_code` (also counted in `token`).
    #[serde(default)]
    pub token_authorization_code: u64,
    /// Directory `members.hasMember`.
    #[serde(default)]
    pub directory_has_member: u64,
    /// Directory `members.get`.
    #[serde(default)]
    pub directory_members_get: u64,
    /// Cloud Identity `groups:lookup`.
    #[serde(default)]
    pub cloudidentity_lookup: u64,
    /// Cloud Identity `memberships:checkTransitiveMembership`.
    #[serde(default)]
    pub cloudidentity_check: u64,
    /// IAM Credentials `signJwt`.
    #[serde(default)]
    pub iamcredentials_sign_jwt: u64,
    /// IAM Credentials `generateAccessToken`.
    #[serde(default)]
    pub iamcredentials_generate_access_token: u64,
    /// STS `POST /v1/token`.
    #[serde(default)]
    pub sts: u64,
    /// `GET /o/oauth2/v2/auth`: authorization requests.
    #[serde(default)]
    pub authorize: u64,
    /// `POST /o/oauth2/v2/auth`: accounts chosen on the sign-in page.
    #[serde(default)]
    pub authorize_sign_in: u64,
    /// Directory `users.get`.
    #[serde(default)]
    pub directory_users_get: u64,
}

#[derive(Default)]
pub(crate) struct Counters([AtomicU64; COUNTERS]);

impl Counters {
    pub(crate) fn hit(&self, counter: Counter) {
        self.0[counter as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        self.read(|c| c.load(Ordering::Relaxed))
    }

    /// Zeroes the counters, returning what they held (each read and zeroed atomically).
    pub(crate) fn reset(&self) -> Stats {
        self.read(|c| c.swap(0, Ordering::Relaxed))
    }

    fn read(&self, read: impl Fn(&AtomicU64) -> u64) -> Stats {
        let get = |c: Counter| read(&self.0[c as usize]);
        Stats {
            discovery: get(Counter::Discovery),
            jwks: get(Counter::Jwks),
            tokeninfo: get(Counter::Tokeninfo),
            userinfo: get(Counter::Userinfo),
            token: get(Counter::Token),
            token_authorization_code: get(Counter::TokenAuthorizationCode),
            directory_has_member: get(Counter::DirectoryHasMember),
            directory_members_get: get(Counter::DirectoryMembersGet),
            cloudidentity_lookup: get(Counter::CloudidentityLookup),
            cloudidentity_check: get(Counter::CloudidentityCheck),
            iamcredentials_sign_jwt: get(Counter::IamcredentialsSignJwt),
            iamcredentials_generate_access_token: get(Counter::IamcredentialsGenerateAccessToken),
            sts: get(Counter::Sts),
            authorize: get(Counter::Authorize),
            authorize_sign_in: get(Counter::AuthorizeSignIn),
            directory_users_get: get(Counter::DirectoryUsersGet),
        }
    }
}
