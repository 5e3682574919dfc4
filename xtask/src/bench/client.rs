//! The load generators. Requests are encoded before measuring and sent as raw bytes over a few
//! long-lived HTTP/2 connections, so the client spends its (shared) CPU on HTTP/2 only.
//!
//! - Open loop ([`Load::open_loop`]): request `i` is due at `t0 + i / rate`, whether or not
//!   earlier ones have been answered, and its latency is counted from that due time. A stalled
//!   server therefore shows up in the numbers instead of silently slowing the sender
//!   (coordinated omission). A dedicated pacer thread sleeps until each due time (std sleeps are
//!   precise to a few microseconds once its timer slack is lowered; tokio timers only to a
//!   millisecond) and hands the request to the runtime; its lateness is recorded apart, as
//!   "pacing lag", and is part of latency.
//! - Closed loop ([`Load::closed_loop`]): N workers, each sending its next request when the
//!   previous one is answered: the maximum throughput, latency counted from the send.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use envoy_types::pb::envoy::service::auth::v3::CheckResponse;
use hdrhistogram::Histogram;
use prost::{
    Message as _,
    bytes::{BufMut as _, Bytes},
};
use tonic::{
    Status,
    client::Grpc,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::http::uri::PathAndQuery,
    transport::{Channel, Endpoint},
};

const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// Gives up on a check after this long (it then counts as an error).
pub(crate) const RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// One scenario's results.
#[derive(Debug)]
pub struct Row {
    pub name: String,
    /// Target checks/s; `None` for a closed loop (as fast as it goes).
    pub target: Option<u64>,
    /// Allowed checks per second of wall time, first due time to last answer.
    pub achieved: f64,
    /// Latency of every check (errors included: any error fails the run), in nanoseconds.
    pub latency: Histogram<u64>,
    pub errors: u64,
    pub non_ok: u64,
    /// Fixed rate only: sends skipped because `max_in_flight` checks were outstanding.
    pub skipped: u64,
    /// Fixed rate only: how late the pacer handed each request over, in nanoseconds.
    pub pacing_lag: Option<Histogram<u64>>,
    pub first_problem: Option<String>,
    /// CPU time authz and this process (the load generator) spent during the scenario.
    pub cpu: Option<CpuUse>,
}

/// CPU time spent during one scenario.
#[derive(Debug, Clone, Copy)]
pub struct CpuUse {
    pub server: Duration,
    pub client: Duration,
}

impl Row {
    /// Checks answered (allowed, denied or failed).
    pub fn checks(&self) -> u64 {
        self.latency.len()
    }
}

/// How a closed loop ends.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    /// Each request body is sent exactly once (the warm-up).
    OncePerBody,
    /// Bodies are cycled through until the time is up.
    After(Duration),
}

/// Connections to authz.
#[derive(Debug)]
pub struct Load {
    clients: Arc<[Grpc<Channel>]>,
}

impl Load {
    /// Opens `connections` HTTP/2 connections to `addr`.
    pub async fn connect(addr: SocketAddr, connections: usize) -> anyhow::Result<Self> {
        let mut clients = Vec::with_capacity(connections);
        for _ in 0..connections {
            // One Endpoint::connect is one TCP connection; streams multiplex over it.
            let channel = Endpoint::from_shared(format!("http://{addr}"))
                .context("the authz gRPC address")?
                .tcp_nodelay(true)
                .timeout(RPC_TIMEOUT)
                .connect()
                .await
                .with_context(|| format!("connecting to authz at {addr}"))?;
            clients.push(Grpc::new(channel));
        }
        Ok(Self {
            clients: clients.into(),
        })
    }

    /// Sends `rate × duration` checks, request `i` due at `t0 + i / rate` with body
    /// `bodies[i % len]`, and counts latency from the due time.
    pub async fn open_loop(
        &self,
        name: &str,
        bodies: &Arc<[Bytes]>,
        rate: u64,
        duration: Duration,
        max_in_flight: usize,
    ) -> anyhow::Result<Row> {
        open_loop(name, rate, duration, max_in_flight, self.sender(bodies)).await
    }

    /// `workers` concurrent senders, each sending its next check when the last is answered.
    pub async fn closed_loop(
        &self,
        name: &str,
        bodies: &Arc<[Bytes]>,
        workers: usize,
        stop: Stop,
    ) -> anyhow::Result<Row> {
        closed_loop(name, bodies.len(), workers, stop, self.sender(bodies)).await
    }

