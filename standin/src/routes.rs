//! The HTTP surface: Google's endpoints (the OpenID ones here, the APIs' handlers in their own
//! modules), then the `/_standin/` control endpoints that
//! tests and benchmarks drive. Control endpoints are never faulted nor counted, and read their
//! JSON body whatever its content type (an empty body counts as `{}`), so plain `curl -d` works.

use std::sync::Arc;

use axum::{
    Form, Router,
    body::Bytes,
    extract::{
        Query, State,
        rejection::{FormRejection, QueryRejection},
    },
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse as _, Response},
    routing::{get, post, put},
    serve::ListenerExt as _,
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Value, json};
use tracing::{debug, error, info};

use crate::{
    AccessTokenSpec, FaultSpec, OAuthClientSpec, ServiceAccountSpec, Shared, UserSpec,
    WorkloadIdentitySpec, admin_sdk, cloud_identity, directory::DirectorySpec, iam_credentials,
    imds, keys::SigningKey, now, oauth, signin, stats::Counter, sts,
};

/// The content type Google labels its JSON with.
pub(crate) const JSON: &str = "application/json; charset=UTF-8";

/// Serves `shared` on `listener` from a spawned task that lives as long as the runtime.
pub(crate) fn spawn_server(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    let app = router(shared);
    // Small request/response exchanges: Nagle's algorithm would only add latency to benchmarks.
    let listener = listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            debug!(%err, "could not set TCP_NODELAY");
        }
    });
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            error!(%err, "stand-in server stopped");
        }
    });
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/oauth2/v3/certs", get(jwks))
        .route("/tokeninfo", get(tokeninfo).post(tokeninfo))
        .route("/v1/userinfo", get(userinfo).post(userinfo))
        .route(
            signin::AUTHORIZE_PATH,
            get(signin::authorize).post(signin::sign_in),
        )
        .route("/token", post(oauth::token))
        .route(
            "/admin/directory/v1/groups/{group}/hasMember/{member}",
            get(admin_sdk::has_member),
        )
        .route(
            "/admin/directory/v1/groups/{group}/members/{member}",
            get(admin_sdk::get_member),
        )
        .route("/admin/directory/v1/users/{user}", get(admin_sdk::get_user))
        .route("/v1/groups:lookup", get(cloud_identity::lookup))
        .route(
            "/v1/groups/{id}/memberships:checkTransitiveMembership",
            get(cloud_identity::check_transitive),
        )
        .route(
            "/v1/projects/{project}/serviceAccounts/{name}",
            post(iam_credentials::dispatch),
        )
        .route("/v1/token", post(sts::token))
        .route("/aws/token", put(imds::session_token))
        .route("/aws/region", get(imds::region))
        .route("/aws/credentials", get(imds::role))
        .route("/aws/credentials/{role}", get(imds::credentials))
        .route("/_standin/id_token", post(mint_id_token))
        .route("/_standin/access_token", post(mint_access_token))
        .route("/_standin/rotate", post(rotate))
        .route("/_standin/activate", post(activate))
        .route("/_standin/fault", post(set_fault))
        .route("/_standin/service_account", post(create_service_account))
        .route("/_standin/directory", post(set_directory))
        .route("/_standin/group", put(set_group))
        .route("/_standin/cloud_identity", post(set_cloud_identity))
        .route("/_standin/workload_identity", post(add_workload_identity))
        .route("/_standin/oauth_client", post(add_oauth_client))
        .route("/_standin/user", post(add_user).delete(remove_user))
        .route("/_standin/stats", get(stats))
        .route("/_standin/stats/reset", post(reset_stats))
        .fallback(not_found)
        .with_state(shared)
}

