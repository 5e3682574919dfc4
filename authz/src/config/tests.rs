use std::time::Duration;

use super::*;
use crate::resource::Resources;

const MINIMAL: &str = r#"
[google]
client_ids = ["a.apps.googleusercontent.com"]
[access]
domains = ["example.com"]
[resource]
url = "https://mcp.example.com/mcp"
"#;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn load_err(file: Option<&str>, pairs: &[(&str, &str)]) -> String {
    Config::load(file, env(pairs)).unwrap_err().to_string()
}

#[test]
fn the_admin_api_may_listen_on_ipv6_loopback() {
    let config =
        Config::load(Some(MINIMAL), env(&[("AUTHZ_LISTEN__ADMIN", "[::1]:9193")])).unwrap();
    assert!(config.listen.admin.ip().is_loopback());
}

#[test]
fn minimal_file_gets_documented_defaults() {
    let config = Config::load(Some(MINIMAL), env(&[])).unwrap();
    assert_eq!(config.listen.grpc.to_string(), "127.0.0.1:9191");
    assert_eq!(config.listen.http.to_string(), "127.0.0.1:9192");
    assert_eq!(config.listen.admin.to_string(), "127.0.0.1:9193");
    assert_eq!(config.google.issuer, "https://accounts.google.com");
    assert_eq!(
        config.google.tokeninfo_url.as_str(),
        "https://oauth2.googleapis.com/tokeninfo"
    );
    assert_eq!(config.cache.allow_ttl, Duration::from_secs(300));
    assert_eq!(config.headers.email, "x-auth-request-email");
    assert_eq!(
        config.envoy.outage_response,
        OutageResponse::GrpcUnavailable
    );
    assert_eq!(
        config.accepted_issuers(),
        ["https://accounts.google.com", "accounts.google.com"]
    );
}

#[test]
fn environment_overrides_file_and_accepts_comma_lists() {
    let config = Config::load(
        Some(MINIMAL),
        env(&[
            ("AUTHZ_GOOGLE__CLIENT_IDS", "x.apps, y.apps"),
            ("AUTHZ_CACHE__MAX_ENTRIES", "42"),
            ("AUTHZ_CACHE__ALLOW_TTL", "90s"),
            ("AUTHZ_LISTEN__GRPC", "0.0.0.0:7000"),
            ("AUTHZ_ACCESS__DOMAINS", r#"["a.com","b.com"]"#),
            ("AUTHZ_CONFIG", "/ignored/path.toml"),
            ("PATH", "/usr/bin"),
        ]),
    )
    .unwrap();
    assert_eq!(config.google.client_ids, ["x.apps", "y.apps"]);
    assert_eq!(config.cache.max_entries, 42);
    assert_eq!(config.cache.allow_ttl, Duration::from_secs(90));
    assert_eq!(config.listen.grpc.to_string(), "0.0.0.0:7000");
    assert_eq!(config.access.domains, ["a.com", "b.com"]);
}

#[test]
fn config_can_come_from_environment_alone() {
    let config = Config::load(
        None,
        env(&[
            ("AUTHZ_GOOGLE__CLIENT_IDS", "x.apps"),
            ("AUTHZ_ACCESS__DOMAINS", "example.com"),
            ("AUTHZ_RESOURCE__URL", "https://mcp.example.com/mcp"),
        ]),
    )
    .unwrap();
    assert_eq!(config.access.domains, ["example.com"]);
}

/// (file, environment, expected start of the error)
type ErrorCase<'a> = (Option<&'a str>, &'a [(&'a str, &'a str)], &'a str);

