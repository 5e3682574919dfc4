//! Client ID Metadata Documents fetched from a local https server: the address rules (literal
//! IPs in any notation, a name resolving to loopback), the one exemption (`allow_hosts` plus a
//! `ca_file` for the test CA, the same knobs an operator uses for internal hosts), caching by
//! `Cache-Control`, coalescing, cached failures, and every limit (size, redirects, content
//! type, time).

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use authz::{
    client_metadata::{ClientMetadataError, ClientMetadataFetcher},
    config::ClientMetadataConfig,
    metrics::Metrics,
};
use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Path, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        ServerConfig,
        pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    },
    server::TlsStream,
};

/// A local https server with a certificate for `localhost` and `127.0.0.1` from a CA made for
/// this test, counting requests per path.
struct MetadataServer {
    port: u16,
    requests: Arc<Mutex<HashMap<String, usize>>>,
    ca_file: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct ServerState {
    base: String,
    requests: Arc<Mutex<HashMap<String, usize>>>,
}

struct TlsListener {
    tcp: TcpListener,
    tls: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, peer)) = self.tcp.accept().await else {
                continue;
            };
            // A client that refuses our certificate fails its handshake; keep serving.
            if let Ok(stream) = self.tls.accept(stream).await {
                return (stream, peer);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

impl MetadataServer {
    async fn start() -> MetadataServer {
        let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();

        let tls = ServerConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .unwrap();

        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = tcp.local_addr().unwrap().port();
        let ca_file =
            std::env::temp_dir().join(format!("authz-cimd-ca-{}-{port}.pem", std::process::id()));
        std::fs::write(&ca_file, ca.pem()).unwrap();

        let requests = Arc::new(Mutex::new(HashMap::new()));
        let state = ServerState {
            base: format!("https://127.0.0.1:{port}"),
            requests: requests.clone(),
        };
        let app = Router::new()
            .route("/{*path}", get(respond))
            .with_state(state);
        let listener = TlsListener {
            tcp,
            tls: TlsAcceptor::from(Arc::new(tls)),
        };
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        MetadataServer {
            port,
            requests,
            ca_file,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}/{path}", self.port)
    }

    fn requests(&self, path: &str) -> usize {
        self.requests
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// Settings that trust this server: its address is listed and its CA is trusted.
    fn settings(&self) -> ClientMetadataConfig {
        ClientMetadataConfig {
            allow_hosts: vec![format!("127.0.0.1:{}", self.port)],
            ca_file: Some(self.ca_file.clone()),
            timeout: Duration::from_secs(3),
            ..ClientMetadataConfig::default()
        }
    }

    fn fetcher(&self, settings: &ClientMetadataConfig) -> ClientMetadataFetcher {
        ClientMetadataFetcher::new(settings, Arc::new(Metrics::new())).unwrap()
    }
}

impl Drop for MetadataServer {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.ca_file);
    }
}

/// A document for `client_id`, as Claude Code publishes it.
fn document(client_id: &str) -> String {
    serde_json::json!({
        "client_id": client_id,
        "client_name": "Test Client",
        "redirect_uris": ["http://localhost/callback", "http://127.0.0.1/callback"],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
    })
    .to_string()
}

fn json(body: impl Into<Body>, cache_control: Option<&'static str>) -> Response {
    let mut response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.into(),
    )
        .into_response();
    if let Some(value) = cache_control {
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, value.parse().unwrap());
    }
    response
}

