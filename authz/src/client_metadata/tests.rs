use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
    time::Duration,
};

use reqwest::header::{CACHE_CONTROL, HeaderMap, HeaderValue};
use url::Url;

use super::*;
use crate::{
    config::{AllowHost, ClientIdHost},
    metrics::Metrics,
};

const CLAUDE_CODE: &str = "https://claude.ai/oauth/claude-code-client-metadata";

fn v4(text: &str) -> IpAddr {
    IpAddr::V4(text.parse::<Ipv4Addr>().unwrap())
}

fn v6(text: &str) -> IpAddr {
    IpAddr::V6(text.parse::<Ipv6Addr>().unwrap())
}

#[test]
fn ipv4_addresses_are_classified() {
    for (address, public) in [
        ("8.8.8.8", true),
        ("1.1.1.1", true),
        ("93.184.216.34", true),
        ("100.63.255.255", true),
        ("100.128.0.0", true),
        ("172.15.255.255", true),
        ("172.32.0.0", true),
        ("192.0.1.1", true),
        ("198.17.255.255", true),
        ("198.20.0.0", true),
        ("223.255.255.255", true),
        ("0.0.0.0", false),
        ("0.1.2.3", false),
        ("10.0.0.1", false),
        ("10.255.255.255", false),
        ("100.64.0.1", false),
        ("100.127.255.255", false),
        ("127.0.0.1", false),
        ("127.255.255.254", false),
        ("169.254.169.254", false),
        ("169.254.0.1", false),
        ("172.16.0.1", false),
        ("172.31.255.255", false),
        ("192.0.0.8", false),
        ("192.0.2.1", false),
        ("192.88.99.1", false),
        ("192.168.1.1", false),
        ("198.18.0.1", false),
        ("198.19.255.255", false),
        ("198.51.100.7", false),
        ("203.0.113.9", false),
        ("224.0.0.1", false),
        ("239.255.255.250", false),
        ("240.0.0.1", false),
        ("255.255.255.255", false),
    ] {
        assert_eq!(is_public(v4(address)), public, "{address}");
    }
}

#[test]
fn ipv6_addresses_are_classified() {
    for (address, public) in [
        ("2606:4700:4700::1111", true),
        ("2a00:1450:4001:80b::200e", true),
        ("2001:4860:4860::8888", true),
        ("::", false),
        ("::1", false),
        ("fe80::1", false),
        ("febf::1", false),
        ("fec0::1", false),
        ("fc00::1", false),
        ("fd12:3456:789a::1", false),
        ("ff02::1", false),
        ("100::1", false),
        ("2001:db8::1", false),
        ("2001::1", false),
        ("2001:2::1", false),
        ("2002:7f00:1::1", false),
        ("3fff::1", false),
        ("5f00::1", false),
        ("64:ff9b:1::1", false),
        // Mapped, compatible and NAT64 forms take the embedded IPv4 address's class.
        ("::ffff:127.0.0.1", false),
        ("::ffff:169.254.169.254", false),
        ("::ffff:10.1.2.3", false),
        ("::ffff:8.8.8.8", true),
        ("::127.0.0.1", false),
        ("::8.8.8.8", false),
        ("64:ff9b::127.0.0.1", false),
        ("64:ff9b::a9fe:a9fe", false),
        ("64:ff9b::192.168.0.1", false),
        ("64:ff9b::8.8.8.8", true),
    ] {
        assert_eq!(is_public(v6(address)), public, "{address}");
    }
}

