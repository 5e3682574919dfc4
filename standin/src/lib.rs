//! `standin`: a local stand-in for Google's OpenID Connect endpoints and the Google APIs authz
//! calls, for tests, benchmarks and the dev stack, since Google cannot be reached from here.
//!
//! It serves Google's documented formats, so production code talks to it through configurable
//! URLs only. One port serves every Google host, so each API keeps Google's path. Google's
//! endpoints (counted in [`Stats`], and subject to faults by their [`Endpoint`] name):
//!
//! | path | Google host | fault name | what |
//! | --- | --- | --- | --- |
//! | `GET /.well-known/openid-configuration` | accounts.google.com | `discovery` | discovery |
//! | `GET /oauth2/v3/certs` | www.googleapis.com | `jwks` | JWKS |
//! | `GET`/`POST /tokeninfo` | oauth2.googleapis.com | `tokeninfo` | access-token introspection |
//! | `GET`/`POST /v1/userinfo` | openidconnect.googleapis.com | `userinfo` | OpenID userinfo |
//! | `GET /o/oauth2/v2/auth` | accounts.google.com | `authorize` | sign-in: the authorization endpoint, answering with an account chooser |
//! | `POST /o/oauth2/v2/auth` | accounts.google.com | `authorize` | sign-in: the chooser's form (`request`, `email`) → redirect with a code |
//! | `POST /token` | oauth2.googleapis.com | `token` | OAuth token endpoint (JWT-bearer, authorization-code and refresh-token grants) |
//! | `GET /admin/directory/v1/groups/{g}/hasMember/{m}` | admin.googleapis.com | `directory` | `members.hasMember` |
//! | `GET /admin/directory/v1/groups/{g}/members/{m}` | admin.googleapis.com | `directory` | `members.get` |
//! | `GET /admin/directory/v1/users/{u}` | admin.googleapis.com | `directory` | `users.get` (`suspended`, `archived`, `orgUnitPath`) |
//! | `GET /v1/groups:lookup` | cloudidentity.googleapis.com | `cloudidentity` | group name by email |
//! | `GET /v1/groups/{id}/memberships:checkTransitiveMembership` | cloudidentity.googleapis.com | `cloudidentity` | transitive check |
//! | `POST /v1/projects/-/serviceAccounts/{sa}:signJwt` | iamcredentials.googleapis.com | `iamcredentials` | sign a JWT as `sa` |
//! | `POST /v1/projects/-/serviceAccounts/{sa}:generateAccessToken` | iamcredentials.googleapis.com | `iamcredentials` | a token of `sa` |
//! | `POST /v1/token` | sts.googleapis.com | `sts` | RFC 8693 exchange of a signed AWS request |
//!
//! For AWS-sourced `external_account` credentials it also plays the AWS instance metadata
//! server (neither counted nor faulted): `PUT /aws/token`, `GET /aws/region`,
//! `GET /aws/credentials`, `GET /aws/credentials/{role}`.
//!
//! Test-control endpoints (JSON bodies; each is documented on its handler in `routes.rs`):
//!
//! | path | what |
//! | --- | --- |
//! | `POST /_standin/id_token` | sign given claims → `{"token"}` |
//! | `POST /_standin/access_token` | mint an opaque token ([`AccessTokenSpec`]) → `{"token","exp"}` |
//! | `POST /_standin/rotate` | new signing key → `{"kid"}` |
//! | `POST /_standin/fault` | set or clear a fault ([`FaultSpec`]) |
//! | `POST /_standin/service_account` | register a service account ([`ServiceAccountSpec`]) → its key file |
//! | `POST /_standin/directory` | `{"domains", "admins"}` of the Workspace tenant |
//! | `PUT /_standin/group` | `{"group", "members", "status"?}`: one group's direct members |
//! | `POST /_standin/cloud_identity` | `{"premium": bool}` |
//! | `POST /_standin/workload_identity` | register an AWS workload binding ([`WorkloadIdentitySpec`]) |
//! | `POST /_standin/oauth_client` | register a web OAuth client ([`OAuthClientSpec`]) |
//! | `POST /_standin/user` | register (or replace: suspend, reinstate, drop `hd`) a Google account ([`UserSpec`]) → `{"sub"}` |
//! | `DELETE /_standin/user` | `{"email"}`: delete the account; its refresh and access tokens stop working |
//! | `GET /_standin/stats` | request counts ([`Stats`]) |
//! | `POST /_standin/stats/reset` | zero them, returning the old counts |
//!
//! Modules: `keys` (RSA keys, JWKS, signing), `tokens` (access tokens, tokeninfo and userinfo
//! bodies), `faults` (injected failures), `stats` (endpoint names and counters), `routes` (the
//! axum router, the OpenID and control handlers), `google_error` (Google's error bodies),
//! `accounts` (service accounts and their keys), `api_tokens` (tokens for Google's APIs),
//! `directory` (the Workspace tenant: domains, admins, groups), `oauth` (`/token`),
//! `admin_sdk` and `cloud_identity` (the membership APIs), `iam_credentials`, `sts` (with the
//! workload-identity bindings), `sigv4` (AWS request signatures), `imds` (AWS metadata),
//! `clock` (timestamp formats), `signin` (the authorization endpoint and its pages),
//! `oauth_clients` and `users` (who may sign in where), `pkce` (code challenges),
//! `single_use` (the bounded tables of pending sign-ins and codes).

