use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rsa::{
    RsaPrivateKey,
    pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding},
};

use super::{aws::*, external::*, key_file::*, *};

const TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
const SA: &str = "groups@p.iam.gserviceaccount.com";

#[test]
fn assertion_claims_with_and_without_subject() {
    let claims = assertion_claims(SA, Some("admin@example.com"), "s1", TOKEN_URL, 1000);
    assert_eq!(
        serde_json::to_value(&claims).unwrap(),
        serde_json::json!({
            "iss": SA, "sub": "admin@example.com", "scope": "s1",
            "aud": TOKEN_URL, "iat": 1000, "exp": 4600,
        })
    );
    let claims = assertion_claims(SA, None, "s1", TOKEN_URL, 1000);
    let value = serde_json::to_value(&claims).unwrap();
    assert!(value.get("sub").is_none(), "no sub key at all: {value}");
    assert!(claims.exp - claims.iat <= 3600);
}

#[test]
fn key_file_signs_rs256_with_its_key_id() {
    let key = RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
    let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap();
    let public = key
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    let file = serde_json::json!({
        "type": "service_account", "project_id": "p", "private_key_id": "kid-1",
        "private_key": pem.as_str(), "client_email": SA, "client_id": "1",
        "token_uri": TOKEN_URL,
    });
    let account = ServiceAccountKey::parse(&file.to_string()).unwrap();
    assert_eq!(account.client_email, SA);
    // Debug shows who, never the key.
    assert!(!format!("{account:?}").contains("PRIVATE"));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = assertion_claims(SA, Some("admin@example.com"), "s", TOKEN_URL, now);
    let jwt = account.sign(&claims).unwrap();
    let header = jsonwebtoken::decode_header(jwt.expose()).unwrap();
    assert_eq!(header.alg, Algorithm::RS256);
    assert_eq!(header.kid.as_deref(), Some("kid-1"));
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[TOKEN_URL]);
    let decoded = jsonwebtoken::decode::<AssertionClaims>(
        jwt.expose(),
        &DecodingKey::from_rsa_pem(public.as_bytes()).unwrap(),
        &validation,
    )
    .unwrap();
    assert_eq!(decoded.claims, claims);
}

#[test]
fn key_file_errors_say_what_is_wrong() {
    let error = ServiceAccountKey::parse(
        r#"{"type":"external_account","client_email":"a","private_key_id":"k","private_key":"x"}"#,
    )
    .err()
    .unwrap();
    assert!(error.to_string().contains("external-account"), "{error}");
    let error = ServiceAccountKey::parse(
        r#"{"type":"service_account","client_email":"a","private_key_id":"k","private_key":"x"}"#,
    )
    .err()
    .unwrap();
    assert!(format!("{error:#}").contains("private_key"), "{error:#}");
    assert!(ServiceAccountKey::parse("{").is_err());
}

/// AWS's published SigV4 example (IAM ListUsers, 2015-08-30).
#[test]
fn sigv4_signature_matches_the_aws_example() {
    let string_to_sign = "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/iam/aws4_request\nf536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59";
    assert_eq!(
        signature(
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "20150830",
            "us-east-1",
            "iam",
            string_to_sign
        ),
        "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
    );
    assert_eq!(
        hex_sha256(b""),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[test]
fn the_subject_token_is_a_signed_get_caller_identity() {
    let url = url::Url::parse(
        "https://sts.eu-west-1.amazonaws.com?Version=2011-06-15&Action=GetCallerIdentity",
    )
    .unwrap();
    let credentials = AwsCredentials {
        access_key_id: "AKIDEXAMPLE".into(),
        secret_access_key: SecretString::new("secret"),
        session_token: Some(SecretString::new("session")),
    };
    let at = UNIX_EPOCH + Duration::from_secs(1_440_938_160); // 2015-08-30T12:36:00Z
    let signed = serde_json::to_value(sign_get_caller_identity(
        &url,
        "eu-west-1",
        "//iam.googleapis.com/pool",
        &credentials,
        at,
    ))
    .unwrap();
    assert_eq!(signed["method"], "POST");
    let headers: Vec<(String, String)> = signed["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["key"].as_str().unwrap().to_string(),
                h["value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let names: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "host",
            "x-amz-date",
            "x-amz-security-token",
            "x-goog-cloud-target-resource",
            "Authorization"
        ]
    );
    assert_eq!(headers[0].1, "sts.eu-west-1.amazonaws.com");
    assert_eq!(headers[1].1, "20150830T123600Z");
    assert_eq!(headers[3].1, "//iam.googleapis.com/pool");
    let authorization = &headers[4].1;
    assert!(
        authorization.starts_with(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/eu-west-1/sts/aws4_request, SignedHeaders=host;x-amz-date;x-amz-security-token;x-goog-cloud-target-resource, Signature="
        ),
        "{authorization}"
    );
    // Recompute the signature from the canonical request the spec describes.
    let canonical = "POST\n/\nAction=GetCallerIdentity&Version=2011-06-15\nhost:sts.eu-west-1.amazonaws.com\nx-amz-date:20150830T123600Z\nx-amz-security-token:session\nx-goog-cloud-target-resource://iam.googleapis.com/pool\n\nhost;x-amz-date;x-amz-security-token;x-goog-cloud-target-resource\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let expected = signature(
        "secret",
        "20150830",
        "eu-west-1",
        "sts",
        &format!(
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/eu-west-1/sts/aws4_request\n{}",
            hex_sha256(canonical.as_bytes())
        ),
    );
    assert!(authorization.ends_with(&format!("Signature={expected}")));
}

#[test]
fn zones_become_regions() {
    for (zone, region) in [
        ("us-east-1d", "us-east-1"),
        ("us-east-1", "us-east-1"),
        ("us-gov-west-1a", "us-gov-west-1"),
        ("eu-central-2b", "eu-central-2"),
    ] {
        assert_eq!(region_from_zone(zone), region);
    }
}

const WIF: &str = r#"{
  "type": "external_account",
  "audience": "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/aws",
  "subject_token_type": "urn:ietf:params:aws:token-type:aws4_request",
  "service_account_impersonation_url": "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/groups@p.iam.gserviceaccount.com:generateAccessToken",
  "token_url": "https://sts.googleapis.com/v1/token",
  "credential_source": {
    "environment_id": "aws1",
    "region_url": "http://169.254.169.254/latest/meta-data/placement/availability-zone",
    "url": "http://169.254.169.254/latest/meta-data/iam/security-credentials",
    "regional_cred_verification_url": "https://sts.{region}.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15"
  }
}"#;