async fn respond(State(state): State<ServerState>, Path(path): Path<String>) -> Response {
    *state
        .requests
        .lock()
        .unwrap()
        .entry(path.clone())
        .or_default() += 1;
    let own_url = format!("{}/{path}", state.base);
    match path.as_str() {
        "max-age" => json(document(&own_url), Some("public, max-age=3600")),
        "no-store" => json(document(&own_url), Some("no-store")),
        "plain" => json(document(&own_url), None),
        "slow-once" => {
            tokio::time::sleep(Duration::from_millis(300)).await;
            json(document(&own_url), None)
        }
        "mismatch" => json(document(&format!("{}/other", state.base)), None),
        "big" => json(format!("{{\"pad\": \"{}\"}}", "x".repeat(64 * 1024)), None),
        "endless" => {
            // No Content-Length, and no end: only the reader's cap stops it.
            let chunks = futures::stream::repeat_with(|| {
                Ok::<_, Infallible>(Bytes::from_static(&[b' '; 1024]))
            });
            json(Body::from_stream(chunks), None)
        }
        "redirect" => (
            StatusCode::FOUND,
            [(header::LOCATION, format!("{}/plain", state.base))],
        )
            .into_response(),
        "html" => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html")],
            document(&own_url),
        )
            .into_response(),
        "error" => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            json(document(&own_url), None)
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

#[tokio::test]
async fn non_public_hosts_are_refused_in_every_spelling() {
    let server = MetadataServer::start().await;
    // Defaults: no host is exempt.
    let fetcher = server.fetcher(&ClientMetadataConfig {
        ca_file: Some(server.ca_file.clone()),
        ..ClientMetadataConfig::default()
    });
    let port = server.port;
    for client_id in [
        "https://127.0.0.1/x".to_string(),
        "https://169.254.169.254/latest/meta-data".to_string(),
        "https://localhost/x".to_string(),
        "https://2130706433/x".to_string(),
        "https://0x7f.1/x".to_string(),
        "https://[::ffff:127.0.0.1]/x".to_string(),
        // The live server, by address and by a name resolving to loopback.
        format!("https://127.0.0.1:{port}/plain"),
        format!("https://localhost:{port}/plain"),
        format!("https://2130706433:{port}/plain"),
    ] {
        assert_eq!(
            fetcher.fetch(&client_id).await,
            Err(ClientMetadataError::ForbiddenAddress),
            "{client_id}"
        );
    }
    assert_eq!(server.requests("plain"), 0);
}

#[tokio::test]
async fn the_exemption_is_for_the_listed_host_and_port_only() {
    let server = MetadataServer::start().await;
    let port = server.port;
    let fetcher = server.fetcher(&server.settings());
    let metadata = fetcher.fetch(&server.url("plain")).await.unwrap();
    assert_eq!(metadata.client_id, server.url("plain"));
    assert_eq!(metadata.client_name.as_deref(), Some("Test Client"));
    assert_eq!(
        metadata.redirect_uris,
        ["http://localhost/callback", "http://127.0.0.1/callback"]
    );
    // The same server by name is not listed, so its loopback address counts against it.
    assert_eq!(
        fetcher
            .fetch(&format!("https://localhost:{port}/plain"))
            .await,
        Err(ClientMetadataError::ForbiddenAddress)
    );
    assert_eq!(server.requests("plain"), 1);

    // Listing the name lets it through the resolver.
    let by_name = server.fetcher(&ClientMetadataConfig {
        allow_hosts: vec![format!("localhost:{port}")],
        ..server.settings()
    });
    let client_id = format!("https://localhost:{port}/plain");
    // The server names its 127.0.0.1 URL in the document, so the fetch itself worked and the
    // document is refused for not vouching for this URL.
    assert_eq!(
        by_name.fetch(&client_id).await,
        Err(ClientMetadataError::Invalid(
            "client_id does not match its URL"
        ))
    );
    assert_eq!(server.requests("plain"), 2);
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused() {
    let server = MetadataServer::start().await;
    let fetcher = server.fetcher(&ClientMetadataConfig {
        ca_file: None,
        ..server.settings()
    });
    assert_eq!(
        fetcher.fetch(&server.url("plain")).await,
        Err(ClientMetadataError::Unreachable)
    );
    assert_eq!(server.requests("plain"), 0);
}

#[tokio::test]
async fn max_age_is_honoured_and_no_store_is_not_cached() {
    let server = MetadataServer::start().await;
    let metrics = Arc::new(Metrics::new());
    let fetcher = ClientMetadataFetcher::new(&server.settings(), metrics.clone()).unwrap();

    let first = fetcher.fetch(&server.url("max-age")).await.unwrap();
    let second = fetcher.fetch(&server.url("max-age")).await.unwrap();
    assert!(Arc::ptr_eq(&first, &second));
    assert_eq!(server.requests("max-age"), 1);

    for _ in 0..3 {
        fetcher.fetch(&server.url("no-store")).await.unwrap();
    }
    assert_eq!(server.requests("no-store"), 3);

    // No header: the default lifetime, so cached.
    fetcher.fetch(&server.url("plain")).await.unwrap();
    fetcher.fetch(&server.url("plain")).await.unwrap();
    assert_eq!(server.requests("plain"), 1);

    let text = metrics.encode();
    assert!(
        text.contains("authz_client_metadata_fetches_total{result=\"ok\"} 5"),
        "{text}"
    );
}

#[tokio::test]
async fn concurrent_fetches_of_one_url_share_one_request() {
    let server = MetadataServer::start().await;
    let fetcher = server.fetcher(&server.settings());
    let url = server.url("slow-once");
    let results = futures::future::join_all((0..8).map(|_| fetcher.fetch(&url))).await;
    let first = results[0].clone().unwrap();
    for result in results {
        assert!(Arc::ptr_eq(&result.unwrap(), &first));
    }
    assert_eq!(server.requests("slow-once"), 1);
}

#[tokio::test]
async fn bad_answers_are_refused_and_failures_are_cached() {
    let server = MetadataServer::start().await;
    let fetcher = server.fetcher(&server.settings());
    for (path, expected) in [
        ("big", ClientMetadataError::TooLarge),
        ("endless", ClientMetadataError::TooLarge),
        ("redirect", ClientMetadataError::Redirected),
        (
            "mismatch",
            ClientMetadataError::Invalid("client_id does not match its URL"),
        ),
        ("html", ClientMetadataError::NotJson),
        ("error", ClientMetadataError::HttpStatus(500)),
        ("missing", ClientMetadataError::HttpStatus(404)),
    ] {
        // Twice: the second answer comes from the failure cache, not from the server.
        for _ in 0..2 {
            assert_eq!(
                fetcher.fetch(&server.url(path)).await,
                Err(expected.clone()),
                "{path}"
            );
        }
        assert_eq!(server.requests(path), 1, "{path}");
    }
    // The redirect was not followed.
    assert_eq!(server.requests("plain"), 0);
}

#[tokio::test]
async fn a_slow_server_hits_the_timeout() {
    let server = MetadataServer::start().await;
    let fetcher = server.fetcher(&ClientMetadataConfig {
        timeout: Duration::from_millis(500),
        ..server.settings()
    });
    let started = std::time::Instant::now();
    assert_eq!(
        fetcher.fetch(&server.url("slow")).await,
        Err(ClientMetadataError::Timeout)
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(500) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn a_missing_or_empty_ca_file_stops_the_start() {
    let missing = ClientMetadataConfig {
        ca_file: Some(std::env::temp_dir().join("authz-cimd-no-such-ca.pem")),
        ..ClientMetadataConfig::default()
    };
    let error = ClientMetadataFetcher::new(&missing, Arc::new(Metrics::new())).unwrap_err();
    assert!(
        format!("{error:#}").contains("client_metadata.ca_file"),
        "{error:#}"
    );

    let empty = std::env::temp_dir().join(format!("authz-cimd-empty-{}.pem", std::process::id()));
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let result = ClientMetadataFetcher::new(
        &ClientMetadataConfig {
            ca_file: Some(empty.clone()),
            ..ClientMetadataConfig::default()
        },
        Arc::new(Metrics::new()),
    );
    std::fs::remove_file(&empty).unwrap();
    let error = result.unwrap_err();
    assert!(
        format!("{error:#}").contains("client_metadata.ca_file"),
        "{error:#}"
    );
}

/// `?1`, `?2`, ... are distinct URLs but one host: at most `fetches_per_host_per_minute` of them
/// are fetched; and at most `max_concurrent_fetches` run at once. A refused fetch is not
/// cached (the next request may find room) and is counted as `busy`.
#[tokio::test]
async fn fetches_are_bounded_per_host_and_at_once() {
    let server = MetadataServer::start().await;
    let settings = ClientMetadataConfig {
        fetches_per_host_per_minute: 3,
        ..server.settings()
    };
    let fetcher = server.fetcher(&settings);
    let mut busy = 0;
    for i in 0..8 {
        if fetcher.fetch(&server.url(&format!("plain?{i}"))).await == Err(ClientMetadataError::Busy)
        {
            busy += 1;
        }
    }
    assert_eq!(server.requests("plain"), 3);
    assert_eq!(busy, 5);

    let settings = ClientMetadataConfig {
        max_concurrent_fetches: 2,
        ..server.settings()
    };
    let fetcher = server.fetcher(&settings);
    let results = futures::future::join_all((0..5).map(|i| {
        let url = server.url(&format!("slow-once?{i}"));
        let fetcher = fetcher.clone();
        async move { fetcher.fetch(&url).await }
    }))
    .await;
    let shed = results
        .iter()
        .filter(|r| **r == Err(ClientMetadataError::Busy))
        .count();
    assert_eq!(shed, 3, "{results:?}");
    assert_eq!(server.requests("slow-once"), 2);
}