#[test]
fn metadata_urls_are_recognised() {
    for (client_id, expected) in [
        (CLAUDE_CODE, Ok(())),
        ("https://example.com/client.json?v=2", Ok(())),
        ("https://example.com:8443/c", Ok(())),
        ("https://example.com/a/b/", Ok(())),
        (
            "https://example.com/c#frag",
            Err(ClientMetadataError::NotAUrl),
        ),
        ("https://example.com/c#", Err(ClientMetadataError::NotAUrl)),
        ("https://example.com", Err(ClientMetadataError::NotAUrl)),
        ("https://example.com/", Err(ClientMetadataError::NotAUrl)),
        ("https://example.com?x=1", Err(ClientMetadataError::NotAUrl)),
        (
            "https://user@example.com/c",
            Err(ClientMetadataError::NotAUrl),
        ),
        (
            "https://user:pw@example.com/c",
            Err(ClientMetadataError::NotAUrl),
        ),
        (
            "https://example.com/a/../c",
            Err(ClientMetadataError::NotAUrl),
        ),
        (
            "https://example.com/a/./c",
            Err(ClientMetadataError::NotAUrl),
        ),
        (
            "https://example.com/a/%2e%2E/c",
            Err(ClientMetadataError::NotAUrl),
        ),
        (
            "https://example.com/a/.%2e",
            Err(ClientMetadataError::NotAUrl),
        ),
        (
            "https://example.com/a\\c",
            Err(ClientMetadataError::NotAUrl),
        ),
        ("https://example.com/a c", Err(ClientMetadataError::NotAUrl)),
        ("https://exämple.com/c", Err(ClientMetadataError::NotAUrl)),
        ("https:///c", Err(ClientMetadataError::NotAUrl)),
        ("client-123", Err(ClientMetadataError::NotAUrl)),
        ("", Err(ClientMetadataError::NotAUrl)),
        ("http://example.com/c", Err(ClientMetadataError::NotHttps)),
        ("ftp://example.com/c", Err(ClientMetadataError::NotHttps)),
    ] {
        assert_eq!(
            parse_metadata_url(client_id).map(|_| ()),
            expected,
            "{client_id}"
        );
        assert_eq!(is_metadata_url(client_id), expected.is_ok(), "{client_id}");
    }
    let long = format!("https://example.com/{}", "a".repeat(MAX_CLIENT_ID_LEN));
    assert!(!is_metadata_url(&long));
}

/// Every IPv4 notation the URL parser accepts becomes the same address, so the host check
/// sees the address, not the spelling.
#[test]
fn the_url_parser_normalises_ip_hosts() {
    for (url, host) in [
        ("https://2130706433/x", "127.0.0.1"),
        ("https://0x7f.1/x", "127.0.0.1"),
        ("https://0x7f000001/x", "127.0.0.1"),
        ("https://0177.0.0.1/x", "127.0.0.1"),
        ("https://127.1/x", "127.0.0.1"),
        ("https://127.0.0.1./x", "127.0.0.1"),
        ("https://0251.0376.0251.0376/x", "169.254.169.254"),
        ("https://[::ffff:7f00:1]/x", "[::ffff:7f00:1]"),
        ("https://[0:0:0:0:0:ffff:127.0.0.1]/x", "[::ffff:7f00:1]"),
    ] {
        let parsed = Url::parse(url).unwrap();
        assert!(
            !matches!(parsed.host(), Some(url::Host::Domain(_))),
            "{url}"
        );
        assert_eq!(parsed.host_str(), Some(host), "{url}");
    }
}

fn settings() -> ClientMetadataConfig {
    ClientMetadataConfig::default()
}

fn fetcher(settings: &ClientMetadataConfig) -> ClientMetadataFetcher {
    ClientMetadataFetcher::new(settings, Arc::new(Metrics::new())).unwrap()
}

/// Literal IP hosts are refused before anything is sent (no resolver sees them); this needs no
/// network at all.
#[tokio::test]
async fn literal_non_public_hosts_are_refused_without_a_request() {
    let fetcher = fetcher(&settings());
    for client_id in [
        "https://127.0.0.1/x",
        "https://169.254.169.254/latest/meta-data",
        "https://2130706433/x",
        "https://0x7f.1/x",
        "https://10.0.0.1:8443/x",
        "https://[::1]/x",
        "https://[::ffff:127.0.0.1]/x",
        "https://[64:ff9b::a9fe:a9fe]/x",
        "https://[fd00::1]/x",
        "https://0.0.0.0/x",
    ] {
        assert_eq!(
            fetcher.fetch(client_id).await,
            Err(ClientMetadataError::ForbiddenAddress),
            "{client_id}"
        );
    }
    assert_eq!(
        fetcher.fetch("http://127.0.0.1/x").await,
        Err(ClientMetadataError::NotHttps)
    );
    assert_eq!(
        fetcher.fetch("https://127.0.0.1/").await,
        Err(ClientMetadataError::NotAUrl)
    );
}

#[tokio::test]
async fn disabled_refuses_everything() {
    let fetcher = fetcher(&ClientMetadataConfig {
        enabled: false,
        ..settings()
    });
    assert_eq!(
        fetcher.fetch(CLAUDE_CODE).await,
        Err(ClientMetadataError::Disabled)
    );
}

