//! Clients: dynamic registration (RFC 7591) that stores nothing, and finding a client again
//! from its id. A registered client id is the sealed registration itself (redirect URIs, name,
//! application type, issue and expiry time), so any replica accepts it and a registration
//! flood grows no memory. A client id that is an https URL is a Client ID Metadata Document,
//! fetched on demand from the hosts the operator accepts (`oauth.client_id_metadata_hosts`).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    redirect::{self, RedirectError, RedirectPolicy},
    seal::{Purpose, Sealer},
};
use crate::{
    client_metadata::{ClientMetadataError, ClientMetadataFetcher, host_allowed, is_metadata_url},
    config::{ClientIdHost, OAuthConfig},
    principal::unix_now,
    secrets::Current,
};

/// Most redirect URIs one registration may carry.
const MAX_REDIRECT_URIS: usize = 8;
/// Longest client name we keep (it is shown on the consent page).
const MAX_NAME_CHARS: usize = 80;

/// A client we know how to send a user back to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub client_id: String,
    /// As the client calls itself; shown on the consent page next to the redirect host.
    pub name: Option<String>,
    pub redirect_uris: Vec<String>,
    /// As registered (`web` when not given); `None` for a metadata document (not read there).
    pub application_type: Option<ApplicationType>,
}

/// RFC 7591 / OpenID Connect Registration `application_type`. It changes nothing we allow:
/// OIDC would keep `web` clients off loopback redirects, but VS Code registers as `native`
/// with https redirects too, and Claude Code's metadata says nothing, so both kinds may use
/// any redirect URI [`redirect`] accepts. Kept so that the registration answers with it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApplicationType {
    /// The OIDC default when a registration does not say.
    #[default]
    Web,
    Native,
}

/// What the operator chose about clients: private-use redirect schemes allowed
/// (`oauth.redirect_schemes`) and the hosts whose metadata documents may be client ids
/// (`oauth.client_id_metadata_hosts`). The default: no private-use scheme, any host.
#[derive(Debug, Clone, Default)]
pub struct ClientRules {
    pub redirects: RedirectPolicy,
    /// Empty: metadata documents from any (public) host.
    pub metadata_hosts: Vec<ClientIdHost>,
}

impl ClientRules {
    /// What `[oauth]` allows beyond the defaults: private-use redirect schemes, and the hosts
    /// of metadata-document client ids.
    pub fn from_settings(oauth: &OAuthConfig) -> ClientRules {
        ClientRules {
            redirects: RedirectPolicy::new(oauth.redirect_schemes.clone()),
            metadata_hosts: oauth.client_id_metadata_hosts.clone(),
        }
    }
}

/// Why a client id is not accepted (`invalid_client`; an error page at `/authorize`).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("unknown client id")]
    Unknown,
    #[error("the client registration has expired; register again")]
    Expired,
    #[error("client id metadata documents are not accepted here")]
    MetadataDisabled,
    /// Refused before any fetch: the operator lists the hosts whose documents are trusted.
    #[error("client metadata documents from this host are not accepted here")]
    MetadataHostNotAllowed,
    /// Every redirect URI in the document uses a private-use scheme the operator did not allow.
    #[error(
        "the client's metadata document lists no redirect URI this server accepts \
         (a private-use scheme needs its operator's oauth.redirect_schemes)"
    )]
    NoUsableRedirectUri,
    /// The page says only that the document could not be used: which of unreachable,
    /// timeout, status or not JSON would make us a port and status scanner of public hosts.
    /// The log and `authz_client_metadata_fetches_total` keep the detail.
    #[error("the client's metadata document could not be used")]
    Metadata(#[from] ClientMetadataError),
}

/// Why a registration is refused (RFC 7591 s3.2.2).
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("{0}")]
    RedirectUri(String),
    #[error("{0}")]
    Metadata(String),
}

/// The fields of a registration request we read; others are ignored (RFC 7591 s2).
#[derive(Debug, Deserialize)]
pub struct RegistrationRequest {
    #[serde(default)]
    redirect_uris: Vec<String>,
    token_endpoint_auth_method: Option<String>,
    grant_types: Option<Vec<String>>,
    response_types: Option<Vec<String>>,
    client_name: Option<String>,
    client_uri: Option<String>,
    scope: Option<String>,
    /// `native` or `web` (RFC 7591 s2 via OIDC Registration); read as text so that another
    /// value gets our error, not a generic JSON one.
    application_type: Option<String>,
}

/// The registration as sealed into the client id. Short field names: it travels in URLs.
#[derive(Debug, Serialize, Deserialize)]
struct Sealed {
    /// Redirect URIs.
    r: Vec<String>,
    /// Client name.
    #[serde(skip_serializing_if = "Option::is_none")]
    n: Option<String>,
    /// Issued at, expires at (unix seconds).
    t: u64,
    e: u64,
    /// Random: two identical registrations still get two client ids.
    #[serde(default)]
    i: String,
    /// Application type; absent for `web`, so most ids do not grow (ids from before it was
    /// kept open as `web`).
    #[serde(default, skip_serializing_if = "ApplicationType::is_web")]
    a: ApplicationType,
}

/// Resolves and registers clients.
#[derive(Debug)]
pub struct Clients {
    sealer: Arc<Current<Sealer>>,
    registration_ttl: u64,
    documents: Option<ClientMetadataFetcher>,
    rules: ClientRules,
}

// === impl Clients ===