#[test]
fn errors_name_the_key() {
    let cases: &[ErrorCase] = &[
        (
            Some(MINIMAL),
            &[("AUTHZ_GOOGLE__CLIENT_IDS", "")],
            "config: google.client_ids:",
        ),
        (
            Some(MINIMAL),
            &[("AUTHZ_ACCESS__DOMAINS", "bad domain")],
            "config: access.domains:",
        ),
        (
            Some(MINIMAL),
            &[("AUTHZ_CACHE__ALLOW_TTL", "soon")],
            "config: cache.allow_ttl:",
        ),
        (
            Some(MINIMAL),
            &[("AUTHZ_LISTEN__GRPC", "nowhere")],
            "config: listen.grpc:",
        ),
        (
            Some(MINIMAL),
            &[("AUTHZ_LISTEN__ADMIN", "0.0.0.0:9193")],
            "config: listen.admin: must be a loopback address",
        ),
        (
            Some(MINIMAL),
            &[("AUTHZ_LISTEN__ADMIN", "10.0.0.5:9193")],
            "config: listen.admin: must be a loopback address",
        ),
        (
            Some(MINIMAL),
            &[("AUTHZ_CACHE__MAX_ENTRIES", "0")],
            "config: cache.max_entries:",
        ),
        (
            Some(MINIMAL),
            &[("AUTHZ_HEADERS__EMAIL", "Authorization")],
            "config: headers.email:",
        ),
        (
            Some(MINIMAL),
            &[("AUTHZ_HEADERS__EMAIL", "authorization")],
            "config: headers.email:",
        ),
        (
            Some(MINIMAL),
            &[("AUTHZ_RESOURCE__URL", "mcp")],
            "config: resource.url:",
        ),
        (
            Some(MINIMAL),
            &[("AUTHZ_GOOGLE__ISSUER", "ftp://x")],
            "config: google.issuer:",
        ),
        (
            Some(MINIMAL),
            &[("AUTHZ_ENVOY__OUTAGE_RESPONSE", "maybe")],
            "config: envoy.outage_response:",
        ),
        (
            Some(MINIMAL),
            &[("AUTHZ_LOG__LEVEL", "info,[[")],
            "config: log.level:",
        ),
        (Some(MINIMAL), &[("AUTHZ_GOOGLE__TYPO", "1")], "typo"),
        (
            Some(MINIMAL),
            &[("AUTHZ_GOOGLE__JWKS_REFETCH_INTERVAL", "100ms")],
            "config: google.jwks_refetch_interval:",
        ),
        (
            Some(MINIMAL),
            &[("AUTHZ_GOOGLE__JWKS_REFETCH_INTERVAL", "2h")],
            "config: google.jwks_refetch_interval:",
        ),
        (Some(MINIMAL), &[("AUTHZ_GOOGLE", "x")], "config: google:"),
        (Some("[access]\ndomains = [\"example.com\"]"), &[], "google"),
        (Some("this is not toml"), &[], "config: (file):"),
        // Found by fuzzing: a variable name with a newline made a two-line error.
        (Some(""), &[("AUTHZ_GOOGE\n", "x")], "config: googe\\n:"),
        (Some("[\"a\\nb\"]"), &[], "config: a\\nb:"),
    ];
    for (file, pairs, expected) in cases {
        let error = load_err(*file, pairs);
        assert!(
            error.contains(expected),
            "{pairs:?}: {error:?} lacks {expected:?}"
        );
        assert!(!error.contains('\n'), "error must be one line: {error:?}");
    }
}

#[test]
fn the_resource_shorthand_comes_first_and_several_resources_each_get_their_metadata() {
    let config = Config::load(Some(MINIMAL), env(&[])).unwrap();
    let resources = Resources::from_config(&config);
    assert_eq!(
        resources.default_resource().metadata_url,
        "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
    );
    let text = format!(
        "{MINIMAL}\n[policies.grafana]\n[[resources]]\nurl = \"https://mcp.example.com/grafana/mcp\"\n\
         name = \"Grafana\"\npolicy = \"grafana\"\n"
    );
    let config = Config::load(Some(&text), env(&[])).unwrap();
    let resources: Vec<_> = Resources::from_config(&config).iter().cloned().collect();
    assert_eq!(resources.len(), 2);
    assert_eq!(resources[0].url, "https://mcp.example.com/mcp");
    assert_eq!(resources[1].name, "Grafana");
    assert_eq!(resources[1].policy.as_deref(), Some("grafana"));
    // Only [[resources]]: the first is the default.
    let only_list = text.replace("[resource]\nurl = \"https://mcp.example.com/mcp\"\n", "");
    assert_ne!(only_list, text, "MINIMAL spells [resource] differently");
    let config = Config::load(Some(&only_list), env(&[])).unwrap();
    assert_eq!(
        Resources::from_config(&config).default_resource().url,
        "https://mcp.example.com/grafana/mcp"
    );
}

