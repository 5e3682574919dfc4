//! Workload Identity Federation (`external_account` files with an AWS source), service-account
//! impersonation and IAM `signJwt`.
//!
//! The flow: sign an AWS STS GetCallerIdentity request (we never send it; Google does, to learn
//! who we are on AWS) -> Google STS token exchange for a federated token -> IAM Credentials
//! `generateAccessToken` for the service account. For domain-wide delegation the service
//! account's token then has IAM sign the assertion (`signJwt`), which needs the service account
//! to hold Service Account Token Creator on itself.

use std::time::Duration;

use anyhow::Context as _;
use serde::Deserialize;
use url::Url;

use super::{
    AccessToken, AssertionClaims, AuthError, CLOUD_PLATFORM_SCOPE, SecretString, Step, aws,
    read_json, unreachable,
};

#[derive(Debug)]
pub(crate) struct ExternalAccount {
    pub(crate) service_account: String,
    audience: String,
    subject_token_type: String,
    sts_url: Url,
    iam_credentials_url: Url,
    aws: aws::AwsSource,
}

/// The fields we read; Google adds others (`universe_domain`, ...) that we ignore.
#[derive(Deserialize)]
struct ExternalAccountFile {
    #[serde(rename = "type")]
    kind: String,
    audience: String,
    subject_token_type: String,
    token_url: Url,
    service_account_impersonation_url: Option<String>,
    credential_source: aws::CredentialSource,
}

#[derive(Deserialize)]
struct StsResponse {
    access_token: String,
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerateAccessTokenResponse {
    access_token: String,
    expire_time: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignJwtResponse {
    signed_jwt: String,
}

/// The lifetime we ask IAM for; the default maximum without an org policy change.
const SA_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

impl ExternalAccount {
    pub(crate) fn parse(
        text: &str,
        service_account: Option<&str>,
        iam_credentials_url: &Url,
        env: aws::AwsEnv,
    ) -> anyhow::Result<ExternalAccount> {
        let file: ExternalAccountFile =
            serde_json::from_str(text).context("not an external_account JSON")?;
        anyhow::ensure!(
            file.kind == "external_account",
            "type is {:?}, expected \"external_account\"",
            file.kind
        );
        let from_file = file
            .service_account_impersonation_url
            .as_deref()
            .map(impersonated_account)
            .transpose()?;
        let service_account = match (service_account, from_file) {
            (Some(configured), Some(named)) if !configured.eq_ignore_ascii_case(&named) => {
                anyhow::bail!(
                    "service_account_impersonation_url names {named}, but groups.credentials.service_account is {configured}"
                )
            }
            (Some(configured), _) => configured.to_string(),
            (None, Some(named)) => named,
            (None, None) => anyhow::bail!(
                "no service account to impersonate: set groups.credentials.service_account"
            ),
        };
        let aws = aws::AwsSource::new(file.credential_source, env)?;
        Ok(ExternalAccount {
            service_account,
            audience: file.audience,
            subject_token_type: file.subject_token_type,
            sts_url: file.token_url,
            iam_credentials_url: iam_credentials_url.clone(),
            aws,
        })
    }

    /// The AWS identity, exchanged at Google STS for a federated access token.
    pub(crate) async fn federated_token(
        &self,
        http: &reqwest::Client,
    ) -> Result<SecretString, AuthError> {
        let subject_token = self.aws.subject_token(http, &self.audience).await?;
        let response = http
            .post(self.sts_url.clone())
            .form(&[
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:token-exchange",
                ),
                ("audience", &self.audience),
                ("scope", CLOUD_PLATFORM_SCOPE),
                (
                    "requested_token_type",
                    "urn:ietf:params:oauth:token-type:access_token",
                ),
                ("subject_token_type", &self.subject_token_type),
                ("subject_token", subject_token.expose()),
            ])
            .send()
            .await
            .map_err(|e| unreachable(Step::StsExchange, &e))?;
        let body: StsResponse = read_json(Step::StsExchange, response).await?;
        // The federated token is used once, right away; its lifetime does not matter here.
        let _ = body.expires_in;
        Ok(SecretString::new(body.access_token))
    }

    /// `generateAccessToken`: a token of the service account itself, for `scope`.
    pub(crate) async fn generate_access_token(
        &self,
        http: &reqwest::Client,
        federated: &SecretString,
        scope: &str,
    ) -> Result<AccessToken, AuthError> {
        let response = http
            .post(self.iam_url("generateAccessToken"))
            .bearer_auth(federated.expose())
            .json(&serde_json::json!({
                "scope": scope.split_whitespace().collect::<Vec<_>>(),
                "lifetime": format!("{}s", SA_TOKEN_LIFETIME.as_secs()),
            }))
            .send()
            .await
            .map_err(|e| unreachable(Step::GenerateAccessToken, &e))?;
        let body: GenerateAccessTokenResponse =
            read_json(Step::GenerateAccessToken, response).await?;
        let expires_in = body
            .expire_time
            .as_deref()
            .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
            .and_then(|at| at.duration_since(std::time::SystemTime::now()).ok())
            .unwrap_or(SA_TOKEN_LIFETIME);
        Ok(AccessToken {
            token: SecretString::new(body.access_token),
            expires_in,
        })
    }

    /// `signJwt`: IAM signs the assertion with a Google-held key of the service account.
    pub(crate) async fn sign_jwt(
        &self,
        http: &reqwest::Client,
        sa_token: &SecretString,
        claims: &AssertionClaims,
    ) -> Result<SecretString, AuthError> {
        let payload = serde_json::to_string(claims).map_err(|e| AuthError {
            step: Step::SignJwt,
            problem: e.to_string(),
            rejected: false,
        })?;
        let response = http
            .post(self.iam_url("signJwt"))
            .bearer_auth(sa_token.expose())
            .json(&serde_json::json!({ "payload": payload }))
            .send()
            .await
            .map_err(|e| unreachable(Step::SignJwt, &e))?;
        let body: SignJwtResponse = read_json(Step::SignJwt, response).await?;
        Ok(SecretString::new(body.signed_jwt))
    }

    /// `{iam}/v1/projects/-/serviceAccounts/{sa}:{method}`
    fn iam_url(&self, method: &str) -> Url {
        let mut url = self.iam_credentials_url.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend([
                "v1",
                "projects",
                "-",
                "serviceAccounts",
                &format!("{}:{method}", self.service_account),
            ]);
        }
        url
    }
}

/// `.../serviceAccounts/{sa}:generateAccessToken` -> `sa`.
pub(super) fn impersonated_account(url: &str) -> anyhow::Result<String> {
    url.rsplit_once("/serviceAccounts/")
        .and_then(|(_, rest)| rest.strip_suffix(":generateAccessToken"))
        .filter(|sa| sa.contains('@') && !sa.contains('/'))
        .map(str::to_string)
        .with_context(|| {
            format!("service_account_impersonation_url {url:?} does not name a service account")
        })
}
