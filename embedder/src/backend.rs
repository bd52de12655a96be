//! The capability the worker thread drives: turning a batch of texts into vectors.

use crate::error::Result;

/// A synchronous embedding backend, owned by one worker thread.
///
/// Batching and queueing live in [`crate::Embedder`]; a backend only runs the batch it is
/// given, so implementations stay simple and tests can substitute their own.
pub trait EmbedBackend {
    /// One unit vector of [`EmbedBackend::dim`] floats per text, in the order of `texts`.
    fn embed_batch(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>>;

    /// The length of every vector this backend returns.
    fn dim(&self) -> usize;

    /// The execution provider that runs the model, for logs and benchmarks.
    fn provider(&self) -> &str {
        "custom"
    }
}