#[test]
fn resource_errors_name_the_key_and_its_variable() {
    let without = MINIMAL.replace("[resource]\nurl = \"https://mcp.example.com/mcp\"\n", "");
    let error = Config::load(Some(&without), env(&[]))
        .unwrap_err()
        .to_string();
    assert!(error.contains("resource.url"), "{error}");
    assert!(error.contains("AUTHZ_RESOURCE__URL"), "{error}");
    let unknown_policy = format!(
        "{MINIMAL}\n[[resources]]\nurl = \"https://mcp.example.com/sre/mcp\"\npolicy = \"nope\"\n"
    );
    let error = Config::load(Some(&unknown_policy), env(&[]))
        .unwrap_err()
        .to_string();
    assert!(error.contains("resources[0].policy"), "{error}");
    let twice = format!("{MINIMAL}\n[[resources]]\nurl = \"https://mcp.example.com/mcp/\"\n");
    let error = Config::load(Some(&twice), env(&[]))
        .unwrap_err()
        .to_string();
    assert!(error.contains("resources[0].url"), "{error}");
}

#[test]
fn policy_fingerprint_changes_with_policy_inputs() {
    let a = Config::load(Some(MINIMAL), env(&[])).unwrap();
    let b = Config::load(
        Some(MINIMAL),
        env(&[("AUTHZ_ACCESS__DOMAINS", "other.com")]),
    )
    .unwrap();
    let c = Config::load(Some(MINIMAL), env(&[("AUTHZ_CACHE__DENY_TTL", "1s")])).unwrap();
    assert_ne!(a.policy_fingerprint(), b.policy_fingerprint());
    assert_eq!(a.policy_fingerprint(), c.policy_fingerprint());
}

/// Every input a verdict depends on is in the fingerprint: leaving one out would let a verdict
/// cached under the old value answer under the new one.
#[test]
fn policy_fingerprint_covers_every_decision_input() {
    const GROUPS: &str = "[groups]\napi = \"cloud-identity\"\n[groups.credentials]\nkind = \"service-account-key\"\njson = \"{}\"\n";
    let base = format!("{MINIMAL}{GROUPS}");
    let fingerprint = |extra: &str, vars: &[(&str, &str)]| {
        Config::load(Some(&format!("{base}{extra}")), env(vars))
            .unwrap_or_else(|e| panic!("{extra} {vars:?}: {e}"))
            .policy_fingerprint()
    };
    let before = fingerprint("", &[]);
    type Variation<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);
    let variations: &[Variation] = &[
        ("domains", "", &[("AUTHZ_ACCESS__DOMAINS", "example.org")]),
        (
            "client ids",
            "",
            &[("AUTHZ_GOOGLE__CLIENT_IDS", "b.apps.googleusercontent.com")],
        ),
        (
            "issuer",
            "",
            &[("AUTHZ_GOOGLE__ISSUER", "https://issuer.example.com")],
        ),
        ("clock skew", "", &[("AUTHZ_GOOGLE__CLOCK_SKEW", "5s")]),
        (
            "tokeninfo",
            "",
            &[(
                "AUTHZ_GOOGLE__TOKENINFO_URL",
                "https://t.example.com/tokeninfo",
            )],
        ),
        (
            "resource",
            "",
            &[("AUTHZ_RESOURCE__URL", "https://other.example.com/mcp")],
        ),
        (
            "default policy",
            "[policies.team]\n",
            &[("AUTHZ_ACCESS__DEFAULT_POLICY", "team")],
        ),
        (
            "a policy",
            "[policies.team]\nallow_users = [\"a@example.com\"]\n",
            &[],
        ),
        (
            "a rule",
            "[policies.default]\n[[policies.default.rules]]\nmethods = [\"tools/call\"]\ndeny = true\n",
            &[],
        ),
        (
            "a route",
            "[policies.team]\n[[routes]]\nprefix = \"/team\"\npolicy = \"team\"\n",
            &[],
        ),
        (
            "groups api",
            "",
            &[
                ("AUTHZ_GROUPS__API", "directory"),
                ("AUTHZ_GROUPS__CREDENTIALS__SUBJECT", "admin@example.com"),
            ],
        ),
        ("groups ttl", "", &[("AUTHZ_GROUPS__POSITIVE_TTL", "1s")]),
    ];
    for (what, extra, vars) in variations {
        assert_ne!(
            fingerprint(extra, vars),
            before,
            "{what} is not in the fingerprint"
        );
    }
    // Settings that do not decide anything leave cached verdicts valid.
    assert_eq!(fingerprint("", &[("AUTHZ_LOG__FORMAT", "json")]), before);
}

