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
        .form(&[("grant_type", "password"), ("username", "x")])
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

const AUDIENCE: &str =
    "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/pool/providers/aws";
const AKID: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

/// `YYYYMMDDTHHMMSSZ` of a unix time (civil-from-days, written out independently of the
/// stand-in's own).
fn amz_date(unix: i64) -> String {
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    let mut year = 1970;
    let mut days_left = days;
    let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    while days_left >= if leap(year) { 366 } else { 365 } {
        days_left -= if leap(year) { 366 } else { 365 };
        year += 1;
    }
    let lengths = [
        31,
        if leap(year) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let mut month = 0;
    while days_left >= lengths[month] {
        days_left -= lengths[month];
        month += 1;
    }
    format!(
        "{year:04}{:02}{:02}T{:02}{:02}{:02}Z",
        month + 1,
        days_left + 1,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn hmac_sha256(key: &[u8], data: &str) -> Vec<u8> {
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn sha256_hex(data: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(data.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The subject token Google's AWS flow builds: a GetCallerIdentity request signed with SigV4
/// (host, x-amz-date, x-goog-cloud-target-resource and, with a session token,
/// x-amz-security-token), serialized to JSON and URL-encoded.
fn aws_subject_token(akid: &str, secret: &str, session: Option<&str>, target: &str) -> String {
    let region = "us-east-1";
    let host = format!("sts.{region}.amazonaws.com");
    let amz_date = amz_date(unix_now());
    let date = &amz_date[..8];
    let mut headers = vec![
        ("host", host.clone()),
        ("x-amz-date", amz_date.clone()),
        ("x-goog-cloud-target-resource", target.to_owned()),
    ];
    if let Some(session) = session {
        headers.push(("x-amz-security-token", session.to_owned()));
    }
    headers.sort();
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed_headers = headers
        .iter()
        .map(|(k, _)| *k)
        .collect::<Vec<_>>()
        .join(";");
    let canonical_request = format!(
        "POST\n/\nAction=GetCallerIdentity&Version=2011-06-15\n{canonical_headers}\n{signed_headers}\n{}",
        sha256_hex("")
    );
    let scope = format!("{date}/{region}/sts/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        sha256_hex(&canonical_request)
    );
    let k_date = hmac_sha256(format!("AWS4{secret}").as_bytes(), date);
    let k_region = hmac_sha256(&k_date, region);
    let k_service = hmac_sha256(&k_region, "sts");
    let k_signing = hmac_sha256(&k_service, "aws4_request");
    let signature: String = hmac_sha256(&k_signing, &string_to_sign)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut json_headers = vec![json!({"key": "Authorization", "value": format!(
        "AWS4-HMAC-SHA256 Credential={akid}/{scope}, SignedHeaders={signed_headers}, Signature={signature}"
    )})];
    json_headers.extend(headers.iter().map(|(k, v)| json!({"key": k, "value": v})));
    let request = json!({
        "url": format!("https://{host}?Action=GetCallerIdentity&Version=2011-06-15"),
        "method": "POST",
        "headers": json_headers,
    });
    url::form_urlencoded::byte_serialize(request.to_string().as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

async fn sts_exchange(
    client: &Client,
    standin: &StandIn,
    subject_token: &str,
) -> (StatusCode, Value) {
    let response = client
        .post(url(standin, "/v1/token"))
        .form(&[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("audience", AUDIENCE),
            ("scope", "https://www.googleapis.com/auth/cloud-platform"),
            (
                "requested_token_type",
                "urn:ietf:params:oauth:token-type:access_token",
            ),
            (
                "subject_token_type",
                "urn:ietf:params:aws:token-type:aws4_request",
            ),
            ("subject_token", subject_token),
        ])
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

async fn post_bearer(client: &Client, url: &str, token: &str, body: &Value) -> (StatusCode, Value) {
    let response = client
        .post(url)
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

/// Without a key file: AWS identity → STS → generateAccessToken / signJwt → a delegated
/// directory token from `/token`.
#[tokio::test]
async fn workload_identity_chain() {
    let standin = start().await;
    let client = Client::new();
    tenant(&standin);
    standin
        .create_service_account(&ServiceAccountSpec {
            email: SA.into(),
            delegated_scopes: vec![MEMBER_READONLY.into()],
            group_admin: true,
        })
        .await;
    let response = client
        .post(url(&standin, "/_standin/workload_identity"))
        .json(&json!({"audience": AUDIENCE, "aws_access_key_id": AKID,
                      "aws_secret_access_key": SECRET, "aws_session_token": "session-1",
                      "service_account": SA}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // The external_account credential and the metadata it points at.
    let credential = standin.external_account_json(AUDIENCE, SA);
    assert_eq!(credential["type"], "external_account");
    assert_eq!(credential["token_url"], url(&standin, "/v1/token"));
    assert_eq!(credential["credential_source"]["environment_id"], "aws1");
    let source = &credential["credential_source"];
    let text = |url: String| {
        let client = client.clone();
        async move { client.get(url).send().await.unwrap().text().await.unwrap() }
    };
    assert_eq!(
        text(source["region_url"].as_str().unwrap().to_owned()).await,
        "us-east-1a"
    );
    let role = text(source["url"].as_str().unwrap().to_owned()).await;
    let (status, creds) = get_bearer(
        &client,
        &format!("{}/{role}", source["url"].as_str().unwrap()),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (creds["AccessKeyId"].as_str(), creds["Token"].as_str()),
        (Some(AKID), Some("session-1"))
    );
    let response = client
        .put(source["imdsv2_session_token_url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // STS: bad signature, wrong target, wrong key id, wrong session → invalid_grant.
    for (what, token) in [
        (
            "wrong secret",
            aws_subject_token(AKID, "not-the-secret", Some("session-1"), AUDIENCE),
        ),
        (
            "wrong target",
            aws_subject_token(
                AKID,
                SECRET,
                Some("session-1"),
                "//iam.googleapis.com/other",
            ),
        ),
        (
            "wrong key id",
            aws_subject_token("AKIAOTHER", SECRET, None, AUDIENCE),
        ),
        (
            "wrong session",
            aws_subject_token(AKID, SECRET, Some("session-2"), AUDIENCE),
        ),
        ("not JSON", "%7Bnope".to_owned()),
    ] {
        let (status, body) = sts_exchange(&client, &standin, &token).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {body}");
        assert_eq!(body["error"], "invalid_grant", "{what}: {body}");
    }
    // A good one, with and without the session token.
    let (status, body) = sts_exchange(
        &client,
        &standin,
        &aws_subject_token(AKID, SECRET, None, AUDIENCE),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = sts_exchange(
        &client,
        &standin,
        &aws_subject_token(AKID, SECRET, Some("session-1"), AUDIENCE),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    let federated = body["access_token"].as_str().unwrap().to_owned();

    // generateAccessToken: only with the federated token of the binding.
    let generate = url(
        &standin,
        &format!("/v1/projects/-/serviceAccounts/{SA}:generateAccessToken"),
    );
    let request = json!({"scope": [CI_READONLY, "https://www.googleapis.com/auth/cloud-platform"], "lifetime": "1800s"});
    let (status, body) = post_bearer(&client, &generate, &federated, &request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let sa_token = body["accessToken"].as_str().unwrap().to_owned();
    let expire_time = body["expireTime"].as_str().unwrap();
    assert!(
        expire_time.ends_with('Z') && expire_time.len() == 20,
        "{expire_time}"
    );
    let (status, body) = post_bearer(&client, &generate, &sa_token, &request).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["status"], "PERMISSION_DENIED");
    let (status, body) = post_bearer(&client, &generate, "ya29.nope", &request).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["status"], "UNAUTHENTICATED");
    let other = url(
        &standin,
        "/v1/projects/-/serviceAccounts/other@proj-1.iam.gserviceaccount.com:generateAccessToken",
    );
    let (status, _) = post_bearer(&client, &other, &federated, &request).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // The impersonated token works where the account's roles allow: Cloud Identity.
    let (status, body) = get_bearer(
        &client,
        &url(&standin, "/v1/groups:lookup?groupKey.id=sre%40example.com"),
        &sa_token,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // signJwt: the delegated assertion, signed by Google's key for the account.
    let sign_jwt = url(
        &standin,
        &format!("/v1/projects/-/serviceAccounts/{SA}:signJwt"),
    );
    let claims = assertion_claims(&standin, Some("admin@example.com"), MEMBER_READONLY);
    let request = json!({"payload": claims.to_string()});
    let (status, body) = post_bearer(&client, &sign_jwt, &federated, &request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let key_id = body["keyId"].as_str().unwrap();
    let signed = body["signedJwt"].as_str().unwrap().to_owned();
    let header = jsonwebtoken::decode_header(&signed).unwrap();
    assert_eq!(
        (header.alg, header.kid.as_deref(), header.typ.as_deref()),
        (Algorithm::RS256, Some(key_id), Some("JWT"))
    );
    let (status, body) = exchange(&client, &standin, &signed).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["access_token"].as_str().unwrap();
    let (status, body) = get_bearer(
        &client,
        &url(
            &standin,
            "/admin/directory/v1/groups/sre@example.com/hasMember/b@example.com",
        ),
        token,
    )
    .await;
    assert_eq!((status, body), (StatusCode::OK, json!({"isMember": true})));
    // The account's own token may sign as itself; not a payload that is no JSON object.
    let (status, _) = post_bearer(&client, &sign_jwt, &sa_token, &request).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) =
        post_bearer(&client, &sign_jwt, &federated, &json!({"payload": "[1]"})).await;
    assert_eq!(
        (status, &body["error"]["status"]),
        (StatusCode::BAD_REQUEST, &json!("INVALID_ARGUMENT"))
    );

    let stats = standin.stats();
    assert_eq!(stats.sts, 7);
    assert_eq!(stats.iamcredentials_generate_access_token, 4);
    assert_eq!(stats.iamcredentials_sign_jwt, 3);
    assert_eq!(stats.token, 1);
}

#[tokio::test]
async fn faults_and_counters_on_the_apis() {
    let standin = start().await;
    let client = Client::new();
    tenant(&standin);
    let fault = url(&standin, "/_standin/fault");
    let has_member = url(
        &standin,
        "/admin/directory/v1/groups/sre@example.com/hasMember/a@example.com",
    );
    let lookup = url(&standin, "/v1/groups:lookup?groupKey.id=sre%40example.com");
    let sts = url(&standin, "/v1/token");

    let response = client
        .post(&fault)
        .json(&json!({"mode": "quota", "endpoints": ["directory", "cloudidentity", "sts"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (status, body) = get_bearer(&client, &has_member, "x").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body["error"]["errors"][0]["reason"],
        "userRateLimitExceeded"
    );
    let (status, body) = get_bearer(&client, &lookup, "x").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"]["status"], "RESOURCE_EXHAUSTED");
    assert_eq!(body["error"]["errors"][0]["reason"], "rateLimitExceeded");
    let response = client.post(&sts).form(&[("a", "b")]).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);

    // Default endpoints: all of them, the new ones included.
    client
        .post(&fault)
        .json(&json!({"mode": "error", "status": 500}))
        .send()
        .await
        .unwrap();
    let response = client
        .post(standin.token_url())
        .form(&[("grant_type", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let response = client
        .post(url(
            &standin,
            &format!("/v1/projects/-/serviceAccounts/{SA}:signJwt"),
        ))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    client
        .post(&fault)
        .json(&json!({"mode": "ok"}))
        .send()
        .await
        .unwrap();
    let (status, _) = get_bearer(&client, &has_member, "x").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let response = client
        .post(standin.token_url())
        .form(&[("grant_type", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let (_, body) = get_bearer(&client, &url(&standin, "/_standin/stats"), "").await;
    let stats: standin::Stats = serde_json::from_value(body.clone()).unwrap();
    assert_eq!(stats, standin.stats());
    assert_eq!(
        (
            stats.directory_has_member,
            stats.cloudidentity_lookup,
            stats.sts,
            stats.token,
            stats.iamcredentials_sign_jwt
        ),
        (2, 1, 1, 2, 1)
    );
    assert_eq!(body["directory_members_get"], 0);
    // Stats written before the new counters still read.
    let old: standin::Stats =
        serde_json::from_value(json!({"discovery": 1, "jwks": 2, "tokeninfo": 3, "userinfo": 4}))
            .unwrap();
    assert_eq!((old.jwks, old.token), (2, 0));
}
