//! Filling the cache: a complete answer goes to the store, then its question's vector to the
//! category's index, whose quota may evict older entries from both.

use std::collections::HashMap;
use std::time::Duration;

use cachet_index::{EntryMeta, NewEntry, StoredEntry};
use serde_json::Value;

use super::{Cache, Plan, now_ms};
use crate::answer::CachedAnswer;
use crate::keys::quota_owner;
use crate::request::CacheRequest;

impl Cache {
    /// Stores a complete answer under the plan's key and indexes its question. `cost` is what
    /// the answer cost the upstream (its latency), which cost-aware eviction weighs.
    pub async fn fill(
        &self,
        request: &CacheRequest,
        plan: &Plan,
        vector: Option<Vec<f32>>,
        response: Value,
        cost: Duration,
    ) {
        let config = self.config();
        let Some(category) = config.category(&plan.category) else {
            return;
        };
        let vector = match (vector, request.view.as_ref()) {
            (Some(v), _) => Some(v),
            (None, Some(view)) => self.embed(&view.lookup_text).await,
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
        let ttl = category.effective_ttl(self.load.state());
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let meta = EntryMeta {
            id: plan.key.entry_id(),
            category: plan.category.clone(),
            // Who stored it, also in a shared category: its quota owner, and what an
            // invalidation by API key matches.
            tenant: plan.caller.as_str().to_owned(),
            partition: plan.partition,
            vector: vector.unwrap_or_default(),
            question: request.lookup_text.clone(),
            created_at_ms,
            expires_at_ms: created_at_ms.saturating_add(ttl_ms),
            cost: cost.as_secs_f32() * 1000.0,
            body_bytes: body.len(),
        };
        let entry = StoredEntry {
            meta: meta.clone(),
            body: body.into(),
        };
        if !self.store.put(entry).await {
            // An entry the store does not hold must not be found by the index either.
            return;
        }
        self.admit(vec![meta]).await;
        metrics::counter!("cachet_fills_total", "category" => plan.category.clone()).increment(1);
    }

    /// Indexes entries the store holds and deletes from the store whatever their categories'
    /// quotas evict to make room for them.
    pub async fn admit(&self, entries: Vec<EntryMeta>) {
        let evicted = self.index_entries(entries).await;
        self.store.remove(evicted).await;
    }

    /// Adds entries to their categories' indexes, off the async workers (an insert walks the
    /// graph for about a millisecond). Entries without a vector serve exact matches only and
    /// are not indexed. Returns the ids evicted to respect the quotas.
    async fn index_entries(&self, entries: Vec<EntryMeta>) -> Vec<u64> {
        let mut by_category: HashMap<String, Vec<EntryMeta>> = HashMap::new();
        for meta in entries {
            if !meta.vector.is_empty() {
                by_category
                    .entry(meta.category.clone())
                    .or_default()
                    .push(meta);
            }
        }
        let mut evicted = Vec::new();
        for (category, entries) in by_category {
            let Some(index) = self.index(&category) else {
                continue;
            };
            let inserted = tokio::task::spawn_blocking(move || {
                let batch: Vec<NewEntry<'_>> = entries
                    .iter()
                    .map(|meta| NewEntry {
                        id: meta.id,
                        partition: meta.partition,
                        owner: quota_owner(&meta.tenant),
                        vector: &meta.vector,
                        expires_at_ms: meta.expires_at_ms,
                        size_bytes: meta.size_bytes(),
                        cost: meta.cost,
                    })
                    .collect();
                match batch.as_slice() {
                    [one] => index.insert(*one),
                    many => index.insert_batch(many),
                }
            })
            .await;
            match inserted {
                Err(e) => tracing::warn!(error = %e, "indexing task failed"),
                Ok(Ok(ids)) => evicted.extend(ids),
                Ok(Err(e)) => tracing::warn!(error = %e, category, "failed to index entries"),
            }
        }
        evicted
    }
}