fn iam() -> url::Url {
    url::Url::parse("https://iamcredentials.googleapis.com").unwrap()
}

#[test]
fn external_account_takes_the_service_account_from_config_or_file() {
    let account = ExternalAccount::parse(WIF, None, &iam(), AwsEnv::default()).unwrap();
    assert_eq!(account.service_account, SA);
    let account = ExternalAccount::parse(WIF, Some(SA), &iam(), AwsEnv::default()).unwrap();
    assert_eq!(account.service_account, SA);
    let error = ExternalAccount::parse(WIF, Some("other@p.iam"), &iam(), AwsEnv::default())
        .err()
        .unwrap();
    assert!(error.to_string().contains("other@p.iam"), "{error}");
    let without: serde_json::Value = {
        let mut v: serde_json::Value = serde_json::from_str(WIF).unwrap();
        v.as_object_mut()
            .unwrap()
            .remove("service_account_impersonation_url");
        v
    };
    let error = ExternalAccount::parse(&without.to_string(), None, &iam(), AwsEnv::default())
        .err()
        .unwrap();
    assert!(error.to_string().contains("service_account"), "{error}");
    assert_eq!(
        impersonated_account(
            "https://x/v1/projects/-/serviceAccounts/a@b.iam.gserviceaccount.com:generateAccessToken"
        )
        .unwrap(),
        "a@b.iam.gserviceaccount.com"
    );
    assert!(impersonated_account("https://x/v1/projects/-/serviceAccounts/a@b").is_err());
}

#[test]
fn external_account_must_be_aws_sourced() {
    let file_sourced = WIF.replace(r#""environment_id": "aws1","#, r#""file": "token.txt","#);
    let error = ExternalAccount::parse(&file_sourced, None, &iam(), AwsEnv::default())
        .err()
        .unwrap();
    assert!(error.to_string().contains("aws1"), "{error}");
}

#[test]
fn container_credentials_uri_must_be_local_or_https() {
    let with = |name: &str, value: &str| AwsEnv::from_vars([(name.to_string(), value.to_string())]);
    for (name, value, ok) in [
        (
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "/v2/credentials/abc",
            true,
        ),
        (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "http://127.0.0.1:9/creds",
            true,
        ),
        (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "http://169.254.170.23/v1/credentials",
            true,
        ),
        (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "https://creds.example.com/x",
            true,
        ),
        (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "http://creds.example.com/x",
            false,
        ),
        (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "http://10.0.0.1/x",
            false,
        ),
    ] {
        let parsed = ExternalAccount::parse(WIF, None, &iam(), with(name, value));
        assert_eq!(parsed.is_ok(), ok, "{name}={value}");
    }
}

#[test]
fn secrets_do_not_print() {
    let env = AwsEnv::from_vars(
        [
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "very-secret"),
            ("AWS_SESSION_TOKEN", "session-secret"),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "auth-secret"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let printed = format!("{env:?} {:?}", SecretString::new("ya29.token"));
    for secret in ["very-secret", "session-secret", "auth-secret", "ya29"] {
        assert!(!printed.contains(secret), "{printed}");
    }
}
