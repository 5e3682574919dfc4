use super::*;
use crate::{
    config::{
        Config,
        policies::{PolicyConfig, RuleConfig},
    },
    principal::{Parts, TokenSource},
};

fn principal(email: &str, hd: Option<&str>, verified: bool) -> Principal {
    Principal::new(Parts {
        sub: "1",
        email: Some(email),
        email_verified: verified,
        hosted_domain: hd,
        expires_at: u64::MAX,
        source: TokenSource::GoogleIdToken,
        session: None,
    })
}

fn user(email: &str) -> Principal {
    principal(email, Some("example.com"), true)
}

const GET: Request<'static> = Request {
    http_method: "GET",
    mcp: McpCall {
        method: None,
        tool: None,
        headers_disagree: false,
        protocol_too_old: false,
    },
};

fn call(tool: &'static str) -> Request<'static> {
    Request {
        http_method: "POST",
        mcp: McpCall {
            method: Some("tools/call"),
            tool: Some(tool),
            ..McpCall::default()
        },
    }
}

fn method(name: &'static str) -> Request<'static> {
    Request {
        http_method: "POST",
        mcp: McpCall {
            method: Some(name),
            tool: None,
            ..McpCall::default()
        },
    }
}

/// Runs a decision to the end, answering group lookups from `groups` (the user's groups) and
/// returning the outcome and the groups asked about, in order.
fn run(
    policy: &Policy,
    principal: &Principal,
    request: Request<'_>,
    groups: &[&str],
) -> (Result<Grant, Refusal>, Vec<String>) {
    let mut known = Memberships::default();
    let mut asked = Vec::new();
    loop {
        match decide(policy, principal, request, &known) {
            Step::Decided(outcome) => return (outcome, asked),
            Step::NeedGroup(group) => {
                assert!(
                    !asked.contains(&group.to_string()),
                    "asked twice for {group}"
                );
                asked.push(group.to_string());
                let member = groups.iter().any(|g| g.eq_ignore_ascii_case(&group));
                known.record(group, member);
            }
        }
    }
}

fn reason(outcome: &Result<Grant, Refusal>) -> &'static str {
    match outcome {
        Ok(_) => "allowed",
        Err(refusal) => refusal.why.reason(),
    }
}

fn policy(config: PolicyConfig) -> Policy {
    Policy::from_config("p", &config, &["example.com".to_string()])
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn domain_comes_from_hd_only() {
    let p = Policy::domain_only("d", &["Example.com".into(), "corp.example.org".into()]);
    let cases = [
        (
            principal("a@example.com", Some("example.com"), true),
            "allowed",
        ),
        (
            principal("a@example.com", Some("EXAMPLE.COM"), true),
            "allowed",
        ),
        (
            principal("a@other.com", Some("corp.example.org"), true),
            "allowed",
        ),
        // The email suffix looks right, but a consumer account has no hd.
        (principal("a@example.com", None, true), "no_hosted_domain"),
        (
            principal("a@example.com", Some("evil.com"), true),
            "domain_not_allowed",
        ),
        (
            principal("a@example.com", Some("sub.example.com"), true),
            "domain_not_allowed",
        ),
        (
            principal("a@example.com", Some("example.com"), false),
            "email_not_verified",
        ),
    ];
    for (p_, expected) in cases {
        assert_eq!(reason(&run(&p, &p_, GET, &[]).0), expected, "{p_:?}");
    }
}

#[test]
fn any_stops_at_the_first_matching_group() {
    let p = policy(PolicyConfig {
        groups: strings(&["a@example.com", "b@example.com", "c@example.com"]),
        ..Default::default()
    });
    let (outcome, asked) = run(&p, &user("u@example.com"), GET, &["b@example.com"]);
    let grant = outcome.expect("admitted by b");
    assert_eq!(grant.group.as_deref(), Some("b@example.com"));
    assert_eq!(grant.rule.as_ref(), "policy");
    assert_eq!(asked, ["a@example.com", "b@example.com"]);

    let (outcome, asked) = run(&p, &user("u@example.com"), GET, &[]);
    assert_eq!(reason(&outcome), "not_in_groups");
    assert_eq!(asked.len(), 3);
}

#[test]
fn all_needs_every_group_and_names_the_missing_one() {
    let p = policy(PolicyConfig {
        groups: strings(&["a@example.com", "b@example.com"]),
        require: GroupMode::All,
        ..Default::default()
    });
    let both = ["a@example.com", "b@example.com"];
    assert!(run(&p, &user("u@example.com"), GET, &both).0.is_ok());
    let (outcome, asked) = run(&p, &user("u@example.com"), GET, &["a@example.com"]);
    let refusal = outcome.expect_err("b is missing");
    assert_eq!(refusal.why, Forbidden::NotInGroups);
    assert_eq!(refusal.group.as_deref(), Some("b@example.com"));
    assert_eq!(asked, both);
    // A missing first group decides without asking about the second.
    let (_, asked) = run(&p, &user("u@example.com"), GET, &["b@example.com"]);
    assert_eq!(asked, ["a@example.com"]);
}

#[test]
fn users_are_compared_case_insensitively_and_deny_wins() {
    let p = policy(PolicyConfig {
        groups: strings(&["Staff@Example.com"]),
        allow_users: strings(&["Contractor@Example.com"]),
        deny_users: strings(&["MALLORY@example.com"]),
        ..Default::default()
    });
    // Allowed by name: no group lookup at all.
    let (outcome, asked) = run(&p, &user("contractor@EXAMPLE.com"), GET, &[]);
    assert!(outcome.is_ok());
    assert!(asked.is_empty());
    // Denied by name even though in the group.
    let (outcome, asked) = run(
        &p,
        &user("Mallory@Example.COM"),
        GET,
        &["staff@example.com"],
    );
    assert_eq!(reason(&outcome), "user_denied");
    assert!(asked.is_empty());
    // Group names are folded too.
    let (outcome, asked) = run(&p, &user("u@example.com"), GET, &["staff@example.com"]);
    assert!(outcome.is_ok());
    assert_eq!(asked, ["staff@example.com"]);
}

#[test]
fn allow_list_without_groups_admits_only_the_named_users() {
    let p = policy(PolicyConfig {
        allow_users: strings(&["a@example.com"]),
        ..Default::default()
    });
    assert!(run(&p, &user("a@example.com"), GET, &[]).0.is_ok());
    assert_eq!(
        reason(&run(&p, &user("b@example.com"), GET, &[]).0),
        "not_in_groups"
    );
}

#[test]
fn the_domain_is_required_even_for_allowed_users() {
    let p = policy(PolicyConfig {
        allow_users: strings(&["a@example.com"]),
        ..Default::default()
    });
    let consumer = principal("a@example.com", None, true);
    assert_eq!(reason(&run(&p, &consumer, GET, &[]).0), "no_hosted_domain");
}

fn grafana() -> Policy {
    policy(PolicyConfig {
        groups: strings(&["platform@example.com"]),
        rules: vec![
            RuleConfig {
                name: Some("destructive".into()),
                methods: strings(&["tools/call"]),
                tools: strings(&["delete_*"]),
                groups: strings(&["sre@example.com"]),
                ..Default::default()
            },
            RuleConfig {
                methods: strings(&["tools/call"]),
                tools: strings(&["drop_*", "truncate_?"]),
                deny: true,
                ..Default::default()
            },
        ],
        ..Default::default()
    })
}

#[test]
fn tool_rules_narrow_the_policy() {
    let p = grafana();
    let platform = ["platform@example.com"];
    let sre = ["platform@example.com", "sre@example.com"];
    let u = user("u@example.com");
    let cases: [(Request, &[&str], &str); 10] = [
        (call("list_dashboards"), &platform, "allowed"),
        (call("delete_dashboard"), &platform, "not_in_groups"),
        (call("delete_dashboard"), &sre, "allowed"),
        (call("drop_table"), &sre, "rule_denied"),
        (call("truncate_x"), &sre, "rule_denied"),
        (call("truncate_xy"), &sre, "allowed"),
        (method("tools/list"), &platform, "allowed"),
        (GET, &platform, "allowed"),
        // The policy's own requirement comes first: an SRE outside platform is refused.
        (
            call("delete_dashboard"),
            &["sre@example.com"],
            "not_in_groups",
        ),
        (call("list_dashboards"), &[], "not_in_groups"),
    ];
    for (request, groups, expected) in cases {
        let (outcome, _) = run(&p, &u, request, groups);
        assert_eq!(reason(&outcome), expected, "{request:?} with {groups:?}");
    }
    let (outcome, _) = run(&p, &u, call("delete_dashboard"), &platform);
    let refusal = outcome.expect_err("not an SRE");
    assert_eq!(refusal.rule.as_ref(), "destructive");
    let (outcome, _) = run(&p, &u, call("drop_table"), &sre);
    assert_eq!(outcome.expect_err("denied").rule.as_ref(), "rules[1]");
    let (outcome, _) = run(&p, &u, call("delete_dashboard"), &sre);
    let grant = outcome.expect("an SRE");
    assert_eq!(
        (grant.rule.as_ref(), grant.group.as_deref()),
        ("destructive", Some("sre@example.com"))
    );
}

/// Prompts and resources are named by their own keys; a rule about one kind of name does not
/// touch the others.
#[test]
fn prompt_and_resource_rules_match_their_own_names() {
    let policy = policy(PolicyConfig {
        rules: vec![
            RuleConfig {
                name: Some("admin-prompts".into()),
                methods: strings(&["prompts/get"]),
                prompts: strings(&["admin_*"]),
                groups: strings(&["sre@example.com"]),
                ..Default::default()
            },
            RuleConfig {
                name: Some("secrets".into()),
                methods: strings(&["resources/read"]),
                resources: strings(&["file:///secrets/*"]),
                deny: true,
                ..Default::default()
            },
        ],
        ..Default::default()
    });
    let named = |method: &'static str, name: Option<&'static str>| Request {
        http_method: "POST",
        mcp: McpCall {
            method: Some(method),
            tool: name,
            ..McpCall::default()
        },
    };
    let ada = user("ada@example.com");
    let outcome = |request| run(&policy, &ada, request, &[]).0;
    assert_eq!(
        reason(&outcome(named("prompts/get", Some("admin_reset")))),
        "not_in_groups"
    );
    assert!(outcome(named("prompts/get", Some("summarize"))).is_ok());
    assert!(
        run(
            &policy,
            &ada,
            named("prompts/get", Some("admin_reset")),
            &["sre@example.com"]
        )
        .0
        .is_ok()
    );
    assert_eq!(
        reason(&outcome(named(
            "resources/read",
            Some("file:///secrets/key")
        ))),
        "rule_denied"
    );
    assert!(outcome(named("resources/read", Some("file:///docs/a"))).is_ok());
    // A tool of that name is not a prompt.
    assert!(outcome(named("tools/call", Some("admin_reset"))).is_ok());
    // A named call without its name: refused where a rule is about names.
    assert_eq!(
        reason(&outcome(named("resources/read", None))),
        "mcp_metadata_missing"
    );
}

#[test]
fn rules_fail_closed_without_mcp_metadata() {
    let p = grafana();
    let u = user("u@example.com");
    let platform = ["platform@example.com", "sre@example.com"];
    // A POST the MCP filter could not read: the rules cannot be applied, so refuse.
    let unparsed = Request {
        http_method: "POST",
        mcp: McpCall::default(),
    };
    assert_eq!(
        reason(&run(&p, &u, unparsed, &platform).0),
        "mcp_metadata_missing"
    );
    // A tools/call without a tool name, where a rule is about tools.
    let nameless = Request {
        http_method: "POST",
        mcp: McpCall {
            method: Some("tools/call"),
            tool: None,
            ..McpCall::default()
        },
    };
    assert_eq!(
        reason(&run(&p, &u, nameless, &platform).0),
        "mcp_metadata_missing"
    );
    // Without rules there is nothing to skip: the same POST is fine.
    let plain = Policy::domain_only("plain", &["example.com".into()]);
    assert!(run(&plain, &u, unparsed, &[]).0.is_ok());
}

fn config(extra: &str) -> Config {
    let text = format!(
        r#"
[google]
client_ids = ["c"]
[access]
domains = ["example.com"]
[resource]
url = "https://mcp.example.com/mcp"
{extra}
"#
    );
    Config::load(Some(&text), []).expect("valid config")
}

#[test]
fn selection_order() {
    let set = PolicySet::from_config(&config(
        r#"
[policies.grafana]
allow_users = ["ada@example.com"]
[policies.admin]
allow_users = ["root@example.com"]
[[routes]]
prefix = "/grafana"
policy = "grafana"
[[routes]]
prefix = "/grafana/admin"
policy = "admin"
"#,
    ));
    let name = |named: Option<&str>, path: &str| {
        set.select(named, path)
            .map(|p| p.name.to_string())
            .map_err(|UnknownPolicy(n)| n.to_string())
    };
    // Envoy's context extension wins over the path.
    assert_eq!(name(Some("admin"), "/grafana/mcp"), Ok("admin".into()));
    // Longest prefix wins, whatever the order in the file; segments, not characters.
    assert_eq!(name(None, "/grafana/admin/mcp"), Ok("admin".into()));
    assert_eq!(name(None, "/grafana/mcp?x=1"), Ok("grafana".into()));
    assert_eq!(name(None, "/grafana"), Ok("grafana".into()));
    assert_eq!(name(None, "/grafanax/mcp"), Ok("default".into()));
    assert_eq!(name(None, "/mcp"), Ok("default".into()));
    // An unknown name from Envoy is an error (a 403 upstream), never a fallback.
    assert_eq!(name(Some("nope"), "/grafana/mcp"), Err("nope".into()));
    assert_eq!(name(Some(""), "/mcp"), Err("".into()));
}

#[test]
fn the_default_policy_can_be_configured() {
    assert_eq!(
        PolicySet::from_config(&config("")).default_name(),
        "default"
    );
    let text = r#"
[google]
client_ids = ["c"]
[access]
domains = ["example.com"]
default_policy = "staff"
[resource]
url = "https://mcp.example.com/mcp"
[policies.staff]
allow_users = ["staff@example.com"]
"#;
    let set = PolicySet::from_config(&Config::load(Some(text), []).expect("valid"));
    assert_eq!(
        set.select(None, "/mcp").map(|p| p.name.to_string()),
        Ok("staff".into())
    );
}

proptest::proptest! {
    /// Whatever the request, a decision ends within as many steps as there are groups, never
    /// asks twice for one group, and never admits a user outside the domain.
    #[test]
    fn decisions_are_total_and_bounded(
        hd in proptest::option::of(proptest::sample::select(vec!["example.com", "evil.com"])),
        verified: bool,
        member_of in proptest::collection::vec(proptest::sample::select(vec!["platform@example.com", "sre@example.com"]), 0..3),
        mcp_method in proptest::option::of(proptest::sample::select(vec!["tools/call", "tools/list", "initialize"])),
        tool in proptest::option::of("[a-z_]{0,12}"),
        post: bool,
    ) {
        let p = grafana();
        let principal = principal("u@example.com", hd, verified);
        let request = Request {
            http_method: if post { "POST" } else { "GET" },
            mcp: McpCall { method: mcp_method, tool: tool.as_deref(), ..McpCall::default() },
        };
        let (outcome, asked) = run(&p, &principal, request, &member_of);
        proptest::prop_assert!(asked.len() <= 2);
        if outcome.is_ok() {
            proptest::prop_assert!(verified && hd == Some("example.com"));
            proptest::prop_assert!(member_of.contains(&"platform@example.com"));
        }
    }
}

/// Organizational units: the account must be active in one of them (asked one at a time, in
/// order, stopping at the first yes), before and besides the groups; an allow list does not
/// get around them.
#[test]
fn org_units_admit_active_accounts_of_any_listed_unit() {
    let p = policy(PolicyConfig {
        org_units: strings(&["/Engineering", "/Sales"]),
        groups: strings(&["team@example.com"]),
        allow_users: strings(&["vip@example.com"]),
        ..Default::default()
    });
    let (eng, sales) = ("orgunit:/engineering", "orgunit:/sales");
    let (outcome, asked) = run(&p, &user("a@example.com"), GET, &[eng, "team@example.com"]);
    assert_eq!(reason(&outcome), "allowed");
    assert_eq!(asked, [eng, "team@example.com"]);
    let (outcome, asked) = run(
        &p,
        &user("a@example.com"),
        GET,
        &[sales, "team@example.com"],
    );
    assert_eq!(reason(&outcome), "allowed");
    assert_eq!(asked, [eng, sales, "team@example.com"]);
    // In a unit but not in the group; in the group but in no unit (or suspended, archived).
    let (outcome, _) = run(&p, &user("a@example.com"), GET, &[eng]);
    assert_eq!(reason(&outcome), "not_in_groups");
    let (outcome, asked) = run(&p, &user("a@example.com"), GET, &["team@example.com"]);
    assert_eq!(reason(&outcome), "not_in_org_unit");
    assert_eq!(asked, [eng, sales]);
    let (outcome, _) = run(&p, &user("vip@example.com"), GET, &[]);
    assert_eq!(reason(&outcome), "not_in_org_unit");
    let (outcome, _) = run(&p, &user("vip@example.com"), GET, &[sales]);
    assert_eq!(reason(&outcome), "allowed");
}
