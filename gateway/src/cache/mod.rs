//! The cache pipeline: decide whether a request may use the cache, look it up (exact key, then
//! semantic neighbours within the request's partition), and fill the cache with complete answers.
//! The policy in force can be replaced while requests run (config reload).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use axum::http::HeaderMap;
use axum::http::header::CACHE_CONTROL;
use cachet_embedder::Embedder;
use cachet_index::VectorIndex;
use cachet_policies::{
    Anonymous, CATEGORY_HEADER, Candidate, Category, Config, RequestFacts, judge,
};
use parking_lot::RwLock;

use crate::answer::CachedAnswer;
use crate::keys::{ExactKey, Tenant, partition};
use crate::load::LoadTracker;
use crate::policy::{Policy, index_for, quota_of};
use crate::request::CacheRequest;
use crate::store::StoreClient;

mod fill;

/// What the cache may do for one request.
#[derive(Debug, Clone)]
pub struct Plan {
    pub category: String,
    /// How the category was chosen (`header`, `rules`, `prototype`, `default`).
    pub classified_by: &'static str,
    /// Why the cache is skipped entirely, if it is.
    pub bypass: Option<&'static str>,
    /// The store is unavailable: the request is neither looked up nor stored, but identical
    /// requests are still coalesced into one upstream call.
    pub degraded: bool,
    /// Whether to look the request up (false with `Cache-Control: no-cache`).
    pub lookup: bool,
    /// Whether to store the answer (false with `Cache-Control: no-store`).
    pub store: bool,
    pub key: ExactKey,
    /// Whose entries the request reads and writes: its caller's, or `shared` in a shared
    /// category.
    pub tenant: Tenant,
    /// Who asks: the tenant of the request's own key (`anonymous` without one), even in a
    /// shared category. Flights never join callers, the bundled engine salts its prefix
    /// cache with it, and a stored entry counts against its quota.
    pub caller: Tenant,
    pub partition: u64,
    /// The query's embedding when classification already needed it.
    pub vector: Option<Vec<f32>>,
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
    pub id: u64,
    pub answer: CachedAnswer,
}

/// The result of a lookup: a hit, or the query vector to reuse when the answer is stored.
#[derive(Debug, Default)]
pub struct Lookup {
    pub hit: Option<Hit>,
    pub vector: Option<Vec<f32>>,
}