impl Clients {
    pub fn new(
        sealer: Arc<Current<Sealer>>,
        registration_ttl: u64,
        documents: Option<ClientMetadataFetcher>,
    ) -> Clients {
        Clients {
            sealer,
            registration_ttl,
            documents,
            rules: ClientRules::default(),
        }
    }

    /// The same, with the operator's allowances.
    pub fn with_rules(self, rules: ClientRules) -> Clients {
        Clients { rules, ..self }
    }

    /// Validates a registration and answers with the RFC 7591 response body.
    pub fn register(&self, request: RegistrationRequest) -> Result<Value, RegistrationError> {
        if request.redirect_uris.is_empty() {
            return Err(RegistrationError::RedirectUri(
                "redirect_uris is required".into(),
            ));
        }
        if request.redirect_uris.len() > MAX_REDIRECT_URIS {
            return Err(RegistrationError::RedirectUri(format!(
                "at most {MAX_REDIRECT_URIS} redirect_uris"
            )));
        }
        for uri in &request.redirect_uris {
            redirect::check_registrable(uri, &self.rules.redirects).map_err(
                |e: RedirectError| {
                    RegistrationError::RedirectUri(format!("{e}: {}", printable(uri, 100)))
                },
            )?;
        }
        if let Some(grants) = &request.grant_types {
            if grants
                .iter()
                .any(|g| g != "authorization_code" && g != "refresh_token")
            {
                return Err(RegistrationError::Metadata(
                    "grant_types may only contain authorization_code and refresh_token".into(),
                ));
            }
        }
        if let Some(types) = &request.response_types {
            if types.iter().any(|t| t != "code") {
                return Err(RegistrationError::Metadata(
                    "response_types may only contain code".into(),
                ));
            }
        }
        let application_type = match request.application_type.as_deref() {
            None => ApplicationType::Web,
            Some("web") => ApplicationType::Web,
            Some("native") => ApplicationType::Native,
            Some(_) => {
                return Err(RegistrationError::Metadata(
                    "application_type must be \"native\" or \"web\"".into(),
                ));
            }
        };
        // Every client is public: PKCE protects the code, and a secret in a self-describing
        // client id would be no secret. RFC 7591 s3.2.1 lets us answer with the method we
        // chose; clients read it from the response.
        let _ = request.token_endpoint_auth_method;
        let name = request
            .client_name
            .as_deref()
            .map(|name| printable(name, MAX_NAME_CHARS))
            .filter(|name| !name.is_empty());
        let issued = unix_now();
        let sealed = Sealed {
            r: request.redirect_uris.clone(),
            n: name.clone(),
            t: issued,
            e: issued + self.registration_ttl,
            i: crate::random::random_token()[..11].to_string(),
            a: application_type,
        };
        let payload =
            serde_json::to_vec(&sealed).map_err(|e| RegistrationError::Metadata(e.to_string()))?;
        let client_id = self.sealer.get().seal(Purpose::ClientId, &payload);
        let mut body = json!({
            "client_id": client_id,
            "client_id_issued_at": issued,
            "redirect_uris": request.redirect_uris,
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "application_type": application_type,
        });
        if let Some(name) = name {
            body["client_name"] = json!(name);
        }
        if let Some(uri) = request.client_uri {
            body["client_uri"] = json!(uri);
        }
        if let Some(scope) = request.scope {
            body["scope"] = json!(scope);
        }
        Ok(body)
    }

    pub fn accepts_metadata_documents(&self) -> bool {
        self.documents.is_some()
    }

    /// Finds the client a client id names: opens a sealed registration, or fetches a metadata
    /// document (from a host the operator accepts) and keeps the redirect URIs it may use.
    pub async fn resolve(&self, client_id: &str) -> Result<Client, ClientError> {
        if is_metadata_url(client_id) {
            let documents = self
                .documents
                .as_ref()
                .ok_or(ClientError::MetadataDisabled)?;
            if !host_allowed(&self.rules.metadata_hosts, client_id) {
                return Err(ClientError::MetadataHostNotAllowed);
            }
            let document = documents.fetch(client_id).await?;
            // A private-use URI the operator did not allow is dropped, not fatal: the client
            // may still use its https or loopback ones. The setting is read now, so changing
            // it needs no refetch.
            let redirect_uris: Vec<String> = document
                .redirect_uris
                .iter()
                .filter(|uri| redirect::check_listed(uri, &self.rules.redirects).is_ok())
                .cloned()
                .collect();
            if redirect_uris.is_empty() {
                return Err(ClientError::NoUsableRedirectUri);
            }
            return Ok(Client {
                client_id: client_id.to_string(),
                name: document
                    .client_name
                    .as_deref()
                    .map(|name| printable(name, MAX_NAME_CHARS)),
                redirect_uris,
                application_type: None,
            });
        }
        let payload = self
            .sealer
            .get()
            .open(Purpose::ClientId, client_id)
            .ok_or(ClientError::Unknown)?;
        let sealed: Sealed = serde_json::from_slice(&payload).map_err(|_| ClientError::Unknown)?;
        if sealed.e <= unix_now() {
            return Err(ClientError::Expired);
        }
        Ok(Client {
            client_id: client_id.to_string(),
            name: sealed.n,
            redirect_uris: sealed.r,
            application_type: Some(sealed.a),
        })
    }
}

// === impl ApplicationType ===

impl ApplicationType {
    fn is_web(&self) -> bool {
        *self == ApplicationType::Web
    }
}

/// At most `max` characters, control characters dropped: safe to log and to show (escaped).
fn printable(text: &str, max: usize) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(max)
        .collect::<String>()
        .trim()
        .to_string()
}
