//! The MCP servers authz protects, each a protected resource (RFC 9728) with its own canonical
//! URL, name and policy: which one a request is for, which one a client asks a token for, and
//! the metadata URL a challenge names.
//!
//! `[resource]` is the one-server shorthand; `[[resources]]` lists several. The first declared
//! (the shorthand when present) is the default: a sign-in that names no resource is for it.
//! With one server, every request is its; with several, a request under none of their paths
//! is for none (refused, 404): a policy given per server must not be sidestepped through
//! another path the same upstream serves.

use std::sync::Arc;

use crate::config::{Config, ResourceConfig, policies::prefix_matches};

/// One protected MCP server, ready to answer.
#[derive(Debug, PartialEq, Eq)]
pub struct McpResource {
    /// The URL as configured: the `aud` of our tokens, PRM's `resource`.
    pub url: String,
    pub name: String,
    pub policy: Option<Arc<str>>,
    /// Where its protected resource metadata is served (path-aware, RFC 9728 s3.1).
    pub metadata_url: String,
    /// The URL's path without a trailing slash (`""` for an origin).
    pub path: String,
    /// `host[:port]`, without the scheme's default port, lower-case.
    authority: String,
}

/// Every protected resource; never empty, the first is the default.
#[derive(Debug, Clone)]
pub struct Resources {
    list: Vec<Arc<McpResource>>,
}

/// The resource a request is for.
#[derive(Debug, Clone, Copy)]
pub struct Selected<'a> {
    pub resource: &'a Arc<McpResource>,
    /// The request's path is under the resource's: its policy applies. `false` for the
    /// default resource standing in for a path no resource claims.
    pub by_path: bool,
}

impl Resources {
    /// The protected MCP servers of a validated config, the default first.
    pub fn from_config(config: &Config) -> Resources {
        let shorthand_name = config
            .oauth
            .as_ref()
            .map(|oauth| oauth.resource_name.as_str());
        let entries: Vec<(&ResourceConfig, Option<&str>)> = config
            .resource
            .iter()
            .map(|entry| (entry, shorthand_name))
            .chain(config.resources.iter().map(|entry| (entry, None)))
            .collect();
        Resources::new(&entries)
    }

    /// From validated entries, the default first. `default_name` names the shorthand.
    pub fn new(entries: &[(&ResourceConfig, Option<&str>)]) -> Resources {
        let list = entries
            .iter()
            .map(|(entry, default_name)| Arc::new(McpResource::new(entry, *default_name)))
            .collect::<Vec<_>>();
        assert!(!list.is_empty(), "the config guarantees one resource");
        Resources { list }
    }

    pub fn default_resource(&self) -> &Arc<McpResource> {
        &self.list[0]
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<McpResource>> {
        self.list.iter()
    }

    /// The resource a request to `host` and `path` is for: among the resources on this host
    /// (all of them when none is: Envoy may be reached under an internal name), the longest
    /// resource path the request falls under (on segment boundaries). With one resource, a
    /// request under no path is still its (`by_path: false`); with several, `None`.
    pub fn for_request(&self, host: &str, path: &str) -> Option<Selected<'_>> {
        let host = without_default_port(host);
        let on_this_host =
            |resource: &&Arc<McpResource>| resource.authority.eq_ignore_ascii_case(host);
        let on_host = self.list.iter().any(|resource| on_this_host(&resource));
        let best = self
            .list
            .iter()
            .filter(|resource| !on_host || on_this_host(resource))
            .filter(|resource| prefix_matches(&resource.path, path))
            .max_by_key(|resource| {
                (
                    resource.path.len(),
                    // Among equals, the first declared (max_by_key keeps the last).
                    std::cmp::Reverse(self.position(resource)),
                )
            });
        match best {
            Some(resource) => Some(Selected {
                resource,
                by_path: true,
            }),
            None if self.list.len() == 1 => Some(Selected {
                resource: self.default_resource(),
                by_path: false,
            }),
            None => None,
        }
    }

