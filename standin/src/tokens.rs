//! Opaque access tokens and the tokeninfo / userinfo answers Google gives for them.

use std::{collections::HashMap, sync::Mutex};

use rand::{Rng as _, rngs::OsRng};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// What an access token stands for. Every field has a default, so a test names only what it
/// cares about; `sub` and `aud` should always be set.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessTokenSpec {
    /// The user's stable Google id.
    pub sub: String,
    /// Omitted from tokeninfo and userinfo when `None`, as for a token without the email scope.
    pub email: Option<String>,
    /// Default `true`.
    pub email_verified: bool,
    /// The Workspace domain. Only userinfo reports it; tokeninfo never does.
    pub hd: Option<String>,
    /// Reported by userinfo when set.
    pub name: Option<String>,
    /// The OAuth client the token was issued to.
    pub aud: String,
    /// Default: `aud`.
    pub azp: Option<String>,
    /// Space-separated; default `"openid email profile"`.
    pub scope: String,
    /// Lifetime in seconds from now; default 3599. Zero or negative mints an expired token.
    pub expires_in: i64,
}

impl Default for AccessTokenSpec {
    fn default() -> Self {
        Self {
            sub: String::new(),
            email: None,
            email_verified: true,
            hd: None,
            name: None,
            aud: String::new(),
            azp: None,
            scope: "openid email profile".to_owned(),
            expires_in: 3599,
        }
    }
}

/// Length of the random part after `ya29.`, about what Google's tokens carry.
const TOKEN_CHARS: usize = 150;
const URL_SAFE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A fresh `ya29.` token: the prefix and rough length of Google's access tokens.
pub(crate) fn random_token() -> String {
    random_with_prefix("ya29.", TOKEN_CHARS)
}

/// `prefix` followed by `len` random URL-safe characters (6 bits of entropy each).
pub(crate) fn random_with_prefix(prefix: &str, len: usize) -> String {
    let mut token = String::with_capacity(prefix.len() + len);
    token.push_str(prefix);
    token.extend((0..len).map(|_| char::from(URL_SAFE[OsRng.gen_range(0..URL_SAFE.len())])));
    token
}

struct Issued {
    spec: AccessTokenSpec,
    exp: i64,
}

/// Every access token minted so far. Expired tokens stay, so they answer "expired" rather than
/// vanish; the two look the same to a caller anyway.
#[derive(Default)]
pub(crate) struct AccessTokens {
    tokens: Mutex<HashMap<String, Issued>>,
}

impl AccessTokens {
    /// Stores a new token and returns it with its expiry (unix seconds).
    pub(crate) fn mint(&self, spec: AccessTokenSpec, now: i64) -> (String, i64) {
        let token = random_token();
        let exp = now.saturating_add(spec.expires_in);
        self.lock().insert(token.clone(), Issued { spec, exp });
        (token, exp)
    }

    /// Google's tokeninfo body for a live token, or `None` for an unknown or expired one.
    /// Every value is a string, exactly as Google sends them.
    pub(crate) fn tokeninfo(&self, token: &str, now: i64) -> Option<Value> {
        let tokens = self.lock();
        let issued = tokens.get(token).filter(|t| t.exp > now)?;
        let spec = &issued.spec;
        let mut body = Map::new();
        body.insert(
            "azp".into(),
            json!(spec.azp.as_deref().unwrap_or(&spec.aud)),
        );
        body.insert("aud".into(), json!(spec.aud));
        body.insert("sub".into(), json!(spec.sub));
        body.insert("scope".into(), json!(spec.scope));
        body.insert("exp".into(), json!(issued.exp.to_string()));
        body.insert("expires_in".into(), json!((issued.exp - now).to_string()));
        if let Some(email) = &spec.email {
            body.insert("email".into(), json!(email));
            body.insert(
                "email_verified".into(),
                json!(spec.email_verified.to_string()),
            );
        }
        body.insert("access_type".into(), json!("online"));
        Some(Value::Object(body))
    }

    /// Google's OpenID userinfo body for a live token, or `None` for an unknown or expired one.
    /// Unlike tokeninfo, `email_verified` is a JSON bool and `hd` is present when the user has one.
    pub(crate) fn userinfo(&self, token: &str, now: i64) -> Option<Value> {
        let tokens = self.lock();
        let spec = &tokens.get(token).filter(|t| t.exp > now)?.spec;
        let mut body = Map::new();
        body.insert("sub".into(), json!(spec.sub));
        if let Some(name) = &spec.name {
            body.insert("name".into(), json!(name));
        }
        if let Some(email) = &spec.email {
            body.insert("email".into(), json!(email));
            body.insert("email_verified".into(), json!(spec.email_verified));
        }
        if let Some(hd) = &spec.hd {
            body.insert("hd".into(), json!(hd));
        }
        Some(Value::Object(body))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Issued>> {
        self.tokens.lock().expect("access token mutex poisoned")
    }
}
