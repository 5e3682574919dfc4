//! `[resource]` and `[[resources]]`: the MCP servers protected. What a request or a sign-in
//! is for is decided from these by [`crate::resource`].

use serde::{Deserialize, Serialize};
use url::Url;

use super::{Config, ConfigError};

/// One `[resource]` or `[[resources]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    /// The canonical MCP server URL, as users configure it in their clients.
    pub url: Url,
    /// Shown on the consent page and in the resource metadata. Default: `oauth.resource_name`
    /// for `[resource]`, the URL's host and path for `[[resources]]`.
    #[serde(default)]
    pub name: Option<String>,
    /// The policy for requests under this URL's path when Envoy names none (before
    /// `[[routes]]`), and the one a sign-in and every refresh for it must pass. Default: what
    /// `[[routes]]` choose for the URL's path, else the default policy.
    #[serde(default)]
    pub policy: Option<String>,
}

impl Config {
    pub(super) fn validate_resources(&self) -> Result<(), ConfigError> {
        let entries = self.resource_entries();
        if entries.is_empty() {
            return Err(ConfigError {
                key: "resource.url".into(),
                message: "the MCP server's URL is required (or list several in [[resources]]); \
                          from the environment: AUTHZ_RESOURCE__URL"
                    .into(),
            });
        }
        let keyed: Vec<(String, &ResourceConfig)> = entries
            .iter()
            .map(|(key, entry)| (key.clone(), *entry))
            .collect();
        if let Err((key, message)) = check(&keyed) {
            return Err(ConfigError { key, message });
        }
        for (key, entry) in &entries {
            if let Some(policy) = &entry.policy {
                if !self.policies.contains_key(policy) && policy != self.default_policy() {
                    return Err(ConfigError {
                        key: format!("{key}.policy"),
                        message: format!("no policy named {policy:?} is defined"),
                    });
                }
            }
        }
        Ok(())
    }

    /// `[resource]` then `[[resources]]`, with their keys for errors.
    fn resource_entries(&self) -> Vec<(String, &ResourceConfig)> {
        self.resource
            .iter()
            .map(|entry| ("resource".to_string(), entry))
            .chain(
                self.resources
                    .iter()
                    .enumerate()
                    .map(|(index, entry)| (format!("resources[{index}]"), entry)),
            )
            .collect()
    }
}

/// Checks of the entries that need them all; `(key, message)`.
pub fn check(entries: &[(String, &ResourceConfig)]) -> Result<(), (String, String)> {
    let mut seen: Vec<(&str, String)> = Vec::new();
    for (key, entry) in entries {
        let url = &entry.url;
        if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
            return Err((
                format!("{key}.url"),
                "must be an absolute http(s) URL".into(),
            ));
        }
        if url.fragment().is_some() || url.query().is_some() {
            return Err((
                format!("{key}.url"),
                "must not carry a query or fragment".into(),
            ));
        }
        if let Some(name) = &entry.name {
            if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
                return Err((
                    format!("{key}.name"),
                    "must be 1-100 printable characters".into(),
                ));
            }
        }
        let canonical = url.as_str().trim_end_matches('/');
        if let Some((other, _)) = seen.iter().find(|(_, seen)| seen == canonical) {
            return Err((
                format!("{key}.url"),
                format!("{canonical} is also declared by {other}"),
            ));
        }
        seen.push((key, canonical.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::resource_entry as entry;

    #[test]
    fn duplicate_and_unusable_urls_are_refused() {
        let a = entry("https://mcp.example.com/mcp", None);
        let b = entry("https://mcp.example.com/mcp/", None);
        let error = check(&[("resource".into(), &a), ("resources[0]".into(), &b)]).unwrap_err();
        assert_eq!(error.0, "resources[0].url");
        let query = entry("https://mcp.example.com/mcp?x=1", None);
        assert!(check(&[("resources[0]".into(), &query)]).is_err());
        let ftp = entry("ftp://mcp.example.com/mcp", None);
        assert!(check(&[("resources[0]".into(), &ftp)]).is_err());
    }
}
