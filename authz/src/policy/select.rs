//! Choosing the policy for a request: the name Envoy sends in the route's `context_extensions`
//! (key [`CONTEXT_KEY`]) first, then the longest matching path prefix from `[[routes]]`, then the
//! default policy.

use std::{collections::HashMap, sync::Arc};

use super::Policy;
use crate::config::{Config, policies::prefix_matches};

/// The `context_extensions` key naming the policy in Envoy's per-route `ExtAuthzPerRoute`.
pub const CONTEXT_KEY: &str = "policy";

/// All configured policies and how to choose among them.
#[derive(Debug, Clone)]
pub struct PolicySet {
    policies: HashMap<Arc<str>, Policy>,
    /// `(prefix, policy)`, longest prefix first, so the most specific route wins whatever the
    /// order in the file.
    routes: Vec<(String, Arc<str>)>,
    default: Arc<str>,
}

/// A name that selects no policy (a route's `context_extensions` naming a policy this config
/// lacks). Refused with a 403, never allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownPolicy(pub Arc<str>);

impl PolicySet {
    /// Builds the set from a validated config (every referenced name exists).
    pub fn from_config(config: &Config) -> PolicySet {
        let mut policies: HashMap<Arc<str>, Policy> = config
            .policies
            .iter()
            .map(|(name, policy)| {
                let policy = Policy::from_config(name, policy, &config.access.domains);
                (policy.name.clone(), policy)
            })
            .collect();
        let default: Arc<str> = Arc::from(config.default_policy());
        policies
            .entry(default.clone())
            .or_insert_with(|| Policy::domain_only(&default, &config.access.domains));
        let mut routes: Vec<(String, Arc<str>)> = config
            .routes
            .iter()
            .map(|route| {
                let name = policies
                    .get_key_value(route.policy.as_str())
                    .map(|(name, _)| name.clone())
                    .unwrap_or_else(|| Arc::from(route.policy.as_str()));
                (route.prefix.clone(), name)
            })
            .collect();
        routes.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        PolicySet {
            policies,
            routes,
            default,
        }
    }

    /// The policy for a request. `named` is the value of the route's `policy` context
    /// extension, if Envoy sent one; `path` is `:path`.
    pub fn select(&self, named: Option<&str>, path: &str) -> Result<&Policy, UnknownPolicy> {
        let name = match named {
            Some(name) => name,
            None => self
                .routes
                .iter()
                .find(|(prefix, _)| prefix_matches(prefix, path))
                .map_or(&*self.default, |(_, name)| &**name),
        };
        self.policies
            .get(name)
            .ok_or_else(|| UnknownPolicy(Arc::from(bounded(name))))
    }

    pub fn policies(&self) -> impl Iterator<Item = &Policy> {
        self.policies.values()
    }

    pub fn default_name(&self) -> &str {
        &self.default
    }
}

/// A name from the request can be anything; bound what goes into logs and cache keys.
fn bounded(name: &str) -> &str {
    let mut end = name.len().min(64);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}
