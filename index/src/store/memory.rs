//! The embedded entry store: cached responses kept in process memory, keyed by entry id.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::FutureExt;
use futures::future::BoxFuture;
use parking_lot::{Mutex, RwLock};

use super::{EntryMeta, EntryStore, StoredEntry};
use crate::{EntryId, Result};

/// Independent locks over the map, so concurrent requests rarely wait on one another.
const SHARDS: usize = 16;

type Shard = RwLock<HashMap<EntryId, Arc<StoredEntry>>>;

/// A concurrent map from entry id to entry, for a gateway that runs without Redis.
///
/// Its inherent methods are synchronous and infallible; the [`EntryStore`] impl wraps them in
/// ready futures. With the trait in scope, `store.get(..)` on a `MemoryStore` still calls the
/// inherent method (Rust prefers it); through `dyn EntryStore` it is the async one.
#[derive(Debug)]
pub struct MemoryStore {
    shards: Vec<Shard>,
    size_bytes: AtomicUsize,
    /// Serialises snapshot writers, since they share one temporary file name.
    pub(super) saving: Mutex<()>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            size_bytes: AtomicUsize::new(0),
            saving: Mutex::new(()),
        }
    }

    fn shard(&self, id: EntryId) -> &Shard {
        // Ids are hashes already, so their low bits spread evenly over the shards.
        &self.shards[(id % SHARDS as u64) as usize]
    }

    /// The entry, unless it is absent or expired at `now_ms`.
    pub fn get(&self, id: EntryId, now_ms: u64) -> Option<Arc<StoredEntry>> {
        self.shard(id)
            .read()
            .get(&id)
            .filter(|entry| !entry.is_expired(now_ms))
            .cloned()
    }

    /// Stores the entry, replacing any entry with the same id.
    pub fn put(&self, mut entry: StoredEntry) {
        entry.meta.body_bytes = entry.body.len();
        let added = entry.size_bytes();
        // The size is adjusted under the shard lock so that a concurrent replacement can never
        // subtract an entry's size before it was added, which would wrap the counter.
        let mut shard = self.shard(entry.meta.id).write();
        self.size_bytes.fetch_add(added, Ordering::Relaxed);
        if let Some(old) = shard.insert(entry.meta.id, Arc::new(entry)) {
            self.size_bytes
                .fetch_sub(old.size_bytes(), Ordering::Relaxed);
        }
    }

    /// Removes the entry and returns it, expired or not.
    pub fn remove(&self, id: EntryId) -> Option<Arc<StoredEntry>> {
        let mut shard = self.shard(id).write();
        let old = shard.remove(&id);
        if let Some(old) = &old {
            self.size_bytes
                .fetch_sub(old.size_bytes(), Ordering::Relaxed);
        }
        old
    }

    /// Removes every entry expired at `now_ms`; returns how many.
    pub fn purge_expired(&self, now_ms: u64) -> usize {
        let mut purged = 0;
        for shard in &self.shards {
            let mut shard = shard.write();
            let mut freed_bytes = 0;
            shard.retain(|_, entry| {
                let expired = entry.is_expired(now_ms);
                if expired {
                    purged += 1;
                    freed_bytes += entry.size_bytes();
                }
                !expired
            });
            self.size_bytes.fetch_sub(freed_bytes, Ordering::Relaxed);
        }
        purged
    }

    /// Metadata of every entry live at `now_ms`, in no particular order.
    pub fn scan(&self, now_ms: u64) -> Vec<EntryMeta> {
        self.live_entries(now_ms)
            .into_iter()
            .map(|entry| entry.meta.clone())
            .collect()
    }

    /// Every entry live at `now_ms`. Each shard is read under its own lock, one after another,
    /// so writers wait for at most one shard's copy of pointers.
    pub(super) fn live_entries(&self, now_ms: u64) -> Vec<Arc<StoredEntry>> {
        let mut live = Vec::new();
        for shard in &self.shards {
            live.extend(
                shard
                    .read()
                    .values()
                    .filter(|entry| !entry.is_expired(now_ms))
                    .cloned(),
            );
        }
        live
    }

    /// Entries held, including expired ones not purged yet.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.read().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Approximate memory held by the entries (see [`StoredEntry::size_bytes`]).
    pub fn size_bytes(&self) -> usize {
        self.size_bytes.load(Ordering::Relaxed)
    }
}