/// Per-category vector indexes in front of the entry store, under a replaceable policy.
#[derive(Debug)]
pub struct Cache {
    policy: ArcSwap<Policy>,
    embedder: Embedder,
    indexes: RwLock<HashMap<String, Arc<VectorIndex>>>,
    store: StoreClient,
    load: Arc<LoadTracker>,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Cache {
    pub fn new(
        policy: Policy,
        embedder: Embedder,
        store: StoreClient,
        load: Arc<LoadTracker>,
    ) -> Result<Self, cachet_index::Error> {
        let mut indexes = HashMap::new();
        for category in &policy.config.categories {
            indexes.insert(
                category.name.clone(),
                Arc::new(index_for(&policy.config, category, embedder.dim())?),
            );
        }
        Ok(Self {
            policy: ArcSwap::from_pointee(policy),
            embedder,
            indexes: RwLock::new(indexes),
            store,
            load,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.policy.load().config)
    }

    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// Puts in force a policy of the same config with other operating points (a shadow check
    /// tightened a category); indexes and quotas are untouched.
    pub fn replace_policy(&self, policy: Policy) {
        self.policy.store(Arc::new(policy));
    }

    pub fn embedder(&self) -> &Embedder {
        &self.embedder
    }

    pub fn store(&self) -> &StoreClient {
        &self.store
    }

    pub fn load(&self) -> &LoadTracker {
        &self.load
    }

    pub(crate) fn index(&self, category: &str) -> Option<Arc<VectorIndex>> {
        self.indexes.read().get(category).cloned()
    }

    pub(crate) fn all_indexes(&self) -> Vec<Arc<VectorIndex>> {
        self.indexes.read().values().cloned().collect()
    }

    /// Live entries and bytes per category, in config order.
    pub fn entries_per_category(&self) -> Vec<(String, usize, usize)> {
        let config = self.config();
        let indexes = self.indexes.read();
        config
            .categories
            .iter()
            .map(|c| {
                let index = indexes.get(&c.name);
                (
                    c.name.clone(),
                    index.map_or(0, |i| i.len()),
                    index.map_or(0, |i| i.size_bytes()),
                )
            })
            .collect()
    }

    /// Puts a new policy in force. Categories that appeared get an empty index, removed ones
    /// lose theirs, and changed quotas apply at once (evicted entries leave the store). When
    /// an index cannot be made, nothing changes.
    pub async fn apply(&self, policy: Policy) -> Result<(), cachet_index::Error> {
        let config = &policy.config;
        let mut evicted = Vec::new();
        {
            let mut indexes = self.indexes.write();
            // Everything that can fail happens before the running indexes are touched.
            let mut next = HashMap::new();
            for category in &config.categories {
                if !indexes.contains_key(&category.name) {
                    let index = index_for(config, category, self.embedder.dim())?;
                    next.insert(category.name.clone(), Arc::new(index));
                }
            }
            for category in &config.categories {
                if let Some(index) = indexes.remove(&category.name) {
                    evicted.extend(index.set_quota(quota_of(category)));
                    index.set_ef_search(config.index.ef_search.get());
                    next.insert(category.name.clone(), index);
                }
            }
            *indexes = next;
        }
        self.load.reconfigure(&config.adaptive);
        self.policy.store(Arc::new(policy));
        self.store.remove(evicted).await;
        Ok(())
    }

    /// Classifies the request and decides what the cache may do with it. Embeds the query
    /// first only when no header or rule decides and the categories have prototypes.
    pub async fn plan(&self, request: &CacheRequest, headers: &HeaderMap) -> Plan {
        let policy = self.policy.load_full();
        let config = &policy.config;
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let facts = || RequestFacts {
            route: request.route.path(),
            model: &request.model,
            text: request.lookup_text.as_deref().unwrap_or(""),
            header: &header,
        };
        // The facts hold a non-`Send` reference, so they are built anew after the await.
        let needs_vector = config.needs_query_vector(&facts());
        let vector = match (&request.view, request.uncacheable) {
            (Some(view), None) if needs_vector => self.embed(&view.lookup_text).await,
            _ => None,
        };
        let classification = config.classify_with(&facts(), vector.as_deref(), &policy.prototypes);
        let category = classification.category;
        if classification.reason != "header" && headers.contains_key(CATEGORY_HEADER) {
            // Named a category that does not exist or does not allow it: ignored.
            metrics::counter!("cachet_category_header_ignored_total").increment(1);
        }
        let key_tenant = Tenant::from_headers(headers);
        // Keyless callers cannot be told apart: unless the operator opts in, they are not
        // cached at all, since each could read what any other asked.
        let anonymous = key_tenant.is_none() && config.cache.anonymous == Anonymous::Bypass;
        let caller = key_tenant.unwrap_or_else(Tenant::anonymous);
        let tenant = if category.shared {
            Tenant::shared()
        } else {
            caller.clone()
        };
        let (no_cache, no_store) = cache_control(headers);
        // Without a store nothing can be served or kept: skip the embedding and the search.
        let degraded = !self.store.is_up();
        let bypass = anonymous
            .then_some("anonymous")
            .or(request.uncacheable)
            .or_else(|| (!category.cacheable).then_some("category"))
            .or_else(|| too_hot(category, request.temperature).then_some("temperature"))
            .or_else(|| (no_cache && no_store).then_some("cache-control"));
        Plan {
            category: category.name.clone(),
            classified_by: classification.reason,
            bypass,
            degraded,
            lookup: bypass.is_none() && !no_cache && !degraded,
            store: bypass.is_none() && !no_store && !degraded,
            key: ExactKey::new(&tenant, &category.name, request),
            partition: partition(&tenant, &category.name, request),
            tenant,
            caller,
            vector,
        }
    }

    /// Exact match first, then the nearest semantic neighbour above the category's threshold
    /// (relaxed under upstream load). Failures of the embedder or the store degrade to a miss:
    /// the cache never fails a request.
    pub async fn lookup(&self, request: &CacheRequest, plan: &Plan) -> Lookup {
        let now = now_ms();
        let exact_id = plan.key.entry_id();
        if let Some(answer) = self.read(exact_id, now, Some(&plan.key)).await {
            self.touch(&plan.category, exact_id, now);
            return Lookup {
                hit: Some(Hit {
                    kind: HitKind::Exact,
                    similarity: 1.0,
                    id: exact_id,
                    answer,
                }),
                vector: plan.vector.clone(),
            };
        }
        let policy = self.policy.load_full();
        let (Some(view), Some(category), Some(index)) = (
            request.view.as_ref(),
            policy.config.category(&plan.category),
            self.index(&plan.category),
        ) else {
            return Lookup::default();
        };
        let vector = match &plan.vector {
            Some(vector) => vector.clone(),
            None => match self.embed(&view.lookup_text).await {
                Some(vector) => vector,
                None => return Lookup::default(),
            },
        };
        let started = Instant::now();
        let candidates = policy.config.index.candidates.get();
        let neighbours = index
            .search(plan.partition, &vector, candidates, now)
            .map_err(|e| tracing::warn!(error = %e, "semantic search failed"))
            .unwrap_or_default();
        metrics::histogram!("cachet_search_seconds").record(started.elapsed().as_secs_f64());
        // The topic embedding is needed only by candidates whose context refers back to it.
        let mut topic_vector: Option<Option<Vec<f32>>> = None;
        let threshold = policy
            .operating_point(&plan.category, self.load.state())
            .threshold;
        for neighbour in neighbours
            .into_iter()
            .filter(|n| n.similarity >= threshold.get())
        {
            let Some(answer) = self.read(neighbour.id, now, None).await else {
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
            if let Err(refusal) = judge(category, threshold, &candidate, &category.context) {
                tracing::debug!(
                    similarity = neighbour.similarity,
                    cached = cached_view.lookup_text,
                    %refusal,
                    "candidate refused"
                );
                metrics::counter!(
                    "cachet_guard_refusals_total",
                    "guard" => refusal.reason.as_str()
                )
                .increment(1);
                continue;
            }
            tracing::debug!(
                similarity = neighbour.similarity,
                cached = cached_view.lookup_text,
                "semantic hit"
            );
            self.touch(&plan.category, neighbour.id, now);
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
                    id: neighbour.id,
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
    pub async fn peek_exact(&self, plan: &Plan) -> Option<CachedAnswer> {
        self.read(plan.key.entry_id(), now_ms(), Some(&plan.key))
            .await
    }

    pub(crate) async fn embed(&self, text: &str) -> Option<Vec<f32>> {
        let started = Instant::now();
        let result = self.embedder.embed(text).await;
        metrics::histogram!("cachet_embed_seconds").record(started.elapsed().as_secs_f64());
        result
            .map_err(|e| tracing::warn!(error = %e, "embedding failed; treating as a miss"))
            .ok()
    }

    fn touch(&self, category: &str, id: u64, now: u64) {
        if let Some(index) = self.index(category) {
            index.touch(id, now);
        }
    }

    async fn read(&self, id: u64, now: u64, key: Option<&ExactKey>) -> Option<CachedAnswer> {
        let entry = self.store.get(id, now).await?;
        let answer: CachedAnswer = serde_json::from_slice(&entry.body)
            .map_err(|e| tracing::warn!(error = %e, id, "unreadable cache entry"))
            .ok()?;
        match key {
            Some(key) if answer.key != key.to_hex() => None,
            _ => Some(answer),
        }
    }

    /// Forgets entries in this gateway's indexes (the store is not asked).
    pub fn unindex(&self, ids: &[u64]) {
        for index in self.all_indexes() {
            for &id in ids {
                index.remove(id);
            }
        }
    }

    /// Drops expired entries from the store and the indexes.
    pub async fn purge_expired(&self) {
        let now = now_ms();
        let mut dropped = self.store.purge_expired(now).await.unwrap_or(0);
        for index in self.all_indexes() {
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
