//! The access decision: which policy applies to a request, and whether it admits the verified
//! principal. Pure: no IO. Group membership is the one fact that needs a lookup, so [`decide`]
//! asks for it one group at a time ([`Step::NeedGroup`]) and the caller, who owns the IO, asks
//! again with the answer; only the groups that can change the outcome are ever looked up.
//!
//! A request passes policy P when, in order:
//! 1. the account's email is verified and its `hd` is one of P's domains (never the email suffix);
//! 2. the email is not in P's `deny_users`, and, when P lists `org_units`, the account is
//!    active in one of them (asked of the membership lookup as the pseudo-group
//!    `orgunit:<path>`, see [`ORG_UNIT_PREFIX`]);
//! 3. P admits it: P lists no groups and no users, or the email is in `allow_users`, or the
//!    groups are satisfied (`any` or `all`);
//! 4. the first of P's rules that matches the MCP method and tool (if any) admits it too, or
//!    refuses it outright (`deny`).
//!
//! When P has rules, a POST whose MCP method Envoy could not name is refused: a rule that can be
//! skipped by sending a body the MCP filter does not understand would protect nothing.

mod glob;
mod select;

use std::{
    collections::HashSet,
    sync::{Arc, LazyLock},
};

pub use glob::Glob;
pub use select::{CONTEXT_KEY, PolicySet, UnknownPolicy};

use crate::{config::policies::GroupMode, principal::Principal};

/// One named policy, ready to evaluate.
#[derive(Debug, Clone)]
pub struct Policy {
    pub name: Arc<str>,
    /// Allowed Workspace domains, lower-cased.
    domains: Vec<String>,
    /// Lower-cased emails.
    deny_users: HashSet<String>,
    /// `org_units` as lookup keys ([`ORG_UNIT_PREFIX`] and the path): the account must be
    /// active in one of them.
    org_units: Vec<Arc<str>>,
    admission: Admission,
    rules: Vec<Rule>,
}

/// Who a policy or rule lets in.
#[derive(Debug, Clone, Default)]
struct Admission {
    allow_users: HashSet<String>,
    /// Lower-cased group emails, in the configured order (the lookup order).
    groups: Vec<Arc<str>>,
    mode: GroupMode,
}

#[derive(Debug, Clone)]
struct Rule {
    label: Arc<str>,
    methods: Vec<Glob>,
    /// Names for `tools/call`, prompt names for `prompts/get`, resource URIs for
    /// `resources/read`. All empty: the rule applies to every method in `methods`, whatever
    /// it names; otherwise only to the calls whose name one of them matches.
    tools: Vec<Glob>,
    prompts: Vec<Glob>,
    resources: Vec<Glob>,
    action: RuleAction,
}

#[derive(Debug, Clone)]
enum RuleAction {
    Deny,
    Admit(Admission),
}

/// The dynamic-metadata namespace of Envoy's MCP filter (Envoy 1.40), forwarded to the Check
/// (ext_authz's `metadata_context_namespaces`) and to the list filter (ext_proc's
/// `metadata_options`).
pub const MCP_METADATA_NAMESPACE: &str = "envoy.filters.http.mcp";

/// What the MCP filter told us about the request body, and how the request's MCP headers
/// compare with it (set by the Check module).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct McpCall<'a> {
    /// The JSON-RPC method, e.g. `tools/call`.
    pub method: Option<&'a str>,
    /// What the call names: `params.name` of a `tools/call` or `prompts/get`, `params.uri` of
    /// a `resources/read`.
    pub tool: Option<&'a str>,
    /// `Mcp-Method` or `Mcp-Name` says something else than the body, or a header the request's
    /// protocol revision requires is missing: the upstream might act on either, so the request
    /// is refused (400) whatever the policy.
    pub headers_disagree: bool,
    /// `MCP-Protocol-Version` is not [`CURRENT_PROTOCOL`], the revision whose headers are
    /// verified against the body: refused (400) where the policy has tool rules.
    pub protocol_too_old: bool,
}

/// The MCP revision (2026-07-28) whose `Mcp-Method`/`Mcp-Name` headers must equal the body; on
/// routes with tool rules, requests must declare it.
pub const CURRENT_PROTOCOL: &str = "2026-07-28";

/// The facts of a request a policy reads besides the principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    pub http_method: &'a str,
    pub mcp: McpCall<'a>,
}

