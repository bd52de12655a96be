//! The policy in force: the validated config with what the gateway derives from it at load
//! time — the categories' embedding prototypes and their index quotas.

use std::sync::Arc;

use cachet_embedder::Embedder;
use cachet_index::{EvictionPolicy, IndexParams, Quota, VectorIndex};
use cachet_policies::{Category, Config, Eviction, Prototypes};

#[derive(Debug)]
pub struct Policy {
    pub config: Arc<Config>,
    pub prototypes: Prototypes,
}

/// Why a policy could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("failed to embed the examples of category {category}")]
    Examples {
        category: String,
        #[source]
        source: cachet_embedder::Error,
    },
}

impl Policy {
    /// Embeds every category's example queries to build its prototype.
    pub async fn build(config: Arc<Config>, embedder: &Embedder) -> Result<Self, PolicyError> {
        let mut vectors = Vec::new();
        for category in &config.categories {
            if category.examples.is_empty() {
                continue;
            }
            // Sent together, so that the embedder's micro-batching runs them as one batch.
            let embedded = futures::future::try_join_all(
                category
                    .examples
                    .iter()
                    .map(|example| embedder.embed(example)),
            )
            .await
            .map_err(|source| PolicyError::Examples {
                category: category.name.clone(),
                source,
            })?;
            vectors.push((category.name.clone(), embedded));
        }
        let prototypes = Prototypes::new(&config, vectors);
        Ok(Self { config, prototypes })
    }
}

/// The index quota a category asks for.
pub fn quota_of(category: &Category) -> Quota {
    Quota {
        max_entries: category.max_entries,
        max_bytes: category.max_bytes,
        max_entries_per_owner: category.max_entries_per_tenant,
        eviction: match category.eviction {
            Eviction::Lru => EvictionPolicy::Lru,
            Eviction::Lfu => EvictionPolicy::Lfu,
            Eviction::Gdsf => EvictionPolicy::Gdsf,
        },
    }
}

/// An empty index for a category.
pub fn index_for(
    config: &Config,
    category: &Category,
    dim: usize,
) -> Result<VectorIndex, cachet_index::Error> {
    let params = IndexParams {
        dim,
        m: config.index.m.get(),
        ef_construction: config.index.ef_construction.get(),
        ef_search: config.index.ef_search.get(),
    };
    VectorIndex::try_new(params, quota_of(category))
}
