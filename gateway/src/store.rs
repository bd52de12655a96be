//! The entry store as the request path sees it: every call bounded in time and guarded by a
//! circuit breaker, every failure turned into "no cache" so that a broken store never fails a
//! request. The degraded state shows in `/healthz` and in metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cachet_index::{EntryId, EntryMeta, EntryStore, StoredEntry};
use futures::future::BoxFuture;

use crate::breaker::{Breaker, BreakerState, Permit};

/// Longest a scan of every entry may take (start-up, resync, invalidation); it is off the
/// request path, so it gets far more time than a lookup.
const SCAN_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct StoreClient {
    inner: Arc<dyn EntryStore>,
    breaker: Breaker,
    /// Hard bound on one call, above the store's own timeouts, so that nothing can hang.
    call_timeout: Duration,
}

impl StoreClient {
    pub fn new(inner: Arc<dyn EntryStore>, breaker: Breaker, call_timeout: Duration) -> Self {
        metrics::gauge!("cachet_store_up").set(1.0);
        Self {
            inner,
            breaker,
            call_timeout,
        }
    }

    pub fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    /// The backend, for what the request path does not do (snapshots, change feeds).
    pub fn backend(&self) -> &Arc<dyn EntryStore> {
        &self.inner
    }

    /// False while the breaker skips the store.
    pub fn is_up(&self) -> bool {
        self.breaker.state() == BreakerState::Closed
    }

    /// The entry, or `None` when it is absent, expired or the store cannot be asked.
    pub async fn get(&self, id: EntryId, now_ms: u64) -> Option<Arc<StoredEntry>> {
        self.call("get", self.call_timeout, |s| s.get(id, now_ms))
            .await
            .flatten()
    }

    /// Stores the entry; false when it could not be stored.
    pub async fn put(&self, entry: StoredEntry) -> bool {
        self.call("put", self.call_timeout, |s| s.put(entry))
            .await
            .is_some()
    }

    /// Deletes entries; `None` when the store could not be asked.
    pub async fn remove(&self, ids: Vec<EntryId>) -> Option<usize> {
        if ids.is_empty() {
            return Some(0);
        }
        self.call("remove", self.call_timeout, |s| s.remove(ids))
            .await
    }

    /// Every live entry's metadata; `None` when the store could not be asked.
    pub async fn scan(&self, now_ms: u64) -> Option<Vec<EntryMeta>> {
        self.call("scan", SCAN_TIMEOUT, |s| s.scan(now_ms)).await
    }

    pub async fn purge_expired(&self, now_ms: u64) -> Option<usize> {
        self.call("purge", SCAN_TIMEOUT, |s| s.purge_expired(now_ms))
            .await
    }

    /// Whether the store answers a ping now.
    pub async fn ping(&self) -> bool {
        self.call("ping", self.call_timeout, |s| s.ping())
            .await
            .is_some()
    }

    /// Pings the store when the breaker would let a probe through, so that it recovers even
    /// while no request arrives; returns whether the store is up afterwards.
    pub async fn probe(&self) -> bool {
        if self.is_up() {
            return true;
        }
        self.call("ping", self.call_timeout, |s| s.ping()).await;
        self.is_up()
    }

