//! What the behaviour suite (`tests/it/store.rs`, both backends) does not cover: the memory
//! store's bound, the revocation view's bound and outage reporting, metrics, redaction.

use std::{
    io,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use tokio_util::sync::CancellationToken;
use tracing::instrument::WithSubscriber;

use super::{memory::MemoryStore, revocations::Revocations, *};

const LONG: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_full_memory_store_refuses_and_changes_nothing() {
    let store = MemoryStore::new(3);
    assert!(store.insert("a", b"1".to_vec(), LONG).await.unwrap());
    store.add_to_set("s", "m1", LONG).await.unwrap();
    store.add_to_set("s", "m2", LONG).await.unwrap();
    assert_eq!(store.len(), 3);

    let full = store.insert("b", b"2".to_vec(), LONG).await.unwrap_err();
    assert_eq!(full.backend, "memory");
    assert!(full.problem.starts_with("full"), "{full}");
    assert!(store.add_to_set("s", "m3", LONG).await.is_err());
    assert!(store.add_to_set("t", "m1", LONG).await.is_err());
    // Adding a member already there needs no room (and renews the set).
    store.add_to_set("s", "m1", LONG).await.unwrap();
    assert_eq!(store.get("b").await.unwrap(), None);
    assert_eq!(store.set_members("s").await.unwrap().len(), 2);
    assert_eq!(store.set_members("t").await.unwrap().len(), 0);
    // Revocations are bounded apart: a store full of sign-ins still takes them.
    store.revoke("family", LONG).await.unwrap();

    // Room comes back as entries go.
    assert!(store.remove("s").await.unwrap());
    assert_eq!(store.len(), 1);
    assert!(store.insert("b", b"2".to_vec(), LONG).await.unwrap());
}

#[tokio::test]
async fn expired_entries_free_their_room() {
    let store = MemoryStore::new(2);
    let short = Duration::from_millis(50);
    assert!(store.insert("a", b"1".to_vec(), short).await.unwrap());
    store.add_to_set("s", "m", short).await.unwrap();
    assert!(store.insert("b", b"2".to_vec(), LONG).await.is_err());
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert!(store.insert("b", b"2".to_vec(), LONG).await.unwrap());
    assert!(store.insert("c", b"3".to_vec(), LONG).await.unwrap());
    assert_eq!(store.len(), 2);
}

#[tokio::test]
async fn a_full_revocation_view_reports_out_of_sync_until_everything_fits() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(10));
    let view = Revocations::with_cap(store.clone(), 2);
    view.sync().await.unwrap();
    assert!(view.synced_recently());

    view.revoke("a", LONG).await.unwrap();
    view.revoke("b", Duration::from_millis(100)).await.unwrap();
    // The store has the third; this replica cannot hold it, so it must not claim to be in sync.
    view.revoke("c", LONG).await.unwrap();
    assert!(!view.is_revoked("c"));
    assert!(!view.synced_recently());
    view.sync().await.unwrap();
    assert!(
        !view.synced_recently(),
        "still three in force, room for two"
    );

    // Once "b" expires, a full re-read fits, and "c" (recorded before the view's cursor could
    // have covered it) is there.
    tokio::time::sleep(Duration::from_millis(150)).await;
    view.sync().await.unwrap();
    assert!(view.synced_recently());
    assert!(view.is_revoked("a"));
    assert!(!view.is_revoked("b"));
    assert!(view.is_revoked("c"));
    assert_eq!(view.len(), 2);
}

#[tokio::test]
async fn a_revocation_that_the_store_refuses_is_not_recorded_here() {
    let store = Arc::new(Switchable::default());
    let view = Revocations::new(store.clone());
    store.down.store(true, Ordering::Relaxed);
    assert!(view.revoke("a", LONG).await.is_err());
    assert!(!view.is_revoked("a"));
    assert!(!view.synced_recently(), "never synced");
}

