//! The embedded entry store: cached responses kept in process memory, keyed by entry id.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use parking_lot::RwLock;

use crate::EntryId;

/// Independent locks over the map, so concurrent requests rarely wait on one another.
const SHARDS: usize = 16;

/// One cached response with what is needed to index it again after a restart.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEntry {
    pub id: EntryId,
    pub category: String,
    pub partition: u64,
    pub vector: Vec<f32>,
    /// The cached response, opaque to the store.
    pub body: Bytes,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
}

impl StoredEntry {
    /// Whether the entry has expired at `now_ms`; the expiry instant itself counts as expired,
    /// as it does in the vector index.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms <= now_ms
    }

    /// Approximate heap and inline bytes the entry occupies, for memory quotas.
    pub fn size_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.category.len()
            + std::mem::size_of_val(self.vector.as_slice())
            + self.body.len()
    }
}

/// A concurrent map from entry id to entry, for a gateway that runs without Redis.
#[derive(Debug)]
pub struct MemoryStore {
    shards: Vec<RwLock<HashMap<EntryId, Arc<StoredEntry>>>>,
    size_bytes: AtomicUsize,
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
        }
    }

    fn shard(&self, id: EntryId) -> &RwLock<HashMap<EntryId, Arc<StoredEntry>>> {
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
    pub fn put(&self, entry: StoredEntry) {
        let added = entry.size_bytes();
        // The size is adjusted under the shard lock so that a concurrent replacement can never
        // subtract an entry's size before it was added, which would wrap the counter.
        let mut shard = self.shard(entry.id).write();
        self.size_bytes.fetch_add(added, Ordering::Relaxed);
        if let Some(old) = shard.insert(entry.id, Arc::new(entry)) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: EntryId, body: &str, expires_at_ms: u64) -> StoredEntry {
        StoredEntry {
            id,
            category: "code".to_owned(),
            partition: 7,
            vector: vec![0.5; 4],
            body: Bytes::copy_from_slice(body.as_bytes()),
            created_at_ms: 100,
            expires_at_ms,
        }
    }

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
        assert_eq!(store.remove(1).unwrap().id, 1);
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
        assert_eq!(store.size_bytes(), 20 * entry(1, "body", 0).size_bytes());
        assert_eq!(store.purge_expired(500), 0);
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
        assert_eq!(store.size_bytes(), 2_000 * entry(0, "v", 0).size_bytes());
    }
}