mod accounts;
mod admin_sdk;
mod api_tokens;
mod clock;
mod cloud_identity;
mod directory;
mod faults;
mod google_error;
mod iam_credentials;
mod imds;
mod keys;
mod oauth;
mod oauth_clients;
mod pkce;
mod routes;
mod signin;
mod sigv4;
mod single_use;
mod stats;
mod sts;
mod tokens;
mod users;

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;

pub use accounts::ServiceAccountSpec;
pub use faults::{FaultMode, FaultSpec, HANG};
pub use oauth_clients::OAuthClientSpec;
pub use stats::{Endpoint, Stats};
pub use sts::WorkloadIdentitySpec;
pub use tokens::AccessTokenSpec;
pub use users::UserSpec;

use accounts::ServiceAccounts;
use api_tokens::ApiTokens;
use directory::{Directory, DirectorySpec};
use faults::Faults;
use keys::{KeyRing, SigningKey};
use oauth_clients::OAuthClients;
use signin::SignIns;
use stats::Counters;
use sts::WorkloadIdentities;
use tokens::AccessTokens;
use users::Users;

/// How to run a stand-in.
#[derive(Debug, Clone)]
pub struct Options {
    /// The issuer URL it announces and that tokens should carry. Default `http://{bound addr}`.
    /// A trailing slash is dropped, as Google's issuer has none.
    pub issuer: Option<String>,
    /// `max-age` of the JWKS `Cache-Control` header, in seconds. Default 3600.
    pub jwks_max_age: u64,
    /// Where browsers reach the stand-in, when not at the issuer: the sign-in page (the
    /// `authorization_endpoint`) is announced there. In compose the issuer is
    /// `http://standin:8080`, which only the containers resolve; the user's browser comes in
    /// through a published port. Google serves both at one origin.
    pub browser_url: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            issuer: None,
            jwks_max_age: 3600,
            browser_url: None,
        }
    }
}

/// A running stand-in: a cheap handle to its state, usable in-process alongside HTTP.
///
/// The server runs as a task on the tokio runtime that called [`StandIn::start`] and stops
/// with that runtime.
#[derive(Clone)]
pub struct StandIn {
    shared: Arc<Shared>,
}

/// Everything the handlers and the handle share.
pub(crate) struct Shared {
    pub(crate) issuer: String,
    pub(crate) addr: SocketAddr,
    pub(crate) jwks_max_age: u64,
    /// The discovery document, rendered once: it never changes.
    pub(crate) discovery: String,
    pub(crate) keys: KeyRing,
    pub(crate) tokens: AccessTokens,
    pub(crate) faults: Faults,
    pub(crate) counters: Counters,
    pub(crate) accounts: ServiceAccounts,
    /// Tokens for Google's APIs (issued by `/token`, STS, `generateAccessToken`).
    pub(crate) api_tokens: ApiTokens,
    pub(crate) directory: Directory,
    pub(crate) workload: WorkloadIdentities,
    /// Web OAuth clients that sign users in (`/o/oauth2/v2/auth`, authorization-code grant).
    pub(crate) oauth_clients: OAuthClients,
    /// The Google accounts that can sign in.
    pub(crate) users: Users,
    /// Sign-ins under way: requests waiting for an account, codes waiting for `/token`.
    pub(crate) sign_ins: SignIns,
    /// Refresh tokens of offline sign-ins, for the refresh-token grant.
    pub(crate) refresh_tokens: oauth::RefreshTokens,
}

impl std::fmt::Debug for StandIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandIn")
            .field("issuer", &self.shared.issuer)
            .field("addr", &self.shared.addr)
            .finish_non_exhaustive()
    }
}

