//! Secret references in the config (`{ file = ... }`, `{ aws_secret = ... }`, or inline) and
//! the `[secrets]` section. Resolving and re-reading them is [`crate::secrets`]' job.

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Deserializer, de};
use url::Url;

use crate::secret_string::SecretString;

/// Where a secret comes from (`Debug` and `Display` never show an inline value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// The value itself, written in the config.
    Inline(SecretString),
    /// `{ file = "path" }`: the file's contents.
    File(PathBuf),
    /// `{ aws_secret = "...", key = "...", version_stage = "..." }`.
    Aws(AwsSecretRef),
}

/// A secret in AWS Secrets Manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsSecretRef {
    /// The secret's name or ARN.
    pub secret_id: String,
    /// The member of the JSON object in `SecretString`; `None`: the whole `SecretString`.
    pub key: Option<String>,
    /// `None`: `AWSCURRENT`.
    pub version_stage: Option<String>,
}

/// The `[secrets]` config section: how references are re-read.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsConfig {
    /// How often files and Secrets Manager references are read again. Default 5m.
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
    /// Bound on one Secrets Manager read, retries included. Default 5s.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// The Secrets Manager region. Default: the SDK's chain (`AWS_REGION`, profile, IMDS).
    pub aws_region: Option<String>,
    /// A Secrets Manager endpoint (a VPC endpoint). Default: the SDK's (`AWS_ENDPOINT_URL_SECRETS_MANAGER`,
    /// `AWS_ENDPOINT_URL`, else the regional public endpoint).
    pub aws_endpoint_url: Option<Url>,
}

// === impl SecretRef ===

impl SecretRef {
    /// Whether the value can change while running (and so is re-read).
    pub fn is_refreshed(&self) -> bool {
        !matches!(self, SecretRef::Inline(_))
    }
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretRef::Inline(_) => f.write_str("inline value"),
            SecretRef::File(path) => write!(f, "file {}", path.display()),
            SecretRef::Aws(reference) => {
                write!(f, "aws_secret {:?}", reference.secret_id)?;
                if let Some(key) = &reference.key {
                    write!(f, ", key {key:?}")?;
                }
                if let Some(stage) = &reference.version_stage {
                    write!(f, ", version_stage {stage:?}")?;
                }
                Ok(())
            }
        }
    }
}

/// A string is an inline value; a table is `{ file }` or `{ aws_secret, key?, version_stage? }`.
/// Written by hand for errors that say what to write instead of "did not match any variant".
impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<SecretRef, D::Error> {
        deserializer.deserialize_any(SecretRefVisitor)
    }
}

struct SecretRefVisitor;

const QUOTE_HINT: &str = "an inline secret must be a string (in an AUTHZ_* variable, a value that reads as a TOML number, boolean or date needs TOML quotes around it, as in '\"0123\"')";

impl<'de> de::Visitor<'de> for SecretRefVisitor {
    type Value = SecretRef;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "a secret: an inline string, { file = \"path\" } or { aws_secret = \"name or ARN\", key = \"json key\" }",
        )
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<SecretRef, E> {
        Ok(SecretRef::Inline(SecretString::new(value)))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<SecretRef, E> {
        Ok(SecretRef::Inline(SecretString::new(value)))
    }

    // The value is deliberately not echoed: it was meant to be a secret.
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<SecretRef, E> {
        Err(E::custom(QUOTE_HINT))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<SecretRef, E> {
        Err(E::custom(QUOTE_HINT))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<SecretRef, E> {
        Err(E::custom(QUOTE_HINT))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<SecretRef, E> {
        Err(E::custom(QUOTE_HINT))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<SecretRef, A::Error> {
        Err(de::Error::custom(QUOTE_HINT))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<SecretRef, A::Error> {
        let mut file: Option<PathBuf> = None;
        let mut aws_secret: Option<String> = None;
        let mut key: Option<String> = None;
        let mut version_stage: Option<String> = None;
        while let Some(field) = map.next_key::<String>()? {
            let slot = match field.as_str() {
                "file" => {
                    file = Some(map.next_value()?);
                    continue;
                }
                "aws_secret" => &mut aws_secret,
                "key" => &mut key,
                "version_stage" => &mut version_stage,
                // How the toml crate hands over a date or time.
                "$__toml_private_datetime" => return Err(de::Error::custom(QUOTE_HINT)),
                other => {
                    return Err(de::Error::custom(format!(
                        "unknown field `{other}` in a secret reference: expected `file`, or `aws_secret` with optional `key` and `version_stage`"
                    )));
                }
            };
            *slot = Some(map.next_value()?);
        }
        match (file, aws_secret) {
            (Some(_), Some(_)) => Err(de::Error::custom(
                "a secret reference has either `file` or `aws_secret`, not both",
            )),
            (Some(file), None) => {
                if key.is_some() || version_stage.is_some() {
                    return Err(de::Error::custom(
                        "`key` and `version_stage` belong to `aws_secret` references",
                    ));
                }
                if file.as_os_str().is_empty() {
                    return Err(de::Error::custom("`file` must not be empty"));
                }
                Ok(SecretRef::File(file))
            }
            (None, Some(secret_id)) => {
                let blank =
                    |value: &Option<String>| value.as_ref().is_some_and(|v| v.trim().is_empty());
                if secret_id.trim().is_empty() || blank(&key) || blank(&version_stage) {
                    return Err(de::Error::custom(
                        "`aws_secret`, `key` and `version_stage` must not be blank",
                    ));
                }
                Ok(SecretRef::Aws(AwsSecretRef {
                    secret_id,
                    key,
                    version_stage,
                }))
            }
            (None, None) => Err(de::Error::custom(
                "a secret reference needs `file` or `aws_secret`",
            )),
        }
    }
}

// === impl SecretsConfig ===

impl SecretsConfig {
    /// Checks what serde cannot; the error names the key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.refresh_interval.is_zero() {
            return Err((
                "secrets.refresh_interval",
                "must be greater than zero".into(),
            ));
        }
        if self.request_timeout.is_zero() {
            return Err((
                "secrets.request_timeout",
                "must be greater than zero".into(),
            ));
        }
        if self
            .aws_region
            .as_ref()
            .is_some_and(|r| r.trim().is_empty())
        {
            return Err(("secrets.aws_region", "must not be blank".into()));
        }
        if let Some(url) = &self.aws_endpoint_url {
            if !super::is_http_url(url) {
                return Err((
                    "secrets.aws_endpoint_url",
                    "must be an absolute http(s) URL".into(),
                ));
            }
        }
        Ok(())
    }
}

impl Default for SecretsConfig {
    fn default() -> SecretsConfig {
        SecretsConfig {
            refresh_interval: Duration::from_secs(300),
            request_timeout: Duration::from_secs(5),
            aws_region: None,
            aws_endpoint_url: None,
        }
    }
}