    /// The resource a client names in `resource` (RFC 8707): one of ours exactly, or but for a
    /// trailing slash (clients differ on `https://host` versus `https://host/`).
    pub fn by_url(&self, requested: &str) -> Option<&Arc<McpResource>> {
        let requested = requested.trim_end_matches('/');
        self.list
            .iter()
            .find(|resource| resource.url.trim_end_matches('/') == requested)
    }

    /// The resource a grant stored before resources were recorded (or the default): `None` is
    /// the default resource; an unknown URL (a resource since removed) is `None`.
    pub fn of_grant(&self, recorded: Option<&str>) -> Option<&Arc<McpResource>> {
        match recorded {
            None => Some(self.default_resource()),
            Some(url) => self.list.iter().find(|resource| resource.url == url),
        }
    }

    /// The resource whose metadata lives at `/.well-known/oauth-protected-resource{path}`: the
    /// one with that path on this host, else the first with that path. The root document
    /// (`path` empty) describes a whole-origin resource when there is one, else the default.
    pub fn by_metadata_path(&self, host: &str, path: &str) -> Option<&Arc<McpResource>> {
        let path = path.trim_end_matches('/');
        let host = normalized_authority(host);
        let mut matching = self.list.iter().filter(|resource| resource.path == path);
        let Some(first) = matching.next() else {
            return path.is_empty().then(|| self.default_resource());
        };
        Some(
            std::iter::once(first)
                .chain(matching)
                .find(|resource| resource.authority == host)
                .unwrap_or(first),
        )
    }

    fn position(&self, resource: &Arc<McpResource>) -> usize {
        self.list
            .iter()
            .position(|r| Arc::ptr_eq(r, resource))
            .unwrap_or(0)
    }
}

impl McpResource {
    fn new(entry: &ResourceConfig, default_name: Option<&str>) -> McpResource {
        let url = &entry.url;
        let path = url.path().trim_end_matches('/').to_string();
        let origin = url.origin().ascii_serialization();
        let authority = normalized_authority(origin.split_once("://").map_or("", |(_, a)| a));
        let name = entry
            .name
            .clone()
            .or_else(|| default_name.map(str::to_string))
            .unwrap_or_else(|| format!("{}{}", url.host_str().unwrap_or_default(), path));
        McpResource {
            url: url.to_string(),
            name,
            policy: entry.policy.as_deref().map(Arc::from),
            metadata_url: format!("{origin}/.well-known/oauth-protected-resource{path}"),
            path,
            authority,
        }
    }

    /// The host part of the URL, for the consent page.
    pub fn host(&self) -> &str {
        &self.authority
    }
}

/// `Host`/`:authority` as compared with a resource URL's (case-insensitively): without
/// `:443`/`:80` (the scheme is not known here; a resource URL never spells its default port).
fn without_default_port(authority: &str) -> &str {
    authority
        .strip_suffix(":443")
        .or_else(|| authority.strip_suffix(":80"))
        .unwrap_or(authority)
}

