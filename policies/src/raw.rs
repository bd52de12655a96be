//! The config file as written: serde structs that accept anything well-typed, validated
//! afterwards into the types of `config.rs`.

use indexmap::IndexMap;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawConfig {
    pub server: RawServer,
    pub upstream: RawUpstream,
    pub engine: Option<RawEngine>,
    pub embedder: RawEmbedder,
    pub index: RawIndex,
    pub store: RawStore,
    pub cache: RawCache,
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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawCache {
    pub default_category: Option<String>,
    pub max_entry_bytes: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawCategory {
    pub threshold: Option<f64>,
    pub ttl: Option<String>,
    pub max_entries: Option<i64>,
    pub cacheable: Option<bool>,
    pub shared: Option<bool>,
    pub max_temperature: Option<f64>,
    pub guards: Option<Vec<String>>,
    pub context_topic_threshold: Option<f64>,
    pub context_turn_overlap: Option<f64>,
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