impl StandIn {
    /// Generates the first signing key and serves on `listener` from a spawned task.
    pub async fn start(
        listener: tokio::net::TcpListener,
        options: Options,
    ) -> anyhow::Result<Self> {
        let addr = listener
            .local_addr()
            .context("reading the listener's address")?;
        let issuer = options
            .issuer
            .unwrap_or_else(|| format!("http://{addr}"))
            .trim_end_matches('/')
            .to_owned();
        let key = tokio::task::spawn_blocking(SigningKey::generate)
            .await
            .context("the key generation task failed")??;
        let shared = Arc::new(Shared {
            discovery: routes::discovery_document(
                &issuer,
                options
                    .browser_url
                    .as_deref()
                    .map(|url| url.trim_end_matches('/')),
            )
            .to_string(),
            issuer,
            addr,
            jwks_max_age: options.jwks_max_age,
            keys: KeyRing::new(key),
            tokens: AccessTokens::default(),
            faults: Faults::default(),
            counters: Counters::default(),
            accounts: ServiceAccounts::default(),
            api_tokens: ApiTokens::default(),
            directory: Directory::default(),
            workload: WorkloadIdentities::default(),
            oauth_clients: OAuthClients::default(),
            users: Users::default(),
            sign_ins: SignIns::default(),
            refresh_tokens: oauth::RefreshTokens::default(),
        });
        routes::spawn_server(listener, shared.clone());
        Ok(Self { shared })
    }

    /// The issuer URL, without a trailing slash.
    pub fn issuer(&self) -> &str {
        &self.shared.issuer
    }

    /// The address the server is bound to.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// The key id that signs now.
    pub fn current_kid(&self) -> String {
        self.shared.keys.current().kid().to_owned()
    }

    /// Signs exactly `claims` (the caller builds iss, aud, exp, ...) with RS256 and the current
    /// key, header `{"alg":"RS256","kid":<current kid>,"typ":"JWT"}`.
    pub fn mint_id_token(&self, claims: &serde_json::Value) -> String {
        self.mint_id_token_with(claims, None, None)
            .expect("RS256 signing with a key the stand-in generated does not fail")
    }

    /// Like [`mint_id_token`](Self::mint_id_token), for negative tests: `kid` replaces the
    /// header's key id (still signed with the current key); `alg` picks RS256/384/512,
    /// PS256/384/512, HS256/384/512 (HMAC keyed with the public key's PEM: algorithm
    /// confusion) or `none` (unsigned). Fails on any other `alg`.
    pub fn mint_id_token_with(
        &self,
        claims: &serde_json::Value,
        kid: Option<&str>,
        alg: Option<&str>,
    ) -> anyhow::Result<String> {
        self.shared.keys.current().sign(claims, kid, alg)
    }

    /// Mints an opaque `ya29.` access token that tokeninfo and userinfo then answer for.
    pub fn mint_access_token(&self, spec: AccessTokenSpec) -> String {
        self.shared.tokens.mint(spec, now()).0
    }

    /// Generates a new key, makes it the signing key and publishes it, returning its kid. The
    /// keys published before stay in the JWKS only when `keep_old`.
    ///
    /// Blocks while the key is generated (up to about a second in release builds, several
    /// seconds in debug ones): from async code, call it through `tokio::task::spawn_blocking`.
    pub fn rotate(&self, keep_old: bool) -> String {
        let key = SigningKey::generate()
            .expect("generating an RSA key fails only when the OS random source does");
        self.shared.keys.install(key, keep_old, true)
    }

    /// Publishes a new key in the JWKS without signing with it yet (as Google does ahead of a
    /// rotation); [`StandIn::activate_newest`] starts using it. Blocks like [`StandIn::rotate`].
    pub fn publish_next(&self) -> String {
        let key = SigningKey::generate()
            .expect("generating an RSA key fails only when the OS random source does");
        self.shared.keys.install(key, true, false)
    }

    /// Signs from now on with the most recently published key; returns its kid.
    pub fn activate_newest(&self) -> String {
        self.shared.keys.activate_newest()
    }

    /// Sets or clears a fault, as `POST /_standin/fault` does.
    pub fn set_fault(&self, spec: &FaultSpec) -> anyhow::Result<()> {
        self.shared.faults.set(spec)
    }

    /// The OAuth token endpoint's URL, `{issuer}/token`: the `aud` assertions must carry.
    pub fn token_url(&self) -> String {
        format!("{}/token", self.shared.issuer)
    }

    /// Registers a service account (replacing one of the same email, key included) and returns
    /// its key file, as `POST /_standin/service_account` does. Generates an RSA key on a
    /// blocking thread.
    pub async fn create_service_account(&self, spec: &ServiceAccountSpec) -> serde_json::Value {
        create_service_account(&self.shared, spec.clone())
            .await
            .expect("creating a service account with a valid email does not fail")
    }