/// Google's discovery document, with every URL under `issuer` but the browser's sign-in page,
/// under `browser` when given. The device and revocation endpoints are announced (clients
/// require some of them) but not served.
pub(crate) fn discovery_document(issuer: &str, browser: Option<&str>) -> Value {
    let browser = browser.unwrap_or(issuer);
    json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{browser}/o/oauth2/v2/auth"),
        "device_authorization_endpoint": format!("{issuer}/device/code"),
        "token_endpoint": format!("{issuer}/token"),
        "userinfo_endpoint": format!("{issuer}/v1/userinfo"),
        "revocation_endpoint": format!("{issuer}/revoke"),
        "jwks_uri": format!("{issuer}/oauth2/v3/certs"),
        "response_types_supported": [
            "code", "token", "id_token", "code token", "code id_token", "token id_token",
            "code token id_token", "none"
        ],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "email", "profile"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "claims_supported": [
            "aud", "email", "email_verified", "exp", "family_name", "given_name", "iat", "iss",
            "name", "picture", "sub"
        ],
        "code_challenge_methods_supported": ["plain", "S256"],
        "grant_types_supported": [
            "authorization_code", "refresh_token",
            "urn:ietf:params:oauth:grant-type:device_code",
            "urn:ietf:params:oauth:grant-type:jwt-bearer"
        ]
    })
}

// ---- Google's endpoints ----

/// Counts the request, then plays the endpoint's fault if one is set: `Some` is the response
/// to send instead of the real one.
pub(crate) async fn gate(shared: &Shared, counter: Counter) -> Option<Response> {
    shared.counters.hit(counter);
    let endpoint = counter.endpoint();
    let fault = shared.faults.get(endpoint)?;
    debug!(?endpoint, ?fault, "playing fault");
    fault.play().await
}

/// `GET /.well-known/openid-configuration`: the discovery document.
async fn discovery(State(shared): State<Arc<Shared>>) -> Response {
    if let Some(faulted) = gate(&shared, Counter::Discovery).await {
        return faulted;
    }
    (
        [
            (header::CONTENT_TYPE, JSON),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        shared.discovery.clone(),
    )
        .into_response()
}

/// `GET /oauth2/v3/certs`: the published keys, cacheable for `jwks_max_age` like Google's.
async fn jwks(State(shared): State<Arc<Shared>>) -> Response {
    if let Some(faulted) = gate(&shared, Counter::Jwks).await {
        return faulted;
    }
    let cache_control = format!(
        "public, max-age={}, must-revalidate, no-transform",
        shared.jwks_max_age
    );
    (
        [
            (header::CONTENT_TYPE, JSON.to_owned()),
            (header::CACHE_CONTROL, cache_control),
        ],
        shared.keys.jwks().to_string(),
    )
        .into_response()
}

/// Where an access token may come from: `?access_token=` or a form body.
#[derive(Debug, Default, Deserialize)]
struct TokenParams {
    access_token: Option<String>,
}

/// The access token of a request: form body, then query string, then `Authorization: Bearer`.
fn access_token(
    headers: &HeaderMap,
    query: Result<Query<TokenParams>, QueryRejection>,
    form: Result<Form<TokenParams>, FormRejection>,
) -> Option<String> {
    let from_form = form.ok().and_then(|Form(p)| p.access_token);
    let from_query = || query.ok().and_then(|Query(p)| p.access_token);
    let from_header = || {
        let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned())
    };
    from_form
        .or_else(from_query)
        .or_else(from_header)
        .filter(|t| !t.is_empty())
}

/// `GET /tokeninfo?access_token=...`, `POST /tokeninfo` with form body `access_token=...`, or
/// either with `Authorization: Bearer ...`: 200 with all-string values for a live token, 400
/// `invalid_token` otherwise.
async fn tokeninfo(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    query: Result<Query<TokenParams>, QueryRejection>,
    form: Result<Form<TokenParams>, FormRejection>,
) -> Response {
    if let Some(faulted) = gate(&shared, Counter::Tokeninfo).await {
        return faulted;
    }
    let Some(token) = access_token(&headers, query, form) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": "invalid_request",
                    "error_description": "Either access_token, id_token, or token_handle required"}),
        );
    };
    match shared
        .tokens
        .tokeninfo(&token, now())
        .filter(|info| account_active(&shared, info))
    {
        Some(info) => json_response(StatusCode::OK, &info),
        None => json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": "invalid_token", "error_description": "Invalid Value"}),
        ),
    }
}

