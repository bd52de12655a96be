//! The error type of `cachet-index`.

use std::path::PathBuf;
use std::time::Duration;

use crate::EntryId;

/// Everything that can go wrong in the index and the entry stores.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The vector's length differs from the index's configured dimension.
    #[error("vector has {actual} dimensions, the index expects {expected}")]
    DimensionMismatch { expected: usize, actual: usize },
    /// The vector holds a NaN or an infinity, which has no direction.
    #[error("vector holds a non-finite value at position {position}")]
    NonFiniteVector { position: usize },
    /// The vector is all zeros (or so large its length overflows), so it cannot be normalised.
    #[error("vector has zero or overflowing length, so it has no usable direction")]
    ZeroVector,
    /// An index parameter is outside the range the graph library accepts.
    #[error("invalid index parameter {name}: {reason}")]
    InvalidParams {
        name: &'static str,
        reason: &'static str,
    },
    /// No snapshot file exists at the path: a first start, not a failure.
    #[error("no snapshot at {path}")]
    SnapshotMissing { path: PathBuf },
    /// Reading or writing a snapshot file failed.
    #[error("failed to {action} snapshot {path}")]
    SnapshotIo {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The snapshot file is truncated, damaged or of another format; nothing was loaded.
    #[error("snapshot {path} is corrupt: {reason}")]
    CorruptSnapshot { path: PathBuf, reason: String },
    /// A Redis option is unusable (a bad URL, a key prefix that would break key hashing).
    #[error("invalid redis option {name}: {reason}")]
    InvalidRedisOptions {
        name: &'static str,
        reason: String,
        #[source]
        source: Option<redis::RedisError>,
    },
    /// A Redis command failed: Redis is down, unreachable, answered an error, or timed out.
    #[error("redis {op} failed")]
    Redis {
        op: &'static str,
        #[source]
        source: redis::RedisError,
    },
    /// A Redis call did not finish within its time bound (connection plus response timeout).
    #[error("redis {op} timed out after {after:?}")]
    RedisTimeout { op: &'static str, after: Duration },
    /// An entry held in Redis cannot be decoded (a missing field, a vector of the wrong byte
    /// length, a bad number): it is refused rather than returned wrong.
    #[error("entry {id:016x} in redis is corrupt: {reason}")]
    CorruptEntry { id: EntryId, reason: String },
    /// The Redis store was built outside a Tokio runtime, which its connections need.
    #[error("the redis store needs a tokio runtime")]
    NoRuntime(#[source] tokio::runtime::TryCurrentError),
}

/// The result type of `cachet-index`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
