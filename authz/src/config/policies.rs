//! The `[policies.<name>]` and `[[routes]]` sections: who may reach which route and call which
//! MCP method or tool. Parsed and checked here; turned into the runtime [`crate::policy`] types
//! at start-up.

use serde::{Deserialize, Serialize};

use super::string_list;

/// One named policy.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Allowed Workspace domains (`hd`). Default: `access.domains`.
    #[serde(default, deserialize_with = "optional_string_list")]
    pub domains: Option<Vec<String>>,
    /// Google groups (by email) that admit a user; see `require`.
    #[serde(default, deserialize_with = "string_list")]
    pub groups: Vec<String>,
    /// `any`: one of `groups` suffices; `all`: every one is needed.
    #[serde(default)]
    pub require: GroupMode,
    /// Users (by email, case-insensitive) admitted without group membership. The domain is
    /// still required: this is not a way around `hd`.
    #[serde(default, deserialize_with = "string_list")]
    pub allow_users: Vec<String>,
    /// Users refused whatever their groups.
    #[serde(default, deserialize_with = "string_list")]
    pub deny_users: Vec<String>,
    /// Organizational units (`orgUnitPath`, e.g. `/Engineering`; sub-units included; `/` is
    /// the whole tenant): when set, only an account the Directory API reports active (not
    /// suspended, not archived) in one of them is admitted. Needs `[groups]` with
    /// `api = "directory"`.
    #[serde(default, deserialize_with = "string_list")]
    pub org_units: Vec<String>,
    /// Extra requirements for particular MCP methods and tools; the first that matches applies,
    /// on top of the policy's own requirement.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

/// A per-method / per-tool rule.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// A label for audit events and errors. Default `rules[<index>]`.
    #[serde(default)]
    pub name: Option<String>,
    /// JSON-RPC methods (globs), e.g. `["tools/call"]`.
    #[serde(deserialize_with = "string_list")]
    pub methods: Vec<String>,
    /// Tool names (globs) for `tools/call`, e.g. `["delete_*"]`. With `tools`, `prompts` and
    /// `resources` all empty: any name, and any method in `methods`.
    #[serde(default, deserialize_with = "string_list")]
    pub tools: Vec<String>,
    /// Prompt names (globs) for `prompts/get`.
    #[serde(default, deserialize_with = "string_list")]
    pub prompts: Vec<String>,
    /// Resource URIs (globs) for `resources/read`, e.g. `["file:///secrets/*"]`.
    #[serde(default, deserialize_with = "string_list")]
    pub resources: Vec<String>,
    #[serde(default, deserialize_with = "string_list")]
    pub groups: Vec<String>,
    #[serde(default)]
    pub require: GroupMode,
    #[serde(default, deserialize_with = "string_list")]
    pub allow_users: Vec<String>,
    /// Refuse every request the rule matches.
    #[serde(default)]
    pub deny: bool,
}

/// How a list of groups is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupMode {
    #[default]
    Any,
    All,
}

/// A path-prefix rule selecting a policy when Envoy names none.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Matched on whole path segments: `/grafana` matches `/grafana` and `/grafana/mcp`, not
    /// `/grafanax`.
    pub prefix: String,
    pub policy: String,
}

/// The name of the policy used when neither Envoy nor a route names one, if the config does
/// not define `[policies.default]`: the domain check alone.
pub const DEFAULT_POLICY: &str = "default";

fn optional_string_list<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<String>>, D::Error> {
    string_list(deserializer).map(Some)
}

/// Checks that are about one policy alone; references between sections are checked by the
/// caller. Errors are `(key suffix, message)`.
pub(super) fn check_policy(policy: &PolicyConfig) -> Result<(), (String, String)> {
    if let Some(domains) = &policy.domains {
        if domains.is_empty() {
            return Err(("domains".into(), "must not be empty when given".into()));
        }
        for domain in domains {
            super::check_domain(domain).map_err(|m| ("domains".to_string(), m))?;
        }
    }
    check_emails("groups", &policy.groups)?;
    check_emails("allow_users", &policy.allow_users)?;
    check_emails("deny_users", &policy.deny_users)?;
    for (index, rule) in policy.rules.iter().enumerate() {
        let key = |field: &str| format!("rules[{index}].{field}");
        if rule.methods.is_empty() {
            return Err((
                key("methods"),
                "at least one method pattern is required".into(),
            ));
        }
        for pattern in rule
            .methods
            .iter()
            .chain(&rule.tools)
            .chain(&rule.prompts)
            .chain(&rule.resources)
        {
            if pattern.is_empty() || pattern.chars().any(char::is_control) {
                return Err((
                    key("methods"),
                    format!("{pattern:?} is not a usable pattern"),
                ));
            }
        }
        if rule.deny && !(rule.groups.is_empty() && rule.allow_users.is_empty()) {
            return Err((
                key("deny"),
                "a deny rule cannot also list groups or allow_users".into(),
            ));
        }
        check_emails(&key("groups"), &rule.groups)?;
        check_emails(&key("allow_users"), &rule.allow_users)?;
        if let Some(name) = &rule.name {
            check_name(name).map_err(|m| (key("name"), m))?;
        }
    }
    Ok(())
}

/// Policy and rule names appear in audit events and 403 bodies: keep them plain.
pub(super) fn check_name(name: &str) -> Result<(), String> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.len() > 64 || !name.chars().all(plain) {
        return Err(format!(
            "{name:?} must be 1-64 characters of letters, digits, '-', '_' or '.'"
        ));
    }
    Ok(())
}

fn check_emails(key: &str, emails: &[String]) -> Result<(), (String, String)> {
    for email in emails {
        let well_formed = email.len() <= 254
            && email.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty() && !domain.is_empty() && !domain.contains('@')
            })
            && !email
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '\'' | '"'));
        if !well_formed {
            return Err((
                key.to_string(),
                format!("{email:?} is not an email address"),
            ));
        }
    }
    Ok(())
}

/// Whether `path` (without its query) falls under `prefix`, on segment boundaries.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}