/// The membership answers gathered so far for one decision.
#[derive(Debug, Clone, Default)]
pub struct Memberships {
    answers: Vec<(Arc<str>, bool)>,
}

impl Memberships {
    pub fn record(&mut self, group: Arc<str>, is_member: bool) {
        self.answers.push((group, is_member));
    }

    fn get(&self, group: &str) -> Option<bool> {
        self.answers
            .iter()
            .find(|(g, _)| &**g == group)
            .map(|&(_, answer)| answer)
    }
}

/// One step of a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Decided(Result<Grant, Refusal>),
    /// Look up whether the principal is in this group, record it, and call [`decide`] again.
    NeedGroup(Arc<str>),
}

/// Why a request was let in, for the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Grant {
    pub policy: Arc<str>,
    /// `policy` when the policy's own requirement decided, else the matching rule's label.
    pub rule: Arc<str>,
    /// The group whose membership admitted the user (`any`), if a group did.
    pub group: Option<Arc<str>>,
}

/// Why a request with a valid token was refused (a 403).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Refusal {
    pub policy: Arc<str>,
    pub rule: Arc<str>,
    pub why: Forbidden,
    /// The group that was required and missing (`all`), if one was.
    pub group: Option<Arc<str>>,
}

/// The reason behind a 403.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Forbidden {
    #[error("the account's email address is not verified")]
    EmailNotVerified,
    #[error("the account does not belong to a Google Workspace domain")]
    NoHostedDomain,
    #[error("the account's Workspace domain is not allowed")]
    DomainNotAllowed,
    #[error("the account is refused by policy")]
    UserDenied,
    #[error("the account is not in a group the policy requires")]
    NotInGroups,
    #[error("the account is not active in an organizational unit the policy requires")]
    NotInOrgUnit,
    #[error("the policy refuses this MCP method or tool")]
    RuleDenied,
    #[error("the policy needs the request's MCP method and tool, which were not available")]
    McpMetadataMissing,
    #[error("the route names a policy that does not exist")]
    UnknownPolicy,
    #[error("the request's Mcp-Method or Mcp-Name header does not match its body")]
    McpHeadersMismatch,
    #[error(
        "this MCP server's tool rules need MCP protocol version 2026-07-28 (Mcp-Method and Mcp-Name headers)"
    )]
    McpProtocolTooOld,
}

impl Forbidden {
    pub fn reason(self) -> &'static str {
        match self {
            Forbidden::EmailNotVerified => "email_not_verified",
            Forbidden::NoHostedDomain => "no_hosted_domain",
            Forbidden::DomainNotAllowed => "domain_not_allowed",
            Forbidden::UserDenied => "user_denied",
            Forbidden::NotInGroups => "not_in_groups",
            Forbidden::NotInOrgUnit => "not_in_org_unit",
            Forbidden::RuleDenied => "rule_denied",
            Forbidden::McpMetadataMissing => "mcp_metadata_missing",
            Forbidden::UnknownPolicy => "unknown_policy",
            Forbidden::McpHeadersMismatch => "mcp_headers_mismatch",
            Forbidden::McpProtocolTooOld => "mcp_protocol_too_old",
        }
    }

    /// A refusal of the request's form, not of the user: a 400 the client can fix, not a 403.
    pub fn is_bad_request(self) -> bool {
        matches!(
            self,
            Forbidden::McpHeadersMismatch | Forbidden::McpProtocolTooOld
        )
    }
}

/// How an organizational-unit requirement is asked of the membership lookup: a pseudo-group
/// `orgunit:<path>` ("is the account active in this unit or below"), cached like a group.
pub const ORG_UNIT_PREFIX: &str = "orgunit:";

/// The rule name when the policy's own requirement decided; one allocation, shared.
static POLICY_RULE: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("policy"));