#[test]
fn allow_host_entries_parse_and_match() {
    for (entry, url, matches) in [
        ("meta.corp.example", "https://meta.corp.example/c", true),
        (
            "meta.corp.example",
            "https://meta.corp.example:8443/c",
            true,
        ),
        ("META.corp.example", "https://meta.corp.example/c", true),
        ("meta.corp.example", "https://other.corp.example/c", false),
        (
            "meta.corp.example:8443",
            "https://meta.corp.example:8443/c",
            true,
        ),
        (
            "meta.corp.example:8443",
            "https://meta.corp.example/c",
            false,
        ),
        ("meta.corp.example:443", "https://meta.corp.example/c", true),
        ("127.0.0.1:9000", "https://127.0.0.1:9000/c", true),
        ("127.0.0.1:9000", "https://2130706433:9000/c", true),
        ("0x7f.1", "https://127.0.0.1:1234/c", true),
        ("127.0.0.1:9000", "https://127.0.0.1:9001/c", false),
        ("[::1]:9000", "https://[::1]:9000/c", true),
        ("[::1]", "https://[::1]:9000/c", true),
    ] {
        let allow = AllowHost::parse(entry).unwrap();
        let parsed = Url::parse(url).unwrap();
        let port = parsed.port_or_known_default().unwrap();
        assert_eq!(
            allow.matches(&parsed.host().unwrap(), port),
            matches,
            "{entry} vs {url}"
        );
    }
    for entry in [
        "",
        "::1",
        "fd00::1",
        "fd00::1:443",
        "host:",
        "host:0",
        "host:99999",
        "host:port",
        "https://host",
        "host/path",
        "user@host",
        "a b",
    ] {
        assert!(AllowHost::parse(entry).is_err(), "{entry:?}");
    }
}

fn doc(fields: serde_json::Value) -> Vec<u8> {
    let mut document = serde_json::json!({
        "client_id": CLAUDE_CODE,
        "client_name": "Claude Code",
        "redirect_uris": ["http://localhost/callback", "http://127.0.0.1/callback"],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
    });
    for (key, value) in fields.as_object().unwrap() {
        document[key] = value.clone();
    }
    serde_json::to_vec(&document).unwrap()
}

#[test]
fn a_claude_code_document_is_accepted() {
    let metadata = document::parse(CLAUDE_CODE, &doc(serde_json::json!({}))).unwrap();
    assert_eq!(
        metadata,
        ClientMetadata {
            client_id: CLAUDE_CODE.into(),
            client_name: Some("Claude Code".into()),
            client_uri: None,
            logo_uri: None,
            redirect_uris: vec![
                "http://localhost/callback".into(),
                "http://127.0.0.1/callback".into()
            ],
            token_endpoint_auth_method: "none".into(),
            grant_types: vec!["authorization_code".into(), "refresh_token".into()],
            response_types: vec!["code".into()],
            scope: None,
        }
    );
}

#[test]
fn optional_fields_get_their_defaults_and_bad_links_are_dropped() {
    let body = serde_json::json!({
        "client_id": CLAUDE_CODE,
        "redirect_uris": ["https://claude.ai/api/mcp/auth_callback"],
        "client_uri": "javascript:alert(1)",
        "logo_uri": "https://claude.ai/logo.png",
        "scope": "mcp",
        "jwks_uri": "https://claude.ai/jwks",
    });
    let metadata = document::parse(CLAUDE_CODE, body.to_string().as_bytes()).unwrap();
    assert_eq!(metadata.token_endpoint_auth_method, "none");
    assert_eq!(metadata.grant_types, ["authorization_code"]);
    assert_eq!(metadata.response_types, ["code"]);
    assert_eq!(metadata.client_uri, None);
    assert_eq!(
        metadata.logo_uri.as_deref(),
        Some("https://claude.ai/logo.png")
    );
    assert_eq!(metadata.scope.as_deref(), Some("mcp"));
}

