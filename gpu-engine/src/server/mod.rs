//! The HTTP surface: OpenAI-compatible routes over an [`EngineHandle`].

mod error;
mod openai;
mod routes;
mod stream;
mod tenant;

use std::sync::OnceLock;

use axum::Router;
use axum::routing::{get, post};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub use error::ApiError;
pub use tenant::TenantPolicy;

use crate::engine::EngineHandle;

/// What every request handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    pub engine: EngineHandle,
    pub tenants: TenantPolicy,
    pub metrics: PrometheusHandle,
}

/// The engine's routes; tests drive this directly or over a socket.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/v1/completions", post(routes::completions))
        .route("/v1/chat/completions", post(routes::chat_completions))
        .route("/v1/models", get(routes::models))
        .route("/health", get(routes::health))
        .route("/metrics", get(routes::metrics))
        .with_state(state)
}

/// Installs the process-wide Prometheus recorder once and returns its handle.
///
/// The `metrics` macros report to one global recorder; installing it lazily here lets
/// the binary and every test server in one process share it.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            const SECONDS_BUCKETS: [f64; 14] = [
                0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0,
            ];
            let builder = PrometheusBuilder::new();
            let builder = builder
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (by an embedding program); then
            // /metrics shows only what this handle sees, which is still well-formed.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}
