//! Entry stores: where cached answers live, behind one async trait, embedded or in Redis.
//!
//! The vector index only knows ids and vectors; the store holds each entry's body and the
//! metadata needed to rebuild the index ([`EntryMeta`]): at start (`scan`), after a lost change
//! feed ([`Change::Resync`]) and for invalidation by category, tenant or question.
//!
//! - [`MemoryStore`] keeps entries in process memory (one gateway), with an optional snapshot
//!   file so a restart keeps the cache.
//! - [`RedisStore`] keeps them in Redis (several gateways share one cache) and announces every
//!   put and delete on a stream that the other gateways tail ([`RedisStore::changes`]).

mod codec;
mod memory;
mod redis;
mod redis_codec;
mod redis_feed;
mod snapshot;

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;

use crate::{EntryId, Result};

pub use self::memory::MemoryStore;
pub use self::redis::{RedisOptions, RedisStore};
pub use self::redis_feed::OriginFilter;
pub use self::snapshot::SnapshotStats;

/// Everything about an entry except its body: what rebuilding an index needs.
#[derive(Debug, Clone, PartialEq)]
pub struct EntryMeta {
    pub id: EntryId,
    pub category: String,
    /// Hex digest of the tenant that stored the entry (the gateway hashes the API key), also
    /// in a shared category, or "anonymous"; the gateway counts quotas per tenant by it.
    pub tenant: String,
    pub partition: u64,
    pub vector: Vec<f32>,
    /// The question text (lookup text), for invalidation by predicate; None for no text.
    pub question: Option<String>,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    /// Upstream cost of producing the answer (the gateway passes completion tokens or ms).
    pub cost: f32,
    /// Length of the entry's body, kept with the metadata so that an index rebuilt from
    /// metadata alone can still enforce byte quotas. The stores set it from the body on `put`.
    pub body_bytes: usize,
}

impl EntryMeta {
    /// Whether the entry has expired at `now_ms`; the expiry instant itself counts as expired,
    /// as it does in the vector index.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms <= now_ms
    }

    /// Bytes the entry counts for in a byte quota: the metadata, its strings and vector, and
    /// the body by its recorded length. Computed from the metadata alone, so that an index
    /// filled at insert time and one rebuilt from a store's `scan` agree.
    pub fn size_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.heap_bytes() + self.body_bytes
    }

    /// Heap bytes the metadata owns (strings and vector), for memory quotas.
    fn heap_bytes(&self) -> usize {
        self.category.len()
            + self.tenant.len()
            + self.question.as_ref().map_or(0, String::len)
            + std::mem::size_of_val(self.vector.as_slice())
    }
}

/// One cached response with what is needed to index it again after a restart.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEntry {
    pub meta: EntryMeta,
    /// The cached response, opaque to the store.
    pub body: Bytes,
}

impl StoredEntry {
    /// Whether the entry has expired at `now_ms` (see [`EntryMeta::is_expired`]).
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.meta.is_expired(now_ms)
    }

    /// Approximate heap and inline bytes the entry occupies, for memory quotas.
    pub fn size_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.meta.heap_bytes() + self.body.len()
    }
}

/// One event of a shared store's change feed, applied by every other gateway to its index.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// An entry was stored (or replaced): insert its vector.
    Put(EntryMeta),
    /// An entry was deleted: drop its vector.
    Delete(EntryId),
    /// Changes may have been missed (a reconnect, or the stream was trimmed past the last event
    /// read): rebuild the index from [`EntryStore::scan`]. Events after a `Resync` are newer
    /// than what that scan can miss, so applying them after the rebuild is correct.
    Resync,
}

/// Where entries live. Every method is async so that the embedded and the Redis store share
/// one interface; the embedded store's futures are ready at once.
pub trait EntryStore: Send + Sync + std::fmt::Debug {
    /// `"memory"` or `"redis"`, for logs, metrics and the admin API.
    fn kind(&self) -> &'static str;

    /// The entry, unless it is absent or expired at `now_ms`.
    fn get(&self, id: EntryId, now_ms: u64) -> BoxFuture<'_, Result<Option<Arc<StoredEntry>>>>;

    /// Stores the entry, replacing any entry with the same id. Redis: also announces the put on
    /// the change stream.
    fn put(&self, entry: StoredEntry) -> BoxFuture<'_, Result<()>>;

    /// Deletes ids; returns how many existed. Redis: also announces each delete on the stream.
    fn remove(&self, ids: Vec<EntryId>) -> BoxFuture<'_, Result<usize>>;

    /// Metadata of every live entry (no bodies): index rebuild at start, and invalidation by
    /// category / tenant / question predicate.
    fn scan(&self, now_ms: u64) -> BoxFuture<'_, Result<Vec<EntryMeta>>>;

    /// Cheap health probe (Redis PING), used by the gateway's circuit breaker.
    fn ping(&self) -> BoxFuture<'_, Result<()>>;

    /// Drops what expired at `now_ms`; returns how many entries (memory) or id-set members
    /// (Redis, whose entry hashes expire by themselves) were dropped.
    fn purge_expired(&self, now_ms: u64) -> BoxFuture<'_, Result<usize>>;
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// An entry with every field set, so round trips check every field.
    pub(crate) fn entry(id: EntryId, body: &str, expires_at_ms: u64) -> StoredEntry {
        StoredEntry {
            meta: EntryMeta {
                id,
                category: "code".to_owned(),
                tenant: "ab12".to_owned(),
                partition: 7,
                vector: vec![0.5, -0.25, 1.0, f32::MIN_POSITIVE],
                question: Some(format!("question {id}")),
                created_at_ms: 100,
                expires_at_ms,
                cost: 12.5,
                body_bytes: body.len(),
            },
            body: Bytes::copy_from_slice(body.as_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::entry;
    use super::{EntryMeta, StoredEntry};

    #[test]
    fn size_counts_every_owned_byte() {
        let mut e = entry(1, "body", 10);
        let base = e.size_bytes();
        e.meta.question = None;
        assert_eq!(base - e.size_bytes(), "question 1".len());
        e.meta.tenant.push_str("cd");
        e.meta.vector.push(0.0);
        assert_eq!(
            e.size_bytes(),
            base - "question 1".len() + 2 + std::mem::size_of::<f32>()
        );
    }

    #[test]
    fn metadata_size_counts_the_body_by_its_recorded_length() {
        let e = entry(1, "body", 10);
        let meta = e.meta.clone();
        let mut without_body = meta.clone();
        without_body.body_bytes = 0;
        assert_eq!(meta.size_bytes() - without_body.size_bytes(), "body".len());
        // The same entry measured from its metadata (as after a scan) and whole differ only by
        // the struct that holds the body.
        assert_eq!(
            e.size_bytes() - meta.size_bytes(),
            std::mem::size_of::<StoredEntry>() - std::mem::size_of::<EntryMeta>()
        );
    }

    #[test]
    fn expiry_instant_counts_as_expired() {
        let e = entry(1, "x", 10);
        assert!(!e.is_expired(9));
        assert!(e.is_expired(10));
        assert!(e.meta.is_expired(11));
    }
}
