//! The HTTP routes: cached completions, passthrough routes, health and metrics.

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::json;

use crate::answer::{self, replay_json, replay_sse};
use crate::cache::{Hit, HitKind, Plan};
use crate::error::ApiError;
use crate::request::{CacheRequest, Route};
use crate::state::AppState;
use crate::tee::Tee;
use crate::upstream::relay;

pub async fn chat(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    cached(state, Route::Chat, request).await
}

pub async fn completions(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    cached(state, Route::Completions, request).await
}

/// Reads a body up to the configured limit, answering 413 beyond it.
async fn read_body(body: Body, limit_bytes: usize) -> Result<Bytes, ApiError> {
    match Limited::new(body, limit_bytes).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::BodyTooLarge { limit_bytes })
        }
        Err(e) => Err(ApiError::BodyRead(axum::Error::new(e))),
    }
}

async fn cached(state: AppState, route: Route, request: Request) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let bytes = read_body(body, state.max_body_bytes).await?;
    let parsed = CacheRequest::parse(route, &bytes)?;
    let cache = state.cache();
    let plan = cache.plan(&parsed, &parts.headers);

    let mut vector = None;
    if plan.lookup {
        let lookup = cache.lookup(&parsed, &plan).await;
        if let Some(hit) = lookup.hit {
            count(route, &plan, hit_label(hit.kind));
            return Ok(hit_response(route, &parsed, &plan, hit));
        }
        vector = lookup.vector;
    }

    let label = if plan.lookup { "miss" } else { "bypass" };
    count(route, &plan, label);
    let upstream = state
        .upstream
        .send(Method::POST, route.upstream_path(), &parts.headers, bytes)
        .await?;
    let tee = (plan.store && upstream.status() == StatusCode::OK).then(|| {
        let state = state.clone();
        let stream = parsed.stream;
        let plan = plan.clone();
        Tee::new(cache.config().cache.max_entry_bytes, move |body| {
            // Stored off the response path: the client already has every byte.
            tokio::spawn(async move {
                match answer::assemble(route, stream, &body) {
                    Some(response) => state.cache().fill(&parsed, &plan, vector, response).await,
                    None => tracing::debug!("answer not cached: incomplete or unsuccessful"),
                }
            });
        })
    });
    let mut response = relay(upstream, tee);
    decorate(response.headers_mut(), &plan, label, None);
    Ok(response)
}

fn hit_label(kind: HitKind) -> &'static str {
    match kind {
        HitKind::Exact => "hit-exact",
        HitKind::Semantic => "hit-semantic",
    }
}

fn count(route: Route, plan: &Plan, outcome: &'static str) {
    let outcome = if plan.bypass.is_some() {
        "bypass"
    } else {
        outcome
    };
    metrics::counter!(
        "cachet_requests_total",
        "route" => route.path(),
        "category" => plan.category.clone(),
        "cache" => outcome,
    )
    .increment(1);
}

fn decorate(headers: &mut HeaderMap, plan: &Plan, label: &'static str, similarity: Option<f32>) {
    let label = if plan.bypass.is_some() {
        "bypass"
    } else {
        label
    };
    headers.insert("x-cachet-cache", HeaderValue::from_static(label));
    if let Ok(category) = HeaderValue::from_str(&plan.category) {
        headers.insert("x-cachet-category", category);
    }
    if let Some(similarity) = similarity {
        if let Ok(value) = HeaderValue::from_str(&format!("{similarity:.4}")) {
            headers.insert("x-cachet-similarity", value);
        }
    }
    if let Some(reason) = plan.bypass {
        headers.insert("x-cachet-bypass", HeaderValue::from_static(reason));
    }
}

fn hit_response(route: Route, request: &CacheRequest, plan: &Plan, hit: Hit) -> Response {
    let mut response = if request.stream {
        let events = replay_sse(route, &hit.answer.response, request.include_usage);
        let stream =
            futures::stream::iter(events.into_iter().map(Ok::<_, std::convert::Infallible>));
        let mut r = Response::new(Body::from_stream(stream));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        r
    } else {
        Json(replay_json(route, &hit.answer.response)).into_response()
    };
    decorate(
        response.headers_mut(),
        plan,
        hit_label(hit.kind),
        Some(hit.similarity),
    );
    response
}

/// Routes that are forwarded untouched (`/v1/models`, `/v1/embeddings`).
pub async fn passthrough(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let bytes = read_body(body, state.max_body_bytes).await?;
    let path = parts
        .uri
        .path()
        .strip_prefix("/v1")
        .unwrap_or(parts.uri.path());
    let path = match parts.uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let upstream = state
        .upstream
        .send(parts.method, &path, &parts.headers, bytes)
        .await?;
    Ok(relay(upstream, None))
}

pub async fn healthz(State(state): State<AppState>) -> Json<serde_json::Value> {
    let cache = state.cache();
    let categories: serde_json::Map<String, serde_json::Value> = cache
        .entries_per_category()
        .into_iter()
        .map(|(name, n)| (name.to_owned(), json!({ "entries": n })))
        .collect();
    Json(json!({
        "status": "ok",
        "store": { "kind": "memory", "status": "ok", "entries": cache.store().len(), "bytes": cache.store().size_bytes() },
        "upstream": state.upstream.base_url(),
        "categories": categories,
    }))
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    let cache = state.cache();
    for (category, entries) in cache.entries_per_category() {
        metrics::gauge!("cachet_entries", "category" => category.to_owned()).set(entries as f64);
    }
    metrics::gauge!("cachet_store_bytes").set(cache.store().size_bytes() as f64);
    match &state.metrics {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are not enabled").into_response(),
    }
}

pub async fn not_found(request: Request) -> ApiError {
    ApiError::NotFound(format!("{} {}", request.method(), request.uri().path()))
}
