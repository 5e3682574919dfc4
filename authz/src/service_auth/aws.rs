//! The AWS side of Workload Identity Federation: finding AWS credentials and region, and signing
//! the GetCallerIdentity request Google's STS replays to AWS (the "subject token").
//!
//! Credentials, in order: the static `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`
//! (+`AWS_SESSION_TOKEN`) variables; the container credentials endpoint
//! (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` or `_FULL_URI`, which is how an ECS task role or an
//! EKS pod identity arrives); the instance metadata service at the credential file's `url`
//! (IMDSv2 when the file names `imdsv2_session_token_url`). Region: `AWS_REGION`,
//! `AWS_DEFAULT_REGION`, then the file's `region_url`. The variables are read once at start-up
//! into [`AwsEnv`], so tests hand them in rather than setting process environment.

pub(crate) use crate::digest::hex_sha256;
use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    time::SystemTime,
};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use url::Url;

use super::{AuthError, SecretString, Step, read_json, unreachable};

/// The AWS variables the credential flow reads, captured once.
#[derive(Debug, Clone, Default)]
pub struct AwsEnv {
    access_key_id: Option<String>,
    secret_access_key: Option<SecretString>,
    session_token: Option<SecretString>,
    region: Option<String>,
    container_full_uri: Option<String>,
    container_relative_uri: Option<String>,
    container_authorization_token: Option<SecretString>,
    container_authorization_token_file: Option<PathBuf>,
}

/// `credential_source` of an AWS external account file.
#[derive(Debug, Deserialize)]
pub(crate) struct CredentialSource {
    environment_id: Option<String>,
    region_url: Option<Url>,
    /// The IMDS security-credentials base; the role name is read from it, then appended.
    url: Option<Url>,
    regional_cred_verification_url: Option<String>,
    imdsv2_session_token_url: Option<Url>,
}

#[derive(Debug)]
pub(crate) struct AwsSource {
    source: CredentialSource,
    env: AwsEnv,
    /// Where the container credentials endpoint is, when the environment names one.
    container_url: Option<Url>,
}

/// A set of AWS credentials.
#[derive(Debug, Clone)]
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: SecretString,
    pub session_token: Option<SecretString>,
}

/// What both the container endpoint and IMDS answer.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CredentialsResponse {
    access_key_id: String,
    secret_access_key: String,
    token: Option<String>,
}

/// The subject token: the signed request, serialised as Google's STS expects.
#[derive(Serialize)]
pub(super) struct SignedRequest {
    url: String,
    method: &'static str,
    headers: Vec<Header>,
}

#[derive(Serialize)]
struct Header {
    key: String,
    value: String,
}

const DEFAULT_VERIFICATION_URL: &str =
    "https://sts.{region}.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15";
/// Where ECS serves `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`.
const ECS_CREDENTIALS_HOST: &str = "http://169.254.170.2";

// === impl AwsEnv ===

impl AwsEnv {
    /// Reads the variables from the process environment (start-up only).
    pub fn from_process() -> AwsEnv {
        AwsEnv::from_vars(std::env::vars())
    }

    /// Reads the variables from `vars`; blank values count as unset.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> AwsEnv {
        let mut env = AwsEnv::default();
        let mut default_region = None;
        for (name, value) in vars {
            if value.trim().is_empty() {
                continue;
            }
            match name.as_str() {
                "AWS_ACCESS_KEY_ID" => env.access_key_id = Some(value),
                "AWS_SECRET_ACCESS_KEY" => env.secret_access_key = Some(SecretString::new(value)),
                "AWS_SESSION_TOKEN" => env.session_token = Some(SecretString::new(value)),
                "AWS_REGION" => env.region = Some(value),
                "AWS_DEFAULT_REGION" => default_region = Some(value),
                "AWS_CONTAINER_CREDENTIALS_FULL_URI" => env.container_full_uri = Some(value),
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI" => {
                    env.container_relative_uri = Some(value);
                }
                "AWS_CONTAINER_AUTHORIZATION_TOKEN" => {
                    env.container_authorization_token = Some(SecretString::new(value));
                }
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE" => {
                    env.container_authorization_token_file = Some(value.into());
                }
                _ => {}
            }
        }
        env.region = env.region.or(default_region);
        env
    }

    fn static_credentials(&self) -> Option<AwsCredentials> {
        Some(AwsCredentials {
            access_key_id: self.access_key_id.clone()?,
            secret_access_key: self.secret_access_key.clone()?,
            session_token: self.session_token.clone(),
        })
    }
}

