//! `authz`: an Envoy ext_authz service that opens MCP servers to a company's Google Workspace.
//!
//! # Layout
//! By layer, bottom to top (ARCHITECTURE.md; `scripts/check-layers` enforces it): a module uses
//! its own layer and those below, never one above. Each module owns one thing.
//!
//! Foundations:
//! - [`config`]: every settings type, one file per section, loaded from defaults, a TOML file
//!   and `AUTHZ_*` variables, and validated once.
//! - [`errors`]: the two failures passed up: a token refused (401), a backend down (503).
//! - [`principal`]: the verified identity the rest of the service sees.
//! - [`credentials`]: finding the bearer token in a request and telling its kind.
//! - [`request_path`]: whether a `:path` is in the normal form the upstream reads (else 400).
//! - [`metrics`]: Prometheus metrics and their labels, served at `/metrics`.
//! - [`secret_string`], [`digest`], [`random`]: a string that never prints, how a secret is
//!   named (SHA-256), unguessable values.
//!
//! Outside services:
//! - [`secrets`]: secret references resolved at start-up and re-read on an interval, so a
//!   rotation needs no restart.
//! - [`google`]: verifying Google ID tokens (local, JWKS) and access tokens (tokeninfo, userinfo).
//! - [`service_auth`]: our service account's Google API access token (key file, or keyless
//!   through Workload Identity Federation from AWS), cached and refreshed once.
//! - [`store`]: the OAuth facade's shared state (sign-ins, codes, refresh tokens, revocations),
//!   in memory for one replica or in Redis for several, and each replica's local copy of the
//!   revocations for the hot path.
//! - [`client_metadata`]: OAuth Client ID Metadata Documents: a `client_id` that is an https
//!   URL, fetched SSRF-safely (public addresses only, no redirects, bounded time and size),
//!   checked, and cached.
//! - [`telemetry`]: logs, and OpenTelemetry traces of the Check (OTLP/HTTP, off unless
//!   configured) that continue Envoy's trace from `traceparent`.
//!
//! Decisions:
//! - [`policy`]: the pure access decision (Workspace domain from `hd`, users, groups, rules per
//!   MCP method and tool).
//! - [`resource`]: which protected MCP server a request, a sign-in or a grant is for.
//! - [`verdict`]: the outcome of one authorization.
//! - [`cache`]: the bounded verdict and identity caches, keyed by a hash, entries expiring with
//!   their token.
//! - [`list_filter`]: reading MCP list results (JSON or SSE) and removing the entries a user may
//!   not use, every other byte kept.
//! - [`facade_token`]: our own ES256 access tokens: keys, claims, local verification.
//! - [`groups`]: Google group membership (Directory or Cloud Identity API) behind a cache that
//!   refreshes ahead, serves stale answers for a bounded time in an outage, and backs off.
//!
//! Authorizer:
//! - [`authorizer`]: one authorization from request facts to verdict (cache, verify, decide).
//!
//! Front ends:
//! - [`check`]: the Envoy boundary (gRPC `Check`); with [`ext_proc`], the only modules that
//!   touch envoy-types.
//! - [`ext_proc`]: the second Envoy boundary (gRPC `ExternalProcessor`): filters list results
//!   with the policy and identity the Check decided on.
//! - [`audit`]: one structured event per decision.
//! - [`oauth`]: the OAuth 2.1 authorization server MCP clients sign in through (Google signs
//!   the user in; we issue audience-bound tokens the Check verifies locally).
//! - [`reload`]: re-reading the config on SIGHUP or file change, validated, swapped atomically.
//! - [`health`]: `/healthz` and `/readyz`.
//! - [`admin`]: the loopback-only admin gRPC API (off-boarding, cache figures, config version)
//!   and its `authz admin` client.
//!
//! [`run`] wires them together; `main.rs` only parses arguments and waits for a signal.

pub mod admin;
pub mod audit;
pub mod authorizer;
pub mod cache;
pub mod check;
pub mod client_metadata;
pub mod config;
pub mod credentials;
pub mod digest;
pub mod errors;
pub mod ext_proc;
pub mod facade_token;
pub mod google;
pub mod groups;
pub mod health;
pub mod list_filter;
pub mod metrics;
pub mod oauth;
pub mod policy;
pub mod principal;
pub mod random;
pub mod reload;
pub mod request_path;
pub mod resource;
pub mod secret_string;
pub mod secrets;
pub mod service_auth;
pub mod store;
pub mod telemetry;
#[cfg(test)]
mod test_support;
pub mod verdict;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use envoy_types::{
    ext_authz::v3::pb::AuthorizationServer,
    pb::envoy::service::ext_proc::v3::external_processor_server::ExternalProcessorServer,
};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::transport::server::TcpIncoming;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    authorizer::Authorizer, check::CheckService, config::Config, ext_proc::ExtProcService,
    google::Google, groups::Groups, reload::Reloader, secrets::Secrets,
};

/// The listeners, bound before anything starts so a taken port fails the start cleanly.
#[derive(Debug)]
pub struct Listeners {
    pub grpc: TcpListener,
    pub http: TcpListener,
    /// The admin API; loopback only (the config refuses anything else).
    pub admin: TcpListener,
}

