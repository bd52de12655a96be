//! Shared state of the HTTP handlers: the cache, the upstream client and metrics.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::cache::Cache;
use crate::flight::Flights;
use crate::upstream::Upstream;

#[derive(Debug, Clone)]
pub struct AppState {
    cache: Arc<Cache>,
    pub flights: Arc<Flights>,
    pub upstream: Upstream,
    pub max_body_bytes: usize,
    pub metrics: Option<PrometheusHandle>,
}

impl AppState {
    pub fn new(cache: Cache, upstream: Upstream, metrics: Option<PrometheusHandle>) -> Self {
        let max_body_bytes = cache.config().server.max_body_bytes;
        Self {
            cache: Arc::new(cache),
            flights: Arc::new(Flights::default()),
            upstream,
            max_body_bytes,
            metrics,
        }
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// A handle to the cache for background tasks.
    pub fn cache_handle(&self) -> Arc<Cache> {
        Arc::clone(&self.cache)
    }
}
