//! The metadata document's format and the rules a document must meet before its client may
//! start an authorization (draft-ietf-oauth-client-id-metadata-document, as MCP uses it).

use serde::Deserialize;
use url::{Host, Url};

use super::{ClientMetadata, ClientMetadataError};

/// The fields we read; others (`jwks_uri`, `software_id`, ...) are ignored.
#[derive(Debug, Deserialize)]
struct Document {
    client_id: Option<String>,
    client_name: Option<String>,
    client_uri: Option<String>,
    logo_uri: Option<String>,
    #[serde(default)]
    redirect_uris: Vec<String>,
    token_endpoint_auth_method: Option<String>,
    grant_types: Option<Vec<String>>,
    response_types: Option<Vec<String>>,
    scope: Option<String>,
    /// Only read to refuse it: a secret published at a public URL is no secret.
    client_secret: Option<serde::de::IgnoredAny>,
}

/// Parses and checks a document fetched from `client_id`.
pub(crate) fn parse(client_id: &str, body: &[u8]) -> Result<ClientMetadata, ClientMetadataError> {
    use ClientMetadataError::Invalid;
    let document: Document = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            Invalid("the document is not a client metadata object")
        } else {
            ClientMetadataError::NotJson
        }
    })?;
    // Byte for byte: the document vouches for exactly the URL it was fetched from.
    match &document.client_id {
        None => return Err(Invalid("client_id is missing")),
        Some(id) if id != client_id => return Err(Invalid("client_id does not match its URL")),
        Some(_) => {}
    }
    if document.client_secret.is_some() {
        return Err(Invalid(
            "a metadata document must not carry a client_secret",
        ));
    }
    if document.redirect_uris.is_empty() {
        return Err(Invalid("redirect_uris is missing or empty"));
    }
    for uri in &document.redirect_uris {
        check_redirect_uri(uri)?;
    }
    // We hold no key or secret for the client, so it authenticates with PKCE alone.
    let auth_method = document
        .token_endpoint_auth_method
        .unwrap_or_else(|| "none".to_string());
    if auth_method != "none" {
        return Err(Invalid("token_endpoint_auth_method must be \"none\""));
    }
    if let Some(types) = &document.response_types {
        if !types.iter().any(|t| t == "code") {
            return Err(Invalid("response_types does not include \"code\""));
        }
    }
    if let Some(grants) = &document.grant_types {
        if !grants.iter().any(|g| g == "authorization_code") {
            return Err(Invalid(
                "grant_types does not include \"authorization_code\"",
            ));
        }
    }
    Ok(ClientMetadata {
        client_id: client_id.to_string(),
        client_name: document.client_name,
        // Shown or linked on the consent page: anything but an https URL (a `javascript:` or
        // `data:` URI, a typo) is dropped rather than refusing the client over decoration.
        client_uri: document.client_uri.filter(|u| is_https_url(u)),
        logo_uri: document.logo_uri.filter(|u| is_https_url(u)),
        redirect_uris: document.redirect_uris,
        token_endpoint_auth_method: auth_method,
        grant_types: document
            .grant_types
            .unwrap_or_else(|| vec!["authorization_code".to_string()]),
        response_types: document
            .response_types
            .unwrap_or_else(|| vec!["code".to_string()]),
        scope: document.scope,
    })
}

/// https with a host, http to a loopback host (RFC 8252 s7.3: a native app listens on an
/// ephemeral port, so the port is matched later, not here), or another scheme with a host
/// (`cursor://anysphere.cursor-mcp/oauth/callback`), never a fragment or userinfo. Whether a
/// private-use scheme may be used is the operator's call (`oauth.redirect_schemes`), made by
/// the facade each time the document is used, so changing the setting needs no refetch.
fn check_redirect_uri(uri: &str) -> Result<(), ClientMetadataError> {
    use ClientMetadataError::Invalid;
    let url = Url::parse(uri).map_err(|_| Invalid("a redirect URI is not a URL"))?;
    if url.fragment().is_some() {
        return Err(Invalid("a redirect URI has a fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Invalid("a redirect URI has a user name or password"));
    }
    let loopback = match url.host() {
        Some(Host::Domain(name)) => name == "localhost",
        Some(Host::Ipv4(ip)) => ip == std::net::Ipv4Addr::LOCALHOST,
        Some(Host::Ipv6(ip)) => ip == std::net::Ipv6Addr::LOCALHOST,
        None => false,
    };
    match url.scheme() {
        "https" if url.host().is_some() => Ok(()),
        "http" if loopback => Ok(()),
        "http" | "https" => Err(Invalid(
            "a redirect URI must be https, or http to localhost, 127.0.0.1 or [::1]",
        )),
        _ if url.host().is_some() => Ok(()),
        _ => Err(Invalid(
            "a redirect URI must be https, http to localhost, 127.0.0.1 or [::1], \
             or scheme://host for a private-use scheme",
        )),
    }
}

fn is_https_url(uri: &str) -> bool {
    Url::parse(uri).is_ok_and(|u| u.scheme() == "https" && u.host().is_some())
}