#[tokio::test]
async fn a_store_outage_is_logged_once_and_its_end_once() {
    let store = Arc::new(Switchable::default());
    let view = Arc::new(Revocations::new(store.clone()));
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    let stop = CancellationToken::new();
    let poll = Duration::from_millis(10);
    let task = tokio::spawn(
        view.clone()
            .run(poll, Arc::new(crate::metrics::Metrics::new()), stop.clone())
            .with_subscriber(subscriber),
    );

    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(view.synced_recently());
    store.down.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let failed_polls = store.failures.load(Ordering::Relaxed);
    assert!(failed_polls >= 3, "{failed_polls}");
    store.down.store(false, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.cancel();
    task.await.unwrap();

    let text = logs.text();
    assert_eq!(text.matches("WARN").count(), 1, "{text}");
    assert_eq!(text.matches("cannot read the store").count(), 1, "{text}");
    assert_eq!(text.matches("can be read again").count(), 1, "{text}");
}

#[tokio::test]
async fn store_errors_are_counted_by_backend_and_operation() {
    let metrics = Arc::new(Metrics::new());
    let config = StoreConfig {
        max_entries: 1,
        ..StoreConfig::default()
    };
    let store = open_with_metrics(&config, metrics.clone()).unwrap();
    assert_eq!(store.backend(), "memory");
    assert!(store.insert("a", b"1".to_vec(), LONG).await.unwrap());
    assert!(store.insert("b", b"1".to_vec(), LONG).await.is_err());
    assert!(store.insert("c", b"1".to_vec(), LONG).await.is_err());
    assert!(store.get("!reserved").await.is_err());
    let text = metrics.encode();
    let series = |labels: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("authz_store_errors_total{{{labels}}} ")))
            .map(str::to_string)
    };
    assert_eq!(
        series(r#"backend="memory",operation="insert""#).as_deref(),
        Some("2"),
        "{text}"
    );
    assert_eq!(
        series(r#"backend="memory",operation="get""#).as_deref(),
        Some("1")
    );
    assert_eq!(series(r#"backend="memory",operation="claim""#), None);
}

#[test]
fn values_and_passwords_stay_out_of_debug_output() {
    let claimed = Claimed {
        value: b"refresh-token-record".to_vec(),
        earlier_uses: 1,
    };
    let shown = format!("{claimed:?}");
    assert!(!shown.contains("refresh"), "{shown}");
    assert!(shown.contains("20 bytes"), "{shown}");

    let redis = crate::config::RedisConfig {
        url: "rediss://user:hunter2@redis.internal:6380/2"
            .parse()
            .unwrap(),
        password: None,
        key_prefix: "authz:".into(),
        timeout: Duration::from_millis(500),
    };
    let shown = format!("{redis:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("redis.internal:6380/2"), "{shown}");
    // Outside a runtime, opening is an error, not a panic.
    let error = redis::RedisStore::open(&redis).unwrap_err().to_string();
    assert!(error.contains("Tokio runtime"), "{error}");
}

#[tokio::test]
async fn opening_a_redis_store_does_not_connect() {
    // Nothing listens on port 1: open succeeds, the first call fails.
    let config = StoreConfig {
        backend: StoreBackend::Redis,
        redis: Some(crate::config::RedisConfig {
            url: "redis://127.0.0.1:1".parse().unwrap(),
            password: Some(crate::config::SecretRef::Inline(
                crate::secret_string::SecretString::new("pw"),
            )),
            key_prefix: "authz:".into(),
            timeout: Duration::from_millis(200),
        }),
        ..StoreConfig::default()
    };
    let store = open(&config).unwrap();
    assert_eq!(store.backend(), "redis");
    let error = store.ping().await.unwrap_err();
    assert_eq!(error.backend, "redis");
    assert!(error.problem.starts_with("ping: "), "{error}");
    assert!(!error.to_string().contains("pw"), "{error}");
}

#[test]
fn ttls_are_whole_milliseconds_within_bounds() {
    assert_eq!(ttl_ms(Duration::ZERO), 1);
    assert_eq!(ttl_ms(Duration::from_micros(1500)), 1);
    assert_eq!(ttl_ms(Duration::from_secs(2)), 2000);
    assert_eq!(ttl_ms(Duration::MAX), ttl_ms(MAX_TTL));
}

// === fakes ===

/// A memory store that can be switched off, counting the calls it failed.
#[derive(Debug)]
struct Switchable {
    inner: MemoryStore,
    down: AtomicBool,
    failures: std::sync::atomic::AtomicU64,
}

impl Default for Switchable {
    fn default() -> Switchable {
        Switchable {
            inner: MemoryStore::new(100),
            down: AtomicBool::new(false),
            failures: Default::default(),
        }
    }
}

impl Switchable {
    fn gate<'a, T: Send + 'a>(&'a self, call: StoreFuture<'a, T>) -> StoreFuture<'a, T> {
        if self.down.load(Ordering::Relaxed) {
            self.failures.fetch_add(1, Ordering::Relaxed);
            return Box::pin(std::future::ready(Err(StoreError::new(
                "memory",
                "switched off",
            ))));
        }
        call
    }
}

impl Store for Switchable {
    fn insert(&self, key: &str, value: Vec<u8>, ttl: Duration) -> StoreFuture<'_, bool> {
        self.gate(self.inner.insert(key, value, ttl))
    }
    fn get(&self, key: &str) -> StoreFuture<'_, Option<Vec<u8>>> {
        self.gate(self.inner.get(key))
    }
    fn take(&self, key: &str) -> StoreFuture<'_, Option<Vec<u8>>> {
        self.gate(self.inner.take(key))
    }
    fn claim(&self, key: &str) -> StoreFuture<'_, Option<Claimed>> {
        self.gate(self.inner.claim(key))
    }
    fn remove(&self, key: &str) -> StoreFuture<'_, bool> {
        self.gate(self.inner.remove(key))
    }
    fn add_to_set(&self, key: &str, member: &str, ttl: Duration) -> StoreFuture<'_, ()> {
        self.gate(self.inner.add_to_set(key, member, ttl))
    }
    fn set_members(&self, key: &str) -> StoreFuture<'_, Vec<String>> {
        self.gate(self.inner.set_members(key))
    }
    fn revoke(&self, id: &str, ttl: Duration) -> StoreFuture<'_, ()> {
        self.gate(self.inner.revoke(id, ttl))
    }
    fn revocations_since(&self, since_ms: u64) -> StoreFuture<'_, Vec<Revocation>> {
        self.gate(self.inner.revocations_since(since_ms))
    }
    fn ping(&self) -> StoreFuture<'_, ()> {
        self.gate(self.inner.ping())
    }
    fn backend(&self) -> &'static str {
        "memory"
    }
}

/// Log output collected in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}