    async fn call<'a, T>(
        &'a self,
        op: &'static str,
        limit: Duration,
        f: impl FnOnce(&'a dyn EntryStore) -> BoxFuture<'a, cachet_index::Result<T>>,
    ) -> Option<T> {
        let Some(permit) = self.breaker.permit(Instant::now()) else {
            metrics::counter!("cachet_store_skipped_total", "op" => op).increment(1);
            return None;
        };
        let outcome = tokio::time::timeout(limit, f(self.inner.as_ref())).await;
        let result = match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {limit:?}")),
        };
        let was_up = self.is_up();
        let state = self.breaker.record(permit, result.is_ok(), Instant::now());
        let up = state == BreakerState::Closed;
        if up != was_up || permit == Permit::Probe {
            metrics::gauge!("cachet_store_up").set(if up { 1.0 } else { 0.0 });
            if up {
                tracing::info!(store = self.kind(), "entry store is back; caching resumes");
            } else if state == BreakerState::Open && was_up {
                tracing::warn!(
                    store = self.kind(),
                    "entry store keeps failing; requests bypass the cache until it recovers"
                );
            }
        }
        match result {
            Ok(value) => Some(value),
            Err(error) => {
                metrics::counter!("cachet_store_errors_total", "op" => op).increment(1);
                tracing::debug!(store = self.kind(), op, %error, "entry store call failed");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use bytes::Bytes;
    use cachet_index::MemoryStore;

    use super::*;

    /// The embedded store behind a switch that makes every call fail, or hang, like a
    /// Redis that went away or froze.
    #[derive(Debug, Default)]
    struct Flaky {
        inner: MemoryStore,
        failing: AtomicBool,
        hanging: AtomicBool,
        calls: AtomicUsize,
    }

    impl Flaky {
        fn gate(&self) -> Option<cachet_index::Error> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.failing
                .load(Ordering::SeqCst)
                .then_some(cachet_index::Error::RedisTimeout {
                    op: "test",
                    after: Duration::ZERO,
                })
        }

        async fn wait_if_hanging(&self) {
            if self.hanging.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
        }
    }

    impl EntryStore for Flaky {
        fn kind(&self) -> &'static str {
            "flaky"
        }
        fn get(
            &self,
            id: EntryId,
            now_ms: u64,
        ) -> BoxFuture<'_, cachet_index::Result<Option<Arc<StoredEntry>>>> {
            Box::pin(async move {
                self.wait_if_hanging().await;
                match self.gate() {
                    Some(e) => Err(e),
                    None => Ok(self.inner.get(id, now_ms)),
                }
            })
        }
        fn put(&self, entry: StoredEntry) -> BoxFuture<'_, cachet_index::Result<()>> {
            Box::pin(async move {
                match self.gate() {
                    Some(e) => Err(e),
                    None => {
                        self.inner.put(entry);
                        Ok(())
                    }
                }
            })
        }
        fn remove(&self, ids: Vec<EntryId>) -> BoxFuture<'_, cachet_index::Result<usize>> {
            Box::pin(async move {
                match self.gate() {
                    Some(e) => Err(e),
                    None => Ok(ids
                        .into_iter()
                        .filter_map(|id| self.inner.remove(id))
                        .count()),
                }
            })
        }
        fn scan(&self, now_ms: u64) -> BoxFuture<'_, cachet_index::Result<Vec<EntryMeta>>> {
            Box::pin(async move { Ok(self.inner.scan(now_ms)) })
        }
        fn ping(&self) -> BoxFuture<'_, cachet_index::Result<()>> {
            Box::pin(async move {
                match self.gate() {
                    Some(e) => Err(e),
                    None => Ok(()),
                }
            })
        }
        fn purge_expired(&self, now_ms: u64) -> BoxFuture<'_, cachet_index::Result<usize>> {
            Box::pin(async move { Ok(self.inner.purge_expired(now_ms)) })
        }
    }

    fn entry(id: EntryId) -> StoredEntry {
        StoredEntry {
            meta: EntryMeta {
                id,
                category: "general".to_owned(),
                tenant: "t".to_owned(),
                partition: 1,
                vector: vec![1.0, 0.0],
                question: Some("q".to_owned()),
                created_at_ms: 0,
                expires_at_ms: u64::MAX,
                cost: 1.0,
                body_bytes: 4,
            },
            body: Bytes::from_static(b"body"),
        }
    }

    fn client(flaky: &Arc<Flaky>, retry_after: Duration) -> StoreClient {
        StoreClient::new(
            Arc::clone(flaky) as Arc<dyn EntryStore>,
            Breaker::new(2, retry_after),
            Duration::from_millis(100),
        )
    }

    #[tokio::test]
    async fn failures_become_misses_then_the_breaker_skips_the_store() {
        let flaky = Arc::new(Flaky::default());
        let store = client(&flaky, Duration::from_secs(60));
        assert!(store.put(entry(1)).await);
        assert!(store.get(1, 0).await.is_some());

        flaky.failing.store(true, Ordering::SeqCst);
        assert!(store.get(1, 0).await.is_none(), "a failed get is a miss");
        assert!(!store.put(entry(2)).await, "a failed put reports it");
        assert!(!store.is_up(), "two failures open the breaker");
        let calls = flaky.calls.load(Ordering::SeqCst);
        assert!(store.get(1, 0).await.is_none());
        assert_eq!(
            flaky.calls.load(Ordering::SeqCst),
            calls,
            "an open breaker does not call the store"
        );
    }

    #[tokio::test]
    async fn a_hanging_store_is_cut_off_at_the_call_timeout() {
        let flaky = Arc::new(Flaky::default());
        let store = client(&flaky, Duration::from_secs(60));
        flaky.hanging.store(true, Ordering::SeqCst);
        let started = Instant::now();
        assert!(store.get(1, 0).await.is_none());
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_probe_closes_the_breaker_once_the_store_is_back() {
        let flaky = Arc::new(Flaky::default());
        let store = client(&flaky, Duration::from_millis(20));
        flaky.failing.store(true, Ordering::SeqCst);
        store.get(1, 0).await;
        store.get(1, 0).await;
        assert!(!store.is_up());
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!store.probe().await, "still failing: stays open");
        flaky.failing.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(store.probe().await, "recovered");
        assert!(store.put(entry(3)).await);
        assert!(store.get(3, 0).await.is_some());
    }
}
