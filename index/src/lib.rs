//! cachet-index: per-category nearest-neighbour search over cached entries' vectors (HNSW
//! graphs with tenant partitions, expiry, quotas and compaction) and the embedded entry store.
// Unit tests may unwrap: a panic there is a test failure with a backtrace.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod compaction;
mod distance;
mod error;
mod eviction;
mod params;
mod search;
mod segment;
mod state;
mod store;
mod vector_index;

pub use error::{Error, Result};
pub use eviction::{EvictionPolicy, Quota};
pub use params::{IndexParams, IndexTuning, MAX_M};
pub use store::{
    Change, EntryMeta, EntryStore, MemoryStore, OriginFilter, RedisOptions, RedisStore,
    SnapshotStats, StoredEntry,
};
pub use vector_index::{IndexStats, Neighbor, NewEntry, VectorIndex};

/// Identifies a cached entry; the gateway derives it from the exact-match key hash.
pub type EntryId = u64;