/// Decides whether `policy` admits `principal` for `request`, given the memberships known so far.
pub fn decide(
    policy: &Policy,
    principal: &Principal,
    request: Request<'_>,
    known: &Memberships,
) -> Step {
    let refuse = |rule: &Arc<str>, why, group| {
        Step::Decided(Err(Refusal {
            policy: policy.name.clone(),
            rule: rule.clone(),
            why,
            group,
        }))
    };
    let policy_rule = POLICY_RULE.clone();
    if request.mcp.headers_disagree {
        return refuse(&policy_rule, Forbidden::McpHeadersMismatch, None);
    }
    if let Err(why) = policy.check_domain(principal) {
        return refuse(&policy_rule, why, None);
    }
    // Group and user checks key on the email; Google's directory does too.
    let email = principal.email().map(str::to_lowercase).unwrap_or_default();
    if policy.deny_users.contains(&email) {
        return refuse(&policy_rule, Forbidden::UserDenied, None);
    }
    if !policy.org_units.is_empty() {
        let mut unknown = None;
        let mut active = false;
        for unit in &policy.org_units {
            match known.get(unit) {
                Some(true) => {
                    active = true;
                    break;
                }
                Some(false) => {}
                None => unknown = unknown.or(Some(unit)),
            }
        }
        if !active {
            return match unknown {
                Some(unit) => Step::NeedGroup(unit.clone()),
                None => refuse(&policy_rule, Forbidden::NotInOrgUnit, None),
            };
        }
    }
    let base_group = match policy.admission.evaluate(&email, known) {
        Evaluation::Admitted(group) => group,
        Evaluation::Refused(group) => return refuse(&policy_rule, Forbidden::NotInGroups, group),
        Evaluation::Need(group) => return Step::NeedGroup(group),
    };
    // Tool rules read the body's method and tool, which only the current revision's headers
    // are checked against (an older client's upstream may act on something else).
    if !policy.rules.is_empty() && request.mcp.protocol_too_old {
        return refuse(&policy_rule, Forbidden::McpProtocolTooOld, None);
    }
    if !policy.rules.is_empty() && request.mcp.method.is_none() && request.http_method == "POST" {
        return refuse(&policy_rule, Forbidden::McpMetadataMissing, None);
    }
    let Some(rule) = policy.rules.iter().find(|rule| rule.applies(request.mcp)) else {
        return Step::Decided(Ok(Grant {
            policy: policy.name.clone(),
            rule: policy_rule,
            group: base_group,
        }));
    };
    if request.mcp.tool.is_none()
        && request
            .mcp
            .method
            .is_some_and(|method| rule.names_things_for(method))
    {
        return refuse(&rule.label, Forbidden::McpMetadataMissing, None);
    }
    match &rule.action {
        RuleAction::Deny => refuse(&rule.label, Forbidden::RuleDenied, None),
        RuleAction::Admit(admission) => match admission.evaluate(&email, known) {
            Evaluation::Admitted(group) => Step::Decided(Ok(Grant {
                policy: policy.name.clone(),
                rule: rule.label.clone(),
                group: group.or(base_group),
            })),
            Evaluation::Refused(group) => refuse(&rule.label, Forbidden::NotInGroups, group),
            Evaluation::Need(group) => Step::NeedGroup(group),
        },
    }
}

enum Evaluation {
    /// Admitted; by this group's membership, if a group decided.
    Admitted(Option<Arc<str>>),
    /// Refused; this group was required and missing (`all`), if one was.
    Refused(Option<Arc<str>>),
    Need(Arc<str>),
}

// === impl Policy ===

impl Policy {
    /// The default policy when none is configured: the domain check alone.
    pub fn domain_only(name: &str, domains: &[String]) -> Policy {
        Policy {
            name: Arc::from(name),
            domains: domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
            deny_users: HashSet::new(),
            org_units: Vec::new(),
            admission: Admission::default(),
            rules: Vec::new(),
        }
    }

    pub fn from_config(
        name: &str,
        config: &crate::config::policies::PolicyConfig,
        default_domains: &[String],
    ) -> Policy {
        let mut policy =
            Policy::domain_only(name, config.domains.as_deref().unwrap_or(default_domains));
        policy.deny_users = lower_set(&config.deny_users);
        policy.org_units = config
            .org_units
            .iter()
            .map(|unit| Arc::from(format!("{ORG_UNIT_PREFIX}{}", unit.to_lowercase())))
            .collect();
        policy.admission = Admission::new(&config.groups, config.require, &config.allow_users);
        policy.rules = config
            .rules
            .iter()
            .enumerate()
            .map(|(index, rule)| Rule {
                label: Arc::from(
                    rule.name
                        .clone()
                        .unwrap_or_else(|| format!("rules[{index}]")),
                ),
                methods: rule.methods.iter().map(|m| Glob::new(m)).collect(),
                tools: rule.tools.iter().map(|t| Glob::new(t)).collect(),
                prompts: rule.prompts.iter().map(|p| Glob::new(p)).collect(),
                resources: rule.resources.iter().map(|r| Glob::new(r)).collect(),
                action: if rule.deny {
                    RuleAction::Deny
                } else {
                    RuleAction::Admit(Admission::new(
                        &rule.groups,
                        rule.require,
                        &rule.allow_users,
                    ))
                },
            })
            .collect();
        policy
    }

