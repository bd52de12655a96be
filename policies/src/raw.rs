//! The config file as written: serde structs that accept anything well-typed, validated
//! afterwards into the types of `config/`. Each top-level section and each category is
//! deserialised on its own (see `config/parse.rs`), so one mistake does not hide the others.

use indexmap::IndexMap;
use serde::Deserialize;

/// The whole file. Not deserialised as one piece: `config/parse.rs` fills it section by section.
#[derive(Debug, Default)]
pub(crate) struct RawConfig {
    pub server: RawServer,
    pub upstream: RawUpstream,
    pub engine: Option<RawEngine>,
    pub embedder: RawEmbedder,
    pub index: RawIndex,
    pub store: RawStore,
    pub cache: RawCache,
    pub admin: Option<RawAdmin>,
    pub classifier: RawClassifier,
    pub adaptive: RawAdaptive,
    pub calibration: RawCalibration,
    pub shadow: RawShadow,
    pub categories: IndexMap<String, RawCategory>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawServer {
    pub listen: Option<String>,
    pub max_body_bytes: Option<i64>,
    pub request_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawUpstream {
    pub url: Option<String>,
    pub connect_timeout: Option<String>,
    pub timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawEngine {
    pub binary: Option<String>,
    pub model: Option<String>,
    pub device: Option<String>,
    pub args: Vec<String>,
    pub startup_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawEmbedder {
    pub model: Option<String>,
    pub tokenizer: Option<String>,
    pub onnxruntime: Option<String>,
    pub device: Option<String>,
    pub max_tokens: Option<i64>,
    pub max_batch: Option<i64>,
    pub batch_wait: Option<String>,
    pub threads: Option<i64>,
    pub rows_per_run: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawIndex {
    pub m: Option<i64>,
    pub ef_construction: Option<i64>,
    pub ef_search: Option<i64>,
    pub candidates: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawStore {
    pub kind: Option<String>,
    // Memory store.
    pub snapshot: Option<String>,
    pub snapshot_interval: Option<String>,
    // Redis store.
    pub url: Option<String>,
    pub key_prefix: Option<String>,
    pub connect_timeout: Option<String>,
    pub response_timeout: Option<String>,
    pub stream_max_len: Option<i64>,
    // Either kind.
    pub breaker_failures: Option<i64>,
    pub breaker_retry_after: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawAdmin {
    pub token: Option<String>,
    /// The environment variable that holds the token (resolved by the caller's lookup).
    pub token_env: Option<String>,
    /// Address of the admin API's own listener.
    pub listen: Option<String>,
    /// Bearer token `/metrics` requires, written here or named by an environment variable.
    pub metrics_token: Option<String>,
    pub metrics_token_env: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawClassifier {
    pub min_similarity: Option<f64>,
    pub margin: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawAdaptive {
    pub enabled: Option<bool>,
    pub high_in_flight: Option<i64>,
    pub high_latency: Option<String>,
    pub high_error_rate: Option<f64>,
    pub low_in_flight: Option<i64>,
    pub low_latency: Option<String>,
    pub low_error_rate: Option<f64>,
    pub hold: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawCalibration {
    pub file: Option<String>,
    pub confidence: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawShadow {
    pub agreement: Option<f64>,
    pub min_samples: Option<i64>,
    pub window: Option<i64>,
    pub max_in_flight: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawCache {
    pub default_category: Option<String>,
    pub max_entry_bytes: Option<i64>,
    pub anonymous: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawCategory {
    pub threshold: Option<f64>,
    pub ttl: Option<String>,
    pub max_entries: Option<i64>,
    pub max_bytes: Option<i64>,
    pub eviction: Option<String>,
    pub relaxed_threshold: Option<f64>,
    pub relaxed_ttl: Option<String>,
    pub examples: Vec<String>,
    pub cacheable: Option<bool>,
    pub shared: Option<bool>,
    pub selectable_by_header: Option<bool>,
    pub max_entries_per_tenant: Option<i64>,
    pub max_temperature: Option<f64>,
    pub guards: Option<Vec<String>>,
    pub context_topic_threshold: Option<f64>,
    pub context_turn_overlap: Option<f64>,
    pub max_wrong_rate: Option<f64>,
    pub relaxed_max_wrong_rate: Option<f64>,
    pub shadow_rate: Option<f64>,
    #[serde(rename = "match")]
    pub rules: RawMatch,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawMatch {
    pub models: Vec<String>,
    pub routes: Vec<String>,
    pub headers: IndexMap<String, String>,
    pub keywords: Vec<String>,
    pub patterns: Vec<String>,
}