impl Listeners {
    pub async fn bind(config: &Config) -> anyhow::Result<Listeners> {
        let grpc = TcpListener::bind(config.listen.grpc)
            .await
            .with_context(|| format!("binding listen.grpc {}", config.listen.grpc))?;
        let http = TcpListener::bind(config.listen.http)
            .await
            .with_context(|| format!("binding listen.http {}", config.listen.http))?;
        let admin = TcpListener::bind(config.listen.admin)
            .await
            .with_context(|| format!("binding listen.admin {}", config.listen.admin))?;
        Ok(Listeners { grpc, http, admin })
    }

    pub fn local_addrs(&self) -> std::io::Result<(SocketAddr, SocketAddr)> {
        Ok((self.grpc.local_addr()?, self.http.local_addr()?))
    }
}

/// How often the config file is checked for changes.
const RELOAD_POLL: Duration = Duration::from_secs(1);

/// Serves until `shutdown` is cancelled, then drains: health turns NOT_SERVING, listeners stop
/// accepting, in-flight checks finish, background refreshers stop. Without a config file
/// there is nothing to reload; see [`run_reloadable`].
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let source = reload::Source {
        path: None,
        env: Vec::new(),
    };
    run_reloadable(config, source, listeners, shutdown).await
}

/// [`run`], reloading the config from `source` on SIGHUP and when the file changes.
pub async fn run_reloadable(
    config: Config,
    source: reload::Source,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    prepare(config, source, shutdown.clone())
        .await?
        .serve(listeners, shutdown)
        .await
}

/// Everything built from the config before a port is bound: secrets read and parsed, clients
/// and caches made, background tasks started. [`prepare`] makes it, [`Prepared::serve`] serves.
pub struct Prepared {
    config: Config,
    metrics: Arc<metrics::Metrics>,
    google: Arc<Google>,
    groups: Option<Arc<Groups>>,
    authorizer: Arc<Authorizer>,
    facade: Option<Arc<oauth::Facade>>,
    reloader: Arc<Reloader>,
    admin_token: Option<secrets::SecretValue>,
    background: TaskTracker,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared").finish_non_exhaustive()
    }
}

/// The first half of [`run_reloadable`]: reads every secret (one that is missing or does not
/// parse is an error here, before any port is bound), builds the clients, the caches and the
/// facade, and starts the background tasks, which stop with `shutdown`.
pub async fn prepare(
    config: Config,
    source: reload::Source,
    shutdown: CancellationToken,
) -> anyhow::Result<Prepared> {
    let metrics = Arc::new(metrics::Metrics::new());
    let google =
        Google::with_metrics(&config, metrics.clone()).context("building the Google client")?;
    // Every configured secret is read here once: one that cannot be read stops the start.
    let secrets = Secrets::new(&config.secrets, metrics.clone());
    let groups = match &config.groups {
        Some(groups) => Some(Arc::new(
            Groups::new(groups, &secrets, metrics.clone())
                .await
                .context("setting up group membership lookups")?,
        )),
        None => None,
    };
    let lookup = groups
        .clone()
        .map(|groups| groups as Arc<dyn groups::MembershipLookup>);
    let background = TaskTracker::new();
    let mut authorizer = Authorizer::new(&config, google.clone(), lookup);
    let facade_parts = match &config.oauth {
        Some(oauth) => {
            let mut store_config = config.store.clone();
            if let Some(redis) = &mut store_config.redis {
                if let Some(reference) = &redis.password {
                    let password = secrets.resolve("store.redis.password", reference).await?;
                    let current = password.current();
                    redis.password = Some(config::SecretRef::Inline((*current).clone()));
                }
            }
            let store = store::open_with_metrics(&store_config, metrics.clone())
                .context("opening the OAuth store")?;
            store::check_eviction_policy(&*store).await?;
            let tokens = facade_token::token_check(&config, oauth, store.clone(), &secrets).await?;
            authorizer = authorizer.accept_facade_tokens(tokens.clone());
            Some((oauth, store, tokens))
        }
        None => None,
    };
    let authorizer = Arc::new(authorizer);
    let facade = match facade_parts {
        Some((oauth, store, tokens)) => {
            // Off-boarding on another replica reaches this one through the revocation feed.
            let weak = Arc::downgrade(&authorizer);
            tokens
                .revocations
                .on_user_invalidated(Arc::new(move |email: String| {
                    if let Some(authorizer) = weak.upgrade() {
                        tokio::spawn(async move {
                            let removed = authorizer.invalidate_user(&email).await;
                            tracing::info!(
                                email,
                                verdicts = removed.verdicts,
                                identities = removed.identities,
                                memberships = removed.memberships,
                                "user invalidated on another replica"
                            );
                        });
                    }
                }));
            let parts = oauth::Parts {
                tokens,
                store,
                google: google.clone(),
                authorizer: authorizer.clone(),
            };
            let facade = oauth::Facade::new(&config, oauth, parts, &secrets)
                .await
                .context("setting up the OAuth facade")?;
            background.spawn(
                facade.revocation_sync(config.store.revocation_poll, shutdown.child_token()),
            );
            Some(facade)
        }
        None => None,
    };
    background.spawn(google.clone().run(shutdown.child_token()));
    background.spawn(secrets.clone().run(shutdown.child_token()));
    let admin_token = match &config.listen.admin_token {
        Some(reference) => Some(secrets.resolve("listen.admin_token", reference).await?),
        None => {
            tracing::warn!(
                "listen.admin_token is not set: any process that can reach listen.admin (in an \
                 ECS task, every container) can off-board users; set it"
            );
            None
        }
    };
    let watches_file = source.path.is_some();
    let reloader = Arc::new(Reloader::new(
        source,
        config.clone(),
        groups.clone(),
        authorizer.clone(),
        secrets,
    ));
    if watches_file {
        background.spawn(reloader.clone().watch(RELOAD_POLL, shutdown.child_token()));
    }
    Ok(Prepared {
        config,
        metrics,
        google,
        groups,
        authorizer,
        facade,
        reloader,
        admin_token,
        background,
    })
}

