//! The stand-in's Google APIs over real HTTP: the token endpoint's JWT-bearer grant, the
//! Directory and Cloud Identity membership methods, IAM Credentials and STS. Each test starts
//! its own stand-in.

// clippy's allow-unwrap-in-tests covers #[test] fns, not the helpers here; a panic is a failure.
#![allow(clippy::unwrap_used)]

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use standin::{Options, ServiceAccountSpec, StandIn};

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const MEMBER_READONLY: &str =
    "https://www.googleapis.com/auth/admin.directory.group.member.readonly";
const CI_READONLY: &str = "https://www.googleapis.com/auth/cloud-identity.groups.readonly";
const SA: &str = "authz@proj-1.iam.gserviceaccount.com";

async fn start() -> StandIn {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    StandIn::start(listener, Options::default()).await.unwrap()
}

fn url(standin: &StandIn, path: &str) -> String {
    format!("{}{path}", standin.issuer())
}

fn unix_now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// Signs `claims` as a client library does with a key file: RS256, kid = private_key_id.
fn sign(key_file: &Value, claims: &Value) -> String {
    let key =
        EncodingKey::from_rsa_pem(key_file["private_key"].as_str().unwrap().as_bytes()).unwrap();
    let header = Header {
        kid: Some(key_file["private_key_id"].as_str().unwrap().to_owned()),
        ..Header::new(Algorithm::RS256)
    };
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

fn assertion_claims(standin: &StandIn, sub: Option<&str>, scope: &str) -> Value {
    let now = unix_now();
    let mut claims = json!({"iss": SA, "aud": standin.token_url(), "scope": scope,
                            "iat": now, "exp": now + 3600});
    if let Some(sub) = sub {
        claims["sub"] = json!(sub);
    }
    claims
}

async fn exchange(client: &Client, standin: &StandIn, assertion: &str) -> (StatusCode, Value) {
    let response = client
        .post(standin.token_url())
        .form(&[("grant_type", JWT_BEARER), ("assertion", assertion)])
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

async fn get_bearer(client: &Client, url: &str, token: &str) -> (StatusCode, Value) {
    let response = client.get(url).bearer_auth(token).send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

/// A tenant `example.com` with admin `admin@example.com`, and groups
/// `sre@example.com` ⊇ {`a@example.com`, `platform@example.com`, `ext@partner.com`},
/// `platform@example.com` ⊇ {`b@example.com`}.
fn tenant(standin: &StandIn) {
    standin.set_directory(&["example.com"], &["admin@example.com"]);
    standin.set_group(
        "sre@example.com",
        &["a@example.com", "Platform@example.com", "ext@partner.com"],
    );
    standin.set_group("platform@example.com", &["b@example.com"]);
}

/// A delegated directory token for `admin@example.com`.
async fn admin_token(client: &Client, standin: &StandIn, key_file: &Value) -> String {
    let claims = assertion_claims(standin, Some("admin@example.com"), MEMBER_READONLY);
    let (status, body) = exchange(client, standin, &sign(key_file, &claims)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn jwt_bearer_grant() {
    let standin = start().await;
    let client = Client::new();
    standin.set_directory(&["example.com"], &["admin@example.com"]);
    let key_file = standin
        .create_service_account(&ServiceAccountSpec {
            email: SA.into(),
            delegated_scopes: vec![MEMBER_READONLY.into()],
            group_admin: false,
        })
        .await;
    assert_eq!(key_file["type"], "service_account");
    assert_eq!(key_file["project_id"], "proj-1");
    assert_eq!(key_file["client_email"], SA);
    assert_eq!(key_file["token_uri"], standin.token_url());
    assert_eq!(key_file["private_key_id"].as_str().unwrap().len(), 40);
    assert!(
        key_file["private_key"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----\n")
    );
    assert_eq!(key_file["client_id"].as_str().unwrap().len(), 21);

    // Good: as itself, and delegated to the admin.
    for sub in [None, Some("admin@example.com")] {
        let claims = assertion_claims(&standin, sub, MEMBER_READONLY);
        let (status, body) = exchange(&client, &standin, &sign(&key_file, &claims)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body["access_token"].as_str().unwrap().starts_with("ya29."));
        assert_eq!(body["expires_in"], 3599);
        assert_eq!(body["token_type"], "Bearer");
    }

    // Bad assertions: invalid_grant.
    let mut wrong_aud = assertion_claims(&standin, None, MEMBER_READONLY);
    wrong_aud["aud"] = json!("https://oauth2.googleapis.com/token");
    let mut expired = assertion_claims(&standin, None, MEMBER_READONLY);
    expired["iat"] = json!(unix_now() - 7200);
    expired["exp"] = json!(unix_now() - 3600);
    let mut too_long = assertion_claims(&standin, None, MEMBER_READONLY);
    too_long["exp"] = json!(unix_now() + 7200);
    let other = standin
        .create_service_account(&ServiceAccountSpec {
            email: "other@proj-1.iam.gserviceaccount.com".into(),
            ..Default::default()
        })
        .await;
    // Signed with another account's key, under this account's kid.
    let mut other_key = other.clone();
    other_key["private_key_id"] = key_file["private_key_id"].clone();
    let good = assertion_claims(&standin, None, MEMBER_READONLY);
    for (what, assertion) in [
        ("wrong aud", sign(&key_file, &wrong_aud)),
        ("expired", sign(&key_file, &expired)),
        ("longer than an hour", sign(&key_file, &too_long)),
        ("wrong key", sign(&other_key, &good)),
        ("unknown kid", sign(&other, &good)),
        ("not a JWT", "abc".to_owned()),
    ] {
        let (status, body) = exchange(&client, &standin, &assertion).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {body}");
        assert_eq!(body["error"], "invalid_grant", "{what}: {body}");
        assert!(body["error_description"].is_string());
    }

    // Delegation: only to an admin, only for delegated scopes.
    for (sub, scope) in [
        ("a@example.com", MEMBER_READONLY),
        ("admin@example.com", CI_READONLY),
    ] {
        let claims = assertion_claims(&standin, Some(sub), scope);
        let (status, body) = exchange(&client, &standin, &sign(&key_file, &claims)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{sub} {scope}");
        assert_eq!(body["error"], "unauthorized_client");
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .starts_with("Client is unauthorized to retrieve access tokens")
        );
    }
    // Undelegated account: even the admin is refused.
    let mut undelegated = assertion_claims(&standin, Some("admin@example.com"), MEMBER_READONLY);
    undelegated["iss"] = json!("other@proj-1.iam.gserviceaccount.com");
    let (status, body) = exchange(&client, &standin, &sign(&other, &undelegated)).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::UNAUTHORIZED, &json!("unauthorized_client"))
    );

    let (status, body) = exchange(
        &client,
        &standin,
        &sign(&key_file, &assertion_claims(&standin, None, " ")),
    )
    .await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_scope"))
    );

    let response = client
        .post(standin.token_url())
        .form(&[("grant_type", "authorization_code"), ("code", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "unsupported_grant_type");
}

#[tokio::test]
async fn directory_membership() {
    let standin = start().await;
    let client = Client::new();
    tenant(&standin);
    let key_file = standin
        .create_service_account(&ServiceAccountSpec {
            email: SA.into(),
            delegated_scopes: vec![MEMBER_READONLY.into(), CI_READONLY.into()],
            group_admin: false,
        })
        .await;
    let token = admin_token(&client, &standin, &key_file).await;
    let has_member = |group: &str, member: &str| {
        url(
            &standin,
            &format!("/admin/directory/v1/groups/{group}/hasMember/{member}"),
        )
    };

    for (group, member, expected) in [
        ("sre@example.com", "a@example.com", true),
        ("SRE@example.com", "A@Example.com", true),
        // Through platform@example.com.
        ("sre@example.com", "b@example.com", true),
        ("sre%40example.com", "b%40example.com", true),
        ("sre@example.com", "c@example.com", false),
        ("platform@example.com", "a@example.com", false),
    ] {
        let (status, body) = get_bearer(&client, &has_member(group, member), &token).await;
        assert_eq!(status, StatusCode::OK, "{group} {member}: {body}");
        assert_eq!(body, json!({"isMember": expected}), "{group} {member}");
    }

    // Outside the tenant's domain: Google's 400 "Invalid Input".
    let (status, body) = get_bearer(
        &client,
        &has_member("sre@example.com", "ext@partner.com"),
        &token,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], 400);
    assert_eq!(body["error"]["message"], "Invalid Input");
    assert_eq!(body["error"]["errors"][0]["domain"], "global");
    assert!(body["error"].get("status").is_none());
    let (status, body) = get_bearer(
        &client,
        &has_member("nope@example.com", "a@example.com"),
        &token,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["message"], "Resource Not Found: groupKey");

    // members.get: direct members only, any domain, with a status.
    let members_get = |member: &str| {
        url(
            &standin,
            &format!("/admin/directory/v1/groups/sre@example.com/members/{member}"),
        )
    };
    let (status, body) = get_bearer(&client, &members_get("ext@partner.com"), &token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["kind"], "admin#directory#member");
    assert_eq!(body["email"], "ext@partner.com");
    assert_eq!(body["role"], "MEMBER");
    assert_eq!(body["type"], "USER");
    assert_eq!(body["status"], "ACTIVE");
    assert!(body["id"].is_string());
    standin
        .set_member_status("sre@example.com", "EXT@partner.com", "SUSPENDED")
        .unwrap();
    let (_, body) = get_bearer(&client, &members_get("ext@partner.com"), &token).await;
    assert_eq!(body["status"], "SUSPENDED");
    let (_, body) = get_bearer(&client, &members_get("platform@example.com"), &token).await;
    assert_eq!(body["type"], "GROUP");
    let (status, body) = get_bearer(&client, &members_get("b@example.com"), &token).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "b is only a nested member");
    assert_eq!(body["error"]["code"], 404);
    assert!(
        standin
            .set_member_status("sre@example.com", "b@example.com", "SUSPENDED")
            .is_err()
    );

    // The control API does the same.
    let response = client
        .put(url(&standin, "/_standin/group"))
        .json(
            &json!({"group": "sre@example.com", "members": ["a@example.com"],
                      "status": {"a@example.com": "SUSPENDED"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (_, body) = get_bearer(&client, &members_get("a@example.com"), &token).await;
    assert_eq!(body["status"], "SUSPENDED");
    let (_, body) = get_bearer(
        &client,
        &has_member("sre@example.com", "b@example.com"),
        &token,
    )
    .await;
    assert_eq!(body, json!({"isMember": false}));

    // Authorization: no or unknown token → 401; undelegated or wrong scope → 403.
    let url_a = has_member("sre@example.com", "a@example.com");
    let response = client.get(&url_a).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let (status, body) = get_bearer(&client, &url_a, "ya29.unknown").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], 401);
    let (_, own) = exchange(
        &client,
        &standin,
        &sign(
            &key_file,
            &assertion_claims(&standin, None, MEMBER_READONLY),
        ),
    )
    .await;
    let (status, body) = get_bearer(&client, &url_a, own["access_token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["errors"][0]["reason"], "forbidden");
    assert_eq!(
        body["error"]["message"],
        "Not Authorized to access this resource/api"
    );
    let (_, wrong_scope) = exchange(
        &client,
        &standin,
        &sign(
            &key_file,
            &assertion_claims(&standin, Some("admin@example.com"), CI_READONLY),
        ),
    )
    .await;
    let (status, _) = get_bearer(
        &client,
        &url_a,
        wrong_scope["access_token"].as_str().unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn cloud_identity_membership() {
    let standin = start().await;
    let client = Client::new();
    tenant(&standin);
    let key_file = standin
        .create_service_account(&ServiceAccountSpec {
            email: SA.into(),
            group_admin: true,
            ..Default::default()
        })
        .await;
    let claims = assertion_claims(&standin, None, CI_READONLY);
    let (_, body) = exchange(&client, &standin, &sign(&key_file, &claims)).await;
    let token = body["access_token"].as_str().unwrap().to_owned();

    let (status, body) = get_bearer(
        &client,
        &url(&standin, "/v1/groups:lookup?groupKey.id=sre%40example.com"),
        &token,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let name = body["name"].as_str().unwrap().to_owned();
    assert!(name.starts_with("groups/"));
    let (status, body) = get_bearer(
        &client,
        &url(&standin, "/v1/groups:lookup?groupKey.id=nope%40example.com"),
        &token,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["status"], "NOT_FOUND");

    let check = |query: &str| {
        let mut url = reqwest::Url::parse(&url(
            &standin,
            &format!("/v1/{name}/memberships:checkTransitiveMembership"),
        ))
        .unwrap();
        url.query_pairs_mut().append_pair("query", query);
        url.to_string()
    };
    for (query, expected) in [
        ("member_key_id == 'b@example.com'", true),
        ("member_key_id == \"ext@partner.com\"", true),
        ("member_key_id == 'c@example.com'", false),
    ] {
        let (status, body) = get_bearer(&client, &check(query), &token).await;
        assert_eq!(status, StatusCode::OK, "{query}: {body}");
        assert_eq!(body, json!({"hasMembership": expected}), "{query}");
    }
    let (status, body) = get_bearer(&client, &check("member_key_id = b"), &token).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");

    // Without premium: 403 PERMISSION_DENIED.
    let response = client
        .post(url(&standin, "/_standin/cloud_identity"))
        .json(&json!({"premium": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (status, body) =
        get_bearer(&client, &check("member_key_id == 'b@example.com'"), &token).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["status"], "PERMISSION_DENIED");
    standin.set_premium(true);

    // A service account without the group-admin role: 403.
    let plain = standin
        .create_service_account(&ServiceAccountSpec {
            email: "plain@proj-1.iam.gserviceaccount.com".into(),
            ..Default::default()
        })
        .await;
    let mut claims = assertion_claims(&standin, None, CI_READONLY);
    claims["iss"] = json!("plain@proj-1.iam.gserviceaccount.com");
    let (_, body) = exchange(&client, &standin, &sign(&plain, &claims)).await;
    let (status, body) = get_bearer(
        &client,
        &check("member_key_id == 'b@example.com'"),
        body["access_token"].as_str().unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["status"], "PERMISSION_DENIED");
    let stats = standin.stats();
    assert_eq!(
        (stats.cloudidentity_lookup, stats.cloudidentity_check),
        (2, 6)
    );
}