#[test]
fn documents_breaking_a_rule_are_refused() {
    use serde_json::json;
    let invalid = |body: Vec<u8>| match document::parse(CLAUDE_CODE, &body) {
        Err(ClientMetadataError::Invalid(why)) => why,
        other => panic!("expected Invalid, got {other:?}"),
    };
    for (fields, why) in [
        (
            json!({"client_id": format!("{CLAUDE_CODE}/")}),
            "client_id does not match its URL",
        ),
        (
            json!({"client_id": "https://CLAUDE.ai/oauth/claude-code-client-metadata"}),
            "client_id does not match its URL",
        ),
        (json!({"client_id": null}), "client_id is missing"),
        (
            json!({"redirect_uris": []}),
            "redirect_uris is missing or empty",
        ),
        (
            json!({"redirect_uris": ["http://example.com/cb"]}),
            "a redirect URI must be https, or http to localhost, 127.0.0.1 or [::1]",
        ),
        (
            json!({"redirect_uris": ["http://localhost.evil.example/cb"]}),
            "a redirect URI must be https, or http to localhost, 127.0.0.1 or [::1]",
        ),
        (
            json!({"redirect_uris": ["http://10.0.0.1/cb"]}),
            "a redirect URI must be https, or http to localhost, 127.0.0.1 or [::1]",
        ),
        (
            json!({"redirect_uris": ["com.example.app:/cb"]}),
            "a redirect URI must be https, http to localhost, 127.0.0.1 or [::1], \
             or scheme://host for a private-use scheme",
        ),
        (
            json!({"redirect_uris": ["javascript:alert(1)"]}),
            "a redirect URI must be https, http to localhost, 127.0.0.1 or [::1], \
             or scheme://host for a private-use scheme",
        ),
        (
            json!({"redirect_uris": ["https://claude.ai/cb#x"]}),
            "a redirect URI has a fragment",
        ),
        (
            json!({"redirect_uris": ["https://user@claude.ai/cb"]}),
            "a redirect URI has a user name or password",
        ),
        (
            json!({"redirect_uris": ["not a url"]}),
            "a redirect URI is not a URL",
        ),
        (
            json!({"token_endpoint_auth_method": "private_key_jwt"}),
            "token_endpoint_auth_method must be \"none\"",
        ),
        (
            json!({"token_endpoint_auth_method": "client_secret_basic"}),
            "token_endpoint_auth_method must be \"none\"",
        ),
        (
            json!({"response_types": ["token"]}),
            "response_types does not include \"code\"",
        ),
        (
            json!({"grant_types": ["client_credentials"]}),
            "grant_types does not include \"authorization_code\"",
        ),
        (
            json!({"client_secret": "s3cret"}),
            "a metadata document must not carry a client_secret",
        ),
        (
            json!({"redirect_uris": "http://localhost/callback"}),
            "the document is not a client metadata object",
        ),
    ] {
        assert_eq!(invalid(doc(fields.clone())), why, "{fields}");
    }
    assert_eq!(
        invalid(b"[]".to_vec()),
        "the document is not a client metadata object"
    );
    for body in [&b"{"[..], b"<html></html>", b"", b"{\"client_id\": }"] {
        assert_eq!(
            document::parse(CLAUDE_CODE, body),
            Err(ClientMetadataError::NotJson),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn loopback_redirect_uris_are_accepted_with_or_without_port() {
    for uri in [
        "http://localhost/callback",
        "http://localhost:33418/",
        "http://127.0.0.1",
        "http://127.0.0.1:6274/oauth/callback",
        "http://[::1]/cb",
        "http://[::1]:8080/cb",
        "https://vscode.dev/redirect",
    ] {
        let body = doc(serde_json::json!({ "redirect_uris": [uri] }));
        assert!(document::parse(CLAUDE_CODE, &body).is_ok(), "{uri}");
    }
}

#[test]
fn cache_control_is_read() {
    for (values, expected) in [
        (&[][..], fetch::Caching::Unspecified),
        (
            &["public, max-age=3600"][..],
            fetch::Caching::MaxAge(Duration::from_secs(3600)),
        ),
        (&["max-age=0"][..], fetch::Caching::MaxAge(Duration::ZERO)),
        (
            &["Max-Age=\"60\""][..],
            fetch::Caching::MaxAge(Duration::from_secs(60)),
        ),
        (&["max-age=soon"][..], fetch::Caching::Unspecified),
        (&["no-store"][..], fetch::Caching::Forbidden),
        (&["max-age=600, no-cache"][..], fetch::Caching::Forbidden),
        (&["max-age=600", "No-Store"][..], fetch::Caching::Forbidden),
        (
            &["private", "max-age=5"][..],
            fetch::Caching::MaxAge(Duration::from_secs(5)),
        ),
    ] {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(CACHE_CONTROL, HeaderValue::from_static(value));
        }
        assert_eq!(fetch::caching(&headers), expected, "{values:?}");
    }
}

#[test]
fn lifetimes_are_clamped() {
    let lifetimes = Lifetimes {
        min: Duration::from_secs(60),
        max: Duration::from_secs(86_400),
        default: Duration::from_secs(600),
        failure: Duration::from_secs(30),
    };
    let secs = |s| Duration::from_secs(s);
    for (caching, ttl) in [
        (fetch::Caching::Unspecified, secs(600)),
        (fetch::Caching::MaxAge(secs(0)), secs(60)),
        (fetch::Caching::MaxAge(secs(5)), secs(60)),
        (fetch::Caching::MaxAge(secs(3600)), secs(3600)),
        (fetch::Caching::MaxAge(secs(31_536_000)), secs(86_400)),
        (fetch::Caching::Forbidden, Duration::ZERO),
    ] {
        assert_eq!(lifetimes.of(caching), ttl, "{caching:?}");
    }
}

#[test]
fn every_error_has_its_own_reason() {
    let all = [
        ClientMetadataError::Disabled,
        ClientMetadataError::NotAUrl,
        ClientMetadataError::NotHttps,
        ClientMetadataError::ForbiddenAddress,
        ClientMetadataError::Resolve,
        ClientMetadataError::Unreachable,
        ClientMetadataError::Timeout,
        ClientMetadataError::TooLarge,
        ClientMetadataError::HttpStatus(404),
        ClientMetadataError::Redirected,
        ClientMetadataError::NotJson,
        ClientMetadataError::Invalid("client_id does not match its URL"),
    ];
    let reasons: std::collections::HashSet<_> = all.iter().map(|e| e.reason()).collect();
    assert_eq!(reasons.len(), all.len());
    assert_eq!(
        ClientMetadataError::HttpStatus(404).to_string(),
        "the client metadata URL answered HTTP 404"
    );
}

#[test]
fn client_id_host_entries_parse_and_match() {
    let url = |text: &str| Url::parse(text).unwrap();
    let claude = ClientIdHost::parse("Claude.AI").unwrap();
    let below = ClientIdHost::parse("*.example.com").unwrap();
    for (entry, text, expected) in [
        (
            &claude,
            "https://claude.ai/oauth/claude-code-client-metadata",
            true,
        ),
        (&claude, "https://CLAUDE.ai/x", true),
        (&claude, "https://claude.ai:8443/x", true),
        (&claude, "https://www.claude.ai/x", false),
        (&claude, "https://claude.ai.evil.example/x", false),
        (&claude, "https://evilclaude.ai/x", false),
        (&below, "https://a.example.com/client.json", true),
        (&below, "https://a.b.example.com/client.json", true),
        (&below, "https://example.com/client.json", false),
        (&below, "https://badexample.com/client.json", false),
        (
            &below,
            "https://a.example.com.evil.example/client.json",
            false,
        ),
    ] {
        assert_eq!(entry.matches(&url(text)), expected, "{entry:?} {text}");
    }
    assert!(host_allowed(&[], "https://anything.example/c"));
    assert!(host_allowed(
        &[claude.clone(), below.clone()],
        "https://a.example.com/c"
    ));
    assert!(!host_allowed(&[claude, below], "https://vscode.dev/c"));
    for entry in [
        "",
        "*",
        "*.",
        "https://claude.ai",
        "claude.ai/oauth",
        "claude.ai:443",
        "claude..ai",
        "a.*.example.com",
        "*example.com",
        "claude ai",
        "[::1]",
    ] {
        assert!(ClientIdHost::parse(entry).is_err(), "{entry:?}");
    }
}

#[test]
fn private_use_redirect_uris_pass_the_document_and_are_judged_by_the_facade() {
    // The document lists what the client uses; whether the operator allows a private-use
    // scheme is decided per request by the facade (`oauth.redirect_schemes`).
    let body = doc(serde_json::json!({"redirect_uris": [
        "cursor://anysphere.cursor-mcp/oauth/callback",
        "http://127.0.0.1/callback",
    ]}));
    let metadata = document::parse(CLAUDE_CODE, &body).unwrap();
    assert_eq!(metadata.redirect_uris.len(), 2);
    for refused in [
        "cursor:/oauth/callback",
        "cursor://x/cb#f",
        "cursor://u@x/cb",
    ] {
        let body = doc(serde_json::json!({ "redirect_uris": [refused] }));
        assert!(
            matches!(
                document::parse(CLAUDE_CODE, &body),
                Err(ClientMetadataError::Invalid(_))
            ),
            "{refused}"
        );
    }
}
