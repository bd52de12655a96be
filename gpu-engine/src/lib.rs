//! cachet-engine: a small OpenAI-compatible inference server with paged KV and prefix caching.
//!
//! The pieces, from the bottom up: [`checkpoint`] reads a Hugging Face checkpoint,
//! [`backend`] is the compute trait (with the CPU implementation), [`model`] is the
//! Llama-family forward pass written once over that trait, [`kv`] owns the paged block
//! pool and the prefix cache, [`scheduler`] does continuous batching with chunked
//! prefill, [`sampling`] turns logits into tokens, [`engine`] runs them all on one
//! worker thread behind an async handle, and [`server`] is the HTTP surface.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod backend;
pub mod checkpoint;
pub mod engine;
mod error;
pub mod kv;
pub mod model;
pub mod sampling;
pub mod scheduler;
pub mod server;
pub mod text;

pub use error::{Error, Result};