/// A resource URL's authority as stored: lower-case, without a default port.
fn normalized_authority(authority: &str) -> String {
    without_default_port(authority).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use crate::test_support::resources;

    #[test]
    fn a_request_is_for_the_longest_resource_path_it_falls_under() {
        let all = resources(&[
            "https://mcp.example.com/mcp",
            "https://mcp.example.com/grafana/mcp",
            "https://mcp.example.com/sre/mcp",
        ]);
        let url =
            |host: &str, path: &str| all.for_request(host, path).unwrap().resource.url.clone();
        assert_eq!(
            url("mcp.example.com", "/grafana/mcp"),
            "https://mcp.example.com/grafana/mcp"
        );
        assert_eq!(
            url("mcp.example.com", "/grafana/mcp/?x=1"),
            "https://mcp.example.com/grafana/mcp"
        );
        assert_eq!(
            url("mcp.example.com", "/sre/mcp"),
            "https://mcp.example.com/sre/mcp"
        );
        assert_eq!(
            url("mcp.example.com", "/mcp"),
            "https://mcp.example.com/mcp"
        );
        // Segment boundaries: /grafana/mcpx is nobody's, and neither is another path of the
        // upstream a server is on: with several servers, no server's policy would be right.
        assert!(
            all.for_request("mcp.example.com", "/grafana/mcpx")
                .is_none()
        );
        assert!(all.for_request("mcp.example.com", "/grafana/sse").is_none());
        assert!(all.for_request("mcp.example.com", "/mcp").unwrap().by_path);
        // One server: every path is its, but its policy is not chosen by path.
        let one = resources(&["https://mcp.example.com/mcp"]);
        let other = one.for_request("mcp.example.com", "/other").unwrap();
        assert_eq!(other.resource.url, "https://mcp.example.com/mcp");
        assert!(!other.by_path);
    }

    #[test]
    fn the_host_decides_between_resources_with_one_path() {
        let all = resources(&[
            "https://grafana.example.com/mcp",
            "https://sre.example.com:8443/mcp",
        ]);
        let url = |host: &str| all.for_request(host, "/mcp").unwrap().resource.url.clone();
        assert_eq!(
            url("sre.example.com:8443"),
            "https://sre.example.com:8443/mcp"
        );
        assert_eq!(
            url("GRAFANA.example.com:443"),
            "https://grafana.example.com/mcp"
        );
        // An unknown host: the first declared.
        assert_eq!(url("internal"), "https://grafana.example.com/mcp");
        assert_eq!(
            all.by_metadata_path("sre.example.com:8443", "/mcp")
                .unwrap()
                .url,
            "https://sre.example.com:8443/mcp"
        );
    }

    #[test]
    fn an_origin_resource_covers_every_path() {
        let all = resources(&["https://mcp.example.com/sre/mcp", "https://mcp.example.com"]);
        let selected = all.for_request("mcp.example.com", "/anything").unwrap();
        assert_eq!(selected.resource.url, "https://mcp.example.com/");
        assert!(selected.by_path);
        assert_eq!(
            selected.resource.metadata_url,
            "https://mcp.example.com/.well-known/oauth-protected-resource"
        );
        // The root metadata document is the whole-origin server's, though it is not first.
        assert_eq!(
            all.by_metadata_path("mcp.example.com", "").unwrap().url,
            "https://mcp.example.com/"
        );
    }

    #[test]
    fn clients_may_add_or_drop_a_trailing_slash_but_nothing_else() {
        let all = resources(&["https://mcp.example.com/mcp", "https://mcp.example.com"]);
        assert!(all.by_url("https://mcp.example.com/mcp/").is_some());
        assert!(all.by_url("https://mcp.example.com").is_some());
        assert!(all.by_url("https://mcp.example.com/").is_some());
        assert!(all.by_url("https://mcp.example.com/mc").is_none());
        assert!(all.by_url("https://MCP.example.com/mcp").is_none());
        assert!(all.by_url("http://mcp.example.com/mcp").is_none());
    }

    #[test]
    fn metadata_urls_are_path_aware() {
        let all = resources(&["https://mcp.example.com/grafana/mcp/"]);
        let resource = all.default_resource();
        assert_eq!(
            resource.metadata_url,
            "https://mcp.example.com/.well-known/oauth-protected-resource/grafana/mcp"
        );
        assert_eq!(resource.name, "mcp.example.com/grafana/mcp");
        assert!(all.by_metadata_path("x", "/grafana/mcp").is_some());
        assert!(all.by_metadata_path("x", "/grafana").is_none());
        assert!(all.by_metadata_path("x", "").is_some());
    }

    #[test]
    fn grants_from_before_resources_were_recorded_are_the_default_resource() {
        let all = resources(&[
            "https://mcp.example.com/mcp",
            "https://mcp.example.com/sre/mcp",
        ]);
        assert_eq!(
            all.of_grant(None).unwrap().url,
            "https://mcp.example.com/mcp"
        );
        assert!(all.of_grant(Some("https://mcp.example.com/gone")).is_none());
    }
}