// === impl AwsSource ===

impl AwsSource {
    pub(crate) fn new(source: CredentialSource, env: AwsEnv) -> anyhow::Result<AwsSource> {
        let environment = source.environment_id.as_deref().unwrap_or("(none)");
        anyhow::ensure!(
            environment.starts_with("aws"),
            "credential_source.environment_id is {environment:?}: only AWS-sourced external accounts (\"aws1\") are supported"
        );
        let container_url = container_url(&env)?;
        let verification = source
            .regional_cred_verification_url
            .as_deref()
            .unwrap_or(DEFAULT_VERIFICATION_URL);
        verification_url(verification, "us-east-1")?;
        Ok(AwsSource {
            source,
            env,
            container_url,
        })
    }

    /// Signs GetCallerIdentity with the current AWS credentials; `audience` (the workload
    /// identity provider) is signed in too, so the token is good for that provider only.
    pub(crate) async fn subject_token(
        &self,
        http: &reqwest::Client,
        audience: &str,
    ) -> Result<SecretString, AuthError> {
        let mut imds = Imds::new(self.source.imdsv2_session_token_url.as_ref());
        let credentials = self.credentials(http, &mut imds).await?;
        let region = self.region(http, &mut imds).await?;
        let template = self
            .source
            .regional_cred_verification_url
            .as_deref()
            .unwrap_or(DEFAULT_VERIFICATION_URL);
        let url = verification_url(template, &region).map_err(|e| AuthError {
            step: Step::AwsRegion,
            problem: e.to_string(),
            rejected: false,
        })?;
        let signed =
            sign_get_caller_identity(&url, &region, audience, &credentials, SystemTime::now());
        let json = serde_json::to_string(&signed).map_err(|e| AuthError {
            step: Step::AwsCredentials,
            problem: e.to_string(),
            rejected: false,
        })?;
        // Percent-encoded as Google's own libraries do (spaces as %20, never `+`): STS
        // percent-decodes the token after the form decoding of the body.
        let encoded: String = url::form_urlencoded::byte_serialize(json.as_bytes()).collect();
        Ok(SecretString::new(encoded.replace('+', "%20")))
    }

