//! The HTTP load generators of `bench-envoy`: `GET /mcp` with `Authorization: Bearer <token>` to
//! Envoy over a few long-lived h2c connections (one `reqwest::Client` each, HTTP/2 prior
//! knowledge). Same pacing and recording as `bench-check` (see `bench/client.rs`): the open loop
//! counts latency from each request's scheduled time, the closed loop from its send.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use reqwest::{
    Client, StatusCode, Url,
    header::{AUTHORIZATION, HeaderValue},
};

use crate::bench::client::{
    Outcome, RPC_TIMEOUT, Row, Shared, Stop, histogram, nanos, reduce_timer_slack,
    reset_timer_slack,
};

/// Connections to Envoy's listener.
#[derive(Debug)]
pub struct HttpLoad {
    clients: Vec<Client>,
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
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { clients, url })
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
        let total = u64::try_from(u128::from(rate) * duration.as_nanos() / 1_000_000_000)
            .context("rate × duration is too large")?;
        let shared = Arc::new(Shared::new());
        let t0 = Instant::now() + Duration::from_millis(20);
        let runtime = tokio::runtime::Handle::current();
        let pacer = {
            let shared = shared.clone();
            let clients = self.clients.clone();
            let url = self.url.clone();
            let authorizations = authorizations.clone();
            tokio::task::spawn_blocking(move || {
                let precise = reduce_timer_slack();
                let mut lag = histogram();
                let mut skipped = 0;
                for i in 0..total {
                    let offset = u128::from(i) * 1_000_000_000 / u128::from(rate);
                    let due = t0 + Duration::from_nanos(u64::try_from(offset).unwrap_or(u64::MAX));
                    let mut now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                        now = Instant::now();
                    }
                    lag.saturating_record(nanos(now.saturating_duration_since(due)));
                    if shared.in_flight.load(Relaxed) >= max_in_flight {
                        skipped += 1;
                        continue;
                    }
                    shared.in_flight.fetch_add(1, Relaxed);
                    let index = usize::try_from(i).unwrap_or(usize::MAX);
                    let client = clients[index % clients.len()].clone();
                    let authorization = authorizations[index % authorizations.len()].clone();
                    let (shared, url) = (shared.clone(), url.clone());
                    runtime.spawn(async move {
                        let outcome = send(&client, url, authorization).await;
                        shared.record(due, Instant::now(), outcome);
                        shared.in_flight.fetch_sub(1, Relaxed);
                    });
                }
                reset_timer_slack(precise);
                (lag, skipped)
            })
        };
        let (lag, skipped) = pacer.await.context("the pacer thread failed")?;
        let drained_by = Instant::now() + RPC_TIMEOUT + Duration::from_secs(5);
        while shared.in_flight.load(Relaxed) > 0 {
            anyhow::ensure!(
                Instant::now() < drained_by,
                "{} requests never finished (a request task panicked?)",
                shared.in_flight.load(Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut row = shared.into_row(name, Some(rate), t0);
        row.skipped = skipped;
        row.pacing_lag = Some(lag);
        Ok(row)
    }

    /// `workers` concurrent senders, each sending its next request when the last is answered.
    pub async fn closed_loop(
        &self,
        name: &str,
        authorizations: &Arc<[HeaderValue]>,
        workers: usize,
        stop: Stop,
    ) -> anyhow::Result<Row> {
        let shared = Arc::new(Shared::new());
        let next = Arc::new(AtomicUsize::new(0));
        let t0 = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..workers {
            let client = self.clients[worker % self.clients.len()].clone();
            let (shared, next, authorizations, url) = (
                shared.clone(),
                next.clone(),
                authorizations.clone(),
                self.url.clone(),
            );
            tasks.spawn(async move {
                loop {
                    let i = next.fetch_add(1, Relaxed);
                    let authorization = match stop {
                        Stop::OncePerBody if i >= authorizations.len() => break,
                        Stop::After(duration) if t0.elapsed() >= duration => break,
                        _ => authorizations[i % authorizations.len()].clone(),
                    };
                    let sent = Instant::now();
                    let outcome = send(&client, url.clone(), authorization).await;
                    shared.record(sent, Instant::now(), outcome);
                }
            });
        }
        while let Some(joined) = tasks.join_next().await {
            if let Err(e) = joined {
                shared.errors.fetch_add(1, Relaxed);
                shared.problem(format!("a worker task failed: {e}"));
            }
        }
        Ok(shared.into_row(name, None, t0))
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
