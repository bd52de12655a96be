//! cachet-embedder: text to unit vectors with an ONNX sentence encoder, batched across callers.
//!
//! [`Embedder`] is the async handle the gateway holds. It owns one worker thread that owns an
//! [`EmbedBackend`]; [`OrtBackend`] runs all-MiniLM-L6-v2 (or any BERT-style encoder with a
//! `last_hidden_state` output) through ONNX Runtime on the CPU or one CUDA device, mean-pools the
//! token vectors over the attention mask and normalises the result to unit length.

mod backend;
mod config;
mod error;
mod handle;
mod ort_backend;
pub mod pooling;
mod runtime;
mod tokenize;

pub use backend::EmbedBackend;
pub use config::{
    BatchOptions, DEFAULT_BATCH_WAIT, DEFAULT_MAX_BATCH, DEFAULT_MAX_TOKENS, Device, EmbedderConfig,
};
pub use error::{Error, Result};
pub use handle::Embedder;
pub use ort_backend::{DEFAULT_MAX_PADDED_TOKENS_PER_RUN, OrtBackend};
pub use tokenize::{BatchTokenizer, TokenBatch};