    async fn credentials(
        &self,
        http: &reqwest::Client,
        imds: &mut Imds<'_>,
    ) -> Result<AwsCredentials, AuthError> {
        if let Some(credentials) = self.env.static_credentials() {
            return Ok(credentials);
        }
        if let Some(url) = &self.container_url {
            let mut request = http.get(url.clone());
            if let Some(token) = self.container_authorization_token()? {
                request = request.header("Authorization", token.expose());
            }
            let response = request
                .send()
                .await
                .map_err(|e| unreachable(Step::AwsCredentials, &e))?;
            return read_json::<CredentialsResponse>(Step::AwsCredentials, response)
                .await
                .map(Into::into);
        }
        let Some(base) = &self.source.url else {
            return Err(AuthError {
                step: Step::AwsCredentials,
                problem: "no AWS credentials: no AWS_ACCESS_KEY_ID, no container credentials endpoint, and the credential file names no metadata url".into(),
                rejected: true,
            });
        };
        let role = imds.get_text(http, base, Step::AwsCredentials).await?;
        let role = role.lines().next().unwrap_or_default().trim().to_string();
        let mut url = base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().push(&role);
        }
        let response = imds.get(http, &url, Step::AwsCredentials).await?;
        read_json::<CredentialsResponse>(Step::AwsCredentials, response)
            .await
            .map(Into::into)
    }

    /// The file wins over the variable: EKS rotates the file's token.
    fn container_authorization_token(&self) -> Result<Option<SecretString>, AuthError> {
        if let Some(path) = &self.env.container_authorization_token_file {
            return std::fs::read_to_string(path)
                .map(|token| Some(SecretString::new(token.trim().to_string())))
                .map_err(|e| AuthError {
                    step: Step::AwsCredentials,
                    problem: format!("reading AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE: {e}"),
                    rejected: false,
                });
        }
        Ok(self.env.container_authorization_token.clone())
    }

    async fn region(
        &self,
        http: &reqwest::Client,
        imds: &mut Imds<'_>,
    ) -> Result<String, AuthError> {
        if let Some(region) = &self.env.region {
            return Ok(region.clone());
        }
        let Some(url) = &self.source.region_url else {
            return Err(AuthError {
                step: Step::AwsRegion,
                problem: "no AWS_REGION and the credential file names no region_url".into(),
                rejected: true,
            });
        };
        let zone = imds.get_text(http, url, Step::AwsRegion).await?;
        Ok(region_from_zone(zone.trim()).to_string())
    }
}

impl From<CredentialsResponse> for AwsCredentials {
    fn from(response: CredentialsResponse) -> AwsCredentials {
        AwsCredentials {
            access_key_id: response.access_key_id,
            secret_access_key: SecretString::new(response.secret_access_key),
            session_token: response.token.map(SecretString::new),
        }
    }
}

/// The container credentials endpoint, if the environment names one. A full URI must be https
/// or point at this host or the ECS/EKS agents, as the AWS SDKs require: anything else could
/// send the authorization token elsewhere.
fn container_url(env: &AwsEnv) -> anyhow::Result<Option<Url>> {
    if let Some(relative) = &env.container_relative_uri {
        let url = Url::parse(&format!("{ECS_CREDENTIALS_HOST}{relative}")).map_err(|e| {
            anyhow::anyhow!("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI is not a path: {e}")
        })?;
        return Ok(Some(url));
    }
    let Some(full) = &env.container_full_uri else {
        return Ok(None);
    };
    let url = Url::parse(full)
        .map_err(|e| anyhow::anyhow!("AWS_CONTAINER_CREDENTIALS_FULL_URI is not a URL: {e}"))?;
    let allowed = url.scheme() == "https"
        || match url.host() {
            Some(url::Host::Ipv4(ip)) => {
                ip.is_loopback()
                    || ip == Ipv4Addr::new(169, 254, 170, 2)
                    || ip == Ipv4Addr::new(169, 254, 170, 23)
            }
            Some(url::Host::Ipv6(ip)) => {
                ip.is_loopback() || ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23)
            }
            Some(url::Host::Domain(name)) => name == "localhost",
            None => false,
        };
    anyhow::ensure!(
        allowed,
        "AWS_CONTAINER_CREDENTIALS_FULL_URI must be https, loopback, or the ECS/EKS credential agent"
    );
    Ok(Some(url))
}

/// The instance metadata service, with an IMDSv2 session token fetched on first use.
struct Imds<'a> {
    token_url: Option<&'a Url>,
    token: Option<String>,
}