/// `GET`/`POST /v1/userinfo` with `Authorization: Bearer ...` (or `access_token=`): 200 with
/// the user's claims for a live token, 401 with `WWW-Authenticate` otherwise.
async fn userinfo(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    query: Result<Query<TokenParams>, QueryRejection>,
    form: Result<Form<TokenParams>, FormRejection>,
) -> Response {
    if let Some(faulted) = gate(&shared, Counter::Userinfo).await {
        return faulted;
    }
    let info = access_token(&headers, query, form)
        .and_then(|t| shared.tokens.userinfo(&t, now()))
        .filter(|info| account_active(&shared, info));
    match info {
        Some(info) => json_response(StatusCode::OK, &info),
        None => {
            let mut response = json_response(
                StatusCode::UNAUTHORIZED,
                &json!({"error": "invalid_request", "error_description": "Invalid Credentials"}),
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static(r#"Bearer error="invalid_token""#),
            );
            response
        }
    }
}

/// Google stops honouring the access tokens of a suspended or deleted account.
fn account_active(shared: &Shared, info: &Value) -> bool {
    info.get("sub")
        .and_then(Value::as_str)
        .is_none_or(|sub| !shared.users.is_disabled(sub))
}

// ---- control endpoints ----

/// Body of `POST /_standin/id_token`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdTokenRequest {
    claims: Value,
    kid: Option<String>,
    alg: Option<String>,
}

/// `POST /_standin/id_token` `{"claims": {...}, "kid"?: "...", "alg"?: "..."}` →
/// `{"token": "<jwt>"}`.
///
/// Signs exactly `claims` with the current key; header `{"alg":"RS256","kid":<current
/// kid>,"typ":"JWT"}`. `kid` replaces the header's kid (still signed with the current key), to
/// test unknown kids. `alg` (default RS256) may be RS256/384/512, PS256/384/512, HS256/384/512
/// (HMAC keyed with the current public key's SPKI PEM: algorithm confusion) or `none`
/// (unsigned, empty signature); anything else is a 400.
async fn mint_id_token(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let request: IdTokenRequest = match parse_body(&body) {
        Ok(request) => request,
        Err(err) => return bad_request(&err.to_string()),
    };
    if !request.claims.is_object() {
        return bad_request("claims must be a JSON object");
    }
    let key = shared.keys.current();
    match key.sign(
        &request.claims,
        request.kid.as_deref(),
        request.alg.as_deref(),
    ) {
        Ok(token) => json_response(StatusCode::OK, &json!({ "token": token })),
        Err(err) => bad_request(&format!("{err:#}")),
    }
}

/// `POST /_standin/access_token` [`AccessTokenSpec`] as JSON (`sub` and `aud` required) →
/// `{"token": "ya29....", "exp": <unix seconds>}`.
///
/// The token is remembered; tokeninfo and userinfo answer for it until `exp`. A zero or
/// negative `expires_in` mints an already expired token.
async fn mint_access_token(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let spec: AccessTokenSpec = match parse_body(&body) {
        Ok(spec) => spec,
        Err(err) => return bad_request(&err.to_string()),
    };
    if spec.sub.is_empty() || spec.aud.is_empty() {
        return bad_request("sub and aud are required");
    }
    let (token, exp) = shared.tokens.mint(spec, now());
    json_response(StatusCode::OK, &json!({ "token": token, "exp": exp }))
}

/// Body of `POST /_standin/rotate`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RotateRequest {
    keep_old: bool,
    /// Sign with the new key at once (default). `false` only publishes it; see `/activate`.
    #[serde(default = "yes")]
    activate: bool,
}

fn yes() -> bool {
    true
}

/// `POST /_standin/activate` → `{"kid"}`: sign from now on with the newest published key.
async fn activate(State(shared): State<Arc<Shared>>) -> Response {
    let kid = shared.keys.activate_newest();
    info!(%kid, "signing with the newest published key");
    json_response(StatusCode::OK, &json!({ "kid": kid }))
}

/// `POST /_standin/rotate` `{"keep_old": bool, "activate": bool}` (defaults false, true) →
/// `{"kid": "<new kid>"}`.
///
/// Generates a new key, makes it the signing key and publishes it first in the JWKS. With
/// `keep_old` the keys published so far stay in the JWKS too; without, they are dropped.
async fn rotate(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let request: RotateRequest = match parse_body(&body) {
        Ok(request) => request,
        Err(err) => return bad_request(&err.to_string()),
    };
    let key = match tokio::task::spawn_blocking(SigningKey::generate).await {
        Ok(Ok(key)) => key,
        Ok(Err(err)) => return server_error(&format!("{err:#}")),
        Err(err) => return server_error(&format!("key generation task failed: {err}")),
    };
    let kid = shared.keys.install(key, request.keep_old, request.activate);
    info!(%kid, keep_old = request.keep_old, "rotated the signing key");
    json_response(StatusCode::OK, &json!({ "kid": kid }))
}

