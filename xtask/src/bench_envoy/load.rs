//! The HTTP load generators of `bench-envoy`: `GET /mcp` with `Authorization: Bearer <token>` to
//! Envoy over a few long-lived h2c connections (one `reqwest::Client` each, HTTP/2 prior
//! knowledge). Same pacing and recording as `bench-check` (see `bench/client.rs`): the open loop
//! counts latency from each request's scheduled time, the closed loop from its send.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use reqwest::{
    Client, StatusCode, Url,
    header::{AUTHORIZATION, HeaderValue},
};

use crate::bench::client::{self, BoxedOutcome, Outcome, RPC_TIMEOUT, Row, Stop};

/// Connections to Envoy's listener.
#[derive(Debug)]
pub struct HttpLoad {
    clients: Arc<[Client]>,
    url: Url,
}

impl HttpLoad {
    /// `connections` h2c clients for `http://addr/mcp` (each opens one connection on first use).
    pub fn new(addr: SocketAddr, connections: usize) -> anyhow::Result<Self> {
        let url = Url::parse(&format!("http://{addr}/mcp")).context("the Envoy URL")?;
        let clients = (0..connections)
            .map(|_| {
                Client::builder()
                    .http2_prior_knowledge()
                    .tcp_nodelay(true)
                    .timeout(RPC_TIMEOUT)
                    .no_proxy()
                    .build()
                    .context("building an HTTP client")
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            clients: clients.into(),
            url,
        })
    }

    /// One request with this `Authorization` (or none); returns the status.
    pub async fn status(&self, authorization: Option<&HeaderValue>) -> anyhow::Result<StatusCode> {
        let mut request = self.clients[0].get(self.url.clone());
        if let Some(value) = authorization {
            request = request.header(AUTHORIZATION, value.clone());
        }
        let response = request.send().await.context("probing Envoy")?;
        let status = response.status();
        response.bytes().await.context("reading a probe's body")?;
        Ok(status)
    }

    /// `rate × duration` requests, request `i` due at `t0 + i / rate` with
    /// `authorizations[i % len]`; latency from the due time.
    pub async fn open_loop(
        &self,
        name: &str,
        authorizations: &Arc<[HeaderValue]>,
        rate: u64,
        duration: Duration,
        max_in_flight: usize,
    ) -> anyhow::Result<Row> {
        let send = self.sender(authorizations);
        client::open_loop(name, rate, duration, max_in_flight, send).await
    }

    /// `workers` concurrent senders, each sending its next request when the last is answered.
    pub async fn closed_loop(
        &self,
        name: &str,
        authorizations: &Arc<[HeaderValue]>,
        workers: usize,
        stop: Stop,
    ) -> anyhow::Result<Row> {
        let send = self.sender(authorizations);
        client::closed_loop(name, authorizations.len(), workers, stop, send).await
    }

    /// Request `i`: `authorizations[i % len]` on connection `i % connections`.
    fn sender(
        &self,
        authorizations: &Arc<[HeaderValue]>,
    ) -> impl Fn(usize) -> BoxedOutcome + Clone + Send + Sync + 'static {
        let (clients, authorizations) = (self.clients.clone(), authorizations.clone());
        let url = self.url.clone();
        move |i| {
            let client = clients[i % clients.len()].clone();
            let authorization = authorizations[i % authorizations.len()].clone();
            let url = url.clone();
            Box::pin(async move { send(&client, url, authorization).await })
        }
    }
}

/// One request; only a 200 with its whole body read counts as allowed.
async fn send(client: &Client, url: Url, authorization: HeaderValue) -> Outcome {
    match client
        .get(url)
        .header(AUTHORIZATION, authorization)
        .send()
        .await
    {
        Ok(response) => {
            let status = response.status();
            match response.bytes().await {
                Ok(_) if status == StatusCode::OK => Outcome::Allowed,
                Ok(body) => Outcome::NotOk(format!(
                    "HTTP {status}: {:?}",
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                )),
                Err(e) => Outcome::Error(format!("reading the body: {e:#}")),
            }
        }
        Err(e) => Outcome::Error(format!("{e:#}")),
    }
}