impl<'a> Imds<'a> {
    fn new(token_url: Option<&'a Url>) -> Imds<'a> {
        Imds {
            token_url,
            token: None,
        }
    }

    async fn get(
        &mut self,
        http: &reqwest::Client,
        url: &Url,
        step: Step,
    ) -> Result<reqwest::Response, AuthError> {
        if let (Some(token_url), None) = (self.token_url, &self.token) {
            let response = http
                .put(token_url.clone())
                .header("X-aws-ec2-metadata-token-ttl-seconds", "300")
                .send()
                .await
                .map_err(|e| unreachable(step, &e))?;
            self.token = Some(text(step, response).await?);
        }
        let mut request = http.get(url.clone());
        if let Some(token) = &self.token {
            request = request.header("X-aws-ec2-metadata-token", token);
        }
        request.send().await.map_err(|e| unreachable(step, &e))
    }

    async fn get_text(
        &mut self,
        http: &reqwest::Client,
        url: &Url,
        step: Step,
    ) -> Result<String, AuthError> {
        let response = self.get(http, url, step).await?;
        text(step, response).await
    }
}

async fn text(step: Step, response: reqwest::Response) -> Result<String, AuthError> {
    let status = response.status();
    if !status.is_success() {
        return Err(AuthError {
            step,
            problem: format!("HTTP {status}"),
            rejected: false,
        });
    }
    response.text().await.map_err(|e| unreachable(step, &e))
}

/// `us-east-1d` -> `us-east-1`; a region passes through.
pub(crate) fn region_from_zone(zone: &str) -> &str {
    match zone.as_bytes() {
        [.., digit, letter] if digit.is_ascii_digit() && letter.is_ascii_alphabetic() => {
            &zone[..zone.len() - 1]
        }
        _ => zone,
    }
}

fn verification_url(template: &str, region: &str) -> anyhow::Result<Url> {
    let url = Url::parse(&template.replace("{region}", region))
        .map_err(|e| anyhow::anyhow!("regional_cred_verification_url: {e}"))?;
    anyhow::ensure!(
        url.host_str().is_some(),
        "regional_cred_verification_url has no host"
    );
    Ok(url)
}

/// Signs `POST url` (an empty body) for the `sts` service with SigV4, the way Google's
/// libraries do: headers `host`, `x-amz-date`, `x-goog-cloud-target-resource` (the audience)
/// and, with temporary credentials, `x-amz-security-token`.
pub(super) fn sign_get_caller_identity(
    url: &Url,
    region: &str,
    audience: &str,
    credentials: &AwsCredentials,
    now: SystemTime,
) -> SignedRequest {
    let amz_date: String = humantime::format_rfc3339_seconds(now)
        .to_string()
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    let date = &amz_date[..8];
    let host = match url.port() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_string(),
    };
    let mut headers = std::collections::BTreeMap::new();
    headers.insert("host", host);
    headers.insert("x-amz-date", amz_date.clone());
    headers.insert("x-goog-cloud-target-resource", audience.to_string());
    if let Some(token) = &credentials.session_token {
        headers.insert("x-amz-security-token", token.expose().to_string());
    }
    let signed_headers = headers.keys().copied().collect::<Vec<_>>().join(";");
    let canonical_headers: String = headers
        .iter()
        .map(|(k, v)| format!("{k}:{}\n", v.trim()))
        .collect();
    let mut pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    pairs.sort();
    let canonical_query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    let canonical_request = format!(
        "POST\n{}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\n{}",
        url.path(),
        hex_sha256(b"")
    );
    let scope = format!("{date}/{region}/sts/aws4_request");
    let signature = signature(
        credentials.secret_access_key.expose(),
        date,
        region,
        "sts",
        &format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex_sha256(canonical_request.as_bytes())
        ),
    );
    let authorization = format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
        credentials.access_key_id
    );
    SignedRequest {
        url: url.to_string(),
        method: "POST",
        headers: headers
            .into_iter()
            .map(|(key, value)| Header {
                key: key.to_string(),
                value,
            })
            .chain(std::iter::once(Header {
                key: "Authorization".into(),
                value: authorization,
            }))
            .collect(),
    }
}

/// The SigV4 signature of `string_to_sign`, hex.
pub(crate) fn signature(
    secret: &str,
    date: &str,
    region: &str,
    service: &str,
    string_to_sign: &str,
) -> String {
    let mut key = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    for part in [region, service, "aws4_request"] {
        key = hmac_sha256(&key, part.as_bytes());
    }
    hex(&hmac_sha256(&key, string_to_sign.as_bytes()))
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
