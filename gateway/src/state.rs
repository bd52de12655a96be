//! Shared state of the HTTP handlers: the cache, the upstream client, metrics and where the
//! config is reloaded from.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::cache::Cache;
use crate::flight::Flights;
use crate::reload::ConfigSource;
use crate::shadow::Shadows;
use crate::upstream::Upstream;

#[derive(Debug, Clone)]
pub struct AppState {
    cache: Arc<Cache>,
    pub flights: Arc<Flights>,
    /// Background checks of semantic hits against the upstream.
    pub shadows: Arc<Shadows>,
    pub upstream: Upstream,
    /// Fixed at start: the server section takes effect only after a restart.
    pub max_body_bytes: usize,
    pub metrics: Option<PrometheusHandle>,
    /// The file the config is reloaded from; `None` when it was not read from a file.
    pub config_source: Option<ConfigSource>,
    /// Keeps reloads (file watch and API) from overlapping.
    pub reload_lock: Arc<tokio::sync::Mutex<()>>,
}

impl AppState {
    pub fn new(
        cache: Arc<Cache>,
        upstream: Upstream,
        metrics: Option<PrometheusHandle>,
        config_source: Option<ConfigSource>,
    ) -> Self {
        let max_body_bytes = cache.config().server.max_body_bytes;
        Self {
            cache,
            flights: Arc::new(Flights::default()),
            shadows: Arc::new(Shadows::default()),
            upstream,
            max_body_bytes,
            metrics,
            config_source,
            reload_lock: Arc::new(tokio::sync::Mutex::new(())),
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