#[test]
fn policy_references_are_checked_at_start_up() {
    let with = |extra: &str| load_err(Some(&format!("{MINIMAL}{extra}")), &[]);
    assert_eq!(
        with("[[routes]]\nprefix = \"/grafana\"\npolicy = \"grafana\"\n"),
        r#"config: routes[0].policy: no policy named "grafana" is defined"#
    );
    assert_eq!(
        with("[policies.grafana]\n[[routes]]\nprefix = \"grafana\"\npolicy = \"grafana\"\n"),
        r#"config: routes[0].prefix: "grafana" must be a path starting with '/'"#
    );
    assert!(
        with("[policies.team]\ngroups = [\"team@example.com\"]\n")
            .starts_with("config: policies.team.groups: group membership needs a [groups] section")
    );
    assert_eq!(
        with("[policies.team]\ngroups = [\"not an email\"]\n"),
        r#"config: policies.team.groups: "not an email" is not an email address"#
    );
    assert_eq!(
        with("[policies.team]\norg_units = [\"Engineering\"]\n"),
        r#"config: policies.team.org_units: "Engineering" is not an organizational unit path (they start with /)"#
    );
    assert!(
        with("[policies.team]\norg_units = [\"/Engineering\"]\n").starts_with(
            "config: policies.team.org_units: organizational units come from the Directory API"
        )
    );
    let cloud_identity = "[groups]\napi = \"cloud-identity\"\n[groups.credentials]\nkind = \"service-account-key\"\njson = \"{}\"\n";
    assert!(
        with(&format!(
            "{cloud_identity}[policies.team]\norg_units = [\"/Engineering\"]\n"
        ))
        .contains("api = \"directory\"")
    );
    // A policy with units makes the Directory token ask for the user-reading scope too.
    let directory = "[groups]\n[groups.credentials]\nkind = \"service-account-key\"\njson = \"{}\"\nsubject = \"admin@example.com\"\n";
    let load = |extra: &str| {
        Config::load(Some(&format!("{MINIMAL}{directory}{extra}")), env(&[])).unwrap()
    };
    assert!(!load("").groups.unwrap().read_accounts);
    assert!(
        load("[policies.team]\norg_units = [\"/\"]\n")
            .groups
            .unwrap()
            .read_accounts
    );
    assert_eq!(
        with("[policies.team]\nrequire = \"most\"\n")
            .split(':')
            .nth(1)
            .unwrap()
            .trim(),
        "policies.team.require"
    );
    let missing = with("[[policies.team.rules]]\ntools = [\"delete_*\"]\n");
    assert!(
        missing.starts_with("config: policies.team.rules[0].methods: required"),
        "{missing}"
    );
    assert_eq!(
        with(
            "[[policies.team.rules]]\nmethods = [\"tools/call\"]\ndeny = true\nallow_users = [\"a@example.com\"]\n"
        ),
        "config: policies.team.rules[0].deny: a deny rule cannot also list groups or allow_users"
    );
    assert_eq!(
        with("[policies.\"bad name\"]\n"),
        r#"config: policies.bad name: "bad name" must be 1-64 characters of letters, digits, '-', '_' or '.'"#
    );
    let default = load_err(
        Some(&MINIMAL.replace(
            "domains = [\"example.com\"]",
            "domains = [\"example.com\"]\ndefault_policy = \"staff\"",
        )),
        &[],
    );
    assert_eq!(
        default,
        r#"config: access.default_policy: no policy named "staff" is defined"#
    );
}