    /// Every group this policy may ask about (for start-up checks).
    pub fn groups(&self) -> impl Iterator<Item = &str> {
        let rule_groups = self.rules.iter().flat_map(|rule| match &rule.action {
            RuleAction::Admit(admission) => admission.groups.as_slice(),
            RuleAction::Deny => &[],
        });
        self.admission
            .groups
            .iter()
            .chain(rule_groups)
            .map(|g| &**g)
    }

    /// Whether a rule is about `method` (one of its method globs matches it): without one, the
    /// policy answers every call of `method` alike, as its own requirement does. List filtering
    /// refuses a list result it cannot read only where this holds.
    pub fn has_rules_for(&self, method: &str) -> bool {
        self.rules
            .iter()
            .any(|rule| rule.methods.iter().any(|m| m.matches(method)))
    }

    /// Allows a principal whose verified account belongs to an allowed Workspace domain.
    ///
    /// The domain comes from `hd` only. A consumer account can register any email address,
    /// including one at the company's domain, so the email suffix proves nothing.
    fn check_domain(&self, principal: &Principal) -> Result<(), Forbidden> {
        if !principal.email_verified {
            return Err(Forbidden::EmailNotVerified);
        }
        let domain = principal.hosted_domain().ok_or(Forbidden::NoHostedDomain)?;
        if self.domains.iter().any(|d| d.eq_ignore_ascii_case(domain)) {
            Ok(())
        } else {
            Err(Forbidden::DomainNotAllowed)
        }
    }
}

// === impl Admission ===

impl Admission {
    fn new(groups: &[String], mode: GroupMode, allow_users: &[String]) -> Admission {
        Admission {
            allow_users: lower_set(allow_users),
            groups: groups.iter().map(|g| Arc::from(g.to_lowercase())).collect(),
            mode,
        }
    }

    fn evaluate(&self, email: &str, known: &Memberships) -> Evaluation {
        if self.groups.is_empty() && self.allow_users.is_empty() {
            return Evaluation::Admitted(None);
        }
        if !email.is_empty() && self.allow_users.contains(email) {
            return Evaluation::Admitted(None);
        }
        if email.is_empty() || self.groups.is_empty() {
            // Nobody to look up, or only named users may pass and this is not one of them.
            return Evaluation::Refused(None);
        }
        match self.mode {
            GroupMode::Any => {
                for group in &self.groups {
                    match known.get(group) {
                        Some(true) => return Evaluation::Admitted(Some(group.clone())),
                        Some(false) => {}
                        None => return Evaluation::Need(group.clone()),
                    }
                }
                Evaluation::Refused(None)
            }
            GroupMode::All => {
                for group in &self.groups {
                    match known.get(group) {
                        Some(true) => {}
                        Some(false) => return Evaluation::Refused(Some(group.clone())),
                        None => return Evaluation::Need(group.clone()),
                    }
                }
                Evaluation::Admitted(None)
            }
        }
    }
}

impl Rule {
    fn applies(&self, mcp: McpCall<'_>) -> bool {
        let Some(method) = mcp.method else {
            return false;
        };
        if !self.methods.iter().any(|m| m.matches(method)) {
            return false;
        }
        if self.tools.is_empty() && self.prompts.is_empty() && self.resources.is_empty() {
            return true;
        }
        let Some(names) = self.names_for(method) else {
            return false;
        };
        match mcp.tool {
            Some(name) => names.iter().any(|n| n.matches(name)),
            // A named call without its name: the rule may be about it; decide() refuses.
            None => !names.is_empty(),
        }
    }

    /// The patterns this rule has for what `method` names, if `method` names something.
    fn names_for(&self, method: &str) -> Option<&[Glob]> {
        match method {
            "tools/call" => Some(&self.tools),
            "prompts/get" => Some(&self.prompts),
            "resources/read" => Some(&self.resources),
            _ => None,
        }
    }

    /// Whether this rule names things for `method` (the answer depends on the name).
    fn names_things_for(&self, method: &str) -> bool {
        self.names_for(method)
            .is_some_and(|names| !names.is_empty())
    }
}

fn lower_set(items: &[String]) -> HashSet<String> {
    items.iter().map(|item| item.to_lowercase()).collect()
}

#[cfg(test)]
mod tests;