/// `POST /_standin/fault` [`FaultSpec`] as JSON →  `{"ok": true}`.
///
/// `{"mode": "ok"|"error"|"hang"|"garbage"|"reset"|"empty"|"quota", "status"?: u16,
/// "endpoints"?: [...]}` sets the mode on the listed endpoints (`discovery`, `jwks`,
/// `tokeninfo`, `userinfo`, `token`, `directory`, `cloudidentity`, `iamcredentials`, `sts`,
/// `authorize`;
/// default all of them): `error` answers `status` (default 503) with a small JSON body, `hang`
/// waits 30 s and then answers normally, `garbage` answers 200 with a non-JSON body labelled as
/// JSON, `quota` answers Google's rate-limit error, and `ok` clears the fault. Faulted requests
/// are still counted.
async fn set_fault(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let spec: FaultSpec = match parse_body(&body) {
        Ok(spec) => spec,
        Err(err) => return bad_request(&err.to_string()),
    };
    if let Err(err) = shared.faults.set(&spec) {
        return bad_request(&format!("{err:#}"));
    }
    info!(?spec, "fault set");
    json_response(StatusCode::OK, &json!({ "ok": true }))
}

/// `POST /_standin/service_account` [`ServiceAccountSpec`] as JSON
/// (`{"email", "delegated_scopes"?: [...], "group_admin"?: bool}`) → the account's key file,
/// exactly as Google issues it (`token_uri` is this stand-in's `/token`). Creating an account
/// again replaces it, with a new key.
async fn create_service_account(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let spec: ServiceAccountSpec = match parse_body(&body) {
        Ok(spec) => spec,
        Err(err) => return bad_request(&err.to_string()),
    };
    match crate::create_service_account(&shared, spec).await {
        Ok(key_file) => json_response(StatusCode::OK, &key_file),
        Err(err) => bad_request(&format!("{err:#}")),
    }
}

/// `POST /_standin/directory` `{"domains": [...], "admins": [...]}` → `{"ok": true}`: the
/// domains the Workspace tenant owns (`hasMember` answers 400 for members elsewhere) and its
/// admins (valid `sub`s of delegated assertions). Replaces both lists.
async fn set_directory(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let spec: DirectorySpec = match parse_body(&body) {
        Ok(spec) => spec,
        Err(err) => return bad_request(&err.to_string()),
    };
    shared.directory.configure(&spec);
    json_response(StatusCode::OK, &json!({ "ok": true }))
}

/// Body of `PUT /_standin/group`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupRequest {
    group: String,
    members: Vec<String>,
    #[serde(default)]
    status: std::collections::HashMap<String, String>,
}

/// `PUT /_standin/group` `{"group": "sre@x", "members": ["a@x", "nested@x"], "status"?:
/// {"a@x": "SUSPENDED"}}` → `{"ok": true}`: replaces the group's direct members (a member
/// that is itself a group nests it); `status` sets what `members.get` reports (default
/// `ACTIVE`) and may name direct members only.
async fn set_group(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let request: GroupRequest = match parse_body(&body) {
        Ok(request) => request,
        Err(err) => return bad_request(&err.to_string()),
    };
    shared.directory.set_group(&request.group, &request.members);
    for (member, status) in &request.status {
        if let Err(err) = shared.directory.set_status(&request.group, member, status) {
            return bad_request(&format!("{err:#}"));
        }
    }
    json_response(StatusCode::OK, &json!({ "ok": true }))
}

/// Body of `POST /_standin/cloud_identity`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CloudIdentityRequest {
    premium: bool,
}

/// `POST /_standin/cloud_identity` `{"premium": bool}` → `{"ok": true}`. Without premium
/// (default: with), `checkTransitiveMembership` answers 403 as for a tenant without
/// Enterprise or Cloud Identity Premium.
async fn set_cloud_identity(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let request: CloudIdentityRequest = match parse_body(&body) {
        Ok(request) => request,
        Err(err) => return bad_request(&err.to_string()),
    };
    shared.directory.set_premium(request.premium);
    json_response(StatusCode::OK, &json!({ "ok": true }))
}