    /// Sets the domains the Workspace tenant owns and its admins, replacing both, as
    /// `POST /_standin/directory` does.
    pub fn set_directory(&self, domains: &[&str], admins: &[&str]) {
        self.shared.directory.configure(&DirectorySpec {
            domains: domains.iter().map(|d| (*d).to_owned()).collect(),
            admins: admins.iter().map(|a| (*a).to_owned()).collect(),
        });
    }

    /// Replaces `group`'s direct members (a member that is a group nests it); their statuses
    /// become `ACTIVE`.
    pub fn set_group(&self, group: &str, members: &[&str]) {
        self.shared.directory.set_group(group, members);
    }

    /// Sets the status `members.get` reports for a direct member (e.g. `SUSPENDED`). Fails when
    /// `member` is not a direct member of `group`.
    pub fn set_member_status(&self, group: &str, member: &str, status: &str) -> anyhow::Result<()> {
        self.shared.directory.set_status(group, member, status)
    }

    /// Whether the tenant has Cloud Identity Premium (default true); without it
    /// `checkTransitiveMembership` answers 403.
    pub fn set_premium(&self, premium: bool) {
        self.shared.directory.set_premium(premium);
    }

    /// Lets the AWS identity with the spec's keys exchange tokens at STS for `audience` and
    /// impersonate `service_account`, as `POST /_standin/workload_identity` does. The binding
    /// of the same audience is replaced; the latest binding's keys are what `/aws/credentials`
    /// serves.
    pub fn add_workload_identity(&self, spec: WorkloadIdentitySpec) {
        self.shared.workload.add(spec);
    }

    /// A Google `external_account` credential (AWS source) whose every URL points here: STS
    /// at `/v1/token`, impersonation of `service_account` through `generateAccessToken`, and
    /// the AWS metadata at `/aws/...`.
    pub fn external_account_json(
        &self,
        audience: &str,
        service_account: &str,
    ) -> serde_json::Value {
        let base = &self.shared.issuer;
        serde_json::json!({
            "type": "external_account",
            "audience": audience,
            "subject_token_type": sts::AWS_SUBJECT_TOKEN_TYPE,
            "token_url": format!("{base}/v1/token"),
            "service_account_impersonation_url": format!(
                "{base}/v1/projects/-/serviceAccounts/{service_account}:generateAccessToken"
            ),
            "credential_source": {
                "environment_id": "aws1",
                "region_url": format!("{base}/aws/region"),
                "url": format!("{base}/aws/credentials"),
                "regional_cred_verification_url":
                    "https://sts.{region}.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15",
                "imdsv2_session_token_url": format!("{base}/aws/token"),
            },
            "universe_domain": "googleapis.com",
        })
    }

    /// Registers (or replaces) a web OAuth client, as `POST /_standin/oauth_client` does. Fails
    /// on an empty id or secret, no redirect URI, or one that is not an absolute URL.
    pub fn add_oauth_client(&self, spec: &OAuthClientSpec) -> anyhow::Result<()> {
        Ok(self.shared.oauth_clients.add(spec)?)
    }

    /// Registers (or replaces) a Google account that can sign in, as `POST /_standin/user`
    /// does; returns its `sub`.
    pub fn add_user(&self, spec: UserSpec) -> anyhow::Result<String> {
        Ok(self.shared.users.add(spec)?.sub.clone())
    }

    /// Deletes a Google account, as `DELETE /_standin/user` does: it can no longer sign in,
    /// and its refresh and access tokens stop working. `false` when there was none.
    pub fn remove_user(&self, email: &str) -> bool {
        self.shared.users.remove(email).is_some()
    }

    /// The authorization endpoint's URL, `{issuer}/o/oauth2/v2/auth`.
    pub fn authorize_url(&self) -> String {
        format!("{}{}", self.shared.issuer, signin::AUTHORIZE_PATH)
    }

    /// Requests received on each Google endpoint.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    /// Zeroes the request counters, returning what they held.
    pub fn reset_stats(&self) -> Stats {
        self.shared.counters.reset()
    }
}

/// Creates a service account on a blocking thread and renders its key file.
pub(crate) async fn create_service_account(
    shared: &Arc<Shared>,
    spec: ServiceAccountSpec,
) -> anyhow::Result<serde_json::Value> {
    let task = {
        let shared = shared.clone();
        move || shared.accounts.create(&spec)
    };
    let account = tokio::task::spawn_blocking(task)
        .await
        .context("the key generation task failed")??;
    Ok(account.key_file(&shared.issuer))
}

/// Unix time in seconds.
pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