    /// Request `i`: body `i % len` on connection `i % connections`.
    fn sender(
        &self,
        bodies: &Arc<[Bytes]>,
    ) -> impl Fn(usize) -> BoxedOutcome + Clone + Send + Sync + 'static {
        let (clients, bodies) = (self.clients.clone(), bodies.clone());
        move |i| {
            let mut client = clients[i % clients.len()].clone();
            let body = bodies[i % bodies.len()].clone();
            Box::pin(async move { check(&mut client, body).await })
        }
    }
}

/// The future of one request.
pub(crate) type BoxedOutcome = std::pin::Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// How many requests an open loop at `rate` sends in `duration`.
pub(crate) fn request_count(rate: u64, duration: Duration) -> anyhow::Result<u64> {
    u64::try_from(u128::from(rate) * duration.as_nanos() / 1_000_000_000)
        .context("rate × duration is too large")
}

/// The open loop shared by every benchmark: `rate × duration` requests, request `i` due at
/// `t0 + i / rate` and sent by `send(i)`, latency counted from the due time.
pub(crate) async fn open_loop<F>(
    name: &str,
    rate: u64,
    duration: Duration,
    max_in_flight: usize,
    send: F,
) -> anyhow::Result<Row>
where
    F: Fn(usize) -> BoxedOutcome + Send + 'static,
{
    let total = request_count(rate, duration)?;
    let shared = Arc::new(Shared::new());
    // A little slack so the first sends are not late because the pacer is still starting.
    let t0 = Instant::now() + Duration::from_millis(20);
    let runtime = tokio::runtime::Handle::current();
    let pacer = {
        let shared = shared.clone();
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
                let request = send(usize::try_from(i).unwrap_or(usize::MAX));
                let shared = shared.clone();
                runtime.spawn(async move {
                    let outcome = request.await;
                    shared.record(due, Instant::now(), outcome);
                    shared.in_flight.fetch_sub(1, Relaxed);
                });
            }
            reset_timer_slack(precise);
            (lag, skipped)
        })
    };
    let (lag, skipped) = pacer.await.context("the pacer thread failed")?;
    // Every request ends within RPC_TIMEOUT, as an answer or an error.
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

/// The closed loop shared by every benchmark: `workers` senders, each sending its next request
/// (`send(i)`, `i` counting up across workers) when the last is answered, until `stop`;
/// `items` is how many distinct requests there are (for [`Stop::OncePerBody`]).
pub(crate) async fn closed_loop<F>(
    name: &str,
    items: usize,
    workers: usize,
    stop: Stop,
    send: F,
) -> anyhow::Result<Row>
where
    F: Fn(usize) -> BoxedOutcome + Clone + Send + 'static,
{
    let shared = Arc::new(Shared::new());
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (shared, next, send) = (shared.clone(), next.clone(), send.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Relaxed);
                match stop {
                    Stop::OncePerBody if i >= items => break,
                    Stop::After(duration) if t0.elapsed() >= duration => break,
                    _ => {}
                }
                let sent = Instant::now();
                let outcome = send(i).await;
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

/// What one check came back as.
#[derive(Debug)]
pub(crate) enum Outcome {
    Allowed,
    /// A CheckResponse whose status is not OK: a denial.
    NotOk(String),
    /// The RPC failed.
    Error(String),
}

async fn check(client: &mut Grpc<Channel>, body: Bytes) -> Outcome {
    if let Err(e) = client.ready().await {
        return Outcome::Error(format!("channel not ready: {e}"));
    }
    let path = PathAndQuery::from_static(CHECK_PATH);
    match client
        .unary(tonic::Request::new(body), path, PreEncoded)
        .await
    {
        Ok(response) => match response.get_ref().status.as_ref() {
            Some(status) if status.code == 0 => Outcome::Allowed,
            Some(status) => Outcome::NotOk(format!(
                "CheckResponse status code {} ({:?})",
                status.code, status.message
            )),
            None => Outcome::NotOk("CheckResponse without a status".to_string()),
        },
        Err(status) => Outcome::Error(format!("gRPC {:?}: {}", status.code(), status.message())),
    }
}

/// What the check tasks of one scenario share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) in_flight: AtomicUsize,
    allowed: AtomicU64,
    pub(crate) errors: AtomicU64,
    non_ok: AtomicU64,
    /// Uncontended with the default current-thread client runtime.
    recorded: Mutex<Recorded>,
}

