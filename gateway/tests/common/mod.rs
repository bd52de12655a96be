//! What the cache-pipeline tests share: a cache over the real pipeline with a deterministic
//! bag-of-words embedding in place of the ONNX model, and request and answer builders.

#![allow(dead_code)] // Each test file uses its own part.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use cachet_embedder::{BatchOptions, EmbedBackend, Embedder};
use cachet_gateway::breaker::Breaker;
use cachet_gateway::cache::Cache;
use cachet_gateway::load::LoadTracker;
use cachet_gateway::policy::Policy;
use cachet_gateway::request::{CacheRequest, Route};
use cachet_gateway::store::StoreClient;
use cachet_index::MemoryStore;
use cachet_policies::Config;
use serde_json::{Value, json};

const DIM: usize = 64;

/// Hashes each lower-cased word into one of `DIM` buckets: texts sharing words are similar.
pub struct BagOfWords;

impl EmbedBackend for BagOfWords {
    fn embed_batch(&mut self, texts: &[&str]) -> cachet_embedder::Result<Vec<Vec<f32>>> {
        Ok(texts
            .iter()
            .map(|text| {
                let mut v = vec![0.0f32; DIM];
                for word in text.split_whitespace() {
                    let h = word
                        .to_lowercase()
                        .bytes()
                        .fold(1469598103934665603u64, |h, b| {
                            (h ^ u64::from(b)).wrapping_mul(1099511628211)
                        });
                    v[(h % DIM as u64) as usize] += 1.0;
                }
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
                v.iter_mut().for_each(|x| *x /= norm);
                v
            })
            .collect())
    }

    fn dim(&self) -> usize {
        DIM
    }
}

/// Headers of tenant `tenant`'s API key.
pub fn headers(tenant: u8) -> HeaderMap {
    let mut h = HeaderMap::new();
    let key = format!("Bearer sk-tenant-{tenant}");
    h.insert("authorization", HeaderValue::from_str(&key).expect("ascii"));
    h
}

/// A one-question chat request to model `m`.
pub fn chat(text: &str) -> CacheRequest {
    chat_with(text, json!({}))
}

/// A one-question chat request with extra body fields (`{"max_tokens": 1}`).
pub fn chat_with(text: &str, extra: Value) -> CacheRequest {
    let mut body = json!({"model": "m", "messages": [{"role": "user", "content": text}]});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    CacheRequest::parse(Route::Chat, body.to_string().as_bytes()).expect("valid request")
}

/// A complete chat answer.
pub fn answer(text: &str) -> Value {
    json!({"id": "x", "object": "chat.completion", "created": 1, "model": "m",
           "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]})
}

/// The text of a cached answer.
pub fn text_of(response: &Value) -> &str {
    response["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or("")
}

/// A cache with an embedded store under `config`.
pub async fn cache(config: &str) -> Cache {
    let config = Arc::new(Config::from_toml(config).expect("valid config"));
    let embedder =
        Embedder::with_backend(BagOfWords, BatchOptions::default()).expect("embedder starts");
    let store = StoreClient::new(
        Arc::new(MemoryStore::new()),
        Breaker::new(3, Duration::from_secs(1)),
        Duration::from_secs(5),
    );
    let load = Arc::new(LoadTracker::new(&config.adaptive));
    let policy = Policy::build(config, &embedder).await.expect("policy");
    Cache::new(policy, embedder, store, load).expect("cache")
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}