impl EntryStore for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn get(&self, id: EntryId, now_ms: u64) -> BoxFuture<'_, Result<Option<Arc<StoredEntry>>>> {
        futures::future::ready(Ok(MemoryStore::get(self, id, now_ms))).boxed()
    }

    fn put(&self, entry: StoredEntry) -> BoxFuture<'_, Result<()>> {
        MemoryStore::put(self, entry);
        futures::future::ready(Ok(())).boxed()
    }

    fn remove(&self, ids: Vec<EntryId>) -> BoxFuture<'_, Result<usize>> {
        let existed = ids
            .into_iter()
            .filter(|&id| MemoryStore::remove(self, id).is_some())
            .count();
        futures::future::ready(Ok(existed)).boxed()
    }

    fn scan(&self, now_ms: u64) -> BoxFuture<'_, Result<Vec<EntryMeta>>> {
        futures::future::ready(Ok(MemoryStore::scan(self, now_ms))).boxed()
    }

    fn ping(&self) -> BoxFuture<'_, Result<()>> {
        futures::future::ready(Ok(())).boxed()
    }

    fn purge_expired(&self, now_ms: u64) -> BoxFuture<'_, Result<usize>> {
        futures::future::ready(Ok(MemoryStore::purge_expired(self, now_ms))).boxed()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::store::test_support::entry;

    #[test]
    fn get_returns_live_entries_only() {
        let store = MemoryStore::new();
        store.put(entry(1, "hello", 1_000));
        assert_eq!(
            store.get(1, 999).unwrap().body,
            Bytes::from_static(b"hello")
        );
        assert!(
            store.get(1, 1_000).is_none(),
            "expiry instant counts as expired"
        );
        assert!(store.get(2, 0).is_none());
        assert_eq!(store.len(), 1, "get does not remove expired entries");
    }

    #[test]
    fn put_replaces_and_keeps_size_right() {
        let store = MemoryStore::new();
        store.put(entry(1, "short", 1_000));
        let first = store.size_bytes();
        assert_eq!(first, entry(1, "short", 1_000).size_bytes());
        store.put(entry(1, "a much longer body", 1_000));
        assert_eq!(store.len(), 1);
        assert_eq!(
            store.size_bytes(),
            first + "a much longer body".len() - "short".len()
        );
        assert_eq!(
            store.get(1, 0).unwrap().body,
            Bytes::from_static(b"a much longer body")
        );
    }

    #[test]
    fn remove_returns_entry_and_frees_size() {
        let store = MemoryStore::new();
        store.put(entry(1, "x", 1_000));
        store.put(entry(2, "y", 1_000));
        assert_eq!(store.remove(1).unwrap().meta.id, 1);
        assert!(store.remove(1).is_none());
        assert_eq!(store.len(), 1);
        assert_eq!(store.size_bytes(), entry(2, "y", 1_000).size_bytes());
        store.remove(2);
        assert!(store.is_empty());
        assert_eq!(store.size_bytes(), 0);
    }

    #[test]
    fn purge_expired_removes_only_expired() {
        let store = MemoryStore::new();
        for id in 0..40 {
            store.put(entry(id, "body", if id % 2 == 0 { 500 } else { 2_000 }));
        }
        assert_eq!(store.purge_expired(500), 20);
        assert_eq!(store.len(), 20);
        assert!((0..40).all(|id| store.get(id, 0).is_some() == (id % 2 == 1)));
        let sizes: usize = (0..40)
            .filter(|id| id % 2 == 1)
            .map(|id| entry(id, "body", 0).size_bytes())
            .sum();
        assert_eq!(store.size_bytes(), sizes);
        assert_eq!(store.purge_expired(500), 0);
    }

    #[test]
    fn scan_lists_metadata_of_live_entries() {
        let store = MemoryStore::new();
        for id in 0..20 {
            store.put(entry(id, "body", if id < 5 { 50 } else { 500 }));
        }
        let mut metas = store.scan(50);
        metas.sort_by_key(|meta| meta.id);
        let expected: Vec<_> = (5..20).map(|id| entry(id, "body", 500).meta).collect();
        assert_eq!(metas, expected);
    }

    #[test]
    fn concurrent_puts_and_gets_are_consistent() {
        let store = Arc::new(MemoryStore::new());
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    for i in 0..500 {
                        let id = t * 1_000 + i;
                        store.put(entry(id, "v", u64::MAX));
                        assert!(store.get(id, 0).is_some());
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(store.len(), 2_000);
        let sizes: usize = store.live_entries(0).iter().map(|e| e.size_bytes()).sum();
        assert_eq!(store.size_bytes(), sizes);
    }

    #[test]
    fn trait_methods_match_the_inherent_ones() {
        let store = MemoryStore::new();
        let dyn_store: &dyn EntryStore = &store;
        assert_eq!(dyn_store.kind(), "memory");
        futures::executor::block_on(async {
            dyn_store.put(entry(1, "a", 100)).await.unwrap();
            dyn_store.put(entry(2, "b", 10)).await.unwrap();
            dyn_store.ping().await.unwrap();
            assert_eq!(dyn_store.get(1, 50).await.unwrap().unwrap().body, "a");
            assert!(dyn_store.get(2, 50).await.unwrap().is_none());
            assert_eq!(
                dyn_store.scan(50).await.unwrap(),
                vec![entry(1, "a", 100).meta]
            );
            assert_eq!(dyn_store.purge_expired(50).await.unwrap(), 1);
            assert_eq!(dyn_store.remove(vec![1, 2, 3]).await.unwrap(), 1);
            assert!(store.is_empty());
        });
    }
}