impl Prepared {
    /// The second half of [`run_reloadable`]: serves on `listeners` until `shutdown`, then
    /// drains.
    pub async fn serve(
        self,
        listeners: Listeners,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let Prepared {
            config,
            metrics,
            google,
            groups,
            authorizer,
            facade,
            reloader,
            admin_token,
            background,
        } = self;
        let (reporter, health_service) = tonic_health::server::health_reporter();
        set_health(&reporter, ServingStatus::NotServing).await;
        background.spawn(report_readiness(
            reporter.clone(),
            google.clone(),
            shutdown.clone(),
        ));

        let scrape = scrape_router(metrics, authorizer.clone(), groups.clone());
        let admin = tonic::transport::Server::builder()
            .add_service(admin::AdminServer::with_interceptor(
                admin::AdminService::new(
                    authorizer.clone(),
                    reloader,
                    facade
                        .clone()
                        .map(|facade| facade as Arc<dyn admin::RefreshTokens>),
                ),
                admin::authenticate(admin_token),
            ))
            .serve_with_incoming_shutdown(
                TcpIncoming::from(listeners.admin),
                shutdown.clone().cancelled_owned(),
            );
        let ext_proc = ExternalProcessorServer::new(ExtProcService::new(authorizer.clone()));
        let check = AuthorizationServer::new(CheckService::new(&config, authorizer));
        let grpc_shutdown = {
            let (shutdown, reporter) = (shutdown.clone(), reporter.clone());
            async move {
                shutdown.cancelled().await;
                // Tell Envoy's health checker first, then stop accepting.
                set_health(&reporter, ServingStatus::NotServing).await;
            }
        };
        let incoming = TcpIncoming::from(listeners.grpc).with_nodelay(Some(true));
        let grpc = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(check)
            .add_service(ext_proc)
            .serve_with_incoming_shutdown(incoming, grpc_shutdown);

        let mut routes = health::router(google, groups, facade.clone())
            .merge(scrape)
            .merge(oauth::metadata::resource_router(&config));
        if let Some(facade) = &facade {
            routes = routes.merge(facade.router());
        }
        let http = axum::serve(listeners.http, routes)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned());

        let (grpc, http, admin) = tokio::join!(grpc, async { http.await }, admin);
        background.close();
        background.wait().await;
        grpc.context("gRPC server")?;
        http.context("HTTP server")?;
        admin.context("admin server")?;
        Ok(())
    }
}

async fn set_health(reporter: &HealthReporter, status: ServingStatus) {
    reporter
        .set_service_status("envoy.service.auth.v3.Authorization", status)
        .await;
    reporter.set_service_status("", status).await;
}

/// Turns gRPC health SERVING once tokens can be verified, so Envoy only sends us checks we can
/// answer. Until then Envoy sees no healthy host and fails closed with its `status_on_error`.
async fn report_readiness(
    reporter: HealthReporter,
    google: Arc<Google>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while !shutdown.is_cancelled() {
        if google.is_ready() {
            set_health(&reporter, ServingStatus::Serving).await;
            tracing::info!("ready: discovery done, JWKS loaded");
            return;
        }
        if shutdown.run_until_cancelled(tick.tick()).await.is_none() {
            return;
        }
    }
}

/// `GET /metrics`, with the cache sizes read from the authorizer and the group lookups at
/// scrape time.
fn scrape_router(
    metrics: Arc<metrics::Metrics>,
    authorizer: Arc<Authorizer>,
    groups: Option<Arc<Groups>>,
) -> axum::Router {
    metrics::router(metrics, move |metrics: &metrics::Metrics| {
        use metrics::CacheName;
        metrics.set_cache_entries(CacheName::Verdict, authorizer.verdicts().entry_count());
        metrics.set_cache_entries(CacheName::Identity, authorizer.identities().entry_count());
        if let Some(groups) = &groups {
            metrics.set_cache_entries(CacheName::Membership, groups.cached_entries());
        }
    })
}
