//! The error type of `cachet-index`.

/// Everything that can go wrong when handing vectors or parameters to the index.
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
}

/// The result type of `cachet-index`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