#[test]
fn policies_can_come_from_the_environment() {
    let config = Config::load(
        Some(MINIMAL),
        env(&[
            (
                "AUTHZ_POLICIES__DOCS__ALLOW_USERS",
                "a@example.com, b@example.com",
            ),
            (
                "AUTHZ_POLICIES__DOCS__RULES",
                r#"[{methods = ["tools/call"], tools = ["delete_*"], deny = true}]"#,
            ),
            ("AUTHZ_ROUTES", r#"[{prefix = "/docs", policy = "docs"}]"#),
        ]),
    )
    .unwrap();
    let docs = &config.policies["docs"];
    assert_eq!(docs.allow_users, ["a@example.com", "b@example.com"]);
    assert!(docs.rules[0].deny);
    assert_eq!(config.routes[0].policy, "docs");
    // The fingerprint covers policies: changing one changes every cache key.
    let other = Config::load(Some(MINIMAL), env(&[])).unwrap();
    assert_ne!(config.policy_fingerprint(), other.policy_fingerprint());
}

#[test]
fn client_metadata_is_on_by_default_with_documented_limits() {
    let config = Config::load(Some(MINIMAL), env(&[])).unwrap();
    let section = &config.client_metadata;
    assert!(section.enabled);
    assert_eq!(section.timeout, Duration::from_secs(5));
    assert_eq!(section.max_bytes, 16 * 1024);
    assert_eq!(section.max_entries, 1000);
    assert_eq!(section.min_ttl, Duration::from_secs(60));
    assert_eq!(section.max_ttl, Duration::from_secs(24 * 3600));
    assert_eq!(section.default_ttl, Duration::from_secs(600));
    assert_eq!(section.failure_ttl, Duration::from_secs(30));
    assert!(section.allow_hosts.is_empty());
    assert_eq!(section.ca_file, None);
}

#[test]
fn client_metadata_comes_from_the_file_and_the_environment() {
    let file = format!(
        "{MINIMAL}\n[client_metadata]\ntimeout = \"2s\"\nallow_hosts = [\"meta.corp.example\"]\nca_file = \"corp-ca.pem\"\n"
    );
    let config = Config::load(
        Some(&file),
        env(&[
            ("AUTHZ_CLIENT_METADATA__ENABLED", "false"),
            (
                "AUTHZ_CLIENT_METADATA__ALLOW_HOSTS",
                "meta.corp.example:8443, [fd00::1]:443",
            ),
        ]),
    )
    .unwrap();
    let section = &config.client_metadata;
    assert!(!section.enabled);
    assert_eq!(section.timeout, Duration::from_secs(2));
    assert_eq!(
        section.allow_hosts,
        ["meta.corp.example:8443", "[fd00::1]:443"]
    );
    assert_eq!(
        section.ca_file.as_deref(),
        Some(std::path::Path::new("corp-ca.pem"))
    );
}

#[test]
fn client_metadata_errors_name_the_key() {
    for (pairs, expected) in [
        (
            &[("AUTHZ_CLIENT_METADATA__TIMEOUT", "0s")][..],
            "config: client_metadata.timeout: must be greater than zero",
        ),
        (
            &[("AUTHZ_CLIENT_METADATA__TIMEOUT", "5m")][..],
            "config: client_metadata.timeout:",
        ),
        (
            &[("AUTHZ_CLIENT_METADATA__MAX_BYTES", "0")][..],
            "config: client_metadata.max_bytes:",
        ),
        (
            &[("AUTHZ_CLIENT_METADATA__MAX_BYTES", "10000000")][..],
            "config: client_metadata.max_bytes:",
        ),
        (
            &[("AUTHZ_CLIENT_METADATA__MAX_ENTRIES", "0")][..],
            "config: client_metadata.max_entries:",
        ),
        (
            &[
                ("AUTHZ_CLIENT_METADATA__MIN_TTL", "1h"),
                ("AUTHZ_CLIENT_METADATA__MAX_TTL", "1m"),
            ][..],
            "config: client_metadata.max_ttl: must not be shorter than min_ttl",
        ),
        (
            &[("AUTHZ_CLIENT_METADATA__FAILURE_TTL", "0s")][..],
            "config: client_metadata.failure_ttl:",
        ),
        (
            &[(
                "AUTHZ_CLIENT_METADATA__ALLOW_HOSTS",
                "https://meta.corp.example/",
            )][..],
            "config: client_metadata.allow_hosts: \"https://meta.corp.example/\" is not a host or host:port",
        ),
        (
            &[("AUTHZ_CLIENT_METADATA__ALLOW_HOSTS", "fd00::1")][..],
            "config: client_metadata.allow_hosts:",
        ),
        (
            &[("AUTHZ_CLIENT_METADATA__PROXY", "x")][..],
            "config: client_metadata.proxy: unknown field",
        ),
    ] {
        let error = load_err(Some(MINIMAL), pairs);
        assert!(error.starts_with(expected), "{pairs:?}: {error}");
    }
}

#[test]
fn the_store_section_has_defaults_and_reads_redis_settings() {
    let config = Config::load(Some(MINIMAL), env(&[])).unwrap();
    assert_eq!(config.store.backend, StoreBackend::Memory);
    assert_eq!(config.store.max_entries, 100_000);
    assert_eq!(config.store.revocation_poll, Duration::from_secs(1));
    assert!(config.store.redis.is_none());

    let file = format!(
        "{MINIMAL}\n[store]\nbackend = \"redis\"\nrevocation_poll = \"250ms\"\n\
         [store.redis]\nurl = \"rediss://redis.internal:6380/1\"\n"
    );
    let config = Config::load(
        Some(&file),
        env(&[("AUTHZ_STORE__REDIS__PASSWORD", "s3cret-from-env")]),
    )
    .unwrap();
    assert_eq!(config.store.backend, StoreBackend::Redis);
    assert_eq!(config.store.revocation_poll, Duration::from_millis(250));
    let redis = config.store.redis.as_ref().unwrap();
    assert_eq!(
        redis.url.expose().as_str(),
        "rediss://redis.internal:6380/1"
    );
    assert!(matches!(
        redis.password.as_ref().unwrap(),
        crate::config::SecretRef::Inline(password) if password.expose() == "s3cret-from-env"
    ));
    assert_eq!(redis.key_prefix, "authz:");
    assert_eq!(redis.timeout, Duration::from_millis(500));
    // Neither the password nor one inside the URL is ever printed.
    let with_url_password = Config::load(
        Some(&file.replace("rediss://", "rediss://:in-url-pw@")),
        env(&[]),
    )
    .unwrap();
    for shown in [format!("{config:?}"), format!("{with_url_password:?}")] {
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(!shown.contains("in-url-pw"), "{shown}");
        assert!(shown.contains("redis.internal:6380"), "{shown}");
    }
}

/// (file, environment, expected start of the error)
type StoreCase<'a> = (String, &'a [(&'a str, &'a str)], &'a str);

#[test]
fn store_errors_name_the_key_and_never_echo_secrets() {
    let redis = |section: &str| format!("{MINIMAL}\n[store]\nbackend = \"redis\"\n{section}");
    let cases: &[StoreCase] = &[
        (
            redis(""),
            &[],
            "config: store.redis: backend = \"redis\" needs a [store.redis] section",
        ),
        (
            format!("{MINIMAL}\n[store.redis]\nurl = \"redis://localhost\"\n"),
            &[],
            "config: store.backend: is \"memory\" but [store.redis] is set",
        ),
        (
            redis("[store.redis]\nurl = \"https://localhost\"\n"),
            &[],
            "config: store.redis.url: must be redis://",
        ),
        (
            redis("[store.redis]\nurl = \"rediss://localhost/#insecure\"\n"),
            &[],
            "config: store.redis.url: must not carry a fragment",
        ),
        (
            redis("[store.redis]\nurl = \"redis://:pw-one@localhost\"\n"),
            &[("AUTHZ_STORE__REDIS__PASSWORD", "pw-two")],
            "config: store.redis.password: the URL already carries a password",
        ),
        (
            redis("[store.redis]\nurl = \"redis://:pw-one@local host:x\"\n"),
            &[],
            "config: store.redis.url: not a URL",
        ),
        (
            redis("[store.redis]\nurl = \"redis://localhost\"\n"),
            &[("AUTHZ_STORE__REDIS__PASSWORD", "31337")],
            "config: store.redis.password: an inline secret must be a string",
        ),
        (
            redis("[store.redis]\nurl = \"redis://localhost\"\ntimeout = \"0s\"\n"),
            &[],
            "config: store.redis.timeout: must be greater than zero",
        ),
        (
            redis("[store.redis]\nurl = \"redis://localhost\"\nport = 1\n"),
            &[],
            "config: store.redis.port: unknown field `port`",
        ),
        (
            MINIMAL.to_string(),
            &[("AUTHZ_STORE__MAX_ENTRIES", "0")],
            "config: store.max_entries: must be greater than zero",
        ),
        (
            MINIMAL.to_string(),
            &[("AUTHZ_STORE__REVOCATION_POLL", "5m")],
            "config: store.revocation_poll: must be between 1ms and 60s",
        ),
        (
            MINIMAL.to_string(),
            &[("AUTHZ_STORE__BACKEND", "etcd")],
            "config: store.backend: unknown variant `etcd`",
        ),
    ];
    for (file, pairs, expected) in cases {
        let error = load_err(Some(file), pairs);
        assert!(
            error.starts_with(expected),
            "{pairs:?}: {error:?} lacks {expected:?}"
        );
        for secret in ["pw-one", "pw-two", "31337"] {
            assert!(!error.contains(secret), "{error:?} echoes a secret");
        }
    }
}

#[test]
fn runtime_worker_threads_default_to_one_per_core_and_zero_is_refused() {
    let config = Config::load(Some(MINIMAL), env(&[])).unwrap();
    assert_eq!(config.runtime.worker_threads, None);
    let config = Config::load(
        Some(MINIMAL),
        env(&[("AUTHZ_RUNTIME__WORKER_THREADS", "1")]),
    )
    .unwrap();
    assert_eq!(config.runtime.worker_threads, Some(1));
    assert_eq!(
        load_err(
            Some(&format!("{MINIMAL}[runtime]\nworker_threads = 0\n")),
            &[]
        ),
        "config: runtime.worker_threads: must be greater than zero"
    );
}

#[test]
fn a_missing_key_is_named_with_its_variable() {
    assert_eq!(
        load_err(None, &[]),
        "config: google.client_ids: required (in the file, or as AUTHZ_GOOGLE__CLIENT_IDS)"
    );
    let error = load_err(None, &[("AUTHZ_GOOGLE__CLIENT_IDS", "a")]);
    assert_eq!(
        error,
        "config: access.domains: required (in the file, or as AUTHZ_ACCESS__DOMAINS)"
    );
    let no_url = MINIMAL.replace("url = \"https://mcp.example.com/mcp\"\n", "");
    let error = load_err(Some(&no_url), &[]);
    assert_eq!(
        error,
        "config: resource.url: required (in the file, or as AUTHZ_RESOURCE__URL)"
    );
}

#[test]
fn a_variable_with_one_underscore_between_levels_is_pointed_at_the_right_name() {
    let error = load_err(Some(MINIMAL), &[("AUTHZ_GOOGLE_CLIENT_IDS", "x")]);
    assert!(
        error.contains("AUTHZ_GOOGLE__CLIENT_IDS sets google.client_ids"),
        "{error}"
    );
    let error = load_err(Some(MINIMAL), &[("AUTHZ_CLIENT_METADATA_ENABLED", "false")]);
    assert!(error.contains("AUTHZ_CLIENT_METADATA__ENABLED"), "{error}");
}

#[test]
fn the_admin_clis_variables_are_not_config_keys() {
    let config = Config::load(
        Some(MINIMAL),
        env(&[
            ("AUTHZ_ADMIN_TOKEN", "secret"),
            ("AUTHZ_ADMIN_TOKEN_FILE", "/run/token"),
            ("AUTHZ_CONFIG", "/etc/authz.toml"),
        ]),
    );
    assert!(config.is_ok(), "{:?}", config.err());
}

#[test]
fn oauth_redirect_schemes_and_metadata_hosts_are_read_and_bad_entries_name_the_key() {
    let base = &format!(
        "{MINIMAL}[oauth]\nissuer = \"https://mcp.example.com\"\n\
         google_client_id = \"a.apps.googleusercontent.com\"\ngoogle_client_secret = \"s\"\n"
    );
    let config = Config::load(Some(base), Vec::new()).unwrap();
    let oauth = config.oauth.unwrap();
    assert!(oauth.redirect_schemes.is_empty());
    assert!(oauth.client_id_metadata_hosts.is_empty());

    let text = format!(
        "{base}redirect_schemes = [\"cursor://anysphere.cursor-mcp\"]\n\
         client_id_metadata_hosts = [\"claude.ai\", \"*.example.com\"]\n"
    );
    let oauth = Config::load(Some(&text), Vec::new())
        .unwrap()
        .oauth
        .unwrap();
    assert_eq!(oauth.redirect_schemes.len(), 1);
    assert_eq!(oauth.client_id_metadata_hosts.len(), 2);
    // From the environment: a TOML array or a comma-separated list.
    let env = vec![
        (
            "AUTHZ_OAUTH__REDIRECT_SCHEMES".to_string(),
            "cursor://anysphere.cursor-mcp, claude://claude.ai".to_string(),
        ),
        (
            "AUTHZ_OAUTH__CLIENT_ID_METADATA_HOSTS".to_string(),
            r#"["vscode.dev"]"#.to_string(),
        ),
    ];
    let oauth = Config::load(Some(base), env).unwrap().oauth.unwrap();
    assert_eq!(oauth.redirect_schemes.len(), 2);
    assert_eq!(oauth.client_id_metadata_hosts.len(), 1);

    for (line, key) in [
        (
            r#"redirect_schemes = ["javascript://x"]"#,
            "oauth.redirect_schemes",
        ),
        (
            r#"redirect_schemes = ["https://claude.ai"]"#,
            "oauth.redirect_schemes",
        ),
        (
            r#"redirect_schemes = ["data://x"]"#,
            "oauth.redirect_schemes",
        ),
        (
            r#"redirect_schemes = ["file://x"]"#,
            "oauth.redirect_schemes",
        ),
        (
            r#"client_id_metadata_hosts = ["https://claude.ai"]"#,
            "oauth.client_id_metadata_hosts",
        ),
        (
            r#"client_id_metadata_hosts = ["*"]"#,
            "oauth.client_id_metadata_hosts",
        ),
    ] {
        let error = Config::load(Some(&format!("{base}{line}\n")), Vec::new()).unwrap_err();
        assert_eq!(error.key, key, "{line}: {error}");
        let entry = line.split('"').nth(1).unwrap();
        assert!(error.to_string().contains(entry), "{line}: {error}");
    }
}
