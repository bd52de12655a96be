//! The cache pipeline: decide whether a request may use the cache, look it up (exact key, then
//! semantic neighbours within the request's partition), and fill the cache with complete answers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use axum::http::header::CACHE_CONTROL;
use cachet_embedder::Embedder;
use cachet_index::{IndexParams, MemoryStore, StoredEntry, VectorIndex};
use cachet_policies::{Candidate, Category, Config, RequestFacts, judge};
use serde_json::Value;

use crate::answer::CachedAnswer;
use crate::keys::{ExactKey, Tenant, partition};
use crate::request::CacheRequest;

/// What the cache may do for one request.
#[derive(Debug, Clone)]
pub struct Plan {
    pub category: String,
    /// Why the cache is skipped entirely, if it is.
    pub bypass: Option<&'static str>,
    /// Whether to look the request up (false with `Cache-Control: no-cache`).
    pub lookup: bool,
    /// Whether to store the answer (false with `Cache-Control: no-store`).
    pub store: bool,
    pub key: ExactKey,
    pub partition: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HitKind {
    Exact,
    Semantic,
}

#[derive(Debug, Clone)]
pub struct Hit {
    pub kind: HitKind,
    pub similarity: f32,
    pub answer: CachedAnswer,
}

/// The result of a lookup: a hit, or the query vector to reuse when the answer is stored.
#[derive(Debug, Default)]
pub struct Lookup {
    pub hit: Option<Hit>,
    pub vector: Option<Vec<f32>>,
}

/// Per-category vector indexes and the entry store, under one policy.
#[derive(Debug)]
pub struct Cache {
    config: Arc<Config>,
    embedder: Embedder,
    indexes: HashMap<String, Arc<VectorIndex>>,
    store: MemoryStore,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Cache {
    pub fn new(config: Arc<Config>, embedder: Embedder) -> Result<Self, cachet_index::Error> {
        let mut indexes = HashMap::new();
        for category in &config.categories {
            let params = IndexParams {
                dim: embedder.dim(),
                m: config.index.m.get(),
                ef_construction: config.index.ef_construction.get(),
                ef_search: config.index.ef_search.get(),
            };
            indexes.insert(
                category.name.clone(),
                Arc::new(VectorIndex::try_new(params, category.max_entries)?),
            );
        }
        Ok(Self {
            config,
            embedder,
            indexes,
            store: MemoryStore::new(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn store(&self) -> &MemoryStore {
        &self.store
    }

    /// Live entries per category.
    pub fn entries_per_category(&self) -> Vec<(&str, usize)> {
        self.config
            .categories
            .iter()
            .map(|c| {
                (
                    c.name.as_str(),
                    self.indexes.get(&c.name).map_or(0, |i| i.len()),
                )
            })
            .collect()
    }

    /// Classifies the request and decides what the cache may do with it.
    pub fn plan(&self, request: &CacheRequest, headers: &HeaderMap) -> Plan {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let facts = RequestFacts {
            route: request.route.path(),
            model: &request.model,
            text: request.lookup_text.as_deref().unwrap_or(""),
            header: &header,
        };
        let category = self.config.classify(&facts).category;
        let tenant = if category.shared {
            Tenant::shared()
        } else {
            Tenant::from_headers(headers)
        };
        let (no_cache, no_store) = cache_control(headers);
        let bypass = request
            .uncacheable
            .or_else(|| (!category.cacheable).then_some("category"))
            .or_else(|| too_hot(category, request.temperature).then_some("temperature"))
            .or_else(|| (no_cache && no_store).then_some("cache-control"));
        Plan {
            category: category.name.clone(),
            bypass,
            lookup: bypass.is_none() && !no_cache,
            store: bypass.is_none() && !no_store,
            key: ExactKey::new(&tenant, &category.name, request),
            partition: partition(&tenant, &category.name, request),
        }
    }

    fn category(&self, name: &str) -> Option<&Category> {
        self.config.category(name)
    }

    /// Exact match first, then the nearest semantic neighbour above the category's threshold.
    /// Failures of the embedder degrade to a miss: the cache never fails a request.
    pub async fn lookup(&self, request: &CacheRequest, plan: &Plan) -> Lookup {
        let now = now_ms();
        if let Some(answer) = self.read(plan.key.entry_id(), now, Some(&plan.key)) {
            return Lookup {
                hit: Some(Hit {
                    kind: HitKind::Exact,
                    similarity: 1.0,
                    answer,
                }),
                vector: None,
            };
        }
        let (Some(view), Some(category), Some(index)) = (
            request.view.as_ref(),
            self.category(&plan.category),
            self.indexes.get(&plan.category),
        ) else {
            return Lookup::default();
        };
        let Some(vector) = self.embed(&view.lookup_text).await else {
            return Lookup::default();
        };
        let started = Instant::now();
        let candidates = self.config.index.candidates.get();
        let neighbours = index
            .search(plan.partition, &vector, candidates, now)
            .map_err(|e| tracing::warn!(error = %e, "semantic search failed"))
            .unwrap_or_default();
        metrics::histogram!("cachet_search_seconds").record(started.elapsed().as_secs_f64());
        // The topic embedding is needed only by candidates whose context refers back to it.
        let mut topic_vector: Option<Option<Vec<f32>>> = None;
        let threshold = category.threshold.get();
        for neighbour in neighbours.into_iter().filter(|n| n.similarity >= threshold) {
            let Some(answer) = self.read(neighbour.id, now, None) else {
                continue;
            };
            let Some(cached_view) = answer.view.as_ref() else {
                continue;
            };
            let topic_similarity = match (&answer.topic_vector, &view.topic_text) {
                (Some(cached_topic), Some(topic)) => {
                    if topic_vector.is_none() {
                        topic_vector = Some(self.embed(topic).await);
                    }
                    topic_vector
                        .as_ref()
                        .and_then(Option::as_deref)
                        .map(|t| dot(cached_topic, t))
                }
                _ => None,
            };
            let candidate = Candidate {
                cached: cached_view,
                query: view,
                similarity: neighbour.similarity,
                topic_similarity,
            };
            if let Err(refusal) = judge(category, &candidate, &category.context) {
                tracing::debug!(
                    similarity = neighbour.similarity,
                    cached = cached_view.lookup_text,
                    %refusal,
                    "candidate refused"
                );
                metrics::counter!("cachet_guard_refusals_total", "guard" => refusal.guard)
                    .increment(1);
                continue;
            }
            tracing::debug!(
                similarity = neighbour.similarity,
                cached = cached_view.lookup_text,
                "semantic hit"
            );
            // The neighbour can be this request's own entry, stored after its exact lookup ran.
            let kind = if answer.key == plan.key.to_hex() {
                HitKind::Exact
            } else {
                HitKind::Semantic
            };
            return Lookup {
                hit: Some(Hit {
                    kind,
                    similarity: neighbour.similarity,
                    answer,
                }),
                vector: Some(vector),
            };
        }
        Lookup {
            hit: None,
            vector: Some(vector),
        }
    }

    /// The entry stored under the plan's exact key, if any.
    pub fn peek_exact(&self, plan: &Plan) -> Option<CachedAnswer> {
        self.read(plan.key.entry_id(), now_ms(), Some(&plan.key))
    }

    async fn embed(&self, text: &str) -> Option<Vec<f32>> {
        let started = Instant::now();
        let result = self.embedder.embed(text).await;
        metrics::histogram!("cachet_embed_seconds").record(started.elapsed().as_secs_f64());
        result
            .map_err(|e| tracing::warn!(error = %e, "embedding failed; treating as a miss"))
            .ok()
    }

    fn read(&self, id: u64, now: u64, key: Option<&ExactKey>) -> Option<CachedAnswer> {
        let entry = self.store.get(id, now)?;
        let answer: CachedAnswer = serde_json::from_slice(&entry.body)
            .map_err(|e| tracing::warn!(error = %e, id, "unreadable cache entry"))
            .ok()?;
        match key {
            Some(key) if answer.key != key.to_hex() => None,
            _ => Some(answer),
        }
    }

    /// Stores a complete answer under the plan's key and indexes its question.
    pub async fn fill(
        &self,
        request: &CacheRequest,
        plan: &Plan,
        vector: Option<Vec<f32>>,
        response: Value,
    ) {
        let Some(category) = self.category(&plan.category) else {
            return;
        };
        let vector = match (vector, request.lookup_text.as_deref()) {
            (Some(v), _) => Some(v),
            (None, Some(text)) => self.embed(text).await,
            (None, None) => None,
        };
        let topic_text = request.view.as_ref().and_then(|v| v.topic_text.as_deref());
        let topic_vector = match topic_text {
            Some(topic) => self.embed(topic).await,
            None => None,
        };
        let answer = CachedAnswer {
            key: plan.key.to_hex(),
            question: request.lookup_text.clone(),
            view: request.view.clone(),
            topic_vector,
            response,
        };
        let body = match serde_json::to_vec(&answer) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "failed to encode a cache entry");
                return;
            }
        };
        let created_at_ms = now_ms();
        let ttl_ms = u64::try_from(category.ttl.as_millis()).unwrap_or(u64::MAX);
        let expires_at_ms = created_at_ms.saturating_add(ttl_ms);
        let id = plan.key.entry_id();
        self.store.put(StoredEntry {
            id,
            category: plan.category.clone(),
            partition: plan.partition,
            vector: vector.clone().unwrap_or_default(),
            body: body.into(),
            created_at_ms,
            expires_at_ms,
        });
        // Without a vector the entry still serves exact matches.
        if let (Some(vector), Some(index)) = (vector, self.indexes.get(&plan.category)) {
            // An insert walks the graph for about a millisecond: keep it off the async workers.
            let index = Arc::clone(index);
            let partition = plan.partition;
            let inserted = tokio::task::spawn_blocking(move || {
                index.insert(id, partition, &vector, expires_at_ms)
            })
            .await;
            match inserted {
                Err(e) => tracing::warn!(error = %e, "indexing task failed"),
                Ok(Ok(evicted)) => {
                    for old in evicted {
                        self.store.remove(old);
                    }
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "failed to index a cache entry"),
            }
        }
        metrics::counter!("cachet_fills_total", "category" => plan.category.clone()).increment(1);
    }

    /// Drops expired entries from the store and the indexes.
    pub fn purge_expired(&self) {
        let now = now_ms();
        let mut dropped = self.store.purge_expired(now);
        for index in self.indexes.values() {
            dropped += index.purge_expired(now).len();
        }
        if dropped > 0 {
            tracing::debug!(dropped, "purged expired entries");
        }
    }
}

/// Cosine similarity of two unit vectors, as the index reports it for neighbours.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn too_hot(category: &Category, temperature: Option<f64>) -> bool {
    match (category.max_temperature, temperature) {
        (Some(max), Some(t)) => t > f64::from(max),
        _ => false,
    }
}

/// `(no-cache, no-store)` from the client's `Cache-Control` header.
fn cache_control(headers: &HeaderMap) -> (bool, bool) {
    let mut flags = (false, false);
    for value in headers.get_all(CACHE_CONTROL) {
        for directive in value.to_str().unwrap_or("").split(',') {
            match directive.trim().to_ascii_lowercase().as_str() {
                "no-cache" => flags.0 = true,
                "no-store" => flags.1 = true,
                _ => {}
            }
        }
    }
    flags
}
