//! What the unit tests of the Check path share: an Envoy-shaped `CheckRequest`, and the Google
//! stand-in with a client that has loaded its discovery document and keys.

use std::{collections::HashMap, sync::Arc, time::Duration};

use envoy_types::{
    ext_authz::v3::pb::CheckRequest,
    pb::envoy::service::auth::v3::{AttributeContext, attribute_context},
};
use standin::{Options, StandIn};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::{
    config::{Config, ResourceConfig},
    google::Google,
    metrics::Metrics,
    resource::Resources,
};

/// A CheckRequest carrying this HTTP request, nested as Envoy nests it.
pub fn check_request(http: attribute_context::HttpRequest) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(attribute_context::Request {
                http: Some(http),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// Header pairs as the CheckRequest's map.
pub fn headers(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The stand-in, a config accepting its tokens for `client` and `example.com`, and a Google
/// client (recording into `metrics`) that is ready to verify them. Dropping it stops both.
pub struct ReadyGoogle {
    pub standin: StandIn,
    pub config: Config,
    pub google: Arc<Google>,
    _stop: DropGuard,
}

/// A config for tokens of `client` from the stand-in at `issuer` (domain example.com, resource
/// https://mcp.example.com/mcp), with `file` (e.g. policies) beneath the environment.
pub fn config_for(issuer: &str, client: &str, file: Option<&str>) -> Config {
    Config::load(
        file,
        [
            ("AUTHZ_GOOGLE__CLIENT_IDS", client.to_string()),
            ("AUTHZ_GOOGLE__ISSUER", issuer.to_string()),
            ("AUTHZ_GOOGLE__TOKENINFO_URL", format!("{issuer}/tokeninfo")),
            ("AUTHZ_ACCESS__DOMAINS", "example.com".into()),
            ("AUTHZ_RESOURCE__URL", "https://mcp.example.com/mcp".into()),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    )
    .unwrap()
}

pub async fn ready_google(client: &str, metrics: Arc<Metrics>) -> ReadyGoogle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let standin = StandIn::start(listener, Options::default()).await.unwrap();
    let config = config_for(standin.issuer(), client, None);
    let google = Google::with_metrics(&config, metrics).unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(google.clone().run(stop.clone()));
    for _ in 0..200 {
        if google.is_ready() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(google.is_ready(), "discovery and JWKS did not load");
    ReadyGoogle {
        standin,
        config,
        google,
        _stop: stop.drop_guard(),
    }
}

/// A `[[resources]]` entry: this URL and policy, no name.
pub fn resource_entry(url: &str, policy: Option<&str>) -> ResourceConfig {
    ResourceConfig {
        url: url.parse().unwrap(),
        name: None,
        policy: policy.map(String::from),
    }
}

/// The protected MCP servers at these URLs, the first the default.
pub fn resources(urls: &[&str]) -> Resources {
    let entries: Vec<ResourceConfig> = urls.iter().map(|url| resource_entry(url, None)).collect();
    let pairs: Vec<(&ResourceConfig, Option<&str>)> =
        entries.iter().map(|entry| (entry, None)).collect();
    Resources::new(&pairs)
}