/// `POST /_standin/workload_identity` [`WorkloadIdentitySpec`] as JSON (`{"audience",
/// "aws_access_key_id", "aws_secret_access_key", "aws_session_token"?, "service_account"}`) →
/// `{"ok": true}`: STS then exchanges requests signed with these keys for `audience`, and the
/// federated token may impersonate `service_account`.
async fn add_workload_identity(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let spec: WorkloadIdentitySpec = match parse_body(&body) {
        Ok(spec) => spec,
        Err(err) => return bad_request(&err.to_string()),
    };
    shared.workload.add(spec);
    json_response(StatusCode::OK, &json!({ "ok": true }))
}

/// `POST /_standin/oauth_client` [`OAuthClientSpec`] as JSON (`{"client_id", "client_secret",
/// "redirect_uris": [...]}`) → `{"ok": true}`: a confidential web client that may sign users
/// in at `/o/oauth2/v2/auth` (to exactly these redirect URIs) and redeem codes at `/token`.
/// Registering a client id again replaces it.
async fn add_oauth_client(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let spec: OAuthClientSpec = match parse_body(&body) {
        Ok(spec) => spec,
        Err(err) => return bad_request(&err.to_string()),
    };
    if let Err(err) = shared.oauth_clients.add(&spec) {
        return bad_request(&err.to_string());
    }
    info!(client_id = %spec.client_id, "OAuth client registered");
    json_response(StatusCode::OK, &json!({ "ok": true }))
}

/// `POST /_standin/user` [`UserSpec`] as JSON (`{"email", "sub"?, "hd"?, "email_verified"?,
/// "name"?}`) → `{"ok": true, "sub": "..."}`: a Google account that can sign in (a Workspace
/// account with `hd`, a consumer one without). Registering an email again replaces it.
async fn add_user(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let spec: UserSpec = match parse_body(&body) {
        Ok(spec) => spec,
        Err(err) => return bad_request(&err.to_string()),
    };
    match shared.users.add(spec) {
        Ok(user) => json_response(StatusCode::OK, &json!({ "ok": true, "sub": user.sub })),
        Err(err) => bad_request(&err.to_string()),
    }
}

/// Body of `DELETE /_standin/user`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveUser {
    email: String,
}

/// `DELETE /_standin/user` `{"email"}` → `{"ok": true}`, or 404 when there is no such account.
async fn remove_user(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let spec: RemoveUser = match parse_body(&body) {
        Ok(spec) => spec,
        Err(err) => return bad_request(&err.to_string()),
    };
    match shared.users.remove(&spec.email) {
        Some(_) => json_response(StatusCode::OK, &json!({ "ok": true })),
        None => json_response(
            StatusCode::NOT_FOUND,
            &json!({ "error": "no such account" }),
        ),
    }
}

/// `GET /_standin/stats` → [`Stats`](crate::Stats) as JSON (`{"discovery": n, "jwks": n, ...}`):
/// requests received on each Google method, faulted ones included.
async fn stats(State(shared): State<Arc<Shared>>) -> Response {
    json_response(StatusCode::OK, &shared.counters.snapshot())
}

/// `POST /_standin/stats/reset` → the counts just before they were zeroed (same shape as
/// `GET /_standin/stats`).
async fn reset_stats(State(shared): State<Arc<Shared>>) -> Response {
    json_response(StatusCode::OK, &shared.counters.reset())
}

async fn not_found(uri: axum::http::Uri) -> Response {
    info!(%uri, "no such stand-in endpoint");
    json_response(StatusCode::NOT_FOUND, &json!({"error": "not_found"}))
}

// ---- helpers ----

/// A control body as `T`; an empty body reads as `{}`.
fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, serde_json::Error> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body)
}

pub(crate) fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    let body = serde_json::to_vec(body)
        .expect("JSON values and plain structs with string keys always serialize");
    (status, [(header::CONTENT_TYPE, JSON)], body).into_response()
}

fn bad_request(description: &str) -> Response {
    json_response(
        StatusCode::BAD_REQUEST,
        &json!({"error": "bad_request", "error_description": description}),
    )
}

fn server_error(description: &str) -> Response {
    error!(description, "control request failed");
    json_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        &json!({"error": "internal", "error_description": description}),
    )
}
