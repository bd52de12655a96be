//! cachet's gateway: the OpenAI-compatible HTTP surface, the cache lookup/fill pipeline in front
//! of an upstream, and the process around them.
// Unit tests may unwrap: a panic there is a test failure with a backtrace.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod admin;
pub mod answer;
pub mod breaker;
pub mod cache;
pub mod engine;
pub mod error;
pub mod eval;
pub mod flight;
pub mod keys;
pub mod load;
pub mod policy;
pub mod reload;
pub mod request;
mod routes;
pub mod shadow;
pub mod state;
pub mod store;
pub mod sync;
pub mod upstream;

use axum::Router;
use axum::http::HeaderName;
use axum::routing::{get, post};
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub use state::AppState;

/// The gateway's router. Layers, outermost first: trace → request id → routes (which apply the
/// body limit, then the cache, then the upstream); the admin routes add the token check. With
/// `[admin] listen` set, the admin routes are not here but in [`admin_app`], on their own
/// listener.
pub fn app(state: AppState) -> Router {
    let own_listener = state
        .cache()
        .config()
        .admin
        .as_ref()
        .is_some_and(|a| a.listen.is_some());
    let router = if own_listener {
        Router::new()
    } else {
        admin_routes(&state)
    };
    let router = router
        .route("/v1/chat/completions", post(routes::chat))
        .route("/v1/completions", post(routes::completions))
        .route("/v1/models", get(routes::passthrough))
        .route("/v1/models/{model}", get(routes::passthrough))
        .route("/v1/embeddings", post(routes::passthrough))
        .route("/healthz", get(routes::healthz))
        .route("/metrics", get(routes::metrics))
        .fallback(routes::not_found);
    with_layers(router).with_state(state)
}

/// The admin API's own listener (`[admin] listen`): the admin routes, `/healthz` and
/// `/metrics`, under the same layers as [`app`].
pub fn admin_app(state: AppState) -> Router {
    let router = admin_routes(&state)
        .route("/healthz", get(routes::healthz))
        .route("/metrics", get(routes::metrics))
        .fallback(routes::not_found);
    with_layers(router).with_state(state)
}

/// Trace → request id, outermost first, around `router`.
fn with_layers(router: Router<AppState>) -> Router<AppState> {
    let request_id = HeaderName::from_static("x-request-id");
    router.layer(
        ServiceBuilder::new()
            .layer(TraceLayer::new_for_http())
            .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
            .layer(PropagateRequestIdLayer::new(request_id)),
    )
}

/// The token-protected admin routes.
fn admin_routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/admin/invalidate", post(admin::invalidate))
        .route("/admin/reload", post(admin::reload_config))
        .route("/admin/stats", get(admin::stats))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            admin::require_token,
        ))
}
