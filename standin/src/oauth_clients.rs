//! Google OAuth clients of the "web application" type: a confidential client with a secret and
//! the exact redirect URIs the authorization endpoint accepts. Tests register them.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// Body of `POST /_standin/oauth_client`, and the argument of
/// [`StandIn::add_oauth_client`](crate::StandIn::add_oauth_client).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthClientSpec {
    pub client_id: String,
    pub client_secret: String,
    /// Compared with a request's `redirect_uri` as exact strings, as Google does.
    pub redirect_uris: Vec<String>,
}

impl std::fmt::Debug for OAuthClientSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthClientSpec")
            .field("client_id", &self.client_id)
            .field("redirect_uris", &self.redirect_uris)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    #[error("client_id and client_secret must not be empty")]
    Empty,
    #[error("redirect_uris must not be empty")]
    NoRedirectUri,
    #[error("redirect URI {0:?} is not an absolute URL without a fragment")]
    RedirectUri(String),
}

pub(crate) struct OAuthClient {
    redirect_uris: Vec<String>,
    /// Only the secret's digest is kept: comparing digests takes the same time whatever the
    /// presented secret's length.
    secret_digest: [u8; 32],
}

impl OAuthClient {
    pub(crate) fn allows_redirect(&self, redirect_uri: &str) -> bool {
        self.redirect_uris.iter().any(|r| r == redirect_uri)
    }

    /// Whether `secret` is the client's, in constant time.
    pub(crate) fn secret_matches(&self, secret: &str) -> bool {
        digest(secret).ct_eq(&self.secret_digest).into()
    }
}

/// The registered clients, by client id.
#[derive(Default)]
pub(crate) struct OAuthClients(Mutex<HashMap<String, Arc<OAuthClient>>>);

impl OAuthClients {
    /// Registers (or replaces) the client `spec` describes.
    pub(crate) fn add(&self, spec: &OAuthClientSpec) -> Result<(), ClientError> {
        if spec.client_id.is_empty() || spec.client_secret.is_empty() {
            return Err(ClientError::Empty);
        }
        if spec.redirect_uris.is_empty() {
            return Err(ClientError::NoRedirectUri);
        }
        for uri in &spec.redirect_uris {
            let absolute = url::Url::parse(uri).is_ok_and(|u| u.fragment().is_none());
            if !absolute {
                return Err(ClientError::RedirectUri(uri.clone()));
            }
        }
        let client = OAuthClient {
            redirect_uris: spec.redirect_uris.clone(),
            secret_digest: digest(&spec.client_secret),
        };
        self.lock().insert(spec.client_id.clone(), Arc::new(client));
        Ok(())
    }

    pub(crate) fn get(&self, client_id: &str) -> Option<Arc<OAuthClient>> {
        self.lock().get(client_id).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<OAuthClient>>> {
        self.0.lock().expect("OAuth client mutex poisoned")
    }
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(redirect_uris: &[&str]) -> OAuthClientSpec {
        OAuthClientSpec {
            client_id: "web-1.apps.googleusercontent.com".into(),
            client_secret: "GOCSPX-secret".into(),
            redirect_uris: redirect_uris.iter().map(|r| (*r).to_owned()).collect(),
        }
    }

    #[test]
    fn clients() {
        let clients = OAuthClients::default();
        clients
            .add(&spec(&[
                "https://app.example/cb",
                "http://127.0.0.1:9/cb?x=1",
            ]))
            .unwrap();
        let client = clients.get("web-1.apps.googleusercontent.com").unwrap();
        assert!(client.allows_redirect("https://app.example/cb"));
        assert!(client.allows_redirect("http://127.0.0.1:9/cb?x=1"));
        // Exact strings only: no trailing slash, case or query leeway.
        for other in [
            "https://app.example/cb/",
            "https://APP.example/cb",
            "https://app.example/cb?x=1",
            "http://127.0.0.1:9/cb",
        ] {
            assert!(!client.allows_redirect(other), "{other}");
        }
        assert!(client.secret_matches("GOCSPX-secret"));
        assert!(!client.secret_matches("GOCSPX-secreT"));
        assert!(!client.secret_matches(""));
        assert!(clients.get("web-2").is_none());

        for (bad, what) in [
            (spec(&[]), "no redirect"),
            (spec(&["/cb"]), "relative"),
            (spec(&["https://app.example/cb#x"]), "fragment"),
            (
                OAuthClientSpec {
                    client_secret: String::new(),
                    ..spec(&["https://app.example/cb"])
                },
                "no secret",
            ),
        ] {
            assert!(clients.add(&bad).is_err(), "{what}");
        }
        assert!(format!("{:?}", spec(&[])).contains("web-1"));
        assert!(!format!("{:?}", spec(&[])).contains("GOCSPX"));
    }
}