#[derive(Debug)]
struct Recorded {
    latency: Histogram<u64>,
    last_answer: Option<Instant>,
    first_problem: Option<String>,
}

impl Shared {
    pub(crate) fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            allowed: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            non_ok: AtomicU64::new(0),
            recorded: Mutex::new(Recorded {
                latency: histogram(),
                last_answer: None,
                first_problem: None,
            }),
        }
    }

    /// Records a check counted from `start` (its due time, or its send time in a closed loop).
    pub(crate) fn record(&self, start: Instant, end: Instant, outcome: Outcome) {
        let problem = match outcome {
            Outcome::Allowed => {
                self.allowed.fetch_add(1, Relaxed);
                None
            }
            Outcome::NotOk(problem) => {
                self.non_ok.fetch_add(1, Relaxed);
                Some(problem)
            }
            Outcome::Error(problem) => {
                self.errors.fetch_add(1, Relaxed);
                Some(problem)
            }
        };
        let mut recorded = self
            .recorded
            .lock()
            .expect("a recorder lock holder panicked");
        if problem.is_some() && recorded.first_problem.is_none() {
            recorded.first_problem = problem;
        }
        recorded
            .latency
            .saturating_record(nanos(end.saturating_duration_since(start)));
        recorded.last_answer = Some(recorded.last_answer.map_or(end, |last| last.max(end)));
    }

    pub(crate) fn problem(&self, problem: String) {
        let mut recorded = self
            .recorded
            .lock()
            .expect("a recorder lock holder panicked");
        recorded.first_problem.get_or_insert(problem);
    }

    pub(crate) fn into_row(self: Arc<Self>, name: &str, target: Option<u64>, t0: Instant) -> Row {
        let recorded = self
            .recorded
            .lock()
            .expect("a recorder lock holder panicked");
        let errors = self.errors.load(Relaxed);
        let non_ok = self.non_ok.load(Relaxed);
        let allowed = self.allowed.load(Relaxed);
        let elapsed = recorded
            .last_answer
            .map_or(Duration::ZERO, |last| last.saturating_duration_since(t0));
        Row {
            name: name.to_string(),
            target,
            achieved: if elapsed.is_zero() {
                0.0
            } else {
                allowed as f64 / elapsed.as_secs_f64()
            },
            latency: recorded.latency.clone(),
            errors,
            non_ok,
            skipped: 0,
            pacing_lag: None,
            first_problem: recorded.first_problem.clone(),
            cpu: None,
        }
    }
}

/// Linux lets a sleep overrun by the thread's timer slack, 50 µs by default, which would be
/// added to every fixed-rate latency. Lowers it to 1 µs for the calling thread (through
/// `/proc`, so no `unsafe`); returns the old value, or `None` when that is not possible.
pub(crate) fn reduce_timer_slack() -> Option<String> {
    let path = timer_slack_path()?;
    let old = std::fs::read_to_string(&path).ok()?;
    std::fs::write(&path, "1000").ok()?;
    Some(old)
}

/// Restores the slack [`reduce_timer_slack`] changed: the blocking-pool thread is reused.
pub(crate) fn reset_timer_slack(old: Option<String>) {
    if let (Some(old), Some(path)) = (old, timer_slack_path()) {
        let _ = std::fs::write(path, old.trim());
    }
}

/// `/proc/<tid>/timerslack_ns` of the calling thread.
fn timer_slack_path() -> Option<std::path::PathBuf> {
    // `/proc/thread-self` links to `<pid>/task/<tid>`.
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    let tid = link.file_name()?;
    Some(
        std::path::Path::new("/proc")
            .join(tid)
            .join("timerslack_ns"),
    )
}

/// Nanoseconds from 1 ns to 100 s at 3 significant digits.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("the bounds are valid")
}

pub(crate) fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Sends an already encoded CheckRequest and decodes the CheckResponse.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PreEncoded;

#[derive(Debug)]
pub(crate) struct RawEncoder;

#[derive(Debug)]
pub(crate) struct ResponseDecoder;

impl Codec for PreEncoded {
    type Encode = Bytes;
    type Decode = CheckResponse;
    type Encoder = RawEncoder;
    type Decoder = ResponseDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> ResponseDecoder {
        ResponseDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for ResponseDecoder {
    type Item = CheckResponse;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<CheckResponse>, Status> {
        CheckResponse::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("decoding a CheckResponse: {e}")))
    }
}
